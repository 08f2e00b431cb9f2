"""Tests for licenseserver.client: errors, server order, connections and the Twisted API.

The servers are real roles (a PrimaryRole and a FailoverRole over FakeStores)
behind LicensingFactory, reached through in-memory iosim connections that
move bytes only when the test lets time pass; the client runs on the same
Clock. Killing the primary closes its connections and refuses new ones, as
a SIGKILL does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from licenseserver.client import core, errors
from licenseserver.client.connection import ServerConnection
from licenseserver.client.twisted_api import TwistedClient
from licenseserver.model import Change
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore, PumpEndpoint
from tests.helpers import START, hello, licenseFile, makeRole, run

PRIMARY = "ls1:35355"
FAILOVER = "ls2:35355"
SECRET = "client-test-secret"
LINK_BEAT = 1.0
TAKEOVER = 5.0
TTL = 120
HEARTBEAT = TTL // 4
MACHINE = "m-client"


class FakeServers:
    """A primary and (optionally) its failover on one Clock, reached over iosim pumps.

    Clients reach ``PRIMARY`` and ``FAILOVER`` through ``endpointFor``; the
    failover's link to the primary has an endpoint of its own, so a test
    can cut the link alone (``linkEndpoint.silent``) and have the failover
    miss what the primary does. Any other address refuses connections.
    """

    def __init__(
        self,
        testcase: unittest.TestCase,
        *,
        failover: bool = True,
        seats: int = 1,
        ttl: int = TTL,
    ):
        self.testcase = testcase
        self.ttl = ttl
        self.clock = Clock()
        self.clock.advance(START)
        self.primaryStore = FakeStore()
        self.primary = self._startPrimary()
        self.primaryEndpoint = PumpEndpoint(LicensingFactory(self.primary))
        self.linkEndpoint = PumpEndpoint(LicensingFactory(self.primary))
        self.nowhere = PumpEndpoint(None)
        self.nowhere.up = False
        self.endpoints = {PRIMARY: self.primaryEndpoint}
        self.failover: Any = None
        if failover:
            self.failover = makeRole(
                FakeStore(),
                self.clock,
                cls=FailoverRole,
                serverName="ls2",
                advertise=FAILOVER,
                primaryEndpoint=self.linkEndpoint,
                primaryAddress=PRIMARY,
                heartbeat=LINK_BEAT,
                takeoverAfter=TAKEOVER,
                peerSecret=SECRET,
                leaseTTL=ttl,
            )
            self.failoverEndpoint = PumpEndpoint(LicensingFactory(self.failover))
            self.endpoints[FAILOVER] = self.failoverEndpoint
            testcase.addCleanup(self._stopFailover)
        testcase.addCleanup(lambda: self.primary.stopService())
        (self.licenseId,) = self.ok(self.primary.addLicenses(licenseFile({"seats": seats})))
        self.advance(LINK_BEAT * 2)

    def _startPrimary(self) -> PrimaryRole:
        return makeRole(
            self.primaryStore,
            self.clock,
            cls=PrimaryRole,
            serverName="ls1",
            advertise=PRIMARY,
            peerSecret=SECRET,
            takeoverAfter=TAKEOVER,
            leaseTTL=self.ttl,
        )

    def _stopFailover(self) -> defer.Deferred:
        d = self.failover.stopService()
        self.linkEndpoint.silent = False
        self.flush()
        return d

    def ok(self, coroutine: Any) -> Any:
        return self.testcase.successResultOf(run(coroutine))

    # -- the network

    def endpointFor(self, address: str) -> PumpEndpoint:
        return self.endpoints.get(address, self.nowhere)

    def flush(self) -> None:
        for _ in range(3):
            for endpoint in (self.primaryEndpoint, self.linkEndpoint, *self.endpoints.values()):
                endpoint.flush()

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass, moving bytes as they go."""
        target = self.clock.seconds() + seconds
        self.flush()
        while self.clock.seconds() < target - 1e-9:
            self.clock.advance(min(step, target - self.clock.seconds()))
            self.flush()

    def wait(self, d: defer.Deferred, within: float = 120.0) -> Any:
        """Let time pass until ``d`` fires; return its result or raise its failure."""
        results: list[Any] = []
        d.addBoth(results.append)
        self.flush()
        deadline = self.clock.seconds() + within
        while not results and self.clock.seconds() < deadline:
            self.advance(0.1)
        if not results:
            raise AssertionError(f"nothing happened within {within} s")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    # -- server life

    def killPrimary(self) -> None:
        """The primary process dies: its connections close, new ones are refused."""
        self.primary.stopService()
        self.primaryEndpoint.kill()
        self.linkEndpoint.kill()

    def revivePrimary(self) -> None:
        """The primary starts again on the same data."""
        self.primary = self._startPrimary()
        self.primaryEndpoint.revive(LicensingFactory(self.primary))
        self.linkEndpoint.revive(LicensingFactory(self.primary))

    def takeOver(self) -> None:
        """Kill the primary and let the failover take over."""
        self.killPrimary()
        self.advance(TAKEOVER + LINK_BEAT)
        assert self.failover.state == "active"

    # -- what the servers hold

    def liveLeases(self, role: Any, machine: str = MACHINE) -> list[Any]:
        now = role.now()
        return [
            lease
            for lease in role.pool.all("lease")
            if lease.machine == machine and lease.live(now)
        ]


