/* AVX2 skip kernel: gemm_avx2.c's 6 x 16 micro-kernel stepping only over the
 * k in a bitmask (spgemm_internal.h); the same instructions per step. */
#include <immintrin.h>

#include "kernels/spgemm_internal.h"

#define MR ET_GEMM_AVX2_MR
#define NR ET_GEMM_AVX2_NR
#define NV (NR / 8)

static inline __m256i mask8(int left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

void et_spgemm_skip_avx2(int m, int n, const uint64_t *km, int k, const float *a, ptrdiff_t ars,
                         ptrdiff_t as, const float *b, ptrdiff_t bs, float *c, ptrdiff_t ldc,
                         float beta) {
    const float alpha = 1.0f;
    ptrdiff_t off[MR];
    for (int r = 0; r < MR; r++) off[r] = (r < m ? r : m - 1) * ars;
    __m256 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();

    for (int w = 0; w * 64 < k; w++) {
        uint64_t bits = km[w];
        while (bits) {
            ptrdiff_t p = w * 64 + __builtin_ctzll(bits);
            bits &= bits - 1;
            const float *ap = a + p * as, *bp = b + p * bs;
            __m256 bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(bp + 8 * v);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                __m256 ar = _mm256_broadcast_ss(ap + off[r]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
            }
        }
    }

    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == MR && n == NR) {
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                float *cp = c + r * ldc + 8 * v;
                __m256 t;
                if (beta == 0.0f)
                    t = _mm256_mul_ps(va, acc[r][v]);
                else
                    t = _mm256_fmadd_ps(va, acc[r][v], _mm256_mul_ps(vb, _mm256_loadu_ps(cp)));
                _mm256_storeu_ps(cp, t);
            }
        return;
    }
    __m256i mk[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) mk[v] = mask8(n - 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (8 * v >= n) break;
            float *cp = c + r * ldc + 8 * v;
            __m256 t;
            if (beta == 0.0f)
                t = _mm256_mul_ps(va, acc[r][v]);
            else
                t = _mm256_fmadd_ps(va, acc[r][v],
                                    _mm256_mul_ps(vb, _mm256_maskload_ps(cp, mk[v])));
            _mm256_maskstore_ps(cp, mk[v], t);
        }
    }
}
