"""Two stages: generator jobs keyed per cell (not per backbone or ratio), blocked classifiers, bank mixing."""

import json

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.execute import create_executor
from benchmark.generators.base import Generator, TrainingSet
from benchmark.generators.stage import SyntheticMix, write_bank
from benchmark.plan import table as plan_table
from benchmark.plan.grid import Grid, expand, generator_jobs
from tests.registry_helpers import register_entry


class FailingGenerator(Generator):
    def fit(self, images, labels, seed, out_dir=None):
        raise RuntimeError("generator diverged")


@pytest.fixture
def failing_registry(tmp_path, monkeypatch):
    register_entry(tmp_path, monkeypatch, "generator", "failing_gan",
                   "target: tests.test_stages:FailingGenerator\nversion: 1\nconfig: {kind: generative}\n")


def grid(**axes):
    base = {"dataset": ["breastmnist"], "generator": ["failing_gan", "none"], "backbone": ["resnet18", "resnet50"],
            "rare_count": [10], "synthetic_ratio": [1, 2], "seed": [0, 1]}
    return Grid("t", None, {**base, **axes}, [], [], {"epochs": 1}, "test")


def test_generator_jobs_are_one_per_cell(failing_registry):
    jobs = expand(grid())
    generative = [j for j in jobs if j.generator == "failing_gan"]
    assert len(generative) == 2 * 2 * 2  # backbones × ratios × seeds
    gens = generator_jobs(jobs)
    assert len(gens) == 2  # one per seed: backbone and ratio are not part of a generator job
    assert {j.generator_key for j in generative} == {g.key for g in gens}
    assert all(j.generator_key is None for j in jobs if j.generator == "none")
    assert len({g.key for g in gens} | {j.key for j in jobs}) == len(gens) + len(jobs)


def test_failed_generator_blocks_its_classifiers(failing_registry, data_env, tmp_path):
    jobs = expand(grid(backbone=["resnet18"], synthetic_ratio=[1], seed=[0], generator=["failing_gan"]))
    gens = generator_jobs(jobs)
    create_executor("debug", runs_dir=tmp_path, logs_dir=tmp_path / "logs").run_stages(gens, jobs)
    error = json.loads((tmp_path / gens[0].key / "error.json").read_text())
    assert "generator diverged" in error["error"]
    status = plan_table.statuses(gens + jobs, tmp_path)
    assert status[gens[0].key] == "failed" and status[jobs[0].key] == "blocked"
    assert not (tmp_path / jobs[0].key).exists()  # never run, never done
    assert "1 classifier jobs: 0 done, 0 pending, 0 failed, 1 blocked" in plan_table.summary_line(gens + jobs, status)


def test_synthetic_mix_takes_a_prefix_of_the_bank_and_checks_it(tmp_path):
    real = TrainingSet(np.zeros((30, 1, 4, 4), np.uint8), np.array([0] * 5 + [1] * 25), np.zeros(30, bool))
    bank = np.arange(40, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)
    write_bank(tmp_path / "samples.npz", bank, np.zeros(40, np.int64))
    out = SyntheticMix(tmp_path).build_training_set(real, 0, 2.0, 2, seed=0)
    assert out.is_synthetic.sum() == 10 and (out.images[out.is_synthetic][:, 0, 0, 0] == np.arange(10)).all()
    balanced = SyntheticMix(tmp_path).build_training_set(real, 0, "balance", 2, seed=0)
    assert balanced.counts(2) == {"real_per_class": [5, 25], "synthetic_per_class": [20, 0]}
    with pytest.raises(UserError, match="needs 50 synthetic images but the bank"):
        SyntheticMix(tmp_path).build_training_set(real, 0, 10.0, 2, seed=0)
    (tmp_path / "samples.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="is corrupt .*--force"):
        SyntheticMix(tmp_path).build_training_set(real, 0, 1.0, 2, seed=0)


def test_leakage_guard_catches_a_planted_test_image(data_env):
    from benchmark.generators.stage import check_no_leakage
    from benchmark.run.cell import build_cell

    spec = expand(Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"],
                                   "rare_count": [20]}, [], [], {}, "test"))[0]
    cell = build_cell(spec)
    check_no_leakage(cell.real.images, cell.bundle)  # the cell's own images pass
    test_images = cell.bundle.splits["test"].images
    train_hashes = {im.tobytes() for im in cell.bundle.splits["train"].images}
    planted = next(im for im in test_images if im.tobytes() not in train_hashes)
    leaky = np.concatenate([cell.real.images, planted[None]])
    with pytest.raises(RuntimeError, match=r"leakage: 1 image\(s\) given to the generator are validation/test"):
        check_no_leakage(leaky, cell.bundle)


