/* Dynamic weight pruning (src/sparsity/prune.c, docs/sparsity.md "Pruning"):
 * the schedule against hand-computed values; the criterion against a sort of
 * the weights done here; the pruned count per layer against hand-computed
 * round(F * n); pruned weights and their optimizer state stay exactly zero;
 * FF/EP/WG with pruned weights against references computed here (et_sgemm
 * and plain loops on the zeroed weights) and executed-MAC counts against
 * element-by-element counts and et_sgemm_sparse_ref; --resume with pruning
 * is bit-identical; bad options give one error line and a non-zero exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/cli_harness.h"

#include "edgetrain.h"
#include "core/rng.h"
#include "kernels/spgemm.h"
#include "nn/model.h"
#include "util/layer_harness.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* 4 weight layers of 54, 432, 2048 and 160 weights */
#define SPEC                                                                                                          \
    "input 1 8 8\nconv 6 k=3 p=1\nrelu\nmaxpool k=2\nconv 8 k=3 p=1\nrelu\nflatten\nlinear 16\nrelu\nlinear 10\n"
static const int weight_nodes[4] = {0, 3, 6, 8};
static const int64_t weight_n[4] = {54, 432, 2048, 160};

/* ----------------------------------------------------------- schedule */

static void test_schedule(void **state) {
    (void)state;
    et_prune_cfg c = {0.5, 100, 10, 110};
    /* s_t = 0.5 * (1 - (1 - (t - 10) / 100)^3), by hand */
    assert_true(et_prune_fraction(&c, 0) == 0.0);
    assert_true(et_prune_fraction(&c, 9) == 0.0);
    assert_true(et_prune_fraction(&c, 10) == 0.0);
    assert_true(fabs(et_prune_fraction(&c, 35) - 0.2890625) < 1e-15); /* 0.5 * (1 - 0.75^3) */
    assert_true(fabs(et_prune_fraction(&c, 60) - 0.4375) < 1e-15);    /* 0.5 * (1 - 0.5^3) */
    assert_true(fabs(et_prune_fraction(&c, 85) - 0.4921875) < 1e-15); /* 0.5 * (1 - 0.25^3) */
    assert_true(fabs(et_prune_fraction(&c, 20) - 0.5 * (1 - 0.729)) < 1e-15);
    assert_true(et_prune_fraction(&c, 110) == 0.5);
    assert_true(et_prune_fraction(&c, 100000) == 0.5);
    et_prune_cfg one = {0.9, 1, 5, 5}; /* end <= start: one shot at start */
    assert_true(et_prune_fraction(&one, 4) == 0.0);
    assert_true(et_prune_fraction(&one, 5) == 0.9);
    assert_true(et_prune_fraction(&one, 6) == 0.9);
    /* the schedule never decreases */
    for (int64_t t = 1; t < 200; t++) assert_true(et_prune_fraction(&c, t) >= et_prune_fraction(&c, t - 1));

    et_model *m;
    assert_int_equal(et_model_parse(SPEC, "s", &m), ET_OK);
    et_prune_cfg bad[] = {{1.0, 1, 0, 0}, {1.5, 1, 0, 0}, {-0.1, 1, 0, 0}, {NAN, 1, 0, 0}, {0.5, 0, 0, 0}, {0.5, 1, -1, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(et_model_set_pruning(m, &bad[i]), ET_ERR_INVALID);
    assert_null(et_model_pruning(m));
    et_model_free(m);
}

/* ----------------------------------------------------- model-level runs */

static et_model *make_model(const et_prune_cfg *pc, const char *precision, et_optim_kind kind) {
    et_model *m;
    assert_int_equal(et_model_parse(SPEC, "p", &m), ET_OK);
    if (precision) assert_int_equal(et_model_set_precision(m, precision), ET_OK);
    if (pc) assert_int_equal(et_model_set_pruning(m, pc), ET_OK);
    et_optim o = et_optim_default(kind);
    if (kind == ET_OPT_SGD) o.momentum = 0.9f, o.weight_decay = 1e-3f;
    assert_int_equal(et_model_plan(m, 8, &o), ET_OK);
    assert_int_equal(et_model_init_he(m, 5), ET_OK);
    return m;
}

/* Step t's batch: deterministic inputs and labels. */
static void feed(et_model *m, int64_t t, uint8_t *labels) {
    lh_fill(et_model_input(m), 8 * 64, 1000 + (uint64_t)t, 0.0f, 1.0f);
    for (int i = 0; i < 8; i++) labels[i] = (uint8_t)((t * 3 + i) % 10);
}

static et_param *wparam(et_model *m, int k) { return &m->nodes[weight_nodes[k]].layer.params[0]; }

typedef struct ref_key {
    float mag;
    int64_t idx;
} ref_key;

static int cmp_ref(const void *a, const void *b) {
    const ref_key *x = a, *y = b;
    if (x->mag != y->mag) return x->mag < y->mag ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* The mask the criterion must give: prev plus the r smallest |w| among the
 * kept weights of w (ties by index), by sorting. */
static void reference_mask(const float *w, const uint8_t *prev, int64_t n, int64_t r, uint8_t *out) {
    ref_key *keys = malloc(sizeof *keys * (size_t)n);
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++)
        if (prev[i]) keys[cnt].mag = fabsf(w[i]), keys[cnt++].idx = i;
    qsort(keys, (size_t)cnt, sizeof *keys, cmp_ref);
    memcpy(out, prev, (size_t)n);
    for (int64_t i = 0; i < r && i < cnt; i++) out[keys[i].idx] = 0;
    free(keys);
}

static int64_t zeros_u8(const uint8_t *x, int64_t n) {
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += x[i] == 0;
    return z;
}

/* Trains `steps` steps and checks after every one: masks only grow, the newly
 * pruned set is the reference's, pruned master weights, rounded copies and
 * optimizer state are exactly 0, and kept weights do move. Returns the model. */
static et_model *train_checked(const et_prune_cfg *pc, const char *precision, et_optim_kind kind, int steps) {
    et_model *m = make_model(pc, precision, kind);
    uint8_t labels[8], *prev[4], *want[4];
    float *before[4];
    for (int k = 0; k < 4; k++) {
        assert_int_equal(wparam(m, k)->n, weight_n[k]);
        assert_non_null(wparam(m, k)->mask);
        prev[k] = malloc((size_t)weight_n[k]), want[k] = malloc((size_t)weight_n[k]);
        before[k] = malloc(sizeof(float) * (size_t)weight_n[k]);
    }
    int64_t moved = 0;
    for (int t = 0; t < steps; t++) {
        assert_int_equal(et_model_step(m), t);
        for (int k = 0; k < 4; k++) {
            et_param *w = wparam(m, k);
            memcpy(prev[k], w->mask, (size_t)w->n);
            memcpy(before[k], w->data, sizeof(float) * (size_t)w->n);
            /* what step t must prune: an update step of the schedule raises the count to round(s_t * n) */
            int due = t >= pc->start && ((t - pc->start) % pc->every == 0 || t >= pc->end);
            int64_t k_t = (int64_t)floor(et_prune_fraction(pc, t) * (double)w->n + 0.5);
            int64_t r = due && k_t > zeros_u8(prev[k], w->n) ? k_t - zeros_u8(prev[k], w->n) : 0;
            reference_mask(w->data, prev[k], w->n, r, want[k]);
        }
        feed(m, t, labels);
        float loss;
        assert_int_equal(et_model_train_step(m, labels, 8, 0.05f, &loss), ET_OK);
        assert_true(isfinite(loss));
        for (int k = 0; k < 4; k++) {
            et_param *w = wparam(m, k);
            assert_memory_equal(w->mask, want[k], (size_t)w->n);
            for (int64_t e = 0; e < w->n; e++) {
                if (w->mask[e]) {
                    moved += w->data[e] != before[k][e];
                    continue;
                }
                assert_true(w->data[e] == 0.0f);
                assert_true(w->use[e] == 0.0f);
                assert_true(w->grad[e] == 0.0f);
                for (int q = 0; q < 2; q++)
                    if (w->opt[q]) assert_true(w->opt[q][e] == 0.0f);
            }
        }
    }
    assert_true(moved > 0); /* the check above would see an update */
    for (int k = 0; k < 4; k++) free(prev[k]), free(want[k]), free(before[k]);
    return m;
}

static void check_counts(et_model *m, const int64_t want[4]) {
    for (int k = 0; k < 4; k++) {
        et_param *w = wparam(m, k);
        et_prune_stats st;
        assert_int_equal(et_model_prune_stats(m, weight_nodes[k], &st), 1);
        assert_int_equal(st.weights, weight_n[k]);
        assert_int_equal(st.pruned, want[k]);
        assert_int_equal(zeros_u8(w->mask, w->n), want[k]);
        assert_true(st.threshold > 0 && st.updates > 0);
        assert_true(st.mean_density > 0 && st.mean_density < 1);
    }
    assert_int_equal(et_model_prune_stats(m, 1, &(et_prune_stats){0}), 0); /* relu: nothing */
}

static void test_target_reached(void **state) {
    (void)state;
    /* round(F * n) by hand: 0.5 -> 27, 216, 1024, 80; 0.9 -> 48.6, 388.8, 1843.2, 144 */
    const int64_t want50[4] = {27, 216, 1024, 80}, want90[4] = {49, 389, 1843, 144};
    et_prune_cfg c50 = {0.5, 2, 0, 10}, c90 = {0.9, 3, 1, 10};
    et_model *m = train_checked(&c50, NULL, ET_OPT_SGD, 14);
    check_counts(m, want50);
    et_model_free(m);
    m = train_checked(&c90, NULL, ET_OPT_ADAM, 14);
    check_counts(m, want90);
    et_model_free(m);
    /* under a precision policy the rounded copy FF/EP use stays zero too */
    m = train_checked(&c90, "w=int4,g=int8,m=bf16", ET_OPT_SGD, 12);
    check_counts(m, want90);
    et_model_free(m);
    /* between updates the count follows the schedule: at step 5 of c50 (update
     * at step 4, s_4 = 0.5 * (1 - 0.6^3) = 0.392) the linear layer holds
     * round(0.392 * 2048) = 803 */
    m = train_checked(&c50, NULL, ET_OPT_SGD, 5);
    assert_int_equal(zeros_u8(wparam(m, 2)->mask, 2048), 803);
    et_model_free(m);
}

/* Ties go to the lower index: a one-shot prune of weights with many equal
 * magnitudes (of both signs) against the sorted reference. */
static void test_ties(void **state) {
    (void)state;
    et_prune_cfg c = {0.5, 1, 0, 0};
    et_model *m = make_model(&c, NULL, ET_OPT_SGD);
    et_param *w = wparam(m, 2);
    for (int64_t i = 0; i < w->n; i++) w->data[i] = 0.1f * (float)((i * 7) % 5 - 2);
    uint8_t *ones = malloc(2048), *want = malloc(2048), labels[8];
    memset(ones, 1, 2048);
    reference_mask(w->data, ones, 2048, 1024, want);
    feed(m, 0, labels);
    assert_int_equal(et_model_forward(m, 8, 1, NULL), ET_OK);
    assert_memory_equal(w->mask, want, 2048);
    /* the zeros (about 2048/5) all go first, then the lowest-index 0.1s */
    et_prune_stats st;
    et_model_prune_stats(m, 6, &st);
    assert_true(st.threshold == (double)0.1f);
    /* forward again in the same step changes nothing */
    assert_int_equal(et_model_forward(m, 8, 1, NULL), ET_OK);
    assert_memory_equal(w->mask, want, 2048);
    free(ones), free(want);
    et_model_free(m);
}

/* The masks and the selection scratch are in the memory plan. */
static void test_memory_plan(void **state) {
    (void)state;
    et_prune_cfg c = {0.5, 1, 0, 0};
    et_model *a = make_model(NULL, NULL, ET_OPT_SGD), *b = make_model(&c, NULL, ET_OPT_SGD);
    et_memory_plan pa = et_model_memory(a), pb = et_model_memory(b);
    /* one byte per weight, each layer 64-byte aligned: 64 + 448 + 2048 + 192 */
    assert_int_equal(pb.params - pa.params, 2752);
    /* selection keys: 8 bytes per weight of the largest layer */
    assert_int_equal(pb.scratch - pa.scratch, 2048 * 8);
    assert_int_equal(pb.total - pa.total, 2752 + 2048 * 8);
    et_model_free(a), et_model_free(b);
}

/* The processor model sees each layer's kept fraction as its weight density. */
typedef struct dens_ctx {
    int records, bad;
} dens_ctx;

static et_status check_density(void *ctx, const et_hw_op *op) {
    dens_ctx *d = ctx;
    /* one-shot 0.9 at step 0: kept 5 of 54, 43 of 432, 205 of 2048, 16 of 160 (hand-computed) */
    static const double kept[4] = {5.0 / 54, 43.0 / 432, 205.0 / 2048, 16.0 / 160};
    int k = -1;
    for (int i = 0; i < 4; i++)
        if (op->layer == weight_nodes[i]) k = i;
    d->records++;
    if (k < 0 || fabs(op->w_density - kept[k]) > 1e-12) d->bad++;
    return ET_OK;
}

static void test_hw_density(void **state) {
    (void)state;
    et_prune_cfg c = {0.9, 1, 0, 0};
    et_model *m = make_model(&c, NULL, ET_OPT_SGD);
    char path[300];
    snprintf(path, sizeof path, "/tmp/et_prune_trace.%ld", (long)getpid());
    const char *names[16] = {0};
    for (int i = 0; i < et_model_num_nodes(m); i++) et_model_node_info(m, i, &names[i], NULL, NULL);
    et_trace_writer *w;
    assert_int_equal(et_trace_create(path, et_model_num_nodes(m), names, &w), ET_OK);
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, w), ET_OK);
    uint8_t labels[8];
    feed(m, 0, labels);
    assert_int_equal(et_model_train_step(m, labels, 8, 0.05f, NULL), ET_OK);
    assert_int_equal(et_model_attach_hw(m, NULL, NULL, NULL), ET_OK);
    assert_int_equal(et_trace_close(w, 1), ET_OK);
    dens_ctx d = {0, 0};
    int nl;
    char nm[16][80];
    assert_int_equal(et_trace_read(path, &nl, nm, 16, check_density, &d), ET_OK);
    remove(path);
    assert_int_equal(d.records, 4 + 3 + 4); /* FF of 4 layers, EP of 3 (not the first), WG of 4 */
    assert_int_equal(d.bad, 0);
    et_model_free(m);
}

