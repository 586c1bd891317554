/* Run-time sparsity (docs/sparsity.md): skip equals none on every matmul
 * layer and stage (within tolerance, and bit for bit where it holds) and
 * counts exactly the multiply-adds an independent direct-convolution
 * enumeration finds; speculation at 32 bits equals dense bit for bit;
 * speculation at B bits and exp equals a scalar predictor written from the
 * documented definition; whole small models (conv with padding and stride,
 * maxpool, avgpool, bn, residual add, linear) train identically under skip;
 * the CLI rejects bad modes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "kernels/gemm_internal.h"
#include "kernels/matmul.h"
#include "nn/layer.h"
#include "nn/model.h"
#include "numerics/format_internal.h"
#include "sparsity/sparsity.h"
#include "util/layer_harness.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Makes about `zf` of x exactly zero (a ReLU output) and of dy (a gated error). */
static void sparsify(float *a, int64_t n, uint64_t stream, float zf) {
    for (int64_t i = 0; i < n; i++)
        if (fabsf(sinf((float)(i * 7 + (int64_t)stream * 13))) < zf) a[i] = 0.0f;
        else a[i] = fabsf(a[i]) + 0.01f;
}

static void make_relu_input(lh *h) { sparsify(h->x, h->nx, 1, 0.6f); }

/* -------------------------------------------------------------- parsing */

static void test_parse(void **state) {
    (void)state;
    et_sparsity s;
    assert_int_equal(et_sparsity_parse(NULL, NULL, &s), ET_OK);
    assert_false(s.skip || s.speculate || s.prune);
    assert_int_equal(et_sparsity_parse("none", NULL, &s), ET_OK);
    assert_int_equal(et_sparsity_parse("skip", NULL, &s), ET_OK);
    assert_true(s.skip && !s.speculate);
    assert_int_equal(et_sparsity_parse("skip,speculate", "2", &s), ET_OK);
    assert_true(s.skip && s.speculate && s.spec_bits == 2);
    assert_int_equal(et_sparsity_parse("speculate", NULL, &s), ET_OK);
    assert_int_equal(s.spec_bits, 4);
    assert_int_equal(et_sparsity_parse("speculate", "exp", &s), ET_OK);
    assert_int_equal(s.spec_bits, ET_SPEC_EXP);
    assert_int_equal(et_sparsity_parse("speculate", "32", &s), ET_OK);
    assert_int_equal(s.spec_bits, ET_SPEC_EXACT);
    assert_int_equal(et_sparsity_parse("prune", NULL, &s), ET_OK);
    assert_true(s.prune);
    const char *bad[][2] = {{"bogus", NULL},        {"none,skip", NULL}, {"skip,", NULL},       {",skip", NULL},
                            {"", NULL},             {"speculate", "0"},  {"speculate", "9"},    {"speculate", "16"},
                            {"speculate", "4x"},    {"speculate", ""},   {"skip", "4"},         {"SKIP", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(et_sparsity_parse(bad[i][0], bad[i][1], &s), ET_OK);
    char buf[64];
    et_sparsity_parse("speculate,skip", NULL, &s);
    assert_string_equal(et_sparsity_name(&s, buf, sizeof buf), "skip,speculate");
}

/* ------------------------------------------------- layers: skip == none */

typedef struct counts { uint64_t ff, ep, wg; } counts;

/* Element-level MACs of a convolution by direct enumeration of
 * (co, n, oy, ox, ci, ky, kx) inside the input (padding is zero): FF needs
 * w and x non-zero; EP (masked to non-zero x, skipping zero dy) needs x, w and
 * dy non-zero; WG needs dy and x non-zero. x is CNHW, dy is C x N*Ho*Wo. */
static counts conv_count(const et_layer *l, int N, const float *x, const float *w, const float *dy) {
    const et_conv_cfg *c = &l->cfg.conv;
    counts r = {0, 0, 0};
    const int Ci = l->in.c, H = l->in.h, W = l->in.w, Co = l->out.c, Ho = l->out.h, Wo = l->out.w;
    for (int co = 0; co < Co; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    float g = dy[(((int64_t)co * N + n) * Ho + oy) * Wo + ox];
                    for (int ci = 0; ci < Ci; ci++)
                        for (int ky = 0; ky < c->kh; ky++)
                            for (int kx = 0; kx < c->kw; kx++) {
                                int iy = oy * c->sh - c->ph + ky, ix = ox * c->sw - c->pw + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                float xv = x[(((int64_t)ci * N + n) * H + iy) * W + ix];
                                float wv = w[(((int64_t)co * Ci + ci) * c->kh + ky) * c->kw + kx];
                                r.ff += xv != 0 && wv != 0;
                                r.ep += xv != 0 && wv != 0 && g != 0;
                                r.wg += xv != 0 && g != 0;
                            }
                }
    return r;
}

static counts linear_count(int N, int in, int out, const float *x, const float *w, const float *dy) {
    counts r = {0, 0, 0};
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                float xv = x[(int64_t)n * in + i], wv = w[(int64_t)o * in + i], g = dy[(int64_t)n * out + o];
                r.ff += xv != 0 && wv != 0;
                r.ep += xv != 0 && wv != 0 && g != 0;
                r.wg += xv != 0 && g != 0;
            }
    return r;
}

static int bits_equal(const float *a, const float *b, int64_t n) { return memcmp(a, b, sizeof(float) * (size_t)n) == 0; }

static void assert_close(const float *a, const float *b, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-5f + 1e-5f * fabsf(b[i]))) fail_msg("%s[%lld]: %g vs %g", what, (long long)i, a[i], b[i]);
}

/* dY's zeros: |sin| below this (0.5: a third; 0.995: 94 %, so that conv WG
 * takes the zero-skipping kernel, kernels/spwg.h) */
static float dy_zf = 0.5f;
/* when set (and the CPU's kernels have it), WG must have run the skipping kernel */
static int want_spwg;

/* Runs one layer dense and with skip (ff_skip, ep_mask, bw_skip): FF, WG
 * equal; EP equals where x != 0 and is 0 where x == 0 (the ReLU's EP zeroes
 * those anyway); executed MACs equal the independent count. */
