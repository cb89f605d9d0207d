"""Timeouts on every connection: a silent peer cannot hang a process or hold row locks."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from moodwire.db.engine import make_engine
from moodwire.redis_client import connect, connect_async
from moodwire.settings import Settings


def test_an_idle_transaction_loses_its_row_locks(settings: Settings) -> None:
    """A client that goes silent mid-transaction (what a half-open connection looks like
    to the server) is cut off after ``db_statement_timeout``, and its locks go with it."""
    table = f"mw_lock_test_{uuid.uuid4().hex[:8]}"
    plain = make_engine(settings.require("database_url"))  # a URL: no timeouts of ours
    with plain.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
    silent = make_engine(settings.model_copy(update={"db_statement_timeout": 1.0}))
    try:
        holder = silent.connect()
        holder.begin()
        holder.execute(text(f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE"))
        started = time.monotonic()
        with plain.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '15s'"))
            got = conn.scalar(text(f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE"))
        waited = time.monotonic() - started
        assert got == 1
        assert waited < 10, waited  # released by the server after ~1 s, not by lock_timeout
        with pytest.raises(DBAPIError):  # the silent client's session is gone
            holder.execute(text("SELECT 1"))
        holder.close()
    finally:
        silent.dispose()
        with plain.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        plain.dispose()


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a half-open peer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


def test_a_silent_redis_times_out_instead_of_hanging(settings: Settings, mute_server: int) -> None:
    own = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{mute_server}/0", "redis_socket_timeout": 0.5}
    )
    client = connect(own)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert time.monotonic() - started < 5

    async def ping_async() -> None:
        aclient = connect_async(own)
        try:
            await aclient.ping()
        finally:
            await aclient.aclose()

    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        asyncio.run(ping_async())
    assert time.monotonic() - started < 5
