"""Tests for ``licenseserver upgrade --data DIR [--force]``: the command around the upgrade."""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from licenseserver import cli, store, upgrade
from tests.test_upgrade import AskedPrimary, StatusAnswerer, siblings, tree

OLD, NEW = "1.0.0", "1.1.0"
PRIMARY = "10.0.0.5:35355"
ASK_OVER_TCP = upgrade.ask_primary_status


class UpgradeCommandTests(unittest.TestCase):
    """The ``upgrade`` command of a build at version NEW on directories written by OLD."""

    def setUp(self) -> None:
        self.patch(cli, "__version__", NEW)
        self.ask = AskedPrimary(OLD)
        self.patch(upgrade, "ask_primary_status", self.ask)

    def makeDataDir(self, role: str | None = "failover", primary: str | None = PRIMARY) -> Path:
        """A data directory that a server at version OLD has created and left stopped."""
        data_dir = Path(self.mktemp()).absolute() / "data"
        data_dir.mkdir(parents=True)
        upgrade.prepare_for_start(data_dir, OLD)
        if role is not None:
            upgrade.record_role(data_dir, role, primary)
        (data_dir / "peer-secret").write_text("secret\n")
        (data_dir / "vendor-keys").mkdir()
        (data_dir / "vendor-keys" / "vendor.pub").write_text("public key\n")
        return data_dir

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        """Run the tool with ``argv``; return status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def assertFailedOneLine(self, result: tuple[int, str, str]) -> str:
        """Exit status 1, nothing on stdout and one ``licenseserver:`` line on stderr."""
        status, out, err = result
        self.assertEqual((status, out), (1, ""), err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("licenseserver: "), err)
        return err

    def assertUpgraded(self, data_dir: Path, result: tuple[int, str, str]) -> None:
        status, out, err = result
        self.assertEqual(status, 0, err)
        self.assertIn(f"upgraded {data_dir}", out)
        self.assertEqual(upgrade.prepare_for_start(data_dir, NEW)["server_version"], NEW)

    def test_olderPrimaryRefused(self) -> None:
        """A failover is not upgraded past its primary; the directory stays byte for byte."""
        data_dir = self.makeDataDir()
        before = tree(data_dir)
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertIn(
            f"the primary {PRIMARY} runs {OLD}, older than {NEW}: upgrade the primary first", err
        )
        self.assertIn("rolled back", err)
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])
        self.assertEqual([address for address, _ in self.ask.asked], [("10.0.0.5", 35355)])

    def test_olderPrimaryRefusedEvenForced(self) -> None:
        """--force does not upgrade a failover whose primary answers with an older version."""
        data_dir = self.makeDataDir()
        before = tree(data_dir)
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(data_dir), "--force"))
        self.assertIn("upgrade the primary first", err)
        self.assertEqual(tree(data_dir), before)

    def test_samePrimaryAllowed(self) -> None:
        """A failover whose primary already runs this version is upgraded."""
        self.ask.version = NEW
        data_dir = self.makeDataDir()
        self.assertUpgraded(data_dir, self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertEqual(len(self.ask.asked), 1)

    def test_newerPrimaryAllowed(self) -> None:
        """A failover whose primary runs a newer version is upgraded."""
        self.ask.version = "2.0"
        data_dir = self.makeDataDir()
        self.assertUpgraded(data_dir, self.run_cli("upgrade", "--data", str(data_dir)))

    def test_unreachableRefused(self) -> None:
        """A failover whose primary cannot be reached is refused; the line points at --force."""
        self.ask.error = upgrade.PrimaryUnreachableError("Connection refused")
        data_dir = self.makeDataDir()
        before = tree(data_dir)
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertIn(f"cannot ask the primary {PRIMARY}", err)
        self.assertIn("Connection refused", err)
        self.assertIn("--force", err)
        self.assertEqual(tree(data_dir), before)
        self.assertEqual(siblings(data_dir), [])

    def test_unreachableForced(self) -> None:
        """With --force a failover whose primary cannot be reached is upgraded, with a warning."""
        self.ask.error = upgrade.PrimaryUnreachableError("Connection refused")
        data_dir = self.makeDataDir()
        result = self.run_cli("upgrade", "--data", str(data_dir), "--force")
        self.assertUpgraded(data_dir, result)
        err = result[2]
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("warning", err)
        self.assertIn("--force", err)

    def test_primaryNeverAsks(self) -> None:
        """A primary's data directory is upgraded without asking anyone."""
        self.ask.error = AssertionError("a primary asks nobody")
        data_dir = self.makeDataDir(role="primary", primary=None)
        self.assertUpgraded(data_dir, self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertEqual(self.ask.asked, [])

    def test_noRoleRecordedNeverAsks(self) -> None:
        """A directory without a recorded role upgrades like a primary's."""
        data_dir = self.makeDataDir(role=None)
        self.assertUpgraded(data_dir, self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertEqual(self.ask.asked, [])

    def test_alreadyCurrentAsksNobody(self) -> None:
        """A failover directory already at this version has nothing to do and asks nobody."""
        self.ask.version = NEW
        data_dir = self.makeDataDir()
        self.assertUpgraded(data_dir, self.run_cli("upgrade", "--data", str(data_dir)))
        self.ask.version = OLD
        status, out, err = self.run_cli("upgrade", "--data", str(data_dir))
        self.assertEqual((status, err), (0, ""))
        self.assertIn("nothing to do", out)
        self.assertEqual(len(self.ask.asked), 1)

    def test_failedRollbackSaysHowToRecover(self) -> None:
        """When restoring after a refusal fails too, the one line says so and how to recover."""
        data_dir = self.makeDataDir()

        def failingRestore(target: Path, backup: Path) -> None:
            raise OSError("disk gone")

        self.patch(upgrade, "_restore", failingRestore)
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertIn("upgrade the primary first", err)
        self.assertIn("restoring it failed too", err)
        self.assertIn("disk gone", err)
        (backup,) = [p for p in data_dir.parent.iterdir() if ".backup-" in p.name]
        self.assertIn(f"cp -a {backup} {data_dir}", err)

    def test_missingDirectory(self) -> None:
        """A data directory that does not exist is one line, exit 1."""
        missing = Path(self.mktemp()).absolute()
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(missing)))
        self.assertIn("does not exist", err)

    def test_fileNotDirectory(self) -> None:
        """A --data that is a file is named as such, in one line."""
        path = Path(self.mktemp()).absolute()
        path.write_text("a file")
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(path)))
        self.assertIn("is not a directory", err)

    def test_notOurDatabase(self) -> None:
        """A database that is not a licenseserver's is refused in one line, untouched."""
        data_dir = Path(self.mktemp()).absolute()
        data_dir.mkdir()
        conn = sqlite3.connect(store.database_path(data_dir))
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        conn.close()
        before = tree(data_dir)
        err = self.assertFailedOneLine(self.run_cli("upgrade", "--data", str(data_dir)))
        self.assertIn("not a licenseserver database", err)
        self.assertEqual(tree(data_dir), before)

    async def test_asksRealPrimary(self) -> None:
        """The command asks the recorded primary's licensing port with STATUS over TCP."""
        self.patch(upgrade, "ask_primary_status", ASK_OVER_TCP)
        factory = Factory.forProtocol(StatusAnswerer)
        factory.answer = b"OK server=ls1 role=primary state=active version=1.0.0 edition=e\n"
        factory.received = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = f"127.0.0.1:{port.getHost().port}"
        data_dir = self.makeDataDir(primary=address)
        before = tree(data_dir)
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        argv: Any = ["upgrade", "--data", str(data_dir)]
        status = await threads.deferToThread(cli.main, argv)
        self.assertEqual(status, 1)
        self.assertEqual(factory.received, [b"STATUS"])
        self.assertIn(f"the primary {address} runs 1.0.0, older than {NEW}", err.getvalue())
        self.assertEqual(tree(data_dir), before)

    def test_forceInUsage(self) -> None:
        """``upgrade --help`` lists --force."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit):
            cli.main(["upgrade", "--help"])
        self.assertIn("--force", out.getvalue())
