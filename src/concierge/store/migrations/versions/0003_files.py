"""Uploaded files (OpenAI's /v1/files) and metadata on knowledge bases (vector stores).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("public_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.Integer, nullable=False),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name="fk_files_org_id_organizations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("public_id", name="uq_files_public_id"),
    )
    op.create_index("ix_files_org_id", "files", ["org_id"])
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.add_column(sa.Column("metadata", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.drop_column("metadata")
    op.drop_index("ix_files_org_id", table_name="files")
    op.drop_table("files")
