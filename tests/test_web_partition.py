"""What the admin sees of a cut link and does about it (FAILOVER.md rules 16 and 19).

A primary and a failover on one Clock (``PartitionTestCase``: one exact license
of 5 seats, 2 held for the failover), each with its whole web site in front of
it. A cut makes the header, the License Pool and ``/api/licenses`` say the
limit in force on each server; ``DELETE /api/failover`` and the Settings tab
unpair the failover on the primary, which lifts the limits.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from licenseserver import passwords
from licenseserver.switch import RoleSwitch
from licenseserver.web.auth import AdminAuth
from licenseserver.web.bounded import LimitedSite
from licenseserver.web.facade import ServerView
from licenseserver.web.root import buildRoot
from licenseserver.web.sessions import SessionStore
from licenseserver.web.throttle import LoginThrottle
from tests.helpers import licenseFile, run
from tests.test_failover import HEARTBEAT, TAKEOVER
from tests.test_partition import PartitionTestCase
from tests.test_web_http import PASSWORD, InlineReactor, Response, WebRequests

HASH = passwords.hash_password(PASSWORD, n=2)
CUT = TAKEOVER / 2 + 0.5
"""Long enough a silence for the primary to count its failover's link as down."""
TAKEN_OVER = TAKEOVER + 0.5
"""Long enough a silence for the failover to take over."""


