"""Vendor keys trusted at run time: added by the admin, audited, synced to the failover."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.logger import capturedLogs, formatEvent

from licenseserver import signing
from licenseserver.roles.admin import VENDOR_KEYS, AdminError
from licenseserver.testing import FakeStore
from tests.helpers import licenseFile, makeRole, run
from tests.test_failover import PairTestCase
from tests.test_tap_startup import StartupTestCase
from tests.test_web_http import WebTestCase

OTHER_VENDOR = Ed25519PrivateKey.generate()
OTHER_PEM = signing.public_key_pem(OTHER_VENDOR.public_key()).encode()
OTHER_ID = signing.key_id(OTHER_VENDOR.public_key())


def otherLicense(id: str = "L-OTHER") -> bytes:
    """A license file signed by a vendor key the servers do not trust at start."""
    lic = signing.issue_license(
        OTHER_VENDOR, product="MapForce", kind="concurrent", seats=2, id=id, issued="2026-01-01"
    )
    return signing.dump_licenses([lic])


class RoleTests(PairTestCase):
    def test_untrustedSaysHowToTrust(self):
        """A license of an unknown key is refused naming the key and how to trust it."""
        failure = self.failureResultOf(run(self.primary.addLicenses(otherLicense())), AdminError)
        self.assertEqual((failure.value.status, failure.value.reason), (400, "untrusted"))
        self.assertIn(f"vendor key {OTHER_ID}", failure.value.message)
        self.assertIn("Settings tab or with POST /api/vendor-keys", failure.value.message)

    def test_addedKeyTrustedAtOnce(self):
        """An added key is trusted without a restart, audited, in Messages and listed."""
        self.assertEqual(self.ok(self.primary.addVendorKey(OTHER_PEM)), (OTHER_ID, True))
        self.assertEqual(self.ok(self.primary.addLicenses(otherLicense())), ["L-OTHER"])
        self.assertIn(
            {"id": OTHER_ID, "source": "added"}, self.primary.vendorKeys(), "listed as added"
        )
        kinds = [row[2] for row in self.primaryStore.auditRows]
        self.assertIn("vendor-key-added", kinds)
        events = self.successResultOf(self.primaryStore.events(10))
        self.assertIn(f"vendor key {OTHER_ID} is trusted now", [e.message for e in events])

    def test_addedAgainChangesNothing(self):
        """A key trusted already, added or configured, is no change."""
        self.ok(self.primary.addVendorKey(OTHER_PEM))
        revision = self.primary.pool.revision
        self.assertEqual(self.ok(self.primary.addVendorKey(OTHER_PEM)), (OTHER_ID, False))
        configured = next(iter(self.primary.configuredKeys.values()))
        pem = signing.public_key_pem(configured).encode()
        self.assertFalse(self.ok(self.primary.addVendorKey(pem))[1])
        self.assertEqual(self.primary.pool.revision, revision)

    def test_badKeys(self):
        """Anything but an Ed25519 public key in PEM is a 400 that says what it is."""
        cases = {
            b"": "not a PEM public key",
            b"hello": "not a PEM public key",
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n": "a private key",
        }
        for data, message in cases.items():
            failure = self.failureResultOf(run(self.primary.addVendorKey(data)), AdminError)
            self.assertEqual(failure.value.status, 400)
            self.assertIn(message, failure.value.message)
        self.assertNotIn(VENDOR_KEYS, self.primary.settings())

    def test_notASetting(self):
        """The added keys are not a setting the settings API lists or takes."""
        self.ok(self.primary.addVendorKey(OTHER_PEM))
        self.assertNotIn(VENDOR_KEYS, self.primary.settings())
        failure = self.failureResultOf(
            run(self.primary.updateSettings({VENDOR_KEYS: {}})), AdminError
        )
        self.assertIn("unknown setting", failure.value.message)

    def test_syncedToTheFailover(self):
        """The failover trusts an added key after the next sync, and serves its licenses
        once it takes over."""
        self.ok(self.primary.addVendorKey(OTHER_PEM))
        self.ok(self.primary.addLicenses(otherLicense()))
        self.beat()
        self.assertMirrors()
        self.assertIn(OTHER_ID, self.failover.trustedKeys)
        self.assertIn({"id": OTHER_ID, "source": "added"}, self.failover.vendorKeys())

    def test_standbyRefuses(self):
        """A standby failover takes no key: add it on the primary."""
        failure = self.failureResultOf(run(self.failover.addVendorKey(OTHER_PEM)), AdminError)
        self.assertEqual(failure.value.status, 409)
        self.assertIn("make this change on the primary", failure.value.message)

    def test_survivesRestart(self):
        """An added key is trusted after a restart (it is in the store)."""
        store = FakeStore()
        role = makeRole(store)
        self.successResultOf(run(role.addVendorKey(OTHER_PEM)))
        self.successResultOf(role.stopService())
        again = makeRole(store)
        self.addCleanup(again.stopService)
        self.assertIn(OTHER_ID, again.trustedKeys)


class APITests(WebTestCase):
    def test_postAndList(self):
        """POST /api/vendor-keys takes the PEM (any content type): 201 with its id, 200 when
        trusted already; GET lists every trusted key; a license it signed is taken."""
        response = self.api("POST", "/api/vendor-keys", OTHER_PEM)
        self.assertEqual((response.status, json.loads(response.body)), (201, {"id": OTHER_ID}))
        again = self.api("POST", "/api/vendor-keys", OTHER_PEM)
        self.assertEqual(again.status, 200)
        self.assertTrue(json.loads(again.body)["trusted_already"])
        keys = json.loads(self.api("GET", "/api/vendor-keys").body)
        self.assertIn({"id": OTHER_ID, "source": "added"}, keys)
        self.assertEqual([k["source"] for k in keys].count("configured"), 1)
        self.assertEqual(self.api("POST", "/api/licenses", otherLicense()).status, 201)

    def test_postBadKey(self):
        """Anything else is 400 with a JSON reason."""
        response = self.api("POST", "/api/vendor-keys", licenseFile({}))
        self.assertEqual(response.status, 400)
        self.assertIn("not a PEM public key", json.loads(response.body)["error"])

    def test_pageSection(self):
        """The Settings tab lists the keys and trusts an uploaded key file."""
        self.login()
        csrf = self.token("/settings")
        page = self.get("/settings")
        self.assertIn('id="vendor-keys"', page.body)
        self.assertNotIn(OTHER_ID, page.body)
        response = self.upload(
            "/settings", {"csrf": csrf, "action": "vendor-key"}, [OTHER_PEM], field="keyfile"
        )
        self.assertRedirect(response, "/settings")
        page = self.get("/settings")
        self.assertIn(f"Vendor key {OTHER_ID} is trusted now", page.body)
        self.assertIn(f'<code class="mono">{OTHER_ID}</code>', page.body)
        self.assertIn(OTHER_ID, self.role.trustedKeys)


class StartLogTests(StartupTestCase):
    def test_trustedKeysLogged(self):
        """At start the log names the trusted keys and where they came from, or says how
        to add one when there is none."""
        key, public = self.vendorKey()
        with capturedLogs() as events:
            self.start(Path(self.mktemp()), "--vendor-key", str(public))
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn(
            f"Trusting vendor keys {signing.key_id(key.public_key())} (from --vendor-key)", text
        )
        with capturedLogs() as events:
            self.start(Path(self.mktemp()))
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("No trusted vendor key at start: add the vendor's public key", text)
        self.assertIn("POST /api/vendor-keys", text)
