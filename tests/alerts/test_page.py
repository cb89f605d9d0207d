"""The live page (a real `moodwire web`, real headless Chromium) shows open and
acknowledged alerts with each channel's delivery state."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from moodwire.alerts import store
from moodwire.alerts.delivery import Deliverer
from moodwire.alerts.rules import load
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from support.alert_outbox import Receivers, raise_alert, rules_file
from support.web import model_version, wait_healthy, write_minutes

MOODWIRE = Path(sys.executable).with_name("moodwire")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no chromium binary found (install it with `make browser`)")


def test_page_shows_open_and_acknowledged_alerts_with_delivery_state(
    settings: Settings, redis_client: redis.Redis, receivers: Receivers, tmp_path: Path
) -> None:
    browser = chromium()
    rng = random.Random(3)
    plan = [("apple", m, 20, sum(rng.random() < 0.2 for _ in range(20))) for m in range(30)]
    plan += [("google", m, 20, 4) for m in range(30)]
    write_minutes(redis_client, model_version(settings), settings.topic_raw, plan)
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alerts"))
        rules = load(rules_file(tmp_path, receivers))
        receivers.hook.answers = [500, 500]  # both alerts: the first attempt fails
        apple = raise_alert(engine, rules, "apple", 20)
        google = raise_alert(engine, rules, "google", 20)
        Deliverer(settings, rules, engine).drain_all()
        with engine.begin() as conn:
            store.acknowledge(conn, google["id"], "ana")
    finally:
        engine.dispose()

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    for name in ("state_dir", "broker_url", "database_url", "redis_url", "topic_raw"):
        env[f"MOODWIRE_{name.upper()}"] = str(getattr(settings, name))
    port = free_port()
    web = subprocess.Popen(
        [str(MOODWIRE), "web", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, web)
        done = subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=8000", "--dump-dom", f"{url}/",
            ],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    finally:
        web.terminate()
        web.wait(10)
    dom = done.stdout
    assert 'data-loaded="1"' in dom, done.stderr[-2000:]
    assert 'data-alert-brand="apple" data-alert-state="open"' in dom
    assert 'data-alert-brand="google" data-alert-state="acked" class="acked"' in dom
    assert ">acked by ana<" in dom and ">open<" in dom
    assert 'data-channel="ops"' in dom and ">ops: sent<" in dom
    # The webhook's failed first attempt shows as failing, with its error as the tooltip.
    assert 'class="tag delivery-failing" data-channel="hook"' in dom
    assert ">hook: pending<" in dom and "answered 500" in dom
    assert ">hook: cancelled<" in dom  # google's retry, cancelled by the acknowledgement
    assert apple["id"] != google["id"]
