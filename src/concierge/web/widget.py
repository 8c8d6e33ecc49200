"""The web chat widget's server side: a small public API under ``/widget/v1``, and the script.

An operator publishes an assistant with ``widget: true`` (and, optionally, the sites allowed to
embed it in ``widget_origins``) and adds one tag to any page::

    <script src="https://concierge.example/widget.js" data-org="acme"
            data-assistant="acme-support" defer></script>

The widget has no API key: it is public by design. A visitor gets a signed token (itsdangerous,
keyed by an installation secret kept in the database) that names them; it is kept in the
browser's local storage and sent as ``X-Concierge-Visitor``. A visitor sees only their own
conversations. Every call passes :func:`_gate`: the organisation's ``web widget`` key must be
live (revoke it and every route answers 403: the kill switch), the client address and the
visitor each have a budget of calls a minute, new visitors and conversations a smaller one, and
messages one of their own (429 with ``Retry-After``). What the widget creates and sends is
metered under that key (made on first use; its own limits apply too). Cross-origin calls are
allowed (no cookies are involved), and refused from sites outside ``widget_origins`` when that
list is set.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Query, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from concierge import keys, orgs
from concierge.assistants import definitions
from concierge.assistants.definitions import Assistant
from concierge.assistants.events import Inbound
from concierge.assistants.runtime import Runtime
from concierge.conversations import store
from concierge.conversations.store import Conversation
from concierge.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from concierge.gateway import complaints, errors
from concierge.gateway.body import parse
from concierge.gateway.conversations import NativeFormat
from concierge.gateway.inbox import RatingIn
from concierge.gateway.limits import client_address
from concierge.gateway.replies import respond
from concierge.gateway.responses import JSON
from concierge.gateway.schemas import MAX_ID, ConsentIn, MessageIn, ReportIn, RowId
from concierge.gateway.state import concierge
from concierge.governance import consent, moderation
from concierge.governance import policy as policies
from concierge.governance.policy import OrgPolicy, PolicyCache, effective, pick_language
from concierge.inbox import items as inbox_items
from concierge.keys import ApiKey
from concierge.models.base import TokenCount
from concierge.store import Database
from concierge.store.secrets import server_secret

if TYPE_CHECKING:
    from concierge.app import Concierge

CHANNEL = "web"
VISITOR_HEADER = "X-Concierge-Visitor"
TOKEN_MAX_AGE = 400 * 24 * 3600  # a visitor is remembered for about a year (browsers cap it too)

router = APIRouter()


class VisitorSigner:
    """Visitor tokens, signed with the installation's widget secret (read once)."""

    def __init__(self) -> None:
        self._serializer: URLSafeTimedSerializer | None = None

    async def get(self, db: Database) -> URLSafeTimedSerializer:
        if self._serializer is None:
            secret = await db.write(lambda conn: server_secret(conn, "widget-visitors"))
            self._serializer = URLSafeTimedSerializer(secret, salt="concierge.widget.visitor")
        return self._serializer


