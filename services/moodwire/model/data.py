"""Reading the labelled tweets in ``../shared/data`` in place (never copied into the repo)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from moodwire.settings import REPO_ROOT

TWEETEVAL = "tweeteval-sentiment"
SENTIMENT140 = "sentiment140/sample100k"


def default_data_dir() -> Path:
    """``$MOODWIRE_DATA_DIR``, else ``<repo>/../shared/data``."""
    env = os.environ.get("MOODWIRE_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> Split:
        return Split(self.texts[:n], self.labels[:n])


def _lines(path: Path) -> list[str]:
    # Split on "\n" only: a few tweets hold other Unicode line separators.
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _paired(text_file: Path, label_file: Path) -> Split:
    texts = _lines(text_file)
    labels = [int(x) for x in _lines(label_file)]
    if len(texts) != len(labels):
        raise ValueError(f"{text_file}: {len(texts)} texts but {len(labels)} labels")
    return Split(texts, labels)


def tweeteval_dir(data_dir: Path) -> Path:
    """Accepts the shared data root or the tweeteval-sentiment folder itself."""
    return data_dir / TWEETEVAL if (data_dir / TWEETEVAL).is_dir() else data_dir


def load_split(data_dir: Path, name: str) -> Split:
    """``train`` (the reconstructed train set), ``val`` or ``test`` of TweetEval sentiment."""
    root = tweeteval_dir(data_dir)
    if name == "train":
        sub = root / "train_reconstructed"
        return _paired(sub / "train_text.txt", sub / "train_labels.txt")
    if name in ("val", "test"):
        return _paired(root / f"{name}_text.txt", root / f"{name}_labels.txt")
    raise ValueError(f"unknown split {name!r}: use train, val or test")


def load_sentiment140(data_dir: Path) -> Split:
    """100k 2009 tweets, emoticon-labelled (noisy), negative=0 and positive=2 only."""
    root = data_dir / SENTIMENT140
    neg = _lines(root / "negative.txt")
    pos = _lines(root / "positive.txt")
    return Split(neg + pos, [0] * len(neg) + [2] * len(pos))
