"""`pipeline`: bring your own diffusion model — a local diffusers pipeline folder, sampled in the generator stage.

The entry's ``config.path`` is a folder written by ``DiffusionPipeline.save_pretrained`` (``model_index.json`` and
one sub-folder per component). Nothing is downloaded: every ``from_pretrained`` call passes
``local_files_only=True``, and a Hub id (``org/name``) is refused with the command that makes a local copy. Two
kinds are recognised from ``model_index.json`` (read as JSON, so ``--dry-run`` imports neither torch nor diffusers):

- **class-conditional**: ``unet`` is a ``UNet2DModel`` with a class embedding (``num_class_embeds``, or
  ``class_embed_type: timestep``); sampled by :class:`benchmark.generators.ddpm.DDPM`'s own denoising loop
  (``_denoise``: classifier-free guidance, DDIM / DPM-Solver++ / DDPM steps built from the folder's scheduler
  config). ``class_labels`` maps dataset classes (index or name) to the UNet's labels (default: the same index);
  ``guidance_scale`` other than 1 needs ``null_class``, the UNet's "no class" label (the harness's ddpm uses
  ``num_classes``).
- **text-to-image**: ``unet`` is a ``UNet2DConditionModel`` beside ``vae``, ``text_encoder`` and ``tokenizer``
  (e.g. ``StableDiffusionPipeline``), called with one prompt per class (``prompts``: a list in class order, or a
  mapping from class index or name), optional ``negative_prompt`` and optional LoRA weights (``lora``: a
  ``.safetensors`` file or a folder holding one, loaded with ``load_lora_weights`` at ``lora_scale``). The safety
  checker, if the folder has one, is not loaded (it blacks out images it flags).

Seeds and sampler settings are the harness's: ``sample(n, class, seed)`` draws the initial noise (latents) for all
`n` images from ``torch.Generator().manual_seed(seed)`` on the CPU and passes it to the pipeline, so a bank is
reproducible from its seed whatever the device; ``sampler`` (ddim, dpm_solver, ddpm), ``sampling_steps``,
``guidance_scale`` (default 1 for class-conditional, 7.5 for text-to-image) and ``ddim_eta`` replace the folder's
own scheduler. Images the pipeline makes at another size or channel count are converted to the dataset's with
:func:`benchmark.data.images.conform_array` (colour → grey: PIL's ITU-R 601-2 luma; grey → colour: repeated;
then PIL's bicubic resize), and the fit log says so (``conversion``).

Identity: :func:`pipeline_identities` (called where the grid is expanded, as ``external_identities`` is for
external banks) adds ``pipeline_sha256`` to the entry's config: the sha256 of ``model_index.json``, every file of
the component folders it names, and the LoRA file, so a changed weight file gives every job a new key. A folder
changed after planning stops the job. ``fit`` trains nothing (the pipeline was trained elsewhere, on data the
harness cannot verify: the log says so); ``save`` writes a ``config.json`` that points at the folder and its hash,
never a copy of the weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.generators._common import (
    GeneratorConfigError,
    check_class_index,
    check_training_data,
    choose_device,
    resolve_config,
    save_grid,
    to_uint8,
)
from benchmark.generators.base import Generator
from benchmark.generators.ddpm import DDPM, SAMPLERS

MODULE = __name__
INDEX = "model_index.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CLASS_CONDITIONAL, TEXT_TO_IMAGE = "class_conditional", "text_to_image"
TEXT_COMPONENTS = ("vae", "text_encoder", "tokenizer")
DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_GUIDANCE = {CLASS_CONDITIONAL: 1.0, TEXT_TO_IMAGE: 7.5}
DOWNLOAD_HINT = ("download it once where there is a network (`huggingface-cli download ID --local-dir DIR`, or "
                 "`DiffusionPipeline.from_pretrained(ID).save_pretrained(DIR)`) and set config.path to DIR")

DEFAULTS = {
    "path": None,              # the pipeline folder ($VARS and ~ expanded; relative: to the working directory)
    "dataset": None,           # the dataset it is for: needed when prompts / class_labels name classes
    "pipeline_sha256": None,   # set by pipeline_identities (the job key); a mismatch at load is an error
    "class_labels": None,      # class-conditional: {dataset class index or name: UNet class label}; default: same
    "null_class": None,        # class-conditional: the UNet's "no class" label (needed for guidance_scale != 1)
    "prompts": None,           # text-to-image: a prompt per class (list in class order or {index or name: prompt})
    "negative_prompt": None,   # text-to-image
    "lora": None,              # text-to-image: LoRA weights (.safetensors file, or a folder holding one)
    "lora_scale": 1.0,
    "resolution": None,        # text-to-image: side in px of the generated images (default: the pipeline's)
    "sampler": "ddim",
    "sampling_steps": 50,
    "guidance_scale": None,    # None: 1 (class-conditional) or 7.5 (text-to-image)
    "ddim_eta": 0.0,
    "sample_batch_size": 64,
    "torch_dtype": "float32",
    "grid_columns": 8,         # fit(out_dir=…) writes grid_final.png: this many samples per class (0: none)
    "device": None,
}


# ---- the folder: path, kind, hash (plain JSON and files; no torch) -------------------------------------------------

def resolve_path(value, what: str, where: str) -> Path:
    """A configured local path, expanded; a missing one (or a Hub id) is a UserError saying how to fix it."""
    from benchmark.data.images import expand_path

    if not value:
        raise GeneratorConfigError(f"{where}: set config.{what} to a local folder written by save_pretrained.")
    path = expand_path(value)
    if path.exists():
        return path
    unset = re.findall(r"\$\{?(\w+)\}?", str(path))
    if unset:
        raise GeneratorConfigError(f"{where}: config.{what} {value!r} names environment variable(s) "
                                   f"{', '.join(unset)} that are not set; export them (for the smoke profile: "
                                   "python launch/make_tiny_pipeline.py --out DIR; export GENMED_PIPELINE_DIR=DIR).")
    if HUB_ID.match(str(value)):
        raise GeneratorConfigError(f"{where}: config.{what} {value!r} is not a local path; it looks like a Hugging "
                                   f"Face Hub id, and nothing is downloaded at run time: {DOWNLOAD_HINT}.")
    raise GeneratorConfigError(f"{where}: config.{what} {path} does not exist; point it at the folder that "
                               "save_pretrained wrote (relative paths start at the working directory).")


def read_json(path: Path, where: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GeneratorConfigError(f"{where}: cannot read {path} ({exc}).") from None
    if not isinstance(data, dict):
        raise GeneratorConfigError(f"{where}: {path} is not a JSON object.")
    return data


def components(folder: Path, where: str) -> dict[str, str]:
    """{component: class name} of a save_pretrained folder, each component's sub-folder checked to exist."""
    if not folder.is_dir():
        raise GeneratorConfigError(f"{where}: {folder} is not a folder (a diffusers pipeline is a folder with "
                                   f"{INDEX}, as written by save_pretrained).")
    if not (folder / INDEX).is_file():
        raise GeneratorConfigError(f"{where}: {folder} is not a diffusers pipeline: it has no {INDEX}. Save the "
                                   "whole pipeline with pipeline.save_pretrained(folder), not one model.")
    index = read_json(folder / INDEX, where)
    found = {k: v[1] for k, v in index.items()
             if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[1] is not None}
    missing = [k for k in found if not (folder / k).is_dir()]
    if missing:
        raise GeneratorConfigError(f"{where}: {folder / INDEX} lists component(s) {', '.join(missing)} but the "
                                   "folder lacks their sub-folders; save the pipeline again with save_pretrained.")
    return found


