/* Conv FF's implicit im2col (et_sgemm_convb, kernels/gemm_internal.h; used by
 * src/nn/conv.c for stride-1 "same" convolutions on AVX-512) against the
 * product it replaces: et_sgemm_epi on the column matrix im2col makes, made
 * here by a scalar loop. Bit for bit, on odd geometries (kernels 3x3, 5x5,
 * 3x1, 1x5, 7x7; planes smaller than a panel; K across KC blocks; Cout not a
 * multiple of MR; padded leading dimensions; beta 0 and 1; bias and ReLU
 * epilogue; zeros of both signs), at 1 and 2 threads and from inside a
 * parallel region; the same for WG's transposed product with the column
 * matrix as A (et_sgemm_convA vs et_sgemm). Then a conv layer's FF and WG
 * (the lanes and chunk sums of conv.c) against the same references, implicit
 * or not, at 1 and 2 threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "edgetrain.h"
#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"
#include "util/layer_harness.h"

int et_conv_chunk(const et_layer *l, int batch); /* src/nn/conv.c */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static float frand(void) { /* uniform in [-1, 1); some exact zeros of both signs */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = rng_state >> 40;
    if (r % 11 == 0) return r % 2 ? 0.0f : -0.0f;
    return (float)((double)r / (double)(1ull << 24) * 2.0 - 1.0);
}

/* col[k][j] for the ncol columns starting at x (channel planes cstride apart),
 * stride 1, padding KH/2, KW/2: the column matrix conv's im2col makes */
static void ref_im2col(const float *x, ptrdiff_t cstride, int C, int H, int W, int KH, int KW, int ncol, float *col) {
    const int HW = H * W;
    for (int ci = 0; ci < C; ci++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                float *d = col + (size_t)((ci * KH + ky) * KW + kx) * ncol;
                for (int j = 0; j < ncol; j++) {
                    const int n = j / HW, y = j % HW / W + ky - KH / 2, xx = j % W + kx - KW / 2;
                    d[j] = y >= 0 && y < H && xx >= 0 && xx < W ? x[ci * cstride + (ptrdiff_t)n * HW + y * W + xx] : 0.0f;
                }
            }
}

typedef struct geom {
    int C, H, W, KH, KW, M, nimg, n0, nb; /* columns: images n0 .. n0+nb-1 of nimg */
} geom;

static const geom geoms[] = {
    {32, 28, 28, 3, 3, 32, 3, 1, 2},  /* VGG8's second conv */
    {50, 7, 7, 3, 3, 21, 4, 0, 3},    /* K = 450 across KC = 384, Cout odd, 7x7 planes */
    {130, 4, 4, 3, 3, 16, 6, 1, 5},   /* K = 1170 (four blocks), planes of 16 < a panel */
    {3, 9, 13, 5, 5, 8, 2, 0, 2},     /* 5x5, odd plane */
    {7, 5, 11, 3, 1, 12, 3, 2, 1},    /* 3x1, the last image alone */
    {4, 6, 6, 1, 5, 9, 2, 0, 2},      /* 1x5 */
    {2, 8, 8, 7, 7, 5, 3, 0, 3},      /* 7x7: 49 taps */
    {64, 14, 14, 3, 3, 64, 9, 0, 9},  /* VGG8's fourth conv: large enough for two threads */
    {6, 1, 17, 1, 3, 10, 4, 1, 3},    /* planes one row high */
};

/* et_sgemm_convb vs et_sgemm_epi on the reference columns: beta 0 / 1, with
 * and without the epilogue; returns through assert */
