"""`external` banks: checked against the dataset (exit 2 before any job), hashed into the key, mixed, run end to end."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.core import registry
from benchmark.core.errors import UserError
from benchmark.generators import external
from benchmark.generators.base import TrainingSet
from benchmark.plan.grid import Grid, expand
from tests.registry_helpers import register_entry

ROOT = Path(__file__).resolve().parents[1]
EPOCHS1 = {"epochs": 1, "batch_size": 64, "save_checkpoint": False, "track": False}


@pytest.fixture(scope="module")
def grid_cli():
    spec = importlib.util.spec_from_file_location("grid_cli", ROOT / "launch" / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_bank(root: Path, n=30, size=28, mode="L", classes=("malignant",), manifest=None) -> Path:
    """A bank on disk as a generator elsewhere would leave it: root/<class>/NNNN.png (random pixels), and an
    optional manifest.json."""
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(pixels, "L").convert(mode).save(folder / f"{i:04d}.png")
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def register_bank(tmp_path, monkeypatch, path: Path, dataset="breastmnist", name="my_bank"):
    register_entry(tmp_path, monkeypatch, "generator", name,
                   "target: benchmark.generators.external:ExternalBank\nversion: 1\n"
                   f"config: {{kind: external, uses_synthetic_ratio: true, path: '{path}', dataset: {dataset}}}\n")


def bank_grid(name="my_bank", **axes):
    return Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", name], "backbone": ["resnet18"],
                            "rare_count": [20], "synthetic_ratio": [1], **axes}, [], [], EPOCHS1, "test")


def test_bank_hash_enters_the_key_and_changes_with_the_content(data_env, tmp_path, monkeypatch):
    bank = write_bank(tmp_path / "bank", manifest={"dataset": "breastmnist", "splits": ["train"]})
    register_bank(tmp_path, monkeypatch, bank)
    job = [j for j in expand(bank_grid()) if j.generator == "my_bank"][0]
    digest = external.bank_sha256(bank)
    assert job.entries["generator"]["config"]["bank_sha256"] == digest and len(digest) == 64
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(bank / "malignant" / "0000.png")
    changed = [j for j in expand(bank_grid()) if j.generator == "my_bank"][0]
    assert external.bank_sha256(bank) != digest
    assert changed.key != job.key and changed.name == job.name


@pytest.mark.parametrize("make,message", [
    (lambda root: write_bank(root, size=32), "images of size 32×32"),
    (lambda root: write_bank(root, mode="RGB"), "with 3 channel(s)"),
    (lambda root: write_bank(root, classes=("cancer",)), "class name(s) 'cancer' are not classes of the dataset"),
    (lambda root: write_bank(root, manifest={"dataset": "breastmnist", "splits": ["train", "test"]}),
     "saw test images"),
    (lambda root: write_bank(root, manifest={"dataset": "pneumoniamnist", "splits": ["train"]}),
     "is for dataset 'pneumoniamnist'"),
])
def test_a_bank_that_does_not_fit_exits_2_before_any_job(data_env, tmp_path, monkeypatch, grid_cli, capsys, make,
                                                         message):
    bank = make(tmp_path / "bank")
    register_bank(tmp_path, monkeypatch, bank)
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none, my_bank], backbone: [resnet18],"
                         " rare_count: [20], synthetic_ratio: [1]}\ntraining: {epochs: 1}\n")
    with pytest.raises(SystemExit) as exit_info:
        grid_cli.main(["--grid", str(grid_file), "--results", str(tmp_path / "results"), "--executor", "debug"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was started" in err, err
    assert not (tmp_path / "results").exists()


def test_npz_bank_mixes_a_seeded_nested_subset_of_the_rare_class(data_env, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = np.array([0] * 30 + [1] * 20)
    np.savez(tmp_path / "bank.npz", images=images, labels=labels, label_names=np.array(["malignant", "normal, benign"]))
    register_bank(tmp_path, monkeypatch, tmp_path / "bank.npz")
    entry = registry.get("generator", "my_bank")
    method = registry.create("generator", entry)
    real = TrainingSet(np.zeros((30, 1, 28, 28), np.uint8), np.array([0] * 10 + [1] * 20), np.zeros(30, bool))
    one = method.build_training_set(real, 0, 1.0, 2, seed=5)
    two = method.build_training_set(real, 0, 2.0, 2, seed=5)
    assert one.info["synthetic_added"] == 10 and two.info["synthetic_added"] == 20
    assert one.is_synthetic.sum() == 10 and (one.labels[one.is_synthetic] == 0).all()
    added_one, added_two = one.images[30:, 0], two.images[30:, 0]
    assert (added_two[:10] == added_one).all()  # ratio 1 ⊂ ratio 2
    rare_bank = {img.tobytes() for img in images[:30]}
    assert {img.tobytes() for img in added_two} <= rare_bank
    assert one.info["training_data_verified"] is False and "cannot verify" in one.info["training_data"]
    with pytest.raises(UserError, match="needs 40 images of class 'malignant' but the bank holds 30"):
        method.build_training_set(real, 0, 4.0, 2, seed=5)
    with pytest.raises(UserError, match="changed after this job was planned"):
        registry.create("generator", entry, config={**entry.config, "bank_sha256": "0" * 64}).build_training_set(
            real, 0, 1.0, 2, seed=5)


def test_the_template_entry_needs_a_path_and_a_dataset():
    with pytest.raises(UserError, match="set config.path"):
        registry.create("generator", "external")


@pytest.mark.slow
def test_external_bank_runs_end_to_end_and_its_record_names_the_bank_hash(data_env, tmp_path, monkeypatch):
    from benchmark.run.job import execute

    bank = write_bank(tmp_path / "bank", n=25, manifest={"dataset": "breastmnist", "splits": ["train"]})
    register_bank(tmp_path, monkeypatch, bank)
    spec = [j for j in expand(bank_grid()) if j.generator == "my_bank"][0]
    runs = tmp_path / "grid" / "runs"
    assert execute(spec, runs / spec.key) == "done", (runs / spec.key / "error.json").read_text()
    record = json.loads((runs / spec.key / "result.json").read_text())
    digest = external.bank_sha256(bank)
    assert record["method_info"]["bank_sha256"] == digest == record["spec"]["entries"]["generator"]["config"][
        "bank_sha256"]
    assert record["counts"]["n_train_synthetic"] == 20 and record["counts"]["synthetic_per_class"] == [20, 0]
    assert record["method_info"]["training_data_verified"] is False
    assert "manifest.json: splits ['train']" in record["method_info"]["training_data"]
    # the same audit as a harness generator's bank: all 25 bank images against the 147 real malignant training
    # images; memorisation against the whole training split; cached once per bank and cell
    audit = record["audit"]
    assert audit["n_synthetic"] == 25 and audit["reference_n"] == 147 and audit["n_train"] == 546
    assert audit["training_data_verified"] is False and "whole training split" in audit["memorisation_reference"]
    assert audit["domain_kid"] > 1.0 and audit["copy_rate"] == 0.0  # random pixels: far from real, copies nothing
    (cached,) = (tmp_path / "grid" / "audits").glob("*/audit.json")
    assert json.loads(cached.read_text())["audit"] == audit
    assert (cached.parent / "audit_closest_pairs.png").is_file()
    from benchmark.run.cell import build_cell

    method = registry.create("generator", "my_bank", config=spec.entries["generator"]["config"])
    before = cached.stat().st_mtime_ns
    assert method.audit(spec, build_cell(spec), runs) == audit and cached.stat().st_mtime_ns == before
    from benchmark.collect.report_figures import sheet_sources  # the report shows the bank's sheets like a generator's

    (source,) = sheet_sources([spec], runs).values()
    assert source["key"] == audit["audit_key"] == cached.parent.name and source["sheet"].parent == cached.parent
    assert source["sheet"].is_file() and source["closest"].is_file()
