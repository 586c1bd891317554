/* Emulated-accumulation GEMM (et_qgemm) and INT8 GEMM (et_igemm_s8):
 * - qgemm fast path == et_qgemm_ref bit for bit over random shapes (odd
 *   sizes, all ta/tb, beta 0/1, padded leading dimensions) and formats, at 1
 *   and 2 threads; the SIMD random bits == et_qrand (through SR results);
 * - hand cases: fp16 RN accumulation stalls at 2048 when adding ones, at a
 *   value computed here when adding many small values; with SR it does not
 *   (statistically); acc fp32 + mul NULL == a plain float loop in the same order;
 *   integer formats are rejected;
 * - igemm: every path (scalar, AVX2, AVX-512 VNNI) == a plain int32 triple loop
 *   (codes -128..127, K not a multiple of 4/64), float wrapper == scales x sum. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "edgetrain.h"
#include "kernels/igemm.h"
#include "kernels/qgemm.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}
static float frand(void) { return (float)((double)(urand() >> 8) / (double)(1u << 24) * 2.0 - 1.0); }

static et_format fmt(const char *s) {
    et_format f;
    assert_int_equal(et_format_parse(s, &f), ET_OK);
    return f;
}

static float *mat(size_t n, int nan_fill) {
    float *m = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(m);
    for (size_t i = 0; i < n; i++) m[i] = nan_fill ? NAN : frand();
    return m;
}

/* ------------------------------------------------- qgemm: fast == ref */

/* poke_k >= 0: op(A)[1, poke_k] = poke_value (one product out of the range) */
static int poke_k = -1;
static float poke_value;

static void one_case(int ta, int tb, int M, int N, int K, float beta, const char *mul, const char *acc, int threads,
                     float range) {
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int lda = ac + 3, ldb = bc + 1, ldc = N + 2;
    float *A = mat((size_t)ar * lda, 0), *B = mat((size_t)br * ldb, 0);
    for (size_t i = 0; i < (size_t)ar * lda; i++) A[i] *= range;
    if (poke_k >= 0 && M > 1 && poke_k < K) A[ta ? (size_t)poke_k * lda + 1 : (size_t)lda + poke_k] = poke_value;
    float *C0 = mat((size_t)M * ldc, beta == 0.0f);
    float *C1 = malloc(((size_t)M * ldc + 1) * sizeof(float)), *C2 = malloc(((size_t)M * ldc + 1) * sizeof(float));
    assert_non_null(C1);
    assert_non_null(C2);
    memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
    memcpy(C2, C0, (size_t)M * ldc * sizeof(float));
    et_format fm, fa = fmt(acc);
    if (mul) fm = fmt(mul);
    et_qkey key = {12345, 7, 3};
    et_set_threads(threads);
    assert_int_equal(et_qgemm_ref(ta, tb, M, N, K, A, lda, B, ldb, beta, C1, ldc, mul ? &fm : NULL, &fa, &key), ET_OK);
    assert_int_equal(et_qgemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C2, ldc, mul ? &fm : NULL, &fa, &key), ET_OK);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            size_t x = (size_t)i * ldc + j;
            if (memcmp(&C1[x], &C2[x], 4))
                fail_msg("%s x %s ta=%d tb=%d %dx%dx%d beta=%g T=%d: C[%d,%d] ref %a fast %a", mul ? mul : "-", acc,
                         ta, tb, M, N, K, beta, threads, i, j, C1[x], C2[x]);
        }
    free(A), free(B), free(C0), free(C1), free(C2);
}

static void test_fast_equals_ref(void **st) {
    (void)st;
    static const char *const accs[] = {"fp16", "bf16", "e5m2", "e6m5/sr13", "e4m3:sat/sr4", "fp32", "fp16/rz",
                                       "e5m4:nosub/sr", "fp16/sr", "fp32:sat", "e3m0"};
    static const char *const muls[] = {NULL, "e5m2", "fp16", "bf16/sr", "e4m3/rz", "fp32:nosub/sr", "e2m1/sr3"};
    int shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {7, 33, 19}, {5, 16, 64}, {13, 47, 31}, {2, 5, 0}, {9, 70, 3}};
    int n = 0;
    for (size_t a = 0; a < sizeof accs / sizeof *accs; a++)
        for (size_t m = 0; m < sizeof muls / sizeof *muls; m++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
                int t = n++;
                one_case(t & 1, (t >> 1) & 1, shapes[s][0], shapes[s][1], shapes[s][2], (t >> 2) & 1 ? 1.0f : 0.0f,
                         muls[m], accs[a], 1 + (t % 3 == 0), (t % 5 == 0) ? 1e-3f : (t % 7 == 0) ? 300.0f : 1.0f);
            }
    /* all ta/tb x beta at both thread counts on one format pair */
    for (int t = 0; t < 16; t++)
        one_case(t & 1, (t >> 1) & 1, 37, 53, 29, (t >> 2) & 1 ? 1.0f : 0.0f, "e5m2", "e6m5/sr13", 1 + (t >> 3), 1.0f);
}

