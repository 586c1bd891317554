/* INT8 GEMM block with AVX-512 VNNI (kernels/igemm.h): vpdpbusd multiplies
 * unsigned bytes by signed bytes, so A is packed as A + 128 and 128 times the
 * column sums of B are subtracted at the end: sum (a+128) b - 128 sum b =
 * sum a b, exact in int32 (wrapping, like the scalar loop). 6 rows x 32
 * columns of C in 12 accumulators. */
#include "kernels/igemm.h"

#include <immintrin.h>

#define RMI 6

void et_igemm_avx512_block(const uint32_t *Ap, int Kq, const int8_t *Bp, const int32_t *colsum128, int i0, int i1,
                           int nc, int32_t *C, int ldc) {
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
    __mmask16 m1 = (__mmask16)(nc >= 32 ? 0xffff : nc <= 16 ? 0 : (1u << (nc - 16)) - 1);
    __m512i cs0 = _mm512_loadu_si512(colsum128), cs1 = _mm512_loadu_si512(colsum128 + 16);
    for (int i = i0; i < i1; i += RMI) {
        const uint32_t *a[RMI];
        for (int r = 0; r < RMI; r++) a[r] = Ap + (size_t)(i + r < i1 ? i + r : i1 - 1) * Kq;
        __m512i c0[RMI], c1[RMI];
        for (int r = 0; r < RMI; r++) c0[r] = c1[r] = _mm512_setzero_si512();
        for (int q = 0; q < Kq; q++) {
            __m512i b0 = _mm512_load_si512(Bp + (size_t)q * 128), b1 = _mm512_load_si512(Bp + (size_t)q * 128 + 64);
            for (int r = 0; r < RMI; r++) {
                __m512i av = _mm512_set1_epi32((int)a[r][q]);
                c0[r] = _mm512_dpbusd_epi32(c0[r], av, b0);
                c1[r] = _mm512_dpbusd_epi32(c1[r], av, b1);
            }
        }
        for (int r = 0; r < RMI && i + r < i1; r++) {
            int32_t *c = C + (size_t)(i + r) * ldc;
            _mm512_mask_storeu_epi32(c, m0, _mm512_sub_epi32(c0[r], cs0));
            _mm512_mask_storeu_epi32(c + 16, m1, _mm512_sub_epi32(c1[r], cs1));
        }
    }
}
