"""Tests for load shedding on the licensing port (licenseserver.protocols.shedding)."""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.shedding import Limits
from licenseserver.testing import FakeStore
from tests.helpers import makeRole, run


class SheddingTests(unittest.TestCase):
    def factory(self, **limits):
        self.role = makeRole(FakeStore())
        self.clock = self.role.clock
        factory = LicensingFactory(self.role, limits=Limits(**limits))
        factory.doStart()
        self.addCleanup(factory.doStop)
        return factory

    def connect(self, factory, host="10.0.0.1"):
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        proto.makeConnection(transport)
        return proto, transport

    def answers(self, transport):
        data = transport.value()
        transport.clear()
        return [wire.parse_response(line) for line in data.split(b"\n") if line]

    def test_totalCap(self):
        """Past the connection cap a new connection gets 429 and is closed."""
        factory = self.factory(max_connections=2)
        first, _ = self.connect(factory)
        self.connect(factory, "10.0.0.2")
        over, refused = self.connect(factory, "10.0.0.3")
        self.assertEqual(refused.value(), b"", "nothing is sent before a request")
        over.dataReceived(b"HELLO product=x version=1.0 host=h machine=m\nPING\n")
        (answer,) = self.answers(refused)
        self.assertEqual((answer.code, answer.reason), (429, "too-many-connections"))
        self.assertTrue(refused.disconnecting)
        first.connectionLost(None)
        _, again = self.connect(factory, "10.0.0.3")
        self.assertEqual(again.value(), b"")
        self.assertFalse(again.disconnecting)

    def test_perAddressCap(self):
        """One address may not take more than its share; other addresses still get in."""
        factory = self.factory(max_per_address=1)
        self.connect(factory, "10.0.0.1")
        over, refused = self.connect(factory, "10.0.0.1")
        over.dataReceived(b"PING\n")
        self.assertEqual(self.answers(refused)[0].reason, "too-many-connections")
        _, other = self.connect(factory, "10.0.0.2")
        self.assertFalse(other.disconnecting)
        self.assertEqual(factory.connections.total, 2)

    def test_idleSessionsClosed(self):
        """A session silent for the idle timeout is closed; a talking one is not."""
        factory = self.factory(idle_timeout=60)
        quiet, quietTransport = self.connect(factory, "10.0.0.1")
        talker, talkerTransport = self.connect(factory, "10.0.0.2")
        for _ in range(12):
            self.clock.advance(5)
            talker.dataReceived(b"PING\n")
        self.assertTrue(quietTransport.disconnecting)
        self.assertFalse(talkerTransport.disconnecting)

    def test_idleTimeoutFollowsHeartbeat(self):
        """A session that heartbeats as told stays open when the lease time grows past
        the idle timeout: silence is measured against two heartbeat intervals then."""
        factory = self.factory(idle_timeout=60)
        self.successResultOf(run(self.role.updateSettings({"lease_ttl": 3600})))
        self.assertEqual(self.role.heartbeatInterval(), 900)
        quiet, transport = self.connect(factory)
        self.clock.advance(900)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(900)
        self.assertTrue(transport.disconnecting)

    def test_silentConnectionsDoNotStopOthers(self):
        """2,000 connections that never send a line leave the server answering another
        client at once; the idle timeout closes every one of them, not the client that
        talks, and their places in the connection counts are given back."""
        factory = self.factory(idle_timeout=60, max_connections=20000, max_per_address=1000)
        silent = [self.connect(factory, f"10.1.{i // 200}.{i % 200}") for i in range(2000)]
        self.assertEqual(factory.connections.total, 2000)
        proto, transport = self.connect(factory, "10.0.0.9")
        proto.dataReceived(b"PING\nHELLO product=XMLSpy version=2025r2 host=h machine=m\nSTATUS\n")
        self.assertEqual([a.ok for a in self.answers(transport)], [True, True, True])
        for _ in range(13):
            self.clock.advance(5)
            proto.dataReceived(b"PING\n")
            self.assertEqual([a.reason or "ok" for a in self.answers(transport)], ["ok"])
        self.assertEqual([t for _, t in silent if not t.disconnecting], [])
        self.assertFalse(transport.disconnecting)
        for silentProto, _ in silent:
            silentProto.connectionLost(None)
        self.assertEqual(factory.connections.total, 1)
        self.assertEqual(factory.sessions, {proto})

    def test_partialLineIsSilence(self):
        """A connection that trickles bytes but never ends a line is closed at the idle
        timeout like a silent one: only a whole line counts as hearing from the client."""
        factory = self.factory(idle_timeout=60)
        trickler, transport = self.connect(factory)
        for _ in range(13):
            self.clock.advance(5)
            trickler.dataReceived(b"P")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_rateLimited(self):
        """Requests over a session's rate get 429 rate-limited; others are unaffected."""
        factory = self.factory(rate=1, burst=2)
        proto, transport = self.connect(factory)
        proto.dataReceived(b"PING\nPING\nPING\n")
        self.assertEqual(
            [a.reason or "ok" for a in self.answers(transport)], ["ok", "ok", "rate-limited"]
        )
        other, otherTransport = self.connect(factory, "10.0.0.9")
        other.dataReceived(b"PING\n")
        self.assertTrue(self.answers(otherTransport)[0].ok)
        self.clock.advance(1)
        proto.dataReceived(b"PING\n")
        self.assertTrue(self.answers(transport)[0].ok)
        self.assertFalse(transport.disconnecting)

    def test_emptyLinesNotCounted(self):
        """Empty lines are ignored: no answer, and none of the session's rate spent on them."""
        factory = self.factory(rate=1, burst=2)
        proto, transport = self.connect(factory)
        proto.dataReceived(b"\n\r\n" * 50 + b"PING\n\n\r\nPING\n\n")
        self.assertEqual([a.reason or "ok" for a in self.answers(transport)], ["ok", "ok"])
        proto.dataReceived(b"\r\n" * 10 + b"PING\n")
        self.assertEqual([a.reason or "ok" for a in self.answers(transport)], ["rate-limited"])

    def test_silentRefusedConnectionClosed(self):
        """A connection over the cap that asks nothing is dropped after a short grace."""
        factory = self.factory(max_connections=1)
        self.connect(factory)
        over, refused = self.connect(factory, "10.0.0.2")
        self.clock.advance(9)
        self.assertFalse(refused.disconnecting)
        self.clock.advance(1)
        self.assertEqual(refused.value(), b"")
        self.assertTrue(refused.disconnecting or refused.disconnected)
