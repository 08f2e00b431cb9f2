"""Tests for ``licenseserver.upgrade``: backup, migrate, and exact rollback."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from licenseserver import model, store, upgrade
from licenseserver.upgrade import UpgradeError, upgrade_data_dir

WHEN = datetime(2025, 1, 2, 3, 4, 5)
CLIENT = model.Client("c-1", "m-1", "ws17", 100, 200)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (and root itself): name -> (mode, bytes or link target)."""
    out = {".": (stat.S_IMODE(root.stat().st_mode), None)}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            out[name] = ("link", os.readlink(path))
        elif path.is_dir():
            out[name] = (mode, None)
        else:
            out[name] = (mode, path.read_bytes())
    return out


def siblings(data_dir: Path) -> list[str]:
    """The names next to the data directory, other than itself."""
    return sorted(p.name for p in data_dir.parent.iterdir() if p != data_dir)


def add_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE clients ADD COLUMN note TEXT NOT NULL DEFAULT ''")


def broken_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE half_done (x)")
    raise RuntimeError("step 3 broke")


TWO = store.MIGRATIONS + [(2, add_column)]
BROKEN_AT_THREE = TWO + [(3, broken_step)]


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
        result = upgrade_data_dir(data_dir, target_version="1.1.0", migrations=TWO, now=WHEN)

        backup = data_dir.with_name("licenseserver-data.backup-20250102T030405")
        self.assertEqual(result.backup, backup)
        self.assertEqual(tree(backup), before)
        self.assertEqual(
            (result.old_schema, result.new_schema, result.old_version, result.new_version),
            (1, 2, "1.0.0", "1.1.0"),
        )
        self.assertTrue(result.changed)
        self.assertIn(str(backup), result.summary())
        database = store.database_path(data_dir)
        self.assertEqual(store.check_database(database), 2)
        conn = sqlite3.connect(database)
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("SELECT value FROM local WHERE name = 'server_version'").fetchone(),
            ('"1.1.0"',),
        )
        self.assertEqual(conn.execute("SELECT id, note FROM clients").fetchall(), [("c-1", "")])

    async def test_versionOnlyUpgrade(self) -> None:
        """A new server version at the same schema is recorded, with a backup."""
        data_dir = await self.makeDataDir()
        result = upgrade_data_dir(data_dir, target_version="1.0.1", now=WHEN)
        self.assertEqual((result.old_schema, result.new_schema), (1, 1))
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
            upgrade_data_dir(
                data_dir, target_version="1.2.0", migrations=BROKEN_AT_THREE, now=WHEN
            )
        message = str(caught.exception)
        self.assertIn("step 3 broke", message)
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
                data_dir, target_version="1.1.0", before_migrate=refuse, migrations=TWO
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

    async def test_failedRestoreSaysHowToRecover(self) -> None:
        """When the rollback fails too, the error names the backup and how to copy it back."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)

        def failingRestore(target: Path, backup: Path) -> None:
            raise OSError("disk gone")

        self.patch(upgrade, "_restore", failingRestore)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(
                data_dir, target_version="1.2.0", migrations=BROKEN_AT_THREE, now=WHEN
            )
        message = str(caught.exception)
        backup = data_dir.with_name("licenseserver-data.backup-20250102T030405")
        self.assertIn("half migrated", message)
        self.assertIn(str(backup), message)
        self.assertIn("copy", message)
        self.assertEqual(tree(backup), before)

    async def test_symlinkedDataDirRestores(self) -> None:
        """A data directory reached through a symlink is restored in place, link intact."""
        data_dir = await self.makeDataDir()
        before = tree(data_dir)
        link = data_dir.with_name("link")
        link.symlink_to(data_dir)
        with self.assertRaises(UpgradeError) as caught:
            upgrade_data_dir(link, target_version="1.2.0", migrations=BROKEN_AT_THREE)
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
        upgrade_data_dir(data_dir, target_version="2.0.0", migrations=TWO, now=WHEN)
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