/* ------------------------------------------- FF / EP / WG with a mask */

static double dabs(double x) { return x < 0 ? -x : x; }

static void random_mask(uint8_t *mk, float *w, int64_t n, uint64_t stream) {
    for (int64_t i = 0; i < n; i++) {
        mk[i] = et_rand_uniform(99, stream, (uint64_t)i) >= 0.6f;
        if (!mk[i]) w[i] = 0.0f;
    }
}

/* Zero roughly a third of x so that skip_zeros has activations to skip too. */
static void sparsify(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] < -0.3f) x[i] = 0.0f;
}

static uint64_t count_elem(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                           const uint8_t *mask, int skip) {
    uint64_t c = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (mask && !mask[(int64_t)i * N + j]) continue;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
                float b = tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
                c += !skip || (a != 0.0f && b != 0.0f);
            }
        }
    return c;
}

static void test_linear_stages(void **state) {
    (void)state;
    const int N = 5, IN = 37, OUT = 11;
    et_linear_cfg cfg = {OUT, 1};
    lh h, d;
    assert_int_equal(lh_init(&h, ET_L_LINEAR, &cfg, sizeof cfg, (et_shape){IN, 1, 1, 0}, N), ET_OK);
    assert_int_equal(lh_init(&d, ET_L_LINEAR, &cfg, sizeof cfg, (et_shape){IN, 1, 1, 0}, N), ET_OK);
    uint8_t mk[OUT * IN];
    float *W = h.l.params[0].data;
    random_mask(mk, W, OUT * IN, 77);
    memcpy(d.l.params[0].data, W, sizeof(float) * OUT * IN); /* the dense layer gets the zeroed weights */
    sparsify(h.x, h.nx);
    memcpy(d.x, h.x, sizeof(float) * (size_t)h.nx);
    h.l.params[0].mask = mk;
    assert_int_equal(lh_ff(&h), ET_OK);
    assert_int_equal(lh_ep(&h), ET_OK);
    assert_int_equal(lh_wg(&h), ET_OK);
    assert_int_equal(lh_ff(&d), ET_OK);
    assert_int_equal(lh_ep(&d), ET_OK);
    assert_int_equal(lh_wg(&d), ET_OK);
    /* FF: Y = X W0^T + b with et_sgemm on the zeroed weights, and a double loop */
    float ref[N * OUT];
    et_sgemm(0, 1, N, OUT, IN, 1.0f, h.x, IN, W, IN, 0.0f, ref, OUT);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            float r = ref[n * OUT + o] + h.l.params[1].data[o];
            assert_true(h.y[n * OUT + o] == r);
            double s = h.l.params[1].data[o];
            for (int i = 0; i < IN; i++) s += (double)h.x[n * IN + i] * W[o * IN + i];
            assert_true(dabs(h.y[n * OUT + o] - s) < 1e-4);
        }
    /* EP: dX = dY W0 */
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            double s = 0;
            for (int o = 0; o < OUT; o++) s += (double)h.dy[n * OUT + o] * W[o * IN + i];
            assert_true(dabs(h.dx[n * IN + i] - s) < 1e-4);
            assert_true(h.dx[n * IN + i] == d.dx[n * IN + i]);
        }
    /* WG: only kept weights get a gradient, equal to the dense one */
    for (int e = 0; e < OUT * IN; e++) {
        if (!mk[e]) assert_true(h.l.params[0].grad[e] == 0.0f);
        else assert_true(h.l.params[0].grad[e] == d.l.params[0].grad[e]);
    }
    /* executed MACs: FF and EP skip products with a zero operand, WG computes kept outputs only */
    const et_counters *c = &h.eng.total;
    assert_int_equal(c->macs_executed[ET_FF], count_elem(0, 1, N, OUT, IN, h.x, IN, W, IN, NULL, 1));
    assert_int_equal(c->macs_executed[ET_EP], count_elem(0, 0, N, IN, OUT, h.dy, OUT, W, IN, NULL, 1));
    assert_int_equal(c->macs_executed[ET_WG], (uint64_t)(OUT * IN - zeros_u8(mk, OUT * IN)) * N);
    assert_true(c->macs_executed[ET_FF] < c->macs_dense[ET_FF]);
    assert_int_equal(d.eng.total.macs_executed[ET_FF], d.eng.total.macs_dense[ET_FF]);
    /* and the same numbers from the sparsity interface's reference */
    et_spgemm_stats st;
    float tmp[N * OUT], g[OUT * IN];
    et_sgemm_sparse_ref(0, 1, N, OUT, IN, h.x, IN, W, IN, 0.0f, tmp, OUT, 1, NULL, 0, &st);
    assert_int_equal(st.macs_elem, c->macs_executed[ET_FF]);
    et_sgemm_sparse_ref(1, 0, OUT, IN, N, h.dy, OUT, h.x, IN, 0.0f, g, IN, 0, mk, IN, &st);
    assert_int_equal(st.macs_elem, c->macs_executed[ET_WG]);
    lh_free(&h), lh_free(&d);
}

