/* Zero-skipping / output-masked GEMM (et_sgemm_sparse): bit for bit against
 * et_sgemm of the same ISA followed by the mask (and against
 * et_sgemm_sparse_ref), macs_elem against a brute-force count, macs_cpu
 * within [macs_elem, M*N*K], over every ta/tb, beta 0/1/other, odd and
 * block-crossing shapes, random densities and structured zero patterns, with
 * and without skip_zeros and mask, at 1 and 2 threads and on every ISA this
 * CPU runs, and from inside a parallel region. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgetrain.h"
#include "kernels/gemm_internal.h"
#include "kernels/spgemm_internal.h"
#include "kernels/spgemm.h"
#include "kernels/matmul.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}
static double unif(void) { return urand() / 2147483648.0; }
static float frand(void) { return (float)(unif() * 2.0 - 1.0); }

/* zero patterns */
enum { PAT_RANDOM, PAT_ROWS, PAT_COLS, PAT_BLOCKS, PAT_RUNS };

/* keep(r, c): whether element (r, c) of a rows x cols matrix stays non-zero */
static int keep(int pat, double d, int r, int c, uint32_t salt) {
    if (d <= 0.0) return 0;
    if (d >= 1.0) return 1;
    uint32_t h;
    switch (pat) {
    case PAT_ROWS: h = (uint32_t)r * 2654435761u ^ salt; break;
    case PAT_COLS: h = (uint32_t)c * 2654435761u ^ salt; break;
    case PAT_BLOCKS: h = ((uint32_t)(r / 11) * 40503u + (uint32_t)(c / 37)) * 2654435761u ^ salt; break;
    case PAT_RUNS: h = ((uint32_t)r * 7919u + (uint32_t)(c / 23)) * 2654435761u ^ salt; break;
    default: return unif() < d;
    }
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return (h & 0xffffff) < (uint32_t)(d * 16777216.0);
}

/* rows x cols, leading dimension ld; padding NaN */
static float *make(int rows, int cols, int ld, double d, int pat) {
    size_t n = (size_t)(rows > 0 ? rows : 1) * (size_t)(ld > 0 ? ld : 1);
    float *m = malloc(n * sizeof(float));
    assert_non_null(m);
    for (size_t i = 0; i < n; i++) m[i] = NAN;
    uint32_t salt = urand();
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float v = frand();
            if (v == 0.0f) v = 0.5f;
            m[(size_t)i * ld + j] = keep(pat, d, i, j, salt) ? v : 0.0f;
        }
    return m;
}

typedef struct scase {
    et_isa isa;
    int ta, tb, M, N, K;
    float beta;
    double dA, dB, dM; /* densities; dM < 0: no mask */
    int patA, patB, patM;
    int skip, threads;
} scase;

static float opv(const float *X, int t, int ld, int r, int c) {
    return t ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c];
}

