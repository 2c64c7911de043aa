"""Prediction with a finished run: classify new images with its saved weights and the preprocessing of training.

``launch/predict.py --run <key or run folder> --images PATH…`` is a thin wrapper around :func:`run_prediction`.

- The run is a folder holding ``model.safetensors`` (written when ``training.save_checkpoint`` is true: the weights
  of the epoch selected on validation AUROC), or a job key (or unique key prefix) looked up under
  ``<results>/*/runs/<key>`` (and ``<results>/runs/<key>``).
- The model is rebuilt from the run's ``result.json`` (or ``spec.json``): the backbone's registry target with the
  config recorded in the spec, the classes of the dataset, the image size of the job; the input channels are
  read from the weights. Weights are read with safetensors only (no pickles).
- Inputs: image files (.png, .jpg, .jpeg), NIfTI files (slices as the run's dataset declares, else the middle
  slice), folders (searched recursively for those), and ``.npz`` files with an ``images`` array or MedMNIST keys
  (``<split>_images``; ``split`` picks which, default test). Every image goes through the training preprocessing:
  ``benchmark.data.images`` conversion and resizing (as for image-folder datasets; arrays already at the run's
  size and channels are used as they are), then ``to_float`` and ``normalize``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.specs import is_key

WEIGHTS_FILE = "model.safetensors"


@dataclass
class LoadedRun:
    run_dir: Path
    spec: dict
    label_names: list
    image_size: int
    channels: int
    model: object  # torch.nn.Module in eval mode
    notes: list

    @property
    def key(self) -> str:
        return self.spec.get("key") or self.run_dir.name


def find_run(run: str, results_root) -> Path:
    """The run folder for a folder path, a job key or a unique key prefix (searched across grids)."""
    path = Path(run).expanduser()
    if path.is_dir():
        return path
    root = Path(results_root)
    if len(run) < 4 or any(ch in run for ch in "/\\*?["):
        raise UserError(f"--run {run!r} is neither a run folder nor a job key (at least 4 characters of a key).")
    candidates = sorted({p for pattern in (f"*/runs/{run}*", f"runs/{run}*") for p in root.glob(pattern)
                         if p.is_dir()})
    if not candidates:
        raise UserError(f"No run with key {run!r} under {root} (looked in {root}/*/runs/). Pass the run folder, or "
                        "the results root with --results (default: $GENMED_RESULTS_DIR or ./results).")
    keys = sorted({p.name for p in candidates})
    if len(keys) > 1:
        raise UserError(f"Key prefix {run!r} matches several jobs: {', '.join(keys[:10])}. Give more characters.")
    with_weights = [p for p in candidates if (p / WEIGHTS_FILE).is_file()]
    return (with_weights or candidates)[0]


def _run_spec(run_dir: Path) -> tuple[dict, dict | None]:
    result_path, spec_path = run_dir / "result.json", run_dir / "spec.json"
    try:
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            return result["spec"], result
        if spec_path.is_file():
            return json.loads(spec_path.read_text()), None
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"Run {run_dir}: cannot read its result.json/spec.json ({exc}).") from None
    raise UserError(f"{run_dir} is not a run folder: it has no result.json or spec.json.")


def _input_channels(model, state: dict) -> int | None:
    """In-channels of the checkpoint's stem: its first 4D weight, in the model's registration order."""
    for name, tensor in model.state_dict().items():
        if tensor.ndim == 4 and name in state:
            return int(state[name].shape[1])
    return None


def load_run(run_dir, device=None) -> LoadedRun:
    """The run's classifier rebuilt from its spec and its safetensors weights, in eval mode on `device`."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from benchmark.core import registry

    run_dir = Path(run_dir)
    spec, result = _run_spec(run_dir)
    if spec.get("stage", "classifier") != "classifier":
        raise UserError(f"Run {run_dir} is a {spec.get('stage')} job; prediction needs a classifier run.")
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        state = "finished" if result is not None else "not finished"
        raise UserError(f"Run {run_dir} ({state}) has no {WEIGHTS_FILE}: its weights were not saved. Re-run the job "
                        "with training.save_checkpoint: true (launch/grid.py … --force --only <key>).")
    notes = []
    if result is not None:
        label_names = list(result["dataset"]["label_names"])
    else:
        from benchmark.data import dataset_source

        label_names = list(dataset_source(spec["dataset"]).label_names or [])
        notes.append("the run has no result.json (unfinished?): classes taken from the dataset's registry entry")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} cannot be read as safetensors ({exc}).") from None
    recorded = spec["entries"]["backbone"]
    entry = registry.get("backbone", spec["backbone"])
    if entry.version != recorded.get("version") or entry.config != recorded.get("config"):
        notes.append(f"backbone {entry.name!r} changed in the registry since this run (version {recorded.get('version')}"
                     f" → {entry.version}); the model is rebuilt from the config recorded with the run")
    backbone = registry.create("backbone", entry, config=recorded.get("config", {}))
    image_size = int(spec["image_size"])
    model = backbone.build(1, len(label_names), image_size)
    channels = _input_channels(model, state) or 1
    if channels != 1:
        model = backbone.build(channels, len(label_names), image_size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{weights} does not fit backbone {entry.name!r} with {len(label_names)} classes at "
                        f"{image_size} px: {str(exc).splitlines()[0]}") from None
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    return LoadedRun(run_dir, {**spec, "key": spec.get("key", run_dir.name)}, label_names, image_size, channels,
                     model, notes)


