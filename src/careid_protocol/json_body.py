"""Reading a JSON request body with bounds: size first, then nesting depth, then parse.

Python's json module recurses once per nested array or object: ten kilobytes of `[`
raise RecursionError deep inside a request handler. Every JSON body the agent and the
broker accept goes through `loads_bounded`, which refuses a body over its size limit or
nested deeper than `max_depth` before parsing it, and refuses duplicate member names
and the non-JSON constants (NaN, Infinity) Python would otherwise accept.
"""

from __future__ import annotations

import json
from typing import Any

#: Deeper than any message of the contract (a token is an object of strings: depth 2).
MAX_DEPTH = 16


class JsonBodyError(ValueError):
    """The body is not JSON (or not UTF-8); the message says why."""


class HostileBodyError(JsonBodyError):
    """The body is too large or nested too deeply even to try parsing."""


def loads_bounded(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> object:
    """The parsed body, or JsonBodyError."""
    if len(raw) > max_bytes:
        raise HostileBodyError(f"body of {len(raw)} bytes (at most {max_bytes})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError("body is not UTF-8") from exc
    depth = nesting_depth(text)
    if depth > max_depth:
        raise HostileBodyError(f"nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise JsonBodyError(f"not JSON: {exc}") from exc


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text (brackets in strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
