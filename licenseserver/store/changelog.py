"""The change log's format (``log_line``), and commits checked and encoded for the writer.

What a commit writes (schema 2): its changes' rows, one change-log line per
change, its audit entries' JSON. ``prepare_commit`` does all of that on the
caller's thread, so that the writer thread has only SQL left to run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from licenseserver import audit, model
from licenseserver.jsontext import compact_encoder
from licenseserver.store.checks import check_change, check_revision
from licenseserver.store.tables import TABLES, TableSpec

_encode_row = compact_encoder(ensure_ascii=False, allow_nan=False)
"""Rows and keys of the change log as compact JSON arrays."""


def log_line(revision: int, kind: str, key: tuple, row: tuple | None) -> str:
    """One change of the change log, a line of four fields separated by tabs.

    ``<revision> <kind> <key as a JSON array> <row as a JSON array, or null for a
    deletion>``. The row is the one the kind's table holds (``TableSpec.to_row``):
    the log speaks the tables' language, so a line goes back into its table as
    it is, and a migration that changes a table changes its log lines with it.
    Compact JSON never holds a raw tab or newline, so the fields and lines need
    no other escaping.
    """
    encoded = "null" if row is None else _encode_row(row)
    return f"{revision}\t{kind}\t{_encode_row(key)}\t{encoded}"


def parse_log_line(line: str) -> tuple[int, str, tuple, tuple | None]:
    """``(revision, kind, key, row or None)`` of a ``log_line``; ValueError when malformed."""
    try:
        revision, kind, key, row = line.split("\t")
        values = None if row == "null" else tuple(json.loads(row))
        return int(revision), kind, tuple(json.loads(key)), values
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a change-log line: {line[:80]!r}") from e


def _logged_table(kind: str) -> TableSpec:
    """The table of a kind named in the change log; ValueError for an unknown kind."""
    spec = TABLES.get(kind)
    if spec is None:
        raise ValueError(f"unknown record kind {kind!r} in the change log")
    return spec


def decode_log_line(line: str) -> tuple[int, model.Change]:
    """The revision and the change that ``log_line`` wrote."""
    revision, kind, key, row = parse_log_line(line)
    spec = _logged_table(kind)
    record = None if row is None else spec.from_row(row)
    return revision, model.Change(kind, key, record)


class PreparedWrite(NamedTuple):
    """A commit (or audit entries alone) checked and encoded, ready for the writer.

    ``writes`` holds one ``(spec, key, row or None)`` per change, in order;
    ``lines`` their change-log lines; ``entries`` each audit entry with its
    data as compact JSON. ``revision`` is None for audit entries alone.
    """

    revision: int | None
    writes: tuple[tuple[TableSpec, tuple, tuple | None], ...]
    lines: tuple[str, ...]
    entries: tuple[tuple[audit.AuditEntry, str], ...]


def prepare_commit(
    revision: Any, changes: Iterable[model.Change], entries: Iterable = ()
) -> PreparedWrite:
    """Check and encode a commit on the caller's thread; ValueError when it is malformed.

    Everything a change can be refused for, short of a clash with other rows
    (``ConflictError``, which only the table can tell) or a revision not after
    the stored one, is found here: an unknown kind, a key that does not fit,
    a record of the wrong kind, a value that cannot be stored, audit data that
    is not JSON. Nothing is written for a commit refused here.
    """
    revision = check_revision(revision)
    writes = []
    lines = []
    for change in changes:
        spec = check_change(change)
        key = tuple(change.key)
        row = None if change.record is None else spec.to_row(change.record)
        try:
            lines.append(log_line(revision, spec.kind, key, row))
        except TypeError as e:
            raise ValueError(f"cannot store {spec.kind} {list(key)}: {e}") from e
        writes.append((spec, key, row))
    return PreparedWrite(revision, tuple(writes), tuple(lines), prepare_entries(entries))


def prepare_entries(entries: Iterable) -> tuple[tuple[audit.AuditEntry, str], ...]:
    """Audit entries with their data as the compact JSON their hash covers."""
    prepared = []
    for entry in entries:
        if not isinstance(entry, audit.AuditEntry):
            raise ValueError(f"not an audit entry: {entry!r}")
        try:
            prepared.append((entry, audit.data_text(entry)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"audit data is not JSON: {e}") from e
    return tuple(prepared)
