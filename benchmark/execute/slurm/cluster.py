"""Cluster profiles (``slurm/*.yaml``) turned into submitit parameters; SLURM reachability: slurm/reachable.py.

A profile is one YAML file per resource class (``gpu-small``, ``cpu-collector``, …); every cluster fact (partition,
account, ``module load`` lines) lives there, never in code::

    include: gpu-small          # optional: another profile (name, or a path relative to this file); this file wins
    partition: gpu              # null = the cluster's default
    account: null
    qos: null
    gpus_per_node: 1
    tasks_per_node: 1           # processes per job (one per GPU for DDP)
    cpus_per_task: 8
    mem_gb: 32                  # per node; null = the cluster's default
    timeout_min: 120
    constraint: null            # e.g. "a100|h100"
    array_parallelism: 64       # array tasks of one submission running at once
    setup: ["module load cuda/12.4"]
    signal_delay_s: 90          # USR2 this long before the time limit (checkpoint + requeue)
    checkpoint_every_s: 600     # a classifier saves its training state at most this often (0 = after every epoch),
                                # and at the end of the epoch during which USR2 arrives
    jobs_per_device: 1          # jobs of an array task run at once on its device (worker processes; 1-task jobs)
    additional: {reservation: my-resv}   # any other sbatch option (key without the leading --)

Profiles are looked up by name in the folders of ``GENMED_SLURM_PROFILES`` (``os.pathsep``-separated, first match
wins) and then in the repository's ``slurm/``. Files whose name starts with ``_`` are bases for ``include:`` and are
not listed. Loading a profile imports only PyYAML; submitit is never imported here.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchmark import REPO_ROOT
from benchmark.core.errors import UserError, unknown_name_error
from benchmark.core.registry import read_with_includes

REPO_PROFILES = REPO_ROOT / "slurm"
PROFILES_ENV = "GENMED_SLURM_PROFILES"
SUFFIXES = (".yaml", ".yml")

# sbatch options that have their own profile key (or are set by the harness) and so may not hide in `additional`.
_RESERVED_ADDITIONAL = {
    "partition": "partition", "account": "account", "qos": "qos", "gpus_per_node": "gpus_per_node",
    "ntasks_per_node": "tasks_per_node", "ntasks": "tasks_per_node", "cpus_per_task": "cpus_per_task",
    "mem": "mem_gb", "time": "timeout_min", "constraint": "constraint", "signal": "signal_delay_s",
    "array": "array_parallelism", "dependency": None, "output": None, "error": None, "job_name": None,
}


@dataclass(frozen=True)
class ClusterProfile:
    """One resource class. Hashable (``setup`` and ``additional`` are tuples), so it can key a group of jobs."""

    name: str
    path: Path
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    constraint: str | None = None
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()
    signal_delay_s: int = 90
    checkpoint_every_s: int = 600
    jobs_per_device: int = 1
    additional: tuple[tuple[str, str | int | float | bool], ...] = ()
    description: str = ""

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``submitit.AutoExecutor(...).update_parameters(**...)``.

        Unset values are left out (the cluster's defaults apply). ``update_parameters`` accumulates across calls,
        so use one fresh executor per profile rather than re-parameterising a shared one. Generic keys
        (``timeout_min``, ``mem_gb``, ``cpus_per_task``, ``gpus_per_node``, ``tasks_per_node``) also apply to
        submitit's local executor; ``slurm_*`` keys are ignored there.
        """
        params: dict[str, Any] = {
            "timeout_min": self.timeout_min,
            "cpus_per_task": self.cpus_per_task,
            "tasks_per_node": self.tasks_per_node,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key) is not None:
                params[f"slurm_{key}"] = getattr(self, key)
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.additional:
            params["slurm_additional_parameters"] = dict(self.additional)
        return params

    def summary(self) -> str:
        """One line for logs and error messages: 'gpu-small (slurm/gpu-small.yaml): partition=gpu, 1 GPU, …'."""
        parts = [f"partition={self.partition or '(default)'}"]
        if self.account:
            parts.append(f"account={self.account}")
        if self.qos:
            parts.append(f"qos={self.qos}")
        if self.gpus_per_node:
            parts.append(f"{self.gpus_per_node} GPU/node")
        parts.append(f"{self.tasks_per_node} task(s) x {self.cpus_per_task} CPU")
        if self.mem_gb is not None:
            parts.append(f"{self.mem_gb:g} GB")
        parts.append(f"{self.timeout_min} min")
        return f"{self.name} ({self.path}): {', '.join(parts)}"


