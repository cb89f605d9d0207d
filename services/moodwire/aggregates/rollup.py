"""The per-minute rollups in Postgres: the source of truth of every aggregate.

One row per model version x brand x source x minute (``rollups``): ``n neg neu pos
score_sum`` and ``rev``, which grows by one with every transaction that changes the row.
The sink calls :func:`count_new` inside the transaction that inserts the score rows,
with the posts whose score row is new in it, so a redelivered, replayed or re-scored post
is never counted twice, and a rolled-back batch counts nothing. Rows are upserted in key
order, so two workers touching the same minutes lock them in the same order.

What it returns are the rows as they now stand (absolute values and ``rev``): the Redis
copy stores those, never increments, so writing them twice or late changes nothing
(``redis_copy``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values

from moodwire.aggregates.keys import brand_keys
from moodwire.records import ScoredPost

BucketKey = tuple[str, str, int]  # brand, source, minute (epoch second)

_UPSERT = """
INSERT INTO rollups (model_version, brand, source, minute, n, neg, neu, pos, score_sum, rev)
VALUES %s
ON CONFLICT (model_version, brand, source, minute) DO UPDATE SET
    n = rollups.n + EXCLUDED.n, neg = rollups.neg + EXCLUDED.neg,
    neu = rollups.neu + EXCLUDED.neu, pos = rollups.pos + EXCLUDED.pos,
    score_sum = rollups.score_sum + EXCLUDED.score_sum, rev = rollups.rev + 1
RETURNING brand, source, extract(epoch FROM minute)::bigint, n, neg, neu, pos, score_sum, rev
"""
_UPSERT_TEMPLATE = "(%s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, 1)"
_SELECT = """
SELECT brand, source, extract(epoch FROM minute)::bigint, n, neg, neu, pos, score_sum, rev
FROM rollups
WHERE model_version = %s AND (brand, source, minute) IN (VALUES {values})
"""
SELECT_ALL = """
SELECT brand, source, extract(epoch FROM minute)::bigint, n, neg, neu, pos, score_sum, rev
FROM rollups WHERE model_version = %s
"""
_VERSIONS = "SELECT DISTINCT model_version FROM rollups ORDER BY 1"


@dataclass(frozen=True, slots=True)
class RollupRow:
    """One rollup as Postgres holds it."""

    model_version: str
    brand: str
    source: str
    minute: int
    n: int
    neg: int
    neu: int
    pos: int
    score_sum: float
    rev: int

    @property
    def key(self) -> BucketKey:
        return (self.brand, self.source, self.minute)


def minute_of_post(scored: ScoredPost) -> int:
    """Epoch second of the start of the post's event-time minute (the bucket)."""
    return int(scored.post.created_at.timestamp()) // 60 * 60


def bucket_keys(scored: ScoredPost) -> Iterator[BucketKey]:
    minute = minute_of_post(scored)
    for brand in brand_keys(scored.brands):
        yield (brand, scored.post.source, minute)


def deltas(posts: Iterable[ScoredPost]) -> dict[BucketKey, list[float]]:
    """``[n, neg, neu, pos, score_sum]`` to add per bucket for ``posts``."""
    out: dict[BucketKey, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for s in posts:
        score = s.score
        for key in bucket_keys(s):
            acc = out[key]
            acc[0] += 1
            acc[1 + s.label] += 1
            acc[4] += score
    return out


def row_of(mv: str, raw: Sequence[Any]) -> RollupRow:
    return RollupRow(
        mv,
        str(raw[0]),
        str(raw[1]),
        int(raw[2]),
        int(raw[3]),
        int(raw[4]),
        int(raw[5]),
        int(raw[6]),
        float(raw[7]),
        int(raw[8]),
    )


def count_new(
    cur: Any, model_version: str, new: Sequence[ScoredPost], touched: Sequence[ScoredPost] = ()
) -> list[RollupRow]:
    """Add ``new`` (score rows inserted by this transaction) to the rollups; returns the
    rows of every bucket of ``new`` and ``touched`` as they stand in this transaction.

    ``touched`` are posts of the batch that were stored before (a redelivery): their
    buckets are read back, not changed, so the Redis copy of a batch whose first delivery
    died between the commit and Redis is completed by the redelivery.
    """
    add = deltas(new)
    rows: list[RollupRow] = []
    if add:
        values = [
            (model_version, b, s, m, int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4])
            for (b, s, m), a in sorted(add.items())
        ]
        returned = execute_values(
            cur, _UPSERT, values, template=_UPSERT_TEMPLATE, page_size=len(values), fetch=True
        )
        rows.extend(row_of(model_version, r) for r in returned)
    rest = sorted({k for s in touched for k in bucket_keys(s)} - add.keys())
    if rest:
        placeholders = ",".join(["(%s, %s, to_timestamp(%s))"] * len(rest))
        cur.execute(
            _SELECT.format(values=placeholders),
            [model_version, *(part for key in rest for part in key)],
        )
        rows.extend(row_of(model_version, r) for r in cur.fetchall())
    return rows


def read_all(cur: Any, model_version: str) -> list[RollupRow]:
    """Every rollup of a version (for a rebuild)."""
    cur.execute(SELECT_ALL, [model_version])
    return [row_of(model_version, r) for r in cur.fetchall()]


def versions(cur: Any) -> list[str]:
    cur.execute(_VERSIONS)
    return [str(r[0]) for r in cur.fetchall()]
