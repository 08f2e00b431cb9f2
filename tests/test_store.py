"""Tests for ``licenseserver.store`` and its in-memory twin ``testing.FakeStore``.

``StoreTestsMixin`` holds the behaviour every ILicenseStore must show; it runs
once against a real SQLite file written by the real thread and once against
the fake. What only SQLite has (files, WAL, group commit, schema checks) is
tested in ``SQLiteStoreTests`` alone.
"""

from __future__ import annotations

import dataclasses
import queue
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver import audit, model, store, usage
from licenseserver.audit import AuditEntry
from licenseserver.interfaces import ILicenseStore
from licenseserver.model import Change
from licenseserver.testing import FakeStore

LICENSE = model.License(
    id="L-1",
    product="XMLSpy",
    edition="Enterprise",
    kind=model.CONCURRENT,
    seats=5,
    cores=0,
    licensee="ACME",
    issued="2025-01-01",
    starts=None,
    expires=None,
    max_version=None,
    key_id="k1",
    signature="c2ln",
    active=False,
    added=17,
)
CORE_LICENSE = dataclasses.replace(
    LICENSE,
    id="L-2",
    kind=model.CORE,
    cores=8,
    starts="2025-02-01",
    expires="2026-02-01",
    max_version="2025r2",
    active=True,
)
CLIENT = model.Client("c-1", "m-1", "ws17", 100, 200)
OTHER_CLIENT = model.Client("c-2", "m-2", "ws18", 101, 201)
PRODUCT = model.Product("c-1", "XMLSpy", "2025r2", "anna", 4, 200)
OTHER_PRODUCT = model.Product("c-1", "MapForce", "2024r1", "anna", 4, 200)
ASSIGNMENT = model.Assignment("c-1", "XMLSpy", "L-1")
AGREEMENT = model.Agreement("L-1", "admin", 300)
LEASE = model.Lease(
    id="l-1",
    client="c-1",
    machine="m-1",
    user="anna",
    product="XMLSpy",
    version="2025r2",
    licenses=("L-1", "L-2"),
    kind=model.CORE,
    granted=400,
    expires=520,
    ttl=120,
    borrowed=True,
    request="7f3a",
)
LEASE_WITHOUT_LICENSES = dataclasses.replace(LEASE, id="l-2", licenses=(), borrowed=False)
SETTING = model.Setting("borrow", {"days": [1, 7], "enabled": True, "note": None})
NULL_SETTING = model.Setting("nothing", None)
TEXT_SETTING = model.Setting("motd", "hello, world")

EVERY_KIND = [
    LICENSE,
    CORE_LICENSE,
    CLIENT,
    OTHER_CLIENT,
    PRODUCT,
    OTHER_PRODUCT,
    ASSIGNMENT,
    AGREEMENT,
    LEASE,
    LEASE_WITHOUT_LICENSES,
    SETTING,
    NULL_SETTING,
    TEXT_SETTING,
]


def by_kind(records: list) -> dict[str, list]:
    """Records grouped by kind and sorted by key, as ``load`` returns them."""
    out: dict[str, list] = {kind: [] for kind in model.KINDS}
    for record in sorted(records, key=lambda r: r.key):
        out[record.kind_name].append(record)
    return out


def puts(*records: Any) -> list[Change]:
    return [Change.put(r) for r in records]


