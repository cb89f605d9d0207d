"""rollups: per-minute aggregates in Postgres, topic incarnations, dead-letter origins

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollups",
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("neg", sa.BigInteger(), nullable=False),
        sa.Column("neu", sa.BigInteger(), nullable=False),
        sa.Column("pos", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("model_version", "brand", "source", "minute"),
    )
    # Rollups of the score rows already stored (the same buckets the writer keeps).
    op.execute(
        """
        INSERT INTO rollups (model_version, brand, source, minute, n, neg, neu, pos, score_sum, rev)
        SELECT s.model_version, b.brand, p.source,
               to_timestamp(floor(extract(epoch FROM p.created_at) / 60) * 60),
               count(*), count(*) FILTER (WHERE s.label = 0), count(*) FILTER (WHERE s.label = 1),
               count(*) FILTER (WHERE s.label = 2), sum(s.score), 1
        FROM scores s
        JOIN posts p ON p.source = s.source AND p.source_id = s.source_id
        CROSS JOIN LATERAL (
            SELECT unnest(
                CASE WHEN cardinality(p.brands) = 0 THEN ARRAY['(none)'] ELSE p.brands END
            )
            UNION ALL SELECT '*'
        ) AS b(brand)
        GROUP BY 1, 2, 3, 4
        """
    )
    op.add_column("dead_letters", sa.Column("origin_key", sa.Text(), nullable=True))
    op.execute(
        """
        UPDATE dead_letters SET origin_key = CASE
            WHEN topic IS NULL THEN 'row:' || id
            ELSE 'position:' || topic || ':' || partition || ':' || "offset" END
        """
    )
    op.alter_column("dead_letters", "origin_key", nullable=False)
    op.drop_constraint("dead_letters_position_uq", "dead_letters", type_="unique")
    op.create_unique_constraint("dead_letters_origin_key_uq", "dead_letters", ["origin_key"])


def downgrade() -> None:
    op.drop_constraint("dead_letters_origin_key_uq", "dead_letters", type_="unique")
    # Positions may repeat once topics were recreated: keep the first row of each.
    op.execute(
        """
        DELETE FROM dead_letters d USING dead_letters e
        WHERE d.topic = e.topic AND d.partition = e.partition AND d."offset" = e."offset"
          AND d.id > e.id
        """
    )
    op.create_unique_constraint(
        "dead_letters_position_uq", "dead_letters", ["topic", "partition", "offset"]
    )
    op.drop_column("dead_letters", "origin_key")
    op.drop_table("rollups")
