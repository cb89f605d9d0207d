"""Does a configured server answer? One cheap probe per kind, never raising."""

from __future__ import annotations

import redis
from sqlalchemy import pool, text
from sqlalchemy.exc import SQLAlchemyError

from moodwire.db.engine import make_engine
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.stack.ports import port_in_use


def broker_answers(settings: Settings) -> bool:
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        if port.isdigit() and port_in_use(int(port), host or "127.0.0.1"):
            return True
    return False


def database_answers(settings: Settings) -> bool:
    try:
        # Inside the try: a malformed URL, or one naming a driver that is not installed, is
        # a server that does not answer, not a crash.
        engine = make_engine(settings, poolclass=pool.NullPool, connect_args={"connect_timeout": 3})
    except (SQLAlchemyError, ImportError):
        return False
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def redis_answers(settings: Settings) -> bool:
    try:
        client = connect(settings)
    except ValueError:  # a malformed URL (redis-py refuses it when parsing)
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


PROBES = {
    "broker_url": broker_answers,
    "database_url": database_answers,
    "redis_url": redis_answers,
}
