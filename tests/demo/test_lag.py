"""The lag probe: log end (from fetch high watermarks) minus the group's committed offsets."""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from moodwire.demo.lag import LagProbe
from moodwire.settings import Settings


def test_lag_counts_records_past_the_committed_offsets(settings: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, enable_idempotence=False)
    for i in range(200):
        producer.send(settings.topic_raw, value=b"x", partition=i % 4)
    producer.flush()
    producer.close()

    probe = LagProbe(settings)
    try:
        assert probe.lag() == 200  # nothing committed: everything is lag

        group = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.consumer_group,
            enable_auto_commit=False,
        )
        tps = [TopicPartition(settings.topic_raw, p) for p in range(4)]
        group.commit({tps[0]: OffsetAndMetadata(50, "", -1), tps[2]: OffsetAndMetadata(20, "", -1)})
        group.close(autocommit=False)
        assert probe.lag() == 200 - 50 - 20
    finally:
        probe.close()
