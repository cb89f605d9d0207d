"""The topic spec in ``infra/topics.yaml`` matches the topics moodwire uses."""

from __future__ import annotations

import yaml

from moodwire.settings import Settings
from moodwire.topics import TOPIC_SPEC, topic_configs, topic_names


def test_topic_spec_covers_every_topic_exactly_once() -> None:
    spec = yaml.safe_load(TOPIC_SPEC.read_text())["topics"]
    settings = Settings()
    assert sorted(getattr(settings, e["setting"]) for e in spec.values()) == sorted(
        topic_names(settings)
    )
    configs = topic_configs(settings)
    assert set(configs) == set(topic_names(settings))
    assert all(int(c["retention.ms"]) > 0 for c in configs.values())


def test_topic_configs_follow_renamed_topics() -> None:
    settings = Settings(topic_raw="elsewhere.raw")
    assert "elsewhere.raw" in topic_configs(settings)
