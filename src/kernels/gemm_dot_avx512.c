/* AVX-512 kernel of the dot-product path (gemm_dot.h): one zmm of 16 lanes
 * per element of a block of up to 4 rows of A x 4 rows of B (16 zmm
 * accumulators, 8 loads per 16 FMAs), masked loads for the chunk's tail. */
#include <immintrin.h>

#include "kernels/gemm_dot.h"

static inline __attribute__((always_inline)) float reduce16(__m512 v) {
    /* (l + l+8), then (l + l+4), (l + l+2), (l + l+1): gemm_dot.h's tree */
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

static inline __attribute__((always_inline)) void block(const int MB, const int NB, int kc,
                                                        const float *A, ptrdiff_t lda,
                                                        const float *B, ptrdiff_t ldb,
                                                        float *out) {
    __m512 acc[ET_DOT_MB][ET_DOT_NB];
#pragma GCC unroll 4
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) acc[r][c] = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= kc; p += 16) {
        __m512 b[ET_DOT_NB];
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) b[c] = _mm512_loadu_ps(B + c * ldb + p);
#pragma GCC unroll 4
        for (int r = 0; r < MB; r++) {
            __m512 a = _mm512_loadu_ps(A + r * lda + p);
#pragma GCC unroll 4
            for (int c = 0; c < NB; c++) acc[r][c] = _mm512_fmadd_ps(a, b[c], acc[r][c]);
        }
    }
    if (p < kc) {
        __mmask16 m = (__mmask16)((1u << (kc - p)) - 1);
        __m512 b[ET_DOT_NB];
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) b[c] = _mm512_maskz_loadu_ps(m, B + c * ldb + p);
#pragma GCC unroll 4
        for (int r = 0; r < MB; r++) {
            __m512 a = _mm512_maskz_loadu_ps(m, A + r * lda + p);
#pragma GCC unroll 4
            for (int c = 0; c < NB; c++) acc[r][c] = _mm512_fmadd_ps(a, b[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) out[r * ET_DOT_NB + c] = reduce16(acc[r][c]);
}

#define CASE(mb, nb) \
    case (mb) * 8 + (nb): block(mb, nb, kc, A, lda, B, ldb, out); return;

void et_dot_kernel_avx512(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                          ptrdiff_t ldb, float *out) {
    switch (mb * 8 + nb) {
        CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)
        CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(2, 4)
        CASE(3, 1) CASE(3, 2) CASE(3, 3) CASE(3, 4)
        CASE(4, 1) CASE(4, 2) CASE(4, 3) CASE(4, 4)
    default: break;
    }
}
