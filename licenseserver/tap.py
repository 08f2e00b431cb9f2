"""``twistd licenseserver``: its options and the service tree they build.

This module holds every default of the server: the command-line options and
the licensing settings an admin has not changed yet.

    MultiService
     ├─ store          opens the database on start, closes it on stop
     ├─ role           RoleSwitch running a PrimaryRole or a FailoverRole
     ├─ (heap)         FreezeWhenLoaded: gc.freeze() and a higher young-GC threshold once loaded
     ├─ licensing      ListeningService(--port, LicensingFactory(role))
     └─ web            ListeningService(--web, Site(root(role)))
"""

from __future__ import annotations

import difflib
import getopt
import ipaddress
import math
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import endpoints, threads
from twisted.logger import Logger
from twisted.python import usage

from licenseserver import alerts, localstate, signing, store, tls, upgrade
from licenseserver._version import __version__
from licenseserver.addresses import (
    DEFAULT_PORT,
    format_host_port,
    parse_host_port,
    server_port_interface,
)
from licenseserver.datadir import DataDir
from licenseserver.heap import FreezeWhenLoaded
from licenseserver.listening import ListeningService, serverEndpoint
from licenseserver.metrics import Metrics, MetricsResource
from licenseserver.protocols.licensing import LicensingFactory
from licenseserver.protocols.shedding import Limits
from licenseserver.roles.base import ServingRole
from licenseserver.roles.failover import FailoverRole
from licenseserver.roles.primary import PrimaryRole
from licenseserver.switch import RoleSwitch
from licenseserver.web import bounded
from licenseserver.web.auth import AdminAuth, reportGuessing
from licenseserver.web.facade import ServerView
from licenseserver.web.root import buildRoot

SETTING_DEFAULTS: dict[str, Any] = {
    "borrow_enabled": True,
    "borrow_max_days": 30,
    "failover_minimums": {"*": "2015r3", "MobileTogetherServer": "1.5"},
    "partition_policy": "full",
    "failover_share": "20%",
    "alert_expiry_days": 30,
    **alerts.SETTING_DEFAULTS,
}
"""Licensing settings (synced to the failover) before the admin changes them."""

TWISTD_PIDFILE = "twistd.pid"
"""twistd's own default ``--pidfile``, which ``Options`` moves into the data directory."""

LEASE_TTL_RANGE = (4, 86400)
"""The seconds ``--lease-ttl`` may be, from and to."""

log = Logger()