static void check_layer_w(et_layer_type t, const void *cfg, size_t cfg_size, et_shape in, int N, int zero_w) {
    lh d, s;
    assert_int_equal(lh_init(&d, t, cfg, cfg_size, in, N), ET_OK);
    assert_int_equal(lh_init(&s, t, cfg, cfg_size, in, N), ET_OK);
    make_relu_input(&d), make_relu_input(&s);
    sparsify(d.dy, d.ny, 3, dy_zf), sparsify(s.dy, s.ny, 3, dy_zf);
    for (int64_t i = 0; i < d.ny; i++) d.dy[i] = s.dy[i] = (i % 3 ? 1.0f : -1.0f) * d.dy[i];
    /* some zero weights too (without: conv EP applies its mask after col2im) */
    for (int64_t i = 0; zero_w && i < d.l.params[0].n; i += 5) d.l.params[0].data[i] = s.l.params[0].data[i] = 0.0f;
    uint8_t *mb = calloc(2 * ((et_layer_ep_mask_bytes(&s.l, N) + 63) & ~(size_t)63) + 1, 1); /* two lanes */
    et_layer_sparsity sp = {1, 1, 1, NULL, mb, NULL, NULL, NULL};
    s.sp = &sp;
    assert_int_equal(lh_ff(&d), ET_OK);
    assert_int_equal(lh_ff(&s), ET_OK);
    assert_close(s.y, d.y, d.ny, "y");
    assert_true(bits_equal(s.y, d.y, d.ny));
    assert_int_equal(lh_wg(&d), ET_OK);
    assert_int_equal(lh_wg(&s), ET_OK);
    for (int p = 0; p < d.l.nparams; p++) {
        assert_close(s.l.params[p].grad, d.l.params[p].grad, d.l.params[p].n, "grad");
        assert_true(bits_equal(s.l.params[p].grad, d.l.params[p].grad, d.l.params[p].n));
    }
    assert_int_equal(lh_ep(&d), ET_OK);
    assert_int_equal(lh_ep(&s), ET_OK);
    for (int64_t i = 0; i < d.nx; i++) {
        if (d.x[i] != 0.0f) {
            if (!(fabsf(s.dx[i] - d.dx[i]) <= 1e-5f + 1e-5f * fabsf(d.dx[i]))) fail_msg("dx[%lld] %g vs %g", (long long)i, s.dx[i], d.dx[i]);
            assert_true(s.dx[i] == d.dx[i]);
        } else {
            assert_true(s.dx[i] == 0.0f);
        }
    }
    counts want = t == ET_L_CONV ? conv_count(&s.l, N, s.x, s.l.params[0].data, s.dy)
                                 : linear_count(N, in.c, s.l.out.c, s.x, s.l.params[0].data, s.dy);
    const et_counters *c = &s.eng.total;
    assert_int_equal(c->macs_executed[ET_FF], want.ff);
    assert_int_equal(c->macs_executed[ET_EP], want.ep);
    assert_int_equal(c->macs_executed[ET_WG], want.wg);
    for (int st = 0; st < ET_NSTAGES; st++) {
        assert_int_equal(c->macs_dense[st], d.eng.total.macs_dense[st]);
        assert_true(c->macs_cpu[st] >= c->macs_executed[st] && c->macs_cpu[st] <= c->macs_dense[st]);
        /* dense: executed = cpu = dense */
        assert_int_equal(d.eng.total.macs_executed[st], d.eng.total.macs_dense[st]);
        assert_int_equal(d.eng.total.macs_cpu[st], d.eng.total.macs_dense[st]);
    }
    assert_true(c->macs_executed[ET_FF] < c->macs_dense[ET_FF]);
    if (want_spwg && et_gemm_kinfo_for(et_cpu_isa())->isa != ET_ISA_AVX2)
        assert_true(c->macs_cpu[ET_WG] < c->macs_dense[ET_WG] / 4);
    free(mb);
    lh_free(&d), lh_free(&s);
}

static void check_layer(et_layer_type t, const void *cfg, size_t cfg_size, et_shape in, int N) {
    check_layer_w(t, cfg, cfg_size, in, N, 1);
    check_layer_w(t, cfg, cfg_size, in, N, 0);
}

/* Convolutions large enough for several im2col chunks (conv's two lanes run
 * side by side at two threads), with the counts taken from the input: same
 * bits as dense and the brute-force counts, at 1 and 2 threads. */
static void test_layers_skip_lanes(void **state) {
    (void)state;
    et_conv_cfg convs[] = {
        {8, 3, 3, 1, 1, 1, 1, 1}, /* k3 s1 p1: VGG8's convolutions */
        {5, 5, 3, 1, 1, 2, 0, 0}, /* k5x3 s1 p2x0 */
        {6, 3, 3, 2, 1, 1, 1, 1}, /* k3 s2x1 p1: the general count */
    };
    const int threads = et_get_threads();
    for (int T = 1; T <= 2; T++) {
        et_set_threads(T);
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
            check_layer(ET_L_CONV, &convs[i], sizeof convs[i], (et_shape){40, 26, 27, 1}, 5);
    }
    et_set_threads(threads);
}

/* Conv WG on a very sparse dY (6 %) takes the zero-skipping kernel
 * (kernels/spwg.h; its CPU count shows it) and still gives dense's bits:
 * VGG8's second convolution (K = 784 positions per chunk: across KC, four
 * chunks in two lanes), one with odd CK and Cout (both on colᵀ from
 * et_im2row_avx512 where the CPU has it), a strided one (col, transposed in
 * the kernel), at 1 and 2 threads. */
static void test_layers_skip_spwg(void **state) {
    (void)state;
    et_conv_cfg convs[] = {
        {32, 3, 3, 1, 1, 1, 1, 1}, /* VGG8's convolutions */
        {21, 3, 3, 1, 1, 1, 1, 0}, /* Cout, CK = 117 not multiples of 16, no bias */
        {24, 3, 3, 2, 2, 1, 1, 1}, /* stride 2: col itself (no im2row), transposed by the kernel */
    };
    et_shape ins[] = {{32, 28, 28, 1}, {13, 20, 19, 1}, {16, 30, 30, 1}};
    const int threads = et_get_threads();
    dy_zf = 0.995f, want_spwg = 1;
    for (int T = 1; T <= 2; T++) {
        et_set_threads(T);
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
            check_layer_w(ET_L_CONV, &convs[i], sizeof convs[i], ins[i], 4, 0);
    }
    dy_zf = 0.5f, want_spwg = 0;
    et_set_threads(threads);
}

static void test_layers_skip(void **state) {
    (void)state;
    et_conv_cfg convs[] = {
        {4, 3, 3, 1, 1, 1, 1, 1}, /* k3 s1 p1 bias */
        {3, 3, 3, 2, 2, 0, 0, 1}, /* k3 s2 p0 on odd input */
        {5, 5, 5, 2, 2, 2, 2, 0}, /* k5 s2 p2 no bias */
        {6, 1, 1, 1, 1, 0, 0, 1}, /* 1x1 direct */
        {4, 3, 2, 2, 1, 1, 0, 1}, /* k3x2 s2x1 p1x0 */
    };
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        check_layer(ET_L_CONV, &convs[i], sizeof convs[i], (et_shape){3, 9, 7, 1}, 3);
    et_linear_cfg lin[] = {{7, 1}, {5, 0}};
    for (size_t i = 0; i < 2; i++) check_layer(ET_L_LINEAR, &lin[i], sizeof lin[i], (et_shape){13, 1, 1, 0}, 4);
}

