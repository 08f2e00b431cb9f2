"""Tests of what a restarted primary tells about its outage, and what its failover reports.

A primary notes in its data directory that it runs and that it stopped
cleanly; started again over the same store, it records in Messages since when
it was down and whether the stop was clean. A failover that served while the
primary was away reports it with the AUTH of its next pairing, and the
primary records that too.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from licenseserver._version import EDITION, __version__
from licenseserver.localstate import SERVED
from licenseserver.passwords import peer_proof
from licenseserver.roles.primary import ALIVE_EVERY, PrimaryRole, duration, utc
from licenseserver.testing import FakeStore, PumpEndpoint
from tests.helpers import START, hello, licenseFile, makeRole, makeSwitch, run, session
from tests.test_failover import HEARTBEAT, SECRET, TAKEOVER, PairTestCase


def crash(role):
    """The role's process dies: its timers stop, and it notes nothing more."""
    for child in list(role):
        child.stopService()


class OutageRecordTests(unittest.TestCase):
    """A primary role restarted over the same store, on one Clock."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FakeStore()

    def start(self):
        return makeRole(self.store, self.clock, cls=PrimaryRole)

    def outages(self):
        events = self.successResultOf(self.store.events(100))
        return [e for e in events if e.kind == "outage"]

    def test_firstStart(self):
        """A first start records no outage."""
        self.start()
        self.assertEqual(self.outages(), [])

    def test_cleanStop(self):
        """After a clean stop, the next start says from when to when it was stopped, and
        that the stop was clean."""
        role = self.start()
        self.clock.advance(100)
        self.successResultOf(role.stopService())
        stopped = int(self.clock.seconds())
        self.clock.advance(3629)
        self.start()
        (event,) = self.outages()
        self.assertEqual(event.severity, "info")
        self.assertEqual(
            event.message,
            f"this primary was stopped from {utc(stopped)} to {utc(stopped + 3629)}"
            " (1 h 0 min); it stopped cleanly",
        )
        self.assertEqual(event.data, {"since": stopped, "until": stopped + 3629, "clean": True})

    def test_crash(self):
        """After a crash, the next start says it did not stop cleanly, and gives the last
        time it noted that it ran (at most ALIVE_EVERY before the crash)."""
        role = self.start()
        self.clock.pump([10] * 10)
        crash(role)
        lastNote = int(START + 3 * ALIVE_EVERY)
        self.clock.advance(600)
        self.start()
        (event,) = self.outages()
        self.assertEqual(event.severity, "warning")
        self.assertIn(f"down from about {utc(lastNote)} to {utc(START + 700)}", event.message)
        self.assertIn("did not stop cleanly", event.message)
        self.assertEqual(
            event.data, {"since": lastNote, "until": int(START + 700), "clean": False}
        )

    def test_crashAfterCleanRestart(self):
        """The note of a clean stop is cleared at the start: a crash after it is a crash."""
        self.successResultOf(self.start().stopService())
        self.clock.advance(10)
        role = self.start()
        self.clock.pump([5] * 9)
        crash(role)
        self.clock.advance(60)
        self.start()
        latest, first = self.outages()
        self.assertEqual((first.data["clean"], latest.data["clean"]), (True, False))
        self.assertEqual(latest.data["since"], int(START + 10 + ALIVE_EVERY))

    def test_notAfterRunningAsFailover(self):
        """A server that ran as a failover in between was not a primary that was down:
        switched back, it records no outage."""
        endpoint = PumpEndpoint(None)
        endpoint.up = False
        switch = makeSwitch(self.store, self.clock, endpoint)
        self.clock.advance(100)
        self.successResultOf(run(switch.switchTo("failover", "ls0:35355")))
        self.clock.advance(3600)
        self.successResultOf(run(switch.switchTo("primary", None)))
        self.assertEqual(self.outages(), [])
        self.successResultOf(switch.stopService())

    def test_durations(self):
        """Durations read as people say them."""
        self.assertEqual(
            [duration(s) for s in (0, 45, 209, 7500, 273600)],
            ["0 s", "45 s", "3 min 29 s", "2 h 5 min", "3 d 4 h"],
        )


class FailoverReportTests(PairTestCase):
    """The failover's time serving reaches the primary's Messages when it pairs again."""

    def setUp(self):
        super().setUp()
        self.ok(self.primary.addLicenses(licenseFile({"seats": 5})))
        self.beat()
        self.assertMirrors()

    def served(self):
        events = self.successResultOf(self.primaryStore.events(100))
        return [e for e in events if e.kind == "failover-served"]

    def takeOver(self):
        """Kill the primary; return when the failover took over."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        return self.failover.stateSince

    def test_reportReachesPrimary(self):
        """After a takeover with two grants and a handback, the restarted primary's
        Messages say that it was down and that the failover served, from when to when,
        with how many grants; the report is made once."""
        since = self.takeOver()
        self.ok(self.failover.checkout(hello(self.failover, "m1"), {}))
        self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))
        self.advance(30)
        self.revivePrimary()
        self.advance(HEARTBEAT + 0.2)
        self.assertEqual(self.failover.linkState, "paired")
        until = self.failover.stateSince
        (event,) = self.served()
        self.assertEqual(
            event.message, f"the failover ls2 served from {utc(since)} to {utc(until)} (2 grants)"
        )
        self.assertEqual(
            event.data,
            {"name": "ls2", "since": since, "until": until, "grants": 2, "takeovers": 1},
        )
        kinds = [e.kind for e in self.successResultOf(self.primaryStore.events(100))]
        self.assertIn("outage", kinds)
        self.assertIsNone(self.successResultOf(self.failoverStore.getLocal(SERVED)))
        self.stop(self.failover)
        self.failover = self.startFailover()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "paired")
        self.assertEqual(len(self.served()), 1, "reported once")

    def test_restartWhileActive(self):
        """A failover stopped while serving reports the time up to its stop, with the
        grants made before it, when it pairs after its restart."""
        since = self.takeOver()
        self.ok(self.failover.checkout(hello(self.failover, "m1"), {}))
        self.advance(10)
        self.stop(self.failover)
        stopped = int(self.clock.seconds())
        self.advance(1)
        self.failover = self.startFailover()
        self.revivePrimary()
        self.advance(HEARTBEAT + 0.2)
        self.assertEqual(self.failover.linkState, "paired")
        (event,) = self.served()
        self.assertEqual(
            (event.data["since"], event.data["until"], event.data["grants"]), (since, stopped, 1)
        )

    def test_crashWhileActive(self):
        """A failover that crashed while serving reports the time up to its new start, the
        latest it can have served until."""
        since = self.takeOver()
        self.advance(10)
        crash(self.failover)
        self.advance(20)
        restarted = int(self.clock.seconds())
        self.failover = self.startFailover()
        self.revivePrimary()
        self.advance(HEARTBEAT + 0.2)
        (event,) = self.served()
        self.assertEqual((event.data["since"], event.data["until"]), (since, restarted))

    def test_unreadableReportStillPairs(self):
        """A report that does not read is left out; the failover pairs all the same."""
        self.stop(self.failover)
        self.primary.peer = None
        s = session("f9")
        args = {"name": "ls9", "version": __version__, "edition": EDITION, "listen": "ls9:1"}
        challenge = self.ok(self.primary.peerPeer(s, args))["challenge"]
        proof = peer_proof(SECRET, challenge, "ls9")
        answer = self.ok(self.primary.peerAuth(s, {"proof": proof, "served_from": "yesterday"}))
        self.assertIn("revision", answer)
        self.assertEqual(self.primary.peer.name, "ls9")
        self.assertEqual(self.served(), [])

    def test_twoTakeoversOneReport(self):
        """Two takeovers before the failover could pair again are one report, from the
        first takeover to the last handback, with the grants of both."""
        since = self.takeOver()
        self.ok(self.failover.checkout(hello(self.failover, "m1"), {}))
        # Restarted while the primary is still down, the failover takes over again.
        self.stop(self.failover)
        self.failover = self.startFailover()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))
        self.revivePrimary()
        self.advance(HEARTBEAT + 0.2)
        (event,) = self.served()
        self.assertEqual((event.data["since"], event.data["grants"]), (since, 2))
        self.assertEqual(event.data["takeovers"], 2)
        self.assertIn("(2 grants in 2 takeovers)", event.message)

    def test_nothingServedNothingReported(self):
        """A failover that never served reports nothing when it pairs again."""
        self.stop(self.failover)
        self.failover = self.startFailover()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "paired")
        self.assertEqual(self.served(), [])


class RoleChangeTests(unittest.TestCase):
    def test_reportForgottenWithItsPrimary(self):
        """A failover pointed at another primary forgets the report of its time serving
        for the old one; one that stays with its primary keeps it."""
        from licenseserver.localstate import role_change

        moved = role_change("failover", "ls1:35355", "failover", "ls9:35355")
        self.assertIn(SERVED, moved)
        self.assertIsNone(moved[SERVED])
        self.assertNotIn(SERVED, role_change("failover", "ls1:35355", "failover", "ls1:35355"))
