"""Tests for licenseserver.jsontext: the same text as json, from encoders made once; and
the store reading what an earlier version wrote with them."""

import json
import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver import store
from licenseserver.jsontext import compact_encoder
from licenseserver.model import Lease
from tests.test_audit import writtenDataDir

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(), inner, max_size=4)
    ),
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

    def test_oneStringTuple(self):
        """A tuple of one string, as most change-log keys are, is a one-string array with
        the string written as json writes it."""
        for ensure_ascii in (True, False):
            encode = compact_encoder(ensure_ascii=ensure_ascii)
            for value in (("l-1",), ('é\n"\\',), ("",), ("\U0001f600",)):
                self.assertEqual(encode(value), json.dumps(list(value), ensure_ascii=ensure_ascii))
        self.assertEqual(compact_encoder()(("é",)), '["\\u00e9"]')
        self.assertEqual(compact_encoder(ensure_ascii=False)(("é",)), '["é"]')

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


class WrittenDataTests(unittest.TestCase):
    """What the store wrote with these encoders is parsed back, never hashed: a data
    directory an earlier version wrote reads back whole."""

    async def test_storeReadsWrittenData(self):
        """The records of ``tests/data/schema2-datadir.json`` load from its tables (JSON
        columns) and its change log (rows as JSON arrays), non-ASCII text included."""
        from twisted.internet import reactor

        s = store.SQLiteStore(store.database_path(writtenDataDir(self)), reactor)
        await s.open()
        try:
            snapshot = await s.load()
            events = await s.events(10)
            changes = await s.changesSince(0)
        finally:
            await s.close()
        self.assertEqual(snapshot.revision, 10)
        records = snapshot.records
        self.assertEqual(
            [(r.id, r.licensee, r.active) for r in records["license"]],
            [("L-2026-0000A001", "Ärztekammer Zürich", True), ("L-2026-0000A002", "", False)],
        )
        self.assertEqual(
            {r.name: r.value for r in records["setting"]},
            {
                "borrow_enabled": False,
                "borrow_max_days": 14,
                "failover_minimums": {"*": "2024", "Zürich-App": "2025r1"},
            },
        )
        self.assertEqual(
            [(r.license, r.accepted_by) for r in records["agreement"]],
            [("L-2026-0000A001", "Ōsaka 管理者 \U0001f600")],
        )
        self.assertEqual(
            [(r.client, r.user) for r in records["product"]], [("c-1", "José"), ("c-2", "-")]
        )
        self.assertEqual(
            records["lease"],
            [
                Lease(
                    "l-0OC2GBODqDwt-wN8",
                    "c-1",
                    "m1",
                    "José",
                    "XMLSpy",
                    "2025r2",
                    ("L-2026-0000A001",),
                    "concurrent",
                    1_780_000_000,
                    1_780_000_120,
                    120,
                    False,
                    "r-1",
                )
            ],
        )
        self.assertEqual(
            [e.data for e in events],
            [
                {},
                {"host": "ws1", "machine": "m2", "product": "XMLSpy", "user": "-"},
                {"ids": ["L-2026-0000A001", "L-2026-0000A002"]},
            ],
        )
        self.assertEqual([revision for revision, _ in changes], list(range(1, 11)))
        (deleted,) = changes[4][1]
        self.assertEqual(
            (deleted.kind, deleted.key, deleted.record), ("lease", ("l-Q4fdyyn-mvgaRSsZ",), None)
        )
