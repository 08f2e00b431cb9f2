"""SQLite storage of the license pool behind ``ILicenseStore``: records, revision, change log.

The server keeps the pool in memory on the reactor thread and writes every
change through this store; it answers a client only once the store's Deferred
has fired, so a Deferred fires only after its write is durable (WAL mode,
``synchronous=FULL``).

Its modules, each built on those above it:

- ``errors``: the store's exceptions, and SQLite's errors made readable.
- ``tables``: records as rows, one ``TableSpec`` per kind (``TABLES``). Most
  tables, the lease table above all, are checkpoints (``TableSpec.checkpointed``):
  a plain SELECT from them is stale; ``load_records``/``read_snapshot`` read them.
- ``checks``: the checks that the fake store (``testing.FakeStore``) shares.
- ``changelog``: the change log's line format; commits checked and encoded.
- ``schema``: the schema and its migrations; opening and checking the database.
- ``jobs``: the SQL that the writer thread runs on its connection; the readers.
- ``writer``: the writer thread (group commit, checkpoints, trims) and ``SQLiteStore``.

Everything the server, the tools, the tests and the benchmarks use is named
here, as ``store.X``; so are the few internals they reach (``store._Job``, and
the ``store._meta_int``, ``_set_meta``, ``_insert_log`` and ``_write_rows`` that
``bench/request_path.py`` runs to measure the writer's SQL).
"""

from licenseserver.store.changelog import (
    PreparedWrite,
    decode_log_line,
    log_line,
    parse_log_line,
    prepare_commit,
    prepare_entries,
)
from licenseserver.store.checks import (
    check_change,
    check_event,
    check_local_name,
    check_newer,
    check_revision,
    conflict_error,
)
from licenseserver.store.errors import (
    ConflictError,
    SchemaError,
    StoreClosedError,
    StoreError,
    StoreWriteError,
    translate_error,
)
from licenseserver.store.jobs import _insert_log as _insert_log
from licenseserver.store.jobs import _meta_int as _meta_int
from licenseserver.store.jobs import _set_meta as _set_meta
from licenseserver.store.jobs import _write_rows as _write_rows
from licenseserver.store.jobs import (
    load_records,
    owed_since,
    read_snapshot,
    set_local,
)
from licenseserver.store.schema import (
    DATABASE_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    check_database,
    connect,
    database_path,
    latest_version,
    migrate,
    open_database,
    require_current_schema,
    schema_version,
)
from licenseserver.store.tables import (
    ROWS_PER_STATEMENT,
    TABLES,
    Column,
    TableSpec,
    execute_rows,
    from_json,
    to_json,
)
from licenseserver.store.writer import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_KEEP_CHANGES,
    DEFAULT_TRIM_INTERVAL,
    MAX_BATCH,
    RAW,
    READ,
    WRITE,
    SQLiteStore,
)
from licenseserver.store.writer import _Job as _Job

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_KEEP_CHANGES",
    "DEFAULT_TRIM_INTERVAL",
    "MAX_BATCH",
    "MIGRATIONS",
    "RAW",
    "READ",
    "ROWS_PER_STATEMENT",
    "SCHEMA_VERSION",
    "TABLES",
    "WRITE",
    "Column",
    "ConflictError",
    "Migration",
    "PreparedWrite",
    "SQLiteStore",
    "SchemaError",
    "StoreClosedError",
    "StoreError",
    "StoreWriteError",
    "TableSpec",
    "check_change",
    "check_database",
    "check_event",
    "check_local_name",
    "check_newer",
    "check_revision",
    "conflict_error",
    "connect",
    "database_path",
    "decode_log_line",
    "execute_rows",
    "from_json",
    "latest_version",
    "load_records",
    "log_line",
    "migrate",
    "open_database",
    "owed_since",
    "parse_log_line",
    "prepare_commit",
    "prepare_entries",
    "read_snapshot",
    "require_current_schema",
    "schema_version",
    "set_local",
    "to_json",
    "translate_error",
]
