/* Number formats (src/numerics): every check compares against an independent
 * reference: the OCP formulas for all 8-bit codes, the CPU's own fp16 (F16C)
 * and bf16 (AVX-512 BF16) conversions, a brute-force nearest-value search over
 * the enumerated values of small formats, hand-worked cases, statistics for
 * stochastic rounding, and the built CLI ($ET_CLI, default build/edgetrain). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "kernels/igemm.h"
#include "numerics/format_internal.h"

#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static et_format F(const char *s) {
    et_format f;
    if (et_format_parse(s, &f) != ET_OK) fail_msg("parse '%s': %s", s, et_last_error());
    return f;
}
static float q1(const char *fmt, float x) {
    et_format f = F(fmt);
    float y;
    assert_int_equal(et_quantize(&f, &x, &y, 1, NULL), ET_OK);
    return y;
}
/* bitwise equality (NaN == NaN) */
static int same(float a, float b) { return (isnan(a) && isnan(b)) || f2u(a) == f2u(b); }

static uint64_t lcg = 88172645463325252ULL;
static uint32_t rnd32(void) {
    lcg ^= lcg << 13, lcg ^= lcg >> 7, lcg ^= lcg << 17;
    return (uint32_t)(lcg >> 16);
}

/* ---------------- OCP 8-bit codes, decoded from the spec's formulas */
static double dec_e4m3(int c) {
    int s = c >> 7, E = (c >> 3) & 15, m = c & 7;
    double v;
    if (E == 15 && m == 7) return NAN; /* S.1111.111 */
    v = E == 0 ? ldexp(m / 8.0, -6) : ldexp(1 + m / 8.0, E - 7);
    return s ? -v : v;
}
static double dec_e5m2(int c) {
    int s = c >> 7, E = (c >> 2) & 31, m = c & 3;
    double v;
    if (E == 31) v = m ? NAN : INFINITY;
    else v = E == 0 ? ldexp(m / 4.0, -14) : ldexp(1 + m / 4.0, E - 15);
    return s ? -v : v;
}

static void check_codes(const char *fmt, double (*dec)(int), double maxv) {
    int nan_codes = 0;
    for (int c = 0; c < 256; c++) {
        double d = dec(c);
        if (isnan(d)) { nan_codes++; assert_true(isnan(q1(fmt, NAN))); continue; }
        if (isinf(d)) { /* e5m2 inf codes: conversion saturates, so inf maps to max */
            assert_true(q1(fmt, (float)d) == (float)(d > 0 ? maxv : -maxv));
            continue;
        }
        float x = (float)d;
        assert_true((double)x == d);
        float y = q1(fmt, x);
        assert_true(same(x, y));
        /* re-encode: the one code that decodes to y bitwise (sign of zero included) */
        int back = -1;
        for (int k = 0; k < 256; k++) {
            double dk = dec(k);
            if (!isnan(dk) && same((float)dk, y)) { assert_int_equal(back, -1); back = k; }
        }
        assert_int_equal(back, c);
    }
    et_format f = F(fmt);
    et_format_props p = et_format_properties(&f);
    assert_true(p.max_finite == maxv && p.bits == 8);
    (void)nan_codes;
}

static void test_ocp_codes(void **st) {
    (void)st;
    check_codes("e4m3", dec_e4m3, 448);
    check_codes("e5m2", dec_e5m2, 57344);
    et_format f = F("e4m3");
    et_format_props p = et_format_properties(&f);
    assert_true(p.min_normal == ldexp(1, -6) && p.min_subnormal == ldexp(1, -9));
    f = F("e5m2");
    p = et_format_properties(&f);
    assert_true(p.min_normal == ldexp(1, -14) && p.min_subnormal == ldexp(1, -16));
    /* saturation: round to nearest first, then saturate */
    assert_true(q1("e4m3", 464) == 448); /* tie between 448 (even) and 480: 448 */
    assert_true(q1("e4m3", 465) == 448 && q1("e4m3", 480) == 448 && q1("e4m3", 1e30f) == 448);
    assert_true(q1("e4m3", -INFINITY) == -448 && q1("e5m2", 61440) == 57344 && q1("e5m2", 1e9f) == 57344);
}

/* ---------------- brute force over enumerated values (RN, ties to even) */
/* Non-negative values of an IEEE-like eXmY (or OCP e4m3) in code order,
 * followed by the would-be next step beyond max. */
static int enum_values(int X, int M, int ocp, double *v) {
    int bias = (1 << (X - 1)) - 1, n = 0;
    int top = ocp ? (1 << X) - 1 : (1 << X) - 2;
    for (int E = 0; E <= top; E++)
        for (int m = 0; m < (1 << M); m++) {
            if (ocp && E == top && m == (1 << M) - 1) continue;
            v[n++] = E == 0 ? ldexp((double)m / (1 << M), 1 - bias) : ldexp(1 + (double)m / (1 << M), E - bias);
        }
    int emax = ocp ? top - bias : top - bias; /* exponent of max */
    v[n] = v[n - 1] + ldexp(1, emax - M);      /* max + one step of its binade */
    return n;
}
static double ref_rn(const double *v, int n, double x, int sat) {
    double a = fabs(x);
    int best = 0;
    for (int i = 1; i <= n; i++) {
        double di = fabs(v[i] - a), db = fabs(v[best] - a);
        if (di < db || (di == db && (i & 1) == 0)) best = i;
    }
    double r = best == n ? (sat ? v[n - 1] : INFINITY) : v[best];
    return x < 0 ? -r : r;
}

