/* Every layer x stage (FF, EP, WG), the loss, whole models, the optimizers,
 * the LR schedules and a PyTorch-written state dict against golden fixtures
 * produced by PyTorch (tests/gen_fixtures.py, see tests/fixtures/README.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "nn/layer_impl.h"
#include "nn/model.h"
#include "util/layer_harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/"

static et_safetensors *open_fix(const char *name) {
    char p[256];
    snprintf(p, sizeof p, FIX "%s.safetensors", name);
    et_safetensors *st = NULL;
    if (et_st_open(p, &st)) {
        fprintf(stderr, "%s: %s\n", p, et_last_error());
        fail();
    }
    return st;
}

static const et_st_tensor *get(et_safetensors *st, const char *name) {
    const et_st_tensor *t = et_st_find(st, name);
    if (!t) {
        fprintf(stderr, "fixture lacks tensor %s\n", name);
        fail();
    }
    return t;
}

static int64_t numel(const et_st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* |got - want| <= atol + rtol*|want| elementwise. */
static void expect_close(const char *what, const float *got, const float *want, int64_t n, double atol,
                         double rtol) {
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= atol + rtol * fabs(want[i]))) {
            fprintf(stderr, "%s[%lld]: got %.8g, PyTorch %.8g\n", what, (long long)i, got[i], want[i]);
            fail();
        }
    }
}

static const char *meta(et_safetensors *st, const char *key) {
    const char *v = et_st_meta(st, key);
    if (!v) {
        fprintf(stderr, "fixture lacks metadata %s\n", key);
        fail();
    }
    return v;
}

static void pair(et_safetensors *st, const char *key, int dflt, int *a, int *b) {
    const char *v = et_st_meta(st, key);
    *a = *b = dflt;
    if (!v) return;
    if (sscanf(v, "%dx%d", a, b) != 2) *b = *a;
}

/* in=N,C,H,W or N,F */
static et_shape parse_in(et_safetensors *st, int *N) {
    int v[4], n = sscanf(meta(st, "in"), "%d,%d,%d,%d", &v[0], &v[1], &v[2], &v[3]);
    *N = v[0];
    if (n == 4) return (et_shape){v[1], v[2], v[3], 1};
    return (et_shape){v[1], 1, 1, 0};
}

/* Copies an NCHW (or [N,F]) fixture tensor into the harness's CNHW layout. */
static void to_layout(const et_st_tensor *t, float *dst, et_shape s, int N) {
    if (s.is_image) lh_nchw_to_cnhw(t->data, dst, N, s.c, (int64_t)s.h * s.w);
    else memcpy(dst, t->data, t->nbytes);
}

static void expect_layout(const char *what, const float *got, et_shape s, int N, const et_st_tensor *want,
                          double tol) {
    int64_t n = numel(want);
    assert_int_equal(n, et_shape_numel(s) * N);
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (s.is_image) lh_cnhw_to_nchw(got, tmp, N, s.c, (int64_t)s.h * s.w);
    else memcpy(tmp, got, sizeof(float) * (size_t)n);
    expect_close(what, tmp, want->data, n, tol, tol);
    free(tmp);
}

