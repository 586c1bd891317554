/* AVX2 kernel of the dot-product path (gemm_dot.h): the 16 lanes of an
 * element are two ymm (lanes 0-7 and 8-15); blocks of up to 2 rows of A x 4
 * rows of B (16 ymm accumulators), processed as sub-blocks of the caller's
 * up-to-4 x 4 block; masked loads for the chunk's tail. */
#include <immintrin.h>

#include "kernels/gemm_dot.h"

static inline __attribute__((always_inline)) float reduce16(__m256 lo, __m256 hi) {
    __m256 h = _mm256_add_ps(lo, hi); /* l + l+8 */
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

static inline __m256i tail_mask(int n) { /* lanes < n */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

static inline __attribute__((always_inline)) void block(const int MB, const int NB, int kc,
                                                        const float *A, ptrdiff_t lda,
                                                        const float *B, ptrdiff_t ldb,
                                                        float *out) {
    __m256 lo[2][ET_DOT_NB], hi[2][ET_DOT_NB];
#pragma GCC unroll 2
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) lo[r][c] = hi[r][c] = _mm256_setzero_ps();
    int p = 0;
    for (; p + 16 <= kc; p += 16) {
        __m256 bl[ET_DOT_NB], bh[ET_DOT_NB];
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) {
            bl[c] = _mm256_loadu_ps(B + c * ldb + p);
            bh[c] = _mm256_loadu_ps(B + c * ldb + p + 8);
        }
#pragma GCC unroll 2
        for (int r = 0; r < MB; r++) {
            __m256 al = _mm256_loadu_ps(A + r * lda + p), ah = _mm256_loadu_ps(A + r * lda + p + 8);
#pragma GCC unroll 4
            for (int c = 0; c < NB; c++) {
                lo[r][c] = _mm256_fmadd_ps(al, bl[c], lo[r][c]);
                hi[r][c] = _mm256_fmadd_ps(ah, bh[c], hi[r][c]);
            }
        }
    }
    if (p < kc) {
        __m256i ml = tail_mask(kc - p), mh = tail_mask(kc - p - 8);
        __m256 bl[ET_DOT_NB], bh[ET_DOT_NB];
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) {
            bl[c] = _mm256_maskload_ps(B + c * ldb + p, ml);
            bh[c] = _mm256_maskload_ps(B + c * ldb + p + 8, mh);
        }
#pragma GCC unroll 2
        for (int r = 0; r < MB; r++) {
            __m256 al = _mm256_maskload_ps(A + r * lda + p, ml);
            __m256 ah = _mm256_maskload_ps(A + r * lda + p + 8, mh);
#pragma GCC unroll 4
            for (int c = 0; c < NB; c++) {
                lo[r][c] = _mm256_fmadd_ps(al, bl[c], lo[r][c]);
                hi[r][c] = _mm256_fmadd_ps(ah, bh[c], hi[r][c]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < MB; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NB; c++) out[r * ET_DOT_NB + c] = reduce16(lo[r][c], hi[r][c]);
}

#define CASE(mb, nb) \
    case (mb) * 8 + (nb): block(mb, nb, kc, A, lda, B, ldb, out); break;

static void rows(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                 ptrdiff_t ldb, float *out) {
    switch (mb * 8 + nb) {
        CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)
        CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(2, 4)
    default: break;
    }
}

void et_dot_kernel_avx2(int mb, int nb, int kc, const float *A, ptrdiff_t lda, const float *B,
                        ptrdiff_t ldb, float *out) {
    for (int r = 0; r < mb; r += 2)
        rows(mb - r < 2 ? mb - r : 2, nb, kc, A + r * lda, lda, B, ldb, out + r * ET_DOT_NB);
}
