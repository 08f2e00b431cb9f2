"""Tests for the hash-chained audit log (licenseserver.audit) and what the server writes to it."""

import contextlib
import hashlib
import io
import json
import math
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver import audit, cli, store
from licenseserver.audit import GENESIS, AuditEntry
from licenseserver.store import SQLiteStore
from licenseserver.testing import FakeStore
from tests.helpers import HELLO, hello, licenseFile, makeRole, run, session


def appended(tail, entries):
    """The group that ``audit.append_lines`` makes of ``entries`` after ``tail``."""
    prepared = [(entry, audit.data_text(entry)) for entry in entries]
    lines, (seq, digest) = audit.append_lines(tail, prepared)
    return (seq, tail[1], digest, "\n".join(lines))


def rows(n):
    entries = [AuditEntry(100 + i, "grant", {"i": i, "x": "é"}) for i in range(n)]
    return list(audit.rows_of_groups([appended((0, GENESIS), entries)]))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


WRITTEN = Path(__file__).parent / "data" / "schema2-datadir.json"
"""A data directory as licenseserver 1.0.0 wrote it (schema 2), as the rows of its tables."""


def writtenDataDir(case: unittest.TestCase) -> Path:
    """A data directory holding the rows of ``WRITTEN``, at this version's schema.

    The database is made at the fixture's schema by the migrations up to it,
    takes the fixture's rows, and then goes through any later migration, as
    ``licenseserver upgrade`` would take it.
    """
    fixture = json.loads(WRITTEN.read_text(encoding="ascii"))
    data = Path(case.mktemp())
    data.mkdir()
    conn = store.connect(store.database_path(data), create=True)
    try:
        store.migrate(conn, [m for m in store.MIGRATIONS if m[0] <= fixture["schema"]])
        conn.execute("BEGIN")
        for name, table in fixture["tables"].items():
            columns = ", ".join(table["columns"])
            marks = ", ".join("?" * len(table["columns"]))
            conn.execute(f"DELETE FROM {name}")
            conn.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", table["rows"])
        conn.execute("COMMIT")
        store.migrate(conn)
    finally:
        conn.close()
    return data


