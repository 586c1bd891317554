/* Model graph, memory plan, forward and backward passes.
 *
 * Memory: et_model_plan() sizes everything from the layer shapes (AIfES-style
 * two-phase planning) and makes one allocation; training never allocates.
 *  - every tensor's value is kept for the backward pass, except that a relu
 *    or dropout whose input has no other reader works in place;
 *  - gradients live in a few "slots" reused by liveness: a tensor's gradient
 *    is needed from its last reader's backward until its producer's.
 */
#include "nn/model.h"

#include "core/rng.h"
#include "nn/layer_impl.h"
#include "nn/precision.h"
#include "sparsity/prune.h"
#include "sparsity/sparsity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

#define ALIGN 64
#define MAX_FLOATS ((int64_t)1 << 34) /* refuse plans beyond 64 GB */

static size_t align_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

/* ------------------------------------------------------------- building */

static int new_tensor(et_model *m, et_shape s, int producer) {
    if (m->ntensors == m->cap_tensors) {
        int cap = m->cap_tensors ? 2 * m->cap_tensors : 32;
        et_tensor *t = realloc(m->tensors, sizeof *t * (size_t)cap);
        if (!t) return -1;
        m->tensors = t, m->cap_tensors = cap;
    }
    et_tensor *t = &m->tensors[m->ntensors];
    memset(t, 0, sizeof *t);
    t->shape = s, t->producer = producer, t->alias_of = -1, t->grad_slot = -1;
    return m->ntensors++;
}

static et_node *new_node(et_model *m) {
    if (m->nnodes == m->cap_nodes) {
        int cap = m->cap_nodes ? 2 * m->cap_nodes : 32;
        et_node *n = realloc(m->nodes, sizeof *n * (size_t)cap);
        if (!n) return NULL;
        m->nodes = n, m->cap_nodes = cap;
    }
    et_node *n = &m->nodes[m->nnodes];
    memset(n, 0, sizeof *n);
    n->in2 = -1;
    n->ff_relu_node = -1;
    n->layer.index = m->nnodes++;
    return n;
}

int et_model_add_input(et_model *m, et_shape s) { return new_tensor(m, s, -1); }

et_status et_model_add_layer(et_model *m, et_layer_type t, const void *cfg, size_t cfg_size,
                             const char *prefix, int in, int *out) {
    if (m->planned) return et_set_error(ET_ERR_INVALID, "model already planned");
    et_node *n = new_node(m);
    if (!n) return et_set_error(ET_ERR_NOMEM, "out of memory building the model");
    et_layer *l = &n->layer;
    l->type = t;
    snprintf(l->prefix, sizeof l->prefix, "%s", prefix);
    if (cfg) memcpy(&l->cfg, cfg, cfg_size);
    l->in = m->tensors[in].shape;
    n->in = in;
    et_status st = et_layer_table[t]->setup(l);
    if (st) {
        m->nnodes--;
        return st;
    }
    if (et_shape_numel(l->out) <= 0 || et_shape_numel(l->out) > (1 << 28))
        return et_set_error(ET_ERR_SHAPE, "layer %s: output size out of range", prefix);
    for (int p = 0; p < l->nparams; p++)
        if (l->params[p].n > ((int64_t)1 << 31))
            return et_set_error(ET_ERR_SHAPE, "layer %s: %lld parameters is too many", prefix,
                                (long long)l->params[p].n);
    int o = new_tensor(m, l->out, n->layer.index);
    if (o < 0) return et_set_error(ET_ERR_NOMEM, "out of memory building the model");
    m->tensors[in].consumers++;
    n->out = o;
    *out = o;
    return ET_OK;
}

et_status et_model_add_residual(et_model *m, int a, int b, int *out) {
    et_shape sa = m->tensors[a].shape, sb = m->tensors[b].shape;
    if (sa.c != sb.c || sa.h != sb.h || sa.w != sb.w || sa.is_image != sb.is_image)
        return et_set_error(ET_ERR_SHAPE,
                            "residual: body gives %dx%dx%d but shortcut gives %dx%dx%d", sa.c,
                            sa.h, sa.w, sb.c, sb.h, sb.w);
    et_status st = et_model_add_layer(m, ET_L_ADD, NULL, 0, "", a, out);
    if (st) return st;
    m->nodes[m->nnodes - 1].in2 = b;
    m->tensors[b].consumers++;
    return ET_OK;
}

void et_model_free(et_model *m) {
    if (!m) return;
    free(m->arena);
    free(m->slots);
    free(m->nodes);
    free(m->tensors);
    free(m->spec_text);
    et_precision_free(m);
    free(m->policy);
    et_hwlink_free(m);
    et_traffic_free(m);
    et_prune_free(m);
    et_sparsity_free(m);
    free((void *)m->eng.mul);
    free((void *)m->eng.acc);
    free(m);
}

const char *et_model_name(const et_model *m) { return m->name; }
const char *et_model_spec_text(const et_model *m) { return m->spec_text ? m->spec_text : ""; }

int et_model_num_classes(const et_model *m) {
    return m->ntensors ? m->tensors[m->ntensors - 1].shape.c : 0;
}

void et_model_input_shape(const et_model *m, int *c, int *h, int *w) {
    et_shape s = m->tensors[0].shape;
    *c = s.c, *h = s.h, *w = s.w;
}

int64_t et_model_num_params(const et_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->nnodes; i++)
        for (int p = 0; p < m->nodes[i].layer.nparams; p++)
            if (m->nodes[i].layer.params[p].trainable) n += m->nodes[i].layer.params[p].n;
    return n;
}

