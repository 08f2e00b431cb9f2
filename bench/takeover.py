"""Takeover time: from a SIGKILL of the primary to service at the failover, and handback.

    python bench/takeover.py [--seconds N] [--quick] [--kills K]

A primary and its failover run as two processes on 127.0.0.1 with the default
``--heartbeat 1 --takeover-after 5`` (``--quick``: 0.2 and 1, and one kill). Each round a
client takes a lease at the primary; once the failover has synced it, the primary dies by
SIGKILL at a random moment within a heartbeat. Two probes then ask the failover every 10 ms:

- a new client: HELLO and CHECKOUT; the time to its first ``OK`` lease;
- the old lease's machine: HELLO and ``HEARTBEAT lease=<the old lease>``; the time to its
  first ``OK``.

The primary is then started again on the same port and data directory; handback is the time
from its licensing port listening to the failover reporting ``standby`` in ``/api/status``
(and, further, until the failover has paired and synced again).

Target: the worst time to a CHECKOUT and to a HEARTBEAT under ``--takeover-after`` + 0.5 s.
``--seconds`` is a time budget: no round starts after it (at least one round runs).

The result line, ``RESULT takeover {...}`` (times in seconds):

- ``machine`` (object): what it ran on, as ``common.machine`` lists it.
- ``heartbeat`` (number): the servers' ``--heartbeat``.
- ``takeover_after`` (number): their ``--takeover-after``.
- ``kills`` (int): the rounds run, one SIGKILL each.
- ``rounds`` (list of objects): one per kill:

  - ``checkout_s`` (number): from the kill to the new client's first CHECKOUT ``OK``;
  - ``heartbeat_s`` (number): from the kill to the old lease's first HEARTBEAT ``OK``;
  - ``restart_to_listen_s`` (number): from starting the primary again to its licensing
    port listening;
  - ``handback_s`` (number): from then to the failover in ``standby``;
  - ``resynced_s`` (number): from then to the failover paired and synced again.

- ``stats`` (object): a spread (``{"n", "median", "min", "max"}``, as ``common.spread``
  makes it) over the rounds of each of those five:

  - ``checkout_s``, ``heartbeat_s``, ``restart_to_listen_s``, ``handback_s``,
    ``resynced_s`` (spread).

- ``limit_s`` (number): the target, ``takeover_after`` + 0.5.
- ``worst_s`` (number): the largest ``checkout_s`` or ``heartbeat_s``.
- ``met`` (bool): whether ``worst_s`` is under ``limit_s``.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import common
from twisted.internet import defer

PROBE_INTERVAL = 0.01
MARGIN = 0.5


async def synced(reactor: Any, primary: common.Server, failover: common.Server) -> bool:
    """Whether the failover is paired, in standby and holds the primary's revision."""
    try:
        p = await primary.status(reactor)
        f = await failover.status(reactor)
    except Exception:
        return False
    peer = f.get("peer") or {}
    return (
        f["state"] == "standby"
        and peer.get("link") == "paired"
        and peer.get("last_sync") is not None
        and f["revision"] == p["revision"]
    )


async def ask_until_ok(
    reactor: Any, client: common.LineClient, line: bytes, deadline: float, seen: list[bytes]
) -> bytes:
    """Send ``line`` every PROBE_INTERVAL until the answer is OK; keep the refusals seen."""
    while True:
        answer = await client.request(line)
        if answer.startswith(b"OK"):
            return answer
        reason = answer.split(b" ")[2] if answer.startswith(b"ERR ") else answer[:40]
        if reason not in seen:
            seen.append(reason)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no OK for {line!r}; last answer {answer!r}")
        await common.sleep(reactor, PROBE_INTERVAL)


async def probe_checkout(reactor: Any, port: int, t_kill: float, deadline: float) -> float:
    client = await common.connect(reactor, port)
    seen: list[bytes] = []
    try:
        await ask_until_ok(reactor, client, common.hello_line("probe-new"), deadline, seen)
        await ask_until_ok(reactor, client, b"CHECKOUT", deadline, seen)
        return time.monotonic() - t_kill
    finally:
        client.close()


async def probe_heartbeat(
    reactor: Any, port: int, machine: str, lease: str, t_kill: float, deadline: float
) -> float:
    client = await common.connect(reactor, port)
    seen: list[bytes] = []
    try:
        await ask_until_ok(reactor, client, common.hello_line(machine), deadline, seen)
        await ask_until_ok(reactor, client, f"HEARTBEAT lease={lease}".encode(), deadline, seen)
        return time.monotonic() - t_kill
    finally:
        client.close()


async def take_lease(reactor: Any, port: int, machine: str) -> str:
    client = await common.connect(reactor, port)
    try:
        answer = await client.request(common.hello_line(machine))
        if not answer.startswith(b"OK"):
            raise RuntimeError(f"HELLO at the primary: {answer!r}")
        answer = await client.request(b"CHECKOUT")
        if not answer.startswith(b"OK"):
            raise RuntimeError(f"CHECKOUT at the primary: {answer!r}")
        return common.args_of(answer)["lease"]
    finally:
        client.close()


