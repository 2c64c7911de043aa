"""A run folder (``runs/<key>/``): its file names, its status, the lock that lets one process at a time work in it,
corrupt records, and the one atomic writer for files that other processes read.

Status of a folder (``status``), from its files only:
  done      ``result.json`` parses and has the required fields (``REQUIRED_FIELDS``) of its key
  corrupt   ``result.json`` exists but does not parse or lacks a required field (a torn write, a full disk, a hand
            edit): never counted as done; the next run of the job moves it aside (``result.json.corrupt-<UTC time>``,
            never deleted) and runs the job again
  running   another live process holds the folder's lock (a job running now, here or on another node)
  blocked   ``error.json`` written by the SLURM launcher for a job that SLURM cancelled because a job it depended on
            failed or was cancelled (the file names that dependency: ``blocked_by``)
  failed    ``error.json`` (a failed attempt), no valid result
  pending   none of these

The lock (``lock`` in the folder): a job takes ``fcntl.flock(LOCK_EX)`` on it before it reads or writes anything
else there, and writes into it who holds it (host, pid, SLURM job id, start time). A second process that finds the
lock held exits "running elsewhere" without touching the folder. The kernel releases a flock when its process dies
(SIGKILL, out of memory, node reboot), so there is no stale-lock rule on a local filesystem; the file itself stays
(removing it would race with a process that has just opened it). On network filesystems see ``lock``.

Staging (``begin_staging``, ``commit_staged``): a run writes its artifacts (weights, predictions, a generator's
bank, model and audit files) into ``.staging/`` in its folder, never over the files of an earlier record; when the job
succeeded its record — with every staged file's sha256 in ``artifacts`` — is written there too (the commit point),
then the files are moved in and ``result.json`` last. A failed run discards ``.staging/``; a crash after the commit
point is rolled forward by the next process that takes the lock (``recover_staging``). So a failed ``--force``
re-run leaves the old record with its own artifacts, and a new record is never seen beside old artifacts.

Permissions (``apply_results_mode``): the results tree holds real patient images (audit PNGs, sample sheets, the
HTML report, TensorBoard images), model weights and per-image predictions, so every process of the harness creates
it private to the user — folders 0700, files 0600 (umask 077) — unless ``GENMED_RESULTS_MODE=group`` widens it to
the user's group (0750 / 0640, umask 027); it is never world-readable. ``check_job_files_folder`` refuses a
``logs/`` folder (where submitit's pickled job files wait to be unpickled by the job) that anyone else can write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from benchmark.core.status import BLOCKED, CORRUPT, DONE, FAILED, PENDING, RUNNING  # noqa: F401 (rd.DONE …)

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
SPEC_FILE = "spec.json"
STATE_DIR = "state"
PROGRESS_FILE = "progress.json"  # inside STATE_DIR: the epoch the saved training state belongs to
LOCK_FILE = "lock"
STAGING_DIR = ".staging"        # a run's artifacts and record before they are swapped in (module docstring)
ARTIFACTS_FIELD = "artifacts"   # the record's {relative path: sha256} of the files it swapped in
# what a record from before staging (no ``artifacts``) had beside it: removed when a new record does not name them
LEGACY_ARTIFACTS = ("model.safetensors", "predictions.npz", "samples.npz", "model")
UNLOADABLE_SUFFIX = ".unloadable-"  # state.unloadable-20261207T050000.000000Z: a saved state that did not load
RESULTS_ENV = "GENMED_RESULTS_DIR"  # the results root when no --results is given; else ./results
RESULTS_HELP = f"results root (default: ${RESULTS_ENV} or ./results)"
CORRUPT_SUFFIX = ".corrupt-"     # result.json.corrupt-20261201T101500Z
REQUIRED_FIELDS = ("schema", "key", "name", "stage", "spec")  # every record (classifier and generator)
REQUIRED_BY_STAGE = {"classifier": ("metrics",)}

RUNNING_ELSEWHERE = "running elsewhere"  # what execute() returns when another process holds the lock

# After a requeue the previous run of the same SLURM job may still hold the lock for SLURM's KillWait: wait for it.
PREDECESSOR_WAIT_S = float(os.environ.get("GENMED_LOCK_PREDECESSOR_WAIT_S", "180"))
LOCK_PATIENCE_S = 2.0  # a status probe (``lock_holder``) holds the lock for microseconds: retry this long first


def results_root(path: str | os.PathLike | None = None) -> Path:
    """The results root: `path`, else $GENMED_RESULTS_DIR (an empty value counts as unset), else ./results."""
    return Path(path or os.environ.get(RESULTS_ENV) or "results")


RESULTS_MODE_ENV = "GENMED_RESULTS_MODE"
RESULTS_MODES = {"private": 0o077, "group": 0o027}  # mode -> umask: 0700/0600, or 0750/0640; never world


def results_umask() -> int:
    """The umask of the results tree: $GENMED_RESULTS_MODE (private, the default, or group)."""
    from benchmark.core.errors import UserError

    mode = (os.environ.get(RESULTS_MODE_ENV) or "private").strip().lower()
    if mode not in RESULTS_MODES:
        raise UserError(f"${RESULTS_MODE_ENV} is {os.environ.get(RESULTS_MODE_ENV)!r}; use private (folders 0700, "
                        "files 0600: the default) or group (0750 / 0640: readable by your group). Results are "
                        "never made world-readable.")
    return RESULTS_MODES[mode]


def apply_results_mode() -> int:
    """Set this process's umask to the results mode (inherited by its worker processes); returns the old one."""
    return os.umask(results_umask())


