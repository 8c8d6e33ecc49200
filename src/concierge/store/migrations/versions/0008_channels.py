"""Messaging channels: channels, their threads, the durable inbound queue, the outbox, media.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _channel_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["channel_id"], ["channels.id"], name=f"fk_{table}_channel_id_channels", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("assistant_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name="fk_channels_org_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assistant_id"],
            ["assistants.id"],
            name="fk_channels_assistant_id_assistants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
    )
    op.create_index("ix_channels_org_id", "channels", ["org_id"])

    op.create_table(
        "channel_threads",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        _when("last_inbound_at", True),
        _when("locked_until", True),
        sa.Column("locked_by", sa.String(64), nullable=True),
        _when("send_locked_until", True),
        sa.Column("send_locked_by", sa.String(64), nullable=True),
        _channel_fk("channel_threads"),
        sa.PrimaryKeyConstraint("id", name="pk_channel_threads"),
        sa.UniqueConstraint("channel_id", "sender", name="uq_channel_threads_channel_id_sender"),
    )
    op.create_index("ix_channel_threads_conversation_id", "channel_threads", ["conversation_id"])

    op.create_table(
        "channel_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("available_at"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("turn_id", sa.BigInteger(), nullable=True),
        _when("received_at"),
        _when("processed_at", True),
        _channel_fk("channel_events"),
        sa.PrimaryKeyConstraint("id", name="pk_channel_events"),
        sa.UniqueConstraint("channel_id", "key", name="uq_channel_events_channel_id_key"),
    )
    op.create_index(
        "ix_channel_events_status_available_at", "channel_events", ["status", "available_at"]
    )
    op.create_index("ix_channel_events_thread_id", "channel_events", ["thread_id"])

    op.create_table(
        "channel_outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        sa.Column("turn_id", sa.BigInteger(), nullable=True),
        sa.Column("dedupe", sa.String(80), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("available_at"),
        sa.Column("platform_id", sa.String(160), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        _when("created_at"),
        _when("sent_at", True),
        _when("updated_at"),
        _channel_fk("channel_outbox"),
        sa.PrimaryKeyConstraint("id", name="pk_channel_outbox"),
        sa.UniqueConstraint("channel_id", "dedupe", name="uq_channel_outbox_channel_id_dedupe"),
    )
    op.create_index(
        "ix_channel_outbox_status_available_at", "channel_outbox", ["status", "available_at"]
    )
    op.create_index("ix_channel_outbox_thread_id", "channel_outbox", ["thread_id"])
    op.create_index("ix_channel_outbox_turn_id", "channel_outbox", ["turn_id"])
    op.create_index("ix_channel_outbox_platform_id", "channel_outbox", ["platform_id"])

    op.create_table(
        "channel_media",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("turn_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("mime_type", sa.String(200), nullable=True),
        sa.Column("filename", sa.String(300), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _when("created_at"),
        _channel_fk("channel_media"),
        sa.PrimaryKeyConstraint("id", name="pk_channel_media"),
    )
    op.create_index("ix_channel_media_thread_id", "channel_media", ["thread_id"])
    op.create_index("ix_channel_media_turn_id", "channel_media", ["turn_id"])


def downgrade() -> None:
    for table in (
        "channel_media",
        "channel_outbox",
        "channel_events",
        "channel_threads",
        "channels",
    ):
        op.drop_table(table)
