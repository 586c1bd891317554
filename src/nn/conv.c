/* conv2d: FF, EP and WG as GEMMs over an im2col buffer, in chunks of images.
 *
 * Activations are CNHW, so for a chunk of nb images
 *   FF: Y[Cout, nb*HoWo]  = W[Cout, CK] · col[CK, nb*HoWo]        (+ bias)
 *   EP: dcol[CK, nb*HoWo] = W^T · dY[Cout, nb*HoWo],  then col2im
 *   WG: dW[Cout, CK]     += dY[Cout, nb*HoWo] · col^T
 * with CK = Cin*KH*KW and the chunk's columns of Y/dY addressed in place
 * (leading dimension N*HoWo). The chunk size depends only on the shapes, so
 * WG's accumulation order never depends on the thread count. A 1x1, stride-1,
 * unpadded convolution uses its input directly as the col matrix.
 * Pruned weights (params[0].mask, src/sparsity/prune.c): FF and EP skip zero
 * operands, WG computes only the kept weights' gradients (mask = dW's layout). */
#include "nn/layer_impl.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/igemm.h"
#include "kernels/matmul.h"
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

/* two lanes' column buffers, then WG's two lane gradients (see "chunks") */
static size_t conv_scratch(const et_layer *l, int batch) {
    return 2 * chunk_floats(l, batch) + 2 * (((size_t)conv_ck(l) * l->out.c + 15) & ~(size_t)15);
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
static void im2col(const et_layer *l, const float *x, int N, int n0, int nb, float *col) {
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
            et_im2col_row_avx512(&g, ky, kx, x + ((int64_t)ci * N + n0) * H * W, nb, dst);
            continue;
        }
#endif
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

/* dx[ci][n0+n][..] += col entries, parallel over input channels. With the
 * fast row kernels (gather form) the chunk's images of dx are written, not
 * accumulated: each image belongs to one chunk, so no zeroing is needed. */
static void col2im(const et_layer *l, const float *col, int N, int n0, int nb, float *dx) {
    const et_conv_cfg *c = &l->cfg.conv;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w, C = l->in.c;
    const int64_t ld = (int64_t)nb * Ho * Wo;
#if defined(__x86_64__) || defined(_M_X64)
    et_conv_geom g;
    if (conv_rows_fast(l, &g)) {
#pragma omp parallel for schedule(static) if ((int64_t)C * c->kh * c->kw * ld > 32768)
        for (int ci = 0; ci < C; ci++)
            et_col2im_chan_avx512(&g, col + (int64_t)ci * c->kh * c->kw * ld, ld, nb,
                                  dx + ((int64_t)ci * N + n0) * H * W);
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
    int wg_tr; /* WG in its transposed form (wg_transposed) */
} cjob;

static float *lane_cols(const cjob *j, int lane) {
    return j->cx->scratch + (size_t)lane * chunk_floats(j->l, j->cx->batch);
}

#if defined(__x86_64__) || defined(_M_X64)
void et_bias_masked_avx512(float *y, const uint8_t *m, int64_t n, float b); /* conv_avx512.c */
#endif

static int conv_plain(const et_layer *l, const et_lctx *cx);

/* The col matrix of images n0..n0+nb-1: the input itself for a direct
 * (1x1, stride 1, unpadded) convolution, else im2col into the lane's buffer.
 * *q gets the int8 codes of the same matrix when the input has codes
 * (et_layer.int_codes, nn/precision.c), else NULL. A plain product (below)
 * that takes the integer path (the input's and the other operand's scales
 * `other` > 0, K <= 131072, as kernels/matmul.c decides) needs only the
 * codes: then im2col runs on the codes into the lane's buffer and the float
 * matrix is not made (returns NULL). */
static const float *chunk_cols(const cjob *j, int lane, int n0, int nb, int *ldb, const int8_t **q, float other,
                               int K) {
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
    im2col(l, j->x, N, n0, nb, col);
    return col;
}

/* Plain products (FP32 or the exact integer path): no sparsity, pruning or
 * emulated arithmetic and no processor-model sink, so et_matmul_run shares
 * nothing between threads but the (atomic) counters. */
static int conv_plain(const et_layer *l, const et_lctx *cx) {
    const et_layer_sparsity *sp = cx->sp;
    return !(sp && (sp->ff_skip || sp->bw_skip || sp->spec || sp->ep_mask)) && !l->params[0].mask &&
           et_matmul_plain(cx->eng, l->index);
}

static int conv_two_lanes(const et_layer *l, const et_lctx *cx, int nch) {
    if (nch < 2 || et_get_threads() < 2) return 0;
#ifdef _OPENMP
    if (omp_in_parallel()) return 0;
#else
    return 0;
#endif
    return conv_plain(l, cx); /* the integer path's buffers are per thread */
}

typedef et_status (*lane_fn)(const cjob *j, int lane, int c0, int c1);

static et_status run_lanes(const cjob *j, int h, lane_fn fn) {
    if (!conv_two_lanes(j->l, j->cx, j->nch) || h >= j->nch) {
        et_status st = fn(j, 0, 0, h);
        return st ? st : fn(j, 1, h, j->nch);
    }
    et_status st[2] = {ET_OK, ET_OK};
#ifdef _OPENMP
#pragma omp parallel num_threads(2)
    {
        int t = omp_get_thread_num();
        if (omp_get_num_threads() == 2)
            st[t] = t ? fn(j, 1, h, j->nch) : fn(j, 0, 0, h);
        else if (t == 0 && !(st[0] = fn(j, 0, 0, h)))
            st[1] = fn(j, 1, h, j->nch);
    }
#endif
    return st[0] ? st[0] : st[1];
}

static int chunk_images(const cjob *j, int c, int *n0) {
    *n0 = c * j->nbmax;
    return j->cx->batch - *n0 < j->nbmax ? j->cx->batch - *n0 : j->nbmax;
}

static et_status ff_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const et_layer_sparsity *sp = j->cx->sp;
    const et_spec *spec = sp ? sp->spec : NULL;
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0), ldb;
        const int8_t *Bq;
        const float *B = chunk_cols(j, lane, n0, nb, &ldb, &Bq, l->int_scale[ET_IS_W], CK);
        et_matmul mm = {ET_FF, l->index, 0, 0, Cout, nb * HWo, CK, l->params[0].use, CK,
                        B, ldb, j->y + (int64_t)n0 * HWo, N * HWo, 0.0f,
                        (sp && sp->ff_skip) || l->params[0].mask != NULL, NULL, 0, NULL,
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_A], l->int_codes[ET_IS_W], Bq};
        et_spec chunk;
        if (spec) { /* this chunk's columns of the whole output's mask */
            chunk = *spec;
            chunk.mask = spec->mask + (int64_t)n0 * HWo;
            chunk.ldmask = N * HWo;
            mm.spec = &chunk;
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
    cjob j = {l, cx, x, NULL, y, NULL, nbmax, nch, 0};
    et_status st = run_lanes(&j, (nch + 1) / 2, ff_lane);
    if (st) return st;
    if (l->cfg.conv.bias) {
        const float *b = l->params[1].data;
        const int64_t plane = (int64_t)N * HWo;
        const int avx512 = et_cpu_isa() >= ET_ISA_AVX512;
        (void)avx512;
#pragma omp parallel for schedule(static) if (Cout * plane > 32768)
        for (int co = 0; co < Cout; co++) {
            float *yc = y + co * plane, bv = b[co];
            if (spec) { /* predicted zeros stay exactly 0 */
                const uint8_t *mc = spec->mask + co * plane;
#if defined(__x86_64__) || defined(_M_X64)
                if (avx512) {
                    et_bias_masked_avx512(yc, mc, plane, bv);
                    continue;
                }
#endif
                for (int64_t i = 0; i < plane; i++) {
                    float v = yc[i]; /* loaded unconditionally so the select vectorises */
                    yc[i] = mc[i] ? v + bv : v;
                }
            } else {
                for (int64_t i = 0; i < plane; i++) yc[i] += bv;
            }
        }
    }
    return ET_OK;
}

