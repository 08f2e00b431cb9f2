"""The client SDK against real server processes: a failover drill and the command line.

A primary and its failover run as two ``twistd licenseserver`` processes on 127.0.0.1
with short heartbeat, takeover and lease times. An application holds a seat through the
blocking client; the primary is SIGKILLed and later started again on the same port. The
application's code does nothing meanwhile: the client moves the lease to the failover and
back, and its callback sees every step. Waits poll with deadlines; every process and
client is stopped by the test's cleanups.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from licenseserver import client as licensing
from licenseserver.cli import CommandError
from licenseserver.client import cli as client_cli
from tests.integration.harness import (
    HarnessError,
    ServerProcess,
    api_get,
    http_request,
    issue_license,
    local_endpoint,
    make_vendor_key,
    run_cli_result,
    start_server,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient

PRODUCT = "XMLSpy"
VERSION = "2025r2"
MACHINE = "drill-machine"
LINK_HEARTBEAT = 0.2
TAKEOVER = 1.5
LEASE_TTL = 8
"""Seconds a lease lives: the servers ask for a heartbeat every 2 s."""
SYNC_TIMEOUT = 15.0
MOVE_TIMEOUT = 20.0


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    """The application's event callback: keeps every event, from the client's event thread."""

    def __init__(self) -> None:
        self.events: list[licensing.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: licensing.Event) -> None:
        with self._lock:
            self.events.append(event)

    def all(self) -> list[licensing.Event]:
        with self._lock:
            return list(self.events)

    def seen(self, kind: str, server: str | None = None) -> licensing.Event | None:
        for event in self.all():
            if event.kind == kind and (server is None or event.server == server):
                return event
        return None

    def describe(self) -> str:
        return "events:\n" + "\n".join(
            f"  {e.kind} server={e.server} lease={e.lease}: {e.message}" for e in self.all()
        )


class PairTestCase(unittest.TestCase):
    """A primary (licensing port kept across starts) and its failover, both running."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        primaryData = self.base / "primary"
        failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", primaryData)
        (failoverData / "vendor-keys").mkdir(parents=True)
        shutil.copy(self.vendorKey.with_suffix(".pub"), failoverData / "vendor-keys")
        ttl = ("--lease-ttl", str(LEASE_TTL))
        self.primary = start_server(self, primaryData, "--name", "ls-primary", *ttl)
        self.primaryAddress = f"127.0.0.1:{self.primary.keep_licensing_port()}"
        failoverPort = free_port()
        self.failoverAddress = f"127.0.0.1:{failoverPort}"
        self.failover = start_server(
            self,
            failoverData,
            "--role",
            "failover",
            "--primary",
            self.primaryAddress,
            "--peer-secret-file",
            str(primaryData / "peer-secret"),
            "--heartbeat",
            str(LINK_HEARTBEAT),
            "--takeover-after",
            str(TAKEOVER),
            "--advertise",
            self.failoverAddress,
            "--name",
            "ls-failover",
            *ttl,
            licensing_endpoint=local_endpoint(failoverPort),
        )
        out = self.base / "license.json"
        issue_license(self.vendorKey, out, PRODUCT, "concurrent", 1)
        (self.licenseId,) = upload_license(self.primary, out)

    def logs(self) -> str:
        return "\n".join(s.log_tail(20) for s in (self.primary, self.failover))

    def status(self, server: ServerProcess) -> dict[str, Any]:
        result = http_request(server, "GET", "/api/status", auth=False)
        if result.status != 200:
            raise HarnessError(f"GET /api/status of {server.name}: {result!r}")
        return result.json()

    def leases(self, server: ServerProcess, machine: str = MACHINE) -> list[dict[str, Any]]:
        """The live leases of ``machine`` that ``server`` holds; [] when it is down."""
        if not server.running:
            return []
        try:
            listing = api_get(server, "/api/leases")
        except (HarnessError, OSError):
            return []
        return [entry for entry in listing if entry.get("machine") == machine]

    def waitSynced(self, leaseId: str | None = None) -> None:
        """Wait until the failover is paired, synced, and (if given) holds ``leaseId``."""

        def synced() -> bool:
            peer = self.status(self.failover).get("peer") or {}
            if peer.get("link") != "paired" or peer.get("last_sync") is None:
                return False
            if self.status(self.failover)["revision"] != self.status(self.primary)["revision"]:
                return False
            return leaseId is None or leaseId in [e["id"] for e in self.leases(self.failover)]

        wait_for(synced, SYNC_TIMEOUT, "the failover to sync from the primary", self.logs)

    def seatTakenByOthers(self) -> bool:
        """Whether another machine is refused the one seat at the primary right now."""
        with PlainClient("127.0.0.1", self.primary.licensing_port) as other:
            hello = other.request(
                "HELLO", product=PRODUCT, version=VERSION, host="ws-other", machine="other"
            )
            self.assertTrue(hello.ok, hello.line)
            answer = other.request("CHECKOUT", request="other-1")
            if answer.ok:
                other.request("RELEASE", lease=answer["lease"])
                return False
            self.assertEqual((answer.code, answer.reason), (409, "no-seats"), answer.line)
            return True


