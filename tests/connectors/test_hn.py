"""hn:// polls a real local Hacker News Firebase API: mapping, resume from last_id, null
items waited for, deletes, malformed items, and 5xx backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moodwire.connectors import ConnectorError, Position, RawRecord, open_connector
from moodwire.connectors.hn import HackerNewsConnector, html_to_text
from moodwire.connectors.kit import contract
from moodwire.connectors.kit.hn_server import HackerNewsServer, load_items
from moodwire.connectors.registry import register, unregister

FIXTURE = Path(__file__).parent / "fixtures" / "hn" / "items.json"


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    register("hn", HackerNewsConnector)
    yield
    unregister("hn")


@pytest.fixture
def server() -> Iterator[HackerNewsServer]:
    with HackerNewsServer(load_items(FIXTURE)) as srv:
        yield srv


def _url(srv: HackerNewsServer, **options: str) -> str:
    query = {"api": srv.url, "interval": "0.05", "backoff_initial": "0.05", "backoff_max": "0.2"}
    query.update(options)
    return "hn://?" + "&".join(f"{k}={v}" for k, v in query.items())


def _comment(item_id: int, text: str = "Acme is fine") -> dict[str, Any]:
    return {
        "by": "u",
        "id": item_id,
        "parent": 1,
        "text": text,
        "time": 1714557600 + item_id,
        "type": "comment",
    }


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

    def last_id(self) -> int | None:
        for item in reversed(self.items):
            position = item if isinstance(item, Position) else item.position
            if position is not None:
                return int(position.offset["last_id"])
        return None

    def wait(self, check: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise self.error[0]
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; got {self.ids()}, last_id {self.last_id()}")

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.stop()
        self.thread.join(5)
        self.connector.close()
        assert not self.thread.is_alive()


def test_golden_mapping_deletes_and_skips(server: HackerNewsServer) -> None:
    connector = open_connector(_url(server, start="9001"))
    expected = [
        {
            "id": "9001",
            "source": "hackernews",
            "text": "Show HN: A sentiment dashboard\n\nWe built it on Acme Cloud.\n"
            "It's fast & cheap: example.com",
            "author": "pg_fan",
            "created_at": "2024-05-01T10:00:00+00:00",
            "lang": None,
            "url": "https://news.ycombinator.com/item?id=9001",
        },
        {
            "id": "9002",
            "source": "hackernews",
            "text": "Acme Cloud went down twice last month.\nI'd use Globex instead.",
            "author": "skeptic",
            "created_at": "2024-05-01T10:01:00+00:00",
            "lang": None,
            "url": "https://news.ycombinator.com/item?id=9002",
        },
        {
            "id": "9006",
            "source": "hackernews",
            "text": "Globex & Initech merge",
            "author": "linker",
            "created_at": "2024-05-01T10:04:00+00:00",
            "lang": None,
            "url": "https://news.ycombinator.com/item?id=9006",
        },
    ]
    # Three posts, two deletes (9004 deleted, 9005 dead); the job 9003 is skipped.
    records = contract.collect(connector, lambda rs: len(rs) >= 5, timeout=10)
    assert all(r.origin.endswith(".json") for r in records)
    contract.check_positions(records)
    assert [contract.golden(p) for p in contract.posts_of(records)] == expected
    posts = contract.posts_of(records)
    assert posts[0].metadata == {"kind": "story", "score": 57, "descendants": 2}
    assert posts[1].metadata == {"kind": "comment", "parent": 9001}
    assert (posts[2].metadata or {}).get("link") == "https://news.example/merge"
    changes = [(c.op, c.id, c.source) for c in contract.changes_of(records)]
    assert changes == [("delete", "9004", "hackernews"), ("delete", "9005", "hackernews")]
    assert records[-1].position == Position("items", {"last_id": 9006})


def test_html_to_text() -> None:
    assert html_to_text("a<p>b &amp; c<br>d &#x2F; <code>x&lt;y</code>") == "a\nb & c\nd / x<y"
    assert html_to_text("") == ""


def test_start_latest_begins_at_maxitem(server: HackerNewsServer) -> None:
    with Run(open_connector(_url(server))) as run:
        run.wait(lambda: "9006" in run.ids())
        server.add(_comment(9007))
        run.wait(lambda: "9007" in run.ids())
        polls = len(server.requests)
        run.wait(lambda: len(server.requests) >= polls + 3)
    assert run.ids() == ["9006", "9007"]
    assert min(server.requested_ids()) == 9006


def test_resume_from_last_id(server: HackerNewsServer) -> None:
    connector = open_connector(_url(server))
    connector.resume({"items": {"last_id": 9002}})
    with Run(connector) as run:
        run.wait(lambda: "9006" in run.ids())
    # Fetched concurrently, handled in id order.
    assert sorted(server.requested_ids()[:4]) == [9003, 9004, 9005, 9006]
    assert run.ids() == ["9004", "9005", "9006"]
    assert run.last_id() == 9006


def test_null_item_is_retried_then_yielded(server: HackerNewsServer) -> None:
    server.null_for(9002, 3)
    with Run(open_connector(_url(server, start="9001"))) as run:
        run.wait(lambda: "9002" in run.ids())
        run.wait(lambda: run.last_id() == 9006)
    ids = run.ids()
    assert ids.count("9002") == 1 and ids.count("9006") == 1
    assert len(server.item_requests(9002)) == 4
    by_id = {str(r.fields["id"]): r for r in run.records if r.fields}
    # Items after the missing one come at once, but the cursor waits for it.
    assert by_id["9006"].position == Position("items", {"last_id": 9001})
    assert by_id["9002"].position == Position("items", {"last_id": 9006})


def test_null_item_is_skipped_after_the_grace(server: HackerNewsServer) -> None:
    server.null_for(9006, 10**6)
    with Run(open_connector(_url(server, start="9005", null_grace="0.3"))) as run:
        run.wait(lambda: run.last_id() == 9006)
    assert run.ids() == ["9005"]
    assert isinstance(run.items[-1], Position)


def test_malformed_item_is_an_error_record_and_polling_goes_on(
    server: HackerNewsServer,
) -> None:
    server.set_raw(9007, b'{"id": 9007, "type": "comm')
    server.set_raw(9008, b'{"id": 9008, "type": "comment", "time": "soon", "text": "x"}')
    server.add(_comment(9009))
    with Run(open_connector(_url(server, start="9007"))) as run:
        run.wait(lambda: "9009" in run.ids())
    errors = [r for r in run.records if r.error]
    assert [e.payload[:12] for e in errors] == [b'{"id": 9007,', b'{"id": 9008,']
    assert errors[0].error and errors[0].error.startswith("malformed item JSON")
    assert errors[1].error and "time" in errors[1].error
    assert run.last_id() == 9009


def test_5xx_recovers_with_backoff(server: HackerNewsServer) -> None:
    server.fail_next(503, count=3)
    with Run(open_connector(_url(server, start="9005"))) as run:
        run.wait(lambda: "9006" in run.ids())
    assert [r.status for r in server.requests[:3]] == [503, 503, 503]
    assert run.ids() == ["9005", "9006"]


def test_kinds_filter_and_bad_options(server: HackerNewsServer) -> None:
    with Run(open_connector(_url(server, start="9001", kinds="comment"))) as run:
        run.wait(lambda: run.last_id() == 9006)
    assert run.ids() == ["9002", "9004"]
    for url in ("hn://?kinds=ask", "hn://?start=soon", "hn://news", "hn://?batch=0"):
        with pytest.raises(ConnectorError):
            open_connector(url)
