"""Reading the labelled tweets in ``../shared/data`` in place (never copied into the repo)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodwire.settings import REPO_ROOT

TWEETEVAL = "tweeteval-sentiment"
SENTIMENT140 = "sentiment140/sample100k"
SEMEVAL = "semeval2017-task4a-english"
# Not in TweetEval train or val (their SOURCE.md): 2016 tweets, a second selection set.
DEVTEST = "twitter-2016devtest-A.txt"
_LABEL_IDS = {"negative": 0, "neutral": 1, "positive": 2}


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

    def sample(self, n: int, rng: np.random.Generator) -> Split:
        """``n`` rows drawn at random without repeats (a quick slice for tests)."""
        keep = rng.permutation(len(self))[:n]
        return Split([self.texts[i] for i in keep], [self.labels[i] for i in keep])


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
    """``train`` (the reconstructed train set), ``val`` or ``test`` of TweetEval sentiment,
    or ``devtest``: SemEval 2016 devtest, formatted as TweetEval, less any text of train or
    val."""
    root = tweeteval_dir(data_dir)
    if name == "train":
        sub = root / "train_reconstructed"
        return _paired(sub / "train_text.txt", sub / "train_labels.txt")
    if name in ("val", "test"):
        return _paired(root / f"{name}_text.txt", root / f"{name}_labels.txt")
    if name == "devtest":
        return _devtest(data_dir)
    raise ValueError(f"unknown split {name!r}: use train, val, devtest or test")


def load_splits(data_dir: Path, names: tuple[str, ...]) -> Split:
    """Several splits as one (a selection set of val + devtest, say)."""
    parts = [load_split(data_dir, n) for n in names]
    return Split([t for p in parts for t in p.texts], [y for p in parts for y in p.labels])


def tweeteval_format(raw: str) -> str:
    """A SemEval tweet as TweetEval wrote it (the rule that rebuilt train; it reproduces
    every val line): no ``http`` tokens, handles as ``@user``, one trailing space."""
    words = [
        "@user" if w.startswith(("@", '"@')) else w
        for w in raw.rstrip("\t").split(" ")
        if not w.startswith("http")
    ]
    return " ".join(words) + " "


def _devtest(data_dir: Path) -> Split:
    path = data_dir / SEMEVAL / DEVTEST
    seen = set(load_split(data_dir, "train").texts) | set(load_split(data_dir, "val").texts)
    texts, labels = [], []
    for line in _lines(path):
        fields = line.split("\t")
        if len(fields) < 3 or fields[1] not in _LABEL_IDS:
            continue  # the file's one tweet broken by a newline
        text = tweeteval_format("\t".join(fields[2:]))
        if text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(_LABEL_IDS[fields[1]])
    return Split(texts, labels)


def load_sentiment140(data_dir: Path) -> Split:
    """100k 2009 tweets, emoticon-labelled (noisy), negative=0 and positive=2 only."""
    root = data_dir / SENTIMENT140
    neg = _lines(root / "negative.txt")
    pos = _lines(root / "positive.txt")
    return Split(neg + pos, [0] * len(neg) + [2] * len(pos))
