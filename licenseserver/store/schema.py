"""The database's schema and its migrations; connecting, checking and opening the database.

The schema version lives in ``PRAGMA user_version`` and moves forward only
through ``MIGRATIONS``, run by ``licenseserver upgrade``: a server never
migrates a database silently. ``meta`` holds the store's ``revision``, where the
change log starts (``log_start``) and ``checkpoint``, the revision up to which
the checkpointed tables (``TableSpec.checkpointed``) hold every change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from licenseserver.store import usagejobs
from licenseserver.store.errors import SchemaError, StoreError, translate_error

DATABASE_NAME = "licenseserver.sqlite3"
"""The database file's name inside the data directory."""


Migration = tuple[int, Callable[[sqlite3.Connection], None]]

_SCHEMA_1 = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE local (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE changes (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        record TEXT,
        PRIMARY KEY (revision, seq)
    )""",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    """CREATE TABLE licenses (
        id TEXT PRIMARY KEY,
        product TEXT NOT NULL,
        edition TEXT NOT NULL,
        kind TEXT NOT NULL,
        seats INTEGER NOT NULL,
        cores INTEGER NOT NULL,
        licensee TEXT NOT NULL,
        issued TEXT NOT NULL,
        starts TEXT,
        expires TEXT,
        max_version TEXT,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        active INTEGER NOT NULL,
        added INTEGER NOT NULL
    )""",
    """CREATE TABLE clients (
        id TEXT PRIMARY KEY,
        machine TEXT NOT NULL,
        host TEXT NOT NULL,
        registered INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    )""",
    "CREATE UNIQUE INDEX clients_machine ON clients (machine)",
    """CREATE TABLE products (
        client TEXT NOT NULL,
        product TEXT NOT NULL,
        version TEXT NOT NULL,
        user TEXT NOT NULL,
        cores INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (client, product)
    )""",
    """CREATE TABLE assignments (
        client TEXT NOT NULL,
        product TEXT NOT NULL,
        license TEXT NOT NULL,
        PRIMARY KEY (client, product, license)
    )""",
    """CREATE TABLE agreements (
        license TEXT PRIMARY KEY,
        accepted_by TEXT NOT NULL,
        accepted INTEGER NOT NULL
    )""",
    """CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        machine TEXT NOT NULL,
        user TEXT NOT NULL,
        product TEXT NOT NULL,
        version TEXT NOT NULL,
        licenses TEXT NOT NULL,
        kind TEXT NOT NULL,
        granted INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        ttl INTEGER NOT NULL,
        borrowed INTEGER NOT NULL,
        request TEXT NOT NULL
    )""",
    "CREATE INDEX leases_product ON leases (product)",
    "CREATE INDEX leases_machine ON leases (machine)",
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "INSERT INTO meta (name, value) VALUES ('revision', '0'), ('log_start', '0')",
)


def _schema_1(conn: sqlite3.Connection) -> None:
    """The first schema: record tables, change log, events, local values, meta."""
    for statement in _SCHEMA_1:
        conn.execute(statement)


_SCHEMA_2 = (
    """CREATE TABLE change_log (
        last INTEGER PRIMARY KEY,
        lines TEXT NOT NULL
    )""",
    """CREATE TABLE audit_log (
        last INTEGER PRIMARY KEY,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL,
        lines TEXT NOT NULL
    )""",
)

_MIGRATED_GROUP = 1000
"""Most audit entries one group of the migrated chain holds."""


def _schema_2(conn: sqlite3.Connection) -> None:
    """The change log and the audit chain as one row per write transaction.

    A row of ``change_log`` holds the changes of the revisions up to ``last``
    that one transaction wrote, a ``log_line`` each; a row of ``audit_log``
    the entries up to sequence number ``last``, each as ``<hash> <canonical
    JSON>``, with the hash before them (``prev``) and their last (``hash``).
    One row per transaction instead of one per change and per entry is what
    makes a busy server's transactions cheap. ``meta`` gains ``checkpoint``:
    the revision up to which the record tables hold every change (the kinds
    without unique columns reach their tables only at checkpoints).

    The audit chain moves over entry for entry, starting a new group wherever
    an entry's stored ``prev`` does not follow the entry before it, so that a
    verification finds after the migration what it found before. The change
    log is not carried over: it restarts at the current revision, which costs a
    failover that is further behind one full sync. The step depends on nothing
    that later versions may change.
    """
    for statement in _SCHEMA_2:
        conn.execute(statement)
    group: list[str] = []
    start = last_hash = ""
    last_seq = 0

    def flush() -> None:
        if group:
            conn.execute(
                "INSERT INTO audit_log (last, prev, hash, lines) VALUES (?, ?, ?, ?)",
                (last_seq, start, last_hash, "\n".join(group)),
            )
            group.clear()

    rows = conn.execute("SELECT seq, time, kind, data, prev, hash FROM audit ORDER BY seq")
    for seq, time_, kind, data, prev, digest in rows:
        try:
            text = json.dumps(
                {"seq": seq, "time": time_, "kind": kind, "data": json.loads(data)},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
        except ValueError:
            text = f"{{unreadable data of entry {seq}: {data}"  # verification says so
        if group and (prev != last_hash or len(group) >= _MIGRATED_GROUP):
            flush()
        if not group:
            start = prev
        # One entry, one line: only a newline can break it (the canonical text has none;
        # unreadable data might). str.splitlines would also split at U+2028 and others.
        line = text.replace("\n", " ")
        group.append(f"{digest} {line}")
        last_seq, last_hash = seq, digest
    flush()
    conn.execute("DROP TABLE audit")
    conn.execute("DROP TABLE changes")
    revision = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
    conn.execute("UPDATE meta SET value = ? WHERE name = 'log_start'", (revision,))
    conn.execute("INSERT INTO meta (name, value) VALUES ('checkpoint', ?)", (revision,))


def _schema_3(conn: sqlite3.Connection) -> None:
    """Licenses gain the optional signed terms ``failover_policy`` and ``failover_share``
    (FAILOVER.md rule 15), NULL for the licenses already in the pool (the vendor left
    them to the server's settings). Change-log lines written before keep their shorter
    rows; ``TableSpec.from_row`` reads those with the new fields at their defaults."""
    conn.execute("ALTER TABLE licenses ADD COLUMN failover_policy TEXT")
    conn.execute("ALTER TABLE licenses ADD COLUMN failover_share TEXT")


def _schema_4(conn: sqlite3.Connection) -> None:
    """Leases gain ``revoked`` (an admin ended the lease, ``DELETE /api/leases/{id}``), NULL
    (not revoked) for the leases already stored and for rows of older change-log lines."""
    conn.execute("ALTER TABLE leases ADD COLUMN revoked INTEGER")


def _schema_5(conn: sqlite3.Connection) -> None:
    """The usage history (``usage``: seats in use and refused requests per license, by the
    minute, hour and day) and the refused requests one by one (``denials``)."""
    usagejobs.create_tables(conn)


MIGRATIONS: list[Migration] = [
    (1, _schema_1),
    (2, _schema_2),
    (3, _schema_3),
    (4, _schema_4),
    (5, _schema_5),
]
"""Ordered ``(version, step)``: ``step(conn)`` takes a database from the
previous version to ``version``. Append; never edit a step once released."""

SCHEMA_VERSION = 5
"""The schema this server runs: the last version of ``MIGRATIONS``."""


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The version that ``migrations`` end at."""
    return migrations[-1][0] if migrations else 0


def database_path(data_dir: Path | str) -> Path:
    """The database file of a data directory."""
    return Path(data_dir) / DATABASE_NAME


def _schema_message(path: Path, version: int, needed: int) -> str:
    data_dir = path.parent
    if version > needed:
        return (
            f"data directory {data_dir} is at schema {version}, newer than this "
            f"server's schema {needed}: run the newer server, or restore a backup"
        )
    return (
        f"data directory {data_dir} is at schema {version}, this server needs "
        f"{needed}: run `licenseserver upgrade --data {data_dir}`"
    )


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0


def schema_version(conn: sqlite3.Connection, path: Path | str = "database") -> int:
    """The schema version of an open database, 0 for an empty one.

    SchemaError for a database with tables but no version: not ours.
    """
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and _has_tables(conn):
            raise SchemaError(f"{path} is not a licenseserver database")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    return version


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Run every step of ``migrations`` that the database lacks; return its version.

    Each step runs in its own transaction together with its version bump, so
    a failing step leaves the database at the previous version. ``conn``
    must be in autocommit mode (``isolation_level=None``).
    """
    if conn.isolation_level is not None:
        raise ValueError("migrate needs a connection with isolation_level=None")
    current = schema_version(conn)
    latest = latest_version(migrations)
    if current > latest:
        raise SchemaError(f"the database is at schema {current}, newer than {latest}")
    for version, step in migrations:
        if version > current:
            _run_step(conn, version, step)
            current = version
    return current


def _run_step(conn: sqlite3.Connection, version: int, step: Callable) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        step(conn)
        conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path | str, *, create: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode to the database at ``path``.

    Without ``create`` a missing file is an error rather than a new empty
    database. The directory must exist: the data directory is made by the
    server's setup, and a missing one is a mistake to report, not to paper
    over.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise StoreError(f"data directory {path.parent} does not exist")
    mode = "rwc" if create else "rw"
    try:
        return sqlite3.connect(
            f"{path.absolute().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            timeout=10.0,
            cached_statements=256,
        )
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from e


def check_database(path: Path | str) -> int:
    """The schema version of the database at ``path``; 0 when there is none.

    Synchronous, for use before the reactor runs. Leaves the files as they
    were. SchemaError when the file holds a database that is not ours.
    """
    path = Path(path)
    if not path.exists():
        return 0
    conn = connect(path)
    try:
        return schema_version(conn, path)
    finally:
        conn.close()


def require_current_schema(path: Path | str, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """``check_database``, and SchemaError unless the server can open the file as is."""
    path = Path(path)
    version = check_database(path)
    needed = latest_version(migrations)
    if version not in (0, needed):
        raise SchemaError(_schema_message(path, version, needed))
    return version


def open_database(
    path: Path | str, migrations: Sequence[Migration] = MIGRATIONS
) -> sqlite3.Connection:
    """Open the store's database, creating it at the latest schema when new.

    Refuses (SchemaError) a database at any other schema: upgrades are an
    explicit step. Turns on WAL mode and full syncs; fails when WAL does not
    take (some network file systems).
    """
    path = Path(path)
    conn = connect(path, create=True)
    try:
        version = schema_version(conn, path)
        needed = latest_version(migrations)
        if version not in (0, needed):
            raise SchemaError(_schema_message(path, version, needed))
        _configure(conn, path)
        if version == 0:
            migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
    except sqlite3.Error as e:
        raise translate_error(e, path) from e
    if str(mode).lower() != "wal":
        raise StoreError(
            f"cannot put {path} in WAL mode (journal mode stays {mode}); "
            "the file system may not support it"
        )
