"""A local Mastodon API for mastodon:// tests and demos: SSE streaming and REST timelines.

Serves, on 127.0.0.1 and only with ``Authorization: Bearer <token>`` (401 otherwise, as a
Mastodon 4.2+ instance does for streaming):

- ``GET /api/v1/streaming/hashtag?tag=NAME``, ``/api/v1/streaming/public``,
  ``/api/v1/streaming/public/local``: Server-Sent Events ``update`` (a Status), ``delete``
  (a status id) and ``status.update`` (an edit), with ``:thump`` heartbeat comments every
  ``heartbeat`` seconds. No replay, like Mastodon: only what is published while connected.
- ``GET /api/v1/timelines/tag/NAME`` and ``/api/v1/timelines/public[?local=true]`` with
  ``min_id`` / ``max_id`` / ``since_id`` / ``limit`` (max 40), newest first, and a ``Link``
  header (``rel="next"`` / ``rel="prev"``).

Faults: :meth:`MastodonServer.close_after` (the next stream drops abruptly after N events),
:meth:`MastodonServer.fail_next` (the next K requests answer 503/429, with ``Retry-After``),
:meth:`MastodonServer.go_silent` (open streams stay open but send nothing more). Every
request is kept in :attr:`MastodonServer.requests` (path, query, headers, status).

Try the connector against a JSON list (or JSON Lines) of Status objects, published one by
one to the stream every ``--interval`` seconds::

    python -m moodwire.connectors.kit.mastodon_server --capture statuses.json --port 8743
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from moodwire.connectors.kit.serving import ThreadedServer

DEFAULT_TOKEN = "moodwire-demo-token"
_MAX_LIMIT = 40


@dataclass
class SeenRequest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int = 200


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    where: str  # "any", "stream" or "rest"


@dataclass
class _Stream:
    kind: str  # "hashtag", "public" or "public/local"
    tag: str | None
    queue: asyncio.Queue[bytes | None]
    close_after: int | None = None
    silent: bool = False
    sent: int = 0


def _tags_of(status: Mapping[str, Any]) -> set[str]:
    inner = status.get("reblog") or status
    return {str(t.get("name", "")).lower() for t in inner.get("tags") or [] if isinstance(t, dict)}


def _is_local(status: Mapping[str, Any]) -> bool:
    account = status.get("account") or {}
    return "@" not in str(account.get("acct", ""))


# Snowflake-like ids: milliseconds << 16, as Mastodon makes them.
_ids = itertools.count(int(time.time() * 1000) << 16)


def make_status(
    text_html: str,
    *,
    acct: str = "alice",
    tags: Iterable[str] = (),
    status_id: str | None = None,
    host: str = "mastodon.example",
    created_at: str = "2026-12-02T10:00:00.000Z",
    language: str | None = "en",
    spoiler_text: str = "",
    reblog: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Status shaped like Mastodon's (the fields the connector reads, and a few more)."""
    sid = status_id or str(next(_ids))
    user, _, domain = acct.partition("@")
    home = domain or host
    uri = f"https://{home}/users/{user}/statuses/{sid}"
    return {
        "id": sid,
        "created_at": created_at,
        "in_reply_to_id": None,
        "sensitive": bool(spoiler_text),
        "spoiler_text": spoiler_text,
        "visibility": "public",
        "language": language,
        "uri": uri if reblog is None else f"{uri}/activity",
        "url": f"https://{home}/@{user}/{sid}" if reblog is None else None,
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": None,
        "content": text_html if reblog is None else "",
        "reblog": dict(reblog) if reblog is not None else None,
        "account": {
            "id": str(abs(hash(acct)) % 10**9),
            "username": user,
            "acct": acct,
            "display_name": user.title(),
            "url": f"https://{home}/@{user}",
        },
        "media_attachments": [],
        "mentions": [],
        "tags": [{"name": t.lower(), "url": f"https://{host}/tags/{t.lower()}"} for t in tags],
        "emojis": [],
    }


