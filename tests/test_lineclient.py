"""The one client of the line protocol: matching, records, checks, timeouts, and one blocking ask.

Matching and breaking are tested on a ``StringTransport``; the exchange with a
real server's protocol over ``iosim`` pumps; ``blockingRequest``, which is
about sockets and a private reactor, against real listening ports on
127.0.0.1, called from a worker thread while the test's reactor serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import endpoints, error, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from licenseserver import certs, listening, tls
from licenseserver._version import EDITION, __version__
from licenseserver.passwords import peer_proof
from licenseserver.protocols import lineclient, wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.lineclient import LineClient, Reply
from licenseserver.testing import FakeStore, PumpEndpoint
from tests.helpers import licenseFile, makeRole
from tests.test_tls_ciphers import rsa_key, sign, write_key

HOST = "127.0.0.1"


class SyncClient(LineClient):
    """A client that reads answers as the failover's link does: numbers checked, records."""

    numbers = ("lines", "revision")
    announces = "lines"


def connected(client: LineClient) -> StringTransport:
    transport = StringTransport()
    client.makeConnection(transport)
    return transport


class MatchingTests(unittest.TestCase):
    """Answers go to requests in order, record lines with the answer that announced them."""

    def test_inOrder(self) -> None:
        """Each answer fires the oldest waiting request with a Reply; ERR is a Reply too."""
        client = LineClient()
        transport = connected(client)
        first = client.request("PING")
        second = client.request("CHECKOUT", {"product": "XMLSpy"})
        client.dataReceived(b'OK\nERR 409 no-seats message="full"\n')
        self.assertEqual(self.successResultOf(first), Reply(wire.Response(True, {})))
        reply = self.successResultOf(second)
        self.assertFalse(reply.ok)
        self.assertEqual((reply.response.code, reply.response.reason), (409, "no-seats"))
        self.assertEqual(reply.args, {"message": "full"})
        self.assertTrue(client.usable)
        self.assertFalse(transport.disconnecting)

    def test_pipelining(self) -> None:
        """Requests go out before any answer came; answers cut anywhere are put together."""
        client = LineClient()
        transport = connected(client)
        waiting = [client.request("PING"), client.request("STATUS"), client.requestLine(b"X\n")]
        self.assertEqual(transport.value(), b"PING\nSTATUS\nX\n")
        for byte in b"OK a=1\nOK a=2\r\nOK a=3\n":
            client.dataReceived(bytes([byte]))
        self.assertEqual([self.successResultOf(d).args["a"] for d in waiting], ["1", "2", "3"])

    def test_recordLines(self) -> None:
        """``lines=N`` takes the next N lines along, whatever they say; then matching goes on."""
        client = SyncClient()
        connected(client)
        sync, beat, empty = (client.request(v) for v in ("SYNC", "BEAT", "SYNC"))
        client.dataReceived(b"OK revision=7 lines=2\nOK\nPUT {}\n")
        client.dataReceived(b"OK revision=7\nOK revision=7 lines=0\n")
        reply = self.successResultOf(sync)
        self.assertEqual((reply.integer("revision"), reply.lines), (7, (b"OK", b"PUT {}")))
        self.assertEqual(self.successResultOf(beat).lines, ())
        self.assertEqual(self.successResultOf(empty).lines, ())
        self.assertTrue(client.usable)

    def test_recordsOnlyWhenAnnounced(self) -> None:
        """A client that is not told of ``announces`` reads ``lines=`` as any argument."""
        client = LineClient()
        connected(client)
        d = client.request("SYNC")
        client.dataReceived(b"OK lines=2\n")
        self.assertEqual(self.successResultOf(d).lines, ())


