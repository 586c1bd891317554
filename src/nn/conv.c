/* conv2d: FF, EP and WG as GEMMs over an im2col buffer, in chunks of images.
 *
 * Activations are CNHW, so for a chunk of nb images
 *   FF: Y[Cout, nb*HoWo]  = W[Cout, CK] · col[CK, nb*HoWo]        (+ bias)
 *   EP: dcol[CK, nb*HoWo] = W^T · dY[Cout, nb*HoWo],  then col2im
 *   WG: dW[Cout, CK]     += dY[Cout, nb*HoWo] · col^T
 * with CK = Cin*KH*KW and the chunk's columns of Y/dY addressed in place
 * (leading dimension N*HoWo). The chunk size depends only on the shapes, so
 * WG's accumulation order never depends on the thread count. A 1x1, stride-1,
 * unpadded convolution uses its input directly as the col matrix. Dense
 * plain FP32 FF and WG of a stride-1 "same" convolution on AVX-512 make no
 * col matrix: the GEMM packs its col panels from x itself (ff_implicit;
 * kernels/gemm_internal.h, et_sgemm_convb / et_sgemm_convA), same bits.
 * Pruned weights (params[0].mask, src/sparsity/prune.c): FF and EP skip zero
 * operands, WG computes only the kept weights' gradients (mask = dW's layout). */
#include "nn/layer_impl.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/tlbuf.h"
#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"
#include "kernels/igemm.h"
#include "kernels/matmul.h"
#include "kernels/spconv.h"
#include "kernels/spgemm.h"
#include "kernels/spwg.h"
#include "sparsity/sparsity.h"
#include "sparsity/speculate_amx.h"
#include "nn/conv_rows.h"

#define COL_BUDGET_FLOATS ((size_t)1 << 18) /* 1 MB of im2col per chunk: stays in L2 for the GEMM that reads it */

static int conv_direct(const et_conv_cfg *c) {
    return c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->ph == 0 && c->pw == 0;
}

static et_status conv_setup(et_layer *l) {
    et_conv_cfg *c = &l->cfg.conv;
    if (!l->in.is_image) return et_set_error(ET_ERR_SHAPE, "conv needs an image input (C H W)");
    if (c->out <= 0 || c->kh <= 0 || c->kw <= 0 || c->sh <= 0 || c->sw <= 0 || c->ph < 0 ||
        c->pw < 0)
        return et_set_error(ET_ERR_INVALID, "conv: sizes must be positive (padding >= 0)");
    int ho = (l->in.h + 2 * c->ph - c->kh) / c->sh + 1;
    int wo = (l->in.w + 2 * c->pw - c->kw) / c->sw + 1;
    if (l->in.h + 2 * c->ph < c->kh || l->in.w + 2 * c->pw < c->kw || ho <= 0 || wo <= 0)
        return et_set_error(ET_ERR_SHAPE, "conv: kernel %dx%d larger than padded input %dx%d",
                            c->kh, c->kw, l->in.h + 2 * c->ph, l->in.w + 2 * c->pw);
    l->out = (et_shape){c->out, ho, wo, 1};
    int64_t ws[4] = {c->out, l->in.c, c->kh, c->kw};
    et_param_define(l, "weight", 1, 4, ws);
    if (c->bias) {
        int64_t bs[1] = {c->out};
        et_param_define(l, "bias", 1, 1, bs);
    }
    return ET_OK;
}

static int64_t conv_ck(const et_layer *l) {
    return (int64_t)l->in.c * l->cfg.conv.kh * l->cfg.conv.kw;
}

int et_conv_is_direct(const et_layer *l) { return conv_direct(&l->cfg.conv); }
int et_conv_chunk(const et_layer *l, int batch);

static int conv_chunk(const et_layer *l, int batch) {
    int64_t per = conv_ck(l) * l->out.h * l->out.w;
    int64_t nb = (int64_t)COL_BUDGET_FLOATS / (per > 0 ? per : 1);
    if (nb < 1) nb = 1;
    if (nb > batch) nb = batch;
    return (int)nb;
}

int et_conv_chunk(const et_layer *l, int batch) { return conv_chunk(l, batch); }

/* one lane's column buffer */
static size_t chunk_floats(const et_layer *l, int batch) {
    if (conv_direct(&l->cfg.conv)) return 0;
    size_t f = (size_t)conv_ck(l) * l->out.h * l->out.w * (size_t)conv_chunk(l, batch);
    return (f + 15) & ~(size_t)15; /* keeps the second lane's buffer 64-byte aligned */
}

/* one lane's non-zero counts of its col matrix (conv_xstats): CK row counts,
 * then the column counts of a chunk (of the whole batch: direct convolution) */
static size_t stat_ints(const et_layer *l, int batch) {
    size_t cols = (size_t)l->out.h * l->out.w * (size_t)(conv_direct(&l->cfg.conv) ? batch : conv_chunk(l, batch));
    return (((size_t)conv_ck(l) + 15) & ~(size_t)15) + ((cols + 15) & ~(size_t)15);
}

/* two lanes' column buffers, then WG's two lane gradients (see "chunks"),
 * then the two lanes' non-zero counts and the weights' column counts (int32,
 * 4 bytes like a float) */
static size_t conv_scratch(const et_layer *l, int batch) {
    return 2 * chunk_floats(l, batch) + 2 * (((size_t)conv_ck(l) * l->out.c + 15) & ~(size_t)15) +
           2 * stat_ints(l, batch) + (((size_t)conv_ck(l) + 15) & ~(size_t)15);
}

static int64_t conv_macs(const et_layer *l) {
    return conv_ck(l) * l->out.c * l->out.h * l->out.w;
}

/* Stride-1 convolutions with rows of at most 32 floats use the AVX-512 row
 * kernels of conv_avx512.c when the CPU has them (same values, same order). */
static int conv_rows_fast(const et_layer *l, et_conv_geom *g) {
#if defined(__x86_64__) || defined(_M_X64)
    const et_conv_cfg *c = &l->cfg.conv;
    if (c->sh != 1 || c->sw != 1 || c->kw > 16 || l->in.w > ET_CONV_ROWS_MAXW ||
        l->out.w > ET_CONV_ROWS_MAXW || et_cpu_isa() < ET_ISA_AVX512)
        return 0;
    *g = (et_conv_geom){l->in.h, l->in.w, l->out.h, l->out.w, c->kh, c->kw, c->ph, c->pw};
    return 1;
#else
    (void)l;
    (void)g;
    return 0;
#endif
}

/* col[(ci*KH+ky)*KW+kx][n*HoWo + oy*Wo + ox] = x[ci][n0+n][oy*sh-ph+ky][ox*sw-pw+kx] */
static void im2col_row(const et_layer *l, const float *x, int N, int n0, int nb, int64_t r, float *dst);

/* rowcnt (NULL: none): rowcnt[r] = the non-zeros of col row r, counted on
 * the way (the exact knnz_b of FF's product) */
static void im2col(const et_layer *l, const float *x, int N, int n0, int nb, float *col, int32_t *rowcnt) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t rows = conv_ck(l), ld = (int64_t)nb * Ho * Wo;
    et_conv_geom g;
    const int fast = conv_rows_fast(l, &g);
#pragma omp parallel for schedule(static) if (rows * ld > 32768)
    for (int64_t r = 0; r < rows; r++) {
        int kx = (int)(r % c->kw), ky = (int)(r / c->kw % c->kh), ci = (int)(r / c->kw / c->kh);
        float *dst = col + r * ld;
#if defined(__x86_64__) || defined(_M_X64)
        if (fast) {
            et_im2col_row_avx512(&g, ky, kx, x + ((int64_t)ci * N + n0) * H * W, nb, dst, rowcnt ? rowcnt + r : NULL);
            continue;
        }
#endif
        if (rowcnt) {
            int32_t nz = 0;
            im2col_row(l, x, N, n0, nb, r, dst);
            for (int64_t t = 0; t < ld; t++) nz += dst[t] != 0.0f;
            rowcnt[r] = nz;
            continue;
        }
        im2col_row(l, x, N, n0, nb, r, dst);
    }
}

