"""Parse and format the lines of the licensing protocol: pure functions.

This module is the one place where the protocol's syntax, its verbs, and its
error codes and reasons are written down. It knows nothing about sockets or
the server's state: it turns bytes into ``Request``/``Response`` values and
back, and raises ``ProtocolError`` for lines it cannot understand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_LINE = 8192
"""Longest request line in bytes, the LF included."""

MAX_DIGITS = 18
"""Most digits of an integer argument, in requests and in answers.

Every number the protocol carries (cores, days, revisions, a count of lines, a
Unix time) fits with room to spare. A longer run of digits is refused before it
is converted: ``int()`` takes time that grows with the square of the length,
and Python refuses more than 4300 digits with an error of its own.
"""

MAX_INTEGER = 10**MAX_DIGITS - 1
"""The largest integer argument: ``MAX_DIGITS`` nines."""

CLIENT_VERBS = frozenset(
    {"PING", "STATUS", "HELLO", "CHECKOUT", "HEARTBEAT", "RELEASE", "BORROW", "QUIT"}
)
PEER_VERBS = frozenset({"PEER", "AUTH", "BEAT", "SYNC", "MERGE", "USAGE"})
VERBS = CLIENT_VERBS | PEER_VERBS

REASONS: dict[str, int] = {
    "bad-request": 400,
    "unknown-command": 400,
    "hello-required": 401,
    "client-too-old": 403,
    "not-assigned": 403,
    "insufficient-cores": 403,
    "borrow-disabled": 403,
    "policy-denied": 403,
    "not-authorized": 403,
    "unknown-lease": 404,
    "no-license": 404,
    "no-seats": 409,
    "already-paired": 409,
    "revoked": 410,
    "line-too-long": 413,
    "version-mismatch": 426,
    "too-many-connections": 429,
    "rate-limited": 429,
    "internal-error": 500,
    "standby": 503,
}
"""Every error reason of the protocol, with its code."""

_VERB = re.compile(r"[A-Z]+\Z")
_WORD = re.compile(r"[A-Za-z]+\Z")
_KEY = re.compile(r"[a-z][a-z0-9_]*\Z")
_CODE = re.compile(r"[0-9]{3}\Z")
_REASON = re.compile(r"[a-z][a-z0-9-]*\Z")


class ProtocolError(Exception):
    """An ``ERR`` answer: a code, a stable reason, arguments and a message.

    Raised where a request cannot be served; the protocol turns it into one
    ``ERR`` line, and closes the connection after it when ``closes`` is set.
    ``code`` is taken from ``REASONS``.
    """

    def __init__(
        self, reason: str, message: str | None = None, *, closes: bool = False, **args: object
    ):
        super().__init__(reason, message)
        self.reason = reason
        self.code = REASONS[reason]
        self.message = message
        self.closes = closes
        self.args_ = {k: str(v) for k, v in args.items()}

    def __str__(self) -> str:
        return f"{self.code} {self.reason}" + (f": {self.message}" if self.message else "")

    def toLine(self) -> bytes:
        """This error as a response line."""
        return format_error(self.code, self.reason, self.args_, self.message)


@dataclass(frozen=True)
class Request:
    """One request line: its verb and its ``key=value`` arguments."""

    verb: str
    args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """One response line: ``OK`` with arguments, or ``ERR`` code and reason."""

    ok: bool
    args: dict[str, str] = field(default_factory=dict)
    code: int = 0
    reason: str = ""


def decode_line(line: bytes) -> str:
    """Decode one line without its LF: drop a final CR, require UTF-8."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad-request", "the line is not valid UTF-8") from None


def _tokens(text: str) -> list[tuple[str, str | None]]:
    """Split ``text`` into words: ``(key, value)`` pairs or ``(word, None)``.

    A line without quotes (nearly every line clients send) takes a quick path
    that splits on spaces; the result is the same as the scan's.
    """
    if '"' not in text:
        return [_bare_word(word) for word in text.split(" ") if word]
    return _scan_tokens(text)


def _bare_word(word: str) -> tuple[str, str | None]:
    key, eq, value = word.partition("=")
    if not eq:
        return word, None
    if not _is_bare(value):
        raise ProtocolError("bad-request", "a value is empty or has characters to quote")
    return key, value


