"""The report's generator audit and picture sheets: the short audit table (one line explaining each column shown)
and the generators' sheets (real beside synthetic; closest pairs), gathered from the run folders into the
collector's ``samples/`` folder so that a report collected later from records.csv alone still shows them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from benchmark import stats

SAMPLES_DIR = "samples"
SAMPLES_INDEX = "samples.json"  # {label: {"key": key, "seed": seed, "sheet": file, "closest": file}}

# The audit columns a reader needs, in order, each with the line that explains it (the rest stay in
# stats/audit.csv). Columns missing from the records are left out of the table.
AUDIT_BRIEF = (
    ("audit_reference_n", "reference n",
     "real rare-class training images (before rarity subsampling) the synthetic bank is compared with"),
    ("audit_n_synthetic", "synthetic n", "images in the generator's bank"),
    ("audit_domain_kid", "KID (in-domain)",
     "kernel inception distance in the features of a CNN trained on this dataset's training split; 0 = same "
     "distribution, lower is better"),
    ("audit_domain_kid_se", "± SE", "its jackknife standard error"),
    ("audit_domain_fid", "FID (in-domain)", "Fréchet distance in the same features (64 dimensions, so estimable "
                                            "from 128 images per set); lower is better"),
    ("audit_kid", "KID (generic)", "KID in the generic extractor's features (Inception when torch-fidelity and its "
                                    "weights are installed, otherwise a fixed random CNN; see stats/audit.csv)"),
    ("audit_fid", "FID", "Fréchet distance in the generic features; left out when a set is smaller than 2 × their "
                         "dimension (not estimable: 480 images for the 240-dim fallback, 4,096 for Inception)"),
    ("audit_domain_precision", "precision", "share of synthetic images inside the real images' k-NN manifold "
                                            "(fidelity; in-domain features)"),
    ("audit_domain_recall", "recall", "share of real images inside the synthetic images' manifold (diversity)"),
    ("audit_domain_coverage", "coverage", "share of real images with a synthetic image among their k nearest "
                                          "neighbours (diversity, robust to outliers)"),
    ("audit_copy_rate", "copy rate",
     "share of synthetic images closer (pixels) to a fit-set image than 95 % of fit-set images are to their own "
     "nearest neighbour: near-copies of training images"),
    ("audit_nn_pixel_min", "closest pixel distance", "smallest synthetic-to-training pixel distance (RMS on [0, 1])"),
    ("audit_ct", "C_T (data copying)", "Meehan et al.'s three-sample statistic: the bank's distances to the "
                                       "generator's training images against held-back real images' (in-domain "
                                       "features); strongly negative = closer than fresh real images, i.e. copying"),
    ("audit_ct_p", "C_T p", "one-sided p of copying (small when the bank is closer to the training images than "
                            "held-back real images are)"),
)


# ----------------------------------------------------------------------------------------------------------------
# Audit table
# ----------------------------------------------------------------------------------------------------------------

def audit_brief(audit: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(table, explanations): the few audit columns a reader needs per cell and generator, and one line for each
    column shown."""
    if audit is None or audit.empty:
        return pd.DataFrame(), []
    keys = [c for c in (*stats.CELL, "generator") if c in audit.columns and audit[c].nunique(dropna=False) > 1
            or c == "generator"]
    shown = [(col, label, why) for col, label, why in AUDIT_BRIEF
             if col in audit.columns and pd.to_numeric(audit[col], errors="coerce").notna().any()]
    table = audit[keys + [c for c, _, _ in shown]].copy()
    for col in ("audit_reference_n", "audit_n_synthetic"):  # counts, not measurements
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce").round().astype("Int64")
    table = table.rename(columns={c: label for c, label, _ in shown})
    return table, [f"**{label}**: {why}" for _, label, why in shown]


# ----------------------------------------------------------------------------------------------------------------
# Picture sheets
# ----------------------------------------------------------------------------------------------------------------

def sheet_sources(jobs, runs_dir: Path) -> dict:
    """{label: {"sheet": path, "closest": path, "key": key, "seed": seed}}: for each generator in each cell of the
    classifier jobs (dataset, size, rare class, rare count), the sheets of its lowest seed that has them; for an
    external bank, those of its cached audit (benchmark.generators.external)."""
    from benchmark.generators.sheets import CLOSEST_SHEET_PNG, SAMPLE_SHEET_PNG

    found: dict = {}
    for spec in sorted(jobs, key=lambda s: (getattr(s, "seed", 0), s.name)):
        label = f"{spec.generator} · {spec.dataset} · rare {spec.rare_count}"
        if label in found:
            continue
        key = spec.generator_key
        folder = Path(runs_dir) / key if key else None
        if key is None and (spec.entries["generator"].get("config") or {}).get("kind") == "external":
            key, folder = _external_audit(spec, Path(runs_dir))
        if folder is None or not (folder / SAMPLE_SHEET_PNG).is_file():
            continue
        found[label] = {"sheet": folder / SAMPLE_SHEET_PNG, "closest": folder / CLOSEST_SHEET_PNG,
                        "key": key, "seed": getattr(spec, "seed", None)}
    return found


