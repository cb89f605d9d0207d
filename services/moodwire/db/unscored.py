"""How many posts were stored without a sentiment because of their language, per brand
and language (the ``unscored_minutes`` rollup the processor writes with the posts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from moodwire.db import tables


def unscored_counts(
    conn: Connection, *, since: datetime | None = None, source_like: str | None = None
) -> dict[str, dict[str, int]]:
    """``{brand: {lang: posts}}``, brands as the aggregates name them (``*`` is every post
    once, ``(none)`` the posts naming no brand); languages most frequent first."""
    row = tables.UnscoredMinute
    query = select(row.brand, row.lang, func.sum(row.n)).group_by(row.brand, row.lang)
    if since is not None:
        query = query.where(row.minute >= since)
    if source_like is not None:
        query = query.where(row.source.like(source_like))
    out: dict[str, dict[str, int]] = {}
    for brand, lang, n in sorted(conn.execute(query), key=lambda r: (r[0], -int(r[2]), r[1])):
        out.setdefault(str(brand), {})[str(lang)] = int(n)
    return out
