"""Tests for the pages' Elements (licenseserver.web.elements) and what they say (display).

Each Element is flattened with ``flattenString`` over a real role on a Clock;
the primary and failover of the header tests are paired over an in-memory link.
"""

from __future__ import annotations

import re
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.template import flattenString

from licenseserver.model import Event
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.testing import FakeStore, PumpEndpoint
from licenseserver.web import display, elements, views
from licenseserver.web.facade import ServerView
from tests.helpers import START, hello, licenseFile, makeRole, makeSwitch, run

TOKEN = "csrf-token-123"
DAY = 86400


def days_from_start(days: int) -> str:
    """The date ``days`` days after START, as YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(START + days * DAY))


class ElementTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        nowhere = PumpEndpoint(None)
        nowhere.up = False
        self.role = makeSwitch(FakeStore(), self.clock, nowhere)
        self.addCleanup(self.role.stopService)
        self.view = ServerView(self.role)

    def render(self, element: Any) -> str:
        return self.successResultOf(flattenString(None, element)).decode("utf-8")

    def add(self, *specs: dict) -> list[str]:
        return self.successResultOf(run(self.role.addLicenses(licenseFile(*specs))))

    def header(self, role: Any = None, events: Any = (), token: str | None = TOKEN) -> str:
        facts = display.header_facts(ServerView(role or self.role), events)
        return self.render(elements.HeaderElement(facts, token))


class HeaderTests(ElementTestCase):
    def test_primaryAlone(self):
        """A primary's header: name, role, state, version, and that no failover is paired."""
        html = self.header()
        self.assertIn('id="server-name">ls1<', html)
        self.assertIn('id="server-role">primary<', html)
        self.assertIn("state-active", html)
        self.assertIn("version 1.0.0 (standard)", html)
        self.assertIn("none paired", html)

    def test_logoutOnlyWhenLoggedIn(self):
        """The header has the logout form with the CSRF token only for a session."""
        self.assertIn(f'name="csrf" value="{TOKEN}"', self.header())
        self.assertNotIn("/logout", self.header(token=None))

    def test_expiringLicenseWarning(self):
        """A license that ends within 30 days is a warning; one ending later is not."""
        (soon,) = self.add({"expires": days_from_start(10)})
        self.add({"expires": days_from_start(60)})
        html = self.header()
        self.assertIn(f"license {soon} (XMLSpy) expires on {days_from_start(10)}", html)
        self.assertIn('href="/pool"', html)
        self.assertEqual(html.count("<li>"), 1)

    def test_unmetRequestsToday(self):
        """Unmet requests since 00:00 UTC count; older ones and other events do not."""
        today = display.day_start(START)
        events = [
            Event(today + 10, "unmet-request", "warning", "no seat"),
            Event(today + 20, "unmet-request", "warning", "no seat"),
            Event(today - 10, "unmet-request", "warning", "no seat"),
            Event(today + 30, "takeover", "warning", "took over"),
        ]
        html = self.header(events=events)
        self.assertIn("2 requests for a seat could not be met today", html)
        self.assertIn('href="/messages"', html)

    def test_notFailoverCapableClients(self):
        """Clients older than the failover minimum are a warning naming their hosts."""
        hello(self.role, "m1", version="2014r2", host="old-ws")
        hello(self.role, "m2", version="2025r2", host="new-ws")
        html = self.header()
        self.assertIn("1 client machine (old-ws) is not failover-capable", html)
        self.assertNotIn("new-ws", html)

    def test_refusedFailover(self):
        """A primary's header shows why it refused a failover lately, until one pairs."""
        refusal = Event(int(START) - 5, "version-mismatch", "error", "upgrade the failover")
        self.assertIn('id="problem">upgrade the failover<', self.header(events=[refusal]))
        paired = Event(int(START) - 1, "failover-paired", "info", "paired")
        self.assertNotIn('id="problem"', self.header(events=[paired, refusal]))
        old = Event(int(START) - 3600, "version-mismatch", "error", "upgrade the failover")
        self.assertNotIn('id="problem"', self.header(events=[old]))

    def test_standbyWarningsLinkNowhereHidden(self):
        """On a standby failover a warning does not link to a hidden tab."""
        hello(self.role, "m1", version="2014r2", host="old-ws")
        self.successResultOf(self.role.switchTo("failover", "ls0:35355"))
        html = self.header()
        self.assertIn("<li>1 client machine (old-ws) is not failover-capable", html)
        self.assertNotIn('href="/monitoring"', html)

    def test_warningsNeedSession(self):
        """Before login the header shows no warnings."""
        hello(self.role, "m1", version="2014r2", host="old-ws")
        self.assertNotIn("old-ws", self.header(token=None))


