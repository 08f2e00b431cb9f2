"""The failover's states: the state machine itself, and each transition played out on a Clock.

The table of ``roles.failover.TRANSITIONS`` is the whole story of how a
failover moves between standby, active, handing-back, refused and stopped;
each test here makes one of its transitions happen (or be refused) with a
real primary and failover linked in memory, and checks the machine's history.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from licenseserver.roles import failover as failover_module
from licenseserver.roles import primary as primary_module
from licenseserver.roles.failover import (
    ACTIVE,
    HANDING_BACK,
    MERGING,
    REFUSED,
    STANDBY,
    STOPPED,
    TRANSITIONS,
)
from licenseserver.roles.states import StateMachine, hook_name, states_of
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile
from tests.test_failover import HEARTBEAT, TAKEOVER, AnswerOnceAndDie, PairTestCase


class Owner:
    """Records the hooks a machine calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("enter", "leave")):
            return lambda: self.calls.append(name)
        raise AttributeError(name)


class MachineTests(unittest.TestCase):
    TABLE = {("a", "go"): "b-c", ("b-c", "back"): "a", ("a", "stay"): "a"}

    def test_transitionsAndHooks(self):
        """An event in the table leaves the old state, then enters the new one; an event
        not in the table, or one back to the same state, calls no hook."""
        owner = Owner()
        machine = StateMachine(owner, "a", self.TABLE)
        self.assertFalse(machine.fire("back"))
        self.assertTrue(machine.fire("stay"))
        self.assertEqual((machine.state, owner.calls), ("a", []))
        self.assertTrue(machine.fire("go"))
        self.assertEqual((machine.state, owner.calls), ("b-c", ["leaveA", "enterBC"]))
        self.assertEqual(machine.history, [("a", "go", "b-c")])

    def test_guard(self):
        """A guard that says no keeps the state, and no hook runs."""
        owner = Owner()
        allowed = [False]
        machine = StateMachine(owner, "a", self.TABLE, guards={"go": lambda: allowed[0]})
        self.assertFalse(machine.fire("go"))
        self.assertEqual((machine.state, owner.calls), ("a", []))
        allowed[0] = True
        self.assertTrue(machine.fire("go"))

    def test_hookNames(self):
        self.assertEqual(hook_name("enter", "handing-back"), "enterHandingBack")


class TableTests(unittest.TestCase):
    def test_onlySilenceServes(self):
        """Only silence leads into active, and only the primary's word leads out."""
        into = {event for (state, event), target in TRANSITIONS.items() if target == ACTIVE}
        out = {event for (state, event) in TRANSITIONS if state == ACTIVE}
        self.assertEqual((into, out), ({"silent"}, {"heard"}))

    def test_stoppedNeverServes(self):
        """A stopped failover (another version) leaves only when the primary pairs it again,
        or refuses it for another reason; never by silence."""
        self.assertEqual(
            {event for (state, event) in TRANSITIONS if state == STOPPED}, {"paired", "refused"}
        )

    def test_everyStateReachable(self):
        """Every state can be reached from standby, and standby from every state."""
        states = states_of(TRANSITIONS)
        self.assertEqual(states, {STANDBY, ACTIVE, MERGING, HANDING_BACK, REFUSED, STOPPED})

        def reachable(start: str) -> set[str]:
            seen, todo = {start}, [start]
            while todo:
                state = todo.pop()
                for (source, _), target in TRANSITIONS.items():
                    if source == state and target not in seen:
                        seen.add(target)
                        todo.append(target)
            return seen

        self.assertEqual(reachable(STANDBY), states)
        for state in states:
            self.assertIn(STANDBY, reachable(state), state)


