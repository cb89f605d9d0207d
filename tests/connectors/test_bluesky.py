"""bluesky:// reads a real local Jetstream (v1 and v2 WebSocket): mapping, cursors with the
v1 rewind and the v2 inclusive seq, abrupt close, 503 / 429 Retry-After, a silent stream,
malformed frames, and the brands filter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from moodwire.connectors import ConnectorError, Position, RawRecord, open_connector
from moodwire.connectors.bluesky import BlueskyConnector, map_event
from moodwire.connectors.kit import contract
from moodwire.connectors.kit.jetstream_server import JetstreamServer
from moodwire.connectors.registry import register, unregister

FIXTURE = Path(__file__).parent / "fixtures" / "bluesky" / "events.jsonl"
CAPTURES = Path("/work/shared/connectors/bluesky-jetstream")
T0 = 1714557600000000  # time_us of the fixture's first event
LAST_TIME_US = 1714557606000000  # the fixture's newest event

EXPECTED: list[dict[str, Any]] = [
    {
        "id": "at://did:plc:alice111aaaa/app.bsky.feed.post/3kpost00001",
        "source": "bluesky",
        "text": "Acme Cloud is down again, third time this week",
        "author": "did:plc:alice111aaaa",
        "created_at": "2024-05-01T09:59:58.123000+00:00",
        "lang": "en",
        "url": "https://bsky.app/profile/did:plc:alice111aaaa/post/3kpost00001",
    },
    {
        # createdAt without a zone: the event's time_us instead.
        "id": "at://did:plc:carol333cccc/app.bsky.feed.post/3kpost00002",
        "source": "bluesky",
        "text": "Loving my new iPhone, the camera is great",
        "author": "did:plc:carol333cccc",
        "created_at": "2024-05-01T10:00:02+00:00",
        "lang": None,
        "url": "https://bsky.app/profile/did:plc:carol333cccc/post/3kpost00002",
    },
    {
        "id": "at://did:plc:fumi666ffff/app.bsky.feed.post/3kpost00004",
        "source": "bluesky",
        "text": "Starbucks の新作おいしい",
        "author": "did:plc:fumi666ffff",
        "created_at": "2024-05-01T10:00:02.500000+00:00",
        "lang": "ja",
        "url": "https://bsky.app/profile/did:plc:fumi666ffff/post/3kpost00004",
    },
    {
        "id": "at://did:plc:gus777gggg/app.bsky.feed.post/3kpost00005",
        "source": "bluesky",
        "text": "Nothing to do with any brand at all",
        "author": "did:plc:gus777gggg",
        "created_at": "2024-05-01T10:00:05.900000+00:00",
        "lang": "en",
        "url": "https://bsky.app/profile/did:plc:gus777gggg/post/3kpost00005",
    },
]
ALL_IDS = {row["id"] for row in EXPECTED}
LAST_ID = EXPECTED[-1]["id"]


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    register("bluesky", BlueskyConnector)
    yield
    unregister("bluesky")


@pytest.fixture
def server() -> Iterator[JetstreamServer]:
    with JetstreamServer.from_capture(FIXTURE) as srv:
        yield srv


def _url(srv: JetstreamServer, **options: str) -> str:
    query = {"tls": "0", "backoff_initial": "0.05", "backoff_max": "0.2", "idle_timeout": "5"}
    query.update(options)
    return f"bluesky://{srv.address}?" + "&".join(f"{k}={v}" for k, v in query.items())


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
        return [i for i in list(self.items) if isinstance(i, RawRecord)]

    def ids(self, op: str | None = None) -> list[str]:
        return [
            str(r.fields["id"])
            for r in self.records
            if r.fields is not None and r.fields.get("op") == op
        ]

    def wait(self, check: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise self.error[0]
            if check():
                return
            time.sleep(0.01)
        raise AssertionError(f"timed out; got {self.ids()}")

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.stop()
        self.thread.join(5)
        self.connector.close()
        assert not self.thread.is_alive()


def _wait(check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _post(n: int, text: str = "post") -> dict[str, Any]:
    return {
        "did": "did:plc:zed999zzzz",
        "time_us": T0 + 10_000_000 + n,
        "kind": "commit",
        "commit": {
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"3kextra{n:05d}",
            "record": {"createdAt": "2024-05-01T10:00:10Z", "text": f"{text} {n}"},
            "cid": f"bafyextra{n}",
        },
    }


# --- mapping ---------------------------------------------------------------------------------


def test_golden_mapping_updates_deletes_and_skips(server: JetstreamServer) -> None:
    connector = open_connector(_url(server))
    # 4 posts, an update and a delete; a like, a follow, identity, account and an image-only
    # post are skipped.
    records = contract.collect(connector, lambda rs: len(rs) >= 6, timeout=10)
    assert len(records) == 6
    assert all(r.origin == f"ws://{server.address}/subscribe" for r in records)
    contract.check_positions(records)
    assert [contract.golden(p) for p in contract.posts_of(records)] == EXPECTED
    first = records[0]
    assert first.fields is not None
    assert first.fields["metadata"] == {
        "cid": "bafypost1",
        "reply_to": "at://did:plc:bob222bbbb/app.bsky.feed.post/3kroot00001",
    }
    assert orjson.loads(first.payload)["commit"]["rkey"] == "3kpost00001"  # the frame's bytes
    changes = contract.changes_of(records)
    assert [(c.op, c.id) for c in changes] == [
        ("update", "at://did:plc:alice111aaaa/app.bsky.feed.post/3kpost00001"),
        ("delete", "at://did:plc:carol333cccc/app.bsky.feed.post/3kpost00002"),
    ]
    assert changes[0].post is not None
    assert changes[0].post.text == "Acme Cloud is back up, and Amazon was down too"
    assert changes[0].at.isoformat() == "2024-05-01T10:00:04+00:00"
    assert changes[1].at.isoformat() == "2024-05-01T10:00:05+00:00"
    assert records[-1].position == Position(server.address, {"time_us": LAST_TIME_US})
    query = server.connections[0].query
    assert query == {"wantedCollections": "app.bsky.feed.post"}
    assert "compress" not in query


def test_skipped_events_move_the_cursor() -> None:
    events = [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines()]
    like = events[1]
    with JetstreamServer([like]) as srv, Run(open_connector(_url(srv))) as run:
        run.wait(lambda: any(isinstance(i, Position) for i in run.items))
    assert run.items[0] == Position(srv.address, {"time_us": like["time_us"]})


def test_map_event_edge_cases() -> None:
    assert map_event({"kind": "identity", "identity": {}}) is None
    assert map_event({"kind": "commit", "commit": {"collection": "app.bsky.feed.like"}}) is None
    with pytest.raises(TypeError):
        map_event(
            {
                "kind": "commit",
                "did": 7,
                "commit": {"collection": "app.bsky.feed.post", "rkey": "x"},
            }
        )


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="the shared Jetstream captures are absent")
def test_real_capture_counts() -> None:
    capture = CAPTURES / "expected_v1.jsonl"
    creates = deletes = 0
    for line in capture.read_bytes().splitlines():
        event = orjson.loads(line)
        commit = event.get("commit") or {}
        if commit.get("collection") == "app.bsky.feed.post":
            if commit["operation"] == "create" and commit["record"].get("text", "").strip():
                creates += 1
            deletes += commit["operation"] == "delete"
    assert (creates, deletes) == (16, 1)  # 17 creates, one of them image-only
    with JetstreamServer.from_capture(capture) as srv:
        srv.add(_post(1, "sentinel"))
        sentinel = "at://did:plc:zed999zzzz/app.bsky.feed.post/3kextra00001"
        connector = open_connector(_url(srv))
        records = contract.collect(
            connector, lambda rs: bool(rs[-1].fields and rs[-1].fields["id"] == sentinel)
        )
    assert not [r for r in records if r.error]
    posts = [p for p in contract.posts_of(records) if p.id != sentinel]
    assert len(posts) == creates
    assert len({p.id for p in posts}) == creates
    assert all(p.created_at.tzinfo is not None for p in posts)
    assert [c.op for c in contract.changes_of(records)] == ["delete"]


# --- cursors -------------------------------------------------------------------------------


def test_resume_asks_for_the_cursor_minus_the_rewind(server: JetstreamServer) -> None:
    saved = T0 + 3_500_000
    connector = open_connector(_url(server, rewind="2"))
    connector.resume({server.address: {"time_us": saved}})
    with Run(connector) as run:
        run.wait(lambda: LAST_ID in run.ids())
    assert server.connections[0].cursor == saved - 2_000_000
    # Events from 1.5 s after T0 on: the iPhone post is the first post sent again.
    assert run.ids()[0] == EXPECTED[1]["id"]
    last = run.records[-1].position
    assert last is not None and last.offset == {"time_us": LAST_TIME_US}


def test_resume_keeps_a_saved_cursor_newer_than_the_events(server: JetstreamServer) -> None:
    saved = LAST_TIME_US + 1
    connector = open_connector(_url(server))
    connector.resume({server.address: {"time_us": saved}, "other.host": {"time_us": 1}})
    with Run(connector) as run:
        run.wait(lambda: len(run.ids()) >= 1)
    assert server.connections[0].cursor == saved - 5_000_000
    position = run.records[-1].position
    assert position is not None and position.offset == {"time_us": saved}


def test_v2_inclusive_cursor_does_not_duplicate(server: JetstreamServer) -> None:
    connector = open_connector(_url(server, protocol="v2"))
    # seq 7 is the Starbucks post: it comes again (inclusive cursor) and must be dropped.
    connector.resume({server.address: {"seq": 7}})
    with Run(connector) as run:
        run.wait(lambda: LAST_ID in run.ids())
    seen = server.connections[0]
    assert seen.path == "/xrpc/network.bsky.jetstream.subscribeEvents"
    assert seen.cursor == 7
    assert seen.headers.get("Sec-WebSocket-Protocol") == "xrpc.v1.json"
    assert seen.query["wantedCollections"] == "app.bsky.feed.post"
    assert run.ids() == [LAST_ID]
    assert run.ids("update") == [EXPECTED[0]["id"]]
    assert run.ids("delete") == [EXPECTED[1]["id"]]
    last = run.records[-1].position
    assert last is not None and last.offset == {"seq": 11}


def test_v2_abrupt_close_resumes_at_seq_without_repeats(server: JetstreamServer) -> None:
    server.close_after(3)
    connector = open_connector(_url(server, protocol="v2"))
    with Run(connector) as run:
        run.wait(lambda: LAST_ID in run.ids())
    assert [c.cursor for c in server.accepted()] == [None, 3]
    assert run.ids() == [row["id"] for row in EXPECTED]
    assert len(run.ids("update")) == 1 and len(run.ids("delete")) == 1


def test_v2_frames_that_are_no_events_are_skipped(server: JetstreamServer) -> None:
    server.malformed_at(0, b'{"$type": "#info", "name": "OutdatedCursor"}')
    with Run(open_connector(_url(server, protocol="v2"))) as run:
        run.wait(lambda: LAST_ID in run.ids())
    assert not [r for r in run.records if r.error]
    assert run.ids() == [row["id"] for row in EXPECTED]


# --- disconnects -------------------------------------------------------------------------------


def test_abrupt_close_reconnects_with_the_cursor_and_loses_nothing(
    server: JetstreamServer,
) -> None:
    server.close_after(3)  # after the like and the iPhone post
    connector = open_connector(_url(server, rewind="1"))
    with Run(connector) as run:
        run.wait(lambda: LAST_ID in run.ids())
    accepted = server.accepted()
    assert len(accepted) == 2
    assert accepted[0].sent == 3
    assert accepted[1].cursor == T0 + 2_000_000 - 1_000_000
    assert set(run.ids()) == ALL_IDS  # the first post comes twice: it collapses by key


def test_new_events_flow_on_an_open_connection(server: JetstreamServer) -> None:
    with Run(open_connector(_url(server))) as run:
        run.wait(lambda: LAST_ID in run.ids())
        server.add(_post(2))
        run.wait(lambda: "at://did:plc:zed999zzzz/app.bsky.feed.post/3kextra00002" in run.ids())
    assert len(server.connections) == 1


def test_503_is_retried_with_backoff(server: JetstreamServer) -> None:
    server.refuse(503, count=2)
    with Run(open_connector(_url(server))) as run:
        run.wait(lambda: LAST_ID in run.ids())
    assert [c.status for c in server.connections] == [503, 503, 101]
    contract.check_reconnect_gaps([c.at for c in server.connections], backoff_max=0.2)
    assert set(run.ids()) == ALL_IDS


def test_429_retry_after_is_honoured(server: JetstreamServer) -> None:
    server.refuse(429, count=1, retry_after=1)
    with Run(open_connector(_url(server))) as run:
        run.wait(lambda: LAST_ID in run.ids())
    first, second = server.connections[:2]
    assert (first.status, second.status) == (429, 101)
    # backoff_max is 0.2 s: only the server's Retry-After explains a 1 s gap.
    contract.check_reconnect_gaps([first.at, second.at], backoff_max=0.2, retry_after=1.0)


def test_silent_stream_is_reconnected_after_idle_timeout(server: JetstreamServer) -> None:
    server.silent_after(2)
    with Run(open_connector(_url(server, idle_timeout="0.6"))) as run:
        run.wait(lambda: LAST_ID in run.ids())
    first, second = server.accepted()[:2]
    assert first.sent == 2
    assert second.at - first.at >= 0.6
    assert second.cursor == T0 + 500_000 - 5_000_000
    assert set(run.ids()) == ALL_IDS


def test_malformed_frame_is_an_error_record_and_the_stream_goes_on(
    server: JetstreamServer,
) -> None:
    server.malformed_at(1)
    with Run(open_connector(_url(server))) as run:
        run.wait(lambda: LAST_ID in run.ids())
    errors = contract.check_error_records(run.records)
    assert len(errors) == 1
    assert errors[0].error is not None and "malformed" in errors[0].error
    assert errors[0].payload.startswith(b'{"did": "did:plc:broken"')
    assert errors[0].position == Position(server.address, {"time_us": T0})
    assert run.ids() == [row["id"] for row in EXPECTED]
    assert len(server.connections) == 1


def test_a_frame_that_is_no_object_is_an_error_record() -> None:
    with JetstreamServer([b"[1, 2]", _post(3)]) as srv, Run(open_connector(_url(srv))) as run:
        run.wait(lambda: len(run.ids()) == 1)
    assert run.records[0].error is not None and "not an object" in run.records[0].error


# --- options -----------------------------------------------------------------------------------


def test_brands_filter_keeps_only_brand_posts(server: JetstreamServer) -> None:
    with Run(open_connector(_url(server, brands="1"))) as run:
        run.wait(lambda: len(run.ids("delete")) == 1)
    # Acme and "no brand" posts go; the iPhone and Starbucks posts stay; the update names
    # Amazon; the delete passes (a deleted post has no text to match).
    assert run.ids() == [EXPECTED[1]["id"], EXPECTED[2]["id"]]
    assert run.ids("update") == [EXPECTED[0]["id"]]


def test_defaults_and_bad_options() -> None:
    connector = open_connector("bluesky://")
    assert isinstance(connector, BlueskyConnector)
    assert connector.subscribe_url() == (
        "wss://jetstream1.us-east.bsky.network/subscribe?wantedCollections=app.bsky.feed.post"
    )
    v2 = open_connector("bluesky://?protocol=v2")
    assert isinstance(v2, BlueskyConnector)
    assert v2.subscribe_url().startswith(
        "wss://jetstream.us-east.bsky.network/xrpc/network.bsky.jetstream.subscribeEvents?"
    )
    for url in (
        "bluesky://?protocol=v3",
        "bluesky://?compress=true",
        "bluesky://?tls=maybe",
        "bluesky://?rewind=-1",
        "bluesky://host/path",
    ):
        with pytest.raises(ConnectorError):
            open_connector(url)
