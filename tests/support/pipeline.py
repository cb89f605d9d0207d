"""Helpers for the stream-processor tests: real tweets in, real `moodwire process` workers.

Everything runs on the session's real servers (tests/conftest.py): Tansu, PostgreSQL, Redis.
Workers are real subprocesses (`moodwire process`), so `kill -9` is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import text

from moodwire.aggregates.keys import Bucket
from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.db.engine import make_engine
from moodwire.model import artifact
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.training.data import default_data_dir as data_dir

MOODWIRE = Path(sys.executable).with_name("moodwire")
# Short sessions: a worker joins its group in about half the session timeout (broker.md).
SESSION_TIMEOUT_S = 6.0


def real_tweets(n: int) -> list[str]:
    """The first ``n`` distinct non-empty texts of the Sentiment140 sample (both classes)."""
    root = data_dir() / "sentiment140" / "sample100k"
    if not root.is_dir():
        pytest.skip(f"real tweets not found at {root} (set MOODWIRE_DATA_DIR)")
    seen: set[str] = set()
    out: list[str] = []
    files = [root / "negative.txt", root / "positive.txt"]
    streams = [f.open(encoding="utf-8", errors="replace") for f in files]
    try:
        while len(out) < n:
            progressed = False
            for stream in streams:
                line = stream.readline()
                if not line:
                    continue
                progressed = True
                text_ = line.strip()
                if text_ and text_ not in seen:
                    seen.add(text_)
                    out.append(text_)
            if not progressed:
                break
    finally:
        for stream in streams:
            stream.close()
    return out[:n]


def tag_of(settings: Settings) -> str:
    """The suffix unique to this test (fixture ``settings``): sources end with it, so
    queries on the session-wide database see only this test's rows."""
    return settings.topic_raw.rsplit(".", 1)[-1]


def post_dicts(texts: list[str], tag: str) -> list[dict[str, Any]]:
    """Posts from two sources, spread over 20 minutes of event time, with zoned stamps.

    Tagged English, as the source (Twitter) tags them: every one gets a score row, whatever
    a language guess would say of a short tweet (tests/process/test_language.py covers
    untagged posts)."""
    start = datetime(2009, 5, 11, 3, 0, tzinfo=UTC)
    return [
        {
            "id": f"t{i}",
            "source": f"twitter.{tag}" if i % 3 else f"reddit.{tag}",
            "text": t,
            "created_at": (start + timedelta(seconds=i * 1200 / max(1, len(texts)))).isoformat(),
            "author": f"user{i % 97}",
            "lang": "en",
        }
        for i, t in enumerate(texts)
    ]


