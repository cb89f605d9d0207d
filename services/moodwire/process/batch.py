"""The batch step of the stream processor, independent of Faust.

A micro-batch of raw Kafka records goes through two calls; the caller acks the batch's
offsets only after the second returns, never before:

:meth:`BatchProcessor.prepare`
    decode each record (``records.decode_record``); bad ones go to the dead-letter topic
    (awaited) with the original bytes, the reason and their Kafka position; tag brands
    (``BrandMatcher.match``) and score the texts (``engine.predict``) in a one-thread
    executor, so the event loop keeps heartbeating while the model runs.
:meth:`BatchProcessor.write`
    one Postgres transaction: insert posts and scores and count the new score rows in
    the per-minute rollups, commit (``moodwire.sinks.postgres``); then copy the rollup
    rows the batch touched into Redis (``moodwire.aggregates.writer``: absolute values by
    revision, so a repeat changes nothing), then the scored records to their topic.

Dead letters are keyed by the refused record's own origin, raw topic id + partition +
offset (``process.incarnations``), so a redelivered batch that sends them again at new
dead-letter positions still leaves one row each, and a recreated topic's offsets 0, 1,
... do not collide with the old ones.

The agent may prepare batch k+1 while batch k is being written (``overlap_batches``),
but never runs two writes at once. Postgres or Redis down: that step is retried with
backoff, forever (logged), and the offsets stay where they are; Redis lost its data: the
copy is rebuilt from Postgres first (``aggregates.writer``). A record that
appears twice in one batch is stored once and counted once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from moodwire import metrics
from moodwire.aggregates.writer import AggregatesWriter
from moodwire.brands import BrandMatcher
from moodwire.faults import fault_point
from moodwire.language import LanguageIdentifier, is_scored
from moodwire.logs import get_logger
from moodwire.model.scorer import Scorer
from moodwire.process.errors import PermanentError, permanent_reason
from moodwire.process.incarnations import TopicIds, origin_key
from moodwire.records import (
    DEFAULT_MAX_RECORD_BYTES,
    NO_BOUNDS,
    SCORED_OVERHEAD_BYTES,
    Bounds,
    DeadLetter,
    InvalidRecord,
    Post,
    PostChange,
    ScoredPost,
    UnscoredPost,
    bounded_payload,
    decode_record,
    encode_post,
    encode_scored,
    kafka_origin,
)
from moodwire.scoring import scored_posts
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.sinks.postgres import PostgresSink, Stored

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
    # Posts in a language the model does not read: stored and counted, not scored.
    unscored: list[UnscoredPost] = field(default_factory=list)


def minute_of(post: Post) -> int:
    """Epoch second of the start of the post's event-time minute (the aggregate bucket)."""
    return int(post.created_at.timestamp()) // 60 * 60


def dead_letter(record: RawRecord, reason: str, bounds: Bounds = NO_BOUNDS) -> DeadLetter:
    """``record`` refused with ``reason``; its value cut to ``max_record_bytes`` so that it
    fits the dead-letter topic (headers add well under the headroom that limit leaves)."""
    limit = bounds.max_record_bytes or DEFAULT_MAX_RECORD_BYTES
    payload, extra = bounded_payload(bytes(record.value or b""), limit)
    return DeadLetter(
        payload=payload,
        reason=reason,
        origin=kafka_origin(record.topic, record.partition, record.offset),
        stage=STAGE,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        extra=extra,
    )


def decode_batch(
    records: Sequence[RawRecord], max_text_chars: int, bounds: Bounds = NO_BOUNDS
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
            post = decode_record(record.value, max_text_chars=max_text_chars, bounds=bounds)
        except InvalidRecord as exc:
            dead.append(dead_letter(record, exc.reason, bounds))
            continue
        if isinstance(post, PostChange):
            changes.append(post)
            continue
        key = post.key
        if key not in seen:
            seen.add(key)
            good.append((record, post))
    return good, dead, changes


async def retry_forever(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    max_delay: float,
    *,
    stop_on_permanent: bool = False,
) -> T:
    """Await ``attempt()`` until it succeeds, pausing 0.1 s, 0.2 s, ... up to ``max_delay``.

    ``stop_on_permanent``: a failure that no retry can fix (``process.errors``) raises
    :class:`PermanentError` at once instead, for the caller to dead-letter the record."""
    delay = 0.1
    failures = 0
    while True:
        tried = time.perf_counter()
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = permanent_reason(exc) if stop_on_permanent else None
            if reason is not None:
                log.error("%s refused permanently", what, extra={"reason": reason})
                raise PermanentError(reason, exc) from exc
            failures += 1
            metrics.SINK_RETRIES.labels(what).inc()
            metrics.SINK_WAIT_SECONDS.labels(what).inc(time.perf_counter() - tried + delay)
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
        aggregates: AggregatesWriter,
        kafka: KafkaWriter,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._matcher = matcher
        self._postgres = postgres
        self._aggregates = aggregates
        self._topic_ids = TopicIds(settings)
        self._kafka = kafka
        # The model and the blocking sinks each get one thread: the model's torch threads
        # do the parallel work, and one connection per sink keeps writes in order.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="moodwire-model")
        self._io_thread = ThreadPoolExecutor(1, thread_name_prefix="moodwire-sinks")
        self._crash_after = settings.fault_crash_after
        self._languages = settings.model_languages
        self._identifier = LanguageIdentifier(settings.language_min_confidence)
        self._bounds = Bounds.from_settings(settings)

    @property
    def model_version(self) -> str:
        return self._engine.model_version

    def close(self) -> None:
        self._model_thread.shutdown(wait=True)
        self._io_thread.shutdown(wait=True)
        self._postgres.close()
        self._aggregates.close()
        self._topic_ids.close()
        self._engine.close()

    async def ensure_aggregates_whole(self) -> None:
        """Rebuild the Redis copy from Postgres if it was lost (in the sinks' thread)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io_thread, self._aggregates.ensure_whole)

    async def process(self, records: Sequence[RawRecord]) -> BatchReport:
        """The whole step for one batch: :meth:`prepare`, then :meth:`write`."""
        return await self.write(await self.prepare(records))

    async def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """Decode (bad records to the dead-letter topic, awaited), match brands, score."""
        started = time.perf_counter()
        good, dead, changes = decode_batch(records, self._settings.max_text_chars, self._bounds)
        stages = {"decode": time.perf_counter() - started}
        scored: list[ScoredPost] = []
        unscored: list[UnscoredPost] = []
        if good:
            mark = time.perf_counter()
            good, unread = self._by_language(good)
            loop = asyncio.get_running_loop()
            scored, unscored, model_s = await loop.run_in_executor(
                self._model_thread, self._score, [post for _, post in good], unread
            )
            stages["score"] = time.perf_counter() - mark
            stages["model"] = model_s
            good, scored = self._refuse_oversized(good, scored, dead)
        await self._send_dead(dead)
        return Prepared(
            received=len(records),
            dead=len(dead),
            positions=[raw for raw, _ in good],
            scored=scored,
            unscored=unscored,
            seconds=time.perf_counter() - started,
            stages=stages,
            changes=changes,
        )

    async def write(self, batch: Prepared) -> BatchReport:
        """Postgres (rows and rollups, one transaction), then the Redis copy, then the
        scored topic; each retried until it succeeds. Calls must not overlap."""
        started = time.perf_counter()
        stages = dict(batch.stages)
        loop = asyncio.get_running_loop()
        if batch.unscored:
            await self._write_unscored(batch.unscored)
        if not batch.scored:
            await self._apply_changes(batch.changes)
            return BatchReport(batch.received, batch.dead, 0, 0, batch.seconds, stages)
        try:
            written = await retry_forever(
                "postgres write",
                lambda: loop.run_in_executor(self._io_thread, self._postgres.store, batch.scored),
                self._settings.sink_retry_max,
                stop_on_permanent=True,
            )
        except PermanentError as exc:
            return await self._isolate(batch, exc, started)
        stored = written.stored
        counted = sum(1 for s in stored if s.new)
        self._fault_point("postgres")
        mark = time.perf_counter()
        stages["postgres"] = mark - started
        # After the commit: Redis shows only what Postgres holds. Dying here leaves the
        # batch unacked; its redelivery reads the same buckets back and writes them.
        await retry_forever(
            "redis aggregates write",
            lambda: loop.run_in_executor(self._io_thread, self._aggregates.write, written.rollups),
            self._settings.sink_retry_max,
        )
        self._fault_point("redis")
        stages["redis"] = time.perf_counter() - mark
        mark = time.perf_counter()
        if self._settings.publish_scored:
            try:
                await self._send_scored(stored, batch.positions)
            except PermanentError:
                await self._send_scored_one_by_one(stored, batch.positions)
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

    def _refuse_oversized(
        self,
        good: list[tuple[RawRecord, Post]],
        scored: list[ScoredPost],
        dead: list[DeadLetter],
    ) -> tuple[list[tuple[RawRecord, Post]], list[ScoredPost]]:
        """Posts whose scored record would exceed ``max_record_bytes`` become dead letters
        before anything is written: the scored topic's broker would refuse them, forever.
        Only posts near the limit are encoded to find out (a scored record is its post
        plus a bounded overhead)."""
        limit = self._settings.max_record_bytes
        near = limit - SCORED_OVERHEAD_BYTES
        keep_good: list[tuple[RawRecord, Post]] = []
        keep_scored: list[ScoredPost] = []
        for (raw, post), s in zip(good, scored, strict=True):
            if len(raw.value or b"") + sum(len(b) + 3 for b in s.brands) > near:
                size = len(encode_scored(s))
                if size > limit:
                    reason = f"scored record would have {size} bytes (limit {limit})"
                    dead.append(dead_letter(raw, reason, self._bounds))
                    continue
            keep_good.append((raw, post))
            keep_scored.append(s)
        return keep_good, keep_scored

    async def _send_dead(self, dead: list[DeadLetter]) -> None:
        """Dead letters to their topic, acknowledged. If the broker refuses one for good
        (its value still too large for it), the values are cut to 1 KiB and sent again;
        only if that fails too are they dropped, logged: never a retry loop forever."""
        if not dead:
            return
        for letter in dead:
            metrics.dead_letter(STAGE, letter.reason)
        dead = await self._keyed(dead)
        topic, retry_max = self._settings.topic_dead_letters, self._settings.sink_retry_max
        try:
            await retry_forever(
                "dead-letter send",
                lambda: self._kafka.send_dead_letters(topic, dead),
                retry_max,
                stop_on_permanent=True,
            )
            self._fault_point("dead-letters")
            return
        except PermanentError:
            pass
        cut = [
            replace(
                d, payload=d.payload[:1024], extra={**d.extra, "truncated": str(len(d.payload))}
            )
            for d in dead
        ]
        try:
            await retry_forever(
                "dead-letter send (cut to 1 KiB)",
                lambda: self._kafka.send_dead_letters(topic, cut),
                retry_max,
                stop_on_permanent=True,
            )
        except PermanentError as exc:
            log.error(
                "dead letters dropped: the broker refuses them",
                extra={
                    "count": len(dead),
                    "origins": [d.origin for d in dead][:10],
                    "reason": exc.reason,
                },
            )

    async def _keyed(self, dead: list[DeadLetter]) -> list[DeadLetter]:
        """Dead letters with their origin key (raw topic id, partition, offset) in a header."""
        loop = asyncio.get_running_loop()
        ids: dict[str, str] = {}
        for topic in sorted({d.topic for d in dead if d.topic}):
            ids[topic] = await retry_forever(
                "topic id lookup",
                lambda topic=topic: loop.run_in_executor(  # type: ignore[misc]
                    None, self._topic_ids.get, topic
                ),
                self._settings.sink_retry_max,
            )
        return [
            replace(
                d,
                extra={
                    **d.extra,
                    "origin-key": origin_key(ids[d.topic], d.topic, d.partition, d.offset),
                },
            )
            if d.topic and d.partition is not None and d.offset is not None
            else d
            for d in dead
        ]

    async def _send_scored(self, stored: list[Stored], positions: list[RawRecord]) -> None:
        await retry_forever(
            "scored send",
            lambda: self._kafka.send_scored(
                self._settings.topic_scored,
                [s.scored for s in stored],
                [raw.partition for raw in positions],
            ),
            self._settings.sink_retry_max,
            stop_on_permanent=True,
        )

    async def _send_scored_one_by_one(
        self, stored: list[Stored], positions: list[RawRecord]
    ) -> None:
        """The scored topic refused the batch for good: send each record alone; one it
        still refuses (stored in Postgres, counted in Redis) becomes a dead letter."""
        dead: list[DeadLetter] = []
        for s, raw in zip(stored, positions, strict=True):
            try:
                await self._send_scored([s], [raw])
            except PermanentError as exc:
                reason = f"stored, but not on the scored topic: {exc.reason}"
                dead.append(dead_letter(raw, reason, self._bounds))
        await self._send_dead(dead)

    async def _write_unscored(self, unscored: list[UnscoredPost]) -> None:
        """Posts stored without a score, retried while Postgres is away; if Postgres
        refuses them for good, each is written alone and one it still refuses becomes a
        dead letter (its canonical encoding: these carry no Kafka position)."""
        loop = asyncio.get_running_loop()

        async def attempt(posts: list[UnscoredPost]) -> None:
            await retry_forever(
                "postgres unscored write",
                lambda: loop.run_in_executor(self._io_thread, self._postgres.write_unscored, posts),
                self._settings.sink_retry_max,
                stop_on_permanent=True,
            )

        try:
            await attempt(unscored)
            return
        except PermanentError:
            pass
        dead: list[DeadLetter] = []
        for u in unscored:
            try:
                await attempt([u])
            except PermanentError as exc:
                topic = self._settings.topic_raw
                dead.append(
                    DeadLetter(
                        payload=encode_post(u.post),
                        reason=exc.reason,
                        origin=f"{topic}: {u.post.source}/{u.post.id}",
                        stage=STAGE,
                        topic=topic,
                    )
                )
        await self._send_dead(dead)

    async def _isolate(self, batch: Prepared, error: PermanentError, started: float) -> BatchReport:
        """A write failed for good: split the batch in halves (offset order kept) and
        write each, until every record that fails alone is a dead letter with the reason;
        the rest of the batch is stored as usual. Unscored posts were already written."""
        if len(batch.scored) == 1:
            await self._send_dead([dead_letter(batch.positions[0], error.reason, self._bounds)])
            await self._apply_changes(batch.changes)
            seconds = batch.seconds + time.perf_counter() - started
            return BatchReport(batch.received, batch.dead + 1, 0, 0, seconds, dict(batch.stages))
        half = len(batch.scored) // 2
        first = replace(
            batch,
            received=0,
            dead=0,
            positions=batch.positions[:half],
            scored=batch.scored[:half],
            changes=[],
            unscored=[],
        )
        second = replace(
            batch,
            received=0,
            dead=0,
            positions=batch.positions[half:],
            scored=batch.scored[half:],
            unscored=[],
        )
        a = await self.write(first)
        b = await self.write(second)
        return BatchReport(
            batch.received,
            batch.dead + a.dead + b.dead,
            a.stored + b.stored,
            a.counted + b.counted,
            batch.seconds + time.perf_counter() - started,
            {**a.stages, **b.stages},
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

    def _by_language(
        self, good: list[tuple[RawRecord, Post]]
    ) -> tuple[list[tuple[RawRecord, Post]], list[Post]]:
        """The posts the model reads, and those in another language. A post from a
        producer other than ``moodwire ingest`` may carry a raw tag (normalised here) or
        none (identified here)."""
        read: list[tuple[RawRecord, Post]] = []
        unread: list[Post] = []
        languages = self._languages
        assign = self._identifier.assign
        for raw, post in good:
            post = assign(post)
            if is_scored(post.lang, languages):
                read.append((raw, post))
            else:
                unread.append(post)
        return read, unread

    def _score(
        self, posts: list[Post], unread: list[Post]
    ) -> tuple[list[ScoredPost], list[UnscoredPost], float]:
        """Scored posts, the unscored ones with their brands, and the seconds ``predict``
        took (CPU time of the model itself)."""
        match = self._matcher.match
        unscored = [UnscoredPost(p, match(p.text)) for p in unread]
        if not posts:
            return [], unscored, 0.0
        brands = [match(p.text) for p in posts]
        started = time.perf_counter()
        probs = self._engine.predict([p.text for p in posts])
        model_s = time.perf_counter() - started
        scored = scored_posts(posts, brands, probs, self._engine.model_version)
        return scored, unscored, model_s

    def _fault_point(self, where: str) -> None:
        fault_point(self._crash_after, where, "worker")
