"""The primary role: always active, the source of truth that its failover syncs from.

Besides serving licenses, the primary accepts one failover on its licensing
port. The failover says ``PEER`` and proves the pairing secret with ``AUTH``
(an HMAC over a fresh challenge, so a captured proof is useless on the next
link); then it heartbeats with ``BEAT`` and fetches changes with ``SYNC``.
Only committed data leaves the primary: the sync reads the store, never the
in-memory pool, which may hold changes still on their way to disk.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from licenseserver._version import EDITION, __version__
from licenseserver.addresses import parse_host_port
from licenseserver.localstate import FAILOVER_ADDRESS
from licenseserver.passwords import proof_matches
from licenseserver.protocols import sync
from licenseserver.protocols.wire import ProtocolError, format_ok
from licenseserver.roles.base import ServingRole, integer_arg, text_arg
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

    async def loadLocal(self) -> None:
        self.rememberedFailover = await self.store.getLocal(FAILOVER_ADDRESS)

    # What the primary tells about its failover

    def failoverAddress(self) -> str | None:
        """The failover clients should go to: the one paired last."""
        if self.peer is not None:
            return self.peer.address
        return self.rememberedFailover

    def peerAlive(self) -> bool:
        """Whether the paired failover's link is up and heartbeated recently."""
        link = self.peer
        return (
            link is not None
            and link.connected
            and self.clock.seconds() - link.last_beat <= self.takeoverAfter
        )

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
        }

    async def peerPeer(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """A failover introduces itself: check its version and edition, send a challenge."""
        name = text_arg(args, "name", required=True)
        version = text_arg(args, "version", required=True)
        edition = text_arg(args, "edition", required=True)
        listen = text_arg(args, "listen", required=True)
        if parse_host_port(listen) is None:
            raise ProtocolError("bad-request", "listen must be HOST:PORT")
        if (version, edition) != (__version__, EDITION):
            message = (
                f"failover {name} runs {version} ({edition}); this primary runs "
                f"{__version__} ({EDITION}): upgrade the failover to {__version__}"
            )
            self.log.warn("Refused failover: {message}", message=message)
            self.record("version-mismatch", "error", message, name=name, version=version)
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
        if not challenge or not self.peerSecret:
            self._refuse(session, "AUTH without a PEER before it")
        if not proof_matches(self.peerSecret, challenge, name, proof):
            self._refuse(session, f"wrong pairing proof from failover {name}")
        if self.peer is not None and self.peer.name != name and self.peerAlive():
            raise ProtocolError(
                "already-paired", "another failover is paired", name=self.peer.name
            )
        now = self.now()
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
        return {"revision": self.committedRevision}

    def _refuse(self, session: Session, why: str) -> None:
        self.log.warn("Refused a failover from {peer}: {why}", peer=session.peer, why=why)
        self.record("peer-refused", "warning", f"refused a failover from {session.peer}: {why}")
        self.audit("peer-refused", peer=session.peer, why=why)
        raise ProtocolError("not-authorized", "not authorized", closes=True)

    def _link(self, session: Session) -> PeerLink:
        link = self.peer
        if link is None or link.session is not session:
            raise ProtocolError("not-authorized", "pair first (PEER, AUTH)", closes=True)
        return link

    async def peerBeat(self, session: Session, args: dict[str, str]) -> dict[str, Any]:
        """The failover's heartbeat: it says what it holds, the primary what it has."""
        link = self._link(session)
        link.last_beat = self.now()
        link.revision = integer_arg(args, "revision", link.revision, 0, 1 << 62)
        return {"revision": self.committedRevision, "time": link.last_beat}

    async def peerSync(self, session: Session, args: dict[str, str]) -> bytes:
        """Every change after ``since``, or a snapshot when that is 0 or too old."""
        link = self._link(session)
        since = integer_arg(args, "since", 0, 0, 1 << 62)
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
