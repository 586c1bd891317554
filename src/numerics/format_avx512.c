/* The quantize loop of format.c, 16 floats at a time with AVX-512F. It follows
 * quantize_one() step for step on the same bit patterns, so both paths agree
 * bit for bit (tests/test_formats.c checks it); random bits for stochastic
 * rounding are et_qrand's, 16 indices at a time (et_qrand16). */
#include "numerics/format_avx512.h"

#include <string.h>

float et_absmax_avx512(const float *x, size_t n) {
    /* non-negative floats order like their bit patterns; inf/NaN are left out */
    __m512i m = _mm512_setzero_si512();
    for (size_t i = 0; i < n; i += 16) {
        size_t r = n - i < 16 ? n - i : 16;
        __mmask16 k = (__mmask16)(r == 16 ? 0xffff : (1u << r) - 1);
        __m512i a = _mm512_and_si512(_mm512_maskz_loadu_epi32(k, x + i), _mm512_set1_epi32(0x7fffffff));
        m = _mm512_mask_max_epu32(m, _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x7f800000)), m, a);
    }
    uint32_t u = _mm512_reduce_max_epu32(m);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Floating-point formats: the short path for vectors in the normal range. */
static inline __attribute__((always_inline)) void float_loop(const et_qparams *p, const float *x, float *y, size_t n,
                                                             uint64_t first, int kind) {
    et_vq q;
    et_vq_init(&q, p);
    for (size_t i = 0; i < n; i += 16) {
        size_t m = n - i < 16 ? n - i : 16;
        __mmask16 k = (__mmask16)(m == 16 ? 0xffff : (1u << m) - 1);
        __m512i rnd = kind == ET_VQ_SR ? et_qrand16(p, first + i) : _mm512_setzero_si512();
        __m512i u = _mm512_maskz_loadu_epi32(k, x + i);
        __m512 yv = et_vq_short_ok(&q, u) ? _mm512_castsi512_ps(et_vq_round(&q, kind, u, rnd))
                                          : et_quantize16(p, _mm512_castsi512_ps(u), rnd);
        _mm512_mask_storeu_ps(y + i, k, yv);
    }
}

void et_quantize_avx512(const et_qparams *p, const float *x, float *y, size_t n, uint64_t first) {
    if (!p->is_int) {
        switch (et_vq_kind(p)) {
        case ET_VQ_RN: float_loop(p, x, y, n, first, ET_VQ_RN); return;
        case ET_VQ_RZ: float_loop(p, x, y, n, first, ET_VQ_RZ); return;
        default: float_loop(p, x, y, n, first, ET_VQ_SR); return;
        }
    }
    int sr = p->mode == ET_ROUND_SR;
    for (size_t i = 0; i < n; i += 16) {
        size_t m = n - i < 16 ? n - i : 16;
        __mmask16 k = (__mmask16)(m == 16 ? 0xffff : (1u << m) - 1);
        __m512i rnd = sr ? et_qrand16(p, first + i) : _mm512_setzero_si512();
        __m512 xv = _mm512_maskz_loadu_ps(k, x + i);
        __m512 yv = et_quantize16(p, xv, rnd);
        _mm512_mask_storeu_ps(y + i, k, yv);
    }
}
