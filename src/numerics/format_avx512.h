/* The 16-lane rounding of numerics/format.c (bit-identical to its scalar
 * reference), shared by every AVX-512 file that rounds to a format: include
 * only from *_avx512.c files. */
#ifndef ET_FORMAT_AVX512_H
#define ET_FORMAT_AVX512_H
#include "numerics/format_internal.h"

#include <immintrin.h>

#define ET_V32(x) _mm512_set1_epi32((int)(x))
#define V ET_V32

/* et_mix64 (core/rng.c) on 8 x 64-bit lanes (vpmullq, AVX-512DQ). */
static inline __attribute__((always_inline)) __m512i et_mix64x8(__m512i z) {
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 30));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ULL));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 27));
    z = _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)0x94d049bb133111ebULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}
/* et_rand_at(prefix, i) on 8 x 64-bit lanes of indices i. */
static inline __attribute__((always_inline)) __m512i et_rand_at8(__m512i prefix, __m512i i) {
    return et_mix64x8(_mm512_xor_si512(prefix, _mm512_add_epi64(i, _mm512_set1_epi64((long long)0x632be59bd9b4e019ULL))));
}
/* et_qrand of the 16 indices first .. first + 15. */
static inline __m512i et_qrand16(const et_qparams *p, uint64_t first) {
    const __m512i pre = _mm512_set1_epi64((long long)p->prefix);
    const __m512i i0 = _mm512_add_epi64(_mm512_set1_epi64((long long)first), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512i i1 = _mm512_add_epi64(i0, _mm512_set1_epi64(8));
    const __m512i hi = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi32(et_rand_at8(pre, i0), hi, et_rand_at8(pre, i1));
}

/* Rounds the magnitudes a (float bits, finite, non-negative) to the format's
 * quantum; rnd holds 32 random bits per lane for stochastic rounding. */
static inline __m512i et_round_mag16(const et_qparams *p, __m512i a, __m512i rnd) {
    const __m512i one = V(1);
    __m512i e = _mm512_srli_epi32(a, 23);
    __mmask16 sub = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
    /* floor(log2) of a subnormal's significand: exact int->float conversion */
    __m512i lg = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(_mm512_cvtepi32_ps(a)), 23), V(127));
    __m512i ex = _mm512_mask_blend_epi32(sub, _mm512_sub_epi32(e, V(127)), _mm512_sub_epi32(lg, V(149)));
    __m512i qexp = _mm512_max_epi32(_mm512_sub_epi32(ex, V(p->mant)), V(p->qmin));
    __m512i s = _mm512_add_epi32(_mm512_sub_epi32(qexp, _mm512_max_epi32(e, one)), V(150));
    __mmask16 exact = _mm512_cmple_epi32_mask(s, _mm512_setzero_si512());
    __m512i sig = _mm512_mask_blend_epi32(sub, _mm512_or_si512(_mm512_and_si512(a, V(0x7fffff)), V(0x800000)), a);
    __m512i keep = _mm512_srlv_epi32(sig, s);
    __m512i rem = _mm512_and_si512(sig, _mm512_sub_epi32(_mm512_sllv_epi32(one, s), one));
    __mmask16 up;
    if (p->mode == ET_ROUND_RN) {
        __m512i half = _mm512_sllv_epi32(one, _mm512_sub_epi32(s, one));
        __mmask16 odd = _mm512_test_epi32_mask(keep, one);
        if (p->mant == 0) /* eXm0: a normal result's code parity is its exponent's */
            odd = _mm512_test_epi32_mask(_mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(qexp, ex), keep, e), one);
        up = _mm512_cmpgt_epu32_mask(rem, half) | (_mm512_cmpeq_epi32_mask(rem, half) & odd);
        up &= _mm512_cmple_epi32_mask(s, V(32));
    } else if (p->mode == ET_ROUND_RZ) {
        up = 0;
    } else {
        int R = p->rbits;
        __mmask16 ge = _mm512_cmpge_epi32_mask(s, V(R));
        __m512i t = _mm512_mask_blend_epi32(ge, _mm512_sllv_epi32(rem, _mm512_sub_epi32(V(R), s)),
                                            _mm512_srlv_epi32(rem, _mm512_sub_epi32(s, V(R))));
        __m512i r = _mm512_srlv_epi32(rnd, V(32 - R));
        up = _mm512_cmplt_epu32_mask(r, t);
    }
    __m512i up1 = _mm512_maskz_mov_epi32(up, one);
    __m512i small = _mm512_add_epi32(_mm512_sllv_epi32(_mm512_srlv_epi32(a, s), s), _mm512_sllv_epi32(up1, s));
    __mmask16 normal_q = _mm512_cmpge_epi32_mask(qexp, V(-126));
    __m512i pow2 = _mm512_mask_blend_epi32(normal_q, _mm512_sllv_epi32(one, _mm512_add_epi32(qexp, V(149))),
                                           _mm512_slli_epi32(_mm512_add_epi32(qexp, V(127)), 23));
    __m512i big = _mm512_maskz_mov_epi32(up, pow2);
    __m512i r = _mm512_mask_blend_epi32(_mm512_cmple_epi32_mask(s, V(23)), big, small);
    return _mm512_mask_blend_epi32(exact, r, a);
}

