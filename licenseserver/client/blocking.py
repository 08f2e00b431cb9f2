"""The blocking API: ``Client`` and ``Lease`` for applications that do not use Twisted.

It is a thin layer over the Twisted API: the calls run on a private
reactor in one background thread (``ReactorThread``), and each blocking
method waits for its Deferred. The private reactor is never installed as
Twisted's global one and never touches signals, so it works in any
program; an application that runs a Twisted reactor itself should use the
Twisted API instead and keep everything on its own reactor.

The application's ``on_event`` callback runs in a thread of its own, one
event after the other, so it may call the client (even ``close``) and may
take its time without holding up heartbeats.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import inspect
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from licenseserver.client import errors
from licenseserver.client.core import Event
from licenseserver.client.twisted_api import Borrowed, TwistedClient, TwistedLease
from licenseserver.protocols import lineclient

log = Logger()

CLOSE_AT_EXIT_TIMEOUT = 5.0
"""How long closing the clients still open at interpreter exit may take, each."""


class _EventThread:
    """Hands events to a callback in a thread of its own, in order."""

    def __init__(self, callback: Callable[[Event], object]):
        self._callback = callback
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="licenseserver-client-events", daemon=True
        )
        self._thread.start()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self._callback(event)
            except Exception:
                log.failure("The on_event callback failed on {event}", event=str(event))

    def stop(self, timeout: float | None = None) -> None:
        """Deliver what is queued, then end the thread (waits unless called from it)."""
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class ReactorThread:
    """A private reactor running in a daemon thread, and calls into it from other threads.

    The reactor is ``lineclient.newReactor()``'s, as ``blockingRequest`` uses:
    never the global one.
    """

    def __init__(self, name: str = "licenseserver-client") -> None:
        self.reactor = lineclient.newReactor()
        self._thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False}, name=name
        )
        self._thread.daemon = True
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, f: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``f(*args)`` in the reactor thread; wait for its result (or its Deferred's).

        Raises what ``f`` raised, ``TimeoutError`` after ``timeout`` seconds,
        and ``RuntimeError`` when called from the reactor thread itself
        (which would wait for itself forever).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking client calls cannot be made from the client's thread")
        if not self.alive:
            raise errors.ClientClosedError("the client's background thread has stopped")
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                result = f(*args)
                if inspect.iscoroutine(result):
                    result = defer.Deferred.fromCoroutine(result)
            except BaseException as e:
                future.set_exception(e)
                return
            if isinstance(result, defer.Deferred):
                result.addCallbacks(future.set_result, lambda failure: _failed(future, failure))
            else:
                future.set_result(result)

        self.reactor.callFromThread(run)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the client did not finish within {timeout} s") from None

    def events(self, callback: Callable[[Event], object]) -> _EventThread:
        """A dispatcher that hands events to ``callback`` in a thread of its own."""
        return _EventThread(callback)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the reactor and wait for its thread to end."""
        if self.alive:
            self.reactor.callFromThread(self.reactor.stop)
            self._thread.join(timeout)


def _failed(future: concurrent.futures.Future, failure: Any) -> None:
    future.set_exception(failure.value)


_shared: ReactorThread | None = None
_shared_lock = threading.Lock()


