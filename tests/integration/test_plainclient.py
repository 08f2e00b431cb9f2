"""A client written from the protocol page alone works against a real server process.

Every test starts ``twistd licenseserver`` on 127.0.0.1 with ephemeral ports, adds license
files made with the ``licenseserver`` tool through the admin API, and talks to the
licensing port with the independent client in ``plainclient``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import (
    HarnessError,
    ServerProcess,
    api_get,
    assign_licenses,
    http_request,
    issue_license,
    make_vendor_key,
    start_server,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import (
    PlainClient,
    ProtocolError,
    Response,
    ResponseAssertions,
    formatLine,
    parseResponse,
)

PRODUCT = "XMLSpy"
VERSION = "2025r2"
LEASE_ID = re.compile(r"(?:[A-Za-z]{1,8}[-_.:])?(?P<body>[A-Za-z0-9_-]+)\Z")
CLOCK_SLACK = 5.0
DAY = 86400


class ServerTestCase(ResponseAssertions, unittest.TestCase):
    """One real server per test, with a trusted vendor key and helpers to use it."""

    extraArgs: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.data = self.base / "data"
        self.vendorKey = make_vendor_key(self.base / "vendor", self.data)
        self.issued = 0
        self.server = start_server(self, self.data, *self.extraArgs)

    # -- licenses

    def issue(
        self, product: str, kind: str, seats: int, key: Path | None = None, **options: object
    ) -> Path:
        self.issued += 1
        out = self.base / f"license-{self.issued}.json"
        return issue_license(key or self.vendorKey, out, product, kind, seats, **options)

    def addLicense(self, product: str, kind: str, seats: int, **options: object) -> str:
        """Issue a license file, upload it, and return the id of its one license."""
        ids = upload_license(self.server, self.issue(product, kind, seats, **options))
        self.assertEqual(len(ids), 1, ids)
        return ids[0]

    def assign(self, client: str, product: str, licenseIds: list[str]) -> None:
        result = assign_licenses(self.server, client, product, licenseIds)
        self.assertTrue(200 <= result.status < 300, f"assigning licenses: {result!r}")

    # -- connections

    def connect(self) -> PlainClient:
        client = PlainClient("127.0.0.1", self.server.licensing_port)
        self.addCleanup(client.close)
        return client

    def hello(
        self,
        client: PlainClient,
        machine: str = "machine-1",
        product: str = PRODUCT,
        **extra: object,
    ) -> Response:
        response = client.request(
            "HELLO",
            product=product,
            version=extra.pop("version", VERSION),
            host=extra.pop("host", f"ws-{machine}"),
            machine=machine,
            user=extra.pop("user", "anna"),
            **extra,
        )
        return self.assertOK(response)

    def session(self, machine: str = "machine-1", **extra: object) -> PlainClient:
        client = self.connect()
        self.hello(client, machine, **extra)
        return client

    # -- assertions

    def assertAbout(self, actual: float, expected: float, slack: float, what: str) -> None:
        self.assertTrue(
            abs(actual - expected) <= slack,
            f"{what}: {actual} is not within {slack} of {expected}",
        )

    def assertLeaseGrant(self, response: Response) -> Response:
        """A CHECKOUT answer: lease, license, kind, expires and ttl that fit together."""
        self.assertOK(response, "lease", "license", "kind", "expires", "ttl")
        match = LEASE_ID.match(response["lease"])
        self.assertIsNotNone(match, f"lease id {response['lease']!r} is not url-safe")
        self.assertGreaterEqual(
            len(match.group("body")),
            16,
            f"lease id {response['lease']!r} has fewer than 96 bits",
        )
        ttl = float(response["ttl"])
        self.assertGreater(ttl, 0)
        self.assertAbout(int(response["expires"]), time.time() + ttl, CLOCK_SLACK, "expires")
        return response

    def assertRenewal(self, response: Response) -> Response:
        self.assertOK(response, "expires", "ttl")
        ttl = float(response["ttl"])
        self.assertGreater(ttl, 0)
        self.assertAbout(int(response["expires"]), time.time() + ttl, CLOCK_SLACK, "expires")
        return response

    def assertServedNormally(self, machine: str = "machine-after") -> None:
        """A fresh connection gets PING, HELLO and CHECKOUT answered as usual."""
        client = self.connect()
        self.assertOK(client.request("PING"))
        self.hello(client, machine)
        self.assertLeaseGrant(client.request("CHECKOUT"))
        client.close()


class StatusAndHelloTests(ServerTestCase):
    """PING, STATUS and HELLO: the opening of a session."""

    def test_pingBeforeHello(self) -> None:
        """PING needs no HELLO and is answered with OK."""
        client = self.connect()
        self.assertEqual(client.request("PING").line, "OK")

    def test_statusBeforeHello(self) -> None:
        """STATUS needs no HELLO and describes a lone active primary."""
        response = self.assertOK(
            self.connect().request("STATUS"),
            "server",
            "role",
            "state",
            "version",
            "edition",
            "primary",
            "failover",
        )
        self.assertTrue(response["server"])
        self.assertEqual(response["role"], "primary")
        self.assertEqual(response["state"], "active")
        self.assertTrue(response["version"])
        self.assertTrue(response["edition"])
        self.assertEqual(response["primary"], "none")
        self.assertEqual(response["failover"], "none")

    def test_hello(self) -> None:
        """HELLO opens the session and tells the client who serves it and how to heartbeat."""
        client = self.connect()
        status = client.request("STATUS")
        response = self.hello(client)
        self.assertOK(
            response,
            "server",
            "role",
            "state",
            "version",
            "edition",
            "client",
            "primary",
            "failover",
            "heartbeat",
        )
        self.assertEqual(response["server"], status["server"])
        self.assertEqual(response["role"], "primary")
        self.assertEqual(response["state"], "active")
        self.assertEqual(response["version"], status["version"])
        self.assertEqual(response["edition"], status["edition"])
        self.assertTrue(response["client"])
        self.assertEqual(response["primary"], "none")
        self.assertEqual(response["failover"], "none")
        self.assertGreater(float(response["heartbeat"]), 0)

    def test_helloWithCores(self) -> None:
        """HELLO accepts the optional cores argument."""
        self.hello(self.connect(), cores=8)

    def test_secondHello(self) -> None:
        """A second HELLO on the same connection is a bad request."""
        client = self.connect()
        self.hello(client)
        response = client.request(
            "HELLO", product=PRODUCT, version=VERSION, host="ws", machine="machine-1"
        )
        self.assertErr(response, 400, "bad-request")
        self.assertOK(client.request("PING"))

    def test_helloRequired(self) -> None:
        """CHECKOUT, HEARTBEAT, RELEASE and BORROW before HELLO get 401 hello-required."""
        client = self.connect()
        self.assertErr(client.request("CHECKOUT"), 401, "hello-required")
        self.assertErr(client.request("CHECKOUT", product=PRODUCT), 401, "hello-required")
        self.assertErr(client.request("HEARTBEAT"), 401, "hello-required")
        self.assertErr(client.request("HEARTBEAT", lease="l-x"), 401, "hello-required")
        self.assertErr(client.request("RELEASE", lease="l-x"), 401, "hello-required")
        self.assertErr(client.request("BORROW", product=PRODUCT, days=3), 401, "hello-required")
        self.hello(client)

    def test_helloMissingArgument(self) -> None:
        """A HELLO without one of product, version, host or machine is a bad request."""
        full = {"product": PRODUCT, "version": VERSION, "host": "ws", "machine": "m-1"}
        for missing in full:
            args = {key: value for key, value in full.items() if key != missing}
            client = self.connect()
            response = client.request("HELLO", **args)
            self.assertErr(response, 400, "bad-request")
            self.assertErr(client.request("CHECKOUT"), 401, "hello-required")
            client.close()

    def test_unknownKeysIgnored(self) -> None:
        """Unknown keys are ignored, in PING and in HELLO alike."""
        client = self.connect()
        self.assertOK(client.request("PING", future_thing="x"))
        self.hello(client, colour="blue")

    def test_quotedValues(self) -> None:
        """Quoted values with spaces, quotes and non-ASCII text reach the server decoded."""
        host = 'ws "17" annex'
        self.hello(self.connect(), "machine-ü 1", host=host, user="anna maria")
        entry = findClient(api_get(self.server, "/api/clients"), "machine-ü 1")
        self.assertIsNotNone(entry)
        self.assertEqual(entry["host"], host)

    def test_jsonEscapes(self) -> None:
        """Quoted values may use JSON string escapes for quotes, backslashes and code points."""
        client = self.connect()
        client.sendRaw(
            b'HELLO product=XMLSpy version=2025r2 machine="machine-\\u00fc-2" '
            b'host="ws \\"18\\" back\\\\slash" user="anna"\n'
        )
        self.assertOK(client.read(), "client")
        entry = findClient(api_get(self.server, "/api/clients"), "machine-\u00fc-2")
        self.assertIsNotNone(entry)
        self.assertEqual(entry["host"], 'ws "18" back\\slash')

    def test_emptyLinesAndCRLF(self) -> None:
        """Empty lines get no answer and a CR before the LF is dropped."""
        client = self.connect()
        client.sendRaw(b"\n\r\nPING\r\n\n\nSTATUS\r\n")
        self.assertEqual(client.read().line, "OK")
        self.assertOK(client.read(), "role", "state")
        self.assertEqual(client.request("PING").line, "OK")


class LeaseTests(ServerTestCase):
    """CHECKOUT, HEARTBEAT and RELEASE of a concurrent license."""

    def setUp(self) -> None:
        super().setUp()
        self.licenseId = self.addLicense(PRODUCT, "concurrent", 5)

    def test_checkout(self) -> None:
        """CHECKOUT grants a lease of the uploaded concurrent license."""
        response = self.assertLeaseGrant(self.session().request("CHECKOUT"))
        self.assertEqual(response["license"], self.licenseId)
        self.assertEqual(response["kind"], "concurrent")

    def test_checkoutNamedProduct(self) -> None:
        """CHECKOUT with product= works like the default from HELLO."""
        response = self.session().request("CHECKOUT", product=PRODUCT)
        self.assertEqual(self.assertLeaseGrant(response)["license"], self.licenseId)

    def test_leaseIdsDiffer(self) -> None:
        """Every CHECKOUT without a repeated request key creates a new lease."""
        client = self.session()
        leases = {self.assertLeaseGrant(client.request("CHECKOUT"))["lease"] for _ in range(20)}
        self.assertEqual(len(leases), 20)

    def test_heartbeatLease(self) -> None:
        """HEARTBEAT lease= renews that lease."""
        client = self.session()
        granted = self.assertLeaseGrant(client.request("CHECKOUT"))
        renewed = self.assertRenewal(client.request("HEARTBEAT", lease=granted["lease"]))
        self.assertGreaterEqual(int(renewed["expires"]), int(granted["expires"]))

    def test_heartbeatAll(self) -> None:
        """HEARTBEAT without lease renews the machine's leases."""
        client = self.session()
        self.assertLeaseGrant(client.request("CHECKOUT"))
        self.assertLeaseGrant(client.request("CHECKOUT"))
        self.assertRenewal(client.request("HEARTBEAT"))

    def test_release(self) -> None:
        """RELEASE ends a lease; releasing or heartbeating it again gets 404 unknown-lease."""
        client = self.session()
        lease = self.assertLeaseGrant(client.request("CHECKOUT"))["lease"]
        self.assertEqual(client.request("RELEASE", lease=lease).line, "OK")
        self.assertErr(client.request("RELEASE", lease=lease), 404, "unknown-lease")
        self.assertErr(client.request("HEARTBEAT", lease=lease), 404, "unknown-lease")

    def test_neverGranted(self) -> None:
        """A lease id the server never granted is unknown."""
        client = self.session()
        fake = "l-AAAAAAAAAAAAAAAAAAAAAAAA"
        self.assertErr(client.request("HEARTBEAT", lease=fake), 404, "unknown-lease")
        self.assertErr(client.request("RELEASE", lease=fake), 404, "unknown-lease")

    def test_otherMachinesLease(self) -> None:
        """A lease belongs to its machine: another machine cannot heartbeat or release it."""
        owner = self.session("machine-owner")
        lease = self.assertLeaseGrant(owner.request("CHECKOUT"))["lease"]
        other = self.session("machine-other")
        self.assertErr(other.request("HEARTBEAT", lease=lease), 404, "unknown-lease")
        self.assertErr(other.request("RELEASE", lease=lease), 404, "unknown-lease")
        self.assertRenewal(owner.request("HEARTBEAT", lease=lease))

    def test_sameMachineOtherConnection(self) -> None:
        """The same machine may heartbeat and release its lease from a new connection."""
        first = self.session("machine-roams")
        lease = self.assertLeaseGrant(first.request("CHECKOUT"))["lease"]
        first.close()
        second = self.session("machine-roams")
        self.assertRenewal(second.request("HEARTBEAT", lease=lease))
        self.assertEqual(second.request("RELEASE", lease=lease).line, "OK")

    def test_quit(self) -> None:
        """QUIT is answered with OK, then the server closes the connection."""
        client = self.session()
        self.assertEqual(client.request("QUIT").line, "OK")
        self.assertEqual(client.waitClosed(), b"")

    def test_quitBeforeHello(self) -> None:
        """QUIT needs no HELLO."""
        client = self.connect()
        self.assertEqual(client.request("QUIT").line, "OK")
        self.assertEqual(client.waitClosed(), b"")

    def test_closingKeepsLease(self) -> None:
        """Closing the connection does not release the lease."""
        client = self.session("machine-q")
        lease = self.assertLeaseGrant(client.request("CHECKOUT"))["lease"]
        self.assertEqual(client.request("QUIT").line, "OK")
        client.waitClosed()
        self.assertRenewal(self.session("machine-q").request("HEARTBEAT", lease=lease))


