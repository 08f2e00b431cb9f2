"""The primary role: always active, the source of truth that its failover syncs from.

Besides serving licenses, the primary accepts one failover on its licensing
port. The failover says ``PEER`` and proves the pairing secret with ``AUTH``
(an HMAC over a fresh challenge, so a captured proof is useless on the next
link); then it heartbeats with ``BEAT`` and fetches changes with ``SYNC``.
Only committed data leaves the primary: the sync reads the store, never the
in-memory pool, which may hold changes still on their way to disk.

A primary that starts again tells the admin how long it was down: it notes
in its data directory that it runs (every ``ALIVE_EVERY`` seconds) and that
it stopped cleanly, and records the outage in Messages. A failover that
served meanwhile reports that with its next ``AUTH``.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer

from licenseserver import alerts, jsonparse, usage
from licenseserver._version import EDITION, __version__
from licenseserver.addresses import parse_host_port
from licenseserver.allocation import Holders, live_holders, seats_held
from licenseserver.localstate import (
    ALIVE_AT,
    FAILOVER_ADDRESS,
    REMOVED,
    REMOVED_LIST,
    STOPPED_AT,
    UNCONFIRMED,
    UNCONFIRMED_LIST,
    load_family,
)
from licenseserver.model import (
    Change,
    Client,
    Lease,
    License,
    record_from_dict,
    record_to_dict,
)
from licenseserver.passwords import proof_matches
from licenseserver.protocols import sync
from licenseserver.protocols.wire import (
    MAX_INTEGER,
    ProtocolError,
    format_ok,
    integer_arg,
    parse_integer,
    text_arg,
)
from licenseserver.roles.base import ServingRole
from licenseserver.session import Session


@dataclass
class PeerLink:
    """The paired failover as the primary sees it."""

    name: str
    version: str
    address: str
    seen_from: str
    session: Session
    paired: int
    last_beat: int
    revision: int = 0
    last_sync: int | None = None
    connected: bool = True
    acknowledged: int = 0
    """The revision the failover said, with its last BEAT, that it holds durably."""
    heard: float = 0.0
    """When the failover's last BEAT came (the clock's own seconds); 0 before the first,
    which it sends once it has handed over its leases and synced."""


@dataclass
class PeerRefusal:
    """A failover the primary refused, as the status page shows it."""

    name: str
    seen_from: str
    reason: str
    message: str
    first: int
    last: int
    count: int = 1
    reported: int = 0


REPORT_EVERY = 300
"""Seconds between two log lines (and Messages) about the same refusal."""
PENALTY_CAP = 60.0
"""Longest wait imposed on an address after wrong pairing proofs."""

ALIVE_EVERY = 30.0
"""Seconds between two notes that the primary runs: how far a crash's time is known."""

SERVED_ARGS = ("served_from", "served_until", "served_grants", "served_takeovers")
"""The arguments of AUTH with which a failover reports the time it served."""


def utc(seconds: float) -> str:
    """A time for the log and Messages: ``2026-06-01 14:02:11 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def duration(seconds: float) -> str:
    """A length of time in words: ``45 s``, ``3 min 29 s``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def merged_lease(text: str) -> Lease:
    """The lease of a ``MERGE record=...``; ``bad-request`` for anything that is not one."""
    try:
        data = jsonparse.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        lease = record_from_dict("lease", data)
    except (ValueError, TypeError) as e:
        raise ProtocolError("bad-request", f"record is not a lease: {e}") from None
    texts = (lease.id, lease.client, lease.machine, lease.user, lease.product, lease.version)
    numbers = (lease.granted, lease.expires, lease.ttl)
    if (
        not all(isinstance(value, str) and value for value in texts)
        or not lease.id.startswith("l-")
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        or not lease.licenses
        or not all(isinstance(lid, str) for lid in lease.licenses)
        or not isinstance(lease.borrowed, bool)
    ):
        raise ProtocolError("bad-request", "record is not a lease")
    return lease


def _inline(function: Callable[..., Any], *args: Any) -> defer.Deferred:
    return defer.maybeDeferred(function, *args)


