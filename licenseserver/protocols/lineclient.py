"""The one client of the line protocol: requests out, answers matched to them in order.

``LineClient`` is the client side of a connection to a licensing port, for
everything that asks a server something: the failover's link to its primary
(``protocols/peer.py``), the client SDK (``client/connection.py``), the
``licenseserver`` tool and the upgrade (through ``blockingRequest``), and
the benchmarks. It writes request lines, any number of them before the first
answer (pipelining), and matches each answer to the oldest request still
waiting, since a server answers in request order. An ``OK`` that announces
record lines (``announces``, ``lines=N`` for ``SYNC``) takes the ``N`` lines
after it along. Number arguments it is told of (``numbers``) must be whole
numbers of at most ``wire.MAX_DIGITS`` digits.

A line that is no answer, an answer nobody asked for, an overlong line, a
bad number or a request not answered within ``timeout`` seconds breaks the
connection: answers could no longer be matched to requests, so the client
drops it, and every request still waiting fails, as they all do when the
connection is lost or closed. Requests made after that fail at once.

Each user fits it to itself with hooks rather than a copy: ``readAnswer``
reads one answer line, ``answered`` turns an answer into what the request
fires with (or raises what it fails with), and ``errorFor`` turns the
``LineClientError`` that broke the connection into the error of the waiting
requests (and may log it); ``onLost`` is told once the client is unusable.

``blockingRequest`` sends one request with a ``LineClient`` on a private
reactor in the calling thread, for programs that run no reactor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from licenseserver.protocols import wire

MAX_ANSWER = 1 << 20
"""Longest answer line a ``LineClient`` accepts unless its class says otherwise."""


@dataclass(frozen=True)
class Reply:
    """An answer, with the record lines that followed it."""

    response: wire.Response
    lines: tuple[bytes, ...] = ()

    @property
    def ok(self) -> bool:
        return self.response.ok

    @property
    def args(self) -> dict[str, str]:
        return self.response.args

    def integer(self, name: str, default: int = 0) -> int:
        """The number argument ``name`` (checked as the answer came when the client lists
        it in ``numbers``), or ``default`` when the answer has none."""
        number = wire.parse_integer(self.args.get(name, ""))
        return default if number is None else number


# Why a request got no answer.


class LineClientError(Exception):
    """A request got no answer: the base class of this module's errors."""


class ConnectFailed(LineClientError):
    """No connection could be made: refused, unreachable, or no such host."""


class TLSFailed(LineClientError):
    """The TLS handshake with the server failed."""


class CertificateRefused(TLSFailed):
    """The server's certificate does not verify; ``detail`` says how."""

    def __init__(self, detail: str):
        super().__init__(f"the server's certificate does not verify: {detail}")
        self.detail = detail


class TimedOut(LineClientError):
    """No answer to ``verb`` (or no connection) within ``timeout`` seconds."""

    def __init__(self, verb: str, timeout: float, message: str = ""):
        super().__init__(message or f"no answer to {verb} in {timeout:g} s")
        self.verb = verb
        self.timeout = timeout


class Disconnected(LineClientError):
    """The connection ended before the answer; ``reason`` is the Failure it ended with."""

    def __init__(self, reason: Failure | None):
        super().__init__("the connection closed before the answer")
        self.reason = reason


class Closed(LineClientError):
    """This side closed the connection before the answer."""

    def __init__(self) -> None:
        super().__init__("the connection was closed before the answer")


class JunkAnswer(LineClientError):
    """The server sent ``line``, which is no answer: ``why``."""

    def __init__(self, line: bytes, why: str):
        super().__init__(f"a line that is no answer ({why}): {line[:80]!r}")
        self.line = line
        self.why = why


class BadNumber(JunkAnswer):
    """The answer ``line`` has a ``name=`` that is not a number of at most MAX_DIGITS digits."""

    def __init__(self, line: bytes, name: str):
        super().__init__(line, f"{name}= is no number")
        self.name = name


class UnaskedAnswer(LineClientError):
    """The server sent the answer ``line`` while no request was waiting."""

    def __init__(self, line: bytes):
        super().__init__(f"an answer to nothing asked: {line[:80]!r}")
        self.line = line


class OverlongLine(LineClientError):
    """The server sent a line longer than ``limit`` bytes."""

    def __init__(self, limit: int):
        super().__init__(f"a line longer than {limit} bytes")
        self.limit = limit