class FailoverDrillTests(PairTestCase):
    """An application keeps its seat through the primary's death and return."""

    def test_drill(self) -> None:
        """The lease is heartbeated at the failover while the primary is dead and goes back
        to the primary when it returns; the callback sees each step; never two leases."""
        self.waitSynced()
        recorder = Recorder()
        client = licensing.connect(
            self.primaryAddress,
            PRODUCT,
            VERSION,
            machine=MACHINE,
            on_event=recorder,
            retry_delay=0.25,
            request_timeout=2.0,
        )
        self.addCleanup(client.close)
        self.assertEqual(client.servers, [self.primaryAddress, self.failoverAddress])

        def oneLeaseAtMost(why: str) -> None:
            for server in (self.primary, self.failover):
                held = self.leases(server)
                if len(held) > 1:
                    self.fail(f"{server.name} holds {len(held)} leases {why}: {held}")

        def describe() -> str:
            return f"lease {lease!r}\n{recorder.describe()}\n{self.logs()}"

        # The application checks a seat out and goes about its work.
        lease = client.checkout()
        self.assertEqual(lease.server, self.primaryAddress)
        checkedOut = lease.id
        self.waitSynced(checkedOut)
        self.assertTrue(self.seatTakenByOthers())

        # The primary dies.
        self.primary.kill()
        expiresAtKill = lease.expires

        def keptAtFailover() -> bool:
            oneLeaseAtMost("while the primary is dead")
            self.assertTrue(lease.valid, describe())
            renewedThere = [e for e in self.leases(self.failover) if e["expires"] > expiresAtKill]
            return (
                lease.server == self.failoverAddress
                and recorder.seen(licensing.LEASE_KEPT, self.failoverAddress) is not None
                and bool(renewedThere)
            )

        wait_for(keptAtFailover, MOVE_TIMEOUT, "the lease to be kept at the failover", describe)
        self.assertEqual(lease.id, checkedOut)
        self.assertIsNotNone(recorder.seen(licensing.MOVED, self.failoverAddress))
        self.assertEqual(lease.state, licensing.HELD)

        # The primary returns on the same port; the failover hands back.
        self.primary.start()

        def backAtPrimary() -> bool:
            oneLeaseAtMost("after the primary returned")
            self.assertTrue(lease.valid, describe())
            back = recorder.seen(licensing.LEASE_KEPT, self.primaryAddress) or recorder.seen(
                licensing.LEASE_REACQUIRED, self.primaryAddress
            )
            return lease.server == self.primaryAddress and back is not None

        wait_for(backAtPrimary, MOVE_TIMEOUT, "the lease to come back to the primary", describe)
        held = self.leases(self.primary)
        self.assertEqual([e["id"] for e in held], [lease.id], describe())
        self.assertTrue(self.seatTakenByOthers())
        self.assertNotIn(licensing.LEASE_LOST, [e.kind for e in recorder.all()])

        # The application ends; the seat is free again.
        self.assertTrue(lease.release())
        self.assertEqual(self.leases(self.primary), [])
        self.assertFalse(self.seatTakenByOthers())
        client.close()

        steps = [
            (licensing.CONNECTED, self.primaryAddress),
            (licensing.MOVED, self.failoverAddress),
            (licensing.LEASE_KEPT, self.failoverAddress),
            (licensing.MOVED, self.primaryAddress),
            ({licensing.LEASE_KEPT, licensing.LEASE_REACQUIRED}, self.primaryAddress),
            (licensing.LEASE_RELEASED, None),
        ]
        remaining = iter(recorder.all())
        for kinds, server in steps:
            wanted = kinds if isinstance(kinds, set) else {kinds}
            for event in remaining:
                if event.kind in wanted and (server is None or event.server == server):
                    break
            else:
                self.fail(f"no {kinds} at {server} in order\n{recorder.describe()}")
        retries = [e for e in recorder.all() if e.kind == licensing.RETRY]
        self.assertTrue(any(e.server == self.primaryAddress for e in retries), recorder.describe())


