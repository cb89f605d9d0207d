"""``webhook://HOST:PORT``: posts pushed to an HTTP receiver, answered once Kafka has them.

``webhook://127.0.0.1:8090`` (the default address), ``webhook://0.0.0.0:8090``,
``webhook://127.0.0.1:8090?insecure=1``. Runs an HTTP server on HOST:PORT; ``POST /`` (or
``/posts``) takes one post.v1 JSON object (``application/json``; a JSON array of posts
works too) or JSON Lines (``application/x-ndjson``, ``application/jsonl``). ``GET /healthz``
answers 200. Options: ``ack_timeout`` (seconds a request waits for the broker, default 30,
then 503), ``max_body`` (bytes, default 5 MiB, else 413), ``timeout`` (seconds to read a
body, default 10), ``tolerance`` (seconds a Standard Webhooks timestamp may be off,
default 300), ``queue`` (records buffered for the ingest loop, default 1000),
``insecure=1`` (accept unsigned requests; loopback only).

Signatures use the secret ``MOODWIRE_WEBHOOK_SECRET``: a ``whsec_...`` secret means
Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), any other
GitHub style (``X-Hub-Signature-256: sha256=<hex>``); a missing or bad signature is 401
and nothing is queued. The delivery id (``webhook-id``, ``X-GitHub-Delivery``,
``X-Request-Id``, else the body's sha256) collapses retries: a delivery already taken is
answered ``200 {"duplicate": true}`` and not queued again.

The answer comes only after the broker acknowledged every post of the request: 200
``{"accepted": n, "delivery": id}``; 400 with the invalid lines and their reasons when
some posts are invalid (those become dead letters, the valid ones are still sent); 503
when a post could not be delivered in time (the sender retries; repeats collapse by key).
Records carry origin ``webhook://HOST:PORT#DELIVERY:LINE``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult

import orjson

from moodwire.connectors.base import Connector, ConnectorError, RawRecord
from moodwire.logs import get_logger
from moodwire.records import InvalidRecord, decode_record
from moodwire.settings import get_settings

log = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
POST_PATHS = ("/", "/posts")
JSON_TYPES = ("application/json",)
LINES_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
# Delivery ids remembered for duplicate detection (GitHub and Standard Webhooks senders
# retry for hours to days; 10k deliveries covers that at moderate rates, bounded memory).
SEEN_IDS = 10_000
# How long close() lets waiting requests write their 503 before dropping the sockets.
_CLOSE_GRACE_S = 2.0
_RETRY_AFTER_S = 5
_STANDARD_PREFIX = "whsec_"


class Delivery:
    """One request's records in flight: counts the broker's acknowledgements.

    Every record of the request carries this object as its ticket; ``done`` is set once
    all of them were acknowledged (or the receiver gave up on them), ``finished`` once the
    request was answered (a concurrent retry of the same delivery waits on it).
    """

    def __init__(self, delivery_id: str) -> None:
        self.id = delivery_id
        self._lock = threading.Lock()
        self.expected = 0
        self.acked = 0
        self.failures: list[str] = []
        self.done = threading.Event()
        self.finished = threading.Event()

    def expect(self, count: int) -> None:
        with self._lock:
            self.expected = count
            if self.acked >= self.expected:
                self.done.set()

    def acknowledge(self, error: str | None) -> None:
        with self._lock:
            self.acked += 1
            if error is not None:
                self.failures.append(error)
            if self.acked >= self.expected:
                self.done.set()

    def fail(self, reason: str) -> None:
        with self._lock:
            self.failures.append(reason)
        self.done.set()

    @property
    def ok(self) -> bool:
        with self._lock:
            return self.done.is_set() and not self.failures and self.acked >= self.expected


class _Refused(Exception):
    """An answer other than success, decided before any record was queued."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebhookConnector(Connector):
    resumable = False

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        self.check_options({"ack_timeout", "max_body", "timeout", "tolerance", "queue", "insecure"})
        self.ack_timeout = self.option_float("ack_timeout", 30.0, minimum=0.01)
        self.max_body = self.option_int("max_body", 5 * 1024 * 1024, minimum=1) or 1
        self.read_timeout = self.option_float("timeout", 10.0, minimum=0.01)
        self.tolerance = self.option_float("tolerance", 300.0, minimum=0.0)
        size = self.option_int("queue", 1000, minimum=1) or 1
        insecure = self.option_str("insecure", "0")
        if insecure not in ("0", "1", "true", "false"):
            raise ConnectorError(f"option insecure={insecure!r} must be 0 or 1")
        try:
            host = url.hostname or DEFAULT_HOST
            port = url.port if url.port is not None else DEFAULT_PORT
        except ValueError as exc:
            raise ConnectorError(f"webhook:// bad address {url.netloc!r}: {exc}") from None
        if url.path not in ("", "/"):
            raise ConnectorError(
                f"webhook:// takes HOST:PORT only (posts go to / or /posts), not {url.path!r}"
            )
        self.host = host
        self.max_text_chars = get_settings().max_text_chars
        self._secret, self._standard_key = _secret()
        if self._secret is None:
            if not _is_loopback(host):
                raise ConnectorError(
                    f"webhook:// on {host} (not loopback) needs a shared secret: set "
                    "MOODWIRE_WEBHOOK_SECRET (a GitHub-style secret or a Standard Webhooks "
                    "whsec_... key)"
                )
            if insecure not in ("1", "true"):
                raise ConnectorError(
                    "webhook:// has no secret: set MOODWIRE_WEBHOOK_SECRET, or add ?insecure=1 "
                    "to accept unsigned posts on a loopback address"
                )
        # None wakes records() at stop(); one slot above the bound keeps room for it.
        self._queue: queue.Queue[RawRecord | None] = queue.Queue(maxsize=size + 1)
        self._size = size
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._inflight: dict[str, Delivery] = {}
        self._server = self._bind(host, port)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"webhook-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        log.info(
            "webhook receiver listening",
            extra={
                "address": self.address,
                "signature": "none" if self._secret is None else self.signature_scheme,
            },
        )

    # --- the connector ------------------------------------------------------------------

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    @property
    def signature_scheme(self) -> str:
        if self._secret is None:
            return "none"
        return "standard-webhooks" if self._standard_key is not None else "github"

    def records(self) -> Iterator[RawRecord]:
        while not self.stopped:
            try:
                record = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if record is not None:
                yield record

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def acknowledge(self, ticket: Any, error: str | None) -> None:
        if isinstance(ticket, Delivery):
            ticket.acknowledge(error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._server.shutdown()
        # Senders still waiting hear 503 (and retry later) instead of a dropped socket.
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            if record is not None:
                self.acknowledge(record.ticket, "the receiver is shutting down")
        with self._lock:
            waiting = list(self._inflight.values())
        for delivery in waiting:
            delivery.fail("the receiver is shutting down")
        deadline = time.monotonic() + _CLOSE_GRACE_S
        for delivery in waiting:
            delivery.finished.wait(max(0.0, deadline - time.monotonic()))
        self._server.server_close()
        self._thread.join(timeout=_CLOSE_GRACE_S)

    # --- serving ------------------------------------------------------------------------

    def _bind(self, host: str, port: int) -> ThreadingHTTPServer:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        connector = self

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        class Handler(_Handler):
            pass

        Handler.connector = connector
        Handler.timeout = self.read_timeout
        try:
            return Server((host, port), Handler)
        except OSError as exc:
            raise ConnectorError(
                f"webhook:// cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None

    def _origin(self, delivery_id: str, line: int) -> str:
        return f"webhook://{self.address}#{delivery_id}:{line}"

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise _Refused(401) unless the request is signed with the secret."""
        if self._secret is None:
            return
        if self._standard_key is not None:
            self._verify_standard(headers, body, self._standard_key)
            return
        given = headers.get("x-hub-signature-256") or ""
        if not given.startswith("sha256="):
            raise _Refused(401, "missing X-Hub-Signature-256: sha256=... signature")
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given[len("sha256=") :].strip().lower(), expected):
            raise _Refused(401, "bad X-Hub-Signature-256 signature")

    def _verify_standard(self, headers: Mapping[str, str], body: bytes, key: bytes) -> None:
        msg_id = headers.get("webhook-id") or ""
        stamp = headers.get("webhook-timestamp") or ""
        signatures = headers.get("webhook-signature") or ""
        if not (msg_id and stamp and signatures):
            raise _Refused(401, "missing webhook-id, webhook-timestamp or webhook-signature header")
        try:
            sent_at = int(stamp)
        except ValueError:
            raise _Refused(401, "webhook-timestamp is not an integer") from None
        if abs(time.time() - sent_at) > self.tolerance:
            raise _Refused(401, "webhook-timestamp too far from now (stale or replayed)")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        for item in signatures.split():
            version, _, value = item.partition(",")
            # Several signatures may be sent during a key rotation; any valid one will do.
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                return
        raise _Refused(401, "bad webhook-signature")

    def handle_post(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Verify, queue and wait for the broker; the status and JSON to answer."""
        if self.stopped:
            return 503, {"error": "the receiver is shutting down"}
        self.verify(headers, body)
        lines = _split(headers.get("content-type") or "", body)
        if not lines:
            raise _Refused(400, "the body holds no posts")
        delivery_id = _delivery_id(headers, body)
        deadline = time.monotonic() + self.ack_timeout
        delivery = self._claim(delivery_id, deadline)
        if delivery is None:
            return 200, {"duplicate": True, "delivery": delivery_id}
        try:
            return self._deliver(delivery, lines, deadline)
        finally:
            with self._lock:
                self._inflight.pop(delivery_id, None)
                if delivery.ok:
                    self._seen[delivery_id] = None
                    self._seen.move_to_end(delivery_id)
                    while len(self._seen) > SEEN_IDS:
                        self._seen.popitem(last=False)
            delivery.finished.set()

    def _claim(self, delivery_id: str, deadline: float) -> Delivery | None:
        """A new Delivery for this id, or None when it was already taken; waits while
        another request with the same id is in flight (its outcome decides)."""
        while True:
            with self._lock:
                if delivery_id in self._seen:
                    self._seen.move_to_end(delivery_id)
                    return None
                current = self._inflight.get(delivery_id)
                if current is None:
                    delivery = Delivery(delivery_id)
                    self._inflight[delivery_id] = delivery
                    return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopped:
                raise _Refused(503, "the same delivery is still in flight; retry later")
            current.finished.wait(min(remaining, 0.5))

    def _deliver(
        self, delivery: Delivery, lines: list[bytes], deadline: float
    ) -> tuple[int, dict[str, Any]]:
        invalid: list[dict[str, Any]] = []
        records: list[RawRecord] = []
        for number, line in enumerate(lines, start=1):
            origin = self._origin(delivery.id, number)
            reason = self._validate(line)
            if reason is not None:
                invalid.append({"line": number, "reason": reason})
            records.append(RawRecord(line, origin, error=reason, ticket=delivery))
        queued = 0
        delivery.expect(len(records))
        for record in records:
            if not self._put(record, deadline):
                break
            queued += 1
        if queued < len(records):
            delivery.expect(queued)
            delivery.fail("the ingest loop did not take the posts in time")
        delivery.done.wait(max(0.0, deadline - time.monotonic()))
        body: dict[str, Any] = {"delivery": delivery.id}
        if not delivery.done.is_set():
            body["error"] = f"the broker did not confirm the posts within {self.ack_timeout:g} s"
            return 503, body
        if delivery.failures:
            body["error"] = (
                f"{len(delivery.failures)} of {len(records)} record(s) not delivered: "
                f"{delivery.failures[0]}"
            )
            return 503, body
        accepted = len(records) - len(invalid)
        body["accepted"] = accepted
        if invalid:
            body["error"] = f"{len(invalid)} of {len(records)} post(s) invalid"
            body["invalid"] = invalid
            return 400, body
        return 200, body

    def _validate(self, line: bytes) -> str | None:
        try:
            decode_record(line, max_text_chars=self.max_text_chars)
        except InvalidRecord as exc:
            return exc.reason
        except Exception as exc:  # bad input never crashes the receiver
            return f"cannot decode: {type(exc).__name__}"
        return None

    def _put(self, record: RawRecord, deadline: float) -> bool:
        while not self.stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._queue.qsize() < self._size:
                try:
                    self._queue.put(record, timeout=min(remaining, 0.5))
                    return True
                except queue.Full:
                    continue
            self.sleep(min(remaining, 0.05))
        return False


class _Handler(BaseHTTPRequestHandler):
    connector: WebhookConnector
    server_version = "moodwire-webhook"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(
            "webhook request", extra={"client": self.client_address[0], "line": format % args}
        )

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        data = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", str(_RETRY_AFTER_S))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's HTML error page for malformed requests; JSON like every other answer.
        self.close_connection = True
        self._answer(code, {"error": message or "bad request"})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._answer(200, {"ok": not self.connector.stopped})
        else:
            self._answer(404, {"error": "not found (POST posts to / or /posts)"})

    def do_POST(self) -> None:
        try:
            self._post()
        except _Refused as refused:
            self._answer(refused.status, {"error": refused.message})
        except Exception as exc:  # never a traceback to the sender; one log line for us
            log.warning("webhook request failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            self.close_connection = True
            self._answer(500, {"error": "internal error"})

    def _post(self) -> None:
        if self.path.split("?", 1)[0] not in POST_PATHS:
            self.close_connection = True
            raise _Refused(404, "not found (POST posts to / or /posts)")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self.close_connection = True
            raise _Refused(411, "Content-Length required")
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise _Refused(400, "bad Content-Length") from None
        limit = self.connector.max_body
        if length > limit:
            # Not read: the connection closes instead, so the rest of the body is dropped.
            self.close_connection = True
            raise _Refused(413, f"body of {length} bytes is over the limit of {limit}")
        try:
            body = self.rfile.read(length)
        except (OSError, TimeoutError):
            self.close_connection = True
            raise _Refused(408, "timed out reading the body") from None
        if len(body) < length:
            self.close_connection = True
            raise _Refused(400, "body shorter than Content-Length")
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer = self.connector.handle_post(headers, body)
        self._answer(status, answer)


# --- helpers ------------------------------------------------------------------------------


def _secret() -> tuple[bytes | None, bytes | None]:
    """The shared secret's bytes, and the Standard Webhooks key when it is a whsec_ one."""
    value = get_settings().webhook_secret
    if value is None or not value.get_secret_value():
        return None, None
    secret = value.get_secret_value()
    if not secret.startswith(_STANDARD_PREFIX):
        return secret.encode(), None
    try:
        key = base64.b64decode(secret[len(_STANDARD_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConnectorError(
            "MOODWIRE_WEBHOOK_SECRET starts with whsec_ but the rest is not base64"
        ) from None
    if not key:
        raise ConnectorError("MOODWIRE_WEBHOOK_SECRET is whsec_ with an empty key")
    return secret.encode(), key


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    for name in ("webhook-id", "x-github-delivery", "x-request-id"):
        value = (headers.get(name) or "").strip()
        if value:
            # It ends up in origins and logs: keep it one printable, bounded token.
            return "".join(c if c.isprintable() and c not in " #" else "_" for c in value[:200])
    return "sha256-" + hashlib.sha256(body).hexdigest()


def _split(content_type: str, body: bytes) -> list[bytes]:
    """The body's posts, one JSON document each (bad ones are validated later)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in LINES_TYPES:
        lines = [line.rstrip(b"\r") for line in body.split(b"\n")]
        return [line for line in lines if line.strip()]
    if media in JSON_TYPES or media.endswith("+json"):
        stripped = body.strip()
        if stripped.startswith(b"["):
            # A body that does not parse stays one record: it becomes a dead letter
            # whose reason the sender also hears.
            with contextlib.suppress(orjson.JSONDecodeError):
                items = orjson.loads(stripped)
                if isinstance(items, list):
                    return [orjson.dumps(item) for item in items]
        return [stripped] if stripped else []
    raise _Refused(
        415,
        f"unsupported Content-Type {media or '(none)'!r}: send application/json or "
        "application/x-ndjson",
    )
