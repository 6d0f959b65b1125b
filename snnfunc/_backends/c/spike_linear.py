"""`x @ weight.T + bias` that skips the zeros of `x`, in C, for `snnfunc.sparse.SpikeLinear`:
each row of the output starts at the bias (or 0) and adds `v * weight[:, k]` for every value
`v != 0` of its row of `x` (NaN included) in order of `k`; the weight's gradient adds
`v * g[m, :]` into its row `k` for the same values, in order of `m`. Products and sums round
as IEEE's `*` and `+` (no FMA contraction), so results agree with a dense product to
rounding. Inputs with many non-zeros, and weights or output gradients with an infinity or NaN
(where a dense product's `0 * inf` is NaN), are left to ATen (the kernels say so: `None`).
Float32 and float64 CPU tensors, rows contiguous; the caller checks the arguments."""

from __future__ import annotations

import array
import functools

import torch

from snnfunc._backends.c import build

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
typedef SNN_T real;
/* x [M, K] (row m at x + m * sx), wt [K, N] (the weight transposed), bias [N] or 0, out
   [M, N]; g [M, N] (row m at g + m * sg), gwt [K, N]; flags: WEIGHT_FINITE where the caller
   has checked that wt holds no infinity or NaN (a stepper, once for all its calls) */
typedef struct { int64_t M, K, N, sx, x, wt, bias, out, g, sg, gwt, flags; } job_t;
#define WEIGHT_FINITE 1
#define SAMPLE 64       /* rows looked at before the work: */
#define DENSE_PCT 20    /* more non-zeros than this (percent): ATen's dense product instead */

static int dense(const job_t *j) {
  const int64_t rows = j->M < SAMPLE ? j->M : SAMPLE;
  int64_t nz = 0;
  for (int64_t m = 0; m < rows; m++) {
    const real *xr = (const real *)(intptr_t)j->x + m * j->sx;
    for (int64_t k = 0; k < j->K; k++) nz += xr[k] != (real)0;
  }
  return nz * 100 > rows * j->K * DENSE_PCT;
}

static int finite(const real *p, int64_t rows, int64_t cols, int64_t stride, int threads) {
  int bad = 0;
  #pragma omp parallel for num_threads(threads) reduction(| : bad) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    int b = 0;
    for (int64_t c = 0; c < cols; c++) { const real v = p[r * stride + c]; b |= (v - v) != (real)0; }
    bad |= b;
  }
  return !bad;
}

/* rows of x in chunks of ROWS (fewer where K is large: a chunk lists at most 2^20 values),
   the non-zeros of a chunk listed once (column, value), then
   the output (or the weight's gradient) computed in blocks of NB columns, so that the block of
   the weight (or of its gradient), K x NB, stays in the cache over the chunk's rows */
#define ROWS_MAX 128
#define ROWS (j->K * ROWS_MAX <= (1 << 20) ? ROWS_MAX : ((1 << 20) / j->K > 0 ? (1 << 20) / j->K : 1))
#define NB 64
/* a thread's lists of one chunk: where each row's entries start (ROWS + 1), their columns and
   values (at most ROWS * K) */
typedef struct { int32_t *at, *col; real *val; } lists_t;
static int lists(lists_t *l, const job_t *j) {
  const int64_t K = j->K;
  l->at = malloc((ROWS + 1) * sizeof(int32_t));
  l->col = malloc((size_t)(ROWS * K + 1) * sizeof(int32_t));
  l->val = malloc((size_t)(ROWS * K + 1) * sizeof(real));
  return l->at && l->col && l->val;
}

