"""End to end on real servers: real tweets through real `moodwire process` workers."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from moodwire.settings import Settings
from moodwire.stack.processes import stop
from moodwire.stack.redis import start_redis
from moodwire.status import collect
from support.pipeline import (
    Worker,
    assert_aggregates_exact,
    committed_total,
    count_scores,
    post_dicts,
    post_key,
    produce_posts,
    read_topic,
    real_tweets,
    redis_buckets,
    serving_version,
    tag_of,
    wait_until,
)
from support.settings import restartable_port

N = 2000


def scored_exactly(settings: Settings, worker: Worker, version: str, n: int) -> None:
    """Wait for ``n`` scores while the worker lives, then: exactly ``n`` rows, exact aggregates."""
    wait_until(lambda: count_scores(settings, version) >= n or not worker.alive(), 120, f"{n}")
    assert worker.alive(), worker.tail()
    assert count_scores(settings, version) == n
    assert_aggregates_exact(settings, version, n)


def test_n_real_tweets_in_n_rows_and_exact_aggregates_out(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    posts = post_dicts(real_tweets(N), tag_of(settings))
    worker = spawn_worker()
    produce_posts(settings, posts)
    version = serving_version()
    scored_exactly(settings, worker, version, N)
    # The scored topic has every post, keyed by post, each key in one partition.
    scored = read_topic(settings, settings.topic_scored, N)
    partition_of: dict[bytes, set[int]] = {}
    for record in scored:
        partition_of.setdefault(record.key, set()).add(record.partition)
        assert orjson.loads(record.value)["model_version"] == version
    assert set(partition_of) == {post_key(p) for p in posts}
    assert all(len(parts) == 1 for parts in partition_of.values())
    # ... with both Faust patches in force in that worker.
    patches = [e for e in worker.events() if e.get("event") == "faust patches"]
    assert patches and patches[0]["dispatch"] and patches[0]["fetch_wait"]
    figures = collect(settings)
    assert figures["errors"] == []
    # Postgres is shared by the session's tests, Redis is this test's own.
    assert figures["posts"] >= N and figures["scored"] >= N
    assert figures["aggregate_total"] == N
    # SIGTERM: a clean stop.
    worker.stop()
    assert worker.proc.returncode == 0, worker.tail()


def test_publish_scored_off_writes_rows_and_aggregates_and_no_scored_records(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    n = 300
    posts = post_dicts(real_tweets(n), tag_of(settings))
    worker = spawn_worker(MOODWIRE_PUBLISH_SCORED="false")
    produce_posts(settings, posts)
    scored_exactly(settings, worker, serving_version(), n)
    # Offsets are committed only after a batch's whole write returned (the scored topic
    # included, when on): once all are, nothing more can reach the scored topic.
    wait_until(lambda: committed_total(settings) >= n, 60, "offsets committed")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        parts = [TopicPartition(settings.topic_scored, p) for p in range(settings.partitions)]
        assert sum(consumer.end_offsets(parts).values()) == 0
    finally:
        consumer.close()


def test_kill_9_mid_stream_and_restart_keeps_rows_and_aggregates_exact(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    posts = post_dicts(real_tweets(N), tag_of(settings))
    version = serving_version()
    # Small batches so that the stream is still flowing when the kill lands.
    first = spawn_worker(MOODWIRE_MAX_BATCH="50")
    produce_posts(settings, posts)
    wait_until(
        lambda: count_scores(settings, version) >= N // 4, 120, "a quarter scored", interval=0.05
    )
    first.kill9()
    stored_at_kill = count_scores(settings, version)
    # Offsets commit every few seconds: a fresh kill leaves stored posts uncommitted, so the
    # restart must see them again (else this test would prove nothing about redelivery).
    assert committed_total(settings) < stored_at_kill
    scored_exactly(settings, spawn_worker(), version, N)


def test_one_batch_at_a_time_is_exact_and_acks_what_it_wrote(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    n = 500
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    worker = spawn_worker(MOODWIRE_OVERLAP_BATCHES="false", MOODWIRE_MAX_BATCH="100")
    produce_posts(settings, posts)
    scored_exactly(settings, worker, version, n)
    # Acked by hand after each write: the committed offsets reach the end of the topic.
    wait_until(lambda: committed_total(settings) >= n, 60, "offsets committed")
    assert committed_total(settings) == n


@pytest.mark.parametrize("point", ["redis", "postgres"])
def test_crash_right_after_the_redis_write_keeps_aggregates_exact(
    point: str, settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    """The window where a peer system over-counted by 17%: Redis written, offsets not.

    ``postgres``: killed after the Postgres commit (rows and rollups), before Redis;
    ``redis``: killed after both, before the offset commit. Redis never shows more than
    Postgres holds.
    """
    n = 1000
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    first = spawn_worker(MOODWIRE_FAULT_CRASH_AFTER=point)
    produce_posts(settings, posts)
    wait_until(lambda: not first.alive(), 90, "the injected crash")
    assert first.proc.returncode == -signal.SIGKILL, first.tail()
    counted = sum(b.n for k, b in redis_buckets(settings, version).items() if k[0] == "*")
    stored = count_scores(settings, version)
    assert stored > 0  # the crashed batch was committed
    assert counted == (stored if point == "redis" else 0)
    assert committed_total(settings) == 0
    scored_exactly(settings, spawn_worker(), version, n)


def test_two_workers_in_one_group_share_all_partitions_and_stay_exact(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    version = serving_version()
    a, b = spawn_worker(), spawn_worker()

    def shared() -> bool:
        pa, pb = a.assigned() or [], b.assigned() or []
        return (
            bool(pa) and bool(pb) and set(pa) | set(pb) == {0, 1, 2, 3} and not (set(pa) & set(pb))
        )

    wait_until(lambda: shared() or not (a.alive() and b.alive()), 90, "both assigned")
    assert a.alive() and b.alive(), a.tail() + "\n---\n" + b.tail()
    posts = post_dicts(real_tweets(N), tag_of(settings))
    produce_posts(settings, posts)
    wait_until(lambda: count_scores(settings, version) >= N, 120, "N scores")
    assert count_scores(settings, version) == N
    assert_aggregates_exact(settings, version, N)
    assert a.alive() and b.alive()


def test_redis_down_holds_the_batch_until_it_is_back(
    settings: Settings, spawn_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """No Redis at start: the worker commits the first batch to Postgres, then retries its
    Redis write with the offsets held (nothing lost), then catches up."""
    n = 500
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    port = restartable_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = spawn_worker(MOODWIRE_REDIS_URL=url, MOODWIRE_SINK_RETRY_MAX="0.5")
    produce_posts(settings, posts)
    wait_until(
        lambda: any("failed; retrying" in str(e.get("event")) for e in worker.events()),
        60,
        "a logged retry",
    )
    assert worker.alive(), worker.tail()
    # Postgres is written first and alone holds the truth; the batch stays unacked.
    assert count_scores(settings, version) > 0
    assert committed_total(settings) == 0
    server = start_redis(tmp_path / "redis", port, tmp_path / "redis.log", persist=False)
    try:
        wait_until(lambda: count_scores(settings, version) >= n or not worker.alive(), 60, "n")
        assert worker.alive(), worker.tail()
        assert count_scores(settings, version) == n
        own = settings.model_copy(update={"redis_url": url})
        assert_aggregates_exact(own, version, n)
        assert any(e.get("event") == "redis aggregates write recovered" for e in worker.events())
    finally:
        worker.stop()
        stop(server.pid, server.create_time, signal.SIGTERM)
