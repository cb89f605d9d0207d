"""What the GRU's and the MiniLM teacher's training loops share: progress reporting,
length-bucketed batches and temperature fitting.

Its own module so that ``train`` (which scores with teachers) and ``teacher`` (which trains
them) both import it instead of each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from moodwire.logs import get_logger

log = get_logger(__name__)
IntArray = npt.NDArray[np.int64]


class Progress(Protocol):
    def start_epoch(self, epoch: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def end_epoch(self, epoch: int, val_macro_recall: float, best: float) -> None: ...


class Quiet:
    def start_epoch(self, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def end_epoch(self, epoch: int, val_macro_recall: float, best: float) -> None:
        log.info(
            "epoch done", extra={"epoch": epoch, "val_macro_recall": round(val_macro_recall, 4)}
        )


def length_batches(
    lengths: npt.NDArray[np.int64], batch_size: int, rng: np.random.Generator, shuffle: bool
) -> Iterator[IntArray]:
    """Row batches of similar length (less padding); the batch order itself is shuffled."""
    n = len(lengths)
    order = rng.permutation(n) if shuffle else np.arange(n)
    window = batch_size * 50
    batches = []
    for lo in range(0, n, window):
        chunk = order[lo : lo + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)  # type: ignore[arg-type]
    yield from batches


def fit_temperature(logits: torch.Tensor, labels: IntArray) -> float:
    """Temperature minimising val NLL (grid search: robust, one parameter)."""
    y = torch.from_numpy(labels)
    grid = np.linspace(0.5, 3.0, 51)
    losses = [float(nn.functional.cross_entropy(logits / t, y)) for t in grid]
    return float(grid[int(np.argmin(losses))])
