/* The quantize loop of format.c, 16 floats at a time with AVX-512F. It follows
 * quantize_one() step for step on the same bit patterns, so both paths agree
 * bit for bit (tests/test_formats.c checks it); random bits for stochastic
 * rounding are et_qrand's, 16 indices at a time (et_qrand16). */
#include "numerics/format_avx512.h"

#include <math.h>
#include <string.h>

float et_absmax_avx512(const float *x, size_t n, int with_inf) {
    /* non-negative floats order like their bit patterns; NaN is left out, and
     * +-inf unless with_inf */
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), infb = _mm512_set1_epi32(0x7f800000 + (with_inf ? 1 : 0));
    __m512i m = _mm512_setzero_si512(), m2 = m;
    size_t i = 0;
#define STEP(acc, ld)                                                                                                  \
    {                                                                                                                  \
        __m512i a = _mm512_and_si512(ld, absm);                                                                        \
        acc = _mm512_mask_max_epu32(acc, _mm512_cmplt_epu32_mask(a, infb), acc, a);                                    \
    }
    for (; i + 32 <= n; i += 32) {
        STEP(m, _mm512_loadu_si512(x + i))
        STEP(m2, _mm512_loadu_si512(x + i + 16))
    }
    for (; i < n; i += 16) {
        size_t r = n - i < 16 ? n - i : 16;
        __mmask16 k = (__mmask16)(r == 16 ? 0xffff : (1u << r) - 1);
        STEP(m, _mm512_maskz_loadu_epi32(k, x + i))
    }
#undef STEP
    uint32_t u = _mm512_reduce_max_epu32(_mm512_max_epu32(m, m2));
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define V ET_V32

/* intN/dfxpN, round to nearest, without the division: the code of |x| is
 * rne(fl(|x| / scale)) (et_quantize_one). With r = fl(1 / scale), v = fl(|x| * r)
 * is within |v| * 2^-22 of fl(|x| / scale) (two roundings of r, one of the
 * product, one of the quotient, each <= 2^-24 relative), so both round to the
 * same integer unless a half-integer lies that close to v: the distance of v
 * to the nearest half-integer is | |v - rne(v)| - 0.5 | (exact for |v| < 2^23).
 * A vector with a lane within |v| * 2^-20 of a half-integer (or with a value
 * whose v is 2^23 or more, where that test always triggers) takes the
 * division (et_quantize16); every other lane gives the identical code. */
static int fast_recip(float scale) {
    float r = 1.0f / scale;
    return isnormal(scale) && isnormal(r);
}

/* The int8 codes of 16 values on the grid whose scale has reciprocal r
 * (the rule of et_igemm_code), as 16 int32 lanes. */
static inline __m512i codes16(__m512 yv, __m512 r) {
    __m512 v = _mm512_mul_ps(yv, r);
    __mmask16 ord = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f)); /* clamping first gives the same codes */
    return _mm512_maskz_cvt_roundps_epi32(ord, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* codes (NULL: none): as et_codes_avx512 on the results, with scale
 * p->scale; a lane's code is its rounded magnitude min(q, qmax) with x's
 * sign (the value is exactly that code times the scale), 0 for NaN. */
/* 16 int32 lanes in [-128, 127] as 16 bytes, in registers (the masked
 * narrowing store vpmovdb to memory is slow on some CPUs). */
static inline __m128i narrow16(__m512i c) {
    const __m512i w = _mm512_packs_epi32(c, c), b = _mm512_packs_epi16(w, w); /* lane L: dword 0 = c[4L..4L+3] */
    return _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), b));
}

