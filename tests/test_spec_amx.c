/* The whole-call predictions of a convolution, AMX-INT8
 * (src/sparsity/speculate_amx.c) and the direct path for few taps
 * (speculate.c, et_spec_conv_small): their masks and per-column kept counts
 * against a scalar loop over the direct convolution of the codes, and a speculated conv layer with the AMX path on
 * and off (the VNNI or portable path) giving the same output, mask,
 * counters and statistics bit for bit. The kernel test is skipped where the
 * CPU (or the kernel, or ET_AMX=0) gives no AMX; the layer test then checks
 * the fallback against the scalar loop alone. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sparsity/sparsity.h"
#include "sparsity/speculate_amx.h"
#include "util/layer_harness.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float rndf(void) { /* [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rng >> 40) / 8388608.0f - 1.0f;
}

static float absmaxf(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

/* The scalar predictor of output (co, n, oy, ox) of a stride-1 convolution
 * (x CNHW, w [co][ci][ky][kx]): the exact sum of code products, then
 * (sA * sB) * (float)S + bias, kept where !(e <= 0). */
static int ref_keep(const float *x, const float *w, const float *bias, int N, int Ci, int H, int W, int kh, int kw,
                    int ph, int pw, float aw, float ax, int bits, int co, int n, int oy, int ox) {
    const float iw = aw > 0.0f ? 127.0f / aw : 0.0f, ix = ax > 0.0f ? 127.0f / ax : 0.0f;
    int64_t S = 0;
    for (int ci = 0; ci < Ci; ci++)
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                int iy = oy - ph + ky, xx = ox - pw + kx;
                if (iy < 0 || iy >= H || xx < 0 || xx >= W) continue;
                S += (int64_t)et_spec_code(w[(((int64_t)co * Ci + ci) * kh + ky) * kw + kx], iw, bits) *
                     et_spec_code(x[(((int64_t)ci * N + n) * H + iy) * W + xx], ix, bits);
            }
    const float step = (float)(1 << (8 - bits));
    const float s = (aw / 127.0f * step) * (ax / 127.0f * step);
    float e = s * (float)S + (bias ? bias[co] : 0.0f);
    return !(e <= 0.0f);
}

static void fill(float *a, int64_t n, float zeros) {
    for (int64_t i = 0; i < n; i++) {
        float v = rndf();
        a[i] = v < zeros ? 0.0f : v;
    }
}

/* One whole-call prediction of shape s (n, cin, h, w, cout, kh, kw, ph, pw)
 * through the AMX path (amx) or the direct path for few taps, against the
 * scalar predictor: every mask byte, each column's kept count, nothing
 * written past the columns; on the AMX path also each input pixel's
 * non-zero channels, counted by the coding pass. edge: the threshold's edges (infinite, NaN and
 * huge biases), a zero input at 4 bits, NaN inputs. */
