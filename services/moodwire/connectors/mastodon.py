"""``mastodon://``: live Mastodon statuses of a hashtag or public timeline, streamed over SSE.

``mastodon://INSTANCE/tag/NAME``, ``mastodon://INSTANCE/public``,
``mastodon://INSTANCE/public/local``. Needs ``MOODWIRE_MASTODON_TOKEN``, a user token with
``read:statuses`` (Mastodon 4.2+ refuses anonymous streaming), sent as ``Authorization:
Bearer``; a 401/403 ends the connector with an error instead of retrying. Options: ``tls=0``
(plain http, for the local kit server), ``backfill=1|0`` (default 1), ``boosts=skip|unwrap``
(default ``skip``: a boost is not a new post; ``unwrap`` yields the boosted status itself,
deduplicated by its uri), ``idle_timeout`` (seconds of silence, heartbeats included, after
which the stream is dead, default 60; Mastodon sends a heartbeat about every 15 s),
``timeout`` (connect and REST request timeout, default 10 s), ``backoff_initial`` /
``backoff_max`` (default 1 s / 60 s).

The stream has no replay, so on a start with a saved cursor and after every reconnect it
backfills from the REST timeline (``min_id=<last id>&limit=40``, paged oldest first) before
reading the stream, and once more as soon as the new stream answered, to cover the moment in
between. A status seen twice in one run (backfill and stream overlap) is yielded once: the
uri (the federation URI) is the post id and the dedupe key. ``update`` events are posts;
``status.update`` (an edit) becomes ``op: update`` with the full post; ``delete`` carries only
the local id, mapped back to the uri through the last 50,000 statuses seen: a delete of a
status not seen in this run is skipped with a debug log. Statuses without text (media only)
are skipped. Cursor partition ``INSTANCE/PATH`` (``mastodon.social/tag/python``), offset
``{"last_id": "<newest local status id seen>"}``. 429/503 honour ``Retry-After`` (and
``X-RateLimit-Reset`` on the REST API).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import SplitResult, urlencode

import httpx
import orjson

from moodwire.connectors.backoff import Backoff, parse_retry_after
from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.logs import get_logger
from moodwire.settings import get_settings

log = get_logger(__name__)

SOURCE = "mastodon"
TOKEN_VARIABLE = "MOODWIRE_MASTODON_TOKEN"
_PAGE = 40
_REMEMBERED = 50_000
# How often a blocking wait looks at stop().
_POLL_S = 0.5
# A bare position at least this often (or every this many skipped events).
_POSITION_EVERY_S = 1.0
_POSITION_EVERY_N = 100
_QUEUE_MAX = 10_000
# A status is a few KiB; a line this long is no Mastodon stream.
_MAX_LINE = 8 * 1024 * 1024


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _fatal_or_transient(what: str, response: httpx.Response) -> Exception:
    code = response.status_code
    if code in (401, 403):
        return ConnectorError(
            f"{what}: HTTP {code}: the instance refused the token; {TOKEN_VARIABLE} needs a "
            "valid user token with scope read:statuses"
        )
    if code in (404, 410, 400, 422):
        return ConnectorError(f"{what}: HTTP {code}: no such timeline on this instance")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None and code == 429:
        retry_after = _rate_limit_reset(response.headers.get("X-RateLimit-Reset"))
    return _Transient(f"{what}: HTTP {code}", retry_after)


def _rate_limit_reset(value: str | None) -> float | None:
    """Mastodon's ``X-RateLimit-Reset``: an ISO 8601 instant."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- the SSE reader --------------------------------------------------------------------


class _Event:
    __slots__ = ("data", "name")

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data


