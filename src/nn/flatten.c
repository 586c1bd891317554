/* flatten: CNHW image tensor -> [N, C*H*W] vector tensor, PyTorch's feature
 * order (c, h, w). A vector or one-channel input is already in that layout:
 * the plan makes the output the input itself (model.c, plan_tensors). */
#include "nn/layer_impl.h"

#include <string.h>

static et_status flatten_setup(et_layer *l) {
    int64_t f = et_shape_numel(l->in);
    if (f > (1 << 30)) return et_set_error(ET_ERR_SHAPE, "flatten: too many features");
    l->out = (et_shape){(int)f, 1, 1, 0};
    return ET_OK;
}

/* to_vec: dst[n][c*HW + i] = src[c][n][i]; otherwise the inverse. */
static void transpose_cn(const et_layer *l, int N, const float *src, float *dst, int to_vec) {
    const int C = l->in.c;
    const int64_t HW = (int64_t)l->in.h * l->in.w;
    if (src == dst) return; /* in place (one channel or a vector): nothing moves */
    if (!l->in.is_image || C == 1) {
        memcpy(dst, src, sizeof(float) * (size_t)(C * HW * N));
        return;
    }
#pragma omp parallel for schedule(static) if ((int64_t)N * C * HW > 65536)
    for (int n = 0; n < N; n++)
        for (int ch = 0; ch < C; ch++) {
            float *v = (to_vec ? dst : (float *)src) + ((int64_t)n * C + ch) * HW;
            float *im = (to_vec ? (float *)src : dst) + ((int64_t)ch * N + n) * HW;
            if (to_vec) memcpy(v, im, sizeof(float) * (size_t)HW);
            else memcpy(im, v, sizeof(float) * (size_t)HW);
        }
}

static et_status flatten_ff(et_layer *l, const et_lctx *c, const float *x, float *y) {
    transpose_cn(l, c->batch, x, y, 1);
    if (c->out_amax) *c->out_amax = c->in_amax; /* the same values */
    return ET_OK;
}

static et_status flatten_ep(et_layer *l, const et_lctx *c, const float *x, const float *y,
                            const float *dy, float *dx) {
    transpose_cn(l, c->batch, dy, dx, 0);
    return ET_OK;
}

const et_layer_ops et_flatten_ops = {"flatten", flatten_setup, NULL, NULL, flatten_ff,
                                     flatten_ep, NULL, NULL};
