/* AVX-512 parts of the speculation (speculate.c): 16 codes per step
 * (et_spec_code on a row), and the fused VNNI prediction below. */
#include "sparsity/speculate_amx.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

/* ---- the fused B-bit prediction of a row-major product (speculate.c) ----
 * op(A) = A (M x K) as codes, already packed by et_spec_pack_a_vnni:
 * Ap[(i/8)*Kq*8 + q*8 + i%8] = the four bytes code(A[i][4q+t]) + 128 (t = 0..3;
 * 128 past K and for the padding rows past M). op(B) = B (K x N floats, row
 * stride ldb) is coded 32 columns at a time straight from the floats (the
 * codes of et_spec_code, as et_spec_codes_row_avx512) into a panel of
 * Kq x 2 vectors of 16 columns x 4 bytes, with its column sums; vpdpbusd
 * gives sum_k (a + 128) * b, minus 128 * colsum = S, the exact integer sum.
 * The estimate scale * (float)S + bias is formed as the scalar path does
 * (same two fp32 roundings) and the mask byte is !(e <= 0). */

static inline __m512i code16(__m512 x, __m512 vinv, __m128i sh) {
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    __m512 v = _mm512_mul_ps(x, vinv);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i c = _mm512_cvtps_epi32(v);
    __m512i t = _mm512_srl_epi32(_mm512_abs_epi32(c), sh);
    __mmask16 neg = _mm512_cmplt_epi32_mask(c, _mm512_setzero_si512());
    return _mm512_mask_sub_epi32(t, neg, _mm512_setzero_si512(), t);
}

/* The panel's row blocks: vpdpbusd over the packed panel bp (Kq x 2
 * vectors) with column sums cs0/cs1, the estimate and the mask bytes; adds
 * the predicted zeros to *zeros and each column's kept outputs to k0_out, k1_out. */
static inline void vnni_rows(int M, int Kq, const uint32_t *Ap, const __m512i *bp, __m512i cs0, __m512i cs1,
                             __mmask16 m0, __mmask16 m1, int j0, float scale, const float *bias, int bias_rows,
                             uint8_t *mask, int ldm, uint64_t *zeros_out, __m512i *k0_out, __m512i *k1_out) {
    const __m512 z = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i off0 = _mm512_slli_epi32(cs0, 7), off1 = _mm512_slli_epi32(cs1, 7);
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 bc0 = z, bc1 = z;
    if (bias && !bias_rows) bc0 = _mm512_maskz_loadu_ps(m0, bias + j0), bc1 = _mm512_maskz_loadu_ps(m1, bias + j0 + 16);
    __m512i k0 = _mm512_setzero_si512(), k1 = k0;
    uint64_t zeros = 0;
    for (int i0 = 0; i0 < M; i0 += 8) {
        const uint32_t *ap = Ap + (size_t)(i0 / 8) * Kq * 8;
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
                a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00, a60 = a00, a61 = a00, a70 = a00, a71 = a00;
        for (int q = 0; q < Kq; q++, ap += 8) {
            const __m512i b0 = _mm512_loadu_si512(bp + 2 * q), b1 = _mm512_loadu_si512(bp + 2 * q + 1);
#define ROW(r, x0, x1)                                                                                              \
    do {                                                                                                            \
        const __m512i av = _mm512_set1_epi32((int)ap[r]);                                                          \
        x0 = _mm512_dpbusd_epi32(x0, av, b0);                                                                       \
        x1 = _mm512_dpbusd_epi32(x1, av, b1);                                                                       \
    } while (0)
            ROW(0, a00, a01);
            ROW(1, a10, a11);
            ROW(2, a20, a21);
            ROW(3, a30, a31);
            ROW(4, a40, a41);
            ROW(5, a50, a51);
            ROW(6, a60, a61);
            ROW(7, a70, a71);
#undef ROW
        }
        const __m512i acc[8][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31},
                                   {a40, a41}, {a50, a51}, {a60, a61}, {a70, a71}};
        for (int r = 0; r < 8 && i0 + r < M; r++) {
            const int i = i0 + r;
            __m512 b0v = bc0, b1v = bc1;
            if (bias && bias_rows) b0v = b1v = _mm512_set1_ps(bias[i]);
            __m512 e0 = _mm512_add_ps(_mm512_mul_ps(vs, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][0], off0))), b0v);
            __m512 e1 = _mm512_add_ps(_mm512_mul_ps(vs, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][1], off1))), b1v);
            __mmask16 keep0 = _mm512_mask_cmp_ps_mask(m0, e0, z, _CMP_NLE_UQ);
            __mmask16 keep1 = _mm512_mask_cmp_ps_mask(m1, e1, z, _CMP_NLE_UQ);
            uint8_t *mr = mask + (ptrdiff_t)i * ldm + j0;
            _mm_mask_storeu_epi8(mr, m0, _mm_maskz_mov_epi8(keep0, _mm_set1_epi8(1)));
            if (m1) _mm_mask_storeu_epi8(mr + 16, m1, _mm_maskz_mov_epi8(keep1, _mm_set1_epi8(1)));
            zeros += (uint64_t)(__builtin_popcount((unsigned)(m0 & ~keep0)) + __builtin_popcount((unsigned)(m1 & ~keep1)));
            k0 = _mm512_mask_add_epi32(k0, keep0, k0, one);
            k1 = _mm512_mask_add_epi32(k1, keep1, k1, one);
        }
    }
    *zeros_out = zeros, *k0_out = k0, *k1_out = k1;
}

