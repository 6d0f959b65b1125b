/*! snnfunc's C runtime: Rows of a block: bfloat16 conversion, software prefetch, output rows written with streaming stores.
    Pasted into every generated kernel source after this comment (see skeleton.py). */
#define BUF_BYTES 524288
static inline float bf16_load(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t bf16_store(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)0x7fc0;  /* NaN, as torch */
  u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest even */
  return (uint16_t)(u >> 16);
}
/* software prefetch of a block's row: the backward computes while the rows it reads next
   (and writes) stream in, rather than waiting for each in turn */
static inline void pf_read(const void *p, int64_t bytes) {
  for (int64_t q = 0; q < bytes; q += 64) __builtin_prefetch((const char *)p + q, 0, 3);
}
static inline void pf_write(void *p, int64_t bytes) {
  for (int64_t q = 0; q < bytes; q += 64) __builtin_prefetch((char *)p + q, 1, 3);
}
/* a row of output written with streaming stores (the destination is not read into the
   cache first, as glibc's memcpy does for large copies), or copied as it is */
#if defined(__AVX512F__)
#include <immintrin.h>
#define NT_WIDTH 64
#define NT_F32(p, a) _mm512_stream_ps((p), _mm512_loadu_ps(a))
#define NT_F64(p, a) _mm512_stream_pd((p), _mm512_loadu_pd(a))
#elif defined(__AVX__)
#include <immintrin.h>
#define NT_WIDTH 32
#define NT_F32(p, a) _mm256_stream_ps((p), _mm256_loadu_ps(a))
#define NT_F64(p, a) _mm256_stream_pd((p), _mm256_loadu_pd(a))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define NT_WIDTH 16
#define NT_F32(p, a) _mm_stream_ps((p), _mm_loadu_ps(a))
#define NT_F64(p, a) _mm_stream_pd((p), _mm_loadu_pd(a))
#endif
#define NT_BYTES (8 << 20)  /* outputs from this size on */
static inline void out_row(const REAL *restrict a, REAL *restrict b, int64_t n, int nt) {
  int64_t i = 0;
#ifdef NT_WIDTH
  if (nt) {
    const int64_t w = NT_WIDTH / (int64_t)sizeof(REAL);
    for (; i < n && ((uintptr_t)(b + i) & (NT_WIDTH - 1)); i++) b[i] = a[i];
    if (sizeof(REAL) == 4)
      for (; i + w <= n; i += w) NT_F32((float *)(void *)(b + i), (const float *)(const void *)(a + i));
    else
      for (; i + w <= n; i += w) NT_F64((double *)(void *)(b + i), (const double *)(const void *)(a + i));
  }
#endif
  (void)nt;
  if (i < n) memcpy(b + i, a + i, (size_t)(n - i) * sizeof(REAL));
}
static inline void nt_fence(int nt) {
#ifdef NT_WIDTH
  if (nt) _mm_sfence();
#endif
  (void)nt;
}