static void run_case(const scase *t) {
    const int M = t->M, N = t->N, K = t->K;
    int ar = t->ta ? K : M, ac = t->ta ? M : K, br = t->tb ? N : K, bc = t->tb ? K : N;
    int lda = ac + 3, ldb = bc + 1, ldc = N + 2, ldm = N + 5;
    float *A = make(ar, ac, lda, t->dA, t->patA), *B = make(br, bc, ldb, t->dB, t->patB);
    float *C0 = make(M, N, ldc, 1.0, PAT_RANDOM);
    size_t cn = (size_t)M * ldc;
    float *C1 = malloc(cn * sizeof(float)), *C2 = malloc(cn * sizeof(float));
    assert_non_null(C1);
    assert_non_null(C2);
    uint8_t *mask = NULL;
    if (t->dM >= 0) {
        mask = malloc((size_t)M * ldm);
        assert_non_null(mask);
        uint32_t salt = urand();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < ldm; j++)
                mask[(size_t)i * ldm + j] = j < N ? (uint8_t)(keep(t->patM, t->dM, i, j, salt) * (1 + (int)(urand() % 200))) : 0;
    }
    if (t->beta == 0.0f) /* C is not read: NaN shows up if it is */
        for (size_t i = 0; i < cn; i++) C0[i] = NAN;
    memcpy(C1, C0, cn * sizeof(float));
    memcpy(C2, C0, cn * sizeof(float));

    /* expected: the dense kernel of the same ISA, then the mask */
    et_set_threads(1);
    et_sgemm_isa(t->isa, t->ta, t->tb, M, N, K, 1.0f, A, lda, B, ldb, t->beta, C1, ldc);
    uint64_t elem = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (mask && !mask[(size_t)i * ldm + j]) {
                C1[(size_t)i * ldc + j] = 0.0f;
                continue;
            }
            for (int k = 0; k < K; k++)
                elem += !t->skip || (opv(A, t->ta, lda, i, k) != 0.0f && opv(B, t->tb, ldb, k, j) != 0.0f);
        }

    et_set_threads(t->threads);
    et_spgemm_stats st = {12345, 12345};
    et_sgemm_sparse_isa(t->isa, t->ta, t->tb, M, N, K, A, lda, B, ldb, t->beta, C2, ldc, t->skip,
                        mask, ldm, &st);
    et_set_threads(1);

    char what[256];
    snprintf(what, sizeof what,
             "%s ta=%d tb=%d M=%d N=%d K=%d beta=%g dA=%g/%d dB=%g/%d dM=%g/%d skip=%d T=%d",
             et_isa_name(t->isa), t->ta, t->tb, M, N, K, t->beta, t->dA, t->patA, t->dB, t->patB,
             t->dM, t->patM, t->skip, t->threads);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            float e = C1[(size_t)i * ldc + j], g = C2[(size_t)i * ldc + j];
            if (j >= N) {
                if (!isnan(g)) fail_msg("%s: padding written at %d,%d", what, i, j);
                continue;
            }
            if (memcmp(&e, &g, sizeof e))
                fail_msg("%s: C[%d,%d] = %.9g, want %.9g", what, i, j, g, e);
        }
    if (st.macs_elem != elem)
        fail_msg("%s: macs_elem %llu, want %llu", what, (unsigned long long)st.macs_elem,
                 (unsigned long long)elem);
    uint64_t full = (uint64_t)M * N * K;
    if (st.macs_cpu < st.macs_elem || st.macs_cpu > full)
        fail_msg("%s: macs_cpu %llu outside [%llu, %llu]", what, (unsigned long long)st.macs_cpu,
                 (unsigned long long)st.macs_elem, (unsigned long long)full);

    /* the fast counting pass on this ISA's scans agrees, at this thread count */
    uint64_t kept = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) kept += !mask || mask[(size_t)i * ldm + j];
    et_set_threads(t->threads);
    et_spgemm_count cf = {7, 7, -1.0};
    et_spgemm_count_isa(t->isa, t->ta, t->tb, M, N, K, A, lda, B, ldb, t->skip, mask, ldm, &cf);
    et_set_threads(1);
    if (cf.macs_elem != elem || cf.kept != kept)
        fail_msg("%s: fast count %llu kept %llu, want %llu kept %llu", what, (unsigned long long)cf.macs_elem,
                 (unsigned long long)cf.kept, (unsigned long long)elem, (unsigned long long)kept);
    if (!(cf.live >= 0.0 && cf.live <= 1.0)) fail_msg("%s: live estimate %g", what, cf.live);
    if (t->isa == et_cpu_isa()) {
        et_spgemm_stats s2;
        et_sgemm_sparse_count(t->ta, t->tb, M, N, K, A, lda, B, ldb, t->skip, mask, ldm, &s2);
        assert_int_equal(s2.macs_elem, elem);
        /* the per-call choice: same bits as the dense kernel, masked, and the
         * same counts, whichever kernel it picks */
        memcpy(C2, C0, cn * sizeof(float));
        et_spgemm_stats s3 = {1, 1};
        et_spgemm_count c3;
        et_set_threads(t->threads);
        et_sgemm_sparse_auto(t->ta, t->tb, M, N, K, A, lda, B, ldb, t->beta, C2, ldc, t->skip, mask, ldm, &s3, &c3);
        et_set_threads(1);
        if (memcmp(C1, C2, cn * sizeof(float)) != 0) {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    if (memcmp(&C1[(size_t)i * ldc + j], &C2[(size_t)i * ldc + j], sizeof(float)))
                        fail_msg("%s: auto C[%d,%d] = %.9g, want %.9g", what, i, j, C2[(size_t)i * ldc + j],
                                 C1[(size_t)i * ldc + j]);
        }
        if (s3.macs_elem != elem || c3.macs_elem != elem || s3.macs_cpu < elem || s3.macs_cpu > full)
            fail_msg("%s: auto counts %llu/%llu cpu %llu, want %llu", what, (unsigned long long)s3.macs_elem,
                     (unsigned long long)c3.macs_elem, (unsigned long long)s3.macs_cpu, (unsigned long long)elem);
    }
    free(A);
    free(B);
    free(C0);
    free(C1);
    free(C2);
    free(mask);
}

static const double dens[] = {0.0, 0.01, 0.3, 0.7, 1.0};
#define ND (int)(sizeof dens / sizeof dens[0])

