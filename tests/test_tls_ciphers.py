"""TLS on every endpoint: the suites offered and the CAs trusted, by real handshakes.

Servers listen on 127.0.0.1 built as the server builds its ``ssl:`` ports
(``listening.serverEndpoint``); the clients are the failover's link to its
primary (``tap._client_endpoint``), the client SDK's ``tls_endpoint_for`` and
the tools that ask a server over TLS (``licenseserver status --ca`` and the
upgrade's question to a failover's primary, both through
``lineclient.blockingRequest`` with ``tls.clientOptions``). Against the server,
a client that offers only CBC suites under TLS 1.2 must fail and one that
offers an AEAD suite must succeed; against a server that offers only CBC
suites, every one of our clients must fail. Blocking clients run in a thread;
nothing sleeps.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl as stdlib_ssl
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet import defer, endpoints, reactor, threads
from twisted.internet import ssl as twisted_ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest
from zope.interface import implementer

from licenseserver import certs, cli, listening, tap, tls, upgrade
from licenseserver.addresses import split_endpoint
from licenseserver.client.connection import tls_endpoint_for
from licenseserver.protocols import lineclient

HOST = "127.0.0.1"
DAY = datetime.timedelta(days=1)

CBC_ECDSA = (
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)
"""The CBC suites a server with an ECDSA certificate offered under TLS 1.2 before."""

CBC_RSA = (
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
    "DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:AES128-SHA256:AES256-SHA256:AES128-SHA"
)
"""CBC suites for an RSA certificate, with and without forward secrecy."""

FFDHE3072 = b"""-----BEGIN DH PARAMETERS-----
MIIBjAKCAYEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEfz9zeNVs7ZRkDW7w09N75nAI4YbRvydbmyQd62R0mkff3
7lmMsPrBhtkcrv4TCYUTknC0EwyTvEN5RPT9RFLi103TZPLiHnH1S/9croKrnJ32
nuhtK8UiNjoNq8Uhl5sN6todv5pC1cRITgq80Gv6U93vPBsg7j/VnXwl5B0rZsYu
N///////////AgECAgIBFA==
-----END DH PARAMETERS-----
"""
"""The public ffdhe3072 group of RFC 7919, as ``dhParameters=`` takes it."""


def is_aead(cipher: str) -> bool:
    """Whether an OpenSSL suite name is an AEAD suite (every TLS 1.3 suite is)."""
    return cipher.startswith("TLS_") or "-GCM-" in cipher or "CHACHA20-POLY1305" in cipher


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(
    subject: str,
    key: Any,
    issuer: x509.Certificate | None,
    issuer_key: Any,
    *,
    ca: bool,
    key_usage: bool = True,
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    """A certificate as another tool makes it: a CA (``key_usage`` optional) or a server's."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    start = datetime.datetime.now(datetime.UTC) - DAY
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_key(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@implementer(IHandshakeListener)
class HandshakeProbe(Protocol):
    """One end of a TLS connection that reports how its handshake went.

    ``done`` fires with the TLS version and the suite once the handshake has
    completed, or fails with why the connection was lost before; ``lost``
    fires once the connection is closed.
    """

    def __init__(self) -> None:
        self.done: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def handshakeCompleted(self) -> None:
        connection = self.transport.getHandle()
        self.done.callback((connection.get_protocol_version_name(), connection.get_cipher_name()))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(reason)
        self.lost.callback(None)


class ProbeFactory(Factory):
    """Server side: a ``probe`` per connection, kept to wait for their end."""

    noisy = False

    def __init__(self, probe: Callable[[], HandshakeProbe] = HandshakeProbe) -> None:
        self.probe = probe
        self.probes: list[HandshakeProbe] = []

    def buildProtocol(self, addr: Any) -> HandshakeProbe:
        probe = self.probe()
        probe.done.addErrback(lambda _: None)  # the client side reports the failure
        probe.factory = self
        self.probes.append(probe)
        return probe


class StatusAnswerer(HandshakeProbe, LineReceiver):
    """A licensing port reduced to answering STATUS with a fixed line; a probe too."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.transport.write(b"OK server=ls1 role=primary state=active version=1.0.0\n")
        self.transport.loseConnection()


class TLSTestCase(unittest.TestCase):
    """A private CA with an ECDSA and an RSA server certificate for 127.0.0.1, and helpers."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.caPem, _ = certs.write_ca(self.base / "ca", "test CA")
        self.ecPem, self.ecKey = certs.write_server_certificate(
            self.base / "ca", self.base / "ec", ips=[HOST]
        )
        ca = certs.load_ca(self.base / "ca")
        key = rsa_key()
        leaf = sign(HOST, key, ca.certificate, ca.key, ca=False, ips=(HOST,))
        self.rsaPem = self.base / "rsa.pem"
        self.rsaPem.write_bytes(certs.certificate_pem(leaf))
        self.rsaKey = write_key(self.base / "rsa.key", key)
        self.dhParameters = self.base / "dh.pem"
        self.dhParameters.write_bytes(FFDHE3072)
        self.trustRoot = tls.load_trust_roots(self.caPem)

    async def listen(self, endpoint: Any, factory: Any = None) -> int:
        """Listen on ``endpoint`` until the test ends; return the port."""
        factory = factory or ProbeFactory()
        port = await endpoint.listen(factory)

        def stop() -> defer.Deferred:
            lost = [probe.lost for probe in getattr(factory, "probes", [])]
            return defer.gatherResults([defer.maybeDeferred(port.stopListening), *lost])

        self.addCleanup(stop)
        return port.getHost().port

    async def listenAsServer(
        self, key: Path, pem: Path, factory: Any = None, **fields: str
    ) -> int:
        """Listen as the server's ``--port``/``--web`` ``ssl:`` endpoint does."""
        description = certs.tls_endpoint(0, key, pem, interface=HOST)
        for name, value in fields.items():
            description += f":{name}={endpoints.quoteStringArgument(value)}"
        return await self.listen(listening.serverEndpoint(reactor, description), factory)

    async def listenCBCOnly(self) -> int:
        """Listen as a server that offers TLS 1.2 with CBC suites only."""
        certificate = twisted_ssl.PrivateCertificate.loadPEM(
            self.ecPem.read_bytes() + self.ecKey.read_bytes()
        )
        options = twisted_ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            acceptableCiphers=twisted_ssl.AcceptableCiphers.fromOpenSSLCipherString(CBC_ECDSA),
            lowerMaximumSecurityTo=twisted_ssl.TLSVersion.TLSv1_2,
        )
        return await self.listen(endpoints.SSL4ServerEndpoint(reactor, 0, options, interface=HOST))

    async def handshake(self, endpoint: Any) -> tuple[str, str]:
        """Connect through ``endpoint``; the TLS version and suite, or the failure."""
        probe = HandshakeProbe()
        await endpoint.connect(Factory.forProtocol(lambda: probe))
        try:
            return await probe.done
        finally:
            if not probe.lost.called:
                probe.transport.loseConnection()
            await probe.lost

    def limitedClient(self, port: int, ciphers: str, trustRoot: Any = None) -> Any:
        """A client endpoint that speaks TLS 1.2 at most and offers only ``ciphers``."""
        options = twisted_ssl.optionsForClientTLS(
            HOST,
            trustRoot=trustRoot or self.trustRoot,
            extraCertificateOptions={
                "acceptableCiphers": twisted_ssl.AcceptableCiphers.fromOpenSSLCipherString(
                    ciphers
                ),
                "lowerMaximumSecurityTo": twisted_ssl.TLSVersion.TLSv1_2,
            },
        )
        return endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor, HOST, port))

    async def assertRefused(self, endpoint: Any) -> None:
        """The TLS handshake through ``endpoint`` fails."""
        with self.assertRaises(SSL.Error):
            await self.handshake(endpoint)

    def failoverLink(self, port: int, ca: Path | None = None) -> Any:
        """The failover's client endpoint to a primary at ``127.0.0.1:port``."""
        return tap._client_endpoint(reactor, f"{HOST}:{port}", str(ca or self.caPem))

    def sdkEndpoint(self, port: int, ca: Path | None = None) -> Any:
        """The client SDK's TLS endpoint to ``127.0.0.1:port``."""
        return tls_endpoint_for(reactor, str(ca or self.caPem))(f"{HOST}:{port}")

    async def toolsRequest(self, port: int, ca: Path | None = None) -> lineclient.Reply:
        """STATUS to ``127.0.0.1:port`` as the tools send it, in a thread: the answer."""
        options = tls.clientOptions(HOST, ca or self.caPem)
        return await threads.deferToThread(
            lineclient.blockingRequest, HOST, port, "STATUS", timeout=10, tlsOptions=options
        )

    async def statusCommand(self, port: int, ca: Path | None = None) -> tuple[int, str]:
        """``licenseserver status --ca`` against ``127.0.0.1:port``: its status and stderr."""
        err = StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", StringIO())
        argv = ["status", "--server", f"{HOST}:{port}", "--ca", str(ca or self.caPem)]
        status = await threads.deferToThread(cli.main, argv)
        return status, err.getvalue()

    async def upgradeQuestion(self, port: int, ca: Path | None = None) -> dict[str, str]:
        """The upgrade's STATUS question to a primary at ``127.0.0.1:port``: the answer."""
        return await threads.deferToThread(
            upgrade.ask_primary_status, (HOST, port), 5.0, str(ca or self.caPem)
        )