void et_spec_pack_a_vnni(const int8_t *ca, int M, int K, int Kq, uint32_t *Ap) {
    const int Mp = (M + 7) & ~7;
    for (int i = 0; i < Mp; i++)
        for (int q = 0; q < Kq; q++) {
            uint32_t d = 0;
            for (int t = 0; t < 4; t++) {
                int k = 4 * q + t;
                uint32_t byte = i < M && k < K ? (uint32_t)(uint8_t)(ca[(size_t)i * K + k] + 128) : 128u;
                d |= byte << (8 * t);
            }
            Ap[(size_t)(i / 8) * Kq * 8 + (size_t)q * 8 + (i & 7)] = d;
        }
}

/* One 32-column panel from column j0 (nc <= 32 columns): packs B, then all
 * row blocks. Adds the predicted zeros to *pz; with colnz, colnz[j] = the
 * non-zeros of B's column j and kept[j] = the outputs of column j predicted
 * non-zero (both for j < nc, relative to j0). */
void et_spec_vnni_panel(int M, int K, int Kq, const uint32_t *Ap, const float *B, int ldb, int j0, int nc,
                        float invb, int bits, float scale, const float *bias, int bias_rows, uint8_t *mask, int ldm,
                        __m512i *bp, uint64_t *pz, int32_t *colnz, int32_t *kept) {
    const __m512 vinv = _mm512_set1_ps(invb), z = _mm512_setzero_ps();
    const __m128i sh = _mm_cvtsi32_si128(8 - bits);
    const __m512i one = _mm512_set1_epi32(1), ff = _mm512_set1_epi32(0xff);
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    __m512i cs0 = _mm512_setzero_si512(), cs1 = cs0, nz0 = cs0, nz1 = cs0;
    const float *b = B + j0;
    for (int q = 0; q < Kq; q++) {
        __m512i d0 = _mm512_setzero_si512(), d1 = d0;
        for (int t = 0; t < 4; t++) {
            int k = 4 * q + t;
            if (k >= K) break;
            const float *r = b + (ptrdiff_t)k * ldb;
            __m512 x0 = _mm512_maskz_loadu_ps(m0, r), x1 = _mm512_maskz_loadu_ps(m1, r + 16);
            __m512i c0 = code16(x0, vinv, sh), c1 = code16(x1, vinv, sh);
            cs0 = _mm512_add_epi32(cs0, c0), cs1 = _mm512_add_epi32(cs1, c1);
            if (colnz) {
                nz0 = _mm512_mask_add_epi32(nz0, _mm512_cmp_ps_mask(x0, z, _CMP_NEQ_UQ), nz0, one);
                nz1 = _mm512_mask_add_epi32(nz1, _mm512_cmp_ps_mask(x1, z, _CMP_NEQ_UQ), nz1, one);
            }
            d0 = _mm512_or_si512(d0, _mm512_slli_epi32(_mm512_and_si512(c0, ff), 8 * t));
            d1 = _mm512_or_si512(d1, _mm512_slli_epi32(_mm512_and_si512(c1, ff), 8 * t));
        }
        _mm512_storeu_si512(bp + 2 * q, d0);
        _mm512_storeu_si512(bp + 2 * q + 1, d1);
    }
    uint64_t zeros;
    __m512i k0, k1;
    vnni_rows(M, Kq, Ap, bp, cs0, cs1, m0, m1, j0, scale, bias, bias_rows, mask, ldm, &zeros, &k0, &k1);
    *pz += zeros;
    if (colnz) {
        _mm512_mask_storeu_epi32(colnz, m0, nz0);
        _mm512_mask_storeu_epi32(kept, m0, k0);
        if (m1) {
            _mm512_mask_storeu_epi32(colnz + 16, m1, nz1);
            _mm512_mask_storeu_epi32(kept + 16, m1, k1);
        }
    }
}

