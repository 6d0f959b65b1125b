"""C source for a neuron definition's fused kernels, generated from its traced step.

The skeleton (blocks of neurons on OpenMP threads, the loop over T, the recompute-then-BPTT
backward) is written once here; the per-neuron part is the traced step (`snnfunc._core.ir`), one
C statement per node in the definition's order. Built without FMA contraction or fast math,
so wherever the definition uses + - * / and comparisons the forward equals the reference
loop bit for bit.

The backward recomputes the states of every step of a block into a buffer, then walks back
in time. At each step it computes the forward step again and the step's vector-Jacobian
product. A cotangent no gradient reaches (an unused output; the final state's at the last
step) is absent, and its terms are left out, as autograd leaves them out in the reference;
which cotangents are present at a step depends on how far it is from the end, and settles
after a few steps: the kernel has one block of code for each distinct presence pattern.
"""

from __future__ import annotations

import math

from snnfunc._core import ir as _ir
from snnfunc._core.vjp import vjp
from snnfunc._backends.c.spelling import CSpelling
from snnfunc._kernel.emit import Emitter

IO_TYPES = {  # torch dtype name -> (C type in memory, compute type, load, store)
    "float32": ("float", "float", "({x})", "({x})"),
    "float64": ("double", "double", "({x})", "({x})"),
    "float16": ("uint16_t", "float", None, None),  # its bits; LD/ST in _F16
    "bfloat16": ("uint16_t", "float", "bf16_load({x})", "bf16_store({x})"),
}

_HEADER = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef SNN_NO_MVEC  /* vector exp/log/sin/cos from glibc's libmvec, as the loop vectorises */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
double log(double);
#pragma omp declare simd notinbranch
float sinf(float);
#pragma omp declare simd notinbranch
double sin(double);
#pragma omp declare simd notinbranch
float cosf(float);
#pragma omp declare simd notinbranch
double cos(double);
#endif
typedef {io} IO;
typedef {real} REAL;
#define BLK {blk}
#define BUF_BYTES 524288
static inline float bf16_load(uint16_t b) {{ uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }}
static inline uint16_t bf16_store(float f) {{
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)0x7fc0;  /* NaN, as torch */
  u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest even */
  return (uint16_t)(u >> 16);
}}
/* software prefetch of a block's row: the backward computes while the rows it reads next
   (and writes) stream in, rather than waiting for each in turn */
static inline void pf_read(const void *p, int64_t bytes) {{
  for (int64_t q = 0; q < bytes; q += 64) __builtin_prefetch((const char *)p + q, 0, 3);
}}
static inline void pf_write(void *p, int64_t bytes) {{
  for (int64_t q = 0; q < bytes; q += 64) __builtin_prefetch((char *)p + q, 1, 3);
}}
/* a row of output written with streaming stores (the destination is not read into the
   cache first, as glibc's memcpy does for large copies), or copied as it is */
