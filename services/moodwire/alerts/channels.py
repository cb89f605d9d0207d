"""Channels: send one alert message to Slack, a signed webhook or e-mail, or say why not.

Every send carries the delivery's id, the same on every retry of it, so a receiver that
keeps the ids it has seen drops repeats: the webhook's ``webhook-id`` (and
``Idempotency-Key``) header, the e-mail's ``Message-ID``. Slack's incoming webhooks keep
no ids: a retry after a lost answer can post twice (README, alerts, "exactly once").

Webhook signature (Standard Webhooks, https://www.standardwebhooks.com/): headers
``webhook-id`` (the delivery id), ``webhook-timestamp`` (Unix seconds of this attempt)
and ``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``, where
the key is the base64-decoded part after ``whsec_`` for a ``whsec_...`` secret, else the
secret's UTF-8 bytes. ``moodwire ingest webhook://`` verifies exactly this.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import httpx
import orjson

from moodwire import __version__
from moodwire.alerts.rules import (
    Channel,
    EmailChannel,
    SecretMissing,
    SlackChannel,
    WebhookChannel,
    secret,
)
from moodwire.logs import get_logger

log = get_logger(__name__)

USER_AGENT = f"moodwire-alerts/{__version__}"
_STANDARD_PREFIX = "whsec_"


class DeliveryError(Exception):
    """One attempt failed. ``permanent``: retrying the same message cannot help (the
    receiver refused it); ``retry_after``: the receiver asked for that long a pause."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Message:
    delivery_id: str
    alert: dict[str, Any]
    display: str  # the brand's human name
    test: bool = False

    @property
    def subject(self) -> str:
        prefix = "[moodwire test] " if self.test else "[moodwire] "
        return prefix + headline(self.alert, self.display)

    @property
    def text(self) -> str:
        lines = [headline(self.alert, self.display)]
        if self.test:
            lines.append("This is a test message from `moodwire alerts test`; nothing happened.")
        start, end = self.alert.get("window_start"), self.alert.get("window_end")
        if start and end:
            lines.append(f"Window: {_minute(start)} to {_minute(end)} UTC (event time)")
        if self.alert.get("id") is not None:
            lines.append(f"Alert id {self.alert['id']}: `moodwire alerts ack {self.alert['id']}`")
        lines.append(f"Delivery id: {self.delivery_id}")
        return "\n".join(lines)

    def json_body(self) -> bytes:
        return orjson.dumps(
            {
                "type": "moodwire.alert.test" if self.test else "moodwire.alert",
                "delivery_id": self.delivery_id,
                "text": self.text,
                "alert": self.alert,
            }
        )


def _minute(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def headline(alert: dict[str, Any], display: str) -> str:
    kind = str(alert.get("kind", "alert"))
    posts = alert.get("posts")
    share, base = alert.get("negative_share"), alert.get("baseline_share")
    if "volume" in kind:
        return (
            f"{display}: mention volume surge, {posts:,} posts" if posts else f"{display}: {kind}"
        )
    if isinstance(share, int | float):
        tail = f" (baseline {base:.0%})" if isinstance(base, int | float) else ""
        return f"{display}: {share:.0%} negative of {posts:,} posts{tail}"
    return f"{display}: {kind.replace('_', ' ')}"


class Sender(Protocol):
    def send(self, message: Message) -> None: ...


def sender_for(channel: Channel, timeout: float) -> Sender:
    if isinstance(channel, SlackChannel):
        return SlackSender(channel, timeout)
    if isinstance(channel, WebhookChannel):
        return WebhookSender(channel, timeout)
    return EmailSender(channel, timeout)


def _secret(variable: str | None) -> str | None:
    try:
        return secret(variable)
    except SecretMissing as exc:
        # Retried: the variable may be set once the service is restarted with it.
        raise DeliveryError(str(exc)) from None


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, what: str) -> None:
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}"[:300]) from None
    if 200 <= response.status_code < 300:
        return
    detail = response.text.strip().splitlines()[0][:120] if response.text.strip() else ""
    message = f"{what} answered {response.status_code} {detail}".strip()
    retry_after = _retry_after(response.headers.get("retry-after"))
    # 408 and 429 are "later"; any other 4xx refuses this message for good.
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    raise DeliveryError(message, permanent=permanent, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class SlackSender:
    """A Slack incoming webhook: ``{"text": ...}`` to the URL from the environment."""

    def __init__(self, channel: SlackChannel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    def send(self, message: Message) -> None:
        url = _secret(self.channel.url_env)
        assert url is not None
        body = orjson.dumps({"text": message.text})
        # Slack ignores the header (it keeps no delivery ids); it helps a proxy or a test.
        headers = {"X-Moodwire-Delivery-Id": message.delivery_id}
        _post(url, body, headers, self.timeout, f"slack {self.channel.name}")


def sign(secret_value: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (Standard Webhooks v1)."""
    if secret_value.startswith(_STANDARD_PREFIX):
        key = base64.b64decode(secret_value[len(_STANDARD_PREFIX) :])
    else:
        key = secret_value.encode()
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSender:
    """A JSON POST, signed when the channel names a secret."""

    def __init__(self, channel: WebhookChannel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    def send(self, message: Message) -> None:
        url = self.channel.url or _secret(self.channel.url_env)
        assert url is not None
        body = message.json_body()
        stamp = int(time.time())
        headers = {
            "webhook-id": message.delivery_id,
            "webhook-timestamp": str(stamp),
            "Idempotency-Key": message.delivery_id,
        }
        key = _secret(self.channel.secret_env)
        if key is not None:
            headers["webhook-signature"] = sign(key, message.delivery_id, stamp, body)
        _post(url, body, headers, self.timeout, f"webhook {self.channel.name}")


class EmailSender:
    """SMTP: plain, STARTTLS or implicit TLS, with login when a username is given."""

    def __init__(self, channel: EmailChannel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.channel.sender
        mail["To"] = ", ".join(self.channel.to)
        mail["Date"] = format_datetime(datetime.now(UTC))
        # The same on every retry: mail clients and archives can fold repeats into one.
        mail["Message-ID"] = f"<{message.delivery_id}@moodwire.alerts>"
        mail["X-Moodwire-Delivery-Id"] = message.delivery_id
        mail.set_content(message.text)
        return mail

    def _context(self) -> ssl.SSLContext:
        cafile = str(self.channel.ca_file) if self.channel.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    def send(self, message: Message) -> None:
        ch = self.channel
        what = f"email {ch.name} ({ch.host}:{ch.port})"
        password = _secret(ch.password_env)
        mail = self.build(message)
        try:
            smtp: smtplib.SMTP
            if ch.tls == "ssl":
                smtp = smtplib.SMTP_SSL(
                    ch.host, ch.port, timeout=self.timeout, context=self._context()
                )
            else:
                smtp = smtplib.SMTP(ch.host, ch.port, timeout=self.timeout)
            with smtp:
                if ch.tls == "starttls":
                    smtp.starttls(context=self._context())
                if ch.username:
                    smtp.login(ch.username, password or "")
                refused = smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"{what}: every recipient refused ({codes})",
                permanent=all(c >= 500 for c in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                f"{what}: {exc.smtp_code} {text}"[:300], permanent=exc.smtp_code >= 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}"[:300]) from None
        if refused:
            # Some recipients took it: the message went out; say who did not get it.
            log.warning(
                "some recipients refused the alert",
                extra={"channel": ch.name, "refused": ", ".join(sorted(refused))},
            )
