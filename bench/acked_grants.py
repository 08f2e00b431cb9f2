"""Acknowledged grants: what the last seats of an ``exact`` license cost while paired.

    python bench/acked_grants.py [--seconds N] [--quick] [--heartbeat S] [--contenders C]

A primary and its failover run as two processes on 127.0.0.1 with the default
``--heartbeat 1 --takeover-after 5`` (``--quick``: 0.2 and 1). The primary holds one
concurrent license of ``--seats`` N (10) seats, signed with the ``exact`` partition policy
and a failover share E of ``--share`` (2) seats. While the failover's link is up, a
CHECKOUT that takes one of the last E seats is answered only once the failover has
durably acknowledged the grant (with the BEAT it sends right after the sync that brought
it, which its next heartbeat starts); a CHECKOUT of one of the first N - E seats is
answered at once.

Holders (other clients, a machine each, renewing their leases) keep seats taken while
one client, on one connection, times CHECKOUT and then RELEASE of one seat more, one pair
at a time, each pair after a random pause of up to one heartbeat (real clients come at
any moment of the failover's heartbeat), for ``--seconds`` in each phase:

- ``alone``: the primary before any failover paired with it (no limits apply), N - E
  seats held: the same grants as ``last`` without a failover, the baseline;
- ``first``: paired, N - E - 1 seats held: each pair takes the last of the first N - E
  seats, answered at once;
- ``last``: paired, N - E seats held: each pair takes one of the last E seats, answered
  once the failover acknowledges it.

CPU is each process's own over a phase, per pair: the scheduler's run time of its threads
(``/proc/<pid>/task/<tid>/sched``; the ticks of ``/proc/<pid>/stat`` where the kernel does
not show it). The "net" figures subtract what the process uses without requests, measured
in a window of ``--idle-seconds`` (the primary alone before the failover starts; both once
it has synced): its heartbeats, and the failover's BEATs at the primary. The failover's
net CPU per pair of ``last`` is what acknowledging a grant costs it (the sync of the grant,
which also brings the RELEASE before it, and the BEAT after it).

Then ``--contenders`` clients (16), each on its own connection and machine, compete for
the last E seats for ``--contention-seconds`` (N - E seats held): each CHECKOUTs, RELEASEs
as soon as it is granted and CHECKOUTs again; refused (``409 no-seats``: the free seats are
taken by grants that wait for their acknowledgement) it tries again a twentieth of a
heartbeat later. Grants answered within a quarter of a heartbeat of one another count as
answered by one acknowledgement: one sync and BEAT of the failover answers every grant
waiting for it, so no more than E grants are answered per heartbeat.

The result line, ``RESULT acked_grants {...}`` (CPU use in % of one core, CPU per pair in
microseconds, times in milliseconds):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``seats`` (int): N, the license's seats.
- ``share`` (int): E, its failover share.
- ``heartbeat`` (number): the servers' ``--heartbeat``, in seconds.
- ``takeover_after`` (number): their ``--takeover-after``, in seconds.
- ``idle`` (object): the processes' CPU use without requests:

  - ``alone_primary_cpu_pct`` (number): the primary's, before the failover started;
  - ``primary_cpu_pct``, ``failover_cpu_pct`` (number): each one's, paired and synced.

- ``phases`` (object): ``"alone"``, ``"first"`` and ``"last"`` (object), each:

  - ``held`` (int): the seats the holders held meanwhile;
  - ``pairs`` (int): CHECKOUT+RELEASE pairs completed;
  - ``seconds`` (number): the phase's length, in seconds;
  - ``checkout_ms`` (object): the CHECKOUTs' round trips:

    - ``median``, ``p99``, ``max``, ``min`` (number): in milliseconds.

  - ``primary_cpu_us_per_pair`` (number): the primary's CPU over the phase, per pair;
  - ``primary_net_cpu_us_per_pair`` (number): the same less its idle use;
  - ``failover_cpu_us_per_pair``, ``failover_net_cpu_us_per_pair`` (number or null): the
    same for the failover (null for ``alone``);
  - ``errors`` (int): requests not answered ``OK`` (0 in a good run).

- ``contention`` (object): the contenders' run:

  - ``contenders`` (int): the clients competing;
  - ``held`` (int): the seats the holders held meanwhile;
  - ``seconds`` (number): its length, in seconds;
  - ``grants`` (int): CHECKOUTs answered ``OK``;
  - ``grants_per_s`` (number): the same per second;
  - ``bound_per_s`` (number): E per heartbeat, the most acknowledged grants per second;
  - ``refusals`` (int): CHECKOUTs refused ``409 no-seats``;
  - ``acks`` (int): the acknowledgements that answered them (grants answered together);
  - ``grants_per_ack`` (spread): ``{"n", "median", "min", "max"}`` of the grants each
    acknowledgement answered, as ``common.spread`` makes it;
  - ``checkout_ms`` (object): the granted CHECKOUTs' round trips, as in the phases;
  - ``primary_cpu_pct``, ``failover_cpu_pct`` (number): each process's CPU use meanwhile;
  - ``errors`` (int): answers other than ``OK`` and ``409 no-seats`` (0 in a good run).

- ``error_lines`` (list of str): the first answers counted as errors (up to 5).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
from takeover import synced
from twisted.internet import defer, task

PHASES = ("alone", "first", "last")
RENEW_EVERY = 20.0
"""Seconds between the holders' heartbeats (the lease time is 120 s)."""
REQUEST_TIMEOUT = 60.0
LICENSE_ID = "L-BENCH-ACKED-000000"


