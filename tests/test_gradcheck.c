/* Finite-difference check of every layer's EP and WG, and of whole models
 * (residual blocks, batchnorm, dropout) through et_model_backward.
 * L = sum(y * dy) for a fixed random dy, so dL/dx must equal EP(dy) and
 * dL/dW must equal WG(dy). Central differences in double around float
 * evaluations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/rng.h"
#include "util/layer_harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double objective(lh *h) {
    assert_int_equal(lh_ff(h), ET_OK);
    double s = 0;
    for (int64_t i = 0; i < h->ny; i++) s += (double)h->y[i] * h->dy[i];
    return s;
}

static void check_close(const char *what, int64_t i, double fd, double an) {
    double tol = 4e-3 + 1e-2 * fabs(an);
    if (fabs(fd - an) > tol) {
        fprintf(stderr, "%s[%lld]: finite difference %.6g, analytic %.6g\n", what, (long long)i, fd, an);
        fail();
    }
}

/* Perturbs up to `samples` entries of v and compares with g. */
static void fd_check(lh *h, const char *what, float *v, const float *g, int64_t n, int samples) {
    const float eps = 1e-3f;
    for (int s = 0; s < samples && s < n; s++) {
        int64_t i = n <= samples ? s : (int64_t)(et_rand64(99, (uint64_t)n, (uint64_t)s) % (uint64_t)n);
        float keep = v[i];
        v[i] = keep + eps;
        double lp = objective(h);
        v[i] = keep - eps;
        double lm = objective(h);
        v[i] = keep;
        check_close(what, i, (lp - lm) / (2.0 * eps), g[i]);
    }
}

typedef struct {
    const char *name;
    et_layer_type type;
    union {
        et_conv_cfg conv;
        et_linear_cfg linear;
        et_pool_cfg pool;
        et_bn_cfg bn;
        et_dropout_cfg dropout;
    } cfg;
    et_shape in;
    int N;
    int train;
} fd_case;

static void run_case(const fd_case *c) {
    lh h;
    assert_int_equal(lh_init(&h, c->type, &c->cfg, sizeof c->cfg, c->in, c->N), ET_OK);
    h.train = c->train;
    if (c->type == ET_L_RELU || c->type == ET_L_MAXPOOL) /* keep away from kinks and ties */
        for (int64_t i = 0; i < h.nx; i++) {
            h.x[i] = (h.x[i] < 0 ? -0.05f : 0.05f) + h.x[i];
            h.x[i] += 1e-4f * (float)(i % 97); /* distinct values */
        }
    objective(&h);
    assert_int_equal(lh_ep(&h), ET_OK);
    assert_int_equal(lh_wg(&h), ET_OK);
    float *gx = malloc(sizeof(float) * (size_t)h.nx);
    memcpy(gx, h.dx, sizeof(float) * (size_t)h.nx);
    float *gp[ET_MAX_PARAMS] = {0};
    for (int p = 0; p < h.l.nparams; p++)
        if (h.l.params[p].grad) {
            gp[p] = malloc(sizeof(float) * (size_t)h.l.params[p].n);
            memcpy(gp[p], h.l.params[p].grad, sizeof(float) * (size_t)h.l.params[p].n);
        }
    char what[96];
    snprintf(what, sizeof what, "%s dx", c->name);
    fd_check(&h, what, h.x, gx, h.nx, 48);
    for (int p = 0; p < h.l.nparams; p++)
        if (gp[p]) {
            snprintf(what, sizeof what, "%s d%s", c->name, h.l.params[p].name);
            fd_check(&h, what, h.l.params[p].data, gp[p], h.l.params[p].n, 32);
            free(gp[p]);
        }
    free(gx);
    lh_free(&h);
}

#define IMG(c, h, w) ((et_shape){c, h, w, 1})
#define VEC(f) ((et_shape){f, 1, 1, 0})

