"""Tests for reading JSON from outside (licenseserver.jsonparse)."""

from __future__ import annotations

import json

from twisted.trial import unittest

from licenseserver import jsonparse


class LoadsTests(unittest.TestCase):
    def test_plain(self):
        """Ordinary JSON reads as ``json`` reads it; bytes are UTF-8, a BOM is dropped."""
        text = '{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}'
        self.assertEqual(jsonparse.loads(text), json.loads(text))
        self.assertEqual(jsonparse.loads("\ufeff[1]".encode()), [1])

    def test_duplicateKey(self):
        """A key given twice, at any depth, is refused and named."""
        for text in ('{"a":1,"a":2}', '[{"b":{"a":1,"a":1}}]'):
            with self.assertRaisesRegex(ValueError, "'a' appears twice"):
                jsonparse.loads(text)

    def test_depth(self):
        """Nesting up to max_depth is read; one level more is refused, however deep."""
        self.assertEqual(jsonparse.loads("[" * 32 + "]" * 32, 32), _nested(32))
        for depth in (33, 1000, 100_000):
            with self.assertRaisesRegex(ValueError, "nest deeper than 32 levels"):
                jsonparse.loads("[" * depth + "]" * depth, 32)
        with self.assertRaisesRegex(ValueError, "nest deeper than 2 levels"):
            jsonparse.loads('{"a": {"b": [1]}}', 2)
        self.assertEqual(jsonparse.loads('{"a": {"b": 1}}', 2), {"a": {"b": 1}})

    def test_constantsAndDigits(self):
        """NaN, Infinity and integers past Python's digit limit are ValueErrors."""
        for text in ("NaN", "[Infinity]", "-Infinity", "9" * 5000):
            self.assertRaises(ValueError, jsonparse.loads, text)

    def test_loneSurrogates(self):
        """A lone surrogate, as a value or as a key, at any depth, is refused."""
        for text in ('"\\ud800"', '{"\\udfff": 1}', '[{"a": ["x\\ud800y"]}]'):
            with self.assertRaisesRegex(ValueError, "lone surrogate"):
                jsonparse.loads(text)
        self.assertEqual(jsonparse.loads('"\\ud83d\\ude00"'), "\U0001f600")

    def test_notUTF8(self):
        """Bytes that are not UTF-8 are a ValueError that says so."""
        with self.assertRaisesRegex(ValueError, "not UTF-8"):
            jsonparse.loads(b'{"a": "\xff"}')


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value