static void check_geom(const geom *g, int nested) {
    const int K = g->C * g->KH * g->KW, HW = g->H * g->W, ncol = g->nb * HW;
    const int lda = K + 3, ldc = ncol + 5;
    const ptrdiff_t cstride = (ptrdiff_t)g->nimg * HW;
    float *x = malloc(sizeof(float) * (size_t)g->C * cstride), *a = malloc(sizeof(float) * (size_t)g->M * lda);
    float *col = malloc(sizeof(float) * (size_t)K * ncol), *bias = malloc(sizeof(float) * (size_t)g->M);
    float *c0 = malloc(sizeof(float) * (size_t)g->M * ldc), *c1 = malloc(sizeof(float) * (size_t)g->M * ldc);
    float *c2 = malloc(sizeof(float) * (size_t)g->M * ldc);
    assert_true(x && a && col && bias && c0 && c1 && c2);
    for (ptrdiff_t i = 0; i < g->C * cstride; i++) x[i] = frand();
    for (int i = 0; i < g->M * lda; i++) a[i] = frand();
    for (int i = 0; i < g->M; i++) bias[i] = frand();
    for (int i = 0; i < g->M * ldc; i++) c0[i] = frand();
    const float *xs = x + (ptrdiff_t)g->n0 * HW;
    ref_im2col(xs, cstride, g->C, g->H, g->W, g->KH, g->KW, ncol, col);
    const et_gemm_convb cb = {xs, cstride, g->H, g->W, g->KH, g->KW};
    assert_true(et_sgemm_convb_ok(&cb));
    for (int v = 0; v < 4; v++) {
        const float beta = v & 1 ? 1.0f : 0.0f;
        const et_gemm_epi epi = {v & 2 ? bias : NULL, v >> 1, NULL, NULL, NULL};
        memcpy(c1, c0, sizeof(float) * (size_t)g->M * ldc);
        memcpy(c2, c0, sizeof(float) * (size_t)g->M * ldc);
        et_sgemm_epi(0, 0, g->M, ncol, K, 1.0f, a, lda, col, ncol, beta, c1, ldc, &epi);
        if (!nested) {
            et_sgemm_convb(g->M, ncol, K, a, lda, &cb, beta, c2, ldc, &epi);
        } else {
#ifdef _OPENMP
            /* two threads, each its own product (conv's lanes): the second
             * thread's into a copy, compared too */
            float *c3 = malloc(sizeof(float) * (size_t)g->M * ldc);
            assert_non_null(c3);
            memcpy(c3, c0, sizeof(float) * (size_t)g->M * ldc);
#pragma omp parallel num_threads(2)
            et_sgemm_convb(g->M, ncol, K, a, lda, &cb, beta, omp_get_thread_num() ? c3 : c2, ldc, &epi);
            assert_memory_equal(c3, c1, sizeof(float) * (size_t)g->M * ldc);
            free(c3);
#else
            et_sgemm_convb(g->M, ncol, K, a, lda, &cb, beta, c2, ldc, &epi);
#endif
        }
        if (memcmp(c1, c2, sizeof(float) * (size_t)g->M * ldc))
            fail_msg("C=%d %dx%d k%dx%d M=%d: bits differ (beta %g, epilogue %d)", g->C, g->H, g->W, g->KH, g->KW, g->M,
                     beta, v >> 1);
    }
    free(x), free(a), free(col), free(bias), free(c0), free(c1), free(c2);
}

/* et_sgemm_convA (conv WG's dWᵀ = col · dYᵀ with col packed from x) vs
 * et_sgemm on the reference columns, beta 0 and 1 */
