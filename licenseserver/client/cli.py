"""``licenseserver client ...``: check seats out, heartbeat, release, borrow, status from a shell.

Each command opens a blocking ``Client`` (so failover works here too), does
one thing, prints the result (JSON with ``--json``) and closes the client.
A checked-out lease is left on the server, not released: heartbeat it with
``client heartbeat --lease ID`` and release it with ``client release --lease
ID``. Failures become one ``CommandError`` line.

Every session starts with a HELLO, and a HELLO registers the machine as it
says (host, user, product version, cores). So that a heartbeat or a release
does not register the machine anew with other values, ``checkout`` and
``borrow`` keep a record of each lease with what its HELLO said (``LeaseRecords``,
one small JSON file per lease in the lease directory), and ``heartbeat`` and
``release`` say HELLO with that. Without a record they need the whole identity
on the command line and refuse to guess it.

``register(subparsers)`` adds the ``client`` command to the tool's parser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from licenseserver.client import core, errors
from licenseserver.client.blocking import Client
from licenseserver.errors import CommandError

client_factory: Callable[..., Client] = Client
"""What the commands build their client with (tests replace it)."""

now: Callable[[], float] = time.time
"""The time that lease records are pruned by (tests replace it)."""

LEASE_DIR_VARIABLE = "LICENSESERVER_LEASE_DIR"
"""The environment variable that names the lease directory."""

RECORD_KEPT_AFTER_EXPIRY = 86400
"""Seconds a lease's record is kept after the lease expired (pruned at the next checkout)."""

IDENTITY = (
    ("--product", "product"),
    ("--version", "version"),
    ("--machine", "machine"),
    ("--host", "host"),
    ("--user", "user"),
)
"""The options that make a HELLO, and the record's keys for them (``--cores`` is optional)."""


def default_lease_dir() -> Path:
    """Where lease records are kept: $LICENSESERVER_LEASE_DIR, else
    ``$XDG_STATE_HOME/licenseserver/leases`` (``~/.local/state/...`` by default)."""
    if os.environ.get(LEASE_DIR_VARIABLE):
        return Path(os.environ[LEASE_DIR_VARIABLE])
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "licenseserver" / "leases"


