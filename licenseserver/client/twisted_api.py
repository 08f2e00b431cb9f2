"""The Twisted API of the client SDK: ``TwistedClient`` and the leases it keeps.

Every method that talks to a server returns a Deferred (await it in an
``async def``, or add callbacks). Time and connections come from the
``reactor`` argument (anything with ``callLater``/``seconds`` will do with a
custom ``endpoint_for``), so tests run it on a ``Clock`` over in-memory
connections.

The client holds one session (a connection that said HELLO) at a time. When
the server of that session stops answering or says ``503 standby``, the next
request opens a session at another server (``core.ServerList`` says which)
and goes on there: a lease is heartbeated at the new server under the same
id, and if that server does not know it (``404 unknown-lease``), it is
checked out again with the same ``request`` key, so that a server never
gives this checkout a second seat. Each step is an ``Event`` for the
application's ``on_event`` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from licenseserver.client import core, errors
from licenseserver.client.connection import AddressEndpoint, ServerConnection, open_connection
from licenseserver.client.core import Event, ServerList

_DEFAULT: Any = object()

DEFAULT_HEARTBEAT = 30.0
"""Heartbeat interval until a server has named one."""

_RETRY_ELSEWHERE: tuple[type[errors.ServerError], ...] = (
    errors.ClientTooOld,
    errors.Overloaded,
    errors.InternalServerError,
)
"""Answers to HELLO that make the client try the next server rather than give up."""

_TRY_AGAIN_LATER: tuple[type[errors.ServerError], ...] = (
    errors.Standby,
    errors.Overloaded,
    errors.InternalServerError,
)
"""Refusals of a re-checkout that say nothing about the seat."""


@dataclass(frozen=True)
class Borrowed:
    """A seat checked out for days, without heartbeats (``BORROW``)."""

    id: str
    license: str
    kind: str
    expires: int
    product: str
    server: str


class TwistedClient:
    """A licensed application's client of one license server and its failover.

    ``servers`` is one ``host:port`` (its HELLO names the failover) or a
    list. ``product`` and ``version`` are the application's; ``machine``,
    ``host`` and ``user`` default to this machine's (leases belong to the
    machine id). ``grace`` is how many seconds a lease stays valid after it
    expired without a server renewing it; ``on_event`` receives an ``Event``
    for each connection, move, retry and lease change. ``wait`` bounds how
    long a call keeps trying the servers before ``NoServerError``;
    ``request_timeout`` how long a server may take to answer;
    ``retry_delay`` the pause between rounds over the servers.

    ``reactor`` gives the time and the connections (the global reactor by
    default); ``endpoint_for`` maps a ``host:port`` to the client endpoint
    to connect with (plain TCP by default; give one for TLS, or for tests).
    """

    log = Logger()

    def __init__(
        self,
        servers: str | Iterable[str],
        product: str,
        version: str,
        *,
        machine: str | None = None,
        host: str | None = None,
        user: str | None = None,
        cores: int | None = None,
        grace: float = 0.0,
        on_event: Callable[[Event], object] | None = None,
        wait: float = 10.0,
        request_timeout: float = 10.0,
        retry_delay: float = 1.0,
        reactor: Any = None,
        endpoint_for: Callable[[str], Any] | None = None,
    ):
        if isinstance(servers, str):
            servers = [servers]
        if grace < 0 or wait < 0 or request_timeout <= 0 or retry_delay <= 0:
            raise ValueError("grace and wait must be >= 0, timeouts and delays > 0")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.servers = ServerList(servers)
        self.product = product
        self.hello_arguments = core.hello_arguments(
            product, version, machine=machine, host=host, user=user, cores=cores
        )
        self.machine = str(self.hello_arguments["machine"])
        self.grace = float(grace)
        self.on_event = on_event
        self.wait = float(wait)
        self.request_timeout = float(request_timeout)
        self.retry_delay = float(retry_delay)
        self._endpoint_for = endpoint_for or (
            lambda address: AddressEndpoint(reactor, address, self.request_timeout)
        )
        self.leases: list[TwistedLease] = []
        """The leases this client keeps (checked out and neither released nor detached)."""
        self.closed = False
        self._connection: ServerConnection | None = None
        self._lock = defer.DeferredLock()
        self._lastServer: str | None = None
        self._heartbeat = DEFAULT_HEARTBEAT
        self._sleeping: set[defer.Deferred] = set()

    # -- what the client knows

    @property
    def server(self) -> str | None:
        """The address of the server of the open session, None when there is none."""
        connection = self._connection
        return connection.address if connection is not None and connection.usable else None

    @property
    def heartbeat_interval(self) -> float:
        """The heartbeat interval the last server asked for."""
        return self._heartbeat

    # -- calls (each returns a Deferred)

    def connect(self) -> defer.Deferred:
        """Open a session (HELLO); fire with the server's HELLO answer plus ``address``."""
        return defer.Deferred.fromCoroutine(self._connect())

    def checkout(
        self,
        product: str | None = None,
        *,
        edition: str | None = None,
        cores: int | None = None,
        request: str | None = None,
    ) -> defer.Deferred:
        """Take a seat; fire with a ``TwistedLease`` that heartbeats itself.

        ``product`` defaults to the client's; ``request`` is the idempotency
        key (a fresh one by default): the same key never takes two seats.
        """
        return defer.Deferred.fromCoroutine(self._checkout(product, edition, cores, request))

    def borrow(
        self,
        product: str | None = None,
        days: int | None = None,
        *,
        edition: str | None = None,
        cores: int | None = None,
    ) -> defer.Deferred:
        """Check a seat out for ``days`` days, without heartbeats; fire with ``Borrowed``.

        ``product`` defaults to the client's; ``days`` is required. Not
        retried at another server once sent: a lost answer could hide a
        granted seat. An active failover refuses with ``BorrowDisabled``.
        """
        if days is None:
            raise TypeError("borrow() needs days")
        return defer.Deferred.fromCoroutine(self._borrow(days, product, edition, cores))

    def heartbeat(self, lease_id: str | None = None) -> defer.Deferred:
        """Renew one lease of this machine by id (or all of them); fire with the answer."""
        return defer.Deferred.fromCoroutine(self._simple("HEARTBEAT", {"lease": lease_id}))

    def release(self, lease_id: str) -> defer.Deferred:
        """Release a lease of this machine by id (a borrowed one, or one of another run).

        Fires with True once a server confirmed it; fails with ``UnknownLease``
        when the server holds no such lease (except for a lease this client
        keeps, whose release is done once no server holds it).
        """
        for lease in self.leases:
            if lease.id == lease_id:
                return lease.release()
        d = defer.Deferred.fromCoroutine(self._simple("RELEASE", {"lease": lease_id}))
        return d.addCallback(lambda _: True)

    def status(self) -> defer.Deferred:
        """Fire with the STATUS of the session's server (plus ``address``)."""
        return defer.Deferred.fromCoroutine(self._simple("STATUS", {}))

    def status_of(self, address: str) -> defer.Deferred:
        """Fire with the STATUS of the server at ``address``, without HELLO."""
        return defer.Deferred.fromCoroutine(self._statusOf(address))

    def close(self) -> defer.Deferred:
        """Release every lease kept (best effort, one round) and close the session."""
        return defer.Deferred.fromCoroutine(self._close())

    async def __aenter__(self) -> TwistedClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the calls' work

    def _now(self) -> float:
        return self.reactor.seconds()

    def _deadline(self) -> float:
        return self._now() + self.wait

    def _checkOpen(self) -> None:
        if self.closed:
            raise errors.ClientClosedError("the license client is closed")

    async def _connect(self) -> dict[str, str]:
        connection = await self._session(self._deadline())
        return {**connection.hello, "address": connection.address}

    async def _checkout(
        self, product: str | None, edition: str | None, cores: int | None, request: str | None
    ) -> TwistedLease:
        key = request or core.new_request_key()
        product = product or self.product
        args = {"product": product, "edition": edition, "cores": cores, "request": key}
        sent = self._now()
        reply, address = await self._call("CHECKOUT", args, idempotent=True)
        lease = TwistedLease(self, key, product, edition, cores)
        lease._granted(reply, address, sent)
        self.leases.append(lease)
        lease._schedule(lease._interval())
        return lease

    async def _borrow(
        self, days: int, product: str | None, edition: str | None, cores: int | None
    ) -> Borrowed:
        product = product or self.product
        args = {"product": product, "days": int(days), "edition": edition, "cores": cores}
        reply, address = await self._call("BORROW", args, idempotent=False)
        return Borrowed(
            id=reply["lease"],
            license=reply.get("license", ""),
            kind=reply.get("kind", ""),
            expires=int(float(reply.get("expires", "0"))),
            product=product,
            server=address,
        )

    async def _simple(self, verb: str, args: dict[str, object]) -> dict[str, str]:
        reply, address = await self._call(verb, args, idempotent=True)
        return {**reply, "address": address}

    async def _statusOf(self, address: str) -> dict[str, str]:
        self._checkOpen()
        address = core.normalize_address(address)
        connection = await open_connection(
            self._endpoint_for(address), address, self.reactor, self.request_timeout
        )
        try:
            reply = await connection.request("STATUS")
        finally:
            connection.close()
        return {**reply, "address": address}

    async def _close(self) -> None:
        if self.closed:
            return
        for lease in list(self.leases):
            await lease._finish(deadline=None, quiet=True)
        self.closed = True
        for d in list(self._sleeping):
            d.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    # -- sessions and failover

    async def _call(
        self, verb: str, args: dict[str, object], *, idempotent: bool, deadline: Any = _DEFAULT
    ) -> tuple[dict[str, str], str]:
        """Send one request over the session, moving to another server when needed.

        A ``503 standby`` answer, or (when ``idempotent``) a broken
        connection, makes it open a session elsewhere and ask again, until
        ``deadline`` (``None``: one round over the servers).
        """
        if deadline is _DEFAULT:
            deadline = self._deadline()
        attempts: list[tuple[str, BaseException]] = []
        while True:
            connection = await self._session(deadline)
            try:
                reply = await connection.request(verb, args)
            except errors.Standby as e:
                connection.close()
                named = self.servers.prefer(e.primary)
                self._retry(connection.address, e, attempts, named)
            except errors.ServerUnavailable as e:
                if not idempotent:
                    raise
                self._retry(connection.address, e, attempts, None)
            else:
                return reply, connection.address
            if deadline is None or self._now() >= deadline:
                raise errors.NoServerError(attempts)

    async def _session(self, deadline: float | None) -> ServerConnection:
        """The open session, or a new one at the first server that serves."""
        self._checkOpen()
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        await self._lock.acquire()
        try:
            self._checkOpen()
            connection = self._connection
            if connection is None or not connection.usable:
                connection = await self._open(deadline)
                if self.closed:
                    connection.close()
                    self._checkOpen()
                self._connection = connection
            return connection
        finally:
            self._lock.release()

    async def _open(self, deadline: float | None) -> ServerConnection:
        """Say HELLO to the servers in turn; rounds pause ``retry_delay`` until ``deadline``."""
        while True:
            attempts: list[tuple[str, BaseException]] = []
            for address in self.servers.round():
                self._checkOpen()
                try:
                    connection = await self._helloAt(address)
                except errors.Standby as e:
                    named = self.servers.prefer(e.primary)
                    self._retry(address, e, attempts, named)
                except _RETRY_ELSEWHERE as e:
                    self._retry(address, e, attempts, None)
                except errors.ServerUnavailable as e:
                    self._retry(address, e, attempts, None)
                else:
                    self._opened(connection)
                    return connection
            if deadline is None or self._now() + self.retry_delay > deadline:
                raise errors.NoServerError(attempts)
            await self._sleep(self.retry_delay)

    async def _helloAt(self, address: str) -> ServerConnection:
        connection = await open_connection(
            self._endpoint_for(address), address, self.reactor, self.request_timeout
        )
        try:
            reply = await connection.request("HELLO", self.hello_arguments)
        except BaseException:
            connection.close()
            raise
        connection.hello = reply
        self.servers.learn(reply.get("failover"))
        self.servers.learn(reply.get("primary"))
        try:
            heartbeat = float(reply.get("heartbeat", ""))
        except ValueError:
            heartbeat = 0.0
        if heartbeat > 0:
            self._heartbeat = heartbeat
        connection.onLost = self._lost
        return connection

    def _lost(self, connection: ServerConnection) -> None:
        if self._connection is connection:
            self._connection = None

    def _opened(self, connection: ServerConnection) -> None:
        previous, self._lastServer = self._lastServer, connection.address
        self.servers.current = connection.address
        hello = connection.hello
        who = f"{hello.get('server', '?')} ({hello.get('role', '?')}) at {connection.address}"
        details = {"from": previous, "name": hello.get("server"), "role": hello.get("role")}
        if previous is None or previous == connection.address:
            self._emit(core.CONNECTED, f"connected to {who}", server=connection.address, **details)
        else:
            self._emit(
                core.MOVED, f"moved from {previous} to {who}", server=connection.address, **details
            )

    def _retry(
        self,
        address: str,
        error: BaseException,
        attempts: list[tuple[str, BaseException]],
        named: str | None,
    ) -> None:
        attempts.append((address, error))
        detail = errors.brief(error)
        if named:
            detail += f"; its primary is {named}"
        self._emit(core.RETRY, f"{address} did not serve: {detail}", server=address, error=error)

    async def _sleep(self, seconds: float) -> None:
        d = task.deferLater(self.reactor, seconds)
        self._sleeping.add(d)
        try:
            await d
        except defer.CancelledError:
            raise errors.ClientClosedError("the license client is closed") from None
        finally:
            self._sleeping.discard(d)

    def _emit(
        self,
        kind: str,
        message: str,
        *,
        server: str | None = None,
        lease: str | None = None,
        error: BaseException | None = None,
        **details: Any,
    ) -> None:
        if self.on_event is None:
            return
        event = Event(kind, message, self._now(), server, lease, error, details)
        try:
            self.on_event(event)
        except Exception:
            self.log.failure("The on_event callback failed on {event}", event=str(event))

    def _forget(self, lease: TwistedLease) -> None:
        if lease in self.leases:
            self.leases.remove(lease)


