"""Names, directions and labels: the metric columns, the cell / variant / unit keys, which way a metric is better,
and the canonical text of ratio, variant and unit labels.

Vocabulary
    cell      (dataset, image_size, rare_class, rare_count, backbone): the setting a comparison is made in.
    variant   (generator, synthetic_ratio): one method at one ratio form and mixing; label ``dcgan@2``,
              ``dcgan@balance``, ``oversample@real_percentage=50`` (just the method name when the ratio is 0). A
              mixing other than ``concat`` is part of the ratio label, after a '+' (:func:`mixed_ratio_label`):
              ``dcgan@balance+pretrain_finetune``, ``dcgan@1+synthetic_rare_only``: another variant of the method.
    unit      (seed, fold): the replicate that pairs a variant with its baseline inside a cell.
    block     a dataset, when methods are ranked (Friedman / Nemenyi): cells of one dataset share test sets, seeds
              and subsamples, so they are averaged into one value per dataset first.
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.core.training_set import (DEFAULT_MIXING, MIXINGS, REAL_PERCENTAGE_PREFIX, canonical_mixing,
                                         mixing_mode_problem, mixing_problem)
from benchmark.run.metrics import SCALAR_METRICS

METRICS = SCALAR_METRICS  # the harness's metric names: benchmark.run.metrics is their one source (order: records.csv's)
SPLITS = ("val", "test")
KNOWN_METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SPLITS for m in METRICS)
# metrics of the arg-max decision (predicted class = the larger probability): they reward a method that shifts the
# class prior (class_weight, oversampling) rather than one that ranks better, so they stay in the records but are
# not among the collector's defaults, which are the ranking metric and the validation-threshold metrics
ARGMAX_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "rare_sensitivity", "rare_specificity",
                  "rare_precision")
DEFAULT_METRICS = ("test_auroc", "test_thr_balanced_accuracy", "test_thr_rare_sensitivity")
LOWER_IS_BETTER = frozenset({"ece", "loss", "nll", "brier", "error", "wall_s", "compute_hours"})
BOUNDED_METRICS = frozenset(METRICS)  # every harness metric (and the chosen threshold) lies in [0, 1]

# a cell: what every method of a paired comparison shares; a grid with a `budget` axis (epochs vs step-matched)
# pairs within each budget form, so its confound is measured by comparing cells, never mixed into a pair
CELL = ("dataset", "image_size", "rare_class", "rare_count", "backbone", "budget")
# what an across-cells summary never pools over: cells of different budgets answer different questions (the budget
# confound), so each budget gets its own across-cells row, model and curve
UNPOOLED = ("budget",)


def several_budgets(frame) -> bool:
    """Whether a table (records or an across-cells summary) holds more than one budget: then every across-cells
    row, curve and panel names its budget."""
    return UNPOOLED[0] in frame.columns and frame[UNPOOLED[0]].nunique() > 1
VARIANT = ("generator", "synthetic_ratio")
UNIT = ("seed", "fold")
RATIO_FORMS = "a number ≥ 0, 'balance' or 'real_percentage=P' (0 < P ≤ 100)"  # a variant's may add '+mixing'
MIXING_SEPARATOR = "+"


def higher_is_better(metric: str) -> bool:
    """False for metrics where lower is better (``ece``, losses, errors, time); True otherwise."""
    base = metric.split("_", 1)[1] if metric.startswith(tuple(f"{s}_" for s in SPLITS)) else metric
    return not (base in LOWER_IS_BETTER or base.endswith(("_loss", "_error", "_ece")))


def _number_text(x: float) -> str:
    """2.0 → '2', 0.5 → '0.5' (shortest round-trip text of the float)."""
    return str(int(x)) if x == round(x) and abs(x) < 1e15 else repr(float(x))


def split_mixing(label: str) -> tuple[str, str]:
    """('balance', 'pretrain_finetune') from 'balance+pretrain_finetune'; (label, 'concat') without a mixing."""
    base, sep, mixing = str(label).partition(MIXING_SEPARATOR)
    return (base, mixing) if sep and mixing[:1].isalpha() else (str(label), DEFAULT_MIXING)  # not '1e+5'


def has_mixing(label) -> bool:
    """Whether a ratio label carries a mixing ('balance+pretrain_finetune')."""
    return split_mixing(str(label))[1] != DEFAULT_MIXING or str(label).endswith(MIXING_SEPARATOR + DEFAULT_MIXING)


def mixed_ratio_label(ratio, mixing=None) -> str:
    """The ratio label of a variant with its mixing: :func:`ratio_label` of `ratio`, then '+mixing' unless the
    mixing is concat, empty or missing (records made before the mixing axis): ('balance', 'pretrain_finetune') →
    'balance+pretrain_finetune', (2.0, 'concat') → '2'. An invalid mixing is kept as written (and rejected by
    :func:`ratio_problem`)."""
    label = ratio_label(ratio)
    if mixing is None or (isinstance(mixing, float) and math.isnan(mixing)) or str(mixing).strip() in ("", "-"):
        return label
    text = str(mixing).strip()
    text = canonical_mixing(text) if mixing_problem(text) is None else text
    return label if text == DEFAULT_MIXING else f"{label}{MIXING_SEPARATOR}{text}"


def ratio_label(value) -> str:
    """Canonical text of a ``synthetic_ratio`` value, the same however it was written or read back: numbers without
    a trailing '.0' (2, 2.0 and "2" → '2'; 0.5 → '0.5'), empty → '0' (methods without a ratio), 'balance',
    'real_percentage=P' with P written the same way ('real_percentage=50.0' → 'real_percentage=50'), and a
    variant's mixing after '+' in its canonical spelling ('2.0+pretrain_finetune=0.5' → '2+pretrain_finetune').
    Anything else is returned stripped (and rejected by :func:`prepare_records`)."""
    if isinstance(value, str) and has_mixing(value.strip()):
        base, mixing = split_mixing(value.strip())
        return mixed_ratio_label(base, mixing)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "0"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _number_text(float(value)) if math.isfinite(float(value)) else str(value)
    text = str(value).strip()
    if text == "":
        return "0"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return _number_text(number) if math.isfinite(number) else text
    if text.startswith(REAL_PERCENTAGE_PREFIX):
        try:
            pct = float(text[len(REAL_PERCENTAGE_PREFIX):])
        except ValueError:
            return text
        return REAL_PERCENTAGE_PREFIX + (_number_text(pct) if math.isfinite(pct) else str(pct))
    return text


def ratio_value(label) -> float:
    """The number a ratio label stands for ('2' → 2.0); NaN for 'balance' / 'real_percentage=P' and for a label
    with a mixing ('2+pretrain_finetune': not a point on the concat dose curve)."""
    try:
        return float(label)
    except (TypeError, ValueError):
        return float("nan")


def ratio_problem(label: str) -> str | None:
    """None if ``label`` (from :func:`ratio_label`) is a valid ratio form, else what is wrong with it."""
    if has_mixing(label):
        base, mixing = split_mixing(label)
        return ratio_problem(base) or mixing_problem(mixing) or (
            f"synthetic_ratio {label!r}: a ratio of 0 adds no images, so it has no mixing" if base == "0" else None)
    number = ratio_value(label)
    if math.isnan(number) and label in ("nan", "NaN"):
        return f"synthetic_ratio must be {RATIO_FORMS}, got {label!r}"
    if not math.isnan(number):
        return None if math.isfinite(number) and number >= 0 else \
            f"synthetic_ratio must be {RATIO_FORMS}, got {label!r}"
    return mixing_mode_problem(label)


def ratio_sort_key(label) -> tuple:
    """Display order of ratio labels: numbers ascending, then 'balance', then 'real_percentage=P' by decreasing P
    (fewer added images first), then anything else; a mixing sorts after its ratio's concat, in MIXINGS order."""
    label = ratio_label(label)
    if has_mixing(label):
        base, mixing = split_mixing(label)
        strategy = mixing.partition("=")[0]
        order = MIXINGS.index(strategy) if strategy in MIXINGS else len(MIXINGS)
        kind, number, text = ratio_sort_key(base)
        return (kind, number, f"{text}{MIXING_SEPARATOR}{order}{mixing}")
    number = ratio_value(label)
    if not math.isnan(number):
        return (0, number, "")
    if label == "balance":
        return (1, 0.0, "")
    if label.startswith(REAL_PERCENTAGE_PREFIX):
        return (2, -ratio_value(label[len(REAL_PERCENTAGE_PREFIX):]), "")
    return (3, 0.0, label)


def variant_label(generator, ratio, mixing=None) -> str:
    """``dcgan@2``, ``dcgan@balance``, ``oversample@real_percentage=50``; just the method name when the ratio is 0;
    ``dcgan@balance+pretrain_finetune`` with a mixing other than concat (given here, or already in the ratio
    label)."""
    label = mixed_ratio_label(ratio, mixing)
    return str(generator) if label == "0" else f"{generator}@{label}"


def _natural_key(value):
    """Sort key: numbers numerically, then strings ("all" after every count)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def unit_label(seed, fold) -> str:
    return f"{seed}" if int(fold) == 0 else f"{seed}/fold{int(fold)}"
