"""Compact, key-sorted JSON text for the store, from encoders made once.

The store encodes several small values for every grant and release (a lease
record, change-log keys and rows, JSON columns), so it keeps one
``json.JSONEncoder`` per kind of text rather than passing options to
``json.dumps`` each time. ``JSONEncoder.encode`` still builds ``json``'s C
encoder on every call, which is ``json``'s own business: this module uses
``json``'s public API only. The values encoded are records and request data,
which hold no cycles, so the cycle check is left out; a value that is not
JSON raises TypeError (or ValueError for a NaN or an infinity when
``allow_nan`` is false), as ``json`` does.

What the store writes with these is parsed back, never hashed, so its text
may change with Python without harm. The audit chain's hashed text is not
made here: ``audit.py`` defines it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def compact_encoder(*, ensure_ascii: bool = True, allow_nan: bool = True) -> Callable[[Any], str]:
    """``json.JSONEncoder(sort_keys=True, separators=(",", ":"), ...).encode``, made once.

    A tuple of one string, which most change-log keys are, is put together
    around the string's own text: ``encode`` writes a string without building
    the C encoder, a container with it (a microsecond more on this machine).
    """
    encode = json.JSONEncoder(
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=ensure_ascii,
        allow_nan=allow_nan,
        check_circular=False,
    ).encode

    def text(value: Any) -> str:
        if type(value) is tuple and len(value) == 1 and type(value[0]) is str:
            return f"[{encode(value[0])}]"
        return encode(value)

    return text
