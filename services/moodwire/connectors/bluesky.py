"""``bluesky://``: new, edited and deleted Bluesky posts from the Jetstream firehose (no login).

``bluesky://`` (wss://jetstream1.us-east.bsky.network, protocol v1), ``bluesky://HOST[:PORT]``.
Options: ``protocol=v1|v2`` (v1: ``/subscribe``, cursor ``time_us``; v2:
``/xrpc/network.bsky.jetstream.subscribeEvents``, sub-protocol ``xrpc.v1.json``, cursor
``seq``; with no host, v2 uses jetstream.us-east.bsky.network), ``tls=0`` (``ws://``, for the
local replay server), ``brands=1`` (keep only posts whose text names a configured brand,
MOODWIRE_BRANDS_FILE), ``rewind`` (seconds a v1 cursor is moved back on (re)connect, default
5), ``idle_timeout`` (seconds of silence after which the stream counts as dead and is
reconnected, default 30), ``open_timeout`` (default 10 s), ``backoff_initial`` /
``backoff_max`` (default 1 s / 60 s).

Always asks for ``wantedCollections=app.bsky.feed.post`` and no compression. A post create
maps to a post (id ``at://DID/app.bsky.feed.post/RKEY``, author the DID, lang the first of
``langs``); image-only posts (empty text) are skipped. Updates become ``op: update`` with
the full post, deletes ``op: delete`` at the event's time. Identity/account events and other
collections are skipped. Cursor partition: the host; offset ``{"time_us": N}`` (v1: the
newest event time seen; reconnects ask for ``N - rewind``, the documented negative buffer, so
repeats happen and collapse by key) or ``{"seq": N}`` (v2: the cursor is inclusive, so the
event at N comes again and is dropped).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlencode

import orjson
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from moodwire.connectors.backoff import Backoff, parse_retry_after
from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.logs import get_logger

log = get_logger(__name__)

SOURCE = "bluesky"
POST_COLLECTION = "app.bsky.feed.post"
DEFAULT_HOST = "jetstream1.us-east.bsky.network"
DEFAULT_HOST_V2 = "jetstream.us-east.bsky.network"
PATH_V1 = "/subscribe"
PATH_V2 = "/xrpc/network.bsky.jetstream.subscribeEvents"
SUBPROTOCOL_V2 = "xrpc.v1.json"
# How often recv() wakes up so stop() is noticed.
_POLL_S = 0.5
# A bare position at most this often / after this many skipped events.
_POSITION_EVERY_S = 1.0
_POSITION_EVERY_N = 100
# Real frames are a few KiB; a big limit still guards memory against a broken server.
_MAX_FRAME = 4 * 1024 * 1024


class _Refused(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class BlueskyConnector(Connector):
    resumable = True

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        self.check_options(
            {
                "protocol",
                "tls",
                "brands",
                "rewind",
                "idle_timeout",
                "open_timeout",
                "backoff_initial",
                "backoff_max",
            }
        )
        if url.path.strip("/"):
            raise ConnectorError(f"{url.geturl()!r}: bluesky:// takes a host, not a path")
        protocol = (self.option_str("protocol") or "v1").lower()
        if protocol not in ("v1", "v2"):
            raise ConnectorError(f"option protocol={protocol!r}: expected v1 or v2")
        self.protocol = protocol
        self.host = url.netloc or (DEFAULT_HOST if protocol == "v1" else DEFAULT_HOST_V2)
        self.tls = _flag(self, "tls", True)
        self.brands_only = _flag(self, "brands", False)
        self.rewind = self.option_float("rewind", 5.0)
        self.idle_timeout = self.option_float("idle_timeout", 30.0, minimum=0.05)
        self.open_timeout = self.option_float("open_timeout", 10.0, minimum=0.05)
        self.backoff_initial = self.option_float("backoff_initial", 1.0, minimum=0.001)
        self.backoff_max = max(
            self.backoff_initial, self.option_float("backoff_max", 60.0, minimum=0.001)
        )
        self._backoff = Backoff(self.backoff_initial, self.backoff_max)
        scheme = "wss" if self.tls else "ws"
        self.endpoint = f"{scheme}://{self.host}{PATH_V1 if protocol == 'v1' else PATH_V2}"
        #: v1: the newest ``time_us`` seen; v2: the last ``seq`` handled. None: live tail.
        self.time_us: int | None = None
        self.seq: int | None = None
        self._matcher: Any = None
        if self.brands_only:
            from moodwire.brands import BrandMatcher
            from moodwire.settings import get_settings

            self._matcher = BrandMatcher.from_settings(get_settings())
        self._skipped = 0
        self._last_position = time.monotonic()

    @property
    def partition(self) -> str:
        return self.host

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        super().resume(cursors)
        saved = cursors.get(self.partition) or {}
        value = saved.get("time_us" if self.protocol == "v1" else "seq")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            if self.protocol == "v1":
                self.time_us = value
            else:
                self.seq = value

    def subscribe_url(self) -> str:
        """The URL of the next connection, cursor included."""
        query: dict[str, str | int] = {"wantedCollections": POST_COLLECTION}
        if self.protocol == "v1" and self.time_us is not None:
            query["cursor"] = max(0, self.time_us - int(self.rewind * 1_000_000))
        elif self.protocol == "v2" and self.seq is not None:
            query["cursor"] = self.seq
        return f"{self.endpoint}?{urlencode(query)}"

    # --- the read loop -----------------------------------------------------------------

    def records(self) -> Iterator[RawRecord | Position]:
        while not self.stopped:
            url = self.subscribe_url()
            try:
                ws = self._connect(url)
            except _Refused as exc:
                if self._pause(str(exc), exc.retry_after):
                    return
                continue
            log.info("jetstream connected", extra={"url": url})
            try:
                with ws:
                    reason = yield from self._read(ws, url)
            except Exception as exc:  # closing a dead socket; the loop reconnects anyway
                reason = f"connection failed: {type(exc).__name__}: {exc}"
            if self.stopped:
                return
            if self._pause(reason, None):
                return

    def _read(self, ws: ClientConnection, url: str) -> Generator[RawRecord | Position, None, str]:
        """Frames of one connection until it ends; returns why it ended."""
        last_data = time.monotonic()
        while not self.stopped:
            try:
                frame = ws.recv(timeout=_POLL_S, decode=False)
            except TimeoutError:
                if self._skipped:
                    # A quiet moment: let the cursor pass what was skipped so far.
                    yield self._bare_position()
                if time.monotonic() - last_data >= self.idle_timeout:
                    return f"no data for {self.idle_timeout:g} s"
                continue
            except ConnectionClosed as exc:
                return f"connection closed: {exc}"
            except OSError as exc:
                return f"connection failed: {type(exc).__name__}: {exc}"
            last_data = time.monotonic()
            # Data arrived: the connection is healthy, later failures start afresh.
            self._backoff.reset()
            yield from self._handle(frame, url)
        return "stopped"

    def _connect(self, url: str) -> ClientConnection:
        try:
            return connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL_V2)] if self.protocol == "v2" else None,
                open_timeout=self.open_timeout,
                close_timeout=1.0,
                max_size=_MAX_FRAME,
                compression=None,
                user_agent_header="moodwire",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
            raise _Refused(f"HTTP {status}", retry_after) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _Refused(f"{type(exc).__name__}: {exc}") from None

    def _pause(self, reason: str, retry_after: float | None) -> bool:
        delay = self._backoff.next_delay(retry_after)
        log.warning(
            "jetstream reconnecting",
            extra={"reason": reason, "delay_s": round(delay, 3), "host": self.host},
        )
        return self.sleep(delay)

    def _position(self) -> Position:
        offset: dict[str, int] = {}
        if self.protocol == "v1" and self.time_us is not None:
            offset["time_us"] = self.time_us
        elif self.protocol == "v2" and self.seq is not None:
            offset["seq"] = self.seq
        return Position(self.partition, offset)

    def _bare_position(self) -> Position:
        self._skipped = 0
        self._last_position = time.monotonic()
        return self._position()

    def _handle(self, frame: bytes | str, origin: str) -> Iterator[RawRecord | Position]:
        payload = frame.encode() if isinstance(frame, str) else frame
        origin = origin.split("?", 1)[0]
        try:
            message = orjson.loads(payload)
            event = self._event(message)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            yield RawRecord(
                payload[:65536],
                origin,
                error=f"malformed Jetstream frame: {exc}"[:300],
                position=self._position(),
            )
            return
        if event is None:  # a v2 event already handled (the inclusive cursor), or no event
            return
        try:
            fields = map_event(event)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            yield RawRecord(
                payload,
                origin,
                error=f"unreadable Jetstream event: {type(exc).__name__}: {exc}"[:300],
                position=self._position(),
            )
            return
        # Deletes pass the brands filter: a deleted post has no text left to match, and
        # dropping the delete of a post we kept would leave it in the dashboards.
        if (
            fields is not None
            and self._matcher is not None
            and fields.get("op") != "delete"
            and not self._matcher.match(str(fields.get("text", "")))
        ):
            fields = None
        if fields is None:
            self._skipped += 1
            now = time.monotonic()
            if self._skipped >= _POSITION_EVERY_N or now - self._last_position >= _POSITION_EVERY_S:
                yield self._bare_position()
            return
        self._skipped = 0
        self._last_position = time.monotonic()
        yield RawRecord(payload, origin, fields=fields, position=self._position())

    def _event(self, message: Any) -> dict[str, Any] | None:
        """The v1 event inside a frame, with the cursor moved past it; None to drop it."""
        if not isinstance(message, dict):
            raise TypeError(f"frame is a JSON {type(message).__name__}, not an object")
        if self.protocol == "v2":
            kind = message.get("$type")
            if kind is not None and kind != "message":
                # Not an event (the server telling us something): nothing to record.
                log.warning("jetstream v2 frame that is no event", extra={"type": str(kind)})
                return None
            event = message.get("payload")
            if not isinstance(event, dict):
                raise TypeError("v2 frame without a payload object")
            seq = event.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("v2 event without an integer seq")
            if self.seq is not None and seq <= self.seq:
                return None
            self.seq = seq
            if "kind" not in event and isinstance(event.get("$type"), str):
                event = {**event, "kind": event["$type"].rsplit("#", 1)[-1]}
            return event
        time_us = message.get("time_us")
        if isinstance(time_us, int) and not isinstance(time_us, bool) and time_us > 0:
            # Events are only roughly in time order; the newest seen minus the rewind
            # covers the ones that arrive a little late.
            self.time_us = time_us if self.time_us is None else max(self.time_us, time_us)
        return message


# --- mapping ------------------------------------------------------------------------------


def map_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Jetstream event as post fields, an ``op: update`` / ``op: delete``, or None for
    events that are no posts (likes, follows, identity, image-only posts)."""
    if event.get("kind") != "commit":
        return None
    commit = event["commit"]
    if not isinstance(commit, dict) or commit.get("collection") != POST_COLLECTION:
        return None
    did, rkey = event["did"], commit["rkey"]
    if not isinstance(did, str) or not isinstance(rkey, str) or not did or not rkey:
        raise TypeError("did and rkey must be non-empty strings")
    post_id = f"at://{did}/{POST_COLLECTION}/{rkey}"
    event_time = _event_time(event.get("time_us"))
    operation = commit.get("operation")
    if operation == "delete":
        return {"op": "delete", "id": post_id, "source": SOURCE, "created_at": event_time}
    if operation not in ("create", "update"):
        return None
    record = commit["record"]
    if not isinstance(record, dict):
        raise TypeError("commit.record is not an object")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    langs = record.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    metadata: dict[str, Any] = {}
    if isinstance(commit.get("cid"), str):
        metadata["cid"] = commit["cid"]
    reply = record.get("reply")
    parent = reply.get("parent") if isinstance(reply, dict) else None
    if isinstance(parent, dict) and isinstance(parent.get("uri"), str):
        metadata["reply_to"] = parent["uri"]
    fields: dict[str, Any] = {
        "id": post_id,
        "source": SOURCE,
        "text": text,
        "created_at": _created_at(record.get("createdAt"), event_time),
        "author": did,
        "url": f"https://bsky.app/profile/{did}/post/{rkey}",
        "lang": lang,
        "metadata": metadata,
    }
    if operation == "update":
        fields["op"] = "update"
        fields["edited_at"] = event_time
    return fields


def _event_time(time_us: Any) -> str:
    if isinstance(time_us, int) and not isinstance(time_us, bool) and time_us > 0:
        return datetime.fromtimestamp(time_us / 1_000_000, UTC).isoformat()
    # No event time: the moment we saw it is the latest it can have happened.
    return datetime.now(UTC).isoformat()


def _created_at(value: Any, fallback: str) -> str:
    """``createdAt`` when it is an ISO time with a zone (clients set it, some badly)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if parsed.tzinfo is not None and parsed.utcoffset() is not None:
            return parsed.astimezone(UTC).isoformat()
    return fallback


def _flag(connector: Connector, name: str, default: bool) -> bool:
    raw = (connector.option_str(name) or "").lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConnectorError(f"option {name}={raw!r}: expected 1 or 0")
