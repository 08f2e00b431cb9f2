"""Tests for licenseserver.signing: keys, terms, the license file, verification."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver import signing
from licenseserver.model import CONCURRENT, CORE, INSTALLED, LICENSE_KINDS, License


def _terms(**overrides):
    """Valid terms for ``issue_license``, with ``overrides`` applied."""
    terms = {
        "product": "CAD Pro",
        "kind": CONCURRENT,
        "seats": 5,
        "edition": "Enterprise",
        "licensee": "Acme GmbH",
        "issued": "2024-03-01",
        "starts": "2024-04-01",
        "expires": "2025-03-31",
        "max_version": "2024r2",
    }
    terms.update(overrides)
    return terms


def _edit(data: bytes, change) -> bytes:
    """Apply ``change`` to the parsed JSON of a license file; re-encode it."""
    document = json.loads(data)
    change(document)
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def _set_term(index: int, name: str, value):
    def change(document):
        document["licenses"][index]["terms"][name] = value

    return change


class KeyTests(unittest.TestCase):
    """Key pairs on disk, key ids and trusted key sets."""

    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.prefix = self.directory / "vendor"

    def test_keypair_files(self):
        """generate_keypair writes PREFIX.key and PREFIX.pub and returns them."""
        private_path, public_path = signing.generate_keypair(self.prefix)
        self.assertEqual(private_path, self.directory / "vendor.key")
        self.assertEqual(public_path, self.directory / "vendor.pub")
        self.assertIn(b"-----BEGIN PRIVATE KEY-----", private_path.read_bytes())
        self.assertIn(b"-----BEGIN PUBLIC KEY-----", public_path.read_bytes())

    def test_private_key_mode(self):
        """The private key file is readable and writable by its owner only."""
        private_path, _ = signing.generate_keypair(self.prefix)
        self.assertEqual(stat.S_IMODE(os.stat(private_path).st_mode), 0o600)

    def test_private_key_mode_despite_umask(self):
        """The private key is 0600 even under a permissive umask."""
        old = os.umask(0)
        try:
            private_path, _ = signing.generate_keypair(self.prefix)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(private_path).st_mode), 0o600)

    def test_keys_load_and_match(self):
        """The two files written load as the two halves of one key pair."""
        private_path, public_path = signing.generate_keypair(self.prefix)
        private_key = signing.load_private_key(private_path)
        public_key = signing.load_public_key(public_path)
        signature = private_key.sign(b"message")
        public_key.verify(signature, b"message")
        self.assertEqual(signing.key_id(private_key.public_key()), signing.key_id(public_key))

    def test_refuses_existing_private_key(self):
        """An existing PREFIX.key is neither overwritten nor joined by a .pub."""
        existing = self.directory / "vendor.key"
        existing.write_bytes(b"precious")
        error = self.assertRaises(signing.KeyFileError, signing.generate_keypair, self.prefix)
        self.assertIn("already exists", str(error))
        self.assertEqual(existing.read_bytes(), b"precious")
        self.assertFalse((self.directory / "vendor.pub").exists())

    def test_refuses_existing_public_key(self):
        """An existing PREFIX.pub is not overwritten and no .key is left behind."""
        existing = self.directory / "vendor.pub"
        existing.write_bytes(b"precious")
        self.assertRaises(signing.KeyFileError, signing.generate_keypair, self.prefix)
        self.assertEqual(existing.read_bytes(), b"precious")
        self.assertFalse((self.directory / "vendor.key").exists())

    def test_missing_directory(self):
        """A prefix in a missing directory is a KeyFileError, not an OSError."""
        prefix = self.directory / "nowhere" / "vendor"
        error = self.assertRaises(signing.KeyFileError, signing.generate_keypair, prefix)
        self.assertEqual(error.reason, "bad-key")

    def test_key_id(self):
        """key_id is the first 16 hex digits of SHA-256 of the raw public key."""
        public_key = Ed25519PrivateKey.generate().public_key()
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.assertEqual(signing.key_id(public_key), hashlib.sha256(raw).hexdigest()[:16])
        self.assertEqual(len(signing.key_id(public_key)), 16)

    def test_load_missing_file(self):
        """Loading a missing key file says the file does not exist."""
        path = self.directory / "absent.key"
        error = self.assertRaises(signing.KeyFileError, signing.load_private_key, path)
        self.assertIn("does not exist", str(error))
        self.assertIn(str(path), str(error))
        self.assertRaises(signing.KeyFileError, signing.load_public_key, path)

    def test_load_garbage(self):
        """A file that is not PEM is refused with a KeyFileError naming it."""
        path = self.directory / "garbage"
        path.write_bytes(b"\x00\x01 this is no key\n")
        error = self.assertRaises(signing.KeyFileError, signing.load_private_key, path)
        self.assertIn(str(path), str(error))
        self.assertRaises(signing.KeyFileError, signing.load_public_key, path)

    def test_private_key_given_public_key(self):
        """Giving the .pub file where the private key belongs says so."""
        _, public_path = signing.generate_keypair(self.prefix)
        error = self.assertRaises(signing.KeyFileError, signing.load_private_key, public_path)
        self.assertIn("public key", str(error))

    def test_public_key_given_private_key(self):
        """A private key file is not accepted as a public key."""
        private_path, _ = signing.generate_keypair(self.prefix)
        self.assertRaises(signing.KeyFileError, signing.load_public_key, private_path)

    def test_other_key_type(self):
        """A key of another algorithm is refused as not Ed25519."""
        other = ec.generate_private_key(ec.SECP256R1())
        private_path = self.directory / "ec.key"
        private_path.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public_path = self.directory / "ec.pub"
        public_path.write_bytes(
            other.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
        error = self.assertRaises(signing.KeyFileError, signing.load_private_key, private_path)
        self.assertIn("Ed25519", str(error))
        error = self.assertRaises(signing.KeyFileError, signing.load_public_key, public_path)
        self.assertIn("Ed25519", str(error))

    def test_encrypted_private_key(self):
        """An encrypted private key is refused with a message that says so."""
        path = self.directory / "locked.key"
        path.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        error = self.assertRaises(signing.KeyFileError, signing.load_private_key, path)
        self.assertIn("encrypted", str(error))

    def test_load_trusted_keys(self):
        """load_trusted_keys maps each file's key id to its key."""
        _, first = signing.generate_keypair(self.directory / "a")
        _, second = signing.generate_keypair(self.directory / "b")
        keys = signing.load_trusted_keys([first, second, first])
        self.assertEqual(
            set(keys),
            {
                signing.key_id(signing.load_public_key(first)),
                signing.key_id(signing.load_public_key(second)),
            },
        )
        for name, key in keys.items():
            self.assertEqual(signing.key_id(key), name)

    def test_load_trusted_keys_bad_file(self):
        """One unreadable key file makes load_trusted_keys fail."""
        _, good = signing.generate_keypair(self.directory / "a")
        bad = self.directory / "bad.pub"
        bad.write_text("nonsense")
        self.assertRaises(signing.KeyFileError, signing.load_trusted_keys, [good, bad])

    def test_trusted_keys_in_dir(self):
        """trusted_keys_in_dir reads the *.pub files and ignores other files."""
        signing.generate_keypair(self.directory / "a")
        signing.generate_keypair(self.directory / "b")
        (self.directory / "notes.txt").write_text("not a key")
        keys = signing.trusted_keys_in_dir(self.directory)
        self.assertEqual(len(keys), 2)

    def test_trusted_keys_in_missing_dir(self):
        """A missing key directory trusts no key."""
        self.assertEqual(signing.trusted_keys_in_dir(self.directory / "absent"), {})


