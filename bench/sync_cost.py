"""Sync cost: a failover's full sync of a large pool, and an incremental sync of 100 changes.

    python bench/sync_cost.py [--seconds N] [--quick] [--clients N] [--licenses N] [--changes N]

The primary's data directory is built directly through the store before it starts:
100,000 registered clients (each with its product registration, as HELLO leaves them) and
10,000 signed licenses over 100 products (``--quick``: 2,000 clients, 100 licenses). A
failover with an empty data directory is then started against it, its link to the primary
running through a small TCP proxy in this process that counts the bytes of every request
and answer on the link and notes when each one passes.

Full sync: from starting the failover process to its ``/api/status`` showing the primary's
revision (its pool is replaced only once the snapshot is stored), with the bytes of the
``SYNC`` answer and where the time went.

Incremental sync: right after a ``BEAT`` of the failover, 10 clients make 100 changes at
the primary (``--changes``; CHECKOUTs, then RELEASEs of those leases in the next round):
100 revisions of one change each. The failover learns of them at its next heartbeat and
asks ``SYNC since=<r>``; measured are the bytes of that answer and the time from the
failover's ``SYNC`` request to the last change being durable in the failover's database
(read directly from its SQLite file, polled every millisecond).
``--rounds`` rounds (default 6); ``--seconds`` is a time budget: no round starts after it.

Targets: the incremental sync moves under 1% of the full sync's bytes, in under 100 ms.

The result line, ``RESULT sync_cost {...}`` (times in seconds; a spread is ``{"n",
"median", "min", "max"}`` of one number over several runs, as ``common.spread`` makes it):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``clients`` (int): the registered clients in the primary's pool.
- ``licenses`` (int): the licenses in it.
- ``full_syncs`` (list of objects): one per full sync (``--full-syncs``):

  - ``revision`` (int): the primary's revision, which the failover reached;
  - ``seconds`` (number): from starting the failover to its ``/api/status`` showing it;
  - ``start_to_request_s`` (number): from starting the failover to its ``SYNC`` request;
  - ``first_byte_s`` (number): from the request to the answer's first byte;
  - ``request_to_answer_s`` (number): from the request to the answer's last byte;
  - ``answer_to_synced_s`` (number): from then to the failover showing the revision;
  - ``bytes`` (int): the bytes of the ``SYNC`` answer;
  - ``lines`` (int): its record lines;
  - ``link_bytes_total`` (int): the bytes both ways on the link so far;
  - ``primary_cpu_s``, ``failover_cpu_s`` (number): the primary's CPU seconds for the sync,
    the failover's from its start to synced;
  - ``primary_rss_kb``, ``failover_rss_kb`` (int): their RSS afterwards, in KiB.

- ``full`` (object): the first full sync's fields, as in ``full_syncs``, and:

  - ``stats`` (object): spreads over all full syncs of:

    - ``seconds``, ``start_to_request_s``, ``request_to_answer_s``,
      ``answer_to_synced_s``, ``bytes``, ``primary_cpu_s``, ``failover_cpu_s``,
      ``failover_rss_kb`` (spread).

- ``incremental`` (list of objects): one per incremental round (``--rounds``):

  - ``kind`` (str): ``CHECKOUT`` or ``RELEASE``, the changes made;
  - ``changes`` (int): how many (``--changes``), one revision each;
  - ``syncs`` (int): the ``SYNC`` requests that brought them (1 unless they were split);
  - ``lines`` (int): the change lines of the answers;
  - ``mode`` (str): the first answer's ``mode`` (``changes``);
  - ``bytes`` (int): the bytes of the answers;
  - ``request_bytes`` (int): the bytes of the requests;
  - ``seconds`` (number): from the first ``SYNC`` request to the last change durable in
    the failover's database;
  - ``request_to_answer_s`` (number): from that request to the last answer's end;
  - ``answer_to_durable_s`` (number): from then to the last change durable;
  - ``changes_made_s`` (number): how long making the changes took at the primary;
  - ``changes_to_durable_s`` (number): from the last change made to it durable at the
    failover.

- ``incremental_stats`` (object): spreads over all incremental rounds of:

  - ``bytes``, ``seconds``, ``request_to_answer_s``, ``answer_to_durable_s``,
    ``changes_to_durable_s`` (spread).

- ``incremental_by_kind`` (object): ``"CHECKOUT"`` and ``"RELEASE"`` (those that ran),
  each with the same spreads over that kind's rounds.
- ``byte_share`` (number): the largest incremental ``bytes`` over the full sync's.
- ``bytes_met`` (bool): whether ``byte_share`` is under 1%.
- ``time_met`` (bool): whether the largest incremental ``seconds`` is under 0.1.
- ``split_syncs`` (int): the rounds whose changes took more than one ``SYNC``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import common
from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Factory, Protocol

BYTES_TARGET = 0.01
TIME_TARGET = 0.100
WRITERS = 10


@dataclass
class Exchange:
    """One request on the link and its answer, as the proxy saw them pass."""

    verb: bytes
    request: bytes
    sent_at: float
    header: bytes | None = None
    lines_expected: int = 0
    lines_seen: int = 0
    response_bytes: int = 0
    first_byte_at: float | None = None
    done_at: float | None = None


class LinkMonitor:
    """Follows the requests and answers on the failover's link; counts their bytes."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.pending: deque[Exchange] = deque()
        self.up_bytes = 0
        self.down_bytes = 0
        self._up = b""
        self._header = b""

    def up(self, data: bytes) -> None:
        now = time.monotonic()
        self.up_bytes += len(data)
        lines = (self._up + data).split(b"\n")
        self._up = lines.pop()
        for line in lines:
            exchange = Exchange(line.split(b" ", 1)[0], line, now)
            self.exchanges.append(exchange)
            self.pending.append(exchange)

    def down(self, data: bytes) -> None:
        now = time.monotonic()
        self.down_bytes += len(data)
        pos, n = 0, len(data)
        while pos < n and self.pending:
            ex = self.pending[0]
            if ex.first_byte_at is None:
                ex.first_byte_at = now
            if ex.header is None:
                end = data.find(b"\n", pos)
                if end < 0:
                    self._header += data[pos:]
                    ex.response_bytes += n - pos
                    return
                ex.header, self._header = self._header + data[pos:end], b""
                ex.response_bytes += end + 1 - pos
                pos = end + 1
                if ex.header.startswith(b"OK"):
                    ex.lines_expected = int(common.args_of(ex.header).get("lines", "0"))
                if ex.lines_expected == 0:
                    self._finish(ex, now)
                continue
            remaining = ex.lines_expected - ex.lines_seen
            count = data.count(b"\n", pos)
            if count < remaining:
                ex.lines_seen += count
                ex.response_bytes += n - pos
                return
            end = pos - 1
            for _ in range(remaining):
                end = data.find(b"\n", end + 1)
            ex.lines_seen += remaining
            ex.response_bytes += end + 1 - pos
            pos = end + 1
            self._finish(ex, now)

    def _finish(self, ex: Exchange, now: float) -> None:
        ex.done_at = now
        self.pending.popleft()

    def after(self, verb: bytes, since: float, done: bool = True) -> list[Exchange]:
        """The exchanges of ``verb`` sent after ``since`` (only answered ones with ``done``)."""
        return [
            e
            for e in self.exchanges
            if e.verb == verb and e.sent_at > since and (e.done_at is not None or not done)
        ]