/* the non-zeros of one row of K values into col and val (room for K); their number */
static int64_t row_list(const real *xr, int64_t K, int32_t *col, real *val) {
  int64_t c = 0, k = 0;
  for (; k + 32 <= K; k += 32) {  /* a mask of 32 values at a time (vector compares) */
    uint32_t mask = 0;
    for (int q = 0; q < 32; q++) mask |= (uint32_t)(xr[k + q] != (real)0) << q;
    while (mask) {
      const int q = __builtin_ctz(mask);
      mask &= mask - 1;
      col[c] = (int32_t)(k + q); val[c] = xr[k + q]; c++;
    }
  }
  for (; k < K; k++)
    if (xr[k] != (real)0) { col[c] = (int32_t)k; val[c] = xr[k]; c++; }
  return c;
}

static int64_t list(const job_t *j, int64_t m0, int64_t m1, lists_t *l) {
  int64_t c = 0;
  for (int64_t m = m0; m < m1; m++) {
    l->at[m - m0] = (int32_t)c;
    c += row_list((const real *)(intptr_t)j->x + m * j->sx, j->K, l->col + c, l->val + c);
  }
  l->at[m1 - m0] = (int32_t)c;
  return c;
}

static int forward(const job_t *j, int threads) {
  const int64_t K = j->K, N = j->N, M = j->M;
  const real *wt = (const real *)(intptr_t)j->wt, *bias = (const real *)(intptr_t)j->bias;
  if (dense(j) || (!(j->flags & WEIGHT_FINITE) && !finite(wt, K, N, N, threads))) return 1;
  const int64_t chunks = (M + ROWS - 1) / ROWS, blocks = (N + NB - 1) / NB;
  /* fewer chunks than threads (a recurrent layer's step of a few rows): each chunk's blocks
     of columns in parts, a part a work item (each lists its chunk's rows) */
  int64_t parts = chunks < threads ? threads / chunks : 1;
  if (parts > blocks) parts = blocks;
  if (parts < 1) parts = 1;
  const int64_t items = chunks * parts;
  int failed = 0;
  #pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    lists_t l;
    if (!lists(&l, j)) failed = 1;
    #pragma omp for schedule(static)
    for (int64_t it = 0; it < items; it++) {
      if (failed) continue;
      const int64_t ch = it / parts, part = it % parts;
      const int64_t m0 = ch * ROWS, m1 = m0 + ROWS < M ? m0 + ROWS : M;
      const int64_t n1 = (blocks * (part + 1) / parts) * NB;
      list(j, m0, m1, &l);
      for (int64_t n0 = (blocks * part / parts) * NB; n0 < n1 && n0 < N; n0 += NB) {
        const int64_t nb = N - n0 < NB ? N - n0 : NB;
        for (int64_t m = m0; m < m1; m++) {
          real *restrict o = (real *)(intptr_t)j->out + m * N + n0;
          const int32_t c0 = l.at[m - m0], c1 = l.at[m - m0 + 1];
          for (int64_t n = 0; n < nb; n++) o[n] = bias ? bias[n0 + n] : (real)0;
          for (int32_t c = c0; c < c1; c++) {
            const real v = l.val[c];
            const real *restrict w = wt + (int64_t)l.col[c] * N + n0;
            if (v == (real)1) for (int64_t n = 0; n < nb; n++) o[n] = o[n] + w[n];
            else for (int64_t n = 0; n < nb; n++) o[n] = o[n] + v * w[n];
          }
        }
      }
    }
    free(l.at); free(l.col); free(l.val);
  }
  return failed ? 2 : 0;
}

/* the weight's gradient, one thread: rows in chunks, each chunk listed, then added */
static int weight_grad_1(const job_t *j) {
  const int64_t K = j->K, N = j->N, M = j->M;
  const real *g = (const real *)(intptr_t)j->g;
  real *gwt = (real *)(intptr_t)j->gwt;
  lists_t l;
  const int ok = lists(&l, j);
  if (ok) {
    memset(gwt, 0, (size_t)(K * N) * sizeof(real));
    for (int64_t m0 = 0; m0 < M; m0 += ROWS) {
      const int64_t m1 = m0 + ROWS < M ? m0 + ROWS : M;
      list(j, m0, m1, &l);
      for (int64_t m = m0; m < m1; m++) {
        const real *restrict gr = g + m * j->sg;
        for (int32_t c = l.at[m - m0]; c < l.at[m - m0 + 1]; c++) {
          const real v = l.val[c];
          real *restrict o = gwt + (int64_t)l.col[c] * N;
          if (v == (real)1) for (int64_t n = 0; n < N; n++) o[n] = o[n] + gr[n];
          else for (int64_t n = 0; n < N; n++) o[n] = o[n] + v * gr[n];
        }
      }
    }
  }
  free(l.at); free(l.col); free(l.val);
  return ok ? 0 : 2;
}

