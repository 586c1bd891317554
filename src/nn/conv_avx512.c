/* AVX-512 row kernels of conv.c's im2col / col2im (see conv_rows.h). */
#include <immintrin.h>
#include "kernels/transpose_avx512.h"

#include "nn/conv_rows.h"

static inline __mmask16 range_mask(int lo, int hi, int base) {
    /* lanes l with lo <= base + l < hi */
    int a = lo - base, b = hi - base;
    if (a < 0) a = 0;
    if (b > 16) b = 16;
    if (b <= a) return 0;
    return (__mmask16)(((1u << (b - a)) - 1) << a);
}

void et_im2col_row_avx512(const et_conv_geom *g, int ky, int kx, const float *src, int nb,
                          float *dst, int32_t *cnt) {
    const __m512 zero = _mm512_setzero_ps();
    int32_t nz = 0;
    const int H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const int ix0 = kx - g->PW; /* input column of output column 0 */
    int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < Wo ? W - ix0 : Wo;
    if (hi < lo) hi = lo;
    const __mmask16 ld0 = range_mask(lo, hi, 0), ld1 = range_mask(lo, hi, 16);
    const __mmask16 st0 = range_mask(0, Wo, 0), st1 = range_mask(0, Wo, 16);
    for (int n = 0; n < nb; n++) {
        const float *plane = src + (int64_t)n * H * W;
        for (int oy = 0; oy < Ho; oy++, dst += Wo) {
            int iy = oy - g->PH + ky;
            if (iy < 0 || iy >= H) {
                _mm512_mask_storeu_ps(dst, st0, _mm512_setzero_ps());
                if (st1) _mm512_mask_storeu_ps(dst + 16, st1, _mm512_setzero_ps());
                continue;
            }
            const float *s = plane + (int64_t)iy * W + ix0;
            const __m512 v0 = _mm512_maskz_loadu_ps(ld0, s);
            _mm512_mask_storeu_ps(dst, st0, v0);
            if (cnt) nz += __builtin_popcount((unsigned)_mm512_mask_cmp_ps_mask(ld0, v0, zero, _CMP_NEQ_UQ));
            if (st1) {
                const __m512 v1 = _mm512_maskz_loadu_ps(ld1, s + 16);
                _mm512_mask_storeu_ps(dst + 16, st1, v1);
                if (cnt) nz += __builtin_popcount((unsigned)_mm512_mask_cmp_ps_mask(ld1, v1, zero, _CMP_NEQ_UQ));
            }
        }
    }
    if (cnt) *cnt = nz;
}

void et_im2col_row_i8_avx512(const et_conv_geom *g, int ky, int kx, const int8_t *src, int nb, int8_t *dst) {
    const int H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo;
    const int ix0 = kx - g->PW;
    int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < Wo ? W - ix0 : Wo;
    if (hi < lo) hi = lo;
    const __mmask32 ld = (__mmask32)range_mask(lo, hi, 0) | (__mmask32)range_mask(lo, hi, 16) << 16;
    const __mmask32 st = (__mmask32)range_mask(0, Wo, 0) | (__mmask32)range_mask(0, Wo, 16) << 16;
    for (int n = 0; n < nb; n++) {
        const int8_t *plane = src + (int64_t)n * H * W;
        for (int oy = 0; oy < Ho; oy++, dst += Wo) {
            int iy = oy - g->PH + ky;
            if (iy < 0 || iy >= H) {
                _mm256_mask_storeu_epi8(dst, st, _mm256_setzero_si256());
                continue;
            }
            _mm256_mask_storeu_epi8(dst, st, _mm256_maskz_loadu_epi8(ld, plane + (int64_t)iy * W + ix0));
        }
    }
}

void et_col2im_chan_avx512(const et_conv_geom *g, const float *col, int64_t ld, int nb,
                           float *dx) {
    et_col2im_chan_keep_avx512(g, col, ld, nb, dx, NULL);
}

