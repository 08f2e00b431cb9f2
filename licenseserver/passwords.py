"""Admin password hashing with scrypt, and the random secrets the server makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 1 << 14, 8, 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; compares in constant time.

    A malformed ``stored`` value matches nothing. This takes tens of
    milliseconds on purpose: callers on the reactor thread run it in a thread.
    """
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_password() -> str:
    """A random admin password that is easy to copy: 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def new_secret() -> str:
    """A random pairing secret: 32 bytes in hex."""
    return secrets.token_hex(32)


def peer_proof(secret: str, challenge: str, name: str) -> str:
    """The failover's AUTH proof: HMAC-SHA256 keyed with the secret over ``challenge|name``."""
    message = f"{challenge}|{name}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def proof_matches(secret: str, challenge: str, name: str, proof: str) -> bool:
    """Whether ``proof`` is the right AUTH proof; compares in constant time."""
    expected = peer_proof(secret, challenge, name)
    return hmac.compare_digest(expected.encode(), proof.encode("utf-8", "replace"))