/* et_spec_vnni_panel with B's codes given (K x N int8, row stride ldc): the
 * panel is packed from the bytes (4 rows zero-extended into the 4 bytes of
 * each 32-bit lane) and its column sums come from vpdpbusd with ones, so no
 * float is read or coded; kept[j] as there (colnz is the caller's). */
void et_spec_vnni_panel_codes(int M, int K, int Kq, const uint32_t *Ap, const int8_t *Bc, int ldc, int j0, int nc,
                              float scale, const float *bias, int bias_rows, uint8_t *mask, int ldm, __m512i *bp,
                              uint64_t *pz, int32_t *kept) {
    const __m512i ones8 = _mm512_set1_epi32(0x01010101);
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    __m512i cs0 = _mm512_setzero_si512(), cs1 = cs0;
    const int8_t *b = Bc + j0;
    for (int q = 0; q < Kq; q++) {
        __m512i d0 = _mm512_setzero_si512(), d1 = d0;
        for (int t = 0; t < 4; t++) {
            int k = 4 * q + t;
            if (k >= K) break;
            const int8_t *r = b + (ptrdiff_t)k * ldc;
            __m512i c0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m0, r));
            __m512i c1 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m1, r + 16));
            d0 = _mm512_or_si512(d0, _mm512_slli_epi32(c0, 8 * t));
            d1 = _mm512_or_si512(d1, _mm512_slli_epi32(c1, 8 * t));
        }
        cs0 = _mm512_dpbusd_epi32(cs0, ones8, d0), cs1 = _mm512_dpbusd_epi32(cs1, ones8, d1);
        _mm512_storeu_si512(bp + 2 * q, d0);
        _mm512_storeu_si512(bp + 2 * q + 1, d1);
    }
    uint64_t zeros;
    __m512i k0, k1;
    vnni_rows(M, Kq, Ap, bp, cs0, cs1, m0, m1, j0, scale, bias, bias_rows, mask, ldm, &zeros, &k0, &k1);
    *pz += zeros;
    _mm512_mask_storeu_epi32(kept, m0, k0);
    if (m1) _mm512_mask_storeu_epi32(kept + 16, m1, k1);
}

