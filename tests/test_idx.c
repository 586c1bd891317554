/* IDX files and Fashion-MNIST: plain and gzipped round trips, limits, and
 * every way a file can be truncated or lie in its header. */
/* cmocka needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "edgetrain.h"

static char tmpdir[256];

static int setup_dir(void **state) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/et_idx_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

static const char *path_in(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

/* ------------------------------------------------------- building files */

typedef struct bytes {
    unsigned char *p;
    size_t n;
} bytes;

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint8_t pixel(uint32_t i, uint32_t r, uint32_t c) {
    return (uint8_t)(i * 31 + r * 7 + c);
}
static uint8_t label(uint32_t i) {
    return (uint8_t)(i * 3 % 10);
}

/* An image file declaring (n, rows, cols) holding `have` images. */
static bytes mk_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, uint32_t have) {
    bytes b;
    b.n = 16 + (size_t)have * rows * cols;
    b.p = malloc(b.n);
    assert_non_null(b.p);
    put32(b.p, magic);
    put32(b.p + 4, n);
    put32(b.p + 8, rows);
    put32(b.p + 12, cols);
    unsigned char *q = b.p + 16;
    for (uint32_t i = 0; i < have; i++)
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t c = 0; c < cols; c++)
                *q++ = pixel(i, r, c);
    return b;
}

static bytes mk_labels(uint32_t magic, uint32_t n, uint32_t have) {
    bytes b;
    b.n = 8 + have;
    b.p = malloc(b.n);
    assert_non_null(b.p);
    put32(b.p, magic);
    put32(b.p + 4, n);
    for (uint32_t i = 0; i < have; i++)
        b.p[8 + i] = label(i);
    return b;
}

