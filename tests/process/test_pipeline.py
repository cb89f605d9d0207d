"""End to end on real servers: real tweets through real `moodwire process` workers."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
from process_support import (
    Worker,
    assert_aggregates_exact,
    committed_total,
    count_scores,
    post_dicts,
    produce_posts,
    real_tweets,
    redis_buckets,
    serving_version,
    tag_of,
    wait_until,
)

from moodwire.settings import Settings
from moodwire.status import collect

N = 2000


def test_n_real_tweets_in_n_rows_and_exact_aggregates_out(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    posts = post_dicts(real_tweets(N), tag_of(settings))
    worker = spawn_worker()
    produce_posts(settings, posts)
    version = serving_version()
    wait_until(lambda: count_scores(settings, version) >= N or not worker.alive(), 120, "N scores")
    assert worker.alive(), worker.tail()
    assert count_scores(settings, version) == N
    assert_aggregates_exact(settings, version, N)
    # ... with both Faust patches in force in that worker.
    patches = [e for e in worker.events() if e.get("event") == "faust patches"]
    assert patches and patches[0]["dispatch"] and patches[0]["fetch_wait"]
    figures = collect(settings)
    assert figures["errors"] == []
    # Postgres is shared by the session's tests, Redis is this test's own.
    assert figures["posts"] >= N and figures["scored"] >= N
    assert figures["aggregate_total"] == N


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
    second = spawn_worker()
    wait_until(lambda: count_scores(settings, version) >= N or not second.alive(), 120, "N")
    assert second.alive(), second.tail()
    assert count_scores(settings, version) == N
    assert_aggregates_exact(settings, version, N)


@pytest.mark.parametrize("point", ["redis", "postgres"])
def test_crash_right_after_the_redis_write_keeps_aggregates_exact(
    point: str, settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    """The window where a peer system over-counted by 17%: Redis written, offsets not.

    ``redis``: killed after the Redis aggregates, before the Postgres commit;
    ``postgres``: killed after both, before the offset commit.
    """
    n = 1000
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    first = spawn_worker(MOODWIRE_FAULT_CRASH_AFTER=point)
    produce_posts(settings, posts)
    wait_until(lambda: not first.alive(), 90, "the injected crash")
    assert first.proc.returncode == -signal.SIGKILL, first.tail()
    counted = sum(b.n for k, b in redis_buckets(settings, version).items() if k[0] == "*")
    assert counted > 0  # the crashed batch did reach Redis
    assert count_scores(settings, version) == (0 if point == "redis" else counted)
    assert committed_total(settings) == 0
    second = spawn_worker()
    wait_until(lambda: count_scores(settings, version) >= n or not second.alive(), 120, "n")
    assert second.alive(), second.tail()
    assert count_scores(settings, version) == n
    assert_aggregates_exact(settings, version, n)


def test_two_workers_in_one_group_share_all_partitions_and_stay_exact(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    version = serving_version()
    a, b = spawn_worker(), spawn_worker()

    def shared() -> bool:
        pa, pb = a.assigned(), b.assigned()
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