void et_model_macs(const et_model *m, int64_t macs[ET_NSTAGES]) {
    macs[ET_FF] = macs[ET_EP] = macs[ET_WG] = 0;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        const et_layer_ops *ops = et_layer_table[l->type];
        if (!ops->macs) continue;
        int64_t f = ops->macs(l);
        macs[ET_FF] += f;
        if (m->tensors[m->nodes[i].in].needs_grad) macs[ET_EP] += f;
        if (!l->skip_wg) macs[ET_WG] += f;
    }
}

et_optim et_optim_default(et_optim_kind kind) {
    et_optim o = {kind, kind == ET_OPT_ADAM ? 1e-3f : 0.01f, 0.0f, 0, 0.0f, 0.9f, 0.999f, 1e-8f};
    return o;
}

/* ------------------------------------------------------------- planning */

static int opt_buffers(const et_optim *o) {
    if (!o) return 0;
    if (o->kind == ET_OPT_ADAM) return 2;
    return o->momentum != 0.0f ? 1 : 0;
}

/* Largest plan we accept: 3/4 of physical memory (a clear error instead of
 * an allocation the OS would kill us for). */
static size_t plan_cap_bytes(void) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0) return (size_t)pages / 4 * 3 * (size_t)psz;
#endif
    return (size_t)1 << 40;
}

/* Assigns in-place aliases and gradient slots; returns the number of slots. */
static int plan_tensors(et_model *m) {
    for (int i = 0; i < m->nnodes; i++) {
        et_node *n = &m->nodes[i];
        et_tensor *in = &m->tensors[n->in];
        /* not on a flatten's aliased output: that storage is the flatten's input,
         * which the layer before may read in its EP */
        int flat_alias = in->producer >= 0 && m->nodes[in->producer].layer.type == ET_L_FLATTEN && in->alias_of >= 0;
        int inplace = (n->layer.type == ET_L_RELU || n->layer.type == ET_L_DROPOUT) && n->in != 0 &&
                      in->consumers == 1 && !flat_alias;
        /* flatten of a one-channel image (or of a vector) moves nothing: CNHW
         * with C == 1 is already [N, H*W], so the output is the input */
        if (n->layer.type == ET_L_FLATTEN && (n->layer.in.c == 1 || !n->layer.in.is_image)) inplace = 1;
        m->tensors[n->out].alias_of = inplace ? (in->alias_of >= 0 ? in->alias_of : n->in) : -1;
    }
    /* A relu whose input feeds only it and whose output feeds only a layer
     * that can apply the ReLU mask in its own EP (maxpool), or that computes
     * only the entries whose input is non-zero anyway (a conv/linear EP under
     * skip or speculate, et_sparsity_masks_ep; without a precision policy,
     * which would round the relu's error): that layer does the relu's EP,
     * and both gradients share one slot. */
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].relu_ep_fused = m->nodes[i].ep_relu_in = 0;
    for (int i = 0; i < m->nnodes; i++) {
        et_node *n = &m->nodes[i];
        if (n->layer.type != ET_L_RELU || n->in == 0 || m->tensors[n->in].consumers != 1 ||
            m->tensors[n->out].consumers != 1)
            continue;
        for (int j = i + 1; j < m->nnodes; j++) {
            et_node *c = &m->nodes[j];
            if (c->in != n->out && c->in2 != n->out) continue;
            if (c->in == n->out && c->in2 < 0 &&
                (et_layer_fuses_relu_ep(c->layer.type) || (!m->policy && et_sparsity_masks_ep(m, j))))
                n->relu_ep_fused = c->ep_relu_in = 1;
            break;
        }
    }
    /* A relu working in place on the output of a layer that can apply it in
     * its own FF (conv), which nothing else reads: that layer may do the
     * relu's FF (decided per call in et_model_forward). */
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].ff_relu_node = -1, m->nodes[i].ff_done = 0;
    for (int i = 0; i < m->nnodes; i++) {
        et_node *n = &m->nodes[i];
        const et_tensor *in = &m->tensors[n->in];
        if (n->layer.type != ET_L_RELU || m->tensors[n->out].alias_of < 0 || in->producer < 0 ||
            in->consumers != 1)
            continue;
        et_node *p = &m->nodes[in->producer];
        if (p->out == n->in && et_layer_fuses_relu_ff(p->layer.type)) p->ff_relu_node = i;
    }
    /* Gradient slots by liveness, walking the nodes backwards. */
    int nslots = 0, free_list[64], nfree = 0;
#define ALLOC_SLOT() (nfree ? free_list[--nfree] : nslots++)
    for (int t = 0; t < m->ntensors; t++) m->tensors[t].grad_slot = -1;
    m->tensors[m->ntensors - 1].grad_slot = ALLOC_SLOT();
    for (int i = m->nnodes - 1; i >= 0; i--) {
        et_node *n = &m->nodes[i];
        if (n->relu_ep_fused && m->tensors[n->in].needs_grad && m->tensors[n->out].grad_slot >= 0) {
            m->tensors[n->in].grad_slot = m->tensors[n->out].grad_slot; /* kept, not freed */
            continue;
        }
        int ins[2] = {n->in, n->in2};
        for (int k = 0; k < 2; k++) {
            int t = ins[k];
            if (t < 0 || !m->tensors[t].needs_grad) continue;
            if (m->tensors[t].grad_slot < 0) m->tensors[t].grad_slot = ALLOC_SLOT();
        }
        if (m->tensors[n->out].grad_slot >= 0 && nfree < 64) free_list[nfree++] = m->tensors[n->out].grad_slot;
    }
