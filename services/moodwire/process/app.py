"""The Faust app of ``moodwire process``: two agents, configured for throughput.

- ``score-posts`` reads the raw-posts topic in micro-batches of events
  (``noack_take(max_batch, max_wait)``) and hands each batch, with every message's
  partition and offset, to :class:`moodwire.process.batch.BatchProcessor` (through
  :mod:`moodwire.process.pipeline`). The topic is declared as
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
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import faust
import mode

from moodwire import metrics
from moodwire.logs import get_logger
from moodwire.process import faust_patches
from moodwire.settings import Settings

if TYPE_CHECKING:
    from moodwire.process.batch import BatchReport, Prepared
    from moodwire.process.pipeline import Pipeline

log = get_logger(__name__)

# A worker pauses a partition when its stream buffer is 80% full, and a paused fetch then
# waits out its timeout; a deep buffer and large fetches keep data flowing (broker.md).
STREAM_BUFFER_MAXSIZE = 65_536
CONSUMER_MAX_FETCH_SIZE = 4 * 1024 * 1024
PROGRESS_EVERY_S = 5.0
LAG_EVERY_S = 1.0
AGGREGATES_CHECK_S = 5.0


class Runtime(mode.Service):
    """What the agents share, started and stopped with the worker: the :class:`Pipeline`
    (built on a thread by ``build`` while Faust joins the group) and its Kafka writer."""

    def __init__(self, settings: Settings, build: Callable[[], Pipeline], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._build = build
        self._ready: asyncio.Future[Pipeline] | None = None
        self.pipeline: Pipeline | None = None
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
        model_version = self.pipeline.processor.model_version if self.pipeline else ""
        metrics.observe_batch(report, model_version, self.settings.topic_raw)

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
        if self.pipeline is not None:
            await self._check_aggregates(self.pipeline)

    async def _check_aggregates(self, pipeline: Pipeline) -> None:
        try:
            await pipeline.processor.ensure_aggregates_whole()
        except Exception as exc:  # Redis or Postgres away: the next batch waits for them
            log.warning("aggregates check failed", extra={"error": repr(exc)[:300]})

    def ready(self) -> asyncio.Future[Pipeline]:
        """The pipeline, built and its Kafka writer started (once; every caller shares it).
        A build that fails (a Redis URL of an unknown scheme, say) stops the worker."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start_pipeline())
        return self._ready

    async def _start_pipeline(self) -> Pipeline:
        try:
            pipeline = await asyncio.get_running_loop().run_in_executor(None, self._build)
        except Exception as exc:
            log.error("worker cannot start its sinks", extra={"error": repr(exc)[:300]})
            await self.crash(exc)
            raise
        self.pipeline = pipeline
        await pipeline.start_writer()
        return pipeline

    async def on_start(self) -> None:
        # Not awaited: the worker starts this service before the app, and the app's
        # consumer-group join (seconds of waiting on the broker) should not queue behind
        # the build and the connects. The agents await ``ready()`` before their first batch.
        self.add_future(self._warm_up())

    async def _warm_up(self) -> None:
        """During the group join: the pipeline, the scored-topic writer's connect, and the
        first Postgres and Redis connections (the aggregates check opens both), which the
        first batch would otherwise wait for."""
        pipeline = await asyncio.shield(self.ready())
        await self._check_aggregates(pipeline)

    async def on_stop(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.kafka.stop()
            await asyncio.get_running_loop().run_in_executor(None, self.pipeline.close)

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
        # Faust's own web views (its router, stats, signals) answer anyone who connects,
        # and nothing here reads them; metrics are prometheus-client's. Without them the
        # worker also skips aiohttp's import and start before its group join (#18).
        web_enabled=False,
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
        pipeline = await asyncio.shield(runtime.ready())
        batches = _batches(stream)
        processor = pipeline.processor
        raw_records = pipeline.raw_records
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
        pipeline = await asyncio.shield(runtime.ready())
        batches = _batches(stream)
        async for taken in batches.noack_take(settings.max_batch, settings.max_wait):
            events = cast(list[Any], taken)
            await pipeline.persist_dead_letters(events)
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
