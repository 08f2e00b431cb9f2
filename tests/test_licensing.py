"""Tests for licenseserver.protocols.licensing: sessions on the licensing port."""

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest

from licenseserver._version import EDITION, __version__
from licenseserver.passwords import peer_proof
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import MAX_IN_FLIGHT, LicensingFactory
from licenseserver.protocols.shedding import LINES_PER_TURN, TurnBudget
from licenseserver.store import StoreWriteError
from licenseserver.testing import FakeStore
from tests.helpers import licenseFile, makeRole, run

HELLO = b"HELLO product=XMLSpy version=2025r2 host=ws1 machine=m1\n"

GIANT = "9" * 5000
"""More digits than Python's ``int()`` takes from text (4300)."""
TOO_LONG = "1" * (wire.MAX_DIGITS + 1)
"""One digit more than an integer argument may have."""


class HeldStore(FakeStore):
    """A fake store whose commits wait until the test lets them through."""

    def __init__(self):
        super().__init__()
        self.held = False
        self.waiting = []

    def commit(self, revision, changes, audit=(), patient=False):
        done = super().commit(revision, changes, audit, patient)
        if not self.held:
            return done
        d = defer.Deferred()
        self.waiting.append((d, done))
        return d

    def releaseOne(self):
        d, done = self.waiting.pop(0)
        done.chainDeferred(d)


class ProtocolTestCase(unittest.TestCase):
    def setUp(self):
        self.store = HeldStore()
        self.role = makeRole(self.store)
        self.successResultOf(run(self.role.addLicenses(licenseFile({"seats": 2}))))
        self.factory = LicensingFactory(self.role)

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def lines(self, transport):
        data = transport.value()
        transport.clear()
        return [wire.parse_response(line) for line in data.split(b"\n") if line]


