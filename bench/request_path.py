"""Where a checkout's CPU goes: its two halves, each measured alone in this process.

    python bench/request_path.py [--seconds N] [--quick] [--connections C]

Not one of the four scenarios, but what lies under the first: what CHECKOUT+RELEASE
pairs cost without sockets, a reactor loop or a second thread.

- **Decide and answer**: 50 licensing sessions (``LicensingProtocol`` of the real
  factory and role, over in-memory transports) send CHECKOUTs, then RELEASEs of the
  leases they got, one or 16 at a time; the store is a stand-in that costs nothing and
  fires its writes in batches, as the real one does. This is the reactor thread's
  Python per pair: parsing, the seat rules, the pool, the audit entry, the answer.
- **Make it durable**: the same pairs' writes (one commit with the lease and its audit
  entry per CHECKOUT, one per RELEASE) through a real ``SQLiteStore`` in a temporary
  directory, 50 or 800 commits at a time. This is the store's part: checking and
  encoding each commit, the change-log and audit rows, SQL, the disk sync, the
  checkpoints of the lease table, and the Deferreds back on the reactor thread.
- **SQLite alone**: the very statements the store runs for those commits (one row of
  change-log lines and one of audit entries per transaction, the revision, and the
  checkpoints that write the owed lease rows, in the same WAL database with full
  syncs), with every line encoded and every entry hashed before the clock starts. This
  is the storage engine's own share of "make durable", under which no Python can go
  while the server keeps these rows.

CPU is this process's (``time.process_time``), per pair. After the set-up the heap is
frozen and the young GC threshold raised (``licenseserver.heap``), as the server does
once its pool is loaded.

The result line, ``RESULT request_path {...}`` (CPU in microseconds per pair):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``connections`` (int): the sessions (``--connections``; at most 10 with ``--quick``).
- ``depths`` (object): ``"1"`` and ``"16"``, the requests in flight per session, each:

  - ``batch`` (int): the pairs of a round, ``connections`` times the depth: the commits
    the store is given at a time;
  - ``decide_us_per_pair`` (number): decide and answer;
  - ``decide_pairs`` (int): the pairs it was measured over;
  - ``durable_us_per_pair`` (number): make it durable;
  - ``durable_pairs`` (int): the pairs it was measured over;
  - ``commits_per_transaction`` (number): the store's commits per SQLite transaction;
  - ``sqlite_us_per_pair`` (number): SQLite alone;
  - ``sqlite_pairs`` (int): the pairs it was measured over.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

DEPTHS = (1, 16)


def _as_when_loaded() -> None:
    """Tune the collector as the server does once its pool is loaded."""
    from licenseserver.heap import raise_young_threshold

    gc.freeze()
    raise_young_threshold()


class ParkedStore:
    """A store that writes nothing: commits wait until ``flush`` fires them all."""

    def __init__(self, snapshot: Any):
        self.snapshot = snapshot
        self.parked: list[defer.Deferred] = []

    def load(self) -> defer.Deferred:
        return defer.succeed(self.snapshot)

    def getLocal(self, name: str) -> defer.Deferred:
        return defer.succeed(None)

    def setLocal(self, name: str, value: Any) -> defer.Deferred:
        return defer.succeed(None)

    def getLocals(self, prefix: str) -> defer.Deferred:
        return defer.succeed({})

    def commit(self, revision: int, changes: Any, audit: Any = (), patient: bool = False):
        d: defer.Deferred = defer.Deferred()
        self.parked.append(d)
        return d

    def audit(self, entries: Any) -> defer.Deferred:
        return defer.succeed(None)

    def addEvent(self, event: Any) -> defer.Deferred:
        return defer.succeed(None)

    def broken(self) -> None:
        return None

    def flush(self) -> None:
        parked, self.parked = self.parked, []
        for d in parked:
            d.callback(None)


def decide_and_answer(license: Any, trusted: dict, depth: int, connections: int, seconds: float):
    """CPU per pair of the reactor-side path, and pairs measured."""
    from licenseserver.model import Snapshot
    from licenseserver.protocols.licensing import LicensingFactory
    from licenseserver.roles.primary import PrimaryRole
    from licenseserver.tap import SETTING_DEFAULTS

    clock = Clock()
    clock.advance(time.time())
    store = ParkedStore(Snapshot(1, {"license": [license]}))
    role = PrimaryRole(
        store,
        clock=clock,
        serverName="bench",
        advertise="bench:35355",
        leaseTTL=120,
        trustedKeys=trusted,
        settingDefaults=SETTING_DEFAULTS,
    )
    role.startService()
    factory = LicensingFactory(role, clock=clock)
    sessions = []
    for n in range(connections):
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(common.hello_line(f"machine-{n}") + b"\n")
        sessions.append((protocol, transport))
    store.flush()
    for _, transport in sessions:
        transport.clear()
    checkouts = b"CHECKOUT\n" * depth

    def one_round() -> None:
        for protocol, _ in sessions:
            protocol.dataReceived(checkouts)
        clock.advance(0)  # the next turn: a session that waited for one goes on
        store.flush()
        for protocol, transport in sessions:
            answers = transport.value().split(b"\n")[:-1]
            transport.clear()
            leases = [common.args_of(answer)["lease"].encode() for answer in answers]
            protocol.dataReceived(b"".join(b"RELEASE lease=" + lease + b"\n" for lease in leases))
        clock.advance(0)
        store.flush()
        for _, transport in sessions:
            if transport.value().count(b"OK\n") != depth:
                raise SystemExit(f"unexpected answers: {transport.value()[:200]!r}")
            transport.clear()

    one_round()
    _as_when_loaded()
    rounds, start = 0, time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        one_round()
        rounds += 1
    pairs = rounds * depth * connections
    return (time.process_time() - start) / pairs * 1e6, pairs


def leases_of_round(round_: int, batch: int) -> list:
    """``batch`` leases, one per machine, with new ids each round."""
    from licenseserver.model import Lease

    return [
        Lease(
            f"l-{round_}-{n}",
            f"c-{n}",
            f"machine-{n}",
            "bench",
            common.PRODUCT,
            "2025",
            ("L-1",),
            "concurrent",
            1000,
            1120,
            120,
            False,
            "",
        )
        for n in range(batch)
    ]


def pair_commits(leases: list) -> list[list]:
    """The grants, then the releases, of ``leases``: ``[(change, audit entry)]`` each."""
    from licenseserver.audit import AuditEntry
    from licenseserver.model import Change

    def entry(kind: str, lease: Any) -> AuditEntry:
        return AuditEntry(1000, kind, {"lease": lease.id, "machine": lease.machine})

    return [
        [(Change.put(lease), entry("grant", lease)) for lease in leases],
        [(Change.delete(lease), entry("release", lease)) for lease in leases],
    ]


async def make_durable(reactor: Any, batch: int, seconds: float) -> tuple[float, int, int]:
    """CPU per pair of the store's part, pairs measured and transactions."""
    from licenseserver.store import SQLiteStore

    directory = tempfile.TemporaryDirectory()
    db = SQLiteStore(Path(directory.name) / "bench.sqlite3", reactor)
    await db.open()
    _as_when_loaded()
    revision, pairs, round_ = 0, 0, 0
    before = db.transactions
    start = time.process_time()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            round_ += 1
            for commits in pair_commits(leases_of_round(round_, batch)):
                written = []
                for change, entry in commits:
                    revision += 1
                    written.append(db.commit(revision, [change], [entry]))
                await defer.gatherResults(written)
            pairs += batch
        cpu = (time.process_time() - start) / pairs * 1e6
        return cpu, pairs, db.transactions - before
    finally:
        await db.close()
        directory.cleanup()


