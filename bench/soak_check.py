"""The soak's checks of a store against what the clients were told.

Each function reads a database (or takes what was read from one) and returns a list of
violations, one readable line each; an empty list means the check holds. The store is read
with plain ``sqlite3`` by its table names, never through the server's code: the leases are
the ``leases`` table's rows with the change log's lease rows since the last checkpoint
laid over them, as the server's own load does.

- ``integrity``: ``PRAGMA integrity_check`` says ``ok``.
- ``over_allocation``: no concurrent license has more distinct (machine, user, product)
  holders among its live leases than it has seats.
- ``compare_final``: the live leases are exactly the leases the clients hold.
- ``compare_at_kill``: the state a SIGKILL left behind holds every lease acknowledged until
  then and no lease acknowledged as released; anything else in it belongs to a request
  whose answer was lost.
- ``audit_accounting`` and ``audit_replay``: the audit log (written in the same transaction
  as each grant and release) names exactly the grants and releases the clients were told
  of, and replaying it in order never puts a license over its seats.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from soak_client import Grant, Op


@dataclass(frozen=True)
class StoredLease:
    id: str
    machine: str
    user: str
    product: str
    licenses: tuple[str, ...]
    expires: int
    request: str


@dataclass(frozen=True)
class StoredLicense:
    id: str
    product: str
    kind: str
    seats: int


@dataclass
class StoreState:
    """What one database holds that the checks need."""

    path: Path
    integrity: list[str]
    leases: dict[str, StoredLease]
    licenses: dict[str, StoredLicense]
    audit: list[tuple[int, str, dict]] = field(default_factory=list)


def _rows(conn: sqlite3.Connection, table: str, kind: str) -> list[dict]:
    """The rows of a table keyed by its first column, with the change log's rows of
    ``kind`` since the last checkpoint laid over them, as dicts by column name."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    rows = {row[0]: row for row in conn.execute(f"SELECT * FROM {table}")}
    (checkpoint,) = conn.execute("SELECT value FROM meta WHERE name = 'checkpoint'").fetchone()
    logged = conn.execute(
        "SELECT lines FROM change_log WHERE last > ? ORDER BY last", (int(checkpoint),)
    )
    for (lines,) in logged:
        for line in lines.split("\n"):
            revision, logged_kind, key, row = line.split("\t")
            if logged_kind == kind and int(revision) > int(checkpoint):
                (first,) = json.loads(key)
                if row == "null":
                    rows.pop(first, None)
                else:
                    rows[first] = tuple(json.loads(row))
    return [dict(zip(columns, row, strict=True)) for row in rows.values()]


def read_store(path: Path, *, read_only: bool = True, with_audit: bool = False) -> StoreState:
    """Read a database; ``read_only=False`` only for a copy (it may replay the WAL)."""
    mode = "ro" if read_only else "rw"
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        leases = {}
        for lease in _rows(conn, "leases", "lease"):
            parts = tuple(lease["licenses"].split(",")) if lease["licenses"] else ()
            leases[lease["id"]] = StoredLease(
                lease["id"],
                lease["machine"],
                lease["user"],
                lease["product"],
                parts,
                lease["expires"],
                lease["request"],
            )
        licenses = {
            lic["id"]: StoredLicense(lic["id"], lic["product"], lic["kind"], lic["seats"])
            for lic in _rows(conn, "licenses", "license")
        }
        audit = []
        if with_audit:
            for (lines,) in conn.execute("SELECT lines FROM audit_log ORDER BY last"):
                for line in lines.split("\n"):
                    entry = json.loads(line.partition(" ")[2])
                    if entry["kind"] in ("grant", "release", "expire"):
                        audit.append((entry["seq"], entry["kind"], entry["data"]))
    finally:
        conn.close()
    return StoreState(path, integrity, leases, licenses, audit)


def copy_database(database: Path, target_dir: Path) -> Path:
    """Copy a database with its WAL (as a stopped server left them) into ``target_dir``."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copyfile(source, target_dir / source.name)
    return target_dir / database.name


def integrity(state: StoreState) -> list[str]:
    if state.integrity == ["ok"]:
        return []
    return [f"{state.path}: integrity_check says {'; '.join(state.integrity[:10])}"]


def seat_use(
    licenses: dict[str, StoredLicense], leases: Iterable[StoredLease], now: float
) -> dict[str, set[tuple[str, str, str]]]:
    """The holders of each concurrent license's seats among the leases live at ``now``."""
    holders: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for lease in leases:
        if lease.expires <= now:
            continue
        for lid in lease.licenses:
            lic = licenses.get(lid)
            if lic is not None and lic.kind == "concurrent":
                holders[lid].add((lease.machine, lease.user, lease.product))
    return holders