static void test_bruteforce_small(void **st) {
    (void)st;
    static const struct { const char *fmt; int X, M, ocp, sat; } cases[] = {
        {"e3m2", 3, 2, 0, 0}, {"e3m2:sat", 3, 2, 0, 1}, {"e2m1", 2, 1, 0, 0}, {"e2m0", 2, 0, 0, 0},
        {"e4m3", 4, 3, 1, 1}, {"e5m2", 5, 2, 0, 1}, {"e4m4", 4, 4, 0, 0}, {"e6m1", 6, 1, 0, 0}};
    double v[1 << 12];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = enum_values(cases[c].X, cases[c].M, cases[c].ocp, v);
        et_format f = F(cases[c].fmt);
        et_format_props p = et_format_properties(&f);
        assert_true(p.max_finite == v[n - 1]);
        assert_true(p.min_subnormal == (cases[c].M ? v[1] : v[1]));
        enum { N = 20000 };
        static float x[N], y[N];
        for (int i = 0; i < N; i++) {
            double scale = v[n - 1] * 1.5;
            if (i < 4 * n) x[i] = (float)((i & 1 ? -1 : 1) * (i % 4 < 2 ? v[(i / 4) % n] : (v[(i / 4) % n] + v[(i / 4) % n + 1]) / 2));
            else x[i] = (float)(scale * ldexp((double)rnd32() / 4294967296.0, -(int)(rnd32() % 12))) * (rnd32() & 1 ? -1 : 1);
        }
        assert_int_equal(et_quantize(&f, x, y, N, NULL), ET_OK);
        for (int i = 0; i < N; i++) {
            double r = ref_rn(v, n, x[i], cases[c].sat);
            if (!same((float)r, y[i]) && !(r == 0 && y[i] == 0))
                fail_msg("%s: q(%.9g) = %.9g, reference %.9g", cases[c].fmt, x[i], y[i], r);
            if (r == 0) assert_true(signbit(y[i]) == signbit(x[i]));
        }
    }
}

/* ---------------- hardware conversions */
__attribute__((target("f16c"))) static float hw_fp16(float x) { return _cvtsh_ss(_cvtss_sh(x, 0)); }

static void fill_patterns(float *x, size_t n) {
    static const float special[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 65536.0f, 5.9604645e-8f,
                                    2.9802322e-8f, 2.9802326e-8f, 6.1035156e-5f, 1.0f + 0x1p-11f, 1.0f + 0x1p-11f + 0x1p-23f,
                                    1.0f + 3 * 0x1p-11f, INFINITY, -INFINITY, NAN, 3.3895314e38f, 3.4028235e38f,
                                    0x1p-126f, 0x1p-133f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f};
    size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < n; i++) {
        if (i < ns) x[i] = special[i];
        else if (i % 3 == 0) x[i] = u2f(rnd32()); /* any bit pattern */
        else x[i] = u2f((rnd32() & 0x87ffffffu) | 0x30000000u); /* around fp16's range */
    }
}

static void test_fp16_hardware(void **st) {
    (void)st;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("f16c")) skip();
    size_t n = 4u << 20;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    assert_non_null(x), assert_non_null(y);
    fill_patterns(x, n);
    et_format f = F("e5m10"); /* the generic eXmY path under its fp16 name */
    assert_int_equal(et_quantize(&f, x, y, n, NULL), ET_OK);
    for (size_t i = 0; i < n; i++)
        if (!same(y[i], hw_fp16(x[i]))) fail_msg("fp16(%a): %a, F16C %a", x[i], y[i], hw_fp16(x[i]));
    free(x), free(y);
}

__attribute__((target("avx512f,avx512bf16"))) static void hw_bf16(const float *x, float *y) {
    uint16_t h[16];
    __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(x));
    memcpy(h, &b, sizeof h);
    for (int j = 0; j < 16; j++) y[j] = u2f((uint32_t)h[j] << 16);
}

static void test_bf16_hardware(void **st) {
    (void)st;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) skip();
    size_t n = 4u << 20;
    float *x = malloc(n * 4), *y = malloc(n * 4), *h = malloc(n * 4);
    assert_non_null(x), assert_non_null(y), assert_non_null(h);
    fill_patterns(x, n);
    /* VCVTNEPS2BF16 treats subnormal inputs as zero (and flushes results);
     * those inputs are compared separately against :nosub below. */
    for (size_t i = 0; i < n; i++)
        if (fpclassify(x[i]) == FP_SUBNORMAL) x[i] = 0x1p-100f;
    et_format f = F("e8m7");
    assert_int_equal(et_quantize(&f, x, y, n, NULL), ET_OK);
    for (size_t i = 0; i < n; i += 16) hw_bf16(x + i, h + i);
    for (size_t i = 0; i < n; i++)
        if (!same(y[i], h[i])) fail_msg("bf16(%a): %a, AVX512-BF16 %a", x[i], y[i], h[i]);
    assert_true(q1("bf16:nosub", 0x1p-130f) == 0 && q1("bf16", 0x1p-130f) == 0x1p-130f);
    free(x), free(y), free(h);
}