def auditCommand(*args: str) -> tuple[int, str, str]:
    """``licenseserver audit ARGS``: its exit status, output and errors."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["audit", *args])
    return status, out.getvalue(), err.getvalue()


PINNED = [
    (
        AuditEntry(
            1_780_000_000,
            "grant",
            {
                "command": "checkout",
                "lease": "l-Q4fdyyn-mvgaRSsZ",
                "machine": "m1",
                "user": "José",
                "product": "XMLSpy",
                "licenses": ["L-2026-0000A001"],
                "expires": 1_780_000_120,
            },
        ),
        '{"data":{"command":"checkout","expires":1780000120,"lease":"l-Q4fdyyn-mvgaRSsZ",'
        '"licenses":["L-2026-0000A001"],"machine":"m1","product":"XMLSpy","user":"José"},'
        '"kind":"grant","seq":1,"time":1780000000}',
        "13cda576b52a7f83683049a5dc01137c25017feaddf5211d6181e5ab8499cc12",
    ),
    (
        AuditEntry(
            1_780_000_001,
            "settings-changed",
            {
                "values": {
                    "borrow_enabled": False,
                    "borrow_max_days": 14,
                    "failover_minimums": {"*": "2024", "Zürich-App": "2025r1"},
                }
            },
        ),
        '{"data":{"values":{"borrow_enabled":false,"borrow_max_days":14,'
        '"failover_minimums":{"*":"2024","Zürich-App":"2025r1"}}},'
        '"kind":"settings-changed","seq":2,"time":1780000001}',
        "52d51359dab9dca0c90684fc14a423dc3111c0b615c385632a07cb153c325060",
    ),
    (
        AuditEntry(
            1_780_000_002,
            "agreement-accepted",
            {"license": "L-2026-0000A001", "by": "Ōsaka 管理者 \U0001f600"},
        ),
        '{"data":{"by":"Ōsaka 管理者 \U0001f600","license":"L-2026-0000A001"},'
        '"kind":"agreement-accepted","seq":3,"time":1780000002}',
        "b09afee025d0399226617b6566edbe16149d66aee092b177cb02129fb14ec61d",
    ),
    (
        AuditEntry(
            1_780_000_003,
            "strings",
            {
                "quote": 'say "hi"',
                "backslash": "C:\\path\\to",
                "slash": "a/b",
                "named": "\b\t\n\f\r",
                "controls": "\x00\x01\x0b\x0e\x1b\x1f",
                "space": " ",
                "delete": "\x7f",
                "latin": "Zürich, Ærø",
                "separators": "\x85\u2028\u2029",
                "bom": "\ufeff",
                "astral": "\U0001f600\U00010348",
                "empty": "",
            },
        ),
        '{"data":{"astral":"\U0001f600\U00010348","backslash":"C:\\\\path\\\\to","bom":"\ufeff",'
        '"controls":"\\u0000\\u0001\\u000b\\u000e\\u001b\\u001f","delete":"\x7f","empty":"",'
        '"latin":"Zürich, Ærø","named":"\\b\\t\\n\\f\\r","quote":"say \\"hi\\"",'
        '"separators":"\x85\u2028\u2029","slash":"a/b","space":" "},'
        '"kind":"strings","seq":4,"time":1780000003}',
        "ca61296758cd73ee860007420be5b40dce6dadb38534237e0c034e8efe276c1d",
    ),
    (
        AuditEntry(
            1_780_000_004,
            "keys",
            {
                "b": 1,
                "a": 2,
                "B": 3,
                "": 4,
                "é": 5,
                "e": 6,
                "\uffff": 7,
                "\U0001f600": 8,
                "a ": 9,
                "a\x00": 10,
            },
        ),
        '{"data":{"":4,"B":3,"a":2,"a\\u0000":10,"a ":9,"b":1,"e":6,"é":5,"\uffff":7,'
        '"\U0001f600":8},"kind":"keys","seq":5,"time":1780000004}',
        "aa22cc0725a23cff8c93316d168c0af5448b758b29d57891550703a3137b155c",
    ),
    (
        AuditEntry(
            1_780_000_005,
            "numbers",
            {
                "zero": 0,
                "negative": -1,
                "max64": 2**63 - 1,
                "past64": 2**64,
                "below": -(2**64) - 1,
                "big": 10**40 + 7,
                "yes": True,
                "no": False,
                "none": None,
            },
        ),
        '{"data":{"below":-18446744073709551617,"big":10000000000000000000000000000000000000007,'
        '"max64":9223372036854775807,"negative":-1,"no":false,"none":null,'
        '"past64":18446744073709551616,"yes":true,"zero":0},"kind":"numbers","seq":6,'
        '"time":1780000005}',
        "8c7797958081c7062ba39617cc58bd003a3c34ae929246c304e2934e2eaab4fd",
    ),
    (
        AuditEntry(
            1_780_000_006,
            "nested",
            {
                "list": [1, "two", [3, [4, []]], {"z": None, "y": {}}],
                "tuple": ("L-1", 2),
                "object": {"inner": {"deeper": [True, False, None]}},
                "empty_list": [],
                "empty_object": {},
            },
        ),
        '{"data":{"empty_list":[],"empty_object":{},"list":[1,"two",[3,[4,[]]],{"y":{},"z":null}],'
        '"object":{"inner":{"deeper":[true,false,null]}},"tuple":["L-1",2]},"kind":"nested",'
        '"seq":7,"time":1780000006}',
        "00fe842bdc5a1fc7a2316a7957463e5d645fc5f72a0cc2361e4469d0bdef8dff",
    ),
    (
        AuditEntry(1_780_000_007, "empty"),
        '{"data":{},"kind":"empty","seq":8,"time":1780000007}',
        "b522218ed6835ad71e39f2fd940bef8d1f212ee66ee283a57b25af3e0b0b411b",
    ),
]
"""Entries ``1..8`` of one chain from ``GENESIS``: each with its canonical text and hash."""

STRINGS_BYTES = (
    b'{"data":{"astral":"\xf0\x9f\x98\x80\xf0\x90\x8d\x88","backslash":"C:\\\\path\\\\to",'
    b'"bom":"\xef\xbb\xbf","controls":"\\u0000\\u0001\\u000b\\u000e\\u001b\\u001f",'
    b'"delete":"\x7f","empty":"","latin":"Z\xc3\xbcrich, \xc3\x86r\xc3\xb8",'
    b'"named":"\\b\\t\\n\\f\\r","quote":"say \\"hi\\"",'
    b'"separators":"\xc2\x85\xe2\x80\xa8\xe2\x80\xa9","slash":"a/b","space":" "},'
    b'"kind":"strings","seq":4,"time":1780000003}'
)
"""The UTF-8 of entry 4 of ``PINNED``: the bytes its hash covers after the hash before it."""


class CanonicalFormTests(unittest.TestCase):
    """The canonical JSON that ``audit.py`` defines, pinned byte for byte."""

    def test_pinnedText(self):
        """Known entries give exactly their pinned text: key order, escapes, numbers."""
        for seq, (entry, text, _) in enumerate(PINNED, start=1):
            self.assertEqual(audit.canonical(seq, entry), text)
            self.assertEqual(
                audit.data_text(entry), text[len('{"data":') : text.index(',"kind":')]
            )

    def test_pinnedHashes(self):
        """Known entries chain to their pinned hashes, as the store appends them."""
        previous = GENESIS
        for seq, (entry, _, digest) in enumerate(PINNED, start=1):
            self.assertEqual(audit.chain(previous, seq, entry), digest)
            previous = digest
        prepared = [(entry, audit.data_text(entry)) for entry, _, _ in PINNED]
        lines, tail = audit.append_lines((0, GENESIS), prepared)
        self.assertEqual(lines, [f"{digest} {text}" for _, text, digest in PINNED])
        self.assertEqual(tail, (len(PINNED), PINNED[-1][2]))

    def test_pinnedBytes(self):
        """The hash is SHA-256 of the previous hash and the text in UTF-8, nothing else."""
        entry, text, digest = PINNED[3]
        previous = PINNED[2][2]
        self.assertEqual(audit.canonical(4, entry).encode("utf-8"), STRINGS_BYTES)
        self.assertEqual(text.encode("utf-8"), STRINGS_BYTES)
        raw = hashlib.sha256(previous.encode("ascii") + STRINGS_BYTES).hexdigest()
        self.assertEqual(raw, digest)

    def test_pinnedChainVerifies(self):
        """The pinned entries, stored as one group, verify."""
        group = appended((0, GENESIS), [entry for entry, _, _ in PINNED])
        self.assertEqual(audit.verify(audit.rows_of_groups([group])), audit.Verdict(len(PINNED)))

    def test_floatsRefused(self):
        """A float, NaN or infinity anywhere in the data has no canonical form: ValueError."""
        for value in (1.5, 1.0, math.nan, math.inf, [0.5], {"deep": {"x": -math.inf}}):
            with self.assertRaises(ValueError):
                audit.data_text(AuditEntry(1, "k", {"v": value}))

    def test_nonStringKeysRefused(self):
        """Object keys must be strings: ``json`` orders number keys as numbers, which a
        stored entry read back would not reproduce."""
        for data in ({10: "a", 9: "b"}, {"v": {1: "a"}}, {"v": [{None: 1}]}, {"v": {True: 1}}):
            with self.assertRaises(ValueError):
                audit.data_text(AuditEntry(1, "k", data))

    def test_loneSurrogatesRefused(self):
        """A string with a lone surrogate has no UTF-8, so no hash: ValueError, in the
        data, in a key or in the kind."""
        for entry in (
            AuditEntry(1, "k", {"by": "x\ud800"}),
            AuditEntry(1, "k", {"v": ["\udfff"]}),
            AuditEntry(1, "k", {"\udc80": 1}),
            AuditEntry(1, "k\ud800", {}),
        ):
            with self.assertRaises(ValueError):
                audit.data_text(entry)

    def test_otherValuesRefused(self):
        """Bytes, sets, other objects, a time that is no integer, a kind that is no string
        and data that is no object are refused with ValueError."""
        for entry in (
            AuditEntry(1, "k", {"v": b"bytes"}),
            AuditEntry(1, "k", {"v": {1, 2}}),
            AuditEntry(1, "k", {"v": object()}),
            AuditEntry(1.0, "k", {}),
            AuditEntry(True, "k", {}),
            AuditEntry(1, 5, {}),
            AuditEntry(1, "k", ["not", "an", "object"]),
        ):
            with self.assertRaises(ValueError):
                audit.data_text(entry)

    def test_verifyReportsValuesNeverWritten(self):
        """A stored line whose values no entry is written with (a lone surrogate, a float)
        breaks the chain at that entry; verify does not fail on it."""
        good = audit.append_lines((0, GENESIS), [(PINNED[0][0], audit.data_text(PINNED[0][0]))])
        (line,), (_, first) = good
        for forged in ('{"by":"\\ud800"}', '{"n":1.5}'):
            text = f'{{"data":{forged},"kind":"grant","seq":2,"time":1}}'
            digest = hashlib.sha256((first + text).encode("utf-8", "surrogatepass")).hexdigest()
            group = (2, GENESIS, digest, f"{line}\n{digest} {text}")
            verdict = audit.verify(audit.rows_of_groups([group]))
            self.assertEqual((verdict.entries, verdict.broken_at), (1, 2))
            self.assertIn("changed", verdict.problem)


class WrittenLogTests(unittest.TestCase):
    """An audit log that an earlier version wrote still verifies."""

    def test_writtenLogVerifies(self):
        """`licenseserver audit verify` passes the log of ``tests/data/schema2-datadir.json``."""
        data = writtenDataDir(self)
        self.assertEqual(
            auditCommand("verify", "--data", str(data)), (0, "audit log intact: 13 entries\n", "")
        )

    def test_writtenLinesAreCanonical(self):
        """Every stored line is the hash and canonical text of the entry it holds, byte
        for byte, so a change of encoding shows here at the entry it touches."""
        conn = sqlite3.connect(store.database_path(writtenDataDir(self)))
        groups = conn.execute("SELECT last, prev, hash, lines FROM audit_log ORDER BY last")
        groups = groups.fetchall()
        conn.close()
        stored = [line for *_, lines in groups for line in lines.split("\n")]
        rows = list(audit.rows_of_groups(groups))
        self.assertEqual(len(rows), 13)
        for line, (seq, time, kind, data, _, digest) in zip(stored, rows, strict=True):
            entry = AuditEntry(time, kind, json.loads(data))
            self.assertEqual(f"{digest} {audit.canonical(seq, entry)}", line)


class ChainTests(unittest.TestCase):
    def test_intact(self):
        """An untouched chain verifies, entry by entry."""
        self.assertEqual(audit.verify(rows(5)), audit.Verdict(5))
        self.assertEqual(audit.verify([]), audit.Verdict(0))

    def test_changedEntry(self):
        """An entry whose data changed breaks the chain at that entry."""
        chain = rows(5)
        seq, time, kind, data, prev, digest = chain[2]
        chain[2] = (seq, time, kind, data.replace("2", "7"), prev, digest)
        verdict = audit.verify(chain)
        self.assertEqual((verdict.broken_at, verdict.entries), (3, 2))
        self.assertIn("changed", verdict.problem)

    def test_removedEntry(self):
        """A removed entry is reported as missing."""
        chain = rows(5)
        del chain[1]
        self.assertEqual(audit.verify(chain).broken_at, 2)

    @settings(max_examples=200, deadline=None)
    @given(
        seq=st.integers(min_value=0, max_value=2**62),
        time=st.integers(min_value=0, max_value=2**40),
        kind=st.text(max_size=20),
        data=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    )
    def test_canonicalIsTheSortedCompactJSON(self, seq, time, kind, data):
        """The hashed text is exactly the compact, key-sorted JSON of the whole entry."""
        body = {"seq": seq, "time": time, "kind": kind, "data": data}
        expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self.assertEqual(audit.canonical(seq, AuditEntry(time, kind, data)), expected)
        group = appended((seq, GENESIS), [AuditEntry(time, kind, data)])
        ((_, _, _, stored, _, digest),) = audit.rows_of_groups([group])
        self.assertEqual(json.loads(stored), data)
        self.assertEqual(digest, audit.chain(GENESIS, seq + 1, AuditEntry(time, kind, data)))
        line = group[3]
        self.assertEqual(
            line, f"{digest} {audit.canonical(seq + 1, AuditEntry(time, kind, data))}"
        )

    def test_oldSpacedDataStillVerifies(self):
        """Entries whose data was stored with spaces after separators verify too."""
        chain = []
        for seq, (_, time, kind, data, prev, digest) in enumerate(rows(3), start=1):
            spaced = json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False)
            self.assertNotEqual(spaced, data)
            chain.append((seq, time, kind, spaced, prev, digest))
        self.assertEqual(audit.verify(chain), audit.Verdict(3))

    def test_rehashedEntry(self):
        """Recomputing a changed entry's own hash still breaks the next link."""
        chain = rows(4)
        seq, time, kind, _, prev, _ = chain[1]
        forged = AuditEntry(time, kind, {"i": 99})
        chain[1] = (seq, time, kind, '{"i": 99}', prev, audit.chain(prev, seq, forged))
        self.assertEqual(audit.verify(chain).broken_at, 3)


