"""Perturbed copies of train: deterministic, near the originals, labelled by the teachers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moodwire.model.engine import InferenceEngine
from moodwire.model.text import Vocabulary
from moodwire.training.augment import augment
from moodwire.training.data import Split, load_split
from moodwire.training.train import TrainConfig, _transfer_set, train

TEXTS = [
    "the new phone is sooo good, battery lasts two days #win",
    "@user worst customer service ever, still waiting for a refund",
    "meeting moved to friday at 3pm",
    "ok",
    "",
]


def test_copies_are_deterministic_and_differ_from_each_other() -> None:
    first = augment(TEXTS * 10, copy=0)
    assert first == augment(TEXTS * 10, copy=0)
    assert len(first) == len(TEXTS) * 10
    assert first != augment(TEXTS * 10, copy=1)


def test_copies_stay_near_their_originals() -> None:
    corpus = {w for t in TEXTS for w in t.split()}
    copies = augment(TEXTS * 40)
    kept = []
    for original, copy in zip(TEXTS * 40, copies, strict=True):
        words = copy.split()
        assert set(words) <= corpus  # swaps draw from the corpus, nothing invented
        if original:
            assert words, original  # a non-empty tweet never becomes empty
            kept.append(len(words) / len(original.split()))
        else:
            assert copy == ""
    assert 0.6 < float(np.mean(kept)) < 1.0, np.mean(kept)  # most words survive, not all
    changed = sum(c != o for c, o in zip(copies, TEXTS * 40, strict=True))
    assert changed > 0.5 * 4 * 40, changed  # the four non-empty tweets mostly change


def test_augmenting_without_a_teacher_is_refused(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        train(data_dir, tmp_path / "m", TrainConfig(augment=1, max_train=100, pretrained=False))


def test_transfer_set_holds_the_copies_with_the_teachers_labels(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shipped = str(Path(__file__).resolve().parents[2] / "models" / "moodwire-gru")
    texts = load_split(data_dir, "train").texts[:300]
    cfg = replace(TrainConfig(), teachers=(shipped,), augment=2, transfer=False)
    vocab = Vocabulary(sorted({w for t in texts for w in t.lower().split()}))
    enc = _transfer_set(cfg, vocab, Split(texts, [1] * len(texts)), None)
    assert enc is not None and enc.soft is not None
    copies = [t for k in (0, 1) for t in augment(texts, copy=k) if t.strip()]
    assert len(enc) == len(copies) == 600
    engine = InferenceEngine.load(shipped, device="cpu")
    np.testing.assert_allclose(enc.soft.numpy(), engine.predict(copies), atol=1e-5)


def test_cli_refuses_augment_without_teacher(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app

    args = ["model", "train", "--data", str(data_dir), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, [*args, "--augment", "1"])
    assert result.exit_code == 2 and "needs --teacher" in result.output
    assert not (tmp_path / "m").exists()


def test_cli_refuses_teacher_embeddings_without_a_minilm_teacher(
    data_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app

    args = ["model", "train", "--data", str(data_dir), "--out", str(tmp_path / "m")]
    shipped = str(Path(__file__).resolve().parents[2] / "models" / "moodwire-gru")
    result = CliRunner().invoke(app, [*args, "--teacher", shipped, "--teacher-embeddings"])
    assert result.exit_code == 2 and "needs a MiniLM --teacher" in result.output
    assert not (tmp_path / "m").exists()
