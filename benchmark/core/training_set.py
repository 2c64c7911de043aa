"""What a classifier trains on and how many images a method adds: `TrainingSet`, the `synthetic_ratio` vocabulary
(a number, ``balance``, ``real_percentage=P``), the added-image count, a generator's bank size, and the `mixing`
vocabulary (how added images enter training: ``concat``, ``pretrain_finetune[=F]``, ``synthetic_rare_only``) with
`apply_mixing`, which turns a method's training set into the one a job of that mixing trains on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

DEFAULT_BANK_MULTIPLE = 8  # bank = max(8 × real rare count, images needed to balance the classes)


@dataclass
class TrainingSet:
    """What a classifier trains on: uint8 images (N, C, H, W), int64 labels, optional per-class loss weights, and
    optionally the loss and the batch transform the training function uses instead of plain cross-entropy
    (``benchmark.generators.imbalance``: e.g. ``{"name": "focal", "gamma": 2.0}``, ``{"name": "mixup",
    "alpha": 0.2}``)."""

    images: np.ndarray
    labels: np.ndarray
    is_synthetic: np.ndarray  # bool (N,): True for generated (or duplicated) images
    class_weights: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    loss: dict | None = None
    batch_transform: dict | None = None
    # pretrain_finetune (apply_mixing): the real images the last `finetune_fraction` of the step budget trains on
    finetune_set: "TrainingSet | None" = None
    finetune_fraction: float | None = None

    def counts(self, num_classes: int) -> dict:
        """Real and synthetic images per class, as recorded in every result."""
        real = np.bincount(self.labels[~self.is_synthetic], minlength=num_classes)
        synthetic = np.bincount(self.labels[self.is_synthetic], minlength=num_classes)
        return {"real_per_class": real.tolist(), "synthetic_per_class": synthetic.tolist()}


REAL_PERCENTAGE_PREFIX = "real_percentage="


def mixing_mode_problem(ratio) -> str | None:
    """None if `ratio` is a valid synthetic_ratio value, else what is wrong with it."""
    if ratio == "balance":
        return None
    if isinstance(ratio, str) and ratio.startswith(REAL_PERCENTAGE_PREFIX):
        try:
            percentage = float(ratio[len(REAL_PERCENTAGE_PREFIX):])
        except ValueError:
            percentage = -1.0
        if 0 < percentage <= 100:
            return None
        return f"synthetic_ratio {ratio!r}: the real percentage must be a number in (0, 100]"
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
        return (f"synthetic_ratio must be a number ≥ 0, 'balance' or 'real_percentage=P' (0 < P ≤ 100), "
                f"got {ratio!r}")
    return None


def synthetic_count(ratio, n_rare: int, counts: np.ndarray) -> int:
    """Synthetic (or duplicated) rare images a job adds. A number: `ratio` × the real rare count. "balance": as
    many as make the rare class as large as the largest class. "real_percentage=P": as many as make real images
    P % of the mixed training set (as a published mammography-synthesis pipeline offers)."""
    if ratio == "balance":
        return max(0, int(counts.max()) - n_rare)
    if isinstance(ratio, str) and ratio.startswith(REAL_PERCENTAGE_PREFIX):
        percentage = float(ratio[len(REAL_PERCENTAGE_PREFIX):])
        return int(round(int(counts.sum()) * (100.0 / percentage - 1.0)))
    return int(round(float(ratio) * n_rare))


def bank_size(counts: np.ndarray, rare_class: int, multiple: int) -> int:
    """Images a generator job samples into its bank, from the cell's real training counts per class."""
    counts = np.asarray(counts)
    n_rare = int(counts[rare_class]) if rare_class < len(counts) else 0
    return max(multiple * n_rare, int(counts.max()) - n_rare, 1)


def no_held_back_note(method: str, n_jobs: int) -> tuple[str, int]:
    """The one line (reason, count) for jobs of a method that adds held-back real images (``needs_held_back``) left
    out where the rare count keeps every rare training image (``all``, or a number equal to the class size)."""
    return (f"{method} job(s) where the rare count keeps every rare training image (rare_count all or the class "
            f"size: no held-back real images to add)", n_jobs)


# --- mixing: how a method's added images enter training (the grid's `mixing` axis) --------------------------------