def pipeline_kind(folder: Path, where: str) -> str:
    """CLASS_CONDITIONAL or TEXT_TO_IMAGE from model_index.json; anything else is a UserError naming what it has."""
    found = components(folder, where)
    unet = found.get("unet")
    if unet == "UNet2DModel" and "scheduler" in found:
        return CLASS_CONDITIONAL
    if unet == "UNet2DConditionModel" and "scheduler" in found and all(c in found for c in TEXT_COMPONENTS):
        return TEXT_TO_IMAGE
    listing = ", ".join(f"{k}: {v}" for k, v in sorted(found.items())) or "none"
    raise GeneratorConfigError(
        f"{where}: {folder} is a pipeline this generator cannot sample (components: {listing}). Supported: a "
        "class-conditional unet (UNet2DModel) with a scheduler, or a text-to-image pipeline with unet "
        "(UNet2DConditionModel), scheduler, vae, text_encoder and tokenizer (e.g. StableDiffusionPipeline).")


def lora_file(config: dict, where: str) -> Path | None:
    """The LoRA weight file of `config` (None without one): a .safetensors file, or the one in a folder."""
    if not config.get("lora"):
        return None
    path = resolve_path(config["lora"], "lora", where)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise GeneratorConfigError(f"{where}: config.lora {path} is not a .safetensors file.")
        return path
    files = sorted(path.glob("*.safetensors"))
    named = [f for f in files if f.name == "pytorch_lora_weights.safetensors"]
    if len(files) == 1 or named:
        return (named or files)[0]
    raise GeneratorConfigError(f"{where}: config.lora folder {path} holds {len(files)} .safetensors files "
                               f"({', '.join(f.name for f in files) or 'none'}); point config.lora at the file.")


