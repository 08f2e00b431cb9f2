"""The tool's admin commands against a real server: ``license ...`` through the admin API,
``audit show`` on the running server's data directory.

Each command runs as ``python -m licenseserver.cli`` in a process of its own, with the
server's address and password file given through the environment variables, as a
script would.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.integration.harness import (
    CLI_TIMEOUT,
    REPO_ROOT,
    api_get,
    child_env,
    issue_license,
    make_vendor_key,
    start_server,
)
from tests.integration.plainclient import PlainClient


class AdminCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.data = self.base / "data"
        self.key = make_vendor_key(self.base / "vendor", self.data)
        self.server = start_server(self, self.data)
        self.env = {
            "LICENSESERVER_URL": f"127.0.0.1:{self.server.web_port}",
            "LICENSESERVER_PASSWORD_FILE": str(self.data / "initial-admin-password"),
        }

    def tool(self, *args: str, status: int = 0) -> str:
        """Run ``licenseserver ARGS`` with the environment; check its exit status; stdout."""
        environment = {**child_env(), **self.env}
        environment.pop("LICENSESERVER_PASSWORD", None)
        result = subprocess.run(
            [sys.executable, "-m", "licenseserver.cli", *args],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        self.assertEqual(result.returncode, status, result)
        self.assertNotIn("Traceback", result.stderr)
        if status:
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            return result.stderr
        return result.stdout

    def listed(self) -> dict[str, dict[str, Any]]:
        return {lic["id"]: lic for lic in json.loads(self.tool("license", "list", "--json"))}

    def audit(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.tool("audit", "show", "--data", str(self.data), "--json", *args))

    def test_poolManagement(self) -> None:
        """upload, list (table and JSON), deactivate, activate and delete change the pool as
        the admin API shows it, and audit show lists what they did, --since filtering."""
        self.assertEqual(self.tool("license", "list"), "no licenses in the pool\n")
        first = issue_license(
            self.key, self.base / "a.lic", "XMLSpy", "concurrent", 5, edition="Enterprise"
        )
        second = issue_license(
            self.key, self.base / "b.lic", "MapForce", "concurrent", 2, expires="2099-12-31"
        )
        out = self.tool("license", "upload", str(first), str(second))
        ids = [line.rsplit(" ", 1)[1] for line in out.splitlines()]
        xmlspy, mapforce = ids
        self.assertEqual(
            sorted(ids), sorted(lic["id"] for lic in api_get(self.server, "/api/licenses"))
        )

        with PlainClient("127.0.0.1", self.server.licensing_port) as client:
            hello = client.request(
                "HELLO", product="XMLSpy", version="2025r2", host="ws1", machine="m1"
            )
            self.assertTrue(hello.ok, hello.line)
            self.assertTrue(client.request("CHECKOUT").ok)

        table = self.tool("license", "list").splitlines()
        self.assertEqual(
            table[0].split(),
            ["ID", "PRODUCT", "EDITION", "KIND", "SEATS", "IN", "USE", "STATUS", "EXPIRES"],
        )
        rows = {line.split()[0]: line.split() for line in table[1:]}
        self.assertEqual(
            rows[xmlspy][1:], ["XMLSpy", "Enterprise", "concurrent", "5", "1", "active", "never"]
        )
        self.assertEqual(
            rows[mapforce][1:], ["MapForce", "-", "concurrent", "2", "0", "active", "2099-12-31"]
        )

        self.assertEqual(
            self.tool("license", "deactivate", mapforce),
            f"{mapforce}: deactivated (status inactive)\n",
        )
        self.assertEqual(self.listed()[mapforce]["status"], "inactive")
        self.assertEqual(
            self.tool("license", "activate", mapforce), f"{mapforce}: activated (status active)\n"
        )
        self.assertEqual(self.listed()[mapforce]["status"], "active")
        self.assertEqual(self.tool("license", "delete", mapforce), f"{mapforce}: deleted\n")
        self.assertEqual(list(self.listed()), [xmlspy])
        self.assertIn(f"{mapforce}: 404", self.tool("license", "delete", mapforce, status=1))

        entries = self.audit()
        kinds = [entry["kind"] for entry in entries]
        for kind in (
            "license-added",
            "license-deactivated",
            "license-activated",
            "license-deleted",
        ):
            self.assertIn(kind, kinds)
        self.assertEqual([e["seq"] for e in entries], sorted(e["seq"] for e in entries))
        deleted = [e for e in entries if e["kind"] == "license-deleted"]
        self.assertEqual([e["data"] for e in deleted], [{"id": mapforce}])

        # --since keeps the entries of that second and later, as Unix seconds or as a date.
        middle = entries[len(entries) // 2]["time"]
        self.assertEqual(
            self.audit("--since", str(middle)), [e for e in entries if e["time"] >= middle]
        )
        first_day = datetime.datetime.fromtimestamp(entries[0]["time"], datetime.UTC).date()
        self.assertEqual(self.audit("--since", first_day.isoformat()), entries)
        self.assertEqual(self.audit("--since", "2999-01-01"), [])
        self.assertEqual(
            self.audit("--kind", "license-deleted", "--since", str(middle)),
            [e for e in deleted if e["time"] >= middle],
        )
        text = self.tool("audit", "show", "--data", str(self.data), "--kind", "license-deleted")
        self.assertEqual(len(text.splitlines()), 1)
        self.assertIn(f"license-deleted  id={mapforce}", text)

    def test_wrongPassword(self) -> None:
        """A wrong password file is the API's 401 in one line, naming what was asked."""
        wrong = self.base / "wrong"
        wrong.write_text("not the password\n")
        self.env["LICENSESERVER_PASSWORD_FILE"] = str(wrong)
        self.assertIn("GET /api/licenses: 401", self.tool("license", "list", status=1))

    def test_trustVendorKeyWithoutRestart(self) -> None:
        """`vendor trust` makes the running server trust a new vendor's key: a license it
        signed is refused before, naming the key and how to trust it, and taken after, by
        the same process; an expired one is taken with a warning on stderr."""
        other = make_vendor_key(self.base / "other", name="acme")
        lic = issue_license(other, self.base / "acme.lic", "MapForce", "concurrent", 3)
        refusal = self.tool("license", "upload", str(lic), status=1)
        self.assertIn("400 untrusted", refusal)
        self.assertIn("POST /api/vendor-keys", refusal)
        public = other.with_suffix(".pub")
        out = self.tool("vendor", "trust", str(public))
        self.assertRegex(out, rf"^{public}: vendor key [0-9a-f]{{16}} is trusted now\n$")
        self.assertIn("was trusted already", self.tool("vendor", "trust", str(public)))
        pid = self.server.process.pid
        self.assertIn("added", self.tool("license", "upload", str(lic)))
        self.assertEqual(self.server.process.pid, pid)
        old = issue_license(
            other, self.base / "old.lic", "MapForce", "concurrent", 1, expires="2020-01-31"
        )
        result = subprocess.run(
            [sys.executable, "-m", "licenseserver.cli", "license", "upload", str(old)],
            cwd=REPO_ROOT,
            env={**child_env(), **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("expired on 2020-01-31: it gives no seat", result.stderr)
        self.assertTrue(result.stderr.startswith("licenseserver: warning: "), result.stderr)
