"""The Redis copy of the rollups: what the live page, Grafana and the alerts read.

Redis holds the rollup rows exactly as Postgres committed them (``rollup``), written
*after* the commit, so a reader never sees a count Postgres does not hold; until a
batch's write reaches Redis the copy is behind by that batch, never ahead.

A bucket is written with its absolute values and the Postgres row's ``rev``; the Lua
script keeps a bucket only if the incoming ``rev`` is higher than the stored one and moves
the brand's totals by the difference, in one atomic step. So a batch written twice, late,
or out of order between workers changes nothing, and the totals stay the sum of the
buckets. Nothing in Redis depends on Kafka offsets, so a recreated topic (offsets from 0
again) or a redelivered batch cannot make it skip or double a post.

The script also refuses to write when the copy is not known to be whole:

- ``mw:sync`` does not name the running Redis process (``run_id`` changes with every
  restart or failover): the data were flushed, lost, or restored from an older snapshot.
  :data:`STALE`: the caller rebuilds from Postgres (``rebuild``), then writes again.
- a rebuild is running (``mw:rebuild``): :data:`BUSY`: wait and write again; the rebuild
  read Postgres after it started, so whatever it missed is in a write still waiting.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from moodwire.aggregates import keys
from moodwire.aggregates.keys import Bucket, as_text, bucket_from_hash
from moodwire.aggregates.rollup import RollupRow

APPLIED = 1
STALE = -1
BUSY = -2

# ARGV: mode mv nrows [brand source minute n neg neu pos score_sum rev]*nrows
# mode 'live' checks that the copy is whole first; 'rebuild' (the rebuild's own writes,
# under its lock) does not. Returns {1, changed} written, {-1, 0} stale copy, {-2, 0} a
# rebuild is running.
_WRITE_LUA = f"""
if ARGV[1] == 'live' then
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  if redis.call('HGET', '{keys.SYNC}', 'run_id') ~= run_id then return {{{STALE}, 0}} end
  if redis.call('EXISTS', '{keys.REBUILD_LOCK}') == 1 then return {{{BUSY}, 0}} end
end
local mv = ARGV[2]
local fields = {{'n', 'neg', 'neu', 'pos'}}
local changed = 0
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local brand, source, minute = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rev = tonumber(ARGV[i + 8])
  local key = '{keys.PREFIX_BUCKET}' .. mv .. ':' .. brand .. ':' .. source .. ':' .. minute
  local old = redis.call('HMGET', key, 'rev', 'n', 'neg', 'neu', 'pos', 'score_sum')
  if tonumber(old[1] or '0') < rev then
    local totals = '{keys.PREFIX_TOTALS}' .. mv .. ':' .. brand
    for f = 1, 4 do
      local diff = tonumber(ARGV[i + 2 + f]) - tonumber(old[1 + f] or '0')
      if diff ~= 0 then redis.call('HINCRBY', totals, fields[f], diff) end
    end
    local sum_diff = tonumber(ARGV[i + 7]) - tonumber(old[6] or '0')
    redis.call('HINCRBYFLOAT', totals, 'score_sum', string.format('%.17g', sum_diff))
    redis.call('HSET', key, 'n', ARGV[i + 3], 'neg', ARGV[i + 4], 'neu', ARGV[i + 5],
               'pos', ARGV[i + 6], 'score_sum', ARGV[i + 7], 'rev', ARGV[i + 8])
    redis.call('ZADD', '{keys.PREFIX_MINUTES}' .. mv .. ':' .. brand .. ':' .. source,
               'NX', minute, minute)
    redis.call('SADD', '{keys.PREFIX_SOURCES}' .. mv, source)
    redis.call('SADD', '{keys.PREFIX_BRANDS}' .. mv, brand)
    changed = changed + 1
  end
  i = i + 9
