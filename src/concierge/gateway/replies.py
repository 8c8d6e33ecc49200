"""Answering an HTTP request with an assistant's reply: whole, or streamed as Server-Sent Events.

Shared by ``/v1/assistants/.../messages``, ``model="assistant:<name>"`` on
``/v1/chat/completions`` and the web widget; each says how its events are spelled through a
:class:`Format`. As on the plain gateway, the response waits for the pipeline's first event: a
failure before it (unknown assistant, model down) is an ordinary HTTP error and nothing is
stored; after it, a failure is an SSE ``error`` event. The request is metered once, however it
ends; a client that goes away stops the model and the partial reply is stored as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import anyio
from starlette.requests import Request
from starlette.responses import Response

from concierge.assistants.events import Completed, Delta, ReplyEvent
from concierge.errors import ConciergeError
from concierge.gateway.disconnect import ClientDisconnected, until_disconnect
from concierge.gateway.responses import AI_HEADERS, JSON, EventStream
from concierge.gateway.state import concierge
from concierge.keys import ApiKey
from concierge.metering import Meter
from concierge.models.base import TokenCount, Usage, total

CLIENT_CLOSED = 499


class Format(Protocol):
    """How one entry point spells a reply."""

    def whole(self, completed: Completed) -> dict[str, Any]:
        """The JSON body of a non-streamed reply."""

    def event(self, event: ReplyEvent) -> bytes:
        """One SSE event (b"" to send nothing)."""

    def error(self, exc: ConciergeError) -> bytes:
        """The SSE event for a failure after the stream began."""


def _usage(completed: Completed | None, spent: list[TokenCount]) -> Usage:
    """What the reply cost: as stored, or, for one that never completed (the client left,
    the model broke off), the tokens its model calls had read and written by then."""
    if completed is not None and completed.reply is not None:
        return Usage(completed.reply.prompt_tokens, completed.reply.completion_tokens)
    return total(spent)


async def _close(events: AsyncGenerator[Any, None]) -> None:
    with anyio.CancelScope(shield=True):
        await events.aclose()


async def respond(
    request: Request,
    key: ApiKey,
    endpoint: str,
    events: AsyncGenerator[ReplyEvent, None],
    fmt: Format,
    *,
    stream: bool,
    spent: list[TokenCount],
) -> Response:
    """``spent``: the list the pipeline reports its model calls' token counts in (the one
    given to ``Runtime.reply``)."""
    meter: Meter = await concierge(request).metering.begin(key, endpoint, None)
    completed: Completed | None = None

    async def whole() -> Completed:
        async for event in events:
            if isinstance(event, Delta):
                meter.mark_first_token()
            elif isinstance(event, Completed):
                return event
        raise AssertionError("the pipeline ended without a Completed event")

    try:
        if stream:
            first = await until_disconnect(request.receive, anext(events))
            return EventStream(_stream(meter, events, first, fmt, spent), headers=AI_HEADERS)
        completed = await until_disconnect(request.receive, whole())
    except ClientDisconnected:
        await _close(events)
        await meter.finish(CLIENT_CLOSED, _usage(completed, spent))
        return Response(status_code=CLIENT_CLOSED)
    except BaseException as exc:
        await _close(events)
        await meter.fail(exc)
        raise
    reply = completed.reply
    await meter.finish(200, _usage(completed, spent), model=reply.model if reply else None)
    return JSON(fmt.whole(completed), headers=AI_HEADERS if completed.label else None)


async def _stream(
    meter: Meter,
    events: AsyncGenerator[ReplyEvent, None],
    first: ReplyEvent,
    fmt: Format,
    spent: list[TokenCount],
) -> AsyncGenerator[bytes, None]:
    status = 200
    completed: Completed | None = None
    try:
        event: ReplyEvent | None = first
        while event is not None:
            if isinstance(event, Delta):
                meter.mark_first_token()
            elif isinstance(event, Completed):
                completed = event
            out = fmt.event(event)
            if out:
                yield out
            event = await anext(events, None)
    except ConciergeError as exc:
        status = exc.status
        yield fmt.error(exc)
    except (asyncio.CancelledError, GeneratorExit):
        status = CLIENT_CLOSED
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await events.aclose()
            reply = completed.reply if completed else None
            usage = _usage(completed, spent)
            await meter.finish(status, usage, model=reply.model if reply else None)
