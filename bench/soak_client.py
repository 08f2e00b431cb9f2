"""The clients of the soak: worker threads that check seats out and in, and their ledger.

Each ``Worker`` is one installation with its own machine id. It says HELLO, then keeps
doing CHECKOUT (with a fresh ``request`` key), HEARTBEAT and RELEASE at random, one request
at a time, and reconnects with backoff whenever the server is gone.

A request whose answer was lost with the connection stays *unresolved* and is sent again,
unchanged, on the next connection before anything else: a CHECKOUT with the same ``request``
key (so the client learns the lease the server may have committed), a RELEASE of the same
lease (where ``404 unknown-lease`` means the first one was committed). Only answers count:
the ``Ledger`` records every acknowledged grant and release, the unresolved requests, and
everything the server said that a correct server could not have said.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

CONNECT_TIMEOUT = 2.0
ANSWER_TIMEOUT = 15.0
BACKOFF_FIRST = 0.05
BACKOFF_MOST = 1.0
VERSION = "2025r2"

_ARG = re.compile(r'([a-z][a-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]+)')


class ConnectionLostError(Exception):
    """The connection ended, or went silent, before the answer came."""


class BadAnswerError(Exception):
    """The server sent a line that is not a response."""


@dataclass(frozen=True)
class Answer:
    """One parsed response line."""

    line: str
    ok: bool
    code: int = 0
    reason: str = ""
    args: dict[str, str] = field(default_factory=dict)


def parse_answer(line: str) -> Answer:
    """Parse ``OK k=v ...`` or ``ERR <code> <reason> k=v ...``."""
    if line == "OK" or line.startswith("OK "):
        return Answer(line, True, args=_args(line[3:]))
    parts = line.split(" ", 3)
    if len(parts) >= 3 and parts[0] == "ERR" and parts[1].isdigit():
        rest = parts[3] if len(parts) == 4 else ""
        return Answer(line, False, int(parts[1]), parts[2], _args(rest))
    raise BadAnswerError(f"not a response: {line!r}")


def _args(text: str) -> dict[str, str]:
    args = {}
    for key, value in _ARG.findall(text):
        args[key] = json.loads(value) if value.startswith('"') else value
    return args


def format_request(verb: str, **args: object) -> bytes:
    """One request line; every value the soak sends is bare."""
    parts = [verb, *(f"{k}={v}" for k, v in args.items() if v is not None)]
    return (" ".join(parts) + "\n").encode("ascii")


class LineConnection:
    """One blocking connection to the licensing port, one request at a time."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ConnectionLostError(f"send failed: {e}") from None

    def read(self, timeout: float = ANSWER_TIMEOUT) -> Answer:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionLostError("no answer in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise ConnectionLostError("no answer in time") from None
            except OSError as e:
                raise ConnectionLostError(f"receive failed: {e}") from None
            if not chunk:
                raise ConnectionLostError("the server closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return parse_answer(line.decode("utf-8"))

    def request(self, data: bytes) -> Answer:
        self.send(data)
        return self.read()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class Op:
    """One request of a worker, kept until its outcome is known."""

    verb: str
    product: str | None = None
    request: str | None = None
    lease: str | None = None
    attempts: int = 0
    lost: int = 0
    """Attempts whose answer was lost with the connection."""

    def line(self) -> bytes:
        return format_request(
            self.verb, product=self.product, request=self.request, lease=self.lease
        )


@dataclass(frozen=True)
class Grant:
    """A lease the server acknowledged."""

    lease: str
    license: str
    machine: str
    user: str
    product: str
    request: str
    retried: bool
    """Learned by repeating a CHECKOUT whose first answer was lost."""


@dataclass(frozen=True)
class Identity:
    """Who a worker is to the server."""

    machine: str
    host: str
    user: str


class Ledger:
    """What the clients were told, shared by every worker; every method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.grants: dict[str, Grant] = {}
        self.releases: dict[str, bool] = {}
        """lease -> True when learned as ``404`` to a repeated RELEASE."""
        self.unresolved: dict[str, Op] = {}
        """machine -> the request of that machine whose outcome is not known yet."""
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()

    def _stamp(self) -> str:
        return f"t={time.monotonic() - self.started:.2f}s"

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(f"{self._stamp()} {text}")

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def sending(self, machine: str, op: Op) -> None:
        with self.lock:
            self.unresolved[machine] = op

    def resolved(self, machine: str) -> None:
        with self.lock:
            self.unresolved.pop(machine, None)

    def granted(self, who: Identity, op: Op, answer: Answer) -> Grant | None:
        lease = answer.args.get("lease", "")
        grant = Grant(
            lease, answer.args.get("license", ""), who.machine, who.user,
            op.product or "", op.request or "", op.lost > 0,
        )  # fmt: skip
        with self.lock:
            self.unresolved.pop(who.machine, None)
            self.counts["grants"] += 1
            self.counts["grants after a lost answer"] += grant.retried
            earlier = self.grants.get(lease)
            if not lease or earlier is not None:
                self.violations.append(
                    f"{self._stamp()} {who.machine}: CHECKOUT request={op.request} answered "
                    f"{answer.line!r}, a lease granted before as {earlier}"
                )
                return None
            self.grants[lease] = grant
            return grant

    def released(self, machine: str, lease: str, inferred: bool) -> None:
        with self.lock:
            self.unresolved.pop(machine, None)
            self.releases[lease] = inferred
            self.counts["releases inferred from 404" if inferred else "releases"] += 1

    def held(self) -> dict[str, Grant]:
        """The leases granted and not released, as the clients were told."""
        with self.lock:
            return {k: g for k, g in self.grants.items() if k not in self.releases}

    def snapshot(self) -> tuple[dict[str, Grant], set[str], list[tuple[str, Op]]]:
        """Held leases, released leases and unresolved requests, at one moment."""
        with self.lock:
            held = {k: g for k, g in self.grants.items() if k not in self.releases}
            unresolved = [(m, Op(**vars(op))) for m, op in self.unresolved.items()]
            return held, set(self.releases), unresolved


class Worker(threading.Thread):
    """One client installation, checking seats out and in until told to stop."""

    def __init__(
        self,
        index: int,
        run_id: str,
        ledger: Ledger,
        port: Callable[[], int | None],
        products: list[str],
        stop: threading.Event,
        seed: int,
        pace: float,
        max_held: int = 3,
    ):
        super().__init__(name=f"soak-worker-{index}", daemon=True)
        self.who = Identity(f"soak-{run_id}-m{index:03d}", f"soak-host-{index}", f"user{index}")
        self.ledger = ledger
        self.port = port
        self.products = products
        self.stop = stop
        self.rng = random.Random(seed)
        self.pace = pace
        self.max_held = max_held
        self.held: dict[str, Grant] = {}
        self.pending: Op | None = None
        self.conn: LineConnection | None = None
        self.backoff = BACKOFF_FIRST
        self.failed: BaseException | None = None
        self._keys = itertools.count(1)

    def run(self) -> None:
        try:
            while not (self.stop.is_set() and self.pending is None):
                if self.conn is None and not self._connect():
                    continue
                op = self.pending or self._choose()
                if op is not None:
                    self._do(op)
                if self.pending is None:
                    time.sleep(min(self.rng.expovariate(1.0 / self.pace), 10 * self.pace))
        except BaseException as e:
            self.failed = e
            self.ledger.violation(f"{self.who.machine}: the worker crashed: {e!r}")
        finally:
            if self.conn is not None:
                self.conn.close()

    # -- connections

    def _wait(self) -> None:
        time.sleep(self.backoff * self.rng.uniform(0.5, 1.5))
        self.backoff = min(self.backoff * 2, BACKOFF_MOST)

    def _connect(self) -> bool:
        port = self.port()
        if port is None:
            self._wait()
            return False
        try:
            conn = LineConnection(port)
        except OSError:
            self.ledger.count("connections refused")
            self._wait()
            return False
        who = self.who
        line = format_request(
            "HELLO", product=self.products[0], version=VERSION,
            host=who.host, machine=who.machine, user=who.user,
        )  # fmt: skip
        try:
            answer = conn.request(line)
        except ConnectionLostError:
            conn.close()
            self.ledger.count("connections lost at HELLO")
            self._wait()
            return False
        if not answer.ok:
            conn.close()
            self.ledger.count(f"HELLO ERR {answer.code} {answer.reason}")
            if answer.code not in (429, 500, 503):
                self.ledger.violation(f"{who.machine}: HELLO answered {answer.line!r}")
            self._wait()
            return False
        self.conn = conn
        self.backoff = BACKOFF_FIRST
        self.ledger.count("sessions")
        return True

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- requests

    def _choose(self) -> Op | None:
        if self.stop.is_set():
            return None
        held = list(self.held)
        roll = self.rng.random()
        if not held or (len(held) < self.max_held and roll < 0.4):
            key = f"r{next(self._keys)}-{self.rng.getrandbits(32):08x}"
            return Op("CHECKOUT", product=self.rng.choice(self.products), request=key)
        if roll < 0.75:
            return Op("RELEASE", lease=self.rng.choice(held))
        if roll < 0.95:
            return Op("HEARTBEAT", lease=self.rng.choice(held))
        return Op("HEARTBEAT")

    def _do(self, op: Op) -> None:
        op.attempts += 1
        if op.verb != "HEARTBEAT":
            self.pending = op
            self.ledger.sending(self.who.machine, op)
        try:
            answer = self.conn.request(op.line())
        except ConnectionLostError:
            self._drop()
            op.lost += 1
            if op.verb != "HEARTBEAT":
                self.ledger.count(f"{op.verb} answers lost")
            return
        except BadAnswerError as e:
            self._drop()
            self.ledger.violation(f"{self.who.machine}: {op.line()!r} answered: {e}")
            return
        self.ledger.count(f"{op.verb} {'OK' if answer.ok else f'ERR {answer.code}'}")
        if not answer.ok and answer.code in (429, 500, 503):
            # Load shedding or a fault: nothing was done; try the same request again later.
            self._drop()
            self._wait()
            return
        getattr(self, f"_answered_{op.verb.lower()}")(op, answer)

    def _unexpected(self, op: Op, answer: Answer, why: str) -> None:
        self.pending = None
        self.ledger.resolved(self.who.machine)
        self.ledger.violation(
            f"{self.who.machine}: {op.line().decode().strip()!r} (attempt {op.attempts}) "
            f"answered {answer.line!r}: {why}"
        )

    def _answered_checkout(self, op: Op, answer: Answer) -> None:
        if answer.ok:
            self.pending = None
            grant = self.ledger.granted(self.who, op, answer)
            if grant is not None:
                self.held[grant.lease] = grant
        elif answer.reason == "no-seats":
            self.pending = None
            self.ledger.resolved(self.who.machine)
        else:
            self._unexpected(op, answer, "a CHECKOUT of a licensed product is OK or no-seats")

    def _answered_release(self, op: Op, answer: Answer) -> None:
        if answer.ok or (answer.reason == "unknown-lease" and op.lost > 0):
            self.pending = None
            self.held.pop(op.lease, None)
            self.ledger.released(self.who.machine, op.lease, inferred=not answer.ok)
        elif answer.reason == "unknown-lease":
            self.held.pop(op.lease, None)
            self._unexpected(op, answer, "the server forgot a lease it granted")
        else:
            self._unexpected(op, answer, "a RELEASE of a held lease is OK")

    def _answered_heartbeat(self, op: Op, answer: Answer) -> None:
        if answer.ok:
            return
        if op.lease is not None:
            self.held.pop(op.lease, None)
        self.ledger.violation(
            f"{self.who.machine}: {op.line().decode().strip()!r} answered {answer.line!r}: "
            f"the server forgot a lease it granted"
        )