/* one col row r = (ci, ky, kx) of images n0..n0+nb-1, portable */
static void im2col_row(const et_layer *l, const float *x, int N, int n0, int nb, int64_t r, float *dst) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    int kx = (int)(r % c->kw), ky = (int)(r / c->kw % c->kh), ci = (int)(r / c->kw / c->kh);
    {
        for (int n = 0; n < nb; n++) {
            const float *src = x + ((int64_t)ci * N + n0 + n) * H * W;
            for (int oy = 0; oy < Ho; oy++, dst += Wo) {
                int iy = oy * c->sh - c->ph + ky;
                if (iy < 0 || iy >= H) {
                    memset(dst, 0, sizeof(float) * (size_t)Wo);
                    continue;
                }
                const float *srow = src + (int64_t)iy * W;
                if (c->sw == 1) {
                    int ix0 = kx - c->pw;
                    int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < Wo ? W - ix0 : Wo;
                    if (hi < lo) hi = lo;
                    for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                    memcpy(dst + lo, srow + ix0 + lo, sizeof(float) * (size_t)(hi - lo));
                    for (int ox = hi; ox < Wo; ox++) dst[ox] = 0.0f;
                } else {
                    for (int ox = 0; ox < Wo; ox++) {
                        int ix = ox * c->sw - c->pw + kx;
                        dst[ox] = (ix >= 0 && ix < W) ? srow[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

/* im2col of the input's speculation codes (int8; padding is code 0, the
 * code of 0.0f): the same layout as im2col, a byte per entry. */
static void im2col_codes(const et_layer *l, const int8_t *x, int N, int n0, int nb, int8_t *col) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t rows = conv_ck(l), ld = (int64_t)nb * Ho * Wo;
    et_conv_geom g;
    const int fast = conv_rows_fast(l, &g);
#pragma omp parallel for schedule(static) if (rows * ld > 131072)
    for (int64_t r = 0; r < rows; r++) {
        int kx = (int)(r % c->kw), ky = (int)(r / c->kw % c->kh), ci = (int)(r / c->kw / c->kh);
        int8_t *dst = col + r * ld;
#if defined(__x86_64__) || defined(_M_X64)
        if (fast) {
            et_im2col_row_i8_avx512(&g, ky, kx, x + ((int64_t)ci * N + n0) * H * W, nb, dst);
            continue;
        }
#endif
        int lo = 0, hi = Wo; /* output columns whose input column is inside the row */
        while (lo < Wo && lo * c->sw - c->pw + kx < 0) lo++;
        while (hi > lo && (hi - 1) * c->sw - c->pw + kx >= W) hi--;
        for (int n = 0; n < nb; n++) {
            const int8_t *src = x + ((int64_t)ci * N + n0 + n) * H * W;
            for (int oy = 0; oy < Ho; oy++, dst += Wo) {
                int iy = oy * c->sh - c->ph + ky;
                if (iy < 0 || iy >= H || hi <= lo) {
                    memset(dst, 0, (size_t)Wo);
                    continue;
                }
                const int8_t *srow = src + (int64_t)iy * W + (lo * c->sw - c->pw + kx);
                memset(dst, 0, (size_t)lo);
                if (c->sw == 1)
                    memcpy(dst + lo, srow, (size_t)(hi - lo));
                else
                    for (int ox = lo; ox < hi; ox++) dst[ox] = srow[(int64_t)(ox - lo) * c->sw];
                memset(dst + hi, 0, (size_t)(Wo - hi));
            }
        }
    }
}

/* dx[ci][n0+n][..] += col entries, parallel over input channels. With the
 * fast row kernels (gather form) the chunk's images of dx are written, not
 * accumulated: each image belongs to one chunk, so no zeroing is needed. */
static void zero_where_zero(const et_layer *l, const float *x, int N, int n0, int nb, float *dx);

/* keep (NULL: none): then dx = 0 where keep == 0 afterwards (EP's mask after
 * col2im; see zero_where_zero) */
static void col2im(const et_layer *l, const float *col, int N, int n0, int nb, float *dx, const float *keep) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w, C = l->in.c;
    const int64_t ld = (int64_t)nb * Ho * Wo;
#if defined(__x86_64__) || defined(_M_X64)
    et_conv_geom g;
    if (conv_rows_fast(l, &g)) {
#pragma omp parallel for schedule(static) if ((int64_t)C * c->kh * c->kw * ld > 32768)
        for (int ci = 0; ci < C; ci++)
            et_col2im_chan_keep_avx512(&g, col + (int64_t)ci * c->kh * c->kw * ld, ld, nb,
                                       dx + ((int64_t)ci * N + n0) * H * W,
                                       keep ? keep + ((int64_t)ci * N + n0) * H * W : NULL);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if ((int64_t)C * c->kh * c->kw * ld > 32768)
    for (int ci = 0; ci < C; ci++) {
        for (int ky = 0; ky < c->kh; ky++)
            for (int kx = 0; kx < c->kw; kx++) {
                const float *src = col + (((int64_t)ci * c->kh + ky) * c->kw + kx) * ld;
                for (int n = 0; n < nb; n++) {
                    float *dplane = dx + ((int64_t)ci * N + n0 + n) * H * W;
                    for (int oy = 0; oy < Ho; oy++, src += Wo) {
                        int iy = oy * c->sh - c->ph + ky;
                        if (iy < 0 || iy >= H) continue;
                        float *drow = dplane + (int64_t)iy * W;
                        if (c->sw == 1) {
                            int ix0 = kx - c->pw;
                            int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < Wo ? W - ix0 : Wo;
                            float *d = drow + ix0;
                            for (int ox = lo; ox < hi; ox++) d[ox] += src[ox];
                        } else {
                            for (int ox = 0; ox < Wo; ox++) {
                                int ix = ox * c->sw - c->pw + kx;
                                if (ix >= 0 && ix < W) drow[ix] += src[ox];
                            }
                        }
                    }
                }
            }
    }
    if (keep) zero_where_zero(l, keep, N, n0, nb, dx);
}

/* EP's output mask for skip: mask[r][n*HoWo + oy*Wo + ox] = 1 where the col
 * entry of the FF (im2col of x) is non-zero, 0 where it is zero or padding.
 * dL/dx is zero wherever the ReLU output x is zero, so those dcol entries
 * need not be computed (col2im drops padding entries anyway). */
static void im2col_mask(const et_layer *l, const float *x, int N, int n0, int nb, uint8_t *mask) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w, Cin = l->in.c;
    const int64_t ld = (int64_t)nb * Ho * Wo, HW = (int64_t)H * W;
    /* per input plane (channel, image): its non-zero map once, then the
     * kh * kw mask rows it feeds are shifted copies of it */
#pragma omp parallel for schedule(static) if (conv_ck(l) * ld > 32768)
    for (int p = 0; p < Cin * nb; p++) {
        const int ci = p / nb, n = p % nb;
        const float *src = x + ((int64_t)ci * N + n0 + n) * HW;
        uint8_t nzbuf[4096];
        uint8_t *nz = HW <= (int64_t)sizeof nzbuf ? nzbuf : NULL;
        if (nz) et_nonzero_bytes(src, (int)HW, nz);
        for (int ky = 0; ky < c->kh; ky++)
            for (int kx = 0; kx < c->kw; kx++) {
                const int64_t r = ((int64_t)ci * c->kh + ky) * c->kw + kx;
                uint8_t *dst = mask + r * ld + (int64_t)n * Ho * Wo;
                /* output columns whose input column is inside the row: [lo, hi) */
                int lo = 0, hi = Wo;
                while (lo < Wo && lo * c->sw - c->pw + kx < 0) lo++;
                while (hi > lo && (hi - 1) * c->sw - c->pw + kx >= W) hi--;
                for (int oy = 0; oy < Ho; oy++, dst += Wo) {
                    int iy = oy * c->sh - c->ph + ky;
                    if (iy < 0 || iy >= H || hi <= lo) {
                        memset(dst, 0, (size_t)Wo);
                        continue;
                    }
                    const int64_t o0 = (int64_t)iy * W + (lo * c->sw - c->pw + kx);
                    memset(dst, 0, (size_t)lo);
                    if (c->sw == 1 && nz)
                        memcpy(dst + lo, nz + o0, (size_t)(hi - lo));
                    else if (c->sw == 1)
                        et_nonzero_bytes(src + o0, hi - lo, dst + lo);
                    else
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = nz ? nz[o0 + (int64_t)(ox - lo) * c->sw] : src[o0 + (int64_t)(ox - lo) * c->sw] != 0.0f;
                    memset(dst + hi, 0, (size_t)(Wo - hi));
                }
            }
    }
}

static void nonzero_mask(const float *x, int64_t n, uint8_t *mask) {
    const int64_t blk = 4096;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i += blk) et_nonzero_bytes(x + i, (int)(n - i < blk ? n - i : blk), mask + i);
}

/* The exact non-zero counts of the col matrix of images n0..n0+nb-1 (the
 * im2col of x, padding counted as zero), read from x itself (1/(KH*KW) of
 * col) and never from col:
 *   rowcnt[(ci*KH+ky)*KW+kx] = nnz(col row) = the non-zeros of plane ci that
 *     tap (ky,kx) reads, summed over the images: with stride 1 the tap reads
 *     a rectangle, counted from the plane's row and column counts (total minus
 *     the rows and columns outside, plus the corners outside both);
 *   colcnt[n*HoWo + oy*Wo + ox] = nnz(col column) = the sum, over the taps
 *     inside the image, of how many channels are non-zero at the pixel read.
 * The matmul path forms the product's exact count from them (et_matmul.knnz_a,
 * knnz_b, post_mask_cols) instead of scanning col. Either may be NULL. */
#define XS_MAXHW 4096
/* Whether box_cols applies: stride 1, the plane and H x Wo within XS_MAXHW. */
static int box_ok(const et_layer *l) {
    const et_conv_cfg *c = &l->cfg.conv;
    return c->sh == 1 && c->sw == 1 && (int64_t)l->in.h * l->in.w <= XS_MAXHW && (int64_t)l->in.h * l->out.w <= XS_MAXHW;
}

/* One image's column counts cj (Ho x Wo: nnz of each output pixel's window)
 * from cc, its pixels' non-zero channels (H x W), for stride 1: a separable
 * box sum, rows of taps first (hs[iy][ox], H x Wo scratch), then columns. */
static void box_cols(const et_layer *l, const int32_t *cc, int32_t *hs, int32_t *cj) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w, KH = c->kh, KW = c->kw;
    memset(hs, 0, sizeof(int32_t) * (size_t)H * Wo);
    for (int iy = 0; iy < H; iy++) {
        const int32_t *cr = cc + (int64_t)iy * W;
        int32_t *hr = hs + (int64_t)iy * Wo;
        for (int kx = 0; kx < KW; kx++) {
            const int ix0 = kx - c->pw;
            const int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < Wo ? W - ix0 : Wo;
            for (int ox = lo; ox < hi; ox++) hr[ox] += cr[ox + ix0];
        }
    }
    memset(cj, 0, sizeof(int32_t) * (size_t)Ho * Wo);
    for (int oy = 0; oy < Ho; oy++) {
        int32_t *o = cj + (int64_t)oy * Wo;
        for (int ky = 0; ky < KH; ky++) {
            const int iy = oy - c->ph + ky;
            if (iy < 0 || iy >= H) continue;
            const int32_t *hr = hs + (int64_t)iy * Wo;
            for (int ox = 0; ox < Wo; ox++) o[ox] += hr[ox];
        }
    }
}

static void conv_xstats(const et_layer *l, const float *x, int N, int n0, int nb, int32_t *rowcnt, int32_t *colcnt) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w, Cin = l->in.c, KH = c->kh, KW = c->kw;
    const int64_t HW = (int64_t)H * W, CK = conv_ck(l);
    const int small = HW <= XS_MAXHW, rect = c->sh == 1 && c->sw == 1;
    if (rowcnt) memset(rowcnt, 0, sizeof(int32_t) * (size_t)CK);
    uint8_t nz[XS_MAXHW];
    int32_t cc[XS_MAXHW], R[XS_MAXHW], Cc[XS_MAXHW];
    if (rowcnt && small && rect) {
        /* the row counts need only the chunk's sum of the planes' non-zero
         * maps per channel (cc): the rectangles' counts are then taken once
         * per channel, not per image */
        for (int ci = 0; ci < Cin; ci++) {
            memset(cc, 0, sizeof(int32_t) * (size_t)HW);
            for (int n = 0; n < nb; n++) et_spgemm_nzcount_add(x + ((int64_t)ci * N + n0 + n) * HW, (int)HW, cc);
            int32_t total = 0;
            for (int ix = 0; ix < W; ix++) Cc[ix] = 0;
            for (int iy = 0; iy < H; iy++) {
                const int32_t *zr = cc + (int64_t)iy * W;
                int32_t r = 0;
                for (int ix = 0; ix < W; ix++) r += zr[ix], Cc[ix] += zr[ix];
                R[iy] = r, total += r;
            }
            for (int ky = 0; ky < KH; ky++)
                for (int kx = 0; kx < KW; kx++) { /* rows [r0, r1), columns [c0, c1) of the plane */
                    int r0 = ky - c->ph, r1 = ky - c->ph + Ho, c0 = kx - c->pw, c1 = kx - c->pw + Wo;
                    r0 = r0 < 0 ? 0 : r0, r1 = r1 > H ? H : r1, c0 = c0 < 0 ? 0 : c0, c1 = c1 > W ? W : c1;
                    int32_t cnt = 0;
                    if (r0 < r1 && c0 < c1) { /* total - rows outside - columns outside + both outside */
                        cnt = total;
                        for (int iy = 0; iy < H; iy++) {
                            if (iy == r0) iy = r1;
                            if (iy >= H) break;
                            const int32_t *zr = cc + (int64_t)iy * W;
                            cnt -= R[iy];
                            for (int ix = 0; ix < c0; ix++) cnt += zr[ix];
                            for (int ix = c1; ix < W; ix++) cnt += zr[ix];
                        }
                        for (int ix = 0; ix < c0; ix++) cnt -= Cc[ix];
                        for (int ix = c1; ix < W; ix++) cnt -= Cc[ix];
                    }
                    rowcnt[((int64_t)ci * KH + ky) * KW + kx] = cnt;
                }
        }
        rowcnt = NULL; /* done; the column counts below, per image */
        if (!colcnt) return;
    }
    for (int n = 0; n < nb; n++) {
        if (colcnt && small) memset(cc, 0, sizeof(int32_t) * (size_t)HW);
        for (int ci = 0; ci < Cin; ci++) {
            const float *plane = x + ((int64_t)ci * N + n0 + n) * HW;
            if (!small) { /* large planes: straight from the floats */
                for (int ky = 0; rowcnt && ky < KH; ky++)
                    for (int kx = 0; kx < KW; kx++) {
                        int32_t cnt = 0;
                        for (int oy = 0; oy < Ho; oy++) {
                            int iy = oy * c->sh - c->ph + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int ox = 0; ox < Wo; ox++) {
                                int ix = ox * c->sw - c->pw + kx;
                                cnt += ix >= 0 && ix < W && plane[(int64_t)iy * W + ix] != 0.0f;
                            }
                        }
                        rowcnt[((int64_t)ci * KH + ky) * KW + kx] += cnt;
                    }
                continue;
            }
            if (colcnt) et_spgemm_nzcount_add(plane, (int)HW, cc);
            if (!rowcnt) continue;
            /* other strides (stride 1 took the channel sums above): by enumeration */
            et_nonzero_bytes(plane, (int)HW, nz);
            for (int ky = 0; ky < KH; ky++)
                for (int kx = 0; kx < KW; kx++) {
                    int32_t cnt = 0;
                    for (int oy = 0; oy < Ho; oy++) {
                        int iy = oy * c->sh - c->ph + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int ox = 0; ox < Wo; ox++) {
                            int ix = ox * c->sw - c->pw + kx;
                            cnt += ix >= 0 && ix < W && nz[(int64_t)iy * W + ix];
                        }
                    }
                    rowcnt[((int64_t)ci * KH + ky) * KW + kx] += cnt;
                }
        }
        if (!colcnt) continue;
        int32_t *cj = colcnt + (int64_t)n * Ho * Wo;
        if (box_ok(l)) {
            box_cols(l, cc, R, cj); /* R is free here */
            continue;
        }
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int32_t sum = 0;
                for (int ky = 0; ky < KH; ky++) {
                    int iy = oy * c->sh - c->ph + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < KW; kx++) {
                        int ix = ox * c->sw - c->pw + kx;
                        if (ix < 0 || ix >= W) continue;
                        if (small) {
                            sum += cc[(int64_t)iy * W + ix];
                        } else {
                            for (int ci = 0; ci < Cin; ci++)
                                sum += x[((int64_t)ci * N + n0 + n) * HW + (int64_t)iy * W + ix] != 0.0f;
                        }
                    }
                }
                cj[oy * Wo + ox] = sum;
            }
    }
}

