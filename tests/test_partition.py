"""Cut links never hand out more seats than licensed: the exact policy (FAILOVER.md 16-18).

A primary and a failover on one Clock (``PairTestCase``); a cut between them is
``PumpEndpoint.silent`` (nothing moves, nothing closes), so both stay up and
each serves the clients that reach it. The license has N = 5 seats and the
failover's share E = 2: cut off, the primary serves at most 3, the active
failover at most min(2, 5 - the synced leases live at its takeover).
"""

from __future__ import annotations

from twisted.internet import defer

from licenseserver.localstate import (
    ENDED,
    ENDED_WHILE_SERVING,
    REMOVED,
    REMOVED_LIST,
    TAKEOVER_HELD,
    UNCONFIRMED,
    UNCONFIRMED_LIST,
)
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.roles.admin import AdminError
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile, makeRole, run
from tests.test_failover import HEARTBEAT, TAKEOVER, PairTestCase

EXACT = {"seats": 5, "failover_policy": "exact", "failover_share": "2"}
TTL = 120
"""The lease time of ``makeRole``."""


class PartitionTestCase(PairTestCase):
    """A paired pair with one license of ``spec``; helpers to cut and heal the link."""

    spec = EXACT

    def setUp(self) -> None:
        super().setUp()
        (self.lid,) = self.ok(self.primary.addLicenses(licenseFile(self.spec)))
        self.beat()
        self.assertMirrors()

    def checkout(self, role, machine: str) -> str:
        return self.ok(role.checkout(hello(role, machine), {}))["lease"]

    def refusedCheckout(self, role, machine: str) -> str:
        return self.refused(role.checkout(hello(role, machine), {}), "no-seats").message

    def cut(self) -> None:
        """The network between the servers drops everything; both stay up."""
        self.endpoint.silent = True

    def heal(self) -> None:
        self.endpoint.silent = False
        self.endpoint.flush()

    def cutFor(self, seconds: float) -> None:
        self.cut()
        self.advance(seconds)

    def auditKinds(self, store: FakeStore) -> list[str]:
        return [row[2] for row in store.auditRows]

    def inUse(self, role) -> int:
        now = role.now()
        return len(
            {
                (lease.machine, lease.user)
                for lease in role.pool.all("lease")
                if lease.live(now) and self.lid in lease.licenses
            }
        )


class HoldingStore(FakeStore):
    """A fake store whose calls named in ``hold`` wait until ``release``: a slow disk."""

    def __init__(self):
        super().__init__()
        self.hold: set[str] = set()
        self.held: list[tuple[defer.Deferred, defer.Deferred]] = []

    def commit(self, revision, changes, audit=(), patient=False):
        return self._maybeHeld("commit", super().commit(revision, changes, audit, patient))

    def changesSince(self, revision):
        return self._maybeHeld("changesSince", super().changesSince(revision))

    def _maybeHeld(self, method: str, done: defer.Deferred) -> defer.Deferred:
        if method not in self.hold:
            return done
        waiter: defer.Deferred = defer.Deferred()
        self.held.append((done, waiter))
        return waiter

    def release(self) -> None:
        self.hold.clear()
        held, self.held = self.held, []
        for done, waiter in held:
            done.chainDeferred(waiter)


class SlowSyncTests(PartitionTestCase):
    """A sync that takes longer than half the takeover time (a heavy load's) does not cut
    the link: the failover's BEATs go on beside it, served at once, saying the revision
    it held before the sync."""

    storeClass = HoldingStore

    def waitingGrant(self) -> defer.Deferred:
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        d = self.primary.checkout(hello(self.primary, "m4"), {})
        self.assertNoResult(d)
        return d

    def assertLinkedThroughout(self, d: defer.Deferred, beats: int) -> None:
        """For ``beats`` heartbeats, longer than half the takeover time."""
        self.assertGreater(beats * HEARTBEAT, TAKEOVER / 2)
        for _ in range(beats):
            self.beat()
            self.assertTrue(self.primary.linkUp())
            self.assertNoResult(d)  # what the failover says it holds is what it held
        self.assertEqual(self.failover.state, "standby")

    def test_slowWriteAtTheFailover(self):
        """The failover's store takes long to make a sync durable."""
        self.failoverStore.hold.add("commit")
        d = self.waitingGrant()
        self.assertLinkedThroughout(d, int(TAKEOVER / HEARTBEAT) + 2)
        self.failoverStore.release()
        self.beat()
        self.assertIsNotNone(self.failover.pool.lease(self.successResultOf(d)["lease"]))

    def test_slowReadAtThePrimary(self):
        """The primary's store takes long to read the changes a SYNC asks for (less than
        the takeover time: the answers to the BEATs come after the SYNC's, and the
        failover hears nothing from the primary meanwhile)."""
        self.primaryStore.hold.add("changesSince")
        d = self.waitingGrant()
        self.assertLinkedThroughout(d, int(TAKEOVER / HEARTBEAT) - 1)
        self.primaryStore.release()
        self.beat()
        self.assertIsNotNone(self.failover.pool.lease(self.successResultOf(d)["lease"]))


