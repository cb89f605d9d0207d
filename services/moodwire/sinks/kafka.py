"""Kafka writers of the processor: scored posts and dead letters (asyncio, aiokafka).

``send_*`` return only when the broker has acknowledged every message, because the
caller's offsets advance right after: a fire-and-forget send could lose a dead letter
or a scored record to a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from moodwire.records import DeadLetter, ScoredPost, encode_scored
from moodwire.settings import Settings


class KafkaWriter:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            client_id=f"{self._settings.consumer_group}-writer",
            acks=1,
            # Idempotent producers fail on brokers without InitProducerId support (Tansu);
            # records are keyed and consumers dedupe by key, so at-least-once is enough.
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaWriter used before start()")
        return self._producer

    async def send_scored(self, topic: str, records: Sequence[ScoredPost]) -> None:
        producer = self._require()
        futures = [
            await producer.send(topic, value=encode_scored(r), key=r.post.key) for r in records
        ]
        await asyncio.gather(*futures)

    async def send_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        producer = self._require()
        futures = [
            await producer.send(topic, value=d.payload, headers=d.headers()) for d in letters
        ]
        await asyncio.gather(*futures)