/* a thread's list of its rows' non-zeros (columns and values), grown as needed */
typedef struct { int32_t *col; real *val; int64_t n, cap; } grown_t;
static int room(grown_t *b, int64_t more) {
  if (b->n + more <= b->cap) return 1;
  int64_t cap = b->cap ? 2 * b->cap : 4096;
  while (cap < b->n + more) cap *= 2;
  int32_t *col = realloc(b->col, (size_t)cap * sizeof(int32_t));
  if (!col) return 0;
  b->col = col;
  real *val = realloc(b->val, (size_t)cap * sizeof(real));
  if (!val) return 0;
  b->val = val;
  b->cap = cap;
  return 1;
}

/* more threads: the rows' non-zeros listed once, a share of the rows a thread; then each
   thread adds every row's, in order of m, into its own part of gwt's columns. Each row of x is
   read once, and every sum is taken in order of m, whatever the number of threads. Two
   parallel regions and nothing between them to wait for: a busy core delays, never stalls */
static int weight_grad(const job_t *j, int threads) {
  const int64_t K = j->K, N = j->N, M = j->M;
  const real *g = (const real *)(intptr_t)j->g;
  real *gwt = (real *)(intptr_t)j->gwt;
  if (dense(j) || !finite(g, M, N, j->sg, threads)) return 1;
  if (threads <= 1 || N < 32 || M < 2 * ROWS) return weight_grad_1(j);
  int64_t *first = malloc((size_t)M * sizeof(int64_t));  /* where row m's entries start */
  int32_t *count = malloc((size_t)M * sizeof(int32_t)), *owner = malloc((size_t)M * sizeof(int32_t));
  grown_t *b = calloc((size_t)threads, sizeof(grown_t));
  int failed = !first || !count || !owner || !b;
  if (!failed) {
    #pragma omp parallel num_threads(threads) reduction(| : failed)
    {
      const int64_t np = omp_get_num_threads(), p = omp_get_thread_num();
      grown_t *mine = &b[p];
      for (int64_t m = M * p / np; m < M * (p + 1) / np && !failed; m++) {
        if (!room(mine, K)) { failed = 1; break; }
        first[m] = mine->n; owner[m] = (int32_t)p;
        const int64_t c = row_list((const real *)(intptr_t)j->x + m * j->sx, K,
                                   mine->col + mine->n, mine->val + mine->n);
        count[m] = (int32_t)c;
        mine->n += c;
      }
    }
  }
  if (!failed) {
    #pragma omp parallel num_threads(threads)
    {
      const int64_t np = omp_get_num_threads(), p = omp_get_thread_num();
      const int64_t n0 = N * p / np, nb = N * (p + 1) / np - n0;
      /* the part's rows side by side in a buffer of the thread's own (in gwt they are N apart:
         fewer of them fit the cache's sets), copied into gwt at the end; gwt itself without */
      real *own = calloc((size_t)(K * nb) + 1, sizeof(real));
      real *part = own ? own : gwt + n0;
      const int64_t ld = own ? nb : N;
      if (!own)
        for (int64_t k = 0; k < K; k++) memset(gwt + k * N + n0, 0, (size_t)nb * sizeof(real));
      for (int64_t m = 0; m < M; m++) {
        const real *restrict gr = g + m * j->sg + n0;
        const int32_t *col = b[owner[m]].col + first[m];
        const real *val = b[owner[m]].val + first[m];
        for (int32_t c = 0; c < count[m]; c++) {
          const real v = val[c];
          real *restrict o = part + (int64_t)col[c] * ld;
          if (v == (real)1) for (int64_t n = 0; n < nb; n++) o[n] = o[n] + gr[n];
          else for (int64_t n = 0; n < nb; n++) o[n] = o[n] + v * gr[n];
        }
      }
      if (own) {
        for (int64_t k = 0; k < K; k++)
          memcpy(gwt + k * N + n0, own + k * nb, (size_t)nb * sizeof(real));
        free(own);
      }
    }
  }
  for (int p = 0; b && p < threads; p++) { free(b[p].col); free(b[p].val); }
  free(b); free(first); free(count); free(owner);
  return failed ? 2 : 0;
}

