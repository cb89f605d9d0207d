"""The one way to open Redis: sync and asyncio clients from the settings."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from moodwire.settings import Settings


def connect(settings: Settings, *, decode: bool = True) -> redis.Redis:
    """A client for the configured Redis; ``decode=False`` returns bytes instead of str."""
    return redis.Redis.from_url(
        settings.require("redis_url"), decode_responses=decode, health_check_interval=30
    )


def connect_async(settings: Settings, *, decode: bool = True) -> aioredis.Redis:
    """The asyncio client, for code running inside an event loop (the stream processor)."""
    return aioredis.Redis.from_url(
        settings.require("redis_url"), decode_responses=decode, health_check_interval=30
    )