def test_bad_generator_config_stops_the_run_before_any_job(tmp_path, monkeypatch, real_data_dir):
    import os
    import subprocess
    import sys

    folder = tmp_path / "reg" / "generators"
    folder.mkdir(parents=True)
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    (folder / "ddpm_bad.yaml").write_text(f"include: {repo}/registry/generators/ddpm_small.yaml\n"
                                          "config: {sampler: euler}\n")
    grid_file = tmp_path / "bad.yaml"
    grid_file.write_text("name: badgen\naxes: {dataset: [breastmnist], generator: [ddpm_bad], backbone: [resnet18], "
                         "rare_count: [20]}\n")
    env = {**os.environ, "GENMED_REGISTRY_PATH": str(tmp_path / "reg"), "GENMED_DATA_DIR": str(real_data_dir),
           "GENMED_RESULTS_DIR": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, str(repo / "launch" / "grid.py"), "--grid", str(grid_file),
                          "--executor", "local"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert "DDPM: unknown sampler 'euler'; valid choices: ddim, dpm_solver, ddpm. Nothing was started." in out.stderr
    assert not (tmp_path / "results").exists()


def test_real_percentage_mixing_sets_the_share_of_real_images(tmp_path):
    real = TrainingSet(np.zeros((30, 1, 4, 4), np.uint8), np.array([0] * 5 + [1] * 25), np.zeros(30, bool))
    write_bank(tmp_path / "samples.npz", np.zeros((40, 1, 4, 4), np.uint8), np.zeros(40, np.int64))
    out = SyntheticMix(tmp_path).build_training_set(real, 0, "real_percentage=75", 2, seed=0)
    assert (~out.is_synthetic).sum() / len(out.labels) == pytest.approx(0.75)
    assert out.counts(2) == {"real_per_class": [5, 25], "synthetic_per_class": [10, 0]}
    unchanged = SyntheticMix(tmp_path).build_training_set(real, 0, "real_percentage=100", 2, seed=0)
    assert len(unchanged.labels) == 30


@pytest.mark.parametrize("value", ["real_percentage=0", "real_percentage=150", "real_percentage=x", "lots", -1])
def test_invalid_mixing_modes_are_rejected_before_anything_runs(value, failing_registry):
    with pytest.raises(UserError, match="synthetic_ratio"):
        expand(grid(synthetic_ratio=[value]))


# --- the audit in the generator stage: reference set, in-domain extractor reused across cells, 64 / 128 px -------

TINY_GENERATORS = {
    "dcgan": "include: {repo}/registry/generators/dcgan_small.yaml\n"
             "config: {{steps: 2, batch_size: 8, nz: 8, ngf: 8, ndf: 8, embed_dim: 4, grid_every: 2, bank_multiple: 2,"
             " audit_extractor: {{max_steps: 3, width: 8}}}}\n",
    "ddpm": "include: {repo}/registry/generators/ddpm_small.yaml\n"
            "config: {{steps: 2, batch_size: 4, block_out_channels: [8, 16], norm_num_groups: 4, sampling_steps: 2,"
            " grid_columns: 2, sample_batch_size: 64, bank_multiple: 2,"
            " audit_extractor: {{max_steps: 3, width: 8}}}}\n",
}


def _register_tiny(tmp_path, monkeypatch, names=("dcgan", "ddpm")):
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    for name in names:
        register_entry(tmp_path, monkeypatch, "generator", f"tiny_{name}", TINY_GENERATORS[name].format(repo=repo))


def _generator_specs(dataset, generator, rare_counts, image_size=28, rare_class="minority"):
    axes = {"dataset": [dataset], "image_size": [image_size], "generator": [generator], "backbone": ["resnet18"],
            "rare_count": list(rare_counts), "seed": [0], "rare_class": [rare_class]}
    return generator_jobs(expand(Grid("t", None, axes, [], [], {"epochs": 1}, "test")))


@pytest.mark.slow
def test_audit_uses_the_full_rare_training_set_and_one_extractor_for_every_cell(tmp_path, monkeypatch, data_env):
    from benchmark.generators import extractor as E
    from benchmark.run.job import execute

    monkeypatch.delenv(E.ROOT_ENV, raising=False)
    _register_tiny(tmp_path, monkeypatch, ["dcgan"])
    runs = tmp_path / "results" / "runs"
    specs = _generator_specs("breastmnist", "tiny_dcgan", [20, 10])
    assert len(specs) == 2
    audits, mtimes = [], []
    for spec in specs:
        assert execute(spec, runs / spec.key) == "done"
        audits.append(json.loads((runs / spec.key / "result.json").read_text())["audit"])
        records = list((tmp_path / "results" / E.FOLDER).glob(f"*/{E.RECORD_FILE}"))
        assert len(records) == 1  # one extractor for the dataset, next to runs/
        mtimes.append(records[0].stat().st_mtime_ns)
    first, second = audits
    assert first["domain_extractor_trained_here"] is True and second["domain_extractor_trained_here"] is False
    assert first["domain_extractor_key"] == second["domain_extractor_key"] and mtimes[0] == mtimes[1]
    record = json.loads(records[0].read_text())
    assert record["identity"]["train_n"] == 546 and record["steps"] == 3  # the full training split, never val/test
    for audit, rare_count in zip(audits, [20, 10]):
        assert audit["reference_n"] == 147  # every malignant training image, whatever the rare count
        assert audit["n_real_rare"] == rare_count and audit["fit_n"] == 399 + rare_count  # what the GAN saw
        assert audit["domain_feature_extractor"] == "domain_cnn_v1" and np.isfinite(audit["domain_kid"])
        assert np.isfinite(audit["kid"]) and audit["kid_se"] > 0
    second_spec = specs[1]
    nearest = np.load(runs / second_spec.key / "audit_nearest.npz")
    assert nearest["nn_pixel_index"].max() < 399 + 10  # memorisation is searched among the fit set only


def _resized_breastmnist(real_data_dir, size: int, path):
    """BreastMNIST resized with PIL; the training split keeps all 147 malignant and the first 60 benign images
    (so a cell's bank, sized to balance the classes, stays small; malignant is then the larger class, so the tests
    name rare_class 0), val and test their first 40."""
    from PIL import Image

    with np.load(real_data_dir / "breastmnist.npz") as data:
        arrays = {k: data[k] for k in data.files}
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"].reshape(-1)
        keep = np.sort(np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:60]])) \
            if split == "train" else np.arange(40)
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][keep]
        arrays[f"{split}_images"] = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                                              for im in arrays[f"{split}_images"][keep]])
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def resized(real_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resized")
    return {size: _resized_breastmnist(real_data_dir, size, folder / f"breast{size}.npz") for size in (64, 128)}


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("generator", ["dcgan", "ddpm"])
def test_generators_run_at_64_and_128_px(generator, size, resized, tmp_path, monkeypatch):
    """BreastMNIST resized to 64 / 128 px (PIL, in the test), two training steps of each generator through the
    generator stage: bank and audit written, shapes and ranges right, the networks deeper at larger sizes."""
    from benchmark.generators import extractor as E
    from benchmark.run.job import execute

    register_entry(tmp_path, monkeypatch, "dataset", f"breast{size}",
                   f"target: benchmark.data.npz:NpzDataset\nversion: 1\n"
                   f"config: {{path: {resized[size]}, image_size: {size}, label_names: [malignant, normal]}}\n")
    _register_tiny(tmp_path, monkeypatch, [generator])
    monkeypatch.setenv(E.ROOT_ENV, str(tmp_path / "extractors"))
    from benchmark.run.cell import load_bundle

    load_bundle.cache_clear()
    (spec,) = _generator_specs(f"breast{size}", f"tiny_{generator}", [20], image_size=size, rare_class=0)
    run_dir = tmp_path / "runs" / spec.key
    assert execute(spec, run_dir) == "done"
    result = json.loads((run_dir / "result.json").read_text())
    with np.load(run_dir / "samples.npz") as bank:
        images, labels = bank["images"], bank["labels"]
    assert images.shape == (result["resolved"]["bank_size"], 1, size, size) and images.dtype == np.uint8
    assert (labels == 0).all()
    grid = __import__("PIL.Image", fromlist=["Image"]).open(log_grid := result["fit_log"]["grids"][-1])
    assert grid.size[1] == 2 * (size + 2) + 2 and log_grid.startswith(str(run_dir))  # a row per class, at size
    if generator == "ddpm":  # two steps: DDPM samples are still mostly noise; an untrained DCGAN's may be flat
        assert images.std() > 0
    audit = result["audit"]
    assert audit["reference_n"] == 147 and audit["n_synthetic"] == len(images) == 40  # max(2 × 20, 60 - 20)
    assert audit["fit_n"] == 60 + 20
    assert np.isfinite(audit["domain_kid"]) and 0 <= audit["copy_rate"] <= 1 and 0 <= audit["precision"] <= 1
    for name in audit["audit_files"].split(","):
        assert (run_dir / name).is_file()
    record = json.loads(next((tmp_path / "extractors").glob(f"*/{E.RECORD_FILE}")).read_text())
    assert record["image_shape"] == [1, size, size] and record["identity"]["image_size"] == size
    log = result["fit_log"]
    if generator == "dcgan":
        assert log["architecture"] == {"base_size": 4, "upsamplings": {64: 4, 128: 5}[size]}
    else:
        assert log["unet"]["block_out_channels"] == {64: [8, 8, 16], 128: [8, 8, 8, 16]}[size]
    load_bundle.cache_clear()


def test_local_packs_deal_every_kind_of_job_to_every_worker():
    """One pack per worker, round-robin: 8 long fits then 8 short ones give each of 2 workers 4 of each (contiguous
    shares gave one worker every long fit); an explicit runs_per_task keeps consecutive packs."""
    from benchmark.execute.packing import pack

    jobs = [f"long{i}" for i in range(8)] + [f"short{i}" for i in range(8)]
    packs = pack(jobs, None, parallel=2)
    assert len(packs) == 2 and sorted(sum(packs, [])) == sorted(jobs)
    for p in packs:
        assert sum(j.startswith("long") for j in p) == 4 and sum(j.startswith("short") for j in p) == 4
    assert pack(jobs[:3], None, parallel=8) == [["long0"], ["long1"], ["long2"]]
    assert pack(jobs, 5, parallel=2) == [jobs[0:5], jobs[5:10], jobs[10:15], jobs[15:16]]
