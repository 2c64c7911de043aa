"""Grid expansion: counts, couplings, excludes, validation, stable keys and readable names."""

import itertools
import os
import subprocess
import sys

import pytest

from benchmark.core.errors import UserError
from benchmark.plan.grid import Grid, expand, filter_jobs, generator_jobs, load_grid


def make_grid(axes, **kw):
    base = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"]}
    return Grid("t", None, {**base, **axes}, kw.get("coupled", []), kw.get("exclude", []), kw.get("training", {}),
                "test")


def test_rare_sweep_count_matches_independent_product():
    jobs = expand(load_grid("rare_sweep"))
    datasets, counts, backbones, seeds, ratios = 2, 5, 4, 10, 3
    ratios = 4  # 1, 2, 4, balance
    ratio_free, ratio_using = 5, 3  # none, class_weight, focal, logit_adjust, mixup | oversample, dcgan, ddpm
    real_extra = datasets * (counts - 1) * backbones * seeds * ratios  # left out at rare_count all
    assert len(jobs) == datasets * counts * backbones * seeds * (ratio_free + ratio_using * ratios) + real_extra
    assert len({j.key for j in jobs}) == len(jobs)
    generators = generator_jobs(jobs)
    assert len(generators) == datasets * counts * seeds * 2  # one per cell and generative method
    assert sum(j.is_generative for j in jobs) == 16 * len(generators)  # reuse: 4 backbones x 4 ratios each


def test_smoke_profile_is_the_issue_definition():
    jobs = expand(load_grid("rare_sweep", "smoke"))
    ratio_free = 2 * 2 * 3  # none, class_weight × rare counts × seeds
    ratio_using = 2 * 3 * (2 + 1)  # oversample, dcgan_small × seeds × (ratio 1 at both counts, balance at 20)
    assert len(jobs) == ratio_free + ratio_using
    assert len(generator_jobs(jobs)) == 2 * 3
    assert {j.dataset for j in jobs} == {"breastmnist"}
    assert {j.backbone for j in jobs} == {"resnet18"}
    assert {j.rare_count for j in jobs} == {"all", 20}
    assert {j.generator for j in jobs} == {"none", "class_weight", "oversample", "dcgan_small"}
    assert {j.seed for j in jobs} == {0, 1, 2}
    assert jobs[0].training["epochs"] < 30


def test_ratio_free_methods_are_not_multiplied_by_ratios():
    jobs = expand(make_grid({"generator": ["none", "oversample"], "synthetic_ratio": [1, 2, 4]}))
    assert sorted((j.generator, j.synthetic_ratio) for j in jobs) == [
        ("none", 0.0), ("oversample", 1.0), ("oversample", 2.0), ("oversample", 4.0)]


def test_coupled_axes_zip_and_excludes_drop():
    grid = make_grid({"rare_count": [10, 20, 50], "synthetic_ratio": [4, 2, 1], "generator": ["oversample"],
                      "seed": [0, 1]}, coupled=[["rare_count", "synthetic_ratio"]],
                     exclude=[{"rare_count": 50, "seed": 1}])
    points = sorted((j.rare_count, j.synthetic_ratio, j.seed) for j in expand(grid))
    expected = sorted((c, float(r), s) for (c, r), s in itertools.product([(10, 4), (20, 2), (50, 1)], [0, 1])
                      if not (c == 50 and s == 1))
    assert points == expected


def test_key_depends_on_result_fields_and_versions_only():
    a = expand(make_grid({}))[0]
    b = expand(Grid("other-grid-name", "p", make_grid({}).axes, [], [], {}, "elsewhere.yaml"))[0]
    assert a.key == b.key  # grid name, profile and source path are not part of the key
    longer = expand(make_grid({}, training={"epochs": 3}))[0]
    assert longer.key != a.key
    assert expand(make_grid({}, training={"save_checkpoint": False}))[0].key == a.key
    changed = dict(a.entries)
    changed["backbone"] = {**changed["backbone"], "version": 99}
    from dataclasses import replace
    assert replace(a, entries=changed).key != a.key


def test_keys_are_stable_across_processes():
    code = ("from benchmark.plan.grid import load_grid, expand; "
            "print(','.join(j.key for j in expand(load_grid('rare_sweep','smoke'))))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(s)}, cwd=".").stdout for s in (1, 2)}
    assert len(outputs) == 1
    assert outputs.pop().strip() == ",".join(j.key for j in expand(load_grid("rare_sweep", "smoke")))


def test_readable_names():
    jobs = expand(make_grid({"generator": ["oversample", "none"], "synthetic_ratio": [2], "rare_count": [20],
                             "seed": [3]}))
    assert sorted(j.name for j in jobs) == ["resnet18[breastmnist,rare=20,none,seed=3]",
                                            "resnet18[breastmnist,rare=20,oversample×2,seed=3]"]
    assert [j.name for j in filter_jobs(jobs, "oversample")] == ["resnet18[breastmnist,rare=20,oversample×2,seed=3]"]


def test_validation_reports_every_problem_at_once():
    grid = make_grid({"backbone": ["resnet81"], "rare_count": [0, "some"], "seed": [-1], "colour": ["red"],
                      "synthetic_ratio": [-1], "image_size": [32]}, training={"epochs": "ten", "optimizer": "sgd"})
    with pytest.raises(UserError) as err:
        expand(grid)
    message = str(err.value)
    for fragment in ("unknown axis 'colour'", "Unknown backbone 'resnet81'. Did you mean 'resnet18'",
                     "rare_count must be 'all' or an integer ≥ 1, got 0", "got 'some'", "seed must be an integer ≥ 0",
                     "synthetic_ratio must be a number ≥ 0, 'balance' or 'real_percentage=P'", "training.epochs: expected int, got 'ten'",
                     "training: unknown setting 'optimizer'", "nothing was started"):
        assert fragment in message


def test_dataset_metadata_checks_size_class_and_task():
    with pytest.raises(UserError, match=r"dataset 'breastmnist' has no image_size 32; available: \[28, 64, 128, 224\]"):
        expand(make_grid({"image_size": [32]}))
    with pytest.raises(UserError, match=r"rare_class 5 is out of range for 'breastmnist' \(2 classes: 0..1\)"):
        expand(make_grid({"rare_class": [5]}))
    with pytest.raises(UserError, match="task type 'multi-label, binary-class' is refused"):
        expand(make_grid({"dataset": ["chestmnist"]}))


def test_unknown_profile_and_missing_grid_file(tmp_path):
    with pytest.raises(UserError, match="Unknown profile of grid 'rare_sweep' 'smok'. Did you mean 'smoke'"):
        load_grid("rare_sweep", "smok")
    with pytest.raises(UserError, match="does not exist"):
        load_grid(str(tmp_path / "nope.yaml"))
