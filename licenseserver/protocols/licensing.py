"""The licensing port: a line protocol for clients (and the failover).

Each connection is a ``LicensingProtocol`` with its own ``Session``. Lines
are parsed by ``wire`` and handed to the role one at a time: while a request
waits for the store, the protocol stops reading, so pipelined requests are
answered exactly once each, in order, and a client that floods cannot grow
the server's buffers beyond one read.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from licenseserver.protocols import wire
from licenseserver.session import Session


class LicensingProtocol(LineReceiver):
    """One client session on the licensing port."""

    delimiter = b"\n"
    MAX_LENGTH = wire.MAX_LINE - len(delimiter)
    log = Logger()

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.session = Session(peer=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}")
        self.connected = True

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False

    def lineReceived(self, line: bytes) -> None:
        try:
            request = wire.parse_request(line, self.factory.verbs)
        except wire.ProtocolError as e:
            self._send(e.toLine())
            return
        if request is None:
            return
        d = defer.ensureDeferred(self.factory.dispatch(self.session, request))
        d.addCallback(wire.format_ok)
        d.addErrback(self._failed, request)
        if d.called:
            d.addCallback(self._answer, request)
        else:
            self.pauseProducing()
            d.addCallback(self._answer, request)
            d.addBoth(self._resume)

    def _failed(self, failure: Any, request: wire.Request) -> bytes:
        if failure.check(wire.ProtocolError):
            return failure.value.toLine()
        self.log.failure(
            "Unexpected error serving {verb} for {peer}",
            failure,
            verb=request.verb,
            peer=self.session.peer,
        )
        return wire.format_error(500, "internal-error", message="the server could not serve this")

    def _answer(self, line: bytes, request: wire.Request) -> None:
        self._send(line)
        if request.verb == "QUIT":
            self.transport.loseConnection()

    def _resume(self, result: Any) -> None:
        if self.connected and not self.transport.disconnecting:
            self.resumeProducing()

    def _send(self, line: bytes) -> None:
        if self.connected:
            self.transport.write(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._send(
            wire.format_error(
                413, "line-too-long", message=f"a line may have at most {wire.MAX_LINE} bytes"
            )
        )
        self.transport.loseConnection()


class LicensingFactory(Factory):
    """Builds sessions and routes their requests to the role."""

    protocol = LicensingProtocol
    verbs = wire.CLIENT_VERBS

    def __init__(self, role: Any):
        self.role = role
        self._handlers = {
            "HELLO": role.hello,
            "CHECKOUT": role.checkout,
            "HEARTBEAT": role.heartbeat,
            "RELEASE": role.release,
            "BORROW": role.borrow,
        }

    async def dispatch(self, session: Session, request: wire.Request) -> dict[str, Any]:
        """Serve one request; return the ``OK`` arguments or raise ``ProtocolError``."""
        verb = request.verb
        if verb in ("PING", "QUIT"):
            return {}
        if verb == "STATUS":
            return self.role.status()
        return await self._handlers[verb](session, request.args)
