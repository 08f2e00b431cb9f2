"""Who is the admin: HTTP Basic with user ``admin`` and the admin password.

Checking a password runs scrypt, which is slow on purpose, so it runs in the
reactor's thread pool. A password that verified is remembered (as an HMAC
under a key that lives only in this process) until the stored hash changes,
so an API script does not pay scrypt on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import threads

from licenseserver.passwords import verify_password


class AdminAuth:
    """Checks admin credentials against the stored hash that ``readHash`` returns."""

    def __init__(self, reactor: Any, readHash: Callable[[], str]):
        self.reactor = reactor
        self.readHash = readHash
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

    async def isAdmin(self, request: Any) -> bool:
        """Whether the request carries the admin's Basic credentials."""
        user = request.getUser()
        password = request.getPassword()
        if user != b"admin" or not password:
            return False
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return await self.check(text)
