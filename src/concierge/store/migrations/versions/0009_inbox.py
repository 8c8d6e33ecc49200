"""The inbox: agents, teams, the conversations people have, notes, canned responses, settings.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"],
        ["organizations.id"],
        name=f"fk_{table}_org_id_organizations",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "inbox_agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        _when("last_assigned_at", True),
        _when("created_at"),
        _org_fk("inbox_agents"),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_agents"),
        sa.UniqueConstraint("org_id", "account", name="uq_inbox_agents_org_id_account"),
    )
    op.create_table(
        "inbox_teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("assignment", sa.String(20), nullable=False),
        _when("created_at"),
        _org_fk("inbox_teams"),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_teams"),
        sa.UniqueConstraint("org_id", "name", name="uq_inbox_teams_org_id_name"),
    )
    op.create_table(
        "inbox_team_members",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["inbox_teams.id"],
            name="fk_inbox_team_members_team_id_inbox_teams",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["inbox_agents.id"],
            name="fk_inbox_team_members_agent_id_inbox_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "agent_id", name="pk_inbox_team_members"),
    )
    op.create_table(
        "inbox_items",
        sa.Column("conversation_id", BigId, autoincrement=False, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("assistant_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _when("snoozed_until", True),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        _when("opened_at"),
        _when("first_response_at", True),
        _when("resolved_at", True),
        _when("first_response_due", True),
        _when("resolution_due", True),
        sa.Column("breaches", sa.JSON(), nullable=False),
        sa.Column("out_of_hours", sa.Boolean(), nullable=False),
        sa.Column("csat_score", sa.Integer(), nullable=True),
        _when("csat_at", True),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_inbox_items_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["inbox_agents.id"],
            name="fk_inbox_items_assignee_id_inbox_agents",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["inbox_teams.id"],
            name="fk_inbox_items_team_id_inbox_teams",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_inbox_items"),
    )
    op.create_index("ix_inbox_items_org_id_status", "inbox_items", ["org_id", "status"])
    op.create_index("ix_inbox_items_assignee_id", "inbox_items", ["assignee_id"])
    op.create_table(
        "inbox_notes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", BigId, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_inbox_notes_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_notes"),
    )
    op.create_index("ix_inbox_notes_conversation_id", "inbox_notes", ["conversation_id"])
    op.create_table(
        "inbox_canned",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("shortcut", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _org_fk("inbox_canned"),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_canned"),
        sa.UniqueConstraint("org_id", "shortcut", name="uq_inbox_canned_org_id_shortcut"),
    )
    op.create_table(
        "inbox_settings",
        sa.Column("org_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        _when("updated_at"),
        _org_fk("inbox_settings"),
        sa.PrimaryKeyConstraint("org_id", name="pk_inbox_settings"),
    )
    op.create_table(
        "inbox_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("turn_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_cursor"),
    )


def downgrade() -> None:
    for table in (
        "inbox_cursor",
        "inbox_settings",
        "inbox_canned",
        "inbox_notes",
        "inbox_items",
        "inbox_team_members",
        "inbox_teams",
        "inbox_agents",
    ):
        op.drop_table(table)