/* Emulated accumulation (a policy's acc/mul format): the product runs dense
 * in et_qgemm, then the mask is applied; executed MACs are still counted per
 * element. A linear layer with a bf16 accumulator, skip vs dense. */
static void test_emulated(void **state) {
    (void)state;
    const int N = 4, in = 9, out = 6;
    et_format bf;
    assert_int_equal(et_format_parse("bf16", &bf), ET_OK);
    const et_format *accs[1] = {&bf};
    lh d, s;
    et_linear_cfg cfg = {out, 1};
    assert_int_equal(lh_init(&d, ET_L_LINEAR, &cfg, sizeof cfg, (et_shape){in, 1, 1, 0}, N), ET_OK);
    assert_int_equal(lh_init(&s, ET_L_LINEAR, &cfg, sizeof cfg, (et_shape){in, 1, 1, 0}, N), ET_OK);
    lh *hs[2] = {&d, &s};
    for (int k = 0; k < 2; k++) {
        hs[k]->eng.nlayers = 1, hs[k]->eng.acc = accs;
        make_relu_input(hs[k]);
        sparsify(hs[k]->dy, hs[k]->ny, 3, 0.5f);
    }
    uint8_t mb[64];
    et_layer_sparsity sp = {1, 1, 1, NULL, mb, NULL, NULL, NULL};
    s.sp = &sp;
    assert_int_equal(lh_ff(&d), ET_OK), assert_int_equal(lh_ff(&s), ET_OK);
    assert_true(bits_equal(s.y, d.y, d.ny));
    int emulated = 0; /* the bf16 accumulator really ran: results differ from fp32 sums */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double e = d.l.params[1].data[o];
            for (int i = 0; i < in; i++) e += (double)d.x[n * in + i] * d.l.params[0].data[o * in + i];
            emulated |= fabs(d.y[n * out + o] - e) > 1e-4;
        }
    assert_true(emulated);
    assert_int_equal(lh_ep(&d), ET_OK), assert_int_equal(lh_ep(&s), ET_OK);
    for (int64_t i = 0; i < d.nx; i++) assert_true(s.dx[i] == (d.x[i] != 0.0f ? d.dx[i] : 0.0f));
    assert_int_equal(lh_wg(&d), ET_OK), assert_int_equal(lh_wg(&s), ET_OK);
    assert_true(bits_equal(s.l.params[0].grad, d.l.params[0].grad, d.l.params[0].n));
    counts want = linear_count(N, in, out, s.x, s.l.params[0].data, s.dy);
    assert_int_equal(s.eng.total.macs_executed[ET_FF], want.ff);
    assert_int_equal(s.eng.total.macs_executed[ET_EP], want.ep);
    assert_int_equal(s.eng.total.macs_executed[ET_WG], want.wg);
    for (int st = 0; st < ET_NSTAGES; st++) assert_int_equal(s.eng.total.macs_cpu[st], s.eng.total.macs_dense[st]);
    lh_free(&d), lh_free(&s);
}

/* -------------------------------------------------- speculation, layers */

/* The documented B-bit predictor, written out per output from scalars. */
static int8_t ref_code(float x, float absmax, int bits) {
    float inv = absmax > 0 ? 127.0f / absmax : 0.0f;
    float v = x * inv;
    long c = v >= 127.0f ? 127 : v <= -127.0f ? -127 : lrintf(v);
    long m = labs(c) / (1L << (8 - bits)); /* magnitude MSBs */
    return (int8_t)(c < 0 ? -m : m);
}

static float ref_exp(float x) {
    if (x == 0.0f) return 0.0f;
    float m = 1.0f, a = fabsf(x);
    while (m * 2.0f <= a) m *= 2.0f;
    while (m > a) m /= 2.0f;
    return x < 0 ? -m : m;
}

static float absmaxf(const float *x, int64_t n) {
    float a = 0;
    for (int64_t i = 0; i < n; i++) a = fmaxf(a, fabsf(x[i]));
    return a;
}

/* Linear: y[n][o] = sum_i x[n][i] w[o][i] + b[o]. With skip (FF skipping
 * zeros, as speculate always runs) every third input is 0, and with wzero
 * one weight too: the executed count is then the brute-force count of
 * products with two non-zero operands over the kept outputs (weights
 * without zero take the prediction's row counts, matmul.c spec_count; a zero
 * weight the counting kernels). */