#undef ALLOC_SLOT
    return nslots;
}

et_status et_model_plan(et_model *m, int batch, const et_optim *opt) {
    if (m->planned) return et_set_error(ET_ERR_INVALID, "model already planned");
    if (batch <= 0 || batch > (1 << 20)) return et_set_error(ET_ERR_INVALID, "batch must be 1..1048576");
    if (m->nnodes == 0) return et_set_error(ET_ERR_INVALID, "model has no layers");
    et_shape outs = m->tensors[m->ntensors - 1].shape;
    if (outs.is_image || outs.c < 2)
        return et_set_error(ET_ERR_SHAPE, "model output must be a vector of >= 2 logits (end with linear)");
    m->optim = opt ? *opt : et_optim_default(ET_OPT_SGD);
    m->batch_cap = batch;
    int nb = opt_buffers(opt);
    et_status st = et_gemm_init(et_get_threads());
    if (st) return st;

    /* A tensor needs a gradient if a layer upstream has parameters; layers
     * whose input needs none skip EP (the first weight layer, and anything
     * before it). */
    for (int i = 0; i < m->nnodes; i++) {
        et_node *n = &m->nodes[i];
        int up = m->tensors[n->in].needs_grad || (n->in2 >= 0 && m->tensors[n->in2].needs_grad);
        int own = 0;
        for (int p = 0; p < n->layer.nparams; p++) own |= n->layer.params[p].trainable && !n->layer.skip_wg;
        m->tensors[n->out].needs_grad = up || own;
        n->layer.skip_ep = !up;
    }

    m->nslots = plan_tensors(m);
    int64_t maxnumel = 0;
    for (int t = 0; t < m->ntensors; t++)
        if (et_shape_numel(m->tensors[t].shape) > maxnumel) maxnumel = et_shape_numel(m->tensors[t].shape);
    if (maxnumel * batch > MAX_FLOATS) return et_set_error(ET_ERR_NOMEM, "plan too large");
    int needs_tmp = 0;
    for (int t = 1; t < m->ntensors; t++) needs_tmp |= m->tensors[t].consumers > 1;

    /* Sizes in bytes, each region aligned. */
    size_t p_bytes = 0, g_bytes = 0, o_bytes = 0, a_bytes = 0, s_bytes = 0, st_bytes = 0;
    size_t scratch = 0;
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        const et_layer_ops *ops = et_layer_table[l->type];
        if (et_model_format(m, i, ET_ROLE_W)) /* the rounded copy FF/EP use */
            p_bytes += align_up((size_t)l->params[0].n * sizeof(float));
        for (int p = 0; p < l->nparams; p++) {
            size_t b = align_up((size_t)l->params[p].n * sizeof(float));
            p_bytes += b;
            if (l->params[p].trainable) g_bytes += b, o_bytes += (size_t)nb * b;
        }
        if (ops->state_floats) st_bytes += align_up(ops->state_floats(l) * sizeof(float));
        if (ops->scratch_floats) {
            size_t s = ops->scratch_floats(l, batch);
            if (s > scratch) scratch = s;
        }
    }
    for (int t = 0; t < m->ntensors; t++)
        if (m->tensors[t].alias_of < 0)
            a_bytes += align_up((size_t)(et_shape_numel(m->tensors[t].shape) * batch) * sizeof(float));
    m->slot_floats = (size_t)(maxnumel * batch);
    size_t slot_bytes = align_up(m->slot_floats * sizeof(float));
    s_bytes = (size_t)m->nslots * slot_bytes + (needs_tmp ? slot_bytes : 0);
    m->scratch_floats = scratch;
    size_t scratch_bytes = align_up(scratch * sizeof(float));
    size_t probs_bytes = align_up((size_t)batch * (size_t)outs.c * sizeof(float));
    et_shape ins = m->tensors[0].shape;
    size_t stage_bytes = ins.is_image && ins.c > 1 ? align_up((size_t)(et_shape_numel(ins) * batch) * sizeof(float)) : 0;
    a_bytes += stage_bytes;
    size_t mask_bytes, select_bytes; /* pruning: weight masks (with the parameters), selection scratch */
    et_prune_plan_bytes(m, &mask_bytes, &select_bytes);
    p_bytes += mask_bytes;
    size_t sp_bytes = 0; /* sparsity masks and speculation buffers */
    if ((st = et_sparsity_plan(m, batch, &sp_bytes))) return st;
    size_t total = p_bytes + g_bytes + o_bytes + a_bytes + s_bytes + st_bytes + scratch_bytes + probs_bytes +
                   select_bytes + sp_bytes;

    size_t cap = plan_cap_bytes();
    if (total > cap)
        return et_set_error(ET_ERR_NOMEM, "the memory plan needs %.1f GB, more than the %.1f GB allowed (3/4 of RAM)",
                            total / 1e9, cap / 1e9);
    m->slots = calloc((size_t)m->nslots, sizeof *m->slots);
    m->layer_counters = NULL;
    size_t counters_bytes = align_up(sizeof(et_counters) * (size_t)m->nnodes);
    total += counters_bytes;
    void *arena = NULL;
    if (!m->slots || posix_memalign(&arena, ALIGN, total) != 0)
        return et_set_error(ET_ERR_NOMEM, "cannot allocate the %zu-byte memory plan", total);
    memset(arena, 0, total);
    m->arena = arena;
    char *cur = arena;