def pipeline_files(folder: Path) -> list[Path]:
    """What loading reads: model_index.json and every file (not hidden) under the component folders it names."""
    files = [folder / INDEX]
    for name in sorted(components(folder, f"pipeline {folder}")):
        files += sorted(p for p in (folder / name).rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return files


_DIGESTS: dict = {}


def pipeline_sha256(folder: Path, lora: Path | None = None) -> str:
    """sha256 over the relative names and bytes of :func:`pipeline_files` (and the LoRA file), cached per process
    by the files' names, sizes and modification times (as ``external.bank_sha256`` caches a bank's)."""
    folder = Path(folder)
    named = [(str(f.relative_to(folder)), f) for f in pipeline_files(folder)]
    named += [(f"lora/{lora.name}", lora)] if lora is not None else []
    signature = (str(folder.resolve()), tuple((n, f.stat().st_size, f.stat().st_mtime_ns) for n, f in named))
    if signature not in _DIGESTS:
        digest = hashlib.sha256()
        for name, file in named:
            digest.update(name.encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _DIGESTS[signature] = digest.hexdigest()
    return _DIGESTS[signature]


def is_pipeline_entry(entry) -> bool:
    return (entry.target or "").partition(":")[0] == MODULE


def pipeline_identities(generator_entries: dict, datasets: list, image_sizes: list) -> dict:
    """{name: identity} for the pipeline entries among `generator_entries`: the entry's identity with
    ``pipeline_sha256`` added to its config (so it enters every key). Each entry is built once per dataset and size
    of the grid (JSON checks only: class embedding, prompts, sampler); every problem goes into one UserError."""
    out, problems = {}, []
    for name, entry in generator_entries.items():
        if not is_pipeline_entry(entry):
            continue
        where = f"pipeline of generator {name!r} ({entry.source})"
        try:
            folder = resolve_path(entry.config.get("path"), "path", where)
            pipeline_kind(folder, where)
            digest = pipeline_sha256(folder, lora_file(entry.config, where))
            pinned = entry.config.get("pipeline_sha256")
            if pinned and pinned != digest:
                problems.append(f"{where}: {folder} has sha256 {digest[:12]}…, the entry pins {pinned[:12]}…; "
                                "the folder changed: update or remove config.pipeline_sha256.")
            problems += _fit_problems(entry, datasets, image_sizes, where)
            out[name] = {**entry.identity, "config": {**entry.config, "pipeline_sha256": digest}}
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("Diffusers pipeline(s) do not fit the grid; nothing was started:\n  - "
                        + "\n  - ".join(dict.fromkeys(problems)))
    return out


def _fit_problems(entry, datasets: list, image_sizes: list, where: str) -> list[str]:
    """Problems of building the entry's generator for each dataset and size of the grid (no torch, no weights)."""
    from benchmark.core import registry
    from benchmark.data import dataset_source

    problems, wanted = [], entry.config.get("dataset")
    for dataset in datasets:
        if wanted is not None and dataset != wanted:
            problems.append(f"{where}: the entry is for dataset {wanted!r} (config dataset), the grid uses it with "
                            f"{dataset!r}. Exclude that combination or register an entry per dataset.")
            continue
        source = dataset_source(dataset)
        if not source.num_classes:
            continue  # a dataset that declares no class names: checked when its generator job builds the entry
        channels = (getattr(source, "info", None) or {}).get("n_channels", getattr(source, "channels", None)) or 1
        for size in image_sizes:
            try:
                registry.create("generator", entry, num_classes=source.num_classes,
                                image_shape=(channels, size, size))
            except UserError as exc:
                problems.append(f"{where}, {dataset}@{size}: {exc}")
    return problems


# ---- per-class settings ---------------------------------------------------------------------------------------------

def per_class(value, num_classes: int, label_names, what: str, where: str) -> dict[int, object]:
    """{class index: value} from a list in class order or a mapping keyed by class index or name."""
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        raise GeneratorConfigError(f"{where}: config.{what} must be a list in class order or a mapping from class "
                                   f"index or name, got {type(value).__name__}.")
    out = {}
    for key, item in value.items():
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            index = int(key)
        elif label_names is None:
            raise GeneratorConfigError(f"{where}: config.{what} names class {key!r}; set config.dataset so the "
                                       "class names can be read, or key it by class index.")
        elif key in label_names:
            index = list(label_names).index(key)
        else:
            raise GeneratorConfigError(f"{where}: config.{what} names class {key!r}, not a class of dataset (classes:"
                                       f" {', '.join(map(repr, label_names))}).")
        if not 0 <= index < num_classes:
            raise GeneratorConfigError(f"{where}: config.{what} has class index {index}; the dataset has "
                                       f"{num_classes} classes (0 to {num_classes - 1}).")
        out[index] = item
    return out


def dataset_label_names(dataset, num_classes: int, where: str):
    """The class names config.dataset declares (None without a dataset); its class count must be the grid's."""
    if dataset is None:
        return None
    from benchmark.generators.external import _dataset_facts

    names, _ = _dataset_facts(dataset)
    if names is not None and len(names) != num_classes:
        raise GeneratorConfigError(f"{where}: config.dataset {dataset!r} has {len(names)} classes, the grid's "
                                   f"dataset {num_classes}; use the entry with the dataset it was made for.")
    return names


def _number(cfg: dict, key: str, where: str, low: float, integer=False) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)) \
            or not np.isfinite(value) or value < low:
        kind = "an integer" if integer else "a number"
        raise GeneratorConfigError(f"{where}: config.{key} must be {kind} ≥ {low}, got {value!r}.")


