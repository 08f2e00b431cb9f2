"""A primary and its failover as two real server processes: pairing, takeover and handback.

Every test runs ``twistd licenseserver`` processes on 127.0.0.1: a primary with ephemeral
ports (its licensing port is kept, so that a restarted primary comes back where the failover
looks for it) and a failover of it with its own data directory, the primary's pairing secret
and short heartbeat and takeover times. Clients are the independent ``plainclient``; the
admin API is reached with the harness's urllib helpers. Waits poll a condition with a
deadline; the primary dies by SIGKILL.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial import unittest

from tests.integration.harness import (
    HarnessError,
    ServerProcess,
    api_get,
    hold_for,
    http_request,
    issue_license,
    make_vendor_key,
    start_server,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import (
    ConnectionClosedError,
    PlainClient,
    Response,
    ResponseAssertions,
)

PRODUCT = "XMLSpy"
VERSION = "2025r2"
PRIMARY_NAME = "ls-primary"
FAILOVER_NAME = "ls-failover"
HEARTBEAT = 0.2
TAKEOVER = 1.5
TAKEOVER_LIMIT = TAKEOVER + 1.0
"""A new CHECKOUT must be served by the failover within this many seconds of the kill."""
TAKEOVER_FLOOR = TAKEOVER - 2 * HEARTBEAT
"""Sooner than this after the kill, the primary cannot have been silent for the takeover time."""
STEADY = 3 * TAKEOVER
"""How long a failover that must not take over is watched."""
SYNC_TIMEOUT = 15.0
STATE_TIMEOUT = 10.0
CLIENT_TIMEOUT = 5.0
SEATS = 3
PROOF_REFUSED = (
    "the primary refused our pairing proof: check that both servers use the same peer secret file"
)

log = Logger()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: one the system gave out and took back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event.get("kind") for event in events]


def license_ids(listing: list[dict[str, Any]]) -> set[str]:
    return {entry["id"] for entry in listing}


class FailoverProcessTestCase(ResponseAssertions, unittest.TestCase):
    """A vendor key trusted by two data directories, and helpers to run a primary and failover."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.primaryData = self.base / "primary"
        self.failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", self.primaryData)
        keys = self.failoverData / "vendor-keys"
        keys.mkdir(parents=True)
        shutil.copy(self.vendorKey.with_suffix(".pub"), keys)
        self.issued = 0
        self.primary: ServerProcess | None = None
        self.failover: ServerProcess | None = None

    # -- processes

    def startPrimary(self) -> ServerProcess:
        """Start the primary and keep its licensing port for later starts."""
        self.primary = start_server(self, self.primaryData, "--name", PRIMARY_NAME)
        self.primaryPort = self.primary.keep_licensing_port()
        self.primaryAddress = f"127.0.0.1:{self.primaryPort}"
        return self.primary

    def startFailover(
        self,
        primaryAddress: str | None = None,
        secretFile: Path | None = None,
        name: str = "failover",
    ) -> ServerProcess:
        """Start a failover of the primary (or of ``primaryAddress``) on its own data."""
        primaryAddress = primaryAddress or self.primaryAddress
        secretFile = secretFile or self.primaryData / "peer-secret"
        self.failover = start_server(
            self,
            self.failoverData,
            "--role",
            "failover",
            "--primary",
            primaryAddress,
            "--peer-secret-file",
            str(secretFile),
            "--heartbeat",
            str(HEARTBEAT),
            "--takeover-after",
            str(TAKEOVER),
            "--name",
            FAILOVER_NAME,
            name=name,
        )
        return self.failover

    def logs(self) -> str:
        """The end of every log, for failure messages."""
        servers = [s for s in (self.primary, self.failover) if s is not None]
        return "\n".join(server.log_tail(25) for server in servers)

    def statuses(self) -> str:
        """Both status documents as they are now (or why they cannot be had), and the logs."""
        parts = []
        for label, server in (("primary", self.primary), ("failover", self.failover)):
            if server is None:
                continue
            try:
                parts.append(f"{label} status: {json.dumps(self.status(server))}")
            except Exception as e:
                parts.append(f"{label} status: unavailable ({e!r})")
        return "\n".join(parts) + "\n" + self.logs()

    # -- the admin API

    def status(self, server: ServerProcess) -> dict[str, Any]:
        result = http_request(server, "GET", "/api/status", auth=False)
        if result.status != 200:
            raise HarnessError(f"GET /api/status: expected 200, got {result!r}")
        return result.json()

    def issue(self, product: str = PRODUCT, seats: int = SEATS) -> Path:
        self.issued += 1
        out = self.base / f"license-{self.issued}.json"
        return issue_license(self.vendorKey, out, product, "concurrent", seats)

    def addLicense(self, server: ServerProcess, product: str = PRODUCT, seats: int = SEATS) -> str:
        ids = upload_license(server, self.issue(product, seats))
        self.assertEqual(len(ids), 1, ids)
        return ids[0]

    def licenses(self, server: ServerProcess) -> set[str]:
        return license_ids(api_get(server, "/api/licenses"))

    def waitForEvent(self, server: ServerProcess, kind: str) -> dict[str, Any]:
        """Wait until ``GET /api/messages`` holds an event of ``kind``; return it."""

        def found() -> dict[str, Any] | None:
            for event in api_get(server, "/api/messages"):
                if event.get("kind") == kind:
                    return event
            return None

        return wait_for(
            found,
            STATE_TIMEOUT,
            f"a {kind!r} event in {server.name}'s messages",
            lambda: f"events: {kinds(api_get(server, '/api/messages'))}",
        )

    def waitSynced(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait until the failover is a paired standby holding the primary's revision.

        Returns the primary's and the failover's status documents of that moment.
        """

        def synced() -> tuple[dict[str, Any], dict[str, Any]] | None:
            primary = self.status(self.primary)
            failover = self.status(self.failover)
            ours = failover.get("peer") or {}
            theirs = primary.get("peer") or {}
            if (
                failover.get("state") == "standby"
                and ours.get("link") == "paired"
                and ours.get("last_sync") is not None
                and failover.get("revision") == primary.get("revision")
                and theirs.get("in_sync") is True
                and theirs.get("revision") == primary.get("revision")
            ):
                return primary, failover
            return None

        return wait_for(
            synced,
            SYNC_TIMEOUT,
            "the failover to be paired and synced with the primary",
            self.statuses,
        )

    def waitForState(self, server: ServerProcess, state: str) -> dict[str, Any]:
        return wait_for(
            lambda: (status := self.status(server)).get("state") == state and status,
            STATE_TIMEOUT,
            f"{server.name} to be {state}",
            self.statuses,
        )

    def holdsFor(self, seconds: float, what: str, predicate: Any) -> None:
        hold_for(predicate, seconds, what, self.statuses)

    # -- clients

    def connect(self, server: ServerProcess, timeout: float = CLIENT_TIMEOUT) -> PlainClient:
        client = PlainClient("127.0.0.1", server.licensing_port, timeout=timeout)
        self.addCleanup(client.close)
        return client

    def hello(self, client: PlainClient, machine: str) -> Response:
        return client.request(
            "HELLO",
            product=PRODUCT,
            version=VERSION,
            host=f"ws-{machine}",
            machine=machine,
            user="anna",
        )

    def session(self, server: ServerProcess, machine: str) -> PlainClient:
        client = self.connect(server)
        self.assertOK(self.hello(client, machine), "client")
        return client

    def checkout(self, server: ServerProcess, machine: str) -> str:
        """HELLO and CHECKOUT from a new connection; return the lease id."""
        client = self.session(server, machine)
        lease = self.assertOK(client.request("CHECKOUT"), "lease", "expires", "ttl")["lease"]
        client.close()
        return lease

    # -- assertions

    def assertStandbyAnswer(self, response: Response) -> None:
        """``ERR 503 standby primary=<the primary's address>``."""
        self.assertErr(response, 503, "standby")
        self.assertEqual(response.get("primary"), self.primaryAddress, response.line)

    def assertRenewal(self, response: Response) -> None:
        self.assertOK(response, "expires", "ttl")
        self.assertGreater(float(response["ttl"]), 0)
        self.assertGreater(int(response["expires"]), time.time())

    def assertRefusedAsStandby(self, result: Any) -> None:
        """An admin change refused with 409 and a JSON error naming the primary."""
        self.assertEqual(result.status, 409, result)
        error = result.json().get("error")
        self.assertIsInstance(error, str, result)
        self.assertIn(self.primaryAddress, error)


class PairedTestCase(FailoverProcessTestCase):
    """A primary and a failover that has paired and synced with it."""

    def setUp(self) -> None:
        super().setUp()
        self.startPrimary()
        self.startFailover()
        self.pairedStatus = self.waitSynced()


class PairingTests(PairedTestCase):
    """The pair as both servers show it, and a standby failover refusing work."""

    def test_statusOfBoth(self) -> None:
        """Both status pages name the peer; the failover holds the primary's revision."""
        primary, failover = self.pairedStatus
        peerKeys = {
            "name",
            "address",
            "version",
            "link",
            "problem",
            "last_sync",
            "last_heard",
            "state_since",
            "takeovers",
        }
        self.assertEqual(failover["role"], "failover")
        self.assertEqual(failover["state"], "standby")
        self.assertEqual(failover["primary"], self.primaryAddress)
        self.assertEqual(failover["revision"], primary["revision"])
        self.assertIsInstance(failover["revision"], int)
        ours = failover["peer"]
        self.assertLessEqual(peerKeys, set(ours), ours)
        self.assertEqual(ours["name"], PRIMARY_NAME)
        self.assertEqual(ours["address"], self.primaryAddress)
        self.assertEqual(ours["version"], primary["version"])
        self.assertEqual(ours["link"], "paired")
        self.assertIsNone(ours["problem"])
        for key in ("last_sync", "last_heard", "state_since"):
            self.assertIsInstance(ours[key], int, f"{key} in {ours}")
            self.assertLessEqual(abs(ours[key] - time.time()), 60, f"{key} in {ours}")
        self.assertEqual(ours["takeovers"], 0)

        primaryPeerKeys = {
            "name",
            "address",
            "seen_from",
            "version",
            "connected",
            "alive",
            "paired",
            "last_beat",
            "last_sync",
            "revision",
            "lag",
            "in_sync",
        }
        self.assertEqual(primary["role"], "primary")
        self.assertEqual(primary["state"], "active")
        self.assertIsNone(primary["primary"])
        theirs = primary["peer"]
        self.assertLessEqual(primaryPeerKeys, set(theirs), theirs)
        advertised = primary["failover"]
        self.assertIsInstance(advertised, str)
        host, _, port = advertised.rpartition(":")
        self.assertTrue(host, advertised)
        self.assertEqual(int(port), self.failover.licensing_port, advertised)
        self.assertEqual(theirs["name"], FAILOVER_NAME)
        self.assertEqual(theirs["address"], advertised)
        self.assertTrue(theirs["seen_from"].startswith("127.0.0.1:"), theirs)
        self.assertEqual(theirs["version"], failover["version"])
        self.assertIs(theirs["connected"], True)
        self.assertIs(theirs["alive"], True)
        for key in ("paired", "last_beat", "last_sync"):
            self.assertIsInstance(theirs[key], int, f"{key} in {theirs}")
        self.assertEqual(theirs["revision"], primary["revision"])
        self.assertEqual(theirs["lag"], 0)
        self.assertIs(theirs["in_sync"], True)

        status = self.assertOK(self.connect(self.primary).request("STATUS"), "failover")
        self.assertEqual(status["failover"], advertised)
        hello = self.assertOK(self.hello(self.connect(self.primary), "machine-1"), "failover")
        self.assertEqual(hello["failover"], advertised)
        self.assertEqual((hello["role"], hello["state"]), ("primary", "active"))

        line = self.assertOK(self.connect(self.failover).request("STATUS"))
        self.assertEqual(line["role"], "failover")
        self.assertEqual(line["state"], "standby")
        self.assertEqual(line["primary"], self.primaryAddress)
        self.assertEqual(line["server"], FAILOVER_NAME)

    def test_licenseSynced(self) -> None:
        """A license uploaded on the primary is soon listed by the failover, revision and all."""
        licenseId = self.addLicense(self.primary)
        primary, failover = self.waitSynced()
        self.assertIn(licenseId, self.licenses(self.failover))
        self.assertEqual(failover["peer"]["name"], PRIMARY_NAME)

    def test_standbyRefusesClients(self) -> None:
        """A standby failover answers HELLO, CHECKOUT and the rest with 503 naming the primary."""
        self.addLicense(self.primary)
        self.waitSynced()
        client = self.connect(self.failover)
        self.assertEqual(client.request("PING").line, "OK")
        self.assertStandbyAnswer(self.hello(client, "machine-1"))
        self.assertStandbyAnswer(client.request("CHECKOUT"))
        self.assertStandbyAnswer(client.request("CHECKOUT", product=PRODUCT))
        self.assertStandbyAnswer(client.request("HEARTBEAT"))
        self.assertStandbyAnswer(client.request("RELEASE", lease="l-AAAAAAAAAAAAAAAAAAAA"))
        self.assertStandbyAnswer(client.request("BORROW", product=PRODUCT, days=1))
        self.assertStandbyAnswer(self.hello(self.connect(self.failover), "machine-2"))

    def test_standbyRefusesAdminChanges(self) -> None:
        """A standby failover refuses changes to licenses, clients and assignments with 409."""
        licenseId = self.addLicense(self.primary)
        clientId = self.hello(self.connect(self.primary), "machine-1")["client"]
        self.waitSynced()
        self.assertEqual(self.licenses(self.failover), {licenseId})

        body = self.issue().read_bytes()
        self.assertRefusedAsStandby(http_request(self.failover, "POST", "/api/licenses", body))
        for method, path, document in (
            ("POST", f"/api/licenses/{licenseId}/deactivate", None),
            ("DELETE", f"/api/licenses/{licenseId}", None),
            ("PUT", f"/api/clients/{clientId}/products/{PRODUCT}/licenses", [licenseId]),
            ("DELETE", f"/api/clients/{clientId}", None),
        ):
            payload = None if document is None else json.dumps({"licenses": document}).encode()
            result = http_request(self.failover, method, path, payload)
            self.assertRefusedAsStandby(result)

        self.assertEqual(self.licenses(self.failover), {licenseId})
        self.assertEqual(self.licenses(self.primary), {licenseId})
        machines = {entry["machine"] for entry in api_get(self.failover, "/api/clients")}
        self.assertIn("machine-1", machines)


class TakeoverTests(PairedTestCase):
    """The primary dies: the failover takes over with the synced pool and leases."""

    def setUp(self) -> None:
        super().setUp()
        self.licenseId = self.addLicense(self.primary)
        self.leases = {
            machine: self.checkout(self.primary, machine) for machine in ("held-1", "held-2")
        }
        self.waitSynced()

    def killPrimaryAndWaitForTakeover(self, machine: str = "machine-new") -> tuple[float, str]:
        """SIGKILL the primary; poll HELLO and CHECKOUT at the failover until it serves.

        Fails unless a new connection gets a lease within ``TAKEOVER_LIMIT`` of the kill.
        Returns the seconds it took and the lease.
        """
        attempts: list[str] = []

        def tryCheckout() -> str | None:
            remaining = max(killed + TAKEOVER_LIMIT - time.monotonic(), 0.05)
            try:
                with PlainClient(
                    "127.0.0.1", self.failover.licensing_port, timeout=remaining
                ) as client:
                    hello = self.hello(client, machine)
                    if not hello.ok:
                        attempts.append(hello.line)
                        return None
                    answer = client.request("CHECKOUT", request="after-kill")
                    attempts.append(answer.line)
                    return answer["lease"] if answer.ok else None
            except (OSError, ConnectionClosedError) as e:
                attempts.append(repr(e))
                return None

        killed = time.monotonic()
        self.primary.kill()
        try:
            lease = wait_for(
                tryCheckout,
                max(killed + TAKEOVER_LIMIT - time.monotonic(), 0.0),
                f"the failover to serve a CHECKOUT within {TAKEOVER_LIMIT} s of the kill",
                lambda: f"answers: {summarize(attempts)}\n{self.statuses()}",
            )
        except HarnessError as e:
            elapsed = time.monotonic() - killed
            self.fail(f"no CHECKOUT served {elapsed:.2f} s after the kill: {e}")
        elapsed = time.monotonic() - killed
        log.info(
            "takeover: a new CHECKOUT was served {elapsed:.2f} s after the kill", elapsed=elapsed
        )
        self.assertLessEqual(
            elapsed,
            TAKEOVER_LIMIT,
            f"the failover served a new CHECKOUT {elapsed:.2f} s after the kill",
        )
        self.assertGreaterEqual(
            elapsed,
            TAKEOVER_FLOOR,
            f"the failover served {elapsed:.2f} s after the kill, before the primary had been "
            f"silent for {TAKEOVER} s; answers: {summarize(attempts)}",
        )
        self.takeoverSeconds = elapsed
        return elapsed, lease

    def test_takeover(self) -> None:
        """Within the takeover time plus 1 s of a SIGKILL the failover serves, with old leases."""
        elapsed, lease = self.killPrimaryAndWaitForTakeover()
        self.assertTrue(lease)

        status = self.status(self.failover)
        self.assertEqual(status["state"], "active", status)
        self.assertEqual(status["role"], "failover")
        self.assertEqual(status["peer"]["takeovers"], 1, status)
        line = self.assertOK(self.connect(self.failover).request("STATUS"))
        self.assertEqual((line["role"], line["state"]), ("failover", "active"))

        for machine, held in self.leases.items():
            client = self.connect(self.failover)
            hello = self.assertOK(self.hello(client, machine), "client")
            self.assertEqual((hello["role"], hello["state"]), ("failover", "active"))
            self.assertRenewal(client.request("HEARTBEAT", lease=held))

        # Two seats held from the primary plus the one taken after the kill: all three used.
        refused = self.session(self.failover, "machine-fourth").request("CHECKOUT")
        self.assertErr(refused, 409, "no-seats")

        event = self.waitForEvent(self.failover, "takeover")
        self.assertIn("message", event)
        self.assertEqual(self.licenses(self.failover), {self.licenseId})

    def test_handback(self) -> None:
        """When the primary returns it takes control back; what the failover did is dropped."""
        self.killPrimaryAndWaitForTakeover()
        self.waitForState(self.failover, "active")

        failoverOnly = self.addLicense(self.failover, product="StyleVision", seats=2)
        self.assertEqual(self.licenses(self.failover), {self.licenseId, failoverOnly})
        held = self.session(self.failover, "machine-roaming")
        self.assertOK(held.request("CHECKOUT", product="StyleVision"), "lease")

        restarted = time.monotonic()
        self.primary.start()
        self.assertEqual(self.primary.licensing_port, self.primaryPort)
        started = time.monotonic()
        self.waitForState(self.failover, "standby")
        log.info(
            "handback: the failover was standby {elapsed:.2f} s after the primary answered"
            " /healthz ({total:.2f} s after its start)",
            elapsed=time.monotonic() - started,
            total=time.monotonic() - restarted,
        )

        # Back in standby, the failover holds the primary's pool, not what it did itself.
        self.assertEqual(self.licenses(self.failover), {self.licenseId})
        self.assertStandbyAnswer(held.request("HEARTBEAT"))
        self.assertStandbyAnswer(self.hello(self.connect(self.failover), "machine-late"))
        self.waitForEvent(self.failover, "handback")

        primary, failover = self.waitSynced()
        self.assertEqual(failover["revision"], primary["revision"])
        self.assertEqual(self.licenses(self.failover), {self.licenseId})
        self.assertEqual(self.licenses(self.primary), {self.licenseId})
        machines = {entry["machine"] for entry in api_get(self.failover, "/api/clients")}
        self.assertNotIn("machine-roaming", machines)
        self.assertIn("held-1", machines)

        # The primary's Messages say that it was down, and that the failover served.
        outage = self.waitForEvent(self.primary, "outage")
        self.assertEqual(outage["data"]["clean"], False, outage)
        self.assertIn("did not stop cleanly", outage["message"])
        served = self.waitForEvent(self.primary, "failover-served")
        self.assertEqual(served["data"]["name"], FAILOVER_NAME, served)
        self.assertEqual(served["data"]["grants"], 2, served)
        self.assertLessEqual(outage["data"]["since"], served["data"]["since"], (outage, served))

        # Clients go back to the primary, where their leases are still held.
        client = self.session(self.primary, "held-1")
        self.assertRenewal(client.request("HEARTBEAT", lease=self.leases["held-1"]))

        # The failover mirrors the primary again.
        later = self.addLicense(self.primary, product="MapForce")
        self.waitSynced()
        self.assertEqual(self.licenses(self.failover), {self.licenseId, later})


class RefusedLinkTests(FailoverProcessTestCase):
    """A primary that answers but refuses the link is alive: the failover does not take over."""

    def test_wrongSecret(self) -> None:
        """A synced failover restarted with a wrong pairing secret stays standby, refused."""
        self.startPrimary()
        self.startFailover()
        self.addLicense(self.primary)
        self.waitSynced()
        self.failover.stop()
        self.primary.stop()
        self.primary.start()

        wrong = self.base / "wrong-secret"
        wrong.write_text("0123456789abcdef0123456789abcdef\n")
        self.startFailover(secretFile=wrong, name="failover-wrong-secret")

        def refused() -> dict[str, Any] | None:
            peer = self.status(self.failover).get("peer") or {}
            return peer if peer.get("link") == "refused" else None

        peer = wait_for(
            refused, STATE_TIMEOUT, "the failover to show a refused link", self.statuses
        )
        self.assertEqual(peer["problem"], PROOF_REFUSED, peer)
        self.assertIsNotNone(peer["last_sync"], "the failover must have synced before")

        seen: list[str] = []

        def standbyAndRefused() -> bool:
            status = self.status(self.failover)
            peer = status.get("peer") or {}
            seen.append(peer.get("link"))
            # The link stays refused through every retry; it never pairs.
            return (
                status.get("state") == "standby"
                and peer.get("link") == "refused"
                and isinstance(peer.get("problem"), str)
                and bool(peer["problem"].strip())
            )

        self.holdsFor(STEADY, "standby with a refused link and its reason", standbyAndRefused)
        log.info(
            "wrong secret: link values seen over {n} polls: {counts}",
            n=len(seen),
            counts={value: seen.count(value) for value in set(seen)},
        )
        self.assertIn("refused", seen)
        self.assertStandbyAnswer(self.hello(self.connect(self.failover), "machine-1"))
        status = self.status(self.failover)
        self.assertEqual(status["peer"]["takeovers"], 0, status)
        self.assertNotIn("takeover", kinds(api_get(self.failover, "/api/messages")))
        primary = self.status(self.primary)
        self.assertIsNone(primary["peer"], primary)
        # Many retries (one a heartbeat), one line in the log, none of them per retry.
        text = self.failover.log_path.read_text()
        self.assertEqual(text.count(PROOF_REFUSED), 1, self.logs())
        self.assertNotIn("Scheduling retry", text)
        self.assertNotIn("service stopped", text)


class NeverSyncedTests(FailoverProcessTestCase):
    """A failover that has never completed a sync has nothing to serve from."""

    def test_neverSyncedNeverTakesOver(self) -> None:
        """A failover whose primary never answered stays standby past the takeover time."""
        self.primaryAddress = f"127.0.0.1:{closed_port()}"
        secret = self.base / "peer-secret"
        secret.write_text("0123456789abcdef0123456789abcdef\n")
        self.startFailover(primaryAddress=self.primaryAddress, secretFile=secret)

        def standbyUnsynced() -> bool:
            status = self.status(self.failover)
            peer = status.get("peer") or {}
            return (
                status.get("state") == "standby"
                and status.get("primary") == self.primaryAddress
                and peer.get("link") != "paired"
                and peer.get("last_sync") is None
            )

        self.holdsFor(STEADY, "a standby failover that never synced", standbyUnsynced)
        self.assertStandbyAnswer(self.hello(self.connect(self.failover), "machine-1"))
        self.assertEqual(self.status(self.failover)["peer"]["takeovers"], 0)
        self.assertNotIn("takeover", kinds(api_get(self.failover, "/api/messages")))
        # Unreachable all along: said once in the log, not once a retry.
        text = self.failover.log_path.read_text()
        self.assertEqual(text.count("Cannot reach the primary"), 1, self.logs())
        self.assertNotIn("Scheduling retry", text)


def summarize(attempts: list[str]) -> str:
    """The distinct answers of a poll, in order, with how often each came."""
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt] = counts.get(attempt, 0) + 1
    return "; ".join(f"{answer} (x{count})" for answer, count in counts.items()) or "none"
