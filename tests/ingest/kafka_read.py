"""Read back what a test wrote to a topic (Tansu: no end offsets, so read until quiet)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from moodwire.settings import Settings


def read_topic(
    settings: Settings, topic: str, expected: int, *, timeout: float = 30.0, quiet: float = 1.0
) -> list[ConsumerRecord]:
    """Every record of ``topic``: waits for ``expected`` of them, then ``quiet`` seconds more
    so that extra (duplicate) records would be seen too."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.1)
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        out: list[ConsumerRecord] = []
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=5000)
            for records in batch.values():
                out.extend(records)
            if len(out) >= expected:
                if quiet_until is None:
                    quiet_until = time.monotonic() + quiet
                elif time.monotonic() >= quiet_until:
                    break
        return out
    finally:
        consumer.close()
