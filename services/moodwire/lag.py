"""Consumer lag of the processors on the raw topic: log end minus committed, summed.

The log end comes from the high watermark in fetch responses, not from ListOffsets,
because some Kafka-protocol brokers (Tansu) answer ListOffsets with offsets that are too
low. The committed offsets are read with the processors' group id, by a consumer that
never joins the group and never commits, so it cannot disturb the workers.
"""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)


class LagProbe:
    """Reusable (one pair of connections); call :meth:`lag` as often as once a second."""

    def __init__(self, settings: Settings, *, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.topic_raw
        self._offsets: KafkaConsumer | None = None
        self._fetcher: KafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    def _connect(self) -> tuple[KafkaConsumer, KafkaConsumer]:
        if self._offsets is None or self._fetcher is None:
            servers = self.settings.bootstrap_servers
            self._offsets = KafkaConsumer(
                bootstrap_servers=servers,
                group_id=self.settings.consumer_group,
                enable_auto_commit=False,
                client_id="moodwire-lag-probe",
            )
            # Tiny fetches: only the high watermark in the response is wanted.
            self._fetcher = KafkaConsumer(
                bootstrap_servers=servers,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=1024,
                fetch_max_bytes=16 * 1024,
                client_id="moodwire-lag-probe",
            )
        return self._offsets, self._fetcher

    def lag(self) -> int | None:
        """Records on the raw topic not yet committed by the group; None if unknown."""
        try:
            offsets, fetcher = self._connect()
            ids = fetcher.partitions_for_topic(self.topic)
            if not ids:
                return None
            partitions = [TopicPartition(self.topic, p) for p in sorted(ids)]
            if partitions != self._partitions:
                fetcher.assign(partitions)
                self._partitions = partitions
            for tp in partitions:
                fetcher.seek(tp, 0)
            ends: dict[TopicPartition, int] = {}
            for _ in range(5):
                fetcher.poll(timeout_ms=100, max_records=1)
                ends = {tp: hw for tp in partitions if (hw := fetcher.highwater(tp)) is not None}
                if len(ends) == len(partitions):
                    break
            else:
                return None
            total = 0
            for tp in partitions:
                committed = offsets.committed(tp) or 0
                total += max(0, ends[tp] - committed)
            return total
        except KafkaError as exc:
            log.debug("lag unavailable", extra={"error": str(exc)})
            self.close()
            return None

    def close(self) -> None:
        for consumer in (self._offsets, self._fetcher):
            if consumer is not None:
                consumer.close(autocommit=False)
        self._offsets = self._fetcher = None
        self._partitions = []