/* conv FF/EP against direct loops over CNHW tensors with the zeroed weights;
 * WG kept entries against the dense layer's. Padded 3x3 (im2col path) and
 * 1x1 (direct path). */
static void conv_case(int kh, int pad, int stride) {
    const int N = 3, C = 3, H = 7, Wd = 6, CO = 5;
    et_conv_cfg cfg = {CO, kh, kh, stride, stride, pad, pad, 1};
    et_shape in = {C, H, Wd, 1};
    lh h, d;
    assert_int_equal(lh_init(&h, ET_L_CONV, &cfg, sizeof cfg, in, N), ET_OK);
    assert_int_equal(lh_init(&d, ET_L_CONV, &cfg, sizeof cfg, in, N), ET_OK);
    const int64_t nw = h.l.params[0].n;
    uint8_t *mk = malloc((size_t)nw);
    float *W = h.l.params[0].data;
    random_mask(mk, W, nw, 91 + (uint64_t)kh);
    memcpy(d.l.params[0].data, W, sizeof(float) * (size_t)nw);
    sparsify(h.x, h.nx);
    memcpy(d.x, h.x, sizeof(float) * (size_t)h.nx);
    h.l.params[0].mask = mk;
    assert_int_equal(lh_ff(&h), ET_OK);
    assert_int_equal(lh_ep(&h), ET_OK);
    assert_int_equal(lh_wg(&h), ET_OK);
    assert_int_equal(lh_ff(&d), ET_OK);
    assert_int_equal(lh_ep(&d), ET_OK);
    assert_int_equal(lh_wg(&d), ET_OK);
    const int Ho = h.l.out.h, Wo = h.l.out.w;
    double *dx = calloc((size_t)h.nx, sizeof *dx);
    for (int co = 0; co < CO; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = h.l.params[1].data[co];
                    const int64_t yi = (((int64_t)co * N + n) * Ho + oy) * Wo + ox;
                    for (int ci = 0; ci < C; ci++)
                        for (int ky = 0; ky < kh; ky++)
                            for (int kx = 0; kx < kh; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= Wd) continue;
                                const int64_t xi = (((int64_t)ci * N + n) * H + iy) * Wd + ix;
                                const float w = W[((co * C + ci) * kh + ky) * kh + kx];
                                s += (double)w * h.x[xi];
                                dx[xi] += (double)w * h.dy[yi];
                            }
                    assert_true(dabs(h.y[yi] - s) < 1e-4);
                    assert_true(h.y[yi] == d.y[yi]); /* skipping zeros changes no bit */
                }
    for (int64_t i = 0; i < h.nx; i++) assert_true(dabs(h.dx[i] - dx[i]) < 1e-4);
    for (int64_t e = 0; e < nw; e++) {
        if (!mk[e]) assert_true(h.l.params[0].grad[e] == 0.0f);
        else assert_true(h.l.params[0].grad[e] == d.l.params[0].grad[e]);
    }
    const et_counters *c = &h.eng.total;
    const int64_t kept = nw - zeros_u8(mk, nw);
    assert_int_equal(c->macs_executed[ET_WG], (uint64_t)kept * N * Ho * Wo);
    assert_true(c->macs_executed[ET_FF] < c->macs_dense[ET_FF]);
    assert_true(c->macs_executed[ET_EP] < c->macs_dense[ET_EP]);
    free(dx), free(mk);
    lh_free(&h), lh_free(&d);
}

