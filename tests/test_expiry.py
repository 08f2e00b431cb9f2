"""Expiry ahead: the alert window ``alert_expiry_days``, License Pool and the header.

The clock is at 2026-05-28 20:26 UTC (``START``); a license whose end date is
2026-06-08 ends at 2026-06-09 00:00 UTC: 11 whole days ahead.
"""

from __future__ import annotations

import json
import re

from licenseserver.web import display
from licenseserver.web.facade import ServerView
from tests.helpers import licenseFile, run
from tests.test_web_http import WebTestCase

SOON = "2026-06-08"
LATER = "2026-09-30"


class ExpiryTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        primary = self.role.current
        self.soon, self.later = (
            self.successResultOf(run(primary.addLicenses(licenseFile({"expires": end}))))[0]
            for end in (SOON, LATER)
        )

    def settings(self, **values) -> int:
        return self.api("PUT", "/api/settings", json.dumps(values).encode()).status

    def licenses(self) -> dict[str, dict]:
        body = json.loads(self.api("GET", "/api/licenses").body)
        return {lic["id"]: lic for lic in body}

    def test_settingDefaultAndChecks(self):
        """30 days by default; a whole number from 0 to 3650, else 400 and nothing changed."""
        self.assertEqual(
            json.loads(self.api("GET", "/api/settings").body)["alert_expiry_days"], 30
        )
        for bad in (-1, 3651, "10", 1.5, True):
            self.assertEqual(self.settings(alert_expiry_days=bad), 400, bad)
        self.assertEqual(self.settings(alert_expiry_days=0), 200)
        self.assertEqual(self.role.current.setting("alert_expiry_days"), 0)

    def test_apiSaysWhichExpire(self):
        """``days_to_expiry`` counts whole UTC days; ``expiring`` follows the window, whose
        last day counts."""
        lic = self.licenses()
        self.assertEqual(lic[self.soon]["days_to_expiry"], 11)
        self.assertEqual((lic[self.soon]["expiring"], lic[self.later]["expiring"]), (True, False))
        self.assertEqual(self.settings(alert_expiry_days=11), 200)
        self.assertTrue(self.licenses()[self.soon]["expiring"])
        self.assertEqual(self.settings(alert_expiry_days=10), 200)
        self.assertFalse(self.licenses()[self.soon]["expiring"])

    def test_headerAndPool(self):
        """The header names the license that ends within the window; License Pool shows
        the days left of each license and marks the expiring one."""
        self.login()
        page = self.get("/pool").body
        self.assertIn(f"license {self.soon} (XMLSpy) expires on {SOON}", page)
        row = re.search(rf'<tr id="license-{self.soon}">.*?</tr>', page, re.S).group(0)
        self.assertIn("11 days left", row)
        self.assertIn("expires soon", row)
        later = re.search(rf'<tr id="license-{self.later}">.*?</tr>', page, re.S).group(0)
        self.assertNotIn("expires soon", later)
        self.assertEqual(self.settings(alert_expiry_days=5), 200)
        page = self.get("/pool").body
        self.assertNotIn("expires on", page)
        self.assertEqual(display.expiring_licenses(self.role_view(), self.clock.seconds()), [])

    def test_settingsForm(self):
        """The Settings tab shows the window and saves it."""
        self.login()
        page = self.get("/settings")
        self.assertIn('name="alert_expiry_days"', page.body)
        fields = {
            "csrf": page.csrf(),
            "action": "licensing",
            "lease_ttl": "120",
            "borrow_max_days": "30",
            "alert_expiry_days": "60",
        }
        self.assertRedirect(self.post("/settings", fields), "/settings")
        self.assertEqual(self.role.current.setting("alert_expiry_days"), 60)
        fields["alert_expiry_days"] = "soon"
        self.post("/settings", fields)
        self.assertIn(
            "the warning of licenses that end must be a whole number", self.get("/settings").body
        )
        self.assertEqual(self.role.current.setting("alert_expiry_days"), 60)

    def role_view(self):
        return ServerView(self.role)
