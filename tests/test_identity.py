"""Identity: keys from the data's content and the resolved rarity, RESULTS_VERSION, one key per experiment, stale
results in the dry-run, nested rarity with held-back images, fold seeds, and mixing feasibility before any job.

Dataset files are built inside the tests from the real BreastMNIST (GENMED_DATA_DIR points at a copy in tmp_path);
/work/shared is never written."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.core import registry, specs
from benchmark.core.errors import UserError
from benchmark.data.bundle import hash_cache_path
from benchmark.data.rarity import rare_split
from benchmark.plan import identity
from benchmark.plan.grid import Grid, expand, generator_jobs, load_grid
from benchmark.run.cell import build_cell, load_bundle
from benchmark.run.run_dir import write_json_atomic
from tests.dataset_makers import write_registry

REPO = Path(__file__).resolve().parent.parent
KEY = re.compile(r"\b[0-9a-f]{16}\b")


def grid(axes=None, training=None, k_folds=0, name="t"):
    base = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"]}
    return Grid(name, None, {**base, **(axes or {})}, [], [], training or {}, "test", k_folds)


@pytest.fixture
def data_copy(real_data_dir, tmp_path, monkeypatch):
    """A private copy of the real breastmnist.npz (uncompressed, so one pixel is one byte of the file), found by
    the real `breastmnist` entry through GENMED_DATA_DIR; the hash cache lives in tmp_path too."""
    folder = tmp_path / "data"
    folder.mkdir()
    with np.load(real_data_dir / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez(folder / "breastmnist.npz", **arrays)
    an_hour_ago = os.stat(folder / "breastmnist.npz").st_mtime - 3600
    os.utime(folder / "breastmnist.npz", (an_hour_ago, an_hour_ago))  # settled content: its hash is cached
    monkeypatch.setenv("GENMED_DATA_DIR", str(folder))
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    load_bundle.cache_clear()
    yield folder / "breastmnist.npz"
    load_bundle.cache_clear()


def change_one_pixel(path: Path) -> None:
    """Rewrite the file with one byte of one training image changed: same size, same arrays but that pixel (the
    zip container's CRC and time stamp change with it)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    size = path.stat().st_size
    arrays["train_images"][3, 5, 7] ^= 1
    np.savez(path, **arrays)
    with np.load(path) as npz:
        assert sum(int((npz[k] != arrays[k]).sum()) for k in npz.files) == 0
    assert path.stat().st_size == size


def run_grid(args, env=None):
    return subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), *args], capture_output=True, text=True,
                          env=env or dict(os.environ), cwd=REPO, timeout=600)


# --- keys from the data -------------------------------------------------------------------------------------

def test_one_changed_byte_of_the_data_changes_every_key_and_the_job_refuses_the_old_key(data_copy):
    before = expand(grid({"generator": ["none", "dcgan"], "rare_count": [20]}))
    sha = hashlib.sha256(data_copy.read_bytes()).hexdigest()
    assert {j.resolved["dataset_sha256"] for j in before} == {sha}
    assert json.loads(hash_cache_path().read_text())  # hashed once, cached beside the user's other caches
    assert str(hash_cache_path()).startswith(os.environ["GENMED_CACHE_DIR"])
    change_one_pixel(data_copy)
    load_bundle.cache_clear()
    after = expand(grid({"generator": ["none", "dcgan"], "rare_count": [20]}))
    assert [j.name for j in after] == [j.name for j in before]
    old_keys = {j.key for j in before} | {j.generator_key for j in before if j.generator_key}
    new_keys = {j.key for j in after} | {j.generator_key for j in after if j.generator_key}
    assert not old_keys & new_keys and len(new_keys) == 3
    with pytest.raises(UserError, match=r"changed after this job was planned.*Run the grid again"):
        build_cell(before[0])  # a spec planned on the old content never trains on the new one


def test_results_version_enters_every_key(data_env, monkeypatch):
    jobs = expand(load_grid("rare_sweep", "smoke"))
    keys = {j.key for j in jobs} | {g.key for g in generator_jobs(jobs)}
    monkeypatch.setattr(specs, "RESULTS_VERSION", specs.RESULTS_VERSION + 1)
    bumped = expand(load_grid("rare_sweep", "smoke"))
    bumped_keys = {j.key for j in bumped} | {g.key for g in generator_jobs(bumped)}
    assert len(bumped_keys) == len(keys) == len(jobs) + len(generator_jobs(jobs)) and not keys & bumped_keys
    assert {j.to_dict()["results_version"] for j in bumped} == {specs.RESULTS_VERSION}


