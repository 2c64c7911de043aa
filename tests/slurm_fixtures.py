"""The session fixture ``slurm_cluster``: a real SLURM cluster for the tests marked ``slurm`` (never a mock).

Order: a cluster named by ``$SLURM_CONF`` that answers ``sinfo`` (e.g. started by ``.ci/slurm-tests.sh``) is used as
is; then a local cluster already running in ``$GENMED_SLURM_DIR`` (default /tmp/genmed-slurm); otherwise
``slurm/start-local-slurm.sh`` starts one there (needs root; installs Debian packages when missing) and
``slurm/stop-local-slurm.sh`` stops it at the end of the session. A cluster that cannot start fails the session in
CI (``CI=true``) and skips the SLURM tests elsewhere, with the reason.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START = REPO / "slurm" / "start-local-slurm.sh"
STOP = REPO / "slurm" / "stop-local-slurm.sh"
START_TIMEOUT_S = 600  # a fresh machine installs ~35 MB of packages first


@dataclass(frozen=True)
class SlurmCluster:
    conf: str                # the SLURM_CONF the tests run against
    local_dir: Path | None   # the start-local-slurm.sh directory, when it is one
    started_here: bool       # this session started it (and stops it)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _sinfo_answers(conf: str | None) -> tuple[bool, str]:
    env = dict(os.environ)
    if conf:
        env["SLURM_CONF"] = conf
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=15,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, "sinfo not found"
    except subprocess.TimeoutExpired:
        return False, "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return True, proc.stdout.strip()


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"SLURM cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason=f"no SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running SLURM cluster; ``SLURM_CONF`` is set in ``os.environ`` for the session."""
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "LOCAL_SLURM_DIR")}
    conf = os.environ.get("SLURM_CONF")
    local_dir = Path(os.environ.get("GENMED_SLURM_DIR", "/tmp/genmed-slurm"))
    cluster = None
    if conf:
        ok, said = _sinfo_answers(conf)
        if ok:
            mine = Path(conf).resolve() == (local_dir / "etc" / "slurm.conf").resolve()
            cluster = SlurmCluster(conf, local_dir if mine else None, started_here=False)
        else:
            print(f"SLURM_CONF={conf} does not answer ({said}); trying the local cluster in {local_dir}")
    if cluster is None:
        local_conf = str(local_dir / "etc" / "slurm.conf")
        if Path(local_conf).is_file() and _sinfo_answers(local_conf)[0]:
            cluster = SlurmCluster(local_conf, local_dir, started_here=False)
    if cluster is None:
        if os.geteuid() != 0:
            _unavailable(f"none answers and starting one with {START.relative_to(REPO)} needs root")
        try:
            proc = subprocess.run(["bash", str(START), str(local_dir)], capture_output=True, text=True,
                                  timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            _unavailable(f"{START.name} did not finish within {START_TIMEOUT_S} s")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            _unavailable(f"{START.name} {local_dir} failed (exit {proc.returncode}):\n{tail}")
        cluster = SlurmCluster(str(local_dir / "etc" / "slurm.conf"), local_dir, started_here=True)
        for line in proc.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, _, value = line[len("export "):].partition("=")
                os.environ[key.strip()] = value.strip()
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        yield cluster
    finally:
        if cluster.started_here:
            subprocess.run(["bash", str(STOP), str(local_dir)], check=False, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=180)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
