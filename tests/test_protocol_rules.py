"""Tests of PROTOCOL.md rules that the role and pool tests leave open.

Each test pins one normative sentence of the licensing protocol: expired
leases that the reaper has not removed yet, request keys per machine, the
answers of the peer handshake, the configured borrowing maximum and what a
repeated HELLO registers.
"""

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from licenseserver._version import EDITION, __version__
from licenseserver.passwords import peer_proof
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore
from tests.helpers import hello, makeRole, run, session
from tests.test_primary import RoleTestCase

SECRET = "s3cret-pairing"
TAKEOVER = 5.0
NEVER = 10.0**9
"""A reaper interval no test reaches: expired leases stay in the pool."""


class UnreapedTestCase(RoleTestCase):
    """A primary whose reaper never runs after its start, so expired leases stay put."""

    def setUp(self):
        self.store = FakeStore()
        self.role = makeRole(self.store, reapInterval=NEVER)
        self.clock = self.role.clock
        self.addLicenses({"seats": 1})
        self.s = hello(self.role, "m1")

    def expire(self, lease_id):
        """Let the lease time of ``lease_id`` pass; the lease stays in the pool."""
        lease = self.role.pool.lease(lease_id)
        self.clock.advance(lease.expires - self.clock.seconds())
        self.assertIsNotNone(self.role.pool.lease(lease_id))


class ExpiredBeforeReapingTests(UnreapedTestCase):
    """An expired lease holds no seat and is unknown, even before any clean-up runs."""

    def test_heartbeatAndReleaseUnknown(self):
        """HEARTBEAT and RELEASE of an expired, un-reaped lease get unknown-lease."""
        lease = self.ok(self.role.checkout(self.s, {}))["lease"]
        self.expire(lease)
        self.refused(self.role.heartbeat(self.s, {"lease": lease}), "unknown-lease")
        self.refused(self.role.release(self.s, {"lease": lease}), "unknown-lease")
        self.assertIsNotNone(self.role.pool.lease(lease))

    def test_requestKeyGivesNewLease(self):
        """A CHECKOUT repeating the request key of an expired lease gets a new lease; the
        expired one, whose seat it takes, is deleted in the same write, unrenewed."""
        old = self.ok(self.role.checkout(self.s, {"request": "7f3a"}))
        self.expire(old["lease"])
        new = self.ok(self.role.checkout(self.s, {"request": "7f3a"}))
        self.assertNotEqual(new["lease"], old["lease"])
        self.assertEqual(new["expires"], int(self.clock.seconds()) + 120)
        self.assertIsNone(self.role.pool.lease(old["lease"]))
        self.assertIn("expire", [row[2] for row in self.store.auditRows])

    def test_seatOfEndedLeaseTakenInOneWrite(self):
        """A grant that takes the seat of a lease that ended, not yet reaped, deletes that
        lease in its own write: a lease on disk always still held its seat, so a restart
        that counts stored leases live until their latest told end never counts more
        seats than licensed."""
        other = hello(self.role, "m2")
        old = self.ok(self.role.checkout(self.s, {}))["lease"]
        self.expire(old)
        before = self.role.committedRevision
        new = self.ok(self.role.checkout(other, {}))["lease"]
        written = self.successResultOf(self.store.changesSince(before))
        self.assertEqual(
            [[(c.key[0], c.record is None) for c in group] for _, group in written],
            [[(old, True), (new, False)]],
        )

    def test_heartbeatAllSkipsExpired(self):
        """HEARTBEAT without a lease renews the machine's live leases, not its expired ones."""
        first = self.ok(self.role.checkout(self.s, {}))
        self.clock.advance(60)
        second = self.ok(self.role.checkout(self.s, {}))["lease"]
        self.expire(first["lease"])
        answer = self.ok(self.role.heartbeat(self.s, {}))
        self.assertEqual(answer["expires"], int(self.clock.seconds()) + 120)
        self.assertEqual(self.role.pool.lease(second).expires, answer["expires"])
        self.assertEqual(self.role.pool.lease(first["lease"]).expires, first["expires"])
        self.refused(self.role.heartbeat(self.s, {"lease": first["lease"]}), "unknown-lease")

    def test_heartbeatAllOnlyExpired(self):
        """HEARTBEAT without a lease, when the machine's only lease expired, is unknown-lease."""
        lease = self.ok(self.role.checkout(self.s, {}))
        self.expire(lease["lease"])
        self.refused(self.role.heartbeat(self.s, {}), "unknown-lease")
        self.assertEqual(self.role.pool.lease(lease["lease"]).expires, lease["expires"])

    def test_expiredSeatIsFree(self):
        """The only seat of a license, held by an expired un-reaped lease, is free."""
        lease = self.ok(self.role.checkout(self.s, {}))["lease"]
        other = hello(self.role, "m2")
        self.refused(self.role.checkout(other, {}), "no-seats")
        self.expire(lease)
        granted = self.ok(self.role.checkout(other, {}))
        self.assertNotEqual(granted["lease"], lease)
        self.refused(self.role.checkout(hello(self.role, "m3"), {}), "no-seats")


