"""The batch step of the stream processor, independent of Faust.

A micro-batch of raw Kafka records goes through two calls; the caller acks the batch's
offsets only after the second returns, never before:

:meth:`BatchProcessor.prepare`
    decode each record (``records.decode_record``); bad ones go to the dead-letter topic
    (awaited) with the original bytes, the reason and their Kafka position; tag brands
    (``BrandMatcher.match``) and score the texts (``engine.predict``) in a one-thread
    executor, so the event loop keeps heartbeating while the model runs.
:meth:`BatchProcessor.write`
    one Postgres transaction: insert posts and scores, apply the Redis aggregates of
    the posts whose score is new, commit (why this order keeps the aggregates exact:
    ``moodwire.sinks.postgres``); then the scored records to the scored-posts topic.

The agent may prepare batch k+1 while batch k is being written (``overlap_batches``),
but never runs two writes at once. Postgres or Redis down: the write is retried whole,
with backoff, forever (logged), and the offsets stay where they are. A record that
appears twice in one batch is stored once and counted once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from moodwire.brands import BrandMatcher
from moodwire.logs import get_logger
from moodwire.model.scorer import Scorer
from moodwire.records import (
    DeadLetter,
    InvalidRecord,
    Post,
    PostChange,
    ScoredPost,
    decode_record,
    kafka_origin,
)
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.sinks.postgres import PostgresSink, Stored
from moodwire.sinks.redis_aggregates import Countable, RedisAggregates

log = get_logger(__name__)
T = TypeVar("T")
STAGE = "process"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A message of the raw-posts topic: its position and its undecoded value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class BatchReport:
    received: int
    dead: int
    stored: int
    counted: int  # posts newly counted in the Redis aggregates
    seconds: float
    # Seconds per stage: where a slow pipeline spends its time (logged with progress).
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch decoded and scored, not yet written; ``positions[i]`` is ``scored[i]``'s."""

    received: int
    dead: int
    positions: list[RawRecord]
    scored: list[ScoredPost]
    seconds: float
    stages: dict[str, float]
    changes: list[PostChange] = field(default_factory=list)


def minute_of(post: Post) -> int:
    """Epoch second of the start of the post's event-time minute (the aggregate bucket)."""
    return int(post.created_at.timestamp()) // 60 * 60


def scored_posts(
    posts: Sequence[Post],
    brands: Sequence[tuple[str, ...]],
    probs: npt.NDArray[np.float32],
    model_version: str,
) -> list[ScoredPost]:
    """``posts[i]`` with brands ``brands[i]`` and the class probabilities ``probs[i]``."""
    labels = probs.argmax(axis=1).tolist()
    return [
        ScoredPost(
            post=p,
            label=int(label),
            probs=(row[0], row[1], row[2]),
            model_version=model_version,
            brands=b,
        )
        for p, label, row, b in zip(posts, labels, probs.tolist(), brands, strict=True)
    ]


def countable(partition: int, offset: int, stored: Stored) -> Countable:
    """A stored post at its log position, as the Redis aggregates count it."""
    scored = stored.scored
    return Countable(
        partition=partition,
        offset=offset,
        source=scored.post.source,
        minute=minute_of(scored.post),
        brands=scored.brands,
        label=scored.label,
        score=scored.score,
        new=stored.new,
    )


def fault_point(crash_after: str | None, where: str, what: str) -> None:
    """Fault injection for the exactness tests (``settings.fault_crash_after``): when
    ``where`` is the configured point, die like ``kill -9``, with no cleanup and no
    offset commit."""
    if crash_after == where:
        log.warning("fault injection: killing the %s", what, extra={"after": where})
        os.kill(os.getpid(), signal.SIGKILL)


