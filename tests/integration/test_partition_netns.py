"""A cut between a primary and its failover while clients reach both (FAILOVER.md rules 14-19).

The primary and the failover run as real ``twistd licenseserver`` processes, each in a
network namespace of its own (``netns.Hub``): both joined to a router namespace, which the
test's own namespace is joined to as well, so that the test's clients reach both servers.
The link between the servers is cut by taking away the routes between their namespaces
(the failover takes over, the primary goes on serving the clients that reach it) and healed
by putting the routes back (the failover hands its leases back and returns to standby).

Clients are the independent ``plainclient``; each machine keeps one session at the server
it uses and heartbeats its lease there whenever the test counts the seats. Under ``exact``
the seats held at both servers together never exceed the license's N; under ``full`` both
servers serve the whole pool, and the primary shows the over-allocation after the merge.
Under both, every lease held during the cut is still held, under its id, at the primary.
"""

from __future__ import annotations

import http.cookiejar
import json
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.integration import netns
from tests.integration.harness import (
    HTTP_TIMEOUT,
    HarnessError,
    ServerProcess,
    api_get,
    http_request,
    interface_endpoint,
    issue_license,
    make_vendor_key,
    run_cli,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient, Response, ResponseAssertions

PRODUCT = "XMLSpy"
VERSION = "2025r2"
PRIMARY_NAME = "ls-primary"
FAILOVER_NAME = "ls-failover"
SEATS = 5
SHARE = 2
HEARTBEAT = 0.5
TAKEOVER = 3.0
SYNC_TIMEOUT = 30.0
STATE_TIMEOUT = 30.0
CLIENT_TIMEOUT = 10.0
START_TIMEOUT = 40.0


@dataclass
class Seat:
    """A machine holding a lease, with its session at the server it uses now."""

    machine: str
    lease: str
    server: ServerProcess
    client: PlainClient


class PartitionTestCase(ResponseAssertions, unittest.TestCase):
    """A primary in one namespace and its paired, synced failover in another."""

    def setUp(self) -> None:
        self.hub = netns.Hub(self, ("pri", "fo")).build()
        self.hub.check()

        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        primaryData = self.base / "primary"
        failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", primaryData)
        keys = failoverData / "vendor-keys"
        keys.mkdir(parents=True)
        shutil.copy(self.vendorKey.with_suffix(".pub"), keys)
        self.seats: list[Seat] = []
        self.primary: ServerProcess | None = None
        self.failover: ServerProcess | None = None

        self.primary = self.startIn(
            "pri", primaryData, "--name", PRIMARY_NAME, "--takeover-after", str(TAKEOVER)
        )
        self.primaryAddress = f"{self.primary.host}:{self.primary.keep_licensing_port()}"
        self.failover = self.startIn(
            "fo",
            failoverData,
            "--role",
            "failover",
            "--primary",
            self.primaryAddress,
            "--peer-secret-file",
            str(primaryData / "peer-secret"),
            "--heartbeat",
            str(HEARTBEAT),
            "--takeover-after",
            str(TAKEOVER),
            "--name",
            FAILOVER_NAME,
        )
        self.failoverAddress = f"{self.failover.host}:{self.failover.licensing_port}"
        self.waitSynced()
        # The link between the two goes through the hub, from the failover's address.
        peer = self.status(self.primary)["peer"]
        self.assertEqual(peer["address"], self.failoverAddress, peer)
        self.assertEqual(peer["seen_from"].rpartition(":")[0], self.failover.host, peer)

    def startIn(self, spoke: str, data: Path, *args: str) -> ServerProcess:
        """Start a server in the namespace of ``spoke``, listening on its address only.

        Its log leaves out the web requests: the tests poll the API often.
        """
        host = self.hub.address(spoke)
        server = ServerProcess(
            data,
            *args,
            "--web-access-log",
            "none",
            name=f"server-{spoke}",
            host=host,
            command_prefix=netns.exec_prefix(self.hub.namespace(spoke)),
            licensing_endpoint=interface_endpoint(host),
            web_endpoint=interface_endpoint(host),
        )
        self.addCleanup(server.stop)
        server.start(START_TIMEOUT)
        return server

    # -- what the servers say

    def status(self, server: ServerProcess) -> dict[str, Any]:
        result = http_request(server, "GET", "/api/status", auth=False)
        if result.status != 200:
            raise HarnessError(f"GET /api/status of {server.name}: got {result!r}")
        return result.json()

    def licenseView(self, server: ServerProcess, licenseId: str) -> dict[str, Any]:
        for entry in api_get(server, "/api/licenses"):
            if entry["id"] == licenseId:
                return entry
        raise HarnessError(f"{server.name} lists no license {licenseId}")

    def liveLeases(self, server: ServerProcess) -> dict[str, dict[str, Any]]:
        """The live leases of ``PRODUCT`` that ``server`` lists, by id."""
        return {
            lease["id"]: lease
            for lease in api_get(server, "/api/leases")
            if lease["product"] == PRODUCT
        }

    def events(self, server: ServerProcess, kind: str) -> list[dict[str, Any]]:
        return [e for e in api_get(server, "/api/messages") if e.get("kind") == kind]

    def adminPage(self, server: ServerProcess, path: str) -> str:
        """The text of a web page as the admin sees it, logged in with the password."""
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        form = urllib.parse.urlencode({"password": server.admin_password, "next": path})
        with opener.open(
            server.web_url + "/login", data=form.encode("ascii"), timeout=HTTP_TIMEOUT
        ) as response:
            self.assertEqual(urllib.parse.urlsplit(response.url).path, path, response.url)
            return response.read().decode("utf-8")

    def describe(self) -> str:
        """Both servers' status, leases and log ends, the seats, and the hub: for failures."""
        parts = [f"seats: {[(s.machine, s.lease, s.server.name) for s in self.seats]}"]
        for server in (self.primary, self.failover):
            if server is None:
                continue
            try:
                parts.append(f"{server.name} status: {json.dumps(self.status(server))}")
                leases = sorted(
                    (lease["machine"], lease["id"]) for lease in self.liveLeases(server).values()
                )
                parts.append(f"{server.name} leases: {leases}")
            except Exception as e:
                parts.append(f"{server.name}: unavailable ({e!r})")
            parts.append(server.log_tail(30))
        parts.append(self.hub.describe())
        return "\n".join(parts)

    # -- waiting

    def waitSynced(self) -> None:
        """Wait until the failover is a paired standby holding the primary's revision."""

        def synced() -> bool:
            primary = self.status(self.primary)
            failover = self.status(self.failover)
            ours = failover.get("peer") or {}
            theirs = primary.get("peer") or {}
            return (
                failover.get("state") == "standby"
                and ours.get("link") == "paired"
                and failover.get("revision") == primary.get("revision")
                and theirs.get("in_sync") is True
            )

        wait_for(synced, SYNC_TIMEOUT, "the failover to be paired and synced", self.describe)

    def waitForState(self, server: ServerProcess, state: str) -> None:
        wait_for(
            lambda: self.status(server).get("state") == state,
            STATE_TIMEOUT,
            f"{server.name} to be {state}",
            self.describe,
        )

    def waitForCutLimit(self, server: ServerProcess, licenseId: str, serving: int) -> None:
        """Wait until ``server`` shows the limit of a cut: at most ``serving`` seats."""
        wait_for(
            lambda: self.licenseView(server, licenseId)["serving_at_most"] == serving,
            STATE_TIMEOUT,
            f"{server.name} to serve at most {serving} seats of {licenseId}",
            self.describe,
        )

    # -- the link

    def cut(self) -> None:
        self.hub.cut("pri", "fo")
        self.hub.check()

    def heal(self) -> None:
        self.hub.heal("pri", "fo")
        self.hub.check()

    # -- licenses

    def addLicense(self, policy: str, share: int | None = None) -> str:
        out = self.base / f"license-{policy}.json"
        options: dict[str, object] = {"failover_policy": policy}
        if share is not None:
            options["failover_share"] = share
        issue_license(self.vendorKey, out, PRODUCT, "concurrent", SEATS, **options)
        ids = upload_license(self.primary, out)
        self.assertEqual(len(ids), 1, ids)
        view = self.licenseView(self.primary, ids[0])
        self.assertEqual(view["partition_policy"], policy, view)
        self.assertEqual(view["failover_share"], share or 0, view)
        self.assertEqual(view["policy_source"], "license", view)
        return ids[0]

    # -- clients

    def session(self, server: ServerProcess, machine: str) -> PlainClient:
        """A new connection to ``server`` that has said HELLO as ``machine``."""
        client = PlainClient(server.host, server.licensing_port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        hello = client.request(
            "HELLO",
            product=PRODUCT,
            version=VERSION,
            host=f"ws-{machine}",
            machine=machine,
            user="anna",
        )
        self.assertOK(hello, "client")
        return client

    def grant(self, server: ServerProcess, machine: str) -> Seat:
        """CHECKOUT at ``server`` as a new machine, which must get a seat; count the seats."""
        client = self.session(server, machine)
        answer = self.assertOK(client.request("CHECKOUT"), "lease", "expires", "ttl")
        seat = Seat(machine, answer["lease"], server, client)
        self.seats.append(seat)
        self.checkSeats()
        return seat

    def refuse(self, server: ServerProcess, machine: str) -> Response:
        """CHECKOUT at ``server`` as a new machine, which must get ``409 no-seats``."""
        with PlainClient(server.host, server.licensing_port, timeout=CLIENT_TIMEOUT) as client:
            self.assertOK(
                client.request(
                    "HELLO",
                    product=PRODUCT,
                    version=VERSION,
                    host=f"ws-{machine}",
                    machine=machine,
                    user="anna",
                )
            )
            answer = self.assertErr(client.request("CHECKOUT"), 409, "no-seats")
        self.checkSeats()
        return answer

    def heartbeatAll(self) -> None:
        """Every seat's machine heartbeats its lease at the server it uses: all renewed."""
        for seat in self.seats:
            self.assertRenewal(seat.client.request("HEARTBEAT", lease=seat.lease), seat)

    def seatsHeld(self) -> set[tuple[str, str, str]]:
        """The seats held at the servers that serve: each (machine, user, product) with a
        live lease that the primary lists, or the failover while it is active (a lease it
        synced is listed by both; in standby it only mirrors the primary)."""
        servers = [self.primary]
        if self.status(self.failover).get("state") == "active":
            servers.append(self.failover)
        holders = set()
        for server in servers:
            for lease in self.liveLeases(server).values():
                holders.add((lease["machine"], lease["user"], lease["product"]))
        return holders

    limit = SEATS
    """The most seats the clients may hold between both servers."""

    def checkSeats(self) -> None:
        """Heartbeat every seat, then count the seats held: never more than ``limit``, and
        held by exactly the machines that the test knows hold one."""
        self.heartbeatAll()
        holders = self.seatsHeld()
        machines = {machine for machine, _, _ in holders}
        self.expect(
            len(self.seats) <= self.limit and len(holders) <= self.limit,
            f"{len(self.seats)} clients hold seats, the servers list {len(holders)};"
            f" at most {self.limit} may be held",
        )
        self.expect(
            machines == {seat.machine for seat in self.seats},
            f"the servers list seats of {sorted(machines)}",
        )

    def waitForHandback(self) -> list[str]:
        """Heartbeat every seat at its server until the failover is standby again; a client
        of the failover that gets ``503 standby`` goes to the primary, says HELLO as the
        same machine and heartbeats the same lease there. No heartbeat may be refused.

        Returns every answer a moved client got from the failover, in order.
        """
        answers: list[str] = []

        def roundTrip() -> bool:
            for seat in self.seats:
                answer = seat.client.request("HEARTBEAT", lease=seat.lease)
                if seat.server is self.failover:
                    answers.append(answer.line)
                    if not answer.ok and (answer.code, answer.reason) == (503, "standby"):
                        self.assertEqual(answer.get("primary"), self.primaryAddress, answer.line)
                        seat.client.close()
                        seat.server = self.primary
                        seat.client = self.session(self.primary, seat.machine)
                        answer = seat.client.request("HEARTBEAT", lease=seat.lease)
                self.assertRenewal(answer, seat)
            return self.status(self.failover).get("state") == "standby" and all(
                seat.server is self.primary for seat in self.seats
            )

        wait_for(roundTrip, STATE_TIMEOUT, "the handback of every seat", self.describe)
        return answers

    def release(self, seat: Seat) -> None:
        self.assertOK(seat.client.request("RELEASE", lease=seat.lease))
        self.seats.remove(seat)

    # -- assertions

    def expect(self, condition: object, message: str) -> None:
        """Fail with ``message`` and what the servers and the hub look like, unless true."""
        if not condition:
            self.fail(f"{message}\n{self.describe()}")

    def assertRenewal(self, response: Response, seat: Seat) -> None:
        what = f"HEARTBEAT of {seat.machine}'s lease {seat.lease} at {seat.server.name}"
        self.expect(response.ok, f"{what}: got {response.line!r}")
        self.assertGreater(float(response["ttl"]), 0, response.line)
        self.assertGreater(int(response["expires"]), time.time(), response.line)

    def assertAllAtPrimary(self) -> None:
        """The primary lists every seat's lease, and each machine renews it there, also
        from a new session, under the same id."""
        leases = self.liveLeases(self.primary)
        for seat in self.seats:
            self.assertIs(seat.server, self.primary, seat.machine)
            self.expect(seat.lease in leases, f"the primary lists no lease {seat.lease}")
            self.assertEqual(leases[seat.lease]["machine"], seat.machine, leases[seat.lease])
            fresh = self.session(self.primary, seat.machine)
            self.assertRenewal(fresh.request("HEARTBEAT", lease=seat.lease), seat)
            fresh.close()
        self.heartbeatAll()

    def assertLeaseClients(self) -> None:
        """Each lease the primary lists names the registered client of its own machine, and
        shows that machine's host."""
        clients = {c["id"]: c["machine"] for c in api_get(self.primary, "/api/clients")}
        for lease in self.liveLeases(self.primary).values():
            machine = lease["machine"]
            self.assertEqual(
                (clients.get(lease["client"]), lease["host"]),
                (machine, f"ws-{machine}"),
                f"lease {lease['id']} of {machine} names client {lease['client']} and host"
                f" {lease['host']!r}; the primary's clients are {clients}",
            )


class ExactPartitionTests(PartitionTestCase):
    """``exact``: never more than N seats in use, whatever the cut (rules 16-18)."""

    def test_exactNeverMoreThanLicensed(self) -> None:
        """Across the cut and the merge the seats in use at both servers never exceed N.

        Two seats are held before the cut. During it the primary serves at most N - E = 3
        and the failover, which synced 2 live leases, grants at most min(E, N - 2) = 2 new
        ones; each refuses the next with 409 no-seats. After the handback the primary holds
        all 5 leases under their ids, refuses a sixth, and grants again once one is released.
        """
        licenseId = self.addLicense("exact", SHARE)
        self.waitSynced()
        for machine in ("held-1", "held-2"):
            self.grant(self.primary, machine)
        self.waitSynced()
        synced = self.liveLeases(self.failover)
        self.expect(
            set(synced) == {seat.lease for seat in self.seats}, "the failover lacks leases"
        )
        status = self.assertOK(self.seats[0].client.request("STATUS"), "failover")
        self.assertEqual(status["failover"], self.failoverAddress)

        self.cut()
        self.waitForCutLimit(self.primary, licenseId, SEATS - SHARE)
        self.waitForState(self.failover, "active")
        self.waitForCutLimit(self.failover, licenseId, 2 + SHARE)
        self.checkSeats()

        self.grant(self.primary, "cut-primary-1")
        self.grant(self.failover, "cut-failover-1")
        refused = self.refuse(self.primary, "cut-primary-2")
        self.assertIn("exact partition policy", refused.get("message", ""), refused.line)
        self.grant(self.failover, "cut-failover-2")
        refused = self.refuse(self.failover, "cut-failover-3")
        self.assertIn("exact partition policy", refused.get("message", ""), refused.line)
        self.refuse(self.primary, "cut-primary-3")
        self.expect(len(self.seatsHeld()) == SEATS, f"not {SEATS} seats held")
        self.assertEqual(self.licenseView(self.primary, licenseId)["in_use"], SEATS - SHARE)
        self.assertEqual(self.licenseView(self.failover, licenseId)["in_use"], 2 + SHARE)

        self.heal()
        answers = self.waitForHandback()
        self.assertNotIn("unknown-lease", " ".join(answers))
        self.waitSynced()
        self.checkSeats()

        self.assertAllAtPrimary()
        view = self.licenseView(self.primary, licenseId)
        self.assertEqual(view["in_use"], SEATS, view)
        self.assertEqual(view["over_allocated"], 0, view)
        self.assertIsNone(view["serving_at_most"], view)
        self.expect(len(self.seatsHeld()) == SEATS, f"not {SEATS} seats held")
        self.assertEqual(self.events(self.primary, "over-allocated"), [])

        self.refuse(self.primary, "after-1")
        self.release(self.seats[-1])
        self.grant(self.primary, "after-2")
        self.refuse(self.primary, "after-3")
        self.assertEqual(self.licenseView(self.primary, licenseId)["in_use"], SEATS)


class FullPartitionTests(PartitionTestCase):
    """``full``: both servers serve the whole pool during a cut; the merge keeps every
    lease and shows the over-allocation until releases bring the seats below N (rule 18)."""

    limit = 2 * SEATS

    def test_fullOverAllocatedAfterMerge(self) -> None:
        """Both servers grant during the cut (each up to N); after the handback the primary
        keeps all 8 leases, shows the license over-allocated by 3 and grants no seat until
        fewer than N are in use."""
        licenseId = self.addLicense("full")
        self.waitSynced()
        for machine in ("held-1", "held-2"):
            self.grant(self.primary, machine)
        self.waitSynced()

        self.cut()
        self.waitForState(self.failover, "active")
        self.assertIsNone(self.licenseView(self.primary, licenseId)["serving_at_most"])
        self.assertIsNone(self.licenseView(self.failover, licenseId)["serving_at_most"])
        self.checkSeats()

        for n in (1, 2, 3):
            self.grant(self.primary, f"cut-primary-{n}")
            self.grant(self.failover, f"cut-failover-{n}")
        self.refuse(self.primary, "cut-primary-4")
        self.refuse(self.failover, "cut-failover-4")
        self.assertEqual(self.licenseView(self.primary, licenseId)["in_use"], SEATS)
        self.assertEqual(self.licenseView(self.failover, licenseId)["in_use"], SEATS)
        self.expect(len(self.seatsHeld()) == SEATS + 3, f"not {SEATS + 3} seats held")
        fromFailover = [seat.lease for seat in self.seats if seat.server is self.failover]

        self.heal()
        answers = self.waitForHandback()
        self.assertNotIn("unknown-lease", " ".join(answers))
        self.waitSynced()
        self.checkSeats()

        self.assertAllAtPrimary()
        self.assertEqual(len(self.seats), SEATS + 3)
        view = self.licenseView(self.primary, licenseId)
        self.assertEqual((view["in_use"], view["over_allocated"]), (SEATS + 3, 3), view)

        # Messages and the header say so; the audit log has the merged leases.
        notes = self.events(self.primary, "over-allocated")
        self.assertIn(3, [note["data"]["over"] for note in notes], notes)
        self.assertTrue(all(note["data"]["license"] == licenseId for note in notes), notes)
        page = self.adminPage(self.primary, "/pool")
        self.assertIn(f"license {licenseId} ({PRODUCT}) is over-allocated by 3", page)
        self.assertIn(" over-allocated by 3</span>", page)
        merged = json.loads(
            run_cli(
                "audit",
                "show",
                "--data",
                str(self.primary.data_dir),
                "--json",
                "--kind",
                "lease-merged",
            )
        )
        self.assertLessEqual(set(fromFailover), {entry["data"]["lease"] for entry in merged})

        # No new seat until fewer than N are in use; no running client loses its seat.
        self.refuse(self.primary, "after-1")
        for over in (2, 1, 0):
            self.release(self.seats[0])
            view = self.licenseView(self.primary, licenseId)
            self.assertEqual(view["over_allocated"], over, view)
            self.refuse(self.primary, "after-1")
        self.release(self.seats[0])
        self.assertEqual(self.licenseView(self.primary, licenseId)["in_use"], SEATS - 1)
        self.grant(self.primary, "after-1")
        self.refuse(self.primary, "after-2")
        view = self.licenseView(self.primary, licenseId)
        self.assertEqual((view["in_use"], view["over_allocated"]), (SEATS, 0), view)


class MergedLeaseClientTests(PartitionTestCase):
    """A lease merged from the failover belongs to its machine's client at the primary."""

    def test_mergedLeaseNamesItsMachine(self) -> None:
        """A machine new to both servers checks out at each during the cut: after the
        handback the primary lists each lease under the client of its own machine (the two
        servers numbered their new clients alike), with that machine's host."""
        self.addLicense("full")
        self.waitSynced()
        self.cut()
        self.waitForState(self.failover, "active")
        self.grant(self.primary, "cut-primary-1")
        self.grant(self.failover, "cut-failover-1")

        self.heal()
        self.waitForHandback()
        self.waitSynced()
        self.assertAllAtPrimary()
        self.assertLeaseClients()