class MastodonServer(ThreadedServer):
    thread_name = "mastodon-server"
    shutdown_timeout = 0.5

    def __init__(
        self,
        statuses: Iterable[Mapping[str, Any]] = (),
        *,
        token: str = DEFAULT_TOKEN,
        heartbeat: float = 15.0,
        port: int = 0,
    ) -> None:
        self.token = token
        self.heartbeat = heartbeat
        super().__init__(port)
        self.requests: list[SeenRequest] = []
        self.streams_opened = 0
        self._timeline: dict[int, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._close_after: int | None = None
        self._streams: list[_Stream] = []
        self._lock = threading.Lock()
        for status in statuses:
            self.add(status)

    # --- content -----------------------------------------------------------------------

    def add(self, status: Mapping[str, Any]) -> None:
        """Put a status in the timelines only (as if posted while nobody streamed)."""
        with self._lock:
            self._timeline[int(status["id"])] = dict(status)

    def publish(self, status: Mapping[str, Any]) -> None:
        """Post a status: into the timelines and, as ``update``, to matching live streams."""
        self.add(status)
        self._broadcast(status, "update", orjson.dumps(dict(status)))

    def edit(self, status: Mapping[str, Any]) -> None:
        """Replace a status and send ``status.update`` to matching streams."""
        self.add(status)
        self._broadcast(status, "status.update", orjson.dumps(dict(status)))

    def delete(self, status_id: str) -> None:
        """Remove a status and send ``delete`` (its id) to every live stream."""
        with self._lock:
            status = self._timeline.pop(int(status_id), None)
        self._broadcast(status, "delete", status_id.encode())

    def send_raw(self, event: str, data: bytes) -> None:
        """Send an event with any data (malformed JSON, say) to every live stream."""
        self._broadcast(None, event, data)

    # --- faults ------------------------------------------------------------------------

    def close_after(self, events: int) -> None:
        """The next stream to connect drops abruptly after sending ``events`` events."""
        with self._lock:
            self._close_after = events

    def fail_next(
        self, status: int = 503, count: int = 1, retry_after: str | None = None, where: str = "any"
    ) -> None:
        """The next ``count`` requests (``where``: any, stream or rest) answer ``status``."""
        with self._lock:
            self._faults.extend([_Fault(status, retry_after, where)] * count)

    def go_silent(self) -> None:
        """Streams open now stay open but send nothing more, heartbeats included."""
        with self._lock:
            for stream in self._streams:
                stream.silent = True

    @property
    def live_streams(self) -> int:
        with self._lock:
            return sum(1 for s in self._streams if not s.silent)

    def stream_requests(self) -> list[SeenRequest]:
        return [r for r in list(self.requests) if r.path.startswith("/api/v1/streaming")]

    def timeline_requests(self) -> list[SeenRequest]:
        return [r for r in list(self.requests) if r.path.startswith("/api/v1/timelines")]

    # --- internals ---------------------------------------------------------------------

    def _matches(self, stream: _Stream, status: Mapping[str, Any] | None) -> bool:
        if status is None or stream.kind == "public":
            return True
        if stream.kind == "public/local":
            return _is_local(status)
        return stream.tag is not None and stream.tag.lower() in _tags_of(status)

    def _broadcast(self, status: Mapping[str, Any] | None, event: str, data: bytes) -> None:
        frame = b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
        with self._lock:
            targets = [s for s in self._streams if not s.silent and self._matches(s, status)]
        loop = self._loop
        if loop is None:
            return
        for stream in targets:
            loop.call_soon_threadsafe(stream.queue.put_nowait, frame)

    def _seen(self, request: web.Request) -> SeenRequest:
        seen = SeenRequest(request.path, dict(request.query), dict(request.headers))
        self.requests.append(seen)
        return seen

    def _refuse(self, request: web.Request, seen: SeenRequest, where: str) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            seen.status = 401
            return web.json_response({"error": "The access token is invalid"}, status=401)
        with self._lock:
            index = next((i for i, f in enumerate(self._faults) if f.where in ("any", where)), None)
            fault = self._faults.pop(index) if index is not None else None
        if fault is None:
            return None
        seen.status = fault.status
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return web.json_response({"error": "fault"}, status=fault.status, headers=headers)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        seen = self._seen(request)
        refused = self._refuse(request, seen, "stream")
        if refused is not None:
            return refused
        kind = request.path.removeprefix("/api/v1/streaming/")
        tag = request.query.get("tag") if kind == "hashtag" else None
        if kind == "hashtag" and not tag:
            seen.status = 400
            return web.json_response({"error": "No tag for stream provided"}, status=400)
        stream = _Stream(kind, tag, asyncio.Queue())
        with self._lock:
            stream.close_after, self._close_after = self._close_after, None
            self._streams.append(stream)
            self.streams_opened += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            await response.write(b":)\n")
            while True:
                try:
                    frame = await asyncio.wait_for(stream.queue.get(), self.heartbeat)
                except TimeoutError:
                    frame = b":thump\n"
                if stream.silent:
                    continue
                if frame is None:
                    break
                await response.write(frame)
                if not frame.startswith(b":"):
                    stream.sent += 1
                    if stream.close_after is not None and stream.sent >= stream.close_after:
                        # Abrupt: no end of the chunked body, as when a proxy drops us.
                        if request.transport is not None:
                            request.transport.abort()
                        break
        except ConnectionResetError:
            pass
        finally:
            with self._lock:
                self._streams.remove(stream)
        return response

    async def _timeline_view(self, request: web.Request) -> web.Response:
        seen = self._seen(request)
        refused = self._refuse(request, seen, "rest")
        if refused is not None:
            return refused
        tag = request.match_info.get("tag")
        local = request.query.get("local") in ("true", "1")
        try:
            limit = min(_MAX_LIMIT, max(1, int(request.query.get("limit", "20"))))
            min_id = int(request.query["min_id"]) if "min_id" in request.query else None
            max_id = int(request.query["max_id"]) if "max_id" in request.query else None
            since_id = int(request.query["since_id"]) if "since_id" in request.query else None
        except ValueError:
            seen.status = 422
            return web.json_response({"error": "bad paging parameter"}, status=422)
        with self._lock:
            rows = sorted(self._timeline.items())
        picked = []
        for sid, status in rows:
            if tag is not None and tag.lower() not in _tags_of(status):
                continue
            if local and not _is_local(status):
                continue
            if max_id is not None and sid >= max_id:
                continue
            if since_id is not None and sid <= since_id:
                continue
            if min_id is not None and sid <= min_id:
                continue
            picked.append((sid, status))
        # min_id pages forward from it (the oldest after it); otherwise the newest.
        page = picked[:limit] if min_id is not None else picked[-limit:]
        page.reverse()
        headers = {}
        if page:
            base = f"{self.url}{request.path}"
            extra = {"local": "true"} if local else {}
            newer = urlencode({**extra, "limit": limit, "min_id": page[0][0]})
            older = urlencode({**extra, "limit": limit, "max_id": page[-1][0]})
            headers["Link"] = f'<{base}?{older}>; rel="next", <{base}?{newer}>; rel="prev"'
        body = orjson.dumps([status for _, status in page])
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    # --- lifecycle ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/streaming/health", self._health)
        app.router.add_get("/api/v1/streaming/hashtag", self._stream)
        app.router.add_get("/api/v1/streaming/public", self._stream)
        app.router.add_get("/api/v1/streaming/public/local", self._stream)
        app.router.add_get("/api/v1/timelines/tag/{tag}", self._timeline_view)
        app.router.add_get("/api/v1/timelines/public", self._timeline_view)
        return app

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the instance part of a ``mastodon://`` URL (with ``tls=0``)."""
        return self.url.removeprefix("http://")

    async def _before_cleanup(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.silent = False
            stream.queue.put_nowait(None)


def load_statuses(path: Path) -> list[dict[str, Any]]:
    """Statuses from a JSON list or JSON Lines file."""
    data = path.read_bytes()
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return list(loaded) if isinstance(loaded, list) else [loaded]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--capture", type=Path, required=True, help="JSON list / JSONL of Status")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=os.environ.get("MOODWIRE_MASTODON_TOKEN", DEFAULT_TOKEN))
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between statuses")
    args = parser.parse_args(argv)
    statuses = load_statuses(args.capture)
    server = MastodonServer(token=args.token, heartbeat=args.heartbeat, port=args.port)
    server.start()
    print(f"serving {len(statuses)} statuses on {server.url}", flush=True)
    print(
        f"MOODWIRE_MASTODON_TOKEN={args.token} moodwire ingest "
        f"'mastodon://{server.address}/public?tls=0'",
        flush=True,
    )
    try:
        while server.live_streams == 0:
            time.sleep(0.2)
        for status in statuses:
            server.publish(status)
            time.sleep(args.interval)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
