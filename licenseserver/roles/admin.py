"""What a role does for the admin: licenses, assignments, clients, settings, vendor keys.

``AdminOperations`` is a part of ``ServingRole`` (``roles.base``), called by the
web pages and the admin API through ``web.facade.ServerView``. Each change is
checked first (one bad value changes nothing), then recorded through the
ledger with its audit entry. ``AdminError`` is how a change is refused: an HTTP
status and a message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from licenseserver import alerts, allocation, policy, signing
from licenseserver.model import (
    Agreement,
    Assignment,
    Change,
    Lease,
    Setting,
)
from licenseserver.roles import clients
from licenseserver.versions import is_valid as version_is_valid


def _integer_between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}"
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _minimums(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and version_is_valid(v)
        for k, v in value.items()
    ):
        return 'must map product names (or "*") to product versions'
    return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 1000 or "\n" in value:
        return "must be one line of text"
    return None


def _partition_policy(value: Any) -> str | None:
    if not isinstance(value, str) or value not in allocation.PARTITION_POLICIES:
        return f"must be {' or '.join(allocation.PARTITION_POLICIES)}"
    return None


def _failover_share(value: Any) -> str | None:
    rule = 'must be a percentage from 0% to 100% or a whole number of seats, such as "20%" or "2"'
    if not isinstance(value, str) or value != value.strip():
        return rule
    try:
        allocation.share_seats(value, 0)
    except ValueError:
        return rule
    return None


VENDOR_KEYS = "vendor_keys"
"""The setting that holds the vendor keys added at run time: key id to PEM text.

Not among ``SETTING_CHECKS``: it is changed only through ``addVendorKey``."""

SETTING_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "borrow_enabled": _boolean,
    "borrow_max_days": _integer_between(1, 365),
    "lease_ttl": _integer_between(4, 86400),
    "failover_minimums": _minimums,
    "partition_policy": _partition_policy,
    "failover_share": _failover_share,
    "alert_expiry_days": _integer_between(0, 3650),
    "alert_smtp_host": _text,
    "alert_smtp_port": _integer_between(1, 65535),
    "alert_smtp_tls": alerts.check_tls,
    "alert_smtp_user": _text,
    "alert_smtp_password": _text,
    "alert_from": lambda value: None if value == "" else alerts.check_address(value),
    "alert_to": alerts.check_addresses,
}
"""How each licensing setting's value is checked."""


class AdminError(Exception):
    """An admin change that cannot be made: an HTTP status, a message, maybe a reason.

    ``reason`` is a stable token for programs where one exists (the refusal
    reasons of license files: ``bad-format``, ``unsigned``, ``untrusted``,
    ``tampered``).
    """

    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


