"""Handback keeps running clients: the failover's leases go to the primary (FAILOVER.md 14, 18).

A primary and a failover linked in memory on one Clock (``PairTestCase``);
the primary dies, the failover serves, the primary returns, and the leases
granted, renewed and ended at the failover reach the primary with ``MERGE``
before the failover stands by again. That a client heartbeating in the middle
of it is answered is in ``test_failover_states`` (the merging state).
"""

from __future__ import annotations

import json

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from licenseserver.metrics import Metrics
from licenseserver.protocols import wire
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.web import display, views
from licenseserver.web.facade import ServerView
from tests.helpers import hello, licenseFile, run, session
from tests.test_failover import HEARTBEAT, TAKEOVER, PairTestCase


class Hangup(Protocol):
    """A process that accepts a connection and closes it without a word."""

    def connectionMade(self) -> None:
        self.transport.loseConnection()


class HandbackMergeTests(PairTestCase):
    def setUp(self) -> None:
        super().setUp()
        (self.lid,) = self.ok(self.primary.addLicenses(licenseFile({"seats": 3})))
        self.m1 = hello(self.primary, "m1")
        self.synced = self.ok(self.primary.checkout(self.m1, {}))["lease"]
        self.beat()
        self.assertMirrors()

    def takeOver(self) -> None:
        self.killPrimary()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")

    def handBack(self) -> None:
        self.revivePrimary()
        self.advance(HEARTBEAT * 2)
        self.assertEqual(self.failover.state, "standby")

    def test_grantedLeaseKeepsItsSeat(self):
        """A lease granted at the failover is held by the primary after handback, under
        the same id; its client heartbeats it there and keeps its seat."""
        self.takeOver()
        m2 = hello(self.failover, "m2")
        granted = self.ok(self.failover.checkout(m2, {}))["lease"]
        self.handBack()
        at = hello(self.primary, "m2")
        self.ok(self.primary.heartbeat(at, {"lease": granted}))
        self.assertEqual(self.primary.pool.lease(granted).machine, "m2")
        events = self.successResultOf(self.primaryStore.events(20))
        self.assertNotIn("over-allocated", [e.kind for e in events])
        self.beat()
        self.assertMirrors()

    def test_wordlessCloseWhileServing(self):
        """A connection accepted and closed without a word while the failover serves (a
        primary dying again as it starts) is no refusal: the failover serves on, and
        hands its leases over once the primary answers."""
        self.takeOver()
        granted = self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))["lease"]
        self.endpoint.revive(Factory.forProtocol(Hangup))
        self.advance(HEARTBEAT * 2)
        self.assertEqual(self.failover.machine.state, "active")
        self.handBack()
        self.assertIsNotNone(self.primary.pool.lease(granted))

    def test_newMachineGetsAClientOfThePrimary(self):
        """During a cut both servers register a machine new to them under the same next
        client id; the merged lease of the failover's machine names that machine's client
        at the primary (registered by the merge, with the host the failover knew), never
        the other machine's."""
        self.endpoint.silent = True
        self.advance(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        hello(self.primary, "m2", host="ws-m2")
        at = hello(self.failover, "m3", host="ws-m3")
        self.assertEqual(
            self.primary.pool.clientByMachine("m2").id,
            self.failover.pool.clientByMachine("m3").id,
        )
        granted = self.ok(self.failover.checkout(at, {}))["lease"]
        self.endpoint.silent = False
        self.endpoint.flush()
        self.advance(HEARTBEAT * 2)
        self.assertEqual(self.failover.state, "standby")
        client = self.primary.pool.clientByMachine("m3")
        self.assertEqual((client.machine, client.host), ("m3", "ws-m3"))
        self.assertEqual(self.primary.pool.lease(granted).client, client.id)
        self.assertNotEqual(client.id, self.primary.pool.clientByMachine("m2").id)
        self.beat()
        self.assertMirrors()

    def test_renewalsAndReleasesMerged(self):
        """A synced lease renewed at the failover keeps its later end at the primary; one
        released at the failover is released at the primary."""
        second = self.ok(self.primary.checkout(hello(self.primary, "m3"), {}))["lease"]
        self.beat()
        self.takeOver()
        self.advance(60)
        self.ok(self.failover.heartbeat(hello(self.failover, "m1"), {"lease": self.synced}))
        self.ok(self.failover.release(hello(self.failover, "m3"), {"lease": second}))
        renewed = self.failover.pool.lease(self.synced).expires
        self.handBack()
        self.assertEqual(self.primary.pool.lease(self.synced).expires, renewed)
        self.assertIsNone(self.primary.pool.lease(second))

    def test_restartWhileActive(self):
        """A failover restarted while active still hands its leases over: they are read
        from its own change log, which is durable."""
        self.takeOver()
        granted = self.ok(self.failover.checkout(hello(self.failover, "m2"), {}))["lease"]
        self.successResultOf(self.failover.stopService())
        self.failover = self.startFailover()
        self.advance(TAKEOVER + 0.2)
        self.assertEqual(self.failover.state, "active")
        self.handBack()
        self.assertIsNotNone(self.primary.pool.lease(granted))
        self.beat()
        self.assertMirrors()

    def test_overAllocatedUnderFull(self):
        """Under the full policy a merge that puts more seats in use than licensed keeps
        every lease, says so in Messages, and no new seat is granted until fewer than the
        license's seats are in use (rule 18)."""
        self.beat()
        self.takeOver()
        for machine in ("m2", "m3"):
            self.ok(self.failover.checkout(hello(self.failover, machine), {}))
        self.primary = self.startPrimary()
        for machine in ("m4", "m5"):
            self.ok(self.primary.checkout(hello(self.primary, machine), {}))
        self.endpoint.revive(LicensingFactory(self.primary))
        self.advance(HEARTBEAT * 2)
        self.assertEqual(self.failover.state, "standby")
        self.assertEqual(self.primary.overAllocated(self.lid), 2)
        events = self.successResultOf(self.primaryStore.events(20))
        newest = [e for e in events if e.kind == "over-allocated"][0]
        self.assertIn("over-allocated by 2", newest.message)
        view = ServerView(self.primary)
        self.assertEqual(
            views.license(view, self.primary.pool.license(self.lid))["over_allocated"], 2
        )
        header = " ".join(a.text for a in display.warnings(view, [], self.primary.now()))
        self.assertIn(f"license {self.lid} (XMLSpy) is over-allocated by 2", header)
        metrics = Metrics()
        metrics.watch(view)
        self.assertIn(
            f'licenseserver_license_over_allocated{{license="{self.lid}",product="XMLSpy"}} 2.0',
            metrics.render().decode(),
        )
        self.refused(self.primary.checkout(hello(self.primary, "m6"), {}), "no-seats")
        for machine in ("m4", "m5", "m2"):
            lease = self.primary.pool.leasesOfMachine(machine)[0]
            self.ok(self.primary.release(hello(self.primary, machine), {"lease": lease.id}))
        self.ok(self.primary.checkout(hello(self.primary, "m6"), {}))


class MergeVerbTests(PairTestCase):
    """The primary's side of ``MERGE``, line by line."""

    def setUp(self) -> None:
        super().setUp()
        (self.lid,) = self.ok(self.primary.addLicenses(licenseFile({"seats": 3})))
        self.beat()
        self.link = session("ls2-link")
        self.link.peer = "127.0.0.1:4000"
        self.primary.peer.session = self.link

    def merge(self, **args: str) -> dict:
        return self.ok(self.primary.peerMerge(self.link, args))

    def record(self, **fields) -> str:
        data = {
            "id": "l-merged0000000001",
            "client": "c-99",
            "machine": "m7",
            "user": "ann",
            "product": "XMLSpy",
            "version": "2025r2",
            "licenses": [self.lid],
            "kind": "concurrent",
            "granted": int(self.clock.seconds()),
            "expires": int(self.clock.seconds()) + 120,
            "ttl": 120,
            "borrowed": False,
            "request": "",
        }
        data.update(fields)
        return json.dumps(data)

    def test_put(self):
        """A new lease is put under its id, with the primary's client of its machine."""
        c = hello(self.primary, "m7")
        self.assertEqual(self.merge(record=self.record()), {"merged": "put"})
        lease = self.primary.pool.lease("l-merged0000000001")
        self.assertEqual((lease.machine, lease.client), ("m7", c.client))
        kinds = [row[2] for row in self.primaryStore.auditRows]
        self.assertIn("lease-merged", kinds)

    def test_laterEndWins(self):
        """A lease the primary holds with a later end is kept as it is."""
        self.merge(record=self.record())
        later = int(self.clock.seconds()) + 500
        self.merge(record=self.record(expires=later))
        self.assertEqual(self.merge(record=self.record()), {"merged": "kept"})
        self.assertEqual(self.primary.pool.lease("l-merged0000000001").expires, later)

    def test_ends(self):
        """A release removes the lease; an expiry only when the primary has not seen it
        renewed past the failover's last end."""
        end = int(self.clock.seconds()) + 120
        self.merge(record=self.record())
        args = {"lease": "l-merged0000000001", "expires": str(end - 1)}
        self.assertEqual(self.merge(ended="expired", **args), {"merged": "kept"})
        self.assertEqual(self.merge(ended="released", **args), {"merged": "removed"})
        self.assertIsNone(self.primary.pool.lease("l-merged0000000001"))
        self.merge(record=self.record())
        args["expires"] = str(end)
        self.assertEqual(self.merge(ended="expired", **args), {"merged": "removed"})

    def test_sameRequestKeyReplaces(self):
        """The failover's lease replaces the primary's of the same machine and key once
        that has ended: the client holds the failover's now."""
        c = hello(self.primary, "m7")
        mine = self.ok(self.primary.checkout(c, {"request": "k1"}))["lease"]
        self.clock.advance(121)
        self.merge(record=self.record(request="k1"))
        self.assertIsNone(self.primary.pool.lease(mine))
        self.assertEqual(self.primary.pool.leaseByRequest("m7", "k1").id, "l-merged0000000001")

    def test_sameRequestKeyKeepsLaterEnd(self):
        """A live lease of the same machine and key that ends later than the failover's is
        replaced by it with its own end: its client may hold it still, and the seat
        stays counted until then; a retry under the key gets the merged lease."""
        c = hello(self.primary, "m7")
        self.clock.advance(30)
        mine = self.ok(self.primary.checkout(c, {"request": "k1"}))
        self.clock.advance(10)
        self.merge(record=self.record(request="k1", expires=int(self.clock.seconds()) + 20))
        self.assertIsNone(self.primary.pool.lease(mine["lease"]))
        merged = self.primary.pool.lease("l-merged0000000001")
        self.assertEqual(merged.expires, mine["expires"])
        again = self.ok(self.primary.checkout(c, {"request": "k1"}))
        self.assertEqual(again["lease"], merged.id)

    def test_endedNotTaken(self):
        """A lease that ended at the failover is not taken, and leaves the primary's lease
        of the same key alone: its client no longer counts on the failover's."""
        c = hello(self.primary, "m7")
        mine = self.ok(self.primary.checkout(c, {"request": "k1"}))["lease"]
        answer = self.merge(record=self.record(request="k1", expires=int(self.clock.seconds())))
        self.assertEqual((answer["merged"], answer["why"]), ("kept", "ended"))
        self.assertIsNone(self.primary.pool.lease("l-merged0000000001"))
        self.assertIsNotNone(self.primary.pool.lease(mine))

    def test_licenseGone(self):
        """A lease of a license the primary no longer has is not taken."""
        self.ok(self.primary.deleteLicense(self.lid))
        self.assertEqual(self.merge(record=self.record())["merged"], "kept")
        self.assertIsNone(self.primary.pool.lease("l-merged0000000001"))

    def test_badInput(self):
        """Anything but a lease is 400 bad-request and changes nothing."""
        for args in (
            {"record": "[]"},
            {"record": "{"},
            {"record": self.record(id="x-1")},
            {"record": self.record(expires="soon")},
            {"record": self.record(licenses=[])},
            {"lease": "l-1", "ended": "stolen"},
        ):
            failure = self.failureResultOf(
                run(self.primary.peerMerge(self.link, args)), wire.ProtocolError
            )
            self.assertEqual(failure.value.reason, "bad-request", args)
        self.assertEqual(self.primary.pool.count("lease"), 0)

    def test_unpairedRefused(self):
        """MERGE from a session that did not pair is refused and closes the connection."""
        proto = LicensingFactory(self.primary).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"MERGE lease=l-1 ended=released\n")
        self.assertIn(b"ERR 403 not-authorized", transport.value())