/* every ISA, ta/tb, beta, a spread of densities on small odd shapes */
static void test_small(void **state) {
    (void)state;
    static const int sz[][3] = {{1, 1, 1}, {1, 7, 5}, {7, 1, 13}, {13, 53, 1}, {9, 50, 67}, {17, 97, 131}};
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (isa > (int)et_cpu_isa()) continue;
        for (int tt = 0; tt < 4; tt++)
            for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
                for (int d = 0; d < ND * ND; d++) {
                    int da = d % ND, db = d / ND;
                    scase t = {(et_isa)isa, tt & 1, tt >> 1, sz[s][0], sz[s][1], sz[s][2],
                               (d & 1) ? 1.0f : 0.0f, dens[da], dens[db],
                               (d % 3 == 0) ? -1.0 : dens[(d / 2) % ND], PAT_RANDOM, PAT_RANDOM,
                               PAT_RANDOM, d % 4 != 3, 1};
                    run_case(&t);
                }
    }
}

/* shapes larger than the cache blocks (K > KC, M > MC, N > NC), structured
 * patterns, 1 and 2 threads */
static void test_large_structured(void **state) {
    (void)state;
    static const int sz[][3] = {{64, 1700, 700}, {131, 200, 401}, {8, 3000, 9}, {100, 256, 1152}, {8, 9, 5000}};
    /* {8, 9, 5000} with ta = 0, tb = 1 is on et_sgemm's dot path (gemm_dot.h) */
    static const int pats[] = {PAT_RANDOM, PAT_ROWS, PAT_COLS, PAT_BLOCKS, PAT_RUNS};
    for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
        if (isa > (int)et_cpu_isa()) continue;
        for (int tt = 0; tt < 4; tt++)
            for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
                for (int v = 0; v < 5; v++) {
                    scase t = {(et_isa)isa, tt & 1, tt >> 1, sz[s][0], sz[s][1], sz[s][2],
                               v == 2 ? 1.0f : v == 4 ? -0.5f : 0.0f, dens[(v + 2) % ND],
                               dens[(v + s) % ND], v == 1 ? -1.0 : 0.5, pats[v],
                               pats[(v + 1 + s) % 5], pats[(v + 3) % 5], v != 3,
                               1 + (int)((tt + v) & 1)};
                    run_case(&t);
                }
    }
}

/* The conv EP shape (op(A) = A^T, op(B) = B, skip_zeros) with a sparse B,
 * where the per-call choice runs the column-sparse kernel on AVX-512: more
 * rows than one 64-row chunk and not a multiple of 16, partial column blocks,
 * K at and past its lower bound, dense and sparse A, with and without a mask,
 * beta 0 / 1 / -0.5, 1 and 2 threads (run_case compares with et_sgemm masked
 * and counts against enumeration). */
static void test_cols(void **state) {
    (void)state;
    static const int sz[][3] = {{200, 70, 128}, {67, 33, 160}, {129, 300, 384}, {1152, 40, 128}};
    for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
        for (int v = 0; v < 6; v++) {
            scase t = {et_cpu_isa(), 1, 0, sz[s][0], sz[s][1], sz[s][2], v == 2 ? 1.0f : v == 4 ? -0.5f : 0.0f,
                       v & 1 ? 0.7 : 1.0, v == 5 ? 0.0 : 0.12, v < 3 ? 0.6 : -1.0, PAT_RANDOM,
                       v == 3 ? PAT_RUNS : PAT_RANDOM, PAT_BLOCKS, 1, 1 + (v & 1)};
            run_case(&t);
        }
}

/* all-zero and all-set masks, empty operands, both thread counts */
static void test_extremes(void **state) {
    (void)state;
    et_isa isa = et_cpu_isa();
    for (int tt = 0; tt < 4; tt++)
        for (int T = 1; T <= 2; T++)
            for (int d = 0; d < 4; d++) {
                scase t = {isa, tt & 1, tt >> 1, 70, 500, 800, d & 1 ? 1.0f : 0.0f,
                           d == 2 ? 0.0 : 0.3, d == 3 ? 0.0 : 0.5, d < 2 ? (double)d : 0.5,
                           PAT_BLOCKS, PAT_RUNS, PAT_BLOCKS, 1, T};
                run_case(&t);
            }
}

