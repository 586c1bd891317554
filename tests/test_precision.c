/* Precision policies applied by the executor: where the rounding happens
 * (weights and activations before FF, gradients before the update, master
 * weights after it), checked against the quantizer applied by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "kernels/igemm.h"
#include "kernels/matmul.h"
#include "kernels/qgemm.h"
#include "nn/model.h"
#include "util/layer_harness.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC "input 12\nlinear 6 bias=0\n"

static void fill_model(et_model *m, const float *w, const float *x, int n) {
    float *d;
    int64_t cnt;
    et_model_tensor(m, 0, NULL, &d, &cnt, NULL);
    memcpy(d, w, sizeof(float) * (size_t)cnt);
    memcpy(et_model_input(m), x, sizeof(float) * (size_t)n * 12);
}

/* FF under w=int4,a=int8 equals an fp32 model fed Q_w(W) and Q_a(x). */
static void test_forward_placement(void **state) {
    (void)state;
    float w[72], x[48], qw[72], qx[48];
    lh_fill(w, 72, 1, -1, 1);
    lh_fill(x, 48, 2, 0, 1);
    et_format fw, fa;
    assert_int_equal(et_format_parse("int4", &fw), ET_OK);
    assert_int_equal(et_format_parse("int8", &fa), ET_OK);
    assert_int_equal(et_quantize(&fw, w, qw, 72, NULL), ET_OK);
    assert_int_equal(et_quantize(&fa, x, qx, 48, NULL), ET_OK);
    et_model *p, *r;
    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_equal(et_model_parse(SPEC, "r", &r), ET_OK);
    assert_int_equal(et_model_set_precision(p, "w=int4,a=int8"), ET_OK);
    assert_int_equal(et_model_plan(p, 4, NULL), ET_OK);
    assert_int_equal(et_model_plan(r, 4, NULL), ET_OK);
    fill_model(p, w, x, 4);
    fill_model(r, qw, qx, 4);
    const float *lp, *lr;
    assert_int_equal(et_model_forward(p, 4, 0, &lp), ET_OK);
    assert_int_equal(et_model_forward(r, 4, 0, &lr), ET_OK);
    assert_memory_equal(lp, lr, sizeof(float) * 24);
    /* the master weights themselves are untouched */
    float *d;
    et_model_tensor(p, 0, NULL, &d, NULL, NULL);
    assert_memory_equal(d, w, sizeof w);
    char buf[32];
    assert_string_equal(et_model_format_name(p, 0, "w", buf, sizeof buf), "int4");
    assert_string_equal(et_model_format_name(p, 0, "g", buf, sizeof buf), "fp32");
    et_model_free(p), et_model_free(r);
}

/* g=int4: the gradient the optimizer uses lies on the int4 grid of its own
 * absmax, and plain SGD moves W by exactly -lr * that gradient; m=bf16: the
 * master weights after the step are bf16 values. */
static void test_update_placement(void **state) {
    (void)state;
    float w[72], x[48];
    lh_fill(w, 72, 3, -1, 1);
    lh_fill(x, 48, 4, 0, 1);
    et_model *p;
    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_equal(et_model_set_precision(p, "g=int4"), ET_OK);
    et_optim o = et_optim_default(ET_OPT_SGD);
    assert_int_equal(et_model_plan(p, 4, &o), ET_OK);
    fill_model(p, w, x, 4);
    uint8_t labels[4] = {0, 3, 5, 1};
    float loss;
    assert_int_equal(et_model_train_step(p, labels, 4, 0.5f, &loss), ET_OK);
    float *d, *g;
    et_model_tensor(p, 0, NULL, &d, NULL, &g);
    float absmax = 0;
    for (int i = 0; i < 72; i++) absmax = fmaxf(absmax, fabsf(g[i]));
    assert_true(absmax > 0);
    float scale = absmax / 7.0f;
    for (int i = 0; i < 72; i++) {
        float k = g[i] / scale;
        assert_true(fabsf(k - rintf(k)) < 1e-4f && fabsf(k) <= 7.0001f);
        assert_true(d[i] == w[i] - 0.5f * g[i]);
    }
    et_model_free(p);

    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_equal(et_model_set_precision(p, "m=bf16"), ET_OK);
    assert_int_equal(et_model_plan(p, 4, &o), ET_OK);
    fill_model(p, w, x, 4);
    assert_int_equal(et_model_train_step(p, labels, 4, 0.1f, &loss), ET_OK);
    et_model_tensor(p, 0, NULL, &d, NULL, NULL);
    for (int i = 0; i < 72; i++) {
        uint32_t b;
        memcpy(&b, &d[i], 4);
        assert_int_equal(b & 0xffff, 0);
    }
    et_model_free(p);
}

