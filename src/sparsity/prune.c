/* Dynamic magnitude pruning during training (docs/sparsity.md, "Pruning").
 *
 * Paper 002 (Trainer) trains sparse: weights are pruned dynamically during
 * the training iterations and FF, BP (EP) and WG run only with the unpruned
 * weights. The paper text we have states no schedule or criterion of its
 * own, so this follows the common choice for gradual pruning during training
 * (Zhu & Gupta 2017): per layer, the smallest |w| are pruned, toward a target
 * fraction along a cubic schedule, every `every` steps.
 *
 * No regrowth: a pruned weight is zero, gets no gradient (WG computes only
 * the kept outputs, as in the paper) and no update, so a criterion on the
 * master weights' magnitudes could never bring it back; the masks only grow.
 * Each update therefore picks the r = round(s_t * n) - pruned smallest
 * magnitudes among the kept weights. Ties go to the lower index: the key
 * (|w| bits << 32 | index) is unique, so the selected set is one well-defined
 * set whatever the thread count or selection algorithm.
 *
 * Memory: the masks (one byte per weight) and the selection keys (8 bytes
 * per weight of the largest pruned layer) are part of the memory plan. */
#include "sparsity/prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct prune_layer {
    int64_t pruned;
    double threshold; /* NaN until an update pruned */
    int64_t updates;
    double dens_sum;  /* sum over training steps of the unpruned fraction */
    int64_t dens_n;
} prune_layer;

struct et_prune {
    et_prune_cfg cfg;
    int64_t last_step; /* step whose start was handled last (-1: none) */
    uint64_t *keys;    /* selection scratch (memory plan) */
    prune_layer *layer; /* per node */
};

static int prunable(const et_layer *l) {
    return (l->type == ET_L_CONV || l->type == ET_L_LINEAR) && !l->skip_wg && l->params[0].trainable;
}

double et_prune_fraction(const et_prune_cfg *c, int64_t t) {
    if (t < c->start) return 0.0;
    if (t >= c->end) return c->target;
    double x = 1.0 - (double)(t - c->start) / (double)(c->end - c->start);
    return c->target * (1.0 - x * x * x);
}

/* Weights to prune at fraction s of n: round half up, and at least one
 * weight stays so that no layer is cut off entirely. */
static int64_t target_count(double s, int64_t n) {
    int64_t k = (int64_t)floor(s * (double)n + 0.5);
    if (k > n - 1) k = n - 1;
    return k < 0 ? 0 : k;
}

et_status et_model_set_pruning(et_model *m, const et_prune_cfg *cfg) {
    /* after planning only the schedule may change: the masks are planned */
    if (m->planned && (!m->prune || !cfg)) return et_set_error(ET_ERR_INVALID, "turn pruning on or off before planning the model");
    if (!cfg) {
        et_prune_free(m);
        return ET_OK;
    }
    if (!(cfg->target >= 0.0 && cfg->target < 1.0))
        return et_set_error(ET_ERR_INVALID, "pruning target %g outside [0, 1)", cfg->target);
    if (cfg->every < 1) return et_set_error(ET_ERR_INVALID, "pruning interval must be >= 1 step");
    if (cfg->start < 0 || cfg->end < 0) return et_set_error(ET_ERR_INVALID, "pruning start and end must be >= 0");
    struct et_prune *p = m->prune;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (p) p->layer = calloc((size_t)m->nnodes + 1, sizeof *p->layer);
        if (!p || !p->layer) {
            if (p) free(p->layer);
            free(p);
            return et_set_error(ET_ERR_NOMEM, "out of memory");
        }
        m->prune = p;
    }
    p->cfg = *cfg;
    p->last_step = -1;
    return ET_OK;
}

const et_prune_cfg *et_model_pruning(const et_model *m) { return m->prune ? &m->prune->cfg : NULL; }

void et_prune_free(et_model *m) {
    if (!m->prune) return;
    free(m->prune->layer);
    free(m->prune);
    m->prune = NULL;
}

