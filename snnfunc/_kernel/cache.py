"""The kernel cache on disk, for every backend: where built kernels are kept, and its bound.

After each new kernel the least recently used ones (by modification time, renewed whenever a
kernel is loaded) go until at most MAX_FILES kernels of each backend (the C backend's libraries,
the Triton backend's sources: neither pushes the other's out) and MAX_BYTES in all remain
(SNNFUNC_CACHE_MAX_MB overrides the size). A process keeps the kernels it has loaded; an
evicted one is built again on its next first use.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_FILES = 2000
MAX_BYTES = 512 << 20
_PATTERNS = ("snnfunc_*.so", "snnfunc_*.py")  # every backend names its kernels so


def max_bytes() -> int:
    try:
        return int(float(os.environ["SNNFUNC_CACHE_MAX_MB"]) * (1 << 20))
    except (KeyError, ValueError):
        return MAX_BYTES


def cache_files() -> list[Path]:
    """The kernels in the cache, least recently used first."""
    root = directory()
    files = []
    for pattern in _PATTERNS:
        for f in root.glob(pattern):
            try:
                st = f.stat()
            except OSError:  # removed by another process meanwhile
                continue
            files.append((st.st_mtime, st.st_size, f))
    return [(f, size) for _, size, f in sorted(files)]


def evict() -> int:
    """Removes the least recently used kernels beyond the cache's bounds; how many it removed."""
    files = cache_files()
    total, limit, gone = sum(size for _, size in files), max_bytes(), 0
    count = {}  # kernels of each backend (by suffix)
    for f, _ in files:
        count[f.suffix] = count.get(f.suffix, 0) + 1
    for f, size in files:
        if total <= limit and max(count.values(), default=0) <= MAX_FILES:
            break
        if total <= limit and count[f.suffix] <= MAX_FILES:
            continue  # a backend within its bound keeps its kernels
        try:
            f.unlink()
        except OSError:
            continue
        total -= size
        count[f.suffix] -= 1
        gone += 1
    return gone


def touch(path: Path) -> None:
    """Marks a cached kernel as used now (the eviction order)."""
    try:
        os.utime(path)
    except OSError:
        pass


def directory() -> Path:
    root = os.environ.get("SNNFUNC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "snnfunc")
    return Path(root)