static void run_layer_fixture(const char *name) {
    et_safetensors *st = open_fix(name);
    const char *layer = meta(st, "layer");
    int N;
    et_shape in = parse_in(st, &N);
    et_layer cfg;
    memset(&cfg, 0, sizeof cfg);
    et_layer_type type;
    int train = 1;
    if (!strcmp(layer, "conv")) {
        type = ET_L_CONV;
        et_conv_cfg *c = &cfg.cfg.conv;
        c->out = atoi(meta(st, "out"));
        pair(st, "k", 1, &c->kh, &c->kw);
        pair(st, "s", 1, &c->sh, &c->sw);
        pair(st, "p", 0, &c->ph, &c->pw);
        c->bias = atoi(meta(st, "bias"));
    } else if (!strcmp(layer, "linear")) {
        type = ET_L_LINEAR;
        cfg.cfg.linear.out = atoi(meta(st, "out"));
        cfg.cfg.linear.bias = atoi(meta(st, "bias"));
    } else if (!strcmp(layer, "relu")) {
        type = ET_L_RELU;
    } else if (!strcmp(layer, "maxpool") || !strcmp(layer, "avgpool")) {
        type = layer[0] == 'm' ? ET_L_MAXPOOL : ET_L_AVGPOOL;
        et_pool_cfg *c = &cfg.cfg.pool;
        const char *g = et_st_meta(st, "global");
        c->global = g && !strcmp(g, "1");
        if (!c->global) {
            pair(st, "k", 1, &c->kh, &c->kw);
            pair(st, "s", c->kh, &c->sh, &c->sw);
            pair(st, "p", 0, &c->ph, &c->pw);
        }
    } else if (!strcmp(layer, "bn")) {
        type = ET_L_BN;
        cfg.cfg.bn.eps = strtof(meta(st, "eps"), NULL);
        cfg.cfg.bn.momentum = strtof(meta(st, "momentum"), NULL);
        train = !strcmp(meta(st, "mode"), "train");
    } else if (!strcmp(layer, "flatten")) {
        type = ET_L_FLATTEN;
    } else if (!strcmp(layer, "add")) {
        type = ET_L_ADD;
    } else {
        fprintf(stderr, "unknown fixture layer %s\n", layer);
        fail();
        return;
    }
    lh h;
    assert_int_equal(lh_init(&h, type, &cfg.cfg, sizeof cfg.cfg, in, N), ET_OK);
    h.train = train;
    to_layout(get(st, "x"), h.x, in, N);
    if (type == ET_L_ADD) to_layout(get(st, "x2"), h.x2, in, N);
    if (type == ET_L_CONV || type == ET_L_LINEAR) {
        memcpy(h.l.params[0].data, get(st, "weight")->data, get(st, "weight")->nbytes);
        if (h.l.nparams > 1) memcpy(h.l.params[1].data, get(st, "bias")->data, get(st, "bias")->nbytes);
    }
    if (type == ET_L_BN) {
        const char *src[4] = {"weight", "bias", "running_mean_in", "running_var_in"};
        for (int p = 0; p < 4; p++) memcpy(h.l.params[p].data, get(st, src[p])->data, get(st, src[p])->nbytes);
    }
    char what[128];
    assert_int_equal(lh_ff(&h), ET_OK);
    snprintf(what, sizeof what, "%s FF y", name);
    expect_layout(what, h.y, h.l.out, N, get(st, "y"), 2e-5);
    to_layout(get(st, "dy"), h.dy, h.l.out, N);
    assert_int_equal(lh_ep(&h), ET_OK);
    snprintf(what, sizeof what, "%s EP dx", name);
    expect_layout(what, h.dx, in, N, get(st, "dx"), 2e-5);
    if (type == ET_L_ADD) expect_layout(what, h.dx2, in, N, get(st, "dx2"), 0);
    assert_int_equal(lh_wg(&h), ET_OK);
    if (type == ET_L_CONV || type == ET_L_LINEAR || type == ET_L_BN) {
        snprintf(what, sizeof what, "%s WG dweight", name);
        expect_close(what, h.l.params[0].grad, get(st, "dweight")->data, h.l.params[0].n, 2e-5, 2e-5);
        if (h.l.nparams > 1) {
            snprintf(what, sizeof what, "%s WG dbias", name);
            expect_close(what, h.l.params[1].grad, get(st, "dbias")->data, h.l.params[1].n, 2e-5, 2e-5);
        }
    }
    if (type == ET_L_BN) {
        expect_close("bn running_mean", h.l.params[2].data, get(st, "running_mean")->data, in.c, 1e-6, 1e-5);
        expect_close("bn running_var", h.l.params[3].data, get(st, "running_var")->data, in.c, 1e-6, 1e-5);
    }
    lh_free(&h);
    et_st_close(st);
}