# key: (accepted types, wording for messages, minimum or None, whether null is allowed)
_SCHEMA: dict[str, tuple[tuple[type, ...], str, int | None, bool]] = {
    "partition": ((str,), "a string", None, True),
    "account": ((str,), "a string", None, True),
    "qos": ((str,), "a string", None, True),
    "gpus_per_node": ((int,), "an integer", 0, False),
    "tasks_per_node": ((int,), "an integer", 1, False),
    "cpus_per_task": ((int,), "an integer", 1, False),
    "mem_gb": ((int, float), "a number of GB", None, True),
    "timeout_min": ((int,), "an integer (minutes)", 1, False),
    "constraint": ((str,), "a string", None, True),
    "array_parallelism": ((int,), "an integer", 1, False),
    "setup": ((list,), "a list of shell lines", None, True),
    "signal_delay_s": ((int,), "an integer (seconds)", 0, False),
    "checkpoint_every_s": ((int,), "an integer (seconds; 0 = after every epoch)", 0, False),
    "jobs_per_device": ((int,), "an integer (jobs run at once on the task's device)", 1, False),
    "additional": ((dict,), "a mapping of sbatch options", None, True),
    "description": ((str,), "a string", None, True),
}
PROFILE_KEYS = tuple(_SCHEMA)
assert set(PROFILE_KEYS) <= {f.name for f in fields(ClusterProfile)}


def profile_dirs() -> list[Path]:
    """Folders searched for profiles, in order: ``$GENMED_SLURM_PROFILES`` entries, then the repository's slurm/."""
    extra = [Path(p).expanduser() for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p.strip()]
    return [*extra, REPO_PROFILES]


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)  # earlier folders win
    return found


def list_profiles() -> list[str]:
    """Sorted names of the available profiles (``_``-prefixed include bases left out)."""
    return sorted(name for name in _profile_files() if not name.startswith("_"))


def load_profile(name_or_path: str | os.PathLike) -> ClusterProfile:
    """The profile named ``name_or_path`` (see ``list_profiles()``), or the YAML file at that path."""
    path = _resolve(str(name_or_path), base=None)
    data = _read_with_includes(path)
    return _build(path, data)


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(SUFFIXES) or "/" in ref or os.sep in ref


