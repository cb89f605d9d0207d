"""Run a source connector into the raw-posts topic.

Each record is validated here, at the edge (``records.post_from_dict``/``decode_post``):
a valid post goes to ``settings.topic_raw`` keyed by ``post.key`` (one post, one
partition), as its original JSON when it came as JSON, else as canonical ``post.v1``;
anything else goes to ``settings.topic_dead_letters`` with its original bytes and the
reason in headers. A bad record never stops the run, and :meth:`Ingest.stop` (from a
signal handler) ends it after flushing everything already read.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.codec import has_lz4, has_snappy, has_zstd
from kafka.errors import KafkaError, KafkaTimeoutError

from moodwire.connectors.base import Connector, RawRecord
from moodwire.logs import get_logger
from moodwire.records import (
    DeadLetter,
    InvalidRecord,
    Post,
    decode_post,
    encode_post,
    post_from_dict,
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
    passed since the first post. Out-of-order timestamps never wait."""

    def __init__(self, speed: float, wait: Callable[[float], bool]) -> None:
        self.speed = speed
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
        due = wall0 + (created_at - event0).total_seconds() / self.speed
        return self._wait(due - time.monotonic())


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


def to_post(record: RawRecord, *, max_text_chars: int) -> Post:
    """Validate one raw record into a Post, or raise InvalidRecord with the reason."""
    if record.error is not None:
        raise InvalidRecord(record.error)
    if record.fields is not None:
        return post_from_dict(record.fields, max_text_chars=max_text_chars)
    return decode_post(record.payload, max_text_chars=max_text_chars)


ProgressCallback = Callable[[IngestStats], None]


class Ingest:
    """One ingest run: connector -> validation -> raw topic / dead-letter topic."""

    def __init__(
        self,
        settings: Settings,
        *,
        speed: float = 0.0,
        limit: int | None = None,
        producer: KafkaProducer | None = None,
        on_progress: ProgressCallback | None = None,
        progress_every: float = 1.0,
    ) -> None:
        self.settings = settings
        self.speed = speed
        self.limit = limit
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
        except BaseException:
            connector.close()  # the loop below, which closes it otherwise, never runs
            raise
        self._connector = connector
        if self._stop.is_set():
            connector.stop()
        stats = self.stats = IngestStats()
        pacer = Pacer(self.speed, self._wait)
        max_chars = self.settings.max_text_chars
        next_progress = stats.started + self._progress_every
        records = connector.records()
        try:
            for record in records:
                stats.read += 1
                try:
                    post = to_post(record, max_text_chars=max_chars)
                    # A JSON record that validated is forwarded byte for byte (no re-encoding:
                    # measured 3 us of ~35 per post); parsed ones are encoded canonically.
                    value = record.payload if record.fields is None else encode_post(post)
                except InvalidRecord as exc:
                    self._dead_letter(record, exc.reason, connector.scheme)
                else:
                    # A stop while pacing still sends this post: it was already read.
                    stopping = pacer.wait_for(post.created_at)
                    self._send(post, value)
                    if stopping:
                        break
                if self.limit is not None and stats.read >= self.limit:
                    break
                if self._stop.is_set():
                    break
                if self._on_progress is not None:
                    now = time.monotonic()
                    if now >= next_progress:
                        next_progress = now + self._progress_every
                        self._on_progress(self._snapshot())
        finally:
            # Generators run their cleanup (closing files) when closed.
            close = getattr(records, "close", None)
            if close is not None:
                close()
            connector.close()
            self._finish()
        return stats

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

    def _send(self, post: Post, value: bytes) -> None:
        # Counted when queued; a record the broker never takes moves to "failed" at the end.
        self.stats.sent += 1
        self._produce("sent", self.settings.topic_raw, key=post.key, value=value)

    def _dead_letter(self, record: RawRecord, reason: str, scheme: str) -> None:
        payload = record.payload
        extra = {"connector": scheme or "unknown"}
        if len(payload) > DEAD_LETTER_MAX_BYTES:
            extra["truncated"] = str(len(payload))
            payload = payload[:DEAD_LETTER_MAX_BYTES]
        letter = DeadLetter(
            payload=payload, reason=reason, origin=record.origin, stage="ingest", extra=extra
        )
        self.stats.reasons[reason.split(":", 1)[0][:80]] += 1
        self.stats.dead_lettered += 1
        log.debug("dead letter", extra={"origin": record.origin, "reason": reason})
        self._produce(
            "dead_lettered",
            self.settings.topic_dead_letters,
            value=letter.payload,
            headers=letter.headers(),
        )

    def _produce(self, kind: str, topic: str, **message: Any) -> None:
        """Queue one message; a failure to deliver it is counted under ``kind``."""
        assert self._producer is not None
        try:
            future = self._producer.send(topic, **message)
        except KafkaTimeoutError as exc:
            # The producer's buffer stayed full: the broker is gone, not this record bad.
            raise IngestError(f"the broker stopped accepting records: {exc}") from None
        except KafkaError as exc:
            self._on_failure(kind, exc)
            return
        future.add_errback(self._on_failure, kind)

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