/* Large values, tiny values (subnormals of the format), inf/NaN in C. */
static void test_fast_equals_ref_extremes(void **st) {
    (void)st;
    one_case(0, 0, 6, 40, 20, 1.0f, "e5m2", "fp16", 2, 1e4f);
    one_case(0, 1, 6, 40, 20, 1.0f, NULL, "e4m3:sat/sr4", 1, 1e-4f);
    one_case(1, 0, 6, 40, 20, 1.0f, NULL, "fp16:nosub/sr", 1, 1e-5f);
    one_case(1, 1, 6, 40, 20, 0.0f, "fp16/rz", "bf16/rz", 2, 1e30f);
    /* inf and NaN in C with beta = 1 */
    int M = 3, N = 20, K = 4;
    float *A = mat((size_t)M * K, 0), *B = mat((size_t)K * N, 0), *C1 = mat((size_t)M * N, 0),
          *C2 = mat((size_t)M * N, 0);
    C1[1] = INFINITY, C1[5] = -INFINITY, C1[30] = NAN;
    memcpy(C2, C1, (size_t)M * N * sizeof(float));
    et_format fa = fmt("fp16/rz");
    assert_int_equal(et_qgemm_ref(0, 0, M, N, K, A, K, B, N, 1.0f, C1, N, NULL, &fa, NULL), ET_OK);
    assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 1.0f, C2, N, NULL, &fa, NULL), ET_OK);
    assert_memory_equal(C1, C2, (size_t)M * N * sizeof(float));
    assert_true(isinf(C1[1]) && isinf(C1[5]) && isnan(C1[30]));
    free(A), free(B), free(C1), free(C2);
    /* one value out of the range late in a long sum: the AVX-512 kernel's
     * chunk that holds it is redone checked, from the sums and generator
     * states its start had */
    static const float pokes[] = {1e-30f, 3e38f, INFINITY, NAN};
    for (int i = 0; i < 4; i++) {
        poke_k = 70, poke_value = pokes[i];
        one_case(i & 1, 0, 9, 37, 100, 0.0f, "e6m5/sr13", "e6m5/sr13", 1 + (i & 1), 1.0f);
        one_case(0, i & 1, 5, 20, 130, 1.0f, "e5m2/sr", "fp16/sr", 2 - (i & 1), 1.0f);
    }
    poke_k = -1;
}

/* Sums that cancel to below the accumulator's normal range while every
 * product is in range: operands are format values near the least normal
 * (2^emin .. 2^(emin+2)), B is +-1 or +-2, so products are exact and sums
 * of neighbours land on the format's subnormal grid. The AVX-512 kernel skips
 * the sums' range check there unless :nosub (qgemm_avx512.c, acc_check). */
static void tiny_case(const char *mul, const char *acc, int emin, int threads) {
    enum { M = 9, N = 37, K = 150 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C1 = malloc(sizeof(float) * M * N),
          *C2 = malloc(sizeof(float) * M * N);
    assert_true(A && B && C1 && C2);
    et_format fm = fmt(mul), fa = fmt(acc), f3 = fmt("e8m3");
    et_qparams q3;
    et_qparams_init(&q3, &f3, 1.0f, NULL);
    for (int i = 0; i < M * K; i++) /* 4 significant bits: on every grid here */
        A[i] = et_quantize_one(&q3, ldexpf(1.0f + (float)(urand() % 3000) / 1000.0f, emin), 0) * (urand() & 1 ? 1 : -1);
    for (int i = 0; i < K * N; i++) B[i] = (float)(1 + (urand() & 1)) * (urand() & 1 ? 1 : -1);
    et_qkey key = {3, 1, 4};
    et_set_threads(threads);
    assert_int_equal(et_qgemm_ref(0, 0, M, N, K, A, K, B, N, 0.0f, C1, N, &fm, &fa, &key), ET_OK);
    assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C2, N, &fm, &fa, &key), ET_OK);
    int tiny = 0;
    for (int e = 0; e < M * N; e++) {
        if (memcmp(&C1[e], &C2[e], 4)) fail_msg("%s x %s: C[%d] ref %a fast %a", mul, acc, e, C1[e], C2[e]);
        tiny += C1[e] != 0 && fabsf(C1[e]) < ldexpf(1.0f, emin);
    }
    if (!strstr(acc, "nosub") && tiny == 0) fail_msg("%s x %s: no sum ended below the normal range", mul, acc);
    free(A), free(B), free(C1), free(C2);
}

/* Products in range whose sums overflow the accumulator (e5m2 products of
 * about +-1000, fp16 sums past 65504), with signs that make some sums come
 * back below max finite afterwards: the kernel's overflow check, and its
 * bound that skips it, against the reference. */