class PrimaryLinkedTests(PartitionTestCase):
    """Rule 16 while the link is up: all N seats, the last E once the failover holds them."""

    def test_firstSeatsAnsweredAtOnce(self):
        """Grants up to N - E need nothing from the failover."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)

    def test_lastSeatsWaitForTheFailover(self):
        """A grant of one of the last E seats is answered only once the failover's BEAT
        says it holds the revision of the grant, which it does within a heartbeat."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        d = self.primary.checkout(hello(self.primary, "m4"), {})
        self.assertNoResult(d)
        self.beat()
        lease = self.successResultOf(d)["lease"]
        self.assertIsNotNone(self.failover.pool.lease(lease))
        stored = self.successResultOf(self.failoverStore.load())
        self.assertIn(lease, {record.id for record in stored.records["lease"]})

    def test_allSeatsWhileLinked(self):
        """While linked, the primary grants all N seats (the last E acknowledged)."""
        for machine in ("m1", "m2", "m3", "m4", "m5"):
            d = self.primary.checkout(hello(self.primary, machine), {})
            self.beat()
            self.successResultOf(d)
        self.assertEqual(self.inUse(self.primary), 5)
        self.refusedCheckout(self.primary, "m6")

    def test_cutBeforeAcknowledgementWithdraws(self):
        """A grant waiting for the failover when the link is cut is taken back and refused:
        the failover may take over without it."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.cut()
        d = self.primary.checkout(hello(self.primary, "m4"), {})
        self.assertNoResult(d)
        self.advance(TAKEOVER / 2 + 0.5)
        failure = self.failureResultOf(d)
        self.assertEqual(failure.value.reason, "no-seats")
        self.assertEqual(self.primary.pool.leasesOfMachine("m4"), [])
        self.assertIn("grant-withdrawn", self.auditKinds(self.primaryStore))

    def test_holderKeepsItsSeat(self):
        """A holder already holding a seat takes no new one: no wait for the failover; in
        a cut, a holder of a lease granted in the cut (one the failover cannot have seen
        released)."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.successResultOf(self.primary.checkout(hello(self.primary, "m1"), {}))
        self.cutFor(TAKEOVER / 2 + 0.5)
        for machine, lease in zip(("m2", "m3"), leases[1:], strict=True):
            self.ok(self.primary.release(hello(self.primary, machine), {"lease": lease}))
        self.checkout(self.primary, "c1")
        self.checkout(self.primary, "c2")
        self.checkout(self.primary, "c1")
        self.refusedCheckout(self.primary, "m1")


