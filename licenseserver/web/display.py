"""What the pages say, as plain values: times, ages, the status header and its warnings.

Pure functions of a role's state and the time: the Elements in ``elements``
lay these values out, and the tests check them without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from licenseserver import allocation
from licenseserver._version import EDITION, __version__
from licenseserver.web import views
from licenseserver.web.facade import ServerView

EXPIRY_WARNING_DAYS = 30
"""The alert window when the ``alert_expiry_days`` setting has no value."""
DAY = 86400

POOL = "pool"
CLIENTS = "clients"
MONITORING = "monitoring"
USAGE = "usage"
MESSAGES = "messages"
SETTINGS = "settings"

TABS: tuple[tuple[str, str], ...] = (
    (POOL, "License Pool"),
    (CLIENTS, "Client Management"),
    (MONITORING, "Client Monitoring"),
    (USAGE, "Usage"),
    (MESSAGES, "Messages"),
    (SETTINGS, "Settings"),
)
"""Every tab: its path segment and its title, in order."""

POOL_TABS = frozenset({POOL, CLIENTS, MONITORING, USAGE})
"""The tabs a standby failover does not show (FAILOVER.md rule 5)."""

USAGE_PERIODS: dict[str, tuple[int, str]] = {
    "day": (DAY, "1h"),
    "week": (7 * DAY, "1h"),
    "month": (30 * DAY, "1d"),
    "year": (365 * DAY, "1d"),
}
"""The Usage tab's periods: how far back each reaches, and the history's step it shows."""


def standby(view: ServerView) -> bool:
    """Whether ``role`` is a failover in standby, which takes no pool changes."""
    return view.roleName == "failover" and view.state != "active"


def active_failover(view: ServerView) -> bool:
    """Whether ``role`` is a failover serving in its primary's stead."""
    return view.roleName == "failover" and view.state == "active"


def discarded_at_handback(view: ServerView) -> str | None:
    """On an active failover, the warning that changes made there will not last.

    When the primary takes control back, the failover replaces its data with
    the primary's (FAILOVER.md rule 10): licenses uploaded, deleted, activated
    or deactivated, assignments, unregistered machines and settings changed
    here are all lost. None on any other view.
    """
    if not active_failover(view):
        return None
    primary = view.primaryAddress() or "its primary"
    return (
        f"This view is the failover, serving while its primary {primary} is away. "
        "Licenses uploaded, deleted, activated or deactivated, assignments, removed "
        "clients and licensing settings changed here are discarded when the primary "
        "takes control back: make lasting changes on the primary."
    )


def visible_tabs(view: ServerView) -> list[tuple[str, str]]:
    """The tabs the navigation shows for ``role`` now."""
    if standby(view):
        return [(name, title) for name, title in TABS if name not in POOL_TABS]
    return list(TABS)


def home_tab(view: ServerView) -> str:
    """Where ``/`` leads: the pool, or Messages on a standby failover."""
    return MESSAGES if standby(view) else POOL


def minimums_text(minimums: dict[str, str]) -> str:
    """The failover's minimum client versions for people: ``every product 2015r3; X 1.5``."""
    parts = [f"every product {minimums['*']}"] if "*" in minimums else []
    parts += [f"{name} {version}" for name, version in sorted(minimums.items()) if name != "*"]
    return "; ".join(parts) or "none"


