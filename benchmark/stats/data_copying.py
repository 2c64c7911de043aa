"""The three-sample data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020): the C_T statistic, its
per-cell Mann-Whitney z-scores and a one-sided p-value, on precomputed features (numpy / scipy / scikit-learn).

Samples (rows are feature vectors of one space):
    T    the training sample: the images the generator saw (the cell's kept rare-class training images);
    P_n  the test sample: real images from the same distribution that the generator never saw (the cell's held-back
         rare-class training images), n of them;
    Q_m  the generated sample (the bank), m of them.

Statistic (the paper's Section 3, as in its reference code github.com/casey-meehan/data-copying):
1. Partition the space into k cells by k-means fitted on T (scikit-learn ``KMeans``, ``n_init=10``, seeded); P_n
   and Q_m are assigned to the nearest centroid.
2. In each cell π, every test and generated point's distance to its nearest training point of that cell (T_π, as in
   the reference code), L_π(P_n) and L_π(Q_m).
3. Z_U(π): the Mann-Whitney U of L_π(Q_m) against L_π(P_n) (U = #{(q, p): d(q) > d(p)} + ½ #{ties}), z-scored
   under the null with the continuity correction and no tie correction, as the paper does:
   Z_U = (U − (n_π m_π / 2 − ½)) / sqrt(n_π m_π (n_π + m_π + 1) / 12). Z_U ≪ 0: generated points sit closer to
   the training points than fresh real points do (copying); ≫ 0: farther (underfitting).
4. C_T = Σ_{π∈Π_τ} P_n(π) Z_U(π) / Σ_{π∈Π_τ} P_n(π): the average of the cells' Z_U weighted by the test sample's
   share P_n(π), over the cells Π_τ = {π : Q_m(π) ≥ τ} that hold enough generated points (the paper's τ; here
   τ = ``MIN_GENERATED_PER_CELL`` / m, so every kept cell's U has at least that many generated points). Cells with
   no test point have weight 0 and drop out.

p-value (ours; the paper reads C_T against 0). Under the null (Q = P) each Z_U(π) is approximately standard normal
and, given T, the cells are disjoint, so C_T is approximately normal with mean 0 and SD sqrt(Σ w_π²), w_π the
normalised weights P_n(π) / Σ P_n(π) — below 1 whenever more than one cell counts. ``z`` = C_T / that SD and
``p_value`` = Φ(z), one-sided: small when the bank copies (is closer to T than P_n is).

Number of cells (the paper uses k-means with many cells on large samples; a rare class has ~20 training images):
    k = max(1, min(MAX_CELLS, |T| // MIN_TRAIN_PER_CELL, n // MIN_TEST_PER_CELL, m // MIN_GENERATED_PER_CELL))
so that a cell holds on average at least 5 training, 10 test and 10 generated points (20 training and 46 held-back
images: 4 cells). Too small a sample (|T| < 2, n < ``MIN_TEST``, m < ``MIN_GENERATED_PER_CELL``) gives NaN and a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_CELLS = 10
MIN_TRAIN_PER_CELL = 5
MIN_TEST_PER_CELL = 10
MIN_GENERATED_PER_CELL = 10
MIN_TEST = 5  # fewer held-back points than this: no test


@dataclass
class DataCopyingResult:
    """C_T and what it was made of; ``cells`` holds one dict per k-means cell (its counts, share, Z_U, whether used)."""

    ct: float
    z: float
    p_value: float
    n_cells: int
    cells_used: int
    tau: float
    n_train: int
    n_test: int
    n_generated: int
    note: str
    cells: list = field(default_factory=list)


def number_of_cells(n_train: int, n_test: int, n_generated: int) -> int:
    """The k-means cell count of the module docstring's rule (at least 1)."""
    return max(1, min(MAX_CELLS, n_train // MIN_TRAIN_PER_CELL, n_test // MIN_TEST_PER_CELL,
                      n_generated // MIN_GENERATED_PER_CELL))


def mann_whitney_z(test_dist: np.ndarray, generated_dist: np.ndarray) -> float:
    """Z_U of the paper: U of the generated distances against the test distances (mid-ranks for ties), centred
    with the continuity correction, scaled by the no-ties null SD. Negative: generated points are closer."""
    from scipy.stats import rankdata

    test_dist, generated_dist = np.ravel(test_dist), np.ravel(generated_dist)
    n, m = len(test_dist), len(generated_dist)
    if n == 0 or m == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([generated_dist, test_dist]))
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    return float((u - (n * m / 2.0 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12.0))


def _nearest_distance(points: np.ndarray, refs: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    if len(points) == 0:
        return np.zeros(0)
    return cdist(points, refs).min(axis=1)


def _as_features(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"data_copying_test: {name} must be a 2-D (samples, features) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"data_copying_test: {name} holds NaN or infinite features")
    return x


def _nan_result(n_train, n_test, n_generated, note) -> DataCopyingResult:
    nan = float("nan")
    return DataCopyingResult(nan, nan, nan, 0, 0, nan, n_train, n_test, n_generated, note)


def data_copying_test(train, test, generated, n_cells: int | None = None, seed: int = 0,
                      min_generated: int = MIN_GENERATED_PER_CELL) -> DataCopyingResult:
    """C_T(P_n, Q_m; T) with ``train`` = T, ``test`` = P_n, ``generated`` = Q_m, each (rows, d) features of one
    space; ``n_cells``: k (default: :func:`number_of_cells`); ``min_generated``: τ·m, the fewest generated points a
    cell needs to count. See the module docstring."""
    from sklearn.cluster import KMeans

    train, test, generated = (_as_features(n, x) for n, x in
                              (("train", train), ("test", test), ("generated", generated)))
    if len({train.shape[1], test.shape[1], generated.shape[1]}) != 1:
        raise ValueError(f"data_copying_test: feature dimensions differ: train {train.shape[1]}, test "
                         f"{test.shape[1]}, generated {generated.shape[1]}")
    n_train, n, m = len(train), len(test), len(generated)
    if n_train < 2 or n < MIN_TEST or m < min_generated:
        return _nan_result(n_train, n, m, f"not computed: needs ≥ 2 training, ≥ {MIN_TEST} held-back and ≥ "
                                          f"{min_generated} generated images, got {n_train}, {n}, {m}")
    k = number_of_cells(n_train, n, m) if n_cells is None else int(n_cells)
    if not 1 <= k <= n_train:
        raise ValueError(f"data_copying_test: n_cells must be between 1 and the {n_train} training points, got {k}")
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(train)
    t_cell, p_cell, q_cell = kmeans.labels_, kmeans.predict(test), kmeans.predict(generated)
    cells, weights, zs = [], [], []
    for c in range(k):
        t_c, p_c, q_c = train[t_cell == c], test[p_cell == c], generated[q_cell == c]
        used = len(q_c) >= min_generated and len(p_c) > 0 and len(t_c) > 0
        z_u = mann_whitney_z(_nearest_distance(p_c, t_c), _nearest_distance(q_c, t_c)) if used else float("nan")
        cells.append({"cell": c, "n_train": len(t_c), "n_test": len(p_c), "n_generated": len(q_c),
                      "test_share": len(p_c) / n, "generated_share": len(q_c) / m, "z_u": z_u, "used": used})
        if used:
            weights.append(len(p_c) / n)
            zs.append(z_u)
    tau = min_generated / m
    if not weights:
        return DataCopyingResult(float("nan"), float("nan"), float("nan"), k, 0, tau, n_train, n, m,
                                 f"not computed: no cell holds both held-back images and ≥ {min_generated} "
                                 f"generated images", cells)
    w = np.asarray(weights) / np.sum(weights)
    ct = float(np.dot(w, zs))
    z = ct / math.sqrt(float(np.sum(w ** 2)))
    from scipy.stats import norm

    note = (f"{k} k-means cell(s) fitted on {n_train} training images, {len(zs)} with ≥ {min_generated} "
            f"generated images counted")
    return DataCopyingResult(ct, float(z), float(norm.cdf(z)), k, len(zs), tau, n_train, n, m, note, cells)