def wider_than_mode(folder: Path) -> str | None:
    """A warning when an existing folder of the harness (made before this setting, or by hand) lets more people in
    than the results mode allows; None otherwise. Nothing is changed."""
    import stat as stat_mod

    try:
        mode = stat_mod.S_IMODE(os.stat(folder).st_mode)
    except OSError:
        return None
    extra = mode & results_umask()
    if not extra:
        return None
    fix = f"chmod -R {'g-w,o-rwx' if results_umask() == 0o027 else 'go-rwx'} {folder}"
    return (f"{folder} has mode {mode:04o}: people other than you can read what it holds (real patient images, "
            f"weights, predictions). Fix: {fix} (${RESULTS_MODE_ENV}, see benchmark/run/run_dir.py)")


def check_job_files_folder(folder: Path) -> None:
    """Refuse a folder of submitit job files (``logs/``) — or its parent, which could swap it — that is a symbolic
    link, not yours, or writable by your group or others: whoever can write there can replace a pickled job file
    and run code as you. Raises a UserError with the fix."""
    import stat as stat_mod

    from benchmark.core.errors import UserError

    for path in (Path(folder), Path(folder).parent):
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        mode = stat_mod.S_IMODE(st.st_mode)
        if stat_mod.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            what = "is a symbolic link" if stat_mod.S_ISLNK(st.st_mode) else f"belongs to uid {st.st_uid}, not you"
            raise UserError(f"{path} {what}; it holds (or contains) submitit's pickled job files, which jobs unpickle "
                            "and run. Use a results folder of your own (--results).")
        if mode & 0o022:
            who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[mode & 0o022]
            made = "0750" if results_umask() == 0o027 else "0700"
            raise UserError(f"{path} is writable by {who} (mode {mode:04o}); it holds (or contains) submitit's "
                            "pickled job files, so anyone who can write there could run code as you. Fix: "
                            f"chmod go-w {path} (the harness creates it {made}).")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ atomic writes
def temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden temporary name beside ``path``, unique across processes, nodes and containers sharing the folder
    (a pid alone collides across hosts): host, pid and a random token."""
    path = Path(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """A temporary path beside ``path`` for a writer that needs a file name (numpy, safetensors, pandas, a
    download): when the ``with`` block succeeds the file is fsynced, given the results mode's permissions
    (``results_umask``) and renamed over ``path`` (readers never see a partial file); when it raises, the temporary file is removed and ``path`` is left as it was. ``suffix``
    ends the temporary name (numpy's savez appends ``.npz`` to any other)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~results_umask())  # writers that pick their own mode (safetensors: 0600) included
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` via a temporary file in the same folder + fsync + rename (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def replace_dir(tmp: Path, folder: Path) -> None:
    """Swap a fully written folder ``tmp`` in as ``folder``: the old one (if any) is renamed aside first and
    removed after, so ``folder`` is at every moment either the old complete folder or the new one."""
    import shutil

    tmp, folder = Path(tmp), Path(folder)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, payload: dict) -> None:
    """JSON (indented, sorted keys) written atomically (``write_bytes_atomic``)."""
    write_bytes_atomic(path, json.dumps(payload, indent=1, sort_keys=True, default=str).encode())


def utc_stamp() -> str:
    """A UTC time for file names: 20261207T050000.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def move_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` (a file or folder) to ``<path><suffix><UTC time>`` (kept for inspection); returns the name."""
    path = Path(path)
    target = path.with_name(f"{path.name}{suffix}{utc_stamp()}")
    os.replace(path, target)
    return target


# ------------------------------------------------------------------------------------------------ staging
def staging_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STAGING_DIR


def begin_staging(run_dir: Path) -> Path:
    """(The lock held.) An empty ``.staging/`` for this run's artifacts, after finishing or discarding what an
    earlier process left there (``recover_staging``)."""
    recover_staging(run_dir)
    staged = staging_dir(run_dir)
    staged.mkdir(parents=True, exist_ok=True)
    return staged


def discard_staging(run_dir: Path) -> None:
    """Remove ``.staging/`` (a failed run's artifacts): the folder keeps its earlier record and artifacts."""
    import shutil

    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)


def sha256_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB blocks); the one file-hashing loop of the harness."""
    import hashlib

    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_hashes(folder: Path) -> dict:
    """{path relative to `folder` (posix): sha256} of every file under `folder` but a record; symlinks refused."""
    folder = Path(folder)
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise UnsafeRunFolder(f"{path} is a symbolic link; a run's artifacts are plain files")
        if path.is_file() and path.relative_to(folder).as_posix() != RESULT_FILE:
            hashes[path.relative_to(folder).as_posix()] = sha256_file(path)
    return hashes


def commit_staged(run_dir: Path, record: dict) -> dict:
    """(The lock held.) Swap the staged artifacts in with `record`, which gets their hashes (``artifacts``): the
    record is written to ``.staging/`` first (the commit point), then ``_roll_forward``. Returns the record. An
    OSError before the commit point (a full disk) leaves the folder's earlier record and artifacts as they were."""
    staged = staging_dir(run_dir)
    record = {**record, ARTIFACTS_FIELD: artifact_hashes(staged) if staged.is_dir() else {}}
    write_json_atomic(staged / RESULT_FILE, record)
    _roll_forward(run_dir)
    return record


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _roll_forward(run_dir: Path) -> None:
    """Move a committed ``.staging/`` in: the old record goes first (never beside new artifacts), then each staged
    entry replaces its namesake, the old record's artifacts that the new one lacks are removed, the record last."""
    import shutil

    run_dir, staged = Path(run_dir), staging_dir(run_dir)
    try:
        old = read_record(run_dir) or {}
    except CorruptRecord:
        old = {}
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    for entry in sorted(staged.iterdir()):
        if entry.name == RESULT_FILE:
            continue
        target = run_dir / entry.name
        if entry.is_dir() and not entry.is_symlink():
            replace_dir(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    new = json.loads((staged / RESULT_FILE).read_text()).get(ARTIFACTS_FIELD) or {}
    kept = {name.split("/")[0] for name in new}
    named = old.get(ARTIFACTS_FIELD) if ARTIFACTS_FIELD in old else (LEGACY_ARTIFACTS if old else ())
    for name in {str(n).split("/")[0] for n in (named or ())} - kept:
        stale = run_dir / name
        if name not in ("", ".", "..", RESULT_FILE, STAGING_DIR, LOCK_FILE) and "/" not in name:
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)
    os.replace(staged / RESULT_FILE, run_dir / RESULT_FILE)
    _fsync_dir(run_dir)
    shutil.rmtree(staged, ignore_errors=True)


def recover_staging(run_dir: Path) -> str | None:
    """(The lock held.) What an earlier process left in ``.staging/``: a committed record (valid, of this key) is
    rolled forward ('completed'); anything else is a run that did not finish and is removed ('discarded'). None when
    there is no ``.staging/``."""
    staged = staging_dir(run_dir)
    if not staged.is_dir():
        return None
    try:
        committed = check_record(json.loads((staged / RESULT_FILE).read_text()), Path(run_dir).name) is None
    except (OSError, ValueError):  # no staged record, or a torn one: the run never reached its commit point
        committed = False
    if committed:
        _roll_forward(run_dir)
        return "completed"
    discard_staging(run_dir)
    return "discarded"


