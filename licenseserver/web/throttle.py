"""Slowing down password guesses: each wrong password doubles a key's wait, answered at once.

``LoginThrottle.check(key, verify)`` runs ``verify`` (an async password
check) for a key: a client address, or a browser session. After a wrong
password the key may not check again for ``base`` seconds, after the next
one twice that, and so on up to ``cap``; a right password clears the key's
record. A check that comes too early, or while another check of the same
key still runs, is refused at once with ``Throttled``, which says when to
come back (the HTTP ``429`` and ``Retry-After``): the penalty is never a
connection held open, so a flood of guesses holds no connections, costs at
most one password hash at a time per key, and does not delay anyone else.

``onFailures(key, failures)`` is called when a key's wrong passwords in a row
reach ``reportAt``, and again at each multiple of ten times the last report
(5, 50, 500...), so that the admin hears of a guessing run without one
message per guess. The clock is injected.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


class Throttled(Exception):
    """A password check refused without running: too early, or one already runs."""

    def __init__(self, retryAfter: float):
        self.retryAfter = max(1, math.ceil(retryAfter))
        super().__init__(f"too many wrong passwords: try again in {self.retryAfter} s")


@dataclass
class _Record:
    failures: int = 0
    notBefore: float = 0.0
    lastFailure: float = 0.0
    checking: bool = False
    reported: int = 0


class LoginThrottle:
    """Per-key waits between password checks, on ``clock``.

    ``forgetAfter`` seconds after its last wrong password a key starts
    afresh; at most ``maxKeys`` keys are remembered (the quietest are
    dropped first).
    """

    def __init__(
        self,
        clock: Any,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        forgetAfter: float = 900.0,
        maxKeys: int = 10000,
        reportAt: int = 5,
        onFailures: Callable[[str, int], None] | None = None,
    ):
        self.clock = clock
        self.base = base
        self.cap = cap
        self.forgetAfter = forgetAfter
        self.maxKeys = maxKeys
        self.reportAt = reportAt
        self.onFailures = onFailures
        self._records: dict[str, _Record] = {}

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` wrong passwords in a row."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** min(failures - 1, 32))

    def waitFor(self, key: str) -> float:
        """Seconds until a check of ``key`` would run (0 when at once)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.notBefore - self.clock.seconds())

    def failures(self, key: str) -> int:
        """Wrong passwords in a row from ``key``."""
        record = self._records.get(key)
        return record.failures if record is not None else 0

    async def check(self, key: str, verify: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``verify`` for ``key`` unless it must wait; return its answer.

        Raises ``Throttled``, without running ``verify``, while the key's wait
        lasts or while another check of the key runs.
        """
        record = self._record(key)
        if record.checking:
            raise Throttled(self.base)
        wait = self.waitFor(key)
        if wait > 0:
            raise Throttled(wait)
        record.checking = True
        try:
            ok = await verify()
        except BaseException:
            if not record.failures:
                self._records.pop(key, None)
            raise
        finally:
            record.checking = False
        now = self.clock.seconds()
        if ok:
            self._records.pop(key, None)
            return True
        record.failures += 1
        record.lastFailure = now
        record.notBefore = now + self.delay(record.failures)
        if record.failures >= max(self.reportAt, record.reported * 10):
            record.reported = record.failures
            if self.onFailures is not None:
                self.onFailures(key, record.failures)
        return False

    def _record(self, key: str) -> _Record:
        record = self._records.get(key)
        now = self.clock.seconds()
        if record is not None and not record.checking:
            if record.failures and now - record.lastFailure > self.forgetAfter:
                record = self._records[key] = _Record()
        if record is None:
            if len(self._records) >= self.maxKeys:
                self._forgetQuietest()
            record = self._records[key] = _Record()
        return record

    def _forgetQuietest(self) -> None:
        idle = [(r.lastFailure, k) for k, r in self._records.items() if not r.checking]
        idle.sort()
        for _, key in idle[: max(1, len(idle) // 10)]:
            del self._records[key]
