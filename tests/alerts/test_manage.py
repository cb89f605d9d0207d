"""`moodwire alerts list / ack / test` and the alerts API the page reads, on a real
Postgres and real receivers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from moodwire.alerts.delivery import Deliverer
from moodwire.alerts.rules import load
from moodwire.cli.app import app
from moodwire.db.engine import make_engine
from moodwire.settings import Settings, get_settings
from moodwire.stack.ports import free_port
from support.alert_outbox import Receivers, raise_alert, rules_file

LOCAL = "http://127.0.0.1:8080"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alerts"))
    yield engine
    engine.dispose()


@pytest.fixture
def env(
    database_url: str, tmp_path: Path, receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The CLI's environment: the test database and a rules file naming the receivers."""
    rules = rules_file(tmp_path, receivers)
    monkeypatch.setenv("MOODWIRE_DATABASE_URL", database_url)
    monkeypatch.setenv("MOODWIRE_ALERT_RULES_FILE", str(rules))
    monkeypatch.setenv("MOODWIRE_ALERT_DELIVERY_TIMEOUT", "2")
    get_settings.cache_clear()
    yield rules
    get_settings.cache_clear()


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["alerts", *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_ack_and_open(engine: Engine, env: Path, receivers: Receivers) -> None:
    rules = load(env)
    apple = raise_alert(engine, rules, "apple", 0)
    google = raise_alert(engine, rules, "google", 0)
    receivers.hook.answers = [503]
    Deliverer(get_settings(), rules, engine).drain_all()

    code, out, _ = cli("list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(" OPEN " in line for line in lines)
    [line] = [x for x in lines if x.split()[0] == str(apple["id"])]
    assert "ops=sent" in line and "mail=sent" in line and "hook=retrying(1)" in line
    assert "503" in line

    code, out, _ = cli("ack", str(apple["id"]), "--by", "ana")
    assert (code, out.strip()) == (0, f"alert {apple['id']} acknowledged by ana")
    # The webhook's retry was still waiting: cancelled, someone already knows.
    code, out, _ = cli("list", "--brand", "apple", "--json")
    [row] = [orjson.loads(x) for x in out.splitlines()]
    assert row["acked_by"] == "ana" and row["acked_at"]
    states = {d["channel"]: d["status"] for d in row["deliveries"]}
    assert states == {"ops": "sent", "hook": "cancelled", "mail": "sent"}

    code, out, _ = cli("list", "--open")
    assert [x.split()[0] for x in out.splitlines()] == [str(google["id"])]
    code, out, _ = cli("ack", str(apple["id"]))
    assert code == 0 and "already acknowledged by ana" in out
    code, _, err = cli("ack", "999999999")
    assert code == 1 and "no alert with id 999999999" in err


def test_test_message_goes_to_the_named_channel(env: Path, receivers: Receivers) -> None:
    code, out, _ = cli("test", "--channel", "hook")
    assert code == 0 and "test message sent to hook" in out
    [request] = receivers.hook.requests
    body = orjson.loads(request.body)
    assert body["type"] == "moodwire.alert.test" and "test message" in body["text"]
    assert request.headers["webhook-signature"].startswith("v1,")
    assert out.strip().endswith(f"(delivery id {request.headers['webhook-id']})")
    assert cli("test", "--channel", "mail")[0] == 0
    assert receivers.mail.messages[0]["Subject"].startswith("[moodwire test]")
    assert not receivers.slack.requests

    code, _, err = cli("test", "--channel", "pager")
    assert code == 1 and "no channel 'pager'" in err and "hook, mail, ops" in err
    receivers.slack.answers = [410]
    code, _, err = cli("test", "--channel", "ops")
    assert code == 1 and "test message to ops failed: slack ops answered 410" in err


def test_bad_rules_stop_the_service_in_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("brands: {apple: {channels: [nowhere]}}\n")
    monkeypatch.setenv("MOODWIRE_ALERT_RULES_FILE", str(bad))
    monkeypatch.setenv("MOODWIRE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("MOODWIRE_BROKER_URL", f"127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    code, _, err = cli("--once")
    assert code == 1 and "unknown channel(s) ['nowhere']" in err and str(bad) in err
    assert len(err.strip().splitlines()) == 1


def test_api_shows_open_and_acknowledged_alerts(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    from moodwire.alerts import store
    from moodwire.api.app import create_app

    rules = load(rules_file(tmp_path, receivers))
    apple = raise_alert(engine, rules, "apple", 0)
    google = raise_alert(engine, rules, "google", 0)
    with engine.begin() as conn:
        store.acknowledge(conn, google["id"], "bo")
    settings = Settings(database_url=database_url, state_dir=tmp_path / "state")
    with TestClient(create_app(settings), base_url=LOCAL) as api:
        rows = {a["brand"]: a for a in api.get("/api/alerts").json()["alerts"]}
        assert rows["apple"]["acked_at"] is None and rows["google"]["acked_by"] == "bo"
        assert [d["channel"] for d in rows["apple"]["deliveries"]] == ["hook", "mail", "ops"]
        assert {d["status"] for d in rows["apple"]["deliveries"]} == {"pending"}
        assert {d["status"] for d in rows["google"]["deliveries"]} == {"cancelled"}
        only_open = api.get("/api/alerts", params={"open": "true"}).json()["alerts"]
        assert [a["id"] for a in only_open] == [apple["id"]]
        script = api.get("/static/app.js").text
        assert "data-alert-state" in script and "function deliveryCell" in script
