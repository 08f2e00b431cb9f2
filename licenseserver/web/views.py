"""What the admin sees of the view, as JSON-ready dicts: shared by API and pages."""

from __future__ import annotations

import csv
import io
import time
from typing import Any
from urllib.parse import urlencode

from licenseserver import allocation
from licenseserver import usage as usage_module
from licenseserver._version import EDITION, __version__
from licenseserver.model import Client, Event, Lease, License, record_to_dict
from licenseserver.web import charts, display
from licenseserver.web.facade import ServerView


def status(view: ServerView) -> dict[str, Any]:
    """The body of ``GET /api/status``."""
    return {
        "name": view.serverName,
        "role": view.roleName,
        "state": view.state,
        "version": __version__,
        "edition": EDITION,
        "primary": view.primaryAddress(),
        "failover": view.failoverAddress(),
        "revision": view.committedRevision,
        "peer": view.peerStatus(),
        "refused_peer": view.refusedPeer(),
        "cut_off_since": cut_off_since(view),
    }


def cut_off_since(view: ServerView) -> int | None:
    """Since when the limits of a cut between the servers apply here (the exact policy's,
    FAILOVER.md rule 19), None while none do: so that a page's header can follow."""
    return min((item["since"] for item in view.cutLimits()), default=None)


def cut_limits(view: ServerView) -> dict[str, int]:
    """The most seats served of each license under a cut limit now, by license id."""
    return {item["license"]: item["serving"] for item in view.cutLimits()}


def license(
    view: ServerView,
    lic: License,
    inUse: int | None = None,
    limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One license with its status, seats in use, assignments and partition policy.

    ``failover_policy`` is the vendor's signed term (None when the license
    has none); ``partition_policy`` is the policy in force (FAILOVER.md rule
    15) and ``failover_share`` its share ``E`` in seats (0 under ``full``);
    ``policy_source`` is ``license`` when the policy in force is the one the
    license sets, ``settings`` when it comes from the server's settings.
    ``serving_at_most`` is the most seats this server serves while cut off
    from its peer (FAILOVER.md rule 19), None when no such limit applies now;
    ``limits`` are ``cut_limits(view)``, read once for a whole list.
    """
    now = view.now()
    out = record_to_dict(lic)
    out.pop("signature")
    policy, share = allocation.partition_policy(
        lic, view.setting("partition_policy"), view.setting("failover_share")
    )
    out["partition_policy"] = policy
    out["failover_share"] = share
    out["policy_source"] = "license" if lic.failover_policy == policy else "settings"
    out["status"] = allocation.license_status(lic, now)
    out["days_to_expiry"] = allocation.days_to_expiry(lic, now)
    out["expiring"] = display.expiring(lic, now, display.expiry_window(view))
    if inUse is None:
        inUse = allocation.seats_in_use(lic, view.leasesFor(lic.product), now)
    out["in_use"] = inUse
    out["over_allocated"] = max(0, inUse - lic.seats)
    if limits is None:
        limits = cut_limits(view)
    out["serving_at_most"] = limits.get(lic.id)
    out["assigned"] = [a.client for a in view.assignmentsOfLicense(lic.id)]
    agreement = view.agreement(lic.id)
    out["agreement"] = (
        None
        if agreement is None
        else {"accepted_by": agreement.accepted_by, "accepted": agreement.accepted}
    )
    return out


def upload_warnings(view: ServerView, ids: list[str]) -> list[str]:
    """What the admin should hear about licenses just added: ended, or not begun yet.

    Such a license is taken (a vendor may ship one ahead of its start, and an
    admin may keep an old one for the record), but it gives no seat now.
    """
    now = view.now()
    out = []
    for license_id in ids:
        lic = view.license(license_id)
        status = allocation.license_status(lic, now)
        if status == allocation.EXPIRED:
            out.append(
                f"license {lic.id} ({lic.product}) expired on {lic.expires}: it gives no seat"
            )
        elif status == allocation.PENDING:
            out.append(
                f"license {lic.id} ({lic.product}) starts on {lic.starts}: it gives no seat before"
            )
    return out


def licenses(view: ServerView) -> list[dict[str, Any]]:
    """The license pool, in id order."""
    inUse = view.seatsInUse(view.now())
    limits = cut_limits(view)
    ordered = sorted(view.licenses(), key=lambda lic: lic.id)
    return [license(view, lic, inUse[lic.id], limits) for lic in ordered]


def client(view: ServerView, c: Client) -> dict[str, Any]:
    """One registered machine with its products and their assigned licenses."""
    products = []
    for p in view.productsOf(c.id):
        products.append(
            {
                "product": p.product,
                "version": p.version,
                "user": p.user,
                "cores": p.cores,
                "last_seen": p.last_seen,
                "failover_capable": view.failoverCapable(p.product, p.version),
                "licenses": [a.license for a in view.assignmentsOf(c.id, p.product)],
            }
        )
    return {
        "id": c.id,
        "machine": c.machine,
        "host": c.host,
        "registered": c.registered,
        "last_seen": c.last_seen,
        "failover_capable": all(p["failover_capable"] for p in products),
        "products": products,
    }


def clients(view: ServerView) -> list[dict[str, Any]]:
    """Every registered machine, in id order."""
    return [client(view, c) for c in sorted(view.clients(), key=_client_order)]


def _client_order(c: Client) -> tuple[int, str]:
    number = c.id[2:]
    return (int(number), c.id) if number.isascii() and number.isdigit() else (1 << 62, c.id)


def lease(view: ServerView, item: Lease) -> dict[str, Any]:
    """One live lease, with its client's host and whether a failover would serve it."""
    now = view.now()
    c = view.client(item.client)
    out = record_to_dict(item)
    out["host"] = c.host if c is not None else ""
    out["ttl_left"] = max(0, item.expires - now)
    out["failover_capable"] = view.failoverCapable(item.product, item.version)
    return out


