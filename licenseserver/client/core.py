"""What both client APIs share that does no I/O: servers, identity, events, lease states.

``ServerList`` decides which server to try next: the one in use first,
then a primary that a standby failover named, then the others in the order
they were given or learnt (a primary's HELLO names its failover). ``Event``
is what the application's callback receives for every connection, move,
retry and change of a lease's state.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licenseserver.addresses import DEFAULT_PORT, parse_host_port

# Event kinds.
CONNECTED = "connected"
"""A session opened (HELLO answered) at ``server``; also after a reconnection to it."""
MOVED = "moved"
"""A session opened at ``server``, another server than before (``details['from']``)."""
RETRY = "retry"
"""``server`` did not serve (unreachable, silent, standby, refused); the client tries on."""
HEARTBEAT_FAILED = "heartbeat-failed"
"""A heartbeat of ``lease`` did not get through; the client retries in ``details['retry_in']``."""
LEASE_KEPT = "lease-kept"
"""``lease`` was renewed at ``server``, another server than the one that renewed it before."""
LEASE_REACQUIRED = "lease-reacquired"
"""``server`` did not know the lease; a CHECKOUT with the same request key got a seat.

``details['previous']`` is the old lease id, ``lease`` the new one (they may be equal).
"""
GRACE = "grace"
"""No server renewed or granted the seat: the lease runs on grace until ``details['until']``."""
LEASE_LOST = "lease-lost"
"""The seat is lost (no server granted it and the grace period is over).

The client goes on trying to get a seat with the same request key.
"""
LEASE_REVOKED = "lease-revoked"
"""An admin ended the lease (``error`` is ``errors.Revoked``): the seat is gone, and the
client does not try to get another one; the application may check out again."""
LEASE_RELEASED = "lease-released"
"""The lease was released (``details['confirmed']`` says whether a server confirmed it)."""

EVENT_KINDS = (
    CONNECTED,
    MOVED,
    RETRY,
    HEARTBEAT_FAILED,
    LEASE_KEPT,
    LEASE_REACQUIRED,
    GRACE,
    LEASE_LOST,
    LEASE_REVOKED,
    LEASE_RELEASED,
)

# Lease states.
HELD = "held"
"""The last heartbeat (or the checkout) got through."""
RENEWING = "renewing"
"""The last heartbeat did not get through, but the lease has not expired yet."""
IN_GRACE = "grace"
"""The lease expired without a renewal; the application runs on its grace period."""
LOST = "lost"
"""The grace period is over without a seat."""
REVOKED = "revoked"
"""Ended by an admin (``410 revoked``): no longer kept, and not checked out again."""
RELEASED = "released"
"""Released by the application."""
DETACHED = "detached"
"""No longer kept by this client (it lives on the server until it expires or is released)."""

VALID_STATES = frozenset({HELD, RENEWING, IN_GRACE})


@dataclass(frozen=True)
class Event:
    """Something the client did or saw, for the application's ``on_event`` callback."""

    kind: str
    message: str
    time: float
    server: str | None = None
    lease: str | None = None
    error: BaseException | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def normalize_address(text: str) -> str:
    """``HOST[:PORT]`` as ``host:port`` (``[v6]:port`` for IPv6); ValueError if it is not one."""
    parsed = parse_host_port(text.strip(), DEFAULT_PORT)
    if parsed is None:
        raise ValueError(f"{text!r} is not HOST[:PORT]")
    host, port = parsed
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """The host and port of a normalized address."""
    parsed = parse_host_port(address, DEFAULT_PORT)
    if parsed is None:
        raise ValueError(f"{address!r} is not HOST[:PORT]")
    return parsed


class ServerList:
    """The servers a client may use, and the order to try them in.

    ``current`` is the server of the last session. A round tries each known
    server at most once: first a server named by ``prefer`` (a standby
    failover names its primary), then ``current``, then the rest in order.
    """

    def __init__(self, addresses: Iterable[str]):
        self.addresses: list[str] = []
        for address in addresses:
            normalized = normalize_address(address)
            if normalized not in self.addresses:
                self.addresses.append(normalized)
        if not self.addresses:
            raise ValueError("give at least one server address")
        self.current = self.addresses[0]
        self._preferred: str | None = None

    def learn(self, address: str | None) -> str | None:
        """Add a server named by another one; return it normalized, None for ``none``/junk."""
        if not address or address == "none":
            return None
        try:
            normalized = normalize_address(address)
        except ValueError:
            return None
        if normalized not in self.addresses:
            self.addresses.append(normalized)
        return normalized

    def prefer(self, address: str | None) -> str | None:
        """Learn ``address`` and try it first in the rest of this round (or the next)."""
        normalized = self.learn(address)
        if normalized is not None:
            self._preferred = normalized
        return normalized

    def round(self) -> Iterator[str]:
        """The servers to try, each once; ``prefer`` during the round reorders the rest."""
        tried: set[str] = set()
        while True:
            candidate = None
            if self._preferred is not None and self._preferred not in tried:
                candidate, self._preferred = self._preferred, None
            else:
                for address in (self.current, *self.addresses):
                    if address not in tried:
                        candidate = address
                        break
            if candidate is None:
                return
            tried.add(candidate)
            yield candidate


def default_machine_id() -> str:
    """A stable id of this machine: the OS machine id, else one made from the MAC address."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text and text.isprintable() and len(text) <= 128 and " " not in text:
            return text
    return f"node-{uuid.getnode():012x}"


def default_host() -> str:
    """This machine's host name."""
    return socket.gethostname() or "localhost"


def default_user() -> str:
    """The user running the application, or ``-`` when it cannot be told."""
    try:
        return getpass.getuser() or "-"
    except (KeyError, OSError):
        return "-"


def new_request_key() -> str:
    """A fresh idempotency key for CHECKOUT."""
    return "r-" + secrets.token_urlsafe(12)


def hello_arguments(
    product: str,
    version: str,
    *,
    machine: str | None = None,
    host: str | None = None,
    user: str | None = None,
    cores: int | None = None,
) -> dict[str, object]:
    """The arguments of HELLO, with this machine's defaults for what is not given."""
    if not product or not version:
        raise ValueError("the product name and version are required")
    args: dict[str, object] = {
        "product": product,
        "version": version,
        "host": host or default_host(),
        "machine": machine or default_machine_id(),
        "user": user or default_user(),
    }
    if cores is not None:
        args["cores"] = int(cores)
    return args


def without_none(args: Mapping[str, object]) -> dict[str, object]:
    """The arguments whose value is not None."""
    return {key: value for key, value in args.items() if value is not None}
