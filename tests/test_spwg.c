/* The zero-skipping weight-gradient product (kernels/spwg.h): bit for bit
 * against et_sgemm of the same ISA (ta = 0 and 1, tb = 1), for random sparse B at
 * several densities, K below, at and across KC blocks, M not a multiple of
 * 16, padded leading dimensions, beta 0, 1 and other, zeros in A too, at 1
 * and 2 threads and from inside a parallel region, on every ISA this CPU
 * runs (where it does not run, C is untouched); macs_cpu = nnz(B) * M; the
 * per-call choice declines dense B; and through et_matmul_run with the
 * caller's counts: et_sgemm's bits, the exact executed count, the CPU's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "edgetrain.h"
#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"
#include "kernels/matmul.h"
#include "kernels/spwg.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}
static double unif(void) { return urand() / 2147483648.0; }

/* rows x cols at leading dimension ld, density d of non-zeros (mixed
 * magnitudes and signs, so sums round), padding NaN (never read) */
static float *make(int rows, int cols, int ld, double d) {
    float *m = malloc(sizeof(float) * (size_t)rows * (size_t)ld);
    assert_non_null(m);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ld; c++) {
            float v = c >= cols ? NAN : unif() < d ? (float)((unif() * 2.0 - 1.0) * (1 + 100 * (urand() % 4 == 0))) : 0.0f;
            m[(size_t)r * ld + c] = v;
        }
    return m;
}

static uint64_t nnz(const float *B, int N, int K, int ldb) {
    uint64_t n = 0;
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) n += B[(size_t)j * ldb + k] != 0.0f;
    return n;
}

typedef struct shape { int M, N, K; } shape;

/* one product on one ISA: et_sgemm_spwg_isa forced (dmax 1) against
 * et_sgemm_isa, from the same C; returns whether the kernel ran */
static int check_one(et_isa isa, int ta, int M, int N, int K, double da, double db, float beta, int nested) {
    const int lda = (ta ? M : K) + (urand() % 3), ldb = K + (urand() % 5), ldc = N + (urand() % 2) * 3;
    float *A = ta ? make(K, M, lda, da) : make(M, K, lda, da), *B = make(N, K, ldb, db), *C0 = make(M, N, ldc, 1.0);
    float *C1 = malloc(sizeof(float) * (size_t)M * ldc), *C2 = malloc(sizeof(float) * (size_t)M * ldc);
    assert_non_null(C1), assert_non_null(C2);
    memcpy(C1, C0, sizeof(float) * (size_t)M * ldc);
    memcpy(C2, C0, sizeof(float) * (size_t)M * ldc);
    et_sgemm_isa(isa, ta, 1, M, N, K, 1.0f, A, lda, B, ldb, beta, C1, ldc);
    uint64_t cpu = 0;
    int ran = 0;
    if (nested) {
#ifdef _OPENMP
#pragma omp parallel num_threads(2)
        {
            if (omp_get_thread_num() == 0) ran = et_sgemm_spwg_isa(isa, ta, M, N, K, A, lda, B, ldb, beta, C2, ldc, 1.0, &cpu);
        }
#else
        ran = et_sgemm_spwg_isa(isa, ta, M, N, K, A, lda, B, ldb, beta, C2, ldc, 1.0, &cpu);
#endif
    } else {
        ran = et_sgemm_spwg_isa(isa, ta, M, N, K, A, lda, B, ldb, beta, C2, ldc, 1.0, &cpu);
    }
    const float *want = ran ? C1 : C0; /* not run: C untouched */
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float g = C2[(size_t)i * ldc + j], w = want[(size_t)i * ldc + j];
            if (memcmp(&g, &w, sizeof g))
                fail_msg("isa %d ta %d M=%d N=%d K=%d da=%g db=%g beta=%g nested=%d ran=%d: C[%d,%d] = %a, want %a",
                         (int)isa, ta, M, N, K, da, db, beta, nested, ran, i, j, g, w);
        }
    if (ran) assert_int_equal(cpu, nnz(B, N, K, ldb) * (uint64_t)M);
    free(A), free(B), free(C0), free(C1), free(C2);
    return ran;
}

static void test_bits(void **state) {
    (void)state;
    /* KC is 384 on AVX-512, 256 scalar: K below, at and across both; VGG8's
     * WG chunk shapes (M = CK, N = Cout, K = positions of a chunk) */
    const shape shapes[] = {{1, 1, 1},     {17, 5, 50},   {33, 16, 256},  {40, 9, 257},   {100, 20, 383},
                            {31, 3, 384},  {45, 7, 385},  {288, 32, 784}, {288, 64, 784}, {576, 64, 392},
                            {130, 33, 1000}, {576, 128, 441}, {1152, 128, 196}};
    const double dens[] = {0.0, 0.01, 0.07, 0.3, 1.0};
    const float betas[] = {0.0f, 1.0f, 0.5f};
    const int threads = et_get_threads();
    for (int isa = 0; isa <= (int)et_cpu_isa(); isa++) {
        int runs = 0;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const shape *h = &shapes[s];
            const int big = (double)h->M * h->N * h->K > 2e6;
            for (size_t d = 0; d < sizeof dens / sizeof dens[0]; d++)
                for (size_t b = 0; b < sizeof betas / sizeof betas[0]; b++) {
                    if (big && (b == 2 || d == 0 || d == 4)) continue; /* keep the test short */
                    et_set_threads(1 + (int)((s + d + b) % 2));
                    runs += check_one((et_isa)isa, (int)((s + b) % 2), h->M, h->N, h->K, 0.6, dens[d], betas[b], 0);
                }
            et_set_threads(2);
            for (int ta = 0; ta <= 1; ta++) runs += check_one((et_isa)isa, ta, h->M, h->N, h->K, 0.5, 0.05, 1.0f, 1);
        }
        /* runs on scalar and AVX-512, never on AVX2 */
        if (et_gemm_kinfo_for((et_isa)isa)->isa == ET_ISA_AVX2)
            assert_int_equal(runs, 0);
        else
            assert_true(runs > 0);
    }
    et_set_threads(threads);
}