def python_handshake(port: int, context: stdlib_ssl.SSLContext) -> tuple[str, str]:
    """Blocking: a TLS handshake with Python's ``ssl``; the version and the suite."""
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as conn:
            return conn.version() or "", conn.cipher()[0]


def python_client(cafile: Path, ciphers: str) -> stdlib_ssl.SSLContext:
    """A Python ``ssl`` client that speaks TLS 1.2 at most and offers only ``ciphers``."""
    context = stdlib_ssl.create_default_context(cafile=str(cafile))
    context.maximum_version = stdlib_ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


TLS_1_2 = 0x0303
TLS_1_3 = 0x0304


def offered_versions(record: bytes) -> list[int]:
    """The versions a ClientHello record offers in its ``supported_versions`` extension.

    RFC 8446, 4.1.2: after the record and handshake headers come the legacy
    version, the random, the session id, the suites and the compression
    methods, then the extensions; ``supported_versions`` is extension 43.
    """
    assert record[0] == 22 and record[5] == 1, "not a ClientHello record"
    hello = record[9:]
    at = 2 + 32
    at += 1 + hello[at]
    at += 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 1 + hello[at]
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    while at < end:
        kind = int.from_bytes(hello[at : at + 2], "big")
        size = int.from_bytes(hello[at + 2 : at + 4], "big")
        if kind == 43:
            data = hello[at + 5 : at + 4 + size]
            return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        at += 4 + size
    return []


