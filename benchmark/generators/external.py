"""`external`: bring your own synthetic images — a bank made elsewhere (class folders or .npz), checked, hashed, mixed.

A bank is either a folder of class sub-folders ``root/<class name>/*.png|jpg|jpeg`` (the layout of a CFG-DDPM
pipeline's ``synthetic_guide8.0/benign/…``) or an ``.npz`` with ``images`` (uint8 (N, H, W), (N, H, W, C) or
(N, C, H, W)) and ``labels`` (class indices, or class names) and optionally ``label_names``. It is for one dataset
and image size: every image must have the dataset's size and channel count and every class name must be one of the
dataset's (each mismatch is a UserError; launch/grid.py exits 2 before any job). Its content hash enters the key of
every job that uses it (:func:`external_identities`, called by ``benchmark.plan.grid.expand``); a bank changed after
planning stops the job. An optional ``manifest.json`` beside the bank (in the folder, or next to the .npz) says
what the external generator saw: ``{"dataset": "breastmnist", "splits": ["train"]}``; one that admits val or test
images is refused. The harness cannot verify what an external generator was trained on: every record says so.

Audit: every job of a bank records the same audit as a harness generator's bank (``ExternalBank.audit``: its
rare-class images against all real rare-class training images, in the fixed and the in-domain features), computed
once per (bank, dataset, size, rare class, fold) and cached under ``<results>/<grid>/audits/<key>/`` (audit.json and
its pictures). Its memorisation checks (copy rate, closest pairs) are against the whole training split: the images
an external generator may have seen, since the harness cannot know which it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.generators.base import Method, TrainingSet, synthetic_count

KIND = "external"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"
EVALUATION_SPLITS = {"val", "valid", "validation", "test", "testing"}
AUDITS_DIR = "audits"  # beside runs/: one folder per audited (bank, dataset, size, rare class, fold)
AUDIT_FILE = "audit.json"
AUDIT_VERSION = 1  # bump when the cached audit of a bank would change
UNVERIFIED = ("the harness cannot verify what the external generator was trained on (no val/test image may have "
              "been seen: declared by {source})")


def _bank_path(config: dict, where: str) -> Path:
    path = config.get("path")
    if not path:
        raise UserError(f"{where}: set config.path to your bank (a folder of class sub-folders or an .npz); see "
                        "README, Methods: bring your own synthetic images.")
    path = Path(os.path.expandvars(str(path))).expanduser()
    if not path.exists():
        raise UserError(f"{where}: bank {path} does not exist.")
    if not (path.is_dir() or path.suffix == ".npz"):
        raise UserError(f"{where}: bank {path} must be a folder of class sub-folders or an .npz file.")
    return path


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


_DIGESTS: dict = {}


def bank_sha256(path: Path) -> str:
    """sha256 over the sorted relative file names and bytes of the bank (and its manifest), cached per process by
    the files' names, sizes and modification times."""
    files = _files(path) + ([m] if (m := manifest_path(path)).is_file() else [])
    root = path if path.is_dir() else path.parent
    signature = tuple((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if (str(path.resolve()), signature) in _DIGESTS:
        return _DIGESTS[(str(path.resolve()), signature)]
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        digest.update(f.read_bytes())
    _DIGESTS[(str(path.resolve()), signature)] = digest.hexdigest()
    return digest.hexdigest()


def manifest_path(path: Path) -> Path:
    return (path if path.is_dir() else path.parent) / MANIFEST


def read_manifest(path: Path, dataset: str | None, where: str) -> dict | None:
    """The bank's manifest (None if absent); refuses one that admits validation or test images."""
    file = manifest_path(path)
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except ValueError as exc:
        raise UserError(f"{where}: {file} is not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), list):
        raise UserError(f'{where}: {file} must be an object with "splits": the dataset splits the external '
                        'generator was trained on, e.g. {"dataset": "breastmnist", "splits": ["train"]}.')
    admitted = sorted({str(s) for s in manifest["splits"]} & EVALUATION_SPLITS)
    if admitted:
        raise UserError(f"{where}: {file} says the external generator saw {', '.join(admitted)} images; a bank made "
                        "from validation or test images would leak them into training. Train the generator on "
                        "the training split only.")
    if dataset is not None and manifest.get("dataset") not in (None, dataset):
        raise UserError(f"{where}: {file} is for dataset {manifest['dataset']!r}, not {dataset!r}.")
    return manifest


def _read_bank_npz(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, list | None]:
    """(images, labels, label_names or None) of an .npz bank; never unpickled; a damaged file is a UserError."""
    fix = "Write it again with numpy.savez(path, images=…, labels=…, label_names=…)."
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("images", "labels") if k not in data.files]
            if missing:
                raise UserError(f"{where}: {path} lacks {', '.join(missing)} (has {', '.join(data.files)}).")
            images, labels = data["images"], data["labels"]
            names = [str(n) for n in data["label_names"]] if "label_names" in data.files else None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"{where}: {path} holds object (pickled) arrays, which the harness never loads; store "
                            "plain arrays (uint8 images, integer or text labels).") from None
        raise UserError(f"{where}: {path} is truncated or corrupt (ValueError: {exc}). {fix}") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise UserError(f"{where}: {path} is empty, truncated or not an .npz ({type(exc).__name__}: {exc}). "
                        f"{fix}") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{where}: {path}: images must be uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) with one "
                        f"label each; got {images.dtype} {images.shape} and labels {labels.shape}.")
    return images, labels, names


