"""Metrics against independent scikit-learn / numpy computations."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from benchmark.metrics import classification_metrics


def expected_ece(probs, targets, bins=15):
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == targets[inside]).mean() - conf[inside].mean())
    return total


@pytest.mark.parametrize("num_classes,rare", [(2, 0), (4, 3)])
def test_metrics_match_sklearn(num_classes, rare):
    rng = np.random.default_rng(num_classes)
    targets = rng.integers(0, num_classes, 400)
    logits = rng.normal(size=(400, num_classes)) + 1.5 * np.eye(num_classes)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = classification_metrics(torch.tensor(probs), torch.tensor(targets), num_classes, rare)
    pred = probs.argmax(1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(targets, pred), abs=1e-6)
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(targets, pred), abs=1e-6)
    auroc = (skm.roc_auc_score(targets, probs[:, 1]) if num_classes == 2
             else skm.roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    assert got["auroc"] == pytest.approx(auroc, abs=1e-5)
    onehot = np.eye(num_classes)[targets]
    assert got["auprc"] == pytest.approx(skm.average_precision_score(onehot, probs, average="macro"), abs=1e-5)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(targets, pred, average="macro"), abs=1e-6)
    assert got["rare_sensitivity"] == pytest.approx(skm.recall_score(targets == rare, pred == rare), abs=1e-6)
    assert got["rare_precision"] == pytest.approx(skm.precision_score(targets == rare, pred == rare), abs=1e-6)
    assert got["rare_specificity"] == pytest.approx(skm.recall_score(targets != rare, pred != rare), abs=1e-6)
    assert got["rare_auprc"] == pytest.approx(skm.average_precision_score(targets == rare, probs[:, rare]), abs=1e-5)
    assert got["confusion_matrix"] == skm.confusion_matrix(targets, pred, labels=range(num_classes)).tolist()
    assert got["per_class_recall"] == pytest.approx(skm.recall_score(targets, pred, average=None), abs=1e-5)
    assert got["ece"] == pytest.approx(expected_ece(probs, targets), abs=1e-5)