class CipherListTests(unittest.TestCase):
    """The suites as listed, without a connection."""

    def test_onlyAEAD(self) -> None:
        """The server enables Mozilla's intermediate AEAD suites only, DHE with parameters."""
        base = Path(self.mktemp())
        base.mkdir()
        certs.write_ca(base / "ca")
        pem, key = certs.write_server_certificate(base / "ca", base / "s", ["localhost"])
        (base / "dh.pem").write_bytes(FFDHE3072)
        for dh, expected in (
            (None, tls.ECDHE_CIPHERS),
            (base / "dh.pem", tls.ECDHE_CIPHERS + tls.DHE_CIPHERS),
        ):
            options = tls.serverOptions(key, pem, dhParameters=dh)
            offered = SSL.Connection(options.getContext(), None).get_cipher_list()
            self.assertEqual([c for c in offered if not c.startswith("TLS_")], expected)
            self.assertTrue(all(is_aead(c) for c in offered), offered)

    def test_clientOptionsOnlyAEAD(self) -> None:
        """The tools' client options offer the same suites, and TLS 1.3 and 1.2 only.

        ``tls.clientOptions`` as ``lineclient.blockingRequest`` wraps it: the
        suites its connection enables, and the versions its ClientHello offers.
        """
        sent = StringTransport()
        factory = TLSMemoryBIOFactory(
            tls.clientOptions("localhost"), True, Factory.forProtocol(Protocol)
        )
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(sent)
        offered = protocol.getHandle().get_cipher_list()
        self.assertEqual(
            [c for c in offered if not c.startswith("TLS_")], tls.ECDHE_CIPHERS + tls.DHE_CIPHERS
        )
        self.assertTrue(all(is_aead(c) for c in offered), offered)
        self.assertEqual(offered_versions(sent.value()), [TLS_1_3, TLS_1_2])


