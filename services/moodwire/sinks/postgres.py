"""Bulk, idempotent writes of scored posts and dead letters to PostgreSQL.

A batch is one transaction: COPY the rows into session staging tables, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` into posts, then scores, so a
redelivered batch inserts nothing twice. ``RETURNING`` tells which scores are new; for
the others the stored row wins (brands and probabilities as first written), so every
later consumer of the batch (the Redis aggregates, the scored topic) sees exactly what
Postgres holds.

The same transaction adds the posts whose score row is new to the per-minute
``rollups`` (``moodwire.aggregates.rollup``), so Postgres alone holds exact aggregates: a
post is counted exactly when its score row is inserted, once, whatever was redelivered,
replayed or rolled back. :meth:`PostgresSink.store` returns those rollup rows as they
stand; the caller copies them to Redis after the commit (``moodwire.aggregates.writer``),
so Redis never shows a count Postgres does not hold.

``before_commit`` runs a caller's step after the inserts and before the commit, while the
new rows are still invisible and locked (tests use it to fail a batch at that point).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg2.extras import execute_values
from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from moodwire.aggregates import rollup
from moodwire.aggregates.keys import ALL_BRANDS, NO_BRAND
from moodwire.aggregates.rollup import RollupRow
from moodwire.records import PostChange, ScoredPost, UnscoredPost

_POST_COLUMNS = "source, source_id, text, created_at, author, url, lang, brands, metadata"
_SCORE_COLUMNS = "source, source_id, model_version, label, p_negative, p_neutral, p_positive, score"
# Rows are COPYed into per-session staging tables, then moved with one INSERT ... SELECT:
# COPY skips building and parsing a statement as long as the batch (measured 1.3-1.5x
# the rows/s of a multi-row VALUES insert here).
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS mw_stage_posts (LIKE posts INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS mw_stage_scores (LIKE scores INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
"""
_COPY_POSTS = f"COPY mw_stage_posts ({_POST_COLUMNS}) FROM STDIN"
_COPY_SCORES = f"COPY mw_stage_scores ({_SCORE_COLUMNS}) FROM STDIN"
_INSERT_POSTS = f"""
INSERT INTO posts ({_POST_COLUMNS}) SELECT {_POST_COLUMNS} FROM mw_stage_posts
ON CONFLICT (source, source_id) DO NOTHING
RETURNING source, source_id
"""
_INSERT_SCORES = f"""
INSERT INTO scores ({_SCORE_COLUMNS}) SELECT {_SCORE_COLUMNS} FROM mw_stage_scores
ON CONFLICT (source, source_id, model_version) DO NOTHING
RETURNING source, source_id
"""
# COPY's text format: backslash escapes for the four characters that would end a field.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"

_SELECT_STORED = """
SELECT p.source, p.source_id, p.brands, s.label, s.p_negative, s.p_neutral, s.p_positive
FROM posts p
JOIN scores s ON s.source = p.source AND s.source_id = p.source_id AND s.model_version = %s
WHERE (p.source, p.source_id) IN (VALUES {values})
"""

# Edits keep the text the post had before; a redelivered or older edit changes nothing.
_RECORD_EDIT = """
INSERT INTO post_edits (source, source_id, edited_at, previous_text)
SELECT source, source_id, %(at)s, text FROM posts
WHERE source = %(source)s AND source_id = %(id)s AND deleted_at IS NULL
  AND (edited_at IS NULL OR edited_at < %(at)s)
ON CONFLICT DO NOTHING
"""
_APPLY_EDIT = """
UPDATE posts SET text = %(text)s, edited_at = %(at)s
WHERE source = %(source)s AND source_id = %(id)s AND deleted_at IS NULL
  AND (edited_at IS NULL OR edited_at < %(at)s)
"""
# A deleted post keeps its row and its score (its place in the counts); what identifies
# the person or says what they wrote is erased, edits included.
_APPLY_DELETE = """
UPDATE posts SET text = '', author = NULL, url = NULL, metadata = NULL,
       deleted_at = COALESCE(deleted_at, %(at)s)
WHERE source = %(source)s AND source_id = %(id)s
"""
_ERASE_EDITS = "DELETE FROM post_edits WHERE source = %(source)s AND source_id = %(id)s"

_COUNT_UNSCORED = """
INSERT INTO unscored_minutes (brand, source, lang, minute, n) VALUES %s
ON CONFLICT (brand, source, lang, minute) DO UPDATE SET n = unscored_minutes.n + EXCLUDED.n
"""

_INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (origin, stage, topic, partition, "offset", reason, payload, origin_key)
VALUES %s
ON CONFLICT (origin_key) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A scored post as Postgres holds it; ``new`` when this transaction inserted its score."""

    scored: ScoredPost
    new: bool


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    origin: str
    stage: str
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes
    # What identifies this dead letter across redeliveries and recreated topics (see
    # tables.DeadLetter.origin_key); defaults to its dead-letter topic position.
    origin_key: str = ""

    def key(self) -> str:
        return self.origin_key or f"position:{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Written:
    """A batch as stored, and the rollup rows it changed or touched, as they now stand
    (what the Redis copy is written from once the transaction committed)."""

    stored: list[Stored]
    rollups: list[RollupRow]


class PostgresSink:
    """Owns one connection (reopened after a failure); not thread-safe, use from one thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: PoolProxiedConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(
        self,
        batch: Sequence[ScoredPost],
        before_commit: Callable[[list[Stored]], None] | None = None,
    ) -> list[Stored]:
        """Store posts and scores (keys unique within ``batch``); returns them as stored."""
        return self.store(batch, before_commit).stored

    def store(
        self,
        batch: Sequence[ScoredPost],
        before_commit: Callable[[list[Stored]], None] | None = None,
    ) -> Written:
        """:meth:`write`, with the rollup rows the transaction counted the new scores in
        (and those of the batch's other buckets, read back), as committed."""
        if not batch:
            return Written([], [])
        written: Written = self._transaction(lambda cur: self._write(cur, batch, before_commit))
        return written

    def write_unscored(self, batch: Sequence[UnscoredPost]) -> int:
        """Store posts that get no sentiment (keys unique within ``batch``) and count the
        new ones in ``unscored_minutes``, in one transaction; returns how many were new."""
        if not batch:
            return 0

        def body(cur: Any) -> int:
            cur.copy_expert(_COPY_POSTS, io.StringIO("".join(_post_line(u) for u in batch)))
            cur.execute(_INSERT_POSTS)
            fresh = {(row[0], row[1]) for row in cur.fetchall()}
            counts: Counter[tuple[str, str, str, datetime]] = Counter()
            for u in batch:
                p = u.post
                if (p.source, p.id) in fresh:
                    minute = datetime.fromtimestamp(int(p.created_at.timestamp()) // 60 * 60, UTC)
                    for brand in (*(u.brands or (NO_BRAND,)), ALL_BRANDS):
                        counts[(brand, p.source, p.lang or "und", minute)] += 1
            if counts:
                rows = [(*key, n) for key, n in sorted(counts.items())]
                execute_values(cur, _COUNT_UNSCORED, rows, page_size=len(rows))
            return len(fresh)

        new: int = self._transaction(body)
        return new

    def apply_changes(self, changes: Sequence[PostChange]) -> None:
        """Edits and deletes, in order, in one transaction; applying them twice is a no-op."""
        if not changes:
            return

        def body(cur: Any) -> None:
            for change in changes:
                params = {"source": change.source, "id": change.id, "at": change.at}
                if change.op == "delete":
                    cur.execute(_APPLY_DELETE, params)
                    cur.execute(_ERASE_EDITS, params)
                elif change.post is not None:
                    params["text"] = change.post.text
                    cur.execute(_RECORD_EDIT, params)
                    cur.execute(_APPLY_EDIT, params)

        self._transaction(body)

    def write_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        if not rows:
            return
        # The headers come from whoever wrote to the dead-letter topic, and a text column
        # refuses U+0000: one such row would fail its batch on every retry, forever.
        values = [
            (
                _no_nul(r.origin),
                _no_nul(r.stage),
                r.topic,
                r.partition,
                r.offset,
                _no_nul(r.reason),
                r.payload,
                r.key(),
            )
            for r in rows
        ]
        self._transaction(
            lambda cur: execute_values(cur, _INSERT_DEAD_LETTERS, values, page_size=len(values))
        )

    # --- internals ----------------------------------------------------------------------

    def _transaction(self, body: Callable[[Any], Any]) -> Any:
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                result = body(cur)
            finally:
                cur.close()
            conn.commit()
            return result
        except BaseException:
            # A broken connection cannot even roll back; drop it and reconnect next time.
            try:
                conn.rollback()
            except Exception:
                self._discard()
            raise

    def _connection(self) -> PoolProxiedConnection:
        if self._conn is None:
            conn = self._engine.raw_connection()
            # Created in a transaction of their own: had the first batch rolled back, the
            # tables would have vanished with it.
            cur = conn.cursor()
            try:
                cur.execute(_CREATE_STAGING)
            finally:
                cur.close()
            conn.commit()
            self._conn = conn
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already dead: nothing to release
                conn.invalidate()

    def _write(
        self,
        cur: Any,
        batch: Sequence[ScoredPost],
        before_commit: Callable[[list[Stored]], None] | None,
    ) -> Written:
        version = batch[0].model_version
        cur.copy_expert(_COPY_POSTS, io.StringIO("".join(_post_line(s) for s in batch)))
        cur.execute(_INSERT_POSTS)
        fresh_posts = {(row[0], row[1]) for row in cur.fetchall()}
        cur.copy_expert(_COPY_SCORES, io.StringIO("".join(_score_line(s) for s in batch)))
        cur.execute(_INSERT_SCORES)
        fresh_scores = {(row[0], row[1]) for row in cur.fetchall()}
        if len(fresh_posts) == len(batch) and len(fresh_scores) == len(batch):
            result = [Stored(s, True) for s in batch]
        else:
            result = self._merge_stored(cur, version, batch, fresh_posts, fresh_scores)
        # Counted here, in the transaction of the score rows: a post is in the rollups
        # exactly when its score row is, whatever was redelivered or rolled back.
        rollups = rollup.count_new(
            cur,
            version,
            [s.scored for s in result if s.new],
            [s.scored for s in result if not s.new],
        )
        if before_commit is not None:
            before_commit(result)
        return Written(result, rollups)

    @staticmethod
    def _merge_stored(
        cur: Any,
        version: str,
        batch: Sequence[ScoredPost],
        fresh_posts: set[tuple[str, str]],
        fresh_scores: set[tuple[str, str]],
    ) -> list[Stored]:
        stale = [
            (s.post.source, s.post.id)
            for s in batch
            if (s.post.source, s.post.id) not in fresh_posts
            or (s.post.source, s.post.id) not in fresh_scores
        ]
        values = ",".join(["(%s, %s)"] * len(stale))
        cur.execute(
            _SELECT_STORED.format(values=values),
            [version, *(part for key in stale for part in key)],
        )
        stored = {(row[0], row[1]): row[2:] for row in cur.fetchall()}
        out: list[Stored] = []
        for s in batch:
            key = (s.post.source, s.post.id)
            row = stored.get(key)
            if row is None:
                out.append(Stored(s, key in fresh_scores))
                continue
            brands, label, p_neg, p_neu, p_pos = row
            as_stored = ScoredPost(
                post=s.post,
                label=int(label),
                probs=(float(p_neg), float(p_neu), float(p_pos)),
                model_version=version,
                brands=tuple(brands),
            )
            out.append(Stored(as_stored, key in fresh_scores))
        return out


def _no_nul(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _copy_field(value: str | None) -> str:
    if value is None:
        return _COPY_NULL
    # Most fields need no escape: four C scans cost 0.1 us, a translate 2.7 us (100 chars).
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _post_line(s: ScoredPost | UnscoredPost) -> str:
    p = s.post
    # Array literal with quoted elements; brand ids are plain, but quoting costs nothing.
    brands = (
        "{"
        + ",".join('"' + b.replace("\\", "\\\\").replace('"', '\\"') + '"' for b in s.brands)
        + "}"
    )
    metadata = orjson.dumps(p.metadata).decode() if p.metadata is not None else None
    return (
        "\t".join(
            (
                _copy_field(p.source),
                _copy_field(p.id),
                _copy_field(p.text),
                p.created_at.isoformat(),
                _copy_field(p.author),
                _copy_field(p.url),
                _copy_field(p.lang),
                _copy_field(brands),
                _copy_field(metadata),
            )
        )
        + "\n"
    )


def _score_line(s: ScoredPost) -> str:
    neg, neu, pos = s.probs
    return (
        "\t".join(
            (
                _copy_field(s.post.source),
                _copy_field(s.post.id),
                _copy_field(s.model_version),
                str(s.label),
                repr(neg),
                repr(neu),
                repr(pos),
                repr(pos - neg),
            )
        )
        + "\n"
    )
