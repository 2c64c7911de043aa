"""`real_extra`: the real-data upper bound — held-back real rare-class training images added instead of synthetic ones."""

from __future__ import annotations

import numpy as np

from benchmark.core.errors import UserError
from benchmark.generators.base import Method, TrainingSet, synthetic_count


class RealExtra(Method):
    """At synthetic_ratio r, adds round(r × n_rare) of the cell's held-back real rare-class training images (those
    rarity subsampling removed), the first k in the seeded order that continues the kept ones: the images added at
    r = 1 are a prefix of those at r = 2. "balance" and "real_percentage=P" ask for as many as a generator would
    get, capped by the pool. The added images are real (never synthetic) and come from the training split only.
    Needs ``needs_held_back: true`` in its entry: the grid leaves it out at rare_count all (no pool)."""

    needs_held_back = True

    def __init__(self, **config):
        if config:
            raise UserError(f"real_extra: unknown config key(s) {', '.join(map(repr, sorted(config)))}; it takes "
                            "none (its entry holds only harness keys).")
        super().__init__()

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        if held_back is None:
            raise ValueError("real_extra needs the cell's held-back rare-class images (held_back=cell.held_back)")
        if len(held_back.labels) and not (held_back.labels == rare_class).all():
            raise ValueError("real_extra: the held-back pool holds images of classes other than the rare class")
        counts = np.bincount(real.labels, minlength=num_classes)
        wanted = synthetic_count(synthetic_ratio, int(counts[rare_class]), counts)
        k = min(wanted, len(held_back.labels))
        info = {"n_real_extra": k, "n_real_extra_available": len(held_back.labels), "n_real_extra_wanted": wanted}
        return TrainingSet(
            np.concatenate([real.images, held_back.images[:k]]),
            np.concatenate([real.labels, held_back.labels[:k].astype(real.labels.dtype)]),
            np.concatenate([real.is_synthetic, np.zeros(k, dtype=bool)]),
            None,
            info,
        )
