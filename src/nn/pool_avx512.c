/* 2x2 stride-2 max pooling, 16 windows per step (pool_rows.h). The window's
 * pick is scalar argmax4's: the first NaN, else the first strict maximum in
 * the order (r0[2x], r0[2x+1], r1[2x], r1[2x+1]). */
#include "nn/pool_rows.h"

#include <immintrin.h>

typedef struct pick {
    __m512 v;        /* the picked value */
    __mmask16 k[4];  /* which of the four positions was picked */
} pick;

static inline void load_pairs(const float *r, int n2, __m512 *even, __m512 *odd) {
    /* n2 = number of floats to read (2 per window, <= 32) */
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __mmask16 m0 = n2 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n2) - 1);
    __mmask16 m1 = n2 >= 32 ? (__mmask16)0xFFFF : n2 > 16 ? (__mmask16)((1u << (n2 - 16)) - 1) : 0;
    __m512 lo = _mm512_maskz_loadu_ps(m0, r), hi = _mm512_maskz_loadu_ps(m1, r + 16);
    *even = _mm512_permutex2var_ps(lo, ie, hi);
    *odd = _mm512_permutex2var_ps(lo, io, hi);
}

static inline pick window_pick(const float *r0, const float *r1, int n) {
    __m512 v[4];
    load_pairs(r0, 2 * n, &v[0], &v[1]);
    load_pairs(r1, 2 * n, &v[2], &v[3]);
    pick p;
    __m512 best = v[0];
    __mmask16 isnan = _mm512_cmp_ps_mask(v[0], v[0], _CMP_UNORD_Q);
    __mmask16 at[4];
    at[0] = 0xFFFF;
    for (int q = 1; q < 4; q++) {
        __mmask16 qnan = _mm512_cmp_ps_mask(v[q], v[q], _CMP_UNORD_Q);
        __mmask16 take = (__mmask16)(~isnan & (_mm512_cmp_ps_mask(v[q], best, _CMP_GT_OQ) | qnan));
        best = _mm512_mask_mov_ps(best, take, v[q]);
        for (int r = 0; r < q; r++) at[r] = (__mmask16)(at[r] & ~take);
        at[q] = take;
        isnan = (__mmask16)(isnan | (take & qnan));
    }
    p.v = best;
    for (int q = 0; q < 4; q++) p.k[q] = at[q];
    return p;
}

float et_maxpool2_ff_row_avx512(const float *r0, const float *r1, int Wo, float *y, float amax) {
    __m512 mx = _mm512_set1_ps(amax);
    for (int x = 0; x < Wo; x += 16) {
        int n = Wo - x < 16 ? Wo - x : 16;
        const __mmask16 lim = (__mmask16)((1u << n) - 1);
        pick p = window_pick(r0 + 2 * x, r1 + 2 * x, n);
        _mm512_mask_storeu_ps(y + x, lim, p.v);
        mx = _mm512_mask_max_ps(mx, lim, _mm512_abs_ps(p.v), mx); /* a NaN gives mx */
    }
    return _mm512_reduce_max_ps(mx);
}

static inline void store_pairs(float *d, int n2, __m512 even, __m512 odd) {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    __mmask16 m0 = n2 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n2) - 1);
    __mmask16 m1 = n2 >= 32 ? (__mmask16)0xFFFF : n2 > 16 ? (__mmask16)((1u << (n2 - 16)) - 1) : 0;
    _mm512_mask_storeu_ps(d, m0, _mm512_permutex2var_ps(even, il, odd));
    _mm512_mask_storeu_ps(d + 16, m1, _mm512_permutex2var_ps(even, ih, odd));
}

void et_maxpool2_ep_row_avx512(const float *r0, const float *r1, int Wo, const float *dy, float *d0,
                               float *d1, int relu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int x = 0; x < Wo; x += 16) {
        int n = Wo - x < 16 ? Wo - x : 16;
        pick p = window_pick(r0 + 2 * x, r1 + 2 * x, n);
        __m512 g = _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), dy + x);
        if (relu) g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p.v, zero, _CMP_GT_OQ), g);
        store_pairs(d0 + 2 * x, 2 * n, _mm512_maskz_mov_ps(p.k[0], g), _mm512_maskz_mov_ps(p.k[1], g));
        store_pairs(d1 + 2 * x, 2 * n, _mm512_maskz_mov_ps(p.k[2], g), _mm512_maskz_mov_ps(p.k[3], g));
    }
}
