"""The packages: the systemd unit, the container image's Dockerfile, and the wheel.

systemd itself checks the unit (``systemd-analyze verify``, with no warning) and its
user (``systemd-sysusers``); then the unit's very ``ExecStart`` runs a primary, and with
the failover line of its options file a failover that pairs with it. The test machines
run no container engine, so the Dockerfile's ``ENTRYPOINT`` and ``HEALTHCHECK`` commands
are run the same way: the health check passes while the server serves and fails once it
is gone. The wheel that the Dockerfile's first stage builds is built here from the
tracked files and must carry every module, page and static file, and the twistd plugin.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial import unittest

from tests.integration.harness import (
    EPHEMERAL,
    REPO_ROOT,
    TWISTD,
    ServerProcess,
    http_request,
    wait_for,
)

PACKAGING = REPO_ROOT / "packaging" / "systemd"
UNIT = PACKAGING / "licenseserver.service"
SYSUSERS = PACKAGING / "licenseserver.sysusers"
OPTIONS = PACKAGING / "licenseserver.env"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SYNC_TIMEOUT = 15.0


def unit_directives(path: Path) -> dict[str, list[str]]:
    """A unit file's ``Section.Key`` directives, each with its values in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions, ``(INSTRUCTION, arguments)``, lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


class CommandProcess(ServerProcess):
    """A server started with a packaged command line as it stands (ports and paths made
    local), instead of the harness's own."""

    def __init__(self, argv: list[str], data_dir: Path, name: str):
        super().__init__(data_dir, name=name)
        self.argv = argv

    def command(self) -> list[str]:
        return list(self.argv)


