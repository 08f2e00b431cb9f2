"""Charts as SVG, drawn on the server: the Usage tab works without JavaScript.

Pure functions from numbers to ``twisted.web.template`` tags. Each point or
bar carries a ``<title>``, which browsers show on hover. Sizes are in the
SVG's own units; the page's style sheet scales the chart to its box.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.web.template import Tag

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 1200
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
"""Room for the axis labels."""


@dataclass(frozen=True)
class Sample:
    """One interval of a product's use: its start, average and peak seats in use, refusals."""

    t: int
    in_use: float
    peak: int
    denials: int


def when(t: int, step: int) -> str:
    """An interval's start for a label: the date, with the time for steps below a day."""
    shape = "%Y-%m-%d" if step >= 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(shape, time.gmtime(t)) + ("" if step >= 86400 else " UTC")


def _svg(label: str, *children: Tag) -> Tag:
    return Tag("svg")(
        *children,
        xmlns=SVG_NS,
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        role="img",
        preserveAspectRatio="none",
        **{"aria-label": label, "class": "chart"},
    )


def _scale(since: int, until: int, top: float):
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + (t - since) / max(1, until - since) * width, 1)

    def y(value: float) -> float:
        return round(TOP + height - value / max(top, 1) * height, 1)

    return x, y


def _axes(since: int, until: int, top: float, step: int) -> list[Tag]:
    """The frame, the value axis at 0 and at its top, and the times at both ends."""
    x, y = _scale(since, until, top)
    bottom = HEIGHT - BOTTOM
    return [
        Tag("line")(
            x1=str(LEFT),
            y1=str(bottom),
            x2=str(WIDTH - RIGHT),
            y2=str(bottom),
            **{"class": "axis"},
        ),
        Tag("line")(x1=str(LEFT), y1=str(TOP), x2=str(LEFT), y2=str(bottom), **{"class": "axis"}),
        Tag("text")("0", x=str(LEFT - 6), y=str(bottom), **{"class": "label end"}),
        Tag("text")(f"{top:g}", x=str(LEFT - 6), y=str(y(top) + 10), **{"class": "label end"}),
        Tag("text")(when(since, step), x=str(LEFT), y=str(HEIGHT - 8), **{"class": "label"}),
        Tag("text")(
            when(until, step), x=str(WIDTH - RIGHT), y=str(HEIGHT - 8), **{"class": "label end"}
        ),
    ]


def seats_chart(samples: Sequence[Sample], seats: int, since: int, until: int, step: int) -> Tag:
    """Seats in use, average and peak per interval, against the licensed ``seats``."""
    top = max([seats, *(s.peak for s in samples), 1])
    x, y = _scale(since, until, top)
    children = _axes(since, until, top, step)
    children.append(
        Tag("line")(
            x1=str(LEFT),
            y1=str(y(seats)),
            x2=str(WIDTH - RIGHT),
            y2=str(y(seats)),
            **{"class": "licensed"},
        )(Tag("title")(f"{seats} seats licensed"))
    )
    for name, value in (("peak", lambda s: s.peak), ("average", lambda s: s.in_use)):
        line = " ".join(f"{x(s.t + step / 2)},{y(value(s))}" for s in samples)
        children.append(Tag("polyline")(points=line, **{"class": f"series {name}"}))
    for s in samples:
        children.append(
            Tag("circle")(
                cx=str(x(s.t + step / 2)), cy=str(y(s.peak)), r="3", **{"class": "point"}
            )(
                Tag("title")(
                    f"{when(s.t, step)}: {s.in_use:g} in use on average, at most {s.peak}"
                    f" of {seats} seats"
                )
            )
        )
    return _svg(f"seats in use against {seats} licensed", *children)


def denials_chart(samples: Sequence[Sample], since: int, until: int, step: int) -> Tag:
    """Refused requests per interval, as bars."""
    top = max([*(s.denials for s in samples), 1])
    x, y = _scale(since, until, top)
    children = _axes(since, until, top, step)
    width = max(1.0, x(since + step) - x(since) - 1)
    for s in samples:
        if not s.denials:
            continue
        children.append(
            Tag("rect")(
                x=str(x(s.t)),
                y=str(y(s.denials)),
                width=f"{width:.1f}",
                height=f"{y(0) - y(s.denials):.1f}",
                **{"class": "bar"},
            )(Tag("title")(f"{when(s.t, step)}: {s.denials} refused"))
        )
    return _svg("refused requests", *children)
