"""The seat rules, as pure functions: no I/O, no clock, no reactor.

Callers pass in the time and the records that matter; the functions say
which license a request may use, or why it may use none.

- ``concurrent``: N seats in use at once; the live leases of one machine,
  user and product share one seat.
- ``installed``: usable only on the machines the admin assigned it to; at
  most N machines may be assigned.
- ``core``: usable on a machine when the cores of the core licenses assigned
  to it add up to at least the cores it asks for; each core license gives
  ``cores`` cores to each of at most N machines.
- Only ``active`` licenses give seats: not before their start date, not after
  their end date, not while the admin has deactivated them, and not to a
  client whose version is above the license's maximum version.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from licenseserver.model import CONCURRENT, CORE, INSTALLED, Lease, License
from licenseserver.versions import Version, VersionError

ACTIVE = "active"
PENDING = "pending"
INACTIVE = "inactive"
EXPIRED = "expired"


@dataclass(frozen=True)
class SeatRequest:
    """What a client asks for: a seat of ``product`` on its machine."""

    machine: str
    user: str
    product: str
    version: str
    cores: int = 1
    edition: str | None = None


@dataclass(frozen=True)
class Grant:
    """The licenses a seat comes from, and their kind."""

    licenses: tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class Denial:
    """Why no seat was granted: a protocol reason and a message for people."""

    reason: str
    message: str


def day_start(date: str) -> int:
    """Unix time at 00:00 UTC of ``date`` (``YYYY-MM-DD``)."""
    d = datetime.date.fromisoformat(date)
    return calendar.timegm(d.timetuple())


def license_status(lic: License, now: float) -> str:
    """``inactive``, ``pending``, ``expired`` or ``active`` at ``now``.

    A license starts at 00:00 UTC of its start date and ends after the last
    second of its end date.
    """
    if not lic.active:
        return INACTIVE
    if lic.starts and now < day_start(lic.starts):
        return PENDING
    if lic.expires and now >= day_start(lic.expires) + 86400:
        return EXPIRED
    return ACTIVE


def days_to_expiry(lic: License, now: float) -> int | None:
    """Whole UTC days from today to the license's end date; None when it never ends.

    0 on its last day, negative once it has ended (-1 the day after).
    """
    if not lic.expires:
        return None
    today = int(now) - int(now) % 86400
    return (day_start(lic.expires) - today) // 86400


FULL = "full"
"""Partition policy: the active failover serves the whole pool; a cut between the two
servers can put up to twice the seats in use (FAILOVER.md rule 15)."""
EXACT = "exact"
"""Partition policy: never more seats in use than licensed, whatever the cut (rules 16-17)."""
PARTITION_POLICIES = (FULL, EXACT)


def share_seats(spec: str, seats: int) -> int:
    """The failover share ``E`` of a license of ``seats``: ``20%`` (rounded down) or a count.

    Raises ``ValueError`` for a spec that is neither a percentage from 0 to 100
    nor a whole number; a count is capped at ``seats``.
    """
    text = spec.strip()
    if text.endswith("%"):
        number = text[:-1]
        if not (number.isascii() and number.isdigit()) or int(number) > 100:
            raise ValueError(f"a failover share must be 0% to 100% or a seat count, not {spec!r}")
        return seats * int(number) // 100
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"a failover share must be 0% to 100% or a seat count, not {spec!r}")
    return min(int(text), seats)


def partition_policy(lic: License, policy: str, share: str) -> tuple[str, int]:
    """The policy in force for ``lic`` and its failover share ``E`` in seats.

    ``policy`` and ``share`` are the server's settings (``partition_policy``,
    ``failover_share``). The vendor's signed terms come first; the admin may
    make a ``full`` license ``exact``, never the other way round. The share is
    the vendor's when the vendor set one, else the setting's; under ``full``
    it is 0 (nothing is held back).
    """
    exact = EXACT in (lic.failover_policy, policy)
    if not exact:
        return FULL, 0
    spec = lic.failover_share if lic.failover_share is not None else share
    return EXACT, share_seats(spec, lic.seats)


def seats_held(lic: License, leases: Iterable[Lease], counts: Callable[[Lease], bool]) -> int:
    """How many seats of ``lic`` the leases for which ``counts`` is true hold.

    A seat is a holder as ``holders_by_license`` has it: for a concurrent
    license one (machine, user, product), for the other kinds one machine; a
    holder with several counted leases holds one seat.
    """
    holders = set()
    for lease in leases:
        if lic.id in lease.licenses and counts(lease):
            if lic.kind == CONCURRENT:
                holders.add((lease.machine, lease.user, lease.product))
            else:
                holders.add((lease.machine,))
    return len(holders)


def version_allowed(lic: License, version: str) -> bool:
    """Whether a client of ``version`` may use ``lic`` (its maximum version)."""
    if not lic.max_version:
        return True
    try:
        return Version(version) <= Version(lic.max_version)
    except VersionError:
        return False


def usable(lic: License, request: SeatRequest, now: float) -> bool:
    """Whether ``lic`` may give ``request`` a seat at all, seats aside."""
    return (
        lic.product == request.product
        and (request.edition is None or lic.edition.lower() == request.edition.lower())
        and license_status(lic, now) == ACTIVE
        and version_allowed(lic, request.version)
    )


def why_no_license(request: SeatRequest, licenses: Sequence[License], now: float) -> str:
    """The message of ``404 no-license``: what keeps the product's licenses from serving.

    ``licenses`` are those of the requested product. The reason that would
    take the fewest steps to mend comes first: a license that only needs
    activating, then one not yet started, then expired ones (the latest end
    date), then a version or an edition the licenses do not cover.
    """
    product = request.product
    mine = [lic for lic in licenses if lic.product == product]
    if not mine:
        return f"no license of {product} is in the pool"
    if request.edition is not None:
        mine = [lic for lic in mine if lic.edition.lower() == request.edition.lower()]
        if not mine:
            return f"no license of {product} has the edition {request.edition}"
    status = {lic.id: license_status(lic, now) for lic in mine}
    inactive = sorted(lic.id for lic in mine if status[lic.id] == INACTIVE)
    if inactive:
        return f"the licenses of {product} are deactivated ({', '.join(inactive)})"
    pending = [lic for lic in mine if status[lic.id] == PENDING]
    if pending:
        first = min(lic.starts for lic in pending)
        return f"the license of {product} starts on {first}: none is valid yet"
    expired = [lic for lic in mine if status[lic.id] == EXPIRED]
    if len(expired) == len(mine):
        last = max(lic.expires for lic in expired)
        which = "license" if len(expired) == 1 else "licenses"
        return f"the {which} of {product} expired on {last}"
    newest = max(
        (lic.max_version for lic in mine if status[lic.id] == ACTIVE and lic.max_version),
        default="",
    )
    if newest:
        return f"{product} {request.version} is newer than its licenses allow (up to {newest})"
    return f"no usable license of {product} exists"


def holders_by_license(
    licenses: Sequence[License], leases: Iterable[Lease], now: float
) -> dict[str, set[tuple]]:
    """Who holds a seat of each of ``licenses`` at ``now``, in one pass over ``leases``.

    For a concurrent license a holder is a (machine, user, product); for the
    other kinds, a machine.
    """
    kinds = {lic.id: lic.kind for lic in licenses}
    holders: dict[str, set[tuple]] = {lic.id: set() for lic in licenses}
    for lease in leases:
        if not lease.live(now):
            continue
        for license_id in lease.licenses:
            kind = kinds.get(license_id)
            if kind == CONCURRENT:
                holders[license_id].add((lease.machine, lease.user, lease.product))
            elif kind is not None:
                holders[license_id].add((lease.machine,))
    return holders


def seat_holders(lic: License, leases: Iterable[Lease], now: float) -> set[tuple]:
    """Who holds a seat of ``lic`` at ``now`` (see ``holders_by_license``)."""
    return holders_by_license([lic], leases, now)[lic.id]


def seats_in_use(lic: License, leases: Iterable[Lease], now: float) -> int:
    """How many seats of ``lic`` are in use at ``now``."""
    return len(seat_holders(lic, leases, now))


Holders = Mapping[tuple[str, str, str], Mapping[str, Lease]]
"""Of one license: each (machine, user, product) with its leases by id, live or not."""


def index_holders(leases: Iterable[Lease]) -> dict[str, dict[tuple, dict[str, Lease]]]:
    """The ``Holders`` of every license the leases name (``Pool`` keeps this up to date)."""
    index: dict[str, dict[tuple, dict[str, Lease]]] = {}
    for lease in leases:
        holder = (lease.machine, lease.user, lease.product)
        for license_id in lease.licenses:
            index.setdefault(license_id, {}).setdefault(holder, {})[lease.id] = lease
    return index


def _holds(leases: Mapping[str, Lease] | None, now: float) -> bool:
    return leases is not None and any(lease.live(now) for lease in leases.values())


def live_holders(holders: Holders, now: float, enough: int) -> int:
    """How many of a license's ``holders`` hold a live lease at ``now``, as far as a
    comparison with ``enough`` goes: with fewer holders than ``enough``, live or not,
    their number (below ``enough`` too) without a look at their leases; else the live
    ones counted up to ``enough``, where the count stops (a full license of many holders
    costs no look at all of them)."""
    if len(holders) < enough:
        return len(holders)
    live = 0
    for leases in holders.values():
        if live >= enough:
            break
        live += _holds(leases, now)
    return live


def allocate(
    request: SeatRequest,
    licenses: Sequence[License],
    leases: Sequence[Lease],
    assigned: Iterable[str],
    now: float,
    holders: Callable[[str], Holders] | None = None,
) -> Grant | Denial:
    """Choose the licenses that give ``request`` a seat, or say why none do.

    ``licenses`` and ``leases`` are those of the requested product (``leases``
    only matter without ``holders``);
    ``assigned`` are the ids of the licenses the admin assigned to this
    client's product. Concurrent licenses are tried first (a seat the
    machine and user already hold is shared), then installed, then core.

    ``holders(license_id)`` gives a license's holders from an index kept
    elsewhere (the pool's), so that a request need not look at every lease:
    a license with fewer holders than seats, live or not, has a free seat;
    only a license that looks full has its holders' leases checked for life.
    Without it, the index is built from ``leases``.
    """
    if holders is None:
        index = index_holders(leases)
        holders = lambda license_id: index.get(license_id, {})  # noqa: E731
    candidates = [lic for lic in licenses if usable(lic, request, now)]
    if not candidates:
        return Denial("no-license", why_no_license(request, licenses, now))
    assigned = set(assigned)

    concurrent = [lic for lic in candidates if lic.kind == CONCURRENT]
    holder = (request.machine, request.user, request.product)
    for lic in concurrent:
        if _holds(holders(lic.id).get(holder), now):
            return Grant((lic.id,), CONCURRENT)
    for lic in concurrent:
        if live_holders(holders(lic.id), now, lic.seats) < lic.seats:
            return Grant((lic.id,), CONCURRENT)

    for lic in candidates:
        if lic.kind == INSTALLED and lic.id in assigned:
            return Grant((lic.id,), INSTALLED)

    cores = [lic for lic in candidates if lic.kind == CORE and lic.id in assigned]
    if cores and sum(lic.cores for lic in cores) >= request.cores:
        return Grant(tuple(lic.id for lic in cores), CORE)

    if concurrent:
        total = sum(lic.seats for lic in concurrent)
        return Denial(
            "no-seats", f"all {total} seats of {_product_name(request, concurrent)} are in use"
        )
    if cores:
        have = sum(lic.cores for lic in cores)
        return Denial(
            "insufficient-cores",
            f"the core licenses assigned to this machine cover {have} cores,"
            f" it asks for {request.cores}",
        )
    return Denial(
        "not-assigned",
        f"no {request.product} license is assigned to this machine: ask the admin",
    )


def _product_name(request: SeatRequest, licenses: Sequence[License]) -> str:
    editions = {lic.edition for lic in licenses if lic.edition}
    if len(editions) == 1:
        return f"{request.product} {editions.pop()}"
    return request.product


def assignment_problem(
    lic: License, machines_assigned: Iterable[str], client_id: str
) -> str | None:
    """Why ``lic`` may not be assigned to ``client_id``, or None when it may.

    ``machines_assigned`` are the clients it is assigned to now.
    """
    if lic.kind == CONCURRENT:
        return f"license {lic.id} is concurrent: its seats need no assignment"
    others = set(machines_assigned) - {client_id}
    if len(others) >= lic.seats:
        return f"license {lic.id} is already assigned to {lic.seats} machine(s)"
    return None
