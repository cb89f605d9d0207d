"""RedisAggregates on a real Redis: exact under redelivery with any batch boundaries."""

from __future__ import annotations

import random

import redis

from moodwire.sinks.redis_aggregates import ALL_BRANDS, NO_BRAND, Countable, RedisAggregates

MV = "test-model+0000"
TOPIC = "raw"


def records(n: int, partitions: int = 3, seed: int = 7) -> list[Countable]:
    rng = random.Random(seed)
    out = []
    offsets = dict.fromkeys(range(partitions), 0)
    for _ in range(n):
        p = rng.randrange(partitions)
        # Offsets grow with gaps, as after compaction or transaction markers.
        offsets[p] += rng.choice((1, 1, 1, 2))
        out.append(
            Countable(
                partition=p,
                offset=offsets[p],
                source=rng.choice(("twitter", "reddit:r/apple")),
                minute=1_600_000_000 + 60 * rng.randrange(5),
                brands=rng.choice(((), ("apple",), ("apple", "google"))),
                label=rng.randrange(3),
                score=rng.uniform(-1, 1),
            )
        )
    return out


def expected(recs: list[Countable]) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
    out: dict[tuple[str, str, int], list[int]] = {}
    for r in recs:
        for brand in (*(r.brands or (NO_BRAND,)), ALL_BRANDS):
            acc = out.setdefault((brand, r.source, r.minute), [0, 0, 0, 0])
            acc[0] += 1
            acc[1 + r.label] += 1
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def observed(agg: RedisAggregates) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
    return {k: (b.n, b.neg, b.neu, b.pos) for k, b in agg.buckets(MV).items()}


def test_redelivery_in_other_batches_counts_each_record_once(
    redis_client: redis.Redis,
) -> None:
    agg = RedisAggregates(redis_client)
    recs = records(600)
    # First delivery in batches of 100; a crash loses nothing but replays from offset 0
    # in batches of 37, so every replayed batch straddles the old boundaries.
    counted = sum(agg.apply(MV, TOPIC, recs[i : i + 100]) for i in range(0, 400, 100))
    counted += sum(agg.apply(MV, TOPIC, recs[i : i + 37]) for i in range(0, 600, 37))
    assert counted == 600
    assert observed(agg) == expected(recs)
    totals = agg.totals(MV)
    assert totals[ALL_BRANDS].n == 600
    assert abs(totals[ALL_BRANDS].score_sum - sum(r.score for r in recs)) < 1e-9
    assert agg.watermarks(MV, TOPIC) == {
        p: max(r.offset for r in recs if r.partition == p) for p in {r.partition for r in recs}
    }


def test_records_already_stored_are_not_counted(redis_client: redis.Redis) -> None:
    agg = RedisAggregates(redis_client)
    recs = records(50)
    old = {id(r) for r in recs[::5]}
    marked = [
        Countable(
            r.partition,
            r.offset,
            r.source,
            r.minute,
            r.brands,
            r.label,
            r.score,
            new=id(r) not in old,
        )
        for r in recs
    ]
    assert agg.apply(MV, TOPIC, marked) == 40
    assert observed(agg) == expected([r for r in marked if r.new])


def test_watermark_is_per_topic_and_model_version(redis_client: redis.Redis) -> None:
    agg = RedisAggregates(redis_client)
    recs = records(20)
    assert agg.apply(MV, TOPIC, recs) == 20
    assert agg.apply(MV, "other-topic", recs) == 20
    assert agg.apply("other-model", TOPIC, recs) == 20
    assert agg.apply(MV, TOPIC, recs) == 0
    assert agg.totals(MV)[ALL_BRANDS].n == 40