/* ---- the AMX path's input codes (speculate_amx.h) ----
 * Image n's virtual rows: zero rows, then per input row pw zero pixels, the W
 * coded pixels (cb bytes each: the channels' codes, zero past cin) and the
 * zero pixels up to wp. 16 pixels x 16 channel quads at a time: each quad's
 * codes go into the four bytes of each pixel's 32-bit lane, then the 16 x 16
 * lanes are transposed so that each pixel's bytes are one row. */

/* code16's codes by another route (the same values): NaN -> 0 first
 * (fixupimm), then the magnitude min(|v|, 127) rounded to nearest even,
 * shifted, and the sign put back. */
static inline __m512i code16m(__m512 x, __m512 vinv, __m128i sh) {
    const __m512 v = _mm512_fixupimm_ps(_mm512_mul_ps(x, vinv), _mm512_mul_ps(x, vinv), _mm512_set1_epi32(0x88), 0);
    const __m512i t = _mm512_srl_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_abs_ps(v), _mm512_set1_ps(127.0f))), sh);
    return _mm512_mask_sub_epi32(t, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_si512(), t);
}

/* Four channels' codes (int32 lanes in [-127, 127]) as one 32-bit lane per
 * pixel, channel b in byte b: saturating packs (exact in range), then the
 * bytes of each 128-bit lane put in pixel order. */
static inline __m512i quad_bytes(const __m512i c[4]) {
    const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(c[0], c[1]), _mm512_packs_epi32(c[2], c[3]));
    const __m512i ord = _mm512_set4_epi32(0x0f0b0703, 0x0e0a0602, 0x0d090501, 0x0c080400);
    return _mm512_shuffle_epi8(b, ord);
}

