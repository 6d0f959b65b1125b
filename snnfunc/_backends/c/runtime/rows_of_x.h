/*! snnfunc's C runtime: a step's row of x, read in place whatever its layout allows.
    Pasted into every generated kernel source after this comment (see skeleton.py). */
/* x[t, i] for the block's neurons i0 <= i < i0 + n: where one step of x is contiguous (an
   expanded input, whose steps are 0 apart, too) the row itself; else x's step is rows of xc
   contiguous values (a batch-first input: one row per sample), gathered into g */
static inline const IO *x_row(const job_t *j, int64_t t, int64_t i0, int64_t n, IO *g) {
  const IO *base = j->x + t * j->sxt;
  if (j->xc >= j->N) return base + i0;
  for (int64_t i = 0; i < n;) {
    const int64_t k = i0 + i, c = k % j->xc;
    const int64_t len = j->xc - c < n - i ? j->xc - c : n - i;
    memcpy(g + i, base + (k / j->xc) * j->sxr + c, (size_t)len * sizeof(IO));
    i += len;
  }
  return g;
}
