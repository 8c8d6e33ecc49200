"""Assistant definitions: what an assistant is, versioned.

An assistant is a name (unique among an organisation's live assistants) and a
:class:`AssistantConfig`. Creating one writes version 1; every change writes the next version,
whole, to ``assistant_versions``, so the definition that produced any conversation turn can be
read back. Deleting archives: conversations keep pointing at it, its name becomes free.

Every function takes the caller's organisation and filters by it inside the query: another
organisation's assistant is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from concierge import names, regex
from concierge.egress import normalise_host, origin
from concierge.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed
from concierge.governance import audit
from concierge.governance.policy import AssistantGovernance
from concierge.store import aware, id_is
from concierge.store.tables import assistant_versions, assistants

# The registered tools (concierge.assistants.toolbox) an assistant has unless it says otherwise;
# the built-in ones, registered by concierge.default_plugins.tools.
BUILTIN_TOOLS: tuple[str, ...] = ("search_knowledge", "remember", "handoff_to_human")
TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MASK = "********"  # what the API shows in place of a tool's header values


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpTool(_Config):
    """An operator's HTTP endpoint the assistant may call. Arguments, validated against
    ``parameters``, go in the query string (GET, DELETE) or as the JSON body; ``headers`` (an
    API key, say) are sent by the server and never shown to the model or returned by the API."""

    type: Literal["http"] = "http"
    name: Annotated[str, Field(pattern=TOOL_NAME.pattern)]
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (2020-12) of the arguments; an object schema.",
    )
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list,
        max_length=20,
        description="Hosts the call may reach (redirects included); default the URL's own.",
    )
    headers: dict[
        Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")],
        Annotated[str, Field(max_length=4000)],
    ] = Field(default_factory=dict, max_length=20)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_TOOLS:
            raise ValueError(f"'{value}' is a built-in tool's name")
        return value

    @field_validator("parameters")
    @classmethod
    def _a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            regex.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        except regex.PatternError as exc:
            raise ValueError(f"not an acceptable JSON Schema: {exc}") from None
        if value.get("type") != "object":
            raise ValueError('the arguments schema must have "type": "object"')
        return value

    @model_validator(mode="after")
    def _url(self) -> HttpTool:
        parts = urlsplit(self.url)
        host = normalise_host(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not host:
            raise ValueError("url must be an absolute http or https URL")
        hosts = []
        for given in self.allowed_hosts:
            normal = normalise_host(f"http://{given}/")
            if normal is None or "/" in given or "@" in given:
                raise ValueError(f"allowed_hosts: {given!r} is not a host name")
            hosts.append(normal)
        hosts = hosts or [host]
        if host not in hosts:
            raise ValueError(f"the url's host '{host}' is not in allowed_hosts")
        self.allowed_hosts = list(dict.fromkeys(hosts))
        return self


class AssistantConfig(_Config):
    """Everything an assistant is apart from its name."""

    instructions: str = Field("", max_length=20_000)
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="A chat model from GET /v1/models; default the server's."
    )
    fallback_models: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=5, description="Tried in order when the model fails."
    )
    knowledge_bases: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        default_factory=list,
        max_length=20,
        description="Ids of the knowledge bases it answers from.",
    )
    tools: list[HttpTool] = Field(default_factory=list, max_length=32)
    builtin_tools: list[Annotated[str, Field(pattern=TOOL_NAME.pattern)]] = Field(
        default_factory=lambda: list(BUILTIN_TOOLS),
        max_length=64,
        description="Registered tools it may call, by name (search_knowledge, remember, "
        "handoff_to_human and any a plugin adds).",
    )
    greeting: str | None = Field(None, max_length=2000)
    temperature: float = Field(0.3, ge=0, le=2)
    max_context_tokens: int = Field(
        4096,
        ge=256,
        le=1_000_000,
        description="Prompt budget: instructions, memory, context, history.",
    )
    max_reply_tokens: int = Field(512, ge=1, le=32_768)
    max_tool_steps: int = Field(4, ge=0, le=16, description="Model calls that may request tools.")
    max_tool_seconds: float = Field(
        30.0, gt=0, le=300, description="Time for all tool calls of a turn."
    )
    retrieval_k: int = Field(4, ge=0, le=20, description="Passages retrieved for each message.")
    retrieval_mode: Literal["convex", "hybrid", "bm25", "vector"] = Field(
        "convex",
        description="How passages are ranked: convex (BM25 and vectors weighted by "
        "knowledge_convex_alpha), hybrid (reciprocal-rank fusion), or one signal alone.",
    )
    governance: AssistantGovernance | None = Field(
        None,
        description="This assistant's adjustments to its organisation's governance policy "
        "(disclosure texts, explicit label, PII handling, extra blocked terms).",
    )
    widget: bool = Field(False, description="Published on the web chat widget (public).")
    widget_origins: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list,
        max_length=50,
        description="Sites allowed to embed the widget, e.g. https://shop.example; "
        "empty: any site.",
    )

    @field_validator("widget_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for site in value:
            parts = urlsplit(site)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
                raise ValueError(f"{site!r} is not an origin like https://shop.example")
            out.append(f"{parts.scheme}://{parts.netloc.lower()}")
        return out

    @model_validator(mode="after")
    def _distinct(self) -> AssistantConfig:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        if len(set(self.builtin_tools)) != len(self.builtin_tools):
            raise ValueError("builtin_tools lists a tool twice")
        return self

    def public(self) -> dict[str, Any]:
        """The definition as the API shows it: tool header values hidden."""
        out = self.model_dump()
        for tool in out["tools"]:
            tool["headers"] = {name: MASK for name in tool["headers"]}
        return out


@dataclass(frozen=True)
class Assistant:
    id: int
    org_id: int
    name: str
    version: int
    config: AssistantConfig
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "assistant",
            "name": self.name,
            "version": self.version,
            **self.config.public(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "archived": self.archived_at is not None,
        }


def parse_config(data: dict[str, Any]) -> AssistantConfig:
    """A definition from the API's JSON, with errors in the API's shape."""
    try:
        return AssistantConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(
            f"{where}: {first['msg']}" if where else first["msg"], param=where or None
        ) from None


def validate_name(name: str) -> str:
    return names.validate_name(name, "an assistant")


# Reading an assistant on every turn would validate its definition every time (each tool's JSON
# Schema is checked, the costly part): definitions are validated once per content and shared.
# Keyed by the stored JSON itself, so the cache is right whatever database the row came from;
# callers never modify a definition in place (changes go through update_config).
_CONFIGS: dict[bytes, AssistantConfig] = {}
_CONFIGS_MAX = 4096


def _config(data: Any) -> AssistantConfig:
    key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    config = _CONFIGS.get(key)
    if config is None:
        config = AssistantConfig.model_validate(data)
        if len(_CONFIGS) >= _CONFIGS_MAX:
            _CONFIGS.clear()
        _CONFIGS[key] = config
    return config


def _row(row: Any) -> Assistant:
    return Assistant(
        row.id,
        row.org_id,
        row.name,
        row.version,
        _config(row.config),
        aware(row.created_at),
        aware(row.updated_at),
        aware(row.archived_at),
    )


def create(
    conn: Connection, org_id: int, name: str, config: AssistantConfig, *, actor: str = "system"
) -> Assistant:
    name = validate_name(name)
    now = datetime.now(UTC)
    stored = config.model_dump(mode="json")
    try:
        with conn.begin_nested():
            key = conn.execute(
                insert(assistants).values(
                    org_id=org_id,
                    name=name,
                    version=1,
                    config=stored,
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key
    except IntegrityError:
        raise Conflict(f"an assistant named '{name}' already exists") from None
    assert key is not None
    conn.execute(
        insert(assistant_versions).values(
            assistant_id=key[0], version=1, config=stored, created_at=now
        )
    )
    audit.record(
        conn,
        "assistant.created",
        actor=actor,
        org_id=org_id,
        target=f"assistant:{key[0]}",
        details={"name": name, "version": 1},
    )
    return get(conn, org_id, int(key[0]))


def get(
    conn: Connection, org_id: int, ref: int | str, *, include_archived: bool = False
) -> Assistant:
    """By id, or by the name of a live assistant (a string of digits is taken as an id)."""
    query = select(assistants).where(assistants.c.org_id == org_id)
    if isinstance(ref, int) or names.is_row_id(ref):
        query = query.where(id_is(assistants.c.id, int(ref)))
        if not include_archived:
            query = query.where(assistants.c.archived_at.is_(None))
    else:
        query = query.where(assistants.c.name == ref.strip(), assistants.c.archived_at.is_(None))
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"assistant '{ref}' not found", param="assistant")
    return _row(row)


def list_all(conn: Connection, org_id: int) -> list[Assistant]:
    rows = conn.execute(
        select(assistants)
        .where(assistants.c.org_id == org_id, assistants.c.archived_at.is_(None))
        .order_by(assistants.c.id)
    )
    return [_row(r) for r in rows]


def update_config(
    conn: Connection,
    org_id: int,
    ref: int | str,
    *,
    name: str | None = None,
    changes: dict[str, Any] | None = None,
    actor: str = "system",
    expected_version: int | None = None,
) -> Assistant:
    """Apply ``changes`` (fields of :class:`AssistantConfig`) and a new name; writes the next
    version, unless nothing changed. A tool sent with a header value of ``********`` keeps the
    value it had (the API never shows it, so clients send it back as shown).

    The row is locked before the definition is read, so concurrent changes apply one after
    the other, each to the result of the one before (none is lost); ``expected_version`` (a
    client's If-Match) must be the current version."""
    current = _locked(conn, org_id, ref, expected_version)
    merged = current.config.model_dump()
    for key, value in (changes or {}).items():
        merged[key] = value
    _keep_secrets(merged, current.config)
    config = parse_config(merged)
    new_name = validate_name(name) if name is not None else current.name
    if config == current.config and new_name == current.name:
        return current
    number = current.version + 1
    now = datetime.now(UTC)
    stored = config.model_dump(mode="json")
    try:
        with conn.begin_nested():
            conn.execute(
                update(assistants)
                .where(assistants.c.id == current.id)
                .values(name=new_name, version=number, config=stored, updated_at=now)
            )
    except IntegrityError:
        raise Conflict(f"an assistant named '{new_name}' already exists") from None
    conn.execute(
        insert(assistant_versions).values(
            assistant_id=current.id, version=number, config=stored, created_at=now
        )
    )
    before = current.config.model_dump(mode="json")
    audit.record(
        conn,
        "assistant.updated",
        actor=actor,
        org_id=org_id,
        target=f"assistant:{current.id}",
        details={
            "name": new_name,
            "version": number,
            # Which settings changed, not their values (tool headers hold secrets).
            "changed": sorted(k for k in stored if stored[k] != before.get(k))
            + (["name"] if new_name != current.name else []),
        },
    )
    return get(conn, org_id, current.id)


def _locked(conn: Connection, org_id: int, ref: int | str, expected: int | None) -> Assistant:
    """The live assistant, its row locked until the transaction ends (PostgreSQL; SQLite's
    writes run one at a time anyway), read after the lock is held."""
    found = get(conn, org_id, ref)
    conn.execute(select(assistants.c.id).where(assistants.c.id == found.id).with_for_update())
    current = get(conn, org_id, found.id)
    if expected is not None and expected != current.version:
        raise PreconditionFailed(
            f"assistant '{current.name}' is at version {current.version}, not {expected}: it "
            "changed since you read it; read it again and repeat your change",
            param="If-Match",
        )
    return current


def _keep_secrets(merged: dict[str, Any], current: AssistantConfig) -> None:
    """Put the stored values back where a client sent ``********``, only for a tool that still
    sends them where they were set: the same origin (scheme, host, port) as its url then. A
    secret is never carried to a new destination by a request that does not know it."""
    previous = {t.name: t for t in current.tools}
    for tool in merged.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("headers"), dict):
            continue
        name = str(tool.get("name"))
        old = previous.get(name)
        for header, value in list(tool["headers"].items()):
            if value != MASK:
                continue
            if old is None or header not in old.headers:
                raise InvalidRequest(
                    f"tool '{name}': header '{header}' has no stored value to keep",
                    param="tools",
                )
            now = origin(str(tool.get("url", ""))) if isinstance(tool.get("url"), str) else None
            if now != origin(old.url):
                raise InvalidRequest(
                    f"tool '{name}': header '{header}' was set for {origin(old.url)}; its url "
                    f"now points to {now or 'somewhere else'}, so send the header's value again "
                    "(stored secrets are only sent where they were set)",
                    param="tools",
                )
            tool["headers"][header] = old.headers[header]


