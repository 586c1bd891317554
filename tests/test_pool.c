/* Max pooling against an independent scalar reference written here: the
 * window's first NaN, else its first strict maximum (PyTorch's pick), with
 * ties, zeros and NaN in the data; and EP with a fused ReLU (relu_in) equals
 * max-pool EP followed by ReLU EP. The binary runs itself a second time with
 * ET_ISA=scalar so both the AVX-512 row kernels and the portable loops are
 * checked. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/layer_harness.h"

static int64_t ref_pick(const float *pl, int H, int W, const et_pool_cfg *p, int oy, int ox) {
    int64_t best = -1;
    for (int ky = 0; ky < p->kh; ky++)
        for (int kx = 0; kx < p->kw; kx++) {
            int iy = oy * p->sh - p->ph + ky, ix = ox * p->sw - p->pw + kx;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            int64_t at = (int64_t)iy * W + ix;
            if (best >= 0 && isnan(pl[best])) continue;
            if (best < 0 || isnan(pl[at]) || pl[at] > pl[best]) best = at;
        }
    return best;
}

/* values: 0 = relu-like (>= 0, many zeros and ties), 1 = signed with NaN */
static void fill(float *x, int64_t n, int kind, unsigned seed) {
    static const float relu_vals[] = {0.0f, 0.0f, 0.0f, 0.5f, 1.0f, 1.0f, 2.0f};
    static const float any_vals[] = {-1.0f, 0.0f, -0.0f, 0.5f, 1.0f, 1.0f, -2.0f, NAN};
    srand(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = kind == 0 ? relu_vals[rand() % 7] : any_vals[rand() % 8];
}

static void check(int C, int H, int W, int N, et_pool_cfg cfg, int kind, int relu) {
    lh h;
    et_shape in = {C, H, W, 1};
    assert_int_equal(lh_init(&h, ET_L_MAXPOOL, &cfg, sizeof cfg, in, N), ET_OK);
    fill(h.x, h.nx, kind, (unsigned)(C * 131 + H * 7 + W + relu));
    for (int64_t i = 0; i < h.ny; i++) h.dy[i] = (float)(i % 13) - 6.0f + 0.25f;
    assert_int_equal(lh_ff(&h), ET_OK);
    h.relu_in = relu;
    assert_int_equal(lh_ep(&h), ET_OK);
    const int Ho = h.l.out.h, Wo = h.l.out.w;
    float *dx = calloc((size_t)h.nx, sizeof(float));
    for (int64_t pl = 0; pl < (int64_t)C * N; pl++) {
        const float *xp = h.x + pl * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int64_t a = ref_pick(xp, H, W, &h.l.cfg.pool, oy, ox);
                float y = h.y[(pl * Ho + oy) * Wo + ox];
                /* same value (NaN stays NaN) */
                if (isnan(xp[a])) assert_true(isnan(y));
                else assert_memory_equal(&y, &xp[a], sizeof y);
                dx[pl * H * W + a] += h.dy[(pl * Ho + oy) * Wo + ox];
            }
    }
    if (relu) /* ReLU EP after the pool's: dx = x > 0 ? dx : 0 */
        for (int64_t i = 0; i < h.nx; i++)
            if (!(h.x[i] > 0.0f)) dx[i] = 0.0f;
    for (int64_t i = 0; i < h.nx; i++)
        if (dx[i] != h.dx[i]) fail_msg("dx[%lld] = %g, want %g", (long long)i, h.dx[i], dx[i]);
    free(dx);
    lh_free(&h);
}

static void test_2x2(void **s) {
    (void)s;
    et_pool_cfg c = {2, 2, 2, 2, 0, 0, 0};
    for (int relu = 0; relu < 2; relu++)
        for (int kind = 0; kind < 2; kind++) {
            check(3, 28, 28, 2, c, kind, relu);  /* Wo = 14: one partial vector */
            check(2, 7, 7, 3, c, kind, relu);    /* odd sizes: leftover row and column */
            check(2, 6, 40, 2, c, kind, relu);   /* Wo = 20: a full vector and a tail */
            check(1, 4, 66, 1, c, kind, relu);   /* Wo = 33 */
        }
}

static void test_general(void **s) {
    (void)s;
    et_pool_cfg c3 = {3, 3, 2, 2, 1, 1, 0}, c2 = {2, 2, 1, 1, 0, 0, 0};
    for (int relu = 0; relu < 2; relu++)
        for (int kind = 0; kind < 2; kind++) {
            check(2, 9, 9, 2, c3, kind, relu);
            check(2, 5, 6, 2, c2, kind, relu); /* overlapping windows: dx sums */
        }
}

int main(int argc, char **argv) {
    (void)argc;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_2x2), cmocka_unit_test(test_general)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc == 0 && !getenv("ET_ISA")) { /* again on the portable path */
        setenv("ET_ISA", "scalar", 1);
        execv(argv[0], argv);
        return 1;
    }
    return rc;
}
