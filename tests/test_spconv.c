/* Conv EP and WG without the column matrix (kernels/spconv.h), bit for bit
 * against the column-matrix path written out here independently: im2col and
 * col2im as plain loops around et_sgemm, the product the dense path runs.
 *   EP: dcol = Wᵀ·dY (et_sgemm), dx = 0 + the dcol entries in (ky, kx) order
 *       (col2im's gather sum), then 0 where x == 0;
 *   WG: G = col·dYᵀ (et_sgemm, tb = 1) over two chunks (beta 0, then 1).
 * Random geometries (kernels 1x1 .. 5x3, padding 0..2, channel counts that
 * are and are not multiples of 16, images per chunk 1..3, chunks longer than
 * KC), densities of dY from 0 to 0.6, at 1 and 2 threads and inside a
 * parallel region; multiply-adds returned = the formula. Also: through
 * et_matmul_run (the counts and the record's rules), and shapes the kernels
 * decline. Without AVX-512 the kernels do not run; the test checks that. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "edgetrain.h"
#include "kernels/matmul.h"
#include "kernels/spconv.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}
static double unif(void) { return urand() / 2147483648.0; }
static float val(void) { return (float)((unif() - 0.5) * (unif() < 0.2 ? 100.0 : 1.0)); }

typedef struct geo {
    int C, Cout, H, W, KH, KW, PH, PW, N;
} geo;

static void im2col(const geo *g, int Ho, int Wo, const float *x, int n0, int nb, float *col) {
    const int64_t P = (int64_t)nb * Ho * Wo;
    for (int ci = 0; ci < g->C; ci++)
        for (int ky = 0; ky < g->KH; ky++)
            for (int kx = 0; kx < g->KW; kx++) {
                float *r = col + (((int64_t)ci * g->KH + ky) * g->KW + kx) * P;
                for (int n = 0; n < nb; n++)
                    for (int oy = 0; oy < Ho; oy++)
                        for (int ox = 0; ox < Wo; ox++) {
                            const int iy = oy - g->PH + ky, ix = ox - g->PW + kx;
                            r[((int64_t)n * Ho + oy) * Wo + ox] =
                                iy >= 0 && iy < g->H && ix >= 0 && ix < g->W
                                    ? x[(((int64_t)ci * g->N + n0 + n) * g->H + iy) * g->W + ix]
                                    : 0.0f;
                        }
            }
}

/* dx of images n0..: 0 + the dcol entries in (ky, kx) order, then the mask */
static void col2im_keep(const geo *g, int Ho, int Wo, const float *dcol, const float *x, int n0, int nb, float *dx) {
    const int64_t P = (int64_t)nb * Ho * Wo;
    for (int ci = 0; ci < g->C; ci++)
        for (int n = 0; n < nb; n++)
            for (int iy = 0; iy < g->H; iy++)
                for (int ix = 0; ix < g->W; ix++) {
                    float s = 0.0f;
                    for (int ky = 0; ky < g->KH; ky++)
                        for (int kx = 0; kx < g->KW; kx++) {
                            const int oy = iy + g->PH - ky, ox = ix + g->PW - kx;
                            if (oy < 0 || oy >= Ho || ox < 0 || ox >= Wo) continue;
                            s += dcol[(((int64_t)ci * g->KH + ky) * g->KW + kx) * P + ((int64_t)n * Ho + oy) * Wo + ox];
                        }
                    const int64_t o = (((int64_t)ci * g->N + n0 + n) * g->H + iy) * g->W + ix;
                    dx[o] = x[o] != 0.0f ? s : 0.0f;
                }
}

static et_conv_implicit implicit(const geo *g, int n0, int nb, const float *x, float *dx, const float *wt, float *ws,
                                 size_t wsf) {
    const int Ho = g->H + 2 * g->PH - g->KH + 1, Wo = g->W + 2 * g->PW - g->KW + 1;
    return (et_conv_implicit){g->C, g->N, g->H, g->W, g->Cout, g->KH, g->KW, g->PH, g->PW, Ho, Wo,
                              n0, nb, x, dx, 1, wt, ws, wsf};
}

/* dY as max-pool backward leaves it (the pattern VGG8's EP sees): per
 * channel, image and 2x2 window of the output one position, non-zero with
 * probability 4*dens (at most one non-zero per window). */
