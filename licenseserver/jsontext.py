"""Compact, key-sorted JSON text, from encoders made once.

``json.JSONEncoder.encode`` builds a new C encoder, and a dictionary to
catch cycles, on every call. The store and the audit log encode several
small values for every grant and release (a lease record, change-log keys,
an audit entry's data and kind), so they share encoders made once here,
which give the same text for a fraction of the cost. The values encoded are
records and request data, which hold no cycles, so the cycle check is left
out; a value that is not JSON still raises TypeError (or ValueError for a
NaN or an infinity when ``allow_nan`` is false), as ``json`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def compact_encoder(*, ensure_ascii: bool = True, allow_nan: bool = True) -> Callable[[Any], str]:
    """``json.JSONEncoder(sort_keys=True, separators=(",", ":"), ...).encode``, made once."""
    make = _encoder.c_make_encoder
    if make is None:  # a Python built without the json accelerator
        return json.JSONEncoder(
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=ensure_ascii,
            allow_nan=allow_nan,
        ).encode
    strings = _encoder.encode_basestring_ascii if ensure_ascii else _encoder.encode_basestring
    encode = make(None, _refuse, strings, None, ":", ",", True, False, allow_nan)

    def text(value: Any) -> str:
        return "".join(encode(value, 0))

    return text