/* ---------------- scalar reference == AVX-512, bit for bit */
static void test_scalar_vs_avx512(void **st) {
    (void)st;
    if (et_cpu_isa() < ET_ISA_AVX512) skip();
    static const char *fmts[] = {"fp16", "bf16", "e4m3", "e5m2", "e3m2", "e2m0", "e8m0", "e6m9:nosub", "fp16:sat/rz",
                                 "e4m3/sr", "e5m2/sr3", "bf16/sr7", "fp16:nosub/sr", "e3m2/rz", "e8m23:nosub", "e2m1:sat",
                                 "int8", "int4/sr", "int16/rz", "dfxp8", "dfxp3/sr2", "int2", "fp32/sr"};
    size_t n = 200003;
    float *x = malloc(n * 4), *x2 = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4);
    assert_non_null(x), assert_non_null(x2), assert_non_null(a), assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd32();
        x[i] = i % 4 == 0 ? u2f(r) : i % 4 == 1 ? u2f((r & 0x80ffffffu) | ((uint32_t)(100 + r % 60) << 23))
                                                : u2f((r & 0x807fffffu) | ((uint32_t)(r % 254) << 23));
    }
    x[5] = INFINITY, x[6] = -INFINITY, x[7] = NAN, x[8] = 0, x[9] = -0.0f, x[10] = 1e-45f;
    /* per-tensor scale (vectorised absmax) == a plain loop over the finite values, any length */
    for (size_t len = 0; len < 40; len++) {
        size_t m = len < 33 ? len : n - len;
        float am = 0;
        for (size_t i = 0; i < m; i++)
            if (isfinite(x[i]) && fabsf(x[i]) > am) am = fabsf(x[i]);
        et_format i8 = F("int8");
        assert_true(et_format_scale(&i8, x, m) == am / 127.0f);
    }
    et_qkey key = {7, 3, 11};
    for (size_t k = 0; k < sizeof fmts / sizeof fmts[0]; k++) {
        et_format f = F(fmts[k]);
        et_qparams p;
        et_qparams_init(&p, &f, et_format_scale(&f, x, n), &key);
        et_quantize_scalar(&p, x, a, n, 5);
        et_quantize_avx512(&p, x, b, n, 5);
        for (size_t i = 0; i < n; i++)
            if (!same(a[i], b[i])) fail_msg("%s: x=%a scalar %a avx512 %a", fmts[k], x[i], a[i], b[i]);
        if (f.kind != ET_FMT_FLOAT) continue;
        /* whole vectors inside the format's normal range (the AVX-512 short
         * path): log-uniform magnitudes in [min normal, max finite], zeros,
         * exact ties (cut-off part 100..0), the ends of the range; one vector
         * in 8 has one lane outside (the general path for the whole vector) */
        et_format_props pr = et_format_properties(&f);
        int S = 23 - f.mbits;
        for (size_t i = 0; i < n; i++) {
            double lo = log2(pr.min_normal), hi = log2(pr.max_finite);
            float v = (float)exp2(lo + (hi - lo) * (rnd32() / 4294967296.0));
            uint32_t u = f2u(v);
            switch (rnd32() % 8) {
            case 0: u = 0; break;
            case 1: if (S > 0) u = (u & ~((1u << S) - 1)) | (1u << (S - 1)); break; /* a tie */
            case 2: u = f2u((float)(rnd32() & 1 ? pr.min_normal : pr.max_finite)); break;
            default: break;
            }
            if (u2f(u) > (float)pr.max_finite) u = f2u((float)pr.max_finite);
            x2[i] = u2f(u | (rnd32() & 0x80000000u));
            if (i % 128 == 77) x2[i] = u2f(rnd32());
        }
        et_quantize_scalar(&p, x2, a, n, 5);
        et_quantize_avx512(&p, x2, b, n, 5);
        for (size_t i = 0; i < n; i++)
            if (!same(a[i], b[i])) fail_msg("%s (normal range): x=%a scalar %a avx512 %a", fmts[k], x2[i], a[i], b[i]);
    }
    free(x), free(x2), free(a), free(b);
}

/* ---------------- rounding with int8 codes (et_quantize_codes) */
/* The values equal the scalar reference's bit for bit, the scale is the
 * per-tensor scale, and every code is what the integer GEMM takes back from
 * the value (et_igemm_code, kernels/igemm.c); a tensor of 2^18 elements or
 * more is split over the threads at 2 threads. */
