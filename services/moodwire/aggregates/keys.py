"""The Redis key layout of the aggregates, in one place (every reader and writer builds
its keys here; the Lua script of ``redis_copy`` takes these prefixes as arguments).

No key has a TTL. ``{mv}`` is the model version, ``{minute}`` the UTC epoch second at
which the post's ``created_at`` minute starts; brand ``*`` counts every post once whatever
brands it names, brand ``(none)`` the posts that name no brand.

=========================================  ======  =========================================
key                                        type    content
=========================================  ======  =========================================
``mw:agg:{mv}:{brand}:{source}:{minute}``  hash    ``n neg neu pos score_sum`` of one minute,
                                                   and ``rev``, the Postgres row's revision
``mw:minutes:{mv}:{brand}:{source}``       zset    the minutes that have a bucket (member =
                                                   score = ``{minute}``), for range queries
``mw:totals:{mv}:{brand}``                 hash    ``n neg neu pos score_sum`` since the start
``mw:brands:{mv}`` / ``mw:sources:{mv}``   set     brands / sources seen under that version
``mw:versions``                            set     model versions that have aggregates
``mw:sync``                                hash    ``run_id``: the Redis server process whose
                                                   memory was last rebuilt from Postgres
``mw:rebuild``                             string  held while a rebuild runs (with a TTL)
=========================================  ======  =========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL_BRANDS = "*"
NO_BRAND = "(none)"
FIELDS = ("n", "neg", "neu", "pos", "score_sum")

PREFIX_BUCKET = "mw:agg:"
PREFIX_MINUTES = "mw:minutes:"
PREFIX_TOTALS = "mw:totals:"
PREFIX_BRANDS = "mw:brands:"
PREFIX_SOURCES = "mw:sources:"
VERSIONS = "mw:versions"
SYNC = "mw:sync"
REBUILD_LOCK = "mw:rebuild"


def bucket(mv: str, brand: str, source: str, minute: int) -> str:
    return f"{PREFIX_BUCKET}{mv}:{brand}:{source}:{minute}"


def minutes(mv: str, brand: str, source: str) -> str:
    return f"{PREFIX_MINUTES}{mv}:{brand}:{source}"


def totals(mv: str, brand: str) -> str:
    return f"{PREFIX_TOTALS}{mv}:{brand}"


def brands(mv: str) -> str:
    return f"{PREFIX_BRANDS}{mv}"


def sources(mv: str) -> str:
    return f"{PREFIX_SOURCES}{mv}"


def version_patterns(mv: str) -> list[str]:
    """SCAN patterns matching every key of one model version (for a rebuild)."""
    return [
        f"{PREFIX_BUCKET}{mv}:*",
        f"{PREFIX_MINUTES}{mv}:*",
        f"{PREFIX_TOTALS}{mv}:*",
        brands(mv),
        sources(mv),
    ]


def parse_bucket(mv: str, key: str) -> tuple[str, str, int]:
    """``(brand, source, minute)`` of a bucket key of version ``mv``."""
    # Brand ids never contain ':' (brands.py), minutes never do; sources may.
    brand, rest = key[len(PREFIX_BUCKET) + len(mv) + 1 :].split(":", 1)
    source, minute = rest.rsplit(":", 1)
    return brand, source, int(minute)


def brand_keys(post_brands: Sequence[str]) -> tuple[str, ...]:
    """The aggregate brands one post counts under: its brands (or ``(none)``) and ``*``."""
    return (*(post_brands or (NO_BRAND,)), ALL_BRANDS)


@dataclass(frozen=True, slots=True)
class Bucket:
    n: int
    neg: int
    neu: int
    pos: int
    score_sum: float


def as_text(value: Any) -> str:
    """A Redis reply as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def bucket_from_hash(raw: Mapping[Any, Any]) -> Bucket:
    """A bucket from the ``HGETALL`` of an aggregate hash (missing fields are zero)."""
    values = {as_text(k): as_text(v) for k, v in raw.items()}
    return Bucket(
        n=int(values.get("n", 0)),
        neg=int(values.get("neg", 0)),
        neu=int(values.get("neu", 0)),
        pos=int(values.get("pos", 0)),
        score_sum=float(values.get("score_sum", 0.0)),
    )