static void test_conv_stages(void **state) {
    (void)state;
    conv_case(3, 1, 1);
    conv_case(3, 0, 2);
    conv_case(1, 0, 1);
}

/* ------------------------------------------------------------ the CLI */




static void test_bad_options(void **state) {
    (void)state;
    const char *bad[] = {
        "--prune-target 1.5", "--prune-target -1", "--prune-target abc", "--prune-target 1",
        "--prune-target ''", "--prune-target 0.5x", "--prune-target 0.5 --prune-every 0",
        "--prune-target 0.5 --prune-every -3", "--prune-every 5", "--prune-start 2",
        "--prune-target 0.5 --prune-start 20 --prune-end 10", "--prune-target 0.5 --prune-end abc",
        "--prune-target",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char a[512], err[2048];
        int lines;
        snprintf(a, sizeof a, "train --model mlp --data fmnist --data-dir %s/none --quiet %s", ch_dir, bad[i]);
        int code = ch_run(a, &lines, err, sizeof err);
        if (code == 0 || code >= 128 || lines != 1) {
            fprintf(stderr, "edgetrain %s: exit %d, %d stderr lines:\n%s\n", a, code, lines, err);
            fail();
        }
    }
}

static int same_tensors(const char *pa, const char *pb) {
    et_safetensors *a, *b;
    if (et_st_open(pa, &a)) return 0;
    if (et_st_open(pb, &b)) return et_st_close(a), 0;
    int same = et_st_count(a) == et_st_count(b);
    for (int i = 0; same && i < et_st_count(a); i++) {
        const et_st_tensor *ta = et_st_get(a, i), *tb = et_st_find(b, ta->name);
        same = tb && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes);
        if (!same) fprintf(stderr, "tensor %s differs\n", ta->name);
    }
    et_st_close(a), et_st_close(b);
    return same;
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

