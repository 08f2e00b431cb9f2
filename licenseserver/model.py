"""Immutable records of the license pool, and the change that moves one.

Every record kind that the failover syncs is listed in ``KINDS``; each record
knows its ``key`` (a tuple of strings, unique within its kind). A ``Change``
puts a record under its key or, with ``record=None``, deletes the key. The
store, the in-memory pool and the sync all speak in changes, so a record kind
added here is stored, loaded and synced without touching them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

CONCURRENT = "concurrent"
INSTALLED = "installed"
CORE = "core"
LICENSE_KINDS = (CONCURRENT, INSTALLED, CORE)


@dataclass(frozen=True)
class License:
    """A signed license in the pool.

    The fields from ``id`` to ``max_version`` are the vendor's terms, which
    the signature covers (see ``signing.py``). ``active`` is the admin's
    switch and ``added`` the time the license entered the pool; neither is
    signed.

    ``seats`` means concurrent users for ``concurrent``, machines for
    ``installed`` and ``core``; ``cores`` is the cores each machine of a
    ``core`` license gets (0 for the other kinds). Dates are ``YYYY-MM-DD``
    in UTC.

    ``failover_policy`` (``full`` or ``exact``) and ``failover_share`` (``20%``
    or a seat count) are optional signed terms (FAILOVER.md rule 15): None
    when the vendor left them to the server's settings.
    """

    kind_name: ClassVar[str] = "license"

    id: str
    product: str
    edition: str
    kind: str
    seats: int
    cores: int
    licensee: str
    issued: str
    starts: str | None
    expires: str | None
    max_version: str | None
    key_id: str
    signature: str
    active: bool = True
    added: int = 0
    failover_policy: str | None = None
    failover_share: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return (self.id,)


@dataclass(frozen=True)
class Client:
    """A registered machine: one per ``machine`` id, created by HELLO."""

    kind_name: ClassVar[str] = "client"

    id: str
    machine: str
    host: str
    registered: int
    last_seen: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.id,)


@dataclass(frozen=True)
class Product:
    """A product registered by a client's HELLO, with the version last seen."""

    kind_name: ClassVar[str] = "product"

    client: str
    product: str
    version: str
    user: str
    cores: int
    last_seen: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.client, self.product)


@dataclass(frozen=True)
class Assignment:
    """The admin's assignment of a license to a client's product."""

    kind_name: ClassVar[str] = "assignment"

    client: str
    product: str
    license: str

    @property
    def key(self) -> tuple[str, ...]:
        return (self.client, self.product, self.license)


@dataclass(frozen=True)
class Agreement:
    """An accepted license agreement of a license."""

    kind_name: ClassVar[str] = "agreement"

    license: str
    accepted_by: str
    accepted: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.license,)


@dataclass(frozen=True)
class Lease:
    """A seat in use: granted by CHECKOUT or BORROW, renewed by HEARTBEAT.

    ``licenses`` names the licenses the seat comes from: one, or for a
    ``core`` grant every core license whose cores were added up. A lease
    whose ``expires`` has passed holds no seat, whether or not it has been
    removed yet. ``request`` is the client's idempotency key ("" for none).

    ``revoked``: an admin ended the lease (``DELETE /api/leases/{id}``) at
    ``expires``. It holds no seat, and stays (``ClientOperations.lingers``)
    while its holder may still count on it, so that a HEARTBEAT of it gets
    ``410 revoked`` rather than ``404 unknown-lease``.
    """

    kind_name: ClassVar[str] = "lease"

    id: str
    client: str
    machine: str
    user: str
    product: str
    version: str
    licenses: tuple[str, ...]
    kind: str
    granted: int
    expires: int
    ttl: int
    borrowed: bool = False
    request: str = ""
    revoked: bool = False

    @property
    def key(self) -> tuple[str, ...]:
        return (self.id,)

    def live(self, now: float) -> bool:
        """Whether the lease still holds its seat at ``now``."""
        return now < self.expires

    def renewed(self, expires: int) -> Lease:
        """This lease ending at ``expires``: ``dataclasses.replace`` without its look at
        every field, for the busiest change there is (a heartbeat's)."""
        copy = object.__new__(Lease)
        copy.__dict__.update(self.__dict__, expires=expires)
        return copy


@dataclass(frozen=True)
class Setting:
    """A setting that affects licensing, synced to the failover.

    ``value`` is any JSON value.
    """

    kind_name: ClassVar[str] = "setting"

    name: str
    value: Any

    @property
    def key(self) -> tuple[str, ...]:
        return (self.name,)


RECORD_TYPES: tuple[type, ...] = (
    License,
    Client,
    Product,
    Assignment,
    Agreement,
    Lease,
    Setting,
)
KINDS: dict[str, type] = {t.kind_name: t for t in RECORD_TYPES}


@dataclass(frozen=True)
class Change:
    """Put ``record`` under ``key`` of ``kind``, or delete the key when None."""

    kind: str
    key: tuple[str, ...]
    record: Any = None

    @classmethod
    def put(cls, record: Any) -> Change:
        return cls(record.kind_name, record.key, record)

    @classmethod
    def delete(cls, record: Any) -> Change:
        return cls(record.kind_name, record.key, None)


@dataclass(frozen=True)
class Event:
    """Something the admin should read in Messages; kept locally, not synced.

    ``severity`` is ``info``, ``warning`` or ``error``; ``kind`` a stable
    token such as ``unmet-request`` or ``takeover``.
    """

    time: int
    kind: str
    severity: str
    message: str
    data: dict = field(default_factory=dict)
    id: int = 0


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The names of a record class's fields, in order (looked up once per class)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def record_to_dict(record: Any) -> dict:
    """The JSON-ready fields of a record (tuples become lists)."""
    out = {}
    for name in field_names(type(record)):
        value = getattr(record, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def record_from_dict(kind: str, data: dict) -> Any:
    """Rebuild a record of ``kind`` from ``record_to_dict`` output.

    Unknown fields are dropped and missing ones take their defaults, so a
    newer peer's records load where the fields allow it.
    """
    cls = KINDS[kind]
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if f.name == "licenses":
                value = tuple(value)
            values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class Snapshot:
    """Every synced record at one revision: ``records`` maps kind to a list."""

    revision: int
    records: dict[str, list] = field(default_factory=dict)

    def all(self) -> list:
        """Every record, in the order of ``KINDS``."""
        return [r for kind in KINDS for r in self.records.get(kind, [])]
