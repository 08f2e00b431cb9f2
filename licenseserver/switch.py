"""The server's current role, which the admin may switch while the server runs.

The licensing port and the web site hold a ``RoleSwitch`` rather than a
role. It stands for the role it runs (attribute look-ups go to the current
role), and ``switchTo`` stops that role and starts a new one on the same
store: a primary becomes a failover of some primary, or a failover becomes
a primary. The choice is written to the data directory, so a restart keeps
it (FAILOVER.md rule 1), and ``licenseserver upgrade`` finds it (rule 13).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from licenseserver.addresses import parse_host_port
from licenseserver.interfaces import IRole
from licenseserver.localstate import PRIMARY, ROLE, role_change
from licenseserver.roles.base import AdminError


def check_mode(role: Any, primary: Any) -> str | None:
    """The primary's address for a failover mode, None for a primary.

    Raises ``AdminError`` (400) for a role or address that will not do, so
    that a caller can refuse a request before it changes anything else.
    """
    if role not in ("primary", "failover"):
        raise AdminError(400, "role must be primary or failover")
    if role == "failover":
        if not isinstance(primary, str) or parse_host_port(primary) is None:
            raise AdminError(400, "a failover needs its primary as HOST[:PORT]")
        return primary
    return None


@implementer(IRole)
class RoleSwitch(service.MultiService):
    """Runs one role at a time; ``build(role, primary)`` makes a new one."""

    log = Logger()

    def __init__(self, build: Callable[[str, str | None], Any], role: str, primary: str | None):
        super().__init__()
        self._build = build
        self.current = build(role, primary)
        self.current.setServiceParent(self)

    def __getattr__(self, name: str) -> Any:
        # Only called for names the switch itself lacks: they are the role's.
        if name in ("current", "_build") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.current, name)

    # The licensing port's busiest calls go to the current role directly, not
    # through __getattr__ (which costs each request a lookup in Python).

    def serveCheckout(self, session: Any, args: Any) -> Any:
        return self.current.serveCheckout(session, args)

    def serveRelease(self, session: Any, args: Any) -> Any:
        return self.current.serveRelease(session, args)

    def serveHeartbeat(self, session: Any, args: Any) -> Any:
        return self.current.serveHeartbeat(session, args)

    def mode(self) -> dict[str, Any]:
        """The failover mode as the Settings tab shows it."""
        return {"role": self.current.roleName, "primary": self.current.primaryConfigured()}

    async def switchTo(self, role: str, primary: str | None) -> dict[str, Any]:
        """Become ``role`` (of ``primary``, for a failover) now, and after restarts.

        Raises ``AdminError`` (400) for a role or address that will not do.
        """
        primary = check_mode(role, primary)
        old = self.current
        if (role, primary) == (old.roleName, old.primaryConfigured()):
            return self.mode()
        store = old.store
        values = role_change(
            await store.getLocal(ROLE), await store.getLocal(PRIMARY), role, primary
        )
        await old.disownServiceParent()
        for name, value in values.items():
            await store.setLocal(name, value)
        new = self._build(role, primary)
        self.current = new
        new.setServiceParent(self)
        what = f"failover of {primary}" if primary else "primary"
        self.log.warn("The admin switched this server to {what}", what=what)
        new.record("mode-changed", "warning", f"this server is now the {what}")
        new.audit("mode-changed", role=role, primary=primary)
        return self.mode()