class PrimaryRole(ServingRole):
    """Serves licenses and takes admin changes at all times; feeds one failover.

    ``peerSecret`` is the pairing secret; ``takeoverAfter`` is how long a
    failover's link counts as alive after its last heartbeat (another
    failover is refused while it is). ``runInThread`` runs CPU-heavy work,
    such as encoding a full snapshot, off the reactor thread.
    """

    roleName = "primary"

    def __init__(
        self,
        store: Any,
        *,
        peerSecret: str = "",
        takeoverAfter: float = 5.0,
        runInThread: Callable[..., Any] = _inline,
        **kw: Any,
    ):
        super().__init__(store, **kw)
        self.peerSecret = peerSecret
        self.takeoverAfter = takeoverAfter
        self.runInThread = runInThread
        self.peer: PeerLink | None = None
        self.rememberedFailover: str | None = None
        self.refusal: PeerRefusal | None = None
        """The last failover refused, until one pairs."""
        self._penalties: dict[str, tuple[int, float]] = {}
        """Per address: wrong proofs in a row, and when the next proof is checked."""
        self._waiting: list[tuple[int, Lease, defer.Deferred]] = []
        """Grants of the last E seats waiting for the failover's acknowledgement:
        (revision, lease, the grant's answer)."""
        self._grantedInCut: set[str] = set()
        """Leases granted while cut off from the failover: it holds no copy of them."""
        self._unconfirmed: set[str] = set()
        """The grants whose answer waits for the failover's acknowledgement, written or not
        yet (the leases of ``_waiting`` among them), as noted in the store
        (``localstate.UNCONFIRMED``)."""
        self._gone: dict[str, tuple[int, Lease, str]] = {}
        """Leases of exact licenses removed here (``expired``, ``released``, ``withdrawn``)
        that the failover may still hold, until it acknowledges the removal: by id,
        (the revision of the removal, the lease, how it ended)."""
        self._cutSince: float | None = None
        self._linkWatch: Any = None
        self._peerLost = alerts.Lasting(takeoverAfter)
        alive = TimerService(ALIVE_EVERY, self._noteAlive)
        alive.clock = self.clock
        alive.setServiceParent(self)

    async def loadLocal(self) -> None:
        self.rememberedFailover = await self.store.getLocal(FAILOVER_ADDRESS)
        aliveAt = await self.store.getLocal(ALIVE_AT)
        stoppedAt = await self.store.getLocal(STOPPED_AT)
        if stoppedAt is not None:
            await self.store.setLocal(STOPPED_AT, None)
        self._recordOutage(aliveAt, stoppedAt)
        unconfirmed = await load_family(
            self.store, UNCONFIRMED, UNCONFIRMED_LIST, lambda ids: dict.fromkeys(ids, True)
        )
        self._unconfirmed = set(unconfirmed)
        removed = await load_family(
            self.store, REMOVED, REMOVED_LIST, lambda notes: {n[1]["id"]: n for n in notes}
        )
        for revision, record, how in removed.values():
            lease = record_from_dict("lease", record)
            self._gone[lease.id] = (revision, lease, how)

    def loadedPool(self) -> None:
        """Withdraw the grants whose answer still waited for the failover when this primary
        stopped: no client was told it holds them, and the failover may not have them."""
        leases = [self.pool.lease(lease_id) for lease_id in sorted(self._unconfirmed)]
        self._noteUnconfirmed(removed=set(self._unconfirmed))
        self._withdraw([lease for lease in leases if lease is not None])

    # Its own outages

    def _recordOutage(self, aliveAt: int | None, stoppedAt: int | None) -> None:
        """Say in Messages and the log since when this primary was down, and whether
        its last stop was clean. Nothing on a first start (nor after running as a
        failover, which clears both notes)."""
        now = self.now()
        if stoppedAt is not None:
            message = (
                f"this primary was stopped from {utc(stoppedAt)} to {utc(now)}"
                f" ({duration(now - stoppedAt)}); it stopped cleanly"
            )
            self.log.info("{message}", message=message)
            self.record("outage", "info", message, since=stoppedAt, until=now, clean=True)
        elif aliveAt is not None:
            message = (
                f"this primary was down from about {utc(aliveAt)} to {utc(now)}"
                f" ({duration(now - aliveAt)}): it did not stop cleanly (a crash, a kill"
                f" or a power cut); it last noted that it ran at {utc(aliveAt)}"
            )
            self.log.warn("{message}", message=message)
            self.record("outage", "warning", message, since=aliveAt, until=now, clean=False)

    def _noteAlive(self) -> defer.Deferred:
        d = self.store.setLocal(ALIVE_AT, self.now())
        d.addErrback(lambda f: self.log.failure("Could not note that this primary runs", f))
        return d

    def stopService(self) -> defer.Deferred:
        """Stop, noting in the data directory that the stop was clean."""
        if not self.loaded:
            return super().stopService()
        stopped = super().stopService()
        noted = self.store.setLocal(STOPPED_AT, self.now())
        noted.addErrback(
            lambda f: self.log.warn(
                "Could not note the clean stop ({why}): the next start reports a crash",
                why=f.getErrorMessage(),
            )
        )
        return stopped.addCallback(lambda ignored: noted)

    # What the primary tells about its failover

    def failoverAddress(self) -> str | None:
        """The failover paired last, remembered across restarts (for the admin's pages)."""
        if self.peer is not None:
            return self.peer.address
        return self.rememberedFailover

    def failoverForClients(self) -> str | None:
        """The paired failover, while it has heartbeated within the takeover time.

        A link that has just closed still counts until then: the failover may be
        back at once (a restart, a reset connection), and if it lost this server
        it takes over only after the same time of silence, so it is where a client
        should go if this server stops answering. After that it is either gone or
        serving on its own, no longer this server's failover: clients are told
        none. So are they after a restart, until a failover pairs again.
        """
        link = self.peer
        if link is None or self.clock.seconds() - link.last_beat > self.takeoverAfter:
            return None
        return link.address

    def peerAlive(self) -> bool:
        """Whether the paired failover's link is up and heartbeated recently."""
        link = self.peer
        return (
            link is not None
            and link.connected
            and self.clock.seconds() - link.last_beat <= self.takeoverAfter
        )

    # Cut links: never more seats than licensed (FAILOVER.md rule 16)

    def hasFailover(self) -> bool:
        """Whether this primary has a failover: one paired since it was last unpaired."""
        return self.peer is not None or self.rememberedFailover is not None

    def linkUp(self) -> bool:
        """Whether the failover's link is up: paired, and a BEAT heard within half the
        takeover time (before the failover could decide that this primary is gone).

        A failover BEATs on a new link only after its MERGE and first SYNC, so
        the limits of a cut hold until what it served is here.
        """
        link = self.peer
        return (
            link is not None
            and link.connected
            and self.clock.seconds() - link.heard <= self.takeoverAfter / 2
        )

    def cutOff(self) -> bool:
        """Whether this primary has a failover it cannot count on hearing: the exact
        policy's limits apply (after a restart too, until the failover pairs again)."""
        cut = self.hasFailover() and not self.linkUp()
        if cut and self._cutSince is None:
            self._cutSince = self.clock.seconds()
        elif not cut and self._cutSince is not None:
            self._cutSince = None
            self._grantedInCut.clear()
        return cut

    def cutLimits(self) -> list[dict[str, Any]]:
        """While cut off: each exact license with the most seats this primary serves."""
        if not self.cutOff():
            return []
        return [
            {
                "license": lic.id,
                "product": lic.product,
                "seats": lic.seats,
                "serving": lic.seats - share,
                "since": int(self._cutSince),
            }
            for lic, share in self.exactPool()
        ]

    def partitionCheck(self, lease: Lease) -> bool:
        """Under ``exact``: while cut off, serve at most N - E seats, counting the seats of
        leases the failover may hold a copy of that ended by silence (here or removed
        since its last acknowledgement); while linked, a grant of one of the last E
        seats waits for the failover's acknowledgement (and a restart withdraws it
        while it waits: ``loadedPool``).
        """
        exact = self.exactLicenses(lease)
        if not exact or not self.hasFailover():
            return False
        now = self.now()
        cut = self.cutOff()
        acknowledged = False
        for lic, share in exact:
            holders = self.pool.holdersOf(lic.id)
            if self._holdsSeat(lease, holders, now, cut):
                continue
            if cut:
                if self._heldInCut(lic, holders, now, lic.seats - share) >= lic.seats - share:
                    raise ProtocolError(
                        "no-seats",
                        f"{lic.seats - share} of the {lic.seats} seats of {lic.product} are"
                        f" in use, and {share} are held back for the failover: this server"
                        " is cut off from it (exact partition policy)",
                    )
            elif live_holders(holders, now, lic.seats - share) + 1 > lic.seats - share:
                acknowledged = True
        if cut:
            self._grantedInCut.add(lease.id)
        if acknowledged:
            # Noted before the grant is written (the store keeps the order): a restart
            # finds it unconfirmed and withdraws it.
            self._noteUnconfirmed(added={lease.id})
        return acknowledged

    def _heldInCut(self, lic: License, holders: Holders, now: int, enough: int) -> int:
        """The seats of ``lic`` held while cut off, as far as a comparison with ``enough``
        goes: those of its leases that still count (``_counts``: ended by silence, the
        failover may renew them) and of the leases removed here that the failover may
        still hold (not released). Only when the holders could reach ``enough`` are their
        leases looked at, those of the license's holders only (the pool's index)."""
        if enough <= 0:
            return 0
        gone = [
            lease
            for _, lease, how in self._gone.values()
            if how != "released" and lic.id in lease.licenses
        ]
        if len(holders) + len(gone) < enough:
            return len(holders) + len(gone)
        counted = [lease for held in holders.values() for lease in held.values()] + gone
        return seats_held(lic, counted, lambda other: self._counts(other, now))

    def _noteUnconfirmed(
        self, added: Iterable[str] = (), removed: Iterable[str] = ()
    ) -> defer.Deferred:
        """Change the grants noted as unconfirmed, one note each; fires once the store
        holds the last change (and so every one before it: the store keeps the order)."""
        last: defer.Deferred = defer.succeed(None)
        changes = [(lease_id, True) for lease_id in added if lease_id not in self._unconfirmed]
        changes += [(lease_id, None) for lease_id in removed if lease_id in self._unconfirmed]
        for lease_id, note in changes:
            if note:
                self._unconfirmed.add(lease_id)
            else:
                self._unconfirmed.discard(lease_id)
            last = self.store.setLocal(UNCONFIRMED + lease_id, note)
            last.addErrback(lambda f: self.log.failure("Could not note an unconfirmed grant", f))
        return last

    def _holdsSeat(self, lease: Lease, holders: Holders, now: int, cut: bool) -> bool:
        """Whether ``lease``'s holder holds a seat already of the license whose ``holders``
        are given (the pool's index of it): then it takes no new one.

        A grant still waiting for the failover's acknowledgement is no seat
        yet: it may be withdrawn, and a second grant of the same holder beside
        it must wait as well. While cut off, only a lease granted in the cut
        is a seat held for sure: the holder may have released one the failover
        holds too, and the failover has given that seat to someone else.
        """
        held = holders.get((lease.machine, lease.user, lease.product))
        if not held:
            return False
        waiting = self._unconfirmed  # the grants of _waiting, and those not yet written
        return any(
            other.live(now)
            and other.id not in waiting
            and (not cut or other.id in self._grantedInCut)
            for other in held.values()
        )

    def leaseEnded(self, leases: Any, how: str) -> None:
        """Remember the leases of exact licenses removed here that the failover may hold,
        until it acknowledges their removal: while cut off, a seat whose lease ended by
        silence is still counted (the failover renews every lease it holds when it
        takes over), and a merge does not bring back a lease its client released."""
        if not self.hasFailover():
            return
        revision = self.ledger.revision + 1  # the removal's, committed next
        gone = [
            lease
            for lease in leases
            if lease.id not in self._grantedInCut and self.exactLicenses(lease)
        ]
        if not gone:
            return
        for lease in gone:
            self._gone[lease.id] = (revision, lease, how)
            # Noted before the removal is written (the store keeps the order), so that
            # a restart still counts it; the note goes once the failover acknowledges.
            note = [revision, record_to_dict(lease), how]
            d = self.store.setLocal(REMOVED + lease.id, note)
            d.addErrback(lambda f: self.log.failure("Could not note a lease removed", f))

    def _counts(self, lease: Lease, now: int) -> bool:
        """Whether a lease holds its seat during a cut: live, or ended by silence while the
        failover may hold a copy and renew it (not granted during the cut)."""
        return lease.live(now) or lease.id not in self._grantedInCut

    def keepsExpired(self, lease: Lease) -> bool:
        return (
            self.hasFailover()
            and self.cutOff()
            and lease.id not in self._grantedInCut
            and bool(self.exactLicenses(lease))
        )

    def awaitAcknowledgement(self, lease: Lease, written: defer.Deferred) -> defer.Deferred:
        """Answer the grant of one of the last E seats only once the failover holds it.

        The failover acknowledges with the revision of its next BEAT, which it
        sends as soon as a sync is durable. If the link is cut first, the grant
        is taken back and refused: the failover may take over without it.
        """
        revision = self.ledger.revision

        def durable(answer: Any) -> Any:
            link = self.peer
            if link is not None and link.acknowledged >= revision:
                return answer
            waiter: defer.Deferred = defer.Deferred()
            self._waiting.append((revision, lease, waiter))
            self._watchLink()
            return waiter.addCallback(lambda ignored: answer)

        return written.addCallback(durable)

    def answerOnceHeld(self, lease: Lease, answer: Any) -> Any:
        revisions = [revision for revision, waiting, _ in self._waiting if waiting.id == lease.id]
        if not revisions:
            return answer
        waiter: defer.Deferred = defer.Deferred()
        self._waiting.append((revisions[0], lease, waiter))
        self._watchLink()
        return waiter.addCallback(lambda ignored: answer)

    def _acknowledge(self, revision: int) -> None:
        """The failover holds ``revision``: answer the grants it acknowledges, once they are
        no longer noted as unconfirmed (a restart must not withdraw a seat a client holds)."""
        for key in [key for key, gone in self._gone.items() if gone[0] <= revision]:
            del self._gone[key]
            d = self.store.setLocal(REMOVED + key, None)
            d.addErrback(lambda f: self.log.failure("Could not drop a removal's note", f))
        acknowledged = [entry for entry in self._waiting if entry[0] <= revision]
        if not acknowledged:
            return
        self._waiting = [entry for entry in self._waiting if entry[0] > revision]
        still = {lease.id for _, lease, _ in self._waiting}
        noted = self._noteUnconfirmed(removed={lease.id for _, lease, _ in acknowledged} - still)

        def answer(ignored: Any) -> None:
            for _, _, waiter in acknowledged:
                waiter.callback(None)

        noted.addCallback(answer)

    def _watchLink(self) -> None:
        """Check, a little more often than the failover could give up on this primary,
        that the link of the waiting grants is up."""
        if self._linkWatch is None or not self._linkWatch.active():
            self._linkWatch = self.clock.callLater(self.takeoverAfter / 4, self._checkLink)

    def _checkLink(self) -> None:
        self._linkWatch = None
        if not self._waiting:
            return
        if self.linkUp():
            self._watchLink()
            return
        waiting, self._waiting = self._waiting, []
        inPool = {lease.id: lease for _, lease, _ in waiting if self.pool.lease(lease.id)}
        self._withdraw(list(inPool.values()))
        self._noteUnconfirmed(removed={lease.id for _, lease, _ in waiting})
        refusal = ProtocolError(
            "no-seats",
            "the link to the failover was cut before it held this seat, one of those held"
            " back for it (exact partition policy): try again",
        )
        for _, _, waiter in waiting:
            waiter.errback(refusal)

    def watch(self) -> None:
        """Also: a failover whose link is lost for longer than the takeover time (it is
        down, or a cut keeps it away and it may be serving on its own)."""
        super().watch()
        if not self.hasFailover():
            self._peerLost.check(False, self.clock.seconds())
            return
        link = self.peer
        name = link.name if link is not None else self.rememberedFailover
        change = self._peerLost.check(
            not self.peerAlive(),
            self.clock.seconds(),
            since=link.last_beat if link is not None else None,
        )
        if change == "lasting":
            message = (
                f"the link to the failover {name} is lost for longer than the takeover time"
                f" ({self.takeoverAfter:g} s): it is down, or cut off and may be serving"
            )
            self.log.warn("{message}", message=message)
            self.record("failover-lost", "warning", message, failover=name)
            self.alerter.alert(
                "failover-lost", f"licenseserver {self.serverName}: {message}", message
            )
        elif change == "over":
            self.record("failover-back", "info", f"the failover {name} is linked again")

    def _withdraw(self, leases: list[Lease]) -> None:
        """Take back grants no client was told of (audited ``grant-withdrawn``); their seats
        still count in a cut until the failover acknowledges the removal."""
        if not leases:
            return
        self.leaseEnded(leases, "withdrawn")
        taken = self.entry("grant-withdrawn", leases=[lease.id for lease in leases])
        d = self.commit([Change.delete(lease) for lease in leases], taken)
        d.addErrback(lambda f: self.log.failure("Could not withdraw unacknowledged grants", f))

    async def unpair(self) -> None:
        """Forget the failover (an admin's decision, when it is gone for good): the exact
        policy's limits no longer apply, and clients are told of no failover."""
        self.gateAdmin()
        name = self.peer.name if self.peer is not None else self.rememberedFailover
        if self.peer is None and self.rememberedFailover is None:
            return
        # Its link's next BEAT or SYNC is refused (not-authorized) and closes it.
        self.peer = None
        self.rememberedFailover = None
        await self.store.setLocal(FAILOVER_ADDRESS, None)
        self.audit("failover-unpaired", name=name)
        self.record(
            "failover-unpaired",
            "warning",
            f"the failover {name} was unpaired: the exact partition limits no longer apply",
        )
        self._acknowledge(1 << 62)

    def refusedPeer(self) -> dict[str, Any] | None:
        """The last failover refused (reason, message, from where, how often), until one pairs."""
        refusal = self.refusal
        if refusal is None:
            return None
        return {
            "name": refusal.name,
            "seen_from": refusal.seen_from,
            "reason": refusal.reason,
            "message": refusal.message,
            "first": refusal.first,
            "last": refusal.last,
            "count": refusal.count,
        }

    def peerStatus(self) -> dict[str, Any] | None:
        link = self.peer
        if link is None:
            return None
        lag = max(0, self.committedRevision - link.revision)
        return {
            "name": link.name,
            "address": link.address,
            "seen_from": link.seen_from,
            "version": link.version,
            "connected": link.connected,
            "alive": self.peerAlive(),
            "paired": link.paired,
            "last_beat": link.last_beat,
            "last_sync": link.last_sync,
            "revision": link.revision,
            "lag": lag,
            "in_sync": self.peerAlive() and lag == 0,
        }

    def sessionClosed(self, session: Session) -> None:
        if self.peer is not None and self.peer.session is session:
            self.peer.connected = False
            self.log.warn("The link of failover {name} closed", name=self.peer.name)

    # The peer verbs

    def peerHandlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "PEER": self.peerPeer,
            "AUTH": self.peerAuth,
            "BEAT": self.peerBeat,
            "SYNC": self.peerSync,
            "MERGE": self.peerMerge,
            "USAGE": self.peerUsage,
        }

    async def peerPeer(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """A failover introduces itself: check its version and edition, send a challenge."""
        name = text_arg(args, "name", required=True)
        version = text_arg(args, "version", required=True)
        edition = text_arg(args, "edition", required=True)
        listen = text_arg(args, "listen", required=True)
        if parse_host_port(listen, default_port=0) is None:
            # Port 0 is out of range: a listen without a port is refused, not defaulted.
            raise ProtocolError("bad-request", "listen must be HOST:PORT")
        if (version, edition) != (__version__, EDITION):
            fix = (
                f"upgrade the failover to {__version__}"
                if version != __version__
                else f"install the {EDITION} edition on the failover"
            )
            message = (
                f"failover {name} runs {version} ({edition}); this primary runs "
                f"{__version__} ({EDITION}): {fix}"
            )
            self._noteRefusal(session, name, "version-mismatch", message)
            raise ProtocolError("version-mismatch", message, version=__version__, edition=EDITION)
        session.peer_name = name
        session.peer_listen = listen
        session.challenge = secrets.token_hex(16)
        return {
            "server": self.serverName,
            "version": __version__,
            "edition": EDITION,
            "challenge": session.challenge,
        }

    async def peerAuth(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """The failover proves the secret; pair it unless another one is paired."""
        challenge, session.challenge = session.challenge, ""
        proof = args.get("proof", "")
        name = session.peer_name
        host = session.peer.rsplit(":", 1)[0]
        if not challenge or not self.peerSecret:
            self._refuse(session, name, "AUTH without a PEER before it")
        failures, notBefore = self._penalties.get(host, (0, 0.0))
        if self.clock.seconds() < notBefore:
            self._refuse(session, name, "a wrong pairing proof came from this address lately")
        if not proof_matches(self.peerSecret, challenge, name, proof):
            wait = min(PENALTY_CAP, 2.0**failures)
            self._penalties[host] = (failures + 1, self.clock.seconds() + wait)
            self._refuse(session, name, "wrong pairing proof (check the peer secret file)")
        self._penalties.pop(host, None)
        if self.peer is not None and self.peer.name != name and self.peerAlive():
            message = f"another failover ({self.peer.name}) is paired"
            self._noteRefusal(session, name, "already-paired", message)
            raise ProtocolError("already-paired", message, name=self.peer.name)
        now = self.now()
        self.refusal = None
        self.peer = PeerLink(
            name=name,
            version=__version__,
            address=session.peer_listen,
            seen_from=session.peer,
            session=session,
            paired=now,
            last_beat=now,
        )
        if self.rememberedFailover != session.peer_listen:
            self.rememberedFailover = session.peer_listen
            d = self.store.setLocal(FAILOVER_ADDRESS, session.peer_listen)
            d.addErrback(lambda f: self.log.failure("Could not store the failover address", f))
        self.log.info("Failover {name} paired from {peer}", name=name, peer=session.peer)
        self.record("failover-paired", "info", f"failover {name} ({session.peer_listen}) paired")
        self.audit("failover-paired", name=name, address=session.peer_listen, peer=session.peer)
        self._recordServed(name, args)
        return {"revision": self.committedRevision}

    def _recordServed(self, name: str, args: dict[str, str]) -> None:
        """Record what a failover that paired reports of the time it served, if anything.

        ``served_from`` and ``served_until`` (Unix times) and ``served_grants`` and
        ``served_takeovers`` (counts) come with its AUTH; a report that does not read
        is logged and left out, and pairs all the same.
        """
        if "served_from" not in args:
            return
        values = [parse_integer(args.get(key, "")) for key in SERVED_ARGS]
        if None in values or values[0] > values[1]:
            self.log.warn("Failover {name} sent a report that does not read", name=name)
            return
        since, until, grants, takeovers = values
        times = "" if takeovers == 1 else f" in {takeovers} takeovers"
        message = (
            f"the failover {name} served from {utc(since)} to {utc(until)}"
            f" ({grants} grant{'' if grants == 1 else 's'}{times})"
        )
        self.log.warn("{message}", message=message)
        self.record(
            "failover-served",
            "warning",
            message,
            name=name,
            since=since,
            until=until,
            grants=grants,
            takeovers=takeovers,
        )
        self.audit(
            "failover-served",
            name=name,
            since=since,
            until=until,
            grants=grants,
            takeovers=takeovers,
        )

    def _refuse(self, session: Session, name: str, why: str) -> None:
        self._noteRefusal(session, name, "peer-refused", why)
        raise ProtocolError("not-authorized", "not authorized", closes=True)

    def _noteRefusal(self, session: Session, name: str, reason: str, message: str) -> None:
        """Show a refused failover on the status page; log it once per ``REPORT_EVERY``."""
        now = self.now()
        known = self.refusal
        if known is not None and (known.seen_from.rsplit(":", 1)[0], known.reason) == (
            session.peer.rsplit(":", 1)[0],
            reason,
        ):
            known.last, known.count, known.message = now, known.count + 1, message
        else:
            known = self.refusal = PeerRefusal(name, session.peer, reason, message, now, now)
        if now - known.reported < REPORT_EVERY and known.count > 1:
            return
        known.reported = now
        text = f"refused failover {name or '?'} from {session.peer}: {message}"
        self.log.warn("{text}", text=text)
        self.record(reason, "error" if reason == "version-mismatch" else "warning", text)
        self.audit(reason, peer=session.peer, name=name, why=message)

    def _link(self, session: Session) -> PeerLink:
        link = self.peer
        if link is None or link.session is not session:
            raise ProtocolError("not-authorized", "pair first (PEER, AUTH)", closes=True)
        return link

    async def peerBeat(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """The failover's heartbeat: it says what it holds, the primary what it has."""
        link = self._link(session)
        link.last_beat = self.now()
        if args.get("diverged") != "1":
            # A failover that served on its own has not handed everything over yet.
            link.heard = self.clock.seconds()
            # A cut ends here, however short: the leases granted in it are the
            # failover's to renew too if the link is cut again.
            self.cutOff()
        link.revision = integer_arg(args, "revision", link.revision, 0, MAX_INTEGER)
        if link.revision > link.acknowledged:
            link.acknowledged = link.revision
            self._acknowledge(link.revision)
        return {"revision": self.committedRevision, "time": link.last_beat}

    async def peerMerge(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """A lease the failover granted, renewed or ended while it served (FAILOVER.md rule 14).

        ``record=<lease as JSON>`` puts the failover's lease, keeping the later
        end where this primary holds the same lease; ``lease=<id> ended=released``
        removes it, ``ended=expired expires=<t>`` removes it unless this primary
        has seen it renewed past ``t`` meanwhile. Durable before the answer;
        ``merged`` says what was done (``put``, ``removed`` or ``kept``).
        """
        link = self._link(session)
        link.last_beat = self.now()
        if "record" in args:
            lease = merged_lease(args["record"])
            if any(self.pool.license(lid) is None for lid in lease.licenses):
                return {"merged": "kept", "why": "license-gone"}
            gone = self._gone.get(lease.id)
            if gone is not None and gone[2] == "released":
                # Its client released it here during the cut: the failover's copy
                # (renewed when it took over) holds no seat anybody uses.
                return {"merged": "kept", "why": "released"}
            now = self.now()
            if not lease.live(now):
                # It ended at the failover: its holder counts on it no more.
                return {"merged": "kept", "why": "ended"}
            known = self.pool.lease(lease.id)
            if known is not None and known.revoked:
                # The admin ended it here: that stands (the failover's copy is renewed).
                return {"merged": "kept", "why": "revoked"}
            if known is not None and known.expires >= lease.expires:
                return {"merged": "kept"}
            changes = []
            client = self.pool.clientByMachine(lease.machine)
            if client is None:
                # A machine that registered only with the failover: the failover's
                # client id may name another machine here, so it gets one of this pool.
                host = text_arg(args, "host", required=False, default=lease.machine)
                client = Client(self._newClientId(), lease.machine, host, now, now)
                changes.append(Change.put(client))
            lease = dataclasses.replace(lease, client=client.id)
            earlier = (
                self.pool.leaseByRequest(lease.machine, lease.request) if lease.request else None
            )
            if earlier is not None and earlier.id != lease.id:
                # The client asked the failover again under the same key: a key names
                # one lease at one server, and the failover's takes its place. The
                # client may have gone on with this one (a retry here gives it back), so
                # the seat stays counted until the later of their ends; the client's
                # next heartbeat of it is unknown-lease, and its retry gets the merged one.
                changes.append(Change.delete(earlier))
                if earlier.live(now) and earlier.expires > lease.expires:
                    lease = dataclasses.replace(lease, expires=earlier.expires)
            changes.append(Change.put(lease))
            entry = self.entry("lease-merged", lease=lease.id, failover=link.name, op="put")
            await self.commit(changes, entry)
            self.noteOverAllocation(lease.licenses, link.name)
            return {"merged": "put"}
        lease_id = text_arg(args, "lease", required=True)
        ended = args.get("ended")
        if ended not in ("released", "expired"):
            raise ProtocolError("bad-request", "ended must be released or expired")
        expires = integer_arg(args, "expires", 0, 0, MAX_INTEGER)
        known = self.pool.lease(lease_id)
        if known is None or (ended == "expired" and known.expires > expires):
            return {"merged": "kept"}
        entry = self.entry("lease-merged", lease=lease_id, failover=link.name, op=ended)
        await self.commit([Change.delete(known)], entry)
        return {"merged": "removed"}

    async def peerUsage(self, session: Session, args: dict[str, str]) -> bytes:
        """The usage history written since ``since`` (a minute's start), for the failover:
        minute rows, refusals and the seat time of the days they touch, one JSON line each;
        ``until`` is where its next ``USAGE`` starts."""
        self._link(session)
        since = integer_arg(args, "since", 0, 0, MAX_INTEGER)
        points, denials, held, until = await self.store.usageSince(since)
        lines = usage.encode_rows(points, denials, held)
        return b"".join([format_ok({"until": until, "lines": len(lines)}), *lines])

    async def peerSync(self, session: Session, args: dict[str, str]) -> bytes:
        """Every change after ``since``, or a snapshot when that is 0 or too old."""
        link = self._link(session)
        since = integer_arg(args, "since", 0, 0, MAX_INTEGER)
        changes = await self.store.changesSince(since) if since else None
        if changes is None:
            snapshot = await self.store.load()
            lines = await self.runInThread(sync.encode_snapshot, snapshot)
            mode, revision = sync.SNAPSHOT, snapshot.revision
        else:
            lines = sync.encode_changes(changes)
            mode, revision = sync.CHANGES, changes[-1][0] if changes else since
        link.last_sync = self.now()
        link.revision = revision
        header = format_ok({"mode": mode, "revision": revision, "lines": len(lines)})
        return b"".join([header, *lines])
