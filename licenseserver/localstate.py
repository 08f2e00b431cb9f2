"""Names of the local values a data directory keeps: this server's own, never synced.

They live in the store's ``local`` table next to the synced pool. Some belong
to every server (version, role), some to a failover (what it knows of its
primary), one to a primary (its failover's address). A name that ends in ``:`` is
the prefix of a family of notes, one per lease: setting it to None removes them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SERVER_VERSION = "server_version"
"""The server version that last upgraded (or created) the directory."""
ROLE = "role"
"""The server's role, ``primary`` or ``failover``, however it was chosen."""
PRIMARY = "primary"
"""A failover's primary: ``HOST[:PORT]`` or a client endpoint string."""
PRIMARY_CA = "primary_ca"
"""The ``--primary-ca`` file a failover's link to its primary trusts (absolute), or None."""

LAST_SYNC = "last_sync"
"""A failover's time of its last completed sync; unset until the first one."""
PRIMARY_NAME = "primary_name"
PRIMARY_VERSION = "primary_version"
"""The version the failover's primary ran when it last answered."""
PRIMARY_EDITION = "primary_edition"
"""The edition the failover's primary ran when it last answered."""
DIVERGED = "diverged_at"
"""Set while a failover holds data of its own that the next sync must replace whole."""

FAILOVER_ADDRESS = "failover_address"
"""A primary's last paired failover, which it tells clients."""
ALIVE_AT = "primary_alive_at"
"""When this primary last noted that it runs (every ``ALIVE_EVERY`` s of ``roles.primary``)."""
STOPPED_AT = "primary_stopped_at"
"""When this primary stopped cleanly; cleared as it starts."""
REMOVED = "removed_unacknowledged:"
"""The prefix of a primary's notes of the leases of exact licenses removed since its
failover last acknowledged a sync: one value per lease, named ``REMOVED`` and its id,
``[revision, lease record, how]``. In a cut they still count, since the failover may hold
them. Noted before the removal is written (one note per removal, so that a busy primary
writes little), and removed once the failover acknowledges it; a stale note only counts
more, until the failover acknowledges again."""
REMOVED_LIST = "removed_unacknowledged"
"""The same notes as one list, as version 1.0 kept them: read once at the start."""
USAGE_SYNCED = "usage_synced"
"""Where a failover's next ``USAGE`` sync of the primary's usage history starts (a Unix
time, the end of the last minute it holds); set with the rows, in the same write."""
UNCONFIRMED = "unconfirmed_grant:"
"""The prefix of a primary's notes of its grants of the last seats of exact licenses
(FAILOVER.md rule 16) whose answer waits for the failover's acknowledgement: one value
per lease, named ``UNCONFIRMED`` and its id, noted before the grant is written and
removed before its answer goes out (one note per grant: a busy primary rewrites no list
per grant). A primary that starts with some withdraws them: no client was told it holds
them."""
UNCONFIRMED_LIST = "unconfirmed_grants"
"""The same notes as one list of lease ids, as version 1.0 kept them: read once at the
start."""

TAKEOVER_HELD = "takeover_held"
"""What an active failover's exact partition limits count from (FAILOVER.md rule 17):
``{"at": T, "live": [lease ids]}``, its takeover time and the synced leases live then.
Kept from the first takeover until the pool of that takeover is put back."""
ENDED = "ended_while_serving:"
"""The prefix of an active failover's notes of the leases that ended there: one value per
lease, named ``ENDED`` and its id, ``[how, last end]``, ``how`` being ``released`` or
``expired``; what its merge tells the primary (FAILOVER.md rule 14). Noted before the
removal is written (one note per removal: a long takeover writes no growing list), and
cleared with the takeover's notes."""
ENDED_WHILE_SERVING = "ended_while_serving"
"""The same notes as one dict by lease id, as version 1.0 kept them: read once at the
start."""
SERVED = "served_report"
"""A failover's time serving not yet reported to its primary:
``{"from", "until", "grants", "takeovers"}`` (``until`` is None while it serves)."""


def role_change(
    old_role: str | None, old_primary: str | None, role: str, primary: str | None
) -> dict[str, Any]:
    """The local values to set when a server becomes ``role`` (of ``primary``).

    A server that becomes the failover of a primary it did not mirror before
    holds data that is not that primary's: it forgets what it knew of a
    primary, and what it served for one, and marks its data to be replaced by
    the first sync.
    """
    values: dict[str, Any] = {ROLE: role, PRIMARY: primary}
    if role == "failover" and (old_role != "failover" or old_primary != primary):
        values.update(
            {
                LAST_SYNC: None,
                PRIMARY_NAME: None,
                PRIMARY_VERSION: None,
                PRIMARY_EDITION: None,
                SERVED: None,
                TAKEOVER_HELD: None,
                ENDED_WHILE_SERVING: None,
                ENDED: None,
                UNCONFIRMED: None,
                UNCONFIRMED_LIST: None,
                REMOVED: None,
                REMOVED_LIST: None,
                USAGE_SYNCED: None,
                DIVERGED: 0,
            }
        )
    return values


async def load_family(
    store: Any, prefix: str, older: str, members: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """The notes of the family ``prefix``, by the lease id that ends their names.

    Version 1.0 kept such notes as one value named ``older``; ``members`` turns that
    value into notes by lease id. Found, it is converted: its notes are written one by
    one before it is removed, so that a stop in between loses none.
    """
    notes = await store.getLocals(prefix)
    found = {name[len(prefix) :]: note for name, note in notes.items()}
    kept = await store.getLocal(older)
    if kept is not None:
        for lease_id, note in members(kept).items():
            found[lease_id] = note
            await store.setLocal(prefix + lease_id, note)
        await store.setLocal(older, None)
    return found
