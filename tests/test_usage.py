"""The usage history: aggregation, downsampling, retention, and its admin API.

``usage.Recorder`` is pure; the store's SQL (``store.usagejobs``) runs on the
FakeStore's in-memory SQLite as on the real one; the role samples the seats in
use every second on a Clock and writes each minute once it is over.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time

from twisted.trial import unittest

from licenseserver import usage
from licenseserver.protocols import wire
from licenseserver.testing import FakeStore
from licenseserver.usage import DAY, HOUR, MINUTE, Denial, Point, Recorder
from tests.helpers import START, hello, licenseFile, makeRole, run, session
from tests.test_failover import TAKEOVER, PairTestCase
from tests.test_web_http import WebTestCase

T0 = int(START) // DAY * DAY + 10 * HOUR
"""A whole hour, some hours into a day."""


def minute(license_id: str, t: int, in_use: float, peak: int, denials: int = 0) -> Point:
    return Point("1m", license_id, "XMLSpy", t, in_use, peak, denials)


class RecorderTests(unittest.TestCase):
    def test_minuteAverageAndPeak(self):
        """A minute's row averages its samples and keeps the largest; it is due once the
        minute is over, and only once."""
        recorder = Recorder()
        for second, count in ((0, 1), (20, 3), (40, 2)):
            recorder.sample(T0 + second, {"L-1": ("XMLSpy", count)})
        self.assertEqual(recorder.due(T0 + 59), ([], [], []))
        points, denials, _ = recorder.due(T0 + 60)
        self.assertEqual(points, [minute("L-1", T0, 2.0, 3)])
        self.assertEqual(denials, [])
        self.assertEqual(recorder.due(T0 + 61), ([], [], []))

    def test_seatTimeByHolder(self):
        """Each sample adds its interval to the seat time of every holder, by the day."""
        recorder = Recorder()
        for second in range(3):
            holders = [("XMLSpy", "m1", "ann")] + ([("XMLSpy", "m2", "bob")] if second else [])
            recorder.sample(T0 + second, {}, holders, every=1.0)
        _, _, held = recorder.flush()
        day = T0 // DAY * DAY
        self.assertEqual(
            held,
            [
                usage.SeatTime(day, "XMLSpy", "m1", "ann", 3.0),
                usage.SeatTime(day, "XMLSpy", "m2", "bob", 2.0),
            ],
        )

    def test_denialsCountedAndListed(self):
        """A refusal counts for each license of its product and is listed, up to the
        maximum a minute."""
        recorder = Recorder()
        refusal = Denial(T0 + 5, "XMLSpy", "m1", "ann", "no-seats")
        for _ in range(usage.MAX_DENIALS_PER_MINUTE + 5):
            recorder.denied(T0 + 5, refusal, ["L-1", "L-2"])
        points, denials, _ = recorder.flush()
        self.assertEqual(
            [(p.license, p.denials) for p in points],
            [("L-1", usage.MAX_DENIALS_PER_MINUTE + 5), ("L-2", usage.MAX_DENIALS_PER_MINUTE + 5)],
        )
        self.assertEqual(len(denials), usage.MAX_DENIALS_PER_MINUTE)

    def test_refusalInANewMinuteClosesTheLast(self):
        """Whatever comes first in a new minute (a sample or a refusal) closes the last."""
        recorder = Recorder()
        recorder.sample(T0 + 30, {"L-1": ("XMLSpy", 4)})
        recorder.denied(T0 + 61, Denial(T0 + 61, "XMLSpy", "m1", "-", "no-seats"), ["L-1"])
        points, _, _ = recorder.due(T0 + 62)
        self.assertEqual(points, [minute("L-1", T0, 4.0, 4)])
        points, denials, _ = recorder.flush()
        self.assertEqual(points, [minute("L-1", T0 + 60, 0.0, 0, 1)])
        self.assertEqual(len(denials), 1)


class QueryTests(unittest.TestCase):
    NOW = T0

    def parse(self, **args: str) -> usage.Query:
        return usage.parse_query(args, self.NOW)

    def refused(self, text: str, **args: str) -> None:
        with self.assertRaises(usage.QueryError) as caught:
            self.parse(**args)
        self.assertIn(text, str(caught.exception))

    def test_defaults(self):
        """By default: hours of the last day."""
        self.assertEqual(self.parse(), usage.Query("1h", T0 - DAY, T0))

    def test_isoTimes(self):
        query = self.parse(step="1m", **{"from": "2026-05-28T08:00Z", "to": "2026-05-28T09:00"})
        self.assertEqual(query.until - query.since, HOUR)
        self.assertEqual(self.parse(step="1d", **{"from": "2026-05-01"}).since % DAY, 0)

    def test_badParameters(self):
        """Clear reasons for a step it does not know, a time that does not read, from after
        to, more than a resolution keeps, and too many points."""
        self.refused("step must be one of 1m, 1h, 1d", step="5m")
        self.refused("from must be an ISO 8601 date", **{"from": "yesterday"})
        self.refused("from must be before to", **{"from": "2026-05-28", "to": "2026-05-27"})
        self.refused("goes back 14 days", step="1m", **{"from": "2026-01-01"})
        self.refused("goes back 400 days", step="1h", **{"from": "2024-01-01"})
        nearly = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(T0 - 14 * DAY - HOUR))
        self.refused("more than", step="1m", **{"from": nearly})
        self.parse(step="1d", **{"from": "2000-01-01"})


class StoredHistoryTests(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()

    def add(self, points, denials=(), now=T0 + HOUR, held=()):
        self.successResultOf(self.store.addUsage(list(points), list(denials), now, list(held)))

    def read(self, step, since=T0 - DAY, until=T0 + 2 * DAY, product=None):
        return self.successResultOf(self.store.usage(step, since, until, product))

    def test_hoursAndDaysDerived(self):
        """Hour rows average the minutes written and keep their peak and refusals; day rows
        do the same of the hours, weighted by the minutes each covers."""
        self.add([minute("L-1", T0, 2.0, 3, 1), minute("L-1", T0 + MINUTE, 4.0, 5)])
        self.add([minute("L-1", T0 + HOUR, 1.0, 1, 2)])
        self.assertEqual(
            self.read("1h"),
            [
                Point("1h", "L-1", "XMLSpy", T0, 3.0, 5, 1),
                Point("1h", "L-1", "XMLSpy", T0 + HOUR, 1.0, 1, 2),
            ],
        )
        (day,) = self.read("1d")
        self.assertEqual((day.t, day.peak, day.denials), (T0 // DAY * DAY, 5, 3))
        self.assertAlmostEqual(day.in_use, (2.0 + 4.0 + 1.0) / 3, places=3)

    def test_retention(self):
        """Minute rows go after 15 days, hour rows after 401, day rows never; refusals as
        the minute rows."""
        old = T0 - 20 * DAY
        self.add([minute("L-1", old, 1.0, 1)], [Denial(old, "XMLSpy", "m", "u", "no-seats")])
        now = T0
        self.add([minute("L-1", now, 1.0, 1)], now=now)
        self.assertEqual([p.t for p in self.read("1m", since=0)], [now])
        self.assertEqual([p.t for p in self.read("1h", since=0)], [old // HOUR * HOUR, now])
        self.assertEqual(self.successResultOf(self.store.denials(0, now + DAY, 10)), [])
        self.add([], now=old + 402 * DAY)
        self.assertEqual([p.t for p in self.read("1h", since=0, until=old + 403 * DAY)], [now])
        self.assertEqual(len(self.read("1d", since=0, until=old + 403 * DAY)), 2)

    def test_topHolders(self):
        """Seat hours add up by the day; the top machines or users of a product come
        longest first, within the days asked for."""
        day = T0 // DAY * DAY
        held = [
            usage.SeatTime(day, "XMLSpy", "m1", "ann", 1800.0),
            usage.SeatTime(day, "XMLSpy", "m2", "ann", 3600.0),
            usage.SeatTime(day, "XMLSpy", "m3", "bob", 7200.0),
            usage.SeatTime(day, "MapForce", "m4", "cy", 99999.0),
            usage.SeatTime(day - 2 * DAY, "XMLSpy", "m1", "ann", 99999.0),
        ]
        self.add([], [], now=T0, held=held)
        self.add([], [], now=T0, held=held[:1])
        top = self.successResultOf(self.store.topHolders("XMLSpy", T0, T0 + DAY, "user", 5))
        self.assertEqual(top, [("ann", 2.0), ("bob", 2.0)])
        top = self.successResultOf(self.store.topHolders("XMLSpy", T0, T0 + DAY, "machine", 2))
        self.assertEqual(top, [("m3", 2.0), ("m1", 1.0)])

    def test_denialsNewestFirst(self):
        refusals = [Denial(T0 + i, "XMLSpy", f"m{i}", "u", "no-seats") for i in range(5)]
        self.add([], refusals)
        listed = self.successResultOf(self.store.denials(T0 + 1, T0 + 4, 2))
        self.assertEqual([d.machine for d in listed], ["m3", "m2"])


class RoleHistoryTests(unittest.TestCase):
    def setUp(self):
        self.store = FakeStore()
        self.role = makeRole(self.store)
        self.clock = self.role.clock
        (self.lid,) = self.successResultOf(run(self.role.addLicenses(licenseFile({"seats": 1}))))
        self.start = (int(self.clock.seconds()) // MINUTE + 1) * MINUTE
        self.clock.advance(self.start - self.clock.seconds())

    def history(self, step="1m"):
        return self.successResultOf(
            self.store.usage(step, self.start - HOUR, self.start + DAY, None)
        )

    def test_seatsAndRefusalsByTheMinute(self):
        """A seat held for the second half of a minute averages 0.5 (within a sample) with a
        peak of 1; a
        refused CHECKOUT counts, and is listed with its machine, user and reason."""
        for _ in range(30):
            self.clock.advance(1)
        self.successResultOf(run(self.role.checkout(hello(self.role, "m1"), {})))
        self.failureResultOf(run(self.role.checkout(hello(self.role, "m2", user="bob"), {})))
        for _ in range(31):
            self.clock.advance(1)
        (point,) = self.history()
        self.assertEqual(
            (point.t, point.license, point.peak, point.denials), (self.start, self.lid, 1, 1)
        )
        samples = MINUTE / usage.SAMPLE_EVERY
        self.assertLessEqual(abs(point.in_use - 0.5), 1 / samples + 0.001)
        (denial,) = self.successResultOf(self.store.denials(self.start, self.start + MINUTE, 10))
        self.assertEqual(
            (denial.product, denial.machine, denial.user, denial.reason),
            ("XMLSpy", "m2", "bob", "no-seats"),
        )

    def test_everyRefusalKind(self):
        """Refusals other than for seats count too: a BORROW where borrowing is off."""
        self.successResultOf(run(self.role.updateSettings({"borrow_enabled": False})))
        s = hello(self.role, "m3", user="cy")
        self.failureResultOf(run(self.role.borrow(s, {"days": "2"})))
        self.role.stopService()
        (denial,) = self.successResultOf(self.store.denials(self.start, self.start + MINUTE, 10))
        self.assertEqual((denial.machine, denial.reason), ("m3", "borrow-disabled"))

    def test_cleanStopWritesTheMinuteUnderWay(self):
        """A clean stop writes the minute under way; a crash loses only that minute."""
        self.successResultOf(run(self.role.checkout(hello(self.role, "m1"), {})))
        self.clock.advance(10)
        self.assertEqual(self.history(), [])
        self.role.stopService()
        (point,) = self.history()
        self.assertEqual((point.t, point.peak), (self.start, 1))


class UsageAPITests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        primary = self.role.current
        (self.lid,) = self.successResultOf(run(primary.addLicenses(licenseFile({"seats": 2}))))
        now = int(self.clock.seconds())
        self.hour = now // HOUR * HOUR
        points = [minute(self.lid, self.hour, 1.5, 2, 1)]
        refusal = Denial(self.hour + 5, "XMLSpy", "m9", "bob", "no-seats")
        self.successResultOf(self.store.addUsage(points, [refusal], now))

    def json(self, path: str):
        response = self.api("GET", path)
        return response.status, json.loads(response.body)

    def test_usage(self):
        """Series per product and license, with the license's seats and its points."""
        status, body = self.json("/api/usage?step=1h&product=XMLSpy")
        self.assertEqual(status, 200)
        self.assertEqual(body["step"], "1h")
        (series,) = body["series"]
        self.assertEqual(
            (series["product"], series["license"], series["seats"]), ("XMLSpy", self.lid, 2)
        )
        self.assertEqual(
            series["points"], [{"t": self.hour, "in_use": 1.5, "peak": 2, "denials": 1}]
        )
        self.assertEqual(self.json("/api/usage?step=1h&product=Other")[1]["series"], [])

    def test_csv(self):
        response = self.api("GET", "/api/usage.csv?step=1h")
        self.assertEqual(response.status, 200)
        self.assertIn("text/csv", response.headers["content-type"][0])
        rows = list(csv.reader(io.StringIO(response.body)))
        self.assertEqual(rows[0], ["t", "product", "license", "in_use", "peak", "denials"])
        self.assertEqual(rows[1][1:], ["XMLSpy", self.lid, "1.5", "2", "1"])
        self.assertTrue(rows[1][0].endswith("Z"))

    def test_denials(self):
        status, body = self.json("/api/denials")
        self.assertEqual(status, 200)
        self.assertEqual(
            body,
            [
                {
                    "t": self.hour + 5,
                    "product": "XMLSpy",
                    "machine": "m9",
                    "user": "bob",
                    "reason": "no-seats",
                }
            ],
        )

    def test_badParameters(self):
        """400 with a JSON reason for each bad parameter; the admin only."""
        for path, reason in (
            ("/api/usage?step=2h", "step must be one of"),
            ("/api/usage?from=2026-06-02&to=2026-06-01", "from must be before to"),
            ("/api/usage?step=1m&from=2020-01-01", "goes back 14 days"),
            ("/api/usage.csv?from=soon", "from must be an ISO 8601"),
            ("/api/denials?from=2020-01-01", "goes back 14 days"),
        ):
            status, body = self.json(path)
            self.assertEqual(status, 400, path)
            self.assertIn(reason, body["error"], path)
        self.assertEqual(self.request("GET", "/api/usage").status, 401)