static void test_quantize_codes(void **st) {
    (void)st;
    static const char *fmts[] = {"int8", "int4", "dfxp8", "int7/sr", "int8/rz", "int2", "dfxp3/sr2", "dfxp6"};
    const size_t n = 300007;
    float *x = malloc(n * 4), *y = malloc(n * 4), *ref = malloc(n * 4);
    int8_t *q = malloc(n);
    assert_true(x && y && ref && q);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rnd32();
        x[i] = i % 3 ? (float)((int)(r % 20001) - 10000) * 1e-3f : u2f((r & 0x807fffffu) | ((uint32_t)(110 + r % 30) << 23));
    }
    x[5] = INFINITY, x[6] = -INFINITY, x[7] = NAN, x[8] = 0, x[9] = -0.0f;
    et_qkey key = {3, 9, 4};
    for (size_t k = 0; k < sizeof fmts / sizeof *fmts; k++)
        for (int threads = 1; threads <= 2; threads++) {
            et_set_threads(threads);
            et_format f = F(fmts[k]);
            float s = -1;
            memset(q, 0x55, n);
            assert_int_equal(et_quantize_codes(&f, x, y, q, n, &key, &s), ET_OK);
            assert_true(s == et_format_scale(&f, x, n));
            et_qparams p;
            et_qparams_init(&p, &f, s, &key);
            et_quantize_scalar(&p, x, ref, n, 0);
            const float cs = s > 0 ? s : 1.0f;
            for (size_t i = 0; i < n; i++) {
                if (!same(y[i], ref[i])) fail_msg("%s T=%d: x=%a value %a, reference %a", fmts[k], threads, x[i], y[i], ref[i]);
                if (q[i] != et_igemm_code(ref[i], cs))
                    fail_msg("%s T=%d: x=%a code %d, want %d", fmts[k], threads, x[i], q[i], et_igemm_code(ref[i], cs));
            }
        }
    et_set_threads(0);
    /* an all-zero tensor: scale 0, codes 0 */
    memset(x, 0, 64 * 4);
    et_format i8 = F("int8");
    float s = -1;
    assert_int_equal(et_quantize_codes(&i8, x, y, q, 64, NULL, &s), ET_OK);
    assert_true(s == 0);
    for (int i = 0; i < 64; i++) assert_int_equal(q[i], 0);
    /* only per-tensor integer grids of at most 8 bits have int8 codes */
    const char *bad[] = {"fp16", "int16", "int8:perchannel", "e4m3"};
    for (int b = 0; b < 4; b++) {
        et_format f = F(bad[b]);
        assert_int_equal(et_quantize_codes(&f, x, y, q, 64, NULL, NULL), ET_ERR_INVALID);
    }
    free(x), free(y), free(ref), free(q);
}

/* The AVX-512 integer rounding to nearest multiplies by fl(1/scale) instead
 * of dividing; near a half-integer quotient it must fall back to the
 * division. Values within a few ulps of (k + 1/2) * scale, and exact
 * multiples, for several scales: equal to the scalar reference bit for bit. */
static void test_int_rn_near_half(void **st) {
    (void)st;
    if (et_cpu_isa() < ET_ISA_AVX512) skip();
    static const char *fmts[] = {"int8", "int16", "dfxp8", "int4"};
    const float scales[] = {0.0123f, 1.7e-3f, 3.0f, 0.1f, 1.0f / 127.0f, 2.5e-38f, 7.3e12f};
    const size_t n = 5000;
    float *x = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4);
    int8_t *q = malloc(n);
    assert_true(x && a && b && q);
    for (size_t fi = 0; fi < sizeof fmts / sizeof *fmts; fi++)
        for (size_t si = 0; si < sizeof scales / sizeof *scales; si++) {
            et_format f = F(fmts[fi]);
            const int qmax = (1 << (f.bits - 1)) - 1;
            for (size_t i = 0; i < n; i++) {
                int k = (int)(rnd32() % (uint32_t)(2 * qmax + 3)) - qmax - 1;
                double h = ((double)k + (i % 2 ? 0.5 : 0.0)) * scales[si];
                float v = (float)h;
                for (int j = (int)(rnd32() % 9) - 4; j != 0; j += j > 0 ? -1 : 1) v = nextafterf(v, j > 0 ? INFINITY : -INFINITY);
                x[i] = v;
            }
            x[0] = INFINITY, x[1] = -INFINITY, x[2] = NAN, x[3] = -0.0f, x[4] = 1e30f;
            et_qparams p;
            et_qparams_init(&p, &f, scales[si], NULL);
            et_quantize_scalar(&p, x, a, n, 0);
            et_quantize_avx512(&p, x, b, n, 0);
            for (size_t i = 0; i < n; i++)
                if (!same(a[i], b[i]))
                    fail_msg("%s scale %a: x=%a scalar %a avx512 %a", fmts[fi], scales[si], x[i], a[i], b[i]);
            if (f.bits > 8) continue;
            /* the same rounding with the codes taken in its registers */
            memset(b, 0, n * 4), memset(q, 0x55, n);
            et_quantize_codes_avx512(&p, x, b, q, n, 0, scales[si]);
            for (size_t i = 0; i < n; i++)
                if (!same(a[i], b[i]) || q[i] != et_igemm_code(a[i], scales[si]))
                    fail_msg("%s scale %a with codes: x=%a value %a (want %a) code %d (want %d)", fmts[fi], scales[si],
                             x[i], b[i], a[i], q[i], et_igemm_code(a[i], scales[si]));
        }
    free(x), free(a), free(b), free(q);
}

