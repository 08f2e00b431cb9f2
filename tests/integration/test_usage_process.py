"""The usage history survives a SIGKILL of a real ``twistd`` server, less the minute under way.

The server writes each minute's row once the minute is over; a SIGKILL after
that loses at most the minute under way. The test holds a seat, waits (polling,
up to a deadline) until a minute with the seat in use is on disk, kills the
server in the next minute, starts it again on the same data directory and
reads the history back through the admin API.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import (
    api_get,
    issue_license,
    make_vendor_key,
    start_server,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient, ResponseAssertions

MINUTE = 60


class UsageAfterKillTests(ResponseAssertions, unittest.TestCase):
    def test_sigkillLosesAtMostTheMinuteUnderWay(self):
        base = Path(tempfile.mkdtemp(prefix="ls-usage-"))
        data = base / "data"
        key = make_vendor_key(base / "vendor", data)
        server = start_server(self, data, "--name", "ls-usage")
        (license_id,) = upload_license(
            server, issue_license(key, base / "x.lic", "XMLSpy", "concurrent", 3)
        )
        client = PlainClient("127.0.0.1", server.licensing_port)
        self.addCleanup(client.close)
        self.assertOK(
            client.request("HELLO", product="XMLSpy", version="2025r2", host="ws1", machine="m1")
        )
        self.assertOK(client.request("CHECKOUT"), "lease")

        def minutes() -> list[dict]:
            history = api_get(server, "/api/usage?step=1m&product=XMLSpy")
            return [p for series in history["series"] for p in series["points"]]

        written = wait_for(
            lambda: [p for p in minutes() if p["peak"] == 1],
            timeout=3 * MINUTE,
            what="a minute row with the seat in use",
        )
        client.close()
        server.kill()

        server.start()
        after = minutes()
        for point in written:
            self.assertIn(point, after)
        history = api_get(server, "/api/usage?step=1h&product=XMLSpy")
        (series,) = history["series"]
        self.assertEqual((series["license"], series["seats"]), (license_id, 3))
        self.assertEqual(series["points"][0]["peak"], 1)
