/* FP32 GEMM: every ISA this CPU runs against a double-precision reference
 * (all ta/tb, odd sizes, padded leading dimensions, alpha/beta, NaN in C with
 * beta == 0), degenerate shapes, and bit-identical results across thread
 * counts, repeated calls and nested (inside a parallel region) calls. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "edgetrain.h"
#include "kernels/gemm_internal.h"
#include "kernels/gemm_dot.h"

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static int isa_ok(et_isa isa) { return isa <= et_cpu_isa(); }

/* A stored matrix of rows x cols with leading dimension ld >= cols; the
 * padding holds NaN so that reading it shows up in the result. */
static float *make_mat(int rows, int cols, int ld, int nan_fill) {
    size_t n = (size_t)(rows > 0 ? rows : 1) * (size_t)(ld > 0 ? ld : 1);
    float *m = malloc(n * sizeof(float));
    assert_non_null(m);
    for (size_t i = 0; i < n; i++) m[i] = NAN;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) m[(size_t)i * ld + j] = nan_fill ? NAN : frand();
    return m;
}

typedef struct gcase {
    et_isa isa;
    int ta, tb, M, N, K;
    float alpha, beta;
    int pad; /* extra elements per row of A, B and C */
} gcase;

static void run_case(const gcase *t) {
    const int M = t->M, N = t->N, K = t->K;
    int ar = t->ta ? K : M, ac = t->ta ? M : K;
    int br = t->tb ? N : K, bc = t->tb ? K : N;
    int lda = ac + t->pad, ldb = bc + t->pad, ldc = N + t->pad;
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (ldc < 1) ldc = 1;
    float *A = make_mat(ar, ac, lda, 0), *B = make_mat(br, bc, ldb, 0);
    float *C = make_mat(M, N, ldc, t->beta == 0.0f);
    size_t cn = (size_t)(M > 0 ? M : 1) * ldc;
    float *C0 = malloc(cn * sizeof(float));
    assert_non_null(C0);
    memcpy(C0, C, cn * sizeof(float));

    et_sgemm_isa(t->isa, t->ta, t->tb, M, N, K, t->alpha, A, lda, B, ldb, t->beta, C, ldc);

    for (int i = 0; i < M; i++) {
        for (int j = 0; j < ldc; j++) {
            float got = C[(size_t)i * ldc + j];
            if (j >= N) { /* padding must be untouched */
                if (!isnan(got)) fail_msg("padding of C written at %d,%d", i, j);
                continue;
            }
            double s = 0, sa = 0;
            for (int p = 0; p < K; p++) {
                double a = t->ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = t->tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double ref = (double)t->alpha * s, mag = fabs((double)t->alpha) * sa;
            if (t->beta != 0.0f) {
                double c0 = C0[(size_t)i * ldc + j];
                ref += (double)t->beta * c0;
                mag += fabs((double)t->beta * c0);
            }
            double tol = 2.0 * FLT_EPSILON * (K + 2) * mag + 1e-30;
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g pad=%d: C[%d,%d] = %.9g, "
                         "want %.9g (tol %.3g)",
                         et_isa_name(t->isa), t->ta, t->tb, M, N, K, t->alpha, t->beta, t->pad, i,
                         j, got, ref, tol);
        }
    }
    free(A);
    free(B);
    free(C);
    free(C0);
}

/* ---------------------------------------------------------- correctness */

static void test_small_sizes(void **state) {
    (void)state;
    static const int sz[] = {1, 2, 7, 17, 33};
    const int ns = (int)(sizeof sz / sizeof sz[0]);
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        for (int tt = 0; tt < 4; tt++)
            for (int a = 0; a < ns; a++)
                for (int b = 0; b < ns; b++)
                    for (int c = 0; c < ns; c++) {
                        gcase t = {(et_isa)isa, tt & 1, tt >> 1, sz[a], sz[b], sz[c],
                                   1.0f, 0.0f, (a + b + c) % 3};
                        run_case(&t);
                    }
    }
}

