"""One detection pass (``run_once``) and the loop of ``moodwire alerts`` (``run``).

A pass reads the serving model version's aggregates around the event-time watermark,
detects spikes, and for each one inserts the alert row and, only when the row is new,
publishes it; the publish happens inside the insert's transaction, so a failed publish
rolls the row back and the next pass tries again (an alert is never stored unannounced;
at worst it is announced twice if the commit itself fails).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moodwire.alerts import series
from moodwire.alerts.detect import DetectorConfig, Spike, detect
from moodwire.alerts.publish import AlertPublisher
from moodwire.alerts.store import insert_spike
from moodwire.db.engine import make_engine
from moodwire.logs import get_logger
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.status import serving_model_version

log = get_logger(__name__)


class AlertsError(RuntimeError):
    """Detection cannot run (no model to name the aggregates); one line says why."""


@dataclass
class PassReport:
    model_version: str
    watermark: int | None = None  # epoch second of the newest event minute, None: no data
    windows: int = 0
    spikes: list[Spike] = field(default_factory=list)
    new_alerts: list[dict[str, Any]] = field(default_factory=list)


class AlertRunner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.config = DetectorConfig.from_settings(settings)
        self._engine = make_engine(settings, pool_size=1, max_overflow=0)
        self._redis = connect(settings)
        self._publisher = AlertPublisher(settings)
        self._last_version: str | None = None

    def close(self) -> None:
        self._publisher.close()
        self._redis.close()
        self._engine.dispose()

    def _serving_version(self) -> str:
        """The serving model's version, read each pass so a new model is followed. A model
        being replaced can be unreadable for a moment: then the last version read stands;
        with none read yet there is nothing to judge, which is an error."""
        version = serving_model_version(self._settings.model_path)
        if version is None:
            if self._last_version is None:
                raise AlertsError(f"no readable model at {self._settings.model_path}")
            log.warning(
                "model unreadable; judging the last version read",
                extra={"model_path": str(self._settings.model_path), "version": self._last_version},
            )
            return self._last_version
        self._last_version = version
        return version

    def run_once(self, *, now: float | None = None) -> PassReport:
        version = self._serving_version()
        report = PassReport(model_version=version)
        report.watermark = series.newest_minute(self._redis, version, now=now)
        if report.watermark is None:
            return report
        start, end = self.config.span(report.watermark)
        minutes = series.read_minutes(self._redis, version, start, end)
        report.windows = len(self.config.closed_windows(report.watermark))
        report.spikes = detect(minutes, report.watermark, self.config)
        for spike in report.spikes:
            with self._engine.begin() as conn:
                alert = insert_spike(conn, spike, version, self.config)
                if alert is not None:
                    self._publisher.publish(alert)
            if alert is not None:
                report.new_alerts.append(alert)
                log.warning(
                    "negative spike",
                    extra={
                        "brand": spike.brand,
                        "window_start": alert["window_start"],
                        "posts": spike.posts,
                        "negative_share": round(spike.negative_share, 3),
                        "baseline_share": round(spike.baseline_share, 3),
                    },
                )
        return report

    def run(
        self, stop: threading.Event, on_alert: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Detect every ``alert_interval`` seconds until ``stop`` is set; errors are logged
        and retried next pass, so a server restart does not end the loop."""
        while not stop.is_set():
            try:
                report = self.run_once()
                for alert in report.new_alerts:
                    if on_alert is not None:
                        on_alert(alert)
            except AlertsError:
                raise
            except Exception as exc:
                log.warning("alert pass failed; retrying", extra={"error": repr(exc)[:300]})
            stop.wait(self._settings.alert_interval)