def version(conn: Connection, assistant: Assistant, number: int) -> AssistantConfig:
    row = conn.execute(
        select(assistant_versions.c.config).where(
            assistant_versions.c.assistant_id == assistant.id,
            id_is(assistant_versions.c.version, number),  # a 32-bit column (PostgreSQL)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"assistant '{assistant.name}' has no version {number}", param="version")
    return AssistantConfig.model_validate(row.config)


def versions(conn: Connection, assistant: Assistant) -> list[tuple[int, datetime]]:
    rows = conn.execute(
        select(assistant_versions.c.version, assistant_versions.c.created_at)
        .where(assistant_versions.c.assistant_id == assistant.id)
        .order_by(assistant_versions.c.version)
    )
    return [(int(r.version), aware(r.created_at)) for r in rows]


def archive(
    conn: Connection,
    org_id: int,
    ref: int | str,
    *,
    actor: str = "system",
    expected_version: int | None = None,
) -> Assistant:
    found = _locked(conn, org_id, ref, expected_version)
    conn.execute(
        update(assistants).where(assistants.c.id == found.id).values(archived_at=datetime.now(UTC))
    )
    audit.record(
        conn,
        "assistant.archived",
        actor=actor,
        org_id=org_id,
        target=f"assistant:{found.id}",
        details={"name": found.name, "version": found.version},
    )
    return get(conn, org_id, found.id, include_archived=True)
