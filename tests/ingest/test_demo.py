"""`moodwire demo --duration`: the whole pipeline runs, shows figures, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from moodwire.status import collect


def _our_processes(topic: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MOODWIRE_TOPIC_RAW") == topic:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_demo_for_a_duration_scores_posts_and_stops_its_children(settings: Settings) -> None:
    web_port = free_port()
    env = {
        **os.environ,
        "MOODWIRE_BROKER_URL": str(settings.broker_url),
        "MOODWIRE_DATABASE_URL": str(settings.database_url),
        "MOODWIRE_REDIS_URL": str(settings.redis_url),
        "MOODWIRE_STATE_DIR": str(settings.state_dir),
        "MOODWIRE_TOPIC_RAW": settings.topic_raw,
        "MOODWIRE_TOPIC_SCORED": settings.topic_scored,
        "MOODWIRE_TOPIC_ALERTS": settings.topic_alerts,
        "MOODWIRE_TOPIC_DEAD_LETTERS": settings.topic_dead_letters,
        "MOODWIRE_CONSUMER_GROUP": settings.consumer_group,
        "MOODWIRE_SESSION_TIMEOUT": "6",
        "MOODWIRE_WEB_API_PORT": str(web_port),
    }
    moodwire = str(Path(sys.executable).with_name("moodwire"))
    proc = subprocess.Popen(
        [moodwire, "demo", "--duration", "20", "--rate", "150", "--seed", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The live page is up while the demo runs, and it shows the pipeline's figures.
    page_posts = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and page_posts == 0:
        try:
            status = httpx.get(f"http://127.0.0.1:{web_port}/api/status", timeout=2).json()
            page_posts = int(status.get("posts") or 0)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=90)
    out = stdout.decode()
    assert proc.returncode == 0, out + stderr.decode()
    assert page_posts > 0, "the live page never showed a scored post"
    assert f"http://127.0.0.1:{web_port}/" in out  # the page's address, for the person
    # The live summary: rates, lag and the per-brand table with the bundled demo brands.
    assert re.search(r"posts [\d,]+  [\d,]+/s  lag [\d,-]+", out), out
    for brand in ("Apple", "Google", "Starbucks", "(none)"):
        assert brand in out
    match = re.search(r"demo stopped: ([\d,]+) posts scored", out)
    assert match, out
    scored = int(match.group(1).replace(",", ""))
    assert scored > 500
    # What it printed is what the pipeline stored. (A worker stopped mid-batch may leave
    # that batch's aggregates to the next worker: at-least-once, then exact.)
    figures = collect(settings)
    assert figures["posts"] == scored, figures
    assert 0 < figures["aggregate_total"] <= scored, figures
    assert sum(b["posts"] for b in figures["brands"].values()) >= scored
    # Its ingest, worker, alert detector and page are gone; servers given by URL are not
    # the demo's to stop.
    assert _our_processes(settings.topic_raw) == []
    assert "local servers left running" in out
