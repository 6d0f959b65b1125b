/*! snnfunc's C runtime: e^x in float for the backward's walk back, inlined on AVX-512 and AVX2 (the vector function ABI's variants).
    Pasted into every generated kernel source after this comment (see skeleton.py). */

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
#define SNN_FAST_EXP 1
#elif defined(__AVX2__) && defined(__FMA__) && !defined(SNN_NO_MVEC)
/* the same polynomial on AVX2, scaled by 2^n in two exact steps and one rounding (n split in
   halves, each a normal power of two: overflow to inf, underflow through the subnormals) */
#include <immintrin.h>
#define SNN_EXP_BODY(V, VI, P, CAST) \
  const V xc = P##_min_ps(P##_set1_ps(89.0f), P##_max_ps(P##_set1_ps(-104.0f), x)); \
  const V n = P##_round_ps(P##_mul_ps(xc, P##_set1_ps(1.44269504088896341f)), \
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); \
  V r = P##_fmadd_ps(n, P##_set1_ps(-0.693359375f), xc); \
  r = P##_fmadd_ps(n, P##_set1_ps(2.12194440e-4f), r); \
  V p = P##_fmadd_ps(P##_set1_ps(1.9875691500e-4f), r, P##_set1_ps(1.3981999507e-3f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(8.3334519073e-3f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(4.1665795894e-2f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(1.6666665459e-1f)); \
  p = P##_fmadd_ps(p, r, P##_set1_ps(5.0000001201e-1f)); \
  p = P##_add_ps(P##_fmadd_ps(p, P##_mul_ps(r, r), r), P##_set1_ps(1.0f)); \
  const VI ni = P##_cvtps_epi32(n), n1 = P##_srai_epi32(ni, 1), n2 = P##_sub_epi32(ni, n1); \
  const VI bias = P##_set1_epi32(127); \
  const V s1 = CAST(P##_slli_epi32(P##_add_epi32(n1, bias), 23)); \
  const V s2 = CAST(P##_slli_epi32(P##_add_epi32(n2, bias), 23)); \
  return P##_mul_ps(P##_mul_ps(p, s1), s2);
#pragma GCC visibility push(hidden)
__m128 _ZGVbN4v_snn_expf(__m128 x) { SNN_EXP_BODY(__m128, __m128i, _mm, _mm_castsi128_ps) }
__m256 _ZGVcN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, __m256i, _mm256, _mm256_castsi256_ps) }
__m256 _ZGVdN8v_snn_expf(__m256 x) { SNN_EXP_BODY(__m256, __m256i, _mm256, _mm256_castsi256_ps) }
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
