"""Tests for ``licenseserver.upgrade``: backup, migrate, and exact rollback."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet import endpoints, reactor, threads
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from licenseserver import certs, model, store, tap, upgrade
from licenseserver.datadir import DataDir
from licenseserver.upgrade import UpgradeError, upgrade_data_dir

WHEN = datetime(2025, 1, 2, 3, 4, 5)
CLIENT = model.Client("c-1", "m-1", "ws17", 100, 200)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (and root itself): name -> (mode, owner, bytes or link)."""
    info = root.stat()
    out = {".": (stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid), None)}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        info = path.lstat()
        mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
        if path.is_symlink():
            out[name] = ("link", owner, os.readlink(path))
        elif path.is_dir():
            out[name] = (mode, owner, None)
        else:
            out[name] = (mode, owner, path.read_bytes())
    return out


def siblings(data_dir: Path) -> list[str]:
    """The names next to the data directory, other than itself."""
    return sorted(p.name for p in data_dir.parent.iterdir() if p != data_dir)


def add_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE clients ADD COLUMN note TEXT NOT NULL DEFAULT ''")


def broken_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x)")
    raise RuntimeError(f"step {NEXT + 1} broke")


NEXT = store.SCHEMA_VERSION + 1
"""The schema of a next version, made of this one's steps and ``add_column``."""
NEWER = store.MIGRATIONS + [(NEXT, add_column)]
BROKEN_AFTER = NEWER + [(NEXT + 1, broken_step)]


