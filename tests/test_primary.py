"""Tests for the serving role (licenseserver.roles.base) as the primary runs it."""

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from licenseserver.interfaces import IRole
from licenseserver.model import Change, Setting
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.base import AdminError
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile, makeRole, run, session


class RoleTestCase(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()
        self.role = makeRole(self.store)
        self.clock = self.role.clock

    def addLicenses(self, *specs):
        return self.successResultOf(run(self.role.addLicenses(licenseFile(*specs))))

    def ok(self, coroutine):
        return self.successResultOf(run(coroutine))

    def refused(self, coroutine, reason):
        failure = self.failureResultOf(run(coroutine), ProtocolError)
        self.assertEqual(failure.value.reason, reason)
        return failure.value


class HelloTests(RoleTestCase):
    def test_interface(self):
        """The primary role provides IRole."""
        verifyObject(IRole, self.role)

    def test_registers(self):
        """HELLO registers the machine and its product, durably."""
        s = session("m1")
        answer = self.ok(
            self.role.hello(
                s, {"product": "XMLSpy", "version": "2025r2", "host": "ws1", "machine": "m1"}
            )
        )
        self.assertEqual(answer["client"], "c-1")
        self.assertEqual(answer["role"], "primary")
        self.assertEqual(answer["state"], "active")
        self.assertEqual(answer["heartbeat"], 30)
        self.assertEqual(answer["failover"], "none")
        stored = self.successResultOf(self.store.load())
        self.assertEqual([c.machine for c in stored.records["client"]], ["m1"])
        self.assertEqual([p.product for p in stored.records["product"]], ["XMLSpy"])

    def test_sameMachineSameClient(self):
        """A machine keeps its client id across sessions; a new machine gets a new one."""
        self.assertEqual(hello(self.role, "m1").client, "c-1")
        self.assertEqual(hello(self.role, "m1", product="MapForce").client, "c-1")
        self.assertEqual(hello(self.role, "m2").client, "c-2")
        self.assertEqual(len(self.role.pool.productsOf("c-1")), 2)

    def test_secondHello(self):
        """A second HELLO on one session is a bad request."""
        s = hello(self.role, "m1")
        self.refused(
            self.role.hello(s, {"product": "X", "version": "1.0", "host": "h", "machine": "m1"}),
            "bad-request",
        )

    def test_badArguments(self):
        """Missing or malformed HELLO arguments are bad requests, and register nothing."""
        good = {"product": "XMLSpy", "version": "2025r2", "host": "ws1", "machine": "m1"}
        for broken in (
            {k: v for k, v in good.items() if k != "machine"},
            {**good, "version": "latest"},
            {**good, "cores": "0"},
            {**good, "cores": "many"},
            {**good, "cores": "\u00b2"},
            {**good, "version": "\uff12\uff10\uff11\uff15"},
            {**good, "machine": "x" * 129},
        ):
            self.refused(self.role.hello(session(), broken), "bad-request")
        self.assertEqual(self.role.pool.count("client"), 0)

    def test_longNames(self):
        """Only the machine id has the protocol's 128-character limit; a long host is fine."""
        fqdn = ".".join(["a" * 63, "b" * 63, "c" * 63, "example"])
        answer = self.ok(
            self.role.hello(
                session(),
                {"product": "XMLSpy", "version": "2025r2", "host": fqdn, "machine": "m" * 128},
            )
        )
        self.assertEqual(self.role.pool.client(answer["client"]).host, fqdn)

    def test_helloRequired(self):
        """CHECKOUT, HEARTBEAT, RELEASE and BORROW need HELLO first."""
        s = session()
        for op in (self.role.checkout, self.role.heartbeat, self.role.release, self.role.borrow):
            self.refused(op(s, {"lease": "l-x", "days": "1"}), "hello-required")


class CheckoutTests(RoleTestCase):
    def test_race(self):
        """Of 50 clients racing for a 5-seat license, exactly 5 get seats; 45 get no-seats."""
        self.addLicenses({"seats": 5})
        sessions = [hello(self.role, f"m{i}") for i in range(50)]
        results = [run(self.role.checkout(s, {})) for s in sessions]
        granted, denied = [], []
        for d in results:
            d.addCallbacks(granted.append, lambda f: denied.append(f.value.reason))
        self.assertEqual(len(granted), 5)
        self.assertEqual(denied, ["no-seats"] * 45)
        events = self.successResultOf(self.store.events(100))
        self.assertEqual(sum(e.kind == "unmet-request" for e in events), 45)
        self.assertEqual(events[0].data["product"], "XMLSpy")

    def test_seatsFreeAfterExpiry(self):
        """Seats of leases not heartbeated for the lease time are free again."""
        self.addLicenses({"seats": 1})
        first = hello(self.role, "m1")
        second = hello(self.role, "m2")
        self.ok(self.role.checkout(first, {}))
        self.refused(self.role.checkout(second, {}), "no-seats")
        self.clock.advance(119)
        self.refused(self.role.checkout(second, {}), "no-seats")
        self.clock.advance(1)
        self.ok(self.role.checkout(second, {}))

    def test_reaperRemovesExpired(self):
        """The reaper deletes expired leases from the pool and the store."""
        self.addLicenses({"seats": 1})
        self.ok(self.role.checkout(hello(self.role, "m1"), {}))
        self.clock.advance(125)
        self.assertEqual(self.role.pool.count("lease"), 0)
        self.assertEqual(self.successResultOf(self.store.load()).records["lease"], [])

    def test_leaseAnswer(self):
        """A grant names an unguessable lease, its license, kind, expiry and ttl."""
        (lid,) = self.addLicenses({"seats": 1})
        answer = self.ok(self.role.checkout(hello(self.role), {}))
        self.assertEqual(answer["license"], lid)
        self.assertEqual(answer["kind"], "concurrent")
        self.assertEqual(answer["ttl"], 120)
        self.assertEqual(answer["expires"], int(self.clock.seconds()) + 120)
        self.assertTrue(answer["lease"].startswith("l-"))
        self.assertGreaterEqual(len(answer["lease"]) - 2, 16)

    def test_leaseIdsDistinct(self):
        """Lease ids differ across more grants than one block of randomness holds."""
        self.addLicenses({"seats": 600})
        leases = [self.ok(self.role.checkout(hello(self.role, f"m{i}"), {})) for i in range(600)]
        ids = {answer["lease"] for answer in leases}
        self.assertEqual(len(ids), 600)
        self.assertEqual({len(i) for i in ids}, {18})

    def test_requestKeyIdempotent(self):
        """A CHECKOUT repeated with the same request key returns the same lease."""
        self.addLicenses({"seats": 1})
        s = hello(self.role)
        first = self.ok(self.role.checkout(s, {"request": "7f3a"}))
        self.clock.advance(10)
        again = self.ok(self.role.checkout(hello(self.role), {"request": "7f3a"}))
        self.assertEqual(again["lease"], first["lease"])
        self.assertEqual(again["expires"], first["expires"] + 10)
        self.assertEqual(self.role.pool.count("lease"), 1)

    def test_sameUserShareSeat(self):
        """Leases of one machine, user and product share one seat."""
        self.addLicenses({"seats": 1})
        s = hello(self.role, "m1", user="anna")
        a = self.ok(self.role.checkout(s, {}))
        b = self.ok(self.role.checkout(s, {}))
        self.assertNotEqual(a["lease"], b["lease"])
        self.refused(self.role.checkout(hello(self.role, "m2"), {}), "no-seats")

    def test_noLicense(self):
        """A product without any usable license gives no-license."""
        self.refused(self.role.checkout(hello(self.role), {}), "no-license")

    def test_noLicenseRecorded(self):
        """A refusal for want of a usable license (here an expired one) is in Messages with
        its reason, once an hour per product however often a client asks; products the
        pool has no license of are not recorded."""
        self.addLicenses(
            {"expires": "2026-03-31"}, {"product": "MapForce", "expires": "2026-02-28"}
        )
        s = hello(self.role, user="anna")
        for _ in range(50):
            self.refused(self.role.checkout(s, {}), "no-license")
            self.refused(self.role.checkout(s, {"product": "MapForce"}), "no-license")
            self.refused(self.role.checkout(s, {"product": "Unknown"}), "no-license")
            self.clock.advance(60)

        def noLicense():
            events = self.successResultOf(self.store.events(500))
            return [e for e in events if e.kind == "no-license"]

        mapforce, xmlspy = noLicense()
        self.assertEqual(
            xmlspy.message,
            "XMLSpy: no license for ws1 (anna): the license of XMLSpy expired on 2026-03-31",
        )
        self.assertEqual(xmlspy.severity, "warning")
        self.assertEqual(
            xmlspy.data, {"product": "XMLSpy", "machine": "m1", "host": "ws1", "user": "anna"}
        )
        self.assertIn("expired on 2026-02-28", mapforce.message)
        self.clock.advance(600)
        self.refused(self.role.checkout(s, {}), "no-license")
        self.assertEqual(
            [e.data["product"] for e in noLicense()], ["XMLSpy", "MapForce", "XMLSpy"]
        )

    def test_otherProduct(self):
        """CHECKOUT may name another product than HELLO's."""
        self.addLicenses({"product": "MapForce", "seats": 1})
        answer = self.ok(self.role.checkout(hello(self.role), {"product": "MapForce"}))
        self.assertEqual(self.role.pool.lease(answer["lease"]).product, "MapForce")

    def test_storeFailureTakesBack(self):
        """When the store refuses a grant the client gets internal-error; the seat stays free."""
        self.addLicenses({"seats": 1})
        s = hello(self.role)
        self.store.failNext(OSError("disk full"))
        self.refused(self.role.checkout(s, {}), "internal-error")
        self.assertEqual(self.role.pool.count("lease"), 0)
        self.ok(self.role.checkout(hello(self.role, "m2"), {}))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_deactivatedGivesNoSeat(self):
        """A deactivated license gives no new seats; activated again, it does."""
        (lid,) = self.addLicenses({"seats": 1})
        self.ok(self.role.setLicenseActive(lid, False))
        self.refused(self.role.checkout(hello(self.role), {}), "no-license")
        self.ok(self.role.setLicenseActive(lid, True))
        self.ok(self.role.checkout(hello(self.role), {}))


class AssignedKindsTests(RoleTestCase):
    def test_installed(self):
        """An installed license serves only the machine the admin assigned it to."""
        (lid,) = self.addLicenses({"kind": "installed", "seats": 1})
        s = hello(self.role, "m1")
        self.refused(self.role.checkout(s, {}), "not-assigned")
        self.ok(self.role.assign(s.client, "XMLSpy", [lid]))
        self.assertEqual(self.ok(self.role.checkout(s, {}))["kind"], "installed")
        other = hello(self.role, "m2")
        error = self.failureResultOf(
            run(self.role.assign(other.client, "XMLSpy", [lid])), AdminError
        )
        self.assertEqual(error.value.status, 409)

    def test_core(self):
        """Core licenses assigned to a machine must cover its cores."""
        (lid,) = self.addLicenses({"kind": "core", "seats": 1, "cores": 4})
        s = hello(self.role, "m1", cores="8")
        self.ok(self.role.assign(s.client, "XMLSpy", [lid]))
        self.refused(self.role.checkout(s, {}), "insufficient-cores")
        self.assertEqual(self.ok(self.role.checkout(s, {"cores": "4"}))["kind"], "core")
        single = self.ok(self.role.checkout(s, {"cores": "1"}))
        self.assertEqual(single["license"], lid)
        self.assertNotIn("licenses", single)

    def test_coreFromTwoLicenses(self):
        """A core seat covered by two licenses names one in license= and both in licenses=."""
        a, b = self.addLicenses(
            {"kind": "core", "seats": 1, "cores": 4}, {"kind": "core", "seats": 1, "cores": 4}
        )
        s = hello(self.role, "m1", cores="8")
        self.ok(self.role.assign(s.client, "XMLSpy", [a, b]))
        answer = self.ok(self.role.checkout(s, {}))
        self.assertIn(answer["license"], (a, b))
        self.assertEqual(sorted(answer["licenses"].split(",")), sorted([a, b]))

    def test_assignReplaces(self):
        """PUT of assignments replaces the set; unknown or foreign licenses are refused."""
        a, b = self.addLicenses({"kind": "installed"}, {"kind": "installed"})
        (mf,) = self.addLicenses({"kind": "installed", "product": "MapForce"})
        s = hello(self.role)
        self.ok(self.role.assign(s.client, "XMLSpy", [a, b]))
        self.ok(self.role.assign(s.client, "XMLSpy", [b]))
        self.assertEqual([x.license for x in self.role.pool.assignmentsOf(s.client)], [b])
        for ids, status in (([mf], 400), (["L-nope"], 404)):
            error = self.failureResultOf(
                run(self.role.assign(s.client, "XMLSpy", ids)), AdminError
            )
            self.assertEqual(error.value.status, status)
        error = self.failureResultOf(run(self.role.assign("c-99", "XMLSpy", [b])), AdminError)
        self.assertEqual(error.value.status, 404)


class LeaseTests(RoleTestCase):
    def setUp(self):
        super().setUp()
        self.addLicenses({"seats": 2})
        self.s = hello(self.role, "m1")
        self.lease = self.ok(self.role.checkout(self.s, {}))["lease"]

    def test_heartbeatRenews(self):
        """HEARTBEAT of a lease moves its expiry to now plus the lease time."""
        self.clock.advance(100)
        answer = self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))
        self.assertEqual(answer, {"expires": int(self.clock.seconds()) + 120, "ttl": 120})
        self.clock.advance(100)
        self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))

    def test_renewalsWrittenWhenDue(self):
        """A renewal reaches the store only once the stored expiry is less than half a
        lease time ahead; the pool always has the new expiry."""
        revision = self.store_revision()
        for _ in range(2):
            self.clock.advance(30)
            answer = self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))
            self.assertEqual(answer["expires"], int(self.clock.seconds()) + 120)
            self.assertEqual(self.role.pool.lease(self.lease).expires, answer["expires"])
            self.assertEqual(self.store_revision(), revision)
        self.clock.advance(30)
        answer = self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))
        self.assertEqual(self.store_revision(), revision + 1)
        stored = self.successResultOf(self.store.load()).records["lease"][0]
        self.assertEqual(stored.expires, answer["expires"])

    def test_crashKeepsHalfALeaseTime(self):
        """What a restart would load keeps a heartbeated lease half a lease time more."""
        for _ in range(20):
            self.clock.advance(30)
            self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))
            (stored,) = self.successResultOf(self.store.load()).records["lease"]
            self.assertGreaterEqual(stored.expires - self.clock.seconds(), 60)

    def store_revision(self):
        return self.successResultOf(self.store.load()).revision

    def test_heartbeatAllOfMachine(self):
        """HEARTBEAT without a lease renews every lease of the session's machine."""
        other = self.ok(self.role.checkout(hello(self.role, "m1", user="bob"), {}))["lease"]
        self.clock.advance(60)
        self.ok(self.role.heartbeat(self.s, {}))
        for lid in (self.lease, other):
            self.assertEqual(self.role.pool.lease(lid).expires, int(self.clock.seconds()) + 120)
        self.refused(self.role.heartbeat(hello(self.role, "m9"), {}), "unknown-lease")

    def test_heartbeatAllAnswersSoonest(self):
        """HEARTBEAT without a lease answers the expiry of the lease that ends first."""
        self.ok(self.role.updateSettings({"lease_ttl": 60}))
        self.ok(self.role.checkout(hello(self.role, "m1", user="bob"), {}))
        answer = self.ok(self.role.heartbeat(self.s, {}))
        self.assertEqual(answer, {"expires": int(self.clock.seconds()) + 60, "ttl": 60})

    def test_expiredUnknown(self):
        """An expired lease is unknown to HEARTBEAT and RELEASE."""
        self.clock.advance(120)
        self.refused(self.role.heartbeat(self.s, {"lease": self.lease}), "unknown-lease")
        self.refused(self.role.release(self.s, {"lease": self.lease}), "unknown-lease")

    def test_oddLeaseIdsUnknown(self):
        """A lease id the server does not hold is unknown-lease, however long or odd."""
        for lease_id in ("l-" + "x" * 4000, "l-\u00e9\u2603", "x"):
            for op in (self.role.heartbeat, self.role.release):
                error = self.refused(op(self.s, {"lease": lease_id}), "unknown-lease")
                self.assertLess(len(error.message), 200)

    def test_otherMachinesLease(self):
        """A lease belongs to its machine: another machine's session cannot touch it."""
        thief = hello(self.role, "m2")
        self.refused(self.role.heartbeat(thief, {"lease": self.lease}), "unknown-lease")
        self.refused(self.role.release(thief, {"lease": self.lease}), "unknown-lease")

    def test_release(self):
        """RELEASE frees the lease; releasing it again is unknown-lease."""
        self.ok(self.role.release(self.s, {"lease": self.lease}))
        self.assertIsNone(self.role.pool.lease(self.lease))
        self.refused(self.role.release(self.s, {"lease": self.lease}), "unknown-lease")
        self.refused(self.role.release(self.s, {}), "bad-request")

    def test_restartKeepsLeases(self):
        """A role started again on the same store holds the same licenses, clients and leases;
        each lease lives until the latest end its client may have been told: half a lease
        time past the stored end, since renewals are written only when that is nearer."""
        self.clock.advance(30)
        told = self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))["expires"]
        stored = self.role.ledger.storedExpiry[self.lease]
        self.assertLess(stored, told)
        again = makeRole(self.store, self.clock)
        snapshot = self.role.pool.snapshot()
        self.assertEqual(again.pool.revision, snapshot.revision)
        for kind in ("license", "client", "product"):
            self.assertEqual(list(again.pool.all(kind)), list(self.role.pool.all(kind)))
        self.assertEqual(again.pool.lease(self.lease).expires, stored + 60)
        self.assertGreaterEqual(again.pool.lease(self.lease).expires, told)
        s = hello(again, "m1")
        self.ok(again.heartbeat(s, {"lease": self.lease}))

    def test_restartKeepsToldSeat(self):
        """After a restart, a seat its holder was told it has until a later end than the
        stored one is not given to another client before that end."""
        self.ok(self.role.checkout(hello(self.role, "m3"), {}))
        self.clock.advance(30)
        told = self.ok(self.role.heartbeat(self.s, {"lease": self.lease}))["expires"]
        self.role.stopService()
        again = makeRole(self.store, self.clock)
        self.clock.advance(told - 1 - self.clock.seconds())
        self.refused(again.checkout(hello(again, "m2"), {}), "no-seats")


