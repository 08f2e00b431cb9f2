"""Addresses as command lines and the protocol write them: ``HOST[:PORT]`` and endpoint strings.

The one place that reads Twisted endpoint strings (``tcp:35355:interface=...``,
``ssl:...``, ``tcp:host=ls1:port=35355``): ``split_endpoint`` splits them as
Twisted does, and the functions below take what the server needs from them.
"""

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
    try:
        kind, positional, named = split_endpoint(text)
    except ValueError:
        return None
    if kind not in kinds:
        return None
    host = named.get("host") or (positional[0] if positional else "")
    port_text = named.get("port") or (positional[1] if len(positional) > 1 else "")
    if not host:
        return None
    if not port_text:
        return None if default_port is None else (host, default_port)
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        return None
    return host, int(port_text)


def server_port_interface(text: str) -> tuple[int, str] | None:
    """The port and interface (``""`` for every one) of a ``tcp:`` or ``ssl:`` server
    endpoint string; None for another kind or a string without a port number."""
    try:
        kind, positional, named = split_endpoint(text)
    except ValueError:
        return None
    if kind not in ("tcp", "ssl"):
        return None
    port = named.get("port") or (positional[0] if positional else "")
    if not (port.isascii() and port.isdigit()):
        return None
    return int(port), named.get("interface", "")


def split_endpoint(text: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint string's kind, positional fields and keyword fields, as Twisted splits them.

    ``:`` ends a field, the first ``=`` in a field ends its keyword, and a
    backslash takes the next character as it is (``\\:``, ``\\=``). Raises
    ``ValueError`` for a string that ends in a lone backslash.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    field: list[str] = []
    keyword: str | None = None
    characters = iter(text)

    def end_field() -> None:
        value = "".join(field)
        if keyword is None:
            args.append(value)
        else:
            kwargs[keyword] = value

    for char in characters:
        if char == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ValueError(f"{text!r} ends in a lone backslash")
            field.append(escaped)
        elif char == ":":
            end_field()
            field, keyword = [], None
        elif char == "=" and keyword is None:
            keyword, field = "".join(field), []
        else:
            field.append(char)
    end_field()
    return args[0], args[1:], kwargs
