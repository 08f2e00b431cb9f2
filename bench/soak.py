"""Soak test: many clients check seats out and in while the server is SIGKILLed and restarted.

    python bench/soak.py [--minutes N] [--kills K] [--clients C] [--seed S] [--keep]

One ``twistd licenseserver`` on 127.0.0.1 (a fresh data directory, four concurrent licenses
of different seat counts) serves C client threads for N minutes; K times, at random moments,
it is killed with SIGKILL and started again on the same data directory and port. Then the
clients finish what they left unresolved, the server is restarted cleanly once more, and:

- right after each kill, a copy of what the kill left on disk passes ``integrity_check``,
  holds every lease acknowledged until then, none acknowledged as released, nothing else
  but leases of CHECKOUTs in flight, and no license over its seats;
- after the run, every held lease answers HEARTBEAT with OK and every released one with
  ``404 unknown-lease``;
- after a clean stop, read directly from the database (read only): ``integrity_check`` is
  ``ok``; the live leases are exactly the leases the clients hold (acknowledged grants minus
  acknowledged releases); no concurrent license has more holders than seats; the audit log's
  grants and releases are exactly the acknowledged ones, replaying it never exceeds a
  license's seats, and its hash chain verifies.

The last line is the verdict, ``soak: OK ...`` or ``soak: FAILED ...``; the exit status is
0 only for OK. Failures are listed above the verdict, and the work directory (data
directory, server log, the copies taken at each kill) is kept for evidence.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from soak_check import (
    audit_accounting,
    audit_replay,
    compare_at_kill,
    compare_final,
    copy_database,
    integrity,
    over_allocation,
    read_store,
    unknown_licenses,
)
from soak_client import ConnectionLostError, Ledger, LineConnection, Worker, format_request
from soak_server import SoakServer, SoakSetupError, license_plan, make_license_files, run_cli

WORKER_FINISH_TIMEOUT = 120.0
MIN_UP = 1.0
"""Least seconds the server serves between a restart and the next kill."""


@dataclass
class Config:
    seconds: float = 180.0
    kills: int = 5
    clients: int = 32
    pace: float = 0.02
    """Mean seconds a client waits between two requests."""
    seed: int | None = None
    workdir: Path | None = None
    keep: bool = False
    json: Path | None = None
    """Where to write the figures of the run as JSON, if anywhere."""
    code_root: Path | None = None
    """Run the server from this copy of the code instead of this working tree."""


@dataclass
class KillRecord:
    at: float
    in_flight: int
    """Requests whose answer the kill took away."""
    unanswered_leases: list[str]
    """Leases in the store left behind that a CHECKOUT in flight had asked for."""
    held: int
    restart: float


@dataclass
class Result:
    config: Config
    seed: int
    workdir: Path
    violations: list[str] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    grants: int = 0
    releases: int = 0
    held: int = 0
    duration: float = 0.0
    audit_entries: str = ""
    stored: int = 0
    """Leases in the store at the end."""
    peak_use: dict[str, int] = field(default_factory=dict)
    seats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def verdict(self) -> str:
        word = "OK" if self.ok else "FAILED"
        text = (
            f"soak: {word} kills={len(self.kills)} grants={self.grants} "
            f"releases={self.releases} held={self.held}"
        )
        if not self.ok:
            text += f" violations={len(self.violations)} workdir={self.workdir}"
        return text


def _server_args(seconds: float) -> list[str]:
    """Server options: leases outlive the run; no load shedding gets in the way."""
    ttl = int(min(86400, max(600, 2 * seconds + 600)))
    return [
        "--lease-ttl", str(ttl), "--idle-timeout", "0", "--rate-limit", "0",
        "--max-connections-per-address", "0",
    ]  # fmt: skip


def kill_times(seconds: float, kills: int, rng: random.Random) -> list[float]:
    """K moments in the run, one in each of the first K of K+1 equal stretches.

    The last stretch has no kill, so the run always ends with the server serving a while.
    """
    stretch = seconds / (kills + 1)
    return [stretch * (i + rng.uniform(0.3, 1.0)) for i in range(kills)]


def run_soak(config: Config, say: Callable[[str], None] = print) -> Result:
    """Run one soak and check it; the caller prints ``result.verdict()``."""
    soak = Soak(config, say)
    try:
        soak.run()
    except SoakSetupError as e:
        soak.ledger.violation(f"the soak could not go on: {e}")
    finally:
        soak.stop.set()
        soak.server.kill()
        soak.collect()
        for line in summary(soak.result):
            say(line)
        if soak.result.ok and not config.keep:
            shutil.rmtree(soak.result.workdir, ignore_errors=True)
    return soak.result


class Soak:
    """One run: the server, the client threads, their ledger, and the result being built."""

    def __init__(self, config: Config, say: Callable[[str], None]):
        seed = config.seed if config.seed is not None else random.randrange(1 << 31)
        workdir = config.workdir or Path(tempfile.mkdtemp(prefix="licenseserver-soak-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.say = say
        self.rng = random.Random(seed)
        self.result = Result(config, seed, workdir)
        self.server = SoakServer(workdir, _server_args(config.seconds), config.code_root)
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.workers: list[Worker] = []
        self.began = self.next_report = time.monotonic()
        self.reported: set[str] = set()
        """Leases named in a violation at a kill."""

    def run(self) -> None:
        config, result, server = self.config, self.result, self.server
        plan = license_plan(config.clients)
        result.seats = {spec.id: spec.seats for spec in plan}
        self.say(
            f"soak: seed={result.seed} clients={config.clients} seconds={config.seconds:g} "
            f"kills={config.kills} workdir={result.workdir}"
        )
        files = make_license_files(result.workdir, server.data_dir, plan)
        server.start()
        for path in files:
            server.upload(path)
        self.say(
            "soak: licenses " + ", ".join(f"{s.id} ({s.product}, {s.seats} seats)" for s in plan)
        )

        products = sorted({spec.product for spec in plan})
        for i in range(config.clients):
            worker = Worker(
                i, f"{result.seed:08x}", self.ledger, server.port, products, self.stop,
                self.rng.getrandbits(64), config.pace,
            )  # fmt: skip
            self.workers.append(worker)
            worker.start()

        self.began = ready_at = time.monotonic()
        self.next_report = self.began + 30.0
        for number, planned in enumerate(kill_times(config.seconds, config.kills, self.rng), 1):
            self.sleep_until(self.began + max(planned, ready_at - self.began + MIN_UP))
            record = self.kill_and_restart(number)
            result.kills.append(record)
            ready_at = time.monotonic()
            self.say(
                f"soak: kill {number}/{config.kills} at t={record.at:.1f}s: "
                f"{record.in_flight} requests in flight, {len(record.unanswered_leases)} of "
                f"their leases already stored, {record.held} held; serving again after "
                f"{record.restart:.2f}s"
            )
        self.sleep_until(self.began + config.seconds)
        result.duration = time.monotonic() - self.began
        self.settle()
        self.final_checks()

    def sleep_until(self, moment: float) -> None:
        """Wait for ``moment``, saying how far the run got every 30 s."""
        while (left := moment - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
            if time.monotonic() >= self.next_report:
                self.next_report += 30.0
                with self.ledger.lock:
                    grants, releases = len(self.ledger.grants), len(self.ledger.releases)
                self.say(
                    f"soak: t={time.monotonic() - self.began:.0f}s grants={grants} "
                    f"releases={releases} held={grants - releases}"
                )

    def kill_and_restart(self, number: int) -> KillRecord:
        """SIGKILL the server, check what it left on disk (a copy), start it again."""
        server, ledger = self.server, self.ledger
        server.kill()
        at = time.monotonic() - self.began
        held, released, unresolved = ledger.snapshot()
        label = f"kill {number} (t={at:.1f}s)"
        copy = copy_database(server.database, self.result.workdir / f"after-kill-{number}")
        state = read_store(copy, read_only=False)
        problems = [f"{label}: {p}" for p in integrity(state)]
        problems += [f"{label}: {p}" for p in over_allocation(state)]
        problems += [f"{label}: {p}" for p in unknown_licenses(state)]
        mismatches, unanswered = compare_at_kill(state, held, released, unresolved, label)
        # A lease already reported at an earlier kill is not reported again.
        problems += [text for lid, text in mismatches.items() if lid not in self.reported]
        self.reported.update(mismatches)
        for problem in problems:
            ledger.violation(problem)
        try:
            restart = server.start()
        except SoakSetupError as e:
            raise SoakSetupError(f"after {label}: {e}") from None
        if not problems and not self.config.keep:
            shutil.rmtree(copy.parent, ignore_errors=True)
        return KillRecord(at, len(unresolved), sorted(unanswered), len(held), restart)

    def settle(self) -> None:
        """Stop the clients once each has learned the outcome of its last request."""
        self.stop.set()
        deadline = time.monotonic() + WORKER_FINISH_TIMEOUT
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            if worker.is_alive():
                self.ledger.violation(
                    f"{worker.who.machine}: could not settle {worker.pending} "
                    f"within {WORKER_FINISH_TIMEOUT:.0f} s"
                )

    def final_checks(self) -> None:
        server, ledger, result = self.server, self.ledger, self.result
        held, released, unresolved = ledger.snapshot()
        in_workers = {lease: g for w in self.workers for lease, g in w.held.items()}
        if in_workers.keys() != held.keys():
            ledger.violation(
                f"the clients' own lists of leases ({len(in_workers)}) differ from the "
                f"ledger's ({len(held)}): {sorted(in_workers.keys() ^ held.keys())[:10]}"
            )
        for machine, op in unresolved:
            ledger.violation(f"{machine}: {op} was never settled")
        for kill in result.kills:
            for lease in kill.unanswered_leases:
                with ledger.lock:
                    grant = ledger.grants.get(lease)
                if grant is None or not grant.retried:
                    ledger.violation(
                        f"lease {lease}, stored but unanswered at the kill at t={kill.at:.1f}s,"
                        f" was not returned to the repeated CHECKOUT of its client ({grant})"
                    )

        _stop_cleanly(server, ledger)
        server.start()
        for problem in _ask_server(server, held, released, ledger):
            ledger.violation(f"after a clean restart: {problem}")
        _stop_cleanly(server, ledger)

        state = read_store(server.database, with_audit=True)
        result.stored = len(state.leases)
        problems = integrity(state)
        problems += over_allocation(state)
        problems += unknown_licenses(state)
        problems += compare_final(state, held, released)
        with ledger.lock:
            grants, releases = dict(ledger.grants), dict(ledger.releases)
        problems += audit_accounting(state, grants, releases)
        replay_problems, result.peak_use = audit_replay(state)
        problems += replay_problems
        try:
            verdict = run_cli("audit", "verify", "--data", str(server.data_dir))
            result.audit_entries = verdict.strip()
        except SoakSetupError as e:
            problems.append(f"audit verify: {e}")
        for problem in problems:
            ledger.violation(f"final store: {problem}")

    def collect(self) -> None:
        """Copy the ledger's figures into the result."""
        with self.ledger.lock:
            self.result.violations = list(self.ledger.violations)
            self.result.counts = dict(self.ledger.counts)
            self.result.grants = len(self.ledger.grants)
            self.result.releases = len(self.ledger.releases)
            self.result.held = self.result.grants - self.result.releases