_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class LeaseRecords:
    """The records of leases checked out from this shell account, one JSON file each.

    A record holds the lease id, the servers, and what the HELLO before the
    checkout said (``product``, ``version``, ``machine``, ``host``, ``user``,
    ``cores``), with ``machine_given`` (whether ``--machine`` chose the
    machine id) and the lease's ``expires``. The directory is made mode 0700,
    each file 0600, written whole (to a temporary file renamed into place).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, lease_id: str) -> Path:
        """The file of a lease's record: the id itself when it is a safe file name."""
        if _SAFE_NAME.fullmatch(lease_id):
            name = lease_id
        else:
            name = "h-" + hashlib.sha256(lease_id.encode("utf-8")).hexdigest()[:40]
        return self.directory / f"{name}.json"

    def read(self, lease_id: str) -> dict[str, Any] | None:
        """The record of ``lease_id``, None when there is none; an unreadable one is an error."""
        path = self.path(lease_id)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CommandError(f"cannot read {path}: {e.strerror or e}") from None
        except ValueError:
            raise CommandError(f"{path} is not a lease record: delete it") from None
        if not isinstance(record, dict) or record.get("lease") != lease_id:
            raise CommandError(f"{path} is not the record of lease {lease_id}: delete it")
        if not all(isinstance(record.get(key), str) for _, key in IDENTITY):
            raise CommandError(f"{path} is not a lease record: delete it")
        return record

    def write(self, record: dict[str, Any]) -> None:
        """Write (or replace) a lease's record; OSError when it cannot be written."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(record["lease"])
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def forget(self, lease_id: str) -> None:
        """Remove a lease's record (nothing when there is none)."""
        try:
            self.path(lease_id).unlink(missing_ok=True)
        except OSError:
            pass

    def prune(self, now: float) -> None:
        """Remove the records of leases that expired a day or more ago."""
        try:
            paths = list(self.directory.glob("*.json"))
        except OSError:
            return
        for path in paths:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                expires = float(record["expires"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if expires + RECORD_KEPT_AFTER_EXPIRY < now:
                path.unlink(missing_ok=True)


def register(subparsers: Any) -> None:
    """Add ``client`` and its commands to the ``licenseserver`` tool's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        action="append",
        metavar="HOST[:PORT]",
        help="a license server; repeat for a list (a primary names its failover itself)"
        " [default: the lease's servers for heartbeat and release, else localhost:35355]",
    )
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds a server may take"
    )
    common.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to keep trying when no server serves [default: one try each]",
    )
    common.add_argument(
        "--lease-dir",
        type=Path,
        metavar="DIR",
        help="where checkout and borrow keep a record of each lease for heartbeat and release"
        f" [default: ${LEASE_DIR_VARIABLE}, else $XDG_STATE_HOME/licenseserver/leases]",
    )

    def identity(required: bool, defaults: str) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--product", required=required, help="the product, as HELLO says it")
        parser.add_argument(
            "--version",
            required=required,
            dest="product_version",
            metavar="VERSION",
            help="the product's version",
        )
        parser.add_argument("--machine", help=f"machine id [default: {defaults}]")
        parser.add_argument("--host", help=f"host name [default: {defaults}]")
        parser.add_argument("--user", help=f"user [default: {defaults}]")
        parser.add_argument("--cores", type=int, help="CPU cores of the machine")
        return parser

    new = identity(True, "this machine's")
    known = identity(False, "what the lease's checkout said")

    client = subparsers.add_parser("client", help="check seats out of a license server")
    commands = client.add_subparsers(dest="client_command", required=True)

    checkout = commands.add_parser(
        "checkout", parents=[common, new], help="take a seat (left on the server)"
    )
    checkout.add_argument("--edition")
    checkout.add_argument("--request", metavar="KEY", help="idempotency key [default: fresh]")
    checkout.set_defaults(func=checkout_command)

    heartbeat = commands.add_parser(
        "heartbeat", parents=[common, known], help="renew a lease of this machine"
    )
    heartbeat.add_argument(
        "--lease",
        metavar="ID",
        help="[default: every lease of the machine; --product, --version, --machine, --host"
        " and --user are needed then]",
    )
    heartbeat.set_defaults(func=heartbeat_command)

    release = commands.add_parser(
        "release", parents=[common, known], help="release a lease of this machine"
    )
    release.add_argument("--lease", metavar="ID", required=True)
    release.set_defaults(func=release_command)

    borrow = commands.add_parser(
        "borrow", parents=[common, new], help="check a seat out for days (offline use)"
    )
    borrow.add_argument("--days", type=int, required=True)
    borrow.add_argument("--edition")
    borrow.set_defaults(func=borrow_command)

    status = commands.add_parser("status", parents=[common], help="STATUS of each server")
    status.set_defaults(func=status_command)


def _servers(args: argparse.Namespace) -> list[str]:
    return args.server or ["localhost:35355"]


def _records(args: argparse.Namespace) -> LeaseRecords:
    return LeaseRecords(args.lease_dir or default_lease_dir())


def _new_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What the HELLO of a checkout or borrow says: the options, else this machine's."""
    try:
        hello = core.hello_arguments(
            args.product,
            args.product_version,
            machine=args.machine,
            host=args.host,
            user=args.user,
            cores=args.cores,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    return {**hello, "cores": hello.get("cores")}


def _open(args: argparse.Namespace, identity: dict[str, Any], servers: list[str]) -> Client:
    try:
        return client_factory(
            servers,
            identity["product"],
            identity["version"],
            machine=identity["machine"],
            host=identity["host"],
            user=identity["user"],
            cores=identity["cores"],
            wait=args.wait,
            request_timeout=args.timeout,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None


def _run(
    args: argparse.Namespace,
    work: Callable[[Client], Any],
    identity: dict[str, Any] | None = None,
    servers: list[str] | None = None,
    unknown: Callable[[errors.UnknownLease], str] | None = None,
) -> Any:
    """Open a client, do ``work`` with it, close it; client errors become CommandError.

    ``identity`` is what HELLO says (a placeholder product for commands that
    send none); ``unknown`` words a ``404 unknown-lease`` for the command.
    """
    if identity is None:
        identity = {"product": "-", "version": "-", "machine": None, "host": None}
        identity.update(user=None, cores=None)
    client = _open(args, identity, servers or _servers(args))
    try:
        return work(client)
    except errors.UnknownLease as e:
        raise CommandError(unknown(e) if unknown else str(e)) from None
    except errors.LicenseClientError as e:
        raise CommandError(str(e)) from None
    finally:
        client.close()


def _known_identity(
    args: argparse.Namespace, command: str
) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """What the HELLO before a heartbeat or release says, the servers, and the lease's record.

    With a record of the lease, what its checkout said; an option that says
    otherwise is refused, since the HELLO would register the machine anew
    with it (and a lease of another machine would only be unknown there).
    Without one, every part of the identity must be given.
    """
    records = _records(args)
    record = records.read(args.lease) if args.lease else None
    given = {
        "product": args.product,
        "version": args.product_version,
        "machine": args.machine,
        "host": args.host,
        "user": args.user,
    }
    if record is None:
        missing = [option for option, key in IDENTITY if not given[key]]
        if missing:
            names = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
            if args.lease:
                where = f"no record of lease {args.lease} in {records.directory}"
            else:
                where = "a heartbeat of every lease of a machine"
            raise CommandError(
                f"{where}: give {names} as the checkout said them"
                f" (the HELLO before the {command} registers the machine as it says)"
            )
        return {**given, "cores": args.cores}, _servers(args), None
    lease = args.lease
    if args.machine is not None and args.machine != record["machine"]:
        raise CommandError(
            f"lease {lease} is not held by machine {args.machine}:"
            f" it was checked out for machine {record['machine']}"
        )
    here = core.default_machine_id()
    if args.machine is None and not record.get("machine_given") and record["machine"] != here:
        raise CommandError(
            f"lease {lease} is not held by this machine ({here}): it was checked out on"
            f" machine {record['machine']} (host {record.get('host')}); {command} it there"
        )
    for option, key in [*IDENTITY, ("--cores", "cores")]:
        value = args.cores if key == "cores" else given[key]
        if value is not None and value != record.get(key):
            raise CommandError(
                f"{option} {value} is not what lease {lease}'s checkout said"
                f" ({record.get(key)}); leave it out, or the HELLO before the {command}"
                " would register the machine anew with it"
            )
    identity = {key: record.get(key) for _, key in IDENTITY}
    identity["cores"] = record.get("cores")
    return identity, args.server or list(record.get("servers") or _servers(args)), record


def _not_held(lease: str, machine: str, recorded: bool) -> Callable[[errors.UnknownLease], str]:
    """The line for ``404 unknown-lease``: the wire answer, and what it may mean.

    The server gives the same answer for a lease of another machine as for
    one it does not hold, so that ids cannot be probed; with the lease's
    record the machine is known to be the lease's own.
    """

    def line(e: errors.UnknownLease) -> str:
        if recorded:
            return (
                f"{e}: lease {lease} is no longer held by machine {machine}:"
                " it was released or it expired"
            )
        return (
            f"{e}: lease {lease} is not held by machine {machine}: it was released, it"
            " expired, or it belongs to another machine"
        )

    return line


def _when(timestamp: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(int(float(timestamp))))
    except (TypeError, ValueError, OverflowError):
        return str(timestamp)


def _print(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(document, indent=1, sort_keys=True))
    else:
        for line in lines:
            print(line)


def _warn(message: str) -> None:
    print(f"licenseserver: warning: {message}", file=sys.stderr)


def _keep(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Write the record of a lease just granted; a failure is a warning (the lease is held)."""
    records = _records(args)
    try:
        records.prune(now())
        records.write(record)
    except OSError as e:
        _warn(
            f"cannot keep a record of lease {record['lease']} in {records.directory}"
            f" ({e.strerror or e}): heartbeat and release need --product, --version,"
            " --machine, --host and --user"
        )


def _record(
    args: argparse.Namespace, identity: dict[str, Any], servers: list[str], **lease: Any
) -> dict[str, Any]:
    """A lease's record; ``servers`` are those the client knew, the failover it learnt too."""
    return {**lease, **identity, "machine_given": args.machine is not None, "servers": servers}


def checkout_command(args: argparse.Namespace) -> None:
    """Take a seat and print its lease; the lease stays on the server until it expires."""
    identity = _new_identity(args)

    known: list[str] = []

    def work(client: Client) -> dict[str, Any]:
        lease = client.checkout(args.product, edition=args.edition, request=args.request)
        lease.detach()
        known.extend(client.servers)
        return {
            "lease": lease.id,
            "license": lease.license,
            "kind": lease.kind,
            "expires": lease.expires,
            "ttl": lease.ttl,
            "request": lease.request,
            "server": lease.server,
            **identity,
        }

    grant = _run(args, work, identity)
    _keep(args, _record(args, identity, known, **grant))
    _print(
        args,
        grant,
        [
            f"lease {grant['lease']} of license {grant['license']} ({grant['kind']})",
            f"expires {_when(grant['expires'])} unless heartbeated (ttl {grant['ttl']:g} s)",
            f"server {grant['server']}, machine {grant['machine']}, request {grant['request']}",
        ],
    )


def heartbeat_command(args: argparse.Namespace) -> None:
    """Renew one lease (or all of the machine's) and print the new expiry."""
    identity, servers, record = _known_identity(args, "heartbeat")
    unknown = None
    if args.lease:
        unknown = _not_held(args.lease, identity["machine"], record is not None)
    reply = _run(args, lambda client: client.heartbeat(args.lease), identity, servers, unknown)
    if record is not None and reply.get("expires"):
        record.update(expires=reply["expires"], server=reply.get("address", record["server"]))
        try:
            _records(args).write(record)
        except OSError:
            pass
    what = f"lease {args.lease}" if args.lease else "every lease of this machine"
    _print(
        args,
        {**reply, "lease": args.lease},
        [f"renewed {what} at {reply.get('address')}: expires {_when(reply.get('expires'))}"],
    )


def release_command(args: argparse.Namespace) -> None:
    """Release a lease of this machine, and forget its record."""
    identity, servers, record = _known_identity(args, "release")

    def work(client: Client) -> str | None:
        try:
            client.release(args.lease)
        except errors.UnknownLease:
            if record is not None:
                _records(args).forget(args.lease)
            raise
        return client.server

    unknown = _not_held(args.lease, identity["machine"], record is not None)
    server = _run(args, work, identity, servers, unknown)
    _records(args).forget(args.lease)
    _print(args, {"released": args.lease, "server": server}, [f"released {args.lease}"])


def borrow_command(args: argparse.Namespace) -> None:
    """Check a seat out for days and print the lease."""
    identity = _new_identity(args)
    known: list[str] = []

    def work(client: Client) -> Any:
        borrowed = client.borrow(args.product, args.days, edition=args.edition)
        known.extend(client.servers)
        return borrowed

    borrowed = _run(args, work, identity)
    document = asdict(borrowed)
    lease = {"lease": borrowed.id, "expires": borrowed.expires, "server": borrowed.server}
    _keep(args, _record(args, identity, known, **lease))
    _print(
        args,
        document,
        [
            f"borrowed lease {borrowed.id} of license {borrowed.license} ({borrowed.kind})",
            f"until {_when(borrowed.expires)} from {borrowed.server}",
        ],
    )


def status_command(args: argparse.Namespace) -> None:
    """Print the STATUS of every server given; fail when none answers."""

    def work(client: Client) -> dict[str, dict[str, str]]:
        answers: dict[str, dict[str, str]] = {}
        for address in client.servers:
            try:
                answer = client.status_of(address)
                answer.pop("address", None)
                answers[address] = answer
            except errors.LicenseClientError as e:
                answers[address] = {"error": str(e)}
        return answers

    answers = _run(args, work)
    lines = []
    for address, answer in answers.items():
        lines.append(f"{address}:")
        lines.extend(f"  {key}: {value}" for key, value in answer.items())
    _print(args, answers, lines)
    if all("error" in answer for answer in answers.values()):
        raise CommandError("no server answered STATUS")
