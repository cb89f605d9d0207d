"""The shared session fixtures hand out working, isolated servers."""

from __future__ import annotations

import uuid

import redis
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import inspect, text

from conftest import REDIS_CLAIM_KEY
from moodwire.aggregates.keys import SYNC
from moodwire.db.engine import make_engine
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.topics import ensure_topics, partition_counts, topic_names


def test_settings_topics_exist_with_four_partitions(settings: Settings) -> None:
    counts = partition_counts(settings)
    assert counts == {name: 4 for name in topic_names(settings)}
    assert all(name.endswith(settings.topic_raw.rsplit(".", 1)[1]) for name in counts)


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    assert ensure_topics(settings) == []
    assert set(partition_counts(settings)) == set(topic_names(settings))


def test_broker_round_trips_a_keyed_message(settings: Settings) -> None:
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, enable_idempotence=False, acks="all"
    )
    payload = uuid.uuid4().bytes
    producer.send(settings.topic_raw, key=b"k", value=payload).get(timeout=15)
    producer.close()
    consumer = KafkaConsumer(
        settings.topic_raw,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
        group_id=None,
    )
    received = []
    for message in consumer:
        received.append((message.key, message.value))
        break
    consumer.close()
    assert received == [(b"k", payload)]


def test_database_is_migrated_and_writable(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        assert {"posts", "scores", "alerts", "dead_letters", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO posts (source, source_id, text, created_at)"
                    " VALUES (:s, :i, :t, now())"
                ),
                {"s": "test", "i": uuid.uuid4().hex, "t": "hello"},
            )
            count = conn.execute(text("SELECT count(*) FROM posts WHERE source = 'test'")).scalar()
        assert count is not None and count >= 1
    finally:
        engine.dispose()


def test_redis_url_is_a_private_database(settings: Settings, redis_client: redis.Redis) -> None:
    # Only the session's claim and the aggregates' "copy is whole" mark survive the flush.
    assert sorted(redis_client.keys()) == sorted([REDIS_CLAIM_KEY, SYNC])
    client = connect(settings)
    try:
        client.set("moodwire:test", "v")
        assert redis_client.get("moodwire:test") == "v"
    finally:
        client.close()


def test_settings_are_unique_per_test(settings: Settings, broker_url: str) -> None:
    other = Settings(broker_url=broker_url)
    assert settings.topic_raw != other.topic_raw
    assert settings.state_dir.name == "state"
    assert not settings.state_dir.exists() or not any(settings.state_dir.iterdir())