def _resolve(ref: str, base: Path | None) -> Path:
    """A profile reference → file. Paths are relative to ``base``'s folder (an including file) or the cwd."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None:
            path = base.parent / path
        if not path.is_file():
            where = f"{base}: include {ref!r}" if base else f"Cluster profile file {ref!r}"
            raise UserError(f"{where} not found (looked for {path}).")
        return path
    files = _profile_files()
    if ref not in files:
        error = unknown_name_error("cluster profile", ref, list_profiles())
        if base is not None:
            raise UserError(f"{base}: include: {error}")
        folders = ", ".join(str(d) for d in profile_dirs())
        raise UserError(f"{error} Profiles are the *.yaml files in: {folders} (add folders with ${PROFILES_ENV}).")
    return files[ref]


def _read_with_includes(path: Path) -> dict:
    """The file's mapping merged over its ``include:`` chain (core.registry.read_with_includes): scalars and lists
    replace, ``additional`` merges, a description is never inherited."""
    return read_with_includes(path, _profile_include, _merge_profiles, _profile_mapping, "include in cluster profiles")


def _profile_mapping(path: Path, data) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path}: a cluster profile must be a mapping of keys ({', '.join(PROFILE_KEYS)}), "
                        f"got {type(data).__name__}.")
    _check_keys(path, data)
    include = data.get("include")
    if include is not None and (not isinstance(include, str) or not include.strip()):
        raise UserError(f"{path}: key 'include' must be a profile name or a path to a YAML file, got {include!r}.")


def _profile_include(ref: str, path: Path) -> Path:
    return _resolve(ref.strip(), base=path)


def _merge_profiles(base_data: dict, data: dict) -> dict:
    merged = {**base_data, **data}
    if isinstance(base_data.get("additional"), dict) and isinstance(data.get("additional"), dict):
        merged["additional"] = {**base_data["additional"], **data["additional"]}
    merged.pop("description", None)
    if "description" in data:
        merged["description"] = data["description"]
    return merged


def _check_keys(path: Path, data: dict) -> None:
    for key in data:
        if key == "include":
            continue
        if not isinstance(key, str) or key not in _SCHEMA:
            close = difflib.get_close_matches(str(key), [*PROFILE_KEYS, "include"], n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{path}: unknown key {key!r}.{hint} A cluster profile has: "
                            f"{', '.join((*PROFILE_KEYS, 'include'))}.")


def _check_value(path: Path, key: str, value: Any) -> Any:
    types, wording, minimum, nullable = _SCHEMA[key]
    if value is None:
        if nullable:
            return None
        raise UserError(f"{path}: key {key!r} must be {wording}, got null. Remove the line to use the default.")
    # bool is an int in Python, but `gpus_per_node: yes` is a mistake.
    if isinstance(value, bool) or not isinstance(value, types):
        raise UserError(f"{path}: key {key!r} must be {wording}, got {value!r} ({type(value).__name__}).")
    if minimum is not None and value < minimum:
        raise UserError(f"{path}: key {key!r} must be >= {minimum}, got {value!r}.")
    return value


def _build(path: Path, data: dict) -> ClusterProfile:
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[key] = _check_value(path, key, value)
    for key in ("partition", "account", "qos", "constraint"):
        if values.get(key) is not None and not values[key].strip():
            values[key] = None  # "" means unset, as null does
    if values.get("mem_gb") is not None and values["mem_gb"] <= 0:
        raise UserError(f"{path}: key 'mem_gb' must be > 0 (or null for the cluster's default), got {values['mem_gb']!r}.")

    setup = values.pop("setup", None) or []
    for i, line in enumerate(setup):
        if not isinstance(line, str):
            raise UserError(f"{path}: key 'setup' must be a list of shell lines (strings); item {i} is {line!r}.")
    values["setup"] = tuple(setup)

    additional = values.pop("additional", None) or {}
    items = []
    for key, value in additional.items():
        if not isinstance(key, str) or not key:
            raise UserError(f"{path}: key 'additional' has a non-string option name {key!r}.")
        norm = key.lstrip("-").replace("-", "_")
        if len(norm) == 1:
            raise UserError(f"{path}: 'additional' option {key!r}: use sbatch's long option name (submitit writes "
                            f"'#SBATCH --NAME=VALUE').")
        if norm in _RESERVED_ADDITIONAL:
            own = _RESERVED_ADDITIONAL[norm]
            fix = f"use the profile key {own!r} instead" if own else "the harness sets it per submission"
            raise UserError(f"{path}: 'additional' may not set sbatch option {key!r}: {fix}.")
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"{path}: 'additional.{key}' must be a string, number or true, got {value!r}.")
        items.append((norm, value))
    values["additional"] = tuple(sorted(items))

    if values.get("jobs_per_device", 1) > 1 and values.get("tasks_per_node", 1) > 1:
        raise UserError(f"{path}: jobs_per_device ({values['jobs_per_device']}) runs several one-process jobs on "
                        f"one device; it cannot be combined with tasks_per_node {values['tasks_per_node']} (one "
                        "job spread over several processes, DDP). Use one of the two.")
    delay, timeout = values.get("signal_delay_s", 90), values.get("timeout_min", 60)
    if delay >= timeout * 60:
        # Slurm would send the pre-timeout signal at job start: submitit treats the job as timed out at once.
        raise UserError(f"{path}: signal_delay_s ({delay}) must be well below the time limit "
                        f"(timeout_min {timeout} = {timeout * 60} s); e.g. signal_delay_s: {min(90, timeout * 15)}.")
    return ClusterProfile(name=path.stem, path=path, **values)

