"""The live terminal summary of a running pipeline (``moodwire demo``), drawn with rich.

It keeps a short history of ``moodwire.status.collect`` figures so rates come from
differences: posts/s over the last few seconds, and each brand's negative share over the
last ``recent`` seconds, which is what makes a negative spike visible while the
since-the-start totals barely move.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

RATE_WINDOW_S = 5.0
RECENT_WINDOW_S = 30.0
# A brand whose recent posts are at least this negative is flagged (with enough posts).
SPIKE_SHARE = 0.5
SPIKE_MIN_POSTS = 20
_BAR = 24


@dataclass(frozen=True)
class Sample:
    at: float
    figures: Mapping[str, Any]
    lag: int | None


class LiveSummary:
    def __init__(self, display_names: Mapping[str, str] | None = None) -> None:
        self.display_names = dict(display_names or {})
        self.samples: deque[Sample] = deque()
        self.started = time.monotonic()

    def add(self, figures: Mapping[str, Any], lag: int | None, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        self.samples.append(Sample(now, figures, lag))
        while self.samples and now - self.samples[0].at > RECENT_WINDOW_S + RATE_WINDOW_S:
            self.samples.popleft()

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def _back(self, seconds: float) -> Sample | None:
        """The oldest sample within ``seconds`` of the latest one."""
        if not self.samples:
            return None
        latest = self.samples[-1]
        for sample in self.samples:
            if latest.at - sample.at <= seconds:
                return sample if sample is not latest else None
        return None

    def posts_per_s(self) -> float | None:
        latest, back = self.latest, self._back(RATE_WINDOW_S)
        if latest is None or back is None:
            return None
        now, then = latest.figures.get("posts"), back.figures.get("posts")
        if now is None or then is None or latest.at <= back.at:
            return None
        return float(max(0, now - then)) / (latest.at - back.at)

    def recent(self, brand: str) -> tuple[int, float | None]:
        """(posts, negative share) of ``brand`` over the last ``RECENT_WINDOW_S`` seconds."""
        latest, back = self.latest, self._back(RECENT_WINDOW_S)
        if latest is None or back is None:
            return 0, None
        now = latest.figures.get("brands", {}).get(brand) or {}
        then = back.figures.get("brands", {}).get(brand) or {}
        posts = int(now.get("posts") or 0) - int(then.get("posts") or 0)
        negative = int(now.get("negative") or 0) - int(then.get("negative") or 0)
        return posts, (negative / posts if posts > 0 else None)

    # --- drawing -------------------------------------------------------------------------

    def render(self, title: str) -> RenderableType:
        sample = self.latest
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            ("moodwire ", "bold"), (title, "cyan"), f"  ·  {elapsed:,.0f} s  ·  Ctrl-C to stop"
        )
        if sample is None:
            return Group(head, Text("waiting for the first figures..."))
        figures = sample.figures
        rate = self.posts_per_s()
        line = Text.assemble(
            ("posts ", "dim"),
            (_num(figures.get("posts")), "bold"),
            ("  ", "dim"),
            ("-" if rate is None else f"{rate:,.0f}", "bold green"),
            ("/s  lag ", "dim"),
            (_num(sample.lag), "bold"),
            ("  scored ", "dim"),
            _num(figures.get("scored")),
            ("  aggregated ", "dim"),
            _num(figures.get("aggregate_total")),
            ("  dead letters ", "dim"),
            _num(figures.get("dead_letters")),
        )
        parts: list[RenderableType] = [head, line, self._brand_table(figures)]
        state = figures.get("aggregates")
        if state not in (None, "whole"):
            # Redis lost its copy: the figures above are partial until it is rebuilt.
            parts.append(Text(f"aggregates: {state}", style="yellow"))
        for error in figures.get("errors") or []:
            parts.append(Text(f"unavailable: {error}", style="red"))
        return Group(*parts)

    def _brand_table(self, figures: Mapping[str, Any]) -> Table:
        table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
        table.add_column("brand")
        table.add_column("posts", justify="right")
        table.add_column("negative | neutral | positive", no_wrap=True)
        table.add_column("neg %", justify="right")
        table.add_column("mean", justify="right")
        table.add_column(f"last {RECENT_WINDOW_S:.0f} s", justify="right")
        brands = figures.get("brands") or {}
        for brand in sorted(brands, key=lambda b: (b.startswith("("), -int(brands[b]["posts"]))):
            b = brands[brand]
            posts = int(b["posts"] or 0)
            neg_share = b["negative"] / posts if posts else 0.0
            recent_posts, recent_neg = self.recent(brand)
            spiking = (
                recent_neg is not None
                and recent_neg >= SPIKE_SHARE
                and recent_posts >= SPIKE_MIN_POSTS
            )
            recent_text = (
                Text("-", style="dim")
                if recent_neg is None
                else Text(
                    f"{recent_neg:4.0%} neg" + ("  ▼ spike" if spiking else ""),
                    style="bold red" if spiking else "",
                )
            )
            mean = b.get("mean_score")
            table.add_row(
                self.display_names.get(brand, brand),
                f"{posts:,}",
                _bar(b["negative"], b["neutral"], b["positive"]),
                f"{neg_share:.0%}",
                "-" if mean is None else f"{mean:+.2f}",
                recent_text,
            )
        return table


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _bar(neg: int, neu: int, pos: int) -> Text:
    total = neg + neu + pos
    if total <= 0:
        return Text(" " * _BAR)
    widths = [round(_BAR * x / total) for x in (neg, neu)]
    widths.append(max(0, _BAR - sum(widths)))
    return Text.assemble(
        ("█" * widths[0], "red"), ("█" * widths[1], "grey50"), ("█" * widths[2], "green")
    )