def _read_bank_file(file: Path) -> tuple[np.ndarray, str | None]:
    """One image of a folder bank, decoded completely ((C, H, W); a non-square image is left as zeros of its
    shape, refused by check_bank), or the reason it cannot be used."""
    from benchmark.data.images import natural_channels, read_image
    from benchmark.data.validate import check_image_file, check_utf8_name, opened_image

    try:
        check_utf8_name(file, "bank")
        check_image_file(file)
        with opened_image(file) as img:
            width, height = img.size
            channels = natural_channels(img.mode)
        if width == height:
            return read_image(file, width, channels)[0], None
        return np.zeros((channels, height, width), np.uint8), None
    except UserError as exc:
        return None, str(exc)


def read_bank(path: Path, where: str) -> tuple[np.ndarray | list, np.ndarray, list, list]:
    """(images, class names per image, file names, problems): images uint8 (N, C, H, W) for an .npz, or a list
    of (C, H, W) arrays (each image its own size) for a folder. Every folder image is decoded: one that does not
    decode (or has a name that is not UTF-8, or is a decompression bomb) is a problem naming it."""
    problems = []
    if path.is_file():
        images, labels, names = _read_bank_npz(path, where)
        if images.ndim == 3:
            images = images[:, None]
        elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        if labels.dtype.kind in "iu":
            if names is None:
                raise UserError(f"{where}: {path} has integer labels but no label_names; add label_names (the "
                                "dataset's class names) or store the class names as labels.")
            classes = [names[int(i)] if 0 <= int(i) < len(names) else f"<index {int(i)}>" for i in labels]
        else:
            classes = [str(c) for c in labels]
        if not len(images):
            problems.append(f"{where}: {path} holds no images")
        return np.ascontiguousarray(images), classes, [f"{path.name}[{i}]" for i in range(len(images))], problems
    images, classes, names = [], [], []
    for file in _files(path):
        relative = file.relative_to(path)
        if len(relative.parts) != 2:
            problems.append(f"{file}: expected root/<class>/<image>, found it {len(relative.parts) - 1} folder(s) "
                            "deep")
            continue
        array, problem = _read_bank_file(file)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        images.append(array)
        classes.append(relative.parts[0])
        names.append(str(relative))
    if not images and not problems:
        problems.append(f"{path} holds no images (root/<class>/*.png|jpg|jpeg)")
    return images, classes, names, problems


_CLASS_COUNTS: dict = {}  # (real path, bank sha256) -> {class name: images}, filled when a bank is checked


def bank_class_counts(path: Path, where: str) -> dict:
    """{class name: images} of a bank (read once per process and content)."""
    memo = (str(Path(path).resolve()), bank_sha256(path))
    if memo not in _CLASS_COUNTS:
        _, classes, _, _ = read_bank(path, where)
        _CLASS_COUNTS[memo] = {c: classes.count(c) for c in dict.fromkeys(classes)}
    return _CLASS_COUNTS[memo]


