"""The usage history's tables and SQL (``licenseserver.usage``): writes, reads, trimming.

Minute rows come from the role's ``usage.Recorder``; each write derives the
hour and day rows of the hours and days it touched from the finer rows, so
they are always up to date, however the minutes came (a restart in the middle
of an hour included). ``minutes`` is how many minutes a row averages over: the
minutes the server ran. The SQLite store runs these on its writer thread; the
``FakeStore`` of the tests on an in-memory database, with the same SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from licenseserver.usage import DAY, HOUR, KEPT, MINUTE, STEPS, Denial, Point, SeatTime

DENIALS_KEPT = KEPT["1m"]
"""Refused requests are kept as long as the minute rows."""
SEAT_TIME_KEPT = KEPT["1h"]
"""Each holder's seat time by the day is kept as long as the hour rows."""

CREATE = (
    """CREATE TABLE usage (
        step TEXT NOT NULL,
        license TEXT NOT NULL,
        t INTEGER NOT NULL,
        product TEXT NOT NULL,
        in_use REAL NOT NULL,
        peak INTEGER NOT NULL,
        denials INTEGER NOT NULL,
        minutes INTEGER NOT NULL,
        PRIMARY KEY (step, license, t)
    )""",
    "CREATE INDEX usage_by_time ON usage (step, t)",
    """CREATE TABLE denials (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        t INTEGER NOT NULL,
        product TEXT NOT NULL,
        machine TEXT NOT NULL,
        user TEXT NOT NULL,
        reason TEXT NOT NULL
    )""",
    "CREATE INDEX denials_by_time ON denials (t)",
    """CREATE TABLE seat_time (
        day INTEGER NOT NULL,
        product TEXT NOT NULL,
        machine TEXT NOT NULL,
        user TEXT NOT NULL,
        seconds REAL NOT NULL,
        PRIMARY KEY (day, product, machine, user)
    )""",
)

_UPSERT = "INSERT OR REPLACE INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in CREATE:
        conn.execute(statement)


