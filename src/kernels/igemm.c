/* INT8 GEMM (kernels/igemm.h): argument checks, packing, the scalar path,
 * the threaded driver over 32-column panels x row chunks, and the float
 * wrapper that turns scaled operands into int8 codes. */
#include "kernels/igemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PW 32   /* columns per panel */
#define IROWS 48 /* rows per task */

static int have_vnni(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

et_isa et_igemm_isa(void) {
    et_isa isa = et_cpu_isa();
    if (isa >= ET_ISA_AVX512 && !have_vnni()) isa = ET_ISA_AVX2;
    return isa;
}

static int8_t opA(int ta, const int8_t *A, int lda, int i, int k) {
    return ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
}
static int8_t opB(int tb, const int8_t *B, int ldb, int k, int j) {
    return tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
}

static void scalar_rows(int ta, int tb, int i0, int i1, int N, int K, const int8_t *A, int lda, const int8_t *B,
                        int ldb, int32_t *C, int ldc) {
    for (int i = i0; i < i1; i++)
        for (int j = 0; j < N; j++) {
            uint32_t s = 0; /* wraps modulo 2^32 like the SIMD paths */
            for (int k = 0; k < K; k++)
                s += (uint32_t)((int32_t)opA(ta, A, lda, i, k) * (int32_t)opB(tb, B, ldb, k, j));
            C[(size_t)i * ldc + j] = (int32_t)s;
        }
}

void et_igemm_s8_isa(et_isa isa, int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B,
                     int ldb, int32_t *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (isa > et_igemm_isa()) isa = et_igemm_isa();
    int T = et_get_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1;
#endif
    if (T < 1) T = 1;
    int np = (N + PW - 1) / PW;
    /* group = 4 k's (VNNI) or 2 k's (AVX2) */
    int g = isa >= ET_ISA_AVX512 ? 4 : 2;
    int Kg = (K + g - 1) / g;
    uint32_t *Ap = NULL;
    void *Bp = NULL;
    int32_t *cs = NULL;
    size_t panel_bytes = (size_t)Kg * PW * 4; /* 4 bytes per (group, column) either way */
    if (isa != ET_ISA_SCALAR && K > 0) {
        Ap = malloc((size_t)M * Kg * 4 + 4);
        Bp = aligned_alloc(64, panel_bytes * np + 64);
        cs = malloc((size_t)np * PW * 4);
        if (!Ap || !Bp || !cs) {
            free(Ap), free(Bp), free(cs);
            isa = ET_ISA_SCALAR;
        }
    }
    if (isa == ET_ISA_SCALAR || K <= 0) {
        int nt = (M + IROWS - 1) / IROWS;
        if (T > nt) T = nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(T) if (T > 1)
#endif
        for (int t = 0; t < nt; t++)
            scalar_rows(ta, tb, t * IROWS, t * IROWS + IROWS < M ? t * IROWS + IROWS : M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
    int rows = IROWS;
    if (np < 2 * T) {
        int want = (2 * T + np - 1) / np;
        rows = (M + want - 1) / want;
        if (rows < 6) rows = 6;
    }
    int ni = (M + rows - 1) / rows, nt = ni * np;
    int Tp = T;
#ifdef _OPENMP
#pragma omp parallel num_threads(Tp) if (Tp > 1)
#endif
    {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int i = 0; i < M; i++) {
            uint32_t *dst = Ap + (size_t)i * Kg;
            for (int q = 0; q < Kg; q++) {
                uint32_t w = 0;
                for (int l = 0; l < g; l++) {
                    int k = q * g + l;
                    int v = k >= K ? 0 : ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                    w |= g == 4 ? (uint32_t)(uint8_t)(v + 128) << (8 * l) : (uint32_t)(uint16_t)(int16_t)v << (16 * l);
                }
                dst[q] = w;
            }
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int p = 0; p < np; p++) {
            int j0 = p * PW;
            if (g == 4) {
                int8_t *bp = (int8_t *)Bp + panel_bytes * p;
                int32_t sum[PW] = {0};
                int nc = N - j0 < PW ? N - j0 : PW;
                memset(bp, 0, panel_bytes);
                for (int k = 0; k < K; k++) {
                    int8_t *dst = bp + (size_t)(k / 4) * PW * 4 + (k & 3);
                    if (!tb) {
                        const int8_t *src = B + (size_t)k * ldb + j0;
                        for (int c = 0; c < nc; c++) dst[c * 4] = src[c], sum[c] += src[c];
                    } else
                        for (int c = 0; c < nc; c++) {
                            int8_t v = B[(size_t)(j0 + c) * ldb + k];
                            dst[c * 4] = v, sum[c] += v;
                        }
                }
                for (int c = 0; c < PW; c++) cs[p * PW + c] = 128 * sum[c];
            } else {
                int16_t *bp = (int16_t *)((char *)Bp + panel_bytes * p);
                for (int q = 0; q < Kg; q++)
                    for (int c = 0; c < PW; c++)
                        for (int l = 0; l < 2; l++) {
                            int k = q * 2 + l, j = j0 + c;
                            bp[((size_t)q * PW + c) * 2 + l] = k < K && j < N ? opB(tb, B, ldb, k, j) : 0;
                        }
            }
        }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int t = 0; t < nt; t++) {
            int p = t / ni, ib = t % ni;
            int i0 = ib * rows, i1 = i0 + rows < M ? i0 + rows : M;
            int j0 = p * PW, nc = N - j0 < PW ? N - j0 : PW;
            char *bp = (char *)Bp + panel_bytes * p;
#if defined(__x86_64__)
            if (g == 4)
                et_igemm_avx512_block(Ap, Kg, (const int8_t *)bp, cs + p * PW, i0, i1, nc, C + j0, ldc);
            else
                et_igemm_avx2_block(Ap, Kg, (const int16_t *)bp, i0, i1, nc, C + j0, ldc);
#else
            (void)bp, (void)i0, (void)i1, (void)j0, (void)nc;
#endif
        }
    }
    free(Ap), free(Bp), free(cs);
}

void et_igemm_s8(int ta, int tb, int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb,
                 int32_t *C, int ldc) {
    et_igemm_s8_isa(et_igemm_isa(), ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
}

static void codes(const float *x, int rows, int cols, int ld, float scale, int8_t *q) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float v = scale != 0.0f ? nearbyintf(x[(size_t)r * ld + c] / scale) : 0.0f;
            if (!(v >= -127.0f)) v = isnan(v) ? 0.0f : -127.0f;
            if (v > 127.0f) v = 127.0f;
            q[(size_t)r * cols + c] = (int8_t)v;
        }
}

