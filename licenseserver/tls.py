"""TLS for the failover's link to the primary, and the tools' Python ``ssl`` contexts.

Both check a server's certificate alike on every Python: see
``python_client_context`` for what Python 3.13 changed.
"""

from __future__ import annotations

import ssl as stdlib_ssl
from pathlib import Path
from typing import Any

from twisted.internet import ssl
from twisted.python import usage


def load_trust_roots(path: str | Path) -> Any:
    """The certificates of a PEM file as a Twisted trust root.

    Raises ``UsageError`` with one line for a file that cannot be read or
    holds no certificate.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise usage.UsageError(f"cannot read {path}: {e.strerror or e}") from None
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise usage.UsageError(f"{path} holds no PEM certificate")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise usage.UsageError(f"{path}: not a PEM certificate: {e}") from None
    return ssl.trustRootFromCertificates(certificates)


def clientOptions(host: str, ca: str | Path) -> Any:
    """Client TLS options that accept only a certificate for ``host`` under ``ca``."""
    return ssl.optionsForClientTLS(host, trustRoot=load_trust_roots(ca))


def python_client_context(cafile: str | Path | None = None) -> stdlib_ssl.SSLContext:
    """A client context of Python's ``ssl`` module that checks like the failover's link.

    It trusts the certificates in ``cafile`` (else the system's) and checks
    the host name.

    Python 3.13's default context also sets ``VERIFY_X509_STRICT``, which
    refuses a CA certificate without a key usage extension, as many company
    CAs made with older tools are, and ``VERIFY_X509_PARTIAL_CHAIN``, which
    accepts an intermediate certificate as a trust root. Both are cleared here
    so that the tools accept exactly what the server's own TLS (pyOpenSSL,
    which sets neither) accepts, on every Python: a CA without key usage is
    trusted, an intermediate alone is not. Raises what
    ``ssl.create_default_context`` raises for an unusable ``cafile``.
    """
    context = stdlib_ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    context.verify_flags &= ~(stdlib_ssl.VERIFY_X509_STRICT | stdlib_ssl.VERIFY_X509_PARTIAL_CHAIN)
    return context
