"""What an operator checks first: ``collect(settings) -> dict`` (used by ``moodwire status``
and the demo's live summary).

Keys: ``model_version`` (the serving model, from ``settings.model_path``), ``posts`` (rows
in Postgres), ``scored`` (score rows of the serving version), ``aggregate_total`` (posts
counted in the serving version's Redis aggregates, each post once whatever brands it
names; Redis is read first and written after each Postgres commit, so it may trail
``scored``, never exceed it), ``aggregates`` (the Redis copy: ``whole``, being rebuilt,
or lost), ``dead_letters`` (rows, and ``dead_letters_by_stage``), ``unscored_for_language``
(``{brand: {lang: posts}}``: posts stored and counted without a sentiment because the model
does not read their language; ``*`` is every such post once), ``brands`` (per brand:
posts, negative, neutral, positive, mean_score, from the Redis totals; ``(none)`` holds the
posts that name no brand) and ``errors`` (one line per server that could not be read; the
figures from it are then None). It never raises for a server being down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, select

from moodwire.aggregates.keys import ALL_BRANDS, Bucket
from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.db import tables
from moodwire.db.engine import make_engine
from moodwire.db.unscored import unscored_counts
from moodwire.redis_client import connect
from moodwire.settings import Settings


def serving_model_version(model_path: Path) -> str | None:
    """The version the processor would stamp on scores, without loading the model."""
    from moodwire.model import artifact

    try:
        return artifact.model_version(model_path)
    except (OSError, ValueError):
        return None


def _brand_summary(bucket: Bucket) -> dict[str, Any]:
    return {
        "posts": bucket.n,
        "negative": bucket.neg,
        "neutral": bucket.neu,
        "positive": bucket.pos,
        "mean_score": round(bucket.score_sum / bucket.n, 4) if bucket.n else None,
    }


def _postgres_figures(engine: Engine, version: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        posts = conn.scalar(select(func.count()).select_from(tables.Post))
        scored = (
            conn.scalar(
                select(func.count())
                .select_from(tables.Score)
                .where(tables.Score.model_version == version)
            )
            if version
            else None
        )
        by_stage = {
            str(stage): int(n)
            for stage, n in conn.execute(
                select(tables.DeadLetter.stage, func.count()).group_by(tables.DeadLetter.stage)
            )
        }
        unscored = unscored_counts(conn)
    return {
        "posts": int(posts or 0),
        "unscored_for_language": unscored,
        "scored": None if scored is None else int(scored),
        "dead_letters": sum(by_stage.values()),
        "dead_letters_by_stage": by_stage,
    }


def _redis_figures(client: redis.Redis, version: str | None) -> dict[str, Any]:
    if version is None:
        return {"aggregate_total": None, "brands": {}}
    copy = RedisCopy(client)
    totals = copy.totals(version)
    everything = totals.get(ALL_BRANDS)
    if copy.rebuilding():
        state = "rebuilding from postgres"
    elif copy.in_sync():
        state = "whole"
    else:
        state = "lost: rebuilt by the next worker batch, or run `moodwire aggregates rebuild`"
    return {
        "aggregates": state,
        "aggregate_total": everything.n if everything else 0,
        "brands": {b: _brand_summary(t) for b, t in sorted(totals.items()) if b != ALL_BRANDS},
    }


def collect(
    settings: Settings,
    model_version: str | None = None,
    *,
    engine: Engine | None = None,
    client: redis.Redis | None = None,
) -> dict[str, Any]:
    """The figures of ``model_version`` (default: the serving model's, from its files).

    A caller that polls (the web page) passes its own ``engine`` and Redis ``client``;
    otherwise a connection to each is opened for this call and closed before it returns.
    """

    def postgres() -> dict[str, Any]:
        if engine is not None:
            return _postgres_figures(engine, version)
        own = make_engine(settings, pool_size=1, max_overflow=0)
        try:
            return _postgres_figures(own, version)
        finally:
            own.dispose()

    def redis_() -> dict[str, Any]:
        if client is not None:
            return _redis_figures(client, version)
        own = connect(settings)
        try:
            return _redis_figures(own, version)
        finally:
            own.close()

    version = model_version or serving_model_version(settings.model_path)
    out: dict[str, Any] = {
        "model_version": version,
        "posts": None,
        "scored": None,
        "aggregates": None,
        "aggregate_total": None,
        "dead_letters": None,
        "dead_letters_by_stage": {},
        "unscored_for_language": {},
        "brands": {},
        "errors": [],
    }
    if version is None:
        out["errors"].append(f"model: no readable model at {settings.model_path}")
    # Redis first: it is written after each Postgres commit, so read in this order the
    # aggregated figure can trail the scored one, never exceed it.
    for name, read in (("redis", redis_), ("postgres", postgres)):
        try:
            out.update(read())
        except Exception as exc:  # a down server is a figure we cannot show, not a crash
            out["errors"].append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:200]}")
    return out
