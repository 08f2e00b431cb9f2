"""Tests for ``licenseserver.certs``: the private CA, server certificates and ``tls`` commands."""

from __future__ import annotations

import argparse
import datetime
import io
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import endpoints, reactor
from twisted.internet import ssl as twisted_ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer

from licenseserver import certs, cli, listening, tls

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def verifier(
    ca: x509.Certificate, subject: verification.DNSName | verification.IPAddress, when: datetime
) -> verification.ServerVerifier:
    """A TLS server certificate verifier that trusts ``ca`` only, at the time ``when``."""
    return (
        verification.PolicyBuilder()
        .store(verification.Store([ca]))
        .time(when)
        .build_server_verifier(subject)
    )


@implementer(IHandshakeListener)
class HandshakeProbe(Protocol):
    """The client's application side: told whether the handshake completed, and why it ended."""

    secured = False
    reason: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.secured = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason


def handshake(server_pem: Path, server_key: Path, cafile: Path, host: str) -> None:
    """Run a TLS handshake in memory: a client trusting ``cafile`` connects to ``host``.

    Both ends are the product's own: the server's options as its ``ssl:`` ports
    load the files (``tls.serverOptions``), the client's as the tools and the
    failover's link build them (``tls.clientOptions``), each in Twisted's TLS
    over pyOpenSSL, joined by ``iosim`` instead of a socket. Raises why the
    client refused the server: ``OpenSSL.SSL.Error`` when the certificate does
    not chain to ``cafile``, ``service_identity.VerificationError`` when it does
    not name ``host``.
    """
    clock = Clock()
    probe = HandshakeProbe()
    server_factory = TLSMemoryBIOFactory(
        tls.serverOptions(server_key, server_pem), False, Factory.forProtocol(Protocol), clock
    )
    client_factory = TLSMemoryBIOFactory(
        tls.clientOptions(host, cafile), True, Factory.forProtocol(lambda: probe), clock
    )
    _, _, pump = iosim.connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        greet=False,
        clock=clock,
    )
    pump.flush()
    if probe.reason is not None:
        probe.reason.raiseException()
    if not probe.secured:
        raise AssertionError("the handshake did not finish")


