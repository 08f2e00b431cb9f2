"""The seat policy: groups of users and hosts, and reserve, max, include and exclude rules.

``policy.check`` is a pure function, tested from a table; a hypothesis test drives
random checkouts and releases through it and checks that no reserve or max is ever
broken. Then the role (CHECKOUT and BORROW refused with the rule named, counted in the
usage history) and the admin API (``GET/PUT /api/policy``, checked as a whole).
"""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from licenseserver import policy
from licenseserver.policy import PolicyError
from tests.helpers import hello, licenseFile, run
from tests.test_failover import PairTestCase
from tests.test_primary import RoleTestCase
from tests.test_web_http import WebTestCase

GROUPS = {
    "cad": {"users": ["ann", "bob"], "hosts": []},
    "lab": {"users": [], "hosts": ["lab1", "lab2"]},
    "interns": {"users": ["ivy"], "hosts": []},
}


def make(*rules: dict) -> policy.Policy:
    return policy.parse({"groups": GROUPS, "rules": list(rules)}, {"XMLSpy": 5})


def rule(kind: str, group: str, count: int | None = None, product: str = "XMLSpy") -> dict:
    out: dict = {"product": product, "kind": kind, "group": group}
    if count is not None:
        out["count"] = count
    return out


class CheckTests(unittest.TestCase):
    TABLE = [
        # rules, user, host, holders, expected (reason or None), words in the message
        ([], "zed", "ws9", [], None, ""),
        ([rule("include", "cad")], "ann", "ws1", [], None, ""),
        ([rule("include", "cad")], "zed", "ws9", [], "policy-denied", "only group cad"),
        ([rule("include", "lab")], "zed", "lab2", [], None, ""),
        (
            [rule("exclude", "interns")],
            "ivy",
            "ws3",
            [],
            "policy-denied",
            "exclude for group interns",
        ),
        ([rule("exclude", "interns")], "ann", "ws1", [], None, ""),
        ([rule("max", "cad", 2)], "ann", "ws1", [("bob", "ws2")], None, ""),
        (
            [rule("max", "cad", 2)],
            "ann",
            "ws1",
            [("bob", "ws2"), ("bob", "ws3")],
            "policy-denied",
            "max 2 for group cad",
        ),
        ([rule("max", "cad", 0)], "zed", "ws9", [], None, ""),
        ([rule("reserve", "cad", 2)], "zed", "ws9", [("x", "h1"), ("y", "h2")], None, ""),
        (
            [rule("reserve", "cad", 2)],
            "zed",
            "ws9",
            [("x", "h1"), ("y", "h2"), ("w", "h3")],
            "no-seats",
            "reserved for group cad",
        ),
        (
            [rule("reserve", "cad", 2)],
            "ann",
            "ws1",
            [("x", "h1"), ("y", "h2"), ("w", "h3")],
            None,
            "",
        ),
        (
            [rule("reserve", "cad", 2)],
            "zed",
            "ws9",
            [("ann", "w"), ("x", "h1"), ("y", "h2")],
            None,
            "",
        ),
        (
            [rule("reserve", "cad", 1), rule("reserve", "lab", 1)],
            "ann",
            "ws1",
            [("x", "h"), ("y", "h"), ("z", "h"), ("w", "h")],
            "no-seats",
            "group lab",
        ),
        ([rule("include", "cad", product="MapForce")], "zed", "ws9", [], None, ""),
    ]

    def test_table(self):
        for rules, user, host, holders, reason, words in self.TABLE:
            refusal = policy.check(make(*rules), "XMLSpy", user, host, holders, 5)
            what = f"{rules} {user}@{host} with {holders}"
            if reason is None:
                self.assertIsNone(refusal, what)
            else:
                self.assertEqual(refusal.reason, reason, what)
                self.assertIn(words, refusal.message, what)


