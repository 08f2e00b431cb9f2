"""Serving licenses: what both roles do when they are active.

``ServingRole`` holds the license pool in memory, decides every request on
the reactor thread with the seat rules of ``allocation``, and writes each
decision through the store before it answers: a client is told ``OK`` only
once its grant, renewal or release is durable. When the store refuses a
write, the pool takes the change back and the client gets ``500``.

The primary is a ``ServingRole`` that is always active; the failover is one
that is active only after a takeover.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from licenseserver import allocation, signing
from licenseserver._version import EDITION, __version__
from licenseserver.audit import AuditEntry
from licenseserver.interfaces import IRole
from licenseserver.ledger import Ledger
from licenseserver.model import (
    Agreement,
    Assignment,
    Change,
    Client,
    Event,
    Lease,
    Product,
    Setting,
)
from licenseserver.pool import Pool
from licenseserver.protocols.wire import ProtocolError, integer_arg
from licenseserver.session import Session
from licenseserver.tokens import RandomTokens
from licenseserver.versions import is_valid as version_is_valid
from licenseserver.versions import meets_minimum

Answer = dict[str, Any] | defer.Deferred
"""What a request handler gives: its answer, or a Deferred that fires with it."""


MAX_MACHINE = 128
"""Longest ``machine`` id: the protocol's own limit."""

MAX_TEXT = 1024
"""Longest other text value (product, host, user, edition, request, peer names).

The protocol names no limit for them beyond the line's 8192 bytes; this one
keeps what the pool and the store hold in proportion while leaving room for
any real name (a host name has at most 253 characters)."""


NO_LICENSE_EVERY = 3600
"""Seconds between two Messages events about one product's ``404 no-license`` refusals."""


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


VENDOR_KEYS = "vendor_keys"
"""The setting that holds the vendor keys added at run time: key id to PEM text.

Not among ``SETTING_CHECKS``: it is changed only through ``addVendorKey``."""

SETTING_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "borrow_enabled": _boolean,
    "borrow_max_days": _integer_between(1, 365),
    "lease_ttl": _integer_between(4, 86400),
    "failover_minimums": _minimums,
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


def text_arg(
    args: Mapping[str, str],
    name: str,
    *,
    required: bool,
    default: str = "",
    limit: int = MAX_TEXT,
) -> str:
    """An argument of 1 to ``limit`` printable characters."""
    value = args.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad-request", f"{name}= is required")
        return default
    if not (1 <= len(value) <= limit) or not value.isprintable():
        raise ProtocolError("bad-request", f"{name} must be 1 to {limit} printable characters")
    return value


def lease_arg(args: Mapping[str, str]) -> str:
    """The required ``lease`` argument, as given: any id the server does not hold is
    ``unknown-lease`` (checked where it is looked up), however long or odd."""
    value = args.get("lease")
    if value is None:
        raise ProtocolError("bad-request", "lease= is required")
    return value