#define TAKE(bytes) (cur += (bytes), (float *)(cur - (bytes)))
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        const et_layer_ops *ops = et_layer_table[l->type];
        for (int p = 0; p < l->nparams; p++) {
            et_param *pp = &l->params[p];
            size_t b = align_up((size_t)pp->n * sizeof(float));
            pp->data = TAKE(b);
            pp->use = p == 0 && et_model_format(m, i, ET_ROLE_W) ? TAKE(b) : pp->data;
            if (pp->trainable) {
                pp->grad = TAKE(b);
                for (int k = 0; k < nb; k++) pp->opt[k] = TAKE(b);
            }
        }
        if (l->type == ET_L_BN) /* running_var starts at 1 */
            for (int64_t k = 0; k < l->params[3].n; k++) l->params[3].data[k] = 1.0f;
        if (ops->state_floats) l->state = TAKE(align_up(ops->state_floats(l) * sizeof(float)));
    }
    for (int t = 0; t < m->ntensors; t++)
        if (m->tensors[t].alias_of < 0)
            m->tensors[t].val =
                TAKE(align_up((size_t)(et_shape_numel(m->tensors[t].shape) * batch) * sizeof(float)));
    for (int t = 0; t < m->ntensors; t++)
        if (m->tensors[t].alias_of >= 0) m->tensors[t].val = m->tensors[m->tensors[t].alias_of].val;
    for (int s = 0; s < m->nslots; s++) m->slots[s] = TAKE(slot_bytes);
    m->tmp = needs_tmp ? TAKE(slot_bytes) : NULL;
    m->input_nchw = stage_bytes ? TAKE(stage_bytes) : m->tensors[0].val;
    m->scratch = TAKE(scratch_bytes);
    m->probs = TAKE(probs_bytes);
    m->layer_counters = (et_counters *)TAKE(counters_bytes);
    uint8_t *masks = (uint8_t *)TAKE(mask_bytes);
    et_prune_bind(m, masks, TAKE(select_bytes));
    if (sp_bytes) et_sparsity_bind(m, TAKE(sp_bytes));
#undef TAKE
    m->eng.per_layer = m->layer_counters;
    m->eng.nlayers = m->nnodes;
    if (m->policy) { /* the matmul call's multiplier / accumulator formats per layer */
        m->eng.mul = calloc((size_t)m->nnodes, sizeof *m->eng.mul);
        m->eng.acc = calloc((size_t)m->nnodes, sizeof *m->eng.acc);
        if (!m->eng.mul || !m->eng.acc) return et_set_error(ET_ERR_NOMEM, "out of memory");
        for (int i = 0; i < m->nnodes; i++) {
            m->eng.mul[i] = et_model_format(m, i, ET_ROLE_MUL);
            m->eng.acc[i] = et_model_format(m, i, ET_ROLE_ACC);
        }
    }

    size_t kws = 0; /* packing buffers of the integer / emulated GEMMs (precision.c) */
    if ((st = et_precision_reserve(m, batch, &kws))) return st;
#ifdef _OPENMP
    if (kws && et_get_threads() > 1 && !omp_in_parallel()) {
        /* conv's second lane (src/nn/conv.c) runs integer products on the
         * team's second thread: its buffers too */
        size_t k1 = 0;
        et_status s1 = ET_OK;
#pragma omp parallel num_threads(2)
        if (omp_get_thread_num() == 1) s1 = et_precision_reserve(m, batch, &k1);
        if (s1) return s1;
        kws += k1;
    }
#endif
    m->mem = (et_memory_plan){p_bytes, g_bytes, o_bytes, a_bytes, s_bytes,
                              scratch_bytes + st_bytes + probs_bytes + counters_bytes + select_bytes,
                              et_gemm_workspace_bytes() + kws, 0, sp_bytes, 0};
    m->mem.total = total + m->mem.workspace;
    m->wq_step = -1;
    m->planned = 1;
    return ET_OK;
}

et_memory_plan et_model_memory(const et_model *m) { return m->mem; }

/* --------------------------------------------------------------- params */

static et_status need_plan(const et_model *m) {
    return m->planned ? ET_OK : et_set_error(ET_ERR_INVALID, "model is not planned yet");
}

et_status et_model_init_he(et_model *m, uint64_t seed) {
    et_status st = need_plan(m);
    if (st) return st;
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        if (l->type == ET_L_CONV || l->type == ET_L_LINEAR) {
            et_param *w = &l->params[0];
            int64_t fan_in = w->n / w->shape[0];
            double std = sqrt(2.0 / (double)fan_in);
            for (int64_t k = 0; k < w->n; k++)
                w->data[k] = (float)(std * et_rand_normal(seed, ((uint64_t)ET_STREAM_INIT << 32) | (uint64_t)i, (uint64_t)k));
            if (l->nparams > 1) memset(l->params[1].data, 0, sizeof(float) * (size_t)l->params[1].n);
        } else if (l->type == ET_L_BN) {
            for (int64_t k = 0; k < l->params[0].n; k++) {
                l->params[0].data[k] = 1.0f, l->params[1].data[k] = 0.0f;
                l->params[2].data[k] = 0.0f, l->params[3].data[k] = 1.0f;
            }
            l->num_batches_tracked = 0;
        }
        for (int p = 0; p < l->nparams; p++)
            for (int k = 0; k < 2; k++)
                if (l->params[p].opt[k]) memset(l->params[p].opt[k], 0, sizeof(float) * (size_t)l->params[p].n);
    }
    et_prune_reset(m);
    m->seed = seed;
    m->step = 0;
    m->wq_step = -1;
    return ET_OK;
}