/* The counts a step's products share, in the node's own room (et_layer_sparsity
 * xcols, dycols), counted once for all images: FF clears the tags, the first
 * stage that needs a count makes it, the others of the same step (same
 * tensor, same engine step) reuse it. NULL where the node has no room.
 *   xcols[n*HoWo + p]  = nnz(col's column) of output pixel p of image n
 *                        (conv_xstats' colcnt): FF's speculation counts, EP's
 *                        kept outputs (post_mask_cols), WG's knnz of col;
 *   dycols[n*HoWo + p] = nnz(dY's column) there: EP's and WG's knnz of dY and
 *                        dY's density (l->dy_density).
 * EP's and WG's executed MACs are then both sum_p xcols[p] * dycols[p], with
 * no read of x or dY in the matmul call. */
/* xnz (or NULL): each input pixel's non-zero channels (N x H x W), counted
 * already (the AMX prediction's coding pass); then only the box sums remain */
static const int32_t *layer_xcols_nz(et_layer *l, const et_lctx *cx, const float *x, const int32_t *xnz) {
    const et_layer_sparsity *sp = cx->sp;
    if (!sp || !sp->xcols) return NULL;
    const int64_t step = cx->eng ? cx->eng->step : -1;
    if (cx->eng && l->xcols_of == x && l->xcols_step == step) return sp->xcols;
    const int N = cx->batch, HWo = l->out.h * l->out.w;
    const int64_t HW = (int64_t)l->in.h * l->in.w;
    int32_t *c = sp->xcols;
    if (xnz && box_ok(l)) {
#pragma omp parallel for schedule(static) if (N > 1 && (int64_t)N * HW > 65536)
        for (int n = 0; n < N; n++) {
            int32_t hs[XS_MAXHW];
            box_cols(l, xnz + (int64_t)n * HW, hs, c + (int64_t)n * HWo);
        }
    } else {
#pragma omp parallel for schedule(static) if (N > 1 && (int64_t)N * et_shape_numel(l->in) > 65536)
        for (int n = 0; n < N; n++) conv_xstats(l, x, N, n, 1, NULL, c + (int64_t)n * HWo);
    }
    if (cx->eng) l->xcols_of = x, l->xcols_step = step;
    return c;
}

static const int32_t *layer_xcols(et_layer *l, const et_lctx *cx, const float *x) {
    return layer_xcols_nz(l, cx, x, NULL);
}

/* Channels [co0, co1) of dY (rows of n pixels): each pixel's non-zeros
 * added to cnt, and with db each row's sum as et_sum_f32 forms it (the bias
 * gradient; the AVX-512 kernel in the same read, else the two functions) */
static void dy_rows(const float *dy, int64_t n, int co0, int co1, int32_t *cnt, float *db) {
    for (int co = co0; co < co1; co++) {
        const float *r = dy + (int64_t)co * n;
#if defined(__x86_64__) || defined(_M_X64)
        if (et_cpu_isa() >= ET_ISA_AVX512) {
            const float s = et_conv_dyrow_avx512(r, n, cnt);
            if (db) db[co] = s;
            continue;
        }
#endif
        et_spgemm_nzcount_add(r, (int)n, cnt);
        if (db) db[co] = et_sum_f32(r, n);
    }
}

