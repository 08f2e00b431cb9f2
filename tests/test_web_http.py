"""Tests for the web pages over HTTP: login, sessions, CSRF, the tabs' forms, standby.

Requests go through a real ``Site`` and ``HTTPChannel`` into a
``StringTransport``. Time is one ``Clock`` for the role, the sessions and
the login throttle, and password checks run at once instead of in a thread,
so every answer is there as soon as the request is fed in (or after the
Clock is advanced past a throttle's delay).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from zope.interface import directlyProvides

from licenseserver import passwords
from licenseserver.addresses import parse_host_port
from licenseserver.testing import FakeStore, PumpEndpoint
from licenseserver.web import sessions as sessions_module
from licenseserver.web.auth import AdminAuth, reportGuessing
from licenseserver.web.bounded import LimitedSite
from licenseserver.web.facade import ServerView
from licenseserver.web.root import buildRoot
from licenseserver.web.sessions import SessionStore
from licenseserver.web.throttle import LoginThrottle
from tests.helpers import START, hello, licenseFile, makeSwitch, run

PASSWORD = "correct horse"
HASH = passwords.hash_password(PASSWORD, n=2)
COOKIE = sessions_module.COOKIE.decode()


class InlineThreads:
    """A thread pool that runs each call at once."""

    def callInThreadWithCallback(self, onResult: Any, f: Any, *args: Any, **kw: Any) -> None:
        try:
            result = f(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class InlineReactor(Clock):
    """A Clock that is also the reactor of ``deferToThreadPool``: no real threads."""

    def getThreadPool(self) -> InlineThreads:
        return InlineThreads()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@dataclass
class Response:
    """One parsed HTTP/1.0 answer."""

    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def location(self) -> str | None:
        return self.header("location")

    def cookie(self) -> str | None:
        """The Set-Cookie line of the session cookie, if any."""
        for line in self.headers.get("set-cookie", []):
            if line.startswith(COOKIE + "="):
                return line
        return None

    def csrf(self) -> str:
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.body)
        assert match, "no CSRF token on the page"
        return match.group(1)


class Pending:
    """A request fed into a channel; ``result()`` once its answer is complete."""

    def __init__(self, transport: StringTransport):
        self.transport = transport

    def done(self) -> bool:
        return self.transport.disconnecting

    def result(self) -> Response:
        assert self.done(), "the answer is not complete yet"
        raw = self.transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return Response(status, headers, body.decode("utf-8"))


class WebRequests:
    """Requests to the web site ``self.site``, each in a fresh in-memory channel,
    carrying the session cookie ``self.cookie`` (kept by ``login``)."""

    site: Any
    cookie: str | None = None

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        cookie: str | None = None,
        peer: str = "10.0.0.1",
        secure: bool = False,
    ) -> Pending:
        """Feed one request into a fresh channel; the answer may still be pending."""
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8088),
            peerAddress=IPv4Address("TCP", peer, 40000),
        )
        if secure:
            directlyProvides(transport, ISSLTransport)
            transport.setTcpNoDelay = lambda enabled: None
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        fields = {"Host": "127.0.0.1:8088", "Content-Length": str(len(body))}
        fields.update(headers or {})
        cookie = cookie if cookie is not None else self.cookie
        if cookie:
            fields["Cookie"] = f"{COOKIE}={cookie}"
        head = f"{method} {path} HTTP/1.0\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in fields.items()
        )
        channel.dataReceived(head.encode("latin-1") + b"\r\n" + body)
        return Pending(transport)

    def request(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Response:
        pending = self.send(method, path, body, **kw)
        return pending.result()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, fields: dict[str, str], **kw: Any) -> Response:
        body = urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **kw.pop("headers", {})}
        return self.request("POST", path, body, headers=headers, **kw)

    def upload(
        self, path: str, fields: dict[str, str], files: list[bytes], field: str = "file"
    ) -> Response:
        boundary = "----licenseserver-test-boundary"
        parts = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for number, data in enumerate(files):
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="l{number}.lic"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + data
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", path, body, headers=headers)

    def api(
        self, method: str, path: str, body: bytes = b"", user: str = "admin", **kw: Any
    ) -> Response:
        """An admin API request with Basic credentials: ``user`` and the admin password."""
        headers = {"Authorization": "Basic " + _basic(f"{user}:{PASSWORD}")}
        return self.request(method, path, body, headers=headers, cookie="", **kw)

    def login(self, password: str = PASSWORD, **kw: Any) -> Response:
        """Log in; keep the session cookie for the following requests."""
        response = self.post("/login", {"password": password}, cookie="", **kw)
        line = response.cookie()
        if line:
            self.cookie = line.split(";", 1)[0].split("=", 1)[1]
        return response

    def token(self, path: str = "/messages") -> str:
        """The CSRF token that a page of the session carries."""
        return self.get(path).csrf()


class WebTestCase(WebRequests, unittest.TestCase):
    """A primary (or failover) role with the whole web site in front of it."""

    role_name = "primary"

    def setUp(self) -> None:
        self.clock = InlineReactor()
        self.clock.advance(START)
        self.store = FakeStore()
        nowhere = PumpEndpoint(None)
        nowhere.up = False
        self.role = makeSwitch(self.store, self.clock, nowhere, role=self.role_name)
        self.addCleanup(self.role.stopService)
        self.hash = HASH
        self.sessions = SessionStore(self.clock)
        self.throttle = LoginThrottle(self.clock, onFailures=reportGuessing(self.role))
        self.auth = AdminAuth(
            self.clock, lambda: self.hash, sessions=self.sessions, throttle=self.throttle
        )
        self.passwordsSet: list[str] = []
        root = buildRoot(ServerView(self.role), self.auth, setPassword=self.setPassword)
        self.site = LimitedSite(root, reactor=self.clock)
        self.cookie = None

    def setPassword(self, password: str) -> None:
        self.passwordsSet.append(password)
        self.hash = passwords.hash_password(password, n=2)

    def assertRedirect(self, response: Response, location: str) -> None:
        self.assertEqual((response.status, response.location), (303, location), response.body)


class LoginTests(WebTestCase):
    def test_pagesNeedLogin(self):
        """Every tab and / lead to the login page without a session."""
        for path in ("/pool", "/clients", "/monitoring", "/messages", "/settings"):
            self.assertRedirect(self.get(path), f"/login?next=%2F{path[1:]}")
        self.assertRedirect(self.get("/"), "/pool")

    def test_loginPage(self):
        """The login page has a password form and the status header, but no tabs."""
        response = self.get("/login?next=/clients")
        self.assertEqual(response.status, 200)
        self.assertIn('name="password"', response.body)
        self.assertIn('name="next" value="/clients"', response.body)
        self.assertIn('id="status-header"', response.body)
        self.assertNotIn('id="tabs"', response.body)
        self.assertNotIn("csrf-token", response.body)

    def test_loginSetsSessionCookie(self):
        """The right password starts a session: an HttpOnly, SameSite=Strict cookie on /."""
        response = self.login()
        self.assertRedirect(response, "/")
        line = response.cookie()
        self.assertIsNotNone(line)
        attributes = [part.strip() for part in line.split(";")[1:]]
        self.assertEqual(set(attributes), {"Path=/", "HttpOnly", "SameSite=Strict"})
        self.assertEqual(len(self.sessions), 1)
        page = self.get("/pool")
        self.assertEqual(page.status, 200)
        self.assertIn('id="tab-pool"', page.body)

    def test_secureCookieOverTLS(self):
        """Over TLS the session cookie is also Secure."""
        response = self.login(secure=True)
        self.assertIn("Secure", [p.strip() for p in response.cookie().split(";")])

    def test_loginGoesToNext(self):
        """After login the browser goes to the page it asked for, but never off the site."""
        response = self.post("/login", {"password": PASSWORD, "next": "/settings"})
        self.assertRedirect(response, "/settings")
        response = self.post("/login", {"password": PASSWORD, "next": "//evil.example/x"})
        self.assertRedirect(response, "/")

    def test_wrongPassword(self):
        """A wrong password starts no session and says so on the login page."""
        response = self.login("wrong")
        self.assertRedirect(response, "/login?failed=1")
        self.assertIsNone(response.cookie())
        self.assertEqual(len(self.sessions), 0)
        self.assertIn("Wrong password.", self.get("/login?failed=1").body)

    def test_wrongPasswordsSlowDown(self):
        """After a wrong password the address must wait, twice as long after each further
        one; a login that comes early gets 429 with Retry-After at once, never a held
        connection, and another address is not held up at all."""
        self.login("wrong-1")
        early = self.send("POST", "/login", b"password=correct+horse", headers=FORM)
        self.assertTrue(early.done(), "an early login is answered at once")
        refused = early.result()
        self.assertEqual((refused.status, refused.header("retry-after")), (429, "1"))
        self.assertIn("too many wrong passwords: try again in 1 s", refused.body)
        self.assertIsNone(refused.cookie())
        other = self.send(
            "POST", "/login", b"password=correct+horse", headers=FORM, peer="10.0.0.2"
        )
        self.assertRedirect(other.result(), "/")
        self.clock.advance(1)
        self.assertRedirect(self.login("wrong-2"), "/login?failed=1")
        self.clock.advance(1.5)
        self.assertEqual(self.login().header("retry-after"), "1")
        self.clock.advance(0.5)
        self.assertRedirect(self.login(), "/")

    def test_floodOfGuessesHoldsNothing(self):
        """Eight wrong passwords at once from one address are each answered at once (one
        checked, the rest 429), and the right password from another address goes through
        at once."""
        guesses = [
            self.send("POST", "/login", f"password=wrong-{n}".encode(), headers=FORM)
            for n in range(8)
        ]
        self.assertTrue(all(g.done() for g in guesses))
        statuses = sorted(g.result().status for g in guesses)
        self.assertEqual(statuses, [303] + [429] * 7)
        right = self.send(
            "POST", "/login", b"password=correct+horse", headers=FORM, peer="10.9.9.9"
        )
        self.assertRedirect(right.result(), "/")

    def test_basicAuthIsThrottledToo(self):
        """Wrong Basic credentials on the API say so, and make the login page of that
        address wait too."""
        bad = {"Authorization": "Basic " + _basic("admin:wrong")}
        refused = self.get("/api/licenses", headers=bad)
        self.assertEqual(refused.status, 401)
        self.assertEqual(json.loads(refused.body), {"error": "wrong password"})
        again = self.get("/api/licenses", headers=bad)
        self.assertEqual((again.status, again.header("retry-after")), (429, "1"))
        self.assertEqual(self.login().status, 429)
        self.clock.advance(1)
        self.assertRedirect(self.login(), "/")

    def test_repeatedFailuresInMessages(self):
        """Five wrong passwords in a row from one address are logged and recorded in
        Messages with the address; fewer are not."""
        for n in range(5):
            self.clock.advance(30)
            self.login(f"wrong-{n}", peer="10.7.7.7")
            events = self.successResultOf(self.store.events(10))
            guessing = [e for e in events if e.kind == "admin-password-guessing"]
            self.assertEqual(len(guessing), 1 if n == 4 else 0, n)
        (event,) = guessing
        self.assertEqual(event.severity, "warning")
        self.assertIn("5 wrong admin passwords in a row from 10.7.7.7", event.message)
        self.assertEqual(event.data["source"], "10.7.7.7")
        self.flushLoggedErrors()

    def test_basicNeedsUserAdmin(self):
        """Basic credentials are the user ``admin`` with the password; another user is 401."""
        self.assertEqual(self.api("GET", "/api/licenses").status, 200)
        attempts = [
            (user, method, body)
            for user in ("root", "")
            for method, body in (("GET", b""), ("POST", licenseFile({})))
        ]
        for number, (user, method, body) in enumerate(attempts):
            response = self.api(method, "/api/licenses", body, user=user, peer=f"10.0.1.{number}")
            self.assertEqual(response.status, 401, (user, method))
            self.assertIn("error", json.loads(response.body))
        self.assertEqual(self.role.pool.count("license"), 0)

    def test_sessionIdleTimeout(self):
        """A session ends after 8 hours without a request; each request restarts that time."""
        self.login()
        self.clock.advance(7 * 3600)
        self.assertEqual(self.get("/pool").status, 200)
        self.clock.advance(7 * 3600)
        self.assertEqual(self.get("/pool").status, 200)
        self.clock.advance(8 * 3600)
        self.assertRedirect(self.get("/pool"), "/login?next=%2Fpool")

    def test_backgroundRequestsDoNotKeepSessionAlive(self):
        """The status script's refreshes do not keep an idle session alive."""
        self.login()
        for _ in range(9):
            self.clock.advance(3600)
            self.get("/pool", headers={"X-Background": "1"})
        self.assertRedirect(self.get("/pool"), "/login?next=%2Fpool")

    def test_unknownCookie(self):
        """A made-up session id is no session."""
        self.assertRedirect(self.get("/pool", cookie="made-up"), "/login?next=%2Fpool")

    def test_logout(self):
        """Logout (a POST with the CSRF token) ends the session and clears the cookie."""
        self.login()
        token = self.token()
        self.assertIn('action="/logout"', self.get("/logout").body)
        response = self.post("/logout", {"csrf": token})
        self.assertRedirect(response, "/login?out=1")
        self.assertIn("Max-Age=0", response.cookie())
        self.assertEqual(len(self.sessions), 0)
        self.assertRedirect(self.get("/pool"), "/login?next=%2Fpool")

    def test_logoutNeedsCSRF(self):
        """A logout post without the token changes nothing."""
        self.login()
        self.assertEqual(self.post("/logout", {}).status, 403)
        self.assertEqual(self.get("/pool").status, 200)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _basic(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class CSRFTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.login()

    def test_formsCarryTheToken(self):
        """Every form that posts carries the session's CSRF token."""
        run(self.role.addLicenses(licenseFile({"kind": "installed"})))
        hello(self.role, "m1")
        for path in ("/pool", "/clients", "/settings"):
            page = self.get(path)
            token = page.csrf()
            forms = re.findall(r'<form method="post".*?</form>', page.body, re.S)
            self.assertTrue(forms, path)
            for form in forms:
                self.assertIn(f'name="csrf" value="{token}"', form, path)

    def test_postWithoutTokenChangesNothing(self):
        """A form post without the token, or with another one, is refused with 403."""
        for fields in ({}, {"csrf": "forged"}):
            response = self.post(
                "/settings",
                {"action": "licensing", "lease_ttl": "60", "borrow_max_days": "3", **fields},
            )
            self.assertEqual(response.status, 403)
            self.assertIn("nothing was changed", response.body)
        self.assertEqual(self.role.leaseTTL, 120)

    def test_tokenIsPerSession(self):
        """One session's token does not work for another session."""
        token = self.token()
        first = self.cookie
        self.login()
        self.assertNotEqual(first, self.cookie)
        response = self.post(
            "/settings",
            {"action": "licensing", "lease_ttl": "60", "borrow_max_days": "3", "csrf": token},
        )
        self.assertEqual(response.status, 403)

    def test_apiWithSession(self):
        """The API takes the session: reads freely, changes only with X-CSRF-Token."""
        self.assertEqual(self.get("/api/licenses").status, 200)
        body = licenseFile({})
        response = self.request("POST", "/api/licenses", body)
        self.assertEqual(response.status, 403)
        self.assertIn("CSRF", response.body)
        self.assertEqual(self.role.pool.count("license"), 0)
        response = self.request(
            "POST", "/api/licenses", body, headers={"X-CSRF-Token": self.token()}
        )
        self.assertEqual(response.status, 201)

    def test_apiBasicStillWorks(self):
        """Basic credentials still work for the API, without any session or token."""
        auth = {"Authorization": "Basic " + _basic(f"admin:{PASSWORD}")}
        response = self.request("POST", "/api/licenses", licenseFile({}), headers=auth, cookie="")
        self.assertEqual(response.status, 201)


class TabTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.login()
        self.csrf = self.token()

    def act(self, path: str, **fields: str) -> Response:
        response = self.post(path, {"csrf": self.csrf, **fields})
        self.assertRedirect(response, path)
        return self.get(path)

    def test_securityHeaders(self):
        """Pages forbid framing and foreign scripts, and are not cached."""
        page = self.get("/pool")
        self.assertEqual(page.header("x-frame-options"), "DENY")
        self.assertIn("frame-ancestors 'none'", page.header("content-security-policy"))
        self.assertIn("script-src 'self'", page.header("content-security-policy"))
        self.assertEqual(page.header("cache-control"), "no-store")
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")

    def test_uploadAndManageLicenses(self):
        """Upload shows the license in the pool; deactivate, activate and delete work."""
        page = self.upload("/pool", {"csrf": self.csrf, "action": "upload"}, [licenseFile({})])
        self.assertRedirect(page, "/pool")
        (lic,) = self.role.pool.all("license")
        page = self.get("/pool")
        self.assertIn(f"Added license {lic.id}.", page.body)
        self.assertIn(f'id="license-{lic.id}"', page.body)
        page = self.act("/pool", action="deactivate", license=lic.id)
        self.assertFalse(self.role.pool.license(lic.id).active)
        self.assertIn("status-inactive", page.body)
        self.act("/pool", action="activate", license=lic.id)
        self.assertTrue(self.role.pool.license(lic.id).active)
        self.assertIn('value="accept"', self.get("/pool").body)
        page = self.act("/pool", action="accept", license=lic.id)
        self.assertEqual(self.role.pool.get("agreement", lic.id).accepted_by, "admin")
        self.assertIn("agreement accepted", page.body)
        page = self.act("/pool", action="delete", license=lic.id)
        self.assertEqual(self.role.pool.count("license"), 0)
        self.assertIn(f"License {lic.id} deleted.", page.body)

    def test_uploadRefusalIsShown(self):
        """A file that is refused is named on the page by its file name; nothing is added,
        and the other files of the upload are."""
        self.upload(
            "/pool",
            {"csrf": self.csrf, "action": "upload"},
            [licenseFile({}), b"not a license", b'{"licenses": []}'],
        )
        page = self.get("/pool")
        self.assertIn("notice-error", page.body)
        self.assertIn("l1.lic: not a license file", page.body)
        self.assertIn('l2.lic: not a license file: this JSON has no "format" field', page.body)
        self.assertEqual(self.role.pool.count("license"), 1)

    def test_uploadWarnsOfExpired(self):
        """An expired license is added with a warning that names the file and the date."""
        data = licenseFile({"id": "L-OLD", "expires": "2026-01-31"})
        self.upload("/pool", {"csrf": self.csrf, "action": "upload"}, [data])
        page = self.get("/pool")
        self.assertIn("notice-warning", page.body)
        self.assertIn("l0.lic: license L-OLD (XMLSpy) expired on 2026-01-31", page.body)
        self.assertEqual(self.role.pool.count("license"), 1)

    def test_uploadWithoutToken(self):
        """An upload without the CSRF token adds nothing."""
        response = self.upload("/pool", {"action": "upload"}, [licenseFile({})])
        self.assertEqual(response.status, 403)
        self.assertEqual(self.role.pool.count("license"), 0)

    def test_assignUnassignUnregister(self):
        """Client Management assigns and unassigns licenses, and unregisters machines."""
        (lid,) = self.successResultOf(
            run(self.role.addLicenses(licenseFile({"kind": "installed", "seats": 2})))
        )
        s = hello(self.role, "m1")
        page = self.get("/clients")
        self.assertIn(f'id="client-{s.client}"', page.body)
        self.assertIn(f'<option value="{lid}">', page.body)
        page = self.act(
            "/clients", action="assign", client=s.client, product="XMLSpy", license=lid
        )
        self.assertEqual([a.license for a in self.role.pool.assignmentsOf(s.client)], [lid])
        self.assertIn(f"Assigned {lid} to {s.client} (XMLSpy).", page.body)
        self.act("/clients", action="unassign", client=s.client, product="XMLSpy", license=lid)
        self.assertEqual(self.role.pool.assignmentsOf(s.client), [])
        self.act("/clients", action="unregister", client=s.client)
        self.assertIsNone(self.role.pool.client(s.client))

    def test_refusedChangeIsShown(self):
        """A change the role refuses shows its reason after the redirect."""
        (lid,) = self.successResultOf(run(self.role.addLicenses(licenseFile({}))))
        s = hello(self.role, "m1")
        page = self.act(
            "/clients", action="assign", client=s.client, product="XMLSpy", license=lid
        )
        self.assertIn("is concurrent: its seats need no assignment", page.body)

    def test_monitoring(self):
        """Client Monitoring lists a running client with its heartbeat age."""
        run(self.role.addLicenses(licenseFile({})))
        s = hello(self.role, "m1", version="2014r2")
        run(self.role.checkout(s, {}))
        self.clock.advance(30)
        page = self.get("/monitoring")
        self.assertIn("30 s ago", page.body)
        self.assertIn("not failover-capable", page.body)

    def test_messagesNewestFirst(self):
        """Messages lists events newest first."""
        self.role.record("first-thing", "info", "the first thing")
        self.clock.advance(1)
        self.role.record("second-thing", "warning", "the second thing")
        body = self.get("/messages").body
        self.assertLess(body.index("the second thing"), body.index("the first thing"))

    def test_licensingSettings(self):
        """Settings changes lease and borrow limits; a bad value changes nothing."""
        page = self.act("/settings", action="licensing", lease_ttl="60", borrow_max_days="7")
        self.assertEqual(self.role.leaseTTL, 60)
        self.assertEqual(self.role.setting("borrow_max_days"), 7)
        self.assertFalse(self.role.setting("borrow_enabled"))
        self.assertIn("Settings saved.", page.body)
        page = self.act("/settings", action="licensing", lease_ttl="1", borrow_max_days="7")
        self.assertIn("lease_ttl: must be a whole number from 4 to 86400", page.body)
        page = self.act("/settings", action="licensing", lease_ttl="x", borrow_max_days="7")
        self.assertIn("must be a whole number", page.body)
        self.assertEqual(self.role.leaseTTL, 60)

    def test_partitionSettings(self):
        """Settings saves the partition policy and failover share with the other
        licensing settings; a bad share is named and changes nothing."""
        fields = {"action": "licensing", "lease_ttl": "120", "borrow_max_days": "30"}
        page = self.act("/settings", **fields, partition_policy="exact", failover_share=" 3 ")
        self.assertIn("Settings saved.", page.body)
        self.assertEqual(self.role.setting("partition_policy"), "exact")
        self.assertEqual(self.role.setting("failover_share"), "3")
        self.assertIn('<option value="exact" selected="selected">', page.body)
        self.assertIn('id="failover-share" size="8" required="required" value="3"', page.body)
        page = self.act("/settings", **fields, partition_policy="full", failover_share="lots")
        self.assertIn("failover_share: must be a percentage from 0% to 100%", page.body)
        page = self.act("/settings", **fields, partition_policy="none", failover_share="10%")
        self.assertIn("partition_policy: must be full or exact", page.body)
        self.assertEqual(self.role.setting("partition_policy"), "exact")
        self.assertEqual(self.role.setting("failover_share"), "3")

    def test_switchMode(self):
        """Settings switches the server to a failover of a primary, at once."""
        page = self.act("/settings", action="mode", role="failover", primary="ls0:35355")
        self.assertEqual(self.role.mode(), {"role": "failover", "primary": "ls0:35355"})
        self.assertIn("now the failover of ls0:35355", page.body)
        page = self.act("/settings", action="mode", role="failover", primary="")
        self.assertIn("a failover needs its primary", page.body)
        self.act("/settings", action="mode", role="primary", primary="")
        self.assertEqual(self.role.mode(), {"role": "primary", "primary": None})

    def test_changePassword(self):
        """The password changes with the current one and the new one twice; others log out."""
        other = self.sessions.start()
        fields = {"action": "password", "current": PASSWORD, "new": "new-secret-1"}
        page = self.act("/settings", **fields, repeat="different")
        self.assertIn("the two new passwords differ", page.body)
        page = self.act("/settings", **{**fields, "new": "short"}, repeat="short")
        self.assertIn("at least 8 characters", page.body)
        page = self.act("/settings", **{**fields, "current": "wrong"}, repeat="new-secret-1")
        self.assertIn("the current password is wrong", page.body)
        self.assertEqual(self.passwordsSet, [])
        self.clock.advance(1)
        page = self.act("/settings", **fields, repeat="new-secret-1")
        self.assertIn("Password changed.", page.body)
        self.assertEqual(self.passwordsSet, ["new-secret-1"])
        self.assertIsNone(self.sessions.get(other.id))
        self.assertEqual(self.get("/pool").status, 200)
        self.assertEqual(self.login("new-secret-1").location, "/")

    def test_notFound(self):
        """Paths below a tab are 404 pages."""
        self.assertEqual(self.get("/pool/nothing").status, 404)


class ClientsAPITests(WebTestCase):
    def clients(self) -> dict[str, dict[str, Any]]:
        """``GET /api/clients`` as {machine: client}."""
        response = self.api("GET", "/api/clients")
        self.assertEqual(response.status, 200, response.body)
        return {c["machine"]: c for c in json.loads(response.body)}

    def test_machineFailoverCapableWhenAllProductsAre(self):
        """A machine is failover_capable only when every one of its products is.

        The failover serves products from 2015r3 on and MobileTogetherServer
        from 1.5 on; m1 runs one product too old for it, m2 none.
        """
        hello(self.role, "m1", product="XMLSpy", version="2015r3")
        hello(self.role, "m1", product="MobileTogetherServer", version="1.4")
        hello(self.role, "m2", product="XMLSpy", version="2015r3")
        hello(self.role, "m2", product="MobileTogetherServer", version="1.5")
        clients = self.clients()
        products = {
            machine: {p["product"]: p["failover_capable"] for p in c["products"]}
            for machine, c in clients.items()
        }
        self.assertEqual(
            products,
            {
                "m1": {"XMLSpy": True, "MobileTogetherServer": False},
                "m2": {"XMLSpy": True, "MobileTogetherServer": True},
            },
        )
        self.assertIs(clients["m1"]["failover_capable"], False)
        self.assertIs(clients["m2"]["failover_capable"], True)


class HostileBodyTests(WebTestCase):
    """Bodies from strangers are not parsed; bad JSON from the admin is a 400 with a reason."""

    BROKEN = {"Content-Type": "multipart/form-data"}
    """A multipart body without a boundary: parsing it fails."""

    def test_strangersFormsAreNotParsed(self):
        """A form post without a session is sent to the login page before its body is
        read: a body that cannot be parsed makes no difference to the answer."""
        for path in ("/pool", "/clients", "/settings", "/messages"):
            response = self.request("POST", path, b"--x\r\n", headers=self.BROKEN, cookie="")
            self.assertRedirect(response, f"/login?expired=1&next=%2F{path[1:]}")

    def test_adminsBrokenFormIs400(self):
        """The same body from a logged-in admin is read, and refused with 400."""
        self.login()
        response = self.request("POST", "/pool", b"--x\r\n", headers=self.BROKEN)
        self.assertEqual(response.status, 400)
        self.assertIn("not multipart/form-data", response.body)

    def test_loginFormIsSmall(self):
        """The login form, read before anyone is known, takes at most 16 KiB."""
        response = self.post("/login", {"password": "x" * (16 << 10)}, cookie="")
        self.assertEqual(response.status, 413)
        self.assertIsNone(response.cookie())

    def assertBadJSON(self, method: str, path: str, body: bytes, reason: str) -> None:
        response = self.api(method, path, body)
        self.assertEqual(response.status, 400, response.body)
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertIn(reason, json.loads(response.body)["error"])

    def test_deepJSON(self):
        """A body nested 100,000 deep is a 400 with a reason, on settings and licenses."""
        deep = b"[" * 100_000 + b"]" * 100_000
        deepObject = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        for body in (deep, deepObject):
            self.assertBadJSON("PUT", "/api/settings", body, "nest deeper than 32 levels")
            self.assertBadJSON("POST", "/api/licenses", body, "nest deeper than 32 levels")
        self.assertEqual(self.role.pool.count("license"), 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_duplicateKeys(self):
        """A key given twice is a 400 that names it; no setting changes."""
        before = self.role.setting("borrow_max_days")
        body = b'{"borrow_max_days":30,"borrow_max_days":7}'
        self.assertBadJSON("PUT", "/api/settings", body, "'borrow_max_days' appears twice")
        self.assertEqual(self.role.setting("borrow_max_days"), before)
        body = b'{"licenses":[],"licenses":["x"]}'
        path = "/api/clients/c-1/products/XMLSpy/licenses"
        self.assertBadJSON("PUT", path, body, "'licenses' appears twice")

    def test_loneSurrogate(self):
        """A setting's name with a lone surrogate is a 400, not a storage error."""
        self.assertBadJSON("PUT", "/api/settings", b'{"\\ud800": 1}', "lone surrogate")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_giantJSONInteger(self):
        """An integer of 5,000 digits in a setting is a 400, not a 500."""
        body = b'{"borrow_max_days":' + b"9" * 5000 + b"}"
        self.assertBadJSON("PUT", "/api/settings", body, "bad JSON body")
        self.assertEqual(self.flushLoggedErrors(), [])


class StaticTests(unittest.TestCase):
    """The static files over a real socket (a file is sent by a producer the reactor drives)."""

    def setUp(self) -> None:
        store = FakeStore()
        clock = Clock()
        clock.advance(START)
        nowhere = PumpEndpoint(None)
        nowhere.up = False
        role = makeSwitch(store, clock, nowhere)
        self.addCleanup(role.stopService)
        site = server.Site(buildRoot(ServerView(role), AdminAuth(reactor, lambda: HASH)))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

    async def fetch(self, path: str) -> tuple[int, list[str] | None, bytes]:
        response = await self.agent.request(b"GET", (self.base + path).encode())
        body = await readBody(response)
        return response.code, response.headers.getRawHeaders("content-type"), body

    async def test_static(self):
        """The stylesheet and the status script are served; the folder is not listed."""
        code, kind, body = await self.fetch("/static/style.css")
        self.assertEqual((code, kind), (200, ["text/css"]))
        self.assertIn(b".status", body)
        code, kind, body = await self.fetch("/static/status.js")
        self.assertEqual(code, 200)
        self.assertIn(b"/api/status", body)
        code, _, _ = await self.fetch("/static/")
        self.assertEqual(code, 404)

    async def test_icon(self):
        """The pages link an icon, and /favicon.ico, which browsers ask for anyway, is it."""
        code, kind, body = await self.fetch("/login")
        self.assertIn(b'<link rel="icon" href="/static/favicon.svg"', body)
        for path in ("/static/favicon.svg", "/favicon.ico"):
            code, kind, body = await self.fetch(path)
            self.assertEqual((code, kind), (200, ["image/svg+xml"]), path)
            self.assertTrue(body.startswith(b"<svg"), path)


class StandbyTests(WebTestCase):
    role_name = "failover"

    def setUp(self) -> None:
        super().setUp()
        self.login()
        self.csrf = self.token()

    def test_homeIsMessages(self):
        """On a standby failover / leads to Messages."""
        self.assertRedirect(self.get("/"), "/messages")

    def test_poolTabsHidden(self):
        """A standby failover's navigation has no License Pool, Clients or Monitoring tab."""
        body = self.get("/messages").body
        for tab in ("pool", "clients", "monitoring"):
            self.assertNotIn(f'href="/{tab}"', body)
        self.assertIn('href="/settings"', body)
        self.assertIn('href="/messages"', body)

    def test_poolPagesNamePrimary(self):
        """The hidden tabs' URLs name the primary instead and answer 409."""
        for path in ("/pool", "/clients", "/monitoring"):
            page = self.get(path)
            self.assertEqual(page.status, 409, path)
            self.assertIn("failover in standby", page.body)
            self.assertIn("ls0:35355", page.body)

    def test_poolChangesRefused(self):
        """Form posts to the hidden tabs change nothing and say where to go."""
        page = self.upload("/pool", {"csrf": self.csrf, "action": "upload"}, [licenseFile({})])
        self.assertRedirect(page, "/pool")
        self.assertIn("make this change on the primary ls0:35355", self.get("/pool").body)
        self.assertEqual(self.role.pool.count("license"), 0)

    def test_apiChangesRefusedNamingPrimary(self):
        """Changes to licenses, clients and assignments are 409 with the spec's error text.

        The text is ``standby failover: make this change on the primary``
        followed by the primary's HOST:PORT, and nothing else.
        """
        prefix = "standby failover: make this change on the primary "
        changes = [
            ("POST", "/api/licenses", licenseFile({})),
            ("POST", "/api/licenses/L-1/activate", b""),
            ("POST", "/api/licenses/L-1/deactivate", b""),
            ("DELETE", "/api/licenses/L-1", b""),
            ("PUT", "/api/clients/C-1/products/XMLSpy/licenses", b'{"licenses": ["L-1"]}'),
            ("DELETE", "/api/clients/C-1", b""),
        ]
        for method, path, body in changes:
            response = self.api(method, path, body)
            self.assertEqual(response.status, 409, (method, path, response.body))
            error = json.loads(response.body)["error"]
            self.assertTrue(error.startswith(prefix), error)
            address = parse_host_port(error[len(prefix) :])
            self.assertIsNotNone(address, error)
            self.assertEqual(address[0], "ls0", error)
        self.assertEqual(self.role.pool.count("license"), 0)

    def test_headerNamesPrimary(self):
        """The header says failover, standby, and names the primary's address."""
        body = self.get("/settings").body
        self.assertIn('id="server-role">failover<', body)
        self.assertIn("state-standby", body)
        self.assertIn("ls0:35355", body)

    def takeOver(self) -> None:
        self.role.current.lastSync = int(self.clock.seconds())
        self.clock.advance(6)
        self.assertEqual(self.role.state, "active")

    def test_activeFailoverWarnsOfHandback(self):
        """On an active failover, License Pool, Client Management, Client Monitoring (where
        seats are freed) and Settings say that changes made there are discarded when the
        primary takes control back; Messages, and a standby or a primary, say nothing."""
        warning = "discarded when the primary takes control back"
        changing = ("/pool", "/clients", "/monitoring", "/settings")
        for path in changing:
            self.assertNotIn(warning, self.get(path).body, f"standby {path}")
        self.takeOver()
        for path in changing:
            body = self.get(path).body
            self.assertIn("notice-warning", body, path)
            self.assertIn(warning, body, path)
            self.assertIn("ls0:35355", body, path)
        self.assertNotIn(warning, self.get("/messages").body)

    def test_activeFailoverAPIWarns(self):
        """The API's answers to changes on an active failover carry the same warning."""
        self.takeOver()
        response = self.api("POST", "/api/licenses", licenseFile({}))
        self.assertEqual(response.status, 201, response.body)
        body = json.loads(response.body)
        self.assertIn("discarded when the primary takes control back", body["warning"])
        (lid,) = body["ids"]
        for method, path, data in (
            ("POST", f"/api/licenses/{lid}/deactivate", b""),
            ("PUT", "/api/settings", b'{"borrow_max_days": 7}'),
            ("DELETE", f"/api/licenses/{lid}", b""),
        ):
            response = self.api(method, path, data)
            self.assertEqual(response.status, 200, (path, response.body))
            self.assertIn("warning", json.loads(response.body), path)
        self.assertNotIn("warning", json.loads(self.api("GET", "/api/settings").body))

    def test_borrowingShownOff(self):
        """A failover's Settings show borrowing off (and disabled), whatever the synced
        setting says, with the reason; saving them leaves the synced setting alone."""
        self.assertTrue(self.role.setting("borrow_enabled"))
        self.takeOver()
        body = self.get("/settings").body
        box = re.search(r"<input[^>]*id=\"borrow-enabled\"[^>]*>", body).group(0)
        self.assertNotIn("checked", box)
        self.assertIn("disabled", box)
        self.assertIn("Borrowing is off while this server is the failover", body)
        self.post(
            "/settings",
            {"csrf": self.csrf, "action": "licensing", "lease_ttl": "60", "borrow_max_days": "3"},
        )
        self.assertEqual(self.role.setting("lease_ttl"), 60)
        self.assertTrue(self.role.setting("borrow_enabled"))

    def test_minimumsReadable(self):
        """The failover minimum versions read as text, not as raw JSON."""
        body = self.get("/settings").body
        self.assertIn("every product 2015r3; MobileTogetherServer 1.5", body)
        self.assertNotIn("{&quot;", body)

    def test_tabsReturnOnTakeover(self):
        """When the failover takes over, the three tabs come back and take changes."""
        self.role.current.lastSync = int(self.clock.seconds())
        self.clock.advance(6)
        self.assertEqual(self.role.state, "active")
        body = self.get("/messages").body
        for tab in ("pool", "clients", "monitoring"):
            self.assertIn(f'href="/{tab}"', body)
        self.assertRedirect(self.get("/"), "/pool")
        self.assertEqual(self.get("/pool").status, 200)