void et_model_set_seed(et_model *m, uint64_t seed) { m->seed = seed; }
int64_t et_model_step(const et_model *m) { return m->step; }
void et_model_set_step(et_model *m, int64_t step) {
    m->step = step;
    m->wq_step = -1;
}

int et_model_num_tensors(const et_model *m) {
    int n = 0;
    for (int i = 0; i < m->nnodes; i++) n += m->nodes[i].layer.nparams;
    return n;
}

et_status et_model_tensor(et_model *m, int idx, const char **name, float **data, int64_t *n,
                          float **grad) {
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        if (idx < l->nparams) {
            et_param *p = &l->params[idx];
            if (name) *name = p->name;
            if (data) *data = p->data;
            if (n) *n = p->n;
            if (grad) *grad = p->grad;
            return ET_OK;
        }
        idx -= l->nparams;
    }
    return et_set_error(ET_ERR_INVALID, "no such parameter");
}

et_status et_model_freeze(et_model *m, const char *prefix) {
    int found = 0;
    for (int i = 0; i < m->nnodes; i++)
        if (!strcmp(m->nodes[i].layer.prefix, prefix) && m->nodes[i].layer.nparams) {
            m->nodes[i].layer.skip_wg = 1;
            found = 1;
        }
    return found ? ET_OK : et_set_error(ET_ERR_INVALID, "no layer with parameters named '%s'", prefix);
}

/* -------------------------------------------------------------- running */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* the time a layer function took, into the node's counters */
static void add_seconds(et_model *m, int node, et_stage s, double t0) {
    if (m->layer_counters) m->layer_counters[node].seconds[s] += now_seconds() - t0;
}

/* the time since t0, into the model's phase counters */
static void add_phase(et_model *m, et_phase p, double t0) { m->phase_seconds[p] += now_seconds() - t0; }

const char *et_phase_name(et_phase p) {
    static const char *const names[ET_NPHASES] = {"input", "loss", "precision", "traffic", "hw", "update"};
    return (unsigned)p < ET_NPHASES ? names[p] : "?";
}

double et_model_phase_seconds(const et_model *m, et_phase p) {
    return (unsigned)p < ET_NPHASES ? m->phase_seconds[p] : 0.0;
}

float *et_model_input(et_model *m) { return m->planned ? m->input_nchw : NULL; }

et_status et_model_set_input_u8(et_model *m, const et_dataset *ds, const int64_t *idx, int n) {
    et_status st = need_plan(m);
    if (st) return st;
    et_shape s = m->tensors[0].shape;
    if (n < 0 || n > m->batch_cap) return et_set_error(ET_ERR_INVALID, "batch of %d exceeds the planned %d", n, m->batch_cap);
    if (s.c != 1 || s.h != ds->rows || s.w != ds->cols)
        return et_set_error(ET_ERR_SHAPE, "model input %dx%dx%d does not match %dx%d grey images", s.c,
                            s.h, s.w, ds->rows, ds->cols);
    const int64_t px = (int64_t)ds->rows * ds->cols;
    double t0 = now_seconds();
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n) return et_set_error(ET_ERR_INVALID, "image index out of range");
    /* x / 255 divided, not multiplied by 1/255 (which differs in the last
     * bit for half the byte values): the same floats as PyTorch's ToTensor
     * (img.float().div(255)); a vector division per 16 pixels */
    const int vec = et_cpu_isa() >= ET_ISA_AVX512;
#pragma omp parallel for schedule(static) if ((int64_t)n * px > 65536)
    for (int i = 0; i < n; i++) {
        /* the images are scattered over the data set: ask for the ones a few
         * iterations ahead while this one converts */
        if (i + 4 < n)
            for (int64_t k = 0; k < px; k += 64) __builtin_prefetch(ds->images + idx[i + 4] * px + k);
        const uint8_t *restrict src = ds->images + idx[i] * px;
        float *restrict x = m->input_nchw + i * px;
#if defined(__x86_64__) || defined(_M_X64)
        if (vec) {
            et_u8_div255_avx512(src, x, px);
            continue;
        }
#endif
#pragma omp simd
        for (int64_t k = 0; k < px; k++) x[k] = (float)src[k] / 255.0f;
    }
    add_phase(m, ET_PHASE_INPUT, t0);
    return ET_OK;
}

static et_lctx make_ctx(et_model *m, int n, int train) {
    m->eng.seed = m->seed;
    m->eng.step = m->step;
    et_lctx c = {.eng = &m->eng, .scratch = m->scratch, .batch = n, .train = train, .seed = m->seed,
                 .step = (uint64_t)m->step};
    return c;
}

/* The input buffer holds NCHW; layers want CNHW. For C == 1 they coincide;
 * otherwise the staging buffer is transposed into tensor 0. */
static void input_to_cnhw(et_model *m, int n, float *dst) {
    et_shape s = m->tensors[0].shape;
    const int64_t hw = (int64_t)s.h * s.w;
    const float *src = m->input_nchw;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < s.c; ch++)
            memcpy(dst + ((int64_t)ch * n + i) * hw, src + ((int64_t)i * s.c + ch) * hw, sizeof(float) * (size_t)hw);
}

