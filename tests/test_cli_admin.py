"""Tests for the tool's admin commands: ``license ...`` against a fake admin API, and
``audit show`` on a database written by the store.

The fake admin API is a small HTTP server on 127.0.0.1 in a thread of the test
process: it records each request and answers what the test told it to.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from licenseserver import cli
from licenseserver.audit import AuditEntry
from licenseserver.store import SQLiteStore

LICENSES = [
    {
        "id": "L-2025-0001",
        "product": "XMLSpy",
        "edition": "Enterprise",
        "kind": "concurrent",
        "seats": 5,
        "in_use": 2,
        "status": "active",
        "expires": "2027-01-31",
    },
    {
        "id": "L-2025-0002",
        "product": "Solver Pro",
        "edition": "",
        "kind": "core",
        "seats": 2,
        "in_use": 0,
        "status": "inactive",
        "expires": None,
    },
]


class FakeAdminAPI:
    """An HTTP server that answers each request from ``answers`` and records it.

    ``answers`` maps ``(method, path)`` to ``(status, body)``; a body that is
    not bytes is sent as JSON. Anything else gets ``404 {"error": "no such thing"}``.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "body": self.rfile.read(length),
                    }
                )
                status, body = fake.answers.get(
                    (self.command, self.path), (404, {"error": "no such thing"})
                )
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def passwords(self) -> list[str]:
        """The admin passwords the requests carried, in order."""
        out = []
        for request in self.requests:
            _, _, token = request["authorization"].partition(" ")
            out.append(base64.b64decode(token).decode().partition(":")[2])
        return out


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ToolTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.passwordFile = self.directory / "password"
        self.passwordFile.write_text("file password\n")
        # The tests set what they need; nothing from the shell that runs them counts.
        cleared = environment(
            LICENSESERVER_URL=None, LICENSESERVER_PASSWORD_FILE=None, LICENSESERVER_PASSWORD=None
        )
        cleared.__enter__()
        self.addCleanup(cleared.__exit__, None, None, None)
        self.patch(sys, "stdin", io.StringIO())

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        """Run the tool with ``argv``; return status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        try:
            status = cli.main(list(argv))
        finally:
            self.patch(sys, "stdout", sys.__stdout__)
            self.patch(sys, "stderr", sys.__stderr__)
        return status, out.getvalue(), err.getvalue()

    def assertOneLineError(self, result: tuple[int, str, str], *parts: str, status: int = 1):
        code, out, err = result
        self.assertEqual((code, out), (status, ""), err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertNotIn("Traceback", err)
        for part in parts:
            self.assertIn(part, err)
        return err


class AdminAPICommandTests(ToolTestCase):
    """``license list | activate | deactivate | delete | upload`` through the admin API."""

    def setUp(self) -> None:
        super().setUp()
        self.api = FakeAdminAPI()
        self.addCleanup(self.api.stop)
        self.api.answers[("GET", "/api/licenses")] = (200, LICENSES)

    def test_serverFromEnvironment(self) -> None:
        """Without --server, $LICENSESERVER_URL names the server; --server wins over it."""
        with environment(LICENSESERVER_URL=self.api.url):
            status, out, err = self.run_cli(
                "license", "list", "--password-file", str(self.passwordFile)
            )
            self.assertEqual((status, err), (0, ""))
            self.assertEqual(len(self.api.requests), 1)
        with environment(LICENSESERVER_URL="http://127.0.0.1:1"):
            result = self.run_cli(
                "license",
                "list",
                "--server",
                self.api.url,
                "--password-file",
                str(self.passwordFile),
            )
            self.assertEqual(result[0], 0, result)
        self.assertEqual(len(self.api.requests), 2)

    def test_badServerFromEnvironmentIsNamed(self) -> None:
        """A $LICENSESERVER_URL that is no web address is named as the variable, before any
        password is asked for."""
        with environment(LICENSESERVER_URL="ftp://ls1/"):
            self.assertOneLineError(
                self.run_cli("license", "list"),
                "$LICENSESERVER_URL 'ftp://ls1/' is not an http:// or https:// URL",
            )

    def test_passwordSources(self) -> None:
        """--password-file, else $LICENSESERVER_PASSWORD_FILE, else $LICENSESERVER_PASSWORD."""
        other = self.directory / "other"
        other.write_text("other password\n")
        common = ("license", "list", "--server", self.api.url)
        with environment(
            LICENSESERVER_PASSWORD_FILE=str(other), LICENSESERVER_PASSWORD="variable password"
        ):
            self.assertEqual(
                self.run_cli(*common, "--password-file", str(self.passwordFile))[0], 0
            )
            self.assertEqual(self.run_cli(*common)[0], 0)
        with environment(LICENSESERVER_PASSWORD="variable password"):
            self.assertEqual(self.run_cli(*common)[0], 0)
        self.assertEqual(
            self.api.passwords(), ["file password", "other password", "variable password"]
        )

    def test_passwordFileFromEnvironmentUnreadable(self) -> None:
        """A $LICENSESERVER_PASSWORD_FILE that cannot be read is named with the variable."""
        missing = self.directory / "missing"
        with environment(LICENSESERVER_PASSWORD_FILE=str(missing)):
            self.assertOneLineError(
                self.run_cli("license", "list", "--server", self.api.url),
                f"$LICENSESERVER_PASSWORD_FILE: cannot read {missing}",
            )
        self.assertEqual(self.api.requests, [])

    def test_noPassword(self) -> None:
        """With no password anywhere and no terminal, the line names every way to give one."""
        self.assertOneLineError(
            self.run_cli("license", "list", "--server", self.api.url),
            "give --password-file or set LICENSESERVER_PASSWORD_FILE or LICENSESERVER_PASSWORD",
        )

    def test_listTable(self) -> None:
        """license list prints a table: id, product, edition, kind, seats, in use, status,
        expires; an empty edition is "-", no expiry "never"."""
        status, out, err = self.run_cli(
            "license", "list", "--server", self.api.url, "--password-file", str(self.passwordFile)
        )
        self.assertEqual((status, err), (0, ""))
        table = [
            ("ID", "PRODUCT", "EDITION", "KIND", "SEATS", "IN USE", "STATUS", "EXPIRES"),
            (
                "L-2025-0001",
                "XMLSpy",
                "Enterprise",
                "concurrent",
                "5",
                "2",
                "active",
                "2027-01-31",
            ),
            ("L-2025-0002", "Solver Pro", "-", "core", "2", "0", "inactive", "never"),
        ]
        widths = (11, 10, 10, 10, 5, 6, 8, 10)
        self.assertEqual(
            out.splitlines(),
            [
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
                for row in table
            ],
        )
        self.assertTrue(out.startswith("ID           PRODUCT     EDITION     KIND        SEATS"))
        self.assertEqual(self.api.requests[0]["method"], "GET")

    def test_listJSONAndEmpty(self) -> None:
        """license list --json prints the API's list; an empty pool is said in words."""
        common = ("license", "list", "--server", self.api.url, "--password-file")
        status, out, _ = self.run_cli(*common, str(self.passwordFile), "--json")
        self.assertEqual((status, json.loads(out)), (0, LICENSES))
        self.api.answers[("GET", "/api/licenses")] = (200, [])
        self.assertEqual(
            self.run_cli(*common, str(self.passwordFile)), (0, "no licenses in the pool\n", "")
        )
        status, out, _ = self.run_cli(*common, str(self.passwordFile), "--json")
        self.assertEqual(json.loads(out), [])

    def test_listNotTheAPI(self) -> None:
        """A list answer that is not the API's JSON is said to be so, with its HTTP status."""
        self.api.answers[("GET", "/api/licenses")] = (200, b"<html>a web page</html>")
        self.assertOneLineError(
            self.run_cli(
                "license",
                "list",
                "--server",
                self.api.url,
                "--password-file",
                str(self.passwordFile),
            ),
            "HTTP 200",
            "not the admin API's JSON; is --server the web address of a license server?",
        )
        self.api.answers[("GET", "/api/licenses")] = (200, {"ids": []})
        with environment(LICENSESERVER_URL=self.api.url):
            self.assertOneLineError(
                self.run_cli("license", "list", "--password-file", str(self.passwordFile)),
                "is $LICENSESERVER_URL the web address of a license server?",
            )

    def test_activateDeactivateDelete(self) -> None:
        """Each id is sent in turn to its path (quoted) and its result printed."""
        self.api.answers.update(
            {
                ("POST", "/api/licenses/L-1/deactivate"): (
                    200,
                    {"id": "L-1", "status": "inactive"},
                ),
                ("POST", "/api/licenses/L%2F2/activate"): (200, {"id": "L/2", "status": "active"}),
                ("DELETE", "/api/licenses/L-1"): (200, {"deleted": "L-1"}),
            }
        )
        common = ("--server", self.api.url, "--password-file", str(self.passwordFile))
        self.assertEqual(
            self.run_cli("license", "deactivate", "L-1", *common),
            (0, "L-1: deactivated (status inactive)\n", ""),
        )
        self.assertEqual(
            self.run_cli("license", "activate", "L/2", *common),
            (0, "L/2: activated (status active)\n", ""),
        )
        self.assertEqual(
            self.run_cli("license", "delete", "L-1", *common), (0, "L-1: deleted\n", "")
        )
        self.assertEqual(
            [(r["method"], r["path"]) for r in self.api.requests],
            [
                ("POST", "/api/licenses/L-1/deactivate"),
                ("POST", "/api/licenses/L%2F2/activate"),
                ("DELETE", "/api/licenses/L-1"),
            ],
        )

    def test_firstRefusalStops(self) -> None:
        """Several ids go one at a time; the first refusal ends the command, naming the id."""
        self.api.answers[("DELETE", "/api/licenses/L-1")] = (200, {"deleted": "L-1"})
        self.api.answers[("DELETE", "/api/licenses/L-2")] = (
            404,
            {"error": "no license L-2"},
        )
        status, out, err = self.run_cli(
            "license",
            "delete",
            "L-1",
            "L-2",
            "L-3",
            "--server",
            self.api.url,
            "--password-file",
            str(self.passwordFile),
        )
        self.assertEqual(
            (status, out, err), (1, "L-1: deleted\n", "licenseserver: L-2: 404 no license L-2\n")
        )
        self.assertEqual(
            [r["path"] for r in self.api.requests], ["/api/licenses/L-1", "/api/licenses/L-2"]
        )

    def test_answerForAnotherLicense(self) -> None:
        """An activate answer that is not the license asked about is not taken for success."""
        self.api.answers[("POST", "/api/licenses/L-1/activate")] = (200, {"id": "L-9"})
        self.assertOneLineError(
            self.run_cli(
                "license",
                "activate",
                "L-1",
                "--server",
                self.api.url,
                "--password-file",
                str(self.passwordFile),
            ),
            "L-1: the answer from",
            "not the admin API's JSON",
        )

    def test_uploadSharesTheRequestCode(self) -> None:
        """license upload posts each file with the same server and password handling."""
        lic = self.directory / "a.lic"
        lic.write_bytes(b'{"licenses": []}')
        self.api.answers[("POST", "/api/licenses")] = (201, {"ids": ["L-7"]})
        with environment(
            LICENSESERVER_URL=self.api.url, LICENSESERVER_PASSWORD_FILE=str(self.passwordFile)
        ):
            self.assertEqual(
                self.run_cli("license", "upload", str(lic)), (0, f"{lic}: added L-7\n", "")
            )
        (request,) = self.api.requests
        self.assertEqual(request["body"], b'{"licenses": []}')
        self.assertEqual(self.api.passwords(), ["file password"])

    def test_unreachable(self) -> None:
        """A server that is not there is one line naming its address."""
        self.assertOneLineError(
            self.run_cli(
                "license",
                "list",
                "--server",
                "127.0.0.1:1",
                "--password-file",
                str(self.passwordFile),
            ),
            "cannot reach http://127.0.0.1:1",
        )

    def test_usage(self) -> None:
        """activate, deactivate and delete need at least one id: a usage error, status 2."""
        for command in ("activate", "deactivate", "delete"):
            self.assertOneLineError(self.run_cli("license", command), "ID", status=2)


