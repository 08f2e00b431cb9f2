"""What users feel: CHECKOUT latency at a steady request rate, alone and paired.

    python bench/latency.py [--seconds N] [--quick] [--rates 100,1000,5000] [--connections C]

``--connections`` clients (1,000), each on its own connection as a machine of its own,
say HELLO once. Then an open-loop load sends requests at each of ``--rates`` (requests
per second, CHECKOUT and RELEASE counted alike): a CHECKOUT at every planned moment (half
the rate), on the next connection in turn, and as soon as it is granted the RELEASE of
that seat on the same connection. A CHECKOUT leaves at its planned moment whatever the
answers before it did, and its latency runs from that moment to its answer: a server
that falls behind is not excused by the load waiting for it. A connection whose earlier
request is still unanswered gets the next one behind it, as a client's library would
queue it. Each rate runs ``--warmup`` seconds (2), then ``--seconds`` (20) whose
CHECKOUTs are timed; the next rate starts once every answer is in.

Three setups, one after the other, each with the server's defaults except
``--rate-limit 0 --max-connections-per-address 0`` (every client comes from 127.0.0.1):

- ``alone``: one server; one concurrent license with twice as many seats as connections;
- ``paired``: the same license signed ``exact`` (failover share 20%), on a primary with its
  failover (``--heartbeat 1 --takeover-after 5``; 0.2 and 1 with ``--quick``) paired and
  synced: every grant is one of the first N - E seats, answered once durable at the
  primary, and synced;
- ``acked``: as ``paired``, the license's whole pool the failover's share (E = N): every
  grant is answered only once the failover has acknowledged it (FAILOVER.md rule 16),
  within a heartbeat (a session serves up to 32 requests side by side, so the requests
  queued behind a waiting grant wait with it, not after it).

The result line, ``RESULT latency {...}`` (latencies in milliseconds, CPU use in % of one
core):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``connections`` (int): the connections, each a machine that said HELLO.
- ``seats`` (int): the license's seats.
- ``setups`` (object): ``"alone"``, ``"paired"`` and ``"acked"`` (object), each by
  rate, ``"100"`` and so on (object):

  - ``rate`` (number): the planned requests per second (a rate the setup did not run,
    after one left requests unanswered, is missing);
  - ``achieved_rate`` (number): requests answered per second in the timed window;
  - ``checkouts`` (int): CHECKOUTs timed;
  - ``checkout_ms`` (object): their latency:

    - ``median``, ``p99``, ``p999``, ``max`` (number): in milliseconds.

  - ``server_cpu_pct`` (number): the (primary) server's CPU use in the timed window;
  - ``failover_cpu_pct`` (number or null): the failover's (null for ``alone``);
  - ``load_cpu_pct`` (number): this process's;
  - ``errors`` (int): answers other than ``OK`` (0 in a good run).
  - ``unanswered`` (int): requests still unanswered 120 s after the rate's last one (0
    unless the server was overloaded; the setup's later rates are then not run).
  - ``connections_lost`` (int): connections that ended before the setup did, counted
    from its start (0 in a good run: a lost connection's requests stay unanswered).

- ``error_lines`` (list of str): the first answers counted as errors (up to 5).
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import common
from acked_grants import exact_license
from takeover import synced
from twisted.internet import defer, task
from twisted.internet.protocol import Protocol

SETUPS = ("alone", "paired", "acked")
CHECKOUT, RELEASE, HELLO = 0, 1, 2
DRAIN = 120.0
"""Seconds a rate's answers may take to come in after its last request."""
TICK = 0.001
"""Seconds between the load's looks at what is due."""
LICENSE_ID = "L-BENCH-LATENCY-0000"


def license_for(key: Any, seats: int, share: str | None) -> Any:
    """One concurrent license of ``seats``; ``exact`` with ``share`` when one is given."""
    if share is None:
        return common.licenses(key, common.PRODUCT, 1, seats)[0]
    return exact_license(key, seats, share, LICENSE_ID)


