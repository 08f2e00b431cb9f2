"""In-memory fakes of the server's interfaces, for tests of the parts that use them.

Each fake is run through the same behaviour tests as the real implementation
(``tests/test_store.py`` for ``FakeStore``), so a test that passes against a
fake says something true about the real thing.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.test import iosim
from zope.interface import implementer

from licenseserver import audit, model
from licenseserver.interfaces import ILicenseStore
from licenseserver.localstate import USAGE_SYNCED
from licenseserver.store import usagejobs
from licenseserver.store.changelog import decode_log_line, prepare_commit, prepare_entries
from licenseserver.store.checks import (
    check_change,
    check_event,
    check_local_name,
    check_newer,
    check_revision,
    conflict_error,
)
from licenseserver.store.errors import StoreClosedError
from licenseserver.store.jobs import FAMILY_END, local_text
from licenseserver.store.tables import TABLES, TableSpec, from_json, to_json
from licenseserver.store.writer import DEFAULT_KEEP_CHANGES, DEFAULT_TRIM_INTERVAL

_Rows = dict[str, dict[tuple, tuple]]


@implementer(ILicenseStore)
class FakeStore(service.Service):
    """An in-memory ILicenseStore that behaves like ``store.SQLiteStore``.

    Every call returns an already-fired Deferred. Records are kept as the
    rows SQLite would hold (through the same ``store.TABLES`` mapping) and
    every value goes through JSON, so what comes back is what SQLite would
    give back, and what SQLite refuses is refused here too. The change log is
    trimmed after every ``trim_interval`` commits to the last
    ``keep_changes`` revisions.

    ``failNext(exception)`` makes the next commit errback with
    ``exception``, with nothing written.
    """

    def __init__(
        self,
        *,
        keep_changes: int = DEFAULT_KEEP_CHANGES,
        trim_interval: int = DEFAULT_TRIM_INTERVAL,
    ) -> None:
        if keep_changes < 0 or trim_interval < 1:
            raise ValueError("keep_changes >= 0 and trim_interval >= 1")
        self._keepChanges = keep_changes
        self._trimInterval = trim_interval
        self._rows: _Rows = {kind: {} for kind in TABLES}
        self._revision = 0
        self._logStart = 0
        self._log: list[tuple[int, list[str]]] = []
        """The change log: each revision with its lines, as SQLite's rows hold them."""
        self._events: list[tuple[model.Event, str]] = []
        self.auditGroups: list[tuple[int, str, str, str]] = []
        """The audit chain as SQLite holds it: rows of (last, prev, hash, lines)."""
        self._local: dict[str, str] = {}
        self._failures: dict[str, list[BaseException]] = {}
        self._commitsSinceTrim = 0
        self._closed = False
        self._broken: str | None = None
        self._usage = sqlite3.connect(":memory:", check_same_thread=False)
        """The usage history's tables, run with the SQLite store's own SQL."""
        usagejobs.create_tables(self._usage)

    @property
    def auditRows(self) -> list[tuple]:
        """The audit chain's entries as ``audit.verify`` takes them."""
        return list(audit.rows_of_groups(self.auditGroups))

    # -- test hooks -------------------------------------------------------

    def failNext(self, exception: BaseException, method: str = "commit") -> None:
        """Make the next call of ``method`` errback with ``exception``, writing nothing.

        Calls queue up: two ``failNext`` make the next two calls fail.
        """
        self._failures.setdefault(method, []).append(exception)

    def breakDown(self, reason: str) -> None:
        """Stop as a store whose writer failed does: ``broken()`` gives ``reason``, and
        every later call errbacks with StoreClosedError."""
        self._broken = reason
        self._closed = True

    # -- life cycle -------------------------------------------------------

    def open(self) -> defer.Deferred:
        """Nothing to open; fires at once."""
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Refuse every later call with StoreClosedError, like a closed SQLiteStore."""
        self._closed = True
        return defer.succeed(None)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self.close()

    def broken(self) -> str | None:
        return self._broken

    def _call(self, method: str, run: Callable, *args: Any) -> defer.Deferred:
        if self._closed:
            why = f": {self._broken}" if self._broken else ""
            return defer.fail(StoreClosedError(f"the store is closed{why}"))
        planned = self._failures.get(method)
        if planned:
            return defer.fail(planned.pop(0))
        try:
            return defer.succeed(run(*args))
        except Exception:
            return defer.fail()

    # -- ILicenseStore ----------------------------------------------------

    def load(self) -> defer.Deferred:
        return self._call("load", self._load)

    def commit(
        self,
        revision: int,
        changes: Iterable[model.Change],
        audit: Iterable = (),
        patient: bool = False,
    ) -> defer.Deferred:
        return self._call("commit", self._commit, revision, list(changes), list(audit))

    def audit(self, entries: Iterable) -> defer.Deferred:
        return self._call("audit", self._audit, list(entries))

    def changesSince(self, revision: int) -> defer.Deferred:
        return self._call("changesSince", self._changesSince, revision)

    def replaceAll(self, snapshot: model.Snapshot) -> defer.Deferred:
        return self._call("replaceAll", self._replaceAll, snapshot)

    def addEvent(self, event: model.Event) -> defer.Deferred:
        return self._call("addEvent", self._addEvent, event)

    def events(self, limit: int) -> defer.Deferred:
        return self._call("events", self._eventsNewestFirst, limit)

    def getLocal(self, name: str) -> defer.Deferred:
        return self._call("getLocal", self._getLocal, name)

    def setLocal(self, name: str, value: Any) -> defer.Deferred:
        return self._call("setLocal", self._setLocal, name, value)

    def getLocals(self, prefix: str) -> defer.Deferred:
        return self._call("getLocals", self._getLocals, prefix)

    def addUsage(self, points: Any, denials: Any, now: int, held: Any = ()) -> defer.Deferred:
        return self._call("addUsage", usagejobs.add_usage, self._usage, points, denials, now, held)

    def usageSince(self, since: int) -> defer.Deferred:
        return self._call("usageSince", usagejobs.read_since, self._usage, since)

    def applyUsage(
        self, points: Any, denials: Any, held: Any, until: int, now: int
    ) -> defer.Deferred:
        def apply() -> None:
            usagejobs.apply_synced(self._usage, points, denials, held, now)
            self._setLocal(USAGE_SYNCED, until)

        return self._call("applyUsage", apply)

    def topHolders(
        self, product: str, since: int, until: int, by: str, limit: int
    ) -> defer.Deferred:
        return self._call(
            "topHolders", usagejobs.read_top, self._usage, product, since, until, by, limit
        )

    def usage(self, step: str, since: int, until: int, product: str | None) -> defer.Deferred:
        return self._call("usage", usagejobs.read_usage, self._usage, step, since, until, product)

    def denials(self, since: int, until: int, limit: int) -> defer.Deferred:
        return self._call("denials", usagejobs.read_denials, self._usage, since, until, limit)

    # -- the work, done at once -------------------------------------------

    def _load(self) -> model.Snapshot:
        records = {
            kind: [TABLES[kind].from_row(row) for _, row in sorted(rows.items())]
            for kind, rows in self._rows.items()
        }
        return model.Snapshot(self._revision, records)

    def _audit(self, entries: list) -> None:
        self._appendAudit(prepare_entries(entries))

    def _appendAudit(self, prepared: tuple) -> None:
        if not prepared:
            return
        tail = self.auditGroups[-1][0::2] if self.auditGroups else (0, audit.GENESIS)
        lines, (seq, digest) = audit.append_lines(tail, prepared)
        self.auditGroups.append((seq, tail[1], digest, "\n".join(lines)))

    def _commit(self, revision: Any, changes: list[model.Change], entries: list = ()) -> None:
        prepared = prepare_commit(revision, changes, entries)
        check_newer(prepared.revision, self._revision)
        undo: list[tuple[dict, tuple, tuple | None]] = []
        try:
            for spec, key, row in prepared.writes:
                rows = self._rows[spec.kind]
                undo.append((rows, key, rows.get(key)))
                _apply(rows, spec, key, row)
        except Exception:
            _undo(undo)
            raise
        self._revision = prepared.revision
        self._log.append((prepared.revision, list(prepared.lines)))
        self._appendAudit(prepared.entries)
        self._afterCommit()

    def _afterCommit(self) -> None:
        self._commitsSinceTrim += 1
        if self._commitsSinceTrim < self._trimInterval:
            return
        self._commitsSinceTrim = 0
        cutoff = self._revision - self._keepChanges
        if cutoff > self._logStart:
            self._log = [entry for entry in self._log if entry[0] > cutoff]
            self._logStart = cutoff

    def _changesSince(self, revision: Any) -> list | None:
        revision = check_revision(revision, minimum=None)
        if revision > self._revision or revision < self._logStart:
            return None
        return [
            (rev, [decode_log_line(line)[1] for line in lines])
            for rev, lines in self._log
            if rev > revision and lines
        ]

    def _replaceAll(self, snapshot: model.Snapshot) -> None:
        revision = check_revision(snapshot.revision)
        rows: _Rows = {kind: {} for kind in TABLES}
        for kind, records in snapshot.records.items():
            for record in records:
                change = model.Change(kind, getattr(record, "key", ()), record)
                spec = check_change(change)
                _apply(rows[spec.kind], spec, tuple(change.key), spec.to_row(record))
        self._rows = rows
        self._revision = revision
        self._logStart = revision
        self._log = []

    def _addEvent(self, event: model.Event) -> model.Event:
        check_event(event)
        stored = dataclasses.replace(event, id=len(self._events) + 1, data={})
        self._events.append((stored, to_json(event.data)))
        return dataclasses.replace(event, id=stored.id)

    def _eventsNewestFirst(self, limit: int) -> list[model.Event]:
        if limit <= 0:
            return []
        newest = self._events[::-1][:limit]
        return [dataclasses.replace(e, data=from_json(data)) for e, data in newest]

    def _getLocal(self, name: Any) -> Any:
        value = self._local.get(check_local_name(name))
        return None if value is None else from_json(value)

    def _getLocals(self, prefix: str) -> dict[str, Any]:
        return {
            name: from_json(value)
            for name, value in self._local.items()
            if name.startswith(prefix)
        }

    def _setLocal(self, name: Any, value: Any) -> None:
        name = check_local_name(name)
        text = local_text(name, value)
        if text is not None:
            self._local[name] = text
        elif name.endswith(FAMILY_END):
            for member in [other for other in self._local if other.startswith(name)]:
                del self._local[member]
        else:
            self._local.pop(name, None)


def _undo(undo: list[tuple[dict, tuple, tuple | None]]) -> None:
    """Put back the rows a failed commit had changed, newest change first."""
    for rows, key, old in reversed(undo):
        if old is None:
            rows.pop(key, None)
        else:
            rows[key] = old


def _apply(rows: dict[tuple, tuple], spec: TableSpec, key: tuple, row: tuple | None) -> None:
    """Put (or with None, delete) one checked row in a kind's rows, as SQLite would."""
    if row is None:
        rows.pop(key, None)
        return
    for group in spec.unique:
        positions = spec.indexes(group)
        values = [row[i] for i in positions]
        for other_key, other in rows.items():
            if other_key != key and [other[i] for i in positions] == values:
                raise conflict_error(spec, key)
    rows[key] = row


