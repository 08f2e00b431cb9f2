"""Upgrade a data directory to this server version: back up, migrate, roll back on failure.

``licenseserver upgrade --data DIR`` runs ``upgrade_data_dir`` with the server
stopped. It copies the whole directory to a sibling backup first, lets a hook
refuse the upgrade (a failover whose primary is older), runs the schema
migrations and records the new server version. Any failure puts the
directory back exactly as it was; if even that fails, the message says where
the backup is and how to put it back by hand.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from twisted.python import usage

from licenseserver import store, tls, versions
from licenseserver.addresses import endpoint_host_port, format_host_port, parse_host_port
from licenseserver.datadir import DataDir
from licenseserver.localstate import PRIMARY, PRIMARY_CA, ROLE, SERVER_VERSION, role_change
from licenseserver.protocols import lineclient

BeforeMigrate = Callable[[Path, dict[str, Any]], None]


class UpgradeError(Exception):
    """The upgrade did not happen; the message says what state the directory is in."""


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did. ``backup`` is None when there was nothing to do."""

    data_dir: Path
    backup: Path | None
    old_schema: int
    new_schema: int
    old_version: str | None
    new_version: str

    @property
    def changed(self) -> bool:
        return self.backup is not None

    def summary(self) -> str:
        """One line for the admin."""
        if not self.changed:
            return (
                f"{self.data_dir} is already at schema {self.new_schema} and server "
                f"version {self.new_version}: nothing to do"
            )
        return (
            f"upgraded {self.data_dir} from schema {self.old_schema} (server version "
            f"{self.old_version or 'unknown'}) to schema {self.new_schema} (server version "
            f"{self.new_version}); the backup is {self.backup}"
        )


def upgrade_data_dir(
    data_dir: Path | str,
    *,
    target_version: str,
    before_migrate: BeforeMigrate | None = None,
    migrations: Sequence[store.Migration] = store.MIGRATIONS,
    now: datetime | None = None,
) -> UpgradeResult:
    """Bring ``data_dir`` to the latest schema and record ``target_version``.

    Synchronous; the server must be stopped. ``before_migrate(data_dir,
    local_values)`` runs after the backup and may raise to refuse the
    upgrade. ``migrations`` (the real list by default) and ``now`` (the
    backup's time stamp) are there for tests.

    Raises UpgradeError when there is no database, when the database is
    newer than this server, or when any step fails (after rolling back).
    """
    data_dir = Path(data_dir).resolve()
    try:
        DataDir(data_dir).refuse_if_half_upgraded()
    except OSError as e:
        raise UpgradeError(f"{data_dir}: {e}") from None
    database = store.database_path(data_dir)
    old_schema = _existing_schema(data_dir, database)
    new_schema = store.latest_version(migrations)
    if old_schema > new_schema:
        raise UpgradeError(
            f"{data_dir} is at schema {old_schema}, newer than this server's "
            f"schema {new_schema}: it belongs to a newer server version"
        )
    local = _read_local(database)
    old_version = local.get(SERVER_VERSION)
    if old_schema == new_schema and old_version == target_version:
        return UpgradeResult(data_dir, None, old_schema, new_schema, old_version, target_version)
    try:
        lock = DataDir(data_dir).lock()
    except OSError as e:
        raise UpgradeError(f"{e}; nothing was changed") from None
    try:
        _checkpoint(database)
        backup = _back_up(data_dir, now or datetime.now())
        try:
            if before_migrate is not None:
                before_migrate(data_dir, dict(local))
            _migrate(database, migrations, target_version)
        except BaseException as e:
            _roll_back(data_dir, backup, e)
    finally:
        os.close(lock)
    return UpgradeResult(data_dir, backup, old_schema, new_schema, old_version, target_version)


def _existing_schema(data_dir: Path, database: Path) -> int:
    """The database's schema version; UpgradeError when there is nothing to upgrade."""
    if not data_dir.is_dir():
        if data_dir.exists():
            raise UpgradeError(f"data directory {data_dir} is not a directory")
        raise UpgradeError(f"data directory {data_dir} does not exist")
    if not database.is_file():
        raise UpgradeError(f"no database in {data_dir} ({database.name}): nothing to upgrade")
    try:
        version = store.check_database(database)
    except store.StoreError as e:
        raise UpgradeError(f"cannot upgrade {data_dir}: {e}") from e
    if version == 0:
        raise UpgradeError(f"{database} is an empty database: nothing to upgrade")
    return version