void et_col2im_chan_keep_avx512(const et_conv_geom *g, const float *col, int64_t ld, int nb,
                                float *dx, const float *keep) {
    const int H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo, KH = g->KH, KW = g->KW;
    const __mmask16 st0 = range_mask(0, W, 0), st1 = range_mask(0, W, 16);
    __mmask16 m0[16], m1[16]; /* per kx: lanes ix with 0 <= ix + PW - kx < Wo, ix < W */
    for (int kx = 0; kx < KW && kx < 16; kx++) {
        int off = g->PW - kx, lo = -off, hi = Wo - off;
        if (lo < 0) lo = 0;
        if (hi > W) hi = W;
        m0[kx] = range_mask(lo, hi, 0);
        m1[kx] = range_mask(lo, hi, 16);
    }
    for (int n = 0; n < nb; n++) {
        float *dplane = dx + (int64_t)n * H * W;
        for (int iy = 0; iy < H; iy++) {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            for (int ky = 0; ky < KH; ky++) {
                int oy = iy + g->PH - ky;
                if (oy < 0 || oy >= Ho) continue;
                const float *rowk = col + (int64_t)ky * KW * ld + (int64_t)n * Ho * Wo +
                                    (int64_t)oy * Wo + g->PW;
                for (int kx = 0; kx < KW; kx++, rowk += ld) {
                    const float *s = rowk - kx;
                    a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m0[kx], s));
                    if (st1) a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(m1[kx], s + 16));
                }
            }
            float *d = dplane + (int64_t)iy * W;
            if (keep) { /* 0 where the kept tensor is 0 (EP's mask after col2im) */
                const float *k = keep + (int64_t)n * H * W + (int64_t)iy * W;
                const __m512 z = _mm512_setzero_ps();
                a0 = _mm512_maskz_mov_ps(_mm512_mask_cmp_ps_mask(st0, _mm512_maskz_loadu_ps(st0, k), z, _CMP_NEQ_UQ), a0);
                if (st1)
                    a1 = _mm512_maskz_mov_ps(_mm512_mask_cmp_ps_mask(st1, _mm512_maskz_loadu_ps(st1, k + 16), z, _CMP_NEQ_UQ),
                                             a1);
            }
            _mm512_mask_storeu_ps(d, st0, a0);
            if (st1) _mm512_mask_storeu_ps(d + 16, st1, a1);
        }
    }
}

/* et_nonzero_bytes (layer.c), 16 floats per step. */
void et_nonzero_bytes_avx512(const float *x, int n, uint8_t *mask) {
    const __m128i one = _mm_set1_epi8(1);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __mmask16 nz = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, x + i), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm_mask_storeu_epi8(mask + i, m, _mm_maskz_mov_epi8(nz, one));
    }
}

/* y[i] += b where m[i] != 0 (conv FF's bias under speculation: predicted
 * zeros stay exactly 0), 16 per step. */
/* Where m: v = y + b (add) or y, then max(v, 0) with relu (v > 0 ? v : 0, as
 * the relu layer); elsewhere 0 (zero) or y unchanged. With chk (the layer's
 * own mask only: zero and the dense values in y) adds, over the n outputs,
 * [0] the true zeros (v <= 0, v before the mask and the relu: the check's
 * rule, NaN not zero), [1] false zeros (m == 0, v not zero), [2] missed zeros
 * (m != 0, v zero), [3] predicted zeros (m == 0). */
void et_bias_masked_avx512(float *y, const uint8_t *m, int64_t n, float b, int add, int zero, int relu,
                           uint64_t chk[4]) {
    const __m512 vb = _mm512_set1_ps(b), z = _mm512_setzero_ps();
    const __m128i z8 = _mm_setzero_si128();
    uint64_t tz = 0, fz = 0, mz = 0, pz = 0;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 lim = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __mmask16 k = _mm_mask_cmpneq_epi8_mask(lim, _mm_maskz_loadu_epi8(lim, m + i), z8);
        __m512 v = _mm512_maskz_loadu_ps(lim, y + i);
        if (add) v = _mm512_add_ps(v, vb);
        if (chk) {
            const __mmask16 t = _mm512_mask_cmp_ps_mask(lim, v, z, _CMP_LE_OQ);
            tz += (uint64_t)__builtin_popcount((unsigned)t);
            fz += (uint64_t)__builtin_popcount((unsigned)(lim & ~k & ~t));
            mz += (uint64_t)__builtin_popcount((unsigned)(k & t));
            pz += (uint64_t)__builtin_popcount((unsigned)(lim & ~k));
        }
        if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, z, _CMP_GT_OQ), v);
        if (zero)
            _mm512_mask_storeu_ps(y + i, lim, _mm512_maskz_mov_ps(k, v));
        else
            _mm512_mask_storeu_ps(y + i, k, v);
    }
    if (chk) chk[0] += tz, chk[1] += fz, chk[2] += mz, chk[3] += pz;
}

