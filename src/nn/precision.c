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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_matmul_layer(const et_layer *l) { return l->type == ET_L_CONV || l->type == ET_L_LINEAR; }

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
            if (f && f->kind != ET_FMT_FLOAT)
                st = et_set_error(ET_ERR_INVALID, "policy %s: %s of layer %s must be a floating-point format", p->name,
                                  et_role_name(r), l->prefix);

        }
    }
    if (st) {
        free(p);
        return st;
    }
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

static et_status round_tensor(const et_model *m, int node, et_role role, const et_format *f, const float *x,
                              float *y, int64_t rows, int64_t cols) {
    et_qkey k = key_of(m, node, role);
    if (f->perchannel) return et_quantize_rows(f, x, y, (size_t)rows, (size_t)cols, &k);
    return et_quantize(f, x, y, (size_t)(rows * cols), &k);
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

void et_precision_free(et_model *m) { laps_free(m); }

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
        et_status st = round_tensor(m, i, ET_ROLE_W, f, w->data, w->use, w->shape[0], w->n / w->shape[0]);
        if (st) return st;
    }
    m->wq_step = m->step;
    return ET_OK;
}

et_status et_precision_input(et_model *m, int node, float *x, int64_t n) {
    const et_format *f = et_model_format(m, node, ET_ROLE_A);
    return f ? round_tensor(m, node, ET_ROLE_A, f, x, x, 1, n) : ET_OK;
}

et_status et_precision_error(et_model *m, int node, float *dy, int64_t n) {
    const et_format *f = et_model_format(m, node, ET_ROLE_E);
    return f ? round_tensor(m, node, ET_ROLE_E, f, dy, dy, 1, n) : ET_OK;
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