static void check_spec_linear(int bits, int skip, int wzero) {
    const int N = 6, in = 11, out = 5;
    lh h;
    et_linear_cfg cfg = {out, 1};
    assert_int_equal(lh_init(&h, ET_L_LINEAR, &cfg, sizeof cfg, (et_shape){in, 1, 1, 0}, N), ET_OK);
    if (bits == ET_SPEC_EXP) /* powers-of-two sums in this range are exact in float */
        for (int64_t i = 0; i < h.nx; i++) h.x[i] = 0.25f + 3.0f * fabsf(h.x[i]);
    float *w = h.l.params[0].data, *b = h.l.params[1].data;
    if (skip)
        for (int64_t i = 0; i < h.nx; i += 3) h.x[i] = 0.0f;
    if (wzero) w[7] = 0.0f;
    uint8_t *mask = calloc((size_t)N * out, 1);
    size_t wsb = et_spec_ws_bytes(bits, N, out, in);
    void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
    h.eng.spec_ws = ws, h.eng.spec_ws_bytes = wsb;
    et_spec_stats stats = {0};
    et_spec spec = {bits, absmaxf(h.x, h.nx), absmaxf(w, h.l.params[0].n), b, 0, mask, out, 1, &stats, NULL, 0, NULL, NULL, NULL};
    et_layer_sparsity sp = {skip, 0, 0, &spec, NULL, NULL, NULL, NULL};
    h.sp = &sp;
    assert_int_equal(lh_ff(&h), ET_OK);
    uint64_t pz = 0, tz = 0, fz = 0, mz = 0, nzk = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            float est;
            double exact = 0;
            if (bits == ET_SPEC_EXP) {
                float s = 0;
                for (int i = 0; i < in; i++) s += ref_exp(h.x[n * in + i]) * ref_exp(w[o * in + i]);
                est = s + b[o];
            } else {
                long S = 0;
                for (int i = 0; i < in; i++)
                    S += (long)ref_code(h.x[n * in + i], spec.absmax_a, bits) * ref_code(w[o * in + i], spec.absmax_b, bits);
                float step = (float)(1 << (8 - bits));
                float sa = spec.absmax_a / 127.0f * step, sb = spec.absmax_b / 127.0f * step;
                est = (sa * sb) * (float)S + b[o];
            }
            for (int i = 0; i < in; i++) exact += (double)h.x[n * in + i] * w[o * in + i];
            int want = !(est <= 0.0f);
            assert_int_equal(mask[n * out + o], want);
            float y = h.y[n * out + o];
            if (!want) assert_true(y == 0.0f); /* predicted zeros stay exactly 0, bias included */
            else assert_true(fabs(y - (exact + b[o])) < 1e-4);
            int tzero = exact + b[o] <= 0; /* (no ties in this data) */
            pz += !want, tz += tzero, fz += !want && !tzero, mz += want && tzero;
            for (int i = 0; i < in && want; i++) nzk += h.x[n * in + i] != 0.0f && w[o * in + i] != 0.0f;
        }
    assert_int_equal(stats.outputs, N * out);
    assert_int_equal(stats.estimate_macs, N * out * in);
    assert_int_equal(stats.predicted_zero, pz);
    assert_int_equal(stats.checked, N * out);
    assert_int_equal(stats.true_zero, tz);
    assert_int_equal(stats.false_zero, fz);
    assert_int_equal(stats.missed_zero, mz);
    assert_int_equal(h.eng.total.outputs_masked[ET_FF], pz);
    assert_int_equal(h.eng.total.macs_executed[ET_FF], skip ? nzk : (uint64_t)(N * out - pz) * in);
    if (skip) assert_true(nzk < (uint64_t)(N * out - pz) * in); /* the zeros did count */
    free(mask), free(ws);
    lh_free(&h);
}

static void test_spec_predictor(void **state) {
    (void)state;
    for (int b = 1; b <= 8; b++)
        for (int v = 0; v < 3; v++) check_spec_linear(b, v > 0, v > 1);
    check_spec_linear(ET_SPEC_EXP, 0, 0);
    check_spec_linear(ET_SPEC_EXP, 1, 0);
    check_spec_linear(ET_SPEC_EXP, 1, 1);
    /* the code function itself, at the edges */
    assert_int_equal(et_spec_code(1.0f, 127.0f, 8), 127);
    assert_int_equal(et_spec_code(-1.0f, 127.0f, 4), -7);
    assert_int_equal(et_spec_code(-0.1f, 127.0f, 4), 0); /* -13 -> magnitude 13 >> 4 = 0 */
    assert_int_equal(et_spec_code(0.5f, 127.0f, 2), 1);  /* 63.5 rounds to 64; 64 >> 6 = 1 */
    assert_int_equal(et_spec_code(0.49f, 127.0f, 2), 0); /* 62 >> 6 = 0 */
    assert_int_equal(et_spec_code(NAN, 127.0f, 8), 0);
    assert_true(et_spec_exp(3.0f) == 2.0f && et_spec_exp(-0.3f) == -0.25f && et_spec_exp(0.0f) == 0.0f);
}

#if defined(__x86_64__) || defined(_M_X64)
void et_spec_codes_row_avx512(const float *x, int n, float inv, int bits, int8_t *out);
/* The vector code path equals et_spec_code element by element: random values
 * around every rounding tie and clamp, specials, every bit width, row tails. */