class PrimaryCutTests(PartitionTestCase):
    """Rule 16 while the link is down: at most N - E seats, silent ends still count."""

    def test_servesAtMostNMinusE(self):
        self.checkout(self.primary, "m1")
        self.beat()
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.assertTrue(self.primary.cutOff())
        self.checkout(self.primary, "m2")
        self.checkout(self.primary, "m3")
        message = self.refusedCheckout(self.primary, "m4")
        self.assertIn("2 are held back for the failover", message)
        self.assertEqual(
            self.primary.cutLimits(),
            [
                {
                    "license": self.lid,
                    "product": "XMLSpy",
                    "seats": 5,
                    "serving": 3,
                    "since": self.primary.cutLimits()[0]["since"],
                }
            ],
        )

    def test_refusalIsAnUnmetRequest(self):
        """A seat held back for the failover is refused like a full license: audited as a
        denial, and in Messages with the reason, which the seats in use alone do not show."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.refusedCheckout(self.primary, "m4")
        (unmet,) = [
            e
            for e in self.successResultOf(self.primaryStore.events(100))
            if e.kind == "unmet-request"
        ]
        self.assertIn("held back for the failover", unmet.message)
        self.assertEqual(self.auditKinds(self.primaryStore)[-1], "denial")

    def test_silentEndStillCounts(self):
        """A lease the failover holds a copy of that ends by silence during the cut keeps
        its seat: its client may be renewing it at the failover."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.beat()
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.advance(TTL + 1, step=1)
        self.ok(self.primary.reap())
        self.assertEqual(len(list(self.primary.pool.all("lease"))), 3)
        self.refusedCheckout(self.primary, "m4")

    def test_releasedSeatIsFree(self):
        """A lease RELEASEd at the primary during the cut frees its seat."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.beat()
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.ok(self.primary.release(hello(self.primary, "m1"), {"lease": leases[0]}))
        self.checkout(self.primary, "m4")

    def test_grantInCutMayBeReused(self):
        """A lease granted during the cut is unknown to the failover: its silent end frees
        the seat."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.advance(TTL + 1, step=1)
        self.ok(self.primary.reap())
        self.assertEqual(list(self.primary.pool.all("lease")), [])
        self.checkout(self.primary, "m4")

    def test_shortCutHealed(self):
        """When the link is back (a BEAT heard), all N seats may be granted again, and the
        leases kept for their silent end go."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.beat()
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.refusedCheckout(self.primary, "m4")
        self.heal()
        self.beat()
        self.assertFalse(self.primary.cutOff())
        d = self.primary.checkout(hello(self.primary, "m4"), {})
        self.beat()
        self.successResultOf(d)

    def test_restartedPrimaryIsCutUntilPaired(self):
        """A primary restarted with a failover it has not heard yet is cut off."""
        for machine in ("m1", "m2"):
            self.checkout(self.primary, machine)
        self.beat()
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertTrue(self.primary.cutOff())
        self.checkout(self.primary, "m3")
        self.refusedCheckout(self.primary, "m4")
        self.endpoint.revive(LicensingFactory(self.primary))
        self.advance(HEARTBEAT * 2)
        self.assertFalse(self.primary.cutOff())
        self.assertEqual(self.failover.state, "standby")

    def test_unpairLiftsTheLimits(self):
        """Unpairing the failover (audited, in Messages) lifts the limits."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.refusedCheckout(self.primary, "m4")
        self.ok(self.primary.unpair())
        self.checkout(self.primary, "m4")
        self.checkout(self.primary, "m5")
        self.assertFalse(self.primary.cutOff())
        self.assertIn("failover-unpaired", self.auditKinds(self.primaryStore))
        events = self.successResultOf(self.primaryStore.events(20))
        self.assertIn("failover-unpaired", [e.kind for e in events])

    def test_neverPaired(self):
        """A primary that never had a failover serves all N seats at once."""
        alone = makeRole(FakeStore(), self.clock)
        self.addCleanup(alone.stopService)
        self.ok(alone.addLicenses(licenseFile(EXACT)))
        for machine in ("m1", "m2", "m3", "m4", "m5"):
            self.checkout(alone, machine)


