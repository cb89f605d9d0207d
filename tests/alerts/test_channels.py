"""Each channel against a real local server: an HTTP receiver (Slack, webhook) and
aiosmtpd (e-mail, plain and STARTTLS with login)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from moodwire.alerts.channels import (
    DeliveryError,
    EmailSender,
    Message,
    SlackSender,
    WebhookSender,
    sign,
)
from moodwire.alerts.rules import EmailChannel, SlackChannel, WebhookChannel
from moodwire.stack.ports import free_port
from support.alert_receivers import (
    HttpReceiver,
    Mailbox,
    self_signed_cert,
    start_http_receiver,
    start_smtp,
)

ALERT = {
    "id": 7,
    "kind": "negative_shift",
    "brand": "apple",
    "window_start": "2026-01-01T01:20:00+00:00",
    "window_end": "2026-01-01T01:22:00+00:00",
    "posts": 160,
    "negative_share": 0.45,
    "baseline_share": 0.2,
}


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = start_http_receiver()
    yield receiver
    receiver.released.set()
    receiver.server.shutdown()
    receiver.server.server_close()


def test_slack_posts_text_to_the_url_from_the_environment(
    http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SLACK_URL", http.url)
    SlackSender(SlackChannel("ops", "TEST_SLACK_URL"), 5).send(Message("d-1", ALERT, "Apple"))
    [request] = http.requests
    body = orjson.loads(request.body)
    assert set(body) == {"text"}
    assert body["text"].startswith("Apple: 45% negative of 160 posts (baseline 20%)")
    assert "moodwire alerts ack 7" in body["text"] and "d-1" in body["text"]
    assert request.headers["content-type"] == "application/json"


def test_missing_secret_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SLACK_URL", raising=False)
    with pytest.raises(DeliveryError, match="TEST_SLACK_URL is not set") as err:
        SlackSender(SlackChannel("ops", "TEST_SLACK_URL"), 5).send(Message("d", ALERT, "A"))
    assert not err.value.permanent


@pytest.mark.parametrize("secret", ["s3cret", "whsec_" + base64.b64encode(b"k" * 24).decode()])
def test_webhook_is_signed_the_documented_way(
    http: HttpReceiver, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", secret)
    channel = WebhookChannel("hook", http.url, None, "TEST_HOOK_SECRET")
    WebhookSender(channel, 5).send(Message("d-42", ALERT, "Apple"))
    [request] = http.requests
    h = request.headers
    assert h["webhook-id"] == h["idempotency-key"] == "d-42"
    # The scheme as the README states it, computed here independently.
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    signed = b"d-42." + h["webhook-timestamp"].encode() + b"." + request.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == expected
    body = orjson.loads(request.body)
    assert body["type"] == "moodwire.alert" and body["delivery_id"] == "d-42"
    assert body["alert"] == ALERT


def test_webhook_signature_passes_moodwires_own_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver of `moodwire ingest webhook://` accepts what the alert channel signs."""
    from urllib.parse import urlsplit

    from moodwire.connectors.webhook import WebhookConnector

    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
    monkeypatch.setenv("MOODWIRE_WEBHOOK_SECRET", secret)
    connector = WebhookConnector(urlsplit(f"webhook://127.0.0.1:{free_port()}"), {})
    body = Message("d-9", ALERT, "Apple").json_body()
    import time

    stamp = int(time.time())
    headers = {
        "webhook-id": "d-9",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, "d-9", stamp, body),
    }
    connector.verify(headers, body)  # raises on a bad signature
    headers["webhook-signature"] = sign(secret, "d-9", stamp, body + b" ")
    with pytest.raises(Exception, match="bad webhook-signature"):
        connector.verify(headers, body)


@pytest.mark.parametrize(
    ("status", "permanent", "retry_after"),
    [(400, True, None), (404, True, None), (410, True, None), (429, False, 7.0),
     (500, False, None), (503, False, 7.0)],
)  # fmt: skip
def test_http_errors_say_whether_a_retry_can_help(
    http: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    permanent: bool,
    retry_after: float | None,
) -> None:
    monkeypatch.setenv("TEST_SLACK_URL", http.url)
    http.answers = [status]
    http.retry_after = "7"
    with pytest.raises(DeliveryError, match=f"answered {status}") as err:
        SlackSender(SlackChannel("ops", "TEST_SLACK_URL"), 5).send(Message("d", ALERT, "A"))
    assert err.value.permanent is permanent and err.value.retry_after == retry_after


def test_unreachable_receiver_is_retryable() -> None:
    channel = WebhookChannel("hook", f"http://127.0.0.1:{free_port()}/x", None, None)
    with pytest.raises(DeliveryError, match="ConnectError") as err:
        WebhookSender(channel, 2).send(Message("d", ALERT, "A"))
    assert not err.value.permanent


def _email(port: int, **kwargs: object) -> EmailChannel:
    fields: dict[str, object] = dict(
        name="mail", host="127.0.0.1", port=port, tls="none",
        sender="moodwire@example.com", to=("a@example.com", "b@example.com"),
    )  # fmt: skip
    fields.update(kwargs)
    return EmailChannel(**fields)  # type: ignore[arg-type]


def test_email_over_plain_smtp_carries_the_delivery_id() -> None:
    box: Mailbox = start_smtp(free_port())
    try:
        EmailSender(_email(box.port), 5).send(Message("d-77", ALERT, "Apple"))
    finally:
        box.controller.stop()
    [mail] = box.messages
    assert mail["Message-ID"] == "<d-77@moodwire.alerts>"
    assert mail["X-Moodwire-Delivery-Id"] == "d-77"
    assert mail["Subject"] == "[moodwire] Apple: 45% negative of 160 posts (baseline 20%)"
    assert box.envelopes == [("moodwire@example.com", ["a@example.com", "b@example.com"])]
    assert "moodwire alerts ack 7" in mail.get_payload()


def test_email_with_starttls_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = start_smtp(free_port(), tls_context=context, logins={"bot": "pw-from-env"})
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pw-from-env")
    try:
        channel = _email(
            box.port, tls="starttls", username="bot", password_env="TEST_SMTP_PASSWORD",
            ca_file=cert,
        )  # fmt: skip
        EmailSender(channel, 5).send(Message("d-tls", ALERT, "Apple"))
        assert box.message_ids() == ["<d-tls@moodwire.alerts>"]
        # A wrong password is refused by the server: a clear, permanent error.
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
        with pytest.raises(DeliveryError, match="535") as err:
            EmailSender(channel, 5).send(Message("d-bad", ALERT, "Apple"))
        assert err.value.permanent
        # Without the CA the server's certificate is not trusted: no mail, no password sent.
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            EmailSender(_email(box.port, tls="starttls"), 5).send(Message("x", ALERT, "A"))
    finally:
        box.controller.stop()
    assert box.message_ids() == ["<d-tls@moodwire.alerts>"]


def test_email_server_down_is_retryable() -> None:
    with pytest.raises(DeliveryError, match="ConnectionRefused") as err:
        EmailSender(_email(free_port()), 2).send(Message("d", ALERT, "A"))
    assert not err.value.permanent