class BorrowTests(RoleTestCase):
    def setUp(self):
        super().setUp()
        self.addLicenses({"seats": 1})
        self.s = hello(self.role, "m1")

    def test_borrow(self):
        """BORROW takes a seat for whole days, which HEARTBEAT does not shorten."""
        answer = self.ok(self.role.borrow(self.s, {"days": "3"}))
        self.assertEqual(answer["expires"], int(self.clock.seconds()) + 3 * 86400)
        self.assertNotIn("ttl", answer)
        self.refused(self.role.checkout(hello(self.role, "m2"), {}), "no-seats")
        self.ok(self.role.heartbeat(self.s, {"lease": answer["lease"]}))
        self.assertEqual(self.role.pool.lease(answer["lease"]).expires, answer["expires"])
        self.clock.advance(3 * 86400)
        self.ok(self.role.checkout(hello(self.role, "m2"), {}))

    def test_borrowIgnoresRequestKey(self):
        """BORROW has no request key: it neither keeps one nor takes a CHECKOUT's."""
        first = self.ok(self.role.checkout(self.s, {"request": "k"}))["lease"]
        borrowed = self.ok(self.role.borrow(self.s, {"days": "1", "request": "k"}))["lease"]
        self.assertNotEqual(borrowed, first)
        self.assertEqual(self.role.pool.lease(borrowed).request, "")
        self.assertEqual(self.ok(self.role.checkout(self.s, {"request": "k"}))["lease"], first)
        self.ok(self.role.release(self.s, {"lease": first}))
        again = self.ok(self.role.checkout(self.s, {"request": "k"}))["lease"]
        self.assertNotIn(again, (first, borrowed))

    def test_daysRange(self):
        """Days outside 1 to the configured maximum are bad requests."""
        for days in ("0", "31", "x", "-1"):
            self.refused(self.role.borrow(self.s, {"days": days}), "bad-request")
        self.refused(self.role.borrow(self.s, {}), "bad-request")
        self.ok(self.role.borrow(self.s, {"days": "30"}))

    def test_disabled(self):
        """With borrowing switched off in the settings, BORROW is borrow-disabled."""
        self.ok(self.role.commit([Change.put(Setting("borrow_enabled", False))]))
        self.refused(self.role.borrow(self.s, {"days": "1"}), "borrow-disabled")