class SessionTests(ProtocolTestCase):
    def test_pingAndStatus(self):
        """PING and STATUS need no HELLO."""
        proto, transport = self.connect()
        proto.dataReceived(b"PING\nSTATUS\n")
        ping, status = self.lines(transport)
        self.assertTrue(ping.ok)
        self.assertEqual(status.args["role"], "primary")
        self.assertEqual(status.args["failover"], "none")

    def test_pipelinedInOrder(self):
        """Pipelined requests are answered once each, in order, while the store is slow."""
        proto, transport = self.connect()
        self.store.held = True
        proto.dataReceived(HELLO + b"CHECKOUT request=r1\nPING\nHEARTBEAT\nSTATUS\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(transport.producerState, "producing", "a few lines are only held")
        self.store.releaseOne()
        self.assertEqual(len(self.lines(transport)), 1)
        self.store.releaseOne()
        self.assertEqual(self.store.waiting, [], "a fresh lease's renewal needs no write")
        answers = self.lines(transport)
        self.assertEqual(len(answers), 4)
        checkout, ping, heartbeat, status = answers
        self.assertIn("lease", checkout.args)
        self.assertEqual(ping.args, {})
        self.assertEqual(heartbeat.args["ttl"], "120")
        self.assertEqual(status.args["state"], "active")
        self.assertEqual(transport.producerState, "producing")

    def test_sideBySide(self):
        """Pipelined CHECKOUTs are decided and written together; answers keep their order."""
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        self.lines(transport)
        self.store.held = True
        proto.dataReceived(b"CHECKOUT\nCHECKOUT\nFROB\nPING\n")
        self.assertEqual(len(self.store.waiting), 2, "both grants wait for the store at once")
        self.assertEqual(transport.value(), b"", "the error and PING wait their turn")
        d, done = self.store.waiting.pop(1)
        done.chainDeferred(d)
        self.assertEqual(transport.value(), b"", "the second answer waits for the first")
        self.store.releaseOne()
        answers = self.lines(transport)
        self.assertEqual(
            [(a.code, a.reason) for a in answers],
            [(0, ""), (0, ""), (400, "unknown-command"), (0, "")],
        )
        self.assertNotEqual(answers[0].args["lease"], answers[1].args["lease"])

    def test_sideBySideWriteFails(self):
        """A failed write is answered 500 in its turn; the request behind it keeps its own."""
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        self.lines(transport)
        self.store.held = True
        proto.dataReceived(b"CHECKOUT request=a\nCHECKOUT request=b\n")
        d, done = self.store.waiting.pop(0)
        d.errback(StoreWriteError("disk full", "SQLITE_FULL", "the disk is full"))
        (failed,) = self.lines(transport)
        self.assertEqual((failed.code, failed.reason), (500, "internal-error"))
        self.store.releaseOne()
        (granted,) = self.lines(transport)
        self.assertTrue(granted.ok)
        leases = list(self.role.pool.all("lease"))
        self.assertEqual([lease.id for lease in leases], [granted.args["lease"]])
        self.assertEqual(leases[0].request, "b")
        self.flushLoggedErrors(StoreWriteError)

    def test_sessionChangesWaitTheirTurn(self):
        """HELLO waits until the answers before it are out, and the lines after it wait for it."""
        proto, transport = self.connect()
        self.store.held = True
        proto.dataReceived(HELLO + b"CHECKOUT\n")
        self.assertEqual(len(self.store.waiting), 1, "CHECKOUT waits for HELLO's answer")
        self.store.releaseOne()
        self.assertEqual(len(self.store.waiting), 1)
        proto.dataReceived(b"HELLO product=XMLSpy version=2025r2 host=ws1 machine=m2\nPING\n")
        self.assertEqual(len(self.store.waiting), 1, "the second HELLO waits for CHECKOUT")
        self.store.releaseOne()
        hello, checkout, again, ping = self.lines(transport)
        self.assertTrue(hello.ok and checkout.ok and ping.ok)
        self.assertEqual(again.reason, "bad-request")

    def test_inFlightCap(self):
        """At most MAX_IN_FLIGHT requests of a session are outstanding; the rest wait."""
        self.successResultOf(run(self.role.addLicenses(licenseFile({"seats": 100}))))
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        self.lines(transport)
        self.store.held = True
        proto.dataReceived(b"CHECKOUT\n" * (MAX_IN_FLIGHT + 8))
        self.assertEqual(len(self.store.waiting), MAX_IN_FLIGHT)
        self.assertEqual(transport.producerState, "producing")
        self.store.releaseOne()
        self.assertEqual(len(self.store.waiting), MAX_IN_FLIGHT)
        self.assertEqual(len(self.lines(transport)), 1)
        while self.store.waiting:
            self.store.releaseOne()
        answers = self.lines(transport)
        self.assertEqual(len(answers), MAX_IN_FLIGHT + 7)
        self.assertTrue(all(a.ok for a in answers))

    def test_floodStopsReading(self):
        """Past a line's worth of held requests the server stops reading the socket."""
        proto, transport = self.connect()
        self.store.held = True
        proto.dataReceived(HELLO)
        proto.dataReceived(b"PING\n" * 2000)
        self.assertEqual(transport.producerState, "paused")
        self.store.releaseOne()
        self.assertEqual(transport.producerState, "producing")
        answered = len(self.lines(transport))
        self.assertEqual(answered, LINES_PER_TURN)  # the others wait for later turns
        for _ in range(2):
            self.role.clock.advance(0)
        self.assertEqual(answered + len(self.lines(transport)), 2001)

    def test_errorsKeepSession(self):
        """Bad lines get their ERR and the session goes on."""
        proto, transport = self.connect()
        proto.dataReceived(
            b"FROB\n\xff\xfe\n\x00\x01\x02\nHELLO product=a product=b\nCHECKOUT\n\n\r\nPING\n"
        )
        answers = self.lines(transport)
        self.assertEqual(
            [(a.code, a.reason) for a in answers],
            [
                (400, "unknown-command"),
                (400, "bad-request"),
                (400, "bad-request"),
                (400, "bad-request"),
                (401, "hello-required"),
                (0, ""),
            ],
        )
        self.assertFalse(transport.disconnecting)

    def test_longestLine(self):
        """A line of 8192 bytes with its LF is served; one byte more is line-too-long."""
        proto, transport = self.connect()
        line = b"PING pad=" + b"x" * (8192 - len(b"PING pad=") - 1) + b"\n"
        self.assertEqual(len(line), 8192)
        proto.dataReceived(line)
        self.assertTrue(self.lines(transport)[0].ok)
        proto.dataReceived(line[:-1] + b"x\n")
        (answer,) = self.lines(transport)
        self.assertEqual((answer.code, answer.reason), (413, "line-too-long"))
        self.assertTrue(transport.disconnecting)

    def test_hugeLineWithoutNewline(self):
        """100 KB without an LF gets line-too-long and the connection is closed."""
        proto, transport = self.connect()
        proto.dataReceived(b"HELLO " + b"a" * 100_000)
        (answer,) = self.lines(transport)
        self.assertEqual(answer.reason, "line-too-long")
        self.assertTrue(transport.disconnecting)

    def test_quit(self):
        """QUIT is answered OK, then the connection closes."""
        proto, transport = self.connect()
        proto.dataReceived(b"QUIT\nPING\n")
        self.assertEqual(transport.value(), b"OK\n")
        self.assertTrue(transport.disconnecting)

    def test_unexpectedError(self):
        """A fault in the server becomes 500 internal-error; the session goes on."""
        proto, transport = self.connect()

        async def broken(session, args):
            raise RuntimeError("boom")

        self.role.hello = broken
        proto.dataReceived(HELLO + b"PING\n")
        error, ping = self.lines(transport)
        self.assertEqual((error.code, error.reason), (500, "internal-error"))
        self.assertNotIn("boom", error.args.get("message", ""))
        self.assertTrue(ping.ok)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_disconnectWhileWaiting(self):
        """Lines a client sent before leaving are not served once it has gone."""
        proto, transport = self.connect()
        self.store.held = True
        proto.dataReceived(HELLO + b"CHECKOUT\n")
        proto.connectionLost(None)
        self.store.releaseOne()
        self.assertEqual(self.store.waiting, [])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.role.pool.count("client"), 1)
        self.assertEqual(self.role.pool.count("lease"), 0)

    def test_disconnectWithAHeldRequest(self):
        """A request held behind a pending one is not served once the client has gone."""
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        self.lines(transport)
        served = []

        async def hello(session, args):
            served.append(args)
            return {}

        self.role.hello = hello
        self.store.held = True
        proto.dataReceived(b"CHECKOUT\n" + HELLO)
        proto.connectionLost(None)
        self.store.releaseOne()
        self.assertEqual(served, [])
        self.assertEqual(transport.value(), b"")

    def test_peerVerbsOnARoleWithoutPeers(self):
        """A role that takes no failover refuses the peer verbs and closes the connection."""
        self.role.peerHandlers = dict
        self.factory = LicensingFactory(self.role)
        proto, transport = self.connect()
        proto.dataReceived(b"PEER name=x\n")
        (answer,) = self.lines(transport)
        self.assertEqual((answer.code, answer.reason), (403, "not-authorized"))
        self.assertTrue(transport.disconnecting)