/* acc/mul reach the matmul call: a linear layer's FF under acc=fp16,mul=bf16
 * equals the scalar emulated-GEMM reference on the same operands. */
static void test_emulated_accumulation(void **state) {
    (void)state;
    float w[72], x[48], ref[24];
    lh_fill(w, 72, 5, -1, 1);
    lh_fill(x, 48, 6, 0, 1);
    et_model *p;
    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_equal(et_model_set_precision(p, "acc=fp16,mul=bf16"), ET_OK);
    assert_int_equal(et_model_plan(p, 4, NULL), ET_OK);
    fill_model(p, w, x, 4);
    const float *lp;
    assert_int_equal(et_model_forward(p, 4, 0, &lp), ET_OK);
    et_format acc, mul;
    assert_int_equal(et_format_parse("fp16", &acc), ET_OK);
    assert_int_equal(et_format_parse("bf16", &mul), ET_OK);
    et_qkey key = {0, 0, 0};
    /* linear FF: Y[4,6] = X[4,12] . W^T  (RN: the key does not matter) */
    assert_int_equal(et_qgemm_ref(0, 1, 4, 6, 12, x, 12, w, 12, 0.0f, ref, 6, &mul, &acc, &key), ET_OK);
    assert_memory_equal(lp, ref, sizeof ref);
    et_model_free(p);
}

/* Stochastic rounding everywhere (e6m5 with r = 13): a training step gives the
 * same bits at 1 and 2 threads. */
static void test_sr_thread_independence(void **state) {
    (void)state;
    const char *spec = "input 1 8 8\nconv 4 k=3 p=1\nrelu\nflatten\nlinear 10\n";
    float out[2][4 * 9 * 1 + 4];
    float x[4 * 64];
    lh_fill(x, 256, 9, 0, 1);
    uint8_t labels[4] = {1, 2, 3, 4};
    for (int t = 0; t < 2; t++) {
        et_set_threads(t + 1);
        et_model *m;
        et_optim o = et_optim_default(ET_OPT_SGD);
        o.momentum = 0.9f;
        assert_int_equal(et_model_parse(spec, "sr", &m), ET_OK);
        assert_int_equal(et_model_set_precision(m, "e6m5-sr13"), ET_OK);
        assert_int_equal(et_model_plan(m, 4, &o), ET_OK);
        assert_int_equal(et_model_init_he(m, 3), ET_OK);
        float loss;
        for (int s = 0; s < 3; s++) {
            memcpy(et_model_input(m), x, sizeof x);
            assert_int_equal(et_model_train_step(m, labels, 4, 0.05f, &loss), ET_OK);
        }
        float *d;
        int64_t n;
        et_model_tensor(m, 0, NULL, &d, &n, NULL);
        memcpy(out[t], d, sizeof(float) * (size_t)n);
        et_model_tensor(m, 1, NULL, &d, &n, NULL);
        memcpy(out[t] + 36, d, sizeof(float) * (size_t)n);
        et_model_free(m);
    }
    et_set_threads(0);
    assert_memory_equal(out[0], out[1], sizeof out[0]);
}

/* LAPS: with a tiny threshold every int2 weight layer widens by inc at each
 * check until max; with a huge one nothing changes. */
static void test_laps(void **state) {
    (void)state;
    const char *spec = "input 1 8 8\nconv 4 k=3 p=1\nrelu\nflatten\nlinear 10\n";
    const double thr[2] = {1e-6, 9.0};
    for (int t = 0; t < 2; t++) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/et_laps_%d.policy", t);
        FILE *f = fopen(path, "w");
        fprintf(f, "default w=int2 a=int8\nlaps threshold=%g every=2 inc=2 max=8\n", thr[t]);
        fclose(f);
        et_model *m;
        et_optim o = et_optim_default(ET_OPT_SGD);
        assert_int_equal(et_model_parse(spec, "laps", &m), ET_OK);
        assert_int_equal(et_model_set_precision(m, path), ET_OK);
        assert_int_equal(et_model_plan(m, 2, &o), ET_OK);
        assert_int_equal(et_model_init_he(m, 1), ET_OK);
        uint8_t labels[2] = {1, 2};
        float loss, x[128];
        lh_fill(x, 128, 4, 0, 1);
        for (int s = 0; s < 8; s++) {
            memcpy(et_model_input(m), x, sizeof x);
            assert_int_equal(et_model_train_step(m, labels, 2, 0.05f, &loss), ET_OK);
        }
        char buf[32];
        int64_t steps[32];
        int bits[32];
        int n = et_model_laps_history(m, 0, steps, bits, 32);
        if (t == 0) { /* checks at steps 2, 4, 6: 2 -> 4 -> 6 -> 8 */
            assert_int_equal(n, 4);
            assert_int_equal(bits[3], 8);
            assert_int_equal((int)steps[1], 2);
            assert_string_equal(et_model_format_name(m, 0, "w", buf, sizeof buf), "int8");
        } else {
            assert_int_equal(n, 1);
            assert_string_equal(et_model_format_name(m, 3, "w", buf, sizeof buf), "int2");
        }
        et_model_free(m);
        remove(path);
    }
}

