"""`moodwire demo`: the whole pipeline runs, shows figures, and leaves nothing behind."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# Brands the demo feed names often (the bundled demo brands) and posts naming none.
WANTED_BRANDS = ("apple", "google", "starbucks", "(none)")
# Only a bound for a broken demo: the test waits on the page, never for a set time.
PAGE_DEADLINE_S = 240


def _wait_for_page(
    proc: subprocess.Popen[bytes], port: int, brands: tuple[str, ...], min_posts: int
) -> dict[str, Any]:
    """The live page's /api/status once it shows ``min_posts`` posts and every brand."""
    deadline = time.monotonic() + PAGE_DEADLINE_S
    status: dict[str, Any] = {}
    while True:
        assert proc.poll() is None, f"the demo exited with code {proc.returncode}"
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            status = {}
        shown = status.get("brands") or {}
        if int(status.get("posts") or 0) >= min_posts and all(
            int((shown.get(b) or {}).get("posts") or 0) > 0 for b in brands
        ):
            return status
        assert time.monotonic() < deadline, f"the page never showed the demo's posts: {status}"
        time.sleep(0.5)


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


def test_demo_scores_posts_shows_them_and_stops_its_children(
    settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    """The demo runs until Ctrl-C, as a person runs it; the test presses Ctrl-C once the
    live page shows what the checks below need, however long a loaded host takes."""
    web_port = free_port()
    started = datetime.now(UTC)
    env = worker_env(settings, MOODWIRE_WEB_API_PORT=str(web_port))
    moodwire = str(Path(sys.executable).with_name("moodwire"))
    # Files, not pipes: nobody reads them while it runs, and a full pipe would block it.
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
        proc = subprocess.Popen(
            [moodwire, "demo", "--rate", "150", "--seed", "2"],
            env=env,
            stdout=out_file,
            stderr=err_file,
        )
    try:
        status = _wait_for_page(proc, web_port, WANTED_BRANDS, min_posts=600)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = out_path.read_text()
    assert proc.returncode == 0, out + err_path.read_text()
    assert status["posts"] >= 600, "the live page showed the pipeline's figures"
    assert f"http://127.0.0.1:{web_port}/" in out  # the page's address, for the person
    # The live summary: rates, lag and the per-brand table with the bundled demo brands.
    assert re.search(r"posts [\d,]+  [\d,-]+/s  lag [\d,-]+", out), out
    for brand in ("Apple", "Google", "Starbucks", "(none)"):
        assert re.search(rf"^ *{re.escape(brand)} +[\d,]+ ", out, re.MULTILINE), (brand, out)
    match = re.search(r"demo stopped: ([\d,]+) posts scored", out)
    assert match, out
    scored = int(match.group(1).replace(",", ""))
    assert scored >= status["posts"]
    figures = collect(settings)
    rows = _rows_since(settings, started)
    assert rows >= 600
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
