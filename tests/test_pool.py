"""Tests for licenseserver.pool: the in-memory pool and its undo."""

import dataclasses

from twisted.trial import unittest

from licenseserver.model import Assignment, Change, Client, Setting
from licenseserver.pool import Pool
from tests.test_allocation import lease, lic


class PoolTests(unittest.TestCase):
    def test_applyAndUndo(self):
        """Applying the undo of a change set puts the pool back as it was."""
        pool = Pool(3, [lic("L-1"), Client("c-1", "m1", "ws1", 1, 1)])
        before = pool.snapshot()
        changes = [
            Change.put(lic("L-1", seats=9)),
            Change.put(lease("m1", request="r1")),
            Change.delete(Client("c-1", "m1", "ws1", 1, 1)),
            Change.put(Assignment("c-1", "XMLSpy", "L-1")),
            Change.put(Setting("borrow_enabled", False)),
        ]
        undo = pool.apply(changes)
        self.assertEqual(pool.license("L-1").seats, 9)
        self.assertIsNone(pool.clientByMachine("m1"))
        self.assertEqual(pool.leaseByRequest("m1", "r1").machine, "m1")
        self.assertFalse(pool.setting("borrow_enabled", True))
        pool.apply(undo)
        self.assertEqual(pool.snapshot(), before)
        self.assertEqual(pool.clientByMachine("m1").id, "c-1")
        self.assertIsNone(pool.leaseByRequest("m1", "r1"))
        self.assertEqual(pool.leasesFor("XMLSpy"), [])
        self.assertEqual(pool.assignmentsOf("c-1"), [])

    def test_indexesFollowReplacement(self):
        """Replacing a record moves it in every index."""
        pool = Pool()
        pool.apply([Change.put(lease("m1", id="l-1"))])
        pool.apply([Change.put(lease("m2", id="l-1", product="MapForce"))])
        self.assertEqual(pool.leasesOfMachine("m1"), [])
        self.assertEqual(pool.leasesFor("XMLSpy"), [])
        self.assertEqual([x.id for x in pool.leasesOfMachine("m2")], ["l-1"])
        self.assertEqual([x.id for x in pool.leasesFor("MapForce")], ["l-1"])

    def test_requestKeyFollowsNewestLease(self):
        """Removing an older lease of a request key keeps the key on the lease that reused it.

        A retry after the first lease expired gets a new lease with the same key;
        when the clean-up then removes the expired one, the key still finds the
        new lease, so a further retry gets it back rather than a third seat.
        """
        pool = Pool()
        old = lease("m1", id="l-1", request="r1")
        new = lease("m1", id="l-2", request="r1")
        pool.apply([Change.put(old)])
        pool.apply([Change.put(new)])
        pool.apply([Change.delete(old)])
        self.assertEqual(pool.leaseByRequest("m1", "r1").id, "l-2")
        pool.apply([Change.delete(new)])
        self.assertIsNone(pool.leaseByRequest("m1", "r1"))

    def test_snapshotRoundTrip(self):
        """A pool made from its snapshot holds the same records and revision."""
        pool = Pool(7, [lic("L-2"), lic("L-1"), lease()])
        again = Pool.fromSnapshot(pool.snapshot())
        self.assertEqual(again.revision, 7)
        self.assertEqual([x.id for x in again.licensesFor("XMLSpy")], ["L-1", "L-2"])
        self.assertEqual(again.count("lease"), 1)

    def test_licensesByProduct(self):
        """Licenses are found by product, in id order, and forgotten when deleted."""
        pool = Pool(0, [lic("L-2"), lic("L-1"), lic("L-3", product="MapForce")])
        self.assertEqual([x.id for x in pool.licensesFor("XMLSpy")], ["L-1", "L-2"])
        pool.apply([Change.delete(lic("L-1"))])
        self.assertEqual([x.id for x in pool.licensesFor("XMLSpy")], ["L-2"])
        pool.apply([Change.put(lic("L-2", product="MapForce"))])
        self.assertEqual(pool.licensesFor("XMLSpy"), [])
        self.assertEqual([x.id for x in pool.licensesFor("MapForce")], ["L-2", "L-3"])

    def test_clientNumbersCountOn(self):
        """The highest client number stays, even when that client goes."""
        pool = Pool(0, [Client("c-7", "m7", "h", 1, 1), Client("c-2", "m2", "h", 1, 1)])
        self.assertEqual(pool.highestClientNumber, 7)
        pool.apply([Change.delete(Client("c-7", "m7", "h", 1, 1))])
        self.assertEqual(pool.highestClientNumber, 7)


class RenewalTests(unittest.TestCase):
    """A renewal (only the end changes) takes a short way through the pool's indexes."""

    def test_renewedIsReplace(self):
        old = lease("m1", request="k1")
        self.assertEqual(
            old.renewed(old.expires + 60), dataclasses.replace(old, expires=old.expires + 60)
        )
        self.assertEqual(old.expires, lease("m1").expires)

    def test_indexesHoldTheRenewedLease(self):
        """After a renewal every index gives the new record, as a pool built afresh does;
        a put that moves a lease (another machine) still leaves nothing behind."""
        pool = Pool(0, [lease("m1", request="k1"), lease("m2", id="b")])
        renewed = lease("m1", request="k1").renewed(lease("m1").expires + 60)
        moved = lease("m3", id="b")
        undo = pool.apply([Change.put(renewed), Change.put(moved)])
        fresh = Pool(0, [renewed, moved])
        for p in (pool, fresh):
            self.assertEqual(p.lease(renewed.id), renewed)
        self.assertEqual(self.indexes(pool), self.indexes(fresh))
        self.assertIs(pool.holdersOf("L-1")[("m1", "anna", "XMLSpy")][renewed.id], renewed)
        self.assertEqual(pool.leaseByRequest("m1", "k1"), renewed)
        self.assertEqual(pool.leasesOfMachine("m2"), [])
        pool.apply(undo)
        self.assertEqual(
            self.indexes(pool),
            self.indexes(Pool(0, [lease("m1", request="k1"), lease("m2", id="b")])),
        )

    def indexes(self, pool: Pool) -> tuple:
        holders = {k: {h: dict(v) for h, v in found.items()} for k, found in pool._holders.items()}
        return (
            holders,
            {p: sorted(ids) for p, ids in pool._leases_by_product.items() if ids},
            {m: sorted(ids) for m, ids in pool._leases_by_machine.items() if ids},
            dict(pool._lease_by_request),
            {key: record for key, record in pool._records["lease"].items()},
        )