class ClientTestCase(unittest.TestCase):
    """A TwistedClient of machine ``MACHINE`` against FakeServers."""

    failover = True
    seats = 1

    def setUp(self) -> None:
        self.servers = FakeServers(self, failover=self.failover, seats=self.seats)
        self.events: list[core.Event] = []

    def makeClient(self, servers: Any = (PRIMARY,), **kw: Any) -> TwistedClient:
        options: dict[str, Any] = dict(
            machine=MACHINE,
            host="ws1",
            user="anna",
            reactor=self.servers.clock,
            endpoint_for=self.servers.endpointFor,
            on_event=self.events.append,
        )
        options.update(kw)
        product = options.pop("product", "XMLSpy")
        version = options.pop("version", "2025r2")
        client = TwistedClient(list(servers), product, version, **options)
        self.addCleanup(lambda: self.servers.wait(client.close()))
        return client

    def wait(self, d: defer.Deferred, within: float = 120.0) -> Any:
        return self.servers.wait(d, within)

    def fails(self, d: defer.Deferred, cls: type[BaseException]) -> BaseException:
        try:
            self.wait(d)
        except cls as e:
            return e
        self.fail(f"expected {cls.__name__}")

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def eventsOf(self, kind: str) -> list[core.Event]:
        return [event for event in self.events if event.kind == kind]

    def clearEvents(self) -> None:
        del self.events[:]


class ErrorTests(unittest.TestCase):
    """Every ERR becomes a typed exception."""

    def test_everyReasonHasItsCode(self) -> None:
        """Each reason of the protocol maps to a class whose code is the reason's code."""
        for reason, code in wire.REASONS.items():
            cls = errors.error_class(code, reason)
            self.assertTrue(issubclass(cls, errors.BY_CODE[code]), reason)
            self.assertEqual(cls.code, code)
        for reason, cls in errors.BY_REASON.items():
            self.assertEqual(wire.REASONS[reason], cls.code, reason)

    def test_fromResponse(self) -> None:
        """An ERR line gives an exception with code, reason, message, arguments and server."""
        response = wire.parse_response(b'ERR 409 no-seats message="all 5 seats in use" n=1')
        e = errors.error_from_response(response, "ls1:35355")
        self.assertIsInstance(e, errors.NoSeats)
        self.assertIsInstance(e, errors.Conflict)
        self.assertEqual((e.code, e.reason, e.message), (409, "no-seats", "all 5 seats in use"))
        self.assertEqual(e.arguments, {"n": "1"})
        self.assertEqual(e.server, "ls1:35355")
        self.assertEqual(str(e), "409 no-seats: all 5 seats in use (from ls1:35355)")

    def test_unknownReasons(self) -> None:
        """An unknown reason gets its code's class; an unknown code the base class."""
        e = errors.error_from_response(wire.parse_response(b"ERR 404 no-such-thing"))
        self.assertEqual(type(e), errors.NotFound)
        self.assertEqual(e.reason, "no-such-thing")
        e = errors.error_from_response(wire.parse_response(b"ERR 418 teapot"))
        self.assertEqual(type(e), errors.ServerError)
        self.assertEqual(e.code, 418)

    def test_standbyNamesPrimary(self) -> None:
        """A standby error tells the primary's address, or None for none."""
        e = errors.error_from_response(wire.parse_response(b"ERR 503 standby primary=ls1:1"))
        self.assertEqual(e.primary, "ls1:1")
        e = errors.error_from_response(wire.parse_response(b"ERR 503 standby primary=none"))
        self.assertIsNone(e.primary)

    def test_noServerListsAttempts(self) -> None:
        """NoServerError says what each server did."""
        e = errors.NoServerError(
            [
                ("a:1", errors.ConnectFailed("a:1", "refused")),
                ("b:1", errors.Standby(503, "standby", None, {}, "b:1")),
            ]
        )
        self.assertIn("a:1: refused", str(e))
        self.assertIn("b:1: 503 standby", str(e))