static et_tlbuf dycnt_buf; /* layer_dycols: the other threads' pixel counts */

/* nnz of each output pixel's dY over the channels, for the whole batch, once
 * per step and dY (EP and WG share it). With db (the bias gradient), the
 * same read of dY also gives db[co] = et_sum_f32(channel co's row): then
 * *db_done = 1 (only when the counts are made in this call). The threads
 * take the channels, so that each row is summed in order: thread 0 counts
 * into the layer's buffer, the others into their own, added after. */
static const int32_t *layer_dycols_db(et_layer *l, const et_lctx *cx, const float *dy, float *db, int *db_done) {
    const et_layer_sparsity *sp = cx->sp;
    if (db_done) *db_done = 0;
    if (!sp || !sp->dycols) return NULL;
    const int64_t step = cx->eng ? cx->eng->step : -1;
    if (cx->eng && l->dycols_of == dy && l->dycols_step == step) return sp->dycols;
    const int Cout = l->out.c;
    const int64_t P = (int64_t)cx->batch * l->out.h * l->out.w;
    int32_t *c = sp->dycols;
    int T = (int64_t)Cout * P > 65536 ? omp_get_max_threads() : 1;
    T = T > Cout ? Cout : T > 64 ? 64 : T;
    int32_t *part[64];
    int fail = 0;
    uint64_t nz = 0;
#pragma omp parallel num_threads(T) reduction(+ : nz) if (T > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int32_t *mine = t == 0 ? c : et_tlbuf_get(&dycnt_buf, sizeof(int32_t) * (size_t)P);
        part[t] = mine;
        if (!mine) {
            __atomic_store_n(&fail, 1, __ATOMIC_RELAXED);
        } else {
            memset(mine, 0, sizeof(int32_t) * (size_t)P);
            dy_rows(dy, P, Cout * t / nt, Cout * (t + 1) / nt, mine, db);
        }
#pragma omp barrier
        if (!__atomic_load_n(&fail, __ATOMIC_RELAXED)) {
#pragma omp for schedule(static)
            for (int64_t p = 0; p < P; p++) {
                int32_t v = c[p];
                for (int u = 1; u < nt; u++) v += part[u][p];
                c[p] = v, nz += (uint64_t)v;
            }
        }
    }
    if (fail) { /* a thread had no buffer: the calling thread alone */
        nz = 0;
        memset(c, 0, sizeof(int32_t) * (size_t)P);
        dy_rows(dy, P, 0, Cout, c, db);
        for (int64_t p = 0; p < P; p++) nz += (uint64_t)c[p];
    }
    l->dy_density = Cout > 0 && P > 0 ? (double)nz / ((double)Cout * (double)P) : 1.0;
    if (cx->eng) l->dycols_of = dy, l->dycols_step = step;
    if (db_done) *db_done = db != NULL;
    return c;
}

static const int32_t *layer_dycols(et_layer *l, const et_lctx *cx, const float *dy) {
    return layer_dycols_db(l, cx, dy, NULL, NULL);
}

/* dx = 0 where x == 0 for images n0..n0+nb-1: EP's mask applied after col2im
 * (every dcol entry col2im adds into dx[ci][n][iy][ix] has the mask bit of
 * x[ci][n][iy][ix] != 0, so this gives the masked product's values) */
static void zero_where_zero(const et_layer *l, const float *x, int N, int n0, int nb, float *dx) {
    const int64_t HW = (int64_t)l->in.h * l->in.w;
    for (int ci = 0; ci < l->in.c; ci++) {
        const int64_t o = ((int64_t)ci * N + n0) * HW;
        const float *s = x + o;
        float *d = dx + o;
        for (int64_t p = 0; p < (int64_t)nb * HW; p++) d[p] = s[p] != 0.0f ? d[p] : 0.0f;
    }
}

/* ---------------------------------------------------------------- chunks
 *
 * A call's images are cut into chunks of at most conv_chunk() images, and the
 * chunks into two lanes: chunks [0, h) and [h, nch) with h = ceil(nch / 2).
 * Each lane has its own column buffer in the scratch; in WG lane 0 sums its
 * chunks into dW and lane 1 into a partial gradient (the scratch after the
 * two buffers), added to dW at the end. The lanes depend only on shapes, so
 * results are the same whether they run one after the other or side by side:
 * side by side (two threads, one chunk product at a time each) when the
 * layer's products are plain FP32 (conv_two_lanes). With emulated
 * accumulation WG keeps one lane (the partial sums would skip the
 * accumulator's rounding); nothing else (sparsity, a processor-model sink,
 * thread count) changes the lanes, so none of it changes a result. */

typedef struct cjob {
    et_layer *l;
    const et_lctx *cx;
    const float *x, *dy;
    float *y, *dx;
    int nbmax, nch;
    int wg_tr;   /* WG in its transposed form (wg_transposed) */
    int lanes;   /* the stage's products may run side by side (conv_lanes_ok) */
    int ep_post; /* EP applies its mask after col2im (ep_mask_after) */
    int8_t *xcodes; /* FF under speculation: the input's codes (then the lanes' col codes) */
    const int32_t *wcnt; /* FF with skip_zeros: nnz of the weights' columns */
    const uint32_t *a_vnni; /* FF under speculation: the weights' packed codes, NULL: none */
    int epi;     /* FF: the products add the bias and apply relu_out themselves (conv_ff) */
    int cpl;     /* > 0: FF/EP's chunks by lane (balance_lanes), cpl chunks per lane */
    int implicit; /* FF, WG: the products read x itself (ff_implicit), no col matrix */
    const et_conv_implicit *imp; /* EP/WG without the column matrix (conv_implicit), NULL: with */
    const int32_t *xcols, *dycols; /* the whole batch's counts (layer_xcols, layer_dycols), NULL: none */
    int spec_epi; /* FF speculated: the products add the bias, apply relu_out and then the
                     mask themselves */
    int late_check; /* FF speculated, mask predicted for the whole call (et_spec.pre_kept): the
                       products store the dense values on checked calls, and conv_ff's bias
                       pass counts the check from them */
    int dynamic;  /* EP: with two lanes, each takes the next chunk left (any split gives the
                     same bits: each image's dX is its own) instead of a fixed half */
    float *amax;  /* FF: the products' epilogues take the output's absmax (et_lctx.out_amax) */
} cjob;

/* dY's density over images n0..n0+nb-1 from dycols */
static double chunk_density(const cjob *j, int n0, int nb) {
    const int HWo = j->l->out.h * j->l->out.w;
    uint64_t nz = 0;
    for (int64_t p = (int64_t)n0 * HWo; p < (int64_t)(n0 + nb) * HWo; p++) nz += (uint64_t)j->dycols[p];
    return (double)nz / ((double)j->l->out.c * (double)nb * HWo);
}

static float *lane_grad(const et_layer *l, const et_lctx *cx, int lane);

static float *lane_cols(const cjob *j, int lane) {
    return j->cx->scratch + (size_t)lane * chunk_floats(j->l, j->cx->batch);
}

/* a lane's col matrix of speculation codes, after the input's codes */
static int8_t *lane_codes(const cjob *j, int lane) {
    const et_layer *l = j->l;
    const size_t x = ((size_t)et_shape_numel(l->in) * (size_t)j->cx->batch + 63) & ~(size_t)63;
    const size_t per = ((size_t)conv_ck(l) * (size_t)j->nbmax * l->out.h * l->out.w + 63) & ~(size_t)63;
    return j->xcodes + x + (size_t)lane * per;
}

/* a lane's non-zero counts: CK row counts, then the column counts */
static int32_t *lane_rowcnt(const cjob *j, int lane) {
    const et_layer *l = j->l;
    const int b = j->cx->batch;
    float *base = j->cx->scratch + 2 * chunk_floats(l, b) + 2 * (((size_t)conv_ck(l) * l->out.c + 15) & ~(size_t)15);
    return (int32_t *)(void *)(base + (size_t)lane * stat_ints(l, b));
}
/* nnz of the weights' columns (FF's op(A)[:,k]), once per FF call */
static int32_t *weight_colcnt(const cjob *j) { return lane_rowcnt(j, 2); }

static int32_t *lane_colcnt(const cjob *j, int lane) {
    return lane_rowcnt(j, lane) + ((conv_ck(j->l) + 15) & ~(int64_t)15);
}

/* xcols of images n0..n0+nb-1: the batch's (layer_xcols), else counted into the lane's buffer */
static const int32_t *chunk_xcols(const cjob *j, int lane, int n0, int nb) {
    if (j->xcols) return j->xcols + (int64_t)n0 * j->l->out.h * j->l->out.w;
    int32_t *c = lane_colcnt(j, lane);
    conv_xstats(j->l, j->x, j->cx->batch, n0, nb, NULL, c);
    return c;
}

#if defined(__x86_64__) || defined(_M_X64)
void et_bias_masked_avx512(float *y, const uint8_t *m, int64_t n, float b, int add, int zero, int relu,
                           uint64_t chk[4]); /* conv_avx512.c */
#endif

/* A product with no sparsity (no skipping, speculation or mask), no pruning
 * mask and plain arithmetic: the integer path may then take codes alone. */
static int conv_plain(const et_layer *l, const et_lctx *cx) {
    const et_layer_sparsity *sp = cx->sp;
    return !(sp && (sp->ff_skip || sp->bw_skip || sp->spec || sp->ep_mask)) && !l->params[0].mask &&
           et_matmul_plain(cx->eng, l->index);
}

