"""The Faust app of ``moodwire process``: two agents, configured for throughput.

- ``score-posts`` reads the raw-posts topic in micro-batches of events
  (``noack_take(max_batch, max_wait)``) and hands each batch, with every message's
  partition and offset, to :class:`moodwire.process.batch.BatchProcessor`. The topic is declared as
  raw bytes: Faust decoding a bad message inside ``take()`` would stall the agent on
  every partition, so decoding happens in the batch step where a bad record becomes a
  dead letter. A batch is acked only after all its sinks returned, so offsets never
  pass unwritten posts. Scoring batch k+1 overlaps writing batch k (the model thread
  and the Postgres server work at the same time: measured in the report), but writes
  never overlap each other (one actor, concurrency 1, per worker).
- ``persist-dead-letters`` copies the dead-letter topic into the ``dead_letters`` table,
  idempotent on each dead letter's origin key (the refused record's raw topic id,
  partition and offset; else the dead-letter topic's id and position), acked once stored.

Nothing correctness-critical lives in Faust (no tables): Postgres and Redis hold it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import faust
import mode

from moodwire import metrics
from moodwire.logs import get_logger
from moodwire.process import faust_patches
from moodwire.process.batch import (
    BatchProcessor,
    BatchReport,
    Prepared,
    RawRecord,
    retry_forever,
)
from moodwire.process.errors import PermanentError
from moodwire.process.incarnations import TopicIds, origin_key
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.sinks.postgres import DeadLetterRow, PostgresSink

log = get_logger(__name__)

# A worker pauses a partition when its stream buffer is 80% full, and a paused fetch then
# waits out its timeout; a deep buffer and large fetches keep data flowing (broker.md).
STREAM_BUFFER_MAXSIZE = 65_536
CONSUMER_MAX_FETCH_SIZE = 4 * 1024 * 1024
PROGRESS_EVERY_S = 5.0
LAG_EVERY_S = 1.0
AGGREGATES_CHECK_S = 5.0


def _header(headers: Any, name: str) -> str:
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in items:
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return ""


class Runtime(mode.Service):
    """Starts and stops what the agents share (Kafka writer, sinks) with the worker."""

    def __init__(
        self,
        settings: Settings,
        processor: BatchProcessor,
        kafka: KafkaWriter,
        dead_letter_sink: PostgresSink,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.processor = processor
        self.kafka = kafka
        self.dead_letter_sink = dead_letter_sink
        self.topic_ids = TopicIds(settings)
        self._writer_ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self.posts = 0
        self.dead = 0
        self.batches = 0
        self.busy_s = 0.0
        self._logged_batches = 0
        self.stage_s: dict[str, float] = {}
        # Next raw-topic offset to write per partition, and where the lag's high
        # watermarks come from (the Faust app's consumer; the app is set by create_app).
        self.next_offset: dict[int, int] = {}
        self.faust_app: Any = None

    def record(self, report: BatchReport) -> None:
        self.posts += report.stored
        self.dead += report.dead
        self.batches += 1
        self.busy_s += report.seconds
        for stage, seconds in report.stages.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        metrics.observe_batch(report, self.processor.model_version, self.settings.topic_raw)

    def written(self, events: list[Any]) -> None:
        for event in events:
            message = event.message
            if message.topic == self.settings.topic_raw:
                self.next_offset[message.partition] = message.offset + 1

    @mode.Service.timer(LAG_EVERY_S)
    async def _lag(self) -> None:
        if self.faust_app is not None:
            metrics.update_lag(self.faust_app.consumer, self.settings.topic_raw, self.next_offset)

    @mode.Service.timer(AGGREGATES_CHECK_S)
    async def _aggregates_whole(self) -> None:
        # A Redis flushed or restarted while no posts arrive would stay empty until the
        # next batch: rebuild it from Postgres now (a cheap check when it is whole).
        try:
            await self.processor.ensure_aggregates_whole()
        except Exception as exc:  # Redis or Postgres away: the next batch waits for them
            log.warning("aggregates check failed", extra={"error": repr(exc)[:300]})

    async def ensure_started(self) -> None:
        async with self._lock:
            if not self._writer_ready.is_set():
                await retry_forever(
                    "kafka writer start", self.kafka.start, self.settings.sink_retry_max
                )
                self._writer_ready.set()

    async def on_start(self) -> None:
        await self.ensure_started()

    async def on_stop(self) -> None:
        await self.kafka.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.processor.close)
        self.dead_letter_sink.close()
        self.topic_ids.close()

    @mode.Service.timer(PROGRESS_EVERY_S)
    async def _progress(self) -> None:
        if self.batches != self._logged_batches:
            self._logged_batches = self.batches
            log.info(
                "progress",
                extra={
                    "posts": self.posts,
                    "dead": self.dead,
                    "batches": self.batches,
                    "busy_s": round(self.busy_s, 2),
                    **{f"{k}_s": round(v, 2) for k, v in self.stage_s.items()},
                },
            )


def create_app(settings: Settings, runtime: Runtime) -> faust.App:
    faust_dir = settings.state_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.consumer_group,
        broker=settings.faust_broker,
        autodiscover=False,
        # Per-message statistics only Faust's own web views read (faust_patches, patch 5).
        monitor=faust_patches.quiet_monitor() if settings.faust_speedups else None,
        store="memory://",
        # Faust creates a "<app id>-data" directory even with a memory store; keep it out of
        # the working directory.
        datadir=str(faust_dir),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        stream_buffer_maxsize=STREAM_BUFFER_MAXSIZE,
        consumer_max_fetch_size=CONSUMER_MAX_FETCH_SIZE,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 10),
        broker_rebalance_timeout=max(10.0, settings.session_timeout),
        broker_request_timeout=max(90.0, settings.session_timeout * 2),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_linger=timedelta(milliseconds=5),
    )

    def bytes_topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    raw = bytes_topic(settings.topic_raw)
    dead_letters = bytes_topic(settings.topic_dead_letters)

    # Every agent acks by hand, after its writes returned: ``take_events`` acks a batch in
    # a ``finally``, so a batch whose step raised (or was cancelled at shutdown) would be
    # acked, and its offsets committed, without having been written.
    @app.agent(raw, name="score-posts", concurrency=1)
    async def score_posts(stream: faust.StreamT[bytes]) -> None:
        await runtime.ensure_started()
        batches = _batches(stream)
        processor = runtime.processor
        if not settings.overlap_batches:
            async for taken in batches.noack_take(settings.max_batch, settings.max_wait):
                events = cast(list[Any], taken)
                runtime.record(await processor.process(raw_records(events)))
                await _ack(batches, events)
                runtime.written(events)
            return

        async def write_then_ack(prepared: Prepared, events: list[Any]) -> None:
            runtime.record(await processor.write(prepared))
            await _ack(batches, events)
            runtime.written(events)

        # Two batches in flight at most: batch k+1 is decoded and scored while batch k is
        # written. Writes stay strictly sequential (Redis counts in offset order), and a
        # batch is acked only when its write returns, so offsets never pass unwritten
        # posts; a crash loses at most unacked batches, which come back and are written
        # idempotently.
        writing: asyncio.Future[None] | None = None
        try:
            async for taken in batches.noack_take(settings.max_batch, settings.max_wait):
                events = cast(list[Any], taken)
                prepared = await processor.prepare(raw_records(events))
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(write_then_ack(prepared, events))
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # its events stay unacked and are delivered again

    @app.agent(dead_letters, name="persist-dead-letters", concurrency=1)
    async def persist_dead_letters(stream: faust.StreamT[bytes]) -> None:
        batches = _batches(stream)
        async for taken in batches.noack_take(settings.max_batch, settings.max_wait):
            events = cast(list[Any], taken)
            rows = await _dead_letter_rows(runtime, events)
            await store_dead_letters(runtime.dead_letter_sink, rows, settings.sink_retry_max)
            await _ack(batches, events)

    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        ours = sorted(tp.partition for tp in assigned if tp.topic == settings.topic_raw)
        log.info("partitions assigned", extra={"topic": settings.topic_raw, "partitions": ours})

    app.on_partitions_assigned.connect(cast(Any, _assigned))
    runtime.faust_app = app

    return app


def _batches(stream: faust.StreamT[bytes]) -> faust.Stream[bytes]:
    # StreamT (what agents are typed to receive) does not declare noack_take; the object
    # an agent gets is always a faust.Stream, which has it.
    return cast(faust.Stream[bytes], stream)


async def _ack(stream: faust.Stream[bytes], events: list[Any]) -> None:
    # noack_take is typed to yield values, but yields the events themselves (to ack).
    for event in events:
        await stream.ack(event)


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


async def _dead_letter_rows(runtime: Runtime, events: list[Any]) -> list[DeadLetterRow]:
    rows = [_dead_letter_row(e) for e in events]
    if all(r.origin_key for r in rows):
        return rows
    # No origin key from the sender (ingest's dead letters): key them by their position
    # in this incarnation of the dead-letter topic.
    topic = runtime.settings.topic_dead_letters
    loop = asyncio.get_running_loop()
    topic_id = await retry_forever(
        "topic id lookup",
        lambda: loop.run_in_executor(None, runtime.topic_ids.get, topic),
        runtime.settings.sink_retry_max,
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


def raw_records(events: Sequence[Any]) -> list[RawRecord]:
    return [
        RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.value)
        for e in events
    ]
