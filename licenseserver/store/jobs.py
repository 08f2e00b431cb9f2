"""What the writer thread runs on its connection: the SQL of writes, reads and the store's jobs.

The helpers here write rows, change-log rows, audit rows and ``meta`` values
inside a transaction that the writer (``writer.SQLiteStore``) holds; the
``*_job`` functions are the bodies of ``ILicenseStore`` calls. ``load_records``
and ``read_snapshot`` are the readers of the records: they lay the rows that
the checkpointed tables still owe, read back from the change log, over the
tables' rows.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from licenseserver import audit, model
from licenseserver.store.changelog import _logged_table, decode_log_line, parse_log_line
from licenseserver.store.checks import (
    check_change,
    check_event,
    check_local_name,
    check_revision,
    conflict_error,
)
from licenseserver.store.tables import TABLES, TableSpec, execute_rows, from_json, to_json


def _meta_int(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


def _set_meta(conn: sqlite3.Connection, name: str, value: int) -> None:
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )


def _write_row(conn: sqlite3.Connection, spec: TableSpec, key: tuple, row: tuple | None) -> None:
    """Put (or with None, delete) one row; ConflictError when it clashes with another."""
    if row is None:
        conn.execute(spec.deleteSQL, key)
        return
    try:
        conn.execute(spec.upsertSQL, row)
    except sqlite3.IntegrityError as e:
        raise conflict_error(spec, key) from e


def _write_rows(conn: sqlite3.Connection, owed: dict[str, dict[tuple, tuple | None]]) -> None:
    """Bring the tables up to ``owed`` (kind -> key -> row, None for gone) in a few statements."""
    for kind, rows in owed.items():
        spec = TABLES[kind]
        execute_rows(conn, spec.deleteRowsSQL, [key for key, row in rows.items() if row is None])
        execute_rows(conn, spec.upsertRowsSQL, [row for row in rows.values() if row is not None])


def _insert_log(conn: sqlite3.Connection, last: int, lines: Sequence[str]) -> None:
    """One row of the change log: the lines of the revisions up to ``last``."""
    conn.execute("INSERT INTO change_log (last, lines) VALUES (?, ?)", (last, "\n".join(lines)))


def _audit_tail(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, hash)`` of the audit chain's last entry; ``(0, GENESIS)`` when it is empty."""
    row = conn.execute("SELECT last, hash FROM audit_log ORDER BY last DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, audit.GENESIS)


def _append_audit(
    conn: sqlite3.Connection, tail: tuple[int, str], entries: Sequence
) -> tuple[int, str]:
    """Append prepared entries after ``tail`` as one row; return the chain's new tail."""
    if not entries:
        return tail
    lines, new_tail = audit.append_lines(tail, entries)
    conn.execute(
        "INSERT INTO audit_log (last, prev, hash, lines) VALUES (?, ?, ?, ?)",
        (new_tail[0], tail[1], new_tail[1], "\n".join(lines)),
    )
    return new_tail


def _log_rows(conn: sqlite3.Connection, after: int) -> Iterable[str]:
    """Every change-log line of the rows that end after revision ``after``, in order."""
    rows = conn.execute("SELECT lines FROM change_log WHERE last > ? ORDER BY last", (after,))
    for (lines,) in rows:
        yield from lines.split("\n")


def owed_since(conn: sqlite3.Connection, checkpoint: int) -> dict[str, dict[tuple, tuple | None]]:
    """What the checkpointed tables (``TableSpec.checkpointed``) owe after ``checkpoint``.

    Read from the change log: for each such kind, the last row of every key
    changed since (None for a key deleted). ValueError for a log that does
    not read.
    """
    owed: dict[str, dict[tuple, tuple | None]] = {}
    for line in _log_rows(conn, checkpoint):
        revision, kind, key, row = parse_log_line(line)
        spec = _logged_table(kind)
        if revision > checkpoint and spec.checkpointed:
            owed.setdefault(kind, {})[key] = None if row is None else spec.padded(row)
    return owed


def load_records(
    conn: sqlite3.Connection, owed: dict[str, dict[tuple, tuple | None]]
) -> model.Snapshot:
    """Every record: the tables' rows with what they still ``owe`` laid over them.

    This, or ``read_snapshot``, is how to read records: a checkpointed table
    alone is stale until the next checkpoint.
    """
    records = {}
    for kind, spec in TABLES.items():
        rows: Iterable[Sequence] = conn.execute(spec.selectSQL)
        changed = owed.get(kind)
        if changed:
            by_key = {spec.keyOf(row): row for row in rows}
            for key, row in changed.items():
                if row is None:
                    by_key.pop(key, None)
                else:
                    by_key[key] = row
            rows = [by_key[key] for key in sorted(by_key)]
        records[kind] = [spec.from_row(row) for row in rows]
    return model.Snapshot(_meta_int(conn, "revision"), records)


def read_snapshot(path: Path | str) -> model.Snapshot:
    """Every record of the database at ``path``, as a server would load it; read only.

    For tools that look into a data directory the server is not running on,
    such as one it was killed on: the change log fills in what the tables do
    not hold yet.
    """
    conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")
        return load_records(conn, owed_since(conn, _meta_int(conn, "checkpoint")))
    finally:
        conn.close()


def _changes_since_job(conn: sqlite3.Connection, revision: Any) -> list | None:
    revision = check_revision(revision, minimum=None)
    current = _meta_int(conn, "revision")
    if revision > current or revision < _meta_int(conn, "log_start"):
        return None
    result: list[tuple[int, list]] = []
    for line in _log_rows(conn, revision):
        if int(line.partition("\t")[0]) <= revision:
            continue  # a row holds a transaction's revisions: its first may be older
        rev, change = decode_log_line(line)
        if not result or result[-1][0] != rev:
            result.append((rev, []))
        result[-1][1].append(change)
    return result


def _replace_all_job(conn: sqlite3.Connection, snapshot: model.Snapshot) -> None:
    revision = check_revision(snapshot.revision)
    rows = []
    for kind, records in snapshot.records.items():
        for record in records:
            key = getattr(record, "key", ())
            spec = check_change(model.Change(kind, key, record))
            rows.append((spec, tuple(key), spec.to_row(record)))
    for spec in TABLES.values():
        conn.execute(spec.clearSQL)
    for spec, key, row in rows:
        _write_row(conn, spec, key, row)
    conn.execute("DELETE FROM change_log")
    for name in ("revision", "log_start", "checkpoint"):
        _set_meta(conn, name, revision)


def _trim_job(conn: sqlite3.Connection, cutoff: int) -> int:
    """Drop the change-log rows that end at ``cutoff`` or before; the log's new start."""
    start = _meta_int(conn, "log_start")
    query = "SELECT max(last) FROM change_log WHERE last <= ?"
    found = conn.execute(query, (cutoff,)).fetchone()[0]
    if found is not None and found > start:
        conn.execute("DELETE FROM change_log WHERE last <= ?", (found,))
        _set_meta(conn, "log_start", found)
        return found
    return start


def _add_event_job(conn: sqlite3.Connection, event: model.Event) -> model.Event:
    check_event(event)
    cursor = conn.execute(
        "INSERT INTO events (time, kind, severity, message, data) VALUES (?, ?, ?, ?, ?)",
        (event.time, event.kind, event.severity, event.message, to_json(event.data)),
    )
    return dataclasses.replace(event, id=cursor.lastrowid)


def _events_job(conn: sqlite3.Connection, limit: int) -> list[model.Event]:
    if limit <= 0:
        return []
    rows = conn.execute(
        "SELECT id, time, kind, severity, message, data FROM events ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        model.Event(time, kind, severity, message, from_json(data), id)
        for id, time, kind, severity, message, data in rows
    ]


def _get_local_job(conn: sqlite3.Connection, name: Any) -> Any:
    row = conn.execute(
        "SELECT value FROM local WHERE name = ?", (check_local_name(name),)
    ).fetchone()
    return None if row is None else from_json(row[0])


FAMILY_END = ":"
"""How the name of a family of local values ends."""


def _get_locals_job(conn: sqlite3.Connection, prefix: str) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT name, value FROM local WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
    )
    return {name: from_json(value) for name, value in rows}


def set_local(conn: sqlite3.Connection, name: Any, value: Any) -> None:
    """Set (or with None, remove) a local value on an open connection."""
    write_local(conn, check_local_name(name), local_text(name, value))


def local_text(name: str, value: Any) -> str | None:
    """The JSON text of local value ``value`` (None removes it); ValueError for a value
    given to a family's name, or one that is not JSON."""
    if value is None:
        return None
    if name.endswith(FAMILY_END):
        raise ValueError(f"{name!r} names a family of local values: it can only be removed")
    return to_json(value)


def write_local(conn: sqlite3.Connection, name: str, text: str | None) -> None:
    """Set a checked local name to its JSON ``text``, or remove it (None).

    A name that ends in ``:`` names a family of values (``localstate.REMOVED``): None
    removes every value whose name starts with it (``local_text`` gives a family no
    value of its own).
    """
    if text is None:
        if name.endswith(FAMILY_END):
            conn.execute("DELETE FROM local WHERE substr(name, 1, ?) = ?", (len(name), name))
        else:
            conn.execute("DELETE FROM local WHERE name = ?", (name,))
        return
    conn.execute(
        "INSERT INTO local (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, text),
    )