static void test_layers(void **state) {
    (void)state;
    static const char *const cases[] = {
        "conv_k3_s1_p1_bias", "conv_k5_s2_p2_nobias", "conv_k1_s1_p0",   "conv_k3x2_s2x1_p1x0",
        "conv_k3_s2_p0_odd",  "conv_cin1_k3_s1_p0",   "linear_bias",     "linear_nobias",
        "relu",               "maxpool_k2_s2",        "maxpool_k3_s2_p1", "avgpool_k2_s2",
        "avgpool_k3_s1_p1",   "avgpool_global",       "bn_train",        "bn_eval",
        "flatten",            "add",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_layer_fixture(cases[i]);
}

static void test_loss(void **state) {
    (void)state;
    const char *cases[] = {"loss", "loss_large_logits"};
    for (int c = 0; c < 2; c++) {
        et_safetensors *st = open_fix(cases[c]);
        const et_st_tensor *x = get(st, "x"), *lab = get(st, "labels");
        int n = (int)x->shape[0], k = (int)x->shape[1];
        uint8_t labels[64];
        for (int i = 0; i < n; i++) labels[i] = (uint8_t)((const int64_t *)lab->data)[i];
        float *d = malloc(sizeof(float) * (size_t)(n * k));
        float loss = (float)et_softmax_xent(x->data, labels, n, k, d, NULL);
        expect_close("loss", &loss, get(st, "loss")->data, 1, 1e-6, 1e-6);
        expect_close("dlogits", d, get(st, "dx")->data, (int64_t)n * k, 1e-7, 1e-5);
        free(d);
        et_st_close(st);
    }
}

/* Loads "param.<name>" tensors into the model. */
static void load_params(et_model *m, et_safetensors *st, const char *prefix) {
    for (int i = 0; i < et_model_num_tensors(m); i++) {
        const char *name;
        float *data;
        int64_t n;
        et_model_tensor(m, i, &name, &data, &n, NULL);
        char full[160];
        snprintf(full, sizeof full, "%s%s", prefix, name);
        const et_st_tensor *t = get(st, full);
        assert_int_equal(numel(t), n);
        memcpy(data, t->data, t->nbytes);
    }
}

static void run_model_fixture(const char *name) {
    et_safetensors *st = open_fix(name);
    et_model *m;
    if (et_model_parse(meta(st, "spec_text"), name, &m)) {
        fprintf(stderr, "%s\n", et_last_error());
        fail();
    }
    const et_st_tensor *x = get(st, "x"), *lab = get(st, "labels");
    int N = (int)x->shape[0];
    assert_int_equal(et_model_plan(m, N, NULL), ET_OK);
    load_params(m, st, "param.");
    memcpy(et_model_input(m), x->data, x->nbytes);
    const float *logits;
    assert_int_equal(et_model_forward(m, N, 1, &logits), ET_OK);
    expect_close("model logits", logits, get(st, "logits")->data, numel(get(st, "logits")), 1e-4, 1e-4);
    uint8_t labels[64];
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)((const int64_t *)lab->data)[i];
    float loss;
    assert_int_equal(et_model_backward(m, labels, &loss, NULL), ET_OK);
    expect_close("model loss", &loss, get(st, "loss")->data, 1, 1e-5, 1e-5);
    for (int i = 0; i < et_model_num_tensors(m); i++) {
        const char *pname;
        float *data, *grad;
        int64_t n;
        et_model_tensor(m, i, &pname, &data, &n, &grad);
        char full[160];
        if (grad) {
            snprintf(full, sizeof full, "grad.%s", pname);
            expect_close(full, grad, get(st, full)->data, n, 1e-4, 1e-3);
        } else {
            snprintf(full, sizeof full, "after.%s", pname);
            expect_close(full, data, get(st, full)->data, n, 1e-5, 1e-4);
        }
    }
    et_model_free(m);
    et_st_close(st);
}

static void test_models(void **state) {
    (void)state;
    run_model_fixture("model_lenet");
    run_model_fixture("model_tiny_resnet");
}

