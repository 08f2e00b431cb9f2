"""Tests for licenseserver.tap: the options of twistd licenseserver and the service tree."""

import io
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from licenseserver import certs, localstate, signing, tap, upgrade
from licenseserver._version import __version__
from licenseserver.heap import FreezeWhenLoaded
from licenseserver.listening import ListeningService
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.store import SQLiteStore
from licenseserver.switch import RoleSwitch
from tests.integration.harness import CLI_TIMEOUT, TWISTD, child_env


class OptionsTests(unittest.TestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def assertExits(self, argv, words):
        """Parsing ``argv`` ends with one line naming ``words``."""
        with self.assertRaises(SystemExit) as caught:
            self.parse(*argv)
        message = str(caught.exception.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertTrue(message.startswith("twistd licenseserver: "))
        self.assertIn(words, message)

    def test_defaults(self):
        """The defaults are those of INTERFACES.md."""
        options = self.parse()
        self.assertIsNone(options["role"])
        self.assertEqual(options["port"], "tcp:35355")
        self.assertEqual(options["web"], "tcp:8088")
        self.assertEqual(options["data"], "./licenseserver-data")
        self.assertEqual(options["heartbeat"], 1.0)
        self.assertEqual(options["takeover-after"], 5.0)
        self.assertEqual(options["lease-ttl"], 120)
        self.assertEqual(options["name"], socket.gethostname())
        self.assertEqual(options["vendor-key"], [])
        self.assertEqual(options["commit-delay"], 0.01)
        self.assertEqual(options["commit-gather"], 0.0005)

    def test_wrongValues(self):
        """Each wrong value ends the parse with a one-line reason."""
        cases = [
            (["--role", "backup"], "--role"),
            (["--role", "failover"], "--primary"),
            (["--primary", "ls1"], "only for --role=failover"),
            (["--role", "failover", "--primary", "bad host!"], "--primary"),
            (["--port", "carrier-pigeon:3"], "--port"),
            (["--web", "tcp:notaport"], "--web"),
            (["--heartbeat", "fast"], "--heartbeat"),
            (["--heartbeat", "0"], "--heartbeat"),
            (["--takeover-after", "1", "--heartbeat", "2"], "--takeover-after"),
            (["--lease-ttl", "1"], "--lease-ttl"),
            (["--lease-ttl", "2.5"], "--lease-ttl"),
            (["--advertise", "a b"], "--advertise"),
            (["--name", ""], "--name"),
            (["--vendor-key", "/nonexistent.pub"], "--vendor-key"),
            (["--commit-delay", "2"], "--commit-delay"),
            (["--commit-gather", "0.5"], "--commit-gather"),
            (["--commit-gather", "-1"], "--commit-gather"),
        ]
        for argv, words in cases:
            self.assertExits(argv, words)

    def test_idleTimeoutNamesBothValues(self):
        """An idle timeout within a client's heartbeat interval names both values, the
        interval's arithmetic, and a value of each option that would do."""
        self.assertExits(
            ["--lease-ttl", "3600"],
            "--idle-timeout (600 s) must be longer than a client's heartbeat interval"
            " (--lease-ttl 3600 / 4 = 900 s): raise --idle-timeout above 900"
            " or lower --lease-ttl to 2399 or less",
        )
        self.assertExits(
            ["--idle-timeout", "20"],
            "--idle-timeout (20 s) must be longer than a client's heartbeat interval"
            " (--lease-ttl 120 / 4 = 30 s): raise --idle-timeout above 30"
            " or lower --lease-ttl to 79 or less",
        )
        self.parse("--lease-ttl", "2399")
        self.parse("--lease-ttl", "3600", "--idle-timeout", "901")
        self.parse("--lease-ttl", "3600", "--idle-timeout", "0")

    def test_idleTimeoutNoLeaseTTLWouldDo(self):
        """When no lease lifetime is short enough, only raising --idle-timeout is offered."""
        self.assertExits(["--idle-timeout", "0.5"], "raise --idle-timeout above 30")
        with self.assertRaises(SystemExit) as caught:
            self.parse("--idle-timeout", "0.5")
        self.assertNotIn("lower --lease-ttl", str(caught.exception.code))

    def test_barePortSuggestsEndpoint(self):
        """A port number, or HOST:PORT, where an endpoint is due is answered with the
        endpoint string to write."""
        self.assertExits(["--port", "45357"], "; for TCP port 45357 write --port=tcp:45357")
        self.assertExits(["--web", "8080"], "write --web=tcp:8080")
        self.assertExits(
            ["--web", "127.0.0.1:8080"],
            "for TCP port 8080 on 127.0.0.1 write --web=tcp:8080:interface=127.0.0.1",
        )
        with self.assertRaises(SystemExit) as caught:
            self.parse("--port", "carrier-pigeon:3")
        self.assertNotIn("write --port", str(caught.exception.code))

    def unparsable(self, *argv):
        """Parse ``argv`` that does not parse: (exit status, stderr lines)."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            self.parse(*argv)
        return caught.exception.code, err.getvalue().splitlines()

    def test_misspeltOption(self):
        """A misspelt option ends the parse with exit status 1, a first line that names
        the option meant, and then the usage text."""
        status, lines = self.unparsable("--takover-after", "3")
        self.assertEqual(status, 1)
        self.assertEqual(
            lines[0],
            "twistd licenseserver: unknown option --takover-after; did you mean --takeover-after?",
        )
        self.assertIn("Options:", lines)
        self.assertTrue(any(line.lstrip().startswith("--takeover-after=") for line in lines))
        status, lines = self.unparsable("--lease_ttl=300")
        self.assertEqual(
            lines[0], "twistd licenseserver: unknown option --lease_ttl; did you mean --lease-ttl?"
        )

    def test_unknownOptionWithoutMatch(self):
        """An option like none of ours, or one without its value, is named without a guess."""
        status, lines = self.unparsable("--frobnicate")
        self.assertEqual(
            (status, lines[0]), (1, "twistd licenseserver: unknown option --frobnicate")
        )
        status, lines = self.unparsable("--data")
        self.assertEqual(
            (status, lines[0]), (1, "twistd licenseserver: option --data requires argument")
        )
        self.assertIn("Options:", lines)

    def test_failoverOptions(self):
        """A failover takes HOST[:PORT] or a client endpoint string for its primary."""
        options = self.parse("--role", "failover", "--primary", "ls1.example.com")
        self.assertEqual(options["primary"], "ls1.example.com")
        self.parse("--role", "failover", "--primary", "[::1]:35356")
        self.parse("--role", "failover", "--primary", "tcp:host=ls1:port=35355")

    def test_vendorKeys(self):
        """--vendor-key may repeat; each key is loaded and trusted."""
        keys = []
        for _ in range(2):
            _, public = signing.generate_keypair(self.mktemp())
            keys += ["--vendor-key", str(public)]
        options = self.parse(*keys)
        self.assertEqual(len(options["trusted-keys"]), 2)


class TwistdTests(unittest.TestCase):
    """``twistd licenseserver`` in a process of its own, with options it refuses."""

    def twistd(self, *argv):
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        command = [str(TWISTD), "--nodaemon", "--pidfile=", "licenseserver", *argv]
        result = subprocess.run(
            command,
            cwd=directory,
            env={**child_env(), "COLUMNS": "100"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(list(directory.iterdir()), [], "nothing is written on a refusal")
        return result

    def test_misspeltOption(self):
        """A misspelt option: exit status 1, the option meant on stderr's first line, then
        twistd's usage text of the server's options; nothing else."""
        result = self.twistd("--takover-after", "3")
        self.assertEqual(result.returncode, 1, result)
        lines = result.stderr.splitlines()
        self.assertEqual(
            lines[0],
            "twistd licenseserver: unknown option --takover-after; did you mean --takeover-after?",
        )
        self.assertTrue(lines[1].startswith("Usage: twistd [options] licenseserver"), lines[1])
        self.assertIn("--takeover-after=", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_wrongValue(self):
        """A wrong value: exit status 1 and one line on stderr."""
        result = self.twistd("--lease-ttl", "3600")
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn("raise --idle-timeout above 900", result.stderr)


class MakeServiceTests(unittest.TestCase):
    def test_tree(self):
        """makeService builds store, role, heap, licensing and web services, and the data dir."""
        data = Path(self.mktemp())
        options = tap.Options()
        options.parseOptions(["--data", str(data), "--port", "tcp:0", "--web", "tcp:0"])
        top = tap.makeService(options, MemoryReactorClock())
        self.addCleanup(os.close, top.dataLock)
        children = list(IService(top))
        self.assertIsInstance(children[0], SQLiteStore)
        self.assertIsInstance(children[1], RoleSwitch)
        self.assertIsInstance(children[1].current, PrimaryRole)
        self.assertIsInstance(children[2], FreezeWhenLoaded)
        self.assertIs(children[2].role, children[1])
        self.assertIsInstance(children[3], ListeningService)
        self.assertIsInstance(children[4], ListeningService)
        self.assertEqual(stat.S_IMODE((data / "initial-admin-password").stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE((data / "peer-secret").stat().st_mode), 0o600)
        self.assertTrue((data / "vendor-keys").is_dir())

    def test_secondStartKeepsPassword(self):
        """A second start makes no new admin password or peer secret."""
        data = Path(self.mktemp())
        options = tap.Options()
        options.parseOptions(["--data", str(data)])
        os.close(tap.makeService(options, MemoryReactorClock()).dataLock)
        first = (data / "admin-password").read_bytes(), (data / "peer-secret").read_bytes()
        os.close(tap.makeService(options, MemoryReactorClock()).dataLock)
        second = (data / "admin-password").read_bytes(), (data / "peer-secret").read_bytes()
        self.assertEqual(first, second)

    def test_oneServerPerDirectory(self):
        """While one server holds a data directory, a second one ends with one line."""
        data = Path(self.mktemp())
        options = tap.Options()
        options.parseOptions(["--data", str(data)])
        held = tap.makeService(options, MemoryReactorClock()).dataLock
        self.addCleanup(os.close, held)
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, MemoryReactorClock())
        self.assertIn("a server is running on", str(caught.exception.code))

    def test_roleRecorded(self):
        """The role and primary are recorded; a start without --role keeps the last one."""
        data = Path(self.mktemp())

        def start(*argv):
            options = tap.Options()
            options.parseOptions(["--data", str(data), *argv])
            top = tap.makeService(options, MemoryReactorClock())
            os.close(top.dataLock)
            return list(IService(top))[1].current

        self.assertIsInstance(start(), PrimaryRole)
        role = start("--role", "failover", "--primary", "ls1.example.com:35355")
        self.assertIsInstance(role, FailoverRole)
        again = start()
        self.assertIsInstance(again, FailoverRole)
        self.assertEqual(again.primaryAddress(), "ls1.example.com:35355")
        local = upgrade.prepare_for_start(data, __version__)
        self.assertEqual(local[localstate.ROLE], "failover")
        self.assertEqual(local[localstate.PRIMARY], "ls1.example.com:35355")
        self.assertIsInstance(start("--role", "primary"), PrimaryRole)
        self.assertIsInstance(start(), PrimaryRole)
        role = start("--role", "failover", "--primary", "tcp:host=ls1.example.com:port=35356")
        self.assertEqual(role.primaryAddress(), "ls1.example.com:35356")
        self.assertEqual(role.primaryConfigured(), "tcp:host=ls1.example.com:port=35356")
        local = upgrade.prepare_for_start(data, __version__)
        self.assertIsNone(local.get(localstate.PRIMARY_CA))
        ca, _ = certs.write_ca(Path(self.mktemp()), "test CA")
        relative = os.path.relpath(ca)
        start("--role", "failover", "--primary", "ls1.example.com", "--primary-ca", relative)
        local = upgrade.prepare_for_start(data, __version__)
        self.assertEqual(local[localstate.PRIMARY_CA], str(ca.resolve()))

    def test_badVendorKeyFile(self):
        """A vendor key file that is no key ends the start with one line naming it."""
        data = Path(self.mktemp())
        (data / "vendor-keys").mkdir(parents=True)
        (data / "vendor-keys" / "acme.pub").write_text("not a key")
        options = tap.Options()
        options.parseOptions(["--data", str(data)])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, MemoryReactorClock())
        message = str(caught.exception.code)
        self.assertIn("acme.pub", message)
        self.assertEqual(message.count("\n"), 0)

    def test_unusableDataDirectory(self):
        """A data directory that cannot be made ends the start with one line."""
        blocker = Path(self.mktemp())
        blocker.write_text("a file, not a directory")
        options = tap.Options()
        options.parseOptions(["--data", str(blocker / "data")])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, MemoryReactorClock())
        self.assertIn("data directory", str(caught.exception.code))

    def test_missingPeerSecretFile(self):
        """A --peer-secret-file that is not there ends the start with one line naming it."""
        data = Path(self.mktemp())
        missing = Path(self.mktemp()) / "secret"
        options = tap.Options()
        options.parseOptions(["--data", str(data), "--peer-secret-file", str(missing)])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, MemoryReactorClock())
        message = str(caught.exception.code)
        self.assertIn(f"peer secret file {missing}", message)
        self.assertNotIn("data directory", message)
        self.assertEqual(message.count("\n"), 0)


class AdvertiseTests(unittest.TestCase):
    def test_defaultAdvertise(self):
        """Clients are told the listening interface when --port names one, else the host name."""
        self.assertEqual(
            tap._default_advertise({"port": "tcp:35356:interface=10.0.0.5"}), "10.0.0.5:35356"
        )
        host = socket.gethostname()
        self.assertEqual(tap._default_advertise({"port": "tcp:35355"}), f"{host}:35355")
        self.assertEqual(tap._default_advertise({"port": "ssl:35357"}), f"{host}:35357")
        self.assertEqual(
            tap._default_advertise({"port": "tcp:35355:interface=0.0.0.0"}), f"{host}:35355"
        )
        self.assertEqual(
            tap._default_advertise({"port": "tcp:port=35358:interface=fd00\\:\\:5"}),
            "[fd00::5]:35358",
        )
        self.assertEqual(tap._default_advertise({"port": "tcp:0"}), f"{host}:35355")

    def test_hostNameNotFqdn(self):
        """The default is the host name even where the "fully qualified" name is localhost."""
        self.patch(socket, "getfqdn", lambda *a: "localhost")
        self.patch(socket, "gethostname", lambda: "ls1")
        self.assertEqual(tap._default_advertise({"port": "tcp:35355"}), "ls1:35355")


class EndpointTests(unittest.TestCase):
    def test_plainTcpIsDualStack(self):
        """A plain tcp:PORT listens on IPv6 and IPv4 where the host has IPv6."""
        from twisted.internet import endpoints

        from licenseserver import listening

        endpoint = listening.serverEndpoint(MemoryReactorClock(), "tcp:35355")
        if listening._dual_stack():
            self.assertIsInstance(endpoint, endpoints.TCP6ServerEndpoint)
            self.assertEqual(endpoint._interface, "::")
        else:
            self.assertIsInstance(endpoint, endpoints.TCP4ServerEndpoint)
        named = listening.serverEndpoint(MemoryReactorClock(), "tcp:35355:interface=10.0.0.5")
        self.assertIsInstance(named, endpoints.TCP4ServerEndpoint)

    def test_backlog(self):
        """A TCP port that names no backlog gets LISTEN_BACKLOG, not Twisted's 50 (a
        reconnecting crowd must not have its handshakes dropped); one named is kept, and
        other kinds of endpoint are left as Twisted makes them."""
        from twisted.internet.protocol import Factory

        from licenseserver import listening

        expected = {
            "tcp:35355": listening.LISTEN_BACKLOG,
            "tcp:35355:interface=10.0.0.5": listening.LISTEN_BACKLOG,
            "tcp:35355:10.0.0.5": listening.LISTEN_BACKLOG,
            "tcp6:35355": listening.LISTEN_BACKLOG,
            "tcp:35355:10.0.0.5:7": 7,
            "tcp:35355:backlog=9": 9,
        }
        for text, backlog in expected.items():
            memory = MemoryReactorClock()
            self.successResultOf(listening.serverEndpoint(memory, text).listen(Factory()))
            [(port, _, listened, _)] = memory.tcpServers
            self.assertEqual((port, listened), (35355, backlog), text)
        self.assertGreater(listening.LISTEN_BACKLOG, 1000)
        memory = MemoryReactorClock()
        socketPath = self.mktemp()
        self.successResultOf(
            listening.serverEndpoint(memory, f"unix:{socketPath}").listen(Factory())
        )
        self.assertEqual(memory.unixServers[0][2], 50)

    def test_mappedAddressesShownAsIPv4(self):
        """IPv4 clients of a dual-stack socket are shown by their IPv4 address."""
        from twisted.internet.address import IPv4Address, IPv6Address

        from licenseserver.listening import addressText

        self.assertEqual(addressText(IPv6Address("TCP", "::ffff:10.0.0.7", 1)), "10.0.0.7")
        self.assertEqual(addressText(IPv6Address("TCP", "::1", 1)), "::1")
        self.assertEqual(addressText(IPv4Address("TCP", "10.0.0.8", 1)), "10.0.0.8")
