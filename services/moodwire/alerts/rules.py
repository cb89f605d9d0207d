"""Alert rules: which channels each brand's alerts go to, with a cooldown, quiet hours and
detection overrides. Read from ``MOODWIRE_ALERT_RULES_FILE``, else from the ``alerts:``
section of the brands file; neither means alerts are stored and shown but sent nowhere.

The format (the README's alerts section has a full example)::

    version: 1
    channels:                       # name -> how to reach it; secrets only by variable name
      ops-slack: {type: slack, url_env: MOODWIRE_SLACK_URL}
      hook: {type: webhook, url: https://..., secret_env: MOODWIRE_HOOK_SECRET}
      mail: {type: email, host: smtp.example.com, port: 587, tls: starttls,
             username: bot, password_env: MOODWIRE_SMTP_PASSWORD,
             from: bot@example.com, to: [team@example.com]}
    defaults:                       # every brand, unless its own entry says otherwise
      channels: [ops-slack]
      cooldown: 30m                 # event time between two deliveries of a brand and kind
      quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/Berlin}
    brands:
      apple: {channels: [ops-slack, mail], cooldown: 1h, quiet_hours: null,
              kinds: [negative_shift], detection: {shift_points: 0.15}}

Bad rules are one error naming the file and the key, raised at load (never mid-delivery).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from moodwire.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_COOLDOWN_S = 30 * 60


class RulesError(ValueError):
    """The rules cannot be used; the message names the file and the key to fix."""


class SecretMissing(RuntimeError):
    """A channel's secret variable is not set in this process's environment."""


def secret(variable: str | None) -> str | None:
    """The value of a secret the rules name by variable, read when it is needed."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise SecretMissing(f"environment variable {variable} is not set")
    return value


@dataclass(frozen=True, slots=True)
class SlackChannel:
    name: str
    url_env: str  # an incoming-webhook URL is itself the credential
    kind: Literal["slack"] = "slack"


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    name: str
    url: str | None
    url_env: str | None
    secret_env: str | None  # HMAC-SHA256 signing secret (Standard Webhooks)
    kind: Literal["webhook"] = "webhook"


@dataclass(frozen=True, slots=True)
class EmailChannel:
    name: str
    host: str
    port: int
    tls: Literal["none", "starttls", "ssl"]
    sender: str
    to: tuple[str, ...]
    username: str | None = None
    password_env: str | None = None
    ca_file: Path | None = None  # a private CA (or a self-signed server) to trust
    kind: Literal["email"] = "email"