et_status et_model_forward(et_model *m, int n, int train, const float **logits) {
    et_status st = need_plan(m);
    if (st) return st;
    if (n <= 0 || n > m->batch_cap) return et_set_error(ET_ERR_INVALID, "batch of %d outside 1..%d", n, m->batch_cap);
    et_lctx c = make_ctx(m, n, train);
    double t0 = now_seconds();
    if (m->input_nchw != m->tensors[0].val) input_to_cnhw(m, n, m->tensors[0].val);
    add_phase(m, ET_PHASE_INPUT, t0);
    t0 = now_seconds();
    if (train) et_prune_step(m); /* mask update when the schedule says so */
    add_phase(m, ET_PHASE_UPDATE, t0);
    t0 = now_seconds();
    if (m->policy && (st = et_precision_weights(m))) return st;
    if (m->policy) et_prune_apply_use(m); /* rounded copies stay zero where pruned */
    add_phase(m, ET_PHASE_PRECISION, t0);
    /* Speculation's activation scales: each FF that can takes the absmax of
     * its output as it writes it (et_lctx.out_amax), so the next layer needs
     * no pass of its own. Not under a precision policy: it rounds the inputs
     * in place after their producer ran. */
    const int amax = et_sparsity_wants_amax(m) && !m->policy;
    for (int t = 0; t < m->ntensors; t++) m->tensors[t].amax = -1.0f;
    for (int i = 0; i < m->nnodes; i++) {
        et_node *nd = &m->nodes[i];
        if (m->policy) {
            t0 = now_seconds();
            if ((st = et_precision_input(m, i, m->tensors[nd->in].val, et_shape_numel(nd->layer.in) * n))) return st;
            add_phase(m, ET_PHASE_PRECISION, t0);
        }
        if (train && et_traffic_sampling(m)) {
            t0 = now_seconds();
            et_traffic_input(m, i, m->tensors[nd->in].val, n);
            add_phase(m, ET_PHASE_TRAFFIC, t0);
        }
        if (nd->ff_done) { /* a relu its producer's FF applied (in place) */
            nd->ff_done = 0;
            continue;
        }
        const float *x = m->tensors[nd->in].val;
        float *y = m->tensors[nd->out].val;
        float oa = -1.0f;
        c.in_amax = m->tensors[nd->in].amax;
        c.out_amax = amax ? &oa : NULL;
        c.sp = et_sparsity_node(m, i, x, c.in_amax, n, train);
        /* the in-place relu after this layer, in its FF: for plain FP32
         * products (no sink to see the outputs before the relu); under
         * speculation conv applies it with the mask */
        c.relu_out = nd->ff_relu_node >= 0 && et_matmul_plain(&m->eng, i);
        t0 = now_seconds();
        if (nd->layer.type == ET_L_ADD) st = et_add_ff(&c, nd->layer.out, x, m->tensors[nd->in2].val, y);
        else st = et_layer_table[nd->layer.type]->ff(&nd->layer, &c, x, y);
        add_seconds(m, i, ET_FF, t0);
        if (st) return st;
        /* the values just written, under every name of their storage (a
         * fused in-place relu's output among them) */
        const int root = m->tensors[nd->out].alias_of >= 0 ? m->tensors[nd->out].alias_of : nd->out;
        for (int t = 0; t < m->ntensors; t++)
            if (t == root || m->tensors[t].alias_of == root) m->tensors[t].amax = oa;
        if (c.relu_out) m->nodes[nd->ff_relu_node].ff_done = 1;
    }
    m->last_batch = n;
    m->last_train = train;
    if (logits) *logits = m->tensors[m->ntensors - 1].val;
    return ET_OK;
}

/* Softmax cross-entropy, mean over the batch. probs <- dL/dlogits. */
double et_softmax_xent(const float *logits, const uint8_t *labels, int n, int k, float *dlogits,
                           int64_t *correct) {
    double total = 0;
    int64_t right = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (int64_t)i * k;
        float *d = dlogits + (int64_t)i * k;
        float mx = z[0];
        int arg = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > mx) mx = z[j], arg = j;
        double s = 0;
        for (int j = 0; j < k; j++) s += exp((double)z[j] - mx);
        double lse = mx + log(s);
        total += lse - z[labels[i]];
        right += arg == labels[i];
        for (int j = 0; j < k; j++)
            d[j] = (float)((exp((double)z[j] - lse) - (j == labels[i])) / n);
    }
    if (correct) *correct = right;
    return total / n;
}

