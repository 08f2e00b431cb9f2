"""Freeing a stuck seat: ``DELETE /api/leases/{id}`` and Client Monitoring's button.

An admin ends a live or borrowed lease at once. The seat is free; the lease
stays, revoked, while its holder may still count on it, so that its next
HEARTBEAT (or a CHECKOUT retried under its request key) gets ``410 revoked``
(PROTOCOL.md), and the client SDK takes no other seat on its own. The audit
log records who did it; the failover learns it with the next sync.
"""

from __future__ import annotations

import json

from licenseserver.client import core, errors
from licenseserver.roles.base import AdminError
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile, makeRole, run
from tests.test_client import ClientTestCase
from tests.test_failover import HEARTBEAT, TAKEOVER, PairTestCase
from tests.test_primary import RoleTestCase
from tests.test_web_http import WebTestCase

TTL = 120
"""The lease time of ``makeRole``."""


def auditOf(store: FakeStore, kind: str) -> list[str]:
    """The data (JSON text) of the audit log's entries of ``kind``."""
    return [row[3] for row in store.auditRows if row[2] == kind]


class RevokeTests(RoleTestCase):
    def setUp(self):
        super().setUp()
        (self.lid,) = self.addLicenses({"seats": 1})
        self.m1 = hello(self.role, "m1")
        self.lease = self.ok(self.role.checkout(self.m1, {"request": "k1"}))["lease"]

    def revoke(self, lease_id: str | None = None):
        return self.ok(self.role.revokeLease(lease_id or self.lease, by="admin", via="test"))

    def test_seatFreedAtOnce(self):
        """The seat is free at once: another machine takes it."""
        self.refused(self.role.checkout(hello(self.role, "m2"), {}), "no-seats")
        revoked = self.revoke()
        self.assertTrue(revoked.revoked)
        self.assertEqual(revoked.expires, self.role.now())
        self.ok(self.role.checkout(hello(self.role, "m2"), {}))

    def test_holderRefused(self):
        """The holder's HEARTBEAT and RELEASE get 410 revoked, and so does a CHECKOUT
        retried under the lease's request key; a new key is a new request."""
        self.revoke()
        for answer in (
            self.role.heartbeat(self.m1, {"lease": self.lease}),
            self.role.release(self.m1, {"lease": self.lease}),
            self.role.checkout(self.m1, {"request": "k1"}),
        ):
            error = self.refused(answer, "revoked")
            self.assertIn("an admin ended", error.message)
        self.assertEqual(
            self.ok(self.role.checkout(self.m1, {"request": "k2"}))["kind"], "concurrent"
        )

    def test_otherMachineUnknown(self):
        """Another machine's session learns nothing of the lease: unknown-lease."""
        self.revoke()
        self.refused(
            self.role.heartbeat(hello(self.role, "m2"), {"lease": self.lease}), "unknown-lease"
        )

    def test_lingersWhileItsHolderMayCountOnIt(self):
        """The revoked lease stays until the end its holder may have been told (a lease
        time), through reaps and grants of its seat; then it is gone like any other."""
        self.revoke()
        self.clock.advance(TTL - 1)
        self.ok(self.role.reap())
        self.ok(self.role.checkout(hello(self.role, "m2"), {}))
        self.refused(self.role.heartbeat(self.m1, {"lease": self.lease}), "revoked")
        self.clock.advance(1)
        self.ok(self.role.reap())
        self.refused(self.role.heartbeat(self.m1, {"lease": self.lease}), "unknown-lease")

    def test_onlyLiveLeases(self):
        """A lease that is unknown, ended already or revoked already is a 404."""
        self.revoke()
        for lease_id in (self.lease, "l-none"):
            failure = self.failureResultOf(run(self.role.revokeLease(lease_id)), AdminError)
            self.assertEqual(failure.value.status, 404)
        other = self.ok(self.role.checkout(hello(self.role, "m2"), {}))["lease"]
        self.clock.advance(TTL)
        failure = self.failureResultOf(run(self.role.revokeLease(other)), AdminError)
        self.assertEqual(failure.value.status, 404)

    def test_auditedAndInMessages(self):
        """The audit log records the lease, its holder and who ended it; Messages says it."""
        self.revoke()
        (line,) = auditOf(self.store, "lease-revoked")
        data = json.loads(line)
        self.assertEqual(
            (data["lease"], data["machine"], data["product"], data["by"], data["via"]),
            (self.lease, "m1", "XMLSpy", "admin", "test"),
        )
        events = self.successResultOf(self.store.events(5))
        self.assertEqual(events[0].kind, "lease-revoked")
        self.assertIn("m1", events[0].message)

    def test_borrowedSeat(self):
        """A borrowed (checked-out) seat is freed the same way."""
        self.ok(self.role.release(self.m1, {"lease": self.lease}))
        borrowed = self.ok(self.role.borrow(self.m1, {"days": "3"}))["lease"]
        self.refused(self.role.checkout(hello(self.role, "m2"), {}), "no-seats")
        self.revoke(borrowed)
        self.ok(self.role.checkout(hello(self.role, "m2"), {}))

    def test_restartKeepsItRevoked(self):
        """A restart does not bring a revoked lease back to life (restarted servers count
        stored leases live a while past their stored end)."""
        self.revoke()
        self.role.stopService()
        again = makeRole(self.store, self.clock)
        self.ok(again.checkout(hello(again, "m2"), {}))
        self.refused(again.heartbeat(hello(again, "m1"), {"lease": self.lease}), "revoked")


