/* The AVX-512 kernels of spconv.h: conv EP and WG over dY's non-zeros, no
 * column matrix. spconv.c drives them and holds the rules. */
#include <immintrin.h>
#include <string.h>

#include "kernels/spconv.h"
#include "kernels/transpose_avx512.h"

#define AI __attribute__((always_inline)) static inline

static inline __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* ------------------------------------------------------------------ EP */

/* dY's columns transposed: dyT[p*Coutp + co] = dY[co][p] (0 for co >= Cout),
 * and bits[p*nw + w] = the non-zero output channels 64w..64w+63 of column p. */
void et_spconv_ep_prep_avx512(int Cout, int Coutp, int nw, int64_t P, const float *dy, int64_t ldy, float *dyT,
                              uint64_t *bits) {
    const __m512 z = _mm512_setzero_ps();
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
        const int np = P - p0 < 16 ? (int)(P - p0) : 16;
        const __mmask16 pm = lanes(np);
        uint64_t w[16][4];
        memset(w, 0, sizeof w);
        for (int c0 = 0; c0 < Coutp; c0 += 16) {
            __m512 v[16];
            for (int q = 0; q < 16; q++)
                v[q] = c0 + q < Cout ? _mm512_maskz_loadu_ps(pm, dy + (int64_t)(c0 + q) * ldy + p0) : z;
            et_tr16_avx512(v);
            for (int q = 0; q < np; q++) {
                _mm512_storeu_ps(dyT + (p0 + q) * Coutp + c0, v[q]);
                w[q][c0 >> 6] |= (uint64_t)_mm512_cmp_ps_mask(v[q], z, _CMP_NEQ_UQ) << (c0 & 63);
            }
        }
        for (int q = 0; q < np; q++)
            for (int k = 0; k < nw; k++) bits[(p0 + q) * nw + k] = w[q][k];
    }
}

/* Taps [t0, t0 + TG) of one dY pixel p (its non-zeros: bits, values dv):
 * each tap's NV channel vectors summed over the non-zero output channels
 * ascending (the micro-kernel's sum of that dcol entry) and added to the dx
 * pixel the tap feeds (acc: the image's dx pixels, channels last). */
AI void ep_taps(const int NV, const int TG, const et_conv_implicit *g, int nw, int Cp, int cb, int t0, const uint64_t *b,
                const float *dv, int oy, int ox, float *acc) {
    __m512 s[24];
    for (int a = 0; a < TG * NV; a++) s[a] = _mm512_setzero_ps();
    const int64_t ts = Cp, cs = (int64_t)g->KH * g->KW * Cp;
    const float *wt = g->wt + (int64_t)t0 * ts + cb;
    for (int k = 0; k < nw; k++) {
        uint64_t m = b[k];
        while (m) {
            const int co = 64 * k + __builtin_ctzll(m);
            m &= m - 1;
            const __m512 bv = _mm512_set1_ps(dv[co]);
            const float *wr = wt + (int64_t)co * cs;
#pragma GCC unroll 24
            for (int t = 0; t < TG; t++)
#pragma GCC unroll 8
                for (int v = 0; v < NV; v++)
                    s[t * NV + v] = _mm512_fmadd_ps(_mm512_loadu_ps(wr + t * ts + 16 * v), bv, s[t * NV + v]);
        }
    }
#pragma GCC unroll 24
    for (int t = 0; t < TG; t++) {
        const int ky = (t0 + t) / g->KW, kx = (t0 + t) % g->KW;
        const int iy = oy - g->PH + ky, ix = ox - g->PW + kx;
        if ((unsigned)iy >= (unsigned)g->H || (unsigned)ix >= (unsigned)g->W) continue;
        float *d = acc + ((int64_t)iy * g->W + ix) * Cp + cb;
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(d + 16 * v, _mm512_add_ps(_mm512_loadu_ps(d + 16 * v), s[t * NV + v]));
    }
}

typedef void (*ep_taps_fn)(const et_conv_implicit *, int, int, int, int, const uint64_t *, const float *, int, int,
                           float *);
#define EP_TAPS(nv, tg)                                                                                          \
    static __attribute__((noinline)) void ep_taps_##nv##_##tg(const et_conv_implicit *g, int nw, int Cp, int cb, \
                                                              int t0, const uint64_t *b, const float *dv, int oy, \
                                                              int ox, float *acc) {                              \
        ep_taps(nv, tg, g, nw, Cp, cb, t0, b, dv, oy, ox, acc);                                                  \
    }
