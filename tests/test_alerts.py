"""Alert e-mail through Twisted's SMTP client, against real SMTP servers started in the test.

Each server is Twisted's own ``ESMTP`` on a local port of the real reactor: one that
takes the message, one that refuses the recipient, one that takes the connection and
never answers; and a port where nothing listens. The settings are checked like every
licensing setting; the SMTP password is never shown.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.mail import smtp
from twisted.trial import unittest
from zope.interface import implementer

from licenseserver import alerts, certs, usage
from licenseserver.localstate import FAILOVER_ADDRESS
from licenseserver.model import Change, Setting
from licenseserver.protocols import wire
from licenseserver.roles.failover import FailoverRole
from licenseserver.testing import FakeStore
from tests.helpers import hello, licenseFile, makeRole, run
from tests.test_failover import HEARTBEAT, TAKEOVER, PairTestCase
from tests.test_web_http import WebTestCase


@implementer(smtp.IMessage)
class Collected:
    def __init__(self, inbox: list[bytes]):
        self.inbox = inbox
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred:
        self.inbox.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class Delivery:
    """Takes mail for ``admin@example.com`` only."""

    def __init__(self, inbox: list[bytes]):
        self.inbox = inbox

    def receivedHeader(self, helo, origin, recipients) -> bytes:
        return b"Received: by the test"

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        if user.dest.local != b"admin":
            raise smtp.SMTPBadRcpt(user)
        return lambda: Collected(self.inbox)


class Tracked:
    """A server factory part that keeps a Deferred of each connection's end."""

    def closing(self, p) -> None:
        self.closed.append(defer.Deferred())
        lost = p.connectionLost

        def connectionLost(reason=None, d=self.closed[-1]):
            lost(reason)
            d.callback(None)

        p.connectionLost = connectionLost


class Server(Tracked, protocol.ServerFactory):
    """Twisted's ESMTP server; it offers STARTTLS with ``tls`` (server TLS options)."""

    def __init__(self, inbox: list[bytes], tls=None):
        self.inbox = inbox
        self.tls = tls
        self.closed: list[defer.Deferred] = []

    def buildProtocol(self, addr):
        p = smtp.ESMTP(contextFactory=self.tls)
        p.delivery = Delivery(self.inbox)
        p.factory = self
        self.closing(p)
        return p


class SilentServer(Tracked, protocol.ServerFactory):
    """Takes the connection and never says a word."""

    def __init__(self):
        self.closed: list[defer.Deferred] = []

    def buildProtocol(self, addr):
        p = protocol.Protocol()
        p.factory = self
        self.closing(p)
        return p


class Listening:
    """Servers on local ports of the real reactor, waited for until their connections end."""

    def listen(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: defer.gatherResults(factory.closed))
        return port.getHost().port


