"""The web endpoint's HTTP layer with limits: bounded bodies, a deadline for each request.

Twisted's ``Request`` reads a whole body before any resource sees it, and then
parses a form body (URL-encoded or multipart) into ``request.args``: an
unauthenticated client could make the server hold and parse as much as it
cared to send. Here:

- a body whose ``Content-Length`` is over ``maxBody`` is refused with ``413``
  at once, before a byte of it is read, and the connection is closed; a body
  without a length (chunked), or longer than it said, is cut off with the same
  ``413`` as soon as it passes the limit;
- a body is kept in a temporary file, not in memory, unless it is small, and
  form fields are parsed only when a page asks for them (``formFields``), which
  it does after it has checked the session;
- each request (request line, headers and body) must arrive within
  ``requestTimeout`` seconds of its first byte, else ``408`` and the connection
  is closed. Twisted's own idle timeout restarts at every byte, so a client that
  sends a byte a second would otherwise hold its connection for hours.

``LimitedSite`` is the ``Site`` that puts both in place.
"""

from __future__ import annotations

import email
import json
from typing import Any
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.web import http, server

MAX_BODY = 4 << 20
"""Default of ``--web-max-body``: the largest request body in bytes."""
REQUEST_TIMEOUT = 60.0
"""Default of ``--web-request-timeout``: seconds from a request's first byte to its last."""
ACCESS_LOGS = ("quiet", "all", "none")
"""Values of ``--web-access-log``: the default ``quiet`` logs a line per request except
the polls of ``QUIET_PATHS``."""
QUIET_PATHS = frozenset({b"/api/status", b"/healthz", b"/metrics"})
"""Paths that status pages, load balancers and Prometheus poll every few seconds."""

log = Logger()


class UnreadableForm(Exception):
    """A form body that cannot be read; the text says why."""


class BodyTooLarge(UnreadableForm):
    """A body longer than its reader takes."""