static void over_case(const char *mul, const char *acc, int drift, int threads) {
    enum { M = 6, N = 21, K = 200 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C1 = malloc(sizeof(float) * M * N),
          *C2 = malloc(sizeof(float) * M * N);
    assert_true(A && B && C1 && C2);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) /* rows 0, 2, 4 climb then fall back; rows 1, 3, 5 wander */
            A[i * K + k] = (float)(768 + 256 * (int)(urand() % 4)) * (i % 2 ? (urand() & 1 ? 1 : -1) : k < K / 2 ? 1 : -1);
    for (int i = 0; i < K * N; i++) B[i] = drift ? 1.0f : (urand() & 1 ? 1.0f : -1.0f);
    et_format fm = fmt(mul), fa = fmt(acc);
    et_qkey key = {8, 8, 8};
    et_set_threads(threads);
    assert_int_equal(et_qgemm_ref(0, 0, M, N, K, A, K, B, N, 0.0f, C1, N, &fm, &fa, &key), ET_OK);
    assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C2, N, &fm, &fa, &key), ET_OK);
    for (int e = 0; e < M * N; e++)
        if (memcmp(&C1[e], &C2[e], 4)) fail_msg("%s x %s: C[%d] ref %a fast %a", mul, acc, e, C1[e], C2[e]);
    free(A), free(B), free(C1), free(C2);
}

static void test_overflowing_sums(void **st) {
    (void)st;
    over_case("e5m2", "fp16", 1, 1);
    over_case("e5m2", "fp16:sat", 1, 2);
    over_case("e5m2/sr", "fp16/sr13", 1, 2);
    over_case("e5m2", "fp16", 0, 2);
    over_case("e5m2/sr4", "e5m10:sat/sr9", 0, 1);
}

static void test_tiny_sums(void **st) {
    (void)st;
    tiny_case("fp16", "fp16", -14, 1);
    tiny_case("fp16/sr", "fp16/sr", -14, 2);
    tiny_case("e6m5/sr13", "e6m5/sr13", -30, 2);
    tiny_case("e6m5/sr13", "e5m10/sr11", -14, 1); /* a finer accumulator grid */
    tiny_case("fp16", "fp16:nosub/sr13", -14, 2);  /* flushed: the full check */
    tiny_case("e6m5", "e6m5:nosub", -30, 1);
}

/* ---------------------------------------------------------- hand cases */

/* C[0,0] = sum_k A[k] * 1 with A = a vector, accumulated in fmt. */
static float sum_in(const char *acc, const float *a, int K, uint64_t seed, int fast) {
    float *B = malloc((size_t)K * sizeof(float)), C = 0;
    assert_non_null(B);
    for (int k = 0; k < K; k++) B[k] = 1.0f;
    et_format fa = fmt(acc);
    et_qkey key = {seed, 0, 0};
    et_status s = fast ? et_qgemm(0, 1, 1, 1, K, a, K, B, K, 0.0f, &C, 1, NULL, &fa, &key)
                       : et_qgemm_ref(0, 1, 1, 1, K, a, K, B, K, 0.0f, &C, 1, NULL, &fa, &key);
    assert_int_equal(s, ET_OK);
    free(B);
    return C;
}

static void test_fp16_stagnation(void **st) {
    (void)st;
    enum { K = 5000 };
    float *a = malloc(K * sizeof(float));
    assert_non_null(a);
    /* 2048 + 1 + 1 + ...: fp16 spacing at 2048 is 2, 2049 is a tie -> 2048 (even) */
    a[0] = 2048.0f;
    for (int k = 1; k < K; k++) a[k] = 1.0f;
    assert_true(sum_in("fp16", a, K, 1, 1) == 2048.0f);
    assert_true(sum_in("fp16", a, K, 1, 0) == 2048.0f);
    /* ones from 0: exact up to 2048, then stuck there */
    for (int k = 0; k < K; k++) a[k] = 1.0f;
    assert_true(sum_in("fp16", a, K, 1, 1) == 2048.0f);
    /* 0.01 each (fp32 0.01): fp16 spacing is 2^-6 in [16, 32), half of it
     * (0.0078) < 0.01 so each add still moves by one step; in [32, 64) the
     * spacing is 2^-5 and 0.01 < 2^-6 rounds away: the sum stalls at exactly 32
     * (the true sum is 50). The same by stepping et_quantize by hand: */
    float s = 0;
    et_format f16 = fmt("fp16");
    for (int k = 0; k < K; k++) {
        float t = s + 0.01f, y;
        assert_int_equal(et_quantize(&f16, &t, &y, 1, NULL), ET_OK);
        s = y;
    }
    assert_true(s == 32.0f);
    for (int k = 0; k < K; k++) a[k] = 0.01f;
    assert_true(sum_in("fp16", a, K, 1, 1) == s);
    assert_true(sum_in("fp16", a, K, 1, 0) == s);
    /* stochastic rounding keeps going: the mean over seeds is near 50 */
    double mean = 0;
    for (int seed = 0; seed < 20; seed++) {
        float v = sum_in("fp16/sr", a, K, (uint64_t)seed, 1);
        assert_true(v == sum_in("fp16/sr", a, K, (uint64_t)seed, 0));
        mean += v / 20.0;
    }
    assert_true(fabs(mean - 50.0) < 2.0);
    free(a);
}

