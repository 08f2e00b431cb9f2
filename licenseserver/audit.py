"""The audit log: every admin change, grant, release, denial and takeover, hash-chained.

Each entry carries the hash of the one before it, so an entry changed,
removed or inserted after the fact breaks the chain from there on.
``verify`` walks the chain and names the first broken link;
``licenseserver audit verify --data DIR`` runs it on a data directory.

    hash = SHA-256( previous hash + canonical JSON of {seq, time, kind, data} )

The first entry's previous hash is ``GENESIS``. Entries live in the store's
``audit_log`` table, written in the same transaction as the change they
record: one row per transaction, holding the hash before its entries
(``prev``), the hash of its last (``hash``) and its entries, one line each,
``<hash> <canonical JSON>``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licenseserver.jsontext import compact_encoder

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """Something that happened: a stable ``kind`` and its details."""

    time: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


_compact = compact_encoder(ensure_ascii=False)


def data_text(entry: AuditEntry) -> str:
    """An entry's data as the compact, key-sorted JSON its hash covers."""
    return _compact(entry.data)


def canonical(seq: int, entry: AuditEntry) -> str:
    """The text an entry's hash covers: the compact, key-sorted JSON of
    ``{seq, time, kind, data}``."""
    return _canonical(seq, entry, _compact(entry.data))


def _canonical(seq: int, entry: AuditEntry, data: str) -> str:
    """``canonical`` with the entry's data already in compact JSON.

    The keys sort as data, kind, seq, time, so the text is put together
    around ``data`` rather than encoding the data a second time.
    """
    if type(seq) is int and type(entry.time) is int:
        return f'{{"data":{data},"kind":{_compact(entry.kind)},"seq":{seq},"time":{entry.time}}}'
    return _compact({"seq": seq, "time": entry.time, "kind": entry.kind, "data": entry.data})


def chain(previous: str, seq: int, entry: AuditEntry) -> str:
    """The hash of entry ``seq`` that follows an entry hashed ``previous``."""
    return _digest(previous, canonical(seq, entry))


def _digest(previous: str, text: str) -> str:
    return hashlib.sha256((previous + text).encode("utf-8")).hexdigest()


def append_lines(
    tail: tuple[int, str], entries: Iterable[tuple[AuditEntry, str]]
) -> tuple[list[str], tuple[int, str]]:
    """Lines ``<hash> <canonical JSON>`` that continue a chain ending at ``tail``.

    ``tail`` is the last entry's ``(seq, hash)``, ``(0, GENESIS)`` for an empty
    chain; ``entries`` pairs each entry with its ``data_text``. Returns the
    lines and the new tail.
    """
    seq, previous = tail
    lines = []
    for entry, data in entries:
        seq += 1
        text = _canonical(seq, entry, data)
        previous = _digest(previous, text)
        lines.append(f"{previous} {text}")
    return lines, (seq, previous)


def rows_of_groups(
    groups: Iterable[tuple[int, str, str, str]],
) -> Iterator[tuple[Any, Any, Any, str, str, str]]:
    """The entries of stored groups ``(last, prev, hash, lines)``, as rows for ``verify``.

    A row is ``(seq, time, kind, data, prev, hash)`` with ``data`` as JSON
    text. A line that does not read as an entry gives a row that ``verify``
    reports as unreadable.
    """
    seq = 0
    for _, previous, _, lines in groups:
        for line in lines.split("\n"):
            digest, _, text = line.partition(" ")
            try:
                body = json.loads(text)
                seq, time, kind = body["seq"], body["time"], body["kind"]
                data = _compact(body["data"])
            except (ValueError, KeyError, TypeError):
                seq, time, kind, data = seq + 1, 0, "", text
            yield seq, time, kind, data, previous, digest
            previous = digest


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: how many entries hold, and the first broken one."""

    entries: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(rows: Iterable[tuple[int, int, str, str, str, str]]) -> Verdict:
    """Walk rows in ``seq`` order and report the first link that does not hold."""
    previous, expected_seq, count = GENESIS, 1, 0
    for seq, time, kind, data, prev, digest in rows:
        if seq != expected_seq:
            return Verdict(count, expected_seq, f"entry {expected_seq} is missing")
        if prev != previous:
            return Verdict(count, seq, f"entry {seq} does not follow entry {seq - 1}")
        try:
            entry = AuditEntry(time, kind, json.loads(data))
        except ValueError:
            return Verdict(count, seq, f"entry {seq} has unreadable data")
        if chain(previous, seq, entry) != digest:
            return Verdict(count, seq, f"entry {seq} was changed after it was written")
        previous, expected_seq, count = digest, seq + 1, count + 1
    return Verdict(count)


def verify_database(path: str | Path) -> Verdict:
    """Verify the audit log of the database at ``path`` (read only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        groups = conn.execute("SELECT last, prev, hash, lines FROM audit_log ORDER BY last")
        return verify(rows_of_groups(groups))
    finally:
        conn.close()
