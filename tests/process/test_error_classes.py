"""Permanent vs transient write failures, on real errors from real servers."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from moodwire.db.engine import make_engine
from moodwire.process.batch import retry_forever
from moodwire.process.errors import PermanentError, permanent_reason
from moodwire.records import InvalidRecord
from moodwire.settings import Settings
from moodwire.stack.ports import free_port


def _db_error(settings: Settings, sql: str) -> DBAPIError:
    engine = make_engine(settings)
    try:
        with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
            conn.execute(text(sql))
        return caught.value
    finally:
        engine.dispose()


def test_a_value_postgres_cannot_hold_is_permanent(settings: Settings) -> None:
    reason = permanent_reason(_db_error(settings, "SELECT 'not a number'::int"))
    assert reason is not None and "22P02" in reason and "invalid input syntax" in reason
    reason = permanent_reason(_db_error(settings, "SELECT 1e400::float8"))
    assert reason is not None and "22003" in reason


def test_timeouts_and_lost_servers_are_transient(settings: Settings) -> None:
    own = settings.model_copy(update={"db_statement_timeout": 0.3})
    timed_out = _db_error(own, "SELECT pg_sleep(3)")
    assert "statement timeout" in str(timed_out)
    assert permanent_reason(timed_out) is None
    gone = settings.model_copy(
        update={"database_url": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"}
    )
    assert permanent_reason(_db_error(gone, "SELECT 1")) is None
    assert permanent_reason(ConnectionResetError("peer went away")) is None


def test_kafka_message_too_large_and_invalid_records_are_permanent(settings: Settings) -> None:
    async def send_too_large() -> BaseException:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_idempotence=False,
            max_request_size=1024,
        )
        await producer.start()
        try:
            with pytest.raises(Exception) as caught:
                await producer.send_and_wait(settings.topic_scored, b"x" * 4096)
            return caught.value
        finally:
            await producer.stop()

    too_large = asyncio.run(send_too_large())
    reason = permanent_reason(too_large)
    assert reason is not None and "MessageSizeTooLarge" in reason
    assert permanent_reason(InvalidRecord("cannot encode as JSON")) == "cannot encode as JSON"


def test_retry_gives_up_on_permanent_errors_only_when_asked() -> None:
    calls = 0

    async def flaky_then_bad() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("transient")
        raise InvalidRecord("bad for good")

    with pytest.raises(PermanentError, match="bad for good"):
        asyncio.run(retry_forever("test", flaky_then_bad, 0.01, stop_on_permanent=True))
    assert calls == 2  # the transient failure was retried, the permanent one was not
