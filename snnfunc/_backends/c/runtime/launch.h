/*! snnfunc's C runtime: The launch: blocks of neurons on OpenMP threads; the entry point `snn_run`.
    Pasted into every generated kernel source after this comment (see skeleton.py). */

/* nthreads: the host's choice (host.threads_for: one below PARALLEL_FROM neuron-steps) */
static int run(job_t *j, int backward, int nthreads) {
  /* forward: blocks of BLK neurons; backward: as many as fit the buffer of their kept values */
  int64_t per = (int64_t)sizeof(REAL) * (j->T > 0 ? j->T : 1) * NBUF;
  int64_t block = backward ? BUF_BYTES / per : BLK;
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
