"""The rollups in Postgres and their Redis copy, on real servers: counted once in the
score rows' transaction, copied after the commit by revision, rebuilt when Redis lost it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from moodwire.aggregates import keys
from moodwire.aggregates.keys import ALL_BRANDS, Bucket
from moodwire.aggregates.rebuild import RebuildBusy, rebuild
from moodwire.aggregates.redis_copy import APPLIED, BUSY, STALE, RedisCopy
from moodwire.aggregates.rollup import RollupRow
from moodwire.aggregates.writer import AggregatesWriter
from moodwire.cli.app import app
from moodwire.db.engine import make_engine
from moodwire.records import Post, ScoredPost
from moodwire.settings import Settings, get_settings
from moodwire.sinks.postgres import PostgresSink

BRANDS: tuple[tuple[str, ...], ...] = ((), ("acme",), ("acme", "globex"))


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def version() -> str:
    """A model version of this test only: the session's Postgres holds other tests' rows."""
    return f"test-{uuid.uuid4().hex[:10]}"


def batch(n: int, version: str, source: str, seed: int = 3, start: int = 0) -> list[ScoredPost]:
    rng = random.Random(seed)
    t0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        label = rng.randrange(3)
        p = rng.uniform(0.4, 0.9)
        rest = (1 - p) / 2
        probs = tuple(p if j == label else rest for j in range(3))
        out.append(
            ScoredPost(
                post=Post(
                    id=f"p{i}",
                    source=source,
                    text=f"post {i}",
                    created_at=t0 + timedelta(seconds=rng.randrange(600)),
                ),
                label=label,
                probs=(probs[0], probs[1], probs[2]),
                model_version=version,
                brands=BRANDS[i % len(BRANDS)],
            )
        )
    return out


_SQL = """
SELECT b.brand, p.source, (floor(extract(epoch FROM p.created_at) / 60) * 60)::bigint,
       count(*), count(*) FILTER (WHERE s.label = 0), count(*) FILTER (WHERE s.label = 1),
       count(*) FILTER (WHERE s.label = 2), sum(s.score)
FROM posts p
JOIN scores s ON s.source = p.source AND s.source_id = p.source_id AND s.model_version = :v
CROSS JOIN LATERAL (
    SELECT unnest(CASE WHEN cardinality(p.brands) = 0 THEN ARRAY['(none)'] ELSE p.brands END)
    UNION ALL SELECT '*'
) AS b(brand)
GROUP BY 1, 2, 3
"""
_ROLLUPS = """
SELECT brand, source, extract(epoch FROM minute)::bigint, n, neg, neu, pos, score_sum
FROM rollups WHERE model_version = :v
"""

Buckets = dict[tuple[str, str, int], tuple[int, int, int, int, float]]


def _rows(engine: Engine, sql: str, version: str) -> Buckets:
    with engine.connect() as conn:
        found = conn.execute(text(sql), {"v": version}).all()
    return {
        (r[0], r[1], int(r[2])): (int(r[3]), int(r[4]), int(r[5]), int(r[6]), float(r[7]))
        for r in found
    }


def _of(buckets: dict[tuple[str, str, int], Bucket]) -> Buckets:
    return {k: (b.n, b.neg, b.neu, b.pos, b.score_sum) for k, b in buckets.items()}


def assert_same(a: Buckets, b: Buckets) -> None:
    assert set(a) == set(b)
    for key, want in b.items():
        assert a[key][:4] == want[:4], key
        assert abs(a[key][4] - want[4]) < 1e-6, key


def assert_exact(engine: Engine, client: redis.Redis, version: str, posts: int) -> None:
    """SQL over the score rows == the rollups == the Redis copy; totals sum the buckets."""
    sql = _rows(engine, _SQL, version)
    assert_same(_rows(engine, _ROLLUPS, version), sql)
    copy = RedisCopy(client)
    assert_same(_of(copy.buckets(version)), sql)
    totals = copy.totals(version)
    assert totals[ALL_BRANDS].n == posts
    for brand, total in totals.items():
        parts = [v for k, v in sql.items() if k[0] == brand]
        assert total.n == sum(p[0] for p in parts) and total.neg == sum(p[1] for p in parts)
        assert abs(total.score_sum - sum(p[4] for p in parts)) < 1e-6


def test_redelivered_and_overlapping_batches_count_each_score_row_once(
    engine: Engine, redis_client: redis.Redis, version: str
) -> None:
    sink, writer = PostgresSink(engine), AggregatesWriter(engine, redis_client)
    posts = batch(300, version, f"src.{version}")
    try:
        for part in (posts[:120], posts[:200], posts[100:], posts):  # redeliveries, cut anew
            written = sink.store(part)
            writer.write(written.rollups)
    finally:
        sink.close()
    assert_exact(engine, redis_client, version, 300)


def test_a_write_lost_after_the_commit_is_completed_by_the_redelivery(
    engine: Engine, redis_client: redis.Redis, version: str
) -> None:
    sink, writer = PostgresSink(engine), AggregatesWriter(engine, redis_client)
    posts = batch(200, version, f"src.{version}")
    try:
        writer.write(sink.store(posts[:100]).rollups)
        sink.store(posts[100:])  # committed; the process "dies" before writing Redis
        # Readers see less than Postgres holds, never more.
        assert RedisCopy(redis_client).totals(version)[ALL_BRANDS].n == 100
        redelivered = sink.store(posts[100:])
        assert not any(s.new for s in redelivered.stored)
        writer.write(redelivered.rollups)
    finally:
        sink.close()
    assert_exact(engine, redis_client, version, 200)


def test_late_repeated_or_reordered_writes_change_nothing(
    redis_client: redis.Redis, version: str
) -> None:
    copy = RedisCopy(redis_client)

    def row(n: int, rev: int, minute: int = 60) -> RollupRow:
        return RollupRow(version, "acme", "s", minute, n, n, 0, 0, -0.5 * n, rev)

    assert copy.write([row(5, 2), row(1, 1, 120)]) == (APPLIED, 2)
    assert copy.write([row(3, 1)]) == (APPLIED, 0)  # older revision, arriving late
    assert copy.write([row(5, 2)]) == (APPLIED, 0)  # the same one again
    assert copy.write([row(9, 3)]) == (APPLIED, 1)
    assert copy.totals(version)["acme"] == Bucket(10, 10, 0, 0, -5.0)
    assert {k[2]: b.n for k, b in copy.buckets(version).items()} == {60: 9, 120: 1}


def _flush(client: redis.Redis, session: tuple[str, str]) -> None:
    """FLUSHDB, then give back the test session's claim on the db index (conftest)."""
    from conftest import REDIS_CLAIM_KEY, REDIS_CLAIM_TTL_S

    client.flushdb()
    client.set(REDIS_CLAIM_KEY, session[1], ex=REDIS_CLAIM_TTL_S)


