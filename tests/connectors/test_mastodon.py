"""mastodon:// against a real local Mastodon API (SSE streaming + REST timelines): mapping,
token handling, backfill on resume and after reconnects, dedupe on uri, 429 Retry-After,
silence, deletes, edits and malformed events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from moodwire.connectors import ConnectorError, Position, RawRecord, open_connector
from moodwire.connectors.kit import contract
from moodwire.connectors.kit.mastodon_server import MastodonServer, make_status
from moodwire.connectors.mastodon import MastodonConnector, html_to_text, map_status
from moodwire.connectors.registry import register, unregister
from moodwire.settings import get_settings

FIXTURES = Path(__file__).parent / "fixtures" / "mastodon"
TOKEN = "test-token-read-statuses"
TAG = "python"


def _statuses() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = orjson.loads((FIXTURES / "statuses.json").read_bytes())
    return loaded


def _edit() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((FIXTURES / "edit.json").read_bytes())
    return loaded


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MOODWIRE_MASTODON_TOKEN", TOKEN)
    get_settings.cache_clear()
    register("mastodon", MastodonConnector)
    yield
    unregister("mastodon")
    get_settings.cache_clear()


@pytest.fixture
def server() -> Iterator[MastodonServer]:
    with MastodonServer(token=TOKEN, heartbeat=0.2) as srv:
        yield srv


def _open(srv: MastodonServer, path: str = f"/tag/{TAG}", **options: str) -> MastodonConnector:
    query = {"tls": "0", "backoff_initial": "0.05", "backoff_max": "0.2", "idle_timeout": "3"}
    query.update(options)
    connector = open_connector(f"mastodon://{srv.address}{path}", query)
    assert isinstance(connector, MastodonConnector)
    return connector


def _wait(check: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Run:
    """Iterates a connector's records() in a thread, as the ingest loop does."""

    def __init__(self, connector: MastodonConnector) -> None:
        self.connector = connector
        self.items: list[RawRecord | Position] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.connector.records():
                self.items.append(item)
        except BaseException as exc:
            self.error = exc

    @property
    def records(self) -> list[RawRecord]:
        return [i for i in list(self.items) if isinstance(i, RawRecord)]

    def ids(self) -> list[str]:
        return [str(r.fields["id"]) for r in self.records if r.fields and "op" not in r.fields]

    def wait_records(self, n: int, what: str = "records") -> list[RawRecord]:
        _wait(lambda: len(self.records) >= n or self.error is not None, f"{n} {what}")
        if self.error is not None:
            raise self.error
        return self.records

    def stop(self) -> None:
        self.connector.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "records() did not end after stop()"


def _before(status_id: str) -> str:
    return str(int(status_id) - 1)


# --- mapping ----------------------------------------------------------------------------


EXPECTED: list[Mapping[str, Any]] = [
    {
        "id": "https://mastodon.example/users/alice/statuses/113601190347826176",
        "source": "mastodon",
        "text": "Just switched our build to #Python 3.13 & it's fast!\n"
        "Thanks @bob\nsee https://docs.python.org/3.13/whatsnew/3.13.html",
        "author": "alice",
        "created_at": "2026-12-02T09:15:42+00:00",
        "lang": "en",
        "url": "https://mastodon.example/@alice/113601190347826176",
    },
    {
        "id": "https://social.example.de/users/carla/statuses/113601201000000000",
        "source": "mastodon",
        "text": "Rant about packaging\n\nWarum ist #Python-Packaging\nimmer noch so kompliziert?",
        "author": "carla@social.example.de",
        "created_at": "2026-12-02T09:18:30+00:00",
        "lang": "de",
        "url": "https://social.example.de/@carla/113601201000000000",
    },
    {
        "id": "https://mastodon.example/users/dmitri/statuses/113601210000000001",
        "source": "mastodon",
        "text": "J'adore #python <3\nDeuxième paragraphe.",
        "author": "dmitri",
        "created_at": "2026-12-02T09:20:51+00:00",
        "lang": "fr",
        "url": "https://mastodon.example/@dmitri/113601210000000001",
    },
]