# ---- the generators --------------------------------------------------------------------------------------------------

class DiffusersPipeline(Generator):
    """The registry target. ``DiffusersPipeline(num_classes, image_shape, path=…, …)`` is a
    :class:`ClassConditionalPipeline` or a :class:`TextToImagePipeline`, whichever the folder holds; both share
    config checks, the (no-)fit, the hash check, conversion to the dataset's images, and save/load."""

    artifact_class, kind = "DiffusersPipeline", ""
    trained_elsewhere = True  # the audit checks memorisation against the whole training split, and skips C_T
    defaults = DEFAULTS
    weight_names: tuple[str, ...] = ()  # save() writes config.json only: the weights stay in the pipeline folder

    def __new__(cls, num_classes: int = 1, image_shape=(1, 28, 28), **config):
        target = cls
        if cls is DiffusersPipeline and "path" in config:  # from_folder() passes nothing: it reads config.json
            folder = resolve_path(config.get("path"), "path", "pipeline generator")
            kind = pipeline_kind(folder, "pipeline generator")
            target = ClassConditionalPipeline if kind == CLASS_CONDITIONAL else TextToImagePipeline
        return super().__new__(target)

    def __init__(self, num_classes: int, image_shape=(1, 28, 28), **config):
        Generator.__init__(self, num_classes, image_shape, **config)
        self.cfg = resolve_config(self.artifact_class, DEFAULTS, config)
        self.where = f"{self.artifact_class} {self.cfg.get('path')!r}"
        self.folder = resolve_path(self.cfg["path"], "path", self.where)
        if pipeline_kind(self.folder, self.where) != self.kind:
            raise GeneratorConfigError(f"{self.where}: {self.folder} is not a {self.kind} pipeline.")
        if len(self.image_shape) != 3 or self.image_shape[1] != self.image_shape[2]:
            raise GeneratorConfigError(f"{self.where}: image_shape must be square (C, H, W), got {self.image_shape}.")
        self.label_names = dataset_label_names(self.cfg["dataset"], num_classes, self.where)
        self._check_sampling()
        self._check_kind()
        self.device = None  # chosen when the pipeline loads (choose_device imports torch; --dry-run does not)
        self.loaded_sha256 = None

    def _check_sampling(self) -> None:
        cfg = self.cfg
        if cfg["sampler"] not in SAMPLERS:
            raise GeneratorConfigError(f"{self.where}: unknown sampler {cfg['sampler']!r}; valid choices: "
                                       f"{', '.join(SAMPLERS)}.")
        if cfg["torch_dtype"] not in DTYPES:
            raise GeneratorConfigError(f"{self.where}: torch_dtype must be one of {', '.join(DTYPES)}, got "
                                       f"{cfg['torch_dtype']!r}.")
        if cfg["guidance_scale"] is None:
            cfg["guidance_scale"] = DEFAULT_GUIDANCE[self.kind]
        for key, low, integer in (("sampling_steps", 1, True), ("sample_batch_size", 1, True),
                                  ("grid_columns", 0, True), ("guidance_scale", 0, False), ("ddim_eta", 0, False),
                                  ("lora_scale", 0, False)):
            _number(cfg, key, self.where, low, integer)

    def _check_kind(self) -> None:
        raise NotImplementedError

    @property
    def generated_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the pipeline makes, before conversion to the dataset's."""
        raise NotImplementedError

    def conversion_note(self) -> str:
        made, wanted = self.generated_shape, tuple(self.image_shape)
        if made == wanted:
            return "none: the pipeline makes images of the dataset's size and channel count"
        steps = []
        if made[0] != wanted[0]:
            steps.append("colour to grey (PIL's ITU-R 601-2 luma)" if wanted[0] == 1 else
                         f"{made[0]} channel(s) to {wanted[0]} (grey repeated)")
        if made[1:] != wanted[1:]:
            steps.append(f"resized from {made[2]}×{made[1]} to {wanted[2]}×{wanted[1]} px (PIL bicubic)")
        return (f"the pipeline makes {made[0]}×{made[1]}×{made[2]} images; converted to the dataset's "
                f"{wanted[0]}×{wanted[1]}×{wanted[2]}: " + ", then ".join(steps))

    def _conform(self, images: np.ndarray) -> np.ndarray:
        from benchmark.data.images import conform_array

        return conform_array(images, self.image_shape[1], self.image_shape[0])

    def _verified_sha256(self) -> str:
        digest = pipeline_sha256(self.folder, lora_file(self.cfg, self.where))
        expected = self.cfg.get("pipeline_sha256")
        if expected and digest != expected:
            raise UserError(f"{self.where}: {self.folder} changed after this job was planned (sha256 {digest[:12]}… "
                            f"now, {expected[:12]}… in the job's key). Run the grid again: the job gets a new key.")
        return digest

    def load_pipeline(self) -> None:
        """Load the folder's networks (local files only) after checking its content hash."""
        digest = self._verified_sha256()
        self.device = choose_device(self.cfg["device"])
        self._load()
        self.loaded_sha256 = digest

    def _require_loaded(self) -> None:
        if self.loaded_sha256 is None:
            raise RuntimeError(f"{self.artifact_class}: call fit() or load() before sample()")

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, out_dir=None) -> dict:
        """Trains nothing: checks the cell's images against the generator, loads the pipeline; returns its log."""
        import time

        check_training_data(images, labels, self.image_shape, self.num_classes)
        started = time.perf_counter()
        self.load_pipeline()
        log = {"trained": False, "pipeline": str(self.folder), "pipeline_kind": self.kind,
               "pipeline_sha256": self.loaded_sha256, "generated_shape": list(self.generated_shape),
               "conversion": self.conversion_note(), "device": str(self.device), "training_data_verified": False,
               "training_data": "trained elsewhere: the harness cannot verify what the pipeline saw (no validation "
                                "or test image may have been among it)", "load_s": time.perf_counter() - started}
        columns = int(self.cfg["grid_columns"])
        if out_dir and columns > 0:
            rows = [self.sample(columns, k, seed) for k in range(self.num_classes)]
            log["grids"] = [str(save_grid(Path(out_dir) / "grid_final.png", np.concatenate(rows), columns))]
        return log

    def sampling_weights(self) -> dict[str, dict]:
        self._require_loaded()
        self.cfg["pipeline_sha256"] = self.loaded_sha256  # config.json pins the folder's content
        return {}

    def restore_weights(self, tensors: dict[str, dict]) -> None:
        self.folder = resolve_path(self.cfg["path"], "path", self.where)
        self.label_names = dataset_label_names(self.cfg["dataset"], self.num_classes, self.where)
        self._check_kind()
        self.load_pipeline()

    def load(self, folder) -> None:
        self.where = f"{self.artifact_class} artifact {folder}"
        super().load(folder)

    @classmethod
    def from_folder(cls, folder, device=None):
        """The generator that ``save()`` wrote to `folder` (of the kind its config.json names), pipeline loaded."""
        target = cls
        if cls is DiffusersPipeline:
            meta = read_json(Path(folder) / "config.json", f"generator artifact {folder}")
            kinds = {c.artifact_class: c for c in (ClassConditionalPipeline, TextToImagePipeline)}
            target = kinds.get(meta.get("class"), ClassConditionalPipeline)  # a wrong class: load() names it
        return super(DiffusersPipeline, target).from_folder(folder, device)

    def _torch_dtype(self):
        import torch

        return getattr(torch, self.cfg["torch_dtype"])

    def _dtype_argument(self) -> dict:
        """from_pretrained's dtype keyword: none at float32 (the default of every diffusers version)."""
        return {} if self.cfg["torch_dtype"] == "float32" else {"torch_dtype": self._torch_dtype()}