/* K == 0 and the reference itself on a mixed case */
static void test_degenerate_and_ref(void **state) {
    (void)state;
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {0}, B[1] = {0};
    uint8_t mk[6] = {1, 0, 1, 1, 1, 0};
    et_spgemm_stats st;
    et_sgemm_sparse(0, 0, 2, 3, 0, A, 1, B, 3, 2.0f, C, 3, 1, mk, 3, &st);
    static const float want[6] = {2, 0, 6, 8, 10, 0};
    for (int i = 0; i < 6; i++) assert_true(C[i] == want[i]);
    assert_int_equal(st.macs_elem, 0);
    assert_int_equal(st.macs_cpu, 0);

    /* a 2x2 case by hand: A = [1 0; 0 2], B = [0 3; 4 0], mask hides (1,1) */
    float a[4] = {1, 0, 0, 2}, b[4] = {0, 3, 4, 0}, c[4];
    uint8_t m2[4] = {1, 1, 1, 0};
    et_sgemm_sparse(0, 0, 2, 2, 2, a, 2, b, 2, 0.0f, c, 2, 1, m2, 2, &st);
    assert_true(c[0] == 0.0f && c[1] == 3.0f && c[2] == 8.0f && c[3] == 0.0f);
    /* (0,0): a00*b00=0 skip, a01=0; (0,1): a00*b01 -> 1; (1,0): a11*b10 -> 1 */
    assert_int_equal(st.macs_elem, 2);

    /* the fast kernel and the reference agree on a larger mixed case */
    const int M = 37, N = 150, K = 420;
    float *A2 = make(M, K, K, 0.4, PAT_RUNS), *B2 = make(K, N, N, 0.6, PAT_BLOCKS);
    float *c1 = calloc((size_t)M * N, sizeof(float)), *c2 = calloc((size_t)M * N, sizeof(float));
    uint8_t *mm = malloc((size_t)M * N);
    for (int i = 0; i < M * N; i++) mm[i] = (uint8_t)(urand() % 3 != 0);
    et_spgemm_stats s1, s2;
    et_sgemm_sparse_ref(0, 0, M, N, K, A2, K, B2, N, 0.0f, c1, N, 1, mm, N, &s1);
    et_sgemm_sparse(0, 0, M, N, K, A2, K, B2, N, 0.0f, c2, N, 1, mm, N, &s2);
    assert_memory_equal(c1, c2, sizeof(float) * (size_t)M * N);
    assert_int_equal(s1.macs_elem, s2.macs_elem);
    free(A2);
    free(B2);
    free(c1);
    free(c2);
    free(mm);
}

/* Calls from inside a parallel region (each with its own workspace) give the
 * same bits and counts as a call alone. */
static void test_nested(void **state) {
    (void)state;
    const int M = 45, N = 230, K = 500;
    float *A = make(M, K, K, 0.5, PAT_RUNS), *B = make(K, N, N, 0.4, PAT_BLOCKS);
    uint8_t *mk = malloc((size_t)M * N);
    assert_non_null(mk);
    for (int i = 0; i < M * N; i++) mk[i] = (uint8_t)(urand() % 4 != 0);
    float *c0 = calloc((size_t)M * N, sizeof(float)), *c[4];
    et_spgemm_stats s0, s[4];
    et_set_threads(2);
    et_sgemm_sparse(0, 0, M, N, K, A, K, B, N, 0.0f, c0, N, 1, mk, N, &s0);
    for (int t = 0; t < 4; t++) c[t] = calloc((size_t)M * N, sizeof(float));
#pragma omp parallel for num_threads(2)
    for (int t = 0; t < 4; t++) et_sgemm_sparse(0, 0, M, N, K, A, K, B, N, 0.0f, c[t], N, 1, mk, N, &s[t]);
    et_set_threads(1);
    for (int t = 0; t < 4; t++) {
        assert_memory_equal(c0, c[t], sizeof(float) * (size_t)M * N);
        assert_int_equal(s0.macs_elem, s[t].macs_elem);
        free(c[t]);
    }
    free(A);
    free(B);
    free(mk);
    free(c0);
}

/* The weighted counts (et_spgemm_wsum) against a plain double loop, with
 * more than 4096 columns (the stack chunk), ld > cols, at 1 and 2 threads. */
