"""The failover role: a mirror of the primary that serves only while the primary is silent.

In standby the failover keeps a link to the primary's licensing port
(``protocols.peer``), pairs with ``PEER``/``AUTH``, heartbeats with ``BEAT``
every ``heartbeat`` seconds and applies what ``SYNC`` sends to its own
store, so what it holds survives a restart. Clients get ``503 standby``.

Only silence counts: every line from the primary re-arms a timer of
``takeoverAfter`` seconds. When it runs out, a failover that has synced at
least once, and whose primary last ran this very version, takes over: it
serves from the synced pool, keeping the synced leases valid. The first line
from the primary after that hands control back at once: the failover stops
serving, puts back the pool as it was at the takeover (everything done while
active is discarded) and syncs on from there. When it pairs again, its AUTH
reports to the primary when it served and how many seats it granted.
"""

from __future__ import annotations

import json
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.application.internet import TimerService
from twisted.internet import defer, error

from licenseserver import alerts, usage
from licenseserver._version import EDITION, __version__
from licenseserver.addresses import display_address
from licenseserver.allocation import seats_held
from licenseserver.ledger import latest_end
from licenseserver.localstate import (
    ALIVE_AT,
    DIVERGED,
    ENDED,
    ENDED_WHILE_SERVING,
    LAST_SYNC,
    PRIMARY_EDITION,
    PRIMARY_NAME,
    PRIMARY_VERSION,
    SERVED,
    STOPPED_AT,
    TAKEOVER_HELD,
    USAGE_SYNCED,
    load_family,
)
from licenseserver.model import Lease, Snapshot, record_to_dict
from licenseserver.passwords import peer_proof
from licenseserver.protocols import sync
from licenseserver.protocols.peer import Reply, peerService
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.base import AdminError, ServingRole
from licenseserver.roles.primary import utc
from licenseserver.roles.states import StateMachine
from licenseserver.versions import Version, VersionError

# The failover's states (``FailoverRole.machine``): see TRANSITIONS.
STANDBY = "standby"
"""Mirroring the primary, or trying to reach it; takes over when it goes silent."""
ACTIVE = "active"
"""Serving licenses in the silent primary's stead."""
MERGING = "merging"
"""The primary answers again: the leases served here go to it (FAILOVER.md rule 14) while
their clients may still renew and release them here; no new seat is granted."""
HANDING_BACK = "handing-back"
"""The primary has the leases: serving nothing, putting back the pool of the takeover."""
REFUSED = "refused"
"""The primary answers but refuses the link (wrong secret, TLS, already paired): it is
alive, so no takeover while it answers; asked again every heartbeat."""
STOPPED = "stopped"
"""The primary runs another version or edition: the failover service stops (no serving,
no sync) until both match (FAILOVER.md rule 12)."""

TRANSITIONS = {
    (STANDBY, "silent"): ACTIVE,
    (REFUSED, "silent"): ACTIVE,
    (ACTIVE, "heard"): MERGING,
    (MERGING, "merged"): HANDING_BACK,
    (MERGING, "silent"): ACTIVE,
    (MERGING, "refused"): REFUSED,
    (MERGING, "mismatch"): STOPPED,
    (HANDING_BACK, "restored"): STANDBY,
    (STANDBY, "refused"): REFUSED,
    (HANDING_BACK, "refused"): REFUSED,
    (STOPPED, "refused"): REFUSED,
    (STANDBY, "mismatch"): STOPPED,
    (REFUSED, "mismatch"): STOPPED,
    (HANDING_BACK, "mismatch"): STOPPED,
    (REFUSED, "paired"): STANDBY,
    (STOPPED, "paired"): STANDBY,
}
"""Every change of the failover's state, by event:

- ``silent``: the primary said nothing for ``takeoverAfter`` (and the failover
  may take over: it has synced, and the primary last ran this version);
- ``heard``: the primary said something while the failover served;
- ``merged``: the primary holds the leases granted, renewed and ended here, durably;
- ``restored``: the pool of the takeover is back, in memory and in the store;
- ``refused``, ``mismatch``: the primary refused the link, for another
  version or edition (``mismatch``) or another reason;
- ``paired``: the primary accepted the link.
"""

LINK_WORDS = {REFUSED: "refused", STOPPED: "version-mismatch"}
"""What ``peerStatus()["link"]`` says in these states; else ``paired`` or ``connecting``."""

PROOF_REFUSED = (
    "the primary refused our pairing proof: check that both servers use the same peer secret file"
)
"""The problem a failover shows when the primary refuses its AUTH (a wrong secret)."""