def test_golden_mapping_via_backfill(server: MastodonServer) -> None:
    statuses = _statuses()
    for status in statuses:
        server.add(status)
    connector = _open(server)
    connector.resume({connector.partition: {"last_id": _before(statuses[0]["id"])}})
    records = contract.check_golden(connector, EXPECTED)
    contract.check_positions(records)
    first = records[0]
    assert first.fields is not None
    assert first.fields["metadata"] == {"local_id": statuses[0]["id"], "instance": server.address}
    # The boost (statuses[2]) is skipped by default.
    assert [r.fields["id"] for r in records if r.fields] == [e["id"] for e in EXPECTED]


def test_html_to_text() -> None:
    assert html_to_text("<p>a  &amp;\tb</p><p>c<br>d<br/>e</p>") == "a & b\nc\nd\ne"
    assert html_to_text("<p>x &lt;b&gt; <span class='invisible'>https://</span>y.z</p>") == (
        "x <b> https://y.z"
    )
    assert html_to_text("<p>typed &amp;lt; literally</p>") == "typed &lt; literally"


def test_boosts_unwrap_yields_the_boosted_status() -> None:
    boost = _statuses()[2]
    fields = map_status(boost, "mastodon.example", "unwrap")
    assert fields is not None
    assert fields["id"] == "https://mastodon.example/users/alice/statuses/113601190347826176"
    assert fields["author"] == "alice"
    assert fields["metadata"]["boosted_by"] == "bob"
    assert fields["metadata"]["boost_id"] == boost["id"]
    assert map_status(boost, "mastodon.example") is None


# --- token, URLs, options -------------------------------------------------------------------


def test_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOODWIRE_MASTODON_TOKEN")
    get_settings.cache_clear()
    with pytest.raises(ConnectorError, match="MOODWIRE_MASTODON_TOKEN"):
        open_connector("mastodon://mastodon.social/tag/python")


@pytest.mark.parametrize(
    "url",
    [
        "mastodon://mastodon.social/",
        "mastodon://mastodon.social/tag/",
        "mastodon://mastodon.social/home",
        "mastodon:///public",
        "mastodon://mastodon.social/public?boosts=keep",
        "mastodon://mastodon.social/public?tls=2",
        "mastodon://mastodon.social/public?bogus=1",
    ],
)
def test_bad_urls_and_options(url: str) -> None:
    with pytest.raises(ConnectorError):
        open_connector(url)


def test_partitions() -> None:
    tag = open_connector("mastodon://mastodon.social/tag/python")
    assert isinstance(tag, MastodonConnector)
    assert tag.partition == "mastodon.social/tag/python"
    assert tag.stream_path == "/api/v1/streaming/hashtag?tag=python"
    local = open_connector("mastodon://mastodon.social/public/local")
    assert isinstance(local, MastodonConnector)
    assert local.partition == "mastodon.social/public/local"
    assert local.timeline_query == {"local": "true"}


def test_refused_token_is_fatal(server: MastodonServer) -> None:
    server.token = "another-token"
    run = Run(_open(server))
    _wait(lambda: not run.thread.is_alive(), "records() to give up")
    assert isinstance(run.error, ConnectorError)
    assert "401" in str(run.error) and "MOODWIRE_MASTODON_TOKEN" in str(run.error)
    assert len(server.requests) == 1


# --- streaming, backfill, dedupe ------------------------------------------------------------


def test_backfill_after_restart_then_streams(server: MastodonServer) -> None:
    statuses = _statuses()
    for status in statuses:
        server.add(status)
    connector = _open(server)
    saved = statuses[0]["id"]
    connector.resume({connector.partition: {"last_id": saved}})
    run = Run(connector)
    try:
        run.wait_records(2, "backfilled posts")
        _wait(lambda: server.live_streams == 1, "the stream")
        fresh = make_status('<p>new <a class="hashtag">#python</a> post</p>', tags=[TAG])
        server.publish(fresh)
        run.wait_records(3, "the streamed post")
    finally:
        run.stop()
    assert run.ids() == [EXPECTED[1]["id"], EXPECTED[2]["id"], fresh["uri"]]
    first = server.timeline_requests()[0]
    assert first.path == f"/api/v1/timelines/tag/{TAG}"
    assert first.query["min_id"] == saved and first.query["limit"] == "40"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    # Backfill came before the stream was opened.
    assert first.at < server.stream_requests()[0].at
    last = run.records[-1].position
    assert last == Position(connector.partition, {"last_id": fresh["id"]})


