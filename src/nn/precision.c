/* Applying a precision policy (docs/precision.md) to a model. The executor,
 * not the layers, rounds whole tensors at the points where a processor would
 * store them in the policy's format:
 *   w  : each step, the master weights are rounded into the copy FF/EP use
 *        (param.use); per output channel for :perchannel formats;
 *   a  : the input tensor of every conv/linear, in place, before its FF (so
 *        WG later sees the same stored activations);
 *   e  : the error tensor entering a conv/linear's EP/WG, in place;
 *   g  : weight gradients, before the optimizer;
 *   m  : master weights and optimizer state, after the optimizer;
 *   acc, mul : handed to the matmul call (emulated accumulation).
 * Biases, batchnorm parameters and everything outside conv/linear stay fp32.
 * Stochastic rounding keys: (seed, tensor = node * 8 + role, element, step). */
#include "nn/precision.h"
#include "kernels/igemm.h"
#include "kernels/qgemm.h"
#include "nn/layer_impl.h"
#include "numerics/format_internal.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_matmul_layer(const et_layer *l) { return l->type == ET_L_CONV || l->type == ET_L_LINEAR; }
static int int_acc(const et_model *m, int node);
static int8_t *codes_buf(const et_model *m, int node, int role);

/* LAPS state: the weight format each layer uses now, and when it changed. */
#define LAPS_HIST 32
typedef struct laps_node {
    int active; /* an intN/dfxpN weight format to adapt */
    et_format fmt;
    int n;
    int64_t step[LAPS_HIST];
    int bits[LAPS_HIST];
} laps_node;
typedef struct laps_state {
    laps_node *node;
    float *hi; /* weights rounded at the wider width */
} laps_state;

static void laps_free(et_model *m) {
    laps_state *ls = m->laps;
    if (!ls) return;
    free(ls->node);
    free(ls->hi);
    free(ls);
    m->laps = NULL;
}