def sqlite_alone(batch: int, seconds: float) -> tuple[float, int]:
    """CPU per pair of SQLite by itself running the store's statements, and pairs measured.

    Each transaction is what the store's writer runs for up to ``MAX_BATCH``
    commits (``SQLiteStore._runCommitsFused``): read the revision, write one row
    of change-log lines and the revision, one row of audit entries, COMMIT. The
    leases' rows are owed to their table and written at checkpoints, one for every
    ``DEFAULT_CHECKPOINT_EVERY`` rows owed, which run here too. The lines are
    encoded and the audit entries hashed before the clock starts; only the
    statements are timed.
    """
    from licenseserver import audit, store

    directory = tempfile.TemporaryDirectory()
    conn = store.open_database(Path(directory.name) / "bench.sqlite3")
    revision, chain_end = 0, (0, audit.GENESIS)
    owed: dict[str, dict] = {}
    cpu, pairs, round_ = 0.0, 0, 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            round_ += 1
            for commits in pair_commits(leases_of_round(round_, batch)):
                for first in range(0, len(commits), store.MAX_BATCH):
                    chunk = commits[first : first + store.MAX_BATCH]
                    revision, chain_end, spent = _transaction(
                        conn, chunk, revision, chain_end, owed
                    )
                    cpu += spent
            if sum(len(rows) for rows in owed.values()) >= store.DEFAULT_CHECKPOINT_EVERY:
                cpu += _checkpoint(conn, owed)
            pairs += batch
        return cpu / pairs * 1e6, pairs
    finally:
        conn.close()
        directory.cleanup()