/* Resume with pruning continues bit-identically (masks, weights, optimizer
 * state), at any thread count; eval and --init-from read pruned checkpoints;
 * the JSON summary has the pruning section. */
static void test_resume(void **state) {
    (void)state;
    if (!ch_have_fmnist()) skip();
    char a[2048], p1[600], p2[600], p3[600], p4[600], js[600];
    const char *b = "train --model lenet --data fmnist --train-limit 500 --batch 50 --test-limit 0 --quiet --seed 3 "
                    "--prune-target 0.6 --prune-every 2 --prune-start 1 --prune-end 10";
    snprintf(p1, sizeof p1, "%s/full.st", ch_dir), snprintf(p2, sizeof p2, "%s/half.st", ch_dir);
    snprintf(p3, sizeof p3, "%s/resumed.st", ch_dir), snprintf(p4, sizeof p4, "%s/one.st", ch_dir);
    snprintf(js, sizeof js, "%s/full.json", ch_dir);
    snprintf(a, sizeof a, "%s --steps 14 --threads 2 --save %s --json %s", b, p1, js);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    snprintf(a, sizeof a, "%s --steps 7 --threads 2 --save %s", b, p2);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    snprintf(a, sizeof a, "%s --steps 14 --threads 2 --resume %s --save %s", b, p2, p3);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    assert_true(same_tensors(p1, p3));
    snprintf(a, sizeof a, "%s --steps 14 --threads 1 --save %s", b, p4);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    assert_true(same_tensors(p1, p4));
    /* the half-way checkpoint already holds pruned masks, and they differ from
     * the final ones (so the comparison above covers mask state) */
    et_safetensors *h, *f;
    assert_int_equal(et_st_open(p2, &h), ET_OK);
    assert_int_equal(et_st_open(p1, &f), ET_OK);
    const et_st_tensor *mh = et_st_find(h, "pruning.7.weight.mask"), *mf = et_st_find(f, "pruning.7.weight.mask");
    assert_non_null(mh);
    assert_non_null(mf);
    assert_int_equal(mh->dtype, ET_U8);
    int64_t zh = zeros_u8(mh->data, (int64_t)mh->nbytes), zf = zeros_u8(mf->data, (int64_t)mf->nbytes);
    assert_true(zh > 0 && zh < zf);
    assert_int_equal(zf, (int64_t)floor(0.6 * (double)mf->nbytes + 0.5));
    assert_non_null(et_st_meta(f, "pruning"));
    et_st_close(h), et_st_close(f);
    /* eval and --init-from (with and without pruning) read it */
    snprintf(a, sizeof a, "eval --model lenet --checkpoint %s --data fmnist --test-limit 200", p1);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    snprintf(a, sizeof a, "train --model lenet --data fmnist --train-limit 100 --steps 1 --test-limit 0 --quiet --init-from %s", p1);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    snprintf(a, sizeof a, "%s --steps 2 --init-from %s", b, p1);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    /* summary: every pruned layer at round(0.6 n), executed MACs below dense */
    cJSON *j = read_json(js), *pr = cJSON_GetObjectItem(j, "pruning"), *l;
    assert_non_null(pr);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pr, "layers")), 4);
    cJSON_ArrayForEach(l, cJSON_GetObjectItem(pr, "layers")) {
        double n = cJSON_GetObjectItem(l, "weights")->valuedouble;
        assert_true(cJSON_GetObjectItem(l, "pruned")->valuedouble == floor(0.6 * n + 0.5));
        assert_true(cJSON_GetObjectItem(l, "threshold")->valuedouble > 0);
    }
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(pr, "schedule"), "end")->valuedouble == 10);
    for (int s = 0; s < 3; s++) {
        const char *nm = et_stage_name((et_stage)s);
        double dn = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "macs_dense"), nm)->valuedouble;
        double ex = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "macs_executed"), nm)->valuedouble;
        assert_true(ex < dn);
    }
    cJSON_Delete(j);
}