static void test_spec_codes_avx512(void **state) {
    (void)state;
    if (et_cpu_isa() < ET_ISA_AVX512) skip();
    enum { N = 4099 };
    static float x[N];
    static int8_t got[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        int kind = rand() % 6;
        if (kind == 0) x[i] = ((float)(rand() % 301) - 150.0f) * 0.5f / 127.0f; /* ties at inv = 127 */
        else if (kind == 1) x[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * 3.0f;
        else if (kind == 2) x[i] = (rand() & 1 ? 1.0f : -1.0f) * (float)(rand() % 8);
        else if (kind == 3) x[i] = (float[]){NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e30f, -1e-30f}[rand() % 7];
        else x[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * 2.0f;
    }
    const float invs[] = {127.0f, 127.0f / 1.5f, 0.0f, 1e-3f};
    for (int b = 1; b <= 8; b++)
        for (size_t q = 0; q < sizeof invs / sizeof invs[0]; q++)
            for (int n = 1; n <= N; n += n < 40 ? 1 : 997) {
                memset(got, 0x55, sizeof got);
                et_spec_codes_row_avx512(x, n, invs[q], b, got);
                for (int i = 0; i < n; i++)
                    if (got[i] != et_spec_code(x[i], invs[q], b))
                        fail_msg("bits %d inv %g: x=%g code %d, want %d", b, invs[q], x[i], got[i],
                                 et_spec_code(x[i], invs[q], b));
                assert_int_equal(got[n < N ? n : N - 1] == 0x55, n < N); /* nothing past the row */
            }
}
#else
static void test_spec_codes_avx512(void **state) { (void)state; skip(); }
#endif

/* Conv at B bits: the mask equals a scalar predictor over the direct
 * convolution (A = W codes, B = input codes incl. padding zeros). */
static void test_spec_conv(void **state) {
    (void)state;
    const int N = 2, bits = 3;
    et_conv_cfg cfg = {4, 3, 3, 2, 1, 1, 1, 1};
    lh h;
    assert_int_equal(lh_init(&h, ET_L_CONV, &cfg, sizeof cfg, (et_shape){3, 7, 6, 1}, N), ET_OK);
    const et_layer *l = &h.l;
    const int Co = l->out.c, Ho = l->out.h, Wo = l->out.w, Ci = 3, H = 7, W = 6;
    const int64_t ny = h.ny;
    uint8_t *mask = calloc((size_t)ny, 1);
    int M, Nn, K;
    et_layer_ff_dims(l, N, &M, &Nn, &K);
    size_t wsb = et_spec_ws_bytes(bits, M, Nn, K);
    void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
    h.eng.spec_ws = ws, h.eng.spec_ws_bytes = wsb;
    float aw = absmaxf(h.l.params[0].data, h.l.params[0].n), ax = absmaxf(h.x, h.nx);
    et_spec spec = {bits, aw, ax, h.l.params[1].data, 1, mask, N * Ho * Wo, 0, NULL, NULL, 0, NULL, NULL, NULL};
    et_layer_sparsity sp = {0, 0, 0, &spec, NULL, NULL, NULL, NULL};
    h.sp = &sp;
    assert_int_equal(lh_ff(&h), ET_OK);
    const float *w = h.l.params[0].data, *b = h.l.params[1].data;
    float step = (float)(1 << (8 - bits)), s = (aw / 127.0f * step) * (ax / 127.0f * step);
    int64_t zeros = 0;
    for (int co = 0; co < Co; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    long S = 0;
                    for (int ci = 0; ci < Ci; ci++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = oy * 2 - 1 + ky, ix = ox - 1 + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                S += (long)ref_code(w[((co * Ci + ci) * 3 + ky) * 3 + kx], aw, bits) *
                                     ref_code(h.x[((ci * N + n) * H + iy) * W + ix], ax, bits);
                            }
                    int want = !(s * (float)S + b[co] <= 0.0f);
                    int64_t e = (((int64_t)co * N + n) * Ho + oy) * Wo + ox;
                    assert_int_equal(mask[e], want);
                    if (!want) assert_true(h.y[e] == 0.0f), zeros++;
                }
    assert_true(zeros > 0 && zeros < ny); /* the case exercises both */
    free(mask), free(ws);
    lh_free(&h);
}

/* A speculated row-major product straight through et_matmul_run (the
 * shape of conv FF, where the fused VNNI prediction applies on CPUs that
 * have it): the mask equals the scalar predictor, C equals et_sgemm masked
 * bit for bit, and the executed MACs equal a brute-force enumeration, with
 * and without zeros in A, per-row and per-column bias, odd K and partial
 * panels, at 1 and 2 threads. */
static void test_spec_product(void **state) {
    (void)state;
    static const int shapes[][3] = {{19, 77, 45}, {8, 32, 4}, {33, 100, 131}, {1, 5, 3}};
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int bits = 1; bits <= 8; bits += 3)
            for (int variant = 0; variant < 4; variant++) {
                const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                const int lda = K + 2, ldb = N + 3, ldc = N + 1, ldm = N + 4;
                const int azeros = variant & 1, brows = !(variant & 2);
                float *A = malloc(sizeof(float) * (size_t)M * lda), *B = malloc(sizeof(float) * (size_t)K * ldb);
                float *C = malloc(sizeof(float) * (size_t)M * ldc), *D = malloc(sizeof(float) * (size_t)M * ldc);
                float *bias = malloc(sizeof(float) * (size_t)(M > N ? M : N));
                uint8_t *mask = malloc((size_t)M * ldm);
                assert_true(A && B && C && D && bias && mask);
#define RNDF() ((float)((r = r * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 8388608.0f - 1.0f)
                for (int i = 0; i < M * lda; i++) {
                    float v = RNDF();
                    A[i] = azeros && fabsf(v) < 0.3f ? 0.0f : v;
                }
                for (int i = 0; i < K * ldb; i++) {
                    float v = RNDF();
                    B[i] = v < 0.1f ? 0.0f : v; /* relu-like: about 55% zeros */
                }
                for (int i = 0; i < (M > N ? M : N); i++) bias[i] = 0.2f * RNDF();
#undef RNDF
                const float aa = absmaxf(A, (int64_t)M * lda), ab = absmaxf(B, (int64_t)K * ldb);
                size_t wsb = et_spec_ws_bytes(bits, M, N, K);
                void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
                assert_non_null(ws);
                et_spec_stats stats;
                memset(&stats, 0, sizeof stats);
                et_spec spec = {bits, aa, ab, bias, brows, mask, ldm, 0, &stats, NULL, 0, NULL, NULL, NULL};
                /* what a conv layer hands over: B's codes (made from the whole
                 * tensor at once), B's column counts, A's packed codes, and a
                 * checked call (its dense product serves the masked FF) */
                int8_t *bc = malloc((size_t)K * ldb);
                int32_t *colnz = calloc((size_t)N, sizeof(int32_t));
                uint32_t *ap = malloc(et_spec_a_vnni_bytes(M, K));
                assert_true(bc && colnz && ap);
                et_spec_code_tensor(B, (int64_t)K * ldb, ab, bits, bc);
                for (int k = 0; k < K; k++)
                    for (int j = 0; j < N; j++) colnz[j] += B[k * ldb + j] != 0.0f;
                const int packed = et_spec_pack_a(A, M, K, lda, aa, bits, ap);
                for (int T = 1; T <= 2; T++)
                    for (int given = 0; given < 3; given++) {
                    spec.b_codes = given ? bc : NULL, spec.ldb_codes = ldb, spec.b_colnz = given ? colnz : NULL;
                    spec.a_vnni = given == 2 && packed ? ap : NULL;
                    spec.check = given == 2;
                    et_engine eng;
                    memset(&eng, 0, sizeof eng);
                    eng.spec_ws = ws, eng.spec_ws_bytes = wsb;
                    memset(mask, 7, (size_t)M * ldm);
                    for (int i = 0; i < M * ldc; i++) C[i] = NAN;
                    et_matmul mm = {ET_FF, -1, 0, 0, M, N, K, A, lda, B, ldb, C, ldc, 0.0f, 1, NULL, 0, &spec, 0, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL};
                    et_set_threads(T);
                    assert_int_equal(et_matmul_run(&eng, &mm), ET_OK);
                    et_set_threads(1);
                    et_sgemm(0, 0, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, D, ldc);
                    uint64_t elem = 0, zeros = 0;
                    const float step = (float)(1 << (8 - bits)), sc = (aa / 127.0f * step) * (ab / 127.0f * step);
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            long S = 0;
                            for (int k = 0; k < K; k++)
                                S += (long)ref_code(A[i * lda + k], aa, bits) * ref_code(B[k * ldb + j], ab, bits);
                            int want = !(sc * (float)S + bias[brows ? i : j] <= 0.0f);
                            if (mask[i * ldm + j] != want)
                                fail_msg("M=%d N=%d K=%d bits=%d v=%d T=%d: mask[%d,%d] = %d, want %d", M, N, K, bits,
                                         variant, T, i, j, mask[i * ldm + j], want);
                            float e = want ? D[i * ldc + j] : 0.0f;
                            if (memcmp(&e, &C[i * ldc + j], sizeof e))
                                fail_msg("M=%d N=%d K=%d bits=%d v=%d T=%d: C[%d,%d] = %g, want %g", M, N, K, bits,
                                         variant, T, i, j, C[i * ldc + j], e);
                            zeros += !want;
                            if (want)
                                for (int k = 0; k < K; k++) elem += A[i * lda + k] != 0.0f && B[k * ldb + j] != 0.0f;
                        }
                    if (eng.total.macs_executed[ET_FF] != elem)
                        fail_msg("M=%d N=%d K=%d bits=%d v=%d T=%d: executed %llu, want %llu", M, N, K, bits, variant,
                                 T, (unsigned long long)eng.total.macs_executed[ET_FF], (unsigned long long)elem);
                    assert_int_equal(eng.total.outputs_masked[ET_FF], zeros);
                }
                free(bc), free(colnz), free(ap);
                free(A), free(B), free(C), free(D), free(bias), free(mask), free(ws);
            }
}

