"""The licensing port: a line protocol for clients and for the failover.

Each connection is a ``LicensingProtocol`` with its own ``Session``. Lines
are parsed by ``wire`` and handed to the role one at a time: while a request
waits for the store, the protocol holds the lines that follow, so pipelined
requests are answered exactly once each, in order. Only when more than a
line's worth piles up does it stop reading from the socket, so a client that
floods cannot grow the server's buffers, while the usual client costs no
system call to pause and resume.

A handler answers with a dict (the arguments of an ``OK`` line) or with
ready bytes (the multi-line answer to the failover's ``SYNC``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from licenseserver.listening import addressText
from licenseserver.metrics import Metrics
from licenseserver.protocols import wire
from licenseserver.protocols.shedding import ConnectionCounter, Limits, TokenBucket
from licenseserver.session import Session

REFUSED_GRACE = 10.0
"""Seconds a connection over the caps may stay open without asking anything."""


class LicensingProtocol(LineReceiver):
    """One session on the licensing port."""

    delimiter = b"\n"
    MAX_LENGTH = wire.MAX_LINE - len(delimiter)
    log = Logger()

    admitted = False
    refusal: str | None = None
    """Why a connection over the caps is refused; told in answer to its first request."""
    _refusedTimeout: Any = None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.host = addressText(peer)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.session = Session(peer=f"{host}:{getattr(peer, 'port', '?')}")
        self.connected = True
        factory = self.factory
        refusal = factory.connections.admit(self.host)
        if refusal is not None:
            # The server sends nothing unasked: the refusal answers the first
            # request, and a connection that asks nothing is closed soon.
            self.refusal = refusal
            self._refusedTimeout = factory.clock.callLater(
                REFUSED_GRACE, self.transport.abortConnection
            )
            return
        self.admitted = True
        self.lastHeard = factory.clock.seconds()
        self.bucket = TokenBucket(factory.clock, factory.limits.rate, factory.limits.burst)
        factory.sessions.add(self)
        factory.metrics.sessions.inc()

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False
        if self._refusedTimeout is not None and self._refusedTimeout.active():
            self._refusedTimeout.cancel()
        if not self.admitted:
            return
        self.admitted = False
        factory = self.factory
        factory.connections.release(self.host)
        factory.sessions.discard(self)
        factory.metrics.sessions.dec()
        factory.sessionClosed(self.session)

    _socketPaused = False

    def dataReceived(self, data: bytes) -> None:
        if self.admitted:
            self.lastHeard = self.factory.clock.seconds()
            super().dataReceived(data)
            if self.paused and not self._socketPaused and len(self._buffer) > wire.MAX_LINE:
                self._socketPaused = True
                self.transport.pauseProducing()
        elif self.refusal is not None and b"\n" in data:
            self.log.warn("Refused a connection: {why}", why=self.refusal)
            self._send(wire.ProtocolError("too-many-connections", self.refusal).toLine())
            self.refusal = None
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if not self.bucket.take():
            self._send(wire.ProtocolError("rate-limited", "slow down").toLine())
            return
        try:
            request = wire.parse_request(line)
        except wire.ProtocolError as e:
            self._send(e.toLine())
            return
        if request is None:
            return
        d = defer.ensureDeferred(self.factory.dispatch(self.session, request))
        d.addCallback(_encode, request.verb == "QUIT")
        d.addErrback(self._failed, request)
        if d.called:
            d.addCallback(self._answer)
        else:
            self.paused = True  # LineReceiver delivers no line until _resume
            d.addCallback(self._answer)
            d.addBoth(self._resume)

    def _failed(self, failure: Any, request: wire.Request) -> tuple[bytes, bool]:
        if failure.check(wire.ProtocolError):
            return failure.value.toLine(), failure.value.closes
        self.log.failure(
            "Unexpected error serving {verb} for {peer}",
            failure,
            verb=request.verb,
            peer=self.session.peer,
        )
        line = wire.format_error(500, "internal-error", message="the server could not serve this")
        return line, False

    def _answer(self, answer: tuple[bytes, bool]) -> None:
        data, close = answer
        self._send(data)
        if close:
            self.transport.loseConnection()

    def _resume(self, result: Any) -> None:
        if self.connected and not self.transport.disconnecting:
            self.paused = False
            if self._socketPaused:
                self._socketPaused = False
                self.transport.resumeProducing()
            LineReceiver.dataReceived(self, b"")

    def _send(self, data: bytes) -> None:
        if self.connected:
            self.transport.write(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._send(
            wire.format_error(
                413, "line-too-long", message=f"a line may have at most {wire.MAX_LINE} bytes"
            )
        )
        self.transport.loseConnection()


def _encode(result: dict[str, Any] | bytes, close: bool) -> tuple[bytes, bool]:
    """A handler's answer as bytes, and whether the connection closes after it."""
    if isinstance(result, bytes):
        return result, close
    return wire.format_ok(result), close


