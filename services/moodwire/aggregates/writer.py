"""Writing committed rollups to the Redis copy, rebuilding it first when it is not whole.

The stream processor and ``moodwire rescore`` call :meth:`AggregatesWriter.write` after
each Postgres commit with the rollup rows that commit returned. When Redis lost its data
(flush, restart, failover: ``redis_copy.STALE``) the writer rebuilds the copy from
Postgres, once, under the rebuild lock, and writes again; when another process is
rebuilding it waits. It never counts from zero, and it never writes a figure that
Postgres does not hold.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from sqlalchemy import Engine

from moodwire.aggregates.rebuild import RebuildBusy, mark_whole_if_empty, rebuild
from moodwire.aggregates.redis_copy import APPLIED, STALE, RedisCopy
from moodwire.aggregates.rollup import RollupRow
from moodwire.logs import get_logger

log = get_logger(__name__)
WAIT_S = 0.1


class AggregatesWriter:
    """Not thread-safe: one per sink thread."""

    def __init__(self, engine: Engine, client: redis.Redis) -> None:
        self._engine = engine
        self.copy = RedisCopy(client)
        self.rebuilds = 0

    def close(self) -> None:
        self.copy.close()

    def write(self, rows: Sequence[RollupRow]) -> int:
        """Write ``rows`` (buckets as committed); returns the buckets that changed."""
        if not rows:
            return 0
        waited = False
        while True:
            status, changed = self.copy.write(rows)
            if status == APPLIED:
                if waited:
                    log.info("aggregates copy writable again")
                return changed
            if status == STALE and self.ensure_whole():
                continue
            if not waited:
                waited = True
                log.info("aggregates copy is being rebuilt; waiting to write")
            time.sleep(WAIT_S)

    def ensure_whole(self) -> bool:
        """Make the copy whole if it is not: rebuild it from Postgres (nothing to do when
        both are empty). False when another process holds the rebuild lock."""
        if self.copy.in_sync():
            return True
        if mark_whole_if_empty(self._engine, self.copy.client):
            return True
        log.warning(
            "redis aggregates are not a whole copy of postgres (flushed, restarted or "
            "failed over); rebuilding them from postgres"
        )
        try:
            rebuild(self._engine, self.copy.client)
        except RebuildBusy:
            return False
        self.rebuilds += 1
        return True