et_status et_model_backward(et_model *m, const uint8_t *labels, float *loss, int64_t *correct) {
    et_status st = need_plan(m);
    if (st) return st;
    const int n = m->last_batch, k = et_model_num_classes(m);
    if (n <= 0) return et_set_error(ET_ERR_INVALID, "backward without a forward pass");
    for (int i = 0; i < n; i++)
        if (labels[i] >= k) return et_set_error(ET_ERR_INVALID, "label %d out of range for %d classes", labels[i], k);
    const int T = m->ntensors - 1;
    double t0 = now_seconds();
    double l = et_softmax_xent(m->tensors[T].val, labels, n, k, m->slots[m->tensors[T].grad_slot], correct);
    if (loss) *loss = (float)l;
    add_phase(m, ET_PHASE_LOSS, t0);

    et_lctx c = make_ctx(m, n, m->last_train);
    /* has[t]: tensor t's gradient slot already holds a contribution. */
    unsigned char has_stack[256], *has = m->ntensors <= 256 ? has_stack : calloc((size_t)m->ntensors, 1);
    if (!has) return et_set_error(ET_ERR_NOMEM, "out of memory");
    memset(has, 0, (size_t)m->ntensors);
    has[T] = 1;
    for (int i = m->nnodes - 1; i >= 0 && !st; i--) {
        et_node *nd = &m->nodes[i];
        et_layer *L = &nd->layer;
        const et_layer_ops *ops = et_layer_table[L->type];
        if (m->tensors[nd->out].grad_slot < 0) continue; /* nothing upstream learns */
        if (nd->relu_ep_fused && m->tensors[nd->in].grad_slot == m->tensors[nd->out].grad_slot) {
            has[nd->in] = 1; /* the consumer's EP already applied this relu's mask */
            continue;
        }
        const float *x = m->tensors[nd->in].val, *y = m->tensors[nd->out].val;
        float *dyw = m->slots[m->tensors[nd->out].grad_slot];
        if (m->policy) {
            t0 = now_seconds();
            if ((st = et_precision_error(m, i, dyw, et_shape_numel(L->out) * n))) break;
            add_phase(m, ET_PHASE_PRECISION, t0);
        }
        if (m->last_train && et_traffic_sampling(m)) {
            t0 = now_seconds();
            et_traffic_error(m, i, dyw, n);
            add_phase(m, ET_PHASE_TRAFFIC, t0);
        }
        const float *dy = dyw;
        const int64_t nin = et_shape_numel(L->in) * n;
        c.sp = et_sparsity_node(m, i, NULL, -1.0f, n, m->last_train);
        t0 = now_seconds();
        if (ops->wg && !L->skip_wg) {
            st = ops->wg(L, &c, x, dy);
            add_seconds(m, i, ET_WG, t0);
        }
        t0 = now_seconds();
        int ran_ep = 0;
        int ins[2] = {nd->in, nd->in2};
        for (int q = 0; q < 2 && !st; q++) {
            int t = ins[q];
            if (t < 0 || m->tensors[t].grad_slot < 0) continue;
            float *g = m->slots[m->tensors[t].grad_slot];
            float *dst = has[t] ? m->tmp : g;
            if (L->type == ET_L_ADD) memcpy(dst, dy, sizeof(float) * (size_t)nin);
            else {
                c.relu_in = nd->ep_relu_in;
                m->ep_dx = dst;
                st = ops->ep(L, &c, x, y, dy, dst);
                m->ep_dx = NULL;
                c.relu_in = 0;
            }
            if (!st && has[t])
                for (int64_t e = 0; e < nin; e++) g[e] += dst[e];
            has[t] = 1;
            ran_ep = 1;
        }
        if (ran_ep) add_seconds(m, i, ET_EP, t0);
    }
    if (has != has_stack) free(has);
    t0 = now_seconds();
    if (!st) st = et_hwlink_step_done(m);
    add_phase(m, ET_PHASE_HW, t0);
    return st;
}

/* The optimizer steps, element by element. Constants live in locals and the
 * arrays are restrict so the loops vectorise (the values are the same as the
 * scalar loop's: no contraction into FMA, one rounding per operation; the
 * AVX-512 copies in model_avx512.c do the same operations in the same order).
 * A pruning mask mk (NULL: none) keeps pruned weights and their state as they
 * are: every value is computed and the store selects, which also vectorises.
 * Blocks of OPT_BLOCK elements are split over the threads. */
#define OPT_BLOCK 8192
static void sgd_block(float *restrict w, const float *restrict g, float *restrict v, const uint8_t *restrict mk,
                      int64_t n, float lr, float mu, float wd, int nesterov) {
#if defined(__x86_64__) || defined(_M_X64)
    if (et_cpu_isa() >= ET_ISA_AVX512) {
        et_sgd_avx512(w, g, v, mk, n, lr, mu, wd, nesterov);
        return;
    }
#endif
    if (!v) {
        for (int64_t e = 0; e < n; e++) {
            float wn = w[e] - lr * (g[e] + wd * w[e]);
            w[e] = !mk || mk[e] ? wn : w[e];
        }
    } else {
        for (int64_t e = 0; e < n; e++) {
            float d = g[e] + wd * w[e];
            float vn = mu * v[e] + d;
            float wn = w[e] - lr * (nesterov ? d + mu * vn : vn);
            int keep = !mk || mk[e];
            v[e] = keep ? vn : v[e];
            w[e] = keep ? wn : w[e];
        }
    }
}

static void sgd_update(float *w, const float *g, float *v, const uint8_t *mk, int64_t n, float lr, float mu, float wd,
                       int nesterov) {
    const int64_t nb = (n + OPT_BLOCK - 1) / OPT_BLOCK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t e0 = b * OPT_BLOCK, len = n - e0 < OPT_BLOCK ? n - e0 : OPT_BLOCK;
        sgd_block(w + e0, g + e0, v ? v + e0 : NULL, mk ? mk + e0 : NULL, len, lr, mu, wd, nesterov);
    }
}

static void adam_block(float *restrict w, const float *restrict g, float *restrict v, float *restrict s,
                       const uint8_t *restrict mk, int64_t n, float step_size, float bc2s, float b1, float b2,
                       float eps, float wd) {
#if defined(__x86_64__) || defined(_M_X64)
    if (et_cpu_isa() >= ET_ISA_AVX512) {
        et_adam_avx512(w, g, v, s, mk, n, step_size, bc2s, b1, b2, eps, wd);
        return;
    }
#endif
    for (int64_t e = 0; e < n; e++) {
        float d = g[e] + wd * w[e];
        float vn = b1 * v[e] + (1.0f - b1) * d;
        float sn = b2 * s[e] + (1.0f - b2) * d * d;
        float wn = w[e] - step_size * vn / (sqrtf(sn) / bc2s + eps);
        int keep = !mk || mk[e];
        v[e] = keep ? vn : v[e];
        s[e] = keep ? sn : s[e];
        w[e] = keep ? wn : w[e];
    }
}

