"""The soak test of bench/soak.py: a short real run, and its checks catching a wrong store.

The short run starts the real server and kills it once; it takes some seconds. The checks
are tried on small databases made with the server's schema and changed by hand, so that a
soak that says OK is known to be able to say otherwise.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial import unittest

from licenseserver import model, store

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import soak_check  # noqa: E402
from soak_client import Grant, Op, parse_answer  # noqa: E402

SOAK_TIMEOUT = 240.0
"""Longest the short run may take, set-up and final checks included, on a busy machine."""


class ShortSoakTests(unittest.TestCase):
    def test_shortRunWithOneKill(self):
        """A 10 s soak of 4 clients with one SIGKILL ends with an OK verdict and status 0."""
        # Absolute: the soak runs in the repository root, not in trial's directory.
        workdir = Path(self.mktemp()).resolve()
        command = [
            sys.executable, str(BENCH / "soak.py"), "--seconds", "10", "--kills", "1",
            "--clients", "4", "--pace", "0.02", "--workdir", str(workdir),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=SOAK_TIMEOUT)
        except subprocess.TimeoutExpired:
            # The soak and the server it started form their own process group.
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            self.fail(f"the soak took longer than {SOAK_TIMEOUT} s:\n{output}")
        lines = output.strip().splitlines()
        self.assertEqual(process.returncode, 0, output)
        self.assertTrue(lines[-1].startswith("soak: OK kills=1 grants="), output)
        self.assertIn("soak: kill 1/1 at", output)
        self.assertNotIn("VIOLATION", output)


def _database(testcase: unittest.TestCase, seats: int = 1) -> Path:
    """A database with the server's schema and one concurrent license of ``seats``."""
    path = Path(testcase.mktemp())
    path.mkdir()
    path = path / store.DATABASE_NAME
    conn = store.open_database(path)
    conn.execute(
        "INSERT INTO licenses VALUES ('L-1', 'Alpha', 'Soak', 'concurrent', ?, 0, 'x',"
        " '2026-01-01', NULL, NULL, NULL, 'k', 's', 1, 0, NULL, NULL)",
        (seats,),
    )
    conn.close()
    return path


def _addLease(path: Path, lease: str, machine: str, request: str = "") -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO leases VALUES (?, 'c-1', ?, 'u', 'Alpha', '2025r2', 'L-1',"
            " 'concurrent', 0, ?, 600, 0, ?, 0)",
            (lease, machine, int(time.time()) + 600, request),
        )
    conn.close()


def _grant(lease: str, machine: str, request: str = "r1") -> Grant:
    return Grant(lease, "L-1", machine, "u", "Alpha", request, False)


