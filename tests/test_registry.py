"""Registry: lookup, listing, lazy targets, duplicates, include and YAML errors."""

import subprocess
import sys
import textwrap

import pytest

from benchmark.core import registry
from benchmark.core.errors import UserError
from benchmark.core.registry import Entry, Registry


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_registries_list_expected_entries():
    assert {"none", "class_weight", "oversample"} <= set(registry.list_entries("generator"))
    assert {"resnet18", "resnet50", "densenet121", "efficientnet_b0", "vit_tiny"} <= set(
        registry.list_entries("backbone"))
    assert "breastmnist" in registry.list_entries("dataset")
    assert "rare_sweep" in registry.list_entries("grid")
    assert registry.list_entries("backbone", "res*") == ["resnet18", "resnet50"]


def test_unknown_name_suggests_close_matches_and_lists_all():
    with pytest.raises(UserError) as err:
        registry.get("backbone", "resnet81")
    message = str(err.value)
    assert message.startswith("Unknown backbone 'resnet81'. Did you mean 'resnet18'")
    assert "Available: densenet121, efficientnet_b0, resnet18, resnet50, vit_tiny" in message


def test_duplicate_name_raises_and_names_both_sources():
    reg = Registry("generator")
    reg.register(Entry("generator", "x", 1, "a:b", {}, "", "first.yaml"))
    with pytest.raises(UserError, match="Duplicate generator name 'x': defined in first.yaml and again in second.yaml"):
        reg.register(Entry("generator", "x", 2, "a:c", {}, "", "second.yaml"))


def test_include_merges_base_and_child_wins(tmp_path):
    write(tmp_path / "backbones" / "_base.yaml", """
        target: benchmark.run.backbones:TimmBackbone
        version: 3
        config: {model_name: resnet18, small_input: {below: 64, stride1: [conv1]}}
    """)
    path = write(tmp_path / "backbones" / "mine.yaml", """
        include: _base.yaml
        config: {small_input: {below: 32}}
    """)
    entry = registry.entry_from_file("backbone", path)
    assert entry.version == 3 and entry.name == "mine"
    assert entry.config == {"model_name": "resnet18", "small_input": {"below": 32, "stride1": ["conv1"]}}


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "target: a:b\nversion: 1\nconfig: {x: [1, 2}\n")
    with pytest.raises(UserError, match=r"Malformed YAML at .*bad\.yaml:3:"):
        registry.entry_from_file("generator", path)


def test_entry_without_version_or_bad_target_is_refused(tmp_path):
    with pytest.raises(UserError, match="needs a 'version'"):
        registry.entry_from_file("generator", write(tmp_path / "a.yaml", "target: a:b\n"))
    with pytest.raises(UserError, match="'target' must be a string 'module:attr'"):
        registry.entry_from_file("generator", write(tmp_path / "b.yaml", "target: nocolon\nversion: 1\n"))


def test_user_registry_path_adds_entries(tmp_path, monkeypatch):
    write(tmp_path / "datasets" / "my_scans.yaml", """
        target: benchmark.data.npz:NpzDataset
        version: 1
        config: {path: /data/my_scans.npz, image_size: 28}
    """)
    monkeypatch.setenv("GENMED_REGISTRY_PATH", str(tmp_path))
    assert "my_scans" in registry.list_entries("dataset")
    assert "breastmnist" in registry.list_entries("dataset")


def test_listing_and_dry_run_import_nothing_heavy():
    code = ("import sys, runpy; sys.argv=['grid.py','--list']; "
            "import launch.grid as g; g.main(['--list']); "
            "g.main(['--grid','rare_sweep','--dry-run','--table-rows','1']); "
            "heavy=[m for m in ('torch','timm','diffusers','accelerate','pandas','medmnist') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=registry.PACKAGE_REGISTRY.parent, env={"GENMED_DATA_DIR": "/nonexistent", "PATH": ""})
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_create_builds_every_kind_from_its_entry_without_the_harness_keys():
    from benchmark.generators.imbalance import Focal
    from benchmark.run.backbones import TimmBackbone

    backbone = registry.create("backbone", "resnet18")
    assert isinstance(backbone, TimmBackbone) and backbone.name == "resnet18"
    assert backbone.model_name == registry.get("backbone", "resnet18").config["model_name"]
    focal = registry.create("generator", "focal")  # its entry holds kind and uses_synthetic_ratio too
    assert isinstance(focal, Focal) and set(focal.config) <= set(Focal.defaults)
    assert registry.create("generator", "focal", config={"gamma": 1.0}).params["gamma"] == 1.0
    assert registry.create("dataset", "breastmnist").name == "breastmnist"
    assert registry.HARNESS_KEYS >= {"kind", "uses_synthetic_ratio", "needs_held_back", "bank_multiple"}


def test_create_refuses_a_wrong_keyword_naming_the_entry_and_what_it_accepts(tmp_path, monkeypatch):
    from tests.registry_helpers import register_entry

    register_entry(tmp_path, monkeypatch, "backbone", "typo_net",
                   "target: benchmark.run.backbones:TimmBackbone\nversion: 1\nconfig: {model_name: resnet18, "
                   "resize_belw: 32}\n")
    with pytest.raises(UserError) as info:
        registry.create("backbone", "typo_net")
    message = str(info.value)
    assert "backbone 'typo_net'" in message and "typo_net.yaml" in message
    assert "'resize_belw' (did you mean 'resize_below'?)" in message
    assert "It accepts: name, model_name, small_input, resize_below" in message
