"""Classification metrics on val and test (torchmetrics), with the rare class as the positive class: arg-max
metrics, threshold-free ones, and rare-vs-rest metrics at a threshold chosen on the validation split."""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
SPECIFICITY_TARGET = 0.90  # rare_sensitivity_at_90spec: sensitivity at specificity ≥ this, read from the ROC
DEFAULT_THRESHOLD = 0.5    # the arg-max operating point of a binary task; the tie-break anchor of choose_threshold


def classification_metrics(probs, targets, num_classes: int, rare_class: int) -> dict:
    """Every metric a record carries for one split, from softmax probabilities (N, K) and integer targets (N,).

    AUROC is macro one-vs-rest (equal to the binary AUROC when K = 2); AUPRC is macro average precision;
    balanced accuracy is macro recall; rare_* treat the rare class as positive; ECE uses 15 equal-width bins;
    ``rare_sensitivity_at_90spec`` is the highest rare-vs-rest sensitivity of any threshold on the rare-class
    probability whose specificity is ≥ 0.90 (a point of the split's ROC, not interpolated). The threshold metrics
    (``thr_*``, ``threshold``) come from :func:`threshold_metrics`, not from here.
    """
    import torch
    from torchmetrics.functional.classification import (
        binary_auroc, binary_average_precision, binary_sensitivity_at_specificity, multiclass_accuracy,
        multiclass_auroc, multiclass_average_precision, multiclass_calibration_error, multiclass_confusion_matrix,
        multiclass_f1_score, multiclass_precision, multiclass_recall
    )

    probs = probs.float().cpu()
    targets = targets.long().cpu()
    preds = probs.argmax(dim=1)
    k = num_classes
    rare_positive = (targets == rare_class).long()
    if k == 2:
        auroc = binary_auroc(probs[:, 1], targets)
    else:
        auroc = multiclass_auroc(probs, targets, num_classes=k, average="macro")
    precision = multiclass_precision(preds, targets, num_classes=k, average=None, zero_division=0)
    recall = multiclass_recall(preds, targets, num_classes=k, average=None, zero_division=0)
    confusion = multiclass_confusion_matrix(preds, targets, num_classes=k)
    negatives = confusion.sum() - confusion[rare_class].sum()
    true_negatives = negatives - (confusion[:, rare_class].sum() - confusion[rare_class, rare_class])
    metrics = {
        "n": int(len(targets)),
        "accuracy": multiclass_accuracy(preds, targets, num_classes=k, average="micro"),
        "balanced_accuracy": multiclass_recall(preds, targets, num_classes=k, average="macro", zero_division=0),
        "auroc": auroc,
        "auprc": multiclass_average_precision(probs, targets, num_classes=k, average="macro"),
        "macro_f1": multiclass_f1_score(preds, targets, num_classes=k, average="macro", zero_division=0),
        "rare_sensitivity": recall[rare_class],
        "rare_specificity": true_negatives / negatives if negatives > 0 else torch.tensor(float("nan")),
        "rare_precision": precision[rare_class],
        "rare_auprc": binary_average_precision(probs[:, rare_class], rare_positive),
        "ece": multiclass_calibration_error(probs, targets, num_classes=k, n_bins=ECE_BINS, norm="l1"),
        "rare_sensitivity_at_90spec": (
            binary_sensitivity_at_specificity(probs[:, rare_class], rare_positive, SPECIFICITY_TARGET)[0]
            if 0 < int(rare_positive.sum()) < len(rare_positive) else torch.tensor(float("nan"))),
    }
    metrics = {name: float(value) if torch.is_tensor(value) else value for name, value in metrics.items()}
    metrics["per_class_precision"] = [round(float(v), 6) for v in precision]
    metrics["per_class_recall"] = [round(float(v), 6) for v in recall]
    metrics["confusion_matrix"] = confusion.tolist()
    return metrics


