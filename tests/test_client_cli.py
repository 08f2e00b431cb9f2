"""Tests for licenseserver.client.cli: ``licenseserver client ...`` against in-memory servers."""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys

from twisted.trial import unittest

from licenseserver.cli import CommandError
from licenseserver.client import cli
from licenseserver.client.blocking import Client
from tests.test_client import FAILOVER, MACHINE, PRIMARY, TTL, FakeServers
from tests.test_client_blocking import InlineRunner

IDENTITY = ["--product", "XMLSpy", "--version", "2025r2", "--machine", MACHINE]


def buildParser() -> argparse.ArgumentParser:
    """A parser with the ``client`` command, as the tool's parser has it."""
    parser = argparse.ArgumentParser(prog="licenseserver")
    register = parser.add_subparsers(dest="command", required=True)
    cli.register(register)
    return parser


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

    def test_heartbeatAndRelease(self) -> None:
        """A lease checked out by one command is heartbeated and released by the next."""
        lease = self.runJSON("checkout", "--server", PRIMARY, *IDENTITY)["lease"]
        self.servers.advance(30)
        renewed = self.runJSON("heartbeat", "--server", PRIMARY, *IDENTITY, "--lease", lease)
        self.assertEqual(int(renewed["expires"]), int(self.servers.clock.seconds()) + TTL)
        self.assertEqual(self.held()[0].expires, int(renewed["expires"]))
        released = self.runJSON("release", "--server", PRIMARY, *IDENTITY, "--lease", lease)
        self.assertEqual(released, {"released": lease, "server": PRIMARY})
        self.assertEqual(self.held(), [])
        e = self.assertRaises(
            CommandError, self.command, "release", "--server", PRIMARY, *IDENTITY, "--lease", lease
        )
        self.assertIn("404 unknown-lease", str(e))

    def test_borrow(self) -> None:
        """borrow prints the borrowed lease and its end."""
        borrowed = self.runJSON("borrow", "--server", PRIMARY, *IDENTITY, "--days", "3")
        self.assertEqual(borrowed["expires"], int(self.servers.clock.seconds()) + 3 * 86400)
        self.assertTrue(self.held()[0].borrowed)

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
