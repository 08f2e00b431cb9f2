"""The ``licenseserver`` tool: vendor keys and licenses, the license pool, status, upgrades.

Every command prints one clear line to stderr and exits non-zero on failure;
``main`` turns a ``CommandError`` into that line, so commands raise it rather
than print and exit themselves. The commands that manage a running server's
pool go through its admin API (``AdminAPI``: one place for the request and
its errors); those that read a data directory (``audit``, ``upgrade``,
``passwd``) open its files directly.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import getpass
import http.client
import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from licenseserver import allocation, certs, signing, tls
from licenseserver._version import __version__
from licenseserver.addresses import format_host_port, parse_host_port
from licenseserver.client.cli import register as register_client
from licenseserver.datadir import DataDir
from licenseserver.errors import CommandError


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
            failover_policy=args.failover_policy,
            failover_share=args.failover_share,
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


URL_VARIABLE = "LICENSESERVER_URL"
PASSWORD_FILE_VARIABLE = "LICENSESERVER_PASSWORD_FILE"
PASSWORD_VARIABLE = "LICENSESERVER_PASSWORD"
"""The environment variables that stand in for ``--server`` and the admin password."""


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    """The admin password: ``--password-file``, else the file $LICENSESERVER_PASSWORD_FILE
    names, else $LICENSESERVER_PASSWORD, else a prompt on the terminal."""
    if args.password_file:
        return _read_text(args.password_file).strip()
    if os.environ.get(PASSWORD_FILE_VARIABLE):
        name = os.environ[PASSWORD_FILE_VARIABLE]
        try:
            return _read_text(name).strip()
        except CommandError as e:
            raise CommandError(f"${PASSWORD_FILE_VARIABLE}: {e}") from None
    if os.environ.get(PASSWORD_VARIABLE):
        return os.environ[PASSWORD_VARIABLE]
    if not sys.stdin.isatty():
        raise CommandError(
            f"no password: give --password-file or set {PASSWORD_FILE_VARIABLE}"
            f" or {PASSWORD_VARIABLE}"
        )
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
"""The web port that ``license ... --server HOST`` means when it names no port."""

DEFAULT_ADMIN_SERVER = f"http://localhost:{WEB_PORT}"
"""The admin API that ``license ...`` commands use without --server or $LICENSESERVER_URL."""


def admin_url(server: str, source: str = "--server") -> str:
    """The admin API's base URL for ``license ... --server``, checked before any request.

    ``server`` is an ``http://`` or ``https://`` URL, or a bare ``HOST[:PORT]``
    that means ``http://HOST:PORT`` (port 8088, the web port's default, when
    it names none), as ``status --server`` takes ``HOST[:PORT]`` too. Anything
    else is a CommandError naming the problem (and ``source``, where the value
    came from), rather than an error from deep in urllib.
    """
    if any(c <= " " or c == "\x7f" for c in server):
        raise CommandError(f"{source} {server!r} holds a space or a control character")
    if "://" not in server:
        address = parse_host_port(server, WEB_PORT)
        if address is None:
            raise CommandError(f"{source} {server!r} is neither an http(s) URL nor HOST[:PORT]")
        server = f"http://{format_host_port(*address)}"
    try:
        parts = urllib.parse.urlsplit(server)
        port = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError as e:
        raise CommandError(f"{source} {server!r} is not a valid URL: {e}") from e
    if port == 0:
        raise CommandError(f"{source} {server!r} names port 0")
    if parts.scheme.lower() not in ("http", "https"):
        raise CommandError(f"{source} {server!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise CommandError(f"{source} {server!r} names no host")
    if parts.username is not None:
        raise CommandError(
            f"{source} {server!r} carries a user name; give the password with --password-file"
        )
    if parts.query or parts.fragment:
        raise CommandError(f"{source} {server!r} must not have a query or fragment")
    try:
        parts.hostname.encode("idna")
    except UnicodeError as e:
        raise CommandError(f"{source} {server!r}: {parts.hostname!r} is not a host name") from e
    return server.rstrip("/")


def admin_server(args: argparse.Namespace) -> tuple[str, str]:
    """The admin API a ``license`` command uses, and where that came from.

    ``--server``, else $LICENSESERVER_URL, else ``http://localhost:8088``.
    """
    if args.server:
        return args.server, "--server"
    if os.environ.get(URL_VARIABLE):
        return os.environ[URL_VARIABLE], f"${URL_VARIABLE}"
    return DEFAULT_ADMIN_SERVER, "--server"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError.

    The admin API never redirects; following one would turn the upload's
    POST into a GET of some other page (the login page, say).
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


T = TypeVar("T")


class AdminAPI:
    """The admin API of one server, as the tool's commands call it.

    HTTP Basic with the admin password, redirects refused, and every way a
    request can fail (no connection, an error answer, an answer that is not
    the API's JSON) turned into one CommandError line.
    """

    timeout = 30.0
    """Seconds a request may take."""

    def __init__(self, server: str, password: str, source: str = "--server"):
        """``server`` as ``admin_url`` takes it; ``source`` names where it came from."""
        self.server = server
        self.source = source
        self.base = admin_url(server, source)
        self._token = base64.b64encode(f"admin:{password}".encode()).decode()
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminAPI:
        """The API that ``--server`` (or $LICENSESERVER_URL) names, with the admin password.

        The address is checked before the password is asked for.
        """
        server, source = admin_server(args)
        admin_url(server, source)
        return cls(server, _read_password(args, "admin password: "), source)

    def call(
        self,
        method: str,
        path: str,
        what: str,
        expect: Callable[[Any], T | None],
        body: bytes | None = None,
    ) -> T:
        """Send one request; return ``expect`` of the JSON of its 2xx answer.

        ``what`` names the subject in an error line (a file, a license id).
        ``expect`` returns None for a document that is not the answer the
        API gives, which is reported as an answer from something else.
        """
        url = self.base + path
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Authorization", f"Basic {self._token}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, reason = response.status, response.reason
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise CommandError(f"{what}: {_api_error(e, url, self.source)}") from e
        except (urllib.error.URLError, OSError) as e:
            raise CommandError(f"cannot reach {self.base}: {_reason(e)}") from e
        except (ValueError, http.client.InvalidURL) as e:
            raise CommandError(f"{self.source} {self.server!r} is not a usable URL: {e}") from e
        except http.client.HTTPException as e:
            raise CommandError(
                f"{self.base} gave no HTTP answer ({type(e).__name__});"
                f" {self.source} takes the server's web address"
            ) from e
        try:
            result = expect(json.loads(raw))
        except ValueError:
            result = None
        if result is None:
            raise CommandError(f"{what}: {_not_the_api(url, status, reason, self.source)}")
        return result


def _license_upload(args: argparse.Namespace) -> None:
    """Upload license files through the admin API; print the ids added.

    Files go one at a time, each accepted or refused whole by the server;
    the first refusal stops the command and names the file.
    """
    api = AdminAPI.from_args(args)
    for name in args.files:
        data = _read_bytes(name)
        answer = api.call("POST", "/api/licenses", name, _added_ids, data)
        for license_id in answer["ids"]:
            print(f"{name}: added {license_id}")
        _print_warnings(name, answer)


def _read_bytes(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {name}: {e.strerror or e}") from e


def _print_warnings(name: str, answer: dict[str, Any]) -> None:
    """The warnings of an answer (an expired license, an active failover) on stderr."""
    warnings = list(answer.get("warnings") or [])
    if answer.get("warning"):
        warnings.append(answer["warning"])
    for warning in warnings:
        print(f"licenseserver: warning: {name}: {warning}", file=sys.stderr)


def _added_ids(document: Any) -> dict[str, Any] | None:
    """A ``201 {"ids": [...]}`` answer (with any warnings); None for any other document."""
    ids = document.get("ids") if isinstance(document, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return document


def _vendor_trust(args: argparse.Namespace) -> None:
    """Make a server trust vendor public keys at once (``POST /api/vendor-keys``)."""
    api = AdminAPI.from_args(args)
    for name in args.files:
        answer = api.call("POST", "/api/vendor-keys", name, _key_answer, _read_bytes(name))
        if answer.get("trusted_already"):
            print(f"{name}: vendor key {answer['id']} was trusted already")
        else:
            print(f"{name}: vendor key {answer['id']} is trusted now")
        _print_warnings(name, answer)


def _key_answer(document: Any) -> dict[str, Any] | None:
    """A ``{"id": ...}`` answer of ``POST /api/vendor-keys``; None for any other document."""
    if isinstance(document, dict) and isinstance(document.get("id"), str):
        return document
    return None


def _license_path(license_id: str, action: str = "") -> str:
    path = "/api/licenses/" + urllib.parse.quote(license_id, safe="")
    return f"{path}/{action}" if action else path


def _license_of(license_id: str) -> Callable[[Any], dict[str, Any] | None]:
    """``expect`` for an answer that is the license ``license_id``."""

    def expect(document: Any) -> dict[str, Any] | None:
        if isinstance(document, dict) and document.get("id") == license_id:
            return document
        return None

    return expect


def _license_list_of(document: Any) -> list[dict[str, Any]] | None:
    """``expect`` for ``GET /api/licenses``: a list of licenses, each with an id."""
    if not isinstance(document, list):
        return None
    if not all(isinstance(lic, dict) and isinstance(lic.get("id"), str) for lic in document):
        return None
    return document


LICENSE_COLUMNS = ("ID", "PRODUCT", "EDITION", "KIND", "SEATS", "IN USE", "STATUS", "EXPIRES")


def license_rows(licenses: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The cells of ``license list``'s table, one tuple a license (no header)."""

    def cell(value: Any, empty: str = "-") -> str:
        if value is None or value == "":
            return empty
        return " ".join(str(value).split())

    return [
        (
            cell(lic.get("id")),
            cell(lic.get("product")),
            cell(lic.get("edition")),
            cell(lic.get("kind")),
            cell(lic.get("seats")),
            cell(lic.get("in_use")),
            cell(lic.get("status")),
            cell(lic.get("expires"), "never"),
        )
        for lic in licenses
    ]


def format_table(header: Sequence[str], rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of a table with columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(row[i]) for row in [tuple(header), *rows]) for i in range(len(header))]
    return [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in [tuple(header), *rows]
    ]