def _scan_tokens(text: str) -> list[tuple[str, str | None]]:
    """``_tokens`` for a line with quotes: read it a character at a time.

    Words are separated by one or more spaces. A quoted value runs to the
    next unescaped ``"`` and is decoded as a JSON string.
    """
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        eq = _find_word_end_or_eq(text, i)
        if eq < n and text[eq] == "=":
            key = text[i:eq]
            value, i = _value(text, eq + 1)
            out.append((key, value))
        else:
            out.append((text[i:eq], None))
            i = eq
        if i < n and text[i] != " ":
            raise ProtocolError("bad-request", "expected a space between arguments")
    return out


def _find_word_end_or_eq(text: str, start: int) -> int:
    """Index of the first ``=`` or space at or after ``start`` (or the end)."""
    i = start
    while i < len(text) and text[i] not in "= ":
        i += 1
    return i


def _value(text: str, start: int) -> tuple[str, int]:
    """Read a bare or quoted value at ``start``; return it and its end index."""
    n = len(text)
    if start < n and text[start] == '"':
        i = start + 1
        while i < n and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= n:
            raise ProtocolError("bad-request", "a quoted value is not closed")
        try:
            value = json.loads(text[start : i + 1])
            value.encode("utf-8")
        except ValueError:
            raise ProtocolError("bad-request", "a quoted value is not a JSON string") from None
        return value, i + 1
    i = start
    while i < n and text[i] != " ":
        i += 1
    value = text[start:i]
    if not _is_bare(value):
        raise ProtocolError("bad-request", "a value is empty or has characters to quote")
    return value, i


def _is_bare(value: str) -> bool:
    """Whether ``value`` may be written without quotes."""
    return bool(value) and value.isprintable() and " " not in value and '"' not in value


def _arguments(words: list[tuple[str, str | None]]) -> dict[str, str]:
    """The ``key=value`` words as a dict; reject bad keys and repeats."""
    args: dict[str, str] = {}
    for key, value in words:
        if value is None:
            raise ProtocolError("bad-request", f"expected key=value, got {key[:40]!r}")
        if not _KEY.match(key):
            raise ProtocolError("bad-request", f"bad argument name {key[:40]!r}")
        if key in args:
            raise ProtocolError("bad-request", f"argument {key} given twice")
        args[key] = value
    return args


def parse_request(line: bytes, verbs: frozenset[str] = VERBS) -> Request | None:
    """Parse a request line (without its LF); None for an empty line.

    Raises ``ProtocolError`` with ``unknown-command`` for a word that is not
    one of ``verbs``, and ``bad-request`` for anything else malformed.

    The lines clients send are nearly all a known verb and a few bare
    ``key=value`` words, so those take a path that splits on spaces and
    checks each word once; anything else (quotes, an odd verb, a malformed
    word) takes the full scan, which raises the right error.
    """
    text = decode_line(line)
    if text == "":
        return None
    verb, _, rest = text.partition(" ")
    if verb in verbs:
        if not rest:
            return Request(verb, {})
        if '"' not in rest:
            args = _bare_arguments(rest)
            if args is not None:
                return Request(verb, args)
    elif not _VERB.match(verb):
        if _WORD.match(verb):
            raise ProtocolError("unknown-command", f"unknown command {verb[:40]!r}")
        raise ProtocolError("bad-request", "a request starts with a command word")
    else:
        raise ProtocolError("unknown-command", f"unknown command {verb[:40]!r}")
    return Request(verb, _arguments(_tokens(rest)))


_KNOWN_KEYS = frozenset(
    {"product", "version", "host", "machine", "user", "cores", "edition", "request", "lease"}
    | {"days", "name", "listen", "proof", "revision", "since"}
)
"""Argument names of the protocol's requests, known to be well formed."""


def _bare_arguments(rest: str) -> dict[str, str] | None:
    """The arguments of ``rest`` when every word is a good, bare, first ``key=value``;
    None when any is not (the full scan then says what is wrong)."""
    args: dict[str, str] = {}
    for word in rest.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if (
            not eq
            or not value
            or key in args
            or not (key in _KNOWN_KEYS or _KEY.match(key))
            or not value.isprintable()
        ):
            return None
        args[key] = value
    return args


