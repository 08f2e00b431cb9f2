"""Fuzzing the licensing port: random sessions must never crash it or break its rules.

Hypothesis drives three sessions with a mix of valid commands, mangled
ones and raw noise, cut into random chunks. After every step: no fault was
logged, every byte the server sent is a well-formed answer (at most one per
line sent), no license is over-allocated, and the pool in memory is what
the store holds.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from licenseserver import allocation
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.testing import FakeStore
from tests.helpers import licenseFile, makeRole, run

MACHINES = ["m1", "m2", "m3"]
PRODUCTS = ["XMLSpy", "MapForce", "Nothing"]

words = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
valueish = st.one_of(
    st.sampled_from(
        ["1", "0", "-1", "31", "2015", "2025r2", "1.5", "x" * 200, "\u00b2", "\u0663"]
        + ["1" * 18, "1" * 19, "9" * 5000]
    ),
    words,
)


def command(leases):
    """A request line: mostly plausible, sometimes mangled."""
    lease = st.sampled_from(leases) if leases else st.just("l-none")
    return st.one_of(
        st.builds(
            lambda m, p, v: wire.format_request(
                "HELLO", {"product": p, "version": v, "host": "h", "machine": m}
            ),
            st.sampled_from(MACHINES),
            st.sampled_from(PRODUCTS),
            st.sampled_from(["2025r2", "2015", "1.5", "bad"]),
        ),
        st.builds(
            lambda p, r: wire.format_request("CHECKOUT", {"product": p, "request": r}),
            st.sampled_from(PRODUCTS),
            st.sampled_from(["a", "b", "c"]),
        ),
        st.builds(lambda lid: wire.format_request("HEARTBEAT", {"lease": lid}), lease),
        st.just(wire.format_request("HEARTBEAT")),
        st.builds(lambda lid: wire.format_request("RELEASE", {"lease": lid}), lease),
        st.builds(lambda d: wire.format_request("BORROW", {"days": d}), valueish),
        st.builds(lambda c: wire.format_request("CHECKOUT", {"cores": c}), valueish),
        st.sampled_from([b"PING\n", b"STATUS\n", b"PEER name=x\n", b"AUTH proof=00\n"]),
        st.builds(lambda k, v: f"CHECKOUT {k}={v}\n".encode(), words, words),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"),
    )


class LicensingPortFuzz(unittest.TestCase):
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def test_randomSessions(self, data):
        """Random traffic on three sessions never faults, over-allocates or desyncs."""
        store = FakeStore()
        role = makeRole(store)
        self.successResultOf(run(role.addLicenses(licenseFile({"seats": 2}))))
        self.successResultOf(
            run(role.addLicenses(licenseFile({"seats": 1, "product": "MapForce"})))
        )
        factory = LicensingFactory(role)
        sessions = []
        for _ in range(3):
            proto = factory.buildProtocol(None)
            transport = StringTransport()
            proto.makeConnection(transport)
            sessions.append([proto, transport, 0, 0])
        leases: list[str] = []
        for _ in range(data.draw(st.integers(1, 25), label="steps")):
            index = data.draw(st.integers(0, 2), label="session")
            entry = sessions[index]
            proto, transport = entry[0], entry[1]
            if transport.disconnecting:
                continue
            line = data.draw(command(leases), label="line")
            cut = data.draw(st.integers(0, len(line)), label="cut")
            proto.dataReceived(line[:cut])
            proto.dataReceived(line[cut:])
            if data.draw(st.integers(0, 9), label="tick") == 0:
                role.clock.advance(61)
            entry[2] += line.count(b"\n")
            received = transport.value()
            transport.clear()
            answers = received.split(b"\n")[:-1]
            entry[3] += len(answers)
            self.assertLessEqual(entry[3], entry[2])
            for answer in answers:
                parsed = wire.parse_response(answer)
                self.assertNotEqual(parsed.code, 500, answer)
                if parsed.ok and "lease" in parsed.args:
                    leases.append(parsed.args["lease"])
            self.assertNoOverAllocation(role)
            self.assertEqual(self.successResultOf(store.load()).revision, role.pool.revision)
        self.assertEqual(self.flushLoggedErrors(), [])

    def assertNoOverAllocation(self, role):
        now = role.now()
        for lic in role.pool.all("license"):
            used = allocation.seats_in_use(lic, role.pool.leasesFor(lic.product), now)
            self.assertLessEqual(used, lic.seats, lic.id)