class FailoverRole(ServingRole):
    """A failover of the primary at ``primaryAddress``, reached through ``primaryEndpoint``."""

    roleName = "failover"

    def __init__(
        self,
        store: Any,
        *,
        primaryEndpoint: Any,
        primaryAddress: str,
        heartbeat: float,
        takeoverAfter: float,
        peerSecret: str,
        **kw: Any,
    ):
        super().__init__(store, **kw)
        self.configuredPrimary = primaryAddress
        self.primary = display_address(primaryAddress)
        """The primary's ``HOST:PORT``, however it was configured."""
        self.beatInterval = heartbeat
        self.takeoverAfter = takeoverAfter
        self.peerSecret = peerSecret
        self.machine = StateMachine(
            self, STANDBY, TRANSITIONS, guards={"silent": self._mayTakeOver}
        )
        self.stateSince = int(self.clock.seconds())
        self.link: Any = None
        self.paired = False
        """Whether the link to the primary is up and authenticated."""
        self._primaryLost = alerts.Lasting(takeoverAfter)
        self.problem: str | None = None
        self._reported: tuple[str, str] | None = None
        self._unreachableSince: float | None = None
        """Since when connecting to the primary fails; None while it can be reached."""
        self.primaryName: str | None = None
        self.primaryVersion: str | None = None
        self.primaryEdition: str | None = None
        self.lastSync: int | None = None
        self.lastHeard: float | None = None
        self.primaryRevision: int | None = None
        """The primary's revision as its last answer gave it."""
        self.takeovers = 0
        self._unmerged = False
        """Whether the leases served here have not gone to the primary yet (merging)."""
        self._ended: dict[str, tuple[str, int]] = {}
        """Leases that ended while serving: id to (``released`` or ``expired``, last end)."""
        self._diverged: int | None = None
        self._takeover: dict[str, Any] | None = None
        """Since the first takeover until handback: ``at`` (its time) and ``live`` (the
        ids of the synced leases live then), which the exact policy counts from."""
        self._beforeTakeover: Snapshot | None = None
        self._restoring: defer.Deferred = defer.succeed(None)
        self._syncing = defer.DeferredLock()
        self._heldBeforeSync = 0
        """The pool's revision when the running sync began: durable while it runs."""
        self._syncedLink: Any = None
        """The last link a sync completed on."""
        self._silence: Any = None
        self._served: dict[str, Any] | None = None
        self._usageSynced: int | None = None
        """Where the next sync of the primary's usage history starts (``USAGE``)."""
        self._nextUsageSync = 0.0
        peerService(primaryEndpoint, self, self.clock, heartbeat).setServiceParent(self)
        beats = TimerService(heartbeat, self._beatSafely)
        beats.clock = self.clock
        beats.setServiceParent(self)

    # Life cycle

    async def loadLocal(self) -> None:
        self.lastSync = await self.store.getLocal(LAST_SYNC)
        self._usageSynced = await self.store.getLocal(USAGE_SYNCED)
        self.primaryName = await self.store.getLocal(PRIMARY_NAME)
        self.primaryVersion = await self.store.getLocal(PRIMARY_VERSION)
        self.primaryEdition = await self.store.getLocal(PRIMARY_EDITION)
        self._diverged = await self.store.getLocal(DIVERGED)
        held = await self.store.getLocal(TAKEOVER_HELD)
        if self._diverged is not None and held is not None:
            self._takeover = {"at": held["at"], "live": frozenset(held["live"])}
        ended = await load_family(self.store, ENDED, ENDED_WHILE_SERVING, dict)
        if self._diverged is not None:
            self._ended = {lease_id: (how, end) for lease_id, (how, end) in ended.items()}
        elif ended:  # left by a stop while the takeover's notes were being cleared
            await self.store.setLocal(ENDED, None)
        self._served = await self.store.getLocal(SERVED)
        if self._served is not None and self._served["until"] is None:
            # It stopped while serving without noting when: it served until this start
            # at the latest (its grants since the takeover were not counted).
            self._noteServed(until=self.now())
        # The notes of a primary's last run are not this server's: as a primary again
        # later, it was not down meanwhile.
        for name in (ALIVE_AT, STOPPED_AT):
            await self.store.setLocal(name, None)

    def recordsUsage(self) -> bool:
        """Only while serving: in standby the primary keeps the history."""
        return self.machine.state in (ACTIVE, MERGING)

    def servedLoadedPool(self) -> bool:
        """Only a failover restarted after serving: a mirror holds what the primary wrote."""
        return self._diverged is not None

    def _loaded(self, snapshot: Any) -> None:
        super()._loaded(snapshot)
        self._armSilence()

    def stopService(self) -> defer.Deferred:
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        if self.active:
            self._noteServed(until=self.now())
        return super().stopService()

    # What the failover tells

    @property
    def state(self) -> str:
        """``active`` while serving (merging too: its leases are still served here), else
        ``standby`` (the protocol's and the API's word)."""
        return "active" if self.machine.state in (ACTIVE, MERGING) else "standby"

    @property
    def active(self) -> bool:
        return self.machine.state == ACTIVE

    @property
    def linkState(self) -> str:
        """The link as ``peerStatus`` shows it: paired, connecting, refused, version-mismatch."""
        words = LINK_WORDS.get(self.machine.state)
        if words:
            return words
        return "paired" if self.paired else "connecting"

    def primaryAddress(self) -> str | None:
        return self.primary

    def primaryConfigured(self) -> str | None:
        return self.configuredPrimary

    def peerStatus(self) -> dict[str, Any]:
        return {
            "name": self.primaryName,
            "address": self.primary,
            "version": self.primaryVersion,
            "link": self.linkState,
            "problem": self.problem,
            "last_sync": self.lastSync,
            "last_heard": None if self.lastHeard is None else int(self.lastHeard),
            "state_since": self.stateSince,
            "takeovers": self.takeovers,
            "revision": self.pool.revision,
            "lag": (
                None
                if self.primaryRevision is None
                else max(0, self.primaryRevision - self.pool.revision)
            ),
        }

    # Gates

    def gate(self) -> None:
        """Clients are served while active, and while merging: a client renewing or
        releasing its lease in the middle of a handback is answered, never refused
        (FAILOVER.md rule 14)."""
        if self.machine.state not in (ACTIVE, MERGING):
            self._standby()

    def gateGrant(self) -> None:
        """New seats only while active: a merging failover's leases are going to the primary."""
        if not self.active:
            self._standby()

    def _standby(self) -> None:
        raise ProtocolError(
            "standby", "this failover is in standby: use the primary", primary=self.primary
        )

    def gateAdmin(self) -> None:
        if not self.active:
            raise AdminError(
                409, f"standby failover: make this change on the primary {self.primary}"
            )

    async def unpair(self) -> None:
        """Only a primary has a failover to unpair."""
        raise AdminError(409, f"this is a failover: unpair it on its primary {self.primary}")

    def checkClient(self, product: str, version: str) -> None:
        if not self.failoverCapable(product, version):
            table = self.setting("failover_minimums")
            minimum = table.get(product, table.get("*"))
            self.audit("denial", reason="client-too-old", product=product, version=version)
            raise ProtocolError(
                "client-too-old",
                f"a failover serves {product} from version {minimum} on",
                minimum=minimum,
            )

    def borrowAllowed(self) -> bool:
        return False

    async def reap(self) -> int:
        """Remove expired leases, while active only: in standby the primary's reaper does."""
        if not self.active:
            return 0
        return await super().reap()

    def leaseEnded(self, leases: Any, how: str) -> None:
        """Remember how leases ended while serving, for the merge at handback."""
        if self.machine.state in (ACTIVE, MERGING):
            for lease in leases:
                self._ended[lease.id] = (how, lease.expires)
                # Noted before the removal is written: a restart still merges it as it
                # ended.
                d = self.store.setLocal(ENDED + lease.id, [how, lease.expires])
                d.addErrback(lambda f: self.log.failure("Could not note a lease ended", f))

    # The exact partition policy (FAILOVER.md rule 17)

    def partitionCheck(self, lease: Lease) -> bool:
        """Under ``exact``: grant a new seat only while this failover's own grants (live, or
        ended by silence) are fewer than ``min(E, N - S)``, where S counts the synced leases
        that were live at the takeover and were not RELEASEd here.

        The primary, if it is alive on the far side of a cut, serves at most
        ``N - E`` seats and still counts every lease this failover holds a copy
        of, so the two never hand out more than N seats between them.
        """
        takeover = self._takeover
        if takeover is None:
            return False
        now = self.now()
        live = takeover["live"]
        for lic, share in self.exactLicenses(lease):
            leases = self.pool.leasesFor(lic.product)
            holder = (lease.machine, lease.user, lease.product)
            if any(
                (other.machine, other.user, other.product) == holder
                and other.live(now)
                and self._ownGrant(other, takeover)
                for other in leases
                if lic.id in other.licenses
            ):
                # Its holder holds one of this failover's own seats. A synced lease
                # does not count: the primary may have seen its client release it.
                continue
            synced = seats_held(lic, leases, lambda other: other.id in live)
            own = seats_held(lic, leases, lambda other: self._ownGrant(other, takeover))
            limit = max(0, min(share, lic.seats - synced))
            if own >= limit:
                raise ProtocolError(
                    "no-seats",
                    f"this failover grants at most {limit} seats of {lic.product} while the"
                    f" primary is away, and all are taken (exact partition policy)",
                )
        return False

    def cutLimits(self) -> list[dict[str, Any]]:
        """While serving: each exact license with the seats served at most, the synced
        leases held plus the new seats this failover may grant."""
        takeover = self._takeover
        if takeover is None or self.machine.state not in (ACTIVE, MERGING):
            return []
        out = []
        for lic, share in self.exactPool():
            leases = self.pool.leasesFor(lic.product)
            synced = seats_held(lic, leases, lambda other: other.id in takeover["live"])
            out.append(
                {
                    "license": lic.id,
                    "product": lic.product,
                    "seats": lic.seats,
                    "serving": synced + max(0, min(share, lic.seats - synced)),
                    "since": int(takeover["at"]),
                }
            )
        return out

    @staticmethod
    def _ownGrant(lease: Lease, takeover: dict[str, Any]) -> bool:
        """Whether ``lease`` was granted here since the takeover."""
        return lease.id not in takeover["live"] and lease.granted >= takeover["at"]

    def keepsExpired(self, lease: Lease) -> bool:
        """While serving, a lease of an exact license that the limits count stays when it
        ends by silence: its seat is not free again until the primary has it."""
        takeover = self._takeover
        return (
            takeover is not None
            and self.machine.state in (ACTIVE, MERGING)
            and (lease.id in takeover["live"] or self._ownGrant(lease, takeover))
            and bool(self.exactLicenses(lease))
        )

    def _holdTakeover(self) -> None:
        """Note the takeover's time and the synced leases live at it, durably."""
        live = sorted(
            lease.id
            for lease in self.pool.all("lease")
            if latest_end(lease) > (self.lastSync or 0) and not lease.revoked
        )
        at = self.now()
        self._takeover = {"at": at, "live": frozenset(live)}
        d = self.store.setLocal(TAKEOVER_HELD, {"at": at, "live": live})
        d.addErrback(lambda f: self.log.failure("Could not note the leases held at takeover", f))

    async def _forgetTakeover(self) -> None:
        self._diverged = None
        self._takeover = None
        self._ended.clear()
        # Set in one turn, so in one transaction: a stop cannot keep some of them.
        names = (DIVERGED, TAKEOVER_HELD, ENDED)
        await defer.gatherResults([self.store.setLocal(name, None) for name in names])

    async def _merge(self, link: Any) -> None:
        """Hand the primary every lease granted, renewed or ended here (FAILOVER.md rule 14).

        One ``MERGE`` per lease touched since the takeover, as the pool has it
        now: its record, or how it ended. Once every one is answered, the
        primary holds them durably and the failover hands back.
        """
        replies = await defer.gatherResults(
            [link.request("MERGE", args) for args in await self._journal()],
            consumeErrors=True,
        )
        for reply in replies:
            if not reply.ok:
                self.log.warn("The primary did not take a lease: {r}", r=reply.response)
        merged = len(replies)
        self.log.info("Handed {n} leases to the primary {primary}", n=merged, primary=self.primary)
        self.audit("leases-merged", primary=self.primary, leases=merged)
        self._ended.clear()
        self.machine.fire("merged")

    async def _journal(self) -> list[dict[str, Any]]:
        """The ``MERGE`` arguments of every lease touched since the takeover.

        The leases are those the failover's own change log names after the
        revision it held at the takeover (durable, so a restart while active
        loses none of them), each as the pool holds it now.
        """
        changes = None
        if self._diverged is not None:
            changes = await self.store.changesSince(self._diverged)
        if changes is not None:
            touched = {c.key[0] for _, group in changes for c in group if c.kind == "lease"}
        else:  # the log no longer reaches back: every lease known here
            touched = {lease.id for lease in self.pool.all("lease")} | set(self._ended)
        journal: list[dict[str, Any]] = []
        for lease_id in sorted(touched):
            lease = self.pool.lease(lease_id)
            if lease is not None:
                record = json.dumps(record_to_dict(lease), separators=(",", ":"))
                client = self.pool.clientByMachine(lease.machine)
                host = {"host": client.host} if client is not None else {}
                journal.append({"record": record, **host})
            else:
                how, expires = self._ended.get(lease_id, ("expired", 0))
                journal.append({"lease": lease_id, "ended": how, "expires": expires})
        return journal

    # Silence and takeover

    def heard(self) -> None:
        """The primary said something: it is alive."""
        self.lastHeard = self.clock.seconds()
        self._armSilence()
        self.machine.fire("heard")

    def _armSilence(self) -> None:
        if not self.running:
            return
        if self._silence is not None and self._silence.active():
            self._silence.reset(self.takeoverAfter)
        else:
            self._silence = self.clock.callLater(self.takeoverAfter, self._silenceElapsed)

    def _silenceElapsed(self) -> None:
        if self.active or self.machine.fire("silent"):
            return
        why = self._cannotTakeOver() or f"the failover service is {self.machine.state}"
        self.log.warn(
            "The primary is silent, but this failover does not take over: {why}", why=why
        )
        self.problem = why

    def _mayTakeOver(self) -> bool:
        return self._cannotTakeOver() is None

    def _cannotTakeOver(self) -> str | None:
        if self.lastSync is None:
            return "it has never completed a sync with the primary"
        if self.primaryVersion not in (None, __version__):
            return f"the primary last ran version {self.primaryVersion}, this is {__version__}"
        if self.primaryEdition not in (None, EDITION):
            return (
                f"the primary last ran the {self.primaryEdition} edition, "
                f"this failover the {EDITION} edition"
            )
        return None

    def enterActive(self) -> None:
        """Take over: serve the synced pool; keep what it was, to put back at handback."""
        self._unmerged = False
        if self._diverged is None:
            self._beforeTakeover = self.pool.snapshot()
            self._diverged = self.pool.revision
            d = self.store.setLocal(DIVERGED, self._diverged)
            d.addErrback(lambda f: self.log.failure("Could not mark the takeover", f))
        if self._takeover is None:
            self._holdTakeover()
        self.stateSince = self.now()
        self.takeovers += 1
        served = self._served or {"from": self.stateSince, "grants": 0, "takeovers": 0}
        self._served = {**served, "takeovers": served["takeovers"] + 1}
        self._noteServed(until=None)
        message = (
            f"took over: the primary {self.primary} was silent for {self.takeoverAfter:g} s;"
            " serving licenses until it returns"
        )
        self.log.warn("Failover {message}", message=message)
        self.record("takeover", "warning", message, primary=self.primary)
        self.alerter.alert("takeover", f"licenseserver {self.serverName}: {message}", message)
        self.audit("takeover", primary=self.primary, revision=self.pool.revision)
        self._dropLink()
        self._renewSyncedLeases()

    def _dropLink(self) -> None:
        """A link silent for the takeover time is dead, whatever TCP thinks: drop it, so
        that the primary, when it answers again, does so on a new link, which pairs
        and hands it the leases served here first (``_pair``)."""
        link, self.link = self.link, None
        self.paired = False
        if link is not None:
            link.transport.abortConnection()

    def _renewSyncedLeases(self) -> None:
        """Renew every lease that may have been live at the last sync, as a HEARTBEAT would.

        Leases live on the primary at the last sync stay valid here (no client
        loses a running license because the primary died). The end a synced
        lease carries is the one the primary wrote, which may be less than
        half a lease time ahead (renewals are written only then), so a lease
        counts as live at the sync until the latest end its client may have
        been told (``ledger.latest_end``), and finding
        the primary silent took ``takeoverAfter``: without this, a lease
        heartbeated just before the primary died could end before its client
        reaches this server. Borrowed leases keep their end.
        """
        synced = [
            lease
            for lease in self.pool.all("lease")
            if not lease.borrowed and not lease.revoked and latest_end(lease) > self.lastSync
        ]
        _, written = self._renewAll(synced)
        if written is not None:
            written.addErrback(lambda f: self.log.failure("Could not renew the synced leases", f))

    def enterMerging(self) -> None:
        """The primary answers again: hand it the leases once the link is paired (``_pair``).

        The time served ends here, so the AUTH of that link reports it.
        """
        self._unmerged = True
        self.stateSince = self.now()
        self._noteServed(until=self.now())
        self.log.info(
            "The primary {primary} answers again: handing it the leases served here",
            primary=self.primary,
        )

    def enterRefused(self) -> None:
        self._leaveUnmerged()

    def enterStopped(self) -> None:
        self._leaveUnmerged()

    def _leaveUnmerged(self) -> None:
        """The primary answered but refused the link before it took the leases: the
        failover cannot serve beside a live primary, so it hands back without them."""
        if self._unmerged:
            self.log.warn(
                "The primary {primary} refused the link before it took the leases served"
                " here: their clients must check out again at the primary",
                primary=self.primary,
            )
            self.enterHandingBack()

    def enterHandingBack(self) -> None:
        """Stop serving at once and put the pool back as it was at the takeover."""
        self._unmerged = False
        self.stateSince = self.now()
        message = f"handed back: the primary {self.primary} answers again; back in standby"
        self.log.info("Failover {message}", message=message)
        self.record("handback", "info", message, primary=self.primary)
        self.alerter.alert("handback", f"licenseserver {self.serverName}: {message}", message)
        self.audit("handback", primary=self.primary)
        self._noteServed(until=self.now())
        saved, self._beforeTakeover = self._beforeTakeover, None
        if saved is None:
            # Without the saved pool (a restart while active), the next sync is a snapshot.
            self.machine.fire("restored")
            return
        self._restoring = defer.ensureDeferred(self._restore(saved))
        self._restoring.addErrback(self._restoreFailed)

    def _granted(self, lease: Any, command: str) -> Any:
        if self.active and self._served is not None:
            self._served["grants"] += 1
        return super()._granted(lease, command)

    def _noteServed(self, *, until: int | None) -> None:
        """Keep the time served, with its end (None: serving), until the primary has it."""
        if self._served is None:
            return
        self._served["until"] = until
        d = self.store.setLocal(SERVED, dict(self._served))
        d.addErrback(lambda f: self.log.failure("Could not note the time served", f))

    def _servedReport(self) -> dict[str, Any]:
        """The AUTH arguments that report a finished time serving; {} when there is none."""
        served = self._served
        if served is None or served["until"] is None:
            return {}
        return {
            "served_from": served["from"],
            "served_until": served["until"],
            "served_grants": served["grants"],
            "served_takeovers": served["takeovers"],
        }

    async def _restore(self, saved: Snapshot) -> None:
        """Put back the pool saved at takeover: at once in memory, then in the store."""
        await self.ledger.restore(saved)
        await self._forgetTakeover()
        self.machine.fire("restored")

    def _restoreFailed(self, failure: Any) -> None:
        """The store did not take the saved pool: the pool in memory is back all the same,
        so stand by; the next sync replaces everything (the data is still marked diverged)."""
        self.log.failure("Could not store the pool put back at handback", failure)
        self.machine.fire("restored")

    # The link

    def refused(self) -> bool:
        """Whether the primary refused the last link (it is asked again a heartbeat later)."""
        return self.machine.state in (REFUSED, STOPPED)

    def watch(self) -> None:
        """Also: a link to the primary lost for longer than the takeover time while this
        failover does not serve (a refused or stopped link, a primary that answers but
        cannot be paired with); one that took over has sent its ``takeover`` alert."""
        super().watch()
        troubled = not self.paired and self.machine.state in (STANDBY, REFUSED, STOPPED)
        change = self._primaryLost.check(troubled, self.clock.seconds())
        if change == "lasting":
            why = f": {self.problem}" if self.problem else ""
            message = (
                f"the link to the primary {self.primary} is lost for longer than the takeover"
                f" time ({self.takeoverAfter:g} s){why}; this failover holds no fresh copy"
            )
            self.log.warn("{message}", message=message)
            self.alerter.alert(
                "primary-lost", f"licenseserver {self.serverName}: {message}", message
            )

    def connectFailed(self, failure: Any) -> None:
        """A connection attempt failed: log it when the primary becomes unreachable, once,
        not on every retry (another line follows when it can be reached again)."""
        if self._unreachableSince is None:
            self._unreachableSince = self.clock.seconds()
            self.log.warn(
                "Cannot reach the primary {primary}: {why}; trying again every {every:g} s",
                primary=self.primary,
                why=failure.getErrorMessage().rstrip("."),
                every=self.beatInterval,
            )

    def linkMade(self, link: Any) -> None:
        """A connection to the primary is up: pair and sync over it."""
        if self._unreachableSince is not None:
            since, self._unreachableSince = self._unreachableSince, None
            self.log.info(
                "The primary {primary} can be reached again"
                " (unreachable since {since}, for {seconds:.0f} s)",
                primary=self.primary,
                since=utc(since),
                seconds=self.clock.seconds() - since,
            )
        self.link = link
        d = defer.ensureDeferred(self._pair(link))
        d.addErrback(self._linkFailed, link)

    def linkLost(self, link: Any, reason: Any = None) -> None:
        """The link closed; a TLS refusal counts as an answer (the primary is up)."""
        if self.link is link:
            self.link = None
            if self.paired:
                self.paired = False
                self.log.info("The link to the primary {primary} closed", primary=self.primary)
        if reason is not None and reason.check(SSL.Error, VerificationError):
            self.heard()
            self._refused("refused", _tlsProblem(reason.value, self.primary))
        elif not link.heardAny and not self.paired and self.machine.state not in (ACTIVE, MERGING):
            # Something accepted the connection and closed it without a word: the
            # primary is up but will not talk like this (a TLS port, say). Not while
            # serving: a primary dying again as it starts does the same, and the
            # leases served here must wait for one that answers.
            self.heard()
            self._refused(
                "refused",
                "the primary closed the link without answering:"
                " if it serves TLS, give this failover --primary-ca",
            )

    def _linkFailed(self, failure: Any, link: Any) -> None:
        if not failure.check(error.ConnectionLost, error.ConnectionDone):
            self.log.failure("The link to the primary failed", failure)
            self.record(
                "sync-trouble", "error", f"the link to the primary failed: {failure.value}"
            )
        link.close()

    async def _pair(self, link: Any) -> None:
        reply = await link.request(
            "PEER",
            {
                "name": self.serverName,
                "version": __version__,
                "edition": EDITION,
                # --advertise may leave the port out; PEER's listen names it.
                "listen": display_address(self.advertise),
            },
        )
        if not reply.ok:
            self._refusedBy(reply, "PEER")
            link.close()
            return
        self.primaryName = reply.args.get("server")
        self.primaryVersion = reply.args.get("version")
        self.primaryEdition = reply.args.get("edition")
        await self.store.setLocal(PRIMARY_NAME, self.primaryName)
        await self.store.setLocal(PRIMARY_VERSION, self.primaryVersion)
        await self.store.setLocal(PRIMARY_EDITION, self.primaryEdition)
        proof = peer_proof(self.peerSecret, reply.args.get("challenge", ""), self.serverName)
        report = self._servedReport()
        reply = await link.request("AUTH", {"proof": proof, **report})
        if not reply.ok:
            self._refusedBy(reply, "AUTH")
            link.close()
            return
        if report and self._servedReport() == report:
            self._served = None
            await self.store.setLocal(SERVED, None)
        self.paired = True
        self.machine.fire("paired")
        if self.machine.state == MERGING or (
            self.machine.state == STANDBY and self._diverged is not None
        ):
            # Merging; or restarted while serving, and the primary is back before the
            # silence that would have made this failover take over again.
            await self._merge(link)
        self.problem = None
        self._reported = None
        self.primaryRevision = reply.integer("revision")
        await self._syncAndAcknowledge(link)

    def _refusedBy(self, reply: Reply, verb: str) -> None:
        """The primary refused ``verb`` (PEER or AUTH) with ``reply``."""
        response = reply.response
        if response.reason == "version-mismatch":
            theirs = reply.args.get("version", "?")
            edition = reply.args.get("edition", "?")
            self.primaryVersion, self.primaryEdition = theirs, edition
            d = self.store.setLocal(PRIMARY_VERSION, theirs)
            d.addCallback(lambda ignored: self.store.setLocal(PRIMARY_EDITION, edition))
            d.addErrback(lambda f: self.log.failure("Could not store the primary's version", f))
            self._refused("mismatch", _mismatchAdvice(theirs, edition))
        else:
            self._refused("refused", _refusalProblem(response, verb, self.primary))

    def _refused(self, event: str, problem: str) -> None:
        """The primary refused the link (``event``: ``refused`` or ``mismatch``): change
        state, show why, and log and record it once, not on every retry.

        A version mismatch stops the failover service until the versions match
        (FAILOVER.md rule 12); any other refusal leaves it unpaired, asking again
        every heartbeat.
        """
        self.paired = False
        self.machine.fire(event)
        kind = LINK_WORDS[STOPPED] if event == "mismatch" else LINK_WORDS[REFUSED]
        if (kind, problem) != self._reported:
            if event == "mismatch":
                self.log.warn("Failover service stopped: {problem}", problem=problem)
            else:
                self.log.warn(
                    "Not paired with the primary {primary}: {problem};"
                    " asking again every {every:g} s",
                    primary=self.primary,
                    problem=problem,
                    every=self.beatInterval,
                )
            self.record(kind, "error", problem, primary=self.primary)
            self._reported = (kind, problem)
        self.problem = problem

    def _sync(self, link: Any) -> defer.Deferred:
        """Fetch what changed since the revision held (everything, if it must go).

        Runs under ``_syncing``: one sync at a time, so revisions arrive in order.
        """
        return defer.ensureDeferred(self._fetch(link))

    async def _fetch(self, link: Any) -> None:
        await self._restoring
        self._heldBeforeSync = self.pool.revision
        since = 0 if self._diverged is not None else self.pool.revision
        reply = await link.request("SYNC", {"since": since})
        if not reply.ok:
            self.log.warn("SYNC refused: {r}", r=reply.response)
            return
        revision = reply.integer("revision")
        if reply.args.get("mode") == sync.SNAPSHOT:
            await self.ledger.replace(sync.decode_snapshot(revision, reply.lines))
            if self._diverged is not None:
                await self._forgetTakeover()
        else:
            await self.ledger.applySync(sync.group_changes(reply.lines))
        self.lastSync = self.now()
        await self.store.setLocal(LAST_SYNC, self.lastSync)

    def _beatSafely(self) -> defer.Deferred:
        d = defer.ensureDeferred(self._beat())
        d.addErrback(self._beatFailed)
        return d

    def _beatFailed(self, failure: Any) -> None:
        if not failure.check(error.ConnectionLost, error.ConnectionDone):
            self.log.failure("A heartbeat to the primary failed", failure)

    async def _beat(self) -> None:
        """Heartbeat; when the primary has changed, sync, then heartbeat again at once.

        A BEAT's ``revision`` is what this failover holds durably from the
        primary: the primary answers a grant of one of the last seats of an
        exact license only once a BEAT acknowledges it (FAILOVER.md rule 16),
        so the BEAT after a sync goes out without waiting for the next
        interval. A failover holding data of its own says 0 until a sync has
        replaced it.

        The sync runs beside the heartbeats, not in their place: under a heavy
        load a sync may take seconds, and the primary counts a link whose BEAT
        it has not heard for half the takeover time as cut. A BEAT while a sync
        runs says the revision held before it (``_heldBeforeSync``), once this
        link has synced: on a new link, the first BEAT that counts comes after
        the merge and the first sync.
        """
        link = self.link
        if link is None or not self.paired:
            return
        if self._syncing.locked:
            if self._syncedLink is link:
                # Not waited for: its answer comes after the SYNC's, and the next
                # heartbeat must go out meanwhile.
                link.request("BEAT", self._beatArgs()).addErrback(self._beatFailed)
            return
        reply = await link.request("BEAT", self._beatArgs())
        if not reply.ok:
            return
        self.primaryRevision = reply.integer("revision")
        if self.primaryRevision != self.pool.revision:
            syncing = defer.ensureDeferred(self._syncAndAcknowledge(link))
            syncing.addErrback(self._beatFailed)
            return
        if self.machine.state == STANDBY and self.clock.seconds() >= self._nextUsageSync:
            self._nextUsageSync = self.clock.seconds() + usage.MINUTE
            await self._syncUsage(link)

    async def _syncUsage(self, link: Any) -> None:
        """Fetch the primary's usage history written since the last time (once a minute, in
        standby), so that it is here after a takeover (``USAGE``, protocol.md)."""
        since = self._usageSynced
        if since is None:
            since = (self.now() - usage.KEPT["1m"]) // usage.MINUTE * usage.MINUTE
        reply = await link.request("USAGE", {"since": since})
        if not reply.ok:
            self.log.warn("USAGE refused: {r}", r=reply.response)
            return
        try:
            points, denials, held = usage.decode_rows(reply.lines)
            until = int(reply.args.get("until", ""))
        except ValueError as e:
            self.log.warn("The primary's usage history does not read: {why}", why=e)
            return
        await self.store.applyUsage(points, denials, held, until, self.now())
        self._usageSynced = until

    async def _syncAndAcknowledge(self, link: Any) -> None:
        """Sync, and tell the primary at once what this failover now holds."""
        await self._syncing.run(self._sync, link)
        self._syncedLink = link
        if link is self.link and self.paired:
            reply = await link.request("BEAT", self._beatArgs())
            if reply.ok:
                self.primaryRevision = reply.integer("revision")

    def _beatArgs(self) -> dict[str, Any]:
        """``revision``: the primary's revision this failover holds durably, its pool's (the
        one before a sync while the sync runs), unless it served since (0 then, with
        ``diverged=1``: it holds leases of its own, which the primary does not count as a
        link that is up)."""
        if self._diverged is not None:
            return {"revision": 0, "diverged": 1}
        if self._syncing.locked:
            return {"revision": self._heldBeforeSync}
        return {"revision": self.pool.revision}


def _mismatchAdvice(version: str, edition: str) -> str:
    """What the admin must do when the primary runs another version or edition."""
    if edition != EDITION:
        return f"the primary is the {edition} edition, this failover the {EDITION} edition"
    try:
        newer = Version(version) > Version(__version__)
    except VersionError:
        newer = True
    if newer:
        return f"upgrade this failover to version {version}"
    return f"the primary runs the older version {version}: upgrade the primary to {__version__}"


def _refusalProblem(response: Any, verb: str, primary: str) -> str:
    """Why the primary refused the link, other than for its version, in words an admin
    can act on. The same refusal gives the same words: it is logged once per change."""
    if response.reason == "not-authorized":
        if verb == "AUTH":
            return PROOF_REFUSED
        return f"the server at {primary} takes no failover: it is not a primary (check --primary)"
    head = f"the primary refused the link: {response.code} {response.reason}"
    if response.reason == "already-paired":
        return f"{head}: another failover ({response.args.get('name', '?')}) is paired with it"
    return head


def _tlsProblem(error: Exception, primary: str) -> str:
    """Why TLS with the primary failed, in words an admin can act on."""
    if isinstance(error, VerificationError):
        return f"the primary's certificate does not name {primary.rsplit(':', 1)[0]}"
    text = str(error)
    if "wrong version number" in text or "packet length too long" in text:
        return "the primary does not speak TLS on that port: drop --primary-ca or fix --primary"
    if "certificate verify failed" in text:
        return (
            "the primary's certificate does not verify against --primary-ca"
            " (another issuer, or expired)"
        )
    return f"TLS with the primary failed: {text}"
