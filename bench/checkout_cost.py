"""Cost of a checkout: server CPU seconds per CHECKOUT+RELEASE pair, against a bare baseline.

    python bench/checkout_cost.py [--seconds N] [--quick] [--rounds R] [--connections C] [--floor]

50 connections (``--connections``) each say HELLO once, then CHECKOUT a seat and RELEASE
it, over and over: first with one request in flight per connection (how real clients
behave), then pipelining 16 at a time. The same load runs against the baseline, a bare
Twisted ``LineReceiver`` process that answers every line with one fixed ``OK lease=...``
line. The server's CPU time comes from ``/proc/<pid>/stat`` (all its threads: the reactor
and the store's writer); the load comes from this process. Rounds alternate baseline and
server, so that noise from other work on the machine hits both.

Targets: at most 2x the baseline's CPU per pair without pipelining, 5x with it.

With ``--floor`` the same rounds also load ``floor_server.py``: the least a Python server
does per pair while keeping the promises of the specs that cost CPU on every grant and
release (see its docstring), to show how much of the server's cost is the job's; and
``floor-inline``, the same with its commits on the reactor thread (no writer thread), to
show what the second thread costs.

The result line, ``RESULT checkout_cost {...}`` (a spread is ``{"n", "median", "min",
"max"}`` of one number over the rounds, as ``common.spread`` makes it):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``connections`` (int): the connections of every phase.
- ``depths`` (object): ``"1"`` and ``"16"``, the requests in flight per connection, each:

  - ``"baseline"``, ``"server"`` and, with ``--floor``, ``"floor"`` and ``"floor-inline"``
    (object): that process's phases at this depth:

    - ``cpu_per_pair_us`` (spread): its CPU per CHECKOUT+RELEASE pair, in microseconds;
    - ``reactor_thread_us_per_pair``, ``other_threads_us_per_pair`` (spread): the same,
      split between its main (reactor) thread and its other threads;
    - ``pairs_per_s`` (spread): pairs completed per second;
    - ``server_cpu_pct`` (spread): its CPU use, in % of one core;
    - ``load_cpu_pct`` (spread): the load's (this process's) CPU use, in % of one core;
    - ``errors`` (int): requests refused in all its phases (0 in a good run);
    - ``ratio`` (spread; not the baseline's): its CPU per pair over the baseline's
      measured next to it, round by round.

  - ``ratio`` (spread): the server's ``ratio``, the one the target is about;
  - ``target_ratio`` (number): that target (2 at depth 1, 5 at depth 16);
  - ``met`` (bool): whether the median of ``ratio`` is at most ``target_ratio``.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import common
from twisted.internet import defer
from twisted.internet.protocol import Protocol

DEPTHS = (1, 16)
TARGETS = {1: 2.0, 16: 5.0}

CHECKOUT, RELEASE, HELLO = 0, 1, 2
CHECKOUT_LINE = b"CHECKOUT\n"


class PairRun:
    """Counters and the connections of one load phase."""

    def __init__(self, depth: int, connections: int):
        self.depth = depth
        self.connections = connections
        self.protocols: list[PairLoad] = []
        self.running = False
        self.pairs = 0
        self.checkouts = 0
        self.errors = 0
        self.error_lines: list[bytes] = []
        self.helloed = 0
        self.ready: defer.Deferred = defer.Deferred()
        self.drained: defer.Deferred | None = None

    def error(self, line: bytes) -> None:
        self.errors += 1
        if len(self.error_lines) < 5:
            self.error_lines.append(line)

    def hello_done(self) -> None:
        self.helloed += 1
        if self.helloed == self.connections and not self.ready.called:
            self.ready.callback(None)

    def go(self) -> None:
        self.running = True
        for p in self.protocols:
            p.pump()

    def drain(self) -> defer.Deferred:
        """Stop taking seats; fire once every answer is in and every seat released."""
        self.running = False
        self.drained = defer.Deferred()
        for p in self.protocols:
            p.pump()
        self.check_drained()
        return self.drained

    def check_drained(self) -> None:
        if self.drained is None or self.drained.called:
            return
        if all(not p.expect and not p.leases for p in self.protocols):
            self.drained.callback(None)


class PairLoad(Protocol):
    """One client connection: HELLO, then CHECKOUT/RELEASE with ``depth`` requests in flight."""

    def __init__(self, run: PairRun, machine: str):
        self.run = run
        self.machine = machine
        self.buffer = b""
        self.expect: deque[int] = deque()
        self.leases: deque[bytes] = deque()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.run.protocols.append(self)
        self.expect.append(HELLO)
        self.transport.write(common.hello_line(self.machine) + b"\n")

    def dataReceived(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        run = self.run
        for line in lines:
            kind = self.expect.popleft()
            ok = line.startswith(b"OK")
            if kind == CHECKOUT:
                if ok:
                    start = line.find(b" lease=") + 7
                    end = line.find(b" ", start)
                    self.leases.append(line[start:end] if end > 0 else line[start:])
                    run.checkouts += 1
                else:
                    run.error(line)
            elif kind == RELEASE:
                if ok:
                    run.pairs += 1
                else:
                    run.error(line)
            elif ok:
                run.hello_done()
            else:
                run.error(line)
        self.pump()
        if run.drained is not None:
            run.check_drained()

    def pump(self) -> None:
        """Send requests until ``depth`` are in flight: releases first, then checkouts."""
        run = self.run
        if not run.running and run.drained is None:
            return
        out = []
        expect = self.expect
        while len(expect) < run.depth:
            if self.leases:
                out.append(b"RELEASE lease=" + self.leases.popleft() + b"\n")
                expect.append(RELEASE)
            elif run.running:
                out.append(CHECKOUT_LINE)
                expect.append(CHECKOUT)
            else:
                break
        if out:
            self.transport.write(b"".join(out))


async def phase(
    reactor: Any,
    target: Any,
    depth: int,
    connections: int,
    warmup: float,
    seconds: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Load ``target`` (a Server or the Baseline) and measure its CPU per pair.

    With ``profile`` (a file), py-spy records the target while it is measured.
    """
    run = PairRun(depth, connections)
    protocols = await defer.gatherResults(
        [
            defer.ensureDeferred(common.connect(reactor, target.port, PairLoad(run, f"bench-{i}")))
            for i in range(connections)
        ],
        consumeErrors=True,
    )
    ready = run.ready
    ready.addTimeout(30, reactor)
    await ready
    if run.errors:
        raise RuntimeError(f"HELLO refused: {run.error_lines}")
    run.go()
    await common.sleep(reactor, warmup)
    profiler = common.Profile(target.pid, seconds, profile) if profile else None
    threads0 = common.thread_cpu_seconds(target.pid)
    t0, cpu0, load0, pairs0 = time.monotonic(), target.cpu(), common.cpu_seconds(), run.pairs
    await common.sleep(reactor, seconds)
    t1, cpu1, load1, pairs1 = time.monotonic(), target.cpu(), common.cpu_seconds(), run.pairs
    threads1 = common.thread_cpu_seconds(target.pid)
    if profiler is not None:
        common.say(f"profile of {profile.name}:\n{await profiler.finish(reactor)}")
    drained = run.drain()
    drained.addTimeout(60, reactor)
    await drained
    for p in protocols:
        p.transport.loseConnection()
    await common.sleep(reactor, 0.2)
    pairs = pairs1 - pairs0
    elapsed = t1 - t0
    if pairs <= 0:
        raise RuntimeError(f"no pair completed in {elapsed:.1f} s; errors: {run.error_lines}")
    return {
        "pairs": pairs,
        "seconds": elapsed,
        "pairs_per_s": pairs / elapsed,
        "cpu_per_pair_us": (cpu1 - cpu0) / pairs * 1e6,
        "server_cpu_pct": (cpu1 - cpu0) / elapsed * 100,
        "reactor_thread_us_per_pair": (threads1["main"] - threads0["main"]) / pairs * 1e6,
        "other_threads_us_per_pair": (threads1["others"] - threads0["others"]) / pairs * 1e6,
        "load_cpu_pct": (load1 - load0) / elapsed * 100,
        "errors": run.errors,
        "error_lines": [line.decode("utf-8", "replace") for line in run.error_lines],
    }


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    work = common.work_dir(args, "checkout")
    data = work / "primary"
    key = common.vendor_key(work / "keys", [data])
    common.build_data_dir(data, common.licenses(key, common.PRODUCT, 1, args.connections * 4))
    server = common.Server(
        "primary",
        data,
        "--rate-limit",
        "0",
        "--max-connections",
        "0",
        "--max-connections-per-address",
        "0",
        code_root=args.code_root,
    )
    baseline = common.Baseline(work)
    targets = [("baseline", baseline), ("server", server)]
    if args.floor:
        targets.append(("floor", common.Baseline(work, "floor", _floor_command(work))))
        inline = _floor_command(work, inline=True)
        targets.append(("floor-inline", common.Baseline(work, "floor-inline", inline)))
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {d: [] for d in DEPTHS} for name, _ in targets
    }
    try:
        for _, target in targets:
            await target.start(reactor)
        for r in range(args.rounds):
            for depth in DEPTHS:
                for name, target in targets if r % 2 == 0 else targets[::-1]:
                    profile = None
                    if args.profile and r == 0:
                        profile = Path(args.profile) / f"checkout-{name}-depth{depth}.txt"
                    res = await phase(
                        reactor,
                        target,
                        depth,
                        args.connections,
                        args.warmup,
                        args.seconds,
                        profile,
                    )
                    results[name][depth].append(res)
                    common.say(
                        f"round {r + 1}/{args.rounds} depth {depth:2d} {name:12s}: "
                        f"{res['pairs_per_s']:8.0f} pairs/s, "
                        f"{res['cpu_per_pair_us']:7.1f} us CPU/pair, "
                        f"server {res['server_cpu_pct']:5.1f}% CPU, "
                        f"load {res['load_cpu_pct']:5.1f}% CPU"
                        + (
                            f", {res['errors']} errors {res['error_lines'][:2]}"
                            if res["errors"]
                            else ""
                        )
                    )
    finally:
        for _, target in targets:
            await target.stop(reactor)
    return summarize(info, args, results)


