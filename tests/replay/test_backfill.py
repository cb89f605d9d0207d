"""Backfill of a historical feed: `moodwire ingest file://... --speed 0` into a running
`moodwire process` puts every post in the minute of its own (old) created_at."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from moodwire.settings import Settings
from support.pipeline import (
    MOODWIRE,
    Worker,
    assert_aggregates_exact,
    count_scores,
    post_dicts,
    real_tweets,
    redis_buckets,
    serving_version,
    tag_of,
    wait_until,
    worker_env,
)

N = 400


def test_backfill_of_an_old_feed_lands_in_its_historical_minutes(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object, tmp_path: Path
) -> None:
    posts = post_dicts(real_tweets(N), tag_of(settings))  # created_at in May 2009
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"\n".join(orjson.dumps(p) for p in posts) + b"\n")
    worker = spawn_worker()

    ingest = subprocess.run(
        [str(MOODWIRE), "ingest", f"file://{feed}", "--speed", "0", "--quiet"],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    assert f"sent {N:,} posts" in ingest.stdout, ingest.stdout

    version = serving_version()
    wait_until(lambda: count_scores(settings, version) >= N or not worker.alive(), 90, "N scores")
    assert worker.alive(), worker.tail()
    assert count_scores(settings, version) == N
    assert_aggregates_exact(settings, version, N)
    # Event time, not arrival time: the buckets are the feed's own minutes of 2009.
    want = {
        (p["source"], int(datetime.fromisoformat(p["created_at"]).timestamp()) // 60 * 60)
        for p in posts
    }
    got = {(k[1], k[2]) for k in redis_buckets(settings, version) if k[0] == "*"}
    assert got == want
    assert max(m for _, m in got) < datetime(2010, 1, 1, tzinfo=UTC).timestamp()
