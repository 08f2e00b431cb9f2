"""The `licenseserver` tool and `twistd licenseserver` start-up against real processes."""

import subprocess
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import (
    REPO_ROOT,
    TWISTD,
    api_get,
    child_env,
    http_request,
    issue_license,
    local_endpoint,
    make_vendor_key,
    run_cli_result,
    start_server,
    wait_for,
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

    def assertUploads(self, server):
        """A license file uploads with ``--server server`` and the admin password."""
        lic = issue_license(self.key, self.base / "a.lic", "XMLSpy", "concurrent", 5)
        password = ["--password-file", str(self.passwordFile)]
        result = run_cli_result("license", "upload", str(lic), "--server", server, *password)
        self.assertEqual(result.returncode, 0, result)
        (listed,) = api_get(self.server, "/api/licenses")
        self.assertIn(f"added {listed['id']}", result.stdout)

    def test_uploadAndStatus(self):
        """`license upload` adds a file's licenses; `status` prints the server's STATUS."""
        self.assertUploads(self.server.web_url)
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
        self.assertOneLineFailure(result, "401 wrong password")
        # The wrong password makes this address wait a second before the next try.
        wait_for(
            lambda: http_request(self.server, "GET", "/api/licenses").status != 429,
            10,
            "the wait after a wrong password to pass",
        )
        self.assertEqual(api_get(self.server, "/api/licenses"), [])

    def test_uploadServerAsHostPort(self):
        """`license upload --server HOST:PORT` means http://HOST:PORT."""
        self.assertUploads(f"127.0.0.1:{self.server.web_port}")

    def test_uploadAnswerNotFromTheAPI(self):
        """An --server whose answer is not the admin API's JSON ends the upload with one line.

        A web page's address (its redirect to the login page is not followed), a
        path where no page is, and the licensing port, which does not speak HTTP.
        """
        lic = issue_license(self.key, self.base / "a.lic", "XMLSpy", "concurrent", 5)
        password = ["--password-file", str(self.passwordFile)]
        for server, words in [
            (self.server.web_url + "/login", "HTTP 303"),
            (self.server.web_url + "/nowhere", "HTTP 404"),
        ]:
            result = run_cli_result("license", "upload", str(lic), "--server", server, *password)
            self.assertOneLineFailure(result, words)
            self.assertIn("not the admin API's JSON", result.stderr)
        licensing = f"http://127.0.0.1:{self.server.licensing_port}"
        result = run_cli_result("license", "upload", str(lic), "--server", licensing, *password)
        self.assertOneLineFailure(result, licensing)
        self.assertEqual(api_get(self.server, "/api/licenses"), [])

    def test_statusUnreadableCA(self):
        """`status --ca` with a missing file names the file, not an unreachable server."""
        missing = self.base / "missing-ca.pem"
        server = f"127.0.0.1:{self.server.licensing_port}"
        result = run_cli_result("status", "--server", server, "--ca", str(missing))
        self.assertOneLineFailure(result, f"cannot read {missing}")

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
        self.assertEqual(result.stderr.count("cannot listen on"), 1, result.stderr)


class BadInputTests(unittest.TestCase):
    """The tool's answer to bad command-line input: one line on stderr, exit status 1.

    None of these needs a server: each fails before anything is sent, or on a
    port where nothing listens.
    """

    def setUp(self):
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        self.passwordFile = self.base / "password"
        self.passwordFile.write_text("a password\n")
        self.license = self.base / "a.lic"
        self.license.write_text("{}\n")

    def assertOneLineFailure(self, result, *words):
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("licenseserver: "), result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        for word in words:
            self.assertIn(word, result.stderr)

    def upload(self, server: str):
        return run_cli_result(
            "license",
            "upload",
            str(self.license),
            "--server",
            server,
            "--password-file",
            str(self.passwordFile),
        )

    def test_uploadBadServer(self):
        """An --server that is neither an http(s) URL nor HOST[:PORT] is named as such."""
        for server, words in [
            ("http://[::1", "not a valid URL"),
            ("http://127.0.0.1:x/", "not a valid URL"),
            ("http://127.0.0.1:99999/", "not a valid URL"),
            ("http://ex ample/", "holds a space"),
            ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
            ("http:///licenses", "names no host"),
            ("http://admin:pw@127.0.0.1/", "--password-file"),
            ("no_host!", "neither an http(s) URL nor HOST[:PORT]"),
            ("a..b", "'a..b' is not a host name"),
        ]:
            self.assertOneLineFailure(self.upload(server), repr(server), words)

    def test_uploadServerHostWithoutScheme(self):
        """A bare HOST[:PORT] is an http:// URL, on port 8088 when it names none."""
        from licenseserver import cli

        self.assertEqual(cli.admin_url("foo"), "http://foo:8088")
        self.assertEqual(cli.admin_url("localhost:9000"), "http://localhost:9000")
        self.assertEqual(cli.admin_url("[::1]:9000"), "http://[::1]:9000")
        self.assertEqual(cli.admin_url("https://ls1:8443/"), "https://ls1:8443")
        self.assertOneLineFailure(self.upload("a..b"), "http://a..b:8088")
        result = self.upload("localhost:1")
        self.assertOneLineFailure(result, "cannot reach http://localhost:1")
        self.assertNotIn("unknown url type", result.stderr)

    def test_passwordFileNotText(self):
        """A password file that is not UTF-8 text is named in one line."""
        self.passwordFile.write_bytes(b"\xff\xfe")
        self.assertOneLineFailure(self.upload("localhost:1"), "not UTF-8 text")
        data = self.base / "data"
        data.mkdir()
        result = run_cli_result(
            "passwd", "--data", str(data), "--password-file", str(self.passwordFile)
        )
        self.assertOneLineFailure(result, "not UTF-8 text")

    def test_statusBadHost(self):
        """`status` of a host name that cannot be one fails with one line."""
        self.assertOneLineFailure(
            run_cli_result("status", "--server", "a..b"), "'a..b' is not a host name"
        )

    def test_keygenPrefixIsDirectory(self):
        """`vendor keygen --out DIR/` refuses, rather than write DIR/.key and DIR/.pub."""
        result = run_cli_result("vendor", "keygen", "--out", f"{self.base}/")
        self.assertOneLineFailure(result, "names a directory")
        self.assertEqual(sorted(p.name for p in self.base.iterdir()), ["a.lic", "password"])


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

    def test_busyPort(self):
        """Under `python -m twisted`, a port that is taken ends the server with exit status 1
        and one line on stderr: the reason, once, and no traceback."""
        import socket
        import sys

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "twisted",
                    "licenseserver",
                    "--data",
                    str(Path(self.mktemp()).resolve()),
                    "--port",
                    local_endpoint(port),
                    "--web",
                    "tcp:0:interface=127.0.0.1",
                ],
                cwd=REPO_ROOT,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
        self.assertEqual(result.returncode, 1, result)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(
            lines[0].startswith(f"licenseserver: cannot listen on {local_endpoint(port)}: "),
            lines,
        )


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
