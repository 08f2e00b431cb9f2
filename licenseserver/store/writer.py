"""The writer thread and ``SQLiteStore``: group commit, checkpoints, trims of the change log.

One dedicated thread owns the SQLite connection. Calls become jobs on a
queue; the thread takes one job, drains whatever else is already waiting and
runs the writing jobs of that batch in one transaction (group commit). A
commit is checked and encoded on the caller's thread (``prepare_commit``), so
the writer has only SQL left to run: a batch of commits is one row of
change-log lines, one row of audit entries and the rows of the kinds whose
unique columns the table must check. Anything unusual in a batch sends it down
a slower path where each job runs inside its own SAVEPOINT, so that a failing
job is rolled back and errbacks alone. Results travel back to the reactor
thread with ``callFromThread``.

The rows of the checkpointed kinds (``TableSpec.checkpointed``) are owed to
their tables: the writer holds them until a checkpoint writes them, and a
store opened after a crash reads them back from the change log (see
``tables``).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from licenseserver import model
from licenseserver.interfaces import ILicenseStore
from licenseserver.localstate import USAGE_SYNCED
from licenseserver.store import usagejobs
from licenseserver.store.changelog import PreparedWrite, prepare_commit, prepare_entries
from licenseserver.store.checks import check_local_name, check_newer
from licenseserver.store.errors import StoreClosedError, StoreError, translate_error
from licenseserver.store.jobs import (
    _add_event_job,
    _append_audit,
    _audit_tail,
    _changes_since_job,
    _events_job,
    _get_local_job,
    _get_locals_job,
    _insert_log,
    _meta_int,
    _replace_all_job,
    _set_meta,
    _trim_job,
    _write_row,
    _write_rows,
    load_records,
    local_text,
    owed_since,
    set_local,
    write_local,
)
from licenseserver.store.schema import MIGRATIONS, Migration, open_database
from licenseserver.store.tables import TABLES, execute_rows

DEFAULT_KEEP_CHANGES = 100_000
"""The change log keeps at least this many revisions (a failover further behind resyncs)."""
DEFAULT_TRIM_INTERVAL = 1_000
"""Commits between two trims of the change log."""
MAX_BATCH = 256
"""Most jobs that one group commit takes."""
DEFAULT_CHECKPOINT_EVERY = 20_000
"""Rows owed to the tables (``TableSpec.checkpointed``) that make the writer checkpoint.

It bounds the writer's memory for them (a few MB) and the change log a store
reads again when it opens after a crash (a fraction of a second)."""


READ, WRITE, RAW = "read", "write", "raw"


def _deliver(results: list[tuple[defer.Deferred, Any]]) -> None:
    """Fire Deferreds with their results, in order (on the reactor thread)."""
    for deferred, result in results:
        if isinstance(result, Failure):
            deferred.errback(result)
        else:
            deferred.callback(result)


class _Job:
    """One call waiting for the writer thread.

    ``mode`` is READ (in a read transaction), WRITE (in the batch's write
    transaction, inside a savepoint) or RAW (no transaction; test hooks). A
    commit or an audit append is a WRITE with its ``prepared`` write and no
    ``run``; ``resets`` marks a job that rewrites every table (``replaceAll``).
    ``patient``: the job may wait ``commit_delay`` for others to share its
    transaction. ``local``: a ``setLocal``'s ``(name, value)``, which a batch of
    commits writes with them (the last value of each name only).
    """

    __slots__ = ("mode", "run", "deferred", "commits", "patient", "prepared", "resets", "local")

    def __init__(
        self,
        mode: str,
        run: Callable[[sqlite3.Connection], Any] | None,
        deferred: defer.Deferred,
        commits: int = 0,
        patient: bool = False,
        prepared: PreparedWrite | None = None,
        resets: bool = False,
        local: tuple[str, Any] | None = None,
    ) -> None:
        self.mode = mode
        self.run = run
        self.deferred = deferred
        self.commits = commits
        self.patient = patient
        self.prepared = prepared
        self.resets = resets
        self.local = local


_STOP = object()


class _BatchLostError(Exception):
    """The batch's write transaction is gone: every job of it must fail."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.getErrorMessage())
        self.failure = failure


