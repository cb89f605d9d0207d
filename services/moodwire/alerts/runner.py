"""One detection pass (``run_once``) and the loop of ``moodwire alerts`` (``run``).

A pass reads the serving model version's aggregates around the event-time watermark,
detects spikes, and for each one inserts the alert row and, only when the row is new,
publishes it; the publish happens inside the insert's transaction, so a failed publish
rolls the row back and the next pass tries again (an alert is never stored unannounced;
at worst it is announced twice if the commit itself fails). The same transaction writes
the alert's delivery outbox rows (``moodwire.alerts.outbox``), which sender threads
(``moodwire.alerts.delivery``) work off beside the detection loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moodwire import metrics
from moodwire.alerts import outbox, series
from moodwire.alerts.delivery import Deliverer, fault
from moodwire.alerts.detect import DetectorConfig, Spike, detect
from moodwire.alerts.publish import AlertPublisher
from moodwire.alerts.rules import AlertRules, detector_config
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
        self.rules = AlertRules.from_settings(settings)
        # One connection for detection, one per channel's sender thread.
        self._engine = make_engine(settings, pool_size=1 + len(self.rules.channels), max_overflow=1)
        self.deliverer = Deliverer(settings, self.rules, self._engine)
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
        # Brands whose rules override detection settings are judged with their own.
        groups: dict[Any, list[str]] = {}
        for brand in series.brands(self._redis, version):
            config = detector_config(self.config, self.rules.for_brand(brand))
            groups.setdefault(config, []).append(brand)
        spans = [c.span(report.watermark) for c in groups] or [self.config.span(report.watermark)]
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        minutes = series.read_minutes(self._redis, version, start, end)
        report.windows = len(self.config.closed_windows(report.watermark))
        configs: dict[str, Any] = {}
        for config, brands in groups.items():
            subset = {b: minutes.get(b, {}) for b in brands}
            report.spikes += detect(subset, report.watermark, config)
            configs.update(dict.fromkeys(brands, config))
        report.spikes.sort(key=lambda s: (s.window_start, s.brand))
        for spike in report.spikes:
            with self._engine.begin() as conn:
                alert = insert_spike(conn, spike, version, configs.get(spike.brand, self.config))
                if alert is not None:
                    outbox.enqueue(conn, alert, self.rules)
                    self._publisher.publish(alert)
                    metrics.ALERTS_DELIVERED.labels("kafka").inc()
            if alert is not None:
                fault(self._settings, "after_enqueue")
                metrics.ALERTS_RAISED.labels(spike.brand).inc()
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
        and retried next pass, so a server restart does not end the loop. The outbox's
        sender threads run alongside until ``stop``."""
        senders = self.deliverer.run(stop)
        try:
            self._detect_loop(stop, on_alert)
        finally:
            stop.set()
            for thread in senders:
                thread.join(timeout=self._settings.alert_delivery_timeout + 5)

    def _detect_loop(
        self, stop: threading.Event, on_alert: Callable[[dict[str, Any]], None] | None
    ) -> None:
        while not stop.is_set():
            try:
                with metrics.ALERT_RUN_SECONDS.time():
                    report = self.run_once()
                for alert in report.new_alerts:
                    if on_alert is not None:
                        on_alert(alert)
            except AlertsError:
                raise
            except Exception as exc:
                log.warning("alert pass failed; retrying", extra={"error": repr(exc)[:300]})
            stop.wait(self._settings.alert_interval)