class WidgetKeys:
    """The ``web widget`` key of each organisation, cached like API keys are."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._keys: dict[int, tuple[ApiKey, float]] = {}

    def invalidate(self) -> None:
        """Forget every cached key (one was revoked on this replica: it takes effect now)."""
        self._keys.clear()

    async def get(self, db: Database, org_id: int) -> ApiKey:
        hit = self._keys.get(org_id)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            key = hit[0]
        else:
            key = await db.write(lambda conn: keys.widget_key(conn, org_id))
            self._keys[org_id] = (key, now + self.ttl)
        if key.revoked_at is not None:
            raise PermissionDenied("the web widget is switched off for this organisation")
        return key


def _published(conn: Connection, request: Request, org: str, name: str) -> Assistant:
    """The assistant, if it is published on the widget for the calling site."""
    missing = NotFound(f"no assistant '{name}' is published on the web widget of '{org}'")
    try:
        organisation = orgs.get(conn, org)
        assistant = definitions.get(conn, organisation.id, name)
    except NotFound:
        raise missing from None
    if not assistant.config.widget:
        raise missing
    origin = request.headers.get("origin")
    allowed = assistant.config.widget_origins
    if allowed and origin is not None and origin.lower() not in allowed:
        raise PermissionDenied(f"the widget of '{name}' may not be embedded on {origin}")
    return assistant


async def _visitor(request: Request, org_id: int) -> str:
    token = request.headers.get(VISITOR_HEADER, "")
    if not token:
        raise AuthenticationFailed(f"send the visitor token as {VISITOR_HEADER}")
    signer = await concierge(request).widget_signer.get(concierge(request).db)
    try:
        data = signer.loads(token, max_age=TOKEN_MAX_AGE)
    except BadSignature:
        raise AuthenticationFailed("the visitor token is not valid; start a new session") from None
    if not isinstance(data, dict) or data.get("o") != org_id or not isinstance(data.get("v"), str):
        raise AuthenticationFailed("the visitor token is not valid; start a new session")
    return str(data["v"])


def _own(conn: Connection, assistant: Assistant, visitor: str, cid: int) -> Conversation:
    """The visitor's conversation ``cid`` with this assistant; anything else is not found."""
    conversation = store.get(conn, assistant.org_id, cid)
    user = store.get_end_user(conn, assistant.org_id, conversation.end_user_id)
    if (
        conversation.assistant_id != assistant.id
        or conversation.channel != CHANNEL
        or user.external_id != visitor
    ):
        raise NotFound(f"conversation {cid} not found", param="conversation")
    return conversation


def _policy(conn: Connection, assistant: Assistant, cache: PolicyCache) -> OrgPolicy:
    return effective(policies.get(conn, assistant.org_id, cache)[0], assistant.config.governance)


@dataclass(frozen=True)
class _Entry:
    """A widget call let through: the published assistant, the visitor (if the call names
    one) and the organisation's widget key."""

    assistant: Assistant
    visitor: str
    key: ApiKey


async def _gate(
    request: Request, org: str, assistant: str, *, visitor: bool = True, creates: bool = False
) -> _Entry:
    """Every widget call comes through here: the assistant must be published (for the calling
    site), the widget switched on (its key not revoked), and the client address and the
    visitor within their calls a minute (``creates``: new visitors and conversations, which
    have a smaller budget per address)."""
    c = concierge(request)
    settings = c.settings
    address = client_address(request)
    await c.limiter.hit(
        f"widget-ip:{address}", settings.widget_ip_requests_per_minute, "requests from your address"
    )
    found = await c.db.read(lambda conn: _published(conn, request, org, assistant))
    key = await c.widget_keys.get(c.db, found.org_id)  # 403 once revoked: the kill switch
    if creates:
        await c.limiter.hit(
            f"widget-new:{address}",
            settings.widget_new_visitors_per_minute,
            "new chats from your address",
        )
    who = await _visitor(request, found.org_id) if visitor else ""
    if who:
        await c.limiter.hit(
            f"widget-visitor:{found.org_id}:{who}",
            settings.widget_visitor_requests_per_minute,
            "requests from this chat",
        )
    return _Entry(found, who, key)


@asynccontextmanager
async def _metered(request: Request, entry: _Entry, endpoint: str) -> AsyncIterator[None]:
    """A widget call that makes something: admitted under the widget key's limits first, and
    recorded in the usage ledger however it ends."""
    meter = await concierge(request).metering.begin(entry.key, endpoint, None)
    try:
        yield
    except BaseException as exc:
        await meter.fail(exc)
        raise
    await meter.finish(201)