end
if changed > 0 then redis.call('SADD', '{keys.VERSIONS}', mv) end
return {{{APPLIED}, changed}}
"""


def encode_rows(rows: Sequence[RollupRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        out.extend(
            (
                r.brand,
                r.source,
                str(r.minute),
                str(r.n),
                str(r.neg),
                str(r.neu),
                str(r.pos),
                repr(r.score_sum),
                str(r.rev),
            )
        )
    return out


class RedisCopy:
    """Writes rollup rows into Redis and reads the copy back."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._write = client.register_script(_WRITE_LUA)

    def close(self) -> None:
        self.client.close()

    def write(self, rows: Sequence[RollupRow], *, rebuilding: bool = False) -> tuple[int, int]:
        """``(status, buckets changed)``: :data:`APPLIED`, :data:`STALE` or :data:`BUSY`.

        ``rows`` may mix versions; they are written one version per script call.
        ``rebuilding``: the rebuild's own writes, which skip the checks.
        """
        mode = "rebuild" if rebuilding else "live"
        by_version: dict[str, list[RollupRow]] = {}
        for row in rows:
            by_version.setdefault(row.model_version, []).append(row)
        changed = 0
        for mv, items in by_version.items():
            args: list[str | int] = [mode, mv, len(items), *encode_rows(items)]
            status, n = self._write(keys=[], args=args)
            if int(status) != APPLIED:
                return int(status), changed
            changed += int(n)
        return APPLIED, changed

    # --- state --------------------------------------------------------------------------

    def run_id(self) -> str:
        return as_text(self.client.info("server")["run_id"])

    def in_sync(self) -> bool:
        """Whether the copy was rebuilt (or started empty and whole) in this Redis process."""
        marked = self.client.hget(keys.SYNC, "run_id")
        return marked is not None and as_text(marked) == self.run_id()

    def rebuilding(self) -> bool:
        return bool(self.client.exists(keys.REBUILD_LOCK))

    # --- reading ------------------------------------------------------------------------

    def versions(self) -> list[str]:
        return sorted(as_text(v) for v in self.client.smembers(keys.VERSIONS))

    def brands(self, mv: str) -> list[str]:
        """Every aggregate brand of the version, ``*`` and ``(none)`` included."""
        return sorted(as_text(b) for b in self.client.smembers(keys.brands(mv)))

    def sources(self, mv: str) -> list[str]:
        return sorted(as_text(s) for s in self.client.smembers(keys.sources(mv)))

    def totals(self, mv: str) -> dict[str, Bucket]:
        """Per-brand totals since the start (``*`` = all posts once, ``(none)`` = no brand)."""
        brands = self.brands(mv)
        pipe = self.client.pipeline(transaction=False)
        for brand in brands:
            pipe.hgetall(keys.totals(mv, brand))
        return {b: bucket_from_hash(h) for b, h in zip(brands, pipe.execute(), strict=True)}

    def buckets(self, mv: str) -> dict[tuple[str, str, int], Bucket]:
        """Every (brand, source, minute) bucket: for tests and exports, not for hot paths."""
        found = [
            as_text(k)
            for k in self.client.scan_iter(match=f"{keys.PREFIX_BUCKET}{mv}:*", count=1000)
        ]
        pipe = self.client.pipeline(transaction=False)
        for key in found:
            pipe.hgetall(key)
        return {
            keys.parse_bucket(mv, key): bucket_from_hash(raw)
            for key, raw in zip(found, pipe.execute(), strict=True)
        }

    def newest_minutes(self, mv: str) -> list[int]:
        """The newest minute of each source (all brands)."""
        pipe = self.client.pipeline(transaction=False)
        for source in self.sources(mv):
            pipe.zrevrange(keys.minutes(mv, keys.ALL_BRANDS, source), 0, 0)
        return [int(as_text(top[0])) for top in pipe.execute() if top]

    def minute_buckets(
        self, mv: str, pairs: Sequence[tuple[str, str]], start: int, end: int
    ) -> list[tuple[str, str, int, Bucket]]:
        """``(brand, source, minute, bucket)`` of minutes ``start <= minute < end`` of each
        ``(brand, source)`` pair, in two pipelined round trips."""
        pipe = self.client.pipeline(transaction=False)
        for brand, source in pairs:
            pipe.zrangebyscore(keys.minutes(mv, brand, source), start, f"({end}")
        wanted: list[tuple[str, str, int]] = []
        for (brand, source), found in zip(pairs, pipe.execute(), strict=True):
            wanted.extend((brand, source, int(as_text(m))) for m in found)
        pipe = self.client.pipeline(transaction=False)
        for brand, source, minute in wanted:
            pipe.hgetall(keys.bucket(mv, brand, source, minute))
        return [
            (brand, source, minute, bucket_from_hash(raw))
            for (brand, source, minute), raw in zip(wanted, pipe.execute(), strict=True)
        ]
