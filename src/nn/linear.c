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
                    (sp && sp->ff_skip) || l->params[0].mask != NULL, NULL, 0, spec};
    et_status st = et_matmul_run(c->eng, &mm);
    if (st || !l->cfg.linear.bias) return st;
    const float *b = l->params[1].data;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++)
            if (!spec || spec->mask[(int64_t)n * spec->ldmask + o]) y[(int64_t)n * out + o] += b[o]; /* predicted zeros stay 0 */
    return ET_OK;
}

static et_status linear_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                           const float *dy, float *dx) {
    const int in = l->in.c, out = l->out.c, N = c->batch;
    const et_layer_sparsity *sp = c->sp;
    et_matmul mm = {ET_EP, l->index, 0, 0, N, in, out, dy, out, l->params[0].use, in, dx, in, 0.0f,
                    (sp && sp->bw_skip) || l->params[0].mask != NULL, NULL, 0, NULL};
    if (sp && sp->ep_mask && sp->ep_maskbuf) { /* dL/dx is zero where the ReLU output x is */
        for (int64_t e = 0; e < (int64_t)N * in; e++) sp->ep_maskbuf[e] = x[e] != 0.0f;
        mm.mask = sp->ep_maskbuf, mm.ldmask = in;
    }
    return et_matmul_run(c->eng, &mm);
}

static et_status linear_wg(et_layer *l, const et_lctx *c, const float *x, const float *dy) {
    const int in = l->in.c, out = l->out.c, N = c->batch;
    et_matmul mm = {ET_WG, l->index, 1, 0, out, in, N, dy, out, x, in, l->params[0].grad, in, 0.0f,
                    c->sp && c->sp->bw_skip, l->params[0].mask, in, NULL};
    et_status st = et_matmul_run(c->eng, &mm);
    if (st || !l->cfg.linear.bias) return st;
    float *db = l->params[1].grad;
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += dy[(int64_t)n * out + o];
        db[o] = (float)s;
    }
    return ET_OK;
}

const et_layer_ops et_linear_ops = {"linear", linear_setup, NULL, NULL, linear_ff,
                                    linear_ep, linear_wg, linear_macs};
