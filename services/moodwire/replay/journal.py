"""The write-ahead record of a re-scoring run: the one chunk that may be half applied.

Redis key ``mw:rescore:{mv}`` (hash): ``base``, the log position of the chunk's first post,
and ``keys``, the chunk's post keys in order (JSON). The chunk's posts sit at positions
``base, base + 1, ...`` of the pseudo topic ``rescore`` (one partition), whose watermark
``mw:wm:{mv}:rescore`` is kept by ``RedisAggregates``. The record is written before the
chunk's aggregates and is replaced only after its Postgres commit, so after a crash it
names every post that Redis may have counted while Postgres rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import redis

from moodwire.replay.posts import Key


@dataclass(frozen=True, slots=True)
class Chunk:
    base: int
    keys: tuple[Key, ...]

    @property
    def end(self) -> int:
        """The position right after this chunk: the next chunk's ``base``."""
        return self.base + len(self.keys)


def journal_key(model_version: str) -> str:
    return f"mw:rescore:{model_version}"


class Journal:
    def __init__(self, client: redis.Redis, model_version: str) -> None:
        self._client = client
        self._key = journal_key(model_version)

    def last(self) -> Chunk | None:
        """The chunk written last, committed or not (None before the first run)."""
        raw = self._client.hmget(self._key, ["base", "keys"])
        if raw[0] is None or raw[1] is None:
            return None
        keys = tuple((str(k[0]), str(k[1])) for k in orjson.loads(raw[1]))
        return Chunk(int(raw[0]), keys)

    def begin(self, chunk: Chunk) -> None:
        """Record ``chunk`` before anything of it is written anywhere."""
        self._client.hset(
            self._key,
            mapping={"base": str(chunk.base), "keys": orjson.dumps([list(k) for k in chunk.keys])},
        )
