r"""The audit log: every admin change, grant, release, denial and takeover, hash-chained.

Each entry carries the hash of the one before it, so an entry changed,
removed or inserted after the fact breaks the chain from there on.
``verify`` walks the chain and names the first broken link;
``licenseserver audit verify --data DIR`` runs it on a data directory.

    hash = SHA-256( UTF-8 of previous hash + canonical JSON of {seq, time, kind, data} )

written as 64 lowercase hex digits. The first entry's previous hash is
``GENESIS``. Entries live in the store's ``audit_log`` table, written in the
same transaction as the change they record: one row per transaction, holding
the hash before its entries (``prev``), the hash of its last (``hash``) and
its entries, one line each, ``<hash> <canonical JSON>``.

The canonical JSON is defined here, not by whatever ``json`` writes, because
``verify`` recomputes every hash from an entry's values: a log written years
ago must give the same bytes on any later Python. An entry's text is the
object ``{"data": D, "kind": K, "seq": S, "time": T}``, where ``seq`` and
``time`` are integers, ``kind`` is a string and ``data`` is an object,
written as follows.

- No white space outside strings: ``:`` between a key and its value, ``,``
  between members and between values.
- An object's keys are strings, each once, in increasing order of their
  Unicode code points (Python's order of ``str``; not UTF-16 order, so
  U+FFFF comes before U+1F600).
- An array's values are in their order.
- A string is between ``"``. ``"`` and ``\`` are written ``\"`` and ``\\``;
  U+0008, U+0009, U+000A, U+000C and U+000D are ``\b``, ``\t``, ``\n``,
  ``\f`` and ``\r``; every other character below U+0020 is ``\u00XX`` with
  lowercase hex digits. Every other character is written as itself, U+007F,
  U+2028, ``/`` and all non-ASCII included; there are no other escapes.
- An integer is in decimal, with ``-`` before a negative one and no ``+``,
  leading zero, fraction or exponent, whatever its size.
- ``true``, ``false`` and ``null``.

Nothing else is part of the form, and ``data_text`` refuses an entry that
holds anything else with ValueError, before the store's writer sees it:

- no floats, NaN or infinities: no entry has ever held a number that is
  not an integer (times, expiries and revisions are whole seconds and
  numbers), so none is given a spelling;
- no object keys other than strings: ``json`` would write ``{10: a, 9: b}``
  with its keys ordered as numbers, an order the same entry read back does
  not give;
- no string with a lone surrogate (U+D800 to U+DFFF on its own), which has
  no UTF-8 and so no hash.

Today ``json.JSONEncoder(sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` writes exactly this text for every
value of the form, so that is what makes it. ``tests/test_audit.py`` pins
the bytes and hashes of known entries and verifies a log written by an
earlier version (``tests/data/schema2-datadir.json``): should a later Python
write anything else, they fail, and this module needs an encoder of its own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """Something that happened: a stable ``kind`` and its details."""

    time: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


_encode = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # ``_check`` has walked the value already
).encode
"""The canonical JSON of a value that ``_check`` passed."""

_PLAIN = frozenset((str, int, bool, type(None)))


def _check(value: Any) -> None:
    """ValueError unless ``value`` is made only of what the canonical form holds."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"an object key that is not a string: {key!r}")
            if type(item) not in _PLAIN:
                _check(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if type(item) not in _PLAIN:
                _check(item)
    elif not isinstance(value, (str, int)) and value is not None:
        raise ValueError(f"a {type(value).__name__} has no canonical form: {value!r}")


def _canonical_value(value: Any) -> str:
    """The canonical JSON of any value; ValueError when it has none."""
    try:
        _check(value)
    except RecursionError:
        raise ValueError("the value nests too deep, or holds itself") from None
    text = _encode(value)
    text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return text


def data_text(entry: AuditEntry) -> str:
    """An entry's data as the canonical JSON its hash covers.

    ValueError when the entry is outside the canonical form: its time not an
    integer, its kind not a string, its data not an object or holding a
    value the form does not, a string with a lone surrogate.
    """
    if not isinstance(entry.time, int) or isinstance(entry.time, bool):
        raise ValueError(f"an audit entry's time must be an integer: {entry.time!r}")
    if not isinstance(entry.kind, str):
        raise ValueError(f"an audit entry's kind must be a string: {entry.kind!r}")
    entry.kind.encode("utf-8")
    if not isinstance(entry.data, dict):
        raise ValueError(f"an audit entry's data must be an object: {entry.data!r}")
    return _canonical_value(entry.data)


def canonical(seq: int, entry: AuditEntry) -> str:
    """The text an entry's hash covers: the canonical JSON of ``{seq, time, kind, data}``.

    ValueError when the entry is outside the canonical form.
    """
    return _canonical(seq, entry, data_text(entry))


def _canonical(seq: int, entry: AuditEntry, data: str) -> str:
    """``canonical`` of an entry that ``data_text`` passed, with its data text.

    The keys sort as data, kind, seq, time, so the text is put together
    around ``data`` rather than encoding the data a second time.
    """
    if type(seq) is int and type(entry.time) is int:
        return f'{{"data":{data},"kind":{_encode(entry.kind)},"seq":{seq},"time":{entry.time}}}'
    body = {"seq": seq, "time": entry.time, "kind": entry.kind, "data": entry.data}
    return _canonical_value(body)


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
                entry = body["seq"], body["time"], body["kind"], _canonical_value(body["data"])
                seq, time, kind, data = entry
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
        try:
            expected = chain(previous, seq, entry)
        except ValueError as e:  # a value no entry is written with
            return Verdict(count, seq, f"entry {seq} was changed after it was written: {e}")
        if expected != digest:
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