def _floor_command(work: Path, inline: bool = False) -> list[str]:
    """The command line of ``floor_server.py``, its database in ``work``."""
    database = work / ("floor-inline.sqlite3" if inline else "floor.sqlite3")
    command = [sys.executable, str(Path(__file__).with_name("floor_server.py"))]
    return command + ["--database", str(database)] + (["--inline"] if inline else [])


def _spreads(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("cpu_per_pair_us", "pairs_per_s", "server_cpu_pct", "load_cpu_pct")
    keys += ("reactor_thread_us_per_pair", "other_threads_us_per_pair")
    out: dict[str, Any] = {key: common.spread([x[key] for x in runs]) for key in keys}
    out["errors"] = sum(x["errors"] for x in runs)
    return out


def summarize(info: dict[str, Any], args: Any, results: dict) -> dict[str, Any]:
    """Tables and the result: each target's CPU per pair, and its ratio to the baseline's
    measured next to it; the verdict is the server's."""
    out: dict[str, Any] = {"machine": info, "connections": args.connections, "depths": {}}
    rows = []
    for depth in DEPTHS:
        base = results["baseline"][depth]
        entry: dict[str, Any] = {name: _spreads(runs[depth]) for name, runs in results.items()}
        for name, runs in results.items():
            if name == "baseline":
                continue
            ratios = [
                s["cpu_per_pair_us"] / b["cpu_per_pair_us"]
                for s, b in zip(runs[depth], base, strict=True)
            ]
            entry[name]["ratio"] = common.spread(ratios)
        entry["ratio"] = entry["server"]["ratio"]
        entry["target_ratio"] = TARGETS[depth]
        entry["met"] = bool(base) and entry["ratio"]["median"] <= TARGETS[depth]
        out["depths"][str(depth)] = entry
        for name in results:
            e = entry[name]
            rows.append(
                [
                    depth,
                    name,
                    common.fmt_spread(e["cpu_per_pair_us"]),
                    common.fmt_spread(e["reactor_thread_us_per_pair"], digits=0)
                    + " / "
                    + common.fmt_spread(e["other_threads_us_per_pair"], digits=0)
                    if name != "baseline"
                    else "-",
                    common.fmt_spread(e["pairs_per_s"], digits=0),
                    common.fmt_spread(e["server_cpu_pct"], digits=0),
                    common.fmt_spread(e["load_cpu_pct"], digits=0),
                    common.fmt_spread(e["ratio"], digits=1) + "x" if name != "baseline" else "1x",
                ]
            )
    common.say()
    common.say(
        common.table(
            [
                "in flight",
                "process",
                "CPU us/pair",
                "reactor / other threads us/pair",
                "pairs/s",
                "server CPU %",
                "load CPU %",
                "CPU vs baseline",
            ],
            rows,
        )
    )
    for depth in DEPTHS:
        entry = out["depths"][str(depth)]
        verdict = "met" if entry["met"] else "MISSED"
        common.say(
            f"depth {depth}: server/baseline CPU per pair "
            f"{common.fmt_spread(entry['ratio'], digits=1)}x, target <= {TARGETS[depth]:g}x: "
            f"{verdict}"
        )
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def run(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__, seconds=10.0, profile=True)
    common.scaled(p, "--rounds", int, 3, 1, "rounds of baseline and server at both depths")
    p.add_argument("--connections", type=int, default=50)
    common.scaled(p, "--warmup", float, 2.0, 0.3, "seconds of load before measuring")
    p.add_argument(
        "--floor",
        action="store_true",
        help="also load floor_server.py, the least a Python server does per pair, with and "
        "without its writer thread, in the same rounds",
    )
    args = common.parse(p, argv)
    common.run_scenario("checkout_cost", main, args)


if __name__ == "__main__":
    run()
