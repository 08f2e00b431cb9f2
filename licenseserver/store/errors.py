"""The store's exceptions, and SQLite's errors made readable (``translate_error``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreError(Exception):
    """A failure of the store, with a message meant for the admin."""


class SchemaError(StoreError):
    """The database's schema is not the one this server runs (or not ours)."""


class StoreWriteError(StoreError):
    """SQLite could not do the job (disk full, read-only, I/O error, locked).

    Nothing of the failed job is stored. ``code`` is SQLite's error name,
    such as ``SQLITE_FULL``; ``reason`` says what went wrong in words fit to
    tell a client (no paths).
    """

    def __init__(self, message: str, code: str = "", reason: str = "a storage error") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class ConflictError(StoreError):
    """A put would give two records of a kind the same unique field."""


class StoreClosedError(StoreError):
    """The store is closed, or could not be opened."""


_ERROR_REASONS = {
    "SQLITE_FULL": "the disk is full (or the database reached its size limit)",
    "SQLITE_READONLY": "the database is read-only",
    "SQLITE_IOERR": "a disk I/O error occurred",
    "SQLITE_BUSY": "the database is locked by another process",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_NOTADB": "the file is not a database",
}


def translate_error(error: sqlite3.Error, path: Path | str) -> StoreWriteError:
    """A readable StoreWriteError for an SQLite error on the database at ``path``."""
    name = getattr(error, "sqlite_errorname", "") or ""
    primary = name.split("_")[:2]
    code = "_".join(primary)
    reason = _ERROR_REASONS.get(code, f"database error: {error}")
    return StoreWriteError(
        f"the store {path} failed: {reason} ({error}); nothing was stored",
        code,
        _ERROR_REASONS.get(code, "a storage error"),
    )
