"""Tests for the hash-chained audit log (licenseserver.audit) and what the server writes to it."""

import contextlib
import io
import json
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