#define ALIGN_UP(n) (((n) + 63) & ~(size_t)63)

void et_prune_plan_bytes(const et_model *m, size_t *mask_bytes, size_t *scratch_bytes) {
    size_t mb = 0, maxn = 0;
    for (int i = 0; m->prune && i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (!prunable(l)) continue;
        mb += ALIGN_UP((size_t)l->params[0].n);
        if ((size_t)l->params[0].n > maxn) maxn = (size_t)l->params[0].n;
    }
    *mask_bytes = mb;
    *scratch_bytes = ALIGN_UP(maxn * sizeof(uint64_t));
    if (!m->prune) *scratch_bytes = 0;
}

void et_prune_bind(et_model *m, uint8_t *masks, void *scratch) {
    struct et_prune *p = m->prune;
    if (!p) return;
    p->keys = scratch;
    for (int i = 0; i < m->nnodes; i++) {
        et_layer *l = &m->nodes[i].layer;
        if (!prunable(l)) continue;
        l->params[0].mask = masks;
        memset(masks, 1, (size_t)l->params[0].n);
        masks += ALIGN_UP((size_t)l->params[0].n);
        p->layer[i] = (prune_layer){0, NAN, 0, 0.0, 0};
    }
    p->last_step = -1;
}

/* Zeroes weight i of w everywhere training keeps it. */
static void prune_one(et_param *w, int64_t i) {
    w->mask[i] = 0;
    w->data[i] = 0.0f;
    if (w->use != w->data) w->use[i] = 0.0f;
    if (w->grad) w->grad[i] = 0.0f;
    for (int k = 0; k < 2; k++)
        if (w->opt[k]) w->opt[k][i] = 0.0f;
}

static uint64_t key_of(const float *x, int64_t i) {
    uint32_t b;
    memcpy(&b, x + i, sizeof b);
    return (uint64_t)(b & 0x7fffffffu) << 32 | (uint64_t)i; /* |x| bits are monotone in |x| */
}

/* The k-th smallest (0-based) of n distinct keys by quickselect; reorders a. */
static uint64_t qselect(uint64_t *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t t;
#define SWAP(x, y) (t = a[x], a[x] = a[y], a[y] = t)
        if (a[mid] < a[lo]) SWAP(mid, lo);
        if (a[hi] < a[lo]) SWAP(hi, lo);
        if (a[hi] < a[mid]) SWAP(hi, mid);
        const uint64_t piv = a[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i <= j) {
                SWAP(i, j);
                i++, j--;
            }
        }
#undef SWAP
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

/* The k-th smallest (0-based) of n distinct keys; reorders a. One pass
 * counts the keys per bucket of their top 12 bits (|w|'s exponent and top
 * four mantissa bits), the bucket holding the k-th is moved to the front and
 * quickselect finishes there: the same key as quickselect on all n (keys are
 * distinct), in O(n) with a small constant (VGG8's 590k-weight layer: the
 * mask update took about 10 ms per layer with quickselect alone). */
static uint64_t select_kth(uint64_t *a, int64_t n, int64_t k) {
    if (n < 1024) return qselect(a, n, k); /* (tests/test_prune.c reaches both paths) */
    uint32_t h[4096] = {0};
    for (int64_t i = 0; i < n; i++) h[a[i] >> 51]++;
    int b = 0;
    int64_t below = 0;
    while (below + h[b] <= k) below += h[b++];
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if ((int)(a[i] >> 51) == b) a[m++] = a[i];
    return qselect(a, m, k - below);
}