class ClassConditionalPipeline(DiffusersPipeline, DDPM):
    """A UNet2DModel taking class labels, sampled with DDPM's denoising loop (module docstring)."""

    artifact_class, kind = "ClassConditionalPipeline", CLASS_CONDITIONAL

    def _check_kind(self) -> None:
        cfg, where = self.cfg, self.where
        unet = read_json(self.folder / "unet" / "config.json", where)
        self.unet_config = unet
        for key in ("prompts", "negative_prompt", "lora", "resolution"):
            if cfg[key] is not None:
                raise GeneratorConfigError(f"{where}: config.{key} is for text-to-image pipelines; {self.folder} is "
                                           "a class-conditional one (it takes class labels, not prompts).")
        embeds, embed_type = unet.get("num_class_embeds"), unet.get("class_embed_type")
        if embeds is None and embed_type != "timestep":
            raise GeneratorConfigError(
                f"{where}: the UNet in {self.folder / 'unet'} has no class embedding (num_class_embeds and "
                "class_embed_type are unset), so it cannot make images of a chosen class. Use a UNet2DModel trained "
                "with num_class_embeds (and class labels), or a text-to-image pipeline with prompts.")
        if embed_type not in (None, "timestep"):
            raise GeneratorConfigError(f"{where}: class_embed_type {embed_type!r} takes class vectors, not labels; "
                                       "supported: an embedding table (num_class_embeds) or 'timestep'.")
        mapping = per_class(cfg["class_labels"] if cfg["class_labels"] is not None else {},
                            self.num_classes, self.label_names, "class_labels", where)
        self.labels = {k: mapping.get(k, k) for k in range(self.num_classes)}
        used = list(self.labels.values()) + ([cfg["null_class"]] if cfg["null_class"] is not None else [])
        bad = [v for v in used if isinstance(v, bool) or not isinstance(v, int) or v < 0
               or (embeds is not None and v >= embeds)]
        if bad:
            raise GeneratorConfigError(
                f"{where}: class label(s) {bad} have no class embedding (the UNet has num_class_embeds "
                f"{embeds}); map every dataset class with config.class_labels to a label below {embeds}.")
        if cfg["guidance_scale"] != 1 and cfg["null_class"] is None:
            raise GeneratorConfigError(f"{where}: guidance_scale {cfg['guidance_scale']} needs the UNet's 'no class' "
                                       "label: set config.null_class (the harness's ddpm uses num_classes) or "
                                       "guidance_scale: 1.")
        if unet.get("in_channels", 3) != unet.get("out_channels", 3):
            raise GeneratorConfigError(f"{where}: the UNet has in_channels {unet.get('in_channels')} but "
                                       f"out_channels {unet.get('out_channels')}; it must predict the image's noise.")

    @property
    def null_class(self) -> int:
        """The "no class" label; without one (guidance_scale 1, checked) DDPM's loop never calls the UNet with it."""
        return self.cfg["null_class"] if self.cfg["null_class"] is not None else self.labels[0]

    @property
    def generated_shape(self) -> tuple[int, int, int]:
        size = self.unet_config.get("sample_size") or self.image_shape[1]
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(self.unet_config.get("in_channels", 3)), int(size), int(size)

    def _load(self) -> None:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(str(self.folder), subfolder="unet", local_files_only=True,
                                           **self._dtype_argument())
        self.model, self.ema_model = unet.to(self.device).eval(), None

    def train_scheduler(self):
        """The folder's noise schedule (DDPM.sampling_scheduler builds the configured sampler from it)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(read_json(self.folder / "scheduler" / "scheduler_config.json", self.where))

    def sample(self, n: int, class_index: int, seed: int) -> np.ndarray:
        """`n` uint8 images of `class_index` in the dataset's shape; the noise is drawn from `seed` on the CPU."""
        import torch

        self._require_loaded()
        label = self.labels[check_class_index(class_index, self.num_classes)]
        cfg, dtype = self.cfg, self._torch_dtype()
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((n, *self.generated_shape), generator=gen)
        out = []
        with torch.no_grad():
            for chunk in noise.split(int(cfg["sample_batch_size"])):
                x = self._denoise(self.model, chunk.to(self.device, dtype), label, float(cfg["guidance_scale"]),
                                  cfg["sampler"], int(cfg["sampling_steps"]), gen)
                out.append(to_uint8(x))
        made = np.concatenate(out) if out else np.zeros((0, *self.generated_shape), np.uint8)
        return self._conform(made)


