"""The `mixing` axis on the real BreastMNIST: each strategy's training set image by image, pretrain_finetune's batches,
schedule, selection and resume, grid expansion (concat keys unchanged), bad values, and the collector's labels."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmark.core import registry
from benchmark.core.errors import UserError
from benchmark.core.specs import JobSpec, spec_from_dict
from benchmark.core.training import Schedule
from benchmark.core.training_set import apply_mixing, canonical_mixing, mixing_problem
from benchmark.plan.grid import Grid, expand
from benchmark.run.cell import build_cell
from benchmark.stats import (
    paired_tests,
    prepare_records,
    ratio_label,
    ratio_problem,
    ratio_sort_key,
    variant_label,
)
from tests.dataset_makers import write_registry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
MIXINGS = ["concat", "pretrain_finetune", "synthetic_rare_only"]
FAST = {"batch_size": 32, "eval_batch_size": 256, "track": False, "save_checkpoint": False}


def digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def grid(generators, mixing=None, ratios=("balance",), backbone="resnet18", seeds=(0,), **training):
    axes = {"dataset": ["breastmnist"], "generator": list(generators), "backbone": [backbone], "rare_count": [20],
            "synthetic_ratio": list(ratios), "seed": list(seeds)}
    if mixing is not None:
        axes["mixing"] = list(mixing)
    budget = {} if "budget" in training else {"epochs": 1}
    return Grid("t", None, axes, [], [], {**budget, **FAST, **training}, "test")


def method_set(spec):
    """The cell and the training set the job's method builds, before mixing (as benchmark.run.job builds it)."""
    cell = build_cell(spec)
    method = registry.create("generator", spec.generator)
    built = method.build_training_set(cell.real, cell.rare_class, spec.synthetic_ratio, cell.bundle.num_classes,
                                      spec.init_seed, held_back=cell.held_back)
    return cell, built


# ------------------------------------------------------------------------------------------ vocabulary, validation
def test_mixing_values_and_their_spelling():
    assert all(mixing_problem(m) is None for m in MIXINGS + ["pretrain_finetune=0.25"])
    assert canonical_mixing("pretrain_finetune=0.5") == "pretrain_finetune"
    assert canonical_mixing("pretrain_finetune=.250") == "pretrain_finetune=0.25"
    assert "Did you mean 'pretrain_finetune'?" in mixing_problem("pretrain_finetun")
    assert mixing_problem("pretrain_finetune=1") and "(0, 1)" in mixing_problem("pretrain_finetune=1")
    assert Schedule(10, 0, (5, 10)).with_finetune(0.5).switch_step == 5
    assert Schedule(7, 0, (7,)).with_finetune(0.01).switch_step == 6  # at least one fine-tune step
    assert Schedule(7, 0, (7,)).with_finetune(None).switch_step == 0