static void adam_update(float *w, const float *g, float *v, float *s, const uint8_t *mk, int64_t n,
                        float step_size, float bc2s, const et_optim *o) {
    const int64_t nb = (n + OPT_BLOCK - 1) / OPT_BLOCK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t e0 = b * OPT_BLOCK, len = n - e0 < OPT_BLOCK ? n - e0 : OPT_BLOCK;
        adam_block(w + e0, g + e0, v + e0, s + e0, mk ? mk + e0 : NULL, len, step_size, bc2s, o->beta1, o->beta2,
                   o->eps, o->weight_decay);
    }
}

et_status et_model_update(et_model *m, float lr) {
    et_status st = need_plan(m);
    if (st) return st;
    double t0 = now_seconds();
    if (m->policy && (st = et_precision_grads(m))) return st;
    add_phase(m, ET_PHASE_PRECISION, t0);
    if (et_traffic_sampling(m)) {
        t0 = now_seconds();
        et_traffic_params(m);
        add_phase(m, ET_PHASE_TRAFFIC, t0);
    }
    t0 = now_seconds();
    const et_optim *o = &m->optim;
    const int64_t t = m->step + 1;
    const float bc1 = 1.0f - powf(o->beta1, (float)t), bc2 = 1.0f - powf(o->beta2, (float)t);
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        if (l->skip_wg) continue;
        for (int q = 0; q < l->nparams; q++) {
            et_param *p = &l->params[q];
            if (!p->trainable) continue;
            float *w = p->data, *g = p->grad, *v = p->opt[0], *s = p->opt[1];
            const uint8_t *mk = p->mask; /* pruned weights are never updated */
            const int64_t n = p->n;
            if (o->kind == ET_OPT_SGD)
                sgd_update(w, g, v, mk, n, lr, o->momentum, o->weight_decay, o->nesterov);
            else
                adam_update(w, g, v, s, mk, n, lr / bc1, sqrtf(bc2), o);
        }
    }
    m->step++;
    add_phase(m, ET_PHASE_UPDATE, t0);
    t0 = now_seconds();
    st = m->policy ? et_precision_master(m) : ET_OK;
    add_phase(m, ET_PHASE_PRECISION, t0);
    return st;
}

et_status et_model_train_step(et_model *m, const uint8_t *labels, int n, float lr, float *loss) {
    et_status st = et_model_forward(m, n, 1, NULL);
    if (!st) st = et_model_backward(m, labels, loss, NULL);
    if (!st) st = et_model_update(m, lr);
    return st;
}

et_status et_model_evaluate(et_model *m, const et_dataset *ds, int64_t limit, double *accuracy,
                            double *loss) {
    et_status st = need_plan(m);
    if (st) return st;
    int64_t total = limit < 0 || limit > ds->n ? ds->n : limit, right = 0;
    double lsum = 0;
    const int k = et_model_num_classes(m);
    int64_t idx[4096];
    int bs = m->batch_cap < 4096 ? m->batch_cap : 4096;
    for (int64_t s = 0; s < total; s += bs) {
        int n = (int)(total - s < bs ? total - s : bs);
        for (int i = 0; i < n; i++) idx[i] = s + i;
        const float *logits;
        if ((st = et_model_set_input_u8(m, ds, idx, n)) || (st = et_model_forward(m, n, 0, &logits))) return st;
        for (int i = 0; i < n; i++) {
            const float *z = logits + (int64_t)i * k;
            int arg = 0;
            float mx = z[0];
            for (int j = 1; j < k; j++)
                if (z[j] > mx) mx = z[j], arg = j;
            uint8_t lab = ds->labels[s + i];
            right += arg == lab;
            double sum = 0;
            for (int j = 0; j < k; j++) sum += exp((double)z[j] - mx);
            lsum += mx + log(sum) - (lab < k ? z[lab] : 0);
        }
    }
    if (accuracy) *accuracy = total ? (double)right / (double)total : 0.0;
    if (loss) *loss = total ? lsum / (double)total : 0.0;
    return ET_OK;
}

const et_counters *et_model_counters(const et_model *m) { return &m->eng.total; }
int et_model_num_nodes(const et_model *m) { return m->nnodes; }

void et_model_node_info(const et_model *m, int i, const char **name, const char **kind,
                        const et_counters **counters) {
    const et_layer *l = &m->nodes[i].layer;
    if (name) *name = l->prefix;
    if (kind) *kind = et_layer_table[l->type]->keyword;
    if (counters) *counters = m->layer_counters ? &m->layer_counters[i] : NULL;
}

void et_model_reset_counters(et_model *m) {
    et_engine_reset(&m->eng);
    memset(m->phase_seconds, 0, sizeof m->phase_seconds);
    et_model_reset_spec_stats(m);
}
et_engine *et_model_engine(et_model *m) { return &m->eng; }

float et_lr_step(float base, int epoch, int step_size, float gamma) {
    return step_size > 0 ? base * powf(gamma, (float)(epoch / step_size)) : base;
}

float et_lr_cosine(float base, int epoch, int t_max, float eta_min) {
    if (t_max <= 0) return base;
    return eta_min + (base - eta_min) * (1.0f + cosf(3.14159265358979f * (float)epoch / (float)t_max)) / 2.0f;
}
