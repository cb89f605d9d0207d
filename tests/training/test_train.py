"""A tiny model trained in seconds on a slice of TweetEval learns, and serves exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.model.network import GRUClassifier, NetConfig, fold
from moodwire.model.text import Vocabulary
from moodwire.training.data import load_split
from moodwire.training.train import Encoded, TrainConfig, WeightAverage, train

TINY = TrainConfig(
    hidden=16,
    epochs=3,
    patience=3,
    max_train=4000,
    pretrained=False,
    batch_size=64,
    threads=2,
    lr=0.01,
    embedding_lr=0.01,
)


class _Recorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.val: list[float] = []

    def start_epoch(self, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        self.losses.append(loss)

    def end_epoch(self, epoch: int, val_macro_recall: float, best: float) -> None:
        self.val.append(val_macro_recall)


@pytest.fixture(scope="module")
def tiny(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _Recorder]:
    out = tmp_path_factory.mktemp("tiny") / "model"
    recorder = _Recorder()
    train(data_dir, out, TINY, progress=recorder)
    return out, recorder


def test_tiny_model_learns(tiny: tuple[Path, _Recorder], data_dir: Path) -> None:
    out, rec = tiny
    first, last = np.mean(rec.losses[:20]), np.mean(rec.losses[-20:])
    assert last < first - 0.1, (first, last)
    engine = InferenceEngine.load(out, device="cpu")
    val = load_split(data_dir, "val")
    pred = engine.predict(val.texts).argmax(axis=1)
    recalls = [(pred[np.array(val.labels) == c] == c).mean() for c in range(3)]
    assert np.mean(recalls) > 0.45  # chance is 0.33
    assert engine.model_version in (out / "README.md").read_text()


def test_saved_model_files_and_version(tiny: tuple[Path, _Recorder]) -> None:
    out, _ = tiny
    version = artifact.model_version(out)
    name, _, digest = version.partition("+")
    assert name == "moodwire-gru-1.2.0" and len(digest) == 8
    assert InferenceEngine.load(out, device="cpu").model_version == version
    assert (out / "weights.safetensors").stat().st_size < 20 * 2**20
    assert artifact.load(out).config["hashtags"] is False  # the default recipe


def test_training_is_reproducible(data_dir: Path, tmp_path: Path) -> None:
    quick = replace(TINY, epochs=1, max_train=600)
    a = train(data_dir, tmp_path / "a", quick)
    b = train(data_dir, tmp_path / "b", quick)
    assert a.model_version == b.model_version
    c = train(data_dir, tmp_path / "c", replace(quick, seed=quick.seed + 1))
    assert c.model_version != a.model_version


@pytest.mark.parametrize("bidirectional", [True, False])
def test_folded_engine_equals_the_network(bidirectional: bool) -> None:
    """Serving trick check: folded table + own recurrence == nn.GRU with packing."""
    torch.manual_seed(0)
    words = [f"w{i}" for i in range(50)]
    vocab = Vocabulary(words)
    net = GRUClassifier(
        NetConfig(len(vocab), embedding_dim=12, hidden=8, bidirectional=bidirectional, token_dim=10)
    ).eval()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(0, 30, size=40)]
    texts += ["", "w1", "unknown words only"]
    engine = InferenceEngine(
        artifact.Artifact(fold(net), vocab.tokens, {"temperature": 1.0}),
        model_version="test",
        batch_size=7,  # several batches with mixed lengths
    )
    enc = Encoded.of(vocab, type("S", (), {"texts": texts, "labels": [0] * len(texts)})())  # type: ignore[arg-type]
    ids, lengths = enc.padded(np.arange(len(texts)))
    with torch.inference_mode():
        expected = torch.softmax(net(ids, lengths), dim=1).numpy()
    assert np.abs(engine.predict(texts) - expected).max() < 1e-5


def test_weight_average_follows_the_weights_and_swaps_back() -> None:
    net = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in net.parameters()]
    average = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # every weight moves by exactly 1
    average.update()  # first step: decay (1 + 1) / (10 + 1), below 0.9
    expected = 1 - 2 / 11
    for a, s0 in zip(average.average, start, strict=True):
        assert torch.allclose(a - s0, torch.full_like(s0, expected))
    live = [p.detach().clone() for p in net.parameters()]
    average.swap()
    for p, s0 in zip(net.parameters(), start, strict=True):
        assert torch.allclose(p, s0 + expected)
    average.swap()
    assert all(torch.equal(p, x) for p, x in zip(net.parameters(), live, strict=True))


def test_training_with_a_weight_average_saves_the_average(data_dir: Path, tmp_path: Path) -> None:
    """The average, not the last step's weights, is scored and saved: a model trained the
    same way without it differs, and the saved model still learns."""
    quick = replace(TINY, epochs=2, patience=2)
    plain = train(data_dir, tmp_path / "plain", quick)
    averaged = train(data_dir, tmp_path / "ema", replace(quick, ema=0.9))
    assert averaged.model_version != plain.model_version
    assert artifact.load(averaged.out_dir).config["train"]["ema"] == 0.9
    assert averaged.val.macro_recall > 0.4  # chance is 0.33


def test_hashtag_splitting_is_a_saved_serving_setting(tmp_path: Path) -> None:
    """``hashtags`` travels in the model's config: the engine splits unknown hashtags only
    for a model trained that way, and the setting is part of the model version."""
    vocab = Vocabulary(["#", "not", "my", "president"], subwords=True)
    net = GRUClassifier(NetConfig(len(vocab), embedding_dim=8, hidden=4)).eval()
    versions = set()
    for hashtags in (False, True):
        config = {"temperature": 1.0, "subwords": True, "hashtags": hashtags}
        out = tmp_path / str(hashtags)
        versions.add(artifact.save(artifact.Artifact(fold(net), vocab.tokens, config), out))
        engine = InferenceEngine.load(out, device="cpu")
        ids, _ = engine.vocab.encode(["#NotMyPresident"])
        words = ["#", "not", "my", "president"] if hashtags else ["#", "<unk>"]
        assert [vocab.tokens[i] for i in ids] == words
    assert len(versions) == 2


def test_wordpiece_only_vocabulary_spells_words_in_units() -> None:
    """``words=False``: MiniLM's units only; our own tokens (@user, emoticons) stay whole."""
    from moodwire.training.pretrained import minilm_dir
    from moodwire.training.train import build_vocab

    if minilm_dir() is None:
        pytest.skip("MiniLM wheel not installed (the '.[train]' extra)")
    texts = ["@user i loooove this :) :)", "worst service ever :( @user", "happyish day :)"] * 3
    vocab = build_vocab(texts, min_count=3, max_vocab=1000, subwords=True, words=False)
    ids, _ = vocab.encode(["@user happyish :)"])
    tokens = [vocab.tokens[i] for i in ids]
    assert tokens[0] == "@user" and tokens[-1] == ":)"
    assert len(tokens) >= 4 and any(t.startswith("##") for t in tokens), tokens
    assert "happyish" not in vocab.index and 1 not in ids  # split, yet nothing unknown