class SinceTests(unittest.TestCase):
    def test_forms(self) -> None:
        """--since takes a date (its first second, UTC) or Unix seconds, nothing else."""
        self.assertEqual(cli.since_time("2026-03-01"), 1772323200)
        self.assertEqual(cli.since_time("1772323200"), 1772323200)
        self.assertEqual(cli.since_time("0"), 0)
        for text in ("2026-02-30", "2026-3-1", "yesterday", "-5", "1.5", "2026-03-01T10:00"):
            self.assertRaises(argparse.ArgumentTypeError, cli.since_time, text)


DAY = 86400
T0 = 1772323200
"""2026-03-01 00:00:00 UTC."""


class AuditShowTests(ToolTestCase):
    """``audit show --data DIR`` reads the audit log the store wrote, read only."""

    async def writeLog(self, entries: list[AuditEntry]) -> Path:
        from twisted.internet import reactor

        data = self.directory / "data"
        data.mkdir()
        store = SQLiteStore(data / "licenseserver.sqlite3", reactor)
        await store.open()
        try:
            for entry in entries:
                await store.audit([entry])
        finally:
            await store.close()
        return data

    async def test_showAndFilter(self) -> None:
        """Every entry, oldest first; --since (date or seconds) and --kind keep some."""
        data = await self.writeLog(
            [
                AuditEntry(T0 - DAY, "license-added", {"ids": ["L-1"]}),
                AuditEntry(T0 + 10, "grant", {"lease": "l-1", "machine": "m 1"}),
                AuditEntry(T0 + 20, "release", {"lease": "l-1", "machine": "m1"}),
            ]
        )
        status, out, err = self.run_cli("audit", "show", "--data", str(data))
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                '2026-02-28 00:00:00Z  #1  license-added  ids=["L-1"]',
                '2026-03-01 00:00:10Z  #2  grant  lease=l-1 machine="m 1"',
                "2026-03-01 00:00:20Z  #3  release  lease=l-1 machine=m1",
            ],
        )
        for since in ("2026-03-01", str(T0)):
            status, out, _ = self.run_cli("audit", "show", "--data", str(data), "--since", since)
            self.assertEqual([line.split()[2] for line in out.splitlines()], ["#2", "#3"])
        status, out, _ = self.run_cli(
            "audit", "show", "--data", str(data), "--since", str(T0 + 20), "--json"
        )
        self.assertEqual(
            json.loads(out),
            [
                {
                    "seq": 3,
                    "time": T0 + 20,
                    "kind": "release",
                    "data": {"lease": "l-1", "machine": "m1"},
                }
            ],
        )
        status, out, _ = self.run_cli(
            "audit", "show", "--data", str(data), "--kind", "grant", "--kind", "license-added"
        )
        self.assertEqual(
            [line.split()[3] for line in out.splitlines()], ["license-added", "grant"]
        )

    async def test_readOnly(self) -> None:
        """audit show changes nothing in the database (SQLite may leave its empty WAL
        files next to it, as after any reader)."""
        data = await self.writeLog([AuditEntry(T0, "grant", {"lease": "l-1"})])
        database = data / "licenseserver.sqlite3"
        before = database.read_bytes()
        self.assertEqual(self.run_cli("audit", "show", "--data", str(data))[0], 0)
        self.assertEqual(database.read_bytes(), before)
        wal = data / "licenseserver.sqlite3-wal"
        self.assertEqual(wal.read_bytes() if wal.exists() else b"", b"")

    def test_failures(self) -> None:
        """No database, a bad --since, a database without the log: one line each."""
        self.assertOneLineError(
            self.run_cli("audit", "show", "--data", str(self.directory)), "holds no database"
        )
        self.assertOneLineError(
            self.run_cli("audit", "show", "--data", str(self.directory), "--since", "last week"),
            "--since: 'last week' is neither YYYY-MM-DD nor Unix seconds",
            status=2,
        )
        (self.directory / "licenseserver.sqlite3").write_bytes(b"")
        self.assertOneLineError(
            self.run_cli("audit", "show", "--data", str(self.directory)),
            "cannot read the audit log in",
        )