/* ---------------- hand cases */
static void test_hand_cases(void **st) {
    (void)st;
    /* ties to even: fp16 spacing at 1 is 2^-10 */
    assert_true(q1("fp16", 1 + 0x1p-11f) == 1.0f);
    assert_true(q1("fp16", 1 + 3 * 0x1p-11f) == 1 + 0x1p-9f);
    assert_true(q1("fp16", 1 + 0x1p-11f + 0x1p-20f) == 1 + 0x1p-10f);
    /* subnormals: fp16 min subnormal 2^-24; half of it ties to 0 */
    assert_true(q1("fp16", 0x1p-24f) == 0x1p-24f && q1("fp16", 0x1p-25f) == 0 && q1("fp16", 0x1.8p-25f) == 0x1p-24f);
    assert_true(q1("fp16", 3 * 0x1p-25f) == 2 * 0x1p-24f); /* 1.5 quanta -> 2 (even) */
    /* overflow: inf vs :sat vs /rz */
    assert_true(q1("fp16", 65520) == INFINITY && q1("fp16", 65519) == 65504);
    assert_true(q1("fp16:sat", 65520) == 65504 && q1("fp16:sat", -INFINITY) == -65504);
    assert_true(q1("fp16/rz", 70000) == 65504 && q1("fp16/rz", INFINITY) == INFINITY);
    assert_true(q1("fp16/rz", 1 + 0x1.fp-11f) == 1.0f && q1("fp16/rz", -(1 + 0x1.fp-10f)) == -(1 + 0x1p-10f));
    /* :nosub: magnitude rounded without lower exponent bound, below min normal -> 0 */
    assert_true(q1("fp16:nosub", 0x1p-15f) == 0 && signbit(q1("fp16:nosub", -0x1p-15f)));
    assert_true(q1("fp16:nosub", 0x1.fffp-15f) == 0x1p-14f); /* rounds up to min normal: kept */
    assert_true(q1("fp16:nosub", 0x1.ff0p-15f) == 0);       /* rounds to 0x1.ff8p-15 < min normal */
    /* e3m2: bias 3, max 14, min normal 0.25, min subnormal 1/16 */
    et_format f = F("e3m2");
    et_format_props p = et_format_properties(&f);
    assert_true(p.max_finite == 14 && p.min_normal == 0.25 && p.min_subnormal == 0.0625 && p.bits == 6);
    /* eXm0 (e3m0: 0.25, 0.5, .., 8): ties go to the even code, i.e. the even exponent field */
    assert_true(q1("e3m0", 3) == 2 && q1("e3m0", 6) == 8 && q1("e3m0", 0.75f) == 0.5f && q1("e3m0", 0.125f) == 0 && q1("e3m0", 0.1875f) == 0.25f);
    assert_true(q1("e3m2", 15) == INFINITY && q1("e3m2", 14.9f) == 14 && q1("e3m2", 0.09375f) == 0.125f);
    /* NaN stays NaN everywhere */
    static const char *all[] = {"fp32", "fp16", "bf16", "e4m3", "e5m2", "e3m2:sat/sr", "int8", "dfxp4/rz"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) assert_true(isnan(q1(all[i], NAN)));
    /* equivalent spellings are one descriptor */
    et_format a = F("e5m10"), b = F("fp16");
    assert_memory_equal(&a, &b, sizeof a);
    a = F("e8m7"), b = F("bf16");
    assert_memory_equal(&a, &b, sizeof a);
    a = F("e8m23"), b = F("fp32");
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_parse_and_names(void **st) {
    (void)st;
    static const char *good[][2] = {{"fp16", "fp16"}, {"e5m10/rn", "fp16"}, {"e4m3:sat", "e4m3"}, {"bf16:nosub/sr", "bf16:nosub/sr"},
                                    {"e3m2:nosub:sat/sr4", "e3m2:sat:nosub/sr4"}, {"int8:perchannel/rz", "int8:perchannel/rz"},
                                    {"dfxp16", "dfxp16"}, {"e8m23", "fp32"}, {"e2m0/sr32", "e2m0/sr"}};
    char buf[64];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        et_format f = F(good[i][0]), g;
        assert_string_equal(et_format_name(&f, buf, sizeof buf), good[i][1]);
        assert_int_equal(et_format_parse(buf, &g), ET_OK);
        assert_memory_equal(&f, &g, sizeof f);
    }
    static const char *badf[] = {"e9m1", "e1m3", "e4m24", "int1", "int17", "dfxp", "fp8", "", "fp16:sat:sat",
                                 "fp16/sr0", "fp16/sr33", "fp16/rq", "int8:sat", "fp16:perchannel", "fp16/rn:sat", "FP16", "e04m3", "int08", "fp16/sr04"};
    for (size_t i = 0; i < sizeof badf / sizeof badf[0]; i++) {
        et_format f;
        assert_int_equal(et_format_parse(badf[i], &f), ET_ERR_INVALID);
        assert_non_null(strstr(et_last_error(), badf[i]));
    }
}