class RoleAuditTests(unittest.TestCase):
    def test_operationsAudited(self):
        """Grants, releases, denials and admin changes all reach the audit chain."""
        store = FakeStore()
        role = makeRole(store)
        (lid,) = self.successResultOf(run(role.addLicenses(licenseFile({"seats": 1}))))
        s = hello(role, "m1")
        lease = self.successResultOf(run(role.checkout(s, {})))["lease"]
        run(role.checkout(hello(role, "m2"), {})).addErrback(lambda f: None)
        self.successResultOf(run(role.release(s, {"lease": lease})))
        self.successResultOf(run(role.setLicenseActive(lid, False)))
        self.successResultOf(run(role.updateSettings({"borrow_max_days": 3})))
        kinds = [row[2] for row in store.auditRows]
        self.assertEqual(
            kinds,
            [
                "license-added",
                "grant",
                "denial",
                "release",
                "license-deactivated",
                "settings-changed",
            ],
        )
        self.assertTrue(audit.verify(store.auditRows).ok)


class DatabaseAuditTests(unittest.TestCase):
    async def test_unhashableEntryRefused(self):
        """An entry the chain cannot hash (a lone surrogate) is refused before the store's
        writer sees it; the store goes on, and its chain verifies."""
        from twisted.internet import reactor

        data = Path(self.mktemp())
        data.mkdir()
        path = store.database_path(data)
        s = SQLiteStore(path, reactor)
        await s.open()
        try:
            await s.audit([AuditEntry(1, "grant", {"lease": "l-1"})])
            with self.assertRaises(ValueError):
                await s.audit([AuditEntry(2, "settings-changed", {"values": {"\ud800": "1"}})])
            await s.audit([AuditEntry(3, "release", {"lease": "l-1"})])
        finally:
            await s.close()
        self.assertEqual(audit.verify_database(path), audit.Verdict(2))

    async def test_verifyCommand(self):
        """`licenseserver audit verify` passes an intact log and names the first broken link."""
        from twisted.internet import reactor

        data = Path(self.mktemp())
        data.mkdir()
        store = SQLiteStore(data / "licenseserver.sqlite3", reactor)
        await store.open()
        role = makeRole(store)
        await role.whenLoaded()
        await run(role.addLicenses(licenseFile({"seats": 2})))
        s = session("m1")
        await run(role.hello(s, {**HELLO, "machine": "m1"}))
        await run(role.checkout(s, {}))
        await store.close()

        def verify():
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main(["audit", "verify", "--data", str(data)])
            return status, out.getvalue(), err.getvalue()

        self.assertEqual(verify(), (0, "audit log intact: 2 entries\n", ""))
        conn = sqlite3.connect(data / "licenseserver.sqlite3")
        conn.execute("UPDATE audit_log SET lines = replace(lines, 'm1', 'm9')")
        conn.commit()
        conn.close()
        status, out, err = verify()
        self.assertEqual(status, 1)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("broken at entry 2", err)
