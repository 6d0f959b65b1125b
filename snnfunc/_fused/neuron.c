/* Fused multi-step spiking neurons for the CPU: the whole time loop in one call.
 *
 * Layout: x, spikes, h and the gradients are [T, N] (time-major, contiguous); v0, the
 * parameter p (tau for LIF, k for PLIF, w for RIF) and the threshold are [N].
 * The forward pass uses exactly the operations of snnfunc.functional.neurons.charge and
 * fire_reset, in the same order, so its spikes and voltages equal the reference bit for bit
 * (built with -ffp-contract=off and without -ffast-math). The backward pass saves nothing but
 * the input: it recomputes H for a block of neurons into a small buffer, then runs BPTT.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double exp(double);

enum { K_IF = 0, K_LIF = 1, K_PLIF = 2, K_RIF = 3 };
/* every (kind, decay_input, hard reset) the kernels are specialised for */
#define NEURON_VARIANTS(X) \
  X(K_IF, 1, 1) X(K_IF, 1, 0) \
  X(K_LIF, 1, 1) X(K_LIF, 1, 0) X(K_LIF, 0, 1) X(K_LIF, 0, 0) \
  X(K_PLIF, 1, 1) X(K_PLIF, 1, 0) X(K_PLIF, 0, 1) X(K_PLIF, 0, 0) \
  X(K_RIF, 1, 1) X(K_RIF, 1, 0)
enum { E_ALLOC = 1, E_KIND = 2, E_SURROGATE = 4 }; /* error bits returned to Python */
#define BLK 512           /* neurons per block at most */
#define BUF_BYTES 524288  /* budget for the recomputed H of one block (in L2) */

typedef struct {
  int64_t T, N;
  int kind, decay, hard, detach, sg_id;
  double vr, sa, sb, sc;
  const void *x, *v0, *p, *th, *gs, *gvT, *gh, *sg;
  void *s, *h, *vout, *gx, *gv0, *gp, *gth;
  int64_t v0_stride, p_stride, th_stride; /* 0: one value for every neuron, 1: one each */
  int64_t block;
} job_t;

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#define ABS fabsf
#include "neuron_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef ABS

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define ABS fabs
#include "neuron_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef ABS

/* Blocks of neurons run in parallel on OpenMP threads. Linked against libgomp.so.1, the
 * runtime torch itself has loaded, so the kernel shares torch's thread pool instead of
 * competing with it. */
static int run(job_t *j, int dtype, int backward, int nthreads) {
  if (dtype != 0 && dtype != 1) return E_KIND;
  int64_t size = dtype ? 8 : 4;
  int64_t block = BUF_BYTES / (size * (j->T > 0 ? j->T : 1));
  block = block < 16 ? 16 : (block > BLK ? BLK : (block / 16) * 16);
  j->block = block;
  int64_t nblocks = (j->N + block - 1) / block;
  if (nthreads > nblocks) nthreads = (int)nblocks;
  if ((int64_t)j->T * j->N < 32768) nthreads = 1;
  if (nthreads < 1) nthreads = 1;
  int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
  {
    void *buf = NULL;
    if (backward) {
      buf = malloc((size_t)j->T * (size_t)block * (size_t)size + 64);
      if (!buf) failed |= E_ALLOC;
    }
    /* every thread enters the loop (a worksharing loop must be met by all of them) */
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
      int64_t i0 = b * block, n = j->N - i0 < block ? j->N - i0 : block;
      if (backward && !buf) {
        failed |= E_ALLOC;
        continue;
      }
      if (dtype == 0) {
        if (backward) failed |= backward_block_f32(j, i0, n, (float *)buf);
        else failed |= forward_block_f32(j, i0, n);
      } else {
        if (backward) failed |= backward_block_f64(j, i0, n, (double *)buf);
        else failed |= forward_block_f64(j, i0, n);
      }
    }
    free(buf);
  }
  return failed;
}

int snn_forward(int dtype, int64_t T, int64_t N, int kind, int decay, int hard, double vr,
                const void *x, const void *v0, const void *p, const void *th,
                void *s, void *h, void *vout, int64_t v0_stride, int64_t p_stride,
                int64_t th_stride, int nthreads) {
  job_t j;
  memset(&j, 0, sizeof j);
  j.v0_stride = v0_stride; j.p_stride = p_stride; j.th_stride = th_stride;
  j.T = T; j.N = N; j.kind = kind; j.decay = decay; j.hard = hard; j.vr = vr;
  j.x = x; j.v0 = v0; j.p = p; j.th = th; j.s = s; j.h = h; j.vout = vout;
  return run(&j, dtype, 0, nthreads);
}

int snn_backward(int dtype, int64_t T, int64_t N, int kind, int decay, int hard, int detach,
                 double vr, int sg_id, double sa, double sb, double sc,
                 const void *x, const void *v0, const void *p, const void *th,
                 const void *gs, const void *gvT, const void *gh, const void *sg,
                 void *gx, void *gv0, void *gp, void *gth, int64_t v0_stride,
                 int64_t p_stride, int64_t th_stride, int nthreads) {
  job_t j;
  memset(&j, 0, sizeof j);
  j.v0_stride = v0_stride; j.p_stride = p_stride; j.th_stride = th_stride;
  j.T = T; j.N = N; j.kind = kind; j.decay = decay; j.hard = hard; j.detach = detach;
  j.vr = vr; j.sg_id = sg_id; j.sa = sa; j.sb = sb; j.sc = sc;
  j.x = x; j.v0 = v0; j.p = p; j.th = th; j.gs = gs; j.gvT = gvT; j.gh = gh; j.sg = sg;
  j.gx = gx; j.gv0 = gv0; j.gp = gp; j.gth = gth;
  return run(&j, dtype, 1, nthreads);
}