class ServerListTests(unittest.TestCase):
    """The order in which servers are tried."""

    def test_normalize(self) -> None:
        """Addresses get the default port; IPv6 keeps its brackets; junk is refused."""
        self.assertEqual(core.normalize_address("ls1"), "ls1:35355")
        self.assertEqual(core.normalize_address(" ls1:7 "), "ls1:7")
        self.assertEqual(core.normalize_address("[::1]:9"), "[::1]:9")
        self.assertRaises(ValueError, core.normalize_address, "a b")
        self.assertRaises(ValueError, core.ServerList, [])

    def test_roundOrder(self) -> None:
        """A round tries the current server first, then the others in order, each once."""
        servers = core.ServerList(["a", "b", "a:35355", "c"])
        self.assertEqual(servers.addresses, ["a:35355", "b:35355", "c:35355"])
        servers.current = "b:35355"
        self.assertEqual(list(servers.round()), ["b:35355", "a:35355", "c:35355"])

    def test_preferDuringRound(self) -> None:
        """A server named during a round is tried next; if already tried, first next round."""
        servers = core.ServerList(["a", "b"])
        tried = []
        for address in servers.round():
            tried.append(address)
            if address == "a:35355":
                servers.prefer("z:1")
            if address == "b:35355":
                servers.prefer("a")
        self.assertEqual(tried, ["a:35355", "z:1", "b:35355"])
        self.assertEqual(next(servers.round()), "a:35355")

    def test_learn(self) -> None:
        """Learnt servers join the list; none and junk are ignored."""
        servers = core.ServerList(["a"])
        self.assertEqual(servers.learn("f:2"), "f:2")
        self.assertIsNone(servers.learn("none"))
        self.assertIsNone(servers.learn(""))
        self.assertIsNone(servers.learn("bad address"))
        self.assertEqual(servers.addresses, ["a:35355", "f:2"])


class IdentityTests(unittest.TestCase):
    """What HELLO says about the machine."""

    def test_machineIdStable(self) -> None:
        """The default machine id is the same each time and fits the protocol."""
        first = core.default_machine_id()
        self.assertEqual(first, core.default_machine_id())
        self.assertTrue(1 <= len(first) <= 128 and first.isprintable())

    def test_helloArguments(self) -> None:
        """HELLO has product, version, host, machine and user; cores only when given."""
        args = core.hello_arguments("XMLSpy", "2025r2", machine="m", host="h", user="u")
        self.assertEqual(
            args,
            {"product": "XMLSpy", "version": "2025r2", "host": "h", "machine": "m", "user": "u"},
        )
        self.assertEqual(core.hello_arguments("P", "1.5", cores=8)["cores"], 8)
        self.assertRaises(ValueError, core.hello_arguments, "", "1.5")

    def test_requestKeysFresh(self) -> None:
        """Each checkout gets a request key of its own."""
        self.assertNotEqual(core.new_request_key(), core.new_request_key())


