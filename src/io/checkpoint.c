/* Checkpoints: safetensors files with PyTorch state_dict names and layouts
 * (conv weight OIHW, linear [out, in], bn weight/bias/running_mean/
 * running_var/num_batches_tracked). Optimizer state is stored as
 * "optimizer.<param>.momentum_buffer" / ".exp_avg" / ".exp_avg_sq" and the
 * step counter and optimizer settings in the metadata, so that a resumed run
 * continues bit-identically. With pruning on, the weight masks go with the
 * optimizer state as "pruning.<weight>.mask" (U8, the weight's shape, 1 kept,
 * 0 pruned) and the schedule as the "pruning" metadata entry. */
#include "nn/model.h"
#include "sparsity/prune.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *opt_suffix(const et_optim *o, int k) {
    if (o->kind == ET_OPT_ADAM) return k == 0 ? "exp_avg" : "exp_avg_sq";
    return "momentum_buffer";
}

et_status et_model_save(const et_model *m, const char *path, int with_optimizer) {
    if (!m->planned) return et_set_error(ET_ERR_INVALID, "model is not planned yet");
    int cap = 0;
    for (int i = 0; i < m->nnodes; i++) cap += 4 * m->nodes[i].layer.nparams + 1;
    et_st_tensor *t = calloc((size_t)cap, sizeof *t);
    char (*names)[128] = calloc((size_t)cap, sizeof *names);
    int64_t *nbt = calloc((size_t)m->nnodes + 1, sizeof *nbt);
    if (!t || !names || !nbt) {
        free(t), free(names), free(nbt);
        return et_set_error(ET_ERR_NOMEM, "out of memory");
    }
    int n = 0;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        for (int p = 0; p < l->nparams; p++) {
            const et_param *pp = &l->params[p];
            et_st_tensor *e = &t[n++];
            e->name = pp->name, e->dtype = ET_F32, e->ndim = pp->ndim;
            memcpy(e->shape, pp->shape, sizeof(int64_t) * (size_t)pp->ndim);
            e->data = pp->data, e->nbytes = (size_t)pp->n * sizeof(float);
        }
        if (l->type == ET_L_BN) {
            nbt[i] = l->num_batches_tracked;
            snprintf(names[n], sizeof names[n], "%s.num_batches_tracked", l->prefix);
            et_st_tensor *e = &t[n];
            e->name = names[n++], e->dtype = ET_I64, e->ndim = 0, e->data = &nbt[i], e->nbytes = 8;
        }
    }
    int nopt = 0;
    if (with_optimizer)
        for (int i = 0; i < m->nnodes; i++) {
            const et_layer *l = &m->nodes[i].layer;
            for (int p = 0; p < l->nparams; p++)
                for (int k = 0; k < 2; k++) {
                    const et_param *pp = &l->params[p];
                    if (!pp->opt[k]) continue;
                    snprintf(names[n], sizeof names[n], "optimizer.%s.%s", pp->name, opt_suffix(&m->optim, k));
                    et_st_tensor *e = &t[n];
                    e->name = names[n++], e->dtype = ET_F32, e->ndim = pp->ndim;
                    memcpy(e->shape, pp->shape, sizeof(int64_t) * (size_t)pp->ndim);
                    e->data = pp->opt[k], e->nbytes = (size_t)pp->n * sizeof(float);
                    nopt++;
                }
            const et_param *w = &l->params[0];
            if (l->nparams && w->mask) {
                snprintf(names[n], sizeof names[n], "pruning.%s.mask", w->name);
                et_st_tensor *e = &t[n];
                e->name = names[n++], e->dtype = ET_U8, e->ndim = w->ndim;
                memcpy(e->shape, w->shape, sizeof(int64_t) * (size_t)w->ndim);
                e->data = w->mask, e->nbytes = (size_t)w->n;
            }
        }
    char step[32], seed[32], kind[16];
    snprintf(step, sizeof step, "%" PRId64, m->step);
    snprintf(seed, sizeof seed, "%" PRIu64, m->seed);
    snprintf(kind, sizeof kind, "%s", m->optim.kind == ET_OPT_ADAM ? "adam" : "sgd");
    char prune[160] = "";
    const et_prune_cfg *pc = et_model_pruning(m);
    if (pc)
        snprintf(prune, sizeof prune, "target=%.17g every=%" PRId64 " start=%" PRId64 " end=%" PRId64, pc->target,
                 pc->every, pc->start, pc->end);
    const char *meta[] = {"format", "edgetrain-1", "model", m->name, "step", step, "seed", seed,
                          "optimizer", with_optimizer ? kind : "none", "spec", et_model_spec_text(m),
                          "pruning", prune};
    et_status st = et_st_write(path, t, n, meta, pc && with_optimizer ? 7 : 6);
    free(t), free(names), free(nbt);
    (void)nopt;
    return st;
}

