/* The AVX-512 kernels of spconv.h: conv EP and WG over dY's non-zeros, no
 * column matrix. spconv.c drives them and holds the rules. */
#include <immintrin.h>
#include <string.h>

#include "kernels/spconv.h"
#include "kernels/transpose_avx512.h"

#define AI __attribute__((always_inline)) static inline

static inline __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* ------------------------------------------------------------------ EP */

/* dY's pixels [p0, p1) (dy[co*ldy + p]) copied to dv[co*ws + p - p0] (close
 * together for the kernels' broadcasts), and their non-zero output channels:
 * w[k*ws + p - p0] = the bit set of channels 64k..64k+63 (bit co - 64k). */
static void ep_bits(int Cout, int64_t p0, int64_t p1, const float *dy, int64_t ldy, float *dv, uint64_t *w,
                    int64_t ws) {
    const __m512 z = _mm512_setzero_ps();
    for (int64_t p = p0; p < p1; p += 16) {
        const __mmask16 pm = lanes(p1 - p < 16 ? (int)(p1 - p) : 16);
        for (int c0 = 0; c0 < Cout; c0 += 64) {
            __m512i b0 = _mm512_setzero_si512(), b1 = b0;
            const int nc = Cout - c0 < 64 ? Cout - c0 : 64;
            const float *d = dy + (int64_t)c0 * ldy + p;
            float *o = dv + (int64_t)c0 * ws + (p - p0);
            for (int c = 0; c < nc; c++, d += ldy, o += ws) {
                const __m512 v = _mm512_maskz_loadu_ps(pm, d);
                _mm512_mask_storeu_ps(o, pm, v);
                const __mmask16 m = _mm512_mask_cmp_ps_mask(pm, v, z, _CMP_NEQ_UQ);
                const __m512i bit = _mm512_set1_epi64((long long)(1ull << c));
                b0 = _mm512_mask_or_epi64(b0, (__mmask8)m, b0, bit);
                b1 = _mm512_mask_or_epi64(b1, (__mmask8)(m >> 8), b1, bit);
            }
            uint64_t *wo = w + (c0 >> 6) * ws + (p - p0);
            _mm512_mask_storeu_epi64(wo, (__mmask8)pm, b0);
            _mm512_mask_storeu_epi64(wo + 8, (__mmask8)(pm >> 8), b1);
        }
    }
}

/* One dY row, one block of NV channel vectors, taps [t0, t0 + TG). */
typedef struct ep_row {
    const float *wb;      /* the block's weights at tap t0: wb[co*cs + t*16NV + ci] */
    int64_t cs;           /* KK*16NV */
    const float *dy;      /* the row's dY: dy[co*ldy + ox] */
    int64_t ldy;
    const uint64_t *w;    /* the row's bit sets, w[k*ws + ox]: channels 64k.. */
    int64_t ws;
    int nw, Wo;
    float *acc;           /* the dx pixel fed by tap t of pixel ox: acc + ox*Cp + off[t] */
    int64_t Cp;
    const int64_t *off;
} ep_row;

/* The row's pixels right to left; for each with a non-zero, each tap's sum
 * over the non-zero output channels ascending from +0 (the micro-kernel's
 * sum of that dcol entry) added to the dx pixel the tap feeds. */
AI void ep_row_k(const int NV, const int TG, const ep_row *r) {
    /* locals: the stores into acc cannot alias them */
    const float *const wb = r->wb, *const dy = r->dy;
    const uint64_t *const wbits = r->w;
    const int64_t cs = r->cs, ldy = r->ldy, ws = r->ws, Cp = r->Cp;
    const int nw = r->nw;
    float *const acc = r->acc;
    int64_t off[9];
    for (int t = 0; t < TG; t++) off[t] = r->off[t];
    for (int ox = r->Wo - 1; ox >= 0; ox--) {
        const uint64_t *w = wbits + ox;
        uint64_t any = w[0];
        for (int k = 1; k < nw; k++) any |= w[k * ws];
        if (!any) continue;
        __m512 s[27];
#pragma GCC unroll 9
        for (int t = 0; t < TG; t++)
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) s[t * NV + v] = _mm512_setzero_ps();
        const float *dv = dy + ox;
        for (int k = 0; k < nw; k++) {
            uint64_t m = w[k * ws];
            while (m) {
                const int64_t co = 64 * k + __builtin_ctzll(m);
                m &= m - 1;
                const __m512 bv = _mm512_set1_ps(dv[co * ldy]);
                const float *wr = wb + co * cs;
#pragma GCC unroll 9
                for (int t = 0; t < TG; t++)
#pragma GCC unroll 3
                    for (int v = 0; v < NV; v++)
                        s[t * NV + v] = _mm512_fmadd_ps(_mm512_loadu_ps(wr + 16 * (t * NV + v)), bv, s[t * NV + v]);
            }
        }
        float *d0 = acc + ox * Cp;
#pragma GCC unroll 9
        for (int t = 0; t < TG; t++) {
            float *d = d0 + off[t];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                _mm512_storeu_ps(d + 16 * v, _mm512_add_ps(_mm512_loadu_ps(d + 16 * v), s[t * NV + v]));
        }
    }
}

