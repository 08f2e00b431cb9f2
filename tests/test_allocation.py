"""Tests for licenseserver.allocation: the seat rules."""

import dataclasses

from twisted.trial import unittest

from licenseserver import allocation
from licenseserver.allocation import Denial, Grant, SeatRequest
from licenseserver.model import Lease, License

DAY = 86400
NOW = allocation.day_start("2026-06-15") + 3600


def lic(id="L-1", kind="concurrent", seats=2, cores=0, **kw) -> License:
    fields = dict(
        id=id,
        product="XMLSpy",
        edition="Enterprise",
        kind=kind,
        seats=seats,
        cores=cores,
        licensee="ACME",
        issued="2026-01-01",
        starts=None,
        expires=None,
        max_version=None,
        key_id="k",
        signature="s",
    )
    fields.update(kw)
    return License(**fields)


def lease(machine="m1", user="anna", licenses=("L-1",), expires=NOW + 60, id=None, **kw):
    fields = dict(
        id=id or f"l-{machine}-{user}-{expires}",
        client="c-1",
        machine=machine,
        user=user,
        product="XMLSpy",
        version="2025r2",
        licenses=tuple(licenses),
        kind="concurrent",
        granted=NOW - 10,
        expires=expires,
        ttl=120,
    )
    fields.update(kw)
    return Lease(**fields)


def ask(machine="m1", user="anna", version="2025r2", cores=1, edition=None) -> SeatRequest:
    return SeatRequest(machine, user, "XMLSpy", version, cores, edition)


class StatusTests(unittest.TestCase):
    def test_active(self):
        """A license between its dates is active."""
        self.assertEqual(
            allocation.license_status(lic(starts="2026-06-15", expires="2026-06-15"), NOW),
            "active",
        )

    def test_pending(self):
        """Before 00:00 UTC of its start date a license is pending."""
        self.assertEqual(allocation.license_status(lic(starts="2026-06-16"), NOW), "pending")

    def test_expired(self):
        """After the last second of its end date a license is expired."""
        self.assertEqual(allocation.license_status(lic(expires="2026-06-14"), NOW), "expired")
        end = allocation.day_start("2026-06-15") + DAY
        self.assertEqual(allocation.license_status(lic(expires="2026-06-15"), end - 1), "active")
        self.assertEqual(allocation.license_status(lic(expires="2026-06-15"), end), "expired")

    def test_inactive(self):
        """A license the admin deactivated is inactive, whatever its dates."""
        self.assertEqual(allocation.license_status(lic(active=False), NOW), "inactive")


class ConcurrentTests(unittest.TestCase):
    def test_grantsUpToSeats(self):
        """A concurrent license grants as many holders as it has seats."""
        licenses = [lic(seats=2)]
        leases = [lease(machine="m1")]
        self.assertEqual(
            allocation.allocate(ask("m2"), licenses, leases, [], NOW),
            Grant(("L-1",), "concurrent"),
        )
        leases.append(lease(machine="m2"))
        result = allocation.allocate(ask("m3"), licenses, leases, [], NOW)
        self.assertIsInstance(result, Denial)
        self.assertEqual(result.reason, "no-seats")
        self.assertIn("2 seats of XMLSpy Enterprise", result.message)

    def test_sameMachineUserProductShare(self):
        """Leases of one machine, user and product share one seat."""
        licenses = [lic(seats=1)]
        leases = [lease(machine="m1", user="anna")]
        self.assertEqual(
            allocation.allocate(ask("m1", "anna"), licenses, leases, [], NOW),
            Grant(("L-1",), "concurrent"),
        )
        self.assertEqual(
            allocation.allocate(ask("m1", "bob"), licenses, leases, [], NOW).reason, "no-seats"
        )

    def test_expiredLeaseHoldsNoSeat(self):
        """A lease past its expiry frees its seat even before it is removed."""
        licenses = [lic(seats=1)]
        leases = [lease(machine="m1", expires=NOW)]
        self.assertEqual(
            allocation.allocate(ask("m2"), licenses, leases, [], NOW),
            Grant(("L-1",), "concurrent"),
        )

    def test_secondLicenseWhenFirstFull(self):
        """When one license is full, another of the product gives the seat."""
        licenses = [lic("L-1", seats=1), lic("L-2", seats=1)]
        leases = [lease(machine="m1", licenses=("L-1",))]
        self.assertEqual(
            allocation.allocate(ask("m2"), licenses, leases, [], NOW),
            Grant(("L-2",), "concurrent"),
        )

    def test_onlyActiveLicensesGiveSeats(self):
        """Pending, expired and inactive licenses give no seat: no-license."""
        for bad in (lic(starts="2027-01-01"), lic(expires="2020-01-01"), lic(active=False)):
            result = allocation.allocate(ask(), [bad], [], [], NOW)
            self.assertEqual(result.reason, "no-license")

    def test_maxVersion(self):
        """A client above a license's maximum version gets no seat from it."""
        licenses = [lic(max_version="2024r2")]
        self.assertEqual(
            allocation.allocate(ask(version="2025r1"), licenses, [], [], NOW).reason,
            "no-license",
        )
        self.assertIsInstance(
            allocation.allocate(ask(version="2024r2"), licenses, [], [], NOW), Grant
        )

    def test_edition(self):
        """A requested edition only takes licenses of that edition."""
        licenses = [lic(edition="Professional")]
        self.assertEqual(
            allocation.allocate(ask(edition="Enterprise"), licenses, [], [], NOW).reason,
            "no-license",
        )
        self.assertIsInstance(
            allocation.allocate(ask(edition="professional"), licenses, [], [], NOW), Grant
        )

    def test_noLicenseAtAll(self):
        """Without any license of the product the answer is no-license."""
        self.assertEqual(allocation.allocate(ask(), [], [], [], NOW).reason, "no-license")


