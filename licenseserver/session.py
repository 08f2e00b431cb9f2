"""What the server knows about one licensing connection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Session:
    """One connection's identity: its address, and after HELLO its client.

    The protocol creates it on connect; the role fills in the HELLO fields.
    """

    peer: str = ""
    hello: bool = False
    client: str = ""
    machine: str = ""
    host: str = ""
    user: str = "-"
    product: str = ""
    version: str = ""
    cores: int = 1
    peer_name: str = ""
    """The failover's name once it said PEER (on a primary)."""
    challenge: str = ""
    """The nonce the failover must prove the secret over; used once."""
    peer_listen: str = ""
    """The address the failover tells clients to use."""
