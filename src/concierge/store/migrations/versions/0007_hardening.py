"""Hardening: API key scopes split by what they may change; replies on record while they are
written.

Turns get ``updated_at`` (a reply being written is saved about once a second; one nobody has
saved for a while belongs to a process that stopped, and is marked ``interrupted``) and an
index on ``status`` to find those. ``ingestion_items`` holds a job's sources, written with the
job and removed as each is staged, so staging is atomic and resumes after a crash.

Before, ``admin`` reached every organisation and ``inference`` could rewrite assistants,
tools and knowledge. Existing keys keep what they were made for and lose what they should never
have had:

- an ``admin`` key of the ``default`` organisation (the bootstrap key and any made like it:
  they ran the installation) becomes ``platform``;
- an ``admin`` key of any other organisation stays ``admin``, now of that organisation only;
- an ``inference`` key becomes ``inference,knowledge`` (it keeps managing the knowledge bases,
  files and vector stores its application uploads), and no longer changes assistants, the
  human queue or the review queue (``admin`` and ``inbox`` do);
- ``widget`` keys are unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_keys = sa.table(
    "api_keys", sa.column("id", sa.Integer), sa.column("org_id"), sa.column("scopes", sa.String)
)
_orgs = sa.table("organizations", sa.column("id", sa.Integer), sa.column("slug", sa.String))


def _migrated(scopes: set[str], default_org: bool) -> set[str]:
    out = set(scopes)
    if "admin" in out and default_org:
        out = (out - {"admin"}) | {"platform"}
    if "inference" in out:
        out.add("knowledge")
    return out


def _restored(scopes: set[str]) -> set[str]:
    out = set(scopes) - {"knowledge", "inbox"}
    if "platform" in out:
        out = (out - {"platform"}) | {"admin"}
    return out or {"inference"}


def _rewrite(change: object) -> None:
    conn = op.get_bind()
    default = conn.execute(sa.select(_orgs.c.id).where(_orgs.c.slug == "default")).scalar()
    for row in conn.execute(sa.select(_keys.c.id, _keys.c.org_id, _keys.c.scopes)).all():
        before = set(str(row.scopes).split(","))
        after = change(before, row.org_id == default)  # type: ignore[operator]
        if after != before:
            conn.execute(
                sa.update(_keys).where(_keys.c.id == row.id).values(scopes=",".join(sorted(after)))
            )


def upgrade() -> None:
    _rewrite(_migrated)
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_turns_status", "turns", ["status"])
    op.create_table(
        "ingestion_items",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("kb_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(500), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(200), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["ingestion_jobs.id"],
            name="fk_ingestion_items_job_id_ingestion_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_items"),
    )
    op.create_index("ix_ingestion_items_job_id", "ingestion_items", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ingestion_items_job_id", table_name="ingestion_items")
    op.drop_table("ingestion_items")
    op.drop_index("ix_turns_status", table_name="turns")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("updated_at")
    _rewrite(lambda scopes, _default: _restored(scopes))
