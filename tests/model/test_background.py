"""BackgroundScorer: the engine loads on a thread; what it scores equals the engine's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moodwire.model.background import BackgroundScorer
from moodwire.model.engine import InferenceEngine
from moodwire.settings import Settings

TEXTS = ["I love the new update!!", "worst service ever, never again", "it is tuesday"]


def test_scores_like_the_engine_once_loaded(engine: InferenceEngine) -> None:
    loaded: list[str] = []
    scorer = BackgroundScorer(
        Settings().model_path,
        device="cpu",
        threads=1,
        start=False,
        on_loaded=lambda e: loaded.append(e.model_version),
    )
    assert not scorer.loaded  # start=False: nothing happens until start()
    scorer.start()
    scorer.start()  # once only
    probs = scorer.predict(TEXTS)
    assert scorer.loaded and loaded == [engine.model_version]
    assert scorer.model_version == engine.model_version
    np.testing.assert_allclose(probs, engine.predict(TEXTS), atol=1e-6)
    scorer.close()


def test_a_missing_model_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model at"):
        BackgroundScorer(tmp_path)


def test_a_failed_load_raises_its_error_at_first_use(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model dir without weights
    scorer = BackgroundScorer(tmp_path, device="cpu")
    with pytest.raises(OSError):
        scorer.predict(TEXTS)
    with pytest.raises(OSError):  # every time, never a hang
        scorer.predict(TEXTS)
    scorer.close()


def test_split_encode_and_predict_equal_predict(engine: InferenceEngine) -> None:
    texts = [*TEXTS, "", "#notmypresident lol", "x" * 3000] * 50
    np.testing.assert_array_equal(
        engine.predict_encoded(engine.encode(texts)), engine.predict(texts)
    )
    assert engine.predict_encoded(engine.encode([])).shape == (0, 3)
