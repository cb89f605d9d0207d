"""What every consumer of a model needs of it (``InferenceEngine`` is the one in use).

A protocol, so that ``classify``, the stream processor and re-scoring type against it
without importing torch, and tests can hand them a scripted scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Scorer(Protocol):
    @property
    def model_version(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Probabilities ``[p_negative, p_neutral, p_positive]``, one row per text."""
        ...

    def close(self) -> None: ...