static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int b = 0; b < 4; b++) { /* rows 4b..4b+3: r[4b + k] lane l = their column 4l + k */
        r[4 * b] = _mm512_unpacklo_epi64(t[4 * b], t[4 * b + 2]);
        r[4 * b + 1] = _mm512_unpackhi_epi64(t[4 * b], t[4 * b + 2]);
        r[4 * b + 2] = _mm512_unpacklo_epi64(t[4 * b + 1], t[4 * b + 3]);
        r[4 * b + 3] = _mm512_unpackhi_epi64(t[4 * b + 1], t[4 * b + 3]);
    }
    for (int k = 0; k < 4; k++) {
        const __m512i lo01 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x44), hi01 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xEE);
        const __m512i lo23 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x44),
                      hi23 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xEE);
        t[k] = _mm512_shuffle_i32x4(lo01, lo23, 0x88);
        t[4 + k] = _mm512_shuffle_i32x4(lo01, lo23, 0xDD);
        t[8 + k] = _mm512_shuffle_i32x4(hi01, hi23, 0x88);
        t[12 + k] = _mm512_shuffle_i32x4(hi01, hi23, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

void et_spec_code_xt_avx512(const et_spec_amx_layout *L, const float *x, int n, float inv, int bits, int8_t *xt,
                            int32_t *nz) {
    enum { TMP = 16384 }; /* bytes of quads per pass */
    uint32_t tmp[TMP / 4] __attribute__((aligned(64)));
    int32_t cnt[TMP / 4] __attribute__((aligned(64))); /* the pass's pixels' non-zero channels (nz) */
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m128i sh = _mm_cvtsi32_si128(8 - bits);
    const int H = L->h, W = L->w, wp = L->wp, cb = L->cb, cin = L->cin, nq = cb / 4, nqx = (cin + 3) / 4;
    const int64_t HW = (int64_t)H * W, rowb = (int64_t)wp * cb;
    const int R = TMP / cb; /* pixels per pass, a multiple of 16 */
    int8_t *img = xt + (int64_t)n * L->hp * rowb;
    memset(img, 0, (size_t)(L->ph * rowb));
    for (int iy = 0; iy < H; iy++) {
        int8_t *row = img + (int64_t)(L->ph + iy) * rowb;
        memset(row, 0, (size_t)(L->pw * cb));
        memset(row + (int64_t)(L->pw + W) * cb, 0, (size_t)((wp - L->pw - W) * cb));
    }
    memset(img + (int64_t)(L->ph + H) * rowb, 0, (size_t)((L->hp - L->ph - H) * rowb));
    for (int64_t p0 = 0; p0 < HW; p0 += R) {
        const int np = HW - p0 < R ? (int)(HW - p0) : R;
        /* pass 1: each quad's codes along the pixels (four planes read in order) */
        if (nz) memset(cnt, 0, sizeof(int32_t) * (size_t)((np + 15) & ~15));
        for (int g = 0; g < nqx; g++) {
            const float *src[4];
            for (int b = 0; b < 4; b++)
                src[b] = 4 * g + b < cin ? x + ((int64_t)(4 * g + b) * L->n + n) * HW + p0 : NULL;
            for (int j = 0; j < np; j += 16) {
                const __mmask16 m = np - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (np - j)) - 1);
                __m512i c[4], k = nz ? _mm512_load_si512(cnt + j) : _mm512_setzero_si512();
                for (int b = 0; b < 4; b++) {
                    if (!src[b]) {
                        c[b] = _mm512_setzero_si512();
                        continue;
                    }
                    /* a plane holds one image's pixels here, too short a stream for the
                     * hardware prefetcher: fetch the next image's line (same plane) now */
                    if (n + 1 < L->n) _mm_prefetch((const char *)(src[b] + j + HW), _MM_HINT_T0);
                    const __m512 v = _mm512_maskz_loadu_ps(m, src[b] + j);
                    c[b] = code16m(v, vinv, sh);
                    /* x != 0 (NaN counts), as et_spgemm_nzcount_add */
                    k = _mm512_mask_sub_epi32(k, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ), k,
                                              _mm512_set1_epi32(-1));
                }
                if (nz) _mm512_store_si512(cnt + j, k);
                _mm512_store_si512(tmp + g * R + j, quad_bytes(c));
            }
        }
        if (nz) memcpy(nz + p0, cnt, sizeof(int32_t) * (size_t)np);
        /* pass 2: 16 pixels x 16 quads transposed into the pixels' rows */
        int iy = (int)(p0 / W), ix = (int)(p0 % W);
        for (int j = 0; j < np; j += 16) {
            const int nj = np - j < 16 ? np - j : 16;
            int8_t *d[16];
            for (int t = 0; t < nj; t++) {
                d[t] = img + ((int64_t)(L->ph + iy) * wp + L->pw + ix) * cb;
                if (++ix == W) ix = 0, iy++;
            }
            for (int q0 = 0; q0 < nq; q0 += 16) {
                __m512i r[16];
                for (int g = 0; g < 16; g++)
                    r[g] = q0 + g < nqx ? _mm512_load_si512(tmp + (q0 + g) * R + j) : _mm512_setzero_si512();
                transpose16(r);
                const int nb = cb - 4 * q0 < 64 ? cb - 4 * q0 : 64;
                if (nb == 64)
                    for (int t = 0; t < nj; t++) _mm512_storeu_si512(d[t] + 4 * q0, r[t]);
                else
                    for (int t = 0; t < nj; t++) _mm512_mask_storeu_epi8(d[t] + 4 * q0, ((__mmask64)1 << nb) - 1, r[t]);
            }
        }
    }
}

/* ---- the AMX path's weight tiles (speculate_amx.h) ----
 * B tile bt of wq from wt (the codes as [co][tap][ci]): per output channel
 * the 64 bytes of its K step (tp taps of cb bytes, or 64 channels of one
 * tap; zero past cin, kw and cout), then the 16 x 16 lanes transposed into
 * rows of 4 k x 16 channels. */
