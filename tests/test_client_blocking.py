"""Tests for licenseserver.client.blocking: the blocking API and its background reactor.

The blocking Client is run two ways: with an inline runner on the Clock and
in-memory servers of ``tests.test_client`` (deterministic, every failover
case), and with the real ``ReactorThread`` against a server listening on
127.0.0.1 in the same process (threads, sockets and event delivery).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from licenseserver import client as licensing
from licenseserver.client import core, errors
from licenseserver.client.blocking import Client, ReactorThread, connect
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile, makeRole, run
from tests.integration.harness import REPO_ROOT, child_env
from tests.test_client import FAILOVER, HEARTBEAT, MACHINE, PRIMARY, TTL, FakeServers

EVENT_TIMEOUT = 10.0


class InlineRunner:
    """Runs a blocking client's calls in the test's thread, letting FakeServers' time pass."""

    def __init__(self, servers: FakeServers):
        self.servers = servers
        self.reactor = servers.clock

    def call(self, f: Any, *args: Any, timeout: float | None = None) -> Any:
        result = f(*args)
        if inspect.iscoroutine(result):
            result = defer.Deferred.fromCoroutine(result)
        if isinstance(result, defer.Deferred):
            return self.servers.wait(result)
        return result

    def events(self, callback: Any) -> Any:
        return _DirectEvents(callback)


class _DirectEvents:
    def __init__(self, callback: Any):
        self.put = callback

    def stop(self, timeout: float | None = None) -> None:
        pass