class BreakingTests(unittest.TestCase):
    """Whatever makes answers unmatchable drops the connection and fails every waiting request."""

    def assertBroken(
        self, client: LineClient, transport: StringTransport, kind: type, waiting: list
    ) -> Any:
        """Every request in ``waiting`` and any new one fail with the same ``kind`` error."""
        problems = [self.failureResultOf(d, kind).value for d in waiting]
        self.assertTrue(transport.disconnected, "the connection was aborted")
        self.assertFalse(client.usable)
        later = self.failureResultOf(client.request("PING"), kind).value
        for problem in problems:
            self.assertIs(problem, later)
        return later

    def test_junkLine(self) -> None:
        """A line that is no answer fails every waiting request; the lines after it are ignored."""
        client = LineClient()
        transport = connected(client)
        waiting = [client.request("PING"), client.request("PING")]
        client.dataReceived(b"HELLO there\nOK\n")
        problem = self.assertBroken(client, transport, lineclient.JunkAnswer, waiting)
        self.assertEqual(problem.line, b"HELLO there")
        self.assertIn("starts with OK or ERR", problem.why)

    def test_unaskedAnswer(self) -> None:
        """An answer while nothing waits is a broken connection, even a well-formed one."""
        client = LineClient()
        transport = connected(client)
        client.dataReceived(b"OK\n")
        problem = self.assertBroken(client, transport, lineclient.UnaskedAnswer, [])
        self.assertEqual(problem.line, b"OK")

    def test_overlongLine(self) -> None:
        """A line longer than MAX_LENGTH, ended or not, breaks the connection."""
        for data in (b"OK " + b"x" * 40 + b"\n", b"OK " + b"x" * 40):
            client = LineClient()
            client.MAX_LENGTH = 32
            transport = connected(client)
            waiting = [client.request("PING")]
            client.dataReceived(data)
            problem = self.assertBroken(client, transport, lineclient.OverlongLine, waiting)
            self.assertEqual(problem.limit, 32)

    def test_numberCheck(self) -> None:
        """A number argument the client checks must be 1 to MAX_DIGITS digits, in OK and ERR."""
        client = SyncClient()
        connected(client)
        d = client.request("BEAT")
        client.dataReceived(b"OK revision=" + b"9" * 18 + b"\n")
        self.assertEqual(self.successResultOf(d).integer("revision"), 10**18 - 1)
        for line in (
            b"OK revision=" + b"1" * 19,
            b"OK revision=12a",
            b'OK revision=""',
            b"ERR 409 already-paired revision=-1",
            b"OK lines=x",
        ):
            client = SyncClient()
            transport = connected(client)
            waiting = [client.request("BEAT")]
            client.dataReceived(line + b"\n")
            problem = self.assertBroken(client, transport, lineclient.BadNumber, waiting)
            self.assertEqual(problem.line, line)
            self.assertEqual(problem.name, "lines" if b"lines" in line else "revision")

    def test_announcedCountChecked(self) -> None:
        """``announces`` is read as a number even when ``numbers`` does not list it."""
        client = LineClient()
        client.announces = "lines"
        transport = connected(client)
        waiting = [client.request("SYNC")]
        client.dataReceived(b"OK lines=" + b"9" * 19 + b"\n")
        problem = self.assertBroken(client, transport, lineclient.BadNumber, waiting)
        self.assertEqual(problem.name, "lines")

    def test_timeout(self) -> None:
        """No answer in time breaks the connection: that request and those behind it fail."""
        clock = Clock()
        client = LineClient(clock, timeout=10)
        transport = connected(client)
        answered = client.request("PING")
        client.dataReceived(b"OK\n")
        self.successResultOf(answered)
        self.assertEqual(clock.getDelayedCalls(), [], "an answer stops its timer")
        first = client.request("STATUS")
        clock.advance(5)
        second = client.request("PING")
        clock.advance(4.9)
        self.assertNoResult(first)
        clock.advance(0.1)
        problem = self.assertBroken(client, transport, lineclient.TimedOut, [first, second])
        self.assertEqual((problem.verb, problem.timeout), ("STATUS", 10))
        self.assertEqual(str(problem), "no answer to STATUS in 10 s")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connectionLost(self) -> None:
        """A lost connection fails every waiting request, one amid its records too."""
        client = SyncClient()
        connected(client)
        lost: list[LineClient] = []
        client.onLost = lost.append
        waiting = [client.request("SYNC"), client.request("BEAT")]
        client.dataReceived(b"OK revision=3 lines=5\nPUT {}\n")
        reason = Failure(error.ConnectionDone())
        client.connectionLost(reason)
        problems = [self.failureResultOf(d, lineclient.Disconnected).value for d in waiting]
        self.assertIs(problems[0].reason, reason)
        self.assertIs(problems[0], problems[1])
        self.assertEqual(lost, [client])
        self.failureResultOf(client.request("PING"), lineclient.Disconnected)

    def test_close(self) -> None:
        """``close`` closes in order and ``abort`` drops; what waits fails with ``Closed``."""
        for method, aborted in (LineClient.close, False), (LineClient.abort, True):
            client = LineClient()
            transport = connected(client)
            d = client.request("PING")
            method(client)
            self.failureResultOf(d, lineclient.Closed)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(transport.disconnected, aborted)
            client.connectionLost(Failure(error.ConnectionDone()))
            self.failureResultOf(client.request("PING"), lineclient.Closed)


class Mapped(Exception):
    """A user's own error type."""


class Refusal(Exception):
    """A user's error for an ERR answer."""