class DaysToExpiryTests(unittest.TestCase):
    def test_days(self):
        """Whole UTC days to the end date: 0 on the last day, negative after; None
        without an end."""
        self.assertIsNone(allocation.days_to_expiry(lic(), NOW))
        for expires, days in (("2026-06-15", 0), ("2026-06-16", 1), ("2026-07-15", 30)):
            self.assertEqual(allocation.days_to_expiry(lic(expires=expires), NOW), days)
        self.assertEqual(allocation.days_to_expiry(lic(expires="2026-06-14"), NOW), -1)
        last = allocation.day_start("2026-06-16") - 1
        self.assertEqual(allocation.days_to_expiry(lic(expires="2026-06-15"), last), 0)


class WhyNoLicenseTests(unittest.TestCase):
    """The message of 404 no-license says what keeps the product's licenses from serving."""

    CASES = [
        ("none in the pool", [], {}, "no license of XMLSpy is in the pool"),
        (
            "one expired",
            [lic(expires="2026-05-31")],
            {},
            "the license of XMLSpy expired on 2026-05-31",
        ),
        (
            "all expired: the latest date",
            [lic(expires="2026-05-31"), lic("L-2", expires="2026-06-14")],
            {},
            "the licenses of XMLSpy expired on 2026-06-14",
        ),
        (
            "not started",
            [lic(starts="2026-07-01")],
            {},
            "the license of XMLSpy starts on 2026-07-01: none is valid yet",
        ),
        (
            "deactivated comes first",
            [lic(active=False), lic("L-2", expires="2026-01-01")],
            {},
            "the licenses of XMLSpy are deactivated (L-1)",
        ),
        (
            "version",
            [lic(max_version="2024r2")],
            {"version": "2025r1"},
            "XMLSpy 2025r1 is newer than its licenses allow (up to 2024r2)",
        ),
        (
            "edition",
            [lic(edition="Professional")],
            {"edition": "Enterprise"},
            "no license of XMLSpy has the edition Enterprise",
        ),
    ]

    def test_messages(self):
        """Each cause is named, with its date or version."""
        for name, licenses, request, message in self.CASES:
            result = allocation.allocate(ask(**request), licenses, [], [], NOW)
            self.assertEqual(result, Denial("no-license", message), name)

    def test_expiredDayStillServes(self):
        """A license serves through the last second of its end date, and the message
        names that date once it has passed."""
        licenses = [lic(expires="2026-06-15")]
        end = allocation.day_start("2026-06-16")
        self.assertIsInstance(allocation.allocate(ask(), licenses, [], [], end - 1), Grant)
        self.assertEqual(
            allocation.allocate(ask(), licenses, [], [], end).message,
            "the license of XMLSpy expired on 2026-06-15",
        )


