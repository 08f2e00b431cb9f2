"""Who is the admin: HTTP Basic with user ``admin`` and the admin password, or a session.

Checking a password runs scrypt, which is slow on purpose, so it runs in the
reactor's thread pool. A password that verified is remembered (as an HMAC
under a key that lives only in this process) until the stored hash changes,
so an API script does not pay scrypt on every request. Password checks that
come with a request go through the login throttle of the request's client
address, so guesses slow down whether they come as Basic credentials or from
the login form.

A browser that logged in on ``/login`` holds a session cookie instead
(``sessions.py``); with it, requests that change state must also carry the
session's CSRF token in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import threads

from licenseserver.passwords import verify_password
from licenseserver.web.sessions import CSRF_HEADER, SessionStore
from licenseserver.web.throttle import LoginThrottle, Throttled

SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")
"""Methods that change nothing: a session needs no CSRF token for them."""


def clientAddress(request: Any) -> str:
    """The client's address, as the login throttle keys it."""
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


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
    ):
        self.reactor = reactor
        self.readHash = readHash
        self.sessions = sessions if sessions is not None else SessionStore(reactor)
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)
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

    async def checkFrom(self, request: Any, password: str) -> bool:
        """Whether ``password`` is the admin password, checked under the login throttle.

        Raises ``Throttled`` when too many checks from the request's address wait.
        """
        return await self.throttle.check(clientAddress(request), lambda: self.check(password))

    async def isAdmin(self, request: Any) -> bool:
        """Whether the request may act as the admin (see ``refusal``)."""
        return await self.refusal(request) is None

    async def refusal(self, request: Any) -> tuple[int, str] | None:
        """Why the request may not act as the admin: ``(status, message)``; None when it may.

        Basic credentials, when present, decide alone (401 when wrong, 429 when
        too many guesses wait). Otherwise a live session cookie admits the
        request; one that changes state must carry the session's CSRF token
        (403 without it).
        """
        if request.getHeader(b"authorization") is not None:
            try:
                if await self._basicOK(request):
                    return None
            except Throttled as e:
                return 429, str(e)
            return 401, "admin password required"
        session = self.sessions.fromRequest(request)
        if session is None:
            return 401, "admin password required"
        if request.method not in SAFE_METHODS and not session.csrfMatches(
            request.getHeader(CSRF_HEADER)
        ):
            return 403, "a browser session needs the page's CSRF token (X-CSRF-Token)"
        return None

    async def _basicOK(self, request: Any) -> bool:
        user = request.getUser()
        password = request.getPassword()
        if user != b"admin" or not password:
            return False
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return await self.checkFrom(request, text)