def exact_license(key: Any, seats: int, share: int | str, license_id: str = LICENSE_ID) -> Any:
    """One concurrent license of ``seats`` seats under ``exact`` with ``share`` held back
    (seats, or a percentage such as ``"20%"``)."""
    from licenseserver import signing

    lic = signing.issue_license(
        key,
        product=common.PRODUCT,
        kind="concurrent",
        seats=seats,
        edition="Enterprise",
        licensee="Benchmark Ltd",
        id=license_id,
        failover_policy="exact",
        failover_share=str(share),
    )
    return replace(lic, active=True, added=int(time.time()))


def thread_runtimes(pid: int) -> dict[str, float] | None:
    """Each live thread's CPU time in seconds, as the scheduler counts it (to the
    nanosecond, ``se.sum_exec_runtime`` in ``/proc/<pid>/task/<tid>/sched``); None where the
    kernel does not show it."""
    out = {}
    for task_dir in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task_dir / "sched").read_text()
        except FileNotFoundError:
            continue
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("se.sum_exec_runtime"):
                out[task_dir.name] = float(line.split(":", 1)[1]) / 1e3
                break
        else:
            return None
    return out


class CPU:
    """A process's CPU seconds since this was made (``used``): the scheduler's run time of
    its live threads, or the clock ticks of ``/proc/<pid>/stat`` (``common.cpu_seconds``)
    where the kernel does not show it. What a phase's few grants use is too little for
    ticks of 10 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.threads = thread_runtimes(pid)
        self.ticks = common.cpu_seconds(pid)

    def used(self) -> float:
        threads = thread_runtimes(self.pid) if self.threads is not None else None
        if threads is None:
            return common.cpu_seconds(self.pid) - self.ticks
        return sum(t - self.threads.get(tid, 0.0) for tid, t in threads.items())


class Errors:
    """Answers that were not what a phase expects: counted, the first few kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, what: str, answer: bytes) -> None:
        if len(self.lines) < 5:
            self.lines.append(f"{what}: {answer.decode('utf-8', 'replace')}")


async def client(reactor: Any, port: int, machine: str) -> common.LineClient:
    """A connection that has said HELLO as ``machine``; its requests time out."""
    c = await common.connect(reactor, port)
    c.clock, c.timeout = reactor, REQUEST_TIMEOUT
    answer = await c.request(common.hello_line(machine))
    if not answer.startswith(b"OK"):
        raise RuntimeError(f"HELLO as {machine}: {answer!r}")
    return c


class Holders:
    """Clients that each hold a seat and renew it, to leave the timed client the seat asked."""

    def __init__(self, reactor: Any, port: int):
        self.reactor = reactor
        self.port = port
        self.held: list[tuple[common.LineClient, str]] = []
        self.made = 0
        self.renewals = task.LoopingCall(self.renew)
        self.renewals.clock = reactor

    async def hold(self, count: int) -> None:
        """Take or give back seats until ``count`` are held."""
        while len(self.held) < count:
            self.made += 1
            c = await client(self.reactor, self.port, f"holder-{self.made}")
            answer = await c.request(b"CHECKOUT")
            if not answer.startswith(b"OK"):
                raise RuntimeError(f"a holder's CHECKOUT: {answer!r}")
            self.held.append((c, common.args_of(answer)["lease"]))
        while len(self.held) > count:
            c, lease = self.held.pop()
            answer = await c.request(f"RELEASE lease={lease}")
            if not answer.startswith(b"OK"):
                raise RuntimeError(f"a holder's RELEASE: {answer!r}")
            c.close()
        if not self.renewals.running:
            self.renewals.start(RENEW_EVERY, now=False)

    def renew(self) -> None:
        for c, lease in self.held:
            c.request(f"HEARTBEAT lease={lease}").addErrback(lambda f: None)

    def close(self) -> None:
        if self.renewals.running:
            self.renewals.stop()
        for c, _ in self.held:
            c.close()
        self.held = []


