"""Usage history: seats in use and refused requests per license, by the minute, hour and day.

``Recorder`` aggregates in memory, with no I/O and no clock of its own: the
role samples the seats in use of each license every ``SAMPLE_EVERY``
seconds and tells it of each refused request; once a minute is over, the
recorder gives the minute's rows (one per license: average and peak seats in
use, refused requests) and the refusals to write. A CHECKOUT pays only for
telling of a refusal (a list append). The store keeps the minute rows and
derives the hour and day rows from them (``store.usagejobs``); what a crash
loses is the minute under way.

``parse_query`` reads the admin API's ``step``, ``from`` and ``to``.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MINUTE = 60
HOUR = 3600
DAY = 86400

STEPS: dict[str, int] = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
"""The history's resolutions, by the name the API gives them."""
KEPT: dict[str, int | None] = {"1m": 15 * DAY, "1h": 401 * DAY, "1d": None}
"""How long each resolution is kept (None: for good); at least 14 and 400 days."""

SAMPLE_EVERY = 5.0
"""Seconds between two samples of the seats in use: a pass over the pool's leases, so that
a CHECKOUT pays nothing for the history (a peak shorter than this may go unseen)."""
MAX_DENIALS_PER_MINUTE = 1000
"""Refused requests kept one by one in a minute; more are counted, not listed."""
MAX_POINTS = 20_000
"""The most points one answer of ``/api/usage`` carries (a year of hours is 8,784)."""


@dataclass(frozen=True)
class Point:
    """One license's use in one interval: ``in_use`` the average seats in use, ``peak``
    the most, ``denials`` the refused requests of its product."""

    step: str
    license: str
    product: str
    t: int
    in_use: float
    peak: int
    denials: int


@dataclass(frozen=True)
class Denial:
    """A refused CHECKOUT or BORROW."""

    t: int
    product: str
    machine: str
    user: str
    reason: str


@dataclass(frozen=True)
class SeatTime:
    """The seconds one holder (machine and user) held a seat of a product in one UTC day."""

    day: int
    product: str
    machine: str
    user: str
    seconds: float


@dataclass
class _Minute:
    product: str
    total: int = 0
    samples: int = 0
    peak: int = 0
    denials: int = 0


@dataclass
class Recorder:
    """The minute under way (each license's samples, the refusals), and the minutes over
    that are still to be written."""

    minute: int | None = None
    licenses: dict[str, _Minute] = field(default_factory=dict)
    refused: list[Denial] = field(default_factory=list)
    held: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """The minute's seat time by (product, machine, user), in seconds."""
    ready: tuple[list[Point], list[Denial], list[SeatTime]] = field(
        default_factory=lambda: ([], [], [])
    )

    def sample(
        self,
        now: float,
        inUse: Mapping[str, tuple[str, int]],
        holders: Iterable[tuple[str, str, str]] = (),
        every: float = SAMPLE_EVERY,
    ) -> None:
        """Note the seats in use of each license (id to its product and count) at ``now``,
        and that each of ``holders`` (product, machine, user) held a seat for ``every``."""
        self._at(now)
        for license_id, (product, count) in inUse.items():
            minute = self._license(license_id, product)
            minute.total += count
            minute.samples += 1
            minute.peak = max(minute.peak, count)
        for holder in holders:
            self.held[holder] = self.held.get(holder, 0.0) + every

    def denied(self, now: float, denial: Denial, licenses: Iterable[str]) -> None:
        """Note a refused request for the licenses of its product (a count each) and, up to
        ``MAX_DENIALS_PER_MINUTE`` a minute, the refusal itself."""
        self._at(now)
        for license_id in licenses:
            self._license(license_id, denial.product).denials += 1
        if len(self.refused) < MAX_DENIALS_PER_MINUTE:
            self.refused.append(denial)

    def due(self, now: float) -> tuple[list[Point], list[Denial], list[SeatTime]]:
        """The rows, refusals and seat times of the minutes over at ``now``, to write once."""
        self._at(now)
        ready, self.ready = self.ready, ([], [], [])
        return ready

    def flush(self) -> tuple[list[Point], list[Denial], list[SeatTime]]:
        """What is still to write, the minute under way included (a clean stop)."""
        self._finish()
        ready, self.ready = self.ready, ([], [], [])
        return ready

    def _license(self, license_id: str, product: str) -> _Minute:
        minute = self.licenses.get(license_id)
        if minute is None:
            minute = self.licenses[license_id] = _Minute(product)
        return minute

    def _at(self, now: float) -> None:
        minute = int(now) // MINUTE * MINUTE
        if self.minute is not None and minute != self.minute:
            self._finish()
        if self.minute is None:
            self.minute = minute

    def _finish(self) -> None:
        if self.minute is None:
            return
        points, refused, held = self.ready
        day = self.minute // DAY * DAY
        held += [
            SeatTime(day, product, machine, user, seconds)
            for (product, machine, user), seconds in sorted(self.held.items())
        ]
        points += [
            Point(
                "1m",
                license_id,
                minute.product,
                self.minute,
                round(minute.total / minute.samples, 3) if minute.samples else 0.0,
                minute.peak,
                minute.denials,
            )
            for license_id, minute in sorted(self.licenses.items())
        ]
        refused += self.refused
        self.minute, self.licenses, self.refused, self.held = None, {}, [], {}