def post_key(post: dict[str, Any]) -> bytes:
    return f"{post['source']}\x1f{post['id']}".encode()


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        for key, value in messages:
            producer.send(settings.topic_raw, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()


def produce_posts(settings: Settings, posts: list[dict[str, Any]]) -> None:
    produce(settings, [(post_key(p), orjson.dumps(p)) for p in posts])


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def committed_total(settings: Settings) -> int:
    """Sum over the raw topic's partitions of the group's committed offsets."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, want: int, timeout: float = 30) -> list[Any]:
    """At least ``want`` records of ``topic`` from the start (fewer if the time runs out)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MOODWIRE_BROKER_URL=settings.require("broker_url"),
        MOODWIRE_DATABASE_URL=settings.require("database_url"),
        MOODWIRE_REDIS_URL=settings.require("redis_url"),
        MOODWIRE_STATE_DIR=str(settings.state_dir),
        MOODWIRE_TOPIC_RAW=settings.topic_raw,
        MOODWIRE_TOPIC_SCORED=settings.topic_scored,
        MOODWIRE_TOPIC_ALERTS=settings.topic_alerts,
        MOODWIRE_TOPIC_DEAD_LETTERS=settings.topic_dead_letters,
        MOODWIRE_CONSUMER_GROUP=settings.consumer_group,
        MOODWIRE_SESSION_TIMEOUT=str(SESSION_TIMEOUT_S),
        MOODWIRE_LOG_FORMAT="json",
        MOODWIRE_LOG_LEVEL="INFO",
        # Any free port: never the default one a developer's Prometheus may be scraping.
        MOODWIRE_METRICS_PORT="0",
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """One `moodwire process` subprocess, its JSON log in a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    _lines: list[dict[str, Any]] = field(default_factory=list)
    _read: int = 0

    def events(self) -> list[dict[str, Any]]:
        data = self.log_path.read_bytes()
        if len(data) > self._read:
            chunk, self._read = data[self._read :], len(data)
            for line in chunk.splitlines():
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # third-party prints
                if isinstance(obj, dict):
                    self._lines.append(obj)
        return self._lines

    def assigned(self) -> list[int] | None:
        """Raw-topic partitions of the latest assignment, or None before the first."""
        found = [e for e in self.events() if e.get("event") == "partitions assigned"]
        return list(found[-1]["partitions"]) if found else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
def spawn_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start `moodwire process` workers for this test's settings; all stopped at the end."""
    started: list[Worker] = []

    def spawn(**extra_env: str) -> Worker:
        log_path = tmp_path / f"worker-{len(started)}.log"
        env = worker_env(settings, **extra_env)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(MOODWIRE), "process"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        worker = Worker(proc, log_path)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.kill9()


# --- what the pipeline wrote ---------------------------------------------------------------


def serving_version() -> str:
    return artifact.model_version(Settings().model_path)


def count_scores(settings: Settings, version: str) -> int:
    """Scores of this test's posts under ``version``."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM scores WHERE model_version = :v AND source LIKE :s"
            found = conn.scalar(text(sql), {"v": version, "s": f"%.{tag_of(settings)}"})
            return int(found or 0)
    finally:
        engine.dispose()


_SQL_BUCKETS = """
SELECT b.brand, p.source, (floor(extract(epoch FROM p.created_at) / 60) * 60)::bigint AS minute,
       count(*), count(*) FILTER (WHERE s.label = 0), count(*) FILTER (WHERE s.label = 1),
       count(*) FILTER (WHERE s.label = 2), sum(s.score)
FROM posts p
JOIN scores s ON s.source = p.source AND s.source_id = p.source_id AND s.model_version = :v
    AND p.source LIKE :s
CROSS JOIN LATERAL (
    SELECT unnest(CASE WHEN cardinality(p.brands) = 0 THEN ARRAY['(none)'] ELSE p.brands END)
    UNION ALL SELECT '*'
) AS b(brand)
GROUP BY 1, 2, 3
"""


def sql_buckets(settings: Settings, version: str) -> dict[tuple[str, str, int], Bucket]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(_SQL_BUCKETS), {"v": version, "s": f"%.{tag_of(settings)}"}
            ).all()
    finally:
        engine.dispose()
    return {
        (r[0], r[1], int(r[2])): Bucket(int(r[3]), int(r[4]), int(r[5]), int(r[6]), float(r[7]))
        for r in rows
    }


def redis_buckets(settings: Settings, version: str) -> dict[tuple[str, str, int], Bucket]:
    """This test's buckets in Redis (a rebuild from the session's Postgres also brings
    back the buckets of earlier tests, whose sources end with other tags)."""
    client = connect(settings)
    try:
        everything = RedisCopy(client).buckets(version)
    finally:
        client.close()
    suffix = f".{tag_of(settings)}"
    return {k: b for k, b in everything.items() if k[1].endswith(suffix)}


def assert_aggregates_exact(
    settings: Settings, version: str, expected_posts: int, timeout: float = 30.0
) -> None:
    """Redis buckets equal the same buckets computed in SQL; ``*`` counts each post once.

    Redis is written just after each Postgres commit, so a reader may briefly see rows the
    copy does not have yet: wait (up to ``timeout``) for the copy to agree."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _aggregates_exact(settings, version, expected_posts)
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def _aggregates_exact(settings: Settings, version: str, expected_posts: int) -> None:
    sql = sql_buckets(settings, version)
    red = redis_buckets(settings, version)
    assert set(red) == set(sql), (
        f"bucket keys differ: only redis {sorted(set(red) - set(sql))[:5]}, "
        f"only sql {sorted(set(sql) - set(red))[:5]}"
    )
    for key, want in sql.items():
        got = red[key]
        assert (got.n, got.neg, got.neu, got.pos) == (want.n, want.neg, want.neu, want.pos), key
        assert abs(got.score_sum - want.score_sum) <= 1e-6 * max(1, want.n), key
    assert sum(b.n for k, b in red.items() if k[0] == "*") == expected_posts
