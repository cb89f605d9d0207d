"""Who may talk to `moodwire web`: the token and its login page, the Host check against DNS
rebinding, and error bodies that never carry a server's error text. On the real app over a
real PostgreSQL and Redis (and, for the bind rule, a real `moodwire web` process)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from moodwire.api.app import create_app
from moodwire.api.security import COOKIE, session_value
from moodwire.cli.app import app as cli
from moodwire.settings import Settings, get_settings
from moodwire.stack.ports import free_port
from support.web import wait_healthy

TOKEN = "correct-horse-battery-staple-42"
LOCAL = "http://127.0.0.1:8080"
MOODWIRE = str(Path(sys.executable).with_name("moodwire"))


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    """The app with a token, as `moodwire web` serves it on every interface."""
    with_token = settings.model_copy(update={"web_token": SecretStr(TOKEN)})
    with TestClient(create_app(with_token, bind_host="0.0.0.0"), base_url=LOCAL) as client:
        yield client


def test_with_a_token_every_data_path_needs_it(guarded: TestClient) -> None:
    page = guarded.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    for path in ("/api/status", "/api/series", "/api/alerts", "/api/posts", "/api/openapi.json"):
        response = guarded.get(path)
        assert response.status_code == 401, path
        assert response.json() == {"error": "login required"}
        assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = guarded.get(path, headers={"Authorization": "Bearer " + TOKEN[:-1]})
        assert wrong.status_code == 401, path
        guarded.cookies.set(COOKIE, TOKEN)  # the token itself is not a session
        assert guarded.get(path).status_code == 401, path
        guarded.cookies.clear()
    # Scripts use the token as a bearer token.
    status = guarded.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status.status_code == 200 and "brands" in status.json()
    # Open without it: the health probe, the login page and the page's own assets.
    assert guarded.get("/healthz").json() == {"status": "ok"}
    assert guarded.get("/static/login.js").status_code == 200
    assert guarded.get("/login").status_code == 200


def test_the_login_page_sets_a_session_cookie_that_opens_the_page(guarded: TestClient) -> None:
    form = guarded.get("/login")
    assert '<form id="login"' in form.text and 'name="token"' in form.text
    assert 'id="failed" hidden' in form.text

    started = time.monotonic()
    refused = guarded.post("/login", data={"token": "guess"}, follow_redirects=False)
    assert refused.status_code == 401 and 'id="failed" hidden' not in refused.text
    assert time.monotonic() - started >= 0.9  # a failed login costs the guesser a second
    assert COOKIE not in refused.cookies

    accepted = guarded.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/"
    cookie = accepted.headers["set-cookie"]
    assert f"{COOKIE}={session_value(TOKEN)}" in cookie and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    # The client now carries the cookie, like a browser.
    page = guarded.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert guarded.get("/api/status").status_code == 200

    guarded.post("/logout")
    assert guarded.get("/api/status").status_code == 401
    assert guarded.get("/", follow_redirects=False).headers["location"] == "/login"


def test_without_a_token_loopback_needs_no_login(settings: Settings) -> None:
    assert settings.web_token is None
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        assert client.get("/").status_code == 200
        assert client.get("/api/status").status_code == 200
        # There is nothing to log in to.
        login = client.get("/login", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("[::1]:8080", True),
        ("192.0.2.10:8080", True),  # the address it was told to bind
        ("attacker.example:8080", False),  # DNS rebinding: a hostile name now pointing here
        ("127.0.0.1.nip.io:8080", False),
        ("", False),
    ],
)
def test_the_host_header_must_name_this_server(
    settings: Settings, host: str, allowed: bool
) -> None:
    with TestClient(create_app(settings, bind_host="192.0.2.10"), base_url=LOCAL) as client:
        for path in ("/", "/healthz", "/api/status", "/static/app.js"):
            response = client.get(path, headers={"host": host})
            if allowed:
                assert response.status_code == 200, (host, path)
            else:
                assert response.status_code == 400, (host, path)
                assert response.json() == {"error": "unknown host"}


def test_more_host_names_can_be_allowed(settings: Settings) -> None:
    named = settings.model_copy(update={"web_allowed_hosts": "moodwire.internal"})
    with TestClient(create_app(named), base_url="http://moodwire.internal") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"host": "localhost"}).status_code == 400
    anyone = settings.model_copy(update={"web_allowed_hosts": "*"})
    with TestClient(create_app(anyone), base_url="http://whatever.example") as client:
        assert client.get("/healthz").status_code == 200


def test_error_bodies_never_carry_server_error_text(
    broker_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    dead = f"postgresql+psycopg2://moodwire:s3cret-pw@127.0.0.1:{port}/private_db"
    settings = Settings(
        state_dir=tmp_path, broker_url=broker_url, database_url=dead, redis_url=redis_url
    )
    app: FastAPI = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"internal detail: {dead}")

    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        responses = [client.get("/api/alerts"), client.get("/api/posts"), client.get("/boom")]
        status = client.get("/api/status")
    assert [r.status_code for r in responses] == [503, 503, 500]
    assert responses[0].json() == {"error": "PostgreSQL unavailable"}
    assert responses[2].json() == {"error": "internal error"}
    assert status.status_code == 200 and "postgres: unavailable" in status.json()["errors"]
    for response in [*responses, status]:
        for secret in ("s3cret", str(port), "private_db", "OperationalError", "internal detail"):
            assert secret not in response.text, (response.request.url, secret)
    assert all(r.headers["x-content-type-options"] == "nosniff" for r in responses[:2])


def _web_here(*args: str, **env: str) -> tuple[int, str]:
    """`moodwire web ARGS` in this process (it exits before serving when refused)."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MOODWIRE_")}
    overrides.update(env)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["web", *args], env=overrides)
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_web_refuses_to_bind_a_non_loopback_address_without_a_token(
    tmp_path: Path, host: str
) -> None:
    code, err = _web_here("--host", host, "--port", "1", MOODWIRE_STATE_DIR=str(tmp_path))
    assert code == 1
    assert err.startswith("error: ") and "MOODWIRE_WEB_TOKEN" in err and len(err.splitlines()) == 1
    code, err = _web_here(
        "--host", host, MOODWIRE_STATE_DIR=str(tmp_path), MOODWIRE_WEB_TOKEN="short"
    )
    assert code == 1 and "is 5 characters; use at least 16" in err


def test_a_public_web_server_answers_only_with_the_token(settings: Settings) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    env.update(
        MOODWIRE_STATE_DIR=str(settings.state_dir),
        MOODWIRE_DATABASE_URL=str(settings.database_url),
        MOODWIRE_REDIS_URL=str(settings.redis_url),
        MOODWIRE_BROKER_URL=str(settings.broker_url),
        MOODWIRE_WEB_TOKEN=TOKEN,
        MOODWIRE_METRICS_PORT="0",
    )
    process = subprocess.Popen(
        [MOODWIRE, "web", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        assert httpx.get(f"{url}/api/status").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/api/status", headers=bearer).status_code == 200
        assert httpx.get(f"{url}/healthz", headers={"host": "evil.example"}).status_code == 400
        assert "server" not in httpx.get(f"{url}/healthz").headers  # no version banner
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=15)
    assert TOKEN not in out.decode()  # the token is never printed