class SeatTests(ServerTestCase):
    """Seats of a one-seat concurrent license, and the refusals of CHECKOUT."""

    def setUp(self) -> None:
        super().setUp()
        self.licenseId = self.addLicense(PRODUCT, "concurrent", 1)

    def test_requestKeyIsIdempotent(self) -> None:
        """A repeated request key returns the same lease and takes no other seat."""
        first = self.session("machine-a")
        lease = self.assertLeaseGrant(first.request("CHECKOUT", request="7f3a"))["lease"]
        again = self.assertLeaseGrant(first.request("CHECKOUT", request="7f3a"))
        self.assertEqual(again["lease"], lease)
        reconnected = self.session("machine-a")
        retried = self.assertLeaseGrant(reconnected.request("CHECKOUT", request="7f3a"))
        self.assertEqual(retried["lease"], lease)
        self.assertErr(self.session("machine-b").request("CHECKOUT"), 409, "no-seats")

    def test_sameMachineSharesSeat(self) -> None:
        """Leases of the same machine, user and product share one seat."""
        client = self.session("machine-a")
        first = self.assertLeaseGrant(client.request("CHECKOUT"))["lease"]
        second = self.assertLeaseGrant(client.request("CHECKOUT"))["lease"]
        self.assertNotEqual(first, second)
        self.assertErr(self.session("machine-b").request("CHECKOUT"), 409, "no-seats")

    def test_noSeats(self) -> None:
        """When every seat is in use CHECKOUT gets 409 no-seats with a message for people."""
        self.assertLeaseGrant(self.session("machine-a").request("CHECKOUT"))
        response = self.assertErr(self.session("machine-b").request("CHECKOUT"), 409, "no-seats")
        self.assertTrue(response.get("message"), f"no message= in {response.line!r}")

    def test_releaseFreesSeat(self) -> None:
        """After RELEASE of every lease the seat goes to another machine."""
        holder = self.session("machine-a")
        first = self.assertLeaseGrant(holder.request("CHECKOUT"))["lease"]
        second = self.assertLeaseGrant(holder.request("CHECKOUT"))["lease"]
        waiting = self.session("machine-b")
        self.assertErr(waiting.request("CHECKOUT"), 409, "no-seats")
        self.assertEqual(holder.request("RELEASE", lease=first).line, "OK")
        self.assertEqual(holder.request("RELEASE", lease=second).line, "OK")
        self.assertLeaseGrant(waiting.request("CHECKOUT"))

    def test_noLicense(self) -> None:
        """CHECKOUT of a product without any license gets 404 no-license."""
        client = self.session()
        self.assertErr(client.request("CHECKOUT", product="MapForce"), 404, "no-license")
        other = self.session("machine-mf", product="MapForce")
        self.assertErr(other.request("CHECKOUT"), 404, "no-license")

    def test_borrow(self) -> None:
        """BORROW days=3 lends a seat for about three days; it counts as in use."""
        client = self.session("machine-a")
        response = self.assertOK(
            client.request("BORROW", product=PRODUCT, days=3),
            "lease",
            "license",
            "kind",
            "expires",
        )
        self.assertEqual(response["license"], self.licenseId)
        self.assertEqual(response["kind"], "concurrent")
        self.assertAbout(int(response["expires"]), time.time() + 3 * DAY, DAY, "expires")
        waiting = self.session("machine-b")
        self.assertErr(waiting.request("CHECKOUT"), 409, "no-seats")
        self.assertEqual(client.request("RELEASE", lease=response["lease"]).line, "OK")
        self.assertLeaseGrant(waiting.request("CHECKOUT"))

    def test_borrowDefaultProduct(self) -> None:
        """BORROW without product borrows HELLO's product."""
        response = self.session().request("BORROW", days=1)
        self.assertOK(response, "lease", "license", "kind", "expires")
        self.assertAbout(int(response["expires"]), time.time() + DAY, DAY, "expires")

    def test_borrowDaysOutOfRange(self) -> None:
        """BORROW with days=0 or days=31 is a bad request and takes no seat."""
        client = self.session("machine-a")
        for days in (0, 31):
            response = client.request("BORROW", product=PRODUCT, days=days)
            self.assertErr(response, 400, "bad-request")
        self.assertLeaseGrant(self.session("machine-b").request("CHECKOUT"))