static void test_alpha_beta(void **state) {
    (void)state;
    static const float ab[][2] = {{1, 0}, {1, 1}, {-0.5f, 0}, {2.5f, 1}, {0.75f, -1.5f}, {1, 0.5f}};
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        for (int tt = 0; tt < 4; tt++)
            for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++) {
                gcase t = {(et_isa)isa, tt & 1, tt >> 1, 19, 53, 29, ab[i][0], ab[i][1], 5};
                run_case(&t);
                gcase u = {(et_isa)isa, tt & 1, tt >> 1, 8, 48, 16, ab[i][0], ab[i][1], 0};
                run_case(&u); /* exactly one full AVX-512 tile */
            }
    }
}

/* Shapes crossing every block boundary: K > KC (several K blocks, so beta
 * is applied once and later blocks accumulate), M > MC, N > NC, and large
 * enough to be threaded. */
static void test_large_sizes(void **state) {
    (void)state;
    static const int shp[][3] = {{100, 257, 33},  {257, 100, 600}, {9, 1600, 20},
                                 {130, 70, 1100}, {64, 200, 576},  {16, 3200, 9}};
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        for (int tt = 0; tt < 4; tt++)
            for (size_t i = 0; i < sizeof shp / sizeof shp[0]; i++) {
                float beta = i == 3 ? -0.5f : (i & 1) ? 1.0f : 0.0f;
                gcase t = {(et_isa)isa, tt & 1, tt >> 1, shp[i][0], shp[i][1], shp[i][2],
                           i == 2 ? 0.5f : 1.0f, beta, (int)i % 4};
                run_case(&t);
            }
    }
}

static void test_degenerate(void **state) {
    (void)state;
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        for (int tt = 0; tt < 4; tt++) {
            /* K == 0: C = beta * C; with beta == 0 the NaN in C is overwritten */
            gcase k0 = {(et_isa)isa, tt & 1, tt >> 1, 5, 9, 0, 1.0f, 0.0f, 1};
            run_case(&k0);
            gcase k0b = {(et_isa)isa, tt & 1, tt >> 1, 5, 9, 0, 1.0f, 2.0f, 1};
            run_case(&k0b);
            gcase k1 = {(et_isa)isa, tt & 1, tt >> 1, 33, 65, 1, 1.0f, 1.0f, 0};
            run_case(&k1);
            gcase m1 = {(et_isa)isa, tt & 1, tt >> 1, 1, 100, 70, 1.0f, 0.0f, 3};
            run_case(&m1);
            gcase n1 = {(et_isa)isa, tt & 1, tt >> 1, 100, 1, 70, 1.0f, 0.0f, 3};
            run_case(&n1);
            gcase a0 = {(et_isa)isa, tt & 1, tt >> 1, 7, 7, 7, 0.0f, 0.5f, 0};
            run_case(&a0);
        }
        /* M == 0 or N == 0: nothing is read or written */
        float c = 42.0f;
        et_sgemm_isa((et_isa)isa, 0, 0, 0, 5, 5, 1.0f, NULL, 5, NULL, 5, 0.0f, NULL, 5);
        et_sgemm_isa((et_isa)isa, 0, 0, 1, 0, 5, 1.0f, NULL, 5, NULL, 1, 0.0f, &c, 1);
        assert_true(c == 42.0f);
    }
}

/* ------------------------------------------------------------ determinism */

typedef struct dshape {
    int ta, tb, M, N, K;
    float beta;
} dshape;

/* conv FF / EP / WG and linear shapes, plus odd ones */
static const dshape dshapes[] = {
    {0, 0, 32, 3136, 288, 0},  {1, 0, 288, 3136, 32, 0}, {0, 1, 32, 288, 3136, 0},
    {0, 1, 100, 256, 1152, 0}, {0, 0, 100, 1152, 256, 1}, {1, 0, 256, 1152, 100, 0},
    {0, 0, 129, 1000, 777, 1}, {1, 1, 77, 2049, 401, 0},  {0, 0, 8, 25088, 9, 0},
    {0, 1, 8, 9, 20000, 0},    {0, 1, 13, 5, 4099, 1},    {0, 1, 16, 72, 19600, 1},
};

static float *run_threads(et_isa isa, const dshape *s, int threads, const float *A,
                          const float *B, const float *Cin) {
    size_t cn = (size_t)s->M * s->N;
    float *C = malloc(cn * sizeof(float));
    assert_non_null(C);
    memcpy(C, Cin, cn * sizeof(float));
    et_set_threads(threads);
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    et_sgemm_isa(isa, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, s->beta, C, s->N);
    return C;
}

