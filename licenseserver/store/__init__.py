"""SQLite storage of the license pool behind ``ILicenseStore``.

Everything the rest of the server, the tools and the tests use is named here,
as ``store.X``.
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

# Internals that tests and bench/request_path.py (which repeats the writer's SQL to
# measure it) reach as ``store._X``.
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
