"""Tests for licenseserver.heap: freezing the heap once the pool is loaded."""

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver.heap import FreezeWhenLoaded
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
        """The heap is frozen after the pool is loaded, not before, and once."""
        store = HeldLoadStore()
        role = makeRole(store)
        verifyObject(IRole, role)
        frozen = []
        service = FreezeWhenLoaded(role, freeze=lambda: frozen.append(role.loaded))
        service.startService()
        self.assertEqual(frozen, [])
        store.loading.callback(None)
        self.assertEqual(frozen, [True])

    def test_notWhenStoppedFirst(self):
        """A server stopped before its pool loads freezes nothing."""
        store = HeldLoadStore()
        role = makeRole(store)
        frozen = []
        service = FreezeWhenLoaded(role, freeze=lambda: frozen.append(True))
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
        FreezeWhenLoaded(role, freeze=lambda: frozen.append(True)).startService()
        self.assertEqual(frozen, [])
        self.flushLoggedErrors(RuntimeError)
