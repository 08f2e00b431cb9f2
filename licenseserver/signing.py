"""The license file format, and Ed25519 signing and verification of licenses.

A vendor holds an Ed25519 private key and signs the terms of each license it
issues; a server trusts a set of vendor public keys and accepts a license file
only when every license in it carries a valid signature by one of them. The
signature covers a canonical byte encoding of the terms (``canonical_terms``),
so the pretty-printed file that admins read can be re-indented without harm,
but any change to a term breaks the signature.

Everything here is a pure function over bytes, paths and keys: no reactor, no
clock except ``issue_license``'s default issue date. ``docs/licenses.md``
describes the file format for people.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from licenseserver import allocation, jsonparse, versions
from licenseserver.model import CORE, LICENSE_KINDS, License

FORMAT = "licenseserver-licenses/1"
"""The ``format`` tag of a license file this module reads and writes."""

DOMAIN = b"licenseserver-license-v1\n"
"""Prefix of every signed message, so a license signature is never valid for
anything else the same key might sign."""

TERM_FIELDS = (
    "id",
    "product",
    "edition",
    "kind",
    "seats",
    "cores",
    "licensee",
    "issued",
    "starts",
    "expires",
    "max_version",
)
"""The fields of ``License`` that the vendor signs, in file order: every license has them."""

OPTIONAL_TERM_FIELDS = ("failover_policy", "failover_share")
"""Signed terms that a license carries only when the vendor set them (FAILOVER.md rule 15).

A license without them has exactly the terms, canonical bytes and signature it
had before they existed; a license with them has them in its file after
``TERM_FIELDS`` and under its signature like any other term. They are never
written as null: left out, they leave the choice to the server's settings."""

MAX_COUNT = 1_000_000_000
"""Upper bound of ``seats`` and ``cores``: far above any real license, far
below what SQLite and JSON readers in other languages handle exactly."""

MAX_TEXT = 200
"""Upper bound of the length of a text term."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_ENTRY_FIELDS = frozenset({"terms", "key_id", "signature"})
_FILE_FIELDS = frozenset({"format", "licenses"})


class LicenseError(ValueError):
    """A license, license file or key that cannot be used.

    ``reason`` is a stable lower-case token for programs (the admin API puts
    it in its JSON answer); ``str()`` of the error is the message for people.
    ``license_id`` names the license concerned, when one is known.
    """

    reason = "invalid"

    def __init__(self, message: str, license_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.license_id = license_id


class LicenseFormatError(LicenseError):
    """Not a license file of this format, or a license with invalid terms."""

    reason = "bad-format"


class UnsignedLicenseError(LicenseError):
    """A license that carries no signature or no key id."""

    reason = "unsigned"


class UntrustedKeyError(LicenseError):
    """A license signed by a key that is not among the trusted vendor keys."""

    reason = "untrusted"


class TamperedLicenseError(LicenseError):
    """A license whose signature does not match its terms under a trusted key."""

    reason = "tampered"


class KeyFileError(LicenseError):
    """A key file that cannot be read, parsed or written."""

    reason = "bad-key"


# Keys


def generate_keypair(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair to ``PREFIX.key`` and ``PREFIX.pub``.

    The private key is PEM PKCS8, unencrypted, created with mode 0600 from
    the start so that it is never readable by others, not even for a moment.
    The public key is PEM SubjectPublicKeyInfo, the file a server trusts.
    Existing files are never overwritten: a vendor key that is replaced is
    lost, and with it the means to issue licenses that servers already
    trust. Returns the two paths; raises ``KeyFileError``.
    """
    private_path = Path(f"{os.fspath(prefix)}.key")
    public_path = Path(f"{os.fspath(prefix)}.pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path} already exists; refusing to overwrite it")

    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )

    _create(private_path, private_pem, 0o600)
    try:
        _create(public_path, public_pem, 0o644)
    except KeyFileError:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        write_new_file(path, data, mode)
    except FileExistsError as e:
        raise KeyFileError(f"{path} already exists; refusing to overwrite it") from e
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror or e}") from e