class HookTests(unittest.TestCase):
    """A user's hooks turn answers and problems into its own results and errors."""

    def test_hooks(self) -> None:
        """``answered`` gives results (raising fails one request), ``errorFor`` is asked once."""
        asked: list[lineclient.LineClientError] = []

        class Mine(LineClient):
            def answered(self, answer: Any, lines: tuple[bytes, ...]) -> Any:
                if not answer.ok:
                    raise Refusal(answer.reason)
                return dict(answer.args)

            def errorFor(self, problem: lineclient.LineClientError) -> Exception:
                asked.append(problem)
                return Mapped(str(problem))

        client = Mine()
        connected(client)
        ok, refused, junk, behind = (client.request("PING") for _ in range(4))
        client.dataReceived(b"OK a=1\nERR 403 not-assigned\nnonsense\n")
        self.assertEqual(self.successResultOf(ok), {"a": "1"})
        self.assertEqual(self.failureResultOf(refused, Refusal).value.args, ("not-assigned",))
        self.assertFalse(client.usable)
        first = self.failureResultOf(junk, Mapped).value
        self.assertIs(self.failureResultOf(behind, Mapped).value, first)
        client.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual([type(p) for p in asked], [lineclient.JunkAnswer])


class ServerTests(unittest.TestCase):
    """Against the server's own protocol, over iosim pumps."""

    def setUp(self) -> None:
        self.role = makeRole(FakeStore(), peerSecret="lineclient-secret")
        self.addCleanup(self.role.stopService)
        self.endpoint = PumpEndpoint(LicensingFactory(self.role))

    def connect(self, cls: type = LineClient) -> Any:
        client = self.successResultOf(self.endpoint.connect(Factory.forProtocol(cls)))
        self.addCleanup(client.close)
        return client

    def answer(self, d: Any) -> Any:
        self.endpoint.flush()
        return self.successResultOf(d)

    def test_pipelinedAtTheServer(self) -> None:
        """Pipelined requests to the server each get their own answer."""
        client = self.connect()
        waiting = [client.request(v) for v in ("PING", "STATUS", "FOO", "CHECKOUT")]
        self.endpoint.flush()
        ping, status, foo, checkout = (self.successResultOf(d) for d in waiting)
        self.assertEqual(ping.args, {})
        self.assertEqual((status.args["server"], status.args["role"]), ("ls1", "primary"))
        self.assertEqual(foo.response.reason, "unknown-command")
        self.assertEqual(checkout.response.reason, "hello-required")

    def test_syncRecords(self) -> None:
        """A paired peer's SYNC answer comes with exactly the record lines it announced."""
        self.successResultOf(self.role.addLicenses(licenseFile({"seats": 2})))
        client = self.connect(SyncClient)
        peer = {"name": "ls2", "version": __version__, "edition": EDITION, "listen": "ls2:35355"}
        challenge = self.answer(client.request("PEER", peer)).args["challenge"]
        proof = peer_proof("lineclient-secret", challenge, "ls2")
        revision = self.answer(client.request("AUTH", {"proof": proof})).integer("revision")
        sync = client.request("SYNC", {"since": 0})
        beat = client.request("BEAT", {"revision": revision})
        self.endpoint.flush()
        reply = self.successResultOf(sync)
        self.assertEqual(reply.args["mode"], "snapshot")
        self.assertEqual(len(reply.lines), reply.integer("lines"))
        self.assertGreater(len(reply.lines), 0)
        self.assertTrue(all(line.startswith(b"PUT {") for line in reply.lines))
        self.assertEqual(self.successResultOf(beat).integer("revision"), revision)


class Silent(Protocol):
    """Accepts a connection and never says a word."""


