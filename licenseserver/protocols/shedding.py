"""Load shedding on the licensing port: connection caps, idle sessions, request rates.

A server that says no early stays up for everyone else: past the caps a
new connection gets ``ERR 429 too-many-connections`` and is closed, a
session that sends no line for ``idle_timeout`` seconds is closed, and a
session that asks faster than its rate gets ``ERR 429 rate-limited`` for
the requests over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