/* The col matrix of images n0..n0+nb-1: the input itself for a direct
 * (1x1, stride 1, unpadded) convolution, else im2col into the lane's buffer,
 * counting each row's non-zeros into rowcnt when it is not NULL.
 * *q gets the int8 codes of the same matrix when the input has codes
 * (et_layer.int_codes, nn/precision.c), else NULL. A plain product (below)
 * that takes the integer path (the input's and the other operand's scales
 * `other` > 0, K <= 131072, as kernels/matmul.c decides) needs only the
 * codes: then im2col runs on the codes into the lane's buffer and the float
 * matrix is not made (returns NULL). */
static const float *chunk_cols(const cjob *j, int lane, int n0, int nb, int *ldb, int32_t *rowcnt, const int8_t **q,
                               float other, int K) {
    const et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w;
    const int8_t *xq = l->int_codes[ET_IS_A];
    *q = NULL;
    if (conv_direct(&l->cfg.conv)) {
        *ldb = N * HWo;
        if (xq) *q = xq + (int64_t)n0 * HWo;
        return j->x + (int64_t)n0 * HWo;
    }
    *ldb = nb * HWo;
    if (xq && other > 0 && l->int_scale[ET_IS_A] > 0 && K <= 131072 && conv_plain(l, j->cx)) {
        const et_conv_cfg *c = &l->cfg.conv;
        const et_igemm_conv g = {l->in.c, N, l->in.h, l->in.w, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw,
                                 l->out.h, l->out.w};
        int8_t *qc = (int8_t *)lane_cols(j, lane);
        et_igemm_im2col(&g, xq, n0, nb, qc);
        *q = qc;
        return NULL;
    }
    float *col = lane_cols(j, lane);
    im2col(l, j->x, N, n0, nb, col, rowcnt);
    return col;
}

/* Whether a stage's products may run from two threads at once: no
 * processor-model sink and no emulated arithmetic (et_matmul_plain; the
 * integer path's buffers are per thread), and nothing shared between the
 * lanes: speculation has a workspace per lane when the engine has two
 * (eng->spec_ws1); EP's mask bytes, the counts from the layer and the code
 * buffers are per lane; the skipping kernels and the counting pass use
 * per-thread buffers. Sparsity itself changes nothing else. */
static int conv_lanes_ok(const et_layer *l, const et_lctx *cx, int spec) {
    if (!et_matmul_plain(cx->eng, l->index)) return 0;
    return !spec || !cx->eng || cx->eng->spec_ws1;
}

static int conv_two_lanes(const cjob *j) {
    if (j->nch < 2 || et_get_threads() < 2 || !j->lanes) return 0;
#ifdef _OPENMP
    if (omp_in_parallel()) return 0;
    return 1;
#else
    return 0;
#endif
}

typedef et_status (*lane_fn)(const cjob *j, int lane, int c0, int c1);

static et_status run_lanes(const cjob *j, int h, lane_fn fn) {
    if (!conv_two_lanes(j) || h >= j->nch) {
        et_status st = fn(j, 0, 0, h);
        return st ? st : fn(j, 1, h, j->nch);
    }
    et_status st[2] = {ET_OK, ET_OK};
#ifdef _OPENMP
    int next = 0;
#pragma omp parallel num_threads(2)
    {
        int t = omp_get_thread_num();
        if (omp_get_num_threads() == 2 && j->dynamic) {
            for (int c; !st[t] && (c = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED)) < j->nch;) st[t] = fn(j, t, c, c + 1);
        } else if (omp_get_num_threads() == 2)
            st[t] = t ? fn(j, 1, h, j->nch) : fn(j, 0, 0, h);
        else if (t == 0 && !(st[0] = fn(j, 0, 0, h)))
            st[1] = fn(j, 1, h, j->nch);
    }
#endif
    return st[0] ? st[0] : st[1];
}

static int chunk_images(const cjob *j, int c, int *n0) {
    if (j->cpl > 0) { /* lane c / cpl's half of the images, in cpl near-equal chunks */
        const int N = j->cx->batch, half = (N + 1) / 2, lane = c / j->cpl, q = c % j->cpl;
        const int b0 = lane ? half : 0, nl = lane ? N - half : half;
        *n0 = b0 + (int)((int64_t)q * nl / j->cpl);
        return b0 + (int)((int64_t)(q + 1) * nl / j->cpl) - *n0;
    }
    *n0 = c * j->nbmax;
    return j->cx->batch - *n0 < j->nbmax ? j->cx->batch - *n0 : j->nbmax;
}

/* FF and EP: each output column (FF) and each image's dX (EP) is computed
 * the same way whatever chunk holds it, so their chunks may be cut anywhere
 * between images. When the lanes run side by side, each lane takes half of
 * the images in equal chunks of at most nbmax (VGG8's first conv: 50 + 50
 * images instead of chunks 0-1 vs 2, 74 vs 26). WG keeps the shape-only
 * chunks: its sums run over them, so they fix its bits. Returns h for
 * run_lanes. */
static int balance_lanes(cjob *j) {
    const int N = j->cx->batch;
    if (!conv_two_lanes(j) || N < 2) return (j->nch + 1) / 2;
    j->cpl = ((N + 1) / 2 + j->nbmax - 1) / j->nbmax;
    j->nch = 2 * j->cpl;
    return j->cpl;
}

static int mm_skip_ff(const cjob *j) {
    return (j->cx->sp && j->cx->sp->ff_skip) || j->l->params[0].mask != NULL;
}

/* FF reads x itself (et_sgemm_convb, implicit im2col) where the product is
 * the plain dense FP32 one (no sparsity, integer operands or observer: the
 * matmul path would run et_sgemm_epi) of a stride-1 convolution whose output
 * plane is its input's, on a CPU that has the kernel, and K is long enough
 * to pay for the per-panel masks (VGG8's first conv, K = 9, is faster with
 * its small col matrix). Same bits either way. */
static int convb_geom(const et_layer *l) {
    const et_conv_cfg *c = &l->cfg.conv;
    const et_gemm_convb cb = {NULL, 0, l->in.h, l->in.w, c->kh, c->kw};
    return conv_ck(l) >= 32 && !conv_direct(c) && c->sh == 1 && c->sw == 1 && 2 * c->ph == c->kh - 1 &&
           2 * c->pw == c->kw - 1 && l->out.h == l->in.h && l->out.w == l->in.w && et_sgemm_convb_ok(&cb) &&
           et_sgemm_convb_fits(l->out.c, (int)conv_ck(l));
}

static int ff_implicit(const et_layer *l, const et_lctx *cx) {
    return convb_geom(l) && conv_plain(l, cx) && !cx->sp && !(l->int_scale[ET_IS_W] > 0 && l->int_scale[ET_IS_A] > 0);
}

/* The implicit operand of a chunk's product (et_matmul.conv): x read in
 * place of col (FF's B, WG's A). */
static et_conv_implicit chunk_implicit(const cjob *j, int n0, int nb) {
    const et_layer *l = j->l;
    const et_conv_cfg *c = &l->cfg.conv;
    return (et_conv_implicit){l->in.c, j->cx->batch, l->in.h, l->in.w, l->out.c, c->kh, c->kw, c->ph, c->pw,
                              l->out.h, l->out.w, n0, nb, j->x, NULL, 0, NULL, NULL, 0};
}

static et_status ff_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const et_layer_sparsity *sp = j->cx->sp;
    const et_spec *spec = sp ? sp->spec : NULL;
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0), ldb;
        if (nb <= 0) continue; /* an empty chunk of a short lane (odd batch) */
        /* FF skipping zeros: nnz of col's rows, counted by im2col (direct: from x) */
        const int cnt = mm_skip_ff(j) && !spec;
        const int8_t *Bq = NULL;
        const float *B = NULL; /* j->implicit: the product packs col's panels from x */
        et_conv_implicit g = chunk_implicit(j, n0, nb);
        ldb = nb * HWo;
        if (!j->implicit)
            B = chunk_cols(j, lane, n0, nb, &ldb, cnt ? lane_rowcnt(j, lane) : NULL, &Bq, l->int_scale[ET_IS_W], CK);
        else if (cnt) /* no im2col to count col's rows on the way: from x */
            conv_xstats(l, j->x, N, n0, nb, lane_rowcnt(j, lane), NULL);
        et_matmul mm = {ET_FF, l->index, 0, 0, Cout, nb * HWo, CK, l->params[0].use, CK,
                        B, ldb, j->y + (int64_t)n0 * HWo, N * HWo, 0.0f,
                        (sp && sp->ff_skip) || l->params[0].mask != NULL, NULL, 0, NULL,
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_A], NULL, NULL, NULL, 0, l->int_codes[ET_IS_W], Bq, NULL, 0, NULL, NULL, NULL};
        if (cnt) {
            int32_t *rc = lane_rowcnt(j, lane);
            if (conv_direct(&l->cfg.conv)) conv_xstats(l, j->x, N, n0, nb, rc, NULL);
            mm.knnz_b = rc, mm.knnz_a = j->wcnt;
        }
        mm.lane = lane;
        if (j->implicit) mm.conv = &g;
        if (j->epi || j->spec_epi) { /* bias (and the relu; the mask) as each tile of the product is stored */
            mm.bias_rows = l->cfg.conv.bias ? l->params[1].data : NULL;
            mm.relu = j->cx->relu_out;
            mm.out_amax = j->amax;
        }
        et_spec chunk;
        if (spec) { /* this chunk's columns of the whole output's mask */
            chunk = *spec;
            chunk.mask = spec->mask + (int64_t)n0 * HWo;
            chunk.ldmask = N * HWo;
            mm.spec = &chunk;
            if (spec->pre_kept) { /* the whole call's mask is predicted (AMX path): counts only */
                if (j->late_check) chunk.check = 0; /* dense values in y: conv_ff checks the whole output */
                chunk.b_colnz = chunk_xcols(j, lane, n0, nb);
                chunk.pre_kept = spec->pre_kept + (int64_t)n0 * HWo;
            } else if (j->xcodes) { /* B's codes: an im2col of the input's codes; nnz of B's columns from x */
                if (conv_direct(&l->cfg.conv)) {
                    chunk.b_codes = j->xcodes + (int64_t)n0 * HWo, chunk.ldb_codes = N * HWo;
                } else {
                    int8_t *cc = lane_codes(j, lane);
                    im2col_codes(l, j->xcodes, N, n0, nb, cc);
                    chunk.b_codes = cc, chunk.ldb_codes = nb * HWo;
                }
                chunk.b_colnz = chunk_xcols(j, lane, n0, nb);
                chunk.a_vnni = j->a_vnni;
            }
        }
        et_status st = et_matmul_run(j->cx->eng, &mm);
        if (st) return st;
    }
    return ET_OK;
}