/* acc fp32, mul NULL: exactly the plain float loop in the documented order. */
static void test_fp32_plain_loop(void **st) {
    (void)st;
    int M = 11, N = 37, K = 53;
    float *A = mat((size_t)M * K, 0), *B = mat((size_t)K * N, 0), *C = mat((size_t)M * N, 0),
          *C0 = malloc((size_t)M * N * sizeof(float));
    assert_non_null(C0);
    memcpy(C0, C, (size_t)M * N * sizeof(float));
    et_format f32 = fmt("fp32");
    for (int pass = 0; pass < 2; pass++) {
        memcpy(C, C0, (size_t)M * N * sizeof(float));
        assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 1.0f, C, N, NULL, pass ? NULL : &f32, NULL), ET_OK);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                volatile float s = 1.0f * C0[i * N + j];
                for (int k = 0; k < K; k++) {
                    volatile float p = A[i * K + k] * B[k * N + j];
                    s = s + p;
                }
                assert_true(memcmp((const void *)&s, &C[i * N + j], 4) == 0);
            }
    }
    free(A), free(B), free(C), free(C0);
}

static void test_rejects(void **st) {
    (void)st;
    float a = 1, b = 1, c = 0;
    et_format i8 = fmt("int8"), d8 = fmt("dfxp8"), f16 = fmt("fp16");
    assert_int_equal(et_qgemm(0, 0, 1, 1, 1, &a, 1, &b, 1, 0, &c, 1, NULL, &i8, NULL), ET_ERR_INVALID);
    assert_int_equal(et_qgemm(0, 0, 1, 1, 1, &a, 1, &b, 1, 0, &c, 1, &d8, &f16, NULL), ET_ERR_INVALID);
    assert_int_equal(et_qgemm_ref(0, 0, 1, 1, 1, &a, 1, &b, 1, 0, &c, 1, &d8, &f16, NULL), ET_ERR_INVALID);
    assert_int_equal(et_qgemm(0, 0, 2, 1, 1, &a, 0, &b, 1, 0, &c, 1, NULL, &f16, NULL), ET_ERR_INVALID);
    assert_int_equal(et_qgemm(0, 0, 1, 1, 1, &a, 1, &b, 1, 0, &c, 1, &f16, &f16, NULL), ET_OK);
    assert_true(c == 1.0f);
}

/* ------------------------------------------- random bits: statistics */

/* The documented generator, written out here: key_e = et_rand64(et_rand64(seed,
 * 0x5352, tensor), step, e); x_0 = hi32(key_e) (1 if 0); x_t = xorshift32
 * (13, 17, 5) of x_{t-1}; word 0 is lo32(key_e). */
static uint32_t xs32_doc(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static uint32_t rotl_doc(uint32_t x, int r) { return r % 32 ? (x << (r % 32)) | (x >> (32 - r % 32)) : x; }

static void test_word_definition(void **st) {
    (void)st;
    et_format f = fmt("e6m5/sr13");
    et_qkey key = {77, 5, 9};
    et_qparams p;
    et_qparams_init(&p, &f, 1.0f, &key);
    uint64_t sub = et_rand64(77, 0x5352, 5);
    for (uint64_t e = 0; e < 50; e += 7) {
        uint64_t k = et_rand64(sub, 9, e * 1000003u);
        uint32_t x = (uint32_t)(k >> 32) ? (uint32_t)(k >> 32) : 1u;
        assert_true(et_qgemm_word(&p, e * 1000003u, 0) == (uint32_t)k);
        for (uint64_t t = 1; t < 6; t++) {
            x = xs32_doc(x);
            assert_true(et_qgemm_word(&p, e * 1000003u, t) == x);
        }
    }
    /* xorshift32 (13, 17, 5) from 1: the first words, worked by hand */
    assert_true(et_qgemm_xs32(1) == 270369u);
    assert_true(et_qgemm_xs32(270369u) == 67634689u);
}

/* One element's sum written out from the documented order and bit layout,
 * rounding with et_quantize (elementwise, key {seed, tensor, step} does not
 * matter there: the random bits are passed in), for both field layouts, with
 * beta, against et_qgemm and et_qgemm_ref. */
static float doc_round(const char *fs, float v, uint32_t rnd) {
    et_format f = fmt(fs);
    et_qparams q;
    et_qparams_init(&q, &f, 1.0f, NULL);
    return et_quantize_one(&q, v, rnd);
}

static void doc_case(const char *mul, const char *acc, int S_m, int S_a, int f16, int srm, int sra) {
    enum { M = 3, N = 19, K = 40 };
    float A[M * K], B[K * N], C[M * N], Cr[M * N], C0[M * N];
    for (int i = 0; i < M * K; i++) A[i] = frand() * 3;
    for (int i = 0; i < K * N; i++) B[i] = frand();
    for (int i = 0; i < M * N; i++) C0[i] = frand();
    et_format fm = fmt(mul), fa = fmt(acc);
    et_qkey key = {5, 6, 7};
    et_qparams p;
    et_qparams_init(&p, &fa, 1.0f, &key);
    const float beta = 0.5f;
    memcpy(C, C0, sizeof C), memcpy(Cr, C0, sizeof C);
    et_set_threads(2);
    assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, beta, C, N, &fm, &fa, &key), ET_OK);
    assert_int_equal(et_qgemm_ref(0, 0, M, N, K, A, K, B, N, beta, Cr, N, &fm, &fa, &key), ET_OK);
    int rot = srm ? (16 + S_a - S_m) & 31 : 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            uint64_t e = (uint64_t)i * N + (uint64_t)j;
            uint64_t t = 1;
            float s = doc_round(acc, beta * C0[e], ~rotl_doc(et_qgemm_word(&p, e, 0), 32 - S_a));
            for (int k = 0; k < K; k++) {
                uint32_t rm = 0, ra = 0;
                if (f16) {
                    uint32_t w = et_qgemm_word(&p, e, t++);
                    rm = ~rotl_doc(w, 32 - S_m), ra = ~rotl_doc(rotl_doc(w, rot), 32 - S_a);
                } else {
                    if (srm) rm = ~rotl_doc(et_qgemm_word(&p, e, t++), 32 - S_m);
                    if (sra) ra = ~rotl_doc(et_qgemm_word(&p, e, t++), 32 - S_a);
                }
                float pr = doc_round(mul, A[i * K + k] * B[k * N + j], rm);
                s = doc_round(acc, s + pr, ra);
            }
            if (!(memcmp(&s, &C[e], 4) == 0 && memcmp(&s, &Cr[e], 4) == 0))
                fail_msg("%s x %s (%d,%d): doc %a, et_qgemm %a, ref %a", mul, acc, i, j, s, C[e], Cr[e]);
        }
}