def latent_scheduler(sampler: str, config):
    """A scheduler of kind `sampler` with the noise schedule of a latent pipeline's `config` (no thresholding:
    latents are not bounded as pixels are)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    if sampler == "dpm_solver":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                       thresholding=False)
    return DDPMScheduler.from_config(config)


class TextToImagePipeline(DiffusersPipeline):
    """A text-to-image pipeline (e.g. StableDiffusionPipeline) called with one prompt per class (module docstring)."""

    artifact_class, kind = "TextToImagePipeline", TEXT_TO_IMAGE

    def _check_kind(self) -> None:
        cfg, where = self.cfg, self.where
        for key in ("class_labels", "null_class"):
            if cfg[key] is not None:
                raise GeneratorConfigError(f"{where}: config.{key} is for class-conditional pipelines; {self.folder} "
                                           "is a text-to-image one: give config.prompts instead.")
        for package in ("transformers",) + (("peft",) if cfg["lora"] else ()):
            if importlib.util.find_spec(package) is None:
                raise GeneratorConfigError(f"{where}: sampling a text-to-image pipeline (with LoRA weights: also "
                                           f"peft) needs the {package} package: pip install {package}.")
        if cfg["prompts"] is None:
            raise GeneratorConfigError(f"{where}: a text-to-image pipeline needs config.prompts: one prompt per "
                                       "class (a list in class order, or a mapping from class index or name).")
        prompts = per_class(cfg["prompts"], self.num_classes, self.label_names, "prompts", where)
        missing = [k for k in range(self.num_classes) if not isinstance(prompts.get(k), str) or not prompts[k].strip()]
        if missing:
            names = [repr(self.label_names[k]) if self.label_names else str(k) for k in missing]
            raise GeneratorConfigError(f"{where}: config.prompts has no prompt for class(es) {', '.join(names)}; "
                                       "give every class of the dataset a non-empty prompt.")
        self.prompts = prompts
        lora_file(cfg, where)
        if cfg["resolution"] is not None:
            _number(cfg, "resolution", where, 8, integer=True)
        unet = read_json(self.folder / "unet" / "config.json", where)
        vae = read_json(self.folder / "vae" / "config.json", where)
        self.vae_scale = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        size = unet.get("sample_size") or 64
        self.native = int(size[0] if isinstance(size, (list, tuple)) else size) * self.vae_scale
        self.latent_channels = int(unet.get("in_channels", 4))
        self.out_channels = int(vae.get("out_channels", 3))
        step = max(8, self.vae_scale)  # diffusers' text-to-image pipelines take sides divisible by 8
        if cfg["resolution"] is not None and cfg["resolution"] % step:
            raise GeneratorConfigError(f"{where}: config.resolution {cfg['resolution']} must be a multiple of {step} "
                                       f"(8, and the VAE's scale factor {self.vae_scale}).")

    @property
    def generated_shape(self) -> tuple[int, int, int]:
        side = int(self.cfg["resolution"] or self.native)
        return self.out_channels, side, side

    def _load(self) -> None:
        from diffusers import DiffusionPipeline

        index = read_json(self.folder / INDEX, self.where)
        extra = {"safety_checker": None} if "safety_checker" in index else {}
        pipe = DiffusionPipeline.from_pretrained(str(self.folder), local_files_only=True,
                                                 **self._dtype_argument(), **extra)
        pipe.scheduler = latent_scheduler(self.cfg["sampler"], pipe.scheduler.config)
        lora = lora_file(self.cfg, self.where)
        if lora is not None:
            pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="harness_lora",
                                   local_files_only=True)
            pipe.set_adapters(["harness_lora"], adapter_weights=[float(self.cfg["lora_scale"])])
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)

    def sample(self, n: int, class_index: int, seed: int) -> np.ndarray:
        """`n` uint8 images for the prompt of `class_index`, in the dataset's shape; latents drawn from `seed`."""
        import torch

        self._require_loaded()
        prompt = self.prompts[check_class_index(class_index, self.num_classes)]
        cfg, side = self.cfg, self.generated_shape[1]
        gen = torch.Generator().manual_seed(int(seed))
        latents = torch.randn((n, self.latent_channels, side // self.vae_scale, side // self.vae_scale), generator=gen)
        out = []
        for chunk in latents.split(int(cfg["sample_batch_size"])):
            result = self.pipe(prompt=[prompt] * len(chunk), negative_prompt=(
                [cfg["negative_prompt"]] * len(chunk) if cfg["negative_prompt"] else None),
                latents=chunk.to(self.device, self._torch_dtype()), height=side, width=side,
                num_inference_steps=int(cfg["sampling_steps"]), guidance_scale=float(cfg["guidance_scale"]),
                eta=float(cfg["ddim_eta"]), generator=gen, output_type="np")
            images = np.asarray(result.images, dtype=np.float32)
            out.append(np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))
        made = np.concatenate(out) if out else np.zeros((0, *self.generated_shape), np.uint8)
        return self._conform(np.ascontiguousarray(made))
