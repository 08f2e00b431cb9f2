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