class CommandLineTests(PairTestCase):
    """``licenseserver client ...`` against the real servers."""

    def setUp(self) -> None:
        super().setUp()
        # The lease records of this test's commands, in-process and in processes of their own.
        self.leaseDir = self.base / "leases"
        saved = os.environ.get(client_cli.LEASE_DIR_VARIABLE)
        os.environ[client_cli.LEASE_DIR_VARIABLE] = str(self.leaseDir)

        def restore() -> None:
            if saved is None:
                os.environ.pop(client_cli.LEASE_DIR_VARIABLE, None)
            else:
                os.environ[client_cli.LEASE_DIR_VARIABLE] = saved

        self.addCleanup(restore)

    def command(self, *argv: str) -> str:
        parser = argparse.ArgumentParser(prog="licenseserver")
        client_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["client", *argv])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        try:
            args.func(args)
        finally:
            self.patch(sys, "stdout", sys.__stdout__)
        return out.getvalue()

    def identity(self) -> list[str]:
        return [
            "--server",
            self.primaryAddress,
            "--product",
            PRODUCT,
            "--version",
            VERSION,
            "--machine",
            MACHINE,
            "--json",
        ]

    def test_shellSession(self) -> None:
        """A script checks a seat out, heartbeats it, reads the status and releases it."""
        grant = json.loads(self.command("checkout", *self.identity()))
        self.assertEqual(grant["license"], self.licenseId)
        self.assertEqual([e["id"] for e in self.leases(self.primary)], [grant["lease"]])
        renewed = json.loads(
            self.command("heartbeat", *self.identity(), "--lease", grant["lease"])
        )
        self.assertGreaterEqual(int(renewed["expires"]), grant["expires"])
        status = json.loads(
            self.command(
                "status",
                "--server",
                self.primaryAddress,
                "--server",
                self.failoverAddress,
                "--json",
            )
        )
        self.assertEqual(status[self.primaryAddress]["role"], "primary")
        self.assertEqual(status[self.failoverAddress]["state"], "standby")
        self.command("release", *self.identity(), "--lease", grant["lease"])
        self.assertEqual(self.leases(self.primary), [])
        borrowed = json.loads(self.command("borrow", *self.identity(), "--days", "2"))
        self.assertEqual(borrowed["server"], self.primaryAddress)
        self.command("release", *self.identity(), "--lease", borrowed["id"])

    def registration(self, machine: str = MACHINE) -> list[tuple[str, str, str, str]]:
        """(host, product, version, user) of each product ``machine`` has registered."""
        return sorted(
            (client["host"], p["product"], p["version"], p["user"])
            for client in api_get(self.primary, "/api/clients")
            if client["machine"] == machine
            for p in client["products"]
        )

    def test_registrationKept(self) -> None:
        """After a checkout that said host ws-anna and user anna, a heartbeat and a release
        that give only the lease id leave the machine's registration as it was; one for
        another machine is refused and registers nothing."""
        said = ["--host", "ws-anna", "--user", "anna"]
        grant = json.loads(self.command("checkout", *self.identity(), *said))
        registered = self.registration()
        self.assertEqual(registered, [("ws-anna", PRODUCT, VERSION, "anna")])
        renewed = json.loads(self.command("heartbeat", "--lease", grant["lease"], "--json"))
        self.assertGreaterEqual(int(renewed["expires"]), grant["expires"])
        self.assertEqual(self.registration(), registered)
        refused = self.assertRaises(
            CommandError,
            self.command,
            "heartbeat",
            "--lease",
            grant["lease"],
            "--machine",
            "ws-other",
        )
        self.assertEqual(
            str(refused),
            f"lease {grant['lease']} is not held by machine ws-other:"
            f" it was checked out for machine {MACHINE}",
        )
        self.assertEqual(self.registration("ws-other"), [])
        self.command("release", "--lease", grant["lease"])
        self.assertEqual(self.leases(self.primary), [])
        self.assertEqual(self.registration(), registered)

    def test_leaseOfAnotherMachine(self) -> None:
        """Another machine that names the lease (no record of it there) gets the server's
        404 unknown-lease, and the line says the lease may belong to another machine."""
        grant = json.loads(self.command("checkout", *self.identity()))
        os.environ[client_cli.LEASE_DIR_VARIABLE] = str(self.base / "other-machine")
        other = [
            "--server",
            self.primaryAddress,
            "--product",
            PRODUCT,
            "--version",
            VERSION,
            "--machine",
            "ws-other",
            "--host",
            "ws-other",
            "--user",
            "bob",
        ]
        result = run_cli_result("client", "heartbeat", *other, "--lease", grant["lease"])
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn("404 unknown-lease", result.stderr)
        self.assertIn(
            f"lease {grant['lease']} is not held by machine ws-other: it was released, it"
            " expired, or it belongs to another machine",
            result.stderr,
        )
        self.assertEqual([e["id"] for e in self.leases(self.primary)], [grant["lease"]])

    def test_toolCommand(self) -> None:
        """``licenseserver client`` in a process of its own: JSON out; an error is one line
        and exit status 1."""
        from licenseserver import cli

        # A tool without the client command fails here (argparse exits), not skips.
        cli.build_parser().parse_args(["client", "status"])
        result = run_cli_result("client", "checkout", *self.identity())
        self.assertEqual(result.returncode, 0, result.stderr)
        lease = json.loads(result.stdout)["lease"]
        self.assertEqual([e["id"] for e in self.leases(self.primary)], [lease])
        result = run_cli_result("client", "checkout", *self.identity()[:-1], "--product", "Nope")
        self.assertEqual(result.returncode, 1)
        self.assertIn("404 no-license", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)
