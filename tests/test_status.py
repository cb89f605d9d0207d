"""moodwire.status.collect and `moodwire status` on real Postgres and Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from moodwire.aggregates.writer import AggregatesWriter
from moodwire.cli.app import app
from moodwire.db.engine import make_engine
from moodwire.records import Post, ScoredPost
from moodwire.settings import Settings, get_settings
from moodwire.sinks.postgres import PostgresSink
from moodwire.status import collect, serving_model_version


def write_scored(settings: Settings, client: redis.Redis, brands: list[tuple[str, ...]]) -> None:
    """Store and count one post per entry of ``brands``, as the processor would."""
    version = serving_model_version(settings.model_path)
    assert version, "no model at settings.model_path"
    source = f"status-{uuid.uuid4().hex[:8]}"
    stamp = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    batch = [
        ScoredPost(
            post=Post(id=str(i), source=source, text="text", created_at=stamp),
            label=i % 3,
            probs=(0.5, 0.2, 0.3) if i % 3 == 0 else (0.1, 0.2, 0.7),
            model_version=version,
            brands=b,
        )
        for i, b in enumerate(brands)
    ]
    engine = make_engine(settings)
    sink = PostgresSink(engine)
    AggregatesWriter(engine, client).write(sink.store(batch).rollups)
    sink.close()
    engine.dispose()


def test_collect_reports_posts_scores_aggregates_and_brands(
    settings: Settings, redis_client: redis.Redis
) -> None:
    before = collect(settings)
    write_scored(settings, redis_client, [("apple",), ("apple", "google"), (), ("google",)])
    after = collect(settings)
    assert after["errors"] == []
    assert after["posts"] - before["posts"] == 4
    assert after["scored"] - before["scored"] == 4
    # Each post once, whatever brands it names.
    assert after["aggregate_total"] == 4
    assert after["brands"]["apple"]["posts"] == 2
    assert after["brands"]["google"]["posts"] == 2
    assert after["brands"]["(none)"]["posts"] == 1
    apple = after["brands"]["apple"]
    assert apple["negative"] + apple["neutral"] + apple["positive"] == 2


def test_collect_uses_the_callers_connections_and_leaves_them_open(
    settings: Settings, redis_client: redis.Redis
) -> None:
    write_scored(settings, redis_client, [("apple",)])
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        shared = collect(settings, engine=engine, client=redis_client)
        assert shared == collect(settings) and shared["errors"] == []
        assert shared["aggregate_total"] == 1
        # Still usable: collect returned its connection to the pool and closed nothing.
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert collect(settings, engine=engine, client=redis_client) == shared
    finally:
        engine.dispose()


def test_collect_names_an_unreachable_server_instead_of_failing(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    figures = collect(down)
    assert figures["aggregate_total"] is None
    assert any(e.startswith("redis:") for e in figures["errors"])
    assert isinstance(figures["posts"], int)  # Postgres still answered


def test_cli_prints_text_and_json(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_scored(settings, redis_client, [("apple",), ()])
    for name in ("broker_url", "database_url", "redis_url"):
        monkeypatch.setenv(f"MOODWIRE_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        as_json = runner.invoke(app, ["status", "--json"])
        assert as_json.exit_code == 0, as_json.output
        figures = orjson.loads(as_json.stdout)
        assert figures["aggregate_total"] == 2
        assert figures["brands"]["apple"]["posts"] == 1
        plain = runner.invoke(app, ["status"])
        assert plain.exit_code == 0, plain.output
        assert "aggregate_total" in plain.stdout and "apple" in plain.stdout
    finally:
        get_settings.cache_clear()