def test_backfill_pages_oldest_first(server: MastodonServer) -> None:
    made = [make_status(f"<p>post {n}</p>", tags=[TAG]) for n in range(95)]
    for status in made:
        server.add(status)
    connector = _open(server)
    connector.resume({connector.partition: {"last_id": _before(made[0]["id"])}})
    records = contract.collect(connector, lambda rs: len(rs) >= 95)
    assert [r.fields["id"] for r in records if r.fields] == [s["uri"] for s in made]
    min_ids = [r.query["min_id"] for r in server.timeline_requests()]
    assert min_ids[:3] == [_before(made[0]["id"]), made[39]["id"], made[79]["id"]]


def test_dedupe_across_backfill_and_stream(server: MastodonServer) -> None:
    old = make_status("<p>seen in the backfill</p>", tags=[TAG])
    server.add(old)
    connector = _open(server)
    connector.resume({connector.partition: {"last_id": _before(old["id"])}})
    run = Run(connector)
    try:
        run.wait_records(1)
        _wait(lambda: server.live_streams == 1, "the stream")
        server.publish(old)  # the same status again, now on the stream
        marker = make_status("<p>after</p>", tags=[TAG])
        server.publish(marker)
        _wait(lambda: marker["uri"] in run.ids(), "the marker post")
    finally:
        run.stop()
    assert run.ids() == [old["uri"], marker["uri"]]


def test_abrupt_close_reconnects_and_backfills() -> None:
    # The stream drops after one event; the second, posted meanwhile, must come by backfill.
    with MastodonServer(token=TOKEN, heartbeat=0.2) as srv:
        srv.close_after(1)
        run = Run(_open(srv))
        try:
            _wait(lambda: srv.live_streams == 1, "the stream")
            first = make_status("<p>one</p>", tags=[TAG])
            second = make_status("<p>two</p>", tags=[TAG])
            srv.publish(first)
            srv.publish(second)  # lost from the stream when it drops: backfill must find it
            _wait(lambda: len(run.ids()) >= 2, "both posts")
            third = make_status("<p>three</p>", tags=[TAG])
            _wait(lambda: srv.live_streams == 1, "the new stream")
            srv.publish(third)
            _wait(lambda: len(run.ids()) >= 3, "the third post")
        finally:
            run.stop()
        assert run.ids() == [first["uri"], second["uri"], third["uri"]]
        assert srv.streams_opened >= 2
        assert any(r.query.get("min_id") == first["id"] for r in srv.timeline_requests())


def test_429_retry_after_is_honoured(server: MastodonServer) -> None:
    server.fail_next(429, 1, retry_after="1", where="stream")
    run = Run(_open(server))
    try:
        _wait(lambda: server.live_streams == 1, "the stream after the 429")
    finally:
        run.stop()
    first, second = server.stream_requests()[:2]
    assert first.status == 429
    assert second.at - first.at >= 0.95, "reconnected before Retry-After"


def test_503_on_backfill_is_retried(server: MastodonServer) -> None:
    status = make_status("<p>missed</p>", tags=[TAG])
    server.add(status)
    server.fail_next(503, 2, retry_after="0", where="rest")
    connector = _open(server)
    connector.resume({connector.partition: {"last_id": _before(status["id"])}})
    records = contract.collect(connector, lambda rs: len(rs) >= 1)
    assert records[0].fields is not None and records[0].fields["id"] == status["uri"]
    assert [r.status for r in server.timeline_requests()][:3] == [503, 503, 200]


