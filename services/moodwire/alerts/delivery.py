"""Delivering the outbox: one sender thread per channel, so a channel that is down or slow
never holds up another.

An attempt is: claim the row (its own committed transaction: the attempt is counted and
leased before anything leaves), send with the channel's timeout, then record the outcome
in a second transaction. A crash before the send leaves a leased row nobody sent: it is
claimed again once the lease runs out. A crash after the receiver took the message but
before ``sent`` is committed re-sends it with the same delivery id: that is the one window
where only a receiver that drops repeated ids makes it exactly once (README, alerts).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from moodwire import metrics
from moodwire.alerts import outbox
from moodwire.alerts.channels import DeliveryError, Message, Sender, sender_for
from moodwire.alerts.rules import AlertRules
from moodwire.faults import fault_point
from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)
# A lease outlives the attempt's timeout (which bounds each network step of the attempt),
# so a slow but live sender is not overtaken by another process.
LEASE_FACTOR = 3.0


def fault(settings: Settings, point: str) -> None:
    """FAULT INJECTION (tests): die like ``kill -9`` at ``point``, no cleanup at all."""
    fault_point(settings.alert_fault_crash, point, "alerts process")


def display_names(settings: Settings) -> dict[str, str]:
    from moodwire.brands import BrandMatcher, BrandsFileError

    try:
        return BrandMatcher.from_settings(settings).display_names
    except BrandsFileError:
        return {}


class Deliverer:
    """Sends what the outbox holds for each channel of the rules."""

    def __init__(
        self,
        settings: Settings,
        rules: AlertRules,
        engine: Engine | None,
        senders: dict[str, Sender] | None = None,
    ) -> None:
        self._settings = settings
        self.rules = rules
        self._engine = engine
        timeout = settings.alert_delivery_timeout
        self._senders = senders or {
            name: sender_for(channel, timeout) for name, channel in rules.channels.items()
        }
        self._names = display_names(settings)

    def message(self, delivery_id: str, alert: dict[str, Any], *, test: bool = False) -> Message:
        brand = str(alert.get("brand", ""))
        return Message(delivery_id, alert, self._names.get(brand, brand), test=test)

    def deliver_one(self, channel: str) -> str | None:
        """One attempt at the channel's most overdue row: its outcome, None if none due."""
        settings = self._settings
        lease = settings.alert_delivery_timeout * LEASE_FACTOR
        assert self._engine is not None, "delivering the outbox needs the database"
        with self._engine.begin() as conn:
            claimed = outbox.claim(conn, channel, lease)
        if claimed is None:
            return None
        if claimed.resumed:
            log.warning(
                "re-sending a delivery whose sender died mid-attempt (same delivery id)",
                extra={
                    "channel": channel,
                    "alert_id": claimed.alert_id,
                    "delivery_id": claimed.delivery_id,
                },
            )
        fault(settings, "after_claim")
        sender = self._senders.get(channel)
        try:
            if sender is None:
                raise DeliveryError(f"channel {channel!r} is not in the rules any more")
            sender.send(self.message(claimed.delivery_id, claimed.alert))
        except DeliveryError as exc:
            return self._failed(claimed, exc)
        except Exception as exc:  # a bug in a sender must not stop the others
            return self._failed(claimed, DeliveryError(f"{type(exc).__name__}: {exc}"))
        fault(settings, "after_send")
        assert self._engine is not None
        with self._engine.begin() as conn:
            outbox.mark_sent(conn, claimed.id)
        metrics.ALERTS_DELIVERED.labels(channel).inc()
        log.info(
            "alert delivered",
            extra={
                "channel": channel,
                "alert_id": claimed.alert_id,
                "delivery_id": claimed.delivery_id,
                "attempts": claimed.attempts,
            },
        )
        return outbox.SENT

    def _failed(self, claimed: outbox.Claimed, exc: DeliveryError) -> str:
        settings = self._settings
        give_up = exc.permanent or claimed.attempts >= settings.alert_max_attempts
        retry_in = outbox.backoff_s(
            claimed.attempts, settings.alert_retry_initial, settings.alert_retry_max
        )
        if exc.retry_after is not None:
            retry_in = max(retry_in, exc.retry_after)
        assert self._engine is not None
        with self._engine.begin() as conn:
            status = outbox.mark_failed(conn, claimed, str(exc), give_up=give_up, retry_in=retry_in)
        log.warning(
            "alert delivery failed" + ("; giving up" if give_up else "; will retry"),
            extra={
                "channel": claimed.channel,
                "alert_id": claimed.alert_id,
                "delivery_id": claimed.delivery_id,
                "attempts": claimed.attempts,
                "error": str(exc)[:300],
                "retry_in_s": None if give_up else round(retry_in, 1),
            },
        )
        return status

    def drain(self, channel: str, stop: threading.Event | None = None) -> int:
        """Attempt every row of the channel that is due now; returns how many."""
        done = 0
        while stop is None or not stop.is_set():
            if self.deliver_one(channel) is None:
                break
            done += 1
        return done

    def drain_all(self) -> int:
        """Every due row of every channel, one channel after the other (for `--once`)."""
        return sum(self.drain(name) for name in self.rules.channels)

    def run(self, stop: threading.Event) -> list[threading.Thread]:
        """Start one sender thread per channel; they end once ``stop`` is set."""
        threads = [
            threading.Thread(
                target=self._loop, args=(name, stop), name=f"moodwire-deliver-{name}", daemon=True
            )
            for name in self.rules.channels
        ]
        for thread in threads:
            thread.start()
        return threads

    def _loop(self, channel: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.drain(channel, stop)
            except Exception as exc:  # Postgres down: log, wait, try again
                log.warning(
                    "delivery pass failed; retrying",
                    extra={"channel": channel, "error": repr(exc)[:300]},
                )
            stop.wait(self._settings.alert_delivery_interval)

    def send_test(self, channel: str, now: Callable[[], datetime] | None = None) -> str:
        """Send a test message straight to a channel (no outbox row); returns its delivery
        id, or raises DeliveryError / KeyError (no such channel)."""
        if channel not in self.rules.channels:
            raise KeyError(channel)
        at = (now or (lambda: datetime.now(UTC)))()
        delivery_id = f"test-{uuid.uuid4()}"
        alert = {
            "id": None,
            "kind": "test",
            "brand": "moodwire",
            "window_start": at.isoformat(),
            "window_end": at.isoformat(),
            "posts": 0,
        }
        self._senders[channel].send(self.message(delivery_id, alert, test=True))
        return delivery_id