class ServerSuiteTests(TLSTestCase):
    """The server's ``ssl:`` ports (licensing and web are built alike) offer AEAD suites only."""

    async def test_cbcRefused(self) -> None:
        """A client that offers only CBC suites under TLS 1.2 gets no connection."""
        port = await self.listenAsServer(self.ecKey, self.ecPem)
        await self.assertRefused(self.limitedClient(port, CBC_ECDSA))
        for suite in CBC_ECDSA.split(":"):
            await self.assertRefused(self.limitedClient(port, suite))

    async def test_aeadAccepted(self) -> None:
        """Each ECDSA AEAD suite works under TLS 1.2; a client of today gets TLS 1.3."""
        port = await self.listenAsServer(self.ecKey, self.ecPem)
        for suite in (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ):
            self.assertEqual(
                await self.handshake(self.limitedClient(port, suite)), ("TLSv1.2", suite)
            )
        version, _ = await self.handshake(self.failoverLink(port))
        self.assertEqual(version, "TLSv1.3")

    async def test_pythonClient(self) -> None:
        """Python's own ``ssl`` (another OpenSSL) gets AEAD and no CBC under TLS 1.2."""
        port = await self.listenAsServer(self.ecKey, self.ecPem)
        with self.assertRaises(stdlib_ssl.SSLError):
            await threads.deferToThread(
                python_handshake, port, python_client(self.caPem, CBC_ECDSA)
            )
        context = python_client(self.caPem, "ECDHE-ECDSA-AES128-GCM-SHA256:" + CBC_ECDSA)
        self.assertEqual(
            await threads.deferToThread(python_handshake, port, context),
            ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        )

    async def test_rsaCertificate(self) -> None:
        """With an RSA certificate: ECDHE-RSA AEAD suites only; no DHE without parameters."""
        port = await self.listenAsServer(self.rsaKey, self.rsaPem)
        for suite in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"):
            self.assertEqual(
                await self.handshake(self.limitedClient(port, suite)), ("TLSv1.2", suite)
            )
        await self.assertRefused(self.limitedClient(port, CBC_RSA))
        await self.assertRefused(self.limitedClient(port, "DHE-RSA-AES128-GCM-SHA256"))

    async def test_dhParameters(self) -> None:
        """With ``dhParameters=`` the DHE-RSA AEAD suites work too, and DHE CBC ones still not."""
        port = await self.listenAsServer(
            self.rsaKey, self.rsaPem, dhParameters=str(self.dhParameters)
        )
        for suite in ("DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-CHACHA20-POLY1305"):
            self.assertEqual(
                await self.handshake(self.limitedClient(port, suite)), ("TLSv1.2", suite)
            )
        await self.assertRefused(self.limitedClient(port, CBC_RSA))


class ClientSuiteTests(TLSTestCase):
    """Our TLS clients offer AEAD suites only: a server with only CBC ones gets no connection."""

    async def test_failoverLink(self) -> None:
        """The failover's link to its primary fails against CBC only, works with the server."""
        await self.assertRefused(self.failoverLink(await self.listenCBCOnly()))
        port = await self.listenAsServer(self.ecKey, self.ecPem)
        version, suite = await self.handshake(self.failoverLink(port))
        self.assertTrue(is_aead(suite), suite)

    async def test_sdk(self) -> None:
        """The client SDK's ``tls_endpoint_for`` fails against CBC only, works with the server."""
        await self.assertRefused(self.sdkEndpoint(await self.listenCBCOnly()))
        port = await self.listenAsServer(self.ecKey, self.ecPem)
        version, suite = await self.handshake(self.sdkEndpoint(port))
        self.assertTrue(is_aead(suite), suite)

    async def test_tlsTwelveOffer(self) -> None:
        """Under TLS 1.2 our clients pick an AEAD suite from a server that offers every suite."""
        certificate = twisted_ssl.PrivateCertificate.loadPEM(
            self.ecPem.read_bytes() + self.ecKey.read_bytes()
        )
        options = twisted_ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            acceptableCiphers=twisted_ssl.AcceptableCiphers.fromOpenSSLCipherString(
                CBC_ECDSA + ":ECDHE-ECDSA-AES256-GCM-SHA384"
            ),
            lowerMaximumSecurityTo=twisted_ssl.TLSVersion.TLSv1_2,
        )
        answerers = ProbeFactory(StatusAnswerer)
        port = await self.listen(
            endpoints.SSL4ServerEndpoint(reactor, 0, options, interface=HOST), answerers
        )
        for endpoint in (self.failoverLink(port), self.sdkEndpoint(port)):
            self.assertEqual(
                await self.handshake(endpoint), ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
            )
        reply = await self.toolsRequest(port)
        self.assertTrue(reply.ok)
        self.assertEqual(
            await answerers.probes[-1].done, ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
        )

    async def test_toolsRequest(self) -> None:
        """The tools' request (``blockingRequest``, ``tls.clientOptions``) fails against CBC only.

        It fails as a TLS failure, not as a refused certificate; with the
        server it gets its answer, over TLS 1.3.
        """
        port = await self.listenCBCOnly()
        with self.assertRaises(lineclient.TLSFailed) as caught:
            await self.toolsRequest(port)
        self.assertNotIsInstance(caught.exception, lineclient.CertificateRefused)
        answerers = ProbeFactory(StatusAnswerer)
        port = await self.listenAsServer(self.ecKey, self.ecPem, answerers)
        reply = await self.toolsRequest(port)
        self.assertEqual(reply.args["role"], "primary")
        version, suite = await answerers.probes[-1].done
        self.assertEqual(version, "TLSv1.3")
        self.assertTrue(is_aead(suite), suite)

    async def test_statusCommand(self) -> None:
        """``licenseserver status --ca`` fails against CBC only and asks the server."""
        port = await self.listenCBCOnly()
        status, err = await self.statusCommand(port)
        self.assertEqual(status, 1)
        self.assertIn(f"TLS with {HOST}:{port} failed", err)
        port = await self.listenAsServer(self.ecKey, self.ecPem, ProbeFactory(StatusAnswerer))
        status, err = await self.statusCommand(port)
        self.assertEqual(status, 0, err)

    async def test_upgradeQuestion(self) -> None:
        """The upgrade's STATUS question to a failover's primary fails against CBC only.

        With the server, it gets the answer.
        """
        port = await self.listenCBCOnly()
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.upgradeQuestion(port)
        self.assertIn("TLS failed", str(caught.exception))
        port = await self.listenAsServer(self.ecKey, self.ecPem, ProbeFactory(StatusAnswerer))
        self.assertEqual((await self.upgradeQuestion(port))["role"], "primary")


