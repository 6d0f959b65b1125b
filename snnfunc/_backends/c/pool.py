"""Max-pooling with kernel = stride = k, in C, for `snnfunc.memory.MaxPool2d`: the output and,
per output, the offset `dy * k + dx` of the chosen element inside its window (one byte), and
the gradient of the input from the output's gradient and those offsets. ATen's rules, so
values and gradients are `torch.nn.MaxPool2d(k)`'s bit for bit: the window scanned row by
row, an element taken where it is greater than the maximum so far or NaN (the first of equal
values; the last NaN), the maximum starting at -inf with the window's first element; the
input's gradient 0 + g at the chosen element and 0 elsewhere (ATen adds g into zeros).
Float32 and float64 CPU tensors, contiguous or channels-last (the outputs, the offsets and
the input's gradient in the input's layout); the caller checks the arguments."""

from __future__ import annotations

import array
import functools

import torch

from snnfunc._backends.c import build

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
typedef SNN_T real;
typedef struct { int64_t planes, H, W, k, x, out, off, g, gx, C; } job_t;
/* C == 0: planes [H, W] one after another (contiguous [N, C, H, W]); C > 0: planes images
   [H, W, C] (channels-last [N, C, H, W]), each window's elements C values apart in memory */

static void forward(const job_t *j, int threads) {
  const int64_t H = j->H, W = j->W, k = j->k, Ho = H / k, Wo = W / k;
  const real *x = (const real *)(intptr_t)j->x;
  real *out = (real *)(intptr_t)j->out;
  uint8_t *off = (uint8_t *)(intptr_t)j->off;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < j->planes; p++) {
    const real *xp = x + p * H * W;
    real *op = out + p * Ho * Wo;
    uint8_t *fp = off + p * Ho * Wo;
    for (int64_t y = 0; y < Ho; y++) {
      if (k == 2) {  /* branch-free (spikes are unpredictable), vectorisable */
        const real *r0 = xp + 2 * y * W, *r1 = r0 + W;
        for (int64_t i = 0; i < Wo; i++) {
          real best = r0[2 * i], v;  /* > -inf or NaN: taken; -inf: the first, as ATen */
          int at = 0, c;
          v = r0[2 * i + 1]; c = (v > best) | (v != v); best = c ? v : best; at = c ? 1 : at;
          v = r1[2 * i];     c = (v > best) | (v != v); best = c ? v : best; at = c ? 2 : at;
          v = r1[2 * i + 1]; c = (v > best) | (v != v); best = c ? v : best; at = c ? 3 : at;
          op[y * Wo + i] = best;
          fp[y * Wo + i] = (uint8_t)at;
        }
        continue;
      }
      for (int64_t i = 0; i < Wo; i++) {
        const real *w0 = xp + y * k * W + i * k;
        real best = -INFINITY;
        int at = 0;
        for (int64_t dy = 0; dy < k; dy++)
          for (int64_t dx = 0; dx < k; dx++) {
            real v = w0[dy * W + dx];
            if (v > best || isnan(v)) { best = v; at = (int)(dy * k + dx); }
          }
        op[y * Wo + i] = best;
        fp[y * Wo + i] = (uint8_t)at;
      }
    }
  }
}

static void backward(const job_t *j, int threads) {
  const int64_t H = j->H, W = j->W, k = j->k, Ho = H / k, Wo = W / k;
  const real *g = (const real *)(intptr_t)j->g;
  const uint8_t *off = (const uint8_t *)(intptr_t)j->off;
  real *gx = (real *)(intptr_t)j->gx;
  int64_t at[256];  /* offset dy * k + dx -> dy * W + dx (k <= 16) */
  for (int64_t a = 0; a < k * k; a++) at[a] = (a / k) * W + a % k;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < j->planes; p++) {  /* zeros, then 0 + g at each chosen element */
    const real *gp = g + p * Ho * Wo;
    const uint8_t *fp = off + p * Ho * Wo;
    real *xp = gx + p * H * W;
    for (int64_t c = 0; c < H * W; c++) xp[c] = (real)0;
    for (int64_t y = 0; y < Ho; y++) {
      real *w0 = xp + y * k * W;
      for (int64_t i = 0; i < Wo; i++)
        w0[i * k + at[fp[y * Wo + i]]] = (real)0 + gp[y * Wo + i];
    }
  }
}