def _license_list(args: argparse.Namespace) -> None:
    """Print the server's license pool: a table, or the API's JSON with --json."""
    api = AdminAPI.from_args(args)
    licenses = api.call("GET", "/api/licenses", "GET /api/licenses", _license_list_of)
    if args.json:
        print(json.dumps(licenses, indent=1, sort_keys=True))
    elif not licenses:
        print("no licenses in the pool")
    else:
        for line in format_table(LICENSE_COLUMNS, license_rows(licenses)):
            print(line)


def _license_switch(args: argparse.Namespace) -> None:
    """Activate or deactivate licenses, one at a time; stop at the first refusal."""
    api = AdminAPI.from_args(args)
    done = {"activate": "activated", "deactivate": "deactivated"}[args.action]
    for license_id in args.ids:
        lic = api.call(
            "POST", _license_path(license_id, args.action), license_id, _license_of(license_id)
        )
        print(f"{license_id}: {done} (status {lic.get('status')})")


def _license_delete(args: argparse.Namespace) -> None:
    """Delete licenses from the pool, with their assignments and leases; stop at the first
    refusal."""
    api = AdminAPI.from_args(args)
    for license_id in args.ids:

        def deleted(document: Any, license_id: str = license_id) -> bool | None:
            ok = isinstance(document, dict) and document.get("deleted") == license_id
            return True if ok else None

        api.call("DELETE", _license_path(license_id), license_id, deleted)
        print(f"{license_id}: deleted")


