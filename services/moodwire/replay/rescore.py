"""Re-score the posts already in Postgres with another model version, exactly once.

The posts in scope that lack a score under the new version are read in primary-key order
in chunks (keyset pages, so memory is bounded by the chunk size), scored by the one
inference engine and written by ``PostgresSink.store`` (idempotent on post x version),
which counts the new score rows in the version's rollups in the same transaction. So
Postgres is exact whatever happens: a killed run's committed chunks are counted once, its
uncommitted one not at all, and a rerun scores only what still lacks a score.

After each commit the chunk's rollup rows are copied to Redis (``aggregates.writer``). A
run killed between a commit and that copy leaves Redis behind on those minutes; a run
marker (``moodwire.replay.journal``) tells the next run, which rebuilds the version's
Redis copy from Postgres when it ends. One run per model version at a time (a Postgres
advisory lock, released by the server when a killed run's connection drops).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from moodwire.aggregates.rebuild import rebuild
from moodwire.aggregates.writer import AggregatesWriter
from moodwire.db.engine import make_engine
from moodwire.faults import fault_point
from moodwire.logs import get_logger
from moodwire.model.scorer import Scorer
from moodwire.redis_client import connect
from moodwire.replay import posts
from moodwire.replay.journal import RunMarker
from moodwire.replay.posts import Key, Scope, StoredPost
from moodwire.scoring import scored_posts
from moodwire.settings import Settings
from moodwire.sinks.postgres import PostgresSink

log = get_logger(__name__)


class RescoreBusy(RuntimeError):
    """Another run is re-scoring into the same model version right now."""


@dataclass(frozen=True, slots=True)
class ChunkReport:
    posts: int  # posts read in this chunk
    stored: int  # score rows this chunk inserted
    counted: int  # posts this chunk added to the rollups (its new score rows)


@dataclass(frozen=True, slots=True)
class RescoreReport:
    model_version: str
    posts: int
    stored: int
    counted: int
    chunks: int
    # An earlier run was killed: the version's Redis copy was rebuilt from Postgres.
    rebuilt: bool
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
    # Three connections: the lock, the reader, the sink's writer (and the rebuild's).
    db = make_engine(settings, pool_size=3, max_overflow=1)
    client = connect(settings)
    sink = PostgresSink(db)
    writer = AggregatesWriter(db, client)
    try:
        with exclusive(db, engine.model_version), db.connect() as reader:
            marker = RunMarker(client, engine.model_version)
            killed_before = marker.begin()
            run = _Run(engine, reader, sink, writer, settings.fault_crash_after)
            totals = [0, 0, 0, 0]  # posts, stored, counted, chunks
            for report in run.chunks(scope, batch_size):
                totals[0] += report.posts
                totals[1] += report.stored
                totals[2] += report.counted
                totals[3] += 1
                if on_chunk is not None:
                    on_chunk(report)
            if killed_before:
                rebuild(db, client, engine.model_version)
            marker.end()
    finally:
        sink.close()
        client.close()
        db.dispose()
    posts_n, stored, counted, chunks = totals
    result = RescoreReport(
        engine.model_version,
        posts=posts_n,
        stored=stored,
        counted=counted,
        chunks=chunks,
        rebuilt=killed_before,
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
        writer: AggregatesWriter,
        crash_after: str | None = None,
    ) -> None:
        self._engine = engine
        self._reader = reader
        self._sink = sink
        self._writer = writer
        self._version = engine.model_version
        self._crash_after = crash_after

    def chunks(self, scope: Scope, batch_size: int) -> Iterator[ChunkReport]:
        after: Key | None = None
        while True:
            page = posts.next_unscored(self._reader, scope, self._version, after, batch_size)
            self._reader.rollback()  # end the read transaction: no snapshot held meanwhile
            if not page:
                return
            yield self._apply(page)
            after = page[-1].key

    def _apply(self, page: Sequence[StoredPost]) -> ChunkReport:
        """Score and write one chunk, then copy its rollups to Redis."""
        probs = self._engine.predict([p.post.text for p in page])
        batch = scored_posts([p.post for p in page], [p.brands for p in page], probs, self._version)
        written = self._sink.store(batch)
        self._fault_point("postgres")
        self._writer.write(written.rollups)
        self._fault_point("redis")
        new = sum(1 for s in written.stored if s.new)
        return ChunkReport(len(page), new, new)

    def _fault_point(self, where: str) -> None:
        # After this write of the first chunk: tests of the window between the commit
        # and Redis.
        fault_point(self._crash_after, where, "rescore run")