/* acc=int32: every product of every weight layer and stage runs on int8
 * codes, and equals an independent reference: the operands are exactly
 * scale * q (checked), S = sum of q products in int64, C = (float)(S * sa*sb)
 * in double. Training is bit-identical at 1 and 2 threads. */
typedef struct int_check {
    int seen[16][ET_NSTAGES];
    int bad;
} int_check;

static et_status int_sink(void *ctx, const et_matmul *mm, uint64_t macs) {
    (void)macs;
    int_check *ck = ctx;
    if (mm->layer < 0 || mm->layer >= 16 || !(mm->a_scale > 0) || !(mm->b_scale > 0) || mm->beta != 0.0f) {
        ck->bad++;
        return ET_OK;
    }
    ck->seen[mm->layer][mm->stage]++;
    const double sa = mm->a_scale, sb = mm->b_scale;
    for (int i = 0; i < mm->M; i++)
        for (int j = 0; j < mm->N; j++) {
            int64_t s = 0;
            for (int k = 0; k < mm->K; k++) {
                float a = mm->ta ? mm->A[(size_t)k * mm->lda + i] : mm->A[(size_t)i * mm->lda + k];
                float b = mm->tb ? mm->B[(size_t)j * mm->ldb + k] : mm->B[(size_t)k * mm->ldb + j];
                int64_t qa = llround((double)a / sa), qb = llround((double)b / sb);
                if (llabs(qa) > 127 || llabs(qb) > 127 || a != (float)qa * mm->a_scale || b != (float)qb * mm->b_scale) {
                    ck->bad++; /* an operand is not on its grid */
                    return ET_OK;
                }
                s += qa * qb;
            }
            float want = (float)((double)s * (sa * sb));
            if (memcmp(&want, &mm->C[(size_t)i * mm->ldc + j], 4)) ck->bad++;
        }
    return ET_OK;
}

