"""Tables, as SQLAlchemy Core. Migrations in ``store/migrations`` create exactly these.

Each table belongs to one module, which is the only one that reads or writes it:
organizations -> ``concierge.orgs``; api_keys -> ``concierge.keys``;
usage_records -> ``concierge.metering.ledger``; knowledge_bases, documents, chunks,
ingestion_jobs and files -> ``concierge.knowledge``; assistants and assistant_versions ->
``concierge.assistants``; end_users, conversations, turns and memories ->
``concierge.conversations``; audit_log, audit_head, org_policies, consents, reports,
legal_holds and scheduled_jobs -> ``concierge.governance``; channels, channel_threads,
channel_events, channel_outbox and channel_media -> ``concierge.channels``; inbox_agents,
inbox_teams, inbox_team_members, inbox_items, inbox_notes, inbox_canned, inbox_settings and
inbox_cursor -> ``concierge.inbox``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names, so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER (rowid alias, autoincrement) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

organizations = Table(
    "organizations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    Column("requests_per_minute", Integer, nullable=True),
    Column("tokens_per_minute", Integer, nullable=True),
    Column("tokens_per_day", BigInteger, nullable=True),
    Column("tokens_per_month", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("org_id", Integer, nullable=True),
    Column("api_key_id", Integer, nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(200), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("latency_ms", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("detail", Text, nullable=True),
)
Index("ix_usage_key_time", usage_records.c.api_key_id, usage_records.c.created_at)
Index("ix_usage_org_time", usage_records.c.org_id, usage_records.c.created_at)

knowledge_bases = Table(
    "knowledge_bases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("embedding_model", String(200), nullable=False),
    Column("chunk_tokens", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    # Bumped by every change to its chunks: search caches compare it to know they are current.
    Column("version", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("metadata", JSON, nullable=True),  # the caller's key-value pairs (vector stores)
    UniqueConstraint("org_id", "name", name="uq_knowledge_bases_org_id_name"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kb_id", Integer, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Integer, nullable=False),
    # The caller's own id (a BEIR '_id', a path, a URL); unique in its knowledge base.
    Column("external_id", String(500), nullable=False),
    Column("title", Text, nullable=True),
    Column("source", Text, nullable=True),
    Column("content_type", String(200), nullable=True),
    Column("format", String(20), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("original", LargeBinary, nullable=True),
    Column("text", Text, nullable=False),
    Column("metadata", JSON, nullable=False),
    # pending (stored, not yet searchable) -> ready; failed with error
    Column("status", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("chunk_count", Integer, nullable=False, default=0),
    Column("job_id", BigInteger, nullable=True),  # the ingestion job that last touched it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kb_id", "external_id", name="uq_documents_kb_id_external_id"),
    Index("ix_documents_kb_id_status", "kb_id", "status"),
    Index("ix_documents_job_id", "job_id"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("document_id", BigId, ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("kb_id", Integer, nullable=False),
    Column("org_id", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("headings", JSON, nullable=False),
    Column("page_start", Integer, nullable=True),
    Column("page_end", Integer, nullable=True),
    Column("tokens", Integer, nullable=False),
    Column("embedding", LargeBinary, nullable=False),  # float32, little-endian, L2-normalised
    Index("ix_chunks_kb_id", "kb_id"),
    Index("ix_chunks_document_id", "document_id"),
)

ingestion_jobs = Table(
    "ingestion_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kb_id", Integer, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # staging | running | done
    Column("total", Integer, nullable=False, default=0),
    Column("done", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("errors", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

# A job's sources, written in the job's own transaction and removed, each in the transaction
# that stages it: a process killed while staging leaves exactly the sources still to do.
ingestion_items = Table(
    "ingestion_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("ingestion_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("kb_id", Integer, nullable=False),
    Column("external_id", String(500), nullable=False),
    Column("data", LargeBinary, nullable=True),  # a file's bytes
    Column("record", JSON, nullable=True),  # a text record: title, text
    Column("url", Text, nullable=True),  # fetched when staged
    Column("filename", Text, nullable=True),
    Column("content_type", String(200), nullable=True),
    Column("source", Text, nullable=True),
    Column("metadata", JSON, nullable=False),
    Column("error", Text, nullable=True),  # known bad already (a corpus line that is not JSON)
    Column("size", BigInteger, nullable=False, default=0),
    Index("ix_ingestion_items_job_id", "job_id", "id"),
)

# Files uploaded through OpenAI's /v1/files, to be added to vector stores (knowledge bases).
files = Table(
    "files",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("public_id", String(64), nullable=False, unique=True),  # file-<random>
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("filename", String(500), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("content_type", String(200), nullable=True),
    Column("bytes", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_files_org_id", "org_id"),
)

# An assistant's current definition; every change also writes an assistant_versions row.
# Deleting one archives it: its conversations stay readable, its name becomes free again.
assistants = Table(
    "assistants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("config", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=True),
)
Index(
    "uq_assistants_org_id_name_live",
    assistants.c.org_id,
    assistants.c.name,
    unique=True,
    sqlite_where=assistants.c.archived_at.is_(None),
    postgresql_where=assistants.c.archived_at.is_(None),
)

assistant_versions = Table(
    "assistant_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "assistant_id", Integer, ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False
    ),
    Column("version", Integer, nullable=False),
    Column("config", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("assistant_id", "version", name="uq_assistant_versions_assistant_id_version"),
)

# One per channel identity: a web visitor's random id, an API caller's own user id, a phone.
end_users = Table(
    "end_users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("external_id", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "org_id", "channel", "external_id", name="uq_end_users_org_id_channel_external_id"
    ),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "assistant_id", Integer, ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False
    ),
    Column("end_user_id", BigId, ForeignKey("end_users.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(32), nullable=False),
    # assistant (the AI answers) | handoff (waiting for a person) | human (a person answers)
    Column("status", String(20), nullable=False),
    Column("handoff_reason", Text, nullable=True),
    Column("handoff_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_conversations_assistant_id", "assistant_id"),
    Index("ix_conversations_end_user_id", "end_user_id"),
    Index("ix_conversations_org_id_status", "org_id", "status"),
)

turns = Table(
    "turns",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "conversation_id", BigId, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("org_id", Integer, nullable=False),
    Column("role", String(20), nullable=False),  # user | assistant | human
    Column("content", Text, nullable=False),
    Column("citations", JSON, nullable=False),
    Column("tool_calls", JSON, nullable=False),  # name, arguments, result or error, ms
    Column("assistant_version", Integer, nullable=True),
    Column("model", String(200), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("latency_ms", Float, nullable=True),
    # complete | partial (client gone) | failed | generating (being written) | interrupted
    Column("status", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("author", String(200), nullable=True),  # the operator who wrote a human turn
    # What governance did: provenance label id, disclosure shown, PII redacted, moderation.
    Column("governance", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Written while the reply streams (status generating): a stale one is recovered.
    Column("updated_at", DateTime(timezone=True), nullable=True),
    Index("ix_turns_conversation_id", "conversation_id"),
    Index("ix_turns_status", "status"),
)

# Facts an assistant saved about an end user with its remember tool.
memories = Table(
    "memories",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, nullable=False),
    Column(
        "assistant_id", Integer, ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False
    ),
    Column("end_user_id", BigId, ForeignKey("end_users.id", ondelete="CASCADE"), nullable=False),
    Column("fact", Text, nullable=False),
    Column("turn_id", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_memories_assistant_id_end_user_id", "assistant_id", "end_user_id"),
)

# Random keys made once per installation, shared by every replica through the database.
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# -- governance ------------------------------------------------------------------------------

# Append-only, hash-chained: each entry's hash covers its fields and the previous entry's hash.
# No foreign keys: entries outlive the organisations and keys they are about.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("org_id", Integer, nullable=True),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=True),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_org_id_seq", "org_id", "seq"),
)

# One row (id 1): the newest entry's sequence number and hash. Appenders lock it, so entries
# are chained one at a time; verification compares it with the log's last entry.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

org_policies = Table(
    "org_policies",
    metadata,
    Column(
        "org_id",
        Integer,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("policy", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# Every consent decision is a row; an end user's current answer for a purpose is the newest.
consents = Table(
    "consents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, nullable=False),
    Column("end_user_id", BigId, ForeignKey("end_users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("channel", String(32), nullable=False),
    Column("text_version", String(64), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_consents_end_user_id_purpose", "end_user_id", "purpose"),
)

# The review queue: end users' complaints about an answer and moderation flags.
reports = Table(
    "reports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, nullable=False),
    Column(
        "conversation_id", BigId, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("turn_id", BigId, ForeignKey("turns.id", ondelete="CASCADE"), nullable=False),
    Column("source", String(20), nullable=False),  # user | moderation
    Column("category", String(64), nullable=False),
    Column("reason", Text, nullable=True),
    Column("status", String(20), nullable=False),  # open | resolved
    Column("resolution", String(40), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Index("ix_reports_org_id_status", "org_id", "status"),
    Index("ix_reports_turn_id", "turn_id"),
)

# A hold keeps a subject's or a conversation's data from retention purges and erasure.
legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("end_user_id", BigId, nullable=True),
    Column("conversation_id", BigId, nullable=True),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("released_at", DateTime(timezone=True), nullable=True),
    Column("released_by", String(200), nullable=True),
    Index("ix_legal_holds_org_id", "org_id"),
)

# Periodic jobs shared by every replica: whoever moves next_run_at forward runs the job.
scheduled_jobs = Table(
    "scheduled_jobs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("last_run_at", DateTime(timezone=True), nullable=True),
    Column("last_status", String(20), nullable=True),
    Column("last_result", JSON, nullable=True),
)


# -- channels --------------------------------------------------------------------------------

# A messaging channel (a WhatsApp number, a Facebook page, an Instagram account, a Telegram
# bot) connected to one assistant. ``secrets`` is a Fernet token (concierge.secretbox).
channels = Table(
    "channels",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column(
        "assistant_id", Integer, ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False
    ),
    Column("type", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("config", JSON, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("status", String(20), nullable=False),  # active | disabled
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_channels_org_id", "org_id"),
)

# One per end user of a channel: their current conversation, the customer-service window, and
# the leases that keep one worker at a time on their inbound events and on their outbox.
channel_threads = Table(
    "channel_threads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel_id", String(32), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Integer, nullable=False),
    Column("sender", String(256), nullable=False),
    Column("conversation_id", BigInteger, nullable=True),
    Column("last_inbound_at", DateTime(timezone=True), nullable=True),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("locked_by", String(64), nullable=True),
    Column("send_locked_until", DateTime(timezone=True), nullable=True),
    Column("send_locked_by", String(64), nullable=True),
    UniqueConstraint("channel_id", "sender", name="uq_channel_threads_channel_id_sender"),
    Index("ix_channel_threads_conversation_id", "conversation_id"),
)

# The durable inbound queue: every event a platform delivered, stored before it is
# acknowledged, processed at least once, deduplicated on the platform's id.
channel_events = Table(
    "channel_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel_id", String(32), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Integer, nullable=False),
    Column("thread_id", BigInteger, nullable=True),
    Column("key", String(160), nullable=False),  # wamid, mid, update_id
    Column("kind", String(20), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(20), nullable=False),  # pending | done | failed | ignored
    Column("attempts", Integer, nullable=False),
    Column("available_at", DateTime(timezone=True), nullable=False),
    Column("error", Text, nullable=True),
    Column("turn_id", BigInteger, nullable=True),  # the user's turn it made
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("channel_id", "key", name="uq_channel_events_channel_id_key"),
    Index("ix_channel_events_status_available_at", "status", "available_at"),
    Index("ix_channel_events_thread_id", "thread_id"),
)

# The durable outbox: every message to send, sent in order per thread, retried with backoff.
channel_outbox = Table(
    "channel_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel_id", String(32), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    Column("org_id", Integer, nullable=False),
    Column("thread_id", BigInteger, nullable=False),
    Column("conversation_id", BigInteger, nullable=True),
    Column("turn_id", BigInteger, nullable=True),
    Column("dedupe", String(80), nullable=False),  # turn:<id>:<part>, ...: enqueued once
    Column("payload", JSON, nullable=False),
    # pending | sending | sent | delivered | read | failed | unknown
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("available_at", DateTime(timezone=True), nullable=False),
    Column("platform_id", String(160), nullable=True),
    Column("error", Text, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("channel_id", "dedupe", name="uq_channel_outbox_channel_id_dedupe"),
    Index("ix_channel_outbox_status_available_at", "status", "available_at"),
    Index("ix_channel_outbox_thread_id", "thread_id"),
    Index("ix_channel_outbox_turn_id", "turn_id"),
    Index("ix_channel_outbox_platform_id", "platform_id"),
)

# Images, voice notes, videos and documents customers sent, downloaded from the platform.
channel_media = Table(
    "channel_media",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, nullable=False),
    Column("channel_id", String(32), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    Column("thread_id", BigInteger, nullable=False),
    Column("turn_id", BigInteger, nullable=True),
    Column("kind", String(20), nullable=False),
    Column("mime_type", String(200), nullable=True),
    Column("filename", String(300), nullable=True),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_channel_media_thread_id", "thread_id"),
    Index("ix_channel_media_turn_id", "turn_id"),
)


# -- the inbox: people's side of conversations -----------------------------------------------

# People who answer customers (an account id until people sign in to the console).
inbox_agents = Table(
    "inbox_agents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("account", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("capacity", Integer, nullable=False),  # open conversations at once
    Column("available", Boolean, nullable=False),
    Column("last_assigned_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "account", name="uq_inbox_agents_org_id_account"),
)

inbox_teams = Table(
    "inbox_teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("assignment", String(20), nullable=False),  # manual | round_robin | capacity
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "name", name="uq_inbox_teams_org_id_name"),
)

inbox_team_members = Table(
    "inbox_team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("inbox_teams.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "agent_id", Integer, ForeignKey("inbox_agents.id", ondelete="CASCADE"), primary_key=True
    ),
)

# One per conversation people have had: its place in the inbox, the SLA, the CSAT answer.
inbox_items = Table(
    "inbox_items",
    metadata,
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("org_id", Integer, nullable=False),
    Column("channel", String(32), nullable=False),  # the conversation's, for filters and reports
    Column("assistant_id", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # open | pending | snoozed | resolved
    Column("snoozed_until", DateTime(timezone=True), nullable=True),
    Column("assignee_id", Integer, ForeignKey("inbox_agents.id", ondelete="SET NULL")),
    Column("team_id", Integer, ForeignKey("inbox_teams.id", ondelete="SET NULL")),
    Column("labels", JSON, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("first_response_at", DateTime(timezone=True), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("first_response_due", DateTime(timezone=True), nullable=True),
    Column("resolution_due", DateTime(timezone=True), nullable=True),
    Column("breaches", JSON, nullable=False),  # first_response | resolution
    Column("out_of_hours", Boolean, nullable=False),  # opened outside business hours
    Column("csat_score", Integer, nullable=True),
    Column("csat_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_inbox_items_org_id_status", "org_id", "status"),
    Index("ix_inbox_items_assignee_id", "assignee_id"),
)

inbox_notes = Table(
    "inbox_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, nullable=False),
    Column(
        "conversation_id", BigId, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("author", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_inbox_notes_conversation_id", "conversation_id"),
)

inbox_canned = Table(
    "inbox_canned",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("shortcut", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "shortcut", name="uq_inbox_canned_org_id_shortcut"),
)

# Business hours, SLA targets, CSAT and assignment defaults of an organisation.
inbox_settings = Table(
    "inbox_settings",
    metadata,
    Column(
        "org_id",
        Integer,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("config", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# How far the inbox has read the turns (one row): customers' messages reopen what waits on them.
inbox_cursor = Table(
    "inbox_cursor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("turn_id", BigInteger, nullable=False),
)