def _not_the_api(url: str, status: int, reason: str, source: str = "--server") -> str:
    """The line for an answer that is not the admin API's JSON (a web page, another server)."""
    return (
        f"the answer from {url} (HTTP {status} {reason}) is not the admin API's JSON;"
        f" is {source} the web address of a license server?"
    )


def _api_error(error: urllib.error.HTTPError, url: str, source: str = "--server") -> str:
    """The API's JSON error of a failed request, with its reason token when it has one.

    An error answer without that JSON (a redirect, a web page, another
    server) is named as such, with its HTTP status.
    """
    try:
        body = json.loads(error.read())
        message = body["error"]
        reason = body.get("reason")
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException):
        return _not_the_api(url, error.code, error.reason, source)
    if not isinstance(message, str):
        return _not_the_api(url, error.code, error.reason, source)
    return f"{error.code} {reason}: {message}" if reason else f"{error.code} {message}"


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return getattr(reason, "strerror", None) or str(reason)


def _status(args: argparse.Namespace) -> None:
    """Ask a server for its STATUS over the licensing port and print it.

    With ``--ca`` over TLS, checking the server's certificate as the
    failover's link does (``lineclient.blockingRequest``).
    """
    from twisted.python import usage

    from licenseserver.protocols import lineclient

    address = parse_host_port(args.server)
    if address is None:
        raise CommandError(f"{args.server!r} is not HOST[:PORT]")
    host, port = address
    options = None
    if args.ca:
        try:
            options = tls.clientOptions(host, args.ca)
        except usage.UsageError as e:
            raise CommandError(str(e)) from e
        except ValueError as e:
            raise CommandError(f"cannot reach {args.server}: {host!r} is not a host name") from e
    try:
        reply = lineclient.blockingRequest(host, port, "STATUS", timeout=10, tlsOptions=options)
    except lineclient.TLSFailed as e:
        raise CommandError(f"TLS with {args.server} failed: {e}") from e
    except lineclient.JunkAnswer as e:
        raise CommandError(f"{args.server} did not answer STATUS: {e.why}") from e
    except (lineclient.OverlongLine, lineclient.Disconnected) as e:
        raise CommandError(f"{args.server} did not answer STATUS: {e}") from e
    except lineclient.LineClientError as e:
        raise CommandError(f"cannot reach {args.server}: {e}") from e
    response = reply.response
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


