"""Prediction with a finished run: classify new images with its saved weights and the preprocessing of training.

``launch/predict.py --run <key or run folder> --images PATH…`` is a thin wrapper around :func:`run_prediction`.

- The run is a folder holding ``model.safetensors`` (written when ``training.save_checkpoint`` is true: the weights
  of the epoch selected on validation AUROC), or a job key (or unique key prefix) looked up under
  ``<results>/*/runs/<key>`` (and ``<results>/runs/<key>``).
- The model is rebuilt from the backbone's registry entry, never from the run folder alone: a run folder is
  untrusted input. From the run's ``result.json`` (or ``spec.json``) only type-checked values are taken: the
  backbone's registered name, recorded values of keys the entry's config itself has (same JSON type), the class
  names (strings) and the image size (an int in range); the input channels are read from the weights. Weights are
  read with safetensors only (no pickles).
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


MAX_IMAGE_SIZE, MAX_CLASSES = 4096, 100_000  # bounds on what a run's record may ask the model to be
PLAIN = (str, int, float, bool, type(None))


def _checked(value, kind, what: str, run_dir: Path):
    """``value`` if it is a ``kind`` (bool is not an int here), else a UserError naming the run and the field."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"Run {run_dir}: {what} in its record is {type(value).__name__}, expected "
                        f"{kind.__name__}; the run folder is damaged or not one the harness wrote.")
    return value


def _plain(value) -> bool:
    """JSON scalars, and lists / string-keyed dicts of them (nested): what a registry config value may be."""
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


def _same_kind(value, registered) -> bool:
    """Whether a recorded config value may stand in for the registry's: both numbers, the same JSON type, or a
    registry default of None."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return registered is None or (number(value) and number(registered)) or type(value) is type(registered)


def _backbone_config(spec: dict, run_dir: Path):
    """(registry entry, config, what changed) to rebuild a run's backbone. The run folder is untrusted input: the
    backbone must be a registered name, and the config is the registry entry's, with the run's recorded value taken
    only for a key the entry itself has, of the same JSON type (so a record cannot add keyword arguments such as a
    checkpoint path); any other recorded key is refused."""
    from benchmark.core import registry

    name = _checked(spec.get("backbone"), str, "backbone", run_dir)
    entry = registry.get("backbone", name)
    recorded = spec.get("entries", {}).get("backbone", {})
    recorded_config = _checked(recorded.get("config", {}), dict, "entries.backbone.config", run_dir)
    config = dict(entry.config)
    for key, value in recorded_config.items():
        if key not in entry.config:
            raise UserError(f"Run {run_dir}: its record gives backbone {name!r} the config key {key!r}, which the "
                            f"registry entry does not have (keys: {', '.join(sorted(entry.config)) or 'none'}). "
                            "predict rebuilds models from the registry only; restore the entry the run was trained "
                            "with, or retrain.")
        if not _plain(value) or not _same_kind(value, entry.config[key]):
            raise UserError(f"Run {run_dir}: backbone config {key!r} = {value!r} in its record does not have the "
                            f"registry's type ({type(entry.config[key]).__name__}).")
        config[key] = value
    changed = [f"version {recorded.get('version')} → {entry.version}"] if entry.version != recorded.get("version") else []
    changed += [f"{k}: {entry.config[k]!r} → recorded {config[k]!r}" for k in config if config[k] != entry.config[k]]
    return entry, config, "; ".join(changed)


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
    _checked(spec, dict, "spec", run_dir)
    if spec.get("stage", "classifier") != "classifier":
        raise UserError(f"Run {run_dir} is a {spec.get('stage')} job; prediction needs a classifier run.")
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        state = "finished" if result is not None else "not finished"
        raise UserError(f"Run {run_dir} ({state}) has no {WEIGHTS_FILE}: its weights were not saved. Re-run the job "
                        "with training.save_checkpoint: true (launch/grid.py … --force --only <key>).")
    notes = []
    if result is not None:
        label_names = _checked(result.get("dataset", {}).get("label_names"), list, "dataset.label_names", run_dir)
        if not 2 <= len(label_names) <= MAX_CLASSES or not all(isinstance(n, str) for n in label_names):
            raise UserError(f"Run {run_dir}: dataset.label_names in result.json must be 2..{MAX_CLASSES} strings; "
                            "the run folder is damaged or not one the harness wrote.")
    else:
        from benchmark.data import dataset_source

        label_names = list(dataset_source(spec["dataset"]).label_names or [])
        notes.append("the run has no result.json (unfinished?): classes taken from the dataset's registry entry")
    if result is not None:  # weights replaced or altered after the run are refused (their hash is in the record)
        from benchmark.run.run_dir import ArtifactMismatch, verify_artifact

        try:
            verify_artifact(run_dir, WEIGHTS_FILE, result)
        except ArtifactMismatch as exc:
            raise UserError(str(exc)) from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} cannot be read as safetensors ({exc}).") from None
    entry, config, changed = _backbone_config(spec, run_dir)
    if changed:
        notes.append(f"backbone {entry.name!r} changed in the registry since this run ({changed}); the model is "
                     "rebuilt from the registry entry with the run's recorded values of the entry's own keys")
    backbone = registry.create("backbone", entry, config=config)
    image_size = _checked(spec.get("image_size"), int, "image_size", run_dir)
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"Run {run_dir}: image_size {image_size} is outside 1..{MAX_IMAGE_SIZE}; the run folder is "
                        "damaged or not one the harness wrote.")
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
    return {k: config[k] for k in keys if isinstance(config, dict) and k in config and _plain(config[k])}


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