class CertificateTests(unittest.TestCase):
    """Certificates made in memory, checked with ``cryptography``."""

    def setUp(self) -> None:
        self.ca = certs.make_ca("Acme licensing CA", 100, now=NOW)

    def test_caIsSelfSignedCA(self) -> None:
        """The CA certificate is self-signed, a CA that signs only leaf certificates."""
        cert = self.ca.certificate
        cert.verify_directly_issued_by(cert)
        self.assertEqual(cert.subject, cert.issuer)
        [name] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(name.value, "Acme licensing CA")
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertEqual((constraints.value.ca, constraints.value.path_length), (True, 0))
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.key_cert_sign)
        self.assertTrue(usage.crl_sign)
        self.assertIsInstance(self.ca.key, ec.EllipticCurvePrivateKey)
        self.assertEqual(self.ca.key.curve.name, "secp256r1")

    def test_caValidity(self) -> None:
        """The CA is valid from a few minutes before now for the days asked."""
        cert = self.ca.certificate
        self.assertEqual(cert.not_valid_before_utc, NOW - certs.BACKDATE)
        self.assertEqual(cert.not_valid_after_utc, NOW + 100 * DAY)

    def test_caName(self) -> None:
        """A CA name that is empty, too long or unprintable is refused."""
        for name in ("", "x" * 65, "tab\there"):
            with self.assertRaises(certs.CertError):
                certs.make_ca(name)

    def test_serverCertificate(self) -> None:
        """A server certificate is signed by the CA, not a CA itself, for server use only."""
        cert, key = certs.make_server_certificate(
            self.ca, ["LS1.Example.com", "ls1.example.com"], ["10.0.0.5", "::1"], 30, now=NOW
        )
        cert.verify_directly_issued_by(self.ca.certificate)
        self.assertEqual(cert.issuer, self.ca.certificate.subject)
        self.assertEqual(cert.public_key().public_numbers(), key.public_key().public_numbers())
        [name] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(name.value, "ls1.example.com")
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["ls1.example.com"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")],
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertFalse(constraints.value.ca)
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature)
        self.assertFalse(usage.key_cert_sign)
        self.assertEqual(cert.not_valid_before_utc, NOW - certs.BACKDATE)
        self.assertEqual(cert.not_valid_after_utc, NOW + 30 * DAY)

    def test_verifiesForItsNamesAndAddresses(self) -> None:
        """A TLS verifier that trusts the CA accepts the certificate for each name and address."""
        cert, _ = certs.make_server_certificate(
            self.ca, ["ls1.example.com", "*.corp.example.com"], ["192.0.2.7"], now=NOW
        )
        for subject in (
            verification.DNSName("ls1.example.com"),
            verification.DNSName("ls2.corp.example.com"),
            verification.IPAddress(ipaddress.ip_address("192.0.2.7")),
        ):
            chain = verifier(self.ca.certificate, subject, NOW + DAY).verify(cert, [])
            self.assertEqual(chain[-1], self.ca.certificate)

    def test_refusedForOtherNames(self) -> None:
        """A verifier refuses the certificate for a name or address it does not hold."""
        cert, _ = certs.make_server_certificate(self.ca, ["ls1.example.com"], now=NOW)
        for subject in (
            verification.DNSName("ls2.example.com"),
            verification.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ):
            with self.assertRaises(verification.VerificationError):
                verifier(self.ca.certificate, subject, NOW + DAY).verify(cert, [])

    def test_refusedUnderAnotherCA(self) -> None:
        """A verifier that trusts another CA refuses the certificate."""
        cert, _ = certs.make_server_certificate(self.ca, ["ls1.example.com"], now=NOW)
        other = certs.make_ca(now=NOW)
        subject = verification.DNSName("ls1.example.com")
        with self.assertRaises(verification.VerificationError):
            verifier(other.certificate, subject, NOW + DAY).verify(cert, [])

    def test_explicitValidity(self) -> None:
        """Explicit dates give a certificate that has already expired; a verifier refuses it."""
        cert, _ = certs.make_server_certificate(
            self.ca, ["ls1.example.com"], not_before=NOW - 10 * DAY, not_after=NOW - DAY
        )
        self.assertEqual(cert.not_valid_after_utc, NOW - DAY)
        subject = verification.DNSName("ls1.example.com")
        with self.assertRaises(verification.VerificationError):
            verifier(self.ca.certificate, subject, NOW).verify(cert, [])

    def test_validityMustEndAfterItStarts(self) -> None:
        """A certificate that would end before it starts is refused."""
        with self.assertRaises(certs.CertError):
            certs.make_server_certificate(
                self.ca, ["ls1.example.com"], not_before=NOW, not_after=NOW - DAY
            )

    def test_onlyAddresses(self) -> None:
        """A certificate for IP addresses only names the first one as its subject."""
        cert, _ = certs.make_server_certificate(self.ca, ips=["127.0.0.1"], now=NOW)
        [name] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(name.value, "127.0.0.1")

    def test_longName(self) -> None:
        """A name too long for a subject still goes in the (then critical) alternative names."""
        long_name = ".".join(["a" * 60] * 3) + ".example.com"
        cert, _ = certs.make_server_certificate(self.ca, [long_name], now=NOW)
        self.assertEqual(len(cert.subject), 0)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertTrue(san.critical)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), [long_name])
        verifier(self.ca.certificate, verification.DNSName(long_name), NOW + DAY).verify(cert, [])

    def test_badNames(self) -> None:
        """Names that are no host names, and addresses given as names, are refused."""
        for name in (
            "",
            "under_score",
            "-lead.example.com",
            "trail-.example.com",
            "a..b",
            "sp ace",
            "*",
            "*.com",
            "a.*.example.com",
            "x" * 64 + ".example.com",
            "10.0.0.1",
            "::1",
            "bücher.example",
        ):
            with self.assertRaises(certs.CertError, msg=name):
                certs.make_server_certificate(self.ca, [name])

    def test_badAddresses(self) -> None:
        """Addresses that are not IPv4 or IPv6 are refused."""
        for address in ("", "10.0.0", "10.0.0.256", "host.example.com", "::g"):
            with self.assertRaises(certs.CertError, msg=address):
                certs.make_server_certificate(self.ca, ["ls1.example.com"], [address])

    def test_nothingToName(self) -> None:
        """A certificate needs at least one name or address."""
        with self.assertRaises(certs.CertError):
            certs.make_server_certificate(self.ca)