class ConnectionTests(unittest.TestCase):
    """ServerConnection matches answers to requests and fails cleanly."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.connection = ServerConnection("ls1:35355", self.clock, 10.0)
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def test_answersInOrder(self) -> None:
        """Pipelined requests get their answers in order; ERR fails with its class."""
        first = self.connection.request("PING")
        second = self.connection.request("CHECKOUT", {"product": "X", "edition": None})
        self.assertEqual(self.transport.value(), b"PING\nCHECKOUT product=X\n")
        self.connection.dataReceived(b'OK\nERR 409 no-seats message="full"\n')
        self.assertEqual(self.successResultOf(first), {})
        failure = self.failureResultOf(second, errors.NoSeats)
        self.assertEqual(failure.value.message, "full")
        self.assertEqual(failure.value.server, "ls1:35355")
        self.assertTrue(self.connection.usable)

    def test_timeout(self) -> None:
        """No answer in time fails that request and those behind it, and drops the line."""
        first = self.connection.request("PING")
        self.clock.advance(5)
        second = self.connection.request("PING")
        self.clock.advance(5)
        self.failureResultOf(first, errors.ServerTimeout)
        self.failureResultOf(second, errors.ServerTimeout)
        self.assertFalse(self.connection.usable)
        self.assertTrue(self.transport.disconnecting)
        self.failureResultOf(self.connection.request("PING"), errors.ServerTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_junk(self) -> None:
        """A line that is no response, or one nobody asked for, is a protocol violation."""
        d = self.connection.request("PING")
        self.connection.dataReceived(b"HELLO there\n")
        self.failureResultOf(d, errors.ProtocolViolation)
        self.assertTrue(self.transport.disconnecting)
        other = ServerConnection("x:1", self.clock, 10.0)
        other.makeConnection(StringTransport())
        other.dataReceived(b"OK\n")
        self.failureResultOf(other.request("PING"), errors.ProtocolViolation)

    def test_lost(self) -> None:
        """A closed connection fails what waits with ConnectionLost and tells its owner."""
        lost = []
        self.connection.onLost = lost.append
        d = self.connection.request("PING")
        self.connection.connectionLost(Failure(error.ConnectionDone()))
        self.failureResultOf(d, errors.ConnectionLost)
        self.assertEqual(lost, [self.connection])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SessionTests(ClientTestCase):
    """HELLO, status and the errors a primary gives."""

    def test_connect(self) -> None:
        """connect says HELLO and learns the failover and the heartbeat interval."""
        client = self.makeClient()
        answer = self.wait(client.connect())
        self.assertEqual(answer["server"], "ls1")
        self.assertEqual(answer["address"], PRIMARY)
        self.assertEqual(answer["failover"], FAILOVER)
        self.assertEqual(client.servers.addresses, [PRIMARY, FAILOVER])
        self.assertEqual(client.heartbeat_interval, HEARTBEAT)
        self.assertEqual(client.server, PRIMARY)
        self.assertEqual(self.kinds(), [core.CONNECTED])
        self.assertEqual(self.events[0].server, PRIMARY)
        registered = self.servers.primary.pool.clientByMachine(MACHINE)
        self.assertEqual(registered.host, "ws1")

    def test_badVersionRaises(self) -> None:
        """A HELLO the server cannot accept raises at once, without trying other servers."""
        client = self.makeClient(version="not a version")
        e = self.fails(client.connect(), errors.BadRequest)
        self.assertEqual(e.reason, "bad-request")
        self.assertNotIn(core.RETRY, self.kinds())

    def test_status(self) -> None:
        """status gives the session server's STATUS; status_of asks any server without HELLO."""
        client = self.makeClient()
        status = self.wait(client.status())
        self.assertEqual((status["role"], status["state"]), ("primary", "active"))
        other = self.wait(client.status_of(FAILOVER))
        self.assertEqual((other["role"], other["state"]), ("failover", "standby"))
        self.assertEqual(other["address"], FAILOVER)

    def test_noLicense(self) -> None:
        """Checking out a product without a license raises NoLicense with the server's text."""
        client = self.makeClient()
        e = self.fails(client.checkout("MapForce"), errors.NoLicense)
        self.assertEqual((e.code, e.reason, e.server), (404, "no-license", PRIMARY))
        self.assertTrue(e.message)

    def test_noSeats(self) -> None:
        """When every seat is taken by others, checkout raises NoSeats."""
        other = hello(self.servers.primary, "m-other")
        self.servers.ok(self.servers.primary.checkout(other, {}))
        client = self.makeClient()
        e = self.fails(client.checkout(), errors.NoSeats)
        self.assertEqual(e.code, 409)
        self.assertEqual(client.leases, [])

    def test_closedClient(self) -> None:
        """After close, calls fail with ClientClosedError."""
        client = self.makeClient()
        self.wait(client.connect())
        self.wait(client.close())
        self.fails(client.checkout(), errors.ClientClosedError)
        self.assertIsNone(client.server)

    def test_noServer(self) -> None:
        """With no server up, connect retries for ``wait`` seconds, then lists each failure."""
        self.servers.killPrimary()
        self.servers.failover.stopService()
        self.servers.failoverEndpoint.kill()
        client = self.makeClient((PRIMARY, FAILOVER), wait=5, retry_delay=1)
        started = self.servers.clock.seconds()
        e = self.fails(client.connect(), errors.NoServerError)
        self.assertEqual([a for a, _ in e.attempts], [PRIMARY, FAILOVER])
        self.assertIsInstance(e.attempts[0][1], errors.ConnectFailed)
        self.assertLessEqual(self.servers.clock.seconds() - started, 5.5)
        self.assertGreaterEqual(len(self.eventsOf(core.RETRY)), 8)

    def test_callbackErrorsLogged(self) -> None:
        """A failing on_event callback is logged and changes nothing."""

        def broken(event: core.Event) -> None:
            raise RuntimeError("application bug")

        client = self.makeClient(on_event=broken)
        self.wait(client.connect())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(client.server, PRIMARY)