class FullPolicyTests(PartitionTestCase):
    spec = {"seats": 5}

    def test_noLimits(self):
        """Under full, a cut-off primary serves every seat, and answers at once."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        for machine in ("m1", "m2", "m3", "m4", "m5"):
            self.checkout(self.primary, machine)
        self.assertEqual(self.primary.cutLimits(), [])

    def test_failoverServesTheWholePool(self):
        """Under full, the active failover serves every free seat (the seed's behaviour)."""
        self.checkout(self.primary, "m1")
        self.beat()
        self.cutFor(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        for machine in ("f1", "f2", "f3", "f4"):
            self.checkout(self.failover, machine)


class FailoverExactTests(PartitionTestCase):
    """Rule 17: the active failover grants while its own grants are fewer than
    min(E, N - S), S the synced leases live at its takeover (not RELEASEd here)."""

    def hold(self, *machines: str) -> list[str]:
        """Leases granted at the primary (acknowledged) and synced."""
        leases = []
        for machine in machines:
            d = self.primary.checkout(hello(self.primary, machine), {})
            self.beat()
            leases.append(self.successResultOf(d)["lease"])
        self.assertMirrors()
        return leases

    def takeOverInCut(self) -> None:
        self.cutFor(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")

    def test_ownGrantsBoundedByShare(self):
        self.hold("m1")
        self.takeOverInCut()
        self.checkout(self.failover, "f1")
        self.checkout(self.failover, "f2")
        message = self.refusedCheckout(self.failover, "f3")
        self.assertIn("at most 2 seats", message)

    def test_boundedBySyncedSeats(self):
        """With 4 synced seats live, one new seat is the failover's to grant."""
        self.hold("m1", "m2", "m3", "m4")
        self.takeOverInCut()
        self.checkout(self.failover, "f1")
        self.refusedCheckout(self.failover, "f2")

    def test_syncedClientsRenew(self):
        """Every synced lease is renewed at the failover, whatever the limits."""
        leases = self.hold("m1", "m2", "m3", "m4", "m5")
        self.takeOverInCut()
        for machine, lease in zip(("m1", "m2", "m3", "m4", "m5"), leases, strict=True):
            self.ok(self.failover.heartbeat(hello(self.failover, machine), {"lease": lease}))
        self.refusedCheckout(self.failover, "f1")

    def test_releasedSyncedSeatReused(self):
        """A synced lease RELEASEd at the failover frees its seat there."""
        leases = self.hold("m1", "m2", "m3", "m4")
        self.takeOverInCut()
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": leases[0]}))
        self.checkout(self.failover, "f1")
        self.checkout(self.failover, "f2")
        self.refusedCheckout(self.failover, "f3")

    def test_silentSyncedSeatNotReused(self):
        """A synced lease that ends by silence at the failover keeps its seat: its client
        may be renewing it at the primary, on the far side of the cut."""
        self.hold("m1", "m2", "m3", "m4")
        self.takeOverInCut()
        self.advance(TTL + 1, step=1)
        self.ok(self.failover.reap())
        self.assertEqual(len(list(self.failover.pool.all("lease"))), 4)
        self.checkout(self.failover, "f1")
        self.refusedCheckout(self.failover, "f2")

    def test_ownSilentGrantNotReused(self):
        """The failover's own grant that ends by silence keeps its seat; one RELEASEd
        frees it."""
        self.takeOverInCut()
        first = self.checkout(self.failover, "f1")
        self.ok(self.failover.release(hello(self.failover, "f1"), {"lease": first}))
        self.checkout(self.failover, "f2")
        self.checkout(self.failover, "f3")
        self.advance(TTL + 1, step=1)
        self.ok(self.failover.reap())
        self.refusedCheckout(self.failover, "f4")

    def test_restartWhileActiveKeepsTheCount(self):
        """The takeover's count is durable: a failover restarted while active counts from
        the same takeover."""
        self.hold("m1", "m2", "m3")
        self.takeOverInCut()
        self.checkout(self.failover, "f1")
        held = self.successResultOf(self.failoverStore.getLocal(TAKEOVER_HELD))
        self.assertEqual(len(held["live"]), 3)
        self.failover.stopService()
        self.failover = self.startFailover()
        self.advance(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        self.checkout(self.failover, "f2")
        self.refusedCheckout(self.failover, "f3")

    def test_secondCutDuringHandback(self):
        """Heard again, then silent again before the merge: the failover serves on under
        the limits of its first takeover."""
        self.hold("m1", "m2", "m3")
        self.takeOverInCut()
        self.checkout(self.failover, "f1")
        self.failover.heard()
        self.assertEqual(self.failover.machine.state, "merging")
        self.advance(TAKEOVER + 0.5)
        self.assertEqual(self.failover.machine.state, "active")
        self.checkout(self.failover, "f2")
        self.refusedCheckout(self.failover, "f3")


class HandbackTests(PartitionTestCase):
    """Rules 14 and 18 under exact: both sides serve their share of a cut; the merge puts
    every client's lease at the primary and never more than N seats in use."""

    def test_cutBothSidesThenMerge(self):
        self.cutFor(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        primary = [self.checkout(self.primary, m) for m in ("p1", "p2", "p3")]
        self.refusedCheckout(self.primary, "p4")
        failover = [self.checkout(self.failover, m) for m in ("f1", "f2")]
        self.refusedCheckout(self.failover, "f3")
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        for lease in primary + failover:
            self.assertIsNotNone(self.primary.pool.lease(lease))
        self.assertEqual(self.inUse(self.primary), 5)
        self.assertEqual(self.primary.overAllocated(self.lid), 0)
        self.refusedCheckout(self.primary, "p4")
        for machine, lease in zip(("f1", "f2"), failover, strict=True):
            self.ok(self.primary.heartbeat(hello(self.primary, machine), {"lease": lease}))
        self.beat()
        self.assertMirrors()

    def test_restartedWhileActivePrimaryBackFirst(self):
        """A failover restarted while active, whose primary answers before it would take
        over again, still hands its leases over before it syncs."""
        self.cutFor(TAKEOVER + 0.5)
        granted = self.checkout(self.failover, "f1")
        self.failover.stopService()
        self.heal()
        self.failover = self.startFailover()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNotNone(self.primary.pool.lease(granted))
        self.assertIsNone(self.successResultOf(self.failoverStore.getLocal(TAKEOVER_HELD)))
        self.assertMirrors()

    def test_divergedFailoverAcknowledgesNothing(self):
        """A failover holding leases of its own says revision 0 in its BEAT: it does not
        hold the primary's revisions, whatever its own count says."""
        self.cutFor(TAKEOVER + 0.5)
        self.checkout(self.failover, "f1")
        self.assertEqual(self.failover._beatArgs(), {"revision": 0, "diverged": 1})


class BeatTests(PartitionTestCase):
    def test_divergedBeatIsNoLink(self):
        """A BEAT from a failover that served on its own does not end the cut at the
        primary: its leases are not here yet."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.assertTrue(self.primary.cutOff())
        link = self.primary.peer.session
        self.ok(self.primary.peerBeat(link, {"revision": "0", "diverged": "1"}))
        self.assertTrue(self.primary.cutOff())
        self.ok(self.primary.peerBeat(link, {"revision": str(self.failover.pool.revision)}))
        self.assertFalse(self.primary.cutOff())


class CutLimitTests(PartitionTestCase):
    """Rule 19: each server says the limit in force while the link is down."""

    def test_bothSides(self):
        self.checkout(self.primary, "m1")
        self.beat()
        self.assertEqual(self.primary.cutLimits(), [])
        self.assertEqual(self.failover.cutLimits(), [])
        self.cutFor(TAKEOVER + 0.5)
        (primary,) = self.primary.cutLimits()
        self.assertEqual((primary["seats"], primary["serving"]), (5, 3))
        (failover,) = self.failover.cutLimits()
        self.assertEqual((failover["license"], failover["seats"]), (self.lid, 5))
        self.assertEqual(failover["serving"], 3)
        self.assertEqual(failover["since"], self.failover._takeover["at"])
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.primary.cutLimits(), [])
        self.assertEqual(self.failover.cutLimits(), [])


class UnpairTests(PartitionTestCase):
    def test_failoverRefuses(self):
        """Unpairing is the primary's: a failover answers 409 and changes nothing."""
        failure = self.failureResultOf(run(self.failover.unpair()), AdminError)
        self.assertEqual(failure.value.status, 409)
        self.assertEqual(self.failover.linkState, "paired")

    def test_idempotent(self):
        """Unpairing a primary without a failover changes nothing and audits nothing."""
        self.ok(self.primary.unpair())
        kinds = self.auditKinds(self.primaryStore)
        self.ok(self.primary.unpair())
        self.assertEqual(self.auditKinds(self.primaryStore), kinds)


class InterleavingTests(PartitionTestCase):
    """Interleavings the property test (``test_partition_property``) found, one each."""

    def test_silentEndReapedWhileLinkedStillCounts(self):
        """A lease reaped at its silent end while linked keeps its seat until the failover
        acknowledges the removal: cut before that, the failover still holds the lease and
        renews it when it takes over."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.advance(TTL - 0.5)
        self.clock.advance(1.5)  # no byte moves: the removal stays here, the link counts
        self.assertTrue(self.primary.linkUp())
        self.ok(self.primary.reap())
        self.assertEqual(list(self.primary.pool.all("lease")), [])
        self.cut()
        self.advance(TAKEOVER / 2 + 0.5)
        self.assertIsNotNone(self.failover.pool.lease(leases[0]))
        self.refusedCheckout(self.primary, "m4")

    def test_removalStillCountsAfterRestart(self):
        """The removals the failover has not acknowledged are noted durably: a primary
        restarted before the acknowledgement still counts them while cut off."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.advance(TTL - 0.5)
        self.clock.advance(1.5)  # no byte moves: the removal stays here
        self.ok(self.primary.reap())
        self.assertEqual(list(self.primary.pool.all("lease")), [])
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertTrue(self.primary.cutOff())
        self.refusedCheckout(self.primary, "m4")

    def notes(self) -> dict:
        return self.successResultOf(self.primaryStore.getLocals(REMOVED))

    def test_removalNotedPerLease(self):
        """Each removal is noted on its own (a busy primary rewrites no list per removal),
        and its note goes once the failover acknowledges the removal."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.advance(TTL - 0.5)
        self.clock.advance(1.5)  # no byte moves: the removal stays here
        self.ok(self.primary.reap())
        notes = self.notes()
        self.assertEqual(sorted(notes), sorted(REMOVED + lease for lease in leases))
        self.assertEqual({note[1]["id"] for note in notes.values()}, set(leases))
        self.beat()
        self.beat()
        self.assertEqual(self.notes(), {})

    def test_oneListOfAnOlderVersionCounts(self):
        """A primary whose notes are one list, as version 1.0 kept them, still counts the
        removals in it after a restart, and notes them one by one from then on."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.advance(TTL - 0.5)
        self.clock.advance(1.5)
        self.ok(self.primary.reap())
        notes = self.notes()
        for name in notes:
            self.ok(self.primaryStore.setLocal(name, None))
        self.ok(self.primaryStore.setLocal(REMOVED_LIST, list(notes.values())))
        self.killPrimary()
        self.primary = self.startPrimary()
        self.refusedCheckout(self.primary, "m4")
        self.assertEqual(self.notes(), notes)
        self.assertIsNone(self.successResultOf(self.primaryStore.getLocal(REMOVED_LIST)))

    def test_removalAcknowledgedFreesTheSeat(self):
        """Once the failover acknowledged the removal, the seat is free in a later cut."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        self.beat()
        self.advance(TTL + 6)
        self.assertEqual(list(self.primary.pool.all("lease")), [])
        self.cutFor(TAKEOVER / 2 + 0.5)
        for machine in ("m4", "m5", "m6"):
            self.checkout(self.primary, machine)

    def test_unconfirmedGrantWithdrawnAtRestart(self):
        """A grant of one of the last E seats is durable before the failover's
        acknowledgement; if the primary dies first, it starts again without it (no client
        was told of it), and a retry under its request key while cut off is a new grant,
        refused: the failover may hold the withdrawn one."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        waiting = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        self.assertNoResult(waiting)
        self.assertIsNotNone(self.primary.pool.leaseByRequest("m4", "k4"))
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertTrue(self.primary.cutOff())
        self.assertIsNone(self.primary.pool.leaseByRequest("m4", "k4"))
        self.assertIn("grant-withdrawn", self.auditKinds(self.primaryStore))
        retry = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        self.assertEqual(self.failureResultOf(retry).value.reason, "no-seats")

    def unconfirmedNotes(self) -> dict:
        return self.successResultOf(self.primaryStore.getLocals(UNCONFIRMED))

    def test_unconfirmedNotedPerGrant(self):
        """Each grant waiting for the failover is noted on its own (a busy primary rewrites
        no list per grant), and its note goes before its answer."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        waiting = [
            self.primary.checkout(hello(self.primary, m), {"request": "k"}) for m in ("m4", "m5")
        ]
        ids = {self.primary.pool.leaseByRequest(m, "k").id for m in ("m4", "m5")}
        self.assertEqual(set(self.unconfirmedNotes()), {UNCONFIRMED + i for i in ids})
        self.beat()
        self.assertEqual({self.successResultOf(d)["lease"] for d in waiting}, ids)
        self.assertEqual(self.unconfirmedNotes(), {})

    def test_oneUnconfirmedListOfAnOlderVersionWithdrawn(self):
        """A primary whose unconfirmed grants are one list, as version 1.0 kept them,
        withdraws them at its restart all the same."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        waiting = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        self.assertNoResult(waiting)
        notes = self.unconfirmedNotes()
        self.ok(self.primaryStore.setLocal(UNCONFIRMED, None))
        older = [name[len(UNCONFIRMED) :] for name in notes]
        self.ok(self.primaryStore.setLocal(UNCONFIRMED_LIST, older))
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertIsNone(self.primary.pool.leaseByRequest("m4", "k4"))
        self.assertIn("grant-withdrawn", self.auditKinds(self.primaryStore))
        self.assertIsNone(self.successResultOf(self.primaryStore.getLocal(UNCONFIRMED_LIST)))
        self.assertEqual(self.unconfirmedNotes(), {})

    def test_acknowledgedGrantKeptAtRestart(self):
        """A grant the failover acknowledged is answered only once it is no longer noted
        as unconfirmed: a restart keeps it."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        d = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        self.beat()
        lease = self.successResultOf(d)["lease"]
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertIsNotNone(self.primary.pool.lease(lease))

    def test_retryWaitsForTheAcknowledgement(self):
        """A retry under the request key of a grant still waiting for the failover waits
        too, and is refused with it when the link is cut first."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        first = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        retry = self.primary.checkout(hello(self.primary, "m4"), {"request": "k4"})
        self.assertNoResult(retry)
        self.cut()
        self.advance(TAKEOVER / 2 + 0.5)
        for d in (first, retry):
            self.assertEqual(self.failureResultOf(d).value.reason, "no-seats")

    def test_waitingGrantIsNoSeatYet(self):
        """A holder whose grant waits for the failover holds no seat yet: its second
        CHECKOUT waits as well, and both are withdrawn by a cut."""
        for machine in ("m1", "m2", "m3"):
            self.checkout(self.primary, machine)
        m4 = hello(self.primary, "m4")
        first = self.primary.checkout(m4, {})
        second = self.primary.checkout(m4, {})
        self.assertNoResult(second)
        self.cut()
        self.advance(TAKEOVER / 2 + 0.5)
        for d in (first, second):
            self.assertEqual(self.failureResultOf(d).value.reason, "no-seats")
        self.assertEqual(self.primary.pool.leasesOfMachine("m4"), [])

    def test_shortHealEndsTheCut(self):
        """A heal as short as one BEAT ends the cut: a lease granted in it is the failover's
        too, so in the next cut its silent end keeps its seat."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        self.checkout(self.primary, "m1")
        self.heal()
        self.beat()
        self.cut()
        self.advance(TAKEOVER / 2 + 0.5)
        self.checkout(self.primary, "m2")
        self.advance(TTL + 1, step=1)
        self.ok(self.primary.reap())
        self.checkout(self.primary, "m3")
        self.checkout(self.primary, "m4")
        self.refusedCheckout(self.primary, "m5")

    def test_takeoverRenewsUnwrittenRenewals(self):
        """A synced lease whose stored end passed before the last sync, but whose client was
        told a later end (a renewal not yet written), is renewed at takeover."""
        lease = self.checkout(self.primary, "m1")
        self.advance(30)
        self.ok(self.primary.heartbeat(hello(self.primary, "m1"), {"lease": lease}))
        self.advance(TTL - 30 + 5)
        self.checkout(self.primary, "m2")  # something to sync
        self.beat()
        self.assertLess(self.failover.pool.lease(lease).expires, self.failover.lastSync)
        self.takeOver()
        self.ok(self.failover.heartbeat(hello(self.failover, "m1"), {"lease": lease}))

    def takeOver(self) -> None:
        self.cutFor(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")

    def test_failoverCountsASyncedHoldersNewLease(self):
        """A synced lease's holder taking a new lease at the failover takes one of its own
        seats: the primary may have seen it release the synced one."""
        for machine in ("m1", "m2", "m3", "m4"):
            d = self.primary.checkout(hello(self.primary, machine), {})
            self.beat()
            self.successResultOf(d)
        self.takeOver()
        self.checkout(self.failover, "f1")
        self.refusedCheckout(self.failover, "m1")

    def test_holderReleasedAtTheFailover(self):
        """While cut off, a holder's lease the failover holds too is no seat held for sure:
        released at the failover, its seat may be another client's there, so a new lease
        of the same holder at the primary is a new seat."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.beat()
        self.takeOver()
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": leases[0]}))
        self.refusedCheckout(self.primary, "m1")
        held = self.checkout(self.failover, "f1")  # the seat m1 released, and the share
        self.assertIsNotNone(self.failover.pool.lease(held))

    def test_releaseAtFailoverSurvivesItsRestart(self):
        """A RELEASE at the active failover reaches the primary with the merge even when the
        failover restarted in between: how each lease ended is noted durably."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.beat()
        self.takeOver()
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": leases[0]}))
        self.failover.stopService()
        self.failover = self.startFailover()
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.primary.pool.lease(leases[0]))
        self.assertIsNotNone(self.primary.pool.lease(leases[1]))

    def endedNotes(self) -> dict:
        return self.successResultOf(self.failoverStore.getLocals(ENDED))

    def test_endsNotedPerLease(self):
        """Each lease that ends at the active failover is noted on its own (a long takeover
        rewrites no growing list per end); the notes go with the takeover's, once the
        primary has them."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.beat()
        self.takeOver()
        for machine, lease in zip(("m1", "m2"), leases, strict=False):
            self.ok(self.failover.release(hello(self.failover, machine), {"lease": lease}))
        notes = self.endedNotes()
        self.assertEqual(sorted(notes), sorted(ENDED + lease for lease in leases[:2]))
        self.assertEqual({how for how, _ in notes.values()}, {"released"})
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.primary.pool.lease(leases[0]))
        self.assertEqual(self.endedNotes(), {})

    def test_staleEndsForgottenAtStart(self):
        """Notes of ended leases without a takeover (a stop while the takeover's notes were
        cleared) are dropped at the start: a later merge must not remove those leases."""
        self.failover.stopService()
        self.ok(self.failoverStore.setLocal(ENDED + "l-stale", ["released", 0]))
        self.failover = self.startFailover()
        self.assertEqual(self.endedNotes(), {})

    def test_oneDictOfAnOlderVersionMerges(self):
        """An active failover whose notes of ended leases are one dict, as version 1.0 kept
        them, still merges them as they ended after a restart, and notes them one by one
        from then on."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.beat()
        self.takeOver()
        self.ok(self.failover.release(hello(self.failover, "m1"), {"lease": leases[0]}))
        notes = self.endedNotes()
        self.ok(self.failoverStore.setLocal(ENDED, None))
        older = {name[len(ENDED) :]: note for name, note in notes.items()}
        self.ok(self.failoverStore.setLocal(ENDED_WHILE_SERVING, older))
        self.failover.stopService()
        self.failover = self.startFailover()
        self.assertEqual(self.endedNotes(), notes)
        self.assertIsNone(self.successResultOf(self.failoverStore.getLocal(ENDED_WHILE_SERVING)))
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.primary.pool.lease(leases[0]))
        self.assertIsNotNone(self.primary.pool.lease(leases[1]))

    def test_releasedInCutNotMergedBack(self):
        """A synced lease released at the primary during the cut, which the failover
        renewed when it took over, is not brought back by the merge."""
        leases = [self.checkout(self.primary, m) for m in ("m1", "m2", "m3")]
        self.advance(TTL / 2 + 5)  # so that the takeover's renewals are written
        self.takeOver()
        self.ok(self.primary.release(hello(self.primary, "m1"), {"lease": leases[0]}))
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.primary.pool.lease(leases[0]))
        for lease in leases[1:]:
            self.assertIsNotNone(self.primary.pool.lease(lease))