def latency_ms(values: list[float]) -> dict[str, float]:
    """Median, 99th percentile, largest and smallest of round trips in seconds, in ms."""
    if not values:
        nan = float("nan")
        return {"median": nan, "p99": nan, "max": nan, "min": nan}
    return {
        "median": common.spread(values)["median"] * 1e3,
        "p99": common.percentile(values, 99) * 1e3,
        "max": max(values) * 1e3,
        "min": min(values) * 1e3,
    }


def idle_rate(reactor: Any, servers: list[common.Server], seconds: float) -> defer.Deferred:
    """Each server's CPU use in % of one core over ``seconds`` without requests."""

    async def measure() -> list[float]:
        t0, cpus = time.monotonic(), [CPU(s.pid) for s in servers]
        await common.sleep(reactor, seconds)
        elapsed = time.monotonic() - t0
        return [cpu.used() / elapsed * 100 for cpu in cpus]

    return defer.ensureDeferred(measure())


async def timed_pairs(
    reactor: Any,
    args: Any,
    timed: common.LineClient,
    primary: common.Server,
    failover: common.Server | None,
    idle: dict[str, float],
    held: int,
    rng: random.Random,
    errors: Errors,
) -> dict[str, Any]:
    """CHECKOUT and RELEASE, one pair at a time after random pauses, for ``--seconds``."""
    latencies: list[float] = []
    failed = 0
    t0 = time.monotonic()
    p_cpu = CPU(primary.pid)
    f_cpu = CPU(failover.pid) if failover else None
    deadline = t0 + args.seconds
    while not latencies or time.monotonic() < deadline:
        await common.sleep(reactor, rng.uniform(0, args.heartbeat))
        start = time.monotonic()
        answer = await timed.request(b"CHECKOUT")
        took = time.monotonic() - start
        if not answer.startswith(b"OK"):
            failed += 1
            errors.note("CHECKOUT", answer)
            if failed > 100:
                raise RuntimeError(f"the timed CHECKOUTs fail: {errors.lines}")
            continue
        lease = common.args_of(answer)["lease"]
        answer = await timed.request(f"RELEASE lease={lease}")
        if not answer.startswith(b"OK"):
            failed += 1
            errors.note("RELEASE", answer)
            continue
        latencies.append(took)
    elapsed = time.monotonic() - t0
    p_used = p_cpu.used()
    f_used = f_cpu.used() if f_cpu else 0.0
    pairs = len(latencies)

    def per_pair(cpu: float, idle_pct: float) -> tuple[float, float]:
        return cpu / pairs * 1e6, (cpu - idle_pct / 100 * elapsed) / pairs * 1e6

    primary_raw, primary_net = per_pair(p_used, idle["primary"])
    failover_raw = failover_net = None
    if failover is not None:
        failover_raw, failover_net = per_pair(f_used, idle["failover"])
    return {
        "held": held,
        "pairs": pairs,
        "seconds": elapsed,
        "checkout_ms": latency_ms(latencies),
        "primary_cpu_us_per_pair": primary_raw,
        "primary_net_cpu_us_per_pair": primary_net,
        "failover_cpu_us_per_pair": failover_raw,
        "failover_net_cpu_us_per_pair": failover_net,
        "errors": failed,
    }