class TransitionTests(PairTestCase):
    """Each transition of the failover, on the Clock, with a real primary."""

    def setUp(self) -> None:
        super().setUp()
        self.ok(self.primary.addLicenses(licenseFile({"seats": 2})))
        self.beat()
        self.assertMirrors()

    def history(self) -> list[tuple[str, str, str]]:
        return self.failover.machine.history

    def test_standbySilentActive(self):
        """standby --silent--> active: the primary says nothing for the takeover time."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.history(), [(STANDBY, "silent", ACTIVE)])
        self.assertEqual(self.failover.state, "active")

    def test_silenceRefusedWithoutSync(self):
        """A failover that never synced stays in standby when its primary goes silent, and
        says why."""
        self.failover.lastSync = None
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.history(), [])
        self.assertEqual(self.failover.machine.state, STANDBY)
        self.assertIn("never completed a sync", self.failover.problem)

    def test_activeMergingHandingBackStandby(self):
        """active --heard--> merging --merged--> handing-back --restored--> standby: while
        the primary takes the leases their clients are still answered here, and no new
        seat is granted; then, while the pool of the takeover is written back, the
        failover serves nothing; then it stands by."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        m9 = hello(self.failover, "m9")
        lease = self.ok(self.failover.checkout(m9, {}))["lease"]
        merges: list[Any] = []
        merge = self.failover._merge

        async def heldMerge(link: Any) -> None:
            gate: defer.Deferred = defer.Deferred()
            merges.append(gate)
            await gate
            await merge(link)

        self.patch(self.failover, "_merge", heldMerge)
        store = self.failoverStore
        written: list[Any] = []

        def heldReplaceAll(snapshot: Any) -> defer.Deferred:
            d: defer.Deferred = defer.Deferred()
            d.addCallback(lambda ignored: FakeStore.replaceAll(store, snapshot))
            written.append(d)
            return d

        self.patch(store, "replaceAll", heldReplaceAll)
        self.revivePrimary()
        self.beat()
        self.assertEqual(self.failover.machine.state, MERGING)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.heartbeat(m9, {"lease": lease}))
        self.refused(self.failover.checkout(hello(self.failover, "m8"), {}), "standby")
        (gate,) = merges
        gate.callback(None)
        self.beat()
        self.assertEqual(self.failover.machine.state, HANDING_BACK)
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.failover.pool.clientByMachine("m9"), "the pool is back at once")
        self.assertIsNotNone(self.primary.pool.lease(lease), "the primary holds the lease")
        (d,) = written
        d.callback(None)
        self.assertEqual(
            self.history(),
            [
                (STANDBY, "silent", ACTIVE),
                (ACTIVE, "heard", MERGING),
                (MERGING, "merged", HANDING_BACK),
                (HANDING_BACK, "restored", STANDBY),
            ],
        )

    def test_mergingSilentActive(self):
        """merging --silent--> active: a primary that answered once and died again before it
        took the leases does not end the takeover."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.endpoint.revive(Factory.forProtocol(AnswerOnceAndDie))
        self.advance(HEARTBEAT * 2)
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(
            self.history(),
            [(STANDBY, "silent", ACTIVE), (ACTIVE, "heard", MERGING), (MERGING, "silent", ACTIVE)],
        )

    def test_standbyRefusedPairedStandby(self):
        """standby --refused--> refused --paired--> standby: a wrong secret, then the right one."""
        self.failover.peerSecret = "wrong"
        self.killPrimary()
        self.revivePrimary()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.machine.state, REFUSED)
        self.assertEqual(self.failover.linkState, "refused")
        self.failover.peerSecret = self.primary.peerSecret
        self.advance(80)
        self.assertEqual(self.failover.machine.state, STANDBY)
        self.assertEqual(
            self.history(), [(STANDBY, "refused", REFUSED), (REFUSED, "paired", STANDBY)]
        )

    def test_refusedSilentActive(self):
        """refused --silent--> active: a synced failover whose primary refused it and then
        died takes over."""
        self.failover.peerSecret = "wrong"
        self.killPrimary()
        self.revivePrimary()
        self.advance(HEARTBEAT * 3)
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.history()[-1], (REFUSED, "silent", ACTIVE))

    def test_standbyMismatchStoppedPairedStandby(self):
        """standby --mismatch--> stopped (never active while the primary is silent)
        --paired--> standby once the versions match again."""
        self.patch(primary_module, "__version__", "1.1.0")
        self.killPrimary()
        self.revivePrimary()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.machine.state, STOPPED)
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.machine.state, STOPPED, "no takeover")
        self.patch(failover_module, "__version__", "1.1.0")
        self.patch(primary_module, "__version__", "1.1.0")
        self.revivePrimary()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(
            self.history(), [(STANDBY, "mismatch", STOPPED), (STOPPED, "paired", STANDBY)]
        )

    def test_mergingRefused(self):
        """merging --refused--> refused: the primary that answered again refuses the link
        before it took the leases (here: a wrong secret); the failover cannot serve beside
        a live primary, so it hands back without them and its pool is the takeover's."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        hello(self.failover, "m9")
        self.failover.peerSecret = "wrong"
        self.revivePrimary()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.machine.state, REFUSED)
        self.assertIn((ACTIVE, "heard", MERGING), self.history())
        self.assertIn((MERGING, "refused", REFUSED), self.history())
        self.assertEqual(self.failover.state, "standby")
        self.assertIsNone(self.failover.pool.clientByMachine("m9"))
