"""Classification metrics: macro-recall (TweetEval's official one), accuracy, P/R/F1, ECE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

N_CLASSES = 3


@dataclass(frozen=True)
class Report:
    macro_recall: float
    accuracy: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true label, columns: predicted
    ece: float
    n: int


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.int64]:
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * N_CLASSES + p, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)


def macro_recall(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    cm = confusion_matrix(y_true, y_pred)
    support = cm.sum(axis=1)
    recalls = np.divide(np.diag(cm), support, out=np.zeros(N_CLASSES), where=support > 0)
    return float(recalls[support > 0].mean()) if (support > 0).any() else 0.0


def expected_calibration_error(
    probs: npt.NDArray[np.floating], y_true: npt.ArrayLike, bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins."""
    t = np.asarray(y_true)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == t
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def report(probs: npt.NDArray[np.floating], y_true: npt.ArrayLike) -> Report:
    t = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(t, pred)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(N_CLASSES), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(N_CLASSES), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(N_CLASSES), where=denom > 0)
    return Report(
        macro_recall=macro_recall(t, pred),
        accuracy=float((pred == t).mean()) if len(t) else 0.0,
        macro_f1=float(f1.mean()),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        confusion=cm.tolist(),
        ece=expected_calibration_error(probs, t) if len(t) else 0.0,
        n=len(t),
    )