class UpgradeTests(unittest.TestCase):
    """upgrade_data_dir on real data directories written by the real store."""

    async def makeDataDir(self, server_version: str | None = "1.0.0") -> Path:
        """A data directory as a stopped server leaves it: database, keys, secret."""
        data_dir = Path(self.mktemp()).absolute() / "licenseserver-data"
        data_dir.mkdir(parents=True)
        s = store.SQLiteStore(store.database_path(data_dir), reactor)
        await s.open()
        await s.commit(1, [model.Change.put(CLIENT)])
        await s.addEvent(model.Event(1, "started", "info", "server started"))
        await s.setLocal("role", "failover")
        await s.setLocal("primary", "ls1:35355")
        await s.setLocal(upgrade.SERVER_VERSION, server_version)
        await s.close()
        (data_dir / "peer-secret").write_text("secret")
        (data_dir / "peer-secret").chmod(0o600)
        keys = data_dir / "vendor-keys"
        keys.mkdir(mode=0o750)
        (keys / "vendor.pub").write_text("public key")
        (keys / "vendor.pub").chmod(0o644)
        (data_dir / "current.pub").symlink_to("vendor-keys/vendor.pub")
        data_dir.chmod(0o700)
        return data_dir

    async def test_upgradeMigratesAndKeepsBackup(self) -> None:
        """An upgrade keeps a byte-exact backup, migrates, and records the version."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        result = upgrade_data_dir(data_dir, target_version="1.1.0", migrations=NEWER, now=WHEN)

        backup = data_dir.with_name("licenseserver-data.backup-20250102T030405")
        self.assertEqual(result.backup, backup)
        self.assertEqual(tree(backup), before)
        self.assertEqual(
            (result.old_schema, result.new_schema, result.old_version, result.new_version),
            (store.SCHEMA_VERSION, NEXT, "1.0.0", "1.1.0"),
        )
        self.assertTrue(result.changed)
        self.assertIn(str(backup), result.summary())
        database = store.database_path(data_dir)
        self.assertEqual(store.check_database(database), NEXT)
        conn = sqlite3.connect(database)
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("SELECT value FROM local WHERE name = 'server_version'").fetchone(),
            ('"1.1.0"',),
        )
        self.assertEqual(conn.execute("SELECT id, note FROM clients").fetchall(), [("c-1", "")])

    async def test_refusedWhileServerRuns(self) -> None:
        """An upgrade of a directory a running server holds is refused; nothing changes."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        held = DataDir(data_dir).lock()
        self.addCleanup(os.close, held)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.1.0", migrations=NEWER, now=WHEN)
        self.assertIn("a server is running", str(caught.exception))
        self.assertEqual(tree(data_dir), before)
        self.assertFalse(data_dir.with_name("licenseserver-data.backup-20250102T030405").exists())

    async def test_schemaOneDirectoryUpgrades(self) -> None:
        """A directory an earlier build left at schema 1 upgrades to this schema with its
        records and its audit chain, and this server's store then opens it."""
        from licenseserver import audit

        data_dir = Path(self.mktemp()).absolute() / "licenseserver-data"
        data_dir.mkdir(parents=True)
        conn = store.connect(store.database_path(data_dir), create=True)
        store.migrate(conn, store.MIGRATIONS[:1])
        store.set_local(conn, upgrade.SERVER_VERSION, "1.0.0")
        row = store.TABLES["client"].to_row(CLIENT)
        conn.execute("INSERT INTO clients VALUES (?, ?, ?, ?, ?)", row)
        conn.execute("UPDATE meta SET value = '3' WHERE name = 'revision'")
        entry = audit.AuditEntry(100, "grant", {"lease": "l-1"})
        digest = audit.chain(audit.GENESIS, 1, entry)
        conn.execute(
            "INSERT INTO audit VALUES (1, 100, 'grant', ?, ?, ?)",
            (audit.data_text(entry), audit.GENESIS, digest),
        )
        conn.close()
        result = upgrade_data_dir(data_dir, target_version="1.0.0", now=WHEN)
        self.assertEqual((result.old_schema, result.new_schema), (1, store.SCHEMA_VERSION))
        self.assertTrue(result.changed)
        self.assertEqual(audit.verify_database(store.database_path(data_dir)), audit.Verdict(1))
        s = store.SQLiteStore(store.database_path(data_dir), reactor)
        self.addCleanup(s.close)
        await s.open()
        self.assertEqual((await s.load()).records["client"], [CLIENT])
        self.assertEqual((await s.load()).revision, 3)

    async def test_versionOnlyUpgrade(self) -> None:
        """A new server version at the same schema is recorded, with a backup."""
        data_dir = await self.makeDataDir()
        result = upgrade_data_dir(data_dir, target_version="1.0.1", now=WHEN)
        current = store.SCHEMA_VERSION
        self.assertEqual((result.old_schema, result.new_schema), (current, current))
        self.assertIsNotNone(result.backup)
        s = store.SQLiteStore(store.database_path(data_dir), reactor)
        self.addCleanup(s.close)
        await s.open()
        self.assertEqual(await s.getLocal(upgrade.SERVER_VERSION), "1.0.1")
        self.assertEqual((await s.load()).records["client"], [CLIENT])

    async def test_failureHalfWayRestores(self) -> None:
        """A migration failing half way puts the directory back byte for byte."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.2.0", migrations=BROKEN_AFTER, now=WHEN)
        message = str(caught.exception)
        self.assertIn(f"step {NEXT + 1} broke", message)
        self.assertIn("rolled back", message)
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])

    async def test_refusalByHookRestores(self) -> None:
        """A before_migrate hook that refuses leaves the directory byte for byte."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        seen: list[tuple[Path, dict]] = []

        def refuse(path: Path, local: dict[str, Any]) -> None:
            seen.append((path, local))
            raise RuntimeError("the primary runs an older version")

        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(
                data_dir, target_version="1.1.0", before_migrate=refuse, migrations=NEWER
            )
        self.assertIn("older version", str(caught.exception))
        self.assertIn("rolled back", str(caught.exception))
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])
        self.assertEqual(
            seen,
            [
                (
                    data_dir,
                    {"role": "failover", "primary": "ls1:35355", "server_version": "1.0.0"},
                )
            ],
        )

    async def test_rollbackKeepsOwners(self) -> None:
        """A rollback puts back every file's owner: run as root on the directory of a
        server that runs as its own user, it must not leave that user's files to root.

        Run by a user other than root, the files are that user's own, and stay so.
        """
        data_dir = await self.makeDataDir()
        if os.geteuid() == 0:
            for path in [data_dir, *data_dir.rglob("*")]:
                os.lchown(path, 65534, 65534)
        before = tree(data_dir)

        def refuse(path: Path, local: dict[str, Any]) -> None:
            raise RuntimeError("the primary runs an older version")

        with self.assertRaises(UpgradeError):
            upgrade_data_dir(
                data_dir, target_version="1.1.0", before_migrate=refuse, migrations=NEWER
            )
        self.assertEqual(tree(data_dir), before)

    async def test_failedRestoreSaysHowToRecover(self) -> None:
        """When the rollback fails too, the error names the backup and how to copy it back."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)

        def failingRestore(target: Path, backup: Path) -> None:
            raise OSError("disk gone")

        self.patch(upgrade, "_restore", failingRestore)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.2.0", migrations=BROKEN_AFTER, now=WHEN)
        message = str(caught.exception)
        backup = data_dir.with_name("licenseserver-data.backup-20250102T030405")
        self.assertIn("half migrated", message)
        self.assertIn(str(backup), message)
        self.assertIn("copy", message)
        self.assertEqual(tree(backup), before)

    async def test_failedRestoreKeepsServersStopped(self) -> None:
        """After a failed rollback no server starts there, nor on an empty directory in its
        place, and no upgrade runs, until the admin restored it and deleted the marker."""
        data_dir = await self.makeDataDir()

        def failingRestore(target: Path, backup: Path) -> None:
            shutil.rmtree(target)
            raise OSError("disk gone")

        self.patch(upgrade, "_restore", failingRestore)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.2.0", migrations=BROKEN_AFTER)
        marker = data_dir.with_name("licenseserver-data.upgrade-failed")
        self.assertIn(str(marker), str(caught.exception))
        self.assertIn("half migrated", marker.read_text())
        options = tap.Options()
        options.parseOptions(["--data", str(data_dir)])
        with self.assertRaises(SystemExit) as started:
            tap.makeService(options, MemoryReactorClock())
        self.assertIn("last upgrade failed", str(started.exception.code))
        self.assertFalse(data_dir.exists())
        with self.assertRaises(UpgradeError) as again:
            upgrade_data_dir(data_dir, target_version="1.2.0", migrations=NEWER)
        self.assertIn("last upgrade failed", str(again.exception))

    async def test_symlinkedDataDirRestores(self) -> None:
        """A data directory reached through a symlink is restored in place, link intact."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        link = data_dir.with_name("link")
        link.symlink_to(data_dir)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(link, target_version="1.2.0", migrations=BROKEN_AFTER)
        self.assertIn("rolled back", str(caught.exception))
        self.assertTrue(link.is_symlink())
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), ["link"])

    async def test_alreadyCurrent(self) -> None:
        """A directory at the latest schema and the target version is left alone."""
        data_dir = await self.makeDataDir(server_version="1.0.0")
        before = tree(data_dir)
        called = []
        result = upgrade_data_dir(
            data_dir, target_version="1.0.0", before_migrate=lambda *a: called.append(a)
        )
        self.assertFalse(result.changed)
        self.assertIsNone(result.backup)
        self.assertIn("nothing to do", result.summary())
        self.assertEqual(called, [])
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])

    async def test_leftoverWalIsFoldedIntoBackup(self) -> None:
        """A write-ahead log left by a crash is checkpointed, so the backup is complete."""
        data_dir = await self.makeDataDir()
        database = store.database_path(data_dir)
        crashed = data_dir.with_name("crashed")
        writer = sqlite3.connect(database, isolation_level=None)
        writer.execute("INSERT INTO settings (name, value) VALUES ('late', '1')")
        shutil.copytree(data_dir, crashed, symlinks=True)
        writer.close()
        self.assertTrue(store.database_path(crashed).with_name(database.name + "-wal").exists())

        result = upgrade_data_dir(crashed, target_version="1.1.0", now=WHEN)
        names = {p.name for p in result.backup.iterdir()}
        self.assertNotIn(database.name + "-wal", names)
        conn = sqlite3.connect(store.database_path(result.backup))
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT name FROM settings").fetchall(), [("late",)])

    def test_noDatabase(self) -> None:
        """A directory without a database, or no directory, is refused."""
        empty = Path(self.mktemp())
        empty.mkdir()
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(empty, target_version="1.0.0")
        self.assertIn("no database", str(caught.exception))
        with self.assertRaises(UpgradeError):
            upgrade_data_dir(empty / "missing", target_version="1.0.0")
        self.assertEqual(list(empty.iterdir()), [])

    async def test_newerDatabaseRefused(self) -> None:
        """A database newer than this server is refused without a backup."""
        data_dir = await self.makeDataDir()
        upgrade_data_dir(data_dir, target_version="2.0.0", migrations=NEWER, now=WHEN)
        shutil.rmtree(data_dir.with_name("licenseserver-data.backup-20250102T030405"))
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.0.0")
        self.assertIn("newer", str(caught.exception))
        self.assertEqual(siblings(data_dir), [])

    def test_backupNamesDoNotCollide(self) -> None:
        """A second backup in the same second gets a suffix instead of overwriting."""
        data_dir = Path(self.mktemp()) / "data"
        first = upgrade.backup_path(data_dir, WHEN)
        self.assertEqual(first.name, "data.backup-20250102T030405")
        first.mkdir(parents=True)
        self.assertEqual(upgrade.backup_path(data_dir, WHEN).name, first.name + "-1")


