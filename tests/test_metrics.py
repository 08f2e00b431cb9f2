"""Tests for licenseserver.metrics: /metrics in the Prometheus text format."""

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from twisted.web import server

from licenseserver import tap
from licenseserver.metrics import Metrics
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.testing import FakeStore
from licenseserver.web.facade import ServerView
from tests.helpers import licenseFile, makeRole, run
from tests.test_failover import HEARTBEAT, TAKEOVER
from tests.test_partition import PartitionTestCase


def samples(metrics):
    """Every sample as {(name, labels as sorted tuple): value}."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class MetricsTests(unittest.TestCase):
    def setUp(self):
        self.role = makeRole(FakeStore())
        (self.lid,) = self.successResultOf(run(self.role.addLicenses(licenseFile({"seats": 1}))))
        self.metrics = Metrics()
        self.metrics.watch(ServerView(self.role))
        self.factory = LicensingFactory(self.role, self.metrics)

    def session(self, lines):
        proto = self.factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(lines)
        return proto

    def test_seatsGrantsDenials(self):
        """Seats per license, grants, denials by reason and sessions are exported."""
        self.session(b"HELLO product=XMLSpy version=2025r2 host=a machine=m1\nCHECKOUT\n")
        second = self.session(b"HELLO product=XMLSpy version=2025r2 host=b machine=m2\nCHECKOUT\n")
        got = samples(self.metrics)
        labels = (("license", self.lid), ("product", "XMLSpy"))
        self.assertEqual(got[("licenseserver_seats", labels)], 1)
        self.assertEqual(got[("licenseserver_seats_in_use", labels)], 1)
        self.assertEqual(got[("licenseserver_grants_total", (("command", "checkout"),))], 1)
        self.assertEqual(got[("licenseserver_denials_total", (("reason", "no-seats"),))], 1)
        self.assertEqual(got[("licenseserver_sessions", ())], 2)
        self.assertEqual(got[("licenseserver_leases", (("borrowed", "false"),))], 1)
        second.connectionLost(None)
        self.assertEqual(samples(self.metrics)[("licenseserver_sessions", ())], 1)

    def test_daysToExpiry(self):
        """Each license that ends has a days-to-expiry series; one that never ends has none."""
        (ends,) = self.successResultOf(
            run(self.role.addLicenses(licenseFile({"id": "L-END", "expires": "2026-06-07"})))
        )
        got = samples(self.metrics)
        name = "licenseserver_license_days_to_expiry"
        self.assertEqual(got[(name, (("license", "L-END"), ("product", "XMLSpy")))], 10)
        self.assertNotIn((name, (("license", self.lid), ("product", "XMLSpy"))), got)

    def test_onlyCountersEndInTotal(self):
        """No gauge's name ends in ``_total`` (Prometheus keeps that suffix for counters,
        and ``promtool check metrics`` refuses it elsewhere), peer gauges included; the
        seats of a license are ``licenseserver_seats``."""
        self.session(b"HELLO product=XMLSpy version=2025r2 host=a machine=m1\nCHECKOUT\n")
        now = self.role.now()
        self.patch(
            self.role, "peerStatus", lambda: {"lag": 2, "last_sync": now - 5, "takeovers": 1}
        )
        families = list(self.metrics.registry.collect())
        for family in families:
            self.assertTrue(family.documentation, f"{family.name} has no help text")
            if family.type == "counter":
                continue
            for sample in family.samples:
                self.assertFalse(
                    sample.name.endswith("_total"),
                    f"{sample.name} is a {family.type} whose name ends in _total",
                )
        names = sorted(family.name for family in families)
        self.assertIn("licenseserver_seats", names)
        self.assertIn("licenseserver_sync_lag_revisions", names)

    def test_roleAndState(self):
        """The role and state are exported as labels of licenseserver_info."""
        got = samples(self.metrics)
        info = [key for key in got if key[0] == "licenseserver_info"]
        self.assertEqual(len(info), 1)
        labels = dict(info[0][1])
        self.assertEqual((labels["role"], labels["state"]), ("primary", "active"))
        self.assertEqual(got[("licenseserver_active", ())], 1)


class CutLimitMetricsTests(PartitionTestCase):
    """``licenseserver_license_cut_limit`` on a pair with one exact license (5 seats, 2 held
    for the failover): a series on each server while the link is cut, none otherwise."""

    NAME = "licenseserver_license_cut_limit"

    def setUp(self):
        super().setUp()
        self.primaryMetrics = Metrics()
        self.primaryMetrics.watch(ServerView(self.primary))
        self.failoverMetrics = Metrics()
        self.failoverMetrics.watch(ServerView(self.failover))
        self.labels = (("license", self.lid), ("product", "XMLSpy"))

    def limits(self, metrics):
        return {key: value for key, value in samples(metrics).items() if key[0] == self.NAME}

    def test_cutLimit(self):
        self.assertEqual(self.limits(self.primaryMetrics), {})
        self.assertEqual(self.limits(self.failoverMetrics), {})
        self.cutFor(TAKEOVER + 0.5)
        self.assertEqual(self.limits(self.primaryMetrics), {(self.NAME, self.labels): 3})
        self.assertEqual(self.limits(self.failoverMetrics), {(self.NAME, self.labels): 2})
        over = ("licenseserver_license_over_allocated", self.labels)
        self.assertEqual(samples(self.primaryMetrics)[over], 0)
        self.heal()
        self.advance(HEARTBEAT * 3)
        self.assertEqual(self.limits(self.primaryMetrics), {})
        self.assertEqual(self.limits(self.failoverMetrics), {})

    def test_helpText(self):
        """The gauge has help text and no _total suffix, like every gauge."""
        self.cutFor(TAKEOVER / 2 + 0.5)
        (family,) = [f for f in self.primaryMetrics.registry.collect() if f.name == self.NAME]
        self.assertEqual(family.type, "gauge")
        self.assertIn("cut off", family.documentation)


class MetricsRouteTests(unittest.TestCase):
    """``GET /metrics`` on the web site of a server that ``tap.makeService`` builds."""

    def setUp(self):
        options = tap.Options()
        data = Path(self.mktemp())
        options.parseOptions(["--data", str(data), "--port", "tcp:0", "--web", "tcp:0"])
        top = tap.makeService(options, MemoryReactorClock())
        self.addCleanup(os.close, top.dataLock)
        (self.site,) = [
            s.factory
            for s in IService(top)
            if isinstance(getattr(s, "factory", None), server.Site)
        ]

    def get(self, path):
        """One request without credentials: (status line, headers as a dict, body)."""
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8088),
            peerAddress=IPv4Address("TCP", "10.0.0.1", 40000),
        )
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.assertTrue(transport.disconnecting, "the answer is not complete")
        channel.connectionLost(None)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body.decode("utf-8")

    def test_metricsWithoutCredentials(self):
        """/metrics answers without credentials in the Prometheus text format."""
        status, headers, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(
            headers["content-type"].startswith("text/plain; version="), headers["content-type"]
        )
        names = {family.name for family in text_string_to_metric_families(body)}
        self.assertIn("licenseserver_info", names)
        self.assertIn("licenseserver_sessions", names)
