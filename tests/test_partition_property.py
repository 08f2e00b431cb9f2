"""Random interleavings never put more than N seats of an exact license in use (FAILOVER.md 14-18).

A primary and a failover run on one Clock, linked through a ``PumpEndpoint``
as in ``PairTestCase``. They share one license of N = 5 seats under the
``exact`` policy with a failover share E = 2. Eight client machines run an
application each; hypothesis chooses the steps: applications start (and
check out), release and exit, or crash; time passes (below and beyond the
heartbeat, the takeover time and the lease time); the link between the
servers is cut and healed; clients reach both servers, one or none; either
server restarts from its own store.

A running client does what the client SDK does (``client.twisted_api``):

- it sends a request to the server of its last session first, and to the
  other one when that cannot be reached or answers ``503 standby``;
- it checks out with one request key for the whole run, at its start and,
  while it has no seat, every heartbeat interval (30 s, a quarter of the
  lease time), as an application waiting for a seat does;
- holding a lease, it heartbeats it every 30 s, and a second after a
  heartbeat that reached no server; it heartbeats a lease whose end has
  passed all the same (the SDK keeps doing so), and answers ``404
  unknown-lease`` with a CHECKOUT under the same key at the same server;
- it waits for an answer the primary holds back (the grant of one of the
  last E seats waits for the failover's acknowledgement) up to
  ``REQUEST_TIMEOUT``, and not at all once that server has died.

**Holding a seat.** A client holds a seat from the moment a server answers
OK to its CHECKOUT, or to a HEARTBEAT of its lease, until the first of:
its application sends RELEASE or crashes; a server answers a HEARTBEAT of
the lease with an error; the clock reaches the ``expires`` of the last OK
answer (from then on the lease may have ended by silence). The invariant,
checked after every step and at every moment at which anything is
scheduled while time passes: at most N clients hold a seat. Besides, each
server's own pool never has more than N holders of live leases (the
failover's only while it serves: in standby it holds a mirror that may be
stale), and the primary never says that the license is over-allocated. An
answer no client expects (an error other than ``no-seats`` to a CHECKOUT,
other than ``unknown-lease`` to a HEARTBEAT) fails the test too.

A restart is a crash of the server's process (after a clean
``stopService``, in some steps): everything its clock had scheduled is
dropped, its ends of the link read nothing more and close, and a new role
starts at once from the same ``FakeStore``. A cut moves nothing: what was
sent on a connection arrives once the link is healed, and no new connection
gets through while it lasts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.wire import ProtocolError
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore, PumpEndpoint
from tests.helpers import START, hello, licenseFile, makeRole, run
from tests.test_failover import HEARTBEAT, SECRET, TAKEOVER
from tests.test_partition import EXACT, TTL

N = EXACT["seats"]
MACHINES = [f"m{i}" for i in range(8)]
INTERVAL = TTL // 4
"""How often a client heartbeats (the interval HELLO names) or asks again for a seat."""
RETRY = 1.0
"""How soon a client tries again when no server took its heartbeat (the SDK's retry delay)."""
REQUEST_TIMEOUT = 10.0
"""How long a client waits for an answer (the SDK's request timeout)."""

PRIMARY, FAILOVER = "primary", "failover"
OTHER = {PRIMARY: FAILOVER, FAILOVER: PRIMARY}
ROUTES = {"both": (PRIMARY, FAILOVER), PRIMARY: (PRIMARY,), FAILOVER: (FAILOVER,), "none": ()}
"""Which servers a client can reach."""

PAUSES = (0.5, HEARTBEAT + 0.05, TAKEOVER / 2 + 0.5, TAKEOVER + 0.5, 30.0, TTL / 2 + 1, TTL + 1)
"""Times that pass in one step: around a heartbeat, the takeover time, the lease time."""
NEAR_END = (-2.0, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5)
"""Offsets, for ``nearEnd`` steps, from the soonest end of a lease still ahead."""


class Process:
    """The clock of one run of a server: its crash drops everything it had scheduled."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.dead = False
        self._calls: list[Any] = []

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        call = self.clock.callLater(delay, f, *args, **kw)
        if self.dead:
            call.cancel()
            return call
        if len(self._calls) > 64:
            self._calls = [c for c in self._calls if c.active()]
        self._calls.append(call)
        return call

    def getDelayedCalls(self) -> list[Any]:
        return [c for c in self._calls if c.active()]

    def die(self) -> None:
        self.dead = True
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []


class CutLink(PumpEndpoint):
    """The servers' link: while it is cut, a new connection gets nowhere, as a TCP
    connection's first packets would not; one already open keeps what is sent on it."""

    def connect(self, factory: Any) -> defer.Deferred:
        if self.silent:
            return defer.fail(error.NoRouteError("the link between the servers is cut"))
        return super().connect(factory)


class Deaf(Protocol):
    """A dead process's end of a connection: it reads nothing and answers nothing."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        pass


@dataclass
class Client:
    """A machine whose application uses the license through the SDK."""

    machine: str
    keys: Any
    route: str = "both"
    current: str = PRIMARY
    running: bool = False
    key: str = ""
    """The request key of the application's run."""
    lease: str | None = None
    """The lease the client keeps: held, or lost by its end passing (heartbeated all the same)."""
    expires: int = 0
    """The end of the seat as the last OK answer said."""
    holding: bool = False
    due: float | None = None
    """When the SDK's timer makes it heartbeat or ask for a seat next."""
    unheard: bool = False
    """Whether its last heartbeat reached no server."""
    pending: tuple[defer.Deferred, float, Any] | None = None
    """A CHECKOUT not answered yet: its Deferred, when it was sent, and the server's role."""
    sessions: dict[Any, Any] = field(default_factory=dict)
    """The client's session at each server (each run of it), opened with HELLO."""

    def holds(self, now: float) -> bool:
        return self.holding and now < self.expires

    def reaches(self, server: str) -> bool:
        return server in ROUTES[self.route]


def fired(d: defer.Deferred) -> tuple[bool, Any]:
    """Whether ``d`` has fired, and then its result (a Failure for an error, which is
    taken from ``d``); ``d`` keeps its result while it has not fired."""
    results: list[Any] = []

    def keep(result: Any) -> Any:
        results.append(result)
        return result

    d.addBoth(keep)
    if not results:
        return False, None
    d.addErrback(lambda failure: None)
    return True, results[0]


class Pair:
    """A primary, its failover, one exact license and the clients, on one Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.tokens = itertools.count(1)
        self.trace: list[str] = []
        self.problems: list[str] = []
        self.stores = {PRIMARY: FakeStore(), FAILOVER: FakeStore()}
        self.processes: dict[str, Process] = {}
        self.roles: dict[str, Any] = {}
        self.roles[PRIMARY] = self.startServer(PRIMARY)
        self.endpoint = CutLink(LicensingFactory(self.roles[PRIMARY]))
        self.roles[FAILOVER] = self.startServer(FAILOVER)
        self.endpoint.flush()
        (self.lid,) = self.result(run(self.roles[PRIMARY].addLicenses(licenseFile(EXACT))))
        keys = (f"r-{n}" for n in itertools.count(1))
        self.clients = [Client(machine, keys) for machine in MACHINES]
        self.states: tuple[str, bool] | None = None
        self.leases: set[str] = set()
        self.advance(2 * HEARTBEAT + 0.1)
        self.trace.clear()

    # The servers

    def startServer(self, which: str) -> Any:
        """Start a run of the primary or the failover over its store. Lease ids say where
        a lease was granted: ``l-p...`` at the primary, ``l-f...`` at the failover."""
        process = self.processes[which] = Process(self.clock)
        options: dict[str, Any] = dict(
            newToken=lambda: f"{which[0]}{next(self.tokens)}",
            peerSecret=SECRET,
            takeoverAfter=TAKEOVER,
        )
        if which == PRIMARY:
            options.update(cls=PrimaryRole, serverName="ls1", advertise="ls1:35355")
        else:
            options.update(
                cls=FailoverRole,
                serverName="ls2",
                advertise="ls2:35355",
                primaryEndpoint=self.endpoint,
                primaryAddress="ls1:35355",
                heartbeat=HEARTBEAT,
            )
        return makeRole(self.stores[which], process, **options)

    def restart(self, which: str, clean: bool) -> None:
        """The server's process dies (after a clean stop, if ``clean``); a new one starts."""
        old = self.roles[which]
        if clean:
            old.stopService()
        for pump in self.endpoint.pumps:
            if which == PRIMARY:
                pump.server = pump.serverIO.protocol = Deaf()
                pump.serverIO.loseConnection()
            else:
                pump.client = pump.clientIO.protocol = Deaf()
                pump.clientIO.loseConnection()
        self.processes[which].die()
        for client in self.clients:
            if client.pending is not None and client.pending[2] is old:
                self.note(f"{client.machine} gives up its checkout: the {which} died")
                client.pending = None
                client.due = self.clock.seconds() + INTERVAL
        self.roles[which] = self.startServer(which)
        if which == PRIMARY:
            self.endpoint.serverFactory = LicensingFactory(self.roles[PRIMARY])
        self.endpoint.flush()

    def setCut(self, cut: bool) -> None:
        self.endpoint.silent = cut
        self.endpoint.flush()

    def stop(self) -> None:
        for which, role in self.roles.items():
            if not self.processes[which].dead:
                role.stopService()
                self.processes[which].die()

    # Time

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, stopping at every moment at which anything is scheduled:
        bytes move between the servers, the clients act, and the invariant is checked."""
        target = self.clock.seconds() + seconds
        for _ in range(100_000):
            times = [call.getTime() for call in self.clock.getDelayedCalls()]
            primary = self.roles[PRIMARY]
            if primary.peer is not None and primary.linkUp():
                # The moment the primary stops counting on the link, for the trace.
                times.append(primary.peer.heard + primary.takeoverAfter / 2 + 0.01)
            for client in self.clients:
                if client.pending is not None:
                    times.append(client.pending[1] + REQUEST_TIMEOUT)
                elif client.due is not None:
                    times.append(client.due)
            soonest = min([target, *times])
            self.clock.advance(max(0.0, soonest - self.clock.seconds()))
            self.endpoint.flush()
            self.clientsAct()
            self.check()
            if self.clock.seconds() >= target:
                return
        raise AssertionError("time does not pass")

    def clientsAct(self) -> None:
        now = self.clock.seconds()
        for client in self.clients:
            if client.pending is not None:
                if now >= client.pending[1] + REQUEST_TIMEOUT:
                    self.note(f"{client.machine} gives up its checkout: no answer")
                    client.pending = None
                    client.due = now
            if client.pending is None and client.due is not None and client.due <= now:
                self.act(client)
        self.endpoint.flush()

    # The invariant

    def inUse(self, role: Any) -> int:
        now = role.now()
        return len(
            {
                (lease.machine, lease.user)
                for lease in role.pool.all("lease")
                if lease.live(now) and self.lid in lease.licenses
            }
        )

    def noteStates(self) -> None:
        """Note when the failover's state changes, the primary's view of the link, and the
        leases the primary drops or takes from the failover."""
        primary, failover = self.roles[PRIMARY], self.roles[FAILOVER]
        states = (failover.machine.state, primary.hasFailover() and not primary.linkUp())
        leases = {lease.id for lease in primary.pool.all("lease")}
        if self.states is not None:
            if states[0] != self.states[0]:
                self.note(f"the failover is {states[0]}")
            if states[1] != self.states[1]:
                self.note("the primary is " + ("cut off" if states[1] else "linked"))
            for lease in sorted(self.leases - leases):
                self.note(f"the primary drops {lease}")
            for lease in sorted(leases - self.leases):
                if lease.startswith("l-f"):
                    self.note(f"the primary takes {lease} from the failover")
        self.states, self.leases = states, leases

    def check(self) -> None:
        self.noteStates()
        now = self.clock.seconds()
        holders = [c.machine for c in self.clients if c.holds(now)]
        problems = list(self.problems)
        if len(holders) > N:
            problems.append(f"{len(holders)} clients hold a seat: {', '.join(holders)}")
        primary, failover = self.roles[PRIMARY], self.roles[FAILOVER]
        if self.inUse(primary) > N:
            problems.append(f"the primary has {self.inUse(primary)} holders of live leases")
        if primary.overAllocated(self.lid):
            problems.append(f"the primary is over-allocated by {primary.overAllocated(self.lid)}")
        if failover.state == "active" and self.inUse(failover) > N:
            problems.append(f"the active failover has {self.inUse(failover)} holders")
        if problems:
            raise AssertionError(
                "\n".join([*problems, *self.pools(), "", "what happened:", *self.trace])
            )

    def pools(self) -> list[str]:
        """Each server's live leases, for a failure's message."""
        out = []
        for which, role in self.roles.items():
            now = role.now()
            live = sorted(
                f"{lease.id} ({lease.machine}, until {lease.expires - START:.0f})"
                for lease in role.pool.all("lease")
                if lease.live(now)
            )
            out.append(f"live at the {which} ({role.state}): {', '.join(live) or 'none'}")
        return out

    # The clients

    def note(self, text: str) -> None:
        self.trace.append(f"{self.clock.seconds() - START:8.2f} {text}")

    def result(self, d: defer.Deferred) -> Any:
        done, result = fired(d)
        if not done:
            raise AssertionError("no answer")
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def session(self, client: Client, which: str) -> Any:
        """The client's session at the server, opened with HELLO if it has none."""
        role = self.roles[which]
        if role not in client.sessions:
            client.sessions[role] = hello(role, client.machine)
        return client.sessions[role]

    def ask(self, client: Client, verb: str, args: dict[str, str], only: str | None = None):
        """Send a request the way the SDK does: (server, outcome), the outcome an answer,
        a ProtocolError or a ``defer.Deferred`` still to fire; None when no server served."""
        order = [only] if only else [client.current, OTHER[client.current]]
        for which in order:
            if not client.reaches(which):
                continue
            try:
                s = self.session(client, which)
            except ProtocolError as e:
                if e.reason == "standby":
                    continue
                raise
            client.current = which
            d = getattr(self.roles[which], verb)(s, args)
            done, result = fired(d)
            if not done:
                return which, d
            if isinstance(result, Failure):
                result.trap(ProtocolError)
                if result.value.reason == "standby":
                    continue
                return which, result.value
            return which, result
        return None

    def act(self, client: Client) -> None:
        """The SDK's timer: heartbeat the lease kept, or ask for a seat."""
        now = self.clock.seconds()
        client.due = now + INTERVAL
        if client.lease is None:
            self.checkout(client)
            return
        asked = self.ask(client, "heartbeat", {"lease": client.lease})
        if asked is None:
            if not client.unheard:
                self.note(f"{client.machine} heartbeat {client.lease}: no server (retrying)")
            client.unheard = True
            if client.holds(now):
                client.due = now + RETRY
            return
        client.unheard = False
        which, outcome = asked
        if isinstance(outcome, defer.Deferred):
            self.problems.append(f"{client.machine}'s heartbeat at {which} is not answered")
            return
        if isinstance(outcome, ProtocolError):
            self.note(f"{client.machine} heartbeat {client.lease} at {which}: {outcome.reason}")
            client.holding = False
            if outcome.reason != "unknown-lease":
                self.problems.append(f"{client.machine}'s heartbeat: {outcome!r}")
                return
            self.checkout(client, only=which)
            return
        client.expires = int(outcome["expires"])
        client.holding = True
        self.note(
            f"{client.machine} heartbeat {client.lease} at {which}: until {self.end(client)}"
        )

    def checkout(self, client: Client, only: str | None = None) -> None:
        asked = self.ask(client, "checkout", {"request": client.key}, only)
        if asked is None:
            self.note(f"{client.machine} checkout: no server")
            return
        which, outcome = asked
        if isinstance(outcome, defer.Deferred):
            self.note(f"{client.machine} checkout at {which}: waiting")
            client.pending = (outcome, self.clock.seconds(), self.roles[which])
            outcome.addBoth(self.answered, client, which, client.pending)
            return
        self.granted(client, which, outcome)

    def answered(self, result: Any, client: Client, which: str, pending: Any) -> None:
        if client.pending is not pending:
            return
        client.pending = None
        client.due = self.clock.seconds() + INTERVAL
        if isinstance(result, Failure):
            if not result.check(ProtocolError):
                self.problems.append(f"{client.machine}'s checkout failed: {result!r}")
                return
            result = result.value
        self.granted(client, which, result)

    def granted(self, client: Client, which: str, outcome: Any) -> None:
        if isinstance(outcome, ProtocolError):
            self.note(f"{client.machine} checkout at {which}: {outcome.reason}")
            if outcome.reason != "no-seats":
                self.problems.append(f"{client.machine}'s checkout: {outcome!r}")
            return
        client.lease, client.expires = outcome["lease"], int(outcome["expires"])
        client.holding = True
        self.note(
            f"{client.machine} checkout at {which}: {client.lease}, until {self.end(client)}"
        )

    def end(self, client: Client) -> str:
        return f"{client.expires - START:.0f}"

    # The applications

    def launch(self, client: Client) -> None:
        """The application starts: it asks for a seat at once, under a new request key."""
        if client.running:
            return
        self.note(f"{client.machine} starts")
        client.running = True
        client.key = next(client.keys)
        client.lease, client.holding = None, False
        client.due = self.clock.seconds()
        self.clientsAct()

    def exit(self, client: Client, release: bool) -> None:
        """The application exits, releasing its seat, or crashes."""
        if not client.running:
            return
        lease = client.lease
        client.running, client.lease, client.holding = False, None, False
        client.due = client.pending = None
        if not release:
            self.note(f"{client.machine} crashes")
        elif lease is None:
            self.note(f"{client.machine} exits")
        else:
            asked = self.ask(client, "release", {"lease": lease})
            answer = "no server" if asked is None else asked[0]
            if asked is not None and isinstance(asked[1], ProtocolError):
                answer += f": {asked[1].reason}"
            self.note(f"{client.machine} exits: release {lease} at {answer}")

    def soonestEnd(self) -> float | None:
        """The soonest end still ahead of a lease that the primary or a client knows."""
        now = self.clock.seconds()
        ends = [lease.expires for lease in self.roles[PRIMARY].pool.all("lease")]
        ends += [client.expires for client in self.clients if client.lease is not None]
        ahead = [end for end in ends if end > now]
        return min(ahead) if ahead else None

    # A step

    def step(self, action: tuple) -> None:
        kind, *args = action
        if kind == "start":
            for index in args[0]:
                self.launch(self.clients[index])
        elif kind == "exit":
            self.exit(self.clients[args[0]], args[1])
        elif kind == "route":
            client = self.clients[args[0]]
            client.route = args[1]
            self.note(f"{client.machine} reaches {args[1]}")
        elif kind == "pause":
            self.note(f"{args[0]} s pass")
            self.advance(args[0])
        elif kind == "nearEnd":
            end = self.soonestEnd()
            if end is not None and end + args[0] > self.clock.seconds():
                self.note(f"time passes to the soonest end {args[0]:+}")
                self.advance(end + args[0] - self.clock.seconds())
        elif kind == "cut":
            for client, route in zip(self.clients, args[0], strict=True):
                client.route = route
            self.note(f"the link is cut; the clients reach {', '.join(args[0])}")
            self.setCut(True)
        elif kind == "heal":
            for client in self.clients:
                client.route = "both"
            self.note("the link is healed; every client reaches both servers")
            self.setCut(False)
        elif kind == "restart":
            self.note(f"the {args[0]} restarts{' after a clean stop' if args[1] else ''}")
            self.restart(args[0], args[1])
        self.check()


clients = st.integers(0, len(MACHINES) - 1)
routes = st.sampled_from(sorted(ROUTES))
KINDS = {
    "start": (4, st.tuples(st.lists(clients, min_size=1, max_size=len(MACHINES), unique=True))),
    "exit": (2, st.tuples(clients, st.booleans())),
    "route": (2, st.tuples(clients, routes)),
    "pause": (4, st.tuples(st.sampled_from(PAUSES))),
    "nearEnd": (2, st.tuples(st.sampled_from(NEAR_END))),
    "cut": (2, st.tuples(st.tuples(*[routes] * len(MACHINES)))),
    "heal": (1, st.tuples()),
    "restart": (2, st.tuples(st.sampled_from([PRIMARY, FAILOVER]), st.booleans())),
}
"""Each kind of step: how often it comes, and its arguments."""
steps = st.sampled_from([kind for kind, (weight, _) in KINDS.items() for _ in range(weight)])
steps = steps.flatmap(lambda kind: KINDS[kind][1].map(lambda args: (kind, *args)))


class Interleavings(RuleBasedStateMachine):
    """The steps, on a new pair for each example; every step checks the invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()

    def teardown(self) -> None:
        self.pair.stop()

    @rule(step=steps)
    def do(self, step: tuple) -> None:
        self.pair.step(step)


class PartitionProperty(unittest.TestCase):
    def test_neverMoreThanNSeats(self):
        """Whatever clients, time, cuts and restarts do, at most N clients hold a seat,
        and neither server logs an error."""
        test = self

        class Checked(Interleavings):
            def teardown(self) -> None:
                super().teardown()
                test.assertEqual(test.flushLoggedErrors(), [])

        run_state_machine_as_test(
            Checked,
            settings=settings(
                max_examples=200,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )
