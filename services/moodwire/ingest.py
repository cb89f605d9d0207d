"""Run a source connector into the raw-posts topic.

Each record is validated here, at the edge (``records.post_from_dict``/``decode_post``):
a valid post goes to ``settings.topic_raw`` keyed by ``post.key`` (one post, one
partition), as its original JSON when it came as JSON, else as canonical ``post.v1``;
anything else goes to ``settings.topic_dead_letters`` with its original bytes and the
reason in headers. A bad record never stops the run, and :meth:`Ingest.stop` (from a
signal handler) ends it after flushing everything already read.

A resumable connector's cursors live in Postgres (``connector_cursors``), saved only once
the broker has acknowledged the records before them (Kafka Connect's rule), so a crash at
any point re-reads at most the records since the last save; their keys (source + native
id) collapse the repeats into one row each.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.codec import has_lz4, has_snappy, has_zstd
from kafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.exc import SQLAlchemyError

from moodwire import metrics
from moodwire.connectors.base import Connector, Offset, Position, RawRecord
from moodwire.db.cursors import CursorStore
from moodwire.db.engine import make_engine
from moodwire.language import LanguageIdentifier
from moodwire.logs import get_logger
from moodwire.records import (
    NO_BOUNDS,
    Bounds,
    DeadLetter,
    InvalidRecord,
    Post,
    PostChange,
    bounded_payload,
    decode_record,
    encode_post,
    record_from_dict,
)
from moodwire.settings import Settings
from moodwire.topics import ensure_topics

log = get_logger(__name__)

# Dead-letter values are cut to stay under Kafka's default 1 MB message limit; the
# header ``moodwire-truncated`` then gives the original size.
DEAD_LETTER_MAX_BYTES = 900 * 1024
# Headroom for the largest valid post (20k characters of 4-byte UTF-8, JSON-escaped).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
FLUSH_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 10.0


class IngestError(RuntimeError):
    """Ingest cannot go on (broker unreachable); the message says why, in one line."""


def parse_speed(value: str | float) -> float:
    """``--speed``: N (x the original pace), or 0 / "max" for as fast as possible."""
    if isinstance(value, str):
        if value.strip().lower() in ("max", "inf", "0", ""):
            return 0.0
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"speed {value!r} is not a number or 'max'") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"speed {value!r} must be >= 0 (0 or 'max': as fast as possible)")
    return float(value)


@dataclass
class IngestStats:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Records read per second so far."""
        return self.read / self.elapsed if self.elapsed > 0 else 0.0


class Pacer:
    """Replays event time: post k waits until (created_at_k - created_at_0) / speed has
    passed since the first post. Out-of-order timestamps never wait. No wait is longer
    than ``max_wait``: a longer gap in event time (a quiet night, or one post stamped
    years ahead) is cut to it, and the replay goes on paced from that post."""

    def __init__(
        self, speed: float, wait: Callable[[float], bool], max_wait: float = float("inf")
    ) -> None:
        self.speed = speed
        self.max_wait = max_wait
        self._wait = wait
        self._origin: tuple[float, datetime] | None = None

    def wait_for(self, created_at: datetime) -> bool:
        """Sleep until ``created_at``'s turn; True if woken by a stop."""
        if self.speed <= 0:
            return False
        if self._origin is None:
            self._origin = (time.monotonic(), created_at)
            return False
        wall0, event0 = self._origin
        now = time.monotonic()
        seconds = wall0 + (created_at - event0).total_seconds() / self.speed - now
        if seconds > self.max_wait:
            seconds = self.max_wait
            self._origin = (now + seconds, created_at)
        return self._wait(seconds)


def unreachable(settings: Settings, exc: Exception) -> IngestError:
    return IngestError(
        f"cannot reach the broker at {settings.require('broker_url')} ({exc}); is it running? "
        "(`moodwire stack up`)"
    )


def compression_type(settings: Settings) -> str | None:
    chosen = settings.ingest_compression
    if chosen == "none":
        return None
    if chosen != "auto":
        return chosen
    for name, available in (("lz4", has_lz4), ("zstd", has_zstd)):
        if available():
            return name
    return "gzip"


def make_producer(settings: Settings, *, client_id: str = "moodwire-ingest") -> KafkaProducer:
    """The producer for raw posts and dead letters: batched, compressed, acks from all."""
    codec = compression_type(settings)
    if codec == "snappy" and not has_snappy():
        raise IngestError("ingest_compression=snappy needs the python-snappy package")
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            acks="all",
            # kafka-python's idempotent producer never recovers from a broker restart on
            # some brokers (see docs); duplicates are the processor's job to absorb.
            enable_idempotence=False,
            compression_type=codec,
            linger_ms=settings.ingest_linger_ms,
            batch_size=256 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
        )
    except KafkaError as exc:
        raise unreachable(settings, exc) from None


def to_post(
    record: RawRecord, *, max_text_chars: int, bounds: Bounds = NO_BOUNDS
) -> Post | PostChange:
    """Validate one raw record into a Post (or an edit or delete of one), or raise
    InvalidRecord with the reason."""
    if record.error is not None:
        raise InvalidRecord(record.error)
    if record.fields is not None:
        return record_from_dict(record.fields, max_text_chars=max_text_chars, bounds=bounds)
    return decode_record(record.payload, max_text_chars=max_text_chars, bounds=bounds)


ProgressCallback = Callable[[IngestStats], None]


class _End:
    """The reader thread's last item: the connector ended, maybe with an error."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


# A record whose send failed before the producer took it.
_FAILED = object()


class CursorTracker:
    """Offsets safe to save: per source partition, the offset after the newest record such
    that it and every earlier record of that partition were acknowledged by the broker.

    A record the broker refused stops its partition's cursor there for the rest of the run,
    so a restart reads it again instead of skipping it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, deque[tuple[Any, Offset]]] = {}
        self._stuck: set[str] = set()
        self._safe: dict[str, Offset] = {}
        self._saved: dict[str, Offset] = {}

    def add(self, position: Position, future: Any) -> None:
        if position.partition in self._stuck:
            return
        self._pending.setdefault(position.partition, deque()).append((future, position.offset))

    def advance(self) -> None:
        for partition, waiting in self._pending.items():
            while waiting:
                future, offset = waiting[0]
                if future is _FAILED or (future is not None and future.is_done and future.failed()):
                    self._stuck.add(partition)
                    waiting.clear()
                    log.error(
                        "a record was not delivered; its source partition's cursor stays "
                        "before it until the next run",
                        extra={"partition": partition},
                    )
                    break
                if future is not None and not future.is_done:
                    break
                waiting.popleft()
                self._safe[partition] = offset

    def unsaved(self) -> dict[str, Offset]:
        """Safe offsets that differ from what was last saved."""
        return {p: o for p, o in self._safe.items() if self._saved.get(p) != o}

    def mark_saved(self, offsets: dict[str, Offset]) -> None:
        self._saved.update(offsets)


class Ingest:
    """One ingest run: connector -> validation -> raw topic / dead-letter topic.

    The connector runs in a reader thread that fills a bounded queue, so a network read
    never waits on the producer or on a cursor save (until the queue is full: then the
    source is read as fast as Kafka takes it). This thread validates, produces, and every
    ``ingest_cursor_interval`` saves the cursors that the broker's acknowledgements made
    safe (:class:`CursorTracker`); at the end it flushes the producer and saves once more.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        speed: float = 0.0,
        limit: int | None = None,
        producer: KafkaProducer | None = None,
        on_progress: ProgressCallback | None = None,
        progress_every: float = 1.0,
        name: str | None = None,
        cursors: CursorStore | None = None,
    ) -> None:
        self.settings = settings
        self.speed = speed
        self.limit = limit
        self.name = name
        self._cursors = cursors
        self._producer = producer
        self._own_producer = producer is None
        self._on_progress = on_progress
        self._progress_every = progress_every
        self._stop = threading.Event()
        self._connector: Connector | None = None
        self._lock = threading.Lock()
        self._failed = 0
        self._failed_by_kind: Counter[str] = Counter()
        self._first_failure: str | None = None
        self._tracker = CursorTracker()
        self._language = LanguageIdentifier(settings.language_min_confidence)
        self._bounds = Bounds.from_settings(settings)
        self.stats = IngestStats()

    def stop(self) -> None:
        """End the run soon; everything already read is still sent. Signal-handler safe."""
        self._stop.set()
        if self._connector is not None:
            self._connector.stop()

    def _wait(self, seconds: float) -> bool:
        return self._stop.wait(seconds) if seconds > 0 else self._stop.is_set()

    def run(self, connector: Connector) -> IngestStats:
        try:
            self._prepare()
            self._resume(connector)
        except BaseException:
            connector.close()  # the loop below, which closes it otherwise, never runs
            raise
        self._connector = connector
        metrics.set_connector(connector.scheme)
        if self._stop.is_set():
            connector.stop()
        stats = self.stats = IngestStats()
        self._tracker = CursorTracker()
        pacer = Pacer(self.speed, self._wait, max_wait=self.settings.replay_max_wait)
        max_chars = self.settings.max_text_chars
        next_progress = stats.started + self._progress_every
        interval = self.settings.ingest_cursor_interval
        next_save = time.monotonic() + interval
        items: queue.Queue[RawRecord | Position | _End] = queue.Queue(
            self.settings.ingest_queue_size
        )
        reader = threading.Thread(
            target=self._read, args=(connector, items), name="moodwire-connector", daemon=True
        )
        reader.start()
        ended: _End | None = None
        try:
            while True:
                try:
                    item = items.get(timeout=min(interval, 0.5))
                except queue.Empty:
                    item = None
                if isinstance(item, _End):
                    ended = item
                    break
                if isinstance(item, Position):
                    self._tracker.add(item, None)
                elif item is not None:
                    if self._limit_reached() or (self._stop.is_set() and self.speed > 0):
                        self._refuse(connector, item)
                    else:
                        stats.read += 1
                        self._handle(connector, item, pacer, max_chars)
                        if self._limit_reached():
                            connector.stop()
                now = time.monotonic()
                if now >= next_save:
                    next_save = now + interval
                    self._save_cursors(connector)
                if self._on_progress is not None and now >= next_progress:
                    next_progress = now + self._progress_every
                    self._on_progress(self._snapshot())
        finally:
            connector.stop()
            # Records already queued are not sent once the run ends early; senders waiting
            # on them (a webhook) hear so rather than hanging.
            self._drain(connector, items, reader)
            connector.close()
            self._finish()
            self._save_cursors(connector)
            self._connector = None
        if ended is not None and ended.error is not None:
            raise ended.error
        return stats

    def _limit_reached(self) -> bool:
        return self.limit is not None and self.stats.read >= self.limit

    def _resume(self, connector: Connector) -> None:
        if not connector.resumable:
            return
        if self._cursors is None:
            self._cursors = CursorStore(make_engine(self.settings))
        name = self.name or connector.cursor_name
        self.name = name
        try:
            saved = self._cursors.load(name)
        except SQLAlchemyError as exc:
            raise IngestError(
                f"cannot read connector cursors from Postgres ({type(exc).__name__}); is it "
                "running and migrated? (`moodwire stack up`, `moodwire db upgrade`)"
            ) from None
        if saved:
            log.info("resuming from saved cursors", extra={"connector": name, "cursors": saved})
        connector.resume(saved)

    def _read(self, connector: Connector, items: queue.Queue[RawRecord | Position | _End]) -> None:
        """The reader thread: the connector's records into the bounded queue."""
        records = connector.records()
        error: BaseException | None = None
        try:
            for item in records:
                while True:
                    try:
                        items.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        if connector.stopped:
                            return
                if connector.stopped:
                    break
        except BaseException as exc:
            error = exc
        finally:
            # Generators run their cleanup (closing files, sockets) when closed, and only
            # the thread that ran them may close them.
            close = getattr(records, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    error = error or exc
            self._put_end(items, _End(error))

    def _put_end(self, items: queue.Queue[RawRecord | Position | _End], end: _End) -> None:
        while True:
            try:
                items.put(end, timeout=0.5)
                return
            except queue.Full:
                # The main loop has ended and drains; make room rather than block forever.
                with contextlib.suppress(queue.Empty):
                    items.get_nowait()

    def _drain(
        self,
        connector: Connector,
        items: queue.Queue[RawRecord | Position | _End],
        reader: threading.Thread,
    ) -> None:
        # A connector stuck in a read that ignores stop() must not hold the exit forever.
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (reader.is_alive() or not items.empty()) and time.monotonic() < deadline:
            try:
                item = items.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, RawRecord):
                self._refuse(connector, item)
        if reader.is_alive():
            log.warning("the connector did not stop in time; leaving its thread behind")

    def _refuse(self, connector: Connector, record: RawRecord) -> None:
        if record.ticket is not None:
            connector.acknowledge(record.ticket, "ingest is stopping; record not sent")

    def _handle(
        self, connector: Connector, record: RawRecord, pacer: Pacer, max_chars: int
    ) -> None:
        try:
            read = to_post(record, max_text_chars=max_chars, bounds=self._bounds)
            post = self._language.assign_any(read)
            # A JSON record that validated and already had its language is forwarded byte
            # for byte (no re-encoding: measured 3 us of ~35 per post).
            value = record.payload if record.fields is None and post is read else encode_post(post)
            self._bounds.check_size(value)  # what the broker takes, after any re-encoding
        except InvalidRecord as exc:
            future = self._dead_letter(record, exc.reason, connector.scheme)
            metrics.INGEST_RECORDS.labels(connector.scheme, "dead").inc()
        else:
            # A stop while pacing still sends this post: it was already read.
            if pacer.wait_for(post.created_at):
                connector.stop()
            future = self._send(post, value)
            metrics.INGEST_RECORDS.labels(connector.scheme, "sent").inc()
        if record.ticket is not None:
            self._acknowledge_when_done(connector, record.ticket, future)
        if record.position is not None:
            self._tracker.add(record.position, future)

    @staticmethod
    def _acknowledge_when_done(connector: Connector, ticket: Any, future: Any) -> None:
        if future is _FAILED:
            connector.acknowledge(ticket, "the producer refused the record")
            return
        future.add_callback(lambda _meta: connector.acknowledge(ticket, None))
        future.add_errback(lambda exc: connector.acknowledge(ticket, f"{type(exc).__name__}"))

    def _save_cursors(self, connector: Connector) -> None:
        if not connector.resumable or self._cursors is None or self.name is None:
            return
        self._tracker.advance()
        offsets = self._tracker.unsaved()
        if not offsets:
            return
        try:
            self._cursors.save(self.name, offsets)
        except SQLAlchemyError as exc:
            # The records are in Kafka; a later save (or a re-read after a restart, which
            # collapses by key) covers them. Reading goes on.
            log.warning("cursor save failed; retrying", extra={"error": type(exc).__name__})
            return
        self._tracker.mark_saved(offsets)
        metrics.CURSOR_SAVED.labels(connector.scheme).set_to_current_time()

    def _prepare(self) -> None:
        try:
            ensure_topics(self.settings)
        except KafkaError as exc:
            raise unreachable(self.settings, exc) from None
        self._producer = self._producer or make_producer(self.settings)

    def _snapshot(self) -> IngestStats:
        stats = self.stats
        stats.failed = self._failed
        return stats

    def _send(self, post: Post | PostChange, value: bytes) -> Any:
        # Counted when queued; a record the broker never takes moves to "failed" at the end.
        self.stats.sent += 1
        return self._produce("sent", self.settings.topic_raw, key=post.key, value=value)

    def _dead_letter(self, record: RawRecord, reason: str, scheme: str) -> Any:
        extra = {"connector": scheme or "unknown"}
        limit = min(DEAD_LETTER_MAX_BYTES, self.settings.max_record_bytes)
        payload, cut = bounded_payload(record.payload, limit)
        extra.update(cut)
        letter = DeadLetter(
            payload=payload, reason=reason, origin=record.origin, stage="ingest", extra=extra
        )
        self.stats.reasons[reason.split(":", 1)[0][:80]] += 1
        self.stats.dead_lettered += 1
        metrics.dead_letter("ingest", reason)
        log.debug("dead letter", extra={"origin": record.origin, "reason": reason})
        return self._produce(
            "dead_lettered",
            self.settings.topic_dead_letters,
            value=letter.payload,
            headers=letter.headers(),
        )

    def _produce(self, kind: str, topic: str, **message: Any) -> Any:
        """Queue one message; its future, or ``_FAILED`` when the producer refused it. A
        failure to deliver it is counted under ``kind``."""
        assert self._producer is not None
        try:
            future = self._producer.send(topic, **message)
        except KafkaTimeoutError as exc:
            # The producer's buffer stayed full: the broker is gone, not this record bad.
            raise IngestError(f"the broker stopped accepting records: {exc}") from None
        except KafkaError as exc:
            self._on_failure(kind, exc)
            return _FAILED
        future.add_errback(self._on_failure, kind)
        return future

    def _on_failure(self, kind: str, exc: Any) -> None:
        # Runs on the producer's I/O thread (errbacks) or this one (send errors).
        with self._lock:
            self._failed += 1
            self._failed_by_kind[kind] += 1
            if self._first_failure is None:
                self._first_failure = f"{type(exc).__name__}: {exc}"
                log.error("record not delivered", extra={"error": self._first_failure})

    def _finish(self) -> None:
        producer = self._producer
        if producer is not None:
            try:
                producer.flush(timeout=FLUSH_TIMEOUT_S)
            except KafkaTimeoutError:
                log.error("flush timed out; some records may not be delivered")
            if self._own_producer:
                producer.close(timeout=10)
                self._producer = None
        stats = self.stats
        stats.finished = time.monotonic()
        # Records are counted when queued; those the broker never took move to "failed".
        stats.failed = self._failed
        stats.sent -= self._failed_by_kind["sent"]
        stats.dead_lettered -= self._failed_by_kind["dead_lettered"]
        self._connector = None
