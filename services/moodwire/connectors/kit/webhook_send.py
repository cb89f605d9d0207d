"""Send a JSON Lines file of posts to a webhook:// receiver, signed like a real sender.

``python -m moodwire.connectors.kit.webhook_send http://127.0.0.1:8090 posts.jsonl
--secret-env MOODWIRE_WEBHOOK_SECRET``. Posts go in batches (``--batch``, default 100 lines)
as ``application/x-ndjson``. A ``whsec_...`` secret signs the Standard Webhooks way
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), any other secret the GitHub
way (``X-Hub-Signature-256``, with an ``X-GitHub-Delivery`` id); no ``--secret-env`` sends
unsigned (for a receiver started with ``?insecure=1``). A 503 or a connection error is
retried with the same delivery id (the receiver collapses repeats), honouring Retry-After.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from moodwire.connectors.backoff import parse_retry_after


def sign(
    secret: str | None, body: bytes, delivery_id: str, now: int | None = None
) -> dict[str, str]:
    """The headers a real sender adds for ``body`` under ``secret`` (None: unsigned)."""
    if not secret:
        return {"X-Request-Id": delivery_id}
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret[len("whsec_") :])
        stamp = str(int(time.time()) if now is None else now)
        signed = f"{delivery_id}.{stamp}.".encode() + body
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": stamp,
            "webhook-signature": f"v1,{signature}",
        }
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery_id}


def batches(path: Path, size: int) -> Iterator[bytes]:
    lines: list[bytes] = []
    with path.open("rb") as stream:
        for line in stream:
            if line.strip():
                lines.append(line.rstrip(b"\r\n"))
            if len(lines) >= size:
                yield b"\n".join(lines) + b"\n"
                lines = []
    if lines:
        yield b"\n".join(lines) + b"\n"


def send(
    url: str, body: bytes, secret: str | None, *, attempts: int = 5, timeout: float = 60.0
) -> httpx.Response:
    """POST one batch, retrying 503s and connection errors under one delivery id."""
    delivery_id = f"msg_{uuid.uuid4().hex}"
    delay = 1.0
    for attempt in range(1, attempts + 1):
        # Re-signed on every try: a Standard Webhooks timestamp must be fresh.
        headers = {"Content-Type": "application/x-ndjson", **sign(secret, body, delivery_id)}
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            if attempt == attempts:
                raise
            print(f"{delivery_id}: {type(exc).__name__}; retrying", file=sys.stderr)
        else:
            if response.status_code != 503 or attempt == attempts:
                return response
            delay = parse_retry_after(response.headers.get("Retry-After")) or delay
            print(f"{delivery_id}: 503 {response.text}; retrying in {delay:g} s", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="the receiver, e.g. http://127.0.0.1:8090")
    parser.add_argument("file", type=Path, help="JSON Lines of post.v1 objects")
    parser.add_argument("--secret-env", help="environment variable holding the shared secret")
    parser.add_argument("--batch", type=int, default=100, help="lines per request")
    args = parser.parse_args(argv)
    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            parser.error(f"${args.secret_env} is not set")
    failed = 0
    for body in batches(args.file, max(1, args.batch)):
        try:
            response = send(args.url, body, secret)
        except httpx.TransportError as exc:
            print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        print(f"{response.status_code} {response.text}", flush=True)
        failed += response.status_code >= 300
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
