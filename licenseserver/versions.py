"""Product version parsing and ordering.

Two schemes are in use: release years (``2015``, ``2015r3``, ``2024r2sp1``)
and dotted numbers (``1.5``, ``9.0.1``). Both parse to a tuple of integers
that compares the way people expect: a bare year is release 1 of that year
(``2016 == 2016r1 < 2016r2``), a service pack follows its release, and
missing dotted parts are zeros (``1.5 == 1.5.0``). A year version compares
above any dotted version below 1000, which keeps one total order for tables
such as the failover minimums, where products of both schemes meet.
"""

from __future__ import annotations

import re
from functools import total_ordering

_YEAR = re.compile(r"(\d{4})(?:r(\d{1,4}))?(?:sp(\d{1,4}))?", re.IGNORECASE | re.ASCII)
_DOTTED = re.compile(r"\d{1,9}(?:\.\d{1,9}){0,5}", re.ASCII)


class VersionError(ValueError):
    """A string that is not a product version."""


@total_ordering
class Version:
    """A parsed product version; ``str()`` gives back the text it came from."""

    __slots__ = ("text", "parts")

    def __init__(self, text: str):
        match = _YEAR.fullmatch(text)
        if match:
            year, release, sp = match.groups()
            parts = [int(year), int(release or 1), int(sp or 0)]
        elif _DOTTED.fullmatch(text):
            parts = [int(p) for p in text.split(".")]
        else:
            raise VersionError(f"not a product version: {text!r}")
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        self.text = text
        self.parts = tuple(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.parts == other.parts

    def __lt__(self, other: Version) -> bool:
        return self.parts < other.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def parse(text: str) -> Version:
    """Parse ``text``; raise ``VersionError`` when it is no product version."""
    return Version(text)


def is_valid(text: str) -> bool:
    """Whether ``text`` parses as a product version."""
    try:
        Version(text)
    except VersionError:
        return False
    return True


def meets_minimum(product: str, version: str, minimums: dict[str, str]) -> bool:
    """Whether ``version`` of ``product`` is at or above its minimum.

    ``minimums`` maps product names to minimum versions; the key ``*`` holds
    the minimum of every product not named. A version that does not parse
    does not meet any minimum.
    """
    minimum = minimums.get(product, minimums.get("*"))
    if minimum is None:
        return True
    try:
        return Version(version) >= Version(minimum)
    except VersionError:
        return False