def test_equivalent_spellings_give_one_key_and_the_same_seeds(data_env):
    minority_all = expand(grid({"rare_class": ["minority"], "rare_count": ["all"], "generator": ["dcgan"]},
                               {"weight_decay": 0}))
    index_count = expand(grid({"rare_class": [0], "rare_count": [147], "generator": ["dcgan"]},
                              {"weight_decay": 0.0}))
    (a,), (b,) = minority_all, index_count
    assert a.key == b.key and a.generator_key == b.generator_key
    assert (a.init_seed, a.rarity_seed, a.generator_spec.generator_seed) == \
        (b.init_seed, b.rarity_seed, b.generator_spec.generator_seed)
    assert a.name == "resnet18[breastmnist,rare=all,dcgan×1,seed=0]"  # names keep the grid's spelling
    assert b.name == "resnet18[breastmnist,class=0,rare=147,dcgan×1,seed=0]"
    both = expand(grid({"rare_class": ["minority", 0], "rare_count": ["all", 147]}))
    assert len(both) == 1  # one experiment, one job
    ratios = expand(grid({"generator": ["oversample"], "synthetic_ratio": [2, 2.0, "real_percentage=80",
                                                                           "real_percentage=80.0"]}))
    assert [j.synthetic_ratio for j in ratios] == [2.0, "real_percentage=80"]
    # the resolved values are what the cell uses
    cell_a, cell_b = build_cell(a), build_cell(b)
    assert np.array_equal(cell_a.kept_indices, cell_b.kept_indices) and cell_a.rare_class == 0


