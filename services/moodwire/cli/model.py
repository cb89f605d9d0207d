"""CLI: `moodwire model train|eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moodwire.model.labels import LABELS

console = Console(stderr=True)


class _Bar:
    """Rich progress bar: loss as it falls, val macro-recall after each epoch. Where stderr
    is not a terminal (a log file, CI), a line every tenth of an epoch instead."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("train", total=None, loss=float("nan"), val="-")
        self.loss = 0.0
        self.name, self.steps, self.done = "", 0, 0

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.name = f"epoch {epoch}" if epoch > 0 else f"pre-train {-epoch}"
        self.steps, self.done = steps, 0
        self.progress.reset(self.task, total=steps, description=self.name)

    def step(self, loss: float) -> None:
        self.loss = loss if self.loss == 0.0 else 0.95 * self.loss + 0.05 * loss
        self.progress.update(self.task, advance=1, loss=self.loss)
        self.done += 1
        tenth = max(1, self.steps // 10)
        if not console.is_terminal and self.done % tenth == 0 and self.done < self.steps:
            console.print(f"{self.name}: step {self.done}/{self.steps}, loss {self.loss:.4f}")

    def end_epoch(self, epoch: int, val_macro_recall: float, best: float) -> None:
        self.progress.update(self.task, val=f"{val_macro_recall:.4f} (best {best:.4f})")
        console.print(f"epoch {epoch}: val macro-recall {val_macro_recall:.4f}, best {best:.4f}")


def _progress() -> Progress:
    """The training bar: epoch, steps, smoothed loss, val macro-recall, time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _data_dir(data: Path | None) -> Path:
    from moodwire.training.data import default_data_dir

    path = data or default_data_dir()
    if not path.is_dir():
        raise typer.BadParameter(f"{path} is not a directory (set --data or MOODWIRE_DATA_DIR)")
    return path


def train(
    data: Annotated[
        Path | None, typer.Option("--data", help="Shared data dir (default ../shared/data).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")] = Path(
        "models/moodwire-gru"
    ),
    epochs: Annotated[
        int | None, typer.Option(help="Most epochs (early stopping on val macro-recall).")
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many epochs without a better val.")
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="GRU hidden size per direction.")] = None,
    max_vocab: Annotated[
        int | None,
        typer.Option(help="Most vocabulary entries (each: 6 x hidden bytes per direction)."),
    ] = None,
    bidirectional: Annotated[
        bool | None, typer.Option("--bidirectional/--forward", help="GRU directions.")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help="Dropout on the word vectors and before the head.")
    ] = None,
    word_dropout: Annotated[
        float | None,
        typer.Option(help="Share of TweetEval train tokens set to <unk> (not the transfer set)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    max_train: Annotated[
        int | None, typer.Option(help="Train on a random slice (quick runs).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads for training.")] = None,
    words: Annotated[
        bool | None,
        typer.Option("--words/--wordpiece-only", help="Word-level vocabulary, or WordPiece only."),
    ] = None,
    pretrain_epochs: Annotated[
        int | None,
        typer.Option(help="Epochs of 2-class pre-training on sentiment140 before TweetEval."),
    ] = None,
    teacher: Annotated[
        list[Path] | None,
        typer.Option(
            "--teacher",
            help="Distil from this saved model (repeat for an ensemble: probabilities averaged).",
        ),
    ] = None,
    distill_weight: Annotated[
        float | None, typer.Option(help="Share of the teachers' soft loss on train (0-1).")
    ] = None,
    teacher_embeddings: Annotated[
        bool | None,
        typer.Option(
            "--teacher-embeddings/--minilm-embeddings",
            help="Start word vectors from the MiniLM teacher's reading of each word alone.",
        ),
    ] = None,
    transfer: Annotated[
        bool | None,
        typer.Option(
            "--transfer/--no-transfer",
            help="With --teacher: also learn the teachers' labels of sentiment140's texts.",
        ),
    ] = None,
    hashtags: Annotated[
        bool | None,
        typer.Option(
            "--hashtags/--no-hashtags", help="Split unknown hashtags into known words first."
        ),
    ] = None,
    extra_vocab: Annotated[
        bool | None,
        typer.Option("--extra-vocab/--train-vocab", help="Also take words seen in sentiment140."),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            help="Split(s) that pick the epoch: val (default), devtest; repeat to combine.",
        ),
    ] = None,
    augment: Annotated[
        int | None,
        typer.Option(
            help="With --teacher: perturbed copies of each train tweet for the teachers to label."
        ),
    ] = None,
    embedding_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of the word vectors (0 keeps their start frozen)."),
    ] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            help="Select and save a moving average of the weights with this decay (0: off)."
        ),
    ] = None,
) -> None:
    """Train on TweetEval train, select on val (never test), save the model and its card."""
    from dataclasses import replace

    from moodwire.training.teacher import is_teacher
    from moodwire.training.train import TrainConfig
    from moodwire.training.train import train as run_training

    given: dict[str, Any] = {
        "epochs": epochs,
        "patience": patience,
        "hidden": hidden,
        "max_vocab": max_vocab,
        "bidirectional": bidirectional,
        "dropout": dropout,
        "word_dropout": word_dropout,
        "seed": seed,
        "max_train": max_train,
        "threads": threads,
        "pretrain_epochs": pretrain_epochs,
        "words": words,
        "teachers": tuple(str(t) for t in teacher) if teacher else None,
        "distill_weight": distill_weight,
        "transfer": transfer,
        "teacher_embeddings": teacher_embeddings,
        "extra_vocab": extra_vocab,
        "hashtags": hashtags,
        "augment": augment,
        "select": tuple(select) if select else None,
        "ema": ema,
        "embedding_lr": embedding_lr,
    }
    for path in teacher or []:
        if not (path / "config.json").is_file():
            raise typer.BadParameter(
                f"{path} is not a saved model (no config.json)", param_hint="--teacher"
            )
    if teacher_embeddings and not any(is_teacher(path) for path in teacher or []):
        raise typer.BadParameter(
            "needs a MiniLM --teacher (from `model train-teacher`)",
            param_hint="--teacher-embeddings",
        )
    if augment and not teacher:
        raise typer.BadParameter(
            "needs --teacher (the copies carry no labels)", param_hint="--augment"
        )
    for name in select or []:
        if name not in ("val", "devtest"):
            raise typer.BadParameter(f"{name!r}: use val or devtest", param_hint="--select")
    if augment is not None and augment < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--augment")
    if embedding_lr is not None and embedding_lr < 0:
        raise typer.BadParameter("must be 0 (frozen) or more", param_hint="--embedding-lr")
    if ema is not None and not 0 <= ema < 1:
        raise typer.BadParameter("must be 0 (off) or between 0 and 1", param_hint="--ema")
    if distill_weight is not None and not 0 <= distill_weight <= 1:
        raise typer.BadParameter("must be between 0 and 1", param_hint="--distill-weight")
    config = replace(TrainConfig(), **{k: v for k, v in given.items() if v is not None})
    with _progress() as progress:
        result = run_training(_data_dir(data), out, config, progress=_Bar(progress))
    console.print(
        f"saved {result.model_version} to {out} in {result.seconds:.0f} s: best epoch "
        f"{result.best_epoch}, val macro-recall {result.val.macro_recall:.4f}"
    )


def train_teacher(
    data: Annotated[
        Path | None, typer.Option("--data", help="Shared data dir (default ../shared/data).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Teacher directory to write.")] = Path(
        "build/teacher"
    ),
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    max_train: Annotated[
        int | None, typer.Option(help="Train on a random slice (quick runs).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Fine-tune MiniLM-L6 as a teacher for `model train --teacher` (never served)."""
    from dataclasses import replace

    from moodwire.training.teacher import TeacherConfig
    from moodwire.training.teacher import train_teacher as run

    given = {"epochs": epochs, "threads": threads, "max_train": max_train, "seed": seed}
    config = replace(TeacherConfig(), **{k: v for k, v in given.items() if v is not None})
    with _progress() as progress:
        teacher = run(_data_dir(data), out, config, progress=_Bar(progress))
    console.print(
        f"saved {teacher.version} to {out}: val macro-recall "
        f"{teacher.config['val_macro_recall']:.4f}, temperature {teacher.config['temperature']:.2f}"
    )


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model directory.")] = Path(
        "models/moodwire-gru"
    ),
    data: Annotated[
        Path | None, typer.Option("--data", help="Shared data dir (default ../shared/data).")
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="Splits to score (default val, test).")
    ] = None,
) -> None:
    """Print macro-recall, accuracy, per-class P/R/F1, confusion and ECE; update the card."""
    from moodwire.training.evaluate import evaluate as run_eval

    try:
        reports = run_eval(model, _data_dir(data), tuple(split or ("val", "test")))
    except (OSError, ValueError) as exc:  # no model or data files there, an unknown split
        console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    out = Console()
    for name, r in reports.items():
        out.print(
            f"[bold]{name}[/bold] ({r.n}): macro-recall {r.macro_recall:.4f}  "
            f"accuracy {r.accuracy:.4f}  macro-F1 {r.macro_f1:.4f}  ECE {r.ece:.4f}"
        )
        predicted = [f"-> {x[:3]}" for x in LABELS]
        table = Table("class", "precision", "recall", "F1", "support", *predicted)
        for i, label in enumerate(LABELS):
            table.add_row(
                label,
                f"{r.precision[i]:.4f}",
                f"{r.recall[i]:.4f}",
                f"{r.f1[i]:.4f}",
                str(r.support[i]),
                *[str(v) for v in r.confusion[i]],
            )
        out.print(table)
    out.print(f"model card updated: {model / 'README.md'}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    group = typer.Typer(help="Train and evaluate the GRU sentiment model.", no_args_is_help=True)
    group.command("train")(train)
    group.command("train-teacher")(train_teacher)
    group.command("eval")(evaluate)
    app.add_typer(group, name="model")