class MailerTests(Listening, unittest.TestCase):
    def mailer(self, port: int, **settings) -> alerts.Mailer:
        values = {
            **alerts.SETTING_DEFAULTS,
            "alert_smtp_host": "127.0.0.1",
            "alert_smtp_port": port,
            "alert_from": "licenseserver@example.com",
            "alert_to": ["admin@example.com"],
            **settings,
        }
        return alerts.Mailer(reactor, values.get)

    async def test_sent(self):
        inbox: list[bytes] = []
        port = self.listen(Server(inbox))
        answer = await self.mailer(port).send("seats", "XMLSpy refused a request")
        self.assertEqual(answer, "accepted for 1 of 1 recipients")
        (mail,) = inbox
        self.assertIn(b"Subject: seats", mail)
        self.assertIn(b"XMLSpy refused a request", mail)

    async def test_refused(self):
        """The server's refusal, in words."""
        port = self.listen(Server([]))
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port, alert_to=["nobody@example.com"]).send("s", "b")
        self.assertIn(f"the SMTP server 127.0.0.1:{port} refused", str(caught.exception))

    async def test_down(self):
        """Nothing listens: the connection's failure, in words."""
        listening = reactor.listenTCP(0, Server([]), interface="127.0.0.1")
        port = listening.getHost().port
        await listening.stopListening()
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port).send("s", "b")
        self.assertIn(f"could not send to 127.0.0.1:{port}", str(caught.exception))

    async def test_slow(self):
        """A server that never answers: given up after the timeout, without blocking."""
        self.patch(alerts, "TIMEOUT", 0.5)
        port = self.listen(SilentServer())
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port).send("s", "b")
        self.assertIn("no answer within 0.5 s", str(caught.exception))

    def trustedCertificate(self, ca=None, ips=("127.0.0.1",)):
        """Server TLS options for 127.0.0.1 signed by a CA the process trusts (through
        ``SSL_CERT_FILE``, as an admin would for a private CA), or by ``ca``."""
        trusted = certs.make_ca("Mail CA")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(certs.certificate_pem(trusted.certificate))
        before = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = path
        self.addCleanup(
            lambda: (
                os.environ.pop("SSL_CERT_FILE")
                if before is None
                else os.environ.__setitem__("SSL_CERT_FILE", before)
            )
        )
        cert, key = certs.make_server_certificate(ca or trusted, ips=ips)
        pem = certs.key_pem(key) + certs.certificate_pem(cert)
        return ssl.PrivateCertificate.loadPEM(pem).options()

    async def test_startTLS(self):
        """``starttls``: the message goes only after STARTTLS, the certificate checked."""
        inbox: list[bytes] = []
        server = Server(inbox, tls=self.trustedCertificate())
        port = self.listen(server)
        answer = await self.mailer(port, alert_smtp_tls="starttls").send("s", "over TLS")
        self.assertEqual(answer, "accepted for 1 of 1 recipients")
        (mail,) = inbox
        self.assertIn(b"over TLS", mail)

    async def test_startTLSRequired(self):
        """``starttls`` with a server that does not offer it: nothing sent in the clear."""
        inbox: list[bytes] = []
        port = self.listen(Server(inbox))
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port, alert_smtp_tls="starttls").send("s", "b")
        self.assertIn("refused", str(caught.exception))
        self.assertEqual(inbox, [])

    async def test_implicitTLS(self):
        """``tls``: TLS from the first byte (port 465 style)."""
        inbox: list[bytes] = []
        server = Server(inbox)
        listening = reactor.listenSSL(0, server, self.trustedCertificate(), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(lambda: defer.gatherResults(server.closed))
        port = listening.getHost().port
        answer = await self.mailer(port, alert_smtp_tls="tls").send("s", "implicit")
        self.assertEqual(answer, "accepted for 1 of 1 recipients")
        self.assertIn(b"implicit", inbox[0])

    async def test_untrustedCertificate(self):
        """A certificate no trusted CA signed: refused, nothing sent."""
        inbox: list[bytes] = []
        server = Server(inbox, tls=self.trustedCertificate(ca=certs.make_ca("Stranger")))
        port = self.listen(server)
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port, alert_smtp_tls="starttls").send("s", "b")
        self.assertIn(
            f"TLS with 127.0.0.1:{port} failed: certificate verify failed", str(caught.exception)
        )
        self.assertEqual(inbox, [])

    async def test_otherHostsCertificate(self):
        """A trusted certificate for another host: refused, nothing sent."""
        inbox: list[bytes] = []
        server = Server(inbox, tls=self.trustedCertificate(ips=["127.0.0.2"]))
        port = self.listen(server)
        with self.assertRaises(alerts.AlertError) as caught:
            await self.mailer(port, alert_smtp_tls="starttls").send("s", "b")
        self.assertIn(f"TLS with 127.0.0.1:{port} failed", str(caught.exception))
        self.assertEqual(inbox, [])

    def test_notConfigured(self):
        failure = self.failureResultOf(self.mailer(25, alert_smtp_host="").send("s", "b"))
        self.assertIn("no SMTP host", str(failure.value))


class AlertSettingsTests(WebTestCase):
    def put(self, **values) -> int:
        return self.api("PUT", "/api/settings", json.dumps(values).encode()).status

    def test_checked(self):
        for name, bad in (
            ("alert_smtp_port", 0),
            ("alert_smtp_port", 70000),
            ("alert_smtp_tls", "ssl"),
            ("alert_from", "not an address"),
            ("alert_to", "admin@example.com"),
            ("alert_to", ["a@b", "nope"]),
            ("alert_smtp_host", "two\nlines"),
        ):
            self.assertEqual(self.put(**{name: bad}), 400, (name, bad))
        self.assertEqual(self.put(alert_smtp_port=587, alert_smtp_tls="starttls"), 200)

    def test_passwordWriteOnly(self):
        """The SMTP password is taken, never shown: only whether it is set."""
        self.assertEqual(self.put(alert_smtp_password="s3cret"), 200)
        body = self.api("GET", "/api/settings").body
        self.assertNotIn("s3cret", body)
        self.assertTrue(json.loads(body)["alert_smtp_password_set"])

    def test_testWithoutSettings(self):
        """POST /api/alerts/test without a host: 502 with the reason, and in Messages."""
        response = self.api("POST", "/api/alerts/test")
        self.assertEqual(response.status, 502)
        self.assertIn("no SMTP host", json.loads(response.body)["error"])
        events = self.successResultOf(self.store.events(5))
        self.assertEqual(events[0].kind, "alert-failed")