void et_spec_pack_wq_avx512(const et_spec_amx_layout *L, const int8_t *wt, int bt, int8_t *d) {
    const int nco16 = L->coutp / 16, c16 = bt % nco16, s = bt / nco16, gb = s % L->ngb, g = s / L->ngb % L->gx,
              ky = s / L->ngb / L->gx, cin = L->cin, kw = L->kw;
    const int64_t CK = (int64_t)cin * L->kh * kw;
    __m512i r[16];
    for (int c = 0; c < 16; c++) {
        const int co = c16 * 16 + c;
        r[c] = _mm512_setzero_si512();
        if (co >= L->cout) continue;
        const int8_t *src = wt + co * CK;
        if (L->tp == 1) {
            const int c0 = gb * 64, nb = cin - c0 < 64 ? cin - c0 : 64;
            if (nb > 0)
                r[c] = _mm512_maskz_loadu_epi8(nb == 64 ? ~(__mmask64)0 : ((__mmask64)1 << nb) - 1,
                                               src + (int64_t)(ky * kw + g) * cin + c0);
        } else {
            for (int tl = 0; tl < L->tp; tl++) {
                const int kx = g * L->tp + tl;
                if (kx >= kw) break;
                /* bytes tl*cb .. tl*cb + cin of the step: the tap's channels */
                const int8_t *p = (const int8_t *)((uintptr_t)(src + (int64_t)(ky * kw + kx) * cin) - (uintptr_t)(tl * L->cb));
                r[c] = _mm512_mask_loadu_epi8(r[c], (((__mmask64)1 << cin) - 1) << (tl * L->cb), p);
            }
        }
    }
    transpose16(r);
    for (int q = 0; q < 16; q++) _mm512_store_si512(d + 64 * q, r[q]);
}

/* One output channel's weights w[ci][t] (cin x taps floats) coded into
 * out[t][ci] (et_spec_code's codes): 16 channels of a tap gathered at a
 * time. */
void et_spec_code_wt_avx512(const float *w, int cin, int taps, float inv, int bits, int8_t *out) {
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m128i sh = _mm_cvtsi32_si128(8 - bits);
    const __m512i step = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(taps));
    for (int t = 0; t < taps; t++)
        for (int ci = 0; ci < cin; ci += 16) {
            const __mmask16 m = cin - ci >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cin - ci)) - 1);
            const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, step, w + (int64_t)ci * taps + t, 4);
            _mm_mask_storeu_epi8(out + (int64_t)t * cin + ci, m, _mm512_cvtepi32_epi8(code16m(v, vinv, sh)));
        }
}

/* ---- the direct prediction of a stride-1 convolution with few taps ----
 * (et_spec_conv_small, speculate.c). xq: the input's codes as floats, one
 * zero-padded plane per (image, channel) of hp rows of wq floats; wc: the
 * weights' codes as floats in blocks of 8 channels, wc[(co/8)][t][co%8]
 * (zero past cout); off[t]: tap t's offset in an image's planes. Integer
 * products of codes summed in fp32 are exact while every partial sum stays
 * below 2^24 (the caller's bound on K), so S is the exact integer sum and
 * the mask is S >= thr[co], as the other paths decide it. Output rows
 * [r0, r1) of the call (row = n * ho + oy), 16 columns at a time, 8
 * channels per pass. */
static inline void small_store(__m512 acc, __mmask16 mt, int32_t t, uint8_t *m, __m512i *kc) {
    const __mmask16 k = _mm512_mask_cmpge_epi32_mask(mt, _mm512_cvtps_epi32(acc), _mm512_set1_epi32(t));
    _mm_mask_storeu_epi8(m, mt, _mm_maskz_mov_epi8(k, _mm_set1_epi8(1)));
    *kc = _mm512_mask_add_epi32(*kc, k, *kc, _mm512_set1_epi32(1));
}

