"""Tests for the failover (licenseserver.roles.failover) and the primary's side of the link.

A primary and a failover run on one Clock; their link is an in-memory iosim
connection that moves bytes only when the test flushes it, so every rule of
FAILOVER.md is played out deterministically.
"""

import dataclasses

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver._version import EDITION, __version__
from licenseserver.interfaces import IRole
from licenseserver.localstate import DIVERGED
from licenseserver.model import Change, Setting
from licenseserver.passwords import peer_proof
from licenseserver.pool import Pool
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.peer import PeerClientProtocol
from licenseserver.roles import failover as failover_module
from licenseserver.roles import primary as primary_module
from licenseserver.roles.base import AdminError
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore, PumpEndpoint
from licenseserver.web import views
from tests.helpers import START, hello, licenseFile, makeRole, run, session

SECRET = "s3cret-pairing"
HEARTBEAT = 1.0
TAKEOVER = 5.0


def canonical(snapshot):
    """A snapshot's revision and records, in key order: equal when the data is."""
    return snapshot.revision, {
        kind: sorted(records, key=lambda r: r.key) for kind, records in snapshot.records.items()
    }


class AnswerOnceAndDie(LineReceiver):
    """A primary that answers the first line it gets (PEER) and dies before any other."""

    delimiter = b"\n"

    def lineReceived(self, line):
        self.transport.write(
            f"OK server=ls1 version={__version__} edition={EDITION} challenge=00\n".encode()
        )
        self.transport.loseConnection()


class PairTestCase(unittest.TestCase):
    """A primary and a failover on one Clock, linked through a PumpEndpoint."""

    storeClass = FakeStore
    """The stores of both servers."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.primaryStore = self.storeClass()
        self.primary = self.startPrimary()
        self.endpoint = PumpEndpoint(LicensingFactory(self.primary))
        self.failoverStore = self.storeClass()
        self.failover = self.startFailover()

    def startPrimary(self, store=None, **kw):
        return makeRole(
            store or self.primaryStore,
            self.clock,
            cls=PrimaryRole,
            serverName="ls1",
            advertise="ls1:35355",
            peerSecret=SECRET,
            takeoverAfter=TAKEOVER,
            **kw,
        )

    def startFailover(self, secret=SECRET, name="ls2", store=None, advertise=None):
        role = makeRole(
            store or self.failoverStore,
            self.clock,
            cls=FailoverRole,
            serverName=name,
            advertise=advertise or f"{name}:35355",
            primaryEndpoint=self.endpoint,
            primaryAddress="ls1:35355",
            heartbeat=HEARTBEAT,
            takeoverAfter=TAKEOVER,
            peerSecret=secret,
        )
        self.addCleanup(self.stop, role)
        self.endpoint.flush()
        return role

    def stop(self, role):
        """Stop a failover; its link closes as the pump delivers the close."""
        d = role.stopService()
        self.endpoint.silent = False
        self.endpoint.flush()
        return d

    def advance(self, seconds, step=0.1):
        """Let ``seconds`` pass, moving bytes between the servers as they go."""
        target = self.clock.seconds() + seconds
        while self.clock.seconds() < target:
            self.clock.advance(min(step, target - self.clock.seconds()))
            self.endpoint.flush()

    def beat(self):
        """Let one heartbeat (and a little more) pass."""
        self.advance(HEARTBEAT + 0.05)

    def ok(self, coroutine):
        return self.successResultOf(run(coroutine))

    def refused(self, coroutine, reason):
        failure = self.failureResultOf(run(coroutine), wire.ProtocolError)
        self.assertEqual(failure.value.reason, reason)
        return failure.value

    def assertMirrors(self):
        """The failover holds exactly the primary's committed records, memory and store."""
        primary = canonical(self.successResultOf(self.primaryStore.load()))
        self.assertEqual(canonical(self.failover.pool.snapshot()), primary)
        self.assertEqual(canonical(self.successResultOf(self.failoverStore.load())), primary)

    def killPrimary(self):
        self.endpoint.kill()

    def revivePrimary(self):
        self.primary = self.startPrimary()
        self.endpoint.revive(LicensingFactory(self.primary))


