"""Re-score the posts already in Postgres with another model version, exactly once.

The posts in scope that lack a score under the new version are read in primary-key order
in chunks (keyset pages, so memory is bounded by the chunk size), scored by the one
inference engine and written by ``PostgresSink.write`` (idempotent on post x version),
whose ``before_commit`` step applies the new version's Redis aggregates.

Exactness reuses the processor's argument (``moodwire.sinks.postgres``) with the ordered
scan as the log: every chunk takes the next positions of a pseudo topic ``rescore`` (one
partition), and ``RedisAggregates`` remembers the highest position it counted. Unlike
Kafka offsets, scan positions are not stable across runs (a rerun skips what was
committed), so the chunk is written ahead to a journal (``moodwire.replay.journal``): a
restart first finishes the journalled chunk from its stored keys at the same positions,
where Redis skips what it counted before a crash and Postgres inserts what was rolled
back. Then the scan starts again; committed posts already have their score and are not
read. One run per model version at a time (a Postgres advisory lock, released by the
server when a killed run's connection drops).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from moodwire.db.engine import make_engine
from moodwire.logs import get_logger
from moodwire.model.scorer import Scorer
from moodwire.process.batch import countable, fault_point, scored_posts
from moodwire.redis_client import connect
from moodwire.replay import posts
from moodwire.replay.journal import Chunk, Journal
from moodwire.replay.posts import Key, Scope, StoredPost
from moodwire.settings import Settings
from moodwire.sinks.postgres import PostgresSink, Stored
from moodwire.sinks.redis_aggregates import RedisAggregates

log = get_logger(__name__)
LOG_TOPIC = "rescore"  # pseudo topic of the watermark mw:wm:{mv}:rescore
LOG_PARTITION = 0


class RescoreBusy(RuntimeError):
    """Another run is re-scoring into the same model version right now."""


@dataclass(frozen=True, slots=True)
class ChunkReport:
    posts: int  # posts read in this chunk
    stored: int  # score rows this chunk inserted
    counted: int  # posts this chunk added to the Redis aggregates
    resumed: bool  # the journalled chunk of an earlier run, finished now


@dataclass(frozen=True, slots=True)
class RescoreReport:
    model_version: str
    posts: int
    stored: int
    counted: int
    chunks: int
    resumed_posts: int  # posts of a killed run's unfinished chunk
    seconds: float

    @property
    def posts_per_s(self) -> float:
        return self.posts / self.seconds if self.seconds > 0 else 0.0


def pending(settings: Settings, scope: Scope, model_version: str) -> int:
    """Posts in ``scope`` still without a ``model_version`` score."""
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            return posts.count_unscored(conn, scope, model_version)
    finally:
        engine.dispose()


def rescore(
    settings: Settings,
    engine: Scorer,
    scope: Scope,
    batch_size: int = 1000,
    on_chunk: Callable[[ChunkReport], None] | None = None,
) -> RescoreReport:
    """Score every post in ``scope`` that lacks a score under ``engine.model_version``."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    # Three connections: the lock, the reader, the sink's writer.
    db = make_engine(settings, pool_size=3, max_overflow=0)
    client = connect(settings)
    sink = PostgresSink(db)
    try:
        with exclusive(db, engine.model_version), db.connect() as reader:
            run = _Run(
                engine,
                reader,
                sink,
                RedisAggregates(client),
                Journal(client, engine.model_version),
                settings.fault_crash_after,
            )
            totals = [0, 0, 0, 0, 0]  # posts, stored, counted, chunks, resumed posts
            for report in run.chunks(scope, batch_size):
                totals[0] += report.posts
                totals[1] += report.stored
                totals[2] += report.counted
                totals[3] += 1
                totals[4] += report.posts if report.resumed else 0
                if on_chunk is not None:
                    on_chunk(report)
    finally:
        sink.close()
        client.close()
        db.dispose()
    posts_n, stored, counted, chunks, resumed = totals
    result = RescoreReport(
        engine.model_version,
        posts=posts_n,
        stored=stored,
        counted=counted,
        chunks=chunks,
        resumed_posts=resumed,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "rescore done",
        extra={
            "model_version": result.model_version,
            "posts": result.posts,
            "stored": result.stored,
            "counted": result.counted,
            "chunks": result.chunks,
            "posts_per_s": round(result.posts_per_s),
        },
    )
    return result


@contextmanager
def exclusive(db: Engine, model_version: str) -> Iterator[None]:
    # Two runs into one version would interleave their journal and log positions.
    lock_id = int.from_bytes(
        hashlib.sha256(f"moodwire.rescore:{model_version}".encode()).digest()[:8],
        "big",
        signed=True,
    )
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}):
            raise RescoreBusy(f"another rescore into {model_version} is running")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


class _Run:
    def __init__(
        self,
        engine: Scorer,
        reader: Connection,
        sink: PostgresSink,
        aggregates: RedisAggregates,
        journal: Journal,
        crash_after: str | None = None,
    ) -> None:
        self._engine = engine
        self._reader = reader
        self._sink = sink
        self._aggregates = aggregates
        self._journal = journal
        self._version = engine.model_version
        self._crash_after = crash_after

    def chunks(self, scope: Scope, batch_size: int) -> Iterator[ChunkReport]:
        last = self._journal.last()
        if last is not None:
            # Whether or not it was committed, what lacks a score is finished at the same
            # positions (nothing, after a run that ended normally).
            found = posts.load_unscored(self._reader, last.keys, self._version)
            self._reader.rollback()  # end the read transaction: no snapshot held meanwhile
            if found:
                yield self._apply(last, [found.get(k) for k in last.keys], resumed=True)
        position = last.end if last is not None else 0
        after: Key | None = None
        while True:
            page = posts.next_unscored(self._reader, scope, self._version, after, batch_size)
            self._reader.rollback()
            if not page:
                return
            chunk = Chunk(position, tuple(p.key for p in page))
            self._journal.begin(chunk)
            yield self._apply(chunk, page, resumed=False)
            position, after = chunk.end, chunk.keys[-1]

    def _apply(self, chunk: Chunk, page: Sequence[StoredPost | None], resumed: bool) -> ChunkReport:
        """Score and write one journalled chunk; ``page[i]`` is at ``chunk.base + i``."""
        present = [(chunk.base + i, p) for i, p in enumerate(page) if p is not None]
        if not present:
            return ChunkReport(0, 0, 0, resumed)
        probs = self._engine.predict([p.post.text for _, p in present])
        batch = scored_posts(
            [p.post for _, p in present], [p.brands for _, p in present], probs, self._version
        )
        counted = 0

        def count(stored: list[Stored]) -> None:
            nonlocal counted
            counted = self._aggregates.apply(
                self._version,
                LOG_TOPIC,
                [
                    countable(LOG_PARTITION, offset, s)
                    for (offset, _), s in zip(present, stored, strict=True)
                ],
            )
            self._fault_point("redis")

        stored = self._sink.write(batch, before_commit=count)
        self._fault_point("postgres")
        return ChunkReport(len(present), sum(s.new for s in stored), counted, resumed)

    def _fault_point(self, where: str) -> None:
        # After this write of the first chunk: tests of the window between Redis and the
        # commit.
        fault_point(self._crash_after, where, "rescore run")
