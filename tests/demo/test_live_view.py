"""The demo's live summary: rates and recent negative shares come from figure differences."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from moodwire.demo.live_view import LiveSummary


def _figures(posts: int, brands: dict[str, tuple[int, int]]) -> dict[str, Any]:
    return {
        "posts": posts,
        "scored": posts,
        "aggregate_total": posts,
        "dead_letters": 0,
        "errors": [],
        "brands": {
            b: {"posts": n, "negative": neg, "neutral": 0, "positive": n - neg, "mean_score": 0.1}
            for b, (n, neg) in brands.items()
        },
    }


def test_rates_recent_shares_and_spike_flag() -> None:
    summary = LiveSummary({"apple": "Apple"})
    assert summary.posts_per_s() is None
    summary.add(_figures(1000, {"apple": (500, 50), "nike": (500, 100)}), lag=None, at=100.0)
    summary.add(_figures(1400, {"apple": (700, 50), "nike": (700, 300)}), lag=12, at=104.0)
    assert summary.posts_per_s() == 100.0
    # Nike: 200 new posts, 200 of them negative; Apple: 200 new, none negative.
    assert summary.recent("nike") == (200, 1.0)
    assert summary.recent("apple") == (200, 0.0)
    console = Console(width=120, record=True)
    console.print(summary.render("test"))
    out = console.export_text()
    assert "posts 1,400  100/s  lag 12" in out
    assert "Apple" in out
    nike_line = next(line for line in out.splitlines() if line.startswith("nike"))
    assert "spike" in nike_line and "43%" in nike_line  # 300 of 700 since the start
    apple_line = next(line for line in out.splitlines() if line.startswith("Apple"))
    assert "spike" not in apple_line


def test_old_samples_are_dropped() -> None:
    summary = LiveSummary()
    for t in range(0, 100, 5):
        summary.add(_figures(t * 10, {}), lag=0, at=float(t))
    assert summary.samples[0].at >= 95 - 35
    assert summary.posts_per_s() == 10.0
