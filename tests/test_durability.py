"""What a client hears when the disk refuses a write: a clear error, never a wrong answer."""

from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from licenseserver.protocols.wire import ProtocolError
from licenseserver.store import SQLiteStore
from tests.helpers import HELLO, licenseFile, makeRole, run, session


class StorageRefusalTests(unittest.TestCase):
    async def setUp(self):
        data = Path(self.mktemp())
        data.mkdir()
        self.store = SQLiteStore(data / "licenseserver.sqlite3", reactor)
        await self.store.open()
        self.addCleanup(self.store.close)
        self.role = makeRole(self.store)
        await self.role.whenLoaded()
        await run(self.role.addLicenses(licenseFile({"seats": 1})))
        self.session = session("m1")
        await run(self.role.hello(self.session, {**HELLO, "machine": "m1"}))

    async def refusedCheckout(self):
        try:
            await run(self.role.checkout(self.session, {}))
        except ProtocolError as e:
            return e
        self.fail("CHECKOUT succeeded on a store that cannot write")

    async def test_readOnly(self):
        """A read-only database gives internal-error saying so; no seat is taken."""
        await self.store._runInWriter(lambda conn: conn.execute("PRAGMA query_only=ON"))
        error = await self.refusedCheckout()
        self.assertEqual(error.reason, "internal-error")
        self.assertIn("read-only", error.message)
        self.assertNotIn("sqlite3", error.message)
        self.assertEqual(self.role.pool.count("lease"), 0)
        self.flushLoggedErrors()
        await self.store._runInWriter(lambda conn: conn.execute("PRAGMA query_only=OFF"))
        answer = await run(self.role.checkout(self.session, {}))
        self.assertEqual(self.role.pool.lease(answer["lease"]).machine, "m1")

    async def test_diskFull(self):
        """A full disk gives internal-error saying so, and the pool stays as stored."""

        def fill(conn):
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={pages}")

        await self.store._runInWriter(fill)
        await run(self.role.checkout(self.session, {"request": "x" * 100}))
        errors = []
        for i in range(300):
            try:
                await run(self.role.checkout(self.session, {"request": f"{i}" * 100}))
            except ProtocolError as e:
                errors.append(e)
                break
        self.assertTrue(errors, "the database never filled up")
        self.assertIn("disk is full", errors[0].message)
        self.flushLoggedErrors()
        stored = await self.store.load()
        self.assertEqual(
            sorted(lease.id for lease in stored.records["lease"]),
            sorted(lease.id for lease in self.role.pool.all("lease")),
        )