class FileTests(unittest.TestCase):
    """The CA and server certificates as files."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca_dir = self.directory / "ca"
        self.ca_pem, self.ca_key = certs.write_ca(self.ca_dir)
        self.prefix = self.directory / "ls1"

    def mode(self, path: Path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_caFiles(self) -> None:
        """``write_ca`` writes ca.pem and a private ca.key (0600) in a private directory."""
        self.assertEqual(
            (self.ca_pem, self.ca_key), (self.ca_dir / "ca.pem", self.ca_dir / "ca.key")
        )
        self.assertEqual(self.mode(self.ca_key), 0o600)
        self.assertEqual(self.mode(self.ca_pem), 0o644)
        self.assertEqual(self.mode(self.ca_dir), 0o700)
        ca = certs.load_ca(self.ca_dir)
        [name] = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(name.value, certs.DEFAULT_CA_NAME)
        days = (ca.certificate.not_valid_after_utc - ca.certificate.not_valid_before_utc).days
        self.assertEqual(days, certs.DEFAULT_CA_DAYS)

    def test_caRefusesToOverwrite(self) -> None:
        """A second CA in the same directory is refused and the first one is kept."""
        before = (self.ca_pem.read_bytes(), self.ca_key.read_bytes())
        with self.assertRaises(certs.CertError) as caught:
            certs.write_ca(self.ca_dir)
        self.assertIn("already exists", str(caught.exception))
        self.assertEqual((self.ca_pem.read_bytes(), self.ca_key.read_bytes()), before)

    def test_caRefusesOverALeftoverKey(self) -> None:
        """A CA key left without its certificate is not overwritten either."""
        other = self.directory / "other"
        other.mkdir()
        (other / "ca.key").write_text("precious")
        with self.assertRaises(certs.CertError):
            certs.write_ca(other)
        self.assertEqual((other / "ca.key").read_text(), "precious")
        self.assertFalse((other / "ca.pem").exists())

    def test_serverFiles(self) -> None:
        """The server PEM holds the certificate then the CA; its key (0600) matches it."""
        pem, key = certs.write_server_certificate(
            self.ca_dir, self.prefix, ["ls1.example.com"], ["127.0.0.1"]
        )
        self.assertEqual((pem, key), (Path(f"{self.prefix}.pem"), Path(f"{self.prefix}.key")))
        self.assertEqual(self.mode(key), 0o600)
        self.assertEqual(self.mode(pem), 0o644)
        leaf, chained = x509.load_pem_x509_certificates(pem.read_bytes())
        ca = x509.load_pem_x509_certificate(self.ca_pem.read_bytes())
        self.assertEqual(chained, ca)
        leaf.verify_directly_issued_by(ca)
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        self.assertEqual(private.public_key().public_numbers(), leaf.public_key().public_numbers())
        days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
        self.assertEqual(days, certs.DEFAULT_CERT_DAYS)

    def test_handshake(self) -> None:
        """A TLS client trusting ca.pem accepts the server for its names and addresses only."""
        pem, key = certs.write_server_certificate(
            self.ca_dir, self.prefix, ["ls1.example.com"], ["127.0.0.1"]
        )
        handshake(pem, key, self.ca_pem, "ls1.example.com")
        handshake(pem, key, self.ca_pem, "127.0.0.1")
        with self.assertRaises(VerificationError):
            handshake(pem, key, self.ca_pem, "ls2.example.com")
        other_pem, _ = certs.write_ca(self.directory / "other")
        with self.assertRaises(SSL.Error) as caught:
            handshake(pem, key, other_pem, "ls1.example.com")
        self.assertIn("certificate verify failed", str(caught.exception))

    def test_twistedEndpoint(self) -> None:
        """``tls_endpoint`` names the files so that the server loads them, ':' in a path too."""
        odd = self.directory / "a:b=c"
        odd.mkdir()
        pem, key = certs.write_server_certificate(self.ca_dir, odd / "ls1", ["ls1.example.com"])
        text = certs.tls_endpoint(0, key, pem, interface="127.0.0.1")
        self.assertTrue(text.startswith("ssl:0:interface=127.0.0.1:privateKey="), text)
        for endpoint in (
            endpoints.serverFromString(reactor, text),
            listening.serverEndpoint(reactor, text),
        ):
            self.assertIsInstance(endpoint, endpoints.SSL4ServerEndpoint)
        loaded = twisted_ssl.PrivateCertificate.loadPEM(pem.read_bytes() + key.read_bytes())
        self.assertEqual(loaded.getSubject().commonName, b"ls1.example.com")

    def test_serverRefusesToOverwrite(self) -> None:
        """An existing PREFIX.pem or PREFIX.key is never replaced; nothing new is written."""
        for existing in (".pem", ".key"):
            prefix = self.directory / f"taken{existing.replace('.', '-')}"
            Path(f"{prefix}{existing}").write_text("keep")
            with self.assertRaises(certs.CertError) as caught:
                certs.write_server_certificate(self.ca_dir, prefix, ["ls1.example.com"])
            self.assertIn("already exists", str(caught.exception))
            self.assertEqual(Path(f"{prefix}{existing}").read_text(), "keep")
            other = ".key" if existing == ".pem" else ".pem"
            self.assertFalse(Path(f"{prefix}{other}").exists())

    def test_missingCA(self) -> None:
        """A directory without a CA is refused with advice, and nothing is written."""
        for directory in (self.directory / "absent", self.directory):
            with self.assertRaises(certs.CertError) as caught:
                certs.write_server_certificate(directory, self.prefix, ["ls1.example.com"])
            self.assertIn(f"no CA in {directory}", str(caught.exception))
        self.assertFalse(Path(f"{self.prefix}.pem").exists())
        self.assertFalse(Path(f"{self.prefix}.key").exists())

    def test_caWithoutKey(self) -> None:
        """A CA directory whose key is missing is refused, naming the key file."""
        self.ca_key.unlink()
        with self.assertRaises(certs.CertError) as caught:
            certs.load_ca(self.ca_dir)
        self.assertIn(str(self.ca_key), str(caught.exception))

    def test_caKeyOfAnotherCA(self) -> None:
        """A CA key that does not belong to ca.pem is refused."""
        other_dir = self.directory / "other"
        certs.write_ca(other_dir)
        self.ca_key.chmod(0o600)
        os.replace(other_dir / "ca.key", self.ca_key)
        with self.assertRaises(certs.CertError) as caught:
            certs.load_ca(self.ca_dir)
        self.assertIn("is not the key of", str(caught.exception))

    def test_notACA(self) -> None:
        """A server certificate in place of ca.pem is not accepted as a CA."""
        pem, key = certs.write_server_certificate(self.ca_dir, self.prefix, ["ls1.example.com"])
        fake = self.directory / "fake"
        fake.mkdir()
        (fake / "ca.pem").write_bytes(pem.read_bytes())
        (fake / "ca.key").write_bytes(key.read_bytes())
        with self.assertRaises(certs.CertError) as caught:
            certs.load_ca(fake)
        self.assertIn("not a CA certificate", str(caught.exception))

    def test_rsaCAMadeElsewhere(self) -> None:
        """An RSA CA made elsewhere, without a key usage extension, is accepted on every Python.

        It signs server certificates, and a client that trusts it accepts them.
        The decision (``docs/tls.md``): the strict X.509 checks of Python 3.13's
        default context, which refuse a CA without key usage, are applied
        nowhere. Every client of the project (the tools, the failover's link,
        the SDK) checks through pyOpenSSL, which applies them on no Python;
        the client here checks as they do (``tls.clientOptions``), and
        ``tests.test_tls_ciphers.CompanyCATests`` shows each of them over a
        real connection.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corp CA")])
        start = datetime.datetime.now(datetime.UTC) - DAY
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + 4000 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        corp = self.directory / "corp"
        corp.mkdir()
        (corp / "ca.pem").write_bytes(certs.certificate_pem(ca))
        (corp / "ca.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with self.assertRaises(x509.ExtensionNotFound):
            ca.extensions.get_extension_for_class(x509.KeyUsage)
        pem, server_key = certs.write_server_certificate(corp, self.prefix, ["ls1.example.com"])
        leaf = x509.load_pem_x509_certificates(pem.read_bytes())[0]
        leaf.verify_directly_issued_by(ca)
        handshake(pem, server_key, corp / "ca.pem", "ls1.example.com")

    def test_garbage(self) -> None:
        """Files that are not PEM are refused in one line each."""
        self.ca_pem.write_text("nonsense")
        with self.assertRaises(certs.CertError) as caught:
            certs.load_ca(self.ca_dir)
        self.assertIn("not a PEM certificate", str(caught.exception))

    def test_expiredCA(self) -> None:
        """An expired CA signs nothing."""
        old = self.directory / "old"
        certs.write_ca(old, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        with self.assertRaises(certs.CertError) as caught:
            certs.write_server_certificate(old, self.prefix, ["ls1.example.com"])
        self.assertIn("expired", str(caught.exception))

    def test_certificateOutlivingTheCA(self) -> None:
        """A certificate that would outlive its CA is refused with the days still possible."""
        short = self.directory / "short"
        certs.write_ca(short, days=10)
        with self.assertRaises(certs.CertError) as caught:
            certs.write_server_certificate(short, self.prefix, ["ls1.example.com"], days=11)
        self.assertIn("fewer --days (at most 9)", str(caught.exception))
        certs.write_server_certificate(short, self.prefix, ["ls1.example.com"], days=9)

    def test_expiredServerCertificate(self) -> None:
        """With explicit past dates the files hold a certificate that has already expired."""
        pem, _ = certs.write_server_certificate(
            self.ca_dir,
            self.prefix,
            ips=["127.0.0.1"],
            not_before=datetime.datetime.now(datetime.UTC) - 10 * DAY,
            not_after=datetime.datetime.now(datetime.UTC) - DAY,
        )
        leaf = x509.load_pem_x509_certificate(pem.read_bytes())
        self.assertLess(leaf.not_valid_after_utc, datetime.datetime.now(datetime.UTC))


class CommandTests(unittest.TestCase):
    """``licenseserver tls ca`` and ``licenseserver tls cert``."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca_dir = self.directory / "ca"
        self.prefix = self.directory / "ls1"

    def run_tool(self, *argv: str) -> tuple[int, str, str]:
        """Run the tool's ``tls`` commands as ``licenseserver`` runs them."""
        parser = argparse.ArgumentParser(prog="licenseserver")
        certs.register(parser.add_subparsers(dest="command", required=True), cli.CommandError)
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        args = parser.parse_args(argv)
        try:
            args.func(args)
            status = 0
        except cli.CommandError as e:
            print(f"licenseserver: {e}", file=sys.stderr)
            status = 1
        return status, out.getvalue(), err.getvalue()

    def assertOneLineError(self, result: tuple[int, str, str], *parts: str) -> None:
        status, out, err = result
        self.assertEqual((status, out), (1, ""), err)
        self.assertEqual(len(err.splitlines()), 1, err)
        for part in parts:
            self.assertIn(part, err)

    def test_ca(self) -> None:
        """``tls ca`` writes the CA and says which file is which."""
        status, out, err = self.run_tool(
            "tls", "ca", "--out", str(self.ca_dir), "--name", "Acme CA", "--days", "20"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"wrote {self.ca_dir / 'ca.pem'}", out)
        self.assertIn(f"wrote {self.ca_dir / 'ca.key'}", out)
        self.assertIn("licenseserver tls cert --ca", out)
        ca = certs.load_ca(self.ca_dir)
        [name] = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(name.value, "Acme CA")

    def test_cert(self) -> None:
        """``tls cert`` writes the server files and prints the options that use them."""
        self.run_tool("tls", "ca", "--out", str(self.ca_dir))
        status, out, err = self.run_tool(
            "tls",
            "cert",
            "--ca",
            str(self.ca_dir),
            "--name",
            "ls1.example.com",
            "--name",
            "ls1",
            "--ip",
            "192.0.2.7",
            "--days",
            "90",
            "--out",
            str(self.prefix),
        )
        self.assertEqual((status, err), (0, ""))
        pem, key = Path(f"{self.prefix}.pem"), Path(f"{self.prefix}.key")
        self.assertIn(f"wrote {pem}", out)
        self.assertIn(f"wrote {key}", out)
        self.assertIn(f"--port ssl:35355:privateKey={key.resolve()}:certKey={pem.resolve()}", out)
        self.assertIn(f"--web ssl:8088:privateKey={key.resolve()}", out)
        self.assertIn(f"--primary-ca {(self.ca_dir / 'ca.pem').resolve()}", out)
        leaf = x509.load_pem_x509_certificates(pem.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["ls1.example.com", "ls1"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("192.0.2.7")]
        )
        self.assertEqual((leaf.not_valid_after_utc - leaf.not_valid_before_utc).days, 90)

    def test_refusals(self) -> None:
        """Bad names and addresses, a missing CA and existing files fail in one line."""
        self.run_tool("tls", "ca", "--out", str(self.ca_dir))
        self.assertOneLineError(
            self.run_tool("tls", "ca", "--out", str(self.ca_dir)), "already exists"
        )
        self.assertOneLineError(
            self.run_tool("tls", "ca", "--out", str(self.directory / "c2"), "--days", "0"),
            "--days",
        )
        cert = ("tls", "cert", "--ca", str(self.ca_dir), "--out", str(self.prefix))
        self.assertOneLineError(self.run_tool(*cert, "--name", "bad_name"), "'bad_name'")
        self.assertOneLineError(self.run_tool(*cert, "--name", "10.1.2.3"), "--ip")
        self.assertOneLineError(self.run_tool(*cert, "--ip", "10.1.2"), "not an IP address")
        self.assertOneLineError(self.run_tool(*cert), "at least one --name")
        self.assertOneLineError(self.run_tool(*cert, "--name", "a", "--days", "-1"), "--days")
        self.assertOneLineError(
            self.run_tool(
                "tls",
                "cert",
                "--ca",
                str(self.directory / "absent"),
                "--name",
                "a",
                "--out",
                str(self.prefix),
            ),
            "no CA in",
        )
        self.assertFalse(Path(f"{self.prefix}.pem").exists())
        self.assertFalse(Path(f"{self.prefix}.key").exists())
        self.assertEqual(self.run_tool(*cert, "--name", "ls1")[0], 0)
        self.assertOneLineError(self.run_tool(*cert, "--name", "ls1"), "already exists")

    def test_defaultErrorClass(self) -> None:
        """Without an error class the commands raise the tool's ``CommandError``."""
        parser = argparse.ArgumentParser(prog="licenseserver")
        certs.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["tls", "cert", "--ca", str(self.ca_dir), "--out", "x"])
        self.assertRaises(cli.CommandError, args.func, args)

    def test_throughTheTool(self) -> None:
        """``licenseserver tls`` runs through the tool's own ``main``."""
        parser = cli.build_parser()
        commands = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        self.assertIn("tls", commands.choices, "licenseserver.cli must register the tls commands")
        self.patch(sys, "stdout", io.StringIO())
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["tls", "ca", "--out", str(self.ca_dir)]), 0)
        self.assertEqual(cli.main(["tls", "ca", "--out", str(self.ca_dir)]), 1)
        self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())


class NoImportCycleTests(unittest.TestCase):
    def test_commandModulesDoNotNeedTheTool(self):
        """The tls commands and the client commands fail with the tool's CommandError
        without importing the tool's main module: the class lives in licenseserver.errors,
        so there is no import cycle through licenseserver.cli."""
        code = "\n".join(
            [
                "import argparse, sys",
                "from licenseserver import certs, errors",
                "import licenseserver.client.cli",
                "parser = argparse.ArgumentParser()",
                "certs.register(parser.add_subparsers(dest='command', required=True))",
                "args = parser.parse_args(['tls', 'cert', '--ca', '/nonexistent', '--out', 'x'])",
                "try:",
                "    args.func(args)",
                "except errors.CommandError:",
                "    pass",
                "assert 'licenseserver.cli' not in sys.modules, 'licenseserver.cli imported'",
                "print('ok')",
            ]
        )
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=root
        )
        self.assertEqual(out.stdout, "ok\n", out.stderr[-2000:])
