"""What the worker's agents hand their batches to, built on a thread during the group join.

Building it imports the sinks' libraries (SQLAlchemy, psycopg2, redis, numpy: about half
a second of the interpreter's time). Done before Faust starts, that would delay the
consumer-group join, and so the first scored row, by as much (#18); the join itself is
seconds of waiting on the broker, so :class:`moodwire.process.app.Runtime` runs
:func:`build` on a thread then, and the agents wait for it before their first batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from moodwire.aggregates.writer import AggregatesWriter
from moodwire.brands import BrandMatcher
from moodwire.db.engine import make_engine
from moodwire.logs import get_logger
from moodwire.model.scorer import Scorer
from moodwire.process.batch import BatchProcessor, RawRecord, retry_forever
from moodwire.process.errors import PermanentError
from moodwire.process.incarnations import TopicIds, origin_key
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.sinks.postgres import DeadLetterRow, PostgresSink

log = get_logger(__name__)


@dataclass
class Pipeline:
    """The batch processor and the dead-letter store of one worker."""

    settings: Settings
    processor: BatchProcessor
    kafka: KafkaWriter
    dead_letter_sink: PostgresSink
    topic_ids: TopicIds

    async def start_writer(self) -> None:
        await retry_forever("kafka writer start", self.kafka.start, self.settings.sink_retry_max)

    async def persist_dead_letters(self, events: list[Any]) -> None:
        rows = await _dead_letter_rows(self, events)
        await store_dead_letters(self.dead_letter_sink, rows, self.settings.sink_retry_max)

    @staticmethod
    def raw_records(events: Sequence[Any]) -> list[RawRecord]:
        return [
            RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.value)
            for e in events
        ]

    def close(self) -> None:
        self.processor.close()
        self.dead_letter_sink.close()
        self.topic_ids.close()


def build(
    settings: Settings, engine: Scorer, matcher: BrandMatcher, kafka: KafkaWriter
) -> Pipeline:
    db = make_engine(settings)
    processor = BatchProcessor(
        settings,
        engine,
        matcher,
        PostgresSink(db),
        AggregatesWriter(db, connect(settings)),
        kafka,
    )
    return Pipeline(settings, processor, kafka, PostgresSink(db), TopicIds(settings))


def _header(headers: Any, name: str) -> str:
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in items:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return ""


async def store_dead_letters(
    sink: PostgresSink, rows: list[DeadLetterRow], retry_max: float
) -> None:
    """Rows into ``dead_letters``, retried while Postgres is away. If Postgres refuses the
    batch for good, each row is stored alone, and one it still refuses is logged and
    skipped: a dead letter has nowhere further to go, and retrying it would stall the
    agent forever."""
    loop = asyncio.get_running_loop()

    async def store(batch: list[DeadLetterRow]) -> None:
        await retry_forever(
            "dead-letter persist",
            lambda: loop.run_in_executor(None, sink.write_dead_letters, batch),
            retry_max,
            stop_on_permanent=True,
        )

    try:
        await store(rows)
        return
    except PermanentError:
        pass
    for row in rows:
        try:
            await store([row])
        except PermanentError as exc:
            log.error(
                "dead letter not stored: postgres refuses it",
                extra={"origin": row.origin, "offset": row.offset, "reason": exc.reason},
            )


async def _dead_letter_rows(pipeline: Pipeline, events: list[Any]) -> list[DeadLetterRow]:
    rows = [_dead_letter_row(e) for e in events]
    if all(r.origin_key for r in rows):
        return rows
    # No origin key from the sender (ingest's dead letters): key them by their position
    # in this incarnation of the dead-letter topic.
    topic = pipeline.settings.topic_dead_letters
    loop = asyncio.get_running_loop()
    topic_id = await retry_forever(
        "topic id lookup",
        lambda: loop.run_in_executor(None, pipeline.topic_ids.get, topic),
        pipeline.settings.sink_retry_max,
    )
    return [
        r
        if r.origin_key
        else replace(r, origin_key=origin_key(topic_id, r.topic, r.partition, r.offset))
        for r in rows
    ]


def _dead_letter_row(event: Any) -> DeadLetterRow:
    message = event.message
    headers = message.headers
    return DeadLetterRow(
        origin=_header(headers, "moodwire-origin") or "unknown",
        stage=_header(headers, "moodwire-stage") or "unknown",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=_header(headers, "moodwire-reason") or "no reason given",
        payload=bytes(message.value or b""),
        origin_key=_header(headers, "moodwire-origin-key"),
    )