class AssignmentTests(ServerTestCase):
    """Installed and core licenses need an admin assignment."""

    def test_notAssigned(self) -> None:
        """An installed license serves a client only once the admin assigns it."""
        licenseId = self.addLicense("StyleVision", "installed", 2)
        client = self.connect()
        clientId = self.hello(client, product="StyleVision")["client"]
        self.assertErr(client.request("CHECKOUT"), 403, "not-assigned")
        self.assign(clientId, "StyleVision", [licenseId])
        response = self.assertLeaseGrant(client.request("CHECKOUT"))
        self.assertEqual(response["license"], licenseId)
        self.assertEqual(response["kind"], "installed")
        other = self.session("machine-other", product="StyleVision")
        self.assertErr(other.request("CHECKOUT"), 403, "not-assigned")

    def test_assignmentListed(self) -> None:
        """GET /api/clients lists the registered machine, its product and its licenses."""
        licenseId = self.addLicense("StyleVision", "installed", 2)
        clientId = self.hello(self.connect(), "machine-listed", product="StyleVision")["client"]
        self.assign(clientId, "StyleVision", [licenseId])
        entry = findClient(api_get(self.server, "/api/clients"), "machine-listed")
        self.assertIsNotNone(entry)
        self.assertEqual(entry["id"], clientId)
        self.assertEqual(entry["host"], "ws-machine-listed")
        products = {p["product"]: p for p in entry["products"]}
        self.assertEqual(products["StyleVision"]["version"], VERSION)
        self.assertEqual(products["StyleVision"]["licenses"], [licenseId])

    def test_insufficientCores(self) -> None:
        """An assigned 4-core license refuses an 8-core machine but serves 4 cores."""
        product = "RaptorXMLServer"
        licenseId = self.addLicense(product, "core", 1, cores=4)
        client = self.connect()
        clientId = self.hello(client, "machine-big", product=product, cores=8)["client"]
        self.assign(clientId, product, [licenseId])
        self.assertErr(client.request("CHECKOUT"), 403, "insufficient-cores")
        response = self.assertLeaseGrant(client.request("CHECKOUT", cores=4))
        self.assertEqual(response["license"], licenseId)
        self.assertEqual(response["kind"], "core")