static et_status load_f32(const et_st_tensor *e, const char *name, int ndim, const int64_t *shape,
                          float *dst, int64_t n) {
    int ok = e->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = e->shape[d] == shape[d];
    if (!ok) {
        char want[96] = "", got[96] = "";
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? "x" : "", shape[d]);
        for (int d = 0; d < e->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, d ? "x" : "", e->shape[d]);
        return et_set_error(ET_ERR_SHAPE, "tensor %s has shape [%s], the model needs [%s]", name, got, want);
    }
    if (e->dtype == ET_F32) {
        memcpy(dst, e->data, (size_t)n * sizeof(float));
    } else if (e->dtype == ET_F64) {
        const unsigned char *b = e->data;
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, b + 8 * i, 8);
            dst[i] = (float)v;
        }
    } else {
        return et_set_error(ET_ERR_FORMAT, "tensor %s: dtype %s, expected F32", name, et_dtype_name(e->dtype));
    }
    return ET_OK;
}

static int model_has(const et_model *m, const char *name) {
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        for (int p = 0; p < l->nparams; p++)
            if (!strcmp(l->params[p].name, name)) return 1;
        if (l->type == ET_L_BN) {
            size_t k = strlen(l->prefix);
            if (!strncmp(name, l->prefix, k) && !strcmp(name + k, ".num_batches_tracked")) return 1;
        }
    }
    return 0;
}

/* Node whose conv/linear weight `nm` is in "pruning.<weight>.mask", or -1. */
static int mask_node(const et_model *m, const char *nm) {
    size_t len = strlen(nm);
    if (strncmp(nm, "pruning.", 8) || len < 13 || strcmp(nm + len - 5, ".mask")) return -1;
    for (int i = 0; i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (l->type != ET_L_CONV && l->type != ET_L_LINEAR) continue;
        const char *w = l->params[0].name;
        if (strlen(w) == len - 13 && !strncmp(nm + 8, w, len - 13)) return i;
    }
    return -1;
}