static et_status laps_init(et_model *m) {
    laps_free(m);
    if (!m->policy->laps.on) return ET_OK;
    laps_state *ls = calloc(1, sizeof *ls);
    int64_t maxw = 1;
    for (int i = 0; i < m->nnodes; i++)
        if (is_matmul_layer(&m->nodes[i].layer) && m->nodes[i].layer.params[0].n > maxw) maxw = m->nodes[i].layer.params[0].n;
    if (ls) ls->node = calloc((size_t)m->nnodes, sizeof *ls->node), ls->hi = malloc(sizeof(float) * (size_t)maxw);
    if (!ls || !ls->node || !ls->hi) {
        if (ls) free(ls->node), free(ls->hi);
        free(ls);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    m->laps = ls;
    for (int i = 0; i < m->nnodes; i++) {
        if (!is_matmul_layer(&m->nodes[i].layer)) continue;
        const et_format *f = et_policy_format(m->policy, m->nodes[i].layer.prefix, ET_ROLE_W);
        if (!f || f->kind == ET_FMT_FLOAT) continue;
        laps_node *ln = &ls->node[i];
        ln->active = 1, ln->fmt = *f, ln->n = 1, ln->step[0] = 0, ln->bits[0] = f->bits;
    }
    return ET_OK;
}

et_status et_model_set_precision(et_model *m, const char *spec) {
    if (m->planned) return et_set_error(ET_ERR_INVALID, "set the precision policy before planning the model");
    et_policy *p = malloc(sizeof *p);
    if (!p) return et_set_error(ET_ERR_NOMEM, "out of memory");
    et_status st = et_policy_load(spec, p);
    for (int i = 1; !st && i < p->n; i++) { /* overrides must name weight layers of this model */
        int found = 0;
        for (int k = 0; k < m->nnodes && !found; k++)
            found = is_matmul_layer(&m->nodes[k].layer) && !strcmp(m->nodes[k].layer.prefix, p->entries[i].layer);
        if (!found)
            st = et_set_error(ET_ERR_INVALID, "policy %s: model %s has no conv/linear layer named '%s'", p->name,
                              m->name, p->entries[i].layer);
    }
    for (int i = 0; !st && i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (!is_matmul_layer(l)) continue;
        const et_role roles[2] = {ET_ROLE_ACC, ET_ROLE_MUL};
        for (int k = 0; k < 2 && !st; k++) {
            et_role r = roles[k];
            const et_format *f = et_policy_format(p, l->prefix, r);
            if (f && f->kind != ET_FMT_FLOAT && !(r == ET_ROLE_ACC && et_policy_acc_int32(f)))
                st = et_set_error(ET_ERR_INVALID,
                                  "policy %s: %s of layer %s must be a floating-point format%s", p->name,
                                  et_role_name(r), l->prefix, r == ET_ROLE_ACC ? " or int32" : "");
            else if (f && f->scaled)
                st = et_set_error(ET_ERR_INVALID, "policy %s: %s of layer %s: :scaled applies to stored tensors "
                                  "(w, a, e, g, m), not to single sums or products", p->name, et_role_name(r), l->prefix);

        }
    }
    for (int i = 0; !st && i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (is_matmul_layer(l) && et_policy_acc_int32(et_policy_format(p, l->prefix, ET_ROLE_ACC)) &&
            et_policy_format(p, l->prefix, ET_ROLE_MUL))
            st = et_set_error(ET_ERR_INVALID,
                              "policy %s: layer %s has acc=int32 (exact integer sums) and a mul format; "
                              "integer products are exact, drop mul", p->name, l->prefix);
    }
    if (st) {
        free(p);
        return st;
    }
    for (int i = 0; i < m->nnodes; i++)
        for (int k = 0; k < 3; k++) m->nodes[i].layer.int_scale[k] = 0;
    free(m->policy);
    m->policy = p;
    return laps_init(m);
}

const et_format *et_model_format(const et_model *m, int node, et_role role) {
    if (!m->policy || node < 0 || node >= m->nnodes || !is_matmul_layer(&m->nodes[node].layer)) return NULL;
    const laps_state *ls = m->laps;
    if (role == ET_ROLE_W && ls && ls->node[node].active) return &ls->node[node].fmt;
    return et_policy_format(m->policy, m->nodes[node].layer.prefix, role);
}

static et_qkey key_of(const et_model *m, int node, et_role role) {
    et_qkey k = {m->seed, (uint64_t)node * 8 + (uint64_t)role, (uint64_t)m->step};
    return k;
}

/* Rounds x into y; *scale (if not NULL) gets the per-tensor scale (0 for
 * per-channel formats). */
static et_status round_tensor_c(const et_model *m, int node, et_role role, const et_format *f, const float *x,
                                float *y, int64_t rows, int64_t cols, float *scale, int8_t *codes) {
    et_qkey k = key_of(m, node, role);
    if (scale) *scale = 0;
    if (codes) return et_quantize_codes(f, x, y, codes, (size_t)(rows * cols), &k, scale);
    if (f->perchannel) return et_quantize_rows(f, x, y, (size_t)rows, (size_t)cols, &k);
    return et_quantize_scaled(f, x, y, (size_t)(rows * cols), &k, scale);
}

static et_status round_tensor_s(const et_model *m, int node, et_role role, const et_format *f, const float *x,
                                float *y, int64_t rows, int64_t cols, float *scale) {
    return round_tensor_c(m, node, role, f, x, y, rows, cols, scale, NULL);
}

static et_status round_tensor(const et_model *m, int node, et_role role, const et_format *f, const float *x,
                              float *y, int64_t rows, int64_t cols) {
    return round_tensor_s(m, node, role, f, x, y, rows, cols, NULL);
}

/* The code buffer for a rounding of `role` of node `node` to f, or NULL when
 * the integer path will not use codes (not an int8-sized grid, no buffer). */
static int8_t *codes_for(const et_model *m, int node, int role, const et_format *f) {
    return int_acc(m, node) && f->kind != ET_FMT_FLOAT && !f->perchannel && f->bits <= 8 ? codes_buf(m, node, role)
                                                                                           : NULL;
}

/* The exact integer matmul path (docs/architecture.md): a layer whose acc is
 * int32 hands the matmul call the per-tensor scale of every operand stored
 * in intN/dfxpN with N <= 8 (codes |q| <= 127); anything else gets 0 (fp32
 * path). An all-zero tensor (scale 0) is all codes 0 on any grid: 1. */
static int int_acc(const et_model *m, int node) {
    return et_policy_acc_int32(et_model_format(m, node, ET_ROLE_ACC));
}
static float grid_scale(const et_format *f, float scale) {
    if (!f || f->kind == ET_FMT_FLOAT || f->bits > 8 || f->perchannel) return 0.0f;
    return scale > 0 ? scale : 1.0f;
}
static float int_scale_of(const et_model *m, int node, const et_format *f, float scale) {
    return int_acc(m, node) ? grid_scale(f, scale) : 0.0f;
}

/* LAPS: widen the weight format of layers whose rounding error against a
 * wider format exceeds the threshold (see et_laps in numerics/policy.h). */
static et_status laps_step(et_model *m) {
    laps_state *ls = m->laps;
    const et_laps *cfg = &m->policy->laps;
    if (!ls || m->step == 0 || m->step % cfg->every) return ET_OK;
    for (int i = 0; i < m->nnodes; i++) {
        laps_node *ln = &ls->node[i];
        if (!ln->active || ln->fmt.bits >= cfg->max) continue;
        et_param *w = &m->nodes[i].layer.params[0];
        int64_t rows = w->shape[0], cols = w->n / w->shape[0];
        et_format hi = ln->fmt;
        hi.bits = ln->fmt.bits + cfg->inc < cfg->max ? ln->fmt.bits + cfg->inc : cfg->max;
        et_status st = round_tensor(m, i, ET_ROLE_W, &ln->fmt, w->data, w->use, rows, cols);
        if (!st) st = round_tensor(m, i, ET_ROLE_W, &hi, w->data, ls->hi, rows, cols);
        if (st) return st;
        double d = 0, h = 0;
        for (int64_t k = 0; k < w->n; k++) {
            double e = (double)w->use[k] - ls->hi[k];
            d += e * e, h += (double)ls->hi[k] * ls->hi[k];
        }
        if (h > 0 && sqrt(d / h) > cfg->threshold) {
            ln->fmt = hi;
            if (ln->n < LAPS_HIST) ln->step[ln->n] = m->step, ln->bits[ln->n++] = hi.bits;
        }
    }
    return ET_OK;
}

int et_model_laps_history(const et_model *m, int node, int64_t *steps, int *bits, int cap) {
    const laps_state *ls = m->laps;
    if (!ls || node < 0 || node >= m->nnodes || !ls->node[node].active) return 0;
    int n = ls->node[node].n < cap ? ls->node[node].n : cap;
    for (int k = 0; k < n; k++) steps[k] = ls->node[node].step[k], bits[k] = ls->node[node].bits[k];
    return n;
}

/* Int8 codes of the tensors the integer path multiplies (docs/precision.md,
 * "Exact integer accumulation"): per conv/linear node with acc=int32, room
 * for the codes of its weights, its input and its error, written by the
 * rounding that puts them on their grids and handed to the matmul records
 * (et_layer.int_codes), so the integer GEMM packs codes instead of taking
 * them back from the floats. Sized at planning, one allocation. */
typedef struct codes_state {
    int8_t *buf;
    size_t bytes;
    int8_t **at; /* [node * 3 + ET_IS_*]: the node's buffer for that role, NULL: none */
} codes_state;

static void codes_free(et_model *m) {
    codes_state *cs = m->int_codes;
    if (!cs) return;
    free(cs->buf);
    free(cs->at);
    free(cs);
    m->int_codes = NULL;
}

/* A format whose tensors get codes: per-tensor intN/dfxpN with N <= 8. LAPS
 * may widen a weight format past 8 bits later; grid_scale() then says 0 and
 * no codes are written or used. */
static int codes_format(const et_format *f, int is_w) {
    return f && f->kind != ET_FMT_FLOAT && !f->perchannel && (is_w || f->bits <= 8);
}

static et_status codes_plan(et_model *m, int batch, size_t *bytes) {
    codes_free(m);
    for (int i = 0; i < m->nnodes; i++)
        for (int k = 0; k < 3; k++) m->nodes[i].layer.int_codes[k] = NULL;
    *bytes = 0;
    int64_t size[3], total = 0;
    codes_state *cs = calloc(1, sizeof *cs);
    if (cs) cs->at = calloc((size_t)m->nnodes * 3, sizeof *cs->at);
    if (!cs || !cs->at) {
        free(cs);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    m->int_codes = cs;
    for (int pass = 0; pass < 2; pass++) {
        total = 0;
        for (int i = 0; i < m->nnodes; i++) {
            const et_layer *l = &m->nodes[i].layer;
            if (!is_matmul_layer(l) || !int_acc(m, i)) continue;
            size[ET_IS_W] = codes_format(et_model_format(m, i, ET_ROLE_W), 1) ? l->params[0].n : 0;
            size[ET_IS_A] = codes_format(et_model_format(m, i, ET_ROLE_A), 0) ? et_shape_numel(l->in) * batch : 0;
            size[ET_IS_E] = codes_format(et_model_format(m, i, ET_ROLE_E), 0) ? et_shape_numel(l->out) * batch : 0;
            for (int k = 0; k < 3; k++) {
                if (pass && size[k]) cs->at[i * 3 + k] = cs->buf + total;
                total += (size[k] + 63) & ~(int64_t)63;
            }
        }
        if (!pass) {
            if (!total) return ET_OK;
            cs->buf = aligned_alloc(64, (size_t)total);
            if (!cs->buf) return et_set_error(ET_ERR_NOMEM, "out of memory (%lld bytes of int8 codes)", (long long)total);
            cs->bytes = (size_t)total;
        }
    }
    *bytes = cs->bytes;
    return ET_OK;
}

static int8_t *codes_buf(const et_model *m, int node, int role) {
    const codes_state *cs = m->int_codes;
    return cs ? cs->at[node * 3 + role] : NULL;
}

void et_precision_free(et_model *m) {
    laps_free(m);
    codes_free(m);
}

/* The (M, N, K) of a layer's FF, EP and WG products, as conv.c and linear.c
 * issue them (conv: chunks of et_conv_chunk images over the im2col buffer;
 * a direct EP runs on the whole batch). Returns 0 for other layers. */
static int matmul_shapes(const et_layer *l, int batch, int mnk[3][3]) {
    if (l->type == ET_L_LINEAR) {
        const int in = l->in.c, out = l->out.c;
        const int s[3][3] = {{batch, out, in}, {batch, in, out}, {out, in, batch}};
        memcpy(mnk, s, sizeof s);
        return 1;
    }
    if (l->type != ET_L_CONV) return 0;
    const int ck = l->in.c * l->cfg.conv.kh * l->cfg.conv.kw, hw = l->out.h * l->out.w, cout = l->out.c;
    const int nb = et_conv_chunk(l, batch), nep = et_conv_is_direct(l) ? batch : nb;
    const int s[3][3] = {{cout, nb * hw, ck}, {ck, nep * hw, cout}, {cout, ck, nb * hw}};
    memcpy(mnk, s, sizeof s);
    return 1;
}

et_status et_precision_reserve(et_model *m, int batch, size_t *bytes) {
    *bytes = 0;
    if (!m->policy) return ET_OK;
    size_t code_bytes = 0;
#ifdef _OPENMP
    if (!omp_in_parallel()) /* the call on a team's second thread reserves only its packing buffers */
#endif
    {
        et_status st = codes_plan(m, batch, &code_bytes);
        if (st) return st;
    }
    const int T = et_get_threads();
    int used_i = 0, used_q = 0;
    for (int i = 0; i < m->nnodes; i++) {
        int mnk[3][3];
        if (!matmul_shapes(&m->nodes[i].layer, batch, mnk)) continue;
        const et_format *acc = et_model_format(m, i, ET_ROLE_ACC), *mul = et_model_format(m, i, ET_ROLE_MUL);
        const int q = mul || (acc && acc->kind == ET_FMT_FLOAT), in = int_acc(m, i);
        for (int s = 0; s < 3; s++) {
            et_status st = ET_OK;
            if (in && mnk[s][2] <= 131072) st = et_igemm_reserve(mnk[s][0], mnk[s][1], mnk[s][2], T), used_i = 1;
            if (!st && q) st = et_qgemm_reserve(mnk[s][2], T), used_q = 1;
            if (st) return st;
        }
    }
    *bytes = (used_i ? et_igemm_workspace_bytes() : 0) + (used_q ? et_qgemm_workspace_bytes() : 0) + code_bytes;
    return ET_OK;
}

/* w: refresh each weight layer's rounded copy (once per step). */
et_status et_precision_weights(et_model *m) {
    if (!m->policy || m->wq_step == m->step) return ET_OK;
    et_status lst = laps_step(m);
    if (lst) return lst;
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        const et_format *f = et_model_format(m, i, ET_ROLE_W);
        if (!f) continue;
        et_param *w = &l->params[0];
        float s;
        /* pruning zeroes the rounded copy after this (et_prune_apply_use): no codes then */
        int8_t *q = w->mask ? NULL : codes_for(m, i, ET_IS_W, f);
        et_status st = round_tensor_c(m, i, ET_ROLE_W, f, w->data, w->use, w->shape[0], w->n / w->shape[0], &s, q);
        if (st) return st;
        l->int_scale[ET_IS_W] = int_scale_of(m, i, f, s);
        l->int_codes[ET_IS_W] = l->int_scale[ET_IS_W] > 0 ? q : NULL;
    }
    m->wq_step = m->step;
    return ET_OK;
}

et_status et_precision_input(et_model *m, int node, float *x, int64_t n) {
    const et_format *f = et_model_format(m, node, ET_ROLE_A);
    if (!f) return ET_OK;
    float s;
    int8_t *q = codes_for(m, node, ET_IS_A, f);
    et_status st = round_tensor_c(m, node, ET_ROLE_A, f, x, x, 1, n, &s, q);
    if (st) return st;
    /* The tensor is now on this grid for every layer that reads it (a later
     * reader's WG must not assume the grid its own FF left), and these are
     * its codes (the grid's scale is the same for every reader that uses it). */
    const int t = m->nodes[node].in;
    for (int k = 0; k < m->nnodes; k++)
        if (is_matmul_layer(&m->nodes[k].layer) && m->nodes[k].in == t) {
            et_layer *lk = &m->nodes[k].layer;
            lk->int_scale[ET_IS_A] = int_scale_of(m, k, f, s);
            lk->int_codes[ET_IS_A] = lk->int_scale[ET_IS_A] > 0 ? q : NULL;
        }
    return ET_OK;
}

et_status et_precision_error(et_model *m, int node, float *dy, int64_t n) {
    const et_format *f = et_model_format(m, node, ET_ROLE_E);
    if (!f) return ET_OK;
    float s;
    int8_t *q = codes_for(m, node, ET_IS_E, f);
    et_status st = round_tensor_c(m, node, ET_ROLE_E, f, dy, dy, 1, n, &s, q);
    et_layer *l = &m->nodes[node].layer;
    l->int_scale[ET_IS_E] = st ? 0.0f : int_scale_of(m, node, f, s);
    l->int_codes[ET_IS_E] = l->int_scale[ET_IS_E] > 0 ? q : NULL;
    return st;
}

/* g before the update; m (master weights + optimizer state) after it. */
et_status et_precision_grads(et_model *m) {
    for (int i = 0; m->policy && i < m->nnodes; i++) {
        const et_format *f = et_model_format(m, i, ET_ROLE_G);
        et_param *w = &m->nodes[i].layer.params[0];
        if (f && w->grad) {
            et_status st = round_tensor(m, i, ET_ROLE_G, f, w->grad, w->grad, w->shape[0], w->n / w->shape[0]);
            if (st) return st;
        }
    }
    return ET_OK;
}

et_status et_precision_master(et_model *m) {
    for (int i = 0; m->policy && i < m->nnodes; i++) {
        const et_format *f = et_model_format(m, i, ET_ROLE_M);
        et_param *w = &m->nodes[i].layer.params[0];
        if (!f) continue;
        int64_t rows = w->shape[0], cols = w->n / w->shape[0];
        et_status st = round_tensor(m, i, ET_ROLE_M, f, w->data, w->data, rows, cols);
        for (int k = 0; k < 2 && !st; k++)
            if (w->opt[k]) st = round_tensor(m, i, ET_ROLE_M, f, w->opt[k], w->opt[k], rows, cols);
        if (st) return st;
    }
    return ET_OK;
}

const char *et_model_format_name(const et_model *m, int node, const char *role, char *buf, size_t cap) {
    for (int r = 0; r < ET_NROLES; r++)
        if (!strcmp(role, et_role_name((et_role)r))) {
            const et_format *f = et_model_format(m, node, (et_role)r);
            if (!f) {
                snprintf(buf, cap, "fp32");
                return buf;
            }
            return et_format_name(f, buf, cap);
        }
    if (cap) buf[0] = 0;
    return buf;
}

const char *et_model_precision(const et_model *m) { return m->policy ? m->policy->name : NULL; }