class BadInputTests(ServerTestCase):
    """Malformed input gets an ERR line and never disturbs the server."""

    def setUp(self) -> None:
        super().setUp()
        self.addLicense(PRODUCT, "concurrent", 5)

    def sendTooLong(self, client: PlainClient, data: bytes) -> None:
        try:
            client.sendRaw(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before it has read everything

    def test_lineTooLong(self) -> None:
        """A 100 KB line gets 413 line-too-long, then the server closes the connection."""
        client = self.connect()
        self.sendTooLong(client, b"PING pad=" + b"x" * (100 * 1024) + b"\n")
        self.assertErr(client.read(), 413, "line-too-long")
        self.assertEqual(client.waitClosed(), b"")
        self.assertServedNormally()

    def test_lineTooLongWithoutEnd(self) -> None:
        """A line that passes 8192 bytes gets 413 even before its LF arrives."""
        client = self.connect()
        self.sendTooLong(client, b"PING pad=" + b"x" * 20000)
        self.assertErr(client.read(), 413, "line-too-long")
        self.assertEqual(client.waitClosed(), b"")

    def test_lineLengthLimit(self) -> None:
        """A line of 8192 bytes with its LF is served; one of 8193 bytes is too long."""
        client = self.connect()
        line = b"PING pad=" + b"x" * (8192 - len(b"PING pad=\n")) + b"\n"
        self.assertEqual(len(line), 8192)
        client.sendRaw(line)
        self.assertEqual(client.read().line, "OK")
        longer = b"PING pad=" + b"x" * (8193 - len(b"PING pad=\n")) + b"\n"
        self.sendTooLong(client, longer)
        self.assertErr(client.read(), 413, "line-too-long")
        self.assertEqual(client.waitClosed(), b"")

    def test_invalidUTF8(self) -> None:
        """Invalid UTF-8 gets 400 bad-request and the connection stays usable."""
        client = self.connect()
        client.sendRaw(b"PING note=\xff\xfe\xc3\x28\n")
        self.assertErr(client.read(), 400, "bad-request")
        client.sendRaw(b"\xc0\xafHELLO product=XMLSpy\n")
        self.assertErr(client.read(), 400, "bad-request")
        self.assertEqual(client.request("PING").line, "OK")
        self.hello(client)
        self.assertLeaseGrant(client.request("CHECKOUT"))

    def test_binaryNoise(self) -> None:
        """Each line of binary noise gets one 400 and the connection stays usable."""
        noise = random.Random(20251125).randbytes(4000)
        lines = [piece.removesuffix(b"\r") for piece in noise.split(b"\n")]
        lines = [line for line in lines if line]
        self.assertTrue(all(line.strip(b" ") for line in lines), "noise has a blank line")
        client = self.connect()
        client.sendRaw(noise + b"\nPING\n")
        for _ in lines:
            response = client.read()
            self.assertFalse(response.ok, response.line)
            self.assertEqual(response.code, 400, response.line)
            self.assertIn(response.reason, ("bad-request", "unknown-command"), response.line)
        self.assertEqual(client.read().line, "OK")
        self.hello(client)
        self.assertLeaseGrant(client.request("CHECKOUT"))

    def test_asciiNoise(self) -> None:
        """Lines that are valid UTF-8 but not requests get 400 and the session goes on."""
        client = self.connect()
        for raw in (
            b"\x00\x01\x02",
            b"=",
            b"ping",
            b"PING =x",
            b"PING a",
            b'PING a="x',
            b"PING A=1",
        ):
            client.sendRaw(raw + b"\n")
            response = client.read()
            self.assertEqual(response.code, 400, f"{raw!r} got {response.line!r}")
            self.assertIn(response.reason, ("bad-request", "unknown-command"), response.line)
        self.assertEqual(client.request("PING").line, "OK")

    def test_unknownCommand(self) -> None:
        """An unknown verb gets 400 unknown-command."""
        client = self.connect()
        self.assertErr(client.request("FROB"), 400, "unknown-command")
        self.assertErr(client.request("FROB", x=1), 400, "unknown-command")
        self.hello(client)
        self.assertErr(client.request("FROB"), 400, "unknown-command")
        self.assertLeaseGrant(client.request("CHECKOUT"))

    def test_duplicateKey(self) -> None:
        """A repeated key gets 400 bad-request."""
        client = self.connect()
        self.assertErr(client.request("PING", ("a", "1"), ("a", "1")), 400, "bad-request")
        response = client.request(
            "HELLO",
            ("product", PRODUCT),
            ("product", "MapForce"),
            version=VERSION,
            host="ws",
            machine="machine-dup",
        )
        self.assertErr(response, 400, "bad-request")
        self.assertEqual(client.request("PING").line, "OK")

    def test_halfLineThenDisconnect(self) -> None:
        """A client that sends half a line and goes away disturbs nobody."""
        waiting = self.connect()
        waiting.sendRaw(b"HELLO product=XMLSpy vers")
        self.assertServedNormally("machine-1")
        gone = self.connect()
        gone.sendRaw(b"CHECKOUT request=abc")
        gone.close()
        waiting.close()
        self.assertServedNormally("machine-2")

    def test_servedAfterAbuse(self) -> None:
        """After every kind of bad input on other connections, a new client is served."""
        long = self.connect()
        self.sendTooLong(long, b"X" * (100 * 1024) + b"\n")
        self.assertErr(long.read(), 413, "line-too-long")
        long.waitClosed()
        bad = self.connect()
        bad.sendRaw(b"\xff\n" + random.Random(7).randbytes(2000).replace(b"\n", b"") + b"\n")
        self.assertEqual(bad.read().code, 400)
        self.assertEqual(bad.read().code, 400)
        self.assertErr(bad.request("FROB"), 400, "unknown-command")
        self.assertErr(bad.request("PING", ("k", 1), ("k", 2)), 400, "bad-request")
        bad.sendRaw(b"HELLO product=XMLSpy vers")
        bad.close()
        self.assertServedNormally()


class PipeliningTests(ServerTestCase):
    """Requests sent together are answered one each, in order."""

    def setUp(self) -> None:
        super().setUp()
        self.addLicense(PRODUCT, "concurrent", 5)

    def test_pipeline(self) -> None:
        """HELLO, CHECKOUT, HEARTBEAT, STATUS and PING in one write get five answers in order."""
        client = self.connect()
        client.sendMany(
            (
                "HELLO",
                {"product": PRODUCT, "version": VERSION, "host": "ws", "machine": "machine-p"},
            ),
            ("CHECKOUT", {"request": "r1"}),
            ("HEARTBEAT", {}),
            ("STATUS", {}),
            ("PING", {}),
        )
        hello, checkout, heartbeat, status, ping = client.readMany(5)
        self.assertOK(hello, "client", "heartbeat")
        self.assertLeaseGrant(checkout)
        self.assertRenewal(heartbeat)
        self.assertNotIn("lease", heartbeat.args)
        self.assertOK(status, "role", "state")
        self.assertNotIn("client", status.args)
        self.assertEqual(ping.line, "OK")

    def test_pipelineWithErrors(self) -> None:
        """Errors in a pipeline keep their place among the answers."""
        client = self.connect()
        client.sendRaw(
            b"CHECKOUT\n"
            b"FROB\n"
            b"HELLO product=XMLSpy version=2025r2 host=ws machine=machine-e\n"
            b"HELLO product=XMLSpy version=2025r2 host=ws machine=machine-e\n"
            b"RELEASE lease=l-nothingnothingnothing\n"
            b"CHECKOUT\n"
            b"PING\n"
        )
        answers = client.readMany(7)
        self.assertErr(answers[0], 401, "hello-required")
        self.assertErr(answers[1], 400, "unknown-command")
        self.assertOK(answers[2], "client")
        self.assertErr(answers[3], 400, "bad-request")
        self.assertErr(answers[4], 404, "unknown-lease")
        self.assertLeaseGrant(answers[5])
        self.assertEqual(answers[6].line, "OK")

    def test_noUnaskedLines(self) -> None:
        """The server sends nothing that was not asked for: each answer is the next line."""
        client = self.connect()
        for verb in ("STATUS", "PING", "STATUS"):
            client.send(verb)
        self.assertOK(client.read(), "role")
        self.assertEqual(client.read().line, "OK")
        self.assertOK(client.read(), "role")
        self.hello(client)
        self.assertLeaseGrant(client.request("CHECKOUT"))
        client.send("CHECKOUT")
        client.send("STATUS")
        self.assertLeaseGrant(client.read())
        self.assertOK(client.read(), "role")
        self.assertEqual(client.request("PING").line, "OK")


class ConcurrencyTests(ServerTestCase):
    """Many clients asking at the same moment never get more seats than there are."""

    clients = 50
    seats = 5

    def test_concurrentCheckouts(self) -> None:
        """50 machines check out a 5-seat license at once: 5 get a lease, 45 get 409."""
        licenseId = self.addLicense(PRODUCT, "concurrent", self.seats)
        sessions = [self.session(f"machine-{n:02d}") for n in range(self.clients)]
        ready = threading.Barrier(self.clients, timeout=20)

        def checkout(client: PlainClient) -> Response:
            ready.wait()
            client.send("CHECKOUT", request="once")
            return client.read(timeout=20)

        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            answers = list(pool.map(checkout, sessions, timeout=60))
        granted = [a for a in answers if a.ok]
        refused = [a for a in answers if not a.ok]
        self.assertEqual(len(granted), self.seats, [a.line for a in answers])
        for answer in granted:
            self.assertLeaseGrant(answer)
            self.assertEqual(answer["license"], licenseId)
        self.assertEqual(len({a["lease"] for a in granted}), self.seats)
        for answer in refused:
            self.assertErr(answer, 409, "no-seats")
        self.assertEqual(len(refused), self.clients - self.seats)


class ExpiryTests(ServerTestCase):
    """A lease that is not heartbeated expires and frees its seat."""

    extraArgs = ("--lease-ttl", "4")

    def test_expiredLeaseHoldsNoSeat(self) -> None:
        """Once its ttl passes without HEARTBEAT, a lease is unknown and its seat is free."""
        self.addLicense(PRODUCT, "concurrent", 1)
        holder = self.session("machine-a")
        lease = self.assertLeaseGrant(holder.request("CHECKOUT"))["lease"]
        waiting = self.session("machine-b")
        wait_for(lambda: waiting.request("CHECKOUT").ok, 20, "the expired seat to be free")
        self.assertErr(holder.request("HEARTBEAT", lease=lease), 404, "unknown-lease")


def findClient(clients: list[dict], machine: str) -> dict | None:
    for entry in clients:
        if entry.get("machine") == machine:
            return entry
    return None


class RestartTests(ServerTestCase):
    """What the server holds survives a clean stop and a kill."""

    def prepare(self) -> dict[str, str]:
        """Licenses, a registration, an assignment and leases to look for afterwards."""
        state = {
            "concurrent": self.addLicense(PRODUCT, "concurrent", 5),
            "installed": self.addLicense("StyleVision", "installed", 1),
        }
        client = self.connect()
        state["client"] = self.hello(client, "machine-kept", product="StyleVision")["client"]
        self.assign(state["client"], "StyleVision", [state["installed"]])
        state["lease"] = self.assertLeaseGrant(client.request("CHECKOUT", product=PRODUCT))[
            "lease"
        ]
        state["installedLease"] = self.assertLeaseGrant(client.request("CHECKOUT"))["lease"]
        client.close()
        return state

    def verify(self, state: dict[str, str]) -> None:
        listing = json.dumps(api_get(self.server, "/api/licenses"))
        self.assertIn(state["concurrent"], listing)
        self.assertIn(state["installed"], listing)
        entry = findClient(api_get(self.server, "/api/clients"), "machine-kept")
        self.assertIsNotNone(entry, "the registration is gone")
        self.assertEqual(entry["id"], state["client"])
        products = {p["product"]: p for p in entry["products"]}
        self.assertIn("StyleVision", products)
        self.assertEqual(products["StyleVision"]["licenses"], [state["installed"]])

        client = self.connect()
        hello = self.hello(client, "machine-kept", product="StyleVision")
        self.assertEqual(hello["client"], state["client"])
        self.assertRenewal(client.request("HEARTBEAT", lease=state["lease"]))
        self.assertRenewal(client.request("HEARTBEAT", lease=state["installedLease"]))
        self.assertLeaseGrant(client.request("CHECKOUT"))
        other = self.session("machine-new", product="StyleVision")
        self.assertErr(other.request("CHECKOUT"), 403, "not-assigned")
        self.assertServedNormally()

    def test_cleanRestart(self) -> None:
        """Licenses, registrations, assignments and leases survive a SIGTERM and a start."""
        state = self.prepare()
        self.server.stop()
        self.server.start()
        self.verify(state)

    def test_killedRestart(self) -> None:
        """Licenses, registrations, assignments and leases survive a SIGKILL and a start."""
        state = self.prepare()
        self.server.kill()
        self.server.start()
        self.verify(state)

    def test_portFilesRemovedOnStop(self) -> None:
        """A clean stop removes the port files, and a new start writes them again."""
        self.server.stop()
        self.assertFalse(self.server.licensing_port_file.exists())
        self.assertFalse(self.server.web_port_file.exists())
        self.server.start()
        self.assertOK(self.connect().request("PING"))

    def test_staleRecordedPortsReplaced(self) -> None:
        """After a kill the next start writes the ports it really listens on."""
        self.server.kill()
        self.server.start()
        self.assertEqual(self.connect().request("PING").line, "OK")
        health = http_request(self.server, "GET", "/healthz", auth=False)
        self.assertEqual(health.status, 200, health)


class WebTests(ServerTestCase):
    """The web port's health, status and admin authentication."""

    def test_healthz(self) -> None:
        """GET /healthz answers 200 while the primary serves."""
        health = http_request(self.server, "GET", "/healthz", auth=False)
        self.assertEqual(health.status, 200, health)

    def test_status(self) -> None:
        """GET /api/status describes the lone active primary, like STATUS does."""
        result = http_request(self.server, "GET", "/api/status", auth=False)
        self.assertEqual(result.status, 200, result)
        status = result.json()
        for key in ("name", "role", "state", "version", "edition", "primary", "failover"):
            self.assertIn(key, status)
        self.assertIn("revision", status)
        self.assertEqual(status["role"], "primary")
        self.assertEqual(status["state"], "active")
        self.assertIsNone(status["primary"])
        self.assertIsNone(status["failover"])
        self.assertIsInstance(status["revision"], int)
        line = self.connect().request("STATUS")
        self.assertEqual(status["name"], line["server"])
        self.assertEqual(status["version"], line["version"])
        self.assertEqual(status["edition"], line["edition"])

    def test_adminNeedsAuth(self) -> None:
        """The admin API refuses requests without the admin password, or with a wrong one
        (which then makes the address wait a second: 429 with Retry-After)."""
        self.assertEqual(http_request(self.server, "GET", "/api/licenses").status, 200)
        self.assertEqual(http_request(self.server, "GET", "/api/licenses", auth=False).status, 401)
        wrong = http_request(self.server, "GET", "/api/licenses", auth=("admin", "wrong"))
        self.assertEqual((wrong.status, wrong.json()), (401, {"error": "wrong password"}))
        early = http_request(self.server, "GET", "/api/licenses")
        self.assertEqual((early.status, early.headers["Retry-After"]), (429, "1"))

    def test_untrustedLicense(self) -> None:
        """A license signed by an untrusted key is refused with 400 and a reason."""
        otherKey = make_vendor_key(self.base / "other-vendor")
        body = self.issue(PRODUCT, "concurrent", 5, key=otherKey).read_bytes()
        result = http_request(self.server, "POST", "/api/licenses", body)
        self.assertEqual(result.status, 400, result)
        self.assertIn("error", result.json())

    def test_duplicateLicense(self) -> None:
        """Uploading a license that is already in the pool gets 409."""
        path = self.issue(PRODUCT, "concurrent", 5)
        upload_license(self.server, path)
        result = http_request(self.server, "POST", "/api/licenses", path.read_bytes())
        self.assertEqual(result.status, 409, result)

    def test_licenseWorksAfterUpload(self) -> None:
        """An uploaded license is listed and serves CHECKOUT at once."""
        licenseId = self.addLicense(PRODUCT, "concurrent", 2)
        self.assertIn(licenseId, json.dumps(api_get(self.server, "/api/licenses")))
        response = self.assertLeaseGrant(self.session().request("CHECKOUT"))
        self.assertEqual(response["license"], licenseId)


class HarnessTests(unittest.TestCase):
    """The harness itself reports failures clearly."""

    def test_waitForTimesOut(self) -> None:
        """wait_for fails with what it waited for once the deadline passes."""
        error = self.assertRaises(HarnessError, wait_for, lambda: False, 0.1, "nothing")
        self.assertIn("nothing", str(error))

    def test_startFailureShowsLog(self) -> None:
        """A bad option value ends the server with exit code 1 and one line, no traceback."""
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        server = ServerProcess(base / "data", "--role", "nonsense")
        self.addCleanup(server.stop)
        error = self.assertRaises(HarnessError, server.start)
        self.assertIn("exited", str(error))
        self.assertEqual(server.process.returncode, 1)
        output = server.out_path.read_text()
        self.assertNotIn("Traceback", output)
        self.assertIn("role", output)


class PlainClientTests(unittest.TestCase):
    """The independent client's own line formatting and parsing, without a server."""

    def test_bareValues(self) -> None:
        """Printable values without space or quote go bare, '=' included."""
        line = formatLine("HELLO", product="XMLSpy", machine="a=b", version=2025)
        self.assertEqual(line, b"HELLO product=XMLSpy machine=a=b version=2025\n")

    def test_quotedValues(self) -> None:
        """Empty values and values with spaces, quotes or control characters are quoted."""
        line = formatLine("HELLO", host='a "b"', user="", note="x\ty", name="ü")
        self.assertEqual(line, 'HELLO host="a \\"b\\"" user="" note="x\\ty" name=ü\n'.encode())

    def test_repeatedPairs(self) -> None:
        """Pairs keep their order and may repeat; None leaves an argument out."""
        line = formatLine("PING", ("a", 1), ("a", 2), b=None)
        self.assertEqual(line, b"PING a=1 a=2\n")

    def test_badNames(self) -> None:
        """Verbs and keys that the protocol does not allow are refused before sending."""
        self.assertRaises(ValueError, formatLine, "ping")
        self.assertRaises(ValueError, formatLine, "PING", ("Key", 1))

    def test_parseOK(self) -> None:
        """An OK line gives its arguments by key."""
        response = parseResponse("OK lease=l-Jm4qK7vX2cRw9Tb5 expires=1795000120 ttl=120")
        self.assertTrue(response.ok)
        self.assertEqual(response["lease"], "l-Jm4qK7vX2cRw9Tb5")
        self.assertEqual(
            response.args, {"lease": "l-Jm4qK7vX2cRw9Tb5", "expires": "1795000120", "ttl": "120"}
        )
        self.assertEqual(parseResponse("OK").args, {})

    def test_parseErr(self) -> None:
        """An ERR line gives code, reason and a decoded quoted message."""
        response = parseResponse(
            'ERR 409 no-seats message="all 5 seats of \\"MapForce\\" are\\u0020in use" n=1'
        )
        self.assertFalse(response.ok)
        self.assertEqual((response.code, response.reason), (409, "no-seats"))
        self.assertEqual(response["message"], 'all 5 seats of "MapForce" are in use')
        self.assertEqual(response["n"], "1")
        self.assertEqual(parseResponse("ERR 401 hello-required").args, {})

    def test_parseJunk(self) -> None:
        """Lines that are not responses raise ProtocolError."""
        for line in (
            "",
            "HELLO",
            "ERR x bad",
            "ERR 400",
            "OK a",
            'OK a="x',
            "OK a=1 a=2",
            "OK A=1",
        ):
            self.assertRaises(ProtocolError, parseResponse, line)

    def test_responseIsResponse(self) -> None:
        """Parsed responses keep their line."""
        self.assertIsInstance(parseResponse("OK"), Response)
        self.assertEqual(str(parseResponse("OK x=1")), "OK x=1")
