"""Regular expressions this code did not write, run in a linear-time engine.

Python's ``re`` backtracks: a pattern like ``(a+)+$`` takes exponential time on a string of
``a``s followed by one ``b``, and it holds the interpreter lock while it does, so one message
freezes the whole server. Every pattern that comes from outside this code (an operator's
moderation patterns, the ``pattern`` keywords of a tool's JSON Schema) is compiled with RE2
(``google-re2``), whose matching time is linear in the input. RE2 has no backreferences and no
lookaround; a pattern that needs them is refused when it is set, with the reason.

Patterns that this code wrote and that read untrusted input in bulk (labels found in uploaded
files) use RE2 too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry

MAX_PATTERN_MEMORY = 8 * 1024 * 1024  # bytes RE2 may use for one compiled pattern


class PatternError(ValueError):
    """A pattern RE2 cannot run (a syntax it lacks, or too large)."""


def _options(ignore_case: bool, dot_all: bool) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_PATTERN_MEMORY
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_all
    return options


@lru_cache(maxsize=1024)
def compile(pattern: str | bytes, *, ignore_case: bool = False, dot_all: bool = False) -> Any:
    """``pattern`` compiled by RE2; :class:`PatternError` with the reason if it cannot be."""
    try:
        return re2.compile(pattern, _options(ignore_case, dot_all))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "not a valid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(
            f"{pattern!r} cannot be used: {reason} (patterns run in RE2, without "
            "backreferences or lookaround, so that no input can make them slow)"
        ) from None


def check(pattern: str) -> str:
    """``pattern``, if RE2 can run it (a validator for settings and policies)."""
    compile(pattern)
    return pattern


# -- JSON Schema validation with RE2 for "pattern" and "patternProperties" -------------------


def _schema_patterns(schema: Any) -> Iterator[str]:
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, Mapping):
                yield from (k for k in value if isinstance(k, str))
                for sub in value.values():
                    yield from _schema_patterns(sub)
            else:
                yield from _schema_patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _schema_patterns(item)


def _references(schema: Any) -> Iterator[str]:
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _references(item)


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a JSON Schema that is not one, whose patterns RE2 cannot run, or that refers to
    anything outside itself (a remote ``$ref`` would be fetched: a request the egress policy
    never sees)."""
    Draft202012Validator.check_schema(schema)
    for pattern in _schema_patterns(schema):
        compile(pattern)
    for reference in _references(schema):
        if not reference.startswith("#"):
            raise PatternError(
                f"refers to {reference[:200]!r}: only references within the schema itself "
                "(#/...) are allowed"
            )


def validator(schema: Mapping[str, Any]) -> Any:
    """A validator for ``schema`` that never fetches anything: references resolve within the
    schema or not at all (``referencing.exceptions.Unresolvable``)."""
    return SchemaValidator(schema, registry=Registry())


def _pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = compile(pattern)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


SchemaValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties},
)
"""Draft 2020-12 validation with RE2 where the standard validator uses Python's ``re``."""
