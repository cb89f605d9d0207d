"""The JSON API of `moodwire web` over real data: real tweets through the processor's
real batch step (model, Postgres, Redis), a real detection pass, then HTTP requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from moodwire.api.app import create_app
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from moodwire.status import collect
from support.web import Seeded, module_settings, seed_live_data, unseen_model

# The Host the app answers to by default (a DNS-rebinding check refuses "testserver").
LOCAL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def web_settings(
    broker_url: str, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return module_settings(broker_url, database_url, redis_url, tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def seeded(web_settings: Settings) -> Seeded:
    return seed_live_data(web_settings)


@pytest.fixture(scope="module")
def api(web_settings: Settings, seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings), base_url=LOCAL) as client:
        yield client


def sql_counts(settings: Settings, seeded: Seeded, start: int) -> dict[str, tuple[int, int]]:
    """(posts, negatives) per brand of the seeded posts from ``start``, straight from SQL."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT b.brand, count(*), count(*) FILTER (WHERE s.label = 0) "
                    "FROM posts p JOIN scores s USING (source, source_id) "
                    "CROSS JOIN LATERAL unnest(p.brands) AS b(brand) "
                    "WHERE p.source_id LIKE :prefix AND p.created_at >= to_timestamp(:start) "
                    "AND s.model_version = :mv GROUP BY b.brand"
                ),
                {
                    "prefix": seeded.prefix + "%",
                    "start": start,
                    "mv": collect(settings)["model_version"],
                },
            )
            return {brand: (int(n), int(neg)) for brand, n, neg in rows}
    finally:
        engine.dispose()


def test_health_and_page(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    page = api.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert "Waiting for posts" in page.text
    assert "function lineChart" in api.get("/static/app.js").text
    assert api.get("/static/style.css").status_code == 200
    paths = api.get("/api/openapi.json").json()["paths"]
    assert {"/api/status", "/api/series", "/api/alerts", "/api/posts"} <= set(paths)


def test_status_matches_collect_and_measures_rate(
    api: TestClient, web_settings: Settings, seeded: Seeded
) -> None:
    first = api.get("/api/status").json()
    expected = collect(web_settings)
    for key in (
        "model_version",
        "posts",
        "scored",
        "aggregate_total",
        "brands",
        "errors",
        "unscored_for_language",
    ):
        assert first[key] == expected[key], key
    assert first["aggregate_total"] == seeded.posts  # Redis holds only the seeded posts
    assert first["display_names"]["apple"] == "Apple"
    assert first["refresh_seconds"] == web_settings.web_refresh_seconds
    # Nothing flows now: once the app has two readings of the total, the rate is zero.
    deadline = time.monotonic() + 10
    while (rate := api.get("/api/status").json()["posts_per_second"]) is None:
        assert time.monotonic() < deadline, "no posts/s after 10 s"
        time.sleep(0.5)
    assert rate == 0.0


def test_series_agrees_with_the_rows_in_postgres(
    api: TestClient, web_settings: Settings, seeded: Seeded
) -> None:
    body = api.get("/api/series", params={"minutes": 30}).json()
    assert body["watermark"] == seeded.watermark
    assert len(body["minutes"]) == 30 and body["minutes"][-1] == seeded.watermark
    assert sorted(body["sources"]) == ["mastodon", "reddit", "twitter"]
    expected = sql_counts(web_settings, seeded, body["minutes"][0])
    got = {b: (sum(s["n"]), sum(s["neg"])) for b, s in body["brands"].items() if b != "(none)"}
    assert got == expected
    assert body["brands"]["apple"]["display"] == "Apple"
    assert sum(body["all"]["n"]) == 30 * 10 + 40  # 10 posts a minute plus the spike
    apple = body["brands"]["apple"]
    i = body["minutes"].index(seeded.spike)
    assert apple["n"][i] == 3 + 20
    assert all(-1 <= v <= 1 for v in apple["mean_score"] if v is not None)

    one = api.get("/api/series", params={"minutes": 30, "source": "reddit"}).json()
    assert sum(one["all"]["n"]) < sum(body["all"]["n"])
    assert api.get("/api/series", params={"minutes": 0}).status_code == 422


def test_the_spike_is_an_alert(api: TestClient, seeded: Seeded) -> None:
    alerts = api.get("/api/alerts").json()["alerts"]
    assert sorted(a["id"] for a in alerts) == sorted(a["id"] for a in seeded.alerts)
    # The spike is also a volume surge (3 posts a minute to 23): its own alert kind.
    apple = [a for a in alerts if a["brand"] == "apple" and a["kind"] == "negative_shift"]
    assert len(apple) == 1
    assert apple[0]["display"] == "Apple"
    assert apple[0]["window_start"] == datetime.fromtimestamp(seeded.spike, tz=UTC).isoformat()
    assert apple[0]["negative_share"] > apple[0]["baseline_share"] * 1.5
    assert api.get("/api/alerts", params={"brand": "nobody"}).json() == {"alerts": []}


def test_recent_negative_posts_of_a_brand(api: TestClient, seeded: Seeded) -> None:
    posts = api.get("/api/posts", params={"brand": "apple", "sentiment": "negative"}).json()
    rows = posts["posts"]
    assert rows, "the spike's negative apple tweets"
    assert all("apple" in p["brands"] and p["sentiment"] == "negative" for p in rows)
    assert [p["created_at"] for p in rows] == sorted((p["created_at"] for p in rows), reverse=True)
    assert {p["text"] for p in rows} & set(seeded.spike_texts)
    everyone = api.get("/api/posts", params={"limit": 5}).json()["posts"]
    assert len(everyone) == 5
    assert api.get("/api/posts", params={"sentiment": "angry"}).status_code == 422


def test_no_data_yet_and_servers_down(
    broker_url: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    fresh = module_settings(
        broker_url, database_url, redis_url, tmp_path, model_path=unseen_model(tmp_path)
    )
    with TestClient(create_app(fresh), base_url=LOCAL) as client:
        series = client.get("/api/series").json()
        assert series["model_version"].startswith("moodwire-gru-0.0.0-unseen+")
        assert series["watermark"] is None and series["brands"] == {}
        assert client.get("/api/posts").json()["posts"] == []
        assert client.get("/api/status").json()["aggregate_total"] == 0

    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    down = module_settings(broker_url, dead, redis_url, tmp_path / "down")
    with TestClient(create_app(down), base_url=LOCAL) as client:
        response = client.get("/api/alerts")
        # Which server is down, never its error text (tests/api/test_security.py).
        assert response.status_code == 503
        assert response.json() == {"error": "PostgreSQL unavailable"}
        status = client.get("/api/status")
        assert status.status_code == 200
        assert "postgres: unavailable" in status.json()["errors"]
