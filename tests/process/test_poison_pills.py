"""Poison pills and faults, on real `moodwire process` workers and real servers.

Valid posts the pipeline must still refuse (too large for the scored topic, stamped in
year 9999 or 1970, a source name per post), a value the database cannot hold, Postgres
restarted mid-stream, a rebalance while batches are in flight: each time every good
post is stored once, the aggregates are exact, and each refused one is a dead letter
with its reason.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg2
import pytest

from moodwire.db.migrate import upgrade
from moodwire.settings import Settings
from moodwire.stack.postgres import STOP_SIGNAL, start_postgres
from moodwire.stack.processes import stop
from support.pipeline import (
    MOODWIRE,
    Worker,
    assert_aggregates_exact,
    count_scores,
    post_dicts,
    post_key,
    produce,
    produce_posts,
    read_topic,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
    worker_env,
)
from support.settings import restartable_port

CAP = 65_536  # MOODWIRE_MAX_RECORD_BYTES of these workers
_ID = re.compile(rb'"id":"([^"]+)"')


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Like ``spawn_worker``, but the environment is entirely the caller's to choose."""
    started: list[Worker] = []

    def start(own: Settings | None = None, **env: str) -> Worker:
        log_path = tmp_path / f"worker-{len(started)}.log"
        full = worker_env(own or settings, **env)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(MOODWIRE), "process"], env=full, stdout=log, stderr=subprocess.STDOUT
            )
        started.append(Worker(proc, log_path))
        return started[-1]

    yield start
    for worker in started:
        worker.kill9()


def _dead_letters_by_id(settings: Settings, want: int) -> dict[str, str]:
    """post id -> reason, read from the dead-letter topic (values may be cut short)."""
    out: dict[str, str] = {}
    for record in read_topic(settings, settings.topic_dead_letters, want, timeout=60):
        found = _ID.search(record.value or b"")
        headers = {k: v.decode() for k, v in record.headers}
        out[found.group(1).decode() if found else "?"] = headers["moodwire-reason"]
    return out


def _padded(post: dict[str, Any], size: int) -> dict[str, Any]:
    """``post`` with compressible metadata making its JSON exactly ``size`` bytes."""
    padded = {**post, "metadata": {"pad": ""}}
    padded["metadata"]["pad"] = "x" * (size - len(orjson.dumps(padded)))
    assert len(orjson.dumps(padded)) == size
    return padded