class LineClient(LineReceiver):
    """A client's connection to one licensing port; see the module's docstring.

    ``clock`` and ``timeout`` (seconds) bound each request's wait for its
    answer; without a ``timeout`` a request waits as long as the connection
    lasts.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_ANSWER

    numbers: tuple[str, ...] = ()
    """Arguments of an answer that must be numbers (``wire.parse_integer``); an answer where
    one is not is no answer."""

    announces: str | None = None
    """The ``OK`` argument that announces how many record lines follow it (``lines``), or
    None when answers are one line each."""

    def __init__(self, clock: Any = None, timeout: float | None = None) -> None:
        self.clock = clock
        self.timeout = timeout
        self.onLost: Callable[[Any], object] | None = None
        """Told once, with this client, when it breaks, closes or loses its connection."""
        self._waiting: deque[tuple[defer.Deferred, Any]] = deque()
        self._header: Any = None
        self._records: list[bytes] | None = None
        self._count = 0
        self._broken: Exception | None = None

    @property
    def usable(self) -> bool:
        """Whether requests can still be sent."""
        return self._broken is None and self.transport is not None

    # Requests

    def request(self, verb: str, args: Mapping[str, object] | None = None) -> defer.Deferred:
        """Send one request; fire with what ``answered`` makes of its answer.

        Fails with what ``errorFor`` makes of the problem when the connection
        breaks or ends first, or at once when it already has.
        """
        return self.requestLine(wire.format_request(verb, dict(args) if args else None), verb)

    def requestLine(self, line: bytes, verb: str = "") -> defer.Deferred:
        """Send ``line``, a whole request ending in LF, as it is; as ``request`` otherwise.

        ``verb`` names the request in a timeout's message.
        """
        if self._broken is not None:
            return defer.fail(self._broken)
        d: defer.Deferred = defer.Deferred()
        timer = None
        if self.timeout is not None:
            timer = self.clock.callLater(self.timeout, self._timedOut, verb)
        self._waiting.append((d, timer))
        self.transport.write(line)
        return d

    def close(self) -> None:
        """Close the connection in order; requests still waiting fail (``Closed``)."""
        if self.transport is not None:
            self.transport.loseConnection()
        self._break(Closed())

    def abort(self) -> None:
        """Drop the connection at once; requests still waiting fail (``Closed``)."""
        if self.transport is not None:
            self.transport.abortConnection()
        self._break(Closed())

    # Hooks

    def readAnswer(self, line: bytes) -> Any:
        """The answer that ``line`` holds: a ``wire.Response`` whose ``numbers`` are numbers.

        Raises ``JunkAnswer`` for a line that is no answer.
        """
        try:
            response = wire.parse_response(line)
        except wire.ProtocolError as e:
            raise JunkAnswer(line, str(e)) from None
        for name in self.numbers:
            value = response.args.get(name)
            if value is not None and wire.parse_integer(value) is None:
                raise BadNumber(line, name)
        return response

    def answered(self, answer: Any, lines: tuple[bytes, ...]) -> Any:
        """What the request fires with: a ``Reply``. Raise to fail the request instead."""
        return Reply(answer, lines)

    def errorFor(self, problem: LineClientError) -> Exception:
        """What waiting requests fail with when ``problem`` breaks or ends the connection.

        Called once, for the first problem; later requests fail with the same error.
        """
        return problem

    # The connection

    def lineReceived(self, line: bytes) -> None:
        records = self._records
        if records is not None:
            records.append(line)
            if len(records) == self._count:
                self._records = None
                self._answer(self._header, tuple(records))
            return
        if self._broken is not None:
            return
        try:
            answer = self.readAnswer(line)
        except JunkAnswer as problem:
            self._fault(problem)
            return
        if not self._waiting:
            self._fault(UnaskedAnswer(line))
            return
        if self.announces is not None and answer.ok:
            value = answer.args.get(self.announces)
            if value is not None:
                count = wire.parse_integer(value)
                if count is None:
                    self._fault(BadNumber(line, self.announces))
                    return
                if count > 0:
                    self._header, self._records, self._count = answer, [], count
                    return
        self._answer(answer, ())

    def _answer(self, answer: Any, lines: tuple[bytes, ...]) -> None:
        d, timer = self._waiting.popleft()
        if timer is not None:
            timer.cancel()
        try:
            result = self.answered(answer, lines)
        except Exception:
            d.errback()
        else:
            d.callback(result)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._fault(OverlongLine(self.MAX_LENGTH))

    def _timedOut(self, verb: str) -> None:
        assert self.timeout is not None
        self._fault(TimedOut(verb, self.timeout))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._break(Disconnected(reason))

    def _fault(self, problem: LineClientError) -> None:
        """Answers can no longer be matched to requests: drop the connection, fail them."""
        if self.transport is not None:
            self.transport.abortConnection()
        self._break(problem)

    def _break(self, problem: LineClientError) -> None:
        if self._broken is None:
            self._broken = self.errorFor(problem)
        waiting, self._waiting = self._waiting, deque()
        self._records = None
        for _, timer in waiting:
            if timer is not None and timer.active():
                timer.cancel()
        for d, _ in waiting:
            d.errback(self._broken)
        if self.onLost is not None:
            onLost, self.onLost = self.onLost, None
            onLost(self)


# One request from a program that runs no reactor.


def newReactor() -> Any:
    """A reactor of its own, not the global one: poll, or select where poll is missing."""
    try:
        from twisted.internet.pollreactor import PollReactor
    except ImportError:
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()
    return PollReactor()


def blockingRequest(
    host: str,
    port: int,
    verb: str,
    args: Mapping[str, object] | None = None,
    *,
    timeout: float,
    tlsOptions: Any = None,
) -> Reply:
    """Connect to ``host:port``, send one request and return its ``Reply``, blocking.

    A ``LineClient`` on a private reactor, run in the calling thread (without
    signal handlers) until the answer or the failure, so the global reactor
    is never run. With ``tlsOptions`` (``licenseserver.tls.clientOptions``)
    it speaks TLS and checks the certificate as the failover's link does.
    ``timeout`` bounds the whole exchange, connecting included. An ``ERR``
    answer is a ``Reply`` too. Raises ``ConnectFailed``, ``TLSFailed`` (its
    ``CertificateRefused`` when the certificate does not verify),
    ``TimedOut``, ``Disconnected``, ``JunkAnswer`` or ``OverlongLine``.
    """
    reactor = newReactor()
    outcome: list[Any] = []

    def start() -> None:
        d = defer.Deferred.fromCoroutine(
            _exchange(reactor, host, port, verb, args, timeout, tlsOptions)
        )
        d.addBoth(outcome.append)
        d.addBoth(lambda ignored: reactor.stop())

    reactor.callWhenRunning(start)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        _closeWaker(reactor)
    if not outcome:
        raise Disconnected(None)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


@implementer(IHandshakeListener)
class _OneRequest(LineClient):
    """A ``LineClient`` that knows whether its TLS handshake completed."""

    secured = False

    def handshakeCompleted(self) -> None:
        self.secured = True


async def _exchange(
    reactor: Any,
    host: str,
    port: int,
    verb: str,
    args: Mapping[str, object] | None,
    timeout: float,
    tlsOptions: Any,
) -> Reply:
    try:
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    except ValueError:
        raise ConnectFailed(f"{host!r} is not a host name") from None
    if tlsOptions is not None:
        endpoint = wrapClientTLS(tlsOptions, endpoint)
    started = reactor.seconds()
    client = _OneRequest(reactor)
    try:
        await connectProtocol(endpoint, client)
    except Exception as e:
        raise _notConnected(e, host, verb, timeout) from None
    client.timeout = max(0.0, started + timeout - reactor.seconds())
    try:
        return await client.request(verb, args)
    except TimedOut:
        raise TimedOut(verb, timeout) from None
    except Disconnected as e:
        if tlsOptions is not None:
            tlsProblem = _tlsProblem(e.reason, host, client.secured)
            if tlsProblem is not None:
                raise tlsProblem from None
        raise
    finally:
        client.close()


def _notConnected(e: Exception, host: str, verb: str, timeout: float) -> LineClientError:
    """The error for a connection that could not be made."""
    if isinstance(e, (ValueError, UnicodeError)):
        return ConnectFailed(f"{host!r} is not a host name")
    if isinstance(e, error.TimeoutError):
        return TimedOut(verb, timeout, f"no connection in {timeout:g} s")
    if isinstance(e, error.DNSLookupError):
        return ConnectFailed(f"no address found for {host}")
    if isinstance(e, error.ConnectError):
        if e.args and isinstance(e.args[0], str) and e.args[0]:
            return ConnectFailed(e.args[0])
        what = (type(e).__doc__ or "").strip().splitlines()
        return ConnectFailed(what[0].rstrip(".") if what else type(e).__name__)
    return ConnectFailed(str(e) or type(e).__name__)


def _tlsProblem(reason: Failure | None, host: str, secured: bool) -> TLSFailed | None:
    """The TLS failure that ended a connection, or None when TLS was not what ended it."""
    value = reason.value if reason is not None else None
    if isinstance(value, VerificationError):
        return CertificateRefused(f"it does not name {host}")
    if isinstance(value, SSL.Error):
        details = value.args[0] if value.args and isinstance(value.args[0], list) else []
        text = "; ".join(str(d[-1]) for d in details if d) or str(value)
        if "certificate verify failed" in text:
            return CertificateRefused("it has another issuer, or has expired")
        return TLSFailed(text)
    if not secured:
        return TLSFailed("the connection closed during the handshake")
    return None


def _closeWaker(reactor: Any) -> None:
    """Close the self-pipe a private reactor opened; nothing else would, once it is done."""
    waker = getattr(reactor, "waker", None)
    if waker is not None:
        reactor.removeReader(waker)
        waker.connectionLost(None)
        reactor.waker = None