def leases(view: ServerView) -> list[dict[str, Any]]:
    """Live leases, running ones first, then borrowed seats, each by grant time."""
    now = view.now()
    live = [item for item in view.leases() if item.live(now)]
    live.sort(key=lambda item: (item.borrowed, item.granted, item.id))
    return [lease(view, item) for item in live]


def event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": e.time,
        "kind": e.kind,
        "severity": e.severity,
        "message": e.message,
        "data": e.data,
    }


def settings(view: ServerView) -> dict[str, Any]:
    """The body of ``GET /api/settings``: the failover mode and the licensing settings."""
    return {"role": view.roleName, "primary": view.primaryConfigured(), **view.settings()}


def usage(view: ServerView, query: Any, points: list[Any]) -> dict[str, Any]:
    """``GET /api/usage``: the rows of each license (with its product and seats), by time."""
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for point in points:
        key = (point.product, point.license)
        if key not in series:
            lic = view.license(point.license)
            series[key] = {
                "product": point.product,
                "license": point.license,
                "seats": None if lic is None else lic.seats,
                "points": [],
            }
        series[key]["points"].append(
            {"t": point.t, "in_use": point.in_use, "peak": point.peak, "denials": point.denials}
        )
    return {
        "step": query.step,
        "from": query.since,
        "to": query.until,
        "series": [series[key] for key in sorted(series)],
    }


def usage_csv(points: list[Any]) -> bytes:
    """``GET /api/usage.csv``: ``t,product,license,in_use,peak,denials``, ``t`` in ISO 8601
    UTC, one row per license and interval."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["t", "product", "license", "in_use", "peak", "denials"])
    for p in points:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.t))
        writer.writerow([when, p.product, p.license, p.in_use, p.peak, p.denials])
    return out.getvalue().encode("utf-8")


async def usage_report(view: ServerView, product: str | None, period: str | None) -> dict:
    """What the Usage tab shows of ``product`` over ``period`` (``display.USAGE_PERIODS``;
    default the first product and a day): its history summed over the product's licenses
    (an interval's peak is the sum of theirs, so it may be more than the true peak; its
    refusals are counted once), the seats licensed, the top users and machines by seat
    hours, and the CSV download's address."""
    products = sorted({lic.product for lic in view.licenses()})
    problem = None
    if period is not None and period not in display.USAGE_PERIODS:
        problem = f"unknown period {period[:20]!r}: showing a day"
    period = period if period in display.USAGE_PERIODS else "day"
    if product is not None and product not in products:
        if products:
            problem = f"no license of {product[:80]!r} is in the pool"
        product = None
    product = product or (products[0] if products else None)
    length, step = display.USAGE_PERIODS[period]
    until = view.now()
    since = until - length
    report: dict[str, Any] = {
        "products": products,
        "product": product,
        "period": period,
        "problem": problem,
        "step": usage_module.STEPS[step],
        "since": since,
        "until": until,
    }
    if product is None:
        return report
    points = await view.usageHistory(step, since, until, product)
    by_time: dict[int, list[Any]] = {}
    for point in points:
        by_time.setdefault(point.t, []).append(point)
    report["samples"] = [
        charts.Sample(
            t,
            round(sum(p.in_use for p in group), 3),
            sum(p.peak for p in group),
            max(p.denials for p in group),
        )
        for t, group in sorted(by_time.items())
    ]
    report["seats"] = sum(lic.seats for lic in view.licenses() if lic.product == product)
    report["users"] = await view.topHolders(product, since, until, "user", TOP_SHOWN)
    report["machines"] = await view.topHolders(product, since, until, "machine", TOP_SHOWN)
    query = urlencode({"product": product, "step": step, "from": _iso(since), "to": _iso(until)})
    report["csv"] = f"/api/usage.csv?{query}"
    return report


TOP_SHOWN = 10
"""How many users and machines the Usage tab ranks."""


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
