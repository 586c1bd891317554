/* maxpool2d and avgpool2d (incl. global) over planes of H x W.
 * In CNHW every (channel, image) pair is one contiguous plane, as in NCHW,
 * so the same code serves both. Padding: -inf for max, zeros (counted in the
 * divisor, PyTorch's count_include_pad=True) for average. */
#include "nn/layer_impl.h"

#include <float.h>
#include <string.h>

#include "nn/pool_rows.h"
#include "numerics/format_internal.h"

static int rows_fast(void) {
#if defined(__x86_64__) || defined(_M_X64)
    return et_cpu_isa() >= ET_ISA_AVX512;
#else
    return 0;
#endif
}

static et_status pool_setup(et_layer *l) {
    et_pool_cfg *p = &l->cfg.pool;
    if (!l->in.is_image) return et_set_error(ET_ERR_SHAPE, "pooling needs an image input");
    if (p->global) {
        p->kh = l->in.h, p->kw = l->in.w, p->sh = p->sw = 1, p->ph = p->pw = 0;
    }
    if (p->kh <= 0 || p->kw <= 0 || p->sh <= 0 || p->sw <= 0 || p->ph < 0 || p->pw < 0)
        return et_set_error(ET_ERR_INVALID, "pool: sizes must be positive (padding >= 0)");
    if (2 * p->ph > p->kh || 2 * p->pw > p->kw)
        return et_set_error(ET_ERR_INVALID, "pool: padding must be at most half the kernel");
    int ho = (l->in.h + 2 * p->ph - p->kh) / p->sh + 1;
    int wo = (l->in.w + 2 * p->pw - p->kw) / p->sw + 1;
    if (l->in.h + 2 * p->ph < p->kh || l->in.w + 2 * p->pw < p->kw || ho <= 0 || wo <= 0)
        return et_set_error(ET_ERR_SHAPE, "pool: window %dx%d larger than input %dx%d", p->kh,
                            p->kw, l->in.h, l->in.w);
    l->out = (et_shape){l->in.c, ho, wo, 1};
    return ET_OK;
}

/* Index of the first maximum of the window (row-major scan), -1 if empty. */
static int64_t window_argmax(const et_pool_cfg *p, const float *plane, int H, int W, int oy,
                             int ox) {
    int64_t best = -1;
    float bv = -FLT_MAX;
    for (int ky = 0; ky < p->kh; ky++) {
        int iy = oy * p->sh - p->ph + ky;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < p->kw; kx++) {
            int ix = ox * p->sw - p->pw + kx;
            if (ix < 0 || ix >= W) continue;
            float v = plane[(int64_t)iy * W + ix];
            if (best < 0 || v > bv || v != v) {
                best = (int64_t)iy * W + ix;
                bv = v;
                if (v != v) return best;
            }
        }
    }
    return best;
}

/* The common 2x2 stride-2 unpadded window: offset (0..3, row-major) of its
 * first maximum, the same choice window_argmax makes. */
static inline int argmax4(const float *r0, const float *r1, int ix) {
    float v[4] = {r0[ix], r0[ix + 1], r1[ix], r1[ix + 1]};
    int b = 0;
    if (v[0] != v[0]) return 0;
    for (int k = 1; k < 4; k++)
        if (v[k] > v[b] || v[k] != v[k]) {
            b = k;
            if (v[k] != v[k]) break;
        }
    return b;
}

static int is_2x2(const et_pool_cfg *p) {
    return p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0;
}

static et_status maxpool_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    const et_pool_cfg *p = &l->cfg.pool;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t planes = (int64_t)l->in.c * c->batch;
    float am = 0.0f; /* the output's absmax, plane by plane while it is in L1 (out_amax) */
    if (is_2x2(p)) {
        const int fast = rows_fast();
#pragma omp parallel for schedule(static) reduction(max : am) if (planes * Ho * Wo > 16384)
        for (int64_t pl = 0; pl < planes; pl++) {
            const float *xp = x + pl * H * W;
            float *yp = y + pl * Ho * Wo;
            int rows = 0; /* rows the vector kernel wrote (their absmax taken on the way) */
            for (int oy = 0; oy < Ho; oy++) {
                const float *r0 = xp + (int64_t)2 * oy * W, *r1 = r0 + W;
#if defined(__x86_64__) || defined(_M_X64)
                if (fast) {
                    am = et_maxpool2_ff_row_avx512(r0, r1, Wo, yp + oy * Wo, am);
                    rows++;
                    continue;
                }
#endif
                for (int ox = 0; ox < Wo; ox++) {
                    /* first strict maximum, as argmax4 (0 before -0 and vice versa) */
                    float a = r0[2 * ox + 1] > r0[2 * ox] ? r0[2 * ox + 1] : r0[2 * ox];
                    float b = r1[2 * ox + 1] > r1[2 * ox] ? r1[2 * ox + 1] : r1[2 * ox];
                    float m = b > a ? b : a;
                    float s = r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1];
                    if (s != s) { /* a NaN (or inf - inf): take PyTorch's pick */
                        int k = argmax4(r0, r1, 2 * ox);
                        m = (k < 2 ? r0 : r1)[2 * ox + (k & 1)];
                    }
                    yp[oy * Wo + ox] = m;
                }
            }
            if (c->out_amax && rows < Ho) { /* the scalar rows: the plane's absmax after them */
                const float a = et_absmax_f32(yp, (size_t)Ho * Wo, 1);
                am = a > am ? a : am;
            }
        }
        if (c->out_amax) *c->out_amax = am;
        return ET_OK;
    }