#if defined(__AVX512F__)
#include <immintrin.h>
#define NT_WIDTH 64
#define NT_F32(p, a) _mm512_stream_ps((p), _mm512_loadu_ps(a))
#define NT_F64(p, a) _mm512_stream_pd((p), _mm512_loadu_pd(a))
#elif defined(__AVX__)
#include <immintrin.h>
#define NT_WIDTH 32
#define NT_F32(p, a) _mm256_stream_ps((p), _mm256_loadu_ps(a))
#define NT_F64(p, a) _mm256_stream_pd((p), _mm256_loadu_pd(a))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define NT_WIDTH 16
#define NT_F32(p, a) _mm_stream_ps((p), _mm_loadu_ps(a))
#define NT_F64(p, a) _mm_stream_pd((p), _mm_loadu_pd(a))
#endif
#define NT_BYTES (8 << 20)  /* outputs from this size on */
static inline void out_row(const REAL *restrict a, REAL *restrict b, int64_t n, int nt) {{
  int64_t i = 0;
#ifdef NT_WIDTH
  if (nt) {{
    const int64_t w = NT_WIDTH / (int64_t)sizeof(REAL);
    for (; i < n && ((uintptr_t)(b + i) & (NT_WIDTH - 1)); i++) b[i] = a[i];
    if (sizeof(REAL) == 4)
      for (; i + w <= n; i += w) NT_F32((float *)(void *)(b + i), (const float *)(const void *)(a + i));
    else
      for (; i + w <= n; i += w) NT_F64((double *)(void *)(b + i), (const double *)(const void *)(a + i));
  }}
#endif
  (void)nt;
  if (i < n) memcpy(b + i, a + i, (size_t)(n - i) * sizeof(REAL));
}}
static inline void nt_fence(int nt) {{
#ifdef NT_WIDTH
  if (nt) _mm_sfence();
#endif
  (void)nt;
}}
typedef struct {{
  int64_t T, N, block;
  const double *sc;  /* v_rest, then the surrogate's run-time parameters */
  const IO *x, *th, *gs, *gh, *sg;
  const REAL *st[{k}];  /* states in the compute type: float32 for half precision */
  const IO *par[{m}];
  const REAL *gst[{k}];
  REAL *tr[{k}];          /* the states after every step [T, N] (return_states), or NULL */
  const REAL *gtr[{k}];   /* their cotangents, or NULL */
  int64_t sst[{k}], spar[{m}], sth;
  IO *s, *h, *gx;
  REAL *gth;  /* gradients of step tensors in the compute type: summed over broadcast */
  REAL *st_out[{k}];
  REAL *gst0[{k}], *gpar[{m}];  /* dimensions in it before the input's dtype */
}} job_t;
"""

_RUN = r"""
static int run(job_t *j, int backward, int nthreads) {
  /* forward: blocks of BLK neurons; backward: as many as fit the buffer of their kept values */
  int64_t per = (int64_t)sizeof(REAL) * (j->T > 0 ? j->T : 1) * NBUF;
  int64_t block = backward ? BUF_BYTES / per : BLK;
  if (j->T * j->N < 32768) nthreads = 1;
  if (nthreads < 1) nthreads = 1;
  int64_t share = (j->N + nthreads - 1) / nthreads;  /* every thread a block at least */
  if (block > share) block = share;
  block = block < 16 ? 16 : (block > BLK ? BLK : ((block + 15) / 16) * 16);
  j->block = block;
  int64_t nblocks = (j->N + block - 1) / block;
  if (nthreads > nblocks) nthreads = (int)nblocks;
  if (nthreads < 1) nthreads = 1;
  int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
  {
    /* backward: the kept values of every step of a block; forward: the block's rows */
    size_t len = backward ? (size_t)j->T * (size_t)block * NBUF : (size_t)block * FWD_ROWS;
    REAL *buf = (REAL *)malloc(len * sizeof(REAL) + 64);
    if (!buf) failed |= 1;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
      int64_t i0 = b * block, n = j->N - i0 < block ? j->N - i0 : block;
      if (!buf) { failed |= 1; continue; }
      if (backward) bwd_block(j, i0, n, buf);
      else fwd_block(j, i0, n, buf);
    }
    free(buf);
  }
  return failed;
}

int snn_run(job_t *j, int backward, int nthreads) { return run(j, backward, nthreads); }
int snn_sizes(int64_t *out) { out[0] = sizeof(job_t); out[1] = NSTATES; out[2] = NPARAMS; return 0; }
"""

# e^x for the derivatives in the backward's walk back (float32, AVX-512): libmvec's expf took
# 40% of the walk back there, most of it in its calls' spills and its special-case checks.
# Here: x clamped to [-104, 89] (NaN kept), x = n ln2 + r (Cody-Waite, fused multiply-adds),
# e^r by a degree-6 polynomial, scaled by 2^n in one rounding (vscalefps: overflow to inf,
# underflow through the subnormals to 0). Within about 1 ulp of e^x, and the same in every lane
# and in a loop's scalar remainder. The forward and the recompute keep expf: their values must
# equal the forward kernel's. gcc calls the vector variants by the x86 vector function ABI's
# names (b: SSE, c: AVX, d: AVX2, e: AVX-512), so each is defined (hidden: every kernel its own).
_FAST_EXP = r"""
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__FMA__) && !defined(SNN_NO_MVEC)
#include <immintrin.h>
#define SNN_EXP_BODY(V, P) \
  const V xc = P##_min_ps(P##_set1_ps(89.0f), P##_max_ps(P##_set1_ps(-104.0f), x)); \
  const V n = P##_roundscale_ps(P##_mul_ps(xc, P##_set1_ps(1.44269504088896341f)), \
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); \
  V r = P##_fmadd_ps(n, P##_set1_ps(-0.693359375f), xc); \
  r = P##_fmadd_ps(n, P##_set1_ps(2.12194440e-4f), r); \
  V p = P##_fmadd_ps(P##_set1_ps(1.9875691500e-4f), r, P##_set1_ps(1.3981999507e-3f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(8.3334519073e-3f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(4.1665795894e-2f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(1.6666665459e-1f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(5.0000001201e-1f)); \
  p = P##_add_ps(P##_fmadd_ps(p, P##_mul_ps(r, r), r), P##_set1_ps(1.0f)); \
  return P##_scalef_ps(p, n);