Channel = SlackChannel | WebhookChannel | EmailChannel


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily span of wall-clock time, in a time zone, when nothing is sent (deferred to
    its end). ``start > end`` spans midnight."""

    start: time
    end: time
    zone: ZoneInfo

    def active(self, at: datetime) -> bool:
        local = at.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, at: datetime) -> datetime:
        """The first end of quiet hours after ``at`` (an aware datetime)."""
        local = at.astimezone(self.zone)
        for days in (0, 1, 2):
            day = (local + timedelta(days=days)).date()
            end = datetime.combine(day, self.end, tzinfo=self.zone)
            if end > local:
                return end
        raise AssertionError("unreachable: an end of quiet hours comes within two days")


@dataclass(frozen=True, slots=True)
class BrandRule:
    channels: tuple[str, ...] = ()
    cooldown_s: float = DEFAULT_COOLDOWN_S
    quiet_hours: QuietHours | None = None
    kinds: frozenset[str] | None = None  # None: every kind of alert
    # Field overrides of the detector's config dataclass for this brand.
    detection: Mapping[str, Any] = field(default_factory=dict)

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


@dataclass(frozen=True, slots=True)
class AlertRules:
    channels: Mapping[str, Channel] = field(default_factory=dict)
    defaults: BrandRule = field(default_factory=BrandRule)
    brands: Mapping[str, BrandRule] = field(default_factory=dict)
    origin: str = "(no rules)"

    def for_brand(self, brand: str) -> BrandRule:
        return self.brands.get(brand, self.defaults)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRules:
        if settings.alert_rules_file is not None:
            return load(settings.alert_rules_file)
        if settings.brands_file is not None:
            data = _read_yaml(settings.brands_file)
            section = data.get("alerts") if isinstance(data, Mapping) else None
            if section is not None:
                return parse(section, where=f"{settings.brands_file}: alerts")
        return cls()


def load(path: Path) -> AlertRules:
    return parse(_read_yaml(path), where=str(path))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the alert rules: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def parse(data: Any, *, where: str = "alert rules") -> AlertRules:
    if not isinstance(data, Mapping):
        raise RulesError(f"{where}: expected a mapping with 'channels' and 'brands'")
    _only(data, {"version", "channels", "defaults", "brands"}, where)
    if data.get("version", 1) != 1:
        raise RulesError(f"{where}: unsupported version {data.get('version')!r} (expected 1)")
    channels = {
        name: _channel(name, spec, f"{where}: channels.{name}")
        for name, spec in _mapping(data.get("channels"), f"{where}: channels").items()
    }
    defaults = _rule(data.get("defaults"), BrandRule(), channels, f"{where}: defaults")
    brands = {
        str(name): _rule(spec, defaults, channels, f"{where}: brands.{name}")
        for name, spec in _mapping(data.get("brands"), f"{where}: brands").items()
    }
    return AlertRules(channels=channels, defaults=defaults, brands=brands, origin=where)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: expected a mapping")
    return value


def _only(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _text(spec: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise RulesError(f"{where}: '{key}' is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _env_name(spec: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    name = _text(spec, key, where, required=required)
    if name is not None and not _ENV.match(name):
        raise RulesError(f"{where}: '{key}' names an environment variable, got {name!r}")
    return name


def _channel(name: Any, spec: Any, where: str) -> Channel:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RulesError(f"{where}: channel names use letters, digits, '_', '-', '.'")
    if not isinstance(spec, Mapping):
        raise RulesError(f"{where}: expected a mapping with a 'type'")
    kind = spec.get("type")
    if kind == "slack":
        _only(spec, {"type", "url_env"}, where)
        url_env = _env_name(spec, "url_env", where, required=True)
        assert url_env is not None
        return SlackChannel(name=name, url_env=url_env)
    if kind == "webhook":
        _only(spec, {"type", "url", "url_env", "secret_env"}, where)
        url = _text(spec, "url", where, required=False)
        url_env = _env_name(spec, "url_env", where, required=False)
        if (url is None) == (url_env is None):
            raise RulesError(f"{where}: give exactly one of 'url' and 'url_env'")
        if url is not None and not url.startswith(("http://", "https://")):
            raise RulesError(f"{where}: 'url' must be http:// or https://")
        secret_env = _env_name(spec, "secret_env", where, required=False)
        return WebhookChannel(name=name, url=url, url_env=url_env, secret_env=secret_env)
    if kind == "email":
        allowed = {"type", "host", "port", "tls", "username", "password_env", "from", "to"}
        _only(spec, allowed | {"ca_file"}, where)
        tls = spec.get("tls", "starttls")
        if tls not in ("none", "starttls", "ssl"):
            raise RulesError(f"{where}: 'tls' must be none, starttls or ssl")
        port = spec.get("port", {"none": 25, "starttls": 587, "ssl": 465}[tls])
        if not isinstance(port, int) or not 0 < port < 65536:
            raise RulesError(f"{where}: 'port' must be a port number")
        to = spec.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or not all(isinstance(a, str) and a for a in to):
            raise RulesError(f"{where}: 'to' must be an address or a list of addresses")
        ca_file = _text(spec, "ca_file", where, required=False)
        host, sender = _text(spec, "host", where), _text(spec, "from", where)
        assert host is not None and sender is not None
        return EmailChannel(
            name=name,
            host=host,
            port=port,
            tls=tls,
            sender=sender,
            to=tuple(to),
            username=_text(spec, "username", where, required=False),
            password_env=_env_name(spec, "password_env", where, required=False),
            ca_file=Path(ca_file) if ca_file else None,
        )
    raise RulesError(f"{where}: 'type' must be slack, webhook or email (got {kind!r})")


def duration_s(value: Any, where: str) -> float:
    """Seconds of ``90``, ``"90s"``, ``"30m"``, ``"1h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise RulesError(f"{where}: expected a duration such as 30m")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None:
        raise RulesError(f"{where}: expected a duration such as 90s, 30m, 1h (got {value!r})")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _clock(value: Any, where: str) -> time:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 22:00 as the sexagesimal integer 1320 (minutes).
        return time(value // 60, value % 60)
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise RulesError(f'{where}: expected a time of day such as "22:00" (got {value!r})')


def _quiet_hours(value: Any, where: str) -> QuietHours | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: expected {{start, end, timezone}} or null")
    _only(value, {"start", "end", "timezone"}, where)
    zone_name = value.get("timezone", "UTC")
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError(f"{where}: unknown time zone {zone_name!r}") from None
    start = _clock(value.get("start"), f"{where}.start")
    end = _clock(value.get("end"), f"{where}.end")
    if start == end:
        raise RulesError(f"{where}: start and end are the same time")
    return QuietHours(start=start, end=end, zone=zone)


def _rule(spec: Any, base: BrandRule, channels: Mapping[str, Channel], where: str) -> BrandRule:
    if spec is None:
        return base
    if not isinstance(spec, Mapping):
        raise RulesError(f"{where}: expected a mapping")
    _only(spec, {"channels", "cooldown", "quiet_hours", "kinds", "detection"}, where)
    rule = base
    if "channels" in spec:
        names = spec["channels"] or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RulesError(f"{where}: 'channels' must be a list of channel names")
        missing = [n for n in names if n not in channels]
        if missing:
            raise RulesError(f"{where}: unknown channel(s) {missing}; defined: {sorted(channels)}")
        rule = dataclasses.replace(rule, channels=tuple(dict.fromkeys(names)))
    if "cooldown" in spec:
        rule = dataclasses.replace(
            rule, cooldown_s=duration_s(spec["cooldown"], f"{where}.cooldown")
        )
    if "quiet_hours" in spec:
        rule = dataclasses.replace(
            rule, quiet_hours=_quiet_hours(spec["quiet_hours"], f"{where}.quiet_hours")
        )
    if "kinds" in spec:
        kinds = spec["kinds"]
        if kinds is not None and (
            not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)
        ):
            raise RulesError(f"{where}: 'kinds' must be a list of alert kinds, or null for all")
        rule = dataclasses.replace(rule, kinds=None if kinds is None else frozenset(kinds))
    if "detection" in spec:
        overrides = dict(_mapping(spec["detection"], f"{where}.detection"))
        _check_detection(overrides, f"{where}.detection")
        rule = dataclasses.replace(rule, detection={**base.detection, **overrides})
    return rule


def _check_detection(overrides: Mapping[str, Any], where: str) -> None:
    """Only fields the detector's config has, of the type it has them."""
    from moodwire.alerts.detect import DetectorConfig

    known = {f.name: f for f in dataclasses.fields(DetectorConfig)}
    unknown = set(overrides) - set(known)
    if unknown:
        raise RulesError(f"{where}: unknown detector setting(s) {sorted(unknown)}")
    for key, value in overrides.items():
        default = getattr(DetectorConfig(), key)
        if isinstance(default, int | float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise RulesError(f"{where}.{key}: expected a number (got {value!r})")
    try:
        dataclasses.replace(DetectorConfig(), **overrides)
    except (TypeError, ValueError) as exc:
        raise RulesError(f"{where}: {exc}") from None


def detector_config(base: Any, rule: BrandRule) -> Any:
    """``base`` (the detector's config) with the brand's overrides applied."""
    return dataclasses.replace(base, **rule.detection) if rule.detection else base
