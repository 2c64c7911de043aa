"""The house by stage: no import cycle inside benchmark/, core imports no later stage or plug-in, and the move
kept every job key (the keys of rare_sweep and its profiles, recorded before it, in tests/data/job_keys.json)."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"
KEYS_FILE = Path(__file__).with_name("data") / "job_keys.json"
GRIDS = [("rare_sweep", None), ("rare_sweep", "smoke"), ("rare_sweep", "study"), ("rare_sweep", "generators_smoke"),
         ("rare_sweep", "confound"),
         ("literature_check", None)]
LISTED = 200  # grids with at most this many jobs keep their full list (a failure names the changed jobs)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def benchmark_imports(path: Path, modules: set) -> set:
    """Every benchmark module `path` imports, at the top or inside a function (a lazy import is a dependency too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("benchmark"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("benchmark"):
            for alias in node.names:  # `from benchmark.x import y`: y is a module or a name in benchmark.x
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: benchmark_imports(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_benchmark():
    assert cycles(import_graph()) == []


def test_core_imports_only_core():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if not d.startswith("benchmark.core") and d != "benchmark")
           for m, deps in graph.items() if m.startswith("benchmark.core")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_import_graph_sees_lazy_and_submodule_imports(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from benchmark.plan import identity\n    import benchmark.core.errors\n")
    modules = {"benchmark.plan", "benchmark.plan.identity", "benchmark.core.errors"}
    assert benchmark_imports(mod, modules) == {"benchmark.plan.identity", "benchmark.core.errors"}


def expanded_keys() -> dict:
    """{grid label: sorted "name key" lines of every classifier and generator job} (pending data: 'unresolved:')."""
    from benchmark.plan.grid import expand, generator_jobs, load_grid

    out = {}
    for grid, profile in GRIDS:
        jobs = expand(load_grid(grid, profile))
        lines = sorted(f"{j.name} {j.key if j.is_resolved else 'unresolved:' + j.key}"
                       for j in [*jobs, *generator_jobs(jobs)])
        out[grid + (f"-{profile}" if profile else "")] = lines
    return out


def summarise(keys: dict) -> dict:
    return {label: {"n": len(lines), "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
                    **({"jobs": lines} if len(lines) <= LISTED else {})} for label, lines in keys.items()}


def test_every_job_key_is_the_recorded_one(data_env, tmp_path, monkeypatch):
    """Keys of rare_sweep, smoke, study, generators_smoke, confound and literature_check equal the recorded ones. A
    change that is meant to change keys re-records them: `python tests/test_layout.py --record` (say why in the
    commit)."""
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    recorded = json.loads(KEYS_FILE.read_text())
    now = summarise(expanded_keys())
    for label, want in recorded.items():
        got = now[label]
        if "jobs" in want:
            assert sorted(set(got["jobs"]) ^ set(want["jobs"])) == [], label
        assert (got["n"], got["sha256"]) == (want["n"], want["sha256"]), label
    assert set(now) == set(recorded)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import os
    import tempfile

    if not os.environ.get("GENMED_PIPELINE_DIR"):  # generators_smoke's pipeline (as tests/conftest.py makes it)
        from benchmark.generators.tiny_pipeline import write_tiny_class_pipeline

        os.environ["GENMED_PIPELINE_DIR"] = tempfile.mkdtemp(prefix="tiny_pipeline")
        write_tiny_class_pipeline(os.environ["GENMED_PIPELINE_DIR"])
    KEYS_FILE.parent.mkdir(exist_ok=True)
    KEYS_FILE.write_text(json.dumps(summarise(expanded_keys()), indent=1) + "\n")
    print(f"recorded {KEYS_FILE}")
