"""The benchmark scripts under bench/ still run: each briefly, to its result line.

The benchmarks are not part of the measured suite; these tests only keep them from
rotting. Each runs one script with ``--quick`` (small, about a second of load) in its
own process group, and checks that it ended well and printed ``RESULT <scenario> {json}``
with the numbers its scenario must report. Nothing is asserted about the numbers
themselves: this machine may be busy with other work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

BENCH = Path(__file__).resolve().parents[1] / "bench"
TIMEOUT = 180.0


class BenchSmokeTests(unittest.TestCase):
    """Each benchmark script runs with ``--quick`` and prints its result line."""

    def runBench(self, scenario: str, *extra: str) -> dict[str, Any]:
        """Run ``bench/<scenario>.py --quick``; return the JSON of its result line."""
        workdir = Path(self.mktemp()).resolve()
        command = [
            sys.executable,
            str(BENCH / f"{scenario}.py"),
            "--quick",
            "--workdir",
            str(workdir),
            *extra,
        ]
        process = subprocess.Popen(
            command,
            cwd=BENCH.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.addCleanup(_endGroup, process)
        try:
            out, _ = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            _endGroup(process)
            out, _ = process.communicate()
            self.fail(f"{scenario}.py ran longer than {TIMEOUT} s:\n{out.decode()[-3000:]}")
        text = out.decode("utf-8", "replace")
        self.assertEqual(process.returncode, 0, f"{scenario}.py failed:\n{text[-3000:]}")
        prefix = f"RESULT {scenario} "
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        self.assertEqual(len(lines), 1, f"no result line from {scenario}.py:\n{text[-3000:]}")
        self.assertTrue(text.rstrip().endswith(lines[0]), "the result line comes last")
        return json.loads(lines[0][len(prefix) :])

    def assertMachine(self, result: dict[str, Any]) -> None:
        machine = result["machine"]
        for key in ("cpu", "cores", "ram_gib", "python", "twisted"):
            self.assertIn(key, machine)

    def test_checkoutCost(self) -> None:
        """checkout_cost.py loads the server, the baseline and (with --floor) the floor
        server with and without its writer thread, with and without pipelining, and
        reports CPU per pair, pairs per second and the ratio to the baseline for each."""
        result = self.runBench("checkout_cost", "--connections", "10", "--floor")
        self.assertMachine(result)
        for depth in ("1", "16"):
            entry = result["depths"][depth]
            for name in ("baseline", "server", "floor", "floor-inline"):
                self.assertEqual(entry[name]["errors"], 0)
                self.assertGreater(entry[name]["pairs_per_s"]["median"], 0)
                self.assertGreater(entry[name]["cpu_per_pair_us"]["median"], 0)
            for name in ("server", "floor", "floor-inline"):
                self.assertGreater(entry[name]["ratio"]["median"], 0)
            self.assertEqual(entry["ratio"], entry["server"]["ratio"])
            self.assertIn("met", entry)

    def test_idleClients(self) -> None:
        """idle_clients.py connects clients that hold a lease and heartbeat, and reports
        the server's memory per connection and its CPU use."""
        result = self.runBench("idle_clients", "--clients", "100")
        self.assertMachine(result)
        self.assertEqual(result["clients"], 100)
        self.assertEqual(result["heartbeat_errors"], 0)
        self.assertGreater(result["memory_per_connection_kb"], 0)
        self.assertGreaterEqual(result["cpu_pct"], 0)
        self.assertIn("memory_met", result)
        self.assertIn("cpu_met", result)

    def test_takeover(self) -> None:
        """takeover.py kills the primary, times the failover's first CHECKOUT and
        HEARTBEAT, and times the handback after the primary returns."""
        result = self.runBench("takeover")
        self.assertMachine(result)
        self.assertEqual(result["kills"], 1)
        for key in ("checkout_s", "heartbeat_s", "handback_s"):
            self.assertGreater(result["stats"][key]["median"], 0)
        earliest = result["takeover_after"] - result["heartbeat"]
        self.assertGreater(result["stats"]["checkout_s"]["median"], earliest)
        self.assertIn("met", result)

    def test_syncCost(self) -> None:
        """sync_cost.py times a failover's full sync and incremental syncs and counts
        their bytes."""
        result = self.runBench("sync_cost")
        self.assertMachine(result)
        self.assertGreater(result["full"]["bytes"], 0)
        self.assertGreater(result["full"]["seconds"], 0)
        self.assertGreaterEqual(len(result["incremental"]), 1)
        first = result["incremental"][0]
        self.assertEqual(first["mode"], "changes")
        self.assertEqual(first["lines"], first["changes"])
        self.assertLess(first["bytes"], result["full"]["bytes"])

    def test_requestPath(self) -> None:
        """request_path.py measures both halves of a checkout's cost, and SQLite's share."""
        result = self.runBench("request_path")
        self.assertMachine(result)
        for depth in ("1", "16"):
            entry = result["depths"][depth]
            self.assertGreater(entry["decide_pairs"], 0)
            self.assertGreater(entry["decide_us_per_pair"], 0)
            self.assertGreater(entry["durable_pairs"], 0)
            self.assertGreater(entry["durable_us_per_pair"], 0)
            self.assertGreaterEqual(entry["commits_per_transaction"], 1)
            self.assertGreater(entry["sqlite_pairs"], 0)
            self.assertGreater(entry["sqlite_us_per_pair"], 0)


def _endGroup(process: subprocess.Popen) -> None:
    """SIGKILL what is left of the benchmark's process group: it and the servers it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
