/* AVX-512 part of codec.c: a float tensor's non-zero bits, 16 compares per
 * instruction (codec.h). */
#include "sparsity/codec.h"

#include <immintrin.h>

void et_codec_nzmask_avx512(const float *x, int64_t n, uint64_t *words) {
    const __m512 zero = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= n; k += 64) {
        const uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k), zero, _CMP_NEQ_UQ);
        const uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 16), zero, _CMP_NEQ_UQ);
        const uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 32), zero, _CMP_NEQ_UQ);
        const uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 48), zero, _CMP_NEQ_UQ);
        *words++ = m0 | m1 << 16 | m2 << 32 | m3 << 48;
    }
    if (k < n) {
        uint64_t w = 0;
        for (int q = 0; k + 16 * q < n; q++) {
            const int64_t left = n - k - 16 * q;
            const __mmask16 ld = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(ld, x + k + 16 * q);
            w |= (uint64_t)_mm512_mask_cmp_ps_mask(ld, v, zero, _CMP_NEQ_UQ) << (16 * q);
        }
        *words = w;
    }
}