class PackagedServers(unittest.TestCase):
    """Servers started from a packaged command line, stopped at the end."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)

    def start(self, argv: list[str], data_dir: Path, name: str) -> ServerProcess:
        server = CommandProcess(argv, data_dir, name)
        self.addCleanup(server.stop)
        server.start()
        return server


class SystemdUnitTests(PackagedServers):
    def test_verified(self):
        """``systemd-analyze verify`` accepts the unit without a word, in a root where the
        command it names is installed where the unit says."""
        root = self.base / "root"
        command = shlex.split(unit_directives(UNIT)["Service.ExecStart"][0])[0]
        installed = root / command.lstrip("/")
        installed.parent.mkdir(parents=True)
        shutil.copy(TWISTD, installed)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        units = root / "etc/systemd/system"
        units.mkdir(parents=True)
        shutil.copy(UNIT, units)
        result = run("systemd-analyze", "verify", f"--root={root}", UNIT.name)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_shape(self):
        """What the unit promises: a simple service run by its own user, keeping its data
        in its state directory, restarted on failure, hardened."""
        unit = unit_directives(UNIT)
        for key, value in {
            "Service.Type": "simple",
            "Service.User": "licenseserver",
            "Service.StateDirectory": "licenseserver",
            "Service.Restart": "on-failure",
            "Service.ProtectSystem": "strict",
            "Service.NoNewPrivileges": "yes",
            "Service.CapabilityBoundingSet": "",
            "Install.WantedBy": "multi-user.target",
        }.items():
            self.assertEqual(unit.get(key), [value], key)
        argv = shlex.split(unit["Service.ExecStart"][0])
        self.assertEqual(argv[1:4], ["--nodaemon", "--pidfile=", "licenseserver"])
        self.assertEqual(argv[argv.index("--data") + 1], "/var/lib/licenseserver")

    def test_user(self):
        """``systemd-sysusers`` makes the dedicated user: no login, the data as home."""
        root = self.base / "root"
        (root / "etc").mkdir(parents=True)
        result = run("systemd-sysusers", f"--root={root}", "-", stdin=SYSUSERS.read_text())
        self.assertEqual(result.returncode, 0, result.stderr)
        (entry,) = (root / "etc/passwd").read_text().splitlines()
        name, _, uid, _, _, home, shell = entry.split(":")
        self.assertEqual(
            (name, home, shell), ("licenseserver", "/var/lib/licenseserver", "/usr/sbin/nologin")
        )
        self.assertGreater(int(uid), 0)

    def unitCommand(self, data: Path, options: list[str]) -> list[str]:
        """The unit's ExecStart as systemd runs it: ``$LICENSESERVER_OPTIONS`` split into
        words; here the installed twistd, a temporary data directory, local ports."""
        argv = []
        for word in shlex.split(unit_directives(UNIT)["Service.ExecStart"][0]):
            if word == "$LICENSESERVER_OPTIONS":
                argv += ["--port", EPHEMERAL, "--web", EPHEMERAL, *options]
            elif word.endswith("/bin/twistd"):
                argv.append(str(TWISTD))
            else:
                argv.append(word.replace("/var/lib/licenseserver", str(data)))
        return argv

    def test_primaryAndFailover(self):
        """The unit's command line serves; with the options file's failover line (and the
        primary's pairing secret copied, as the file says) a second one pairs with it."""
        primaryData = self.base / "primary"
        primary = self.start(self.unitCommand(primaryData, []), primaryData, "primary")
        (line,) = [
            line for line in OPTIONS.read_text().splitlines() if "LICENSESERVER_OPTIONS=" in line
        ]
        options = shlex.split(line.partition("=")[2])
        self.assertEqual(options[0], "--role=failover")
        address = f"127.0.0.1:{primary.licensing_port}"
        options = [address if word == "ls1.example.com" else word for word in options]
        failoverData = self.base / "failover"
        failoverData.mkdir()
        shutil.copy(primaryData / "peer-secret", failoverData / "peer-secret")
        failover = self.start(self.unitCommand(failoverData, options), failoverData, "failover")

        def paired() -> bool:
            status = json.loads(http_request(failover, "GET", "/api/status", auth=False).body)
            return (status.get("peer") or {}).get("link") == "paired"

        wait_for(paired, SYNC_TIMEOUT, "the failover to pair", failover.log_tail)


class DockerfileTests(PackagedServers):
    def test_shape(self):
        """A slim Python base, a user of its own, the data in a volume, both ports, a
        health check against /healthz."""
        instructions = dockerfile_instructions(DOCKERFILE)
        bases = [args.split()[0] for word, args in instructions if word == "FROM"]
        self.assertEqual(bases, ["python:3.11-slim", "python:3.11-slim"])
        final = instructions[[word for word, _ in instructions].index("FROM", 1) :]
        final_words = dict(final)
        self.assertEqual(final_words["USER"], "licenseserver")
        self.assertEqual(final_words["VOLUME"], "/data")
        self.assertEqual(final_words["EXPOSE"].split(), ["35355", "8088"])
        self.assertIn("http://127.0.0.1:8088/healthz", final_words["HEALTHCHECK"])

    def command(self, word: str) -> list[str]:
        """An exec-form instruction's command (the JSON array after its options)."""
        (args,) = [args for w, args in dockerfile_instructions(DOCKERFILE) if w == word]
        return json.loads(args[args.index("[") :])

    def test_entrypointAndHealthcheck(self):
        """The image's command line serves from its data directory; its health check
        passes while it does and fails once it has stopped."""
        data = self.base / "data"
        argv = [
            str(TWISTD) if word == "twistd" else str(data) if word == "/data" else word
            for word in self.command("ENTRYPOINT") + self.command("CMD")
        ]
        server = self.start([*argv, "--port", EPHEMERAL, "--web", EPHEMERAL], data, "image")
        check = [
            sys.executable if word == "python" else word.replace(":8088/", f":{server.web_port}/")
            for word in self.command("HEALTHCHECK")
        ]
        self.assertEqual(run(*check).returncode, 0)
        server.stop()
        self.assertNotEqual(run(*check).returncode, 0)


class WheelTests(unittest.TestCase):
    def test_contents(self):
        """The wheel built from the tracked files carries every module, template and
        static file of the package, and the twistd plugin; no tests."""
        base = Path(self.mktemp()).resolve()
        source = base / "source"
        tracked = run("git", "-C", str(REPO_ROOT), "ls-files").stdout.split()
        for name in tracked:
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / name, target)
        result = run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(base / "wheels"),
            str(source),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        (wheel,) = (base / "wheels").glob("licenseserver-*.whl")
        carried = {
            name
            for name in zipfile.ZipFile(wheel).namelist()
            if not name.split("/")[0].endswith(".dist-info")
        }
        expected = {
            name
            for name in tracked
            if name.startswith("licenseserver/")
            or name == "twisted/plugins/licenseserver_plugin.py"
        }
        self.assertEqual(carried, expected)
        self.assertIn("licenseserver/web/templates/usage.xhtml", carried)
        self.assertTrue(any(name.startswith("licenseserver/web/static/") for name in carried))