def test_flushed_redis_is_rebuilt_from_postgres_by_the_next_write(
    engine: Engine,
    redis_client: redis.Redis,
    _redis_session: tuple[str, str],
    version: str,
) -> None:
    sink, writer = PostgresSink(engine), AggregatesWriter(engine, redis_client)
    posts = batch(400, version, f"src.{version}")
    try:
        writer.write(sink.store(posts[:250]).rollups)
        _flush(redis_client, _redis_session)
        copy = RedisCopy(redis_client)
        assert not copy.in_sync()
        written = sink.store(posts[250:])
        assert copy.write(written.rollups)[0] == STALE  # refused: it would count from zero
        writer.write(written.rollups)  # rebuilds, then writes
    finally:
        sink.close()
    assert writer.rebuilds == 1 and RedisCopy(redis_client).in_sync()
    assert_exact(engine, redis_client, version, 400)


def test_live_writes_wait_while_a_rebuild_holds_the_lock(
    redis_client: redis.Redis, version: str
) -> None:
    redis_client.set(keys.REBUILD_LOCK, "someone", px=5000)
    row = RollupRow(version, "acme", "s", 60, 1, 1, 0, 0, -0.5, 1)
    assert RedisCopy(redis_client).write([row]) == (BUSY, 0)
    with pytest.raises(RebuildBusy):
        rebuild(make_engine("postgresql+psycopg2://unused@127.0.0.1:1/x"), redis_client)
    redis_client.delete(keys.REBUILD_LOCK)
    assert RedisCopy(redis_client).write([row]) == (APPLIED, 1)


def test_rebuild_command_replaces_a_damaged_copy(
    settings: Settings,
    engine: Engine,
    redis_client: redis.Redis,
    version: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sink, writer = PostgresSink(engine), AggregatesWriter(engine, redis_client)
    try:
        writer.write(sink.store(batch(150, version, f"src.{version}")).rollups)
    finally:
        sink.close()
    # Damage it: one bucket gone, one total wrong.
    victim = next(iter(RedisCopy(redis_client).buckets(version)))
    redis_client.delete(keys.bucket(version, *victim))
    redis_client.hincrby(keys.totals(version, ALL_BRANDS), "n", 7)
    for name in ("broker_url", "database_url", "redis_url"):
        monkeypatch.setenv(f"MOODWIRE_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["aggregates", "rebuild", "--model-version", version])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"{version}: " in result.output
    assert_exact(engine, redis_client, version, 150)
