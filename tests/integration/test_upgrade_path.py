"""Upgrading a primary and its failover between two real builds (FAILOVER.md rules 12, 13).

The "old" build is the working tree. The "new" build is a copy of its ``licenseserver/``
and ``twisted/plugins/`` whose ``_version.py`` says 1.1.0 and nothing else differs; its
processes (``twistd`` and ``python -m licenseserver.cli``) run with ``PYTHONPATH`` at
the copy. Every server is a real process on 127.0.0.1; every wait polls with a deadline.
"""

from __future__ import annotations

import os
import stat
import subprocess
import urllib.error
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.integration.harness import (
    EPHEMERAL,
    ServerProcess,
    copy_build,
    hold_for,
    http_request,
    issue_license,
    local_endpoint,
    make_vendor_key,
    run_cli_result,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient

NEW = "1.1.0"
HEARTBEAT = 0.2
TAKEOVER = 1.5
SETTLE_TIMEOUT = 30.0
"""Longest wait for pairing, syncing, a takeover or a handback."""

BROKEN_MIGRATION = '''


def _broken_next_schema(conn):
    """Fails half way: a new table with rows, a file in the data directory, then an error."""
    conn.execute("CREATE TABLE half_done (n INTEGER NOT NULL)")
    conn.executemany("INSERT INTO half_done (n) VALUES (?)", [(n,) for n in range(100)])
    database = conn.execute("PRAGMA database_list").fetchone()[2]
    (Path(database).parent / "half-migrated").write_text("written by the next migration\\n")
    raise RuntimeError("the next migration broke half way")


SCHEMA_VERSION += 1
MIGRATIONS.append((SCHEMA_VERSION, _broken_next_schema))
'''


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every entry under ``root``: relative name -> (mode, file bytes or link target)."""
    out: dict[str, tuple[int, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            out[name] = (stat.S_IMODE(info.st_mode), os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            out[name] = (stat.S_IMODE(info.st_mode), None)
        else:
            out[name] = (stat.S_IMODE(info.st_mode), path.read_bytes())
    return out


def status(server: ServerProcess) -> dict[str, Any] | None:
    """``GET /api/status`` of a running server; None while it does not answer."""
    try:
        result = http_request(server, "GET", "/api/status", auth=False)
    except (OSError, urllib.error.URLError):
        return None
    return result.json() if result.status == 200 else None


class UpgradePathTests(unittest.TestCase):
    """A primary and its failover, both at the old version, upgraded to the new build."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.newBuild = copy_build(self.base / "build-new", NEW)
        self.secret = self.base / "peer-secret"
        self.secret.write_text("a pairing secret both servers share\n")
        self.secret.chmod(0o600)
        self.primaryData = self.base / "primary"
        self.failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", self.primaryData)
        keys = self.failoverData / "vendor-keys"
        keys.mkdir(parents=True)
        public = self.vendorKey.with_suffix(".pub")
        (keys / public.name).write_bytes(public.read_bytes())
        self.issued = 0

    # -- processes

    def server(
        self,
        data_dir: Path,
        *args: str,
        name: str,
        code_root: Path | None = None,
        licensing_endpoint: str = EPHEMERAL,
    ) -> ServerProcess:
        """Start a server with the test's heartbeat, takeover time and shared secret."""
        server = ServerProcess(
            data_dir,
            "--heartbeat",
            str(HEARTBEAT),
            "--takeover-after",
            str(TAKEOVER),
            "--peer-secret-file",
            str(self.secret),
            *args,
            name=name,
            code_root=code_root,
            licensing_endpoint=licensing_endpoint,
        )
        self.addCleanup(server.stop)
        server.start()
        return server

    def oldPair(self) -> tuple[ServerProcess, ServerProcess]:
        """An old primary with a license and an old failover paired with it and synced."""
        primary = self.server(self.primaryData, name="primary-old")
        self.addLicense(primary)
        failover = self.server(
            self.failoverData,
            "--role",
            "failover",
            "--primary",
            f"127.0.0.1:{primary.licensing_port}",
            name="failover-old",
        )
        self.waitSynced(failover, primary)
        return primary, failover

    def upgrade(self, data_dir: Path, *args: str, build: Path | None = None) -> Any:
        """Run the new build's (or ``build``'s) ``licenseserver upgrade`` on ``data_dir``."""
        return run_cli_result(
            "upgrade", "--data", str(data_dir), *args, code_root=build or self.newBuild
        )

    # -- licenses

    def addLicense(self, primary: ServerProcess) -> None:
        self.issued += 1
        path = issue_license(
            self.vendorKey, self.base / f"license-{self.issued}.json", "XMLSpy", "concurrent", 5
        )
        upload_license(primary, path)

    # -- conditions

    def waitFor(self, server: ServerProcess, what: str, predicate: Any) -> dict[str, Any]:
        """Poll ``server``'s status until ``predicate(status)`` holds; return that status."""
        return wait_for(
            lambda: (s := status(server)) is not None and predicate(s) and s,
            SETTLE_TIMEOUT,
            f"{server.name}: {what}",
            lambda: f"status: {status(server)}\n{server.log_tail()}",
        )

    def waitSynced(self, failover: ServerProcess, primary: ServerProcess) -> dict[str, Any]:
        """Wait until ``failover`` is paired with ``primary`` and holds its revision."""
        revision = status(primary)["revision"]
        self.assertGreater(revision, 0)
        return self.waitFor(
            failover,
            f"paired and synced to revision {revision}",
            lambda s: (
                s["peer"]["link"] == "paired"
                and s["peer"]["last_sync"] is not None
                and s["revision"] == revision
            ),
        )

    def assertOneLineFailure(self, result: subprocess.CompletedProcess[str]) -> str:
        """The command exited 1 with nothing on stdout and one line on stderr; the line."""
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("licenseserver: "), result.stderr)
        return result.stderr

    def assertNoBackups(self) -> None:
        self.assertEqual([p.name for p in self.base.iterdir() if ".backup-" in p.name], [])

    # -- rule 12

    def test_primaryFirstThenFailover(self) -> None:
        """Upgrading the primary first: the old failover covers the gap, hands back, stops its
        failover service with "upgrade this failover to version 1.1.0", and resumes by itself
        once it is upgraded too."""
        primary, failover = self.oldPair()
        port = primary.keep_licensing_port()

        primary.stop()
        self.waitFor(failover, "taking over", lambda s: s["state"] == "active")

        result = self.upgrade(self.primaryData)
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("upgraded", result.stdout)

        primary = self.server(
            self.primaryData,
            name="primary-new",
            code_root=self.newBuild,
            licensing_endpoint=local_endpoint(port),
        )
        self.assertEqual(status(primary)["version"], NEW)
        mismatch = self.waitFor(
            failover,
            "handing back and showing the version mismatch",
            lambda s: (
                s["state"] == "standby"
                and s["peer"]["link"] == "version-mismatch"
                and f"upgrade this failover to version {NEW}" in (s["peer"]["problem"] or "")
            ),
        )
        self.assertEqual(mismatch["version"], "1.0.0")

        with PlainClient("127.0.0.1", failover.licensing_port) as client:
            answer = client.request(
                "HELLO", product="XMLSpy", version="2025r2", host="ws1", machine="m-1"
            )
        self.assertFalse(answer.ok, answer)
        self.assertEqual((answer.code, answer.reason), (503, "standby"))

        primary.stop()
        hold_for(
            lambda: (s := status(failover)) is not None and s["state"] == "standby",
            3 * TAKEOVER,
            "a mismatched failover in standby while the new primary is down",
            lambda: f"status: {status(failover)}\n{failover.log_tail()}",
        )

        primary.start()
        failover.stop()
        result = self.upgrade(self.failoverData)
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("upgraded", result.stdout)

        failover = self.server(self.failoverData, name="failover-new", code_root=self.newBuild)
        paired = self.waitSynced(failover, primary)
        self.assertEqual((paired["role"], paired["state"]), ("failover", "standby"))
        self.assertEqual(paired["version"], NEW)
        self.assertIsNone(paired["peer"]["problem"])
        self.addLicense(primary)
        self.waitSynced(failover, primary)

    # -- rule 13

    def test_failoverFirstRefused(self) -> None:
        """Upgrading the failover before its primary fails and leaves its data directory
        byte for byte as it was; an unreachable primary is refused too, unless --force."""
        primary, failover = self.oldPair()
        address = f"127.0.0.1:{primary.licensing_port}"
        failover.stop()
        before = snapshot(self.failoverData)
        self.assertIn("licenseserver.sqlite3", before)

        line = self.assertOneLineFailure(self.upgrade(self.failoverData))
        self.assertIn(
            f"the primary {address} runs 1.0.0, older than {NEW}: upgrade the primary first", line
        )
        self.assertEqual(snapshot(self.failoverData), before)
        self.assertNoBackups()

        failover.start()
        self.waitSynced(failover, primary)
        failover.stop()
        primary.stop()
        before = snapshot(self.failoverData)

        line = self.assertOneLineFailure(self.upgrade(self.failoverData))
        self.assertIn(f"cannot ask the primary {address}", line)
        self.assertIn("--force", line)
        self.assertEqual(snapshot(self.failoverData), before)
        self.assertNoBackups()

        result = self.upgrade(self.failoverData, "--force")
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("upgraded", result.stdout)
        self.assertIn("--force", result.stderr)

    def test_failedMigrationRollsBack(self) -> None:
        """A migration that fails half way leaves the data directory byte for byte as it was,
        and the old server still starts on it."""
        broken = copy_build(self.base / "build-broken", NEW)
        with open(broken / "licenseserver" / "store" / "schema.py", "a") as f:
            f.write(BROKEN_MIGRATION)
        primary = self.server(self.primaryData, name="primary-old")
        self.addLicense(primary)
        revision = status(primary)["revision"]
        primary.stop()
        before = snapshot(self.primaryData)

        line = self.assertOneLineFailure(self.upgrade(self.primaryData, build=broken))
        self.assertIn("the next migration broke half way", line)
        self.assertIn("rolled back", line)
        self.assertEqual(snapshot(self.primaryData), before)
        self.assertNoBackups()

        primary.start()
        self.assertEqual(status(primary)["revision"], revision)
