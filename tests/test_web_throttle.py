"""Tests for the login throttle (licenseserver.web.throttle) and the session store."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from licenseserver.web.sessions import SessionStore
from licenseserver.web.throttle import LoginThrottle, Throttled


def answer(ok: bool):
    async def verify() -> bool:
        return ok

    return verify


class ThrottleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.reports: list[tuple[str, int]] = []
        self.throttle = LoginThrottle(
            self.clock,
            base=1.0,
            cap=30.0,
            onFailures=lambda key, failures: self.reports.append((key, failures)),
        )

    def check(self, ok: bool, address: str = "10.0.0.1") -> defer.Deferred:
        return defer.ensureDeferred(self.throttle.check(address, answer(ok)))

    def refusedFor(self, address: str = "10.0.0.1") -> int:
        """The Retry-After of a check that must be refused at once."""
        return self.failureResultOf(self.check(True, address), Throttled).value.retryAfter

    def test_firstCheckAtOnce(self):
        """A check from a fresh address runs at once."""
        self.assertFalse(self.successResultOf(self.check(False)))

    def test_waitsDouble(self):
        """Each wrong password doubles the time the address must wait, up to the cap; a
        check that comes early is refused at once, and says how long is left."""
        self.successResultOf(self.check(False))
        waits = []
        for _ in range(7):
            wait = self.refusedFor()
            waits.append(wait)
            self.clock.advance(wait - 0.5)
            self.assertEqual(self.refusedFor(), 1, "half a second left is rounded up")
            self.clock.advance(0.5)
            self.assertFalse(self.successResultOf(self.check(False)))
        self.assertEqual(waits, [1, 2, 4, 8, 16, 30, 30])

    def test_neverHeld(self):
        """No check waits: each has its answer, or its refusal, at once."""
        self.successResultOf(self.check(False))
        for _ in range(20):
            self.failureResultOf(self.check(False), Throttled)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_oneCheckAtATime(self):
        """While a check of an address runs, another from it is refused at once."""
        running: defer.Deferred = defer.Deferred()

        async def slow() -> bool:
            return await running

        first = defer.ensureDeferred(self.throttle.check("10.0.0.1", slow))
        self.assertEqual(self.refusedFor(), 1)
        self.assertTrue(self.successResultOf(self.check(True, "10.0.0.2")))
        running.callback(False)
        self.assertFalse(self.successResultOf(first))

    def test_rightPasswordClears(self):
        """A right password ends the address's waits."""
        self.successResultOf(self.check(False))
        self.clock.advance(1)
        self.assertTrue(self.successResultOf(self.check(True)))
        self.assertEqual(self.throttle.waitFor("10.0.0.1"), 0.0)
        self.assertFalse(self.successResultOf(self.check(False)))
        self.assertEqual(self.throttle.waitFor("10.0.0.1"), 1.0)

    def test_addressesApart(self):
        """One address's wrong passwords do not hold up another address's right one."""
        self.successResultOf(self.check(False))
        self.failureResultOf(self.check(False), Throttled)
        self.assertTrue(self.successResultOf(self.check(True, "10.0.0.2")))

    def test_forgets(self):
        """Long after the last wrong password an address starts afresh."""
        self.successResultOf(self.check(False))
        self.clock.advance(1)
        self.successResultOf(self.check(False))
        self.clock.advance(901)
        self.successResultOf(self.check(False))
        self.assertEqual(self.throttle.waitFor("10.0.0.1"), 1.0)

    def test_reportsRepeatedFailures(self):
        """Wrong passwords in a row are reported at 5, 50, 500...: not once per guess."""
        for _ in range(60):
            self.clock.advance(30)
            self.assertFalse(self.successResultOf(self.check(False)))
        self.assertEqual(self.reports, [("10.0.0.1", 5), ("10.0.0.1", 50)])
        self.assertEqual(self.throttle.failures("10.0.0.1"), 60)

    def test_failingCheckLeavesNothing(self):
        """A check that raises (the hash could not be read) is no wrong password."""

        async def broken() -> bool:
            raise OSError("no hash")

        self.failureResultOf(defer.ensureDeferred(self.throttle.check("10.0.0.1", broken)))
        self.assertEqual(self.throttle.failures("10.0.0.1"), 0)
        self.assertEqual(self.throttle._records, {})

    def test_boundedMemory(self):
        """Only maxKeys addresses are remembered."""
        throttle = LoginThrottle(self.clock, maxKeys=50)
        for n in range(200):
            address = f"10.1.{n // 256}.{n % 256}"
            self.successResultOf(defer.ensureDeferred(throttle.check(address, answer(False))))
        self.assertLessEqual(len(throttle._records), 50)


class SessionStoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sessions = SessionStore(self.clock, idle=100, lifetime=1000, maximum=3)

    def test_randomIdsAndTokens(self):
        """Each session has its own long random id and CSRF token."""
        a, b = self.sessions.start(), self.sessions.start()
        self.assertNotEqual(a.id, b.id)
        self.assertNotEqual(a.csrf, b.csrf)
        self.assertGreaterEqual(len(a.id), 40)
        self.assertNotEqual(a.id, a.csrf)

    def test_idle(self):
        """A session ends after ``idle`` seconds without use; use restarts the time."""
        s = self.sessions.start()
        self.clock.advance(90)
        self.assertIs(self.sessions.get(s.id), s)
        self.clock.advance(90)
        self.assertIs(self.sessions.get(s.id), s)
        self.clock.advance(90)
        self.assertIs(self.sessions.get(s.id, touch=False), s)
        self.clock.advance(10)
        self.assertIsNone(self.sessions.get(s.id))

    def test_lifetime(self):
        """A session in constant use still ends ``lifetime`` seconds after it began."""
        s = self.sessions.start()
        for _ in range(19):
            self.clock.advance(50)
            self.assertIs(self.sessions.get(s.id), s)
        self.clock.advance(50)
        self.assertIsNone(self.sessions.get(s.id))

    def test_end(self):
        """An ended session is gone; endAllBut keeps only one."""
        a, b, c = (self.sessions.start() for _ in range(3))
        self.sessions.end(a.id)
        self.assertIsNone(self.sessions.get(a.id))
        self.sessions.endAllBut(c)
        self.assertIsNone(self.sessions.get(b.id))
        self.assertIs(self.sessions.get(c.id), c)

    def test_maximum(self):
        """Beyond ``maximum`` open sessions the oldest is dropped."""
        first = self.sessions.start()
        self.clock.advance(1)
        rest = [self.sessions.start() for _ in range(3)]
        self.assertIsNone(self.sessions.get(first.id))
        self.assertEqual(len(self.sessions), 3)
        self.assertIs(self.sessions.get(rest[-1].id), rest[-1])

    def test_csrfMatches(self):
        """The CSRF check takes the token as text or bytes and refuses anything else."""
        s = self.sessions.start()
        self.assertTrue(s.csrfMatches(s.csrf))
        self.assertTrue(s.csrfMatches(s.csrf.encode()))
        for wrong in (None, "", s.csrf[:-1], s.csrf + "x", s.id):
            self.assertFalse(s.csrfMatches(wrong))

    def test_notices(self):
        """Notices wait in the session until the next page takes them."""
        s = self.sessions.start()
        s.notify("ok", "done")
        self.assertEqual(s.takeNotices(), [("ok", "done")])
        self.assertEqual(s.takeNotices(), [])
