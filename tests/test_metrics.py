"""Metrics against independent scikit-learn / numpy computations."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from benchmark.run.metrics import classification_metrics


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


# ------------------------------------------------------------------------------ validation-threshold metrics
def scores_and_labels(seed, n, num_classes, rare, shift=1.0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + shift * np.eye(num_classes)[targets]
    logits = np.round(logits, 1)  # ties between scores, as a real model's float32 outputs can have
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return probs, targets


def sklearn_best_balanced_accuracy(y_rare, score):
    """max over every distinct rare-vs-rest classification of the balanced accuracy, all by scikit-learn: the
    ROC's thresholds (drop_intermediate=False: every distinct score, and inf for 'nothing rare')."""
    _, _, thresholds = skm.roc_curve(y_rare, score, drop_intermediate=False)
    return max(skm.balanced_accuracy_score(y_rare, score >= t) for t in thresholds)


@pytest.mark.parametrize("num_classes,rare,seed", [(2, 0, 1), (2, 1, 2), (4, 3, 3), (3, 0, 4)])
def test_threshold_chosen_on_val_maximises_balanced_accuracy_and_is_applied_to_test(num_classes, rare, seed):
    from benchmark.run.metrics import choose_threshold, threshold_metrics

    val_probs, val_y = scores_and_labels(seed, 150, num_classes, rare, shift=0.8)
    test_probs, test_y = scores_and_labels(seed + 100, 300, num_classes, rare, shift=0.8)
    val_score, val_rare = val_probs[:, rare].astype(np.float64), val_y == rare
    t = choose_threshold(torch.tensor(val_probs), torch.tensor(val_y), rare)

    # the best validation balanced accuracy of rare vs rest, found by scikit-learn over every classification
    best = sklearn_best_balanced_accuracy(val_rare, val_score)
    val = threshold_metrics(torch.tensor(val_probs), torch.tensor(val_y), rare, t)
    assert val["thr_balanced_accuracy"] == pytest.approx(best, abs=1e-12)
    assert val["thr_balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(val_rare, val_score >= t))
    # tie rule: 0.5 when it is among the best; otherwise the best midpoint between distinct scores closest to 0.5
    distinct = np.unique(val_score)
    midpoints = np.r_[(distinct[:-1] + distinct[1:]) / 2, 0.5]
    optimal = [m for m in midpoints if skm.balanced_accuracy_score(val_rare, val_score >= m) >= best - 1e-12]
    assert abs(t - 0.5) == pytest.approx(min(abs(m - 0.5) for m in optimal), abs=1e-12)
    assert t not in set(val_score) or t == 0.5

    # the same t on test, against scikit-learn
    test = threshold_metrics(torch.tensor(test_probs), torch.tensor(test_y), rare, t)
    test_score, test_rare = test_probs[:, rare].astype(np.float64), test_y == rare
    predicted = test_score >= t
    assert test["threshold"] == t == val["threshold"]
    assert test["thr_balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(test_rare, predicted))
    assert test["thr_rare_sensitivity"] == pytest.approx(skm.recall_score(test_rare, predicted))
    assert test["thr_rare_specificity"] == pytest.approx(skm.recall_score(~test_rare, ~predicted))


@pytest.mark.parametrize("pos, neg, expected", [
    ([0.9, 0.8], [0.1, 0.2], 0.5),      # separable, 0.5 inside the best interval → the arg-max operating point
    ([0.3, 0.35], [0.1, 0.2], 0.25),    # best interval (0.2, 0.3] → its midpoint
    ([0.3, 0.9], [0.1, 0.6], 0.75),     # two best classifications (0.75 each): the one nearer 0.5
    ([0.3, 0.9], [0.1, 0.7], 0.2),      # equally near (0.2 and 0.8): the lower one
    ([0.6, 0.6], [0.6, 0.6], 0.5),      # no separation at all: 0.5
    ([0.7], [], 0.5),                   # no other class: undefined, 0.5
])
def test_threshold_tie_rule_on_hand_cases(pos, neg, expected):
    from benchmark.run.metrics import choose_threshold

    score = np.array(pos + neg)
    labels = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    assert choose_threshold(np.c_[1 - score, score], labels, 1) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("num_classes,rare,n_neg_target", [(2, 1, 100), (2, 0, None), (4, 2, None)])
def test_sensitivity_at_90_specificity_is_read_from_the_roc(num_classes, rare, n_neg_target):
    for seed in range(20):  # many draws: FP/N lands exactly on 0.1 in some of them (100 negatives)
        probs, targets = scores_and_labels(seed, 400, num_classes, rare)
        if n_neg_target:   # exactly n_neg_target negatives, so specificity 0.90 is an attainable ROC point
            order = np.r_[np.flatnonzero(targets != rare)[:n_neg_target], np.flatnonzero(targets == rare)[:40]]
            probs, targets = probs[order], targets[order]
        got = classification_metrics(torch.tensor(probs), torch.tensor(targets), num_classes, rare)
        fpr, tpr, _ = skm.roc_curve(targets == rare, probs[:, rare], drop_intermediate=False)
        assert got["rare_sensitivity_at_90spec"] == pytest.approx(tpr[fpr <= 0.1 + 1e-12].max(), abs=1e-6)


def test_threshold_metrics_are_nan_where_a_split_has_no_rare_images():
    from benchmark.run.metrics import threshold_metrics

    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    got = threshold_metrics(probs, torch.tensor([0, 0]), 1, 0.5)
    assert np.isnan(got["thr_rare_sensitivity"]) and got["thr_rare_specificity"] == 0.5
    assert np.isnan(got["thr_balanced_accuracy"]) and got["threshold"] == 0.5
    assert np.isnan(classification_metrics(probs, torch.tensor([0, 0]), 2, 1)["rare_sensitivity_at_90spec"])
