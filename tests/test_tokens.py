"""Tests for licenseserver.tokens: random lease ids, a block of OS randomness at a time."""

from __future__ import annotations

import base64
import os
import secrets

from twisted.trial import unittest

from licenseserver.tokens import RandomTokens


class RandomTokensTests(unittest.TestCase):
    def countingUrandom(self) -> tuple[list[int], object]:
        calls: list[int] = []

        def urandom(n: int) -> bytes:
            calls.append(n)
            return os.urandom(n)

        return calls, urandom

    def test_shapeOfTokenUrlsafe(self) -> None:
        """A token reads like ``secrets.token_urlsafe(size)``: the same length and
        alphabet, and it decodes back to ``size`` bytes."""
        tokens = RandomTokens(size=12)
        expected = len(secrets.token_urlsafe(12))
        for _ in range(1000):
            token = tokens()
            self.assertEqual(len(token), expected)
            self.assertEqual(len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))), 12)
            self.assertNotIn("=", token)

    def test_oneSystemCallPerBlock(self) -> None:
        """The OS is asked for randomness once per block of tokens, and only when a
        token is first wanted (never at construction, which may precede a fork)."""
        calls, urandom = self.countingUrandom()
        tokens = RandomTokens(size=12, perBlock=100, urandom=urandom)
        self.assertEqual(calls, [])
        for _ in range(250):
            tokens()
        self.assertEqual(calls, [1200, 1200, 1200])

    def test_everyByteUsedOnce(self) -> None:
        """Tokens are consecutive, non-overlapping slices of what the OS gave."""
        given: list[bytes] = []

        def urandom(n: int) -> bytes:
            given.append(os.urandom(n))
            return given[-1]

        tokens = RandomTokens(size=12, perBlock=4, urandom=urandom)
        drawn = [tokens() for _ in range(8)]
        decoded = b"".join(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)) for t in drawn)
        self.assertEqual(decoded, b"".join(given))
        self.assertEqual(len(set(drawn)), 8)

    def test_badSizes(self) -> None:
        """A size or block of less than one is refused."""
        for size, per in ((0, 10), (12, 0), (-1, 10)):
            with self.assertRaises(ValueError):
                RandomTokens(size=size, perBlock=per)