class _ToPrimary(Protocol):
    def __init__(self, near: _FromFailover):
        self.near = near

    def connectionMade(self) -> None:
        self.near.far = self
        self.near.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.near.monitor.down(data)
        self.near.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.near.transport.loseConnection()


class _FromFailover(Protocol):
    def __init__(self, monitor: LinkMonitor, reactor: Any, target: int):
        self.monitor = monitor
        self.reactor = reactor
        self.target = target
        self.far: _ToPrimary | None = None

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        factory = ClientFactory.forProtocol(lambda: _ToPrimary(self))
        factory.clientConnectionFailed = lambda connector, reason: self.transport.loseConnection()
        self.reactor.connectTCP("127.0.0.1", self.target, factory)

    def dataReceived(self, data: bytes) -> None:
        self.monitor.up(data)
        self.far.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.far is not None:
            self.far.transport.loseConnection()


def start_proxy(reactor: Any, target: int, monitor: LinkMonitor) -> Any:
    """Listen on 127.0.0.1 and pass each connection on to ``target``, through ``monitor``."""
    factory = Factory.forProtocol(lambda: _FromFailover(monitor, reactor, target))
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


def pool_records(key: Any, clients: int, licenses: int) -> tuple[list[str], list[Any]]:
    """The products, and the records of the primary's pool."""
    from licenseserver.model import Client, Product

    products = [f"P{i:03d}" for i in range(max(1, licenses // 100))]
    records: list[Any] = []
    per = licenses // len(products)
    for product in products:
        records += common.licenses(key, product, per, 10)
    now = int(time.time())
    for i in range(1, clients + 1):
        client_id = f"c-{i}"
        records.append(Client(client_id, f"m-{i:06d}", f"host-{i:06d}.example.com", now, now))
        product = products[i % len(products)]
        records.append(Product(client_id, product, common.VERSION, f"user{i % 500}", 4, now))
    return products, records


def durable_revision(path: Any) -> int:
    """The revision stored in a server's database right now."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])
    finally:
        conn.close()


class Writers:
    """``WRITERS`` client connections at the primary that make the changes."""

    def __init__(self, reactor: Any, port: int, products: list[str]):
        self.reactor = reactor
        self.port = port
        self.product = products[0]
        self.count = len(products)
        self.clients: list[common.LineClient] = []
        self.leases: list[list[str]] = []

    async def open(self) -> None:
        for w in range(WRITERS):
            client = await common.connect(self.reactor, self.port)
            machine = f"m-{(w + 1) * self.count:06d}"
            answer = await client.request(common.hello_line(machine, self.product))
            if not answer.startswith(b"OK"):
                raise RuntimeError(f"HELLO at the primary: {answer!r}")
            self.clients.append(client)
            self.leases.append([])

    async def change(self, count: int, checkout: bool) -> None:
        """``count`` CHECKOUTs (or RELEASEs of the leases held), pipelined over the clients."""
        requests = []
        for i in range(count):
            w = i % WRITERS
            if checkout:
                requests.append(self._checkout(w))
            else:
                requests.append(self._release(w, self.leases[w].pop()))
        await defer.gatherResults(requests, consumeErrors=True)

    def _checkout(self, w: int) -> defer.Deferred:
        def took(answer: bytes) -> None:
            if not answer.startswith(b"OK"):
                raise RuntimeError(f"CHECKOUT: {answer!r}")
            self.leases[w].append(common.args_of(answer)["lease"])

        return self.clients[w].request(b"CHECKOUT").addCallback(took)

    def _release(self, w: int, lease: str) -> defer.Deferred:
        def released(answer: bytes) -> None:
            if not answer.startswith(b"OK"):
                raise RuntimeError(f"RELEASE: {answer!r}")

        return self.clients[w].request(f"RELEASE lease={lease}".encode()).addCallback(released)

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def full_sync(
    reactor: Any, primary: common.Server, failover: common.Server, monitor: LinkMonitor
) -> dict[str, Any]:
    target = (await primary.status(reactor))["revision"]
    cpu_primary0 = primary.cpu()
    failover.spawn()
    t_start = failover.started_at

    async def caught_up() -> bool:
        if not failover.listening():
            return False
        try:
            return (await failover.status(reactor))["revision"] >= target
        except Exception:
            return False

    await common.wait_until(reactor, caught_up, 1800, "the full sync", 0.02)
    t_synced = time.monotonic()
    syncs = monitor.after(b"SYNC", t_start)
    if len(syncs) != 1 or not syncs[0].header.startswith(b"OK mode=snapshot"):
        raise RuntimeError(f"expected one snapshot SYNC, saw {[s.header for s in syncs]}")
    sync = syncs[0]
    return {
        "revision": target,
        "seconds": t_synced - t_start,
        "start_to_request_s": sync.sent_at - t_start,
        "request_to_answer_s": sync.done_at - sync.sent_at,
        "first_byte_s": sync.first_byte_at - sync.sent_at,
        "answer_to_synced_s": t_synced - sync.done_at,
        "bytes": sync.response_bytes,
        "lines": sync.lines_seen,
        "link_bytes_total": monitor.up_bytes + monitor.down_bytes,
        "primary_cpu_s": primary.cpu() - cpu_primary0,
        "failover_cpu_s": failover.cpu(),
        "failover_rss_kb": failover.memory()["rss"],
        "primary_rss_kb": primary.memory()["rss"],
    }


async def in_sync(reactor: Any, primary: common.Server, failover: common.Server) -> None:
    """Wait until the failover's ``/api/status`` shows the primary's revision."""

    async def same() -> bool:
        p = await primary.status(reactor)
        f = await failover.status(reactor)
        return f["revision"] == p["revision"]

    await common.wait_until(reactor, same, 60, "the failover to catch up", 0.01)


async def incremental(
    reactor: Any,
    args: Any,
    primary: common.Server,
    failover: common.Server,
    monitor: LinkMonitor,
    writers: Writers,
    checkout: bool,
) -> dict[str, Any]:
    database = failover.data_dir / "licenseserver.sqlite3"
    await in_sync(reactor, primary, failover)
    mark = time.monotonic()
    await common.wait_until(
        reactor, lambda: monitor.after(b"BEAT", mark), 30, "a BEAT of the failover", 0.001
    )
    t_changes = time.monotonic()
    await writers.change(args.changes, checkout)
    t_changed = time.monotonic()
    target = (await primary.status(reactor))["revision"]
    await common.wait_until(
        reactor,
        lambda: durable_revision(database) >= target,
        60,
        "the failover to store the changes",
        0.001,
    )
    t_durable = time.monotonic()
    syncs = monitor.after(b"SYNC", t_changes)
    first = syncs[0]
    lines = sum(s.lines_seen for s in syncs)
    await in_sync(reactor, primary, failover)
    return {
        "kind": "CHECKOUT" if checkout else "RELEASE",
        "changes": args.changes,
        "syncs": len(syncs),
        "lines": lines,
        "mode": common.args_of(first.header).get("mode"),
        "bytes": sum(s.response_bytes for s in syncs),
        "request_bytes": sum(len(s.request) + 1 for s in syncs),
        "seconds": t_durable - first.sent_at,
        "request_to_answer_s": syncs[-1].done_at - first.sent_at,
        "answer_to_durable_s": t_durable - syncs[-1].done_at,
        "changes_made_s": t_changed - t_changes,
        "changes_to_durable_s": t_durable - t_changed,
    }


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    work = common.work_dir(args, "sync")
    primary_data, failover_data = work / "primary", work / "failover"
    key = common.vendor_key(work / "keys", [primary_data])
    t = time.monotonic()
    products, records = pool_records(key, args.clients, args.licenses)
    revision = common.build_data_dir(primary_data, records)
    common.say(
        f"built the primary's pool: {args.clients} clients, {args.licenses} licenses, "
        f"{len(records)} records at revision {revision} in {time.monotonic() - t:.1f} s"
    )
    del records
    primary = common.Server(
        "primary", primary_data, "--name", "bench-primary", code_root=args.code_root
    )
    monitor = LinkMonitor()
    proxy = None
    failover = None
    writers = None
    rounds: list[dict[str, Any]] = []
    fulls: list[dict[str, Any]] = []
    try:
        await primary.start(reactor)
        proxy = start_proxy(reactor, primary.port, monitor)
        failover = common.failover_server(
            failover_data, primary_data, proxy.getHost().port, code_root=args.code_root
        )
        for k in range(args.full_syncs):
            if k:
                await failover.stop(reactor)
                shutil.rmtree(failover_data)
            full = await full_sync(reactor, primary, failover, monitor)
            fulls.append(full)
            common.say(
                f"full sync {k + 1}/{args.full_syncs}: {full['seconds']:.2f} s from the "
                f"failover's start, {full['bytes'] / 1e6:.1f} MB in {full['lines']} lines"
            )
        writers = Writers(reactor, primary.port, products)
        await writers.open()
        started = time.monotonic()
        for r in range(args.rounds):
            if r and time.monotonic() - started > args.seconds:
                common.say(f"time budget of {args.seconds:g} s used: stopping after {r} rounds")
                break
            inc = await incremental(
                reactor, args, primary, failover, monitor, writers, checkout=r % 2 == 0
            )
            rounds.append(inc)
            common.say(
                f"incremental {r + 1}/{args.rounds} ({inc['changes']} {inc['kind']}s): "
                f"{inc['bytes']} bytes in {inc['syncs']} SYNC, {inc['seconds'] * 1e3:.1f} ms "
                f"from SYNC to durable (answer {inc['request_to_answer_s'] * 1e3:.1f} ms)"
            )
        if len(rounds) % 2:
            await writers.change(args.changes, checkout=False)
    finally:
        if writers is not None:
            writers.close()
        if failover is not None:
            await failover.stop(reactor)
        if proxy is not None:
            await proxy.stopListening()
        await primary.stop(reactor)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return summarize(info, args, fulls, rounds)


def summarize(
    info: dict[str, Any], args: Any, fulls: list[dict[str, Any]], rounds: list[dict[str, Any]]
) -> dict[str, Any]:
    full_keys = (
        "seconds",
        "start_to_request_s",
        "request_to_answer_s",
        "answer_to_synced_s",
        "bytes",
        "primary_cpu_s",
        "failover_cpu_s",
        "failover_rss_kb",
    )
    full = {k: common.spread([f[k] for f in fulls]) for k in full_keys}
    full_bytes = fulls[0]["bytes"]
    inc_keys = (
        "bytes",
        "seconds",
        "request_to_answer_s",
        "answer_to_durable_s",
        "changes_to_durable_s",
    )
    stats = {k: common.spread([r[k] for r in rounds]) for k in inc_keys}
    by_kind = {
        kind: {k: common.spread([r[k] for r in rounds if r["kind"] == kind]) for k in inc_keys}
        for kind in ("CHECKOUT", "RELEASE")
        if any(r["kind"] == kind for r in rounds)
    }
    worst_bytes = stats["bytes"].get("max", float("inf"))
    worst_seconds = stats["seconds"].get("max", float("inf"))
    byte_share = worst_bytes / full_bytes
    result = {
        "machine": info,
        "clients": args.clients,
        "licenses": args.licenses,
        "full_syncs": fulls,
        "full": {**fulls[0], "stats": full},
        "incremental": rounds,
        "incremental_stats": stats,
        "incremental_by_kind": by_kind,
        "byte_share": byte_share,
        "bytes_met": byte_share < BYTES_TARGET,
        "time_met": worst_seconds < TIME_TARGET,
        "split_syncs": sum(1 for r in rounds if r["syncs"] != 1),
    }
    n = len(fulls)
    common.say()
    common.say(
        common.table(
            ["full sync", f"median (min-max) of {n}"],
            [
                ["pool", f"{args.clients} clients, {args.licenses} licenses"],
                ["records (SYNC answer lines)", fulls[0]["lines"]],
                ["SYNC answer (MB)", f"{full_bytes / 1e6:.2f}"],
                ["failover start -> synced (s)", common.fmt_spread(full["seconds"], digits=2)],
                [
                    "  start -> SYNC request (s)",
                    common.fmt_spread(full["start_to_request_s"], digits=2),
                ],
                [
                    "  SYNC request -> answer received (s)",
                    common.fmt_spread(full["request_to_answer_s"], digits=2),
                ],
                [
                    "  answer received -> synced and stored (s)",
                    common.fmt_spread(full["answer_to_synced_s"], digits=2),
                ],
                [
                    "primary CPU for the sync (s)",
                    common.fmt_spread(full["primary_cpu_s"], digits=2),
                ],
                [
                    "failover CPU, start to synced (s)",
                    common.fmt_spread(full["failover_cpu_s"], digits=2),
                ],
                [
                    "failover RSS after (MiB)",
                    common.fmt_spread(full["failover_rss_kb"], 1 / 1024, digits=0),
                ],
            ],
        )
    )
    common.say()
    ms = 1e3
    rows = []
    for kind, st in by_kind.items():
        count = st["bytes"]["n"]
        rows += [
            [
                f"{args.changes} {kind}s ({count} rounds): SYNC answer (bytes)",
                common.fmt_spread(st["bytes"], digits=0),
            ],
            [
                "  SYNC request -> stored at the failover (ms)",
                common.fmt_spread(st["seconds"], ms),
            ],
            [
                "  SYNC request -> answer received (ms)",
                common.fmt_spread(st["request_to_answer_s"], ms),
            ],
            ["  answer received -> stored (ms)", common.fmt_spread(st["answer_to_durable_s"], ms)],
            [
                "  last change made -> stored (ms; waits for the next BEAT)",
                common.fmt_spread(st["changes_to_durable_s"], ms),
            ],
        ]
    common.say(common.table(["incremental sync", "median (min-max)"], rows))
    common.say(
        f"worst incremental sync: {worst_bytes:.0f} bytes = {byte_share * 100:.3f}% of the full "
        f"sync (target < {BYTES_TARGET * 100:g}%: {'met' if result['bytes_met'] else 'MISSED'}), "
        f"{worst_seconds * ms:.1f} ms (target < {TIME_TARGET * ms:g} ms: "
        f"{'met' if result['time_met'] else 'MISSED'})"
    )
    return result


def run(argv: list[str] | None = None) -> None:
    p = common.parser(
        __doc__,
        seconds=600.0,
        quick_seconds=30.0,
        seconds_help="time budget: no incremental round starts after it",
    )
    common.scaled(p, "--clients", int, 100_000, 2000, "registered clients in the pool")
    common.scaled(p, "--licenses", int, 10_000, 100, "licenses in the pool")
    common.scaled(p, "--changes", int, 100, 20, "changes per incremental sync")
    common.scaled(p, "--rounds", int, 6, 2, "incremental syncs")
    common.scaled(p, "--full-syncs", int, 3, 1, "full syncs, each from an empty failover")
    args = common.parse(p, argv)
    if args.changes % WRITERS:
        p.error(f"--changes must be a multiple of {WRITERS}")
    common.run_scenario("sync_cost", main, args)


if __name__ == "__main__":
    run()
