"""Serving licenses: the role both servers run, active or not.

``ServingRole`` holds the role's life cycle (it loads the pool into its
ledger, then starts the reaper), the hooks in which a primary and a failover
differ (``state``, ``gate``, the peer link...), and the helpers both kinds of
operation share: the time, the settings, the ledger's commit, the audit log
and Messages. The operations themselves are in ``roles.clients`` (for
licensed applications) and ``roles.admin`` (for the admin); the pool's state
and its changes in ``licenseserver.ledger``.

The primary is a ``ServingRole`` that is always active; the failover is one
that is active only after a takeover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from licenseserver import alerts, allocation, usage
from licenseserver._version import EDITION, __version__
from licenseserver.audit import AuditEntry
from licenseserver.interfaces import IRole
from licenseserver.ledger import Ledger
from licenseserver.model import CONCURRENT, Change, Event
from licenseserver.pool import Pool
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.admin import AdminError, AdminOperations
from licenseserver.roles.clients import ClientOperations
from licenseserver.session import Session
from licenseserver.tokens import RandomTokens
from licenseserver.versions import meets_minimum

__all__ = ["AdminError", "ServingRole"]

DEFAULT_SHARE = "20%"
"""The failover share when neither the license nor the settings give one."""


@implementer(IRole)
class ServingRole(ClientOperations, AdminOperations, service.MultiService):
    """The licensing and admin operations over an in-memory pool and a store.

    ``clock`` gives the time and schedules the reaper; ``trustedKeys`` maps
    vendor key ids to public keys; ``settingDefaults`` holds the value of
    each licensing setting the admin has not changed. ``newToken`` gives the
    random part of lease ids (by default 12 random bytes from ``RandomTokens``).
    """

    roleName = "primary"
    log = Logger()

    def __init__(
        self,
        store: Any,
        *,
        clock: Any,
        serverName: str,
        advertise: str,
        leaseTTL: int,
        trustedKeys: Mapping[str, Any],
        settingDefaults: Mapping[str, Any],
        reapInterval: float = 5.0,
        newToken: Callable[[], str] | None = None,
    ):
        super().__init__()
        self.store = store
        self.clock = clock
        self.serverName = serverName
        self.advertise = advertise
        self.configuredKeys = dict(trustedKeys)
        """The vendor keys this server was started with (files or ``--vendor-key``)."""
        self.settingDefaults = {**settingDefaults, "lease_ttl": leaseTTL}
        self.ledger = Ledger(store)
        """The pool's state and every change to it (``licenseserver.ledger``)."""
        self.loaded = False
        self.loadError: Any = None
        self._whenLoaded: list[defer.Deferred] = []
        self._newToken = newToken or RandomTokens(12)
        self._noLicenseNoted: dict[str, int] = {}
        self._overNoted: dict[str, int] = {}
        """Per license: the over-allocation last recorded in Messages."""
        """Per product: when a ``no-license`` event was last recorded."""
        reaper = TimerService(reapInterval, self._reapSafely)
        reaper.clock = clock
        reaper.setServiceParent(self)
        self.alerter = alerts.Alerter(clock, alerts.Mailer(clock, self.setting), self.record)
        """Alert e-mail (``licenseserver.alerts``), sent when the settings name a server."""
        self._expiryAlertDay: int | None = None
        self._storeStopped = False
        self.usage = usage.Recorder()
        """The usage history's minute under way (``licenseserver.usage``)."""
        sampler = TimerService(usage.SAMPLE_EVERY, self._sampleUsage)
        sampler.clock = clock
        sampler.setServiceParent(self)

    # Life cycle

    def startService(self) -> None:
        """Load the pool from the store, then start the children (the reaper)."""
        service.Service.startService(self)
        self._loading = defer.ensureDeferred(self._load())
        self._loading.addErrback(self._loadFailed)

    async def _load(self) -> None:
        snapshot = await self.store.load()
        await self.loadLocal()
        self._loaded(snapshot)

    async def loadLocal(self) -> None:
        """Read this role's local (never synced) values from the store, before serving."""

    def _loaded(self, snapshot: Any) -> None:
        if self.servedLoadedPool():
            self.ledger.start(snapshot)
        else:
            self.ledger.load(snapshot)
        self.loadedPool()
        self.loaded = True
        added = [key["id"] for key in self.vendorKeys() if key["source"] == "added"]
        if added:
            self.log.info(
                "Also trusting vendor keys added at run time: {keys}", keys=", ".join(added)
            )
        for child in list(self):
            child.startService()
        waiting, self._whenLoaded = self._whenLoaded, []
        for d in waiting:
            d.callback(None)

    def _loadFailed(self, failure: Any) -> None:
        self.log.failure("Could not load the license pool: serving nothing", failure)
        self.loadError = ProtocolError("internal-error", "the license pool could not be loaded")
        waiting, self._whenLoaded = self._whenLoaded, []
        for d in waiting:
            d.errback(self.loadError)

    def stopService(self) -> defer.Deferred:
        if not self.loaded:
            service.Service.stopService(self)
            return defer.succeed(None)
        self._writeUsage(*self.usage.flush())
        return service.MultiService.stopService(self)

    # The usage history

    def recordsUsage(self) -> bool:
        """Whether this server keeps the usage history now: while it serves licenses."""
        return True

    def _sampleUsage(self) -> None:
        """Write the minutes that are over; note the seats in use of every license. (Also
        look for lasting trouble, ``watch``, and once a day alert of the licenses that end
        within the alert window.)"""
        now = self.now()
        self.watch()
        self._alertExpiring(now)
        self._writeUsage(*self.usage.due(now))
        if not self.recordsUsage():
            return
        kinds = {lic.id: (lic.product, lic.kind) for lic in self.pool.all("license")}
        holders: dict[str, set[tuple]] = {license_id: set() for license_id in kinds}
        held = set()
        for lease in self.pool.all("lease"):
            if lease.expires <= now:
                continue
            held.add((lease.product, lease.machine, lease.user))
            for license_id in lease.licenses:
                found = holders.get(license_id)
                if found is not None:
                    concurrent = kinds[license_id][1] == CONCURRENT
                    found.add((lease.machine, lease.user) if concurrent else (lease.machine,))
        self.usage.sample(
            now,
            {lid: (kinds[lid][0], len(found)) for lid, found in holders.items()},
            held,
            usage.SAMPLE_EVERY,
        )

    def watch(self) -> None:
        """Look for trouble an admin must hear of at once (every ``SAMPLE_EVERY`` seconds):
        here, a store that stopped on its own. Its alert cannot go to Messages, which
        live in that store: the log has it, and so does ``/healthz``."""
        reason = self.store.broken()
        if reason is None or self._storeStopped:
            return
        self._storeStopped = True
        self.log.error("The store stopped: {reason}; no change can be written", reason=reason)
        self.alerter.alert(
            "store-stopped",
            f"licenseserver {self.serverName}: the store stopped",
            f"The store of {self.serverName} stopped: {reason}.\n"
            "The server refuses every checkout and change until it is restarted"
            " (its /healthz answers 503); see its log.",
        )

    def _alertExpiring(self, now: int) -> None:
        day = now // 86400
        if day == self._expiryAlertDay or not self.recordsUsage():
            return
        self._expiryAlertDay = day
        window = self.setting("alert_expiry_days")
        if window is None:
            return
        ending = sorted(
            (days, lic.id, lic.product, lic.expires)
            for lic in self.pool.all("license")
            if lic.expires
            and allocation.license_status(lic, now) == allocation.ACTIVE
            and (days := allocation.days_to_expiry(lic, now)) <= int(window)
        )
        if ending:
            lines = [
                f"{lid} ({product}) ends on {end}: {days} days left"
                for days, lid, product, end in ending
            ]
            self.alerter.alert(
                "expiry",
                f"licenseserver {self.serverName}: {len(ending)} license(s) end soon",
                "\n".join(lines),
                every=86400,
            )

    def noteUsageDenial(self, product: str, machine: str, user: str, reason: str) -> None:
        """Count a refused CHECKOUT or BORROW in the history of the product's licenses."""
        if not self.recordsUsage():
            return
        now = self.now()
        licenses = [lic.id for lic in self.pool.licensesFor(product)]
        self.usage.denied(now, usage.Denial(now, product, machine, user, reason), licenses)

    def usageHistory(
        self, step: str, since: int, until: int, product: str | None = None
    ) -> defer.Deferred:
        """The usage history's rows (``usage.Point``) of ``step`` in the time, as stored."""
        return self.store.usage(step, since, until, product)

    def topHolders(
        self, product: str, since: int, until: int, by: str, limit: int
    ) -> defer.Deferred:
        """The machines or users (``by``) with the most seat hours of ``product`` in the days
        of the time, as ``(name, hours)``."""
        return self.store.topHolders(product, since, until, by, limit)

    def deniedRequests(self, since: int, until: int, limit: int) -> defer.Deferred:
        """The refused requests (``usage.Denial``) in the time, newest first, as stored."""
        return self.store.denials(since, until, limit)

    def _writeUsage(self, points: list, denials: list, held: list) -> None:
        if not points and not denials and not held:
            return
        d = self.store.addUsage(points, denials, self.now(), held)
        d.addErrback(lambda f: self.log.failure("Could not write the usage history", f))

    def whenLoaded(self) -> defer.Deferred:
        """A Deferred that fires once the pool is loaded."""
        if self.loaded:
            return defer.succeed(None)
        if self.loadError is not None:
            return defer.fail(self.loadError)
        d: defer.Deferred = defer.Deferred()
        self._whenLoaded.append(d)
        return d

    # State that roles differ in

    def loadedPool(self) -> None:
        """The pool is loaded; nothing is served yet: mend what a crash left half done."""

    def servedLoadedPool(self) -> bool:
        """Whether this server served the pool it loads at start, so that renewals its
        clients were told may not be on disk (``Ledger.start``); a primary always did."""
        return True

    @property
    def state(self) -> str:
        return "active"

    def primaryAddress(self) -> str | None:
        """The primary's ``HOST:PORT``, as status and answers show it; None on a primary."""
        return None

    def primaryConfigured(self) -> str | None:
        """The primary as configured (``HOST[:PORT]`` or an endpoint); None on a primary."""
        return None

    def failoverAddress(self) -> str | None:
        """The failover this server knows of, as the admin's pages show it; None when none."""
        return None

    def failoverForClients(self) -> str | None:
        """The failover that ``failover=`` in STATUS and HELLO names: where clients should
        go when this server stops answering; None when there is none."""
        return None

    def peerStatus(self) -> dict[str, Any] | None:
        """The peer this server is paired with, for ``/api/status``; None when none."""
        return None

    def refusedPeer(self) -> dict[str, Any] | None:
        """A failover this server refused lately, for ``/api/status``; None when none."""
        return None

    def serving(self) -> bool:
        """Whether the process serves its role (``/healthz``): its pool is loaded and its
        store can still write (a store that stopped on its own answers every write with
        an error, so a monitor must see this server as down)."""
        return self.loaded and self.store.broken() is None

    def peerHandlers(self) -> dict[str, Callable[..., Any]]:
        """Handlers of the peer verbs this role answers, by verb (none here)."""
        return {}

    def sessionClosed(self, session: Session) -> None:
        """A licensing session has ended."""

    def gate(self) -> None:
        """Raise the ``ProtocolError`` that refuses client requests, if any."""

    def checkClient(self, product: str, version: str) -> None:
        """Raise a ``ProtocolError`` for a client product version this role does not serve."""

    def gateGrant(self) -> None:
        """Raise ``ProtocolError`` when this role grants no new seat now."""

    def partitionTerms(self, lic: Any) -> tuple[str, int]:
        """The partition policy in force for ``lic`` and its failover share ``E``
        (``allocation.partition_policy`` with this server's settings)."""
        return allocation.partition_policy(
            lic,
            self.setting("partition_policy") or allocation.FULL,
            self.setting("failover_share") or DEFAULT_SHARE,
        )

    def exactLicenses(self, lease: Any) -> list[tuple[Any, int]]:
        """The concurrent licenses of ``lease`` under the exact policy, with their share.

        Only concurrent seats can be over-used across a cut: installed and core
        seats go to assigned machines only, and a machine holds one seat at
        both servers alike.
        """
        licenses = (self.pool.license(license_id) for license_id in lease.licenses)
        return self._exact(lic for lic in licenses if lic is not None)

    def exactPool(self) -> list[tuple[Any, int]]:
        """Every concurrent license of the pool under the exact policy, with its share, in
        license id order."""
        return self._exact(sorted(self.pool.all("license"), key=lambda lic: lic.id))

    def _exact(self, licenses: Any) -> list[tuple[Any, int]]:
        out = []
        for lic in licenses:
            if lic.kind == CONCURRENT:
                policy, share = self.partitionTerms(lic)
                if policy == allocation.EXACT:
                    out.append((lic, share))
        return out

    def partitionCheck(self, lease: Any) -> bool:
        """Refuse ``lease`` (``409 no-seats``) when the partition rules hold its seat back;
        return whether its grant must wait for the failover's acknowledgement."""
        return False

    def awaitAcknowledgement(self, lease: Any, written: defer.Deferred) -> defer.Deferred:
        """``written``, and then the failover's durable copy of ``lease``."""
        return written

    def answerOnceHeld(self, lease: Any, answer: Any) -> Any:
        """``answer`` to a retry of the CHECKOUT of ``lease``: once the failover holds the
        lease, if its first answer still waits for that (``awaitAcknowledgement``)."""
        return answer

    def cutLimits(self) -> list[dict[str, Any]]:
        """While the link between the servers is down and this server serves: each exact
        license with the most seats it serves now (``license``, ``product``, ``seats``,
        ``serving``, ``since``; FAILOVER.md rule 19). Empty otherwise."""
        return []

    def keepsExpired(self, lease: Any) -> bool:
        """Whether an expired lease still counts, so that the reaper leaves it."""
        return False

    def leaseEnded(self, leases: Any, how: str) -> None:
        """Leases ended: ``released`` by their client, or ``expired`` without a heartbeat."""

    def borrowAllowed(self) -> bool:
        return bool(self.setting("borrow_enabled"))

    # Helpers

    def now(self) -> int:
        return int(self.clock.seconds())

    def setting(self, name: str) -> Any:
        """A licensing setting: the admin's value or the default."""
        return self.pool.setting(name, self.settingDefaults.get(name))

    @property
    def leaseTTL(self) -> int:
        """Seconds a new lease lives without a HEARTBEAT (``--lease-ttl`` or the setting)."""
        return int(self.setting("lease_ttl"))

    def heartbeatInterval(self) -> int:
        """How often clients should heartbeat: a quarter of the lease time."""
        return max(1, self.leaseTTL // 4)

    @property
    def pool(self) -> Pool:
        """The pool as it is now, for reading: only the ledger changes it."""
        return self.ledger.pool

    @property
    def committedRevision(self) -> int:
        """The newest revision the store has made durable."""
        return self.ledger.committedRevision

    def commit(
        self,
        changes: list[Change],
        *audited: AuditEntry,
        patient: bool = False,
        result: Any = None,
    ) -> defer.Deferred:
        """Record ``changes`` (and the ``audited`` entries) through the ledger.

        Fires with ``result`` once they are durable; see ``Ledger.commit``.
        """
        return self.ledger.commit(changes, audited, patient=patient, result=result)

    def entry(self, kind: str, **data: Any) -> AuditEntry:
        """An audit log entry of ``kind`` at this moment."""
        return AuditEntry(self.now(), kind, data)

    def audit(self, kind: str, **data: Any) -> None:
        """Append an entry to the audit log on its own; a failure is only logged."""
        d = self.store.audit([self.entry(kind, **data)])
        d.addErrback(lambda f: self.log.failure("Could not write the audit log", f))

    def record(self, kind: str, severity: str, message: str, **data: Any) -> None:
        """Add an event for the admin's Messages; a failure is only logged. (A store that
        stopped keeps no Messages: the event goes to the log.)"""
        if self.store.broken() is not None:
            self.log.warn(
                "{kind}: {message} (not in Messages: the store stopped)",
                kind=kind,
                message=message,
            )
            return
        event = Event(self.now(), kind, severity, message, data)
        d = self.store.addEvent(event)
        d.addErrback(lambda f: self.log.failure("Could not record an event", f))

    def overAllocated(self, license_id: str) -> int:
        """How many more seats of a license are in use than it has (0 when not more).

        Only a merge of a failover's leases can make it more (FAILOVER.md rule 18):
        the seat rules grant no seat of a license while it is full, so none is
        granted until fewer than its seats are in use again.
        """
        lic = self.pool.license(license_id)
        if lic is None:
            return 0
        holders = allocation.seat_holders(lic, self.pool.leasesFor(lic.product), self.now())
        return max(0, len(holders) - lic.seats)

    def noteOverAllocation(self, license_ids: Any, failover: str) -> None:
        """Record in Messages each of ``license_ids`` that a merge left over-allocated,
        once for each new count."""
        for license_id in dict.fromkeys(license_ids):
            over = self.overAllocated(license_id)
            if not over or self._overNoted.get(license_id) == over:
                continue
            self._overNoted[license_id] = over
            lic = self.pool.license(license_id)
            message = (
                f"license {license_id} ({lic.product}) is over-allocated by {over} after the"
                f" leases of the failover {failover} were merged: no running client loses its"
                f" seat, and no new seat is granted until fewer than {lic.seats} are in use"
            )
            self.log.warn("{message}", message=message)
            self.record("over-allocated", "warning", message, license=license_id, over=over)
            self.alerter.alert(
                f"over-allocated:{license_id}",
                f"licenseserver {self.serverName}: {license_id} over-allocated",
                message,
            )

    def failoverCapable(self, product: str, version: str) -> bool:
        """Whether a failover would serve this product version."""
        return meets_minimum(product, version, self.setting("failover_minimums"))

    # Client operations

    def status(self) -> dict[str, str]:
        return {
            "server": self.serverName,
            "role": self.roleName,
            "state": self.state,
            "version": __version__,
            "edition": EDITION,
            "primary": self.primaryAddress() or "none",
            "failover": self.failoverForClients() or "none",
        }
