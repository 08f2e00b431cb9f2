"""Idle clients: memory and CPU of a server holding 10,000 connected clients that heartbeat.

    python bench/idle_clients.py [--seconds N] [--quick] [--clients N]

Every client opens its own connection, says HELLO (a machine of its own), takes a seat
with CHECKOUT and then sends ``HEARTBEAT lease=...`` at the interval the server gave in
its HELLO answer (a quarter of the lease time: 30 s by default), at a random phase so
that the heartbeats are spread evenly. The server runs with its default options except
``--max-connections-per-address 0`` (every client comes from 127.0.0.1). Both processes
raise their open-file limit first.

Reported: the server's resident memory per connected client (its RSS with the clients
minus its RSS before them, over the number of clients; the clients' records and leases
included) and its CPU use in ``--windows`` windows (default 4) of ``--seconds`` each
(default 30: one heartbeat round), whose median is reported with its spread.
Targets: under 20 KB per connection, under 10% of one core.

With ``--baseline`` the same clients load the bare ``LineReceiver`` of
``checkout_cost.py`` instead, which answers every line with one fixed line: what the same
connections and heartbeats cost any Twisted line server, the yardstick for the server's
CPU per heartbeat.

The result line, ``RESULT idle_clients {...}`` (CPU use in % of one core, memory in KiB):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``server`` (str): ``licenseserver``, or ``baseline`` with ``--baseline``.
- ``clients`` (int): the clients, each on its own connection with a lease.
- ``heartbeat_interval`` (number): the heartbeat interval the server gave, in seconds.
- ``ramp_seconds`` (number): how long connecting all clients took (connect, HELLO and
  CHECKOUT, ``--concurrency`` at a time).
- ``ramp_server_cpu_seconds`` (number): the server's CPU seconds meanwhile.
- ``rss_before_kb`` (int): the server's RSS before the clients.
- ``rss_after_ramp_kb`` (int): its RSS once they are connected and settled.
- ``rss_after_kb`` (int): its RSS after the CPU windows.
- ``hwm_kb`` (int or null): its peak RSS then (``VmHWM``).
- ``memory_per_connection_kb`` (number): the largest RSS with the clients minus the RSS
  before them, over the number of clients.
- ``idle_cpu_pct_without_clients`` (number): the server's CPU use before the clients.
- ``window_seconds`` (number): the CPU windows' total length, in seconds.
- ``windows`` (list of objects): one per CPU window:

  - ``seconds`` (number): its length;
  - ``cpu_pct`` (number): the server's CPU use;
  - ``cpu_pct_reactor_thread``, ``cpu_pct_other_threads`` (number): the same, split
    between its main (reactor) thread and its other threads;
  - ``heartbeats`` (int): heartbeats answered OK;
  - ``cpu_us_per_heartbeat`` (number or null): the server's CPU per heartbeat, in
    microseconds (null for a window without heartbeats);
  - ``rss_kb`` (int): the server's RSS at the window's end.

- ``cpu_pct`` (number): the median of the windows' ``cpu_pct``: the CPU target's figure.
- ``cpu_pct_spread`` (spread): ``{"n", "median", "min", "max"}`` of the windows'
  ``cpu_pct``, as ``common.spread`` makes it.
- ``cpu_pct_reactor_thread``, ``cpu_pct_other_threads`` (number): the medians of the
  windows' ones.
- ``heartbeats`` (int): heartbeats answered OK in all windows.
- ``heartbeats_per_s`` (number): the same per second.
- ``heartbeat_errors`` (int): heartbeats refused in the windows (0 in a good run).
- ``errors`` (list of str): the first refusals of the run (up to 5), as the server sent
  them.
- ``cpu_us_per_heartbeat`` (number): the median of the windows' (0 for a window without).
- ``heartbeat_latency_ms`` (object): heartbeat round trips in the windows, in ms:

  - ``p50``, ``p99``, ``max`` (number or null): null when there was none.

- ``load_cpu_pct`` (number): the load's (this process's) CPU use in the windows.
- ``memory_met`` (bool): whether ``memory_per_connection_kb`` is under 20.
- ``cpu_met`` (bool): whether ``cpu_pct`` is under 10.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import common
from twisted.internet import defer
from twisted.internet.protocol import Protocol

DEFAULT_INTERVAL = 30.0
"""The server's heartbeat interval by default (a quarter of its 120 s lease time)."""
MEMORY_TARGET_KB = 20.0
CPU_TARGET_PCT = 10.0