def decode_batch(
    records: Sequence[RawRecord], max_text_chars: int
) -> tuple[list[tuple[RawRecord, Post]], list[DeadLetter], list[PostChange]]:
    """Valid posts (the first of each key in the batch), dead letters for the bad records,
    and the edits and deletes in log order (applied after the batch's posts are stored)."""
    good: list[tuple[RawRecord, Post]] = []
    dead: list[DeadLetter] = []
    changes: list[PostChange] = []
    seen: set[bytes] = set()
    for record in records:
        try:
            if not record.value:
                raise InvalidRecord("empty message")
            post = decode_record(record.value, max_text_chars=max_text_chars)
        except InvalidRecord as exc:
            dead.append(
                DeadLetter(
                    payload=bytes(record.value or b""),
                    reason=exc.reason,
                    origin=kafka_origin(record.topic, record.partition, record.offset),
                    stage=STAGE,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
            )
            continue
        if isinstance(post, PostChange):
            changes.append(post)
            continue
        key = post.key
        if key not in seen:
            seen.add(key)
            good.append((record, post))
    return good, dead, changes


async def retry_forever(what: str, attempt: Callable[[], Awaitable[T]], max_delay: float) -> T:
    """Await ``attempt()`` until it succeeds, pausing 0.1 s, 0.2 s, ... up to ``max_delay``."""
    delay = 0.1
    failures = 0
    while True:
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            log.warning(
                "%s failed; retrying, offsets held",
                what,
                extra={"attempt": failures, "retry_in_s": delay, "error": repr(exc)[:300]},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if failures:
            log.info("%s recovered", what, extra={"failed_attempts": failures})
        return result


class BatchProcessor:
    """Decode, match, score and write one micro-batch; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        engine: Scorer,
        matcher: BrandMatcher,
        postgres: PostgresSink,
        aggregates: RedisAggregates,
        kafka: KafkaWriter,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._matcher = matcher
        self._postgres = postgres
        self._aggregates = aggregates
        self._kafka = kafka
        # The model and the blocking sinks each get one thread: the model's torch threads
        # do the parallel work, and one connection per sink keeps writes in order.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="moodwire-model")
        self._io_thread = ThreadPoolExecutor(1, thread_name_prefix="moodwire-sinks")
        self._crash_after = settings.fault_crash_after

    @property
    def model_version(self) -> str:
        return self._engine.model_version

    def close(self) -> None:
        self._model_thread.shutdown(wait=True)
        self._io_thread.shutdown(wait=True)
        self._postgres.close()
        self._aggregates.close()
        self._engine.close()

    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        """The whole step for one batch: :meth:`prepare`, then :meth:`write`."""
        return await self.write(await self.prepare(records))

    async def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """Decode (bad records to the dead-letter topic, awaited), match brands, score."""
        started = time.perf_counter()
        good, dead, changes = decode_batch(records, self._settings.max_text_chars)
        stages = {"decode": time.perf_counter() - started}
        if dead:
            await retry_forever(
                "dead-letter send",
                lambda: self._kafka.send_dead_letters(self._settings.topic_dead_letters, dead),
                self._settings.sink_retry_max,
            )
        scored: list[ScoredPost] = []
        if good:
            mark = time.perf_counter()
            posts = [post for _, post in good]
            loop = asyncio.get_running_loop()
            scored, model_s = await loop.run_in_executor(self._model_thread, self._score, posts)
            stages["score"] = time.perf_counter() - mark
            stages["model"] = model_s
        return Prepared(
            received=len(records),
            dead=len(dead),
            positions=[raw for raw, _ in good],
            scored=scored,
            seconds=time.perf_counter() - started,
            stages=stages,
            changes=changes,
        )

    async def write(self, batch: Prepared) -> BatchReport:
        """Postgres + Redis in one step (retried whole until both succeed), then the
        scored topic. Calls must not overlap: Redis counts partitions in offset order."""
        started = time.perf_counter()
        stages = dict(batch.stages)
        loop = asyncio.get_running_loop()
        if not batch.scored:
            await self._apply_changes(batch.changes)
            return BatchReport(batch.received, batch.dead, 0, 0, batch.seconds, stages)
        counted = 0

        def persist() -> list[Stored]:
            return self._postgres.write(batch.scored, before_commit=count_in_redis)

        def count_in_redis(stored: list[Stored]) -> None:
            nonlocal counted
            records = [
                countable(raw.partition, raw.offset, s)
                for raw, s in zip(batch.positions, stored, strict=True)
            ]
            mark = time.perf_counter()
            counted = self._aggregates.apply(self.model_version, self._settings.topic_raw, records)
            stages["redis"] = time.perf_counter() - mark
            self._fault_point("redis")

        stored = await retry_forever(
            "postgres+redis write",
            lambda: loop.run_in_executor(self._io_thread, persist),
            self._settings.sink_retry_max,
        )
        self._fault_point("postgres")
        mark = time.perf_counter()
        stages["postgres"] = mark - started - stages.get("redis", 0.0)
        await retry_forever(
            "scored send",
            lambda: self._kafka.send_scored(
                self._settings.topic_scored,
                [s.scored for s in stored],
                [raw.partition for raw in batch.positions],
            ),
            self._settings.sink_retry_max,
        )
        self._fault_point("scored")
        await self._apply_changes(batch.changes)
        done = time.perf_counter()
        stages["scored"] = done - mark
        return BatchReport(
            batch.received,
            batch.dead,
            len(stored),
            counted,
            batch.seconds + done - started,
            stages,
        )

    async def _apply_changes(self, changes: list[PostChange]) -> None:
        """Edits and deletes after the posts they follow in the log are stored."""
        if not changes:
            return
        loop = asyncio.get_running_loop()
        await retry_forever(
            "postgres edits/deletes",
            lambda: loop.run_in_executor(self._io_thread, self._postgres.apply_changes, changes),
            self._settings.sink_retry_max,
        )

    def _score(self, posts: list[Post]) -> tuple[list[ScoredPost], float]:
        """Scored posts, and the seconds ``predict`` took (CPU time of the model itself)."""
        match = self._matcher.match
        brands = [match(p.text) for p in posts]
        started = time.perf_counter()
        probs = self._engine.predict([p.text for p in posts])
        model_s = time.perf_counter() - started
        return scored_posts(posts, brands, probs, self._engine.model_version), model_s

    def _fault_point(self, where: str) -> None:
        fault_point(self._crash_after, where, "worker")
