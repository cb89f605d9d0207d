"""Rebuild the Redis copy from the Postgres rollups (``moodwire aggregates rebuild``).

Under the rebuild lock (``mw:rebuild``, a key with a TTL the rebuild keeps extending,
so a killed rebuild frees it), live writes wait (``redis_copy.BUSY``). For each version:
delete its keys, then read its rollups in one statement (one snapshot, taken after the
lock) and write them through the same script as the live writes, so the totals are the
sum of the buckets. A batch committed after that snapshot was refused while the lock was
held and is written afterwards; one committed before it is already in the snapshot, and
its late write changes nothing (same ``rev``). A full rebuild (no version given) also
marks the copy whole for the running Redis process (``mw:sync``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine

from moodwire.aggregates import keys, rollup
from moodwire.aggregates.keys import as_text
from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.logs import get_logger

log = get_logger(__name__)
LOCK_TTL_MS = 30_000
CHUNK = 2_000
# Keys of the copy's earlier layout (offset watermarks, the rescore journal): no longer
# read by anything, removed by a full rebuild.
_LEGACY_PATTERNS = ("mw:wm:*", "mw:rescore:*")
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RebuildBusy(RuntimeError):
    """Another rebuild holds the lock."""


@dataclass(frozen=True, slots=True)
class RebuildReport:
    versions: dict[str, int]  # model version -> buckets written
    seconds: float
    marked_whole: bool


def rebuild(engine: Engine, client: redis.Redis, model_version: str | None = None) -> RebuildReport:
    """Rebuild one version's copy, or (``None``) every version's, from Postgres."""
    started = time.perf_counter()
    token = uuid.uuid4().hex
    if not client.set(keys.REBUILD_LOCK, token, nx=True, px=LOCK_TTL_MS):
        raise RebuildBusy("another rebuild of the Redis aggregates is running")
    copy = RedisCopy(client)
    extend = client.register_script(_EXTEND_LUA)
    written: dict[str, int] = {}
    try:
        run_id = copy.run_id()
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                stored = rollup.versions(cur)
            finally:
                cur.close()
            conn.rollback()
            if model_version is not None:
                todo = [model_version]
            else:
                todo = sorted(set(stored) | set(copy.versions()))
                for pattern in _LEGACY_PATTERNS:
                    _delete_matching(client, pattern)
            for mv in todo:
                _delete_version(client, mv)
                written[mv] = _load_version(
                    conn, copy, mv, lambda: extend([keys.REBUILD_LOCK], [token, LOCK_TTL_MS])
                )
        finally:
            conn.close()
        whole = model_version is None
        if whole:
            if copy.run_id() != run_id:
                raise RuntimeError("Redis restarted during the rebuild; run it again")
            mark_whole(client, run_id)
    finally:
        client.register_script(_RELEASE_LUA)([keys.REBUILD_LOCK], [token])
    report = RebuildReport(written, time.perf_counter() - started, model_version is None)
    log.info(
        "aggregates rebuilt from postgres",
        extra={
            "versions": written,
            "seconds": round(report.seconds, 2),
            "whole": report.marked_whole,
        },
    )
    return report


def mark_whole_if_empty(engine: Engine, client: redis.Redis) -> bool:
    """Mark an out-of-sync copy whole without a rebuild when there is nothing to copy
    (no rollups in Postgres, no keys in Redis); returns whether it did."""
    copy = RedisCopy(client)
    if copy.in_sync():
        return True
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            cur.execute("SELECT EXISTS (SELECT 1 FROM rollups)")
            found = cur.fetchone()
            any_rows = bool(found and found[0])
        finally:
            cur.close()
        conn.rollback()
    finally:
        conn.close()
    if any_rows or copy.versions():
        return False
    mark_whole(client)
    return True


def mark_whole(client: redis.Redis, run_id: str | None = None) -> None:
    """Declare the copy whole for the running Redis process. Only :func:`rebuild` and a
    caller that knows Redis matches Postgres (an empty pair; tests that seed both) may."""
    marked = run_id or RedisCopy(client).run_id()
    client.hset(keys.SYNC, mapping={"run_id": marked, "rebuilt_at": str(int(time.time()))})


def _delete_matching(client: redis.Redis, pattern: str) -> None:
    batch: list[str] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(as_text(key))
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def _delete_version(client: redis.Redis, mv: str) -> None:
    for pattern in keys.version_patterns(mv):
        _delete_matching(client, pattern)
    client.srem(keys.VERSIONS, mv)


def _load_version(conn: Any, copy: RedisCopy, mv: str, extend: Callable[[], object]) -> int:
    # A named (server-side) cursor: a large history streams in chunks, memory stays flat.
    cur = conn.cursor(name=f"mw_rebuild_{uuid.uuid4().hex[:8]}")
    written = 0
    try:
        cur.itersize = CHUNK
        cur.execute(rollup.SELECT_ALL, [mv])
        while True:
            raw = cur.fetchmany(CHUNK)
            if not raw:
                break
            rows = [rollup.row_of(mv, r) for r in raw]
            copy.write(rows, rebuilding=True)
            written += len(rows)
            extend()
    finally:
        cur.close()
    conn.rollback()
    return written