class CanonicalTests(unittest.TestCase):
    """The byte encoding that signatures cover."""

    def test_key_order_does_not_matter(self):
        """The same terms in any key order encode to the same bytes."""
        terms = signing.terms_of(signing.issue_license(Ed25519PrivateKey.generate(), **_terms()))
        reordered = dict(reversed(list(terms.items())))
        self.assertNotEqual(list(terms), list(reordered))
        self.assertEqual(signing.canonical_terms(terms), signing.canonical_terms(reordered))

    def test_layout(self):
        """The encoding is the domain line, then compact sorted UTF-8 JSON."""
        encoded = signing.canonical_terms({"b": 1, "a": "Zürich", "c": None})
        self.assertEqual(
            encoded,
            b"licenseserver-license-v1\n" + '{"a":"Zürich","b":1,"c":null}'.encode(),
        )

    def test_signature_independent_of_file_layout(self):
        """A license file re-indented with other key order still verifies."""
        private_key = Ed25519PrivateKey.generate()
        trusted = {signing.key_id(private_key.public_key()): private_key.public_key()}
        data = signing.dump_licenses([signing.issue_license(private_key, **_terms())])
        document = json.loads(data)
        relaid = json.dumps(document, sort_keys=True).encode("ascii")
        self.assertEqual(
            signing.verify_licenses(relaid, trusted),
            signing.verify_licenses(data, trusted),
        )

    def test_domain_separation(self):
        """A signature of the bare JSON, without the domain line, is refused."""
        private_key = Ed25519PrivateKey.generate()
        terms = signing.terms_of(signing.issue_license(private_key, **_terms()))
        bare = signing.canonical_terms(terms)[len(signing.DOMAIN) :]
        signature = base64.b64encode(private_key.sign(bare)).decode()
        self.assertFalse(signing.signature_matches(private_key.public_key(), terms, signature))


_FIXED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
"""A vendor key fixed for good: Ed25519 signatures are deterministic, so the
signatures below are pinned bytes too."""

_PINNED_TERMS = {
    "id": "L-2024-0000CAFE",
    "product": "CAD Pro",
    "kind": CONCURRENT,
    "seats": 10,
    "edition": "Enterprise",
    "licensee": "Acme GmbH, Zürich",
    "issued": "2024-03-01",
    "starts": "2024-04-01",
    "expires": "2025-03-31",
    "max_version": "2024r2",
}


