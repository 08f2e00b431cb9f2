"""What a role does for clients on the licensing port: HELLO, seats, renewals, the reaper.

``ClientOperations`` is a part of ``ServingRole`` (``roles.base``): it decides
each request with the seat rules of ``allocation`` from the ledger's pool, and
records the result through ``ServingRole.commit`` (the ledger). A client hears
``OK`` only once its grant, renewal or release is durable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer

from licenseserver import allocation, policy
from licenseserver.audit import AuditEntry
from licenseserver.model import (
    CONCURRENT,
    Change,
    Client,
    Lease,
    Product,
)
from licenseserver.protocols.wire import (
    MAX_MACHINE,
    ProtocolError,
    integer_arg,
    lease_arg,
    text_arg,
)
from licenseserver.session import Session
from licenseserver.versions import is_valid as version_is_valid

Answer = dict[str, Any] | defer.Deferred
"""What a request handler gives: its answer, or a Deferred that fires with it."""

NO_LICENSE_EVERY = 3600
"""Seconds between two Messages events about one product's ``404 no-license`` refusals."""


class ClientOperations:
    """HELLO, CHECKOUT, HEARTBEAT, RELEASE and BORROW, and the reaper of expired leases.

    A mixin of ``ServingRole``: it uses the role's ``pool``, ``commit``,
    ``entry``, ``audit``, ``record``, ``now``, ``setting`` and its gates.
    """

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
            self._noteDenial(request, session, result.reason, result.message)
            raise ProtocolError(result.reason, result.message)
        return result

    def _policyChecked(self, request: allocation.SeatRequest, session: Session) -> None:
        """Refuse a new seat that the seat policy (``licenseserver.policy``) does not allow:
        ``403 policy-denied``, or ``409 no-seats`` when the free seats are reserved."""
        rules = self.seatPolicy()
        if not rules.rulesFor(request.product):
            return
        now = self.now()
        holders: dict[tuple[str, str], str] = {}
        for lease in self.pool.leasesFor(request.product):
            if lease.live(now):
                client = self.pool.client(lease.client)
                holders[(lease.machine, lease.user)] = client.host if client else lease.machine
        if (request.machine, request.user) in holders:
            return  # it holds a seat of the product already: no new one
        seats = sum(lic.seats for lic in self.pool.licensesFor(request.product))
        refusal = policy.check(
            rules,
            request.product,
            request.user,
            session.host,
            [(user, host) for (_, user), host in holders.items()],
            seats,
        )
        if refusal is not None:
            self._noteDenial(request, session, refusal.reason, refusal.message, explain=True)
            raise ProtocolError(refusal.reason, refusal.message)

    def _partitionChecked(
        self, lease: Lease, request: allocation.SeatRequest, session: Session
    ) -> bool:
        """``partitionCheck``, with its refusals noted like any other unmet request."""
        try:
            return self.partitionCheck(lease)
        except ProtocolError as e:
            self._noteDenial(request, session, e.reason, e.message or "", explain=True)
            raise

    def _noteDenial(
        self,
        request: allocation.SeatRequest,
        session: Session,
        reason: str,
        message: str,
        explain: bool = False,
    ) -> None:
        """Audit a refused seat request and count it in the usage history; put the ones an
        admin can act on in Messages (with the refusal's ``message`` when ``explain``: a
        seat held back by a rule the admin cannot see from the seats in use alone)."""
        self.noteUsageDenial(request.product, request.machine, request.user, reason)
        if reason == "no-seats":
            why = f": {message}" if explain else ""
            self.alerter.alert(
                f"no-seats:{request.product}",
                f"licenseserver {self.serverName}: {request.product} refused a seat",
                f"{request.product}: no free seat for {session.host} ({request.user}){why}."
                " Further refusals of this product are not mailed for an hour; the Usage"
                " tab and GET /api/denials list them all.",
                every=3600,
            )
            self.record(
                "unmet-request",
                "warning",
                f"{request.product}: no free seat for {session.host} ({request.user}){why}",
                product=request.product,
                machine=request.machine,
                host=session.host,
                user=request.user,
            )
        elif reason == "no-license":
            self._noteNoLicense(request, session, message)
        self.audit(
            "denial",
            reason=reason,
            product=request.product,
            machine=request.machine,
            user=request.user,
        )

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
            if earlier is not None and earlier.revoked:
                raise _revoked(earlier)
            if earlier is not None and earlier.live(self.now()):
                if earlier.borrowed:
                    return _leaseArgs(earlier, ttl=True)
                (renewed,), written = self._renewAll([earlier])
                return self.answerOnceHeld(earlier, _after(written, _leaseArgs(renewed, ttl=True)))
        self.gateGrant()
        grant = self._allocate(request, session)
        self._policyChecked(request, session)
        lease = self._grant(session, request, grant, self.leaseTTL, key=key)
        acknowledged = self._partitionChecked(lease, request, session)
        answer = _leaseArgs(lease, ttl=True)
        changes, audited = self._reclaimed(grant)
        changes.append(Change.put(lease))
        audited.append(self._granted(lease, "checkout"))
        written = self.commit(changes, *audited, result=answer)
        return written if not acknowledged else self.awaitAcknowledgement(lease, written)

    def _granted(self, lease: Lease, command: str) -> AuditEntry:
        return self.entry("grant", command=command, **lease_fields(lease), expires=lease.expires)

    def _renewAll(self, leases: list[Lease]) -> tuple[list[Lease], defer.Deferred | None]:
        """Renew the leases to now plus their lease time (``Ledger.renew``)."""
        return self.ledger.renew(leases, self.now())

    def _ownLease(self, session: Session, lease_id: str) -> Lease:
        lease = self.pool.lease(lease_id)
        if lease is not None and lease.revoked and lease.machine == session.machine:
            raise _revoked(lease)
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
        self.leaseEnded([lease], "released")
        return self.commit([Change.delete(lease)], released, result={})

    async def borrow(self, session: Session, args: Mapping[str, str]) -> dict[str, Any]:
        """Take a seat for 1 to the maximum number of days, without heartbeats."""
        self._requireHello(session)
        request = self._seatRequest(session, args)
        if not self.borrowAllowed():
            self._noteDenial(request, session, "borrow-disabled", "")
            raise ProtocolError("borrow-disabled", "this server does not lend seats")
        most = int(self.setting("borrow_max_days"))
        if "days" not in args:
            raise ProtocolError("bad-request", "days= is required")
        days = integer_arg(args, "days", 1, 1, most)
        grant = self._allocate(request, session)
        self._policyChecked(request, session)
        # No request key: BORROW has none, and one stored here would answer a later
        # CHECKOUT that uses the same key with this borrowed lease.
        lease = self._grant(session, request, grant, days * 86400, borrowed=True)
        acknowledged = self._partitionChecked(lease, request, session)
        changes, audited = self._reclaimed(grant)
        changes.append(Change.put(lease))
        written = self.commit(changes, *audited, self._granted(lease, "borrow"))
        if acknowledged:
            written = self.awaitAcknowledgement(lease, written)
        await written
        return _leaseArgs(lease, ttl=False)

    # The reaper

    async def reap(self) -> int:
        """Remove the leases that have expired; return how many.

        A lease the partition rules still count (``keepsExpired``) stays: under
        the ``exact`` policy a seat that ended by silence during a cut is not
        free again until the two servers meet (FAILOVER.md rules 16-17).
        """
        now = self.now()
        dead = [
            lease
            for lease in self.pool.all("lease")
            if not lease.live(now) and not self.keepsExpired(lease) and not lingers(lease, now)
        ]
        if dead:
            changes, audited = self._expired(dead)
            await self.commit(changes, *audited)
        return len(dead)

    def _expired(self, dead: list[Lease]) -> tuple[list[Change], list[AuditEntry]]:
        """The deletion of leases that ended by silence, and its audit entry."""
        if not dead:
            return [], []
        self.leaseEnded(dead, "expired")
        expired = self.entry("expire", leases=[lease.id for lease in dead])
        return [Change.delete(lease) for lease in dead], [expired]

    def _reclaimed(self, grant: allocation.Grant) -> tuple[list[Change], list[AuditEntry]]:
        """The ended leases whose seat a grant may take, deleted in the grant's own write.

        A concurrent license with as many holders as seats, live or not, gives
        a seat only because some holder's leases have all ended: the reaper
        would delete them within seconds. Deleting them with the grant means a
        lease on disk always held its seat, so a restarted server may count
        every one of them live until the latest end its client was told
        (``Ledger.start``) and still never count more seats than licensed.
        """
        if grant.kind != CONCURRENT:
            return [], []
        now = self.now()
        dead: list[Lease] = []
        for license_id in grant.licenses:
            lic = self.pool.license(license_id)
            holders = self.pool.holdersOf(license_id)
            if lic is None or len(holders) < lic.seats:
                continue
            for leases in holders.values():
                if not any(lease.live(now) for lease in leases.values()):
                    dead.extend(
                        lease
                        for lease in leases.values()
                        if not self.keepsExpired(lease) and not lingers(lease, now)
                    )
        return self._expired(dead)

    def _reapSafely(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.reap())
        d.addErrback(lambda f: self.log.failure("Reaping expired leases failed", f))
        return d


_replace = dataclasses.replace


def lease_fields(lease: Lease) -> dict[str, Any]:
    """What the audit log says of a lease: its id, holder, product and licenses."""
    return {
        "lease": lease.id,
        "machine": lease.machine,
        "user": lease.user,
        "product": lease.product,
        "licenses": list(lease.licenses),
    }


def lingers(lease: Lease, now: int) -> bool:
    """Whether a lease an admin ended stays in the pool (holding no seat): until the end
    its holder may have been told before, so that its HEARTBEAT gets ``410 revoked``."""
    return lease.revoked and now < lease.expires + lease.ttl


def _revoked(lease: Lease) -> ProtocolError:
    return ProtocolError(
        "revoked",
        f"an admin ended lease {lease.id}: the application must not take another seat"
        " without its user asking",
    )


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
