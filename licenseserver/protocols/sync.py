"""The sync encoding: how the primary sends its pool to the failover, one record a line.

A ``SYNC since=<r>`` request gets one response made of a header line and the
number of record lines it announces::

    OK mode=changes revision=<R> lines=<K>      (or mode=snapshot)
    PUT {"rev":12,"kind":"lease","record":{...}}
    DEL {"rev":13,"kind":"lease","key":["l-..."]}

``mode=changes`` carries every change after ``r`` up to ``R``, in revision
order: the failover applies each revision's changes as one step.
``mode=snapshot`` carries every record at revision ``R`` (all ``PUT``): the
failover replaces what it holds with them. Record lines are compact JSON,
which never contains a raw newline, so they need no other escaping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from licenseserver.model import KINDS, Change, Snapshot, record_from_dict, record_to_dict

CHANGES = "changes"
SNAPSHOT = "snapshot"


class SyncFormatError(ValueError):
    """A record line that does not decode."""


def encode_change(revision: int, change: Change) -> bytes:
    """One change as a record line, LF included."""
    if change.record is None:
        verb, body = "DEL", {"rev": revision, "kind": change.kind, "key": list(change.key)}
    else:
        verb = "PUT"
        body = {"rev": revision, "kind": change.kind, "record": record_to_dict(change.record)}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"{verb} {text}\n".encode()


def encode_changes(changes: Iterable[tuple[int, list[Change]]]) -> list[bytes]:
    """Record lines of ``[(revision, [Change, ...]), ...]``."""
    return [encode_change(rev, change) for rev, group in changes for change in group]


def encode_snapshot(snapshot: Snapshot) -> list[bytes]:
    """Record lines of every record of ``snapshot``."""
    return [encode_change(snapshot.revision, Change.put(r)) for r in snapshot.all()]


def decode_line(line: bytes) -> tuple[int, Change]:
    """A record line (without its LF) as (revision, change)."""
    verb, _, text = line.partition(b" ")
    try:
        body = json.loads(text)
        revision = body["rev"]
        kind = body["kind"]
        if not isinstance(revision, int) or kind not in KINDS:
            raise ValueError(f"bad revision or kind {kind!r}")
        if verb == b"PUT":
            record = record_from_dict(kind, body["record"])
            return revision, Change.put(record)
        if verb == b"DEL":
            return revision, Change(kind, tuple(str(k) for k in body["key"]), None)
    except (ValueError, KeyError, TypeError) as e:
        raise SyncFormatError(f"bad record line: {e}") from None
    raise SyncFormatError(f"bad record line verb {verb[:10]!r}")


def group_changes(lines: Iterable[bytes]) -> Iterator[tuple[int, list[Change]]]:
    """Decode ``mode=changes`` record lines into one group per revision."""
    current: int | None = None
    group: list[Change] = []
    for line in lines:
        revision, change = decode_line(line)
        if current is not None and revision != current:
            yield current, group
            group = []
        current = revision
        group.append(change)
    if current is not None:
        yield current, group


def decode_snapshot(revision: int, lines: Iterable[bytes]) -> Snapshot:
    """Decode ``mode=snapshot`` record lines into a Snapshot at ``revision``."""
    records: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for line in lines:
        _, change = decode_line(line)
        if change.record is None:
            raise SyncFormatError("a snapshot holds no deletions")
        records[change.kind].append(change.record)
    return Snapshot(revision, records)