class QueryError(ValueError):
    """A usage query the API answers with 400 and this message."""


@dataclass(frozen=True)
class Query:
    step: str
    since: int
    until: int


def parse_time(text: str, name: str) -> int:
    """An ISO 8601 date or date and time (UTC unless it says otherwise) as a Unix time."""
    try:
        if len(text) == 10:
            moment = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
        else:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
    except ValueError:
        raise QueryError(
            f"{name} must be an ISO 8601 date or time (2026-12-01 or 2026-12-01T08:00Z),"
            f" not {text[:40]!r}"
        ) from None
    return calendar.timegm(moment.utctimetuple())


def parse_query(args: Mapping[str, str], now: int) -> Query:
    """``step`` (``1m``, ``1h`` or ``1d``, default ``1h``), ``from`` and ``to`` (default:
    the last day to now), checked: ``from`` before ``to``, within what ``step`` keeps,
    and at most ``MAX_POINTS`` points."""
    step = args.get("step", "1h")
    if step not in STEPS:
        raise QueryError(f"step must be one of {', '.join(STEPS)}, not {step[:20]!r}")
    until = parse_time(args["to"], "to") if "to" in args else now
    since = parse_time(args["from"], "from") if "from" in args else until - DAY
    if since >= until:
        raise QueryError("from must be before to")
    kept = KEPT[step]
    if kept is not None and since < now - kept:
        days = kept // DAY - 1
        raise QueryError(
            f"the {step} history goes back {days} days: ask for a coarser step or a later from"
        )
    if (until - since) // STEPS[step] > MAX_POINTS:
        raise QueryError(f"more than {MAX_POINTS} points: ask for a coarser step or less time")
    return Query(step, since, until)


def encode_rows(
    points: Iterable[Point], denials: Iterable[Denial], held: Iterable[SeatTime]
) -> list[bytes]:
    """The lines of a ``USAGE`` answer (protocol.md): one compact JSON object each."""
    lines = []
    for kind, rows in (("point", points), ("denial", denials), ("held", held)):
        for row in rows:
            body = {"kind": kind, **dataclasses.asdict(row)}
            lines.append(
                json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            )
    return lines


_KINDS = {"point": Point, "denial": Denial, "held": SeatTime}


def decode_rows(lines: Iterable[bytes]) -> tuple[list[Point], list[Denial], list[SeatTime]]:
    """The rows of a ``USAGE`` answer's lines; ``ValueError`` for a line that is not one."""
    out: dict[str, list[Any]] = {kind: [] for kind in _KINDS}
    for line in lines:
        body = json.loads(line)
        if not isinstance(body, dict) or body.get("kind") not in _KINDS:
            raise ValueError("a USAGE line is not a usage row")
        kind = body.pop("kind")
        cls = _KINDS[kind]
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(body) != sorted(names):
            raise ValueError(f"a USAGE {kind} row has the fields {sorted(body)}")
        row = cls(**body)
        for f in dataclasses.fields(cls):
            value = getattr(row, f.name)
            wanted = (
                (int, float) if f.type in ("float",) else (str,) if f.type == "str" else (int,)
            )
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"a USAGE {kind} row's {f.name} is not a {f.type}")
        out[kind].append(row)
    return out["point"], out["denial"], out["held"]