class PairedHeaderTests(ElementTestCase):
    """A primary ls1 and a failover ls2 linked in memory."""

    def setUp(self) -> None:
        super().setUp()
        self.primary = makeRole(
            FakeStore(),
            self.clock,
            cls=PrimaryRole,
            serverName="ls1",
            advertise="ls1:35355",
            peerSecret="pairing",
            takeoverAfter=5.0,
        )
        self.addCleanup(self.primary.stopService)
        self.endpoint = PumpEndpoint(LicensingFactory(self.primary))
        self.failover = makeRole(
            FakeStore(),
            self.clock,
            cls=FailoverRole,
            serverName="ls2",
            advertise="ls2:35355",
            primaryEndpoint=self.endpoint,
            primaryAddress="ls1:35355",
            heartbeat=1.0,
            takeoverAfter=5.0,
            peerSecret="pairing",
        )
        self.addCleanup(self.stopFailover)
        self.endpoint.flush()
        self.advance(1.1)

    def stopFailover(self) -> Any:
        d = self.failover.stopService()
        self.endpoint.flush()
        return d

    def advance(self, seconds: float) -> None:
        target = self.clock.seconds() + seconds
        while self.clock.seconds() < target:
            self.clock.advance(min(0.1, target - self.clock.seconds()))
            self.endpoint.flush()

    def test_primaryNamesFailover(self):
        """The primary's header names its failover, its address, in sync, and the last sync."""
        html = self.header(self.primary)
        self.assertIn("<dt>Failover</dt>", html)
        self.assertIn(">ls2<", html)
        self.assertIn(">ls2:35355<", html)
        self.assertIn(">in sync<", html)
        self.assertIn(display.timestamp(self.primary.peerStatus()["last_sync"]), html)

    def test_primarySeesLag(self):
        """A change the failover has not fetched yet shows as lagging."""
        self.successResultOf(run(self.primary.addLicenses(licenseFile({}))))
        self.assertIn("lagging (1 change behind)", self.header(self.primary))
        self.advance(1.1)
        self.assertIn(">in sync<", self.header(self.primary))

    def test_failoverNamesPrimary(self):
        """The failover's header names its primary and says standby since when."""
        html = self.header(self.failover)
        self.assertIn("<dt>Primary</dt>", html)
        self.assertIn(">ls1<", html)
        self.assertIn(">ls1:35355<", html)
        self.assertIn(">paired<", html)
        self.assertNotIn("linked", html)
        since = display.timestamp(self.failover.stateSince)
        self.assertIn(f"standby since {since}", html)
        self.assertIn("state-standby", html)

    def test_failoverActive(self):
        """After a takeover the failover's header says active, since the takeover."""
        self.endpoint.kill()
        self.advance(6)
        self.assertEqual(self.failover.state, "active")
        html = self.header(self.failover)
        self.assertIn("state-active", html)
        self.assertIn(f"active since {display.timestamp(self.failover.stateSince)}", html)
        self.assertIn(">not connected<", html)

    def test_partitionSettingsSynced(self):
        """The partition settings are licensing settings: the failover gets the primary's,
        and shows each license's policy in force by them."""
        self.successResultOf(run(self.primary.addLicenses(licenseFile({"seats": 10}))))
        self.successResultOf(
            run(
                self.primary.updateSettings({"partition_policy": "exact", "failover_share": "30%"})
            )
        )
        self.advance(1.1)
        settings = self.failover.settings()
        self.assertEqual(
            (settings["partition_policy"], settings["failover_share"]), ("exact", "30%")
        )
        (lic,) = views.licenses(ServerView(self.failover))
        self.assertEqual(
            (lic["partition_policy"], lic["failover_share"], lic["policy_source"]),
            ("exact", 3, "settings"),
        )

    def test_versionMismatchAdvice(self):
        """A failover's problem, such as the version to upgrade to, is in its header."""
        self.failover.problem = "upgrade this failover to version 9.9.9"
        html = self.header(self.failover)
        self.assertIn('id="problem">upgrade this failover to version 9.9.9<', html)


