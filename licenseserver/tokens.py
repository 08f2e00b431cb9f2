"""Random URL-safe tokens (lease ids), drawn from the OS a block at a time.

``secrets.token_urlsafe`` asks the OS for randomness on every call, and that
system call lets go of the GIL. On a busy server each let-go in the middle of
the reactor thread's work hands the GIL to the store's writer thread, which
is waiting for it, and the reactor then waits to get it back: with pipelined
clients a lease id per CHECKOUT cost a quarter of the server's CPU in such
handoffs (docs/performance.md, round 5). ``RandomTokens`` makes one call per
block of tokens instead; the bytes are the same CSPRNG output, each used once.
"""

from __future__ import annotations

import os
from base64 import urlsafe_b64encode
from collections.abc import Callable

DEFAULT_PER_BLOCK = 256
"""Tokens drawn per system call (3 KiB of randomness for 12-byte tokens)."""


class RandomTokens:
    """A callable that returns a new token of ``size`` random bytes, base64url without
    padding (the shape of ``secrets.token_urlsafe(size)``).

    The block is drawn when the first token is wanted, not at construction, so that
    a process that forks after building its services (``twistd`` does) never hands
    the same bytes to two processes.
    """

    def __init__(
        self,
        size: int = 12,
        perBlock: int = DEFAULT_PER_BLOCK,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if size < 1 or perBlock < 1:
            raise ValueError("size and perBlock must be at least 1")
        self._size = size
        self._blockSize = size * perBlock
        self._urandom = urandom
        self._block = b""
        self._offset = 0

    def __call__(self) -> str:
        size, offset = self._size, self._offset
        if offset + size > len(self._block):
            self._block, offset = self._urandom(self._blockSize), 0
        self._offset = offset + size
        return urlsafe_b64encode(self._block[offset : offset + size]).rstrip(b"=").decode("ascii")
