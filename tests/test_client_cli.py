"""Tests for licenseserver.client.cli: ``licenseserver client ...`` against in-memory servers."""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import stat
import sys
from pathlib import Path

from twisted.trial import unittest

from licenseserver.cli import CommandError
from licenseserver.client import cli, core
from licenseserver.client.blocking import Client
from tests.test_client import FAILOVER, LINK_BEAT, MACHINE, PRIMARY, TTL, FakeServers
from tests.test_client_blocking import InlineRunner

IDENTITY = ["--product", "XMLSpy", "--version", "2025r2", "--machine", MACHINE]


def buildParser() -> argparse.ArgumentParser:
    """A parser with the ``client`` command, as the tool's parser has it."""
    parser = argparse.ArgumentParser(prog="licenseserver")
    register = parser.add_subparsers(dest="command", required=True)
    cli.register(register)
    return parser


def leaseDirectory(testcase: unittest.TestCase) -> Path:
    """A new lease directory that $LICENSESERVER_LEASE_DIR names for the test."""
    directory = Path(testcase.mktemp()).resolve() / "leases"
    saved = os.environ.get(cli.LEASE_DIR_VARIABLE)
    os.environ[cli.LEASE_DIR_VARIABLE] = str(directory)

    def restore() -> None:
        if saved is None:
            os.environ.pop(cli.LEASE_DIR_VARIABLE, None)
        else:
            os.environ[cli.LEASE_DIR_VARIABLE] = saved

    testcase.addCleanup(restore)
    return directory


