"""The floor: the least a Python license server on Twisted does for a CHECKOUT and a RELEASE.

    python bench/floor_server.py --port-file FILE --database FILE [--seats N] [--inline]

Not the server, and not a server to run: a yardstick for ``checkout_cost.py --floor``. It
keeps the promises of the specs that cost CPU for every request and drops everything else.
What it keeps, per request:

- reading the line (``LineReceiver``) and answering it, in request order;
- the seat rule of a concurrent license (one seat per machine, user and product, however
  many leases they hold) and a lease id of 96 random bits that belongs to its machine;
- a hash-chained audit entry (SHA-256 over the previous hash and the entry's JSON);
- a change-log line for the failover's sync, in the store's format (revision, kind, key,
  the lease's row as JSON, or null for a release);
- durability before the answer: the audit entries and change-log lines of one reactor
  turn go to one writer thread as one SQLite row each (WAL mode, ``synchronous=FULL``),
  one transaction and disk sync per batch of turns, and the answers leave once it has
  committed. With ``--inline`` there is no writer thread: each turn commits on the
  reactor thread itself, which the design does not allow the server (a slow disk would
  stall every session), to show what the second thread costs.

What it drops: HELLO registration, validation of every argument, licenses and their
terms, lease records and the in-memory indexes the web page, the reaper and HEARTBEAT
need, taking a change back when a write fails, load shedding, metrics. A request this
server cannot serve gets ``ERR 400``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from base64 import urlsafe_b64encode
from json import encoder
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

GATHER = 0.0005
"""Seconds the writer lets pass before a batch after a busy one (the server's default)."""

_encode = encoder.c_make_encoder(None, None, encoder.encode_basestring, None, ":", ",", 0, 0, 0)


class Journal:
    """The audit chain, the change log and their writer thread (none with ``inline``):
    a turn's lines go as one row of each."""

    def __init__(self, database: Path, inline: bool = False) -> None:
        self.database = database
        self.inline = inline
        self.previous = "0" * 64
        self.seq = 0
        self.lines: list[str] = []
        self.changes: list[str] = []
        self.revision = 0
        self.waiting: list[tuple[Any, bytes]] = []
        self.outstanding = 0
        """Answers handed to the writer thread and not yet sent."""
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        if inline:
            self.conn = _open(database)
        else:
            threading.Thread(target=self._write, daemon=True).start()

    def add(
        self, kind: str, data: str, key: str, row: tuple | None, protocol: Any, answer: bytes
    ) -> None:
        """Log a change of lease ``key`` and chain its audit entry; ``answer`` goes to
        ``protocol`` once both are durable."""
        self.revision += 1
        encoded = "null" if row is None else "".join(_encode(row, 0))
        self.changes.append(f'{self.revision}\tlease\t["{key}"]\t{encoded}')
        self.seq += 1
        text = f'{{"data":{data},"kind":"{kind}","seq":{self.seq},"time":{int(time.time())}}}'
        self.previous = hashlib.sha256((self.previous + text).encode()).hexdigest()
        self.lines.append(f"{self.previous} {text}")
        self._wait(protocol, answer)

    def answer(self, protocol: Any, answer: bytes) -> None:
        """Answer without a write: now, unless answers are still waiting (order counts)."""
        if self.waiting or self.outstanding:
            self._wait(protocol, answer)
        else:
            protocol.transport.write(answer)

    def _wait(self, protocol: Any, answer: bytes) -> None:
        if not self.waiting:
            reactor.callLater(0, self._endTurn)
        self.waiting.append((protocol, answer))

    def _endTurn(self) -> None:
        audited, changes, waiting = "\n".join(self.lines), "\n".join(self.changes), self.waiting
        self.lines, self.changes, self.waiting = [], [], []
        if not self.inline:
            self.outstanding += len(waiting)
            self.queue.put((audited, self.seq, changes, self.revision, waiting))
            return
        if audited:
            _commit(self.conn, audited, self.seq, changes, self.revision)
        _send(waiting)

    def delivered(self, waiting: list[tuple[Any, bytes]]) -> None:
        self.outstanding -= len(waiting)
        _send(waiting)

    def _write(self) -> None:
        conn = _open(self.database)
        last = 0
        while True:
            audited, changed, seq, revision, waiting = [], [], 0, 0, []
            entry = self.queue.get()
            if last > 1:
                time.sleep(GATHER)
            while entry is not None:
                if entry[0]:
                    audited.append(entry[0])
                    changed.append(entry[2])
                    seq, revision = entry[1], entry[3]
                waiting += entry[4]
                try:
                    entry = self.queue.get_nowait()
                except queue.Empty:
                    entry = None
            if audited:
                _commit(conn, "\n".join(audited), seq, "\n".join(changed), revision)
            last = len(waiting)
            reactor.callFromThread(self.delivered, waiting)


def _send(waiting: list[tuple[Any, bytes]]) -> None:
    for protocol, answer in waiting:
        protocol.transport.write(answer)


def _open(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for table in ("audit", "changes"):
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (last INTEGER PRIMARY KEY, lines)")
    return conn


def _commit(conn: sqlite3.Connection, audited: str, seq: int, changed: str, revision: int) -> None:
    """One transaction and disk sync: a row of audit entries, a row of change-log lines."""
    conn.execute("BEGIN IMMEDIATE")
    insert = "INSERT INTO {} (last, lines) VALUES (?, ?)"
    conn.execute(insert.format("audit"), (seq, audited))
    conn.execute(insert.format("changes"), (revision, changed))
    conn.execute("COMMIT")


class Seats:
    """Leases by id, and who holds the one license's seats."""

    def __init__(self, seats: int) -> None:
        self.seats = seats
        self.holders: dict[tuple[str, str, str], set[str]] = {}
        self.leases: dict[str, tuple[tuple[str, str, str], str]] = {}
        self.random = b""


class Floor(LineReceiver):
    delimiter = b"\n"
    machine: str | None = None

    def lineReceived(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        journal, seats = self.factory.journal, self.factory.seats
        if verb == b"CHECKOUT" and self.machine is not None:
            holder = self.holder
            held = seats.holders.get(holder)
            if held is None:
                if len(seats.holders) >= seats.seats:
                    journal.answer(self, b"ERR 409 no-seats\n")
                    return
                held = seats.holders[holder] = set()
            if len(seats.random) < 12:
                seats.random = os.urandom(12 * 1024)
            lease = "l-" + urlsafe_b64encode(seats.random[:12]).decode()
            seats.random = seats.random[12:]
            expires = int(time.time()) + 120
            held.add(lease)
            seats.leases[lease] = (holder, self.machine)
            data = f'{{"command":"checkout","expires":{expires},"lease":"{lease}",{self.about}}}'
            answer = f"OK lease={lease} license=L-1 kind=concurrent expires={expires} ttl=120\n"
            row = (lease, "c-1", self.machine, "-", holder[2], "2025r2", "L-1", "concurrent")
            row += (expires - 120, expires, 120, 0, "")
            journal.add("grant", data, lease, row, self, answer.encode())
        elif verb == b"RELEASE" and rest.startswith(b"lease="):
            lease = rest[6:].decode()
            found = seats.leases.get(lease)
            if found is None or found[1] != self.machine:
                journal.answer(self, b"ERR 404 unknown-lease\n")
                return
            del seats.leases[lease]
            held = seats.holders[found[0]]
            held.discard(lease)
            if not held:
                del seats.holders[found[0]]
            data = f'{{"lease":"{lease}","machine":{self.name}}}'
            journal.add("release", data, lease, None, self, b"OK\n")
        elif verb == b"HELLO":
            args = dict(word.split("=", 1) for word in rest.decode().split(" ") if "=" in word)
            self.machine = args["machine"]
            self.name = json.dumps(self.machine)
            self.holder = (self.machine, "-", args["product"])
            product = json.dumps(args["product"])
            self.about = f'"licenses":["L-1"],"machine":{self.name},"product":{product},"user":"-"'
            journal.answer(self, b"OK client=c-1 heartbeat=30\n")
        else:
            journal.answer(self, b"ERR 400 bad-request\n")


def main() -> None:
    p = argparse.ArgumentParser(prog="floor_server.py")
    p.add_argument("--port-file", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--seats", type=int, default=200)
    p.add_argument("--inline", action="store_true", help="commit on the reactor thread")
    args = p.parse_args()
    factory = Factory.forProtocol(Floor)
    factory.journal = Journal(Path(args.database), args.inline)
    factory.seats = Seats(args.seats)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    Path(args.port_file).write_text(f"{port.getHost().port}\n")
    reactor.run()


if __name__ == "__main__":
    main()