/* ---------------- stochastic rounding */
static double sr_mean(const char *fmt, float x, int n, uint64_t step) {
    et_format f = F(fmt);
    float *xs = malloc(n * sizeof *xs), *ys = malloc(n * sizeof *ys);
    for (int i = 0; i < n; i++) xs[i] = x;
    et_qkey key = {42, 1, step};
    assert_int_equal(et_quantize(&f, xs, ys, n, &key), ET_OK);
    double s = 0;
    for (int i = 0; i < n; i++) s += ys[i];
    free(xs), free(ys);
    return s / n;
}

static void test_stochastic(void **st) {
    (void)st;
    const int n = 400000;
    const double q = 0.125; /* e4m3 quantum in [1, 2) */
    static const double fr[] = {0.3, 0.01, 0.5, 0.77, 0.999};
    for (size_t k = 0; k < sizeof fr / sizeof fr[0]; k++) {
        float x = (float)(1 + fr[k] * q);
        double f = (x - 1.0) / q;
        /* full bits: unbiased */
        double sigma = q * sqrt(f * (1 - f) / n);
        assert_true(fabs(sr_mean("e4m3/sr", x, n, 0) - x) <= 5 * sigma + 1e-12);
        /* R bits: bias exactly floor(f 2^R)/2^R - f */
        static const int Rs[] = {1, 2, 3, 5};
        for (size_t j = 0; j < 4; j++) {
            int R = Rs[j];
            char fmt[16];
            snprintf(fmt, sizeof fmt, "e4m3/sr%d", R);
            double pu = floor(f * ldexp(1, R)) / ldexp(1, R);
            double expect = 1 + pu * q, sg = q * sqrt(pu * (1 - pu) / n);
            double m = sr_mean(fmt, x, n, 1);
            if (fabs(m - expect) > 5 * sg + 1e-12) fail_msg("%s x=%g: mean %.9g expected %.9g", fmt, x, m, expect);
        }
    }
    /* same key -> same result; another step -> different draws */
    et_format f = F("bf16/sr");
    enum { N = 1000 };
    float x[N], a[N], b[N], c[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)i * 0x1p-20f;
    et_qkey k1 = {5, 9, 100}, k2 = {5, 9, 101};
    et_quantize(&f, x, a, N, &k1);
    et_quantize(&f, x, b, N, &k1);
    et_quantize(&f, x, c, N, &k2);
    assert_memory_equal(a, b, sizeof a);
    int diff = 0;
    for (int i = 0; i < N; i++) diff += a[i] != c[i];
    assert_true(diff > 100);
    /* results are a function of the element index: a sub-range gives the same values */
    et_qparams p;
    et_qparams_init(&p, &f, 1, &k1);
    et_quantize_scalar(&p, x + 100, c, 50, 100);
    assert_memory_equal(a + 100, c, 50 * sizeof *c);
}

/* ---------------- intN / dfxpN */
static void test_int_dfxp(void **st) {
    (void)st;
    float x[] = {-2.54f, 1.0f, 0.01f, 2.0f, -0.0f};
    float y[5];
    et_format f = F("int8");
    float s = et_format_scale(&f, x, 5);
    assert_true(s == 2.54f / 127);
    et_quantize(&f, x, y, 5, NULL);
    assert_true(y[0] == -127 * s && y[1] == 50 * s && y[2] == 0 && y[3] == 100 * s && y[4] == 0 && signbit(y[4]));
    /* symmetric range: -(2^(N-1)-1) .. 2^(N-1)-1 */
    f = F("int4");
    float z[] = {-7, 7, -6.5f, 3.5f, 2.5f};
    et_quantize(&f, z, y, 5, NULL);
    assert_true(y[0] == -7 && y[1] == 7 && y[2] == -6 && y[3] == 4 && y[4] == 2);
    f = F("int4/rz");
    et_quantize(&f, z, y, 5, NULL);
    assert_true(y[2] == -6 && y[3] == 3);
    /* all-zero tensor */
    float zero[4] = {0}, out[4] = {1, 1, 1, 1};
    f = F("int8");
    assert_true(et_format_scale(&f, zero, 4) == 0);
    et_quantize(&f, zero, out, 4, NULL);
    for (int i = 0; i < 4; i++) assert_true(out[i] == 0);
    f = F("dfxp8");
    et_quantize(&f, zero, out, 4, NULL);
    for (int i = 0; i < 4; i++) assert_true(out[i] == 0);
    /* dfxp: smallest 2^k with absmax <= (2^(N-1)-1) 2^k */
    f = F("dfxp4"); /* qmax 7 */
    float d1[] = {5, 1}, d2[] = {7.5f, 1}, d3[] = {7, 0}, d4[] = {0.1f};
    assert_true(et_format_scale(&f, d1, 2) == 1 && et_format_scale(&f, d2, 2) == 2);
    assert_true(et_format_scale(&f, d3, 2) == 1 && et_format_scale(&f, d4, 1) == 0x1p-6f); /* 7/64 >= 0.1 > 7/128 */
    f = F("dfxp8");
    float d5[] = {-1.0f, 0.3f, 0.5f};
    assert_true(et_format_scale(&f, d5, 3) == 0x1p-6f); /* 127/64 >= 1 > 127/128 */
    et_quantize(&f, d5, y, 3, NULL);
    assert_true(y[0] == -1 && y[1] == 19 * 0x1p-6f && y[2] == 0.5f);
    float inf_in[] = {INFINITY, 1, -INFINITY};
    f = F("int8");
    et_quantize(&f, inf_in, y, 3, NULL);
    assert_true(y[0] == 1 && y[1] == 1 && y[2] == -1); /* absmax over finite values; inf saturates */
    /* per channel: each row gets its own scale */
    float w[6] = {1, -0.5f, 0.25f, 100, 50, -25}, wq[6];
    f = F("int2:perchannel"); /* qmax 1 */
    assert_int_equal(et_quantize_rows(&f, w, wq, 2, 3, NULL), ET_OK);
    assert_true(wq[0] == 1 && wq[1] == -0.0f && wq[2] == 0 && wq[3] == 100 && wq[4] == 0 && wq[5] == -0.0f);
    f = F("int8:perchannel");
    et_quantize_rows(&f, w, wq, 2, 3, NULL);
    assert_true(wq[1] == -64 * (1.0f / 127) && wq[4] == 64 * (100.0f / 127));
    f = F("int8");
    et_quantize_rows(&f, w, wq, 2, 3, NULL); /* per tensor: 0.25 rounds to 0 at scale 100/127 */
    assert_true(wq[2] == 0 && wq[0] == 1 * (100.0f / 127));
    et_format_props p = et_format_properties(&f);
    assert_true(p.max_finite == 127 && p.bits == 8);
}

