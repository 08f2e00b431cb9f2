"""Checks shared by every store: the fake (``testing.FakeStore``) refuses what SQLite refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from licenseserver import model
from licenseserver.store.errors import ConflictError
from licenseserver.store.tables import TABLES, TableSpec


def check_revision(revision: Any, minimum: int | None = 0) -> int:
    """``revision``; ValueError unless it is an integer of at least ``minimum``."""
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise ValueError(f"a revision is an integer, not {revision!r}")
    if minimum is not None and revision < minimum:
        raise ValueError(f"a revision is at least {minimum}, not {revision}")
    return revision


def check_newer(revision: int, current: int) -> None:
    """ValueError unless ``revision`` comes after the stored ``current``."""
    if revision <= current:
        raise ValueError(f"revision {revision} is not after the stored revision {current}")


def check_change(change: model.Change) -> TableSpec:
    """The table of ``change``; ValueError when the change is malformed."""
    spec = TABLES.get(change.kind)
    if spec is None:
        raise ValueError(f"unknown record kind {change.kind!r}")
    key = tuple(change.key)
    if len(key) != len(spec.key) or not all(isinstance(k, str) for k in key):
        raise ValueError(f"a {spec.kind} key is {len(spec.key)} strings, not {change.key!r}")
    record = change.record
    if record is not None:
        if not isinstance(record, model.KINDS[spec.kind]):
            raise ValueError(f"not a {spec.kind} record: {record!r}")
        if record.key != key:
            raise ValueError(f"change key {key!r} is not the record's key {record.key!r}")
    return spec


def check_event(event: model.Event) -> None:
    """ValueError unless ``event`` can be stored."""
    if not isinstance(event, model.Event):
        raise ValueError(f"not an Event: {event!r}")
    texts = (event.kind, event.severity, event.message)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError(f"an event's kind, severity and message are strings: {event!r}")
    if isinstance(event.time, bool) or not isinstance(event.time, (int, float)):
        raise ValueError(f"an event's time is a number: {event!r}")
    if not isinstance(event.data, dict):
        raise ValueError(f"an event's data is a dict: {event!r}")


def check_local_name(name: Any) -> str:
    """ValueError unless ``name`` is a non-empty string."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a local value's name is a non-empty string, not {name!r}")
    return name


def conflict_error(spec: TableSpec, key: Sequence[str]) -> ConflictError:
    """The error for a put that would duplicate one of the kind's unique fields."""
    fields = ", ".join(name for group in spec.unique for name in group) or "key"
    return ConflictError(
        f"cannot put {spec.kind} {list(key)}: another {spec.kind} has the same {fields}"
    )