/* One vector of int_rn_loop: the rounded values and (codes) their codes. */
static inline __attribute__((always_inline)) __m512 int_rn16(const et_qparams *p, __m512i u, __m512 sc, __m512 r,
                                                              int codes, __m512i *code) {
    const __m512i maxb = V(p->maxbits), infb = V(0x7f800000);
    __m512i a = _mm512_and_si512(u, V(0x7fffffff));
    __mmask16 fin = _mm512_cmplt_epu32_mask(a, infb);
    __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(a), r);
    __m512 q = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_abs_ps(_mm512_sub_ps(v, q)), _mm512_set1_ps(0.5f)));
    __mmask16 near = _mm512_mask_cmp_ps_mask(fin, d, _mm512_mul_ps(v, _mm512_set1_ps(0x1p-20f)), _CMP_LE_OQ);
    if (near) {
        __m512 yv = et_quantize16(p, _mm512_castsi512_ps(u), _mm512_setzero_si512());
        if (codes) *code = codes16(yv, r);
        return yv;
    }
    /* finite lanes: min(q, max) * scale with x's sign; inf: max * scale; NaN: x */
    __m512i rq = _mm512_min_epu32(_mm512_castps_si512(q), maxb);
    rq = _mm512_mask_mov_epi32(maxb, fin, rq);
    __m512i out = _mm512_or_si512(_mm512_and_si512(u, V(0x80000000u)),
                                  _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(rq), sc)));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(a, infb);
    out = _mm512_mask_mov_epi32(out, nan, u);
    if (codes) {
        __m512i c = _mm512_maskz_cvttps_epi32((__mmask16)~nan, _mm512_castsi512_ps(rq)); /* rq <= qmax is an integer */
        *code = _mm512_mask_sub_epi32(c, _mm512_movepi32_mask(u), _mm512_setzero_si512(), c);
    }
    return _mm512_castsi512_ps(out);
}

/* codes (NULL: none): as et_codes_avx512 on the results, with scale
 * p->scale; a lane's code is its rounded magnitude min(q, qmax) with x's
 * sign (the value is exactly that code times the scale), 0 for NaN. Whole
 * vectors use plain loads and stores, the tail masked ones. */
static void int_rn_loop(const et_qparams *p, const float *x, float *y, size_t n, int8_t *codes) {
    const __m512 sc = _mm512_set1_ps(p->scale), r = _mm512_set1_ps(1.0f / p->scale);
    __m512i code = _mm512_setzero_si512();
    size_t i = 0;
    if (codes)
        for (; i + 16 <= n; i += 16) {
            _mm512_storeu_ps(y + i, int_rn16(p, _mm512_loadu_si512(x + i), sc, r, 1, &code));
            _mm_storeu_si128((__m128i *)(codes + i), narrow16(code));
        }
    else
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, int_rn16(p, _mm512_loadu_si512(x + i), sc, r, 0, &code));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, int_rn16(p, _mm512_maskz_loadu_epi32(k, x + i), sc, r, codes != NULL, &code));
        if (codes) _mm_mask_storeu_epi8(codes + i, k, narrow16(code));
    }
}

void et_codes_avx512(const float *y, int8_t *codes, size_t n, float cs) {
    const __m512 r = _mm512_set1_ps(1.0f / cs);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm_storeu_si128((__m128i *)(codes + i), narrow16(codes16(_mm512_loadu_ps(y + i), r)));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm_mask_storeu_epi8(codes + i, k, narrow16(codes16(_mm512_maskz_loadu_ps(k, y + i), r)));
    }
}

void et_quantize_codes_avx512(const et_qparams *p, const float *x, float *y, int8_t *codes, size_t n, uint64_t first,
                              float cs) {
    if (p->is_int && p->mode == ET_ROUND_RN && p->scale > 0 && fast_recip(p->scale)) {
        int_rn_loop(p, x, y, n, codes); /* cs == p->scale here */
        return;
    }
    et_quantize_avx512(p, x, y, n, first);
    et_codes_avx512(y, codes, n, cs);
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
        __m512i u = m == 16 ? _mm512_loadu_si512(x + i) : _mm512_maskz_loadu_epi32(k, x + i); /* plain when whole */
        __m512 yv = et_vq_short_ok(&q, u) ? _mm512_castsi512_ps(et_vq_round(&q, kind, u, rnd))
                                          : et_quantize16(p, _mm512_castsi512_ps(u), rnd);
        if (m == 16) _mm512_storeu_ps(y + i, yv);
        else _mm512_mask_storeu_ps(y + i, k, yv);
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
    if (p->mode == ET_ROUND_RN && p->scale > 0 && fast_recip(p->scale)) {
        int_rn_loop(p, x, y, n, NULL);
        return;
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
