"""A small blocking client of the licensing protocol, written from the protocol page alone.

It shares nothing with the server: it formats request lines, parses response lines and
talks over a plain socket by itself, so that the integration tests can show that a client
built from the specification works against the real server.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field

KEY = re.compile(r"[a-z][a-z0-9_]*\Z")
VERB = re.compile(r"[A-Z]+\Z")
_JSON = json.JSONDecoder()


class ProtocolError(Exception):
    """The server sent a line that is not a well-formed response."""


class ConnectionClosedError(Exception):
    """The server closed the connection where a line was expected."""


def isBare(value: str) -> bool:
    """Can this value be sent without quotes?"""
    return value != "" and value.isprintable() and " " not in value and '"' not in value


def formatValue(value: object) -> str:
    """A value as it goes on the wire: bare when allowed, else a quoted JSON string."""
    text = str(value)
    if isBare(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def formatLine(verb: str, *pairs: tuple[str, object], **args: object) -> bytes:
    """One request line, LF included, as UTF-8 bytes.

    Arguments come from ``pairs`` (in order, repeats allowed: that is how a test sends a
    repeated key) followed by ``args``. A value of None leaves the argument out.
    """
    if not VERB.match(verb):
        raise ValueError(f"not a verb: {verb!r}")
    parts = [verb]
    for key, value in [*pairs, *args.items()]:
        if value is None:
            continue
        if not KEY.match(key):
            raise ValueError(f"not a key: {key!r}")
        parts.append(f"{key}={formatValue(value)}")
    return (" ".join(parts) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Response:
    """One parsed response line."""

    line: str
    ok: bool
    code: int | None = None
    reason: str | None = None
    args: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.args[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.args.get(key, default)

    def __str__(self) -> str:
        return self.line


def _parseArgs(text: str, line: str) -> dict[str, str]:
    args: dict[str, str] = {}
    pos = 0
    end = len(text)
    while pos < end:
        if text[pos] == " ":
            pos += 1
            continue
        equals = text.find("=", pos)
        if equals < 0:
            raise ProtocolError(f"argument without '=' in {line!r}")
        key = text[pos:equals]
        if not KEY.match(key):
            raise ProtocolError(f"bad key {key!r} in {line!r}")
        pos = equals + 1
        if pos < end and text[pos] == '"':
            try:
                value, pos = _JSON.raw_decode(text, pos)
            except ValueError as e:
                raise ProtocolError(f"bad quoted value in {line!r}: {e}") from None
            if not isinstance(value, str):
                raise ProtocolError(f"quoted value is not a string in {line!r}")
            if pos < end and text[pos] != " ":
                raise ProtocolError(f"junk after a quoted value in {line!r}")
        else:
            stop = text.find(" ", pos)
            if stop < 0:
                stop = end
            value = text[pos:stop]
            if value == "" or '"' in value:
                raise ProtocolError(f"bad bare value for {key!r} in {line!r}")
            pos = stop
        if key in args:
            raise ProtocolError(f"repeated key {key!r} in {line!r}")
        args[key] = value
    return args


def parseResponse(line: str) -> Response:
    """Parse ``OK k=v...`` or ``ERR <code> <reason> k=v...``."""
    if line == "OK" or line.startswith("OK "):
        return Response(line=line, ok=True, args=_parseArgs(line[2:], line))
    if line.startswith("ERR "):
        head = line.split(" ", 3)
        if len(head) < 3 or not head[1].isdigit():
            raise ProtocolError(f"bad error line {line!r}")
        code, reason = int(head[1]), head[2]
        if not re.match(r"[a-z][a-z0-9-]*\Z", reason):
            raise ProtocolError(f"bad reason {reason!r} in {line!r}")
        rest = head[3] if len(head) == 4 else ""
        return Response(line=line, ok=False, code=code, reason=reason, args=_parseArgs(rest, line))
    raise ProtocolError(f"not a response: {line!r}")


class PlainClient:
    """One connection to the licensing port, used from one thread with blocking calls."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.timeout = timeout
        self._buffer = b""
        self._eof = False
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- writing

    def sendRaw(self, data: bytes) -> None:
        """Send bytes as they are."""
        self.sock.sendall(data)

    def send(self, verb: str, *pairs: tuple[str, object], **args: object) -> None:
        """Send one request without waiting for its answer (for pipelining)."""
        self.sendRaw(formatLine(verb, *pairs, **args))

    def sendMany(self, *requests: tuple[str, dict[str, object]]) -> None:
        """Send several requests in a single write."""
        self.sendRaw(b"".join(formatLine(verb, **args) for verb, args in requests))

    # -- reading

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete line from the server in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            raise TimeoutError("no complete line from the server in time") from None
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def readLine(self, timeout: float | None = None) -> str | None:
        """The next line from the server without its LF, or None when the stream ended."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            if self._eof or not self._fill(deadline):
                if self._buffer:
                    raise ProtocolError(f"stream ended inside a line: {self._buffer!r}")
                return None
        raw, self._buffer = self._buffer.split(b"\n", 1)
        if raw.endswith(b"\r"):
            raise ProtocolError(f"the server ends its lines with LF only: {raw!r}")
        return raw.decode("utf-8")

    def read(self, timeout: float | None = None) -> Response:
        """The next response; ConnectionClosedError if the server closed the connection."""
        line = self.readLine(timeout)
        if line is None:
            raise ConnectionClosedError("the server closed the connection")
        return parseResponse(line)

    def readMany(self, count: int, timeout: float | None = None) -> list[Response]:
        """The next ``count`` responses, in order."""
        return [self.read(timeout) for _ in range(count)]

    def request(self, verb: str, *pairs: tuple[str, object], **args: object) -> Response:
        """Send one request and read its response."""
        self.send(verb, *pairs, **args)
        return self.read()

    def waitClosed(self, timeout: float | None = None) -> bytes:
        """Wait until the server closes the connection; return what it sent before that.

        Raises TimeoutError if it is still open when the timeout passes.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._eof:
            self._fill(deadline)
        rest, self._buffer = self._buffer, b""
        return rest

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> PlainClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ResponseAssertions:
    """``assertOK`` and ``assertErr`` for a ``unittest.TestCase`` that reads responses."""

    def assertOK(self, response: Response, *keys: str) -> Response:
        """``response`` is ``OK`` and carries each of ``keys``."""
        self.assertTrue(response.ok, f"expected OK, got {response.line!r}")
        for key in keys:
            self.assertIn(key, response.args, f"no {key}= in {response.line!r}")
        return response

    def assertErr(self, response: Response, code: int, reason: str) -> Response:
        """``response`` is ``ERR <code> <reason>``."""
        self.assertFalse(response.ok, f"expected ERR {code} {reason}, got {response.line!r}")
        self.assertEqual((response.code, response.reason), (code, reason), response.line)
        return response