#define EP_TAPS3(nv) EP_TAPS(nv, 1) EP_TAPS(nv, 2) EP_TAPS(nv, 3)
#define EP_TAPS4(nv) EP_TAPS3(nv) EP_TAPS(nv, 4)
#define EP_TAPS6(nv) EP_TAPS4(nv) EP_TAPS(nv, 5) EP_TAPS(nv, 6)
#define EP_TAPS8(nv) EP_TAPS6(nv) EP_TAPS(nv, 7) EP_TAPS(nv, 8)
#define EP_TAPS9(nv) EP_TAPS8(nv) EP_TAPS(nv, 9)
EP_TAPS9(1) EP_TAPS9(2) EP_TAPS8(3) EP_TAPS6(4) EP_TAPS4(5) EP_TAPS4(6) EP_TAPS3(7) EP_TAPS3(8)
#define EP_ROW3(nv) {NULL, ep_taps_##nv##_1, ep_taps_##nv##_2, ep_taps_##nv##_3, NULL, NULL, NULL, NULL, NULL, NULL}
#define EP_ROW4(nv) {NULL, ep_taps_##nv##_1, ep_taps_##nv##_2, ep_taps_##nv##_3, ep_taps_##nv##_4, NULL, NULL, NULL, NULL, NULL}
#define EP_ROW6(nv)                                                                                               \
    {NULL, ep_taps_##nv##_1, ep_taps_##nv##_2, ep_taps_##nv##_3, ep_taps_##nv##_4, ep_taps_##nv##_5,            \
     ep_taps_##nv##_6, NULL, NULL, NULL}
#define EP_ROW8(nv)                                                                                               \
    {NULL, ep_taps_##nv##_1, ep_taps_##nv##_2, ep_taps_##nv##_3, ep_taps_##nv##_4, ep_taps_##nv##_5,            \
     ep_taps_##nv##_6, ep_taps_##nv##_7, ep_taps_##nv##_8, NULL}
#define EP_ROW9(nv)                                                                                               \
    {NULL, ep_taps_##nv##_1, ep_taps_##nv##_2, ep_taps_##nv##_3, ep_taps_##nv##_4, ep_taps_##nv##_5,            \
     ep_taps_##nv##_6, ep_taps_##nv##_7, ep_taps_##nv##_8, ep_taps_##nv##_9}
static const ep_taps_fn ep_fn[9][10] = {{NULL}, EP_ROW9(1), EP_ROW9(2), EP_ROW8(3), EP_ROW6(4),
                                        EP_ROW4(5), EP_ROW4(6), EP_ROW3(7), EP_ROW3(8)};

/* One image n (chunk-relative) of EP: acc (H*W*Cp floats, channels last)
 * from the dY pixels in descending order, so that every dx pixel receives its
 * taps in ascending (ky, kx) order, col2im's order; then dx (CNHW) from acc,
 * 16 x 16 blocks transposed, through the mask of x. Returns the non-zero dY
 * entries visited times the taps each feeds inside the image. */
uint64_t et_spconv_ep_image_avx512(const et_conv_implicit *g, int Coutp, int nw, const float *dyT, const uint64_t *bits,
                                   int n, float *acc) {
    const int Cp = (g->C + 15) & ~15, KK = g->KH * g->KW, HWo = g->Ho * g->Wo, H = g->H, W = g->W;
    memset(acc, 0, sizeof(float) * (size_t)H * W * Cp);
    uint64_t ent = 0;
    for (int cb = 0; cb < Cp; cb += 128) {
        const int nv = (Cp - cb) / 16 < 8 ? (Cp - cb) / 16 : 8;
        const int tg = nv == 1 || nv == 2 ? 9 : nv == 3 ? 8 : nv == 4 ? 6 : nv <= 6 ? 4 : 3;
        for (int p = HWo - 1, oy = g->Ho - 1, ox = g->Wo - 1; p >= 0; p--, ox = ox ? ox - 1 : (oy--, g->Wo - 1)) {
            const int64_t pc = (int64_t)n * HWo + p;
            const uint64_t *b = bits + pc * nw;
            uint64_t any = 0;
            for (int k = 0; k < nw; k++) any |= b[k];
            if (!any) continue;
            if (cb == 0) { /* times the taps inside the image */
                int cnt = 0;
                for (int k = 0; k < nw; k++) cnt += __builtin_popcountll(b[k]);
                int ry = 0, rx = 0;
                for (int ky = 0; ky < g->KH; ky++) ry += (unsigned)(oy - g->PH + ky) < (unsigned)H;
                for (int kx = 0; kx < g->KW; kx++) rx += (unsigned)(ox - g->PW + kx) < (unsigned)W;
                ent += (uint64_t)cnt * (uint64_t)(ry * rx);
            }
            const float *dv = dyT + pc * Coutp;
            for (int t0 = 0; t0 < KK; t0 += tg) {
                const int m = KK - t0 < tg ? KK - t0 : tg;
                ep_fn[nv][m](g, nw, Cp, cb, t0, b, dv, oy, ox, acc);
            }
        }
    }
    /* dx of the image: 16 pixels x 16 channels at a time */
    const int64_t HW = (int64_t)H * W, cs = (int64_t)g->N * HW;
    const __m512 z = _mm512_setzero_ps();
    for (int64_t q0 = 0; q0 < HW; q0 += 16) {
        const int np = HW - q0 < 16 ? (int)(HW - q0) : 16;
        const __mmask16 sm = lanes(np);
        for (int c0 = 0; c0 < g->C; c0 += 16) {
            __m512 r[16];
            for (int q = 0; q < 16; q++) r[q] = q < np ? _mm512_loadu_ps(acc + (q0 + q) * Cp + c0) : z;
            et_tr16_avx512(r);
            for (int q = 0; q < 16 && c0 + q < g->C; q++) {
                const int64_t o = (int64_t)(c0 + q) * cs + (int64_t)(g->n0 + n) * HW + q0;
                __m512 val = r[q];
                if (g->keep)
                    val = _mm512_maskz_mov_ps(
                        _mm512_mask_cmp_ps_mask(sm, _mm512_maskz_loadu_ps(sm, g->x + o), z, _CMP_NEQ_UQ), val);
                _mm512_mask_storeu_ps(g->dx + o, sm, val);
            }
        }
    }
    return ent;
}

/* ------------------------------------------------------------------ WG */

/* The chunk's input, zero-padded and channels last: xt[((n*Hp + y)*Wp + x)*Cp + ci]
 * = x[ci][n0+n][y-PH][x-PW] (0 outside the image and for ci >= C). */
void et_spconv_wg_xt_avx512(const et_conv_implicit *g, int Cp, int Hp, int Wp, float *xt) {
    const int H = g->H, W = g->W;
    const int64_t HW = (int64_t)H * W, cs = (int64_t)g->N * HW;
    memset(xt, 0, sizeof(float) * (size_t)g->nb * Hp * Wp * Cp);
    for (int n = 0; n < g->nb; n++)
        for (int iy = 0; iy < H; iy++)
            for (int ix0 = 0; ix0 < W; ix0 += 16) {
                const int np = W - ix0 < 16 ? W - ix0 : 16;
                const __mmask16 pm = lanes(np);
                for (int c0 = 0; c0 < g->C; c0 += 16) {
                    __m512 v[16];
                    for (int q = 0; q < 16; q++)
                        v[q] = c0 + q < g->C ? _mm512_maskz_loadu_ps(pm, g->x + (int64_t)(c0 + q) * cs +
                                                                              (int64_t)(g->n0 + n) * HW + (int64_t)iy * W + ix0)
                                             : _mm512_setzero_ps();
                    et_tr16_avx512(v);
                    float *d = xt + (((int64_t)n * Hp + iy + g->PH) * Wp + ix0 + g->PW) * Cp + c0;
                    for (int q = 0; q < np; q++) _mm512_storeu_ps(d + (int64_t)q * Cp, v[q]);
                }
            }
}

/* NR rows (ky0..) of NV vectors each (a row: the KW*Cp floats of taps
 * (ky, 0..KW-1)) of one output channel's gradient, summed over the listed
 * non-zeros (offsets into xt, values) of one KC block, then stored. */
AI void wg_pass(const int NR, const int NV, int n, const int32_t *off, const float *val, const float *xt, int64_t rs,
                int first, float *G, int64_t grs) {
    __m512 acc[24];
    for (int a = 0; a < NR * NV; a++) acc[a] = _mm512_setzero_ps();
    for (int t = 0; t < n; t++) {
        const float *s = xt + off[t];
        const __m512 bv = _mm512_set1_ps(val[t]);
#pragma GCC unroll 3
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 24
            for (int v = 0; v < NV; v++)
                acc[r * NV + v] = _mm512_fmadd_ps(_mm512_loadu_ps(s + r * rs + 16 * v), bv, acc[r * NV + v]);
    }
#pragma GCC unroll 3
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 24
        for (int v = 0; v < NV; v++) {
            float *d = G + r * grs + 16 * v;
            _mm512_storeu_ps(d, first ? acc[r * NV + v] : _mm512_add_ps(acc[r * NV + v], _mm512_loadu_ps(d)));
        }
}

typedef void (*wg_pass_fn)(int, const int32_t *, const float *, const float *, int64_t, int, float *, int64_t);
#define WG_PASS(nr, nv)                                                                                            \
    static __attribute__((noinline)) void wg_pass_##nr##_##nv(int n, const int32_t *off, const float *val,        \
                                                              const float *xt, int64_t rs, int first, float *G,   \
                                                              int64_t grs) {                                      \
        wg_pass(nr, nv, n, off, val, xt, rs, first, G, grs);                                                      \
    }
WG_PASS(1, 1) WG_PASS(1, 2) WG_PASS(1, 3) WG_PASS(1, 4) WG_PASS(1, 5) WG_PASS(1, 6) WG_PASS(1, 7) WG_PASS(1, 8)
WG_PASS(1, 9) WG_PASS(1, 10) WG_PASS(1, 11) WG_PASS(1, 12) WG_PASS(1, 13) WG_PASS(1, 14) WG_PASS(1, 15)
WG_PASS(1, 16) WG_PASS(1, 17) WG_PASS(1, 18) WG_PASS(1, 19) WG_PASS(1, 20) WG_PASS(1, 21) WG_PASS(1, 22)
WG_PASS(1, 23) WG_PASS(1, 24)
WG_PASS(2, 9) WG_PASS(2, 10) WG_PASS(2, 11) WG_PASS(2, 12)
WG_PASS(3, 1) WG_PASS(3, 2) WG_PASS(3, 3) WG_PASS(3, 4) WG_PASS(3, 5) WG_PASS(3, 6) WG_PASS(3, 7) WG_PASS(3, 8)

static const wg_pass_fn wg1[25] = {NULL, wg_pass_1_1, wg_pass_1_2, wg_pass_1_3, wg_pass_1_4, wg_pass_1_5,
                                   wg_pass_1_6, wg_pass_1_7, wg_pass_1_8, wg_pass_1_9, wg_pass_1_10, wg_pass_1_11,
                                   wg_pass_1_12, wg_pass_1_13, wg_pass_1_14, wg_pass_1_15, wg_pass_1_16,
                                   wg_pass_1_17, wg_pass_1_18, wg_pass_1_19, wg_pass_1_20, wg_pass_1_21,
                                   wg_pass_1_22, wg_pass_1_23, wg_pass_1_24};
static const wg_pass_fn wg2[13] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                   wg_pass_2_9, wg_pass_2_10, wg_pass_2_11, wg_pass_2_12};
static const wg_pass_fn wg3[9] = {NULL, wg_pass_3_1, wg_pass_3_2, wg_pass_3_3, wg_pass_3_4,
                                  wg_pass_3_5, wg_pass_3_6, wg_pass_3_7, wg_pass_3_8};

/* Output channels [c0, c1): per KC block of the chunk's K, list the
 * non-zeros of dY's row (pixel ascending: xt offsets of the tap row segment
 * (0, 0) and values), then the passes over the kernel rows. pofs[p] = the xt
 * offset of pixel p's window. lbuf: 2*kc scratch. Returns nnz visited. */
uint64_t et_spconv_wg_rows_avx512(const et_conv_implicit *g, int Cp, int Wp, int kc, const float *xt, const int32_t *pofs,
                                  const float *dy, int64_t ldy, float beta, float *G, int c0, int c1, int32_t *lbuf) {
    const int64_t P = (int64_t)g->nb * g->Ho * g->Wo;
    const int NV = g->KW * Cp / 16, KK = g->KH * g->KW;
    const int64_t rs = (int64_t)Wp * Cp, grs = (int64_t)g->KW * Cp;
    int32_t *off = lbuf;
    float *val = (float *)(void *)(lbuf + kc);
    const __m512 z = _mm512_setzero_ps();
    uint64_t nnz = 0;
    for (int co = c0; co < c1; co++) {
        const float *d = dy + (int64_t)co * ldy;
        float *Gc = G + (int64_t)co * KK * Cp;
        for (int64_t k0 = 0; k0 < P; k0 += kc) {
            const int64_t k1 = P - k0 < kc ? P : k0 + kc;
            int n = 0;
            for (int64_t p = k0; p < k1; p += 16) {
                const __mmask16 pm = lanes(k1 - p < 16 ? (int)(k1 - p) : 16);
                unsigned m = _mm512_mask_cmp_ps_mask(pm, _mm512_maskz_loadu_ps(pm, d + p), z, _CMP_NEQ_UQ);
                while (m) {
                    const int q = __builtin_ctz(m);
                    m &= m - 1;
                    off[n] = pofs[p + q];
                    val[n++] = d[p + q];
                }
            }
            nnz += (uint64_t)n;
            const int first = beta == 0.0f && k0 == 0;
            int ky = 0;
            if (NV <= 8)
                for (; ky + 3 <= g->KH; ky += 3) wg3[NV](n, off, val, xt + ky * rs, rs, first, Gc + ky * grs, grs);
            else if (NV <= 12)
                for (; ky + 2 <= g->KH; ky += 2) wg2[NV](n, off, val, xt + ky * rs, rs, first, Gc + ky * grs, grs);
            for (; ky < g->KH; ky++) wg1[NV](n, off, val, xt + ky * rs, rs, first, Gc + ky * grs, grs);
        }
    }
    return nnz;
}
