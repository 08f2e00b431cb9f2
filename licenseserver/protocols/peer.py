"""The failover's side of the peer link: a client of the primary's licensing port.

``PeerClientProtocol`` is a ``LineClient`` (``protocols/lineclient.py``):
each answer comes back as a ``Reply``, the answer to ``SYNC`` with the record
lines its header announced. Every line it receives tells the role that the
primary is alive, whatever the line says; a line it cannot read drops the
link with a warning. ``peerService`` keeps the link up with a
``ClientService`` that retries quickly (at most one heartbeat apart), so the
failover notices a returning primary within a heartbeat. It retries quietly:
the role, told of each failed attempt, logs a change of state once, not a
line per retry.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from licenseserver.protocols import lineclient
from licenseserver.protocols.lineclient import Reply

__all__ = ["NUMBERS", "PeerClientFactory", "PeerClientProtocol", "Reply", "peerService"]


NUMBERS = ("lines", "revision", "time")
"""The arguments of the primary's answers that the failover reads as numbers.

An answer where one of them is not a whole number of at most ``wire.MAX_DIGITS``
digits is no answer: the failover drops the link (and connects again), as for
any line it cannot read."""


class PeerClientProtocol(lineclient.LineClient):
    """The failover's connection to the primary."""

    MAX_LENGTH = 1 << 24
    numbers = NUMBERS
    announces = "lines"
    log = Logger()

    heardAny = False
    """Whether the primary has sent a single line on this connection."""

    def connectionMade(self) -> None:
        self.factory.role.linkMade(self)

    def lineReceived(self, line: bytes) -> None:
        self.heardAny = True
        self.factory.role.heard()
        super().lineReceived(line)

    def errorFor(self, problem: lineclient.LineClientError) -> Exception:
        """Warn of a line that drops the link; waiting requests fail with ``ConnectionLost``."""
        if isinstance(problem, lineclient.BadNumber):
            self.log.warn(
                "The primary sent {name}= that is no number: {line!r}",
                name=problem.name,
                line=problem.line[:80],
            )
        elif isinstance(problem, lineclient.JunkAnswer):
            self.log.warn(
                "The primary sent a line that is no answer: {line!r}", line=problem.line[:80]
            )
        elif isinstance(problem, lineclient.UnaskedAnswer):
            self.log.warn(
                "The primary answered nothing that was asked: {line!r}", line=problem.line[:80]
            )
        elif isinstance(problem, lineclient.OverlongLine):
            self.log.warn("The primary sent a line longer than {n} bytes", n=problem.limit)
        return error.ConnectionLost("the link to the primary closed")

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.factory.role.linkLost(self, reason)


class PeerClientFactory(Factory):
    """Builds the failover's link protocol for ``role``."""

    protocol = PeerClientProtocol
    noisy = False

    def __init__(self, role: Any):
        self.role = role


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """An endpoint that tells ``role.connectFailed`` of each connection attempt that fails."""

    def __init__(self, endpoint: Any, role: Any):
        self.endpoint = endpoint
        self.role = role

    def connect(self, factory: Any) -> defer.Deferred:
        d = self.endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Any) -> Any:
        self.role.connectFailed(failure)
        return failure


class QuietClientService(ClientService):
    """A ClientService without its log line for every retry ("Scheduling retry ...").

    During an outage of the primary that line came once a heartbeat; the
    role logs when the primary becomes unreachable and when it answers again.
    """

    _log = Logger(observer=lambda event: None)


def peerService(endpoint: Any, role: Any, clock: Any, heartbeat: float) -> ClientService:
    """A ClientService that keeps the link to the primary, retrying at most a heartbeat apart.

    A primary that refused the link (``role.refused()``) is asked again once a
    heartbeat, not at once: it is alive, and it said why. Not more seldom
    either: only a primary heard within the takeover time keeps the failover
    from taking over. Failed attempts are told to ``role.connectFailed``.
    """
    backoff = backoffPolicy(
        initialDelay=min(0.1, heartbeat), factor=2.0, maxDelay=heartbeat, jitter=lambda: 0.0
    )

    def policy(attempt: int) -> float:
        return heartbeat if role.refused() else backoff(attempt)

    return QuietClientService(
        ReportingEndpoint(endpoint, role), PeerClientFactory(role), retryPolicy=policy, clock=clock
    )