static et_status conv_ff(et_layer *l, const et_lctx *cx, const float *x, float *y) {
    const int N = cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c;
    const int nbmax = conv_chunk(l, N), nch = (N + nbmax - 1) / nbmax;
    const et_spec *spec = cx->sp ? cx->sp->spec : NULL;
    cjob j = {l, cx, x, NULL, y, NULL, nbmax, nch, 0, conv_lanes_ok(l, cx, spec != NULL), 0, NULL, NULL, NULL, 0, 0, 0, NULL,
              NULL, NULL, 0, 0, 0, NULL};
    l->xcols_of = l->dycols_of = NULL; /* a new x (or the same one refilled) */
    if (!spec && ((cx->sp && cx->sp->ff_skip) || l->params[0].mask)) { /* the same for every chunk */
        int32_t *wc = weight_colcnt(&j);
        et_spgemm_linecount(0, Cout, (int)conv_ck(l), l->params[0].use, (int)conv_ck(l), wc);
        j.wcnt = wc;
    }
    /* the AMX path (or, with few taps, the direct one) predicts the whole
     * call's mask here, without im2col of codes; the chunks' products then
     * get its counts through a copy of the request (et_spec.pre_kept) */
    et_spec_amx_layout al;
    et_spec spx;
    et_layer_sparsity spl;
    et_lctx cxl;
    const et_conv_cfg *cc = &l->cfg.conv;
    const int32_t *kept = NULL;
    /* the input pixels' non-zero channels, counted by the AMX path's coding
     * pass, in the second lane's column buffer (free until the products) */
    int32_t *xnz = NULL;
    if (spec && cx->sp->xcols && box_ok(l) && (size_t)N * l->in.h * l->in.w <= chunk_floats(l, N))
        xnz = (int32_t *)(void *)lane_cols(&j, 1);
    int amx = 0, whole = 0;
    if (spec && spec->bits >= 1 && spec->bits <= 8 && cx->sp->spec_codes && cc->sh == 1 && cc->sw == 1) {
        amx = et_spec_amx_ok() &&
              et_spec_amx_plan(&al, N, l->in.c, l->in.h, l->in.w, Cout, cc->kh, cc->kw, cc->ph, cc->pw) &&
              al.ho == l->out.h && al.wo == l->out.w && al.bytes <= et_layer_spec_code_bytes(l, N) &&
              et_spec_conv_amx(&al, x, l->params[0].use, spec, cx->sp->spec_codes, &kept, xnz);
        /* few products per output (the first layer): the direct path, the same contract */
        whole = amx || (l->out.h == l->in.h + 2 * cc->ph - cc->kh + 1 && l->out.w == l->in.w + 2 * cc->pw - cc->kw + 1 &&
                        et_spec_conv_small(x, N, l->in.c, l->in.h, l->in.w, l->params[0].use, Cout, cc->kh, cc->kw,
                                           cc->ph, cc->pw, spec, cx->sp->spec_codes, et_layer_spec_code_bytes(l, N),
                                           &kept));
    }
    if (whole) {
        spx = *spec, spx.pre_kept = kept;
        spl = *cx->sp, spl.spec = &spx;
        cxl = *cx, cxl.sp = &spl;
        j.cx = &cxl;
        /* speculation's counts: nnz of col's columns, for the whole batch
         * (the AMX path counted x's non-zeros on its way) */
        if (amx) j.xcols = layer_xcols_nz(l, cx, x, xnz);
    } else if (spec && spec->bits >= 1 && spec->bits <= 8 && cx->sp->spec_codes) {
        /* the input coded once (the same codes as each col entry's) */
        j.xcodes = cx->sp->spec_codes;
        et_spec_code_tensor(x, et_shape_numel(l->in) * N, spec->absmax_b, spec->bits, j.xcodes);
        /* the weights' codes packed once for all chunks */
        uint32_t *ap = (uint32_t *)(void *)lane_codes(&j, 2);
        if (et_spec_pack_a(l->params[0].use, Cout, (int)conv_ck(l), (int)conv_ck(l), spec->absmax_a, spec->bits, ap)) j.a_vnni = ap;
    }
    /* speculation's counts: nnz of col's columns, for the whole batch */
    if (!j.xcols && spec && spec->bits >= 1 && spec->bits <= 8 && cx->sp->spec_codes) j.xcols = layer_xcols(l, cx, x);
    /* Without speculation and with nothing watching the products (a sink),
     * the matmul call adds the bias, and applies the ReLU the executor fused
     * here (relu_out), as it stores the output: the same float operations as
     * the passes below (kernels/gemm_internal.h, et_gemm_epi). */
    j.epi = !spec && et_matmul_plain(cx->eng, l->index);
    j.implicit = j.epi && ff_implicit(l, cx);
    /* FF skipping zeros (of x, or of pruned weights: zero in `use`) counts
     * from x and the weights and runs the same dense product from x (adding a
     * product with a zero operand leaves a finite sum as it is) */
    if (!j.implicit && j.epi && mm_skip_ff(&j) && !spec && convb_geom(l) &&
        !(l->int_scale[ET_IS_W] > 0 && l->int_scale[ET_IS_A] > 0))
        j.implicit = 1;
    /* A speculated FF whose mask the AMX path predicted (the layer applies
     * it below, and checks it there on checked calls) runs the same dense
     * product from x. The executed count assumes weights without zero. */
    const et_spec *js = j.cx->sp ? j.cx->sp->spec : NULL;
    if (js && js->pre_kept && convb_geom(l) && et_matmul_plain(cx->eng, l->index) &&
        !l->params[0].mask && !(l->int_scale[ET_IS_W] > 0 && l->int_scale[ET_IS_A] > 0) &&
        !et_spgemm_any_zero(l->params[0].use, Cout, (int)conv_ck(l), (int)conv_ck(l)))
        j.implicit = 1;
    /* no col matrix to bound the chunks: one per lane (any cut gives the same
     * bits and counts; the column counts are the batch's, layer_xcols, or
     * there are none: only CK row counts per chunk) */
    if (j.implicit && N >= 2 && (!js || j.xcols)) j.nbmax = (N + 1) / 2, j.nch = 2;
    /* speculated, plain FP32: the products add the bias and apply the ReLU
     * and the mask as they store C, except the AMX path's checked calls
     * (this layer counts their check from the dense values below) */
    /* A checked call leaves the dense values in y where the product is the
     * plain dense one: packed from x (j.implicit), or et_sgemm on col with
     * the mask left to the layer (matmul.c: a predicted mask with the
     * column counts, weights without zero; zero (pruned) weights take the
     * zero-skipping kernel, which masks as it computes). The check is then
     * counted in the bias pass below, with no dense product of its own in
     * the prediction. */
    j.late_check = js && js->pre_kept &&
                   (j.implicit || (j.xcols && et_matmul_plain(cx->eng, l->index) &&
                                   !(l->int_scale[ET_IS_W] > 0 && l->int_scale[ET_IS_A] > 0) && !l->params[0].mask &&
                                   !et_spgemm_any_zero(l->params[0].use, Cout, (int)conv_ck(l), (int)conv_ck(l))));
    j.spec_epi = js && et_matmul_plain(cx->eng, l->index) && !(js->pre_kept && js->check) &&
                 (l->cfg.conv.bias || cx->relu_out);
    /* the output's absmax, where every stored value passes an epilogue */
    if (cx->out_amax && (j.epi || j.spec_epi) && (l->cfg.conv.bias || cx->relu_out)) j.amax = cx->out_amax, *j.amax = 0.0f;
    et_status st = run_lanes(&j, balance_lanes(&j), ff_lane);
    if (st) return st;
    if (j.epi || j.spec_epi) return ET_OK;
    /* the bias add; under speculation predicted zeros stay exactly 0. The
     * AMX path's products leave the mask to this pass (et_spec.pre_kept):
     * y = mask ? y + b : 0, which is what masking and then adding gives, and
     * the fused relu (relu_out) on the way. Their checked calls count the
     * check here, from the dense values (ff_lane left it out) */
    /* (the products that packed from x stored the dense values; the others'
     * checks ran in the prediction, which formed the dense output itself) */
    const int own = spec && j.cx != cx, check = own && spec->check && spec->stats && j.late_check;
    const int fuse = own && cx->relu_out;
    uint64_t tz = 0, fz = 0, mz = 0, pz = 0;
    if (l->cfg.conv.bias || own) {
        const float *b = l->cfg.conv.bias ? l->params[1].data : NULL;
        const int64_t plane = (int64_t)N * HWo;
        const int avx512 = et_cpu_isa() >= ET_ISA_AVX512;
        (void)avx512;
#pragma omp parallel for schedule(static) reduction(+ : tz, fz, mz, pz) if (Cout * plane > 32768)
        for (int co = 0; co < Cout; co++) {
            float *yc = y + co * plane, bv = b ? b[co] : 0.0f;
            if (spec) {
                const uint8_t *mc = spec->mask + co * plane;
#if defined(__x86_64__) || defined(_M_X64)
                if (avx512) {
                    uint64_t c[4] = {0, 0, 0, 0};
                    et_bias_masked_avx512(yc, mc, plane, bv, b != NULL, own, fuse, check ? c : NULL);
                    tz += c[0], fz += c[1], mz += c[2], pz += c[3];
                    continue;
                }
#endif
                if (own)
                    for (int64_t i = 0; i < plane; i++) {
                        const float v = b ? yc[i] + bv : yc[i];
                        const int t = v <= 0.0f;
                        tz += (uint64_t)t, fz += (uint64_t)(!mc[i] && !t), mz += (uint64_t)(mc[i] && t);
                        pz += (uint64_t)!mc[i];
                        yc[i] = mc[i] && (!fuse || v > 0.0f) ? v : 0.0f;
                    }
                else
                    for (int64_t i = 0; i < plane; i++) {
                        float v = yc[i]; /* loaded unconditionally so the select vectorises */
                        yc[i] = mc[i] ? v + bv : v;
                    }
            } else {
                for (int64_t i = 0; i < plane; i++) yc[i] += bv;
            }
        }
    }
    if (check) { /* as et_spec_predict counts a checked call (atomic: the stats are shared) */
        et_spec_stats *s = spec->stats;
        __atomic_fetch_add(&s->checked, (uint64_t)Cout * N * HWo, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->checked_predicted_zero, pz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->true_zero, tz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->false_zero, fz, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->missed_zero, mz, __ATOMIC_RELAXED);
    }
    if (cx->relu_out && !fuse) { /* the executor fuses where the products can (j.epi) or this pass can; kept correct anyway */
        const int64_t n = (int64_t)Cout * N * HWo;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
    return ET_OK;
}

/* EP and WG without the column matrix (kernels/spconv.h): a stride-1
 * convolution under backward skipping whose products are plain FP32 (no
 * sink: it would want dcol; no emulated arithmetic), on a CPU where the
 * kernels run, with dY sparse enough for them to pay (measured per call,
 * one read of dY). EP also needs its mask applied after col2im (ep_post:
 * the counts come from x and W has no zero). The template g gets the
 * geometry and the largest chunk; each lane's product fills in its chunk
 * and work space (its column buffer, which must hold the kernel's). */
static int conv_implicit(et_layer *l, const et_lctx *cx, et_stage st, const float *x, const float *dy,
                         et_conv_implicit *g) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int N = cx->batch;
    if (!(cx->sp && cx->sp->bw_skip) || c->sh != 1 || c->sw != 1 || conv_direct(c) || l->params[0].mask ||
        !et_matmul_plain(cx->eng, l->index) || et_cpu_isa() < ET_ISA_AVX512)
        return 0;
    *g = (et_conv_implicit){l->in.c, N, l->in.h, l->in.w, l->out.c, c->kh, c->kw, c->ph, c->pw, l->out.h, l->out.w,
                            0, conv_chunk(l, N), x, NULL, 0, NULL, NULL, 0};
    size_t need = 0;
    const int ok = st == ET_EP ? et_spconv_ep_applies(g, &need) : et_spconv_wg_applies(g, &need);
    if (!ok || need > chunk_floats(l, N)) return 0;
    /* measured once per step: EP and WG read the same dY */
    const double d = layer_dycols(l, cx, dy) ? l->dy_density
                                             : et_spwg_density(l->out.c, N * l->out.h * l->out.w, dy, N * l->out.h * l->out.w);
    return st == ET_EP ? et_spconv_ep_pays(g, d) : et_spconv_wg_pays(g, d);
}

