"""``hn://``: every new Hacker News story and comment, polled from the public Firebase API.

``hn://``, ``hn://?kinds=story&start=42000000``. No login. Options: ``kinds=story,comment``
(default both), ``interval`` (seconds between polls of ``/maxitem``, default 5),
``start=latest|ID`` (where a run without a saved cursor begins; default ``latest``, the
current ``/maxitem``), ``batch`` (items fetched per round, default 50, 8 at a time),
``null_grace`` (seconds an item that answers ``null`` is waited for, default 60), ``api``
(default https://hacker-news.firebaseio.com/v0), ``timeout`` (per request, default 10 s),
``backoff_initial``/``backoff_max`` (default 1 s / 60 s).

Reads ``/item/<id>.json`` for ids after the cursor up to ``/maxitem``, in id order. An
item that is still ``null`` (not yet propagated) is asked for again on later polls and
the cursor waits for it; after ``null_grace`` seconds it is skipped with a log line.
Stories map to title + blank line + text, comments to their text (HTML turned into plain
text); ``deleted``/``dead`` items become ``op: delete``; jobs, polls and poll options are
skipped. Cursor partition ``items``, offset ``{"last_id": N}``: every id <= N was handled.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import SplitResult

import httpx
import orjson

from moodwire.connectors.backoff import Backoff, parse_retry_after
from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.logs import get_logger

log = get_logger(__name__)

SOURCE = "hackernews"
PARTITION = "items"
_KINDS = ("story", "comment")
_SKIPPED_TYPES = ("job", "poll", "pollopt")
_WORKERS = 8
# A bare position at least this often while only skipped items go by.
_POSITION_EVERY_S = 1.0


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Fetched:
    """One ``/item/<id>.json`` answer: its bytes, or why there are none."""

    def __init__(self, item_id: int, body: bytes | None, failure: str | None = None) -> None:
        self.item_id = item_id
        self.body = body
        self.failure = failure
        self.retry_after: float | None = None


class HackerNewsConnector(Connector):
    resumable = True

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        self.check_options(
            {
                "api",
                "kinds",
                "interval",
                "start",
                "batch",
                "null_grace",
                "timeout",
                "backoff_initial",
                "backoff_max",
            }
        )
        if url.netloc or url.path.strip("/"):
            raise ConnectorError(f"{url.geturl()!r}: hn:// takes no host or path, only options")
        self.api = (self.option_str("api") or "https://hacker-news.firebaseio.com/v0").rstrip("/")
        kinds = [k.strip() for k in (self.option_str("kinds") or "story,comment").split(",")]
        if not kinds or any(k not in _KINDS for k in kinds):
            raise ConnectorError(
                f"option kinds={self.options.get('kinds')!r}: expected story, comment or both"
            )
        self.kinds = set(kinds)
        self.interval = self.option_float("interval", 5.0)
        start = self.option_str("start") or "latest"
        if start != "latest" and not start.isdigit():
            raise ConnectorError(f"option start={start!r}: expected latest or an item id")
        self.start: int | None = None if start == "latest" else int(start)
        batch = self.option_int("batch", 50, minimum=1)
        assert batch is not None
        self.batch = batch
        self.null_grace = self.option_float("null_grace", 60.0)
        self.timeout = self.option_float("timeout", 10.0, minimum=0.1)
        self.backoff_initial = self.option_float("backoff_initial", 1.0, minimum=0.001)
        self.backoff_max = max(
            self.backoff_initial, self.option_float("backoff_max", 60.0, minimum=0.001)
        )
        self._backoff = Backoff(self.backoff_initial, self.backoff_max)
        #: Every id <= last_id is handled; None until the start is known.
        self.last_id: int | None = None
        # Handled ids above last_id (a null item holds the cursor back, not the others).
        self._handled: set[int] = set()
        self._first_null: dict[int, float] = {}
        self._client: httpx.Client | None = None

    @property
    def cursor_name(self) -> str:
        return "hn://"

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        super().resume(cursors)
        saved = (cursors.get(PARTITION) or {}).get("last_id")
        if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 0:
            self.last_id = saved

    # --- the poll loop -----------------------------------------------------------------

    def records(self) -> Iterator[RawRecord | Position]:
        self._client = httpx.Client(timeout=self.timeout, headers={"Accept": "application/json"})
        pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="hn-fetch")
        try:
            while not self.stopped:
                try:
                    newest = self._maxitem()
                except _Transient as exc:
                    if self._pause(str(exc), exc.retry_after):
                        return
                    continue
                if self.last_id is None:
                    self.last_id = (self.start if self.start is not None else newest) - 1
                    log.info("hn starting", extra={"after_id": self.last_id})
                caught_up = False
                while not self.stopped and not caught_up:
                    wanted = self._wanted(newest)
                    if not wanted:
                        break
                    fetched = list(pool.map(self._fetch, wanted))
                    failures = [f for f in fetched if f.failure is not None]
                    yield from self._handle(fetched)
                    if failures:
                        worst = max((f.retry_after or 0.0 for f in failures), default=0.0)
                        if self._pause(str(failures[0].failure), worst or None):
                            return
                        break
                    self._backoff.reset()
                    # Only null items left to wait for: they get their chance next poll.
                    caught_up = len(wanted) < self.batch or all(
                        f.item_id in self._first_null for f in fetched
                    )
                if self.sleep(self.interval):
                    return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._client.close()
            self._client = None

    def _pause(self, reason: str, retry_after: float | None) -> bool:
        delay = self._backoff.next_delay(retry_after)
        log.warning("hn request failed; retrying", extra={"reason": reason, "delay_s": delay})
        return self.sleep(delay)

    def _wanted(self, newest: int) -> list[int]:
        assert self.last_id is not None
        out: list[int] = []
        item_id = self.last_id + 1
        while item_id <= newest and len(out) < self.batch:
            if item_id not in self._handled:
                out.append(item_id)
            item_id += 1
        return out

    def _handle(self, fetched: list[_Fetched]) -> Iterator[RawRecord | Position]:
        last_position = time.monotonic()
        moved = False
        for answer in fetched:
            if self.stopped:
                return
            item_id = answer.item_id
            if answer.failure is not None:
                continue
            assert answer.body is not None
            origin = f"{self.api}/item/{item_id}.json"
            body = answer.body
            try:
                item = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                self._done(item_id)
                yield RawRecord(
                    body[:65536],
                    origin,
                    error=f"malformed item JSON: {exc}"[:300],
                    position=self._position(),
                )
                moved = False
                continue
            if item is None:
                first = self._first_null.setdefault(item_id, time.monotonic())
                if time.monotonic() - first < self.null_grace:
                    continue
                log.warning("hn item still null; skipping it", extra={"id": item_id})
                self._done(item_id)
                moved = True
                continue
            fields: dict[str, Any] | None
            try:
                fields = map_item(item, self.kinds)
                error = None
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                fields, error = None, f"unreadable item: {type(exc).__name__}: {exc}"[:300]
            self._done(item_id)
            if error is not None:
                yield RawRecord(body, origin, error=error, position=self._position())
                moved = False
            elif fields is None:
                moved = True
                if time.monotonic() - last_position >= _POSITION_EVERY_S:
                    last_position = time.monotonic()
                    moved = False
                    yield self._position()
            else:
                moved = False
                yield RawRecord(body, origin, fields=fields, position=self._position())
        if moved:
            yield self._position()

    def _done(self, item_id: int) -> None:
        assert self.last_id is not None
        self._first_null.pop(item_id, None)
        self._handled.add(item_id)
        while self.last_id + 1 in self._handled:
            self.last_id += 1
            self._handled.discard(self.last_id)

    def _position(self) -> Position:
        return Position(PARTITION, {"last_id": self.last_id})

    # --- HTTP --------------------------------------------------------------------------

    def _get(self, path: str) -> bytes:
        assert self._client is not None
        try:
            response = self._client.get(self.api + path)
        except httpx.HTTPError as exc:
            raise _Transient(f"{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(
                f"{path}: HTTP {response.status_code}",
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            raise _Transient(f"{path}: HTTP {response.status_code}")
        return response.content

    def _maxitem(self) -> int:
        body = self._get("/maxitem.json")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Transient(f"/maxitem.json answered {body[:80]!r}, not an item id")
        return value

    def _fetch(self, item_id: int) -> _Fetched:
        if self.stopped:
            return _Fetched(item_id, None, "stopped")
        try:
            return _Fetched(item_id, self._get(f"/item/{item_id}.json"))
        except _Transient as exc:
            failed = _Fetched(item_id, None, str(exc))
            failed.retry_after = exc.retry_after
            return failed


# --- mapping ------------------------------------------------------------------------------


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "br"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(value: str) -> str:
    """HN's item HTML as plain text: ``<p>`` and ``<br>`` start lines, entities unescaped."""
    parser = _TextParser()
    parser.feed(value)
    parser.close()
    # convert_charrefs handles entities in data; this catches any left in odd places.
    return html.unescape("".join(parser.parts)).strip()