class ArtifactMismatch(Exception):
    """An artifact that is missing or whose sha256 is not the one its record holds."""


def verify_artifact(run_dir: Path, name: str, record: dict | None = None) -> Path:
    """``run_dir/name``, checked against the sha256 its record (read when not given) holds in ``artifacts``.
    Records from before staging hold no hashes: then only existence is checked. Raises ArtifactMismatch."""
    path = Path(run_dir) / name
    record = read_record(run_dir) if record is None else record
    expected = ((record or {}).get(ARTIFACTS_FIELD) or {}).get(name)
    if not path.is_file():
        raise ArtifactMismatch(f"{path} is missing; its run's record names it. Run the job again (--force).")
    if expected is not None:
        found = sha256_file(path)
        if found != expected:
            raise ArtifactMismatch(f"{path}: sha256 {found[:12]}… does not match its record's {expected[:12]}…: the "
                                   "file was replaced or altered after the run. Run the job again (--force).")
    return path


# ------------------------------------------------------------------------------------------------ records
class CorruptRecord(Exception):
    """A result.json that does not parse or lacks a required field."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def check_record(record, key: str | None = None) -> str | None:
    """Why `record` (parsed result.json) is not a valid record of `key`, or None when it is."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [f for f in (*REQUIRED_FIELDS, *REQUIRED_BY_STAGE.get(record.get("stage"), ())) if f not in record]
    if missing:
        return f"lacks required field(s) {', '.join(missing)}"
    if key is not None and record["key"] != key:
        return f"holds the record of key {record['key']!r}, not of its folder's key {key!r}"
    return None


def read_record(run_dir: Path) -> dict | None:
    """The folder's record, None when it has no result.json; raises CorruptRecord when the file is not valid."""
    path = Path(run_dir) / RESULT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRecord(path, f"cannot be read ({exc})") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise CorruptRecord(path, f"is not valid JSON ({exc}; {len(text)} bytes)") from None
    problem = check_record(record, Path(run_dir).name)
    if problem:
        raise CorruptRecord(path, problem)
    return record


def corrupt_reason(run_dir: Path) -> str | None:
    """'<path>: <why>' for a corrupt result.json, else None."""
    try:
        read_record(run_dir)
    except CorruptRecord as exc:
        return str(exc)
    return None


def move_aside_corrupt(run_dir: Path) -> Path:
    """Rename a corrupt result.json to ``result.json.corrupt-<UTC time>`` (kept for inspection, never deleted)."""
    return move_aside(Path(run_dir) / RESULT_FILE, CORRUPT_SUFFIX)


# ------------------------------------------------------------------------------------------------ status
def status(run_dir: Path, probe_lock: bool = True) -> str:
    """done / corrupt / running / blocked / failed / pending (module docstring). ``probe_lock``: say 'running'
    when another process holds the lock (off for the process that holds it)."""
    run_dir = Path(run_dir)
    try:
        if read_record(run_dir) is not None:
            return DONE
    except CorruptRecord:
        if not (probe_lock and lock_holder(run_dir) is not None):
            return CORRUPT
    if probe_lock and lock_holder(run_dir) is not None:
        return RUNNING
    error_path = run_dir / ERROR_FILE
    if error_path.is_file():
        try:
            blocked = "blocked_by" in json.loads(error_path.read_text())
        except (OSError, ValueError, TypeError):
            blocked = False
        return BLOCKED if blocked else FAILED
    return PENDING


# ------------------------------------------------------------------------------------------------ the lock
class UnsafeRunFolder(OSError):
    """A run folder entry the harness refuses to touch (e.g. a symlink planted at its lock path)."""


class RunningElsewhere(Exception):
    """Another live process holds the run folder's lock."""

    def __init__(self, run_dir: Path, holder: dict):
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(f"{run_dir} is locked by {describe_holder(holder)}")