static void fill_pool(const geo *g, int Ho, int Wo, double dens, float *dy) {
    const int64_t HWo = (int64_t)Ho * Wo;
    memset(dy, 0, sizeof(float) * (size_t)(g->Cout * g->N * HWo));
    for (int co = 0; co < g->Cout; co++)
        for (int n = 0; n < g->N; n++)
            for (int y = 0; y < Ho; y += 2)
                for (int x = 0; x < Wo; x += 2) {
                    const int k = (int)(urand() % 4), yy = y + (k >> 1), xx = x + (k & 1);
                    const int keep = unif() < 4 * dens;
                    const float v = val();
                    if (keep && yy < Ho && xx < Wo) dy[((int64_t)co * g->N + n) * HWo + (int64_t)yy * Wo + xx] = v;
                }
}

/* One geometry and density: EP of the images [1, 1 + nb) and WG over two
 * chunks, against the reference; returns whether the kernels ran. dY at
 * random (pool 0) or with the max-pool pattern (pool 1). */
static int check_dy(const geo *g, int nb, double dens, double xdens, int pool) {
    const int Ho = g->H + 2 * g->PH - g->KH + 1, Wo = g->W + 2 * g->PW - g->KW + 1, KK = g->KH * g->KW;
    const int CK = g->C * KK, Cp = et_spconv_cp(g->C);
    const int64_t HW = (int64_t)g->H * g->W, HWo = (int64_t)Ho * Wo, P = (int64_t)nb * HWo, ldy = (int64_t)g->N * HWo;
    float *x = malloc(sizeof(float) * (size_t)(g->C * g->N * HW));
    float *dy = malloc(sizeof(float) * (size_t)(g->Cout * ldy));
    float *w = malloc(sizeof(float) * (size_t)g->Cout * CK);
    float *wt = malloc(sizeof(float) * (size_t)g->Cout * KK * Cp);
    float *col = malloc(sizeof(float) * (size_t)CK * P), *dcol = malloc(sizeof(float) * (size_t)CK * P);
    float *dx0 = malloc(sizeof(float) * (size_t)(g->C * g->N * HW)), *dx1 = malloc(sizeof(float) * (size_t)(g->C * g->N * HW));
    float *G0 = malloc(sizeof(float) * (size_t)CK * g->Cout), *G1 = malloc(sizeof(float) * (size_t)g->Cout * KK * Cp);
    assert_true(x && dy && w && wt && col && dcol && dx0 && dx1 && G0 && G1);
    for (int64_t i = 0; i < (int64_t)g->C * g->N * HW; i++) x[i] = unif() < xdens ? val() : 0.0f;
    if (pool)
        fill_pool(g, Ho, Wo, dens, dy);
    else
        for (int64_t i = 0; i < (int64_t)g->Cout * ldy; i++) dy[i] = unif() < dens ? val() : 0.0f;
    for (int64_t i = 0; i < (int64_t)g->Cout * CK; i++) w[i] = val();
    et_spconv_ep_weights(w, g->Cout, g->C, g->KH, g->KW, wt);
    for (int64_t i = 0; i < (int64_t)g->C * g->N * HW; i++) dx0[i] = dx1[i] = -7.0f; /* other images untouched */
    const int n0 = g->N > nb ? 1 : 0;
    et_conv_implicit ig = implicit(g, n0, nb, x, dx1, wt, NULL, 0);
    size_t epf = 0, wgf = 0;
    const int ep_ok = et_spconv_ep_applies(&ig, &epf), wg_ok = et_spconv_wg_applies(&ig, &wgf);
    const size_t wsf = epf > wgf ? epf : wgf;
    float *ws = aligned_alloc(64, sizeof(float) * (wsf + 16));
    assert_non_null(ws);
    ig.ws = ws, ig.ws_floats = wsf;
    int ran = 0;
    uint64_t macs = 0;
    /* EP */
    et_sgemm(1, 0, CK, (int)P, g->Cout, 1.0f, w, CK, dy + n0 * HWo, (int)ldy, 0.0f, dcol, (int)P);
    col2im_keep(g, Ho, Wo, dcol, x, n0, nb, dx0);
    if (et_spconv_ep(&ig, dy + n0 * HWo, ldy, &macs)) {
        assert_true(ep_ok);
        ran |= 1;
        assert_memory_equal(dx0, dx1, sizeof(float) * (size_t)(g->C * g->N * HW));
        uint64_t want = 0; /* C per non-zero dY and tap inside the image */
        for (int co = 0; co < g->Cout; co++)
            for (int64_t p = 0; p < P; p++) {
                if (dy[co * ldy + n0 * HWo + p] == 0.0f) continue;
                const int oy = (int)(p % HWo / Wo), ox = (int)(p % Wo);
                for (int ky = 0; ky < g->KH; ky++)
                    for (int kx = 0; kx < g->KW; kx++)
                        want += (unsigned)(oy - g->PH + ky) < (unsigned)g->H && (unsigned)(ox - g->PW + kx) < (unsigned)g->W
                                    ? (uint64_t)g->C : 0;
            }
        assert_int_equal(macs, want);
    } else {
        assert_false(ep_ok && et_cpu_isa() >= ET_ISA_AVX512);
    }
    /* WG over two chunks: images [n0, n0 + nb) then [0, nb) again with beta 1 */
    for (int c = 0; c < 2; c++) {
        const int c0 = c ? 0 : n0;
        im2col(g, Ho, Wo, x, c0, nb, col);
        et_sgemm(0, 1, CK, g->Cout, (int)P, 1.0f, col, (int)P, dy + c0 * HWo, (int)ldy, c ? 1.0f : 0.0f, G0, g->Cout);
        ig.n0 = c0;
        if (!et_spconv_wg(&ig, dy + c0 * HWo, ldy, c ? 1.0f : 0.0f, G1, &macs)) {
            assert_false(wg_ok && et_cpu_isa() >= ET_ISA_AVX512);
            break;
        }
        assert_true(wg_ok);
        if (c == 1) {
            ran |= 2;
            for (int co = 0; co < g->Cout; co++)
                for (int ci = 0; ci < g->C; ci++)
                    for (int t = 0; t < KK; t++) {
                        const float a = G0[((int64_t)ci * KK + t) * g->Cout + co], b = G1[((int64_t)co * KK + t) * Cp + ci];
                        if (memcmp(&a, &b, sizeof a)) fail_msg("WG %dx%d C%d Cout%d: co %d ci %d tap %d: %a vs %a", g->KH, g->KW, g->C, g->Cout, co, ci, t, (double)a, (double)b);
                    }
        }
    }
    /* the second call's count: C*KH*KW per non-zero of its chunk */
    if (ran & 2) {
        uint64_t n1 = 0;
        for (int co = 0; co < g->Cout; co++)
            for (int64_t p = 0; p < P; p++) n1 += dy[co * ldy + p] != 0.0f;
        assert_int_equal(macs, n1 * (uint64_t)CK);
    }
    free(x), free(dy), free(w), free(wt), free(col), free(dcol), free(dx0), free(dx1), free(G0), free(G1), free(ws);
    return ran;
}

