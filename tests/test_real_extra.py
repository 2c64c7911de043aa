"""real_extra on the real BreastMNIST: exactly r × n_rare more real rare images, none from val/test, nested ratios."""

import hashlib
import json

import numpy as np
import pytest

from benchmark.core import registry
from benchmark.core.training_set import no_held_back_note
from benchmark.plan.grid import Grid, expand
from benchmark.run.cell import build_cell
from benchmark.run.job import execute

EPOCHS1 = {"epochs": 1, "batch_size": 64, "save_checkpoint": False, "track": False}


def digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def added_images(spec):
    """The real images real_extra adds for `spec`, rebuilt from the cell as job.py builds them."""
    cell = build_cell(spec)
    out = registry.create("generator", spec.generator).build_training_set(
        cell.real, cell.rare_class, spec.synthetic_ratio, cell.bundle.num_classes, 0, held_back=cell.held_back)
    n_real = len(cell.real.labels)
    assert (out.images[:n_real] == cell.real.images).all()
    return cell, out.images[n_real:], out.labels[n_real:]


@pytest.mark.slow
def test_real_extra_on_breastmnist_rare_20(data_env, tmp_path):
    grid = Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", "real_extra"], "backbone": ["resnet18"],
                            "rare_count": [20], "synthetic_ratio": [1, 2], "seed": [0, 1, 2]}, [], [], EPOCHS1, "test")
    jobs = {(j.generator, j.synthetic_ratio, j.seed): j for j in expand(grid)}
    assert len(jobs) == 3 + 2 * 3
    records = {}
    for seed in range(3):
        for point in (("none", 0.0, seed), ("real_extra", 1.0, seed)):
            spec = jobs[point]
            assert execute(spec, tmp_path / spec.key) == "done", (tmp_path / spec.key / "error.json").read_text()
            records[point] = json.loads((tmp_path / spec.key / "result.json").read_text())

    bundle = build_cell(jobs[("none", 0.0, 0)]).bundle
    train_hashes = set(digests(bundle.splits["train"].images))
    # BreastMNIST has one image byte-identical in train and test: only images that are not also training images
    # would be leaked ones
    evaluation_only = (set(digests(bundle.splits["val"].images)) | set(digests(bundle.splits["test"].images))) \
        - train_hashes
    malignant = bundle.label_names.index("malignant")
    for seed in range(3):
        none, extra = records[("none", 0.0, seed)], records[("real_extra", 1.0, seed)]
        assert extra["counts"]["n_train_real"] == none["counts"]["n_train_real"] + 20
        assert extra["counts"]["real_per_class"][malignant] == none["counts"]["real_per_class"][malignant] + 20 == 40
        assert extra["counts"]["n_train_synthetic"] == 0
        assert extra["method_info"]["n_real_extra"] == 20
        assert extra["method_info"]["n_real_extra_available"] == 147 - 20

        cell, one, one_labels = added_images(jobs[("real_extra", 1.0, seed)])
        _, two, _ = added_images(jobs[("real_extra", 2.0, seed)])
        assert len(one) == 20 and len(two) == 40 and cell.rare_class == malignant and (one_labels == malignant).all()
        one_h, two_h = digests(one), digests(two)
        assert set(one_h) <= set(two_h) and two_h[:20] == one_h
        assert set(two_h) <= train_hashes and not set(two_h) & evaluation_only
        assert not set(two_h) & set(digests(cell.real.images))  # held-back images, not copies of kept ones


def test_real_extra_is_left_out_at_a_rare_count_equal_to_the_class_size(data_env):
    """BreastMNIST's malignant class has 147 training images: rare_count 147 keeps them all, like `all`."""
    grid = Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", "real_extra"], "backbone": ["resnet18"],
                            "rare_count": [147, 20], "synthetic_ratio": [1], "seed": [0, 1]}, [], [], {}, "test")
    left_out = []
    jobs = expand(grid, left_out=left_out)
    extra = [j for j in jobs if j.generator == "real_extra"]
    assert {j.resolved["rare_count"] for j in extra} == {20} and len(extra) == 2
    assert {j.resolved["rare_count"] for j in jobs if j.generator == "none"} == {147, 20}
    assert left_out == [no_held_back_note("real_extra", 2)] and "rare_count all or the class size" in left_out[0][0]
