"""The ``licenseserver`` tool: vendor keys and licenses, uploads, status, upgrades.

Every command prints one clear line to stderr and exits non-zero on failure;
``main`` turns a ``CommandError`` into that line, so commands raise it rather
than print and exit themselves.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from licenseserver import certs, signing, tls
from licenseserver._version import __version__
from licenseserver.addresses import format_host_port, parse_host_port
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
    if not os.path.basename(args.out):
        raise CommandError(f"--out {args.out!r} names a directory; give DIR/NAME as the prefix")
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
        return _read_text(args.password_file).strip()
    if os.environ.get("LICENSESERVER_PASSWORD"):
        return os.environ["LICENSESERVER_PASSWORD"]
    if not sys.stdin.isatty():
        raise CommandError("no password: give --password-file or set LICENSESERVER_PASSWORD")
    return _prompt(prompt)


def _read_text(name: str) -> str:
    """The UTF-8 text of file ``name``; a missing, unreadable or binary file is a CommandError."""
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as e:
        raise CommandError(f"cannot read {name}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise CommandError(f"cannot read {name}: not UTF-8 text") from e


def _prompt(prompt: str) -> str:
    """Ask on the terminal without echo; end of input (Ctrl-D) gives up in one line."""
    try:
        return getpass.getpass(prompt)
    except EOFError as e:
        raise CommandError("no password given; nothing done") from e


WEB_PORT = 8088
"""The web port that ``license upload --server HOST`` means when it names no port."""


def admin_url(server: str) -> str:
    """The admin API's base URL for ``license upload --server``, checked before any request.

    ``server`` is an ``http://`` or ``https://`` URL, or a bare ``HOST[:PORT]``
    that means ``http://HOST:PORT`` (port 8088, the web port's default, when
    it names none), as ``status --server`` takes ``HOST[:PORT]`` too. Anything
    else is a CommandError naming the problem, rather than an error from deep
    in urllib.
    """
    if any(c <= " " or c == "\x7f" for c in server):
        raise CommandError(f"--server {server!r} holds a space or a control character")
    if "://" not in server:
        address = parse_host_port(server, WEB_PORT)
        if address is None:
            raise CommandError(f"--server {server!r} is neither an http(s) URL nor HOST[:PORT]")
        server = f"http://{format_host_port(*address)}"
    try:
        parts = urllib.parse.urlsplit(server)
        port = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError as e:
        raise CommandError(f"--server {server!r} is not a valid URL: {e}") from e
    if port == 0:
        raise CommandError(f"--server {server!r} names port 0")
    if parts.scheme.lower() not in ("http", "https"):
        raise CommandError(f"--server {server!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise CommandError(f"--server {server!r} names no host")
    if parts.username is not None:
        raise CommandError(
            f"--server {server!r} carries a user name; give the password with --password-file"
        )
    if parts.query or parts.fragment:
        raise CommandError(f"--server {server!r} must not have a query or fragment")
    try:
        parts.hostname.encode("idna")
    except UnicodeError as e:
        raise CommandError(f"--server {server!r}: {parts.hostname!r} is not a host name") from e
    return server.rstrip("/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError.

    The admin API never redirects; following one would turn the upload's
    POST into a GET of some other page (the login page, say).
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _license_upload(args: argparse.Namespace) -> None:
    """Upload license files through the admin API; print the ids added.

    Files go one at a time, each accepted or refused whole by the server;
    the first refusal stops the command and names the file.
    """
    base = admin_url(args.server)
    url = base + "/api/licenses"
    password = _read_password(args, "admin password: ")
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    opener = urllib.request.build_opener(_NoRedirect)
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as e:
            raise CommandError(f"cannot read {name}: {e.strerror or e}") from e
        request = urllib.request.Request(url, data=data, method="POST")
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with opener.open(request, timeout=30) as response:
                status, reason = response.status, response.reason
                body = response.read()
        except urllib.error.HTTPError as e:
            raise CommandError(f"{name}: {_api_error(e, url)}") from e
        except (urllib.error.URLError, OSError) as e:
            raise CommandError(f"cannot reach {base}: {_reason(e)}") from e
        except (ValueError, http.client.InvalidURL) as e:
            raise CommandError(f"--server {args.server!r} is not a usable URL: {e}") from e
        except http.client.HTTPException as e:
            raise CommandError(
                f"{base} gave no HTTP answer ({type(e).__name__});"
                " --server takes the server's web address"
            ) from e
        ids = _added_ids(body)
        if ids is None:
            raise CommandError(f"{name}: {_not_the_api(url, status, reason)}")
        for license_id in ids:
            print(f"{name}: added {license_id}")


def _added_ids(body: bytes) -> list[str] | None:
    """The license ids of a ``201 {"ids": [...]}`` answer; None for any other body."""
    try:
        ids = json.loads(body)["ids"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def _not_the_api(url: str, status: int, reason: str) -> str:
    """The line for an answer that is not the admin API's JSON (a web page, another server)."""
    return (
        f"the answer from {url} (HTTP {status} {reason}) is not the admin API's JSON;"
        " is --server the web address of a license server?"
    )


def _api_error(error: urllib.error.HTTPError, url: str) -> str:
    """The API's JSON error of a failed request, with its reason token when it has one.

    An error answer without that JSON (a redirect, a web page, another
    server) is named as such, with its HTTP status.
    """
    try:
        body = json.loads(error.read())
        message = body["error"]
        reason = body.get("reason")
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
        return _not_the_api(url, error.code, error.reason)
    if not isinstance(message, str):
        return _not_the_api(url, error.code, error.reason)
    return f"{error.code} {reason}: {message}" if reason else f"{error.code} {message}"


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return getattr(reason, "strerror", None) or str(reason)


def _status(args: argparse.Namespace) -> None:
    """Ask a server for its STATUS over the licensing port and print it."""
    address = parse_host_port(args.server)
    if address is None:
        raise CommandError(f"{args.server!r} is not HOST[:PORT]")
    context = None
    if args.ca:
        try:
            context = tls.python_client_context(args.ca)
        except ssl.SSLError as e:
            raise CommandError(f"{args.ca} holds no PEM certificate: {e.reason or e}") from e
        except OSError as e:
            raise CommandError(f"cannot read {args.ca}: {e.strerror or e}") from e
    try:
        with socket.create_connection(address, timeout=10) as raw:
            conn = raw
            if context is not None:
                conn = context.wrap_socket(raw, server_hostname=address[0])
            conn.sendall(wire.format_request("STATUS"))
            line = conn.makefile("rb").readline(wire.MAX_LINE)
    except ssl.SSLError as e:
        raise CommandError(f"TLS with {args.server} failed: {e.reason or e}") from e
    except OSError as e:
        raise CommandError(f"cannot reach {args.server}: {e.strerror or e}") from e
    except UnicodeError as e:
        raise CommandError(f"cannot reach {args.server}: {address[0]!r} is not a host name") from e
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
        password = _prompt("new admin password: ")
        if _prompt("again: ") != password:
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
    upload.add_argument(
        "--server",
        default="http://localhost:8088",
        metavar="URL",
        help="the server's web address: an http(s) URL, or HOST[:PORT] for http://HOST:PORT"
        f" (port {WEB_PORT} when none is given); default: %(default)s",
    )
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
