/* Layers that act element by element: relu, dropout, and the residual add.
 * Layout-agnostic (the same code serves CNHW and [N, F] tensors). */
#include "core/rng.h"
#include "nn/layer_impl.h"

#include <string.h>

#define PAR_MIN 65536

static et_status same_shape(et_layer *l) {
    l->out = l->in;
    return ET_OK;
}

static et_status relu_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    const int64_t n = et_shape_numel(l->in) * c->batch;
    if (c->out_amax) { /* the output's absmax on the way (>= 0, never NaN) */
        float a = 0.0f;
#pragma omp parallel for schedule(static) reduction(max : a) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i] > 0.0f ? x[i] : 0.0f;
            y[i] = v;
            a = v > a ? v : a;
        }
        *c->out_amax = a;
        return ET_OK;
    }
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return ET_OK;
}

/* dReLU(x) = 1 for x > 0, else 0 (PyTorch's choice at 0). */
static et_status relu_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                         const float *dy, float *dx) {
    const int64_t n = et_shape_numel(l->in) * c->batch;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = dy[i]; /* loaded unconditionally so the select vectorises */
        dx[i] = x[i] > 0.0f ? d : 0.0f;
    }
    return ET_OK;
}

const et_layer_ops et_relu_ops = {"relu", same_shape, NULL, NULL, relu_ff, relu_ep, NULL, NULL};

/* Inverted dropout. The keep decision for element i is a pure function of
 * (seed, layer, step, i), so EP regenerates FF's mask instead of storing it. */
static int dropout_keep(const et_layer *l, const et_lctx *c, int64_t i) {
    uint64_t stream = ((uint64_t)ET_STREAM_DROPOUT << 56) ^ ((uint64_t)l->index << 40) ^ c->step;
    return et_rand_uniform(c->seed, stream, (uint64_t)i) >= l->cfg.dropout.p;
}

static et_status dropout_setup(et_layer *l) {
    if (!(l->cfg.dropout.p >= 0.0f && l->cfg.dropout.p < 1.0f))
        return et_set_error(ET_ERR_INVALID, "dropout: p must be in [0, 1)");
    l->out = l->in;
    return ET_OK;
}

static et_status dropout_apply(const et_layer *l, const et_lctx *c, const float *x, float *y) {
    const int64_t n = et_shape_numel(l->in) * c->batch;
    if (!c->train || l->cfg.dropout.p == 0.0f) {
        if (y != x) memcpy(y, x, sizeof(float) * (size_t)n);
        return ET_OK;
    }
    const float scale = 1.0f / (1.0f - l->cfg.dropout.p);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = dropout_keep(l, c, i) ? x[i] * scale : 0.0f;
    return ET_OK;
}

static et_status dropout_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    return dropout_apply(l, c, x, y);
}

static et_status dropout_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                            const float *dy, float *dx) {
    return dropout_apply(l, c, dy, dx);
}

const et_layer_ops et_dropout_ops = {"dropout", dropout_setup, NULL, NULL, dropout_ff,
                                     dropout_ep, NULL, NULL};

/* Residual add: FF y = a + b; its EP is handled by the model (dy goes to both). */
et_status et_add_ff(const et_lctx *c, et_shape s, const float *a, const float *b, float *y) {
    const int64_t n = et_shape_numel(s) * c->batch;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return ET_OK;
}

static et_status add_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                        const float *dy, float *dx) {
    memcpy(dx, dy, sizeof(float) * (size_t)(et_shape_numel(l->in) * c->batch));
    return ET_OK;
}

const et_layer_ops et_add_ops = {"add", same_shape, NULL, NULL, NULL, add_ep, NULL, NULL};