class Turns:
    """A reactor's turns, one at a time: what ``callLater(0, ...)`` asks for runs at the
    next ``turn()``, and what that schedules at the one after (a ``task.Clock`` would
    run it at once)."""

    def __init__(self):
        self.calls = []

    def callLater(self, delay, f, *args):
        self.calls.append((f, args))
        return (f, args)

    def turn(self):
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class TurnTests(ProtocolTestCase):
    """No crowd of pipelining sessions holds the reactor: a turn serves about
    ``lines`` lines, and the others wait for later turns (``TurnBudget``)."""

    def setUp(self):
        super().setUp()
        self.clock = Turns()
        self.factory.turns = TurnBudget(self.clock, 10)

    def flood(self, sessions=3, pings=20):
        connected = []
        for n in range(sessions):
            proto, transport = self.connect()
            proto.dataReceived(HELLO.replace(b"m1", b"m%d" % n))
            connected.append((proto, transport))
        for _, transport in connected:
            self.lines(transport)
        self.factory.turns = TurnBudget(self.clock, 10)  # the HELLOs spend none of it
        for proto, _ in connected:
            proto.dataReceived(b"PING\n" * pings)
        return connected

    def answered(self, connected):
        return [len(self.lines(transport)) for _, transport in connected]

    def test_crowdWaitsForLaterTurns(self):
        """Once the turn's lines are spent, each session read serves one line and waits;
        later turns serve the waiting sessions in the order they ran out, until every
        line is answered."""
        connected = self.flood()
        self.assertEqual(self.answered(connected), [10, 1, 1])
        self.clock.turn()
        self.assertEqual(self.answered(connected), [10, 0, 0])
        self.clock.turn()
        self.assertEqual(self.answered(connected), [0, 10, 0])
        totals = [20, 11, 1]
        for _ in range(6):
            self.clock.turn()
            totals = [a + b for a, b in zip(totals, self.answered(connected), strict=True)]
        self.assertEqual(totals, [20, 20, 20])
        self.assertEqual(self.clock.calls, [])

    def test_anotherSessionHeardAtOnce(self):
        """While a crowd waits, a session with one line (the failover's BEAT, say) is
        answered in the turn its line is read."""
        self.flood()
        proto, transport = self.connect()
        proto.dataReceived(b"PING\n")
        self.assertEqual([a.ok for a in self.lines(transport)], [True])

    def test_answersDoNotJumpTheTurn(self):
        """A session waiting for a later turn stays paused when its answers come in
        meanwhile: it is the turn that lets it go on."""
        self.store.held = True
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        self.store.releaseOne()
        self.lines(transport)
        proto.dataReceived(b"CHECKOUT\n" * 12)
        self.assertTrue(proto.paused)
        self.assertEqual(len(self.store.waiting), 9)  # the HELLO took the first line
        while self.store.waiting:
            self.store.releaseOne()
        self.assertEqual(len(self.lines(transport)), 9)
        self.assertTrue(proto.paused)
        self.clock.turn()
        while self.store.waiting:
            self.store.releaseOne()
        self.assertEqual(len(self.lines(transport)), 3)

    def test_quietPortKeepsNoTimer(self):
        """Lines below the budget schedule nothing: a quiet port costs no timer."""
        proto, transport = self.connect()
        proto.dataReceived(HELLO + b"PING\n" * 8)
        self.assertEqual(len(self.lines(transport)), 9)
        self.assertEqual(self.clock.calls, [])


