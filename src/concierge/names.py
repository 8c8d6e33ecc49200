"""Names that share a path segment with ids: ``/v1/knowledge_bases/{id or name}``.

A segment of ASCII digits is an id, so a name may not be only digits. ``str.isdigit`` is not
used: it also takes '²', which ``int`` refuses. More than 18 digits cannot be a row id (SQLite
integers would overflow) and is taken as a name.
"""

from __future__ import annotations

from concierge.errors import InvalidRequest

MAX_NAME = 200


def is_row_id(ref: str) -> bool:
    return ref.isascii() and ref.isdigit() and len(ref) <= 18


def validate_name(name: str, what: str) -> str:
    """``name`` stripped, or :class:`InvalidRequest` saying what a ``what`` name must be."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise InvalidRequest(
            f"{what} name has 1-{MAX_NAME} characters and no control characters", param="name"
        )
    if is_row_id(name):
        raise InvalidRequest(f"{what} name cannot be only digits (those are ids)", param="name")
    return name
