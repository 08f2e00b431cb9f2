"""The `licenseserver` tool and `twistd licenseserver` start-up against real processes."""

import subprocess
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import (
    REPO_ROOT,
    TWISTD,
    api_get,
    child_env,
    issue_license,
    local_endpoint,
    make_vendor_key,
    run_cli_result,
    start_server,
)


class ToolTests(unittest.TestCase):
    def setUp(self):
        self.base = Path(self.mktemp()).resolve()
        self.data = self.base / "data"
        self.key = make_vendor_key(self.base / "vendor", self.data)
        self.server = start_server(self, self.data)
        self.passwordFile = self.data / "initial-admin-password"

    def assertOneLineFailure(self, result, words):
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn(words, result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_uploadAndStatus(self):
        """`license upload` adds a file's licenses; `status` prints the server's STATUS."""
        lic = issue_license(self.key, self.base / "a.lic", "XMLSpy", "concurrent", 5)
        result = run_cli_result(
            "license",
            "upload",
            str(lic),
            "--server",
            self.server.web_url,
            "--password-file",
            str(self.passwordFile),
        )
        self.assertEqual(result.returncode, 0, result)
        (listed,) = api_get(self.server, "/api/licenses")
        self.assertIn(f"added {listed['id']}", result.stdout)
        result = run_cli_result("status", "--server", f"127.0.0.1:{self.server.licensing_port}")
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("role: primary", result.stdout)
        self.assertIn("state: active", result.stdout)

    def test_uploadRefusals(self):
        """A tampered file or a wrong password ends `license upload` with one line."""
        lic = issue_license(self.key, self.base / "a.lic", "XMLSpy", "concurrent", 5)
        tampered = self.base / "t.lic"
        tampered.write_bytes(lic.read_bytes().replace(b'"seats": 5', b'"seats": 50'))
        common = ["--server", self.server.web_url, "--password-file"]
        result = run_cli_result(
            "license", "upload", str(tampered), *common, str(self.passwordFile)
        )
        self.assertOneLineFailure(result, "tamper")
        wrong = self.base / "wrong"
        wrong.write_text("not the password\n")
        result = run_cli_result("license", "upload", str(lic), *common, str(wrong))
        self.assertOneLineFailure(result, "401")
        self.assertEqual(api_get(self.server, "/api/licenses"), [])

    def test_statusUnreachable(self):
        """`status` of a server that is not there fails with one line."""
        result = run_cli_result("status", "--server", "127.0.0.1:1")
        self.assertOneLineFailure(result, "cannot reach")

    def test_passwd(self):
        """`passwd` sets a new admin password that the running server accepts at once."""
        new = self.base / "new-password"
        new.write_text("a much better password\n")
        result = run_cli_result("passwd", "--data", str(self.data), "--password-file", str(new))
        self.assertEqual(result.returncode, 0, result)
        self.assertFalse(self.passwordFile.exists())
        self.server._password = "a much better password"
        self.assertEqual(api_get(self.server, "/api/licenses"), [])

    def test_busyPort(self):
        """A second server on a port that is taken exits 1 with one line, no traceback."""
        command = [
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            "licenseserver",
            "--data",
            str(self.base / "other"),
            "--port",
            local_endpoint(self.server.licensing_port),
            "--web",
            "tcp:0:interface=127.0.0.1",
        ]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertIn("cannot listen on", result.stderr)


class TwistRunnerTests(unittest.TestCase):
    def test_pythonMTwisted(self):
        """`python -m twisted licenseserver` runs a server as twistd does."""
        import socket
        import sys

        from tests.integration.harness import wait_for

        data = Path(self.mktemp()).resolve()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "licenseserver",
                "--data",
                str(data),
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--web",
                "tcp:0:interface=127.0.0.1",
            ],
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(process.wait, 30)
        self.addCleanup(process.terminate)
        portFile = data / "licensing.port"
        wait_for(lambda: portFile.exists() and portFile.read_text().strip(), 20, "the port file")
        with socket.create_connection(("127.0.0.1", int(portFile.read_text()))) as conn:
            conn.sendall(b"PING\n")
            self.assertEqual(conn.makefile("rb").readline(), b"OK\n")


class DualStackTests(unittest.TestCase):
    def test_ipv4AndIPv6(self):
        """With a plain tcp:PORT, clients reach the licensing port over IPv4 and IPv6."""
        import socket

        data = Path(self.mktemp()).resolve()
        server = start_server(self, data, licensing_endpoint="tcp:0")
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            if family == socket.AF_INET6 and not socket.has_ipv6:
                continue
            with socket.create_connection((address, server.licensing_port), timeout=10) as conn:
                conn.sendall(b"PING\n")
                self.assertEqual(conn.makefile("rb").readline(), b"OK\n", address)
