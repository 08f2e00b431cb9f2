"""``licenseserver tls``: a private certificate authority and server certificates for TLS.

``tls ca`` makes a CA (``DIR/ca.pem``, ``DIR/ca.key``); ``tls cert`` signs a server
certificate with it for the host names and addresses that clients and the failover use
(``PREFIX.pem``, ``PREFIX.key``), ready for ``--port ssl:...`` and ``--web ssl:...``.
Keys are ECDSA P-256; private keys are written with mode 0600 and no file is ever
overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from licenseserver.errors import CommandError
from licenseserver.signing import write_new_file

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_CA_NAME = "licenseserver private CA"
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 825
"""The longest validity that every common TLS client accepts for a server certificate."""
MAX_DAYS = 36500
BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past, so that a clock running behind accepts them."""

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


class CertError(Exception):
    """A certificate or key that cannot be made, read or written; its text is one line."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key (ECDSA, or RSA for a CA made elsewhere)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# -- checking input


def check_host_name(name: str) -> str:
    """A DNS host name for a certificate, lower case; ``*.`` may start it.

    Raises ``CertError`` for anything else, an IP address included.
    """
    text = name.strip().rstrip(".").lower()
    if _is_ip(text):
        raise CertError(f"--name {name!r} is an IP address: give it with --ip")
    labels = text.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise CertError(
            f"--name {name!r} is not a host name (letters, digits, '-' and dots;"
            " '*.' only as the first label)"
        )
    return text


def check_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address; raises ``CertError`` for anything else."""
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        raise CertError(f"--ip {address!r} is not an IP address") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_days(days: int) -> None:
    if not 1 <= days <= MAX_DAYS:
        raise CertError(f"--days must be from 1 to {MAX_DAYS}, not {days}")


def _validity(
    days: int,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    now: datetime.datetime | None,
) -> tuple[datetime.datetime, datetime.datetime]:
    """The validity period: explicit dates where given, else from now for ``days``.

    Without ``not_before`` it starts ``BACKDATE`` before now; without ``not_after`` it
    ends ``days`` after now (or after an explicit ``not_before``).
    """
    origin = not_before or now or datetime.datetime.now(datetime.UTC)
    if not_before is None:
        not_before = origin - BACKDATE
    if not_after is None:
        _check_days(days)
        not_after = origin + datetime.timedelta(days=days)
    not_before, not_after = _utc(not_before), _utc(not_after)
    if not_after <= not_before:
        raise CertError("a certificate must end after it starts")
    return not_before, not_after


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


# -- making certificates


