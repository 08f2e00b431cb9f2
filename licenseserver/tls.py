"""TLS for the failover's link to the primary: trust roots and host name checks."""

from __future__ import annotations

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