static void test_thread_determinism(void **state) {
    (void)state;
    int saved = et_get_threads();
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        for (size_t i = 0; i < sizeof dshapes / sizeof dshapes[0]; i++) {
            const dshape *s = &dshapes[i];
            size_t an = (size_t)s->M * s->K, bn = (size_t)s->K * s->N, cn = (size_t)s->M * s->N;
            float *A = malloc(an * sizeof(float)), *B = malloc(bn * sizeof(float));
            float *Cin = malloc(cn * sizeof(float));
            assert_non_null(A);
            assert_non_null(B);
            assert_non_null(Cin);
            for (size_t j = 0; j < an; j++) A[j] = frand();
            for (size_t j = 0; j < bn; j++) B[j] = frand();
            for (size_t j = 0; j < cn; j++) Cin[j] = s->beta == 0.0f ? NAN : frand();
            float *C1 = run_threads((et_isa)isa, s, 1, A, B, Cin);
            float *C1b = run_threads((et_isa)isa, s, 1, A, B, Cin);
            float *C2 = run_threads((et_isa)isa, s, 2, A, B, Cin);
            float *C3 = run_threads((et_isa)isa, s, 3, A, B, Cin);
            float *C2b = run_threads((et_isa)isa, s, 2, A, B, Cin);
            for (size_t j = 0; j < cn; j++) assert_false(isnan(C1[j]));
            if (memcmp(C1, C1b, cn * sizeof(float)))
                fail_msg("%s shape %zu: repeated call differs", et_isa_name((et_isa)isa), i);
            if (memcmp(C1, C2, cn * sizeof(float)))
                fail_msg("%s shape %zu: 1 vs 2 threads differ", et_isa_name((et_isa)isa), i);
            if (memcmp(C1, C3, cn * sizeof(float)))
                fail_msg("%s shape %zu: 1 vs 3 threads differ", et_isa_name((et_isa)isa), i);
            if (memcmp(C2, C2b, cn * sizeof(float)))
                fail_msg("%s shape %zu: repeated 2-thread call differs", et_isa_name((et_isa)isa), i);
#ifdef _OPENMP
            /* called from inside a parallel region (serial fallback path) */
            float *Cn = malloc(cn * sizeof(float));
            assert_non_null(Cn);
            memcpy(Cn, Cin, cn * sizeof(float));
            et_set_threads(2);
            int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
#pragma omp parallel num_threads(2)
            {
#pragma omp single
                et_sgemm_isa((et_isa)isa, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb,
                             s->beta, Cn, s->N);
            }
            if (memcmp(C1, Cn, cn * sizeof(float)))
                fail_msg("%s shape %zu: nested call differs", et_isa_name((et_isa)isa), i);
            free(Cn);
#endif
            free(C1);
            free(C1b);
            free(C2);
            free(C3);
            free(C2b);
            free(A);
            free(B);
            free(Cin);
        }
    }
    et_set_threads(saved);
}

/* ------------------------------------------------------- the dot path */

/* gemm_dot.h's summation order, written out independently: per chunk of
 * ET_DOT_KCH, 16 lanes of fmaf (zeros past the end), the halving tree, the
 * chunks in order, then alpha and beta. */
static float dot_ref(const float *a, const float *b, int K, float alpha, float beta, float c0) {
    float s = 0.0f;
    for (int c = 0; c * ET_DOT_KCH < K; c++) {
        float lane[16] = {0};
        int p0 = c * ET_DOT_KCH, p1 = p0 + ET_DOT_KCH < K ? p0 + ET_DOT_KCH : K;
        for (int p = p0; p < p1; p += 16)
            for (int l = 0; l < 16; l++) {
                int k = p + l;
                lane[l] = fmaf(k < p1 ? a[k] : 0.0f, k < p1 ? b[k] : 0.0f, lane[l]);
            }
        float t8[8], t4[4], t2[2];
        for (int l = 0; l < 8; l++) t8[l] = lane[l] + lane[l + 8];
        for (int l = 0; l < 4; l++) t4[l] = t8[l] + t8[l + 4];
        for (int l = 0; l < 2; l++) t2[l] = t4[l] + t4[l + 2];
        float v = t2[0] + t2[1];
        s = c == 0 ? v : s + v;
    }
    return beta == 0.0f ? alpha * s : fmaf(alpha, s, beta * c0);
}

