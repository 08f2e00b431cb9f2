"""Real server processes for integration tests, driven through the command line only.

A ServerProcess runs ``twistd licenseserver`` on 127.0.0.1 (or another address it is
given) with ephemeral ports (or a licensing port kept across restarts) and learns them from
the port files the server writes into its data directory. The helpers around it make a
vendor key, issue license files with the ``licenseserver`` tool and talk to the admin
API with urllib. Nothing here imports the server's code.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TWISTD = Path(sys.executable).parent / "twistd"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
HTTP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
EPHEMERAL = "tcp:0:interface=127.0.0.1"
"""The endpoint of a listener on 127.0.0.1 with a port the system picks."""


class HarnessError(AssertionError):
    """A server process or tool did not do what a test needed from it."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something true; return that.

    Fails with ``what`` (and ``describe()``, if given) once ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"\n{describe()}" if describe is not None else ""
            raise HarnessError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(POLL_INTERVAL)


def hold_for(
    predicate: Callable[[], Any],
    duration: float,
    what: str,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` for ``duration`` seconds; fail with ``what`` as soon as it is false.

    The counterpart of ``wait_for`` for a condition that must keep holding.
    """
    start = time.monotonic()
    deadline = start + duration
    while True:
        if not predicate():
            elapsed = time.monotonic() - start
            detail = f"\n{describe()}" if describe is not None else ""
            raise HarnessError(f"after {elapsed:.2f} s, no longer {what}{detail}")
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL_INTERVAL)


def local_endpoint(port: int, host: str = "127.0.0.1") -> str:
    """The endpoint of a listener on 127.0.0.1 (or another address) with a given port."""
    return f"tcp:{port}:interface={host}"


def interface_endpoint(host: str) -> str:
    """The endpoint of a listener on the address ``host`` with a port the system picks."""
    return local_endpoint(0, host)


def tls_endpoint(port: int, key: str | os.PathLike[str], cert: str | os.PathLike[str]) -> str:
    """The endpoint of a TLS listener on 127.0.0.1 (port 0: the system picks one).

    ``key`` is a PEM private key file, ``cert`` the PEM file of its certificate.
    """
    from twisted.internet.endpoints import quoteStringArgument

    key_text = quoteStringArgument(str(Path(key).resolve()))
    cert_text = quoteStringArgument(str(Path(cert).resolve()))
    return f"ssl:{port}:interface=127.0.0.1:privateKey={key_text}:certKey={cert_text}"


def tls_client_context(cafile: str | os.PathLike[str]) -> ssl.SSLContext:
    """A client TLS context that trusts only the certificates in ``cafile`` and checks names."""
    return ssl.create_default_context(cafile=str(cafile))


def child_env(code_root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The environment for processes that must run the working tree's code.

    With ``code_root``, they run the code under that directory instead (another build).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code_root or REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


def _read_port(path: Path) -> int | None:
    """The port in a port file once it is completely written, else None."""
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


class ServerProcess:
    """One ``twistd licenseserver`` process on 127.0.0.1, with ephemeral ports by default.

    ``licensing_endpoint`` is the ``--port`` it listens on; ``keep_licensing_port()``
    pins it to the port the process has now, so that a later start uses the same one.

    A server listening elsewhere (in a network namespace, say) gives ``host``, the address
    its endpoints listen on and that the tests connect to, and ``command_prefix``, what
    its command runs under (such as ``ip netns exec NAME``: a prefix that ends by exec'ing
    the command, so that the signals of ``stop()`` and ``kill()`` reach the server itself).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *extra_args: str,
        name: str = "",
        wait_healthy: bool = True,
        licensing_endpoint: str = EPHEMERAL,
        code_root: str | os.PathLike[str] | None = None,
        web_endpoint: str = EPHEMERAL,
        web_tls: ssl.SSLContext | None = None,
        cwd: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        command_prefix: Sequence[str] = (),
    ):
        self.data_dir = Path(data_dir).resolve()
        self.code_root = Path(code_root) if code_root else REPO_ROOT
        self.wait_healthy = wait_healthy
        self.licensing_endpoint = licensing_endpoint
        self.web_endpoint = web_endpoint
        """The ``--web`` endpoint; with an ``ssl:`` one, give ``web_tls`` too."""
        self.web_tls = web_tls
        """The client TLS context for the web port, when it serves TLS (``https``)."""
        self.cwd = Path(cwd) if cwd else self.code_root
        """The working directory of the process (the code's root by default)."""
        self.host = host
        """The address the server listens on, and which the tests connect to."""
        self.command_prefix = list(command_prefix)
        self.name = name or self.data_dir.name
        self.extra_args = list(extra_args)
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        self.out_path = self.data_dir.parent / f"{self.name}.out"
        self.process: subprocess.Popen[bytes] | None = None
        self._licensing_port: int | None = None
        self._web_port: int | None = None
        self._password: str | None = None

    @property
    def licensing_port_file(self) -> Path:
        return self.data_dir / "licensing.port"

    @property
    def web_port_file(self) -> Path:
        return self.data_dir / "web.port"

    @property
    def licensing_port(self) -> int:
        if self._licensing_port is None:
            raise HarnessError(f"server {self.name} is not started")
        return self._licensing_port

    @property
    def web_port(self) -> int:
        if self._web_port is None:
            raise HarnessError(f"server {self.name} is not started")
        return self._web_port

    @property
    def web_url(self) -> str:
        scheme = "https" if self.web_tls is not None else "http"
        return f"{scheme}://{self.host}:{self.web_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return [
            *self.command_prefix,
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "licenseserver",
            "--data",
            str(self.data_dir),
            "--port",
            self.licensing_endpoint,
            "--web",
            self.web_endpoint,
            *self.extra_args,
        ]

    def keep_licensing_port(self) -> int:
        """Make every later start listen on the licensing port it has now; return it."""
        port = self.licensing_port
        self.licensing_endpoint = local_endpoint(port, self.host)
        return port

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's log and of its stdout/stderr, for failure messages."""
        status = "not started"
        if self.process is not None:
            code = self.process.poll()
            status = "running" if code is None else f"exited with {code}"
        return (
            f"--- server {self.name} ({status}); log {self.log_path}:\n"
            f"{_tail(self.log_path, lines)}\n"
            f"--- stdout/stderr {self.out_path}:\n{_tail(self.out_path, lines)}"
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until both ports are listening.

        With ``wait_healthy`` (the default) it also waits for ``GET /healthz`` to answer
        200: the ports are announced once they listen, which may be a moment before the
        server has loaded its data.
        """
        if self.running:
            raise HarnessError(f"server {self.name} is already running")
        for path in (self.licensing_port_file, self.web_port_file):
            path.unlink(missing_ok=True)
        self._licensing_port = self._web_port = None
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=child_env(self.code_root),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        deadline = time.monotonic() + timeout

        def alive() -> None:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(f"server {self.name} exited while starting\n{self.log_tail()}")

        def ports() -> tuple[int, int] | None:
            alive()
            licensing = _read_port(self.licensing_port_file)
            web = _read_port(self.web_port_file)
            if licensing and web:
                return licensing, web
            return None

        try:
            self._licensing_port, self._web_port = wait_for(
                ports,
                timeout,
                f"server {self.name} to write its port files",
                self.log_tail,
            )
            if self.wait_healthy:
                wait_for(
                    lambda: alive() or self.healthy(),
                    max(deadline - time.monotonic(), 0.0),
                    f"server {self.name} to answer 200 on /healthz",
                    self.log_tail,
                )
        except BaseException:
            self.kill()
            raise

    def healthy(self) -> bool:
        """Whether ``GET /healthz`` answers 200 right now."""
        try:
            return http_request(self, "GET", "/healthz", auth=False).status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _signal_and_wait(self, signum: int, timeout: float) -> int | None:
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
                raise HarnessError(
                    f"server {self.name} did not end within {timeout} s of signal "
                    f"{signum}; killed it\n{self.log_tail()}"
                ) from None
        return process.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the process and wait for it to end; return its exit code."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGKILL the process and wait for it to end; return its exit code."""
        return self._signal_and_wait(signal.SIGKILL, timeout)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop cleanly and start again on the same data directory."""
        self.stop()
        self.start(timeout)

    @property
    def admin_password(self) -> str:
        """The admin password the server wrote on its first start."""
        if self._password is None:
            path = self.data_dir / "initial-admin-password"
            try:
                self._password = path.read_text().strip()
            except OSError as e:
                raise HarnessError(f"cannot read the admin password: {e}") from None
        return self._password


def start_server(
    testcase: Any, data_dir: str | os.PathLike[str], *extra_args: str, **options: Any
) -> ServerProcess:
    """Start a server whose stop is already registered as the test's cleanup.

    ``options`` go to ``ServerProcess`` (``name``, ``licensing_endpoint``, ...).
    """
    server = ServerProcess(data_dir, *extra_args, **options)
    testcase.addCleanup(server.stop)
    server.start()
    return server


# -- the licenseserver tool


def run_cli(*args: str) -> str:
    """Run ``python -m licenseserver.cli ARGS`` on the working tree; return its stdout."""
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
        raise HarnessError(f"{command} took longer than {CLI_TIMEOUT} s") from None
    if result.returncode != 0:
        raise HarnessError(
            f"{command} exited with {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result.stdout


def run_cli_result(
    *args: str, code_root: str | os.PathLike[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m licenseserver.cli ARGS`` and return the result, whatever its exit code.

    ``code_root`` runs another build's code instead of the working tree's.
    """
    root = Path(code_root) if code_root else REPO_ROOT
    command = [sys.executable, "-m", "licenseserver.cli", *args]
    try:
        return subprocess.run(
            command,
            cwd=root,
            env=child_env(root),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{command} took longer than {CLI_TIMEOUT} s") from None


def copy_build(target: str | os.PathLike[str], version: str | None = None) -> Path:
    """Copy the working tree's code (``licenseserver/``, ``twisted/plugins/``) to ``target``.

    With ``version``, the copy's ``_version.py`` says that version (the edition stays):
    two builds that differ only in their version. Returns ``target``, for ``code_root``.
    """
    root = Path(target).resolve()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    shutil.copytree(REPO_ROOT / "licenseserver", root / "licenseserver", ignore=ignore)
    shutil.copytree(REPO_ROOT / "twisted" / "plugins", root / "twisted" / "plugins", ignore=ignore)
    if version is not None:
        version_file = root / "licenseserver" / "_version.py"
        lines = version_file.read_text().splitlines()
        if not any(line.startswith("__version__ =") for line in lines):
            raise HarnessError(f"no __version__ line in {version_file}")
        lines = [
            f'__version__ = "{version}"' if line.startswith("__version__ =") else line
            for line in lines
        ]
        version_file.write_text("\n".join(lines) + "\n")
    return root


def make_vendor_key(
    directory: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    name: str = "vendor",
) -> Path:
    """Make a vendor key pair in ``directory``; return the private key's path.

    With ``data_dir``, the public key is copied into ``DATA/vendor-keys/`` so that a server
    started afterwards trusts it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / name
    run_cli("vendor", "keygen", "--out", str(prefix))
    key = prefix.with_name(name + ".key")
    public = prefix.with_name(name + ".pub")
    if not key.exists() or not public.exists():
        raise HarnessError(f"vendor keygen did not write {key} and {public}")
    if data_dir is not None:
        keys_dir = Path(data_dir) / "vendor-keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, keys_dir / public.name)
    return key


def issue_license(
    key: str | os.PathLike[str],
    out: str | os.PathLike[str],
    product: str,
    kind: str,
    seats: int,
    **options: object,
) -> Path:
    """Write a signed license file with ``licenseserver vendor issue``; return its path.

    ``options`` are edition, cores, max_version, starts, expires, licensee, id: each becomes
    ``--name value`` with underscores turned into dashes.
    """
    args = [
        "vendor",
        "issue",
        "--key",
        str(key),
        "--product",
        product,
        "--kind",
        kind,
        "--seats",
        str(seats),
    ]
    for option, value in options.items():
        if value is not None:
            args += ["--" + option.replace("_", "-"), str(value)]
    args += ["--out", str(out)]
    run_cli(*args)
    return Path(out)


# -- the admin API


class HTTPResult:
    """Status, headers and body of one HTTP exchange."""

    def __init__(self, status: int, headers: Any, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise HarnessError(f"not JSON (HTTP {self.status}): {self.body[:500]!r}") from None

    def __repr__(self) -> str:
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def http_request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    auth: bool | tuple[str, str] = True,
    content_type: str = "application/json",
) -> HTTPResult:
    """One request to the server's web port; ``auth`` True means admin Basic auth."""
    request = urllib.request.Request(server.web_url + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", content_type)
    if auth:
        user, password = ("admin", server.admin_password) if auth is True else auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(
            request, timeout=HTTP_TIMEOUT, context=server.web_tls
        ) as response:
            return HTTPResult(response.status, response.headers, response.read())
    except urllib.error.HTTPError as e:
        with e:
            return HTTPResult(e.code, e.headers, e.read())


def api_get(server: ServerProcess, path: str) -> Any:
    """GET an admin API path with admin auth; return the JSON of a 200 answer."""
    result = http_request(server, "GET", path)
    if result.status != 200:
        raise HarnessError(f"GET {path}: expected 200, got {result!r}")
    return result.json()


def api_send(server: ServerProcess, method: str, path: str, document: Any) -> HTTPResult:
    """Send a JSON document with admin auth; return the raw result."""
    return http_request(server, method, path, json.dumps(document).encode("utf-8"))


def upload_license(server: ServerProcess, path: str | os.PathLike[str]) -> list[str]:
    """POST a license file to ``/api/licenses``; return the ids of a 201 answer."""
    body = Path(path).read_bytes()
    result = http_request(server, "POST", "/api/licenses", body)
    if result.status != 201:
        raise HarnessError(f"POST /api/licenses: expected 201, got {result!r}")
    ids = result.json().get("ids")
    if not isinstance(ids, list) or not ids:
        raise HarnessError(f"POST /api/licenses: no ids in {result!r}")
    return ids


def assign_licenses(
    server: ServerProcess, client: str, product: str, license_ids: list[str]
) -> HTTPResult:
    """PUT the licenses of a client's product; return the raw result."""
    quote = urllib.request.quote
    path = f"/api/clients/{quote(client, safe='')}/products/{quote(product, safe='')}/licenses"
    return api_send(server, "PUT", path, {"licenses": license_ids})
