"""TLS on real server processes: the licensing port, the web port and the failover's link.

Certificates come from ``licenseserver.certs`` into each test's temporary directory: a
private CA and a server certificate for 127.0.0.1. Servers are ``twistd licenseserver``
processes from the harness with ``ssl:`` endpoints; clients use Python's ``ssl`` module
with the CA as their only trust root. Failover tests pair a failover (``--primary-ca``)
with a TLS primary, then break one thing at a time (the CA it trusts, the name in the
primary's certificate, the certificate's validity) and watch that the failover refuses
the link and stays in standby. Waits poll with a deadline; every process is stopped.
"""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial import unittest

from licenseserver import certs
from tests.integration.harness import (
    HarnessError,
    ServerProcess,
    api_get,
    hold_for,
    http_request,
    issue_license,
    make_vendor_key,
    start_server,
    tls_client_context,
    tls_endpoint,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient, Response

PRODUCT = "XMLSpy"
VERSION = "2025r2"
PRIMARY_NAME = "ls-tls-primary"
FAILOVER_NAME = "ls-tls-failover"
HEARTBEAT = 0.2
TAKEOVER = 1.5
STEADY = 3 * TAKEOVER
"""How long a failover that must not take over is watched."""
TAKEOVER_LIMIT = TAKEOVER + 2.0
"""A killed primary's failover must be active within this many seconds."""
SYNC_TIMEOUT = 15.0
STATE_TIMEOUT = 10.0
CLIENT_TIMEOUT = 5.0

log = Logger()


class TLSClient(PlainClient):
    """A ``PlainClient`` whose connection is TLS, checked against ``context`` and a host name."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_hostname: str,
        timeout: float = CLIENT_TIMEOUT,
    ):
        super().__init__(host, port, timeout=timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)


def plainExchange(port: int, data: bytes, timeout: float = CLIENT_TIMEOUT) -> tuple[bytes, bool]:
    """Send ``data`` over plain TCP; return what came back and whether the server closed.

    Reads until the server closes the connection or ``timeout`` seconds pass.
    """
    received = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
    return received, False


def tls12Handshake(port: int, cafile: Path, ciphers: str) -> tuple[str | None, str]:
    """A TLS 1.2 handshake offering only ``ciphers``: the version and suite agreed."""
    context = tls_client_context(cafile)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            return conn.version(), conn.cipher()[0]


class CertificatesMixin:
    """A private CA and a server certificate for 127.0.0.1 and localhost under ``self.base``."""

    def makeCertificates(self) -> None:
        self.base = Path(self.mktemp()).resolve()  # type: ignore[attr-defined]
        self.base.mkdir(parents=True)
        self.caPem, _ = certs.write_ca(self.base / "ca", "test CA")
        self.serverPem, self.serverKey = certs.write_server_certificate(
            self.base / "ca", self.base / "server", ["localhost"], ["127.0.0.1"]
        )
        self.clientContext = tls_client_context(self.caPem)

    def serverCertificate(self, prefix: str, *names: str, ips: tuple[str, ...] = (), **dates: Any):
        """Another server certificate from the same CA; returns (PEM, key)."""
        return certs.write_server_certificate(
            self.base / "ca", self.base / prefix, list(names), list(ips), **dates
        )


class TLSPortTests(CertificatesMixin, unittest.TestCase):
    """A primary whose licensing port and web port both serve TLS only."""

    def setUp(self) -> None:
        self.makeCertificates()
        self.server = start_server(
            self,
            self.base / "data",
            "--name",
            PRIMARY_NAME,
            name="tls-primary",
            licensing_endpoint=tls_endpoint(0, self.serverKey, self.serverPem),
            web_endpoint=tls_endpoint(0, self.serverKey, self.serverPem),
            web_tls=self.clientContext,
        )

    def connect(self, hostname: str = "127.0.0.1") -> TLSClient:
        client = TLSClient(
            "127.0.0.1", self.server.licensing_port, self.clientContext, server_hostname=hostname
        )
        self.addCleanup(client.close)
        return client

    def assertOK(self, response: Response, *keys: str) -> Response:
        self.assertTrue(response.ok, f"expected OK, got {response.line!r}")
        for key in keys:
            self.assertIn(key, response.args, f"no {key}= in {response.line!r}")
        return response

    def test_protocolOverTLS(self) -> None:
        """A client that trusts the CA speaks the protocol over TLS: PING, STATUS, HELLO."""
        client = self.connect()
        self.assertIn(client.sock.version(), ("TLSv1.2", "TLSv1.3"))
        peer = client.sock.getpeercert()
        self.assertIn(("IP Address", "127.0.0.1"), peer["subjectAltName"])
        self.assertEqual(client.request("PING").line, "OK")
        status = self.assertOK(client.request("STATUS"), "server", "role", "state")
        self.assertEqual(
            (status["server"], status["role"], status["state"]),
            (PRIMARY_NAME, "primary", "active"),
        )
        hello = client.request(
            "HELLO", product=PRODUCT, version=VERSION, host="ws-1", machine="machine-1", user="a"
        )
        self.assertOK(hello, "client", "heartbeat")
        self.assertEqual((hello["role"], hello["state"]), ("primary", "active"))
        # The certificate also names localhost.
        self.assertEqual(self.connect("localhost").request("PING").line, "OK")

    def test_otherNameRefusedByClient(self) -> None:
        """A client that connects by a name the certificate does not hold refuses the server."""
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.connect("ls9.example.com")

    def test_plainClientGetsNoAnswer(self) -> None:
        """A plain TCP client on the TLS port gets no protocol answer; TLS clients still work."""
        for request in (b"PING\n", b"STATUS\n", b"HELLO product=XMLSpy version=2025r2\n"):
            answer, closed = plainExchange(self.server.licensing_port, request)
            log.info(
                "plain {request!r} on the TLS port: {answer!r}, closed: {closed}",
                request=request,
                answer=answer,
                closed=closed,
            )
            self.assertNotIn(b"OK", answer)
            self.assertNotIn(b"ERR", answer)
            self.assertNotIn(b"\n", answer)

        self.assertTrue(self.server.running, self.server.log_tail())
        self.assertEqual(self.connect().request("PING").line, "OK")
        self.assertTrue(self.server.healthy(), self.server.log_tail())

    def test_webOverTLS(self) -> None:
        """The web port serves HTTPS: /healthz and /api/status answer a client trusting the CA."""
        self.assertTrue(self.server.web_url.startswith("https://127.0.0.1:"))
        self.assertEqual(http_request(self.server, "GET", "/healthz", auth=False).status, 200)
        status = http_request(self.server, "GET", "/api/status", auth=False).json()
        self.assertEqual((status["name"], status["role"]), (PRIMARY_NAME, "primary"))
        self.assertEqual(api_get(self.server, "/api/licenses"), [])

    def test_webRefusesPlainAndUntrusting(self) -> None:
        """Plain HTTP on the web port gets no HTTP answer; a client without the CA refuses it."""
        port = self.server.web_port
        with self.assertRaises((OSError, http.client.HTTPException)):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                r.read()
        with self.assertRaises(urllib.error.URLError) as caught:
            urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz",
                timeout=5,
                context=ssl.create_default_context(),
            )
        self.assertIsInstance(caught.exception.reason, ssl.SSLCertVerificationError)
        self.assertTrue(self.server.healthy())

    def test_aeadSuitesOnly(self) -> None:
        """Under TLS 1.2 both ports refuse a client that offers only CBC suites, not AEAD ones.

        What testssl.sh checks: a client limited to TLS 1.2 and CBC suites
        (LUCKY13's target) gets no connection on the licensing port or the web
        port; limited to an AEAD suite it gets that suite.
        """
        cbc = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA"
        aead = "ECDHE-ECDSA-CHACHA20-POLY1305"
        for port in (self.server.licensing_port, self.server.web_port):
            with self.assertRaises(ssl.SSLError, msg=f"port {port}"):
                tls12Handshake(port, self.caPem, cbc)
            self.assertEqual(tls12Handshake(port, self.caPem, aead), ("TLSv1.2", aead))
        self.assertTrue(self.server.healthy())


class TLSFailoverTestCase(CertificatesMixin, unittest.TestCase):
    """A TLS primary and a failover that reaches it with ``--primary-ca``."""

    def setUp(self) -> None:
        self.makeCertificates()
        self.primaryData = self.base / "primary"
        self.failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", self.primaryData)
        keys = self.failoverData / "vendor-keys"
        keys.mkdir(parents=True)
        shutil.copy(self.vendorKey.with_suffix(".pub"), keys)
        self.issued = 0
        self.primaryPort = 0
        self.primary: ServerProcess | None = None
        self.failover: ServerProcess | None = None

    # -- processes

    def startPrimary(
        self,
        pem: Path | None = None,
        key: Path | None = None,
        name: str = "primary",
        tls: bool = True,
    ) -> ServerProcess:
        """Start the primary with TLS on both ports; the licensing port stays the same.

        ``pem``/``key`` replace the licensing port's certificate (the web keeps the good one);
        without ``tls`` the licensing port is plain TCP.
        """
        if tls:
            endpoint = tls_endpoint(self.primaryPort, key or self.serverKey, pem or self.serverPem)
        else:
            endpoint = f"tcp:{self.primaryPort}:interface=127.0.0.1"
        self.primary = start_server(
            self,
            self.primaryData,
            "--name",
            PRIMARY_NAME,
            name=name,
            licensing_endpoint=endpoint,
            web_endpoint=tls_endpoint(0, self.serverKey, self.serverPem),
            web_tls=self.clientContext,
        )
        self.primaryPort = self.primary.licensing_port
        self.primaryAddress = f"127.0.0.1:{self.primaryPort}"
        return self.primary

    def startFailover(
        self, ca: Path | None = None, name: str = "failover", tls: bool = True
    ) -> ServerProcess:
        """Start a failover that trusts ``ca`` (the primary's CA by default) for its link.

        Without ``tls`` it is given no ``--primary-ca``: its link is plain TCP.
        """
        trust = ["--primary-ca", str(ca or self.caPem)] if tls else []
        self.failover = start_server(
            self,
            self.failoverData,
            "--role",
            "failover",
            "--primary",
            self.primaryAddress,
            *trust,
            "--peer-secret-file",
            str(self.primaryData / "peer-secret"),
            "--heartbeat",
            str(HEARTBEAT),
            "--takeover-after",
            str(TAKEOVER),
            "--name",
            FAILOVER_NAME,
            name=name,
        )
        return self.failover

    # -- looking at them

    def status(self, server: ServerProcess) -> dict[str, Any]:
        result = http_request(server, "GET", "/api/status", auth=False)
        if result.status != 200:
            raise HarnessError(f"GET /api/status: expected 200, got {result!r}")
        return result.json()

    def statuses(self) -> str:
        """Both status documents (or why they cannot be had) and the ends of both logs."""
        parts = []
        for server in (self.primary, self.failover):
            if server is None:
                continue
            try:
                parts.append(f"{server.name} status: {json.dumps(self.status(server))}")
            except Exception as e:
                parts.append(f"{server.name} status: unavailable ({e!r})")
            parts.append(server.log_tail(25))
        return "\n".join(parts)

    def addLicense(self) -> str:
        self.issued += 1
        path = issue_license(
            self.vendorKey, self.base / f"license-{self.issued}.json", PRODUCT, "concurrent", 3
        )
        [licenseId] = upload_license(self.primary, path)
        return licenseId

    def licenses(self, server: ServerProcess) -> set[str]:
        return {entry["id"] for entry in api_get(server, "/api/licenses")}

    def eventKinds(self, server: ServerProcess) -> list[str]:
        return [event.get("kind") for event in api_get(server, "/api/messages")]

    def waitSynced(self) -> dict[str, Any]:
        """Wait until the failover is a paired standby holding the primary's revision."""

        def synced() -> dict[str, Any] | None:
            primary = self.status(self.primary)
            failover = self.status(self.failover)
            peer = failover.get("peer") or {}
            if (
                failover.get("state") == "standby"
                and peer.get("link") == "paired"
                and peer.get("last_sync") is not None
                and failover.get("revision") == primary.get("revision")
            ):
                return failover
            return None

        return wait_for(
            synced, SYNC_TIMEOUT, "the failover to pair and sync over TLS", self.statuses
        )

    def pairOnce(self, tls: bool = True) -> str:
        """Pair a failover with the primary over TLS, let it sync a license, then stop it.

        From then on the failover holds a synced pool, so it would take over from a
        primary that it wrongly took for silent. Without ``tls`` both sides speak plain
        TCP. Returns the license id.
        """
        self.startPrimary(tls=tls)
        licenseId = self.addLicense()
        self.startFailover(name="failover-paired", tls=tls)
        self.waitSynced()
        self.assertEqual(self.licenses(self.failover), {licenseId})
        self.failover.stop()
        return licenseId

    def assertRefusedWithoutTakeover(self, mentions: str = "certificate") -> dict[str, Any]:
        """The failover shows a refused link whose reason says ``mentions``, and stays standby.

        Watches for three times the takeover time while the primary runs. Returns the
        failover's ``peer`` status.
        """

        def refused() -> dict[str, Any] | None:
            peer = self.status(self.failover).get("peer") or {}
            return peer if peer.get("link") == "refused" else None

        peer = wait_for(
            refused, STATE_TIMEOUT, "the failover to show a refused link", self.statuses
        )
        problem = peer.get("problem")
        self.assertIsInstance(problem, str, peer)
        self.assertIn(mentions.lower(), problem.lower(), peer)
        self.assertIsNotNone(peer.get("last_sync"), "the failover must have synced before")
        log.info("TLS refusal: the failover says {problem!r}", problem=problem)

        def standbyAndRefused() -> bool:
            status = self.status(self.failover)
            peer = status.get("peer") or {}
            return (
                status.get("state") == "standby"
                and peer.get("link") != "paired"
                and peer.get("takeovers") == 0
                and mentions.lower() in (peer.get("problem") or "").lower()
                and self.primary.running
            )

        hold_for(
            standbyAndRefused, STEADY, "standby with the link refused over TLS", self.statuses
        )
        self.assertNotIn("takeover", self.eventKinds(self.failover))
        self.assertIn("refused", self.eventKinds(self.failover))
        client = PlainClient("127.0.0.1", self.failover.licensing_port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        answer = client.request(
            "HELLO", product=PRODUCT, version=VERSION, host="ws-1", machine="machine-1", user="a"
        )
        self.assertEqual((answer.code, answer.reason), (503, "standby"), answer.line)
        self.assertTrue(self.primary.healthy(), self.statuses())
        return peer


class TLSPairingTests(TLSFailoverTestCase):
    """A failover that trusts the primary's CA: the link works like a plain one."""

    def test_pairsSyncsAndTakesOver(self) -> None:
        """Over TLS the failover pairs, syncs, stays standby, takes over when the primary dies."""
        self.startPrimary()
        licenseId = self.addLicense()
        self.startFailover()
        failover = self.waitSynced()
        peer = failover["peer"]
        self.assertEqual((peer["link"], peer["problem"]), ("paired", None))
        self.assertEqual(peer["name"], PRIMARY_NAME)
        self.assertEqual(peer["address"], self.primaryAddress)
        self.assertEqual(self.licenses(self.failover), {licenseId})
        primaryPeer = self.status(self.primary)["peer"] or {}
        self.assertEqual(primaryPeer.get("name"), FAILOVER_NAME, primaryPeer)

        def pairedStandby() -> bool:
            status = self.status(self.failover)
            peer = status.get("peer") or {}
            return (
                status.get("state") == "standby"
                and peer.get("link") == "paired"
                and peer.get("takeovers") == 0
            )

        hold_for(pairedStandby, STEADY, "a paired standby failover", self.statuses)

        later = self.addLicense()
        wait_for(
            lambda: self.licenses(self.failover) == {licenseId, later},
            SYNC_TIMEOUT,
            "the second license to reach the failover",
            self.statuses,
        )

        killed = time.monotonic()
        self.primary.kill()
        wait_for(
            lambda: self.status(self.failover).get("state") == "active",
            TAKEOVER_LIMIT,
            f"the failover to take over within {TAKEOVER_LIMIT} s of the kill",
            self.statuses,
        )
        log.info(
            "TLS pair: the failover was active {s:.2f} s after the kill",
            s=time.monotonic() - killed,
        )
        status = self.status(self.failover)
        self.assertEqual(status["peer"]["takeovers"], 1, status)
        self.assertEqual(self.licenses(self.failover), {licenseId, later})
        client = PlainClient("127.0.0.1", self.failover.licensing_port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        hello = client.request(
            "HELLO", product=PRODUCT, version=VERSION, host="ws-1", machine="machine-1", user="a"
        )
        self.assertTrue(hello.ok, hello.line)
        self.assertEqual((hello["role"], hello["state"]), ("failover", "active"))
        lease = client.request("CHECKOUT")
        self.assertTrue(lease.ok, lease.line)


class TLSRefusalTests(TLSFailoverTestCase):
    """A primary whose certificate the failover cannot accept is alive: no takeover."""

    def test_unknownCA(self) -> None:
        """A failover trusting another CA refuses the primary's certificate and stays standby."""
        self.pairOnce()
        otherCa, _ = certs.write_ca(self.base / "other-ca", "another CA")
        self.startFailover(ca=otherCa, name="failover-other-ca")
        self.assertRefusedWithoutTakeover()

    def test_wrongHostName(self) -> None:
        """A primary certificate for another host name is refused; the failover stays standby."""
        self.pairOnce()
        self.primary.stop()
        pem, key = self.serverCertificate("ls1", "ls1.example.com")
        self.startPrimary(pem, key, name="primary-ls1-cert")
        self.startFailover(name="failover-wrong-name")
        self.assertRefusedWithoutTakeover()

    def test_expiredCertificate(self) -> None:
        """An expired primary certificate is refused; the failover stays standby."""
        self.pairOnce()
        self.primary.stop()
        now = datetime.datetime.now(datetime.UTC)
        pem, key = self.serverCertificate(
            "expired",
            "localhost",
            ips=("127.0.0.1",),
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        self.startPrimary(pem, key, name="primary-expired-cert")
        self.startFailover(name="failover-expired")
        self.assertRefusedWithoutTakeover()


class TLSMismatchTests(TLSFailoverTestCase):
    """One side of the link speaks TLS and the other does not: the primary is still alive."""

    def test_tlsFailoverPlainPrimary(self) -> None:
        """A failover given --primary-ca for a plain primary refuses the link and stays standby."""
        self.pairOnce(tls=False)
        self.startFailover(name="failover-tls-to-plain")
        self.assertRefusedWithoutTakeover(mentions="TLS")

    def test_plainFailoverTLSPrimary(self) -> None:
        """A failover without --primary-ca for a TLS primary stays standby, the link refused."""
        self.pairOnce()
        self.startFailover(name="failover-plain-to-tls", tls=False)

        def standby() -> bool:
            status = self.status(self.failover)
            peer = status.get("peer") or {}
            return (
                status.get("state") == "standby"
                and peer.get("link") != "paired"
                and peer.get("takeovers") == 0
                and self.primary.running
            )

        hold_for(standby, STEADY, "standby while the TLS primary runs", self.statuses)
        peer = self.status(self.failover)["peer"]
        self.assertEqual(peer["link"], "refused", peer)
        self.assertIn("--primary-ca", peer["problem"], peer)
