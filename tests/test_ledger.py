"""Tests for the ledger (licenseserver.ledger): commit with undo, renewals, sync, replace."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver.interfaces import ILedger
from licenseserver.ledger import Ledger
from licenseserver.model import Change, Lease, Setting, Snapshot
from licenseserver.protocols.wire import ProtocolError
from licenseserver.store import StoreWriteError
from licenseserver.testing import FakeStore
from tests.test_licensing import HeldStore

NOW = 1_780_000_000


def lease(id: str = "l-1", expires: int = NOW + 120, ttl: int = 120) -> Lease:
    return Lease(
        id=id,
        client="c-1",
        machine="m1",
        user="anna",
        product="XMLSpy",
        version="2025r2",
        licenses=("L-1",),
        kind="concurrent",
        granted=NOW,
        expires=expires,
        ttl=ttl,
    )


class LedgerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = FakeStore()
        self.ledger = Ledger(self.store)
        self.ledger.load(self.successResultOf(self.store.load()))

    def stored(self) -> Snapshot:
        return self.successResultOf(self.store.load())

    def storedLease(self, lease_id: str) -> Lease | None:
        found = [r for r in self.stored().records.get("lease", []) if r.id == lease_id]
        return found[0] if found else None

    def test_interface(self):
        """The ledger provides ILedger."""
        self.assertTrue(verifyObject(ILedger, self.ledger))

    def test_commit(self):
        """A commit changes the pool at once, under the next revision, and is durable
        once it fires; committedRevision follows the store."""
        d = self.ledger.commit([Change.put(Setting("lease_ttl", 60))], result="done")
        self.assertEqual(self.ledger.pool.setting("lease_ttl"), 60)
        self.assertEqual(self.ledger.revision, 1)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(self.ledger.committedRevision, 1)
        self.assertEqual(self.stored().revision, 1)

    def test_refusedCommitIsTakenBack(self):
        """A write the store refuses puts the pool back and fails with internal-error."""
        self.successResultOf(self.ledger.commit([Change.put(lease())]))
        self.store.failNext(StoreWriteError("disk full"))
        d = self.ledger.commit([Change.delete(lease()), Change.put(Setting("lease_ttl", 9))])
        failure = self.failureResultOf(d, ProtocolError)
        self.assertEqual(failure.value.reason, "internal-error")
        self.assertIsNotNone(self.ledger.pool.lease("l-1"))
        self.assertIsNone(self.ledger.pool.setting("lease_ttl"))
        self.assertEqual(self.ledger.storedExpiry, {"l-1": NOW + 120})
        self.assertEqual(len(self.flushLoggedErrors(StoreWriteError)), 1)

    def test_renewWritesOnlyWhenDue(self):
        """A renewal reaches the store only when the stored end is less than half a lease
        time ahead; the pool always has the new end."""
        self.successResultOf(self.ledger.commit([Change.put(lease())]))
        (renewed,), written = self.ledger.renew([lease()], NOW + 30)
        self.assertIsNone(written, "90 s of 120 left: no write")
        self.assertEqual(self.ledger.pool.lease("l-1").expires, NOW + 150)
        self.assertEqual(self.storedLease("l-1").expires, NOW + 120)
        (renewed,), written = self.ledger.renew([lease()], NOW + 61)
        self.successResultOf(written)
        self.assertEqual(self.storedLease("l-1").expires, NOW + 181)
        self.assertEqual(self.ledger.storedExpiry["l-1"], NOW + 181)

    def test_applySync(self):
        """A sync's groups are applied under the primary's revisions and stored."""
        groups = [(5, [Change.put(lease())]), (7, [Change.put(Setting("lease_ttl", 30))])]
        self.successResultOf(self.ledger.applySync(groups))
        self.assertEqual((self.ledger.revision, self.ledger.committedRevision), (7, 7))
        self.assertEqual(self.stored().revision, 7)
        self.assertIsNotNone(self.storedLease("l-1"))

    def test_failedSyncReloadsWhatIsDurable(self):
        """When one of a sync's writes fails after later groups were applied, the pool is
        what the store holds, not what undoing that one group would leave: the next sync
        goes on from there."""
        store = HeldStore()
        ledger = Ledger(store)
        ledger.load(self.successResultOf(store.load()))
        store.held = True
        store.failNext(StoreWriteError("disk full"))
        groups = [
            (5, [Change.put(lease(expires=NOW + 100))]),
            (7, [Change.put(lease(expires=NOW + 200))]),
        ]
        d = defer.ensureDeferred(ledger.applySync(groups))
        store.held = False
        store.releaseOne()
        store.releaseOne()
        self.failureResultOf(d, ProtocolError)
        durable = self.successResultOf(store.load())
        self.assertEqual(ledger.revision, durable.revision)
        self.assertEqual(ledger.pool.snapshot().all(), durable.all())
        self.assertEqual(ledger.pool.lease("l-1").expires, NOW + 200)
        self.flushLoggedErrors(StoreWriteError)

    def test_replaceAndRestore(self):
        """replace writes a snapshot, then holds it; restore holds it at once, then writes it."""
        self.successResultOf(self.ledger.commit([Change.put(lease())]))
        saved = self.ledger.snapshot()
        snapshot = Snapshot(9, {"setting": [Setting("lease_ttl", 20)]})
        self.successResultOf(self.ledger.replace(snapshot))
        self.assertIsNone(self.ledger.pool.lease("l-1"))
        self.assertEqual((self.ledger.revision, self.stored().revision), (9, 9))
        d = self.ledger.restore(saved)
        self.assertIsNotNone(self.ledger.pool.lease("l-1"), "the pool is back at once")
        self.successResultOf(d)
        self.assertEqual(self.stored().revision, saved.revision)
        self.assertIsNotNone(self.storedLease("l-1"))
