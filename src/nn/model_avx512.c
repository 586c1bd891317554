/* AVX-512 loops of model.c (model.h): staging a batch of 8-bit images. */
#include "nn/model.h"

#include <immintrin.h>

void et_u8_div255_avx512(const uint8_t *src, float *dst, int64_t n) {
    const __m512 d = _mm512_set1_ps(255.0f);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + k)));
        _mm512_storeu_ps(dst + k, _mm512_div_ps(_mm512_cvtepi32_ps(v), d));
    }
    if (k < n) {
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src + k));
        _mm512_mask_storeu_ps(dst + k, m, _mm512_div_ps(_mm512_cvtepi32_ps(v), d));
    }
}
