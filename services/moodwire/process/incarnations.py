"""Which incarnation of a topic a record came from: the broker's topic id.

A topic deleted and created again (any restart of the memory-only local broker; a
recreated topic on Kafka) starts again at offset 0, so ``topic[partition]@offset`` names
different records in different incarnations. The topic id (a UUID the broker gives each
created topic, KIP-516) tells them apart; dead letters are keyed by it
(``tables.DeadLetter.origin_key``).
"""

from __future__ import annotations

import threading
import time

from kafka import KafkaAdminClient

from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)
# Asked again after this long: only batches with dead letters ask at all, and a topic
# recreated in between is caught by the next question.
CACHE_S = 1.0


class TopicIds:
    """Thread-safe; the admin connection opens on first use and reopens after errors."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: KafkaAdminClient | None = None
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def get(self, topic: str) -> str:
        """The topic's id, or ``"unknown"`` (logged) if the broker gives none."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(topic)
            if cached is not None and now - cached[0] < CACHE_S:
                return cached[1]
            try:
                if self._admin is None:
                    self._admin = KafkaAdminClient(
                        bootstrap_servers=self._settings.bootstrap_servers,
                        client_id="moodwire-topic-ids",
                        request_timeout_ms=15000,
                    )
                found = self._admin.describe_topics([topic])
            except Exception:
                if self._admin is not None:
                    self._admin.close()
                    self._admin = None
                raise
            topic_id = str((found[0] if found else {}).get("topic_id") or "")
            if not topic_id or set(topic_id) <= {"0", "-"}:
                log.warning("broker gave no topic id", extra={"topic": topic})
                topic_id = "unknown"
            self._cache[topic] = (now, topic_id)
            return topic_id


def origin_key(topic_id: str, topic: str, partition: int, offset: int) -> str:
    return f"kafka:{topic}:{topic_id}:{partition}:{offset}"