typedef void (*ep_row_fn)(const ep_row *);
#define EP_ROW_K(nv, tg) \
    static __attribute__((noinline)) void ep_row_##nv##_##tg(const ep_row *r) { ep_row_k(nv, tg, r); }
#define EP_ROW_K9(nv)                                                                                             \
    EP_ROW_K(nv, 1) EP_ROW_K(nv, 2) EP_ROW_K(nv, 3) EP_ROW_K(nv, 4) EP_ROW_K(nv, 5) EP_ROW_K(nv, 6) EP_ROW_K(nv, 7) \
        EP_ROW_K(nv, 8) EP_ROW_K(nv, 9)
EP_ROW_K9(1) EP_ROW_K9(2) EP_ROW_K9(3)
#define EP_FNS(nv)                                                                                               \
    {NULL,          ep_row_##nv##_1, ep_row_##nv##_2, ep_row_##nv##_3, ep_row_##nv##_4,                         \
     ep_row_##nv##_5, ep_row_##nv##_6, ep_row_##nv##_7, ep_row_##nv##_8, ep_row_##nv##_9}
/* ep_fn[NV][TG]: 1..3 vectors of channels x 1..9 taps (at most 27 sums in registers) */
static const ep_row_fn ep_fn[4][10] = {{NULL}, EP_FNS(1), EP_FNS(2), EP_FNS(3)};

/* dx pixels [q0, q0 + np) of image n (np <= 16) from acc (padded: pixel
 * (iy, ix) at ((iy + PH)*Wp + ix + PW)*Cp): 16 pixels x 16 channels
 * transposed in registers, stored through the mask of x. */
static void ep_emit(const et_conv_implicit *g, int n, const float *acc, int Cp, int Wp, int64_t q0, int np) {
    const int64_t HW = (int64_t)g->H * g->W, cs = (int64_t)g->N * HW;
    const __m512 z = _mm512_setzero_ps();
    const __mmask16 sm = lanes(np);
    const float *src[16];
    int iy = (int)(q0 / g->W), ix = (int)(q0 % g->W);
    for (int q = 0; q < np; q++) {
        src[q] = acc + ((int64_t)(iy + g->PH) * Wp + ix + g->PW) * Cp;
        if (++ix == g->W) ix = 0, iy++;
    }
    const int keep = g->keep, C = g->C;
    const float *x = g->x + (int64_t)(g->n0 + n) * HW + q0;
    float *dx = g->dx + (int64_t)(g->n0 + n) * HW + q0;
    for (int c0 = 0; c0 < C; c0 += 16) {
        __m512 r[16];
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) r[q] = q < np ? _mm512_loadu_ps(src[q] + c0) : z;
        et_tr16_avx512(r);
        const int nq = C - c0 < 16 ? C - c0 : 16;
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) {
            if (q >= nq) break;
            const int64_t o = (int64_t)(c0 + q) * cs;
            __m512 v = r[q];
            if (keep)
                v = _mm512_maskz_mov_ps(_mm512_mask_cmp_ps_mask(sm, _mm512_maskz_loadu_ps(sm, x + o), z, _CMP_NEQ_UQ), v);
            _mm512_mask_storeu_ps(dx + o, sm, v);
        }
    }
}

/* One image n (chunk-relative) of EP. The dY rows are visited bottom to top
 * and each row's pixels right to left, so that every dx pixel receives its
 * taps in ascending (ky, kx) order, col2im's order: dx row iy gets kernel
 * row ky from dY row iy + PH - ky, and within it tap kx from pixel
 * ix + PW - kx. The rows go in bands of sh.band; a band is run once per
 * block of channels and group of taps, which keeps that order: the groups
 * are ranges of ascending taps, and a dx pixel's taps from a lower band have
 * higher ky.
 * acc holds the image's dx channels last and zero-padded by PH rows and PW
 * columns on each side (Hp x Wp pixels of Cp floats), so that every tap
 * lands in it; a row is zeroed when the first dY row reaching it starts, and
 * the pixels of the rows no later dY row reaches are written to dx (CNHW,
 * through the mask of x) 16 at a time from the end of the plane, so acc's
 * live part is the rows being summed. wband, dband: a band's bit sets and
 * dY (ep_bits; band*Wo per 64 channels and per channel). Returns the
 * non-zero dY entries visited times the taps each feeds inside the image. */
