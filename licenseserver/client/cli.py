"""``licenseserver client ...``: check seats out, heartbeat, release, borrow, status from a shell.

Each command opens a blocking ``Client`` (so failover works here too), does
one thing, prints the result (JSON with ``--json``) and closes the client.
A checked-out lease is left on the server, not released: heartbeat it with
``client heartbeat --lease ID`` from the same machine (the machine id
defaults to this machine's, so separate runs share it) and release it with
``client release --lease ID``. Failures become one ``CommandError`` line.

``register(subparsers)`` adds the ``client`` command to the tool's parser.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from licenseserver.client import errors
from licenseserver.client.blocking import Client

client_factory: Callable[..., Client] = Client
"""What the commands build their client with (tests replace it)."""


def _command_error(message: str) -> Exception:
    """A ``CommandError`` of the ``licenseserver`` tool (imported late: it imports us)."""
    from licenseserver.cli import CommandError

    return CommandError(message)


def register(subparsers: Any) -> None:
    """Add ``client`` and its commands to the ``licenseserver`` tool's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        action="append",
        metavar="HOST[:PORT]",
        help="a license server; repeat for a list (a primary names its failover itself)"
        " [default: localhost:35355]",
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

    identity = argparse.ArgumentParser(add_help=False)
    identity.add_argument("--product", required=True, help="the product, as HELLO says it")
    identity.add_argument(
        "--version",
        required=True,
        dest="product_version",
        metavar="VERSION",
        help="the product's version",
    )
    identity.add_argument("--machine", help="machine id [default: this machine's]")
    identity.add_argument("--host", help="host name [default: this machine's]")
    identity.add_argument("--user", help="user [default: the current user]")
    identity.add_argument("--cores", type=int, help="CPU cores of the machine")

    client = subparsers.add_parser("client", help="check seats out of a license server")
    commands = client.add_subparsers(dest="client_command", required=True)

    checkout = commands.add_parser(
        "checkout", parents=[common, identity], help="take a seat (left on the server)"
    )
    checkout.add_argument("--edition")
    checkout.add_argument("--request", metavar="KEY", help="idempotency key [default: fresh]")
    checkout.set_defaults(func=checkout_command)

    heartbeat = commands.add_parser(
        "heartbeat", parents=[common, identity], help="renew a lease of this machine"
    )
    heartbeat.add_argument("--lease", metavar="ID", help="[default: every lease of the machine]")
    heartbeat.set_defaults(func=heartbeat_command)

    release = commands.add_parser(
        "release", parents=[common, identity], help="release a lease of this machine"
    )
    release.add_argument("--lease", metavar="ID", required=True)
    release.set_defaults(func=release_command)

    borrow = commands.add_parser(
        "borrow", parents=[common, identity], help="check a seat out for days (offline use)"
    )
    borrow.add_argument("--days", type=int, required=True)
    borrow.add_argument("--edition")
    borrow.set_defaults(func=borrow_command)

    status = commands.add_parser("status", parents=[common], help="STATUS of each server")
    status.set_defaults(func=status_command)


def _servers(args: argparse.Namespace) -> list[str]:
    return args.server or ["localhost:35355"]


def _open(args: argparse.Namespace, product: str = "-", version: str = "-") -> Client:
    try:
        return client_factory(
            _servers(args),
            getattr(args, "product", None) or product,
            getattr(args, "product_version", None) or version,
            machine=getattr(args, "machine", None),
            host=getattr(args, "host", None),
            user=getattr(args, "user", None),
            cores=getattr(args, "cores", None),
            wait=args.wait,
            request_timeout=args.timeout,
        )
    except ValueError as e:
        raise _command_error(str(e)) from None


def _run(args: argparse.Namespace, work: Callable[[Client], Any], **identity: str) -> Any:
    """Open a client, do ``work`` with it, close it; client errors become CommandError."""
    client = _open(args, **identity)
    try:
        return work(client)
    except errors.LicenseClientError as e:
        raise _command_error(str(e)) from None
    finally:
        client.close()


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


def checkout_command(args: argparse.Namespace) -> None:
    """Take a seat and print its lease; the lease stays on the server until it expires."""

    def work(client: Client) -> dict[str, Any]:
        lease = client.checkout(args.product, edition=args.edition, request=args.request)
        lease.detach()
        return {
            "lease": lease.id,
            "license": lease.license,
            "kind": lease.kind,
            "expires": lease.expires,
            "ttl": lease.ttl,
            "request": lease.request,
            "server": lease.server,
            "machine": client.machine,
        }

    grant = _run(args, work)
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
    reply = _run(args, lambda client: client.heartbeat(args.lease))
    what = f"lease {args.lease}" if args.lease else "every lease of this machine"
    _print(
        args,
        {**reply, "lease": args.lease},
        [f"renewed {what} at {reply.get('address')}: expires {_when(reply.get('expires'))}"],
    )


def release_command(args: argparse.Namespace) -> None:
    """Release a lease of this machine."""

    def work(client: Client) -> str | None:
        client.release(args.lease)
        return client.server

    server = _run(args, work)
    _print(args, {"released": args.lease, "server": server}, [f"released {args.lease}"])


def borrow_command(args: argparse.Namespace) -> None:
    """Check a seat out for days and print the lease."""
    borrowed = _run(
        args, lambda client: client.borrow(args.product, args.days, edition=args.edition)
    )
    document = asdict(borrowed)
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
        raise _command_error("no server answered STATUS")