def check_bank(images, classes, files, *, image_size: int, channels: int | None, label_names: list | None,
               where: str) -> list[str]:
    """One problem per kind of mismatch against the dataset (size, channels, class names), naming an example."""
    problems = []
    shapes: dict = {}
    for image, name in zip(images, files):
        shapes.setdefault(tuple(image.shape), name)
    for shape, example in shapes.items():
        if shape[1:] != (image_size, image_size):
            problems.append(f"{where}: images of size {shape[2]}×{shape[1]} (e.g. {example}); the dataset is at "
                            f"{image_size}×{image_size}. Resize the bank or use the matching image_size.")
        if channels is not None and shape[0] != channels:
            problems.append(f"{where}: images with {shape[0]} channel(s) (e.g. {example}); the dataset has "
                            f"{channels}. Convert the bank ({'grey' if channels == 1 else 'RGB'}).")
    if label_names is not None:
        unknown = sorted(set(classes) - {str(n) for n in label_names})
        if unknown:
            problems.append(f"{where}: class name(s) {', '.join(map(repr, unknown))} are not classes of the dataset "
                            f"({', '.join(map(repr, label_names))}). Rename the class folders / labels.")
    return problems


def _dataset_facts(dataset: str) -> tuple[list | None, int | None]:
    """Class names and channel count a dataset declares without reading its images (None where it does not)."""
    from benchmark.data import dataset_source

    source = dataset_source(dataset)
    info = getattr(source, "info", None) or {}
    channels = info.get("n_channels", getattr(source, "channels", None))
    return getattr(source, "label_names", None), channels


def external_identities(generator_entries: dict, datasets: list, image_sizes: list) -> dict:
    """{name: identity} for the external entries among `generator_entries`: the entry's identity with the bank's
    content hash added to its config (so it enters every key). Checks each bank against each dataset and size of
    the grid first; every problem goes into one UserError (nothing starts)."""
    out, problems = {}, []
    for name, entry in generator_entries.items():
        if entry.config.get("kind") != KIND:
            continue
        where = f"external bank of {name!r} ({entry.source})"
        try:
            path = _bank_path(entry.config, where)
            images, classes, files, found = read_bank(path, where)
            problems += found
            _CLASS_COUNTS[(str(path.resolve()), bank_sha256(path))] = {c: classes.count(c)
                                                                       for c in dict.fromkeys(classes)}
            for dataset in datasets:
                if dataset != entry.config.get("dataset"):
                    problems.append(f"{where}: the bank is for dataset {entry.config.get('dataset')!r} (config "
                                    f"dataset), the grid uses it with {dataset!r}. Exclude that combination or "
                                    "register a bank per dataset.")
                    continue
                read_manifest(path, dataset, where)
                label_names, channels = _dataset_facts(dataset)
                for size in image_sizes:
                    problems += check_bank(images, classes, files, image_size=size, channels=channels,
                                           label_names=label_names, where=f"{where}, {dataset}@{size}")
            out[name] = {**entry.identity, "config": {**entry.config, "bank_sha256": bank_sha256(path)}}
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("External synthetic-image bank(s) do not fit the grid; nothing was started:\n  - "
                        + "\n  - ".join(dict.fromkeys(problems)))
    return out


