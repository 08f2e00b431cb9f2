"""``/metrics``: the server's state and counters in the Prometheus text format.

Counters (grants, denials by reason, sessions) are counted as requests go;
everything else is read from the current role when Prometheus scrapes, so
it can never drift from what the pool holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web import resource, server

from licenseserver import allocation
from licenseserver._version import EDITION, __version__
from licenseserver.web.facade import ServerView


class Metrics:
    """One server's metrics registry and the counters the licensing port keeps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.grants = Counter(
            "licenseserver_grants",
            "Seats granted, by command (checkout or borrow).",
            ["command"],
            registry=self.registry,
        )
        self.denials = Counter(
            "licenseserver_denials",
            "CHECKOUT and BORROW requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.sessions = Gauge(
            "licenseserver_sessions",
            "Connections open on the licensing port.",
            registry=self.registry,
        )

    def watch(self, view: ServerView) -> None:
        """Report the server's state (whatever role runs) at each scrape."""
        self.registry.register(_RoleCollector(view))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RoleCollector:
    """Reads the pool, the role and the peer link when scraped."""

    def __init__(self, view: ServerView):
        self.view = view

    def collect(self) -> Iterator[Any]:
        view = self.view
        now = view.now()
        info = GaugeMetricFamily(
            "licenseserver_info",
            "This server: name, role, state, version and edition.",
            labels=["name", "role", "state", "version", "edition"],
        )
        info.add_metric([view.serverName, view.roleName, view.state, __version__, EDITION], 1)
        yield info
        active = int(view.state == "active")
        yield GaugeMetricFamily("licenseserver_active", "1 while serving licenses.", value=active)
        revision = view.revision
        yield GaugeMetricFamily("licenseserver_revision", "Pool revision held.", value=revision)
        labels = ["license", "product"]
        seats = GaugeMetricFamily("licenseserver_seats", "Seats of a license.", labels=labels)
        used = GaugeMetricFamily("licenseserver_seats_in_use", "Seats in use.", labels=labels)
        over = GaugeMetricFamily(
            "licenseserver_license_over_allocated",
            "Seats of a license in use beyond its seats (after a merge of a failover's"
            " leases); 0 normally.",
            labels=labels,
        )
        left = GaugeMetricFamily(
            "licenseserver_license_days_to_expiry",
            "Whole days until a license's end date (0 on its last day, negative after);"
            " licenses that never end have no series.",
            labels=labels,
        )
        inUse = view.seatsInUse(now)
        for lic in view.licenses():
            labels = [lic.id, lic.product]
            seats.add_metric(labels, lic.seats)
            used.add_metric(labels, inUse[lic.id])
            over.add_metric(labels, max(0, inUse[lic.id] - lic.seats))
            days = allocation.days_to_expiry(lic, now)
            if days is not None:
                left.add_metric(labels, days)
        yield seats
        yield used
        yield over
        yield left
        limits = view.cutLimits()
        if limits:
            cut = GaugeMetricFamily(
                "licenseserver_license_cut_limit",
                "Seats of an exact license this server serves at most while cut off from its"
                " peer; licenses under no such limit now have no series.",
                labels=["license", "product"],
            )
            for item in limits:
                cut.add_metric([item["license"], item["product"]], item["serving"])
            yield cut
        live = [lease for lease in view.leases() if lease.live(now)]
        leases = GaugeMetricFamily(
            "licenseserver_leases", "Live leases, running or borrowed.", labels=["borrowed"]
        )
        leases.add_metric(["false"], sum(not lease.borrowed for lease in live))
        leases.add_metric(["true"], sum(lease.borrowed for lease in live))
        yield leases
        yield from _peerMetrics(view, now)


def _peerMetrics(view: ServerView, now: int) -> Iterator[Any]:
    peer = view.peerStatus()
    if peer is None:
        return
    if peer.get("lag") is not None:
        yield GaugeMetricFamily(
            "licenseserver_sync_lag_revisions",
            "Revisions the failover is behind the primary.",
            value=peer["lag"],
        )
    if peer.get("last_sync") is not None:
        yield GaugeMetricFamily(
            "licenseserver_last_sync_age_seconds",
            "Seconds since the failover last completed a sync.",
            value=max(0, now - peer["last_sync"]),
        )
    if "takeovers" in peer:
        yield CounterMetricFamily(
            "licenseserver_takeovers",
            "Takeovers by this failover since it started.",
            value=peer["takeovers"],
        )


class MetricsResource(resource.Resource):
    """``GET /metrics`` (no auth, as INTERFACES.md says)."""

    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()
