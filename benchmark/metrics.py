"""Classification metrics on val and test (torchmetrics), with the rare class as the positive class."""

from __future__ import annotations

ECE_BINS = 15


def classification_metrics(probs, targets, num_classes: int, rare_class: int) -> dict:
    """Every metric a record carries for one split, from softmax probabilities (N, K) and integer targets (N,).

    AUROC is macro one-vs-rest (equal to the binary AUROC when K = 2); AUPRC is macro average precision;
    balanced accuracy is macro recall; rare_* treat the rare class as positive; ECE uses 15 equal-width bins.
    """
    import torch
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_average_precision,
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
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
    }
    metrics = {name: float(value) if torch.is_tensor(value) else value for name, value in metrics.items()}
    metrics["per_class_precision"] = [round(float(v), 6) for v in precision]
    metrics["per_class_recall"] = [round(float(v), 6) for v in recall]
    metrics["confusion_matrix"] = confusion.tolist()
    return metrics


SCALAR_METRICS = ("accuracy", "balanced_accuracy", "auroc", "auprc", "macro_f1", "rare_sensitivity",
                  "rare_specificity", "rare_precision", "rare_auprc", "ece")
