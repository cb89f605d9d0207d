"""Postgres is the source of truth: each fault made real, then rows and aggregates exact
against SQL over the posts sent (real `moodwire process` workers, real servers).

- the broker restarted mid-stream (memory-only: topics gone, recreated, offsets from 0);
- Redis flushed mid-stream, and again while no posts arrive;
- Redis killed and restarted from an older snapshot (a restart within its save interval);
- a worker killed after sending a batch's dead letters, before acking it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import text

from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack.broker import start_broker
from moodwire.stack.ports import port_in_use
from moodwire.stack.processes import ServerProcess, stop
from moodwire.stack.redis import start_redis
from moodwire.topics import ensure_topics
from support.pipeline import (
    MOODWIRE,
    Worker,
    assert_aggregates_exact,
    count_scores,
    post_dicts,
    post_key,
    produce,
    read_topic,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
    worker_env,
)
from support.settings import restartable_port, unique_settings


def spawn(settings: Settings, log_path: Path, **extra: str) -> Worker:
    env = worker_env(settings, **extra)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(MOODWIRE), "process"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Worker(proc, log_path)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill9()


def bad(tag: str, n: int, start: int = 0) -> list[tuple[bytes | None, bytes]]:
    """``n`` records that can only be dead letters, distinct (each is one row); keys
    ``bad-0`` ... whatever ``start``, so each lands on the same partition every time."""
    return [
        (f"bad-{k}".encode(), f'{{"id": "bad{i}", "source": "x.{tag}", "text": '.encode())
        for k, i in enumerate(range(start, start + n))
    ]


def good(posts: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [(post_key(p), orjson.dumps(p)) for p in posts]


def dead_letter_rows(settings: Settings) -> list[tuple[str, str]]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            sql = "SELECT origin, origin_key FROM dead_letters WHERE origin LIKE :t"
            found = conn.execute(text(sql), {"t": f"{settings.topic_raw}[%"}).all()
    finally:
        engine.dispose()
    return [(str(r[0]), str(r[1])) for r in found]


def rebuilds(worker: Worker) -> int:
    return sum(1 for e in worker.events() if e.get("event") == "aggregates rebuilt from postgres")


def exact_soon(settings: Settings, version: str, n: int, worker: Worker, timeout: float) -> None:
    """Rows, then the Redis copy, reach exactly ``n`` posts (polled until the deadline)."""
    wait_until(lambda: count_scores(settings, version) >= n or not worker.alive(), timeout, "rows")
    assert worker.alive(), worker.tail()
    assert count_scores(settings, version) == n
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_aggregates_exact(settings, version, n)
            return
        except AssertionError:
            if time.monotonic() > deadline or not worker.alive():
                raise
            time.sleep(0.25)


def test_broker_restarted_mid_stream_topics_recreated_totals_exact(
    database_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[Worker],
) -> None:
    port = restartable_port()
    log = tmp_path / "broker.log"
    broker: ServerProcess = start_broker(port, log)
    try:
        settings = unique_settings(
            broker.url, database_url, redis_url, tmp_path / "state", partitions=4
        )
        tag = tag_of(settings)
        posts = post_dicts(real_tweets(1000), tag)
        version = serving_version()
        workers.append(spawn(settings, tmp_path / "worker-0.log"))
        produce(settings, bad(tag, 3) + good(posts[:600]))
        exact_soon(settings, version, 600, workers[0], 120)
        wait_until(lambda: len(dead_letter_rows(settings)) >= 3, 60, "3 dead letters")

        # The fault: the memory-only broker dies and comes back empty, as `stack up`
        # leaves it: topics recreated, every offset from 0 again, no committed offsets.
        stop(broker.pid, broker.create_time, signal.SIGKILL)
        wait_until(lambda: not port_in_use(port), 30, "the old broker gone")
        broker = start_broker(port, log)
        ensure_topics(settings)
        # Ingest resumes into the same running worker: 200 posts Postgres already holds
        # (sent again), 400 new ones, and other dead letters at the very raw and
        # dead-letter positions the old incarnation used.
        produce(settings, bad(tag, 3, start=3) + good(posts[400:]))
        exact_soon(settings, version, 1000, workers[0], 120)
        wait_until(lambda: len(dead_letter_rows(settings)) >= 6, 60, "6 dead letters")
        rows = dead_letter_rows(settings)
        assert len(rows) == 6 == len({key for _, key in rows})
        # Same raw positions in two incarnations, told apart by the topic id.
        assert len({origin for origin, _ in rows}) == 3
    finally:
        stop(broker.pid, broker.create_time, signal.SIGTERM)


def test_redis_flushed_mid_stream_and_while_idle_is_rebuilt_exact(
    settings: Settings,
    redis_client: redis.Redis,
    _redis_session: tuple[str, str],
    spawn_worker: Callable[..., Worker],
) -> None:
    from conftest import REDIS_CLAIM_KEY, REDIS_CLAIM_TTL_S

    def flush() -> None:
        redis_client.flushdb()
        redis_client.set(REDIS_CLAIM_KEY, _redis_session[1], ex=REDIS_CLAIM_TTL_S)

    posts = post_dicts(real_tweets(1200), tag_of(settings))
    version = serving_version()
    worker = spawn_worker()
    produce(settings, good(posts[:600]))
    exact_soon(settings, version, 600, worker, 120)
    flush()
    produce(settings, good(posts[600:]))
    exact_soon(settings, version, 1200, worker, 120)
    assert rebuilds(worker) == 1, worker.tail()
    # No more posts: the worker's periodic check finds the copy gone and rebuilds it.
    flush()
    exact_soon(settings, version, 1200, worker, 60)
    assert RedisCopy(redis_client).in_sync() and rebuilds(worker) == 2


def test_redis_restarted_from_an_older_snapshot_is_rebuilt_exact(
    settings: Settings, spawn_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    port = restartable_port()
    data, log = tmp_path / "redis", tmp_path / "redis.log"
    server = start_redis(data, port, log, persist=True)
    own = settings.model_copy(update={"redis_url": server.url})
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        posts = post_dicts(real_tweets(1300), tag_of(settings))
        version = serving_version()
        worker = spawn_worker(MOODWIRE_REDIS_URL=server.url)
        produce(settings, good(posts[:500]))
        exact_soon(own, version, 500, worker, 120)
        client.save()  # the snapshot holds 500 posts
        produce(settings, good(posts[500:1000]))
        exact_soon(own, version, 1000, worker, 120)
        client.close()
        # The fault: killed before its next snapshot; it comes back with the old one.
        stop(server.pid, server.create_time, signal.SIGKILL)
        wait_until(lambda: not port_in_use(port), 30, "the old Redis gone")
        server = start_redis(data, port, log, persist=True)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        produce(settings, good(posts[1000:]))
        exact_soon(own, version, 1300, worker, 120)
        assert RedisCopy(client).in_sync()
        assert rebuilds(worker) >= 2, worker.tail()  # at its first write, after the restart
        client.close()
    finally:
        stop(server.pid, server.create_time, signal.SIGTERM)


def dead_letters_consumed(settings: Settings) -> int:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(settings.topic_dead_letters, p) for p in range(settings.partitions)]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


def test_dead_letters_sent_again_by_a_redelivered_batch_are_stored_once(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: redis.Redis
) -> None:
    tag = tag_of(settings)
    posts = post_dicts(real_tweets(300), tag)
    version = serving_version()
    first = spawn_worker(MOODWIRE_FAULT_CRASH_AFTER="dead-letters")
    produce(settings, good(posts[:150]) + bad(tag, 5) + good(posts[150:]))
    wait_until(lambda: not first.alive(), 90, "the injected crash")
    assert first.proc.returncode == -signal.SIGKILL, first.tail()
    worker = spawn_worker()
    exact_soon(settings, version, 300, worker, 120)
    # The redelivered batch sent its dead letters again, at new positions of the topic.
    sent = len(read_topic(settings, settings.topic_dead_letters, 10**6, timeout=5))
    assert sent > 5
    wait_until(lambda: dead_letters_consumed(settings) >= sent, 60, "every send persisted")
    rows = dead_letter_rows(settings)
    assert len(rows) == 5, rows
