"""launch/predict.py: a finished run's weights on new images give exactly the probabilities of training's own
evaluation path (real BreastMNIST test images, a 1-epoch run), from .npz arrays, PNG files and folders alike."""

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.errors import UserError
from tests.dataset_makers import write_png, write_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "launch"))


@pytest.fixture
def finished_run(data_env, tmp_path, monkeypatch):
    """A 1-epoch classifier run on the real BreastMNIST (tiny backbone), saved under results/<grid>/runs/<key>."""
    from benchmark.plan.grid import Grid, expand
    from benchmark.run.job import execute

    write_registry(tmp_path, monkeypatch, {})
    axes = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["tinynet"]}
    spec = expand(Grid("p", None, axes, [], [], {"epochs": 1, "batch_size": 64, "track": False}, "test"))[0]
    run_dir = tmp_path / "results" / "p" / "runs" / spec.key
    assert execute(spec, run_dir) == "done", (run_dir / "error.json").read_text()
    return spec, run_dir


@pytest.mark.slow
def test_predictions_match_the_training_evaluation_path(finished_run, data_env, tmp_path, capsys):
    import predict as cli
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from benchmark.predict import load_run, run_prediction
    from benchmark.run.metrics import classification_metrics
    from benchmark.run.train import TensorPairs, keep_batch, predict

    spec, run_dir = finished_run
    record = json.loads((run_dir / "result.json").read_text())
    npz = data_env / "breastmnist.npz"
    with np.load(npz) as arrays:
        test_images, test_labels = arrays["test_images"], arrays["test_labels"].ravel()

    outcome = run_prediction(spec.key[:8], [str(npz)], tmp_path / "results", out=tmp_path / "pred.csv")
    probs = outcome["probs"]
    assert outcome["run"].run_dir == run_dir and outcome["run"].channels == 1 and probs.shape == (156, 2)
    # training's evaluation code on the same weights gives the same probabilities …
    accelerator = Accelerator()
    loader = DataLoader(TensorPairs(test_images[:, None], test_labels), batch_size=256, collate_fn=keep_batch)
    reference, targets = predict(load_run(run_dir).model, loader, accelerator)
    assert np.allclose(probs, reference.numpy(), atol=1e-6)
    # … and the metrics recorded by the job
    recomputed = classification_metrics(torch.from_numpy(probs), torch.from_numpy(test_labels), 2,
                                        record["resolved"]["rare_class"])
    for name in ("auroc", "accuracy", "balanced_accuracy", "ece", "rare_sensitivity"):
        assert recomputed[name] == pytest.approx(record["metrics"]["test"][name], abs=1e-6)
    assert recomputed["confusion_matrix"] == record["metrics"]["test"]["confusion_matrix"]

    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 156 and list(rows[0]) == ["file", "predicted_label", "confidence", "prob_malignant",
                                                   "prob_normal, benign"]
    assert rows[3]["file"].endswith("breastmnist.npz[test_images:3]")
    assert float(rows[3]["prob_malignant"]) == pytest.approx(probs[3, 0], abs=1e-6)
    assert rows[3]["predicted_label"] == record["dataset"]["label_names"][int(probs[3].argmax())]

    # PNG files and folders go through the same preprocessing (lossless PNG at the run's size: same numbers)
    folder = tmp_path / "pngs"
    for i in range(4):
        write_png(folder / "sub" / f"case{i}.png", test_images[i])
    single = write_png(tmp_path / "one.png", test_images[5])
    assert cli.main(["--run", str(run_dir), "--images", str(folder), str(single), "--out",
                     str(tmp_path / "png.csv")]) == 0
    printed = capsys.readouterr().out
    assert "case0.png" in printed and "predicted:" in printed and "png.csv (5 images)" in printed
    rows = list(csv.DictReader(open(tmp_path / "png.csv")))
    assert [Path(r["file"]).name for r in rows] == ["case0.png", "case1.png", "case2.png", "case3.png", "one.png"]
    got = np.array([[float(r["prob_malignant"]), float(r["prob_normal, benign"])] for r in rows])
    assert np.allclose(got, probs[[0, 1, 2, 3, 5]], atol=1e-6)
    # a larger colour image is converted and resized like an image-folder dataset
    big = write_png(tmp_path / "big.png", np.repeat(np.kron(test_images[0], np.ones((4, 4), np.uint8))[..., None],
                                                    3, axis=2))
    assert cli.main(["--run", spec.key, "--results", str(tmp_path / "results"), "--images", str(big), "--out",
                     str(tmp_path / "big.csv")]) == 0


