"""The ``licenseserver`` tool: vendor keys and licenses, uploads, status, upgrades.

Every command prints one clear line to stderr and exits non-zero on failure;
``main`` turns a ``CommandError`` into that line, so commands raise it rather
than print and exit themselves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    from licenseserver import signing

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
    from pathlib import Path

    from licenseserver import signing

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
