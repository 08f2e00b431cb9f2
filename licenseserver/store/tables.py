"""Records as rows: JSON values, one ``TableSpec`` per record kind (``TABLES``), multi-row SQL.

Every record kind of ``model.KINDS`` has a real table with typed columns; the
``TABLES`` registry maps records to rows and back, so ``commit`` is generic
over kinds.

Most record tables are checkpoints, not the current state. The change log
holds every change as its row, which makes it the durable copy of the
checkpointed kinds (``TableSpec.checkpointed``: leases, licenses, products,
assignments, agreements, settings) until a checkpoint writes their rows to
their tables: a lease granted and released between two checkpoints costs no
table a write, and a store opened after a crash reads the rows its tables
still owe back from the log. A plain SELECT from a checkpointed table is
therefore stale until the next checkpoint: it misses what changed after
``meta.checkpoint`` and may still hold rows deleted since. Read records with
``load_records`` (on the store's connection) or ``read_snapshot`` (a data
directory, read only), which lay the change log's rows over the table's. The
kinds with unique columns (clients) are written to their tables at once, as
are the store's other tables (meta, local, events, change_log, audit_log).
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from licenseserver import model
from licenseserver.jsontext import compact_encoder

# ---------------------------------------------------------------------------
# JSON values


_encode_json = compact_encoder(allow_nan=False)


def to_json(value: Any) -> str:
    """Encode a JSON value compactly; ValueError when it is not one."""
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a JSON value: {value!r} ({e})") from e


def from_json(text: str) -> Any:
    """Decode what ``to_json`` wrote."""
    return json.loads(text)


# ---------------------------------------------------------------------------
# Mapping records to rows


def _same(value: Any) -> Any:
    return value


def _encode_bool(value: Any) -> int:
    return 1 if value else 0


def _decode_bool(value: Any) -> bool:
    return bool(value)


def _join_list(values: Any) -> str:
    """Join a list of names with commas; refuse names the join could not split back."""
    for item in values:
        if not isinstance(item, str) or not item or "," in item:
            raise ValueError(f"list items must be non-empty strings without commas: {item!r}")
    return ",".join(values)


def _split_list(text: str) -> list[str]:
    return text.split(",") if text else []


@dataclass(frozen=True)
class Column:
    """One column of a record table and how a field's value is stored in it."""

    name: str
    encode: Callable[[Any], Any] = _same
    decode: Callable[[Any], Any] = _same


def _boolean(name: str) -> Column:
    return Column(name, _encode_bool, _decode_bool)


def _text_list(name: str) -> Column:
    return Column(name, _join_list, _split_list)


def _json(name: str) -> Column:
    return Column(name, to_json, from_json)


@dataclass(frozen=True)
class TableSpec:
    """How records of one kind live in one table.

    ``columns`` name every field of the record, in table order; ``key`` the
    columns of the record's ``key`` (the primary key); ``unique`` further
    column groups that no two records of the kind may share.

    ``checkpointed``: the table is a checkpoint. A commit does not write this
    kind's rows to it; the change log is their durable copy, the writer holds
    them owed, and the next checkpoint writes them (see ``writer``), so that a
    lease granted and released between two checkpoints never costs its table
    a write. A plain SELECT from the table is stale until that checkpoint:
    ``load_records`` and ``read_snapshot`` are the way to read the kind. A
    kind with unique columns cannot be checkpointed: only the table can tell
    that two of its rows clash, and a commit must be refused then, not later.
    """

    kind: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    checkpointed: bool = False

    def __post_init__(self) -> None:
        if self.checkpointed and self.unique:
            raise ValueError(f"{self.table} has unique columns: it cannot be a checkpoint")

    def to_row(self, record: Any) -> tuple:
        """The row that stores ``record``; ValueError when a value cannot be stored."""
        values = self._fields(record)
        if not self._encoded:
            return values
        row = list(values)
        for index, encode in self._encoded:
            row[index] = encode(row[index])
        return tuple(row)

    @cached_property
    def _fields(self) -> Callable[[Any], tuple]:
        """Gets the columns' fields of a record, as a tuple, in one call."""
        getter = operator.attrgetter(*(c.name for c in self.columns))
        return getter if len(self.columns) > 1 else lambda record: (getter(record),)

    @cached_property
    def _encoded(self) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        """The columns whose values are encoded to be stored, by position."""
        return tuple((i, c.encode) for i, c in enumerate(self.columns) if c.encode is not _same)

    def padded(self, row: Sequence) -> tuple:
        """``row`` with NULL for the columns added after it was written (an older
        change-log line); ValueError for a row longer than the table."""
        if len(row) > len(self.columns):
            raise ValueError(f"a {self.kind} row of {len(row)} values for {len(self.columns)}")
        return tuple(row) + (None,) * (len(self.columns) - len(row))

    def from_row(self, row: Sequence) -> Any:
        """The record that ``row`` stores.

        A row shorter than the columns was written before the last columns were
        added (a change-log line of an older schema): the missing fields take
        their defaults. A longer one is an error.
        """
        data = {
            c.name: c.decode(value)
            for c, value in zip(self.columns, self.padded(row), strict=True)
        }
        return model.record_from_dict(self.kind, data)

    @cached_property
    def keyOf(self) -> Callable[[Sequence], tuple]:
        """The key of a row: its key columns' values, as a tuple."""
        positions = self.indexes(self.key)
        return lambda row: tuple(row[i] for i in positions)

    def indexes(self, names: Iterable[str]) -> tuple[int, ...]:
        """Positions of the named columns in a row."""
        order = [c.name for c in self.columns]
        return tuple(order.index(name) for name in names)

    @cached_property
    def _names(self) -> str:
        return ", ".join(c.name for c in self.columns)

    @cached_property
    def upsertSQL(self) -> str:
        return self.upsertRowsSQL(1)

    @cached_property
    def _onConflict(self) -> str:
        keys = ", ".join(self.key)
        others = [c.name for c in self.columns if c.name not in self.key]
        if others:
            sets = ", ".join(f"{name} = excluded.{name}" for name in others)
            return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        return f"ON CONFLICT ({keys}) DO NOTHING"

    @cached_property
    def deleteSQL(self) -> str:
        where = " AND ".join(f"{name} = ?" for name in self.key)
        return f"DELETE FROM {self.table} WHERE {where}"

    def upsertRowsSQL(self, count: int) -> str:
        """Insert or replace ``count`` rows in one statement."""
        marks = _marks(len(self.columns), count)
        return f"INSERT INTO {self.table} ({self._names}) VALUES {marks} {self._onConflict}"

    def deleteRowsSQL(self, count: int) -> str:
        """``deleteSQL`` for ``count`` keys in one statement."""
        keys = ", ".join(self.key)
        return (
            f"DELETE FROM {self.table} WHERE ({keys}) IN (VALUES {_marks(len(self.key), count)})"
        )

    @cached_property
    def selectSQL(self) -> str:
        """Every row of the table: for a checkpointed kind, as of the last checkpoint only."""
        return f"SELECT {self._names} FROM {self.table} ORDER BY {', '.join(self.key)}"

    @cached_property
    def clearSQL(self) -> str:
        return f"DELETE FROM {self.table}"


