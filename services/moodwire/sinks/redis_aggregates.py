"""Live per brand x source x minute aggregates in Redis, exact under redelivery.

Key layout (no TTLs; ``{mv}`` is the model version, ``{minute}`` the UTC epoch second at
which the post's ``created_at`` minute starts; brand ``*`` counts every post once whatever
brands it names, brand ``(none)`` the posts that name no brand):

=========================================  ======  =========================================
key                                        type    content
=========================================  ======  =========================================
``mw:agg:{mv}:{brand}:{source}:{minute}``  hash    ``n neg neu pos score_sum`` of one minute
``mw:minutes:{mv}:{brand}:{source}``       zset    the minutes that have a bucket (member =
                                                   score = ``{minute}``), for range queries
``mw:totals:{mv}:{brand}``                 hash    ``n neg neu pos score_sum`` since the start
``mw:brands:{mv}`` / ``mw:sources:{mv}``   set     brands / sources seen under that version
``mw:versions``                            set     model versions that have aggregates
``mw:wm:{mv}:{topic}``                     hash    partition -> highest offset counted
=========================================  ======  =========================================

``score`` is ``p_positive - p_negative``; the mean score of a bucket is ``score_sum / n``.

Why a watermark and not a batch id: after a crash the same records come back in batches
cut differently, so a "batch already applied" marker cannot recognise them. Offsets can:
within a partition they only grow, so "every offset <= W was counted" is one number per
partition. The Lua script checks the watermark, applies the increments and moves the
watermark in one atomic step, so no crash can separate "counted" from "remembered as
counted". Keys are built inside the script, so this needs a single Redis node (not
Redis Cluster).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

ALL_BRANDS = "*"
NO_BRAND = "(none)"
_FIELDS = ("n", "neg", "neu", "pos", "score_sum")
_NO_OFFSET = 2**62  # "no record included": larger than any Kafka offset

# ARGV: mv topic partition prev_excluded first_included last_offset
#       nb [brand source minute n neg neu pos score_sum]*nb  nt [brand n neg neu pos sum]*nt
# Returns {1, cur} applied, {0, cur} all already counted, {-1, cur} the caller assumed
# another watermark: recompute for records above cur and call again.
_APPLY_LUA = """
local mv, topic, part = ARGV[1], ARGV[2], ARGV[3]
local prev_ex, first_in, last = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local wm_key = 'mw:wm:' .. mv .. ':' .. topic
local cur = tonumber(redis.call('HGET', wm_key, part) or '-1')
if cur >= last then return {0, cur} end
if cur < prev_ex or cur >= first_in then return {-1, cur} end
local fields = {'n', 'neg', 'neu', 'pos'}
local i = 7
local nb = tonumber(ARGV[i]); i = i + 1
for _ = 1, nb do
  local brand, source, minute = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = 'mw:agg:' .. mv .. ':' .. brand .. ':' .. source .. ':' .. minute
  for f = 1, 4 do
    local v = ARGV[i + 2 + f]
    if v ~= '0' then redis.call('HINCRBY', key, fields[f], v) end
  end
  redis.call('HINCRBYFLOAT', key, 'score_sum', ARGV[i + 7])
  redis.call('ZADD', 'mw:minutes:' .. mv .. ':' .. brand .. ':' .. source, 'NX', minute, minute)
  redis.call('SADD', 'mw:sources:' .. mv, source)
  i = i + 8
end
local nt = tonumber(ARGV[i]); i = i + 1
for _ = 1, nt do
  local brand = ARGV[i]
  local key = 'mw:totals:' .. mv .. ':' .. brand
  for f = 1, 4 do
    local v = ARGV[i + f]
    if v ~= '0' then redis.call('HINCRBY', key, fields[f], v) end
  end
  redis.call('HINCRBYFLOAT', key, 'score_sum', ARGV[i + 5])
  redis.call('SADD', 'mw:brands:' .. mv, brand)
  i = i + 6