def _read_local(database: Path) -> dict[str, Any]:
    """Every local value of the database (empty when it has no ``local`` table)."""
    conn = store.connect(database)
    try:
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'local'"
        ).fetchone()[0]
        if not found:
            return {}
        rows = conn.execute("SELECT name, value FROM local")
        return {name: store.from_json(value) for name, value in rows}
    except (sqlite3.Error, ValueError) as e:
        raise UpgradeError(f"cannot read {database}: {e}") from e
    finally:
        conn.close()


def _checkpoint(database: Path) -> None:
    """Fold the write-ahead log into the database file, so the copy is one file.

    A WAL left by a server that stopped abruptly would otherwise have to be
    copied along with it; after this, closing the connection removes it.
    """
    conn = store.connect(database)
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as e:
        raise UpgradeError(f"cannot checkpoint {database}: {e}; nothing was changed") from e
    finally:
        conn.close()
    if busy:
        raise UpgradeError(
            f"{database} is in use: stop the server before upgrading; nothing was changed"
        )


def backup_path(data_dir: Path, when: datetime) -> Path:
    """A sibling ``<data_dir>.backup-YYYYmmddTHHMMSS`` that does not exist yet."""
    base = data_dir.with_name(f"{data_dir.name}.backup-{when:%Y%m%dT%H%M%S}")
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a directory with file modes, times and owners; symlinks stay symlinks.

    Owners matter when the upgrade runs as root on the directory of a server
    that runs as its own user: a copy owned by root, put back by a rollback,
    would leave that server unable to open its data. Owners are copied where
    the process may set them (as root, or when they are its own already).
    """
    shutil.copytree(source, target, symlinks=True, copy_function=shutil.copy2)
    _copy_owners(source, target)


def _copy_owners(source: Path, target: Path) -> None:
    for path in [source, *source.rglob("*")]:
        theirs = path.lstat()
        copy = target / path.relative_to(source)
        mine = copy.lstat()
        if (mine.st_uid, mine.st_gid) == (theirs.st_uid, theirs.st_gid):
            continue
        try:
            os.lchown(copy, theirs.st_uid, theirs.st_gid)
        except PermissionError:
            return  # not root: every copy is this process's own, as it can only be


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``, so the copy survives a crash."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _back_up(data_dir: Path, when: datetime) -> Path:
    """Copy the whole directory to a new sibling, durably; nothing is changed before this."""
    backup = backup_path(data_dir, when)
    try:
        _copy_tree(data_dir, backup)
        _sync_tree(backup)
    except OSError as e:
        shutil.rmtree(backup, ignore_errors=True)
        raise UpgradeError(
            f"cannot back up {data_dir} to {backup}: {e}; nothing was changed"
        ) from e
    return backup


def _migrate(database: Path, migrations: Sequence[store.Migration], version: str) -> None:
    """Run the migrations and record the server version, durably."""
    conn = store.connect(database)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        store.migrate(conn, migrations)
        conn.execute(
            "INSERT INTO local (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (SERVER_VERSION, store.to_json(version)),
        )
    finally:
        conn.close()


def _restore(data_dir: Path, backup: Path) -> None:
    """Make ``data_dir`` an exact copy of ``backup`` again."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    _copy_tree(backup, data_dir)


def _roll_back(data_dir: Path, backup: Path, error: BaseException) -> None:
    """Put the directory back from the backup and raise the UpgradeError that says so."""
    if isinstance(error, UpgradeRefusedError):
        reason = str(error)
    else:
        reason = f"{type(error).__name__}: {error}"
    try:
        _restore(data_dir, backup)
    except BaseException as restore_error:
        message = (
            f"upgrade of {data_dir} failed ({reason}) and restoring it failed too "
            f"({restore_error}): the directory may be half migrated. The backup is "
            f"{backup}; to recover, stop everything, delete {data_dir} and copy "
            f"{backup} back to {data_dir} (e.g. `cp -a {backup} {data_dir}`)"
        )
        marker = DataDir(data_dir).upgrade_failed
        try:
            marker.write_text(message + "\n", encoding="utf-8")
        except OSError as e:
            message += f". Do not start a server on it (writing {marker} failed: {e})"
        else:
            message += f"; then delete {marker}, which keeps servers from starting until then"
        raise UpgradeError(message) from error
    note = ""
    try:
        shutil.rmtree(backup)
    except OSError as e:
        note = f" (the backup {backup} could not be removed: {e})"
    raise UpgradeError(
        f"upgrade of {data_dir} failed ({reason}); the directory was rolled back "
        f"to its state before the upgrade{note}"
    ) from error