def test_valid_posts_out_of_bounds_are_dead_letters_and_the_rest_exact(
    settings: Settings, start_worker: Callable[..., Worker], redis_client: object
) -> None:
    tag = tag_of(settings)
    good = post_dicts(real_tweets(400), tag)
    base = {"source": f"twitter.{tag}", "text": "nothing wrong with this text", "lang": "en"}
    now = datetime.now(UTC)
    bad = {
        # id first, so the id is still readable in a dead letter cut short
        "big": (_padded({"id": "big", **base, "created_at": now.isoformat()}, CAP + 5000), "limit"),
        "edge": (
            # passes the raw cap; the scored record (sentiment, probs, version) would not
            _padded({"id": "edge", **base, "created_at": now.isoformat()}, CAP - 60),
            "scored record would have",
        ),
        "y9999": ({"id": "y9999", **base, "created_at": "9999-12-31T23:59:59Z"}, "in the future"),
        "ahead": (
            {"id": "ahead", **base, "created_at": (now + timedelta(hours=1)).isoformat()},
            "in the future",
        ),
        "y1970": ({"id": "y1970", **base, "created_at": "1970-01-01T00:00:00Z"}, "before"),
        "colon": (
            {"id": "colon", **base, "source": "spam:4711", "created_at": now.isoformat()},
            "not a source name",
        ),
    }
    messages: list[tuple[bytes | None, bytes]] = []
    for i, post in enumerate(good):
        messages.append((post_key(post), orjson.dumps(post)))
        if i % 50 == 0 and i // 50 < len(bad):
            post_, _ = list(bad.values())[i // 50]
            messages.append((post_key(post_), orjson.dumps(post_)))
    version = serving_version()
    worker = start_worker(MOODWIRE_MAX_RECORD_BYTES=str(CAP))
    produce(settings, messages)
    n = len(good)
    wait_until(lambda: count_scores(settings, version) >= n or not worker.alive(), 180, "scores")
    assert worker.alive(), worker.tail()
    dead = _dead_letters_by_id(settings, len(bad))
    assert set(dead) == set(bad), dead
    for post_id, (_, reason) in bad.items():
        assert reason in dead[post_id], (post_id, dead[post_id])
    assert count_scores(settings, version) == n
    assert_aggregates_exact(settings, version, n)
    scored = read_topic(settings, settings.topic_scored, n)
    assert {r.key for r in scored} == {post_key(p) for p in good}
    assert all(len(r.value) <= CAP for r in scored)


@contextmanager
def own_database(settings: Settings, encoding: str) -> Iterator[str]:
    """A migrated database of its own on the session's server, in ``encoding``."""
    url = urlsplit(settings.require("database_url").replace("postgresql+psycopg2", "postgresql"))
    name = f"moodwire_test_{encoding.lower()}_{tag_of(settings)}"
    admin = psycopg2.connect(
        host=url.hostname, port=url.port, user=url.username, password=url.password,
        dbname="postgres",
    )  # fmt: skip
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING '{encoding}' "
                "LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        own = url._replace(path=f"/{name}").geturl().replace("postgresql:", "postgresql+psycopg2:")
        upgrade(own)
        yield own
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def _latin1(post: dict[str, Any]) -> bool:
    try:
        for field in ("text", "author", "source", "id"):
            str(post.get(field) or "").encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def test_a_value_the_database_cannot_hold_dead_letters_only_that_post(
    settings: Settings, start_worker: Callable[..., Worker], redis_client: object
) -> None:
    """A LATIN1 database refuses CJK text (SQLSTATE 22P05, a data error): the batch is
    split until the post that fails is alone; it becomes a dead letter, the rest is stored
    (before: the worker retried that batch forever, every partition held)."""
    tag = tag_of(settings)
    posts = post_dicts(real_tweets(600), tag)
    for i in (17, 250, 480):
        posts[i] = {**posts[i], "text": "新しい電話が大好き " + posts[i]["text"]}
    # ... and one the model does not read (stored without a score, by another path)
    posts[333] = {**posts[333], "text": "新しい電話が大好きです", "lang": "ja"}
    storable = [p for p in posts if _latin1(p)]
    refused = {p["id"] for p in posts if not _latin1(p)}
    assert {"t17", "t250", "t333", "t480"} <= refused
    version = serving_version()
    with own_database(settings, "LATIN1") as url:
        own = settings.model_copy(update={"database_url": url})
        worker = start_worker(own)
        produce_posts(settings, posts)
        n = len(storable)
        wait_until(lambda: count_scores(own, version) >= n or not worker.alive(), 180, "scores")
        assert worker.alive(), worker.tail()
        dead = _dead_letters_by_id(settings, len(refused))
        assert set(dead) == refused, dead
        assert all("22P05" in reason for reason in dead.values()), dead
        assert count_scores(own, version) == n
        assert_aggregates_exact(own, version, n)
        worker.stop()


def test_postgres_restarted_mid_stream_loses_nothing(
    settings: Settings,
    start_worker: Callable[..., Worker],
    server_tmp_path: Path,
    redis_client: object,
) -> None:
    n = 3000
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    data, log = server_tmp_path / "pg", server_tmp_path / "pg.log"
    port = restartable_port()
    server = start_postgres(data, port, log)
    try:
        upgrade(server.url)
        own = settings.model_copy(update={"database_url": server.url})
        worker = start_worker(own, MOODWIRE_SINK_RETRY_MAX="0.5", MOODWIRE_MAX_BATCH="200")
        produce_posts(settings, posts)
        wait_until(lambda: count_scores(own, version) >= 200 or not worker.alive(), 120, "200")
        stored_before = count_scores(own, version)
        stop(server.pid, server.create_time, STOP_SIGNAL)  # fast shutdown, mid-stream
        wait_until(
            lambda: any(
                "failed; retrying" in str(e.get("event")) and int(e.get("attempt", 0)) >= 3
                for e in worker.events()
            ),
            60,
            "three logged retries",
        )
        assert worker.alive(), worker.tail()
        assert stored_before < n, "the stream ended before Postgres went away"
        server = start_postgres(data, port, log)
        wait_until(lambda: count_scores(own, version) >= n or not worker.alive(), 180, "n")
        assert worker.alive(), worker.tail()
        assert count_scores(own, version) == n
        assert_aggregates_exact(own, version, n)
        worker.stop()
    finally:
        stop(server.pid, server.create_time, STOP_SIGNAL)


def test_a_worker_joins_and_one_leaves_while_batches_are_in_flight(
    settings: Settings, start_worker: Callable[..., Worker], redis_client: object
) -> None:
    n = 8000
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    a = start_worker(MOODWIRE_MAX_BATCH="200")
    wait_until(lambda: bool(a.assigned()) or not a.alive(), 90, "a assigned")
    # Posts keep coming while b joins and a leaves; once both rebalances are done, the
    # rest goes at once. ``produced`` counts what was sent so far.
    rebalanced = threading.Event()
    produced = [0]

    def produce_during_the_rebalances() -> None:
        while produced[0] < n and not rebalanced.is_set():
            produce_posts(settings, posts[produced[0] : produced[0] + 50])
            produced[0] += 50
            rebalanced.wait(0.2)  # paced so the stream lasts (not waiting on a state)
        produce_posts(settings, posts[produced[0] :])

    producing = threading.Thread(target=produce_during_the_rebalances)
    producing.start()
    try:
        wait_until(lambda: count_scores(settings, version) >= 300, 90, "first rows")
        b = start_worker(MOODWIRE_MAX_BATCH="200")
        wait_until(
            lambda: (b.assigned() or []) != [] and len(a.assigned() or []) < 4,
            90,
            "the partitions shared with b",
        )
        a.proc.send_signal(signal.SIGTERM)  # a leaves; b takes every partition over
        wait_until(lambda: len(b.assigned() or []) == 4 or not b.alive(), 90, "b has all four")
        produced_when_b_took_over = produced[0]
    finally:
        rebalanced.set()
        producing.join()
    assert produced_when_b_took_over < n, "the stream ended before the rebalances"
    wait_until(lambda: count_scores(settings, version) >= n or not b.alive(), 180, "n")
    assert b.alive(), b.tail()
    assert count_scores(settings, version) == n
    assert_aggregates_exact(settings, version, n)
