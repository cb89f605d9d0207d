"""Fixtures of the replay tests: posts stored by the real sinks under the shipped model
(version A), and a second model version B to re-score them with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from moodwire.aggregates.writer import AggregatesWriter
from moodwire.db.engine import make_engine
from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.records import Post, ScoredPost
from moodwire.settings import Settings
from moodwire.sinks.postgres import PostgresSink
from support.pipeline import post_dicts, real_tweets, tag_of

N = 600
# Brands as the processor would have tagged them: none, one, or two per post.
_BRANDS: tuple[tuple[str, ...], ...] = ((), ("acme",), ("acme", "globex"), ())


def source_of(settings: Settings) -> str:
    """One source per test: the session's database holds other tests' posts too."""
    return f"feed.{tag_of(settings)}"


def posts_of(settings: Settings, n: int = N) -> list[Post]:
    source = source_of(settings)
    return [
        Post(
            id=p["id"],
            source=source,
            text=p["text"],
            created_at=datetime.fromisoformat(p["created_at"]),
            author=p["author"],
        )
        for p in post_dicts(real_tweets(n), tag_of(settings))
    ]


def store_as_serving(settings: Settings, client: redis.Redis, posts: list[Post]) -> str:
    """Score ``posts`` with the shipped model and store them as the processor does
    (Postgres rows and Redis aggregates, offsets of one partition); returns version A."""
    engine = InferenceEngine.load(path=settings.model_path, device="cpu")
    probs = engine.predict([p.text for p in posts])
    batch = [
        ScoredPost(
            post=p,
            label=int(row.argmax()),
            probs=(float(row[0]), float(row[1]), float(row[2])),
            model_version=engine.model_version,
            brands=_BRANDS[i % len(_BRANDS)],
        )
        for i, (p, row) in enumerate(zip(posts, probs, strict=True))
    ]
    db = make_engine(settings)
    sink = PostgresSink(db)
    try:
        AggregatesWriter(db, client).write(sink.store(batch).rollups)
    finally:
        sink.close()
        db.dispose()
    return engine.model_version


@pytest.fixture
def stored(settings: Settings, redis_client: redis.Redis) -> list[Post]:
    """N real tweets stored under the shipped model's version."""
    posts = posts_of(settings)
    store_as_serving(settings, redis_client, posts)
    return posts


@pytest.fixture
def model_b(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """The shipped model with a cooler temperature: other probabilities, another version."""
    out = tmp_path / "model-b"
    shutil.copytree(settings.model_path, out)
    config: dict[str, Any] = json.loads((out / artifact.CONFIG).read_text())
    config["temperature"] = float(config.get("temperature", 1.0)) * 0.5
    config["note"] = f"rescore test {tag_of(settings)}"  # a version unique to this test
    (out / artifact.CONFIG).write_text(json.dumps(config))
    assert artifact.model_version(out) != artifact.model_version(settings.model_path)
    yield out