class OptionalTermsTests(unittest.TestCase):
    """failover_policy and failover_share: signed when the vendor sets them, absent otherwise."""

    def test_old_canonical_bytes_unchanged(self):
        """A license without the optional terms signs the very bytes it signed before
        they existed, so every license already issued keeps verifying."""
        license = signing.issue_license(_FIXED_KEY, **_PINNED_TERMS)
        self.assertEqual(
            signing.canonical_terms(signing.terms_of(license)),
            b"licenseserver-license-v1\n"
            + (
                '{"cores":0,"edition":"Enterprise","expires":"2025-03-31",'
                '"id":"L-2024-0000CAFE","issued":"2024-03-01","kind":"concurrent",'
                '"licensee":"Acme GmbH, Zürich","max_version":"2024r2","product":"CAD Pro",'
                '"seats":10,"starts":"2024-04-01"}'
            ).encode(),
        )
        self.assertEqual(
            license.signature,
            "hjZK7KTwtTBQPWxElLUB+CVmU9FRIK5QBvanR64/nJLK23gO2UefIphnKsNAVyWq7mSv+r9v2R6R4FGRCQmDAw==",
        )
        document = json.loads(signing.dump_licenses([license]))
        self.assertEqual(list(document["licenses"][0]["terms"]), list(signing.TERM_FIELDS))

    def test_terms_signed(self):
        """The optional terms, when set, are in the signed bytes (in key order)."""
        license = signing.issue_license(
            _FIXED_KEY, **_PINNED_TERMS, failover_policy="exact", failover_share="20%"
        )
        self.assertIn(
            b'"expires":"2025-03-31","failover_policy":"exact","failover_share":"20%",'
            b'"id":"L-2024-0000CAFE"',
            signing.canonical_terms(signing.terms_of(license)),
        )
        self.assertEqual(
            license.signature,
            "HS2Saz2x11pGBI7t0FkIlWkCOba6lvhZjqaXY9bfJF6PP+xjJetKnMfuebbQUIX9jXbyRvQKL5xcSIwEZtBFDg==",
        )

    def test_round_trip(self):
        """A license with the optional terms verifies and keeps them; the file lists
        them after the other terms."""
        trusted = {signing.key_id(_FIXED_KEY.public_key()): _FIXED_KEY.public_key()}
        licenses = [
            signing.issue_license(
                _FIXED_KEY, **_terms(id="L-1", failover_policy="exact", failover_share="2")
            ),
            signing.issue_license(_FIXED_KEY, **_terms(id="L-2", failover_policy="exact")),
            signing.issue_license(_FIXED_KEY, **_terms(id="L-3", failover_policy="full")),
            signing.issue_license(_FIXED_KEY, **_terms(id="L-4")),
        ]
        data = signing.dump_licenses(licenses)
        verified = signing.verify_licenses(data, trusted)
        self.assertEqual(verified, licenses)
        self.assertEqual(
            [(lic.failover_policy, lic.failover_share) for lic in verified],
            [("exact", "2"), ("exact", None), ("full", None), (None, None)],
        )
        terms = json.loads(data)["licenses"][0]["terms"]
        self.assertEqual(list(terms), [*signing.TERM_FIELDS, "failover_policy", "failover_share"])
        self.assertNotIn("failover_share", json.loads(data)["licenses"][1]["terms"])

    def test_tampered_terms(self):
        """Changing, adding or removing an optional term is refused as tampered."""
        trusted = {signing.key_id(_FIXED_KEY.public_key()): _FIXED_KEY.public_key()}
        exact = signing.dump_licenses(
            [
                signing.issue_license(
                    _FIXED_KEY, **_terms(failover_policy="exact", failover_share="2")
                )
            ]
        )
        bare = signing.dump_licenses([signing.issue_license(_FIXED_KEY, **_terms())])

        def drop_both(document):
            del document["licenses"][0]["terms"]["failover_policy"]
            del document["licenses"][0]["terms"]["failover_share"]

        def loosen(document):
            document["licenses"][0]["terms"]["failover_policy"] = "full"
            del document["licenses"][0]["terms"]["failover_share"]

        tampered = [
            _edit(exact, _set_term(0, "failover_share", "1")),
            _edit(exact, _set_term(0, "failover_share", "100%")),
            _edit(exact, drop_both),
            _edit(exact, loosen),
            _edit(bare, _set_term(0, "failover_policy", "exact")),
            _edit(bare, _set_term(0, "failover_policy", "full")),
        ]
        for data in tampered:
            error = self.assertRaises(
                signing.TamperedLicenseError, signing.verify_licenses, data, trusted
            )
            self.assertEqual(error.reason, "tampered")

    def assertRefusedAtIssue(self, message_part: str, **overrides):
        error = self.assertRaises(
            signing.LicenseFormatError,
            signing.issue_license,
            _FIXED_KEY,
            **_terms(**overrides),
        )
        self.assertIn(message_part, str(error))

    def test_bad_values_at_issue(self):
        """Bad policies and shares are refused before anything is signed."""
        self.assertRefusedAtIssue(
            "failover_policy must be full or exact", failover_policy="strict"
        )
        self.assertRefusedAtIssue("failover_policy must be full or exact", failover_policy="EXACT")
        self.assertRefusedAtIssue("only with failover_policy exact", failover_share="20%")
        self.assertRefusedAtIssue(
            "only with failover_policy exact", failover_policy="full", failover_share="20%"
        )
        for share in ("101%", "6", "-1", "2.5", "", " 20%", "20 %", "twenty", "%", "２"):
            self.assertRefusedAtIssue(
                "failover_share must be a percentage from 0% to 100% or a whole number of"
                " seats from 0 to 5",
                failover_policy="exact",
                failover_share=share,
            )
        self.assertRefusedAtIssue("written as text", failover_policy="exact", failover_share=2)

    def test_edge_values_at_issue(self):
        """0%, 100%, 0 seats and all the seats are all shares a vendor may set."""
        for share in ("0%", "100%", "0", "5"):
            license = signing.issue_license(
                _FIXED_KEY, **_terms(failover_policy="exact", failover_share=share)
            )
            self.assertEqual(license.failover_share, share)

    def test_bad_values_at_read(self):
        """A file with a bad policy or share is refused as bad-format, naming the license."""
        bare = signing.dump_licenses([signing.issue_license(_FIXED_KEY, **_terms(id="L-X"))])
        exact = signing.dump_licenses(
            [signing.issue_license(_FIXED_KEY, **_terms(id="L-X", failover_policy="exact"))]
        )
        bad = [
            (_edit(bare, _set_term(0, "failover_policy", None)), "failover_policy must be"),
            (_edit(bare, _set_term(0, "failover_policy", "none")), "failover_policy must be"),
            (_edit(bare, _set_term(0, "failover_share", "20%")), "only with failover_policy"),
            (_edit(exact, _set_term(0, "failover_share", None)), "failover_share must be"),
            (_edit(exact, _set_term(0, "failover_share", 1)), "failover_share must be"),
            (_edit(exact, _set_term(0, "failover_share", "9")), "from 0 to 5"),
            (_edit(exact, _set_term(0, "failover_share", "120%")), "failover_share must be"),
        ]
        for data, message_part in bad:
            error = self.assertRaises(signing.LicenseFormatError, signing.parse_license_file, data)
            self.assertEqual(error.reason, "bad-format")
            self.assertIn("license L-X: ", str(error))
            self.assertIn(message_part, str(error))