@functools.cache
def _marks(width: int, count: int) -> str:
    """``count`` rows of ``width`` parameters: ``(?, ?), (?, ?)``."""
    row = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([row] * count)


ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)
"""The row counts of the multi-row statements ``execute_rows`` uses, largest first."""


def execute_rows(conn: sqlite3.Connection, sql: Callable[[int], str], rows: Sequence) -> None:
    """Write ``rows`` with as few statements ``sql(count)`` as ``ROWS_PER_STATEMENT`` allow.

    One statement is one step of SQLite, and Python's sqlite3 lets go of the
    GIL around each step: ``executemany`` of a batch's rows hands the GIL
    back and forth with the reactor thread once per row, a multi-row
    statement once per statement. The few fixed sizes keep the statements
    in the connection's cache.
    """
    start, total = 0, len(rows)
    for count in ROWS_PER_STATEMENT:
        while total - start >= count:
            chunk = rows[start : start + count]
            conn.execute(sql(count), [value for row in chunk for value in row])
            start += count


def _columns(*names: str | Column) -> tuple[Column, ...]:
    return tuple(Column(n) if isinstance(n, str) else n for n in names)


# ``checkpointed=True``: the table is a checkpoint, behind the change log until the next
# one; a plain SELECT from it is stale (read with load_records or read_snapshot).
_SPECS = (
    TableSpec(
        "license",
        "licenses",
        _columns(
            "id",
            "product",
            "edition",
            "kind",
            "seats",
            "cores",
            "licensee",
            "issued",
            "starts",
            "expires",
            "max_version",
            "key_id",
            "signature",
            _boolean("active"),
            "added",
            "failover_policy",
            "failover_share",
        ),
        key=("id",),
        checkpointed=True,
    ),
    TableSpec(
        "client",
        "clients",
        _columns("id", "machine", "host", "registered", "last_seen"),
        key=("id",),
        unique=(("machine",),),
    ),
    TableSpec(
        "product",
        "products",
        _columns("client", "product", "version", "user", "cores", "last_seen"),
        key=("client", "product"),
        checkpointed=True,
    ),
    TableSpec(
        "assignment",
        "assignments",
        _columns("client", "product", "license"),
        key=("client", "product", "license"),
        checkpointed=True,
    ),
    TableSpec(
        "agreement",
        "agreements",
        _columns("license", "accepted_by", "accepted"),
        key=("license",),
        checkpointed=True,
    ),
    TableSpec(
        "lease",
        "leases",
        _columns(
            "id",
            "client",
            "machine",
            "user",
            "product",
            "version",
            _text_list("licenses"),
            "kind",
            "granted",
            "expires",
            "ttl",
            _boolean("borrowed"),
            "request",
            _boolean("revoked"),
        ),
        key=("id",),
        checkpointed=True,
    ),
    TableSpec(
        "setting",
        "settings",
        _columns("name", _json("value")),
        key=("name",),
        checkpointed=True,
    ),
)

TABLES: dict[str, TableSpec] = {spec.kind: spec for spec in _SPECS}
"""kind -> TableSpec, for every kind of ``model.KINDS`` (all but ``client`` checkpointed)."""
