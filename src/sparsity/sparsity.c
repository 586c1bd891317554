/* Run-time sparsity modes of a model (docs/sparsity.md): parsing, which layer
 * does what, and the buffers they need in the memory plan. The layers only
 * pass the decisions on to their matmul records; the matmul path
 * (src/kernels/matmul.c) runs the sparse kernel, the speculation
 * (speculate.c) and counts.
 *
 * Rules, per conv/linear node:
 *   ff_skip    skip or speculate: FF skips zero input activations (exact);
 *   bw_skip    skip or speculate: EP skips zero errors, WG zero errors and
 *              zero activations (exact);
 *   ep_mask    skip or speculate, the layer runs EP, and its input is "ReLU
 *              gated": produced by a relu, or by maxpool / avgpool / flatten /
 *              dropout applied (repeatedly) to a relu output. Then the input is
 *              zero exactly where the relu output is zero (maxpool/avgpool of
 *              non-negative values is zero only if the whole window is), and
 *              the relu's EP multiplies dL/dx there by 0, so EP need not compute
 *              those entries. Under a precision policy (inputs rounded in place)
 *              only a direct, in-place relu qualifies: rounding can make a
 *              positive value zero where the relu still passes the gradient;
 *   speculate  speculate, and the node's output is read by exactly one node,
 *              a relu: masking a predicted-zero output then changes nothing but
 *              the relu's input.
 * Layers that fit no rule stay dense in that respect. */
#include "numerics/format_internal.h"
#include "sparsity/sparsity.h"

#include "nn/model.h"
#include "nn/precision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node_sp {
    et_layer_sparsity sp;
    et_spec spec; /* the request for this node's FF */
    int active;   /* any field set */
    int speculate;
    size_t cols_off; /* conv: its xcols, then dycols, in the counts' part of the memory */
} node_sp;

typedef struct sparsity_state {
    et_sparsity cfg;
    int nnodes;
    node_sp *node;
    et_spec_stats *stats;
    size_t ep_mask_bytes, out_mask_bytes, ws_bytes, code_bytes, cols_bytes;
    int batch;
    uint8_t *ep_mask, *out_mask;
    int8_t *codes;
} sparsity_state;

/* ----------------------------------------------------------------- parsing */

et_status et_sparsity_parse(const char *modes, const char *bits, et_sparsity *out) {
    memset(out, 0, sizeof *out);
    out->spec_bits = 4;
    out->spec_check_every = 10;
    if (!modes) modes = "none";
    char buf[256];
    if (strlen(modes) >= sizeof buf) return et_set_error(ET_ERR_INVALID, "--sparsity: value too long");
    snprintf(buf, sizeof buf, "%s", modes);
    int none = 0, n = 0;
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (!*p) return et_set_error(ET_ERR_INVALID, "--sparsity '%s': empty mode", modes);
        if (!strcmp(p, "none")) none = 1;
        else if (!strcmp(p, "skip")) out->skip = 1;
        else if (!strcmp(p, "speculate")) out->speculate = 1;
        else if (!strcmp(p, "prune")) out->prune = 1;
        else return et_set_error(ET_ERR_INVALID, "--sparsity: unknown mode '%s' (none, skip, speculate, prune)", p);
        n++;
        if (!comma) break;
        p = comma + 1;
    }
    if (none && n > 1) return et_set_error(ET_ERR_INVALID, "--sparsity '%s': 'none' cannot be combined with other modes", modes);
    if (bits) {
        char *end;
        if (!strcmp(bits, "exp")) out->spec_bits = ET_SPEC_EXP;
        else {
            long b = strtol(bits, &end, 10);
            if (end == bits || *end || !((b >= 1 && b <= 8) || b == 32))
                return et_set_error(ET_ERR_INVALID, "--spec-bits '%s': give 1..8, exp or 32", bits);
            out->spec_bits = (int)b;
        }
        if (!out->speculate) return et_set_error(ET_ERR_INVALID, "--spec-bits needs --sparsity speculate");
    }
    return ET_OK;
}