#pragma GCC visibility push(hidden)
__m128 _ZGVbN4v_snn_expf(__m128 x) { SNN_EXP_BODY(__m128, _mm) }
__m256 _ZGVcN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, _mm256) }
__m256 _ZGVdN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, _mm256) }
__m512 _ZGVeN16v_snn_expf(__m512 x) { SNN_EXP_BODY(__m512, _mm512) }
#pragma GCC visibility pop
__attribute__((used)) static float snn_expf_lane(float x) {
  return _mm_cvtss_f32(_ZGVbN4v_snn_expf(_mm_set1_ps(x)));
}
/* the scalar function, defined where the compiler cannot see it (it would vectorise the body
   itself rather than call the variants above) */
__asm__(".globl snn_expf\n.hidden snn_expf\n.set snn_expf, snn_expf_lane");
#pragma omp declare simd notinbranch
__attribute__((const)) float snn_expf(float);
#define VJP_EXPF snn_expf
#else
#define VJP_EXPF expf
#endif
"""


def _step_inputs(neuron, ids, single, states_from: str | None, shared=None) -> dict[str, str]:
    """C expressions for the step's inputs inside the loop over neurons `i` (the states from
    `states_from`, or none); a parameter or threshold `shared` by every neuron is one value of
    the block."""
    shared = _shared(neuron, shared)
    M = len(neuron.parameters)
    exprs = {"x": "GET(xt, XF)", "v_threshold": "TH" if shared[M] else "TH[i]", "v_rest": "vr"}
    for k, n in enumerate(neuron.states if states_from is not None else ()):
        exprs[f"state:{n}"] = states_from.format(k=k)
    for k, n in enumerate(neuron.parameters):
        exprs[f"param:{n}"] = f"P{k}" if shared[k] else f"P{k}[i]"
    return exprs


def _shared(neuron, shared):
    return tuple(shared) if shared is not None else (False,) * (len(neuron.parameters) + 1)


_F16 = r"""
#if defined(__F16C__)  /* float16 rows converted 8 at a time with F16C (gcc does not vectorise
                          _Float16 conversions); scalars with its scalar instructions */