class GiantIntegerTests(ProtocolTestCase):
    """An integer argument of more than ``wire.MAX_DIGITS`` digits is a bad request.

    Each argument goes through a real line; the answer is ``ERR 400 bad-request``,
    nothing is logged as a failure, and the session goes on.
    """

    def assertRefusedDigits(self, proto, transport, verb, name, extra=""):
        """``verb`` with ``name`` of 5000 and of MAX_DIGITS + 1 digits gets 400 bad-request."""
        for digits in (GIANT, TOO_LONG):
            proto.dataReceived(f"{verb} {name}={digits}{extra}\nPING\n".encode())
            answer, ping = self.lines(transport)
            self.assertEqual((answer.code, answer.reason), (400, "bad-request"), answer)
            self.assertIn(f"{name} must be an integer", answer.args["message"])
            self.assertTrue(ping.ok)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertFalse(transport.disconnecting)

    def helloed(self):
        proto, transport = self.connect()
        proto.dataReceived(HELLO)
        (answer,) = self.lines(transport)
        self.assertTrue(answer.ok)
        return proto, transport

    def test_helloCores(self):
        """HELLO cores= with too many digits is refused, and registers nothing."""
        proto, transport = self.connect()
        self.assertRefusedDigits(
            proto, transport, "HELLO", "cores", " product=XMLSpy version=2025r2 host=h machine=m"
        )
        self.assertEqual(self.role.pool.count("client"), 0)

    def test_checkoutCores(self):
        """CHECKOUT cores= with too many digits is refused, and takes no seat."""
        self.assertRefusedDigits(*self.helloed(), "CHECKOUT", "cores")
        self.assertEqual(self.role.pool.count("lease"), 0)

    def test_borrowDays(self):
        """BORROW days= with too many digits is refused, and takes no seat."""
        self.assertRefusedDigits(*self.helloed(), "BORROW", "days")
        self.assertEqual(self.role.pool.count("lease"), 0)

    def test_mostDigits(self):
        """A number of MAX_DIGITS digits is read as a number: here one out of range."""
        proto, transport = self.helloed()
        proto.dataReceived(b"BORROW days=" + b"0" * (wire.MAX_DIGITS - 1) + b"1\n")
        (answer,) = self.lines(transport)
        self.assertTrue(answer.ok, answer)
        proto.dataReceived(b"CHECKOUT cores=" + b"9" * wire.MAX_DIGITS + b"\n")
        (answer,) = self.lines(transport)
        self.assertEqual(answer.reason, "bad-request")
        self.assertIn("from 1 to 1048576", answer.args["message"])