class PairingTests(PairTestCase):
    def test_interface(self):
        """The failover role provides IRole."""
        verifyObject(IRole, self.failover)

    def test_paired(self):
        """The failover pairs with the right secret; both sides show the other."""
        self.assertEqual(self.failover.linkState, "paired")
        self.assertEqual(self.failover.primaryName, "ls1")
        self.assertEqual(self.failover.peerStatus()["link"], "paired")
        peer = self.primary.peerStatus()
        self.assertEqual(peer["name"], "ls2")
        self.assertEqual(peer["address"], "ls2:35355")
        self.assertTrue(peer["alive"])
        self.assertEqual(self.primary.status()["failover"], "ls2:35355")
        self.assertEqual(self.failover.status()["primary"], "ls1:35355")
        self.assertEqual(self.failover.status()["state"], "standby")

    def test_advertisedWithoutPort(self):
        """A failover advertised without a port (--advertise HOST) pairs, and the primary
        names it with the licensing port: PEER's listen= always carries one."""
        self.stop(self.failover)
        self.advance(0.2)
        self.failover = self.startFailover(store=FakeStore(), advertise="ls2.example.com")
        self.advance(1)
        self.assertEqual(self.failover.linkState, "paired")
        self.assertEqual(self.primary.status()["failover"], "ls2.example.com:35355")

    def test_wrongSecret(self):
        """A wrong secret is refused, logged on the primary, and the failover stays standby."""
        self.stop(self.failover)
        self.endpoint = PumpEndpoint(LicensingFactory(self.primary))
        self.primary.peer = None
        self.failover = self.startFailover(secret="wrong", name="ls3")
        self.advance(TAKEOVER * 3)
        self.assertEqual(self.failover.linkState, "refused")
        self.assertIn("refused our pairing proof", self.failover.problem)
        self.assertIsNone(self.primary.peer)
        self.assertEqual(self.failover.state, "standby")
        events = self.successResultOf(self.primaryStore.events(50))
        self.assertIn("peer-refused", [e.kind for e in events])
        self.assertNotIn(SECRET, repr(events))
        mine = [e.kind for e in self.successResultOf(self.failoverStore.events(50))]
        self.assertEqual(mine.count("refused"), 1)

    def test_proofNotReplayable(self):
        """A proof from one link is useless on the next: each PEER gets a fresh challenge."""
        s1, s2 = session("f1"), session("f2")
        args = {"name": "ls9", "version": "1.0.0", "edition": "standard", "listen": "ls9:1"}
        first = self.ok(self.primary.peerPeer(s1, args))
        second = self.ok(self.primary.peerPeer(s2, args))
        self.assertNotEqual(first["challenge"], second["challenge"])
        self.assertGreaterEqual(len(first["challenge"]), 32)
        proof = peer_proof(SECRET, first["challenge"], "ls9")
        self.refused(self.primary.peerAuth(s1, {"proof": proof}), "already-paired")
        error = self.refused(self.primary.peerAuth(s2, {"proof": proof}), "not-authorized")
        self.assertTrue(error.closes)

    def test_wrongProofsThrottled(self):
        """After a wrong proof, that address's next proofs are refused unchecked for a while."""
        self.primary.peer = None
        args = {"name": "ls9", "version": "1.0.0", "edition": "standard", "listen": "ls9:1"}

        def attempt(secret):
            s = session("f9")
            challenge = self.ok(self.primary.peerPeer(s, args))["challenge"]
            return run(self.primary.peerAuth(s, {"proof": peer_proof(secret, challenge, "ls9")}))

        self.failureResultOf(attempt("wrong"), wire.ProtocolError)
        self.failureResultOf(attempt(SECRET), wire.ProtocolError)
        self.clock.advance(1)
        self.successResultOf(attempt(SECRET))
        refusal = self.primary.refusedPeer()
        self.assertIsNone(refusal)

    def test_refusalShownOnPrimary(self):
        """A refused failover shows on the primary's status, its log line once per while."""
        self.primary.peer = None
        args = {"name": "ls9", "version": "0.9", "edition": "standard", "listen": "ls9:1"}
        for _ in range(5):
            self.refused(self.primary.peerPeer(session("f9"), args), "version-mismatch")
        refusal = self.primary.refusedPeer()
        self.assertEqual((refusal["reason"], refusal["count"]), ("version-mismatch", 5))
        self.assertIn("upgrade the failover", refusal["message"])
        kinds = [e.kind for e in self.successResultOf(self.primaryStore.events(50))]
        self.assertEqual(kinds.count("version-mismatch"), 1)

    def test_authWithoutPeer(self):
        """AUTH without PEER before it is not authorized, and the connection closes."""
        error = self.refused(self.primary.peerAuth(session(), {"proof": "00"}), "not-authorized")
        self.assertTrue(error.closes)
        self.refused(self.primary.peerSync(session(), {"since": "0"}), "not-authorized")
        self.refused(self.primary.peerBeat(session(), {}), "not-authorized")

    def test_secondFailoverRefused(self):
        """While one failover is paired and alive, another is refused as already-paired."""
        other = self.startFailover(name="ls3", store=FakeStore())
        self.advance(2)
        self.assertEqual(other.linkState, "refused")
        self.assertIn("already-paired", other.problem)
        self.assertEqual(self.primary.peer.name, "ls2")

    def test_samefailoverReplacesLink(self):
        """A failover of the same name that pairs again replaces its old link."""
        self.stop(self.failover)
        self.advance(0.2)
        again = self.startFailover(store=FakeStore())
        self.advance(1)
        self.assertEqual(again.linkState, "paired")
        self.assertEqual(self.primary.peer.session.peer_name, "ls2")
        self.assertTrue(self.primary.peerAlive())

    def test_silentCloseIsAlive(self):
        """A primary port that accepts and closes without a word is alive: no takeover."""
        from twisted.internet.protocol import Factory, Protocol

        class Closer(Protocol):
            def connectionMade(self):
                self.transport.loseConnection()

        self.endpoint.kill()
        self.endpoint.revive(Factory.forProtocol(Closer))
        self.advance(TAKEOVER * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertEqual(self.failover.linkState, "refused")
        self.assertIn("--primary-ca", self.failover.problem)

    def test_versionMismatch(self):
        """A version mismatch is refused on both sides, never serves, and resumes once fixed."""
        self.patch(primary_module, "__version__", "1.1.0")
        self.killPrimary()
        self.revivePrimary()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "version-mismatch")
        self.assertEqual(self.failover.problem, "upgrade this failover to version 1.1.0")
        self.assertIsNone(self.primary.peer)
        events = self.successResultOf(self.primaryStore.events(50))
        self.assertIn("version-mismatch", [e.kind for e in events])
        self.killPrimary()
        self.advance(TAKEOVER * 2)
        self.assertEqual(self.failover.state, "standby")
        self.assertIn("1.1.0", self.failover.problem)
        self.patch(failover_module, "__version__", "1.1.0")
        self.revivePrimary()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "paired")
        self.assertIsNone(self.failover.problem)

    def test_olderPrimary(self):
        """A failover newer than its primary says the primary needs the upgrade."""
        self.patch(failover_module, "__version__", "1.1.0")
        self.killPrimary()
        self.revivePrimary()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "version-mismatch")
        self.assertIn("upgrade the primary", self.failover.problem)

    def test_editionMismatch(self):
        """Another edition is a mismatch too, and such a failover never serves.

        The versions are the same, so only the edition can keep the failover
        from taking over when that primary goes silent, also after a restart.
        """
        self.patch(primary_module, "EDITION", "enterprise")
        self.killPrimary()
        self.revivePrimary()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "version-mismatch")
        self.assertIn("enterprise edition", self.failover.problem)
        refusal = self.refused(
            self.primary.peerPeer(
                session(),
                {"name": "ls2", "version": __version__, "edition": "standard", "listen": "ls2:1"},
            ),
            "version-mismatch",
        )
        self.assertIn("install the enterprise edition on the failover", refusal.message)
        self.assertNotIn("upgrade", refusal.message)
        self.killPrimary()
        self.advance(TAKEOVER * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIn("enterprise edition", self.failover.problem)
        self.stop(self.failover)
        again = self.startFailover()
        self.advance(TAKEOVER * 3)
        self.assertEqual(again.state, "standby")
        self.assertIn("enterprise edition", again.problem)


class ToldFailoverTests(PairTestCase):
    """``failover=`` in the primary's STATUS and HELLO names the paired failover while it
    has heartbeated within the takeover time, and says none otherwise."""

    def told(self):
        """``failover=`` of STATUS and of HELLO, each through the licensing protocol."""
        proto = LicensingFactory(self.primary).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"STATUS\nHELLO product=XMLSpy version=2025r2 host=h machine=m\n")
        status, hello = (wire.parse_response(line) for line in transport.value().splitlines())
        proto.connectionLost(None)
        return status.args["failover"], hello.args["failover"]

    def test_paired(self):
        """A paired failover that heartbeats is named, however long it stays paired."""
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))
        self.advance(TAKEOVER * 4)
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))

    def test_closedLinkCountsForTheTakeoverTime(self):
        """A failover whose link closed is named until the takeover time has passed since
        its last heartbeat (it may be back at once, or take over after that time); then
        none, until it pairs again."""
        last = self.primary.peer.last_beat
        self.stop(self.failover)
        self.assertFalse(self.primary.peer.connected)
        self.clock.advance(last + TAKEOVER - self.clock.seconds())
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))
        self.clock.advance(1)
        self.assertEqual(self.told(), ("none", "none"))
        self.assertEqual(self.primary.failoverAddress(), "ls2:35355", "the admin still sees it")
        self.failover = self.startFailover()
        self.advance(0.5)
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))

    def test_silentLink(self):
        """A link that stays open but carries no heartbeat for the takeover time: none; named
        again once heartbeats arrive."""
        self.endpoint.silent = True
        self.clock.advance(TAKEOVER + 1)
        self.assertTrue(self.primary.peer.connected)
        self.assertEqual(self.told(), ("none", "none"))
        self.endpoint.silent = False
        self.beat()
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))

    def test_rememberedAcrossRestart(self):
        """The primary remembers the failover that paired last across a restart: the admin's
        status shows it before that failover pairs again (clients are told none meanwhile),
        and a failover pairing from another address replaces it."""
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertIsNone(self.primary.peer)
        self.assertEqual(self.primary.failoverAddress(), "ls2:35355")
        self.assertEqual(views.status(self.primary)["failover"], "ls2:35355")
        self.assertEqual(self.told(), ("none", "none"))
        self.stop(self.failover)
        self.endpoint.revive(LicensingFactory(self.primary))
        self.failover = self.startFailover(advertise="ls2.example.com:35356")
        self.advance(1)
        self.assertEqual(self.failover.linkState, "paired")
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertEqual(self.primary.failoverAddress(), "ls2.example.com:35356")
        self.assertIsNone(self.startPrimary(FakeStore()).failoverAddress(), "none paired yet")

    def test_noneAfterRestart(self):
        """A restarted primary names no failover until one pairs with it again."""
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertEqual(self.told(), ("none", "none"))
        self.endpoint.revive(LicensingFactory(self.primary))
        self.beat()
        self.assertEqual(self.told(), ("ls2:35355", "ls2:35355"))