class AdminOperations:
    """The admin's changes, and the licensing settings and vendor keys they touch.

    A mixin of ``ServingRole``: it uses the role's ``pool``, ``commit``,
    ``entry``, ``record``, ``now``, ``setting`` and ``settingDefaults``.
    """

    @property
    def trustedKeys(self) -> dict[str, Any]:
        """Every vendor key a license may be signed by, by key id.

        The keys this server was started with, and those an admin added at run
        time (``addVendorKey``). The added ones live in the pool as the
        licensing setting ``VENDOR_KEYS`` (key id to PEM text), so they are
        synced to the failover and replaced with the primary's at handback,
        like every other pool change.
        """
        added = self.pool.setting(VENDOR_KEYS, {}) or {}
        keys = {kid: signing.public_key_from_pem(pem.encode()) for kid, pem in added.items()}
        return {**keys, **self.configuredKeys}

    def vendorKeys(self) -> list[dict[str, str]]:
        """The trusted vendor keys for people: id, and whether configured or added."""
        added = self.pool.setting(VENDOR_KEYS, {}) or {}
        out = [{"id": kid, "source": "configured"} for kid in sorted(self.configuredKeys)]
        out += [
            {"id": kid, "source": "added"}
            for kid in sorted(added)
            if kid not in self.configuredKeys
        ]
        return out

    async def addVendorKey(self, pem: bytes) -> tuple[str, bool]:
        """Trust the vendor public key ``pem`` from now on; return its id and whether it is new.

        Audited and recorded in Messages; synced to the failover as the
        ``VENDOR_KEYS`` setting. A key trusted already changes nothing.
        """
        self.gateAdmin()
        try:
            key = signing.public_key_from_pem(pem)
        except signing.LicenseError as e:
            raise AdminError(400, str(e), "bad-key") from None
        kid = signing.key_id(key)
        if kid in self.trustedKeys:
            return kid, False
        added = dict(self.pool.setting(VENDOR_KEYS, {}) or {})
        added[kid] = signing.public_key_pem(key)
        await self.commit(
            [Change.put(Setting(VENDOR_KEYS, added))],
            self.entry("vendor-key-added", key_id=kid),
        )
        self.record("vendor-key-added", "info", f"vendor key {kid} is trusted now", key_id=kid)
        return kid, True

    def settings(self) -> dict[str, Any]:
        """Every licensing setting with its current value (a write-only one, such as the
        SMTP password, only as whether it is set: ``alert_smtp_password_set``)."""
        out = {
            name: self.setting(name)
            for name in sorted(self.settingDefaults)
            if name not in alerts.WRITE_ONLY
        }
        if "alert_smtp_password" in self.settingDefaults:
            out["alert_smtp_password_set"] = bool(self.setting("alert_smtp_password"))
        return out

    async def sendTestAlert(self) -> str:
        """Send a test e-mail with the alert settings; the server's answer, or ``AdminError``
        502 with what went wrong. Recorded in Messages either way."""
        mailer = alerts.Mailer(self.clock, self.setting)
        try:
            answer = await mailer.send(
                f"licenseserver {self.serverName}: test alert",
                f"This is a test of the alert e-mail of the license server {self.serverName}.",
            )
        except alerts.AlertError as e:
            self.record("alert-failed", "warning", f"test alert e-mail not sent: {e}")
            raise AdminError(502, str(e)) from None
        self.record("alert-sent", "info", f"test alert e-mail sent: {answer}")
        return answer

    async def updateSettings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Change licensing settings (synced to the failover); return them all.

        Every value is checked first; one bad value changes nothing.
        """
        self.gateAdmin()
        changes = []
        for name, value in values.items():
            check = SETTING_CHECKS.get(name)
            if check is None:
                raise AdminError(400, f"unknown setting {name!r}")
            problem = check(value)
            if problem:
                raise AdminError(400, f"{name}: {problem}")
            if value != self.setting(name):
                changes.append(Change.put(Setting(name, value)))
        if changes:
            values = {c.key[0]: c.record.value for c in changes}
            await self.commit(changes, self.entry("settings-changed", values=values))
            names = ", ".join(values)
            self.record("settings-changed", "info", f"settings changed: {names}")
        return self.settings()

    # Admin operations

    async def addLicenses(self, data: bytes) -> list[str]:
        """Verify a license file and add its licenses; return their ids.

        Refuses the whole file (``AdminError`` 400) when any license in it is
        malformed, unsigned, untrusted or tampered with, and (409) when any
        is already in the pool.
        """
        self.gateAdmin()
        try:
            licenses = signing.verify_licenses(data, self.trustedKeys)
        except signing.LicenseError as e:
            raise AdminError(400, str(e), e.reason) from None
        taken = [lic.id for lic in licenses if self.pool.license(lic.id) is not None]
        if taken:
            raise AdminError(409, f"already in the pool: {', '.join(taken)}")
        now = self.now()
        added = [_replace(lic, active=True, added=now) for lic in licenses]
        ids = [lic.id for lic in added]
        await self.commit([Change.put(lic) for lic in added], self.entry("license-added", ids=ids))
        self.record(
            "license-added",
            "info",
            f"added license(s) {', '.join(lic.id for lic in added)}",
            ids=[lic.id for lic in added],
        )
        return [lic.id for lic in added]

    def gateAdmin(self) -> None:
        """Raise ``AdminError`` when this role takes no pool changes now."""

    def _license(self, license_id: str) -> Any:
        lic = self.pool.license(license_id)
        if lic is None:
            raise AdminError(404, f"no license {license_id} in the pool")
        return lic

    async def setLicenseActive(self, license_id: str, active: bool) -> None:
        """Activate or deactivate a license; running leases keep their seats."""
        self.gateAdmin()
        lic = self._license(license_id)
        if lic.active != active:
            kind = "license-activated" if active else "license-deactivated"
            await self.commit(
                [Change.put(_replace(lic, active=active))], self.entry(kind, id=lic.id)
            )

    async def acceptAgreement(self, license_id: str, acceptedBy: str = "admin") -> Agreement:
        """Record that the admin accepted a license's agreement (synced to the failover)."""
        self.gateAdmin()
        self._license(license_id)
        known = self.pool.get("agreement", license_id)
        if known is not None:
            return known
        agreement = Agreement(license_id, acceptedBy, self.now())
        entry = self.entry("agreement-accepted", license=license_id, by=acceptedBy)
        await self.commit([Change.put(agreement)], entry)
        return agreement

    async def deleteLicense(self, license_id: str) -> None:
        """Remove a license with its assignments and the leases it gave."""
        self.gateAdmin()
        lic = self._license(license_id)
        changes = [Change.delete(a) for a in self.pool.assignmentsOfLicense(license_id)]
        agreement = self.pool.get("agreement", license_id)
        if agreement is not None:
            changes.append(Change.delete(agreement))
        changes += [
            Change.delete(lease)
            for lease in self.pool.leasesFor(lic.product)
            if license_id in lease.licenses
        ]
        changes.append(Change.delete(lic))
        await self.commit(changes, self.entry("license-deleted", id=license_id))

    async def assign(self, client_id: str, product: str, license_ids: list[str]) -> None:
        """Make ``license_ids`` the licenses assigned to a client's product."""
        self.gateAdmin()
        if self.pool.client(client_id) is None:
            raise AdminError(404, f"no client {client_id}")
        if self.pool.get("product", client_id, product) is None:
            raise AdminError(404, f"client {client_id} has not registered {product}")
        wanted = list(dict.fromkeys(license_ids))
        for license_id in wanted:
            lic = self._license(license_id)
            if lic.product != product:
                raise AdminError(400, f"license {license_id} is for {lic.product}, not {product}")
            holders = [a.client for a in self.pool.assignmentsOfLicense(license_id)]
            problem = allocation.assignment_problem(lic, holders, client_id)
            if problem:
                raise AdminError(409, problem)
        current = self.pool.assignmentsOf(client_id, product)
        changes = [Change.delete(a) for a in current if a.license not in wanted]
        have = {a.license for a in current}
        changes += [
            Change.put(Assignment(client_id, product, lid)) for lid in wanted if lid not in have
        ]
        if changes:
            entry = self.entry(
                "assignment-changed", client=client_id, product=product, licenses=wanted
            )
            await self.commit(changes, entry)

    def seatPolicy(self) -> policy.Policy:
        """The seat policy in force (the synced setting; none: ``policy.EMPTY``)."""
        raw = self.pool.setting(policy.SETTING)
        if not raw:
            return policy.EMPTY
        cached = getattr(self, "_policyCache", None)
        if cached is None or cached[0] is not raw:
            self._policyCache = (raw, policy.parse(raw))
        return self._policyCache[1]

    async def setSeatPolicy(self, data: Any) -> dict[str, Any]:
        """Replace the seat policy with ``data``, checked as a whole against the pool's
        seats (``AdminError`` 400 with the reason, and nothing changed); audited, synced."""
        self.gateAdmin()
        seats: dict[str, int] = {}
        for lic in self.pool.all("license"):
            seats[lic.product] = seats.get(lic.product, 0) + lic.seats
        try:
            parsed = policy.parse(data, seats)
        except policy.PolicyError as e:
            raise AdminError(400, f"seat policy: {e}") from None
        value = policy.to_json(parsed)
        if value != self.pool.setting(policy.SETTING):
            entry = self.entry("policy-changed", policy=value)
            await self.commit([Change.put(Setting(policy.SETTING, value))], entry)
            rules = len(parsed.rules)
            self.record(
                "policy-changed",
                "info",
                f"seat policy changed: {len(parsed.groups)} groups, {rules} rules",
            )
        return value

    async def revokeLease(self, lease_id: str, **who: Any) -> Lease:
        """End a live or borrowed lease at once: a seat stuck on a machine that crashed.

        The lease stays, revoked and holding no seat, while its holder may still
        count on it, so that its next HEARTBEAT gets ``410 revoked`` (the client
        SDK then takes no other seat on its own); the failover learns it with the
        next sync. ``who`` (the admin, and how and whence it asked) goes to the
        audit log. ``AdminError`` 404 for a lease that is not live.
        """
        self.gateAdmin()
        now = self.now()
        lease = self.pool.lease(lease_id)
        if lease is None or lease.revoked or not lease.live(now):
            raise AdminError(404, f"no live lease {lease_id[:80]}")
        revoked = dataclasses.replace(lease, expires=now, revoked=True)
        entry = self.entry(
            "lease-revoked", **clients.lease_fields(lease), borrowed=lease.borrowed, **who
        )
        await self.commit([Change.put(revoked)], entry)
        self.record(
            "lease-revoked",
            "info",
            f"{lease.product}: the seat of {lease.machine} ({lease.user}) was freed by the"
            f" admin (lease {lease.id})",
            lease=lease.id,
            product=lease.product,
            machine=lease.machine,
        )
        return revoked

    async def unregister(self, client_id: str) -> None:
        """Remove a client with its products, assignments and leases."""
        self.gateAdmin()
        client = self.pool.client(client_id)
        if client is None:
            raise AdminError(404, f"no client {client_id}")
        changes = [Change.delete(a) for a in self.pool.assignmentsOf(client_id)]
        changes += [Change.delete(p) for p in self.pool.productsOf(client_id)]
        changes += [Change.delete(lease) for lease in self.pool.leasesOfMachine(client.machine)]
        changes.append(Change.delete(client))
        await self.commit(changes, self.entry("client-unregistered", client=client_id))


_replace = dataclasses.replace