class UsageTabTests(WebTestCase):
    """The Usage tab: charts as SVG with a title per point, top users and machines, CSV."""

    def setUp(self) -> None:
        super().setUp()
        primary = self.role.current
        (self.lid,) = self.successResultOf(run(primary.addLicenses(licenseFile({"seats": 4}))))
        now = int(self.clock.seconds())
        self.hour = now // HOUR * HOUR - HOUR
        points = [minute(self.lid, self.hour, 2.5, 3, 2)]
        held = [usage.SeatTime(now // DAY * DAY, "XMLSpy", "ws7", "ann", 5400.0)]
        self.successResultOf(self.store.addUsage(points, [], now, held))
        self.login()

    def test_charts(self):
        body = self.get("/usage?product=XMLSpy&period=day").body
        seats = re.search(r'<div class="chart-box" id="seats-chart">(.*?)</div>', body, re.S)
        self.assertIsNotNone(seats)
        chart = seats.group(1)
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg"', chart)
        self.assertIn('class="series peak"', chart)
        self.assertIn('class="series average"', chart)
        self.assertIn("<title>4 seats licensed</title>", chart)
        self.assertIn("2.5 in use on average, at most 3 of 4 seats</title>", chart)
        denials = re.search(r'id="denials-chart">(.*?)</div>', body, re.S).group(1)
        self.assertIn(": 2 refused</title>", denials)
        self.assertIn("(XMLSpy, the last day, 4 seats licensed)", body)
        users = re.search(r'<table class="list" id="top-users">.*?</table>', body, re.S).group(0)
        self.assertIn("<td>ann</td>", users)
        self.assertIn(">1.5</td>", users)
        self.assertIn("<td>ws7</td>", body)
        link = re.search(r'<a id="usage-csv" href="([^"]+)"', body).group(1)
        self.assertTrue(link.startswith("/api/usage.csv?product=XMLSpy&amp;step=1h&amp;from="))
        csv_body = self.get(html.unescape(link)).body
        self.assertTrue(csv_body.startswith("t,product,license,in_use,peak,denials"))
        self.assertIn(f"XMLSpy,{self.lid},2.5,3,2", csv_body)

    def test_periods(self):
        """Each period shows its step; an unknown one says so and shows a day."""
        for period, step in (("week", "1h"), ("month", "1d"), ("year", "1d")):
            body = self.get(f"/usage?period={period}").body
            self.assertIn(f"step={step}", body, period)
            self.assertIn(f'<option value="{period}" selected="selected">', body)
        body = self.get("/usage?period=fortnight").body
        self.assertIn("unknown period 'fortnight': showing a day", body)
        self.assertIn("the last day", body)

    def test_needsLogin(self):
        """The tab needs a login (a standby failover hides it: ``POOL_TABS``)."""
        self.cookie = None
        self.assertEqual(self.get("/usage").status, 303)


class FailoverHistoryTests(PairTestCase):
    """The failover syncs the primary's history once a minute in standby (``USAGE``), so
    that it is there after a takeover."""

    def setUp(self) -> None:
        super().setUp()
        (self.lid,) = self.ok(self.primary.addLicenses(licenseFile({"seats": 1})))
        self.ok(self.primary.checkout(hello(self.primary, "m1", user="ann"), {}))
        self.refused(self.primary.checkout(hello(self.primary, "m2", user="bob"), {}), "no-seats")
        self.start = int(self.clock.seconds()) // MINUTE * MINUTE
        self.advance(2 * MINUTE + 5, step=1)

    def test_historyThereAfterATakeover(self):
        rows = self.successResultOf(
            self.failoverStore.usage("1m", self.start, self.start + HOUR, None)
        )
        self.assertEqual(
            rows,
            self.successResultOf(
                self.primaryStore.usage("1m", self.start, self.start + HOUR, None)
            ),
        )
        self.assertEqual(rows[0].denials, 1)
        self.assertEqual(
            [
                d.machine
                for d in self.successResultOf(self.failoverStore.denials(0, self.start + HOUR, 9))
            ],
            ["m2"],
        )
        self.assertEqual(
            self.successResultOf(
                self.failoverStore.topHolders("XMLSpy", self.start, self.start + DAY, "user", 5)
            ),
            self.successResultOf(
                self.primaryStore.topHolders("XMLSpy", self.start, self.start + DAY, "user", 5)
            ),
        )
        synced = self.successResultOf(self.failoverStore.getLocal("usage_synced"))
        self.assertEqual(synced, rows[-1].t + MINUTE)
        self.killPrimary()
        self.advance(TAKEOVER + 0.5)
        self.assertEqual(self.failover.state, "active")
        history = self.successResultOf(
            run(self.failover.usageHistory("1h", self.start, self.start + HOUR))
        )
        self.assertEqual(history[0].peak, 1)

    def test_unpairedRefused(self):
        """USAGE is a paired failover's: any other session is not authorized."""
        failure = self.failureResultOf(
            run(self.primary.peerUsage(session("x"), {"since": "0"})), wire.ProtocolError
        )
        self.assertEqual(failure.value.reason, "not-authorized")

    def test_badRowsRefused(self):
        """A line that is not a usage row does not read: nothing is taken."""
        for line in (
            b"[]",
            b'{"kind":"point"}',
            b'{"kind":"held","day":"x","product":"p","machine":"m","user":"u","seconds":1}',
        ):
            self.assertRaises(ValueError, usage.decode_rows, [line])
