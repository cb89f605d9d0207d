"""`moodwire demo --duration`: the whole pipeline runs, shows figures, and leaves nothing behind."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from sqlalchemy import text
from typer.testing import CliRunner

from moodwire.cli.app import app
from moodwire.db.engine import make_engine
from moodwire.settings import Settings, get_settings
from moodwire.stack.ports import free_port
from moodwire.status import collect
from support.pipeline import worker_env


def _our_processes(topic: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MOODWIRE_TOPIC_RAW") == topic:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _rows_since(settings: Settings, start: datetime) -> int:
    """Posts stored since ``start``: the database is shared by the session's tests, which
    run one at a time, so these are the demo's."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM posts WHERE ingested_at >= :start"
            return int(conn.scalar(text(sql), {"start": start}) or 0)
    finally:
        engine.dispose()


def test_demo_for_a_duration_scores_posts_and_stops_its_children(
    settings: Settings, redis_client: object
) -> None:
    web_port = free_port()
    started = datetime.now(UTC)
    env = worker_env(settings, MOODWIRE_WEB_API_PORT=str(web_port))
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
    # What it printed is what the pipeline stored; Redis (this test's own) counted the same
    # posts, give or take the one batch a stopped worker may leave between its Redis write
    # and its Postgres commit (the next worker to start settles it, exactly).
    figures = collect(settings)
    rows = _rows_since(settings, started)
    assert rows > 500
    assert figures["posts"] == scored >= rows, figures
    assert rows <= figures["aggregate_total"] <= rows + 2 * settings.max_batch, (rows, figures)
    assert sum(b["posts"] for b in figures["brands"].values()) >= figures["aggregate_total"]
    # Its ingest, worker, alert detector and page are gone; servers given by URL are not
    # the demo's to stop.
    assert _our_processes(settings.topic_raw) == []
    assert "local servers left running" in out


def test_bad_brands_file_is_one_line_and_starts_no_server(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    missing = tmp_path / "missing-brands.yaml"
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["demo", "--duration", "1"],
            env={
                "MOODWIRE_STATE_DIR": str(tmp_path / "state"),
                "MOODWIRE_BRANDS_FILE": str(missing),
            },
        )
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"error: cannot read brands file {missing}: No such file or directory"
    )
    assert not (tmp_path / "state" / "stack.json").exists()