def _rare_scores(probs, targets, rare_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(rare-class probabilities as float64, is-rare booleans) as numpy arrays."""
    scores = np.asarray(probs.float().cpu().numpy() if hasattr(probs, "cpu") else probs, dtype=np.float64)
    labels = np.asarray(targets.cpu().numpy() if hasattr(targets, "cpu") else targets)
    return scores[:, rare_class], labels == rare_class


def _rates(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rare-vs-rest (sensitivity, specificity) for each threshold t: rare is predicted when score ≥ t."""
    pos, neg = np.sort(scores[positive]), np.sort(scores[~positive])
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)
        specificity = np.searchsorted(neg, thresholds, side="left") / len(neg)
    return sensitivity, specificity


def threshold_candidates(scores: np.ndarray) -> np.ndarray:
    """One threshold for each distinct rare-vs-rest classification of `scores` — the midpoints between adjacent
    distinct scores, 0.0 (everything rare) and a value above the largest score (nothing rare) — plus 0.5."""
    distinct = np.unique(scores)
    top = 1.0 if distinct[-1] < 1.0 else float(np.nextafter(distinct[-1], np.inf))
    return np.unique(np.concatenate([[0.0, DEFAULT_THRESHOLD, top], (distinct[:-1] + distinct[1:]) / 2.0]))


def choose_threshold(probs, targets, rare_class: int) -> float:
    """The threshold t on the rare-class probability (rare predicted when p ≥ t) that maximises the rare-vs-rest
    balanced accuracy — (sensitivity + specificity) / 2, equivalently Youden's J — on these (validation)
    predictions.

    Candidates are 0.5 and the midpoints between adjacent distinct scores (plus 0 and a value above the top
    score), so t is never a validation score unless it is 0.5. Ties (several classifications with the same best balanced
    accuracy, within 1e-12) go to the candidate closest to 0.5, then to the lower one; so when the 0.5 operating
    point is among the best, t = 0.5. Without both rare and other images the balanced accuracy is undefined and
    t = 0.5.
    """
    scores, positive = _rare_scores(probs, targets, rare_class)
    if positive.all() or not positive.any():
        return DEFAULT_THRESHOLD
    candidates = threshold_candidates(scores)
    sensitivity, specificity = _rates(scores, positive, candidates)
    balanced = (sensitivity + specificity) / 2.0
    best = candidates[balanced >= balanced.max() - 1e-12]
    distance = np.abs(best - DEFAULT_THRESHOLD)
    return float(best[distance <= distance.min() + 1e-15].min())


def threshold_metrics(probs, targets, rare_class: int, threshold: float) -> dict:
    """Rare-vs-rest metrics at `threshold` (chosen on the validation split by :func:`choose_threshold`, applied
    unchanged to test): ``thr_balanced_accuracy`` ((sensitivity + specificity) / 2), ``thr_rare_sensitivity``,
    ``thr_rare_specificity`` and ``threshold`` itself. NaN where a split lacks rare or other images."""
    scores, positive = _rare_scores(probs, targets, rare_class)
    sensitivity, specificity = (float(v[0]) for v in _rates(scores, positive, np.array([float(threshold)])))
    return {"thr_balanced_accuracy": (sensitivity + specificity) / 2.0, "thr_rare_sensitivity": sensitivity,
            "thr_rare_specificity": specificity, "threshold": float(threshold)}


# The <split>_<metric> columns of records.csv: classification_metrics' scalars, then threshold_metrics'. The one
# list of the harness's metric names: benchmark.collect.records writes these columns, benchmark.stats (stats.METRICS) and
# launch/collect.py read them from here, so this module imports torch only inside functions.
SCALAR_METRICS = ("accuracy", "balanced_accuracy", "auroc", "auprc", "macro_f1", "rare_sensitivity",
                  "rare_specificity", "rare_precision", "rare_auprc", "ece", "rare_sensitivity_at_90spec",
                  "thr_balanced_accuracy", "thr_rare_sensitivity", "thr_rare_specificity", "threshold")