@router.get("/{org}/{assistant}", summary="What the widget shows before the first message")
async def widget_config(org: str, assistant: str, request: Request) -> JSON:
    entry = await _gate(request, org, assistant, visitor=False)
    found = entry.assistant
    cache = concierge(request).governance.policies
    policy = await concierge(request).db.read(lambda conn: _policy(conn, found, cache))
    disclosure = policy.disclosure
    return JSON(
        {
            "object": "widget.config",
            "assistant": found.name,
            "greeting": found.config.greeting,
            "poll_seconds": concierge(request).settings.widget_poll_seconds,
            # The AI disclosure in the visitor's language (null where the organisation has
            # switched it off); the first assistant message carries it too.
            "disclosure": disclosure.text_for(request.headers.get("accept-language")),
            "consent": {
                "memory_requires": policy.consent.memory_requires,
                "text_versions": policy.consent.text_versions,
                # What the widget asks before the assistant may remember the visitor.
                "memory_text": pick_language(
                    policy.consent.memory_texts,
                    request.headers.get("accept-language"),
                    disclosure.default_language,
                )
                if policy.consent.memory_requires
                else None,
            },
        }
    )


@router.post("/{org}/{assistant}/visitors", status_code=201, summary="A new visitor token")
async def new_visitor(org: str, assistant: str, request: Request) -> JSON:
    entry = await _gate(request, org, assistant, visitor=False, creates=True)
    found = entry.assistant
    async with _metered(request, entry, "widget.visitors"):
        signer = await concierge(request).widget_signer.get(concierge(request).db)
        visitor = "v_" + secrets.token_urlsafe(16)
        token = signer.dumps({"o": found.org_id, "v": visitor})
    return JSON({"object": "widget.visitor", "visitor": visitor, "token": token}, status_code=201)


@router.post("/{org}/{assistant}/conversations", status_code=201, summary="Start a conversation")
async def start(org: str, assistant: str, request: Request) -> JSON:
    entry = await _gate(request, org, assistant, creates=True)
    found, visitor = entry.assistant, entry.visitor
    runtime: Runtime = concierge(request).runtime
    async with _metered(request, entry, "widget.conversations"):
        conversation, opening = await runtime.start_conversation(
            found.org_id, found.id, CHANNEL, visitor, request.headers.get("accept-language")
        )
    return JSON(
        {**conversation.to_dict(), "turns": [t.to_dict() for t in opening]}, status_code=201
    )


@router.get("/{org}/{assistant}/conversations/{conversation}", summary="A conversation's turns")
async def turns(
    org: str,
    assistant: str,
    conversation: RowId,
    request: Request,
    after: int | None = Query(None, ge=0, le=MAX_ID),
) -> JSON:
    entry = await _gate(request, org, assistant)
    found, visitor = entry.assistant, entry.visitor

    def read(conn: Connection) -> dict[str, Any]:
        own = _own(conn, found, visitor, conversation)
        rows, more = store.list_turns(conn, own, after=after, limit=200)
        item = inbox_items.find(conn, own.org_id, own.id)
        return {
            **own.to_dict(),
            "turns": [t.to_dict() for t in rows],
            "has_more": more,
            # After people resolved it: the visitor may rate the help (CSAT), once.
            "rating": (
                None
                if item is None or item.resolved_at is None
                else {"open": item.csat_score is None, "score": item.csat_score}
            ),
        }

    return JSON(await concierge(request).db.read(read))


@router.post(
    "/{org}/{assistant}/conversations/{conversation}/rating",
    summary="Rate the help people gave (1-5) after they resolved the conversation",
)
async def rate(org: str, assistant: str, conversation: RowId, request: Request) -> JSON:
    entry = await _gate(request, org, assistant)
    found, visitor = entry.assistant, entry.visitor
    body = await parse(request, RatingIn)

    def write(conn: Connection) -> dict[str, Any]:
        own = _own(conn, found, visitor, conversation)
        item = inbox_items.find(conn, own.org_id, own.id)
        if item is None or item.resolved_at is None:
            raise Conflict("this conversation has not been resolved by the team")
        if item.csat_score is not None:
            raise Conflict("this conversation has been rated already")
        done = inbox_items.rate(conn, own.org_id, own.id, body.score)
        return {"object": "inbox.rating", "score": done.csat_score}

    async with _metered(request, entry, "widget.rating"):
        return JSON(await concierge(request).db.write(write))


