"""The cluster profile of each stage (generator, classifier, collector): from ``--cluster-profile``, the local test
cluster's default or the grid's ``stages:``. The profile files themselves are read by benchmark.execute.slurm.cluster."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.core.errors import UserError, unknown_name_error

STAGES = ("generator", "classifier", "collector")
NO_COLLECTOR = "none"  # --cluster-profile collector=none (or stages: {collector: none}): no collector job
LOCAL_CLUSTER_PROFILE = "local-cpu"
LOCAL_CLUSTER_MARK = "written by slurm/start-local-slurm.sh"  # first line of the local test cluster's slurm.conf


def needed_stages(jobs: list) -> tuple[str, ...]:
    """The stages a submission of ``jobs`` has: the generator stage only when there are generator jobs."""
    return (("generator",) if any(j.stage == "generator" for j in jobs) else ()) + ("classifier", "collector")


def parse_profile_overrides(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """``--cluster-profile`` values → (profile for every stage, {stage: profile}). Each value is ``NAME`` or
    ``STAGE=NAME``, several separated by commas: ``--cluster-profile gpu-small,collector=cpu-collector``."""
    everyone, per_stage = None, {}
    for value in values or []:
        for item in filter(None, (part.strip() for part in value.split(","))):
            stage, sep, name = item.partition("=")
            if not sep:
                if everyone not in (None, item):
                    raise UserError(f"--cluster-profile names two profiles for every stage ({everyone!r}, "
                                    f"{item!r}); give one, and STAGE=NAME for the others.")
                everyone = item
                continue
            stage, name = stage.strip(), name.strip()
            if stage not in STAGES:
                raise UserError(f"--cluster-profile {item!r}: {unknown_name_error('stage', stage, STAGES)}")
            if not name:
                raise UserError(f"--cluster-profile {item!r}: give a profile name after '='.")
            per_stage[stage] = name
    return everyone, per_stage


def grid_stage_profiles(grid_ref: str) -> tuple[dict[str, str], str]:
    """The grid file's ``stages:`` mapping (stage → cluster profile) and the file it came from."""
    from benchmark.core import registry

    if str(grid_ref).endswith((".yaml", ".yml")) or Path(grid_ref).is_file():
        entry = registry.entry_from_file("grid", Path(grid_ref))
    else:
        entry = registry.get("grid", grid_ref)
    stages = entry.config.get("stages") or {}
    if not isinstance(stages, dict):
        raise UserError(f"{entry.source}: 'stages' must map stages ({', '.join(STAGES)}) to cluster profile "
                        f"names, got {stages!r}.")
    for stage, name in stages.items():
        if stage not in STAGES:
            raise UserError(f"{entry.source}: stages: {unknown_name_error('stage', stage, STAGES)}")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{entry.source}: stages.{stage} must be a cluster profile name, got {name!r}.")
    return dict(stages), str(entry.source)


def is_local_test_cluster(conf: str | None = None) -> bool:
    """Whether SLURM_CONF is the single-node test cluster of slurm/start-local-slurm.sh."""
    path = Path(conf or os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
    try:
        with open(path) as fh:
            return LOCAL_CLUSTER_MARK in fh.readline()
    except OSError:
        return False


def stage_profiles(grid_ref: str, overrides: list[str] | None, stages: tuple[str, ...] = STAGES) -> dict:
    """The cluster profile of each stage: ``--cluster-profile STAGE=NAME``, then ``--cluster-profile NAME``, then
    ``local-cpu`` on the local test cluster, then the grid's ``stages:``. A stage with none is an error, except
    the collector: without a profile (or with ``none``) no collector job is submitted (its value is None)."""
    from benchmark.execute.slurm.cluster import list_profiles, load_profile

    everyone, per_stage = parse_profile_overrides(overrides)
    grid_stages, source = grid_stage_profiles(grid_ref)
    local = is_local_test_cluster()
    chosen = {}
    for stage in stages:
        if stage in per_stage:
            chosen[stage] = (per_stage[stage], f"--cluster-profile {stage}={per_stage[stage]}")
        elif everyone:
            chosen[stage] = (everyone, f"--cluster-profile {everyone}")
        elif local:
            chosen[stage] = (LOCAL_CLUSTER_PROFILE, "the default on the local test cluster")
        elif stage in grid_stages:
            chosen[stage] = (grid_stages[stage], f"{source}: stages.{stage}")
        elif stage == "collector":
            chosen[stage] = (NO_COLLECTOR, "")  # no collector job: run launch/collect.py when the jobs are done
        else:
            raise UserError(f"No cluster profile for the {stage} stage: grid {source} has no stages.{stage}. Pass "
                            f"--cluster-profile {stage}=NAME (or NAME for every stage), or add "
                            f"'stages: {{{stage}: NAME}}' to the grid. Profiles: {', '.join(list_profiles())}.")
    profiles = {}
    for stage, (name, why) in chosen.items():
        if stage == "collector" and name == NO_COLLECTOR:
            profiles[stage] = None
            continue
        try:
            profiles[stage] = load_profile(name)
        except UserError as exc:
            raise UserError(f"{why}: {exc}") from None
    return profiles
