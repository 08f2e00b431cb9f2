"""Tests for licenseserver.metrics: /metrics in the Prometheus text format."""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from licenseserver.metrics import Metrics
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.testing import FakeStore
from tests.helpers import licenseFile, makeRole, run


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
        self.metrics.watch(self.role)
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
        self.assertEqual(got[("licenseserver_seats_total", labels)], 1)
        self.assertEqual(got[("licenseserver_seats_in_use", labels)], 1)
        self.assertEqual(got[("licenseserver_grants_total", (("command", "checkout"),))], 1)
        self.assertEqual(got[("licenseserver_denials_total", (("reason", "no-seats"),))], 1)
        self.assertEqual(got[("licenseserver_sessions", ())], 2)
        self.assertEqual(got[("licenseserver_leases", (("borrowed", "false"),))], 1)
        second.connectionLost(None)
        self.assertEqual(samples(self.metrics)[("licenseserver_sessions", ())], 1)

    def test_roleAndState(self):
        """The role and state are exported as labels of licenseserver_info."""
        got = samples(self.metrics)
        info = [key for key in got if key[0] == "licenseserver_info"]
        self.assertEqual(len(info), 1)
        labels = dict(info[0][1])
        self.assertEqual((labels["role"], labels["state"]), ("primary", "active"))
        self.assertEqual(got[("licenseserver_active", ())], 1)
