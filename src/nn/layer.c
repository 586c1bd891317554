/* The layer table and helpers shared by layer implementations. */
#include "nn/layer_impl.h"
#include "sparsity/sparsity.h"
#include "sparsity/speculate_amx.h"

#include <stdio.h>
#include <string.h>

const et_layer_ops *const et_layer_table[ET_L_NTYPES] = {
    [ET_L_CONV] = &et_conv_ops,       [ET_L_LINEAR] = &et_linear_ops,
    [ET_L_RELU] = &et_relu_ops,       [ET_L_MAXPOOL] = &et_maxpool_ops,
    [ET_L_AVGPOOL] = &et_avgpool_ops, [ET_L_BN] = &et_bn_ops,
    [ET_L_FLATTEN] = &et_flatten_ops, [ET_L_DROPOUT] = &et_dropout_ops,
    [ET_L_ADD] = &et_add_ops,
};
_Static_assert(ET_L_NTYPES == 9, "update et_layer_table when adding a layer type");

void et_param_define(et_layer *l, const char *suffix, int trainable, int ndim,
                     const int64_t *shape) {
    et_param *p = &l->params[l->nparams++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s%s%s", l->prefix, l->prefix[0] ? "." : "", suffix);
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i], p->n *= shape[i];
    p->trainable = trainable;
}

/* 16 float lanes (vectorisable), combined in double in a fixed order: the
 * result depends only on the data, never on threads. */
float et_sum_f32(const float *x, int64_t n) {
    float lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lane[k] += x[i + k];
    double s = 0;
    for (int k = 0; k < 16; k++) s += lane[k];
    for (; i < n; i++) s += x[i];
    return (float)s;
}

int et_layer_fuses_relu_ep(et_layer_type t) { return t == ET_L_MAXPOOL; }
int et_layer_fuses_relu_ff(et_layer_type t) { return t == ET_L_CONV; }

void et_layer_ff_dims(const et_layer *l, int batch, int *M, int *N, int *K) {
    *M = *N = *K = 0;
    if (l->type == ET_L_CONV) {
        *M = l->out.c;
        *N = et_conv_chunk(l, batch) * l->out.h * l->out.w;
        *K = l->in.c * l->cfg.conv.kh * l->cfg.conv.kw;
    } else if (l->type == ET_L_LINEAR) {
        *M = batch, *N = l->out.c, *K = l->in.c;
    }
}

/* EP's output: conv dcol (CK x chunk columns) or, direct, dX itself (Cin x
 * N*H*W); linear dX (N x in). */
size_t et_layer_ep_mask_bytes(const et_layer *l, int batch) {
    if (l->type == ET_L_CONV && et_conv_is_direct(l)) return (size_t)et_shape_numel(l->in) * (size_t)batch;
    int M, N, K;
    et_layer_ff_dims(l, batch, &M, &N, &K);
    return l->type == ET_L_CONV ? (size_t)K * (size_t)N : (size_t)M * (size_t)K;
}

size_t et_layer_spec_code_bytes(const et_layer *l, int batch) {
    if (l->type != ET_L_CONV) return 0;
    int M, N, K;
    et_layer_ff_dims(l, batch, &M, &N, &K);
    const size_t x = ((size_t)et_shape_numel(l->in) * (size_t)batch + 63) & ~(size_t)63;
    /* + the weights' packed codes (et_spec_a_vnni_bytes: M rounded to 8, K to 4) */
    const size_t a = (size_t)((M + 7) & ~7) * (size_t)((K + 3) / 4) * 4;
    const size_t vnni = x + 2 * (((size_t)K * (size_t)N + 63) & ~(size_t)63) + ((a + 63) & ~(size_t)63);
    /* or the AMX path's layout (stride 1; speculate_amx.h), or the direct
     * path's for few taps, whichever is largest, so that the plan does not
     * depend on the CPU */
    const et_conv_cfg *c = &l->cfg.conv;
    et_spec_amx_layout L;
    size_t need = vnni;
    if (c->sh == 1 && c->sw == 1) {
        if (et_spec_amx_plan(&L, batch, l->in.c, l->in.h, l->in.w, l->out.c, c->kh, c->kw, c->ph, c->pw) && L.bytes > need)
            need = L.bytes;
        const size_t small = et_spec_small_bytes(batch, l->in.c, l->in.h, l->in.w, l->out.c, c->kh, c->kw, c->ph, c->pw);
        if (small > need) need = small;
    }
    return need;
}

#if defined(__x86_64__) || defined(_M_X64)
void et_nonzero_bytes_avx512(const float *x, int n, uint8_t *mask); /* conv_avx512.c */
#endif

void et_nonzero_bytes(const float *x, int n, uint8_t *mask) {
#if defined(__x86_64__) || defined(_M_X64)
    if (et_cpu_isa() >= ET_ISA_AVX512) {
        et_nonzero_bytes_avx512(x, n, mask);
        return;
    }
#endif
    for (int i = 0; i < n; i++) mask[i] = x[i] != 0.0f;
}
