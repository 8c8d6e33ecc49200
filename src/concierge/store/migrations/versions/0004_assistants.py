"""Assistants and their versions; end users, conversations, turns and memories.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("archived_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_assistants"),
        _fk("assistants", "org_id", "organizations"),
    )
    op.create_index(
        "uq_assistants_org_id_name_live",
        "assistants",
        ["org_id", "name"],
        unique=True,
        sqlite_where=sa.text("archived_at IS NULL"),
        postgresql_where=sa.text("archived_at IS NULL"),
    )
    op.create_table(
        "assistant_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assistant_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assistant_versions"),
        _fk("assistant_versions", "assistant_id", "assistants"),
        sa.UniqueConstraint(
            "assistant_id", "version", name="uq_assistant_versions_assistant_id_version"
        ),
    )
    op.create_table(
        "end_users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("last_seen_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_end_users"),
        _fk("end_users", "org_id", "organizations"),
        sa.UniqueConstraint(
            "org_id", "channel", "external_id", name="uq_end_users_org_id_channel_external_id"
        ),
    )
    op.create_table(
        "conversations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("assistant_id", sa.Integer, nullable=False),
        sa.Column("end_user_id", BigId, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("handoff_reason", sa.Text, nullable=True),
        sa.Column("handoff_at", When, nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        _fk("conversations", "org_id", "organizations"),
        _fk("conversations", "assistant_id", "assistants"),
        _fk("conversations", "end_user_id", "end_users"),
    )
    op.create_index("ix_conversations_assistant_id", "conversations", ["assistant_id"])
    op.create_index("ix_conversations_end_user_id", "conversations", ["end_user_id"])
    op.create_index("ix_conversations_org_id_status", "conversations", ["org_id", "status"])
    op.create_table(
        "turns",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", BigId, nullable=False),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("citations", sa.JSON, nullable=False),
        sa.Column("tool_calls", sa.JSON, nullable=False),
        sa.Column("assistant_version", sa.Integer, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        _fk("turns", "conversation_id", "conversations"),
    )
    op.create_index("ix_turns_conversation_id", "turns", ["conversation_id"])
    op.create_table(
        "memories",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("assistant_id", sa.Integer, nullable=False),
        sa.Column("end_user_id", BigId, nullable=False),
        sa.Column("fact", sa.Text, nullable=False),
        sa.Column("turn_id", sa.BigInteger, nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
        _fk("memories", "assistant_id", "assistants"),
        _fk("memories", "end_user_id", "end_users"),
    )
    op.create_index(
        "ix_memories_assistant_id_end_user_id", "memories", ["assistant_id", "end_user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_memories_assistant_id_end_user_id", table_name="memories")
    op.drop_table("memories")
    op.drop_index("ix_turns_conversation_id", table_name="turns")
    op.drop_table("turns")
    for index in (
        "ix_conversations_org_id_status",
        "ix_conversations_end_user_id",
        "ix_conversations_assistant_id",
    ):
        op.drop_index(index, table_name="conversations")
    op.drop_table("conversations")
    op.drop_table("end_users")
    op.drop_table("assistant_versions")
    op.drop_index("uq_assistants_org_id_name_live", table_name="assistants")
    op.drop_table("assistants")
