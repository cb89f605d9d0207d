"""Perturbed copies of the training tweets, for the teachers to label (distillation).

A student learns a teacher's function best from many inputs near the real ones (Tang et
al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks").
Each copy drops some words, swaps some for words drawn from the corpus (by frequency) and
is sometimes cut to a window of itself. The teachers label the copies; their original
labels are never used, since a cut or a swap can change the sentiment.
"""

from __future__ import annotations

import numpy as np

# Fixed, so that every student seed sees the same copies and the teachers score them once.
SEED = 2019


def augment(
    texts: list[str],
    copy: int = 0,
    drop: float = 0.1,
    swap: float = 0.1,
    window: float = 0.25,
) -> list[str]:
    """The ``copy``-th perturbed version of each text. Deterministic: copy ``k`` is always
    the same, so a teacher's cached scores of it serve any later ``--augment`` above ``k``."""
    rng = np.random.default_rng(SEED + copy)
    words = [t.split() for t in texts]
    corpus = [w for ws in words for w in ws]
    return [" ".join(_perturb(ws, corpus, rng, drop, swap, window)) if ws else "" for ws in words]


def _perturb(
    ws: list[str],
    corpus: list[str],
    rng: np.random.Generator,
    drop: float,
    swap: float,
    window: float,
) -> list[str]:
    n = len(ws)
    if n > 3 and rng.random() < window:
        size = int(rng.integers(-(-n // 2), n + 1))  # at least half of the words
        lo = int(rng.integers(0, n - size + 1))
        ws = ws[lo : lo + size]
    draw = rng.random(len(ws))
    kept = [
        corpus[int(rng.integers(len(corpus)))] if d < swap else w
        for w, d in zip(ws, draw, strict=True)
        if not swap <= d < swap + drop
    ]
    return kept or ws[:1]
