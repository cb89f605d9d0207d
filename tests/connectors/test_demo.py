"""demo:// generates valid, brand-tagged posts with negative spikes, from its own phrase banks."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from moodwire.brands import BrandMatcher
from moodwire.connectors import ConnectorError, open_connector
from moodwire.connectors.demo import DemoConnector
from moodwire.ingest import to_post
from support.connectors import as_post, raw_records


def _posts(url: str) -> list[dict[str, object]]:
    with open_connector(url) as connector:
        return [dict(r.fields or {}) for r in raw_records(connector)]


def test_every_post_is_valid_and_most_name_a_brand(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo must run without the shared data set.
    monkeypatch.setenv("MOODWIRE_DATA_DIR", "/nonexistent")
    with open_connector("demo://?rate=0&seed=3&limit=3000") as connector:
        records = list(raw_records(connector))
    assert len(records) == 3000
    posts = [as_post(to_post(r, max_text_chars=20_000)) for r in records]
    assert len({p.key for p in posts}) == 3000
    assert len({p.text for p in posts}) > 1000
    assert {p.source for p in posts} == {"twitter", "reddit", "mastodon", "bluesky", "reviews"}
    matcher = BrandMatcher.load(None)
    tagged = Counter(b for p in posts for b in matcher.match(p.text))
    unbranded = sum(1 for p in posts if not matcher.match(p.text))
    assert set(tagged) == set(matcher.brands)
    assert 0.05 < unbranded / len(posts) < 0.3
    moods = Counter(p.metadata["intended"] for p in posts if p.metadata)
    assert min(moods.values()) > 300


def test_seed_makes_texts_reproducible_and_runs_distinct() -> None:
    a = _posts("demo://?rate=0&seed=7&limit=200")
    b = _posts("demo://?rate=0&seed=7&limit=200")
    c = _posts("demo://?rate=0&seed=8&limit=200")
    assert [p["text"] for p in a] == [p["text"] for p in b]
    assert [p["text"] for p in a] != [p["text"] for p in c]
    # A new run is new posts, even with the same seed (the processor dedups on id).
    assert {p["id"] for p in a}.isdisjoint({p["id"] for p in b})
    assert [p["id"] for p in _posts("demo://?rate=0&limit=2&run=r1")] == ["r1-0", "r1-1"]


def test_negative_spike_hits_one_brand() -> None:
    # rate 100/s feed time: posts 0-99 are second 0, spikes at 2-3 s, 4-5 s, ...
    connector = open_connector("demo://?rate=100&seed=1&spike_every=2&spike_length=1")
    assert isinstance(connector, DemoConnector)
    assert connector.spiking_brand(50) is None
    assert connector.spiking_brand(350) is None
    spike = connector.spiking_brand(200)
    assert spike is not None and connector.spiking_brand(299) == spike
    posts = [connector.post(n) for n in range(200, 300)]
    matcher = BrandMatcher.load(None)
    about = [p for p in posts if spike in matcher.match(str(p["text"]))]
    assert len(about) > 30
    negative = [p for p in about if p["metadata"]["intended"] == "negative"]  # type: ignore[index]
    assert len(negative) / len(about) > 0.6


def test_rate_paces_and_stop_ends_the_feed() -> None:
    connector = open_connector("demo://?rate=200")
    started = time.monotonic()
    records = connector.records()
    for _ in range(41):
        next(records)
    # 41 posts at 200/s: the 41st is due 0.2 s after the first.
    assert time.monotonic() - started >= 0.19
    threading.Timer(0.1, connector.stop).start()
    assert sum(1 for _ in records) < 200


def test_custom_brands_and_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "brands.yaml"
    path.write_text("brands:\n  acme:\n    keywords: [acme rockets]\n    handles: [acme]\n")
    posts = _posts(f"demo://?rate=0&limit=300&unbranded=0&spike_every=0&brands={path}")
    assert all(BrandMatcher.load(path).match(str(p["text"])) == ("acme",) for p in posts)
    with pytest.raises(ConnectorError, match="rate='fast' is not a number"):
        open_connector("demo://?rate=fast")
    with pytest.raises(ConnectorError, match="limit='-1' must be >= 0"):
        open_connector("demo://?limit=-1")