class IssueTests(unittest.TestCase):
    """issue_license: defaults and the checks of the terms."""

    def setUp(self):
        self.private_key = Ed25519PrivateKey.generate()

    def issue(self, **overrides) -> License:
        return signing.issue_license(self.private_key, **_terms(**overrides))

    def assertRefused(self, message_part: str, **overrides):
        error = self.assertRaises(
            signing.LicenseFormatError,
            signing.issue_license,
            self.private_key,
            **_terms(**overrides),
        )
        self.assertEqual(error.reason, "bad-format")
        self.assertIn(message_part, str(error))
        return error

    def test_terms_kept(self):
        """The issued license carries the terms given and the signing key's id."""
        license = self.issue(id="L-2024-00000001")
        self.assertEqual(license.id, "L-2024-00000001")
        self.assertEqual(license.product, "CAD Pro")
        self.assertEqual(license.edition, "Enterprise")
        self.assertEqual(license.kind, CONCURRENT)
        self.assertEqual(license.seats, 5)
        self.assertEqual(license.cores, 0)
        self.assertEqual(license.licensee, "Acme GmbH")
        self.assertEqual(license.issued, "2024-03-01")
        self.assertEqual(license.starts, "2024-04-01")
        self.assertEqual(license.expires, "2025-03-31")
        self.assertEqual(license.max_version, "2024r2")
        self.assertEqual(license.key_id, signing.key_id(self.private_key.public_key()))

    def test_default_id(self):
        """The default id is L-<year of issue>-<8 uppercase hex digits>, fresh."""
        first = self.issue()
        second = self.issue()
        self.assertRegex(first.id, r"^L-2024-[0-9A-F]{8}$")
        self.assertNotEqual(first.id, second.id)

    def test_default_issued_is_today_utc(self):
        """Without an issue date the license is issued today in UTC."""
        before = datetime.datetime.now(datetime.UTC).date().isoformat()
        license = self.issue(issued=None)
        after = datetime.datetime.now(datetime.UTC).date().isoformat()
        self.assertIn(license.issued, {before, after})
        self.assertTrue(license.id.startswith(f"L-{license.issued[:4]}-"))

    def test_optional_terms_absent(self):
        """Edition, licensee, dates and max_version may be left out."""
        license = signing.issue_license(
            self.private_key, product="Viewer", kind=INSTALLED, seats=1
        )
        self.assertEqual((license.edition, license.licensee, license.cores), ("", "", 0))
        self.assertEqual((license.starts, license.expires, license.max_version), (None,) * 3)

    def test_bad_kind(self):
        """A kind other than concurrent, installed or core is refused."""
        self.assertRefused("kind must be one of", kind="floating")

    def test_seats_below_one(self):
        """Zero or negative seats are refused."""
        self.assertRefused("seats", seats=0)
        self.assertRefused("seats", seats=-3)

    def test_seats_above_limit(self):
        """Seat counts above MAX_COUNT are refused."""
        self.assertRefused("at most", seats=signing.MAX_COUNT + 1)
        self.assertEqual(self.issue(seats=signing.MAX_COUNT).seats, signing.MAX_COUNT)

    def test_seats_not_integer(self):
        """Seats must be a whole number, not text, a float or a bool."""
        self.assertRefused("seats", seats="5")
        self.assertRefused("seats", seats=5.0)
        self.assertRefused("seats", seats=True)

    def test_core_needs_cores(self):
        """A core license without cores, or with 0, is refused."""
        self.assertRefused("core license needs cores", kind=CORE)
        self.assertRefused("core license needs cores", kind=CORE, cores=0)

    def test_core_with_cores(self):
        """A core license keeps its cores per machine."""
        self.assertEqual(self.issue(kind=CORE, cores=16).cores, 16)

    def test_cores_only_for_core(self):
        """Cores on a concurrent or installed license are refused."""
        self.assertRefused("cores must be 0", kind=CONCURRENT, cores=4)
        self.assertRefused("cores must be 0", kind=INSTALLED, cores=4)

    def test_bad_dates(self):
        """Dates must be real calendar dates written YYYY-MM-DD."""
        self.assertRefused("expires must be a real date", expires="2025-02-30")
        self.assertRefused("starts must be a real date", starts="2024-4-1")
        self.assertRefused("issued must be a real date", issued="yesterday")
        self.assertRefused("expires must be a real date", expires="20250331")
        self.assertRefused("starts must be a real date", starts="２０２４-04-01")

    def test_starts_after_expires(self):
        """A license that would start after it expires is refused."""
        self.assertRefused("is after expires", starts="2025-04-01")

    def test_same_day_start_and_expiry(self):
        """A license may start and expire on the same day."""
        license = self.issue(starts="2025-03-31", expires="2025-03-31")
        self.assertEqual(license.starts, license.expires)

    def test_bad_max_version(self):
        """max_version must be a product version."""
        self.assertRefused("max_version", max_version="latest")

    def test_bad_product(self):
        """The product must be non-empty printable text without outer spaces."""
        self.assertRefused("product must not be empty", product="")
        self.assertRefused("white space", product=" CAD")
        self.assertRefused("unprintable", product="CAD\nPro")
        self.assertRefused("product must be text", product=None)

    def test_bad_id(self):
        """Ids are short words of letters, digits, '.', '_' and '-'."""
        self.assertRefused("id must be", id="")
        self.assertRefused("id must be", id="L 1")
        self.assertRefused("id must be", id="../etc")

    def test_unicode_terms(self):
        """Non-ASCII licensee text is kept and signs like any other."""
        license = self.issue(licensee="Société Générale – Zürich")
        trusted = {license.key_id: self.private_key.public_key()}
        data = signing.dump_licenses([license])
        self.assertIn("Société Générale – Zürich".encode(), data)
        [verified] = signing.verify_licenses(data, trusted)
        self.assertEqual(verified.licensee, "Société Générale – Zürich")


