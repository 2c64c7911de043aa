"""Job identity from the data (the data check): content hash and resolved rarity in every key, mixing feasibility,
and stale results (finished under an old key of the same job name).

`resolve_jobs` is the one function that turns expanded specs into keyed ones; every consumer of a grid gets it
through `benchmark.plan.grid.expand` (resolve=True), so launch/grid.py (dry-run, run, SLURM submit/status) and the
collector end with the same keys. For each (dataset, image size) whose data is on disk it reads the labels and the
content hash once (the hash cached on disk by path, size and mtime: benchmark.data.bundle.hash_cache_path), then
per spec resolves `minority` to a class index and `all` to a count (inside the fold's training part for
cross-validated jobs), checks that the count is possible and that every generative job's synthetic ratio fits
the generator's bank, and returns the spec with `resolved` filled. A dataset that is not on disk yet leaves its
specs unresolved (no key until it is downloaded: `resolve_jobs(..., download=True)`). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.specs import TRAINING_NOT_IN_KEY, canonical_value, short_hash
from benchmark.data import dataset_source
from benchmark.data.rarity import resolve_rare_class, resolve_rare_count


@dataclass(frozen=True)
class DataFacts:
    """What the data check reads of one dataset at one size: where it is, its content hash and its labels."""

    dataset: str
    size: int
    path: str
    sha256: str
    labels: dict  # split -> int64 labels
    num_classes: int

    def train_counts(self, labels: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(self.labels["train"] if labels is None else labels, minlength=self.num_classes)


_FACTS: dict = {}


def _signature(path: Path):
    """A cheap fingerprint of a dataset file (None — facts re-read — for folders, and for a file modified in the
    last seconds, which could change again within the same mtime tick: benchmark.data.bundle.is_settled)."""
    from benchmark.data.bundle import is_settled

    try:
        stat = path.stat()
    except OSError:
        return None
    if path.is_dir() or not is_settled(stat.st_mtime_ns):
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def data_facts(dataset: str, size: int, download: bool = False) -> DataFacts | None:
    """The dataset's facts, or None when it is not on disk and `download` is False (downloading it otherwise)."""
    source = dataset_source(dataset)
    if not source.is_present(size) and not download:
        return None
    source.ensure(size)
    path = Path(source.path(size))
    from benchmark.core import registry

    memo = (dataset, size, short_hash(registry.get("dataset", dataset).identity), _signature(path))
    if memo[-1] is not None and memo in _FACTS:
        return _FACTS[memo]
    labels = source.load_labels(size)
    num_classes = source.num_classes or int(max(int(v.max()) for v in labels.values() if len(v)) + 1)
    facts = DataFacts(dataset, size, str(path), source.content_sha256(size), labels, num_classes)
    if memo[-1] is not None:
        _FACTS[memo] = facts
    return facts


def marker_of(spec) -> tuple:
    """What a spec's rarity depends on: dataset, size, fold and the rare class and count as the grid spells them."""
    return (spec.dataset, spec.image_size, spec.k_folds, spec.fold, spec.fold_seed if spec.k_folds else 0,
            spec.rare_class, spec.rare_count)


