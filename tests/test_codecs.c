/* Property tests of the off-chip codecs: random shapes, densities and
 * patterns (uniform, clustered runs, all-zero, dense), exact round trips, and
 * sizes equal to closed-form formulas computed here from the data's counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/rng.h"
#include "sparsity/codec.h"

#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int ceil_log2p1(uint64_t v) { /* bits to hold 0..v */
    int b = 0;
    while ((v >> b) && b < 64) b++;
    return b;
}

/* Independent size formulas. */
static uint64_t expect_bits(et_codec c, const uint32_t *x, int64_t rows, int64_t cols, int bits, int rb) {
    int64_t n = rows * cols, nnz = 0;
    for (int64_t i = 0; i < n; i++) nnz += x[i] != 0;
    switch (c) {
    case ET_CODEC_DENSE: return (uint64_t)n * bits;
    case ET_CODEC_BITMASK: return (uint64_t)n + (uint64_t)nnz * bits;
    case ET_CODEC_CSR: {
        int cb = cols > 1 ? ceil_log2p1((uint64_t)cols - 1) : 0;
        return (uint64_t)rows * ceil_log2p1((uint64_t)cols) + (uint64_t)nnz * (cb + bits);
    }
    case ET_CODEC_RLE: {
        /* entries: each non-zero ends an entry; every gap of g zeros before a
         * non-zero costs floor(g / 2^rb) extra entries; a trailing gap of t
         * zeros costs ceil(t / 2^rb) entries. */
        uint64_t span = (uint64_t)1 << rb, entries = 0, gap = 0;
        for (int64_t i = 0; i < n; i++) {
            if (x[i]) {
                entries += 1 + gap / span;
                gap = 0;
            } else {
                gap++;
            }
        }
        entries += (gap + span - 1) / span;
        return entries * (uint64_t)(rb + bits);
    }
    default: return 0;
    }
}

static void fill(uint32_t *x, int64_t n, int pattern, double density, int bits, uint64_t seed) {
    uint32_t mask = bits == 32 ? 0xffffffffu : (1u << bits) - 1;
    int on = 0;
    for (int64_t i = 0; i < n; i++) {
        double u = et_rand_uniform(seed, 1, (uint64_t)i);
        int nz;
        if (pattern == 0) nz = u < density;                       /* uniform */
        else if (pattern == 1) { if (u < 0.05) on = !on; nz = on; } /* clustered runs */
        else if (pattern == 2) nz = 0;                            /* all zero */
        else nz = 1;                                              /* dense */
        uint32_t v = (uint32_t)et_rand64(seed, 2, (uint64_t)i) & mask;
        x[i] = nz ? (v ? v : 1) : 0;
    }
}

static void test_round_trip_and_sizes(void **state) {
    (void)state;
    const int bitsv[] = {1, 2, 4, 8, 16, 32};
    int cases = 0;
    for (int t = 0; t < 400; t++) {
        int64_t rows = 1 + (int64_t)(et_rand64(7, 3, (uint64_t)t) % 9);
        int64_t cols = 1 + (int64_t)(et_rand64(7, 4, (uint64_t)t) % 300);
        int bits = bitsv[t % 6], rb = 1 + (int)(et_rand64(7, 5, (uint64_t)t) % 8);
        int pattern = t % 4;
        double density = et_rand_uniform(7, 6, (uint64_t)t);
        int64_t n = rows * cols;
        uint32_t *x = malloc(sizeof(uint32_t) * (size_t)n), *y = malloc(sizeof(uint32_t) * (size_t)n);
        fill(x, n, pattern, density, bits, (uint64_t)t);
        for (int c = 0; c < ET_NCODECS; c++) {
            uint64_t want = expect_bits((et_codec)c, x, rows, cols, bits, rb), sz = 0, sz2 = 0;
            assert_int_equal(et_codec_size_bits((et_codec)c, x, rows, cols, bits, rb, &sz), ET_OK);
            if (sz != want) {
                fprintf(stderr, "%s rows=%lld cols=%lld bits=%d rb=%d: %llu bits, formula %llu\n", et_codec_name((et_codec)c),
                        (long long)rows, (long long)cols, bits, rb, (unsigned long long)sz, (unsigned long long)want);
                fail();
            }
            size_t cap = (size_t)(want + 7) / 8;
            uint8_t *buf = malloc(cap + 1);
            assert_int_equal(et_codec_encode((et_codec)c, x, rows, cols, bits, rb, buf, cap, &sz2), ET_OK);
            assert_true(sz2 == want);
            memset(y, 0xab, sizeof(uint32_t) * (size_t)n);
            assert_int_equal(et_codec_decode((et_codec)c, buf, sz2, rows, cols, bits, rb, y), ET_OK);
            assert_memory_equal(x, y, sizeof(uint32_t) * (size_t)n);
            /* a truncated stream is rejected, never read past */
            if (sz2 > 0) assert_int_not_equal(et_codec_decode((et_codec)c, buf, sz2 - 1, rows, cols, bits, rb, y), ET_OK);
            /* one buffer byte short fails cleanly */
            if (cap > 0 && (want + 7) / 8 == cap && want > 0)
                assert_int_not_equal(et_codec_encode((et_codec)c, x, rows, cols, bits, rb, buf, cap - 1, &sz2), ET_OK);
            free(buf);
            cases++;
        }
        free(x), free(y);
    }
    assert_int_equal(cases, 400 * ET_NCODECS);
}

