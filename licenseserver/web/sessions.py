"""Admin browser sessions: random ids in memory, a cookie, and a CSRF token each.

``POST /login`` with the admin password starts a session: a random id that
the browser keeps in the ``licenseserver_session`` cookie (``HttpOnly``,
``SameSite=Strict``, ``Path=/``, and ``Secure`` when the page came over
TLS). Each session has its own random CSRF token, which every page puts in
its forms; a form or API call that changes something must send it back.
A session ends at logout, after ``idle`` seconds without a request, and
``lifetime`` seconds after it began at the latest. Sessions live in this
process only: a restart logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

COOKIE = b"licenseserver_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = b"x-csrf-token"
BACKGROUND_HEADER = b"x-background"
"""Set by the status script: such a request does not keep a session alive."""

IDLE = 8 * 3600
LIFETIME = 7 * 86400


@dataclass
class AdminSession:
    """One logged-in browser."""

    id: str
    csrf: str
    started: float
    expires: float
    notices: list[tuple[str, str]] = field(default_factory=list)
    """Messages for the next page shown: (``ok`` or ``error``, text)."""

    def notify(self, kind: str, text: str) -> None:
        self.notices.append((kind, text))
        del self.notices[:-10]

    def takeNotices(self) -> list[tuple[str, str]]:
        notices, self.notices = self.notices, []
        return notices

    def csrfMatches(self, token: str | bytes | None) -> bool:
        """Whether ``token`` is this session's CSRF token (compared in constant time)."""
        if token is None:
            return False
        if isinstance(token, str):
            token = token.encode("utf-8", "replace")
        return hmac.compare_digest(token, self.csrf.encode("ascii"))


class SessionStore:
    """The sessions of one web site, on ``clock``."""

    def __init__(
        self, clock: Any, *, idle: float = IDLE, lifetime: float = LIFETIME, maximum: int = 1000
    ):
        self.clock = clock
        self.idle = idle
        self.lifetime = lifetime
        self.maximum = maximum
        self._sessions: dict[str, AdminSession] = {}

    def __len__(self) -> int:
        self._prune()
        return len(self._sessions)

    def start(self) -> AdminSession:
        """A new session (the oldest is dropped when ``maximum`` are open)."""
        self._prune()
        while len(self._sessions) >= self.maximum:
            oldest = min(self._sessions.values(), key=lambda s: s.started)
            del self._sessions[oldest.id]
        now = self.clock.seconds()
        session = AdminSession(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            started=now,
            expires=now + self.idle,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | bytes | None, *, touch: bool = True) -> AdminSession | None:
        """The live session of ``session_id``; ``touch`` restarts its idle time."""
        if not session_id:
            return None
        if isinstance(session_id, bytes):
            session_id = session_id.decode("ascii", "replace")
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if now >= session.expires or now >= session.started + self.lifetime:
            del self._sessions[session_id]
            return None
        if touch:
            session.expires = min(now + self.idle, session.started + self.lifetime)
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def endAllBut(self, keep: AdminSession | None) -> None:
        """End every session except ``keep`` (after a password change)."""
        self._sessions = {keep.id: keep} if keep is not None else {}

    def _prune(self) -> None:
        now = self.clock.seconds()
        dead = [
            sid
            for sid, s in self._sessions.items()
            if now >= s.expires or now >= s.started + self.lifetime
        ]
        for sid in dead:
            del self._sessions[sid]

    # The cookie

    def fromRequest(self, request: Any) -> AdminSession | None:
        """The session whose cookie ``request`` carries, if it is live."""
        background = request.getHeader(BACKGROUND_HEADER) is not None
        return self.get(request.getCookie(COOKIE), touch=not background)

    def setCookie(self, request: Any, session: AdminSession) -> None:
        _addCookie(request, session.id.encode("ascii"))

    def clearCookie(self, request: Any) -> None:
        _addCookie(request, b"", b"Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")


def _addCookie(request: Any, value: bytes, extra: bytes = b"") -> None:
    """Set the session cookie: ``HttpOnly; SameSite=Strict; Path=/`` (and ``Secure`` on TLS)."""
    parts = [COOKIE + b"=" + value, b"Path=/"]
    if extra:
        parts.append(extra)
    if request.isSecure():
        parts.append(b"Secure")
    parts += [b"HttpOnly", b"SameSite=Strict"]
    request.cookies.append(b"; ".join(parts))
