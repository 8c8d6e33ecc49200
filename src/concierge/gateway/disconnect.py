"""Noticing that a client went away, so that work done for it stops (generation above all)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the work for it was done."""


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it and raise ClientDisconnected if the client goes away first.

    ``work`` runs in this task; a watcher task cancels this task when the client disconnects,
    and the cancellation is taken back (``uncancel``) as asyncio.timeout does, so a
    cancellation from elsewhere (server shutdown) still goes through.
    """
    task = asyncio.current_task()
    assert task is not None
    waiting, gone = True, False

    def disconnected(watcher: asyncio.Future[None]) -> None:
        nonlocal gone
        # ``waiting``: a callback already scheduled when the work ended must not cancel later.
        if waiting and not watcher.cancelled() and watcher.exception() is None:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    watcher.add_done_callback(disconnected)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        waiting = False
        watcher.cancel()
