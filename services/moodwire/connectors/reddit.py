"""``reddit://r/NAME``: new posts and comments of a subreddit, polled over Reddit's OAuth API.

``reddit://r/python``, ``reddit://r/python?kinds=posts&interval=60``. Needs an approved
Reddit API client (since late 2025 new clients need Reddit's approval):
MOODWIRE_REDDIT_CLIENT_ID and MOODWIRE_REDDIT_CLIENT_SECRET (application-only OAuth,
``grant_type=client_credentials``). Options: ``kinds=posts,comments`` (default both),
``interval`` (seconds between polls, default 30), ``limit`` (items per request, <= 100,
default 100), ``api`` (default https://oauth.reddit.com), ``auth`` (token endpoint base,
default https://www.reddit.com), ``user_agent``, ``timeout`` (per request, default 10 s),
``backoff_initial``/``backoff_max`` (reconnect pacing, default 1 s / 120 s),
``stale_polls`` (see below, default 10).

Polls ``GET {api}/r/NAME/new`` and ``/r/NAME/comments`` with ``before=<newest fullname
seen>``, following full pages until caught up, and yields oldest first. Posts map to id =
fullname (``t3_...``), text = title + blank line + selftext; comments (``t1_...``) to their
body. A thing whose body/selftext is ``[deleted]`` or ``[removed]`` becomes ``op: delete``.
Cursor partitions ``r/NAME/posts`` and ``r/NAME/comments``, offset ``{"newest": fullname,
"created_utc": seconds}``. Honours ``X-Ratelimit-Remaining``/``-Reset`` and 429
``Retry-After``; a 401 refreshes the token once.

A ``before`` fullname that Reddit has since removed answers an empty listing forever: after
``stale_polls`` empty answers in a row the connector polls without ``before`` and, if that
shows items newer (by ``created_utc``) than the cursor, takes those and moves on.

Texts are asked for with ``raw_json=1`` (no HTML escaping of ``&<>``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult

import httpx
import orjson

from moodwire import __version__
from moodwire.connectors.backoff import Backoff, parse_retry_after
from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.logs import get_logger
from moodwire.settings import get_settings

log = get_logger(__name__)

SOURCE = "reddit"
_KINDS = {"posts": ("new", "t3"), "comments": ("comments", "t1")}
_GONE = ("[deleted]", "[removed]")
_SUBREDDIT = re.compile(r"^[A-Za-z0-9_]{2,21}(\+[A-Za-z0-9_]{2,21})*$")
# Refresh a token this long before Reddit says it expires (clocks and queues drift).
_TOKEN_MARGIN_S = 60.0
# Never spin faster than this on a rate-limit reset of 0.
_MIN_RATE_SLEEP_S = 0.05


class _Transient(Exception):
    """A request failed in a way worth retrying after a pause (5xx, 429, network)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Feed:
    """Where one listing (posts or comments) of the subreddit stands."""

    def __init__(self, partition: str, path: str, kind: str) -> None:
        self.partition = partition
        self.path = path
        self.kind = kind
        self.newest: str | None = None
        self.created_utc: float | None = None
        self.empty_polls = 0

    def offset(self) -> dict[str, Any]:
        return {"newest": self.newest, "created_utc": self.created_utc}