_CLIENT_HANDLERS = {
    "HELLO": "hello",
    "CHECKOUT": "checkout",
    "HEARTBEAT": "heartbeat",
    "RELEASE": "release",
    "BORROW": "borrow",
}
"""The role method that serves each client verb."""


class LicensingFactory(Factory):
    """Builds sessions and routes their requests to the role.

    Handlers are looked up on each request, so a role switched while the
    server runs serves the next request. The peer verbs go to the handlers of
    ``role.peerHandlers()``; a role without them (a failover) refuses a peer
    as not authorized.
    """

    protocol = LicensingProtocol
    noisy = False

    def __init__(
        self,
        role: Any,
        metrics: Metrics | None = None,
        limits: Limits | None = None,
        clock: Any = None,
    ):
        self.role = role
        self.metrics = metrics or Metrics()
        self.limits = limits = limits or Limits()
        self.clock = clock if clock is not None else role.clock
        self.connections = ConnectionCounter(limits)
        self.sessions: set[LicensingProtocol] = set()
        self._sweeper: LoopingCall | None = None

    def startFactory(self) -> None:
        """Start closing idle sessions, checking a few times per idle timeout."""
        if self.limits.idle_timeout:
            self._sweeper = LoopingCall(self.closeIdle)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.limits.idle_timeout / 10, now=False)

    def stopFactory(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()

    def closeIdle(self) -> int:
        """Close the sessions that sent nothing for the idle timeout; return how many."""
        deadline = self.clock.seconds() - self.limits.idle_timeout
        idle = [p for p in self.sessions if p.lastHeard <= deadline]
        for protocol in idle:
            protocol.transport.loseConnection()
        return len(idle)

    def _handler(self, verb: str) -> Any:
        name = _CLIENT_HANDLERS.get(verb)
        if name is not None:
            return getattr(self.role, name)
        handler = self.role.peerHandlers().get(verb)
        if handler is None:
            raise wire.ProtocolError(
                "not-authorized", f"this server ({self.role.roleName}) takes no peer", closes=True
            )
        return handler

    async def dispatch(self, session: Session, request: wire.Request) -> dict[str, Any] | bytes:
        """Serve one request; return its answer or raise ``ProtocolError``."""
        verb = request.verb
        if verb in ("PING", "QUIT"):
            return {}
        if verb == "STATUS":
            return self.role.status()
        handler = self._handler(verb)
        if verb not in ("CHECKOUT", "BORROW"):
            return await handler(session, request.args)
        try:
            answer = await handler(session, request.args)
        except wire.ProtocolError as e:
            self.metrics.denials.labels(e.reason).inc()
            raise
        self.metrics.grants.labels(verb.lower()).inc()
        return answer

    def sessionClosed(self, session: Session) -> None:
        """Tell the role that a session has ended (it may be the failover's link)."""
        self.role.sessionClosed(session)