const char *et_sparsity_name(const et_sparsity *s, char *buf, size_t cap) {
    buf[0] = 0;
    if (!s || !(s->skip || s->speculate || s->prune)) {
        snprintf(buf, cap, "none");
        return buf;
    }
    size_t len = 0;
    const char *names[3] = {"skip", "speculate", "prune"};
    int on[3] = {s->skip, s->speculate, s->prune};
    for (int i = 0; i < 3; i++)
        if (on[i] && len < cap) len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? "," : "", names[i]);
    return buf;
}

/* ------------------------------------------------------------ model side */

et_status et_model_set_sparsity(et_model *m, const et_sparsity *s) {
    if (m->planned) return et_set_error(ET_ERR_INVALID, "set the sparsity modes before planning the model");
    /* s->prune only records the request: pruning itself is configured with
     * et_model_set_pruning (src/sparsity/prune.c) */
    if (s->speculate && !(s->spec_bits == ET_SPEC_EXP || s->spec_bits == ET_SPEC_EXACT ||
                          (s->spec_bits >= 1 && s->spec_bits <= 8)))
        return et_set_error(ET_ERR_INVALID, "speculation bits must be 1..8, exp or 32");
    if (s->spec_check_every < 0) return et_set_error(ET_ERR_INVALID, "speculation check interval must be >= 0");
    et_sparsity_free(m);
    if (!(s->skip || s->speculate)) return ET_OK;
    sparsity_state *st = calloc(1, sizeof *st);
    if (!st) return et_set_error(ET_ERR_NOMEM, "out of memory");
    st->cfg = *s;
    st->nnodes = m->nnodes;
    st->node = calloc((size_t)m->nnodes + 1, sizeof *st->node);
    st->stats = calloc((size_t)m->nnodes + 1, sizeof *st->stats);
    if (!st->node || !st->stats) {
        free(st->node), free(st->stats), free(st);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    m->sparsity = st;
    return ET_OK;
}

const et_sparsity *et_model_sparsity(const et_model *m) {
    const sparsity_state *st = m->sparsity;
    return st ? &st->cfg : NULL;
}

void et_sparsity_free(et_model *m) {
    sparsity_state *st = m->sparsity;
    if (!st) return;
    free(st->node), free(st->stats), free(st);
    m->sparsity = NULL;
}

static int is_matmul(const et_layer *l) { return l->type == ET_L_CONV || l->type == ET_L_LINEAR; }

/* The rule for ep_mask (see the top of this file). */
static int relu_gated(const et_model *m, int node) {
    int t = m->nodes[node].in;
    const int direct_only = m->policy != NULL;
    for (int hops = 0; hops < m->nnodes; hops++) {
        if (t <= 0) return 0;
        int p = m->tensors[t].producer;
        if (p < 0) return 0;
        const et_node *pn = &m->nodes[p];
        switch (pn->layer.type) {
        case ET_L_RELU: return !direct_only || (hops == 0 && m->tensors[t].alias_of >= 0);
        case ET_L_MAXPOOL:
        case ET_L_AVGPOOL:
        case ET_L_FLATTEN:
        case ET_L_DROPOUT:
            if (direct_only) return 0;
            t = pn->in;
            break;
        default: return 0;
        }
    }
    return 0;
}

static int feeds_relu_only(const et_model *m, int node) {
    int t = m->nodes[node].out;
    if (m->tensors[t].consumers != 1) return 0;
    for (int i = node + 1; i < m->nnodes; i++)
        if (m->nodes[i].in == t || m->nodes[i].in2 == t) return m->nodes[i].layer.type == ET_L_RELU && m->nodes[i].in2 < 0;
    return 0;
}

int et_sparsity_masks_ep(const et_model *m, int node) {
    const sparsity_state *st = m->sparsity;
    if (!st || !(st->cfg.skip || st->cfg.speculate) || node < 0 || node >= m->nnodes) return 0;
    const et_layer *l = &m->nodes[node].layer;
    return is_matmul(l) && !l->skip_ep && relu_gated(m, node);
}

static size_t al(size_t n) { return (n + 63) & ~(size_t)63; }

/* one of a conv node's xcols / dycols */
static size_t cols_bytes(const et_layer *l, int batch) {
    return al((size_t)batch * (size_t)l->out.h * (size_t)l->out.w * sizeof(int32_t));
}

et_status et_sparsity_plan(et_model *m, int batch, size_t *bytes) {
    sparsity_state *st = m->sparsity;
    *bytes = 0;
    if (!st) return ET_OK;
    if (st->nnodes != m->nnodes) return et_set_error(ET_ERR_INVALID, "sparsity: the model changed after set_sparsity");
    const int skip = st->cfg.skip || st->cfg.speculate;
    st->ep_mask_bytes = st->out_mask_bytes = st->ws_bytes = st->code_bytes = st->cols_bytes = 0;
    st->batch = batch;
    const int coded = st->cfg.spec_bits >= 1 && st->cfg.spec_bits <= 8;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        node_sp *ns = &st->node[i];
        memset(ns, 0, sizeof *ns);
        if (!is_matmul(l)) continue;
        ns->sp.ff_skip = skip;
        ns->sp.bw_skip = skip;
        ns->sp.ep_mask = et_sparsity_masks_ep(m, i);
        ns->speculate = st->cfg.speculate && feeds_relu_only(m, i);
        ns->active = 1;
        if (l->type == ET_L_CONV) {
            ns->cols_off = st->cols_bytes;
            st->cols_bytes += 2 * cols_bytes(l, batch);
        }
        if (ns->sp.ep_mask) {
            size_t b = et_layer_ep_mask_bytes(l, batch);
            if (b > st->ep_mask_bytes) st->ep_mask_bytes = b;
        }
        if (ns->speculate) {
            size_t ob = (size_t)et_shape_numel(l->out) * (size_t)batch;
            if (ob > st->out_mask_bytes) st->out_mask_bytes = ob;
            int M, N, K;
            et_layer_ff_dims(l, batch, &M, &N, &K);
            size_t wb = et_spec_ws_bytes(st->cfg.spec_bits, M, N, K);
            /* The check's exact output reuses the estimate (4 bytes per output). */
            if (wb > st->ws_bytes) st->ws_bytes = wb;
            size_t cb = coded ? et_layer_spec_code_bytes(l, batch) : 0;
            if (cb > st->code_bytes) st->code_bytes = cb;
        }
    }
    /* two speculation workspaces: conv's lanes predict side by side */
    /* EP mask bytes for each of conv's two lanes */
    *bytes = 2 * al(st->ep_mask_bytes) + al(st->out_mask_bytes) + 2 * al(st->ws_bytes) + al(st->code_bytes) +
             st->cols_bytes;
    return ET_OK;
}

