#include "util/layer_harness.h"

#include "core/rng.h"

#include <stdlib.h>
#include <string.h>

static float *alloc_f(int64_t n) {
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, sizeof(float) * (size_t)(n > 0 ? n : 1))) return NULL;
    memset(p, 0, sizeof(float) * (size_t)(n > 0 ? n : 1));
    return p;
}

void lh_fill(float *a, int64_t n, uint64_t stream, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * et_rand_uniform(12345, stream, (uint64_t)i);
}

et_status lh_init(lh *h, et_layer_type t, const void *cfg, size_t cfg_size, et_shape in, int N) {
    memset(h, 0, sizeof *h);
    h->l.type = t;
    h->l.index = 0;
    h->N = N;
    h->train = 1;
    h->seed = 7;
    if (cfg) memcpy(&h->l.cfg, cfg, cfg_size);
    h->l.in = in;
    et_status st = et_layer_table[t]->setup(&h->l);
    if (st) return st;
    h->nx = et_shape_numel(in) * N;
    h->ny = et_shape_numel(h->l.out) * N;
    h->x = alloc_f(h->nx), h->x2 = alloc_f(h->nx), h->dx = alloc_f(h->nx), h->dx2 = alloc_f(h->nx);
    h->y = alloc_f(h->ny), h->dy = alloc_f(h->ny);
    const et_layer_ops *ops = et_layer_table[t];
    size_t sc = ops->scratch_floats ? ops->scratch_floats(&h->l, N) : 0;
    h->scratch = alloc_f((int64_t)sc);
    if (ops->state_floats) h->l.state = alloc_f((int64_t)ops->state_floats(&h->l));
    for (int p = 0; p < h->l.nparams; p++) {
        et_param *pp = &h->l.params[p];
        pp->data = alloc_f(pp->n);
        pp->use = pp->data;
        if (pp->trainable) pp->grad = alloc_f(pp->n);
        lh_fill(pp->data, pp->n, 100 + (uint64_t)p, -0.5f, 0.5f);
    }
    if (t == ET_L_BN) /* positive running variance */
        for (int64_t k = 0; k < h->l.params[3].n; k++) h->l.params[3].data[k] = 0.5f + h->l.params[3].data[k];
    lh_fill(h->x, h->nx, 1, -1.0f, 1.0f);
    lh_fill(h->x2, h->nx, 2, -1.0f, 1.0f);
    lh_fill(h->dy, h->ny, 3, -1.0f, 1.0f);
    return ET_OK;
}

void lh_free(lh *h) {
    free(h->x), free(h->x2), free(h->dx), free(h->dx2), free(h->y), free(h->dy), free(h->scratch);
    free(h->l.state);
    for (int p = 0; p < h->l.nparams; p++) free(h->l.params[p].data), free(h->l.params[p].grad);
    memset(h, 0, sizeof *h);
}

static et_lctx ctx(lh *h) {
    et_lctx c = {.eng = &h->eng, .scratch = h->scratch, .batch = h->N, .train = h->train, .seed = h->seed, .step = 3,
                 .relu_in = h->relu_in, .sp = h->sp};
    return c;
}

et_status lh_ff(lh *h) {
    et_lctx c = ctx(h);
    if (h->l.type == ET_L_ADD) return et_add_ff(&c, h->l.out, h->x, h->x2, h->y);
    return et_layer_table[h->l.type]->ff(&h->l, &c, h->x, h->y);
}

et_status lh_ep(lh *h) {
    et_lctx c = ctx(h);
    et_status st = et_layer_table[h->l.type]->ep(&h->l, &c, h->x, h->y, h->dy, h->dx);
    if (!st && h->l.type == ET_L_ADD) st = et_layer_table[h->l.type]->ep(&h->l, &c, h->x2, h->y, h->dy, h->dx2);
    return st;
}

et_status lh_wg(lh *h) {
    et_lctx c = ctx(h);
    const et_layer_ops *ops = et_layer_table[h->l.type];
    return ops->wg ? ops->wg(&h->l, &c, h->x, h->dy) : ET_OK;
}

void lh_nchw_to_cnhw(const float *src, float *dst, int N, int C, int64_t hw) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            memcpy(dst + ((int64_t)c * N + n) * hw, src + ((int64_t)n * C + c) * hw, sizeof(float) * (size_t)hw);
}

void lh_cnhw_to_nchw(const float *src, float *dst, int N, int C, int64_t hw) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            memcpy(dst + ((int64_t)n * C + c) * hw, src + ((int64_t)c * N + n) * hw, sizeof(float) * (size_t)hw);
}
