"""What the admin sees of a role, as JSON-ready dicts: shared by API and pages."""

from __future__ import annotations

from typing import Any

from licenseserver import allocation
from licenseserver._version import EDITION, __version__
from licenseserver.model import Client, Event, Lease, License, record_to_dict


def status(role: Any) -> dict[str, Any]:
    """The body of ``GET /api/status``."""
    return {
        "name": role.serverName,
        "role": role.roleName,
        "state": role.state,
        "version": __version__,
        "edition": EDITION,
        "primary": role.primaryAddress(),
        "failover": role.failoverAddress(),
        "revision": role.committedRevision,
        "peer": role.peerStatus(),
        "refused_peer": role.refusedPeer(),
    }


def license(role: Any, lic: License, inUse: int | None = None) -> dict[str, Any]:
    """One license with its status, seats in use and assignments."""
    now = role.now()
    out = record_to_dict(lic)
    out.pop("signature")
    out["status"] = allocation.license_status(lic, now)
    out["days_to_expiry"] = allocation.days_to_expiry(lic, now)
    if inUse is None:
        inUse = allocation.seats_in_use(lic, role.pool.leasesFor(lic.product), now)
    out["in_use"] = inUse
    out["assigned"] = [a.client for a in role.pool.assignmentsOfLicense(lic.id)]
    agreement = role.pool.get("agreement", lic.id)
    out["agreement"] = (
        None
        if agreement is None
        else {"accepted_by": agreement.accepted_by, "accepted": agreement.accepted}
    )
    return out


def upload_warnings(role: Any, ids: list[str]) -> list[str]:
    """What the admin should hear about licenses just added: ended, or not begun yet.

    Such a license is taken (a vendor may ship one ahead of its start, and an
    admin may keep an old one for the record), but it gives no seat now.
    """
    now = role.now()
    out = []
    for license_id in ids:
        lic = role.pool.license(license_id)
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


def licenses(role: Any) -> list[dict[str, Any]]:
    """The license pool, in id order."""
    pool = role.pool
    inUse = pool.seatsInUse(role.now())
    ordered = sorted(pool.all("license"), key=lambda lic: lic.id)
    return [license(role, lic, inUse[lic.id]) for lic in ordered]


def client(role: Any, c: Client) -> dict[str, Any]:
    """One registered machine with its products and their assigned licenses."""
    products = []
    for p in role.pool.productsOf(c.id):
        products.append(
            {
                "product": p.product,
                "version": p.version,
                "user": p.user,
                "cores": p.cores,
                "last_seen": p.last_seen,
                "failover_capable": role.failoverCapable(p.product, p.version),
                "licenses": [a.license for a in role.pool.assignmentsOf(c.id, p.product)],
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


def clients(role: Any) -> list[dict[str, Any]]:
    """Every registered machine, in id order."""
    return [client(role, c) for c in sorted(role.pool.all("client"), key=_client_order)]


def _client_order(c: Client) -> tuple[int, str]:
    number = c.id[2:]
    return (int(number), c.id) if number.isascii() and number.isdigit() else (1 << 62, c.id)


def lease(role: Any, item: Lease) -> dict[str, Any]:
    """One live lease, with its client's host and whether a failover would serve it."""
    now = role.now()
    c = role.pool.client(item.client)
    out = record_to_dict(item)
    out["host"] = c.host if c is not None else ""
    out["ttl_left"] = max(0, item.expires - now)
    out["failover_capable"] = role.failoverCapable(item.product, item.version)
    return out


def leases(role: Any) -> list[dict[str, Any]]:
    """Live leases, running ones first, then borrowed seats, each by grant time."""
    now = role.now()
    live = [item for item in role.pool.all("lease") if item.live(now)]
    live.sort(key=lambda item: (item.borrowed, item.granted, item.id))
    return [lease(role, item) for item in live]


def event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": e.time,
        "kind": e.kind,
        "severity": e.severity,
        "message": e.message,
        "data": e.data,
    }


def settings(role: Any) -> dict[str, Any]:
    """The body of ``GET /api/settings``: the failover mode and the licensing settings."""
    return {"role": role.roleName, "primary": role.primaryConfigured(), **role.settings()}