class LeaseTests(ClientTestCase):
    """Checkout, heartbeats, release and borrow at a primary."""

    seats = 2

    def test_checkout(self) -> None:
        """checkout gives a lease with the grant's values; the server holds it with its key."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        self.assertEqual(lease.license, self.servers.licenseId)
        self.assertEqual(lease.kind, "concurrent")
        self.assertEqual(lease.ttl, TTL)
        self.assertEqual(lease.server, PRIMARY)
        self.assertEqual(lease.state, core.HELD)
        self.assertTrue(lease.valid)
        (held,) = self.servers.liveLeases(self.servers.primary)
        self.assertEqual(held.id, lease.id)
        self.assertEqual(held.request, lease.request)
        self.assertEqual(client.leases, [lease])

    def test_heartbeatsItself(self) -> None:
        """A lease heartbeats at the interval the server asked for, with no call from the app."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        granted = self.servers.primary.pool.lease(lease.id).expires
        self.servers.advance(HEARTBEAT - 1)
        self.assertEqual(self.servers.primary.pool.lease(lease.id).expires, granted)
        self.servers.advance(1.5)
        renewed = self.servers.primary.pool.lease(lease.id).expires
        self.assertEqual(renewed, granted + HEARTBEAT)
        self.assertEqual(lease.expires, renewed)
        self.servers.advance(TTL * 5)
        self.assertEqual(len(self.servers.liveLeases(self.servers.primary)), 1)
        self.assertEqual(self.kinds(), [core.CONNECTED])

    def test_sameRequestSameLease(self) -> None:
        """Two checkouts with one request key get one lease."""
        client = self.makeClient()
        first = self.wait(client.checkout(request="job-7"))
        second = self.wait(client.checkout(request="job-7"))
        self.assertEqual(first.id, second.id)
        self.assertEqual(len(self.servers.liveLeases(self.servers.primary)), 1)

    def test_release(self) -> None:
        """release frees the seat at once and stops the heartbeats."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        self.assertTrue(self.wait(lease.release()))
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])
        self.assertEqual(lease.state, core.RELEASED)
        self.assertFalse(lease.valid)
        self.assertEqual(client.leases, [])
        (released,) = self.eventsOf(core.LEASE_RELEASED)
        self.assertTrue(released.details["confirmed"])
        self.servers.advance(HEARTBEAT * 2)
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])

    def test_asyncContextManagers(self) -> None:
        """``async with`` opens the client and releases the lease on the way out."""
        client = self.makeClient()

        async def application() -> str:
            async with client:
                async with await client.checkout() as lease:
                    self.assertEqual(len(self.servers.liveLeases(self.servers.primary)), 1)
                    return lease.id

        self.wait(defer.Deferred.fromCoroutine(application()))
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])
        self.assertTrue(client.closed)

    def test_closeReleasesAll(self) -> None:
        """close releases every lease the client keeps."""
        client = self.makeClient()
        self.wait(client.checkout())
        self.wait(client.checkout("XMLSpy", request="second"))
        self.assertEqual(len(self.servers.liveLeases(self.servers.primary)), 2)
        self.wait(client.close())
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])
        self.assertEqual(len(self.eventsOf(core.LEASE_RELEASED)), 2)

    def test_detach(self) -> None:
        """A detached lease stays on the server until it expires; nothing heartbeats it."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        lease.detach()
        self.wait(client.close())
        self.assertEqual(len(self.servers.liveLeases(self.servers.primary)), 1)
        self.servers.advance(TTL + 1)
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])

    def test_heartbeatAndReleaseById(self) -> None:
        """A lease of an earlier run is heartbeated and released by id; an unknown id raises."""
        first = self.makeClient()
        lease = self.wait(first.checkout())
        lease.detach()
        self.wait(first.close())
        again = self.makeClient()
        self.servers.advance(10)
        answer = self.wait(again.heartbeat(lease.id))
        self.assertEqual(int(answer["expires"]), int(self.servers.clock.seconds()) + TTL)
        self.assertTrue(self.wait(again.release(lease.id)))
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])
        e = self.fails(again.release(lease.id), errors.UnknownLease)
        self.assertEqual(e.code, 404)

    def test_borrow(self) -> None:
        """borrow takes a seat for days; release by id gives it back."""
        client = self.makeClient()
        borrowed = self.wait(client.borrow(days=3))
        self.assertEqual(borrowed.expires, int(self.servers.clock.seconds()) + 3 * 86400)
        self.assertEqual(borrowed.server, PRIMARY)
        (held,) = self.servers.liveLeases(self.servers.primary)
        self.assertTrue(held.borrowed)
        self.fails(client.borrow("XMLSpy", 365), errors.BadRequest)
        self.assertRaises(TypeError, client.borrow, "XMLSpy")
        self.wait(client.release(borrowed.id))
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])