void et_sparsity_bind(et_model *m, void *mem) {
    sparsity_state *st = m->sparsity;
    if (!st) return;
    char *p = mem;
    st->ep_mask = st->ep_mask_bytes ? (uint8_t *)p : NULL;
    p += 2 * al(st->ep_mask_bytes);
    st->out_mask = st->out_mask_bytes ? (uint8_t *)p : NULL;
    p += al(st->out_mask_bytes);
    m->eng.spec_ws = st->ws_bytes ? p : NULL;
    m->eng.spec_ws1 = st->ws_bytes ? p + al(st->ws_bytes) : NULL;
    m->eng.spec_ws_bytes = st->ws_bytes;
    p += 2 * al(st->ws_bytes);
    st->codes = st->code_bytes ? (int8_t *)p : NULL;
    p += al(st->code_bytes);
    for (int i = 0; i < m->nnodes; i++) {
        node_sp *ns = &st->node[i];
        ns->sp.ep_maskbuf = ns->sp.ep_mask ? st->ep_mask : NULL;
        ns->sp.spec_codes = ns->speculate && m->nodes[i].layer.type == ET_L_CONV ? st->codes : NULL;
        ns->sp.xcols = ns->sp.dycols = NULL;
        if (ns->active && m->nodes[i].layer.type == ET_L_CONV) {
            ns->sp.xcols = (int32_t *)(void *)(p + ns->cols_off);
            ns->sp.dycols = (int32_t *)(void *)(p + ns->cols_off + cols_bytes(&m->nodes[i].layer, st->batch));
        }
    }
}