static void test_documented_sum(void **st) {
    (void)st;
    doc_case("e6m5/sr13", "e6m5/sr13", 18, 18, 1, 1, 1); /* LeanAI: one word per product */
    doc_case("e4m3/sr7", "e5m7/sr11", 20, 16, 1, 1, 1);  /* different S: rot = 20 */
    doc_case("fp16", "e6m5/sr9", 13, 18, 1, 0, 1);       /* only the accumulator random */
    doc_case("bf16/sr", "e5m2/sr20", 16, 21, 0, 1, 1);   /* R > 16: one word per rounding */
    doc_case("e5m2/sr", "fp16", 21, 13, 0, 1, 0);
}

/* Rows of A are x at one k (k0 = i % K) and 0 elsewhere, B is all ones, so
 * element (i,j) rounds x once with the multiplier and once with the
 * accumulator format (0 + p), at product k0; s + 0 afterwards is exact. */
static void one_rounding(const char *mul, const char *acc, float x, int M, int N, int K, float *C) {
    float *A = calloc((size_t)M * K, sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
    assert_non_null(A);
    assert_non_null(B);
    for (int i = 0; i < M; i++) A[(size_t)i * K + i % K] = x;
    for (int k = 0; k < K * N; k++) B[k] = 1.0f;
    et_format fm, fa;
    if (mul) fm = fmt(mul);
    if (acc) fa = fmt(acc);
    et_qkey key = {2024, 3, 11};
    et_set_threads(2);
    assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C, N, mul ? &fm : NULL, acc ? &fa : NULL, &key), ET_OK);
    free(A), free(B);
}

/* Stochastic rounding inside the GEMM: the fraction of rounded-up values is
 * floor(f 2^R) / 2^R (exactly f for /sr) within 5 sigma, for the multiplier
 * bits (K roundings per element: the count of ups per element also has the
 * binomial variance, so the products of one element are not correlated), the
 * accumulator bits (at every k position), and both together: a multiplier up
 * and an accumulator up in the same product are independent. With R <= 16 the
 * word is split into 16-bit fields, with R > 16 not: both layouts are checked. */