class TwistedLease:
    """A seat held through a ``TwistedClient``: it heartbeats itself until released.

    ``id``, ``license``, ``kind``, ``expires`` (server time) and ``ttl`` are
    those of the last grant or renewal, ``server`` the address that gave it;
    ``request`` is the idempotency key that re-acquires it at another server.
    ``state`` is one of ``core``'s lease states; ``valid`` is true while the
    application may use the seat (held, renewing, or in grace).
    """

    log = Logger()

    def __init__(
        self,
        client: TwistedClient,
        request: str,
        product: str,
        edition: str | None,
        cores: int | None,
    ):
        self._client = client
        self.request = request
        self.product = product
        self.edition = edition
        self.cores = cores
        self.id = ""
        self.license = ""
        self.kind = ""
        self.expires = 0
        self.ttl = 0.0
        self.server = ""
        self.state = core.HELD
        self.valid_until = 0.0
        """Local clock time until which the last grant or renewal holds."""
        self.grace_until: float | None = None
        self._timer: Any = None
        self._stateTimer: Any = None
        self._beating: defer.Deferred | None = None

    @property
    def valid(self) -> bool:
        return self.state in core.VALID_STATES

    def __repr__(self) -> str:
        return f"<TwistedLease {self.id} {self.product} {self.state} at {self.server}>"

    # -- the application's calls

    def release(self) -> defer.Deferred:
        """Stop heartbeating and release the seat; fire with True once a server confirmed it.

        Fails with ``NoServerError`` when no server answers within the
        client's ``wait`` (the lease then expires by itself).
        """
        return defer.Deferred.fromCoroutine(self._finish(deadline=self._client._deadline()))

    def close(self) -> defer.Deferred:
        """Release without raising: fire with True if confirmed, False if no server answered."""
        return defer.Deferred.fromCoroutine(self._finish(deadline=None, quiet=True))

    def detach(self) -> None:
        """Stop keeping the lease here; it lives on the server until it expires or is released."""
        if self.state in (core.RELEASED, core.DETACHED, core.REVOKED):
            return
        self._stop()
        self.state = core.DETACHED
        self._client._forget(self)

    async def __aenter__(self) -> TwistedLease:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- keeping the lease

    def _interval(self) -> float:
        interval = self._client.heartbeat_interval
        if self.ttl > 0:
            interval = min(interval, self.ttl / 2)
        return interval

    def _granted(self, reply: dict[str, str], address: str, sent: float) -> None:
        """Take in a CHECKOUT or HEARTBEAT answer from ``address``, asked at ``sent``."""
        if "lease" in reply:
            self.id = reply["lease"]
            self.license = reply.get("license", self.license)
            self.kind = reply.get("kind", self.kind)
        try:
            self.expires = int(float(reply.get("expires", self.expires)))
            self.ttl = float(reply.get("ttl", self.ttl))
        except ValueError:
            pass
        self.server = address
        self.valid_until = sent + self.ttl
        self.grace_until = None
        if self.state not in (core.RELEASED, core.DETACHED, core.REVOKED):
            self.state = core.HELD
            self._armStateTimer()

    def _schedule(self, delay: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.state in (core.RELEASED, core.DETACHED, core.REVOKED) or self._client.closed:
            return
        self._timer = self._client.reactor.callLater(max(0.0, delay), self._beat)

    def _stop(self) -> None:
        for timer in (self._timer, self._stateTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._stateTimer = None

    def _beat(self) -> None:
        self._timer = None
        d = defer.Deferred.fromCoroutine(self._renew())
        self._beating = d

        def unexpected(failure: Any) -> None:
            self.log.failure("Keeping lease {lease} failed", failure, lease=self.id)
            self._schedule(self._client.retry_delay)

        def done(result: Any) -> None:
            if self._beating is d:
                self._beating = None

        d.addErrback(unexpected)
        d.addBoth(done)

    async def _renew(self) -> None:
        """One heartbeat, with a move to another server and a re-checkout as needed."""
        client = self._client
        connection: ServerConnection | None = None
        try:
            connection = await client._session(None)
            sent = client._now()
            try:
                reply = await connection.request("HEARTBEAT", {"lease": self.id})
            except errors.UnknownLease:
                await self._reacquire(connection)
            except errors.Revoked as e:
                self._revoked(e)
                return
            else:
                moved = self.server != connection.address
                self._granted(reply, connection.address, sent)
                if moved:
                    client._emit(
                        core.LEASE_KEPT,
                        f"lease {self.id} is kept at {connection.address}",
                        server=connection.address,
                        lease=self.id,
                    )
        except errors.ClientClosedError:
            return
        except errors.Standby as e:
            if connection is not None:
                connection.close()
                client._retry(connection.address, e, [], client.servers.prefer(e.primary))
            self._schedule(0)
            return
        except errors.LicenseClientError as e:
            self._failed(e)
            return
        self._schedule(self._interval())

    async def _reacquire(self, connection: ServerConnection) -> None:
        """The server does not know the lease: check out again with the same request key."""
        client = self._client
        previous = self.id
        args = {
            "product": self.product,
            "edition": self.edition,
            "cores": self.cores,
            "request": self.request,
        }
        sent = client._now()
        try:
            reply = await connection.request("CHECKOUT", args)
        except errors.Revoked as e:
            self._revoked(e)
            return
        except errors.ServerError as e:
            if not isinstance(e, _TRY_AGAIN_LATER):
                self.valid_until = min(self.valid_until, client._now())
            raise
        self._granted(reply, connection.address, sent)
        client._emit(
            core.LEASE_REACQUIRED,
            f"{connection.address} did not know lease {previous}; "
            f"checked out again with the same request key: lease {self.id}",
            server=connection.address,
            lease=self.id,
            previous=previous,
        )

    def _revoked(self, error: errors.Revoked) -> None:
        """An admin ended the lease: stop keeping it, and take no other seat."""
        if self.state in (core.RELEASED, core.DETACHED, core.REVOKED):
            return
        self._stop()
        self.state = core.REVOKED
        self._client._forget(self)
        self._client._emit(
            core.LEASE_REVOKED,
            f"lease {self.id} was ended by an admin at {error.server or 'the server'}:"
            " the seat is gone, and no other is taken",
            server=error.server,
            lease=self.id,
            error=error,
        )

    def _failed(self, error: errors.LicenseClientError) -> None:
        if self.state in (core.RELEASED, core.DETACHED, core.REVOKED):
            return
        client = self._client
        if self.state == core.HELD:
            self.state = core.RENEWING
        delay = client.retry_delay
        if self.state == core.LOST:
            delay = max(delay, self._client.heartbeat_interval)
        client._emit(
            core.HEARTBEAT_FAILED,
            f"lease {self.id} was not renewed: {error}; retrying in {delay:g} s",
            lease=self.id,
            error=error,
            retry_in=delay,
            state=self.state,
        )
        self._checkExpiry()
        self._schedule(delay)

    def _armStateTimer(self) -> None:
        if self._stateTimer is not None and self._stateTimer.active():
            self._stateTimer.cancel()
        self._stateTimer = None
        if self.state in (core.HELD, core.RENEWING):
            at = self.valid_until
        elif self.state == core.IN_GRACE and self.grace_until is not None:
            at = self.grace_until
        else:
            return
        delay = max(0.0, at - self._client._now())
        self._stateTimer = self._client.reactor.callLater(delay, self._checkExpiry)

    def _checkExpiry(self) -> None:
        """Move to grace, or to lost, once the lease (or its grace) has run out."""
        if self.state not in (core.HELD, core.RENEWING, core.IN_GRACE):
            return
        client = self._client
        now = client._now()
        if now < self.valid_until:
            self._armStateTimer()
            return
        until = self.valid_until + client.grace
        if now < until:
            if self.state != core.IN_GRACE:
                self.state = core.IN_GRACE
                self.grace_until = until
                client._emit(
                    core.GRACE,
                    f"lease {self.id} was not renewed in time; running on grace for "
                    f"{until - now:g} s",
                    lease=self.id,
                    until=until,
                )
            self._armStateTimer()
            return
        self.state = core.LOST
        self._armStateTimer()
        client._emit(
            core.LEASE_LOST,
            f"lease {self.id} is lost: no server granted the seat"
            + (" within the grace period" if client.grace else ""),
            lease=self.id,
        )

    async def _finish(self, deadline: float | None, quiet: bool = False) -> bool:
        """Release: stop heartbeating, let a running heartbeat end, then RELEASE."""
        if self.state in (core.RELEASED, core.DETACHED, core.REVOKED):
            return False
        client = self._client
        self._stop()
        self.state = core.RELEASED
        client._forget(self)
        if self._beating is not None:
            try:
                await self._beating
            except Exception:
                pass
        confirmed = False
        try:
            await client._call("RELEASE", {"lease": self.id}, idempotent=True, deadline=deadline)
            confirmed = True
        except errors.UnknownLease:
            confirmed = True
        except errors.LicenseClientError:
            if not quiet:
                raise
        finally:
            client._emit(
                core.LEASE_RELEASED,
                f"lease {self.id} released"
                + ("" if confirmed else " (no server confirmed it; it expires by itself)"),
                server=client.server,
                lease=self.id,
                confirmed=confirmed,
            )
        return confirmed
