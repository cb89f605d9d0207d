"""Every Grafana panel's SQL, macros expanded as Grafana does, on real pipeline output.

Real tweets go through a real `moodwire process` worker into Postgres and Redis; then each
panel, annotation and variable query of every dashboard in ``dashboards/`` runs against that
database, and the key panels must agree with the Redis aggregates the worker wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from moodwire.brands import BrandMatcher
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.grafana_sql import expand_macros, interpolate
from support.pipeline import (
    Worker,
    count_scores,
    post_dicts,
    produce_posts,
    real_tweets,
    redis_buckets,
    serving_version,
    tag_of,
    wait_until,
)

DASHBOARDS = sorted((Path(__file__).parents[2] / "dashboards").glob("*.json"))
START = datetime(2009, 5, 11, 3, 0, tzinfo=UTC)  # post_dicts spreads posts over 20 minutes
RANGE = (START - timedelta(minutes=5), START + timedelta(minutes=30))
N = 600


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r}", target
    for anno in dashboard.get("annotations", {}).get("list", []):
        if "target" in anno:
            yield f"annotation {anno['name']!r}", anno["target"]


@pytest.fixture
def pipeline_output(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> dict[str, Any]:
    """N real tweets, mostly brand mentions, scored by a real worker."""
    matcher = BrandMatcher.load(None)
    pool = real_tweets(20_000)
    branded = [t for t in pool if matcher.match(t)][: N - 100]
    texts = branded + [t for t in pool if not matcher.match(t)][:100]
    posts = post_dicts(texts, tag_of(settings))
    worker = spawn_worker()
    produce_posts(settings, posts)
    version = serving_version()
    wait_until(
        lambda: count_scores(settings, version) >= len(posts) or not worker.alive(),
        120,
        "all posts scored",
    )
    assert worker.alive(), worker.tail()
    return {
        "posts": posts,
        "version": version,
        "sources": sorted({p["source"] for p in posts}),
        "redis": redis_buckets(settings, version),
    }


@pytest.fixture
def conn(settings: Settings) -> Iterator[Connection]:
    engine = make_engine(settings)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def run_panel(conn: Connection, sql: str, variables: dict[str, Any], multi: set[str]) -> list[Any]:
    expanded = expand_macros(interpolate(sql, variables, multi), *RANGE, interval="1m")
    return list(conn.execute(text(expanded.replace(":", r"\:"))).all())


def test_grafana_sql_expansion_matches_grafana() -> None:
    sql = (
        "SELECT $__timeGroupAlias(t, $__interval) WHERE $__timeFilter(t) AND b IN ($b) AND v = '$v'"
    )
    out = expand_macros(interpolate(sql, {"b": ["x", "o'k"], "v": "m1"}, {"b"}), *RANGE, "5m")
    assert out == (
        'SELECT floor(extract(epoch from t)/300)*300 AS "time" WHERE t BETWEEN '
        "'2009-05-11T02:55:00Z' AND '2009-05-11T03:30:00Z' AND b IN ('x','o''k') AND v = 'm1'"
    )
    with pytest.raises(ValueError, match="unexpanded"):
        expand_macros("SELECT $nope", *RANGE, "1m")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_runs_on_real_pipeline_output(
    path: Path, pipeline_output: dict[str, Any], conn: Connection
) -> None:
    dashboard = json.loads(path.read_text())
    variables_def = {v["name"]: v for v in dashboard["templating"]["list"]}
    multi = {name for name, v in variables_def.items() if v.get("multi") or v.get("includeAll")}

    # Variable queries run too; "All" means every option the query offers, as in Grafana.
    options = {
        name: [r[0] for r in conn.execute(text(v["query"]))] for name, v in variables_def.items()
    }
    version = pipeline_output["version"]
    assert version in options["model_version"]
    for source in pipeline_output["sources"]:
        assert source in options["source"]
    variables: dict[str, Any] = {
        "model_version": version,
        "brand": options["brand"],
        "source": pipeline_output["sources"],  # this test's own rows only
    }

    results = {}
    for where, target in panel_targets(dashboard):
        try:
            results[where] = run_panel(conn, target["rawSql"], variables, multi)
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{path.name} {where}: {exc}")

    if path.name != "moodwire-brands.json":
        return
    redis = pipeline_output["redis"]
    total = sum(b.n for (brand, _, _), b in redis.items() if brand == "*")
    assert total == len(pipeline_output["posts"])
    assert results["panel 1 'Posts scored'"][0][0] == total

    # Volume per brand: Grafana's series equal Redis' per-brand minute buckets.
    per_brand_sql: dict[tuple[str, int], int] = {}
    for minute, brand, value in results["panel 6 'Volume over time, per brand'"]:
        per_brand_sql[(brand, int(minute))] = int(value)
    per_brand_redis: dict[tuple[str, int], int] = {}
    for (brand, _source, minute), bucket in redis.items():
        if brand != "*":
            per_brand_redis[(brand, minute)] = per_brand_redis.get((brand, minute), 0) + bucket.n
    assert per_brand_sql == per_brand_redis
    assert len({brand for brand, _ in per_brand_sql}) >= 3  # several brands really matched

    # Mean sentiment per source over the range equals Redis' score sums.
    by_source = {row[1]: row for row in results["panel 10 'Sentiment mix per brand and source'"]}
    assert by_source
    mix_total = sum(r[2] for r in results["panel 10 'Sentiment mix per brand and source'"])
    assert mix_total == sum(b.n for (brand, _, _), b in redis.items() if brand != "*")
