"""Building the generated C kernels: the system C compiler, once per machine and source,
into a cache keyed by the source's hash (with the compiler, its flags and the CPU). Where no
compiler works the library says why, and the neurons keep to the reference loop."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_FLAGS = ["-O3", "--param=vect-epilogues-nomask=0", "-fno-math-errno", "-ffp-contract=off",
          "-fopenmp", "-fPIC", "-shared"]
_log = logging.getLogger("snnfunc")
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_error: list = []  # [reason or None], once probed
_announced: list = []


# The kernel cache on disk is bounded: after each new kernel, the least recently used files
# (by modification time, renewed whenever a kernel is loaded) go until at most MAX_FILES
# kernels and MAX_BYTES remain (SNNFUNC_CACHE_MAX_MB overrides the size). A process keeps the
# kernels it has loaded; an evicted one is built again on its next first use.
MAX_FILES = 2000
MAX_BYTES = 512 << 20
_PATTERNS = ("snnfunc_gen_*.so", "snnfunc_triton_*.py")


def _max_bytes() -> int:
    try:
        return int(float(os.environ["SNNFUNC_CACHE_MAX_MB"]) * (1 << 20))
    except (KeyError, ValueError):
        return MAX_BYTES


def cache_files() -> list[Path]:
    """The kernels in the cache, least recently used first."""
    root = _cache_dir()
    files = []
    for pattern in _PATTERNS:
        for f in root.glob(pattern):
            try:
                files.append((f.stat().st_mtime, f.stat().st_size, f))
            except OSError:  # removed by another process meanwhile
                pass
    return [(f, size) for _, size, f in sorted(files)]


def evict() -> int:
    """Removes the least recently used kernels beyond the cache's bounds; how many it removed."""
    files = cache_files()
    total, limit, gone = sum(size for _, size in files), _max_bytes(), 0
    for f, size in files:
        if len(files) - gone <= MAX_FILES and total <= limit:
            break
        try:
            f.unlink()
        except OSError:
            continue
        total -= size
        gone += 1
    return gone


def touch(path: Path) -> None:
    """Marks a cached kernel as used now (the eviction order)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _cache_dir() -> Path:
    root = os.environ.get("SNNFUNC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "snnfunc")
    return Path(root)


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))[:4096]
    except OSError:
        return sys.platform


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(source: str) -> ctypes.CDLL:
    """The loaded library of a C source: compiled on first use, then from the cache."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    key = hashlib.sha256(source.encode())
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key.update(" ".join([cc, version, *_FLAGS, _cpu_id()]).encode())
    digest = key.hexdigest()[:20]
    if digest in _libs:
        return _libs[digest]
    with _lock:
        if digest in _libs:
            return _libs[digest]
        out = _cache_dir() / f"snnfunc_gen_{digest}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            if not _announced:  # the first build of a process says so; the rest are quick
                _announced.append(True)
                _log.warning("snnfunc: compiling fused neuron kernels with %s into %s (once per "
                             "machine, neuron and option; a second or so each)", cc, out.parent)
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                src = os.path.join(tmp, "kernel.c")
                with open(src, "w") as f:
                    f.write(source)
                so = os.path.join(tmp, "kernel.so")
                cmd = [cc, *_FLAGS, "-march=native", "-o", so, src, "-lmvec", "-lm"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:  # no -march=native or no libmvec: a plain build
                    cmd = [cc, *_FLAGS, "-DSNN_NO_MVEC", "-o", so, src, "-lm"]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
                os.replace(so, out)  # atomic: concurrent builders never see a half-written file
            evict()
        else:
            touch(out)
        lib = ctypes.CDLL(str(out))
        lib.snn_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.snn_run.restype = ctypes.c_int
        _libs[digest] = lib
        return lib


_PROBE = "int snn_run(void *j, int b, int n) { (void)j; (void)b; (void)n; return 0; }\n"


def error() -> str | None:
    """Why the C kernels cannot be built here, or None (probes the compiler once)."""
    if not _error:
        with _lock:
            if not _error:
                if sys.platform not in ("linux", "darwin"):
                    reason = f"the fused CPU kernels are built for Linux and macOS, not {sys.platform}"
                elif _compiler() is None:
                    reason = "no C compiler found (set CC, or install gcc or clang)"
                else:
                    reason = None
                _error.append(reason)
        if _error[0] is None:
            try:
                build(_PROBE)
            except (OSError, RuntimeError) as exc:
                _error[0] = f"building the fused CPU kernel failed: {exc}"
    return _error[0]


def path() -> str:
    """Where the built kernels are cached."""
    return str(_cache_dir())
