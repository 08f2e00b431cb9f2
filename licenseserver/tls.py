"""TLS settings shared by every endpoint: the suites offered, trust roots and options.

Every TLS connection of the project, the server's ``ssl:`` ports (licensing and
web), the failover's link to the primary, the client SDK's TLS endpoints and the
tools that ask a server over TLS (``licenseserver status --ca``, the upgrade's
question to a failover's primary), speaks TLS 1.2 or 1.3 and offers only the
suites in ``CIPHERS`` under TLS 1.2, so that both sides of every link offer
the same list. All of them are Twisted's TLS over pyOpenSSL with the options
made here (``serverOptions``, ``clientOptions``), so every client checks a
certificate the same way, on every Python (see ``clientOptionsTrusting``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.python import usage
from twisted.python.filepath import FilePath

ECDHE_CIPHERS = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
]
DHE_CIPHERS = [
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
]
CIPHERS = ":".join(ECDHE_CIPHERS + DHE_CIPHERS)
"""The TLS 1.2 suites offered and accepted, as an OpenSSL cipher string.

The AEAD suites of Mozilla's "intermediate" profile, in its order: forward
secret key exchange with AES-GCM or ChaCha20-Poly1305, and no CBC suite (whose
MAC-then-encrypt design is what LUCKY13 and its kin attack). Clients offer all
of them; a server offers the ``DHE`` ones only when it is given Diffie-Hellman
parameters (``dhParameters=``), since some OpenSSL versions would otherwise
pick parameters of their own. TLS 1.3 suites are not set here: OpenSSL's own
(AES-GCM and ChaCha20-Poly1305) are all AEAD.
"""

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS version spoken, by servers and clients alike."""


@functools.cache
def acceptableCiphers(dhe: bool = True) -> Any:
    """``CIPHERS`` as Twisted's ``IAcceptableCiphers`` (with OpenSSL's TLS 1.3 suites).

    Without ``dhe``, the ``DHE`` suites are left out.
    """
    return ssl.AcceptableCiphers.fromOpenSSLCipherString(
        CIPHERS if dhe else ":".join(ECDHE_CIPHERS)
    )


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


def clientOptions(host: str, ca: str | Path | None = None) -> Any:
    """Client TLS options that accept only a certificate for ``host`` under ``ca``.

    ``ca`` is a PEM file of trust roots (see ``load_trust_roots``); without it
    the system's trust store is used. The failover's link (``--primary-ca``)
    and the tools (``status --ca``, the upgrade's question) use these.
    """
    return clientOptionsTrusting(host, load_trust_roots(ca) if ca is not None else None)


def clientOptionsTrusting(host: str, trustRoot: Any = None) -> Any:
    """Client TLS options for ``host`` under a Twisted trust root (None: the system's).

    TLS 1.2 or 1.3, offering only the suites of ``CIPHERS`` (and TLS 1.3's).
    The checks are OpenSSL's defaults through pyOpenSSL, the same on every
    Python: a CA certificate without a key usage extension is trusted, an
    intermediate certificate alone is no trust root. (Python 3.13's
    ``ssl.create_default_context`` sets ``VERIFY_X509_STRICT`` and
    ``VERIFY_X509_PARTIAL_CHAIN``, which decide both the other way; they
    belong to its ``ssl`` module, and pyOpenSSL sets neither.)
    """
    return ssl.optionsForClientTLS(
        host,
        trustRoot=trustRoot,
        extraCertificateOptions={
            "acceptableCiphers": acceptableCiphers(),
            "raiseMinimumTo": MINIMUM_VERSION,
        },
    )


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def serverOptions(
    privateKey: str | Path,
    certKey: str | Path | None = None,
    *,
    extraCertChain: str | Path | None = None,
    dhParameters: str | Path | None = None,
) -> Any:
    """Server TLS options from the files an ``ssl:`` endpoint names, as Twisted reads them.

    ``privateKey`` is the PEM key file, ``certKey`` the PEM certificate file
    (``privateKey`` when not given; only its first certificate is used),
    ``extraCertChain`` a PEM file of intermediate certificates to send along
    and ``dhParameters`` a PEM file of Diffie-Hellman parameters for the
    ``DHE`` suites. Offers TLS 1.2 and 1.3 with the suites of ``CIPHERS`` only,
    the ``DHE`` ones only with ``dhParameters``. Raises ``OSError`` for a file
    that cannot be read, and an exception that says what is wrong for one
    without the PEM it should hold.
    """
    certKey = privateKey if certKey is None else certKey
    certificate = ssl.PrivateCertificate.loadPEM(
        Path(certKey).read_bytes() + b"\n" + Path(privateKey).read_bytes()
    )
    chain = None
    if extraCertChain is not None:
        blocks = _PEM_CERTIFICATE.findall(Path(extraCertChain).read_bytes())
        if not blocks:
            raise ValueError(f"{extraCertChain} holds no PEM certificate")
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks]
    dh = None
    if dhParameters is not None:
        # OpenSSL reads the file for each connection: one that cannot be read
        # or holds no parameters stops the start instead of every handshake.
        path = str(dhParameters)
        Path(path).read_bytes()
        try:
            SSL.Context(SSL.TLS_METHOD).load_tmp_dh(path)
        except SSL.Error:
            raise ValueError(f"{path} holds no PEM Diffie-Hellman parameters") from None
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(path))
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain,
        dhParameters=dh,
        acceptableCiphers=acceptableCiphers(dhe=dh is not None),
        raiseMinimumTo=MINIMUM_VERSION,
    )