def over_allocation(state: StoreState, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    problems = []
    for lid, holders in sorted(seat_use(state.licenses, state.leases.values(), now).items()):
        seats = state.licenses[lid].seats
        if len(holders) > seats:
            problems.append(
                f"{state.path.name}: license {lid} has {seats} seats but {len(holders)} "
                f"holders: {sorted(holders)}"
            )
    return problems


def unknown_licenses(state: StoreState) -> list[str]:
    return [
        f"lease {lease.id} of {lease.machine} names unknown license(s) {lease.licenses}"
        for lease in state.leases.values()
        if not lease.licenses or any(lid not in state.licenses for lid in lease.licenses)
    ]


def _describe(lease: StoredLease) -> str:
    return (
        f"{lease.id} (machine={lease.machine} product={lease.product} "
        f"licenses={','.join(lease.licenses)} request={lease.request or '-'})"
    )


def compare_final(state: StoreState, held: dict[str, Grant], released: set[str]) -> list[str]:
    """The store's leases are exactly ``held``: nothing lost, nothing invented."""
    problems = []
    for lid in sorted(held.keys() - state.leases.keys()):
        grant = held[lid]
        problems.append(
            f"lost lease: {lid} was granted to {grant.machine} (request={grant.request}, "
            f"license={grant.license}) and never released, but the store does not hold it"
        )
    for lid in sorted(state.leases.keys() - held.keys()):
        lease = state.leases[lid]
        why = "released (acknowledged)" if lid in released else "never granted to any client"
        problems.append(f"invented lease: the store holds {_describe(lease)}, {why}")
    for lid in sorted(held.keys() & state.leases.keys()):
        grant, lease = held[lid], state.leases[lid]
        if (grant.machine, grant.user, grant.product) != (
            lease.machine,
            lease.user,
            lease.product,
        ):
            problems.append(f"lease {lid} was granted as {grant} but is stored as {lease}")
    return problems


def compare_at_kill(
    state: StoreState,
    held: dict[str, Grant],
    released: set[str],
    unresolved: list[tuple[str, Op]],
    label: str,
) -> tuple[dict[str, str], set[str]]:
    """Check the state a SIGKILL left behind.

    Leases acknowledged before the kill must be there, unless a RELEASE of them was in
    flight; leases acknowledged as released must not be; any other lease must answer a
    CHECKOUT that was in flight (its machine and ``request`` key match). Returns the
    violations by lease id, and the leases of the CHECKOUTs in flight that were stored.
    """
    releasing = {op.lease for _, op in unresolved if op.verb == "RELEASE"}
    checking_out = {(m, op.request) for m, op in unresolved if op.verb == "CHECKOUT"}
    problems = {}
    for lid in sorted(held.keys() - state.leases.keys() - releasing):
        grant = held[lid]
        problems[lid] = (
            f"{label}: lease {lid} of {grant.machine} (request={grant.request}) was "
            f"acknowledged before the kill but is not in the store it left"
        )
    in_flight = set()
    for lid in sorted(state.leases.keys() - held.keys()):
        lease = state.leases[lid]
        if lid in released:
            problems[lid] = (
                f"{label}: lease {_describe(lease)} was acknowledged as released before "
                f"the kill but is still in the store it left"
            )
        elif (lease.machine, lease.request) in checking_out:
            in_flight.add(lid)
        else:
            problems[lid] = (
                f"{label}: the store holds {_describe(lease)}, which no client was "
                f"granted and no CHECKOUT in flight asked for"
            )
    return problems, in_flight


def audit_accounting(
    state: StoreState, grants: dict[str, Grant], releases: dict[str, bool]
) -> list[str]:
    """Audit log grants == acknowledged grants; audit releases == acknowledged releases."""
    audited_grants = {d.get("lease") for _, kind, d in state.audit if kind == "grant"}
    audited_releases = {d.get("lease") for _, kind, d in state.audit if kind == "release"}
    expired = [lid for _, kind, d in state.audit if kind == "expire" for lid in d["leases"]]
    problems = []
    for lid in sorted(audited_grants - grants.keys()):
        problems.append(f"audit log: lease {lid} was granted but no client learned of it")
    for lid in sorted(grants.keys() - audited_grants):
        problems.append(f"audit log: acknowledged grant {lid} has no grant entry")
    for lid in sorted(audited_releases - releases.keys()):
        problems.append(f"audit log: lease {lid} was released but no client released it")
    for lid in sorted(releases.keys() - audited_releases):
        how = "inferred from 404" if releases[lid] else "acknowledged"
        problems.append(f"audit log: release of {lid} ({how}) has no release entry")
    if expired:
        problems.append(f"audit log: {len(expired)} leases expired during the run: {expired[:5]}")
    return problems


def audit_replay(state: StoreState) -> tuple[list[str], dict[str, int]]:
    """Replay grants and releases in commit order; return violations and peak seat use.

    A release or expiry deletes the lease; a grant adds it and then each of its
    concurrent licenses must have no more distinct holders than seats.
    """
    live: dict[str, tuple[tuple[str, str, str], tuple[str, ...]]] = {}
    holders: dict[str, dict[tuple[str, str, str], int]] = defaultdict(dict)
    peak: dict[str, int] = defaultdict(int)
    problems = []

    def drop(lid: str) -> None:
        if lid not in live:
            problems.append(f"audit replay: lease {lid} ends but was not live")
            return
        holder, licenses = live.pop(lid)
        for license_id in licenses:
            count = holders[license_id][holder] - 1
            if count:
                holders[license_id][holder] = count
            else:
                del holders[license_id][holder]

    for seq, kind, data in state.audit:
        if kind == "grant":
            holder = (data["machine"], data["user"], data["product"])
            licenses = tuple(data["licenses"])
            live[data["lease"]] = (holder, licenses)
            for license_id in licenses:
                lic = state.licenses.get(license_id)
                use = holders[license_id]
                use[holder] = use.get(holder, 0) + 1
                peak[license_id] = max(peak[license_id], len(use))
                if lic is not None and lic.kind == "concurrent" and len(use) > lic.seats:
                    problems.append(
                        f"audit replay: entry {seq} grants {data['lease']} on {license_id}, "
                        f"which then has {len(use)} holders for {lic.seats} seats"
                    )
        elif kind == "release":
            drop(data["lease"])
        else:
            for lid in data["leases"]:
                drop(lid)
    stored = set(state.leases)
    if set(live) != stored:
        problems.append(
            f"audit replay: the log leaves {len(live)} leases live, the store holds "
            f"{len(stored)} (only in log: {sorted(set(live) - stored)[:5]}, "
            f"only in store: {sorted(stored - set(live))[:5]})"
        )
    return problems, dict(peak)
