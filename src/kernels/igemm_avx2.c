/* INT8 GEMM block with AVX2 (kernels/igemm.h): codes widened to int16,
 * vpmaddwd sums two exact products per int32 lane. 3 rows x 32 columns of C
 * in 12 accumulators. */
#include "kernels/igemm.h"

#include <immintrin.h>

#define RMI 3

void et_igemm_avx2_block(const uint32_t *Ap, int Kp, const int16_t *Bp, int i0, int i1, int nc, int32_t *C, int ldc) {
    for (int i = i0; i < i1; i += RMI) {
        const uint32_t *a[RMI];
        for (int r = 0; r < RMI; r++) a[r] = Ap + (size_t)(i + r < i1 ? i + r : i1 - 1) * Kp;
        __m256i c[RMI][4];
        for (int r = 0; r < RMI; r++)
            for (int v = 0; v < 4; v++) c[r][v] = _mm256_setzero_si256();
        for (int q = 0; q < Kp; q++) {
            const __m256i *bp = (const __m256i *)(Bp + (size_t)q * 64);
            __m256i b0 = _mm256_load_si256(bp), b1 = _mm256_load_si256(bp + 1), b2 = _mm256_load_si256(bp + 2),
                    b3 = _mm256_load_si256(bp + 3);
            for (int r = 0; r < RMI; r++) {
                __m256i av = _mm256_set1_epi32((int)a[r][q]);
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(av, b0));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(av, b1));
                c[r][2] = _mm256_add_epi32(c[r][2], _mm256_madd_epi16(av, b2));
                c[r][3] = _mm256_add_epi32(c[r][3], _mm256_madd_epi16(av, b3));
            }
        }
        for (int r = 0; r < RMI && i + r < i1; r++) {
            int32_t out[32];
            for (int v = 0; v < 4; v++) _mm256_storeu_si256((__m256i *)(out + 8 * v), c[r][v]);
            int32_t *cr = C + (size_t)(i + r) * ldc;
            for (int j = 0; j < nc; j++) cr[j] = out[j];
        }
    }
}
