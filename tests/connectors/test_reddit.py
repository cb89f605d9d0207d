"""reddit:// polls a real local Reddit API (OAuth + listings): mapping, token reuse and
refresh, resume with before=<fullname>, rate limits, 429 Retry-After and 5xx backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from moodwire.connectors import ConnectorError, Position, RawRecord, open_connector
from moodwire.connectors.kit import contract
from moodwire.connectors.kit.reddit_server import RedditServer, thing, things_of
from moodwire.connectors.reddit import RedditConnector
from moodwire.connectors.registry import register, unregister
from moodwire.settings import get_settings

FIXTURES = Path(__file__).parent / "fixtures" / "reddit"
CAPTURES = Path("/work/shared/connectors/reddit")
SUB = "moodwire"


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MOODWIRE_REDDIT_CLIENT_ID", "moodwire-test")
    monkeypatch.setenv("MOODWIRE_REDDIT_CLIENT_SECRET", "moodwire-secret")
    get_settings.cache_clear()
    register("reddit", RedditConnector)
    yield
    unregister("reddit")
    get_settings.cache_clear()


def _fixture(name: str) -> list[dict[str, Any]]:
    return things_of(orjson.loads((FIXTURES / name).read_bytes()))


@pytest.fixture
def server() -> Iterator[RedditServer]:
    with RedditServer(_fixture("new.json"), _fixture("comments.json")) as srv:
        yield srv


def _url(srv: RedditServer, sub: str = SUB, **options: str) -> str:
    query = {"api": srv.url, "auth": srv.url, "interval": "0.05", "backoff_initial": "0.05"}
    query.update(options)
    return f"reddit://r/{sub}?" + "&".join(f"{k}={v}" for k, v in query.items())


def _post(n: int, created: float, **extra: Any) -> dict[str, Any]:
    data = {
        "name": f"t3_p{n}",
        "id": f"p{n}",
        "title": f"post {n} about Acme",
        "selftext": "",
        "author": f"user{n}",
        "subreddit": SUB,
        "score": n,
        "created_utc": created,
        "permalink": f"/r/{SUB}/comments/p{n}/post_{n}/",
    }
    data.update(extra)
    return thing("t3", data)


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

    def wait(self, check: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise self.error[0]
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; got {self.ids()}")

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.stop()
        self.thread.join(5)
        self.connector.close()
        assert not self.thread.is_alive()


def test_golden_posts_and_comments(server: RedditServer) -> None:
    connector = open_connector(_url(server))
    expected = [
        {
            "id": "t3_mw0001",
            "source": "reddit",
            "text": "Loving my Acme Phone\n\nSwitched last week & the battery lasts two days."
            "\n\nAnyone else?",
            "author": "happy_user",
            "created_at": "2024-05-01T10:00:00+00:00",
            "lang": None,
            "url": "https://www.reddit.com/r/moodwire/comments/mw0001/loving_my_acme_phone/",
        },
        {
            "id": "t3_mw0002",
            "source": "reddit",
            "text": "Globex launches a new phone today",
            "author": "newsbot",
            "created_at": "2024-05-01T10:01:00+00:00",
            "lang": None,
            "url": "https://www.reddit.com/r/moodwire/comments/mw0002/"
            "globex_launches_a_new_phone_today/",
        },
        {
            "id": "t1_c0001",
            "source": "reddit",
            "text": "Mine died after a month. Not impressed with Acme.",
            "author": "grumpy",
            "created_at": "2024-05-01T10:02:00+00:00",
            "lang": None,
            "url": "https://www.reddit.com/r/moodwire/comments/mw0001/loving_my_acme_phone/c0001/",
        },
    ]
    # Three posts and two deletes: posts first, then comments, each oldest first.
    records = contract.collect(connector, lambda rs: len(rs) >= 5, timeout=10)
    assert all(r.origin for r in records)
    assert [contract.golden(p) for p in contract.posts_of(records)] == expected
    contract.check_positions(records)
    posts = contract.posts_of(records)
    assert posts[0].metadata == {"subreddit": SUB, "score": 42, "kind": "post"}
    assert (posts[2].metadata or {}).get("kind") == "comment"
    assert (posts[2].metadata or {}).get("link_id") == "t3_mw0001"
    deleted = {(c.op, c.id, c.source) for c in contract.changes_of(records)}
    assert deleted == {("delete", "t3_mw0003", "reddit"), ("delete", "t1_c0002", "reddit")}
    # Cursors per listing, each at its newest thing.
    last = {r.position.partition: r.position.offset for r in records if r.position}
    assert last[f"r/{SUB}/posts"] == {"newest": "t3_mw0003", "created_utc": 1714557900.0}
    assert last[f"r/{SUB}/comments"]["newest"] == "t1_c0002"
    first = server.listing_requests("/new")[0]
    assert first.query["limit"] == "100"
    assert first.headers["User-Agent"].startswith("moodwire/")


def test_real_captures_map(tmp_path: Path) -> None:
    if not CAPTURES.is_dir():
        pytest.skip(f"real Reddit captures not present at {CAPTURES}")
    subreddit = orjson.loads((CAPTURES / "subreddit.json").read_bytes())
    thread = orjson.loads((CAPTURES / "thread.json").read_bytes())
    posts = [t for t in things_of(subreddit) if t["kind"] == "t3"]
    comments = [t for t in things_of(thread) if t["kind"] == "t1"]
    with RedditServer(posts, comments) as srv:
        connector = open_connector(_url(srv, "netsec"))
        want = len(posts) + min(100, len(comments))
        records = contract.collect(connector, lambda rs: len(rs) >= want, timeout=10)
    assert all(r.error is None for r in records), [r.error for r in records if r.error]
    contract.check_positions(records)
    by_id = {p.id: p for p in contract.posts_of(records)}
    deletes = {c.id for c in contract.changes_of(records)}
    assert len(by_id) + len(deletes) == len(records)
    post_data = next(t["data"] for t in posts if t["data"]["name"] == "t3_552rz1")
    post = by_id["t3_552rz1"]
    assert post.source == "reddit" and post.author == "gsuberland"
    assert post.text == post_data["title"] + "\n\n" + post_data["selftext"]
    assert post.created_at.isoformat() == "2016-09-29T15:41:58+00:00"
    assert post.url == "https://www.reddit.com" + post_data["permalink"]
    assert post.metadata is not None
    assert post.metadata["subreddit"] == "netsec" and post.metadata["kind"] == "post"
    # The thread's comments have no permalink: the URL is built from link and comment ids.
    comment_data = max(comments, key=lambda t: t["data"]["created_utc"])["data"]
    comment = by_id.get(comment_data["name"])
    if comment is not None:  # the newest comment may itself be [deleted]
        assert comment.text == comment_data["body"]
        assert comment.url == (
            f"https://www.reddit.com/comments/{comment_data['link_id'][3:]}/_/"
            f"{comment_data['name'][3:]}/"
        )


def test_token_fetched_once_and_reused(server: RedditServer) -> None:
    with Run(open_connector(_url(server, kinds="posts"))) as run:
        run.wait(lambda: len(server.listing_requests()) >= 4)
    assert server.token_requests == 1
    tokens = {r.headers["Authorization"].lower() for r in server.listing_requests()}
    assert len(tokens) == 1 and next(iter(tokens)).startswith("bearer ")
    token_call = next(r for r in server.requests if r.path == "/api/v1/access_token")
    assert token_call.headers["Authorization"].startswith("Basic ")


def test_token_refreshed_on_401(server: RedditServer) -> None:
    with Run(open_connector(_url(server, kinds="posts"))) as run:
        run.wait(lambda: "t3_mw0002" in run.ids())
        server.expire_tokens()
        server.add(_post(7, 1714558000.0))
        run.wait(lambda: "t3_p7" in run.ids())
    assert server.token_requests == 2
    statuses = [r.status for r in server.listing_requests()]
    assert 401 in statuses and statuses[-1] == 200


def test_wrong_credentials_are_a_connector_error(
    server: RedditServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODWIRE_REDDIT_CLIENT_SECRET", "wrong")
    get_settings.cache_clear()
    with Run(open_connector(_url(server))) as run:
        run.thread.join(5)
    assert run.error and isinstance(run.error[0], ConnectorError)
    assert "MOODWIRE_REDDIT_CLIENT_SECRET" in str(run.error[0])


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOODWIRE_REDDIT_CLIENT_SECRET")
    get_settings.cache_clear()
    with pytest.raises(ConnectorError) as caught:
        open_connector("reddit://r/python")
    message = str(caught.value)
    assert "MOODWIRE_REDDIT_CLIENT_ID" in message and "MOODWIRE_REDDIT_CLIENT_SECRET" in message
    assert "approval" in message and "late 2025" in message


def test_bad_urls_and_options() -> None:
    for url in ("reddit://python", "reddit://r/", "reddit://r/a b", "reddit://r/x?limit=500"):
        with pytest.raises(ConnectorError):
            open_connector(url)
    with pytest.raises(ConnectorError, match="kinds"):
        open_connector("reddit://r/python?kinds=votes")
    with pytest.raises(ConnectorError, match="does not know option"):
        open_connector("reddit://r/python?intervall=3")
    assert open_connector("reddit://r/python?kinds=posts").cursor_name == "reddit://r/python"


def test_resume_uses_before_and_new_items_come_once() -> None:
    posts = [_post(1, 1000.0), _post(2, 1001.0), _post(3, 1002.0)]
    with RedditServer(posts) as srv:
        connector = open_connector(_url(srv, kinds="posts"))
        connector.resume({f"r/{SUB}/posts": {"newest": "t3_p2", "created_utc": 1001.0}})
        with Run(connector) as run:
            run.wait(lambda: "t3_p3" in run.ids())
            srv.add(_post(4, 1003.0))
            run.wait(lambda: "t3_p4" in run.ids())
            seen = len(srv.listing_requests())
            run.wait(lambda: len(srv.listing_requests()) >= seen + 3)
        assert run.ids() == ["t3_p3", "t3_p4"]
        requests = srv.listing_requests()
        assert requests[0].query["before"] == "t3_p2"
        assert requests[-1].query["before"] == "t3_p4"
        assert run.records[-1].position == Position(
            f"r/{SUB}/posts", {"newest": "t3_p4", "created_utc": 1003.0}
        )


def test_full_pages_are_followed_to_the_newest() -> None:
    with RedditServer([_post(n, 1000.0 + n) for n in range(1, 8)]) as srv:
        connector = open_connector(_url(srv, kinds="posts", limit="3"))
        connector.resume({f"r/{SUB}/posts": {"newest": "t3_p1", "created_utc": 1001.0}})
        with Run(connector) as run:
            run.wait(lambda: len(run.ids()) >= 6)
        assert run.ids() == [f"t3_p{n}" for n in range(2, 8)]
        befores = [r.query["before"] for r in srv.listing_requests()[:3]]
        assert befores == ["t3_p1", "t3_p4", "t3_p7"]


def test_removed_cursor_falls_back_to_created_utc() -> None:
    # The saved fullname is gone: `before` answers empty forever; newer items exist.
    with RedditServer([_post(1, 1000.0), _post(3, 1002.0)]) as srv:
        connector = open_connector(_url(srv, kinds="posts", stale_polls="2"))
        connector.resume({f"r/{SUB}/posts": {"newest": "t3_gone", "created_utc": 1001.0}})
        with Run(connector) as run:
            run.wait(lambda: "t3_p3" in run.ids())
            srv.add(_post(4, 1003.0))
            run.wait(lambda: "t3_p4" in run.ids())
        assert run.ids() == ["t3_p3", "t3_p4"]
        assert any("before" not in r.query for r in srv.listing_requests())


def test_429_retry_after_is_honoured(server: RedditServer) -> None:
    server.fail_next(429, retry_after="1")
    with Run(open_connector(_url(server, kinds="posts", backoff_max="0.1"))) as run:
        run.wait(lambda: "t3_mw0002" in run.ids())
    requests = server.listing_requests()
    assert requests[0].status == 429 and requests[1].status == 200
    assert requests[1].at - requests[0].at >= 1.0


def test_5xx_recovers_with_backoff(server: RedditServer) -> None:
    server.fail_next(503, count=3)
    with Run(open_connector(_url(server, kinds="posts", backoff_max="0.2"))) as run:
        run.wait(lambda: "t3_mw0002" in run.ids())
    statuses = [r.status for r in server.listing_requests()]
    assert statuses[:4] == [503, 503, 503, 200]
    assert run.ids().count("t3_mw0001") == 1


def test_ratelimit_used_up_waits_for_reset(server: RedditServer) -> None:
    server.ratelimit_remaining = 0
    server.ratelimit_reset = 1
    with Run(open_connector(_url(server, kinds="posts", interval="0.01"))) as run:
        run.wait(lambda: len(server.listing_requests()) >= 2, timeout=5)
    first, second = server.listing_requests()[:2]
    assert second.at - first.at >= 0.9


def test_unreadable_thing_is_an_error_record_and_polling_goes_on() -> None:
    bad = thing("t3", {"name": "t3_bad", "title": "no timestamp", "subreddit": SUB})
    with RedditServer([bad, _post(2, 1001.0)]) as srv:
        with Run(open_connector(_url(srv, kinds="posts"))) as run:
            run.wait(lambda: "t3_p2" in run.ids())
            srv.add(_post(3, 1002.0))
            run.wait(lambda: "t3_p3" in run.ids())
        errors = [r for r in run.records if r.error]
        assert len(errors) == 1 and "created_utc" in str(errors[0].error)
        assert b"t3_bad" in errors[0].payload


def test_token_refreshed_before_it_expires() -> None:
    with RedditServer([_post(1, 1000.0)], token_ttl=1) as srv:
        with Run(open_connector(_url(srv, kinds="posts"))) as run:
            run.wait(lambda: srv.token_requests >= 2, timeout=5)
        assert all(r.status == 200 for r in srv.listing_requests())