class RedditConnector(Connector):
    resumable = True

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        self.check_options(
            {
                "api",
                "auth",
                "kinds",
                "interval",
                "limit",
                "backoff_initial",
                "backoff_max",
                "user_agent",
                "timeout",
                "stale_polls",
            }
        )
        sub = url.path.strip("/")
        if url.netloc.lower() != "r" or not _SUBREDDIT.match(sub):
            raise ConnectorError(
                f"{url.geturl()!r} is not a subreddit URL; expected reddit://r/NAME "
                "(e.g. reddit://r/python)"
            )
        self.subreddit = sub
        self.api = (self.option_str("api") or "https://oauth.reddit.com").rstrip("/")
        self.auth = (self.option_str("auth") or "https://www.reddit.com").rstrip("/")
        kinds = [k.strip() for k in (self.option_str("kinds") or "posts,comments").split(",")]
        unknown = [k for k in kinds if k not in _KINDS]
        if unknown or not kinds:
            raise ConnectorError(
                f"option kinds={self.options.get('kinds')!r}: expected posts, comments or both"
            )
        self.interval = self.option_float("interval", 30.0)
        limit = self.option_int("limit", 100, minimum=1)
        assert limit is not None
        if limit > 100:
            raise ConnectorError(f"option limit={limit} must be <= 100 (Reddit's maximum)")
        self.limit = limit
        self.timeout = self.option_float("timeout", 10.0, minimum=0.1)
        self.backoff_initial = self.option_float("backoff_initial", 1.0, minimum=0.001)
        self.backoff_max = max(
            self.backoff_initial, self.option_float("backoff_max", 120.0, minimum=0.001)
        )
        stale = self.option_int("stale_polls", 10, minimum=1)
        assert stale is not None
        self.stale_polls = stale
        self.user_agent = self.option_str("user_agent") or f"moodwire/{__version__} (by moodwire)"
        settings = get_settings()
        client_id = settings.reddit_client_id
        secret = settings.reddit_client_secret
        if not client_id or secret is None or not secret.get_secret_value():
            raise ConnectorError(
                "reddit:// needs MOODWIRE_REDDIT_CLIENT_ID and MOODWIRE_REDDIT_CLIENT_SECRET "
                "(an OAuth app; since late 2025 new Reddit API clients need Reddit's approval)"
            )
        self._credentials = (client_id, secret.get_secret_value())
        self.feeds = [
            _Feed(f"r/{sub}/{k}", f"/r/{sub}/{_KINDS[k][0]}", _KINDS[k][1])
            for k in dict.fromkeys(kinds)
        ]
        self._token: str | None = None
        self._token_expires = 0.0
        self._client: httpx.Client | None = None
        self._backoff = Backoff(self.backoff_initial, self.backoff_max)

    @property
    def cursor_name(self) -> str:
        return f"reddit://r/{self.subreddit}"

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        super().resume(cursors)
        for feed in self.feeds:
            saved = cursors.get(feed.partition) or {}
            newest = saved.get("newest")
            if isinstance(newest, str) and newest:
                feed.newest = newest
                created = saved.get("created_utc")
                feed.created_utc = float(created) if isinstance(created, int | float) else None

    # --- the poll loop -----------------------------------------------------------------

    def records(self) -> Iterator[RawRecord | Position]:
        self._client = httpx.Client(
            timeout=self.timeout, headers={"User-Agent": self.user_agent}, follow_redirects=False
        )
        try:
            while not self.stopped:
                for feed in self.feeds:
                    yield from self._poll(feed)
                    if self.stopped:
                        return
                if self.sleep(self.interval):
                    return
        finally:
            self._client.close()
            self._client = None

    def _poll(self, feed: _Feed) -> Iterator[RawRecord | Position]:
        # Full pages mean more new items wait behind them: follow until a short page.
        while not self.stopped:
            params = {"limit": str(self.limit), "raw_json": "1"}
            if feed.newest:
                params["before"] = feed.newest
            got = self._get_listing(feed, params)
            if got is None:
                return
            children, origin = got
            if isinstance(children, RawRecord):
                yield children
                return
            if not children and feed.newest:
                feed.empty_polls += 1
                if feed.empty_polls >= self.stale_polls:
                    feed.empty_polls = 0
                    yield from self._recover(feed)
                return
            feed.empty_polls = 0
            yield from self._emit(feed, children, origin, newer_than=None)
            if len(children) < self.limit:
                return

    def _recover(self, feed: _Feed) -> Iterator[RawRecord | Position]:
        """The cursor's fullname may be gone: look at the newest items without ``before``."""
        got = self._get_listing(feed, {"limit": str(self.limit), "raw_json": "1"})
        if got is None:
            return
        children, origin = got
        if isinstance(children, RawRecord):
            yield children
            return
        since = feed.created_utc
        newest = max((_created(c) or 0.0 for c in children), default=0.0)
        if since is not None and newest <= since:
            return
        log.warning(
            "reddit cursor answers nothing but newer items exist; resuming by created_utc",
            extra={"partition": feed.partition, "cursor": feed.newest, "since": since},
        )
        yield from self._emit(feed, children, origin, newer_than=since)

    def _emit(
        self, feed: _Feed, children: list[Any], origin: str, newer_than: float | None
    ) -> Iterator[RawRecord | Position]:
        # Listings come newest first; the cursor must move oldest to newest.
        for child in reversed(children):
            raw = orjson.dumps(child)
            data = child.get("data") if isinstance(child, dict) else None
            name = data.get("name") if isinstance(data, dict) else None
            created = _created(child)
            if newer_than is not None and (created is None or created < newer_than):
                continue
            if isinstance(name, str) and name and name != feed.newest:
                feed.newest = name
                if created is not None:
                    feed.created_utc = created
            position = Position(feed.partition, feed.offset())
            where = f"{origin}#{name}" if isinstance(name, str) else origin
            if not isinstance(child, dict) or child.get("kind") != feed.kind:
                if isinstance(child, dict) and child.get("kind") == "more":
                    yield position
                    continue
                yield RawRecord(raw, where, error=f"not a {feed.kind} thing", position=position)
                continue
            try:
                fields = map_thing(child)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                reason = f"unreadable {feed.kind}: {type(exc).__name__}: {exc}"[:300]
                yield RawRecord(raw, where, error=reason, position=position)
                continue
            yield RawRecord(raw, where, fields=fields, position=position)

    # --- HTTP --------------------------------------------------------------------------

    def _get_listing(
        self, feed: _Feed, params: dict[str, str]
    ) -> tuple[list[Any] | RawRecord, str] | None:
        """The listing's children (or an error record for a body that is no Listing);
        None when stopped. Transient failures are retried here, with backoff."""
        url = self.api + feed.path
        while not self.stopped:
            try:
                response = self._authorized_get(url, params)
            except _Transient as exc:
                delay = self._backoff.next_delay(exc.retry_after)
                log.warning(
                    "reddit request failed; retrying",
                    extra={"url": url, "reason": str(exc), "delay_s": round(delay, 3)},
                )
                if self.sleep(delay):
                    return None
                continue
            self._backoff.reset()
            self._respect_ratelimit(response)
            body = response.content
            origin = f"{url}?before={params.get('before', '')}"
            try:
                listing = orjson.loads(body)
                children = listing["data"]["children"]
                if listing.get("kind") != "Listing" or not isinstance(children, list):
                    raise ValueError("not a Listing")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                error = RawRecord(
                    body[:65536],
                    origin,
                    error=f"reddit answered something that is not a Listing: {exc}"[:300],
                    position=Position(feed.partition, feed.offset()) if feed.newest else None,
                )
                return error, origin
            return children, origin
        return None

    def _authorized_get(self, url: str, params: dict[str, str]) -> httpx.Response:
        assert self._client is not None
        for attempt in (1, 2):
            token = self._access_token()
            try:
                response = self._client.get(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from None
            if response.status_code == 401 and attempt == 1:
                # Tokens can be revoked or expire early: fetch a new one, once.
                log.info("reddit token refused; fetching a new one")
                self._token = None
                continue
            return self._check(response, url)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _check(self, response: httpx.Response, url: str) -> httpx.Response:
        status = response.status_code
        if status == 429 or status >= 500:
            retry = parse_retry_after(response.headers.get("Retry-After"))
            if retry is None and status == 429:
                retry = _float(response.headers.get("X-Ratelimit-Reset"))
            raise _Transient(f"HTTP {status}", retry)
        if status == 401:
            raise ConnectorError(f"reddit refused a freshly issued token for {url} (401)")
        if status in (403, 404):
            raise ConnectorError(
                f"reddit answered {status} for {url}: the subreddit is private, banned, "
                "missing, or the client lacks access"
            )
        if status >= 400:
            raise _Transient(f"HTTP {status}")
        return response

    def _respect_ratelimit(self, response: httpx.Response) -> None:
        remaining = _float(response.headers.get("X-Ratelimit-Remaining"))
        if remaining is not None and remaining < 1:
            reset = _float(response.headers.get("X-Ratelimit-Reset")) or 1.0
            log.info("reddit rate limit used up; waiting", extra={"reset_s": reset})
            self.sleep(max(_MIN_RATE_SLEEP_S, reset))

    def _access_token(self) -> str:
        now = time.monotonic()
        if self._token is not None and now < self._token_expires:
            return self._token
        assert self._client is not None
        try:
            response = self._client.post(
                self.auth + "/api/v1/access_token",
                data={"grant_type": "client_credentials"},
                auth=self._credentials,
            )
        except httpx.HTTPError as exc:
            raise _Transient(f"token request: {type(exc).__name__}: {exc}") from None
        if response.status_code in (400, 401, 403):
            raise ConnectorError(
                f"reddit refused the client credentials (HTTP {response.status_code}); check "
                "MOODWIRE_REDDIT_CLIENT_ID / MOODWIRE_REDDIT_CLIENT_SECRET (new clients need "
                "Reddit's approval since late 2025)"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(
                f"token request: HTTP {response.status_code}",
                parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            answer = orjson.loads(response.content)
            token = str(answer["access_token"])
            ttl = float(answer.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise _Transient(f"token answer unreadable: {exc}") from None
        self._token = token
        # Short-lived tokens (tests) refresh at half life rather than never.
        self._token_expires = now + max(ttl - _TOKEN_MARGIN_S, ttl / 2)
        return token


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _created(child: Any) -> float | None:
    data = child.get("data") if isinstance(child, dict) else None
    value = data.get("created_utc") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def map_thing(child: Mapping[str, Any]) -> dict[str, Any]:
    """A ``t3``/``t1`` thing as post fields (or an ``op: delete``)."""
    kind = child["kind"]
    data = child["data"]
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("thing has no fullname")
    created = data["created_utc"]
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise TypeError("created_utc is not a number")
    body = data.get("selftext" if kind == "t3" else "body")
    if isinstance(body, str) and body.strip() in _GONE:
        # Reddit never says when a thing was removed; the moment we saw it is the latest
        # it can have happened.
        return {
            "op": "delete",
            "id": name,
            "source": SOURCE,
            "created_at": datetime.now(UTC).isoformat(),
        }
    metadata: dict[str, Any] = {"subreddit": data.get("subreddit"), "score": data.get("score")}
    if kind == "t3":
        title = str(data["title"])
        text = title + "\n\n" + body if isinstance(body, str) and body else title
        metadata["kind"] = "post"
    else:
        if not isinstance(body, str):
            raise TypeError("comment has no body")
        text = body
        metadata.update(kind="comment", link_id=data.get("link_id"))
        if data.get("parent_id"):
            metadata["parent_id"] = data.get("parent_id")
    permalink = data.get("permalink")
    if isinstance(permalink, str) and permalink.startswith("/"):
        url = "https://www.reddit.com" + permalink
    elif kind == "t1" and isinstance(data.get("link_id"), str):
        url = f"https://www.reddit.com/comments/{data['link_id'][3:]}/_/{name[3:]}/"
    else:
        url = f"https://www.reddit.com/comments/{name[3:]}/"
    author = data.get("author")
    return {
        "id": name,
        "source": SOURCE,
        "text": text,
        "created_at": _iso(float(created)),
        "author": author if isinstance(author, str) else None,
        "url": url,
        "lang": None,
        "metadata": metadata,
    }