class SyncTests(PairTestCase):
    def test_syncEachKind(self):
        """Licenses, clients, products, assignments, settings and leases all reach the failover."""
        (lid,) = self.ok(self.primary.addLicenses(licenseFile({"kind": "installed"})))
        (cid,) = self.ok(self.primary.addLicenses(licenseFile({"seats": 2})))
        self.beat()
        self.assertMirrors()
        s = hello(self.primary, "m1")
        self.beat()
        self.assertMirrors()
        self.ok(self.primary.assign(s.client, "XMLSpy", [lid]))
        self.beat()
        self.assertMirrors()
        lease = self.ok(self.primary.checkout(s, {}))["lease"]
        self.beat()
        self.assertMirrors()
        self.advance(30)
        self.ok(self.primary.heartbeat(s, {"lease": lease}))
        self.beat()
        self.assertMirrors()
        self.ok(self.primary.commit([Change.put(Setting("borrow_max_days", 7))]))
        self.ok(self.primary.setLicenseActive(cid, False))
        self.ok(self.primary.acceptAgreement(cid))
        self.beat()
        self.assertMirrors()
        self.assertIsNotNone(self.failover.pool.get("agreement", cid))
        self.ok(self.primary.release(s, {"lease": lease}))
        self.ok(self.primary.deleteLicense(lid))
        self.ok(self.primary.deleteLicense(cid))
        self.ok(self.primary.unregister(s.client))
        self.beat()
        self.assertMirrors()
        self.assertEqual(self.primary.peerStatus()["lag"], 0)

    def test_incremental(self):
        """After the first sync, only the changes since the failover's revision travel."""
        self.ok(self.primary.addLicenses(licenseFile({"seats": 2})))
        self.beat()
        sent = []
        original = self.primary.peerSync

        async def spy(session, args):
            answer = await original(session, args)
            sent.append(answer)
            return answer

        self.primary.peerHandlers = lambda: {**PrimaryRole.peerHandlers(self.primary), "SYNC": spy}
        self.endpoint.serverFactory = LicensingFactory(self.primary)
        for pump in self.endpoint.pumps:
            pump.serverIO.loseConnection()
        self.advance(2)
        hello(self.primary, "m1")
        self.beat()
        self.assertMirrors()
        modes = [wire.parse_response(a.split(b"\n")[0]).args["mode"] for a in sent]
        self.assertEqual(modes[-1], "changes")
        self.assertEqual(sent[-1].count(b"\n"), 3)

    def test_snapshotWhenLogTrimmed(self):
        """A failover further behind than the change log reaches gets a snapshot."""
        self.stop(self.failover)
        self.advance(0.5)
        self.primaryStore.keep_changes = 1
        self.primaryStore.trim_interval = 1
        for i in range(5):
            self.ok(self.primary.addLicenses(licenseFile({"seats": i + 1})))
        self.failover = self.startFailover()
        self.beat()
        self.assertMirrors()

    def test_formerPrimaryReplacesItsData(self):
        """A server that becomes the failover of a primary it did not mirror (its data marked
        diverged) replaces its data at the first sync, even with a revision behind the
        primary's: changes since that revision would keep its own records."""
        self.stop(self.failover)
        self.advance(0.5)
        for seats in (2, 3, 4):
            self.ok(self.primary.addLicenses(licenseFile({"seats": seats})))
        store = FakeStore()
        former = makeRole(store, self.clock, cls=PrimaryRole)
        self.ok(former.addLicenses(licenseFile({"product": "MapForce"})))
        self.successResultOf(former.stopService())
        self.successResultOf(store.setLocal(DIVERGED, 0))
        self.assertLess(self.successResultOf(store.load()).revision, self.primary.pool.revision)
        self.failoverStore = store
        self.failover = self.startFailover(store=store)
        self.beat()
        self.assertMirrors()

    def test_lagShown(self):
        """The primary shows how many revisions its failover lags behind."""
        self.endpoint.silent = True
        self.ok(self.primary.addLicenses(licenseFile({})))
        self.assertEqual(self.primary.peerStatus()["lag"], 1)
        self.assertFalse(self.primary.peerStatus()["in_sync"])
        self.endpoint.silent = False
        self.beat()
        self.assertEqual(self.primary.peerStatus()["lag"], 0)
        self.assertTrue(self.primary.peerStatus()["in_sync"])