async def one_round(
    reactor: Any, args: Any, primary: common.Server, failover: common.Server, rng: random.Random
) -> dict[str, float]:
    machine = "holder"
    lease = await take_lease(reactor, primary.port, machine)
    await common.wait_until(
        reactor, lambda: synced(reactor, primary, failover), 60, "the failover to sync"
    )
    await common.sleep(reactor, rng.uniform(0, args.heartbeat))

    t_kill = time.monotonic()
    await primary.kill(reactor)
    deadline = t_kill + args.takeover_after + 30
    checkout, heartbeat = await defer.gatherResults(
        [
            defer.ensureDeferred(probe_checkout(reactor, failover.port, t_kill, deadline)),
            defer.ensureDeferred(
                probe_heartbeat(reactor, failover.port, machine, lease, t_kill, deadline)
            ),
        ],
        consumeErrors=True,
    )

    t_spawn = time.monotonic()
    primary.spawn()
    await common.wait_until(reactor, primary.listening, 60, "the primary to listen", 0.005)
    t_listen = time.monotonic()

    async def standby() -> bool:
        try:
            return (await failover.status(reactor))["state"] == "standby"
        except Exception:
            return False

    await common.wait_until(reactor, standby, 60, "the failover to hand back", 0.01)
    t_standby = time.monotonic()
    await common.wait_until(reactor, lambda: primary.healthy(reactor), 60, "the primary ok")
    await common.wait_until(
        reactor, lambda: synced(reactor, primary, failover), 60, "the failover to sync", 0.02
    )
    t_synced = time.monotonic()
    return {
        "checkout_s": checkout,
        "heartbeat_s": heartbeat,
        "restart_to_listen_s": t_listen - t_spawn,
        "handback_s": t_standby - t_listen,
        "resynced_s": t_synced - t_listen,
    }


async def main(reactor: Any, args: Any) -> dict[str, Any]:
    info = common.machine()
    common.say(common.describe_machine(info))
    work = common.work_dir(args, "takeover")
    primary_data, failover_data = work / "primary", work / "failover"
    key = common.vendor_key(work / "keys", [primary_data])
    common.build_data_dir(primary_data, common.licenses(key, common.PRODUCT, 1, 100))
    port = common.free_port()
    timing = ["--heartbeat", f"{args.heartbeat:g}", "--takeover-after", f"{args.takeover_after:g}"]
    primary = common.Server(
        "primary",
        primary_data,
        "--name",
        "bench-primary",
        *timing,
        licensing=common.local_endpoint(port),
        code_root=args.code_root,
    )
    failover = common.failover_server(
        failover_data, primary_data, port, *timing, code_root=args.code_root
    )
    rng = random.Random(11)
    rounds: list[dict[str, float]] = []
    try:
        await primary.start(reactor)
        await failover.start(reactor)
        await common.wait_until(
            reactor, lambda: synced(reactor, primary, failover), 60, "the first sync"
        )
        started = time.monotonic()
        for i in range(args.kills):
            if i and time.monotonic() - started > args.seconds:
                common.say(f"time budget of {args.seconds:g} s used: stopping after {i} kills")
                break
            r = await one_round(reactor, args, primary, failover, rng)
            rounds.append(r)
            common.say(
                f"kill {i + 1}/{args.kills}: CHECKOUT after {r['checkout_s']:.3f} s, "
                f"HEARTBEAT after {r['heartbeat_s']:.3f} s; primary listening again after "
                f"{r['restart_to_listen_s']:.2f} s, handback {r['handback_s']:.3f} s, "
                f"synced {r['resynced_s']:.3f} s"
            )
    finally:
        await failover.stop(reactor)
        await primary.stop(reactor)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return summarize(info, args, rounds)


def summarize(info: dict[str, Any], args: Any, rounds: list[dict[str, float]]) -> dict[str, Any]:
    limit = args.takeover_after + MARGIN
    stats = {k: common.spread([r[k] for r in rounds]) for k in rounds[0]} if rounds else {}
    worst = max((max(r["checkout_s"], r["heartbeat_s"]) for r in rounds), default=float("inf"))
    result = {
        "machine": info,
        "heartbeat": args.heartbeat,
        "takeover_after": args.takeover_after,
        "kills": len(rounds),
        "rounds": rounds,
        "stats": stats,
        "limit_s": limit,
        "worst_s": worst,
        "met": worst < limit,
    }
    names = {
        "checkout_s": "kill -> first CHECKOUT OK at the failover",
        "heartbeat_s": "kill -> first HEARTBEAT OK of the old lease",
        "restart_to_listen_s": "primary restart -> licensing port listening",
        "handback_s": "primary listening -> failover in standby (handback)",
        "resynced_s": "primary listening -> failover paired and synced",
    }
    common.say()
    common.say(
        common.table(
            ["measure (s)", "median", "worst", "best"],
            [
                [
                    names[k],
                    f"{s['median']:.3f}",
                    f"{s['max']:.3f}",
                    f"{s['min']:.3f}",
                ]
                for k, s in stats.items()
            ],
        )
    )
    common.say(
        f"{len(rounds)} kills at --heartbeat {args.heartbeat:g} --takeover-after "
        f"{args.takeover_after:g}: worst {worst:.3f} s, target < {limit:g} s: "
        f"{'met' if result['met'] else 'MISSED'}"
    )
    return result


def run(argv: list[str] | None = None) -> None:
    p = common.parser(
        __doc__,
        seconds=3600.0,
        quick_seconds=60.0,
        seconds_help="time budget: no kill starts after it",
    )
    common.scaled(p, "--kills", int, 20, 1, "SIGKILLs of the primary")
    common.scaled(p, "--heartbeat", float, 1.0, 0.2, "the failover's --heartbeat")
    common.scaled(p, "--takeover-after", float, 5.0, 1.0, "the failover's --takeover-after")
    args = common.parse(p, argv)
    common.run_scenario("takeover", main, args)


if __name__ == "__main__":
    run()