class InstalledTests(unittest.TestCase):
    def test_onlyAssignedMachines(self):
        """An installed license serves the machines it is assigned to, and no other."""
        licenses = [lic(kind="installed", seats=1)]
        self.assertEqual(allocation.allocate(ask(), licenses, [], [], NOW).reason, "not-assigned")
        self.assertEqual(
            allocation.allocate(ask(), licenses, [], ["L-1"], NOW),
            Grant(("L-1",), "installed"),
        )

    def test_assignmentLimit(self):
        """An installed license may be assigned to at most its seats in machines."""
        one = lic(kind="installed", seats=1)
        self.assertIsNone(allocation.assignment_problem(one, [], "c-1"))
        self.assertIsNone(allocation.assignment_problem(one, ["c-1"], "c-1"))
        self.assertIn("already assigned", allocation.assignment_problem(one, ["c-2"], "c-1"))

    def test_concurrentNeedsNoAssignment(self):
        """Assigning a concurrent license is refused: its seats need none."""
        self.assertIn("concurrent", allocation.assignment_problem(lic(), [], "c-1"))


class CoreTests(unittest.TestCase):
    def test_coresAddUp(self):
        """Assigned core licenses add their cores up to cover the machine."""
        licenses = [lic("L-1", kind="core", seats=1, cores=4), lic("L-2", kind="core", cores=4)]
        self.assertEqual(
            allocation.allocate(ask(cores=8), licenses, [], ["L-1", "L-2"], NOW),
            Grant(("L-1", "L-2"), "core"),
        )
        result = allocation.allocate(ask(cores=8), licenses, [], ["L-1"], NOW)
        self.assertEqual(result.reason, "insufficient-cores")
        self.assertIn("cover 4 cores", result.message)

    def test_singleThreadNeedsOneCore(self):
        """A client asking for one core (single-thread mode) needs a one-core license only."""
        licenses = [lic(kind="core", cores=1)]
        self.assertEqual(
            allocation.allocate(ask(cores=1), licenses, [], ["L-1"], NOW),
            Grant(("L-1",), "core"),
        )

    def test_unassignedCore(self):
        """A core license not assigned to the machine gives not-assigned."""
        licenses = [lic(kind="core", cores=8)]
        self.assertEqual(
            allocation.allocate(ask(cores=2), licenses, [], [], NOW).reason, "not-assigned"
        )

    def test_seatsInUseCountsMachines(self):
        """Seats in use of an installed or core license count machines."""
        core = lic(kind="core", cores=4, seats=2)
        leases = [
            lease("m1", "anna", kind="core"),
            lease("m1", "bob", kind="core"),
            lease("m2", kind="core"),
        ]
        self.assertEqual(allocation.seats_in_use(core, leases, NOW), 2)
        concurrent = dataclasses.replace(core, kind="concurrent")
        self.assertEqual(allocation.seats_in_use(concurrent, leases, NOW), 3)


