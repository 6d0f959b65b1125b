"""Max-pooling with kernel = stride = k, in C, for `snnfunc.memory.MaxPool2d`: the output and,
per output, the offset `dy * k + dx` of the chosen element inside its window (one byte), and
the gradient of the input from the output's gradient and those offsets. ATen's rules, so
values and gradients are `torch.nn.MaxPool2d(k)`'s bit for bit: the window scanned row by
row, an element taken where it is greater than the maximum so far or NaN (the first of equal
values; the last NaN), the maximum starting at -inf with the window's first element; the
input's gradient 0 + g at the chosen element and 0 elsewhere (ATen adds g into zeros).
Float32 and float64 contiguous CPU tensors; the caller checks the arguments."""

from __future__ import annotations

import array
import functools

import torch

from snnfunc._backends.c import build

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
typedef SNN_T real;
typedef struct { int64_t planes, H, W, k, x, out, off, g, gx; } job_t;

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
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < j->planes; p++) {
    const real *gp = g + p * Ho * Wo;
    const uint8_t *fp = off + p * Ho * Wo;
    real *xp = gx + p * H * W;
    for (int64_t row = 0; row < H; row++) {
      real *r = xp + row * W;
      int64_t y = row / k, dy = row % k;
      if (y >= Ho) {
        for (int64_t c = 0; c < W; c++) r[c] = (real)0;
        continue;
      }
      const real *gy = gp + y * Wo;
      const uint8_t *fy = fp + y * Wo;
      if (k == 2) {
        const int a0 = (int)(2 * dy), a1 = a0 + 1;
        for (int64_t i = 0; i < Wo; i++) {
          real v = (real)0 + gy[i];
          int at = fy[i];
          r[2 * i] = at == a0 ? v : (real)0;
          r[2 * i + 1] = at == a1 ? v : (real)0;
        }
      } else {
        for (int64_t i = 0; i < Wo; i++) {
          int at = fy[i];
          real v = (real)0 + gy[i];
          for (int64_t dx = 0; dx < k; dx++)
            r[i * k + dx] = at == dy * k + dx ? v : (real)0;
        }
      }
      for (int64_t c = Wo * k; c < W; c++) r[c] = (real)0;
    }
  }
}

int snn_run(void *job, int back, int threads) {
  if (back) backward((const job_t *)job, threads);
  else forward((const job_t *)job, threads);
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


def forward(x: torch.Tensor, k: int):
    """`(out, offsets)` of `x` [N, C, H, W] (contiguous, `runs(x)`)."""
    n, c, H, W = x.shape
    out = x.new_empty((n, c, H // k, W // k))
    off = torch.empty(out.shape, dtype=torch.uint8)
    if out.numel():
        _run(_lib(x.dtype), [n * c, H, W, k, x.data_ptr(), out.data_ptr(), off.data_ptr(), 0, 0],
             False)
    return out, off


def backward(g: torch.Tensor, off: torch.Tensor, H: int, W: int, k: int):
    """The input's gradient [N, C, H, W] from `g` and `off` (contiguous, the pooled shape,
    each offset below k * k: checked by the caller)."""
    n, c = off.shape[:2]
    gx = g.new_empty((n, c, H, W))
    if gx.numel():
        _run(_lib(g.dtype), [n * c, H, W, k, 0, 0, off.data_ptr(), g.data_ptr(),
                             gx.data_ptr()], True)
    return gx
