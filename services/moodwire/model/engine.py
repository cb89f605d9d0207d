"""The one inference engine, shared by ``moodwire classify`` and the stream processor.

The GRU runs folded: the token's input projection is a table lookup (``network.fold``), so
each time step costs only the recurrent ``h @ W_hh`` and a few element-wise ops. Texts are
sorted by token count and cut into batches of similar length; inside a batch, rows are in
descending length so the rows still reading at step ``t`` are always a prefix, and finished
rows simply drop out (no padding is ever computed, and the result equals the unpadded GRU).
On CPU, batches run on ``threads`` worker threads with torch itself single-threaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from moodwire.logs import get_logger
from moodwire.model import artifact
from moodwire.model.text import Vocabulary

# Texts tokenized together (and sorted by length together); bounds the memory of one call.
_TOKENIZE_CHUNK = 8192
# Token ids of a chunk of texts, concatenated, and each text's token count.
Encoded = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]

log = get_logger(__name__)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return device


class InferenceEngine:
    """Scores texts with a saved model: ``predict(texts) -> (N, 3)`` probabilities."""

    def __init__(
        self,
        model: artifact.Artifact,
        *,
        model_version: str,
        device: str = "cpu",
        batch_size: int = 512,
        workers: int = 1,
    ) -> None:
        self.model_version = model_version
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.vocab = Vocabulary(
            model.vocab[2:],
            subwords=bool(model.config.get("subwords")),
            hashtags=bool(model.config.get("hashtags")),
        )
        if self.vocab.tokens != model.vocab:
            raise ValueError("vocab.txt must start with <pad>, <unk> and hold no duplicates")
        # Half precision on GPU only; on CPU float32 keeps the engine equal to the network.
        dtype = torch.float16 if device == "cuda" else torch.float32
        t = {k: v.to(device=device, dtype=dtype) for k, v in model.tensors.items()}
        gates_x = t["gates_x"]  # [D, V, 3H]
        self.directions, vocab_size, three_h = gates_x.shape
        if vocab_size != len(self.vocab):
            raise ValueError(f"weights have {vocab_size} rows, vocab.txt has {len(self.vocab)}")
        self.hidden = three_h // 3
        # tanh(a) = 2 * sigmoid(2a) - 1, and sigmoid is ~9x faster than tanh on this CPU
        # build: pre-scale every input of the candidate gate n by 2 (exact up to rounding).
        n_gate = slice(2 * self.hidden, None)
        for name in ("gates_x", "w_hh", "b_hh"):
            t[name] = t[name].clone()
            t[name][..., n_gate] *= 2
        gates_x = t["gates_x"]
        # One table for both directions: the backward direction's rows follow the forward's.
        self._table = gates_x.reshape(self.directions * vocab_size, three_h).contiguous()
        self._offsets = (torch.arange(self.directions) * vocab_size).view(-1, 1)
        # The state runs as u = (h + 1) / 2, so that the new state is lerp(sigmoid(.), u, z)
        # with no "2 * s - 1" step: h = 2u - 1 is folded into the weights that read the
        # state (two element-wise ops fewer per step).
        w_hh, head_w = t["w_hh"], t["head_weight"].T
        self._w_hh = (2 * w_hh).contiguous()
        self._b_hh = t["b_hh"] - w_hh.sum(dim=1, keepdim=True)
        self._head_w = (2 * head_w).contiguous()
        self._head_b = t["head_bias"] - head_w.sum(dim=0)
        self._inv_temperature = 1.0 / model.temperature
        self._dtype = dtype
        self._lock = threading.Lock()
        self.workers = max(1, int(workers)) if device == "cpu" else 1
        self._pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="moodwire-gru")
            if self.workers > 1
            else None
        )

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 512,
    ) -> InferenceEngine:
        # Settings are the caller's to pass: the engine serves alone, outside the pipeline.
        model_dir = Path(path) if path is not None else artifact.SHIPPED_MODEL_DIR
        workers = threads if threads is not None else (os.cpu_count() or 1)
        device = pick_device(device)
        if device == "cpu":
            # Batches run side by side, one core each (see _predict_chunk), so torch itself
            # runs single-threaded: its per-op thread hand-offs cost more than these small
            # ops, and collapse when another process holds one of the cores.
            torch.set_num_threads(1)
        engine = cls(
            artifact.load(model_dir),
            model_version=artifact.model_version(model_dir),
            device=device,
            batch_size=batch_size,
            workers=workers,
        )
        log.info(
            "model loaded",
            extra={
                "model_version": engine.model_version,
                "device": engine.device,
                "workers": engine.workers,
                "hidden": engine.hidden,
                "directions": engine.directions,
            },
        )
        return engine

    def close(self) -> None:
        """Stop the worker threads (a later ``predict`` runs on the caller's thread)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def predict(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """[p_neg, p_neu, p_pos] per text, in input order. Any string is accepted."""
        n = len(texts)
        out = np.empty((n, 3), dtype=np.float32)
        with self._lock:
            for lo in range(0, n, _TOKENIZE_CHUNK):
                chunk = [t if isinstance(t, str) else "" for t in texts[lo : lo + _TOKENIZE_CHUNK]]
                out[lo : lo + len(chunk)] = self._predict_chunk(chunk)
        return out

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """The tokenizer's half of :meth:`predict`, for a caller that runs it on a thread
        of its own (``classify`` tokenizes chunk k+1 while the GRU reads chunk k):
        ``predict_encoded(encode(texts)) == predict(texts)``."""
        out: list[Encoded] = []
        for lo in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = [t if isinstance(t, str) else "" for t in texts[lo : lo + _TOKENIZE_CHUNK]]
            out.append(self.vocab.encode(chunk))
        return out

    def predict_encoded(self, encoded: Sequence[Encoded]) -> npt.NDArray[np.float32]:
        """The network's half of :meth:`predict`, on what :meth:`encode` returned."""
        with self._lock:
            parts = [self._forward_chunk(ids, lengths) for ids, lengths in encoded]
        return np.concatenate(parts) if parts else np.empty((0, 3), dtype=np.float32)

    def _predict_chunk(self, texts: list[str]) -> npt.NDArray[np.float32]:
        ids, lengths = self.vocab.encode(texts)
        return self._forward_chunk(ids, lengths)

    def _forward_chunk(
        self, ids: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        n = len(lengths)  # one entry per text
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        order = np.argsort(-lengths, kind="stable")
        probs = np.empty((n, 3), dtype=np.float32)
        batches = [order[lo : lo + self.batch_size] for lo in range(0, n, self.batch_size)]

        def run(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            with torch.inference_mode():  # thread-local: set in the worker itself
                return self._forward(ids, starts[rows], lengths[rows])

        # torch releases the GIL inside every op, so batches on different workers overlap.
        results = (
            self._pool.map(run, batches) if self._pool and len(batches) > 1 else map(run, batches)
        )
        for rows, result in zip(batches, results, strict=True):
            probs[rows] = result
        return probs

    def _forward(
        self,
        ids: npt.NDArray[np.int64],
        starts: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """One batch, rows in descending length order."""
        h_dim, dirs = self.hidden, self.directions
        batch, steps = len(lengths), int(lengths[0])
        step = np.arange(steps)
        last = (lengths - 1)[:, None]
        positions = [starts[:, None] + np.minimum(step, last)]
        if dirs == 2:
            positions.append(starts[:, None] + np.maximum(last - step, 0))
        # index[t, d, b]: table row read by direction d of row b at step t
        index = torch.from_numpy(np.stack([ids[p].T for p in positions], axis=1))
        index = (index + self._offsets).to(self.device)
        active = (lengths[None, :] > step[:, None]).sum(axis=1).tolist()

        dev, dt = self.device, self._dtype
        u = torch.full((dirs, batch, h_dim), 0.5, device=dev, dtype=dt)  # h = 0
        # Pooling runs along: a row that has ended keeps its max and sum (u > 0 on every
        # step, so a max that starts at 0 is exact). Each step's input gates are gathered at
        # that step, small enough to stay in cache: one [T, D, B, 3H] gather up front and a
        # [T, D, B, H] record of every state to pool at the end took 15-25% more CPU time.
        pooled_max = torch.zeros(dirs, batch, h_dim, device=dev, dtype=dt)
        pooled_sum = torch.zeros(dirs, batch, h_dim, device=dev, dtype=dt)
        for t in range(steps):
            k = active[t]
            if k < u.shape[1]:
                u = u[:, :k]
            x = torch.nn.functional.embedding(index[t, :, :k], self._table)
            g = torch.baddbmm(self._b_hh, u, self._w_hh)
            rz = x[..., : 2 * h_dim].add_(g[..., : 2 * h_dim]).sigmoid_()
            # sigmoid(2a) = (tanh(a) + 1) / 2: the candidate state n, in u's scale
            n = x[..., 2 * h_dim :].addcmul_(rz[..., :h_dim], g[..., 2 * h_dim :]).sigmoid_()
            # u' = (1 - z) * n + z * u, in one op
            u = torch.lerp(n, u, rz[..., h_dim:])
            pooled_sum[:, :k] += u
            torch.maximum(pooled_max[:, :k], u, out=pooled_max[:, :k])
        lens = torch.from_numpy(lengths).to(device=dev, dtype=dt)[None, :, None]
        pooled_mean = pooled_sum / lens
        features = torch.cat([pooled_max, pooled_mean], dim=0)  # [2D, B, H]
        features = features.permute(1, 0, 2).reshape(batch, 2 * dirs * h_dim)
        logits = torch.addmm(self._head_b, features, self._head_w) * self._inv_temperature
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
