"""``demo://``: a live feed of realistic posts about the brands, for demos and load tests.

Options: ``rate`` (posts per second, 0 = as fast as possible; default 200), ``seed``
(texts are reproducible for a seed), ``limit`` (stop after N posts), ``run`` (id prefix;
default random, so every run's posts are new posts), ``brands`` (a brands YAML; default
MOODWIRE_BRANDS_FILE or the bundled demo brands), ``spike_every`` and ``spike_length``
(seconds of feed time between negative spikes and their length; 0 disables them),
``unbranded`` (share of posts that mention no brand).

Every ``spike_every`` seconds one brand has an outage-like spike: for ``spike_length``
seconds half of all posts are about it and almost all of those are negative.
``created_at`` is the moment a post is generated, so latency is measurable end to end.
Needs no data files: the text comes from ``demo_text``'s phrase banks.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import orjson

from moodwire.brands import Brand, BrandMatcher
from moodwire.connectors import demo_text as bank
from moodwire.connectors.base import Connector, ConnectorError, RawRecord
from moodwire.settings import get_settings

SOURCES = ("twitter", "reddit", "mastodon", "bluesky", "reviews")
SOURCE_WEIGHTS = (45, 20, 15, 10, 10)
# Feed-time rate used to place spikes when the feed runs flat out (rate=0).
_NOMINAL_RATE = 200.0


class DemoConnector(Connector):
    def __init__(self, url: SplitResult, options: dict[str, str]) -> None:
        super().__init__(url, options)
        self.check_options(
            {"rate", "seed", "limit", "run", "brands", "spike_every", "spike_length", "unbranded"}
        )
        self.rate = self.option_float("rate", 200.0)
        self.limit = self.option_int("limit", None)
        seed = self.option_int("seed", None)
        self.rng = random.Random(seed)
        self.run = self.option_str("run") or os.urandom(4).hex()
        self._spike_seed = self.run if seed is None else str(seed)
        self.spike_every = self.option_float("spike_every", 60.0)
        self.spike_length = self.option_float("spike_length", 20.0)
        self.unbranded = self.option_float("unbranded", 0.15)
        if self.unbranded > 1:
            raise ConnectorError("option unbranded must be between 0 and 1")
        brands_path = self.option_str("brands")
        matcher = BrandMatcher.load(
            get_settings().brands_file if brands_path is None else Path(brands_path).expanduser()
        )
        self.mentions = _mentions(matcher)
        if not self.mentions:
            raise ConnectorError("no brand has a term the demo feed can mention")
        self.brand_names = sorted(self.mentions)
        # Each brand gets its own usual mood, so the dashboards differ between brands.
        self.moods = {name: self._mood_weights() for name in self.brand_names}

    def _mood_weights(self) -> tuple[float, float, float]:
        negative = self.rng.uniform(0.12, 0.35)
        positive = self.rng.uniform(0.3, 0.55)
        return negative, max(0.05, 1.0 - negative - positive), positive

    def records(self) -> Iterator[RawRecord]:
        start = time.monotonic()
        n = 0
        while not self.stopped and (self.limit is None or n < self.limit):
            if self.rate > 0:
                ahead = start + n / self.rate - time.monotonic()
                # Sleep only when well ahead: one sleep per post costs too much at 10k/s.
                if ahead > 0.002 and self.sleep(ahead):
                    return
            fields = self.post(n)
            yield RawRecord(
                payload=orjson.dumps(fields), origin=f"demo://{self.run}/{n}", fields=fields
            )
            n += 1

    # --- one post --------------------------------------------------------------------

    def spiking_brand(self, n: int) -> str | None:
        """The brand in a spike at post ``n``, if any (spikes follow feed time)."""
        if self.spike_every <= 0 or self.spike_length <= 0:
            return None
        feed_time = n / (self.rate or _NOMINAL_RATE)
        period = int(feed_time // self.spike_every)
        if period == 0 or feed_time - period * self.spike_every >= self.spike_length:
            return None
        # Same brand for the whole spike, different spikes hit different brands.
        return self.brand_names[
            random.Random(f"{self._spike_seed}:{period}").randrange(len(self.brand_names))
        ]

    def post(self, n: int) -> dict[str, Any]:
        rng = self.rng
        source = rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        spiking = self.spiking_brand(n)
        in_spike = spiking is not None and rng.random() < 0.5
        if in_spike:
            brand: str | None = spiking
            mood = "negative" if rng.random() < 0.85 else "neutral"
            template = rng.choice(bank.SPIKE) if mood == "negative" else rng.choice(bank.NEUTRAL)
        elif rng.random() < self.unbranded:
            brand, mood = None, "neutral"
            template = rng.choice(bank.UNBRANDED)
        else:
            brand = rng.choice(self.brand_names)
            mood = rng.choices(("negative", "neutral", "positive"), self.moods[brand])[0]
            template = rng.choice(
                {"negative": bank.NEGATIVE, "neutral": bank.NEUTRAL, "positive": bank.POSITIVE}[
                    mood
                ]
            )
        text = self._fill(template, brand, mood)
        post_id = f"{self.run}-{n}"
        author = rng.choice(bank.NAME_PARTS) + rng.choice(bank.NAME_SUFFIXES)
        if rng.random() < 0.5:
            author += str(rng.randrange(1, 999))
        fields: dict[str, Any] = {
            "id": post_id,
            "source": source,
            "text": text,
            "created_at": datetime.now(UTC).isoformat(),
            "author": author,
            "lang": "en",
            "metadata": {"generator": "demo", "intended": mood, "spike": in_spike},
        }
        if source != "reviews":
            fields["url"] = f"https://{source}.moodwire.example/{author}/{post_id}"
        return fields

    def _fill(self, template: str, brand: str | None, mood: str) -> str:
        rng = self.rng
        others = [b for b in self.brand_names if b != brand] or self.brand_names
        text = template.format(
            b=rng.choice(self.mentions[brand]) if brand else "",
            c=rng.choice(self.mentions[rng.choice(others)]),
            t=rng.choice(bank.TIMES),
            e=rng.choice(bank.ENDINGS_BY_MOOD[mood]),
        )
        roll = rng.random()
        if roll < 0.25:
            text = text.lower()
        elif roll < 0.3:
            text = text.upper()
        elif roll < 0.6:
            text = text[:1].upper() + text[1:]
        if rng.random() < 0.15:
            text += " " + rng.choice(bank.HASHTAGS)
        if rng.random() < 0.08:
            text += f" https://moodwire.example/l/{rng.getrandbits(32):08x}"
        return text


def _mentions(matcher: BrandMatcher) -> dict[str, list[str]]:
    """How each brand can be written in a post; only forms the matcher recognises."""
    out: dict[str, list[str]] = {}
    for brand in matcher.definitions:
        forms = _candidate_forms(brand)
        ok = [form for form in forms if brand.name in matcher.match(form)]
        if ok:
            out[brand.name] = ok
    return out


def _candidate_forms(brand: Brand) -> list[str]:
    forms = [brand.display]
    for keyword in brand.keywords:
        forms += [keyword, keyword.title(), keyword.title()]
        forms.append("#" + keyword.replace(" ", ""))
    forms += ["#" + tag for tag in brand.hashtags]
    forms += ["@" + handle for handle in brand.handles]
    return forms
