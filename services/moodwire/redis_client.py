"""The one way to open Redis: sync and asyncio clients from the settings."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from moodwire.settings import Settings


def timeouts(settings: Settings) -> dict[str, Any]:
    """A command waits at most ``redis_socket_timeout`` on a silent socket (a half-open
    connection raises instead of hanging inside the Postgres transaction that holds the
    batch's row locks); keepalives find dead peers between commands."""
    return {
        "health_check_interval": 30,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_keepalive": True,
    }


def connect(settings: Settings, *, decode: bool = True) -> redis.Redis:
    """A client for the configured Redis; ``decode=False`` returns bytes instead of str."""
    return redis.Redis.from_url(
        settings.require("redis_url"), decode_responses=decode, **timeouts(settings)
    )


def connect_async(settings: Settings, *, decode: bool = True) -> aioredis.Redis:
    """The asyncio client, for code running inside an event loop (the stream processor)."""
    return aioredis.Redis.from_url(
        settings.require("redis_url"), decode_responses=decode, **timeouts(settings)
    )