class CompanyCATests(TLSTestCase):
    """A company CA made elsewhere: RSA, through an intermediate, without key usage extensions.

    Accepted alike by the failover's link, the client SDK and the tools, on
    every supported Python: they all check through pyOpenSSL, which applies
    none of Python 3.13's strict X.509 checks that refuse a CA certificate
    without key usage (see ``tls.clientOptionsTrusting``). An intermediate
    alone is no trust root anywhere.
    """

    def setUp(self) -> None:
        super().setUp()
        root_key, intermediate_key, leaf_key = rsa_key(), rsa_key(), rsa_key()
        root = sign("Corp Root CA", root_key, None, root_key, ca=True, key_usage=False)
        intermediate = sign(
            "Corp Issuing CA", intermediate_key, root, root_key, ca=True, key_usage=False
        )
        leaf = sign(HOST, leaf_key, intermediate, intermediate_key, ca=False, ips=(HOST,))
        for certificate in (root, intermediate):
            with self.assertRaises(x509.ExtensionNotFound):
                certificate.extensions.get_extension_for_class(x509.KeyUsage)
        self.rootPem = self.base / "corp-root.pem"
        self.rootPem.write_bytes(certs.certificate_pem(root))
        self.intermediatePem = self.base / "corp-intermediate.pem"
        self.intermediatePem.write_bytes(certs.certificate_pem(intermediate))
        self.corpPem = self.base / "corp-server.pem"
        self.corpPem.write_bytes(certs.certificate_pem(leaf))
        self.corpKey = write_key(self.base / "corp-server.key", leaf_key)

    async def listenCorp(self) -> int:
        """Listen as a server with the company certificate and its intermediate."""
        return await self.listenAsServer(
            self.corpKey,
            self.corpPem,
            ProbeFactory(StatusAnswerer),
            extraCertChain=str(self.intermediatePem),
        )

    async def test_accepted(self) -> None:
        """The failover's link, the SDK and the tools trust the company root."""
        port = await self.listenCorp()
        for endpoint in (
            self.failoverLink(port, self.rootPem),
            self.sdkEndpoint(port, self.rootPem),
        ):
            version, _ = await self.handshake(endpoint)
            self.assertEqual(version, "TLSv1.3")
        status, err = await self.statusCommand(port, self.rootPem)
        self.assertEqual(status, 0, err)
        self.assertEqual((await self.upgradeQuestion(port, self.rootPem))["role"], "primary")

    async def test_intermediateAloneRefused(self) -> None:
        """Trusting only the intermediate is refused by all of them (no partial chains)."""
        port = await self.listenCorp()
        for endpoint in (
            self.failoverLink(port, self.intermediatePem),
            self.sdkEndpoint(port, self.intermediatePem),
        ):
            await self.assertRefused(endpoint)
        status, err = await self.statusCommand(port, self.intermediatePem)
        self.assertEqual(status, 1)
        self.assertIn("the server's certificate does not verify", err)
        with self.assertRaises(upgrade.PrimaryUnreachableError) as caught:
            await self.upgradeQuestion(port, self.intermediatePem)
        self.assertIn("its TLS certificate does not verify", str(caught.exception))

    async def test_chainNeeded(self) -> None:
        """Without ``extraCertChain=`` clients that trust only the root refuse the server."""
        port = await self.listenAsServer(self.corpKey, self.corpPem)
        await self.assertRefused(self.failoverLink(port, self.rootPem))


