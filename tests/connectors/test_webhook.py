"""webhook:// runs a real HTTP receiver: signatures (GitHub, Standard Webhooks), JSON and
JSON Lines bodies, answers only after the broker's acknowledgement, limits, invalid posts
as dead letters, duplicate deliveries, and refusing to run unsigned off loopback.

A tiny "ingest loop" thread drives the connector as the real one does: it iterates
records() and calls acknowledge(ticket, error) for every record that carried a ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from moodwire.connectors import ConnectorError, RawRecord, open_connector
from moodwire.connectors.kit import webhook_send
from moodwire.connectors.registry import register, unregister
from moodwire.connectors.webhook import WebhookConnector
from moodwire.ingest import to_post
from moodwire.records import InvalidRecord, Post
from moodwire.settings import get_settings

GITHUB_SECRET = "It's a Secret to Everybody"
STANDARD_KEY = b"moodwire-test-key-0123456789abcdef"
STANDARD_SECRET = "whsec_" + base64.b64encode(STANDARD_KEY).decode()


def _post(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(n),
        "source": "hooks",
        "text": f"post {n} about @apple",
        "created_at": "2024-05-01T10:00:00Z",
        **extra,
    }


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    register("webhook", WebhookConnector)
    yield
    unregister("webhook")


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    def use(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("MOODWIRE_WEBHOOK_SECRET", raising=False)
        else:
            monkeypatch.setenv("MOODWIRE_WEBHOOK_SECRET", value)
        get_settings.cache_clear()

    use(None)
    yield use
    monkeypatch.delenv("MOODWIRE_WEBHOOK_SECRET", raising=False)
    get_settings.cache_clear()


class Loop:
    """The ingest loop's side of the contract: read records, acknowledge their tickets.

    ``auto`` acknowledges at once (with ``error``, None for success); otherwise the test
    calls :meth:`ack_all` when it decides the broker "has" them.
    """

    def __init__(self, connector: WebhookConnector, *, auto: bool = True) -> None:
        self.connector = connector
        self.auto = auto
        self.error: str | None = None
        self.records: list[RawRecord] = []
        self._pending: list[RawRecord] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for record in self.connector.records():
            assert isinstance(record, RawRecord)
            with self._lock:
                self.records.append(record)
                if self.auto:
                    self.connector.acknowledge(record.ticket, self.error)
                else:
                    self._pending.append(record)

    def ack_all(self, error: str | None = None) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for record in pending:
            self.connector.acknowledge(record.ticket, error)

    def stop(self) -> None:
        self.connector.stop()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver(secret: Callable[[str | None], None]) -> Iterator[Callable[..., WebhookConnector]]:
    opened: list[WebhookConnector] = []

    def start(secret_value: str | None = None, **options: str) -> WebhookConnector:
        secret(secret_value)
        query = {"ack_timeout": "5"}
        if secret_value is None:
            query["insecure"] = "1"
        query.update(options)
        connector = open_connector("webhook://127.0.0.1:0", query)
        assert isinstance(connector, WebhookConnector)
        opened.append(connector)
        return connector

    yield start
    for connector in opened:
        connector.close()


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def _send(
    connector: WebhookConnector,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    content_type: str = "application/json",
    path: str = "/",
) -> httpx.Response:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    return httpx.post(connector.base_url + path, content=body, headers=all_headers, timeout=10)


def _github(body: bytes, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


def _standard(body: bytes, msg_id: str, stamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    signed = f"{msg_id}.{ts}.".encode() + body
    sig = base64.b64encode(hmac.new(STANDARD_KEY, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"}


def _validate(record: RawRecord) -> Post | str:
    try:
        post = to_post(record, max_text_chars=20_000)
    except InvalidRecord as exc:
        return exc.reason
    assert isinstance(post, Post)
    return post


# --- signatures ---------------------------------------------------------------------------


def test_github_signature_vector(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver(GITHUB_SECRET)
    body = b"Hello, World!"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert _github(body)["X-Hub-Signature-256"] == f"sha256={expected}"
    connector.verify({"x-hub-signature-256": f"sha256={expected}"}, body)  # no exception
    loop = Loop(connector)
    try:
        # The vector's body is not a post: authenticated, then refused as invalid.
        response = _send(connector, body, _github(body))
        assert response.status_code == 400
        assert response.json()["invalid"][0]["reason"].startswith("malformed JSON")
        _wait(lambda: len(loop.records) == 1)
        assert loop.records[0].payload == body and loop.records[0].error is not None
    finally:
        loop.stop()


def test_github_post_accepted_and_bad_signature_refused(
    receiver: Callable[..., WebhookConnector],
) -> None:
    connector = receiver(GITHUB_SECRET)
    loop = Loop(connector)
    try:
        body = orjson.dumps(_post(1))
        headers = {**_github(body), "X-GitHub-Delivery": "gh-1"}
        response = _send(connector, body, headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 1, "delivery": "gh-1"}
        assert [r.origin for r in loop.records] == [f"webhook://{connector.address}#gh-1:1"]
        post = _validate(loop.records[0])
        assert isinstance(post, Post) and post.id == "1" and post.source == "hooks"
        assert loop.records[0].fields is None and loop.records[0].payload == body

        other = orjson.dumps(_post(2))
        for bad in ({}, _github(other, "wrong secret"), _github(body)):
            response = _send(connector, other, bad)
            assert response.status_code == 401
            assert "error" in response.json() and "Traceback" not in response.text
        assert len(loop.records) == 1  # nothing unsigned was queued
    finally:
        loop.stop()


def test_standard_webhooks_signatures(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver(STANDARD_SECRET)
    loop = Loop(connector)
    try:
        body = orjson.dumps(_post(1))
        response = _send(connector, body, _standard(body, "msg_1"))
        assert response.status_code == 200, response.text
        assert response.json()["delivery"] == "msg_1"

        # One of several space-separated signatures may match (key rotation).
        headers = _standard(body, "msg_2")
        headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
        assert _send(connector, body, headers).status_code == 200

        tampered = _standard(body, "msg_3")
        assert _send(connector, body + b" ", tampered).status_code == 401
        wrong_id = {**_standard(body, "msg_4"), "webhook-id": "msg_5"}
        assert _send(connector, body, wrong_id).status_code == 401
        stale = _standard(body, "msg_6", stamp=int(time.time()) - 600)
        response = _send(connector, body, stale)
        assert response.status_code == 401 and "timestamp" in response.json()["error"]
        future = _standard(body, "msg_7", stamp=int(time.time()) + 600)
        assert _send(connector, body, future).status_code == 401
        github_style = _send(connector, body, _github(body, STANDARD_SECRET))
        assert github_style.status_code == 401
        assert len(loop.records) == 2
    finally:
        loop.stop()


# --- bodies and acknowledgements ----------------------------------------------------------


def test_json_lines_body(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    loop = Loop(connector)
    try:
        lines = [orjson.dumps(_post(n)) for n in range(1, 4)]
        body = lines[0] + b"\r\n\n" + lines[1] + b"\n" + lines[2]
        for content_type in ("application/x-ndjson", "application/jsonl; charset=utf-8"):
            delivery = f"req-{content_type[:16]}"
            response = _send(
                connector,
                body,
                {"X-Request-Id": delivery},
                content_type=content_type,
                path="/posts",
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": 3, "delivery": delivery}
        assert len(loop.records) == 6
        assert [r.payload for r in loop.records[:3]] == lines
        assert [r.origin.rsplit(":", 1)[1] for r in loop.records[:3]] == ["1", "2", "3"]
        assert {_validate(r).id for r in loop.records} == {"1", "2", "3"}  # type: ignore[union-attr]

        # A JSON array is a batch as well; an unknown media type is refused unread.
        array = orjson.dumps([_post(7), _post(8)])
        assert _send(connector, array).json()["accepted"] == 2
        assert _send(connector, body, content_type="text/plain").status_code == 415
        assert len(loop.records) == 8
    finally:
        loop.stop()


def test_answer_only_after_acknowledge(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    loop = Loop(connector, auto=False)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        body = orjson.dumps(_post(1))
        answer: Future[httpx.Response] = pool.submit(_send, connector, body)
        _wait(lambda: len(loop.records) == 1)
        # The post is queued, the "broker" has not acknowledged it: no answer yet.
        with pytest.raises(TimeoutError):
            answer.result(timeout=0.3)
        assert not answer.done()
        loop.ack_all()
        response = answer.result(timeout=5)
        assert response.status_code == 200 and response.json()["accepted"] == 1
    finally:
        loop.ack_all()
        loop.stop()
        pool.shutdown(wait=False)


def test_failed_acknowledge_is_503(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    loop = Loop(connector)
    loop.error = "KafkaException"
    try:
        body = orjson.dumps(_post(1))
        response = _send(connector, body, {"X-Request-Id": "r1"})
        assert response.status_code == 503
        assert "KafkaException" in response.json()["error"]
        assert response.headers["Retry-After"]
        # A failed delivery is not remembered: the sender's retry goes through.
        loop.error = None
        response = _send(connector, body, {"X-Request-Id": "r1"})
        assert response.status_code == 200 and response.json()["accepted"] == 1
        assert len(loop.records) == 2
    finally:
        loop.stop()


def test_ack_timeout_is_503(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver(ack_timeout="0.3")
    loop = Loop(connector, auto=False)
    try:
        response = _send(connector, orjson.dumps(_post(1)))
        assert response.status_code == 503 and "did not confirm" in response.json()["error"]
    finally:
        loop.ack_all()
        loop.stop()


def test_too_large_body_is_413(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver(max_body="100")
    loop = Loop(connector)
    try:
        body = orjson.dumps(_post(1, text="x" * 200))
        response = _send(connector, body)
        assert response.status_code == 413 and "limit of 100" in response.json()["error"]
        assert loop.records == []
        assert httpx.get(connector.base_url + "/healthz").status_code == 200
    finally:
        loop.stop()


def test_invalid_post_dead_letter_and_valid_sibling_sent(
    receiver: Callable[..., WebhookConnector],
) -> None:
    connector = receiver()
    loop = Loop(connector)
    try:
        bad = orjson.dumps({"id": "2", "source": "hooks", "text": "no time"})
        body = b"\n".join([orjson.dumps(_post(1)), bad, b"{not json"])
        response = _send(connector, body, content_type="application/x-ndjson")
        assert response.status_code == 400
        answer = response.json()
        assert answer["accepted"] == 1
        assert [i["line"] for i in answer["invalid"]] == [2, 3]
        assert "created_at" in answer["invalid"][0]["reason"]
        assert answer["invalid"][1]["reason"].startswith("malformed JSON")
        assert len(loop.records) == 3
        good, dead, broken = (_validate(r) for r in loop.records)
        assert isinstance(good, Post) and good.id == "1"
        assert dead == answer["invalid"][0]["reason"] and loop.records[1].payload == bad
        assert isinstance(broken, str) and loop.records[2].payload == b"{not json"

        # A single malformed JSON object: 400 with the reason, kept as a dead letter.
        response = _send(connector, b'{"id": ')
        assert response.status_code == 400
        assert response.json()["invalid"][0]["reason"].startswith("malformed JSON")
        assert response.json()["accepted"] == 0
    finally:
        loop.stop()


def test_replayed_delivery_is_duplicate(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver(STANDARD_SECRET)
    loop = Loop(connector, auto=False)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        body = orjson.dumps(_post(1))
        headers = _standard(body, "msg_dup")
        first = pool.submit(_send, connector, body, headers)
        _wait(lambda: len(loop.records) == 1)
        # The same delivery while the first is in flight waits for its outcome.
        second = pool.submit(_send, connector, body, headers)
        with pytest.raises(TimeoutError):
            second.result(timeout=0.3)
        loop.ack_all()
        assert first.result(timeout=5).json() == {"accepted": 1, "delivery": "msg_dup"}
        assert second.result(timeout=5).json() == {"duplicate": True, "delivery": "msg_dup"}
        third = _send(connector, body, headers)
        assert third.status_code == 200 and third.json()["duplicate"] is True
        assert len(loop.records) == 1

    finally:
        loop.ack_all()
        loop.stop()
        pool.shutdown(wait=False)


def test_body_hash_is_the_delivery_id(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    loop = Loop(connector)
    try:
        body = orjson.dumps(_post(1))
        first = _send(connector, body).json()
        assert first["delivery"] == "sha256-" + hashlib.sha256(body).hexdigest()
        assert _send(connector, body).json()["duplicate"] is True
        assert len(loop.records) == 1
    finally:
        loop.stop()


def test_close_answers_waiting_senders(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    loop = Loop(connector, auto=False)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        answer = pool.submit(_send, connector, orjson.dumps(_post(1)))
        _wait(lambda: len(loop.records) == 1)
        connector.close()
        response = answer.result(timeout=5)
        assert response.status_code == 503 and "shutting down" in response.json()["error"]
    finally:
        loop.stop()
        pool.shutdown(wait=False)


# --- refusing to start --------------------------------------------------------------------


def test_refuses_to_start_unsafely(secret: Callable[[str | None], None]) -> None:
    secret(None)
    with pytest.raises(ConnectorError, match="MOODWIRE_WEBHOOK_SECRET"):
        open_connector("webhook://0.0.0.0:0?insecure=1")
    with pytest.raises(ConnectorError, match="MOODWIRE_WEBHOOK_SECRET"):
        open_connector("webhook://127.0.0.1:0")
    with pytest.raises(ConnectorError, match="does not know option"):
        open_connector("webhook://127.0.0.1:0?insecure=1&ack_timout=3")
    secret("whsec_not base64!")
    with pytest.raises(ConnectorError, match="base64"):
        open_connector("webhook://127.0.0.1:0")
    # A secret without insecure=1 is enough on loopback (off loopback too, not bound here).
    secret(GITHUB_SECRET)
    connector = open_connector("webhook://127.0.0.1:0")
    try:
        assert isinstance(connector, WebhookConnector) and connector.signature_scheme == "github"
    finally:
        connector.close()


def test_port_in_use_is_a_connector_error(receiver: Callable[..., WebhookConnector]) -> None:
    connector = receiver()
    with pytest.raises(ConnectorError, match="cannot listen"):
        open_connector(f"webhook://127.0.0.1:{connector.port}?insecure=1")


# --- the sender helper (README) -----------------------------------------------------------


@pytest.mark.parametrize("secret_value", [GITHUB_SECRET, STANDARD_SECRET, None])
def test_sender_helper(
    receiver: Callable[..., WebhookConnector],
    secret_value: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    connector = receiver(secret_value)
    loop = Loop(connector)
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(_post(n)) for n in range(5)) + b"\n\n")
    argv = [connector.base_url, str(path), "--batch", "2"]
    if secret_value is not None:
        monkeypatch.setenv("HOOK_SECRET", secret_value)
        argv += ["--secret-env", "HOOK_SECRET"]
    try:
        assert webhook_send.main(argv) == 0
        assert capsys.readouterr().out.count("200 ") == 3
        assert sorted(_validate(r).id for r in loop.records) == [  # type: ignore[union-attr]
            "0",
            "1",
            "2",
            "3",
            "4",
        ]
    finally:
        loop.stop()
