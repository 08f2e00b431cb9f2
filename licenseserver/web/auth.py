"""Who is the admin: HTTP Basic with user ``admin`` and the admin password, or a session.

Checking a password runs scrypt, which is slow on purpose, so it runs in the
reactor's thread pool. A password that verified is remembered (as an HMAC
under a key that lives only in this process) until the stored hash changes,
so an API script does not pay scrypt on every request. Password checks that
come with a request go through the login throttle (``throttle.py``) of the
request's client address, so guesses slow down whether they come as Basic
credentials or from the login form; a guess that comes too early is refused
at once with ``429`` and ``Retry-After``. Repeated wrong passwords from one
address are logged and recorded in Messages (``reportGuessing``).

A browser that logged in on ``/login`` holds a session cookie instead
(``sessions.py``); with it, requests that change state must also carry the
session's CSRF token in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.logger import Logger

from licenseserver.passwords import verify_password
from licenseserver.web.sessions import CSRF_HEADER, SessionStore
from licenseserver.web.throttle import LoginThrottle, Throttled

SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")
"""Methods that change nothing: a session needs no CSRF token for them."""

log = Logger()


@dataclass(frozen=True)
class Refusal:
    """Why a request may not act as the admin: its HTTP status and message."""

    status: int
    message: str
    retryAfter: int | None = None
    """Seconds for ``Retry-After``, with a ``429``."""


def reportGuessing(role: Any) -> Callable[[str, int], None]:
    """The throttle's ``onFailures``: log repeated wrong passwords and record them in Messages."""

    def report(key: str, failures: int) -> None:
        message = f"{failures} wrong admin passwords in a row from {key}"
        log.warn("{message}", message=message)
        role.record("admin-password-guessing", "warning", message, source=key, failures=failures)

    return report


def clientAddress(request: Any) -> str:
    """The client's address, as the login throttle keys it."""
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def admin_of(request: Any, via: str) -> dict[str, str]:
    """Who asked for an admin change, for the audit log: the admin (the one admin user),
    through ``via`` (``api`` or ``web``), from the request's address."""
    return {"by": "admin", "via": via, "address": clientAddress(request)}


class AdminAuth:
    """Checks admin credentials against the stored hash that ``readHash`` returns.

    ``sessions`` and ``throttle`` default to ones on ``reactor``'s clock.
    """

    def __init__(
        self,
        reactor: Any,
        readHash: Callable[[], str],
        *,
        sessions: SessionStore | None = None,
        throttle: LoginThrottle | None = None,
        onFailures: Callable[[str, int], None] | None = None,
    ):
        self.reactor = reactor
        self.readHash = readHash
        self.sessions = sessions if sessions is not None else SessionStore(reactor)
        if throttle is None:
            throttle = LoginThrottle(reactor, onFailures=onFailures)
        self.throttle = throttle
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, set[bytes]] = {}

    async def check(self, password: str) -> bool:
        """Whether ``password`` is the admin password."""
        stored = self.readHash()
        tag = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        known = self._verified.get(stored, set())
        if tag in known:
            return True
        ok = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), verify_password, password, stored
        )
        if ok:
            self._verified = {stored: known | {tag}}
        return ok

    async def checkFrom(self, request: Any, password: str, key: str | None = None) -> bool:
        """Whether ``password`` is the admin password, checked under the login throttle.

        The throttle counts wrong passwords by ``key``, the request's client
        address unless given. Raises ``Throttled`` when the key must wait.
        """
        key = key if key is not None else clientAddress(request)
        return await self.throttle.check(key, lambda: self.check(password))

    async def isAdmin(self, request: Any) -> bool:
        """Whether the request may act as the admin (see ``refusal``)."""
        return await self.refusal(request) is None

    async def refusal(self, request: Any) -> Refusal | None:
        """Why the request may not act as the admin; None when it may.

        Basic credentials, when present, decide alone (``401 wrong password``,
        or ``429`` at once while the address must wait after wrong ones).
        Otherwise a live session cookie admits the request; one that changes
        state must carry the session's CSRF token (403 without it).
        """
        if request.getHeader(b"authorization") is not None:
            if request.getUser() != b"admin":
                return Refusal(401, "the user name must be admin")
            try:
                if await self._basicOK(request):
                    return None
            except Throttled as e:
                return Refusal(429, str(e), e.retryAfter)
            return Refusal(401, "wrong password")
        session = self.sessions.fromRequest(request)
        if session is None:
            return Refusal(401, "admin password required")
        if request.method not in SAFE_METHODS and not session.csrfMatches(
            request.getHeader(CSRF_HEADER)
        ):
            return Refusal(403, "a browser session needs the page's CSRF token (X-CSRF-Token)")
        return None

    async def _basicOK(self, request: Any) -> bool:
        password = request.getPassword()
        if not password:
            return False
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return await self.checkFrom(request, text)
