"""The ``licenseserver`` tool: vendor keys and licenses, uploads, status, upgrades.

Every command prints one clear line to stderr and exits non-zero on failure;
``main`` turns a ``CommandError`` into that line, so commands raise it rather
than print and exit themselves.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from licenseserver import certs, signing
from licenseserver._version import __version__
from licenseserver.addresses import parse_host_port
from licenseserver.client.cli import register as register_client
from licenseserver.datadir import DataDir
from licenseserver.protocols import wire


class CommandError(Exception):
    """A failure to report to the user in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> None:
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _vendor_keygen(args: argparse.Namespace) -> None:
    """Write a vendor key pair ``PREFIX.key`` (0600) and ``PREFIX.pub``.

    Prints the two paths, private key first. Refuses to overwrite either
    file, since a replaced vendor key is a lost one.
    """
    try:
        private_path, public_path = signing.generate_keypair(args.out)
    except signing.LicenseError as e:
        raise CommandError(str(e)) from e
    print(private_path)
    print(public_path)


def _vendor_issue(args: argparse.Namespace) -> None:
    """Sign one license with the vendor key and write it as a new license file.

    Prints the license id. Everything is checked before the file is
    created, an existing file is never replaced, and a failure leaves no
    file behind.
    """
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        raise CommandError(f"{out} already exists; refusing to overwrite it")
    try:
        private_key = signing.load_private_key(args.key)
        license = signing.issue_license(
            private_key,
            id=args.id,
            product=args.product,
            edition=args.edition,
            kind=args.kind,
            seats=args.seats,
            cores=args.cores,
            licensee=args.licensee,
            starts=args.starts,
            expires=args.expires,
            max_version=args.max_version,
        )
        data = signing.dump_licenses([license])
    except signing.LicenseError as e:
        raise CommandError(str(e)) from e
    try:
        signing.write_new_file(out, data, 0o644)
    except FileExistsError as e:
        raise CommandError(f"{out} already exists; refusing to overwrite it") from e
    except OSError as e:
        raise CommandError(f"cannot write {out}: {e.strerror or e}") from e
    print(license.id)


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    """The admin password: ``--password-file``, $LICENSESERVER_PASSWORD, or a prompt."""
    if args.password_file:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CommandError(f"cannot read {args.password_file}: {e.strerror or e}") from e
    if os.environ.get("LICENSESERVER_PASSWORD"):
        return os.environ["LICENSESERVER_PASSWORD"]
    if not sys.stdin.isatty():
        raise CommandError("no password: give --password-file or set LICENSESERVER_PASSWORD")
    return getpass.getpass(prompt)


def _license_upload(args: argparse.Namespace) -> None:
    """Upload license files through the admin API; print the ids added.

    Files go one at a time, each accepted or refused whole by the server;
    the first refusal stops the command and names the file.
    """
    password = _read_password(args, "admin password: ")
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    url = args.server.rstrip("/") + "/api/licenses"
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as e:
            raise CommandError(f"cannot read {name}: {e.strerror or e}") from e
        request = urllib.request.Request(url, data=data, method="POST")
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                ids = json.load(response)["ids"]
        except urllib.error.HTTPError as e:
            raise CommandError(f"{name}: {e.code} {_api_error(e)}") from e
        except (urllib.error.URLError, OSError) as e:
            raise CommandError(f"cannot reach {args.server}: {_reason(e)}") from e
        for license_id in ids:
            print(f"{name}: added {license_id}")


def _api_error(error: urllib.error.HTTPError) -> str:
    """The API's JSON error of a failed request, with its reason token when it has one."""
    try:
        body = json.load(error)
        message = body["error"]
    except (ValueError, KeyError, TypeError):
        return error.reason
    return f"{body['reason']}: {message}" if body.get("reason") else message


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return getattr(reason, "strerror", None) or str(reason)


def _status(args: argparse.Namespace) -> None:
    """Ask a server for its STATUS over the licensing port and print it."""
    address = parse_host_port(args.server)
    if address is None:
        raise CommandError(f"{args.server!r} is not HOST[:PORT]")
    try:
        with socket.create_connection(address, timeout=10) as raw:
            conn = raw
            if args.ca:
                context = ssl.create_default_context(cafile=args.ca)
                conn = context.wrap_socket(raw, server_hostname=address[0])
            conn.sendall(wire.format_request("STATUS"))
            line = conn.makefile("rb").readline(wire.MAX_LINE)
    except ssl.SSLError as e:
        raise CommandError(f"TLS with {args.server} failed: {e.reason or e}") from e
    except OSError as e:
        raise CommandError(f"cannot reach {args.server}: {e.strerror or e}") from e
    try:
        response = wire.parse_response(line.rstrip(b"\n"))
    except wire.ProtocolError as e:
        raise CommandError(f"{args.server} did not answer STATUS: {e}") from e
    if not response.ok:
        raise CommandError(f"{args.server} refused STATUS: {response.code} {response.reason}")
    if args.json:
        print(json.dumps(response.args, indent=1))
        return
    for key, value in response.args.items():
        print(f"{key}: {value}")