class FileTests(unittest.TestCase):
    """The license file: dump, parse, and verify round trips."""

    def setUp(self):
        self.private_key = Ed25519PrivateKey.generate()
        self.trusted = {
            signing.key_id(self.private_key.public_key()): self.private_key.public_key()
        }

    def issue(self, **overrides) -> License:
        return signing.issue_license(self.private_key, **_terms(**overrides))

    def test_round_trip_each_kind(self):
        """A license of each kind comes back from its file with the same terms."""
        for kind in LICENSE_KINDS:
            license = self.issue(kind=kind, cores=8 if kind == CORE else 0)
            [verified] = signing.verify_licenses(signing.dump_licenses([license]), self.trusted)
            self.assertEqual(verified, license)

    def test_verified_pool_state(self):
        """Verified licenses are active and not yet added to a pool."""
        license = self.issue()
        license = License(
            **signing.terms_of(license),
            key_id=license.key_id,
            signature=license.signature,
            active=False,
            added=12345,
        )
        [verified] = signing.verify_licenses(signing.dump_licenses([license]), self.trusted)
        self.assertTrue(verified.active)
        self.assertEqual(verified.added, 0)

    def test_several_licenses(self):
        """One file holds several licenses, returned in file order."""
        licenses = [
            self.issue(kind=CONCURRENT, product="CAD Pro"),
            self.issue(kind=INSTALLED, product="Viewer", seats=50),
            self.issue(kind=CORE, product="Solver", cores=32, seats=2),
        ]
        verified = signing.verify_licenses(signing.dump_licenses(licenses), self.trusted)
        self.assertEqual(verified, licenses)

    def test_several_vendor_keys(self):
        """Licenses signed by different trusted keys verify in one file."""
        other = Ed25519PrivateKey.generate()
        trusted = dict(self.trusted)
        trusted[signing.key_id(other.public_key())] = other.public_key()
        licenses = [self.issue(), signing.issue_license(other, **_terms())]
        self.assertEqual(
            signing.verify_licenses(signing.dump_licenses(licenses), trusted),
            licenses,
        )

    def test_file_layout(self):
        """The file is indented JSON with the format tag and one entry each."""
        license = self.issue()
        data = signing.dump_licenses([license])
        self.assertTrue(data.startswith(b'{\n  "format": "licenseserver-licenses/1"'))
        document = json.loads(data)
        self.assertEqual(set(document), {"format", "licenses"})
        [entry] = document["licenses"]
        self.assertEqual(set(entry), {"terms", "key_id", "signature"})
        self.assertEqual(list(entry["terms"]), list(signing.TERM_FIELDS))
        self.assertEqual(entry["terms"]["seats"], 5)
        self.assertNotIn("active", entry["terms"])

    def test_parse_without_verifying(self):
        """parse_license_file reads licenses without checking signatures."""
        data = _edit(signing.dump_licenses([self.issue()]), _set_term(0, "seats", 500))
        [license] = signing.parse_license_file(data)
        self.assertEqual(license.seats, 500)

    def test_parse_unsigned(self):
        """An entry without signature fields parses with empty ones."""

        def strip(document):
            del document["licenses"][0]["key_id"]
            del document["licenses"][0]["signature"]

        data = _edit(signing.dump_licenses([self.issue()]), strip)
        [license] = signing.parse_license_file(data)
        self.assertEqual((license.key_id, license.signature), ("", ""))

    def test_dump_refuses_empty(self):
        """dump_licenses will not write a file with no license."""
        self.assertRaises(signing.LicenseFormatError, signing.dump_licenses, [])

    def test_dump_refuses_duplicate_ids(self):
        """dump_licenses will not write one id twice."""
        license = self.issue()
        self.assertRaises(signing.LicenseFormatError, signing.dump_licenses, [license, license])

    def test_byte_order_mark(self):
        """A file saved with a UTF-8 byte order mark is still read."""
        data = b"\xef\xbb\xbf" + signing.dump_licenses([self.issue()])
        self.assertEqual(len(signing.verify_licenses(data, self.trusted)), 1)