class HolderIndexTests(unittest.TestCase):
    def test_decisionsMatchACount(self):
        """allocate grants exactly when the live holders, counted lease by lease, leave room."""
        licenses = [lic("L-1", seats=2)]
        cases = [
            [],
            [lease("m1"), lease("m2")],
            [lease("m1"), lease("m2", expires=NOW), lease("m3", licenses=("L-2",))],
            [lease("m1", expires=NOW - 1), lease("m1", id="x"), lease("m2")],
            [lease("m1", expires=NOW), lease("m2", expires=NOW), lease("m3")],
        ]
        for leases in cases:
            live = allocation.holders_by_license(licenses, leases, NOW)["L-1"]
            for who in ("m1", "m2", "m3", "m4"):
                result = allocation.allocate(ask(who), licenses, leases, [], NOW)
                expected = (who, "anna", "XMLSpy") in live or len(live) < 2
                self.assertEqual(isinstance(result, Grant), expected, (who, leases))

    def test_liveHoldersDecideLikeACount(self):
        """``live_holders`` against ``enough`` decides as a count of the live holders does,
        lease by lease; with fewer holders than ``enough`` it looks at no lease, and it
        counts no further than ``enough``."""
        cases = [
            [],
            [lease("m1"), lease("m2")],
            [lease("m1"), lease("m2", expires=NOW), lease("m3")],
            [lease("m1", expires=NOW - 1), lease("m1", id="x"), lease("m2", expires=NOW)],
            [lease("m1", expires=NOW), lease("m2", expires=NOW), lease("m3", expires=NOW)],
        ]
        for leases in cases:
            holders = allocation.index_holders(leases).get("L-1", {})
            live = allocation.seats_held(lic(), leases, lambda other: other.live(NOW))
            for enough in range(5):
                counted = allocation.live_holders(holders, NOW, enough)
                self.assertEqual(counted >= enough, live >= enough, (leases, enough))
                self.assertEqual(
                    counted, min(live, enough) if len(holders) >= enough else len(holders)
                )

    def test_liveHoldersStopAtEnough(self):
        """Once ``enough`` live holders are seen, the others' leases are not looked at: a
        license whose seats are all held back (``enough`` 0) costs no look at all."""

        class Unread(dict):
            def values(self):
                raise AssertionError("looked at a holder past enough")

        holders = allocation.index_holders([lease("m1"), lease("m2")])["L-1"]
        holders[("m3", "anna", "XMLSpy")] = Unread()
        self.assertEqual(allocation.live_holders(holders, NOW, 2), 2)
        self.assertEqual(allocation.live_holders({("m3", "anna", "XMLSpy"): Unread()}, NOW, 0), 0)

    def test_poolIndexFollowsChanges(self):
        """The pool's holder index is what the leases it holds say, through puts and undos."""
        from licenseserver.model import Change
        from licenseserver.pool import Pool

        pool = Pool(0, [lease("m1"), lease("m2", id="b")])
        undo = pool.apply(
            [Change.delete(lease("m1")), Change.put(lease("m3", id="b")), Change.put(lease("m4"))]
        )
        self.assertEqual(
            {k: dict(v) for k, v in pool.holdersOf("L-1").items()},
            allocation.index_holders(pool.all("lease"))["L-1"],
        )
        pool.apply(undo)
        self.assertEqual(
            {k: dict(v) for k, v in pool.holdersOf("L-1").items()},
            allocation.index_holders(pool.all("lease"))["L-1"],
        )

    def test_expiredHolderTakesFreeSeatOnly(self):
        """A holder whose lease expired shares nothing: it needs a free seat like anyone."""
        licenses = [lic("L-1", seats=1)]
        leases = [lease("m1", expires=NOW), lease("m2")]
        result = allocation.allocate(ask("m1"), licenses, leases, [], NOW)
        self.assertEqual(result.reason, "no-seats")


class PartitionPolicyTests(unittest.TestCase):
    """The policy in force for a license and its failover share (FAILOVER.md rule 15)."""

    CASES = [
        # (vendor policy, vendor share, setting policy, setting share, seats) -> (policy, E)
        ((None, None, "full", "20%", 10), ("full", 0)),
        ((None, None, "exact", "20%", 10), ("exact", 2)),
        (("exact", None, "full", "20%", 10), ("exact", 2)),
        (("full", None, "exact", "30%", 10), ("exact", 3)),
        (("exact", "3", "exact", "20%", 10), ("exact", 3)),
        (("exact", "50%", "full", "20%", 5), ("exact", 2)),
        ((None, None, "exact", "0%", 10), ("exact", 0)),
        ((None, None, "exact", "100%", 4), ("exact", 4)),
        (("exact", "9", "full", "20%", 4), ("exact", 4)),
        ((None, None, "exact", "20%", 3), ("exact", 0)),
    ]

    def test_table(self):
        """The vendor's terms first; the admin can make full exact, never exact full; the
        share is the vendor's if given, rounded down from a percentage, capped at seats."""
        for (vp, vs, sp, ss, seats), expected in self.CASES:
            licence = lic(seats=seats, failover_policy=vp, failover_share=vs)
            self.assertEqual(
                allocation.partition_policy(licence, sp, ss), expected, (vp, vs, sp, ss, seats)
            )

    def test_badShares(self):
        """A share that is neither 0% to 100% nor a count is a ValueError."""
        for spec in ("", "x", "101%", "-1", "2.5", "20 %%", "１"):
            self.assertRaises(ValueError, allocation.share_seats, spec, 10)