/* Shapes et_sgemm sums on its dot path are left to it. */
static void test_dot_shapes(void **state) {
    (void)state;
    assert_true(et_gemm_dot_fits(0, 1, 9, 32, 29008));
    float *A = make(9, 4096, 4096, 1.0), *B = make(32, 4096, 4096, 0.01), C[9 * 32];
    uint64_t cpu;
    for (int isa = 0; isa <= (int)et_cpu_isa(); isa++)
        assert_int_equal(et_sgemm_spwg_isa((et_isa)isa, 0, 9, 32, 4096, A, 4096, B, 4096, 0.0f, C, 32, 1.0, &cpu), 0);
    free(A), free(B);
}

/* The per-call choice: sparse B runs (where the ISA has the kernel), dense B
 * goes back to the caller. */
static void test_choice(void **state) {
    (void)state;
    assert_true(et_spwg_pays(32, 0.05));
    assert_false(et_spwg_pays(32, 0.9));
    assert_false(et_spwg_pays(2, 0.05));
    const int M = 288, N = 32, K = 784;
    float *A = make(M, K, K, 0.6), *Bs = make(N, K, K, 0.05), *Bd = make(N, K, K, 0.9);
    float *C = calloc((size_t)M * N, sizeof(float));
    uint64_t cpu = 0;
    const et_isa isa = et_gemm_kinfo_for(et_cpu_isa())->isa;
    assert_int_equal(et_sgemm_spwg(0, M, N, K, A, K, Bs, K, 0.0f, C, N, &cpu), isa != ET_ISA_AVX2);
    for (size_t i = 0; i < (size_t)M * N; i++) C[i] = 7.0f;
    assert_int_equal(et_sgemm_spwg(0, M, N, K, A, K, Bd, K, 0.0f, C, N, &cpu), 0);
    for (size_t i = 0; i < (size_t)M * N; i++) assert_true(C[i] == 7.0f);
    free(A), free(Bs), free(Bd), free(C);
}

/* Through the matmul path as conv WG calls it (knnz_a: nnz of A's columns):
 * et_sgemm's bits, executed = sum_k knnz_a[k] * nnz(B[:,k]), cpu =
 * nnz(B) * M where the kernel ran (else the dense count). */
static void test_matmul(void **state) {
    (void)state;
    const int M = 288, N = 32, K = 784;
    for (int v = 0; v < 2; v++) {
        float *A = make(M, K, K, 0.6), *B = make(N, K, K, v ? 0.6 : 0.05);
        float *C1 = calloc((size_t)M * N, sizeof(float)), *C2 = calloc((size_t)M * N, sizeof(float));
        int32_t *ka = calloc((size_t)K, sizeof(int32_t));
        uint64_t elem = 0;
        for (int k = 0; k < K; k++) {
            int nb = 0;
            for (int i = 0; i < M; i++) ka[k] += A[(size_t)i * K + k] != 0.0f;
            for (int j = 0; j < N; j++) nb += B[(size_t)j * K + k] != 0.0f;
            elem += (uint64_t)ka[k] * (uint64_t)nb;
        }
        for (int beta = 0; beta <= 1; beta++) {
            et_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, (float)beta, C1, N);
            et_engine eng;
            memset(&eng, 0, sizeof eng);
            et_matmul mm;
            memset(&mm, 0, sizeof mm);
            mm.stage = ET_WG, mm.layer = -1, mm.ta = 0, mm.tb = 1, mm.M = M, mm.N = N, mm.K = K;
            mm.A = A, mm.lda = K, mm.B = B, mm.ldb = K, mm.C = C2, mm.ldc = N, mm.beta = (float)beta;
            mm.skip_zeros = 1, mm.knnz_a = ka;
            assert_int_equal(et_matmul_run(&eng, &mm), ET_OK);
            assert_memory_equal(C1, C2, sizeof(float) * (size_t)M * N);
            assert_int_equal(eng.total.macs_executed[ET_WG], elem);
            const uint64_t dense = (uint64_t)M * N * K, sp = nnz(B, N, K, K) * (uint64_t)M;
            const int kernel = !v && et_gemm_kinfo_for(et_cpu_isa())->isa != ET_ISA_AVX2;
            assert_int_equal(eng.total.macs_cpu[ET_WG], kernel ? sp : dense);
        }
        free(A), free(B), free(C1), free(C2), free(ka);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bits),
        cmocka_unit_test(test_dot_shapes),
        cmocka_unit_test(test_choice),
        cmocka_unit_test(test_matmul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
