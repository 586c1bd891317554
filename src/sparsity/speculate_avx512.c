/* 16 speculation codes per step: et_spec_code on a row (speculate.c). */
#include <immintrin.h>
#include <stdint.h>

void et_spec_codes_row_avx512(const float *x, int n, float inv, int bits, int8_t *out) {
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m128i sh = _mm_cvtsi32_si128(8 - bits);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vinv);
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0 */
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        __m512i c = _mm512_cvtps_epi32(v); /* nearest, ties to even (the default mode) */
        __m512i t = _mm512_srl_epi32(_mm512_abs_epi32(c), sh);
        __mmask16 neg = _mm512_cmplt_epi32_mask(c, _mm512_setzero_si512());
        t = _mm512_mask_sub_epi32(t, neg, _mm512_setzero_si512(), t);
        _mm_mask_storeu_epi8(out + j, m, _mm512_cvtepi32_epi8(t));
    }
}