class TakeoverTests(PairTestCase):
    def setUp(self):
        super().setUp()
        self.ok(self.primary.addLicenses(licenseFile({"seats": 1})))
        self.client = hello(self.primary, "m1")
        self.lease = self.ok(self.primary.checkout(self.client, {}))["lease"]
        self.beat()
        self.assertMirrors()

    def test_standbyRefuses(self):
        """In standby the failover answers clients 503 standby and admins 409."""
        error = self.refused(self.failover.hello(session(), {}), "standby")
        self.assertEqual(error.args_["primary"], "ls1:35355")
        self.refused(self.failover.checkout(session(), {}), "standby")
        failure = self.failureResultOf(run(self.failover.addLicenses(b"{}")), AdminError)
        self.assertEqual(failure.value.status, 409)
        self.assertIn("make this change on the primary ls1:35355", failure.value.message)

    def test_takeoverExactlyAfterSilence(self):
        """The failover takes over exactly the takeover time after the primary's last word."""
        self.endpoint.silent = True
        last = self.failover.lastHeard
        self.clock.advance(last + TAKEOVER - self.clock.seconds() - 0.001)
        self.assertEqual(self.failover.state, "standby")
        self.clock.advance(0.001)
        self.assertEqual(self.failover.state, "active")
        events = self.successResultOf(self.failoverStore.events(10))
        self.assertEqual(events[0].kind, "takeover")

    def test_lateHeartbeatNoTakeover(self):
        """A heartbeat answered late, but within the takeover time, causes no takeover."""
        self.endpoint.silent = True
        self.clock.advance(TAKEOVER - 0.5)
        self.endpoint.silent = False
        self.advance(TAKEOVER * 3)
        self.assertEqual(self.failover.state, "standby")

    def test_killedPrimary(self):
        """After the primary dies, the failover serves: old leases keep their seats."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        s = hello(self.failover, "m1")
        self.ok(self.failover.heartbeat(s, {"lease": self.lease}))
        self.refused(self.failover.checkout(hello(self.failover, "m2"), {}), "no-seats")
        self.ok(self.failover.release(s, {"lease": self.lease}))
        self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))

    def test_leaseOutlivesLongTakeover(self):
        """A lease heartbeated as asked keeps its seat at the failover (rule 9), even when
        the takeover takes longer than the synced end of the lease had left.

        The primary writes a renewal only when the end it holds is less than half
        a lease time ahead, so the synced end may be close: here 2.1 s when the
        primary dies, with a takeover time of 5 s.
        """
        self.ok(self.primary.updateSettings({"lease_ttl": 8}))
        lease = self.ok(self.primary.checkout(self.client, {"product": "XMLSpy"}))["lease"]
        self.advance(4)
        self.ok(self.primary.heartbeat(self.client, {"lease": lease}))
        self.advance(1.9)
        synced = self.failover.pool.lease(lease)
        self.assertLess(synced.expires, self.clock.seconds() + TAKEOVER)
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.assertGreater(self.failover.pool.lease(lease).expires, self.clock.seconds())
        self.advance(6)
        s = hello(self.failover, "m1")
        self.ok(self.failover.heartbeat(s, {"lease": lease}))
        self.refused(self.failover.checkout(hello(self.failover, "m2"), {}), "no-seats")
        snapshot = self.successResultOf(self.failoverStore.load())
        stored = {x.id: x for x in snapshot.records["lease"]}
        self.assertGreater(stored[lease].expires, synced.expires)

    def test_activeRules(self):
        """An active failover refuses old clients and BORROW; the primary served them."""
        hello(self.primary, "old", version="2015")
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        error = self.refused(
            self.failover.hello(
                session(), {"product": "XMLSpy", "version": "2015", "host": "h", "machine": "m"}
            ),
            "client-too-old",
        )
        self.assertEqual(error.args_["minimum"], "2015r3")
        mts = {"product": "MobileTogetherServer", "host": "h", "machine": "m"}
        self.refused(self.failover.hello(session(), {**mts, "version": "1.4"}), "client-too-old")
        self.ok(self.failover.hello(session(), {**mts, "version": "1.5"}))
        s = hello(self.failover, "m1")
        self.refused(self.failover.borrow(s, {"days": "1"}), "borrow-disabled")

    def test_handbackDiscards(self):
        """When the primary returns, the failover hands it the leases it granted and ended
        (FAILOVER.md rule 14), stops, and drops the admin's changes (rule 10)."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.ok(self.failover.addLicenses(licenseFile({"product": "MapForce"})))
        s = hello(self.failover, "m9")
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": self.lease}))
        self.ok(self.failover.checkout(s, {}))
        self.revivePrimary()
        self.advance(HEARTBEAT + 0.1)
        self.assertEqual(self.failover.state, "standby")
        self.refused(self.failover.checkout(s, {}), "standby")
        self.beat()
        self.assertMirrors()
        self.assertEqual(self.failover.pool.licensesFor("MapForce"), [])
        self.assertIsNone(self.failover.pool.lease(self.lease), "released at the failover")
        self.assertEqual([lease.machine for lease in self.primary.pool.all("lease")], ["m9"])
        kinds = [e.kind for e in self.successResultOf(self.failoverStore.events(10))]
        self.assertEqual(kinds[0], "handback")
        self.assertIn("takeover", kinds)

    def test_answerOnceKeepsServing(self):
        """A primary that answers once and dies again before it took the leases does not
        end the takeover: the failover goes on serving what it granted (no client loses
        its seat). When the primary returns for good it takes the leases, and what the
        admin added at the failover is gone from its pool and store at once."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.ok(self.failover.addLicenses(licenseFile({"product": "MapForce"})))
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": self.lease}))
        m9 = hello(self.failover, "m9")
        added = self.ok(self.failover.checkout(m9, {}))["lease"]
        self.endpoint.revive(Factory.forProtocol(AnswerOnceAndDie))
        self.advance(HEARTBEAT * 2)
        self.endpoint.kill()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.heartbeat(m9, {"lease": added}))
        self.revivePrimary()
        self.advance(HEARTBEAT * 2)
        self.assertEqual(self.failover.state, "standby")
        stored = Pool.fromSnapshot(self.successResultOf(self.failoverStore.load()))
        for held in (self.failover.pool, stored):
            self.assertEqual(held.licensesFor("MapForce"), [])
        self.assertIsNotNone(self.primary.pool.lease(added), "the primary took the lease")
        self.assertIsNone(self.primary.pool.lease(self.lease), "released at the failover")

    def test_flapping(self):
        """Down, up, down: the failover hands back within a heartbeat and never serves while
        the primary lives; each silence gives a new takeover."""
        for round in range(3):
            self.killPrimary()
            self.advance(TAKEOVER + 0.2)
            self.assertEqual(self.failover.state, "active")
            self.revivePrimary()
            self.advance(HEARTBEAT + 0.1)
            self.assertEqual(self.failover.state, "standby")
            states = set()
            for _ in range(int(TAKEOVER * 3 / 0.1)):
                self.advance(0.1)
                states.add(self.failover.state)
            self.assertEqual(states, {"standby"})
            self.ok(self.primary.addLicenses(licenseFile({"seats": round + 1})))
            self.beat()
            self.assertMirrors()
        self.assertEqual(self.failover.takeovers, 3)

    def test_neverSyncedNoTakeover(self):
        """A failover that never completed a sync does not take over."""
        self.stop(self.failover)
        self.killPrimary()
        fresh = self.startFailover(store=FakeStore())
        self.advance(TAKEOVER * 3)
        self.assertEqual(fresh.state, "standby")
        self.assertIn("never completed a sync", fresh.problem)

    def test_restartWhilePrimaryDown(self):
        """A failover restarted while the primary is down serves what it last synced."""
        self.stop(self.failover)
        self.killPrimary()
        again = self.startFailover()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(again.state, "active")
        self.ok(again.heartbeat(hello(again, "m1"), {"lease": self.lease}))

    def test_restartWhileActiveThenHandback(self):
        """A failover restarted while active still discards its own changes on handback."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.ok(self.failover.addLicenses(licenseFile({"product": "MapForce"})))
        self.stop(self.failover)
        self.failover = self.startFailover()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.revivePrimary()
        self.beat()
        self.assertEqual(self.failover.state, "standby")
        self.assertMirrors()

    def test_divergedSyncIsSnapshot(self):
        """After a handback without the takeover's pool (the failover restarted while
        active), the next sync is a full snapshot, even when the primary's revision has
        passed the failover's: changes since the failover's own revision would keep what
        it did while active and miss what the primary did meanwhile.

        The servers are cut apart, not stopped: the primary goes on taking changes.
        """
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.addLicenses(licenseFile({"product": "MapForce"})))
        for seats in (2, 3, 4):
            self.ok(self.primary.addLicenses(licenseFile({"seats": seats})))
        self.assertGreater(self.primary.committedRevision, self.failover.pool.revision)
        self.stop(self.failover)
        self.failover = self.startFailover()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.endpoint.revive(LicensingFactory(self.primary))
        self.beat()
        self.assertEqual(self.failover.state, "standby")
        self.beat()
        self.assertMirrors()
        self.assertEqual(self.failover.pool.licensesFor("MapForce"), [])

    def test_reaperOnlyWhenActive(self):
        """A standby failover leaves expiry to the primary; an active one reaps."""
        synced = self.failover.pool.lease(self.lease)
        # Ended even at the latest end its client can have been told (``latest_end``).
        ended = int(self.failover.lastSync) - synced.ttl // 2 - 1
        expired = dataclasses.replace(synced, id="l-old", expires=ended)
        self.failover.pool.apply([Change.put(expired)])
        self.assertEqual(self.successResultOf(run(self.failover.reap())), 0)
        self.assertIsNotNone(self.failover.pool.lease("l-old"))
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.successResultOf(run(self.failover.reap())), 1)
        self.assertIsNone(self.failover.pool.lease("l-old"))