class PageTests(ElementTestCase):
    def page(self, role: Any = None, **kw: Any) -> str:
        role = ServerView(role or self.role)
        options = dict(
            title="Messages",
            facts=display.header_facts(role),
            content="",
            tabs=display.visible_tabs(role),
            current="messages",
            token=TOKEN,
        )
        options.update(kw)
        return self.render(elements.PageElement(**options))

    def test_allTabsOnPrimary(self):
        """A primary's page has all six tabs, the current one marked, and the CSRF meta."""
        html = self.page()
        tabs = re.findall(r'<a href="/(\w+)" class="(\w*)" id="tab-', html)
        self.assertEqual(
            tabs,
            [
                ("pool", ""),
                ("clients", ""),
                ("monitoring", ""),
                ("usage", ""),
                ("messages", "current"),
                ("settings", ""),
            ],
        )
        self.assertIn(f'<meta name="csrf-token" content="{TOKEN}" />', html)
        self.assertIn("<title>Messages · ls1 · licenseserver</title>", html)
        self.assertIn("<h1>Messages</h1>", html)
        self.assertIn('href="/static/style.css"', html)

    def test_standbyFailoverTabs(self):
        """A standby failover's page has only Messages and Settings."""
        self.successResultOf(self.role.switchTo("failover", "ls0:35355"))
        html = self.page()
        tabs = re.findall(r'<a href="/(\w+)" class="\w*" id="tab-', html)
        self.assertEqual(tabs, ["messages", "settings"])
        self.assertEqual(display.home_tab(self.view), "messages")

    def navigation(self, html: str) -> list[tuple[str, str]]:
        """The links of the page's tab navigation: (href, label) in order."""
        nav = re.search(r'<nav id="tabs">.*?</nav>', html, re.S)
        self.assertIsNotNone(nav, "the page has no tab navigation")
        return re.findall(r'<a href="([^"]*)"[^>]*>([^<]*)</a>', nav.group(0))

    def test_tabLabelsAndPaths(self):
        """The tabs are named and linked as INTERFACES.md says; standby shows the last two."""
        self.assertEqual(
            self.navigation(self.page()),
            [
                ("/pool", "License Pool"),
                ("/clients", "Client Management"),
                ("/monitoring", "Client Monitoring"),
                ("/usage", "Usage"),
                ("/messages", "Messages"),
                ("/settings", "Settings"),
            ],
        )
        self.successResultOf(self.role.switchTo("failover", "ls0:35355"))
        self.assertEqual(
            self.navigation(self.page()), [("/messages", "Messages"), ("/settings", "Settings")]
        )

    def test_noticesEscaped(self):
        """Notices are shown, and anything in them is escaped."""
        html = self.page(notices=[("error", "<script>alert(1)</script>"), ("ok", "saved")])
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        self.assertNotIn("<script>alert", html)
        self.assertIn('class="notice notice-ok">saved<', html)

    def test_loggedOutPage(self):
        """Without a session the page has no tabs, no CSRF meta and no logout."""
        html = self.page(tabs=(), token=None)
        self.assertNotIn('id="tabs"', html)
        self.assertNotIn("csrf-token", html)
        self.assertNotIn("/logout", html)