class DocumentationTests(unittest.TestCase):
    """docs/licenses.md stays true to the code."""

    def setUp(self):
        path = Path(__file__).parent.parent / "docs" / "licenses.md"
        self.text = path.read_text(encoding="utf-8")

    def block(self, opening: str) -> str:
        """The first fenced block whose text starts with ``opening``."""
        for part in self.text.split("```")[1::2]:
            body = part.split("\n", 1)[1]
            if body.startswith(opening):
                return body
        self.fail(f"no block starting {opening!r}")

    def test_example_verifies(self):
        """The example license file verifies under the example public key."""
        data = self.block("{").encode("utf-8")
        public_path = Path(self.mktemp())
        public_path.write_text(self.block("-----BEGIN PUBLIC KEY-----"))
        trusted = signing.load_trusted_keys([public_path])
        self.assertEqual(list(trusted), ["cd2d2ff51d5502b2"])
        licenses = signing.verify_licenses(data, trusted)
        self.assertEqual(
            [license.id for license in licenses],
            ["L-2024-3F9A61C2", "L-2024-B07E44D9"],
        )

    def test_example_signed_bytes(self):
        """The documented signed bytes are canonical_terms of the example."""
        [_, core] = signing.parse_license_file(self.block("{").encode("utf-8"))
        self.assertEqual(
            self.block("licenseserver-license-v1\n").encode("utf-8"),
            signing.canonical_terms(signing.terms_of(core)) + b"\n",
        )


