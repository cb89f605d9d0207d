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
    engine = make_engine(settings, poolclass=pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def redis_answers(settings: Settings) -> bool:
    client = connect(settings)
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