static void check_call(int amx, const int *s, int bits, int threads, int with_bias, int edge) {
    const int N = s[0], Ci = s[1], H = s[2], W = s[3], Co = s[4], kh = s[5], kw = s[6], ph = s[7], pw = s[8];
    const int Ho = H + 2 * ph - kh + 1, Wo = W + 2 * pw - kw + 1;
    et_spec_amx_layout L;
    size_t bytes;
    if (amx) {
        assert_int_equal(et_spec_amx_plan(&L, N, Ci, H, W, Co, kh, kw, ph, pw), 1);
        assert_int_equal(L.ho, Ho), assert_int_equal(L.wo, Wo);
        bytes = L.bytes;
    } else {
        bytes = et_spec_small_bytes(N, Ci, H, W, Co, kh, kw, ph, pw);
        assert_true(bytes > 0);
    }
    const int64_t nx = (int64_t)Ci * N * H * W, nw = (int64_t)Co * Ci * kh * kw, cols = (int64_t)N * Ho * Wo;
    const int64_t ldm = cols + 3;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * Co);
    uint8_t *mask = malloc((size_t)(Co * ldm));
    void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    assert_true(x && w && b && mask && buf);
    fill(x, nx, -0.1f); /* relu-like input: about 45% zeros */
    fill(w, nw, -2.0f);
    for (int i = 0; i < Co; i++) b[i] = 0.3f * rndf();
    if (edge) {
        b[0] = INFINITY, b[1] = -INFINITY, b[2] = NAN, b[3] = 1e30f, b[4] = -1e30f, b[5] = 0.0f, b[6] = -0.0f;
        if (bits == 4) memset(x, 0, sizeof(float) * (size_t)nx);
        x[1] = NAN, x[nx / 2] = -NAN; /* coded 0 (absmaxf skips them) */
    }
    memset(mask, 0x77, (size_t)(Co * ldm));
    const float aw = absmaxf(w, nw), ax = absmaxf(x, nx);
    et_spec sp = {bits, aw, ax, with_bias || edge ? b : NULL, 1, mask, (int)ldm, 0, NULL, NULL, 0, NULL, NULL, NULL};
    const int32_t *kept = NULL;
    et_set_threads(threads);
    int32_t *xnz = malloc(sizeof(int32_t) * (size_t)(N * H * W));
    assert_non_null(xnz);
    if (amx)
        assert_int_equal(et_spec_conv_amx(&L, x, w, &sp, buf, &kept, xnz), 1);
    else
        assert_int_equal(et_spec_conv_small(x, N, Ci, H, W, w, Co, kh, kw, ph, pw, &sp, buf, bytes, &kept), 1);
    assert_non_null(kept);
    for (int n = 0; n < N; n++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const int64_t j = ((int64_t)n * Ho + oy) * Wo + ox;
                int k = 0;
                for (int co = 0; co < Co; co++) {
                    int want = ref_keep(x, w, sp.bias, N, Ci, H, W, kh, kw, ph, pw, aw, ax, bits, co, n, oy, ox);
                    if (mask[co * ldm + j] != want)
                        fail_msg("%s %dx%dx%dx%d -> %d (%dx%d): bits %d: mask[%d][%lld] = %d, want %d",
                                 amx ? "amx" : "small", N, Ci, H, W, Co, kh, kw, bits, co, (long long)j,
                                 mask[co * ldm + j], want);
                    k += want;
                }
                assert_int_equal(kept[j], k);
            }
    for (int co = 0; co < Co; co++) /* nothing past the columns */
        for (int64_t j = cols; j < ldm; j++) assert_int_equal(mask[co * ldm + j], 0x77);
    if (amx) /* the coding pass's count of each input pixel's non-zero channels (NaN counts) */
        for (int n = 0; n < N; n++)
            for (int p = 0; p < H * W; p++) {
                int want = 0;
                for (int ci = 0; ci < Ci; ci++) want += x[((int64_t)ci * N + n) * H * W + p] != 0.0f;
                assert_int_equal(xnz[(int64_t)n * H * W + p], want);
            }
    free(x), free(w), free(b), free(mask), free(buf), free(xnz);
    et_set_threads(1);
}