def prepare_for_start(data_dir: Path | str, server_version: str) -> dict[str, Any]:
    """Make sure this server may start on ``data_dir``; return its local values.

    Synchronous, before the reactor runs. A new directory gets a database at
    the latest schema, marked with ``server_version``. A directory last
    used by another server version, or at another schema, is refused with
    ``store.StoreError`` saying what to do: every new version runs
    ``licenseserver upgrade`` before it starts, and no version starts on a
    directory a newer one has written.
    """
    database = store.database_path(data_dir)
    if store.require_current_schema(database) == 0:
        conn = store.open_database(database)
        try:
            store.set_local(conn, SERVER_VERSION, server_version)
        finally:
            conn.close()
    local = _read_local(database)
    recorded = local.get(SERVER_VERSION)
    if recorded is not None and recorded != server_version:
        if versions.Version(recorded) < versions.Version(server_version):
            raise store.SchemaError(
                f"it was last used by version {recorded}; run "
                f"`licenseserver upgrade --data {data_dir}` before starting {server_version}"
            )
        raise store.SchemaError(
            f"it was last used by the newer version {recorded}; this is {server_version}"
        )
    return local


def record_role(
    data_dir: Path | str, role: str, primary: str | None, primary_ca: str | None = None
) -> None:
    """Record the server's role, its primary's address and the primary's CA file.

    ``licenseserver upgrade`` reads them to check a failover's primary, however the role
    was chosen (command line or Settings), over TLS when the link uses it. A new primary
    to mirror also marks the data to be replaced by the first sync
    (``localstate.role_change``).
    """
    local = _read_local(store.database_path(data_dir))
    values = role_change(local.get(ROLE), local.get(PRIMARY), role, primary)
    values[PRIMARY_CA] = os.path.abspath(primary_ca) if primary_ca else None
    conn = store.connect(store.database_path(data_dir))
    try:
        for name, value in values.items():
            store.set_local(conn, name, value)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# A failover is upgraded after its primary (FAILOVER.md rule 13)

STATUS_TIMEOUT = 5.0
"""Seconds that asking the primary for its STATUS may take, connecting included."""


class UpgradeRefusedError(Exception):
    """The upgrade must not happen now; the message says why and what to do instead."""


class PrimaryUnreachableError(Exception):
    """The primary's STATUS could not be had; the message says what went wrong."""


AskStatus = Callable[[tuple[str, int], float], dict[str, str]]
"""``ask(address, timeout)``: the arguments of the ``OK`` answer to ``STATUS``."""


def ask_primary_status(
    address: tuple[str, int], timeout: float = STATUS_TIMEOUT, ca: str | None = None
) -> dict[str, str]:
    """Send ``STATUS`` to the licensing port at ``address``; return the answer's arguments.

    Blocking (``lineclient.blockingRequest``): the upgrade runs with no
    reactor. With ``ca`` (the failover's ``--primary-ca`` file) it speaks TLS,
    trusting that file and checking that the certificate names the host, as
    the failover's link does. Raises ``PrimaryUnreachableError`` when there is
    no connection (or no trusted one), no answer in ``timeout`` seconds, or an
    answer other than ``OK``.
    """
    host, port = address
    options = _tls(host, ca) if ca else None
    try:
        reply = lineclient.blockingRequest(
            host, port, "STATUS", timeout=timeout, tlsOptions=options
        )
    except lineclient.LineClientError as e:
        raise PrimaryUnreachableError(_unanswered(e)) from e
    response = reply.response
    if not response.ok:
        raise PrimaryUnreachableError(f"it refused STATUS: {response.code} {response.reason}")
    return response.args


def _tls(host: str, ca: str) -> Any:
    """TLS client options trusting only ``ca`` and requiring a certificate for ``host``."""
    try:
        return tls.clientOptions(host, ca)
    except usage.UsageError as e:
        raise PrimaryUnreachableError(f"its CA file {ca} (--primary-ca) is unusable: {e}") from e
    except ValueError as e:
        raise PrimaryUnreachableError(f"{host!r} is not a host name") from e