class _StreamReader(threading.Thread):
    """Reads one SSE connection into a queue, so the connector's own waits can be short
    (stop() and silence are noticed) while httpx blocks on the socket here.

    Queue items: ("status", Response) once, then ("beat", None) / ("event", _Event), and
    ("end", reason) last. It owns its httpx client; an abandoned reader ends at the next
    byte or after its read timeout.
    """

    def __init__(self, url: str, headers: dict[str, str], timeout: float, idle: float) -> None:
        super().__init__(name="mastodon-sse", daemon=True)
        self.url = url
        self.headers = headers
        self.timeout = httpx.Timeout(timeout, read=idle + 1.0)
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue(_QUEUE_MAX)
        self.abandoned = threading.Event()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self.abandoned.is_set():
            try:
                self.items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=self.timeout, headers=self.headers) as client,
                client.stream("GET", self.url) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    self._put(("status", response))
                    return
                if not self._put(("status", response)):
                    return
                self._read(response)
            self._put(("end", "the server ended the stream"))
        except httpx.HTTPError as exc:
            self._put(("end", f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # never let a reader thread die silently
            self._put(("end", f"{type(exc).__name__}: {exc}"))

    def _read(self, response: httpx.Response) -> None:
        buffer = b""
        name = ""
        data: list[bytes] = []
        for chunk in response.iter_bytes():
            if self.abandoned.is_set():
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    event = _Event(name or "message", b"\n".join(data))
                    if (data or name) and not self._put(("event", event)):
                        return
                    name, data = "", []
                elif line.startswith(b":"):
                    if not self._put(("beat", None)):
                        return
                else:
                    key, _, value = line.partition(b":")
                    if value.startswith(b" "):
                        value = value[1:]
                    if key == b"event":
                        name = value.decode("utf-8", "replace")
                    elif key == b"data":
                        data.append(value)
            if len(buffer) > _MAX_LINE:
                self._put(("end", f"an SSE line longer than {_MAX_LINE} bytes"))
                return
            if not lines and chunk and not self._put(("beat", None)):
                # Bytes arrived (part of a long line): the connection is alive.
                return


# --- the connector ---------------------------------------------------------------------


class MastodonConnector(Connector):
    resumable = True

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        self.check_options(
            {"tls", "backfill", "boosts", "idle_timeout", "timeout", "backoff_initial",
             "backoff_max"}
        )  # fmt: skip
        self.instance = url.netloc
        if not self.instance:
            raise ConnectorError(f"{url.geturl()!r}: mastodon:// needs an instance host")
        path = url.path.rstrip("/")
        tag_match = re.fullmatch(r"/tag/#?([^/]+)", path)
        if tag_match:
            self.tag: str | None = tag_match.group(1)
            path = f"/tag/{self.tag}"
            self.stream_path = "/api/v1/streaming/hashtag?" + urlencode({"tag": self.tag})
            self.timeline_path = f"/api/v1/timelines/tag/{self.tag}"
            self.timeline_query: dict[str, str] = {}
        elif path in ("/public", "/public/local"):
            self.tag = None
            self.stream_path = "/api/v1/streaming" + path
            self.timeline_path = "/api/v1/timelines/public"
            self.timeline_query = {"local": "true"} if path == "/public/local" else {}
        else:
            raise ConnectorError(
                f"{url.geturl()!r}: expected mastodon://INSTANCE/tag/NAME, "
                "mastodon://INSTANCE/public or mastodon://INSTANCE/public/local"
            )
        self.path = path
        self.partition = f"{self.instance}{path}"
        tls = self.option_str("tls", "1")
        if tls not in ("0", "1"):
            raise ConnectorError(f"option tls={tls!r}: expected 0 or 1")
        self.base = ("https://" if tls == "1" else "http://") + self.instance
        backfill = self.option_str("backfill", "1")
        if backfill not in ("0", "1"):
            raise ConnectorError(f"option backfill={backfill!r}: expected 0 or 1")
        self.backfill = backfill == "1"
        boosts = self.option_str("boosts", "skip")
        if boosts not in ("skip", "unwrap"):
            raise ConnectorError(f"option boosts={boosts!r}: expected skip or unwrap")
        self.boosts = boosts
        self.idle_timeout = self.option_float("idle_timeout", 60.0, minimum=0.05)
        self.timeout = self.option_float("timeout", 10.0, minimum=0.1)
        self.backoff_initial = self.option_float("backoff_initial", 1.0, minimum=0.001)
        self.backoff_max = max(
            self.backoff_initial, self.option_float("backoff_max", 60.0, minimum=0.001)
        )
        token = get_settings().mastodon_token
        secret = token.get_secret_value().strip() if token is not None else ""
        if not secret:
            raise ConnectorError(
                f"mastodon:// needs {TOKEN_VARIABLE}: since Mastodon 4.2 streaming requires "
                "a user access token with scope read:statuses"
            )
        self._headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
        self._backoff = Backoff(self.backoff_initial, self.backoff_max)
        #: Newest local status id seen (a numeric string), None before any.
        self.last_id: str | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._uris: OrderedDict[str, str] = OrderedDict()
        self._skipped = 0
        self._last_position = time.monotonic()
        self._client: httpx.Client | None = None

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        super().resume(cursors)
        saved = (cursors.get(self.partition) or {}).get("last_id")
        if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 0:
            self.last_id = str(saved)
        elif isinstance(saved, str) and saved.isdigit():
            self.last_id = saved

    # --- the loop ----------------------------------------------------------------------

    def records(self) -> Iterator[RawRecord | Position]:
        self._client = httpx.Client(timeout=self.timeout, headers=self._headers)
        try:
            need_backfill = self.backfill and self.last_id is not None
            while not self.stopped:
                try:
                    if need_backfill:
                        yield from self._backfill()
                    yield from self._stream()
                except _Transient as exc:
                    delay = self._backoff.next_delay(exc.retry_after)
                    log.warning(
                        "mastodon connection failed; reconnecting",
                        extra={"reason": str(exc), "delay_s": round(delay, 3)},
                    )
                    if self.sleep(delay):
                        return
                need_backfill = self.backfill and self.last_id is not None
        finally:
            self._client.close()
            self._client = None

    def _stream(self) -> Iterator[RawRecord | Position]:
        url = self.base + self.stream_path
        reader = _StreamReader(
            url, {**self._headers, "Accept": "text/event-stream"}, self.timeout, self.idle_timeout
        )
        reader.start()
        try:
            kind, value = self._next(reader, self.timeout + 1.0, "no answer")
            if kind == "end":
                raise _Transient(f"stream: {value}")
            response: httpx.Response = value
            if response.status_code != 200:
                raise _fatal_or_transient("stream", response)
            log.info("mastodon stream open", extra={"url": url})
            if self.backfill and self.last_id is not None:
                # Statuses posted between the backfill and this stream's start.
                yield from self._backfill()
            # Mastodon greets every connection with a comment line, so only a second
            # heartbeat or an event proves the connection healthy.
            healthy, items = False, 0
            while not self.stopped:
                kind, value = self._next(reader, self.idle_timeout, "silent")
                if kind == "end":
                    raise _Transient(f"stream: {value}")
                items += 1
                if not healthy and (kind == "event" or items >= 2):
                    healthy = True
                    self._backoff.reset()
                if kind == "event":
                    yield from self._handle(value, url)
        finally:
            reader.abandoned.set()

    def _next(self, reader: _StreamReader, limit: float, why: str) -> tuple[str, Any]:
        deadline = time.monotonic() + limit
        while not self.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return ("end", f"{why} for {limit:g} s")
            try:
                return reader.items.get(timeout=min(_POLL_S, left))
            except queue.Empty:
                continue
        return ("end", "stopped")

    # --- backfill ----------------------------------------------------------------------

    def _backfill(self) -> Iterator[RawRecord | Position]:
        assert self._client is not None
        while not self.stopped and self.last_id is not None:
            query = {**self.timeline_query, "min_id": self.last_id, "limit": str(_PAGE)}
            url = f"{self.base}{self.timeline_path}?{urlencode(query)}"
            try:
                response = self._client.get(url)
            except httpx.HTTPError as exc:
                raise _Transient(f"timeline: {type(exc).__name__}: {exc}") from None
            if response.status_code != 200:
                raise _fatal_or_transient("timeline", response)
            try:
                page = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                raise _Transient(f"timeline answered malformed JSON: {exc}") from None
            if not isinstance(page, list):
                raise _Transient("timeline answered no list of statuses")
            statuses = [s for s in page if isinstance(s, dict) and _local_id(s) is not None]
            if not statuses:
                return
            before = self.last_id
            log.info("mastodon backfill", extra={"after_id": before, "statuses": len(statuses)})
            # Pages come newest first; the cursor must only move forward.
            statuses.sort(key=lambda s: int(_local_id(s) or 0))
            for status in statuses:
                yield from self._status(status, orjson.dumps(status), url, "update")
            if self.last_id == before:
                return

    # --- events ------------------------------------------------------------------------

    def _handle(self, event: _Event, origin: str) -> Iterator[RawRecord | Position]:
        if event.name in ("update", "status.update"):
            try:
                status = orjson.loads(event.data)
            except orjson.JSONDecodeError as exc:
                yield self._error(event, origin, f"malformed {event.name} JSON: {exc}")
                return
            if not isinstance(status, dict) or _local_id(status) is None:
                yield self._error(event, origin, f"{event.name} is no status with an id")
                return
            yield from self._status(status, event.data, origin, event.name)
        elif event.name == "delete":
            local_id = event.data.decode("utf-8", "replace").strip()
            uri = self._uris.get(local_id)
            if uri is None:
                log.debug("mastodon delete of a status not seen; skipped", extra={"id": local_id})
                yield from self._skip()
                return
            self._skipped = 0
            fields = {
                "op": "delete",
                "id": uri,
                "source": SOURCE,
                # The stream does not say when; the moment we heard is the latest it can be.
                "created_at": datetime.now(UTC).isoformat(),
                "metadata": {"local_id": local_id, "instance": self.instance},
            }
            yield RawRecord(event.data, origin, fields=fields, position=self._position())
        else:
            yield from self._skip()

    def _status(
        self, status: dict[str, Any], payload: bytes, origin: str, kind: str
    ) -> Iterator[RawRecord | Position]:
        local_id = _local_id(status)
        assert local_id is not None
        if self.last_id is None or int(local_id) > int(self.last_id):
            self.last_id = local_id
        try:
            fields = map_status(status, self.instance, self.boosts)
        except (KeyError, TypeError, ValueError) as exc:
            self._skipped = 0
            yield RawRecord(
                payload[:65536],
                origin,
                error=f"unreadable status: {type(exc).__name__}: {exc}"[:300],
                position=self._position(),
            )
            return
        if fields is None:
            yield from self._skip()
            return
        uri = str(fields["id"])
        inner_id = str(fields["metadata"]["local_id"])
        self._remember(self._uris, inner_id, uri)
        if kind == "status.update":
            fields["op"] = "update"
        elif uri in self._seen:
            yield from self._skip()
            return
        self._remember(self._seen, uri, None)
        self._skipped = 0
        yield RawRecord(payload, origin, fields=fields, position=self._position())

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _REMEMBERED:
            store.popitem(last=False)

    def _skip(self) -> Iterator[Position]:
        self._skipped += 1
        now = time.monotonic()
        if self._skipped >= _POSITION_EVERY_N or now - self._last_position >= _POSITION_EVERY_S:
            self._skipped = 0
            self._last_position = now
            if self.last_id is not None:
                yield self._position()

    def _error(self, event: _Event, origin: str, reason: str) -> RawRecord:
        self._skipped = 0
        return RawRecord(event.data[:65536], origin, error=reason[:300], position=self._position())

    def _position(self) -> Position:
        self._last_position = time.monotonic()
        return Position(self.partition, {"last_id": self.last_id})


# --- mapping ------------------------------------------------------------------------------


def _local_id(status: Mapping[str, Any]) -> str | None:
    value = status.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.isdigit() else None


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


_SPACES = re.compile(r"[^\S\n]+")


def html_to_text(value: str) -> str:
    """Mastodon's status HTML as plain text: ``<br>`` and ``</p>`` end lines, tags go,
    entities are unescaped, runs of spaces become one."""
    parser = _TextParser()
    parser.feed(value)
    parser.close()
    # convert_charrefs already unescaped entities; unescaping again would turn a typed
    # "&lt;" into "<".
    text = "".join(parser.parts)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def map_status(
    status: Mapping[str, Any], instance: str, boosts: str = "skip"
) -> dict[str, Any] | None:
    """A Status as post fields, or None for what is no post here (a skipped boost, a
    status without text)."""
    outer = status
    reblog = status.get("reblog")
    if reblog is not None:
        if boosts == "skip":
            return None
        if not isinstance(reblog, dict):
            raise TypeError("reblog is not an object")
        status = reblog
    uri = status["uri"]
    if not isinstance(uri, str) or not uri:
        raise ValueError("status has no uri")
    content = status.get("content") or ""
    if not isinstance(content, str):
        raise TypeError("content is not a string")
    text = html_to_text(content)
    spoiler = status.get("spoiler_text")
    if isinstance(spoiler, str) and spoiler.strip():
        warning = _SPACES.sub(" ", spoiler).strip()
        text = f"{warning}\n\n{text}" if text else warning
    if not text:
        return None
    account = status["account"]
    if not isinstance(account, dict):
        raise TypeError("account is not an object")
    acct = account.get("acct")
    metadata: dict[str, Any] = {"local_id": _local_id(status) or "", "instance": instance}
    if outer is not status:
        boosted_by = (outer.get("account") or {}).get("acct")
        metadata.update(boost_id=_local_id(outer), boosted_by=boosted_by)
    fields: dict[str, Any] = {
        "id": uri,
        "source": SOURCE,
        "text": text,
        "created_at": status["created_at"],
        "author": acct if isinstance(acct, str) else None,
        "url": status.get("url") if isinstance(status.get("url"), str) else None,
        "lang": status.get("language") if isinstance(status.get("language"), str) else None,
        "metadata": metadata,
    }
    if isinstance(status.get("edited_at"), str):
        fields["edited_at"] = status["edited_at"]
    return fields