async def until(condition, deadline: float = 10.0) -> None:
    """Poll ``condition`` on the real reactor until it holds, failing after ``deadline``."""
    waited = 0.0
    while not condition():
        if waited >= deadline:
            raise AssertionError(f"not within {deadline} s")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class AlerterTests(Listening, unittest.TestCase):
    """The role's alerts through a real SMTP server: at most one per key and interval,
    retried after a failure, each outcome in Messages."""

    def role(self, port: int):
        store = FakeStore()
        role = makeRole(store, reactor)
        self.addCleanup(role.stopService)
        self.successResultOf(run(role.addLicenses(licenseFile({"seats": 1}))))
        values = {
            "alert_smtp_host": "127.0.0.1",
            "alert_smtp_port": port,
            "alert_from": "licenseserver@example.com",
            "alert_to": ["admin@example.com"],
        }
        self.successResultOf(run(role.updateSettings(values)))
        return role, store

    async def test_noSeatsOncePerHour(self):
        inbox: list[bytes] = []
        server = Server(inbox)
        role, store = self.role(self.listen(server))
        await run(role.checkout(hello(role, "m1"), {}))
        for machine in ("m2", "m3"):
            with self.assertRaises(wire.ProtocolError):
                await run(role.checkout(hello(role, machine), {}))
        await until(lambda: inbox)
        await defer.gatherResults(server.closed)
        self.assertEqual(len(server.closed), 1)  # one connection: the second was not mailed
        (mail,) = inbox
        self.assertIn(b"XMLSpy refused a seat", mail)
        events = await store.events(20)
        self.assertIn("alert-sent", [e.kind for e in events])

    async def test_slowServerHoldsNothingUp(self):
        """While an alert waits on a server that does not answer, seats are granted and
        released at once; the alert gives up after its timeout, recorded in Messages."""
        self.patch(alerts, "TIMEOUT", 0.5)
        self.patch(alerts, "RETRIES", ())
        server = SilentServer()
        role, store = self.role(self.listen(server))
        role.alerter.alert("test", "subject", "body")
        await until(lambda: server.closed)
        lease = self.successResultOf(run(role.checkout(hello(role, "m1"), {})))["lease"]
        self.successResultOf(run(role.release(hello(role, "m1"), {"lease": lease})))
        await until(lambda: [e for e, _ in store._events if e.kind == "alert-failed"])
        (failed,) = [e for e, _ in store._events if e.kind == "alert-failed"]
        self.assertIn("no answer within 0.5 s", failed.message)

    async def test_retriedAfterAFailure(self):
        """A refusal is recorded and tried again after the back-off; then given up."""
        self.patch(alerts, "RETRIES", (0.05,))
        role, store = self.role(self.listen(Server([])))
        self.successResultOf(run(role.updateSettings({"alert_to": ["nobody@example.com"]})))
        role.alerter.alert("test", "subject", "body")

        await until(lambda: len([e for e in store._events if e[0].kind == "alert-failed"]) >= 2)
        events = [e for e, _ in store._events if e.kind == "alert-failed"]
        self.assertIn("trying again in 0.05 s", events[0].message)
        self.assertIn("given up", events[1].message)


SMTP = {
    "alert_smtp_host": "127.0.0.1",
    "alert_from": "licenseserver@example.com",
    "alert_to": ["admin@example.com"],
}


