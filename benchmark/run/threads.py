"""CPU threads per job: each worker process uses its share of the cores, never more (OpenMP oversubscription on a
busy CPU made the same training step 5-20x slower in our measurements, see docs/benchmarks.md). Local workers share
the machine's cores through a registry of core slots (``claim_cores``): one lock file per core in a per-user runtime
folder, held with ``fcntl.flock`` by a worker for its lifetime (the kernel frees a dead worker's slots), so a second
launcher's workers get only the cores left. Records carry the threads and the machine load (``cpu_usage``)."""

import errno
import fcntl
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

THREADS_ENV = "GENMED_TORCH_THREADS"
JOBS_PER_DEVICE_ENV = "GENMED_JOBS_PER_DEVICE"  # set in each jobs_per_device worker (benchmark.run.batch): K
WORKERS_ENV = "GENMED_LOCAL_WORKERS"  # set in each local worker (benchmark.execute.local): the launcher's --parallel
CLAIMED_ENV = "GENMED_CORE_SLOTS_CLAIMED"  # set in each local worker: the core slots it holds
SLOTS_ENV = "GENMED_CORE_SLOTS"  # the registry's size (default: the cores this process may use); 0 = no registry
REGISTRY_ENV = "GENMED_CORE_REGISTRY"  # the registry's folder (default: $XDG_RUNTIME_DIR/genmed-cores, else
#                                        /tmp/genmed-<uid>/cores)
_training: dict = {}  # apply_thread_limit's view at the start of the current job's training (for cpu_usage)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // max(1, workers))


def requested_threads(workers: int) -> int:
    """The torch threads each of `workers` local workers asks for: $GENMED_TORCH_THREADS, else its share of the
    cores (the core-slot registry may give it fewer: ``claim_cores``)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if not configured:
        return threads_per_worker(workers)
    if not configured.isdigit() or int(configured) < 1:
        raise _user_error(f"{THREADS_ENV}={configured!r} is not a positive whole number. Set it to the torch "
                          "threads of each worker process (e.g. 1), or unset it for a share of the cores.")
    return int(configured)


def threads_per_share(workers: int) -> int:
    """Torch threads of each of `workers` processes sharing one SLURM task (``jobs_per_device``): the task's CPUs
    ($SLURM_CPUS_PER_TASK, else the cores this process may use) divided among them, at least 1."""
    total = int(os.environ.get("SLURM_CPUS_PER_TASK") or cpu_count())
    return max(1, total // max(1, workers))


def apply_thread_limit() -> int:
    """Set torch's intra-op threads from $GENMED_TORCH_THREADS, else SLURM's CPUs per task; returns the count.
    Called as a job's training starts: also notes the machine load then (``cpu_usage``)."""
    import torch

    configured = os.environ.get(THREADS_ENV) or os.environ.get("SLURM_CPUS_PER_TASK")
    if configured:
        torch.set_num_threads(max(1, int(configured)))
    _training.update(load_start=_load())
    return torch.get_num_threads()


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def cpu_usage() -> dict:
    """The CPU side of a job's throughput, for its record's ``timings``: its torch threads, the worker processes
    sharing its cores by design (local ``--parallel`` × ``jobs_per_device``), the cores it may use and the
    machine's, the core slots its worker held (local workers; None elsewhere) and the machine's 1-minute load
    average when training started (``apply_thread_limit``) and now. ``benchmark.plan.cost`` reads it."""
    torch = sys.modules.get("torch")
    claimed = os.environ.get(CLAIMED_ENV)
    return {"torch_threads": torch.get_num_threads() if torch is not None else None,
            "workers": int(os.environ.get(WORKERS_ENV) or 1) * int(os.environ.get(JOBS_PER_DEVICE_ENV) or 1),
            "cores": int(os.environ.get("SLURM_CPUS_PER_TASK") or cpu_count()),
            "machine_cores": os.cpu_count() or 1, "core_slots": int(claimed) if claimed else None,
            "load_start": _training.get("load_start"), "load_end": _load()}


# ---- the machine's registry of core slots ----------------------------------------------------------------------

def slot_count() -> int:
    """The registry's size: $GENMED_CORE_SLOTS, else the cores this process may use."""
    configured = os.environ.get(SLOTS_ENV, "").strip()
    if not configured:
        return cpu_count()
    if not configured.isdigit():
        raise _user_error(f"{SLOTS_ENV}={configured!r} is not a whole number of cores. Set it to the cores the "
                          "harness's workers on this machine may share (0 turns the core-slot registry off).")
    return int(configured)


def registry_dir() -> Path:
    """The registry's folder, created private to the user (0700). A default folder that exists but is not a
    folder of this user's, or is writable by others, is refused: another user could take or fake its slots."""
    configured = os.environ.get(REGISTRY_ENV)
    if configured:
        return _private_dir(Path(configured), check_owner=False)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return _private_dir(Path(runtime) / "genmed-cores")
    user_dir = _private_dir(Path(tempfile.gettempdir()) / f"genmed-{os.getuid()}")
    return _private_dir(user_dir / "cores")


