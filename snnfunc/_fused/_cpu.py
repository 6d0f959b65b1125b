"""The CPU kernel: `neuron.c` compiled once per machine with the system C compiler and
loaded with ctypes. Where no compiler is found the library reports why and the neuron
functions keep to the reference loop."""

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

import torch

_HERE = Path(__file__).resolve().parent
_SOURCES = ("neuron.c", "neuron_impl.h")
_FLAGS = ["-O3", "--param=vect-epilogues-nomask=0", "-fno-math-errno", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared"]
_log = logging.getLogger("snnfunc")
_lock = threading.Lock()
_lib = None
_error: str | None = None


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


def _build(cc: str) -> Path:
    key = hashlib.sha256()
    for name in _SOURCES:
        key.update((_HERE / name).read_bytes())
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key.update(" ".join([cc, version, *_FLAGS, _cpu_id()]).encode())
    out = _cache_dir() / f"snnfunc_neuron_{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _log.warning("snnfunc: building the fused CPU kernel with %s (once per machine and version, "
                 "up to a minute or two) into %s", cc, out.parent)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cc, *_FLAGS, "-march=native", "-o", tmp, str(_HERE / "neuron.c"), "-lmvec", "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # a compiler without -march=native or libmvec: plain build
        cmd = [cc, *_FLAGS, "-o", tmp, str(_HERE / "neuron.c"), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, out)  # atomic: concurrent builders never see a half-written file
    return out


def library():
    """The loaded kernel library, or None (then :func:`error` says why)."""
    global _lib, _error
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is None and _error is None:
            cc = _compiler()
            if sys.platform != "linux" and sys.platform != "darwin":
                _error = f"the fused CPU kernel is built for Linux and macOS, not {sys.platform}"
            elif cc is None:
                _error = "no C compiler found (set CC, or install gcc or clang)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build(cc)))
                except (OSError, RuntimeError) as exc:
                    _error = f"building the fused CPU kernel failed: {exc}"
                else:
                    i64, i32, f64, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
                    lib.snn_forward.argtypes = ([i32, i64, i64, i32, i32, i32, f64] + [ptr] * 7
                                                + [i64] * 3 + [i32])
                    lib.snn_backward.argtypes = ([i32, i64, i64, i32, i32, i32, i32, f64, i32, f64, f64, f64]
                                                 + [ptr] * 12 + [i64] * 3 + [i32])
                    lib.snn_forward.restype = lib.snn_backward.restype = i32
                    _lib = lib
    return _lib


def error() -> str | None:
    library()
    return _error


def path() -> str | None:
    """Where the loaded kernel library lives, or None."""
    return None if _lib is None else _lib._name


_ERRORS = {1: "the fused neuron kernel could not allocate its buffer",
           2: "the fused CPU kernel has no variant for this neuron kind and options",
           4: "the fused CPU kernel does not know this surrogate id"}


def _check(rc: int) -> None:
    if rc:
        msgs = [m for bit, m in _ERRORS.items() if rc & bit]
        raise (MemoryError if rc == 1 else RuntimeError)("; ".join(msgs) or f"error {rc}")


def _ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _dtype_code(t):
    return {torch.float32: 0, torch.float64: 1}[t.dtype]


def _strides(v0, p, th):
    return tuple(0 if t is None or t.numel() == 1 else 1 for t in (v0, p, th))


def forward(x, v0, p, th, kind, decay, hard, vr, s, h, vout):
    T, N = x.shape[0], vout.numel()
    rc = library().snn_forward(_dtype_code(x), T, N, kind, int(decay), int(hard), vr, _ptr(x),
                               _ptr(v0), _ptr(p), _ptr(th), _ptr(s), _ptr(h), _ptr(vout),
                               *_strides(v0, p, th), torch.get_num_threads())
    _check(rc)


def backward(x, v0, p, th, gs, gv, gh, sg, kind, decay, hard, detach, vr, sg_id, sa, sb, sc,
             gx, gv0, gp, gth):
    T, N = x.shape[0], gv0.numel()
    rc = library().snn_backward(_dtype_code(x), T, N, kind, int(decay), int(hard), int(detach), vr,
                                sg_id, sa, sb, sc, _ptr(x), _ptr(v0), _ptr(p), _ptr(th), _ptr(gs),
                                _ptr(gv), _ptr(gh), _ptr(sg), _ptr(gx), _ptr(gv0), _ptr(gp),
                                _ptr(gth), *_strides(v0, p, th), torch.get_num_threads())
    _check(rc)