static void test_int_path(void **state) {
    (void)state;
    /* padded conv (im2col), 1x1 conv (direct), strided conv (im2col's general
     * rows), two linears. Runs 0, 1 (1 and 2 threads) are checked product by
     * product by the sink, which makes every call non-plain (float operands);
     * runs 2, 3 have no sink, so their convs im2col the input's int8 codes
     * and every product packs codes (et_matmul.a_codes/b_codes): all four
     * must train to the same bits. */
    const char *spec = "input 2 8 8\nconv 4 k=3 p=1\nrelu\nconv 6 k=1\nrelu\nconv 6 k=3 s=2 p=1\nrelu\nflatten\n"
                       "linear 12\nrelu\nlinear 10\n";
    const int weight_layers[5] = {0, 2, 4, 7, 9};
    const char *policies[2] = {"w=int4,a=int8,e=int8,g=int16,acc=int32", "w=dfxp6,a=dfxp8,e=int7,acc=int32"};
    for (int pi = 0; pi < 2; pi++) {
        static float out[4][8192];
        size_t used[4] = {0, 0, 0, 0};
        float x[5 * 128];
        lh_fill(x, 5 * 128, 9, 0, 1);
        uint8_t labels[5] = {1, 2, 3, 4, 9};
        for (int t = 0; t < 4; t++) {
            et_set_threads(t % 2 + 1);
            et_model *m;
            et_optim o = et_optim_default(ET_OPT_SGD);
            o.momentum = 0.9f;
            assert_int_equal(et_model_parse(spec, "int", &m), ET_OK);
            assert_int_equal(et_model_set_precision(m, policies[pi]), ET_OK);
            assert_int_equal(et_model_plan(m, 5, &o), ET_OK);
            assert_int_equal(et_model_init_he(m, 3), ET_OK);
            int_check ck = {{{0}}, 0};
            if (t < 2) et_engine_set_sink(et_model_engine(m), int_sink, &ck);
            float loss;
            for (int s = 0; s < 3; s++) {
                memcpy(et_model_input(m), x, sizeof x);
                assert_int_equal(et_model_train_step(m, labels, 5, 0.05f, &loss), ET_OK);
            }
            assert_int_equal(ck.bad, 0);
            assert_int_equal((int)et_model_engine(m)->int_calls, 3 * 14); /* FF 5 + EP 4 + WG 5 per step */
            for (int l = 0; l < 5 && t < 2; l++) {
                int L = weight_layers[l];
                assert_int_equal(ck.seen[L][ET_FF], 3);
                assert_int_equal(ck.seen[L][ET_WG], 3);
                assert_int_equal(ck.seen[L][ET_EP], l == 0 ? 0 : 3); /* the first layer has no EP */
            }
            size_t off = 0;
            for (int p = 0; p < et_model_num_tensors(m); p++) {
                float *d;
                int64_t n;
                assert_int_equal(et_model_tensor(m, p, NULL, &d, &n, NULL), ET_OK);
                assert_true(off + (size_t)n <= sizeof out[0] / 4);
                memcpy(out[t] + off, d, sizeof(float) * (size_t)n);
                off += (size_t)n;
            }
            used[t] = off;
            et_model_free(m);
        }
        et_set_threads(0);
        assert_true(used[0] > 1200);
        for (int t = 1; t < 4; t++) {
            assert_true(used[t] == used[0]);
            assert_memory_equal(out[0], out[t], used[0] * 4);
        }
    }
    /* acc=int32 with a multiplier format, or as a number format elsewhere: errors */
    et_model *p;
    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "w=int8,a=int8,mul=fp16,acc=int32"), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "w=int32"), ET_OK);
    et_model_free(p);
}

/* The packing buffers of the integer and emulated GEMMs belong to the calling
 * thread and only grow. Planning reserves them for every product of training
 * (and counts them in the memory plan's workspace), so training steps do not
 * grow them. Run in a new thread: its buffers start empty. */
typedef struct ws_case {
    const char *policy;
    size_t planned, after, plan_ws, gemm_ws, codes;
    int ok;
} ws_case;

static void *ws_thread(void *arg) {
    ws_case *c = arg;
    const char *spec = "input 2 12 12\nconv 8 k=3 p=1\nrelu\nconv 6 k=1\nrelu\nmaxpool k=2\nflatten\n"
                       "linear 20\nrelu\nlinear 10\n";
    et_model *m;
    et_optim o = et_optim_default(ET_OPT_SGD);
    float x[7 * 288];
    lh_fill(x, 7 * 288, 5, 0, 1);
    uint8_t labels[7] = {1, 2, 3, 4, 9, 0, 5};
    if (et_model_parse(spec, "ws", &m) || et_model_set_precision(m, c->policy) || et_model_plan(m, 7, &o) ||
        et_model_init_he(m, 3))
        return NULL;
    c->planned = et_igemm_workspace_bytes() + et_qgemm_workspace_bytes();
    c->plan_ws = et_model_memory(m).workspace;
    c->gemm_ws = et_gemm_workspace_bytes();
    /* acc=int32 (int8): the int8 codes of every conv/linear's weights, input
     * and error at batch 7, each buffer rounded up to 64 bytes */
    c->codes = 0;
    for (int i = 0; !strcmp(c->policy, "int8") && i < m->nnodes; i++) {
        const et_layer *l = &m->nodes[i].layer;
        if (l->type != ET_L_CONV && l->type != ET_L_LINEAR) continue;
        size_t sz[3] = {(size_t)l->params[0].n, (size_t)et_shape_numel(l->in) * 7, (size_t)et_shape_numel(l->out) * 7};
        for (int k = 0; k < 3; k++) c->codes += (sz[k] + 63) / 64 * 64;
    }
    float loss;
    for (int s = 0; s < 2; s++) {
        memcpy(et_model_input(m), x, sizeof x);
        if (et_model_train_step(m, labels, 7, 0.05f, &loss)) return NULL;
    }
    c->after = et_igemm_workspace_bytes() + et_qgemm_workspace_bytes();
    c->ok = 1;
    et_model_free(m);
    et_igemm_release(); /* the thread's buffers go with it */
    et_qgemm_release();
    return NULL;
}