class RequestKeyTests(RoleTestCase):
    def test_otherMachineSameKey(self):
        """The same request key from another machine takes another lease, not the first."""
        self.addLicenses({"seats": 2})
        first = self.ok(self.role.checkout(hello(self.role, "m1"), {"request": "7f3a"}))
        second = self.ok(self.role.checkout(hello(self.role, "m2"), {"request": "7f3a"}))
        self.assertNotEqual(second["lease"], first["lease"])
        self.assertEqual(self.role.pool.lease(second["lease"]).machine, "m2")
        self.assertEqual(self.role.pool.lease(first["lease"]).machine, "m1")
        again = self.ok(self.role.checkout(hello(self.role, "m1"), {"request": "7f3a"}))
        self.assertEqual(again["lease"], first["lease"])
        self.assertEqual(self.role.pool.count("lease"), 2)


class PeerHandshakeTests(RoleTestCase):
    """PEER and AUTH as a failover says them, on a primary driven directly."""

    def setUp(self):
        self.store = FakeStore()
        self.role = makeRole(
            self.store, cls=PrimaryRole, peerSecret=SECRET, takeoverAfter=TAKEOVER
        )
        self.clock = self.role.clock

    def pair(self, name):
        """A session of failover ``name`` that said PEER, and the Deferred of its AUTH."""
        s = session(f"f-{name}")
        args = {"name": name, "version": __version__, "edition": EDITION, "listen": f"{name}:1"}
        challenge = self.ok(self.role.peerPeer(s, args))["challenge"]
        return s, run(self.role.peerAuth(s, {"proof": peer_proof(SECRET, challenge, name)}))

    def test_authAnswersRevision(self):
        """AUTH answers OK revision=<n>, the primary's revision."""
        self.addLicenses({"seats": 1})
        hello(self.role, "m1")
        self.assertEqual(self.role.committedRevision, 2)
        _, d = self.pair("ls2")
        self.assertEqual(self.successResultOf(d), {"revision": 2})

    def test_alreadyPairedNamesPeer(self):
        """A second failover is refused with already-paired name=<the paired failover>."""
        self.successResultOf(self.pair("ls2")[1])
        failure = self.failureResultOf(self.pair("ls3")[1])
        self.assertEqual(failure.value.reason, "already-paired")
        self.assertEqual(failure.value.args_, {"name": "ls2"})
        self.assertIn("name=ls2", failure.value.toLine().decode())

    def test_sameNameReplacesLiveLink(self):
        """A failover of the same name that pairs again while its old link is alive (say,
        restarted before the primary saw the old connection close) replaces that link: the
        new one is paired, the old one is not, and its close leaves the new one up."""
        old, d = self.pair("ls2")
        self.successResultOf(d)
        self.clock.advance(1)
        self.ok(self.role.peerBeat(old, {}))
        self.assertTrue(self.role.peerAlive())
        new, d = self.pair("ls2")
        self.assertEqual(self.successResultOf(d), {"revision": 0})
        self.assertIs(self.role.peer.session, new)
        self.ok(self.role.peerBeat(new, {}))
        error = self.refused(self.role.peerBeat(old, {}), "not-authorized")
        self.assertTrue(error.closes)
        self.role.sessionClosed(old)
        self.assertTrue(self.role.peer.connected)
        self.assertTrue(self.role.peerAlive())
        self.ok(self.role.peerSync(new, {"since": "0"}))

    def test_silentLinkNoLongerPaired(self):
        """Once the paired failover's link has been silent past the takeover time, another
        failover pairs."""
        self.successResultOf(self.pair("ls2")[1])
        self.clock.advance(TAKEOVER)
        self.assertTrue(self.role.peer.connected)
        failure = self.failureResultOf(self.pair("ls3")[1])
        self.assertEqual(failure.value.reason, "already-paired")
        self.clock.advance(1)
        self.assertEqual(self.role.peer.name, "ls2")
        self.assertFalse(self.role.peerAlive())
        self.assertEqual(self.successResultOf(self.pair("ls3")[1]), {"revision": 0})
        self.assertEqual(self.role.peer.name, "ls3")
        self.assertEqual(self.role.status()["failover"], "ls3:1")