class PrepareForStartTests(unittest.TestCase):
    def setUp(self):
        self.data = Path(self.mktemp())
        self.data.mkdir()

    def test_newDirectoryMarked(self):
        """A new data directory gets a database marked with the server's version."""
        local = upgrade.prepare_for_start(self.data, "1.0.0")
        self.assertEqual(local[upgrade.SERVER_VERSION], "1.0.0")
        self.assertEqual(upgrade.prepare_for_start(self.data, "1.0.0"), local)

    def test_olderVersionNeedsUpgrade(self):
        """A directory last used by an older version is refused until it is upgraded."""
        upgrade.prepare_for_start(self.data, "1.0.0")
        with self.assertRaises(store.SchemaError) as caught:
            upgrade.prepare_for_start(self.data, "1.1.0")
        self.assertIn("licenseserver upgrade --data", str(caught.exception))
        upgrade_data_dir(self.data, target_version="1.1.0")
        upgrade.prepare_for_start(self.data, "1.1.0")

    def test_newerVersionRefused(self):
        """No version starts on a directory that a newer one has written."""
        upgrade.prepare_for_start(self.data, "1.1.0")
        with self.assertRaises(store.SchemaError) as caught:
            upgrade.prepare_for_start(self.data, "1.0.0")
        self.assertIn("newer version 1.1.0", str(caught.exception))


