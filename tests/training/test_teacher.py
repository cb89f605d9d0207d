"""The MiniLM teacher: fine-tunes, saves, reloads, and its probabilities are cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moodwire.training.data import load_split
from moodwire.training.pretrained import minilm_dir
from moodwire.training.teacher import Teacher, TeacherConfig, is_teacher, train_teacher
from moodwire.training.train import teacher_probs

pytestmark = pytest.mark.skipif(minilm_dir() is None, reason="needs the '.[train]' extra")


@pytest.fixture(scope="module")
def teacher_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train_teacher(data_dir, out, TeacherConfig(max_train=600, epochs=1, lr=2e-4, threads=2))
    return out


def test_teacher_learns_and_reloads(teacher_dir: Path, data_dir: Path) -> None:
    assert is_teacher(teacher_dir)
    teacher = Teacher.load(teacher_dir)
    assert teacher.config["val_macro_recall"] > 0.45  # chance is 0.33; 600 tweets seen
    val = load_split(data_dir, "val").head(300)
    probs = teacher.predict(val.texts)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert len(list(teacher_dir.glob("probs-*.npy"))) == 1
    # Scored again from the cache, and the distillation path reads it the same way.
    assert np.array_equal(Teacher.load(teacher_dir).predict(val.texts), probs)
    assert np.allclose(teacher_probs((str(teacher_dir),), val.texts), probs)


def test_gru_student_records_its_minilm_teacher(
    teacher_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Distilling from a MiniLM teacher saves a servable GRU that names the teacher."""
    from dataclasses import replace

    from moodwire.model import artifact
    from moodwire.model.engine import InferenceEngine
    from moodwire.training.train import TrainConfig, train

    cfg = replace(
        TrainConfig(),
        hidden=8,
        epochs=1,
        max_train=300,
        pretrained=False,
        threads=2,
        teachers=(str(teacher_dir),),
        transfer=False,
    )
    result = train(data_dir, tmp_path / "student", cfg)
    saved = artifact.load(result.out_dir).config["train"]
    assert saved["teachers"] == [Teacher.load(teacher_dir).version]
    probs = InferenceEngine.load(result.out_dir, device="cpu").predict(["good", "bad"])
    assert probs.shape == (2, 3)


def test_teacher_word_vectors_read_each_word_as_the_teacher_does(teacher_dir: Path) -> None:
    """A word's vector is the pooled state the teacher's head reads for that word alone."""
    import torch

    teacher = Teacher.load(teacher_dir)
    words = ["good", "terrible", "monday"]
    vectors = teacher.word_vectors(words)
    assert vectors.shape == (3, 384)
    with torch.inference_mode():
        through_head = teacher.model.head(vectors)
    assert torch.allclose(through_head, teacher.logits(words), atol=1e-4)


def test_teacher_word_vectors_are_scaled_and_a_student_trains_from_them(
    teacher_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    import torch

    from moodwire.model import artifact
    from moodwire.model.text import PAD, UNK
    from moodwire.training.pretrained import minilm_word_vectors
    from moodwire.training.train import TrainConfig, teacher_word_vectors, train

    vocab = [PAD, UNK, "good", "bad", "##ing", "zzyzx"]
    vectors = teacher_word_vectors((str(teacher_dir),), vocab)
    base = minilm_word_vectors(vocab)
    assert base is not None and vectors.shape == base.shape
    assert torch.count_nonzero(vectors[0]) == 0 and torch.equal(vectors[1], base[1])
    assert torch.isclose(vectors.std(), base.std(), rtol=0.05)
    assert not torch.allclose(vectors[2:], base[2:])  # not MiniLM's input table

    cfg = replace(
        TrainConfig(),
        hidden=8,
        epochs=1,
        max_train=300,
        threads=2,
        teachers=(str(teacher_dir),),
        transfer=False,
        teacher_embeddings=True,
    )
    result = train(data_dir, tmp_path / "student", cfg)
    assert artifact.load(result.out_dir).config["train"]["teacher_embeddings"] is True
    with pytest.raises(ValueError, match="MiniLM teacher"):
        train(data_dir, tmp_path / "no", replace(cfg, teachers=(str(result.out_dir),)))