static void check_geom_wg(const geom *g, int nested) {
    const int CK = g->C * g->KH * g->KW, HW = g->H * g->W, ncol = g->nb * HW, Co = g->M;
    const int ldb = ncol + 7, ldc = Co + 3;
    const ptrdiff_t cstride = (ptrdiff_t)g->nimg * HW;
    if (et_gemm_dot_fits(0, 1, CK, Co, ncol)) return; /* conv keeps its column matrix there */
    float *x = malloc(sizeof(float) * (size_t)g->C * cstride), *dy = malloc(sizeof(float) * (size_t)Co * ldb);
    float *col = malloc(sizeof(float) * (size_t)CK * ncol), *c0 = malloc(sizeof(float) * (size_t)CK * ldc);
    float *c1 = malloc(sizeof(float) * (size_t)CK * ldc), *c2 = malloc(sizeof(float) * (size_t)CK * ldc);
    assert_true(x && dy && col && c0 && c1 && c2);
    for (ptrdiff_t i = 0; i < g->C * cstride; i++) x[i] = frand();
    for (int i = 0; i < Co * ldb; i++) dy[i] = frand();
    for (int i = 0; i < CK * ldc; i++) c0[i] = frand();
    const float *xs = x + (ptrdiff_t)g->n0 * HW;
    ref_im2col(xs, cstride, g->C, g->H, g->W, g->KH, g->KW, ncol, col);
    const et_gemm_convb cb = {xs, cstride, g->H, g->W, g->KH, g->KW};
    for (int v = 0; v < 2; v++) {
        const float beta = (float)v;
        memcpy(c1, c0, sizeof(float) * (size_t)CK * ldc);
        memcpy(c2, c0, sizeof(float) * (size_t)CK * ldc);
        et_sgemm(0, 1, CK, Co, ncol, 1.0f, col, ncol, dy, ldb, beta, c1, ldc);
        if (!nested) {
            et_sgemm_convA(CK, Co, ncol, &cb, dy, ldb, beta, c2, ldc);
        } else {
#ifdef _OPENMP
            float *c3 = malloc(sizeof(float) * (size_t)CK * ldc);
            assert_non_null(c3);
            memcpy(c3, c0, sizeof(float) * (size_t)CK * ldc);
#pragma omp parallel num_threads(2)
            et_sgemm_convA(CK, Co, ncol, &cb, dy, ldb, beta, omp_get_thread_num() ? c3 : c2, ldc);
            assert_memory_equal(c3, c1, sizeof(float) * (size_t)CK * ldc);
            free(c3);
#else
            et_sgemm_convA(CK, Co, ncol, &cb, dy, ldb, beta, c2, ldc);
#endif
        }
        if (memcmp(c1, c2, sizeof(float) * (size_t)CK * ldc))
            fail_msg("WG C=%d %dx%d k%dx%d Cout=%d: bits differ (beta %g)", g->C, g->H, g->W, g->KH, g->KW, Co, beta);
    }
    free(x), free(dy), free(col), free(c0), free(c1), free(c2);
}

static void test_convb_bits(void **state) {
    (void)state;
    const et_gemm_convb probe = {NULL, 0, 28, 28, 3, 3};
    if (!et_sgemm_convb_ok(&probe)) {
        printf("  (no AVX-512 here, or ET_ISA caps it: et_sgemm_convb not used; skipped)\n");
        return;
    }
    const int threads = et_get_threads();
    for (int T = 1; T <= 2; T++) {
        et_set_threads(T);
        for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++) check_geom(&geoms[i], 0), check_geom_wg(&geoms[i], 0);
    }
    for (size_t i = 0; i < sizeof geoms / sizeof geoms[0]; i++) check_geom(&geoms[i], 1), check_geom_wg(&geoms[i], 1);
    et_set_threads(threads);
}

static void test_convb_ok(void **state) {
    (void)state;
    const et_gemm_convb even = {NULL, 0, 8, 8, 2, 3}, big = {NULL, 0, 8, 8, 9, 9}, tall = {NULL, 0, 2, 8, 3, 3};
    assert_false(et_sgemm_convb_ok(&even)); /* even kernels have no "same" padding */
    assert_false(et_sgemm_convb_ok(&big));  /* 81 taps */
    assert_false(et_sgemm_convb_ok(&tall)); /* kernel taller than the plane */
    assert_false(et_sgemm_convb_fits(4096, 4096)); /* more than a thread's workspace */
    if (et_sgemm_convb_ok(&(const et_gemm_convb){NULL, 0, 7, 7, 3, 3})) assert_true(et_sgemm_convb_fits(128, 1152));
}

/* A conv layer's FF (bias, no fused ReLU) against et_sgemm_epi on the
 * reference columns of the whole batch, and its WG against et_sgemm's
 * transposed products summed over conv's chunks and lanes: the implicit path where it applies
 * and the column-matrix path elsewhere give the same bits, at 1 and 2
 * threads (two lanes), batches 1 and 5 */