class AskedPrimary:
    """A fake ``ask_status``: answers with ``version``, or raises ``error``; logs the asks."""

    def __init__(self, version: str = "1.0.0", error: Exception | None = None):
        self.version = version
        self.error = error
        self.asked: list[tuple[tuple[str, int], float]] = []

    def __call__(self, address: tuple[str, int], timeout: float) -> dict[str, str]:
        self.asked.append((address, timeout))
        if self.error is not None:
            raise self.error
        return {
            "server": "ls1",
            "role": "primary",
            "state": "active",
            "version": self.version,
            "edition": "standard",
        }


class CheckPrimaryVersionTests(unittest.TestCase):
    """The before_migrate hook that keeps a failover from overtaking its primary."""

    makeDataDir = UpgradeTests.makeDataDir

    async def upgradeWith(
        self, ask: AskedPrimary, *, force: bool = False, target: str = "1.1.0", **local: Any
    ) -> tuple[Path, dict, list[str]]:
        """Upgrade a failover directory to ``target``, asking ``ask`` about its primary.

        Returns the directory, its tree before the upgrade and the warnings given.
        """
        data_dir = await self.makeDataDir()
        if local:
            conn = store.connect(store.database_path(data_dir))
            for name, value in local.items():
                store.set_local(conn, name, value)
            conn.close()
        before = tree(data_dir)
        warnings: list[str] = []

        def check(path: Path, values: dict[str, Any]) -> None:
            upgrade.check_primary_version(
                path,
                values,
                force=force,
                target_version=target,
                ask_status=ask,
                warn=warnings.append,
            )

        self.result = upgrade_data_dir(
            data_dir, target_version=target, before_migrate=check, migrations=NEWER, now=WHEN
        )
        return data_dir, before, warnings

    async def assertRefused(self, ask: AskedPrimary, **kw: Any) -> str:
        """The upgrade is refused, the directory is byte for byte as it was; the message."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(
                data_dir,
                target_version="1.1.0",
                before_migrate=lambda path, values: upgrade.check_primary_version(
                    path, values, target_version="1.1.0", ask_status=ask, **kw
                ),
                migrations=NEWER,
                now=WHEN,
            )
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn("rolled back", message)
        return message

    async def test_olderPrimaryRefused(self) -> None:
        """A failover whose primary runs an older version is refused and left as it was."""
        ask = AskedPrimary("1.0.0")
        message = await self.assertRefused(ask, force=False)
        self.assertIn(
            "the primary ls1:35355 runs 1.0.0, older than 1.1.0: upgrade the primary first",
            message,
        )
        self.assertEqual([address for address, _ in ask.asked], [("ls1", 35355)])

    async def test_forceDoesNotOvertakeOlderPrimary(self) -> None:
        """--force does not let a failover overtake a primary that answers as older."""
        message = await self.assertRefused(AskedPrimary("1.0.0"), force=True)
        self.assertIn("upgrade the primary first", message)

    async def test_samePrimaryAllowed(self) -> None:
        """A failover whose primary already runs the target version is upgraded."""
        ask = AskedPrimary("1.1.0")
        data_dir, before, warnings = await self.upgradeWith(ask)
        self.assertEqual(store.check_database(store.database_path(data_dir)), NEXT)
        self.assertEqual(tree(self.result.backup), before)
        self.assertEqual(len(ask.asked), 1)
        self.assertEqual(warnings, [])

    async def test_newerPrimaryAllowed(self) -> None:
        """A failover whose primary runs a newer version than the target is upgraded."""
        data_dir, _, _ = await self.upgradeWith(AskedPrimary("1.2.0"))
        self.assertEqual(store.check_database(store.database_path(data_dir)), NEXT)

    async def test_unreachableRefused(self) -> None:
        """A failover whose primary cannot be reached is refused, pointing at --force."""
        ask = AskedPrimary(error=upgrade.PrimaryUnreachableError("Connection refused"))
        message = await self.assertRefused(ask, force=False)
        self.assertIn("cannot ask the primary ls1:35355 for its version", message)
        self.assertIn("Connection refused", message)
        self.assertIn("--force", message)

    async def test_socketErrorIsUnreachable(self) -> None:
        """An OSError from asking counts as an unreachable primary, not a crash."""
        ask = AskedPrimary(error=ConnectionRefusedError(111, "Connection refused"))
        message = await self.assertRefused(ask, force=False)
        self.assertIn("Connection refused", message)
        self.assertIn("--force", message)

    async def test_unreachableForced(self) -> None:
        """With --force, a failover whose primary cannot be reached is upgraded, with a warning."""
        ask = AskedPrimary(error=upgrade.PrimaryUnreachableError("no answer in time"))
        data_dir, _, warnings = await self.upgradeWith(ask, force=True)
        self.assertEqual(store.check_database(store.database_path(data_dir)), NEXT)
        self.assertEqual(len(warnings), 1)
        self.assertIn("no answer in time", warnings[0])
        self.assertIn("--force", warnings[0])

    async def test_versionlessAnswerRefused(self) -> None:
        """A STATUS answer without a readable version is refused like an unreachable primary."""
        message = await self.assertRefused(AskedPrimary("banana"), force=False)
        self.assertIn("without a version", message)
        self.assertIn("--force", message)

    async def test_primaryNeverAsks(self) -> None:
        """A primary's data directory is upgraded without asking anyone."""
        ask = AskedPrimary(error=AssertionError("a primary must not ask"))
        data_dir, _, _ = await self.upgradeWith(ask, role="primary", primary=None)
        self.assertEqual(ask.asked, [])
        self.assertEqual(store.check_database(store.database_path(data_dir)), NEXT)

    async def test_noRoleRecordedNeverAsks(self) -> None:
        """A directory with no recorded role is a primary's and upgrades without asking."""
        ask = AskedPrimary(error=AssertionError("must not ask"))
        data_dir = await self.makeDataDir()
        conn = store.connect(store.database_path(data_dir))
        store.set_local(conn, "role", None)
        conn.close()
        upgrade_data_dir(
            data_dir,
            target_version="1.1.0",
            before_migrate=lambda path, values: upgrade.check_primary_version(
                path, values, force=False, target_version="1.1.0", ask_status=ask
            ),
        )
        self.assertEqual(ask.asked, [])

    async def test_noPrimaryRecorded(self) -> None:
        """A failover directory without a recorded primary is refused unless forced."""
        data_dir = await self.makeDataDir()
        conn = store.connect(store.database_path(data_dir))
        store.set_local(conn, "primary", None)
        conn.close()
        before = tree(data_dir)
        ask = AskedPrimary()

        def check(force: bool) -> Any:
            return lambda path, values: upgrade.check_primary_version(
                path, values, force=force, target_version="1.1.0", ask_status=ask
            )

        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(data_dir, target_version="1.1.0", before_migrate=check(False))
        self.assertIn("records no primary", str(caught.exception))
        self.assertEqual(tree(data_dir), before)
        upgrade_data_dir(data_dir, target_version="1.1.0", before_migrate=check(True))
        self.assertEqual(ask.asked, [])

    async def test_tlsEndpointNotAsked(self) -> None:
        """A primary recorded as a TLS endpoint cannot be asked: refused unless forced."""
        ask = AskedPrimary("1.1.0")
        data_dir = await self.makeDataDir()
        conn = store.connect(store.database_path(data_dir))
        store.set_local(conn, "primary", "ssl:host=ls1:port=35355")
        conn.close()
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(
                data_dir,
                target_version="1.1.0",
                before_migrate=lambda path, values: upgrade.check_primary_version(
                    path, values, force=False, target_version="1.1.0", ask_status=ask
                ),
            )
        self.assertIn("ssl:host=ls1:port=35355", str(caught.exception))
        self.assertIn("--force", str(caught.exception))
        self.assertEqual(ask.asked, [])

    def test_primaryAddress(self) -> None:
        """HOST[:PORT] and plain tcp: endpoints name an address to ask; other endpoints not."""
        cases = {
            "ls1": ("ls1", 35355),
            "ls1:4000": ("ls1", 4000),
            "[::1]:4000": ("::1", 4000),
            "tcp:ls1:4000": ("ls1", 4000),
            "tcp:host=ls1:port=4000:timeout=3": ("ls1", 4000),
            "tcp:port=4000:host=10.0.0.5": ("10.0.0.5", 4000),
            r"tcp:host=fe80\:\:1:port=4000": ("fe80::1", 4000),
            "tcp:ls1": None,
            "tcp:ls1:99999": None,
            "ssl:host=ls1:port=4000": None,
            "unix:/tmp/sock": None,
            "": None,
        }
        for text, expected in cases.items():
            self.assertEqual(upgrade.primary_address(text), expected, text)