class GiantPeerIntegerTests(unittest.TestCase):
    """The peer verbs' integers (BEAT revision=, SYNC since=) are bounded the same way."""

    SECRET = "s3cret-pairing"

    def setUp(self):
        self.store = FakeStore()
        self.role = makeRole(self.store, peerSecret=self.SECRET)
        self.factory = LicensingFactory(self.role)

    def paired(self):
        """A connection that said PEER and AUTH over the line protocol."""
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(
            wire.format_request(
                "PEER",
                {"name": "ls2", "version": __version__, "edition": EDITION, "listen": "ls2:1"},
            )
        )
        challenge = wire.parse_response(transport.value().rstrip(b"\n")).args["challenge"]
        transport.clear()
        proof = peer_proof(self.SECRET, challenge, "ls2")
        proto.dataReceived(wire.format_request("AUTH", {"proof": proof}))
        self.assertTrue(wire.parse_response(transport.value().rstrip(b"\n")).ok)
        transport.clear()
        return proto, transport

    def answer(self, proto, transport, line):
        proto.dataReceived(line)
        head = transport.value().split(b"\n")[0]
        transport.clear()
        return wire.parse_response(head)

    def test_beatRevision(self):
        """BEAT revision= of 5000 or MAX_DIGITS + 1 digits gets 400 bad-request; MAX_DIGITS
        digits are a revision."""
        proto, transport = self.paired()
        for digits in (GIANT, TOO_LONG):
            answer = self.answer(proto, transport, f"BEAT revision={digits}\n".encode())
            self.assertEqual((answer.code, answer.reason), (400, "bad-request"), answer)
        self.assertEqual(self.flushLoggedErrors(), [])
        most = "9" * wire.MAX_DIGITS
        self.assertTrue(self.answer(proto, transport, f"BEAT revision={most}\n".encode()).ok)
        self.assertEqual(self.role.peer.revision, wire.MAX_INTEGER)
        self.assertFalse(transport.disconnecting)

    def test_syncSince(self):
        """SYNC since= of 5000 or MAX_DIGITS + 1 digits gets 400 bad-request; MAX_DIGITS
        digits (ahead of the primary) get a snapshot."""
        proto, transport = self.paired()
        for digits in (GIANT, TOO_LONG):
            answer = self.answer(proto, transport, f"SYNC since={digits}\n".encode())
            self.assertEqual((answer.code, answer.reason), (400, "bad-request"), answer)
        self.assertEqual(self.flushLoggedErrors(), [])
        most = "9" * wire.MAX_DIGITS
        answer = self.answer(proto, transport, f"SYNC since={most}\n".encode())
        self.assertEqual(answer.args["mode"], "snapshot")
        self.assertFalse(transport.disconnecting)


class LoopbackTests(ProtocolTestCase):
    def test_overIOPump(self):
        """A client and the server talk over a simulated connection."""
        from twisted.protocols.basic import LineReceiver

        class Client(LineReceiver):
            delimiter = b"\n"

            def __init__(self):
                self.answers = []

            def lineReceived(self, line):
                self.answers.append(wire.parse_response(line))

        client = Client()
        server, _, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), lambda: client
        )
        client.sendLine(HELLO.strip())
        client.sendLine(b"CHECKOUT")
        client.sendLine(b"CHECKOUT")
        client.sendLine(b"CHECKOUT")
        pump.flush()
        self.assertEqual([a.reason or "ok" for a in client.answers], ["ok", "ok", "ok", "ok"])
        other = Client()
        _, _, pump2 = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), lambda: other
        )
        other.sendLine(HELLO.strip().replace(b"m1", b"m2").replace(b"ws1", b"ws2"))
        other.sendLine(b"CHECKOUT")
        pump2.flush()
        self.assertEqual([a.reason or "ok" for a in other.answers], ["ok", "ok"])
