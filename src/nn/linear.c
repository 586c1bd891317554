/* linear: x [N, in], W [out, in] (PyTorch layout), y [N, out].
 *   FF: Y  = X · W^T   EP: dX = dY · W   WG: dW = dY^T · X,  db = column sums of dY
 * Pruned weights (params[0].mask): FF/EP skip zero operands, WG computes only
 * the kept weights' gradients (mask in dW's [out, in] layout). */
#include "nn/layer_impl.h"

static et_status linear_setup(et_layer *l) {
    if (l->in.is_image) return et_set_error(ET_ERR_SHAPE, "linear needs a vector input: add flatten");
    if (l->cfg.linear.out <= 0) return et_set_error(ET_ERR_INVALID, "linear: size must be positive");
    l->out = (et_shape){l->cfg.linear.out, 1, 1, 0};
    int64_t ws[2] = {l->cfg.linear.out, l->in.c};
    et_param_define(l, "weight", 1, 2, ws);
    if (l->cfg.linear.bias) {
        int64_t bs[1] = {l->cfg.linear.out};
        et_param_define(l, "bias", 1, 1, bs);
    }
    return ET_OK;
}

static int64_t linear_macs(const et_layer *l) { return (int64_t)l->in.c * l->out.c; }

static et_status linear_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    const int in = l->in.c, out = l->out.c, N = c->batch;
    const et_layer_sparsity *sp = c->sp;
    const et_spec *spec = sp ? sp->spec : NULL;
    et_matmul mm = {ET_FF, l->index, 0, 1, N, out, in, x, in, l->params[0].use, in, y, out, 0.0f,
                    (sp && sp->ff_skip) || l->params[0].mask != NULL, NULL, 0, spec, l->int_scale[ET_IS_A], l->int_scale[ET_IS_W],
                    NULL, NULL, NULL, 0, l->int_codes[ET_IS_A], l->int_codes[ET_IS_W], NULL, 0, NULL, NULL, NULL};
    et_status st = et_matmul_run(c->eng, &mm);
    if (st || !l->cfg.linear.bias) return st;
    const float *b = l->params[1].data;
    for (int n = 0; n < N; n++) {
        float *yn = y + (int64_t)n * out;
        if (spec) { /* predicted zeros stay 0 (a select, so that it vectorises) */
            const uint8_t *mn = spec->mask + (int64_t)n * spec->ldmask;
            for (int o = 0; o < out; o++) yn[o] = mn[o] ? yn[o] + b[o] : yn[o];
        } else {
            for (int o = 0; o < out; o++) yn[o] += b[o];
        }
    }
    return ET_OK;
}

static et_status linear_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                           const float *dy, float *dx) {
    const int in = l->in.c, out = l->out.c, N = c->batch;
    const et_layer_sparsity *sp = c->sp;
    et_matmul mm = {ET_EP, l->index, 0, 0, N, in, out, dy, out, l->params[0].use, in, dx, in, 0.0f,
                    (sp && sp->bw_skip) || l->params[0].mask != NULL, NULL, 0, NULL,
                    l->int_scale[ET_IS_E], l->int_scale[ET_IS_W], NULL, NULL, NULL, 0, l->int_codes[ET_IS_E], l->int_codes[ET_IS_W], NULL, 0, NULL, NULL, NULL};
    if (sp && sp->ep_mask && sp->ep_maskbuf) { /* dL/dx is zero where the ReLU output x is */
        for (int n = 0; n < N; n++) et_nonzero_bytes(x + (int64_t)n * in, in, sp->ep_maskbuf + (int64_t)n * in);
        mm.mask = sp->ep_maskbuf, mm.ldmask = in;
    }
    return et_matmul_run(c->eng, &mm);
}

static et_status linear_wg(et_layer *l, const et_lctx *c, const float *x, const float *dy) {
    const int in = l->in.c, out = l->out.c, N = c->batch;
    et_matmul mm = {ET_WG, l->index, 1, 0, out, in, N, dy, out, x, in, l->params[0].grad, in, 0.0f,
                    c->sp && c->sp->bw_skip, l->params[0].mask, in, NULL,
                    l->int_scale[ET_IS_E], l->int_scale[ET_IS_A], NULL, NULL, NULL, 0, l->int_codes[ET_IS_E], l->int_codes[ET_IS_A], NULL, 0, NULL, NULL, NULL};
    et_status st = et_matmul_run(c->eng, &mm);
    if (st || !l->cfg.linear.bias) return st;
    /* db[o] = sum over n of dy[n][o], in n order in double; rows are walked
     * contiguously, a block of outputs at a time, so the sums vectorise */
    float *db = l->params[1].grad;
    enum { OB = 256 };
    for (int o0 = 0; o0 < out; o0 += OB) {
        const int ob = out - o0 < OB ? out - o0 : OB;
        double acc[OB];
        for (int o = 0; o < ob; o++) acc[o] = 0;
        for (int n = 0; n < N; n++) {
            const float *r = dy + (int64_t)n * out + o0;
            for (int o = 0; o < ob; o++) acc[o] += r[o];
        }
        for (int o = 0; o < ob; o++) db[o0 + o] = (float)acc[o];
    }
    return ET_OK;
}

const et_layer_ops et_linear_ops = {"linear", linear_setup, NULL, NULL, linear_ff,
                                    linear_ep, linear_wg, linear_macs};
