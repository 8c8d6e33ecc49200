"""The running server a request reached, typed, for the routes (one place, not one per module)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import Request

if TYPE_CHECKING:
    from concierge.app import Concierge


def concierge(request: Request) -> Concierge:
    """The :class:`~concierge.app.Concierge` serving ``request`` (``Concierge.app`` sets it;
    the widget's sub-application gets the same one)."""
    return cast("Concierge", request.app.state.concierge)