def _external_audit(spec, runs_dir: Path) -> tuple[str | None, Path | None]:
    """(audit key, folder) of an external bank's cached audit, named in the job's record; (None, None) without one."""
    from benchmark.generators.external import AUDITS_DIR
    from benchmark.run import run_dir as rd

    try:
        record = rd.read_record(runs_dir / spec.key) or {}
    except rd.CorruptRecord:
        return None, None  # named by the records table already
    key = (record.get("audit") or {}).get("audit_key")
    return (key, runs_dir.parent / AUDITS_DIR / key) if key else (None, None)


def sheets_in(folder: Path) -> dict:
    """The sheets a collection left in ``folder/samples/``, in :func:`sheet_sources`' form (files present only),
    for :func:`copy_sheets` to bring along with records collected elsewhere; {} when the folder has no index, and
    a warning naming the index when it cannot be read (the report then shows no sheets from it)."""
    path = Path(folder) / SAMPLES_DIR / SAMPLES_INDEX
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
        if not isinstance(index, dict) or not all(isinstance(e, dict) for e in index.values()):
            raise ValueError("not a {label: {key, seed, sheet, closest}} object")
    except (OSError, ValueError) as exc:
        print(f"warning: unreadable picture-sheet index {path} ({exc}); the report shows no sheets from it",
              file=sys.stderr)
        return {}
    found = {}
    for label, entry in index.items():
        found[label] = {k: v for k, v in entry.items() if k not in ("sheet", "closest")}
        for kind in ("sheet", "closest"):
            sheet = _sheet_inside(Path(folder), entry.get(kind))
            if sheet is not None:
                found[label][kind] = sheet
            elif entry.get(kind) is not None:
                print(f"warning: {path} names {entry.get(kind)!r} for {label!r}, which is not a PNG file inside "
                      f"{Path(folder) / SAMPLES_DIR}; left out of the report", file=sys.stderr)
    return found


def _sheet_inside(folder: Path, rel) -> Path | None:
    """``folder/rel`` when it is a regular .png file inside ``folder/samples/`` (no symlink, no '..' out of it): an
    index is read from a results folder, which is not trusted to point the report at any other file."""
    if not isinstance(rel, str) or not rel.endswith(".png"):
        return None
    path = folder / rel
    root = (folder / SAMPLES_DIR).resolve()
    if path.is_symlink() or not path.is_file() or root not in path.resolve().parents:
        return None
    return path


def copy_sheets(sources: dict, out_dir: Path) -> dict:
    """Copy the sheets of :func:`sheet_sources` (run folders) or :func:`sheets_in` (another collection) into
    ``out_dir/samples/`` with an index; returns {label: {"key", "seed", "sheet": rel, "closest": rel}}."""
    from benchmark.run.run_dir import write_bytes_atomic

    folder = Path(out_dir) / SAMPLES_DIR
    index = {}
    for label, src in sources.items():
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label.replace(" · ", "_"))
        entry = {"key": src.get("key"), "seed": src.get("seed")}
        for kind in ("sheet", "closest"):
            if kind in src and Path(src[kind]).is_file():
                rel = f"{SAMPLES_DIR}/{stem}_{kind}.png"
                write_bytes_atomic(Path(out_dir) / rel, Path(src[kind]).read_bytes())
                entry[kind] = rel
        index[label] = entry
    if index or (folder / SAMPLES_INDEX).is_file():  # an earlier collection's sheets are never shown as this one's
        write_bytes_atomic(folder / SAMPLES_INDEX, (json.dumps(index, indent=1) + "\n").encode())
    return index


def load_sheets(folder: Path) -> dict:
    """The sheets indexed in ``folder/samples/`` as the report shows them: {label: {"key", "seed",
    "sheet": (rel, bytes), "closest": (rel, bytes)}}, files present only; {} when there are none."""
    loaded = {}
    for label, entry in sheets_in(folder).items():
        loaded[label] = dict(entry)
        for kind in ("sheet", "closest"):
            if kind in entry:
                loaded[label][kind] = (entry[kind].relative_to(Path(folder)).as_posix(), entry[kind].read_bytes())
    return loaded
