/*! snnfunc's C runtime: e^x in float for the backward's walk back, defined in the kernel on AVX-512 and AVX2 (the vector function ABI's variants the loops call).
    Pasted into every generated kernel source after this comment (see skeleton.py). */

/* e^x = 2^n e^r: n = x log2(e) rounded to the nearest integer (adding and subtracting 1.5 * 2^23
   after one fused multiply-add, exact for |n| < 2^22), r = x - n ln 2 in two parts (|r| about
   ln 2 / 2 at most), e^r = 1 + r + r^2 q(r), q of degree 5 by Estrin's scheme (three dependent
   steps rather than Horner's five: the loop's chain of latencies is what costs), within 1.03 ulp of
   e^x over the whole float range (checked against every float), then scaled by 2^n. */
#define SNN_EXP_POLY(V, P, xc, n, p) \
  const V k_ = P##_fmadd_ps(xc, P##_set1_ps(1.44269504088896341f), P##_set1_ps(12582912.0f)); \
  const V n = P##_sub_ps(k_, P##_set1_ps(12582912.0f)); \
  V r_ = P##_fmadd_ps(n, P##_set1_ps(-0.693359375f), xc); \
  r_ = P##_fmadd_ps(n, P##_set1_ps(2.12194440e-4f), r_); \
  const V r2_ = P##_mul_ps(r_, r_); \
  const V a_ = P##_fmadd_ps(P##_set1_ps(1.6666665459e-1f), r_, P##_set1_ps(5.0000001201e-1f)); \
  const V b_ = P##_fmadd_ps(P##_set1_ps(8.3334519073e-3f), r_, P##_set1_ps(4.1665795894e-2f)); \
  const V c_ = P##_fmadd_ps(P##_set1_ps(1.9875691500e-4f), r_, P##_set1_ps(1.3981999507e-3f)); \
  const V q_ = P##_fmadd_ps(P##_fmadd_ps(c_, r2_, b_), r2_, a_); \
  const V p = P##_add_ps(P##_fmadd_ps(q_, r2_, r_), P##_set1_ps(1.0f));
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__FMA__) && !defined(SNN_NO_MVEC)
#include <immintrin.h>
/* x clamped to [-104, 89] (beyond, e^x rounds to 0 or inf); 2^n applied with one rounding */
#define SNN_EXP_BODY(V, P) \
  const V xc = P##_min_ps(P##_set1_ps(89.0f), P##_max_ps(P##_set1_ps(-104.0f), x)); \
  SNN_EXP_POLY(V, P, xc, n, p) \
  return P##_scalef_ps(p, n);
#pragma GCC visibility push(hidden)
__m128 _ZGVbN4v_snn_expf(__m128 x) { SNN_EXP_BODY(__m128, _mm) }
__m256 _ZGVcN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, _mm256) }
__m256 _ZGVdN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, _mm256) }
__m512 _ZGVeN16v_snn_expf(__m512 x) { SNN_EXP_BODY(__m512, _mm512) }
#pragma GCC visibility pop
#define SNN_FAST_EXP 1
#elif defined(__AVX2__) && defined(__FMA__) && !defined(SNN_NO_MVEC)
/* AVX2: where every lane's |x| <= 87 (e^x normal, |n| <= 126), p scaled by 2^n in one step, n
   added to its exponent (exact); else (rarely: a branch taken for the whole vector) from x
   clamped to [-104, 89], in two exact steps and one rounding (n split in halves, each a normal
   power of two: overflow to inf, underflow through the subnormals, NaN kept). A lane's value
   is the same either way, and the same as AVX-512's. */
#include <immintrin.h>
#define SNN_EXP_BODY(V, VI, P, CAST, ICAST, MASK, FULL) \
  { \
    const V ax = P##_andnot_ps(P##_set1_ps(-0.0f), x); \
    if (MASK(P##_cmp_ps(ax, P##_set1_ps(87.0f), _CMP_LE_OQ)) == FULL) { \
      SNN_EXP_POLY(V, P, x, n, p) \
      return CAST(P##_add_epi32(ICAST(p), P##_slli_epi32(P##_cvtps_epi32(n), 23))); \
    } \
  } \
  const V xc = P##_min_ps(P##_set1_ps(89.0f), P##_max_ps(P##_set1_ps(-104.0f), x)); \
  SNN_EXP_POLY(V, P, xc, n, p) \
  const VI ni = P##_cvtps_epi32(n), n1 = P##_srai_epi32(ni, 1), n2 = P##_sub_epi32(ni, n1); \
  const VI bias = P##_set1_epi32(127); \
  const V s1 = CAST(P##_slli_epi32(P##_add_epi32(n1, bias), 23)); \
  const V s2 = CAST(P##_slli_epi32(P##_add_epi32(n2, bias), 23)); \
  return P##_mul_ps(P##_mul_ps(p, s1), s2);
#pragma GCC visibility push(hidden)
__m128 _ZGVbN4v_snn_expf(__m128 x) {
  SNN_EXP_BODY(__m128, __m128i, _mm, _mm_castsi128_ps, _mm_castps_si128, _mm_movemask_ps, 0xf)
}
__m256 _ZGVcN8v_snn_expf(__m256 x) {
  SNN_EXP_BODY(__m256, __m256i, _mm256, _mm256_castsi256_ps, _mm256_castps_si256,
               _mm256_movemask_ps, 0xff)
}
__m256 _ZGVdN8v_snn_expf(__m256 x) {
  SNN_EXP_BODY(__m256, __m256i, _mm256, _mm256_castsi256_ps, _mm256_castps_si256,
               _mm256_movemask_ps, 0xff)
}
#pragma GCC visibility pop
#define SNN_FAST_EXP 1
#endif
#ifdef SNN_FAST_EXP
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
