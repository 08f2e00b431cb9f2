"""Tests of what a failover says about its link to the primary, and how often it asks.

A refused link (a wrong peer secret) and an unreachable primary are told in
words an admin can act on, in the status and the log, once per change of
reason rather than on every retry; the failover asks again at its heartbeat's
pace, and Twisted's own line per retry is not in the log.
"""

from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

from licenseserver.roles import primary as primary_module
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PENALTY_CAP
from licenseserver.testing import FakeStore
from licenseserver.web import views
from tests.helpers import makeRole
from tests.test_failover import HEARTBEAT, SECRET, TAKEOVER, PairTestCase

PROOF_REFUSED = (
    "the primary refused our pairing proof: check that both servers use the same peer secret file"
)


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """An endpoint in front of another that notes when each connection attempt is made."""

    def __init__(self, endpoint, clock):
        self.endpoint = endpoint
        self.clock = clock
        self.attempts = []

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        return self.endpoint.connect(factory)


class LinkTestCase(PairTestCase):
    """A paired primary and failover, and the log lines every part of the process makes."""

    def setUp(self):
        super().setUp()
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def lines(self, containing):
        """The log lines so far that contain ``containing``."""
        return [text for text in map(formatEvent, self.logged) if containing in text]

    def wrongSecretFailover(self, heartbeat=HEARTBEAT, name="ls3"):
        """Replace the failover with one of a wrong secret; return it and its endpoint."""
        self.stop(self.failover)
        self.advance(0.5)
        self.primary.peer = None
        counting = CountingEndpoint(self.endpoint, self.clock)
        role = makeRole(
            FakeStore(),
            self.clock,
            cls=FailoverRole,
            serverName=name,
            advertise=f"{name}:35355",
            primaryEndpoint=counting,
            primaryAddress="ls1:35355",
            heartbeat=heartbeat,
            takeoverAfter=TAKEOVER,
            peerSecret="wrong-" + SECRET,
        )
        self.addCleanup(self.stop, role)
        self.failover = role
        return role, counting


class WrongSecretTests(LinkTestCase):
    def test_problemInWords(self):
        """A wrong secret is shown as what to check, in the status (which the header
        shows), the API's peer and Messages, not as the bare protocol error."""
        role, _ = self.wrongSecretFailover()
        self.advance(3)
        self.assertEqual(role.linkState, "refused")
        self.assertEqual(role.problem, PROOF_REFUSED)
        self.assertEqual(views.status(role)["peer"]["problem"], PROOF_REFUSED)
        events = self.successResultOf(role.store.events(50))
        self.assertEqual([(e.kind, e.message) for e in events], [("refused", PROOF_REFUSED)])

    def test_loggedOncePerReason(self):
        """Over a hundred refused retries the log gets one line, and no line of Twisted's
        per retry; a new reason gets one line more, and so does the old one when it
        comes back. Nothing says the service stopped: it asks again."""
        role, counting = self.wrongSecretFailover()
        self.advance(120)
        self.assertGreater(len(counting.attempts), 100)
        self.assertEqual(len(self.lines("refused our pairing proof")), 1)
        (line,) = self.lines("refused our pairing proof")
        self.assertIn("Not paired with the primary ls1:35355", line)
        self.assertIn("asking again every 1 s", line)
        self.assertEqual(self.lines("Scheduling retry"), [])
        self.assertEqual(self.lines("service stopped"), [])

        upgraded = self.patch(primary_module, "__version__", "1.1.0")
        self.advance(10)
        self.assertEqual(role.linkState, "version-mismatch")
        self.assertEqual(
            self.lines("Failover service stopped"),
            ["Failover service stopped: upgrade this failover to version 1.1.0"],
        )
        upgraded.restore()
        self.advance(10)
        self.assertEqual(role.problem, PROOF_REFUSED)
        self.assertEqual(len(self.lines("refused our pairing proof")), 2)
        kinds = [e.kind for e in self.successResultOf(role.store.events(50))]
        self.assertEqual(kinds, ["refused", "version-mismatch", "refused"])

    def test_retriedAtHeartbeatPace(self):
        """A refused failover asks again once every --heartbeat seconds (here 2.5), not
        sooner: the primary is alive and said why."""
        role, counting = self.wrongSecretFailover(heartbeat=2.5)
        self.advance(30, step=0.05)
        self.assertEqual(role.linkState, "refused")
        attempts = counting.attempts
        gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
        self.assertGreaterEqual(len(gaps), 10)
        for gap in gaps:
            # 2.5 s from the refused link's close; the refusal takes a step or two to come.
            self.assertTrue(2.5 <= gap <= 2.65, gaps)

    def test_fixedSecretPairsAfterThePenalty(self):
        """Retries at the heartbeat's pace do not lengthen the primary's wait for wrong
        proofs: refused unchecked during it, they are not counted as wrong proofs. After
        ten minutes of them, a failover on the same host with the right secret pairs
        within the longest wait and a heartbeat."""
        role, counting = self.wrongSecretFailover()
        self.advance(600)
        self.assertGreater(len(counting.attempts), 500)
        # Checked: at 0, 1, 3, 7, 15, 31 and 63 s, then once every PENALTY_CAP seconds.
        failures, notBefore = next(iter(self.primary._penalties.values()))
        self.assertLessEqual(failures, 7 + 600 / PENALTY_CAP, "only the proofs checked count")
        self.assertLessEqual(notBefore - self.clock.seconds(), PENALTY_CAP)
        self.stop(self.failover)
        fixed = self.startFailover(name="ls3", store=FakeStore())
        started = self.clock.seconds()
        while fixed.linkState != "paired":
            self.advance(0.1)
            self.assertLessEqual(self.clock.seconds() - started, PENALTY_CAP + HEARTBEAT)
        self.assertIsNone(fixed.problem)


class OutageTests(LinkTestCase):
    def test_outageLoggedOnce(self):
        """While the primary is down the failover's log gets one line (unreachable), none
        per retry, and one more when the primary can be reached again."""
        self.killPrimary()
        self.advance(60)
        (down,) = self.lines("Cannot reach the primary")
        self.assertIn("ls1:35355", down)
        self.assertIn("trying again every 1 s", down)
        self.assertEqual(self.lines("Scheduling retry"), [])
        self.assertEqual(self.lines("can be reached again"), [])
        self.revivePrimary()
        self.advance(2)
        self.assertEqual(self.failover.linkState, "paired")
        (up,) = self.lines("can be reached again")
        self.assertIn("unreachable since 20", up)
        self.assertEqual(len(self.lines("Cannot reach the primary")), 1)

    def test_eachOutageLogged(self):
        """A second outage after the primary came back is logged again."""
        for _ in range(2):
            self.killPrimary()
            self.advance(10)
            self.revivePrimary()
            self.advance(2)
        self.assertEqual(len(self.lines("Cannot reach the primary")), 2)
        self.assertEqual(len(self.lines("can be reached again")), 2)

    def test_linkClosedLogged(self):
        """The paired link closing is logged once, not again for each retry."""
        self.endpoint.kill()
        self.advance(10)
        self.assertEqual(len(self.lines("The link to the primary ls1:35355 closed")), 1)