class VerifyFailureTests(unittest.TestCase):
    """Every way a license file is refused, with its reason and message."""

    def setUp(self):
        self.private_key = Ed25519PrivateKey.generate()
        self.trusted = {
            signing.key_id(self.private_key.public_key()): self.private_key.public_key()
        }
        self.licenses = [
            signing.issue_license(
                self.private_key, **_terms(id="L-2024-AAAAAAAA", product="CAD Pro")
            ),
            signing.issue_license(
                self.private_key,
                **_terms(id="L-2024-BBBBBBBB", product="Solver", kind=CORE, cores=8),
            ),
        ]
        self.data = signing.dump_licenses(self.licenses)

    def assertRefused(self, data: bytes, error_type, reason: str, *message_parts):
        error = self.assertRaises(error_type, signing.verify_licenses, data, self.trusted)
        self.assertIsInstance(error, signing.LicenseError)
        self.assertIsInstance(error, ValueError)
        self.assertEqual(error.reason, reason)
        for part in message_parts:
            self.assertIn(part, str(error))
        return error

    def test_good_file(self):
        """The unchanged file verifies (the baseline of the tests below)."""
        self.assertEqual(signing.verify_licenses(self.data, self.trusted), self.licenses)

    def test_tampered_seats(self):
        """A seat count raised in the file is refused as tampered."""
        data = _edit(self.data, _set_term(1, "seats", 9))
        error = self.assertRefused(
            data, signing.TamperedLicenseError, "tampered", "L-2024-BBBBBBBB"
        )
        self.assertEqual(error.license_id, "L-2024-BBBBBBBB")

    def test_tampered_seats_in_text(self):
        """A seat count edited by hand in the file's text is refused."""
        data = self.data.replace(b'"seats": 5', b'"seats": 6', 1)
        self.assertNotEqual(data, self.data)
        self.assertRefused(data, signing.TamperedLicenseError, "tampered")

    def test_tampered_product(self):
        """A product name changed in the file is refused as tampered."""
        data = _edit(self.data, _set_term(0, "product", "CAD Ultimate"))
        self.assertRefused(data, signing.TamperedLicenseError, "tampered", "L-2024-AAAAAAAA")

    def test_tampered_expiry_removed(self):
        """An expiry date replaced by null is refused as tampered."""
        data = _edit(self.data, _set_term(0, "expires", None))
        self.assertRefused(data, signing.TamperedLicenseError, "tampered")

    def test_signature_moved(self):
        """A signature copied from another license does not fit its terms."""

        def swap(document):
            first, second = document["licenses"]
            first["signature"], second["signature"] = (
                second["signature"],
                first["signature"],
            )

        self.assertRefused(_edit(self.data, swap), signing.TamperedLicenseError, "tampered")

    def test_removed_signature(self):
        """A license without its signature is refused as unsigned."""

        def strip(document):
            del document["licenses"][1]["signature"]

        self.assertRefused(
            _edit(self.data, strip),
            signing.UnsignedLicenseError,
            "unsigned",
            "L-2024-BBBBBBBB",
        )

    def test_empty_signature(self):
        """An empty signature is refused as unsigned."""

        def empty(document):
            document["licenses"][0]["signature"] = ""

        self.assertRefused(_edit(self.data, empty), signing.UnsignedLicenseError, "unsigned")

    def test_removed_key_id(self):
        """A license without the id of its key is refused as unsigned."""

        def strip(document):
            del document["licenses"][0]["key_id"]

        self.assertRefused(_edit(self.data, strip), signing.UnsignedLicenseError, "unsigned")

    def test_untrusted_key(self):
        """A license signed by a key the server does not trust is refused."""
        stranger = Ed25519PrivateKey.generate()
        data = signing.dump_licenses([signing.issue_license(stranger, **_terms())])
        self.assertRefused(
            data,
            signing.UntrustedKeyError,
            "untrusted",
            signing.key_id(stranger.public_key()),
        )

    def test_untrusted_with_no_keys(self):
        """A server that trusts no key refuses every license as untrusted."""
        error = self.assertRaises(
            signing.UntrustedKeyError, signing.verify_licenses, self.data, {}
        )
        self.assertEqual(error.reason, "untrusted")

    def test_key_id_changed_to_other_trusted_key(self):
        """A license claiming another trusted key's id is refused as tampered."""
        other = Ed25519PrivateKey.generate()
        self.trusted[signing.key_id(other.public_key())] = other.public_key()

        def relabel(document):
            document["licenses"][0]["key_id"] = signing.key_id(other.public_key())

        self.assertRefused(_edit(self.data, relabel), signing.TamperedLicenseError, "tampered")

    def test_bad_json(self):
        """Text that is not JSON is refused as bad-format."""
        self.assertRefused(self.data[:-20], signing.LicenseFormatError, "bad-format", "JSON")

    def test_not_utf8(self):
        """Bytes that are not UTF-8 are refused as bad-format."""
        self.assertRefused(b"\xff\xfe{}", signing.LicenseFormatError, "bad-format")

    def test_json_not_object(self):
        """A JSON list instead of an object is refused as bad-format."""
        self.assertRefused(b"[]", signing.LicenseFormatError, "bad-format")

    def test_wrong_format_tag(self):
        """A file with another format tag is refused as bad-format."""

        def retag(document):
            document["format"] = "licenseserver-licenses/2"

        self.assertRefused(
            _edit(self.data, retag),
            signing.LicenseFormatError,
            "bad-format",
            "licenseserver-licenses/2",
        )

    def test_missing_format_tag(self):
        """A file without a format tag is refused as bad-format."""

        def untag(document):
            del document["format"]

        self.assertRefused(_edit(self.data, untag), signing.LicenseFormatError, "bad-format")

    def test_empty_list(self):
        """A file that holds no license is refused as bad-format."""
        data = json.dumps({"format": signing.FORMAT, "licenses": []}).encode()
        self.assertRefused(data, signing.LicenseFormatError, "bad-format")

    def test_licenses_not_list(self):
        """A licenses field that is not a list is refused as bad-format."""
        data = json.dumps({"format": signing.FORMAT, "licenses": {}}).encode()
        self.assertRefused(data, signing.LicenseFormatError, "bad-format")

    def test_duplicate_ids(self):
        """A file that holds one license id twice is refused as bad-format."""

        def double(document):
            document["licenses"].append(document["licenses"][0])

        self.assertRefused(
            _edit(self.data, double),
            signing.LicenseFormatError,
            "bad-format",
            "L-2024-AAAAAAAA",
            "twice",
        )

    def test_duplicate_json_keys(self):
        """A term written twice in one object is refused as bad-format."""
        data = self.data.replace(b'"seats": 5,', b'"seats": 5, "seats": 500,', 1)
        self.assertRefused(data, signing.LicenseFormatError, "bad-format", "twice")

    def test_bad_date(self):
        """An impossible date in the file is refused as bad-format."""
        data = _edit(self.data, _set_term(0, "expires", "2025-13-01"))
        self.assertRefused(
            data,
            signing.LicenseFormatError,
            "bad-format",
            "L-2024-AAAAAAAA",
            "expires",
        )

    def test_starts_after_expires(self):
        """A file whose license starts after it expires is refused as bad-format."""
        data = _edit(self.data, _set_term(0, "starts", "2026-01-01"))
        self.assertRefused(data, signing.LicenseFormatError, "bad-format", "after")

    def test_bad_kind(self):
        """An unknown kind in the file is refused as bad-format."""
        data = _edit(self.data, _set_term(0, "kind", "site"))
        self.assertRefused(data, signing.LicenseFormatError, "bad-format", "kind")

    def test_ill_typed_seats(self):
        """Seats written as text are refused as bad-format."""
        data = _edit(self.data, _set_term(0, "seats", "5"))
        self.assertRefused(data, signing.LicenseFormatError, "bad-format", "seats")

    def test_missing_term(self):
        """A license missing a term is refused as bad-format."""

        def drop(document):
            del document["licenses"][0]["terms"]["max_version"]

        self.assertRefused(
            _edit(self.data, drop),
            signing.LicenseFormatError,
            "bad-format",
            "max_version",
        )

    def test_unknown_term(self):
        """A term this version does not know is refused, not ignored."""
        data = _edit(self.data, _set_term(0, "features", ["export"]))
        self.assertRefused(data, signing.LicenseFormatError, "bad-format", "features")

    def test_unknown_entry_field(self):
        """An entry field this version does not know is refused."""

        def extra(document):
            document["licenses"][0]["comment"] = "hello"

        self.assertRefused(_edit(self.data, extra), signing.LicenseFormatError, "bad-format")

    def test_entry_not_object(self):
        """An entry that is not an object is refused, naming its position."""

        def replace(document):
            document["licenses"][1] = "L-2024-BBBBBBBB"

        self.assertRefused(
            _edit(self.data, replace),
            signing.LicenseFormatError,
            "bad-format",
            "license #2",
        )

    def test_malformed_signature(self):
        """A signature that is not base64 of 64 bytes is refused as bad-format."""

        def damage(document):
            document["licenses"][0]["signature"] = "not base64!"

        self.assertRefused(_edit(self.data, damage), signing.LicenseFormatError, "bad-format")

    def test_malformed_key_id(self):
        """A key id that is not 16 hex digits is refused as bad-format."""

        def damage(document):
            document["licenses"][0]["key_id"] = "vendor"

        self.assertRefused(_edit(self.data, damage), signing.LicenseFormatError, "bad-format")

    def test_one_bad_license_refuses_the_file(self):
        """A single tampered license refuses the whole file, good ones too."""
        good = signing.issue_license(self.private_key, **_terms(id="L-2024-CCCCCCCC"))
        document = json.loads(self.data)
        document["licenses"].insert(0, json.loads(signing.dump_licenses([good]))["licenses"][0])
        document["licenses"][2]["terms"]["seats"] = 100
        data = json.dumps(document).encode()
        self.assertRefused(data, signing.TamperedLicenseError, "tampered")

    def test_reasons(self):
        """Each error class has its stable lower-case reason token."""
        self.assertEqual(
            [
                cls.reason
                for cls in (
                    signing.LicenseFormatError,
                    signing.UnsignedLicenseError,
                    signing.UntrustedKeyError,
                    signing.TamperedLicenseError,
                    signing.KeyFileError,
                )
            ],
            ["bad-format", "unsigned", "untrusted", "tampered", "bad-key"],
        )


