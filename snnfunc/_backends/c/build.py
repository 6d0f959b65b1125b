"""Building the generated C kernels: the system C compiler, once per machine and source,
into a cache keyed by the source's hash (with the compiler, its flags and the CPU). Where no
compiler works the library says why, and the neurons keep to the reference loop."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from snnfunc._kernel import cache

# -fno-trapping-math: no trap is ever enabled, so a conversion or division under a condition
# may be computed for every lane (if-converted, vectorised); it changes no result
_FLAGS = ["-O3", "--param=vect-epilogues-nomask=0", "-fno-math-errno", "-fno-trapping-math",
          "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared"]
_log = logging.getLogger("snnfunc")
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_error: list = []  # [reason or None], once probed
_announced: list = []


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))[:4096]
    except OSError:
        return sys.platform


def cpu_name() -> str:
    """The CPU's model name (or the machine type where the system does not say)."""
    for line in _cpu_id().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build(source: str, *, without: tuple = ()) -> ctypes.CDLL:
    """The loaded library of a C source: compiled on first use, then from the cache.
    `without`: flags of `_FLAGS` left out (the max-pool's short rows want gcc's vectorised
    loop epilogues, which the neuron kernels' flags turn off)."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    flags = [f for f in _FLAGS if f not in without]
    key = hashlib.sha256(source.encode())
    key.update(" ".join([cc, _version(cc), *flags, _cpu_id()]).encode())
    digest = key.hexdigest()[:20]
    if digest in _libs:
        return _libs[digest]
    with _lock:
        if digest in _libs:
            return _libs[digest]
        out = cache.directory() / f"snnfunc_gen_{digest}.so"
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
                header = _header(cc, flags) if not without else None
                proc = None
                if header is not None:  # <immintrin.h> pre-parsed
                    proc = subprocess.run(command(cc, flags, src, so, header),
                                          capture_output=True, text=True)
                if proc is None or proc.returncode != 0:
                    cmd = command(cc, flags, src, so)
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:  # no -march=native or no libmvec: a plain build
                    cmd = [cc, *flags, "-DSNN_NO_MVEC", "-o", so, src, "-lm"]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
                os.replace(so, out)  # atomic: concurrent builders never see a half-written file
            cache.evict()
        else:
            cache.touch(out)
        lib = ctypes.CDLL(str(out))
        lib.snn_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.snn_run.restype = ctypes.c_int
        _libs[digest] = lib
        return lib


def command(cc: str, flags: list, src: str, so: str, header: str | None = None) -> list:
    """The compiler's command line that builds `src` into `so` for this CPU, with the
    precompiled intrinsics header `header` (`_header`) or without."""
    return [cc, *flags, "-march=native", *(("-include", header) if header else ()), "-o", so,
            src, "-lmvec", "-lm"]


@functools.lru_cache(maxsize=None)
def _version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout


# The intrinsics' header every kernel includes, parsed once into a precompiled header: with
# -march=native, <immintrin.h> took most of a small kernel's build (gcc 12 on a Zen 1 EPYC,
# family 23 model 1: a LIF forward kernel 0.78 -> 0.21 s, its backward 1.21 -> 0.65 s). The
# kernel's source is the same, and so is its code (the header only declares; gcc uses its
# precompiled form where it was made with the same compiler and flags, and reads the
# header's text otherwise). gcc only, for the default flags; made once
# a cache holds PCH_AFTER kernels (a few builds pay for it), in a folder of the cache keyed like
# a kernel (the compiler, its flags, the CPU), outside the kernels' bound.
PCH_AFTER = 4
_PCH_HEADER = """#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
"""
_pch: dict[str, str | None] = {}  # folder -> the header to -include, or None (made none)


def pch_folder(cc: str, flags: list):
    """Where the precompiled intrinsics header for `cc` and `flags` is kept in the cache."""
    key = hashlib.sha256(" ".join([cc, _version(cc), *flags, _cpu_id(), _PCH_HEADER]).encode())
    return cache.directory() / f"snnfunc_pch_{key.hexdigest()[:20]}"


def _header(cc: str, flags: list) -> str | None:
    """The precompiled intrinsics header's path for `cc` and `flags` (made on first use once the
    cache holds PCH_AFTER kernels), or None: not gcc, too few kernels yet, or it failed."""
    version = _version(cc)
    if "clang" in version.lower() or "Free Software Foundation" not in version:
        return None
    folder = pch_folder(cc, flags)
    if str(folder) in _pch:
        return _pch[str(folder)]
    header, gch = folder / "snnfunc_sys.h", folder / "snnfunc_sys.h.gch"
    if not gch.exists():
        if len(list(cache.directory().glob("snnfunc_gen_*.so"))) < PCH_AFTER:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                if not header.exists() or header.read_text() != _PCH_HEADER:
                    text = os.path.join(tmp, "snnfunc_sys.h")
                    with open(text, "w") as f:
                        f.write(_PCH_HEADER)
                    os.replace(text, header)
                made = os.path.join(tmp, "snnfunc_sys.h.gch")
                proc = subprocess.run([cc, *(f for f in flags if f != "-shared"), "-march=native",
                                       "-x", "c-header", "-o", made, str(header)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    _pch[str(folder)] = None
                    return None
                os.replace(made, gch)  # atomic: a build never reads half of it
        except OSError:
            _pch[str(folder)] = None
            return None
    _pch[str(folder)] = str(header)
    return str(header)


# built like every kernel, it says which instruction set the compiler targeted there
_PROBE = r"""int snn_run(void *j, int b, int n) { (void)j; (void)b; (void)n; return 0; }
const char *snn_isa(void) {
  return
#if defined(__AVX512F__) && defined(__AVX512VL__)
  "AVX-512"
#elif defined(__AVX2__)
  "AVX2"
#elif defined(__AVX__)
  "AVX"
#elif defined(__SSE2__)
  "SSE2"
#elif defined(__ARM_NEON)
  "NEON"
#else
  "no vector extension"
#endif
#if defined(__FMA__)
  "+FMA"
#endif
#ifdef SNN_NO_MVEC
  " (generic build: no -march=native or no libmvec; e^x and the other functions from libm, "
  "one value at a time)"
#elif (defined(__AVX512F__) && defined(__AVX512VL__) || defined(__AVX2__)) && defined(__FMA__)
  " (-march=native; the backward's e^x in float the kernel's own; exp, log, sin, cos (tanh, cosh, sinh, expm1, log1p with glibc 2.35 on) vectorised through libmvec)"
#else
  " (-march=native; e^x and the other functions from libmvec)"
#endif
  ;
}
"""


def error() -> str | None:
    """Why the C kernels cannot be built here, or None (probes the compiler once)."""
    if not _error:
        with _lock:
            if not _error:
                if sys.platform not in ("linux", "darwin"):
                    reason = f"the fused CPU kernels are built for Linux and macOS, not {sys.platform}"
                elif compiler() is None:
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


def isa() -> str | None:
    """The instruction set the C kernels are built for on this machine (None where they cannot
    be built): what `-march=native` gave the compiler, as the kernels see it."""
    if error() is not None:
        return None
    lib = build(_PROBE)
    lib.snn_isa.restype = ctypes.c_char_p
    return lib.snn_isa().decode()


def path() -> str:
    """Where the built kernels are cached."""
    return str(cache.directory())