class AdminTests(RoleTestCase):
    def test_uploadRefusals(self):
        """A tampered or untrusted file is refused whole (400); a known id is 409."""
        data = licenseFile({"seats": 5}, {"seats": 2})
        tampered = data.replace(b'"seats": 2', b'"seats": 20')
        error = self.failureResultOf(run(self.role.addLicenses(tampered)), AdminError)
        self.assertEqual(error.value.status, 400)
        self.assertEqual(error.value.reason, "tampered")
        self.assertEqual(self.role.pool.count("license"), 0)
        self.successResultOf(run(self.role.addLicenses(data)))
        error = self.failureResultOf(run(self.role.addLicenses(data)), AdminError)
        self.assertEqual(error.value.status, 409)

    def test_deleteLicense(self):
        """Deleting a license removes its assignments and the leases it gave."""
        (lid,) = self.addLicenses({"kind": "installed"})
        s = hello(self.role)
        self.ok(self.role.assign(s.client, "XMLSpy", [lid]))
        self.ok(self.role.checkout(s, {}))
        self.ok(self.role.deleteLicense(lid))
        self.assertEqual(self.role.pool.count("assignment"), 0)
        self.assertEqual(self.role.pool.count("lease"), 0)
        self.assertEqual(self.role.pool.count("license"), 0)

    def test_unregister(self):
        """Unregistering a client removes its products, assignments and leases."""
        (lid,) = self.addLicenses({"kind": "installed"})
        s = hello(self.role)
        self.ok(self.role.assign(s.client, "XMLSpy", [lid]))
        self.ok(self.role.checkout(s, {}))
        self.ok(self.role.unregister(s.client))
        for kind in ("client", "product", "assignment", "lease"):
            self.assertEqual(self.role.pool.count(kind), 0, kind)

    def test_everyChangeBumpsRevision(self):
        """Every change moves the pool's revision and lands in the store's change log."""
        before = self.role.pool.revision
        self.addLicenses({"seats": 1})
        s = hello(self.role)
        self.ok(self.role.checkout(s, {}))
        self.assertEqual(self.role.pool.revision, before + 3)
        changes = self.successResultOf(self.store.changesSince(before))
        self.assertEqual([kinds for _, kinds in changes][-1][0].kind, "lease")