def parse_integer(text: str) -> int | None:
    """``text`` as a whole number: 1 to ``MAX_DIGITS`` ASCII digits; None when it is not one."""
    if 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def integer_arg(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """The integer argument ``name`` within ``low..high``, or ``default`` when it is absent.

    Raises ``ProtocolError`` (``bad-request``) for anything else, a run of more
    than ``MAX_DIGITS`` digits included.
    """
    value = args.get(name)
    if value is None:
        return default
    number = parse_integer(value)
    if number is None or not low <= number <= high:
        raise ProtocolError("bad-request", f"{name} must be an integer from {low} to {high}")
    return number


def parse_response(line: bytes) -> Response:
    """Parse a response line (without its LF).

    Raises ``ValueError`` (a ``ProtocolError``) for a line that is neither a
    well-formed ``OK`` nor a well-formed ``ERR``.
    """
    text = decode_line(line)
    head, _, rest = text.partition(" ")
    if head == "OK":
        return Response(True, _arguments(_tokens(rest)))
    if head == "ERR":
        code, _, rest = rest.partition(" ")
        reason, _, rest = rest.partition(" ")
        if not _CODE.match(code) or not _REASON.match(reason):
            raise ProtocolError("bad-request", "ERR needs a code and a reason")
        return Response(False, _arguments(_tokens(rest)), int(code), reason)
    raise ProtocolError("bad-request", "a response starts with OK or ERR")


def format_value(value: object) -> str:
    """A value as it goes on the wire: bare when it can be, quoted otherwise."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if _is_bare(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _format_args(args: dict[str, object]) -> str:
    parts = []
    for key, value in args.items():
        if key not in _KNOWN_ANSWER_KEYS and not _KEY.match(key):
            raise ValueError(f"bad argument name {key!r}")
        if type(value) is int:
            parts.append(f" {key}={value}")
        else:
            parts.append(f" {key}={format_value(value)}")
    return "".join(parts)


_KNOWN_ANSWER_KEYS = frozenset(
    {"lease", "license", "licenses", "kind", "expires", "ttl", "server", "role", "state"}
    | {"version", "edition", "client", "primary", "failover", "heartbeat", "message"}
)
"""Argument names of the server's answers, known to be well formed."""


def format_request(verb: str, args: dict[str, object] | None = None) -> bytes:
    """A request line, LF included."""
    if not _VERB.match(verb):
        raise ValueError(f"bad verb {verb!r}")
    return f"{verb}{_format_args(args or {})}\n".encode()


def format_ok(args: dict[str, object] | None = None) -> bytes:
    """An ``OK`` response line, LF included."""
    return f"OK{_format_args(args or {})}\n".encode()


def format_error(
    code: int, reason: str, args: dict[str, object] | None = None, message: str | None = None
) -> bytes:
    """An ``ERR`` response line, LF included; ``message`` goes last."""
    all_args = dict(args or {})
    if message is not None:
        all_args["message"] = message
    return f"ERR {code} {reason}{_format_args(all_args)}\n".encode()


MAX_MACHINE = 128
"""Longest ``machine`` id: the protocol's own limit."""

MAX_TEXT = 1024
"""Longest other text value (product, host, user, edition, request, peer names).

The protocol names no limit for them beyond the line's 8192 bytes; this one
keeps what the pool and the store hold in proportion while leaving room for
any real name (a host name has at most 253 characters)."""


def text_arg(
    args: Mapping[str, str],
    name: str,
    *,
    required: bool,
    default: str = "",
    limit: int = MAX_TEXT,
) -> str:
    """An argument of 1 to ``limit`` printable characters."""
    value = args.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad-request", f"{name}= is required")
        return default
    if not (1 <= len(value) <= limit) or not value.isprintable():
        raise ProtocolError("bad-request", f"{name} must be 1 to {limit} printable characters")
    return value


def lease_arg(args: Mapping[str, str]) -> str:
    """The required ``lease`` argument, as given: any id the server does not hold is
    ``unknown-lease`` (checked where it is looked up), however long or odd."""
    value = args.get("lease")
    if value is None:
        raise ProtocolError("bad-request", "lease= is required")
    return value
