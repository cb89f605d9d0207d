"""Every Grafana panel's SQL, macros expanded as Grafana does, on real pipeline output, and
every dashboard checked against Grafana's own dashboard schema.

Real tweets go through a real `moodwire process` worker into Postgres and Redis; `rescore`
then scores the same posts with a second model version, and two alerts (one open, one
acknowledged) are stored for a brand. Each panel, annotation and variable query of every
SQL dashboard in ``dashboards/`` runs against that database, and the key panels must agree
with the Redis aggregates the worker wrote and with the score rows read on their own.
(The PromQL dashboards are run against a real Prometheus in ``test_prometheus.py``.)
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from safetensors.torch import load_file, save_file
from sqlalchemy import Connection, text

from moodwire.brands import BrandMatcher
from moodwire.db.engine import make_engine
from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.replay.posts import Scope
from moodwire.replay.rescore import rescore
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
SQL_TYPE = "grafana-postgresql-datasource"
START = datetime(2009, 5, 11, 3, 0, tzinfo=UTC)  # post_dicts spreads posts over 20 minutes
RANGE = (START - timedelta(minutes=5), START + timedelta(minutes=30))
N = 600
LABELS = ("negative", "neutral", "positive")


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def sql_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "rawSql" in target:
                yield f"panel {panel['id']} {panel['title']!r}", target
    for anno in dashboard.get("annotations", {}).get("list", []):
        if "rawSql" in anno.get("target", {}):
            yield f"annotation {anno['name']!r}", anno["target"]


SQL_DASHBOARDS = [p for p in DASHBOARDS if any(True for _ in sql_targets(load(p)))]


def model_b_of(settings: Settings, out: Path) -> Path:
    """The shipped model with its output leaning to neutral: another version, whose labels
    differ from the shipped one's on some posts (what a retrained model does)."""
    shutil.copytree(settings.model_path, out)
    tensors = load_file(str(out / artifact.WEIGHTS))
    tensors["head_bias"] = tensors["head_bias"].clone()
    tensors["head_bias"][1] += 0.8
    save_file(tensors, str(out / artifact.WEIGHTS))
    config = json.loads((out / artifact.CONFIG).read_text())
    config["note"] = f"dashboard test {tag_of(settings)}"  # a version unique to this test
    (out / artifact.CONFIG).write_text(json.dumps(config))
    return out


@pytest.fixture
def pipeline_output(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object, tmp_path: Path
) -> dict[str, Any]:
    """N real tweets, mostly brand mentions, scored by a real worker, re-scored by
    ``rescore`` under a second version; an open and an acknowledged alert."""
    matcher = BrandMatcher.load(None)
    pool = real_tweets(20_000)
    branded = [t for t in pool if matcher.match(t)][: N - 100]
    texts = branded + [t for t in pool if not matcher.match(t)][:100]
    posts = post_dicts(texts, tag_of(settings))
    worker = spawn_worker()
    produce_posts(settings, posts)
    version = serving_version()
    engine = make_engine(settings)
    sources = sorted({p["source"] for p in posts})
    pattern = f"%.{tag_of(settings)}"

    def stored() -> int:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM posts WHERE source LIKE :s"
            return int(conn.scalar(text(sql), {"s": pattern}) or 0)

    wait_until(lambda: stored() >= len(posts) or not worker.alive(), 120, "all posts stored")
    assert worker.alive(), worker.tail()
    scored = count_scores(settings, version)
    wait_until(lambda: redis_total(settings, version) == scored, 30, "aggregates written")

    model_b = InferenceEngine.load(model_b_of(settings, tmp_path / "model-b"), device="cpu")
    for source in sources:
        rescore(settings, model_b, Scope(source=source), batch_size=200)
    model_b.close()

    with engine.connect() as conn:
        busiest = conn.scalar(
            text(
                "SELECT b FROM posts, unnest(brands) AS b WHERE source LIKE :s "
                "GROUP BY b ORDER BY count(*) DESC, b LIMIT 1"
            ),
            {"s": pattern},
        )
    with engine.begin() as conn:
        for minute, acked in ((8, False), (12, True)):
            conn.execute(
                text(
                    "INSERT INTO alerts (kind, brand, source, model_version, window_start, "
                    "window_end, posts, negative_share, baseline_share, acked_at) VALUES "
                    "('negative_spike', :brand, :source, :v, :start, :end, 40, 0.6, 0.2, :acked)"
                ),
                {
                    "brand": busiest,
                    "source": f"test.{tag_of(settings)}",
                    "v": version,
                    "start": START + timedelta(minutes=minute),
                    "end": START + timedelta(minutes=minute + 2),
                    "acked": datetime.now(UTC) if acked else None,
                },
            )
    engine.dispose()
    return {
        "posts": posts,
        "version": version,
        "version_b": model_b.model_version,
        "sources": sources,
        "brand": busiest,
        "redis": redis_buckets(settings, version),
        "scored": scored,
    }


