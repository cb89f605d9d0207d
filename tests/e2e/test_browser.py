"""The live page in a real headless Chromium, served by a real `moodwire web` process over
real data (real tweets through the processor's batch step, a real detection pass).

Skips when no Chromium is installed (`make browser` installs Debian's). Set
MOODWIRE_SCREENSHOT=path.png to keep the screenshot (docs/web-page.png comes from here).
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from moodwire.status import collect
from support.web import Seeded, module_settings, seed_live_data, unseen_model, wait_healthy

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MOODWIRE = Path(sys.executable).with_name("moodwire")
# Virtual time lets the page's fetches and first renders finish before the DOM is dumped.
VIRTUAL_TIME_MS = 8000
# The module's server asks for a login, as one reachable from other hosts must.
TOKEN = "e2e-token-0123456789abcdef"


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary found (install it with `make browser`)")


def headless(url: str, profile: Path, *extra: str) -> str:
    command = [
        browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def server_env(settings: Settings, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    for name in (
        "state_dir",
        "broker_url",
        "database_url",
        "redis_url",
        "topic_raw",
        "topic_scored",
        "topic_alerts",
        "topic_dead_letters",
        "model_path",
    ):
        env[f"MOODWIRE_{name.upper()}"] = str(getattr(settings, name))
    env["MOODWIRE_WEB_REFRESH_SECONDS"] = "2"
    if token is not None:
        env["MOODWIRE_WEB_TOKEN"] = token
    return env


def serve(settings: Settings, token: str | None = None) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(MOODWIRE), "web", "--port", str(port)],
        env=server_env(settings, token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def web_settings(
    broker_url: str, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    browser()  # skip before seeding anything
    return module_settings(broker_url, database_url, redis_url, tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def seeded(web_settings: Settings) -> Seeded:
    return seed_live_data(web_settings)


@pytest.fixture(scope="module")
def live_url(web_settings: Settings, seeded: Seeded) -> Iterator[str]:
    yield from serve(web_settings, TOKEN)


def test_without_a_login_the_browser_gets_the_login_form(live_url: str, tmp_path: Path) -> None:
    dom = headless(f"{live_url}/", tmp_path / "profile", "--dump-dom")
    assert '<form id="login"' in dom and 'data-loaded="1"' not in dom
    assert 'data-brand="apple"' not in dom


def test_page_shows_the_data(
    live_url: str, web_settings: Settings, seeded: Seeded, tmp_path: Path
) -> None:
    # Through the login page: its script fills in the token from the link and submits the
    # form, the server sets the session cookie and sends the browser on to the page.
    dom = headless(f"{live_url}/login#token={TOKEN}", tmp_path / "profile", "--dump-dom")
    assert 'data-loaded="1"' in dom, "the page script never finished a refresh"
    figures = collect(web_settings)
    apple = figures["brands"]["apple"]

    # Brand cards: names from the brands file, totals from the Redis aggregates.
    assert 'data-brand="apple"' in dom and ">Apple<" in dom
    assert f"<b>{apple['posts']:,}</b> posts" in dom
    negative_pct = round(100 * apple["negative"] / apple["posts"])
    assert f"{negative_pct}% negative" in dom
    assert f'id="kpi-scored">{figures["scored"]:,}<' in dom
    assert 'class="pill pill-live"' in dom
    # French posts about apple: counted on the card as not scored, with their language.
    unread = figures["unscored_for_language"]["apple"]
    assert unread.get("fr", 0) >= 3
    langs = ", ".join(f"{lang} {n:,}" for lang, n in list(unread.items())[:4])
    assert f"{sum(unread.values()):,} not scored for language ({langs})" in dom

    # The spike: an alert row and the card's badge.
    # (The spike is a volume surge too: that alert kind is apple's as well.)
    shifts = [a for a in seeded.alerts if a["kind"] == "negative_shift"]
    assert [a["brand"] for a in shifts] == ["apple"]
    assert 'data-alert-brand="apple"' in dom
    alert = shifts[0]
    assert f'class="share">{round(100 * alert["negative_share"])}%<' in dom
    assert "negative shift</span>" in dom

    # Recent negative posts: the newest real tweets the model scored negative.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    newest = httpx.get(
        f"{live_url}/api/posts", params={"sentiment": "negative"}, headers=bearer
    ).json()
    assert newest["posts"]
    for post in newest["posts"][:3]:
        assert html.escape(post["text"], quote=False) in dom

    # Charts: one line per brand in the sentiment chart, bars in the cards.
    assert 'data-series="apple"' in dom and 'data-series="*"' in dom
    assert 'id="empty" class="empty" hidden' in dom


def test_screenshot(live_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    headless(
        f"{live_url}/login#token={TOKEN}",
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1440,1720",
        "--hide-scrollbars",
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    if os.environ.get("MOODWIRE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MOODWIRE_SCREENSHOT"])


def test_empty_page_waits_for_posts(
    broker_url: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    browser()
    fresh = module_settings(
        broker_url, database_url, redis_url, tmp_path, model_path=unseen_model(tmp_path)
    )
    for url in serve(fresh):
        dom = headless(f"{url}/", tmp_path / "profile", "--dump-dom")
        assert 'data-loaded="1"' in dom
        assert ">waiting for posts<" in dom
        assert 'id="empty" class="empty">' in dom and 'id="content" hidden' in dom
