"""Tests for ``licenseserver vendor keygen`` and ``licenseserver vendor issue``."""

from __future__ import annotations

import datetime
import io
import os
import stat
import sys
from pathlib import Path

from twisted.trial import unittest

from licenseserver import cli, signing


class VendorCommandTestCase(unittest.TestCase):
    """Runs ``licenseserver`` commands in a temporary directory."""

    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        """Run the tool with ``argv``; return status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def assertOneLineError(self, result: tuple[int, str, str], *message_parts: str):
        """The command failed with status 1, one line on stderr, nothing on
        stdout."""
        status, out, err = result
        self.assertEqual(status, 1, err)
        self.assertEqual(out, "")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("licenseserver: "), err)
        self.assertNotIn("Traceback", err)
        for part in message_parts:
            self.assertIn(part, err)
        return err

    def files(self) -> set[str]:
        return {p.name for p in self.directory.iterdir()}


class KeygenTests(VendorCommandTestCase):
    """``licenseserver vendor keygen --out PREFIX``."""

    def test_writes_key_pair(self):
        """keygen writes PREFIX.key and PREFIX.pub and prints both paths."""
        prefix = self.directory / "acme"
        status, out, err = self.run_cli("vendor", "keygen", "--out", str(prefix))
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines(), [f"{prefix}.key", f"{prefix}.pub"])
        private_key = signing.load_private_key(f"{prefix}.key")
        public_key = signing.load_public_key(f"{prefix}.pub")
        self.assertEqual(signing.key_id(private_key.public_key()), signing.key_id(public_key))

    def test_private_key_mode(self):
        """The private key that keygen writes has mode 0600."""
        prefix = self.directory / "acme"
        self.run_cli("vendor", "keygen", "--out", str(prefix))
        mode = stat.S_IMODE(os.stat(f"{prefix}.key").st_mode)
        self.assertEqual(mode, 0o600)

    def test_refuses_to_overwrite(self):
        """keygen over an existing key fails in one line and keeps the old key."""
        prefix = self.directory / "acme"
        self.run_cli("vendor", "keygen", "--out", str(prefix))
        before = Path(f"{prefix}.key").read_bytes()
        result = self.run_cli("vendor", "keygen", "--out", str(prefix))
        self.assertOneLineError(result, "already exists")
        self.assertEqual(Path(f"{prefix}.key").read_bytes(), before)

    def test_missing_directory(self):
        """keygen into a missing directory fails in one line, writing nothing."""
        prefix = self.directory / "absent" / "acme"
        result = self.run_cli("vendor", "keygen", "--out", str(prefix))
        self.assertOneLineError(result, "cannot write")
        self.assertEqual(self.files(), set())

    def test_missing_out(self):
        """keygen without --out is a one-line usage error with status 2."""
        status, out, err = self.run_cli("vendor", "keygen")
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("--out", err)


class IssueTests(VendorCommandTestCase):
    """``licenseserver vendor issue ...``."""

    def setUp(self):
        super().setUp()
        self.private_path, self.public_path = signing.generate_keypair(self.directory / "acme")
        self.trusted = signing.load_trusted_keys([self.public_path])
        self.out = self.directory / "license.json"

    def issue(self, *extra: str, key: Path | None = None) -> tuple[int, str, str]:
        """Run ``vendor issue`` with a key and output file plus ``extra``."""
        return self.run_cli(
            "vendor",
            "issue",
            "--key",
            str(key or self.private_path),
            "--out",
            str(self.out),
            *extra,
        )

    def assertNothingWritten(self):
        self.assertFalse(self.out.exists())
        self.assertEqual(self.files(), {"acme.key", "acme.pub"})

    def test_issue_concurrent(self):
        """issue writes a verifiable license file and prints the license id."""
        status, out, err = self.issue(
            "--product",
            "CAD Pro",
            "--kind",
            "concurrent",
            "--seats",
            "10",
            "--edition",
            "Enterprise",
            "--licensee",
            "Acme GmbH",
            "--starts",
            "2024-04-01",
            "--expires",
            "2025-03-31",
            "--max-version",
            "2024r2",
        )
        self.assertEqual((status, err), (0, ""))
        [license] = signing.verify_licenses(self.out.read_bytes(), self.trusted)
        self.assertEqual(out, f"{license.id}\n")
        self.assertRegex(license.id, r"^L-[0-9]{4}-[0-9A-F]{8}$")
        self.assertEqual(
            (license.product, license.kind, license.seats, license.cores),
            ("CAD Pro", "concurrent", 10, 0),
        )
        self.assertEqual((license.edition, license.licensee), ("Enterprise", "Acme GmbH"))
        self.assertEqual(
            (license.starts, license.expires, license.max_version),
            ("2024-04-01", "2025-03-31", "2024r2"),
        )

    def test_issue_core(self):
        """A core license gets its cores per machine."""
        status, out, err = self.issue(
            "--product", "Solver", "--kind", "core", "--seats", "2", "--cores", "16"
        )
        self.assertEqual((status, err), (0, ""))
        [license] = signing.verify_licenses(self.out.read_bytes(), self.trusted)
        self.assertEqual(out, f"{license.id}\n")
        self.assertEqual((license.kind, license.seats, license.cores), ("core", 2, 16))

    def test_issue_installed_minimal(self):
        """Only product, kind and seats are needed; the rest take defaults."""
        status, out, err = self.issue("--product", "Viewer", "--kind", "installed", "--seats", "1")
        self.assertEqual((status, err), (0, ""))
        [license] = signing.verify_licenses(self.out.read_bytes(), self.trusted)
        today = datetime.datetime.now(datetime.UTC).date()
        self.assertLessEqual(abs(datetime.date.fromisoformat(license.issued) - today).days, 1)
        self.assertEqual(out, f"{license.id}\n")
        self.assertEqual(
            (license.starts, license.expires, license.max_version), (None, None, None)
        )

    def test_issue_with_id(self):
        """--id gives the license the vendor's own id."""
        status, out, err = self.issue(
            "--id",
            "ACME-0042",
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "3",
        )
        self.assertEqual((status, out, err), (0, "ACME-0042\n", ""))
        [license] = signing.verify_licenses(self.out.read_bytes(), self.trusted)
        self.assertEqual(license.id, "ACME-0042")

    def issueTenSeats(self, *options: str) -> tuple[int, str, str]:
        """Issue a 10-seat concurrent license of CAD with ``options``."""
        return self.issue("--product", "CAD", "--kind", "concurrent", "--seats", "10", *options)

    def test_issue_failover_terms(self):
        """--failover-policy and --failover-share are signed into the license."""
        cases = [
            (("--failover-policy", "exact", "--failover-share", "20%"), ("exact", "20%")),
            (("--failover-policy", "exact", "--failover-share", "3"), ("exact", "3")),
            (("--failover-policy", "exact"), ("exact", None)),
            (("--failover-policy", "full"), ("full", None)),
        ]
        for number, (options, terms) in enumerate(cases):
            self.out = self.directory / f"license-{number}.json"
            status, out, err = self.issueTenSeats(*options)
            self.assertEqual((status, err), (0, ""))
            [license] = signing.verify_licenses(self.out.read_bytes(), self.trusted)
            self.assertEqual((license.failover_policy, license.failover_share), terms)

    def test_issue_without_failover_terms(self):
        """Without the options the license file has no failover terms at all."""
        status, out, err = self.issue("--product", "CAD", "--kind", "concurrent", "--seats", "2")
        self.assertEqual((status, err), (0, ""))
        self.assertNotIn(b"failover", self.out.read_bytes())

    def test_failover_share_without_exact(self):
        """A share without --failover-policy exact is one line; nothing is written."""
        for policy in ((), ("--failover-policy", "full")):
            result = self.issueTenSeats(*policy, "--failover-share", "2")
            self.assertOneLineError(result, "only with failover_policy exact")
            self.assertNothingWritten()

    def test_bad_failover_share(self):
        """A share above 100% or above the seats is one line; nothing is written."""
        for share in ("120%", "11", "-1", "a fifth"):
            result = self.issueTenSeats("--failover-policy", "exact", "--failover-share", share)
            self.assertOneLineError(result, "failover_share must be", "from 0 to 10")
            self.assertNothingWritten()

    def test_bad_failover_policy(self):
        """A policy other than full or exact is a usage error with status 2."""
        status, out, err = self.issueTenSeats("--failover-policy", "strict")
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("--failover-policy", err)
        self.assertNothingWritten()

    def test_missing_key_file(self):
        """A missing key file is one line naming the file; nothing is written."""
        missing = self.directory / "absent.key"
        result = self.issue(
            "--product", "CAD", "--kind", "concurrent", "--seats", "3", key=missing
        )
        self.assertOneLineError(result, str(missing), "does not exist")
        self.assertNothingWritten()

    def test_public_key_as_key(self):
        """Giving the .pub file as --key says it is a public key."""
        result = self.issue(
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "3",
            key=self.public_path,
        )
        self.assertOneLineError(result, "public key")
        self.assertNothingWritten()

    def test_garbage_key(self):
        """A key file that is not a key is one line; nothing is written."""
        garbage = self.directory / "garbage.key"
        garbage.write_text("hello\n")
        result = self.issue(
            "--product", "CAD", "--kind", "concurrent", "--seats", "3", key=garbage
        )
        self.assertOneLineError(result, "not a PEM private key")
        self.assertFalse(self.out.exists())

    def test_bad_kind(self):
        """An unknown kind is one line listing the kinds; nothing is written."""
        result = self.issue("--product", "CAD", "--kind", "site", "--seats", "3")
        self.assertOneLineError(result, "concurrent, installed, core", "'site'")
        self.assertNothingWritten()

    def test_bad_date(self):
        """An impossible date is one line naming the option; nothing is written."""
        result = self.issue(
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "3",
            "--expires",
            "2025-02-30",
        )
        self.assertOneLineError(result, "expires", "2025-02-30")
        self.assertNothingWritten()

    def test_badly_written_date(self):
        """A date not written YYYY-MM-DD is one line; nothing is written."""
        result = self.issue(
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "3",
            "--starts",
            "1/4/2024",
        )
        self.assertOneLineError(result, "starts", "YYYY-MM-DD")
        self.assertNothingWritten()

    def test_starts_after_expires(self):
        """A start after the expiry is one line; nothing is written."""
        result = self.issue(
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "3",
            "--starts",
            "2025-01-01",
            "--expires",
            "2024-12-31",
        )
        self.assertOneLineError(result, "after")
        self.assertNothingWritten()

    def test_seats_below_one(self):
        """Zero seats is one line; nothing is written."""
        result = self.issue("--product", "CAD", "--kind", "concurrent", "--seats", "0")
        self.assertOneLineError(result, "seats")
        self.assertNothingWritten()

    def test_core_without_cores(self):
        """A core license without --cores is one line; nothing is written."""
        result = self.issue("--product", "CAD", "--kind", "core", "--seats", "2")
        self.assertOneLineError(result, "cores")
        self.assertNothingWritten()

    def test_cores_on_concurrent(self):
        """--cores on a concurrent license is one line; nothing is written."""
        result = self.issue(
            "--product", "CAD", "--kind", "concurrent", "--seats", "2", "--cores", "4"
        )
        self.assertOneLineError(result, "cores must be 0")
        self.assertNothingWritten()

    def test_bad_max_version(self):
        """A max version that is no product version is one line."""
        result = self.issue(
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "2",
            "--max-version",
            "newest",
        )
        self.assertOneLineError(result, "max_version", "newest")
        self.assertNothingWritten()

    def test_bad_product(self):
        """An empty product name is one line; nothing is written."""
        result = self.issue("--product", "", "--kind", "concurrent", "--seats", "2")
        self.assertOneLineError(result, "product")
        self.assertNothingWritten()

    def test_bad_id(self):
        """An id with spaces is one line; nothing is written."""
        result = self.issue(
            "--id",
            "my license",
            "--product",
            "CAD",
            "--kind",
            "concurrent",
            "--seats",
            "2",
        )
        self.assertOneLineError(result, "id must be")
        self.assertNothingWritten()

    def test_refuses_to_overwrite(self):
        """An existing output file is kept and the command fails in one line."""
        self.out.write_text("an older license file")
        result = self.issue("--product", "CAD", "--kind", "concurrent", "--seats", "2")
        self.assertOneLineError(result, "already exists")
        self.assertEqual(self.out.read_text(), "an older license file")

    def test_missing_output_directory(self):
        """An output file in a missing directory is one line."""
        self.out = self.directory / "absent" / "license.json"
        result = self.issue("--product", "CAD", "--kind", "concurrent", "--seats", "2")
        self.assertOneLineError(result, "cannot write")
        self.assertNothingWritten()

    def test_seats_not_a_number(self):
        """Seats that are no number is a one-line usage error with status 2."""
        status, out, err = self.issue(
            "--product", "CAD", "--kind", "concurrent", "--seats", "many"
        )
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("--seats", err)
        self.assertNothingWritten()