/* ------------------------------------------------------ whole models */

static const char *spec_text =
    "input 2 10 10\n"
    "conv 6 k=3 s=2 p=1\n"   /* 0: input from data: no EP */
    "relu\n"
    "conv 8 k=3 p=1\n"       /* 2: input relu: ep mask; output -> bn: no speculation */
    "bn\n"
    "relu\n"
    "residual\n"
    "  conv 8 k=3 p=1\n"     /* input relu (shared with the shortcut): ep mask; speculates */
    "  relu\n"
    "  conv 8 k=1\n"         /* direct 1x1, input relu; output -> add: no speculation */
    "end\n"
    "relu\n"
    "maxpool k=2\n"
    "conv 8 k=3 p=1\n"       /* input maxpool of relu: ep mask; speculates */
    "relu\n"
    "avgpool k=2\n"
    "conv 8 k=1\n"           /* input avgpool of relu: ep mask; output -> flatten: no speculation */
    "flatten\n"
    "linear 12\n"            /* input flatten of a conv output (not relu): no ep mask; speculates */
    "relu\n"
    "linear 3\n";            /* input relu: ep mask; output is the logits */

static et_model *make_model(const et_sparsity *sp, int batch) {
    et_model *m = NULL;
    assert_int_equal(et_model_parse(spec_text, "sp", &m), ET_OK);
    if (sp) assert_int_equal(et_model_set_sparsity(m, sp), ET_OK);
    et_optim o = et_optim_default(ET_OPT_SGD);
    o.momentum = 0.9f;
    assert_int_equal(et_model_plan(m, batch, &o), ET_OK);
    assert_int_equal(et_model_init_he(m, 11), ET_OK);
    return m;
}

static void run_steps(et_model *m, int batch, int steps, float *losses) {
    uint8_t labels[64];
    for (int s = 0; s < steps; s++) {
        float *x = et_model_input(m);
        for (int64_t i = 0; i < (int64_t)batch * 200; i++) x[i] = sinf((float)(i * 3 + s * 17) * 0.37f) + 0.2f;
        for (int i = 0; i < batch; i++) labels[i] = (uint8_t)((i + s) % 3);
        assert_int_equal(et_model_train_step(m, labels, batch, 0.05f, &losses[s]), ET_OK);
    }
}

/* Two models train identically (bit for bit) and within tolerance. */
static void compare_models(et_model *a, et_model *b, const float *la, const float *lb, int steps) {
    for (int s = 0; s < steps; s++) assert_true(fabsf(la[s] - lb[s]) <= 1e-5f * (1 + fabsf(la[s])));
    assert_memory_equal(la, lb, sizeof(float) * (size_t)steps);
    for (int t = 0; t < et_model_num_tensors(a); t++) {
        float *da, *db;
        int64_t n;
        et_model_tensor(a, t, NULL, &da, &n, NULL);
        et_model_tensor(b, t, NULL, &db, NULL, NULL);
        assert_close(db, da, n, "param");
        assert_true(bits_equal(da, db, n));
    }
}

static void test_model_skip(void **state) {
    (void)state;
    const int B = 5, S = 3;
    et_sparsity none, skip;
    et_sparsity_parse("none", NULL, &none);
    et_sparsity_parse("skip", NULL, &skip);
    et_model *a = make_model(&none, B), *b = make_model(&skip, B);
    float la[S], lb[S];
    run_steps(a, B, S, la);
    run_steps(b, B, S, lb);
    compare_models(a, b, la, lb, S);
    /* the per-node rules (see the spec text above) */
    static const int want_ep[] = {0, 1, 1, 1, 1, 1, 0, 1};
    int nmm = 0;
    for (int i = 0; i < et_model_num_nodes(b); i++) {
        const char *kind;
        const et_counters *c, *cd;
        et_model_node_info(b, i, NULL, &kind, &c);
        et_model_node_info(a, i, NULL, NULL, &cd);
        int ff, ep, bw, sp;
        et_model_node_sparsity_plan(b, i, &ff, &ep, &bw, &sp);
        int mm = !strcmp(kind, "conv") || !strcmp(kind, "linear");
        assert_int_equal(ff, mm);
        assert_int_equal(bw, mm);
        assert_int_equal(sp, 0); /* skip does not speculate */
        if (!mm) {
            assert_int_equal(ep, 0);
            continue;
        }
        assert_true(nmm < (int)(sizeof want_ep / sizeof want_ep[0]));
        assert_int_equal(ep, want_ep[nmm]);
        /* an unmasked EP leaves every output computed (dense in that respect) */
        if (!ep) assert_int_equal(c->outputs_masked[ET_EP], 0);
        else assert_true(c->outputs_masked[ET_EP] > 0);
        assert_int_equal(cd->macs_executed[ET_FF], cd->macs_dense[ET_FF]);
        assert_true(c->macs_executed[ET_FF] <= c->macs_dense[ET_FF]);
        nmm++;
    }
    assert_int_equal(nmm, 8);
    et_memory_plan pa = et_model_memory(a), pb = et_model_memory(b);
    assert_int_equal(pa.sparsity, 0);
    assert_true(pb.sparsity > 0 && pb.total >= pa.total + pb.sparsity);
    et_model_free(a), et_model_free(b);
}

/* A conv whose EP product has K = Cout = 64 and a sparse dY (ReLU x max-pool
 * routing) runs the column-sparse kernel on AVX-512 although the layer passes
 * its exact counts (matmul.c's known-count branch): training is bit-identical
 * to none, and the CPU ran fewer EP MACs than dense there. */
/* Trains spec (batch 6, 3 steps, SGD momentum 0.9, He init from seed) under
 * none into m[0] and skip into m[1], and checks that both give the same bits. */