static et_status ep_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const et_layer_sparsity *sp = j->cx->sp;
    const int skip = sp && sp->bw_skip, masked = sp && sp->ep_mask && sp->ep_maskbuf;
    float *dcol = lane_cols(j, lane);
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0);
        const int8_t *dyq = l->int_codes[ET_IS_E];
        et_matmul mm = {ET_EP, l->index, 1, 0, CK, nb * HWo, Cout, l->params[0].use, CK,
                        j->dy + (int64_t)n0 * HWo, N * HWo, dcol, nb * HWo, 0.0f,
                        skip || l->params[0].mask != NULL, NULL, 0, NULL,
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_E], l->int_codes[ET_IS_W],
                        dyq ? dyq + (int64_t)n0 * HWo : NULL};
        if (masked) {
            im2col_mask(l, j->x, N, n0, nb, sp->ep_maskbuf);
            mm.mask = sp->ep_maskbuf, mm.ldmask = nb * HWo;
        }
        et_status st = et_matmul_run(j->cx->eng, &mm);
        if (st) return st;
        col2im(l, dcol, N, n0, nb, j->dx);
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
                        l->int_scale[ET_IS_W], l->int_scale[ET_IS_E], l->int_codes[ET_IS_W], l->int_codes[ET_IS_E]};
        if (masked) {
            nonzero_mask(x, (int64_t)CK * N * HWo, sp->ep_maskbuf);
            mm.mask = sp->ep_maskbuf, mm.ldmask = N * HWo;
        }
        return et_matmul_run(cx->eng, &mm);
    }
    et_conv_geom g;
    if (!conv_rows_fast(l, &g)) memset(dx, 0, sizeof(float) * (size_t)(et_shape_numel(l->in) * N));
    cjob j = {l, cx, x, dy, NULL, dx, nbmax, nch, 0};
    return run_lanes(&j, (nch + 1) / 2, ep_lane);
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
    return conv_plain(l, cx) && !(l->int_scale[ET_IS_E] > 0 && l->int_scale[ET_IS_A] > 0);
}