@implementer(IStreamClientEndpoint)
class PumpEndpoint:
    """A client endpoint that reaches ``serverFactory`` over in-memory iosim pumps.

    Bytes move only when the test calls ``flush``. Set ``up`` to False for a
    host that refuses connections, ``silent`` to True for a network that
    drops everything (nothing moves, nothing closes); ``kill`` is a server
    process that dies: its connections close and new ones are refused.
    """

    def __init__(self, serverFactory: Any):
        self.serverFactory = serverFactory
        self.up = True
        self.silent = False
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: Any) -> defer.Deferred:
        if not self.up:
            return defer.fail(error.ConnectionRefusedError("the server is down"))
        server = self.serverFactory.buildProtocol(iosim.FakeAddress())
        client = factory.buildProtocol(iosim.FakeAddress())
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=False,
        )
        self.pumps.append(pump)
        return defer.succeed(client)

    def flush(self) -> None:
        """Move every byte waiting in either direction (unless ``silent``)."""
        if self.silent:
            return
        for pump in list(self.pumps):
            pump.flush()
        self.pumps = [p for p in self.pumps if not p.clientIO.disconnected]

    def kill(self) -> None:
        """The server process dies: its connections close, new ones are refused."""
        self.up = False
        self.silent = False
        for pump in self.pumps:
            pump.serverIO.loseConnection()
        self.flush()

    def revive(self, serverFactory: Any = None) -> None:
        """The server is back (with a new factory, if given)."""
        if serverFactory is not None:
            self.serverFactory = serverFactory
        self.up = True
        self.silent = False