def _rawAnswer(status: int, phrase: str, error: str) -> bytes:
    """A whole HTTP answer with a JSON reason, for a request that will not be served."""
    body = json.dumps({"error": error}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedRequest(server.Request):
    """A request whose body may not pass its site's ``maxBody``; forms parsed on demand."""

    refused = False
    """Whether the body was refused; such a request is never served."""

    def __init__(self, channel: Any, *args: Any, **kw: Any):
        kw["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kw)
        self.bodyLength = 0
        self.formParsed = False
        self.fileNames: dict[bytes, list[str | None]] = {}
        """The file name of each value of a multipart form's fields (None for plain fields)."""

    @property
    def maxBody(self) -> int:
        return getattr(self.channel.site, "maxBody", MAX_BODY)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBody:
            # No "100 Continue" for a body that will not be read.
            self.requestHeaders.removeHeader(b"expect")
            self.refuseBody()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.bodyLength += len(data)
        if self.bodyLength > self.maxBody:
            self.refuseBody()
            return
        super().handleContentChunk(data)

    def refuseBody(self) -> None:
        """Answer ``413`` and close: nothing of this request is served."""
        if self.refused:
            return
        self.refused = True
        if self.content is not None:
            self.content.close()
        self.content = None
        address = self.getClientAddress()
        log.info(
            "Refused a request body of more than {limit} bytes from {address}",
            limit=self.maxBody,
            address=getattr(address, "host", str(address)),
        )
        error = f"the request body is larger than {self.maxBody} bytes (--web-max-body)"
        self.channel.transport.write(_rawAnswer(413, "Content Too Large", error))
        self.channel.transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        super().requestReceived(command, path, version)


def formFields(request: Any, limit: int | None = None) -> dict[bytes, list[bytes]]:
    """``request.args``, with the fields of a form body added on first use.

    Call it only once the request may act (its session checked): parsing is the
    costly part. ``limit`` refuses, with ``BodyTooLarge``, a body longer than
    it (before parsing it); a body that is not a readable form raises
    ``UnreadableForm``. A request that is not a ``LimitedRequest`` (one Twisted
    parsed already) is returned as it is.
    """
    if getattr(request, "formParsed", True):
        return request.args
    request.formParsed = True
    content = request.content
    if content is None or request.method != b"POST":
        return request.args
    content.seek(0, 2)
    size = content.tell()
    if limit is not None and size > limit:
        raise BodyTooLarge(f"the form is larger than {limit} bytes")
    content.seek(0)
    data = content.read()
    content.seek(0)
    kind = (request.getHeader(b"content-type") or b"").decode("latin-1").strip()
    media = kind.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        fields = _urlencoded(data)
    elif media == "multipart/form-data":
        fields, request.fileNames = _multipart(data, kind)
    else:
        return request.args
    for name, values in fields.items():
        request.args.setdefault(name, []).extend(values)
    return request.args


def _urlencoded(data: bytes) -> dict[bytes, list[bytes]]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UnreadableForm("the form is not URL-encoded text") from None
    fields = parse_qs(text, keep_blank_values=True, encoding="latin-1", errors="strict")
    return {k.encode("latin-1"): [v.encode("latin-1") for v in vs] for k, vs in fields.items()}


def _multipart(
    data: bytes, kind: str
) -> tuple[dict[bytes, list[bytes]], dict[bytes, list[str | None]]]:
    """The fields of a multipart body, and the file name that came with each value."""
    head = f"MIME-Version: 1.0\r\nContent-Type: {kind}\r\n\r\n".encode("latin-1", "replace")
    message = email.message_from_bytes(head + data)
    if not message.is_multipart():
        raise UnreadableForm("the form is not multipart/form-data with a boundary")
    fields: dict[bytes, list[bytes]] = {}
    names: dict[bytes, list[str | None]] = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        key = name.encode("utf-8")
        fields.setdefault(key, []).append(part.get_payload(decode=True) or b"")
        names.setdefault(key, []).append(part.get_filename())
    return fields, names


class LimitedChannel(http.HTTPChannel):
    """An ``HTTPChannel`` that gives each request ``site.requestTimeout`` seconds to arrive.

    The clock starts at the first byte of a request read from the network and
    stops once its body is complete; the time the server takes to answer, and
    the idle time between requests (Twisted's own timeout), are not counted.
    """

    _deadline: Any = None

    def _timeout(self) -> float:
        return getattr(self.site, "requestTimeout", REQUEST_TIMEOUT)

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest and self._timeout():
            self._deadline = self.callLater(self._timeout(), self._tooSlow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancelDeadline()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _tooSlow(self) -> None:
        self._deadline = None
        error = f"the request took longer than {self._timeout():g} s to arrive"
        log.info(
            "Closing a web connection whose request took longer than {timeout} s: {peer}",
            timeout=self._timeout(),
            peer=str(self.transport.getPeer()),
        )
        self.transport.write(_rawAnswer(408, "Request Timeout", error))
        self.timeoutConnection()


class LimitedSite(server.Site):
    """A ``Site`` of ``LimitedRequest`` on ``LimitedChannel``: see the module's docstring.

    ``accessLog`` is one of ``ACCESS_LOGS``: which requests get a line in the
    access log. ``timeout`` is Twisted's idle timeout of a connection (60 s by
    default).
    """

    requestFactory = LimitedRequest
    protocol = LimitedChannel

    def __init__(
        self,
        root: Any,
        *,
        maxBody: int = MAX_BODY,
        requestTimeout: float = REQUEST_TIMEOUT,
        accessLog: str = "quiet",
        **kw: Any,
    ):
        super().__init__(root, **kw)
        if accessLog not in ACCESS_LOGS:
            raise ValueError(f"accessLog must be one of {', '.join(ACCESS_LOGS)}")
        self.maxBody = maxBody
        self.requestTimeout = requestTimeout
        self.accessLog = accessLog
        self.displayTracebacks = False

    def log(self, request: Any) -> None:
        """One access-log line for ``request``, unless ``accessLog`` leaves it out."""
        if self.accessLog == "none":
            return
        if self.accessLog == "quiet" and request.path in QUIET_PATHS and request.code < 400:
            return
        super().log(request)
