"""The shipped model: loads, scores clear cases right, survives any string."""

from __future__ import annotations

import numpy as np
import pytest

from moodwire.model.engine import InferenceEngine
from moodwire.model.labels import LABELS


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this, best day ever! :)", "positive"),
        ("Thank you so much, you guys are amazing", "positive"),
        ("This is the worst service ever, I hate it", "negative"),
        ("So disappointed and angry right now :(", "negative"),
        ("The meeting is scheduled for Tuesday at 3pm.", "neutral"),
    ],
)
def test_clear_cases(engine: InferenceEngine, text: str, label: str) -> None:
    assert LABELS[int(engine.predict([text])[0].argmax())] == label


def test_contract(engine: InferenceEngine) -> None:
    assert engine.device == "cpu"
    assert engine.model_version.startswith("moodwire-gru-")
    assert engine.predict([]).shape == (0, 3)
    odd = ["", " ", "x" * 1_000_000, "\x00\ud800\udfff", "٩(◕‿◕)۶ 😂" * 50, "\\u12", "&#0;&bogus;"]
    probs = engine.predict(odd)
    assert probs.shape == (len(odd), 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and np.isfinite(probs).all()


def test_order_and_batching_do_not_change_scores(engine: InferenceEngine) -> None:
    texts = [f"{'so ' * (i % 17)}good day {i} :)" if i % 3 else f"bad {i}" for i in range(300)]
    together = engine.predict(texts)
    alone = np.stack([engine.predict([t])[0] for t in texts[:25]])
    assert np.abs(together[:25] - alone).max() < 1e-5
    small = InferenceEngine.load(device="cpu", batch_size=16)
    assert np.abs(small.predict(texts[::-1])[::-1] - together).max() < 1e-5
