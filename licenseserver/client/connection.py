"""One connection to a license server: requests out, answers back in order, on Twisted.

``ServerConnection`` is a ``LineClient`` (``protocols/lineclient.py``), which
writes request lines and matches each answer to the oldest request still
waiting (the server answers in request order). An ``OK`` fires the request's
Deferred with its arguments, an ``ERR`` fails it with the typed
``ServerError``. A request that gets no answer within ``timeout`` breaks the
connection: it and every request behind it fail with ``ServerTimeout``,
since answers could no longer be matched.

``open_connection`` connects through any client endpoint, so tests can use
in-memory ones; ``AddressEndpoint`` is the default for ``host:port``, and
``tls_endpoint_for`` gives the same over TLS.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python import usage
from zope.interface import implementer

from licenseserver import tls
from licenseserver.client import errors
from licenseserver.client.core import split_address, without_none
from licenseserver.protocols import lineclient, wire


class ServerConnection(lineclient.LineClient):
    """A client's connection to one server at ``address``."""

    def __init__(self, address: str, clock: Any, timeout: float):
        super().__init__(clock, timeout)
        self.address = address
        self.hello: dict[str, str] = {}
        """The arguments of the server's answer to HELLO, once said."""

    def request(self, verb: str, args: Mapping[str, object] | None = None) -> defer.Deferred:
        """Send one request; fire with the ``OK`` arguments or fail with a typed error."""
        return super().request(verb, without_none(args or {}))

    def answered(self, answer: wire.Response, lines: tuple[bytes, ...]) -> dict[str, str]:
        if answer.ok:
            return dict(answer.args)
        raise errors.error_from_response(answer, self.address)

    def errorFor(self, problem: lineclient.LineClientError) -> errors.ServerUnavailable:
        if isinstance(problem, lineclient.TimedOut):
            return errors.ServerTimeout(self.address, str(problem))
        if isinstance(problem, lineclient.JunkAnswer):
            return errors.ProtocolViolation(
                self.address, f"answered with junk: {problem.line[:80]!r}"
            )
        if isinstance(problem, lineclient.UnaskedAnswer):
            return errors.ProtocolViolation(self.address, "answered what was not asked")
        if isinstance(problem, lineclient.OverlongLine):
            return errors.ProtocolViolation(self.address, "sent an overlong line")
        if isinstance(problem, lineclient.Closed):
            return errors.ConnectionLost(self.address, "the connection was closed")
        return errors.ConnectionLost(self.address, "the connection closed")

    def close(self) -> None:
        """Drop the connection; requests still waiting fail with ``ConnectionLost``."""
        self.abort()


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, address: str, clock: Any, timeout: float):
        self.address = address
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: Any) -> ServerConnection:
        connection = ServerConnection(self.address, self.clock, self.timeout)
        connection.factory = self
        return connection


async def open_connection(
    endpoint: Any, address: str, clock: Any, timeout: float
) -> ServerConnection:
    """Connect to ``address`` through ``endpoint`` within ``timeout`` seconds."""
    d = endpoint.connect(_ConnectionFactory(address, clock, timeout))
    d.addTimeout(timeout, clock)
    try:
        return await d
    except (defer.TimeoutError, defer.CancelledError):
        raise errors.ServerTimeout(address, f"no connection within {timeout:g} s") from None
    except errors.LicenseClientError:
        raise
    except Exception as e:
        raise errors.ConnectFailed(address, _describe(e)) from e


def _describe(error: Exception) -> str:
    """A short text for why a connection could not be made."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, ConnectError):
        what = (type(error).__doc__ or "").strip().splitlines()
        if what:
            return what[0].rstrip(".")
    return str(error).strip().rstrip(".") or type(error).__name__


@implementer(IStreamClientEndpoint)
class AddressEndpoint:
    """TCP to ``host:port``: resolve the name (in a thread), then try each address in turn.

    Not Twisted's ``HostnameEndpoint``, which does the same: its connection
    attempts run on a ``LoopingCall`` made before its clock is set, and
    making one imports (and so installs) the global reactor. The blocking
    API runs on a private reactor and must leave the application's global
    reactor alone (``test_noGlobalReactorAndPromptExit``).
    """

    def __init__(self, reactor: Any, address: str, timeout: float):
        self.reactor = reactor
        self.host, self.port = split_address(address)
        self.timeout = timeout

    def connect(self, factory: Any) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        try:
            infos = await threads.deferToThreadPool(
                self.reactor,
                self.reactor.getThreadPool(),
                socket.getaddrinfo,
                self.host,
                self.port,
                0,
                socket.SOCK_STREAM,
            )
        except OSError as e:
            raise errors.ConnectFailed(
                f"{self.host}:{self.port}", f"cannot resolve {self.host}: {e.strerror or e}"
            ) from None
        last: Exception | None = None
        seen = set()
        for family, _, _, _, sockaddr in infos:
            ip = sockaddr[0]
            if ip in seen:
                continue
            seen.add(ip)
            cls = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
            try:
                return await cls(self.reactor, ip, self.port, timeout=self.timeout).connect(
                    factory
                )
            except Exception as e:
                last = e
        if last is None:
            raise errors.ConnectFailed(f"{self.host}:{self.port}", f"no address for {self.host}")
        raise last


def tls_endpoint_for(
    reactor: Any, ca: str | None = None, timeout: float = 10.0
) -> Callable[[str], Any]:
    """An ``endpoint_for`` that reaches each ``host:port`` over TLS.

    The server's certificate must name ``host`` and chain to a certificate in
    ``ca`` (a PEM file of trust roots; the system's trust store without it).
    The connection speaks TLS 1.2 or 1.3 with the suites the server offers
    (``licenseserver.tls.CIPHERS``). ``timeout`` bounds each TCP connection
    attempt. Raises ``ValueError`` at once for a ``ca`` file that cannot be
    read or holds no PEM certificate.
    """
    trust_root = None
    if ca is not None:
        try:
            trust_root = tls.load_trust_roots(ca)
        except usage.UsageError as e:
            raise ValueError(str(e)) from None

    def endpoint_for(address: str) -> Any:
        options = tls.clientOptionsTrusting(split_address(address)[0], trust_root)
        return wrapClientTLS(options, AddressEndpoint(reactor, address, timeout))

    return endpoint_for