static void test_sr_statistics(void **st) {
    (void)st;
    static const int Rs[] = {32, 20, 16, 13, 5, 1};
    const double q = 0.125;                  /* e4m3 quantum in [1, 2) */
    static const double fr[] = {0.3, 0.77};
    for (size_t ri = 0; ri < sizeof Rs / sizeof *Rs; ri++)
        for (size_t fi = 0; fi < 2; fi++) {
            int R = Rs[ri];
            double f = fr[fi];
            float x = (float)(1 + f * q);
            double fx = ((double)x - 1) / q; /* f as stored in float */
            double pu = R == 32 ? fx : floor(fx * ldexp(1, R)) / ldexp(1, R);
            char fm[32];
            snprintf(fm, sizeof fm, R == 32 ? "e4m3/sr" : "e4m3/sr%d", R);
            /* multiplier: K products of x * 1 per element, summed exactly in fp32 */
            {
                int M = 40, N = 50, K = 200;
                float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4);
                assert_true(A && B && C);
                for (int k = 0; k < M * K; k++) A[k] = x;
                for (int k = 0; k < K * N; k++) B[k] = 1.0f;
                et_format m = fmt(fm);
                et_qkey key = {99, 4, (uint64_t)R};
                et_set_threads(1 + (int)fi);
                assert_int_equal(et_qgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C, N, &m, NULL, &key), ET_OK);
                double sum = 0, sum2 = 0;
                for (int e = 0; e < M * N; e++) {
                    double ups = ((double)C[e] - K) / q;
                    assert_true(ups == floor(ups) && ups >= 0 && ups <= K);
                    sum += ups, sum2 += ups * ups;
                }
                double n = (double)M * N * K, mean = sum / n;
                if (fabs(mean - pu) > 5 * sqrt(pu * (1 - pu) / n))
                    fail_msg("mul %s x=%g: up fraction %.6f, expected %.6f", fm, x, mean, pu);
                double var = sum2 / (M * N) - (sum / (M * N)) * (sum / (M * N)), want = K * pu * (1 - pu);
                if (fabs(var / want - 1) > 5 * sqrt(2.0 / (M * N)))
                    fail_msg("mul %s x=%g: variance of ups per element %.3f, binomial %.3f", fm, x, var, want);
                free(A), free(B), free(C);
            }
            /* accumulator alone, then both in the same product */
            {
                int M = 400, N = 500, K = 7;
                float *C = malloc((size_t)M * N * 4);
                assert_non_null(C);
                one_rounding(NULL, fm, x, M, N, K, C);
                double ups = 0, n = (double)M * N;
                for (int e = 0; e < M * N; e++) {
                    assert_true(C[e] == 1.0f || C[e] == 1.125f);
                    ups += C[e] == 1.125f;
                }
                if (fabs(ups / n - pu) > 5 * sqrt(pu * (1 - pu) / n))
                    fail_msg("acc %s x=%g: up fraction %.6f, expected %.6f", fm, x, ups / n, pu);
                /* mul e4m3/srR gives 1 or 1.125; acc e3m2 with the same R has quantum
                 * 0.25 and rounds 1.125 up with probability 1/2 (any R >= 1): the
                 * result is 1.25 with probability pu / 2 if the two are independent */
                char fa[32];
                snprintf(fa, sizeof fa, R == 32 ? "e3m2/sr" : "e3m2/sr%d", R);
                one_rounding(fm, fa, x, M, N, K, C);
                double both = 0;
                for (int e = 0; e < M * N; e++) {
                    assert_true(C[e] == 1.0f || C[e] == 1.25f);
                    both += C[e] == 1.25f;
                }
                double pb = pu / 2;
                if (fabs(both / n - pb) > 5 * sqrt(pb * (1 - pb) / n))
                    fail_msg("mul %s + acc %s x=%g: both up %.6f, expected %.6f", fm, fa, x, both / n, pb);
                free(C);
            }
        }
}

/* ---------------------------------------------------------------- igemm */

static void igemm_case(int ta, int tb, int M, int N, int K, int threads) {
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int lda = ac + 1, ldb = bc + 2, ldc = N + 3;
    int8_t *A = malloc((size_t)ar * lda + 1), *B = malloc((size_t)br * ldb + 1);
    int32_t *C = malloc(((size_t)M * ldc + 1) * 4);
    assert_non_null(A);
    assert_non_null(B);
    assert_non_null(C);
    for (size_t i = 0; i < (size_t)ar * lda; i++) A[i] = (int8_t)(urand() >> 24);
    for (size_t i = 0; i < (size_t)br * ldb; i++) B[i] = (int8_t)(urand() >> 24);
    if (ar * ac > 0) A[0] = -128;
    if (br * bc > 0) B[0] = -128;
    et_set_threads(threads);
    for (int isa = ET_ISA_SCALAR; isa <= (int)et_igemm_isa(); isa++) {
        for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = 0x5a5a5a5a;
        et_igemm_s8_isa((et_isa)isa, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < ldc; j++) {
                int32_t want = 0x5a5a5a5a;
                if (j < N) {
                    want = 0;
                    for (int k = 0; k < K; k++) {
                        int a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                        int b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                        want += a * b;
                    }
                }
                if (C[(size_t)i * ldc + j] != want)
                    fail_msg("igemm %s ta=%d tb=%d %dx%dx%d C[%d,%d] = %d, want %d", et_isa_name((et_isa)isa), ta, tb,
                             M, N, K, i, j, C[(size_t)i * ldc + j], want);
            }
    }
    free(A), free(B), free(C);
}

static void test_igemm_exact(void **st) {
    (void)st;
    int shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {13, 31, 67}, {6, 32, 64}, {25, 70, 131}, {3, 5, 0}, {64, 100, 3}};
    int t = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int tt = 0; tt < 4; tt++, t++)
            igemm_case(tt & 1, tt >> 1, shapes[s][0], shapes[s][1], shapes[s][2], 1 + (t & 1));
    /* all -128: the largest products, K not a multiple of 4 */
    int M = 7, N = 35, K = 1023;
    int8_t *A = malloc((size_t)M * K), *B = malloc((size_t)K * N);
    int32_t *C = malloc((size_t)M * N * 4);
    assert_non_null(A);
    assert_non_null(B);
    assert_non_null(C);
    memset(A, 0x80, (size_t)M * K), memset(B, 0x80, (size_t)K * N);
    for (int isa = ET_ISA_SCALAR; isa <= (int)et_igemm_isa(); isa++) {
        et_igemm_s8_isa((et_isa)isa, 0, 0, M, N, K, A, K, B, N, C, N);
        for (int i = 0; i < M * N; i++) assert_int_equal(C[i], 16384 * K);
    }
    free(A), free(B), free(C);
}