class PeerListenTests(unittest.TestCase):
    """PEER's listen= is the failover's HOST:PORT: without a port it is refused."""

    def setUp(self):
        self.role = makeRole(FakeStore(), peerSecret=SECRET, takeoverAfter=TAKEOVER)
        self.factory = LicensingFactory(self.role)

    def peer(self, listen):
        """The answer to a PEER line with ``listen``, through the licensing protocol."""
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(
            wire.format_request(
                "PEER",
                {"name": "ls2", "version": __version__, "edition": EDITION, "listen": listen},
            )
        )
        return wire.parse_response(transport.value().rstrip(b"\n"))

    def test_portRequired(self):
        """listen= without a port, or with one out of range, gets 400 bad-request."""
        for listen in ("nope", "ls2.example.com", "ls2:", "ls2:0", "ls2:65536", "[::1]", "a b"):
            answer = self.peer(listen)
            self.assertEqual((answer.code, answer.reason), (400, "bad-request"), listen)
            self.assertEqual(answer.args["message"], "listen must be HOST:PORT")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_hostAndPort(self):
        """listen= as HOST:PORT, an IPv6 address in brackets included, gets a challenge."""
        for listen in ("ls2:35355", "ls2.example.com:1", "10.0.0.2:65535", "[::1]:35355"):
            answer = self.peer(listen)
            self.assertTrue(answer.ok, (listen, answer))
            self.assertIn("challenge", answer.args)


class BorrowMaximumTests(RoleTestCase):
    def setUp(self):
        super().setUp()
        self.addLicenses({"seats": 1})
        self.s = hello(self.role, "m1")

    def test_lowerMaximum(self):
        """With the maximum set below 30 days, days above it are refused, up to it granted."""
        self.ok(self.role.updateSettings({"borrow_max_days": 7}))
        self.refused(self.role.borrow(self.s, {"days": "8"}), "bad-request")
        answer = self.ok(self.role.borrow(self.s, {"days": "7"}))
        self.assertEqual(answer["expires"], int(self.clock.seconds()) + 7 * 86400)

    def test_higherMaximum(self):
        """With the maximum set above 30 days, days up to it are granted, more refused."""
        self.ok(self.role.updateSettings({"borrow_max_days": 45}))
        self.refused(self.role.borrow(self.s, {"days": "46"}), "bad-request")
        answer = self.ok(self.role.borrow(self.s, {"days": "45"}))
        self.assertEqual(answer["expires"], int(self.clock.seconds()) + 45 * 86400)


class HelloRegistrationTests(RoleTestCase):
    def stored(self, kind):
        return self.successResultOf(self.store.load()).records[kind]

    def test_secondHelloUpdatesHost(self):
        """A later HELLO of the same machine updates its host (and product version), durably."""
        first = hello(self.role, "m1", host="ws1")
        registered = self.role.pool.client(first.client).registered
        self.clock.advance(60)
        second = hello(self.role, "m1", host="ws1-renamed", version="2025r3")
        self.assertEqual(second.client, first.client)
        client = self.role.pool.clientByMachine("m1")
        self.assertEqual(client.host, "ws1-renamed")
        self.assertEqual(client.registered, registered)
        self.assertEqual(client.last_seen, int(self.clock.seconds()))
        self.assertEqual([c.host for c in self.stored("client")], ["ws1-renamed"])
        self.assertEqual([p.version for p in self.stored("product")], ["2025r3"])

    def test_userDefault(self):
        """A HELLO without user registers, and takes seats as, the user "-"."""
        self.addLicenses({"seats": 1})
        s = hello(self.role, "m1")
        self.assertEqual(s.user, "-")
        self.assertEqual([p.user for p in self.stored("product")], ["-"])
        lease = self.ok(self.role.checkout(s, {}))["lease"]
        self.assertEqual(self.role.pool.lease(lease).user, "-")

    def test_userGiven(self):
        """A HELLO with user registers that user."""
        s = hello(self.role, "m1", user="anna")
        self.assertEqual(s.user, "anna")
        self.assertEqual([p.user for p in self.stored("product")], ["anna"])