et_status et_model_load(et_model *m, const char *path, int with_optimizer) {
    if (!m->planned) return et_set_error(ET_ERR_INVALID, "model is not planned yet");
    et_safetensors *st;
    et_status s = et_st_open(path, &st);
    if (s) return s;
    for (int i = 0; i < m->nnodes && !s; i++) {
        et_layer *l = &m->nodes[i].layer;
        for (int p = 0; p < l->nparams && !s; p++) {
            et_param *pp = &l->params[p];
            const et_st_tensor *e = et_st_find(st, pp->name);
            if (!e) s = et_set_error(ET_ERR_FORMAT, "%s: missing tensor %s", path, pp->name);
            else s = load_f32(e, pp->name, pp->ndim, pp->shape, pp->data, pp->n);
        }
        if (!s && l->type == ET_L_BN) {
            char nm[128];
            snprintf(nm, sizeof nm, "%s.num_batches_tracked", l->prefix);
            const et_st_tensor *e = et_st_find(st, nm);
            if (e) { /* optional, as PyTorch tolerates its absence for old files */
                    if (e->dtype != ET_I64 || e->nbytes != 8)
                    s = et_set_error(ET_ERR_FORMAT, "%s: %s must be one I64", path, nm);
                else memcpy(&l->num_batches_tracked, e->data, 8);
            }
        }
    }
    for (int i = 0; i < et_st_count(st) && !s; i++) {
        const et_st_tensor *e = et_st_get(st, i);
        const char *nm = e->name;
        if (!strncmp(nm, "pruning.", 8)) { /* a weight mask: of a conv/linear weight, U8, its shape */
            int node = mask_node(m, nm);
            if (node < 0) {
                s = et_set_error(ET_ERR_FORMAT, "%s: unexpected tensor %s for model %s", path, nm, m->name);
                break;
            }
            const et_param *w = &m->nodes[node].layer.params[0];
            int ok = e->dtype == ET_U8 && e->ndim == w->ndim;
            for (int d = 0; ok && d < w->ndim; d++) ok = e->shape[d] == w->shape[d];
            if (!ok) s = et_set_error(ET_ERR_FORMAT, "%s: %s must be U8 of the shape of %s", path, nm, w->name);
        } else if (strncmp(nm, "optimizer.", 10) && !model_has(m, nm)) {
            s = et_set_error(ET_ERR_FORMAT, "%s: unexpected tensor %s for model %s", path, nm, m->name);
        }
    }
    if (!s && with_optimizer) {
        const char *kind = et_st_meta(st, "optimizer");
        const char *want = m->optim.kind == ET_OPT_ADAM ? "adam" : "sgd";
        const char *step = et_st_meta(st, "step");
        if (!kind || strcmp(kind, want))
            s = et_set_error(ET_ERR_FORMAT, "%s: holds optimizer state '%s', this run uses %s", path,
                             kind ? kind : "none", want);
        for (int i = 0; i < m->nnodes && !s; i++) {
            et_layer *l = &m->nodes[i].layer;
            for (int p = 0; p < l->nparams && !s; p++)
                for (int k = 0; k < 2 && !s; k++) {
                    et_param *pp = &l->params[p];
                    if (!pp->opt[k]) continue;
                    char nm[160];
                    snprintf(nm, sizeof nm, "optimizer.%s.%s", pp->name, opt_suffix(&m->optim, k));
                    const et_st_tensor *e = et_st_find(st, nm);
                    if (!e) s = et_set_error(ET_ERR_FORMAT, "%s: missing optimizer tensor %s", path, nm);
                    else s = load_f32(e, nm, pp->ndim, pp->shape, pp->opt[k], pp->n);
                }
        }
        if (!s) {
            char *end = NULL;
            long long v = step ? strtoll(step, &end, 10) : -1;
            if (!step || *end || v < 0) s = et_set_error(ET_ERR_FORMAT, "%s: no valid step counter", path);
            else m->step = v;
            const char *seed = et_st_meta(st, "seed");
            if (!s && seed) m->seed = strtoull(seed, NULL, 10);
        }
        /* pruning masks (after the weights and optimizer state they zero);
         * a checkpoint without them starts with nothing pruned */
        for (int i = 0; i < m->nnodes && !s && m->prune; i++) {
            et_param *w = &m->nodes[i].layer.params[0];
            if (!w->mask) continue;
            char nm[160];
            snprintf(nm, sizeof nm, "pruning.%s.mask", w->name);
            const et_st_tensor *e = et_st_find(st, nm);
            s = et_prune_load_mask(m, i, e ? e->data : NULL, w->n);
            if (s) s = et_set_error(s, "%s: %s", path, et_last_error());
        }
    }
    et_st_close(st);
    m->wq_step = -1; /* weights changed: the rounded copies are stale */
    return s;
}
