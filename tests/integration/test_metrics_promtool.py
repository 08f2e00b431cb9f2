"""``promtool check metrics`` on the ``/metrics`` page of real server processes.

A primary with a license, a lease, a refused request and an open session, and a failover
paired and synced with it, run as ``twistd licenseserver`` processes on 127.0.0.1, so that
every series the page can hold is there with its labels. Each server's page is fetched over
HTTP and piped into ``promtool check metrics`` (from Debian's ``prometheus`` package, which
``make test`` installs through ``tools/system-packages``): its lint rules are the ones a
Prometheus operator's tooling applies. Without promtool the test fails and says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.integration.harness import (
    HarnessError,
    ServerProcess,
    http_request,
    issue_license,
    make_vendor_key,
    start_server,
    upload_license,
    wait_for,
)
from tests.integration.plainclient import PlainClient

PRODUCT = "XMLSpy"
VERSION = "2025r2"
SYNC_TIMEOUT = 15.0
PROMTOOL_TIMEOUT = 30.0
CLIENT_TIMEOUT = 5.0


def promtool() -> str:
    """The path of promtool; fails, saying how to install it, when it is not on PATH."""
    path = shutil.which("promtool")
    if path is None:
        raise unittest.FailTest(
            "promtool is missing: run `make test`, which installs it (Debian's prometheus "
            "package, through tools/system-packages), or apt-get install prometheus"
        )
    return path


class PromtoolTests(unittest.TestCase):
    """A primary and its failover whose ``/metrics`` pages promtool must accept."""

    def setUp(self) -> None:
        self.promtool = promtool()
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.primaryData = self.base / "primary"
        self.failoverData = self.base / "failover"
        self.vendorKey = make_vendor_key(self.base / "vendor", self.primaryData)
        keys = self.failoverData / "vendor-keys"
        keys.mkdir(parents=True)
        shutil.copy(self.vendorKey.with_suffix(".pub"), keys)

    def status(self, server: ServerProcess) -> dict[str, Any]:
        result = http_request(server, "GET", "/api/status", auth=False)
        if result.status != 200:
            raise HarnessError(f"GET /api/status: expected 200, got {result!r}")
        return result.json()

    def client(self, server: ServerProcess, machine: str) -> PlainClient:
        """A connection that has said HELLO for ``machine``, closed at cleanup."""
        client = PlainClient("127.0.0.1", server.licensing_port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        hello = client.request(
            "HELLO", product=PRODUCT, version=VERSION, host=f"ws-{machine}", machine=machine
        )
        self.assertTrue(hello.ok, hello.line)
        return client

    def metrics(self, server: ServerProcess) -> str:
        """The server's ``/metrics`` page, fetched without credentials."""
        result = http_request(server, "GET", "/metrics", auth=False)
        self.assertEqual(result.status, 200, result)
        return result.body.decode("utf-8")

    def assertPromtoolAccepts(self, server: ServerProcess, page: str) -> None:
        """``promtool check metrics`` reads ``page`` from stdin and finds no problem."""
        result = subprocess.run(
            [self.promtool, "check", "metrics"],
            input=page,
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT,
        )
        self.assertEqual(
            (result.returncode, result.stdout.strip(), result.stderr.strip()),
            (0, "", ""),
            f"promtool check metrics refused {server.name}'s /metrics:\n"
            f"{result.stdout}{result.stderr}\n--- the page:\n{page}",
        )

    def test_promtoolAcceptsPrimaryAndFailover(self) -> None:
        """promtool accepts /metrics of a primary holding a license, a lease and a refusal,
        and of its paired failover, with every labelled series and the peer's there."""
        primary = start_server(self, self.primaryData, "--name", "ls-primary")
        primaryPort = primary.keep_licensing_port()
        path = issue_license(self.vendorKey, self.base / "one-seat.json", PRODUCT, "concurrent", 1)
        (licenseId,) = upload_license(primary, path)
        holder = self.client(primary, "m1")
        lease = holder.request("CHECKOUT")
        self.assertTrue(lease.ok, lease.line)
        refused = self.client(primary, "m2").request("CHECKOUT")
        self.assertEqual((refused.ok, refused.reason), (False, "no-seats"), refused.line)

        failover = start_server(
            self,
            self.failoverData,
            "--role",
            "failover",
            "--primary",
            f"127.0.0.1:{primaryPort}",
            "--peer-secret-file",
            str(self.primaryData / "peer-secret"),
            "--heartbeat",
            "0.2",
            "--name",
            "ls-failover",
        )

        def synced() -> bool:
            ours = self.status(primary)
            theirs = self.status(failover)
            peer = theirs.get("peer") or {}
            return (
                theirs.get("state") == "standby"
                and peer.get("link") == "paired"
                and peer.get("last_sync") is not None
                and theirs.get("revision") == ours.get("revision")
                and (ours.get("peer") or {}).get("in_sync") is True
            )

        wait_for(
            synced,
            SYNC_TIMEOUT,
            "the failover to be paired and synced",
            lambda: primary.log_tail(20) + "\n" + failover.log_tail(20),
        )

        series = f'{{license="{licenseId}",product="{PRODUCT}"}}'
        expected = {
            primary: [
                f"licenseserver_seats{series} 1.0",
                f"licenseserver_seats_in_use{series} 1.0",
                'licenseserver_leases{borrowed="false"} 1.0',
                'licenseserver_grants_total{command="checkout"} 1.0',
                'licenseserver_denials_total{reason="no-seats"} 1.0',
                "licenseserver_sessions ",
                "licenseserver_sync_lag_revisions ",
                "licenseserver_last_sync_age_seconds ",
            ],
            failover: [
                f"licenseserver_seats{series} 1.0",
                f"licenseserver_seats_in_use{series} 1.0",
                'licenseserver_info{edition="standard",name="ls-failover",role="failover",'
                'state="standby"',
                "licenseserver_active 0.0",
                "licenseserver_takeovers_total 0.0",
            ],
        }
        for server, lines in expected.items():
            page = self.metrics(server)
            for line in lines:
                self.assertIn(f"\n{line}", page, f"{server.name}'s /metrics")
            self.assertPromtoolAccepts(server, page)
