"""connectors: cursors per source partition; deleted and edited posts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_cursors",
        sa.Column("connector", sa.Text(), nullable=False),
        sa.Column("partition", sa.Text(), nullable=False),
        sa.Column("cursor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("connector", "partition"),
    )
    op.add_column("posts", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("posts", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "post_edits",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source", "source_id"], ["posts.source", "posts.source_id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("source", "source_id", "edited_at"),
    )


def downgrade() -> None:
    op.drop_table("post_edits")
    op.drop_column("posts", "edited_at")
    op.drop_column("posts", "deleted_at")
    op.drop_table("connector_cursors")
