"""Tests for licenseserver.heap: freezing the heap once the pool is loaded."""

import gc

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver.heap import YOUNG_THRESHOLD, FreezeWhenLoaded, raise_young_threshold
from licenseserver.interfaces import IRole
from licenseserver.testing import FakeStore
from tests.helpers import makeRole


class HeldLoadStore(FakeStore):
    """A fake store whose load waits until the test lets it through."""

    def __init__(self):
        super().__init__()
        self.loading = defer.Deferred()

    def load(self):
        loaded = super().load()
        return self.loading.addCallback(lambda ignored: loaded)


class FreezeWhenLoadedTests(unittest.TestCase):
    def test_freezesOnceLoaded(self):
        """The heap is frozen and the collector tuned after the pool is loaded, once."""
        store = HeldLoadStore()
        role = makeRole(store)
        verifyObject(IRole, role)
        done = []
        service = FreezeWhenLoaded(
            role,
            freeze=lambda: done.append(("freeze", role.loaded)),
            tune=lambda: done.append(("tune", role.loaded)),
        )
        service.startService()
        self.assertEqual(done, [])
        store.loading.callback(None)
        self.assertEqual(done, [("freeze", True), ("tune", True)])

    def test_notWhenStoppedFirst(self):
        """A server stopped before its pool loads freezes nothing."""
        store = HeldLoadStore()
        role = makeRole(store)
        frozen = []
        service = FreezeWhenLoaded(
            role, freeze=lambda: frozen.append(True), tune=lambda: frozen.append(True)
        )
        service.startService()
        service.stopService()
        store.loading.callback(None)
        self.assertEqual(frozen, [])

    def test_notWhenLoadFails(self):
        """A pool that cannot be loaded freezes nothing (the role logs the failure)."""
        store = FakeStore()
        store.failNext(RuntimeError("disk on fire"), "load")
        role = makeRole(store)
        frozen = []
        FreezeWhenLoaded(
            role, freeze=lambda: frozen.append(True), tune=lambda: frozen.append(True)
        ).startService()
        self.assertEqual(frozen, [])
        self.flushLoggedErrors(RuntimeError)


class RaiseYoungThresholdTests(unittest.TestCase):
    def setUp(self):
        self.addCleanup(gc.set_threshold, *gc.get_threshold())

    def test_raisesOnlyTheYoungest(self):
        """The youngest generation's threshold is raised; the older two keep theirs."""
        gc.set_threshold(700, 7, 9)
        raise_young_threshold()
        self.assertEqual(gc.get_threshold(), (YOUNG_THRESHOLD, 7, 9))
        self.assertGreater(YOUNG_THRESHOLD, 700)

    def test_neverZero(self):
        """A threshold of 0 would switch collection off: it becomes 1."""
        gc.set_threshold(700, 10, 10)
        raise_young_threshold(0)
        self.assertEqual(gc.get_threshold(), (1, 10, 10))
