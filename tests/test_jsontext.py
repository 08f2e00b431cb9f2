"""Tests for licenseserver.jsontext: the same text as json, from encoders made once."""

import json
import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver.jsontext import compact_encoder

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _reference(ensure_ascii: bool, allow_nan: bool):
    return json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan
    ).encode


class CompactEncoderTests(unittest.TestCase):
    @given(_values, st.booleans(), st.booleans())
    def test_sameTextAsJson(self, value, ensure_ascii, allow_nan):
        """Any JSON value gives exactly the text of json's compact, key-sorted encoder."""
        encode = compact_encoder(ensure_ascii=ensure_ascii, allow_nan=allow_nan)
        self.assertEqual(encode(value), _reference(ensure_ascii, allow_nan)(value))

    def test_reusable(self):
        """One encoder encodes one value after another, each on its own."""
        encode = compact_encoder()
        self.assertEqual(encode({"b": 1, "a": [True, None]}), '{"a":[true,null],"b":1}')
        self.assertEqual(encode("é"), '"\\u00e9"')
        self.assertEqual(compact_encoder(ensure_ascii=False)("é"), '"é"')
        self.assertEqual(encode(("t", 1)), '["t",1]')

    def test_notJson(self):
        """A value that is not JSON raises TypeError, and the encoder still works after."""
        encode = compact_encoder()
        for value in (object(), {"a": {1, 2}}, b"bytes", {(1, 2): "tuple key"}):
            with self.assertRaises(TypeError):
                encode(value)
        self.assertEqual(encode([1]), "[1]")

    def test_nan(self):
        """NaN and infinities are refused with ValueError when allow_nan is false."""
        encode = compact_encoder(allow_nan=False)
        for value in (math.nan, math.inf, [-math.inf]):
            with self.assertRaises(ValueError):
                encode(value)
        self.assertEqual(compact_encoder(allow_nan=True)(math.inf), "Infinity")
