"""Settings for one test (or one module): the session's servers, topics of its own."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from moodwire.settings import Settings
from moodwire.topics import ensure_topics


def unique_settings(
    broker_url: str, database_url: str, redis_url: str, state_dir: Path, **overrides: Any
) -> Settings:
    """Topic names and consumer group carry a fresh suffix, so tests sharing the session's
    broker never see each other's records; the topics exist on return."""
    suffix = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "state_dir": state_dir,
        "broker_url": broker_url,
        "database_url": database_url,
        "redis_url": redis_url,
        "topic_raw": f"moodwire.posts.raw.{suffix}",
        "topic_scored": f"moodwire.posts.scored.{suffix}",
        "topic_alerts": f"moodwire.alerts.{suffix}",
        "topic_dead_letters": f"moodwire.dead-letters.{suffix}",
        "consumer_group": f"moodwire-process-{suffix}",
    }
    fields.update(overrides)
    settings = Settings(**fields)
    ensure_topics(settings)
    return settings


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range (32768+ here and on most Linux), for
    a server a test stops and starts again on the same port: an outgoing connection of
    any process may take a free ephemeral port while the server is down."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 20000-32000")