class StoreTestsMixin:
    """Behaviour of every ILicenseStore; the TestCase supplies ``makeStore``."""

    async def makeStore(self, **kwargs: Any) -> Any:
        """A ready, empty store; closed again when the test ends."""
        raise NotImplementedError

    async def test_providesInterface(self) -> None:
        """The store provides every method of ILicenseStore."""
        s = await self.makeStore()
        self.assertTrue(verifyObject(ILicenseStore, s))

    async def test_notBrokenWhenClosed(self) -> None:
        """A working store is not broken, nor is one closed as asked; it then refuses calls."""
        s = await self.makeStore()
        self.assertIsNone(s.broken())
        await s.close()
        self.assertIsNone(s.broken())
        with self.assertRaises(store.StoreClosedError):
            await s.commit(1, puts(CLIENT))

    async def test_emptyStore(self) -> None:
        """A new store is at revision 0 with no records and an empty change log."""
        s = await self.makeStore()
        snapshot = await s.load()
        self.assertEqual(snapshot, model.Snapshot(0, by_kind([])))
        self.assertEqual(await s.changesSince(0), [])

    async def test_roundTripEveryKind(self) -> None:
        """Records of every kind load back equal: tuples, None dates, booleans, JSON."""
        s = await self.makeStore()
        await s.commit(1, puts(*EVERY_KIND))
        snapshot = await s.load()
        self.assertEqual(snapshot, model.Snapshot(1, by_kind(EVERY_KIND)))
        leases = snapshot.records["lease"]
        self.assertEqual([type(lease.licenses) for lease in leases], [tuple, tuple])
        self.assertIs(snapshot.records["license"][0].active, False)

    async def test_changesRoundTrip(self) -> None:
        """The change log gives back the committed changes, in order."""
        s = await self.makeStore()
        changes = puts(*EVERY_KIND) + [Change.delete(OTHER_PRODUCT)]
        await s.commit(1, changes)
        self.assertEqual(await s.changesSince(0), [(1, changes)])

    async def test_putThenDelete(self) -> None:
        """A delete removes the record, and the log records it as a None record."""
        s = await self.makeStore()
        await s.commit(1, puts(LEASE, CLIENT))
        await s.commit(2, [Change.delete(LEASE)])
        snapshot = await s.load()
        self.assertEqual(snapshot, model.Snapshot(2, by_kind([CLIENT])))
        self.assertEqual(await s.changesSince(1), [(2, [Change("lease", ("l-1",), None)])])

    async def test_putReplaces(self) -> None:
        """A put under an existing key replaces the record."""
        s = await self.makeStore()
        renewed = dataclasses.replace(LEASE, expires=999)
        await s.commit(1, puts(LEASE))
        await s.commit(2, puts(renewed))
        snapshot = await s.load()
        self.assertEqual(snapshot.records["lease"], [renewed])

    async def test_deleteOfMissingKey(self) -> None:
        """Deleting a key that holds nothing is allowed and logged."""
        s = await self.makeStore()
        await s.commit(1, [Change.delete(LEASE)])
        self.assertEqual((await s.load()).revision, 1)

    async def test_revisionMustGrow(self) -> None:
        """A commit whose revision is not after the stored one is refused, writing nothing."""
        s = await self.makeStore()
        await s.commit(2, puts(CLIENT))
        for revision in (2, 1, 0):
            with self.assertRaises(ValueError):
                await s.commit(revision, puts(LEASE))
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind([CLIENT])))
        self.assertEqual(await s.changesSince(0), [(2, puts(CLIENT))])

    async def test_malformedChangesRefused(self) -> None:
        """Unknown kinds, keys that are not the record's, and unsplittable lists are refused."""
        s = await self.makeStore()
        bad = [
            Change("widget", ("w",), None),
            Change("lease", ("other",), LEASE),
            Change("lease", ("l-1", "x"), None),
            Change("client", ("l-1",), LEASE),
            Change.put(dataclasses.replace(LEASE, licenses=("L-1,L-2",))),
        ]
        for change in bad:
            with self.assertRaises(ValueError):
                await s.commit(1, [change])
        self.assertEqual(await s.load(), model.Snapshot(0, by_kind([])))

    async def test_commitIsAtomic(self) -> None:
        """A commit with one bad change writes none of its changes and keeps the revision."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT, LEASE))
        renewed = [dataclasses.replace(LEASE, expires=n) for n in (600, 700)]
        changes = [Change.put(renewed[0]), Change.delete(CLIENT), Change.put(renewed[1])]
        with self.assertRaises(ValueError):
            await s.commit(2, changes + puts(LICENSE) + [Change("widget", ("w",), None)])
        self.assertEqual(await s.load(), model.Snapshot(1, by_kind([CLIENT, LEASE])))
        self.assertEqual(await s.changesSince(0), [(1, puts(CLIENT, LEASE))])
        await s.commit(2, changes)

    async def test_machineIsUnique(self) -> None:
        """A second client with the same machine is a ConflictError; nothing is written."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT))
        twin = dataclasses.replace(OTHER_CLIENT, machine=CLIENT.machine)
        with self.assertRaises(store.ConflictError):
            await s.commit(2, puts(LICENSE, twin))
        self.assertEqual(await s.load(), model.Snapshot(1, by_kind([CLIENT])))
        await s.commit(2, [Change.delete(CLIENT), Change.put(twin)])
        self.assertEqual((await s.load()).records["client"], [twin])

    async def test_changesSinceIsIncremental(self) -> None:
        """changesSince gives every later revision in order, and [] at the current one."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT))
        await s.commit(2, puts(PRODUCT, ASSIGNMENT))
        await s.commit(5, [Change.delete(PRODUCT)])
        self.assertEqual(
            await s.changesSince(1),
            [(2, puts(PRODUCT, ASSIGNMENT)), (5, [Change.delete(PRODUCT)])],
        )
        self.assertEqual(await s.changesSince(2), [(5, [Change.delete(PRODUCT)])])
        self.assertEqual(await s.changesSince(3), [(5, [Change.delete(PRODUCT)])])
        self.assertEqual(await s.changesSince(5), [])

    async def test_changesSinceAhead(self) -> None:
        """changesSince a revision this store never reached is None."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT))
        self.assertIsNone(await s.changesSince(2))

    async def test_trimmedLog(self) -> None:
        """Once trimmed, the log reaches back keep_changes revisions and no further."""
        s = await self.makeStore(keep_changes=2, trim_interval=1)
        for revision in range(1, 6):
            await s.commit(revision, puts(dataclasses.replace(CLIENT, last_seen=revision)))
        self.assertEqual([r for r, _ in await s.changesSince(3)], [4, 5])
        self.assertIsNone(await s.changesSince(2))
        self.assertIsNone(await s.changesSince(0))
        self.assertEqual((await s.load()).records["client"][0].last_seen, 5)

    async def test_trimKeepsEnough(self) -> None:
        """However commits fall between trims, the last keep_changes revisions stay."""
        s = await self.makeStore(keep_changes=3, trim_interval=2)
        for revision in range(1, 11):
            await s.commit(revision, puts(dataclasses.replace(CLIENT, last_seen=revision)))
            since = max(0, revision - 3)
            got = await s.changesSince(since)
            self.assertEqual([r for r, _ in got], list(range(since + 1, revision + 1)))

    async def test_replaceAll(self) -> None:
        """replaceAll swaps every record and the revision, and restarts the log there."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT, LEASE, SETTING))
        snapshot = model.Snapshot(10, by_kind([OTHER_CLIENT, LICENSE, TEXT_SETTING]))
        await s.replaceAll(snapshot)
        self.assertEqual(await s.load(), snapshot)
        self.assertEqual(await s.changesSince(10), [])
        self.assertIsNone(await s.changesSince(9))
        await s.commit(11, puts(AGREEMENT))
        self.assertEqual(await s.changesSince(10), [(11, puts(AGREEMENT))])

    async def test_replaceAllMayGoBack(self) -> None:
        """replaceAll takes a lower revision too (a failover handing back)."""
        s = await self.makeStore()
        await s.commit(7, puts(CLIENT))
        await s.replaceAll(model.Snapshot(3, {"lease": [LEASE]}))
        self.assertEqual(await s.load(), model.Snapshot(3, by_kind([LEASE])))

    async def test_replaceAllRefusesBadSnapshot(self) -> None:
        """A snapshot with an unknown kind or a misfiled record changes nothing."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT))
        for records in ({"widget": [CLIENT]}, {"lease": [CLIENT]}):
            with self.assertRaises(ValueError):
                await s.replaceAll(model.Snapshot(5, records))
        self.assertEqual(await s.load(), model.Snapshot(1, by_kind([CLIENT])))
        self.assertEqual(await s.changesSince(0), [(1, puts(CLIENT))])

    async def test_eventsNewestFirst(self) -> None:
        """Events get increasing ids and come back newest first, up to the limit."""
        s = await self.makeStore()
        added = []
        for n in range(3):
            event = model.Event(1000 + n, "takeover", "info", f"event {n}", {"n": [n, None]})
            added.append(await s.addEvent(event))
        self.assertEqual([e.id for e in added], sorted({e.id for e in added}))
        self.assertEqual(
            added[0],
            model.Event(1000, "takeover", "info", "event 0", {"n": [0, None]}, added[0].id),
        )
        self.assertEqual(await s.events(2), [added[2], added[1]])
        self.assertEqual(await s.events(10), added[::-1])
        self.assertEqual(await s.events(0), [])

    async def test_eventsAreNotRevisioned(self) -> None:
        """Events and local values do not touch the revision or the change log."""
        s = await self.makeStore()
        await s.addEvent(model.Event(1, "x", "info", "m"))
        await s.setLocal("role", "failover")
        self.assertEqual(await s.load(), model.Snapshot(0, by_kind([])))
        self.assertEqual(await s.changesSince(0), [])

    async def test_usageHistory(self) -> None:
        """Minute rows and refusals are kept outside the revisions; the hour row is derived;
        refusals come back newest first."""
        s = await self.makeStore()
        t = 1_780_000_000 // 3600 * 3600
        points = [usage.Point("1m", "L-1", "XMLSpy", t + 60 * n, float(n), n, 1) for n in (1, 2)]
        refusals = [usage.Denial(t + n, "XMLSpy", f"m{n}", "u", "no-seats") for n in (1, 2)]
        await s.addUsage(points, refusals, t + 600)
        self.assertEqual(await s.usage("1m", t, t + 3600, "XMLSpy"), points)
        self.assertEqual(
            await s.usage("1h", t, t + 3600, None),
            [usage.Point("1h", "L-1", "XMLSpy", t, 1.5, 2, 2)],
        )
        self.assertEqual(await s.usage("1m", t, t + 3600, "Other"), [])
        self.assertEqual(await s.denials(t, t + 60, 10), refusals[::-1])
        self.assertEqual(await s.load(), model.Snapshot(0, by_kind([])))

    async def test_badEventRefused(self) -> None:
        """An event whose data is not JSON is refused and not stored."""
        s = await self.makeStore()
        with self.assertRaises(ValueError):
            await s.addEvent(model.Event(1, "x", "info", "m", {"bad": object()}))
        self.assertEqual(await s.events(10), [])

    async def test_localValues(self) -> None:
        """Local values hold any JSON value; unset is None, and None removes one."""
        s = await self.makeStore()
        self.assertIsNone(await s.getLocal("primary"))
        await s.setLocal("primary", {"host": "ls1", "port": 35355, "tls": False})
        await s.setLocal("role", "failover")
        self.assertEqual(await s.getLocal("primary"), {"host": "ls1", "port": 35355, "tls": False})
        await s.setLocal("role", ["a", 1])
        self.assertEqual(await s.getLocal("role"), ["a", 1])
        await s.setLocal("role", None)
        self.assertIsNone(await s.getLocal("role"))

    async def test_nonJsonLocalRefused(self) -> None:
        """A local value that is not JSON is refused, keeping the old one."""
        s = await self.makeStore()
        await s.setLocal("x", 1)
        with self.assertRaises(ValueError):
            await s.setLocal("x", {1, 2})
        self.assertEqual(await s.getLocal("x"), 1)

    async def test_closedStoreRefuses(self) -> None:
        """Every call on a closed store errbacks with StoreClosedError."""
        s = await self.makeStore()
        await s.close()
        with self.assertRaises(store.StoreClosedError):
            await s.commit(1, puts(CLIENT))
        with self.assertRaises(store.StoreClosedError):
            await s.load()

    async def test_localsByPrefix(self) -> None:
        """``getLocals`` gives the values whose names start with the prefix, taken as
        it is written (no pattern)."""
        s = await self.makeStore()
        await s.setLocal("note:a", [1])
        await s.setLocal("note:b", {"x": 2})
        await s.setLocal("notes", 3)
        await s.setLocal("n_te:c", 4)
        self.assertEqual(await s.getLocals("note:"), {"note:a": [1], "note:b": {"x": 2}})
        self.assertEqual(await s.getLocals("n_te"), {"n_te:c": 4})
        await s.setLocal("note:a", None)
        self.assertEqual(await s.getLocals("note:"), {"note:b": {"x": 2}})

    async def test_familyRemovedWhole(self) -> None:
        """A name that ends in ``:`` names a family: None removes every member (and only
        them); the family takes no value of its own, and refusing one loses nothing."""
        s = await self.makeStore()
        await s.setLocal("note:a", [1])
        await s.setLocal("note:b", 2)
        await s.setLocal("notes", 3)
        await s.setLocal("other:c", 4)
        await s.setLocal("note:", None)
        self.assertEqual(await s.getLocals("note"), {"notes": 3})
        self.assertEqual(await s.getLocal("other:c"), 4)
        with self.assertRaises(ValueError):
            await s.setLocal("note:", [5])
        self.assertEqual(await s.getLocals("note"), {"notes": 3})

    async def test_familyInOneTurn(self) -> None:
        """Notes and a family's removal set in one reactor turn (one batch) take effect in
        the order they were set, a name set again included."""
        s = await self.makeStore()
        await s.setLocal("note:old", 0)
        written = [
            s.setLocal("note:a", 1),
            s.setLocal("note:b", 2),
            s.setLocal("note:", None),
            s.setLocal("note:a", 3),
            s.setLocal("note:c", 4),
        ]
        await defer.gatherResults(written)
        self.assertEqual(await s.getLocals("note:"), {"note:a": 3, "note:c": 4})