def _stop_cleanly(server: SoakServer, ledger: Ledger) -> None:
    """SIGTERM; twistd ends with status 0, or by re-raising SIGTERM once it has shut down."""
    code = server.stop()
    if code not in (0, -signal.SIGTERM):
        ledger.violation(f"the server exited with {code} on SIGTERM\n{server.log_tail()}")


def _ask_server(server: SoakServer, held: dict, released: set[str], ledger: Ledger) -> list[str]:
    """HEARTBEAT every held lease (OK) and every released one (404) as its own machine."""
    machines: dict[str, tuple[list[str], list[str]]] = {}
    for lease, grant in held.items():
        machines.setdefault(grant.machine, ([], []))[0].append(lease)
    with ledger.lock:
        for lease in released:
            grant = ledger.grants[lease]
            machines.setdefault(grant.machine, ([], []))[1].append(lease)
        users = {g.machine: g.user for g in ledger.grants.values()}
    problems = []
    for machine, (keep, gone) in sorted(machines.items()):
        conn = LineConnection(server.port())
        try:
            lines = [
                format_request(
                    "HELLO",
                    product="Alpha",
                    version="2025r2",
                    host="soak-check",
                    machine=machine,
                    user=users[machine],
                )
            ]
            lines += [format_request("HEARTBEAT", lease=lease) for lease in keep + gone]
            conn.send(b"".join(lines))
            hello = conn.read()
            if not hello.ok:
                problems.append(f"{machine}: HELLO answered {hello.line!r}")
                continue
            for lease in keep:
                answer = conn.read()
                if not answer.ok:
                    problems.append(f"held lease {lease} of {machine}: {answer.line!r}")
            for lease in gone:
                answer = conn.read()
                if answer.ok or answer.reason != "unknown-lease":
                    problems.append(f"released lease {lease} of {machine}: {answer.line!r}")
        except ConnectionLostError as e:
            problems.append(f"{machine}: {e}")
        finally:
            conn.close()
    return problems


