"""Load shedding on the licensing port: connection caps, idle sessions, request rates.

A server that says no early stays up for everyone else: past the caps a
new connection gets ``ERR 429 too-many-connections`` and is closed, a
session that sends no line for ``idle_timeout`` seconds is closed, and a
session that asks faster than its rate gets ``ERR 429 rate-limited`` for
the requests over it. And no crowd of sessions holds the reactor for long:
one turn of it serves at most ``LINES_PER_TURN`` lines (``TurnBudget``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LINES_PER_TURN = 1000
"""Lines the licensing port serves in one turn of the reactor, a few tenths of a second
of work on a slow machine; a session with more lines waits for a later turn."""


@dataclass(frozen=True)
class Limits:
    """The load-shedding settings; 0 turns a limit off (the defaults are tap's options)."""

    max_connections: int = 0
    max_per_address: int = 0
    idle_timeout: float = 0.0
    rate: float = 0.0
    """Requests per second a session may make on average."""
    burst: int = 1
    """Requests a session may make at once before its rate applies."""


class TokenBucket:
    """Allows ``rate`` requests a second on average and ``burst`` at once."""

    def __init__(self, clock: Any, rate: float, burst: int):
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = clock.seconds()

    def take(self) -> bool:
        """Use one request's worth; False when the session is over its rate."""
        if self.rate <= 0:
            return True
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class TurnBudget:
    """Counts the lines served, and keeps the sessions that wait for a later turn of the
    reactor, in the order they ran out.

    Without a budget, a thousand sessions that each pipeline 32 requests make one
    turn of several seconds: every line read is served before the reactor polls
    again, and meanwhile no other connection is heard. The failover's heartbeat
    is one of them, and a primary that does not answer it for the takeover time is
    taken for gone. With it, a session that finds the lines spent after serving
    one pauses and waits for the next turn, which starts the count again: a busy
    port serves about ``lines`` lines (and one more per session read meanwhile)
    before the reactor polls again. The count starts again only when a session
    waits, so a quiet port costs no timer: one session in ``lines`` waits a turn.
    """

    def __init__(self, clock: Any, lines: int = LINES_PER_TURN):
        self.clock = clock
        self.lines = lines
        self.spent = 0
        self.waiting: deque[Callable[[], None]] = deque()
        self._next: Any = None

    def spend(self) -> bool:
        """Count a line served; whether another may be served before the next turn."""
        self.spent += 1
        return self.spent < self.lines

    def wait(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` in a later turn, after those that wait already."""
        self.waiting.append(resume)
        if self._next is None:
            self._next = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        """A new turn: resume the waiting sessions while its lines last."""
        self._next = None
        self.spent = 0
        while self.waiting and self.spent < self.lines:
            self.waiting.popleft()()
        if self.waiting and self._next is None:
            self._next = self.clock.callLater(0, self._turn)


class ConnectionCounter:
    """Counts open connections in total and per address, against the caps."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.total = 0
        self.byAddress: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or say why it is refused."""
        limits = self.limits
        if limits.max_connections and self.total >= limits.max_connections:
            return f"the server has {limits.max_connections} connections already"
        here = self.byAddress.get(address, 0)
        if limits.max_per_address and here >= limits.max_per_address:
            return f"{address} has {limits.max_per_address} connections already"
        self.total += 1
        self.byAddress[address] = here + 1
        return None

    def release(self, address: str) -> None:
        """Forget a connection that ``admit`` counted."""
        self.total -= 1
        left = self.byAddress[address] - 1
        if left:
            self.byAddress[address] = left
        else:
            del self.byAddress[address]