static et_status wg_lane(const cjob *j, int lane, int c0, int c1) {
    et_layer *l = j->l;
    const int N = j->cx->batch, HWo = l->out.h * l->out.w, Cout = l->out.c, CK = (int)conv_ck(l);
    const int tr = j->wg_tr;
    float *dst = tr || lane ? lane_grad(l, j->cx, lane) : l->params[0].grad;
    for (int c = c0; c < c1; c++) {
        int n0, nb = chunk_images(j, c, &n0), ldb;
        const int8_t *colq, *dyq = l->int_codes[ET_IS_E];
        const float *col = chunk_cols(j, lane, n0, nb, &ldb, &colq, tr ? 0.0f : l->int_scale[ET_IS_E], nb * HWo);
        const float *dyc = j->dy + (int64_t)n0 * HWo;
        const float beta = c == c0 ? 0.0f : 1.0f;
        et_matmul mm = {ET_WG, l->index, 0, 1, Cout, CK, nb * HWo, dyc, N * HWo, col, ldb, dst, CK, beta,
                        j->cx->sp && j->cx->sp->bw_skip, l->params[0].mask, CK, NULL,
                        l->int_scale[ET_IS_E], l->int_scale[ET_IS_A], dyq ? dyq + (int64_t)n0 * HWo : NULL, colq};
        if (tr) { /* fp32 only (wg_transposed) */
            mm.M = CK, mm.N = Cout;
            mm.A = col, mm.lda = ldb, mm.B = dyc, mm.ldb = N * HWo, mm.ldc = Cout;
            mm.a_scale = l->int_scale[ET_IS_A], mm.b_scale = l->int_scale[ET_IS_E];
            mm.a_codes = mm.b_codes = NULL;
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
    cjob j = {l, cx, x, dy, NULL, NULL, nbmax, nch, tr};
    et_status st = run_lanes(&j, h, wg_lane);
    if (st) return st;
    float *dw = l->params[0].grad;
    const float *g0 = lane_grad(l, cx, 0), *g1 = lane_grad(l, cx, 1);
    if (tr) { /* dW = lane 0's dWᵀ (+ lane 1's), transposed back */
#pragma omp parallel for schedule(static) if ((int64_t)Cout * CK > 65536)
        for (int o = 0; o < Cout; o++)
            for (int k = 0; k < CK; k++)
                dw[(int64_t)o * CK + k] = h < nch ? g0[(int64_t)k * Cout + o] + g1[(int64_t)k * Cout + o]
                                                   : g0[(int64_t)k * Cout + o];
    } else if (h < nch) { /* dW += lane 1's partial */
        const int64_t n = l->params[0].n;
        for (int64_t e = 0; e < n; e++) dw[e] += g1[e];
    }
    if (l->cfg.conv.bias) {
        float *db = l->params[1].grad;
        const int64_t plane = (int64_t)N * HWo;
#pragma omp parallel for schedule(static) if (Cout * plane > 32768)
        for (int co = 0; co < Cout; co++) db[co] = et_sum_f32(dy + co * plane, plane);
    }
    return ET_OK;
}

const et_layer_ops et_conv_ops = {"conv", conv_setup, conv_scratch, NULL, conv_ff,
                                  conv_ep, conv_wg, conv_macs};