def test_silent_stream_is_reconnected(server: MastodonServer) -> None:
    run = Run(_open(server, idle_timeout="0.6"))
    try:
        _wait(lambda: server.live_streams == 1, "the stream")
        before = make_status("<p>before the silence</p>", tags=[TAG])
        server.publish(before)
        run.wait_records(1)
        server.go_silent()
        during = make_status("<p>while silent</p>", tags=[TAG])
        server.publish(during)  # dropped by the silent stream; the backfill finds it
        _wait(lambda: len(run.ids()) >= 2, "the post sent while silent")
        _wait(lambda: server.live_streams == 1, "the new stream")
    finally:
        run.stop()
    assert run.ids() == [before["uri"], during["uri"]]
    assert server.streams_opened == 2


def test_heartbeats_keep_the_stream_alive(server: MastodonServer) -> None:
    run = Run(_open(server, idle_timeout="0.6"))
    try:
        _wait(lambda: server.live_streams == 1, "the stream")
        opened = time.monotonic()
        # Several idle timeouts of heartbeats only, then a post on the same stream.
        _wait(lambda: time.monotonic() - opened > 1.5, "time to pass")
        status = make_status("<p>still here</p>", tags=[TAG])
        server.publish(status)
        run.wait_records(1)
    finally:
        run.stop()
    assert server.streams_opened == 1


def test_delete_and_edit(server: MastodonServer) -> None:
    original = _statuses()[0]
    run = Run(_open(server))
    try:
        _wait(lambda: server.live_streams == 1, "the stream")
        server.publish(original)
        run.wait_records(1)
        server.edit(_edit())
        server.delete("999")  # never seen: skipped
        server.delete(original["id"])
        run.wait_records(3)
    finally:
        run.stop()
    changes = contract.changes_of(run.records)
    assert [c.op for c in changes] == ["update", "delete"]
    update, delete = changes
    assert update.id == delete.id == EXPECTED[0]["id"]
    assert update.post is not None
    assert update.post.text == "Just switched our build to #Python 3.13 and it is slower :("
    assert update.at.isoformat() == "2026-12-02T09:31:07+00:00"
    assert len(run.records) == 3


def test_malformed_event_is_an_error_record(server: MastodonServer) -> None:
    run = Run(_open(server))
    try:
        _wait(lambda: server.live_streams == 1, "the stream")
        server.send_raw("update", b'{"id": "1", "uri": ')
        server.send_raw("update", b'{"id": "2", "content": "<p>no uri</p>"}')
        good = make_status("<p>fine</p>", tags=[TAG])
        server.publish(good)
        run.wait_records(3)
    finally:
        run.stop()
    assert len(contract.check_error_records(run.records[:3], at_least=2)) == 2
    bad1, bad2, ok = run.records[:3]
    assert bad1.error is not None and "malformed" in bad1.error
    assert bad2.error is not None and bad1.fields is None
    assert ok.fields is not None and ok.fields["id"] == good["uri"]
    assert server.streams_opened == 1


def test_public_local_stream(server: MastodonServer) -> None:
    run = Run(_open(server, "/public/local"))
    try:
        _wait(lambda: server.live_streams == 1, "the stream")
        server.publish(make_status("<p>remote</p>", acct="zoe@elsewhere.example"))
        local = make_status("<p>local</p>", acct="yann")
        server.publish(local)
        run.wait_records(1)
    finally:
        run.stop()
    assert run.ids() == [local["uri"]]
    assert server.stream_requests()[0].path == "/api/v1/streaming/public/local"


def test_stop_is_prompt(server: MastodonServer) -> None:
    run = Run(_open(server, idle_timeout="60"))
    _wait(lambda: server.live_streams == 1, "the stream")
    started = time.monotonic()
    run.stop()
    assert time.monotonic() - started < 2.0


def test_stream_5xx_reconnects_with_backoff(server: MastodonServer) -> None:
    server.fail_next(503, 3, where="stream")
    run = Run(_open(server))
    try:
        _wait(lambda: server.live_streams == 1, "the stream after three 503s")
    finally:
        run.stop()
    assert [r.status for r in server.stream_requests()] == [503, 503, 503, 200]


def test_rate_limit_reset_header() -> None:
    from datetime import UTC, datetime, timedelta

    from moodwire.connectors.mastodon import _rate_limit_reset

    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    left = _rate_limit_reset(soon)
    assert left is not None and 25 < left <= 30
    assert _rate_limit_reset("not a date") is None
    assert _rate_limit_reset(None) is None