def make_ca(
    name: str = DEFAULT_CA_NAME,
    days: int = DEFAULT_CA_DAYS,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> CertificateAuthority:
    """A new self-signed CA that may sign server certificates only (path length 0)."""
    if not name.isprintable() or not 1 <= len(name) <= 64:
        raise CertError("the CA's --name must be 1 to 64 printable characters")
    start, end = _validity(days, not_before, not_after, now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate, key)


def make_server_certificate(
    ca: CertificateAuthority,
    names: Iterable[str] = (),
    ips: Iterable[str] = (),
    days: int = DEFAULT_CERT_DAYS,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate signed by ``ca`` for host ``names`` and IP addresses ``ips``.

    Explicit ``not_before``/``not_after`` override ``days`` (a certificate that has
    already expired can be made this way, for tests). Raises ``CertError``.
    """
    dns = list(dict.fromkeys(check_host_name(name) for name in names))
    addresses = list(dict.fromkeys(check_ip(ip) for ip in ips))
    if not dns and not addresses:
        raise CertError("give at least one --name HOSTNAME or --ip ADDR")
    start, end = _validity(days, not_before, not_after, now)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    common = next((name for name in dns if len(name) <= 64), None)
    if common is None and not dns:
        common = str(addresses[0])
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common)] if common is not None else []
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    alt_names += [x509.IPAddress(address) for address in addresses]
    try:
        issuer_key_id = ca.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer_key_id
        )
    except x509.ExtensionNotFound:
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Without a subject name, the alternative names are all there is: critical.
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=common is None)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(authority_key_id, critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate, key


# -- files


def certificate_pem(*certificates: x509.Certificate) -> bytes:
    """Certificates as PEM, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PEM PKCS8."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(key_path: Path, key_data: bytes, cert_path: Path, cert_data: bytes) -> None:
    """Write a private key (0600) and its certificate file (0644), both new, or neither."""
    for path in (key_path, cert_path):
        if path.exists() or path.is_symlink():
            raise CertError(f"{path} already exists; refusing to overwrite it")
    _create(key_path, key_data, 0o600)
    try:
        _create(cert_path, cert_data, 0o644)
    except CertError:
        key_path.unlink(missing_ok=True)
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        write_new_file(path, data, mode)
    except FileExistsError:
        raise CertError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise CertError(f"cannot write {path}: {e.strerror or e}") from None


def write_ca(
    directory: str | os.PathLike[str],
    name: str = DEFAULT_CA_NAME,
    days: int = DEFAULT_CA_DAYS,
    **validity: Any,
) -> tuple[Path, Path]:
    """Make a CA and write ``DIR/ca.pem`` and ``DIR/ca.key`` (0600); return both paths.

    The directory is created (mode 0700) if it is missing. ``validity`` takes
    ``not_before``, ``not_after`` and ``now`` as ``make_ca`` does.
    """
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists() or path.is_symlink():
            raise CertError(f"{path} already exists; refusing to overwrite it")
    ca = make_ca(name, days, **validity)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CertError(f"cannot make the directory {directory}: {e.strerror or e}") from None
    _write_pair(key_path, key_pem(ca.key), cert_path, certificate_pem(ca.certificate))
    return cert_path, key_path


def load_ca(directory: str | os.PathLike[str]) -> CertificateAuthority:
    """The CA in ``DIR/ca.pem`` and ``DIR/ca.key``; raises ``CertError`` with one line."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not directory.is_dir():
        raise CertError(f"no CA in {directory}: it is not a directory")
    for path in (cert_path, key_path):
        if not path.exists():
            raise CertError(
                f"no CA in {directory}: {path} does not exist"
                f" (make a CA with: licenseserver tls ca --out {directory})"
            )
    try:
        cert_data, key_data = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise CertError(f"cannot read the CA in {directory}: {e.strerror or e}") from None
    try:
        certificate = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise CertError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise CertError(f"{key_path} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertError(f"{key_path} is not a PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError(f"{key_path} is neither an ECDSA nor an RSA key")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():
        raise CertError(f"{key_path} is not the key of the certificate {cert_path}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = constraints.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertError(f"{cert_path} is not a CA certificate")
    return CertificateAuthority(certificate, key)


def write_server_certificate(
    ca_directory: str | os.PathLike[str],
    prefix: str | os.PathLike[str],
    names: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = DEFAULT_CERT_DAYS,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> tuple[Path, Path]:
    """Sign a server certificate with the CA in ``ca_directory``; return its two files.

    ``PREFIX.pem`` holds the certificate followed by the CA certificate, ``PREFIX.key``
    (0600) its private key. Refuses a CA that has expired or that would expire before
    the new certificate, and existing files. Raises ``CertError``.
    """
    for name in names:
        check_host_name(name)
    for ip in ips:
        check_ip(ip)
    if not names and not ips:
        raise CertError("give at least one --name HOSTNAME or --ip ADDR")
    if not_after is None:
        _check_days(days)
    cert_path = Path(f"{os.fspath(prefix)}.pem")
    key_path = Path(f"{os.fspath(prefix)}.key")
    for path in (cert_path, key_path):
        if path.exists() or path.is_symlink():
            raise CertError(f"{path} already exists; refusing to overwrite it")
    ca = load_ca(ca_directory)
    moment = _utc(now or datetime.datetime.now(datetime.UTC))
    ca_end = ca.certificate.not_valid_after_utc
    if ca_end <= moment:
        raise CertError(f"the CA in {ca_directory} expired on {ca_end:%Y-%m-%d}")
    certificate, key = make_server_certificate(
        ca, names, ips, days, not_before=not_before, not_after=not_after, now=now
    )
    if certificate.not_valid_after_utc > ca_end:
        raise CertError(
            f"the CA in {ca_directory} expires on {ca_end:%Y-%m-%d}, before this certificate"
            f" would: give fewer --days (at most {(ca_end - moment).days})"
        )
    _write_pair(key_path, key_pem(key), cert_path, certificate_pem(certificate, ca.certificate))
    return cert_path, key_path


def tls_endpoint(
    port: int | str,
    key: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    interface: str | None = None,
) -> str:
    """The Twisted server endpoint string that serves TLS on ``port`` with these files."""
    from twisted.internet.endpoints import quoteStringArgument

    parts = [f"ssl:{port}"]
    if interface is not None:
        parts.append(f"interface={quoteStringArgument(interface)}")
    parts.append(f"privateKey={quoteStringArgument(os.path.abspath(key))}")
    parts.append(f"certKey={quoteStringArgument(os.path.abspath(cert))}")
    return ":".join(parts)


# -- the commands


def register(subparsers: Any, error: type[Exception] = CommandError) -> None:
    """Add ``tls ca`` and ``tls cert`` to the ``licenseserver`` commands.

    ``error`` is the exception class the tool reports in one line (exit status 1).
    """
    tls = subparsers.add_parser("tls", help="a private CA and server certificates for TLS")
    commands = tls.add_subparsers(dest="tls_command", required=True)

    ca = commands.add_parser("ca", help="make a private certificate authority")
    ca.add_argument("--out", required=True, metavar="DIR", help="writes DIR/ca.pem, DIR/ca.key")
    ca.add_argument("--name", default=DEFAULT_CA_NAME, help="the CA's name")
    ca.add_argument("--days", type=int, default=DEFAULT_CA_DAYS, help="validity in days")
    ca.set_defaults(func=_reporting(_ca_command, error))

    cert = commands.add_parser("cert", help="sign a server certificate with the private CA")
    cert.add_argument("--ca", required=True, metavar="DIR", help="the CA made by 'tls ca'")
    cert.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="HOSTNAME",
        help="a host name clients use (may repeat)",
    )
    cert.add_argument(
        "--ip",
        dest="ips",
        action="append",
        default=[],
        metavar="ADDR",
        help="an IP address clients use (may repeat)",
    )
    cert.add_argument("--days", type=int, default=DEFAULT_CERT_DAYS, help="validity in days")
    cert.add_argument(
        "--out", required=True, metavar="PREFIX", help="writes PREFIX.pem and PREFIX.key"
    )
    cert.set_defaults(func=_reporting(_cert_command, error))


def _reporting(
    command: Callable[[argparse.Namespace], None], error: type[Exception]
) -> Callable[[argparse.Namespace], None]:
    """``command`` with its ``CertError`` turned into the tool's one-line error."""

    def run(args: argparse.Namespace) -> None:
        try:
            command(args)
        except CertError as e:
            raise error(str(e)) from e

    return run


def _ca_command(args: argparse.Namespace) -> None:
    """Make a CA in ``--out DIR`` and say what to do with its files."""
    cert_path, key_path = write_ca(args.out, args.name, args.days)
    print(f"wrote {cert_path} (the CA certificate: clients and failovers trust it)")
    print(f"wrote {key_path} (the CA private key, mode 0600: keep it secret)")
    print(
        "next: licenseserver tls cert --ca "
        f"{shlex.quote(str(args.out))} --name HOSTNAME [--ip ADDR] --out PREFIX"
    )


def _cert_command(args: argparse.Namespace) -> None:
    """Sign a server certificate and print the server options that use it."""
    cert_path, key_path = write_server_certificate(
        args.ca, args.out, args.names, args.ips, args.days
    )
    ca_cert = Path(args.ca) / CA_CERT_FILE
    print(f"wrote {cert_path} (the server certificate, then the CA certificate)")
    print(f"wrote {key_path} (its private key, mode 0600)")
    print("server options:")
    print(f"  --port {shlex.quote(tls_endpoint(35355, key_path, cert_path))}")
    print(f"  --web {shlex.quote(tls_endpoint(8088, key_path, cert_path))}")
    print(f"failover option: --primary-ca {shlex.quote(os.path.abspath(ca_cert))}")