def map_item(
    item: Any, kinds: set[str] | frozenset[str] = frozenset(_KINDS)
) -> dict[str, Any] | None:
    """An HN item as post fields, an ``op: delete``, or None for items that are no posts."""
    if not isinstance(item, dict):
        raise TypeError(f"item is a {type(item).__name__}, not an object")
    item_id = item["id"]
    if not isinstance(item_id, int) or isinstance(item_id, bool):
        raise TypeError("id is not an integer")
    kind = item.get("type")
    if kind in _SKIPPED_TYPES or (kind is not None and kind not in _KINDS):
        return None
    if kind is not None and kind not in kinds:
        return None
    if item.get("deleted") or item.get("dead"):
        return {
            "op": "delete",
            "id": str(item_id),
            "source": SOURCE,
            # HN does not say when; the moment we saw it is the latest it can have been.
            "created_at": datetime.now(UTC).isoformat(),
        }
    if kind is None:
        raise ValueError("item has no type")
    seconds = item["time"]
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise TypeError("time is not a number")
    body = html_to_text(item["text"]) if isinstance(item.get("text"), str) else ""
    metadata: dict[str, Any] = {"kind": kind}
    if kind == "story":
        title = str(item["title"])  # titles are plain text in the API, not HTML
        text = title + "\n\n" + body if body else title
        for name in ("score", "descendants"):
            if name in item:
                metadata[name] = item[name]
        if isinstance(item.get("url"), str):
            metadata["link"] = item["url"]
    else:
        text = body
        if "parent" in item:
            metadata["parent"] = item["parent"]
    author = item.get("by")
    return {
        "id": str(item_id),
        "source": SOURCE,
        "text": text,
        "created_at": datetime.fromtimestamp(float(seconds), UTC).isoformat(),
        "author": author if isinstance(author, str) else None,
        "url": f"https://news.ycombinator.com/item?id={item_id}",
        "lang": None,
        "metadata": metadata,
    }