class _WriterBug(BaseException):
    """An error no job handler catches: it ends the writer thread's loop."""


class SQLiteStoreTests(StoreTestsMixin, unittest.TestCase):
    """The mixin against a real file and the real writer thread, plus SQLite's own."""

    def newPath(self) -> Path:
        data = Path(self.mktemp())
        data.mkdir()
        return data / store.DATABASE_NAME

    async def makeStore(self, path: Path | None = None, **kwargs: Any) -> store.SQLiteStore:
        s = store.SQLiteStore(path or self.newPath(), reactor, **kwargs)
        self.addCleanup(s.close)
        await s.open()
        return s

    async def test_reopenKeepsEverything(self) -> None:
        """A store reopened on the same file has every record, the log, events and locals."""
        path = self.newPath()
        first = await self.makeStore(path)
        await first.commit(1, puts(*EVERY_KIND))
        await first.commit(2, [Change.delete(LEASE)])
        event = await first.addEvent(model.Event(5, "takeover", "warning", "took over"))
        await first.setLocal("admin", {"hash": "x"})
        await first.close()

        second = await self.makeStore(path)
        expected = [r for r in EVERY_KIND if r is not LEASE]
        self.assertEqual(await second.load(), model.Snapshot(2, by_kind(expected)))
        self.assertEqual([r for r, _ in await second.changesSince(0)], [1, 2])
        self.assertEqual(await second.events(5), [event])
        self.assertEqual(await second.getLocal("admin"), {"hash": "x"})

    async def test_walAndFullSync(self) -> None:
        """The connection runs in WAL mode with full syncs and no foreign keys."""
        s = await self.makeStore()

        def pragmas(conn: sqlite3.Connection) -> tuple:
            return tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys")
            )

        self.assertEqual(await s._runInWriter(pragmas), ("wal", 2, 0))

    async def test_batchInMultiRowStatements(self) -> None:
        """A commit writes one change-log row and one audit row; table rows go in
        multi-row statements of a few fixed sizes, at once or at the checkpoint."""
        s = await self.makeStore()
        statements: list[str] = []
        await s._runInWriter(lambda conn: conn.set_trace_callback(statements.append))
        count = sum(store.ROWS_PER_STATEMENT)
        clients = [
            dataclasses.replace(CLIENT, id=f"c-{n}", machine=f"m-{n}") for n in range(count)
        ]
        products = [dataclasses.replace(PRODUCT, client=f"c-{n}") for n in range(count)]
        entries = [AuditEntry(n, "grant", {"n": n}) for n in range(count)]
        await s.commit(1, puts(*clients, *products), entries)
        snapshot = await s.load()
        self.assertEqual(snapshot, model.Snapshot(1, by_kind(clients + products)))
        await s.commit(2, [Change.delete(p) for p in products[1:]])
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind(clients + products[:1])))
        self.assertEqual(len(await s.changesSince(0)), 2)
        self.assertEqual(len((await s.changesSince(0))[0][1]), 2 * count)

        def written(prefix: str) -> list[str]:
            return [t for t in statements if t.startswith(prefix)]

        sizes = len(store.ROWS_PER_STATEMENT)
        self.assertEqual(len(written("INSERT INTO clients")), sizes)
        self.assertEqual(len(written("INSERT INTO change_log")), 2)
        self.assertEqual(len(written("INSERT INTO audit_log")), 1)
        self.assertEqual(written("INSERT INTO products") + written("DELETE FROM products"), [])
        await s._checkpointNow()
        self.assertEqual(len(written("INSERT INTO products")), 1)
        self.assertEqual(len(written("DELETE FROM products")), sizes - 1)
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind(clients + products[:1])))
        verdict = await s._runInWriter(
            lambda conn: audit.verify(
                audit.rows_of_groups(conn.execute("SELECT * FROM audit_log ORDER BY last"))
            )
        )
        self.assertEqual(verdict, audit.Verdict(count))

    async def test_failingJobFailsAlone(self) -> None:
        """A job that fails inside a batch is rolled back alone; the others commit."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            before = s.transactions
            first = s.commit(1, puts(CLIENT))

            def halfThenFail(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO settings (name, value) VALUES ('half', '1')")
                raise RuntimeError("half way")

            bad = s._runInWriter(halfThenFail, store.WRITE)
            refused = s.commit(1, puts(LEASE))
            second = s.commit(2, puts(LICENSE))
        finally:
            release()
        await first
        with self.assertRaises(RuntimeError):
            await bad
        with self.assertRaises(ValueError):
            await refused
        await second
        self.assertEqual(s.transactions - before, 1)
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind([CLIENT, LICENSE])))

    async def test_writerCrashAnswersItsBatch(self) -> None:
        """When the writer thread itself fails, the jobs of the batch it was running fail
        with its error rather than wait for ever; the store is broken, and refuses what
        comes after with the reason."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:

            def crash(conn: sqlite3.Connection) -> None:
                raise _WriterBug("a bug in the writer")

            crashed = s._runInWriter(crash)
            behind = s.commit(1, puts(CLIENT))
            reading = s.changesSince(0)  # queued behind the commit: one batch of three
        finally:
            release()
        for d in (crashed, behind, reading):
            d.addTimeout(30, reactor)
            with self.assertRaises(_WriterBug):
                await d
        await s.close()  # fires once the thread has shut the store down
        self.assertEqual(s.broken(), "a bug in the writer")
        with self.assertRaises(store.StoreClosedError) as caught:
            await s.commit(1, puts(CLIENT))
        self.assertIn("a bug in the writer", str(caught.exception))
        self.assertEqual(len(self.flushLoggedErrors(_WriterBug)), 1)

    async def test_groupCommit(self) -> None:
        """Commits issued at once land in fewer transactions than there are commits."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            before = s.transactions
            clients = [dataclasses.replace(CLIENT, id=f"c{n}", machine=f"m{n}") for n in range(50)]
            done = [s.commit(n + 1, puts(c)) for n, c in enumerate(clients)]
        finally:
            release()
        await defer.gatherResults(done)
        self.assertEqual(s.transactions - before, 1)
        self.assertEqual(await s.load(), model.Snapshot(50, by_kind(clients)))

    async def test_localValuesJoinTheCommits(self) -> None:
        """Local values set between commits share their transaction, in order; only each
        name's last value is written, and every caller hears it is done."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            before = s.transactions
            done = [s.setLocal("removed_unacknowledged", [1]), s.commit(1, puts(CLIENT))]
            done += [s.setLocal("removed_unacknowledged", [1, 2]), s.commit(2, puts(LICENSE))]
        finally:
            release()
        await defer.gatherResults(done)
        self.assertEqual(s.transactions - before, 1)
        self.assertEqual(await s.getLocal("removed_unacknowledged"), [1, 2])
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind([CLIENT, LICENSE])))

    async def test_badLocalNameFailsAlone(self) -> None:
        """A local value the store refuses fails alone; the commits beside it are written."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            first = s.commit(1, puts(CLIENT))
            bad = s.setLocal("", 1)
            second = s.commit(2, puts(LICENSE))
        finally:
            release()
        await first
        with self.assertRaises(ValueError):
            await bad
        await second
        self.assertEqual(await s.load(), model.Snapshot(2, by_kind([CLIENT, LICENSE])))

    async def test_changesSinceWithinATransaction(self) -> None:
        """A revision in the middle of one transaction's change-log row is a good start."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            clients = [dataclasses.replace(CLIENT, id=f"c{n}", machine=f"m{n}") for n in range(5)]
            done = [s.commit(n + 1, puts(c)) for n, c in enumerate(clients)]
        finally:
            release()
        await defer.gatherResults(done)
        query = "SELECT last FROM change_log"
        rows = await s._runInWriter(lambda conn: conn.execute(query).fetchall())
        self.assertEqual(rows, [(5,)])
        self.assertEqual(await s.changesSince(3), [(4, puts(clients[3])), (5, puts(clients[4]))])

    async def test_batchWritingAKeyTwice(self) -> None:
        """Commits of one batch that write the same key land in order."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            renamed = dataclasses.replace(CLIENT, host="renamed")
            done = [
                s.commit(1, puts(CLIENT)),
                s.commit(2, puts(renamed)),
                s.commit(3, [model.Change.put(LICENSE), model.Change.delete(CLIENT)]),
                s.commit(4, puts(CLIENT)),
            ]
        finally:
            release()
        await defer.gatherResults(done)
        self.assertEqual(await s.load(), model.Snapshot(4, by_kind([CLIENT, LICENSE])))

    async def test_conflictInBatchFailsAlone(self) -> None:
        """A commit that breaks a unique machine fails alone; its batch commits the rest."""
        s = await self.makeStore()
        blocked, release = s._pauseWriter()
        await blocked
        try:
            before = s.transactions
            twin = dataclasses.replace(CLIENT, id="c-twin")
            first = s.commit(1, puts(CLIENT))
            clash = s.commit(2, puts(twin))
            third = s.commit(3, puts(LICENSE))
        finally:
            release()
        await first
        with self.assertRaises(store.ConflictError):
            await clash
        await third
        self.assertEqual(s.transactions - before, 1)
        self.assertEqual(await s.load(), model.Snapshot(3, by_kind([CLIENT, LICENSE])))

    async def test_concurrentCommitsWithoutPause(self) -> None:
        """Many commits issued at once all land, in revision order."""
        s = await self.makeStore()
        clients = [dataclasses.replace(CLIENT, id=f"c{n}", machine=f"m{n}") for n in range(300)]
        await defer.gatherResults([s.commit(n + 1, puts(c)) for n, c in enumerate(clients)])
        self.assertEqual([r for r, _ in await s.changesSince(0)], list(range(1, 301)))

    async def test_diskFull(self) -> None:
        """A full disk errbacks every job of the batch with StoreWriteError, writing nothing."""
        s = await self.makeStore()
        await s.commit(1, puts(CLIENT))

        def limitSize(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await s._runInWriter(limitSize)
        big = model.Setting("big", "x" * 200_000)
        blocked, release = s._pauseWriter()
        await blocked
        try:
            small = s.commit(2, puts(OTHER_CLIENT))
            full = s.commit(3, puts(big))
            failed: list[str] = []
            small.addErrback(lambda f: failed.append("small") or f)
            full.addErrback(lambda f: failed.append("full") or f)
        finally:
            release()
        for d in (small, full):
            with self.assertRaises(store.StoreWriteError) as caught:
                await d
            self.assertEqual(caught.exception.code, "SQLITE_FULL")
            self.assertIn("disk is full", str(caught.exception))
        self.assertEqual(failed, ["full", "small"], "a lost batch fails newest first")
        self.assertEqual(await s.load(), model.Snapshot(1, by_kind([CLIENT])))
        await s._runInWriter(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        await s.commit(2, puts(big))
        self.assertEqual((await s.load()).records["setting"], [big])

    async def test_readOnly(self) -> None:
        """A database that cannot be written errbacks with a StoreWriteError that says so."""
        s = await self.makeStore()
        await s._runInWriter(lambda conn: conn.execute("PRAGMA query_only = ON"))
        with self.assertRaises(store.StoreWriteError) as caught:
            await s.commit(1, puts(CLIENT))
        self.assertIn("read-only", str(caught.exception))
        await s._runInWriter(lambda conn: conn.execute("PRAGMA query_only = OFF"))
        self.assertEqual(await s.load(), model.Snapshot(0, by_kind([])))

    async def test_closeFinishesQueuedWork(self) -> None:
        """close fires after the jobs queued before it have run and been committed."""
        path = self.newPath()
        s = await self.makeStore(path)
        done = [s.commit(n, puts(dataclasses.replace(CLIENT, last_seen=n))) for n in (1, 2, 3)]
        await s.close()
        self.assertEqual([d.called for d in done], [True, True, True])
        again = await self.makeStore(path)
        self.assertEqual((await again.load()).revision, 3)

    async def test_callsBeforeOpenWait(self) -> None:
        """Calls made before open run once the database is open."""
        s = store.SQLiteStore(self.newPath(), reactor)
        self.addCleanup(s.close)
        loading = s.load()
        await s.open()
        self.assertEqual((await loading).revision, 0)

    async def test_service(self) -> None:
        """As a service the store opens on start and closes on stop."""
        s = store.SQLiteStore(self.newPath(), reactor)
        s.startService()
        self.assertEqual((await s.load()).revision, 0)
        await s.stopService()
        with self.assertRaises(store.StoreClosedError):
            await s.load()

    async def test_missingDirectory(self) -> None:
        """A missing data directory fails the open clearly; later calls say why."""
        path = Path(self.mktemp()) / store.DATABASE_NAME
        s = store.SQLiteStore(path, reactor)
        queued = s.load()
        with self.assertRaises(store.StoreError) as caught:
            await s.open()
        self.assertIn("does not exist", str(caught.exception))
        with self.assertRaises(store.StoreClosedError):
            await queued
        with self.assertRaises(store.StoreClosedError) as later:
            await s.load()
        self.assertIn("does not exist", str(later.exception))
        self.assertFalse(path.parent.exists())

    async def test_olderSchemaRefused(self) -> None:
        """A database at an older schema is refused with the upgrade command, untouched."""
        path = self.newPath()
        await (await self.makeStore(path)).close()
        before = path.read_bytes()
        step = (store.SCHEMA_VERSION + 1, lambda conn: conn.execute("CREATE TABLE x (y)"))
        s = store.SQLiteStore(path, reactor, migrations=store.MIGRATIONS + [step])
        with self.assertRaises(store.SchemaError) as caught:
            await s.open()
        message = str(caught.exception)
        current = store.SCHEMA_VERSION
        self.assertIn(f"is at schema {current}, this server needs {current + 1}", message)
        self.assertIn(f"licenseserver upgrade --data {path.parent}", message)
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(store.check_database(path), store.SCHEMA_VERSION)

    async def test_newerSchemaRefused(self) -> None:
        """A database at a schema newer than this server's is refused."""
        path = self.newPath()
        await (await self.makeStore(path)).close()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
        conn.close()
        with self.assertRaises(store.SchemaError) as caught:
            await store.SQLiteStore(path, reactor).open()
        self.assertIn("newer than this server", str(caught.exception))
        with self.assertRaises(store.SchemaError):
            store.require_current_schema(path)

    async def test_foreignDatabaseRefused(self) -> None:
        """A SQLite file with tables but no schema version is not taken for ours."""
        path = self.newPath()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE other (x)")
        conn.close()
        with self.assertRaises(store.SchemaError):
            await store.SQLiteStore(path, reactor).open()
        with self.assertRaises(store.SchemaError):
            store.check_database(path)

    async def test_checkDatabase(self) -> None:
        """check_database gives 0 without a file, the schema after, and leaves no files."""
        path = self.newPath()
        self.assertEqual(store.check_database(path), 0)
        self.assertFalse(path.exists())
        await (await self.makeStore(path)).close()
        self.assertEqual(store.check_database(path), store.SCHEMA_VERSION)
        self.assertEqual(store.require_current_schema(path), store.SCHEMA_VERSION)
        self.assertEqual(sorted(p.name for p in path.parent.iterdir()), [path.name])

    def crashCopy(self, path: Path) -> Path:
        """The database files as a crash would leave them now (the WAL included)."""
        copy = self.newPath()
        for suffix in ("", "-wal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                copy.with_name(copy.name + suffix).write_bytes(source.read_bytes())
        return copy

    def tableRows(self, path: Path, table: str) -> list[tuple]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(f"SELECT * FROM {table}").fetchall()
        finally:
            conn.close()

    async def test_leasesReachTheirTableAtCheckpoints(self) -> None:
        """Kinds without unique columns reach their tables only at a checkpoint, which
        comes once checkpoint_every rows are owed; loads see them before that."""
        path = self.newPath()
        s = await self.makeStore(path, checkpoint_every=3)
        self.assertTrue(store.TABLES["lease"].checkpointed)
        self.assertFalse(store.TABLES["client"].checkpointed)
        leases = [dataclasses.replace(LEASE, id=f"l-{n}") for n in range(3)]
        await s.commit(1, puts(CLIENT, leases[0]))
        await s.commit(2, puts(leases[1]))
        self.assertEqual(len(self.tableRows(path, "clients")), 1)
        self.assertEqual(self.tableRows(path, "leases"), [])
        self.assertEqual(
            (await s.load()).records["lease"], sorted(leases[:2], key=lambda r: r.key)
        )
        self.assertEqual(s.checkpoints, 0)
        await s.commit(3, puts(leases[2]))
        await s.load()  # runs after the checkpoint that the third lease set off
        self.assertEqual(s.checkpoints, 1)
        self.assertEqual(
            sorted(r[0] for r in self.tableRows(path, "leases")), ["l-0", "l-1", "l-2"]
        )
        await s.commit(4, [Change.delete(leases[0])])
        await s.close()
        self.assertEqual(sorted(r[0] for r in self.tableRows(path, "leases")), ["l-1", "l-2"])

    async def test_crashLosesNoOwedRow(self) -> None:
        """A store opened on what a crash left reads the rows its tables still owed from
        the change log, and so does read_snapshot; nothing is written to open it."""
        path = self.newPath()
        s = await self.makeStore(path)
        await s.commit(1, puts(CLIENT, LEASE, SETTING))
        await s.commit(2, [Change.delete(LEASE), Change.put(LEASE_WITHOUT_LICENSES)])
        crashed = self.crashCopy(path)
        self.assertEqual(self.tableRows(crashed, "leases"), [])
        expected = model.Snapshot(2, by_kind([CLIENT, LEASE_WITHOUT_LICENSES, SETTING]))
        self.assertEqual(store.read_snapshot(crashed), expected)
        again = await self.makeStore(crashed)
        self.assertEqual(await again.load(), expected)
        self.assertEqual([r for r, _ in await again.changesSince(0)], [1, 2])
        await again.commit(3, [Change.delete(SETTING)])
        await again.close()
        self.assertEqual(
            [r[0] for r in self.tableRows(crashed, "leases")], [LEASE_WITHOUT_LICENSES.id]
        )
        self.assertEqual(self.tableRows(crashed, "settings"), [])

    async def test_trimKeepsWhatTablesOwe(self) -> None:
        """The log is trimmed past owed rows only after a checkpoint has written them."""
        path = self.newPath()
        s = await self.makeStore(path, keep_changes=1, trim_interval=1)
        for revision in range(1, 5):
            lease = dataclasses.replace(LEASE, id=f"l-{revision}", expires=revision)
            await s.commit(revision, puts(lease))
        self.assertIsNone(await s.changesSince(2))
        self.assertEqual([r for r, _ in await s.changesSince(3)], [4])
        self.assertGreaterEqual(s.checkpoints, 1)
        crashed = self.crashCopy(path)
        self.assertEqual(
            [lease.id for lease in store.read_snapshot(crashed).records["lease"]],
            ["l-1", "l-2", "l-3", "l-4"],
        )

    async def test_replaceAllVoidsOwedRows(self) -> None:
        """Rows owed before a replaceAll are not written after it."""
        path = self.newPath()
        s = await self.makeStore(path)
        await s.commit(1, puts(LEASE, SETTING))
        snapshot = model.Snapshot(5, by_kind([LEASE_WITHOUT_LICENSES]))
        await s.replaceAll(snapshot)
        await s.commit(6, puts(TEXT_SETTING))
        await s.close()
        again = await self.makeStore(path)
        self.assertEqual(
            await again.load(), model.Snapshot(6, by_kind([LEASE_WITHOUT_LICENSES, TEXT_SETTING]))
        )
        self.assertEqual([r[0] for r in self.tableRows(path, "leases")], ["l-2"])

    async def test_failedCheckpointKeepsRowsOwed(self) -> None:
        """A checkpoint the disk refuses leaves the rows owed; a later one writes them."""
        path = self.newPath()
        s = await self.makeStore(path)
        big = model.Setting("big", "x" * 200_000)
        await s.commit(1, puts(LEASE, big))

        def limitSize(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await s._runInWriter(limitSize)
        self.assertFalse(await s._checkpointNow())
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.Error)), 1)
        self.assertEqual(self.tableRows(path, "settings"), [])
        self.assertEqual(await s.load(), model.Snapshot(1, by_kind([LEASE, big])))
        await s._runInWriter(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        self.assertTrue(await s._checkpointNow())
        self.assertEqual([r[0] for r in self.tableRows(path, "leases")], [LEASE.id])
        self.assertEqual([r[0] for r in self.tableRows(path, "settings")], ["big"])

    async def test_tablesMatchSchema(self) -> None:
        """Each kind's table spec names the record's fields and the table's columns."""
        s = await self.makeStore()

        def columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
            return {
                spec.table: [row[1] for row in conn.execute(f"PRAGMA table_info({spec.table})")]
                for spec in store.TABLES.values()
            }

        actual = await s._runInWriter(columns)
        self.assertEqual(set(store.TABLES), set(model.KINDS))
        for kind, spec in store.TABLES.items():
            fields = [f.name for f in dataclasses.fields(model.KINDS[kind])]
            self.assertEqual([c.name for c in spec.columns], fields)
            self.assertEqual(actual[spec.table], fields)
            example = next(r for r in EVERY_KIND if r.kind_name == kind)
            self.assertEqual(tuple(getattr(example, name) for name in spec.key), example.key)

    def test_checkpointedKinds(self) -> None:
        """Every kind without unique columns has a checkpointed table; a kind with unique
        columns cannot have one, since its table must refuse a clash at commit time."""
        checkpointed = {kind for kind, spec in store.TABLES.items() if spec.checkpointed}
        self.assertEqual(
            checkpointed, {"license", "product", "assignment", "agreement", "lease", "setting"}
        )
        self.assertEqual(
            checkpointed, {kind for kind, spec in store.TABLES.items() if not spec.unique}
        )
        with self.assertRaises(ValueError):
            dataclasses.replace(store.TABLES["client"], checkpointed=True)


class CommitDelayTests(unittest.TestCase):
    """How the writer thread gathers a batch, with its queue replaced by a recording one."""

    class RecordingQueue:
        """The writer's queue holding ``jobs``, each as an entry of its own."""

        def __init__(self, jobs):
            self.jobs = list(jobs)
            self.waits = []

        def get(self, timeout=None):
            self.waits.append(timeout)
            if not self.jobs:
                raise queue.Empty
            return [self.jobs.pop(0)]

        def get_nowait(self):
            return self.get(None)

    def gather(self, delay, patient, *later):
        s = store.SQLiteStore(Path(self.mktemp()), reactor, commit_delay=delay)
        s._queue = self.RecordingQueue([self.job(patient), *later])
        batch, stop = s._nextBatch()
        return s._queue.waits, batch

    def job(self, patient=False):
        return store._Job(store.WRITE, lambda conn: None, defer.Deferred(), 1, patient)

    def test_gatherUnderLoad(self):
        """After a batch of several jobs, the writer lets the gather delay pass first."""
        s = store.SQLiteStore(Path(self.mktemp()), reactor, gather_delay=0.002)
        slept = []
        s._sleep = slept.append
        s._queue = self.RecordingQueue([self.job(), self.job(), self.job()])
        batch, _ = s._nextBatch()
        self.assertEqual((len(batch), slept), (3, []), "a first batch does not wait")
        s._queue = self.RecordingQueue([self.job(), self.job()])
        batch, _ = s._nextBatch()
        self.assertEqual((len(batch), slept), (2, [0.002]))
        s._queue = self.RecordingQueue([self.job()])
        s._nextBatch()
        s._queue = self.RecordingQueue([self.job()])
        s._nextBatch()
        self.assertEqual(slept, [0.002, 0.002], "after a lone job, the next does not wait")

    def test_noGatherByDefaultForRenewalsOrReads(self):
        """No gather delay set, a renewal (it has its own wait) or a read: nothing sleeps."""
        read = store._Job(store.READ, lambda conn: None, defer.Deferred())
        for delay, first in ((0.0, self.job()), (0.002, self.job(True)), (0.002, read)):
            s = store.SQLiteStore(Path(self.mktemp()), reactor, gather_delay=delay)
            slept = []
            s._sleep = slept.append
            s._lastBatch = 5
            s._queue = self.RecordingQueue([first])
            s._nextBatch()
            self.assertEqual(slept, [])

    def test_patientWriteWaits(self):
        """A patient write (a renewal) that finds the queue empty waits up to the delay."""
        waits, batch = self.gather(0.5, True)
        self.assertIsNone(waits[0])
        self.assertTrue(0 < waits[1] <= 0.5)
        self.assertEqual(len(batch), 1)

    def test_urgentWriteEndsTheWait(self):
        """A write someone waits for, arriving during the wait, ends it at once."""
        waits, batch = self.gather(0.5, True, self.job())
        self.assertEqual(waits[2], None)
        self.assertEqual(len(batch), 2)

    def test_urgentWritesDoNotWait(self):
        """Without a commit delay, or for a write someone waits on, nothing waits."""
        for delay, patient in ((0.0, True), (0.5, False)):
            waits, _ = self.gather(delay, patient)
            self.assertEqual(waits, [None, None])


class FakeStoreTests(StoreTestsMixin, unittest.TestCase):
    """The mixin against the in-memory fake, plus its failure hook."""

    async def makeStore(self, **kwargs: Any) -> FakeStore:
        return FakeStore(**kwargs)

    async def test_failNext(self) -> None:
        """failNext makes the next commit errback with the given error, writing nothing."""
        s = await self.makeStore()
        s.failNext(store.StoreWriteError("disk full"))
        with self.assertRaises(store.StoreWriteError):
            await s.commit(1, puts(CLIENT))
        self.assertEqual(await s.load(), model.Snapshot(0, by_kind([])))
        await s.commit(1, puts(CLIENT))
        self.assertEqual((await s.load()).revision, 1)

    def test_deferredsHaveFired(self) -> None:
        """Every call returns a Deferred that has already fired."""
        s = FakeStore()
        self.assertEqual(self.successResultOf(s.load()).revision, 0)
        self.failureResultOf(s.commit(0, []), ValueError)


class SchemaTwoTests(unittest.TestCase):
    """Migration 2: the change log and the audit chain as one row per transaction."""

    def schemaOne(self, entries: int, tamper: int | None = None, text: str = "") -> Path:
        """A schema-1 database at revision 7 with a client, a change log and an audit chain."""
        path = Path(self.mktemp())
        path.mkdir()
        path = path / store.DATABASE_NAME
        conn = store.connect(path, create=True)
        store.migrate(conn, store.MIGRATIONS[:1])
        conn.execute("BEGIN")
        conn.execute("INSERT INTO clients VALUES ('c-1', 'm-1', 'ws17', 100, 200)")
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'revision'")
        conn.execute(
            "INSERT INTO changes VALUES (7, 0, 'client', '[\"c-1\"]', '{\"id\":\"c-1\"}')"
        )
        previous = audit.GENESIS
        for seq in range(1, entries + 1):
            data = {"machine": f"m-{seq}", "n": [seq, None]}
            if text:
                data["text"] = text
            entry = AuditEntry(1000 + seq, "grant", data)
            digest = audit.chain(previous, seq, entry)
            data = audit.data_text(entry)
            if seq == tamper:
                data = data.replace(f"m-{seq}", "m-forged")
            conn.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                (seq, entry.time, entry.kind, data, previous, digest),
            )
            previous = digest
        conn.execute("COMMIT")
        conn.close()
        return path

    def migrated(self, path: Path) -> audit.Verdict:
        conn = store.connect(path)
        try:
            self.assertEqual(store.migrate(conn), store.SCHEMA_VERSION)
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            self.assertFalse({"changes", "audit"} & tables)
            groups = conn.execute("SELECT last, prev, hash, lines FROM audit_log ORDER BY last")
            return audit.verify(audit.rows_of_groups(groups.fetchall()))
        finally:
            conn.close()

    def test_auditChainMovesOver(self) -> None:
        """Every audit entry moves over, in groups, and the chain still verifies."""
        path = self.schemaOne(2500)
        self.assertEqual(self.migrated(path), audit.Verdict(2500))
        conn = sqlite3.connect(path)
        groups = conn.execute("SELECT last, prev FROM audit_log ORDER BY last").fetchall()
        conn.close()
        self.assertEqual([last for last, _ in groups], [1000, 2000, 2500])
        self.assertEqual(groups[0][1], audit.GENESIS)

    def test_lineSeparatorsInData(self) -> None:
        """Text with the characters Python counts as line ends (U+2028, U+2029, U+0085,
        a form feed) moves over as it was written: the chain still verifies."""
        path = self.schemaOne(3, text="a\u2028b\u2029c\x85d\x0ce")
        self.assertEqual(self.migrated(path), audit.Verdict(3))

    def test_brokenLinkStaysBroken(self) -> None:
        """An entry changed before the migration is still found after it."""
        verdict = self.migrated(self.schemaOne(5, tamper=3))
        self.assertEqual((verdict.broken_at, verdict.entries), (3, 2))

    async def test_logRestartsAtTheRevision(self) -> None:
        """The records stay; the change log restarts at the current revision."""
        path = self.schemaOne(1)
        self.migrated(path)
        s = store.SQLiteStore(path, reactor)
        self.addCleanup(s.close)
        await s.open()
        self.assertEqual(await s.load(), model.Snapshot(7, by_kind([CLIENT])))
        self.assertEqual(await s.changesSince(7), [])
        self.assertIsNone(await s.changesSince(6))
        await s.commit(8, puts(LEASE), [AuditEntry(2000, "grant", {})])
        self.assertEqual(await s.changesSince(7), [(8, puts(LEASE))])
        await s.close()
        self.assertTrue(audit.verify_database(path).ok)
        self.assertEqual(audit.verify_database(path).entries, 2)