static void test_workspace_reserved(void **state) {
    (void)state;
    const char *policies[] = {"int8", "e6m5-sr13", "w=e5m2,a=e5m2,e=e5m2,mul=e5m2/sr,acc=fp16/sr", "hfp8"};
    for (int t = 1; t <= 2; t++) {
        et_set_threads(t);
        for (size_t p = 0; p < sizeof policies / sizeof *policies; p++) {
            ws_case c = {policies[p], 0, 0, 0, 0, 0, 0};
            pthread_t th;
            assert_int_equal(pthread_create(&th, NULL, ws_thread, &c), 0);
            pthread_join(th, NULL);
            if (!c.ok) fail_msg("%s: %s", policies[p], et_last_error());
            /* at 2 threads the team's second thread (conv's second lane) holds
             * the same buffers as the planning thread; the codes exist once */
            /* (below AVX-512 the emulation reserves nothing: its scalar path has no packing buffers) */
            if (!((c.planned > 0 || et_cpu_isa() < ET_ISA_AVX512) && c.after == c.planned && c.plan_ws == c.gemm_ws + (size_t)t * c.planned + c.codes))
                fail_msg("%s T=%d: reserved %zu, after 2 steps %zu, plan workspace %zu (gemm %zu, codes %zu)",
                         policies[p], t, c.planned, c.after, c.plan_ws, c.gemm_ws, c.codes);
        }
    }
    et_set_threads(0);
}

/* Integer (acc=int32) products of a conv whose batch spans three im2col
 * chunks run in conv's two lanes side by side at 2 threads: the trained
 * weights equal the 1-thread run's bit for bit. */
static float *train_int8_lanes(int threads, int64_t *total) {
    et_set_threads(threads);
    et_model *m;
    et_optim o = et_optim_default(ET_OPT_SGD);
    assert_int_equal(et_model_parse("input 1 32 32\nconv 8 k=3 p=1\nrelu\nconv 4 k=3 p=1\nrelu\nmaxpool k=4\n"
                                    "flatten\nlinear 10\n", "lanes", &m), ET_OK);
    assert_int_equal(et_model_set_precision(m, "int8"), ET_OK);
    assert_int_equal(et_model_plan(m, 8, &o), ET_OK);
    assert_int_equal(et_model_init_he(m, 11), ET_OK);
    uint8_t labels[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float loss;
    for (int s = 0; s < 3; s++) {
        lh_fill(et_model_input(m), 8 * 1024, 20 + s, 0, 1);
        assert_int_equal(et_model_train_step(m, labels, 8, 0.05f, &loss), ET_OK);
    }
    int64_t n = 0;
    for (int t = 0; t < et_model_num_tensors(m); t++) {
        int64_t k;
        float *d;
        et_model_tensor(m, t, NULL, &d, &k, NULL);
        n += k;
    }
    float *all = malloc(sizeof(float) * (size_t)n), *p = all;
    assert_non_null(all);
    for (int t = 0; t < et_model_num_tensors(m); t++) {
        int64_t k;
        float *d;
        et_model_tensor(m, t, NULL, &d, &k, NULL);
        memcpy(p, d, sizeof(float) * (size_t)k);
        p += k;
    }
    assert_true(et_model_engine(m)->int_calls > 0);
    et_model_free(m);
    *total = n;
    return all;
}

static void test_int_lanes_threads(void **state) {
    (void)state;
    int64_t n1, n2;
    float *a = train_int8_lanes(1, &n1), *b = train_int8_lanes(2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, sizeof(float) * (size_t)n1);
    free(a);
    free(b);
    et_set_threads(0);
}

static void test_bad_policies(void **state) {
    (void)state;
    et_model *p;
    assert_int_equal(et_model_parse(SPEC, "p", &p), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "w=int1"), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "acc=int8"), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "policies/elearn-vgg8.policy"), ET_OK); /* names layers this model lacks */
    assert_int_equal(et_model_plan(p, 2, NULL), ET_OK);
    assert_int_not_equal(et_model_set_precision(p, "w=int8"), ET_OK); /* after planning */
    et_model_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_placement),
        cmocka_unit_test(test_update_placement),
        cmocka_unit_test(test_emulated_accumulation),
        cmocka_unit_test(test_sr_thread_independence),
        cmocka_unit_test(test_laps),
        cmocka_unit_test(test_bad_policies),
        cmocka_unit_test(test_int_path),
        cmocka_unit_test(test_workspace_reserved),
        cmocka_unit_test(test_int_lanes_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