class Load:
    """The timed answers and errors of one rate, over all connections."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        """The connections to make: ``ready`` fires once each has said HELLO."""
        self.connections: list[Client] = []
        self.helloed = 0
        self.lost = 0
        """Connections that ended before the load did (0 in a good run)."""
        self.ready: defer.Deferred = defer.Deferred()
        self.window = (0.0, 0.0)
        self.latencies: list[float] = []
        self.answered = 0
        self.errors = 0
        self.error_lines: list[str] = []

    def error(self, line: bytes) -> None:
        self.errors += 1
        if len(self.error_lines) < 5:
            self.error_lines.append(line.decode("utf-8", "replace"))

    def answer(self, kind: int, planned: float, now: float) -> None:
        start, end = self.window
        if start <= planned < end:
            self.answered += 1
            if kind == CHECKOUT:
                self.latencies.append(now - planned)

    def pending(self) -> int:
        return sum(len(c.expect) for c in self.connections)


class Client(Protocol):
    """One connection: HELLO, then the CHECKOUTs it is given, each released once granted."""

    def __init__(self, load: Load, machine: str):
        self.load = load
        self.machine = machine
        self.buffer = b""
        self.expect: deque[tuple[int, float]] = deque()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.load.connections.append(self)
        self.expect.append((HELLO, 0.0))
        self.transport.write(common.hello_line(self.machine) + b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        if self.load.connections:  # cleared once the load is over
            self.load.lost += 1

    def checkout(self, planned: float) -> None:
        self.expect.append((CHECKOUT, planned))
        self.transport.write(b"CHECKOUT\n")

    def dataReceived(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        now = time.monotonic()
        load = self.load
        for line in lines:
            kind, planned = self.expect.popleft()
            ok = line.startswith(b"OK")
            if not ok:
                load.error(line)
            if kind == HELLO:
                load.helloed += 1
                if load.helloed == load.expected and not load.ready.called:
                    load.ready.callback(None)
                continue
            load.answer(kind, planned, now)
            if kind == CHECKOUT and ok:
                lease = common.args_of(line)["lease"]
                self.expect.append((RELEASE, planned))
                self.transport.write(b"RELEASE lease=" + lease.encode() + b"\n")


async def run_rate(
    reactor: Any, load: Load, rate: float, warmup: float, seconds: float
) -> tuple[float, float]:
    """Send CHECKOUTs at ``rate / 2`` per second for ``warmup + seconds``; return the timed
    window's start and end (monotonic seconds)."""
    interval = 2.0 / rate
    connections = load.connections
    start = time.monotonic()
    load.window = (start + warmup, start + warmup + seconds)
    end = load.window[1]
    sent = 0

    def tick() -> None:
        nonlocal sent
        now = time.monotonic()
        while True:
            planned = start + sent * interval
            if planned > now or planned >= end:
                break
            connections[sent % len(connections)].checkout(planned)
            sent += 1
        if now >= end:
            ticker.stop()

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor
    await ticker.start(TICK)
    return load.window