static et_status ep_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const et_layer_sparsity *sp = j->cx->sp;
    const int skip = sp && sp->bw_skip, masked = sp && sp->ep_mask && sp->ep_maskbuf;
    float *dcol = lane_cols(j, lane);
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0);
        if (nb <= 0) continue;
        const int8_t *dyq = l->int_codes[ET_IS_E];
        et_matmul mm = {ET_EP, l->index, 1, 0, CK, nb * HWo, Cout, l->params[0].use, CK,
                        j->dy + (int64_t)n0 * HWo, N * HWo, dcol, nb * HWo, 0.0f,
                        skip || l->params[0].mask != NULL, NULL, 0, NULL,
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_E], NULL, NULL, NULL, 0, l->int_codes[ET_IS_W],
                        dyq ? dyq + (int64_t)n0 * HWo : NULL, NULL, 0, NULL, NULL, NULL};
        mm.lane = lane;
        et_conv_implicit g;
        if (j->imp) { /* dx written by the product itself, col2im included */
            g = *j->imp;
            g.n0 = n0, g.nb = nb, g.dx = j->dx;
            g.ws = lane_cols(j, lane), g.ws_floats = chunk_floats(l, N);
            mm.conv = &g, mm.C = NULL;
        }
        if (masked && j->ep_post) { /* the mask after col2im; its counts from x */
            mm.post_mask_cols = chunk_xcols(j, lane, n0, nb);
            if (j->dycols) mm.bnz_cols = j->dycols + (int64_t)n0 * HWo;
        } else if (masked) { /* this lane's mask bytes */
            uint8_t *mb = sp->ep_maskbuf + (size_t)lane * ((et_layer_ep_mask_bytes(l, N) + 63) & ~(size_t)63);
            im2col_mask(l, j->x, N, n0, nb, mb);
            mm.mask = mb, mm.ldmask = nb * HWo;
        }
        et_status st = et_matmul_run(j->cx->eng, &mm);
        if (st) return st;
        if (!j->imp) col2im(l, dcol, N, n0, nb, j->dx, masked && j->ep_post ? j->x : NULL);
    }
    return ET_OK;
}

static et_status conv_ep(et_layer *l, const et_lctx *cx, const float *x, const float *y,
                         const float *dy, float *dx) {
    (void)y;
    const int N = cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c;
    const int nbmax = conv_chunk(l, N), nch = (N + nbmax - 1) / nbmax;
    const int CK = (int)conv_ck(l);
    const et_layer_sparsity *sp = cx->sp;
    const int skip = sp && sp->bw_skip, masked = sp && sp->ep_mask && sp->ep_maskbuf;
    if (conv_direct(&l->cfg.conv)) { /* dX[Cin, N*HW] = W^T dY in one product */
        et_matmul mm = {ET_EP, l->index, 1, 0, CK, N * HWo, Cout, l->params[0].use, CK,
                        dy, N * HWo, dx, N * HWo, 0.0f, skip || l->params[0].mask != NULL, NULL, 0, NULL,
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_E], NULL, NULL, NULL, 0, l->int_codes[ET_IS_W],
                        l->int_codes[ET_IS_E], NULL, 0, NULL, NULL, NULL};
        if (masked) {
            nonzero_mask(x, (int64_t)CK * N * HWo, sp->ep_maskbuf);
            mm.mask = sp->ep_maskbuf, mm.ldmask = N * HWo;
        }
        return et_matmul_run(cx->eng, &mm);
    }
    et_conv_geom g;
    if (!conv_rows_fast(l, &g)) memset(dx, 0, sizeof(float) * (size_t)(et_shape_numel(l->in) * N));
    /* the mask after col2im where nothing looks at the product's own mask (a
     * sink) and the exact count needs no pattern of W (no zero in W) */
    const int post = masked && et_matmul_plain(cx->eng, l->index) && !l->params[0].mask &&
                     !et_spgemm_any_zero(l->params[0].use, Cout, CK, CK);
    cjob j = {l, cx, x, dy, NULL, dx, nbmax, nch, 0, conv_lanes_ok(l, cx, 0), post, NULL, NULL, NULL, 0, 0, 0, NULL,
              NULL, NULL, 0, 0, 0, NULL};
    if (post) j.xcols = layer_xcols(l, cx, x), j.dycols = skip ? layer_dycols(l, cx, dy) : NULL;
    /* without col: the weights by tap go where WG's lane gradients live (free
     * during EP; both together hold them when Cin is a multiple of 8) */
    et_conv_implicit imp;
    const int KK = l->cfg.conv.kh * l->cfg.conv.kw;
    if (post && (size_t)KK * Cout * et_spconv_cp(l->in.c) <= 2 * (((size_t)CK * Cout + 15) & ~(size_t)15) &&
        conv_implicit(l, cx, ET_EP, x, dy, &imp)) {
        float *wt = lane_grad(l, cx, 0);
        et_spconv_ep_weights(l->params[0].use, Cout, l->in.c, l->cfg.conv.kh, l->cfg.conv.kw, wt);
        imp.wt = wt, imp.keep = 1;
        j.imp = &imp;
    }
    j.dynamic = 1;
    return run_lanes(&j, balance_lanes(&j), ep_lane);
}