class EndpointStringTests(unittest.TestCase):
    """``ssl:`` strings as ``--port`` and ``--web`` take them."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        certs.write_ca(self.base / "ca")
        self.pem, self.key = certs.write_server_certificate(
            self.base / "ca", self.base / "s", ["localhost"]
        )

    def test_split(self) -> None:
        """Fields split as Twisted splits them, escapes included."""
        self.assertEqual(
            split_endpoint(r"ssl:0:privateKey=/a\:b\=c:certKey=x=y:k"),
            ("ssl", ["0", "k"], {"privateKey": "/a:b=c", "certKey": "x=y"}),
        )
        with self.assertRaises(ValueError):
            split_endpoint("ssl:0:privateKey=a\\")

    def test_fields(self) -> None:
        """Port, interface and backlog reach the endpoint; a path with ':' and '=' loads."""
        odd = self.base / "a:b=c"
        odd.mkdir()
        pem, key = certs.write_server_certificate(self.base / "ca", odd / "s", ["localhost"])
        text = certs.tls_endpoint(4433, key, pem, interface="::1") + ":backlog=7"
        memory = MemoryReactorClock()
        self.successResultOf(listening.serverEndpoint(memory, text).listen(Factory()))
        [(port, _, options, backlog, interface)] = memory.sslServers
        self.assertEqual((port, backlog, interface), (4433, 7, "::1"))
        self.assertIsInstance(options, twisted_ssl.CertificateOptions)
        memory = MemoryReactorClock()
        unnamed = certs.tls_endpoint(4433, key, pem)
        self.successResultOf(listening.serverEndpoint(memory, unnamed).listen(Factory()))
        [(_, _, _, backlog, _)] = memory.sslServers
        self.assertEqual(backlog, listening.LISTEN_BACKLOG)

    def test_refused(self) -> None:
        """``sslmethod``, unknown or repeated fields, and a missing port are refused."""
        base = certs.tls_endpoint(0, self.key, self.pem)
        for text, reason in (
            (base + ":sslmethod=TLSv1_METHOD", "sslmethod is not supported"),
            (base + ":cipherSuite=ALL", "no field 'cipherSuite'"),
            (f"ssl:0:{self.key}:privateKey={self.key}", "given twice"),
            (f"ssl:privateKey={self.key}", "names no port"),
            ("ssl:port=x", "must be numbers"),
        ):
            with self.assertRaises(ValueError, msg=text) as caught:
                listening.serverEndpoint(reactor, text)
            self.assertIn(reason, str(caught.exception))

    def test_badFiles(self) -> None:
        """A missing key, no chain in ``extraCertChain`` or no parameters are refused at once."""
        base = certs.tls_endpoint(0, self.key, self.pem)
        with self.assertRaises(OSError):
            listening.serverEndpoint(reactor, certs.tls_endpoint(0, self.base / "nokey", self.pem))
        with self.assertRaises(ValueError) as caught:
            listening.serverEndpoint(reactor, base + f":extraCertChain={self.key}")
        self.assertIn("holds no PEM certificate", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            listening.serverEndpoint(reactor, base + f":dhParameters={self.pem}")
        self.assertIn("no PEM Diffie-Hellman parameters", str(caught.exception))
        with self.assertRaises(OSError):
            listening.serverEndpoint(reactor, base + f":dhParameters={self.base / 'nodh'}")

    def test_optionsRefuseSSLMethod(self) -> None:
        """``twistd licenseserver --port ssl:...:sslmethod=...`` ends with one line."""
        options = tap.Options()
        text = certs.tls_endpoint(0, self.key, self.pem) + ":sslmethod=TLSv1_METHOD"
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(["--port", text])
        self.assertIn("sslmethod is not supported", str(caught.exception))
