"""The license pool held in memory: every synced record, indexed for lookups.

The role decides on the reactor thread from this pool and writes the result
through the store; ``apply`` changes the pool at once and returns the changes
that undo it, so a write the store refuses can be taken back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from licenseserver import allocation
from licenseserver.model import (
    KINDS,
    Assignment,
    Change,
    Client,
    Lease,
    License,
    Product,
    Setting,
    Snapshot,
)


class Pool:
    """Records by kind and key, with the indexes the seat rules need."""

    def __init__(self, revision: int = 0, records: Iterable[Any] = ()):
        self.revision = revision
        self._records: dict[str, dict[tuple[str, ...], Any]] = {k: {} for k in KINDS}
        self._client_by_machine: dict[str, str] = {}
        self._licenses_by_product: dict[str, set[str]] = defaultdict(set)
        self.highestClientNumber = 0
        """The highest n of the client ids ``c-<n>`` ever held: new clients count on."""
        self._leases_by_product: dict[str, set[str]] = defaultdict(set)
        self._leases_by_machine: dict[str, set[str]] = defaultdict(set)
        self._lease_by_request: dict[tuple[str, str], str] = {}
        self._holders: dict[str, dict[tuple, dict[str, Lease]]] = {}
        self._assignments_by_client: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        self._assignments_by_license: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for record in records:
            self._put(record.kind_name, record.key, record)

    @classmethod
    def fromSnapshot(cls, snapshot: Snapshot) -> Pool:
        """A pool holding ``snapshot``'s records at its revision."""
        return cls(snapshot.revision, snapshot.all())

    def snapshot(self) -> Snapshot:
        """Every record at the current revision."""
        return Snapshot(self.revision, {k: list(self._records[k].values()) for k in KINDS})

    # Changing

    def apply(self, changes: Iterable[Change]) -> list[Change]:
        """Apply ``changes`` in order; return the changes that undo them."""
        undo = []
        for change in changes:
            old = self._records[change.kind].get(change.key)
            undo.append(Change(change.kind, change.key, old))
            if change.record is None:
                self._delete(change.kind, change.key)
            else:
                self._put(change.kind, change.key, change.record)
        undo.reverse()
        return undo

    def _put(self, kind: str, key: tuple[str, ...], record: Any) -> None:
        old = self._records[kind].get(key)
        if kind == "lease" and old is not None and _sameIndexes(old, record):
            # A renewal: only the end changed, and the indexes hold the new record.
            self._records[kind][key] = record
            holder = (record.machine, record.user, record.product)
            for license_id in record.licenses:
                self._holders[license_id][holder][record.id] = record
            return
        if old is not None:
            self._delete(kind, key)
        self._records[kind][key] = record
        if kind == "client":
            self._client_by_machine[record.machine] = record.id
            number = record.id[2:]
            if record.id.startswith("c-") and number.isascii() and number.isdigit():
                self.highestClientNumber = max(self.highestClientNumber, int(number))
        elif kind == "license":
            self._licenses_by_product[record.product].add(record.id)
        elif kind == "lease":
            self._leases_by_product[record.product].add(record.id)
            self._leases_by_machine[record.machine].add(record.id)
            if record.request:
                self._lease_by_request[(record.machine, record.request)] = record.id
            holder = (record.machine, record.user, record.product)
            for license_id in record.licenses:
                self._holders.setdefault(license_id, {}).setdefault(holder, {})[record.id] = record
        elif kind == "assignment":
            self._assignments_by_client[record.client].add(key)
            self._assignments_by_license[record.license].add(key)

    def _delete(self, kind: str, key: tuple[str, ...]) -> None:
        record = self._records[kind].pop(key, None)
        if record is None:
            return
        if kind == "client":
            self._client_by_machine.pop(record.machine, None)
        elif kind == "license":
            _discard(self._licenses_by_product, record.product, record.id)
        elif kind == "lease":
            _discard(self._leases_by_product, record.product, record.id)
            _discard(self._leases_by_machine, record.machine, record.id)
            slot = (record.machine, record.request)
            if record.request and self._lease_by_request.get(slot) == record.id:
                # An expired lease may still hold the key a later retry reused.
                del self._lease_by_request[slot]
            holder = (record.machine, record.user, record.product)
            for license_id in record.licenses:
                found = self._holders[license_id]
                found[holder].pop(record.id)
                if not found[holder]:
                    del found[holder]
                if not found:
                    del self._holders[license_id]
        elif kind == "assignment":
            _discard(self._assignments_by_client, record.client, key)
            _discard(self._assignments_by_license, record.license, key)

    # Reading

    def get(self, kind: str, *key: str) -> Any:
        """The record of ``kind`` under ``key``, or None."""
        return self._records[kind].get(key)

    def all(self, kind: str) -> Iterator[Any]:
        """Every record of ``kind``."""
        return iter(list(self._records[kind].values()))

    def count(self, kind: str) -> int:
        """How many records of ``kind`` the pool holds."""
        return len(self._records[kind])

    def license(self, license_id: str) -> License | None:
        return self._records["license"].get((license_id,))

    def licensesFor(self, product: str) -> list[License]:
        """The licenses of ``product``, in id order."""
        licenses = self._records["license"]
        return [licenses[(i,)] for i in sorted(self._licenses_by_product.get(product, ()))]

    def client(self, client_id: str) -> Client | None:
        return self._records["client"].get((client_id,))

    def clientByMachine(self, machine: str) -> Client | None:
        client_id = self._client_by_machine.get(machine)
        return None if client_id is None else self.client(client_id)

    def productsOf(self, client_id: str) -> list[Product]:
        return sorted(
            (p for p in self._records["product"].values() if p.client == client_id),
            key=lambda p: p.product,
        )

    def assignmentsOf(self, client_id: str, product: str | None = None) -> list[Assignment]:
        """The client's assignments, optionally only those for ``product``."""
        out = [
            self._records["assignment"][k] for k in self._assignments_by_client.get(client_id, ())
        ]
        if product is not None:
            out = [a for a in out if a.product == product]
        return sorted(out, key=lambda a: a.key)

    def assignmentsOfLicense(self, license_id: str) -> list[Assignment]:
        assignments = self._records["assignment"]
        return [assignments[k] for k in sorted(self._assignments_by_license.get(license_id, ()))]

    def seatsInUse(self, now: float) -> dict[str, int]:
        """Seats in use of every license at ``now``, in one pass over the leases."""
        holders = allocation.holders_by_license(
            list(self._records["license"].values()), self._records["lease"].values(), now
        )
        return {license_id: len(found) for license_id, found in holders.items()}

    def lease(self, lease_id: str) -> Lease | None:
        return self._records["lease"].get((lease_id,))

    def leasesFor(self, product: str) -> list[Lease]:
        leases = self._records["lease"]
        return [leases[(i,)] for i in self._leases_by_product.get(product, ())]

    def holdersOf(self, license_id: str) -> allocation.Holders:
        """Who holds leases of a license (``allocation.Holders``), live or not."""
        return self._holders.get(license_id, {})

    def leasesOfMachine(self, machine: str) -> list[Lease]:
        leases = self._records["lease"]
        return [leases[(i,)] for i in self._leases_by_machine.get(machine, ())]

    def leaseByRequest(self, machine: str, request: str) -> Lease | None:
        lease_id = self._lease_by_request.get((machine, request))
        return None if lease_id is None else self.lease(lease_id)

    def setting(self, name: str, default: Any = None) -> Any:
        record: Setting | None = self._records["setting"].get((name,))
        return default if record is None else record.value


def _discard(index: dict, key: Any, value: Any) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(value)
        if not members:
            del index[key]


def _sameIndexes(old: Any, new: Any) -> bool:
    """Whether two leases of one id sit in the same places of the pool's indexes."""
    return (
        old.machine == new.machine
        and old.user == new.user
        and old.product == new.product
        and old.request == new.request
        and old.licenses == new.licenses
    )