class ParseTests(unittest.TestCase):
    def refused(self, data, words: str, seats=None) -> None:
        with self.assertRaises(PolicyError) as caught:
            policy.parse(data, seats if seats is not None else {"XMLSpy": 5})
        self.assertIn(words, str(caught.exception))

    def test_refusedAsAWhole(self):
        self.refused([], "the policy must be")
        self.refused(
            {"groups": GROUPS, "rules": [rule("max", "nobody", 1)]}, "unknown group 'nobody'"
        )
        self.refused(
            {"groups": GROUPS, "rules": [rule("max", "cad", -1)]}, "count must be a whole number"
        )
        self.refused(
            {"groups": GROUPS, "rules": [rule("max", "cad")]}, "count must be a whole number"
        )
        self.refused(
            {"groups": GROUPS, "rules": [rule("include", "cad", 2)]},
            "an include rule has no count",
        )
        self.refused({"groups": GROUPS, "rules": [rule("limit", "cad", 2)]}, "kind must be one of")
        self.refused({"groups": {"g": {"users": "ann"}}, "rules": []}, "must be a list of names")
        self.refused(
            {"groups": GROUPS, "rules": [rule("reserve", "cad", 3), rule("reserve", "lab", 3)]},
            "the reserves of XMLSpy add up to 6 seats; it has 5",
        )

    def test_roundTrip(self):
        data = {"groups": GROUPS, "rules": [rule("reserve", "cad", 2), rule("exclude", "interns")]}
        parsed = policy.parse(data, {"XMLSpy": 5})
        self.assertEqual(policy.parse(policy.to_json(parsed), {"XMLSpy": 5}), parsed)


USERS = ["ann", "bob", "ivy", "zed", "yan"]
HOSTS = ["ws1", "lab1", "ws3"]


class InvariantTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        reserve=st.integers(0, 3),
        most=st.integers(0, 4),
        steps=st.lists(
            st.tuples(st.booleans(), st.sampled_from(USERS), st.sampled_from(HOSTS)), max_size=60
        ),
    )
    def test_reserveAndMaxHold(self, reserve, most, steps):
        """Whatever checkouts (granted when a seat is free and the policy allows) and releases
        come: the lab group never holds more than its max; the others never hold more than
        the seats less the cad group's reserve; and a cad member below the reserve always
        gets a seat (unless the lab max stops it)."""
        seats = 5
        pol = make(rule("reserve", "cad", reserve), rule("max", "lab", most))
        cad, lab = pol.groups["cad"], pol.groups["lab"]
        held: list[tuple[str, str]] = []
        for take, user, host in steps:
            if not take:
                if (user, host) in held:
                    held.remove((user, host))
                continue
            if (user, host) in held:
                continue
            in_cad = sum(1 for u, h in held if cad.has(u, h))
            refusal = policy.check(pol, "XMLSpy", user, host, held, seats)
            if len(held) < seats and refusal is None:
                held.append((user, host))
            elif cad.has(user, host) and in_cad < reserve and not lab.has(user, host):
                self.fail(f"{user}@{host} of cad refused below the reserve: {refusal}")
            in_cad = sum(1 for u, h in held if cad.has(u, h))
            self.assertLessEqual(sum(1 for u, h in held if lab.has(u, h)), most)
            self.assertLessEqual(len(held) - in_cad, seats - reserve)
            self.assertLessEqual(len(held), seats)


class EnforcedTests(RoleTestCase):
    def setUp(self):
        super().setUp()
        self.addLicenses({"seats": 2})
        self.ok(
            self.role.setSeatPolicy(
                {
                    "groups": GROUPS,
                    "rules": [rule("exclude", "interns"), rule("reserve", "cad", 1)],
                }
            )
        )

    def test_refusedWithTheRule(self):
        """An excluded user gets 403 policy-denied naming the rule; the last seat, reserved,
        goes only to the group; refusals are audited and counted in the history."""
        error = self.refused(
            self.role.checkout(hello(self.role, "m1", user="ivy"), {}), "policy-denied"
        )
        self.assertIn("exclude for group interns on XMLSpy", error.message)
        self.ok(self.role.checkout(hello(self.role, "m2", user="zed"), {}))
        error = self.refused(
            self.role.checkout(hello(self.role, "m3", user="yan"), {}), "no-seats"
        )
        self.assertIn("reserved for group cad", error.message)
        self.ok(self.role.checkout(hello(self.role, "m4", user="ann"), {}))
        self.role.stopService()
        reasons = sorted(
            d.reason for d in self.successResultOf(self.store.denials(0, 1 << 40, 10))
        )
        self.assertEqual(reasons, ["no-seats", "policy-denied"])

    def test_borrowToo(self):
        self.refused(
            self.role.borrow(hello(self.role, "m1", user="ivy"), {"days": "1"}), "policy-denied"
        )

    def test_holderKeepsItsSeat(self):
        """A holder asking again takes no new seat: the policy does not refuse it."""
        s = hello(self.role, "m2", user="zed")
        self.ok(self.role.checkout(s, {}))
        self.ok(self.role.checkout(s, {}))