static void train_none_skip(const char *spec, uint64_t seed, et_model *m[2]) {
    const int B = 6, S = 3;
    et_sparsity sp[2];
    et_sparsity_parse("none", NULL, &sp[0]);
    et_sparsity_parse("skip", NULL, &sp[1]);
    float loss[2][3];
    for (int v = 0; v < 2; v++) {
        assert_int_equal(et_model_parse(spec, "pair", &m[v]), ET_OK);
        assert_int_equal(et_model_set_sparsity(m[v], &sp[v]), ET_OK);
        et_optim o = et_optim_default(ET_OPT_SGD);
        o.momentum = 0.9f;
        assert_int_equal(et_model_plan(m[v], B, &o), ET_OK);
        assert_int_equal(et_model_init_he(m[v], seed), ET_OK);
        run_steps(m[v], B, S, loss[v]);
    }
    compare_models(m[0], m[1], loss[0], loss[1], S);
}

static void test_model_skip_cols(void **state) {
    (void)state;
    const char *spec = "input 2 10 10\nconv 8 k=3 p=1\nrelu\nconv 64 k=3 p=1\nrelu\nmaxpool k=2\n"
                       "conv 64 k=3 p=1\nrelu\nmaxpool k=2\nflatten\nlinear 3\n";
    et_model *m[2];
    train_none_skip(spec, 5, m);
    const et_counters *c;
    const char *kind;
    et_model_node_info(m[1], 5, NULL, &kind, &c); /* the second 64-channel conv */
    assert_string_equal(kind, "conv");
    assert_true(c->macs_executed[ET_EP] < c->macs_dense[ET_EP] / 2);
    if (et_cpu_isa() >= ET_ISA_AVX512 && !getenv("ET_ISA"))
        assert_true(c->macs_cpu[ET_EP] < c->macs_dense[ET_EP] / 2);
    else
        assert_int_equal(c->macs_cpu[ET_EP], c->macs_dense[ET_EP]);
    et_model_free(m[0]), et_model_free(m[1]);
}

/* Conv EP and WG without the column matrix (kernels/spconv.h): a model whose
 * convolutions have 16 and 32 input channels trains under skip with none's
 * bits at 1 and 2 threads; the 16 -> 32 conv's EP (K = Cout = 32, below the
 * column-sparse kernel's K) runs fewer CPU MACs than dense only through the
 * column-free kernel, on AVX-512. */
static void test_model_skip_implicit(void **state) {
    (void)state;
    const char *spec = "input 1 12 12\nconv 16 k=3 p=1\nrelu\nconv 32 k=3 p=1\nrelu\nmaxpool k=3\n"
                       "conv 32 k=3 p=1\nrelu\nmaxpool k=2\nflatten\nlinear 3\n";
    for (int t = 1; t <= 2; t++) {
        et_set_threads(t);
        et_model *m[2];
        train_none_skip(spec, 7, m);
        const et_counters *c;
        const char *kind;
        et_model_node_info(m[1], 2, NULL, &kind, &c);
        assert_string_equal(kind, "conv");
        if (et_cpu_isa() >= ET_ISA_AVX512 && !getenv("ET_ISA"))
            assert_true(c->macs_cpu[ET_EP] < c->macs_dense[ET_EP] / 2);
        et_model_free(m[0]), et_model_free(m[1]);
    }
    et_set_threads(0);
}

static void test_model_speculate(void **state) {
    (void)state;
    const int B = 5, S = 3;
    et_sparsity none, exact, b4;
    et_sparsity_parse("none", NULL, &none);
    et_sparsity_parse("speculate", "32", &exact);
    et_sparsity_parse("speculate", "4", &b4);
    exact.spec_check_every = b4.spec_check_every = 1;
    et_model *a = make_model(&none, B), *e = make_model(&exact, B), *q = make_model(&b4, B);
    float la[S], le[S], lq[S];
    run_steps(a, B, S, la);
    run_steps(e, B, S, le);
    run_steps(q, B, S, lq);
    compare_models(a, e, la, le, S); /* exact speculation: dense bit for bit */
    static const int want_spec[] = {1, 0, 1, 0, 1, 0, 1, 0};
    int nmm = 0;
    for (int i = 0; i < et_model_num_nodes(e); i++) {
        const char *kind;
        et_model_node_info(e, i, NULL, &kind, NULL);
        if (strcmp(kind, "conv") && strcmp(kind, "linear")) continue;
        int sp;
        et_model_node_sparsity_plan(e, i, NULL, NULL, NULL, &sp);
        assert_int_equal(sp, want_spec[nmm]);
        et_spec_stats se, sq;
        et_model_spec_stats(e, i, &se);
        et_model_spec_stats(q, i, &sq);
        if (!sp) {
            assert_int_equal(se.outputs, 0);
        } else {
            assert_true(se.outputs > 0 && se.checked == se.outputs);
            assert_int_equal(se.false_zero, 0);
            assert_int_equal(se.missed_zero, 0);
            assert_int_equal(se.true_zero, se.predicted_zero);
            /* B bits: predicted = true - missed + false on the checked products */
            assert_int_equal(sq.checked_predicted_zero, sq.true_zero - sq.missed_zero + sq.false_zero);
            assert_true(sq.checked == sq.outputs && sq.outputs == se.outputs);
        }
        nmm++;
    }
    for (int s = 0; s < S; s++) assert_true(isfinite(lq[s]));
    /* B bits at one thread trains the same bits as at two */
    int threads = et_get_threads();
    et_set_threads(1);
    et_model *q1 = make_model(&b4, B);
    float l1[S];
    run_steps(q1, B, S, l1);
    et_set_threads(threads);
    compare_models(q, q1, lq, l1, S);
    et_model_free(a), et_model_free(e), et_model_free(q), et_model_free(q1);
}

/* The activations' absmax that the FFs take as they write their outputs
 * (et_lctx.out_amax: conv epilogues, relu, maxpool, flatten) is, for every
 * tensor that has one after a forward pass, the absmax of its values: the
 * speculation's scale. Only under speculation with 1..8 bits. */
static void check_tensor_amax(et_model *m, int batch, int want_known) {
    float *x = et_model_input(m);
    for (int64_t i = 0; i < (int64_t)batch * 200; i++) x[i] = sinf((float)(i * 7) * 0.29f) * 3.0f - 0.5f;
    x[5] = 40.0f; /* one large input, so that a layer's max is not the same everywhere */
    assert_int_equal(et_model_forward(m, batch, 1, NULL), ET_OK);
    int known = 0;
    for (int t = 0; t < m->ntensors; t++) {
        const et_tensor *tt = &m->tensors[t];
        if (tt->amax < 0.0f) continue;
        const float want = et_absmax_f32(tt->val, (size_t)et_shape_numel(tt->shape) * (size_t)batch, 1);
        assert_true(want > 0.0f);
        assert_true(tt->amax == want);
        known++;
    }
    if (want_known) assert_true(known >= 6); /* conv + relu (three), relu after bn and after linear, maxpool */
    else assert_int_equal(known, 0);
    /* every speculated layer but the first (its input is the data) found its
     * input's absmax taken: relu after bn, maxpool, flatten of a conv */
    for (int i = 1; i < m->nnodes && want_known; i++) {
        int sp;
        et_model_node_sparsity_plan(m, i, NULL, NULL, NULL, &sp);
        if (sp) assert_true(m->tensors[m->nodes[i].in].amax >= 0.0f);
    }
}

