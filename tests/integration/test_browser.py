"""The web pages in a real browser: headless Chromium, through selenium, against real servers.

Uses Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); nothing here downloads a browser or a driver.
``make test`` installs them (``tools/system-packages``); without them (or without
selenium) the tests fail and say why: a skipped test would pass unseen.

With ``LICENSESERVER_SCREENSHOTS=1`` in the environment the tests also save a
PNG of each page in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.integration.harness import (
    REPO_ROOT,
    api_get,
    issue_license,
    make_vendor_key,
    start_server,
    wait_for,
)
from tests.integration.plainclient import PlainClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
ALL_TABS = [
    f"tab-{name}" for name in ("pool", "clients", "monitoring", "usage", "messages", "settings")
]
"""The tabs of a primary, or of an active failover, in order."""
WAIT = 20.0
"""Seconds a browser step may take before the test fails."""

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if webdriver is None:
        return "selenium is not installed (pip install '.[test]')"
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return (
            f"{' and '.join(absent)} missing: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver); make test does"
        )
    return None


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


class BrowserTestCase(unittest.TestCase):
    """A headless Chromium per test, with helpers to drive the admin pages."""

    def setUp(self) -> None:
        missing = _missing()
        if missing:
            self.fail(f"the browser tests cannot run: {missing}")
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.browser = self.startBrowser()

    def startBrowser(self) -> Any:
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=self.base)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        service = Service(str(CHROMEDRIVER), log_output=str(self.base / "chromedriver.log"))
        browser = webdriver.Chrome(service=service, options=options)
        self.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        self.addCleanup(browser.quit)
        browser.set_page_load_timeout(WAIT)
        return browser

    # Driving pages

    def open(self, server: Any, path: str) -> None:
        self.browser.get(server.web_url + path)

    def path(self) -> str:
        return re.sub(r"^https?://[^/]+", "", self.browser.current_url)

    def waitFor(self, condition: Any, what: str) -> Any:
        try:
            return WebDriverWait(self.browser, WAIT, poll_frequency=0.1).until(
                lambda _: condition()
            )
        except WebDriverException as e:
            raise AssertionError(f"timed out waiting for {what} (at {self.path()}): {e}") from e

    def find(self, css: str) -> Any:
        return self.browser.find_element(By.CSS_SELECTOR, css)

    def present(self, css: str) -> bool:
        return bool(self.browser.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def submit(self, css: str) -> None:
        """Click a submit button and wait for the page that the POST redirects to."""
        old = self.find("html")
        self.find(css).click()
        self.waitFor(lambda: _stale(old), f"the page after clicking {css}")

    def login(self, server: Any, path: str = "/pool") -> None:
        self.open(server, path)
        self.waitFor(lambda: self.path().startswith("/login"), "the login page")
        self.find("#password").send_keys(server.admin_password)
        self.submit("#login")
        self.waitFor(lambda: self.path() == path, f"{path} after login")

    def screenshot(self, name: str) -> None:
        """Save the page as docs/screenshots/NAME.png when LICENSESERVER_SCREENSHOTS is set."""
        if not os.environ.get("LICENSESERVER_SCREENSHOTS"):
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        content, chrome = self.browser.execute_script(
            "return [document.body.scrollHeight, window.outerHeight - window.innerHeight]"
        )
        self.browser.set_window_size(1400, max(700, min(int(content) + int(chrome) + 20, 2400)))
        self.browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        self.browser.set_window_size(1400, 1000)

    def lines(self, element: Any) -> int:
        """How many lines the text of ``element`` takes on the page."""
        return self.browser.execute_script(
            "const range = document.createRange(); range.selectNodeContents(arguments[0]);"
            " return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;",
            element,
        )

    def tabs(self) -> list[str]:
        return [
            a.get_attribute("id") for a in self.browser.find_elements(By.CSS_SELECTOR, "#tabs a")
        ]


def _stale(element: Any) -> bool:
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def hello(
    server: Any, machine: str, version: str = "2025r2", user: str = "anna"
) -> tuple[PlainClient, str]:
    """A licensing connection that said HELLO as ``machine``, and its client id."""
    client = PlainClient("127.0.0.1", server.licensing_port)
    response = client.request(
        "HELLO",
        product="XMLSpy",
        version=version,
        host=f"ws-{machine}",
        machine=machine,
        user=user,
    )
    assert response.ok, response.line
    return client, response["client"]


class PrimaryPagesTests(BrowserTestCase):
    def setUp(self) -> None:
        super().setUp()
        data = self.base / "data"
        self.vendorKey = make_vendor_key(self.base / "vendor", data)
        self.server = start_server(self, data, "--name", "ls-primary")

    def test_adminSession(self):
        """Log in, upload a license, see it, assign it, see the running client, log out."""
        license_file = issue_license(
            self.vendorKey,
            self.base / "xmlspy.lic",
            "XMLSpy",
            "installed",
            2,
            edition="Enterprise",
            expires="2031-12-31",
            licensee="ACME Corp",
        )
        self.open(self.server, "/")
        self.waitFor(lambda: self.path().startswith("/login"), "the login page")
        self.screenshot("login")
        self.find("#password").send_keys(self.server.admin_password)
        self.submit("#login")
        self.waitFor(lambda: self.path() == "/pool", "the pool after login")
        self.assertIn("ls-primary", self.text("#status-header"))
        self.assertEqual(self.tabs(), ALL_TABS)

        # Upload a license file, see it in the pool.
        self.find("#license-file").send_keys(str(license_file))
        self.submit("#upload")
        self.assertIn("Added license", self.text(".notices"))
        (row,) = self.browser.find_elements(By.CSS_SELECTOR, "#licenses tbody tr")
        license_id = row.get_attribute("id").removeprefix("license-")
        self.assertIn("active", row.text)
        self.assertIn("0 / 2", row.text)
        self.assertIn("2031-12-31", row.text)

        # A client registers; assign the license to it.
        m1, client_id = hello(self.server, "m1")
        self.addCleanup(m1.close)
        old, _ = hello(self.server, "m2", version="2014r2", user="bob")
        self.addCleanup(old.close)
        self.find("#tab-clients").click()
        self.waitFor(lambda: self.path() == "/clients", "Client Management")
        Select(self.find(f"#assign-{client_id}-XMLSpy")).select_by_value(license_id)
        self.submit(f"#product-{client_id}-XMLSpy button[value=assign]")
        self.assertIn(f"Assigned {license_id} to {client_id}", self.text(".notices"))
        self.assertIn(license_id, self.text(f"#product-{client_id}-XMLSpy"))
        self.screenshot("clients")

        # The client takes a seat: Client Monitoring shows it running.
        lease = m1.request("CHECKOUT")
        self.assertTrue(lease.ok, lease.line)
        self.find("#tab-monitoring").click()
        self.waitFor(lambda: self.path() == "/monitoring", "Client Monitoring")
        running = self.text("#running")
        self.assertIn("ws-m1", running)
        self.assertIn("s ago", running)
        self.assertIn("failover-capable", running)
        self.screenshot("monitoring")

        self.open(self.server, "/pool")
        self.assertIn("1 / 2", self.text(f"#license-{license_id}"))
        self.assertIn("not failover-capable", self.text("#warnings"))
        self.screenshot("pool")
        self.browser.set_window_size(1280, 1000)
        for cell in self.browser.find_elements(By.CSS_SELECTOR, "td.date"):
            self.assertEqual(self.lines(cell), 1, f"{cell.text!r} wraps at 1280 px")
        self.browser.set_window_size(1400, 1000)

        # Free m1's seat on Client Monitoring: without the tick the browser does not send
        # the form; with it the seat is free, and m1's next heartbeat is refused.
        self.open(self.server, "/monitoring")
        row = f"#lease-{lease['lease']}"
        self.find(f"{row} form.revoke button").click()
        self.assertTrue(self.present(row))
        self.assertEqual(self.path(), "/monitoring")
        self.find(f"{row} form.revoke input[name=confirm]").click()
        self.submit(f"{row} form.revoke button")
        self.assertIn("The seat of m1", self.text(".notices"))
        self.assertFalse(self.present(row))
        refused = m1.request("HEARTBEAT", lease=lease["lease"])
        self.assertEqual((refused.code, refused.reason), (410, "revoked"))
        self.open(self.server, "/pool")
        self.assertIn("0 / 2", self.text(f"#license-{license_id}"))

        # Usage: the charts are SVG drawn by the server, readable at 1280 px; the CSV
        # download is the admin API's, which the session may read.
        self.browser.set_window_size(1280, 1000)
        self.open(self.server, "/usage?period=week")
        self.assertTrue(self.present("#seats-chart svg.chart"))
        self.assertTrue(self.present("#denials-chart svg.chart"))
        self.assertIn("the last week", self.text("#content"))
        width = self.browser.execute_script("return document.documentElement.scrollWidth")
        self.assertLessEqual(width, 1280)
        self.screenshot("usage")
        href = self.find("#usage-csv").get_attribute("href")
        self.assertIn("/api/usage.csv?product=XMLSpy&step=1h", href)
        self.browser.set_window_size(1400, 1000)

        self.open(self.server, "/messages")
        self.assertIn("license-added", self.text("#messages"))
        self.assertIn("lease-revoked", self.text("#messages"))
        self.screenshot("messages")

        # Another vendor's license is refused, naming the file and how to trust the key;
        # trusting its key on the Settings tab takes it at once, without a restart.
        other = make_vendor_key(self.base / "other-vendor", name="acme")
        acme_license = issue_license(other, self.base / "acme.lic", "MapForce", "concurrent", 3)
        self.open(self.server, "/pool")
        self.find("#license-file").send_keys(str(acme_license))
        self.submit("#upload")
        refusal = self.text(".notices")
        self.assertIn("acme.lic: license", refusal)
        self.assertIn("which this server does not trust", refusal)
        self.assertIn("Settings tab", refusal)
        self.open(self.server, "/settings")
        self.find("#vendor-key-file").send_keys(str(other.with_suffix(".pub")))
        self.submit("#vendor-key-add")
        self.assertIn("is trusted now", self.text(".notices"))
        self.assertIn("added", self.text("#vendor-keys"))
        # The seat policy editor: a policy that does not check out is refused with the
        # reason; a good one is saved and shown as a table of rules.
        editor = self.find("#policy-text")
        editor.clear()
        editor.send_keys(
            '{"groups": {}, "rules": [{"product": "XMLSpy", "kind": "max",'
            ' "group": "cad", "count": 1}]}'
        )
        self.submit("#policy-save")
        self.assertIn("unknown group 'cad'", self.text(".notices"))
        editor = self.find("#policy-text")
        editor.clear()
        editor.send_keys(
            '{"groups": {"cad": {"users": ["anna"], "hosts": []}}, "rules":'
            ' [{"product": "XMLSpy", "kind": "max", "group": "cad", "count": 1}]}'
        )
        self.submit("#policy-save")
        self.assertIn("Seat policy saved", self.text(".notices"))
        self.assertIn("anna", self.text("#policy-rules"))
        # Alert e-mail: saved; a test e-mail to a port where nothing listens says why.
        for field, value in (("#alert-host", "127.0.0.1"), ("#alert-to", "admin@example.com")):
            self.find(field).clear()
            self.find(field).send_keys(value)
        self.find("#alert-port").clear()
        self.find("#alert-port").send_keys("1")
        self.submit("#alerts-save")
        self.assertIn("Alert e-mail settings saved.", self.text(".notices"))
        self.assertEqual(self.find("#alert-to").get_attribute("value"), "admin@example.com")
        self.submit("#alerts-test")
        self.assertIn("could not send to 127.0.0.1:1", self.text(".notices"))
        self.screenshot("settings")
        self.open(self.server, "/pool")
        self.find("#license-file").send_keys(str(acme_license))
        self.submit("#upload")
        self.assertIn("Added license", self.text(".notices"))
        self.assertIn("MapForce", self.text("#licenses"))

        # Log out: the pages need a login again.
        self.submit("#logout")
        self.waitFor(lambda: self.path().startswith("/login"), "the login page after logout")
        self.assertIn("Logged out.", self.text(".notices"))
        self.open(self.server, "/pool")
        self.waitFor(lambda: self.path().startswith("/login"), "the login page again")


class FailoverPagesTests(BrowserTestCase):
    def setUp(self) -> None:
        super().setUp()
        secret = self.base / "peer-secret"
        secret.write_text("a-pairing-secret-for-the-browser-test\n")
        primary_data = self.base / "primary"
        self.vendorKey = make_vendor_key(self.base / "vendor", primary_data)
        self.primary = start_server(
            self,
            primary_data,
            "--name",
            "ls-primary",
            "--peer-secret-file",
            str(secret),
            "--takeover-after",
            "2",
            "--heartbeat",
            "0.2",
            name="primary",
        )
        self.failover = start_server(
            self,
            self.base / "failover",
            "--role",
            "failover",
            "--primary",
            f"127.0.0.1:{self.primary.licensing_port}",
            "--name",
            "ls-failover",
            "--peer-secret-file",
            str(secret),
            "--heartbeat",
            "0.2",
            "--takeover-after",
            "2",
            name="failover",
        )

    def synced(self) -> bool:
        peer = api_get(self.failover, "/api/status")["peer"] or {}
        return peer.get("link") == "paired" and peer.get("last_sync") is not None

    def test_standbyAndTakeover(self):
        """A standby failover names its primary and hides three tabs; they appear on takeover."""
        license_file = issue_license(
            self.vendorKey, self.base / "x.lic", "XMLSpy", "concurrent", 5
        )
        self.login(self.primary, "/pool")
        self.find("#license-file").send_keys(str(license_file))
        self.submit("#upload")
        wait_for(self.synced, WAIT, "the failover to pair and sync", self.failover.log_tail)
        wait_for(
            lambda: (api_get(self.primary, "/api/status")["peer"] or {}).get("in_sync"),
            WAIT,
            "the primary to see its failover in sync",
        )
        self.open(self.primary, "/pool")
        header = self.text("#status-header")
        self.assertIn("ls-failover", header)
        self.assertIn("in sync", header)
        self.screenshot("primary-with-failover")

        # The failover in standby: its header names the primary; three tabs are absent.
        self.browser.delete_all_cookies()
        self.login(self.failover, "/messages")
        header = self.text("#status-header")
        self.assertIn("ls-failover", header)
        self.assertIn("failover", self.text("#server-role").lower())
        self.assertIn("standby", self.text("#server-state").lower())
        self.assertIn("ls-primary", header)
        self.assertIn(f"127.0.0.1:{self.primary.licensing_port}", header)
        self.assertEqual(self.tabs(), ["tab-messages", "tab-settings"])
        self.screenshot("failover-standby")
        self.open(self.failover, "/pool")
        self.assertIn("failover in standby", self.text("#standby"))
        self.assertIn("ls-primary", self.text("#standby"))
        self.open(self.failover, "/messages")

        # The primary dies: without a reload, the failover's page shows the three tabs.
        self.primary.kill()
        wait_for(
            lambda: api_get(self.failover, "/api/status")["state"] == "active",
            WAIT,
            "the failover to take over",
            self.failover.log_tail,
        )
        self.waitFor(lambda: self.present("#tab-pool"), "the pool tab to appear")
        self.assertEqual(self.tabs(), ALL_TABS)
        self.assertIn("active", self.text("#server-state").lower())
        self.find("#tab-pool").click()
        self.waitFor(lambda: self.path() == "/pool", "the failover's pool")
        self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#licenses tbody tr")), 1)
        warning = "discarded when the primary takes control back"
        self.assertIn(warning, self.text(".notice-warning"))
        self.open(self.failover, "/messages")
        self.assertIn("takeover", self.text("#messages"))
        self.screenshot("failover-active")

        # Its Settings warn the same way, and show borrowing off: a failover never lends.
        self.open(self.failover, "/settings")
        self.assertIn(warning, self.text(".notice-warning"))
        box = self.find("#borrow-enabled")
        self.assertFalse(box.is_selected())
        self.assertFalse(box.is_enabled())
        self.assertIn(
            "Borrowing is off while this server is the failover", self.text("#borrow-off")
        )