def test_a_bad_mixing_stops_the_grid_with_exit_2(tmp_path):
    with pytest.raises(UserError, match=r"Unknown mixing 'shuffle'\. .*Valid values: concat"):
        expand(grid(["oversample"], mixing=["concat", "shuffle"]), resolve=False)
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nversion: 1\naxes: {dataset: [breastmnist], generator: [oversample], backbone: "
                    "[resnet18], mixing: [pretrain_finetun]}\ntraining: {epochs: 1}\n")
    done = subprocess.run([sys.executable, "launch/grid.py", "--grid", str(path), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Unknown mixing 'pretrain_finetun'. Did you mean 'pretrain_finetune'?" in done.stderr


# ------------------------------------------------------------------------------------------------- grid expansion
def test_mixing_multiplies_only_methods_that_add_images(data_env):
    methods = ["none", "class_weight", "oversample", "real_extra"]
    plain = expand(grid(methods, ratios=(0, 1, "balance"), seeds=(0, 1)))
    mixed = expand(grid(methods, mixing=MIXINGS + ["pretrain_finetune=0.25"], ratios=(0, 1, "balance"),
                        seeds=(0, 1)))
    count = pd.Series([j.generator for j in mixed]).value_counts().to_dict()
    # ratio-free baselines: one job per seed; adding methods: (ratio 0 → one) + 2 ratios × 4 mixings, per seed
    assert count == {"none": 2, "class_weight": 2, "oversample": 2 * (1 + 2 * 4), "real_extra": 2 * (1 + 2 * 4)}
    concat = {j.key: j.name for j in mixed if j.mixing == "concat"}
    assert concat == {j.key: j.name for j in plain}  # concat: the keys and names of a grid without the axis
    others = [j for j in mixed if j.mixing != "concat"]
    assert len({j.key for j in mixed}) == len(mixed) and not {j.key for j in others} & set(concat)
    assert {j.mixing for j in others} == {"pretrain_finetune", "pretrain_finetune=0.25", "synthetic_rare_only"}
    named = {j.name for j in others if j.generator == "oversample" and j.seed == 0 and j.synthetic_ratio == 1}
    assert named == {f"resnet18[breastmnist,rare=20,oversample×1+{m},seed=0]"
                     for m in ("pretrain_finetune", "pretrain_finetune=0.25", "synthetic_rare_only")}
    spec = others[0]  # the spec's dict round-trips with its mixing; an old dict (no mixing) is concat
    assert spec_from_dict(spec.to_dict()).key == spec.key
    old = {k: v for k, v in plain[0].to_dict().items() if k != "mixing"}
    assert JobSpec.from_dict(old).mixing == "concat" and JobSpec.from_dict(old).key == plain[0].key


# ------------------------------------------------------------------------------- training sets, image by image
def test_synthetic_rare_only_replaces_the_real_rare_images(data_env):
    jobs = {j.generator: j for j in expand(grid(["oversample", "real_extra"], mixing=["synthetic_rare_only"],
                                                ratios=(2,)))}
    for name, spec in jobs.items():
        cell, built = method_set(spec)
        rare, n_real = cell.rare_class, len(cell.real.labels)
        out = apply_mixing(built, cell.real, rare, spec.mixing)
        added = built.images[n_real:]
        assert len(added) == 40 and (built.labels[n_real:] == rare).all()
        # other classes: the real images, untouched and in order
        assert np.array_equal(out.images[out.labels != rare], cell.real.images[cell.real.labels != rare])
        # the rare class: exactly the added images, as many as were added
        assert (out.labels == rare).sum() == len(added) == out.info["n_rare_real_removed"] * 2
        assert np.array_equal(out.images[out.labels == rare], added)
        if name == "real_extra":  # held-back real images: none of the 20 kept rare images is left
            kept = set(digests(cell.real.images[cell.real.labels == rare]))
            assert not kept & set(digests(out.images[out.labels == rare]))
        else:  # duplicates: every rare image is a marked duplicate, no original left
            assert out.is_synthetic[out.labels == rare].all()
        assert out.counts(cell.bundle.num_classes)["real_per_class"][rare] == (0 if name == "oversample" else 40)


def test_concat_is_unchanged_and_pretrain_finetune_keeps_the_real_set(data_env):
    jobs = {j.mixing: j for j in expand(grid(["real_extra"], mixing=["concat", "pretrain_finetune=0.25"]))}
    cell, built = method_set(jobs["concat"])
    assert apply_mixing(built, cell.real, cell.rare_class, "concat") is built
    out = apply_mixing(built, cell.real, cell.rare_class, jobs["pretrain_finetune=0.25"].mixing)
    assert out.images is built.images and out.finetune_fraction == 0.25
    assert np.array_equal(out.finetune_set.images, cell.real.images)
    assert np.array_equal(out.finetune_set.labels, cell.real.labels)


# ------------------------------------------------------------------- pretrain_finetune: batches, schedule, resume
def tiny_backbone_job(tmp_path, monkeypatch, mixing="pretrain_finetune", **budget):
    """real_extra at ratio 2 (40 held-back real rare images, none equal to a kept one) on BreastMNIST, `tinynet`."""
    write_registry(tmp_path, monkeypatch, {})
    jobs = expand(grid(["real_extra"], mixing=[mixing], ratios=(2,), backbone="tinynet",
                       budget={"steps": 10, **budget}))
    return jobs[0]


def run(spec, folder, **kwargs):
    from benchmark.run.job import execute

    run_dir = folder / spec.key
    assert execute(spec, run_dir, **kwargs) == "done", (run_dir / "error.json").read_text()
    return json.loads((run_dir / "result.json").read_text()), run_dir


@pytest.mark.slow
def test_pretrain_finetune_batches_switch_to_real_images_at_the_split(data_env, tmp_path, monkeypatch):
    from benchmark.run import train

    spec = tiny_backbone_job(tmp_path, monkeypatch, evaluations=5)
    cell, built = method_set(spec)
    real = set(digests(cell.real.images))
    added = set(digests(built.images[len(cell.real.labels):]))
    assert len(added) == 40 and not real & added  # every image tells which set it came from

    batches, real_step = [], train._step

    def recording_step(run_, images, labels):  # the real step, its batch noted
        batches.append(digests(images.cpu().numpy()))
        return real_step(run_, images, labels)

    monkeypatch.setattr(train, "_step", recording_step)
    record, _ = run(spec, tmp_path / "runs")
    assert record["optimizer_steps"] == len(batches) == 10  # the budget, both phases together
    assert record["method_info"]["switch_step"] == 5
    before = [h for batch in batches[:5] for h in batch]
    after = [h for batch in batches[5:] for h in batch]
    assert set(before) <= real | added and set(before) & added  # pre-training draws from the union
    assert set(after) <= real and not set(after) & added       # fine-tuning: real images only
    assert len(after) == 5 * 32 and len(set(after)) == len(after)  # a fresh pass over the real images
    history = record["history"]
    assert [(h["step"], h["phase"]) for h in history] == [(2, "pretrain"), (4, "pretrain"), (6, "finetune"),
                                                          (8, "finetune"), (10, "finetune")]
    assert record["best_step"] in (6, 8, 10)  # selection only after the switch
    # one warm-up-free cosine over all 10 steps: the switch does not restart it
    for h in history:
        assert h["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * h["step"] / 10)))
    assert record["spec"]["mixing"] == "pretrain_finetune"


@pytest.mark.slow
@pytest.mark.parametrize("evaluations,die_at", [(5, 4), (2, 5)])  # before the switch (nothing selected yet); at it
def test_pretrain_finetune_resumes_to_the_same_record(data_env, tmp_path, monkeypatch, evaluations, die_at):
    from benchmark.run import train
    from benchmark.run.job import STATE_DIR, execute

    spec = tiny_backbone_job(tmp_path, monkeypatch, evaluations=evaluations)
    straight, _ = run(spec, tmp_path / "straight")
    real_save = train.save_progress

    def save_then_die(accelerator, state_dir, done, streams):
        real_save(accelerator, state_dir, done, streams)
        if done.step == die_at:
            assert done.best is None  # no validation of the fine-tune phase yet
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(train, "save_progress", save_then_die)
    run_dir = tmp_path / "resumed" / spec.key
    with pytest.raises(KeyboardInterrupt):
        execute(spec, run_dir, resumable=True)
    assert json.loads((run_dir / STATE_DIR / "progress.json").read_text())["step"] == die_at
    monkeypatch.setattr(train, "save_progress", real_save)
    resumed, _ = run(spec, tmp_path / "resumed", resumable=True)
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]
    assert strip(resumed["history"]) == strip(straight["history"])
    assert resumed["metrics"] == straight["metrics"] and resumed["best_step"] == straight["best_step"]
    assert resumed["predictions"]["sha256"] == straight["predictions"]["sha256"]


# ------------------------------------------------------------------------------------------- the collector's labels
def test_mixing_is_part_of_the_variant_label():
    assert variant_label("dcgan", "balance", "pretrain_finetune") == "dcgan@balance+pretrain_finetune"
    assert variant_label("dcgan", "balance", "concat") == variant_label("dcgan", "balance") == "dcgan@balance"
    assert variant_label("none", 0, None) == "none"
    assert ratio_label("2.0+pretrain_finetune=0.5") == "2+pretrain_finetune"
    assert ratio_label("balance+concat") == "balance" and ratio_label("1e+5") == "100000"
    assert ratio_problem("1+shuffle").startswith("Unknown mixing 'shuffle'")
    labels = ["balance+synthetic_rare_only", "1+pretrain_finetune", "balance", "1"]
    assert sorted(labels, key=ratio_sort_key) == ["1", "1+pretrain_finetune", "balance", "balance+synthetic_rare_only"]


def test_paired_tests_keep_mixings_apart():
    """Planted records: dcgan at balance under concat gains +0.05 over `none`, under pretrain_finetune +0.10; with
    the mixing in the ratio label the two are two variants, each with its own gain."""
    rows = []
    for seed in range(4):
        base = 0.7 + 0.01 * seed
        for generator, ratio, gain in (("none", 0, 0.0), ("dcgan", "balance", 0.05),
                                       ("dcgan", "balance+pretrain_finetune", 0.10)):
            rows.append({"dataset": "breastmnist", "rare_count": 20, "generator": generator, "synthetic_ratio": ratio,
                         "backbone": "resnet18", "seed": seed, "test_auroc": base + gain})
    df, metrics, _ = prepare_records(pd.DataFrame(rows), ["test_auroc"], "none")
    tests, _ = paired_tests(df, metrics, "none", n_boot=200)
    gains = dict(zip(tests["variant"], tests["mean_diff"]))
    assert gains == pytest.approx({"dcgan@balance": 0.05, "dcgan@balance+pretrain_finetune": 0.10})


def test_each_mixing_is_its_own_dose_curve():
    """A method's pretrain_finetune variant is not one more ratio level of its concat curve: the concat slope uses
    the concat jobs only (checked against a direct per-seed computation), and a mixing with one ratio has no curve."""
    import numpy as np
    import pandas as pd

    from benchmark.stats.dose import dose_response

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for label, eff in (("1", 1.0), ("4", 4.0), ("4+pretrain_finetune", 4.0)):
            rows.append({"dataset": "d", "image_size": 28, "rare_class": 0, "rare_count": 20, "backbone": "b",
                         "budget": "-", "generator": "dcgan", "synthetic_ratio": label, "effective_ratio": eff,
                         "seed": seed, "fold": 0, "test_auroc": rng.uniform(0.5, 0.9)})
    df = pd.DataFrame(rows)
    coef = dose_response(df, "test_auroc")["coef"].set_index("generator")
    assert list(coef.index) == ["dcgan"] and coef.loc["dcgan", "ratios"] == "1, 4"
    concat = df[df["synthetic_ratio"].isin(["1", "4"])].pivot(index="seed", columns="synthetic_ratio",
                                                              values="test_auroc")
    per_seed = (concat["4"] - concat["1"]) / 2.0  # two ratio levels, two doublings apart
    assert coef.loc["dcgan", "slope"] == pytest.approx(per_seed.mean())
