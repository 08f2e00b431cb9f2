"""The ledger: the one owner of the license pool's state. Roles decide; the ledger records.

Everything that changes the pool goes through here, on the reactor thread:

- ``commit``: a client's grant, renewal or release, an admin change, a
  takeover's renewals. The pool changes at once, so the next request sees it;
  the store makes it durable; if the store refuses, the pool is put back.
- ``renew``: lease renewals, which reach the disk only when the end the store
  holds is less than half a lease time ahead (``storedExpiry``); the pool
  always has the new end.
- ``applySync``: a failover's incremental sync, the primary's changes under
  the primary's revisions, through the same commit; a failed write reloads
  the pool from the store, which is what is durable.
- ``replace``: a failover's full sync, and ``restore``: a handback to the
  pool saved at takeover (the pool at once, the store right after).

The pool (``pool.Pool``) is for reading; nothing but the ledger calls its
``apply``. ``committedRevision`` is the newest revision the store holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from licenseserver.audit import AuditEntry
from licenseserver.interfaces import ILedger
from licenseserver.model import Change, Lease, Snapshot
from licenseserver.pool import Pool
from licenseserver.protocols.wire import ProtocolError


@implementer(ILedger)
class Ledger:
    """The pool of one server, kept in memory and written through ``store``."""

    log = Logger()

    def __init__(self, store: Any):
        self.store = store
        self.pool = Pool()
        """The records as they are now, for reading."""
        self.committedRevision = 0
        """The newest revision the store has made durable."""
        self.storedExpiry: dict[str, int] = {}
        """Each lease's end as the store holds it, or will once the write on its way
        is durable (the pool's may be later). A write that fails puts back what was
        there before it."""

    @property
    def revision(self) -> int:
        """The pool's revision: the last change applied, durable or on its way."""
        return self.pool.revision

    def snapshot(self) -> Snapshot:
        """Every record at the pool's revision."""
        return self.pool.snapshot()

    def load(self, snapshot: Snapshot) -> None:
        """Hold ``snapshot`` as read from the store (durable as it is)."""
        self.pool = Pool.fromSnapshot(snapshot)
        self.committedRevision = snapshot.revision
        self.storedExpiry = {lease.id: lease.expires for lease in self.pool.all("lease")}

    def start(self, snapshot: Snapshot) -> None:
        """Hold ``snapshot`` as a server reads it when it starts, after a crash perhaps.

        A renewal reaches the store only once the stored end is less than half
        a lease time ahead (``renew``), so a client may have been told an end
        up to half a lease time past the stored one. Each running lease lives
        in the pool until that latest end (``latest_end``): a restarted server
        never gives a seat away while its holder may still count on it. The
        store keeps the stored ends; the next renewal writes as usual.

        A lease on disk whose end has passed may come back to life this way:
        that is safe because a grant never reuses the seat of an ended lease
        without deleting it in the same write (``ClientOperations``), so every
        lease on disk still held its seat when the server stopped.
        """
        self.load(snapshot)
        self.pool.apply(
            [
                Change.put(dataclasses.replace(lease, expires=latest_end(lease)))
                for lease in self.pool.all("lease")
                if not lease.borrowed and not lease.revoked
            ]
        )

    def commit(
        self,
        changes: Sequence[Change],
        audited: Iterable[AuditEntry] = (),
        *,
        patient: bool = False,
        result: Any = None,
        revision: int | None = None,
    ) -> defer.Deferred:
        """Apply ``changes`` to the pool now and write them through the store.

        The pool takes the next revision, or ``revision`` (a sync's, which
        comes from the primary). Fires with ``result`` once the changes, and
        the ``audited`` entries for the audit log, are durable together. If the
        store refuses them, the pool is put back as it was and the Deferred
        fails with a ``ProtocolError`` of ``internal-error``.
        """
        undo = self.pool.apply(changes)
        self.pool.revision = self.pool.revision + 1 if revision is None else revision
        revision = self.pool.revision
        written = self.storedExpiry
        before: dict[str, int | None] = {}
        for change in changes:
            if change.kind == "lease":
                lease_id = change.key[0]
                before.setdefault(lease_id, written.get(lease_id))
                if change.record is None:
                    written.pop(lease_id, None)
                else:
                    written[lease_id] = change.record.expires
        d = self.store.commit(revision, changes, tuple(audited), patient)

        def stored(ignored: Any) -> Any:
            if revision > self.committedRevision:
                self.committedRevision = revision
            return result

        def failed(failure: Any) -> None:
            self.pool.apply(undo)
            for lease_id, expires in before.items():
                if expires is None:
                    written.pop(lease_id, None)
                else:
                    written[lease_id] = expires
            self.log.failure("A change could not be stored; it was taken back", failure)
            why = getattr(failure.value, "reason", None) or "a storage error"
            raise ProtocolError("internal-error", f"nothing was stored: {why}")

        d.addCallbacks(stored, failed)
        return d

    def renew(
        self, leases: Sequence[Lease], now: int
    ) -> tuple[list[Lease], defer.Deferred | None]:
        """Move the leases' end to ``now`` plus their lease time.

        Returns the renewed leases, and the Deferred of their write or None
        when none is needed. The pool takes the new end at once; the store
        only when the end it holds is less than half a lease time ahead. A
        client heartbeats every quarter lease time, so most heartbeats cost no
        disk write, and after a crash a lease still lives at least half a lease
        time past its last heartbeat (the failover, which syncs from the store,
        sees the same).
        """
        renewed = [lease.renewed(now + lease.ttl) for lease in leases]
        changes = [Change.put(lease) for lease in renewed]
        stored = self.storedExpiry
        if any(stored.get(lease.id, 0) - now < lease.ttl / 2 for lease in leases):
            return renewed, self.commit(changes, patient=True)
        self.pool.apply(changes)
        return renewed, None

    async def applySync(self, groups: Iterable[tuple[int, list[Change]]]) -> None:
        """Apply a sync's changes, each group under its revision, and make them durable.

        The groups go through ``commit`` in order. If a write fails, the pool
        is reloaded from the store (the writes before it may be durable, those
        after it not), and the failure is raised: the next sync goes on from
        what the store holds.
        """
        writes = [self.commit(changes, revision=revision) for revision, changes in groups]
        try:
            await defer.gatherResults(writes, consumeErrors=True)
        except defer.FirstError as e:
            self.load(await self.store.load())
            raise e.subFailure.value from None

    async def replace(self, snapshot: Snapshot) -> None:
        """Replace everything with ``snapshot`` (a failover's full sync): store, then pool."""
        await self.store.replaceAll(snapshot)
        self.load(snapshot)

    def restore(self, snapshot: Snapshot) -> defer.Deferred:
        """Go back to ``snapshot`` at once (a handback) and make it durable.

        The pool is ``snapshot``'s now, so nothing served meanwhile is seen
        again; the returned Deferred fires once the store holds it too.
        """
        self.load(snapshot)
        return defer.ensureDeferred(self.store.replaceAll(snapshot))


def latest_end(lease: Lease) -> int:
    """The latest end a client may have been told of ``lease`` when the store holds it.

    Renewals are written only once the stored end is less than half a lease
    time ahead (``Ledger.renew``): a renewal at ``t`` that was not written
    told ``t + ttl`` while the stored end was at least ``t + ttl / 2``. A
    borrowed lease is never renewed: its stored end is its end.
    """
    return lease.expires if lease.borrowed else lease.expires + lease.ttl // 2
