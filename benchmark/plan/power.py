"""What a sweep needs before it runs: per metric, the paired seeds a two-sided paired t test needs to detect the
grid's equivalence margin against `none` with 80 % power at the Holm threshold of the first comparison (α / m, m =
the metric's comparisons), from the paired SD that earlier records of the grid measured (or the first study's,
stated), and what the classifier stage would cost at that many seeds (benchmark.plan.cost)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from benchmark.core.training import budget_label

ALPHA, POWER = 0.05, 0.80
BASELINE = "none"
# Paired SD of (method − none) over seeds measured by the first study (docs/study_v1.md, BreastMNIST, 20 rare images,
# resnet18, 3 epochs): the stated default where a grid has no finished records of its own yet.
DEFAULT_PAIRED_SD = {"test_auroc": 0.035, "test_thr_balanced_accuracy": 0.045, "test_thr_rare_sensitivity": 0.215}
DEFAULT_MARGINS = {"test_auroc": 0.02, "test_thr_balanced_accuracy": 0.02, "test_thr_rare_sensitivity": 0.05}


def t_test_power(n: int, effect: float, alpha: float) -> float:
    """Exact power of a two-sided one-sample (paired) t test with n pairs at standardised effect `effect`
    (noncentral t, scipy; statsmodels' TTestPower gives the same, but imports pandas on the dry-run path)."""
    from scipy import stats as sps

    df, nc = n - 1, effect * math.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_needed(delta: float, sd: float, alpha: float, power: float = POWER, most: int = 100_000) -> int | None:
    """Smallest n ≥ 2 of a two-sided paired t test detecting a mean difference `delta` at `alpha` with `power`;
    None when it is undefined (sd 0, delta 0)."""
    if not (sd > 0 and delta > 0):
        return None
    effect = delta / sd
    lo, hi = 2, 4
    while t_test_power(hi, effect, alpha) < power and hi < most:
        lo, hi = hi, hi * 2
    while lo < hi:  # power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if t_test_power(mid, effect, alpha) < power else (lo, mid)
    return lo


def _cell(spec: dict) -> tuple:
    return tuple(str(spec.get(k)) for k in ("dataset", "image_size", "rare_class", "rare_count", "backbone"))


def measured_paired_sd(records: list[dict], metric: str) -> tuple[float, int] | None:
    """Median over (cell, variant) of the SD of the paired differences (variant − none) over seeds, from finished
    classifier records (result.json dicts); (sd, comparisons) or None with no comparison of ≥ 3 pairs."""
    import statistics

    by: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        split, _, name = metric.partition("_")  # result.json holds {"test": {"auroc": …}, "val": {…}}
        spec, value = r.get("spec") or {}, ((r.get("metrics") or {}).get(split) or {}).get(name)
        if not (isinstance(value, (int, float)) and value == value):
            continue
        try:  # a record from another harness version whose settings no longer parse only leaves out its value
            budget = budget_label(spec.get("training") or {})
        except (TypeError, ValueError, KeyError):
            continue
        variant = (spec.get("generator"), str(spec.get("synthetic_ratio")))
        by[(_cell(spec), spec.get("fold", 0), budget)].setdefault(variant, {})[spec.get("seed")] = float(value)
    sds = []
    for variants in by.values():
        base = next((s for (g, _), s in variants.items() if g == BASELINE), None)
        if not base:
            continue
        for (g, _), seeds in variants.items():
            d = [seeds[s] - base[s] for s in seeds if s in base]
            if g != BASELINE and len(d) >= 3:
                sds.append(statistics.stdev(d))
    return (statistics.median(sds), len(sds)) if sds else None


def power_lines(jobs: list, runs_dir: Path, margins: dict | None = None) -> list[str]:
    """Lines for --dry-run (one per metric): paired SD (measured or stated), the seeds that detect the margin at
    the corrected α, the seeds the grid has, and the cost at the needed seeds."""
    from benchmark.plan.cost import _earlier_records, estimate_hours

    classifiers = [j for j in jobs if getattr(j, "stage", "") == "classifier"]
    if not classifiers or not any(j.generator == BASELINE for j in classifiers):
        return []
    seeds = sorted({j.seed for j in classifiers})
    comparisons = len({(j.dataset, j.image_size, j.rare_class, j.rare_count, j.backbone, j.fold, j.generator,
                        str(j.synthetic_ratio), budget_label(j.training))
                       for j in classifiers if j.generator != BASELINE})
    if not comparisons:
        return []
    alpha = ALPHA / comparisons
    _, totals = estimate_hours(classifiers, runs_dir)
    records = _earlier_records(runs_dir)
    lines = []
    for metric, default_sd in DEFAULT_PAIRED_SD.items():
        delta = float((margins or {}).get(metric, (margins or {}).get(metric.split("_", 1)[1],
                                                                      DEFAULT_MARGINS[metric])))
        measured = measured_paired_sd(records, metric)
        sd, source = (measured[0], f"measured: median of {measured[1]} comparison(s) in {runs_dir}") if measured \
            else (default_sd, "stated default: the first study's, docs/study_v1.md")
        n = seeds_needed(delta, sd, alpha)
        need = "undefined (paired SD 0)" if n is None else f"{n} paired seeds"
        cost = ", ".join(f"{device} ~{hours * n / len(seeds):,.1f} h" for device, hours in sorted(totals.items())
                         if hours > 0) if n is not None else ""
        lines.append(f"{metric}: paired SD {sd:.3f} ({source}); detecting Δ = {delta:g} (the margin) with "
                     f"{POWER:.0%} power at Holm's first α/m = {ALPHA:g}/{comparisons} needs {need} (this grid has "
                     f"{len(seeds)})" + (f"; at {n} seeds the classifier stage would take {cost}" if cost else ""))
    return lines