@implementer(IRole)
class ServingRole(service.MultiService):
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
        """Per product: when a ``no-license`` event was last recorded."""
        reaper = TimerService(reapInterval, self._reapSafely)
        reaper.clock = clock
        reaper.setServiceParent(self)

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
        self.ledger.load(snapshot)
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
        return service.MultiService.stopService(self)

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

    def borrowAllowed(self) -> bool:
        return bool(self.setting("borrow_enabled"))

    # Helpers

    def now(self) -> int:
        return int(self.clock.seconds())

    def setting(self, name: str) -> Any:
        """A licensing setting: the admin's value or the default."""
        return self.pool.setting(name, self.settingDefaults.get(name))

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

    @property
    def leaseTTL(self) -> int:
        """Seconds a new lease lives without a HEARTBEAT (``--lease-ttl`` or the setting)."""
        return int(self.setting("lease_ttl"))

    def settings(self) -> dict[str, Any]:
        """Every licensing setting with its current value."""
        return {name: self.setting(name) for name in sorted(self.settingDefaults)}

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
        """Add an event for the admin's Messages; a failure is only logged."""
        event = Event(self.now(), kind, severity, message, data)
        d = self.store.addEvent(event)
        d.addErrback(lambda f: self.log.failure("Could not record an event", f))

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

    async def hello(self, session: Session, args: Mapping[str, str]) -> dict[str, Any]:
        """Register the machine and product of the session, and open it."""
        self.gate()
        if session.hello:
            raise ProtocolError("bad-request", "HELLO was already said on this connection")
        product = text_arg(args, "product", required=True)
        version = text_arg(args, "version", required=True)
        if not version_is_valid(version):
            raise ProtocolError("bad-request", f"{version!r} is not a product version")
        host = text_arg(args, "host", required=True)
        machine = text_arg(args, "machine", required=True, limit=MAX_MACHINE)
        user = text_arg(args, "user", required=False, default="-")
        cores = integer_arg(args, "cores", 1, 1, 1 << 20)
        self.checkClient(product, version)
        await self.whenLoaded()
        now = self.now()
        client = self.pool.clientByMachine(machine)
        if client is None:
            client = Client(self._newClientId(), machine, host, now, now)
        else:
            client = Client(client.id, machine, host, client.registered, now)
        await self.commit(
            [
                Change.put(client),
                Change.put(Product(client.id, product, version, user, cores, now)),
            ]
        )
        session.hello = True
        session.client = client.id
        session.machine, session.host, session.user = machine, host, user
        session.product, session.version, session.cores = product, version, cores
        status = self.status()
        return {
            **{k: status[k] for k in ("server", "role", "state", "version", "edition")},
            "client": client.id,
            "primary": status["primary"],
            "failover": status["failover"],
            "heartbeat": self.heartbeatInterval(),
        }

    def _newClientId(self) -> str:
        return f"c-{self.pool.highestClientNumber + 1}"

    def _requireHello(self, session: Session) -> None:
        self.gate()
        if not session.hello:
            raise ProtocolError("hello-required", "say HELLO first")

    def _seatRequest(self, session: Session, args: Mapping[str, str]) -> allocation.SeatRequest:
        product = text_arg(args, "product", required=False, default=session.product)
        edition = args.get("edition")
        if edition is not None:
            edition = text_arg(args, "edition", required=True)
        cores = integer_arg(args, "cores", session.cores, 1, 1 << 20)
        return allocation.SeatRequest(
            session.machine, session.user, product, session.version, cores, edition
        )

    def _allocate(self, request: allocation.SeatRequest, session: Session) -> allocation.Grant:
        now = self.now()
        assigned = [a.license for a in self.pool.assignmentsOf(session.client, request.product)]
        result = allocation.allocate(
            request,
            self.pool.licensesFor(request.product),
            (),
            assigned,
            now,
            self.pool.holdersOf,
        )
        if isinstance(result, allocation.Denial):
            if result.reason == "no-seats":
                self.record(
                    "unmet-request",
                    "warning",
                    f"{request.product}: no free seat for {session.host} ({request.user})",
                    product=request.product,
                    machine=request.machine,
                    host=session.host,
                    user=request.user,
                )
            elif result.reason == "no-license":
                self._noteNoLicense(request, session, result.message)
            self.audit(
                "denial",
                reason=result.reason,
                product=request.product,
                machine=request.machine,
                user=request.user,
            )
            raise ProtocolError(result.reason, result.message)
        return result

    def _noteNoLicense(self, request: allocation.SeatRequest, session: Session, why: str) -> None:
        """Record in Messages that a product's licenses gave no seat (expired, deactivated,
        not yet valid, another version or edition): once per ``NO_LICENSE_EVERY`` per
        product, however often clients ask (each refusal is in the audit log).

        Only for products the pool has licenses of: any other name is the client's to
        choose, and a client looping over names would fill Messages.
        """
        product = request.product
        if not self.pool.licensesFor(product):
            return
        now = self.now()
        last = self._noLicenseNoted.get(product)
        if last is not None and now - last < NO_LICENSE_EVERY:
            return
        self._noLicenseNoted[product] = now
        self.record(
            "no-license",
            "warning",
            f"{product}: no license for {session.host} ({request.user}): {why}",
            product=product,
            machine=request.machine,
            host=session.host,
            user=request.user,
        )

    def _grant(
        self,
        session: Session,
        request: allocation.SeatRequest,
        grant: allocation.Grant,
        ttl: int,
        *,
        borrowed: bool = False,
        key: str = "",
    ) -> Lease:
        now = self.now()
        return Lease(
            id="l-" + self._newToken(),
            client=session.client,
            machine=session.machine,
            user=session.user,
            product=request.product,
            version=session.version,
            licenses=grant.licenses,
            kind=grant.kind,
            granted=now,
            expires=now + ttl,
            ttl=ttl,
            borrowed=borrowed,
            request=key,
        )

    def checkout(self, session: Session, args: Mapping[str, str]) -> defer.Deferred:
        """Take a seat, or return the lease of a repeated ``request`` key."""
        return defer.maybeDeferred(self.serveCheckout, session, args)

    def heartbeat(self, session: Session, args: Mapping[str, str]) -> defer.Deferred:
        """Renew one lease, or every lease of the session's machine."""
        return defer.maybeDeferred(self.serveHeartbeat, session, args)

    def release(self, session: Session, args: Mapping[str, str]) -> defer.Deferred:
        """Free a lease."""
        return defer.maybeDeferred(self.serveRelease, session, args)

    # The licensing port's busiest requests are served without coroutines: each
    # returns its answer when it needs no write, a Deferred of it otherwise, and
    # raises ProtocolError to refuse. The methods above wrap them for callers
    # that want a Deferred always.

    def serveCheckout(self, session: Session, args: Mapping[str, str]) -> Answer:
        """CHECKOUT: the answer, or a Deferred that fires with it once the grant is durable."""
        self._requireHello(session)
        request = self._seatRequest(session, args)
        key = text_arg(args, "request", required=False)
        if key:
            earlier = self.pool.leaseByRequest(session.machine, key)
            if earlier is not None and earlier.live(self.now()):
                if earlier.borrowed:
                    return _leaseArgs(earlier, ttl=True)
                (renewed,), written = self._renewAll([earlier])
                return _after(written, _leaseArgs(renewed, ttl=True))
        grant = self._allocate(request, session)
        lease = self._grant(session, request, grant, self.leaseTTL, key=key)
        answer = _leaseArgs(lease, ttl=True)
        return self.commit([Change.put(lease)], self._granted(lease, "checkout"), result=answer)

    def _granted(self, lease: Lease, command: str) -> AuditEntry:
        return self.entry(
            "grant",
            command=command,
            lease=lease.id,
            machine=lease.machine,
            user=lease.user,
            product=lease.product,
            licenses=list(lease.licenses),
            expires=lease.expires,
        )

    def _renewAll(self, leases: list[Lease]) -> tuple[list[Lease], defer.Deferred | None]:
        """Renew the leases to now plus their lease time (``Ledger.renew``)."""
        return self.ledger.renew(leases, self.now())

    def _ownLease(self, session: Session, lease_id: str) -> Lease:
        lease = self.pool.lease(lease_id)
        if lease is None or lease.machine != session.machine or not lease.live(self.now()):
            raise ProtocolError("unknown-lease", f"this server holds no lease {lease_id[:80]}")
        return lease

    def serveHeartbeat(self, session: Session, args: Mapping[str, str]) -> Answer:
        """HEARTBEAT: the answer, or a Deferred of it when the renewal must be written."""
        self._requireHello(session)
        if "lease" in args:
            lease = self._ownLease(session, lease_arg(args))
            if lease.borrowed:
                return {"expires": lease.expires, "ttl": lease.ttl}
            (lease,), written = self._renewAll([lease])
            return _after(written, {"expires": lease.expires, "ttl": lease.ttl})
        now = self.now()
        leases = [
            lease
            for lease in self.pool.leasesOfMachine(session.machine)
            if lease.live(now) and not lease.borrowed
        ]
        if not leases:
            raise ProtocolError("unknown-lease", "this machine holds no lease here")
        renewed, written = self._renewAll(leases)
        soonest = min(renewed, key=lambda lease: lease.expires)
        return _after(written, {"expires": soonest.expires, "ttl": soonest.ttl})

    def serveRelease(self, session: Session, args: Mapping[str, str]) -> Answer:
        """RELEASE: a Deferred that fires with the answer once the release is durable."""
        self._requireHello(session)
        lease = self._ownLease(session, lease_arg(args))
        released = self.entry("release", lease=lease.id, machine=lease.machine)
        return self.commit([Change.delete(lease)], released, result={})

    async def borrow(self, session: Session, args: Mapping[str, str]) -> dict[str, Any]:
        """Take a seat for 1 to the maximum number of days, without heartbeats."""
        self._requireHello(session)
        if not self.borrowAllowed():
            raise ProtocolError("borrow-disabled", "this server does not lend seats")
        request = self._seatRequest(session, args)
        most = int(self.setting("borrow_max_days"))
        if "days" not in args:
            raise ProtocolError("bad-request", "days= is required")
        days = integer_arg(args, "days", 1, 1, most)
        grant = self._allocate(request, session)
        # No request key: BORROW has none, and one stored here would answer a later
        # CHECKOUT that uses the same key with this borrowed lease.
        lease = self._grant(session, request, grant, days * 86400, borrowed=True)
        await self.commit([Change.put(lease)], self._granted(lease, "borrow"))
        return _leaseArgs(lease, ttl=False)

    # The reaper

    async def reap(self) -> int:
        """Remove the leases that have expired; return how many."""
        now = self.now()
        dead = [lease for lease in self.pool.all("lease") if not lease.live(now)]
        if dead:
            expired = self.entry("expire", leases=[lease.id for lease in dead])
            await self.commit([Change.delete(lease) for lease in dead], expired)
        return len(dead)

    def _reapSafely(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.reap())
        d.addErrback(lambda f: self.log.failure("Reaping expired leases failed", f))
        return d

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


def _after(written: defer.Deferred | None, answer: dict[str, Any]) -> Answer:
    """``answer`` now when nothing was written, else once ``written`` is durable."""
    if written is None:
        return answer
    return written.addCallback(lambda ignored: answer)


def _leaseArgs(lease: Lease, *, ttl: bool) -> dict[str, Any]:
    """A grant's answer. ``license`` is one license id, as the protocol has it; a core
    seat whose cores come from several licenses lists them all in ``licenses``."""
    args: dict[str, Any] = {
        "lease": lease.id,
        "license": lease.licenses[0],
        "kind": lease.kind,
        "expires": lease.expires,
    }
    if ttl:
        args["ttl"] = lease.ttl
    if len(lease.licenses) > 1:
        args["licenses"] = ",".join(lease.licenses)
    return args
