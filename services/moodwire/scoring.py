"""Model output to records: one place for the processor and ``rescore`` to build
:class:`~moodwire.records.ScoredPost` from the engine's class probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from moodwire.records import Post, ScoredPost


def scored_posts(
    posts: Sequence[Post],
    brands: Sequence[tuple[str, ...]],
    probs: npt.NDArray[np.float32],
    model_version: str,
) -> list[ScoredPost]:
    """``posts[i]`` with brands ``brands[i]`` and the class probabilities ``probs[i]``."""
    labels = probs.argmax(axis=1).tolist()
    return [
        ScoredPost(
            post=p,
            label=int(label),
            probs=(row[0], row[1], row[2]),
            model_version=model_version,
            brands=b,
        )
        for p, label, row, b in zip(posts, labels, probs.tolist(), brands, strict=True)
    ]