/* WG's lane gradient buffers in the scratch, after the two column buffers */
static float *lane_grad(const et_layer *l, const et_lctx *cx, int lane) {
    size_t g = ((size_t)conv_ck(l) * l->out.c + 15) & ~(size_t)15;
    return cx->scratch + 2 * chunk_floats(l, cx->batch) + (size_t)lane * g;
}

/* WG. Plain FP32 layers compute the transposed gradient, dWᵀ[CK, Cout] +=
 * col · dYᵀ, each lane into its own buffer: the column matrix is then the
 * GEMM's row-major A instead of a transposed B (measured 1.35x faster on
 * VGG8's 32x288x784 chunk product). Every element has the same products in
 * the same order (same K blocks, commutative FMA), so the bits equal the
 * direct form's dW[Cout, CK] += dY · colᵀ, which the other layers use (the
 * processor-model sink, sparsity masks and emulated rounding are defined on
 * it): lane 0 into dW, lane 1 into a buffer added at the end. */
static int wg_transposed(const et_layer *l, const et_lctx *cx) {
    return et_matmul_plain(cx->eng, l->index) && !l->params[0].mask &&
           !(l->int_scale[ET_IS_E] > 0 && l->int_scale[ET_IS_A] > 0);
}

static et_status wg_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const int tr = j->wg_tr, skip = j->cx->sp && j->cx->sp->bw_skip;
    float *dst = tr || lane ? lane_grad(l, j->cx, lane) : l->params[0].grad;
    /* Under backward skipping the transposed form may get col transposed
     * (colᵀ[P, CK], made from x by et_im2row_avx512, no col matrix) for the
     * matmul path's zero-skipping WG kernel, which then needs no transpose of
     * its own. Only the layout is chosen here, by the kernel's own rule on
     * this chunk's dY (et_spwg_pays); the matmul call measures again and
     * chooses the kernel; every combination gives et_sgemm's bits. */
    et_conv_geom geom;
    const int rows_t = tr && skip && !conv_direct(&l->cfg.conv) && conv_rows_fast(l, &geom) &&
                       et_spwg_applies(0, CK, Cout, j->nbmax * HWo);
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0), ldb;
        const int8_t *colq = NULL, *dyq = l->int_codes[ET_IS_E];
        const float *dyc = j->dy + (int64_t)n0 * HWo, *col = NULL;
        if (j->implicit && !et_gemm_dot_fits(0, 1, CK, Cout, nb * HWo)) { /* et_sgemm on im2col's matrix, without it */
            const et_conv_implicit gi = chunk_implicit(j, n0, nb);
            et_matmul mm = {ET_WG, l->index, 0, 1, CK, Cout, nb * HWo, NULL, CK, dyc, N * HWo, dst, Cout,
                            c == c0 ? 0.0f : 1.0f, 0, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, &gi, NULL, NULL};
            mm.lane = lane;
            et_status st = et_matmul_run(j->cx->eng, &mm);
            if (st) return st;
            continue;
        }
        const int colt = !j->imp && rows_t &&
                         et_spwg_pays(Cout, j->dycols ? chunk_density(j, n0, nb) : et_spwg_density(Cout, nb * HWo, dyc, N * HWo));
        et_conv_implicit g;
        if (j->imp) { /* no col: the product reads x */
            g = *j->imp;
            g.n0 = n0, g.nb = nb;
            g.ws = lane_cols(j, lane), g.ws_floats = chunk_floats(l, N);
            ldb = CK;
        } else if (colt) {
#if defined(__x86_64__) || defined(_M_X64)
            float *ct = lane_cols(j, lane);
            et_im2row_avx512(&geom, l->in.c, j->x + (int64_t)n0 * l->in.h * l->in.w, (int64_t)N * l->in.h * l->in.w, nb,
                             ct, CK);
            col = ct, ldb = CK;
#endif
        } else {
            col = chunk_cols(j, lane, n0, nb, &ldb, NULL, &colq, tr ? 0.0f : l->int_scale[ET_IS_E], nb * HWo);
        }
        const float beta = c == c0 ? 0.0f : 1.0f;
        et_matmul mm = {ET_WG, l->index, 0, 1, Cout, CK, nb * HWo, dyc, N * HWo, col, ldb, dst, CK, beta,
                        j->cx->sp && j->cx->sp->bw_skip, l->params[0].mask, CK, NULL,
                        l->int_scale[ET_IS_E], l->int_scale[ET_IS_A], NULL, NULL, NULL, 0,
                        dyq ? dyq + (int64_t)n0 * HWo : NULL, colq, NULL, 0, NULL, NULL, NULL};
        mm.lane = lane;
        if (tr) { /* fp32 only (wg_transposed) */
            mm.M = CK, mm.N = Cout;
            mm.ta = colt; /* colᵀ stored P x CK */
            mm.A = col, mm.lda = ldb, mm.B = dyc, mm.ldb = N * HWo, mm.ldc = Cout;
            mm.a_scale = l->int_scale[ET_IS_A], mm.b_scale = l->int_scale[ET_IS_E];
            mm.a_codes = mm.b_codes = NULL;
            if (j->imp) mm.A = NULL, mm.conv = &g; /* C: dst in the kernel's layout */
        }
        if (mm.skip_zeros && !mm.mask) { /* nnz of col's and dY's columns (the K of WG) */
            const int32_t *cc = chunk_xcols(j, lane, n0, nb);
            const int32_t *dc = j->dycols ? j->dycols + (int64_t)n0 * HWo : NULL;
            if (tr)
                mm.knnz_a = cc, mm.knnz_b = dc;
            else
                mm.knnz_b = cc, mm.knnz_a = dc;
        }
        et_status st = et_matmul_run(j->cx->eng, &mm);
        if (st) return st;
    }
    return ET_OK;
}

static et_status conv_wg(et_layer *l, const et_lctx *cx, const float *x, const float *dy) {
    const int N = cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const int nbmax = conv_chunk(l, N), nch = (N + nbmax - 1) / nbmax;
    const int h = et_matmul_emulated(cx->eng, l->index) ? nch : (nch + 1) / 2;
    const int tr = wg_transposed(l, cx);
    cjob j = {l, cx, x, dy, NULL, NULL, nbmax, nch, tr, conv_lanes_ok(l, cx, 0), 0, NULL, NULL, NULL, 0, 0, 0, NULL,
              NULL, NULL, 0, 0, 0, NULL};
    /* the bias gradient from the read of dY that counts its pixels, where that is made here */
    float *db = l->cfg.conv.bias ? l->params[1].grad : NULL;
    int db_done = 0;
    if (cx->sp && cx->sp->bw_skip && !l->params[0].mask)
        j.xcols = layer_xcols(l, cx, x), j.dycols = layer_dycols_db(l, cx, dy, db, &db_done);
    /* without col: each lane's gradient in the kernel's layout, which fits the
     * lane's buffer when Cin is a multiple of 16 */
    et_conv_implicit imp;
    if (tr && l->in.c % 16 == 0 && conv_implicit(l, cx, ET_WG, x, dy, &imp)) j.imp = &imp;
    if (!j.imp) j.implicit = tr && ff_implicit(l, cx); /* the column matrix packed from x (et_sgemm_convA) */
    et_status st = run_lanes(&j, h, wg_lane);
    if (st) return st;
    float *dw = l->params[0].grad;
    const float *g0 = lane_grad(l, cx, 0), *g1 = lane_grad(l, cx, 1);
    if (j.imp) { /* dW[o][ci][t] = lane 0's G[o][t][ci] (+ lane 1's) */
        const int KK = l->cfg.conv.kh * l->cfg.conv.kw, C = l->in.c;
#pragma omp parallel for schedule(static) if ((int64_t)Cout * CK > 65536)
        for (int o = 0; o < Cout; o++)
            for (int t = 0; t < KK; t++)
                for (int ci = 0; ci < C; ci++) {
                    const int64_t s = ((int64_t)o * KK + t) * C + ci;
                    dw[((int64_t)o * C + ci) * KK + t] = h < nch ? g0[s] + g1[s] : g0[s];
                }
    } else if (tr) { /* dW = lane 0's dWᵀ (+ lane 1's), transposed back */
#pragma omp parallel for schedule(static) if ((int64_t)Cout * CK > 65536)
        for (int o = 0; o < Cout; o++)
            for (int k = 0; k < CK; k++)
                dw[(int64_t)o * CK + k] = h < nch ? g0[(int64_t)k * Cout + o] + g1[(int64_t)k * Cout + o]
                                                   : g0[(int64_t)k * Cout + o];
    } else if (h < nch) { /* dW += lane 1's partial */
        const int64_t n = l->params[0].n;
        for (int64_t e = 0; e < n; e++) dw[e] += g1[e];
    }
    if (db && !db_done) {
        const int64_t plane = (int64_t)N * HWo;
#pragma omp parallel for schedule(static) if (Cout * plane > 32768)
        for (int co = 0; co < Cout; co++) db[co] = et_sum_f32(dy + co * plane, plane);
    }
    return ET_OK;
}

const et_layer_ops et_conv_ops = {"conv", conv_setup, conv_scratch, NULL, conv_ff,
                                  conv_ep, conv_wg, conv_macs};