end
if nb > 0 then redis.call('SADD', 'mw:versions', mv) end
redis.call('HSET', wm_key, part, last)
return {1, cur}
"""


@dataclass(frozen=True, slots=True)
class Countable:
    """One scored post at its Kafka position, as the aggregates see it."""

    partition: int
    offset: int
    source: str
    minute: int  # epoch second of the start of created_at's minute
    brands: tuple[str, ...]
    label: int  # 0 negative, 1 neutral, 2 positive
    score: float
    # False when Postgres already held this post's score: it was counted when first stored.
    new: bool = True


@dataclass(frozen=True, slots=True)
class Bucket:
    n: int
    neg: int
    neu: int
    pos: int
    score_sum: float


def brand_keys(brands: Sequence[str]) -> tuple[str, ...]:
    """The aggregate brands one post counts under: its brands (or ``(none)``) and ``*``."""
    return (*(brands or (NO_BRAND,)), ALL_BRANDS)


def _add(acc: list[float], label: int, score: float) -> None:
    acc[0] += 1
    acc[1 + label] += 1
    acc[4] += score


def _fmt(acc: list[float]) -> list[str]:
    return [str(int(acc[0])), str(int(acc[1])), str(int(acc[2])), str(int(acc[3])), repr(acc[4])]


class RedisAggregates:
    """Applies counted posts to the aggregates, and reads them back (status, tests)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._apply = client.register_script(_APPLY_LUA)

    def close(self) -> None:
        self._client.close()

    def apply(self, model_version: str, topic: str, records: Sequence[Countable]) -> int:
        """Count every record not counted before; returns how many were counted now.

        Records of one partition must come in offset order (as Kafka delivers them).
        """
        by_partition: dict[int, list[Countable]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        counted = 0
        for partition, items in by_partition.items():
            counted += self._apply_partition(model_version, topic, partition, items)
        return counted

    def _apply_partition(
        self, model_version: str, topic: str, partition: int, items: list[Countable]
    ) -> int:
        last = items[-1].offset
        assumed = -1  # first guess: nothing of this batch is counted yet
        while True:
            included = [r for r in items if r.new and r.offset > assumed]
            excluded = [r.offset for r in items if r.new and r.offset <= assumed]
            first_in = included[0].offset if included else _NO_OFFSET
            prev_ex = excluded[-1] if excluded else -1
            args: list[Any] = [model_version, topic, partition, prev_ex, first_in, last]
            args.extend(self._encode(included))
            status, current = self._apply(keys=[], args=args)
            if int(status) == 1:
                return len(included)
            if int(status) == 0:
                return 0
            assumed = int(current)

    @staticmethod
    def _encode(records: Iterable[Countable]) -> list[str]:
        buckets: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
        for r in records:
            for brand in brand_keys(r.brands):
                _add(buckets[(brand, r.source, r.minute)], r.label, r.score)
                _add(totals[brand], r.label, r.score)
        out: list[str] = [str(len(buckets))]
        for (brand, source, minute), acc in buckets.items():
            out.extend((brand, source, str(minute)))
            out.extend(_fmt(acc))
        out.append(str(len(totals)))
        for brand, acc in totals.items():
            out.append(brand)
            out.extend(_fmt(acc))
        return out

    # --- reading ----------------------------------------------------------------------

    def totals(self, model_version: str) -> dict[str, Bucket]:
        """Per-brand totals since the start (``*`` = all posts once, ``(none)`` = no brand)."""
        brands = sorted(as_text(b) for b in self._client.smembers(f"mw:brands:{model_version}"))
        pipe = self._client.pipeline(transaction=False)
        for brand in brands:
            pipe.hgetall(f"mw:totals:{model_version}:{brand}")
        return {b: bucket_from_hash(h) for b, h in zip(brands, pipe.execute(), strict=True)}

    def buckets(self, model_version: str) -> dict[tuple[str, str, int], Bucket]:
        """Every (brand, source, minute) bucket: for tests and exports, not for hot paths."""
        prefix = f"mw:agg:{model_version}:"
        keys = [as_text(k) for k in self._client.scan_iter(match=prefix + "*", count=1000)]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        out: dict[tuple[str, str, int], Bucket] = {}
        for key, raw in zip(keys, pipe.execute(), strict=True):
            # Brand ids never contain ':' (brands.py), minutes never do; sources may.
            brand, rest = key[len(prefix) :].split(":", 1)
            source, minute = rest.rsplit(":", 1)
            out[(brand, source, int(minute))] = bucket_from_hash(raw)
        return out

    def watermarks(self, model_version: str, topic: str) -> dict[int, int]:
        raw = self._client.hgetall(f"mw:wm:{model_version}:{topic}")
        return {int(as_text(k)): int(as_text(v)) for k, v in raw.items()}


def as_text(value: Any) -> str:
    """A Redis reply as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def bucket_from_hash(raw: Mapping[Any, Any]) -> Bucket:
    """A bucket from the ``HGETALL`` of an aggregate hash (missing fields are zero)."""
    values = {as_text(k): as_text(v) for k, v in raw.items()}
    return Bucket(
        n=int(values.get("n", 0)),
        neg=int(values.get("neg", 0)),
        neu=int(values.get("neu", 0)),
        pos=int(values.get("pos", 0)),
        score_sum=float(values.get("score_sum", 0.0)),
    )
