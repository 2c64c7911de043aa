"""The per-user cache of content hashes and check verdicts (a small JSON file, bounded, written under a lock),
keyed by file listings; shared by benchmark.data.bundle (hashes) and benchmark.data.validate (verdicts of checks
run once per content)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path


def hash_cache_path() -> Path:
    """Where content hashes are cached: $GENMED_CACHE_DIR/sha256.json, else ~/.cache/genmed-rare/sha256.json
    ($XDG_CACHE_HOME honoured) — per user, outside the repository, shared by a cluster's nodes when home is."""
    configured = os.environ.get("GENMED_CACHE_DIR")
    folder = Path(configured).expanduser() if configured else \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genmed-rare"
    return folder / "sha256.json"


# A file modified less than this long ago may be modified again within the same mtime tick (the "racy git"
# problem), so its hash is computed but not cached: a cached hash always describes settled content.
SETTLED_NS = 2_000_000_000


def is_settled(mtime_ns: int) -> bool:
    return time.time_ns() - mtime_ns > SETTLED_NS


MAX_ENTRIES_ENV = "GENMED_HASH_CACHE_MAX_ENTRIES"
DEFAULT_MAX_ENTRIES = 2000  # ~200 bytes an entry: the file stays well under 1 MB however many datasets come and go


def max_entries() -> int:
    """The cache's entry cap: $GENMED_HASH_CACHE_MAX_ENTRIES (a positive integer), else DEFAULT_MAX_ENTRIES."""
    from benchmark.core.errors import UserError

    value = os.environ.get(MAX_ENTRIES_ENV)
    if not value:
        return DEFAULT_MAX_ENTRIES
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise UserError(f"${MAX_ENTRIES_ENV} is {value!r}; set it to a positive whole number of cached hashes "
                        f"(default {DEFAULT_MAX_ENTRIES}) or unset it.")
    return cap


def _read(cache_file: Path) -> dict:
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


@contextmanager
def _locked(cache_file: Path):
    """An exclusive ``fcntl.flock`` on ``<cache>.lock`` for a read-modify-write of the cache (never through a
    symlink); yields False, and the caller skips the write, when it cannot be taken (no locks on this filesystem)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(cache_file.with_name(cache_file.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock


def _store(cache_file: Path, key: str, value: str | None) -> None:
    """Under the lock: re-read the cache (others may have added entries), put `key` last (most recent: with
    `value`, or moved there on a hit), evict the oldest beyond the cap, replace the file atomically."""
    from benchmark.run.run_dir import write_bytes_atomic

    with _locked(cache_file) as locked:
        if not locked:
            return
        cache = _read(cache_file)
        stored = cache.pop(key, None)  # re-inserted below: last, the most recent
        value = stored if value is None else value
        if value is None:
            return
        cache[key] = value
        for old in list(cache)[:max(0, len(cache) - max_entries())]:
            del cache[old]
        write_bytes_atomic(cache_file, json.dumps(cache).encode())


def _cached_digest(cache_key: str, compute, cacheable: bool = True) -> str:
    """`compute()` once per cache key; the cache is a small JSON file shared by every process of the machine (and
    of a cluster's nodes when home is shared). Bounded: at most ``max_entries()`` entries, the least recently
    stored or refreshed evicted first (a hit in the older half is moved last, so a cache in use keeps what it
    uses while a hit costs no write most of the time); every write is a read-modify-write under ``_locked`` with an
    atomic replace, so concurrent processes lose neither entries nor the file. The hash is computed outside the
    lock. A cache that cannot be written is skipped silently."""
    if not cacheable:
        return compute()
    cache_file = hash_cache_path()
    cache = _read(cache_file)
    if cache_key in cache:
        value = cache[cache_key]
        if list(cache).index(cache_key) < len(cache) // 2:
            try:
                _store(cache_file, cache_key, None)
            except OSError:
                pass
        return value
    value = compute()
    try:
        _store(cache_file, cache_key, value)
    except OSError:
        pass
    return value


def tree_signature(root: Path, files) -> tuple[str, list, bool]:
    """(a cache key of the listing: root, count and each file's relative path, size, mtime and inode; the sorted
    (relative path, real path) entries; whether every file is settled)."""
    root = Path(root).resolve()
    entries = sorted((Path(f).resolve().relative_to(root).as_posix(), Path(f).resolve()) for f in files)
    listing = hashlib.sha256()
    settled = True
    for rel, path in entries:
        stat = path.stat()
        settled = settled and is_settled(stat.st_mtime_ns)
        listing.update(f"{rel}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}\n".encode())
    return f"{root}|{len(entries)}|{listing.hexdigest()}", entries, settled
