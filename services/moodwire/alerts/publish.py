"""Announce new alerts on the alerts topic (JSON, keyed by brand)."""

from __future__ import annotations

from typing import Any

import orjson
from kafka import KafkaProducer

from moodwire.settings import Settings

SEND_TIMEOUT_S = 30.0


class AlertPublisher:
    """A kafka-python producer that returns only once the broker has the alert."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: KafkaProducer | None = None

    def publish(self, alert: dict[str, Any]) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self._settings.bootstrap_servers,
                client_id="moodwire-alerts",
                acks=1,
                # kafka-python 3 defaults to idempotence, which never recovers from a
                # broker restart on Tansu (shared notes); the alert row dedupes anyway.
                enable_idempotence=False,
                linger_ms=0,
            )
        future = self._producer.send(
            self._settings.topic_alerts,
            key=str(alert["brand"]).encode(),
            value=orjson.dumps(alert),
        )
        future.get(timeout=SEND_TIMEOUT_S)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