#include <immintrin.h>
#define LD(x) _cvtsh_ss(x)
#define ST(x) _cvtss_sh((x), _MM_FROUND_TO_NEAREST_INT)
static inline void h2f_row(const IO *restrict a, float *restrict b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(b + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))));
  for (; i < n; i++) b[i] = _cvtsh_ss(a[i]);
}
static inline void f2h_row(const float *restrict a, IO *restrict b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(b + i), _mm256_cvtps_ph(_mm256_loadu_ps(a + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) b[i] = _cvtss_sh(a[i], _MM_FROUND_TO_NEAREST_INT);
}
#else
#define LD(x) ((float)*(const _Float16 *)&(x))
#define ST(x) f2h_scalar(x)
static inline IO f2h_scalar(float f) { _Float16 h = (_Float16)f; IO o; memcpy(&o, &h, 2); return o; }
static inline void h2f_row(const IO *restrict a, float *restrict b, int64_t n) {
  for (int64_t i = 0; i < n; i++) b[i] = LD(a[i]);
}
static inline void f2h_row(const float *restrict a, IO *restrict b, int64_t n) {
  for (int64_t i = 0; i < n; i++) b[i] = f2h_scalar(a[i]);
}
#endif
#define IN(p, tmp) h2f_row((p), (tmp), n)
#define GET(p, tmp) ((tmp)[i])
#define PUT(p, tmp, v) ((tmp)[i] = (v))
#define OUT(p, tmp) f2h_row((tmp), (p), n)
"""

_DIRECT = r"""
#define IN(p, tmp) ((void)0)
#define GET(p, tmp) LD((p)[i])
#define PUT(p, tmp, v) ((p)[i] = ST(v))
#define OUT(p, tmp) ((void)0)
"""


FORWARD_BLOCK = 16384  # neurons per forward block: long rows for the prefetchers
BACKWARD_BLOCK = 512  # at most, per backward block (fewer where T is long)
# the backward's prefetch of the rows of gs (gh, sg): every row of a block during its
# recompute where they take at most PF_ALL bytes, else PF_AHEAD bytes ahead of the walk back
# (all of them would push the kept values out of a 1 MiB L2 at long T)
PF_ALL = 131072
PF_AHEAD = 16384


def _preamble(neuron, dtype: str, blk: int, nbuf: int) -> str:
    io, real, ld, st = IO_TYPES[dtype]
    k, m = len(neuron.states), max(len(neuron.parameters), 1)
    head = _HEADER.format(io=io, real=real, k=k, m=m, blk=blk)
    head += (f"#define NSTATES {k}\n#define NPARAMS {len(neuron.parameters)}\n"
             f"#define NBUF {nbuf}  /* values kept per neuron-step in the backward's buffer */\n")
    if dtype == "float16":
        return head + _F16
    return head + f"#define LD(x) {ld.format(x='x')}\n#define ST(x) {st.format(x='x')}\n" + _DIRECT


def _load_block(neuron, shared=None, heap=None) -> list[str]:
    """The block's states (arrays) and parameters and threshold (arrays, or one value where
    every neuron shares it); the loops vectorise (no stride inside them). The arrays are on
    the stack, or rows of `buf` from row `heap` on."""
    shared = _shared(neuron, shared)
    out = []
    rows = iter(range(heap or 0, 1 << 30))

    def array(name):
        return (f"REAL *restrict {name} = buf + {next(rows)} * j->block;" if heap
                else f"REAL {name}[BLK];")

    for k in range(len(neuron.states)):
        out.append(array(f"S{k}"))
        out.append(f"if (j->sst[{k}]) for (int64_t i = 0; i < n; i++) S{k}[i] = j->st[{k}][i0 + i];"
                   f" else {{ const REAL c = j->st[{k}][0]; for (int64_t i = 0; i < n; i++) "
                   f"S{k}[i] = c; }}")
    for k in range(len(neuron.parameters)):
        if shared[k]:
            out.append(f"const REAL P{k} = LD(j->par[{k}][0]);")
        else:
            out.append(array(f"P{k}"))
            out.append(f"for (int64_t i = 0; i < n; i++) P{k}[i] = LD(j->par[{k}][i0 + i]);")
    if shared[-1]:
        out.append("const REAL TH = LD(j->th[0]);")
    else:
        out.append(array("TH"))
        out.append("for (int64_t i = 0; i < n; i++) TH[i] = LD(j->th[i0 + i]);")
    out.append("const REAL vr = (REAL)j->sc[0];")
    out.append("const int64_t N = j->N, T = j->T;")
    return out


def forward_source(neuron, opts: dict, *, hard: bool, want_h: bool, dtype: str,
                   want_trace: bool = False, shared=None) -> str:
    """The C source of the forward kernel of one configuration; `shared` says, for each
    parameter and then the threshold, whether every neuron shares one value."""
    g, ids, outs = neuron.trace(opts, hard=hard, detach_reset=False)
    single = IO_TYPES[dtype][1] == "float"
    em = Emitter(g, CSpelling(single), _step_inputs(neuron, ids, single, "S{k}[i]", shared), "n")
    for i in [outs["s"], outs["h"], *outs["states"]]:
        em.emit(i)
    body = "\n        ".join(em.lines)
    stores = [f"PUT(st, SF, {em.name(outs['s'])});"]
    if want_h:
        stores.append(f"PUT(ht, HF, {em.name(outs['h'])});")
    stores += [f"S{k}[i] = {em.name(o)};" for k, o in enumerate(outs["states"])]
    K = len(neuron.states)
    traces = ""
    if want_trace:
        stores += [f"tr{k}t[i] = {em.name(o)};" for k, o in enumerate(outs["states"])]
        traces = " ".join(f"REAL *restrict tr{k}t = j->tr[{k}] + t * N + i0;" for k in range(K))
    finals = [f"for (int64_t i = 0; i < n; i++) j->st_out[{k}][i0 + i] = S{k}[i];"
              for k in range(len(neuron.states))]
    src = f"""