class SchemaTests(unittest.TestCase):
    """The migration list itself."""

    def test_migrationsInOrder(self) -> None:
        """Migrations are numbered 1, 2, ... and end at SCHEMA_VERSION."""
        versions = [version for version, _ in store.MIGRATIONS]
        self.assertEqual(versions, list(range(1, len(versions) + 1)))
        self.assertEqual(versions[-1], store.SCHEMA_VERSION)

    def test_migrateOnlyRunsMissingSteps(self) -> None:
        """migrate runs the steps a database lacks, each once."""
        ran = []
        steps = [(1, lambda conn: ran.append(1)), (2, lambda conn: ran.append(2))]
        conn = sqlite3.connect(":memory:", isolation_level=None)
        self.assertEqual(store.migrate(conn, steps[:1]), 1)
        self.assertEqual(store.migrate(conn, steps), 2)
        self.assertEqual(store.migrate(conn, steps), 2)
        self.assertEqual(ran, [1, 2])

    def test_failingStepLeavesPreviousVersion(self) -> None:
        """A step that fails is rolled back with its version bump."""

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE half (x)")
            raise RuntimeError("broken step")

        conn = sqlite3.connect(":memory:", isolation_level=None)
        with self.assertRaises(RuntimeError):
            store.migrate(conn, store.MIGRATIONS + [(store.SCHEMA_VERSION + 1, broken)])
        self.assertEqual(store.schema_version(conn), store.SCHEMA_VERSION)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("half", tables)


