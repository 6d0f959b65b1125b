/* One dtype's kernels; included by neuron.c with REAL, SFX and EXP defined. */

#define INL static inline __attribute__((always_inline))

/* H_t from V_{t-1} and X_t: the same expressions as snnfunc.functional.neurons.charge */
INL REAL SFX(charge)(const int kind, const int decay, REAL x, REAL v, REAL p, REAL vr) {
  if (kind == K_IF) return v + x;
  if (kind == K_LIF) return decay ? v + (x - (v - vr)) / p : v - (v - vr) / p + x;
  if (kind == K_PLIF) return decay ? v + (x - (v - vr)) * p : v - (v - vr) * p + x;
  return v + p * (v - vr) + x;
}

/* V_t from H_t (fire, then reset) */
INL REAL SFX(reset)(const int hard, REAL h, REAL th, REAL vr) {
  return (h - th >= 0) ? (hard ? vr : h - th) : h;
}

INL void SFX(load)(const job_t *j, int64_t i0, int64_t n, REAL *v, REAL *p, REAL *th) {
  const REAL *v0 = (const REAL *)j->v0, *pp = (const REAL *)j->p, *tt = (const REAL *)j->th;
  const int64_t vs = j->v0_stride, ps = j->p_stride, ts = j->th_stride;
  for (int64_t i = 0; i < n; i++) {
    v[i] = v0[(i0 + i) * vs];
    p[i] = pp ? pp[(i0 + i) * ps] : (REAL)1;
    th[i] = tt[(i0 + i) * ts];
  }
}

INL void SFX(forward_spec)(const job_t *j, int64_t i0, int64_t n, const int kind,
                           const int decay, const int hard, const int want_h) {
  REAL v[BLK], p[BLK], th[BLK];
  SFX(load)(j, i0, n, v, p, th);
  const REAL vr = (REAL)j->vr;
  const int64_t N = j->N;
  for (int64_t t = 0; t < j->T; t++) {
    const REAL *restrict xt = (const REAL *)j->x + t * N + i0;
    REAL *restrict st = (REAL *)j->s + t * N + i0;
    REAL *restrict ht = want_h ? (REAL *)j->h + t * N + i0 : NULL;
    for (int64_t i = 0; i < n; i++) {
      REAL h = SFX(charge)(kind, decay, xt[i], v[i], p[i], vr);  /* charge */
      int fire = h - th[i] >= 0;                                /* fire */
      st[i] = fire ? (REAL)1 : (REAL)0;
      if (want_h) ht[i] = h;
      v[i] = fire ? (hard ? vr : h - th[i]) : h;                /* reset */
    }
  }
  REAL *vout = (REAL *)j->vout + i0;
  for (int64_t i = 0; i < n; i++) vout[i] = v[i];
}

/* 0, or E_KIND for a (kind, decay_input, hard) that no kernel is specialised for */
static int SFX(forward_block)(const job_t *j, int64_t i0, int64_t n) {
  const int want_h = j->h != NULL;
#define FWD(K, D, H) \
  if (j->kind == K && j->decay == D && j->hard == H) { \
    if (want_h) SFX(forward_spec)(j, i0, n, K, D, H, 1); \
    else SFX(forward_spec)(j, i0, n, K, D, H, 0); \
    return 0; }
  NEURON_VARIANTS(FWD)
#undef FWD
  return E_KIND;
}

/* g'(u) for a row of n values: the built-in surrogates of snnfunc.surrogate; 0, or
 * E_SURROGATE for an id this kernel does not know */