void et_im2row_avx512(const et_conv_geom *g, int C, const float *x, int64_t cstride, int nb, float *dst,
                      int64_t ldd) {
    const int H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo, KK = g->KH * g->KW, CK = C * KK;
    const int nseg = (Wo + 15) / 16;
    for (int r0 = 0; r0 < CK; r0 += 16) {
        /* the 16 rows' taps: where they read (relative to the output pixel's
         * (oy, ox0) in the image), their ky offset, and per 16-pixel segment
         * of an output row the lanes inside the input row (rows past CK: none) */
        const int nr = CK - r0 < 16 ? CK - r0 : 16;
        int64_t base[16];
        int ky[16], kymin = 1 << 30, kymax = -(1 << 30);
        __mmask16 seg[2][16];
        for (int q = 0; q < 16; q++) {
            const int r = r0 + q < CK ? r0 + q : CK - 1, t = r % KK, dy = t / g->KW - g->PH, dx = t % g->KW - g->PW;
            base[q] = (int64_t)(r / KK) * cstride + (int64_t)dy * W + dx;
            ky[q] = dy;
            if (q < nr) kymin = dy < kymin ? dy : kymin, kymax = dy > kymax ? dy : kymax;
            for (int sg = 0; sg < 2; sg++) {
                const int ox0 = 16 * sg, np = Wo - ox0 < 16 ? Wo - ox0 : 16, ix0 = ox0 + dx;
                seg[sg][q] = q < nr && np > 0 ? range_mask(-ix0, W - ix0, 0) & range_mask(0, np, 0) : 0;
            }
        }
        const __mmask16 sm = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
        for (int n = 0; n < nb; n++) {
            const float *img = x + (int64_t)n * H * W;
            for (int oy = 0; oy < Ho; oy++) {
                const int inside = oy + kymin >= 0 && oy + kymax < H; /* every tap's row in the image */
                for (int sg = 0; sg < nseg; sg++) {
                    const int ox0 = 16 * sg, np = Wo - ox0 < 16 ? Wo - ox0 : 16;
                    const float *src = img + (int64_t)oy * W + ox0;
                    float *d = dst + ((int64_t)n * Ho * Wo + (int64_t)oy * Wo + ox0) * ldd + r0;
                    __m512 v[16];
#pragma GCC unroll 16
                    for (int q = 0; q < 16; q++) {
                        const __mmask16 m = inside || (unsigned)(oy + ky[q]) < (unsigned)H ? seg[sg][q] : 0;
                        v[q] = _mm512_maskz_loadu_ps(m, src + base[q]);
                    }
                    et_tr16_avx512(v);
#pragma GCC unroll 16
                    for (int q = 0; q < 16; q++)
                        if (q < np) _mm512_mask_storeu_ps(d + (int64_t)q * ldd, sm, v[q]);
                }
            }
        }
    }
}

float et_conv_dyrow_avx512(const float *dy, int64_t n, int32_t *cnt) {
    const __m512 z = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    __m512 acc = z; /* lane k: dy[k] + dy[16 + k] + ... in order, as et_sum_f32's lane[k] */
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(dy + i);
        acc = _mm512_add_ps(acc, v);
        const __mmask16 nz = _mm512_cmp_ps_mask(v, z, _CMP_NEQ_UQ);
        const __m512i c = _mm512_loadu_si512(cnt + i);
        _mm512_storeu_si512(cnt + i, _mm512_mask_add_epi32(c, nz, c, one));
    }
    float lane[16];
    _mm512_storeu_ps(lane, acc);
    double s = 0;
    for (int k = 0; k < 16; k++) s += lane[k];
    for (; i < n; i++) {
        s += dy[i];
        cnt[i] += dy[i] != 0.0f;
    }
    return (float)s;
}