class _Transaction:
    """What a write transaction changes besides its SQL, kept until it commits.

    ``owed``: rows for the checkpointed tables; ``tail``: the audit chain's
    end (None until read); ``reset``: every table was rewritten, so what they
    owed before is void; ``revision``: the store's revision.
    """

    __slots__ = ("owed", "tail", "reset", "revision")

    def __init__(self, tail: tuple[int, str] | None, revision: int) -> None:
        self.owed: dict[str, dict[tuple, tuple | None]] = {}
        self.tail = tail
        self.reset = False
        self.revision = revision


def _merge(into: dict[str, dict[tuple, Any]], owed: dict[str, dict[tuple, Any]]) -> None:
    for kind, rows in owed.items():
        into.setdefault(kind, {}).update(rows)


@implementer(ILicenseStore)
class SQLiteStore(service.Service):
    """The license store in one SQLite file, written by one dedicated thread.

    Calls made before ``open`` wait in the queue and run once the database is
    open. ``transactions`` counts the write transactions committed, so that
    group commit can be observed. As a service it opens the database on
    ``startService`` and closes it on ``stopService``.

    A commit is durable once its transaction has written its change-log lines,
    its audit entries and the rows of the kinds with unique columns. The rows
    of the checkpointed kinds (leases above all) are owed to their tables,
    held by the writer thread, and written at the next checkpoint: when
    ``checkpoint_every`` rows are owed, before the log is trimmed past them,
    and when the store closes. A store opened after a crash reads what its
    tables owe back from the change log.
    """

    log = Logger()
    _sleep = staticmethod(time.sleep)
    """How the writer thread lets ``gather_delay`` pass (replaced in tests)."""

    def __init__(
        self,
        path: Path | str,
        reactor: Any,
        *,
        keep_changes: int = DEFAULT_KEEP_CHANGES,
        trim_interval: int = DEFAULT_TRIM_INTERVAL,
        max_batch: int = MAX_BATCH,
        commit_delay: float = 0.0,
        gather_delay: float = 0.0,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        """
        @param path: the database file; its directory must exist.
        @param keep_changes: the change log keeps at least this many revisions.
        @param trim_interval: trim the change log after this many commits.
        @param max_batch: most jobs run in one group commit.
        @param commit_delay: seconds a patient write (a lease renewal) that
            finds the queue empty waits for others to share its transaction.
        @param gather_delay: seconds the writer lets pass before it takes
            a batch, when the last batch held more than one job (0: never).
        @param checkpoint_every: owed rows that make the writer checkpoint.
        @param migrations: the schema steps this server knows.
        """
        if (
            keep_changes < 0
            or trim_interval < 1
            or max_batch < 1
            or gather_delay < 0
            or checkpoint_every < 1
        ):
            raise ValueError(
                "keep_changes >= 0, trim_interval >= 1, max_batch >= 1, gather_delay >= 0 "
                "and checkpoint_every >= 1"
            )
        self.path = Path(path)
        self._reactor = reactor
        self._keepChanges = keep_changes
        self._trimInterval = trim_interval
        self._maxBatch = max_batch
        self._commitDelay = commit_delay
        self._gatherDelay = gather_delay
        self._checkpointEvery = checkpoint_every
        self._lastBatch = 0
        """Jobs in the last batch the writer took."""
        self._migrations = tuple(migrations)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._opened: defer.Deferred | None = None
        self._closeReason: Failure | None = None
        self._closeWaiters: list[defer.Deferred] = []
        self._commitsSinceTrim = 0
        self.transactions = 0
        self.checkpoints = 0
        """Checkpoints written (tests observe them)."""
        self._outbox: list[tuple[defer.Deferred, Any]] | None = None
        """Results of the batch that runs, delivered together when it ends."""
        self._turn: list[_Job] | None = None
        """Commits made during this reactor turn, queued together at its end."""
        # The writer thread's own state:
        self._owed: dict[str, dict[tuple, tuple | None]] = {}
        """Rows owed to the checkpointed tables: kind -> key -> row (None: gone)."""
        self._tablesAt = 0
        """The revision up to which the tables hold every change."""
        self._revision = 0
        """The revision stored (``meta.revision``), as the writer last committed it."""
        self._logStart = 0
        """Where the change log starts (``meta.log_start``)."""
        self._auditTail: tuple[int, str] | None = None
        """The audit chain's last ``(seq, hash)``; None when it must be read again."""

    # -- service ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.open().addErrback(self._logOpenFailure)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self.close()

    def _logOpenFailure(self, failure: Failure) -> None:
        self.log.failure("Cannot open the license store {path}", failure, path=self.path)

    # -- life cycle -------------------------------------------------------

    def open(self) -> defer.Deferred:
        """Start the writer thread; fire once the database is open.

        Errbacks with StoreError (SchemaError for a schema this server does
        not run); every queued and later call then errbacks too.
        """
        with self._lock:
            if self._state != "new":
                return defer.fail(StoreError(f"the store {self.path} was opened already"))
            self._state = "open"
            self._opened = defer.Deferred()
            self._thread = threading.Thread(
                target=self._serve, name=f"store {self.path.name}", daemon=True
            )
        self._thread.start()
        return self._opened

    def close(self) -> defer.Deferred:
        """Finish the queued work, checkpoint, close the database; fire when that is done.

        Calls made after ``close`` errback with StoreClosedError.
        """
        self._endTurn()
        with self._lock:
            if self._state == "closed":
                return defer.succeed(None)
            if self._state == "new":
                self._state = "closed"
                pending = self._drain()
            else:
                pending = None
                if self._state == "open":
                    self._state = "closing"
                    self._queue.put(_STOP)
        if pending is not None:
            self._failJobs(pending, Failure(StoreClosedError(f"the store {self.path} was closed")))
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    def _fireClosed(self) -> None:
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _drain(self) -> list[_Job]:
        jobs = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if entry is not _STOP:
                jobs.extend(entry)

    # -- ILicenseStore ----------------------------------------------------

    def load(self) -> defer.Deferred:
        return self._submit(READ, self._loadJob)

    def commit(
        self,
        revision: int,
        changes: Iterable[model.Change],
        audit: Iterable = (),
        patient: bool = False,
    ) -> defer.Deferred:
        """Write ``changes`` under ``revision``; ValueError unless it is after the stored one.

        Malformed changes are a ValueError, a duplicate unique field a
        ConflictError; either way nothing of the commit is written. The
        ``audit`` entries are appended in the same transaction. A ``patient``
        commit (nobody waits on it much) may wait ``commit_delay`` for others
        to share its transaction and disk sync.

        The commit is checked and encoded here, on the caller's thread, so
        that the writer thread has only SQL left to run.
        """
        try:
            prepared = prepare_commit(revision, changes, audit)
        except ValueError:
            return defer.fail()
        return self._joinTurn(_Job(WRITE, None, defer.Deferred(), 1, patient, prepared))

    def audit(self, entries: Iterable) -> defer.Deferred:
        try:
            prepared = PreparedWrite(None, (), (), prepare_entries(entries))
        except ValueError:
            return defer.fail()
        return self._joinTurn(_Job(WRITE, None, defer.Deferred(), prepared=prepared))

    def changesSince(self, revision: int) -> defer.Deferred:
        """The log after ``revision``: [] at the current revision, None when the
        log does not reach back that far or ``revision`` is ahead of this store."""
        return self._submit(READ, partial(_changes_since_job, revision=revision))

    def replaceAll(self, snapshot: model.Snapshot) -> defer.Deferred:
        return self._submit(WRITE, partial(_replace_all_job, snapshot=snapshot), resets=True)

    def addEvent(self, event: model.Event) -> defer.Deferred:
        return self._submit(WRITE, partial(_add_event_job, event=event))

    def events(self, limit: int) -> defer.Deferred:
        return self._submit(READ, partial(_events_job, limit=limit))

    def getLocal(self, name: str) -> defer.Deferred:
        return self._submit(READ, partial(_get_local_job, name=name))

    def getLocals(self, prefix: str) -> defer.Deferred:
        return self._submit(READ, partial(_get_locals_job, prefix=prefix))

    def addUsage(self, points: Any, denials: Any, now: int, held: Any = ()) -> defer.Deferred:
        return self._submit(
            WRITE,
            partial(usagejobs.add_usage, points=points, denials=denials, now=now, held=held),
        )

    def usageSince(self, since: int) -> defer.Deferred:
        return self._submit(READ, partial(usagejobs.read_since, since=since))

    def applyUsage(
        self, points: Any, denials: Any, held: Any, until: int, now: int
    ) -> defer.Deferred:
        def apply(conn: sqlite3.Connection) -> None:
            usagejobs.apply_synced(conn, points, denials, held, now)
            set_local(conn, USAGE_SYNCED, until)

        return self._submit(WRITE, apply)

    def topHolders(
        self, product: str, since: int, until: int, by: str, limit: int
    ) -> defer.Deferred:
        return self._submit(
            READ,
            partial(
                usagejobs.read_top, product=product, since=since, until=until, by=by, limit=limit
            ),
        )

    def usage(self, step: str, since: int, until: int, product: str | None) -> defer.Deferred:
        return self._submit(
            READ,
            partial(usagejobs.read_usage, step=step, since=since, until=until, product=product),
        )

    def denials(self, since: int, until: int, limit: int) -> defer.Deferred:
        return self._submit(
            READ, partial(usagejobs.read_denials, since=since, until=until, limit=limit)
        )

    def setLocal(self, name: str, value: Any) -> defer.Deferred:
        """Set a local value; it joins this turn's commits, after those made before it.

        A role notes a list before the removals it covers are written, once per
        removal: in a batch of commits only each name's last value is written,
        so that such a note costs one encoding per transaction, not one per
        removal.
        """
        write = partial(set_local, name=name, value=value)
        return self._joinTurn(_Job(WRITE, write, defer.Deferred(), local=(name, value)))

    def broken(self) -> str | None:
        """Why the writer thread ended on its own (it could not open the database, or
        failed), or None while it runs and after a ``close``."""
        reason = self._closeReason
        return None if reason is None else reason.getErrorMessage()

    # -- test hooks -------------------------------------------------------

    def _runInWriter(self, run: Callable[[sqlite3.Connection], Any], mode: str = RAW):
        """Run ``run(conn)`` on the writer thread like any job; for tests."""
        return self._submit(mode, run)

    def _pauseWriter(self) -> tuple[defer.Deferred, Callable[[], None]]:
        """Block the writer thread inside a job, so that jobs pile up; for tests.

        Returns a Deferred that fires once the thread is blocked (past its
        queue drain) and the function that lets it go on.
        """
        release = threading.Event()
        blocked: defer.Deferred = defer.Deferred()

        def wait(conn: sqlite3.Connection) -> None:
            self._reactor.callFromThread(blocked.callback, None)
            release.wait()

        self._submit(RAW, wait)
        return blocked, release.set

    def _checkpointNow(self) -> defer.Deferred:
        """Write every owed row to its table now; for tests."""
        return self._submit(RAW, lambda conn: self._checkpoint(conn))

    # -- the reactor side of the queue ------------------------------------

    def _submit(self, mode: str, run: Callable | None, resets: bool = False) -> defer.Deferred:
        """Queue a job behind the commits of this turn."""
        self._endTurn()
        job = _Job(mode, run, defer.Deferred(), resets=resets)
        self._put([job])
        return job.deferred

    def _joinTurn(self, job: _Job) -> defer.Deferred:
        """Queue a commit with the others made in this reactor turn, at the turn's end.

        Whoever commits (the store knows no caller), the commits made during
        one turn of the reactor reach the writer together, in one queue
        entry: the writer wakes once for them, not once for each, and wakes
        when the reactor thread has done the turn's work rather than in the
        middle of it, which would only make the two threads take the GIL from
        each other. Any other call ends the turn first, so jobs keep their order.
        """
        if self._state in ("closing", "closed"):
            return defer.fail(self._closedError())
        if self._turn is None:
            self._turn = []
            self._reactor.callLater(0, self._endTurn)
        self._turn.append(job)
        return job.deferred

    def _endTurn(self) -> None:
        turn, self._turn = self._turn, None
        if turn:
            self._put(turn)

    def _put(self, jobs: list[_Job]) -> None:
        """Hand ``jobs`` to the writer as one entry, or fail them once the store is closed."""
        with self._lock:
            refused = self._state in ("closing", "closed")
            if not refused:
                self._queue.put(jobs)
        if refused:
            failure = Failure(self._closedError())
            for job in jobs:
                job.deferred.errback(failure)

    def _closedError(self) -> StoreClosedError:
        if self._closeReason is not None:
            return StoreClosedError(
                f"the store {self.path} is not open: {self._closeReason.getErrorMessage()}"
            )
        return StoreClosedError(f"the store {self.path} is closed")

    # -- the writer thread ------------------------------------------------

    def _serve(self) -> None:
        """The writer thread: open, run batches until told to stop, close."""
        try:
            conn = open_database(self.path, self._migrations)
        except BaseException:
            failure = Failure()
            self._reactor.callFromThread(self._opened.errback, failure)
            self._shutDown(None, failure)
            return
        try:
            self._recover(conn)
        except (sqlite3.Error, ValueError) as e:
            failure = Failure(StoreError(f"cannot read the change log of {self.path}: {e}"))
            self._reactor.callFromThread(self._opened.errback, failure)
            self._shutDown(conn, failure)
            return
        self._reactor.callFromThread(self._opened.callback, None)
        reason = None
        try:
            self._loop(conn)
        except BaseException:
            reason = Failure()
            self._logFromThread(reason, "The writer thread of the store {path} crashed")
        finally:
            self._shutDown(conn, reason)

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Find what the tables owe since the last checkpoint (after a crash: some rows)."""
        checkpoint = _meta_int(conn, "checkpoint")
        self._owed = owed_since(conn, checkpoint)
        self._revision = _meta_int(conn, "revision")
        self._logStart = _meta_int(conn, "log_start")
        self._tablesAt = checkpoint if self._owed else self._revision
        self._auditTail = None

    def _shutDown(self, conn: sqlite3.Connection | None, reason: Failure | None) -> None:
        """Checkpoint, close the connection, refuse further calls, fail what is still queued."""
        if conn is not None:
            if reason is None:
                self._checkpoint(conn)
            try:
                conn.close()
            except sqlite3.Error:
                self._logFromThread(Failure(), "Closing {path} failed")
        with self._lock:
            self._state = "closed"
            self._closeReason = reason
            pending = self._drain()
        self._failJobs(pending, Failure(self._closedError()))
        self._reactor.callFromThread(self._fireClosed)

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            batch, stop = self._nextBatch()
            self._runBatch(conn, batch)
            if sum(len(rows) for rows in self._owed.values()) >= self._checkpointEvery:
                self._checkpoint(conn)
            self._maybeTrim(conn)
            if stop:
                return

    def _nextBatch(self) -> tuple[list[_Job], bool]:
        """Wait for one job, then take what else is queued already (up to the limit).

        A patient first job (a renewal) may wait ``commit_delay`` for company;
        a job someone waits for ends that wait. Under load, when the last
        batch held more than one job, the writer first lets ``gather_delay``
        pass, so that the writes arriving meanwhile share this batch's
        transaction and disk sync (group commit): more jobs per sync for half
        a millisecond of latency (``--commit-gather``), where each sync saved
        is some 250 us of CPU. A lone write on a quiet server never waits.
        """
        entry = self._queue.get()
        if entry is _STOP:
            return [], True
        first = entry[0]
        if self._gatherDelay and self._lastBatch > 1 and first.mode == WRITE and not first.patient:
            self._sleep(self._gatherDelay)
        batch = list(entry)
        patient = all(job.patient for job in entry)
        deadline = time.monotonic() + self._commitDelay if patient else 0.0
        while len(batch) < self._maxBatch:
            wait = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            if not all(job.patient for job in entry):
                deadline = 0.0  # someone waits for this one: take what is queued and go
            batch.extend(entry)
        self._lastBatch = len(batch)
        return batch, False

    def _runBatch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run jobs in order; runs of consecutive writes share one transaction.

        The batch's results reach the reactor thread together, in job order:
        one wake-up of the reactor for the whole batch. An error that escapes
        the jobs' own handling ends the thread; every job of the batch not
        answered yet fails with it, so that no caller waits for ever.
        """
        self._outbox = []
        try:
            self._runJobs(conn, batch)
        except BaseException:
            failure = Failure()
            answered = {id(deferred) for deferred, _ in self._outbox}
            for job in batch:
                if id(job.deferred) not in answered:
                    self._outbox.append((job.deferred, failure))
            raise
        finally:
            outbox, self._outbox = self._outbox, None
            if outbox:
                self._reactor.callFromThread(_deliver, outbox)

    def _runJobs(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        writes: list[_Job] = []
        for job in batch:
            if job.mode == WRITE:
                writes.append(job)
                continue
            if writes:
                self._runWrites(conn, writes)
                writes = []
            self._runOther(conn, job)
        if writes:
            self._runWrites(conn, writes)

    def _runOther(self, conn: sqlite3.Connection, job: _Job) -> None:
        try:
            if job.mode == READ:
                conn.execute("BEGIN")
            result = job.run(conn)
            if job.mode == READ:
                conn.execute("COMMIT")
        except Exception as e:
            failure = self._failureFor(e)
            self._rollback(conn)
            self._fire(job, failure)
        else:
            self._fire(job, result)

    def _loadJob(self, conn: sqlite3.Connection) -> model.Snapshot:
        return load_records(conn, self._owed)

    def _runWrites(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """Write ``jobs`` in one transaction: fused when they are all commits (or local
        values)."""
        if all(job.prepared is not None or job.local is not None for job in jobs):
            if self._runCommitsFused(conn, jobs):
                return
        self._runWritesOneByOne(conn, jobs)

    def _committed(self, txn: _Transaction) -> None:
        """Take a committed transaction's owed rows and audit tail as the store's."""
        self.transactions += 1
        self._auditTail = txn.tail
        self._revision = txn.revision
        if txn.reset:
            self._owed = {}
            self._logStart = txn.revision
        _merge(self._owed, txn.owed)
        if not self._owed:
            self._tablesAt = txn.revision

    def _runCommitsFused(self, conn: sqlite3.Connection, jobs: list[_Job]) -> bool:
        """Write a batch of commits with one statement per table and kind of write.

        Every job is checked first; the writes then go without savepoints: one
        row of change-log lines, one row of audit entries, and the rows of the
        kinds written at once. This is the busy server's path: many clients'
        grants, renewals and releases in one transaction for little more than
        the cost of one. It does nothing and returns False when the batch needs
        the one-by-one path, where each job succeeds or fails on its own: a
        revision not after the one before, a row written at once twice (order
        would matter), or any refusal by SQLite.
        """
        try:
            txn = _Transaction(self._auditTail, self._revision)
            deletes: dict[str, list[tuple]] = {}
            puts: dict[str, list[tuple]] = {}
            written: set[tuple] = set()
            lines: list[str] = []
            entries: list = []
            values: dict[str, Any] = {}
            for job in jobs:
                if job.local is not None:
                    name, value = job.local
                    # Set again, a name goes after what came between: a family's
                    # removal and its members' notes keep their order.
                    values.pop(check_local_name(name), None)
                    values[name] = value
                    continue
                prepared = job.prepared
                if prepared.revision is not None:
                    check_newer(prepared.revision, txn.revision)
                    txn.revision = prepared.revision
                for spec, key, row in prepared.writes:
                    if spec.checkpointed:
                        txn.owed.setdefault(spec.kind, {})[key] = row
                        continue
                    if (spec.kind, key) in written:
                        return False
                    written.add((spec.kind, key))
                    if row is None:
                        deletes.setdefault(spec.kind, []).append(key)
                    else:
                        puts.setdefault(spec.kind, []).append(row)
                lines += prepared.lines
                entries += prepared.entries
            texts = {name: local_text(name, value) for name, value in values.items()}
        except (ValueError, TypeError, sqlite3.Error):
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for kind, keys in deletes.items():
                execute_rows(conn, TABLES[kind].deleteRowsSQL, keys)
            for kind, rows in puts.items():
                execute_rows(conn, TABLES[kind].upsertRowsSQL, rows)
            if lines:
                _insert_log(conn, txn.revision, lines)
            _set_meta(conn, "revision", txn.revision)
            txn.tail = _append_audit(conn, txn.tail or _audit_tail(conn), entries)
            for name, text in texts.items():
                write_local(conn, name, text)
            conn.execute("COMMIT")
        except sqlite3.Error:
            self._rollback(conn)
            self._auditTail = None
            return False
        self._committed(txn)
        for job in jobs:
            self._commitsSinceTrim += job.commits
            self._fire(job, None)
        return True

    def _runWritesOneByOne(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """One transaction for ``jobs``, a savepoint for each; fire after COMMIT.

        A job that fails is rolled back to its savepoint and errbacks alone.
        When the transaction itself is lost (COMMIT fails, or SQLite rolled
        everything back, as it may on a full disk), every job errbacks.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            txn = _Transaction(self._auditTail, self._revision)
        except sqlite3.Error as e:
            self._rollback(conn)
            self._auditTail = None
            self._failJobs(jobs, self._failureFor(e))
            return
        outcomes: list[tuple[_Job, Any]] = []
        try:
            for job in jobs:
                outcomes.append(self._runInSavepoint(conn, job, txn))
            self._execute(conn, "COMMIT")
        except _BatchLostError as lost:
            self._rollback(conn)
            self._auditTail = None
            self._failJobs(jobs, lost.failure, outcomes)
            return
        self._committed(txn)
        for job, result in outcomes:
            if not isinstance(result, Failure):
                self._commitsSinceTrim += job.commits
            self._fire(job, result)

    def _runInSavepoint(
        self, conn: sqlite3.Connection, job: _Job, txn: _Transaction
    ) -> tuple[_Job, Any]:
        """Run one write job in its savepoint: ``(job, result or Failure)``.

        What the job changes besides SQL reaches ``txn`` only once its
        savepoint is released.
        """
        self._execute(conn, "SAVEPOINT job")
        try:
            if job.prepared is not None:
                owed, tail, revision = self._writePrepared(conn, job.prepared, txn)
                result = None
            else:
                result = job.run(conn)
        except Exception as e:
            failure = self._failureFor(e)
            if not self._rollbackTo(conn):
                raise _BatchLostError(failure) from e
            return job, failure
        self._execute(conn, "RELEASE job")
        if job.prepared is not None:
            _merge(txn.owed, owed)
            txn.tail, txn.revision = tail, revision
        elif job.resets:
            txn.reset, txn.owed = True, {}
            txn.revision = _meta_int(conn, "revision")
        return job, result

    def _writePrepared(
        self, conn: sqlite3.Connection, prepared: PreparedWrite, txn: _Transaction
    ) -> tuple[dict, tuple[int, str], int]:
        """One commit's SQL; its owed rows, the audit tail and the revision after it."""
        revision = txn.revision
        if prepared.revision is not None:
            check_newer(prepared.revision, revision)
            revision = prepared.revision
        owed: dict[str, dict[tuple, tuple | None]] = {}
        for spec, key, row in prepared.writes:
            if not spec.checkpointed:
                _write_row(conn, spec, key, row)
            else:
                owed.setdefault(spec.kind, {})[key] = row
        if prepared.lines:
            _insert_log(conn, revision, prepared.lines)
        if prepared.revision is not None:
            _set_meta(conn, "revision", revision)
        tail = _append_audit(conn, txn.tail or _audit_tail(conn), prepared.entries)
        return owed, tail, revision

    def _execute(self, conn: sqlite3.Connection, statement: str) -> None:
        """Run a transaction statement; _BatchLostError when it fails."""
        try:
            conn.execute(statement)
        except sqlite3.Error as e:
            raise _BatchLostError(self._failureFor(e)) from e

    def _rollbackTo(self, conn: sqlite3.Connection) -> bool:
        if not conn.in_transaction:
            return False
        try:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
        except sqlite3.Error:
            return False
        return True

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._logFromThread(Failure(), "Rolling back {path} failed")

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """Write every owed row to its table, in one transaction; False when that failed.

        A checkpoint that fails (a full disk, say) leaves the rows owed and
        the change log untrimmed past them; the next one tries again.
        """
        if not self._owed:
            return True
        try:
            conn.execute("BEGIN IMMEDIATE")
            _write_rows(conn, self._owed)
            revision = self._revision
            _set_meta(conn, "checkpoint", revision)
            conn.execute("COMMIT")
        except sqlite3.Error:
            self._logFromThread(Failure(), "Writing a checkpoint of {path} failed")
            self._rollback(conn)
            return False
        self.checkpoints += 1
        self._owed = {}
        self._tablesAt = revision
        return True

    def _maybeTrim(self, conn: sqlite3.Connection) -> None:
        """Trim the change log once enough commits have gone by since the last trim.

        The log keeps the last ``keep_changes`` revisions, and never drops a
        change that the tables do not hold yet: the writer checkpoints first.
        """
        if self._commitsSinceTrim < self._trimInterval:
            return
        self._commitsSinceTrim = 0
        cutoff = self._revision - self._keepChanges
        if cutoff <= self._logStart:
            return
        try:
            if cutoff > self._tablesAt:
                self._checkpoint(conn)
            conn.execute("BEGIN IMMEDIATE")
            start = _trim_job(conn, min(cutoff, self._tablesAt))
            conn.execute("COMMIT")
        except sqlite3.Error:
            self._logFromThread(Failure(), "Trimming the change log of {path} failed")
            self._rollback(conn)
        else:
            self._logStart = start

    # -- delivering results -----------------------------------------------

    def _failureFor(self, error: BaseException) -> Failure:
        """A Failure for ``error`` (to call in its except block); SQLite errors made readable."""
        if isinstance(error, sqlite3.Error):
            readable = translate_error(error, self.path)
            readable.__cause__ = error
            return Failure(readable)
        return Failure()

    def _fire(self, job: _Job, result: Any) -> None:
        """Hand ``result`` to the job's Deferred (with the batch, when one runs)."""
        if self._outbox is not None:
            self._outbox.append((job.deferred, result))
        else:
            self._reactor.callFromThread(_deliver, [(job.deferred, result)])

    def _failJobs(
        self,
        jobs: list[_Job],
        failure: Failure,
        outcomes: list[tuple[_Job, Any]] = (),
    ) -> None:
        """Errback ``jobs`` with ``failure``, except those that failed on their own.

        Newest first: a caller that takes back its in-memory change in the
        errback then unwinds several failed commits in the right order.
        """
        own = {id(job): result for job, result in outcomes if isinstance(result, Failure)}
        for job in reversed(jobs):
            self._fire(job, own.get(id(job), failure))

    def _logFromThread(self, failure: Failure, message: str) -> None:
        self._reactor.callFromThread(self.log.failure, message, failure, path=self.path)