def timestamp(seconds: float | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC``; ``never`` for None."""
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def time_of_day(seconds: float, now: float) -> str:
    """A Unix time as ``HH:MM UTC`` when it is on the day of ``now``, else with its date
    (``YYYY-MM-DD HH:MM UTC``), the same UTC clock as ``timestamp``."""
    if day_start(seconds) == day_start(now):
        return time.strftime("%H:%M UTC", time.gmtime(seconds))
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def duration(seconds: float) -> str:
    """A span of time for people: ``45 s``, ``12 min``, ``3 h 5 min``, ``4 d 2 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(then: float | None, now: float) -> str:
    """``12 min ago`` (``never`` for None)."""
    if then is None:
        return "never"
    return f"{duration(now - then)} ago"


def day_start(now: float) -> int:
    """00:00 UTC of the day of ``now``."""
    return int(now) - int(now) % DAY


@dataclass(frozen=True)
class Alert:
    """Something in the header that needs the admin, with the tab that shows more."""

    text: str
    tab: str


@dataclass(frozen=True)
class Fact:
    """One labelled value of the status header; ``tone`` is ``ok``, ``warn``, ``bad`` or ``""``."""

    label: str
    value: str
    tone: str = ""


@dataclass(frozen=True)
class HeaderFacts:
    """What the status header says."""

    name: str
    role: str
    state: str
    version: str
    peer_title: str
    peer: list[Fact] = field(default_factory=list)
    problem: str | None = None
    warnings: list[Alert] = field(default_factory=list)


def expiry_window(view: ServerView) -> int:
    """The alert window in days: the ``alert_expiry_days`` setting (0: no alerts)."""
    days = view.setting("alert_expiry_days")
    return EXPIRY_WARNING_DAYS if days is None else int(days)


def expiring(lic: Any, now: float, window: int) -> bool:
    """Whether an active license ends within ``window`` days of ``now``: its days left
    (``allocation.days_to_expiry``, as License Pool shows them) are at most ``window``."""
    if not lic.expires or allocation.license_status(lic, now) != allocation.ACTIVE:
        return False
    return allocation.days_to_expiry(lic, now) <= window


def expiring_licenses(view: ServerView, now: float) -> list[dict[str, Any]]:
    """Active licenses that end within the alert window (``expiry_window``), soonest first."""
    window = expiry_window(view)
    soon = []
    for lic in view.licenses():
        if expiring(lic, now, window):
            soon.append({"id": lic.id, "product": lic.product, "expires": lic.expires})
    soon.sort(key=lambda item: (item["expires"], item["id"]))
    return soon


def unmet_today(events: Iterable[Any], now: float) -> int:
    """How many ``unmet-request`` events happened since 00:00 UTC today."""
    since = day_start(now)
    return sum(1 for e in events if e.kind == "unmet-request" and e.time >= since)


def not_failover_capable(view: ServerView) -> list[dict[str, Any]]:
    """Registered machines that a failover would not serve (views.clients entries)."""
    return [c for c in views.clients(view) if not c["failover_capable"]]


def warnings(view: ServerView, events: Iterable[Any], now: float) -> list[Alert]:
    """What needs the admin: the limits of a cut, expiring and over-allocated licenses,
    unmet requests today, non-failover clients.

    Each links to the tab that shows more, unless that tab is hidden (``tab`` is "").
    """
    shown = {name for name, _ in visible_tabs(view)}
    return [a if a.tab in shown else Alert(a.text, "") for a in _warnings(view, events, now)]


def cut_warnings(view: ServerView, now: float) -> list[Alert]:
    """While the link between the servers is down: the limit in force of each exact
    license (FAILOVER.md rule 19), as this server sees it."""
    peer = "primary" if view.roleName == "failover" else "failover"
    return [
        Alert(
            f"cut off from the {peer} since {time_of_day(item['since'], now)}: serving at"
            f" most {item['serving']} of {item['seats']} seats of {item['product']}"
            f" (license {item['license']})",
            POOL,
        )
        for item in view.cutLimits()
    ]


def _warnings(view: ServerView, events: Iterable[Any], now: float) -> list[Alert]:
    out = cut_warnings(view, now)
    soon = expiring_licenses(view, now)
    if soon:
        first = soon[0]
        text = f"license {first['id']} ({first['product']}) expires on {first['expires']}"
        if len(soon) > 1:
            text = f"{len(soon)} licenses expire within {expiry_window(view)} days; first: {text}"
        out.append(Alert(text, POOL))
    for lic in sorted(view.licenses(), key=lambda lic: lic.id):
        over = view.overAllocated(lic.id)
        if over:
            out.append(
                Alert(
                    f"license {lic.id} ({lic.product}) is over-allocated by {over}: no new"
                    f" seat until fewer than {lic.seats} are in use",
                    POOL,
                )
            )
    unmet = unmet_today(events, now)
    if unmet:
        plural = "s" if unmet != 1 else ""
        out.append(Alert(f"{unmet} request{plural} for a seat could not be met today", MESSAGES))
    clients = not_failover_capable(view)
    if clients:
        names = ", ".join(c["host"] or c["machine"] for c in clients[:3])
        more = f" and {len(clients) - 3} more" if len(clients) > 3 else ""
        verb = "is" if len(clients) == 1 else "are"
        out.append(
            Alert(
                f"{len(clients)} client machine{'s' if len(clients) != 1 else ''} "
                f"({names}{more}) {verb} not failover-capable: "
                "a failover would not serve them",
                MONITORING,
            )
        )
    return out


def _primary_peer(view: ServerView, now: float) -> tuple[str, list[Fact]]:
    peer = view.peerStatus()
    if peer is None:
        remembered = view.failoverAddress()
        if remembered:
            return "Failover", [Fact("address", remembered), Fact("link", "not connected", "bad")]
        return "Failover", [Fact("", "none paired")]
    if not peer["alive"]:
        sync = Fact("sync", "not connected", "bad")
    elif peer["in_sync"]:
        sync = Fact("sync", "in sync", "ok")
    else:
        lag = peer["lag"]
        sync = Fact("sync", f"lagging ({lag} change{'s' if lag != 1 else ''} behind)", "warn")
    last = peer["last_sync"]
    return "Failover", [
        Fact("name", peer["name"]),
        Fact("address", peer["address"]),
        sync,
        Fact("last sync", f"{timestamp(last)} ({ago(last, now)})" if last else "never"),
    ]


LINK_WORDS = {
    "paired": ("paired", "ok"),
    "connecting": ("not connected", "bad"),
    "version-mismatch": ("version mismatch", "bad"),
    "refused": ("refused", "bad"),
}


def _failover_peer(view: ServerView, now: float) -> tuple[str, list[Fact]]:
    peer = view.peerStatus() or {}
    link, tone = LINK_WORDS.get(peer.get("link") or "", (peer.get("link") or "unknown", ""))
    since = peer.get("state_since")
    state = view.state
    facts = [
        Fact("name", peer.get("name") or "not known yet"),
        Fact("address", peer.get("address") or view.primaryAddress() or "?"),
        Fact("link", link, tone),
        Fact(
            "this server",
            f"{state} since {timestamp(since)} ({ago(since, now)})",
            "warn" if state == "active" else "ok",
        ),
        Fact("last sync", timestamp(peer.get("last_sync"))),
    ]
    return "Primary", facts


PEER_EVENTS = ("failover-paired", "version-mismatch", "peer-refused")
REFUSAL_RECENT = 600
"""Seconds for which a refused failover stays in a primary's header."""


def refused_failover(events: Iterable[Any], now: float) -> str | None:
    """On a primary: why a failover was refused lately, unless one paired since."""
    for e in events:
        if now - e.time > REFUSAL_RECENT:
            return None
        if e.kind in PEER_EVENTS:
            return None if e.kind == "failover-paired" else e.message
    return None


def header_facts(
    view: ServerView, events: Iterable[Any] = (), now: float | None = None
) -> HeaderFacts:
    """The status header of ``role`` (FAILOVER.md rule 4), with warnings from ``events``."""
    if now is None:
        now = view.now()
    if view.roleName == "failover":
        title, peer = _failover_peer(view, now)
        problem = (view.peerStatus() or {}).get("problem")
    else:
        title, peer = _primary_peer(view, now)
        alive = (view.peerStatus() or {}).get("alive")
        problem = None if alive else refused_failover(events, now)
    return HeaderFacts(
        name=view.serverName,
        role=view.roleName,
        state=view.state,
        version=f"{__version__} ({EDITION})",
        peer_title=title,
        peer=peer,
        problem=problem,
        warnings=warnings(view, events, now),
    )