static void test_wsum(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {7, 65}, {300, 9000}, {2, 4097}, {33, 64}};
    for (size_t q = 0; q < sizeof shapes / sizeof shapes[0]; q++) {
        const int rows = shapes[q][0], cols = shapes[q][1], ld = cols + 3;
        float *X = make(rows, cols, ld, 0.3, q % 2 ? PAT_RUNS : PAT_RANDOM);
        int32_t *wr = malloc(sizeof(int32_t) * (size_t)rows), *wc = malloc(sizeof(int32_t) * (size_t)cols);
        int32_t *cr = malloc(sizeof(int32_t) * (size_t)rows), *cc = malloc(sizeof(int32_t) * (size_t)cols);
        assert_true(wr && wc && cr && cc);
        for (int r = 0; r < rows; r++) wr[r] = (int32_t)(urand() % 1000);
        for (int c = 0; c < cols; c++) wc[c] = (int32_t)(urand() % 1000);
        uint64_t er = 0, ec = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (X[(size_t)r * ld + c] != 0.0f) er += (uint64_t)wr[r], ec += (uint64_t)wc[c];
        for (int T = 1; T <= 2; T++) {
            et_set_threads(T);
            assert_int_equal(et_spgemm_wsum(1, rows, cols, X, ld, wr), er);
            assert_int_equal(et_spgemm_wsum(0, rows, cols, X, ld, wc), ec);
        }
        et_set_threads(1);
        et_spgemm_linecount(1, rows, cols, X, ld, cr);
        et_spgemm_linecount(0, rows, cols, X, ld, cc);
        for (int r = 0; r < rows; r++) {
            int32_t n = 0;
            for (int c = 0; c < cols; c++) n += X[(size_t)r * ld + c] != 0.0f;
            assert_int_equal(cr[r], n);
        }
        for (int c = 0; c < cols; c++) {
            int32_t n = 0;
            for (int r = 0; r < rows; r++) n += X[(size_t)r * ld + c] != 0.0f;
            assert_int_equal(cc[c], n);
        }
        free(X), free(wr), free(wc), free(cr), free(cc);
    }
}

static float at2(const float *X, int t, int ld, int r, int c) { return t ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c]; }

/* The matmul record's counts from the caller (knnz_a, knnz_b,
 * post_mask_cols): C is et_sgemm's, bit for bit (post_mask_cols: unmasked,
 * the caller masks), and macs_executed / outputs_masked equal a brute-force
 * count over (i, j, k), for every ta/tb, at 1 and 2 threads. */
static void test_known_counts(void **state) {
    (void)state;
    const int M = 37, N = 150, K = 70;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int form = 0; form < 4; form++) { /* a, b, both, post mask */
                const int lda = ta ? M + 1 : K + 2, ldb = tb ? K + 3 : N + 1;
                /* post mask: op(A) without zeros (the record's promise) */
                float *A = make(ta ? K : M, ta ? M : K, lda, form == 3 ? 1.0 : 0.6, PAT_RANDOM);
                float *B = make(tb ? N : K, tb ? K : N, ldb, 0.4, PAT_RUNS);
                int32_t ka[70], kb[70], pm[150];
                uint64_t elem = 0, kept = 0;
                for (int k = 0; k < K; k++) {
                    ka[k] = kb[k] = 0;
                    for (int i = 0; i < M; i++) ka[k] += at2(A, ta, lda, i, k) != 0.0f;
                    for (int j = 0; j < N; j++) kb[k] += at2(B, tb, ldb, k, j) != 0.0f;
                }
                for (int j = 0; j < N; j++) pm[j] = (int32_t)(urand() % (M + 1));
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        if (form == 3 && i >= pm[j]) continue; /* any mask with these column counts */
                        kept++;
                        for (int k = 0; k < K; k++) elem += at2(A, ta, lda, i, k) != 0.0f && at2(B, tb, ldb, k, j) != 0.0f;
                    }
                float *c0 = calloc((size_t)M * N, sizeof(float)), *c1 = calloc((size_t)M * N, sizeof(float));
                assert_true(c0 && c1);
                et_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, c0, N);
                for (int T = 1; T <= 2; T++) {
                    et_set_threads(T);
                    et_engine eng;
                    memset(&eng, 0, sizeof eng);
                    et_matmul mm = {ET_FF, 0, ta, tb, M, N, K, A, lda, B, ldb, c1, N, 0.0f, 1, NULL, 0, NULL, 0, 0,
                                    form == 0 || form == 2 ? ka : NULL, form == 1 || form == 2 ? kb : NULL,
                                    form == 3 ? pm : NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL};
                    assert_int_equal(et_matmul_run(&eng, &mm), ET_OK);
                    assert_memory_equal(c0, c1, sizeof(float) * (size_t)M * N);
                    const et_counters *c = &eng.total;
                    assert_int_equal(c->macs_executed[ET_FF], elem);
                    assert_int_equal(c->outputs_masked[ET_FF], (uint64_t)M * N - kept);
                }
                et_set_threads(1);
                free(A), free(B), free(c0), free(c1);
            }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_degenerate_and_ref),
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_large_structured),
        cmocka_unit_test(test_cols),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_wsum),
        cmocka_unit_test(test_known_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