static int check(const geo *g, int nb, double dens, double xdens) { return check_dy(g, nb, dens, xdens, 0); }

static void test_kernels(void **state) {
    (void)state;
    const geo gs[] = {
        {32, 32, 28, 28, 3, 3, 1, 1, 3}, {16, 8, 9, 7, 3, 3, 1, 1, 4},  {20, 37, 6, 11, 3, 3, 1, 1, 3},
        {64, 70, 7, 7, 3, 3, 1, 1, 3},   {48, 16, 5, 9, 5, 3, 2, 1, 3}, {16, 24, 8, 8, 1, 1, 0, 0, 2},
        {7, 5, 6, 6, 3, 3, 0, 0, 2},     {128, 20, 4, 4, 3, 3, 1, 1, 2}, {32, 9, 20, 23, 3, 3, 2, 2, 3},
    };
    const double dens[] = {0.0, 0.03, 0.15, 0.6};
    int any = 0;
    for (int t = 1; t <= 2; t++) {
        et_set_threads(t);
        for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
            for (size_t d = 0; d < sizeof dens / sizeof dens[0]; d++) {
                const int nb = 1 + (int)(i + d) % 2;
                any |= check(&gs[i], nb, dens[d], d == 1 ? 1.0 : 0.6);
            }
    }
    /* from inside a parallel region (conv's lanes): serial in the thread */
#pragma omp parallel num_threads(2)
    {
        geo g = {32, 16, 10, 10, 3, 3, 1, 1, 2};
#pragma omp critical
        any |= check(&g, 2, 0.1, 0.6);
    }
    et_set_threads(0);
    if (et_cpu_isa() >= ET_ISA_AVX512)
        assert_int_equal(any, 3);
    else
        assert_int_equal(any, 0);
}

/* EP's ways of cutting the work (et_spconv_ep_shape): channel blocks of 1,
 * 2 and 3 vectors and their remainders (Cin 7, 20, 40, 64, 72, 100, 128),
 * taps in one group or several (1x1, 3x3, 1x7, 7x1, 5x5 = 9 + 9 + 7, 4x4
 * with padding 3), bands of one row (a wide image), of several rows and of
 * the whole image, output channels up to 256 (bit sets of 1..4 words), at
 * the densities VGG8's EP sees, dY at random and with the max-pool pattern,
 * at 1 and 2 threads: et_sgemm + col2im's bits. */
