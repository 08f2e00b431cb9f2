"""``ServerView``: everything the web pages, the admin API and ``/metrics`` read and change.

The web side holds a view, not the role: each method here names the one role
method, or the one pool look-up, that it reaches, so an editor can follow a
page's call to the code that answers it. The view always asks the role that
runs now (``RoleSwitch.current``), so it stays right across a switch of mode
and a takeover. Reads return the pool's immutable records; changes return
what the role's admin operations return and raise ``AdminError`` as they do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from licenseserver import policy
from licenseserver.model import Agreement, Assignment, Client, Event, Lease, License, Product


class ServerView:
    """The server as the web side sees it, through ``switch``.

    ``switch`` is the server's ``RoleSwitch``; a role on its own (a unit test's)
    will do too, for everything but ``mode`` and ``switchTo``.
    """

    def __init__(self, switch: Any):
        self.switch = switch

    @property
    def role(self) -> Any:
        """The role that runs now (a ``PrimaryRole`` or a ``FailoverRole``)."""
        return getattr(self.switch, "current", self.switch)

    # Who and where

    @property
    def serverName(self) -> str:
        return self.role.serverName

    @property
    def roleName(self) -> str:
        """``primary`` or ``failover``."""
        return self.role.roleName

    @property
    def state(self) -> str:
        """``active`` or ``standby``."""
        return self.role.state

    def now(self) -> int:
        return self.role.now()

    def serving(self) -> bool:
        return self.role.serving()

    def mode(self) -> dict[str, Any]:
        """The failover mode: ``{"role", "primary"}`` as configured."""
        return self.switch.mode()

    def primaryAddress(self) -> str | None:
        return self.role.primaryAddress()

    def primaryConfigured(self) -> str | None:
        return self.role.primaryConfigured()

    def failoverAddress(self) -> str | None:
        return self.role.failoverAddress()

    def peerStatus(self) -> dict[str, Any] | None:
        return self.role.peerStatus()

    def refusedPeer(self) -> dict[str, Any] | None:
        return self.role.refusedPeer()

    @property
    def committedRevision(self) -> int:
        """The newest revision this server holds durably."""
        return self.role.committedRevision

    @property
    def revision(self) -> int:
        """The revision of the pool in memory."""
        return self.role.pool.revision

    # The pool

    def licenses(self) -> list[License]:
        return list(self.role.pool.all("license"))

    def license(self, license_id: str) -> License | None:
        return self.role.pool.license(license_id)

    def licensesFor(self, product: str) -> list[License]:
        return self.role.pool.licensesFor(product)

    def agreement(self, license_id: str) -> Agreement | None:
        return self.role.pool.get("agreement", license_id)

    def clients(self) -> list[Client]:
        return list(self.role.pool.all("client"))

    def client(self, client_id: str) -> Client | None:
        return self.role.pool.client(client_id)

    def productsOf(self, client_id: str) -> list[Product]:
        return self.role.pool.productsOf(client_id)

    def assignmentsOf(self, client_id: str, product: str | None = None) -> list[Assignment]:
        return self.role.pool.assignmentsOf(client_id, product)

    def assignmentsOfLicense(self, license_id: str) -> list[Assignment]:
        return self.role.pool.assignmentsOfLicense(license_id)

    def leases(self) -> list[Lease]:
        """Every lease the pool holds, live or not."""
        return list(self.role.pool.all("lease"))

    def leasesFor(self, product: str) -> list[Lease]:
        return self.role.pool.leasesFor(product)

    def seatsInUse(self, now: float) -> dict[str, int]:
        """Seats in use of every license at ``now``."""
        return self.role.pool.seatsInUse(now)

    def overAllocated(self, license_id: str) -> int:
        """How many more seats of a license are in use than it has (after a merge)."""
        return self.role.overAllocated(license_id)

    def cutLimits(self) -> list[dict[str, Any]]:
        """While the link between the servers is down and this server serves: each exact
        license with the most seats served now (``license``, ``product``, ``seats``,
        ``serving``, ``since``; FAILOVER.md rule 19). Empty otherwise."""
        return self.role.cutLimits()

    def settings(self) -> dict[str, Any]:
        return self.role.settings()

    def setting(self, name: str) -> Any:
        return self.role.setting(name)

    def failoverCapable(self, product: str, version: str) -> bool:
        return self.role.failoverCapable(product, version)

    def vendorKeys(self) -> list[dict[str, str]]:
        return self.role.vendorKeys()

    async def events(self, limit: int) -> list[Event]:
        """The newest events of Messages, newest first."""
        return list(await self.role.store.events(limit))

    # Changes (each refused on a standby failover)

    def gateAdmin(self) -> None:
        """Raise ``AdminError`` when this server takes no pool changes now."""
        self.role.gateAdmin()

    async def addLicenses(self, data: bytes) -> list[str]:
        return await self.role.addLicenses(data)

    async def setLicenseActive(self, license_id: str, active: bool) -> None:
        await self.role.setLicenseActive(license_id, active)

    async def acceptAgreement(self, license_id: str) -> None:
        await self.role.acceptAgreement(license_id)

    async def deleteLicense(self, license_id: str) -> None:
        await self.role.deleteLicense(license_id)

    async def assign(self, client_id: str, product: str, license_ids: list[str]) -> None:
        await self.role.assign(client_id, product, license_ids)

    async def unregister(self, client_id: str) -> None:
        await self.role.unregister(client_id)

    async def sendTestAlert(self) -> str:
        return await self.role.sendTestAlert()

    def seatPolicy(self) -> dict[str, Any]:
        """The seat policy as the API shows it."""
        return policy.to_json(self.role.seatPolicy())

    async def setSeatPolicy(self, data: Any) -> dict[str, Any]:
        return await self.role.setSeatPolicy(data)

    async def revokeLease(self, lease_id: str, **who: Any) -> Lease:
        return await self.role.revokeLease(lease_id, **who)

    async def usageHistory(self, step: str, since: int, until: int, product: str | None) -> Any:
        return await self.role.usageHistory(step, since, until, product)

    async def topHolders(self, product: str, since: int, until: int, by: str, limit: int) -> Any:
        return await self.role.topHolders(product, since, until, by, limit)

    async def deniedRequests(self, since: int, until: int, limit: int) -> Any:
        return await self.role.deniedRequests(since, until, limit)

    async def updateSettings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return await self.role.updateSettings(values)

    async def addVendorKey(self, pem: bytes) -> tuple[str, bool]:
        return await self.role.addVendorKey(pem)

    async def unpair(self) -> str | None:
        """Forget this primary's failover (FAILOVER.md rule 16): the name of the failover
        forgotten (its address when it has not paired since a restart), None when there
        was none. A failover refuses with ``AdminError`` 409: only its primary unpairs."""
        role = self.role
        peer = role.peerStatus() if role.roleName == "primary" else None
        forgotten = peer["name"] if peer is not None else role.failoverAddress()
        await role.unpair()
        return forgotten

    async def switchTo(self, role: str, primary: str | None) -> dict[str, Any]:
        return await self.switch.switchTo(role, primary)

    def record(self, kind: str, severity: str, message: str, **data: Any) -> None:
        """Add an event to Messages."""
        self.role.record(kind, severity, message, **data)