class _Resolver:
    """Resolution of many specs against a few datasets, each fact and each rarity computed once."""

    def __init__(self, download: bool):
        self.download = download
        self.facts: dict = {}
        self.folds: dict = {}
        self.rarity: dict = {}
        self.feasible: dict = {}
        self.problems: list = []
        self.infeasible: dict = {}
        self.available: dict = {}  # rarity marker -> rare-class training images before subsampling
        self.no_pool: dict = {}    # method name -> keys of needs_held_back jobs left out (nothing is held back)

    def facts_for(self, dataset: str, size: int) -> DataFacts | None:
        if (dataset, size) not in self.facts:
            self.facts[(dataset, size)] = data_facts(dataset, size, self.download)
        return self.facts[(dataset, size)]

    def train_labels(self, spec, facts: DataFacts) -> np.ndarray:
        if not spec.k_folds:
            return facts.labels["train"]
        marker = (spec.dataset, spec.image_size, spec.k_folds, spec.fold, spec.fold_seed)
        if marker not in self.folds:
            from benchmark.data.folds import fold_labels

            self.folds[marker] = fold_labels(facts.labels, spec.k_folds, spec.fold, spec.fold_seed,
                                             f"dataset {spec.dataset!r}")["train"]
        return self.folds[marker]

    def resolve(self, spec):
        """`spec` with `resolved` filled (or unchanged when its data is absent, or None on a rarity problem)."""
        facts = self.facts_for(spec.dataset, spec.image_size)
        if facts is None:
            return spec
        marker = marker_of(spec)
        if marker not in self.rarity:
            self.rarity[marker] = self._rarity(spec, facts)
        resolved = self.rarity[marker]
        if resolved is None:
            return None
        if (spec.entries["generator"]["config"].get("needs_held_back")
                and resolved["rare_count"] >= self.available[marker]):
            self.no_pool.setdefault(spec.generator, set()).add(spec.key)  # its rare count keeps every image
            return None
        if spec.stage == "classifier":
            self._check_feasible(spec, facts, resolved)
        return spec if spec.resolved == resolved else replace(spec, resolved=resolved)

    def _rarity(self, spec, facts: DataFacts) -> dict | None:
        fold = f", fold {spec.fold}/{spec.k_folds}" if spec.k_folds else ""
        try:
            labels = self.train_labels(spec, facts)
            rare_class = resolve_rare_class(spec.rare_class, labels, facts.num_classes)
            available = self.available[marker_of(spec)] = int((labels == rare_class).sum())
            count = resolve_rare_count(spec.rare_count, available, f"{spec.dataset} (rare class {rare_class}{fold}): ")
        except UserError as exc:
            if str(exc) not in self.problems:
                self.problems.append(str(exc))
            return None
        return {"dataset_sha256": facts.sha256, "rare_class": rare_class, "rare_count": count}

    def _check_feasible(self, spec, facts: DataFacts, resolved: dict) -> None:
        """A generative job's synthetic ratio must fit the bank its generator job will sample."""
        if not spec.is_generative or spec.synthetic_ratio in (0, 0.0):
            return
        from benchmark.core.training_set import DEFAULT_BANK_MULTIPLE, bank_size, synthetic_count

        multiple = int(spec.entries["generator"]["config"].get("bank_multiple", DEFAULT_BANK_MULTIPLE))
        marker = (spec.dataset, spec.image_size, spec.k_folds, spec.fold, spec.fold_seed if spec.k_folds else 0,
                  resolved["rare_class"], resolved["rare_count"], spec.generator, spec.synthetic_ratio, multiple)
        if marker in self.feasible:
            if self.feasible[marker] is not None:
                self.infeasible[self.feasible[marker]].append(spec.name)
            return
        rare, n_rare = resolved["rare_class"], resolved["rare_count"]
        counts = self.train_counts_after_rarity(spec, facts, rare, n_rare)
        needed = synthetic_count(spec.synthetic_ratio, n_rare, counts)
        bank = bank_size(counts, rare, multiple)
        if needed <= bank:
            self.feasible[marker] = None
            return
        fold = f", fold {spec.fold}/{spec.k_folds}" if spec.k_folds else ""
        problem = (f"cell {spec.dataset}@{spec.image_size} (rare class {rare}, rare_count {spec.rare_count}{fold}) "
                   f"with {spec.generator}: synthetic_ratio {spec.synthetic_ratio!r} needs {needed} synthetic images "
                   f"but the generator's bank holds {bank} (bank_multiple {multiple} × {n_rare} real rare images, "
                   f"or the {int(counts.max()) - n_rare} that balance the classes, whichever is larger). Use a "
                   f"smaller ratio, raise bank_multiple in the generator's entry, or exclude the cell")
        self.feasible[marker] = problem
        self.infeasible[problem] = [spec.name]

    def train_counts_after_rarity(self, spec, facts: DataFacts, rare: int, n_rare: int) -> np.ndarray:
        counts = facts.train_counts(self.train_labels(spec, facts)).copy()
        counts[rare] = n_rare
        return counts

    def raise_problems(self) -> None:
        if self.problems:
            raise UserError("Impossible rarity settings; nothing was started:\n  - " + "\n  - ".join(self.problems))
        if self.infeasible:
            lines = [f"{problem}: {names[0]}" + (f" and {len(names) - 1} more job(s)" if len(names) > 1 else "")
                     for problem, names in self.infeasible.items()]
            raise UserError("Synthetic ratios the generator's bank cannot hold; nothing was started:\n  - "
                            + "\n  - ".join(lines))


def _resolve(jobs: list, download: bool) -> tuple[list, _Resolver]:
    resolver = _Resolver(download)
    out, seen = [], set()
    for spec in jobs:
        resolved = resolver.resolve(spec)
        if resolved is not None and resolved.key not in seen:
            seen.add(resolved.key)
            out.append(resolved)
    resolver.raise_problems()
    return out, resolver


def resolve_jobs(jobs: list, download: bool = False, left_out: list | None = None) -> list:
    """`jobs` keyed from their data (see the module docstring), deduplicated by key in order. With `download`,
    missing datasets are downloaded first (so every returned spec is resolved) and every generative method's
    config is checked by building it. Raises one UserError for impossible rarity or infeasible ratios.

    A method that adds held-back real images (``needs_held_back``, real_extra) at a rare count that keeps every
    rare-class image (the class size, like ``all``) has nothing to add: such jobs are left out, with one
    (reason, count) per method appended to `left_out`."""
    resolved, resolver = _resolve(jobs, download)
    if left_out is not None:
        from benchmark.core.training_set import no_held_back_note

        left_out.extend(no_held_back_note(name, len(keys)) for name, keys in sorted(resolver.no_pool.items()))
    if download:
        from benchmark.plan.checks import check_generator_configs

        check_generator_configs(resolved)
    return resolved