static void test_ep_shapes(void **state) {
    (void)state;
    const geo gs[] = {
        {32, 32, 28, 28, 3, 3, 1, 1, 3}, {64, 64, 14, 14, 3, 3, 1, 1, 3}, {128, 128, 7, 7, 3, 3, 1, 1, 5},
        {7, 9, 9, 6, 3, 3, 1, 1, 2},     {20, 65, 11, 13, 3, 3, 1, 1, 2}, {40, 16, 30, 5, 3, 3, 1, 1, 2},
        {72, 24, 6, 7, 5, 5, 2, 2, 2},   {100, 200, 5, 5, 3, 3, 1, 1, 2}, {16, 12, 3, 70, 1, 7, 0, 3, 2},
        {24, 8, 12, 4, 7, 1, 3, 0, 2},   {48, 33, 5, 6, 4, 4, 3, 3, 2},   {32, 256, 4, 4, 1, 1, 0, 0, 3},
        {16, 16, 1, 1, 3, 3, 1, 1, 2},
    };
    const double dens[] = {0.05, 0.1, 0.15};
    int any = 0;
    for (int t = 1; t <= 2; t++) {
        et_set_threads(t);
        for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
            for (size_t d = 0; d < sizeof dens / sizeof dens[0]; d++)
                for (int pool = 0; pool < 2; pool++)
                    any |= check_dy(&gs[i], 1 + (int)(i + d + pool) % 2, dens[d], 0.5, pool) & 1;
    }
    et_set_threads(0);
    assert_int_equal(any, et_cpu_isa() >= ET_ISA_AVX512);
}

/* Shapes the kernels decline: stride is not a field (stride 1 only), a
 * geometry that does not add up, too many output channels for EP's bit
 * sets, input rows too wide for WG's registers, no work space. */
static void test_declines(void **state) {
    (void)state;
    float ws[64];
    et_conv_implicit g = {32, 2, 8, 8, 16, 3, 3, 1, 1, 8, 8, 0, 2, ws, ws, 1, ws, ws, 64};
    size_t need;
    et_conv_implicit b = g;
    b.Ho = 7; /* not H + 2PH - KH + 1 */
    assert_false(et_spconv_ep_applies(&b, &need));
    assert_false(et_spconv_wg_applies(&b, &need));
    b = g, b.Cout = 300;
    assert_false(et_spconv_ep_applies(&b, &need));
    b = g, b.C = 160; /* 3 * 160 > 384 */
    assert_false(et_spconv_wg_applies(&b, &need));
    uint64_t m;
    /* work space too small: nothing written, 0 */
    float dy[2 * 64] = {0};
    assert_false(et_spconv_ep(&g, dy, 64, &m));
    assert_false(et_spconv_wg(&g, dy, 64, 0.0f, ws, &m));
}

/* Through the matmul call: an implicit conv record runs only as conv EP/WG
 * with skip_zeros, counts from the layer and plain FP32. */
static void test_matmul_rules(void **state) {
    (void)state;
    float w[16 * 9], dy[16 * 16], ws[4096];
    memset(w, 0, sizeof w), memset(dy, 0, sizeof dy);
    et_conv_implicit g = {1, 1, 4, 4, 16, 3, 3, 1, 1, 4, 4, 0, 1, ws, ws, 1, w, ws, 4096};
    int32_t cols[16];
    for (int i = 0; i < 16; i++) cols[i] = 1;
    et_matmul mm = {ET_FF, -1, 1, 0, 9, 16, 16, w, 9, dy, 16, NULL, 16, 0.0f, 1, NULL, 0, NULL, 0, 0,
                    NULL, NULL, cols, 0, NULL, NULL, NULL, 0, &g, NULL, NULL};
    assert_int_not_equal(et_matmul_run(NULL, &mm), ET_OK); /* FF */
    mm.stage = ET_EP, mm.skip_zeros = 0;
    assert_int_not_equal(et_matmul_run(NULL, &mm), ET_OK); /* no skip_zeros */
    mm.skip_zeros = 1, mm.post_mask_cols = NULL;
    assert_int_not_equal(et_matmul_run(NULL, &mm), ET_OK); /* no counts */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_ep_shapes),
        cmocka_unit_test(test_declines),
        cmocka_unit_test(test_matmul_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
