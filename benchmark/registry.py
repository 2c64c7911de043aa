"""Registries of datasets, generators (methods), backbones and grids: YAML entries pointing lazily at code.

Each entry is one YAML file under ``registry/<kind>s/`` (files starting with ``_`` are bases for ``include:``)::

    name: resnet18                       # defaults to the file's stem
    target: benchmark.backbones:TimmBackbone   # "module:attr", imported only by Entry.load()
    version: 1                           # enters every job key that uses the entry
    include: _timm_cnn.yaml              # optional: deep-merged base, this file wins
    config: {model_name: resnet18, ...}  # free-form, passed to the target

Extra folders with the same layout can be added with ``GENMED_REGISTRY_PATH`` (``os.pathsep``-separated), which is
how users register their own datasets without touching the package. Listing never imports a target.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from benchmark.errors import UserError, unknown_name_error

KINDS = ("dataset", "generator", "backbone", "grid")
PACKAGE_REGISTRY = Path(__file__).resolve().parent.parent / "registry"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    version: Any
    target: str | None = None
    config: dict = field(default_factory=dict, compare=False, hash=False)
    description: str = ""
    source: str = ""

    def load(self):
        """Import and return the object named by ``target`` ("module:attr")."""
        if not self.target:
            raise UserError(f"{self.kind} {self.name!r} ({self.source}) has no 'target' to load.")
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr) if attr else module
        except (ImportError, AttributeError) as exc:
            raise UserError(
                f"{self.kind} {self.name!r} ({self.source}): cannot load target {self.target!r}: {exc}"
            ) from exc

    @property
    def identity(self) -> dict:
        """What of this entry enters a job key: name, version and config (never the source path)."""
        return {"name": self.name, "version": self.version, "config": self.config}


class Registry:
    """Name → Entry for one kind. A duplicate name is an error, never a silent overwrite."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, entry: Entry) -> Entry:
        if entry.name in self._entries:
            first = self._entries[entry.name].source
            raise UserError(
                f"Duplicate {self.kind} name {entry.name!r}: defined in {first} and again in {entry.source}. "
                "Rename one of them."
            )
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._entries) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style pattern, like ``timm.list_models("res*")``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self) -> Iterable[Entry]:
        return (self._entries[n] for n in self.list())


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error names the file, line and column."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror}.") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"Malformed YAML at {where}: {problem}. Fix the file and run again.") from exc


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_entry_file(path: Path, _seen: tuple = ()) -> dict:
    """A YAML entry with its ``include:`` chain resolved (relative to the including file)."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise UserError(f"Circular include: {chain}.")
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys (name, target, version, config), got {type(data).__name__}.")
    include = data.pop("include", None)
    if include:
        base_path = (path.parent / include).resolve()
        if not base_path.exists():
            raise UserError(f"{path}: include {include!r} not found (looked for {base_path}).")
        data = deep_merge(read_entry_file(base_path, (*_seen, path.resolve())), data)
    return data


def entry_from_file(kind: str, path: Path) -> Entry:
    data = read_entry_file(path)
    known = {"name", "target", "version", "config", "description"}
    if kind == "grid":
        return Entry(kind, data.get("name") or path.stem, data.get("version", 1), None, data,
                     data.get("description", ""), str(path))
    unknown = set(data) - known
    if unknown:
        raise UserError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; an entry has {', '.join(sorted(known))}."
        )
    if "version" not in data:
        raise UserError(f"{path}: every {kind} entry needs a 'version' (it enters the job key). Add 'version: 1'.")
    if not isinstance(data.get("target"), str) or ":" not in data["target"]:
        raise UserError(f"{path}: 'target' must be a string 'module:attr', got {data.get('target')!r}.")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise UserError(f"{path}: 'config' must be a mapping, got {type(config).__name__}.")
    return Entry(kind, str(data.get("name") or path.stem), data["version"], data["target"], config,
                 data.get("description", ""), str(path))


def registry_roots() -> list[Path]:
    roots = [Path(os.environ.get("GENMED_REGISTRY", PACKAGE_REGISTRY))]
    extra = os.environ.get("GENMED_REGISTRY_PATH", "")
    roots += [Path(p) for p in extra.split(os.pathsep) if p]
    return roots


@lru_cache(maxsize=None)
def _cached_registry(kind: str, roots: tuple[Path, ...]) -> Registry:
    registry = Registry(kind)
    for root in roots:
        folder = root / f"{kind}s"
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            if not path.name.startswith("_"):
                registry.register(entry_from_file(kind, path))
    return registry


def get_registry(kind: str) -> Registry:
    """The registry of `kind`, read once per process from the registry folders."""
    return _cached_registry(kind, tuple(registry_roots()))


def get(kind: str, name: str) -> Entry:
    return get_registry(kind).get(name)


def list_entries(kind: str, pattern: str = "*") -> list[str]:
    return get_registry(kind).list(pattern)