class ExternalBank(Method):
    """Mixes a bank made elsewhere into the cell's training set: at synthetic_ratio r, round(r × n_rare) images of
    the bank's rare class (a seeded permutation of them, so ratio 1 ⊂ ratio 2), "balance" / "real_percentage=P"
    as for the harness's own generators; more than the bank holds is an error. The images count as synthetic."""

    keys = {"path", "dataset", "bank_sha256"}

    def __init__(self, **config):
        unknown = sorted(set(config) - self.keys)
        if unknown:
            raise UserError(f"external: unknown config key(s) {', '.join(map(repr, unknown))}; valid: "
                            f"{', '.join(sorted(self.keys))}.")
        if not config.get("path") or not config.get("dataset"):
            raise UserError("external: set config.path (the bank) and config.dataset (the dataset it was made for).")
        super().__init__(**config)

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        where = f"external bank {self.config.get('path')!r}"
        path = _bank_path(self.config, where)
        dataset = self.config["dataset"]
        label_names, _ = _dataset_facts(dataset)
        if label_names is None:
            raise UserError(f"{where}: dataset {dataset!r} declares no class names to match the bank's against.")
        digest = bank_sha256(path)
        expected = self.config.get("bank_sha256")
        if expected is not None and digest != expected:
            raise UserError(f"{where} changed after this job was planned (sha256 {digest[:12]}… now, "
                            f"{expected[:12]}… in the job's key). Run the grid again: the job gets a new key.")
        manifest = read_manifest(path, dataset, where)
        images, classes, files, problems = read_bank(path, where)
        problems += check_bank(images, classes, files, image_size=real.images.shape[-1],
                               channels=real.images.shape[1], label_names=label_names, where=where)
        if problems:
            raise UserError("; ".join(problems))
        counts = np.bincount(real.labels, minlength=num_classes)
        needed = synthetic_count(synthetic_ratio, int(counts[rare_class]), counts)
        rare_name = label_names[rare_class] if label_names is not None else None
        rare_idx = np.array([i for i, c in enumerate(classes) if c == rare_name], dtype=np.int64)
        if needed > len(rare_idx):
            raise UserError(f"{where}: synthetic_ratio {synthetic_ratio!r} needs {needed} images of class "
                            f"{rare_name!r} but the bank holds {len(rare_idx)}.")
        chosen = np.random.default_rng(seed).permutation(rare_idx)[:needed]
        bank = np.stack([images[i] for i in chosen]) if needed else np.empty((0, *real.images.shape[1:]), np.uint8)
        info = {"bank_sha256": digest, "bank_path": str(path), "bank_size": len(classes),
                "bank_rare_available": len(rare_idx), "synthetic_added": needed,
                "training_data": UNVERIFIED.format(source=f"{MANIFEST}: splits {manifest['splits']}" if manifest
                                                   else f"nobody: no {MANIFEST} beside the bank"),
                "training_data_verified": False}
        return TrainingSet(
            np.concatenate([real.images, bank]),
            np.concatenate([real.labels, np.full(needed, rare_class, dtype=real.labels.dtype)]),
            np.concatenate([real.is_synthetic, np.ones(needed, dtype=bool)]),
            None,
            info,
        )

    def audit(self, spec, cell, runs_dir) -> dict:
        """The bank's audit for `spec`'s cell (see the module docstring), cached under ``<runs_dir>/../audits``."""
        from benchmark.core.specs import short_hash
        from benchmark.generators import extractor
        from benchmark.generators.audit import audit
        from benchmark.run.run_dir import write_json_atomic

        where = f"external bank {self.config.get('path')!r}"
        path = _bank_path(self.config, where)
        bundle, rare_class = cell.bundle, cell.rare_class
        train = bundle.splits["train"]  # the fold's training part under cross-validation
        digest = self.config.get("bank_sha256") or bank_sha256(path)  # the key's: build_training_set checked it
        ident = {"audit_version": AUDIT_VERSION, "bank_sha256": digest, "dataset": spec.entries["dataset"],
                 "dataset_sha256": bundle.sha256, "image_size": int(spec.image_size), "rare_class": int(rare_class),
                 "fold": [int(spec.k_folds or 0), int(spec.fold), int(spec.fold_seed) if spec.k_folds else 0]}
        audit_key = short_hash(ident)
        folder = Path(runs_dir).resolve().parent / AUDITS_DIR / audit_key
        try:
            return json.loads((folder / AUDIT_FILE).read_text())["audit"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not audited yet (or an unreadable cache file): audit again, the result is deterministic
        images, classes, _, _ = read_bank(path, where)
        rare_name = bundle.label_names[rare_class]
        bank = np.stack([images[i] for i, c in enumerate(classes) if c == rare_name])
        reference = train.images[train.labels == rare_class]  # evaluation only, as for the harness's generators
        overrides = spec.entries["generator"]["config"].get("audit_extractor")  # a harness key, as for generators
        domain, record, trained_here = extractor.for_cell(spec, bundle, runs_dir, overrides)
        domain_info = {"extractor_key": record["key"], "extractor_trained_here": trained_here,
                       "extractor_train_n": record["identity"]["train_n"],
                       "extractor_train_balanced_accuracy": record["train_balanced_accuracy"]}
        folder.mkdir(parents=True, exist_ok=True)
        report = audit(bank, reference, train.images, out_dir=folder, reference=reference, domain_extractor=domain,
                       domain_info=domain_info, sheet_heading=f"external bank {path.name} ({rare_name})")
        report["memorisation_reference"] = "the whole training split (what an external generator may have seen)"
        report["training_data_verified"] = False
        report["audit_key"] = audit_key  # its folder under audits/ (the collector shows its sheets)
        write_json_atomic(folder / AUDIT_FILE, {"identity": ident, "audit": report})
        return report
