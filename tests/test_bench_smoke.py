"""The benchmark scripts under bench/ still run, and their result lines hold what they say.

The benchmarks are not part of the measured suite; these tests only keep them from
rotting. Each runs one script with ``--quick`` (small, about a second of load) in its
own process group, and checks that it ended well and printed ``RESULT <scenario> {json}``
with exactly the fields its docstring lists under "The result line", each of the type and
shape listed there (the machine's fields as ``common.machine`` lists them), and that the
numbers it must report are there. Nothing is asserted about how large the numbers are:
this machine may be busy with other work.

Each script's fields are written out below as a schema; a fast test checks that every
docstring lists exactly the schema's field names with the schema's types, so that the
documentation, this schema and the scripts' output cannot drift apart.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.trial import unittest

BENCH = Path(__file__).resolve().parents[1] / "bench"
TIMEOUT = 180.0


# -- the schema of a result line


@dataclass(frozen=True)
class Leaf:
    """A value that is not an object or a list; ``word`` is its type as the docs write it."""

    word: str
    check: Callable[[Any], bool]


@dataclass(frozen=True)
class ListOf:
    """A list of at least ``minimum`` items, each matching ``item``."""

    item: Any
    minimum: int = 1
    length: int | None = None


class Key(str):
    """A key of an object that is data (a depth, a process's name), not a field name.

    The docs name such keys in quotes, and list the fields of their values.
    """


def _isNumber(value: Any) -> bool:
    return type(value) in (int, float)


def _isSpread(value: Any) -> bool:
    """``common.spread`` of at least one value: ``{"n", "median", "min", "max"}``."""
    return (
        isinstance(value, dict)
        and set(value) == {"n", "median", "min", "max"}
        and type(value["n"]) is int
        and value["n"] >= 1
        and all(_isNumber(value[key]) for key in ("median", "min", "max"))
        and value["min"] <= value["median"] <= value["max"]
    )


INT = Leaf("int", lambda value: type(value) is int)
NUMBER = Leaf("number", _isNumber)
BOOL = Leaf("bool", lambda value: type(value) is bool)
STR = Leaf("str", lambda value: type(value) is str)
SPREAD = Leaf("spread", _isSpread)


def orNull(leaf: Leaf) -> Leaf:
    return Leaf(f"{leaf.word} or null", lambda value: value is None or leaf.check(value))


def mismatches(value: Any, schema: Any, path: str = "result") -> list[str]:
    """Where ``value`` differs from ``schema``: a field missing, not listed, or of another
    type or shape; empty when it matches."""
    if isinstance(schema, Leaf):
        return [] if schema.check(value) else [f"{path} is not {schema.word}: {value!r}"]
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{path} is not a list: {value!r}"]
        if len(value) < schema.minimum or schema.length not in (None, len(value)):
            return [f"{path} has {len(value)} items"]
        out = []
        for i, item in enumerate(value):
            out += mismatches(item, schema.item, f"{path}[{i}]")
        return out
    if not isinstance(value, dict):
        return [f"{path} is not an object: {value!r}"]
    out = [f"{path}.{key} is missing" for key in schema if key not in value]
    out += [f"{path}.{key} is not documented" for key in value if key not in schema]
    for key, inner in schema.items():
        if key in value:
            out += mismatches(value[key], inner, f"{path}.{key}")
    return out


def typeWord(schema: Any) -> str:
    if isinstance(schema, Leaf):
        return schema.word
    return "list" if isinstance(schema, ListOf) else "object"


def fieldTypes(schema: Any) -> set[tuple[str, str]]:
    """Every (field name, type word) in ``schema``, not counting the machine's fields."""
    out: set[tuple[str, str]] = set()
    if isinstance(schema, ListOf):
        return fieldTypes(schema.item)
    if not isinstance(schema, dict) or schema is MACHINE:
        return out
    for key, inner in schema.items():
        if not isinstance(key, Key):
            out.add((key, typeWord(inner)))
        out |= fieldTypes(inner)
    return out


FIELD = re.compile(r"``([a-z][a-z0-9_]*)``")
BULLET = re.compile(r"^(\s*)- (.*)$")


def bullets(text: str) -> list[str]:
    """The text of every bullet in ``text``, its wrapped lines joined to its first."""
    out: list[str] = []
    indent = None
    for line in text.splitlines():
        bullet = BULLET.match(line)
        if bullet:
            indent = len(bullet.group(1))
            out.append(bullet.group(2).strip())
        elif indent is not None and line.strip() and len(line) - len(line.lstrip()) > indent:
            out[-1] += " " + line.strip()
        else:
            indent = None
    return out


def documentedTypes(text: str) -> set[tuple[str, str]]:
    """Every (field name, type word) of the bullets in ``text``.

    A bullet that lists fields starts ``- ``name``, ``other`` (type...): ...``; the type
    word is what comes before the first comma or semicolon in the parentheses ("list of
    objects" is a list, "object" an object). Names in quotes (``"1"``) are keys, not fields.
    """
    out: set[tuple[str, str]] = set()
    for bullet in bullets(text):
        head, paren, rest = bullet.partition(" (")
        names = FIELD.findall(head)
        if not names:
            continue
        if not paren:
            raise AssertionError(f"a documented field without its type: {bullet!r}")
        word = re.split(r"[,;)]", rest, maxsplit=1)[0].strip()
        word = "list" if word.startswith("list") else word
        out |= {(name, word) for name in names}
    return out


def resultDocs(scenario: str) -> str:
    """The part of ``bench/<scenario>.py``'s docstring that lists its result line."""
    tree = ast.parse((BENCH / f"{scenario}.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    marker = "The result line"
    if marker not in doc:
        raise AssertionError(f"bench/{scenario}.py's docstring has no {marker!r} part")
    return doc[doc.index(marker) :]


def machineDocs() -> str:
    """The docstring of ``common.machine``, which lists the machine's fields."""
    tree = ast.parse((BENCH / "common.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "machine":
            return ast.get_docstring(node) or ""
    raise AssertionError("bench/common.py has no machine()")


LOADAVG = ListOf(NUMBER, length=3)
MACHINE = {
    "cpu": STR,
    "cores": INT,
    "ram_gib": NUMBER,
    "kernel": STR,
    "python": STR,
    "twisted": STR,
    "sqlite": STR,
    "loadavg_start": LOADAVG,
    "loadavg_end": LOADAVG,
}

_PHASES = {
    "cpu_per_pair_us": SPREAD,
    "reactor_thread_us_per_pair": SPREAD,
    "other_threads_us_per_pair": SPREAD,
    "pairs_per_s": SPREAD,
    "server_cpu_pct": SPREAD,
    "load_cpu_pct": SPREAD,
    "errors": INT,
}
_CHECKOUT_DEPTH = {
    Key("baseline"): _PHASES,
    **{Key(name): {**_PHASES, "ratio": SPREAD} for name in ("server", "floor", "floor-inline")},
    "ratio": SPREAD,
    "target_ratio": NUMBER,
    "met": BOOL,
}
CHECKOUT_COST = {
    "machine": MACHINE,
    "connections": INT,
    "depths": {Key("1"): _CHECKOUT_DEPTH, Key("16"): _CHECKOUT_DEPTH},
}
"""With ``--floor``, as the test runs it."""

_WINDOW = {
    "seconds": NUMBER,
    "cpu_pct": NUMBER,
    "cpu_pct_reactor_thread": NUMBER,
    "cpu_pct_other_threads": NUMBER,
    "heartbeats": INT,
    "cpu_us_per_heartbeat": orNull(NUMBER),
    "rss_kb": INT,
}
IDLE_CLIENTS = {
    "machine": MACHINE,
    "server": STR,
    "clients": INT,
    "heartbeat_interval": NUMBER,
    "ramp_seconds": NUMBER,
    "ramp_server_cpu_seconds": NUMBER,
    "rss_before_kb": INT,
    "rss_after_ramp_kb": INT,
    "rss_after_kb": INT,
    "hwm_kb": orNull(INT),
    "memory_per_connection_kb": NUMBER,
    "idle_cpu_pct_without_clients": NUMBER,
    "window_seconds": NUMBER,
    "windows": ListOf(_WINDOW),
    "cpu_pct": NUMBER,
    "cpu_pct_spread": SPREAD,
    "cpu_pct_reactor_thread": NUMBER,
    "cpu_pct_other_threads": NUMBER,
    "heartbeats": INT,
    "heartbeats_per_s": NUMBER,
    "heartbeat_errors": INT,
    "errors": ListOf(STR, minimum=0),
    "cpu_us_per_heartbeat": NUMBER,
    "heartbeat_latency_ms": {"p50": orNull(NUMBER), "p99": orNull(NUMBER), "max": orNull(NUMBER)},
    "load_cpu_pct": NUMBER,
    "memory_met": BOOL,
    "cpu_met": BOOL,
}

_TAKEOVER_TIMES = ("checkout_s", "heartbeat_s", "restart_to_listen_s", "handback_s", "resynced_s")
TAKEOVER = {
    "machine": MACHINE,
    "heartbeat": NUMBER,
    "takeover_after": NUMBER,
    "kills": INT,
    "rounds": ListOf({name: NUMBER for name in _TAKEOVER_TIMES}),
    "stats": {name: SPREAD for name in _TAKEOVER_TIMES},
    "limit_s": NUMBER,
    "worst_s": NUMBER,
    "met": BOOL,
}

_FULL_SYNC = {
    "revision": INT,
    "seconds": NUMBER,
    "start_to_request_s": NUMBER,
    "first_byte_s": NUMBER,
    "request_to_answer_s": NUMBER,
    "answer_to_synced_s": NUMBER,
    "bytes": INT,
    "lines": INT,
    "link_bytes_total": INT,
    "primary_cpu_s": NUMBER,
    "failover_cpu_s": NUMBER,
    "primary_rss_kb": INT,
    "failover_rss_kb": INT,
}
_FULL_STATS = (
    "seconds",
    "start_to_request_s",
    "request_to_answer_s",
    "answer_to_synced_s",
    "bytes",
    "primary_cpu_s",
    "failover_cpu_s",
    "failover_rss_kb",
)
_INCREMENTAL = {
    "kind": STR,
    "changes": INT,
    "syncs": INT,
    "lines": INT,
    "mode": STR,
    "bytes": INT,
    "request_bytes": INT,
    "seconds": NUMBER,
    "request_to_answer_s": NUMBER,
    "answer_to_durable_s": NUMBER,
    "changes_made_s": NUMBER,
    "changes_to_durable_s": NUMBER,
}
_INCREMENTAL_STATS = {
    name: SPREAD
    for name in (
        "bytes",
        "seconds",
        "request_to_answer_s",
        "answer_to_durable_s",
        "changes_to_durable_s",
    )
}
SYNC_COST = {
    "machine": MACHINE,
    "clients": INT,
    "licenses": INT,
    "full_syncs": ListOf(_FULL_SYNC),
    "full": {**_FULL_SYNC, "stats": {name: SPREAD for name in _FULL_STATS}},
    "incremental": ListOf(_INCREMENTAL),
    "incremental_stats": _INCREMENTAL_STATS,
    "incremental_by_kind": {
        Key("CHECKOUT"): _INCREMENTAL_STATS,
        Key("RELEASE"): _INCREMENTAL_STATS,
    },
    "byte_share": NUMBER,
    "bytes_met": BOOL,
    "time_met": BOOL,
    "split_syncs": INT,
}
"""With two incremental rounds or more, as the test runs it: one of each kind."""

_REQUEST_DEPTH = {
    "batch": INT,
    "decide_us_per_pair": NUMBER,
    "decide_pairs": INT,
    "durable_us_per_pair": NUMBER,
    "durable_pairs": INT,
    "commits_per_transaction": NUMBER,
    "sqlite_us_per_pair": NUMBER,
    "sqlite_pairs": INT,
}
REQUEST_PATH = {
    "machine": MACHINE,
    "connections": INT,
    "depths": {Key("1"): _REQUEST_DEPTH, Key("16"): _REQUEST_DEPTH},
}

_LATENCY = {"median": NUMBER, "p99": NUMBER, "max": NUMBER, "min": NUMBER}
_ACKED_PHASE = {
    "held": INT,
    "pairs": INT,
    "seconds": NUMBER,
    "checkout_ms": _LATENCY,
    "primary_cpu_us_per_pair": NUMBER,
    "primary_net_cpu_us_per_pair": NUMBER,
    "failover_cpu_us_per_pair": orNull(NUMBER),
    "failover_net_cpu_us_per_pair": orNull(NUMBER),
    "errors": INT,
}
ACKED_GRANTS = {
    "machine": MACHINE,
    "seats": INT,
    "share": INT,
    "heartbeat": NUMBER,
    "takeover_after": NUMBER,
    "idle": {
        "alone_primary_cpu_pct": NUMBER,
        "primary_cpu_pct": NUMBER,
        "failover_cpu_pct": NUMBER,
    },
    "phases": {Key(name): _ACKED_PHASE for name in ("alone", "first", "last")},
    "contention": {
        "contenders": INT,
        "held": INT,
        "seconds": NUMBER,
        "grants": INT,
        "grants_per_s": NUMBER,
        "bound_per_s": NUMBER,
        "refusals": INT,
        "acks": INT,
        "grants_per_ack": SPREAD,
        "checkout_ms": _LATENCY,
        "primary_cpu_pct": NUMBER,
        "failover_cpu_pct": NUMBER,
        "errors": INT,
    },
    "error_lines": ListOf(STR, minimum=0),
}

_LATENCY_RATE = {
    "rate": NUMBER,
    "achieved_rate": NUMBER,
    "checkouts": INT,
    "checkout_ms": {"median": NUMBER, "p99": NUMBER, "p999": NUMBER, "max": NUMBER},
    "server_cpu_pct": NUMBER,
    "failover_cpu_pct": orNull(NUMBER),
    "load_cpu_pct": NUMBER,
    "errors": INT,
    "unanswered": INT,
    "connections_lost": INT,
}
LATENCY = {
    "machine": MACHINE,
    "connections": INT,
    "seats": INT,
    "setups": {
        Key(name): {Key(rate): _LATENCY_RATE for rate in ("100", "400")}
        for name in ("alone", "paired", "acked")
    },
    "error_lines": ListOf(STR, minimum=0),
}
"""With ``--quick``'s rates, as the test runs it."""

SCHEMAS = {
    "checkout_cost": CHECKOUT_COST,
    "idle_clients": IDLE_CLIENTS,
    "takeover": TAKEOVER,
    "sync_cost": SYNC_COST,
    "request_path": REQUEST_PATH,
    "acked_grants": ACKED_GRANTS,
    "latency": LATENCY,
}


class ResultDocsTests(unittest.TestCase):
    """The docstrings list the fields of the result lines that the schemas above hold."""

    def assertSameFields(self, documented: set, schema: set, where: str) -> None:
        self.assertEqual(
            (sorted(documented - schema), sorted(schema - documented)),
            ([], []),
            f"{where}: (documented but not in the schema, in the schema but not documented)",
        )

    def test_scriptsDocumentTheirFields(self) -> None:
        """Each script's docstring lists exactly its schema's fields, with their types."""
        for scenario, schema in SCHEMAS.items():
            self.assertSameFields(
                documentedTypes(resultDocs(scenario)), fieldTypes(schema), f"{scenario}.py"
            )

    def test_helpListsResultFields(self) -> None:
        """Each script's ``--help`` prints its docstring, the fields of its result line
        included, as written."""
        for scenario in SCHEMAS:
            out = subprocess.run(
                [sys.executable, str(BENCH / f"{scenario}.py"), "--help"],
                cwd=BENCH.parent,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=True,
            ).stdout
            self.assertIn(resultDocs(scenario), out, f"{scenario}.py --help")

    def test_machineDocumented(self) -> None:
        """``common.machine``'s docstring lists exactly the machine's fields."""
        self.assertSameFields(
            documentedTypes(machineDocs()),
            {(name, typeWord(inner)) for name, inner in MACHINE.items()},
            "common.machine",
        )

    def test_mismatches(self) -> None:
        """The check finds a missing field, an undocumented one, a wrong type or shape."""
        schema = {"n": INT, "s": SPREAD, "l": ListOf(orNull(NUMBER)), Key("1"): {"x": BOOL}}
        good = {"n": 1, "s": {"n": 1, "median": 2, "min": 2, "max": 2.5}, "l": [None, 1.5]}
        good["1"] = {"x": False}
        self.assertEqual(mismatches(good, schema), [])
        self.assertEqual(
            mismatches({**good, "n": True, "extra": 0}, schema),
            ["result.extra is not documented", "result.n is not int: True"],
        )
        self.assertEqual(
            mismatches({**good, "s": {"n": 0}, "l": []}, schema),
            ["result.s is not spread: {'n': 0}", "result.l has 0 items"],
        )
        del good["1"]
        self.assertEqual(mismatches(good, schema), ["result.1 is missing"])

    def test_documentedTypes(self) -> None:
        """Field bullets give (name, type word) pairs; quoted keys and prose do not."""
        text = (
            "The result line:\n\n"
            "- ``a``, ``b_c`` (spread; not the baseline's): text\n"
            '- ``"1"`` and ``"16"`` (object): each:\n\n'
            "  - ``d``, ``e``\n"
            "    (list of objects): one per round, see ``x``\n"
            "  - ``f`` (number or null): text\n"
            "Not a bullet: ``g`` (int).\n"
        )
        self.assertEqual(
            documentedTypes(text),
            {("a", "spread"), ("b_c", "spread"), ("d", "list"), ("e", "list")}
            | {("f", "number or null")},
        )
        with self.assertRaises(AssertionError):
            documentedTypes("- ``h``: no type")


class BenchSmokeTests(unittest.TestCase):
    """Each benchmark script runs with ``--quick`` and prints its result line, which holds
    the fields its docstring lists."""

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
        result = json.loads(lines[0][len(prefix) :])
        self.assertEqual(
            mismatches(result, SCHEMAS[scenario]),
            [],
            f"the result line of {scenario}.py is not what its docstring lists",
        )
        return result

    def test_checkoutCost(self) -> None:
        """checkout_cost.py loads the server, the baseline and (with --floor) the floor
        server with and without its writer thread, with and without pipelining, and
        reports CPU per pair, pairs per second and the ratio to the baseline for each."""
        result = self.runBench("checkout_cost", "--connections", "10", "--floor")
        for depth in ("1", "16"):
            entry = result["depths"][depth]
            for name in ("baseline", "server", "floor", "floor-inline"):
                self.assertEqual(entry[name]["errors"], 0)
                self.assertGreater(entry[name]["pairs_per_s"]["median"], 0)
                self.assertGreater(entry[name]["cpu_per_pair_us"]["median"], 0)
            for name in ("server", "floor", "floor-inline"):
                self.assertGreater(entry[name]["ratio"]["median"], 0)
            self.assertEqual(entry["ratio"], entry["server"]["ratio"])

    def test_idleClients(self) -> None:
        """idle_clients.py connects clients that hold a lease and heartbeat, and reports
        the server's memory per connection and its CPU use."""
        result = self.runBench("idle_clients", "--clients", "100")
        self.assertEqual(result["server"], "licenseserver")
        self.assertEqual(result["clients"], 100)
        self.assertEqual(result["heartbeat_errors"], 0)
        self.assertGreater(result["memory_per_connection_kb"], 0)
        self.assertGreaterEqual(result["cpu_pct"], 0)
        self.assertEqual(len(result["windows"]), 1)

    def test_idleClientsBaseline(self) -> None:
        """idle_clients.py --baseline puts the same load on the bare baseline server."""
        result = self.runBench("idle_clients", "--clients", "100", "--baseline")
        self.assertEqual(result["server"], "baseline")
        self.assertEqual(result["heartbeat_errors"], 0)
        self.assertGreater(result["memory_per_connection_kb"], 0)

    def test_takeover(self) -> None:
        """takeover.py kills the primary, times the failover's first CHECKOUT and
        HEARTBEAT, and times the handback after the primary returns."""
        result = self.runBench("takeover")
        self.assertEqual(result["kills"], 1)
        for key in ("checkout_s", "heartbeat_s", "handback_s"):
            self.assertGreater(result["stats"][key]["median"], 0)
        earliest = result["takeover_after"] - result["heartbeat"]
        self.assertGreater(result["stats"]["checkout_s"]["median"], earliest)
        self.assertEqual(len(result["rounds"]), 1)

    def test_syncCost(self) -> None:
        """sync_cost.py times a failover's full sync and incremental syncs and counts
        their bytes."""
        result = self.runBench("sync_cost", "--rounds", "2", "--seconds", "600")
        self.assertGreater(result["full"]["bytes"], 0)
        self.assertGreater(result["full"]["seconds"], 0)
        kinds = [entry["kind"] for entry in result["incremental"]]
        self.assertEqual(kinds, ["CHECKOUT", "RELEASE"])
        first = result["incremental"][0]
        self.assertEqual(first["mode"], "changes")
        self.assertEqual(first["lines"], first["changes"])
        self.assertLess(first["bytes"], result["full"]["bytes"])

    def test_requestPath(self) -> None:
        """request_path.py measures both halves of a checkout's cost, and SQLite's share,
        at one and at 16 requests in flight per session."""
        result = self.runBench("request_path")
        for depth in ("1", "16"):
            entry = result["depths"][depth]
            self.assertEqual(entry["batch"], result["connections"] * int(depth))
            self.assertGreater(entry["decide_pairs"], 0)
            self.assertGreater(entry["decide_us_per_pair"], 0)
            self.assertGreater(entry["durable_pairs"], 0)
            self.assertGreater(entry["durable_us_per_pair"], 0)
            self.assertGreaterEqual(entry["commits_per_transaction"], 1)
            self.assertGreater(entry["sqlite_pairs"], 0)
            self.assertGreater(entry["sqlite_us_per_pair"], 0)

    def test_ackedGrants(self) -> None:
        """acked_grants.py times grants of an exact license's first seats and of its
        last ones, which wait for the failover's acknowledgement, against a primary
        alone, with each process's CPU per pair; and contenders for the last seats, whose
        grants the acknowledgements answer a few at a time."""
        result = self.runBench("acked_grants")
        self.assertEqual((result["seats"], result["share"]), (10, 2))
        phases = result["phases"]
        self.assertEqual(
            {name: phases[name]["held"] for name in phases},
            {"alone": 8, "first": 7, "last": 8},
        )
        for name, phase in phases.items():
            self.assertEqual(phase["errors"], 0, name)
            self.assertGreater(phase["pairs"], 0, name)
            self.assertGreater(phase["checkout_ms"]["median"], 0, name)
            self.assertGreater(phase["primary_cpu_us_per_pair"], 0, name)
            paired = phase["failover_cpu_us_per_pair"] is not None
            self.assertEqual(paired, name != "alone", name)
            self.assertEqual(phase["failover_net_cpu_us_per_pair"] is not None, paired, name)
        # The last seats wait for a sync and a BEAT of the failover; the first do not.
        self.assertGreater(
            phases["last"]["checkout_ms"]["median"], phases["first"]["checkout_ms"]["median"]
        )
        crowd = result["contention"]
        self.assertEqual(crowd["errors"], 0)
        self.assertEqual(crowd["contenders"], 16)
        self.assertGreater(crowd["grants"], 0)
        self.assertGreater(crowd["acks"], 0)
        self.assertLessEqual(crowd["grants_per_ack"]["max"], result["share"])
        self.assertEqual(crowd["bound_per_s"], result["share"] / result["heartbeat"])
        self.assertEqual(result["error_lines"], [])

    def test_latency(self) -> None:
        """latency.py times CHECKOUTs at steady rates from many connections, against a
        server alone, a pair under the exact policy, and a pair whose every grant waits
        for the failover's acknowledgement."""
        result = self.runBench("latency")
        self.assertEqual(result["connections"], 20)
        for name, by_rate in result["setups"].items():
            for rate, entry in by_rate.items():
                self.assertEqual(entry["errors"], 0, (name, rate))
                self.assertEqual(entry["unanswered"], 0, (name, rate))
                self.assertEqual(entry["connections_lost"], 0, (name, rate))
                self.assertGreater(entry["checkouts"], 0, (name, rate))
                latency = entry["checkout_ms"]
                self.assertLessEqual(latency["median"], latency["p99"], (name, rate))
                self.assertLessEqual(latency["p999"], latency["max"], (name, rate))
                paired = entry["failover_cpu_pct"] is not None
                self.assertEqual(paired, name != "alone", (name, rate))


def _endGroup(process: subprocess.Popen) -> None:
    """SIGKILL what is left of the benchmark's process group: it and the servers it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