def shared_reactor_thread() -> ReactorThread:
    """The process's one background reactor for blocking clients, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive:
            _shared = ReactorThread()
        return _shared


_open_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _closeAtExit() -> None:
    """Release the leases of clients the application left open."""
    for client in list(_open_clients):
        try:
            client.close(timeout=CLOSE_AT_EXIT_TIMEOUT)
        except Exception:
            pass


class Client:
    """A blocking client of a license server and its failover.

    The arguments are those of ``TwistedClient`` (see there), except that
    there is no reactor to give: ``runner`` (a ``ReactorThread`` by default,
    shared by the process's clients) runs the Twisted API, and
    ``endpoint_for`` (a function from ``host:port`` to a Twisted client
    endpoint, e.g. for TLS) runs on its reactor. ``on_event`` is called in a
    thread of the client's own.

    Nothing is sent until ``open()`` or the first call; ``connect()`` builds
    a client and opens it.
    """

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
        endpoint_for: Callable[[str], Any] | None = None,
        runner: Any = None,
    ):
        self._runner = runner if runner is not None else shared_reactor_thread()
        self._events = self._runner.events(on_event) if on_event is not None else None
        self._twisted = TwistedClient(
            servers,
            product,
            version,
            machine=machine,
            host=host,
            user=user,
            cores=cores,
            grace=grace,
            on_event=self._events.put if self._events is not None else None,
            wait=wait,
            request_timeout=request_timeout,
            retry_delay=retry_delay,
            reactor=self._runner.reactor,
            endpoint_for=endpoint_for,
        )
        self._leases: dict[int, Lease] = {}
        if isinstance(self._runner, ReactorThread):
            _open_clients.add(self)

    # -- what the client knows

    @property
    def server(self) -> str | None:
        """The address of the server in use, None when no session is open."""
        return self._twisted.server

    @property
    def servers(self) -> list[str]:
        """Every server address known: those given, then those learnt."""
        return list(self._twisted.servers.addresses)

    @property
    def machine(self) -> str:
        """The machine id leases belong to."""
        return self._twisted.machine

    @property
    def leases(self) -> list[Lease]:
        """The leases this client keeps."""
        return [self._leases[id(t)] for t in list(self._twisted.leases) if id(t) in self._leases]

    @property
    def closed(self) -> bool:
        return self._twisted.closed

    # -- calls

    def _call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._runner.call(functools.partial(f, *args, **kwargs))

    def open(self) -> dict[str, str]:
        """Say HELLO to the first server that serves; return its answer plus ``address``."""
        return self._call(self._twisted.connect)

    def checkout(
        self,
        product: str | None = None,
        *,
        edition: str | None = None,
        cores: int | None = None,
        request: str | None = None,
    ) -> Lease:
        """Take a seat; the ``Lease`` heartbeats itself until released (see ``TwistedClient``)."""
        twistedLease = self._call(
            self._twisted.checkout, product, edition=edition, cores=cores, request=request
        )
        lease = Lease(self, twistedLease)
        self._leases[id(twistedLease)] = lease
        return lease

    def borrow(
        self,
        product: str | None = None,
        days: int | None = None,
        *,
        edition: str | None = None,
        cores: int | None = None,
    ) -> Borrowed:
        """Check a seat out for ``days`` days, without heartbeats (``product``: the client's)."""
        if days is None:
            raise TypeError("borrow() needs days")
        return self._call(self._twisted.borrow, product, days, edition=edition, cores=cores)

    def heartbeat(self, lease_id: str | None = None) -> dict[str, str]:
        """Renew a lease of this machine by id (or all of them); return the answer."""
        return self._call(self._twisted.heartbeat, lease_id)

    def release(self, lease_id: str) -> bool:
        """Release a lease of this machine by id; True once a server confirmed it."""
        return self._call(self._twisted.release, lease_id)

    def status(self) -> dict[str, str]:
        """The STATUS of the server in use (plus ``address``)."""
        return self._call(self._twisted.status)

    def status_of(self, address: str) -> dict[str, str]:
        """The STATUS of the server at ``address``, without HELLO."""
        return self._call(self._twisted.status_of, address)

    def close(self, timeout: float | None = None) -> None:
        """Release every lease still kept (best effort) and close the session."""
        _open_clients.discard(self)
        try:
            if not self._twisted.closed:
                self._runner.call(self._twisted.close, timeout=timeout)
        finally:
            if self._events is not None:
                self._events.stop(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _forget(self, lease: Lease) -> None:
        self._leases.pop(id(lease._twisted), None)


class Lease:
    """A seat held through a blocking ``Client``; it heartbeats itself in the background.

    Use it as a context manager, or call ``release()``/``close()``. Its
    attributes show the ``TwistedLease`` it wraps as it is now.
    """

    def __init__(self, client: Client, twistedLease: TwistedLease):
        self._client = client
        self._twisted = twistedLease

    @property
    def id(self) -> str:
        """The lease id (it changes when the lease is checked out again elsewhere)."""
        return self._twisted.id

    @property
    def license(self) -> str:
        return self._twisted.license

    @property
    def kind(self) -> str:
        return self._twisted.kind

    @property
    def expires(self) -> int:
        """When the lease expires without a heartbeat, in the server's Unix time."""
        return self._twisted.expires

    @property
    def ttl(self) -> float:
        return self._twisted.ttl

    @property
    def server(self) -> str:
        """The address of the server that granted or last renewed the lease."""
        return self._twisted.server

    @property
    def request(self) -> str:
        """The idempotency key that checks this lease out again at another server."""
        return self._twisted.request

    @property
    def product(self) -> str:
        return self._twisted.product

    @property
    def edition(self) -> str | None:
        return self._twisted.edition

    @property
    def state(self) -> str:
        """``held``, ``renewing``, ``grace``, ``lost``, ``revoked`` (by an admin),
        ``released`` or ``detached``."""
        return self._twisted.state

    @property
    def valid(self) -> bool:
        """Whether the application may use the seat (held, renewing or in grace)."""
        return self._twisted.valid

    def __repr__(self) -> str:
        return f"<Lease {self.id} {self.product} {self.state} at {self.server}>"

    def release(self) -> bool:
        """Stop heartbeating and release the seat; raises when no server answers."""
        self._client._forget(self)
        return self._client._call(self._twisted.release)

    def close(self) -> bool:
        """Release without raising: True if a server confirmed it."""
        self._client._forget(self)
        return self._client._call(self._twisted.close)

    def detach(self) -> None:
        """Stop heartbeating without releasing (the lease expires on the server by itself)."""
        self._client._forget(self)
        self._client._call(self._twisted.detach)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(servers: str | Iterable[str], product: str, version: str, **options: Any) -> Client:
    """A ``Client`` that has said HELLO to the first server that serves (see ``Client``)."""
    client = Client(servers, product, version, **options)
    try:
        client.open()
    except BaseException:
        client.close()
        raise
    return client
