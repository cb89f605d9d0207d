"""feed+http:// polls a real local feed server: golden mapping (Atom shaped like Google
Alerts, RSS), the real captures, bad dates, conditional GET (304), resume from seen ids,
a new entry between polls, 5xx recovery and 429 Retry-After."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from moodwire.connectors import ConnectorError, Position, RawRecord, open_connector
from moodwire.connectors.feed import FeedConnector, html_to_text, real_url, unwrap_link
from moodwire.connectors.kit import contract
from moodwire.connectors.kit.feed_server import FeedServer
from moodwire.connectors.registry import register, unregister

FIXTURES = Path(__file__).parent / "fixtures" / "feed"
CAPTURES = Path("/work/shared/connectors/rss-atom")
FAST = {"interval": "0.05", "backoff_initial": "0.05", "backoff_max": "0.2", "timeout": "5"}

ATOM_GOLDEN: list[Mapping[str, Any]] = [
    {
        "id": "tag:google.com,2013:googlealerts/feed:1001",
        "source": "feed",
        "text": "Acme shares jump after strong quarter & new CEO. "
        "Investors cheered as Acme Corp reported revenue up 20% ...",
        "author": None,
        "created_at": "2024-05-01T09:30:00+00:00",
        "lang": "en",
        "url": "https://news.example.com/acme-shares-jump/",
    },
    {
        "id": "tag:google.com,2013:googlealerts/feed:1002",
        "source": "feed",
        "text": "Customers complain about Acme outage. The Acme app was down for hours on Tuesday.",
        "author": "Jane Roe",
        "created_at": "2024-05-01T06:00:00+00:00",
        "lang": "en",
        "url": "https://blog.example.org/acme-outage",
    },
]

RECALL_LINK = "https://news.example.com/2024/05/acme-recall"
RSS_GOLDEN: list[Mapping[str, Any]] = [
    {
        "id": "https://news.example.com/?p=501",
        "source": "news",
        "text": "Acme opens a new factory. The plant will employ 500 people.",
        "author": "Sam Smith",
        "created_at": "2024-05-01T11:00:00+00:00",
        "lang": "en-gb",
        "url": "https://news.example.com/2024/05/acme-factory",
    },
    {
        # No guid: the id is a hash of link and title.
        "id": hashlib.sha256(f"{RECALL_LINK}\nAcme recalls a toaster!".encode()).hexdigest()[:32],
        "source": "news",
        "text": "Acme recalls a toaster! Some toasters <overheat> — owners should stop using them.",
        "author": "News Desk",
        "created_at": "2024-04-30T08:15:00+00:00",
        "lang": "en-gb",
        "url": RECALL_LINK,
    },
]

NEW_ENTRY = """<entry>
    <id>tag:google.com,2013:googlealerts/feed:1003</id>
    <title type="html">&lt;b&gt;Acme&lt;/b&gt; wins an award</title>
    <link href="https://www.google.com/url?rct=j&amp;url=https://example.net/award&amp;ct=ga"/>
    <published>2024-05-02T07:00:00Z</published>
    <content type="html">Great news for &lt;b&gt;Acme&lt;/b&gt;.</content>
  </entry>
  """


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    for scheme in ("feed+http", "feed+https", "rss"):
        register(scheme, FeedConnector)
    yield
    for scheme in ("feed+http", "feed+https", "rss"):
        unregister(scheme)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    feeds = {
        "/alerts.xml": FIXTURES / "alerts.xml",
        "/news.rss": FIXTURES / "news.rss",
        "/baddate.rss": FIXTURES / "baddate.rss",
    }
    with FeedServer(feeds) as srv:
        yield srv


def _url(srv: FeedServer, path: str, **options: str) -> str:
    query = {**FAST, **options}
    address = srv.url.removeprefix("http://")
    return f"feed+http://{address}{path}?" + "&".join(f"{k}={v}" for k, v in query.items())


def _wait(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Run:
    """Iterates a connector in a reader thread (as the ingest loop does) until stopped."""

    def __init__(self, connector: Any) -> None:
        self.connector = connector
        self.items: list[RawRecord | Position] = []
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            for item in self.connector.records():
                self.items.append(item)
        except BaseException as exc:
            self.error.append(exc)

    @property
    def records(self) -> list[RawRecord]:
        return [i for i in self.items if isinstance(i, RawRecord)]

    def ids(self) -> list[str]:
        return [str(r.fields["id"]) for r in self.records if r.fields is not None]

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the connector did not notice stop()"
        assert not self.error, self.error


# --- mapping -----------------------------------------------------------------------------


def test_golden_atom_google_alerts_shape(server: FeedServer) -> None:
    connector = open_connector(_url(server, "/alerts.xml", once="1"))
    records = contract.check_golden(connector, ATOM_GOLDEN)
    contract.check_positions(records)
    assert {r.position.partition for r in records if r.position} == {server.url + "/alerts.xml"}
    assert records[0].fields is not None
    assert records[0].fields["metadata"]["feed_title"] == "Google Alert - Acme"


def test_golden_rss(server: FeedServer) -> None:
    connector = open_connector(_url(server, "/news.rss", once="1", source="news"))
    records = contract.check_golden(connector, RSS_GOLDEN)
    assert records[0].fields is not None
    assert records[0].fields["metadata"]["tags"] == ["Business"]


def test_entries_without_a_parseable_date_are_error_records(server: FeedServer) -> None:
    connector = open_connector(_url(server, "/baddate.rss", once="1"))
    records = contract.collect(connector, lambda rs: False)
    errors = [r for r in records if r.error]
    assert len(errors) == 2
    assert all(r.error and r.error.startswith("entry has no parseable date") for r in errors)
    assert [p.id for p in contract.posts_of(records)] == ["https://example.com/c"]
    contract.check_positions(records)


def test_broken_document_is_one_error_record(server: FeedServer) -> None:
    server.set_feed("/broken.xml", b"<html><body>Service moved</body>")
    with Run(open_connector(_url(server, "/broken.xml"))) as run:
        _wait(lambda: len(server.requests_for("/broken.xml")) >= 4, "several polls")
    assert len(run.records) == 1
    assert run.records[0].error and run.records[0].error.startswith("not a feed")
    assert run.records[0].payload.startswith(b"<html>")


def test_helpers() -> None:
    assert html_to_text("<b>Slack</b> &amp; co&nbsp;  <i>x</i><script>no()</script>") == (
        "Slack & co x"
    )
    wrapped = "https://www.google.com/url?rct=j&sa=t&url=https://a.example/x%3Fy%3D1&ct=ga"
    assert unwrap_link(wrapped) == "https://a.example/x?y=1"
    assert (
        unwrap_link("https://example.com/url?url=https://x")
        == "https://example.com/url?url=https://x"
    )
    assert real_url("rss://host/path.xml") == "https://host/path.xml"
    assert real_url("feed+http://host") == "http://host/"


# --- URLs and options --------------------------------------------------------------------


def test_urls_options_and_feeds_file(tmp_path: Path) -> None:
    connector = open_connector("rss://example.com/feed.xml?interval=60&format=xml")
    assert isinstance(connector, FeedConnector)
    # An unknown query parameter belongs to the feed, an option is ours.
    assert list(connector.feeds) == ["https://example.com/feed.xml?format=xml"]
    assert connector.interval == 60
    with pytest.raises(ConnectorError, match="does not know option"):
        open_connector("feed+https://example.com/a.xml", {"intervall": "5"})
    with pytest.raises(ConnectorError, match="feeds file"):
        open_connector("feed+https://example.com/a.xml", {"feeds": str(tmp_path / "none")})
    listing = tmp_path / "feeds.txt"
    listing.write_text(
        "# brand alerts\n\nhttps://b.example/1.xml\nrss://c.example/2  # news\n"
        "feed+http://d.example/3\nhttps://example.com/a.xml\n"
    )
    connector = open_connector("feed+https://example.com/a.xml", {"feeds": str(listing)})
    assert isinstance(connector, FeedConnector)
    assert list(connector.feeds) == [
        "https://example.com/a.xml",
        "https://b.example/1.xml",
        "https://c.example/2",
        "http://d.example/3",
    ]
    listing.write_text("ftp://nope/x\n")
    with pytest.raises(ConnectorError, match=r"feeds\.txt:1"):
        open_connector("feed+https://example.com/a.xml", {"feeds": str(listing)})


def test_feeds_file_polls_every_feed(server: FeedServer, tmp_path: Path) -> None:
    listing = tmp_path / "feeds.txt"
    listing.write_text(f"# more\n{server.url}/news.rss\n")
    connector = open_connector(_url(server, "/alerts.xml", once="1", feeds=str(listing)))
    records = contract.collect(connector, lambda rs: False)
    assert len(contract.posts_of(records)) == 4
    partitions = {r.position.partition for r in records if r.position}
    assert partitions == {server.url + "/alerts.xml", server.url + "/news.rss"}


# --- the real captures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "posts"),
    [("google_alerts_atom.xml", 20), ("TechCrunch.xml", 20), ("HuffPostCanada.xml", 2)],
)
def test_real_captures(name: str, posts: int) -> None:
    if not (CAPTURES / name).is_file():
        pytest.skip(f"real capture {CAPTURES / name} is absent (kept beside the repository)")
    with FeedServer({f"/{name}": CAPTURES / name}) as srv:
        records = contract.collect(open_connector(_url(srv, f"/{name}", once="1")), lambda _: False)
    got = contract.posts_of(records)
    assert len(got) == posts
    assert len({p.id for p in got}) == posts
    for post in got:
        assert "<b>" not in post.text and "&nbsp;" not in post.text
        assert post.url is None or "google.com/url" not in post.url
        assert post.created_at.tzinfo is not None
    if name == "google_alerts_atom.xml":
        assert got[0].text.startswith("Report offers Prediction of Automotive Slack Market")
        assert got[0].url and got[0].url.startswith("https://www.aglobalmarketresearch.com/")
    if name == "TechCrunch.xml":
        assert got[0].author == "Leena Rao" and got[0].lang == "en"


def test_invalid_date_capture_does_not_crash() -> None:
    path = CAPTURES / "InvalidDateFormat.xml"
    if not path.is_file():
        pytest.skip(f"real capture {path} is absent (kept beside the repository)")
    with FeedServer({"/bad.xml": path}) as srv:
        records = contract.collect(open_connector(_url(srv, "/bad.xml", once="1")), lambda _: False)
    # A truncated document with a junk dc:date: every entry is a post or an error record.
    assert len(records) == 2
    assert all(r.error or r.fields for r in records)
    for record in records:
        assert record.error is None or record.error.startswith("entry has no parseable date")


# --- polling, cursors, faults ------------------------------------------------------------


def test_conditional_get_second_poll_is_304(server: FeedServer) -> None:
    with Run(open_connector(_url(server, "/alerts.xml"))) as run:
        _wait(lambda: len(server.requests_for("/alerts.xml")) >= 3, "three polls")
    first, second = server.requests_for("/alerts.xml")[:2]
    assert "If-None-Match" not in first.headers and first.status == 200
    assert second.headers["If-None-Match"].startswith('"')
    assert "If-Modified-Since" in second.headers
    assert second.status == 304
    assert len(run.ids()) == 2


def test_resume_skips_seen_ids_and_sends_validators(server: FeedServer) -> None:
    url = _url(server, "/alerts.xml", once="1")
    partition = server.url + "/alerts.xml"
    connector = open_connector(url)
    connector.resume({partition: {"etag": None, "seen": [ATOM_GOLDEN[0]["id"]]}})
    records = contract.collect(connector, lambda _: False)
    assert [r.fields["id"] for r in records if r.fields] == [ATOM_GOLDEN[1]["id"]]
    assert records[-1].position is not None
    saved = dict(records[-1].position.offset)
    assert saved["seen"] == [g["id"] for g in ATOM_GOLDEN] and saved["etag"]

    again = open_connector(url)
    again.resume({partition: saved})
    assert contract.collect(again, lambda _: False) == []
    last = server.requests_for("/alerts.xml")[-1]
    assert last.headers["If-None-Match"] == saved["etag"] and last.status == 304


def test_resume_from_a_record_mid_document_loses_nothing(server: FeedServer) -> None:
    url = _url(server, "/alerts.xml", once="1")
    first = contract.collect(open_connector(url), lambda _: False)
    assert first[0].position is not None
    connector = open_connector(url)
    # Killed after the first entry's cursor was saved: the second must come again.
    connector.resume({first[0].position.partition: first[0].position.offset})
    again = contract.collect(connector, lambda _: False)
    assert [r.fields["id"] for r in again if r.fields] == [ATOM_GOLDEN[1]["id"]]


def test_new_entry_between_polls_is_yielded_once(server: FeedServer) -> None:
    server.add_entry_after("/alerts.xml", NEW_ENTRY, requests=1)
    with Run(open_connector(_url(server, "/alerts.xml"))) as run:
        _wait(lambda: len(run.ids()) >= 3, "the new entry")
        polls = len(server.requests_for("/alerts.xml"))
        _wait(lambda: len(server.requests_for("/alerts.xml")) >= polls + 3, "more polls")
    ids = run.ids()
    assert ids == [g["id"] for g in ATOM_GOLDEN] + ["tag:google.com,2013:googlealerts/feed:1003"]
    new = run.records[2].fields
    assert new is not None
    assert new["text"] == "Acme wins an award. Great news for Acme."
    assert new["url"] == "https://example.net/award"
    statuses = [r.status for r in server.requests_for("/alerts.xml")]
    assert statuses[:2] == [200, 200] and set(statuses[2:]) == {304}
    assert run.records[2].position is not None
    assert len(run.records[2].position.offset["seen"]) == 3


def test_server_errors_then_recovery(server: FeedServer) -> None:
    server.fail_next(500, count=2)
    with Run(open_connector(_url(server, "/news.rss"))) as run:
        _wait(lambda: len(run.ids()) >= 2, "posts after the 500s")
    statuses = [r.status for r in server.requests_for("/news.rss")]
    assert statuses[:3] == [500, 500, 200]
    assert len(run.ids()) == 2


def test_429_retry_after_is_honoured(server: FeedServer) -> None:
    server.rate_limit(retry_after=1, count=1)
    with Run(open_connector(_url(server, "/news.rss"))) as run:
        _wait(lambda: len(run.ids()) >= 2, "posts after the 429")
    limited, retried = server.requests_for("/news.rss")[:2]
    assert limited.status == 429 and retried.status == 200
    assert retried.at - limited.at >= 1.0


def test_stop_is_noticed_while_waiting(server: FeedServer) -> None:
    with Run(open_connector(_url(server, "/news.rss", interval="300"))) as run:
        _wait(lambda: len(run.ids()) >= 2, "the first poll")
        started = time.monotonic()
    assert time.monotonic() - started < 2


def test_silent_server_times_out_and_the_next_poll_works(server: FeedServer) -> None:
    server.go_silent(30, count=1)
    with Run(open_connector(_url(server, "/news.rss", timeout="0.5"))) as run:
        _wait(lambda: len(run.ids()) >= 2, "posts after the silent request")
    hung, retried = server.requests_for("/news.rss")[:2]
    assert retried.at - hung.at >= 0.5


def test_stop_is_noticed_during_a_hanging_request(server: FeedServer) -> None:
    server.go_silent(30, count=1)
    with Run(open_connector(_url(server, "/news.rss", timeout="20"))) as run:
        _wait(lambda: len(server.requests) >= 1, "the request")
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert run.ids() == []