static int SFX(surrogate_row)(int id, REAL a, REAL b, REAL c, const REAL *restrict u,
                               REAL *restrict g, int64_t n) {
  const REAL pi = (REAL)3.14159265358979323846;
  switch (id) {
  case 0: /* Sigmoid(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL s = (REAL)1 / ((REAL)1 + EXP(-a * u[i]));
      g[i] = a * s * ((REAL)1 - s);
    }
    break;
  case 1: /* BilinearLeakyReLU(a, b, c) */
    for (int64_t i = 0; i < n; i++) g[i] = (u[i] >= -c && u[i] <= c) ? a : b;
    break;
  case 2: /* SignSwish(beta) */
    for (int64_t i = 0; i < n; i++) {
      REAL y = ABS(a * u[i]);
      REAL e = EXP(-y);
      REAL tanh_half = ((REAL)1 - e) / ((REAL)1 + e);
      REAL cosh_y = ((REAL)1 / e + e) / (REAL)2;
      g[i] = a * ((REAL)2 - y * tanh_half) / ((REAL)1 + cosh_y);
    }
    break;
  case 3: /* ATan(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL z = pi / (REAL)2 * a * u[i];
      g[i] = (a / (REAL)2) / ((REAL)1 + z * z);
    }
    break;
  case 4: /* PiecewiseQuadratic(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL m = ABS(u[i]);
      g[i] = m <= (REAL)1 / a ? a - a * a * m : (REAL)0;
    }
    break;
  case 5: /* PiecewiseExp(alpha) */
    for (int64_t i = 0; i < n; i++) g[i] = a / (REAL)2 * EXP(-a * ABS(u[i]));
    break;
  case 6: /* SoftSign(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL d = (REAL)1 / a + ABS(u[i]);
      g[i] = (REAL)1 / ((REAL)2 * a * d * d);
    }
    break;
  case 7: /* Erf(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL z = a * u[i];
      g[i] = a / (REAL)1.7724538509055160273 * EXP(-z * z);
    }
    break;
  case 8: /* SuperSpike(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL d = a * ABS(u[i]) + (REAL)1;
      g[i] = (REAL)1 / (d * d);
    }
    break;
  case 9: /* PiecewiseLeakyReLU(w, c) */
    for (int64_t i = 0; i < n; i++) g[i] = ABS(u[i]) < a ? (REAL)1 / ((REAL)2 * a) : b;
    break;
  case 10: /* Rect(alpha) */
    for (int64_t i = 0; i < n; i++) g[i] = ABS(u[i]) < a / (REAL)2 ? (REAL)1 / a : (REAL)0;
    break;
  case 11: /* Triangle(alpha) */
    for (int64_t i = 0; i < n; i++) {
      REAL r = (REAL)1 - ABS(u[i]) / a;
      g[i] = (r < 0 ? (REAL)0 : r) / a; /* NaN stays NaN, as torch.where */
    }
    break;
  case 12: /* StraightThrough */
    for (int64_t i = 0; i < n; i++) g[i] = (REAL)1;
    break;
  default:
    return E_SURROGATE;
  }
  return 0;
}

