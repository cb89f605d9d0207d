"""A local Reddit API for reddit:// tests and demos: OAuth token endpoint plus listings.

Speaks the parts of Reddit's API the connector uses, on 127.0.0.1:

- ``POST /api/v1/access_token`` (HTTP basic auth with the client id and secret, form
  ``grant_type=client_credentials``) -> ``{"access_token", "token_type", "expires_in"}``;
  wrong or missing credentials get 401.
- ``GET /r/{sub}/new`` and ``GET /r/{sub}/comments`` (``Authorization: Bearer``, else
  401) -> a ``Listing`` of the posts (``t3``) or comments (``t1``) it holds, newest first,
  honouring ``limit``, ``before`` and ``after`` fullnames the way Reddit does (``before``
  a fullname it does not hold -> an empty listing, forever). Every answer carries
  ``X-Ratelimit-Remaining``/``-Used``/``-Reset``.

Faults for tests: :meth:`RedditServer.fail_next` (a 5xx or a 429 with ``Retry-After``),
:meth:`RedditServer.expire_tokens` (the next listing answers 401), ``ratelimit_remaining``.
Every request is kept in :attr:`RedditServer.requests` (path, query, headers, time).

Try the connector against a capture::

    python -m moodwire.connectors.kit.reddit_server --capture subreddit.json --port 8741
"""

from __future__ import annotations

import argparse
import base64
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from moodwire.connectors.kit.serving import ThreadedServer


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int = 0


@dataclass
class _Fault:
    status: int
    retry_after: str | None


def things_of(capture: Any) -> list[dict[str, Any]]:
    """Every ``t3``/``t1`` thing in a Listing, a list of Listings (a comment thread) or a
    list of things, replies included (depth first); ``more`` stubs are dropped."""
    out: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child)
            return
        if not isinstance(node, dict):
            return
        if node.get("kind") == "Listing":
            walk(node.get("data", {}).get("children", []))
            return
        if node.get("kind") in ("t1", "t3") and isinstance(node.get("data"), dict):
            out.append(node)
            replies = node["data"].get("replies")
            if isinstance(replies, dict):
                walk(replies)

    walk(capture)
    return out


