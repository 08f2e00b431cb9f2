"""The licensing port: a line protocol for clients and for the failover.

Each connection is a ``LicensingProtocol`` with its own ``Session``. Lines
are parsed by ``wire`` and handed to the role in order. Requests that leave
the session as it is (CHECKOUT, RELEASE, HEARTBEAT, BORROW, PING, STATUS, and
the failover's BEAT and SYNC) are served side by side: each is decided at once
against the in-memory pool, so a later one sees what an earlier one did, and
their writes share the store's transactions. Their answers leave in request
order, exactly one each. A request that changes the session (HELLO, QUIT, the
other peer verbs) waits until
everything before it is answered, and the lines behind it wait for its
answer.

At most ``MAX_IN_FLIGHT`` answers of a session are outstanding; the lines
behind them are held in the receive buffer, and once more than a line's worth
piles up the protocol stops reading from the socket, so a client that floods
cannot grow the server's buffers, while the usual client costs no system call
to pause and resume. And all sessions together serve about ``LINES_PER_TURN``
lines before the reactor polls again (``shedding.TurnBudget``): a session that
finds them spent serves the line in hand and waits for a later turn, so a crowd
that pipelines cannot keep the failover's heartbeat, or any other session,
unheard for long.

A handler answers with a dict (the arguments of an ``OK`` line) or with
ready bytes (the multi-line answer to the failover's ``SYNC``).
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from licenseserver.addresses import format_host_port
from licenseserver.listening import addressText
from licenseserver.metrics import Metrics
from licenseserver.protocols import wire
from licenseserver.protocols.shedding import ConnectionCounter, Limits, TokenBucket, TurnBudget
from licenseserver.session import Session

REFUSED_GRACE = 10.0
"""Seconds a connection over the caps may stay open without asking anything."""

MAX_IN_FLIGHT = 32
"""Most outstanding answers of one session; the lines behind them wait."""

SIDE_BY_SIDE = frozenset(
    {"CHECKOUT", "RELEASE", "HEARTBEAT", "BORROW", "PING", "STATUS", "BEAT", "SYNC"}
)
"""Verbs that leave the session as it is, and so may be served side by side: the
failover's BEAT among them, so that one sent while its SYNC is being read and encoded
is heard at once (a primary counts a link whose BEAT it has not heard for half the
takeover time as cut)."""

_EMPTY_LINES = frozenset({b"", b"\r"})
"""Lines the protocol ignores (an LF alone, or CR LF)."""


class LicensingProtocol(LineReceiver):
    """One session on the licensing port."""

    delimiter = b"\n"
    MAX_LENGTH = wire.MAX_LINE - len(delimiter)
    log = Logger()

    admitted = False
    refusal: str | None = None
    """Why a connection over the caps is refused; told in answer to its first request."""
    _refusedTimeout: Any = None
    _serial = False
    """A request that changes the session is being served; nothing else is."""
    _held: wire.Request | None = None
    """A request that changes the session, waiting for the answers before it."""
    _ending = False
    """An answer that closes the connection is queued; no more lines are served."""
    _awaitingTurn = False
    """The lines of this turn of the reactor are spent: the next line waits for a later
    one (``TurnBudget``), whatever answers come meanwhile."""

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.host = addressText(peer)
        self.session = Session(peer=format_host_port(self.host, getattr(peer, "port", "?")))
        self._answers: list[_Answer] = []
        # A list, not a deque: it holds at most MAX_IN_FLIGHT answers, and an
        # empty list costs an idle connection 56 bytes where a deque costs 600.
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
    _heldBytes = 0
    """Bytes that came while line delivery was paused: LineReceiver keeps them. Past a
    line's worth, the socket is paused too, so a client that pipelines without end
    costs one read buffer."""

    def dataReceived(self, data: bytes) -> None:
        if self.admitted:
            if b"\n" in data:
                # Only a line that ends is hearing from the client: bytes that never
                # make a line do not hold the connection open past the idle timeout.
                self.lastHeard = self.factory.clock.seconds()
            if self.paused:
                self._heldBytes += len(data)
            super().dataReceived(data)
            if self.paused and not self._socketPaused and self._heldBytes > wire.MAX_LINE:
                self._socketPaused = True
                self.transport.pauseProducing()
        elif self.refusal is not None and b"\n" in data:
            self.log.warn("Refused a connection: {why}", why=self.refusal)
            self._send(wire.ProtocolError("too-many-connections", self.refusal).toLine())
            self.refusal = None
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if line in _EMPTY_LINES:
            return  # ignored: no answer, and no share of the rate limit
        if not self.bucket.take():
            self._queueAnswer(wire.ProtocolError("rate-limited", "slow down").toLine())
        else:
            try:
                request = wire.parse_request(line)
            except wire.ProtocolError as e:
                self._queueAnswer(e.toLine())
            else:
                if request is not None:
                    self._take(request)
        more = self.factory.turns.spend()
        if self._mustWait():
            self.paused = True  # LineReceiver delivers no line until _resume
        elif not more and not self._awaitingTurn:
            self.paused = True
            self._awaitingTurn = True
            self.factory.turns.wait(self._nextTurn)

    def _nextTurn(self) -> None:
        """A later turn of the reactor has lines to spare: serve the lines held."""
        self._awaitingTurn = False
        if self.paused and not self._mustWait():
            self._resume()

    def _take(self, request: wire.Request) -> None:
        """Serve ``request`` now, or hold it until the answers before it are out."""
        if request.verb not in SIDE_BY_SIDE:
            if self._answers:
                self._held = request
                return
            self._serial = True
        self._serve(request)

    def _serve(self, request: wire.Request) -> None:
        answer = _Answer()
        self._answers.append(answer)
        try:
            result = self.factory.dispatch(self.session, request)
        except Exception:
            self._refused(Failure(), answer, request)
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(
                self._served,
                self._refused,
                callbackArgs=(answer, request),
                errbackArgs=(answer, request),
            )
        else:
            self._served(result, answer, request)

    def _mustWait(self) -> bool:
        """Whether the lines not yet read must wait for answers still outstanding."""
        return (
            self._ending
            or self._serial
            or self._held is not None
            or len(self._answers) >= MAX_IN_FLIGHT
        )

    def _served(
        self, result: dict[str, Any] | bytes, answer: _Answer, request: wire.Request
    ) -> None:
        """A handler's answer: a dict (the arguments of an ``OK`` line) or ready bytes."""
        verb = request.verb
        self.factory.counted(verb)
        data = result if isinstance(result, bytes) else wire.format_ok(result)
        self._done(answer, data, verb == "QUIT")

    def _refused(self, failure: Failure, answer: _Answer, request: wire.Request) -> None:
        error = failure.value
        if isinstance(error, wire.ProtocolError):
            self.factory.counted(request.verb, error)
            self._done(answer, error.toLine(), error.closes)
            return
        self.log.failure(
            "Unexpected error serving {verb} for {peer}",
            failure,
            verb=request.verb,
            peer=self.session.peer,
        )
        line = wire.format_error(500, "internal-error", message="the server could not serve this")
        self._done(answer, line, False)

    def _done(self, answer: _Answer, data: bytes, close: bool) -> None:
        answer.data, answer.close = data, close
        self._serial = False  # a serial request is the only one outstanding
        self._flush()
        if self.paused and not self._mustWait() and not self._awaitingTurn:
            self._resume()

    def _queueAnswer(self, data: bytes, close: bool = False) -> None:
        """Answer a line that needs no serving, after the answers before it."""
        answer = _Answer()
        answer.data, answer.close = data, close
        self._answers.append(answer)
        self._flush()

    def _flush(self) -> None:
        """Send the ready answers at the head, in order; then serve a held request."""
        answers = self._answers
        while answers and answers[0].data is not None:
            answer = answers.pop(0)
            self._send(answer.data)
            if answer.close:
                self._ending = True
                answers.clear()
                if self.connected:
                    self.transport.loseConnection()
                return
        if not answers and self._held is not None and self._open():
            request, self._held = self._held, None
            self._serial = True
            self._serve(request)

    def _open(self) -> bool:
        """Whether lines may still be served: connected, and not closing."""
        return self.connected and not self._ending and not self.transport.disconnecting

    def _resume(self) -> None:
        if self._open():
            self.paused = False
            self._heldBytes = 0
            if self._socketPaused:
                self._socketPaused = False
                self.transport.resumeProducing()
            LineReceiver.dataReceived(self, b"")

    def _send(self, data: bytes) -> None:
        if self.connected:
            self.transport.write(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.paused = True
        self._queueAnswer(
            wire.format_error(
                413, "line-too-long", message=f"a line may have at most {wire.MAX_LINE} bytes"
            ),
            close=True,
        )
        self._ending = True


class _Answer:
    """One request's place in its session's answers: its bytes once they are ready."""

    __slots__ = ("data", "close")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


_CLIENT_HANDLERS = {
    "HELLO": "hello",
    "CHECKOUT": "serveCheckout",
    "HEARTBEAT": "serveHeartbeat",
    "RELEASE": "serveRelease",
    "BORROW": "borrow",
}
"""The role method that serves each client verb (the busiest without a coroutine)."""

_PLAIN = frozenset({"serveCheckout", "serveHeartbeat", "serveRelease"})
"""Handlers that give an answer or a Deferred, never a coroutine."""

_GRANTING = ("CHECKOUT", "BORROW")
"""The verbs whose outcomes the grant and denial metrics count."""


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
        self._grants = {verb: self.metrics.grants.labels(verb.lower()) for verb in _GRANTING}
        self.sessions: set[LicensingProtocol] = set()
        self.turns = TurnBudget(self.clock)
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

    def idleTimeout(self) -> float:
        """Seconds of silence after which a session is closed.

        The configured timeout, but never less than two of the heartbeat
        intervals the server gives clients now: the lease time is a setting
        that may grow while the server runs, and a client that heartbeats as
        told must not lose its connection between two heartbeats.
        """
        return max(self.limits.idle_timeout, 2 * self.role.heartbeatInterval())

    def closeIdle(self) -> int:
        """Close the sessions that sent no line for the idle timeout; return how many."""
        deadline = self.clock.seconds() - self.idleTimeout()
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

    def dispatch(self, session: Session, request: wire.Request) -> Any:
        """Serve one request: its answer, or a Deferred of it; raise ``ProtocolError``.

        An answer is a dict (the arguments of an ``OK`` line) or ready bytes.
        A handler may return either, or a coroutine; the busiest handlers
        (``_PLAIN``) never return a coroutine and are not asked.
        """
        verb = request.verb
        name = _CLIENT_HANDLERS.get(verb)
        if name in _PLAIN:
            return getattr(self.role, name)(session, request.args)
        if verb in ("PING", "QUIT"):
            return {}
        if verb == "STATUS":
            return self.role.status()
        result = self._handler(verb)(session, request.args)
        if inspect.iscoroutine(result):
            return defer.Deferred.fromCoroutine(result)
        return result

    def counted(self, verb: str, refusal: wire.ProtocolError | None = None) -> None:
        """Count the outcome of a request in the metrics: grants and denials of seats."""
        if verb in _GRANTING:
            if refusal is None:
                self._grants[verb].inc()
            else:
                self.metrics.denials.labels(refusal.reason).inc()

    def sessionClosed(self, session: Session) -> None:
        """Tell the role that a session has ended (it may be the failover's link)."""
        self.role.sessionClosed(session)