uint64_t et_spconv_ep_image_avx512(const et_conv_implicit *g, const et_spconv_ep_shape *sh, const float *dy,
                                   int64_t ldy, int n, uint64_t *wband, float *dband, float *acc) {
    const int Cp = (g->C + 15) & ~15, KH = g->KH, KW = g->KW, KK = KH * KW, H = g->H, W = g->W, Ho = g->Ho,
              Wo = g->Wo;
    const int Wp = Wo + KW - 1, nw = (g->Cout + 63) / 64;
    const int64_t HWo = (int64_t)Ho * Wo, HW = (int64_t)H * W, rs = (int64_t)Wp * Cp, bs = (int64_t)sh->band * Wo;
    const float *dyn = dy + (int64_t)n * HWo;
    uint64_t ent = 0;
    int64_t qhi = HW; /* pixels [qhi, HW) written to dx */
    for (int ob1 = Ho - 1; ob1 >= 0; ob1 -= sh->band) {
        const int ob0 = ob1 - sh->band + 1 < 0 ? 0 : ob1 - sh->band + 1;
        ep_bits(g->Cout, (int64_t)ob0 * Wo, (int64_t)(ob1 + 1) * Wo, dyn, ldy, dband, wband, bs);
        /* the next band's dY into L2 while this one runs */
        if (ob0 > 0) {
            const int64_t q0 = (int64_t)(ob0 - sh->band < 0 ? 0 : ob0 - sh->band) * Wo, q1 = (int64_t)ob0 * Wo;
            for (int co = 0; co < g->Cout; co++)
                for (int64_t q = q0; q < q1 + 15; q += 16)
                    _mm_prefetch((const char *)(dyn + co * ldy + (q < q1 ? q : q1 - 1)), _MM_HINT_T1);
        }
        /* the pixels written after this band: x (the mask) and dx into L2 while it runs */
        const int lo = ob0 ? ob0 - g->PH + KH - 1 : 0;
        const int64_t qlo = lo <= 0 ? 0 : lo >= H ? HW : (int64_t)lo * W;
        for (int c = 0; c < g->C && qlo < qhi; c++) {
            const int64_t o = (int64_t)c * g->N * HW + (int64_t)(g->n0 + n) * HW;
            for (int64_t q = qlo & ~(int64_t)15; q < qhi; q += 16) {
                if (g->keep) _mm_prefetch((const char *)(g->x + o + q), _MM_HINT_T1);
                _mm_prefetch((const char *)(g->dx + o + q), _MM_HINT_T1);
            }
        }
        for (int oy = ob1; oy >= ob0; oy--) {
            /* the padded rows this dY row reaches first */
            const int r0 = oy, r1 = oy == Ho - 1 ? oy + KH - 1 : oy;
            memset(acc + r0 * rs, 0, sizeof(float) * (size_t)((r1 - r0 + 1) * rs));
            /* the count: kernel rows and columns inside the image */
            int ry = 0;
            for (int ky = 0; ky < KH; ky++) ry += (unsigned)(oy - g->PH + ky) < (unsigned)H;
            const uint64_t *wr = wband + (int64_t)(oy - ob0) * Wo;
            uint64_t e = 0;
            for (int ox = 0; ox < Wo; ox++) {
                /* kernel columns left of the image, right of it */
                const int cl = g->PW - ox > 0 ? g->PW - ox : 0, cr = ox - g->PW + KW - W > 0 ? ox - g->PW + KW - W : 0;
                int cnt = 0;
                for (int k = 0; k < nw; k++) cnt += __builtin_popcountll(wr[k * bs + ox]);
                e += (uint64_t)cnt * (uint64_t)(KW - cl - cr > 0 ? KW - cl - cr : 0);
            }
            ent += e * (uint64_t)ry;
        }
        for (int cb = 0; cb < Cp; cb += 16 * sh->nv) {
            const int nv = (Cp - cb) / 16 < sh->nv ? (Cp - cb) / 16 : sh->nv;
            for (int t0 = 0; t0 < KK; t0 += sh->tg) {
                const int tg = KK - t0 < sh->tg ? KK - t0 : sh->tg;
                int64_t off[9];
                for (int t = 0; t < tg; t++) off[t] = ((t0 + t) / KW * (int64_t)Wp + (t0 + t) % KW) * Cp;
                for (int oy = ob1; oy >= ob0; oy--) {
                    const int64_t b = (int64_t)(oy - ob0) * Wo;
                    const ep_row r = {g->wt + (int64_t)cb * KK * g->Cout + (int64_t)t0 * 16 * nv,
                                      (int64_t)KK * 16 * nv, dband + b, bs, wband + b, bs, nw, Wo,
                                      acc + oy * rs + cb, Cp, off};
                    ep_fn[nv][tg](&r);
                }
            }
        }
        /* real rows at or below lo: no later dY row reaches them */
        for (; qhi - 16 >= qlo; qhi -= 16) ep_emit(g, n, acc, Cp, Wp, qhi - 16, 16);
        if (!ob0 && qhi > 0) ep_emit(g, n, acc, Cp, Wp, 0, (int)qhi);
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