/* max |x|: +-inf counts, NaN never wins (numerics/format.c, vectorised) */
static float absmax(const float *x, int64_t n) { return et_absmax_f32(x, (size_t)n, 1); }

int et_sparsity_wants_amax(const et_model *m) {
    const sparsity_state *st = m->sparsity;
    return st && st->cfg.speculate && st->cfg.spec_bits >= 1 && st->cfg.spec_bits <= 8;
}

const et_layer_sparsity *et_sparsity_node(et_model *m, int node, const float *x, float x_amax, int n, int train) {
    sparsity_state *st = m->sparsity;
    if (!st || node < 0 || node >= st->nnodes || !st->node[node].active) return NULL;
    node_sp *ns = &st->node[node];
    ns->sp.spec = NULL;
    if (ns->speculate && x) { /* forward: fill this call's request */
        const et_layer *l = &m->nodes[node].layer;
        et_spec *s = &ns->spec;
        memset(s, 0, sizeof *s);
        s->bits = st->cfg.spec_bits;
        if (s->bits >= 1 && s->bits <= 8) {
            float ax = x_amax >= 0.0f ? x_amax : absmax(x, et_shape_numel(l->in) * n);
            float aw = absmax(l->params[0].use, l->params[0].n);
            /* conv: A = W, B = col(x); linear: A = x, B = W */
            s->absmax_a = l->type == ET_L_CONV ? aw : ax;
            s->absmax_b = l->type == ET_L_CONV ? ax : aw;
        }
        s->bias = l->nparams > 1 ? l->params[1].data : NULL;
        s->bias_rows = l->type == ET_L_CONV;
        s->mask = st->out_mask;
        s->ldmask = l->type == ET_L_CONV ? n * l->out.h * l->out.w : l->out.c;
        s->check = train && st->cfg.spec_check_every > 0 && m->step % st->cfg.spec_check_every == 0;
        s->stats = &st->stats[node];
        ns->sp.spec = s;
    }
    return &ns->sp;
}

void et_model_node_sparsity_plan(const et_model *m, int node, int *ff_skip, int *ep_mask, int *bw_skip,
                                 int *speculate) {
    const sparsity_state *st = m->sparsity;
    int a = 0, b = 0, c = 0, d = 0;
    if (st && m->planned && node >= 0 && node < st->nnodes) {
        const node_sp *ns = &st->node[node];
        a = ns->sp.ff_skip, b = ns->sp.ep_mask, c = ns->sp.bw_skip, d = ns->speculate;
    }
    if (ff_skip) *ff_skip = a;
    if (ep_mask) *ep_mask = b;
    if (bw_skip) *bw_skip = c;
    if (speculate) *speculate = d;
}

void et_model_spec_stats(const et_model *m, int node, et_spec_stats *out) {
    const sparsity_state *st = m->sparsity;
    memset(out, 0, sizeof *out);
    if (st && node >= 0 && node < st->nnodes) *out = st->stats[node];
}

void et_model_reset_spec_stats(et_model *m) {
    sparsity_state *st = m->sparsity;
    if (st) memset(st->stats, 0, sizeof *st->stats * (size_t)st->nnodes);
}