def write_new_file(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Create the file ``path`` with permissions ``mode`` and write ``data``.

    The file gets its mode when it is created, so a private key is never
    readable by others, not even for a moment. An existing file is never
    replaced (``FileExistsError``), and a partly written file is removed
    again, so a failure leaves nothing behind. Raises ``OSError``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            # The umask can only remove bits; set the mode exactly all the same.
            os.fchmod(f.fileno(), mode)
            f.write(data)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise KeyFileError(f"{what} file {os.fspath(path)} does not exist") from e
    except OSError as e:
        raise KeyFileError(f"cannot read {what} file {os.fspath(path)}: {e.strerror or e}") from e


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a vendor's unencrypted PEM PKCS8 Ed25519 private key.

    Raises ``KeyFileError`` with a message naming the file when it is
    missing, unreadable, not PEM, encrypted, or a key of another type (such
    as the ``.pub`` half given by mistake).
    """
    data = _read_key_file(path, "private key")
    name = os.fspath(path)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{name} holds a public key, not a private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise KeyFileError(f"{name} is encrypted; only unencrypted keys are supported") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{name} is not a PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{name} is not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a vendor's PEM SubjectPublicKeyInfo Ed25519 public key.

    Raises ``KeyFileError`` with a message naming the file when it is
    missing, unreadable, not PEM, or a key of another type.
    """
    return public_key_from_pem(_read_key_file(path, "public key"), os.fspath(path))


def public_key_from_pem(data: bytes, name: str = "the key") -> Ed25519PublicKey:
    """A vendor's Ed25519 public key from its PEM text, as ``vendor keygen`` writes it.

    Raises ``KeyFileError`` naming ``name`` for anything else: not PEM, a
    private key (the ``.key`` half given by mistake), or a key of another type.
    """
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(
            f"{name} is a private key: give the public half (PREFIX.pub), and keep the"
            " private key with the vendor"
        )
    try:
        key = serialization.load_pem_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{name} is not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{name} is not an Ed25519 public key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> str:
    """The PEM text of ``key`` (``-----BEGIN PUBLIC KEY-----`` ...)."""
    return key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of a public key: 16 hex digits of SHA-256 of its raw bytes.

    Each license names the key that signed it by this id, so a server that
    trusts several vendor keys knows which one to check without trying all.
    """
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw,
        format=serialization.PublicFormat.Raw,
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def load_trusted_keys(
    paths: Iterable[str | os.PathLike[str]],
) -> dict[str, Ed25519PublicKey]:
    """Read public key files into a mapping from key id to key.

    Raises ``KeyFileError`` for the first file that is not a usable public
    key: a server told to trust a key it cannot read should not start as if
    all were well. The same key given twice is harmless.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id(key)] = key
    return keys


