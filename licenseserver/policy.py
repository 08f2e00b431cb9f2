"""The seat policy: who may use which seats, as pure functions (no I/O, no clock).

Named groups of users and hosts; per product, rules of four kinds:

- ``reserve``: keep ``count`` seats for the group; others get ``409 no-seats`` when
  only reserved seats are left;
- ``max``: the group never holds more than ``count`` seats (``403 policy-denied``);
- ``include``: only the group may use the product (``403 policy-denied``);
- ``exclude``: the group may not (``403 policy-denied``).

A requester is in a group when its user is among the group's users or its host among
its hosts. ``parse`` checks a whole policy as the admin API takes it (``GET/PUT
/api/policy``); ``check`` decides one request against the seats its product's holders
hold now. The role keeps the policy as the synced setting ``seat_policy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SETTING = "seat_policy"
"""The synced setting that holds the policy (as ``to_json`` gives it)."""
KINDS = ("reserve", "max", "include", "exclude")
COUNTED = ("reserve", "max")


class PolicyError(ValueError):
    """A policy the API refuses with 400 and this message; nothing is changed."""


@dataclass(frozen=True)
class Group:
    users: frozenset[str]
    hosts: frozenset[str]

    def has(self, user: str, host: str) -> bool:
        return user in self.users or host in self.hosts


@dataclass(frozen=True)
class Rule:
    product: str
    kind: str
    group: str
    count: int | None = None

    def describe(self) -> str:
        count = f" {self.count}" if self.count is not None else ""
        return f"{self.kind}{count} for group {self.group} on {self.product}"


@dataclass(frozen=True)
class Policy:
    groups: Mapping[str, Group]
    rules: tuple[Rule, ...]

    def rulesFor(self, product: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.product == product]


EMPTY = Policy({}, ())


@dataclass(frozen=True)
class Refusal:
    """Why the policy refuses a seat: the protocol reason and a message naming the rule."""

    reason: str
    message: str


def _names(value: Any, what: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{what} must be a list of names")
    return frozenset(value)


def parse(data: Any, seats: Mapping[str, int] | None = None) -> Policy:
    """The policy of ``{"groups": {NAME: {"users": [], "hosts": []}}, "rules": [{"product",
    "kind", "group", "count"}]}``, checked as a whole, and against ``seats`` (each product's
    seats in the pool) when given: ``PolicyError`` for anything wrong, with the reason."""
    if not isinstance(data, dict) or set(data) - {"groups", "rules"}:
        raise PolicyError('the policy must be {"groups": {...}, "rules": [...]}')
    raw_groups = data.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise PolicyError("groups must map group names to their users and hosts")
    groups = {}
    for name, group in raw_groups.items():
        if not name or not isinstance(group, dict) or set(group) - {"users", "hosts"}:
            raise PolicyError(f'group {name!r} must be {{"users": [...], "hosts": [...]}}')
        groups[name] = Group(
            _names(group.get("users", []), f"the users of group {name}"),
            _names(group.get("hosts", []), f"the hosts of group {name}"),
        )
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError("rules must be a list")
    rules = []
    for number, rule in enumerate(raw_rules, 1):
        if not isinstance(rule, dict) or set(rule) - {"product", "kind", "group", "count"}:
            raise PolicyError(f"rule {number} must have product, kind, group (and count)")
        product, kind, group = rule.get("product"), rule.get("kind"), rule.get("group")
        if not isinstance(product, str) or not product:
            raise PolicyError(f"rule {number}: product must be a product name")
        if kind not in KINDS:
            raise PolicyError(f"rule {number}: kind must be one of {', '.join(KINDS)}")
        if group not in groups:
            raise PolicyError(f"rule {number}: unknown group {group!r}")
        count = rule.get("count")
        if kind in COUNTED:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise PolicyError(f"rule {number}: count must be a whole number, 0 or more")
        elif count is not None:
            raise PolicyError(f"rule {number}: an {kind} rule has no count")
        rules.append(Rule(product, kind, group, count))
    for product in {rule.product for rule in rules} if seats is not None else ():
        reserved = sum(r.count or 0 for r in rules if r.product == product and r.kind == "reserve")
        if reserved > seats.get(product, 0):
            raise PolicyError(
                f"the reserves of {product} add up to {reserved} seats; it has"
                f" {seats.get(product, 0)}"
            )
    return Policy(groups, tuple(rules))


def to_json(policy: Policy) -> dict[str, Any]:
    """The policy as the API and the synced setting hold it."""
    return {
        "groups": {
            name: {"users": sorted(g.users), "hosts": sorted(g.hosts)}
            for name, g in sorted(policy.groups.items())
        },
        "rules": [
            {"product": r.product, "kind": r.kind, "group": r.group}
            | ({"count": r.count} if r.count is not None else {})
            for r in policy.rules
        ],
    }


def check(
    policy: Policy,
    product: str,
    user: str,
    host: str,
    holders: Iterable[tuple[str, str]],
    seats: int,
) -> Refusal | None:
    """Whether ``user`` on ``host`` may take a new seat of ``product``, whose licenses have
    ``seats`` seats, while ``holders`` (user, host: one per seat held) hold seats of it.

    None when the policy allows it; else the refusal, naming the rule.
    """
    rules = policy.rulesFor(product)
    if not rules:
        return None
    holders = list(holders)
    groups = policy.groups

    def member(name: str, who_user: str, who_host: str) -> bool:
        return groups[name].has(who_user, who_host)

    includes = [r for r in rules if r.kind == "include"]
    if includes and not any(member(r.group, user, host) for r in includes):
        names = ", ".join(sorted({r.group for r in includes}))
        return Refusal(
            "policy-denied", f"only group {names} may use {product} (rule include {names})"
        )
    for rule in rules:
        if rule.kind == "exclude" and member(rule.group, user, host):
            return Refusal(
                "policy-denied", f"{user} on {host} may not use {product} ({rule.describe()})"
            )
        if rule.kind == "max" and member(rule.group, user, host):
            held = sum(1 for u, h in holders if member(rule.group, u, h))
            if held >= (rule.count or 0):
                return Refusal(
                    "policy-denied",
                    f"group {rule.group} holds {held} seats of {product}, its maximum"
                    f" ({rule.describe()})",
                )
    free = seats - len(holders)
    kept = [
        (rule, max(0, (rule.count or 0) - sum(1 for u, h in holders if member(rule.group, u, h))))
        for rule in rules
        if rule.kind == "reserve" and not member(rule.group, user, host)
    ]
    owed = sum(unmet for _, unmet in kept)
    if owed and free - owed <= 0:
        names = ", ".join(rule.group for rule, unmet in kept if unmet)
        return Refusal(
            "no-seats",
            f"the free seats of {product} are reserved for group {names}"
            f" ({'; '.join(rule.describe() for rule, unmet in kept if unmet)})",
        )
    return None