static void test_amx_kernel(void **state) {
    (void)state;
    if (!et_spec_amx_ok()) skip();
    /* n, cin, h, w, cout, kh, kw, ph, pw: code bytes per pixel 4 (16 taps
     * per K step), 8, 16, 32 (two taps), 64 and 128 (two K steps per tap)
     * with partial channel groups and output blocks, 1x1, uneven kernels,
     * padding wider than the kernel, no padding, VGG8's shapes (28x28 with
     * Cin 32, 14x14 with 64, 7x7 with 128), more images than threads */
    static const int shapes[][9] = {{2, 4, 7, 9, 5, 3, 3, 1, 1},     {1, 8, 5, 6, 32, 3, 3, 1, 1},
                                    {2, 68, 4, 5, 40, 3, 3, 1, 1},   {3, 5, 6, 4, 7, 1, 1, 0, 0},
                                    {1, 16, 9, 3, 33, 5, 3, 2, 0},   {2, 32, 28, 28, 32, 3, 3, 1, 1},
                                    {2, 12, 6, 5, 9, 3, 3, 1, 1},    {2, 6, 5, 5, 8, 1, 1, 1, 1},
                                    {1, 20, 6, 7, 16, 5, 5, 1, 2},   {2, 33, 5, 6, 17, 3, 3, 0, 0},
                                    {2, 64, 14, 14, 64, 3, 3, 1, 1}, {3, 128, 7, 7, 40, 3, 3, 1, 1},
                                    {5, 16, 6, 6, 20, 3, 3, 1, 1},   {7, 64, 4, 4, 33, 3, 3, 1, 1},
                                    {2, 40, 6, 6, 24, 3, 3, 1, 1}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    et_spec_amx_layout none;
    assert_int_equal(et_spec_amx_plan(&none, 2, 3, 8, 8, 16, 3, 3, 1, 1), 0); /* under 4 channels: not this path */
    for (int si = 0; si < nshapes; si++)
        for (int bits = 1; bits <= 8; bits += 3)
            for (int threads = 1; threads <= 2; threads++)
                check_call(1, shapes[si], bits, threads, !(si % 2), si == nshapes - 1);
}

/* The direct path for few taps (K = cin * kh * kw <= ET_SPEC_SMALL_K), on
 * any AVX-512 CPU: VGG8's and LeNet's first layers, 3 channels, channel
 * counts that leave part of the last 8 (1, 5, 17), rows shorter than 16
 * and not a multiple of it, padding wider than the kernel, K = 63 and 64;
 * K = 65 is not this path. */
static void test_small_kernel(void **state) {
    (void)state;
    if (et_cpu_isa() < ET_ISA_AVX512) skip();
    static const int shapes[][9] = {{2, 1, 28, 28, 32, 3, 3, 1, 1}, {3, 1, 12, 10, 6, 5, 5, 0, 0},
                                    {2, 3, 7, 9, 5, 3, 3, 1, 1},    {1, 2, 5, 6, 17, 3, 3, 3, 2},
                                    {2, 7, 6, 6, 9, 3, 3, 1, 1},    {3, 64, 3, 5, 1, 1, 1, 0, 0},
                                    {5, 1, 19, 35, 8, 1, 3, 0, 1},  {2, 4, 9, 9, 12, 3, 3, 1, 1}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    assert_int_equal(et_spec_small_bytes(2, 65, 4, 4, 8, 1, 1, 0, 0), 0);
    assert_int_equal(et_spec_small_bytes(2, 8, 4, 4, 8, 3, 3, 1, 1), 0);
    for (int si = 0; si < nshapes; si++)
        for (int bits = 1; bits <= 8; bits += 3)
            for (int threads = 1; threads <= 2; threads++)
                check_call(0, shapes[si], bits, threads, !(si % 2), si == nshapes - 1);
}

/* A conv layer under speculation through its FF call (several chunks, two
 * lanes at 2 threads): the whole-call paths (AMX, few taps) on and off give
 * the same bits everywhere, statistics included, and the mask is the scalar
 * predictor's. */
static void test_amx_layer(void **state) {
    (void)state;
    const int N = 6, bits = 4;
    /* Cin 32, 3x3 "same": AMX, the product packed from x; Cin 1: the direct
     * path (few taps), the product on col; Cin 6, 5x5 without padding: AMX,
     * the product on col. The last two count a checked call's check in the
     * layer's bias pass too (the product leaves the dense values). */
    static const int geo[][6] = {{32, 14, 12, 24, 3, 1}, {1, 11, 13, 20, 3, 1}, {6, 12, 10, 16, 5, 0}};
    for (int gi = 0; gi < 3; gi++)
    for (int threads = 1; threads <= 2; threads++) {
        const int Ci = geo[gi][0], H = geo[gi][1], W = geo[gi][2], kk = geo[gi][4], pad = geo[gi][5];
        et_conv_cfg cfg = {geo[gi][3], kk, kk, 1, 1, pad, pad, 1};
        lh h;
        assert_int_equal(lh_init(&h, ET_L_CONV, &cfg, sizeof cfg, (et_shape){Ci, H, W, 1}, N), ET_OK);
        const et_layer *l = &h.l;
        const int Co = l->out.c, Ho = l->out.h, Wo = l->out.w;
        fill(h.x, h.nx, -0.1f);
        int M, Nn, K;
        et_layer_ff_dims(l, N, &M, &Nn, &K);
        const size_t wsb = et_spec_ws_bytes(bits, M, Nn, K), cb = et_layer_spec_code_bytes(l, N);
        void *ws0 = aligned_alloc(64, (wsb + 63) / 64 * 64), *ws1 = aligned_alloc(64, (wsb + 63) / 64 * 64);
        int8_t *codes = aligned_alloc(64, (cb + 63) / 64 * 64);
        int32_t *xcols = malloc(sizeof(int32_t) * (size_t)(N * Ho * Wo)); /* the layer's column counts' room */
        uint8_t *mask[2] = {malloc((size_t)h.ny), malloc((size_t)h.ny)};
        float *y[2] = {malloc(sizeof(float) * (size_t)h.ny), malloc(sizeof(float) * (size_t)h.ny)};
        et_counters tot[2];
        et_spec_stats st[2];
        assert_true(ws0 && ws1 && codes && xcols && mask[0] && mask[1] && y[0] && y[1]);
        h.eng.spec_ws = ws0, h.eng.spec_ws1 = ws1, h.eng.spec_ws_bytes = wsb;
        et_set_threads(threads);
        /* 0: unchecked; 1: checked (false and missed zeros counted); 2: checked, with
         * zero weights (as pruning leaves them: then the product does not pack from x) */
        for (int variant = 0; variant < 3; variant++) {
        if (variant == 2)
            for (int64_t i = 0; i < h.l.params[0].n; i += 5) h.l.params[0].data[i] = 0.0f;
        const float aw = absmaxf(h.l.params[0].data, h.l.params[0].n), ax = absmaxf(h.x, h.nx);
        for (int run = 0; run < 2; run++) { /* 0: AMX or the direct path where they run, 1: neither */
            et_spec_set_amx(run == 0);
            et_spec_set_small(run == 0);
            memset(&st[run], 0, sizeof st[run]);
            et_spec spec = {bits, aw, ax, h.l.params[1].data, 1, mask[run], N * Ho * Wo, variant > 0, &st[run], NULL, 0,
                            NULL, NULL, NULL};
            et_layer_sparsity sp = {1, 0, 1, &spec, NULL, codes, xcols, NULL};
            h.sp = &sp;
            et_engine_reset(&h.eng);
            assert_int_equal(lh_ff(&h), ET_OK);
            memcpy(y[run], h.y, sizeof(float) * (size_t)h.ny);
            tot[run] = h.eng.total;
        }
        et_spec_set_amx(1);
        et_spec_set_small(1);
        assert_memory_equal(y[0], y[1], sizeof(float) * (size_t)h.ny);
        assert_memory_equal(mask[0], mask[1], (size_t)h.ny);
        assert_memory_equal(&tot[0], &tot[1], sizeof tot[0]);
        assert_memory_equal(&st[0], &st[1], sizeof st[0]);
        assert_true(st[0].predicted_zero > 0 && st[0].predicted_zero < (uint64_t)h.ny);
        if (variant > 0) { /* the check: every output, and a true zero count of its own */
            assert_int_equal(st[0].checked, (uint64_t)h.ny);
            uint64_t tz = 0;
            for (int64_t e = 0; e < h.ny; e++) tz += y[1][e] <= 0.0f && mask[1][e]; /* kept, yet not positive: missed */
            assert_int_equal(st[0].missed_zero, tz);
        }
        for (int co = 0; co < Co; co++)
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < Ho; oy++)
                    for (int ox = 0; ox < Wo; ox++) {
                        int64_t e = (((int64_t)co * N + n) * Ho + oy) * Wo + ox;
                        assert_int_equal(mask[0][e], ref_keep(h.x, h.l.params[0].data, h.l.params[1].data, N, Ci, H,
                                                              W, kk, kk, pad, pad, aw, ax, bits, co, n, oy, ox));
                    }
        }
        free(ws0), free(ws1), free(codes), free(xcols), free(mask[0]), free(mask[1]), free(y[0]), free(y[1]);
        lh_free(&h);
    }
    et_set_threads(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amx_kernel),
        cmocka_unit_test(test_small_kernel),
        cmocka_unit_test(test_amx_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