class CommandTests(unittest.TestCase):
    """Each command does one thing and prints it, plain or as JSON."""

    def setUp(self) -> None:
        self.servers = FakeServers(self, seats=2)
        self.patch(
            cli,
            "client_factory",
            functools.partial(
                Client, runner=InlineRunner(self.servers), endpoint_for=self.servers.endpointFor
            ),
        )
        self.patch(cli, "now", self.servers.clock.seconds)
        self.leaseDir = leaseDirectory(self)

    def command(self, *argv: str) -> str:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        args = buildParser().parse_args(["client", *argv])
        try:
            args.func(args)
        finally:
            self.patch(sys, "stdout", sys.__stdout__)
        return out.getvalue()

    def runJSON(self, *argv: str) -> dict:
        return json.loads(self.command(*argv, "--json"))

    def held(self) -> list:
        return self.servers.liveLeases(self.servers.primary)

    def test_checkoutLeavesLease(self) -> None:
        """checkout prints the lease and leaves it on the server after the command ends."""
        grant = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, "--request", "job-1")
        self.assertEqual(grant["license"], self.servers.licenseId)
        self.assertEqual((grant["server"], grant["machine"]), (PRIMARY, MACHINE))
        self.assertEqual((grant["request"], grant["ttl"]), ("job-1", TTL))
        (held,) = self.held()
        self.assertEqual(held.id, grant["lease"])
        again = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, "--request", "job-1")
        self.assertEqual(again["lease"], grant["lease"])

    def test_plainOutput(self) -> None:
        """Without --json, checkout prints lines for people."""
        text = self.command("checkout", "--server", PRIMARY, *IDENTITY)
        (held,) = self.held()
        self.assertIn(f"lease {held.id} of license {self.servers.licenseId}", text)
        self.assertIn("expires", text)

    def registration(self, machine: str = MACHINE) -> tuple[str, list[tuple[str, str, str]]]:
        """What the primary holds of a machine: its host, and (product, version, user) each."""
        client = self.servers.primary.pool.clientByMachine(machine)
        self.assertIsNotNone(client, f"machine {machine} is not registered")
        products = self.servers.primary.pool.productsOf(client.id)
        return client.host, sorted((p.product, p.version, p.user) for p in products)

    def test_heartbeatAndRelease(self) -> None:
        """A lease checked out by one command is heartbeated and released by the next, which
        need only its id; a release of a lease no longer held says so."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.servers.advance(30)
        renewed = self.runJSON("heartbeat", "--lease", lease)
        self.assertEqual(int(renewed["expires"]), int(self.servers.clock.seconds()) + TTL)
        self.assertEqual(self.held()[0].expires, int(renewed["expires"]))
        released = self.runJSON("release", "--lease", lease)
        self.assertEqual(released, {"released": lease, "server": PRIMARY})
        self.assertEqual(self.held(), [])
        explicit = [*IDENTITY, "--host", "ws-test", "--user", "tester"]
        e = self.assertRaises(
            CommandError, self.command, "release", "--server", PRIMARY, *explicit, "--lease", lease
        )
        self.assertIn("404 unknown-lease", str(e))
        self.assertIn(
            f"lease {lease} is not held by machine {MACHINE}: it was released, it expired,"
            " or it belongs to another machine",
            str(e),
        )

    def test_registrationKept(self) -> None:
        """heartbeat and release say HELLO with what the checkout said: the machine's host
        and user stay as registered, whatever this machine's defaults are."""
        said = ["--host", "build-7", "--user", "ci", "--cores", "8"]
        grant = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, *said)
        self.assertEqual(
            {k: grant[k] for k in ("product", "version", "machine", "host", "user", "cores")},
            {
                "product": "XMLSpy",
                "version": "2025r2",
                "machine": MACHINE,
                "host": "build-7",
                "user": "ci",
                "cores": 8,
            },
        )
        registered = self.registration()
        self.assertEqual(registered, ("build-7", [("XMLSpy", "2025r2", "ci")]))
        self.servers.advance(30)
        self.runJSON("heartbeat", "--lease", grant["lease"])
        self.assertEqual(self.registration(), registered)
        product = self.servers.primary.pool.productsOf(
            self.servers.primary.pool.clientByMachine(MACHINE).id
        )[0]
        self.assertEqual(product.cores, 8)
        self.runJSON("release", "--lease", grant["lease"])
        self.assertEqual(self.registration(), registered)
        self.assertEqual(self.held(), [])
        self.assertEqual(list(self.leaseDir.iterdir()), [])

    def test_recordOfTheLease(self) -> None:
        """checkout keeps a record of the lease, readable only by its owner, with what the
        HELLO said and the servers known; release removes it."""
        grant = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, "--user", "anna")
        (path,) = self.leaseDir.iterdir()
        self.assertEqual(path.name, f"{grant['lease']}.json")
        self.assertEqual(stat.S_IMODE(self.leaseDir.stat().st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        record = json.loads(path.read_text())
        self.assertEqual(record["lease"], grant["lease"])
        self.assertEqual((record["machine"], record["user"]), (MACHINE, "anna"))
        self.assertEqual(record["host"], core.default_host())
        self.assertEqual(record["servers"], [PRIMARY, FAILOVER], "with the failover it learnt")
        self.assertTrue(record["machine_given"])
        self.runJSON("release", "--lease", grant["lease"])
        self.assertFalse(path.exists())

    def test_noRecordNeedsEveryPart(self) -> None:
        """Without a record of the lease, heartbeat and release refuse to guess what HELLO
        says: one line names what is missing, and nothing is sent."""
        grant = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, "--user", "anna")
        registered = self.registration()
        (self.leaseDir / f"{grant['lease']}.json").unlink()
        for command in ("heartbeat", "release"):
            e = self.assertRaises(
                CommandError,
                self.command,
                command,
                "--server",
                PRIMARY,
                *IDENTITY,
                "--lease",
                grant["lease"],
            )
            self.assertEqual(
                str(e),
                f"no record of lease {grant['lease']} in {self.leaseDir}: give --host and --user"
                f" as the checkout said them (the HELLO before the {command} registers the"
                " machine as it says)",
            )
        e = self.assertRaises(CommandError, self.command, "heartbeat", "--server", PRIMARY)
        self.assertIn(
            "a heartbeat of every lease of a machine: give --product, --version, --machine,"
            " --host and --user",
            str(e),
        )
        self.assertEqual(self.registration(), registered)
        explicit = [*IDENTITY, "--host", core.default_host(), "--user", "anna"]
        self.runJSON("heartbeat", "--server", PRIMARY, *explicit)
        self.runJSON("release", "--server", PRIMARY, *explicit, "--lease", grant["lease"])
        self.assertEqual(self.registration(), registered)
        self.assertEqual(self.held(), [])

    def test_otherMachine(self) -> None:
        """A heartbeat or release for another machine than the lease's is refused before any
        HELLO, naming both machines; the other machine is not registered by it."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        for command in ("heartbeat", "release"):
            e = self.assertRaises(
                CommandError, self.command, command, "--lease", lease, "--machine", "m-other"
            )
            self.assertEqual(
                str(e),
                f"lease {lease} is not held by machine m-other:"
                f" it was checked out for machine {MACHINE}",
            )
        self.assertIsNone(self.servers.primary.pool.clientByMachine("m-other"))
        self.assertEqual(len(self.held()), 1)

    def test_recordOfAnotherMachine(self) -> None:
        """A record written on another machine (a shared home directory) under that machine's
        own id is not used to heartbeat from this one."""
        self.patch(core, "default_machine_id", lambda: "machine-a")
        argv = ["--server", PRIMARY, "--product", "XMLSpy", "--version", "2025r2"]
        lease = self.runJSON("checkout", *argv)["lease"]
        self.patch(core, "default_machine_id", lambda: "machine-b")
        e = self.assertRaises(CommandError, self.command, "heartbeat", "--lease", lease)
        self.assertIn(
            f"lease {lease} is not held by this machine (machine-b): it was checked out on"
            " machine machine-a",
            str(e),
        )
        self.assertIsNone(self.servers.primary.pool.clientByMachine("machine-b"))

    def test_optionThatDiffersFromTheCheckout(self) -> None:
        """An identity option that differs from what the checkout said is refused, and the
        registration stays as it was."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY, "--user", "anna")["lease"]
        registered = self.registration()
        e = self.assertRaises(
            CommandError, self.command, "heartbeat", "--lease", lease, "--user", "bob"
        )
        self.assertEqual(
            str(e),
            f"--user bob is not what lease {lease}'s checkout said (anna); leave it out, or"
            " the HELLO before the heartbeat would register the machine anew with it",
        )
        self.runJSON("heartbeat", "--lease", lease, "--user", "anna", *IDENTITY)
        self.assertEqual(self.registration(), registered)

    def test_expiredLeaseWithRecord(self) -> None:
        """A heartbeat of a recorded lease that the server no longer holds says it ended."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.servers.advance(TTL + 1)
        e = self.assertRaises(CommandError, self.command, "heartbeat", "--lease", lease)
        self.assertIn("404 unknown-lease", str(e))
        self.assertIn(
            f"lease {lease} is no longer held by machine {MACHINE}: it was released or it expired",
            str(e),
        )

    def test_oldRecordsPruned(self) -> None:
        """A checkout removes the records of leases that expired a while ago (a day; a
        minute here)."""
        self.patch(cli, "RECORD_KEPT_AFTER_EXPIRY", 60)
        first = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.servers.advance(TTL + 60 - 1)
        second = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.assertEqual(len(list(self.leaseDir.iterdir())), 2)
        self.servers.advance(2)
        self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)
        names = {p.name for p in self.leaseDir.iterdir()}
        self.assertNotIn(f"{first}.json", names)
        self.assertIn(f"{second}.json", names)

    def test_unusableRecords(self) -> None:
        """A lease directory that cannot be written leaves the lease held with a warning; an
        unreadable record is one line."""
        self.leaseDir.parent.mkdir(parents=True, exist_ok=True)
        self.leaseDir.write_text("a file, not a directory")
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        grant = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)
        self.assertEqual([lease.id for lease in self.held()], [grant["lease"]])
        self.assertIn(f"cannot keep a record of lease {grant['lease']}", err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.leaseDir.unlink()
        self.leaseDir.mkdir()
        (self.leaseDir / f"{grant['lease']}.json").write_text("{not json")
        e = self.assertRaises(CommandError, self.command, "heartbeat", "--lease", grant["lease"])
        self.assertIn("is not a lease record", str(e))

    def test_borrow(self) -> None:
        """borrow prints the borrowed lease and its end; it is released by its id alone."""
        borrowed = self.runJSON("borrow", "--server", PRIMARY, *IDENTITY, "--days", "3")
        self.assertEqual(borrowed["expires"], int(self.servers.clock.seconds()) + 3 * 86400)
        self.assertTrue(self.held()[0].borrowed)
        self.runJSON("release", "--lease", borrowed["id"])
        self.assertEqual(self.held(), [])

    def test_errorsAreOneLine(self) -> None:
        """A refusal becomes a CommandError with code, reason and the server's text."""
        e = self.assertRaises(
            CommandError,
            self.command,
            "checkout",
            "--server",
            PRIMARY,
            "--product",
            "MapForce",
            "--version",
            "2025r2",
        )
        self.assertIn("404 no-license", str(e))
        self.assertNotIn("\n", str(e))
        e = self.assertRaises(CommandError, self.command, "status", "--server", "not an address")
        self.assertIn("not HOST[:PORT]", str(e))

    def test_usage(self) -> None:
        """Missing required options are usage errors."""
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, buildParser().parse_args, ["client", "checkout"])
        self.assertRaises(SystemExit, buildParser().parse_args, ["client"])

    def test_heartbeatAtTheLearntFailover(self) -> None:
        """A lease checked out at the primary alone is heartbeated at its failover once the
        primary is dead: the record keeps the failover the primary named."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.servers.advance(LINK_BEAT * 2)
        self.servers.takeOver()
        renewed = self.runJSON("heartbeat", "--lease", lease, "--wait", "5")
        self.assertEqual(renewed["address"], FAILOVER)

    def test_listOfServers(self) -> None:
        """Given both servers, checkout succeeds at the failover while the primary is dead."""
        self.servers.takeOver()
        grant = self.runJSON(
            "checkout", "--server", PRIMARY, "--server", FAILOVER, *IDENTITY, "--wait", "5"
        )
        self.assertEqual(grant["server"], FAILOVER)

    def test_status(self) -> None:
        """status prints each server's STATUS, and errors for those that do not answer."""
        answers = self.runJSON("status", "--server", PRIMARY, "--server", FAILOVER)
        self.assertEqual(answers[PRIMARY]["role"], "primary")
        self.assertEqual(answers[FAILOVER]["state"], "standby")
        self.servers.killPrimary()
        text = self.command("status", "--server", PRIMARY, "--server", FAILOVER)
        self.assertIn(f"{PRIMARY}:\n  error:", text)
        self.assertIn("  role: failover", text)
        self.servers.failover.stopService()
        self.servers.failoverEndpoint.kill()
        e = self.assertRaises(CommandError, self.command, "status", "--server", PRIMARY)
        self.assertIn("no server answered", str(e))
