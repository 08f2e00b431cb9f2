"""Reading JSON that came from outside: license files and admin API bodies.

``json.loads`` takes a key given twice (the last one wins, so a text can show
one value and mean another), ``NaN`` and ``Infinity``, lone surrogates
(``"\\ud800"``, which no store or hash can take), and nesting until Python's
recursion limit, where it raises ``RecursionError`` instead of a
``ValueError``. ``loads`` refuses all of them with a ``ValueError`` whose text
says what is wrong, and refuses nesting deeper than ``MAX_DEPTH`` so that
nothing that walks the value later can recurse without bound.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""How deep arrays and objects may nest in JSON from outside (a license file needs 4)."""


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` as JSON; raise ``ValueError`` for anything ``json`` would misread.

    Bytes must be UTF-8 (a byte-order mark is dropped). The errors are
    ``json.JSONDecodeError`` for bad syntax (it is a ``ValueError``) and a
    plain ``ValueError`` for bad UTF-8, a repeated key, a non-number constant,
    an integer over Python's digit limit, and nesting deeper than ``max_depth``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 text ({e.reason})") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_without_duplicate_keys, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise ValueError(f"arrays and objects nest deeper than {max_depth} levels") from None
    if _depth(value) > max_depth:
        raise ValueError(f"arrays and objects nest deeper than {max_depth} levels")
    return value


def _check_text(text: str) -> None:
    """Refuse a lone surrogate (``"\\ud800"``): it is no character, has no UTF-8, and
    could be neither stored nor hashed into the audit log."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        message = f"text {text[:40]!r} holds a lone surrogate, which is no character"
        raise ValueError(message) from None


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        _check_text(key)
        if key in result:
            raise ValueError(f"field {key!r} appears twice in one object")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str):
                _check_text(item)
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
