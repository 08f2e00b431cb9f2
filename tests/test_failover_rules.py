"""Tests of FAILOVER.md rules that the failover tests leave open.

A standby failover refuses the admin changes of the tabs it hides (rule 5),
a refused pairing is told in the log on both sides, once rather than on
every retry (rules 3 and 12), and a primary that answers, even with a
refusal, is alive (rule 8).
"""

from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent

from licenseserver._version import __version__
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.shedding import Limits
from licenseserver.roles import primary as primary_module
from licenseserver.roles.base import AdminError
from tests.helpers import licenseFile, run
from tests.test_failover import HEARTBEAT, TAKEOVER, PairTestCase

STANDBY_MESSAGE = "standby failover: make this change on the primary ls1:35355"


class StandbyAdminTests(PairTestCase):
    """Rule 5: a failover in standby takes no License Pool changes; it does once active."""

    def setUp(self):
        super().setUp()
        self.active, self.inactive = self.ok(
            self.primary.addLicenses(licenseFile({"seats": 1}, {"seats": 2}))
        )
        self.ok(self.primary.setLicenseActive(self.inactive, False))
        self.beat()
        self.assertMirrors()
        self.assertEqual(self.failover.state, "standby")

    def assertStandbyRefuses(self, coroutine):
        """The change is refused with 409 and the primary's address; nothing is changed."""
        before = self.successResultOf(self.failoverStore.load())
        failure = self.failureResultOf(run(coroutine), AdminError)
        self.assertEqual(failure.value.status, 409)
        self.assertEqual(failure.value.message, STANDBY_MESSAGE)
        self.assertEqual(self.successResultOf(self.failoverStore.load()), before)
        self.assertMirrors()

    def test_acceptAgreement(self):
        """Accepting a license agreement on a standby failover is refused."""
        self.assertStandbyRefuses(self.failover.acceptAgreement(self.active))
        self.assertIsNone(self.failover.pool.get("agreement", self.active))

    def test_deactivate(self):
        """Deactivating a license on a standby failover is refused."""
        self.assertStandbyRefuses(self.failover.setLicenseActive(self.active, False))
        self.assertTrue(self.failover.pool.license(self.active).active)

    def test_activate(self):
        """Activating a license on a standby failover is refused."""
        self.assertStandbyRefuses(self.failover.setLicenseActive(self.inactive, True))
        self.assertFalse(self.failover.pool.license(self.inactive).active)

    def test_settings(self):
        """Changing licensing settings on a standby failover is refused."""
        self.assertStandbyRefuses(self.failover.updateSettings({"borrow_max_days": 7}))
        self.assertEqual(self.failover.setting("borrow_max_days"), 30)

    def test_activeTakesChanges(self):
        """Once the failover has taken over, the same changes are made."""
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.acceptAgreement(self.active))
        self.ok(self.failover.setLicenseActive(self.active, False))
        self.ok(self.failover.setLicenseActive(self.inactive, True))
        self.ok(self.failover.updateSettings({"borrow_max_days": 7}))
        self.assertIsNotNone(self.failover.pool.get("agreement", self.active))
        self.assertFalse(self.failover.pool.license(self.active).active)
        self.assertTrue(self.failover.pool.license(self.inactive).active)
        self.assertEqual(self.failover.setting("borrow_max_days"), 7)


class RefusalLogTests(PairTestCase):
    """Rules 3 and 12: a refused pairing is in both servers' logs, once per refusal."""

    def capture(self, role):
        """The texts ``role`` logs from now on."""
        events = []
        self.patch(role, "log", Logger(observer=events.append))
        return events

    def texts(self, events, containing):
        return [text for text in map(formatEvent, events) if containing in text]

    def upgradePrimary(self):
        """The primary comes back as version 1.1.0; the failover still runs the old one."""
        self.patch(primary_module, "__version__", "1.1.0")
        self.killPrimary()
        self.revivePrimary()

    def test_failoverLogsServiceStopped(self):
        """A failover refused for its version logs "Failover service stopped" with the
        upgrade it needs, once, however often it asks again."""
        logged = self.capture(self.failover)
        self.upgradePrimary()
        self.advance(HEARTBEAT * 6)
        self.assertEqual(self.failover.linkState, "version-mismatch")
        self.assertGreater(self.primary.refusedPeer()["count"], 1)
        self.assertEqual(
            self.texts(logged, "Failover service stopped"),
            ["Failover service stopped: upgrade this failover to version 1.1.0"],
        )

    def test_primaryLogsVersionRefusal(self):
        """The primary logs that it refused a failover of another version, once for many
        attempts."""
        self.upgradePrimary()
        logged = self.capture(self.primary)
        self.advance(HEARTBEAT * 6)
        self.assertGreater(self.primary.refusedPeer()["count"], 1)
        (line,) = self.texts(logged, "refused failover")
        self.assertIn("refused failover ls2 from ", line)
        self.assertIn(f"failover ls2 runs {__version__}", line)
        self.assertIn("upgrade the failover to 1.1.0", line)

    def test_primaryLogsWrongProof(self):
        """The primary logs that it refused a wrong pairing proof, once for many attempts."""
        self.stop(self.failover)
        self.advance(0.5)
        logged = self.capture(self.primary)
        self.failover = self.startFailover(secret="wrong", name="ls3")
        self.advance(HEARTBEAT * 6)
        self.assertEqual(self.failover.linkState, "refused")
        self.assertGreater(self.primary.refusedPeer()["count"], 1)
        (line,) = self.texts(logged, "refused failover")
        self.assertIn("refused failover ls3 from ", line)
        self.assertIn("wrong pairing proof", line)


class RefusingPrimaryTests(PairTestCase):
    """Rule 8: only silence counts. A primary that answers the failover with an ERR line
    (here load shedding's 429) is alive: the failover, synced and able to take over,
    stays in standby for as long as the primary goes on answering."""

    def setUp(self):
        super().setUp()
        self.ok(self.primary.addLicenses(licenseFile({"seats": 1})))
        self.beat()
        self.assertMirrors()

    def sheddingPrimary(self, **limits):
        """The same primary, back on a licensing port that sheds load as ``limits`` say."""
        factory = LicensingFactory(self.primary, limits=Limits(**limits))
        self.killPrimary()
        self.endpoint.revive(factory)
        return factory

    def assertStaysStandby(self):
        for _ in range(3):
            self.advance(TAKEOVER)
            self.assertEqual(self.failover.state, "standby")
        self.assertEqual(self.failover.takeovers, 0)

    def test_tooManyConnections(self):
        """A primary at its connection cap answers PEER with 429 too-many-connections and
        closes the link, every time: the failover stays in standby and says why."""
        factory = self.sheddingPrimary(max_connections=1)
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertStaysStandby()
        self.assertEqual(self.failover.linkState, "refused")
        self.assertIn("429 too-many-connections", self.failover.problem)

    def test_rateLimitedHeartbeats(self):
        """A paired link whose every BEAT is answered 429 rate-limited is a live primary:
        the failover stays in standby."""
        self.sheddingPrimary(rate=0.001, burst=3)  # PEER, AUTH and SYNC, then no more
        self.assertStaysStandby()
        self.assertEqual(self.failover.linkState, "paired")
        now = self.clock.seconds()
        self.assertLess(self.primary.peer.last_beat, now - TAKEOVER, "no BEAT was served")
        self.assertGreater(self.failover.lastHeard, now - HEARTBEAT * 2)
