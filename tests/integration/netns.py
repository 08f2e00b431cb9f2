"""Network namespaces for integration tests: servers on hosts of their own, and cuts between them.

A ``Hub`` is a router namespace (IPv4 forwarding on inside it, and only there) with spokes:
namespaces joined to it by a veth pair each, on a /30 of their own, with a default route
through it. The test's own namespace is joined to the hub too, with a route to each spoke's
/30 through it, so that the test reaches every spoke. ``cut(a, b)`` takes away the routes
between two spokes (each keeps its routes to the test and to any other spoke); ``heal(a, b)``
puts them back.

Every name starts with ``lsp<pid><serial>`` (veth names within the kernel's 15 characters)
and every address lies in a 10.213.K.0/24 that the test's namespace does not use yet. Each
thing is created only after its removal is registered as a cleanup of the test, so a test
that fails half-way leaves nothing behind. No sysctl of the test's own namespace is changed.
Needs root and iproute2 (``ip``).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.integration.harness import HarnessError

IP = shutil.which("ip") or "ip"
COMMAND_TIMEOUT = 30.0
PROBE_TIMEOUT = 3.0
CLOSED_PORT = 9
"""A port nothing listens on in a fresh namespace (discard): a connection to it that is
refused shows that the address is reachable."""
NETWORK = "10.213"
"""The first two octets of every address made here."""
MAX_IFNAME = 15

OPEN = "open"
REFUSED = "refused"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
REACHED = (OPEN, REFUSED)
"""Probe results that show a path to the address: something answered, SYN-ACK or RST."""

GONE = (
    "Cannot find device",
    "No such file or directory",
    "No such process",
    "Cannot assign requested address",
    "Address not found",
    "does not exist",
)
"""What ``ip`` says when asked to remove something that is not there (any more)."""

_serial = itertools.count()

PROBE = """\
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
except OSError as e:
    print("unreachable" if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else repr(e))
"""


def ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (in ``namespace``, if given); return its stdout.

    Raises ``HarnessError`` when it fails and ``check`` is true.
    """
    command = [IP, *(("-n", namespace) if namespace else ()), *args]
    result = _run(command)
    if check and result.returncode != 0:
        raise HarnessError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def undo(*args: str, namespace: str | None = None) -> None:
    """Run ``ip ARGS`` to remove something; that it is gone already is fine."""
    command = [IP, *(("-n", namespace) if namespace else ()), *args]
    result = _run(command)
    if result.returncode != 0 and not any(word in result.stderr for word in GONE):
        raise HarnessError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()}"
        )


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{' '.join(command)} took longer than {COMMAND_TIMEOUT} s") from None


def exec_prefix(namespace: str) -> list[str]:
    """The command prefix that runs a program in ``namespace`` (``ip netns exec`` execs it)."""
    return [IP, "netns", "exec", namespace]


def probe(
    host: str, port: int, namespace: str | None = None, timeout: float = PROBE_TIMEOUT
) -> str:
    """Connect to ``host:port`` (from ``namespace``, else from here) and close at once.

    Returns ``open``, ``refused`` (both: the address was reached), ``unreachable`` (no
    route, or an ICMP error on the way), ``timeout``, or the error's repr.
    """
    if namespace is None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return OPEN
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return TIMEOUT
        except OSError as e:
            return UNREACHABLE if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else repr(e)
    command = [
        *exec_prefix(namespace),
        sys.executable,
        "-c",
        PROBE,
        host,
        str(port),
        str(timeout),
    ]
    result = _run(command)
    if result.returncode != 0:
        raise HarnessError(f"the probe in {namespace} failed: {result.stderr.strip()}")
    return result.stdout.strip()


OURS = re.compile(r"^lsp(\d+)\d\d-")
"""A namespace made here: ``lsp``, the pid of the test process, a serial of two digits."""