def _private_dir(path: Path, check_owner: bool = True) -> Path:
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise _user_error(f"The core-slot registry folder {path} cannot be created ({exc.strerror}). Set "
                          f"{REGISTRY_ENV} to a folder of your own, or {SLOTS_ENV}=0 to run without the registry.")
    import stat

    problem = ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder" if not stat.S_ISDIR(info.st_mode)
               else None)
    if problem is None and check_owner:
        problem = (f"owned by another user (uid {info.st_uid})" if info.st_uid != os.getuid()
                   else "writable by other users" if info.st_mode & 0o022 else None)
    if problem:
        raise _user_error(f"The core-slot registry folder {path} is {problem}, so another user could take or fake "
                          f"this machine's core slots. Remove it, or set {REGISTRY_ENV} to a folder of your own.")
    return path


def _user_error(message: str):
    from benchmark.core.errors import UserError

    return UserError(message)


def _open_slot(folder: Path, slot: int) -> int:
    path = folder / f"core-{slot}.lock"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        what = "a symbolic link, which is refused" if exc.errno == errno.ELOOP else exc.strerror
        raise _user_error(f"Cannot open the core slot {path} ({what}). Remove it, or set {REGISTRY_ENV} to "
                          f"another folder ({SLOTS_ENV}=0: no registry).")


def _holder(fd: int) -> str:
    """Who holds a slot, as its holder wrote it: 'pid <pid> on <host>' (empty while it is being written)."""
    try:
        words = os.pread(fd, 256, 0).decode(errors="replace").split()
    except OSError:
        words = []
    return f"pid {words[0]} on {words[1]}" if len(words) >= 2 else "a process starting up"


@dataclass
class CoreClaim:
    """The core slots one process holds (``claim_cores``), released by ``release`` or when the process dies."""

    wanted: int
    total: int                               # the registry's size (0: no registry)
    folder: Path | None
    slots: list = field(default_factory=list)
    busy: list = field(default_factory=list)   # holders of the slots it found taken
    _fds: list = field(default_factory=list, repr=False)

    @property
    def threads(self) -> int:
        """The torch threads to use: the slots held (1 when none was free); `wanted` without a registry."""
        return self.wanted if self.folder is None else max(1, len(self.slots))

    def warning(self) -> str | None:
        """A loud note when the process got fewer threads than it wanted (None otherwise)."""
        if self.folder is None or len(self.slots) >= self.wanted:
            return None
        holders = ", ".join(sorted(set(self.busy))[:6]) or "other processes"
        got = (f"only {len(self.slots)} of the {self.wanted} it wanted" if self.slots else
               "none: it runs with 1 torch thread on cores that others already use, so it trains slowly")
        return (f"WARNING: {len(self.busy)} of this machine's {self.total} core slots are held by other GenMed-Rare "
                f"workers ({holders}; registry {self.folder}), so this worker (pid {os.getpid()}) got {got}. Run "
                f"fewer workers at once (--parallel N in each launcher, N × threads ≤ {self.total}), or choose the "
                f"threads yourself: {THREADS_ENV}=N (threads per worker) with {SLOTS_ENV}=0 (no registry).")

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the only descriptor of the lock file releases its flock
        self._fds.clear()
        self.slots = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def claim_cores(wanted: int, total: int | None = None, folder: Path | None = None) -> CoreClaim:
    """Claim up to `wanted` free core slots of the registry (``total`` slots in `folder`; defaults: ``slot_count``,
    ``registry_dir``) for this process: each an exclusive, non-blocking ``flock`` kept until ``release`` or the
    process's death. With ``total`` 0 nothing is claimed and the claim's threads are `wanted`. A second pass after
    a moment retries taken slots (a launcher's ``free_slots`` holds each for microseconds)."""
    wanted = max(1, int(wanted))
    total = slot_count() if total is None else int(total)
    if total <= 0:
        return CoreClaim(wanted, 0, None)
    folder = registry_dir() if folder is None else _private_dir(Path(folder), check_owner=False)
    claim = CoreClaim(wanted, total, folder)
    stamp = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
    for attempt in range(2):
        claim.busy = []
        for slot in range(total):
            if len(claim.slots) >= wanted:
                return claim
            if slot in claim.slots:
                continue
            fd = _open_slot(folder, slot)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                claim.busy.append(_holder(fd))
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp.encode(), 0)
            claim.slots.append(slot)
            claim._fds.append(fd)
        if len(claim.slots) >= wanted or attempt:
            return claim
        time.sleep(0.05)
    return claim


def free_slots(total: int | None = None, folder: Path | None = None) -> CoreClaim:
    """The registry's state now, keeping nothing: each slot tried and let go at once (the result's ``slots`` are
    the free ones, its ``busy`` the holders of the others)."""
    total = slot_count() if total is None else int(total)
    if total <= 0:
        return CoreClaim(1, 0, None)
    folder = registry_dir() if folder is None else _private_dir(Path(folder), check_owner=False)
    state = CoreClaim(total, total, folder)
    for slot in range(total):
        fd = _open_slot(folder, slot)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state.slots.append(slot)
        except BlockingIOError:
            state.busy.append(_holder(fd))
        finally:
            os.close(fd)
    return state