def add_usage(
    conn: sqlite3.Connection,
    points: Sequence[Point],
    denials: Sequence[Denial],
    now: int,
    held: Sequence[SeatTime] = (),
) -> None:
    """Write minute rows and refusals, and add the seat times to their days; bring the hour
    and day rows they touch up to date; drop what is older than each resolution keeps."""
    conn.executemany(
        "INSERT INTO seat_time VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, product, machine, user)"
        " DO UPDATE SET seconds = seconds + excluded.seconds",
        [(h.day, h.product, h.machine, h.user, h.seconds) for h in held],
    )
    conn.executemany(
        _UPSERT,
        [(p.step, p.license, p.t, p.product, p.in_use, p.peak, p.denials, 1) for p in points],
    )
    conn.executemany(
        "INSERT INTO denials (t, product, machine, user, reason) VALUES (?, ?, ?, ?, ?)",
        [(d.t, d.product, d.machine, d.user, d.reason) for d in denials],
    )
    for coarse, fine, length in (("1h", "1m", HOUR), ("1d", "1h", DAY)):
        touched = {(p.license, p.t // length * length) for p in points}
        for license_id, start in sorted(touched):
            _derive(conn, coarse, fine, license_id, start, length)
    trim(conn, now)


def _derive(
    conn: sqlite3.Connection, coarse: str, fine: str, license_id: str, start: int, length: int
) -> None:
    row = conn.execute(
        "SELECT product, SUM(in_use * minutes), MAX(peak), SUM(denials), SUM(minutes)"
        " FROM usage WHERE step = ? AND license = ? AND t >= ? AND t < ?",
        (fine, license_id, start, start + length),
    ).fetchone()
    product, area, peak, denials, minutes = row
    if not minutes:
        return
    average = round(area / minutes, 3)
    conn.execute(_UPSERT, (coarse, license_id, start, product, average, peak, denials, minutes))


def trim(conn: sqlite3.Connection, now: int) -> None:
    """Drop minute and hour rows older than they are kept, and old refusals."""
    for step, kept in KEPT.items():
        if kept is not None:
            conn.execute("DELETE FROM usage WHERE step = ? AND t < ?", (step, now - kept))
    conn.execute("DELETE FROM denials WHERE t < ?", (now - DENIALS_KEPT,))
    conn.execute("DELETE FROM seat_time WHERE day < ?", (now - SEAT_TIME_KEPT,))


def read_usage(
    conn: sqlite3.Connection, step: str, since: int, until: int, product: str | None
) -> list[Point]:
    """The rows of ``step`` from ``since`` (the interval that holds it) to before ``until``,
    of one product or all, by product, license and time."""
    start = since // STEPS[step] * STEPS[step]
    sql = (
        "SELECT step, license, product, t, in_use, peak, denials FROM usage"
        " WHERE step = ? AND t >= ? AND t < ?"
    )
    args: list = [step, start, until]
    if product is not None:
        sql += " AND product = ?"
        args.append(product)
    rows = conn.execute(sql + " ORDER BY product, license, t", args)
    return [Point(*row) for row in rows]


def read_denials(conn: sqlite3.Connection, since: int, until: int, limit: int) -> list[Denial]:
    """The refusals from ``since`` to before ``until``, newest first, at most ``limit``."""
    rows = conn.execute(
        "SELECT t, product, machine, user, reason FROM denials WHERE t >= ? AND t < ?"
        " ORDER BY t DESC, id DESC LIMIT ?",
        (since, until, limit),
    )
    return [Denial(*row) for row in rows]


def read_top(
    conn: sqlite3.Connection, product: str, since: int, until: int, by: str, limit: int
) -> list[tuple[str, float]]:
    """The ``machine``s or ``user``s (``by``) that held seats of ``product`` longest in the
    days from ``since``'s to before ``until``, with their seat hours, longest first."""
    if by not in ("machine", "user"):
        raise ValueError(f"by must be machine or user, not {by!r}")
    rows = conn.execute(
        f"SELECT {by}, SUM(seconds) / 3600.0 AS hours FROM seat_time"
        " WHERE product = ? AND day >= ? AND day < ?"
        f" GROUP BY {by} ORDER BY hours DESC, {by} LIMIT ?",
        (product, since // DAY * DAY, until, limit),
    )
    return [(name, round(hours, 2)) for name, hours in rows]


def read_since(
    conn: sqlite3.Connection, since: int
) -> tuple[list[Point], list[Denial], list[SeatTime], int]:
    """What a failover syncs (``USAGE``): the minute rows and refusals from ``since`` to the
    end of the last minute written, the seat time of the days they touch, and that end
    (``since`` when nothing newer is written), where the next sync starts."""
    (last,) = conn.execute("SELECT MAX(t) FROM usage WHERE step = '1m'").fetchone()
    if last is None or last < since:
        return [], [], [], since
    until = last + MINUTE
    points = read_usage(conn, "1m", since, until, None)
    denials = [
        Denial(*row)
        for row in conn.execute(
            "SELECT t, product, machine, user, reason FROM denials WHERE t >= ? AND t < ?"
            " ORDER BY t, id",
            (since, until),
        )
    ]
    held = [
        SeatTime(*row)
        for row in conn.execute(
            "SELECT day, product, machine, user, seconds FROM seat_time"
            " WHERE day >= ? AND day < ? ORDER BY day, product, machine, user",
            (since // DAY * DAY, until),
        )
    ]
    return points, denials, held, until


def apply_synced(
    conn: sqlite3.Connection,
    points: Sequence[Point],
    denials: Sequence[Denial],
    held: Sequence[SeatTime],
    now: int,
) -> None:
    """Take a ``USAGE`` answer: the primary's minute rows and refusals as written there, and
    its seat time of those days in place of this server's."""
    add_usage(conn, points, denials, now)
    conn.executemany(
        "INSERT OR REPLACE INTO seat_time VALUES (?, ?, ?, ?, ?)",
        [(h.day, h.product, h.machine, h.user, h.seconds) for h in held],
    )
