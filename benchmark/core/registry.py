"""Registries of datasets, generators (methods), backbones and grids: YAML entries pointing lazily at code.

Each entry is one YAML file under ``registry/<kind>s/`` (files starting with ``_`` are bases for ``include:``)::

    name: resnet18                       # defaults to the file's stem
    target: benchmark.run.backbones:TimmBackbone   # "module:attr", imported only by Entry.load()
    version: 1                           # enters every job key that uses the entry
    include: _timm_cnn.yaml              # optional: deep-merged base, this file wins
    config: {model_name: resnet18, ...}  # free-form, passed to the target (less the harness keys)

``create(kind, name, **arguments)`` is the one way to build an entry (timm's ``create_model``): its target called
with its config and the caller's arguments. ``HARNESS_KEYS`` are config keys the harness reads to plan and run an
entry; they enter the job key like the rest of the config but are never passed to the target.
Extra folders with the same layout can be added with ``GENMED_REGISTRY_PATH`` (``os.pathsep``-separated), which is
how users register their own datasets without touching the package. Listing never imports a target.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import importlib
import inspect
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from benchmark import REPO_ROOT
from benchmark.core.errors import UserError, unknown_name_error

KINDS = ("dataset", "generator", "backbone", "grid")
PACKAGE_REGISTRY = REPO_ROOT / "registry"
NAMED_KINDS = ("dataset", "backbone")  # their targets also take the entry's name (timm's model name, a dataset's)
# Config keys for the harness, not for the target (who reads them):
#   kind                  what the method is: baseline, generative, external, real_data (specs, grid, external)
#   uses_synthetic_ratio  false: the grid collapses the synthetic_ratio axis to 0 for the method (grid)
#   needs_held_back       the method adds held-back real images: left out at rare_count all (grid); the target
#                         declares it too, checked by generators.base.check_method_configs
#   bank_multiple         a generator's sample bank holds this many × the real rare count (generators.stage, identity)
#   audit_extractor       overrides of the generator audit's in-domain extractor config (generators.stage, plan)
HARNESS_KEYS = frozenset({"kind", "uses_synthetic_ratio", "needs_held_back", "bank_multiple", "audit_extractor"})


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
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror}.") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 and run "
                        "again.") from None
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


def read_with_includes(path: Path, resolve_include, merge=deep_merge, check=None, cycle: str = "include",
                       _seen: tuple = ()) -> dict:
    """The YAML mapping at `path` merged over its ``include:`` chain, this file winning (the one include resolver:
    registry entries and cluster profiles). ``resolve_include(ref, including_path) -> Path`` finds a base;
    ``check(path, data)`` validates each file's own mapping (raising UserError) before it is merged;
    ``merge(base, data)`` combines them. A cycle is an error naming the chain ("Circular {cycle}: a -> b -> a.")."""
    path = Path(path)
    real = path.resolve()
    if real in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, real))
        raise UserError(f"Circular {cycle}: {chain}.")
    data = load_yaml(path)
    data = {} if data is None else data
    if check is not None:
        check(path, data)
    data = dict(data)
    include = data.pop("include", None)
    if include is None or include == "":
        return data
    base = read_with_includes(resolve_include(include, path), resolve_include, merge, check, cycle, (*_seen, real))
    return merge(base, data)


def _entry_include(ref, path: Path) -> Path:
    base_path = (path.parent / str(ref)).resolve()
    if not base_path.exists():
        raise UserError(f"{path}: include {ref!r} not found (looked for {base_path}).")
    return base_path


def _entry_mapping(path: Path, data) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys (name, target, version, config), got {type(data).__name__}.")


def read_entry_file(path: Path) -> dict:
    """A YAML entry with its ``include:`` chain resolved (relative to the including file), deep-merged."""
    return read_with_includes(path, _entry_include, deep_merge, _entry_mapping)


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


def target_arguments(entry: Entry, config: dict | None = None) -> dict:
    """What `create` passes to the target from the config: `config` (default: the entry's) less ``HARNESS_KEYS``,
    plus ``name`` for datasets and backbones."""
    arguments = {k: v for k, v in (entry.config if config is None else config).items() if k not in HARNESS_KEYS}
    if entry.kind in NAMED_KINDS:
        arguments["name"] = entry.name
    return arguments


def create(kind: str, name: str | Entry, config: dict | None = None, **arguments):
    """Build the `kind` entry `name` (or an Entry): its target called with `config` (default: the entry's; e.g. the
    config recorded with a run) less the harness keys, and the caller's `arguments` (what only the caller knows,
    such as a generator's image shape). A keyword the target does not take is a UserError that names the entry and
    the keywords it accepts (targets taking ``**config`` check their keys themselves)."""
    entry = name if isinstance(name, Entry) else get(kind, name)
    target = entry.load()
    kwargs = {**target_arguments(entry, config), **arguments}
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            accepted = [p for p, v in signature.parameters.items()
                        if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
            given = [k for k in kwargs if k not in signature.parameters]
            close = {k: difflib.get_close_matches(k, accepted, n=1) for k in given}
            hints = "; ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
            raise UserError(f"{kind} {entry.name!r} ({entry.source}): its config does not fit {entry.target} "
                            f"({hints or exc}). It accepts: {', '.join(accepted)}; the harness keys "
                            f"({', '.join(sorted(HARNESS_KEYS))}) are read by the harness.") from None
    return target(**kwargs)
