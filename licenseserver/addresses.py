"""``HOST[:PORT]`` addresses as the command lines and the protocol write them."""

from __future__ import annotations

import re

DEFAULT_PORT = 35355
"""The licensing port."""

_HOST_PORT = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-_]+))(?::([0-9]{1,5}))?")


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int] | None:
    """``HOST[:PORT]`` (or ``[v6]:PORT``) as (host, port); None when it is not one."""
    match = _HOST_PORT.fullmatch(text)
    if not match:
        return None
    host = match.group(1) or match.group(2)
    port = int(match.group(3)) if match.group(3) else default_port
    if not 1 <= port <= 65535:
        return None
    return host, port


def format_host_port(host: str, port: int | str) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def display_address(text: str, default_port: int = DEFAULT_PORT) -> str:
    """The ``HOST:PORT`` of a primary given as ``HOST[:PORT]`` or as a client endpoint string.

    Status pages, the admin API and standby answers name a primary this way,
    whichever form the admin used (``ls1``, ``tcp:host=ls1:port=35355``, an
    ``ssl:`` endpoint with its options). Text that names no host is shown as given.
    """
    parsed = parse_host_port(text, default_port)
    if parsed is None:
        parsed = endpoint_host_port(text, default_port)
    return text if parsed is None else format_host_port(*parsed)


def endpoint_host_port(
    text: str,
    default_port: int | None = DEFAULT_PORT,
    kinds: tuple[str, ...] = ("tcp", "ssl", "tls"),
) -> tuple[str, int] | None:
    """Host and port of a client endpoint string of one of ``kinds``; None for others.

    A string without a port gets ``default_port``, or None when that is None
    (as Twisted itself, which needs the port, would refuse it).
    """
    kind, *fields = _endpoint_fields(text)
    if kind not in kinds:
        return None
    named = dict(field.split("=", 1) for field in fields if "=" in field)
    positional = [field for field in fields if "=" not in field]
    host = named.get("host") or (positional[0] if positional else "")
    port_text = named.get("port") or (positional[1] if len(positional) > 1 else "")
    if not host:
        return None
    if not port_text:
        return None if default_port is None else (host, default_port)
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        return None
    return host, int(port_text)


def _endpoint_fields(text: str) -> list[str]:
    """An endpoint string split at its colons; ``\\:`` is a colon inside a field."""
    fields, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields
