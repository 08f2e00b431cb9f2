"""A listening endpoint service that reports its port and fails in one line.

Like ``strports.service``, but a port that cannot be had ends the process
with a one-line reason and exit status 1 instead of a traceback, and the
port actually bound (useful with ``tcp:0``) is written to a file and passed
to a callback, so tests and scripts can find it. A plain ``tcp:PORT`` listens
on IPv4 and IPv6 alike, an ``ssl:`` endpoint serves TLS with the settings
of ``licenseserver.tls``, and a TCP or TLS port that names no backlog gets
``LISTEN_BACKLOG``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.error import CannotListenError

from licenseserver import tls
from licenseserver.addresses import server_port_interface, split_endpoint

LISTEN_BACKLOG = 4096
"""Connections the kernel may hold for ``accept()`` on a TCP or TLS port whose string
names no ``backlog``. Twisted's default, 50, is too few for a license server: after a
takeover, a handback or a restart, every client reconnects at once, and a burst past
the backlog has its handshakes dropped and retried a second and more later (or, with
SYN cookies, some connections the client thinks made never reach the server). Linux
caps it at ``net.core.somaxconn`` (4096 by default since 5.4)."""

_TCP_KINDS = frozenset({"tcp", "tcp6"})
"""Twisted's TCP server endpoints, whose fields are ``port``, ``interface``, ``backlog``."""


def _dual_stack() -> bool:
    """Whether an IPv6 socket on ``::`` can be had here (it takes IPv4 too)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True


def serverEndpoint(reactor: Any, description: str) -> Any:
    """The endpoint of a ``--port`` or ``--web`` string.

    ``tcp:PORT`` without an interface listens on every IPv4 and IPv6 address
    (one dual-stack socket on ``::``) where the host has IPv6, on every IPv4
    address otherwise. ``ssl:`` takes Twisted's fields but serves the TLS
    versions and suites of ``licenseserver.tls`` (see ``tlsServerEndpoint``).
    Any other string means what Twisted says it means, except that a ``tcp:``,
    ``tcp6:`` or ``ssl:`` port without a ``backlog`` gets ``LISTEN_BACKLOG``.
    """
    kind, positional, named = split_endpoint(description)
    plain = kind == "tcp" and len(positional) + len(named) == 1
    if plain and server_port_interface(description) is not None and _dual_stack():
        port, _ = server_port_interface(description)
        return endpoints.TCP6ServerEndpoint(reactor, port, backlog=LISTEN_BACKLOG, interface="::")
    if kind == "ssl":
        return tlsServerEndpoint(reactor, description)
    if kind in _TCP_KINDS and "backlog" not in named and len(positional) < 3:
        description += f":backlog={LISTEN_BACKLOG}"
    return endpoints.serverFromString(reactor, description)


_SSL_FIELDS = (
    "port",
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)
"""The fields of Twisted's ``ssl:`` server endpoint, in its positional order."""


def tlsServerEndpoint(reactor: Any, description: str) -> Any:
    """The endpoint of an ``ssl:`` string, with the TLS settings of ``licenseserver.tls``.

    The fields are Twisted's (``port``, ``privateKey`` [``server.pem``],
    ``certKey`` [the key file], ``interface``, ``backlog`` [``LISTEN_BACKLOG``],
    ``extraCertChain``, ``dhParameters``) and the files are read as Twisted reads them; what
    Twisted's own parser cannot do is choose the suites, so this one does.
    ``sslmethod`` is refused: it would undo the TLS 1.2 minimum. Raises
    ``ValueError`` for a field that is unknown, missing or given twice, and
    what ``tls.serverOptions`` raises for its files.
    """
    kind, positional, kwargs = split_endpoint(description)
    if kind != "ssl":
        raise ValueError(f"{description!r} is not an ssl: endpoint")
    values: dict[str, str] = {}
    if len(positional) > len(_SSL_FIELDS):
        raise ValueError(f"{description!r} has too many fields")
    for name, value in zip(_SSL_FIELDS, positional, strict=False):
        values[name] = value
    for name, value in kwargs.items():
        if name not in _SSL_FIELDS:
            raise ValueError(f"ssl: endpoints have no field {name!r}")
        if name in values:
            raise ValueError(f"ssl: field {name!r} given twice")
        values[name] = value
    if "sslmethod" in values:
        raise ValueError("sslmethod is not supported: the server speaks TLS 1.2 and 1.3 only")
    if "port" not in values:
        raise ValueError(f"{description!r} names no port")
    try:
        port, backlog = int(values["port"]), int(values.get("backlog", LISTEN_BACKLOG))
    except ValueError:
        raise ValueError(f"{description!r}: port and backlog must be numbers") from None
    privateKey = values.get("privateKey", "server.pem")
    options = tls.serverOptions(
        privateKey,
        values.get("certKey", privateKey),
        extraCertChain=values.get("extraCertChain"),
        dhParameters=values.get("dhParameters"),
    )
    return endpoints.SSL4ServerEndpoint(
        reactor, port, options, backlog=backlog, interface=values.get("interface", "")
    )


def addressText(address: Any) -> str:
    """A peer's host as people write it: IPv4 clients of a dual-stack socket without
    their ``::ffff:`` prefix."""
    host = str(getattr(address, "host", "?"))
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class ListeningService(service.Service):
    """Listen on ``endpoint`` with ``factory`` while the service runs."""

    def __init__(
        self,
        description: str,
        endpoint: Any,
        factory: Any,
        *,
        portFile: Path | None = None,
        onListening: Callable[[int], None] | None = None,
    ):
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.portFile = portFile
        self.onListening = onListening
        self.port: Any = None

    _bound = False

    def privilegedStartService(self) -> None:
        """Listen now: ``twistd`` calls this before it drops privileges."""
        service.Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Listen, unless ``privilegedStartService`` did (the ``twist`` runner never calls it)."""
        service.Service.startService(self)
        if not self._bound:
            self._listen()

    def _listen(self) -> None:
        self._bound = True
        if self.portFile is not None and self.portFile.exists():
            self.portFile.unlink()
        d = self.endpoint.listen(self.factory)
        failures: list[Any] = []
        d.addCallbacks(self._listening, failures.append)
        if failures:
            failure = failures[0]
            if failure.check(CannotListenError):
                reason = failure.value.socketError
                message = f"licenseserver: cannot listen on {self.description}: {reason}"
                if sys.stderr is not sys.__stderr__:
                    # twistd has sent sys.stderr to its log by now, where SystemExit
                    # writes the line; the admin at the terminal should see it too.
                    # Under `twist` (python -m twisted) stderr is still the terminal,
                    # and SystemExit's own line is the only one.
                    print(message, file=sys.__stderr__, flush=True)
                raise SystemExit(message)
            failure.raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port
        number = port.getHost().port
        if self.portFile is not None:
            tmp = self.portFile.with_name(self.portFile.name + ".tmp")
            tmp.write_text(f"{number}\n")
            tmp.replace(self.portFile)
        if self.onListening is not None:
            self.onListening(number)

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        self._bound = False
        if self.portFile is not None and self.portFile.exists():
            self.portFile.unlink()
        if self.port is None:
            return defer.succeed(None)
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening)
