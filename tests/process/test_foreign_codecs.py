"""Topics written by another client library (librdkafka, through confluent-kafka) with
each codec Kafka has: kafka-python and aiokafka decode them, and the processor reads
them end to end (before: ``UnsupportedCodecError`` for lz4 killed the worker at once)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioPartition
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.pipeline import (
    Worker,
    assert_aggregates_exact,
    count_scores,
    post_dicts,
    post_key,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
)

CODECS = ("gzip", "snappy", "lz4", "zstd")  # partition k of the topic is written with CODECS[k]


def write_with_librdkafka(settings: Settings, posts: list[dict[str, Any]]) -> dict[str, int]:
    """Post i goes to partition i % 4 with that partition's codec; returns, per codec,
    the bytes librdkafka put on the wire, to show the batches really were compressed."""
    return {
        codec: _write_partition(settings, posts[partition :: len(CODECS)], partition, codec)
        for partition, codec in enumerate(CODECS)
    }


def _write_partition(
    settings: Settings, posts: list[dict[str, Any]], partition: int, codec: str
) -> int:
    stats: list[dict[str, Any]] = []
    errors: list[Any] = []
    producer = Producer(
        {
            "bootstrap.servers": ",".join(settings.bootstrap_servers),
            "compression.type": codec,
            "linger.ms": 50,
            "enable.idempotence": False,
            "statistics.interval.ms": 100,
            "stats_cb": lambda raw: stats.append(json.loads(raw)),
        }
    )
    for post in posts:
        producer.produce(
            settings.topic_raw,
            key=post_key(post),
            value=orjson.dumps(post),
            partition=partition,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0
    assert not errors, errors
    seen = len(stats)
    wait_until(lambda: producer.poll(0.1) >= 0 and len(stats) > seen, 10, "producer stats")
    brokers = stats[-1]["brokers"].values()
    return sum(int(b["txbytes"]) for b in brokers if int(b.get("nodeid", -1)) >= 0)


def stored_ids(settings: Settings) -> set[str]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            sql = "SELECT source_id FROM posts WHERE source LIKE :s"
            return set(conn.scalars(text(sql), {"s": f"%.{tag_of(settings)}"}))
    finally:
        engine.dispose()


def _values_kafka_python(settings: Settings, partition: int, want: int) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([TopicPartition(settings.topic_raw, partition)])
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(r.value for r in records)
        return out
    finally:
        consumer.close()


async def _values_aiokafka(settings: Settings, partition: int, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([AioPartition(settings.topic_raw, partition)])
        out: list[bytes] = []
        async with asyncio.timeout(30):
            while len(out) < want:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(r.value for r in records if r.value is not None)
        return out
    finally:
        await consumer.stop()


def test_kafka_python_and_aiokafka_decode_every_codec_librdkafka_writes(
    settings: Settings,
) -> None:
    posts = post_dicts(real_tweets(800), tag_of(settings))
    wire = write_with_librdkafka(settings, posts)
    for partition, codec in enumerate(CODECS):
        sent = [orjson.dumps(p) for p in posts[partition :: len(CODECS)]]
        assert wire[codec] < 0.7 * sum(map(len, sent)), (codec, wire[codec])  # compressed
        assert _values_kafka_python(settings, partition, len(sent)) == sent, codec
        assert asyncio.run(_values_aiokafka(settings, partition, len(sent))) == sent, codec


def test_the_processor_reads_each_codec_end_to_end(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    n = 1200
    posts = post_dicts(real_tweets(n), tag_of(settings))
    version = serving_version()
    worker = spawn_worker()
    write_with_librdkafka(settings, posts)
    try:
        wait_until(lambda: count_scores(settings, version) >= n or not worker.alive(), 120, "n")
    except AssertionError:
        missing = {p["id"] for p in posts} - stored_ids(settings)
        codecs = sorted({CODECS[int(i[1:]) % len(CODECS)] for i in missing})
        raise AssertionError(f"{len(missing)} posts never stored, written with {codecs}") from None
    assert worker.alive(), worker.tail()
    assert count_scores(settings, version) == n
    assert_aggregates_exact(settings, version, n)
    assert not [e for e in worker.events() if "Codec" in str(e)], worker.tail()