#pragma omp parallel for schedule(static) reduction(max : am) if (planes * Ho * Wo > 16384)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) yp[oy * Wo + ox] = xp[window_argmax(p, xp, H, W, oy, ox)];
        if (c->out_amax) {
            const float a = et_absmax_f32(yp, (size_t)Ho * Wo, 1);
            am = a > am ? a : am;
        }
    }
    if (c->out_amax) *c->out_amax = am;
    return ET_OK;
}

static et_status maxpool_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                            const float *dy, float *dx) {
    const et_pool_cfg *p = &l->cfg.pool;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t planes = (int64_t)l->in.c * c->batch;
    /* relu_in: x is a ReLU's output and that ReLU's EP is fused here: a
     * gradient reaching an element that is not > 0 is dropped. */
    const int relu = c->relu_in;
    if (is_2x2(p)) {
        const int fast = rows_fast();
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > 16384)
        for (int64_t pl = 0; pl < planes; pl++) {
            const float *xp = x + pl * H * W, *dyp = dy + pl * Ho * Wo;
            float *dxp = dx + pl * H * W;
            /* windows tile rows [0, 2Ho) x cols [0, 2Wo): write each window's
             * four values; only a leftover last row / column needs zeros */
            for (int oy = 0; oy < Ho; oy++) {
                const float *r0 = xp + (int64_t)2 * oy * W, *r1 = r0 + W;
                float *d0 = dxp + (int64_t)2 * oy * W, *d1 = d0 + W;
#if defined(__x86_64__) || defined(_M_X64)
                if (fast) {
                    et_maxpool2_ep_row_avx512(r0, r1, Wo, dyp + oy * Wo, d0, d1, relu);
                    for (int ix = 2 * Wo; ix < W; ix++) d0[ix] = d1[ix] = 0.0f;
                    continue;
                }
#endif
                for (int ox = 0; ox < Wo; ox++) {
                    int k = argmax4(r0, r1, 2 * ox);
                    float g = dyp[oy * Wo + ox];
                    if (relu && !((k < 2 ? r0 : r1)[2 * ox + (k & 1)] > 0.0f)) g = 0.0f;
                    d0[2 * ox] = k == 0 ? g : 0.0f;
                    d0[2 * ox + 1] = k == 1 ? g : 0.0f;
                    d1[2 * ox] = k == 2 ? g : 0.0f;
                    d1[2 * ox + 1] = k == 3 ? g : 0.0f;
                }
                for (int ix = 2 * Wo; ix < W; ix++) d0[ix] = d1[ix] = 0.0f;
            }
            if (2 * Ho < H)
                memset(dxp + (int64_t)2 * Ho * W, 0, sizeof(float) * (size_t)(H - 2 * Ho) * W);
        }
        return ET_OK;
    }
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > 16384)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W, *dyp = dy + pl * Ho * Wo;
        float *dxp = dx + pl * H * W;
        memset(dxp, 0, sizeof(float) * (size_t)H * W);
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int64_t a = window_argmax(p, xp, H, W, oy, ox);
                if (!relu || xp[a] > 0.0f) dxp[a] += dyp[oy * Wo + ox];
            }
    }
    return ET_OK;
}

/* PyTorch's avg_pool2d window: clipped to the input, divisor counts padding. */
typedef struct { int y0, y1, x0, x1; float inv; } avg_win;
static avg_win avg_window(const et_pool_cfg *p, int H, int W, int oy, int ox) {
    int hs = oy * p->sh - p->ph, ws = ox * p->sw - p->pw;
    int he = hs + p->kh < H + p->ph ? hs + p->kh : H + p->ph;
    int we = ws + p->kw < W + p->pw ? ws + p->kw : W + p->pw;
    int size = (he - hs) * (we - ws);
    avg_win w = {hs < 0 ? 0 : hs, he < H ? he : H, ws < 0 ? 0 : ws, we < W ? we : W, 1.0f / (float)size};
    return w;
}

static et_status avgpool_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    const et_pool_cfg *p = &l->cfg.pool;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t planes = (int64_t)l->in.c * c->batch;
#pragma omp parallel for schedule(static) if (planes * H * W > 16384)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                avg_win w = avg_window(p, H, W, oy, ox);
                float s = 0.0f;
                for (int iy = w.y0; iy < w.y1; iy++)
                    for (int ix = w.x0; ix < w.x1; ix++) s += xp[(int64_t)iy * W + ix];
                yp[oy * Wo + ox] = s * w.inv;
            }
    }
    return ET_OK;
}

static et_status avgpool_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                            const float *dy, float *dx) {
    const et_pool_cfg *p = &l->cfg.pool;
    const int H = l->in.h, W = l->in.w, Ho = l->out.h, Wo = l->out.w;
    const int64_t planes = (int64_t)l->in.c * c->batch;
#pragma omp parallel for schedule(static) if (planes * H * W > 16384)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *dyp = dy + pl * Ho * Wo;
        float *dxp = dx + pl * H * W;
        memset(dxp, 0, sizeof(float) * (size_t)H * W);
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                avg_win w = avg_window(p, H, W, oy, ox);
                float g = dyp[oy * Wo + ox] * w.inv;
                for (int iy = w.y0; iy < w.y1; iy++)
                    for (int ix = w.x0; ix < w.x1; ix++) dxp[(int64_t)iy * W + ix] += g;
            }
    }
    return ET_OK;
}

const et_layer_ops et_maxpool_ops = {"maxpool", pool_setup, NULL, NULL, maxpool_ff,
                                     maxpool_ep, NULL, NULL};
const et_layer_ops et_avgpool_ops = {"avgpool", pool_setup, NULL, NULL, avgpool_ff,
                                     avgpool_ep, NULL, NULL};
