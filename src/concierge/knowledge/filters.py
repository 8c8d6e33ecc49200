"""Metadata filters for search, compiled once into a predicate over a document's metadata.

Two spellings are accepted:

* a flat map, every pair of which must match exactly: ``{"lang": "en", "year": 2024}``;
* OpenAI's vector store filters: a comparison ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|
  "in"|"nin", "key": ..., "value": ...}``, or a compound ``{"type": "and"|"or",
  "filters": [...]}`` of them, nested as deep as needed.

A comparison between values that cannot be ordered (a number and a string, say) is false,
never an error: documents' metadata is free-form.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from concierge.errors import InvalidRequest

Predicate = Callable[[Mapping[str, Any]], bool]
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
COMPARISONS = ("eq", "ne", *_ORDER, "in", "nin")
MAX_DEPTH = 8


def is_structured(spec: Mapping[str, Any]) -> bool:
    kind = spec.get("type")
    if kind in COMPARISONS:
        return set(spec) <= {"type", "key", "value"}
    if kind in ("and", "or"):
        return set(spec) <= {"type", "filters"}
    return False


def compile_filter(spec: Mapping[str, Any] | None) -> Predicate | None:
    """A predicate for ``spec`` (None for no filter); 400 for a malformed one."""
    if not spec:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidRequest("filters must be an object", param="filters")
    if is_structured(spec):
        return _structured(spec, 0)
    pairs = dict(spec)
    for key, value in pairs.items():
        if isinstance(value, dict | list):
            raise InvalidRequest(
                f"filter '{key}': a flat filter compares to a string, number or boolean",
                param="filters",
            )
    return lambda meta: all(key in meta and meta[key] == v for key, v in pairs.items())


def _structured(spec: Mapping[str, Any], depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"filters nest deeper than {MAX_DEPTH} levels", param="filters")
    kind = spec.get("type")
    if kind in ("and", "or"):
        children = spec.get("filters")
        if not isinstance(children, list) or not children:
            raise InvalidRequest(f"an '{kind}' filter needs a list of filters", param="filters")
        parts = []
        for child in children:
            if not isinstance(child, Mapping) or not is_structured(child):
                raise InvalidRequest(
                    "each filter is a comparison (type, key, value) or a compound (type, filters)",
                    param="filters",
                )
            parts.append(_structured(child, depth + 1))
        if kind == "and":
            return lambda meta: all(p(meta) for p in parts)
        return lambda meta: any(p(meta) for p in parts)
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("a comparison filter needs a key (a string)", param="filters")
    if kind in ("in", "nin"):
        if not isinstance(value, list):
            raise InvalidRequest(f"an '{kind}' filter compares to a list", param="filters")
        options = list(value)
        if kind == "in":
            return lambda meta: key in meta and meta[key] in options
        return lambda meta: key not in meta or meta[key] not in options
    if isinstance(value, dict | list) or value is None:
        raise InvalidRequest(
            f"a '{kind}' filter compares to a string, number or boolean", param="filters"
        )
    if kind == "eq":
        return lambda meta: key in meta and meta[key] == value
    if kind == "ne":
        return lambda meta: key not in meta or meta[key] != value
    compare = _ORDER[str(kind)]

    def ordered(meta: Mapping[str, Any]) -> bool:
        if key not in meta:
            return False
        try:
            return bool(compare(meta[key], value))
        except TypeError:
            return False

    return ordered
