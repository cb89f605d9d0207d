"""Reading per-minute series back out of the Redis aggregates (layout:
``moodwire.sinks.redis_aggregates``), for the alert detector and the live page.

Series are summed over sources unless one source is asked for, and read with two
pipelined round trips whatever the number of brands, sources and minutes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import redis

from moodwire.sinks.redis_aggregates import ALL_BRANDS, Bucket, as_text, bucket_from_hash

MINUTE = 60
EMPTY = Bucket(n=0, neg=0, neu=0, pos=0, score_sum=0.0)

# brand -> minute (epoch second) -> counts
Series = dict[str, dict[int, Bucket]]


def add(a: Bucket, b: Bucket) -> Bucket:
    return Bucket(a.n + b.n, a.neg + b.neg, a.neu + b.neu, a.pos + b.pos, a.score_sum + b.score_sum)


def brands(client: redis.Redis, model_version: str) -> list[str]:
    """Every aggregate brand of the version, ``*`` and ``(none)`` included."""
    return sorted(as_text(b) for b in client.smembers(f"mw:brands:{model_version}"))


def sources(client: redis.Redis, model_version: str) -> list[str]:
    return sorted(as_text(s) for s in client.smembers(f"mw:sources:{model_version}"))


def newest_minute(
    client: redis.Redis, model_version: str, *, now: float | None = None
) -> int | None:
    """The event-time watermark: the newest minute holding any post, never past the clock.

    Capped at the current minute so that one post stamped in the future cannot close
    every window early.
    """
    pipe = client.pipeline(transaction=False)
    for source in sources(client, model_version):
        pipe.zrevrange(f"mw:minutes:{model_version}:{ALL_BRANDS}:{source}", 0, 0)
    newest = [int(as_text(top[0])) for top in pipe.execute() if top]
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
    wanted = brands(client, model_version) if only_brands is None else sorted(set(only_brands))
    wanted_sources = sources(client, model_version) if source is None else [source]
    pairs = [(b, s) for b in wanted for s in wanted_sources]
    pipe = client.pipeline(transaction=False)
    for brand, src in pairs:
        pipe.zrangebyscore(f"mw:minutes:{model_version}:{brand}:{src}", start, f"({end}")
    keys: list[tuple[str, int, str]] = []
    for (brand, src), minutes in zip(pairs, pipe.execute(), strict=True):
        for minute in minutes:
            m = int(as_text(minute))
            keys.append((brand, m, f"mw:agg:{model_version}:{brand}:{src}:{m}"))
    pipe = client.pipeline(transaction=False)
    for _, _, key in keys:
        pipe.hgetall(key)
    out: Series = defaultdict(dict)
    for (brand, minute, _), raw in zip(keys, pipe.execute(), strict=True):
        series = out[brand]
        series[minute] = add(series.get(minute, EMPTY), bucket_from_hash(raw))
    for brand in wanted:
        out.setdefault(brand, {})
    return dict(out)