static void run_optim_fixture(const char *name) {
    et_safetensors *st = open_fix(name);
    const et_st_tensor *p0 = get(st, "p0");
    char spec[64];
    snprintf(spec, sizeof spec, "input %lld\nlinear %lld bias=0\n", (long long)p0->shape[1], (long long)p0->shape[0]);
    et_model *m;
    assert_int_equal(et_model_parse(spec, "opt", &m), ET_OK);
    et_optim o = et_optim_default(strcmp(meta(st, "optimizer"), "adam") ? ET_OPT_SGD : ET_OPT_ADAM);
    o.lr = strtof(meta(st, "lr"), NULL);
    o.weight_decay = strtof(meta(st, "weight_decay"), NULL);
    if (o.kind == ET_OPT_SGD) {
        o.momentum = strtof(meta(st, "momentum"), NULL);
        o.nesterov = atoi(meta(st, "nesterov"));
    } else {
        o.beta1 = strtof(meta(st, "beta1"), NULL);
        o.beta2 = strtof(meta(st, "beta2"), NULL);
        o.eps = strtof(meta(st, "eps"), NULL);
    }
    assert_int_equal(et_model_plan(m, 1, &o), ET_OK);
    float *w, *g;
    int64_t n;
    et_model_tensor(m, 0, NULL, &w, &n, &g);
    memcpy(w, p0->data, p0->nbytes);
    for (int s = 1; s <= 3; s++) {
        char gn[16], pn[16];
        snprintf(gn, sizeof gn, "g%d", s);
        snprintf(pn, sizeof pn, "p%d", s);
        memcpy(g, get(st, gn)->data, (size_t)n * sizeof(float));
        assert_int_equal(et_model_update(m, o.lr), ET_OK);
        char what[64];
        snprintf(what, sizeof what, "%s %s", name, pn);
        expect_close(what, w, get(st, pn)->data, n, 1e-6, 1e-5);
    }
    et_model_free(m);
    et_st_close(st);
}

static void test_optimizers(void **state) {
    (void)state;
    run_optim_fixture("optim_sgd_momentum");
    run_optim_fixture("optim_sgd_nesterov");
    run_optim_fixture("optim_sgd_plain");
    run_optim_fixture("optim_adam");
}

static void test_lr_schedules(void **state) {
    (void)state;
    et_safetensors *st = open_fix("lr_step");
    float got[10];
    for (int e = 0; e < 10; e++) got[e] = et_lr_step(strtof(meta(st, "base_lr"), NULL), e, atoi(meta(st, "step_size")),
                                                    strtof(meta(st, "gamma"), NULL));
    expect_close("step lr", got, get(st, "lr")->data, 10, 1e-9, 1e-5);
    et_st_close(st);
    st = open_fix("lr_cosine");
    for (int e = 0; e < 10; e++) got[e] = et_lr_cosine(strtof(meta(st, "base_lr"), NULL), e, atoi(meta(st, "t_max")), 0.0f);
    expect_close("cosine lr", got, get(st, "lr")->data, 10, 1e-7, 1e-5);
    et_st_close(st);
}

/* A state dict written from PyTorch loads with et_model_load (the path of
 * --init-from) and reproduces PyTorch's eval-mode logits. */
static void test_torch_state_dict(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_load_spec("models/lenet.et", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 2, NULL), ET_OK);
    if (et_model_load(m, FIX "torch_state_dict.safetensors", 0)) {
        fprintf(stderr, "%s\n", et_last_error());
        fail();
    }
    et_safetensors *st = open_fix("torch_state_dict_logits");
    memcpy(et_model_input(m), get(st, "x")->data, get(st, "x")->nbytes);
    const float *logits;
    assert_int_equal(et_model_forward(m, 2, 0, &logits), ET_OK);
    expect_close("state-dict logits", logits, get(st, "logits")->data, 20, 1e-4, 1e-4);
    et_st_close(st);
    et_model_free(m);
}