def _transaction(conn: Any, commits: list, revision: int, chain_end: tuple, owed: dict):
    """Write ``commits`` as the store's fused path does; the CPU of its statements alone.

    Returns the new revision, the new end of the audit chain and the CPU seconds;
    the leases' rows join ``owed``.
    """
    from licenseserver import audit, store

    lines: list[str] = []
    entries: list = []
    for change, entry in commits:
        revision += 1
        prepared = store.prepare_commit(revision, [change], [entry])
        lines += prepared.lines
        entries += prepared.entries
        for spec, key, row in prepared.writes:
            owed.setdefault(spec.kind, {})[key] = row
    audited, new_end = audit.append_lines(chain_end, entries)
    start = time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    store._meta_int(conn, "revision")
    store._insert_log(conn, revision, lines)
    store._set_meta(conn, "revision", revision)
    conn.execute(
        "INSERT INTO audit_log (last, prev, hash, lines) VALUES (?, ?, ?, ?)",
        (new_end[0], chain_end[1], new_end[1], "\n".join(audited)),
    )
    conn.execute("COMMIT")
    return revision, new_end, time.process_time() - start


def _checkpoint(conn: Any, owed: dict) -> float:
    """Write the owed rows as the store's checkpoint does; its CPU seconds."""
    from licenseserver import store

    start = time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    store._write_rows(conn, owed)
    store._set_meta(conn, "checkpoint", store._meta_int(conn, "revision"))
    conn.execute("COMMIT")
    owed.clear()
    return time.process_time() - start


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    work = common.work_dir(args, "request-path")
    key = common.vendor_key(work / "keys")
    license = common.licenses(key, common.PRODUCT, 1, 200)[0]
    from licenseserver import signing

    trusted = {signing.key_id(key.public_key()): key.public_key()}
    rows = []
    result: dict[str, Any] = {"machine": info, "connections": args.connections, "depths": {}}
    for depth in DEPTHS:
        cpu, pairs = decide_and_answer(license, trusted, depth, args.connections, args.seconds)
        batch = args.connections * depth
        store_cpu, store_pairs, transactions = await make_durable(reactor, batch, args.seconds)
        sql_cpu, sql_pairs = sqlite_alone(batch, args.seconds)
        result["depths"][str(depth)] = {
            "batch": batch,
            "decide_us_per_pair": cpu,
            "decide_pairs": pairs,
            "durable_us_per_pair": store_cpu,
            "durable_pairs": store_pairs,
            "commits_per_transaction": 2 * store_pairs / max(1, transactions),
            "sqlite_us_per_pair": sql_cpu,
            "sqlite_pairs": sql_pairs,
        }
        rows.append(
            (
                depth,
                f"{cpu:.1f}",
                f"{store_cpu:.1f}",
                f"{cpu + store_cpu:.1f}",
                f"{sql_cpu:.1f}",
                batch,
            )
        )
        common.say(
            f"depth {depth:2d}: decide and answer {cpu:.1f} us/pair ({pairs} pairs), "
            f"make durable {store_cpu:.1f} us/pair ({store_pairs} pairs, {batch} at a time), "
            f"of which SQLite alone {sql_cpu:.1f} us/pair ({sql_pairs} pairs)"
        )
    common.say()
    common.say(
        common.table(
            [
                "in flight",
                "decide and answer us/pair",
                "make durable us/pair",
                "sum",
                "SQLite alone us/pair",
                "batch",
            ],
            rows,
        )
    )
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def run(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__, seconds=5.0)
    p.add_argument("--connections", type=int, default=50)
    args = common.parse(p, argv)
    if args.quick:
        args.connections = min(args.connections, 10)
    common.run_scenario("request_path", main, args)


if __name__ == "__main__":
    run()
