"""The run marker of a re-scoring run: set while a run into a version is in progress.

Redis key ``mw:rescore:{mv}`` (hash, ``started_at``), set when a run starts and removed
when it ends normally. A run that finds it set follows one that was killed, possibly
between a chunk's Postgres commit and its Redis write; that run rebuilds the version's
Redis copy from the Postgres rollups when it ends (``moodwire.aggregates.rebuild``).
"""

from __future__ import annotations

import time

import redis


def marker_key(model_version: str) -> str:
    return f"mw:rescore:{model_version}"


class RunMarker:
    def __init__(self, client: redis.Redis, model_version: str) -> None:
        self._client = client
        self._key = marker_key(model_version)

    def begin(self) -> bool:
        """Mark a run as started; True when an earlier run did not end normally."""
        earlier = bool(self._client.exists(self._key))
        self._client.hset(self._key, mapping={"started_at": str(int(time.time()))})
        return earlier

    def end(self) -> None:
        self._client.delete(self._key)