def data_lines(jobs: list, download: bool = False) -> list[str]:
    """One line per (dataset, size) of `jobs`: present (path, class counts, content hash) or will download; raises
    the same UserError as resolve_jobs."""
    _, resolver = _resolve(jobs, download)
    lines = []
    for (dataset, size), facts in sorted(resolver.facts.items()):
        if facts is None:
            source = dataset_source(dataset)
            url = getattr(source, "url", None)
            n = sum(1 for spec in jobs if (spec.dataset, spec.image_size) == (dataset, size))
            lines.append(f"{dataset}@{size}: will download" + (f" from {url(size)}" if url else "")
                         + f" into {source.path(size).parent}; its {n} job(s) get their keys after the download "
                           "(the data's content hash enters every key)")
            continue
        lines.append(f"{dataset}@{size}: present ({facts.path}; sha256 {facts.sha256[:12]}…; train class counts "
                     f"{facts.train_counts().tolist()})")
    return lines


# --- stale results --------------------------------------------------------------------------------------------

def _describe_change(old: dict, spec) -> str:
    """Why a finished run folder of the same name is not this spec's result (the first difference found)."""
    new = spec.to_dict()
    if old.get("results_version") != new["results_version"]:
        before = old.get("results_version")
        return (f"results version {before} → {new['results_version']}" if before is not None else
                f"made before results versions (now {new['results_version']})")
    old_sha = (old.get("resolved") or {}).get("dataset_sha256")
    new_sha = new["resolved"]["dataset_sha256"]
    if old_sha != new_sha:
        return f"dataset content changed (sha256 {str(old_sha)[:8]}… → {new_sha[:8]}…)"
    for kind, entry in new["entries"].items():
        before = (old.get("entries") or {}).get(kind) or {}
        if canonical_value(before.get("version")) != canonical_value(entry.get("version")):
            return f"{kind} {entry.get('name')!r} version {before.get('version')} → {entry.get('version')}"
        if canonical_value(before) != canonical_value(entry):
            return f"{kind} {entry.get('name')!r} config changed"
    if "training" in new:
        before = {k: v for k, v in (old.get("training") or {}).items() if k not in TRAINING_NOT_IN_KEY}
        after = {k: v for k, v in new["training"].items() if k not in TRAINING_NOT_IN_KEY}
        changed = sorted(k for k in set(before) | set(after)
                         if canonical_value(before.get(k)) != canonical_value(after.get(k)))
        if changed:
            return "training " + ", ".join(f"{k} {before.get(k)!r} → {after.get(k)!r}" for k in changed)
    if canonical_value(old.get("resolved")) != canonical_value(new["resolved"]):
        return f"rarity resolves differently ({old.get('resolved')} → {new['resolved']})"
    return "its key was made differently (an older harness)"


def stale_jobs(jobs: list, runs_dir: Path, status: dict | None = None) -> dict[str, str]:
    """{key: reason} for every job that is not done but whose name has a finished result under another key in
    `runs_dir` (other data content, results version, entry or training settings): that result is never counted
    for today's spec, and the job is re-run. Reads only run folders whose name is not a key of `jobs`."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    by_name = {}
    for spec in jobs:
        if not spec.is_resolved:
            continue
        if status is not None and status.get(spec.key) == "done":
            continue
        by_name.setdefault(spec.name, spec)
    if not by_name:
        return {}
    current = {spec.key for spec in jobs}
    found: dict[str, str] = {}
    finished = []
    with os.scandir(runs_dir) as entries:
        for entry in entries:
            if entry.name in current or not entry.is_dir():
                continue
            try:
                finished.append((-os.stat(Path(entry.path) / "result.json").st_mtime_ns, entry.name))
            except OSError:
                continue
    for _, folder in sorted(finished):  # the newest old result of a name explains it
        run_dir = runs_dir / folder
        try:
            old = json.loads((run_dir / "spec.json").read_text())
        except (OSError, ValueError):
            continue
        spec = by_name.get(old.get("name")) if isinstance(old, dict) else None
        if spec is None or spec.key in found or old.get("stage", spec.stage) != spec.stage:
            continue
        if status is None and (runs_dir / spec.key / "result.json").is_file():
            continue
        found[spec.key] = f"result under {folder[:16]}: {_describe_change(old, spec)}"
    return found


def check_data(jobs: list, download: bool = False) -> list[str]:
    """One line per (dataset, size): present (path, content hash, train class counts) or will download (its jobs
    get their keys after the download). Where the data is on disk (or after downloading, with `download`), every
    job's rarity is checked (inside the fold's training part for cross-validated jobs) and every generative job's
    synthetic ratio against its generator's bank; problems raise one UserError (benchmark.plan.identity)."""
    lines = data_lines(jobs, download)
    if download:
        from benchmark.plan.checks import check_generator_configs

        check_generator_configs(jobs)
    return lines
