"""Tests for what ``tap.makeService`` does with a start's options and data directory.

Options parsing is tested in ``test_tap``; these tests check that the server
that makeService builds uses what it was given: the vendor keys it trusts,
and the first-start admin password it reports in the log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from licenseserver import signing, tap
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.switch import RoleSwitch

FAILOVER = ["--role", "failover", "--primary", "ls0.example.com:35355"]


class StartupTestCase(unittest.TestCase):
    def start(self, data: Path, *argv: str) -> Any:
        """The service tree of a server on ``data``; its directory lock is released at once."""
        options = tap.Options()
        options.parseOptions(["--data", str(data), "--port", "tcp:0", "--web", "tcp:0", *argv])
        top = tap.makeService(options, MemoryReactorClock())
        os.close(top.dataLock)
        return top

    def role(self, top: Any) -> Any:
        """The role that the RoleSwitch of ``top`` runs."""
        (switch,) = [s for s in IService(top) if isinstance(s, RoleSwitch)]
        return switch.current

    def vendorKey(self) -> tuple[Any, Path]:
        """A new vendor key pair outside any data directory: (private key, public key file)."""
        directory = Path(self.mktemp())
        directory.mkdir()
        private, public = signing.generate_keypair(directory / "vendor")
        return signing.load_private_key(private), public


def signedBy(key: Any) -> bytes:
    """A license file of one license signed by ``key``."""
    lic = signing.issue_license(
        key, product="XMLSpy", kind="concurrent", seats=5, issued="2026-01-01"
    )
    return signing.dump_licenses([lic])


class VendorKeyTests(StartupTestCase):
    def test_vendorKeyIsTrusted(self):
        """The role of a server started with --vendor-key accepts licenses signed by that key.

        Both roles are checked: a primary adds the licenses, a failover that
        takes over must accept the same ones.
        """
        key, public = self.vendorKey()
        for role_argv, cls in (([], PrimaryRole), (FAILOVER, FailoverRole)):
            role = self.role(
                self.start(Path(self.mktemp()), "--vendor-key", str(public), *role_argv)
            )
            self.assertIsInstance(role, cls)
            self.assertIn(signing.key_id(key.public_key()), role.trustedKeys)
            (lic,) = signing.verify_licenses(signedBy(key), role.trustedKeys)
            self.assertEqual(lic.product, "XMLSpy")

    def test_everyVendorKeyIsTrusted(self):
        """--vendor-key may repeat: each key given is trusted."""
        (first, firstPublic), (second, secondPublic) = self.vendorKey(), self.vendorKey()
        role = self.role(
            self.start(
                Path(self.mktemp()),
                "--vendor-key",
                str(firstPublic),
                "--vendor-key",
                str(secondPublic),
            )
        )
        for key in (first, second):
            signing.verify_licenses(signedBy(key), role.trustedKeys)

    def test_withoutVendorKeyNothingIsTrusted(self):
        """Without --vendor-key and with no key in DATA/vendor-keys/, no license is accepted."""
        key, _ = self.vendorKey()
        role = self.role(self.start(Path(self.mktemp())))
        self.assertEqual(role.trustedKeys, {})
        self.assertRaises(
            signing.UntrustedKeyError, signing.verify_licenses, signedBy(key), role.trustedKeys
        )

    def test_keysInDataDirectory(self):
        """Without --vendor-key the keys in DATA/vendor-keys/ are trusted."""
        key, public = self.vendorKey()
        data = Path(self.mktemp())
        (data / "vendor-keys").mkdir(parents=True)
        (data / "vendor-keys" / "acme.pub").write_bytes(public.read_bytes())
        role = self.role(self.start(data))
        self.assertEqual(list(role.trustedKeys), [signing.key_id(key.public_key())])
        signing.verify_licenses(signedBy(key), role.trustedKeys)


class InitialPasswordTests(StartupTestCase):
    def startLogged(self, data: Path) -> list[str]:
        """Start a server on ``data``; return the text of every event it logged."""
        with capturedLogs() as events:
            self.start(data)
        return [formatEvent(event) for event in events]

    def test_passwordLoggedOnFirstStartOnly(self):
        """The first start logs the new admin password once; a later start does not log it."""
        data = Path(self.mktemp())
        first = self.startLogged(data)
        password = (data / "initial-admin-password").read_text(encoding="utf-8").strip()
        self.assertTrue(password)
        self.assertEqual(len([text for text in first if password in text]), 1, first)
        second = self.startLogged(data)
        self.assertEqual([text for text in second if password in text], [])
        self.assertEqual(
            (data / "initial-admin-password").read_text(encoding="utf-8").strip(), password
        )