class RevokeFailoverTests(PairTestCase):
    def setUp(self):
        super().setUp()
        (self.lid,) = self.ok(self.primary.addLicenses(licenseFile({"seats": 1})))
        self.m1 = hello(self.primary, "m1")
        self.lease = self.ok(self.primary.checkout(self.m1, {}))["lease"]
        self.beat()

    def test_failoverLearnsAtTheNextSync(self):
        """The failover syncs the revocation; after a takeover it answers 410 too, does
        not renew the lease, and gives the seat to another machine."""
        self.ok(self.primary.revokeLease(self.lease))
        self.beat()
        self.assertTrue(self.failover.pool.lease(self.lease).revoked)
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.refused(
            self.failover.heartbeat(hello(self.failover, "m1"), {"lease": self.lease}), "revoked"
        )
        self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))

    def test_standbyFailoverRefuses(self):
        """A standby failover sends the admin to the primary (409)."""
        failure = self.failureResultOf(run(self.failover.revokeLease(self.lease)), AdminError)
        self.assertEqual(failure.value.status, 409)

    def test_mergeKeepsTheRevocation(self):
        """Revoked at the primary while the failover served the lease: the merge does not
        bring it back."""
        self.endpoint.silent = True
        self.advance(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        self.ok(self.failover.heartbeat(hello(self.failover, "m1"), {"lease": self.lease}))
        self.advance(TTL / 2 + 5)
        self.ok(self.failover.heartbeat(hello(self.failover, "m1"), {"lease": self.lease}))
        self.ok(self.primary.revokeLease(self.lease))
        self.endpoint.silent = False
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertTrue(self.primary.pool.lease(self.lease).revoked)


class RevokeAPITests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        primary: PrimaryRole = self.role.current
        self.successResultOf(run(primary.addLicenses(licenseFile({"seats": 1}))))
        self.lease = self.successResultOf(run(primary.checkout(hello(primary, "m1"), {})))["lease"]

    def test_delete(self):
        """DELETE ends the lease (200), audited as the admin through the API from the
        caller's address; a second DELETE is a 404 with a JSON reason."""
        response = self.api("DELETE", f"/api/leases/{self.lease}")
        self.assertEqual(
            (response.status, json.loads(response.body)), (200, {"revoked": self.lease})
        )
        self.assertTrue(self.role.current.pool.lease(self.lease).revoked)
        (line,) = auditOf(self.store, "lease-revoked")
        for text in ('"via":"api"', '"by":"admin"', '"address":"'):
            self.assertIn(text, line.replace(" ", ""))
        again = self.api("DELETE", f"/api/leases/{self.lease}")
        self.assertEqual(again.status, 404)
        self.assertIn("no live lease", json.loads(again.body)["error"])

    def test_adminOnly(self):
        response = self.request("DELETE", f"/api/leases/{self.lease}")
        self.assertEqual(response.status, 401)
        self.assertFalse(self.role.current.pool.lease(self.lease).revoked)


class RevokeMonitoringTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        primary: PrimaryRole = self.role.current
        self.successResultOf(run(primary.addLicenses(licenseFile({"seats": 1}))))
        self.lease = self.successResultOf(run(primary.checkout(hello(primary, "m1"), {})))["lease"]
        self.login()

    def free(self, **fields: str):
        token = self.token("/monitoring")
        response = self.post(
            "/monitoring", {"csrf": token, "action": "revoke", "lease": self.lease, **fields}
        )
        self.assertRedirect(response, "/monitoring")
        return self.get("/monitoring").body

    def test_unconfirmedChangesNothing(self):
        page = self.free()
        self.assertIn("tick the box to confirm", page)
        self.assertFalse(self.role.current.pool.lease(self.lease).revoked)

    def test_withoutTokenChangesNothing(self):
        response = self.post(
            "/monitoring", {"action": "revoke", "lease": self.lease, "confirm": "yes"}
        )
        self.assertEqual(response.status, 403)
        self.assertFalse(self.role.current.pool.lease(self.lease).revoked)

    def test_free(self):
        """Confirmed, the seat is free, the row is gone and the audit log says it came
        from the web page."""
        page = self.free(confirm="yes")
        self.assertIn("The seat of m1", page)
        self.assertNotIn(f"lease-{self.lease}", page)
        self.assertTrue(self.role.current.pool.lease(self.lease).revoked)
        (line,) = auditOf(self.store, "lease-revoked")
        self.assertIn('"via":"web"', line.replace(" ", ""))


class RevokedClientTests(ClientTestCase):
    """The SDK: a distinct error, and no other seat taken on its own."""

    def test_revokedLeaseNotTakenAgain(self):
        client = self.makeClient()
        lease = self.wait(client.checkout())
        primary = self.servers.primary
        self.servers.ok(primary.revokeLease(lease.id))
        self.servers.advance(TTL * 2)
        self.assertEqual(lease.state, core.REVOKED)
        self.assertFalse(lease.valid)
        (event,) = self.eventsOf(core.LEASE_REVOKED)
        self.assertIsInstance(event.error, errors.Revoked)
        self.assertEqual(event.error.code, 410)
        self.assertEqual(self.eventsOf(core.LEASE_REACQUIRED), [])
        self.assertEqual(self.servers.liveLeases(primary), [])
        self.assertNotIn(lease, client.leases)