int snn_run(void *job, int back, int threads) {
  return back ? weight_grad((const job_t *)job, threads) : forward((const job_t *)job, threads);
}
"""

_DTYPES = {torch.float32: "float", torch.float64: "double"}


def runs(t: torch.Tensor) -> bool:
    """Whether the C kernels take `t` here: a float32 or float64 CPU tensor, a C compiler."""
    return t.device.type == "cpu" and t.dtype in _DTYPES and build.error() is None


@functools.lru_cache(maxsize=None)
def _lib(dtype):
    return build.build(f"#define SNN_T {_DTYPES[dtype]}\n" + _SOURCE)


_WEIGHT_FINITE = 1  # the job's flags (see the source)


def _run(dtype, fields, backward) -> int:
    job = array.array("q", fields)
    return _lib(dtype).snn_run(job.buffer_info()[0], int(backward), torch.get_num_threads())


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """`x @ weight.T + bias` for `x` [M, K] (rows contiguous), `weight` [N, K], `bias` [N] or
    None, all of one dtype (`runs`); None where ATen's dense product should compute it."""
    out = x.new_empty((x.shape[0], weight.shape[0]))
    return out if _stepper(weight, bias, checked=False)(x, out) else None


def stepper(weight: torch.Tensor, bias: torch.Tensor | None):
    """`run(x, out) -> bool`: `forward(x, weight, bias)` into `out` `[M, N]` (contiguous) for
    many `x` of one weight, transposed and checked for infinities and NaNs once here; False
    where ATen's dense product should compute it (nothing written then)."""
    return _stepper(weight, bias, checked=True)


def _stepper(weight, bias, checked):
    wt = weight.t().clone(memory_format=torch.contiguous_format)  # (a copy: checked below)
    b = bias.contiguous() if bias is not None else None
    N, K = weight.shape
    # a weight found finite here is not looked at again by the kernel (a [256, 256] weight:
    # a quarter of a recurrent step's product); one that is not, the kernel refuses each time
    flags = _WEIGHT_FINITE if checked and bool(torch.isfinite(wt).all()) else 0

    def run(x: torch.Tensor, out: torch.Tensor) -> bool:
        M = x.shape[0]
        if M == 0 or K == 0 or N == 0:
            return False
        return not _run(x.dtype, [M, K, N, x.stride(0), x.data_ptr(), wt.data_ptr(),
                                  b.data_ptr() if b is not None else 0, out.data_ptr(), 0, 0, 0,
                                  flags], False)
    return run


def weight_grad(x: torch.Tensor, g: torch.Tensor):
    """`g.T @ x` [N, K] for `x` [M, K] and `g` [M, N] (rows contiguous, one dtype, `runs`);
    None where ATen's dense product should compute it."""
    M, K = x.shape
    N = g.shape[1]
    if M == 0 or K == 0 or N == 0:
        return None
    gwt = x.new_empty((K, N))
    code = _run(x.dtype, [M, K, N, x.stride(0), x.data_ptr(), 0, 0, 0, g.data_ptr(), g.stride(0),
                          gwt.data_ptr(), 0], True)
    return None if code else gwt.t().contiguous()