class FailoverTests(ClientTestCase):
    """The client follows the servers through a takeover and a handback."""

    def test_keptAtFailover(self) -> None:
        """When the primary dies, the lease is heartbeated at the failover under the same id."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        leaseId = lease.id
        self.servers.advance(LINK_BEAT * 2)
        self.clearEvents()
        self.servers.killPrimary()
        self.servers.advance(HEARTBEAT + TAKEOVER + 3)
        self.assertEqual(lease.id, leaseId)
        self.assertEqual(lease.server, FAILOVER)
        self.assertEqual(lease.state, core.HELD)
        self.assertEqual(client.server, FAILOVER)
        (held,) = self.servers.liveLeases(self.servers.failover)
        self.assertEqual(held.id, leaseId)
        kinds = self.kinds()
        self.assertIn(core.RETRY, kinds)
        self.assertEqual([k for k in kinds if k != core.RETRY][:2], [core.MOVED, core.LEASE_KEPT])
        moved = self.eventsOf(core.MOVED)[0]
        self.assertEqual((moved.details["from"], moved.server), (PRIMARY, FAILOVER))
        self.assertNotIn(core.LEASE_LOST, kinds)
        self.servers.advance(HEARTBEAT * 3)
        self.assertEqual(self.servers.failover.pool.lease(leaseId).expires, lease.expires)

    def test_backToPrimary(self) -> None:
        """When the primary returns, the failover's 503 sends the lease back to it."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        self.servers.advance(LINK_BEAT * 2)
        self.servers.takeOver()
        self.servers.advance(HEARTBEAT + 2)
        self.assertEqual(lease.server, FAILOVER)
        self.clearEvents()
        self.servers.revivePrimary()
        self.servers.advance(LINK_BEAT * 2)
        self.assertEqual(self.servers.failover.state, "standby")
        self.servers.advance(HEARTBEAT + 1)
        self.assertEqual(lease.server, PRIMARY)
        self.assertEqual(client.server, PRIMARY)
        kinds = self.kinds()
        self.assertEqual(kinds[0], core.RETRY)
        self.assertIsInstance(self.events[0].error, errors.Standby)
        self.assertEqual(kinds[1:], [core.MOVED, core.LEASE_KEPT])
        (held,) = self.servers.liveLeases(self.servers.primary)
        self.assertEqual(held.id, lease.id)

    def test_unknownAtFailoverReacquired(self) -> None:
        """A lease the failover never synced is checked out there again with the same key;
        at handback the primary takes the failover's lease in place of its own of that key
        (FAILOVER.md rule 14): the client keeps the lease it holds, and no server holds two
        leases of one key."""
        client = self.makeClient()
        self.wait(client.connect())
        self.servers.linkEndpoint.silent = True
        lease = self.wait(client.checkout())
        first = lease.id
        self.servers.killPrimary()
        self.servers.advance(TAKEOVER + HEARTBEAT + 3)
        self.assertNotEqual(lease.id, first)
        self.assertEqual(lease.server, FAILOVER)
        (reacquired,) = self.eventsOf(core.LEASE_REACQUIRED)
        self.assertEqual((reacquired.details["previous"], reacquired.lease), (first, lease.id))
        (atFailover,) = self.servers.liveLeases(self.servers.failover)
        self.assertEqual(atFailover.request, lease.request)
        self.clearEvents()
        self.servers.revivePrimary()
        self.servers.advance(LINK_BEAT * 2 + HEARTBEAT + 1)
        self.assertEqual(lease.server, PRIMARY)
        self.assertEqual(lease.id, reacquired.lease)
        self.assertEqual(self.eventsOf(core.LEASE_REACQUIRED), [])
        (atPrimary,) = self.servers.liveLeases(self.servers.primary)
        self.assertEqual(atPrimary.id, reacquired.lease)
        self.assertEqual(self.servers.liveLeases(self.servers.failover)[0].id, reacquired.lease)

    def test_grantedInCutKeptThroughHandback(self) -> None:
        """A cut between the servers: a client that reaches only the failover checks out
        there; when the link heals the failover hands its leases to the primary (rule 14),
        and the client follows its 503 to the primary under the same lease id, its lease
        valid at every step and no error or lost lease reported to the application."""
        client = self.makeClient((FAILOVER, PRIMARY))
        self.servers.linkEndpoint.silent = True
        self.servers.advance(TAKEOVER + LINK_BEAT * 2)
        self.assertEqual(self.servers.failover.state, "active")
        lease = self.wait(client.checkout())
        self.assertEqual(lease.server, FAILOVER)
        granted = lease.id
        self.assertEqual(self.servers.liveLeases(self.servers.primary), [])
        states = []
        self.servers.linkEndpoint.silent = False
        self.servers.linkEndpoint.flush()
        for _ in range(int((HEARTBEAT + LINK_BEAT * 4) / 0.5)):
            self.servers.advance(0.5)
            states.append(lease.state)
        self.assertEqual(self.servers.failover.state, "standby")
        self.assertEqual((lease.server, lease.id), (PRIMARY, granted))
        self.assertTrue(all(state in core.VALID_STATES for state in states), states)
        kinds = self.kinds()
        self.assertIn(core.LEASE_KEPT, kinds)
        for bad in (core.LEASE_LOST, core.LEASE_REACQUIRED, core.GRACE):
            self.assertNotIn(bad, kinds)
        (held,) = self.servers.liveLeases(self.servers.primary)
        self.assertEqual(held.id, granted)
        self.servers.advance(HEARTBEAT * 2)
        self.assertEqual(lease.state, core.HELD)
        self.assertEqual(self.servers.primary.pool.lease(granted).expires, lease.expires)

    def test_standbyNamesPrimary(self) -> None:
        """A client given only the failover is sent to the primary by its 503."""
        client = self.makeClient((FAILOVER,))
        answer = self.wait(client.connect())
        self.assertEqual(answer["address"], PRIMARY)
        self.assertEqual(self.kinds(), [core.RETRY, core.CONNECTED])
        self.assertIsInstance(self.events[0].error, errors.Standby)
        self.assertEqual(client.servers.addresses, [FAILOVER, PRIMARY])

    def test_checkoutWaitsForTakeover(self) -> None:
        """A checkout while the primary is dead and the failover in standby waits for it."""
        client = self.makeClient(wait=TAKEOVER * 3)
        self.wait(client.connect())
        self.servers.killPrimary()
        lease = self.wait(client.checkout())
        self.assertEqual(lease.server, FAILOVER)
        self.assertEqual(len(self.servers.liveLeases(self.servers.failover)), 1)
        retries = self.eventsOf(core.RETRY)
        self.assertIsInstance(retries[0].error, errors.ConnectFailed)
        self.assertTrue([e for e in retries if isinstance(e.error, errors.Standby)])
        self.assertEqual(self.kinds()[-1], core.MOVED)

    def test_silentPrimary(self) -> None:
        """A primary that stops answering (no close, no refusal) is left after the timeout."""
        client = self.makeClient(request_timeout=3)
        lease = self.wait(client.checkout())
        self.servers.advance(LINK_BEAT * 2)
        self.servers.primaryEndpoint.silent = True
        self.servers.linkEndpoint.silent = True
        self.servers.advance(HEARTBEAT + TAKEOVER + 8)
        self.assertEqual(lease.server, FAILOVER)
        self.assertEqual(lease.state, core.HELD)
        failed = self.eventsOf(core.HEARTBEAT_FAILED)
        self.assertIsInstance(failed[0].error, errors.ServerTimeout)

    def test_borrowRefusedByFailover(self) -> None:
        """An active failover refuses BORROW with BorrowDisabled."""
        client = self.makeClient()
        self.wait(client.connect())
        self.servers.takeOver()
        e = self.fails(client.borrow(days=2), errors.BorrowDisabled)
        self.assertEqual((e.code, e.server), (403, FAILOVER))

    def test_tooOldForFailover(self) -> None:
        """A product too old for the failover is refused there; the client reports and retries."""
        client = self.makeClient(version="2015", wait=2)
        self.wait(client.connect())
        self.servers.takeOver()
        e = self.fails(client.status(), errors.NoServerError)
        tooOld = [a for a in e.attempts if isinstance(a[1], errors.ClientTooOld)]
        self.assertTrue(tooOld)
        self.assertEqual(tooOld[0][1].minimum, "2015r3")