static void test_model_amax(void **state) {
    (void)state;
    const int B = 5;
    et_sparsity none, b4, b32;
    et_sparsity_parse("none", NULL, &none);
    et_sparsity_parse("speculate", "4", &b4);
    et_sparsity_parse("speculate", "32", &b32);
    b4.spec_check_every = 0;
    et_model *a = make_model(&b4, B), *n = make_model(&none, B), *e = make_model(&b32, B);
    check_tensor_amax(a, B, 1);
    check_tensor_amax(n, B, 0); /* nothing wants it: no work */
    check_tensor_amax(e, B, 0);
    int threads = et_get_threads();
    et_set_threads(1);
    et_model *a1 = make_model(&b4, B);
    check_tensor_amax(a1, B, 1);
    et_set_threads(threads);
    et_model_free(a), et_model_free(n), et_model_free(e), et_model_free(a1);
}

/* ---------------------------------------------------------------- CLI */

static void test_cli(void **state) {
    (void)state;
    const char *cli = getenv("ET_CLI") ? getenv("ET_CLI") : "build/edgetrain";
    if (access(cli, X_OK)) skip();
    const char *bad[] = {
        "train --model mlp --data fmnist --steps 1 --sparsity bogus",
        "train --model mlp --data fmnist --steps 1 --sparsity none,skip",
        "train --model mlp --data fmnist --steps 1 --sparsity skip,,speculate",
        "train --model mlp --data fmnist --steps 1 --sparsity speculate --spec-bits 0",
        "train --model mlp --data fmnist --steps 1 --sparsity speculate --spec-bits 9",
        "train --model mlp --data fmnist --steps 1 --sparsity speculate --spec-bits four",
        "train --model mlp --data fmnist --steps 1 --sparsity skip --spec-bits 4",
        "train --model mlp --data fmnist --steps 1 --sparsity speculate --spec-check-every -1",
        "eval --model mlp --checkpoint x.st --data fmnist --sparsity prune",
        "eval --model mlp --checkpoint x.st --data fmnist --sparsity bogus",
        "eval --model mlp --checkpoint x.st --data fmnist --sparsity speculate --spec-bits 33",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>/tmp/et_sp_err.%d", cli, bad[i], (int)getpid());
        int st = system(cmd);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) == 0) fail_msg("accepted: %s", bad[i]);
        char path[64], line[512];
        snprintf(path, sizeof path, "/tmp/et_sp_err.%d", (int)getpid());
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        int lines = 0;
        while (fgets(line, sizeof line, f)) lines++;
        fclose(f);
        remove(path);
        assert_int_equal(lines, 1);
    }
}

/* The JSON summary of a speculating run: the new keys next to the old ones. */
static void test_cli_json(void **state) {
    (void)state;
    const char *cli = getenv("ET_CLI") ? getenv("ET_CLI") : "build/edgetrain";
    if (access(cli, X_OK) || access("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", R_OK)) skip();
    char json[128], cmd[1024];
    snprintf(json, sizeof json, "/tmp/et_sp_json.%d.json", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "%s train --model mlp --data fmnist --steps 3 --train-limit 300 --test-limit 0 --quiet --threads 2 "
             "--sparsity speculate --spec-bits 3 --spec-check-every 2 --traffic-every 1 --json %s >/dev/null",
             cli, json);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(json, "r");
    assert_non_null(f);
    static char buf[1 << 18];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    remove(json);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    const char *keep[] = {"macs_dense", "macs_executed", "layers", "traffic", "peak_memory_bytes", "macs_cpu", "sparsity"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) assert_non_null(cJSON_GetObjectItem(j, keep[i]));
    cJSON *sp = cJSON_GetObjectItem(j, "sparsity");
    assert_string_equal(cJSON_GetObjectItem(sp, "mode")->valuestring, "speculate");
    assert_int_equal(cJSON_GetObjectItem(sp, "spec_bits")->valueint, 3);
    cJSON *tot = cJSON_GetObjectItem(cJSON_GetObjectItem(sp, "speculation"), "total");
    assert_non_null(tot);
    double outputs = cJSON_GetObjectItem(tot, "outputs")->valuedouble;
    assert_true(outputs == 3.0 * 100 * (256 + 128)); /* mlp: two hidden layers feed a relu, 3 steps of 100 */
    assert_true(cJSON_GetObjectItem(tot, "checked_outputs")->valuedouble == 2.0 * 100 * (256 + 128)); /* steps 0, 2 */
    assert_non_null(cJSON_GetObjectItem(tot, "false_zeros"));
    cJSON *L;
    int with_spec = 0;
    cJSON_ArrayForEach(L, cJSON_GetObjectItem(j, "layers")) {
        cJSON *ls = cJSON_GetObjectItem(L, "sparsity");
        assert_non_null(ls);
        with_spec += cJSON_IsTrue(cJSON_GetObjectItem(ls, "speculate"));
        for (int s = 0; s < ET_NSTAGES; s++) {
            const char *st = et_stage_name((et_stage)s);
            double d = cJSON_GetObjectItem(cJSON_GetObjectItem(L, "macs_dense"), st)->valuedouble;
            double e = cJSON_GetObjectItem(cJSON_GetObjectItem(L, "macs_executed"), st)->valuedouble;
            double c = cJSON_GetObjectItem(cJSON_GetObjectItem(L, "macs_cpu"), st)->valuedouble;
            assert_true(e <= c && c <= d);
        }
    }
    assert_int_equal(with_spec, 2);
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),           cmocka_unit_test(test_layers_skip),
        cmocka_unit_test(test_layers_skip_spwg),
        cmocka_unit_test(test_layers_skip_lanes),
        cmocka_unit_test(test_emulated),
        cmocka_unit_test(test_spec_predictor),  cmocka_unit_test(test_spec_conv),
        cmocka_unit_test(test_spec_product),
        cmocka_unit_test(test_spec_codes_avx512),
        cmocka_unit_test(test_model_skip),      cmocka_unit_test(test_model_skip_cols),
        cmocka_unit_test(test_model_skip_implicit),
        cmocka_unit_test(test_model_speculate), cmocka_unit_test(test_model_amax),
        cmocka_unit_test(test_cli),             cmocka_unit_test(test_cli_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
