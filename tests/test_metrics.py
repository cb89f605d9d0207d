"""moodwire.metrics: bounded labels, the /metrics endpoint and its port, the hooks that need
no pipeline (connector reconnects, alert counters on a real detector pass).

The pipeline's own counters, histograms and lag are checked on real processes scraped by a
real Prometheus in tests/dashboards/test_prometheus.py.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from moodwire import metrics
from moodwire.alerts.runner import AlertRunner
from moodwire.connectors import Connector, Position, RawRecord
from moodwire.connectors.backoff import Backoff
from moodwire.ingest import Ingest
from moodwire.settings import Settings
from support.web import clear_alerts, model_version, write_minutes


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_reason_kinds_drop_what_varies_per_record() -> None:
    kind = metrics.reason_kind
    assert kind("malformed JSON: Expecting value: line 1 column 1 (char 0)") == "malformed JSON"
    assert kind("field 'text' has 25001 characters (limit 20000)") == (
        "field 'text' has N characters (limit N)"
    )
    # A value the sender chose is not a label value; a field name of ours is.
    assert kind("unknown op 'DROP TABLE x' (expected create, update or delete)") == (
        "unknown op '…' (expected create, update or delete)"
    )
    assert kind("") == "unknown"


def test_dead_letter_reasons_are_capped() -> None:
    for i in range(metrics.MAX_REASONS + 5):
        letters = "".join(chr(ord("a") + int(d)) for d in str(i))  # no digits: distinct kinds
        metrics.dead_letter("test", f"cap check {letters}")
    assert len(metrics._reasons) == metrics.MAX_REASONS
    assert value("moodwire_dead_letters_total", stage="test", reason="other") >= 5


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="moodwire.metrics")
    yield caplog


def served_port(caplog: pytest.LogCaptureFixture) -> int:
    events = [r for r in caplog.records if r.getMessage() == "metrics serving"]
    return int(events[-1].__dict__["port"])


def test_port_zero_serves_on_a_free_port_and_logs_it(caplog_info: pytest.LogCaptureFixture) -> None:
    server = metrics.serve(Settings(metrics_port=0), "test")
    assert server is not None and server.port > 0 and server.host == "127.0.0.1"
    assert served_port(caplog_info) == server.port
    body = httpx.get(server.url, timeout=5).text
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"moodwire_process_info", "moodwire_posts_consumed", "process_cpu_seconds"} <= names


def test_a_port_in_use_falls_back_to_a_free_one(caplog_info: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = metrics.serve(Settings(metrics_port=port), "test")
    assert server is not None and server.port != port
    assert any("in use" in r.getMessage() for r in caplog_info.records)
    assert httpx.get(server.url, timeout=5).is_success


def test_backoff_counts_reconnects_of_the_running_connector() -> None:
    metrics.set_connector("testscheme")
    before = value("moodwire_connector_reconnects_total", connector="testscheme")
    backoff = Backoff(0.1, 1.0, rng=random.Random(1))
    for _ in range(3):
        backoff.next_delay()
    assert value("moodwire_connector_reconnects_total", connector="testscheme") == before + 3


def test_a_real_spike_counts_one_alert_raised_and_delivered(
    settings: Settings, redis_client: redis.Redis
) -> None:
    clear_alerts(settings)
    rng = random.Random(7)
    plan = [("apple", m, 40, sum(rng.random() < 0.2 for _ in range(40))) for m in range(85)]
    plan += [("apple", 80, 40, 30), ("apple", 81, 40, 30)]
    write_minutes(redis_client, model_version(settings), settings.topic_raw, plan)
    raised = value("moodwire_alerts_raised_total", brand="apple")
    delivered = value("moodwire_alerts_delivered_total", channel="kafka")
    runner = AlertRunner(settings)
    try:
        assert [a["brand"] for a in runner.run_once().new_alerts] == ["apple"]
        assert runner.run_once().new_alerts == []  # the same window again: not counted
    finally:
        runner.close()
    assert value("moodwire_alerts_raised_total", brand="apple") == raised + 1
    assert value("moodwire_alerts_delivered_total", channel="kafka") == delivered + 1


class Numbers(Connector):
    """metricstest://: five posts and one bad record, with a cursor (resumable)."""

    scheme = "metricstest"
    resumable = True

    def records(self) -> Iterator[RawRecord | Position]:
        for i in range(5):
            post = {
                "id": f"n{i}",
                "source": "numbers",
                "text": f"post {i}",
                "created_at": "2026-01-01T00:00:00+00:00",
            }
            yield RawRecord(
                orjson.dumps(post), f"metricstest://{i}", position=Position("all", {"next": i + 1})
            )
        yield RawRecord(b"{broken", "metricstest://bad", position=Position("all", {"next": 6}))


def test_a_real_ingest_run_counts_records_and_stamps_its_cursor(settings: Settings) -> None:
    sent = value("moodwire_ingest_records_total", connector="metricstest", outcome="sent")
    dead = value("moodwire_ingest_records_total", connector="metricstest", outcome="dead")
    before = time.time()
    stats = Ingest(settings, name="metrics-numbers").run(Numbers(urlsplit("metricstest://x"), {}))
    assert (stats.sent, stats.dead_lettered) == (5, 1)
    assert (
        value("moodwire_ingest_records_total", connector="metricstest", outcome="sent") == sent + 5
    )
    assert (
        value("moodwire_ingest_records_total", connector="metricstest", outcome="dead") == dead + 1
    )
    saved = value("moodwire_connector_cursor_saved_timestamp_seconds", connector="metricstest")
    assert before <= saved <= time.time()