async def phase(
    reactor: Any,
    args: Any,
    load: Load,
    rate: float,
    primary: common.Server,
    failover: common.Server | None,
) -> dict[str, Any]:
    def cpu() -> list[float]:
        """Monotonic time, then the CPU seconds of the primary, the failover and the load."""
        failed_over = failover.cpu() if failover else 0.0
        return [time.monotonic(), primary.cpu(), failed_over, common.cpu_seconds()]

    load.latencies, load.answered = [], 0
    marks: list[list[float]] = []
    reactor.callLater(args.warmup, lambda: marks.append(cpu()))  # the timed window starts
    start, end = await run_rate(reactor, load, rate, args.warmup, args.seconds)
    marks.append(cpu())
    try:
        await common.wait_until(reactor, lambda: load.pending() == 0, DRAIN, "every answer")
    except TimeoutError:
        pass  # overloaded: reported as unanswered, and the setup's later rates are skipped
    (t0, *cpu0), (t1, *cpu1) = marks
    usage = [(b - a) / (t1 - t0) * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    ms = [x * 1000 for x in load.latencies]
    if not ms:
        raise RuntimeError(f"no CHECKOUT timed at {rate:g}/s: {load.error_lines}")
    return {
        "rate": rate,
        "achieved_rate": load.answered / (end - start),
        "checkouts": len(ms),
        "checkout_ms": {
            "median": common.percentile(ms, 50),
            "p99": common.percentile(ms, 99),
            "p999": common.percentile(ms, 99.9),
            "max": max(ms),
        },
        "server_cpu_pct": usage[0],
        "failover_cpu_pct": usage[1] if failover else None,
        "load_cpu_pct": usage[2],
        "errors": load.errors,
        "unanswered": load.pending(),
        "connections_lost": load.lost,
    }


async def setup(
    reactor: Any, args: Any, work: Path, name: str, errors: list[str]
) -> dict[str, dict[str, Any]]:
    """Start the servers of ``name``, connect the clients, run every rate; stop them."""
    primary_data, failover_data = work / name / "primary", work / name / "failover"
    key = common.vendor_key(work / name / "keys", [primary_data])
    share = {"alone": None, "paired": "20%", "acked": "100%"}[name]
    common.build_data_dir(primary_data, [license_for(key, args.connections * 2, share)])
    port = common.free_port()
    options = [
        "--rate-limit",
        "0",
        "--max-connections-per-address",
        "0",
        "--heartbeat",
        f"{args.heartbeat:g}",
        "--takeover-after",
        f"{args.takeover_after:g}",
    ]
    primary = common.Server(
        "primary",
        primary_data,
        *options,
        licensing=common.local_endpoint(port),
        code_root=args.code_root,
    )
    failover = None
    if name != "alone":
        failover = common.failover_server(
            failover_data, primary_data, port, *options, code_root=args.code_root
        )
    load = Load(args.connections)
    results: dict[str, dict[str, Any]] = {}
    try:
        await primary.start(reactor)
        if failover is not None:
            await failover.start(reactor)
            await common.wait_until(
                reactor, lambda: synced(reactor, primary, failover), 60, "the first sync"
            )
        await defer.gatherResults(
            [
                defer.ensureDeferred(common.connect(reactor, port, Client(load, f"m-{i}")))
                for i in range(args.connections)
            ],
            consumeErrors=True,
        )
        load.ready.addTimeout(60, reactor)
        await load.ready
        for rate in args.rates:
            result = await phase(reactor, args, load, rate, primary, failover)
            results[f"{rate:g}"] = result
            lat = result["checkout_ms"]
            common.say(
                f"{name:6s} {rate:6g}/s: {result['achieved_rate']:7.0f}/s answered, "
                f"CHECKOUT median {lat['median']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                f"p99.9 {lat['p999']:.2f} ms, max {lat['max']:.2f} ms; "
                f"server {result['server_cpu_pct']:.0f}% CPU"
                + (
                    f", failover {result['failover_cpu_pct']:.0f}%"
                    if result["failover_cpu_pct"] is not None
                    else ""
                )
                + f", load {result['load_cpu_pct']:.0f}%"
                + (f", {result['errors']} errors" if result["errors"] else "")
                + (f", {load.lost} connections lost" if load.lost else "")
            )
            load.errors = 0
            if result["unanswered"]:
                common.say(f"{name}: {result['unanswered']} requests unanswered after {DRAIN:g} s")
                break
    finally:
        errors.extend(load.error_lines)
        connections, load.connections = load.connections, []
        for connection in connections:
            connection.transport.loseConnection()
        if failover is not None:
            await failover.stop(reactor)
        await primary.stop(reactor)
    return results


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    common.raise_open_files(args.connections * 2 + 200)
    work = common.work_dir(args, "latency")
    errors: list[str] = []
    setups = {}
    for name in args.setups:
        setups[name] = await setup(reactor, args, work, name, errors)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = [
        [
            name,
            rate,
            f"{r['achieved_rate']:.0f}",
            f"{r['checkout_ms']['median']:.2f}",
            f"{r['checkout_ms']['p99']:.2f}",
            f"{r['checkout_ms']['p999']:.2f}",
            f"{r['checkout_ms']['max']:.2f}",
            f"{r['server_cpu_pct']:.0f}%",
        ]
        for name, by_rate in setups.items()
        for rate, r in by_rate.items()
    ]
    common.say(
        common.table(
            [
                "setup",
                "requests/s",
                "answered/s",
                "median ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "server CPU",
            ],
            rows,
        )
    )
    return {
        "machine": info,
        "connections": args.connections,
        "seats": args.connections * 2,
        "setups": setups,
        "error_lines": errors[:5],
    }


def run(argv: list[str] | None = None) -> None:
    p = common.parser(
        __doc__, seconds=20.0, quick_seconds=1.0, seconds_help="timed seconds per rate"
    )
    common.scaled(p, "--connections", int, 1000, 20, "client connections")
    common.scaled(p, "--warmup", float, 2.0, 0.5, "seconds of load before the timed window")
    common.scaled(p, "--heartbeat", float, 1.0, 0.2, "the servers' --heartbeat")
    common.scaled(p, "--takeover-after", float, 5.0, 1.0, "the servers' --takeover-after")
    p.add_argument(
        "--rates",
        default=None,
        help="requests per second to run, comma-separated (default 100,1000,5000; 100,400 "
        "with --quick)",
    )
    p.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"the setups to run, comma-separated (default {','.join(SETUPS)})",
    )
    args = common.parse(p, argv)
    args.setups = args.setups.split(",")
    if not args.setups or set(args.setups) - set(SETUPS):
        p.error(f"--setups must name some of {', '.join(SETUPS)}")
    text = args.rates or ("100,400" if args.quick else "100,1000,5000")
    args.rates = [float(x) for x in text.split(",")]
    if any(rate <= 0 for rate in args.rates):
        p.error("--rates must be positive")
    common.run_scenario("latency", main, args)


if __name__ == "__main__":
    run()
