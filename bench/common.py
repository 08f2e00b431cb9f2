"""What every benchmark shares: server processes, the machine, /proc, load clients, results.

A benchmark script runs in one process that is both the conductor and the load: it builds
data directories, starts ``twistd licenseserver`` processes on 127.0.0.1 (through the same
command line an admin uses), drives them from a Twisted reactor, and reads their CPU time
and memory from ``/proc``. Every process it starts is stopped when it ends, also when it
fails (and by SIGKILL at exit if a stop did not work).

Run as a program, this module is the baseline of ``checkout_cost.py``: a bare Twisted
``LineReceiver`` that answers every line with one fixed ``OK lease=...`` line::

    python bench/common.py baseline-server --port-file FILE
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from licenseserver.protocols import lineclient  # noqa: E402 (needs REPO_ROOT on sys.path)

EPHEMERAL = "tcp:0:interface=127.0.0.1"
PRODUCT = "BenchApp"
VERSION = "2025r2"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------
# Command line and results


def parser(
    description: str,
    seconds: float,
    quick_seconds: float = 1.0,
    seconds_help: str = "length of each measurement",
    profile: bool = False,
) -> argparse.ArgumentParser:
    """The options every benchmark takes; a script adds its own.

    ``description`` is the script's docstring, which ``--help`` prints as it is written
    (with the fields of the result line). ``--seconds`` defaults to ``seconds``, or
    ``quick_seconds`` with ``--quick``; ``profile`` adds ``--profile`` for scripts that can
    profile the server.
    """
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"{seconds_help} (default {seconds:g}; {quick_seconds:g} with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="small and short: a check that it runs")
    p.add_argument("--workdir", help="where data directories and logs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    p.add_argument(
        "--code-root",
        help="run the servers from another copy of the code (a directory holding "
        "licenseserver/ and twisted/plugins/), e.g. to compare before and after a change",
    )
    if profile:
        p.add_argument(
            "--profile",
            metavar="DIR",
            help="also record py-spy profiles of the server while it is measured, into DIR "
            "(py-spy takes CPU too: the numbers of such a run are for finding hot spots only)",
        )
    p.set_defaults(default_seconds=seconds, quick_seconds=quick_seconds, scaled_defaults={})
    return p


def scaled(
    p: argparse.ArgumentParser, flag: str, kind: type, full: Any, quick: Any, help: str
) -> None:
    """Add an option whose default is ``full``, or ``quick`` with ``--quick``.

    ``parse`` fills it in when it is not given.
    """
    described = f"{help} (default {full:g}; {quick:g} with --quick)"
    p.add_argument(flag, type=kind, default=None, help=described)
    dest = flag.lstrip("-").replace("-", "_")
    p.set_defaults(scaled_defaults={**p.get_default("scaled_defaults"), dest: (full, quick)})


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the options; fill in ``seconds`` and the ``scaled`` options from ``--quick``."""
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = args.quick_seconds if args.quick else args.default_seconds
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    for dest, (full, quick) in args.scaled_defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, quick if args.quick else full)
    return args


def say(text: str = "") -> None:
    """Progress and tables go to stdout at once."""
    print(text, flush=True)


def result_line(scenario: str, result: dict[str, Any]) -> None:
    """The last line of every benchmark: ``RESULT <scenario> <json>``."""
    say(f"RESULT {scenario} {json.dumps(result, sort_keys=True)}")