class PoolTests(ElementTestCase):
    def test_empty(self):
        """An empty pool says how to add licenses."""
        html = self.render(elements.PoolElement(self.view, TOKEN))
        self.assertIn("No licenses in the pool yet", html)
        self.assertNotIn('id="licenses"', html)
        self.assertIn('enctype="multipart/form-data"', html)

    def test_licenseRows(self):
        """Each license shows status, seats in use of total, dates and its actions."""
        (lid,) = self.add(
            {
                "seats": 3,
                "starts": "2026-01-01",
                "expires": days_from_start(100),
                "licensee": "<b>ACME</b>",
            }
        )
        run(self.role.checkout(hello(self.role, "m1"), {}))
        self.successResultOf(run(self.role.setLicenseActive(lid, True)))
        html = self.render(elements.PoolElement(self.view, TOKEN))
        row = re.search(rf'<tr id="license-{lid}">.*?</tr>', html, re.S).group(0)
        self.assertIn("status-active", row)
        self.assertIn("1 / 3", row)
        self.assertIn("2026-01-01", row)
        self.assertIn(days_from_start(100), row)
        self.assertIn("&lt;b&gt;ACME&lt;/b&gt;", row)
        self.assertIn('value="deactivate">Deactivate<', row)
        self.assertIn('value="delete"', row)
        self.assertIn(f'name="csrf" value="{TOKEN}"', row)
        self.assertIn("(1; 1 of 3 seats in use)", html)

    def test_partitionPolicy(self):
        """Each license shows its partition policy and failover share, and says in a
        tooltip whether the license or the settings chose it."""
        self.add(
            {"id": "L-N", "seats": 10},
            {"id": "L-E", "seats": 10, "failover_policy": "exact", "failover_share": "20%"},
        )
        html = self.render(elements.PoolElement(self.view, TOKEN))
        self.assertIn("<th>Failover policy</th>", html)

        def cell(license_id: str) -> str:
            row = re.search(rf'<tr id="license-{license_id}">.*?</tr>', html, re.S).group(0)
            return re.search(r'<td class="policy".*?</td>', row).group(0)

        self.assertEqual(cell("L-N"), '<td class="policy" title="from the Settings tab">full</td>')
        self.assertEqual(
            cell("L-E"),
            '<td class="policy" title="set by the license">exact, 2 held for the failover</td>',
        )
        self.successResultOf(
            run(self.role.updateSettings({"partition_policy": "exact", "failover_share": "3"}))
        )
        html = self.render(elements.PoolElement(self.view, TOKEN))
        self.assertIn(">exact, 3 held for the failover<", cell("L-N"))
        self.assertIn(">exact, 2 held for the failover<", cell("L-E"))

    def test_inactiveOffersActivate(self):
        """A deactivated license offers Activate."""
        (lid,) = self.add({})
        self.successResultOf(run(self.role.setLicenseActive(lid, False)))
        html = self.render(elements.PoolElement(self.view, TOKEN))
        self.assertIn("status-inactive", html)
        self.assertIn('value="activate">Activate<', html)


class ClientsTests(ElementTestCase):
    def test_empty(self):
        """Without clients the tab says machines register by themselves."""
        html = self.render(elements.ClientsElement(self.view, TOKEN))
        self.assertIn("No client has registered yet", html)

    def test_clientsAndAssignments(self):
        """Machines show their products, assigned licenses and the licenses they could get."""
        installed, other = self.add({"kind": "installed", "seats": 2}, {"kind": "installed"})
        self.add({"kind": "concurrent"})
        s = hello(self.role, "m1", version="2014r2", host="ws-old")
        self.successResultOf(run(self.role.assign(s.client, "XMLSpy", [installed])))
        html = self.render(elements.ClientsElement(self.view, TOKEN))
        body = re.search(rf'<tbody id="client-{s.client}">.*?</tbody>', html, re.S).group(0)
        self.assertIn("ws-old", body)
        self.assertIn("not failover-capable", body)
        self.assertIn('value="unregister"', body)
        product = re.search(r'<tr id="product-.*?</tr>', body, re.S).group(0)
        self.assertIn("2014r2", product)
        self.assertIn(f'name="license" class="link" title="unassign" value="{installed}"', product)
        options = re.findall(r'<option value="([^"]+)"', product)
        self.assertEqual(options, [other])

    def test_nothingToAssign(self):
        """A product with no assignable license says so instead of a form."""
        self.add({"kind": "concurrent"})
        hello(self.role, "m1")
        html = self.render(elements.ClientsElement(self.view, TOKEN))
        self.assertIn("no license to assign", html)
        self.assertNotIn("<select", html)


