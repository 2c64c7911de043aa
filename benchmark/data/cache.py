"""The per-user cache of content hashes and check verdicts (a small JSON file), keyed by file listings; shared by
benchmark.data.bundle (hashes) and benchmark.data.validate (verdicts of checks run once per content)."""

from __future__ import annotations

import hashlib
import json
import os
import time
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


def _cached_digest(cache_key: str, compute, cacheable: bool = True) -> str:
    """`compute()` once per cache key; the cache is a small JSON file shared by every process of the machine."""
    if not cacheable:
        return compute()
    cache_file = hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache_key in cache:
        return cache[cache_key]
    cache[cache_key] = compute()
    try:
        from benchmark.run.run_dir import write_bytes_atomic

        write_bytes_atomic(cache_file, json.dumps(cache).encode())
    except OSError:
        pass
    return cache[cache_key]


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