/* ---------------- the CLI */
static const char *cli;
static int run_cli(const char *input, const char *args, char *out, size_t cap, int *err_lines) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "printf '%s' | %s quantize %s 2>/tmp/et_fmt_err.%d", input, cli, args, (int)getpid());
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    char ef[64];
    snprintf(ef, sizeof ef, "/tmp/et_fmt_err.%d", (int)getpid());
    FILE *e = fopen(ef, "r");
    int lines = 0, c;
    if (e) {
        while ((c = fgetc(e)) != EOF) lines += c == '\n';
        fclose(e);
    }
    unlink(ef);
    *err_lines = lines;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* :scaled (per-tensor power-of-two scale, docs/formats.md): hand cases. */
static void test_scaled(void **st) {
    (void)st;
    float y[5];
    et_format e4 = F("e4m3"), e4s = F("e4m3:scaled");
    /* absmax 1000 > 448: plain e4m3 saturates, scaled by 2^-2 it does not
     * (250 -> 256, 125 -> 128 on E4M3's 3-bit mantissa, then times 4) */
    float big[3] = {1000, -500, 1};
    assert_true(et_format_scale(&e4s, big, 3) == 4.0f);
    assert_int_equal(et_quantize(&e4, big, y, 3, NULL), ET_OK);
    assert_true(y[0] == 448 && y[1] == -448 && y[2] == 1);
    assert_int_equal(et_quantize(&e4s, big, y, 3, NULL), ET_OK);
    assert_true(y[0] == 1024 && y[1] == -512 && y[2] == 1);
    /* tiny tensor: below E4M3's smallest subnormal 2^-9 it flushes to zero;
     * scaled by 2^28 (1e-6 * 2^28 = 268.4 -> 256, 3e-7 * 2^28 = 80.5 -> 80) */
    float tiny[2] = {1e-6f, -3e-7f};
    assert_int_equal(et_quantize(&e4, tiny, y, 2, NULL), ET_OK);
    assert_true(y[0] == 0 && y[1] == 0);
    assert_true(et_format_scale(&e4s, tiny, 2) == 0x1p-28f);
    assert_int_equal(et_quantize(&e4s, tiny, y, 2, NULL), ET_OK);
    assert_true(y[0] == 0x1p-20f && y[1] == -5 * 0x1p-24f);
    /* the scale puts absmax at most at max: 448 -> 1, 449 -> 2, 224 -> 1/2 */
    float a448 = 448, a449 = 449, a224 = 224, zero[2] = {0, -0.0f};
    assert_true(et_format_scale(&e4s, &a448, 1) == 1 && et_format_scale(&e4s, &a449, 1) == 2);
    assert_true(et_format_scale(&e4s, &a224, 1) == 0.5f);
    assert_true(et_format_scale(&e4s, zero, 2) == 1 && et_format_scale(&e4, big, 3) == 1);
    /* e5m2: 1e-10 is far below its smallest subnormal 2^-16; scaled it keeps 3 significant bits */
    et_format e5s = F("e5m2:scaled");
    float t5 = 1e-10f;
    assert_int_equal(et_quantize(&e5s, &t5, y, 1, NULL), ET_OK);
    assert_true(y[0] > 0.87e-10f && y[0] < 1.13e-10f);
    /* NaN stays NaN, inf saturates to max * scale, the finite values set the scale */
    float sp[4] = {1e-6f, NAN, INFINITY, -INFINITY};
    assert_int_equal(et_quantize(&e4s, sp, y, 4, NULL), ET_OK);
    assert_true(isnan(y[1]) && y[2] == 448 * 0x1p-28f && y[3] == -448 * 0x1p-28f);
    /* names and errors */
    char buf[40];
    assert_string_equal(et_format_name(&e4s, buf, sizeof buf), "e4m3:scaled");
    et_format g = F("e5m2:scaled/sr");
    assert_string_equal(et_format_name(&g, buf, sizeof buf), "e5m2:scaled/sr");
    et_format bad;
    assert_int_not_equal(et_format_parse("int8:scaled", &bad), ET_OK);
    assert_int_not_equal(et_format_parse("e4m3:scaled:scaled", &bad), ET_OK);
}