/* Checkpoint round trip: save, load into a fresh model, same tensors. */
static void test_checkpoint_round_trip(void **state) {
    (void)state;
    et_safetensors *st = open_fix("model_tiny_resnet");
    et_model *a, *b;
    assert_int_equal(et_model_parse(meta(st, "spec_text"), "rt", &a), ET_OK);
    assert_int_equal(et_model_parse(meta(st, "spec_text"), "rt", &b), ET_OK);
    et_optim o = et_optim_default(ET_OPT_SGD);
    o.momentum = 0.9f;
    assert_int_equal(et_model_plan(a, 4, &o), ET_OK);
    assert_int_equal(et_model_plan(b, 4, &o), ET_OK);
    load_params(a, st, "param.");
    et_model_set_step(a, 42);
    char path[] = "/tmp/et_golden_rt.safetensors";
    assert_int_equal(et_model_save(a, path, 1), ET_OK);
    assert_int_equal(et_model_load(b, path, 1), ET_OK);
    assert_int_equal(et_model_step(b), 42);
    for (int i = 0; i < et_model_num_tensors(a); i++) {
        float *da, *db;
        int64_t n;
        et_model_tensor(a, i, NULL, &da, &n, NULL);
        et_model_tensor(b, i, NULL, &db, NULL, NULL);
        assert_memory_equal(da, db, (size_t)n * sizeof(float));
    }
    /* the file has PyTorch's names, num_batches_tracked as an I64 scalar */
    et_safetensors *f;
    assert_int_equal(et_st_open(path, &f), ET_OK);
    const et_st_tensor *nbt = et_st_find(f, "1.num_batches_tracked");
    assert_non_null(nbt);
    assert_int_equal(nbt->dtype, ET_I64);
    assert_int_equal(nbt->ndim, 0);
    assert_non_null(et_st_find(f, "0.weight"));
    assert_non_null(et_st_find(f, "optimizer.0.weight.momentum_buffer"));
    et_st_close(f);
    remove(path);
    et_model_free(a);
    et_model_free(b);
    et_st_close(st);
}

/* A frozen layer gets no WG and no update; the others still learn, and the
 * MAC counters show the skipped WG. */
static void test_freeze(void **state) {
    (void)state;
    et_safetensors *st = open_fix("model_lenet");
    et_model *m;
    assert_int_equal(et_model_parse(meta(st, "spec_text"), "frozen", &m), ET_OK);
    assert_int_equal(et_model_freeze(m, "0"), ET_OK);
    assert_int_not_equal(et_model_freeze(m, "1"), ET_OK); /* relu has no parameters */
    et_optim o = et_optim_default(ET_OPT_SGD);
    o.lr = 0.1f;
    assert_int_equal(et_model_plan(m, 4, &o), ET_OK);
    load_params(m, st, "param.");
    memcpy(et_model_input(m), get(st, "x")->data, get(st, "x")->nbytes);
    uint8_t labels[4];
    for (int i = 0; i < 4; i++) labels[i] = (uint8_t)((const int64_t *)get(st, "labels")->data)[i];
    int64_t macs[ET_NSTAGES];
    et_model_macs(m, macs);
    assert_int_equal(macs[ET_WG], 383872 - 8 * 9 * 784); /* conv 0 (8x1x3x3 over 28x28) skipped */
    float loss;
    assert_int_equal(et_model_train_step(m, labels, 4, 0.1f, &loss), ET_OK);
    for (int i = 0; i < et_model_num_tensors(m); i++) {
        const char *name;
        float *data;
        int64_t n;
        et_model_tensor(m, i, &name, &data, &n, NULL);
        char full[160];
        snprintf(full, sizeof full, "param.%s", name);
        int same = !memcmp(data, get(st, full)->data, (size_t)n * sizeof(float));
        assert_int_equal(same, name[0] == '0' && name[1] == '.');
    }
    et_model_free(m);
    et_st_close(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers),       cmocka_unit_test(test_loss),
        cmocka_unit_test(test_models),       cmocka_unit_test(test_optimizers),
        cmocka_unit_test(test_lr_schedules), cmocka_unit_test(test_torch_state_dict),
        cmocka_unit_test(test_checkpoint_round_trip), cmocka_unit_test(test_freeze),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
