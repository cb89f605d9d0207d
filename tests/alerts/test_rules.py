"""The alert-rules file: parsing, defaults, validation errors, quiet hours."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moodwire.alerts.detect import DetectorConfig
from moodwire.alerts.rules import (
    AlertRules,
    EmailChannel,
    RulesError,
    SlackChannel,
    WebhookChannel,
    detector_config,
    load,
    parse,
)
from moodwire.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"

RULES = """
version: 1
channels:
  ops: {type: slack, url_env: TEST_SLACK_URL}
  hook: {type: webhook, url: "http://127.0.0.1:9/hook", secret_env: TEST_HOOK_SECRET}
  mail:
    type: email
    host: 127.0.0.1
    tls: none
    port: 2525
    from: bot@example.com
    to: team@example.com
defaults:
  channels: [ops]
  cooldown: 30m
  quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/Berlin}
brands:
  apple:
    channels: [ops, hook, mail]
    cooldown: 1h
    quiet_hours: null
    kinds: [negative_shift]
    detection: {shift_points: 0.15, threshold: 12}
  google: {}
"""


def test_full_rules_parse_with_defaults_inherited() -> None:
    rules = parse(__import__("yaml").safe_load(RULES))
    assert isinstance(rules.channels["ops"], SlackChannel)
    hook = rules.channels["hook"]
    assert isinstance(hook, WebhookChannel) and hook.secret_env == "TEST_HOOK_SECRET"
    mail = rules.channels["mail"]
    assert isinstance(mail, EmailChannel) and mail.to == ("team@example.com",)
    apple = rules.for_brand("apple")
    assert apple.channels == ("ops", "hook", "mail") and apple.cooldown_s == 3600
    assert apple.quiet_hours is None and apple.wants("negative_shift")
    assert not apple.wants("volume_surge")
    config = detector_config(DetectorConfig(), apple)
    assert (config.shift_points, config.threshold) == (0.15, 12)
    # A brand with an empty entry, and one not listed, both get the defaults.
    for brand in ("google", "nobody"):
        rule = rules.for_brand(brand)
        assert rule.channels == ("ops",) and rule.cooldown_s == 1800
        assert rule.quiet_hours is not None and rule.wants("volume_surge")
        assert detector_config(DetectorConfig(), rule) == DetectorConfig()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("channels: {x: {type: pager}}", "'type' must be slack, webhook or email"),
        ("channels: {x: {type: slack, url: 'https://hooks.slack.com/x'}}", "unknown key"),
        ("channels: {x: {type: slack, url_env: 'not a var'}}", "names an environment variable"),
        ("brands: {apple: {channels: [nowhere]}}", "unknown channel(s) ['nowhere']"),
        ("defaults: {cooldown: soon}", "expected a duration"),
        ("defaults: {quiet_hours: {start: '22:00', end: '7', timezone: Mars/Base}}", "time zone"),
        ("brands: {apple: {detection: {min_nonsense: 1}}}", "unknown detector setting"),
        ("brands: {apple: {detection: {threshold: lots}}}", "expected a number"),
        ("channels: {m: {type: email, host: h, from: a@b, to: []}}", "'to' must be"),
        ("version: 2", "unsupported version"),
        ("brand: {}", "unknown key(s) ['brand']"),
    ],
)
def test_bad_rules_name_the_key(rules: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    with pytest.raises(RulesError) as err:
        load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_quiet_hours_across_midnight_defer_to_their_end() -> None:
    rules = parse(__import__("yaml").safe_load(RULES))
    quiet = rules.defaults.quiet_hours
    assert quiet is not None
    # Berlin is UTC+1 in January: 22:00-07:00 local is 21:00-06:00 UTC.
    night = datetime(2026, 1, 10, 23, 30, tzinfo=UTC)
    assert quiet.active(night)
    assert quiet.ends_after(night) == datetime(2026, 1, 11, 6, 0, tzinfo=UTC)
    early = datetime(2026, 1, 11, 5, 59, tzinfo=UTC)
    assert quiet.active(early) and quiet.ends_after(early) == datetime(2026, 1, 11, 6, tzinfo=UTC)
    assert not quiet.active(datetime(2026, 1, 11, 6, 0, tzinfo=UTC))
    assert not quiet.active(datetime(2026, 1, 11, 12, 0, tzinfo=UTC))


def test_unquoted_yaml_times_still_read_as_clock_times() -> None:
    # YAML 1.1 reads 22:00 as the integer 1320; the rules take it as 22:00 anyway.
    rules = parse(
        __import__("yaml").safe_load("defaults: {quiet_hours: {start: 22:00, end: 06:30}}")
    )
    quiet = rules.defaults.quiet_hours
    assert quiet is not None and (quiet.start.hour, quiet.end.minute) == (22, 30)


def test_rules_from_the_brands_file_section(tmp_path: Path) -> None:
    brands = tmp_path / "brands.yaml"
    brands.write_text(
        "version: 1\nbrands:\n  apple: {keywords: [apple]}\n"
        "alerts:\n  channels: {ops: {type: slack, url_env: X}}\n  defaults: {channels: [ops]}\n"
    )
    rules = AlertRules.from_settings(Settings(brands_file=brands, state_dir=tmp_path))
    assert rules.for_brand("apple").channels == ("ops",)
    # The brands file stays a valid brands file.
    from moodwire.brands import BrandMatcher

    assert BrandMatcher.load(brands).match("I like apple") == ("apple",)
    # No rules anywhere: alerts are stored but sent nowhere.
    assert AlertRules.from_settings(Settings(state_dir=tmp_path)).channels == {}


def test_readme_example_is_valid_rules() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- alert-rules-example -->\s*```yaml\n(.*?)```", text, re.S)
    assert found, "the README's alerts section lost its rules example"
    rules = parse(__import__("yaml").safe_load(found.group(1)))
    assert rules.channels and rules.brands