DEFAULT_MIXING = "concat"
PRETRAIN_FINETUNE = "pretrain_finetune"
MIXINGS = (DEFAULT_MIXING, PRETRAIN_FINETUNE, "synthetic_rare_only")
DEFAULT_FINETUNE_FRACTION = 0.5  # `pretrain_finetune` alone: the second half of the steps on real images only
MIXING_FORMS = ("concat, pretrain_finetune (= pretrain_finetune=0.5), pretrain_finetune=F with F in (0, 1) the "
                "fraction of the steps that fine-tune on real images only, synthetic_rare_only")


def parse_mixing(value) -> tuple[str, float | None]:
    """(strategy, fine-tune fraction) of a valid mixing value; the fraction is None except for pretrain_finetune."""
    text = str(value)
    if text.startswith(PRETRAIN_FINETUNE + "="):
        return PRETRAIN_FINETUNE, float(text[len(PRETRAIN_FINETUNE) + 1:])
    return text, (DEFAULT_FINETUNE_FRACTION if text == PRETRAIN_FINETUNE else None)


def mixing_problem(value) -> str | None:
    """None if `value` is a valid `mixing` axis value, else what is wrong with it and how to write it."""
    import difflib

    if isinstance(value, str) and value in MIXINGS:
        return None
    if isinstance(value, str) and value.startswith(PRETRAIN_FINETUNE + "="):
        try:
            fraction = float(value[len(PRETRAIN_FINETUNE) + 1:])
        except ValueError:
            fraction = float("nan")
        if 0 < fraction < 1:
            return None
        return (f"mixing {value!r}: the fine-tune fraction after '{PRETRAIN_FINETUNE}=' must be a number in (0, 1) "
                f"(the share of the step budget trained on real images only), e.g. {PRETRAIN_FINETUNE}=0.25")
    close = difflib.get_close_matches(str(value), MIXINGS, n=2, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown mixing {value!r}.{hint} Valid values: {MIXING_FORMS}."


def canonical_mixing(value) -> str:
    """One spelling per valid mixing value: 'pretrain_finetune=0.5' (the default fraction) → 'pretrain_finetune',
    'pretrain_finetune=.250' → 'pretrain_finetune=0.25'; the others unchanged."""
    strategy, fraction = parse_mixing(value)
    if strategy != PRETRAIN_FINETUNE or fraction == DEFAULT_FINETUNE_FRACTION:
        return strategy
    return f"{PRETRAIN_FINETUNE}={fraction!r}"


def added_mask(training_set: TrainingSet, real: TrainingSet) -> np.ndarray:
    """True for the images a method added to the cell's real training images `real`. Every method that adds images
    returns the real images first, in their order, then the added ones (generated, duplicated or held-back real
    images); a training set that does not start with `real` is refused (no mixing can tell its images apart)."""
    n = len(real.labels)
    if len(training_set.labels) < n or not (np.array_equal(training_set.labels[:n], real.labels)
                                            and np.array_equal(training_set.images[:n], real.images)):
        raise ValueError("mixing: the method's training set does not start with the cell's real training images in "
                         "their order, so its added images cannot be told apart; such a method supports only "
                         "mixing 'concat'")
    mask = np.zeros(len(training_set.labels), dtype=bool)
    mask[n:] = True
    return mask


def apply_mixing(training_set: TrainingSet, real: TrainingSet, rare_class: int, mixing: str) -> TrainingSet:
    """The training set a job with `mixing` trains on, from its method's set and the cell's real images.

    concat: unchanged. pretrain_finetune[=F]: unchanged, with `finetune_set` the real images (the method's loss,
    class weights and batch transform kept) that the last F of the step budget trains on. synthetic_rare_only: the
    rare class's real images removed, the added ones kept, every other class's real images untouched."""
    strategy, fraction = parse_mixing(mixing)
    if strategy == DEFAULT_MIXING:
        return training_set
    added = added_mask(training_set, real)
    if not added.any():
        raise ValueError(f"mixing {mixing!r} needs added images, but the method added none (synthetic_ratio 0 or an "
                         "empty pool); use mixing 'concat'")
    if strategy == PRETRAIN_FINETUNE:
        finetune = TrainingSet(real.images, real.labels, np.zeros(len(real.labels), dtype=bool))
        return replace(training_set, finetune_set=finetune, finetune_fraction=fraction,
                       info={**training_set.info, "mixing": mixing})
    keep = added | (training_set.labels != rare_class)
    return replace(training_set, images=training_set.images[keep], labels=training_set.labels[keep],
                   is_synthetic=training_set.is_synthetic[keep],
                   info={**training_set.info, "mixing": mixing,
                         "n_rare_real_removed": int((~keep).sum())})