class BlockingTests(unittest.TestCase):
    """The blocking API over the in-memory servers."""

    def setUp(self) -> None:
        self.servers = FakeServers(self, seats=1)
        self.runner = InlineRunner(self.servers)
        self.events: list[core.Event] = []

    def options(self, **kw: Any) -> dict[str, Any]:
        options: dict[str, Any] = dict(
            machine=MACHINE,
            host="ws1",
            runner=self.runner,
            endpoint_for=self.servers.endpointFor,
            on_event=self.events.append,
        )
        options.update(kw)
        return options

    def connect(self, servers: Any = PRIMARY, **kw: Any) -> Client:
        client = connect(servers, "XMLSpy", "2025r2", **self.options(**kw))
        self.addCleanup(client.close)
        return client

    def held(self, role: Any = None) -> list[Any]:
        return self.servers.liveLeases(role or self.servers.primary)

    def test_withBlocks(self) -> None:
        """An application holds a seat inside ``with`` blocks; leaving them releases it."""
        with self.connect() as client:
            self.assertEqual(client.server, PRIMARY)
            self.assertEqual(client.servers, [PRIMARY, FAILOVER])
            with client.checkout() as lease:
                self.assertEqual(lease.license, self.servers.licenseId)
                self.assertEqual(
                    (lease.kind, lease.ttl, lease.server), ("concurrent", TTL, PRIMARY)
                )
                self.assertTrue(lease.valid)
                self.assertEqual(client.leases, [lease])
                self.assertEqual([h.id for h in self.held()], [lease.id])
            self.assertEqual(self.held(), [])
            self.assertEqual(lease.state, core.RELEASED)
        self.assertTrue(client.closed)
        self.assertEqual([e.kind for e in self.events], [core.CONNECTED, core.LEASE_RELEASED])

    def test_typedErrors(self) -> None:
        """Server refusals reach the application as typed exceptions."""
        client = self.connect()
        with self.assertRaises(errors.NoLicense) as caught:
            client.checkout("MapForce")
        self.assertEqual((caught.exception.code, caught.exception.reason), (404, "no-license"))
        other = hello(self.servers.primary, "m-other")
        self.servers.ok(self.servers.primary.checkout(other, {}))
        with self.assertRaises(errors.NoSeats):
            client.checkout()
        with self.assertRaises(errors.BadRequest):
            client.borrow(days=0)

    def test_connectFails(self) -> None:
        """connect raises NoServerError when no server serves, and leaves nothing open."""
        self.servers.killPrimary()
        self.servers.failover.stopService()
        self.servers.failoverEndpoint.kill()
        with self.assertRaises(errors.NoServerError) as caught:
            connect([PRIMARY, FAILOVER], "XMLSpy", "2025r2", **self.options(wait=0))
        self.assertEqual(len(caught.exception.attempts), 2)

    def test_heartbeatsInBackground(self) -> None:
        """A lease renews itself while the application does other work."""
        client = self.connect()
        lease = client.checkout()
        first = lease.expires
        self.servers.advance(HEARTBEAT + 1)
        self.assertEqual(lease.expires, first + HEARTBEAT)
        self.assertEqual(self.held()[0].expires, lease.expires)

    def test_failoverWithoutApplicationCode(self) -> None:
        """The seat survives the primary's death and return with no call from the application."""
        client = self.connect()
        lease = client.checkout()
        self.servers.advance(2)
        self.servers.killPrimary()
        self.servers.advance(HEARTBEAT + 10)
        self.assertEqual((lease.server, lease.state), (FAILOVER, core.HELD))
        self.servers.revivePrimary()
        self.servers.advance(HEARTBEAT + 5)
        self.assertEqual((lease.server, lease.state), (PRIMARY, core.HELD))
        self.assertEqual([h.id for h in self.held()], [lease.id])
        kinds = [e.kind for e in self.events if e.kind != core.RETRY]
        self.assertEqual(
            kinds, [core.CONNECTED, core.MOVED, core.LEASE_KEPT, core.MOVED, core.LEASE_KEPT]
        )

    def test_releaseAndDetach(self) -> None:
        """release confirms; detach leaves the lease to expire on the server."""
        client = self.connect()
        lease = client.checkout()
        self.assertTrue(lease.release())
        self.assertEqual(self.held(), [])
        kept = client.checkout()
        kept.detach()
        self.assertEqual(kept.state, core.DETACHED)
        self.assertEqual(client.leases, [])
        client.close()
        self.assertEqual([h.id for h in self.held()], [kept.id])
        self.assertTrue(connect(PRIMARY, "XMLSpy", "2025r2", **self.options()).release(kept.id))
        self.assertEqual(self.held(), [])

    def test_closeReleases(self) -> None:
        """close releases the leases the application left open."""
        client = self.connect()
        client.checkout()
        client.close()
        self.assertEqual(self.held(), [])
        with self.assertRaises(errors.ClientClosedError):
            client.checkout()

    def test_borrowAndStatus(self) -> None:
        """A borrowed seat counts until released; heartbeats renew running leases only."""
        client = self.connect()
        borrowed = client.borrow("XMLSpy", 2)
        self.assertEqual(borrowed.server, PRIMARY)
        self.assertTrue(self.held()[0].borrowed)
        self.assertEqual(client.status()["role"], "primary")
        self.assertEqual(client.status_of(FAILOVER)["state"], "standby")
        with self.assertRaises(errors.UnknownLease):
            client.heartbeat()
        other = hello(self.servers.primary, "m-other")
        refused = run(self.servers.primary.checkout(other, {}))
        self.assertEqual(
            self.failureResultOf(refused, wire.ProtocolError).value.reason, "no-seats"
        )
        client.release(borrowed.id)
        lease = client.checkout()
        self.servers.advance(5)
        answer = client.heartbeat()
        self.assertEqual(int(answer["expires"]), int(self.servers.clock.seconds()) + TTL)
        self.assertEqual(lease.state, core.HELD)

    def test_leaseAttributes(self) -> None:
        """A lease shows the values of its grant, read-only."""
        client = self.connect()
        lease = client.checkout(request="k-1")
        self.assertEqual(lease.request, "k-1")
        self.assertEqual(lease.product, "XMLSpy")
        self.assertIn(lease.id, repr(lease))
        self.assertEqual(lease.edition, None)
        self.assertRaises(AttributeError, setattr, lease, "id", "l-forged")