def migratedWithOldLine(
    testcase: unittest.TestCase, version: int, record: Any, columns: int
) -> Path:
    """A database made at schema ``version`` whose change log holds ``record`` as that
    schema wrote it (its first ``columns`` values), migrated to the current schema."""
    path = Path(testcase.mktemp())
    path.mkdir()
    path = path / store.DATABASE_NAME
    conn = store.connect(path, create=True)
    store.migrate(conn, store.MIGRATIONS[:version])
    conn.execute("BEGIN")
    row = store.TABLES[record.kind_name].to_row(record)[:columns]
    old_line = store.log_line(1, record.kind_name, record.key, row)
    conn.execute("INSERT INTO change_log (last, lines) VALUES (1, ?)", (old_line,))
    conn.execute("UPDATE meta SET value = '1' WHERE name = 'revision'")
    conn.execute("COMMIT")
    testcase.assertEqual(store.migrate(conn), store.SCHEMA_VERSION)
    conn.close()
    return path


class SchemaThreeTests(unittest.TestCase):
    """Migration 3: licenses gain the optional partition terms (FAILOVER.md rule 15)."""

    async def test_migratedDatabaseKeepsItsLicenses(self) -> None:
        """A schema-2 database with a license, written by the schema-2 code path, opens
        after migration 3 with the license as it was and no partition terms; a license
        with terms is stored and loaded with them."""
        path = migratedWithOldLine(self, 2, LICENSE, 15)
        s = store.SQLiteStore(path, reactor)
        self.addCleanup(s.close)
        await s.open()
        (loaded,) = (await s.load()).records["license"]
        self.assertEqual(loaded, LICENSE)
        self.assertIsNone(loaded.failover_policy)
        self.assertEqual(await s.changesSince(0), [(1, puts(LICENSE))])
        exact = dataclasses.replace(LICENSE, id="L-X", failover_policy="exact", failover_share="3")
        await s.commit(2, puts(exact))
        await s.close()
        s = store.SQLiteStore(path, reactor)
        await s.open()
        licenses = {lic.id: lic for lic in (await s.load()).records["license"]}
        self.assertEqual(licenses["L-X"], exact)

    def test_longerRowRefused(self) -> None:
        """A row with more values than the table has columns does not read."""
        row = store.TABLES["license"].to_row(LICENSE) + ("extra",)
        self.assertRaises(ValueError, store.TABLES["license"].from_row, row)