static void test_cli(void **st) {
    (void)st;
    cli = getenv("ET_CLI") ? getenv("ET_CLI") : "build/edgetrain";
    if (access(cli, X_OK) != 0) fail_msg("CLI %s not built", cli);
    char out[4096];
    int el;
    assert_int_equal(run_cli("464 480 -1e9 0.0009765625 0.001 NaN -Inf", "--format e4m3", out, sizeof out, &el), 0);
    assert_string_equal(out, "448\n448\n-448\n0\n0.001953125\nnan\n-448\n");
    assert_int_equal(run_cli("65520\\n1.00048828125 -0 INF", "--format fp16", out, sizeof out, &el), 0);
    assert_string_equal(out, "inf\n1\n-0\ninf\n");
    assert_int_equal(run_cli("0.1 -3 1.5", "--format int4", out, sizeof out, &el), 0);
    assert_string_equal(out, "0\n-3\n1.71428573\n"); /* scale 3/7; 1.5 is 3.5 steps: tie to 4 */
    assert_int_equal(run_cli("0.3 0.3 0.3 0.3", "--format e4m3/sr --seed 1 --step 2 --tensor 3", out, sizeof out, &el), 0);
    char again[4096];
    assert_int_equal(run_cli("0.3 0.3 0.3 0.3", "--format e4m3/sr --seed 1 --step 2 --tensor 3", again, sizeof again, &el), 0);
    assert_string_equal(out, again);
    static const char *bad[][2] = {{"1", "--format e9m1"}, {"1", "--format int1"}, {"1 1.2.3", "--format fp16"},
                                   {"1", ""}, {"abc", "--format e4m3"}, {"1", "--format fp16 --seed -1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_cli(bad[i][0], bad[i][1], out, sizeof out, &el);
        if (rc == 0 || el != 1) fail_msg("'%s' with %s: exit %d, %d stderr lines", bad[i][0], bad[i][1], rc, el);
    }
    assert_int_equal(run_cli("", "--help", out, sizeof out, &el), 0);
    assert_non_null(strstr(out, "eXmY"));
}

/* et_absmax_f32 (rounding scales: finite only; speculation: +-inf too; NaN
 * never) against a scalar loop, for lengths around the vector width and the
 * thread split (the portable loop: run with ET_ISA=scalar). */
static float absmax_ref(const float *x, size_t n, int with_inf) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (isnan(a) || (!with_inf && isinf(a))) continue;
        if (a > m) m = a;
    }
    return m;
}

static void test_absmax(void **state) {
    (void)state;
    const size_t lens[] = {0, 1, 15, 16, 17, 33, 1000, (size_t)1 << 19};
    const size_t nmax = (size_t)1 << 19;
    float *x = malloc(sizeof(float) * nmax);
    assert_non_null(x);
    uint32_t r = 12345;
    for (size_t i = 0; i < nmax; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 3.0f;
    }
    const float specials[] = {NAN, -INFINITY, INFINITY, -0.0f, 1e-40f, -7.5f};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t sp = 0; sp <= sizeof specials / sizeof *specials; sp++) {
            const size_t n = lens[li];
            float *y = malloc(sizeof(float) * (n ? n : 1));
            memcpy(y, x, sizeof(float) * n);
            if (sp < sizeof specials / sizeof *specials && n) y[(n * 7) / 11] = specials[sp];
            for (int wi = 0; wi < 2; wi++) {
                float got = et_absmax_f32(y, n, wi), want = absmax_ref(y, n, wi);
                if (memcmp(&got, &want, sizeof got))
                    fail_msg("n=%zu special=%zu with_inf=%d: %g, want %g", n, sp, wi, got, want);
            }
            free(y);
        }
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_names), cmocka_unit_test(test_ocp_codes),
        cmocka_unit_test(test_bruteforce_small), cmocka_unit_test(test_hand_cases),
        cmocka_unit_test(test_fp16_hardware),   cmocka_unit_test(test_bf16_hardware),
        cmocka_unit_test(test_scalar_vs_avx512), cmocka_unit_test(test_quantize_codes),
        cmocka_unit_test(test_int_rn_near_half), cmocka_unit_test(test_stochastic), cmocka_unit_test(test_scaled),
        cmocka_unit_test(test_int_dfxp),        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_absmax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