def since_time(text: str) -> int:
    """``--since``: a date ``YYYY-MM-DD`` (its first second, UTC) or Unix seconds."""
    if re.fullmatch(r"[0-9]{1,18}", text):
        return int(text)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r} is not a date: {e}") from None
        start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
        return int(start.timestamp())
    raise argparse.ArgumentTypeError(f"{text!r} is neither YYYY-MM-DD nor Unix seconds")


def audit_entries(
    database: Path, since: int | None = None, kinds: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """The audit log's entries, oldest first, read only: ``{seq, time, kind, data}`` each.

    ``since`` keeps entries of that Unix time or later, ``kinds`` those of
    these kinds. An entry that does not read as one is always given, as
    ``{seq, unreadable}``; the chain itself is ``audit verify``'s to check.
    """
    from licenseserver import audit

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        groups = conn.execute("SELECT last, prev, hash, lines FROM audit_log ORDER BY last")
        for seq, when, kind, data, _, _ in audit.rows_of_groups(groups):
            if not kind:
                yield {"seq": seq, "unreadable": data}
                continue
            if since is not None and when < since:
                continue
            if kinds and kind not in kinds:
                continue
            yield {"seq": seq, "time": when, "kind": kind, "data": json.loads(data)}
    finally:
        conn.close()


def _utc(timestamp: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def audit_line(entry: dict[str, Any]) -> str:
    """One entry of ``audit show`` for people: time, number, kind and ``key=value`` details."""
    if "unreadable" in entry:
        return f"#{entry['seq']}: unreadable entry (licenseserver audit verify says more)"
    details = " ".join(
        f"{key}={value}"
        if isinstance(value, str) and value and " " not in value and value.isprintable()
        else f"{key}={json.dumps(value, ensure_ascii=False, sort_keys=True)}"
        for key, value in sorted(entry["data"].items())
    )
    return f"{_utc(entry['time'])}  #{entry['seq']}  {entry['kind']}  {details}".rstrip()


def _audit_show(args: argparse.Namespace) -> None:
    """Print the audit log's entries (since a time, of some kinds), oldest first."""
    data = DataDir(args.data)
    if not data.database.exists():
        raise CommandError(f"{data.path} holds no database")
    kinds = tuple(args.kind or ())
    try:
        if args.json:
            entries = list(audit_entries(data.database, args.since, kinds))
            print(json.dumps(entries, indent=1, sort_keys=True, ensure_ascii=False))
        else:
            for entry in audit_entries(data.database, args.since, kinds):
                print(audit_line(entry))
    except (sqlite3.Error, ValueError) as e:
        raise CommandError(f"cannot read the audit log in {data.database}: {e}") from e


def _admin_options(parser: argparse.ArgumentParser) -> None:
    """``--server`` and ``--password-file`` of a command that calls the admin API."""
    parser.add_argument(
        "--server",
        metavar="URL",
        help="the server's web address: an http(s) URL, or HOST[:PORT] for http://HOST:PORT"
        f" (port {WEB_PORT} when none is given); default: ${URL_VARIABLE},"
        f" else {DEFAULT_ADMIN_SERVER}",
    )
    parser.add_argument(
        "--password-file",
        metavar="F",
        help=f"the admin password's file; default: ${PASSWORD_FILE_VARIABLE},"
        f" else ${PASSWORD_VARIABLE}, else a prompt",
    )


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
    issue.add_argument(
        "--failover-policy",
        choices=allocation.PARTITION_POLICIES,
        help="what a cut between primary and failover may do (default: the server's setting)",
    )
    issue.add_argument(
        "--failover-share",
        metavar="20%|N",
        help="with --failover-policy exact: the seats held for the failover, a percentage"
        " or a count (default: the server's setting)",
    )
    issue.add_argument("--out", required=True, metavar="FILE")
    issue.set_defaults(func=_vendor_issue)

    trust = vendor_commands.add_parser(
        "trust", help="make a server trust vendor public keys (PREFIX.pub), without a restart"
    )
    trust.add_argument("files", nargs="+", metavar="PREFIX.pub")
    _admin_options(trust)
    trust.set_defaults(func=_vendor_trust)

    license_ = commands.add_parser("license", help="manage a server's license pool")
    license_commands = license_.add_subparsers(dest="license_command", required=True)
    upload = license_commands.add_parser("upload", help="upload license files")
    upload.add_argument("files", nargs="+", metavar="FILE")
    _admin_options(upload)
    upload.set_defaults(func=_license_upload)

    list_ = license_commands.add_parser("list", help="list the license pool")
    list_.add_argument("--json", action="store_true", help="print the admin API's JSON")
    _admin_options(list_)
    list_.set_defaults(func=_license_list)

    for action, what in [
        ("activate", "let licenses give seats again"),
        ("deactivate", "stop licenses giving new seats (running leases keep theirs)"),
    ]:
        switch = license_commands.add_parser(action, help=what)
        switch.add_argument("ids", nargs="+", metavar="ID")
        _admin_options(switch)
        switch.set_defaults(func=_license_switch, action=action)

    delete = license_commands.add_parser(
        "delete", help="remove licenses with their assignments and leases"
    )
    delete.add_argument("ids", nargs="+", metavar="ID")
    _admin_options(delete)
    delete.set_defaults(func=_license_delete)

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
    show = audit_commands.add_parser(
        "show", help="print the entries of a data directory's log (read only)"
    )
    show.add_argument("--data", required=True, metavar="DIR")
    show.add_argument(
        "--since",
        type=since_time,
        metavar="WHEN",
        help="entries from this time on: YYYY-MM-DD (UTC) or Unix seconds",
    )
    show.add_argument(
        "--kind", action="append", metavar="K", help="entries of this kind only; may repeat"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_audit_show)

    passwd = commands.add_parser("passwd", help="set the admin password")
    passwd.add_argument("--data", required=True, metavar="DIR")
    passwd.add_argument("--password-file", metavar="F")
    passwd.set_defaults(func=_passwd)

    certs.register(commands)
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
    sys.exit(main())