/* Every ISA, 1..3 threads and a nested call give the reference's bits, on
 * shapes with partial blocks, a K tail inside the last 16 lanes, several
 * chunks, padded leading dimensions, alpha/beta; values include exact zeros
 * and tiny products that round to -0. */
static void test_dot_path_bits(void **state) {
    (void)state;
    static const int shp[][3] = {{1, 1, 1}, {5, 7, 17}, {8, 9, 3000}, {4, 4, 1024}, {3, 6, 2071}, {17, 2, 5000}};
    static const float ab[][2] = {{1, 0}, {1, 1}, {-0.5f, 0.25f}};
    int saved = et_get_threads();
    for (size_t si = 0; si < sizeof shp / sizeof shp[0]; si++) {
        int M = shp[si][0], N = shp[si][1], K = shp[si][2];
        int lda = K + 3, ldb = K + 1, ldc = N + 2;
        float *A = make_mat(M, K, lda, 0), *B = make_mat(N, K, ldb, 0);
        for (int i = 0; i < M; i++)
            for (int p = 0; p < K; p += 7) A[(size_t)i * lda + p] = (p % 14) ? 0.0f : -1e-30f;
        float *C0 = make_mat(M, N, ldc, 0), *C = malloc(sizeof(float) * (size_t)M * ldc);
        assert_non_null(C);
        for (size_t q = 0; q < sizeof ab / sizeof ab[0]; q++)
            for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
                if (!isa_ok((et_isa)isa)) continue;
                for (int T = 0; T <= 3; T++) { /* T == 0: nested inside a parallel region */
                    memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
                    if (T) {
                        et_gemm_dot((et_isa)isa, M, N, K, ab[q][0], A, lda, B, ldb, ab[q][1], C, ldc, T);
                    } else {
#pragma omp parallel num_threads(2)
                        {
#pragma omp single
                            et_gemm_dot((et_isa)isa, M, N, K, ab[q][0], A, lda, B, ldb, ab[q][1], C, ldc, 2);
                        }
                    }
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < ldc; j++) {
                            float got = C[(size_t)i * ldc + j], c0 = C0[(size_t)i * ldc + j];
                            if (j >= N) {
                                if (!isnan(got)) fail_msg("dot path wrote C's padding");
                                continue;
                            }
                            float want = dot_ref(A + (size_t)i * lda, B + (size_t)j * ldb, K, ab[q][0], ab[q][1], c0);
                            if (memcmp(&got, &want, sizeof got))
                                fail_msg("%s T=%d M=%d N=%d K=%d alpha=%g beta=%g: C[%d,%d] = %a, want %a",
                                         et_isa_name((et_isa)isa), T, M, N, K, ab[q][0], ab[q][1], i, j, got, want);
                        }
                }
            }
        free(A);
        free(B);
        free(C0);
        free(C);
    }
    et_set_threads(saved);
}

/* The epilogue (et_sgemm_epi): bit for bit et_sgemm's product followed by a
 * scalar bias pass and a scalar ReLU pass, on every ISA, for tiles cut by
 * several K blocks (K > KC), partial tiles, the dot path, K == 0, beta 1,
 * 1-3 threads and nested calls; C's padding untouched. Row 1 of A holds a
 * NaN (ReLU gives +0 for it, as for -0 and negatives). */