# Property: no change to a signed term goes unnoticed.

_PRIVATE_KEY = Ed25519PrivateKey.generate()
_TRUSTED = {signing.key_id(_PRIVATE_KEY.public_key()): _PRIVATE_KEY.public_key()}
_BASE_LICENSES = [
    signing.issue_license(_PRIVATE_KEY, **_terms(id=f"L-2024-0000000{n}", kind=kind, cores=cores))
    for n, (kind, cores) in enumerate([(CONCURRENT, 0), (INSTALLED, 0), (CORE, 4)])
] + [
    signing.issue_license(
        _PRIVATE_KEY, **_terms(id="L-2024-00000003", failover_policy="exact", failover_share="40%")
    )
]


def _text(min_size: int) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]),
        min_size=min_size,
        max_size=30,
    ).filter(lambda s: s == s.strip() and s.isprintable())


_DATES = st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31)).map(
    datetime.date.isoformat
)
_VERSIONS = st.one_of(
    st.from_regex(r"20[0-9]{2}(r[1-9])?(sp[1-9])?", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}", fullmatch=True),
)
_TERM_VALUES = {
    "id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True),
    "product": _text(1),
    "edition": _text(0),
    "licensee": _text(0),
    "kind": st.sampled_from(LICENSE_KINDS),
    "seats": st.integers(1, signing.MAX_COUNT),
    "cores": st.integers(0, signing.MAX_COUNT),
    "issued": _DATES,
    "starts": st.none() | _DATES,
    "expires": st.none() | _DATES,
    "max_version": st.none() | _VERSIONS,
    "failover_policy": st.sampled_from(["full", "exact"]),
    "failover_share": st.one_of(
        st.integers(0, 100).map(lambda n: f"{n}%"), st.integers(0, 10).map(str)
    ),
}


@st.composite
def _changed_term(draw):
    """A base license, one signed term's name, and a different value for it."""
    license = draw(st.sampled_from(_BASE_LICENSES))
    name = draw(st.sampled_from(signing.TERM_FIELDS + signing.OPTIONAL_TERM_FIELDS))
    old = getattr(license, name)
    new = draw(_TERM_VALUES[name].filter(lambda value: value != old))
    return license, name, new


class TamperPropertyTests(unittest.TestCase):
    """Any change to the signed terms is caught."""

    def test_term_fields_cover_the_strategies(self):
        """The property below changes every signed field of License, optional ones too."""
        self.assertEqual(
            set(_TERM_VALUES), set(signing.TERM_FIELDS + signing.OPTIONAL_TERM_FIELDS)
        )

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.filter_too_much],
    )
    @given(_changed_term())
    def test_any_change_is_refused(self, change):
        """Changing any signed term is refused: tampered when the terms are
        still valid, bad-format otherwise; never accepted."""
        license, name, new = change
        data = _edit(signing.dump_licenses([license]), _set_term(0, name, new))
        changed = dict(signing.terms_of(license), **{name: new})
        try:
            signing.check_terms(changed)
        except signing.LicenseFormatError:
            expected = signing.LicenseFormatError
        else:
            expected = signing.TamperedLicenseError
        error = self.assertRaises(signing.LicenseError, signing.verify_licenses, data, _TRUSTED)
        self.assertIsInstance(error, expected)

    def test_each_field_valid_change_is_tampered(self):
        """For each signed field, a change that keeps the terms valid is tampered."""
        core, concurrent, exact = _BASE_LICENSES[2], _BASE_LICENSES[0], _BASE_LICENSES[3]
        changes = [
            (core, "id", "L-2024-FFFFFFFF"),
            (core, "product", "CAD Pro X"),
            (core, "edition", "Standard"),
            (concurrent, "kind", INSTALLED),
            (core, "seats", 6),
            (core, "cores", 5),
            (core, "licensee", "Acme Inc"),
            (core, "issued", "2024-03-02"),
            (core, "starts", None),
            (core, "expires", "2025-04-01"),
            (core, "max_version", "2025"),
            (core, "failover_policy", "exact"),
            (exact, "failover_share", "4"),
        ]
        self.assertEqual(
            [name for _, name, _ in changes],
            list(signing.TERM_FIELDS + signing.OPTIONAL_TERM_FIELDS),
        )
        for license, name, value in changes:
            data = _edit(signing.dump_licenses([license]), _set_term(0, name, value))
            error = self.assertRaises(
                signing.TamperedLicenseError, signing.verify_licenses, data, _TRUSTED
            )
            self.assertEqual(error.reason, "tampered", name)
