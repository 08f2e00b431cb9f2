"""Cost of a checkout: server CPU seconds per CHECKOUT+RELEASE pair, against a bare baseline.

    python bench/checkout_cost.py [--seconds N] [--quick] [--rounds R] [--connections C]

50 connections (``--connections``) each say HELLO once, then CHECKOUT a seat and RELEASE
it, over and over: first with one request in flight per connection (how real clients
behave), then pipelining 16 at a time. The same load runs against the baseline, a bare
Twisted ``LineReceiver`` process that answers every line with one fixed ``OK lease=...``
line. The server's CPU time comes from ``/proc/<pid>/stat`` (all its threads: the reactor
and the store's writer); the load comes from this process. Rounds alternate baseline and
server, so that noise from other work on the machine hits both.

Targets: at most 2x the baseline's CPU per pair without pipelining, 5x with it.
"""

from __future__ import annotations

import os
import statistics
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
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        "baseline": {d: [] for d in DEPTHS},
        "server": {d: [] for d in DEPTHS},
    }
    try:
        await server.start(reactor)
        await baseline.start(reactor)
        for r in range(args.rounds):
            for depth in DEPTHS:
                pair = [("baseline", baseline), ("server", server)]
                for name, target in pair if r % 2 == 0 else pair[::-1]:
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
                        f"round {r + 1}/{args.rounds} depth {depth:2d} {name:8s}: "
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
        await baseline.stop(reactor)
        await server.stop(reactor)
    return summarize(info, args, results)


def summarize(info: dict[str, Any], args: Any, results: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": info, "connections": args.connections, "depths": {}}
    rows = []
    for depth in DEPTHS:
        base = results["baseline"][depth]
        serv = results["server"][depth]
        ratios = [
            s["cpu_per_pair_us"] / b["cpu_per_pair_us"] for s, b in zip(serv, base, strict=True)
        ]
        entry = {
            name: {
                "cpu_per_pair_us": common.spread([x["cpu_per_pair_us"] for x in runs]),
                "pairs_per_s": common.spread([x["pairs_per_s"] for x in runs]),
                "server_cpu_pct": common.spread([x["server_cpu_pct"] for x in runs]),
                "reactor_thread_us_per_pair": common.spread(
                    [x["reactor_thread_us_per_pair"] for x in runs]
                ),
                "other_threads_us_per_pair": common.spread(
                    [x["other_threads_us_per_pair"] for x in runs]
                ),
                "load_cpu_pct": common.spread([x["load_cpu_pct"] for x in runs]),
                "errors": sum(x["errors"] for x in runs),
            }
            for name, runs in (("baseline", base), ("server", serv))
        }
        entry["ratio"] = common.spread(ratios)
        entry["target_ratio"] = TARGETS[depth]
        entry["met"] = bool(ratios) and statistics.median(ratios) <= TARGETS[depth]
        out["depths"][str(depth)] = entry
        for name in ("baseline", "server"):
            e = entry[name]
            rows.append(
                [
                    depth,
                    name,
                    common.fmt_spread(e["cpu_per_pair_us"]),
                    common.fmt_spread(e["reactor_thread_us_per_pair"], digits=0)
                    + " / "
                    + common.fmt_spread(e["other_threads_us_per_pair"], digits=0)
                    if name == "server"
                    else "-",
                    common.fmt_spread(e["pairs_per_s"], digits=0),
                    common.fmt_spread(e["server_cpu_pct"], digits=0),
                    common.fmt_spread(e["load_cpu_pct"], digits=0),
                    common.fmt_spread(entry["ratio"], digits=1) + "x"
                    if name == "server"
                    else "1x",
                ]
            )
    common.say()
    common.say(
        common.table(
            [
                "in flight",
                "process",
                "CPU us/pair",
                "reactor / store thread us/pair",
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
    p = common.parser(__doc__.split("\n")[0], seconds=10.0, profile=True)
    common.scaled(p, "--rounds", int, 3, 1, "rounds of baseline and server at both depths")
    p.add_argument("--connections", type=int, default=50)
    common.scaled(p, "--warmup", float, 2.0, 0.3, "seconds of load before measuring")
    args = common.parse(p, argv)
    common.run_scenario("checkout_cost", main, args)


if __name__ == "__main__":
    run()