class IdleRun:
    """What all the clients of one run count together."""

    def __init__(self, reactor: Any, seed: int = 7):
        self.reactor = reactor
        self.random = random.Random(seed)
        self.ready = 0
        self.beats = 0
        self.beat_errors = 0
        self.errors: list[str] = []
        self.lost = 0
        self.closing = False
        self.latencies: list[float] = []
        self.record_latency = False
        self.interval: float | None = None


class IdleClient(Protocol):
    """HELLO, CHECKOUT, then a HEARTBEAT of the lease every interval."""

    def __init__(self, run: IdleRun, machine: str):
        self.run = run
        self.machine = machine
        self.buffer = b""
        self.state = "hello"
        self.lease = b""
        self.sent = 0.0
        self.timer: Any = None
        self.ready: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(common.hello_line(self.machine) + b"\n")

    def dataReceived(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            self.answer(line)

    def answer(self, line: bytes) -> None:
        run = self.run
        ok = line.startswith(b"OK")
        if self.state == "hello":
            if not ok:
                return self.fail(line)
            # The baseline's fixed answer names no interval: the server's default.
            run.interval = float(common.args_of(line).get("heartbeat", DEFAULT_INTERVAL))
            self.state = "checkout"
            self.transport.write(b"CHECKOUT\n")
        elif self.state == "checkout":
            if not ok:
                return self.fail(line)
            self.lease = common.args_of(line)["lease"].encode()
            self.state = "idle"
            run.ready += 1
            first = run.random.uniform(0, run.interval)
            self.timer = run.reactor.callLater(first, self.beat)
            self.ready.callback(None)
        elif self.state == "beat":
            now = time.monotonic()
            if run.record_latency:
                run.latencies.append(now - self.sent)
            if ok:
                run.beats += 1
            else:
                run.beat_errors += 1
                if len(run.errors) < 5:
                    run.errors.append(line.decode("utf-8", "replace"))
            self.state = "idle"
            delay = max(0.0, self.sent + run.interval - now)
            self.timer = run.reactor.callLater(delay, self.beat)

    def fail(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if len(self.run.errors) < 5:
            self.run.errors.append(text)
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"{self.machine}: {text}"))

    def beat(self) -> None:
        self.timer = None
        if self.run.closing:
            return
        self.state = "beat"
        self.sent = time.monotonic()
        self.transport.write(b"HEARTBEAT lease=" + self.lease + b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if not self.run.closing:
            self.run.lost += 1
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"{self.machine}: connection lost"))


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    limit = common.raise_open_files(args.clients + 1024)
    work = common.work_dir(args, "idle")
    server: Any
    if args.baseline:
        server = common.Baseline(work)
    else:
        data = work / "primary"
        key = common.vendor_key(work / "keys", [data])
        common.build_data_dir(data, common.licenses(key, common.PRODUCT, 1, args.clients + 100))
        server = common.Server(
            "primary", data, "--max-connections-per-address", "0", code_root=args.code_root
        )
    run = IdleRun(reactor)
    clients: list[IdleClient] = []
    try:
        await server.start(reactor)
        common.say(f"server pid {server.pid}, open-file limit {limit}")
        await common.sleep(reactor, 2.0)
        before = server.memory()
        quiet = min(5.0, args.seconds)
        cpu0 = server.cpu()
        await common.sleep(reactor, quiet)
        idle_cpu_pct = (server.cpu() - cpu0) / quiet * 100
        common.say(
            f"before the clients: RSS {before['rss'] / 1024:.1f} MiB, "
            f"CPU {idle_cpu_pct:.2f}% over {quiet:g} s"
        )

        semaphore = defer.DeferredSemaphore(args.concurrency)
        ramp_start = time.monotonic()
        cpu_ramp0 = server.cpu()

        async def one(i: int) -> None:
            client = IdleClient(run, f"idle-{i:06d}")
            clients.append(client)
            await common.connect(reactor, server.port, client, timeout=60)
            await client.ready

        def progress(i: int) -> None:
            if (i + 1) % max(1, args.clients // 10) == 0:
                common.say(
                    f"  {run.ready} clients hold a lease ({time.monotonic() - ramp_start:.1f} s)"
                )

        async def started(i: int) -> None:
            await one(i)
            progress(i)

        await defer.gatherResults(
            [
                semaphore.run(lambda i=i: defer.ensureDeferred(started(i)))
                for i in range(args.clients)
            ],
            consumeErrors=True,
        )
        ramp = time.monotonic() - ramp_start
        ramp_cpu = server.cpu() - cpu_ramp0
        common.say(
            f"{args.clients} clients connected, said HELLO and took a seat in {ramp:.1f} s "
            f"({args.clients / ramp:.0f}/s; server CPU {ramp_cpu:.1f} s)"
        )
        await common.sleep(reactor, args.settle)
        after_ramp = server.memory()

        run.record_latency = True
        profiler = None
        if args.profile:
            out = Path(args.profile) / "idle-server.txt"
            profiler = common.Profile(server.pid, args.seconds, out)
        beats0, errors0, load0 = run.beats, run.beat_errors, common.cpu_seconds()
        windows = []
        for w in range(args.windows):
            t0, cpu0, threads0, b0 = (
                time.monotonic(),
                server.cpu(),
                common.thread_cpu_seconds(server.pid),
                run.beats,
            )
            await common.sleep(reactor, args.seconds)
            t1, cpu1, threads1, b1 = (
                time.monotonic(),
                server.cpu(),
                common.thread_cpu_seconds(server.pid),
                run.beats,
            )
            elapsed = t1 - t0
            window = {
                "seconds": elapsed,
                "cpu_pct": (cpu1 - cpu0) / elapsed * 100,
                "cpu_pct_reactor_thread": (threads1["main"] - threads0["main"]) / elapsed * 100,
                "cpu_pct_other_threads": (threads1["others"] - threads0["others"]) / elapsed * 100,
                "heartbeats": b1 - b0,
                "cpu_us_per_heartbeat": (cpu1 - cpu0) / (b1 - b0) * 1e6 if b1 > b0 else None,
                "rss_kb": server.memory()["rss"],
            }
            windows.append(window)
            common.say(
                f"window {w + 1}/{args.windows}: server CPU {window['cpu_pct']:.1f}% "
                f"({window['heartbeats'] / elapsed:.0f} heartbeats/s), "
                f"RSS {window['rss_kb'] / 1024:.1f} MiB"
            )
        load1 = common.cpu_seconds()
        run.record_latency = False
        after = server.memory()
        if profiler is not None:
            common.say(f"profile of the server:\n{await profiler.finish(reactor)}")
        if run.lost:
            raise RuntimeError(f"{run.lost} client connections were closed by the server")
        elapsed = sum(w["seconds"] for w in windows)
        beats = run.beats - beats0
        cpu_pct = statistics.median([w["cpu_pct"] for w in windows])
        grown_kb = max([after["rss"], after_ramp["rss"]] + [w["rss_kb"] for w in windows])
        grown_kb -= before["rss"]
        per_conn_kb = grown_kb / args.clients
        lat = run.latencies
        result = {
            "machine": info,
            "server": "baseline" if args.baseline else "licenseserver",
            "clients": args.clients,
            "heartbeat_interval": run.interval,
            "window_seconds": elapsed,
            "windows": windows,
            "ramp_seconds": ramp,
            "ramp_server_cpu_seconds": ramp_cpu,
            "rss_before_kb": before["rss"],
            "rss_after_ramp_kb": after_ramp["rss"],
            "rss_after_kb": after["rss"],
            "hwm_kb": after.get("hwm"),
            "memory_per_connection_kb": per_conn_kb,
            "idle_cpu_pct_without_clients": idle_cpu_pct,
            "cpu_pct": cpu_pct,
            "cpu_pct_spread": common.spread([w["cpu_pct"] for w in windows]),
            "cpu_pct_reactor_thread": statistics.median(
                [w["cpu_pct_reactor_thread"] for w in windows]
            ),
            "cpu_pct_other_threads": statistics.median(
                [w["cpu_pct_other_threads"] for w in windows]
            ),
            "heartbeats": beats,
            "heartbeats_per_s": beats / elapsed,
            "heartbeat_errors": run.beat_errors - errors0,
            "errors": run.errors,
            "cpu_us_per_heartbeat": statistics.median(
                [w["cpu_us_per_heartbeat"] or 0 for w in windows]
            ),
            "heartbeat_latency_ms": {
                "p50": common.percentile(lat, 50) * 1e3 if lat else None,
                "p99": common.percentile(lat, 99) * 1e3 if lat else None,
                "max": max(lat) * 1e3 if lat else None,
            },
            "load_cpu_pct": (load1 - load0) / elapsed * 100,
            "memory_met": per_conn_kb < MEMORY_TARGET_KB,
            "cpu_met": cpu_pct < CPU_TARGET_PCT,
        }
    finally:
        run.closing = True
        for client in clients:
            if client.transport is not None:
                client.transport.loseConnection()
        await common.sleep(reactor, 0.5)
        await server.stop(reactor)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report(result)
    return result


def report(r: dict[str, Any]) -> None:
    lat = r["heartbeat_latency_ms"]
    common.say()
    common.say(
        common.table(
            ["measure", "value", "target"],
            [
                ["clients (one connection and one lease each)", r["clients"], ""],
                ["heartbeat interval (s)", f"{r['heartbeat_interval']:g}", ""],
                ["heartbeats/s in the window", f"{r['heartbeats_per_s']:.0f}", ""],
                ["server RSS before clients (MiB)", f"{r['rss_before_kb'] / 1024:.1f}", ""],
                ["server RSS with clients (MiB)", f"{r['rss_after_kb'] / 1024:.1f}", ""],
                [
                    "memory per connection (KB)",
                    f"{r['memory_per_connection_kb']:.1f}",
                    f"< {MEMORY_TARGET_KB:g}: {'met' if r['memory_met'] else 'MISSED'}",
                ],
                [
                    f"server CPU (% of one core; median (min-max) of {len(r['windows'])} windows)",
                    common.fmt_spread(r["cpu_pct_spread"]),
                    f"< {CPU_TARGET_PCT:g}: {'met' if r['cpu_met'] else 'MISSED'}",
                ],
                [
                    "  reactor thread / other threads (%)",
                    f"{r['cpu_pct_reactor_thread']:.1f} / {r['cpu_pct_other_threads']:.1f}",
                    "",
                ],
                [
                    "CPU per heartbeat (us)",
                    f"{r['cpu_us_per_heartbeat']:.0f}" if r["cpu_us_per_heartbeat"] else "-",
                    "",
                ],
                [
                    "heartbeat latency p50 / p99 / max (ms)",
                    f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"
                    if lat["p50"] is not None
                    else "-",
                    "",
                ],
                ["heartbeat errors", r["heartbeat_errors"], "0"],
                ["server CPU without clients (%)", f"{r['idle_cpu_pct_without_clients']:.2f}", ""],
                ["load generator CPU (%)", f"{r['load_cpu_pct']:.1f}", ""],
                [
                    "connect + HELLO + CHECKOUT of all clients (s)",
                    f"{r['ramp_seconds']:.1f}",
                    "",
                ],
            ],
        )
    )


def run(argv: list[str] | None = None) -> None:
    p = common.parser(
        __doc__,
        seconds=30.0,
        seconds_help="length of each CPU window",
        profile=True,
    )
    common.scaled(p, "--clients", int, 10_000, 200, "clients, each holding a lease")
    p.add_argument("--concurrency", type=int, default=32, help="clients connecting at once")
    common.scaled(p, "--windows", int, 4, 1, "CPU windows of --seconds")
    common.scaled(p, "--settle", float, 5.0, 0.5, "seconds between ramp and window")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="load the bare baseline LineReceiver of checkout_cost.py instead of the server "
        "(it answers every line with one fixed line): what the same heartbeats cost any "
        "Twisted line server",
    )
    args = common.parse(p, argv)
    common.run_scenario("idle_clients", main, args)


if __name__ == "__main__":
    run()