@router.post(
    "/{org}/{assistant}/conversations/{conversation}/messages",
    summary="Send a message; the reply streams as Server-Sent Events",
)
async def send(org: str, assistant: str, conversation: RowId, request: Request) -> Response:
    entry = await _gate(request, org, assistant)
    found, visitor, key = entry.assistant, entry.visitor, entry.key
    await concierge(request).limiter.hit(
        f"widget-messages:{found.org_id}:{visitor}",
        concierge(request).settings.widget_messages_per_minute,
        "messages from this chat",
    )
    body = await parse(request, MessageIn)
    await concierge(request).db.read(lambda conn: _own(conn, found, visitor, conversation))
    inbound = Inbound(
        org_id=found.org_id,
        assistant=found.id,
        channel=CHANNEL,
        external_id=visitor,
        text=body.content,
        conversation_id=conversation,
        # The model's queue is shared fairly by client address (one address minting visitors
        # cannot fill it).
        priority_key=f"widget:{client_address(request)}",
        language=request.headers.get("accept-language"),
    )
    runtime: Runtime = concierge(request).runtime
    spent: list[TokenCount] = []
    return await respond(
        request,
        key,
        "widget.messages",
        runtime.reply(inbound, spent),
        NativeFormat(),
        stream=body.stream,
        spent=spent,
    )


@router.post(
    "/{org}/{assistant}/conversations/{conversation}/turns/{turn}/report",
    status_code=201,
    summary="Report an answer to the organisation's review queue",
)
async def report(
    org: str, assistant: str, conversation: RowId, turn: RowId, request: Request
) -> JSON:
    entry = await _gate(request, org, assistant)
    found, visitor = entry.assistant, entry.visitor
    body = await parse(request, ReportIn)

    def write(conn: Connection) -> moderation.Report:
        own = _own(conn, found, visitor, conversation)
        return complaints.report_turn(conn, own, turn, body, actor=f"visitor:{visitor}")

    async with _metered(request, entry, "widget.reports"):
        made = await concierge(request).db.write(write)
    return JSON(made.to_dict(), status_code=201)


@router.get("/{org}/{assistant}/consents", summary="The visitor's consent decisions")
async def consents(org: str, assistant: str, request: Request) -> JSON:
    entry = await _gate(request, org, assistant)
    found, visitor = entry.assistant, entry.visitor
    cache = concierge(request).governance.policies

    def read(conn: Connection) -> dict[str, Any]:
        policy = _policy(conn, found, cache)
        user = store.peek_end_user(conn, found.org_id, CHANNEL, visitor)
        return consent.summary(conn, user.id if user else 0, policy.consent)

    return JSON(await concierge(request).db.read(read))


@router.post("/{org}/{assistant}/consents", status_code=201, summary="Record the visitor's consent")
async def give_consent(org: str, assistant: str, request: Request) -> JSON:
    entry = await _gate(request, org, assistant)
    found, visitor = entry.assistant, entry.visitor
    body = await parse(request, ConsentIn)
    cache = concierge(request).governance.policies

    def write(conn: Connection) -> dict[str, Any]:
        policy = _policy(conn, found, cache)
        user = store.end_user(conn, found.org_id, CHANNEL, visitor)
        decision = consent.record(
            conn,
            org_id=found.org_id,
            end_user_id=user.id,
            purpose=body.purpose,
            granted=body.granted,
            channel=CHANNEL,
            text_version=body.text_version or policy.consent.text_versions[body.purpose],
            actor=f"visitor:{visitor}",
        )
        return decision.to_dict(policy.consent.text_versions.get(body.purpose))

    async with _metered(request, entry, "widget.consents"):
        made = await concierge(request).db.write(write)
    return JSON(made, status_code=201)


def script() -> bytes:
    return resources.files("concierge.web").joinpath("static/widget.js").read_bytes()


def widget_app(server: Concierge) -> FastAPI:
    """The widget API as an app of its own, mounted at ``/widget/v1`` (its own CORS rules)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.concierge = server
    errors.install(app)
    app.include_router(router)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", VISITOR_HEADER],
        expose_headers=["Retry-After"],  # a busy model says when to come back
        max_age=600,
    )
    return app