class SchemaFiveTests(unittest.TestCase):
    """Migration 5: the usage history's tables."""

    async def test_usageSurvivesReopening(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        path = path / store.DATABASE_NAME
        conn = store.connect(path, create=True)
        store.migrate(conn, store.MIGRATIONS[:4])
        self.assertEqual(store.migrate(conn), store.SCHEMA_VERSION)
        conn.close()
        point = usage.Point("1m", "L-1", "XMLSpy", 1_780_000_020, 1.0, 1, 0)
        s = store.SQLiteStore(path, reactor)
        await s.open()
        await s.addUsage([point], [], point.t)
        await s.close()
        s = store.SQLiteStore(path, reactor)
        self.addCleanup(s.close)
        await s.open()
        self.assertEqual(await s.usage("1m", point.t - 60, point.t + 60, None), [point])


class SchemaFourTests(unittest.TestCase):
    """Migration 4: leases gain ``revoked`` (an admin ended them)."""

    async def test_migratedDatabaseKeepsItsLeases(self) -> None:
        """A schema-3 database with a lease, and a change-log line of the shorter row, opens
        after migration 4 with the lease as it was, not revoked; a revoked lease is
        stored and loaded revoked."""
        path = migratedWithOldLine(self, 3, LEASE, 13)
        s = store.SQLiteStore(path, reactor)
        self.addCleanup(s.close)
        await s.open()
        (loaded,) = (await s.load()).records["lease"]
        self.assertEqual(loaded, LEASE)
        self.assertFalse(loaded.revoked)
        revoked = dataclasses.replace(LEASE, id="l-r", revoked=True)
        await s.commit(2, puts(revoked))
        await s.close()
        s = store.SQLiteStore(path, reactor)
        await s.open()
        leases = {lease.id: lease for lease in (await s.load()).records["lease"]}
        self.assertEqual(leases["l-r"], revoked)
