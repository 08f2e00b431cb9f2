"""The server under soak: one ``twistd licenseserver`` process, its data directory, its licenses.

``SoakServer`` starts the server on 127.0.0.1, kills it with SIGKILL, starts it again on
the same data directory and the same licensing port, and stops it cleanly at the end.
Clients ask ``port()`` for the licensing port before every connection: it is None while
the server is down (and moves to a new port only if the old one was taken meanwhile).

The vendor key and the license files are made with the ``licenseserver`` tool and the
licenses go in through the admin API, as an admin would do it. Nothing here imports the
server's code.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common import read_port

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
HTTP_TIMEOUT = 10.0
POLL = 0.05


class SoakSetupError(RuntimeError):
    """The server or a tool did not do what the soak needs to run at all."""


def child_env(code_root: Path = REPO_ROOT) -> dict[str, str]:
    """The environment of child processes: they run the code under ``code_root``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code_root)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def twistd_command() -> list[str]:
    """How to run ``twistd`` with the interpreter running the soak."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def run_cli(*args: str) -> str:
    """Run ``python -m licenseserver.cli ARGS``; return its stdout, fail on a non-zero exit."""
    command = [sys.executable, "-m", "licenseserver.cli", *args]
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SoakSetupError(f"{command} took longer than {CLI_TIMEOUT} s") from None
    if result.returncode != 0:
        raise SoakSetupError(
            f"{command} exited with {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


@dataclass(frozen=True)
class LicenseSpec:
    """One concurrent license the soak puts in the pool."""

    id: str
    product: str
    seats: int


def license_plan(clients: int) -> list[LicenseSpec]:
    """Licenses of different seat counts, scaled so that clients compete for seats.

    Gamma has two licenses, so that one product's seats come from more than one license.
    """
    return [
        LicenseSpec("L-SOAK-ALPHA", "Alpha", max(1, clients // 8)),
        LicenseSpec("L-SOAK-BETA", "Beta", max(2, clients // 3)),
        LicenseSpec("L-SOAK-GAMMA-1", "Gamma", max(1, clients // 5)),
        LicenseSpec("L-SOAK-GAMMA-2", "Gamma", max(2, clients // 2)),
    ]


def make_license_files(workdir: Path, data_dir: Path, plan: list[LicenseSpec]) -> list[Path]:
    """Make a vendor key (trusted by ``data_dir``) and one signed file per license."""
    keys = workdir / "vendor"
    keys.mkdir(parents=True, exist_ok=True)
    run_cli("vendor", "keygen", "--out", str(keys / "soak"))
    trusted = data_dir / "vendor-keys"
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(keys / "soak.pub", trusted / "soak.pub")
    files = []
    for spec in plan:
        out = keys / f"{spec.id}.lic"
        run_cli(
            "vendor", "issue", "--key", str(keys / "soak.key"), "--product", spec.product,
            "--kind", "concurrent", "--seats", str(spec.seats), "--edition", "Soak",
            "--id", spec.id, "--out", str(out),
        )  # fmt: skip
        files.append(out)
    return files


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


class SoakServer:
    """One server process on a data directory, started, killed and restarted by the soak."""

    def __init__(self, workdir: Path, extra_args: list[str], code_root: Path | None = None):
        self.workdir = workdir
        self.code_root = code_root or REPO_ROOT
        """Where the server's code comes from (another build than this tree's, if given)."""
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.out_path = workdir / "server.out"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.fixed_port: int | None = None
        """The licensing port every start after the first asks for."""
        self.web_port: int | None = None
        self.port_moves = 0
        """Restarts that could not have the old licensing port back."""
        self._port: int | None = None
        self._lock = threading.Lock()

    @property
    def database(self) -> Path:
        return self.data_dir / "licenseserver.sqlite3"

    def port(self) -> int | None:
        """The licensing port while the server serves; None while it is down."""
        with self._lock:
            return self._port

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        return (
            f"--- {self.log_path}:\n{_tail(self.log_path)}\n"
            f"--- {self.out_path}:\n{_tail(self.out_path)}"
        )

    def _command(self, endpoint: str) -> list[str]:
        return [
            *twistd_command(), "--nodaemon", "--pidfile=", f"--logfile={self.log_path}",
            "licenseserver", "--data", str(self.data_dir), "--name", "soak",
            "--port", endpoint, "--web", "tcp:0:interface=127.0.0.1", *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start the server and wait until it serves; return how long that took.

        Asks for the licensing port of the first start; when another process took it
        meanwhile, starts on a new port instead (clients follow through ``port()``).
        """
        began = time.monotonic()
        if self.fixed_port is not None and not self._try_start(self.fixed_port, timeout):
            self.port_moves += 1
            self.fixed_port = None
        if self.fixed_port is None and not self._try_start(0, timeout):
            raise SoakSetupError(f"the server did not start\n{self.log_tail()}")
        return time.monotonic() - began

    def _try_start(self, port: int, timeout: float) -> bool:
        if self.running:
            raise SoakSetupError("the server is already running")
        ports = {name: self.data_dir / f"{name}.port" for name in ("licensing", "web")}
        for path in ports.values():
            path.unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out:
            self.process = subprocess.Popen(
                self._command(f"tcp:{port}:interface=127.0.0.1"),
                cwd=self.code_root,
                env=child_env(self.code_root),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        health = "its port files never appeared"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            licensing = read_port(ports["licensing"])
            web = read_port(ports["web"])
            if licensing and web:
                self.web_port = web
                health = self._health()
                if health == "200":
                    self.fixed_port = licensing
                    with self._lock:
                        self._port = licensing
                    return True
            time.sleep(POLL)
        raise SoakSetupError(
            f"the server (pid {self.process.pid}) did not serve within {timeout} s "
            f"(last /healthz: {health}); its threads at that moment are in {self.out_path}"
            f"\n{self._abort()}"
        )

    def _health(self) -> str:
        """The status of ``GET /healthz`` now, or why there is none."""
        try:
            return str(self.http("GET", "/healthz", auth=False)[0])
        except OSError as e:
            return repr(e)

    def _abort(self) -> str:
        """End a stuck server with SIGABRT, so that it prints its threads' stacks first."""
        if self.running:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.log_tail()

    def _signal(self, signum: int, timeout: float) -> int | None:
        with self._lock:
            self._port = None
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            try:
                process.send_signal(signum)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL the server and wait until it is gone; return its exit status."""
        return self._signal(signal.SIGKILL, STOP_TIMEOUT)

    def stop(self) -> int | None:
        """SIGTERM the server and wait until it has ended (SIGKILL after a timeout)."""
        return self._signal(signal.SIGTERM, STOP_TIMEOUT)

    # -- the admin API

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "initial-admin-password").read_text().strip()

    def http(
        self, method: str, path: str, body: bytes | None = None, auth: bool = True
    ) -> tuple[int, bytes]:
        """One request to the web port: ``(status, body)``."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}", data=body, method=method
        )
        if auth:
            token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read()

    def upload(self, path: Path) -> list[str]:
        """Add the licenses of a license file through ``POST /api/licenses``."""
        status, body = self.http("POST", "/api/licenses", path.read_bytes())
        if status != 201:
            raise SoakSetupError(f"POST /api/licenses {path.name}: HTTP {status} {body[:300]!r}")
        return json.loads(body)["ids"]
