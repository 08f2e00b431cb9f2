"""twistd's pid file goes in the data directory, so two servers can share a working directory."""

from __future__ import annotations

from pathlib import Path

from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial import unittest

from tests.integration.harness import ServerProcess, wait_for


class PidFileOptionTests(unittest.TestCase):
    def parse(self, *argv: str) -> ServerOptions:
        config = ServerOptions()
        config.parseOptions(list(argv))
        return config

    def test_defaultInDataDirectory(self):
        """Without --pidfile, twistd's pid file is DATA/twistd.pid."""
        data = Path(self.mktemp()).resolve()
        config = self.parse("--nodaemon", "licenseserver", "--data", str(data))
        self.assertEqual(config["pidfile"], str(data / "twistd.pid"))

    def test_givenPidFileKept(self):
        """A --pidfile given on the command line, or none (--pidfile=), is kept."""
        data = Path(self.mktemp()).resolve()
        config = self.parse("--pidfile=/run/ls.pid", "licenseserver", "--data", str(data))
        self.assertEqual(config["pidfile"], "/run/ls.pid")
        config = self.parse("--pidfile=", "licenseserver", "--data", str(data))
        self.assertEqual(config["pidfile"], "")


class WithoutPidFileOption(ServerProcess):
    """A server started as docs/failover.md shows it: ``twistd -n`` without --pidfile."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--pidfile="]


class TwoServersTests(unittest.TestCase):
    def test_twoServersInOneDirectory(self):
        """A primary and a failover started with twistd -n from the same working
        directory both run; each pid file is in its data directory and holds its pid."""
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        servers = []
        for name in ("ls1", "ls2"):
            server = WithoutPidFileOption(base / name, "--name", name, cwd=base)
            self.addCleanup(server.stop)
            server.start()
            servers.append(server)
        self.assertFalse((base / "twistd.pid").exists())
        for server in servers:
            self.assertTrue(server.running, server.log_tail())
            pidfile = server.data_dir / "twistd.pid"
            wait_for(pidfile.exists, 10, f"{pidfile} to be written")
            self.assertEqual(int(pidfile.read_text()), server.process.pid)
        servers[0].stop()
        self.assertFalse((servers[0].data_dir / "twistd.pid").exists())
        self.assertTrue(servers[1].running)
