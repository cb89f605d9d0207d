"""Session fixtures on real servers, shared by every test suite.

Contract (other suites rely on these names):
- ``broker_url``: "127.0.0.1:PORT" of a memory-only Tansu broker started for the session.
- ``database_url``: SQLAlchemy URL of a fresh database, migrated to head, dropped at the end.
  On 127.0.0.1:5432 when a PostgreSQL answers there, else on an embedded one.
- ``redis_url``: a Redis database of our own, empty at the start: a free db index 1..15 on
  127.0.0.1:6379 when Redis answers there, else an embedded Valkey.
- ``settings`` (per test): Settings with those URLs, a tmp ``state_dir``, topic names and
  consumer group unique to the test, the four topics created with 4 partitions.
- ``redis_client`` (per test): a client on ``redis_url`` after emptying that database.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest
import redis
from sqlalchemy.engine import make_url

from moodwire.aggregates.rebuild import mark_whole
from moodwire.db.migrate import upgrade
from moodwire.settings import Settings, get_settings
from moodwire.stack.broker import start_broker
from moodwire.stack.errors import StackError
from moodwire.stack.ports import free_port, port_in_use
from moodwire.stack.postgres import STOP_SIGNAL, start_postgres
from moodwire.stack.processes import ServerProcess, stop
from moodwire.stack.redis import start_redis
from moodwire.training.data import TWEETEVAL, default_data_dir
from support.pipeline import spawn_worker
from support.settings import unique_settings

# Fixtures defined in support modules, offered to every test.
__all__ = ["spawn_worker"]

LOCAL_PG_PORT = 5432
LOCAL_REDIS_PORT = 6379
# Marks a Redis db index as taken by one test session (several sessions share 6379).
REDIS_CLAIM_KEY = "moodwire:test-session-claim"
REDIS_CLAIM_TTL_S = 3 * 3600


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never see the developer's running stack or exported URLs."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MOODWIRE_")}
    for name in ("MOODWIRE_BROKER_URL", "MOODWIRE_DATABASE_URL", "MOODWIRE_REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["MOODWIRE_STATE_DIR"] = str(tmp_path_factory.mktemp("default-state"))
    get_settings.cache_clear()
    yield
    for name in [k for k in os.environ if k.startswith("MOODWIRE_")]:
        del os.environ[name]
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture
def server_tmp_path() -> Iterator[Path]:
    """A temporary directory a server running as another user can reach (see stack/postgres).

    Not under pytest's tmp_path: pytest resets /tmp/pytest-of-<user> to mode 700 whenever
    any session starts, which would lock out PostgreSQL's unprivileged user mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="moodwire-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _retry(make: Callable[[int], ServerProcess], attempts: int = 3) -> ServerProcess:
    # A free port can be taken by a concurrent test session before our server binds it.
    error: StackError | None = None
    for _ in range(attempts):
        try:
            return make(free_port())
        except StackError as err:
            error = err
    assert error is not None
    raise error


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    server = _retry(lambda port: start_broker(port, log))
    yield server.url
    stop(server.pid, server.create_time, signal.SIGTERM)


def _local_postgres_answers() -> bool:
    if not port_in_use(LOCAL_PG_PORT):
        return False
    try:
        psycopg2.connect(
            host="127.0.0.1",
            port=LOCAL_PG_PORT,
            user="postgres",
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    embedded: ServerProcess | None = None
    password: str | None = None
    if _local_postgres_answers():
        port = LOCAL_PG_PORT
    else:
        # Not under tmp_path_factory: see server_tmp_path.
        root = Path(tempfile.mkdtemp(prefix="moodwire-test-pg-"))
        embedded = _retry(lambda p: start_postgres(root / "data", p, root / "postgres.log"))
        port = embedded.port
        password = make_url(embedded.url).password  # the embedded server requires one
    name = f"moodwire_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        auth = "" if password is None else ":" + quote(password, safe="")
        url = f"postgresql+psycopg2://postgres{auth}@127.0.0.1:{port}/{name}"
        upgrade(url)
        yield url
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
        if embedded is not None:
            stop(embedded.pid, embedded.create_time, STOP_SIGNAL)
            shutil.rmtree(root, ignore_errors=True)


def _claim_local_redis_db(token: str) -> int | None:
    """A db index 1..15 on the local Redis that no other session holds, or None."""
    indexes = list(range(1, 16))
    random.shuffle(indexes)
    for index in indexes:
        client = redis.Redis(host="127.0.0.1", port=LOCAL_REDIS_PORT, db=index)
        try:
            if client.set(REDIS_CLAIM_KEY, token, nx=True, ex=REDIS_CLAIM_TTL_S):
                return index
        finally:
            client.close()
    return None


def _flush_keeping_claim(client: redis.Redis, token: str) -> None:
    client.flushdb()
    client.set(REDIS_CLAIM_KEY, token, ex=REDIS_CLAIM_TTL_S)
    # The session's Postgres holds every test's rollups; each test's Redis starts empty
    # and whole, so a worker does not rebuild the other tests' aggregates into it.
    mark_whole(client)


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    token = uuid.uuid4().hex
    embedded: ServerProcess | None = None
    index: int | None = None
    try:
        if port_in_use(LOCAL_REDIS_PORT):
            index = _claim_local_redis_db(token)
    except redis.RedisError:
        index = None
    if index is not None:
        url = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/{index}"
    else:
        root = tmp_path_factory.mktemp("redis")
        embedded = _retry(
            lambda p: start_redis(root / "data", p, root / "redis.log", persist=False)
        )
        url = embedded.url
    client = redis.Redis.from_url(url)
    try:
        _flush_keeping_claim(client, token)
        yield url, token
        client.flushdb()
    finally:
        client.close()
        if embedded is not None:
            stop(embedded.pid, embedded.create_time, signal.SIGTERM)


@pytest.fixture(scope="session")
def redis_url(_redis_session: tuple[str, str]) -> str:
    return _redis_session[0]


@pytest.fixture
def redis_client(_redis_session: tuple[str, str]) -> Iterator[redis.Redis]:
    """A client (str responses) on the session's Redis database, emptied first."""
    url, token = _redis_session
    client = redis.Redis.from_url(url, decode_responses=True)
    _flush_keeping_claim(client, token)
    yield client
    client.close()


@pytest.fixture
def settings(broker_url: str, database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return unique_settings(broker_url, database_url, redis_url, tmp_path / "state", partitions=4)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared labelled tweets (``../shared/data``); tests that need them skip without."""
    path = default_data_dir()
    if not (path / TWEETEVAL).is_dir():
        pytest.skip(f"shared data not found at {path} (set MOODWIRE_DATA_DIR)")
    return path