def summary(result: Result) -> list[str]:
    """The figures of a run, one per line."""
    counts = result.counts
    requests = sum(n for name, n in counts.items() if " OK" in name or " ERR" in name)
    lost = sum(n for name, n in counts.items() if name.endswith("answers lost"))
    restarts = [k.restart for k in result.kills]
    lines = [
        f"soak: ran {result.duration:.0f}s with {result.config.clients} clients, "
        f"{requests} answered requests ({requests / max(result.duration, 1e-9):.0f}/s), "
        f"{counts.get('sessions', 0)} sessions",
        f"soak: grants {result.grants} ({counts.get('grants after a lost answer', 0)} learned "
        f"by repeating a CHECKOUT), no-seats {counts.get('CHECKOUT ERR 409', 0)}, "
        f"releases {result.releases} ({counts.get('releases inferred from 404', 0)} learned "
        f"as 404 to a repeated RELEASE), held at the end {result.held}, "
        f"in the store {result.stored}",
        f"soak: requests cut off by kills {lost}; in flight as the server died "
        f"{sum(k.in_flight for k in result.kills)}, of which "
        f"{sum(len(k.unanswered_leases) for k in result.kills)} CHECKOUTs were already "
        f"stored (each later returned to its repeated CHECKOUT)",
    ]
    if restarts:
        lines.append(
            f"soak: serving again after a kill in {min(restarts):.2f}s min, "
            f"{sum(restarts) / len(restarts):.2f}s mean, {max(restarts):.2f}s max"
        )
    use = ", ".join(
        f"{lid} {result.peak_use.get(lid, 0)}/{seats}" for lid, seats in result.seats.items()
    )
    lines.append(f"soak: most seats in use at once (audit replay): {use}")
    if result.audit_entries:
        lines.append(f"soak: {result.audit_entries}")
    others = {
        name: n
        for name, n in counts.items()
        if "ERR" in name and name not in ("CHECKOUT ERR 409", "RELEASE ERR 404")
    }
    if others:
        lines.append(f"soak: other errors {others}")
    for violation in result.violations[:50]:
        lines.append(f"VIOLATION {violation}")
    if len(result.violations) > 50:
        lines.append(f"... and {len(result.violations) - 50} more violations")
    return lines


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the run")
    parser.add_argument("--seconds", type=float, help="length of the run (instead of minutes)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs during the run")
    parser.add_argument("--clients", type=int, default=32, help="client threads")
    parser.add_argument("--pace", type=float, default=0.02, help="mean seconds between requests")
    parser.add_argument("--seed", type=int, help="random seed (printed; repeat a run with it)")
    parser.add_argument("--workdir", type=Path, help="work directory [default: a new temp one]")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--code-root", type=Path, help="run the server from this copy of the code (with twisted/)"
    )
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    if seconds <= 0 or args.kills < 0 or args.clients < 1 or args.pace <= 0:
        parser.error("--minutes/--seconds, --clients and --pace must be positive, --kills >= 0")
    return Config(
        seconds, args.kills, args.clients, args.pace, args.seed, args.workdir, args.keep,
        args.json, args.code_root,
    )  # fmt: skip


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"soak: stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    result = run_soak(config, say=lambda line: print(line, flush=True))
    if config.json is not None:
        figures = {
            "seed": result.seed,
            "seconds": round(result.duration, 1),
            "clients": config.clients,
            "kills": [vars(k) for k in result.kills],
            "grants": result.grants,
            "releases": result.releases,
            "held": result.held,
            "counts": result.counts,
            "peak_use": result.peak_use,
            "seats": result.seats,
            "violations": result.violations,
        }
        config.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(result.verdict(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