class MonitoringTests(ElementTestCase):
    def test_empty(self):
        """With no leases both lists say they are empty."""
        html = self.render(elements.MonitoringElement(self.view, TOKEN))
        self.assertIn("No client holds a running license.", html)
        self.assertIn("No seat is checked out.", html)

    def test_runningAndBorrowed(self):
        """Running leases show heartbeat age and time left; borrowed seats their end."""
        self.add({"seats": 5})
        s = hello(self.role, "m1", version="2014r2", host="ws1")
        lease = self.successResultOf(run(self.role.checkout(s, {})))
        borrowed = self.successResultOf(run(self.role.borrow(s, {"days": "2"})))
        self.clock.advance(45)
        html = self.render(elements.MonitoringElement(self.view, TOKEN))
        running = re.search(r'<table class="list" id="running">.*?</table>', html, re.S).group(0)
        row = re.search(rf'<tr id="lease-{lease["lease"]}">.*?</tr>', running, re.S).group(0)
        self.assertIn("ws1", row)
        self.assertIn("45 s ago", row)
        self.assertIn("1 min", row)
        self.assertIn("not failover-capable", row)
        self.assertIn(f'name="lease" value="{lease["lease"]}"', row)
        self.assertIn(f'name="csrf" value="{TOKEN}"', row)
        self.assertIn('name="confirm" value="yes" required="required"', row)
        table = re.search(r'<table class="list" id="borrowed">.*?</table>', html, re.S).group(0)
        self.assertIn(f"lease-{borrowed['lease']}", table)
        self.assertIn(f'name="lease" value="{borrowed["lease"]}"', table)
        self.assertIn(display.timestamp(START + 2 * DAY), table)
        self.assertIn("(1)", html)


class MessagesTests(ElementTestCase):
    def test_events(self):
        """Events are listed in the order given (newest first), escaped, with severity."""
        events = [
            Event(START + 60, "takeover", "warning", "took <over>"),
            Event(START, "license-added", "info", "added"),
        ]
        html = self.render(elements.MessagesElement(events, 200))
        self.assertLess(html.index("took &lt;over&gt;"), html.index(">added<"))
        self.assertIn("sev-warning", html)
        self.assertIn(display.timestamp(START + 60), html)
        self.assertNotIn("are shown", html)

    def test_limit(self):
        """A full list says only the newest are shown."""
        events = [Event(START, "x", "info", "m")] * 3
        self.assertIn("The newest 3 messages", self.render(elements.MessagesElement(events, 3)))

    def test_empty(self):
        """No events: the tab says so."""
        self.assertIn("No messages yet.", self.render(elements.MessagesElement([], 200)))


def policySelect(html: str) -> str:
    """The partition policy's choice on the Settings tab."""
    return re.search(r'<select name="partition_policy".*?</select>', html, re.S).group(0)


