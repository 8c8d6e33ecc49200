"""Optimistic concurrency for versioned objects (governance policies, assistants).

Responses carry the object's version as an ``ETag`` (``"7"``). A client that sends it back as
``If-Match`` on a change gets the change only if nobody else changed the object in between,
and ``412 version_mismatch`` otherwise; without ``If-Match`` concurrent changes still never
clash (they are applied one after the other, each to the result of the one before).
"""

from __future__ import annotations

from starlette.requests import Request

from concierge.errors import InvalidRequest


def if_match(request: Request) -> int | None:
    """The version ``If-Match`` names (None: absent, or ``*``)."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 12:
        raise InvalidRequest(
            'If-Match must be a version this server gave as ETag, like "3"', param="If-Match"
        )
    return int(value)


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}
