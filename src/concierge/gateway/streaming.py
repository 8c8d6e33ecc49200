"""One way to answer a request with a generation, whole or streamed, metered once.

Every generating endpoint (``/v1/chat/completions`` and ``/v1/completions`` on a model, an
assistant's reply through ``/v1/assistants/.../messages``, ``model="assistant:<name>"`` and
the web widget) hands :func:`respond` the metering it began, the generation's items and an
:class:`Answer` that says how that endpoint spells them. The rules live here only:

- the response waits for the first item: a failure before it (unknown model, context too
  long, upstream down) is an ordinary HTTP error, also for a streaming request;
- after it, a failure is an SSE ``error`` event (as OpenAI does);
- a client that goes away stops the generation (the items are closed) and the request is
  recorded with status 499 and the tokens spent so far;
- the meter is finished exactly once, however the request ends, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response

from concierge.errors import ConciergeError
from concierge.gateway.disconnect import ClientDisconnected, until_disconnect
from concierge.gateway.responses import JSON, EventStream
from concierge.metering import Meter
from concierge.models.base import Usage

CLIENT_CLOSED = 499  # nginx's code for "client closed request", used in the ledger
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Answer(Protocol[T_contra]):
    """How one endpoint turns the items of a generation into a response."""

    @property
    def model(self) -> str | None:
        """The model that answered, for the ledger (None: not known yet)."""

    @property
    def headers(self) -> Mapping[str, str] | None:
        """The response's extra headers (the AI-generated label)."""

    def add(self, item: T_contra) -> bool:
        """Take ``item`` in; whether it carries output (the first such starts the clock of
        the time to first token)."""

    def usage(self) -> Usage:
        """What the generation cost so far (all of it, once it has ended)."""

    def body(self) -> dict[str, Any]:
        """The JSON body of a response that was not streamed."""

    def encode(self, item: T_contra) -> bytes:
        """The SSE bytes for an item already taken in (b"": nothing to send)."""

    def opening(self) -> bytes:
        """SSE bytes before the first item's."""

    def closing(self) -> bytes:
        """SSE bytes after the last item's (``data: [DONE]`` ends an OpenAI stream)."""

    def error(self, exc: ConciergeError) -> bytes:
        """The SSE event for a failure after the stream began."""


async def close(items: AsyncGenerator[Any, None] | None) -> None:
    """Stop a generation (its clean-up runs even while the request is being cancelled)."""
    if items is not None:
        with anyio.CancelScope(shield=True):
            await items.aclose()


async def respond(
    request: Request,
    meter: Meter,
    items: AsyncGenerator[T, None],
    answer: Answer[T],
    *,
    stream: bool,
) -> Response:
    """Answer ``request`` with ``items`` as ``answer`` spells them; ``meter`` is finished."""

    async def whole() -> None:
        async for item in items:
            if answer.add(item):
                meter.mark_first_token()

    try:
        if stream:
            first = await until_disconnect(request.receive, anext(items))
            headers = dict(answer.headers or {})
            return EventStream(_stream(meter, items, first, answer), headers=headers)
        await until_disconnect(request.receive, whole())
    except ClientDisconnected:
        await close(items)
        await meter.finish(CLIENT_CLOSED, answer.usage(), model=answer.model)
        return Response(status_code=CLIENT_CLOSED)
    except BaseException as exc:
        await close(items)
        await meter.fail(exc)
        raise
    await meter.finish(200, answer.usage(), model=answer.model)
    labelled = answer.headers
    return JSON(answer.body(), headers=dict(labelled) if labelled else None)


async def _stream(
    meter: Meter, items: AsyncGenerator[T, None], first: T, answer: Answer[T]
) -> AsyncGenerator[bytes, None]:
    """The SSE body: one write per item (an item may be a batch of events)."""

    def encode(item: T) -> bytes:
        if answer.add(item):
            meter.mark_first_token()
        return answer.encode(item)

    status = 200
    try:
        opening = answer.opening() + encode(first)
        if opening:
            yield opening
        async for item in items:
            out = encode(item)
            if out:
                yield out
        closing = answer.closing()
        if closing:
            yield closing
    except ConciergeError as exc:
        status = exc.status
        yield answer.error(exc)
    except (asyncio.CancelledError, GeneratorExit):
        status = CLIENT_CLOSED
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await close(items)
            await meter.finish(status, answer.usage(), model=answer.model)
