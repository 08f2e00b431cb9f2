"""Slowing down password guesses: each wrong password doubles a client address's delay.

``LoginThrottle.check(address, verify)`` runs ``verify`` (an async password
check) for one client address at a time. After a wrong password the next
check from that address waits ``base`` seconds, after the next one twice
that, and so on up to ``cap``; a right password clears the address's record.
At most ``maxWaiting`` checks of one address wait (or run) at a time; past
that the throttle refuses at once with ``Throttled``, so a flood of guesses holds no
more than a handful of connections. The clock is injected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task


class Throttled(Exception):
    """Too many password checks from one address are waiting already."""

    def __init__(self, retryAfter: float):
        super().__init__(f"too many attempts: try again in {retryAfter:.0f} s")
        self.retryAfter = retryAfter


@dataclass
class _Record:
    failures: int = 0
    notBefore: float = 0.0
    lastFailure: float = 0.0
    waiting: int = 0
    lock: defer.DeferredLock = field(default_factory=defer.DeferredLock)


class LoginThrottle:
    """Per-address delays between password checks, on ``clock``.

    ``forgetAfter`` seconds after its last wrong password an address starts
    afresh; at most ``maxAddresses`` addresses are remembered (the quietest
    are dropped first).
    """

    def __init__(
        self,
        clock: Any,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        maxWaiting: int = 5,
        forgetAfter: float = 900.0,
        maxAddresses: int = 10000,
    ):
        self.clock = clock
        self.base = base
        self.cap = cap
        self.maxWaiting = maxWaiting
        self.forgetAfter = forgetAfter
        self.maxAddresses = maxAddresses
        self._records: dict[str, _Record] = {}

    def delay(self, failures: int) -> float:
        """The wait before the check that follows ``failures`` wrong passwords in a row."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** min(failures - 1, 32))

    def waitFor(self, address: str) -> float:
        """Seconds until a check from ``address`` would run (0 when at once)."""
        record = self._records.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.notBefore - self.clock.seconds())

    async def check(self, address: str, verify: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``verify`` for ``address`` once its delay has passed; return its answer.

        Raises ``Throttled`` when ``maxWaiting`` checks from the address wait already.
        """
        record = self._record(address)
        if record.waiting >= self.maxWaiting:
            raise Throttled(max(self.waitFor(address), self.base))
        record.waiting += 1
        try:
            await record.lock.acquire()
            try:
                wait = record.notBefore - self.clock.seconds()
                if wait > 0:
                    await task.deferLater(self.clock, wait, lambda: None)
                ok = await verify()
                now = self.clock.seconds()
                if ok:
                    record.failures = 0
                    record.notBefore = 0.0
                else:
                    record.failures += 1
                    record.lastFailure = now
                    record.notBefore = now + self.delay(record.failures)
                return ok
            finally:
                record.lock.release()
        finally:
            record.waiting -= 1
            if record.failures == 0 and record.waiting == 0:
                self._records.pop(address, None)

    def _record(self, address: str) -> _Record:
        record = self._records.get(address)
        now = self.clock.seconds()
        if record is not None and record.waiting == 0:
            if record.failures and now - record.lastFailure > self.forgetAfter:
                record.failures = 0
                record.notBefore = 0.0
        if record is None:
            if len(self._records) >= self.maxAddresses:
                self._forgetQuietest()
            record = self._records[address] = _Record()
        return record

    def _forgetQuietest(self) -> None:
        idle = [(r.lastFailure, a) for a, r in self._records.items() if r.waiting == 0]
        idle.sort()
        for _, address in idle[: max(1, len(idle) // 10)]:
            del self._records[address]
