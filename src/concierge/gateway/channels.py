"""Messaging channels over the API: ``/v1/channels`` (connect a WhatsApp number, a Facebook
page, an Instagram account or a Telegram bot to an assistant; ``admin``), their inbound events
and outbound messages (``inbox``), and the webhooks the platforms call at
``/channels/{id}/webhook`` (no API key: each platform's signature is checked instead)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection
from starlette.responses import PlainTextResponse, Response

from concierge.assistants import definitions
from concierge.channels import media as media_store
from concierge.channels import outbox, queue
from concierge.channels import store as channel_store
from concierge.channels.outbox import OutboxStatus
from concierge.channels.queue import EventStatus
from concierge.channels.store import Channel, ChannelStatus
from concierge.gateway.auth import AdminKey, InboxKey, admin_key
from concierge.gateway.body import json_body, parse
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import MAX_ID, RowId, Strict
from concierge.gateway.state import concierge

router = APIRouter(tags=["Channels"])

ChannelId = Annotated[str, Field(min_length=1, max_length=40)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class ChannelIn(Strict):
    """Connect a messaging channel to an assistant."""

    type: Annotated[str, Field(min_length=1, max_length=32)]
    assistant: Annotated[str, Field(min_length=1, max_length=200)]
    name: Name | None = None
    config: dict[str, Any]
    connect: bool = Field(
        True, description="Register the webhook with the platform where its API allows it."
    )


class ChannelUpdate(Strict):
    assistant: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    name: Name | None = None
    config: dict[str, Any] | None = None
    status: Literal["active", "disabled"] | None = None


BODY_MODELS: list[type[BaseModel]] = [ChannelIn, ChannelUpdate]


def webhook_url(request: Request, channel_id: str) -> str:
    base = concierge(request).settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/channels/{channel_id}/webhook"


def _shown(request: Request, channel: Channel, names: dict[int, str]) -> dict[str, Any]:
    return channel.to_dict(webhook_url(request, channel.id), names.get(channel.assistant_id))


# -- /v1/channels ----------------------------------------------------------------------------


@router.post(
    "/v1/channels",
    status_code=201,
    summary="Connect a messaging channel to an assistant",
    openapi_extra=json_body(ChannelIn, "admin"),
)
async def create_channel(request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, ChannelIn)
    service = concierge(request).channels
    made = await service.create(
        key.org_id,
        type=body.type,
        assistant=body.assistant,
        name=body.name,
        config=body.config,
        actor=key.actor,
        webhook_url=webhook_url(request, "{id}"),
        connect=body.connect,
    )
    names = await concierge(request).db.read(lambda conn: service.assistant_names(conn, key.org_id))
    return JSON(_shown(request, made, names), status_code=201)


@router.get("/v1/channels", summary="List channels")
async def list_channels(request: Request, key: AdminKey) -> JSON:
    service = concierge(request).channels

    def read(conn: Connection) -> tuple[list[Channel], dict[int, str]]:
        found = channel_store.list_all(conn, service.types, service.box, key.org_id)
        return found, service.assistant_names(conn, key.org_id)

    found, names = await concierge(request).db.read(read)
    return JSON({"object": "list", "data": [_shown(request, c, names) for c in found]})


@router.get("/v1/channels/{channel}", summary="Retrieve a channel")
async def get_channel(channel: str, request: Request, key: AdminKey) -> JSON:
    service = concierge(request).channels

    def read(conn: Connection) -> tuple[Channel, dict[int, str]]:
        found = channel_store.get(conn, service.types, service.box, key.org_id, channel)
        return found, service.assistant_names(conn, key.org_id)

    found, names = await concierge(request).db.read(read)
    return JSON(_shown(request, found, names))


@router.patch(
    "/v1/channels/{channel}",
    summary="Change a channel (a secret sent as ******** keeps its value)",
    openapi_extra=json_body(ChannelUpdate, "admin"),
)
async def update_channel(channel: str, request: Request) -> JSON:
    key = await admin_key(request)
    body = await parse(request, ChannelUpdate)
    service = concierge(request).channels

    def write(conn: Connection) -> tuple[Channel, dict[int, str]]:
        current = channel_store.get(conn, service.types, service.box, key.org_id, channel)
        assistant_id = (
            definitions.get(conn, key.org_id, body.assistant).id if body.assistant else None
        )
        done = channel_store.update_channel(
            conn,
            service.types,
            service.box,
            current,
            assistant_id=assistant_id,
            name=body.name,
            config=body.config,
            status=ChannelStatus(body.status) if body.status else None,
            actor=key.actor,
        )
        return done, service.assistant_names(conn, key.org_id)

    done, names = await concierge(request).db.write(write)
    service.forget(done.id)
    return JSON(_shown(request, done, names))


@router.delete("/v1/channels/{channel}", summary="Disconnect and delete a channel")
async def delete_channel(channel: str, request: Request, key: AdminKey) -> JSON:
    service = concierge(request).channels

    def write(conn: Connection) -> None:
        current = channel_store.get(conn, service.types, service.box, key.org_id, channel)
        channel_store.remove(conn, current, key.actor)

    await concierge(request).db.write(write)
    service.forget(channel)
    return JSON({"id": channel, "object": "channel.deleted", "deleted": True})


@router.post(
    "/v1/channels/{channel}/connect",
    summary="Register the channel's webhook with the platform again (Telegram's setWebhook)",
)
async def connect_channel(channel: str, request: Request, key: AdminKey) -> JSON:
    service = concierge(request).channels
    found = await concierge(request).db.read(
        lambda conn: channel_store.get(conn, service.types, service.box, key.org_id, channel)
    )
    url = webhook_url(request, found.id)
    await service.connect(found, url)
    return JSON({"id": found.id, "object": "channel.connected", "webhook_url": url})


@router.get("/v1/channels/{channel}/events", summary="What the platform delivered, newest first")
async def list_events(
    channel: str,
    request: Request,
    key: InboxKey,
    status: EventStatus | None = None,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    service = concierge(request).channels

    def read(conn: Connection) -> tuple[list[queue.QueuedEvent], bool]:
        channel_store.get(conn, service.types, service.box, key.org_id, channel)
        return queue.list_events(
            conn, key.org_id, channel, status=status, limit=limit, before=before
        )

    rows, more = await concierge(request).db.read(read)
    return JSON({"object": "list", "data": [r.to_dict() for r in rows], "has_more": more})


@router.get("/v1/channels/{channel}/messages", summary="Messages sent or to send, newest first")
async def list_messages(
    channel: str,
    request: Request,
    key: InboxKey,
    status: OutboxStatus | None = None,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    service = concierge(request).channels

    def read(conn: Connection) -> tuple[list[outbox.OutboxRow], bool]:
        channel_store.get(conn, service.types, service.box, key.org_id, channel)
        return outbox.list_messages(
            conn, key.org_id, channel_id=channel, status=status, limit=limit, before=before
        )

    rows, more = await concierge(request).db.read(read)
    return JSON({"object": "list", "data": [r.to_dict() for r in rows], "has_more": more})


@router.post(
    "/v1/channels/{channel}/messages/{message}/resend",
    summary="Send a failed (or unknown) message again",
)
async def resend_message(channel: str, message: RowId, request: Request, key: InboxKey) -> JSON:
    row = await concierge(request).db.write(lambda conn: outbox.resend(conn, key.org_id, message))
    concierge(request).channels.dispatcher.wake()
    return JSON(row.to_dict())


@router.get(
    "/v1/channel_media/{media}/content", summary="A file a customer sent (image, voice note...)"
)
async def media_content(media: RowId, request: Request, key: InboxKey) -> Response:
    found, data = await concierge(request).db.read(
        lambda conn: media_store.content(conn, key.org_id, media)
    )
    return Response(
        data,
        media_type=found.mime_type or "application/octet-stream",
        headers={
            "Content-Disposition": "attachment",  # never rendered in the console's origin
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- the webhooks platforms call -------------------------------------------------------------


@router.get(
    "/channels/{channel}/webhook",
    summary="The platform's subscription check (Meta's hub.challenge)",
    response_class=PlainTextResponse,
)
async def verify_webhook(channel: str, request: Request) -> PlainTextResponse:
    query = {k: v for k, v in request.query_params.items()}
    challenge = await concierge(request).channels.verify(channel, query)
    return PlainTextResponse(challenge)


@router.post(
    "/channels/{channel}/webhook",
    summary="Events from the platform: stored, then acknowledged",
    response_class=PlainTextResponse,
)
async def receive_webhook(channel: str, request: Request) -> PlainTextResponse:
    body = await request.body()
    await concierge(request).channels.receive(channel, request.headers, body)
    return PlainTextResponse("ok")