def thing(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A Reddit thing wrapper (``{"kind": "t3", "data": {...}}``)."""
    return {"kind": kind, "data": dict(data)}


class RedditServer(ThreadedServer):
    thread_name = "reddit-server"

    """Reddit's OAuth + listing API over posts and comments held in memory.

    ``posts``/``comments``: things (``{"kind": "t3", "data": {...}}``) in any order; each
    listing serves them newest first by ``created_utc`` (ties: later given is newer).
    """

    def __init__(
        self,
        posts: Iterable[Mapping[str, Any]] = (),
        comments: Iterable[Mapping[str, Any]] = (),
        *,
        client_id: str = "moodwire-test",
        client_secret: str = "moodwire-secret",
        token_ttl: int = 3600,
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        super().__init__(port)
        self.ratelimit_remaining = 600.0
        self.ratelimit_reset = 60
        self.requests: list[SeenRequest] = []
        self.token_requests = 0
        self._tokens: set[str] = set()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._things: dict[str, list[dict[str, Any]]] = {"t3": [], "t1": []}
        self._seq = 0
        for item in [*posts, *comments]:
            self.add(item)

    # --- content and faults ------------------------------------------------------------

    def add(self, item: Mapping[str, Any]) -> None:
        """Publish a thing (a new post or comment); the next poll sees it."""
        kind = str(item.get("kind"))
        if kind not in self._things:
            raise ValueError(f"not a t3/t1 thing: {kind!r}")
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "thing": dict(item)}
            bucket = self._things[kind]
            bucket.append(entry)
            bucket.sort(key=lambda e: (float(e["thing"]["data"].get("created_utc", 0)), e["seq"]))

    def remove(self, fullname: str) -> None:
        """Drop a thing, as Reddit does when a post is removed (``before`` it -> empty)."""
        with self._lock:
            for kind, bucket in self._things.items():
                self._things[kind] = [
                    e for e in bucket if e["thing"]["data"].get("name") != fullname
                ]

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        """The next ``count`` listing requests answer ``status`` (with ``Retry-After``)."""
        with self._lock:
            self._faults.extend(_Fault(status, retry_after) for _ in range(count))

    def expire_tokens(self) -> None:
        """Forget every token issued: the next listing request gets 401."""
        with self._lock:
            self._tokens.clear()

    def listing_requests(self, what: str = "") -> list[SeenRequest]:
        return [r for r in list(self.requests) if r.path.startswith("/r/") and what in r.path]

    # --- HTTP --------------------------------------------------------------------------

    def _seen(self, request: web.Request) -> SeenRequest:
        seen = SeenRequest(request.method, request.path, dict(request.query), dict(request.headers))
        self.requests.append(seen)
        return seen

    async def _token(self, request: web.Request) -> web.Response:
        seen = self._seen(request)
        self.token_requests += 1
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = await request.post()
        if request.headers.get("Authorization", "") != f"Basic {expected}":
            seen.status = 401
            return web.json_response({"message": "Unauthorized", "error": 401}, status=401)
        if form.get("grant_type") != "client_credentials":
            seen.status = 400
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens.add(token)
        seen.status = 200
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.token_ttl,
                "scope": "*",
            }
        )

    def _ratelimit_headers(self) -> dict[str, str]:
        remaining = max(0.0, self.ratelimit_remaining)
        return {
            "X-Ratelimit-Remaining": f"{remaining:.1f}",
            "X-Ratelimit-Used": f"{max(0.0, 600 - remaining):.0f}",
            "X-Ratelimit-Reset": str(self.ratelimit_reset),
        }

    async def _listing(self, request: web.Request) -> web.Response:
        seen = self._seen(request)
        headers = self._ratelimit_headers()
        auth = request.headers.get("Authorization", "")
        with self._lock:
            # Auth schemes are case-insensitive (RFC 9110); Reddit's own docs write "bearer".
            token_ok = auth[:7].lower() == "bearer " and auth[7:] in self._tokens
            fault = self._faults.pop(0) if self._faults and token_ok else None
        if not token_ok:
            seen.status = 401
            return web.json_response(
                {"message": "Unauthorized", "error": 401}, status=401, headers=headers
            )
        if fault is not None:
            seen.status = fault.status
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            return web.json_response(
                {"message": "fault", "error": fault.status}, status=fault.status, headers=headers
            )
        kind = "t3" if request.match_info["what"] == "new" else "t1"
        try:
            limit = max(1, min(100, int(request.query.get("limit", "25"))))
        except ValueError:
            limit = 25
        with self._lock:
            ordered = [e["thing"] for e in self._things[kind]]  # oldest first
        names = [t["data"].get("name") for t in ordered]
        before, after = request.query.get("before"), request.query.get("after")
        if before:
            if before not in names:
                page: list[dict[str, Any]] = []
            else:
                newer = ordered[names.index(before) + 1 :]
                page = newer[:limit][::-1]
        elif after:
            older = ordered[: names.index(after)] if after in names else []
            page = older[-limit:][::-1]
        else:
            page = ordered[-limit:][::-1]
        body = {
            "kind": "Listing",
            "data": {
                "modhash": "",
                "dist": len(page),
                "children": page,
                "after": page[-1]["data"].get("name") if page else None,
                "before": page[0]["data"].get("name") if page and (before or after) else None,
            },
        }
        seen.status = 200
        return web.Response(
            body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    # --- lifecycle ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/access_token", self._token)
        app.router.add_get("/r/{sub}/{what:new|comments}", self._listing)
        app.router.add_get("/r/{sub}/{what:new|comments}.json", self._listing)
        return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--capture", type=Path, required=True, help="a Listing JSON file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--subreddit", default=None, help="default: from the capture")
    parser.add_argument("--client-id", default="moodwire-test")
    parser.add_argument("--client-secret", default="moodwire-secret")
    args = parser.parse_args(argv)
    found = things_of(orjson.loads(args.capture.read_bytes()))
    posts = [t for t in found if t["kind"] == "t3"]
    comments = [t for t in found if t["kind"] == "t1"]
    server = RedditServer(
        posts, comments, client_id=args.client_id, client_secret=args.client_secret, port=args.port
    )
    url = server.start()
    sub = args.subreddit or next(
        (str(t["data"]["subreddit"]) for t in found if t["data"].get("subreddit")), "test"
    )
    print(f"serving {len(posts)} posts and {len(comments)} comments on {url}", flush=True)
    print(
        f"MOODWIRE_REDDIT_CLIENT_ID={args.client_id} "
        f"MOODWIRE_REDDIT_CLIENT_SECRET={args.client_secret} "
        f"moodwire ingest 'reddit://r/{sub}?api={url}&auth={url}'",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