class GraceTests(ClientTestCase):
    """What the application is told when no server grants the seat."""

    seats = 1

    def deadServers(self, client: TwistedClient) -> Any:
        lease = self.wait(client.checkout())
        self.servers.killPrimary()
        self.servers.failover.stopService()
        self.servers.failoverEndpoint.kill()
        self.clearEvents()
        return lease

    def test_lostWithoutGrace(self) -> None:
        """With no server, the lease is renewing until it expires, then lost at once."""
        client = self.makeClient(retry_delay=5)
        lease = self.deadServers(client)
        expiry = lease.valid_until
        self.servers.advance(HEARTBEAT + 1)
        self.assertEqual(lease.state, core.RENEWING)
        self.assertTrue(lease.valid)
        self.assertIn(core.HEARTBEAT_FAILED, self.kinds())
        self.servers.advance(expiry - self.servers.clock.seconds() - 0.05)
        self.assertTrue(lease.valid)
        self.servers.advance(0.1)
        self.assertEqual(lease.state, core.LOST)
        self.assertFalse(lease.valid)
        self.assertNotIn(core.GRACE, self.kinds())
        self.assertEqual(len(self.eventsOf(core.LEASE_LOST)), 1)

    def test_grace(self) -> None:
        """With a grace period, the lease stays valid for it after expiry, then is lost."""
        client = self.makeClient(grace=60)
        lease = self.deadServers(client)
        expiry = lease.valid_until
        self.servers.advance(expiry - self.servers.clock.seconds() + 0.05)
        self.assertEqual(lease.state, core.IN_GRACE)
        self.assertTrue(lease.valid)
        (grace,) = self.eventsOf(core.GRACE)
        self.assertEqual(grace.details["until"], expiry + 60)
        self.servers.advance(59.8)
        self.assertTrue(lease.valid)
        self.servers.advance(0.3)
        self.assertEqual(lease.state, core.LOST)
        self.assertEqual(self.kinds().count(core.LEASE_LOST), 1)

    def test_regainedAfterLoss(self) -> None:
        """A lost lease is checked out again with its key once a server grants it."""
        client = self.makeClient()
        lease = self.deadServers(client)
        # Past the latest end a restarted server counts a stored lease live until.
        self.servers.advance(TTL + TTL // 2 + 5)
        self.assertEqual(lease.state, core.LOST)
        self.servers.revivePrimary()
        self.servers.advance(HEARTBEAT * 2)
        self.assertEqual(lease.state, core.HELD)
        self.assertTrue(self.eventsOf(core.LEASE_REACQUIRED))
        (held,) = self.servers.liveLeases(self.servers.primary)
        self.assertEqual((held.id, held.request), (lease.id, lease.request))

    def test_seatTakenMeanwhile(self) -> None:
        """When the server forgot the lease and another machine took the seat, the seat is lost;
        it comes back once the other machine releases."""
        client = self.makeClient()
        lease = self.wait(client.checkout())
        primary = self.servers.primary
        self.servers.ok(primary.commit([Change.delete(primary.pool.lease(lease.id))]))
        other = hello(primary, "m-other")
        taken = self.servers.ok(primary.checkout(other, {}))
        self.servers.advance(HEARTBEAT + 1)
        self.assertEqual(lease.state, core.LOST)
        failed = self.eventsOf(core.HEARTBEAT_FAILED)
        self.assertIsInstance(failed[-1].error, errors.NoSeats)
        self.assertEqual(self.kinds()[-1], core.LEASE_LOST)
        self.servers.ok(primary.release(other, {"lease": taken["lease"]}))
        self.servers.advance(HEARTBEAT * 2)
        self.assertEqual(lease.state, core.HELD)
        self.assertEqual(self.kinds()[-1], core.LEASE_REACQUIRED)
