"""The connector contract's cursors: saved in Postgres only after the broker has the
records, handed back on the next run, never past a record the broker refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from kafka import KafkaProducer
from typer.testing import CliRunner

from moodwire.cli.app import app
from moodwire.connectors import Connector, Position, RawRecord
from moodwire.db.cursors import CursorStore
from moodwire.db.engine import make_engine
from moodwire.ingest import Ingest
from moodwire.records import decode_record
from moodwire.settings import Settings

from .kafka_read import read_topic


def _post(i: int, text: str = "") -> bytes:
    return orjson.dumps(
        {
            "id": f"p{i}",
            "source": "counter",
            "text": text or f"post number {i}",
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    )


class Counter(Connector):
    """counter://: posts p{start}..p{end-1} in two partitions, resuming from its cursors."""

    resumable = True
    big: int | None = None  # index of a post too big for the producer

    def records(self) -> Iterator[RawRecord | Position]:
        end = int(self.options.get("end", "10"))
        for part in ("even", "odd"):
            start = int(self.cursors.get(part, {}).get("next", 0 if part == "even" else 1))
            for i in range(start, end, 2):
                text = "x" * 5000 if i == self.big else ""
                yield RawRecord(
                    _post(i, text), f"counter://{i}", position=Position(part, {"next": i + 2})
                )
            # Events that give no record still move the cursor.
            yield Position(part, {"next": end + (end % 2 != (part == "odd"))})


def _connector(**options: str) -> Counter:
    return Counter(urlsplit("counter://demo"), options)


def _ids(settings: Settings, expected: int) -> list[str]:
    return [decode_record(r.value).id for r in read_topic(settings, settings.topic_raw, expected)]


def test_cursors_are_saved_after_the_broker_acks_and_resume_the_next_run(
    settings: Settings,
) -> None:
    store = CursorStore(make_engine(settings))
    stats = Ingest(settings, name="counter-1").run(_connector(end="10"))
    assert (stats.sent, stats.failed) == (10, 0)
    assert store.load("counter-1") == {"even": {"next": 10}, "odd": {"next": 11}}
    # The source grew: the next run starts where the last one stopped, nothing twice.
    resumed = _connector(end="14")
    Ingest(settings, name="counter-1").run(resumed)
    assert resumed.cursors == {"even": {"next": 10}, "odd": {"next": 11}}
    assert sorted(_ids(settings, 14), key=lambda s: int(s[1:])) == [f"p{i}" for i in range(14)]
    assert store.load("counter-1") == {"even": {"next": 14}, "odd": {"next": 15}}
    # Another name is another connector: it starts from nothing.
    assert store.load("counter-2") == {}


def test_a_refused_record_holds_its_partitions_cursor_before_it(settings: Settings) -> None:
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_idempotence=False,
        max_request_size=2048,  # post 4 (5,000 characters) cannot be sent
    )
    connector = _connector(end="10")
    connector.big = 4
    try:
        stats = Ingest(settings, name="counter-big", producer=producer).run(connector)
    finally:
        producer.close()
    assert stats.failed == 1
    saved = CursorStore(make_engine(settings)).load("counter-big")
    # Even posts stop before p4 (p0, p2 acked); odd ones went through.
    assert saved == {"even": {"next": 4}, "odd": {"next": 11}}


class Pushed(Connector):
    """push://: records handed in by the test; acknowledgements recorded."""

    def __init__(self, url: Any, options: Any) -> None:
        super().__init__(url, options)
        self.acks: list[tuple[Any, str | None]] = []
        self.acked = threading.Event()

    def records(self) -> Iterator[RawRecord | Position]:
        yield RawRecord(_post(1), "push://1", ticket="good")
        yield RawRecord(b"{not json", "push://2", ticket="bad")

    def acknowledge(self, ticket: Any, error: str | None) -> None:
        self.acks.append((ticket, error))


def test_tickets_are_acknowledged_once_the_broker_has_them(settings: Settings) -> None:
    connector = Pushed(urlsplit("push://"), {})
    stats = Ingest(settings).run(connector)
    assert (stats.sent, stats.dead_lettered) == (1, 1)
    # The dead letter is acknowledged too: the sender is answered once it is stored.
    assert sorted(connector.acks) == [("bad", None), ("good", None)]


def test_cursors_command_shows_and_resets(settings: Settings, monkeypatch: Any) -> None:
    CursorStore(make_engine(settings)).save("shown", {"host-a": {"time_us": 17}})
    monkeypatch.setenv("MOODWIRE_DATABASE_URL", settings.require("database_url"))
    from moodwire.settings import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    try:
        shown = runner.invoke(app, ["connectors", "cursors", "shown"])
        assert shown.exit_code == 0, shown.output
        assert 'host-a\t{"time_us":17}' in shown.output
        reset = runner.invoke(app, ["connectors", "cursors", "shown", "--reset"])
        assert "forgot 1 cursor(s) of shown" in reset.output
        assert "no saved cursors" in runner.invoke(app, ["connectors", "cursors", "shown"]).output
    finally:
        get_settings.cache_clear()


def test_connectors_list_names_every_scheme_with_its_package() -> None:
    result = CliRunner().invoke(app, ["connectors", "list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "file://" in lines and "demo://" in lines and "bluesky://" in lines
    assert "moodwire" in lines["file://"]
    assert "JSON Lines or CSV" in lines["file://"]


def test_webhook_answers_2xx_once_the_real_broker_has_the_posts(settings: Settings) -> None:
    import httpx

    from moodwire.connectors import open_connector
    from moodwire.stack.ports import free_port

    port = free_port()
    connector = open_connector(f"webhook://127.0.0.1:{port}?insecure=1")
    run = Ingest(settings)
    thread = threading.Thread(target=run.run, args=(connector,), daemon=True)
    thread.start()
    try:
        body = b"\n".join([_post(1), _post(2), b'{"id": "p3", "source": "counter"}'])
        deadline = 30.0
        answer = None
        for _ in range(100):
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson", "webhook-id": "d-1"},
                    timeout=deadline,
                )
                break
            except httpx.ConnectError:
                threading.Event().wait(0.1)  # the receiver is starting
        assert answer is not None and answer.status_code == 400, answer
        assert answer.json()["accepted"] == 2
        # The answer came after the acks: both posts are already readable in the topic.
        assert sorted(_ids(settings, 2)) == ["p1", "p2"]
        letters = read_topic(settings, settings.topic_dead_letters, 1)
        assert len(letters) == 1 and b'"p3"' in letters[0].value
    finally:
        run.stop()
        thread.join(20)
    assert not thread.is_alive()