def test_an_entry_config_written_two_ways_gives_one_key_and_the_same_seeds(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_DATA_DIR", str(real_data_dir))

    def keyed(dataset_config: dict, method_config: dict):
        write_registry(tmp_path, monkeypatch, {"mybreast": {"target": "benchmark.data.npz:NpzDataset",
                                                            "config": dataset_config}})
        (tmp_path / "reg" / "generators").mkdir(exist_ok=True)
        (tmp_path / "reg" / "generators" / "myover.yaml").write_text(yaml.safe_dump(
            {"target": "benchmark.generators.baselines:Oversample", "version": 1, "config": method_config},
            sort_keys=False))
        registry._cached_registry.cache_clear()
        (spec,) = expand(grid({"dataset": ["mybreast"], "generator": ["myover"], "rare_count": [20],
                               "backbone": ["tinynet"]}))
        return spec

    path = str(real_data_dir / "breastmnist.npz")
    a = keyed({"path": path, "image_size": 28}, {"kind": "baseline", "uses_synthetic_ratio": True, "extra": 2})
    b = keyed({"image_size": 28.0, "path": path}, {"extra": 2.0, "uses_synthetic_ratio": True, "kind": "baseline"})
    # really written two ways: a float where there was an int, another key order
    assert type(a.entries["dataset"]["config"]["image_size"]) is int
    assert type(b.entries["dataset"]["config"]["image_size"]) is float
    assert list(a.entries["generator"]["config"]) != list(b.entries["generator"]["config"])
    assert a.key == b.key and (a.init_seed, a.rarity_seed) == (b.init_seed, b.rarity_seed)
    c = keyed({"path": path, "image_size": 28}, {"kind": "baseline", "uses_synthetic_ratio": True, "extra": 3})
    assert c.key != a.key and c.init_seed == a.init_seed  # a method's config changes its key, never the pairing
    registry._cached_registry.cache_clear()


# --- stale results ------------------------------------------------------------------------------------------

def finished_folder(runs_dir: Path, spec) -> None:
    """A run folder as a finished job leaves it, as far as stale detection reads it: spec.json with the job's spec
    and a result.json (the full record schema is tested in tests/test_job.py)."""
    write_json_atomic(runs_dir / spec.key / "spec.json", spec.to_dict())
    write_json_atomic(runs_dir / spec.key / "result.json", {"key": spec.key, "name": spec.name, "spec": spec.to_dict()})


def test_stale_results_are_named_with_their_reason_and_not_done(data_copy, tmp_path, monkeypatch):
    from benchmark.plan import identity
    from benchmark.plan import table as plan_table

    runs = tmp_path / "runs"
    old = expand(grid({"rare_count": [20, 10]}))
    finished_folder(runs, old[0])
    assert identity.stale_jobs(old, runs, plan_table.statuses(old, runs)) == {}
    monkeypatch.setattr(specs, "RESULTS_VERSION", specs.RESULTS_VERSION + 1)
    bumped = expand(grid({"rare_count": [20, 10]}))
    status = plan_table.statuses(bumped, runs)
    stale = identity.stale_jobs(bumped, runs, status)
    assert status[bumped[0].key] == "pending" and status[bumped[1].key] == "pending"
    assert stale == {bumped[0].key: f"result under {old[0].key}: results version {specs.RESULTS_VERSION - 1} → "
                                    f"{specs.RESULTS_VERSION}"}
    table = plan_table.job_table(bumped, status, stale=stale)
    assert f"stale (result under {old[0].key}: results version" in table
    assert "1 stale" in plan_table.summary_line(bumped, status, stale) and "0 done" in plan_table.summary_line(bumped, status)
    monkeypatch.setattr(specs, "RESULTS_VERSION", specs.RESULTS_VERSION - 1)
    change_one_pixel(data_copy)
    changed = expand(grid({"rare_count": [20, 10]}))
    reason = identity.stale_jobs(changed, runs)[changed[0].key]
    assert re.fullmatch(rf"result under {old[0].key}: dataset content changed \(sha256 [0-9a-f]{{8}}… → "
                        r"[0-9a-f]{8}…\)", reason)
    longer = expand(grid({"rare_count": [20, 10]}, {"epochs": 3}))
    shutil.rmtree(runs / old[0].key)
    finished_folder(runs, changed[0])
    assert identity.stale_jobs(longer, runs)[longer[0].key].endswith("training epochs 20 → 3")


@pytest.mark.slow
def test_dry_run_shows_a_result_from_other_data_as_stale_and_the_run_repeats_it(data_copy, tmp_path, monkeypatch):
    write_registry(tmp_path, monkeypatch, {})
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "g.yaml"
    path.write_text("name: g\naxes: {dataset: [breastmnist], rare_count: [10], generator: [none], "
                    "backbone: [tinynet]}\ntraining: {epochs: 1, batch_size: 64, track: false, "
                    "save_checkpoint: false}\n")
    results = tmp_path / "results"
    common = ["--grid", str(path), "--results", str(results)]
    first = run_grid(common + ["--executor", "debug"])
    assert first.returncode == 0, first.stdout + first.stderr
    (old_key,) = [p.name for p in (results / "g" / "runs").iterdir()]
    change_one_pixel(data_copy)
    dry = run_grid(common + ["--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert f"stale (result under {old_key}: dataset content changed" in dry.stdout
    assert "1 classifier jobs: 0 done, 0 pending, 1 stale" in dry.stdout
    second = run_grid(common + ["--executor", "debug"])
    assert second.returncode == 0, second.stdout + second.stderr
    folders = sorted(p.name for p in (results / "g" / "runs").iterdir())
    assert len(folders) == 2 and old_key in folders
    new_key = next(k for k in folders if k != old_key)
    record = json.loads((results / "g" / "runs" / new_key / "result.json").read_text())
    assert record["dataset"]["sha256"] == hashlib.sha256(data_copy.read_bytes()).hexdigest()
    assert "stale" not in run_grid(common + ["--dry-run"]).stdout


def test_dry_run_without_the_data_prints_no_keys(tmp_path):
    env = {**os.environ, "GENMED_DATA_DIR": str(tmp_path / "empty"), "GENMED_CACHE_DIR": str(tmp_path / "cache")}
    out = run_grid(["--grid", "rare_sweep", "--profile", "smoke", "--dry-run", "--results", str(tmp_path)], env)
    assert out.returncode == 0, out.stderr
    assert "breastmnist@28: will download" in out.stdout and "get their keys after the download" in out.stdout
    table = out.stdout.split("data  ", 1)[1]
    assert "after download" in table and not KEY.search(table) and specs.UNRESOLVED_PREFIX not in out.stdout
    assert not (tmp_path / "empty").exists() and not (tmp_path / "rare_sweep-smoke").exists()


def test_an_unresolved_spec_never_builds_a_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    (spec,) = expand(grid({"rare_count": [10]}))
    assert not spec.is_resolved and spec.key.startswith(specs.UNRESOLVED_PREFIX)
    with pytest.raises(UserError, match="the spec is unresolved"):
        build_cell(spec)


# --- nested rarity, held-back images, seeds -----------------------------------------------------------------

def rare_images(cell, training_set) -> list:
    return [hashlib.sha1(im.tobytes()).hexdigest() for im, y in zip(training_set.images, training_set.labels)
            if y == cell.rare_class]


@pytest.mark.parametrize("seed", [0, 1])
def test_rare_subsamples_are_nested_and_held_back_completes_them(data_env, seed):
    full = load_bundle("breastmnist", 28).splits["train"]
    all_rare = [hashlib.sha1(im.tobytes()).hexdigest() for im in full.images[full.labels == 0]]
    assert len(set(all_rare)) == len(all_rare) == 147  # BreastMNIST's malignant training images are distinct
    kept, held = {}, {}
    for count in (10, 20, 50, "all"):
        (spec,) = expand(grid({"rare_count": [count], "seed": [seed]}))
        cell = build_cell(spec)
        kept[count], held[count] = rare_images(cell, cell.real), rare_images(cell, cell.held_back)
        assert len(kept[count]) == (147 if count == "all" else count)
        assert (cell.held_back.labels == cell.rare_class).all() and not cell.held_back.is_synthetic.any()
        assert not set(kept[count]) & set(held[count])  # disjoint …
        assert sorted(kept[count] + held[count]) == sorted(all_rare)  # … and together every rare training image
        assert (cell.real.labels != 0).sum() == 399  # the other class is never subsampled
    assert set(kept[10]) < set(kept[20]) < set(kept[50]) < set(kept["all"])
    assert held["all"] == []
    assert held[10][:10] == [h for h in held[10] if h in set(kept[20])]  # held_back continues the kept prefix
    assert held[10][10:] == held[20]
    other = build_cell(expand(grid({"rare_count": [10], "seed": [1 - seed]}))[0])
    assert set(rare_images(other, other.real)) != set(kept[10])


def test_rare_split_is_one_permutation_whose_prefix_is_kept():
    labels = np.array([0] * 30 + [1] * 70)
    keep10, held10 = rare_split(labels, 0, 10, seed=5)
    keep20, held20 = rare_split(labels, 0, 20, seed=5)
    order = np.random.default_rng(5).permutation(np.arange(30))
    assert np.array_equal(np.sort(keep10[keep10 < 30]), np.sort(order[:10])) and np.array_equal(held10, order[10:])
    assert set(keep10) <= set(keep20) and np.array_equal(held20, order[20:])
    keep_all, held_all = rare_split(labels, 0, "all", seed=5)
    assert np.array_equal(keep_all, np.arange(100)) and len(held_all) == 0


def test_seeds_do_not_depend_on_rare_count_and_folds_get_their_own(data_env):
    jobs = expand(grid({"rare_count": ["all", 50, 10], "generator": ["none", "dcgan"], "backbone": ["resnet18",
                                                                                                   "resnet50"]}))
    for backbone in ("resnet18", "resnet50"):
        same = [j for j in jobs if j.backbone == backbone]
        assert len({j.init_seed for j in same}) == 1 and len({j.rarity_seed for j in same}) == 1
    assert len({j.init_seed for j in jobs}) == 2  # the backbone does change it
    assert len({g.generator_seed for g in generator_jobs(jobs)}) == 1 and len(generator_jobs(jobs)) == 3
    seeds = expand(grid({"seed": [0, 1]}))
    assert seeds[0].init_seed != seeds[1].init_seed and seeds[0].rarity_seed != seeds[1].rarity_seed
    folds = expand(grid({"rare_count": [20], "generator": ["dcgan"]}, k_folds=5))
    assert len(folds) == 5
    for attribute in ("init_seed", "rarity_seed"):
        assert len({getattr(j, attribute) for j in folds}) == 5
    assert len({g.generator_seed for g in generator_jobs(folds)}) == 5
    fixed = expand(grid({"rare_count": [20], "generator": ["dcgan"]}))[0]
    assert fixed.init_seed not in {j.init_seed for j in folds}


# --- feasibility ----------------------------------------------------------------------------------------------

def test_a_ratio_the_bank_cannot_hold_exits_2_before_any_job(real_data_dir, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\naxes: {dataset: [breastmnist], rare_count: [all, 10], generator: [none, dcgan], "
                    "synthetic_ratio: [1, balance, real_percentage=50], backbone: [resnet18], seed: [0, 1]}\n")
    env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_CACHE_DIR": str(tmp_path / "cache")}
    for extra in (["--executor", "debug"], ["--dry-run"]):
        out = run_grid(["--grid", str(path), "--results", str(tmp_path / "results"), *extra], env)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "cell breastmnist@28 (rare class 0, rare_count 10) with dcgan: synthetic_ratio " \
               "'real_percentage=50' needs 409 synthetic images but the generator's bank holds 389" in out.stderr
        assert "resnet18[breastmnist,rare=10,dcgan×real_percentage=50,seed=0] and 1 more job(s)" in out.stderr
        assert "nothing was started" in out.stderr
        assert not (tmp_path / "results").exists()
    # the same ratio is feasible where the bank is larger (rare_count all: 546 needed, 8 × 147 = 1176 held)
    path.write_text(path.read_text().replace("rare_count: [all, 10]", "rare_count: [all]"))
    out = run_grid(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"], env)
    assert out.returncode == 0, out.stderr


def test_bank_check_matches_the_generator_stage(data_env):
    """The limit is the bank the generator stage samples for the real cell (8 × 20 = 160 < 399 − 20 = 379)."""
    from benchmark.core.training_set import DEFAULT_BANK_MULTIPLE, bank_size, synthetic_count

    (spec,) = expand(grid({"rare_count": [20], "generator": ["dcgan"], "synthetic_ratio": [18.95]}))
    cell = build_cell(spec)
    bank = bank_size(np.bincount(cell.real.labels), cell.rare_class, DEFAULT_BANK_MULTIPLE)
    assert bank == 379 == synthetic_count(18.95, 20, np.bincount(cell.real.labels))  # fits exactly
    with pytest.raises(UserError, match=r"synthetic_ratio 19\.0 needs 380 synthetic images but the generator's "
                                        r"bank holds 379 \(bank_multiple 8 × 20 real rare images, or the 379"):
        expand(grid({"rare_count": [20], "generator": ["dcgan"], "synthetic_ratio": [19]}))


# --- every consumer, the same keys ----------------------------------------------------------------------------

def test_dry_run_collector_and_expansion_end_with_the_same_keys(real_data_dir, tmp_path, monkeypatch):
    from benchmark.collect.records import collect_grid

    monkeypatch.setenv("GENMED_DATA_DIR", str(real_data_dir))
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    out = run_grid(["--grid", "rare_sweep", "--profile", "smoke", "--dry-run", "--table-rows", "1000",
                    "--results", str(tmp_path)])
    assert out.returncode == 0, out.stderr
    printed = {m.group(0) for line in out.stdout.splitlines() if line.startswith("resnet18[")
               for m in [KEY.search(line)] if m}
    jobs = expand(load_grid("rare_sweep", "smoke"))
    collected = collect_grid("rare_sweep", "smoke", tmp_path)
    assert printed == {j.key for j in jobs} == {m["key"] for m in collected.missing} and len(printed) == len(jobs)


def test_a_downloaded_dataset_gets_the_keys_it_would_have_had(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    planned = expand(grid({"generator": ["none", "dcgan"], "rare_count": ["all", 20]}))
    assert not any(j.is_resolved for j in planned) and len(planned) == 4
    (tmp_path / "data").mkdir()
    shutil.copy(real_data_dir / "breastmnist.npz", tmp_path / "data")  # what the download step leaves there
    resolved = identity.resolve_jobs(planned, download=True)
    fresh = expand(grid({"generator": ["none", "dcgan"], "rare_count": ["all", 20]}))
    assert [j.key for j in resolved] == [j.key for j in fresh] and all(j.is_resolved for j in resolved)
    assert [j.generator_key for j in resolved] == [j.generator_key for j in fresh]
