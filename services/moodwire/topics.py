"""Kafka topics: create moodwire's topics idempotently with the configured partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from moodwire.logs import get_logger
from moodwire.settings import REPO_ROOT, Settings

log = get_logger(__name__)

TOPIC_SPEC = REPO_ROOT / "infra" / "topics.yaml"


def topic_names(settings: Settings) -> list[str]:
    """Every topic moodwire uses: raw posts, scored posts, alerts, dead letters."""
    return [
        settings.topic_raw,
        settings.topic_scored,
        settings.topic_alerts,
        settings.topic_dead_letters,
    ]


def topic_configs(settings: Settings, spec: Path = TOPIC_SPEC) -> dict[str, dict[str, str]]:
    """Topic configs per topic name, from ``infra/topics.yaml`` (none if the file is absent)."""
    try:
        loaded: Any = yaml.safe_load(spec.read_text())
    except OSError:
        return {}
    result: dict[str, dict[str, str]] = {}
    for entry in (loaded or {}).get("topics", {}).values():
        name = getattr(settings, str(entry["setting"]))
        result[str(name)] = {str(k): str(v) for k, v in (entry.get("configs") or {}).items()}
    return result


def admin_client(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="moodwire-admin",
        request_timeout_ms=15000,
    )


def ensure_topics(settings: Settings) -> list[str]:
    """Create whichever of moodwire's topics are missing; returns the names it created.

    Existing topics are left as they are (their partition count is not changed).
    """
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topic_names(settings) if name not in existing]
        created: list[str] = []
        configs = topic_configs(settings)
        for name in missing:
            topic = NewTopic(
                name=name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=configs.get(name, {}),
            )
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                # Another process created it between our listing and our request.
                pass
        if created:
            log.info("topics created", extra={"topics": created, "partitions": settings.partitions})
        return created
    finally:
        admin.close()


def partition_counts(settings: Settings) -> dict[str, int]:
    """Partitions of each moodwire topic that exists (for status and tests)."""
    admin = admin_client(settings)
    try:
        names = set(admin.list_topics()) & set(topic_names(settings))
        if not names:
            return {}
        described = admin.describe_topics(sorted(names))
        # kafka-python 3 names the key "name" (older versions: "topic").
        return {str(t.get("name") or t.get("topic")): len(t["partitions"]) for t in described}
    finally:
        admin.close()