async def contention(
    reactor: Any,
    args: Any,
    primary: common.Server,
    failover: common.Server,
    held: int,
    errors: Errors,
) -> dict[str, Any]:
    """``--contenders`` clients competing for the last E seats."""
    clients = await defer.gatherResults(
        [
            defer.ensureDeferred(client(reactor, primary.port, f"contender-{i}"))
            for i in range(args.contenders)
        ],
        consumeErrors=True,
    )
    answered: list[float] = []
    latencies: list[float] = []
    counts = {"refusals": 0, "errors": 0}
    retry = args.heartbeat / 20
    t0 = time.monotonic()
    p_cpu, f_cpu = CPU(primary.pid), CPU(failover.pid)
    deadline = t0 + args.contention_seconds

    async def compete(c: common.LineClient) -> None:
        while time.monotonic() < deadline:
            start = time.monotonic()
            answer = await c.request(b"CHECKOUT")
            now = time.monotonic()
            if answer.startswith(b"OK"):
                answered.append(now)
                latencies.append(now - start)
                lease = common.args_of(answer)["lease"]
                answer = await c.request(f"RELEASE lease={lease}")
                if not answer.startswith(b"OK"):
                    counts["errors"] += 1
                    errors.note("RELEASE", answer)
                continue
            if answer.startswith(b"ERR 409 no-seats"):
                counts["refusals"] += 1
            else:
                counts["errors"] += 1
                errors.note("CHECKOUT", answer)
            await common.sleep(reactor, retry)

    try:
        await defer.gatherResults(
            [defer.ensureDeferred(compete(c)) for c in clients], consumeErrors=True
        )
    finally:
        for c in clients:
            c.close()
    elapsed = time.monotonic() - t0
    p_used, f_used = p_cpu.used(), f_cpu.used()
    batches: list[int] = []
    last = None
    for at in sorted(answered):
        if last is None or at - last > args.heartbeat / 4:
            batches.append(0)
        batches[-1] += 1
        last = at
    return {
        "contenders": args.contenders,
        "held": held,
        "seconds": elapsed,
        "grants": len(answered),
        "grants_per_s": len(answered) / elapsed,
        "bound_per_s": args.share / args.heartbeat,
        "refusals": counts["refusals"],
        "acks": len(batches),
        "grants_per_ack": common.spread(batches) if batches else {"n": 0},
        "checkout_ms": latency_ms(latencies),
        "primary_cpu_pct": p_used / elapsed * 100,
        "failover_cpu_pct": f_used / elapsed * 100,
        "errors": counts["errors"],
    }


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    work = common.work_dir(args, "acked")
    primary_data, failover_data = work / "primary", work / "failover"
    key = common.vendor_key(work / "keys", [primary_data])
    common.build_data_dir(primary_data, [exact_license(key, args.seats, args.share)])
    port = common.free_port()
    timing = ["--heartbeat", f"{args.heartbeat:g}", "--takeover-after", f"{args.takeover_after:g}"]
    primary = common.Server(
        "primary",
        primary_data,
        "--name",
        "bench-primary",
        "--rate-limit",
        "0",
        "--max-connections-per-address",
        "0",
        *timing,
        licensing=common.local_endpoint(port),
        code_root=args.code_root,
    )
    failover = common.failover_server(
        failover_data, primary_data, port, *timing, code_root=args.code_root
    )
    rng = random.Random(17)
    errors = Errors()
    first, rest = args.seats - args.share, args.share
    phases: dict[str, dict[str, Any]] = {}
    idle: dict[str, float] = {}
    holders = Holders(reactor, port)
    timed = None
    try:
        await primary.start(reactor)
        await holders.hold(first)
        timed = await client(reactor, port, "timed")
        (idle["alone_primary"],) = await idle_rate(reactor, [primary], args.idle_seconds)
        alone_idle = {"primary": idle["alone_primary"]}
        common.say(f"primary alone, idle: {idle['alone_primary']:.2f}% CPU")
        phases["alone"] = await timed_pairs(
            reactor, args, timed, primary, None, alone_idle, first, rng, errors
        )
        report("alone", phases["alone"])

        await failover.start(reactor)
        await common.wait_until(
            reactor, lambda: synced(reactor, primary, failover), 60, "the first sync"
        )
        idle["primary"], idle["failover"] = await idle_rate(
            reactor, [primary, failover], args.idle_seconds
        )
        common.say(
            f"paired, idle: primary {idle['primary']:.2f}% CPU, "
            f"failover {idle['failover']:.2f}% CPU"
        )
        for name, held in (("first", first - 1), ("last", first)):
            await holders.hold(held)
            phases[name] = await timed_pairs(
                reactor, args, timed, primary, failover, idle, held, rng, errors
            )
            report(name, phases[name])
        crowd = await contention(reactor, args, primary, failover, first, errors)
        common.say(
            f"{crowd['contenders']} contenders for the last {rest} seats: "
            f"{crowd['grants']} grants in {crowd['seconds']:.1f} s "
            f"({crowd['grants_per_s']:.2f}/s, bound {crowd['bound_per_s']:g}/s) by "
            f"{crowd['acks']} acknowledgements, {crowd['refusals']} refusals"
        )
    finally:
        if timed is not None:
            timed.close()
        holders.close()
        await failover.stop(reactor)
        await primary.stop(reactor)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return summarize(info, args, idle, phases, crowd, errors)