class SyncedTests(PairTestCase):
    def test_failoverEnforcesIt(self):
        """The policy is synced; an active failover enforces it."""
        self.ok(self.primary.addLicenses(licenseFile({"seats": 2})))
        self.ok(
            self.primary.setSeatPolicy({"groups": GROUPS, "rules": [rule("exclude", "interns")]})
        )
        self.beat()
        self.killPrimary()
        self.advance(6)
        self.assertEqual(self.failover.state, "active")
        self.refused(
            self.failover.checkout(hello(self.failover, "m1", user="ivy"), {}), "policy-denied"
        )


class PolicyAPITests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(run(self.role.current.addLicenses(licenseFile({"seats": 3}))))

    def put(self, data) -> tuple[int, dict]:
        response = self.api("PUT", "/api/policy", json.dumps(data).encode())
        return response.status, json.loads(response.body)

    def test_getAndPut(self):
        self.assertEqual(
            json.loads(self.api("GET", "/api/policy").body), {"groups": {}, "rules": []}
        )
        data = {"groups": GROUPS, "rules": [rule("max", "lab", 1)]}
        status, body = self.put(data)
        self.assertEqual(status, 200)
        self.assertEqual(body["rules"], [rule("max", "lab", 1)])
        self.assertEqual(json.loads(self.api("GET", "/api/policy").body), body)
        self.assertIn("policy-changed", [row[2] for row in self.store.auditRows])

    def test_badPolicyChangesNothing(self):
        for data, words in (
            ({"groups": GROUPS, "rules": [rule("max", "ghosts", 1)]}, "unknown group"),
            ({"groups": GROUPS, "rules": [rule("max", "lab", -2)]}, "count must be"),
            (
                {"groups": GROUPS, "rules": [rule("reserve", "lab", 4)]},
                "add up to 4 seats; it has 3",
            ),
        ):
            status, body = self.put(data)
            self.assertEqual(status, 400)
            self.assertIn(words, body["error"])
        self.assertEqual(
            json.loads(self.api("GET", "/api/policy").body), {"groups": {}, "rules": []}
        )
        self.assertEqual(self.api("PUT", "/api/policy", b"{").status, 400)
        self.assertEqual(self.api("PUT", "/api/settings", b'{"seat_policy": {}}').status, 400)


class PolicyEditorTests(WebTestCase):
    """The Settings tab's seat policy editor: the rules as a table, the JSON to edit."""

    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(run(self.role.current.addLicenses(licenseFile({"seats": 3}))))
        self.login()

    def save(self, text: str) -> str:
        token = self.token("/settings")
        response = self.post("/settings", {"csrf": token, "action": "policy", "policy": text})
        self.assertRedirect(response, "/settings")
        return self.get("/settings").body

    def test_editAndShow(self):
        page = self.get("/settings").body
        self.assertIn("No seat policy", page)
        data = {"groups": GROUPS, "rules": [rule("max", "lab", 1)]}
        page = self.save(json.dumps(data))
        self.assertIn("Seat policy saved: 3 groups, 1 rules.", page)
        table = re.search(r'<table class="list" id="policy-rules">.*?</table>', page, re.S).group(
            0
        )
        self.assertIn("<td>max</td>", table)
        self.assertIn("lab1, lab2", table)

    def test_badPolicyChangesNothing(self):
        page = self.save("{not json")
        self.assertIn("the seat policy is not JSON", page)
        page = self.save(json.dumps({"groups": {}, "rules": [rule("max", "ghosts", 1)]}))
        self.assertIn("unknown group", page)
        self.assertEqual(self.role.current.seatPolicy(), policy.EMPTY)