/* The one-pass float version equals the encoder's sizes on the same zeros,
 * on every instruction-set path: small tensors of every pattern, and long
 * ones (past the 4096-element blocks and 64-element words of the counting)
 * with zero runs around every run length the RLE splits at. */
static void test_sizes_f32(void **state) {
    (void)state;
    for (int t = 0; t < 260; t++) {
        const int big = t >= 200;
        int64_t rows = 1 + (int64_t)(et_rand64(9, 3, (uint64_t)t) % 7);
        int64_t cols = big ? 1500 + (int64_t)(et_rand64(9, 4, (uint64_t)t) % 3000)
                           : 1 + (int64_t)(et_rand64(9, 4, (uint64_t)t) % 200);
        int64_t n = rows * cols;
        int rb = big ? 1 + t % 12 : 1 + t % 8;
        uint32_t *codes = malloc(sizeof(uint32_t) * (size_t)n);
        float *x = malloc(sizeof(float) * (size_t)n);
        fill(codes, n, t % 4, et_rand_uniform(9, 6, (uint64_t)t), 32, (uint64_t)t);
        if (big && t % 2) { /* zero runs of every length up to 2^(rb+1) + 70, one non-zero between */
            int64_t i = 0;
            for (uint64_t k = 0; i < n; k++) {
                int64_t run = (int64_t)(et_rand64(9, 7, k + 1000 * (uint64_t)t) % (((uint64_t)2 << rb) + 70));
                for (int64_t q = 0; q < run && i < n; q++) codes[i++] = 0;
                if (i < n) codes[i++] = 5;
            }
        }
        for (int64_t i = 0; i < n; i++) x[i] = codes[i] ? (float)(codes[i] % 1000 + 1) * (i % 2 ? 1.0f : -1.0f) : (i % 3 ? 0.0f : -0.0f);
        if (n > 7) x[n / 2] = codes[n / 2] ? NAN : x[n / 2]; /* NaN is non-zero */
        for (int64_t i = 0; i < n; i++) codes[i] = x[i] != 0.0f ? codes[i] | 1u : 0; /* same zeros */
        uint32_t *c16 = malloc(sizeof(uint32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) c16[i] = codes[i] ? (codes[i] & 0xffff) | 1u : 0;
        uint64_t want[ET_NCODECS];
        int64_t want_nnz = 0;
        for (int64_t i = 0; i < n; i++) want_nnz += c16[i] != 0;
        for (int c = 0; c < ET_NCODECS; c++)
            assert_int_equal(et_codec_size_bits((et_codec)c, c16, rows, cols, 16, rb, &want[c]), ET_OK);
        for (int isa = 0; isa <= ET_ISA_AVX512; isa++) {
            if ((et_isa)isa > et_cpu_isa()) continue;
            uint64_t got[ET_NCODECS];
            int64_t nnz;
            et_codec_sizes_f32_isa((et_isa)isa, x, rows, cols, 16, rb, got, &nnz);
            assert_int_equal(nnz, want_nnz);
            for (int c = 0; c < ET_NCODECS; c++) {
                if (got[c] != want[c])
                    fail_msg("case %d isa %s codec %s: %llu bits, the encoder says %llu", t, et_isa_name((et_isa)isa),
                             et_codec_name((et_codec)c), (unsigned long long)got[c], (unsigned long long)want[c]);
            }
        }
        free(c16), free(codes), free(x);
    }
}

/* Hand-computed cases. */
static void test_hand_cases(void **state) {
    (void)state;
    /* 8 elements, 4-bit codes: 0 0 5 0 0 0 0 7 ; run bits 2 (max run 3) */
    uint32_t x[8] = {0, 0, 5, 0, 0, 0, 0, 7};
    uint64_t sz;
    /* rle: (2,5) (3,0) (0,7) = 3 entries x 6 bits */
    assert_int_equal(et_codec_size_bits(ET_CODEC_RLE, x, 1, 8, 4, 2, &sz), ET_OK);
    assert_int_equal(sz, 18);
    /* bitmask: 8 + 2*4 */
    assert_int_equal(et_codec_size_bits(ET_CODEC_BITMASK, x, 1, 8, 4, 2, &sz), ET_OK);
    assert_int_equal(sz, 16);
    /* csr as 2x4: rows 1 nnz each: 2*3 bits counts + 2*(2+4) */
    assert_int_equal(et_codec_size_bits(ET_CODEC_CSR, x, 2, 4, 4, 2, &sz), ET_OK);
    assert_int_equal(sz, 18);
    assert_int_equal(et_codec_size_bits(ET_CODEC_DENSE, x, 1, 8, 4, 2, &sz), ET_OK);
    assert_int_equal(sz, 32);
    /* a code wider than the stated bits is refused */
    uint8_t buf[16];
    uint32_t bad[2] = {16, 0};
    assert_int_not_equal(et_codec_encode(ET_CODEC_DENSE, bad, 1, 2, 4, 2, buf, sizeof buf, &sz), ET_OK);
    /* garbage: a run that goes past the end */
    uint8_t junk[2] = {0xff, 0xff};
    uint32_t y[4];
    assert_int_not_equal(et_codec_decode(ET_CODEC_RLE, junk, 16, 1, 4, 4, 4, y), ET_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_sizes),
        cmocka_unit_test(test_hand_cases),
        cmocka_unit_test(test_sizes_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