void et_spec_small_rows_avx512(const float *xq, int cin, int hp, int wq, const float *wc, const int32_t *off, int ck,
                               const int32_t *thr, int cout, int ho, int wo, int r0, int r1, uint8_t *mask,
                               int64_t ldm, int32_t *kept) {
    for (int r = r0; r < r1; r++) {
        const int n = r / ho, oy = r - n * ho;
        const float *row = xq + (int64_t)n * cin * hp * wq + (int64_t)oy * wq;
        const int64_t col0 = (int64_t)r * wo;
        for (int ox = 0; ox < wo; ox += 16) {
            const __mmask16 mt = wo - ox >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (wo - ox)) - 1);
            const float *s = row + ox;
            __m512i kc = _mm512_setzero_si512();
            for (int c0 = 0; c0 < cout; c0 += 8) {
                const float *w = wc + (int64_t)c0 * ck;
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
                for (int t = 0; t < ck; t++, w += 8) {
                    const __m512 v = _mm512_loadu_ps(s + off[t]);
                    a0 = _mm512_fmadd_ps(_mm512_set1_ps(w[0]), v, a0);
                    a1 = _mm512_fmadd_ps(_mm512_set1_ps(w[1]), v, a1);
                    a2 = _mm512_fmadd_ps(_mm512_set1_ps(w[2]), v, a2);
                    a3 = _mm512_fmadd_ps(_mm512_set1_ps(w[3]), v, a3);
                    a4 = _mm512_fmadd_ps(_mm512_set1_ps(w[4]), v, a4);
                    a5 = _mm512_fmadd_ps(_mm512_set1_ps(w[5]), v, a5);
                    a6 = _mm512_fmadd_ps(_mm512_set1_ps(w[6]), v, a6);
                    a7 = _mm512_fmadd_ps(_mm512_set1_ps(w[7]), v, a7);
                }
                uint8_t *m = mask + (int64_t)c0 * ldm + col0 + ox;
                const int nc = cout - c0;
                small_store(a0, mt, thr[c0], m, &kc);
                if (nc > 1) small_store(a1, mt, thr[c0 + 1], m + ldm, &kc);
                if (nc > 2) small_store(a2, mt, thr[c0 + 2], m + 2 * ldm, &kc);
                if (nc > 3) small_store(a3, mt, thr[c0 + 3], m + 3 * ldm, &kc);
                if (nc > 4) small_store(a4, mt, thr[c0 + 4], m + 4 * ldm, &kc);
                if (nc > 5) small_store(a5, mt, thr[c0 + 5], m + 5 * ldm, &kc);
                if (nc > 6) small_store(a6, mt, thr[c0 + 6], m + 6 * ldm, &kc);
                if (nc > 7) small_store(a7, mt, thr[c0 + 7], m + 7 * ldm, &kc);
            }
            _mm512_mask_storeu_epi32(kept + col0 + ox, mt, kc);
        }
    }
}

/* One image's codes into its padded planes (zero outside the input): the
 * codes of et_spec_code, as floats. */
void et_spec_small_code_avx512(const float *x, int N, int n, int cin, int h, int w, int ph, int pw, int hp, int wq,
                               float inv, int bits, float *xq) {
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m128i sh = _mm_cvtsi32_si128(8 - bits);
    for (int ci = 0; ci < cin; ci++) {
        float *p = xq + ((int64_t)n * cin + ci) * hp * wq;
        memset(p, 0, sizeof(float) * (size_t)hp * (size_t)wq);
        const float *src = x + ((int64_t)ci * N + n) * h * w;
        for (int iy = 0; iy < h; iy++)
            for (int ix = 0; ix < w; ix += 16) {
                const __mmask16 m = w - ix >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - ix)) - 1);
                const __m512i c = code16(_mm512_maskz_loadu_ps(m, src + (int64_t)iy * w + ix), vinv, sh);
                _mm512_mask_storeu_ps(p + (int64_t)(iy + ph) * wq + pw + ix, m, _mm512_cvtepi32_ps(c));
            }
    }
}