def remove_stale() -> list[str]:
    """Remove the namespaces of test processes that are gone, and return their names.

    A test process killed before its cleanups ran (SIGKILL, a run cut short) leaves its
    namespaces behind; the next hub sweeps them. A namespace whose pid runs stays, even
    if that pid is now another process's: it may be a test running beside this one.
    Deleting a namespace deletes its veths, and so their peers here.
    """
    removed = []
    for line in ip("netns", "list").splitlines():
        name = line.split(" ", 1)[0]
        found = OURS.match(name)
        if found and not _running(int(found.group(1))):
            undo("netns", "delete", name)
            removed.append(name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_octets() -> set[int]:
    """The third octets of the 10.213.K.0/24 networks the test's namespace uses now."""
    text = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    used = set()
    for word in text.split():
        if word.startswith(NETWORK + "."):
            parts = word.split("/")[0].split(".")
            if len(parts) == 4 and parts[2].isdigit():
                used.add(int(parts[2]))
    return used


@dataclass(frozen=True)
class Link:
    """One veth pair between the hub and a spoke (or the test's own namespace), on a /30."""

    name: str
    """The spoke's short name (``pri``), or ``test`` for the test's own namespace."""
    namespace: str | None
    """The namespace at the far end from the hub; None for the test's own."""
    subnet: str
    """The /30, as ``10.213.K.N/30``."""
    gateway: str
    """The hub's address on it."""
    address: str
    """The far end's address on it."""
    hub_veth: str
    veth: str


class Hub:
    """A router namespace with ``spokes``, built by ``build()`` and removed by the test's
    cleanups. ``spokes`` are short names (``pri``, ``fo``); ``address(name)`` is each
    one's address, ``namespace(name)`` its namespace for ``exec_prefix``."""

    def __init__(self, testcase: Any, spokes: Iterable[str]):
        self.testcase = testcase
        serial = next(_serial) % 100
        self.prefix = f"lsp{os.getpid()}{serial:02d}"
        self.hub = f"{self.prefix}-hub"
        self.spokes = list(spokes)
        if len(set(self.spokes)) != len(self.spokes) or "test" in self.spokes:
            raise HarnessError(f"spoke names must be distinct and not 'test': {self.spokes}")
        if len(self.spokes) > 62:
            raise HarnessError("at most 62 spokes fit in a /24")
        self.octet: int | None = None
        self.links: dict[str, Link] = {}
        self.cuts: set[frozenset[str]] = set()
        self._explicit: dict[str, set[str]] = {}
        """Per spoke: the subnets it has routes to (instead of its default route) while cut."""

    # -- names and addresses

    def namespace(self, spoke: str) -> str:
        return self.link(spoke).namespace or ""

    def address(self, spoke: str) -> str:
        return self.link(spoke).address

    def link(self, name: str) -> Link:
        try:
            return self.links[name]
        except KeyError:
            raise HarnessError(f"no link {name!r} in the hub {self.hub}") from None

    def _make_link(self, index: int, name: str) -> Link:
        base = 4 * index
        net = f"{NETWORK}.{self.octet}"
        hub_veth, veth = f"{self.prefix}{index}h", f"{self.prefix}{index}s"
        for ifname in (hub_veth, veth):
            if len(ifname) > MAX_IFNAME:
                raise HarnessError(f"interface name {ifname!r} is too long")
        return Link(
            name=name,
            namespace=None if name == "test" else f"{self.prefix}-{name}",
            subnet=f"{net}.{base}/30",
            gateway=f"{net}.{base + 1}",
            address=f"{net}.{base + 2}",
            hub_veth=hub_veth,
            veth=veth,
        )

    def _pick_octet(self) -> int:
        used = _used_octets()
        start = (os.getpid() * 7 + int(self.prefix[-2:])) % 256
        for step in range(256):
            octet = (start + step) % 256
            if octet not in used:
                return octet
        raise HarnessError(f"every {NETWORK}.K.0/24 is in use in this namespace")

    # -- building

    def build(self) -> Hub:
        """Make the hub, the spokes and the test's link, each removed at the test's end."""
        forwarding = _root_forwarding()
        remove_stale()
        cleanup = self.testcase.addCleanup
        self.octet = self._pick_octet()
        self.links = {"test": self._make_link(0, "test")}
        for index, spoke in enumerate(self.spokes, 1):
            self.links[spoke] = self._make_link(index, spoke)

        cleanup(undo, "netns", "delete", self.hub)
        ip("netns", "add", self.hub)
        ip("link", "set", "lo", "up", namespace=self.hub)
        sysctl = [*exec_prefix(self.hub), "sysctl", "-qw", "net.ipv4.ip_forward=1"]
        result = _run(sysctl)
        if result.returncode != 0:
            raise HarnessError(f"{' '.join(sysctl)}: {result.stderr.strip()}")

        for spoke in self.spokes:
            link = self.links[spoke]
            namespace = link.namespace
            assert namespace is not None
            cleanup(undo, "netns", "delete", namespace)
            ip("netns", "add", namespace)
            ip("link", "set", "lo", "up", namespace=namespace)
            cleanup(undo, "link", "delete", link.hub_veth, namespace=self.hub)
            ip(
                "link",
                "add",
                link.hub_veth,
                "netns",
                self.hub,
                "type",
                "veth",
                "peer",
                "name",
                link.veth,
                "netns",
                namespace,
            )
            self._address(link.hub_veth, link.gateway, self.hub)
            self._address(link.veth, link.address, namespace)
            ip("route", "add", "default", "via", link.gateway, namespace=namespace)

        test = self.links["test"]
        cleanup(undo, "link", "delete", test.veth)
        ip(
            "link",
            "add",
            test.veth,
            "type",
            "veth",
            "peer",
            "name",
            test.hub_veth,
            "netns",
            self.hub,
        )
        self._address(test.hub_veth, test.gateway, self.hub)
        self._address(test.veth, test.address, None)
        for spoke in self.spokes:
            subnet = self.links[spoke].subnet
            cleanup(undo, "route", "delete", subnet, "via", test.gateway)
            ip("route", "add", subnet, "via", test.gateway, "dev", test.veth)

        if _root_forwarding() != forwarding:
            raise HarnessError("building the hub changed this namespace's ip_forward")
        return self

    def _address(self, ifname: str, address: str, namespace: str | None) -> None:
        """Give ``ifname`` its /30 address and bring it up."""
        on = ("dev", ifname)
        prefix = f"{address}/30"
        self.testcase.addCleanup(undo, "addr", "delete", prefix, *on, namespace=namespace)
        ip("addr", "add", prefix, *on, namespace=namespace)
        ip("link", "set", ifname, "up", namespace=namespace)

    # -- cuts

    def cut(self, a: str, b: str) -> None:
        """Take away the routes between spokes ``a`` and ``b``: each keeps routes to the rest."""
        self._pair(a, b)
        self.cuts.add(frozenset((a, b)))
        self._route(a)
        self._route(b)

    def heal(self, a: str, b: str) -> None:
        """Put back the routes between spokes ``a`` and ``b``."""
        self._pair(a, b)
        self.cuts.discard(frozenset((a, b)))
        self._route(a)
        self._route(b)

    def _pair(self, a: str, b: str) -> None:
        if a == b or a not in self.spokes or b not in self.spokes:
            raise HarnessError(f"{a!r} and {b!r} are not two spokes of {self.spokes}")

    def _route(self, spoke: str) -> None:
        """Give ``spoke`` the routes its cuts leave: its default route when it has none,
        else a route to each link it is not cut from, and no default route."""
        link = self.links[spoke]
        cutFrom = {other for pair in self.cuts if spoke in pair for other in pair} - {spoke}
        namespace = link.namespace
        had = self._explicit.get(spoke, set())
        if not cutFrom:
            ip("route", "replace", "default", "via", link.gateway, namespace=namespace)
            for subnet in sorted(had):
                undo("route", "delete", subnet, "via", link.gateway, namespace=namespace)
            self._explicit.pop(spoke, None)
            return
        wanted = {
            other.subnet
            for name, other in self.links.items()
            if name != spoke and name not in cutFrom
        }
        for subnet in sorted(wanted):
            ip("route", "replace", subnet, "via", link.gateway, namespace=namespace)
        undo("route", "delete", "default", namespace=namespace)
        for subnet in sorted(had - wanted):
            undo("route", "delete", subnet, "via", link.gateway, namespace=namespace)
        self._explicit[spoke] = wanted

    # -- checks

    def probe(self, source: str, target: str, port: int = CLOSED_PORT) -> str:
        """Probe ``target``'s address from ``source`` (a spoke, or ``test``)."""
        return probe(self.address(target), port, self.link(source).namespace)

    def reachability(self) -> dict[tuple[str, str], str]:
        """The probe result of every pair: the test to each spoke, each spoke to each other."""
        pairs = [("test", spoke) for spoke in self.spokes]
        pairs += [(a, b) for a in self.spokes for b in self.spokes if a != b]
        return {(a, b): self.probe(a, b) for a, b in pairs}

    def check(self) -> None:
        """Fail unless every pair reaches the other as the cuts say it should."""
        seen = self.reachability()
        wrong = {
            pair: result
            for pair, result in seen.items()
            if (result in REACHED) == (frozenset(pair) in self.cuts)
        }
        if wrong:
            raise HarnessError(
                f"the hub's paths are not as its cuts {sorted(map(sorted, self.cuts))} say:"
                f" {wrong} (all: {seen})\n{self.describe()}"
            )

    def describe(self) -> str:
        """Every namespace's addresses and routes, for failure messages."""
        parts = [f"--- test namespace routes:\n{ip('-4', 'route', 'show', check=False)}"]
        for namespace in [self.hub, *(self.links[s].namespace for s in self.spokes)]:
            addresses = ip("-4", "-br", "addr", "show", namespace=namespace, check=False)
            routes = ip("-4", "route", "show", namespace=namespace, check=False)
            parts.append(f"--- {namespace}:\n{addresses}{routes}")
        return "\n".join(parts)


def _root_forwarding() -> str:
    """The test's own namespace's ``net.ipv4.ip_forward``, which nothing here may change."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()