class Browser(WebRequests):
    """The web site in front of one server of the pair, and an admin logged in to it.

    The site has its own clock (sessions, login throttle); the role keeps the pair's.
    """

    def __init__(self, role: Any, mode: str, primary: str | None):
        self.switch = RoleSwitch(lambda _role, _primary: role, mode, primary)
        self.view = ServerView(self.switch)
        clock = InlineReactor()
        clock.advance(role.now())
        auth = AdminAuth(
            clock, lambda: HASH, sessions=SessionStore(clock), throttle=LoginThrottle(clock)
        )
        self.site = LimitedSite(buildRoot(self.view, auth), reactor=clock)
        self.cookie = None
        response = self.post("/login", {"password": PASSWORD}, cookie="")
        self.cookie = response.cookie().split(";", 1)[0].split("=", 1)[1]

    def json(self, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        """An admin API request with Basic credentials: its status and JSON body."""
        response = self.api(method, path, body)
        return response.status, json.loads(response.body)


class WebPartitionTestCase(PartitionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.primaryWeb = Browser(self.primary, "primary", None)
        self.failoverWeb = Browser(self.failover, "failover", "ls1:35355")

    def warnings(self, web: Browser, path: str = "/pool") -> list[str]:
        """The header's warnings on a page, as (link, text) lines: ``/pool cut off ...``."""
        body = web.get(path).body
        found = re.findall(r'<li><a href="([^"]*)">([^<]*)</a></li>', body)
        return [f"{href} {text}" for href, text in found]

    def cutWarnings(self, web: Browser) -> list[str]:
        return [line for line in self.warnings(web) if "cut off" in line]

    def licenses(self, web: Browser) -> dict[str, dict[str, Any]]:
        status, body = web.json("GET", "/api/licenses")
        self.assertEqual(status, 200, body)
        return {lic["id"]: lic for lic in body}

    def since(self, role: Any) -> str:
        """The time the cut began on ``role``, as the header words it (``HH:MM UTC``)."""
        (limit,) = role.cutLimits()
        return time.strftime("%H:%M UTC", time.gmtime(limit["since"]))


class CutHeaderTests(WebPartitionTestCase):
    """Rule 19: each server's header says the limit in force during a cut."""

    def test_primaryHeader(self):
        """Cut off, the primary's header says since when and how many seats it serves,
        and links to the License Pool; once the failover is heard again it says nothing."""
        self.assertEqual(self.cutWarnings(self.primaryWeb), [])
        self.cutFor(CUT)
        self.assertEqual(
            self.cutWarnings(self.primaryWeb),
            [
                f"/pool cut off from the failover since {self.since(self.primary)}: serving"
                f" at most 3 of 5 seats of XMLSpy (license {self.lid})"
            ],
        )
        self.heal()
        self.beat()
        self.assertEqual(self.cutWarnings(self.primaryWeb), [])

    def test_statusSaysSinceWhen(self):
        """``cut_off_since`` in /api/status is the cut's start while a limit applies on
        either server (the header's script reloads the header when it changes), null
        otherwise."""
        for web in (self.primaryWeb, self.failoverWeb):
            self.assertIsNone(web.json("GET", "/api/status")[1]["cut_off_since"])
        self.cutFor(TAKEOVER + 1)
        for web, role in ((self.primaryWeb, self.primary), (self.failoverWeb, self.failover)):
            (limit,) = role.cutLimits()
            self.assertEqual(web.json("GET", "/api/status")[1]["cut_off_since"], limit["since"])
        self.heal()
        self.advance(HEARTBEAT * 3)
        for web in (self.primaryWeb, self.failoverWeb):
            self.assertIsNone(web.json("GET", "/api/status")[1]["cut_off_since"])

    def test_activeFailoverHeader(self):
        """The active failover words it from its side: the synced leases live at its
        takeover (none here) and its share."""
        self.assertEqual(self.cutWarnings(self.failoverWeb), [])
        self.cutFor(TAKEN_OVER)
        self.assertEqual(self.failover.state, "active")
        self.assertEqual(
            self.cutWarnings(self.failoverWeb),
            [
                f"/pool cut off from the primary since {self.since(self.failover)}: serving"
                f" at most 2 of 5 seats of XMLSpy (license {self.lid})"
            ],
        )
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.failover.state, "standby")
        self.assertEqual(self.cutWarnings(self.failoverWeb), [])

    def test_fullLicenseHasNoLimit(self):
        """A license under the full policy has no limit to show."""
        self.ok(self.primary.addLicenses(licenseFile({"id": "L-FULL", "seats": 4})))
        self.cutFor(CUT)
        (warning,) = self.cutWarnings(self.primaryWeb)
        self.assertIn(f"(license {self.lid})", warning)
        self.assertIsNone(self.licenses(self.primaryWeb)["L-FULL"]["serving_at_most"])


class CutPoolTests(WebPartitionTestCase):
    """Rule 19: the License Pool and ``/api/licenses`` give the limit next to the license."""

    def row(self, web: Browser) -> str:
        body = web.get("/pool").body
        match = re.search(rf'<tr id="license-{self.lid}">.*?</tr>', body, re.S)
        self.assertIsNotNone(match, body)
        return match.group(0)

    def test_poolShowsTheLimit(self):
        self.assertNotIn("while cut off", self.row(self.primaryWeb))
        self.cutFor(TAKEN_OVER)
        self.assertIn("serving at most 3 of 5 while cut off", self.row(self.primaryWeb))
        self.assertIn("serving at most 2 of 5 while cut off", self.row(self.failoverWeb))

    def test_servingAtMost(self):
        """``serving_at_most`` is null while linked, the limit during a cut on either
        server, and null again once the link is back."""
        self.assertIsNone(self.licenses(self.primaryWeb)[self.lid]["serving_at_most"])
        self.assertIsNone(self.licenses(self.failoverWeb)[self.lid]["serving_at_most"])
        self.cutFor(TAKEN_OVER)
        self.assertEqual(self.licenses(self.primaryWeb)[self.lid]["serving_at_most"], 3)
        self.assertEqual(self.licenses(self.failoverWeb)[self.lid]["serving_at_most"], 2)
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertIsNone(self.licenses(self.primaryWeb)[self.lid]["serving_at_most"])

    def test_oneLicenseCarriesItToo(self):
        """The answer to a change of one license carries its limit too."""
        self.cutFor(CUT)
        status, body = self.primaryWeb.json("POST", f"/api/licenses/{self.lid}/activate")
        self.assertEqual((status, body["serving_at_most"]), (200, 3))


class UnpairAPITests(WebPartitionTestCase):
    """``DELETE /api/failover``: the primary forgets its failover (rule 16)."""

    def test_unpairLiftsTheLimits(self):
        """Unpairing answers with the failover's name; the limits go at once, the status
        names no failover, and the action is in the audit log and in Messages."""
        self.cutFor(CUT)
        self.assertTrue(self.cutWarnings(self.primaryWeb))
        status, body = self.primaryWeb.json("DELETE", "/api/failover")
        self.assertEqual((status, body), (200, {"unpaired": "ls2"}))
        self.assertEqual(self.cutWarnings(self.primaryWeb), [])
        self.assertIsNone(self.licenses(self.primaryWeb)[self.lid]["serving_at_most"])
        status, body = self.primaryWeb.json("GET", "/api/status")
        self.assertIsNone(body["failover"])
        self.assertIsNone(body["peer"])
        self.assertIn("failover-unpaired", self.auditKinds(self.primaryStore))
        status, events = self.primaryWeb.json("GET", "/api/messages")
        self.assertEqual(events[0]["kind"], "failover-unpaired")

    def test_idempotent(self):
        """A second unpair finds no failover: 200 with null, and nothing more audited."""
        unpair = ("DELETE", "/api/failover")
        self.assertEqual(self.primaryWeb.json(*unpair), (200, {"unpaired": "ls2"}))
        kinds = self.auditKinds(self.primaryStore)
        self.assertEqual(self.primaryWeb.json(*unpair), (200, {"unpaired": None}))
        self.assertEqual(self.auditKinds(self.primaryStore), kinds)

    def test_failoverRefuses(self):
        """On the failover, standby or active, unpairing is 409 naming the primary, and
        changes nothing."""
        for state in ("standby", "active"):
            if state == "active":
                self.cutFor(TAKEN_OVER)
            self.assertEqual(self.failover.state, state)
            status, body = self.failoverWeb.json("DELETE", "/api/failover")
            self.assertEqual(status, 409, body)
            self.assertIn("unpair it on its primary ls1:35355", body["error"])
        self.assertIsNotNone(self.primary.failoverAddress())
        self.assertNotIn("failover-unpaired", self.auditKinds(self.failoverStore))

    def test_adminOnly(self):
        """Without the password it is 401; a browser session needs the CSRF token."""
        response = self.primaryWeb.request("DELETE", "/api/failover", cookie="")
        self.assertEqual(response.status, 401)
        response = self.primaryWeb.request("DELETE", "/api/failover")
        self.assertEqual(response.status, 403)
        self.assertEqual(self.primary.failoverAddress(), "ls2:35355")
        token = self.primaryWeb.get("/settings").csrf()
        response = self.primaryWeb.request(
            "DELETE", "/api/failover", headers={"X-CSRF-Token": token}
        )
        self.assertEqual(response.status, 200, response.body)
        self.assertIsNone(self.primary.failoverAddress())

    def test_rememberedFailover(self):
        """A primary restarted before its failover came back unpairs the failover it
        remembers, named by its address."""
        self.killPrimary()
        self.primary = self.startPrimary()
        self.assertIsNone(self.primary.peerStatus())
        unpaired = self.successResultOf(run(ServerView(self.primary).unpair()))
        self.assertEqual(unpaired, "ls2:35355")
        self.assertIsNone(self.primary.failoverAddress())


class UnpairSettingsTests(WebPartitionTestCase):
    """The Settings tab's unpair form: on a primary with a failover, confirmed by a box."""

    def unpairForm(self, web: Browser) -> str | None:
        body = web.get("/settings").body
        match = re.search(r'<form[^>]*id="unpair-form".*?</form>', body, re.S)
        return match.group(0) if match else None

    def post(self, web: Browser, **fields: str) -> Response:
        token = web.get("/settings").csrf()
        response = web.post("/settings", {"csrf": token, "action": "unpair", **fields})
        self.assertEqual((response.status, response.location), (303, "/settings"))
        return web.get("/settings")

    def test_shownOnlyOnAPrimaryWithAFailover(self):
        """The primary shows the form, with its CSRF token and a confirmation box that
        must be ticked; the failover does not, nor does the primary once unpaired."""
        form = self.unpairForm(self.primaryWeb)
        self.assertIsNotNone(form)
        token = self.primaryWeb.get("/settings").csrf()
        self.assertIn(f'name="csrf" value="{token}"', form)
        self.assertRegex(form, r'<input[^>]*name="confirm"[^>]*required="required"')
        page = self.primaryWeb.get("/settings").body
        self.assertIn('id="unpair-failover">ls2 (ls2:35355)<', page)
        self.assertIn("lifts the exact policy", page)
        self.assertIsNone(self.unpairForm(self.failoverWeb))
        self.ok(self.primary.unpair())
        self.assertIsNone(self.unpairForm(self.primaryWeb))

    def test_unconfirmedChangesNothing(self):
        page = self.post(self.primaryWeb)
        self.assertIn("tick the box to confirm", page.body)
        self.assertEqual(self.primary.failoverAddress(), "ls2:35355")

    def test_withoutTokenChangesNothing(self):
        response = self.primaryWeb.post("/settings", {"action": "unpair", "confirm": "yes"})
        self.assertEqual(response.status, 403)
        self.assertEqual(self.primary.failoverAddress(), "ls2:35355")

    def test_unpair(self):
        """Confirmed, the failover is forgotten and the limits of a cut go at once."""
        self.cutFor(CUT)
        page = self.post(self.primaryWeb, confirm="yes")
        self.assertIn("The failover ls2 is unpaired", page.body)
        self.assertIn("stop it", page.body)
        self.assertIsNone(self.primary.failoverAddress())
        self.assertNotIn("cut off", page.body)
        self.assertIn("failover-unpaired", self.auditKinds(self.primaryStore))