def test_pretraining_on_sentiment140_learns_two_classes_and_leaves_neutral(
    data_dir: Path,
) -> None:
    """Distant supervision: the 2-way loss falls; the neutral head row is not touched."""
    from moodwire.training.data import Split, load_sentiment140
    from moodwire.training.train import _pretrain, build_vocab

    full = load_sentiment140(data_dir)
    rows = np.random.default_rng(0).permutation(len(full))[:1500]
    aux = Split([full.texts[i] for i in rows], [full.labels[i] for i in rows])
    vocab = build_vocab(aux.texts, min_count=2, max_vocab=5000)
    torch.manual_seed(0)
    net = GRUClassifier(NetConfig(len(vocab), embedding_dim=16, hidden=8, bidirectional=False))
    neutral_before = net.head.weight[1].detach().clone()
    rec = _Recorder()
    cfg = replace(TINY, pretrain_epochs=4, batch_size=32)
    _pretrain(net, Encoded.of(vocab, aux), cfg, np.random.default_rng(0), rec)
    first, last = np.mean(rec.losses[:20]), np.mean(rec.losses[-20:])
    assert last < first - 0.1, (first, last)
    assert torch.equal(net.head.weight[1], neutral_before)


def test_student_learns_from_teacher_alone(
    tiny: tuple[Path, _Recorder], data_dir: Path, tmp_path: Path
) -> None:
    """``distill_weight=1``: the labels are unused, so all a student knows comes from the
    teacher's probabilities (on train and on sentiment140's texts). It must agree with it."""
    teacher, _ = tiny
    cfg = replace(TINY, teachers=(str(teacher),), distill_weight=1.0, seed=5, epochs=6, patience=6)
    result = train(data_dir, tmp_path / "student", cfg)
    val = load_split(data_dir, "val")
    taught = InferenceEngine.load(teacher, device="cpu").predict(val.texts).argmax(axis=1)
    student = InferenceEngine.load(result.out_dir, device="cpu").predict(val.texts).argmax(axis=1)
    agreement = float((taught == student).mean())
    # A student that learned nothing matches only the share of the class it always picks.
    assert agreement > 0.6, agreement
    assert artifact.load(result.out_dir).config["train"]["teachers"] == [
        artifact.model_version(teacher)
    ]


def test_cli_train_logs_progress_lines_when_not_on_a_terminal(
    data_dir: Path, tmp_path: Path
) -> None:
    """A log file or CI gets a line every tenth of an epoch, and the epoch's val score."""
    from typer.testing import CliRunner

    from moodwire.cli.app import app

    out = tmp_path / "m"
    args = ["model", "train", "--data", str(data_dir), "--out", str(out), "--max-train", "1000"]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--patience", "1", "--hidden", "8"])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("epoch 1: step ")]
    assert len(steps) >= 5, result.output  # 16 steps of 64 tweets: one line per step here
    assert "epoch 1: val macro-recall" in result.output
    assert artifact.load(out).config["train"]["patience"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ema", "1"], "between 0 and 1"),
        (["--embedding-lr", "-0.1"], "0 (frozen) or more"),
        (["--distill-weight", "1.5"], "between 0 and 1"),
        (["--select", "test"], "use val or devtest"),
    ],
)
def test_cli_train_rejects_bad_options_before_training(
    args: list[str], message: str, data_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app

    out = tmp_path / "m"
    result = CliRunner().invoke(
        app, ["model", "train", "--data", str(data_dir), "--out", str(out), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())  # rich may wrap it
    assert not out.exists()