/* et_igemm_f32: float operands on per-tensor grids (x = scale * q) against an
 * independent reference: the codes the test built, their products summed in
 * int64, then (float)(S * (sa * sb)) in double (+ fl(beta * C) in fp32), on
 * every path, every transpose, 1 and 2 threads. Values far beyond 127 * scale
 * clamp to +-127, NaN counts as code 0. */
static void igemm_f32_case(int ta, int tb, int M, int N, int K, float beta, int threads) {
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int lda = ac + 3, ldb = bc + 1, ldc = N + 2;
    float sa = 0.0123f * (float)(1 + (urand() % 7)), sb = 0.5f / (float)(1 + (urand() % 5));
    size_t na = (size_t)ar * lda + 1, nb = (size_t)br * ldb + 1, nc = (size_t)M * ldc + 1;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4), *C0 = malloc(nc * 4);
    int *qa = malloc(na * sizeof(int)), *qb = malloc(nb * sizeof(int));
    assert_true(A && B && C && C0 && qa && qb);
    for (size_t i = 0; i < na; i++) {
        qa[i] = (int)(urand() % 255) - 127, A[i] = (float)qa[i] * sa;
        if (urand() % 97 == 0) A[i] = (urand() & 1 ? 1e30f : -1e30f), qa[i] = A[i] > 0 ? 127 : -127;
        if (urand() % 211 == 0) A[i] = NAN, qa[i] = 0;
    }
    for (size_t i = 0; i < nb; i++) qb[i] = (int)(urand() % 255) - 127, B[i] = (float)qb[i] * sb;
    for (size_t i = 0; i < nc; i++) C0[i] = (float)(urand() % 1000) / 37.0f - 13.0f;
    /* the operands' codes, as a policy's rounding hands them over (et_igemm_f32q) */
    int8_t *ca = malloc(na), *cb = malloc(nb);
    assert_true(ca && cb);
    for (size_t i = 0; i < na; i++) ca[i] = (int8_t)qa[i];
    for (size_t i = 0; i < nb; i++) cb[i] = (int8_t)qb[i];
    et_set_threads(threads);
    /* each path: floats; codes of A only (floats of A absent); codes of B
     * only (floats of B absent); both codes with the floats present */
    for (int run = 0; run < 4 * (ET_ISA_AVX512 + 1); run++) {
        const int isa = run / 4, form = run % 4;
        if (isa > (int)et_igemm_isa()) break;
        memcpy(C, C0, nc * 4);
        if (form == 0)
            assert_int_equal(et_igemm_f32_isa((et_isa)isa, ta, tb, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc),
                             ET_OK);
        else
            assert_int_equal(et_igemm_f32q_isa((et_isa)isa, ta, tb, M, N, K, form == 1 ? NULL : A, form == 2 ? NULL : ca,
                                               lda, sa, form == 2 ? NULL : B, form == 1 ? NULL : cb, ldb, sb, beta, C,
                                               ldc),
                             ET_OK);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < ldc; j++) {
                float want = C0[(size_t)i * ldc + j];
                if (j < N) {
                    int64_t s = 0;
                    for (int k = 0; k < K; k++)
                        s += (int64_t)qa[ta ? (size_t)k * lda + i : (size_t)i * lda + k] *
                             qb[tb ? (size_t)j * ldb + k : (size_t)k * ldb + j];
                    float v = (float)((double)s * ((double)sa * (double)sb));
                    want = beta != 0.0f ? beta * want + v : v;
                }
                if (memcmp(&C[(size_t)i * ldc + j], &want, 4))
                    fail_msg("igemm_f32 %s form %d ta=%d tb=%d %dx%dx%d beta=%g C[%d,%d] = %.9g, want %.9g",
                             et_isa_name((et_isa)isa), form, ta, tb, M, N, K, beta, i, j, C[(size_t)i * ldc + j], want);
            }
    }
    free(A), free(B), free(C), free(C0), free(qa), free(qb), free(ca), free(cb);
}