def _dataset_nifti_config(spec: dict) -> dict:
    """The run's slice policy when its dataset is a NIfTI dataset (else the defaults: middle slice)."""
    config = spec.get("entries", {}).get("dataset", {}).get("config", {})
    keys = ("slices", "axis", "window", "canonical")
    return {k: config[k] for k in keys if k in config}


def read_inputs(paths: list, image_size: int, channels: int, split: str = "test",
                nifti_config: dict | None = None) -> tuple[list, np.ndarray]:
    """(names, uint8 (N, channels, image_size, image_size)) for files, folders and .npz arrays."""
    from benchmark.data.bundle import read_npz, to_nchw
    from benchmark.data.images import IMAGE_SUFFIXES, conform_array, read_image
    from benchmark.data.nifti import NIFTI_SUFFIXES, volume_slices

    names, arrays = [], []

    def add_file(path: Path) -> None:
        lower = path.name.lower()
        if lower.endswith(NIFTI_SUFFIXES):
            images, indices = volume_slices(path, image_size, channels, **(nifti_config or {}))
            names.extend(str(path) if len(indices) == 1 else f"{path}[slice={i}]" for i in indices)
            arrays.append(images)
        elif lower.endswith(IMAGE_SUFFIXES):
            image, _ = read_image(path, image_size, channels)
            names.append(str(path))
            arrays.append(image[None])
        else:
            raise UserError(f"{path}: not an image (.png, .jpg, .jpeg), NIfTI (.nii, .nii.gz) or .npz file.")

    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UserError(f"--images: {path} does not exist.")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.name.lower().endswith(IMAGE_SUFFIXES + NIFTI_SUFFIXES))
            if not found:
                raise UserError(f"--images: folder {path} holds no .png, .jpg, .jpeg or NIfTI files.")
            for file in found:
                add_file(file)
        elif path.suffix.lower() == ".npz":
            keys = read_npz(path, None)
            key = "images" if "images" in keys else f"{split}_images"
            if key not in keys:
                raise UserError(f"{path} has no 'images' or '{split}_images' array; it has {', '.join(keys)}.")
            images = conform_array(to_nchw(keys[key], f"{path} [{key}]"), image_size, channels)
            names.extend(f"{path}[{key}:{i}]" for i in range(len(images)))
            arrays.append(images)
        else:
            add_file(path)
    if not names:
        raise UserError("--images: no images given.")
    return names, np.concatenate(arrays)


def predict_probabilities(run: LoadedRun, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N, K), preprocessing exactly as training's evaluation (to_float, normalize)."""
    import torch

    from benchmark.data.augment import normalize, to_float

    from benchmark.run.inference import map_batches

    device = next(run.model.parameters()).device
    out = map_batches(lambda batch: run.model(normalize(to_float(batch))).float().softmax(dim=1), images, batch_size,
                      device)
    return torch.cat(out).numpy()


def write_predictions(path, names: list, probs: np.ndarray, label_names: list) -> Path:
    """CSV: file, predicted_label, confidence, then prob_<label> per class (written atomically)."""
    from benchmark.run.run_dir import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "predicted_label", "confidence", *(f"prob_{n}" for n in label_names)])
        for name, row in zip(names, probs):
            best = int(row.argmax())
            writer.writerow([name, label_names[best], f"{row[best]:.6f}", *(f"{p:.6f}" for p in row)])
    return path


def format_table(names: list, probs: np.ndarray, label_names: list, limit: int = 20) -> str:
    """A short table (file, label, confidence) and the count per predicted label."""
    predicted = probs.argmax(axis=1)
    shown = [(Path(n.split("[")[0]).name + (n[n.index("["):] if "[" in n else ""), label_names[p], probs[i, p])
             for i, (n, p) in enumerate(zip(names, predicted))][:limit]
    width = min(60, max([len(s[0]) for s in shown] + [4]))
    label_width = max([len(s[1]) for s in shown] + [5])
    lines = [f"{'file':<{width}}  {'label':<{label_width}}  confidence"]
    lines += [f"{name[-width:]:<{width}}  {label:<{label_width}}  {conf:.3f}" for name, label, conf in shown]
    if len(names) > limit:
        lines.append(f"… {len(names) - limit} more in the CSV")
    counts = np.bincount(predicted, minlength=len(label_names))
    lines.append("predicted: " + ", ".join(f"{label_names[i]} {int(c)}" for i, c in enumerate(counts)))
    return "\n".join(lines)


def run_prediction(run: str, images: list, results_root, out=None, split: str = "test", batch_size: int = 256,
                   device=None) -> dict:
    """Find and load the run, read the inputs, predict, write the CSV. Returns what the CLI prints."""
    run_dir = find_run(run, results_root)
    loaded = load_run(run_dir, device)
    names, arrays = read_inputs(images, loaded.image_size, loaded.channels, split,
                                _dataset_nifti_config(loaded.spec))
    probs = predict_probabilities(loaded, arrays, batch_size)
    if not out and not is_key(loaded.key):  # a key from a run folder's JSON never chooses where we write
        raise UserError(f"{loaded.run_dir}: its key {loaded.key!r} is not a job key (16 hex digits), so it cannot "
                        "name the output file; pass --out FILE, or check where this run folder came from.")
    out = Path(out) if out else Path(f"predictions-{loaded.key}.csv")
    write_predictions(out, names, probs, loaded.label_names)
    return {"run": loaded, "names": names, "probs": probs, "csv": out,
            "table": format_table(names, probs, loaded.label_names)}
