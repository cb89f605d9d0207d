"""Real local receivers for the alert channels: an HTTP server (Slack's incoming webhook
and a generic webhook both are HTTP POSTs) and an SMTP server (aiosmtpd), each recording
what it was sent. The webhook receiver drops repeated ``webhook-id`` values, as the
README asks of a real receiver."""

from __future__ import annotations

import email
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """``answers``: status codes for the next requests (then 200); ``hold``: while set,
    requests are recorded and then wait for it to clear before being answered."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    retry_after: str | None = None
    hold: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET address; typeshed also allows bytes
        return f"http://{host}:{port}/hook"

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.requests]


def _handler(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.requests.append(Request(self.path, headers, body))
                status = receiver.answers.pop(0) if receiver.answers else 200
            if receiver.hold.is_set():
                receiver.released.wait(30)
            delivery = headers.get("webhook-id")
            duplicate = False
            if status == 200 and delivery:
                with receiver.lock:
                    duplicate = delivery in receiver.seen_ids
                    receiver.seen_ids.add(delivery)
            payload = b'{"duplicate": true}' if duplicate else b"ok"
            try:
                self.send_response(status)
                if receiver.retry_after and status in (429, 503):
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the sender is gone (killed mid-request): it was still received

    return Handler


def start_http_receiver() -> HttpReceiver:
    receiver = HttpReceiver(server=None)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@dataclass
class Mailbox:
    controller: Controller
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.box.messages.append(email.message_from_bytes(envelope.content))
        self.box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def start_smtp(
    port: int,
    *,
    tls_context: Any = None,
    logins: dict[str, str] | None = None,
) -> Mailbox:
    """aiosmtpd on 127.0.0.1:port; with ``tls_context``, STARTTLS is required; with
    ``logins``, AUTH LOGIN/PLAIN (after TLS) is required."""
    box = Mailbox(controller=None)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if logins is not None:

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and logins.get(data.login.decode()) == data.password.decode()
            )
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticate, auth_required=True)
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    box.controller = controller
    return box


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost) and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def closing(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in things:
            if isinstance(thing, HttpReceiver):
                thing.released.set()
                thing.server.shutdown()
                thing.server.server_close()
            elif isinstance(thing, Mailbox):
                thing.controller.stop()
