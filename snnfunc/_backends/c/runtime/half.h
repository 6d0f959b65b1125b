/*! snnfunc's C runtime: float16 rows: F16C conversions, 8 values at a time, or _Float16 where F16C is missing.
    Pasted into every generated kernel source after this comment (see skeleton.py). */

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