class TroubleAlertTests(Listening, unittest.TestCase):
    """Alerts of trouble that lasts: a store that stopped, a failover link lost for longer
    than the takeover time (at the primary, and at a failover that did not take over)."""

    def setUp(self) -> None:
        self.inbox: list[bytes] = []
        self.server = Server(self.inbox)
        self.settings = {**SMTP, "alert_smtp_port": self.listen(self.server)}

    def started(self, role):
        self.addCleanup(role.stopService)
        self.successResultOf(run(role.updateSettings(self.settings)))
        return role

    def synced(self, store: FakeStore) -> FakeStore:
        """``store`` holding the alert settings, as a failover's does once synced."""
        changes = [Change.put(Setting(name, value)) for name, value in self.settings.items()]
        self.successResultOf(store.commit(1, changes))
        return store

    async def mailed(self, role, *words: str) -> bytes:
        """Watch until one alert is mailed; it says ``words``, and no second one follows."""
        await until(lambda: (role.watch(), self.inbox)[1])
        await defer.gatherResults(self.server.closed)
        role.watch()
        self.assertEqual(len(self.server.closed), 1)
        (mail,) = self.inbox
        for word in words:
            self.assertIn(word.encode(), mail)
        return mail

    async def test_storeStopped(self):
        store = FakeStore()
        role = self.started(makeRole(store, reactor))
        role.watch()
        self.assertEqual(self.inbox, [])
        store.breakDown("disk I/O error")
        await self.mailed(role, "ls1: the store stopped", "disk I/O error")

    async def test_failoverLost(self):
        """A primary paired before its restart whose failover never comes back."""
        store = FakeStore()
        self.successResultOf(store.setLocal(FAILOVER_ADDRESS, "ls2:35355"))
        role = self.started(makeRole(store, reactor, takeoverAfter=0.05))
        await self.mailed(role, "link to the failover ls2:35355 is lost")

    async def test_primaryLost(self):
        """A failover that never synced cannot take over: it says so."""
        closed = reactor.listenTCP(0, protocol.ServerFactory(), interface="127.0.0.1")
        port = closed.getHost().port
        await closed.stopListening()
        role = makeRole(
            self.synced(FakeStore()),
            reactor,
            cls=FailoverRole,
            primaryEndpoint=TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            primaryAddress=f"127.0.0.1:{port}",
            heartbeat=0.05,
            takeoverAfter=0.1,
            peerSecret="s",
        )
        self.addCleanup(role.stopService)
        await self.mailed(role, "link to the primary", "never completed a sync")


class LinkLostMessagesTests(PairTestCase):
    """The primary's Messages tell of a failover link lost longer than the takeover time,
    once, and of its return."""

    def kinds(self) -> list[str]:
        return [e.kind for e, _ in self.primaryStore._events]

    def test_cut(self):
        self.beat()
        self.endpoint.silent = True
        self.advance(TAKEOVER - 1)
        self.assertNotIn("failover-lost", self.kinds())
        self.advance(usage.SAMPLE_EVERY + 1)
        self.assertEqual(self.kinds().count("failover-lost"), 1)
        self.advance(3 * usage.SAMPLE_EVERY)
        self.assertEqual(self.kinds().count("failover-lost"), 1)
        self.endpoint.silent = False
        self.advance(usage.SAMPLE_EVERY + HEARTBEAT)
        self.assertIn("failover-back", self.kinds())

    def test_notPaired(self):
        """A primary that never had a failover has none to lose."""
        self.stop(self.failover)
        primary = makeRole(FakeStore(), self.clock, takeoverAfter=TAKEOVER)
        self.addCleanup(primary.stopService)
        self.advance(3 * usage.SAMPLE_EVERY)
        self.assertNotIn("failover-lost", [e.kind for e, _ in primary.store._events])


class AlertSettingsTabTests(WebTestCase):
    """The Settings tab's alert e-mail form: save, the password write-only, a test e-mail."""

    def setUp(self) -> None:
        super().setUp()
        self.login()

    def submit(self, fields: dict) -> object:
        """Post a form of the Settings tab, with the page's CSRF token."""
        return self.post("/settings", {"csrf": self.token("/settings"), **fields})

    def test_saveAndTest(self):
        fields = {
            "action": "alerts",
            "alert_smtp_host": "smtp.example.com",
            "alert_smtp_port": "587",
            "alert_smtp_tls": "starttls",
            "alert_smtp_user": "",
            "alert_smtp_password": "s3cret",
            "alert_from": "ls@example.com",
            "alert_to": "admin@example.com, ops@example.com",
        }
        self.assertRedirect(self.submit(fields), "/settings")
        page = self.get("/settings").body
        self.assertIn("Alert e-mail settings saved.", page)
        self.assertIn('value="admin@example.com, ops@example.com"', page)
        self.assertIn('<option value="starttls" selected="selected">', page)
        self.assertIn("Password (set;", page)
        self.assertNotIn("s3cret", page)
        role = self.role.current
        self.assertEqual(role.setting("alert_to"), ["admin@example.com", "ops@example.com"])
        fields["alert_smtp_password"] = ""
        self.submit(fields)
        self.assertEqual(role.setting("alert_smtp_password"), "s3cret")
        fields["alert_to"] = "not an address"
        self.submit(fields)
        self.assertIn("alert_to: must be a list of e-mail addresses", self.get("/settings").body)

    def test_testWithoutServer(self):
        self.submit({"action": "alert-test"})
        self.assertIn("no SMTP host or no recipient is set", self.get("/settings").body)