class ScriptedPrimary(LineReceiver):
    """A primary that answers each verb with the line its factory's ``answers`` holds."""

    delimiter = b"\n"

    def lineReceived(self, line):
        self.transport.write(self.factory.answers[line.split(b" ")[0].decode()])


def scriptedPrimary(**answers):
    """A factory of ``ScriptedPrimary`` answering as given, PEER with a good challenge."""
    factory = Factory.forProtocol(ScriptedPrimary)
    factory.answers = {
        "PEER": f"OK server=ls1 version={__version__} edition={EDITION} challenge=00\n".encode(),
        "AUTH": b"OK revision=0\n",
        "SYNC": b"OK mode=changes revision=0 lines=0\n",
        "BEAT": b"OK revision=0 time=1\n",
        **{verb: line.encode() for verb, line in answers.items()},
    }
    return factory


class GiantAnswerTests(PairTestCase):
    """A number in the primary's answers with more than ``wire.MAX_DIGITS`` digits makes
    the failover drop the link with a warning; nothing is logged as a failure, and the
    primary, which answers, is alive: the failover stays in standby."""

    def setUp(self):
        super().setUp()
        self.warnings = []
        self.patch(PeerClientProtocol, "log", Logger(observer=self.warnings.append))
        self.ok(self.primary.addLicenses(licenseFile({"seats": 1})))
        self.beat()
        self.assertMirrors()

    def answering(self, **answers):
        """The primary's port now answers as ``answers`` say, for three takeover times."""
        self.killPrimary()
        self.endpoint.revive(scriptedPrimary(**answers))
        self.advance(TAKEOVER * 3)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.failover.state, "standby")
        self.assertEqual(self.failover.takeovers, 0)
        return [formatEvent(event) for event in self.warnings]

    def test_authRevision(self):
        """AUTH answered with revision= of 5000 digits: the link is dropped, never paired."""
        warned = self.answering(AUTH=f"OK revision={'9' * 5000}\n")
        self.assertNotEqual(self.failover.linkState, "paired")
        self.assertTrue(any("revision= that is no number" in text for text in warned), warned)

    def test_beatRevision(self):
        """A BEAT answered with revision= of MAX_DIGITS + 1 digits drops the link."""
        warned = self.answering(BEAT=f"OK revision={'1' * (wire.MAX_DIGITS + 1)} time=1\n")
        self.assertTrue(any("revision= that is no number" in text for text in warned), warned)
        self.assertEqual(self.failover.pool.revision, 1, "nothing was synced")

    def test_syncLines(self):
        """A SYNC answer announcing lines= of 5000 digits drops the link; nothing is synced."""
        warned = self.answering(
            AUTH="OK revision=7\n", SYNC=f"OK mode=changes revision=7 lines={'9' * 5000}\n"
        )
        self.assertTrue(any("lines= that is no number" in text for text in warned), warned)
        self.assertEqual(self.failover.pool.revision, 1, "nothing was synced")


class SecretTests(PairTestCase):
    def test_secretNeverShown(self):
        """The pairing secret appears in no log event, status, setting or message."""
        from twisted.logger import formatEvent, globalLogPublisher

        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.stop(self.failover)
        self.advance(0.5)
        self.primary.peer = None
        self.failover = self.startFailover(secret="wrong-" + SECRET, name="ls3")
        self.advance(3)
        self.failover = self.startFailover(name="ls4", store=FakeStore())
        self.advance(3)
        shown = [formatEvent(event) for event in seen]
        shown += [repr(self.primary.peerStatus()), repr(self.failover.peerStatus())]
        shown += [repr(self.primary.status()), repr(self.failover.settings())]
        for store in (self.primaryStore, self.failoverStore):
            shown += [repr(e) for e in self.successResultOf(store.events(100))]
            shown += [repr(row) for row in store.auditRows]
        self.assertTrue(any("refused" in text for text in shown))
        for text in shown:
            self.assertNotIn(SECRET, text)