def redis_total(settings: Settings, version: str) -> int:
    return sum(
        b.n
        for (brand, source, _), b in redis_buckets(settings, version).items()
        if brand == "*" and source.endswith(f".{tag_of(settings)}")
    )


@pytest.fixture
def conn(settings: Settings) -> Iterator[Connection]:
    engine = make_engine(settings)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def run_sql(conn: Connection, sql: str, variables: dict[str, Any], multi: set[str]) -> list[Any]:
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


def choose_variables(
    conn: Connection, dashboard: dict[str, Any], out: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """Run each variable's query (as Grafana fills its options) and pick this test's values:
    "All" for multi-value ones (this test's sources only), the test's own version(s) and
    busiest brand for single-value ones."""
    defs = {v["name"]: v for v in dashboard["templating"]["list"]}
    multi = {name for name, v in defs.items() if v.get("multi") or v.get("includeAll")}
    wanted = {
        "model_version": out["version"],
        "version_a": out["version"],
        "version_b": out["version_b"],
        "source": out["sources"],
        "brand": out["brand"],
    }
    chosen: dict[str, Any] = {}
    for name, variable in defs.items():
        options = [r[0] for r in conn.execute(text(variable["query"]))]
        want = wanted[name]
        for value in [want] if isinstance(want, str) else want:
            assert value in options, f"variable {name}: {value!r} not offered"
        # "All" brands is every option, as in Grafana; sources stay this test's own.
        chosen[name] = options if name == "brand" and name in multi else want
    return chosen, multi


def run_dashboard(conn: Connection, path: Path, out: dict[str, Any]) -> dict[str, list[Any]]:
    dashboard = load(path)
    variables, multi = choose_variables(conn, dashboard, out)
    results: dict[str, list[Any]] = {}
    for where, target in sql_targets(dashboard):
        try:
            results[where] = run_sql(conn, target["rawSql"], variables, multi)
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{path.name} {where}: {exc}")
    return results


def score_rows(conn: Connection, version: str, sources: list[str]) -> dict[tuple[str, str], Any]:
    """(source, id) -> (label, score, brands) of one version, read on their own."""
    rows = conn.execute(
        text(
            "SELECT s.source, s.source_id, s.label, s.score, p.brands FROM scores s "
            "JOIN posts p USING (source, source_id) "
            "WHERE s.model_version = :v AND s.source = ANY(:sources)"
        ),
        {"v": version, "sources": sources},
    ).all()
    return {(r[0], r[1]): (int(r[2]), float(r[3]), list(r[4])) for r in rows}


def variable_query(dashboard: str, name: str) -> str:
    variables = load(DASHBOARDS[0].with_name(dashboard))["templating"]["list"]
    return str(next(v["query"] for v in variables if v["name"] == name))


def open_alerts(conn: Connection, version: str) -> dict[str, int]:
    rows = conn.execute(
        text(
            "SELECT brand, count(*) FROM alerts WHERE acked_at IS NULL AND model_version = :v "
            "GROUP BY brand"
        ),
        {"v": version},
    ).all()
    return {r[0]: int(r[1]) for r in rows}


def test_every_panel_runs_on_real_pipeline_output(
    pipeline_output: dict[str, Any], conn: Connection
) -> None:
    out = pipeline_output
    names = {p.name for p in SQL_DASHBOARDS}
    assert {"moodwire-brands.json", "moodwire-brand.json", "moodwire-models.json"} <= names
    results = {p.name: run_dashboard(conn, p, out) for p in SQL_DASHBOARDS}
    for name, panels in results.items():
        empty = [where for where, rows in panels.items() if not rows]
        assert not empty, f"{name}: panels with no rows on real output: {empty}"
    check_overview(results["moodwire-brands.json"], out, conn)
    check_drill_down(results["moodwire-brand.json"], out, conn)
    check_model_comparison(results["moodwire-models.json"], out, conn)


def check_overview(results: dict[str, list[Any]], out: dict[str, Any], conn: Connection) -> None:
    redis = out["redis"]
    ours = {k: b for k, b in redis.items() if k[1] in out["sources"]}
    total = sum(b.n for (brand, _, _), b in ours.items() if brand == "*")
    assert total == out["scored"]
    assert results["panel 1 'Posts scored'"][0][0] == total

    # Volume per brand: Grafana's series equal Redis' per-brand minute buckets.
    per_brand_sql = {
        (brand, int(minute)): int(value)
        for minute, brand, value in results["panel 6 'Volume over time, per brand'"]
    }
    per_brand_redis: dict[tuple[str, int], int] = defaultdict(int)
    for (brand, _source, minute), bucket in ours.items():
        if brand != "*":
            per_brand_redis[(brand, minute)] += bucket.n
    assert per_brand_sql == dict(per_brand_redis)
    assert len({brand for brand, _ in per_brand_sql}) >= 3  # several brands really matched

    # The brands table: posts per brand as Redis counts them, open alerts as stored.
    table = {row[0]: row for row in results["panel 5 'Brands'"]}
    posts_redis: dict[str, int] = defaultdict(int)
    neg_redis: dict[str, int] = defaultdict(int)
    for (brand, _source, _minute), bucket in ours.items():
        if brand != "*":
            posts_redis[brand] += bucket.n
            neg_redis[brand] += bucket.neg
    assert {b: int(r[1]) for b, r in table.items()} == dict(posts_redis)
    for brand, row in table.items():
        assert abs(float(row[3]) - neg_redis[brand] / posts_redis[brand]) < 5e-4
    stored_open = open_alerts(conn, out["version"])
    assert int(table[out["brand"]][4]) == stored_open[out["brand"]] >= 1
    offered = {r[0] for r in conn.execute(text(variable_query("moodwire-brands.json", "brand")))}
    in_view = sum(n for b, n in stored_open.items() if b in offered)  # brand = All
    assert results["panel 4 'Open alerts'"][0][0] == in_view
    listed = results["panel 9 'Open alerts'"]
    assert sum(1 for r in listed if r[1] == out["brand"]) == stored_open[out["brand"]]
    assert any("(open)" in r[2] for r in results["annotation 'Alerts'"])


def check_drill_down(results: dict[str, list[Any]], out: dict[str, Any], conn: Connection) -> None:
    brand = out["brand"]
    ours = {k: b for k, b in out["redis"].items() if k[0] == brand and k[1] in out["sources"]}
    assert results["panel 1 'Posts scored'"][0][0] == sum(b.n for b in ours.values())
    by_source_minute = {
        (source, int(minute)): int(value)
        for minute, source, value in results["panel 6 'Volume over time, by source'"]
    }
    assert by_source_minute == {(s, m): b.n for (_, s, m), b in ours.items()}
    mix = {row[0]: row for row in results["panel 7 'Sentiment mix by source'"]}
    for source in out["sources"]:
        buckets = [b for (_, s, _), b in ours.items() if s == source]
        want = (sum(b.n for b in buckets), sum(b.neg for b in buckets), sum(b.pos for b in buckets))
        assert (mix[source][1], mix[source][2], mix[source][4]) == want

    # The language mix counts every stored post of the brand, scored or not.
    all_posts = conn.scalar(
        text("SELECT count(*) FROM posts WHERE :b = ANY(brands) AND source = ANY(:s)"),
        {"b": brand, "s": out["sources"]},
    )
    assert sum(int(r[1]) for r in results["panel 8 'Language mix'"]) == all_posts

    negative = results["panel 9 'Most negative posts'"]
    p_negative = [float(r[3]) for r in negative]
    assert p_negative == sorted(p_negative, reverse=True)
    assert all(float(r[4]) < 0 for r in negative)  # label negative: p_neg is the largest
    states = sorted(r[6] for r in results["panel 10 'Alerts'"] if r[2].startswith("test."))
    assert states == ["acknowledged", "open"]
    assert len(results["annotation 'Alerts'"]) >= 2


def check_model_comparison(
    results: dict[str, list[Any]], out: dict[str, Any], conn: Connection
) -> None:
    a = score_rows(conn, out["version"], out["sources"])
    b = score_rows(conn, out["version_b"], out["sources"])
    both = sorted(set(a) & set(b))
    assert len(both) == len(a) == out["scored"]  # rescore scored every post once
    agree = sum(a[k][0] == b[k][0] for k in both)
    changed = len(both) - agree
    assert 0 < changed < len(both)  # the versions really differ, and not everywhere

    assert results["panel 1 'Posts scored by both'"][0][0] == len(both)
    assert abs(float(results["panel 2 'Agreement rate'"][0][0]) - agree / len(both)) < 1e-9
    assert results["panel 4 'Labels changed'"][0][0] == changed
    confusion = {row[0]: row[1:] for row in results["panel 6 'Labels: A (rows) by B (columns)'"]}
    want = Counter((a[k][0], b[k][0]) for k in both)
    for i, label in enumerate(LABELS):
        assert tuple(confusion.get(label, (0, 0, 0))) == tuple(want[(i, j)] for j in range(3))

    # Per brand: each version's mean score, as the score rows say.
    per_brand: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key in both:
        for brand in a[key][2] or ["(none)"]:
            per_brand[brand].append((a[key][1], b[key][1]))
    table = {row[0]: row for row in results["panel 5 'Per brand: mean score per version'"]}
    assert set(table) == set(per_brand)
    for brand, pairs in per_brand.items():
        row = table[brand]
        assert int(row[1]) == len(pairs)
        assert abs(float(row[2]) - sum(p[0] for p in pairs) / len(pairs)) < 5e-4
        assert abs(float(row[3]) - sum(p[1] for p in pairs) / len(pairs)) < 5e-4

    listed = results["panel 8 'Posts whose label changed'"]
    assert len(listed) == min(100, changed)
    assert all(row[3] != row[4] for row in listed)


# --- Grafana's dashboard schema -------------------------------------------------------------


def unmodelled(ours: Any, decoded: Any, path: str = "") -> list[str]:
    """Paths of ``ours`` that Grafana's model dropped on decoding: unknown or misspelt keys.
    An annotation's ``target`` is its data source's own query (the schema leaves it open)."""
    if path.endswith("/target") and "/annotations/" in path:
        return []
    if isinstance(ours, dict):
        if not isinstance(decoded, dict):
            return [f"{path} (not an object in the schema)"]
        found: list[str] = []
        for key, value in ours.items():
            if key not in decoded:
                found.append(f"{path}/{key}")
            else:
                found += unmodelled(value, decoded[key], f"{path}/{key}")
        return found
    if isinstance(ours, list):
        if not isinstance(decoded, list) or len(ours) != len(decoded):
            return [f"{path} (list changed)"]
        return [
            m
            for i, (x, y) in enumerate(zip(ours, decoded, strict=True))
            for m in unmodelled(x, y, f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafana_schema(path: Path) -> None:
    """Decoded with the models Grafana's foundation SDK generates from Grafana's dashboard
    schema (panel options and queries by plugin type), nothing may be lost on the way."""
    plugins.register_default_plugins()
    ours = load(path)
    decoded = json.loads(json.dumps(Dashboard.from_json(ours), cls=JSONEncoder))
    assert unmodelled(ours, decoded) == []
    assert ours["uid"] == path.stem
    ids = [p["id"] for p in ours["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