/* A checkpoint whose mask is not 0/1, or names a weight the model lacks, is
 * refused with one clear line. */
static void test_bad_masks(void **state) {
    (void)state;
    if (!ch_have_fmnist()) skip();
    char a[2048], p[600], q[600], r[600];
    const char *b = "train --model lenet --data fmnist --train-limit 100 --batch 50 --test-limit 0 --quiet "
                    "--prune-target 0.5 --prune-every 1 --prune-end 1";
    snprintf(p, sizeof p, "%s/m.st", ch_dir), snprintf(q, sizeof q, "%s/m2.st", ch_dir), snprintf(r, sizeof r, "%s/m3.st", ch_dir);
    snprintf(a, sizeof a, "%s --steps 2 --save %s", b, p);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    et_safetensors *st;
    assert_int_equal(et_st_open(p, &st), ET_OK);
    int n = et_st_count(st);
    et_st_tensor *t = calloc((size_t)n + 1, sizeof *t);
    uint8_t *bad = NULL;
    for (int i = 0; i < n; i++) {
        t[i] = *et_st_get(st, i);
        if (!strcmp(t[i].name, "pruning.0.weight.mask")) {
            bad = malloc(t[i].nbytes);
            memcpy(bad, t[i].data, t[i].nbytes);
            bad[3] = 2;
            t[i].data = bad;
        }
    }
    assert_non_null(bad);
    const char *meta[] = {"step", et_st_meta(st, "step"), "optimizer", "sgd", "seed", "1"};
    assert_int_equal(et_st_write(q, t, n, meta, 3), ET_OK);
    t[n] = t[0]; /* one more: a mask of a weight lenet does not have */
    t[n].name = "pruning.99.weight.mask";
    assert_int_equal(et_st_write(r, t, n + 1, meta, 3), ET_OK);
    et_st_close(st);
    free(t), free(bad);
    const char *files[2] = {q, r};
    for (int k = 0; k < 2; k++) {
        int lines;
        char err[1024];
        snprintf(a, sizeof a, "%s --steps 4 --resume %s", b, files[k]);
        int code = ch_run(a, &lines, err, sizeof err);
        if (code == 0 || code >= 128 || lines != 1) {
            fprintf(stderr, "edgetrain %s: exit %d, %d lines:\n%s\n", a, code, lines, err);
            fail();
        }
    }
}