class BlockingRequestTests(unittest.TestCase):
    """``blockingRequest`` on its private reactor, in a worker thread, against real ports."""

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface=HOST)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def ask(self, port: int, verb: str = "STATUS", **kw: Any) -> Any:
        kw.setdefault("timeout", 5.0)
        return threads.deferToThread(lineclient.blockingRequest, HOST, port, verb, **kw)

    def role(self) -> Any:
        role = makeRole(FakeStore())
        self.addCleanup(role.stopService)
        return role

    async def test_answered(self) -> None:
        """A real server's answers come back as Replies, ERR ones included."""
        port = self.listen(LicensingFactory(self.role()))
        reply = await self.ask(port)
        self.assertEqual((reply.args["server"], reply.args["role"]), ("ls1", "primary"))
        refused = await self.ask(port, "HELLO", args={"product": "XMLSpy"})
        self.assertEqual((refused.ok, refused.response.reason), (False, "bad-request"))

    async def test_refused(self) -> None:
        """A port where nobody listens: ConnectFailed, with the system's words."""
        port = reactor.listenTCP(0, Factory(), interface=HOST)
        closed = port.getHost().port
        await port.stopListening()
        with self.assertRaises(lineclient.ConnectFailed) as caught:
            await self.ask(closed)
        self.assertEqual(str(caught.exception), "Connection refused")

    async def test_notAHostName(self) -> None:
        """A host that cannot be a name fails without a connection attempt."""
        with self.assertRaises(lineclient.ConnectFailed) as caught:
            await threads.deferToThread(lineclient.blockingRequest, "a..b", 1, "PING", timeout=5)
        self.assertEqual(str(caught.exception), "'a..b' is not a host name")

    async def test_silentServer(self) -> None:
        """A server that never answers: TimedOut after the timeout, and the call returns."""
        port = self.listen(Factory.forProtocol(Silent))
        with self.assertRaises(lineclient.TimedOut) as caught:
            await self.ask(port, timeout=0.2)
        self.assertEqual(str(caught.exception), "no answer to STATUS in 0.2 s")

    async def test_closedWithoutAnswer(self) -> None:
        """A server that closes the connection instead of answering: Disconnected."""

        class Hangup(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"OK half")
                self.transport.loseConnection()

        port = self.listen(Factory.forProtocol(Hangup))
        with self.assertRaises(lineclient.Disconnected):
            await self.ask(port)

    def listenTLS(self, names: list[str], ips: list[str]) -> tuple[int, Path]:
        """The server's protocol over TLS with a certificate of a CA of its own: (port, CA)."""
        base = Path(self.mktemp()).resolve()
        ca, _ = certs.write_ca(base / "ca", "test CA")
        cert, key = certs.write_server_certificate(base / "ca", base / "server", names, ips)
        endpoint = endpoints.serverFromString(
            reactor, certs.tls_endpoint(0, key, cert, interface=HOST)
        )
        port = self.successResultOf(endpoint.listen(LicensingFactory(self.role())))
        self.addCleanup(port.stopListening)
        return port.getHost().port, ca

    async def test_tls(self) -> None:
        """Over TLS the certificate is checked as the failover's link checks it."""
        port, ca = self.listenTLS(["localhost"], [HOST])
        reply = await self.ask(port, tlsOptions=tls.clientOptions(HOST, ca))
        self.assertEqual(reply.args["server"], "ls1")
        _, otherCA = self.listenTLS(["localhost"], [HOST])
        with self.assertRaises(lineclient.CertificateRefused) as caught:
            await self.ask(port, tlsOptions=tls.clientOptions(HOST, otherCA))
        self.assertIn("another issuer", caught.exception.detail)
        unnamed, ca = self.listenTLS(["localhost"], [])
        with self.assertRaises(lineclient.CertificateRefused) as caught:
            await self.ask(unnamed, tlsOptions=tls.clientOptions(HOST, ca))
        self.assertEqual(caught.exception.detail, f"it does not name {HOST}")

    async def test_companyCA(self) -> None:
        """A CA without key usage is trusted through its intermediate; the intermediate alone
        is no trust root: as for the failover's link (``test_tls_ciphers.CompanyCATests``)."""
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        rootKey, issuingKey, leafKey = rsa_key(), rsa_key(), rsa_key()
        root = sign("Corp Root CA", rootKey, None, rootKey, ca=True, key_usage=False)
        issuing = sign("Corp Issuing CA", issuingKey, root, rootKey, ca=True, key_usage=False)
        leaf = sign(HOST, leafKey, issuing, issuingKey, ca=False, ips=(HOST,))
        pems = {}
        for name, certificate in ("root", root), ("issuing", issuing), ("leaf", leaf):
            pems[name] = base / f"{name}.pem"
            pems[name].write_bytes(certs.certificate_pem(certificate))
        key = write_key(base / "leaf.key", leafKey)
        description = certs.tls_endpoint(0, key, pems["leaf"], interface=HOST)
        description += f":extraCertChain={endpoints.quoteStringArgument(str(pems['issuing']))}"
        server = listening.serverEndpoint(reactor, description)
        port = await server.listen(LicensingFactory(self.role()))
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        reply = await self.ask(number, tlsOptions=tls.clientOptions(HOST, pems["root"]))
        self.assertEqual(reply.args["server"], "ls1")
        with self.assertRaises(lineclient.CertificateRefused):
            await self.ask(number, tlsOptions=tls.clientOptions(HOST, pems["issuing"]))

    async def test_tlsToPlainPort(self) -> None:
        """TLS to a port that does not speak it is a TLS failure, not a certificate's."""
        port = self.listen(LicensingFactory(self.role()))
        _, ca = self.listenTLS(["localhost"], [HOST])
        with self.assertRaises(lineclient.TLSFailed) as caught:
            await self.ask(port, tlsOptions=tls.clientOptions(HOST, ca))
        self.assertNotIsInstance(caught.exception, lineclient.CertificateRefused)