static void test_conv_layer_ff(void **state) {
    (void)state;
    et_conv_cfg convs[] = {
        {32, 3, 3, 1, 1, 1, 1, 1}, /* implicit (VGG8) */
        {9, 5, 5, 1, 1, 2, 2, 1},  /* implicit, 5x5 */
        {7, 3, 1, 1, 1, 1, 0, 0},  /* implicit, 3x1, no bias */
        {6, 3, 3, 2, 2, 1, 1, 1},  /* stride 2: col matrix */
        {5, 3, 3, 1, 1, 0, 0, 1},  /* no padding: col matrix */
    };
    et_shape ins[] = {{32, 28, 28, 1}, {6, 11, 9, 1}, {40, 7, 5, 1}, {5, 13, 12, 1}, {8, 10, 9, 1}};
    const int threads = et_get_threads();
    for (int T = 1; T <= 2; T++) {
        et_set_threads(T);
        for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
            for (int N = 1; N <= 5; N += 4) {
                lh h;
                assert_int_equal(lh_init(&h, ET_L_CONV, &convs[i], sizeof convs[i], ins[i], N), ET_OK);
                const et_conv_cfg *c = &convs[i];
                const int Ho = h.l.out.h, Wo = h.l.out.w, K = ins[i].c * c->kh * c->kw, ncol = N * Ho * Wo;
                const int H = ins[i].h, W = ins[i].w;
                float *col = malloc(sizeof(float) * (size_t)K * ncol), *yref = malloc(sizeof(float) * (size_t)c->out * ncol);
                assert_true(col && yref);
                for (int ci = 0; ci < ins[i].c; ci++) /* any stride and padding */
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++)
                            for (int j = 0; j < ncol; j++) {
                                const int n = j / (Ho * Wo), oy = j % (Ho * Wo) / Wo, ox = j % Wo;
                                const int y = oy * c->sh - c->ph + ky, xx = ox * c->sw - c->pw + kx;
                                col[(size_t)((ci * c->kh + ky) * c->kw + kx) * ncol + j] =
                                    y >= 0 && y < H && xx >= 0 && xx < W
                                        ? h.x[((size_t)ci * N + n) * H * W + (size_t)y * W + xx]
                                        : 0.0f;
                            }
                const et_gemm_epi epi = {c->bias ? h.l.params[1].data : NULL, 0, NULL, NULL, NULL};
                et_sgemm_epi(0, 0, c->out, ncol, K, 1.0f, h.l.params[0].data, K, col, ncol, 0.0f, yref, ncol, &epi);
                assert_int_equal(lh_ff(&h), ET_OK);
                if (memcmp(h.y, yref, sizeof(float) * (size_t)c->out * ncol))
                    fail_msg("conv %d: FF bits differ from im2col + et_sgemm (T=%d, N=%d)", (int)i, T, N);
                assert_int_equal(h.eng.total.macs_dense[ET_FF], (uint64_t)c->out * ncol * K);
                /* WG: the transposed form per chunk, the lanes' chunk sums (src/nn/conv.c, "chunks") */
                const int Co = c->out, HWo = Ho * Wo, nbmax = et_conv_chunk(&h.l, N), nch = (N + nbmax - 1) / nbmax;
                const int half = (nch + 1) / 2;
                float *g = calloc((size_t)2 * K * Co, sizeof(float)), *dw = malloc(sizeof(float) * (size_t)K * Co);
                assert_true(g && dw);
                for (int ch = 0; ch < nch; ch++) {
                    const int n0 = ch * nbmax, nb = N - n0 < nbmax ? N - n0 : nbmax, lane = ch >= half;
                    et_sgemm(0, 1, K, Co, nb * HWo, 1.0f, col + (size_t)n0 * HWo, ncol, h.dy + (size_t)n0 * HWo, ncol,
                             ch == 0 || ch == half ? 0.0f : 1.0f, g + (size_t)lane * K * Co, Co);
                }
                for (int o = 0; o < Co; o++)
                    for (int k = 0; k < K; k++)
                        dw[(size_t)o * K + k] = half < nch ? g[(size_t)k * Co + o] + g[(size_t)K * Co + (size_t)k * Co + o]
                                                           : g[(size_t)k * Co + o];
                assert_int_equal(lh_wg(&h), ET_OK);
                if (memcmp(h.l.params[0].grad, dw, sizeof(float) * (size_t)K * Co))
                    fail_msg("conv %d: WG bits differ from im2col + et_sgemm (T=%d, N=%d)", (int)i, T, N);
                assert_int_equal(h.eng.total.macs_dense[ET_WG], (uint64_t)c->out * ncol * K);
                free(g), free(dw);
                free(col), free(yref);
                lh_free(&h);
            }
    }
    et_set_threads(threads);
}

int main(void) {
    et_gemm_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convb_ok),
        cmocka_unit_test(test_convb_bits),
        cmocka_unit_test(test_conv_layer_ff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
