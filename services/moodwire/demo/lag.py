"""Consumer lag of the processors on the raw topic: log end minus committed, summed.

The log end comes from the high watermark in fetch responses, not from ListOffsets,
because some Kafka-protocol brokers (Tansu) answer ListOffsets with offsets that are too
low. The committed offsets are read with the processors' group id, by a consumer that
never joins the group and never commits, so it cannot disturb the workers.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)


class LagProbe:
    """Call :meth:`lag` as often as once a second; :meth:`close` at the end."""

    def __init__(self, settings: Settings, *, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.topic_raw
        self._offsets: KafkaConsumer | None = None

    def _offsets_reader(self) -> KafkaConsumer:
        if self._offsets is None:
            self._offsets = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers,
                group_id=self.settings.consumer_group,
                enable_auto_commit=False,
                client_id="moodwire-lag-probe",
            )
        return self._offsets

    def log_ends(self, timeout: float = 2.0) -> dict[TopicPartition, int] | None:
        """Each partition's log end offset, from the high watermarks of real fetches."""
        # A new consumer each time: its high watermarks are unknown until a fetch
        # answers, so every value returned is fresh (a reused one would keep stale ones).
        fetcher = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Tiny fetches: only the high watermark in the response is wanted.
            max_partition_fetch_bytes=1024,
            fetch_max_bytes=16 * 1024,
            client_id="moodwire-lag-probe",
        )
        try:
            ids = fetcher.partitions_for_topic(self.topic)
            if not ids:
                return None
            partitions = [TopicPartition(self.topic, p) for p in sorted(ids)]
            fetcher.assign(partitions)
            for tp in partitions:
                fetcher.seek(tp, 0)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                fetcher.poll(timeout_ms=50)
                ends = {tp: fetcher.highwater(tp) for tp in partitions}
                if all(v is not None for v in ends.values()):
                    return {tp: int(v) for tp, v in ends.items() if v is not None}
            return None
        finally:
            fetcher.close(autocommit=False)

    def lag(self) -> int | None:
        """Records on the topic not yet committed by the group; None if unknown."""
        try:
            ends = self.log_ends()
            if ends is None:
                return None
            offsets = self._offsets_reader()
            return sum(max(0, end - (offsets.committed(tp) or 0)) for tp, end in ends.items())
        except KafkaError as exc:
            log.debug("lag unavailable", extra={"error": str(exc)})
            self.close()
            return None

    def close(self) -> None:
        if self._offsets is not None:
            self._offsets.close(autocommit=False)
            self._offsets = None
