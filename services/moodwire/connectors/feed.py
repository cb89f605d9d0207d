"""``feed+https://HOST/PATH``: entries of RSS and Atom feeds (news, Google Alerts), polled.

``feed+https://www.google.com/alerts/feeds/123/456``, ``feed+http://127.0.0.1:8080/x.xml``,
``rss://host/path.xml`` (an alias of ``feed+https://``: rss:// always means HTTPS). The URL
minus ``feed+`` is the feed's own URL; query parameters that are not options below stay
part of that URL (``feed+https://host/rss?format=xml``), options given in code must be known.
Options: ``feeds=FILE`` (more feeds, one URL per line, ``#`` comments and blank lines
ignored; ``http(s)://``, ``feed+http(s)://`` or ``rss://``), ``interval`` (seconds between
polls of each feed, default 300), ``timeout`` (seconds for a whole HTTP request, default 20),
``backoff_initial`` / ``backoff_max`` (after a failed poll, default 5 s / 600 s),
``source`` (the posts' ``source``, default ``feed``), ``once=1`` (poll each feed once, then
end: tests and backfills; a failed poll is then not retried).

Fetched with httpx (redirects followed) and parsed from the bytes by feedparser. Polls are
conditional (``If-None-Match`` / ``If-Modified-Since`` from the saved cursor); 304 means
nothing new. 429/503 wait at least ``Retry-After``; other failures are logged and retried
with backoff; nothing a server sends ends the connector. A post is ``title. summary`` (or
the content when there is no summary) as plain text, its id the Atom ``id`` / RSS ``guid``
(else the first 32 hex digits of sha256(link + newline + title)), ``created_at`` the entry's
published (else updated) date in UTC, ``author`` dc:creator / author, ``lang`` the entry's
xml:lang or the feed's language, ``url`` the link with Google's ``/url?url=`` redirect
unwrapped. An entry without a parseable date is an error record (a dead letter downstream).
A document that is no feed (not XML, no entries) is one error record per distinct broken
document; the same broken bytes fetched again are only logged. Feeds have no deletes or
edits: an entry that changes keeps its id and is not sent again.

Cursor: partition = the feed URL, offset ``{"etag", "last_modified", "seen"}`` where
``seen`` holds the ids of the entries in the last fetched document (at most 500); those
are never yielded again.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser
import httpx
import orjson

from moodwire.connectors.backoff import Backoff, parse_retry_after
from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.logs import get_logger

log = get_logger(__name__)

OPTIONS = {"feeds", "interval", "timeout", "backoff_initial", "backoff_max", "source", "once"}
MAX_SEEN = 500
# A feed is a few hundred KiB at most; more is a misconfigured URL, not news.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Full-article content:encoded can be long; the pipeline refuses texts over 20k characters.
MAX_TEXT_CHARS = 10_000
# post.v1 refuses ids over 256 characters; longer guids are hashed instead.
_MAX_ID_CHARS = 256
_WAIT_SLICE_S = 0.25
_USER_AGENT = "moodwire-feed/1 (+https://github.com/moodwire)"
_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
_SPACE_RE = re.compile(r"\s+")


def real_url(url: str) -> str:
    """The HTTP URL a connector-style feed URL names (``feed+https://``, ``rss://``)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("feed+https", "feed+http"):
        scheme = scheme[len("feed+") :]
    elif scheme == "rss":
        scheme = "https"
    if scheme not in ("http", "https") or not parts.netloc:
        raise ConnectorError(
            f"{url!r} is not a feed URL (expected feed+https://HOST/PATH, feed+http://, "
            "rss:// or http(s)://)"
        )
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def read_feed_list(path: Path) -> list[str]:
    """Feed URLs from a text file: one per line, ``#`` starts a comment."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectorError(f"cannot read the feeds file {path}: {exc}") from None
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(real_url(line))
        except ConnectorError as exc:
            raise ConnectorError(f"{path}:{number}: {exc}") from None
    return out


@dataclass
class _Feed:
    url: str
    etag: str | None = None
    last_modified: str | None = None
    seen: list[str] = field(default_factory=list)
    due: float = 0.0
    polled: bool = False
    backoff: Backoff | None = None
    # sha256 of the last broken document, so the same bytes are not dead-lettered each poll.
    broken: str | None = None

    def offset(self) -> dict[str, Any]:
        return {"etag": self.etag, "last_modified": self.last_modified, "seen": self.seen}


class _Failed(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: httpx.Headers


class FeedConnector(Connector):
    resumable = True

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        super().__init__(url, options)
        # The URL's own query belongs to the feed except for our option names; an unknown
        # option given in code is a typo, as for every connector.
        in_query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.check_options(OPTIONS | set(in_query))
        feed_query = urlencode([(k, v) for k, v in parse_qsl(url.query, True) if k not in OPTIONS])
        first = real_url(urlunsplit((url.scheme, url.netloc, url.path, feed_query, "")))
        urls = [first]
        feeds_file = self.option_str("feeds")
        if feeds_file is not None:
            urls.extend(read_feed_list(Path(feeds_file)))
        self.interval = self.option_float("interval", 300.0, minimum=0.01)
        self.timeout = self.option_float("timeout", 20.0, minimum=0.05)
        self.backoff_initial = self.option_float("backoff_initial", 5.0, minimum=0.001)
        self.backoff_max = max(
            self.backoff_initial, self.option_float("backoff_max", 600.0, minimum=0.001)
        )
        self.source = self.option_str("source", "feed") or "feed"
        once = (self.option_str("once") or "0").lower()
        if once not in ("0", "1", "true", "false", "yes", "no"):
            raise ConnectorError(f"option once={once!r}: expected 1 or 0")
        self.once = once in ("1", "true", "yes")
        self.feeds: dict[str, _Feed] = {}
        for feed_url in urls:
            if feed_url not in self.feeds:
                self.feeds[feed_url] = _Feed(
                    feed_url, backoff=Backoff(self.backoff_initial, self.backoff_max)
                )
        self._client: httpx.Client | None = None

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        super().resume(cursors)
        for partition, offset in cursors.items():
            feed = self.feeds.get(partition)
            if feed is None or not isinstance(offset, Mapping):
                continue
            etag, modified, seen = (
                offset.get("etag"),
                offset.get("last_modified"),
                offset.get("seen"),
            )
            feed.etag = etag if isinstance(etag, str) else None
            feed.last_modified = modified if isinstance(modified, str) else None
            if isinstance(seen, list):
                feed.seen = [s for s in seen if isinstance(s, str)][:MAX_SEEN]

    # --- the poll loop -----------------------------------------------------------------

    def records(self) -> Iterator[RawRecord | Position]:
        self._client = httpx.Client(
            timeout=self.timeout,
            follow_redirects=True,
            headers={"User-Agent": _USER_AGENT, "Accept": _ACCEPT},
        )
        try:
            while not self.stopped:
                pending = [f for f in self.feeds.values() if not (self.once and f.polled)]
                if not pending:
                    return
                feed = min(pending, key=lambda f: f.due)
                if self.sleep(feed.due - time.monotonic()):
                    return
                yield from self._poll(feed)
        finally:
            client, self._client = self._client, None
            client.close()

    def _poll(self, feed: _Feed) -> Iterator[RawRecord | Position]:
        assert feed.backoff is not None
        feed.polled = True
        try:
            answer = self._fetch(feed)
        except _Failed as exc:
            if self.stopped:
                return
            delay = feed.backoff.next_delay(exc.retry_after)
            feed.due = time.monotonic() + delay
            log.warning(
                "feed poll failed",
                extra={"feed": feed.url, "reason": str(exc), "retry_in_s": round(delay, 3)},
            )
            return
        feed.backoff.reset()
        feed.due = time.monotonic() + self.interval
        if answer.status == 304:
            log.debug("feed not modified", extra={"feed": feed.url})
            return
        yield from self._document(feed, answer)

    def _fetch(self, feed: _Feed) -> _Answer:
        """One GET, in a helper thread so that stop() is noticed while a server is slow;
        the whole request (connect to last byte) must finish within ``timeout``."""
        headers: dict[str, str] = {}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        result: list[_Answer | _Failed] = []
        done = threading.Event()
        abandoned = threading.Event()
        client = self._client
        assert client is not None

        def get() -> None:
            try:
                result.append(_request(client, feed.url, headers, abandoned))
            except _Failed as exc:
                result.append(exc)
            except Exception as exc:  # whatever httpx raises is one failed poll
                result.append(_Failed(f"{type(exc).__name__}: {exc}"))
            finally:
                done.set()

        threading.Thread(target=get, name="feed-fetch", daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while not done.wait(_WAIT_SLICE_S):
            if self.stopped or time.monotonic() >= deadline:
                abandoned.set()
                raise _Failed("stopped" if self.stopped else f"no answer in {self.timeout:g} s")
        outcome = result[0]
        if isinstance(outcome, _Failed):
            raise outcome
        return outcome

    # --- one fetched document ----------------------------------------------------------

    def _document(self, feed: _Feed, answer: _Answer) -> Iterator[RawRecord | Position]:
        etag = answer.headers.get("ETag")
        modified = answer.headers.get("Last-Modified")
        failure: str | None = None
        parsed: Any = None
        try:
            parsed = feedparser.parse(
                io.BytesIO(answer.body),
                response_headers={
                    "content-type": answer.headers.get("Content-Type", "application/xml"),
                    "content-location": feed.url,
                },
            )
        except Exception as exc:  # a parser bug must not end the connector
            failure = f"feedparser failed: {type(exc).__name__}: {exc}"
        entries = list(parsed.entries) if parsed is not None else []
        if parsed is not None and not entries and (parsed.bozo or not parsed.get("version")):
            failure = f"not a feed: {parsed.get('bozo_exception') or 'no feed elements'}"
        if failure is not None:
            yield from self._broken(feed, answer, etag, modified, failure)
            return
        feed.broken = None
        assert parsed is not None
        feed_info = parsed.get("feed", {})
        feed_lang = _str(feed_info.get("language"))
        feed_title = _plain(feed_info.get("title_detail")) or _str(feed_info.get("title"))

        old_seen = list(feed.seen)
        old_seen_set = set(old_seen)
        old_etag, old_modified = feed.etag, feed.last_modified
        ids: list[str] = []
        todo: list[tuple[str, int, Any]] = []
        for index, entry in enumerate(entries):
            entry_id = entry_id_of(entry)
            ids.append(entry_id)
            if entry_id not in old_seen_set:
                todo.append((entry_id, index, entry))
        # An empty (valid) document must not forget what was sent: the entries may return.
        new_seen = list(dict.fromkeys(ids))[:MAX_SEEN] if ids else old_seen
        done_ids: list[str] = []
        for number, (entry_id, index, entry) in enumerate(todo):
            if self.stopped:
                return
            done_ids.append(entry_id)
            if number == len(todo) - 1:
                offset: dict[str, Any] = {"etag": etag, "last_modified": modified, "seen": new_seen}
            else:
                # Until the document's last new entry is sent, a restart must fetch it again
                # (so the old validators) and skip only what was already sent.
                partial = list(dict.fromkeys(done_ids + old_seen))[:MAX_SEEN]
                offset = {"etag": old_etag, "last_modified": old_modified, "seen": partial}
            position = Position(feed.url, offset)
            yield self._record(feed, entry_id, index, entry, feed_lang, feed_title, position)
        feed.etag, feed.last_modified, feed.seen = etag, modified, new_seen
        if not todo and (etag, modified, new_seen) != (old_etag, old_modified, old_seen):
            yield Position(feed.url, feed.offset())
        log.info(
            "feed polled",
            extra={"feed": feed.url, "entries": len(entries), "new": len(todo)},
        )

    def _broken(
        self,
        feed: _Feed,
        answer: _Answer,
        etag: str | None,
        modified: str | None,
        failure: str,
    ) -> Iterator[RawRecord | Position]:
        digest = hashlib.sha256(answer.body).hexdigest()
        if digest == feed.broken:
            log.warning("feed still broken; skipped", extra={"feed": feed.url, "reason": failure})
            return
        feed.broken = digest
        log.warning("feed document is broken", extra={"feed": feed.url, "reason": failure})
        # The validators move on so the same broken bytes answer 304 next time; seen stays.
        feed.etag, feed.last_modified = etag, modified
        yield RawRecord(
            payload=answer.body[:65536],
            origin=feed.url,
            error=f"{failure} (HTTP {answer.status}, {len(answer.body)} bytes)"[:300],
            position=Position(feed.url, feed.offset()),
        )

    def _record(
        self,
        feed: _Feed,
        entry_id: str,
        index: int,
        entry: Any,
        feed_lang: str | None,
        feed_title: str | None,
        position: Position,
    ) -> RawRecord:
        origin = f"{feed.url}#entry={index}"
        payload = _entry_payload(entry)
        try:
            fields = map_entry(
                entry, source=self.source, feed_url=feed.url, lang=feed_lang, title=feed_title
            )
            fields["id"] = entry_id
        except _NoDate as exc:
            return RawRecord(payload, origin, error=str(exc), position=position)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            reason = f"unreadable entry: {type(exc).__name__}: {exc}"[:300]
            return RawRecord(payload, origin, error=reason, position=position)
        return RawRecord(payload, origin, fields=fields, position=position)


# --- HTTP ---------------------------------------------------------------------------------


def _request(
    client: httpx.Client, url: str, headers: dict[str, str], abandoned: threading.Event
) -> _Answer:
    try:
        with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status in (429, 503):
                raise _Failed(
                    f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After"))
                )
            if status == 304:
                return _Answer(304, b"", response.headers)
            if status >= 400 or status < 200:
                raise _Failed(f"HTTP {status}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                if abandoned.is_set():
                    raise _Failed("abandoned")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Failed(f"body over {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            return _Answer(status, b"".join(chunks), response.headers)
    except httpx.HTTPError as exc:
        raise _Failed(f"{type(exc).__name__}: {exc}") from None


# --- mapping ------------------------------------------------------------------------------


class _NoDate(ValueError):
    pass


class _TextParser(HTMLParser):
    _SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "head", "title"})
    _BLOCKS: ClassVar[frozenset[str]] = frozenset(
        {"p", "br", "div", "li", "blockquote", "h1", "h2", "h3", "h4", "tr", "img"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(value: str) -> str:
    """HTML as one line of plain text: tags dropped, entities unescaped, spaces collapsed."""
    parser = _TextParser()
    try:
        parser.feed(value)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # rare; the tags can go by regex
        text = html.unescape(_TAG_RE.sub(" ", value))
    return _SPACE_RE.sub(" ", text.replace("\xa0", " ")).strip()


def _plain(detail: Any) -> str | None:
    """A feedparser text construct (``title_detail``, ``content[0]``) as plain text."""
    if not isinstance(detail, Mapping):
        return None
    value = detail.get("value")
    if not isinstance(value, str):
        return None
    kind = str(detail.get("type") or "")
    if "html" in kind or _TAG_RE.search(value):
        return html_to_text(value) or None
    return _SPACE_RE.sub(" ", value).strip() or None


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def unwrap_link(link: str | None) -> str | None:
    """Google's redirect (``https://www.google.com/url?...&url=REAL``) -> REAL."""
    if not link:
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return link
    host = parts.netloc.lower()
    if (host == "google.com" or host.endswith(".google.com")) and parts.path == "/url":
        query = dict(parse_qsl(parts.query))
        real = query.get("url") or query.get("q")
        if real and real.startswith(("http://", "https://")):
            return real
    return link


def entry_id_of(entry: Any) -> str:
    """The Atom id / RSS guid, else a hash of the (unwrapped) link and the title."""
    raw = _str(entry.get("id"))
    if raw is not None and len(raw) <= _MAX_ID_CHARS:
        return raw
    if raw is not None:
        return hashlib.sha256(raw.encode()).hexdigest()[:32]
    link = unwrap_link(_str(entry.get("link"))) or ""
    title = _str(entry.get("title")) or ""
    return hashlib.sha256(f"{link}\n{title}".encode()).hexdigest()[:32]


def _date(entry: Any) -> datetime:
    for name in ("published_parsed", "updated_parsed"):
        # dict.get: feedparser's own get() maps updated -> published with a warning.
        parsed = dict.get(entry, name)
        if parsed is None:
            continue
        try:
            # feedparser's *_parsed are struct_time in UTC.
            year, month, day, hour, minute, second = (int(v) for v in parsed[:6])
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except (TypeError, ValueError, OverflowError):
            continue
    raw = {k: dict.get(entry, k) for k in ("published", "updated") if dict.get(entry, k)}
    shown = ", ".join(f"{k}={str(v)[:60]!r}" for k, v in raw.items()) or "no date elements"
    raise _NoDate(f"entry has no parseable date ({shown})")


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def map_entry(
    entry: Any,
    *,
    source: str = "feed",
    feed_url: str | None = None,
    lang: str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """A feedparser entry as post fields; raises _NoDate (a ValueError) without a date."""
    created_at = _date(entry)
    headline = _plain(entry.get("title_detail")) or _str(entry.get("title")) or ""
    body = _plain(entry.get("summary_detail"))
    if not body:
        contents = entry.get("content") or []
        body = _plain(contents[0]) if contents else None
    if not body and isinstance(entry.get("summary"), str):
        # feedparser's summary without a detail is its sanitized HTML.
        body = html_to_text(entry["summary"]) or None
    if body and body == headline:
        body = None
    if headline and body:
        joiner = " " if headline[-1] in ".!?…:" else ". "
        text = headline + joiner + body
    else:
        text = headline or body or ""
    detail = entry.get("author_detail")
    # RSS <author> is "email (Name)"; the name alone is what a post's author is.
    author = (_str(detail.get("name")) if isinstance(detail, Mapping) else None) or _str(
        entry.get("author")
    )
    entry_lang = None
    for detail in ("title_detail", "summary_detail"):
        value = entry.get(detail)
        if isinstance(value, Mapping) and _str(value.get("language")):
            entry_lang = _str(value.get("language"))
            break
    link = unwrap_link(_str(entry.get("link")))
    metadata: dict[str, Any] = {}
    if feed_url:
        metadata["feed"] = feed_url
    if title:
        metadata["feed_title"] = title
    tags = [t.get("term") for t in entry.get("tags") or [] if isinstance(t, Mapping)]
    tags = [t for t in tags if isinstance(t, str) and t.strip()]
    if tags:
        metadata["tags"] = tags[:20]
    return {
        "id": entry_id_of(entry),
        "source": source,
        "text": _shorten(text, MAX_TEXT_CHARS),
        "created_at": created_at.isoformat(),
        "author": author,
        "url": link,
        "lang": entry_lang or lang,
        "metadata": metadata or None,
    }


def _entry_payload(entry: Any) -> bytes:
    """What a dead letter keeps: feedparser gives no entry bytes, so the entry's parsed
    text fields as JSON (dates as their original strings)."""
    keep = ("id", "title", "link", "published", "updated", "author", "summary")
    data = {k: dict.get(entry, k) for k in keep if isinstance(dict.get(entry, k), str)}
    return orjson.dumps(data)[:65536]
