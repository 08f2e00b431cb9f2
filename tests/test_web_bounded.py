"""Tests for the web endpoint's HTTP limits (licenseserver.web.bounded).

Requests go through a real ``LimitedSite`` and its channel into a
``StringTransport``; time is a ``Clock``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web import resource, server

from licenseserver.web.bounded import (
    BodyTooLarge,
    LimitedRequest,
    LimitedSite,
    UnreadableForm,
    formFields,
)

LIMIT = 1000


class Echo(resource.Resource):
    """Answers with the form fields it reads, and counts the requests it serves."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.served: list[Any] = []
        self.hold = False

    def render(self, request: server.Request) -> Any:
        self.served.append(request)
        if self.hold:
            return server.NOT_DONE_YET
        try:
            fields = formFields(request)
        except UnreadableForm as e:
            request.setResponseCode(400)
            return str(e).encode()
        return json.dumps(
            {k.decode(): [v.decode() for v in vs] for k, vs in sorted(fields.items())}
        ).encode()


class LimitTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.echo = Echo()
        self.site = LimitedSite(self.echo, maxBody=LIMIT, requestTimeout=60, reactor=self.clock)

    def connect(self) -> tuple[Any, StringTransport]:
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8088),
            peerAddress=IPv4Address("TCP", "10.0.0.1", 40000),
        )
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        return channel, transport

    def status(self, transport: StringTransport) -> int:
        line = transport.value().split(b"\r\n", 1)[0]
        return int(line.split()[1]) if line else 0

    def body(self, transport: StringTransport) -> bytes:
        return transport.value().partition(b"\r\n\r\n")[2]