def _unanswered(error: Exception) -> str:
    """Why the primary's STATUS could not be had, in a few words."""
    if isinstance(error, lineclient.TimedOut):
        return "no answer in time"
    if isinstance(error, lineclient.CertificateRefused):
        return f"its TLS certificate does not verify: {error.detail}"
    if isinstance(error, lineclient.TLSFailed):
        return f"TLS failed: {error}"
    if isinstance(error, lineclient.Disconnected):
        return "it closed the connection without answering STATUS"
    if isinstance(error, lineclient.JunkAnswer):
        return f"it answered STATUS with a line that is no answer: {error.why}"
    if isinstance(error, lineclient.OverlongLine):
        return f"it answered STATUS with {error}"
    return str(error) or type(error).__name__


def _os_reason(error: OSError) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return error.strerror or str(error) or type(error).__name__


def primary_address(text: str) -> tuple[str, int] | None:
    """Where to ask a recorded primary: ``HOST[:PORT]`` or a plain ``tcp:`` endpoint.

    None for any other endpoint (such as an ``ssl:`` one with its own trust
    options): the upgrade asks a TLS primary only as ``HOST[:PORT]`` with the
    recorded ``--primary-ca``.
    """
    return parse_host_port(text) or endpoint_host_port(text, None, kinds=("tcp",))


def check_primary_version(
    data_dir: Path,
    local_values: dict[str, Any],
    *,
    force: bool,
    target_version: str,
    ask_status: AskStatus | None = None,
    timeout: float = STATUS_TIMEOUT,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Refuse to upgrade a failover to ``target_version`` while its primary runs an older one.

    The ``before_migrate`` hook of ``licenseserver upgrade``. A directory
    whose recorded role is not ``failover`` passes without asking anyone.
    A failover's recorded primary is asked for its ``STATUS`` (with
    ``ask_status``, ``ask_primary_status`` by default); a primary older than
    ``target_version`` raises ``UpgradeRefusedError``. So does a primary
    that cannot be asked, unless ``force`` is set: then ``warn`` is told
    and the upgrade goes on. A primary at ``target_version`` or newer passes.
    """
    if local_values.get(ROLE) != "failover":
        return
    recorded = local_values.get(PRIMARY)
    ca = local_values.get(PRIMARY_CA)
    if ask_status is None:
        ask_status = partial(ask_primary_status, ca=ca) if ca else ask_primary_status
    try:
        shown, version = _primary_version(recorded, ask_status, timeout)
    except PrimaryUnreachableError as e:
        if force:
            if warn is not None:
                warn(f"{e}; upgrading this failover anyway (--force)")
            return
        raise UpgradeRefusedError(
            f"{e}; a failover is upgraded after its primary: start the primary, or give "
            "--force to upgrade this failover without checking its primary's version"
        ) from e
    if version < versions.Version(target_version):
        raise UpgradeRefusedError(
            f"the primary {shown} runs {version}, older than {target_version}: "
            "upgrade the primary first"
        )


def _primary_version(
    recorded: Any, ask: AskStatus, timeout: float
) -> tuple[str, versions.Version]:
    """How to name the recorded primary, and the version it runs now."""
    if not isinstance(recorded, str) or not recorded:
        raise PrimaryUnreachableError(
            "this failover's data directory records no primary to ask for its version"
        )
    address = primary_address(recorded)
    if address is None:
        raise PrimaryUnreachableError(
            f"cannot ask the primary {recorded} for its version: only a HOST[:PORT] "
            "or tcp: address can be asked"
        )
    shown = format_host_port(*address)
    try:
        status = ask(address, timeout)
    except (PrimaryUnreachableError, OSError) as e:
        reason = _os_reason(e) if isinstance(e, OSError) else str(e)
        raise PrimaryUnreachableError(
            f"cannot ask the primary {shown} for its version: {reason}"
        ) from e
    text = status.get("version", "")
    try:
        return shown, versions.Version(text)
    except versions.VersionError as e:
        raise PrimaryUnreachableError(
            f"the primary {shown} answered STATUS without a version ({text!r})"
        ) from e