def trusted_keys_in_dir(
    directory: str | os.PathLike[str],
) -> dict[str, Ed25519PublicKey]:
    """The trusted keys of every ``*.pub`` file in ``directory``, by key id.

    A missing directory trusts no key and is no error: a new server has no
    vendor keys until the admin adds one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return load_trusted_keys(sorted(directory.glob("*.pub")))


# Terms and signatures


def canonical_terms(terms: Mapping[str, Any]) -> bytes:
    """The exact bytes that a license signature covers.

    The domain line, then the terms as compact JSON with sorted keys and
    UTF-8 text: one encoding for one set of terms, whatever the key order or
    layout of the file they were read from.
    """
    body = json.dumps(dict(terms), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DOMAIN + body.encode("utf-8")


def sign_terms(private_key: Ed25519PrivateKey, terms: Mapping[str, Any]) -> str:
    """The base64 (standard alphabet) Ed25519 signature of ``terms``."""
    signature = private_key.sign(canonical_terms(terms))
    return base64.b64encode(signature).decode("ascii")


def signature_matches(
    public_key: Ed25519PublicKey, terms: Mapping[str, Any], signature: str
) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of ``terms``."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(raw, canonical_terms(terms))
    except InvalidSignature:
        return False
    return True


def terms_of(license: License) -> dict[str, Any]:
    """The signed terms of ``license``, as a dict in ``TERM_FIELDS`` order.

    The ``OPTIONAL_TERM_FIELDS`` follow when the license has them (not None),
    and are left out otherwise, so that a license without them signs and
    verifies exactly as before they existed.
    """
    terms = {name: getattr(license, name) for name in TERM_FIELDS}
    for name in OPTIONAL_TERM_FIELDS:
        value = getattr(license, name)
        if value is not None:
            terms[name] = value
    return terms


def check_terms(terms: Mapping[str, Any]) -> dict[str, Any]:
    """Check that ``terms`` are complete, well typed and sensible.

    Returns them as a dict in ``TERM_FIELDS`` order, then the
    ``OPTIONAL_TERM_FIELDS`` that are present. Raises
    ``LicenseFormatError`` naming the field and the problem. The rules are the
    same for issuing and for reading, so a vendor cannot sign a license that
    a server would refuse, and a server refuses what no vendor tool makes.
    """
    missing = [name for name in TERM_FIELDS if name not in terms]
    if missing:
        raise LicenseFormatError(f"missing terms: {', '.join(missing)}")
    unknown = sorted(set(terms) - set(TERM_FIELDS) - set(OPTIONAL_TERM_FIELDS))
    if unknown:
        raise LicenseFormatError(f"unknown terms: {', '.join(unknown)}")

    license_id = terms["id"]
    if not isinstance(license_id, str) or not _ID.fullmatch(license_id):
        raise LicenseFormatError(
            f"id must be 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {license_id!r}"
        )
    _check_text(terms, "product", empty=False)
    _check_text(terms, "edition", empty=True)
    _check_text(terms, "licensee", empty=True)

    kind = terms["kind"]
    if kind not in LICENSE_KINDS:
        raise LicenseFormatError(f"kind must be one of {', '.join(LICENSE_KINDS)}; got {kind!r}")
    _check_count(terms, "seats", "seats must be a whole number of at least 1")
    if kind == CORE:
        _check_count(terms, "cores", "a core license needs cores (per machine) of at least 1")
    elif not _is_int(terms["cores"]) or terms["cores"] != 0:
        raise LicenseFormatError(
            f"cores must be 0 for a {kind} license (only core licenses have cores); "
            f"got {terms['cores']!r}"
        )

    _check_date(terms, "issued", optional=False)
    starts = _check_date(terms, "starts", optional=True)
    expires = _check_date(terms, "expires", optional=True)
    if starts is not None and expires is not None and starts > expires:
        raise LicenseFormatError(f"starts {terms['starts']} is after expires {terms['expires']}")

    max_version = terms["max_version"]
    if max_version is not None and (
        not isinstance(max_version, str) or not versions.is_valid(max_version)
    ):
        raise LicenseFormatError(
            f"max_version must be a product version such as 2024r2 or 9.0.1; got {max_version!r}"
        )
    _check_partition_terms(terms)
    checked = {name: terms[name] for name in TERM_FIELDS}
    checked.update({name: terms[name] for name in OPTIONAL_TERM_FIELDS if name in terms})
    return checked


def _check_partition_terms(terms: Mapping[str, Any]) -> None:
    """Check the optional ``failover_policy`` and ``failover_share`` (FAILOVER.md rule 15).

    The policy is ``full`` or ``exact``; a share goes only with ``exact`` (only
    an exact license holds seats back for the failover) and is a percentage
    from 0% to 100% or a whole number of seats from 0 to ``seats``, written
    as text (``"20%"``, ``"2"``).
    """
    if "failover_policy" in terms:
        policy = terms["failover_policy"]
        if not isinstance(policy, str) or policy not in allocation.PARTITION_POLICIES:
            raise LicenseFormatError(
                f"failover_policy must be {' or '.join(allocation.PARTITION_POLICIES)}"
                f" (or left out, for the server's setting); got {policy!r}"
            )
    if "failover_share" not in terms:
        return
    share = terms["failover_share"]
    if terms.get("failover_policy") != allocation.EXACT:
        raise LicenseFormatError(
            "failover_share goes only with failover_policy exact: only an exact license"
            " holds seats back for the failover"
        )
    rule = (
        f"failover_share must be a percentage from 0% to 100% or a whole number of seats"
        f' from 0 to {terms["seats"]}, written as text such as "20%" or "2"; got {share!r}'
    )
    if not isinstance(share, str) or share != share.strip():
        raise LicenseFormatError(rule)
    try:
        allocation.share_seats(share, terms["seats"])
    except ValueError:
        raise LicenseFormatError(rule) from None
    if not share.endswith("%") and int(share) > terms["seats"]:
        raise LicenseFormatError(rule)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(terms: Mapping[str, Any], name: str, rule: str) -> None:
    value = terms[name]
    if not _is_int(value) or value < 1:
        raise LicenseFormatError(f"{rule}; got {value!r}")
    if value > MAX_COUNT:
        raise LicenseFormatError(f"{name} must be at most {MAX_COUNT}; got {value}")


def _check_text(terms: Mapping[str, Any], name: str, empty: bool) -> None:
    value = terms[name]
    if not isinstance(value, str):
        raise LicenseFormatError(f"{name} must be text; got {value!r}")
    if not value:
        if empty:
            return
        raise LicenseFormatError(f"{name} must not be empty")
    if len(value) > MAX_TEXT:
        raise LicenseFormatError(f"{name} is longer than {MAX_TEXT} characters")
    if not value.isprintable():
        raise LicenseFormatError(f"{name} has unprintable characters: {value!r}")
    if value != value.strip():
        raise LicenseFormatError(f"{name} has leading or trailing white space: {value!r}")


def _check_date(terms: Mapping[str, Any], name: str, optional: bool) -> datetime.date | None:
    value = terms[name]
    if value is None and optional:
        return None
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise LicenseFormatError(f"{name} must be a real date written YYYY-MM-DD; got {value!r}")


def new_license_id(year: int) -> str:
    """A fresh random license id, ``L-<year>-<8 uppercase hex digits>``."""
    return f"L-{year:04d}-{secrets.token_hex(4).upper()}"


def issue_license(
    private_key: Ed25519PrivateKey,
    *,
    product: str,
    kind: str,
    seats: int,
    edition: str = "",
    cores: int | None = None,
    licensee: str = "",
    starts: str | None = None,
    expires: str | None = None,
    max_version: str | None = None,
    id: str | None = None,
    issued: str | None = None,
    failover_policy: str | None = None,
    failover_share: str | None = None,
) -> License:
    """Sign new license terms with the vendor's ``private_key``.

    ``id`` defaults to a random ``L-<year of issue>-<8 hex digits>`` and
    ``issued`` to today's date in UTC; ``cores`` to 0 (a core license must
    give it). ``failover_policy`` and ``failover_share`` are signed only when
    given (not None); left out, the server's settings decide. The terms are
    checked by ``check_terms`` first, so a license
    that a server would refuse is never signed; ``LicenseFormatError`` says
    what is wrong. The result's ``key_id`` names the signing key.
    """
    if issued is None:
        issued = datetime.datetime.now(datetime.UTC).date().isoformat()
    if id is None:
        _check_date({"issued": issued}, "issued", optional=False)
        id = new_license_id(int(issued[:4]))
    terms: dict[str, Any] = {
        "id": id,
        "product": product,
        "edition": edition,
        "kind": kind,
        "seats": seats,
        "cores": 0 if cores is None else cores,
        "licensee": licensee,
        "issued": issued,
        "starts": starts,
        "expires": expires,
        "max_version": max_version,
    }
    if failover_policy is not None:
        terms["failover_policy"] = failover_policy
    if failover_share is not None:
        terms["failover_share"] = failover_share
    terms = check_terms(terms)
    return License(
        **terms,
        key_id=key_id(private_key.public_key()),
        signature=sign_terms(private_key, terms),
    )


# License files


def dump_licenses(licenses: Iterable[License]) -> bytes:
    """A license file holding ``licenses``, as UTF-8 bytes.

    Indented JSON with the terms in ``TERM_FIELDS`` order (then the optional
    terms the license has), so that admins can read what they were sold.
    Only the signed terms, ``key_id`` and ``signature`` are written; pool
    state (``active``, ``added``) is not.
    Raises ``LicenseFormatError`` for what ``parse_license_file`` would
    refuse: no license, or one id twice.
    """
    licenses = list(licenses)
    if not licenses:
        raise LicenseFormatError("a license file must hold at least one license")
    _check_unique_ids(licenses)
    document = {
        "format": FORMAT,
        "licenses": [
            {
                "terms": terms_of(license),
                "key_id": license.key_id,
                "signature": license.signature,
            }
            for license in licenses
        ],
    }
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def parse_license_file(data: bytes) -> list[License]:
    """Read a license file into ``License`` records, WITHOUT checking signatures.

    Every structural rule is checked: UTF-8 JSON, the ``format`` tag, the
    fields of each entry and their types, the terms (``check_terms``), at
    least one license, no id twice. An entry without a signature or key id
    comes back with ``""`` in that field; ``verify_licenses`` refuses it.
    Raises ``LicenseFormatError``; one bad entry refuses the whole file.
    """
    try:
        document = jsonparse.loads(data)
    except json.JSONDecodeError as e:
        raise LicenseFormatError(
            f"not a license file: bad JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e
    except ValueError as e:
        raise LicenseFormatError(f"not a license file: {e}") from e

    if not isinstance(document, dict):
        raise LicenseFormatError("not a license file: the JSON is not an object")
    if "format" not in document:
        raise LicenseFormatError(
            f'not a license file: this JSON has no "format" field ({FORMAT} expected)'
        )
    if document["format"] != FORMAT:
        raise LicenseFormatError(
            f"not a license file of format {FORMAT}: format is {document['format']!r}"
        )
    unknown = sorted(set(document) - _FILE_FIELDS)
    if unknown:
        raise LicenseFormatError(f"unknown fields in license file: {', '.join(unknown)}")
    entries = document.get("licenses")
    if not isinstance(entries, list):
        raise LicenseFormatError("license file has no list of licenses")
    if not entries:
        raise LicenseFormatError("license file holds no license")

    licenses = [_parse_entry(entry, number) for number, entry in enumerate(entries, 1)]
    _check_unique_ids(licenses)
    return licenses


def _parse_entry(entry: Any, number: int) -> License:
    """One entry of the ``licenses`` list as an unverified ``License``."""
    label = f"license #{number}"
    if not isinstance(entry, dict):
        raise LicenseFormatError(f"{label}: not a JSON object")
    terms = entry.get("terms")
    if not isinstance(terms, dict):
        raise LicenseFormatError(f"{label}: no terms object")
    license_id = terms.get("id")
    if isinstance(license_id, str) and _ID.fullmatch(license_id):
        label = f"license {license_id}"
    else:
        license_id = None
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise LicenseFormatError(f"{label}: unknown fields: {', '.join(unknown)}", license_id)
    try:
        terms = check_terms(terms)
    except LicenseFormatError as e:
        raise LicenseFormatError(f"{label}: {e}", license_id) from e

    signed_by = entry.get("key_id")
    signature = entry.get("signature")
    if signed_by is None:
        signed_by = ""
    if signature is None:
        signature = ""
    if not isinstance(signed_by, str):
        raise LicenseFormatError(f"{label}: key_id must be text", license_id)
    if not isinstance(signature, str):
        raise LicenseFormatError(f"{label}: signature must be text", license_id)
    if signed_by and not _KEY_ID.fullmatch(signed_by):
        raise LicenseFormatError(
            f"{label}: key_id must be 16 lower-case hex digits; got {signed_by!r}",
            license_id,
        )
    if signature and not _is_signature_text(signature):
        raise LicenseFormatError(
            f"{label}: signature is not the base64 encoding of 64 bytes",
            license_id,
        )
    return License(**terms, key_id=signed_by, signature=signature)


def _is_signature_text(signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 64


def _check_unique_ids(licenses: list[License]) -> None:
    seen: set[str] = set()
    for license in licenses:
        if license.id in seen:
            raise LicenseFormatError(f"license {license.id} appears twice in the file", license.id)
        seen.add(license.id)


def verify_licenses(data: bytes, trusted_keys: Mapping[str, Ed25519PublicKey]) -> list[License]:
    """Read a license file and check every signature against ``trusted_keys``.

    ``trusted_keys`` maps key ids to vendor public keys (``load_trusted_keys``,
    ``trusted_keys_in_dir``). Returns the licenses in file order, active and
    with ``added`` 0 for the pool to set. The whole file is refused when any
    one license is bad, so an upload is never half accepted. Raises
    ``LicenseFormatError`` (``bad-format``), ``UnsignedLicenseError``
    (``unsigned``), ``UntrustedKeyError`` (``untrusted``) or
    ``TamperedLicenseError`` (``tampered``); each message names the license.
    """
    licenses = parse_license_file(data)
    for license in licenses:
        label = f"license {license.id}"
        if not license.key_id or not license.signature:
            raise UnsignedLicenseError(f"{label}: not signed (no key_id or signature)", license.id)
        public_key = trusted_keys.get(license.key_id)
        if public_key is None:
            raise UntrustedKeyError(
                f"{label}: signed by vendor key {license.key_id}, which this server does not"
                " trust; to trust it, add the vendor's public key file (PREFIX.pub) on the"
                " Settings tab or with POST /api/vendor-keys (no restart needed)",
                license.id,
            )
        if not signature_matches(public_key, terms_of(license), license.signature):
            raise TamperedLicenseError(
                f"{label}: the signature does not match the terms; the license "
                f"was changed after key {license.key_id} signed it",
                license.id,
            )
    return [_as_new(license) for license in licenses]


def _as_new(license: License) -> License:
    return License(
        **terms_of(license),
        key_id=license.key_id,
        signature=license.signature,
        active=True,
        added=0,
    )
