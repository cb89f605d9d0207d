"""A scorer whose engine loads on a thread of its own, so start-up work overlaps it.

Importing torch and loading the model takes 2-3 s of a worker's start, and a consumer-group
join waits seconds on the broker doing nothing; done one after the other they add up.
:class:`BackgroundScorer` starts the load at once and returns; the first ``predict`` (or
``model_version``) waits for it. A load that failed raises its error there, every time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from moodwire.logs import get_logger

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from moodwire.model.engine import InferenceEngine

log = get_logger(__name__)


class BackgroundScorer:
    """``InferenceEngine.load(...)`` on a daemon thread; the Scorer protocol on top.

    ``start=False`` defers the load to :meth:`start`: a thread importing torch competes
    for the GIL with whatever else the process imports, so the worker starts it when only
    network waits are left.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 512,
        on_loaded: Callable[[InferenceEngine], None] | None = None,
        start: bool = True,
    ) -> None:
        # The common failure, a wrong path, is said at once rather than at the first batch.
        if path is not None and not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"no model at {path} (config.json missing)")
        self._future: Future[InferenceEngine] = Future()
        self._on_loaded = on_loaded
        self._args = (path, device, threads, batch_size)
        self._thread = threading.Thread(target=self._load, name="moodwire-model-load", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Begin the load (once) when the scorer was made with ``start=False``."""
        if not self._thread.is_alive() and not self._future.done():
            self._thread.start()

    def _load(self) -> None:
        path, device, threads, batch_size = self._args
        try:
            # Imported here: torch's import is most of the time this thread overlaps.
            from moodwire.model.engine import InferenceEngine

            engine = InferenceEngine.load(
                path, device=device, threads=threads, batch_size=batch_size
            )
            if self._on_loaded is not None:
                self._on_loaded(engine)
        except BaseException as exc:
            log.error("model load failed", extra={"error": repr(exc)[:300]})
            self._future.set_exception(exc)
            return
        self._future.set_result(engine)

    def engine(self, timeout: float | None = None) -> InferenceEngine:
        """The loaded engine (waits for the load; raises what made it fail)."""
        return self._future.result(timeout)

    @property
    def loaded(self) -> bool:
        return self._future.done()

    @property
    def model_version(self) -> str:
        return self.engine().model_version

    def predict(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.engine().predict(texts)

    def close(self) -> None:
        if self._future.done() and self._future.exception() is None:
            self._future.result().close()