/* y = quantize(x) for 16 lanes, as et_quantize_scalar. */
static inline __m512 et_quantize16(const et_qparams *p, __m512 xv, __m512i rnd) {
    __m512i u = _mm512_castps_si512(xv);
    __m512i sign = _mm512_and_si512(u, V(0x80000000u));
    __m512i a = _mm512_and_si512(u, V(0x7fffffff));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(a, V(0x7f800000));
    __mmask16 inf = _mm512_cmpeq_epi32_mask(a, V(0x7f800000));
    __m512i maxb = V(p->maxbits);
    __m512i out;
    if (!p->is_int) {
        __mmask16 zero = _mm512_cmpeq_epi32_mask(a, _mm512_setzero_si512());
        __m512i r = et_round_mag16(p, a, rnd);
        __mmask16 over = _mm512_cmpgt_epu32_mask(r, maxb);
        r = _mm512_mask_mov_epi32(r, over, p->overflow_max ? maxb : V(0x7f800000));
        if (p->nosub) r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epu32_mask(r, V(p->minnorm)), _mm512_setzero_si512());
        r = _mm512_mask_mov_epi32(r, inf, p->inf_max ? maxb : a);
        r = _mm512_mask_mov_epi32(r, zero, _mm512_setzero_si512());
        out = _mm512_or_si512(sign, r);
    } else if (p->scale == 0) {
        out = sign;
    } else {
        __m512 sc = _mm512_set1_ps(p->scale);
        __m512i ya = _mm512_castps_si512(_mm512_div_ps(_mm512_castsi512_ps(a), sc));
        __mmask16 huge = _mm512_cmpge_epu32_mask(ya, V(0x7f800000)) | inf;
        __mmask16 yzero = _mm512_cmpeq_epi32_mask(ya, _mm512_setzero_si512());
        /* to nearest: the quantum is 1, so round_mag() is the hardware's
         * round-to-integer, ties to even (ya is finite and >= 0 here) */
        __m512i rm = p->mode == ET_ROUND_RN
                         ? _mm512_castps_si512(_mm512_roundscale_ps(_mm512_castsi512_ps(ya),
                                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
                         : et_round_mag16(p, ya, rnd);
        __m512i r = _mm512_min_epu32(rm, maxb);
        r = _mm512_mask_mov_epi32(r, yzero, _mm512_setzero_si512());
        r = _mm512_mask_mov_epi32(r, huge, maxb);
        __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(r), sc);
        out = _mm512_or_si512(sign, _mm512_castps_si512(v));
    }
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(out, nan, u));
}

/* ------------------------------------------- short path, normal range
 * For a vector whose every lane is 0 or has a magnitude in [min normal, max
 * finite] of a floating-point format: there the quantum is 2^S float ulps,
 * S = 23 - mant (the same S for every lane), no result overflows (a value
 * <= max finite rounds to <= max finite), :nosub has nothing to flush, and
 * round_mag() of format.c becomes, on the float bits u with the sign in
 * place (a carry moves into the exponent, never into the sign; zero stays zero):
 *   RN: (u + 2^(S-1) - 1 + bit S of u) & ~(2^S - 1)   (ties to even: eXm0's
 *       bit S = 23 is the exponent's parity, as round_mag() has it)
 *   RZ: u & ~(2^S - 1)
 *   SR: (u + x) & ~(2^S - 1), x = the complement of the top min(R, S) random
 *       bits placed at the top of the cut-off field: with r the top R bits and
 *       t = floor(f * 2^R), the cut-off part plus x carries into bit S exactly
 *       when (2^R - 1 - r) + t >= 2^R, i.e. r < t, round_mag()'s rule (for
 *       S < R both sides compare the top S bits).
 * Any other lane (subnormal in the format, beyond max finite, inf, NaN) needs
 * et_quantize16. */
enum { ET_VQ_RN = 1, ET_VQ_RZ = 2, ET_VQ_SR = 3 };

typedef struct et_vq {
    const et_qparams *p;
    __m512i lo2, span2, notmask, halfm1, S, field, rshift;
} et_vq;

static inline void et_vq_init(et_vq *q, const et_qparams *p) {
    int S = 23 - p->mant, R = p->rbits;
    q->p = p;
    /* |x| in [min normal, max finite], on the bits doubled (the sign shifted out) */
    q->lo2 = V(2 * p->minnorm);
    q->span2 = V(2 * (p->maxbits - p->minnorm) + 2);
    q->notmask = V(~((1u << S) - 1u));
    q->halfm1 = V(S > 0 ? (1u << (S - 1)) - 1u : 0u);
    q->S = V(S > 0 ? S : 32); /* S = 0 (fp32:sat): no tie bit (a shift by 32 gives 0) */
    q->field = V(((1u << S) - 1u) & ~(S > R ? (1u << (S - R)) - 1u : 0u)); /* SR: top min(R, S) bits */
    q->rshift = V(32 - S);
}

static inline int et_vq_kind(const et_qparams *p) {
    return p->mode == ET_ROUND_RN ? ET_VQ_RN : p->mode == ET_ROUND_RZ ? ET_VQ_RZ : ET_VQ_SR;
}

/* 1 if every lane of the float bits u takes the short path. */
static inline __attribute__((always_inline)) int et_vq_short_ok(const et_vq *q, __m512i u) {
    __m512i a2 = _mm512_add_epi32(u, u);
    __mmask16 inrange = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a2, q->lo2), q->span2);
    return _kortestc_mask16_u8(inrange, _mm512_testn_epi32_mask(a2, a2));
}

static inline __attribute__((always_inline)) __m512i et_vq_round(const et_vq *q, int kind, __m512i u, __m512i rnd) {
    if (kind == ET_VQ_RN) {
        __m512i odd = _mm512_and_si512(_mm512_srlv_epi32(u, q->S), V(1));
        return _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, q->halfm1), odd), q->notmask);
    }
    if (kind == ET_VQ_RZ) return _mm512_and_si512(u, q->notmask);
    __m512i add = _mm512_andnot_si512(_mm512_srlv_epi32(rnd, q->rshift), q->field);
    return _mm512_and_si512(_mm512_add_epi32(u, add), q->notmask);
}

#undef V
#endif