def owner_token() -> str:
    """Who this process works for: the SLURM job (and its restart) or this host and pid. Every task of a
    multi-task SLURM job has the same token, so ranks > 0 recognise the lock their rank 0 took."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm:{job}/{os.environ.get('SLURM_RESTART_COUNT', '0') or '0'}"
    return f"pid:{socket.gethostname()}/{os.getpid()}"


def _holder_info() -> dict:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    slurm_id = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_id,
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"), "owner": owner_token(),
            "since": now_iso()}


def describe_holder(holder: dict) -> str:
    slurm = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{slurm} since {holder.get('since', '?')}"
            if holder else "another process")


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def _is_predecessor(holder: dict) -> bool:
    """The holder is an earlier run of this same SLURM job (before a requeue), still being killed."""
    mine, theirs = owner_token(), str(holder.get("owner", ""))
    return mine.startswith("slurm:") and theirs.startswith("slurm:") and theirs != mine and \
        theirs.split("/")[0] == mine.split("/")[0]


def lock_holder(run_dir: Path) -> dict | None:
    """Who holds the folder's lock now ({} when the holder wrote nothing yet), or None when nobody does. Never
    creates the lock file; takes a shared lock for an instant to find out."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a planted symlink is never followed
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:  # locks not supported on this filesystem: nobody can be seen holding it
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


_warned_no_locks = False


@contextmanager
def lock(run_dir: Path, patience_s: float = LOCK_PATIENCE_S):
    """Hold the run folder's exclusive lock for the ``with`` block, or raise RunningElsewhere when another live
    process holds it. An earlier run of the same SLURM job (a requeue whose predecessor is still being killed) is
    waited for, up to PREDECESSOR_WAIT_S.

    Network filesystems: Linux NFS clients (v3 with lockd, v4) implement flock as a whole-file POSIX lock held by
    the server, so it works across nodes — unless the filesystem is mounted with ``local_lock=flock`` or ``nolock``
    (then each node sees only its own locks). Lustre needs the ``flock`` mount option (``localflock`` is node-local;
    without either, flock fails). A node that dies holding a lock on NFS keeps it until the server's lease expires
    (NFSv4: typically 90 s). Where locks are not supported at all the job runs unlocked with a warning."""
    global _warned_no_locks
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:  # never through a symlink: a link planted at the lock path could make us write into any file
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRunFolder(f"{run_dir / LOCK_FILE} is a symbolic link; the harness never follows one at a "
                                  "lock path. Remove it (and check who made it) before running this job.") from None
        raise
    try:
        deadline, predecessor_deadline = time.monotonic() + patience_s, None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if _is_predecessor(holder) and predecessor_deadline is None:
                    predecessor_deadline = time.monotonic() + PREDECESSOR_WAIT_S
                    deadline = max(deadline, predecessor_deadline)
                if time.monotonic() >= deadline:
                    raise RunningElsewhere(run_dir, holder) from None
                time.sleep(0.1)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                if not _warned_no_locks:
                    print(f"warning: this filesystem does not support file locks ({exc}): {run_dir} is not "
                          "protected against a second process running the same job (see benchmark/run/run_dir.py)",
                          file=sys.stderr, flush=True)
                    _warned_no_locks = True
                locked = False
                break
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
            os.fsync(fd)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def follow_lock(run_dir: Path, force: bool = False, timeout_s: float | None = None) -> str:
    """For ranks > 0 of a multi-task job, which never take the lock: wait until rank 0 decided. Returns 'run' (rank
    0 of this job holds the lock), 'skipped' (the job is done and not forced) or RUNNING_ELSEWHERE."""
    run_dir = Path(run_dir)
    deadline = time.monotonic() + (PREDECESSOR_WAIT_S + 60 if timeout_s is None else timeout_s)
    while True:
        holder = lock_holder(run_dir)
        if holder is not None and holder.get("owner") == owner_token():
            return "skipped" if status(run_dir, probe_lock=False) == DONE and not force else "run"
        if holder and not _is_predecessor(holder):
            return RUNNING_ELSEWHERE
        if holder is None and status(run_dir, probe_lock=False) == DONE and not force:
            return "skipped"
        if time.monotonic() >= deadline:
            return RUNNING_ELSEWHERE
        time.sleep(0.2)
