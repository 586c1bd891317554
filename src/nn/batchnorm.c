/* batchnorm2d over CNHW tensors: each channel's N*H*W values are contiguous.
 * Training uses batch statistics (biased variance to normalise, unbiased for
 * the running variance, as PyTorch) and updates the running statistics;
 * evaluation uses the running statistics. The state keeps the mean and
 * 1/sqrt(var+eps) used by the last FF, which EP and WG need. */
#include "nn/layer_impl.h"

#include <math.h>

static et_status bn_setup(et_layer *l) {
    if (!l->in.is_image) return et_set_error(ET_ERR_SHAPE, "bn needs an image input");
    if (!(l->cfg.bn.eps > 0.0f) || !(l->cfg.bn.momentum >= 0.0f && l->cfg.bn.momentum <= 1.0f))
        return et_set_error(ET_ERR_INVALID, "bn: eps must be > 0 and momentum in [0, 1]");
    l->out = l->in;
    int64_t cs[1] = {l->in.c};
    et_param_define(l, "weight", 1, 1, cs);
    et_param_define(l, "bias", 1, 1, cs);
    et_param_define(l, "running_mean", 0, 1, cs);
    et_param_define(l, "running_var", 0, 1, cs);
    return ET_OK;
}

static size_t bn_state(const et_layer *l) { return 2 * (size_t)l->in.c; }

static et_status bn_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    const int C = l->in.c;
    const int64_t M = (int64_t)c->batch * l->in.h * l->in.w;
    const float *gamma = l->params[0].data, *beta = l->params[1].data;
    float *rm = l->params[2].data, *rv = l->params[3].data;
    float *mean = l->state, *invstd = l->state + C;
    const float mom = l->cfg.bn.momentum, eps = l->cfg.bn.eps;
    const int train = c->train;
#pragma omp parallel for schedule(static) if ((int64_t)C * M > 32768)
    for (int ch = 0; ch < C; ch++) {
        const float *xc = x + ch * M;
        float *yc = y + ch * M;
        if (train) {
            double s = 0, s2 = 0;
            for (int64_t i = 0; i < M; i++) s += xc[i];
            double mu = s / (double)M;
            for (int64_t i = 0; i < M; i++) s2 += ((double)xc[i] - mu) * ((double)xc[i] - mu);
            double var = s2 / (double)M;
            mean[ch] = (float)mu;
            invstd[ch] = (float)(1.0 / sqrt(var + eps));
            double unbiased = M > 1 ? s2 / (double)(M - 1) : var;
            rm[ch] = (1.0f - mom) * rm[ch] + mom * (float)mu;
            rv[ch] = (1.0f - mom) * rv[ch] + mom * (float)unbiased;
        } else {
            mean[ch] = rm[ch];
            invstd[ch] = 1.0f / sqrtf(rv[ch] + eps);
        }
        const float a = gamma[ch] * invstd[ch], b = beta[ch] - mean[ch] * a;
        for (int64_t i = 0; i < M; i++) yc[i] = xc[i] * a + b;
    }
    if (train) l->num_batches_tracked++;
    return ET_OK;
}

/* Per channel: sum(dy) and sum(dy * xhat). */
static void bn_sums(const et_layer *l, int ch, int64_t M, const float *xc, const float *dyc,
                    double *sdy, double *sdyx) {
    const float mu = l->state[ch], is = l->state[l->in.c + ch];
    double a = 0, b = 0;
    for (int64_t i = 0; i < M; i++) {
        a += dyc[i];
        b += (double)dyc[i] * (double)((xc[i] - mu) * is);
    }
    *sdy = a, *sdyx = b;
}

static et_status bn_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                       const float *dy, float *dx) {
    const int C = l->in.c;
    const int64_t M = (int64_t)c->batch * l->in.h * l->in.w;
    const float *gamma = l->params[0].data;
    const int train = c->train;
#pragma omp parallel for schedule(static) if ((int64_t)C * M > 32768)
    for (int ch = 0; ch < C; ch++) {
        const float *xc = x + ch * M, *dyc = dy + ch * M;
        float *dxc = dx + ch * M;
        const float mu = l->state[ch], is = l->state[C + ch], g = gamma[ch] * is;
        if (!train) {
            for (int64_t i = 0; i < M; i++) dxc[i] = dyc[i] * g;
            continue;
        }
        double sdy, sdyx;
        bn_sums(l, ch, M, xc, dyc, &sdy, &sdyx);
        const float mdy = (float)(sdy / (double)M), mdyx = (float)(sdyx / (double)M);
        for (int64_t i = 0; i < M; i++) dxc[i] = g * (dyc[i] - mdy - (xc[i] - mu) * is * mdyx);
    }
    return ET_OK;
}

static et_status bn_wg(et_layer *l, const et_lctx *c, const float *x, const float *dy) {
    const int C = l->in.c;
    const int64_t M = (int64_t)c->batch * l->in.h * l->in.w;
#pragma omp parallel for schedule(static) if ((int64_t)C * M > 32768)
    for (int ch = 0; ch < C; ch++) {
        double sdy, sdyx;
        bn_sums(l, ch, M, x + ch * M, dy + ch * M, &sdy, &sdyx);
        l->params[0].grad[ch] = (float)sdyx;
        l->params[1].grad[ch] = (float)sdy;
    }
    return ET_OK;
}

const et_layer_ops et_bn_ops = {"bn", bn_setup, NULL, bn_state, bn_ff, bn_ep, bn_wg, NULL};