/* --sparsity prune is pruning with the default target (0.5) and the --prune-*
 * schedule; combined with speculate both run, and eval refuses the mode. */
static void test_sparsity_mode(void **state) {
    (void)state;
    if (!ch_have_fmnist()) skip();
    char a[2048], js[600], js2[600];
    snprintf(js, sizeof js, "%s/sp.json", ch_dir), snprintf(js2, sizeof js2, "%s/sp2.json", ch_dir);
    const char *b = "train --model lenet --data fmnist --train-limit 200 --batch 50 --test-limit 0 --quiet "
                    "--prune-every 1 --prune-end 2 --steps 3";
    snprintf(a, sizeof a, "%s --sparsity prune --json %s", b, js);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    snprintf(a, sizeof a, "%s --sparsity speculate,prune --prune-target 0.25 --json %s", b, js2);
    assert_int_equal(ch_run(a, NULL, NULL, 0), 0);
    const char *files[2] = {js, js2};
    const double want[2] = {0.5, 0.25};
    for (int f = 0; f < 2; f++) {
        cJSON *j = read_json(files[f]), *pr = cJSON_GetObjectItem(j, "pruning"), *l;
        assert_non_null(pr);
        assert_true(cJSON_GetObjectItem(pr, "target")->valuedouble == want[f]);
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(pr, "layers")) {
            double n = cJSON_GetObjectItem(l, "weights")->valuedouble;
            assert_true(cJSON_GetObjectItem(l, "pruned")->valuedouble == floor(want[f] * n + 0.5));
        }
        if (f == 1) assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sparsity"), "speculation"));
        cJSON_Delete(j);
    }
}



static int setup(void **state) {
    (void)state;
    return ch_setup("et_prune_test");
}

static int teardown(void **state) {
    (void)state;
    return ch_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),     cmocka_unit_test(test_target_reached), cmocka_unit_test(test_ties),
        cmocka_unit_test(test_memory_plan),  cmocka_unit_test(test_hw_density),     cmocka_unit_test(test_linear_stages),  cmocka_unit_test(test_conv_stages),
        cmocka_unit_test(test_bad_options),  cmocka_unit_test(test_resume),         cmocka_unit_test(test_bad_masks),
        cmocka_unit_test(test_sparsity_mode),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