INL int SFX(backward_spec)(const job_t *j, int64_t i0, int64_t n, REAL *restrict hb,
                            const int kind, const int decay, const int hard, const int want_gp) {
  REAL v[BLK], p[BLK], th[BLK], gv[BLK], gp[BLK], gth[BLK], u[BLK], sgr[BLK], vp[BLK], ex[BLK];
  SFX(load)(j, i0, n, v, p, th);
  const REAL vr = (REAL)j->vr;
  const int64_t N = j->N, T = j->T;
  const int detach = j->detach;
  /* recompute H for this block */
  for (int64_t t = 0; t < T; t++) {
    const REAL *restrict xt = (const REAL *)j->x + t * N + i0;
    REAL *restrict ht = hb + t * n;
    for (int64_t i = 0; i < n; i++) {
      REAL h = SFX(charge)(kind, decay, xt[i], v[i], p[i], vr);
      ht[i] = h;
      v[i] = SFX(reset)(hard, h, th[i], vr);
    }
  }
  /* A gradient the caller did not give (gs, gvT or gh NULL: that output is unused) is absent,
   * not zero: the terms it would enter are left out, as autograd leaves out the reference's
   * nodes that no gradient reaches (0 * inf would be NaN where the reference has a number). */
  const REAL *gvT = (const REAL *)j->gvT, *v0 = (const REAL *)j->v0;
  const int has_gs = j->gs != NULL, has_gv = gvT != NULL;
  for (int64_t i = 0; i < n; i++) { gv[i] = has_gv ? gvT[i0 + i] : 0; gp[i] = 0; gth[i] = 0; }
  const REAL sa = (REAL)j->sa, sb = (REAL)j->sb, sc = (REAL)j->sc;
  for (int64_t t = T - 1; t >= 0; t--) {
    const REAL *restrict ht = hb + t * n;
    const REAL *restrict xt = (const REAL *)j->x + t * N + i0;
    const REAL *restrict gst = has_gs ? (const REAL *)j->gs + t * N + i0 : ex;
    const int live = t < T - 1 || has_gv;          /* dL/dV_t reaches this step */
    const int through = live && !detach;           /* ... and the spike, through the reset */
    const int spiked = has_gs || through;          /* dL/dS_t reaches this step */
    REAL *restrict gxt = (REAL *)j->gx + t * N + i0;
    for (int64_t i = 0; i < n; i++) u[i] = ht[i] - th[i];
    if (j->sg) {
      const REAL *restrict sgt = (const REAL *)j->sg + t * N + i0;
      for (int64_t i = 0; i < n; i++) sgr[i] = sgt[i];
    } else if (SFX(surrogate_row)(j->sg_id, sa, sb, sc, u, sgr, n)) {
      return E_SURROGATE;
    }
    if (t > 0) {  /* V_{t-1}, again from H_{t-1} */
      const REAL *restrict hp = hb + (t - 1) * n;
      for (int64_t i = 0; i < n; i++) vp[i] = SFX(reset)(hard, hp[i], th[i], vr);
    } else {
      for (int64_t i = 0; i < n; i++) vp[i] = v0[(i0 + i) * j->v0_stride];
    }
    if (j->gh) {
      const REAL *restrict ght = (const REAL *)j->gh + t * N + i0;
      for (int64_t i = 0; i < n; i++) ex[i] = ght[i];
    } else {
      for (int64_t i = 0; i < n; i++) ex[i] = 0;
    }
    for (int64_t i = 0; i < n; i++) {
      REAL h = ht[i], g = gv[i], sgi = sgr[i];
      int fire = u[i] >= 0;
      REAL through_reset = through ? g * (hard ? vr - h : -th[i]) : (REAL)0;
      REAL gsum = has_gs ? gst[i] + through_reset : through_reset;  /* dL/dS_t */
      REAL gsg = spiked ? gsum * sgi : (REAL)0;
      REAL gh = gsg + (live ? (hard ? (fire ? (REAL)0 : g) : g) : (REAL)0) + ex[i];
      gth[i] += -gsg - (!hard && live && fire ? g : (REAL)0);
      REAL gx, gvn, gpi;
      if (kind == K_IF) {
        gx = gh; gvn = gh; gpi = 0;
      } else if (kind == K_LIF) {
        REAL q = gh / p[i];
        gx = decay ? q : gh;
        gvn = gh - q;
        gpi = !want_gp ? (REAL)0
              : decay ? -q * (xt[i] - (vp[i] - vr)) / p[i] : q * (vp[i] - vr) / p[i];
      } else if (kind == K_PLIF) {
        REAL q = gh * p[i];
        gx = decay ? q : gh;
        gvn = gh - q;
        gpi = !want_gp ? (REAL)0 : decay ? gh * (xt[i] - (vp[i] - vr)) : -gh * (vp[i] - vr);
      } else {
        gx = gh; gvn = gh + gh * p[i];
        gpi = want_gp ? gh * (vp[i] - vr) : (REAL)0;
      }
      gp[i] += gpi;
      gxt[i] = gx;
      gv[i] = gvn;
    }
  }
  REAL *gv0 = (REAL *)j->gv0 + i0;
  for (int64_t i = 0; i < n; i++) gv0[i] = gv[i];
  if (j->gp) { REAL *o = (REAL *)j->gp + i0; for (int64_t i = 0; i < n; i++) o[i] = gp[i]; }
  if (j->gth) { REAL *o = (REAL *)j->gth + i0; for (int64_t i = 0; i < n; i++) o[i] = gth[i]; }
  return 0;
}

static int SFX(backward_block)(const job_t *j, int64_t i0, int64_t n, REAL *hb) {
#define BWD(K, D, H) \
  if (j->kind == K && j->decay == D && j->hard == H) { \
    if (K != K_IF && j->gp != NULL) return SFX(backward_spec)(j, i0, n, hb, K, D, H, 1); \
    return SFX(backward_spec)(j, i0, n, hb, K, D, H, 0); }
  NEURON_VARIANTS(BWD)
#undef BWD
  return E_KIND;
}

#undef INL