class StatusAnswerer(LineReceiver):
    """A primary's licensing port reduced to answering STATUS with a fixed line."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.factory.received.append(line)
        answer = self.factory.answer
        if answer is None:
            return
        self.transport.write(answer)
        self.transport.loseConnection()


class AskPrimaryStatusTests(unittest.TestCase):
    """ask_primary_status over a real socket, against a tiny server on an ephemeral port."""

    def listen(self, answer: bytes | None) -> tuple[str, int]:
        factory = Factory.forProtocol(StatusAnswerer)
        factory.answer = answer
        factory.received = []
        self.factory = factory
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return "127.0.0.1", port.getHost().port

    def ask(self, address: tuple[str, int], timeout: float = 5.0) -> Any:
        return threads.deferToThread(upgrade.ask_primary_status, address, timeout)

    async def test_statusAnswered(self) -> None:
        """STATUS goes out as one line; the OK answer's arguments come back."""
        address = self.listen(b"OK server=ls1 role=primary state=active version=1.1.0 edition=x\n")
        status = await self.ask(address)
        self.assertEqual(self.factory.received, [b"STATUS"])
        self.assertEqual(status["version"], "1.1.0")
        self.assertEqual(status["role"], "primary")

    async def test_errAnswer(self) -> None:
        """An ERR answer to STATUS is reported as an unreachable primary with its reason."""
        address = self.listen(b"ERR 429 rate-limited\n")
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.ask(address)
        self.assertIn("429 rate-limited", str(caught.exception))

    async def test_garbageAnswer(self) -> None:
        """A line that is no protocol answer is reported, not raised as something else."""
        address = self.listen(b"HTTP/1.1 400 Bad Request\n")
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.ask(address)
        self.assertIn("no answer", str(caught.exception))

    async def test_closedWithoutAnswer(self) -> None:
        """A connection closed before a whole line came is reported."""
        address = self.listen(b"OK server=ls1")
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.ask(address)
        self.assertIn("without answering", str(caught.exception))

    async def test_silentServerTimesOut(self) -> None:
        """A server that accepts but never answers is given up on after the timeout."""
        address = self.listen(None)
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.ask(address, timeout=0.2)
        self.assertIn("no answer in time", str(caught.exception))

    async def test_nobodyListening(self) -> None:
        """A port where nobody listens is reported as unreachable."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        closed = port.getHost().port
        await port.stopListening()
        with self.assertRaises(upgrade.PrimaryUnreachableError):
            await self.ask(("127.0.0.1", closed))

    def listenTLS(self, names: list[str], ips: list[str]) -> tuple[tuple[str, int], Path]:
        """A STATUS answerer over TLS with a certificate of a CA of its own: (address, CA)."""
        base = Path(self.mktemp()).resolve()
        ca, _ = certs.write_ca(base / "ca", "test CA")
        cert, key = certs.write_server_certificate(base / "ca", base / "server", names, ips)
        factory = Factory.forProtocol(StatusAnswerer)
        factory.answer = b"OK server=ls1 role=primary state=active version=1.0.0\n"
        factory.received = []
        endpoint = endpoints.serverFromString(
            reactor, certs.tls_endpoint(0, key, cert, interface="127.0.0.1")
        )
        port = self.successResultOf(endpoint.listen(factory))
        self.addCleanup(port.stopListening)
        return ("127.0.0.1", port.getHost().port), ca

    async def test_statusOverTLS(self) -> None:
        """With the failover's CA file the primary is asked over TLS, its name checked."""
        address, ca = self.listenTLS(["localhost"], ["127.0.0.1"])
        status = await threads.deferToThread(upgrade.ask_primary_status, address, 5.0, str(ca))
        self.assertEqual(status["version"], "1.0.0")
        with self.assertRaises(upgrade.PrimaryUnreachableError):
            await self.ask(address, timeout=1.0)

    async def test_tlsCertificateChecked(self) -> None:
        """A certificate of another CA, or for another name, is no answer."""
        address, ca = self.listenTLS(["localhost"], [])
        for trusted in (ca, self.listenTLS(["localhost"], ["127.0.0.1"])[1]):
            with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
                await threads.deferToThread(upgrade.ask_primary_status, address, 5.0, str(trusted))
            self.assertIn("certificate does not verify", str(caught.exception))

    async def test_tlsCAFileGone(self) -> None:
        """A recorded CA file that is gone is named in the refusal."""
        address, ca = self.listenTLS(["localhost"], ["127.0.0.1"])
        ca.unlink()
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await threads.deferToThread(upgrade.ask_primary_status, address, 5.0, str(ca))
        self.assertIn(f"its CA file {ca} (--primary-ca) is unusable", str(caught.exception))

    async def test_hookOverTLS(self) -> None:
        """A failover whose link trusts --primary-ca asks its primary over TLS."""
        (host, port), ca = self.listenTLS(["localhost"], ["127.0.0.1"])
        local = {"role": "failover", "primary": f"{host}:{port}", "primary_ca": str(ca)}
        with self.assertRaises(upgrade.UpgradeRefusedError) as caught:
            await threads.deferToThread(
                upgrade.check_primary_version,
                Path("unused"),
                local,
                force=False,
                target_version="1.1.0",
            )
        self.assertIn(f"the primary {host}:{port} runs 1.0.0", str(caught.exception))

    async def test_hookOverRealSocket(self) -> None:
        """The hook asks the recorded primary over the network and names it when it is older."""
        host, port = self.listen(b"OK server=ls1 role=primary state=active version=1.0.0\n")
        with self.assertRaises(upgrade.UpgradeRefusedError) as caught:
            await threads.deferToThread(
                upgrade.check_primary_version,
                Path("unused"),
                {"role": "failover", "primary": f"{host}:{port}"},
                force=True,
                target_version="1.1.0",
            )
        self.assertEqual(
            str(caught.exception),
            f"the primary {host}:{port} runs 1.0.0, older than 1.1.0: upgrade the primary first",
        )