static void forward_cl(const job_t *j, int threads) {
  const int64_t H = j->H, W = j->W, k = j->k, C = j->C, Ho = H / k, Wo = W / k;
  const real *x = (const real *)(intptr_t)j->x;
  real *out = (real *)(intptr_t)j->out;
  uint8_t *off = (uint8_t *)(intptr_t)j->off;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < j->planes * Ho; p++) {  /* image p / Ho, output row p % Ho */
    const int64_t n = p / Ho, y = p % Ho;
    for (int64_t i = 0; i < Wo; i++) {
      const real *w0 = x + ((n * H + y * k) * W + i * k) * C;
      real *o = out + ((n * Ho + y) * Wo + i) * C;
      uint8_t *f = off + ((n * Ho + y) * Wo + i) * C;
      if (k == 2) {  /* the four elements of each channel's window at once */
        const real *r00 = w0, *r01 = w0 + C, *r10 = w0 + W * C, *r11 = r10 + C;
        for (int64_t c = 0; c < C; c++) {
          real best = r00[c], v;  /* > -inf or NaN: taken; -inf: the first, as ATen */
          int at = 0, t;
          v = r01[c]; t = (v > best) | (v != v); best = t ? v : best; at = t ? 1 : at;
          v = r10[c]; t = (v > best) | (v != v); best = t ? v : best; at = t ? 2 : at;
          v = r11[c]; t = (v > best) | (v != v); best = t ? v : best; at = t ? 3 : at;
          o[c] = best;
          f[c] = (uint8_t)at;
        }
        continue;
      }
      for (int64_t c = 0; c < C; c++) {
        o[c] = w0[c];
        f[c] = 0;
      }
      for (int64_t a = 1; a < k * k; a++) {  /* the window row by row, as ATen scans it */
        const real *r = w0 + ((a / k) * W + a % k) * C;
        for (int64_t c = 0; c < C; c++) {
          const real v = r[c], best = o[c];
          const int take = (v > best) | (v != v);
          o[c] = take ? v : best;
          f[c] = take ? (uint8_t)a : f[c];
        }
      }
    }
  }
}

static void backward_cl(const job_t *j, int threads) {
  const int64_t H = j->H, W = j->W, k = j->k, C = j->C, Ho = H / k, Wo = W / k;
  const real *g = (const real *)(intptr_t)j->g;
  const uint8_t *off = (const uint8_t *)(intptr_t)j->off;
  real *gx = (real *)(intptr_t)j->gx;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < j->planes * H; p++) {  /* image p / H, input row p % H */
    const int64_t n = p / H, row = p % H, y = row / k, dy = row % k;
    real *r = gx + p * W * C;
    if (y >= Ho) {
      for (int64_t c = 0; c < W * C; c++) r[c] = (real)0;
      continue;
    }
    for (int64_t col = 0; col < Wo * k; col++) {
      const int64_t at = ((n * Ho + y) * Wo + col / k) * C;
      const real *gy = g + at;
      const uint8_t *fy = off + at;
      const int a = (int)(dy * k + col % k);
      real *rc = r + col * C;
      for (int64_t c = 0; c < C; c++) rc[c] = fy[c] == a ? (real)0 + gy[c] : (real)0;
    }
    for (int64_t c = Wo * k * C; c < W * C; c++) r[c] = (real)0;
  }
}

int snn_run(void *job, int back, int threads) {
  const job_t *j = (const job_t *)job;
  if (j->C) {
    if (back) backward_cl(j, threads);
    else forward_cl(j, threads);
    return 0;
  }
  if (back) backward(j, threads);
  else forward(j, threads);
  return 0;
}
"""

_DTYPES = {torch.float32: "float", torch.float64: "double"}


def runs(t: torch.Tensor) -> bool:
    """Whether the C pool takes `t` here: a float32 or float64 CPU tensor, a C compiler."""
    return t.device.type == "cpu" and t.dtype in _DTYPES and build.error() is None


@functools.lru_cache(maxsize=None)
def _lib(dtype):
    return build.build(f"#define SNN_T {_DTYPES[dtype]}\n" + _SOURCE,
                       without=("--param=vect-epilogues-nomask=0",))


def _run(lib, fields, backward):
    job = array.array("q", fields)
    lib.snn_run(job.buffer_info()[0], int(backward), torch.get_num_threads())


def forward(x: torch.Tensor, k: int, channels_last: bool = False):
    """`(out, offsets)` of `x` [N, C, H, W] (`runs(x)`; contiguous, or channels-last where
    `channels_last`: the outputs too)."""
    n, c, H, W = x.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, c, H // k, W // k), dtype=x.dtype, memory_format=fmt)
    off = torch.empty(out.shape, dtype=torch.uint8, memory_format=fmt)
    planes, C = (n, c) if channels_last else (n * c, 0)
    if out.numel():
        _run(_lib(x.dtype), [planes, H, W, k, x.data_ptr(), out.data_ptr(), off.data_ptr(), 0, 0,
                             C], False)
    return out, off


def backward(g: torch.Tensor, off: torch.Tensor, H: int, W: int, k: int,
             channels_last: bool = False):
    """The input's gradient [N, C, H, W] from `g` and `off` (the pooled shape, each offset
    below k * k: checked by the caller; both contiguous, or both channels-last where
    `channels_last`: the gradient too)."""
    n, c = off.shape[:2]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gx = torch.empty((n, c, H, W), dtype=g.dtype, memory_format=fmt)
    planes, C = (n, c) if channels_last else (n * c, 0)
    if gx.numel():
        _run(_lib(g.dtype), [planes, H, W, k, 0, 0, off.data_ptr(), g.data_ptr(),
                             gx.data_ptr(), C], True)
    return gx
