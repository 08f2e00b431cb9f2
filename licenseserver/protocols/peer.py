"""The failover's side of the peer link: a client of the primary's licensing port.

``PeerClientProtocol`` sends one request at a time and hands each answer
back as a ``Reply``; the answer to ``SYNC`` carries the record lines its
header announced. Every line it receives tells the role that the primary is
alive, whatever the line says. ``peerService`` keeps the link up with a
``ClientService`` that retries quickly (at most one heartbeat apart), so the
failover notices a returning primary within a heartbeat. It retries quietly:
the role, told of each failed attempt, logs a change of state once, not a
line per retry.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from licenseserver.protocols import wire


@dataclass(frozen=True)
class Reply:
    """An answer from the primary, with the record lines that followed it."""

    response: wire.Response
    lines: tuple[bytes, ...] = ()

    @property
    def ok(self) -> bool:
        return self.response.ok

    @property
    def args(self) -> dict[str, str]:
        return self.response.args

    def integer(self, name: str, default: int = 0) -> int:
        """The number argument ``name`` (``NUMBERS``: checked as the answer came), or
        ``default`` when the answer has none."""
        number = wire.parse_integer(self.args.get(name, ""))
        return default if number is None else number


NUMBERS = ("lines", "revision", "time")
"""The arguments of the primary's answers that the failover reads as numbers.

An answer where one of them is not a whole number of at most ``wire.MAX_DIGITS``
digits is no answer: the failover drops the link (and connects again), as for
any line it cannot read."""


class PeerClientProtocol(LineReceiver):
    """The failover's connection to the primary."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 24
    log = Logger()

    heardAny = False
    """Whether the primary has sent a single line on this connection."""

    def connectionMade(self) -> None:
        self._pending: deque[defer.Deferred] = deque()
        self._collecting: tuple[wire.Response, list[bytes], int, defer.Deferred] | None = None
        self.factory.role.linkMade(self)

    def request(self, verb: str, args: dict[str, Any] | None = None) -> defer.Deferred:
        """Send a request; fire with its ``Reply``, or fail if the link goes first."""
        d: defer.Deferred = defer.Deferred()
        self._pending.append(d)
        self.transport.write(wire.format_request(verb, args))
        return d

    def lineReceived(self, line: bytes) -> None:
        self.heardAny = True
        self.factory.role.heard()
        if self._collecting is not None:
            response, lines, count, d = self._collecting
            lines.append(line)
            if len(lines) == count:
                self._collecting = None
                d.callback(Reply(response, tuple(lines)))
            return
        try:
            response = wire.parse_response(line)
        except wire.ProtocolError:
            self.log.warn("The primary sent a line that is no answer: {line!r}", line=line[:80])
            self.transport.loseConnection()
            return
        for name in NUMBERS:
            if name in response.args and wire.parse_integer(response.args[name]) is None:
                self.log.warn(
                    "The primary sent {name}= that is no number: {line!r}",
                    name=name,
                    line=line[:80],
                )
                self.transport.loseConnection()
                return
        if not self._pending:
            self.log.warn("The primary answered nothing that was asked: {line!r}", line=line[:80])
            self.transport.loseConnection()
            return
        d = self._pending.popleft()
        count = Reply(response).integer("lines") if response.ok else 0
        if count > 0:
            self._collecting = (response, [], count, d)
        else:
            d.callback(Reply(response))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn("The primary sent a line longer than {n} bytes", n=self.MAX_LENGTH)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        pending = list(self._pending)
        if self._collecting is not None:
            pending.insert(0, self._collecting[3])
        self._pending.clear()
        self._collecting = None
        for d in pending:
            d.errback(error.ConnectionLost("the link to the primary closed"))
        self.factory.role.linkLost(self, reason)

    def close(self) -> None:
        self.transport.loseConnection()


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
