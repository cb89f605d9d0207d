"""KafkaWriter on the real broker: every scored post lands, big ones too, keyed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from moodwire.records import Post, ScoredPost
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter


def read_all(settings: Settings, topic: str, want: int) -> list[Any]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest"
    )
    consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    while len(out) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    consumer.close()
    return out


def scored(i: int, text: str = "hello") -> ScoredPost:
    post = Post(id=str(i), source="s", text=text, created_at=datetime(2024, 1, 1, tzinfo=UTC))
    return ScoredPost(post, 2, (0.1, 0.2, 0.7), "v1", ("apple",))


def test_scored_posts_all_arrive_in_their_hinted_partitions(settings: Settings) -> None:
    records = [scored(i) for i in range(3000)]
    records.append(scored(3000, "x" * 600_000))  # more than one record batch holds
    hints = [i % 4 for i in range(len(records))]

    async def send() -> None:
        writer = KafkaWriter(settings)
        await writer.start()
        try:
            await writer.send_scored(settings.topic_scored, records, hints)
        finally:
            await writer.stop()

    asyncio.run(send())
    got = read_all(settings, settings.topic_scored, len(records))
    assert len(got) == len(records)
    by_key = {m.key: m for m in got}
    for i, r in enumerate(records):
        message = by_key[r.post.key]
        assert message.partition == hints[i]
        assert orjson.loads(message.value)["text"] == r.post.text