class SoakCheckTests(unittest.TestCase):
    def test_exactStorePasses(self):
        """A store holding exactly the held leases, within its seats, passes every check."""
        path = _database(self, seats=2)
        _addLease(path, "l-a", "m1")
        _addLease(path, "l-b", "m2")
        state = soak_check.read_store(path)
        held = {"l-a": _grant("l-a", "m1"), "l-b": _grant("l-b", "m2")}
        self.assertEqual(soak_check.integrity(state), [])
        self.assertEqual(soak_check.over_allocation(state), [])
        self.assertEqual(soak_check.compare_final(state, held, {"l-old"}), [])

    def test_changeLogAfterCheckpoint(self):
        """Leases the change log holds past the last checkpoint count as stored; a lease
        the log deleted does not; lines up to the checkpoint are already in the table."""
        path = _database(self, seats=2)
        _addLease(path, "l-a", "m1")
        expires = int(time.time()) + 600
        spec = store.TABLES["lease"]

        def row(lid: str, machine: str) -> tuple:
            lease = model.Lease(
                lid,
                "c-2",
                machine,
                "u",
                "Alpha",
                "2025r2",
                ("L-1",),
                "concurrent",
                0,
                expires,
                600,
            )
            return spec.to_row(lease)

        conn = sqlite3.connect(path)
        with conn:
            stale = store.log_line(1, "lease", ("l-old",), row("l-old", "m3"))
            conn.execute("INSERT INTO change_log VALUES (1, ?)", (stale,))
            conn.execute("UPDATE meta SET value = '1' WHERE name = 'checkpoint'")
            lines = [
                store.log_line(2, "lease", ("l-b",), row("l-b", "m2")),
                store.log_line(3, "lease", ("l-a",), None),
                store.log_line(3, "lease", ("l-c",), row("l-c", "m4")),
                store.log_line(4, "lease", ("l-c",), None),
            ]
            conn.execute("INSERT INTO change_log VALUES (4, ?)", ("\n".join(lines),))
        conn.close()
        state = soak_check.read_store(path)
        self.assertEqual(sorted(state.leases), ["l-b"])
        self.assertEqual(state.leases["l-b"].machine, "m2")

    def test_overAllocation(self):
        """Two holders of a one-seat license are reported; one holder with two leases is not."""
        path = _database(self, seats=1)
        _addLease(path, "l-a", "m1")
        _addLease(path, "l-a2", "m1")
        self.assertEqual(soak_check.over_allocation(soak_check.read_store(path)), [])
        _addLease(path, "l-b", "m2")
        [problem] = soak_check.over_allocation(soak_check.read_store(path))
        self.assertIn("L-1 has 1 seats but 2 holders", problem)

    def test_lostAndInventedLeases(self):
        """A held lease missing from the store and a stored lease nobody holds are both named."""
        path = _database(self, seats=5)
        _addLease(path, "l-stray", "m2", request="r9")
        state = soak_check.read_store(path)
        problems = soak_check.compare_final(state, {"l-a": _grant("l-a", "m1")}, set())
        self.assertEqual(len(problems), 2)
        self.assertIn("lost lease: l-a", problems[0])
        self.assertIn("invented lease: the store holds l-stray", problems[1])
        self.assertIn("request=r9", problems[1])

    def test_atKillInFlight(self):
        """After a kill, leases of in-flight requests may differ; an acknowledged one may not."""
        path = _database(self, seats=5)
        _addLease(path, "l-new", "m3", request="r7")
        _addLease(path, "l-released", "m4")
        state = soak_check.read_store(path)
        held = {"l-a": _grant("l-a", "m1"), "l-b": _grant("l-b", "m2")}
        unresolved = [
            ("m2", Op("RELEASE", lease="l-b")),
            ("m3", Op("CHECKOUT", product="Alpha", request="r7")),
        ]
        problems, in_flight = soak_check.compare_at_kill(
            state, held, {"l-released"}, unresolved, "kill 1"
        )
        self.assertEqual(in_flight, {"l-new"})
        self.assertEqual(sorted(problems), ["l-a", "l-released"])
        self.assertIn("lease l-a of m1 (request=r1) was acknowledged", problems["l-a"])
        self.assertIn("acknowledged as released", problems["l-released"])

    def test_auditReplayOverSeats(self):
        """Replaying grants and releases in order finds a moment over the seats."""
        path = _database(self, seats=1)
        state = soak_check.read_store(path)

        def grant(seq, lease, machine):
            data = {"lease": lease, "machine": machine, "user": "u", "product": "Alpha"}
            return (seq, "grant", {**data, "licenses": ["L-1"]})

        state.audit = [grant(1, "l-a", "m1"), (2, "release", {"lease": "l-a"})]
        state.audit += [grant(3, "l-b", "m2"), grant(4, "l-c", "m3")]
        _addLease(path, "l-b", "m2")
        _addLease(path, "l-c", "m3")
        state.leases = soak_check.read_store(path).leases
        problems, peak = soak_check.audit_replay(state)
        self.assertEqual(peak, {"L-1": 2})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn(
            "entry 4 grants l-c on L-1, which then has 2 holders for 1 seats", problems[0]
        )

    def test_parseAnswer(self):
        """Answers parse into their code, reason and arguments, quoted ones included."""
        answer = parse_answer('ERR 409 no-seats message="all 5 seats \\"in\\" use"')
        self.assertEqual((answer.ok, answer.code, answer.reason), (False, 409, "no-seats"))
        self.assertEqual(answer.args["message"], 'all 5 seats "in" use')
        self.assertEqual(parse_answer("OK lease=l-x=y ttl=600").args["lease"], "l-x=y")