static void test_igemm_float(void **st) {
    (void)st;
    /* narrow outputs (N <= 16: half panels) with long K, as conv WG's */
    int shapes[][3] = {{1, 1, 1}, {9, 40, 77}, {17, 33, 5}, {48, 64, 288}, {50, 31, 130}, {3, 5, 0}, {100, 10, 19},
                       {8, 9, 1000}, {16, 20, 333}, {72, 45, 16},
                       /* C = A . B^T with both operands' codes and K >= 1024: the dot form
                        * (et_igemm_dot_fits), edges in M, N and K */
                       {8, 9, 2900}, {16, 72, 1500}, {5, 7, 1025}, {13, 128, 1090}};
    int t = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int tt = 0; tt < 4; tt++, t++)
            igemm_f32_case(tt & 1, tt >> 1, shapes[s][0], shapes[s][1], shapes[s][2], t % 3 == 2 ? 1.0f : 0.0f,
                           1 + (t & 1));
    for (int threads = 1; threads <= 2; threads++) /* the dot form at both thread counts, with and without beta */
        for (int b = 0; b < 2; b++) igemm_f32_case(0, 1, 9, 12, 4100, b ? 1.0f : 0.0f, threads);
    assert_true(et_igemm_dot_fits(8, 9, 29008) && et_igemm_dot_fits(16, 72, 3528) && !et_igemm_dot_fits(100, 128, 784));
    float a = 1, b = 1, c = 0;
    assert_int_equal(et_igemm_f32(0, 0, 1, 1, 1, &a, 1, 0.0f, &b, 1, 1.0f, 0.0f, &c, 1), ET_ERR_INVALID);
    assert_int_equal(et_igemm_f32(0, 0, 2, 1, 1, &a, 0, 1.0f, &b, 1, 1.0f, 0.0f, &c, 1), ET_ERR_INVALID);
    assert_int_equal(et_igemm_f32(0, 0, 1, 1, 1, &a, 1, 0.5f, &b, 1, 0.25f, 0.0f, &c, 1), ET_OK);
    assert_true(c == 1.0f); /* codes 2 and 4 */
}

/* et_igemm_im2col against the definition, element by element: padded,
 * strided, non-square, rows wider than 64 codes (the general loop) and
 * narrower (the AVX-512 rows), images n0 .. n0+nb-1 of a CNHW tensor, at 1
 * and 2 threads. Bytes past the matrix stay untouched. */
static void test_igemm_im2col(void **st) {
    (void)st;
    const et_igemm_conv geo[] = {
        /* c, n, h, w, kh, kw, sh, sw, ph, pw, ho, wo */
        {1, 5, 28, 28, 3, 3, 1, 1, 1, 1, 28, 28}, {3, 4, 14, 14, 3, 3, 1, 1, 1, 1, 14, 14},
        {2, 3, 9, 11, 3, 2, 2, 2, 1, 0, 5, 5},    {2, 3, 7, 70, 3, 5, 1, 1, 2, 2, 9, 70},
        {1, 2, 5, 64, 1, 3, 1, 1, 0, 1, 5, 64},   {4, 3, 6, 6, 5, 5, 1, 1, 0, 0, 2, 2},
        {2, 2, 4, 4, 3, 3, 1, 1, 3, 3, 8, 8},     {3, 3, 11, 13, 3, 3, 2, 1, 1, 1, 6, 13},
    };
    for (size_t gi = 0; gi < sizeof geo / sizeof *geo; gi++) {
        const et_igemm_conv *g = &geo[gi];
        const size_t nx = (size_t)g->c * g->n * g->h * g->w;
        const int n0 = g->n > 2 ? 1 : 0, nb = g->n - n0;
        const size_t rows = (size_t)g->c * g->kh * g->kw, ld = (size_t)nb * g->ho * g->wo, ncol = rows * ld;
        int8_t *x = malloc(nx), *col = malloc(ncol + 64);
        assert_true(x && col);
        for (size_t i = 0; i < nx; i++) x[i] = (int8_t)((int)(urand() % 255) - 127);
        for (int threads = 1; threads <= 2; threads++) {
            et_set_threads(threads);
            memset(col, 0x5a, ncol + 64);
            et_igemm_im2col(g, x, n0, nb, col);
            for (int ci = 0; ci < g->c; ci++)
                for (int ky = 0; ky < g->kh; ky++)
                    for (int kx = 0; kx < g->kw; kx++)
                        for (int n = 0; n < nb; n++)
                            for (int oy = 0; oy < g->ho; oy++)
                                for (int ox = 0; ox < g->wo; ox++) {
                                    int iy = oy * g->sh - g->ph + ky, ix = ox * g->sw - g->pw + kx;
                                    int want = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w
                                                   ? x[(((size_t)ci * g->n + n0 + n) * g->h + iy) * g->w + ix]
                                                   : 0;
                                    size_t r = ((size_t)ci * g->kh + ky) * g->kw + kx;
                                    int got = col[r * ld + ((size_t)n * g->ho + oy) * g->wo + ox];
                                    if (got != want)
                                        fail_msg("im2col geometry %zu T=%d: (%d,%d,%d) image %d (%d,%d): %d, want %d", gi,
                                                 threads, ci, ky, kx, n, oy, ox, got, want);
                                }
            for (int i = 0; i < 64; i++) assert_int_equal(col[ncol + i], 0x5a);
        }
        free(x), free(col);
    }
    et_set_threads(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_equals_ref),   cmocka_unit_test(test_fast_equals_ref_extremes),
        cmocka_unit_test(test_fp16_stagnation),   cmocka_unit_test(test_fp32_plain_loop),
        cmocka_unit_test(test_rejects),           cmocka_unit_test(test_word_definition),
        cmocka_unit_test(test_documented_sum),    cmocka_unit_test(test_tiny_sums),
        cmocka_unit_test(test_overflowing_sums),
        cmocka_unit_test(test_sr_statistics),     cmocka_unit_test(test_igemm_exact),
        cmocka_unit_test(test_igemm_float),       cmocka_unit_test(test_igemm_im2col),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
