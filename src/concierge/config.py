"""Typed settings: one declarative list, read from defaults, a TOML file and ``CONCIERGE_*``.

Precedence, lowest first: the defaults below, the TOML file (``--config PATH`` or
``CONCIERGE_CONFIG``), environment variables ``CONCIERGE_<NAME>`` and explicit overrides (CLI
options). Lists and tables given through the environment are JSON. Every value is validated
when settings are loaded; a bad one raises :class:`~concierge.errors.ConfigError` naming the
setting, where it came from, and what is wrong. Nothing here runs at import time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from concierge.errors import ConfigError

ENV_PREFIX = "CONCIERGE_"
SECRET_SETTINGS = frozenset({"admin_key", "secret_keys"})
URL_SETTINGS = frozenset({"database_url", "redis_url"})


class UpstreamConfig(BaseModel):
    """One OpenAI-compatible upstream (vLLM, Ollama, llama-server, a hosted API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="A short name for logs and /v1/models owned_by.")
    base_url: str = Field(description="Base URL including /v1, e.g. http://gpu-1:8000/v1.")
    models: list[str] = Field(
        default_factory=list, description="Chat/completion model ids served by this upstream."
    )
    embedding_models: list[str] = Field(
        default_factory=list, description="Embedding model ids served by this upstream."
    )
    api_key: str | None = Field(None, description="Bearer token sent upstream (kept server-side).")
    api_key_env: str | None = Field(None, description="Read the upstream key from this env var.")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for the upstream's response.")
    connect_retries: int = Field(2, ge=0, le=10, description="Retries on connection errors.")
    context_length: int | None = Field(None, gt=0, description="Context window, if known.")
    supports_tools: bool = Field(True, description="The upstream accepts OpenAI tools.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _serves_something(self) -> UpstreamConfig:
        if not self.models and not self.embedding_models:
            raise ValueError("an upstream must list models or embedding_models")
        return self

    def resolved_api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or self.api_key
        return self.api_key


class Settings(BaseModel):
    """Every setting of Concierge. The field list *is* the declarative settings list."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    data_dir: Path = Field(Path("data"), description="Folder for the database, models and files.")
    models_dir: Path | None = Field(
        None, description="Folder for model files assembled from packages; default data_dir/models."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite under data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    host: str = Field("127.0.0.1", description="Interface `concierge serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `concierge serve` listens on.")
    workers: int = Field(1, ge=1, le=64, description="Server worker processes (uvicorn).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )
    admin_key: str | None = Field(
        None,
        min_length=16,
        description="Initial admin API key (otherwise one is generated at first start).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_messages: int = Field(
        2048, ge=1, le=100_000, description="Most messages in one chat completion request."
    )
    max_input_characters: int = Field(
        1_000_000,
        ge=1000,
        description="Most characters of text in one model request (messages, prompt, tool "
        "definitions; all inputs of an embeddings request), checked before any work.",
    )
    max_schema_bytes: int = Field(
        65_536,
        ge=256,
        description="Largest JSON Schema (response_format, each tool's parameters), as JSON.",
    )
    max_schema_depth: int = Field(
        16, ge=2, le=200, description="Deepest nesting of objects and lists in a JSON Schema."
    )
    max_schema_choices: int = Field(
        256,
        ge=1,
        description="Most enum values, consts and anyOf/oneOf branches in one request's "
        "schemas (each costs the embedded model's constrained sampling time).",
    )
    llm_enabled: bool = Field(True, description="Serve the embedded llama.cpp model.")
    llm_model_name: str = Field("gemma-3-270m", description="Model id of the embedded LLM.")
    llm_model_path: Path | None = Field(
        None, description="GGUF file of the embedded LLM; default: the packaged Gemma 3 270M."
    )
    llm_context_length: int = Field(
        4096, ge=256, le=131072, description="Context window (tokens) of the embedded LLM."
    )
    llm_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for the embedded LLM; default all cores."
    )
    llm_batch_size: int = Field(512, ge=8, le=8192, description="Prompt batch size (n_batch).")
    llm_max_queue: int = Field(
        16, ge=1, le=10_000, description="Requests that may wait for the embedded LLM (then 503)."
    )
    llm_max_queue_per_key: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Requests one key (or widget visitor) may have waiting (then 429).",
    )
    llm_max_queue_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Longest a request waits for its turn on the embedded LLM, expected or "
        "actual (then 503 with Retry-After).",
    )
    llm_chat_template: str | None = Field(
        None, description="Jinja chat template overriding the one in the GGUF metadata."
    )
    embedding_enabled: bool = Field(True, description="Serve the embedded embedding model.")
    embedding_model_name: str = Field(
        "all-minilm-l6-v2", description="Model id of the embedded embedding model."
    )
    embedding_batch_size: int = Field(32, ge=1, le=1024, description="Embedding batch size.")
    embedding_max_inputs: int = Field(
        2048, ge=1, description="Most inputs accepted in one /v1/embeddings request."
    )
    knowledge_embedding_model: str | None = Field(
        None,
        description="Embedding model of new knowledge bases; default the embedded one's int8 "
        "form ('<embedding_model_name>-int8').",
    )
    knowledge_chunk_tokens: int = Field(
        200, ge=32, le=8192, description="Default chunk size of new knowledge bases, in tokens."
    )
    knowledge_chunk_overlap: int = Field(
        30, ge=0, le=4000, description="Default overlap between chunks, in tokens."
    )
    knowledge_max_document_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest document accepted for ingestion, in bytes."
    )
    knowledge_parse_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Longest one document may take to parse (then stopped)."
    )
    knowledge_parse_max_memory_mb: int = Field(
        1024, ge=128, le=1_048_576, description="Memory a document's parser process may use, MB."
    )
    knowledge_max_expanded_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="What an archive (DOCX) may hold uncompressed, checked before it is opened.",
    )
    knowledge_batch_documents: int = Field(
        64, ge=1, le=10000, description="Documents chunked, embedded and written per transaction."
    )
    knowledge_convex_alpha: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of BM25 in convex-combination search (mode=convex; assistants).",
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest upload body (files, documents) accepted, in bytes.",
    )
    fetch_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Time limit for fetching a document from a URL."
    )
    egress_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR) that URLs organisations give may reach although they are "
        'not public, e.g. ["10.20.0.0/16"] for an intranet; default none (docs/security.md).',
    )
    upstreams: list[UpstreamConfig] = Field(
        default_factory=list, description="OpenAI-compatible upstreams (TOML [[upstreams]])."
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict, description='Alias -> model id, e.g. {"gpt-4o-mini": "llama"}.'
    )
    model_fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Model id -> ordered fallback model ids, tried when it fails before output.",
    )
    redis_url: str | None = Field(
        None, description="Redis URL for rate limits shared between replicas; default in-process."
    )
    key_cache_seconds: float = Field(
        5.0, ge=0, le=3600, description="How long a replica caches an API key lookup."
    )
    usage_flush_seconds: float = Field(
        0.25, gt=0, le=10, description="Longest a usage record waits before it is written."
    )
    default_requests_per_minute: int | None = Field(
        None, ge=1, le=10**9, description="Rate limit for new keys without one (requests/minute)."
    )
    default_tokens_per_minute: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Rate limit for new keys without one (tokens/minute)."
    )
    label_producer: str = Field(
        "Concierge",
        min_length=1,
        max_length=200,
        description="ContentProducer in provenance labels (an organisation's policy may override).",
    )
    reply_flush_seconds: float = Field(
        1.0,
        ge=0.05,
        le=60,
        description="How often a reply being written is saved, so a crash loses at most this "
        "much of it (it is then kept as interrupted).",
    )
    reply_stale_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="A reply being written that no process has saved for this long belongs to "
        "one that stopped: it is marked interrupted.",
    )
    retention_interval_seconds: float = Field(
        3600.0, ge=1, le=7 * 86400, description="How often the retention purge runs."
    )
    widget_ip_requests_per_minute: int = Field(
        120,
        ge=1,
        description="Calls to the public widget API (and to label verification, which needs no "
        "key) from one client address a minute.",
    )
    widget_visitor_requests_per_minute: int = Field(
        60, ge=1, description="Calls to the public widget API by one visitor a minute."
    )
    widget_new_visitors_per_minute: int = Field(
        10,
        ge=1,
        description="New widget visitors and conversations from one client address a minute.",
    )
    widget_messages_per_minute: int = Field(
        12, ge=1, description="Messages one widget visitor may send a minute."
    )
    widget_poll_seconds: float = Field(
        10.0,
        ge=1,
        le=300,
        description="How often an open widget looks for a person's reply while the assistant "
        "has the conversation (every 3 s while people have it).",
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        description="Addresses of reverse proxies whose X-Forwarded-For names the client (for "
        "per-address limits); comma-separated, or * for any.",
    )
    home_widget: str | None = Field(
        "acme/acme-support",
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}/[^/]{1,200}$",
        description="ORG/ASSISTANT whose chat widget the page at / shows; empty: none.",
    )

    secret_keys: str | None = Field(
        None,
        description="Fernet keys that encrypt stored secrets (channel tokens), comma-separated: "
        "the first encrypts, all decrypt. Default: a key file made under data_dir. Replicas "
        "must share it.",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The server's address as platforms reach it (https://concierge.example.com),"
        " for channels' webhook URLs; default: the address a request came to.",
    )
    inbox_poll_seconds: float = Field(
        1.0,
        ge=0.05,
        le=300,
        description="How often the inbox opens conversations handed to people, reopens those "
        "customers answered, ends snoozes, flags SLA breaches and assigns.",
    )
    channel_dispatch: bool = Field(
        True,
        description="Run the channel workers (inbound processing, the outbox) in this server; "
        "off for replicas that only take webhooks while others (`concierge channels work`) "
        "answer.",
    )
    channel_workers: int = Field(
        8, ge=1, le=256, description="Conversations one process answers on channels at once."
    )
    channel_poll_seconds: float = Field(
        0.5,
        ge=0.01,
        le=60,
        description="How often a process looks for channel work other replicas queued.",
    )
    channel_lease_seconds: float = Field(
        60.0,
        ge=2,
        le=3600,
        description="How long a worker's hold on a customer's thread lasts unless renewed (a "
        "process that dies frees its threads after this).",
    )
    channel_max_attempts: int = Field(
        5, ge=1, le=100, description="Tries at processing one inbound event before it fails."
    )
    outbox_max_attempts: int = Field(
        10, ge=1, le=100, description="Tries at sending one message before it fails."
    )
    outbox_retry_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Base of the outbox's exponential backoff: retry n waits a random time up "
        "to this times 2^(n-1), capped at 10 minutes (the platform's own wait when it gives one).",
    )
    outbox_in_doubt_seconds: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="How long a message whose send was cut short waits for the platform's "
        "status callback before it is marked unknown (never sent twice on a guess).",
    )
    channel_max_media_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest media file downloaded from a platform."
    )

    @field_validator("egress_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not a network like 10.0.0.0/8 or fd00::/8") from None
        return out

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'concierge.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"


@dataclass(frozen=True)
class SettingInfo:
    name: str
    type: str
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


def setting_infos() -> Iterator[SettingInfo]:
    """The declarative list: name, type, default and help of every setting."""
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation)
        yield SettingInfo(
            name, str(type_name).replace("typing.", ""), default, field.description or ""
        )


_COMPLEX = {"upstreams", "model_aliases", "model_fallbacks", "egress_allowed_networks"}
# Settings that were replaced, and what replaced them (a file naming one gets a useful error).
RENAMED = {
    "fetch_private_networks": 'egress_allowed_networks, a list of networks (["10.0.0.0/8"])',
}


def _from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for old, new in RENAMED.items():
        if ENV_PREFIX + old.upper() in env:
            raise ConfigError(f"{ENV_PREFIX + old.upper()}: {old} is now {new}")
    for name in Settings.model_fields:
        var = ENV_PREFIX + name.upper()
        if var not in env:
            continue
        raw = env[var]
        if name in _COMPLEX:
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{var}: not valid JSON ({exc.msg} at char {exc.pos})") from None
        elif raw == "" and Settings.model_fields[name].default is None:
            values[name] = None
        else:
            values[name] = raw
        sources[name] = var
    return values, sources


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    renamed = [f"{old} is now {RENAMED[old]}" for old in unknown if old in RENAMED]
    if renamed:
        raise ConfigError(f"{path}: " + "; ".join(renamed))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return data


def load_settings(
    config_file: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings; raise ConfigError with a readable message on a bad value."""
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        file_values = _from_file(Path(config_file))
        values.update(file_values)
        sources.update({k: str(config_file) for k in file_values})
    env_values, env_sources = _from_env(env)
    values.update(env_values)
    sources.update(env_sources)
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = "command line"
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            where = sources.get(name, "default")
            detail = ".".join(str(p) for p in err["loc"][1:])
            lines.append(f"{name}{'.' + detail if detail else ''} (from {where}): {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain data, with secrets hidden, for `concierge config show`."""
    data = settings.model_dump(mode="json")
    for name in SECRET_SETTINGS:
        if data[name]:
            data[name] = "********"
    for name in URL_SETTINGS:
        if data[name]:
            data[name] = _hide_password(data[name])
    for upstream in data.get("upstreams", []):
        if upstream.get("api_key"):
            upstream["api_key"] = "********"
    return data