def _upgrade(args: argparse.Namespace) -> None:
    """Migrate a data directory to this version (backup first, rollback on failure).

    A failover's directory is upgraded only when its recorded primary runs
    this version or a newer one; ``--force`` goes on when the primary cannot
    be asked (never when it answers with an older version).
    """
    from licenseserver import store, upgrade

    def warn(message: str) -> None:
        print(f"licenseserver: warning: {message}", file=sys.stderr)

    def check_primary(data_dir: Path, local_values: dict) -> None:
        upgrade.check_primary_version(
            data_dir, local_values, force=args.force, target_version=__version__, warn=warn
        )

    try:
        result = upgrade.upgrade_data_dir(
            Path(args.data), target_version=__version__, before_migrate=check_primary
        )
    except (upgrade.UpgradeError, store.StoreError) as e:
        raise CommandError(" ".join(str(e).split("\n"))) from e
    print(result.summary())


def _passwd(args: argparse.Namespace) -> None:
    """Set the admin password of a data directory (the server reads it on each login)."""
    data = DataDir(args.data)
    if not data.path.is_dir():
        raise CommandError(f"{data.path} is not a data directory")
    if args.password_file:
        password = _read_password(args, "")
    else:
        if not sys.stdin.isatty():
            raise CommandError("no terminal to ask for the password: give --password-file")
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ; nothing changed")
    if len(password) < 8:
        raise CommandError("the password needs at least 8 characters; nothing changed")
    try:
        data.change_admin_password(password)
    except OSError as e:
        raise CommandError(f"cannot write in {data.path}: {e.strerror or e}") from e
    print(f"admin password of {data.path} set")


def _audit_verify(args: argparse.Namespace) -> None:
    """Check the audit log's hash chain; name the first broken link."""
    from licenseserver import audit

    data = DataDir(args.data)
    if not data.database.exists():
        raise CommandError(f"{data.path} holds no database")
    try:
        verdict = audit.verify_database(data.database)
    except Exception as e:
        raise CommandError(f"cannot read the audit log in {data.database}: {e}") from e
    if not verdict.ok:
        raise CommandError(
            f"audit log broken at entry {verdict.broken_at}: {verdict.problem}"
            f" ({verdict.entries} entries before it hold)"
        )
    print(f"audit log intact: {verdict.entries} entries")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``licenseserver`` command."""
    parser = _Parser(prog="licenseserver", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    vendor = commands.add_parser("vendor", help="vendor keys and signed licenses")
    vendor_commands = vendor.add_subparsers(dest="vendor_command", required=True)

    keygen = vendor_commands.add_parser("keygen", help="make an Ed25519 key pair")
    keygen.add_argument("--out", required=True, metavar="PREFIX")
    keygen.set_defaults(func=_vendor_keygen)

    issue = vendor_commands.add_parser("issue", help="write a signed license file")
    issue.add_argument("--key", required=True, metavar="PREFIX.key")
    issue.add_argument("--product", required=True)
    issue.add_argument("--kind", required=True)
    issue.add_argument("--seats", required=True, type=int)
    issue.add_argument("--edition", default="")
    issue.add_argument("--cores", type=int, default=0)
    issue.add_argument("--licensee", default="")
    issue.add_argument("--starts", metavar="YYYY-MM-DD")
    issue.add_argument("--expires", metavar="YYYY-MM-DD")
    issue.add_argument("--max-version", metavar="V")
    issue.add_argument("--id", metavar="ID", help="license id (default: L-<year>-<random hex>)")
    issue.add_argument("--out", required=True, metavar="FILE")
    issue.set_defaults(func=_vendor_issue)

    license_ = commands.add_parser("license", help="manage a server's license pool")
    license_commands = license_.add_subparsers(dest="license_command", required=True)
    upload = license_commands.add_parser("upload", help="upload license files")
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--server", default="http://localhost:8088", metavar="URL")
    upload.add_argument("--password-file", metavar="F")
    upload.set_defaults(func=_license_upload)

    status = commands.add_parser("status", help="print the STATUS of a server")
    status.add_argument("--server", default="localhost:35355", metavar="HOST:PORT")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--ca", metavar="FILE", help="speak TLS; trust roots (PEM) to check with")
    status.set_defaults(func=_status)

    upgrade = commands.add_parser("upgrade", help="migrate a data directory to this version")
    upgrade.add_argument("--data", required=True, metavar="DIR")
    upgrade.add_argument(
        "--force",
        action="store_true",
        help="upgrade a failover even when its primary cannot be asked for its version",
    )
    upgrade.set_defaults(func=_upgrade)

    audit_ = commands.add_parser("audit", help="the hash-chained audit log")
    audit_commands = audit_.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the chain of a data directory")
    verify.add_argument("--data", required=True, metavar="DIR")
    verify.set_defaults(func=_audit_verify)

    passwd = commands.add_parser("passwd", help="set the admin password")
    passwd.add_argument("--data", required=True, metavar="DIR")
    passwd.add_argument("--password-file", metavar="F")
    passwd.set_defaults(func=_passwd)

    certs.register(commands, CommandError)
    register_client(commands)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        args.func(args)
    except CommandError as e:
        print(f"licenseserver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    # Run the module's one copy, so that CommandError raised by commands that other
    # modules define (they import licenseserver.cli) is the class main() catches.
    from licenseserver.cli import main as _main

    sys.exit(_main())
