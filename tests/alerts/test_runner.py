"""Detection on real servers: aggregates written by the real Redis sink, alerts in
Postgres, announcements on the alerts topic of the real broker."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer
from sqlalchemy import text

from moodwire.alerts.runner import AlertRunner
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.web import T0, clear_alerts, model_version, write_minutes


def steady_plan(rng: random.Random, upto: int = 85) -> list[tuple[str, int, int, int]]:
    """Two brands with noisy but steady moods (apple ~20%, google ~30% negative)."""
    plan: list[tuple[str, int, int, int]] = []
    for m in range(upto):
        plan.append(("apple", m, 40, sum(rng.random() < 0.2 for _ in range(40))))
        plan.append(("google", m, 30, sum(rng.random() < 0.3 for _ in range(30))))
        plan.append(("spotify", m, 1, 0))
    return plan


def alert_rows(settings: Settings) -> list[dict[str, Any]]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            result = conn.execute(
                text("SELECT brand, source, window_start, posts, negative_share FROM alerts")
            )
            return [dict(row) for row in result.mappings()]
    finally:
        engine.dispose()


def topic_messages(settings: Settings) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.topic_alerts,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        return [orjson.loads(m.value) for m in consumer]
    finally:
        consumer.close()


@pytest.fixture
def runner(settings: Settings, redis_client: redis.Redis) -> Any:
    clear_alerts(settings)
    alerts = AlertRunner(settings)
    yield alerts
    alerts.close()


def test_spike_gives_exactly_one_alert_row_and_message(
    settings: Settings, redis_client: redis.Redis, runner: AlertRunner
) -> None:
    version = model_version(settings)
    plan = steady_plan(random.Random(7))
    # apple goes 75% negative for two minutes; spotify's 2-post all-negative minute is noise.
    plan += [("apple", 80, 40, 30), ("apple", 81, 40, 30), ("spotify", 80, 2, 2)]
    write_minutes(redis_client, version, settings.topic_raw, plan)

    report = runner.run_once()
    assert report.watermark == T0 + 84 * 60
    assert [a["brand"] for a in report.new_alerts] == ["apple"]

    rows = alert_rows(settings)
    assert len(rows) == 1
    row = rows[0]
    assert (row["brand"], row["source"]) == ("apple", "*")
    assert int(row["window_start"].timestamp()) == T0 + 80 * 60
    # Minute 80 alone is evidence enough: the steady 40 posts plus the spike's 40.
    assert row["posts"] == 40 + 40
    messages = topic_messages(settings)
    assert [(m["brand"], m["id"]) for m in messages] == [("apple", report.new_alerts[0]["id"])]

    # Re-running (the loop's next pass, or a restarted detector) changes nothing.
    again = runner.run_once()
    assert len(again.spikes) == 1 and again.new_alerts == []
    assert len(alert_rows(settings)) == 1
    assert len(topic_messages(settings)) == 1


def test_flat_feed_raises_nothing(
    settings: Settings, redis_client: redis.Redis, runner: AlertRunner
) -> None:
    version = model_version(settings)
    write_minutes(redis_client, version, settings.topic_raw, steady_plan(random.Random(11)))
    report = runner.run_once()
    assert report.watermark == T0 + 84 * 60
    assert report.windows == runner.config.lookback_minutes // runner.config.window_minutes
    assert report.spikes == [] and alert_rows(settings) == []


def test_no_aggregates_yet(
    settings: Settings, redis_client: redis.Redis, runner: AlertRunner
) -> None:
    report = runner.run_once()
    assert report.watermark is None and report.spikes == []


def test_single_pass_with_redis_down_fails_in_one_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app
    from moodwire.settings import get_settings
    from moodwire.stack.ports import free_port

    # Nothing listens there: the pass cannot read the aggregates.
    monkeypatch.setenv("MOODWIRE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MOODWIRE_DATABASE_URL", settings.require("database_url"))
    monkeypatch.setenv("MOODWIRE_BROKER_URL", settings.require("broker_url"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["alerts", "--once"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: alert pass failed: ConnectionError" in result.output
    assert "Traceback" not in result.output


def test_a_model_unreadable_for_a_moment_keeps_the_last_version(
    settings: Settings, redis_client: redis.Redis, tmp_path: Any
) -> None:
    import shutil

    from moodwire.alerts.runner import AlertsError

    model_dir = tmp_path / "model"
    shutil.copytree(settings.model_path, model_dir)
    local = settings.model_copy(update={"model_path": model_dir})
    version = model_version(local)
    write_minutes(redis_client, version, settings.topic_raw, steady_plan(random.Random(11)))
    runner = AlertRunner(local)
    try:
        assert runner.run_once().watermark == T0 + 84 * 60
        # A new model is being copied in: the files are gone for a moment.
        shutil.rmtree(model_dir)
        report = runner.run_once()
        assert report.model_version == version and report.watermark == T0 + 84 * 60
    finally:
        runner.close()
    # With no model ever read there is nothing to judge: a clear error, not a guess.
    fresh = AlertRunner(local)
    try:
        with pytest.raises(AlertsError, match="no readable model"):
            fresh.run_once()
    finally:
        fresh.close()
