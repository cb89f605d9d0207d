"""A local RSS/Atom feed server for feed+http:// tests and demos, with ETag and 304s.

Serves feed documents (files or bytes) at paths of its choosing on 127.0.0.1, each with an
``ETag`` (a hash of the bytes) and a ``Last-Modified`` (when that version was set), and
answers ``304 Not Modified`` to a matching ``If-None-Match`` (or, without one, to an
``If-Modified-Since`` not older than the version). Feeds can change while it runs
(:meth:`FeedServer.set_feed`, :meth:`FeedServer.add_entry`: a new ``<item>``/``<entry>``
between polls), and the next requests can fail (:meth:`FeedServer.fail_next`: a 5xx;
:meth:`FeedServer.rate_limit`: 429 with ``Retry-After``; :meth:`FeedServer.go_silent`: the
connection stays open and nothing comes). Every request, with its headers
and the status it got, is kept in :attr:`FeedServer.requests`.

Try the connector against a capture::

    python -m moodwire.connectors.kit.feed_server --capture feed.xml --port 8743
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from aiohttp import web

from moodwire.connectors.kit.serving import ThreadedServer


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int = 200


@dataclass
class _Version:
    body: bytes
    etag: str
    modified: datetime
    content_type: str


@dataclass
class _Fault:
    status: int
    retry_after: str | None = None
    # Seconds to keep the connection open, sending nothing, before answering.
    silent_s: float = 0.0


def _content_type(body: bytes) -> str:
    head = body[:2048].lower()
    if b"<feed" in head:
        return "application/atom+xml; charset=utf-8"
    if b"<rss" in head or b"<rdf" in head:
        return "application/rss+xml; charset=utf-8"
    return "application/xml"


class FeedServer(ThreadedServer):
    thread_name = "feed-server"

    def __init__(self, feeds: Mapping[str, bytes | Path] | None = None, *, port: int = 0) -> None:
        super().__init__(port)
        self.requests: list[SeenRequest] = []
        self._feeds: dict[str, _Version] = {}
        self._faults: list[_Fault] = []
        # (path, after this many requests to it, entry XML) still to add.
        self._scheduled: list[tuple[str, int, bytes]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        for path, content in (feeds or {}).items():
            self.set_feed(path, content)

    # --- content and faults ------------------------------------------------------------

    def set_feed(self, path: str, content: bytes | Path) -> str:
        """Serve ``content`` (bytes or a file, read now) at ``path``; returns its full URL
        once the server runs. A new version gets a new ETag and a later Last-Modified."""
        body = content.read_bytes() if isinstance(content, Path) else bytes(content)
        path = "/" + path.lstrip("/")
        with self._lock:
            previous = self._feeds.get(path)
            now = datetime.now(UTC).replace(microsecond=0)
            if previous is not None and previous.body != body and now <= previous.modified:
                # HTTP dates have one-second precision; a change must still look newer.
                now = previous.modified + timedelta(seconds=1)
            if previous is not None and previous.body == body:
                now = previous.modified
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            self._feeds[path] = _Version(body, etag, now, _content_type(body))
        return self.url + path

    def body(self, path: str) -> bytes:
        with self._lock:
            return self._feeds["/" + path.lstrip("/")].body

    def add_entry(self, path: str, entry_xml: bytes | str) -> None:
        """Insert an ``<item>`` / ``<entry>`` first in the feed at ``path`` (new items come
        first in real feeds)."""
        snippet = entry_xml.encode() if isinstance(entry_xml, str) else entry_xml
        body = self.body(path)
        for marker in (b"<item>", b"<item ", b"<entry>", b"<entry "):
            at = body.find(marker)
            if at >= 0:
                break
        else:
            at = max(body.rfind(b"</channel>"), body.rfind(b"</feed>"))
        if at < 0:
            raise ValueError(f"{path}: no place for a new entry")
        self.set_feed(path, body[:at] + snippet + body[at:])

    def add_entry_after(self, path: str, entry_xml: bytes | str, requests: int = 1) -> None:
        """Add the entry once ``path`` has answered ``requests`` requests: a feed that
        changes between two polls without the test racing the poller."""
        snippet = entry_xml.encode() if isinstance(entry_xml, str) else entry_xml
        with self._lock:
            self._scheduled.append(("/" + path.lstrip("/"), requests, snippet))

    def _run_scheduled(self, path: str) -> None:
        count = len(self.requests_for(path))
        with self._lock:
            due = [s for s in self._scheduled if s[0] == path and count >= s[1]]
            self._scheduled = [s for s in self._scheduled if s not in due]
        for _, _, snippet in due:
            self.add_entry(path, snippet)

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests (any path) answer ``status``."""
        with self._lock:
            self._faults.extend(_Fault(status) for _ in range(count))

    def rate_limit(self, retry_after: float | str = 1, count: int = 1, status: int = 429) -> None:
        """The next ``count`` requests answer 429 (or 503) with ``Retry-After``."""
        value = str(int(retry_after)) if isinstance(retry_after, int | float) else retry_after
        with self._lock:
            self._faults.extend(_Fault(status, value) for _ in range(count))

    def go_silent(self, seconds: float = 30.0, count: int = 1) -> None:
        """The next ``count`` requests get nothing for ``seconds`` (the connection stays
        open), then their normal answer: a server that hangs."""
        with self._lock:
            self._faults.extend(_Fault(0, silent_s=seconds) for _ in range(count))

    def requests_for(self, path: str) -> list[SeenRequest]:
        path = "/" + path.lstrip("/")
        return [r for r in list(self.requests) if r.path == path]

    # --- HTTP --------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        seen = SeenRequest(request.path, dict(request.headers))
        self.requests.append(seen)
        with self._lock:
            silent = self._faults[0].silent_s if self._faults else 0.0
            if silent:
                self._faults.pop(0)
        deadline = time.monotonic() + silent
        while time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(0.05)
        try:
            return self._answer(request, seen)
        finally:
            self._run_scheduled(request.path)

    def _answer(self, request: web.Request, seen: SeenRequest) -> web.Response:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            version = self._feeds.get(request.path)
        if fault is not None:
            seen.status = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.Response(status=fault.status, text="fault injected", headers=headers)
        if version is None:
            seen.status = 404
            return web.Response(status=404, text="no such feed")
        validators = {
            "ETag": version.etag,
            "Last-Modified": format_datetime(version.modified, usegmt=True),
        }
        if _not_modified(request, version):
            seen.status = 304
            return web.Response(status=304, headers=validators)
        return web.Response(
            body=version.body,
            headers={**validators, "Content-Type": version.content_type},
        )

    # --- lifecycle ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        return app

    def start(self) -> str:
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        self._stopping.set()
        super().stop()


def _not_modified(request: web.Request, version: _Version) -> bool:
    # RFC 9110: If-None-Match wins; If-Modified-Since only counts without it.
    match = request.headers.get("If-None-Match")
    if match is not None:
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return "*" in tags or version.etag in tags
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return version.modified <= when


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--capture",
        type=Path,
        action="append",
        required=True,
        help="a feed file, served at /<its name> (repeatable)",
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = FeedServer({f"/{p.name}": p for p in args.capture}, port=args.port)
    url = server.start()
    for path in args.capture:
        print(f"serving {path} on {url}/{path.name}", flush=True)
        address = url.removeprefix("http://")
        print(f"moodwire ingest 'feed+http://{address}/{path.name}?interval=10'", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