class SettingsTests(ElementTestCase):
    def test_primary(self):
        """On a primary the mode form has Primary chosen and the limits are editable."""
        html = self.render(elements.SettingsElement(self.view, TOKEN))
        self.assertIn('id="current-mode">primary<', html)
        self.assertIn('id="mode-primary" checked="checked"', html)
        self.assertIn('name="lease_ttl" id="lease-ttl" min="4" max="86400"', html)
        self.assertIn('value="120"', html)
        self.assertIn('id="borrow-enabled" checked="checked"', html)
        self.assertNotIn('disabled="disabled"', html)
        # Mode, licensing, alert e-mail, seat policy, vendor key, password.
        self.assertEqual(html.count(f'name="csrf" value="{TOKEN}"'), 6)

    def test_partitionPolicy(self):
        """The policy is a choice of full and exact with the current one selected, the share
        a text field, with the hint that a license's own terms come first."""
        html = self.render(elements.SettingsElement(self.view, TOKEN))
        self.assertIn('<select name="partition_policy" id="partition-policy">', html)
        self.assertEqual(
            re.findall(r'<option value="(\w+)"( selected="selected")?>', policySelect(html)),
            [("full", ' selected="selected"'), ("exact", "")],
        )
        self.assertIn('name="failover_share" id="failover-share"', html)
        self.assertIn('value="20%"', html)
        self.assertIn("A license its vendor made exact stays exact", html)
        self.successResultOf(
            run(self.role.updateSettings({"partition_policy": "exact", "failover_share": "1"}))
        )
        html = self.render(elements.SettingsElement(self.view, TOKEN))
        self.assertEqual(
            re.findall(r'<option value="(\w+)"( selected="selected")?>', policySelect(html)),
            [("full", ""), ("exact", ' selected="selected"')],
        )
        self.assertIn('id="failover-share" size="8" required="required" value="1"', html)

    def test_standbyFailover(self):
        """On a standby failover the mode names the primary; the synced limits are locked."""
        self.successResultOf(self.role.switchTo("failover", "ls0:35355"))
        html = self.render(elements.SettingsElement(self.view, TOKEN))
        self.assertIn('id="current-mode">failover of ls0:35355<', html)
        self.assertIn('id="mode-failover" checked="checked"', html)
        self.assertIn('value="ls0:35355"', html)
        self.assertIn('<fieldset disabled="disabled">', html)
        self.assertIn("synced from the primary", html)


class SmallElementTests(ElementTestCase):
    def test_login(self):
        """The login form posts the password and where to go next."""
        html = self.render(elements.LoginElement("/clients"))
        self.assertIn('action="/login"', html)
        self.assertIn('type="password" name="password"', html)
        self.assertIn('name="next" value="/clients"', html)

    def test_logout(self):
        """The logout page's form carries the CSRF token."""
        html = self.render(elements.LogoutElement(TOKEN))
        self.assertIn(f'name="csrf" value="{TOKEN}"', html)

    def test_standby(self):
        """A hidden tab's page names the primary and its address."""
        self.successResultOf(self.role.switchTo("failover", "ls0:35355"))
        html = self.render(elements.StandbyElement(self.view, "License Pool"))
        self.assertIn("failover in standby", html)
        self.assertIn("The License Pool is", html)
        self.assertIn("<code>ls0:35355</code>", html)


class DisplayTests(unittest.TestCase):
    def test_duration(self):
        """Durations read as seconds, minutes, hours and days."""
        cases = [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (3600, "1 h"),
            (3720, "1 h 2 min"),
            (86400, "1 d"),
            (90000, "1 d 1 h"),
            (-5, "0 s"),
        ]
        for seconds, text in cases:
            self.assertEqual(display.duration(seconds), text)

    def test_timestamp(self):
        """Times are UTC, and None is never."""
        self.assertEqual(display.timestamp(0), "1970-01-01 00:00:00 UTC")
        self.assertEqual(display.timestamp(None), "never")
        self.assertEqual(display.ago(None, 10), "never")
        self.assertEqual(display.ago(10, 70), "1 min ago")

    def test_timeOfDay(self):
        """A time of the same UTC day reads as HH:MM UTC; one of another day has its date."""
        noon = 86400 * 3 + 12 * 3600 + 5 * 60
        self.assertEqual(display.time_of_day(noon, noon + 3600), "12:05 UTC")
        self.assertEqual(display.time_of_day(noon, noon + 86400), "1970-01-04 12:05 UTC")
