"""Tests for licenseserver.switch: changing a running server's role (FAILOVER.md rule 1)."""

from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver.interfaces import IRole
from licenseserver.localstate import (
    DIVERGED,
    ENDED,
    PRIMARY,
    REMOVED,
    REMOVED_LIST,
    ROLE,
    UNCONFIRMED,
    UNCONFIRMED_LIST,
)
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.base import AdminError
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore, PumpEndpoint
from tests.helpers import START, hello, licenseFile, makeSwitch, run, session


class SwitchTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FakeStore()
        self.other = PumpEndpoint(None)
        self.other.up = False
        self.switch = makeSwitch(self.store, self.clock, self.other)
        self.addCleanup(self.switch.stopService)

    def local(self, name):
        return self.successResultOf(self.store.getLocal(name))

    def test_standsForItsRole(self):
        """The switch answers as its current role does."""
        verifyObject(IRole, self.switch)
        self.assertEqual(self.switch.roleName, "primary")
        self.assertEqual(self.switch.status()["role"], "primary")
        self.assertEqual(self.switch.mode(), {"role": "primary", "primary": None})

    def test_primaryToFailover(self):
        """A primary switched to failover runs as a standby failover of the new primary."""
        self.successResultOf(run(self.switch.addLicenses(licenseFile({}))))
        s = hello(self.switch, "m1")
        mode = self.successResultOf(run(self.switch.switchTo("failover", "ls9.example.com")))
        self.assertEqual(mode, {"role": "failover", "primary": "ls9.example.com"})
        self.assertIsInstance(self.switch.current, FailoverRole)
        self.assertEqual(self.switch.state, "standby")
        failure = self.failureResultOf(run(self.switch.checkout(s, {})), ProtocolError)
        self.assertEqual(failure.value.reason, "standby")
        self.assertEqual(self.local(ROLE), "failover")
        self.assertEqual(self.local(PRIMARY), "ls9.example.com")
        self.assertIsNotNone(self.local(DIVERGED))
        events = self.successResultOf(self.store.events(5))
        self.assertEqual(events[0].kind, "mode-changed")

    def test_primaryNotesForgotten(self):
        """A primary switched to failover forgets its partition notes, the families of one
        note per lease included: they were about its own failover's copies."""
        for name, value in [
            (REMOVED + "l-1", [3, {}, "released"]),
            (REMOVED + "l-2", [4, {}, "expired"]),
            (REMOVED_LIST, [[2, {}, "released"]]),
            (ENDED + "l-3", ["released", 5]),
            (UNCONFIRMED + "l-4", True),
            (UNCONFIRMED_LIST, ["l-5"]),
        ]:
            self.successResultOf(self.store.setLocal(name, value))
        self.successResultOf(run(self.switch.switchTo("failover", "ls9.example.com")))
        for prefix in (REMOVED, ENDED, UNCONFIRMED):
            self.assertEqual(self.successResultOf(self.store.getLocals(prefix)), {})
        self.assertIsNone(self.local(REMOVED_LIST))
        self.assertIsNone(self.local(UNCONFIRMED_LIST))

    def test_busyVerbsGoToTheCurrentRole(self):
        """CHECKOUT, RELEASE and HEARTBEAT, which the switch hands on without __getattr__,
        reach the role that runs now, not the one that ran when the switch was made."""
        self.successResultOf(run(self.switch.addLicenses(licenseFile({}))))
        s = hello(self.switch, "m1")
        lease = self.successResultOf(run(self.switch.serveCheckout(s, {})))["lease"]
        self.successResultOf(run(self.switch.switchTo("failover", "ls9.example.com")))
        for serve, args in (
            (self.switch.serveCheckout, {}),
            (self.switch.serveHeartbeat, {"lease": lease}),
            (self.switch.serveRelease, {"lease": lease}),
        ):
            with self.assertRaises(ProtocolError) as caught:
                serve(s, args)
            self.assertEqual(caught.exception.reason, "standby")

    def test_failoverToPrimary(self):
        """A failover switched to primary serves its data as the primary."""
        self.successResultOf(run(self.switch.switchTo("failover", "ls9:35355")))
        self.successResultOf(run(self.switch.switchTo("primary", None)))
        self.assertIsInstance(self.switch.current, PrimaryRole)
        self.assertEqual(self.local(ROLE), "primary")
        self.assertIsNone(self.local(PRIMARY))
        self.successResultOf(
            run(
                self.switch.hello(
                    session("m1"),
                    {"product": "XMLSpy", "version": "2025r2", "host": "h", "machine": "m1"},
                )
            )
        )

    def test_badChoices(self):
        """An unknown role or a failover without a usable primary address is refused."""
        for role, primary in (("backup", None), ("failover", None), ("failover", "a b")):
            failure = self.failureResultOf(run(self.switch.switchTo(role, primary)), AdminError)
            self.assertEqual(failure.value.status, 400)
        self.assertIsInstance(self.switch.current, PrimaryRole)
        self.assertIsNone(self.local(ROLE))

    def test_sameModeChangesNothing(self):
        """Choosing the mode the server already has restarts nothing."""
        before = self.switch.current
        self.successResultOf(run(self.switch.switchTo("primary", None)))
        self.assertIs(self.switch.current, before)