def run_scenario(scenario: str, main: Callable[..., Any], args: argparse.Namespace) -> None:
    """Run ``await main(reactor, args)`` in a reactor, then print its result line; exit."""

    async def go(reactor: Any) -> None:
        result = await main(reactor, args)
        result_line(scenario, result)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, ready to paste into docs/performance.md."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum (and count) of a series."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt_spread(s: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    """``median (min-max)`` of a ``spread``, scaled."""
    if not s.get("n"):
        return "-"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if s["n"] == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


# ---------------------------------------------------------------------------
# The machine and the processes


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the ``machine`` of every result line.

    - ``cpu`` (str): the model name in ``/proc/cpuinfo``, or ``unknown``;
    - ``cores`` (int): logical CPUs (``os.cpu_count()``);
    - ``ram_gib`` (number): total memory in GiB, to one decimal;
    - ``kernel``, ``python``, ``twisted``, ``sqlite`` (str): their versions;
    - ``loadavg_start`` (list of numbers): the 1, 5 and 15 minute load averages now;
    - ``loadavg_end`` (list of numbers): the same when the measurements end (the script
      adds it).
    """
    import sqlite3

    import twisted

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}, Python {info['python']}, Twisted {info['twisted']}, "
        f"SQLite {info['sqlite']}; load average at start {info['loadavg_start']}"
    )


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time of a process (all its threads, live and ended)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of a process's main thread (the reactor) and of its other live threads."""
    out = {"main": 0.0, "others": 0.0}
    for task_dir in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds = cpu_seconds(f"{pid}/task/{task_dir.name}")
        except OSError:
            continue
        out["main" if task_dir.name == str(pid) else "others"] += seconds
    return out


def memory_kb(pid: int | str = "self") -> dict[str, int]:
    """Resident set size now (``rss``) and at its peak (``hwm``), in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            out["hwm"] = int(line.split()[1])
    return out


def raise_open_files(needed: int) -> int:
    """Raise this process's open-file limit to at least ``needed`` (children inherit it).

    Raises SystemExit with advice when the hard limit is lower and cannot be raised.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            raise SystemExit(
                f"need {needed} open files, the hard limit is {hard}: raise it "
                f"(ulimit -Hn, or LimitNOFILE) or use fewer clients"
            ) from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_endpoint(port: int) -> str:
    return f"tcp:{port}:interface=127.0.0.1"


def work_dir(args: argparse.Namespace, name: str) -> Path:
    """The run's work directory; removed at exit unless ``--keep`` or ``--workdir``."""
    if args.workdir:
        path = Path(args.workdir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if not args.keep:
        import shutil

        atexit.register(shutil.rmtree, path, True)
    else:
        say(f"work directory: {path}")
    return path


_STARTED: list[subprocess.Popen] = []


def _kill_leftovers() -> None:
    for process in _STARTED:
        if process.poll() is None:
            try:
                process.kill()
                process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass


atexit.register(_kill_leftovers)


def child_env(code_root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code_root or REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(command: list[str], log: Path, cwd: Path | None = None, env: Any = None):
    """Start a child process whose output goes to ``log``; it is killed at exit at the latest."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd or REPO_ROOT,
            env=env or child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _STARTED.append(process)
    return process


# ---------------------------------------------------------------------------
# Profiles of a server process (py-spy, when installed)


def py_spy() -> str | None:
    """The py-spy program next to this Python or on PATH; None when there is none."""
    import shutil

    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profile:
    """``py-spy record`` of one process for a while, as collapsed stacks (``--format raw``).

    Sampling runs in py-spy's own process without pausing the target (``--nonblocking``),
    but it still takes CPU from a 2-core machine: numbers measured while a profile runs
    are for finding hot spots, not for the results tables.
    """

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200):
        program = py_spy()
        if program is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy (in .venv)")
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        command = [
            program,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(self.out),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _STARTED.append(self.process)

    async def finish(self, reactor: Any) -> str:
        """Wait for py-spy to write its file; return a summary of the hot spots."""
        await wait_until(reactor, lambda: self.process.poll() is not None, 120, "py-spy", 0.1)
        if not self.out.exists():
            return f"(py-spy wrote no profile: {self.process.stderr.read().decode()[-500:]})"
        return summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Share of samples per thread, and the functions with most samples (own and total)."""
    import re
    from collections import Counter

    own: Counter = Counter()
    total: Counter = Counter()
    threads: Counter = Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        thread = frames[0].partition(": ")[2]
        threads["reactor" if thread == "MainThread" else thread or "other"] += n
        names = [re.sub(r":\d+\)$", ")", f) for f in frames[1:]]
        if names:
            own[names[-1]] += n
        for name in set(names):
            total[name] += n
    if not samples:
        return "(no samples)"
    lines = [
        f"{samples} samples; " + ", ".join(f"{k} {v / samples:.0%}" for k, v in threads.items())
    ]
    lines.append("own time:")
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("total time (with callees), server code only:")
    ours = [(k, v) for k, v in total.most_common() if "licenseserver/" in k]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Asynchronous helpers (the reactor runs the whole benchmark)


def sleep(reactor: Any, seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, max(0.0, seconds), lambda: None)


async def wait_until(
    reactor: Any,
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if hasattr(value, "__await__") or hasattr(value, "addCallback"):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await sleep(reactor, interval)


_AGENTS: dict[int, Any] = {}


async def http_get(reactor: Any, url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``; return the status and body. Connection errors raise."""
    from twisted.web.client import Agent, HTTPConnectionPool, readBody

    agent = _AGENTS.get(id(reactor))
    if agent is None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        agent = _AGENTS[id(reactor)] = Agent(reactor, pool=pool)
    d = agent.request(b"GET", url.encode("ascii"))
    d.addTimeout(timeout, reactor)
    response = await d
    body = readBody(response)
    body.addTimeout(timeout, reactor)
    return response.code, await body


# ---------------------------------------------------------------------------
# Server processes


def read_port(path: Path) -> int | None:
    """The port number a server wrote to ``path``, once the whole line is there."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.endswith("\n"):
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def failover_server(
    data_dir: Path, primary_data: Path, port: int, *args: str, code_root: Path | None = None
) -> Server:
    """The failover ``bench-failover`` of the primary on 127.0.0.1:``port`` whose data
    directory (and so its peer secret) is ``primary_data``."""
    return Server(
        "failover",
        data_dir,
        "--role",
        "failover",
        "--primary",
        f"127.0.0.1:{port}",
        "--peer-secret-file",
        str(primary_data / "peer-secret"),
        "--name",
        "bench-failover",
        *args,
        code_root=code_root,
    )


class Server:
    """One ``twistd licenseserver`` process on 127.0.0.1.

    ``licensing`` is its ``--port`` endpoint (ephemeral unless given); the web port is
    always ephemeral. Ports are learnt from the port files the server writes.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        *args: str,
        licensing: str = EPHEMERAL,
        code_root: Path | None = None,
    ):
        self.name = name
        self.data_dir = Path(data_dir).resolve()
        self.args = list(args)
        self.licensing = licensing
        self.code_root = Path(code_root).resolve() if code_root else None
        self.log = self.data_dir.parent / f"{name}.log"
        self.out = self.data_dir.parent / f"{name}.out"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.web_port: int | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--nodaemon",
            "--pidfile=",
            f"--logfile={self.log}",
            "licenseserver",
            "--data",
            str(self.data_dir),
            "--port",
            self.licensing,
            "--web",
            EPHEMERAL,
            *self.args,
        ]

    def spawn(self) -> None:
        """Start the process (without waiting for it)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in ("licensing.port", "web.port"):
            (self.data_dir / name).unlink(missing_ok=True)
        self.port = self.web_port = None
        root = self.code_root or REPO_ROOT
        self.started_at = time.monotonic()
        self.process = spawn(self.command(), self.out, cwd=root, env=child_env(root))

    def tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self.log, self.out):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(missing)"]
            parts.append(f"--- {path}:\n" + "\n".join(text))
        return "\n".join(parts)

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")

    def listening(self) -> bool:
        """Whether both port files are written (the ports listen); learns the ports."""
        self._check_alive()
        licensing = read_port(self.data_dir / "licensing.port")
        web = read_port(self.data_dir / "web.port")
        if licensing and web:
            self.port, self.web_port = licensing, web
            return True
        return False

    async def healthy(self, reactor: Any) -> bool:
        self._check_alive()
        try:
            status, _ = await http_get(reactor, self.url("/healthz"), timeout=5)
        except Exception:
            return False
        return status == 200

    async def start(self, reactor: Any, timeout: float = START_TIMEOUT) -> None:
        """Spawn and wait until it listens and ``/healthz`` answers 200."""
        self.spawn()
        try:
            await wait_until(reactor, self.listening, timeout, f"{self.name} to listen", 0.01)
            await wait_until(reactor, lambda: self.healthy(reactor), timeout, f"{self.name} ok")
        except TimeoutError as e:
            self.process.kill()
            files = sorted(p.name for p in self.data_dir.iterdir())
            raise TimeoutError(f"{e}; {self.data_dir} holds {files}\n{self.tail()}") from None
        except BaseException:
            self.process.kill()
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    async def status(self, reactor: Any) -> dict[str, Any]:
        """``GET /api/status``."""
        code, body = await http_get(reactor, self.url("/api/status"))
        if code != 200:
            raise RuntimeError(f"{self.name}: /api/status answered {code}: {body[:200]!r}")
        return json.loads(body)

    async def _end(self, reactor: Any, signum: int, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            return
        try:
            await wait_until(
                reactor, lambda: process.poll() is not None, timeout, f"{self.name} to end", 0.005
            )
        except TimeoutError:
            process.kill()
            process.wait(10)

    async def stop(self, reactor: Any, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, and wait for the process to end (SIGKILL after ``timeout``)."""
        await self._end(reactor, signal.SIGTERM, timeout)

    async def kill(self, reactor: Any) -> None:
        """SIGKILL, and wait for the process to end."""
        await self._end(reactor, signal.SIGKILL, STOP_TIMEOUT)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kb(self.pid)


class Baseline:
    """The bare LineReceiver of ``checkout_cost.py``, as its own process.

    ``name`` and ``command`` run another yardstick server the same way (one that
    takes ``--port-file`` and writes its port there), such as ``floor_server.py``.
    """

    def __init__(self, directory: Path, name: str = "baseline", command: Sequence[str] = ()):
        self.name = name
        self.port_file = Path(directory) / f"{name}.port"
        self.out = Path(directory) / f"{name}.out"
        self.command = list(command) or [sys.executable, str(Path(__file__)), "baseline-server"]
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, reactor: Any) -> None:
        self.port_file.unlink(missing_ok=True)
        self.process = spawn([*self.command, "--port-file", str(self.port_file)], self.out)

        def ready() -> int | None:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited: {self.out.read_text()}")
            return read_port(self.port_file)

        self.port = await wait_until(reactor, ready, START_TIMEOUT, f"the {self.name} server")

    async def stop(self, reactor: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await wait_until(reactor, lambda: self.process.poll() is not None, 10, "baseline end")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kb(self.pid)


# ---------------------------------------------------------------------------
# Data directories, built directly through the store


class _CallsFromThreads:
    """The two reactor methods the store needs, for use without a running reactor.

    ``wait`` runs the calls that the store's writer thread hands over until a
    Deferred has fired: the store's callbacks run on this thread, as with a reactor.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def callFromThread(self, f: Callable, *a: Any, **kw: Any) -> None:
        self.calls.put((f, a, kw))

    def callLater(self, delay: float, f: Callable, *a: Any, **kw: Any) -> None:
        """Run ``f`` at the next turn of ``wait`` (the store ends its turns so)."""
        self.calls.put((f, a, kw))

    def wait(self, d: Any, timeout: float = 600.0) -> Any:
        from twisted.python.failure import Failure

        box: list[Any] = []
        d.addBoth(box.append)
        deadline = time.monotonic() + timeout
        while not box:
            f, a, kw = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            f(*a, **kw)
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]


def vendor_key(directory: Path, data_dirs: Iterable[Path] = ()) -> Any:
    """A new vendor key pair in ``directory``; its public key goes into each data dir."""
    import shutil

    from licenseserver import signing

    directory.mkdir(parents=True, exist_ok=True)
    private, public = signing.generate_keypair(directory / f"vendor-{os.getpid()}")
    for data in data_dirs:
        keys = Path(data) / "vendor-keys"
        keys.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, keys / public.name)
    return signing.load_private_key(private)


def licenses(key: Any, product: str, count: int, seats: int) -> list[Any]:
    """``count`` signed concurrent licenses of ``product``, active in the pool."""
    from dataclasses import replace

    from licenseserver import signing

    now = int(time.time())
    return [
        replace(
            signing.issue_license(
                key,
                product=product,
                kind="concurrent",
                seats=seats,
                edition="Enterprise",
                licensee="Benchmark Ltd",
                id=f"L-BENCH-{product}-{i:06d}",
            ),
            active=True,
            added=now,
        )
        for i in range(count)
    ]


def build_data_dir(data_dir: Path, records: Iterable[Any], batch: int = 5000) -> int:
    """Make a primary's data directory holding ``records``; return its revision.

    The directory is prepared as a first start would (peer secret, admin password,
    database at the current schema marked with this version); the records are then
    committed through ``SQLiteStore`` in batches, one revision each.
    """
    from licenseserver import store, upgrade
    from licenseserver._version import __version__
    from licenseserver.datadir import DataDir
    from licenseserver.model import Change

    data = DataDir(data_dir)
    data.prepare()
    upgrade.prepare_for_start(data.path, __version__)
    calls = _CallsFromThreads()
    db = store.SQLiteStore(data.database, calls)
    calls.wait(db.open())
    revision = 0
    chunk: list[Change] = []
    try:
        for record in records:
            chunk.append(Change.put(record))
            if len(chunk) >= batch:
                revision += 1
                calls.wait(db.commit(revision, chunk))
                chunk = []
        if chunk:
            revision += 1
            calls.wait(db.commit(revision, chunk))
    finally:
        calls.wait(db.close())
    return revision


# ---------------------------------------------------------------------------
# A licensing client for scripted exchanges


class LineClient(lineclient.LineClient):
    """One connection speaking the licensing protocol: ``await request(line)`` gives the answer.

    The project's line client (``licenseserver/protocols/lineclient.py``), kept lean for the
    load it makes: a request is a line as it is, its answer the answer line as bytes, not
    parsed (``args_of`` reads what a script needs). Requests may be pipelined; answers come
    back in order. ``closed`` fires when the connection ends.
    """

    MAX_LENGTH = 1 << 24

    def __init__(self) -> None:
        super().__init__()
        self.closed: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def request(self, line: bytes | str) -> defer.Deferred:  # type: ignore[override]
        if isinstance(line, str):
            line = line.encode()
        return self.requestLine(line + b"\n")

    def readAnswer(self, line: bytes) -> bytes:
        return line

    def answered(self, answer: bytes, lines: tuple[bytes, ...]) -> bytes:
        return answer

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)


async def connect(reactor: Any, port: int, protocol: Any = None, timeout: float = 10.0) -> Any:
    """Connect to 127.0.0.1:``port`` with ``protocol`` (a new LineClient by default)."""
    protocol = protocol if protocol is not None else LineClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    return await connectProtocol(endpoint, protocol)


def args_of(line: bytes) -> dict[str, str]:
    """The bare ``key=value`` arguments of a response line (enough for what we read)."""
    out = {}
    for word in line.decode("utf-8", "replace").split(" ")[1:]:
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    return out


def hello_line(machine: str, product: str = PRODUCT, host: str = "bench") -> bytes:
    return f"HELLO product={product} version={VERSION} host={host} machine={machine}".encode()


# ---------------------------------------------------------------------------
# The baseline server


def _baseline_main(argv: Sequence[str]) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineReceiver

    p = argparse.ArgumentParser(prog="common.py baseline-server")
    p.add_argument("--port-file", required=True)
    args = p.parse_args(argv)
    answer = (
        b"OK lease=l-Zb3kQ9mW2xR7tY5c license=L-BENCH-BenchApp-000000 kind=concurrent"
        b" expires=1795000120 ttl=120\n"
    )

    class Fixed(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            self.transport.write(answer)

    port = reactor.listenTCP(0, Factory.forProtocol(Fixed), interface="127.0.0.1")
    Path(args.port_file).write_text(f"{port.getHost().port}\n")
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["baseline-server"]:
        _baseline_main(sys.argv[2:])
    else:
        raise SystemExit("usage: common.py baseline-server --port-file FILE")
