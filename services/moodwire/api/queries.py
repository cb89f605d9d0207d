"""Read-only Postgres queries of the live page (parameterised SQLAlchemy Core)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import Connection, func, select

from moodwire.aggregates.keys import NO_BRAND
from moodwire.db import tables
from moodwire.model.labels import LABELS


def recent_posts(
    conn: Connection,
    model_version: str,
    *,
    brand: str | None = None,
    sentiment: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest scored posts (event time) of the serving version, optionally filtered."""
    post, score = tables.Post, tables.Score
    query = (
        select(
            post.source,
            post.source_id,
            post.text,
            post.created_at,
            post.author,
            post.url,
            post.brands,
            score.label,
            score.score,
        )
        .join(score, (score.source == post.source) & (score.source_id == post.source_id))
        .where(score.model_version == model_version)
        # Deleted posts still count in the figures, but are never shown.
        .where(post.deleted_at.is_(None))
    )
    if brand == NO_BRAND:
        query = query.where(func.cardinality(post.brands) == 0)
    elif brand is not None:
        # Array containment, so the GIN index on posts.brands serves it.
        query = query.where(post.brands.contains([brand]))
    if sentiment is not None:
        query = query.where(score.label == LABELS.index(sentiment))
    query = query.order_by(post.created_at.desc()).limit(limit)
    return [
        {
            "source": row.source,
            "id": row.source_id,
            "text": row.text,
            "created_at": row.created_at.astimezone(UTC).isoformat(),
            "author": row.author,
            "url": row.url,
            "brands": list(row.brands or []),
            "sentiment": LABELS[row.label],
            "score": round(float(row.score), 4),
        }
        for row in conn.execute(query)
    ]