class ReactorThreadTests(unittest.TestCase):
    """The private reactor in its thread."""

    def setUp(self) -> None:
        self.thread = ReactorThread(name="test-client-reactor")
        self.addCleanup(self.thread.stop)

    def test_results(self) -> None:
        """call returns a function's result, a Deferred's result and a coroutine's result."""
        self.assertEqual(self.thread.call(lambda: 7), 7)

        def later() -> defer.Deferred:
            d: defer.Deferred = defer.Deferred()
            self.thread.reactor.callLater(0, d.callback, "later")
            return d

        self.assertEqual(self.thread.call(later), "later")

        async def coroutine() -> str:
            return "awaited"

        self.assertEqual(self.thread.call(coroutine), "awaited")

    def test_errors(self) -> None:
        """call raises what the function raised, or what its Deferred failed with."""

        def boom() -> None:
            raise errors.NoSeats(409, "no-seats")

        self.assertRaises(errors.NoSeats, self.thread.call, boom)
        self.assertRaises(
            errors.UnknownLease,
            self.thread.call,
            lambda: defer.fail(errors.UnknownLease(404, "unknown-lease")),
        )

    def test_notFromItsOwnThread(self) -> None:
        """A call from the reactor thread itself is refused instead of waiting forever."""
        self.assertRaises(RuntimeError, self.thread.call, lambda: self.thread.call(lambda: None))

    def test_timeout(self) -> None:
        """call gives up after its timeout."""
        self.assertRaises(TimeoutError, self.thread.call, lambda: defer.Deferred(), timeout=0.05)

    def test_stop(self) -> None:
        """After stop the thread is gone and calls are refused."""
        self.thread.stop()
        self.assertFalse(self.thread.alive)
        self.assertRaises(errors.ClientClosedError, self.thread.call, lambda: 1)


class RealThreadTests(unittest.TestCase):
    """The blocking client on its real background reactor against a server on 127.0.0.1."""

    def setUp(self) -> None:
        self.thread = ReactorThread(name="test-client-reactor")
        self.addCleanup(self.thread.stop)
        self.role = self.thread.call(lambda: makeRole(FakeStore(), self.thread.reactor))
        self.addCleanup(lambda: self.thread.call(self.role.stopService))
        self.thread.call(lambda: run(self.role.addLicenses(licenseFile({"seats": 1}))))
        self.port = self.thread.call(
            lambda: self.thread.reactor.listenTCP(
                0, LicensingFactory(self.role), interface="127.0.0.1"
            )
        )
        self.addCleanup(lambda: self.thread.call(self.port.stopListening))
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def leases(self) -> list[Any]:
        return self.thread.call(lambda: list(self.role.pool.all("lease")))

    def test_checkoutOverTCP(self) -> None:
        """A checkout over a real socket holds a seat until the with block ends."""
        seen: list[core.Event] = []
        connected = threading.Event()
        statusFromCallback: list[dict] = []

        def onEvent(event: core.Event) -> None:
            seen.append(event)
            if event.kind == core.CONNECTED:
                statusFromCallback.append(client.status())
                connected.set()

        client = Client(self.address, "XMLSpy", "2025r2", runner=self.thread, on_event=onEvent)
        self.addCleanup(client.close)
        with client:
            with client.checkout() as lease:
                self.assertEqual([item.id for item in self.leases()], [lease.id])
                self.assertEqual(lease.server, self.address)
                self.assertTrue(connected.wait(EVENT_TIMEOUT))
        self.assertEqual(self.leases(), [])
        self.assertEqual(statusFromCallback[0]["role"], "primary")
        self.assertEqual([e.kind for e in seen], [core.CONNECTED, core.LEASE_RELEASED])

    def test_refusedPort(self) -> None:
        """A server that is not there is reported as a failed connection."""
        self.thread.call(self.port.stopListening)
        with self.assertRaises(errors.NoServerError) as caught:
            connect(self.address, "XMLSpy", "2025r2", runner=self.thread, wait=0)
        (attempt,) = caught.exception.attempts
        self.assertIsInstance(attempt[1], errors.ConnectFailed)


class ProcessTests(unittest.TestCase):
    """The blocking API in a fresh process."""

    def test_noGlobalReactorAndPromptExit(self) -> None:
        """Using the blocking API installs no global reactor, and the process exits by itself."""
        script = textwrap.dedent(
            """
            import socket, sys
            from licenseserver import client
            s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
            c = client.Client(f"127.0.0.1:{port}", "XMLSpy", "2025r2", wait=0)
            try:
                c.checkout()
            except client.NoServerError as e:
                print("refused", type(e.attempts[0][1]).__name__)
            print("global reactor", "twisted.internet.reactor" in sys.modules)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("refused ConnectFailed", result.stdout)
        self.assertIn("global reactor False", result.stdout)

    def test_publicNames(self) -> None:
        """The package exports the blocking and the Twisted API and every error class."""
        for name in ("Client", "Lease", "connect", "TwistedClient", "TwistedLease", "Event"):
            self.assertTrue(hasattr(licensing, name), name)
        for cls in [*errors.BY_CODE.values(), *errors.BY_REASON.values()]:
            self.assertIs(getattr(licensing, cls.__name__), cls)
