"""Cross-validation: deterministic stratified folds over train+val, the test split never in a fold, rarity inside
the fold's training part, keys unchanged for fixed-split jobs, and records paired by (seed, fold)."""

from dataclasses import replace

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data.folds import fold_assignment, fold_indices
from benchmark.plan.grid import Grid, expand, load_grid
from benchmark.run.cell import build_cell
from tests.dataset_makers import make_npz, write_registry

BASE = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"]}


def grid(axes=None, k_folds=0, **training):
    return Grid("t", None, {**BASE, **(axes or {})}, [], [], training, "test", k_folds)


def test_folds_are_a_deterministic_stratified_partition():
    labels = np.repeat([0, 1, 2], [53, 211, 9])
    parts = fold_assignment(labels, 5, seed=7)
    assert np.array_equal(parts, fold_assignment(labels, 5, seed=7))
    assert not np.array_equal(parts, fold_assignment(labels, 5, seed=8))
    assert set(parts.tolist()) == {0, 1, 2, 3, 4}
    sizes = np.bincount(parts, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for cls in range(3):
        per_part = np.bincount(parts[labels == cls], minlength=5)
        assert per_part.max() - per_part.min() <= 1  # stratified: each class spread evenly
    train, held = fold_indices(labels[:200], labels[200:], 5, 2, seed=7)
    assert np.intersect1d(train, held).size == 0 and np.union1d(train, held).size == len(labels)
    with pytest.raises(UserError, match=r"5-fold cross-validation needs at least 5 train\+val images per class, "
                                        r"but class 1: 3"):
        fold_assignment(np.array([0] * 10 + [1] * 3), 5, seed=0)


def test_k_folds_adds_a_fold_axis_and_leaves_fixed_split_keys_alone():
    fixed = expand(grid({"seed": [0, 1]}))
    assert expand(grid({"seed": [0, 1]}, k_folds=0)) == fixed
    assert all("fold" not in j.identity() and j.fold == 0 and j.k_folds == 0 for j in fixed)
    cv = expand(grid({"seed": [0, 1], "generator": ["none", "oversample"]}, k_folds=5))
    assert len(cv) == 2 * 2 * 5 and sorted({j.fold for j in cv}) == [1, 2, 3, 4, 5]
    assert {j.k_folds for j in cv} == {5} and len({j.key for j in cv}) == len(cv)
    assert cv[0].name == "resnet18[breastmnist,rare=all,none,seed=0,fold=1/5]"
    assert cv[0].key not in {j.key for j in fixed}
    some = expand(grid({"fold": [2, 4]}, k_folds=5))
    assert [j.fold for j in some] == [2, 4]
    # the fold partition depends on (dataset, k, seed) only: shared by methods, backbones and rarity settings
    assert len({j.fold_seed for j in cv if j.seed == 0}) == 1 and len({j.fold_seed for j in cv}) == 2
    gan = {"name": "gan", "version": 1, "config": {"kind": "generative"}}
    fits = [replace(j, entries={**j.entries, "generator": gan}).generator_spec for j in cv if j.seed == 0][:5]
    assert [(g.fold, g.k_folds) for g in fits] == [(f, 5) for f in range(1, 6)]  # a generator fits on its fold
    assert len({g.key for g in fits}) == 5 and fits[0].name == "none[breastmnist,rare=all,seed=0,fold=1/5]"
    with pytest.raises(UserError) as err:
        expand(grid({"fold": [0, 6]}, k_folds=5))
    assert "fold must be an integer in 1..5 (k_folds: 5), got 0" in str(err.value) and "got 6" in str(err.value)
    with pytest.raises(UserError, match=r"k_folds must be 0 \(the dataset's fixed split\) or an integer ≥ 2, got 1"):
        expand(grid(k_folds=1))
    with pytest.raises(UserError, match=r"axis 'fold' \(2\) needs k_folds ≥ 2"):
        expand(grid({"fold": [2]}))


def test_k_folds_in_grid_yaml_and_profiles(tmp_path):
    path = tmp_path / "cv.yaml"
    path.write_text("name: cv\nversion: 1\nk_folds: 5\naxes: {dataset: [breastmnist], generator: [none], "
                    "backbone: [resnet18]}\nprofiles:\n  quick: {k_folds: 3, axes: {fold: [1]}}\n  fixed: {k_folds: 0}\n")
    assert [j.fold for j in expand(load_grid(str(path)))] == [1, 2, 3, 4, 5]
    assert [(j.fold, j.k_folds) for j in expand(load_grid(str(path), "quick"))] == [(1, 3)]
    assert [(j.fold, j.k_folds) for j in expand(load_grid(str(path), "fixed"))] == [(0, 0)]


def test_fold_cells_keep_test_and_subsample_only_the_folds_training_part(data_env):
    from benchmark.run.cell import load_bundle

    full = load_bundle("breastmnist", 28)
    pool_labels = np.concatenate([full.splits["train"].labels, full.splits["val"].labels])
    jobs = expand(grid({"rare_count": [10], "generator": ["none", "oversample"], "synthetic_ratio": [1]}, k_folds=5))
    held_out_total = 0
    for fold in range(1, 6):
        none, oversample = (j for j in jobs if j.fold == fold)
        cell = build_cell(none)
        bundle = cell.bundle
        assert bundle.splits["test"] is full.splits["test"]  # the test split is never in a fold
        train, val = bundle.splits["train"], bundle.splits["val"]
        assert len(train) + len(val) == len(pool_labels) and len(val) in (124, 125)
        held_out_total += len(val)
        assert np.array_equal(np.bincount(np.concatenate([train.labels, val.labels])), np.bincount(pool_labels))
        rare = cell.rare_class
        assert rare == 0 and cell.n_rare == 10
        assert np.bincount(val.labels)[rare] in (33, 34)  # held-out part: never subsampled
        kept = train.images[cell.kept_indices]
        assert np.array_equal(kept, cell.real.images)  # the rare subsample is drawn from the fold's training part
        assert (cell.real.labels == rare).sum() == 10 and (cell.real.labels != rare).sum() == (train.labels != rare).sum()
        paired = build_cell(oversample)  # every method of a (seed, fold) trains on the same real images
        assert np.array_equal(paired.real.images, cell.real.images)
        assert np.array_equal(paired.bundle.splits["val"].images, val.images)
    assert held_out_total == len(pool_labels)


def test_rarity_check_before_a_run_uses_the_folds_training_part(data_env):
    from benchmark.plan import identity

    with pytest.raises(UserError, match=r"breastmnist \(rare class 0, fold 1/5\): rare_count=140 is impossible: the "
                                        r"rare class has 134 training images"):
        identity.check_data(expand(grid({"rare_count": [140]}, k_folds=5)))
    identity.check_data(expand(grid({"rare_count": [140]})))  # the fixed split has 147


@pytest.mark.slow
def test_cross_validated_grid_records_carry_the_fold_and_pair_by_seed_and_fold(tmp_path, monkeypatch):
    from benchmark import stats
    from benchmark.collect.records import collect_grid
    from benchmark.run.job import execute

    npz = make_npz(tmp_path / "tiny.npz", {"train": [14, 6], "val": [4, 2], "test": [6, 6]})
    write_registry(tmp_path, monkeypatch, {"tinynpz": {"target": "benchmark.data.npz:NpzDataset",
                                                       "config": {"path": str(npz), "image_size": 28}}})
    path = tmp_path / "cv.yaml"
    path.write_text("name: cv\nversion: 1\nk_folds: 2\naxes: {dataset: [tinynpz], generator: [none, class_weight], "
                    "backbone: [tinynet], rare_count: [3]}\ntraining: {epochs: 1, batch_size: 16, track: false, "
                    "save_checkpoint: false}\n")
    jobs = expand(load_grid(str(path)))
    assert sorted((j.generator, j.fold) for j in jobs) == [("class_weight", 1), ("class_weight", 2), ("none", 1),
                                                            ("none", 2)]
    for spec in jobs:
        assert execute(spec, tmp_path / "results" / "cv" / "runs" / spec.key) == "done"
    collected = collect_grid(str(path), None, tmp_path / "results")
    records = collected.records
    assert sorted(zip(records["generator"], records["fold"])) == [("class_weight", 1), ("class_weight", 2),
                                                                   ("none", 1), ("none", 2)]
    assert set(records["n_rare_train"]) == {3}
    df, metrics, _ = stats.prepare_records(records, ["test_auroc"], "none")
    pairing = stats.pair_records(df, metrics, "none")
    assert sorted(zip(pairing.pairs["seed"], pairing.pairs["fold"])) == [(0, 1), (0, 2)]
