"""Tests for the admin API (licenseserver.web.api) over a real HTTP socket."""

import base64
import json

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from licenseserver import passwords
from licenseserver.testing import FakeStore, PumpEndpoint
from licenseserver.web.auth import AdminAuth
from licenseserver.web.bounded import LimitedSite
from licenseserver.web.facade import ServerView
from licenseserver.web.root import buildRoot
from tests.helpers import START, hello, licenseFile, makeSwitch

PASSWORD = "correct horse"
HASH = passwords.hash_password(PASSWORD, n=2)


@implementer(IBodyProducer)
class Body:
    """A request body from bytes."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def stopProducing(self):
        pass

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


class APITests(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()
        clock = Clock()
        clock.advance(START)
        nowhere = PumpEndpoint(None)
        nowhere.up = False
        self.role = makeSwitch(self.store, clock, nowhere)
        self.addCleanup(self.role.stopService)
        site = LimitedSite(buildRoot(ServerView(self.role), AdminAuth(reactor, lambda: HASH)))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.agent = Agent(reactor)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def call(self, method, path, body=None, password=PASSWORD):
        headers = Headers()
        if password is not None:
            token = base64.b64encode(f"admin:{password}".encode()).decode()
            headers.addRawHeader("authorization", f"Basic {token}")
        response = await self.agent.request(
            method.encode(),
            (self.base + path).encode(),
            headers,
            Body(body) if body is not None else None,
        )
        data = await readBody(response)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return response.code, json.loads(data)

    async def test_statusWithoutAuth(self):
        """GET /api/status needs no password and names the role and revision."""
        code, body = await self.call("GET", "/api/status", password=None)
        self.assertEqual(code, 200)
        self.assertEqual(body["role"], "primary")
        self.assertEqual(body["state"], "active")
        self.assertEqual(body["name"], "ls1")
        self.assertIsNone(body["primary"])
        self.assertIsNone(body["failover"])
        self.assertEqual(body["revision"], 0)
        self.assertEqual(
            set(body),
            {
                "name",
                "role",
                "state",
                "version",
                "edition",
                "primary",
                "failover",
                "revision",
                "peer",
                "refused_peer",
                "cut_off_since",
            },
        )
        self.assertIsNone(body["cut_off_since"])

    async def test_healthz(self):
        """GET /healthz answers 200 while the role serves."""
        response = await self.agent.request(b"GET", (self.base + "/healthz").encode())
        self.assertEqual(response.code, 200)
        await readBody(response)

    async def test_healthzWhenStoreBroken(self):
        """GET /healthz answers 503 once the store has stopped on its own: the process
        is up, but answers every write with an error."""
        self.store.breakDown("the writer thread failed")
        response = await self.agent.request(b"GET", (self.base + "/healthz").encode())
        self.assertEqual(response.code, 503)
        body = json.loads(await readBody(response))
        self.assertEqual(body["ok"], False)

    async def test_authRequired(self):
        """The pool, clients and leases need the admin password: 401 without or wrong."""
        for path in ("/api/licenses", "/api/clients", "/api/leases", "/api/messages"):
            code, body = await self.call("GET", path, password=None)
            self.assertEqual(code, 401, path)
            self.assertIn("error", body)
        code, body = await self.call("GET", "/api/licenses", password="wrong")
        self.assertEqual((code, body), (401, {"error": "wrong password"}))
        code, body = await self.call("POST", "/api/licenses", licenseFile({}), password="wrong")
        self.assertEqual(code, 429, "a guess right after a wrong one is refused unchecked")
        self.assertIn("try again in 1 s", body["error"])
        self.assertEqual(self.role.pool.count("license"), 0)

    async def test_uploadAndList(self):
        """An uploaded file's licenses are listed with status and seats in use."""
        code, body = await self.call("POST", "/api/licenses", licenseFile({"seats": 3}))
        self.assertEqual(code, 201)
        (lid,) = body["ids"]
        await defer.ensureDeferred(self.role.checkout(hello(self.role), {}))
        code, body = await self.call("GET", "/api/licenses")
        self.assertEqual(code, 200)
        self.assertEqual(len(body), 1)
        self.assertEqual(body[0]["id"], lid)
        self.assertEqual(body[0]["status"], "active")
        self.assertEqual(body[0]["seats"], 3)
        self.assertEqual(body[0]["in_use"], 1)
        self.assertIsNone(body[0]["days_to_expiry"])

    async def test_uploadWarnsOfExpiredAndPending(self):
        """A license that has ended, or not begun, is taken with a warning that names its
        date; a valid one has none."""
        data = licenseFile(
            {"id": "L-OLD", "expires": "2026-01-31"},
            {"id": "L-NEW", "starts": "2026-09-01"},
            {"id": "L-NOW"},
        )
        code, body = await self.call("POST", "/api/licenses", data)
        self.assertEqual(code, 201)
        self.assertEqual(
            body["warnings"],
            [
                "license L-OLD (XMLSpy) expired on 2026-01-31: it gives no seat",
                "license L-NEW (XMLSpy) starts on 2026-09-01: it gives no seat before",
            ],
        )
        code, body = await self.call("POST", "/api/licenses", licenseFile({"id": "L-OK"}))
        self.assertNotIn("warnings", body)

    async def test_daysToExpiry(self):
        """Each license says how many whole days it has left (0 on its last day)."""
        data = licenseFile({"id": "L-A", "expires": "2026-06-07"}, {"id": "L-B"})
        code, _ = await self.call("POST", "/api/licenses", data)
        self.assertEqual(code, 201)
        code, body = await self.call("GET", "/api/licenses")
        self.assertEqual(
            {lic["id"]: lic["days_to_expiry"] for lic in body}, {"L-A": 10, "L-B": None}
        )

    async def test_uploadRefusals(self):
        """A bad file is 400 with its reason, a repeated license 409, nothing half added."""
        code, body = await self.call("POST", "/api/licenses", b"not json")
        self.assertEqual((code, body["reason"]), (400, "bad-format"))
        data = licenseFile({"seats": 3})
        tampered = data.replace(b'"seats": 3', b'"seats": 30')
        code, body = await self.call("POST", "/api/licenses", tampered)
        self.assertEqual((code, body["reason"]), (400, "tampered"))
        self.assertEqual((await self.call("POST", "/api/licenses", data))[0], 201)
        code, body = await self.call("POST", "/api/licenses", data)
        self.assertEqual(code, 409)
        self.assertEqual(self.role.pool.count("license"), 1)

    async def test_activateDeactivateDelete(self):
        """Licenses can be deactivated, activated and deleted; unknown ids are 404."""
        _, body = await self.call("POST", "/api/licenses", licenseFile({}))
        (lid,) = body["ids"]
        code, body = await self.call("POST", f"/api/licenses/{lid}/deactivate", b"")
        self.assertEqual((code, body["status"]), (200, "inactive"))
        code, body = await self.call("POST", f"/api/licenses/{lid}/activate", b"")
        self.assertEqual((code, body["status"]), (200, "active"))
        code, _ = await self.call("DELETE", f"/api/licenses/{lid}")
        self.assertEqual(code, 200)
        code, _ = await self.call("DELETE", f"/api/licenses/{lid}")
        self.assertEqual(code, 404)

    async def test_acceptAgreement(self):
        """Accepting a license's agreement is recorded once and shown with the license."""
        _, body = await self.call("POST", "/api/licenses", licenseFile({}))
        (lid,) = body["ids"]
        code, body = await self.call("GET", "/api/licenses")
        self.assertIsNone(body[0]["agreement"])
        code, body = await self.call("POST", f"/api/licenses/{lid}/agreement", b"")
        self.assertEqual(code, 200)
        self.assertEqual(body["agreement"]["accepted_by"], "admin")
        first = body["agreement"]["accepted"]
        code, body = await self.call("POST", f"/api/licenses/{lid}/agreement", b"")
        self.assertEqual(body["agreement"]["accepted"], first)
        code, _ = await self.call("POST", "/api/licenses/L-none/agreement", b"")
        self.assertEqual(code, 404)

    async def test_clientsAndAssignment(self):
        """Clients are listed with products; PUT assigns licenses; DELETE unregisters."""
        _, body = await self.call("POST", "/api/licenses", licenseFile({"kind": "installed"}))
        (lid,) = body["ids"]
        s = hello(self.role, "m1", version="2015")
        code, clients = await self.call("GET", "/api/clients")
        self.assertEqual(code, 200)
        self.assertEqual(clients[0]["id"], s.client)
        self.assertEqual(clients[0]["machine"], "m1")
        self.assertFalse(clients[0]["failover_capable"])
        self.assertEqual(clients[0]["products"][0]["product"], "XMLSpy")
        path = f"/api/clients/{s.client}/products/XMLSpy/licenses"
        code, client = await self.call("PUT", path, json.dumps({"licenses": [lid]}).encode())
        self.assertEqual(code, 200)
        self.assertEqual(client["products"][0]["licenses"], [lid])
        for bad in (b"{", b'{"licenses": "x"}', b"[]", b'{"licenses": [1]}'):
            code, body = await self.call("PUT", path, bad)
            self.assertEqual(code, 400, bad)
            self.assertIn("error", body)
        code, _ = await self.call("DELETE", f"/api/clients/{s.client}")
        self.assertEqual(code, 200)
        self.assertEqual((await self.call("GET", "/api/clients"))[1], [])

    async def test_leases(self):
        """GET /api/leases lists live leases with host and failover capability."""
        _, body = await self.call("POST", "/api/licenses", licenseFile({}))
        s = hello(self.role, "m1", version="2014r2")
        await defer.ensureDeferred(self.role.checkout(s, {}))
        await defer.ensureDeferred(self.role.borrow(s, {"days": "2"}))
        code, leases = await self.call("GET", "/api/leases")
        self.assertEqual(code, 200)
        self.assertEqual([x["borrowed"] for x in leases], [False, True])
        self.assertEqual(leases[0]["host"], "ws1")
        self.assertFalse(leases[0]["failover_capable"])

    async def test_messages(self):
        """Unmet requests show in /api/messages, newest first."""
        _, body = await self.call("POST", "/api/licenses", licenseFile({"seats": 1}))
        await defer.ensureDeferred(self.role.checkout(hello(self.role, "m1"), {}))
        d = defer.ensureDeferred(self.role.checkout(hello(self.role, "m2"), {}))
        d.addErrback(lambda f: None)
        code, events = await self.call("GET", "/api/messages")
        self.assertEqual(code, 200)
        self.assertEqual(events[0]["kind"], "unmet-request")

    async def test_unknownPathAndMethod(self):
        """Unknown API paths are 404 and wrong methods 405, both with a JSON reason."""
        code, body = await self.call("GET", "/api/nothing")
        self.assertEqual(code, 404)
        code, body = await self.call("PATCH", "/api/licenses", b"")
        self.assertEqual(code, 405)
        self.assertIn("error", body)

    async def test_settings(self):
        """GET /api/settings shows mode and licensing settings; PUT changes them."""
        code, body = await self.call("GET", "/api/settings")
        self.assertEqual(code, 200)
        self.assertEqual(body["role"], "primary")
        self.assertIsNone(body["primary"])
        self.assertEqual(body["borrow_max_days"], 30)
        self.assertEqual(body["lease_ttl"], 120)
        code, body = await self.call(
            "PUT", "/api/settings", json.dumps({"borrow_max_days": 7, "lease_ttl": 60}).encode()
        )
        self.assertEqual((code, body["borrow_max_days"], body["lease_ttl"]), (200, 7, 60))
        self.assertEqual(self.role.leaseTTL, 60)
        for bad in ({"borrow_max_days": 0}, {"lease_ttl": "x"}, {"nope": 1}, {"role": "x"}):
            code, body = await self.call("PUT", "/api/settings", json.dumps(bad).encode())
            self.assertEqual(code, 400, bad)
            self.assertIn("error", body)
        self.assertEqual(self.role.setting("borrow_max_days"), 7)

    async def test_partitionSettings(self):
        """partition_policy (default full) and failover_share (default 20%) are licensing
        settings: listed, changed by PUT, and a bad value is 400 and changes nothing."""
        code, body = await self.call("GET", "/api/settings")
        self.assertEqual((body["partition_policy"], body["failover_share"]), ("full", "20%"))
        change = {"partition_policy": "exact", "failover_share": "2"}
        code, body = await self.call("PUT", "/api/settings", json.dumps(change).encode())
        self.assertEqual(code, 200)
        self.assertEqual((body["partition_policy"], body["failover_share"]), ("exact", "2"))
        self.assertEqual(self.role.setting("failover_share"), "2")
        revision = self.role.pool.revision
        bad = [
            {"partition_policy": "strict"},
            {"partition_policy": "FULL"},
            {"partition_policy": None},
            {"partition_policy": ["full"]},
            {"failover_share": "101%"},
            {"failover_share": "-1"},
            {"failover_share": " 20%"},
            {"failover_share": ""},
            {"failover_share": "2.5"},
            {"failover_share": 2},
            {"partition_policy": "full", "failover_share": "lots"},
            {"partition_policy": "full", "failover_policy": "full"},
        ]
        for values in bad:
            code, body = await self.call("PUT", "/api/settings", json.dumps(values).encode())
            self.assertEqual(code, 400, values)
            self.assertIn("error", body)
        self.assertEqual(self.role.pool.revision, revision)
        self.assertEqual(self.role.setting("partition_policy"), "exact")
        code, body = await self.call(
            "PUT", "/api/settings", json.dumps({"failover_share": "100%"}).encode()
        )
        self.assertEqual((code, body["failover_share"]), (200, "100%"))

    async def test_licensePartitionPolicy(self):
        """Each license shows the policy in force, its share E in seats and where the
        policy comes from: the license's signed terms first, the settings otherwise."""
        data = licenseFile(
            {"id": "L-N", "seats": 10},
            {"id": "L-E", "seats": 10, "failover_policy": "exact", "failover_share": "3"},
            {"id": "L-X", "seats": 10, "failover_policy": "exact"},
            {"id": "L-F", "seats": 10, "failover_policy": "full"},
        )
        self.assertEqual((await self.call("POST", "/api/licenses", data))[0], 201)

        async def shown():
            _, body = await self.call("GET", "/api/licenses")
            return {
                lic["id"]: (
                    lic["failover_policy"],
                    lic["partition_policy"],
                    lic["failover_share"],
                    lic["policy_source"],
                )
                for lic in body
            }

        self.assertEqual(
            await shown(),
            {
                "L-N": (None, "full", 0, "settings"),
                "L-E": ("exact", "exact", 3, "license"),
                "L-X": ("exact", "exact", 2, "license"),
                "L-F": ("full", "full", 0, "license"),
            },
        )
        change = {"partition_policy": "exact", "failover_share": "50%"}
        self.assertEqual(
            (await self.call("PUT", "/api/settings", json.dumps(change).encode()))[0], 200
        )
        self.assertEqual(
            await shown(),
            {
                "L-N": (None, "exact", 5, "settings"),
                "L-E": ("exact", "exact", 3, "license"),
                "L-X": ("exact", "exact", 5, "license"),
                "L-F": ("full", "exact", 5, "settings"),
            },
        )
        change = {"partition_policy": "full", "failover_share": "4"}
        self.assertEqual(
            (await self.call("PUT", "/api/settings", json.dumps(change).encode()))[0], 200
        )
        self.assertEqual(
            await shown(),
            {
                "L-N": (None, "full", 0, "settings"),
                "L-E": ("exact", "exact", 3, "license"),
                "L-X": ("exact", "exact", 4, "license"),
                "L-F": ("full", "full", 0, "license"),
            },
        )

    async def test_badModeChangesNoSetting(self):
        """A settings change that comes with a mode that will not do is refused whole:
        the licensing settings in the same body stay as they were."""
        revision = self.role.pool.revision
        for mode in ({"role": {"x": 1}}, {"role": "failover"}, {"role": "failover", "primary": 7}):
            body = json.dumps({"lease_ttl": 60, "failover_minimums": {}, **mode}).encode()
            code, answer = await self.call("PUT", "/api/settings", body)
            self.assertEqual(code, 400, mode)
            self.assertIn("error", answer)
        self.assertEqual((self.role.leaseTTL, self.role.pool.revision), (120, revision))
        self.assertEqual(self.role.roleName, "primary")

    async def test_unpairWithoutFailover(self):
        """DELETE /api/failover needs the admin; on a primary without a failover it changes
        nothing and says so with null."""
        code, body = await self.call("DELETE", "/api/failover", password=None)
        self.assertEqual(code, 401)
        code, body = await self.call("DELETE", "/api/failover")
        self.assertEqual((code, body), (200, {"unpaired": None}))
        code, body = await self.call("GET", "/api/failover")
        self.assertEqual(code, 405)

    async def test_switchMode(self):
        """PUT /api/settings with role and primary makes the server a failover."""
        code, body = await self.call(
            "PUT", "/api/settings", json.dumps({"role": "failover", "primary": "ls9"}).encode()
        )
        self.assertEqual((code, body["role"], body["primary"]), (200, "failover", "ls9"))
        code, body = await self.call("GET", "/api/status", password=None)
        self.assertEqual((body["role"], body["state"]), ("failover", "standby"))
        self.assertEqual(body["primary"], "ls9:35355")
        code, body = await self.call("POST", "/api/licenses", licenseFile({}))
        self.assertEqual(code, 409)
        self.assertEqual(
            body["error"], "standby failover: make this change on the primary ls9:35355"
        )
        code, body = await self.call("PUT", "/api/clients/c-1/products/XMLSpy/licenses", b"{")
        self.assertEqual(code, 409)
        self.assertTrue(body["error"].startswith("standby failover:"), body)
        code, body = await self.call("GET", "/api/settings")
        self.assertEqual(body["primary"], "ls9")