def report(name: str, phase: dict[str, Any]) -> None:
    ms = phase["checkout_ms"]
    failover = phase["failover_net_cpu_us_per_pair"]
    common.say(
        f"{name:5s}: {phase['pairs']} pairs in {phase['seconds']:.1f} s, CHECKOUT "
        f"median {ms['median']:.1f} ms, p99 {ms['p99']:.1f} ms, max {ms['max']:.1f} ms; "
        f"primary {phase['primary_net_cpu_us_per_pair']:.0f} us/pair net"
        + (f", failover {failover:.0f} us/pair net" if failover is not None else "")
        + (f", {phase['errors']} errors" if phase["errors"] else "")
    )


def summarize(
    info: dict[str, Any],
    args: Any,
    idle: dict[str, float],
    phases: dict[str, dict[str, Any]],
    crowd: dict[str, Any],
    errors: Errors,
) -> dict[str, Any]:
    first = args.seats - args.share
    names = {
        "alone": f"seat {first + 1} of {args.seats}, primary alone",
        "first": f"seat {first} of {args.seats}, paired (answered at once)",
        "last": f"seat {first + 1} of {args.seats}, paired (acknowledged)",
    }

    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = []
    for name in PHASES:
        p = phases[name]
        ms = p["checkout_ms"]
        rows.append(
            [
                names[name],
                p["pairs"],
                f"{ms['median']:.1f}",
                f"{ms['p99']:.1f}",
                f"{ms['max']:.1f}",
                f"{us(p['primary_cpu_us_per_pair'])} / {us(p['primary_net_cpu_us_per_pair'])}",
                f"{us(p['failover_cpu_us_per_pair'])} / {us(p['failover_net_cpu_us_per_pair'])}",
            ]
        )
    common.say()
    common.say(
        common.table(
            [
                "CHECKOUT+RELEASE of",
                "pairs",
                "CHECKOUT median ms",
                "p99 ms",
                "max ms",
                "primary CPU us/pair (raw / net)",
                "failover CPU us/pair (raw / net)",
            ],
            rows,
        )
    )
    ms = crowd["checkout_ms"]
    common.say()
    common.say(
        common.table(
            [
                "contenders",
                "grants/s",
                "bound (E / heartbeat)",
                "grants per ack",
                "CHECKOUT median / max ms",
                "refusals/s",
                "primary / failover CPU %",
            ],
            [
                [
                    crowd["contenders"],
                    f"{crowd['grants_per_s']:.2f}",
                    f"{crowd['bound_per_s']:g}",
                    common.fmt_spread(crowd["grants_per_ack"], digits=0),
                    f"{ms['median']:.0f} / {ms['max']:.0f}",
                    f"{crowd['refusals'] / crowd['seconds']:.0f}",
                    f"{crowd['primary_cpu_pct']:.1f} / {crowd['failover_cpu_pct']:.1f}",
                ]
            ],
        )
    )
    common.say(
        f"idle: primary alone {idle['alone_primary']:.2f}%, paired {idle['primary']:.2f}%, "
        f"failover {idle['failover']:.2f}% of one core"
    )
    return {
        "machine": info,
        "seats": args.seats,
        "share": args.share,
        "heartbeat": args.heartbeat,
        "takeover_after": args.takeover_after,
        "idle": {
            "alone_primary_cpu_pct": idle["alone_primary"],
            "primary_cpu_pct": idle["primary"],
            "failover_cpu_pct": idle["failover"],
        },
        "phases": phases,
        "contention": crowd,
        "error_lines": errors.lines,
    }


def run(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__, seconds=120.0, seconds_help="length of each timed phase")
    common.scaled(p, "--heartbeat", float, 1.0, 0.2, "the servers' --heartbeat")
    common.scaled(p, "--takeover-after", float, 5.0, 1.0, "the servers' --takeover-after")
    common.scaled(p, "--idle-seconds", float, 20.0, 0.5, "length of each idle CPU window")
    common.scaled(p, "--contention-seconds", float, 30.0, 1.0, "length of the contenders' run")
    p.add_argument("--seats", type=int, default=10, help="N, the license's seats (default 10)")
    p.add_argument("--share", type=int, default=2, help="E, its failover share (default 2)")
    p.add_argument(
        "--contenders",
        type=int,
        default=16,
        help="clients competing for the last seats at once (default 16)",
    )
    args = common.parse(p, argv)
    if not 1 <= args.share < args.seats - 1:
        p.error("--share must be at least 1 and leave at least 2 of the --seats")
    common.run_scenario("acked_grants", main, args)


if __name__ == "__main__":
    run()