et_status et_igemm_f32(int ta, int tb, int M, int N, int K, const float *A, int lda, float scale_a, const float *B,
                       int ldb, float scale_b, float *C, int ldc) {
    if (M < 0 || N < 0 || K < 0) return et_set_error(ET_ERR_INVALID, "et_igemm_f32: negative size");
    if (M == 0 || N == 0) return ET_OK;
    if (!C || (K > 0 && (!A || !B))) return et_set_error(ET_ERR_INVALID, "et_igemm_f32: NULL matrix");
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    if (ldc < N || lda < ac || ldb < bc) return et_set_error(ET_ERR_INVALID, "et_igemm_f32: leading dimension too small");
    int8_t *qa = malloc((size_t)ar * ac + 1), *qb = malloc((size_t)br * bc + 1);
    int32_t *acc = malloc((size_t)M * N * sizeof(int32_t));
    if (!qa || !qb || !acc) {
        free(qa), free(qb), free(acc);
        return et_set_error(ET_ERR_NOMEM, "et_igemm_f32: cannot allocate code buffers");
    }
    codes(A, ar, ac, lda, scale_a, qa);
    codes(B, br, bc, ldb, scale_b, qb);
    et_igemm_s8(ta, tb, M, N, K, qa, ac > 0 ? ac : 1, qb, bc > 0 ? bc : 1, acc, N);
    float s = scale_a * scale_b;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = s * (float)acc[(size_t)i * N + j];
    free(qa), free(qb), free(acc);
    return ET_OK;
}
