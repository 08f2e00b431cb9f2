"""Shared set-up for unit tests: a vendor key, signed licenses and a role on a Clock."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import defer
from twisted.internet.task import Clock

from licenseserver import signing
from licenseserver.roles.primary import PrimaryRole
from licenseserver.session import Session
from licenseserver.tap import SETTING_DEFAULTS
from licenseserver.testing import FakeStore

VENDOR_KEY = Ed25519PrivateKey.generate()
TRUSTED = {signing.key_id(VENDOR_KEY.public_key()): VENDOR_KEY.public_key()}
START = 1_780_000_000.0
"""A time in 2026, after the licenses' issue dates."""


def licenseFile(*specs: dict[str, Any]) -> bytes:
    """A license file signed by the test vendor key, one license per spec."""
    licenses = []
    for spec in specs:
        spec = dict(spec)
        spec.setdefault("product", "XMLSpy")
        spec.setdefault("kind", "concurrent")
        spec.setdefault("seats", 5)
        spec.setdefault("issued", "2026-01-01")
        licenses.append(signing.issue_license(VENDOR_KEY, **spec))
    return signing.dump_licenses(licenses)


def run(coroutine: Any) -> defer.Deferred:
    """Start a coroutine as a Deferred."""
    return defer.ensureDeferred(coroutine)


def makeRole(
    store: FakeStore | None = None, clock: Clock | None = None, cls: type = PrimaryRole, **kw
) -> Any:
    """A started role over a fake store, on a Clock at ``START``."""
    if clock is None:
        clock = Clock()
        clock.advance(START)
    options = dict(
        clock=clock,
        serverName="ls1",
        advertise="ls1.example.com:35355",
        leaseTTL=120,
        trustedKeys=TRUSTED,
        settingDefaults=SETTING_DEFAULTS,
    )
    options.update(kw)
    role = cls(store if store is not None else FakeStore(), **options)
    role.startService()
    return role


def session(machine: str = "m1", **kw: Any) -> Session:
    """A session that has not said HELLO yet."""
    return Session(peer=f"127.0.0.1:{abs(hash(machine)) % 60000}", **kw)


HELLO = {"product": "XMLSpy", "version": "2025r2", "host": "ws1"}


def hello(role: Any, machine: str = "m1", **args: str) -> Session:
    """A session of ``machine`` that said HELLO successfully."""
    s = session(machine)
    fields = {**HELLO, "machine": machine, **args}
    d = run(role.hello(s, fields))
    failures: list[Any] = []
    d.addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    return s


def makeSwitch(store: FakeStore, clock: Clock, endpoint: Any = None, role: str = "primary") -> Any:
    """A started RoleSwitch over a fake store whose failovers reach ``endpoint``."""
    from licenseserver.roles.failover import FailoverRole
    from licenseserver.switch import RoleSwitch

    def build(name: str, primary: str | None) -> Any:
        common = dict(
            clock=clock,
            serverName="ls1",
            advertise="ls1.example.com:35355",
            leaseTTL=120,
            trustedKeys=TRUSTED,
            settingDefaults=SETTING_DEFAULTS,
        )
        if name == "failover":
            return FailoverRole(
                store,
                primaryEndpoint=endpoint,
                primaryAddress=primary,
                heartbeat=1.0,
                takeoverAfter=5.0,
                peerSecret="secret",
                **common,
            )
        return PrimaryRole(store, peerSecret="secret", **common)

    switch = RoleSwitch(build, role, "ls0:35355" if role == "failover" else None)
    switch.startService()
    return switch