static void write_plain(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *p, size_t n) {
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(gzwrite(f, p, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

static bytes read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    bytes b;
    b.n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc(b.n + 1);
    assert_non_null(b.p);
    assert_int_equal(fread(b.p, 1, b.n, f), b.n);
    fclose(f);
    return b;
}

static void check_dataset(const et_dataset *ds, int64_t n, int rows, int cols) {
    assert_int_equal(ds->n, n);
    assert_int_equal(ds->rows, rows);
    assert_int_equal(ds->cols, cols);
    for (int64_t i = 0; i < n; i++) {
        assert_int_equal(ds->labels[i], label((uint32_t)i));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                assert_int_equal(ds->images[(i * rows + r) * cols + c],
                                 pixel((uint32_t)i, (uint32_t)r, (uint32_t)c));
    }
}

static void expect_fail(const char *ip, const char *lp, int64_t limit, et_status want,
                        const char *label_) {
    et_dataset ds;
    memset(&ds, 0x5A, sizeof ds);
    et_set_error(ET_OK, "%s", "");
    et_status rc = et_idx_load(ip, lp, limit, &ds);
    if (rc == ET_OK) fail_msg("accepted: %s", label_);
    if (want != ET_OK && rc != want)
        fail_msg("%s: got %s (%s), want %s", label_, et_status_name(rc), et_last_error(),
                 et_status_name(want));
    assert_true(et_last_error()[0] != 0);
    if (getenv("ET_TEST_VERBOSE")) printf("  %-36s -> %s\n", label_, et_last_error());
    assert_null(ds.images);
    assert_null(ds.labels);
    assert_int_equal(ds.n, 0);
}

/* ------------------------------------------------------------------ tests */

static void test_round_trip_plain_and_gz(void **state) {
    char ip[600], lp[600], gip[600], glp[600];
    bytes im = mk_images(0x803, 5, 3, 4, 5), lb = mk_labels(0x801, 5, 5);
    write_plain(path_in("i", ip, sizeof ip), im.p, im.n);
    write_plain(path_in("l", lp, sizeof lp), lb.p, lb.n);
    write_gz(path_in("i.gz", gip, sizeof gip), im.p, im.n);
    write_gz(path_in("l.gz", glp, sizeof glp), lb.p, lb.n);
    const char *combos[4][2] = {{ip, lp}, {gip, glp}, {gip, lp}, {ip, glp}};
    for (int k = 0; k < 4; k++) {
        et_dataset ds;
        et_status rc = et_idx_load(combos[k][0], combos[k][1], -1, &ds);
        if (rc != ET_OK) fail_msg("%s", et_last_error());
        check_dataset(&ds, 5, 3, 4);
        et_dataset_free(&ds);
        assert_null(ds.images);
        assert_int_equal(ds.n, 0);
    }
    et_dataset_free(NULL);
    free(im.p);
    free(lb.p);
}

static void test_limit(void **state) {
    char ip[600], lp[600];
    bytes im = mk_images(0x803, 7, 2, 2, 7), lb = mk_labels(0x801, 7, 7);
    write_gz(path_in("li.gz", ip, sizeof ip), im.p, im.n);
    write_plain(path_in("ll", lp, sizeof lp), lb.p, lb.n);
    int64_t limits[] = {-1, -100, 0, 1, 3, 6, 7, 8, 1000000000000LL};
    for (size_t k = 0; k < sizeof limits / sizeof limits[0]; k++) {
        int64_t lim = limits[k];
        int64_t want = lim < 0 || lim > 7 ? 7 : lim;
        et_dataset ds;
        assert_int_equal(et_idx_load(ip, lp, lim, &ds), ET_OK);
        check_dataset(&ds, want, 2, 2);
        et_dataset_free(&ds);
    }
    free(im.p);
    free(lb.p);

    /* A limit never reads beyond the items it takes: a file truncated (or with
     * garbage) after 3 items loads with limit <= 3 and fails with more. */
    im = mk_images(0x803, 7, 2, 2, 3);
    lb = mk_labels(0x801, 7, 3);
    write_gz(ip, im.p, im.n);
    write_plain(lp, lb.p, lb.n);
    et_dataset ds;
    assert_int_equal(et_idx_load(ip, lp, 3, &ds), ET_OK);
    check_dataset(&ds, 3, 2, 2);
    et_dataset_free(&ds);
    expect_fail(ip, lp, 4, ET_ERR_FORMAT, "limit past the data");
    expect_fail(ip, lp, -1, ET_ERR_FORMAT, "all of a short file");
    free(im.p);
    free(lb.p);
}

static void test_truncated_everywhere(void **state) {
    char ip[600], lp[600], tp[600];
    bytes im = mk_images(0x803, 4, 5, 3, 4), lb = mk_labels(0x801, 4, 4);
    write_plain(path_in("ti", ip, sizeof ip), im.p, im.n);
    write_plain(path_in("tl", lp, sizeof lp), lb.p, lb.n);
    path_in("cut", tp, sizeof tp);
    char what[96];
    for (int gz = 0; gz < 2; gz++) {
        /* Images and labels, each cut at every byte of its file (plain) or of
         * its compressed stream (gz). */
        for (int which = 0; which < 2; which++) {
            bytes src = which ? lb : im;
            if (gz) {
                write_gz(tp, src.p, src.n);
                src = read_file(tp);
            }
            for (size_t len = 0; len < src.n; len++) {
                write_plain(tp, src.p, len);
                snprintf(what, sizeof what, "%s %s cut at %zu of %zu", gz ? "gz" : "plain",
                         which ? "labels" : "images", len, src.n);
                if (which)
                    expect_fail(ip, tp, -1, ET_OK, what);
                else
                    expect_fail(tp, lp, -1, ET_OK, what);
            }
            if (gz) free(src.p);
        }
    }
    /* One byte too many is also an error when reading everything. */
    unsigned char *more = malloc(im.n + 1);
    assert_non_null(more);
    memcpy(more, im.p, im.n);
    more[im.n] = 0;
    write_plain(tp, more, im.n + 1);
    expect_fail(tp, lp, -1, ET_ERR_FORMAT, "trailing byte");
    write_gz(tp, more, im.n + 1);
    expect_fail(tp, lp, -1, ET_ERR_FORMAT, "gz trailing byte");
    et_dataset ds;
    assert_int_equal(et_idx_load(tp, lp, 4 - 1, &ds), ET_OK); /* not read with a limit */
    et_dataset_free(&ds);
    free(more);
    free(im.p);
    free(lb.p);
}

static void test_bad_headers(void **state) {
    char ip[600], lp[600], bp[600];
    bytes im = mk_images(0x803, 3, 2, 2, 3), lb = mk_labels(0x801, 3, 3);
    write_plain(path_in("gi", ip, sizeof ip), im.p, im.n);
    write_plain(path_in("gl", lp, sizeof lp), lb.p, lb.n);
    path_in("bad", bp, sizeof bp);

    /* Swapped files: wrong magic, and the message names the file. */
    expect_fail(lp, ip, -1, ET_ERR_FORMAT, "swapped");
    assert_true(strstr(et_last_error(), lp) != NULL);
    assert_true(strstr(et_last_error(), "magic") != NULL);

    struct {
        const char *what;
        uint32_t magic, n, rows, cols, have;
        int labels; /* the bad file replaces the labels */
        uint32_t lmagic, ln;
    } cases[] = {
        {"image magic 0x804", 0x804, 3, 2, 2, 3, 0, 0, 0},
        {"image magic byte-swapped", 0x03080000, 3, 2, 2, 3, 0, 0, 0},
        {"rows 0", 0x803, 3, 0, 2, 3, 0, 0, 0},
        {"cols 0", 0x803, 3, 2, 0, 3, 0, 0, 0},
        {"rows 4097", 0x803, 3, 4097, 2, 0, 0, 0, 0},
        {"cols 2^32-1", 0x803, 3, 2, 0xFFFFFFFFu, 0, 0, 0, 0},
        {"n 10^8+1", 0x803, 100000001, 2, 2, 3, 0, 0, 0},
        {"n 2^32-1", 0x803, 0xFFFFFFFFu, 4096, 4096, 0, 0, 0, 0},
        {"lying n, 28x28", 0x803, 100000000, 28, 28, 3, 0, 0, 0},
        {"label magic 0x803", 0x803, 3, 2, 2, 3, 1, 0x803, 3},
        {"label count 2", 0x803, 3, 2, 2, 3, 1, 0x801, 2},
        {"label count 4", 0x803, 3, 2, 2, 3, 1, 0x801, 4},
        {"label count 2^32-1", 0x803, 3, 2, 2, 3, 1, 0x801, 0xFFFFFFFFu},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (cases[k].labels) {
            bytes b = mk_labels(cases[k].lmagic, cases[k].ln, 3);
            write_plain(bp, b.p, b.n);
            free(b.p);
            expect_fail(ip, bp, -1, ET_ERR_FORMAT, cases[k].what);
        } else {
            bytes b =
                mk_images(cases[k].magic, cases[k].n, cases[k].rows, cases[k].cols, cases[k].have);
            write_plain(bp, b.p, b.n);
            free(b.p);
            expect_fail(bp, lp, -1, ET_ERR_FORMAT, cases[k].what);
        }
    }
    /* A lying header with matching labels fails on the data, not on memory. */
    bytes b = mk_images(0x803, 100000000, 28, 28, 3);
    write_gz(bp, b.p, b.n);
    free(b.p);
    char lp2[600];
    b = mk_labels(0x801, 100000000, 3);
    write_gz(path_in("lying_labels", lp2, sizeof lp2), b.p, b.n);
    free(b.p);
    expect_fail(bp, lp2, -1, ET_ERR_FORMAT, "lying header, gz");
    expect_fail(bp, lp2, 5, ET_ERR_FORMAT, "lying header, limit 5");
    et_dataset ds;
    assert_int_equal(et_idx_load(bp, lp2, 3, &ds), ET_OK);
    assert_int_equal(ds.n, 3);
    et_dataset_free(&ds);

    /* An empty set (n = 0) is valid. */
    b = mk_images(0x803, 0, 2, 2, 0);
    write_plain(bp, b.p, b.n);
    free(b.p);
    b = mk_labels(0x801, 0, 0);
    write_plain(lp2, b.p, b.n);
    free(b.p);
    assert_int_equal(et_idx_load(bp, lp2, -1, &ds), ET_OK);
    assert_int_equal(ds.n, 0);
    et_dataset_free(&ds);

    /* Garbage after a gzip magic. */
    unsigned char junk[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    for (int i = 10; i < 64; i++)
        junk[i] = (unsigned char)(i * 77);
    write_plain(bp, junk, sizeof junk);
    expect_fail(bp, lp, -1, ET_OK, "gzip garbage");

    /* Missing files, directories, NULL arguments. */
    char mp[600];
    expect_fail(path_in("missing-images", mp, sizeof mp), lp, -1, ET_ERR_IO, "missing");
    assert_true(strstr(et_last_error(), "missing-images") != NULL);
    expect_fail(ip, path_in("missing-labels", mp, sizeof mp), -1, ET_ERR_IO, "missing labels");
    expect_fail(tmpdir, lp, -1, ET_ERR_IO, "directory");
    expect_fail(NULL, lp, -1, ET_ERR_INVALID, "NULL path");
    assert_int_equal(et_idx_load(ip, lp, -1, NULL), ET_ERR_INVALID);
    free(im.p);
    free(lb.p);
}

static void test_fmnist_dir_plain_files(void **state) {
    /* A directory with plain (not gzipped) t10k files, and one without. */
    char sub[600], p[700];
    path_in("fm", sub, sizeof sub);
    assert_int_equal(mkdir(sub, 0755), 0);
    bytes im = mk_images(0x803, 4, 28, 28, 4), lb = mk_labels(0x801, 4, 4);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", sub);
    write_plain(p, im.p, im.n);
    et_dataset ds;
    assert_int_equal(et_fmnist_load(sub, 0, -1, &ds), ET_ERR_IO);
    assert_true(strstr(et_last_error(), "t10k-labels-idx1-ubyte") != NULL);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", sub);
    write_gz(p, lb.p, lb.n);
    assert_int_equal(et_fmnist_load(sub, 0, -1, &ds), ET_OK);
    check_dataset(&ds, 4, 28, 28);
    et_dataset_free(&ds);
    assert_int_equal(et_fmnist_load(sub, 1, -1, &ds), ET_ERR_IO);
    assert_true(strstr(et_last_error(), "train-images-idx3-ubyte") != NULL);
    assert_int_equal(et_fmnist_load(path_in("nowhere", p, sizeof p), 0, -1, &ds), ET_ERR_IO);
    free(im.p);
    free(lb.p);
    /* teardown removes files one level deep only */
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", sub);
    unlink(p);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", sub);
    unlink(p);
    rmdir(sub);
}

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static void check_fmnist(int train, int64_t n) {
    et_dataset ds;
    et_status rc = et_fmnist_load(NULL, train, -1, &ds);
    if (rc != ET_OK) fail_msg("%s", et_last_error());
    assert_int_equal(ds.n, n);
    assert_int_equal(ds.rows, 28);
    assert_int_equal(ds.cols, 28);
    int64_t hist[256] = {0};
    for (int64_t i = 0; i < ds.n; i++)
        hist[ds.labels[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], n / 10);
    assert_int_equal(ds.labels[0], 9); /* ankle boot */
    et_dataset_free(&ds);

    rc = et_fmnist_load(NULL, train, 2, &ds);
    assert_int_equal(rc, ET_OK);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.labels[0], 9);
    et_dataset_free(&ds);
}

static void test_fmnist_test_set(void **state) {
    if (access(FMNIST_DIR, R_OK) != 0) skip();
    check_fmnist(0, 10000);
}

static void test_fmnist_train_set(void **state) {
    if (access(FMNIST_DIR, R_OK) != 0) skip();
    check_fmnist(1, 60000);
}


/* Pixels enter the model as x / 255 in fp32 (a true division, as PyTorch's
 * ToTensor img.float().div(255)), for every byte value, in the given order. */
static void test_input_scaling(void **state) {
    (void)state;
    et_model *m = NULL;
    assert_int_equal(et_model_parse("input 1 16 16\nflatten\nlinear 2\n", "t", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 2, NULL), ET_OK);
    uint8_t img[2 * 256], lab[2] = {0, 1};
    for (int k = 0; k < 256; k++) img[k] = (uint8_t)k, img[256 + k] = (uint8_t)(255 - k);
    et_dataset ds = {2, 16, 16, img, lab};
    int64_t idx[2] = {1, 0};
    assert_int_equal(et_model_set_input_u8(m, &ds, idx, 2), ET_OK);
    const float *x = et_model_input(m);
    for (int k = 0; k < 256; k++) {
        volatile float want0 = (float)(255 - k), want1 = (float)k, d = 255.0f;
        assert_true(x[k] == want0 / d);
        assert_true(x[256 + k] == want1 / d);
    }
    int64_t bad[1] = {2};
    assert_int_not_equal(et_model_set_input_u8(m, &ds, bad, 1), ET_OK);
    /* prefetching is only a hint: out-of-range and negative indices are
     * skipped, the staged input is unchanged */
    int64_t hint[4] = {0, 1, 2, -5};
    et_dataset_prefetch(&ds, hint, 4);
    et_dataset_prefetch(NULL, hint, 4);
    for (int k = 0; k < 256; k++) {
        volatile float want = (float)(255 - k), d = 255.0f;
        assert_true(x[k] == want / d);
    }
    et_model_free(m);
    /* 5x5 images: a vector of 16 pixels and a tail of 9 */
    assert_int_equal(et_model_parse("input 1 5 5\nflatten\nlinear 2\n", "t", &m), ET_OK);
    assert_int_equal(et_model_plan(m, 2, NULL), ET_OK);
    et_dataset ds5 = {2, 5, 5, img + 200, lab};
    assert_int_equal(et_model_set_input_u8(m, &ds5, idx, 2), ET_OK);
    x = et_model_input(m);
    for (int k = 0; k < 50; k++) {
        volatile float want = (float)img[200 + (k < 25 ? 25 + k : k - 25)], d = 255.0f;
        assert_true(x[k] == want / d);
    }
    et_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_plain_and_gz), cmocka_unit_test(test_limit),
        cmocka_unit_test(test_truncated_everywhere),    cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_fmnist_dir_plain_files),  cmocka_unit_test(test_fmnist_test_set),
        cmocka_unit_test(test_fmnist_train_set),        cmocka_unit_test(test_input_scaling),
    };
    return cmocka_run_group_tests_name("idx", tests, setup_dir, teardown_dir);
}
