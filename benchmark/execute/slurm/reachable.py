"""Whether SLURM can be reached from here (``sbatch``, ``srun``, a controller answering ``sinfo``), said in one line."""

from __future__ import annotations

import shutil
import subprocess

from benchmark.core.errors import UserError


def slurm_available(timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether SLURM jobs can be submitted from here: ``sbatch`` (and ``srun``, which submitit's SLURM executor
    needs) on PATH and ``sinfo`` answering within ``timeout_s``. Returns (ok, one-line reason)."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        return False, "no SLURM here (sbatch not found on PATH)"
    missing = [tool for tool in ("sinfo", "srun") if shutil.which(tool) is None]
    if missing:
        return False, f"sbatch found but {' and '.join(missing)} not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        # A dead controller costs sinfo ~9 s of retries, an unreadable SLURM_CONF 60 s: say what it said so far.
        said = _first_line(exc.stderr)
        detail = f"no answer within {timeout_s:g} s" + (f"; {said}" if said else "")
        return False, f"sbatch found but no controller answers (sinfo: {detail})"
    except OSError as exc:
        return False, f"sbatch found but sinfo cannot run ({exc})"
    if proc.returncode != 0:
        detail = _first_line(proc.stderr) or _first_line(proc.stdout) or f"exit code {proc.returncode}"
        return False, f"sbatch found but no controller answers (sinfo: {detail})"
    partitions = [p for p in proc.stdout.split() if p]
    shown = ", ".join(partitions[:6]) + (", ..." if len(partitions) > 6 else "")
    return True, f"SLURM controller answers (partitions: {shown or 'none'})"


def require_slurm() -> None:
    """A UserError saying what to do unless slurm_available(): ``--executor slurm``, ``--wait`` and ``--cancel``."""
    ok, reason = slurm_available()
    if not ok:
        raise UserError(f"--executor slurm: {reason}. Run this where sbatch reaches your cluster (a login node), "
                        "start the local test cluster (see slurm/README.md), or use --executor local.")


def _first_line(text: str | bytes | None, limit: int = 160) -> str:
    """The telling line of a SLURM command's stderr (its 'fatal:' line, else the first), shortened, without the
    'sinfo: error:' prefixes: for one-line messages."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = next((ln for ln in reversed(lines) if "fatal:" in ln), lines[0])
    for prefix in ("sinfo:", "fatal:", "error:"):
        line = line.removeprefix(prefix).strip()
    return line if len(line) <= limit else line[:limit - 3] + "..."