/* Prunes the kept weights with the k - pruned smallest keys. */
static void prune_more(struct et_prune *p, et_param *w, prune_layer *pl, int64_t k) {
    int64_t cnt = 0;
    for (int64_t i = 0; i < w->n; i++)
        if (w->mask[i]) p->keys[cnt++] = key_of(w->data, i);
    const int64_t r = k - pl->pruned;
    if (r <= 0 || r > cnt) return;
    const uint64_t T = select_kth(p->keys, cnt, r - 1);
    int64_t done = 0;
    for (int64_t i = 0; i < w->n; i++)
        if (w->mask[i] && key_of(w->data, i) <= T) prune_one(w, i), done++;
    uint32_t tb = (uint32_t)(T >> 32);
    float thr;
    memcpy(&thr, &tb, sizeof thr);
    pl->pruned += done;
    pl->threshold = thr;
    pl->updates++;
}

void et_prune_step(et_model *m) {
    struct et_prune *p = m->prune;
    if (!p || !m->planned || m->step == p->last_step) return;
    const int64_t t = m->step;
    const et_prune_cfg *c = &p->cfg;
    p->last_step = t;
    /* update steps: start, start + every, ..., and end; after end the count is
     * only checked (it is short only after resuming from a file without masks) */
    const int due = t >= c->start && ((t - c->start) % c->every == 0 || t >= c->end);
    const double s = et_prune_fraction(c, t);
    int changed = 0;
    for (int i = 0; i < m->nnodes; i++) {
        et_param *w = &m->nodes[i].layer.params[0];
        if (!w->mask) continue;
        prune_layer *pl = &p->layer[i];
        if (due) {
            int64_t k = target_count(s, w->n);
            if (k > pl->pruned) prune_more(p, w, pl, k), changed = 1;
        }
        pl->dens_sum += 1.0 - (double)pl->pruned / (double)w->n;
        pl->dens_n++;
    }
    if (changed) m->wq_step = -1; /* the rounded copies must be refreshed */
}

void et_prune_apply_use(et_model *m) {
    if (!m->prune) return;
    for (int i = 0; i < m->nnodes; i++) {
        et_param *w = &m->nodes[i].layer.params[0];
        if (!w->mask || w->use == w->data || !m->prune->layer[i].pruned) continue;
        for (int64_t e = 0; e < w->n; e++)
            if (!w->mask[e]) w->use[e] = 0.0f;
    }
}

et_status et_prune_load_mask(et_model *m, int node, const uint8_t *mask, int64_t n) {
    if (!m->prune || node < 0 || node >= m->nnodes) return et_set_error(ET_ERR_INVALID, "pruning is off");
    et_param *w = &m->nodes[node].layer.params[0];
    if (!w->mask || n != w->n) return et_set_error(ET_ERR_SHAPE, "%s is not pruned or has another size", w->name);
    for (int64_t e = 0; mask && e < n; e++)
        if (mask[e] > 1) return et_set_error(ET_ERR_FORMAT, "pruning mask of %s holds %d (0 or 1 expected)", w->name, mask[e]);
    prune_layer *pl = &m->prune->layer[node];
    memset(w->mask, 1, (size_t)n);
    pl->pruned = 0;
    for (int64_t e = 0; mask && e < n; e++)
        if (!mask[e]) prune_one(w, e), pl->pruned++;
    m->prune->last_step = -1;
    m->wq_step = -1;
    return ET_OK;
}

void et_prune_reset(et_model *m) {
    for (int i = 0; m->prune && i < m->nnodes; i++)
        if (m->nodes[i].layer.params[0].mask) et_prune_load_mask(m, i, NULL, m->nodes[i].layer.params[0].n);
}

int et_model_prune_stats(const et_model *m, int node, et_prune_stats *out) {
    if (!m->prune || !m->planned || node < 0 || node >= m->nnodes || !m->nodes[node].layer.params[0].mask) return 0;
    const prune_layer *pl = &m->prune->layer[node];
    out->weights = m->nodes[node].layer.params[0].n;
    out->pruned = pl->pruned;
    out->threshold = pl->threshold;
    out->updates = pl->updates;
    out->mean_density = pl->dens_n ? pl->dens_sum / (double)pl->dens_n : NAN;
    return 1;
}