static void fwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{
  REAL *restrict XF = buf, *restrict SF = buf + j->block, *restrict HF = buf + 2 * j->block;  /* float16 */
  (void)XF; (void)SF; (void)HF;
  {chr(10).join('  ' + line for line in _load_block(neuron, shared, heap=3)).strip()}
  for (int64_t t = 0; t < T; t++) {{
    const IO *restrict xt = j->x + t * N + i0;
    IO *restrict st = j->s + t * N + i0;
    IO *restrict ht = {'j->h + t * N + i0' if want_h else 'NULL'};
    (void)ht;
    {traces}
    IN(xt, XF);
    for (int64_t i = 0; i < n; i++) {{
        {body}
        {' '.join(stores)}
    }}
    OUT(st, SF);{' OUT(ht, HF);' if want_h else ''}
  }}
  {chr(10).join('  ' + line for line in finals).strip()}
}}
static void bwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{ (void)j; (void)i0; (void)n; (void)buf; }}
""" + _RUN
    rows = 3 + len(neuron.states) + len(neuron.parameters) + 1
    return _preamble(neuron, dtype, FORWARD_BLOCK, 1) + f"#define FWD_ROWS {rows}\n" + src


def backward_patterns(neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh,
                      has_gv, has_gtr=None):
    """The presence patterns of the state cotangents from the last step back: a list of
    `(present state cotangents in, present state cotangents out, the block's traced VJP)`
    ending at a fixpoint. A state whose trace has a cotangent (`has_gtr`) has one at every
    step."""
    has_gtr = tuple(has_gtr or (False,) * len(has_gv))
    patterns = []
    present = tuple(a or b for a, b in zip(has_gv, has_gtr))
    seen = {}
    while present not in seen:
        seen[present] = len(patterns)
        block, out = _vjp_block(neuron, opts, hard=hard, detach=detach,
                                surrogate_derivative=surrogate_derivative, has_gs=has_gs,
                                has_gh=has_gh, present=present)
        patterns.append((present, out, block))
        present = tuple(a or b for a, b in zip(out, has_gtr))
    return patterns, seen[present]


def _vjp_block(neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh, present):
    g, ids, outs = neuron.trace(opts, hard=hard, detach_reset=detach)
    cots: dict[int, int] = {}

    def put(node, name):  # outputs that are one node (a state left as it is) add up
        c = g.add("input", name)
        cots[node] = c if node not in cots else g.add("add", cots[node], c)

    if has_gs:
        put(outs["s"], "cot:s")
    if has_gh:
        put(outs["h"], "cot:h")
    for k, o in enumerate(outs["states"]):
        if present[k]:
            put(o, f"cot:state:{k}")
    wrt = [ids["x"], *(ids[f"state:{n}"] for n in neuron.states),
           *(ids[f"param:{n}"] for n in neuron.parameters), ids["v_threshold"]]
    res = vjp(g, cots, wrt, surrogate_derivative)
    state_out = tuple(res[ids[f"state:{n}"]] is not None for n in neuron.states)
    return (g, ids, outs, res, wrt), state_out


def _scalar_inputs(g) -> int:
    """How many run-time numbers (the surrogate's parameters) a graph reads."""
    return 1 + max((int(args[0][len(_ir.SCALAR_INPUT):]) for op, args in g.nodes
                    if op == "input" and args[0].startswith(_ir.SCALAR_INPUT)), default=-1)


def _find_input(g, name):
    for i, (op, args) in enumerate(g.nodes):
        if op == "input" and args[0] == name:
            return i
    raise KeyError(name)


# forward values the backward keeps from its recompute rather than computing them again
_EXPENSIVE = {"div", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "tanh", "cosh", "sinh",
              "sin", "cos", "reciprocal", "sigmoid", "pow"}
_FREE_INPUTS = ("x", "param:", "v_threshold", "v_rest")  # read in the walk back as they are


def _roots(neuron, ids, res, need):
    """The VJP's results a backward block writes."""
    M = len(neuron.parameters)
    out = [res[ids["x"]], *(res[ids[f"state:{n}"]] for n in neuron.states)]
    out += [res[ids[f"param:{n}"]] for k, n in enumerate(neuron.parameters) if need[k]]
    out += [res[ids["v_threshold"]]] if need[M] else []
    return [c for c in out if c is not None]


def _kept_values(neuron, patterns, n_forward, need):
    """The forward values the recompute keeps in the buffer for every step, so that the walk
    back computes the VJP from them with cheap operations only (the same statements as the
    recompute, so the same values).

    Start from every forward value a VJP node reads; drop, latest first, each that a few
    cheap operations (no division, no exp) give again from the others kept and the inputs
    read as they are (x, parameters, threshold, v_rest). A state is kept where the VJP reads
    it; x is read again, not kept."""
    g = patterns[0][2][0]
    wanted: set[int] = set()
    for _, _, (gb, ids, outs, res, wrt) in patterns:
        stack, seen = _roots(neuron, ids, res, need), set()
        while stack:  # the VJP nodes the block computes, and the forward values they read
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            if i < n_forward:
                wanted.add(i)
                continue
            op, args = gb.nodes[i]
            stack += [a for a in (args if op != "pow" else args[:1]) if isinstance(a, int)]

    def free(i):
        op, args = g.nodes[i]
        return op == "const" or op == "input" and args[0].startswith(_FREE_INPUTS)

    def values(i):  # a mask is computed again from what it compares
        if g.kinds[i] != "bool":
            return {i}
        op, args = g.nodes[i]
        return set().union(*(values(a) for a in args if isinstance(a, int)))

    wanted = {v for i in wanted for v in values(i) if not free(v)}

    def derivable(i, kept, seen):
        op, args = g.nodes[i]
        if op in _EXPENSIVE or op == "input" and not free(i):
            return False
        for a in (args if op != "pow" else args[:1]):
            if not isinstance(a, int) or a in kept or free(a) or a in seen:
                continue
            seen.add(a)
            if not derivable(a, kept, seen):
                return False
        return True

    kept = set(wanted)
    for i in sorted(wanted, reverse=True):
        if derivable(i, kept - {i}, set()):
            kept.discard(i)
    return sorted(kept)


def backward_source(neuron, opts: dict, *, hard: bool, detach: bool, surrogate_derivative,
                    has_gs: bool, has_gh: bool, has_gv: tuple, need: tuple, dtype: str,
                    has_gtr: tuple | None = None, shared=None) -> str:
    """The C source of the backward kernel of one configuration; `need` says, for each
    parameter, the threshold and then each state's initial value, whether its gradient is
    wanted; `shared`, whether every neuron shares one value of a parameter or threshold.

    The recompute keeps, for every step of the block, the forward values `_kept_values`
    picks: the walk back reads them and computes the rest of what the VJP needs again with
    cheap operations."""
    single = IO_TYPES[dtype][1] == "float"
    patterns, fix = backward_patterns(neuron, opts, hard=hard, detach=detach,
                                      surrogate_derivative=surrogate_derivative, has_gs=has_gs,
                                      has_gh=has_gh, has_gv=has_gv, has_gtr=has_gtr)
    K, M = len(neuron.states), len(neuron.parameters)
    recompute_g, rids, routs = neuron.trace(opts, hard=hard, detach_reset=detach)
    n_forward = len(recompute_g.nodes)
    for _, _, (g, *_rest) in patterns:  # the blocks' forward parts: the same trace
        assert g.nodes[:n_forward] == recompute_g.nodes, "the step traced differently"
    kept = _kept_values(neuron, patterns, n_forward, need)
    slot = {node: e for e, node in enumerate(kept)}
    has_gtr = tuple(has_gtr or (False,) * K)
    add_traces = " ".join(
        f"for (int64_t i = 0; i < n; i++) G{k}[i] += j->gtr[{k}][t * N + i0 + i];"
        for k in range(K) if has_gtr[k])
    blocks = []
    reads_x = False
    for b, (present, out, (g, ids, outs, res, wrt)) in enumerate(patterns):
        inputs = _step_inputs(neuron, ids, single, None, shared)  # states: where kept
        inputs["cot:s"] = "GET(gst, GSF)"
        inputs["cot:h"] = "GET(ght, GHF)"
        inputs["sg"] = "GET(sgt, SGF)"  # a surrogate derivative computed in torch
        for k in range(K):
            inputs[f"cot:state:{k}"] = f"G{k}[i]"
        inputs.update({f"{_ir.SCALAR_INPUT}{k}": f"j->sc[{k + 1}]"
                       for k in range(_scalar_inputs(g))})
        em = Emitter(g, CSpelling(single), inputs, "n",
                      {node: f"buf[({e} * T + t) * n + i]" for node, e in slot.items()},
                     vjp_from=n_forward)
        for c in _roots(neuron, ids, res, need):
            em.emit(c)
        gx, cth = res[ids["x"]], res[ids["v_threshold"]]
        writes = []
        reads_x |= "x" in em.used
        writes.append(f"PUTG(gxt, GXF, {em.name(gx) if gx is not None else '(REAL)0'});")
        for k, n in enumerate(neuron.states):
            c = res[ids[f"state:{n}"]]
            if c is not None:
                writes.append(f"G{k}[i] = {em.name(c)};")
        for k, n in enumerate(neuron.parameters):
            c = res[ids[f"param:{n}"]]
            if c is not None and need[k]:
                writes.append(f"GP{k}[i] += {em.name(c)};")
        if cth is not None and need[M]:
            writes.append(f"GTH[i] += {em.name(cth)};")
        body = "\n          ".join(em.lines + writes)
        blocks.append(f"""{{  /* cotangents of the states present: {present} */
        for (int64_t i = 0; i < n; i++) {{
          {body}
        }}
      }}""")
    # which step's block: r = T - 1 - t steps from the end; past the chain, the patterns
    # repeat from `fix` on
    L, period = len(patterns), len(patterns) - fix
    dispatch = "\n      else ".join(f"if (rb == {b}) {blk}" for b, blk in enumerate(blocks))
    pre = f"const int64_t rb = r < {L} ? r : {fix} + (r - {fix}) % {period};"
    # present cotangents of the initial state: those going out of the block that ran at t = 0
    out_table = ", ".join("{" + ", ".join("1" if p else "0" for p in out) + "}"
                          for _, out, _ in patterns)
    load = "\n  ".join(_load_block(neuron, shared))
    rem = Emitter(recompute_g, CSpelling(single),
                  _step_inputs(neuron, rids, single, "S{k}[i]", shared), "n")
    for o in routs["states"]:
        rem.emit(o)
    for node in kept:
        rem.emit(node)
    rbody = "\n        ".join(
        rem.lines
        + [f"buf[({e} * T + t) * n + i] = {rem.name(node)};" for node, e in slot.items()]
        + [f"S{k}[i] = {rem.name(o)};" for k, o in enumerate(routs["states"])])
    init = "\n  ".join(
        [f"REAL G{k}[BLK]; for (int64_t i = 0; i < n; i++) G{k}[i] = "
         f"{'j->gst[%d][i0 + i]' % k if has_gv[k] else '(REAL)0'};" for k in range(K)]
        + [f"REAL GP{k}[BLK]; for (int64_t i = 0; i < n; i++) GP{k}[i] = 0;" for k in range(M)]
        + ["REAL GTH[BLK]; for (int64_t i = 0; i < n; i++) GTH[i] = 0;"])
    finals = "\n  ".join(
        [f"for (int64_t i = 0; i < n; i++) j->gst0[{k}][i0 + i] = "
         f"present0[{k}] ? G{k}[i] : (REAL)0;" for k in range(K) if need[M + 1 + k]]
        + [f"if (j->gpar[{k}]) for (int64_t i = 0; i < n; i++) j->gpar[{k}][i0 + i] = GP{k}[i];"
           for k in range(M)]
        + ["if (j->gth) for (int64_t i = 0; i < n; i++) j->gth[i0 + i] = GTH[i];"])
    # which cotangents of the initial state are present: those out of the block run at t = 0
    present0 = (f"const int64_t rl = T - 1, last = rl < {len(patterns)} ? rl : "
                f"{fix} + (rl - {fix}) % {period};\n  const int *present0 = OUT_PRESENT[last];")
    if dtype in ("float32", "float64"):
        gx_io = ("#define STREAM_GX 1\n#define PUTG(p, tmp, v) ((tmp)[i] = (v))\n"
                 "#define OUTG(p, tmp) out_row((tmp), (p), n, nt)\n")
    else:
        gx_io = "#define STREAM_GX 0\n#define PUTG PUT\n#define OUTG OUT\n"
    src = (_preamble(neuron, dtype, BACKWARD_BLOCK, max(len(kept), 1)) + _FAST_EXP
           + "#define FWD_ROWS 1\n"
           + f"#define PF_AHEAD {PF_AHEAD}\n#define PF_ALL {PF_ALL}\n"
           + gx_io) + f"""
static void fwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{ (void)j; (void)i0; (void)n; (void)buf; }}
static const int OUT_PRESENT[{len(patterns)}][{K}] = {{{out_table}}};
static void bwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{
  REAL XF[BLK], GSF[BLK], GHF[BLK], SGF[BLK], GXF[BLK];  /* rows in the compute type (float16) */
  (void)XF; (void)GSF; (void)GHF; (void)SGF; (void)GXF;
  {load}
  const int64_t row = n * (int64_t)sizeof(IO);
  /* rows of gs (gh, sg) prefetched ahead: all of them in the recompute where they fit in
     the cache beside the kept values, else `ahead` steps before the walk back reads them */
  const int64_t ahead = T * row <= PF_ALL ? T : PF_AHEAD / row + 1;
  const int nt = STREAM_GX && T * N * (int64_t)sizeof(IO) >= NT_BYTES;  /* gx streamed */
  const int64_t next = i0 + n < N ? (N - i0 - n < n ? N - i0 - n : n) * (int64_t)sizeof(IO) : 0;
  for (int64_t t = 0; t < T; t++) {{  /* recompute the states before every step */
    const IO *restrict xt = j->x + t * N + i0;
    IN(xt, XF);
    if (t >= T - ahead) {{  /* the rows the walk back reads first */
      if (j->gs) pf_read(j->gs + t * N + i0, row);
      if (j->gh) pf_read(j->gh + t * N + i0, row);
      if (j->sg) pf_read(j->sg + t * N + i0, row);
    }}
    if (!nt) pf_write(j->gx + t * N + i0, row);
    for (int64_t i = 0; i < n; i++) {{
        {rbody}
    }}
  }}
  {init}
  for (int64_t t = T - 1; t >= 0; t--) {{
    const int64_t r = T - 1 - t;
    const IO *restrict xt = j->x + t * N + i0;
    const IO *restrict gst = j->gs ? j->gs + t * N + i0 : NULL;
    const IO *restrict ght = j->gh ? j->gh + t * N + i0 : NULL;
    const IO *restrict sgt = j->sg ? j->sg + t * N + i0 : NULL;
    IO *restrict gxt = j->gx + t * N + i0;
    (void)xt; (void)gst; (void)ght; (void)sgt;
    {'IN(xt, XF);' if reads_x else ''}
    if (t >= ahead) {{  /* the rows it reads `ahead` steps on */
      const int64_t ta = (t - ahead) * N + i0;
      if (gst) pf_read(j->gs + ta, row);
      if (ght) pf_read(j->gh + ta, row);
      if (sgt) pf_read(j->sg + ta, row);
    }}
    if (gst) IN(gst, GSF);
    if (ght) IN(ght, GHF);
    if (sgt) IN(sgt, SGF);
    {add_traces}
    {pre}
    {dispatch}
    OUTG(gxt, GXF);
    if (next) pf_read(j->x + t * N + i0 + n, next);  /* the next block's recompute */
  }}
  nt_fence(nt);
  {present0 if any(need[M + 1:]) else ''}
  {finals}
}}
""" + _RUN
    return src