static void test_layers(void **state) {
    (void)state;
    static const fd_case cases[] = {
        {"conv3x3", ET_L_CONV, {.conv = {4, 3, 3, 1, 1, 1, 1, 1}}, IMG(3, 6, 5), 2, 1},
        {"conv5x5s2", ET_L_CONV, {.conv = {3, 5, 5, 2, 2, 2, 2, 0}}, IMG(2, 7, 7), 2, 1},
        {"conv1x1", ET_L_CONV, {.conv = {5, 1, 1, 1, 1, 0, 0, 1}}, IMG(3, 4, 4), 3, 1},
        {"conv3x2", ET_L_CONV, {.conv = {2, 3, 2, 2, 1, 1, 0, 1}}, IMG(2, 5, 6), 2, 1},
        {"linear", ET_L_LINEAR, {.linear = {7, 1}}, VEC(11), 3, 1},
        {"linear-nobias", ET_L_LINEAR, {.linear = {4, 0}}, VEC(6), 2, 1},
        {"relu", ET_L_RELU, {.linear = {0, 0}}, IMG(3, 4, 4), 2, 1},
        {"maxpool2", ET_L_MAXPOOL, {.pool = {2, 2, 2, 2, 0, 0, 0}}, IMG(2, 6, 6), 2, 1},
        {"maxpool3s2p1", ET_L_MAXPOOL, {.pool = {3, 3, 2, 2, 1, 1, 0}}, IMG(2, 5, 5), 2, 1},
        {"avgpool2", ET_L_AVGPOOL, {.pool = {2, 2, 2, 2, 0, 0, 0}}, IMG(2, 6, 6), 2, 1},
        {"avgpool3s1p1", ET_L_AVGPOOL, {.pool = {3, 3, 1, 1, 1, 1, 0}}, IMG(2, 4, 5), 2, 1},
        {"avgpool-global", ET_L_AVGPOOL, {.pool = {0, 0, 0, 0, 0, 0, 1}}, IMG(3, 4, 4), 2, 1},
        {"bn-train", ET_L_BN, {.bn = {1e-5f, 0.1f}}, IMG(3, 3, 4), 4, 1},
        {"bn-eval", ET_L_BN, {.bn = {1e-5f, 0.1f}}, IMG(3, 3, 4), 4, 0},
        {"flatten", ET_L_FLATTEN, {.linear = {0, 0}}, IMG(3, 2, 4), 2, 1},
        {"dropout", ET_L_DROPOUT, {.dropout = {0.3f}}, VEC(40), 3, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
}

/* Whole-model check: cross-entropy loss vs the model's parameter gradients. */
static void model_fd(const char *spec, int N, int C, int H, int W) {
    et_model *m;
    assert_int_equal(et_model_parse(spec, "fd", &m), ET_OK);
    assert_int_equal(et_model_plan(m, N, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 5), ET_OK);
    float *x = et_model_input(m);
    lh_fill(x, (int64_t)N * C * H * W, 77, 0.0f, 1.0f);
    uint8_t labels[16];
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)(i * 3 % 10);
    float loss;
    assert_int_equal(et_model_forward(m, N, 1, NULL), ET_OK);
    assert_int_equal(et_model_backward(m, labels, &loss, NULL), ET_OK);
    int nt = et_model_num_tensors(m);
    float **saved = calloc((size_t)nt, sizeof *saved);
    for (int t = 0; t < nt; t++) {
        float *data, *grad;
        int64_t n;
        et_model_tensor(m, t, NULL, &data, &n, &grad);
        if (grad) {
            saved[t] = malloc(sizeof(float) * (size_t)n);
            memcpy(saved[t], grad, sizeof(float) * (size_t)n);
        }
    }
    const float eps = 1e-3f;
    for (int t = 0; t < nt; t++) {
        const char *name;
        float *data, *grad;
        int64_t n;
        et_model_tensor(m, t, &name, &data, &n, &grad);
        if (!grad) continue;
        for (int s = 0; s < 6 && s < n; s++) {
            int64_t i = (int64_t)(et_rand64(3, (uint64_t)t, (uint64_t)s) % (uint64_t)n);
            float keep = data[i], lp, lm;
            data[i] = keep + eps;
            et_model_forward(m, N, 1, NULL);
            et_model_backward(m, labels, &lp, NULL);
            data[i] = keep - eps;
            et_model_forward(m, N, 1, NULL);
            et_model_backward(m, labels, &lm, NULL);
            data[i] = keep;
            double fd = ((double)lp - lm) / (2.0 * eps);
            double an = saved[t][i], tol = 2e-3 + 2e-2 * fabs(an);
            if (fabs(fd - an) > tol) {
                fprintf(stderr, "model grad %s[%lld]: fd %.6g analytic %.6g\n", name, (long long)i, fd, an);
                fail();
            }
        }
        free(saved[t]);
    }
    free(saved);
    et_model_free(m);
}

static void test_residual_model(void **state) {
    (void)state;
    model_fd("input 3 6 6\nconv 4 k=3 p=1 bias=0\nbn\nrelu\n"
             "residual\n conv 4 k=3 p=1 bias=0\n bn\n relu\n conv 4 k=3 p=1\nend\nrelu\n"
             "residual\n conv 6 k=3 s=2 p=1\n relu\n conv 6 k=3 p=1\nshortcut\n conv 6 k=1 s=2 bias=0\n bn\nend\n"
             "avgpool global\nflatten\nlinear 10\n",
             4, 3, 6, 6);
}

static void test_mlp_dropout_model(void **state) {
    (void)state;
    model_fd("input 1 5 5\nflatten\nlinear 16\nrelu\ndropout p=0.25\nlinear 12\nrelu\nlinear 10\n", 5, 1, 5, 5);
}

/* A one-channel flatten (its output is its input: no copy) before a relu
 * that must not work in place on that storage; and a second conv whose 8
 * images span three im2col chunks in two lanes (conv.c, "chunks"), so its
 * WG adds the second lane's partial gradient. */
static void test_flatten_alias_and_lanes(void **state) {
    (void)state;
    model_fd("input 1 6 6\nconv 1 k=3 p=1\nmaxpool k=2\nflatten\nrelu\nlinear 10\n", 4, 1, 6, 6);
    model_fd("input 1 6 6\nconv 1 k=3 p=1\nbn\nflatten\nrelu\nlinear 10\n", 4, 1, 6, 6);
    model_fd("input 1 32 32\nconv 8 k=3 p=1\nrelu\nconv 4 k=3 p=1\nrelu\nmaxpool k=4\nflatten\nlinear 10\n", 8, 1, 32, 32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_residual_model),
        cmocka_unit_test(test_mlp_dropout_model),
        cmocka_unit_test(test_flatten_alias_and_lanes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