class BodyTests(LimitTestCase):
    def test_declaredTooLarge(self):
        """A Content-Length over the limit gets 413 with a JSON reason at once, no
        "100 Continue", and the connection is closed; the request is never served."""
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % (LIMIT + 1)
        )
        self.assertEqual(self.status(transport), 413)
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertIn("larger than 1000 bytes", json.loads(self.body(transport))["error"])
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(b"x" * (LIMIT + 1))
        self.assertEqual(self.echo.served, [])

    def test_chunkedTooLarge(self):
        """A chunked body is cut off with 413 as soon as it passes the limit."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        self.assertEqual(transport.value(), b"", "1000 bytes are within the limit")
        channel.dataReceived(b"1\r\nx\r\n")
        self.assertEqual(self.status(transport), 413)
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(b"0\r\n\r\n")
        self.assertEqual(self.echo.served, [])

    def test_atTheLimit(self):
        """A body of exactly the limit is served."""
        channel, transport = self.connect()
        body = b"a=" + b"b" * (LIMIT - 2)
        channel.dataReceived(
            b"POST /x HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        self.assertEqual(self.status(transport), 200)
        self.assertEqual(json.loads(self.body(transport)), {"a": ["b" * (LIMIT - 2)]})


class FormTests(LimitTestCase):
    def post(self, content_type: bytes, body: bytes, hold: bool = True) -> LimitedRequest:
        self.echo.hold = hold
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /x?q=1 HTTP/1.0\r\nContent-Type: " + content_type + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        (request,) = self.echo.served
        return request

    def test_notParsedUntilAsked(self):
        """A form body is not parsed before the page asks for it; the query is."""
        request = self.post(b"application/x-www-form-urlencoded", b"a=1&b=2")
        self.assertEqual(request.args, {b"q": [b"1"]})
        self.assertEqual(formFields(request), {b"q": [b"1"], b"a": [b"1"], b"b": [b"2"]})
        self.assertIs(formFields(request), request.args, "parsed once")

    def test_multipart(self):
        """Multipart fields and files are read, each under its name."""
        body = (
            b'--B\r\nContent-Disposition: form-data; name="action"\r\n\r\nupload\r\n'
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.lic"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n\x00\xff{}\r\n--B--\r\n"
        )
        request = self.post(b"multipart/form-data; boundary=B", body)
        fields = formFields(request)
        self.assertEqual(fields[b"action"], [b"upload"])
        self.assertEqual(fields[b"file"], [b"\x00\xff{}"])

    def test_unreadable(self):
        """A multipart body without a boundary, or a form that is not ASCII, will not do."""
        request = self.post(b"multipart/form-data", b"--B\r\n\r\n")
        self.assertRaises(UnreadableForm, formFields, request)
        self.echo.served.clear()
        request = self.post(b"application/x-www-form-urlencoded", b"a=\xff")
        self.assertRaises(UnreadableForm, formFields, request)

    def test_ownLimit(self):
        """A page may take less than the site does: a longer body is BodyTooLarge."""
        request = self.post(b"application/x-www-form-urlencoded", b"a=" + b"b" * 100)
        self.assertRaises(BodyTooLarge, formFields, request, 50)
        self.assertEqual(request.args, {b"q": [b"1"]})


class DeadlineTests(LimitTestCase):
    def test_tricklingHeadClosed(self):
        """A head sent a byte a second gets 408 and is closed once the request timeout
        has passed, though each byte restarts Twisted's own idle timeout."""
        channel, transport = self.connect()
        head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"p" * 200
        for number, byte in enumerate(head[:60]):
            self.assertFalse(transport.disconnecting, number)
            channel.dataReceived(bytes([byte]))
            self.clock.advance(1)
        self.assertEqual(self.status(transport), 408)
        self.assertIn("longer than 60 s", json.loads(self.body(transport))["error"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.echo.served, [])

    def test_tricklingBodyClosed(self):
        """The body counts too: the whole request must arrive within the timeout."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        for _ in range(60):
            channel.dataReceived(b"x")
            self.clock.advance(1)
        self.assertEqual(self.status(transport), 408)
        self.assertEqual(self.echo.served, [])

    def test_answerTimeNotCounted(self):
        """Time the server takes to answer, and idle time between requests, do not count
        against the next request."""
        self.echo.hold = True
        channel, transport = self.connect()
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        self.clock.advance(59)
        (request,) = self.echo.served
        request.write(b"ok")
        request.finish()
        self.clock.advance(30)
        channel.dataReceived(b"GET /b HTTP/1.1\r\n")
        self.clock.advance(59)
        channel.dataReceived(b"Host: a\r\n\r\n")
        self.assertEqual(len(self.echo.served), 2)
        self.assertNotIn(b" 408 ", transport.value())
        self.assertFalse(transport.disconnecting)


class AccessLogTests(unittest.TestCase):
    def logged(self, accessLog: str) -> list[str]:
        """The paths that get an access-log line, of four requests."""
        clock = Clock()
        site = LimitedSite(Echo(), accessLog=accessLog, reactor=clock)
        site.startFactory()
        self.addCleanup(site.stopFactory)
        lines = io.StringIO()
        site.logFile = lines
        for path in (b"/api/status", b"/healthz", b"/metrics", b"/pool"):
            channel = site.buildProtocol(None)
            channel.makeConnection(StringTransport())
            channel.dataReceived(b"GET " + path + b" HTTP/1.0\r\n\r\n")
        return [line.split('"')[3].split()[1] for line in lines.getvalue().splitlines()]

    def test_quietByDefault(self):
        """By default the polls of status pages and Prometheus get no line; others do."""
        self.assertEqual(self.logged("quiet"), ["/pool"])

    def test_allAndNone(self):
        """``all`` logs every request, ``none`` none."""
        self.assertEqual(self.logged("all"), ["/api/status", "/healthz", "/metrics", "/pool"])
        self.assertEqual(self.logged("none"), [])

    def test_unknownMode(self):
        """Another mode is refused when the site is made."""
        self.assertRaises(ValueError, LimitedSite, Echo(), accessLog="some")