def test_prediction_errors_are_clear(tmp_path, monkeypatch):
    from benchmark.predict import find_run, load_run, read_inputs

    runs = tmp_path / "results" / "g" / "runs"
    with pytest.raises(UserError, match=r"No run with key 'abcdef12' under .*results"):
        find_run("abcdef12", tmp_path / "results")
    (runs / "abcdef1234567890").mkdir(parents=True)
    (runs / "abcdef1299999999").mkdir(parents=True)
    with pytest.raises(UserError, match="matches several jobs"):
        find_run("abcdef12", tmp_path / "results")
    assert find_run("abcdef1234", tmp_path / "results") == runs / "abcdef1234567890"
    with pytest.raises(UserError, match="is not a run folder"):
        load_run(runs / "abcdef1234567890")
    spec = {"stage": "classifier", "dataset": "breastmnist", "backbone": "resnet18", "image_size": 28,
            "entries": {"backbone": {"name": "resnet18", "version": 1, "config": {}}}}
    (runs / "abcdef1234567890" / "result.json").write_text(json.dumps({"spec": spec, "dataset": {"label_names": ["a", "b"]}}))
    with pytest.raises(UserError, match=r"\(finished\) has no model\.safetensors.*save_checkpoint: true"):
        load_run(runs / "abcdef1234567890")
    (runs / "abcdef1234567890" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="cannot be read as safetensors"):
        load_run(runs / "abcdef1234567890")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"notes\.txt: not an image"):
        read_inputs([str(tmp_path / "notes.txt")], 28, 1)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(UserError, match=r"has no 'images' or 'test_images' array; it has x"):
        read_inputs([str(tmp_path / "other.npz")], 28, 1)
    shutil.rmtree(runs)


@pytest.mark.slow
def test_a_crafted_key_never_chooses_where_predict_writes(finished_run, data_env, tmp_path, monkeypatch):
    """A run folder whose record names a key like '../../x' cannot make predict write outside the working
    directory: without --out it is refused (exit 2 in the CLI), with --out the user's path is used."""
    from benchmark.core.errors import UserError
    from benchmark.predict import run_prediction

    spec, run_dir = finished_run
    record = json.loads((run_dir / "result.json").read_text())
    record["spec"]["key"] = record["key"] = "../../escaped"
    (run_dir / "result.json").write_text(json.dumps(record))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(UserError, match=r"its key '\.\./\.\./escaped' is not a job key \(16 hex digits\)"):
        run_prediction(str(run_dir), [str(data_env / "breastmnist.npz")], tmp_path / "results")
    assert not list(tmp_path.rglob("predictions-*.csv"))
    run_prediction(str(run_dir), [str(data_env / "breastmnist.npz")], tmp_path / "results", out=work / "p.csv")
    assert (work / "p.csv").is_file()


@pytest.mark.slow
def test_a_run_record_cannot_choose_what_the_model_is_built_with(finished_run, data_env, tmp_path):
    """The run folder is untrusted: keyword arguments the registry entry does not have (a checkpoint path that
    some timm versions would torch.load), values of the wrong type, a malformed image size or class list are
    refused with the run and the field named; the untampered run still loads."""
    from benchmark.predict import load_run

    _, run_dir = finished_run
    original = (run_dir / "result.json").read_text()
    assert load_run(run_dir).model is not None

    def tampered(change) -> None:
        record = json.loads(original)
        change(record)
        (run_dir / "result.json").write_text(json.dumps(record))

    cases = [
        (lambda r: r["spec"]["entries"]["backbone"]["config"].update(checkpoint_path="/tmp/evil.pth"),
         r"config key 'checkpoint_path', which the registry entry does not have"),
        (lambda r: r["spec"]["entries"]["backbone"].update(config=["not", "a", "dict"]),
         r"entries\.backbone\.config in its record is list, expected dict"),
        (lambda r: r["spec"].update(image_size="28; rm -rf ~"), r"image_size in its record is str, expected int"),
        (lambda r: r["spec"].update(image_size=10**9), r"image_size 1000000000 is outside"),
        (lambda r: r["dataset"].update(label_names=[{"x": 1}, 2]), r"label_names in result\.json must be"),
        (lambda r: r["spec"].update(backbone="no_such_net"), r"no_such_net"),
    ]
    for change, message in cases:
        tampered(change)
        with pytest.raises(UserError, match=message) as caught:
            load_run(run_dir)
        assert str(run_dir) in str(caught.value) or "no_such_net" in str(caught.value)
    (run_dir / "result.json").write_text(original)