static void test_epilogue(void **state) {
    (void)state;
    static const int shp[][5] = {/* ta, tb, M, N, K */
                                 {0, 0, 32, 3136, 9},  {0, 0, 64, 392, 576}, {0, 0, 13, 101, 1000},
                                 {1, 0, 9, 50, 7},     {0, 1, 17, 33, 130},  {1, 1, 8, 48, 384},
                                 {0, 1, 5, 7, 3000},   {0, 0, 6, 20, 0}};
    int saved = et_get_threads();
    for (size_t si = 0; si < sizeof shp / sizeof shp[0]; si++) {
        const int ta = shp[si][0], tb = shp[si][1], M = shp[si][2], N = shp[si][3], K = shp[si][4];
        const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
        const int lda = ac + 1, ldb = bc + 3, ldc = N + 5;
        float *A = make_mat(ar, ac, lda, 0), *B = make_mat(br, bc, ldb, 0), *bias = make_mat(1, M, M, 0);
        if (K > 0 && M > 1) A[ta ? 1 : (size_t)lda] = NAN;
        float *C0 = make_mat(M, N, ldc, 0), *C = malloc(sizeof(float) * (size_t)M * ldc),
              *R = malloc(sizeof(float) * (size_t)M * ldc);
        uint8_t *mask = malloc((size_t)M * ldc + 1); /* laid out as C */
        assert_non_null(C);
        assert_non_null(R);
        assert_non_null(mask);
        for (size_t e = 0; e < (size_t)M * ldc; e++) mask[e] = (uint8_t)((e * 2654435761u >> 7) % 7 < 3);
        for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
            if (!isa_ok((et_isa)isa)) continue;
            for (int q = 0; q < 9; q++) { /* bias only / relu only / both, beta 0 and 1; then with a mask */
                float am = 0.0f; /* and the stored values' absmax (amax), on every other variant */
                const et_gemm_epi epi = {q % 3 != 1 ? bias : NULL, q % 3 != 0, q >= 6 ? mask : NULL, C,
                                         q % 2 ? &am : NULL};
                const float beta = q < 3 || q >= 6 ? 0.0f : 1.0f;
                et_set_threads(1);
                memcpy(R, C0, sizeof(float) * (size_t)M * ldc);
                et_sgemm_isa((et_isa)isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, R, ldc);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        volatile float v = R[(size_t)i * ldc + j]; /* one rounding per operation */
                        if (epi.row_bias) v = v + bias[i];
                        if (epi.relu) v = v > 0.0f ? v : 0.0f;
                        if (epi.mask && !mask[(size_t)i * ldc + j]) v = 0.0f;
                        R[(size_t)i * ldc + j] = v;
                    }
                float want_am = 0.0f; /* NaN never wins (A holds one), inf would count */
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        const float v = fabsf(R[(size_t)i * ldc + j]);
                        want_am = v > want_am ? v : want_am;
                    }
                for (int T = 0; T <= 3; T++) { /* T == 0: nested inside a parallel region */
                    memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
                    am = 0.0f;
                    if (T) {
                        et_set_threads(T);
                        et_sgemm_epi_isa((et_isa)isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, &epi);
                    } else {
                        et_set_threads(2);
#pragma omp parallel num_threads(2)
                        {
#pragma omp single
                            et_sgemm_epi_isa((et_isa)isa, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc,
                                             &epi);
                        }
                    }
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < ldc; j++) {
                            float got = C[(size_t)i * ldc + j], want = R[(size_t)i * ldc + j];
                            if (j >= N) {
                                if (memcmp(&got, &C0[(size_t)i * ldc + j], sizeof got))
                                    fail_msg("epilogue wrote C's padding");
                                continue;
                            }
                            if (memcmp(&got, &want, sizeof got))
                                fail_msg("%s T=%d ta=%d tb=%d M=%d N=%d K=%d bias=%d relu=%d beta=%g: C[%d,%d] = %a, "
                                         "want %a",
                                         et_isa_name((et_isa)isa), T, ta, tb, M, N, K, epi.row_bias != NULL, epi.relu,
                                         beta, i, j, got, want);
                        }
                    if (epi.amax && M > 0 && N > 0 && am != want_am)
                        fail_msg("%s T=%d M=%d N=%d K=%d q=%d: amax %a, want %a", et_isa_name((et_isa)isa), T, M, N, K, q,
                                 am, want_am);
                }
            }
        }
        free(A);
        free(B);
        free(bias);
        free(C0);
        free(C);
        free(R);
        free(mask);
    }
    et_set_threads(saved);
}

/* The shape rule: long K with a narrow output takes the dot path, wide
 * outputs and short K the packed one; only ta == 0, tb == 1 qualifies; and
 * et_sgemm on a qualifying shape equals et_gemm_dot bit for bit. */
