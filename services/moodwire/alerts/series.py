"""Reading per-minute series back out of the Redis copy of the aggregates (layout and
reader: ``moodwire.aggregates``), for the alert detector and the live page.

Series are summed over sources unless one source is asked for, and read with two
pipelined round trips whatever the number of brands, sources and minutes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import redis

from moodwire.aggregates.keys import Bucket
from moodwire.aggregates.redis_copy import RedisCopy

MINUTE = 60
EMPTY = Bucket(n=0, neg=0, neu=0, pos=0, score_sum=0.0)

# brand -> minute (epoch second) -> counts
Series = dict[str, dict[int, Bucket]]


def add(a: Bucket, b: Bucket) -> Bucket:
    return Bucket(a.n + b.n, a.neg + b.neg, a.neu + b.neu, a.pos + b.pos, a.score_sum + b.score_sum)


def brands(client: redis.Redis, model_version: str) -> list[str]:
    """Every aggregate brand of the version, ``*`` and ``(none)`` included."""
    return RedisCopy(client).brands(model_version)


def sources(client: redis.Redis, model_version: str) -> list[str]:
    return RedisCopy(client).sources(model_version)


def newest_minute(
    client: redis.Redis, model_version: str, *, now: float | None = None
) -> int | None:
    """The event-time watermark: the newest minute holding any post, never past the clock.

    Capped at the current minute so that one post stamped in the future cannot close
    every window early.
    """
    newest = RedisCopy(client).newest_minutes(model_version)
    if not newest:
        return None
    clock = int(time.time() if now is None else now) // MINUTE * MINUTE
    return min(max(newest), clock)


def read_minutes(
    client: redis.Redis,
    model_version: str,
    start: int,
    end: int,
    *,
    only_brands: Iterable[str] | None = None,
    source: str | None = None,
) -> Series:
    """Buckets of minutes ``start <= minute < end`` per brand (summed over sources)."""
    copy = RedisCopy(client)
    wanted = copy.brands(model_version) if only_brands is None else sorted(set(only_brands))
    wanted_sources = copy.sources(model_version) if source is None else [source]
    pairs = [(b, s) for b in wanted for s in wanted_sources]
    out: Series = defaultdict(dict)
    for brand, _, minute, bucket in copy.minute_buckets(model_version, pairs, start, end):
        series = out[brand]
        series[minute] = add(series.get(minute, EMPTY), bucket)
    for brand in wanted:
        out.setdefault(brand, {})
    return dict(out)