class Options(usage.Options):
    """The options of ``twistd licenseserver``."""

    synopsis = "[options]"
    longdesc = "Runs a license server: a primary, or the failover of one."

    optParameters = [
        ["role", None, None, "primary or failover [default: as last chosen, else primary]"],
        ["primary", None, None, "failover only: HOST[:PORT] of the primary, or an endpoint"],
        ["port", None, f"tcp:{DEFAULT_PORT}", "licensing endpoint"],
        ["web", None, "tcp:8088", "web page and admin API endpoint"],
        ["data", None, "./licenseserver-data", "data directory"],
        ["name", None, None, "this server's display name [default: host name]"],
        ["advertise", None, None, "HOST:PORT to tell clients and the peer"],
        ["heartbeat", None, "1", "seconds between failover-to-primary heartbeats"],
        ["takeover-after", None, "5", "seconds of primary silence before a takeover"],
        ["lease-ttl", None, "120", "seconds a lease lives without a HEARTBEAT"],
        ["peer-secret-file", None, None, "pairing secret file [default: DATA/peer-secret]"],
        ["primary-ca", None, None, "failover: PEM trust roots; the link to the primary uses TLS"],
        ["max-connections", None, "20000", "licensing connections at once (0: no limit)"],
        ["max-connections-per-address", None, "1000", "connections from one address (0: none)"],
        ["idle-timeout", None, "600", "close sessions silent this many seconds (0: never)"],
        ["rate-limit", None, "50", "requests per second per session, bursts of twice (0: off)"],
        ["web-max-body", None, str(bounded.MAX_BODY), "bytes a web or API request body may have"],
        [
            "web-request-timeout",
            None,
            str(int(bounded.REQUEST_TIMEOUT)),
            "seconds a web request may take to arrive, from its first byte to its last",
        ],
        [
            "web-access-log",
            None,
            "quiet",
            "quiet (a line per web request, but not for /api/status, /healthz, /metrics),"
            " all, or none",
        ],
        ["commit-delay", None, "0.01", "seconds a lease renewal waits to share a disk sync"],
        [
            "commit-gather",
            None,
            "0.0005",
            "seconds the store waits under load before each write, to share its disk sync",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["vendor-key"] = []

    def opt_vendor_key(self, path: str) -> None:
        """A trusted vendor public key file (may repeat) [default: DATA/vendor-keys/*.pub]."""
        self["vendor-key"].append(path)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse the command line; an option twistd cannot parse ends it with exit status 1.

        twistd answers such a ``UsageError`` (an unknown option, a missing
        value) with the usage text and the reason last. Here the reason
        comes first, on stderr, with the option meant when the unknown
        one is a near miss ("did you mean --takeover-after?"), then the
        usage text.
        """
        argv = sys.argv[1:] if options is None else list(options)
        try:
            super().parseOptions(argv)
        except usage.UsageError as e:
            print(f"twistd licenseserver: {self._unparsable(argv, e)}", file=sys.stderr)
            print(self, file=sys.stderr)
            raise SystemExit(1) from None

    def _unparsable(self, argv: list[str], error: usage.UsageError) -> str:
        """The reason for a command line that does not parse, with a suggestion if one fits."""
        try:
            getopt.getopt(argv, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            if e.msg.endswith("not recognized"):
                return unknown_option(e.opt, [name.rstrip("=") for name in self.longOpt])
            return e.msg
        return str(error)

    def postOptions(self) -> None:
        """Check every value; a wrong one ends twistd with one line, exit status 1."""
        try:
            self.validate()
        except usage.UsageError as e:
            raise SystemExit(f"twistd licenseserver: {e}") from None
        self.pidFileInDataDir()

    def pidFileInDataDir(self) -> None:
        """Put twistd's pid file in the data directory unless ``--pidfile`` names one.

        twistd writes ``twistd.pid`` in the working directory, even with
        ``--nodaemon``, and refuses to start while the pid in it runs: two
        servers started from one directory (a primary and its failover on one
        machine) would stop each other. One pid file per data directory fits
        the one server per data directory that the data lock already keeps.
        Only under ``twistd``: ``python -m twisted`` writes no pid file.
        """
        parent = getattr(self, "parent", None)
        if parent is not None and parent.get("pidfile") == TWISTD_PIDFILE:
            parent["pidfile"] = str(Path(self["data"]) / TWISTD_PIDFILE)

    def validate(self) -> None:
        """Check and convert every value; raise ``UsageError`` for a wrong one."""
        from twisted.internet import reactor

        if self["role"] not in (None, "primary", "failover"):
            raise usage.UsageError(f"--role must be primary or failover, not {self['role']!r}")
        if self["role"] == "failover" and not self["primary"]:
            raise usage.UsageError("--role=failover needs --primary=HOST[:PORT]")
        if self["role"] != "failover" and self["primary"]:
            raise usage.UsageError("--primary is only for --role=failover")
        if self["primary"]:
            _client_endpoint(reactor, self["primary"], self["primary-ca"])
        for name in ("port", "web"):
            try:
                serverEndpoint(reactor, self[name])
            except Exception as e:
                raise usage.UsageError(
                    f"--{name}={self[name]!r} is not an endpoint: {e}"
                    + _endpoint_hint(name, self[name])
                ) from None
        self["heartbeat"] = _number(self, "heartbeat", float, 0.05, 3600)
        self["takeover-after"] = _number(self, "takeover-after", float, 0.1, 86400)
        if self["takeover-after"] <= self["heartbeat"]:
            raise usage.UsageError("--takeover-after must be longer than --heartbeat")
        self["lease-ttl"] = _number(self, "lease-ttl", int, *LEASE_TTL_RANGE)
        self["web-max-body"] = _number(self, "web-max-body", int, 4096, 1 << 30)
        self["web-request-timeout"] = _number(self, "web-request-timeout", float, 1, 3600)
        if self["web-access-log"] not in bounded.ACCESS_LOGS:
            raise usage.UsageError(
                f"--web-access-log must be {', '.join(bounded.ACCESS_LOGS)},"
                f" not {self['web-access-log']!r}"
            )
        self["commit-delay"] = _number(self, "commit-delay", float, 0, 1)
        self["commit-gather"] = _number(self, "commit-gather", float, 0, 0.1)
        self["limits"] = Limits(
            max_connections=_number(self, "max-connections", int, 0, 10**7),
            max_per_address=_number(self, "max-connections-per-address", int, 0, 10**7),
            idle_timeout=_number(self, "idle-timeout", float, 0, 86400 * 7),
            rate=(rate := _number(self, "rate-limit", float, 0, 10**6)),
            burst=max(1, int(rate * 2)),
        )
        _check_idle_timeout(self["limits"].idle_timeout, self["lease-ttl"])
        if self["name"] is None:
            self["name"] = socket.gethostname()
        if not self["name"].isprintable() or not 1 <= len(self["name"]) <= 128:
            raise usage.UsageError("--name must be 1 to 128 printable characters")
        if self["advertise"] is not None and parse_host_port(self["advertise"]) is None:
            raise usage.UsageError(f"--advertise={self['advertise']!r} is not HOST:PORT")
        try:
            self["trusted-keys"] = signing.load_trusted_keys(Path(p) for p in self["vendor-key"])
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"--vendor-key: {e}") from None


def _number(options: Options, name: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(options[name])
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number, not {options[name]!r}") from None
    if not low <= value <= high:
        raise usage.UsageError(f"--{name} must be from {low} to {high}")
    return value


def unknown_option(name: str, known: list[str]) -> str:
    """The reason for an unknown option ``--name``: "did you mean" the closest known one."""
    dashes = "--" if len(name) > 1 else "-"
    reason = f"unknown option {dashes}{name}"
    close = difflib.get_close_matches(name.replace("_", "-"), known, n=1)
    if close:
        return f"{reason}; did you mean --{close[0]}?"
    return reason


def _endpoint_hint(name: str, text: str) -> str:
    """What to write instead of a bare port or ``HOST:PORT`` where an endpoint is due."""
    if text.isdigit():
        return f"; for TCP port {text} write --{name}=tcp:{text}"
    address = parse_host_port(text, default_port=0)
    if address is not None and address[1] and _is_ip_address(address[0]):
        host, port = address[0], address[1]
        interface = host.replace(":", "\\:")
        return f"; for TCP port {port} on {host} write --{name}=tcp:{port}:interface={interface}"
    return ""


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_idle_timeout(idle: float, lease_ttl: int) -> None:
    """An idle session must outlast a client's heartbeat interval (a quarter of a lease's life).

    Otherwise every client that heartbeats at the interval it is told loses
    its connection between two heartbeats. The reason names both values and
    what to change.
    """
    heartbeat = lease_ttl / 4
    if not 0 < idle <= heartbeat:
        return
    fix = f"raise --idle-timeout above {heartbeat:g}"
    longest_ttl = math.ceil(idle * 4) - 1
    if longest_ttl >= LEASE_TTL_RANGE[0]:
        fix += f" or lower --lease-ttl to {longest_ttl} or less"
    raise usage.UsageError(
        f"--idle-timeout ({idle:g} s) must be longer than a client's heartbeat interval"
        f" (--lease-ttl {lease_ttl} / 4 = {heartbeat:g} s): {fix}"
    )


def _client_endpoint(reactor: Any, text: str, ca: str | None = None) -> Any:
    """The primary's address as a client endpoint: HOST[:PORT] or an endpoint string.

    With ``ca`` (a PEM file of trust roots), HOST[:PORT] is reached over TLS:
    the primary's certificate must chain to one of them and name HOST.
    """
    host_port = parse_host_port(text)
    if host_port is not None:
        endpoint = endpoints.HostnameEndpoint(reactor, host_port[0], host_port[1])
        if ca is None:
            return endpoint
        return endpoints.wrapClientTLS(tls.clientOptions(host_port[0], ca), endpoint)
    if ca is not None:
        raise usage.UsageError("--primary-ca needs --primary as HOST[:PORT]")
    try:
        return endpoints.clientFromString(reactor, text)
    except Exception as e:
        raise usage.UsageError(
            f"--primary={text!r} is neither HOST[:PORT] nor an endpoint: {e}"
        ) from None


def _default_advertise(options: Options) -> str:
    """``HOST:PORT`` to tell clients: the listening interface if one is named, else
    this machine's host name; the port of ``--port`` (fixed up once listening, for
    port 0).

    The host name, not ``getfqdn()``: where ``/etc/hosts`` maps the machine's
    name to a loopback address, as many distributions set it up, the "fully
    qualified" name comes back as ``localhost``, which no other machine can use.
    """
    port, host = server_port_interface(options["port"]) or (DEFAULT_PORT, "")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return format_host_port(host, port or DEFAULT_PORT)


def _resolve_role(options: Options, local: dict[str, Any]) -> tuple[str, str | None]:
    """The role and primary address: from the command line, else as last recorded."""
    if options["role"] is not None:
        return options["role"], options["primary"]
    if local.get(localstate.ROLE) == "failover" and local.get(localstate.PRIMARY):
        return "failover", local[localstate.PRIMARY]
    return "primary", None


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """Build the service tree of one server from checked ``options``."""
    if reactor is None:
        from twisted.internet import reactor
    data = DataDir(options["data"])
    secret_file = Path(options["peer-secret-file"] or data.peer_secret)
    try:
        data.refuse_if_half_upgraded()
        password = data.prepare()
    except OSError as e:
        raise SystemExit(f"twistd licenseserver: data directory {data.path}: {e}") from None
    try:
        trusted = options["trusted-keys"] or signing.trusted_keys_in_dir(data.vendor_keys)
    except signing.LicenseError as e:
        raise SystemExit(f"twistd licenseserver: {data.vendor_keys}: {e}") from None
    try:
        lock = data.lock()
    except OSError as e:
        raise SystemExit(f"twistd licenseserver: {e}") from None
    try:
        local = upgrade.prepare_for_start(data.path, __version__)
        role_name, primary = _resolve_role(options, local)
        upgrade.record_role(data.path, role_name, primary, options["primary-ca"])
    except (OSError, store.StoreError) as e:
        raise SystemExit(f"twistd licenseserver: data directory {data.path}: {e}") from None
    try:
        peer_secret = data.read_peer_secret(secret_file)
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SystemExit(f"twistd licenseserver: peer secret file {secret_file}: {why}") from None

    top = service.MultiService()
    top.dataLock = lock  # held open while the server runs: no second server, no upgrade
    db = store.SQLiteStore(
        data.database,
        reactor,
        commit_delay=options["commit-delay"],
        gather_delay=options["commit-gather"],
    )
    db.setServiceParent(top)
    explicit_advertise = options["advertise"]
    advertise = [explicit_advertise or _default_advertise(options)]

    def build(role_name: str, primary: str | None) -> ServingRole:
        common = dict(
            clock=reactor,
            serverName=options["name"],
            advertise=advertise[0],
            leaseTTL=options["lease-ttl"],
            trustedKeys=trusted,
            settingDefaults=SETTING_DEFAULTS,
        )
        if role_name == "failover":
            return FailoverRole(
                db,
                primaryEndpoint=_client_endpoint(reactor, primary, options["primary-ca"]),
                primaryAddress=primary,
                heartbeat=options["heartbeat"],
                takeoverAfter=options["takeover-after"],
                peerSecret=peer_secret,
                **common,
            )
        return PrimaryRole(
            db,
            peerSecret=peer_secret,
            takeoverAfter=options["takeover-after"],
            runInThread=lambda f, *a: threads.deferToThreadPool(
                reactor, reactor.getThreadPool(), f, *a
            ),
            **common,
        )

    role = RoleSwitch(build, role_name, primary)
    role.setServiceParent(top)
    FreezeWhenLoaded(role).setServiceParent(top)
    view = ServerView(role)
    metrics = Metrics()
    metrics.watch(view)

    def licensingListening(port: int) -> None:
        if not explicit_advertise:
            advertise[0] = f"{advertise[0].rsplit(':', 1)[0]}:{port}"
            role.current.advertise = advertise[0]

    ListeningService(
        options["port"],
        serverEndpoint(reactor, options["port"]),
        LicensingFactory(role, metrics, options["limits"], reactor),
        portFile=data.port_file("licensing"),
        onListening=licensingListening,
    ).setServiceParent(top)

    auth = AdminAuth(reactor, data.admin_password_hash, onFailures=reportGuessing(role))
    root = buildRoot(view, auth, setPassword=data.change_admin_password)
    root.putChild(b"metrics", MetricsResource(metrics))
    site = bounded.LimitedSite(
        root,
        maxBody=options["web-max-body"],
        requestTimeout=options["web-request-timeout"],
        accessLog=options["web-access-log"],
        reactor=reactor,
    )
    ListeningService(
        options["web"],
        serverEndpoint(reactor, options["web"]),
        site,
        portFile=data.port_file("web"),
    ).setServiceParent(top)

    if password is not None:
        log.info(
            "First start: the admin password is {password} (also in {path})",
            password=password,
            path=str(data.initial_password),
        )
    if not trusted:
        log.warn(
            "No trusted vendor key at start: add the vendor's public key (PREFIX.pub) on the"
            " Settings tab or with POST /api/vendor-keys, put it in {path}, or pass"
            " --vendor-key; until then no license can be added.",
            path=str(data.vendor_keys),
        )
    else:
        log.info(
            "Trusting vendor keys {keys} (from {source})",
            keys=", ".join(sorted(trusted)),
            source="--vendor-key" if options["trusted-keys"] else str(data.vendor_keys),
        )
    return top