static void test_dot_path_choice(void **state) {
    (void)state;
    assert_true(et_gemm_dot_fits(0, 1, 8, 9, 78400));     /* LeNet conv1 WG */
    assert_true(et_gemm_dot_fits(0, 1, 32, 9, 78400));    /* VGG8 conv1 WG */
    assert_true(et_gemm_dot_fits(0, 1, 16, 72, 19600));   /* LeNet conv2 WG */
    assert_false(et_gemm_dot_fits(0, 1, 32, 288, 25088)); /* VGG8 conv2 WG: packed is faster */
    assert_false(et_gemm_dot_fits(0, 1, 8, 9, 100));      /* short K */
    assert_false(et_gemm_dot_fits(1, 1, 8, 9, 78400));
    assert_false(et_gemm_dot_fits(0, 0, 8, 9, 78400));
    assert_false(et_gemm_dot_fits(0, 1, 200, 200, 100000)); /* output too large */
    enum { M = 6, N = 5, K = 4500 };
    float *A = make_mat(M, K, K, 0), *B = make_mat(N, K, K, 0);
    float C1[M * N], C2[M * N];
    assert_true(et_gemm_dot_fits(0, 1, M, N, K));
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (!isa_ok((et_isa)isa)) continue;
        et_sgemm_isa((et_isa)isa, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
        et_gemm_dot((et_isa)isa, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N, 1);
        assert_memory_equal(C1, C2, sizeof C1);
    }
    free(A);
    free(B);
}

static void test_info(void **state) {
    (void)state;
    assert_int_equal(et_gemm_init(2), ET_OK);
    assert_int_equal(et_gemm_init(2), ET_OK); /* idempotent */
    assert_true(et_gemm_workspace_bytes() > 0);
    const char *name = et_gemm_kernel_name();
    assert_non_null(name);
    assert_true(strlen(name) > 0);
    assert_non_null(strstr(name, et_isa_name(et_cpu_isa())));
}

/* C = A·Bᵀ and Cᵀ = B·Aᵀ hold the same products summed in the same order, so
 * their bits agree (conv's WG relies on it, src/nn/conv.c): every ISA, 1 and
 * 2 threads, packed and dot-path shapes, beta 0 and 1. */
static void test_transpose_symmetry(void **state) {
    (void)state;
    static const int shp[][3] = {{32, 288, 784}, {13, 70, 500}, {8, 9, 5000}, {16, 72, 3528}, {50, 60, 3000}};
    int saved = et_get_threads();
    for (size_t si = 0; si < sizeof shp / sizeof shp[0]; si++) {
        const int M = shp[si][0], N = shp[si][1], K = shp[si][2];
        float *A = make_mat(M, K, K, 0), *B = make_mat(N, K, K, 0), *C0 = make_mat(M, N, N, 0);
        float *C = malloc(sizeof(float) * (size_t)M * N), *Ct = malloc(sizeof(float) * (size_t)M * N);
        float *C0t = malloc(sizeof(float) * (size_t)M * N);
        assert_non_null(C);
        assert_non_null(Ct);
        assert_non_null(C0t);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C0t[(size_t)j * M + i] = C0[(size_t)i * N + j];
        assert_int_equal(et_gemm_dot_fits(0, 1, M, N, K), et_gemm_dot_fits(0, 1, N, M, K));
        for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
            if (!isa_ok((et_isa)isa)) continue;
            for (int T = 1; T <= 2; T++)
                for (int b = 0; b <= 1; b++) {
                    et_set_threads(T);
                    memcpy(C, C0, sizeof(float) * (size_t)M * N);
                    memcpy(Ct, C0t, sizeof(float) * (size_t)M * N);
                    et_sgemm_isa((et_isa)isa, 0, 1, M, N, K, 1.0f, A, K, B, K, (float)b, C, N);
                    et_sgemm_isa((et_isa)isa, 0, 1, N, M, K, 1.0f, B, K, A, K, (float)b, Ct, M);
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++)
                            if (memcmp(&C[(size_t)i * N + j], &Ct[(size_t)j * M + i], sizeof(float)))
                                fail_msg("%s T=%d beta=%d %dx%dx%d: C[%d,%d] %a vs transposed %a",
                                         et_isa_name((et_isa)isa), T, b, M, N, K, i, j, C[(size_t)i * N + j],
                                         Ct[(size_t)j * M + i]);
                }
        }
        free(A);
        free(B);
        free(C0);
        free(C);
        free(Ct);
        free(C0t);
    }
    et_set_threads(saved);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_small_sizes),
        cmocka_unit_test(test_alpha_beta),
        cmocka_unit_test(test_large_sizes),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_thread_determinism),
        cmocka_unit_test(test_dot_path_bits),
        cmocka_unit_test(test_dot_path_choice),
        cmocka_unit_test(test_epilogue),
        cmocka_unit_test(test_transpose_symmetry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
