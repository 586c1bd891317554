/* safetensors: round trips, atomic writes, and a table of malformed files that
 * must all be rejected with a message (never a crash, leak or huge
 * allocation). */
/* cmocka needs these first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgetrain.h"
#include "io/safetensors_internal.h"

/* ---------------------------------------------------------------- helpers */

static char tmpdir[256];

static int setup_dir(void **state) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/et_st_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

/* rm -r of a flat directory tree (one level of subdirectories). */
static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            chmod(p, 0755);
            rm_tree(p);
        } else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown_dir(void **state) {
    rm_tree(tmpdir);
    return 0;
}

static char *path_in(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static int count_entries(const char *dir, const char *contains) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, contains)) n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* Expects both et_st_open (via a file) and et_st_parse_buffer to reject buf. */
static void expect_reject(const void *buf, size_t n, const char *label) {
    et_safetensors *st = (et_safetensors *)0x1;
    et_set_error(ET_OK, "%s", "");
    et_status rc = et_st_parse_buffer(buf, n, label, &st);
    if (rc == ET_OK) fail_msg("accepted in memory: %s", label);
    assert_null(st);
    assert_true(et_last_error()[0] != 0);
    if (getenv("ET_TEST_VERBOSE")) printf("  %-40s -> %s\n", label, et_last_error());

    const char *p = path_in("bad.safetensors");
    write_bytes(p, buf, n);
    st = (et_safetensors *)0x1;
    et_set_error(ET_OK, "%s", "");
    rc = et_st_open(p, &st);
    if (rc == ET_OK) fail_msg("accepted from a file: %s", label);
    assert_null(st);
    assert_true(et_last_error()[0] != 0);
    unlink(p);
}

static void expect_accept(const void *buf, size_t n, const char *label, int count) {
    et_safetensors *st = NULL;
    et_status rc = et_st_parse_buffer(buf, n, label, &st);
    if (rc != ET_OK) fail_msg("rejected %s: %s", label, et_last_error());
    assert_int_equal(et_st_count(st), count);
    et_st_close(st);
}

/* A file: 8-byte length, header text, then `data_len` bytes of 0xAB. */
static unsigned char *mk(const char *header, uint64_t declared, size_t data_len, size_t *n) {
    size_t h = strlen(header);
    *n = 8 + h + data_len;
    unsigned char *p = malloc(*n ? *n : 1);
    assert_non_null(p);
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(declared >> (8 * i));
    memcpy(p + 8, header, h);
    memset(p + 8 + h, 0xAB, data_len);
    return p;
}

/* ------------------------------------------------------------------ tests */

static void test_dtypes(void **state) {
    assert_string_equal(et_dtype_name(ET_F32), "F32");
    assert_string_equal(et_dtype_name(ET_BF16), "BF16");
    assert_string_equal(et_dtype_name(ET_BOOL), "BOOL");
    assert_int_equal(et_dtype_size(ET_F64), 8);
    assert_int_equal(et_dtype_size(ET_I16), 2);
    assert_int_equal(et_dtype_size(ET_U8), 1);
    assert_int_equal(et_dtype_size(ET_NDTYPES), 0);
    assert_non_null(et_dtype_name((et_dtype)99));
}

static void test_round_trip(void **state) {
    float f32[6] = {1, -2, 3.5f, 4, 5, 1e-30f};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x7c00, 0x0001};
    uint16_t bf16[2] = {0x3f80, 0x4049};
    double f64 = 3.141592653589793;
    int64_t i64[3] = {INT64_MIN, 0, INT64_MAX};
    int16_t dummy16 = 7;
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    uint8_t u8[3] = {0, 128, 255};
    uint8_t bl[2] = {1, 0};
    int32_t i32[1] = {42};
    et_st_tensor t[] = {
        {.name = "layer.0.weight",
         .dtype = ET_F32,
         .ndim = 2,
         .shape = {2, 3},
         .data = f32,
         .nbytes = sizeof f32},
        {.name = "half", .dtype = ET_F16, .ndim = 1, .shape = {4}, .data = f16, .nbytes = 8},
        {.name = "brain",
         .dtype = ET_BF16,
         .ndim = 3,
         .shape = {1, 1, 2},
         .data = bf16,
         .nbytes = 4},
        {.name = "scalar", .dtype = ET_F64, .ndim = 0, .data = &f64, .nbytes = 8},
        {.name = "i64", .dtype = ET_I64, .ndim = 1, .shape = {3}, .data = i64, .nbytes = 24},
        {.name = "empty", .dtype = ET_I32, .ndim = 1, .shape = {0}, .data = NULL, .nbytes = 0},
        {.name = "empty2",
         .dtype = ET_I16,
         .ndim = 3,
         .shape = {2, 0, 5},
         .data = &dummy16,
         .nbytes = 0},
        {.name = "i8 \"quoted\\\" \xc3\xa9",
         .dtype = ET_I8,
         .ndim = 1,
         .shape = {5},
         .data = i8,
         .nbytes = 5},
        {.name = "u8", .dtype = ET_U8, .ndim = 2, .shape = {3, 1}, .data = u8, .nbytes = 3},
        {.name = "flags", .dtype = ET_BOOL, .ndim = 1, .shape = {2}, .data = bl, .nbytes = 2},
        {.name = "eight",
         .dtype = ET_I32,
         .ndim = 8,
         .shape = {1, 1, 1, 1, 1, 1, 1, 1},
         .data = i32,
         .nbytes = 4},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    const char *meta[] = {"format", "pt", "note", "line\nbreak \"q\" \\ tab\t \xe2\x82\xac",
                          "empty",  ""};
    const char *p = path_in("rt.safetensors");
    et_status rc = et_st_write(p, t, n, meta, 3);
    if (rc != ET_OK) fail_msg("%s", et_last_error());
    assert_int_equal(count_entries(tmpdir, ".tmp."), 0);

    /* Header padded to 8; data area is exactly the tensors back to back. */
    size_t fsz;
    unsigned char *raw = read_bytes(p, &fsz);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | raw[i];
    assert_int_equal(hl % 8, 0);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += t[i].nbytes;
    assert_int_equal(fsz, 8 + hl + total);
    assert_int_equal(raw[8], '{');
    free(raw);

    et_safetensors *st = NULL;
    rc = et_st_open(p, &st);
    if (rc != ET_OK) fail_msg("%s", et_last_error());
    assert_int_equal(et_st_count(st), n);
    for (int i = 0; i < n; i++) {
        const et_st_tensor *g = et_st_get(st, i);
        assert_non_null(g);
        assert_string_equal(g->name, t[i].name); /* header order kept */
        assert_ptr_equal(et_st_find(st, t[i].name), g);
        assert_int_equal(g->dtype, t[i].dtype);
        assert_int_equal(g->ndim, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            assert_int_equal(g->shape[d], t[i].shape[d]);
        assert_int_equal(g->nbytes, t[i].nbytes);
        if (t[i].nbytes) assert_memory_equal(g->data, t[i].data, t[i].nbytes);
    }
    assert_true(((uintptr_t)et_st_get(st, 0)->data & 7) == 0);
    assert_null(et_st_get(st, -1));
    assert_null(et_st_get(st, n));
    assert_null(et_st_find(st, "nope"));
    assert_string_equal(et_st_meta(st, "format"), "pt");
    assert_string_equal(et_st_meta(st, "note"), meta[3]);
    assert_string_equal(et_st_meta(st, "empty"), "");
    assert_null(et_st_meta(st, "missing"));
    et_st_close(st);

    /* Overwrite with a smaller file, no metadata. */
    rc = et_st_write(p, t, 1, NULL, 0);
    assert_int_equal(rc, ET_OK);
    rc = et_st_open(p, &st);
    assert_int_equal(rc, ET_OK);
    assert_int_equal(et_st_count(st), 1);
    assert_null(et_st_meta(st, "format"));
    et_st_close(st);

    /* No tensors at all. */
    rc = et_st_write(p, NULL, 0, meta, 1);
    assert_int_equal(rc, ET_OK);
    rc = et_st_open(p, &st);
    assert_int_equal(rc, ET_OK);
    assert_int_equal(et_st_count(st), 0);
    assert_string_equal(et_st_meta(st, "format"), "pt");
    et_st_close(st);
    assert_int_equal(count_entries(tmpdir, ".tmp."), 0);
}

static void test_write_rejects_bad_arguments(void **state) {
    float x[4] = {0};
    const char *p = path_in("args.safetensors");
    et_st_tensor t[2] = {
        {.name = "a", .dtype = ET_F32, .ndim = 1, .shape = {4}, .data = x, .nbytes = 16},
        {.name = "a", .dtype = ET_F32, .ndim = 1, .shape = {4}, .data = x, .nbytes = 16},
    };
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK); /* duplicate */
    t[1].name = "__metadata__";
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].name = "b";
    t[1].nbytes = 12;
    assert_int_equal(et_st_write(p, t, 2, NULL, 0), ET_ERR_SHAPE);
    t[1].nbytes = 16;
    t[1].dtype = (et_dtype)42;
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].dtype = ET_F32;
    t[1].shape[0] = -4;
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].shape[0] = 4;
    t[1].ndim = ET_MAX_DIMS + 1;
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].ndim = 1;
    t[1].data = NULL;
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].data = x;
    t[1].name = "bad\xff";
    assert_int_not_equal(et_st_write(p, t, 2, NULL, 0), ET_OK);
    t[1].name = "b";
    const char *dupmeta[] = {"k", "1", "k", "2"};
    assert_int_not_equal(et_st_write(p, t, 2, dupmeta, 2), ET_OK);
    const char *nullmeta[] = {"k", NULL};
    assert_int_not_equal(et_st_write(p, t, 2, nullmeta, 1), ET_OK);
    assert_int_not_equal(et_st_write(NULL, t, 2, NULL, 0), ET_OK);
    assert_int_not_equal(et_st_write(p, NULL, 2, NULL, 0), ET_OK);
    assert_true(et_last_error()[0] != 0);
    assert_int_equal(access(p, F_OK), -1); /* nothing was created */
    assert_int_equal(count_entries(tmpdir, ".tmp."), 0);
}

/* Writes `old` to p; returns it opened-and-checked later by expect_old. */
static float old_data[3] = {7, 8, 9};
static void write_old(const char *p) {
    et_st_tensor t = {.name = "old",
                      .dtype = ET_F32,
                      .ndim = 1,
                      .shape = {3},
                      .data = old_data,
                      .nbytes = sizeof old_data};
    assert_int_equal(et_st_write(p, &t, 1, NULL, 0), ET_OK);
}
static void expect_old(const char *p) {
    et_safetensors *st = NULL;
    assert_int_equal(et_st_open(p, &st), ET_OK);
    assert_int_equal(et_st_count(st), 1);
    const et_st_tensor *t = et_st_find(st, "old");
    assert_non_null(t);
    assert_memory_equal(t->data, old_data, sizeof old_data);
    et_st_close(st);
}

static void test_atomic_write_failures(void **state) {
    float x[16] = {1};
    et_st_tensor t = {
        .name = "new", .dtype = ET_F32, .ndim = 1, .shape = {16}, .data = x, .nbytes = sizeof x};
    char sub[512];

    /* 1. PATH is a directory: rename fails, the temp file is removed. */
    snprintf(sub, sizeof sub, "%s", path_in("adir"));
    assert_int_equal(mkdir(sub, 0755), 0);
    et_set_error(ET_OK, "%s", "");
    assert_int_equal(et_st_write(sub, &t, 1, NULL, 0), ET_ERR_IO);
    assert_true(et_last_error()[0] != 0);
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(count_entries(tmpdir, ".tmp."), 0);
    rmdir(sub);

    /* 2. The directory does not exist. */
    assert_int_equal(et_st_write(path_in("no/such/dir/x.safetensors"), &t, 1, NULL, 0), ET_ERR_IO);

    /* 3. The temp file cannot be created: old file untouched. */
    const char *p0 = path_in("keep.safetensors");
    char p[512];
    snprintf(p, sizeof p, "%s", p0);
    write_old(p);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    assert_int_equal(mkdir(tmp, 0755), 0); /* occupies the temp name */
    assert_int_equal(et_st_write(p, &t, 1, NULL, 0), ET_ERR_IO);
    rmdir(tmp);
    expect_old(p);

    /* 4. Directory not writable (not effective for root, who may write anyway). */
    if (geteuid() != 0) {
        snprintf(sub, sizeof sub, "%s", path_in("ro"));
        assert_int_equal(mkdir(sub, 0755), 0);
        char q[600];
        snprintf(q, sizeof q, "%s/model.safetensors", sub);
        write_old(q);
        chmod(sub, 0555);
        assert_int_equal(et_st_write(q, &t, 1, NULL, 0), ET_ERR_IO);
        chmod(sub, 0755);
        expect_old(q);
        assert_int_equal(count_entries(sub, ".tmp."), 0);
    }

    /* 5. A write that fails midway (file size limit, EFBIG): temp removed, old
     * file untouched. */
    struct rlimit old_lim, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 4096;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        size_t big_n = 1 << 16;
        float *big = calloc(big_n, sizeof *big);
        assert_non_null(big);
        et_st_tensor bt = {.name = "big",
                           .dtype = ET_F32,
                           .ndim = 1,
                           .shape = {(int64_t)big_n},
                           .data = big,
                           .nbytes = big_n * sizeof *big};
        et_status rc = et_st_write(p, &bt, 1, NULL, 0);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_lim), 0);
        free(big);
        assert_int_equal(rc, ET_ERR_IO);
        expect_old(p);
    }
    signal(SIGXFSZ, old_sig);
    assert_int_equal(count_entries(tmpdir, ".tmp."), 0);
}

/* A small valid file used for the truncation sweep. */
static unsigned char *valid_file(size_t *n) {
    float a[3] = {1, 2, 3};
    int16_t b[2] = {-1, 1};
    et_st_tensor t[2] = {
        {.name = "a", .dtype = ET_F32, .ndim = 1, .shape = {3}, .data = a, .nbytes = 12},
        {.name = "b", .dtype = ET_I16, .ndim = 2, .shape = {1, 2}, .data = b, .nbytes = 4},
    };
    const char *meta[] = {"k", "v"};
    const char *p = path_in("valid.safetensors");
    assert_int_equal(et_st_write(p, t, 2, meta, 1), ET_OK);
    unsigned char *buf = read_bytes(p, n);
    unlink(p);
    return buf;
}

static void test_truncated_everywhere(void **state) {
    size_t n;
    unsigned char *buf = valid_file(&n);
    expect_accept(buf, n, "valid", 2);
    char label[64];
    for (size_t len = 0; len < n; len++) {
        snprintf(label, sizeof label, "truncated to %zu of %zu bytes", len, n);
        expect_reject(buf, len, label);
    }
    /* Every single-byte corruption of the 8-byte length. */
    for (int i = 0; i < 8; i++) {
        unsigned char save = buf[i];
        for (int delta = 1; delta < 256; delta += 37) {
            buf[i] = (unsigned char)(save + delta);
            snprintf(label, sizeof label, "length byte %d changed", i);
            et_safetensors *st = NULL;
            /* Some values may still land on valid JSON end + whitespace; only
             * require no crash, and a message on failure. */
            et_set_error(ET_OK, "%s", "");
            if (et_st_parse_buffer(buf, n, label, &st) == ET_OK)
                et_st_close(st);
            else
                assert_true(et_last_error()[0] != 0);
        }
        buf[i] = save;
    }
    free(buf);
}

typedef struct bad_case {
    const char *label;
    const char *header;
    size_t data_len;
} bad_case;

#define T1(off, dt, shp) "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shp ",\"data_offsets\":" off "}}"

static const bad_case bad_cases[] = {
    {"empty header", "", 0},
    {"one byte", "{", 0},
    {"not JSON", "hello world", 0},
    {"array", "[]", 0},
    {"string", "\"x\"", 0},
    {"unterminated object", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4},
    {"trailing garbage", "{}x", 0},
    {"two objects", "{}{}", 0},
    {"NUL in header", "{} \0 ", 0},
    {"invalid UTF-8", "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1},
    {"overlong UTF-8", "{\"\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1},
    {"entry not an object", "{\"t\":[1,2]}", 0},
    {"entry is a number", "{\"t\":5}", 0},
    {"missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"missing shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4},
    {"missing offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4},
    {"unknown field", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
     4},
    {"dtype twice",
     "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"unknown dtype", T1("[0,4]", "F33", "[1]"), 4},
    {"lowercase dtype", T1("[0,4]", "f32", "[1]"), 4},
    {"unsupported dtype", T1("[0,4]", "U32", "[1]"), 4},
    {"dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"shape not an array", T1("[0,4]", "F32", "1"), 4},
    {"negative dim", T1("[0,4]", "F32", "[-1]"), 4},
    {"negative dims cancel", T1("[0,4]", "F32", "[-1,-1]"), 4},
    {"fractional dim", T1("[0,4]", "F32", "[1.5]"), 4},
    {"string dim", T1("[0,4]", "F32", "[\"1\"]"), 4},
    {"null dim", T1("[0,4]", "F32", "[null]"), 4},
    {"huge dim", T1("[0,4]", "F32", "[1e300]"), 4},
    {"ndim 9", T1("[0,4]", "F32", "[1,1,1,1,1,1,1,1,1]"), 4},
    {"absurd shape", T1("[0,4]", "F32", "[1e12,1e12]"), 4},
    {"element count overflow", T1("[0,4]", "F32", "[4294967296,4294967296,4294967296]"), 4},
    {"byte size overflow", T1("[0,4]", "F64", "[4503599627370496,512]"), 4},
    {"byte size too small", T1("[0,4]", "F32", "[2]"), 8},
    {"byte size too large", T1("[0,8]", "F32", "[1]"), 8},
    {"offsets reversed", T1("[4,0]", "F32", "[1]"), 4},
    {"offsets past the data", T1("[0,400]", "F32", "[100]"), 4},
    {"offsets far past the data", T1("[4294967296,4294967300]", "F32", "[1]"), 4},
    {"offsets beyond 2^53", T1("[18446744073709551612,18446744073709551616]", "F32", "[1]"), 4},
    {"negative offsets", T1("[-4,0]", "F32", "[1]"), 4},
    {"three offsets", T1("[0,4,8]", "F32", "[1]"), 8},
    {"one offset", T1("[4]", "F32", "[1]"), 8},
    {"offsets not an array", T1("4", "F32", "[1]"), 8},
    {"string offsets", T1("[\"0\",\"4\"]", "F32", "[1]"), 4},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12},
    {"same range twice",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8},
    {"contained range",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[12],\"data_offsets\":[0,12]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
     12},
    {"duplicate names",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8},
    {"names equal after \\u0000",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8},
    {"key posing as __metadata__",
     "{\"__metadata__\\u0000x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
    {"metadata not an object", "{\"__metadata__\":[]}", 0},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0},
    {"metadata value null", "{\"__metadata__\":{\"k\":null}}", 0},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0},
    {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0},
};

static void test_malformed_table(void **state) {
    char label[160];
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        /* The NUL case needs its true length. */
        size_t hl = strcmp(c->label, "NUL in header") == 0 ? 5 : strlen(c->header);
        size_t n = 8 + hl + c->data_len;
        unsigned char *buf = calloc(1, n);
        assert_non_null(buf);
        for (int k = 0; k < 8; k++)
            buf[k] = (unsigned char)((uint64_t)hl >> (8 * k));
        memcpy(buf + 8, c->header, hl);
        snprintf(label, sizeof label, "case %zu: %s", i, c->label);
        expect_reject(buf, n, label);
        free(buf);
    }
}

static void test_bad_lengths(void **state) {
    size_t n;
    unsigned char *b;
    b = mk("{}", UINT64_MAX, 0, &n);
    expect_reject(b, n, "length 2^64-1");
    free(b);
    b = mk("{}", (uint64_t)1 << 63, 0, &n);
    expect_reject(b, n, "length 2^63");
    free(b);
    b = mk("{}", (uint64_t)200 << 20, 0, &n);
    expect_reject(b, n, "length 200 MB");
    free(b);
    b = mk("{}", 3, 0, &n);
    expect_reject(b, n, "length past the end");
    free(b);
    b = mk("{}", 0, 0, &n);
    expect_reject(b, n, "length 0");
    free(b);
    b = mk("{}  ", 1, 0, &n);
    expect_reject(b, n, "length 1");
    free(b);
    b = mk("{\"a\":{}}", 5, 0, &n);
    expect_reject(b, n, "header cut short by its length");
    free(b);
    /* Nesting deeper than cJSON's limit, and a deep but legal one. */
    for (int depth = 100; depth <= 3000; depth += 2900) {
        size_t hl = 6 + 2 * (size_t)depth;
        char *h = malloc(hl + 1);
        assert_non_null(h);
        memcpy(h, "{\"t\":", 5);
        memset(h + 5, '[', (size_t)depth);
        memset(h + 5 + depth, ']', (size_t)depth);
        memcpy(h + 5 + 2 * depth, "}", 2);
        b = mk(h, hl, 0, &n);
        expect_reject(b, n, depth > 1000 ? "nesting 3000" : "nesting 100");
        free(b);
        free(h);
    }
    expect_reject("", 0, "empty file");
    expect_reject("\x02\0\0\0\0\0\0", 7, "7-byte file");

    /* The file path: not a regular file, missing. */
    et_safetensors *st = (et_safetensors *)0x1;
    assert_int_equal(et_st_open(tmpdir, &st), ET_ERR_IO);
    assert_null(st);
    assert_int_equal(et_st_open(path_in("missing.safetensors"), &st), ET_ERR_IO);
    assert_true(strstr(et_last_error(), "missing.safetensors") != NULL);
    assert_int_not_equal(et_st_open(NULL, &st), ET_OK);
    assert_int_not_equal(et_st_open(path_in("x"), NULL), ET_OK);
}

static void test_valid_edge_cases(void **state) {
    size_t n;
    unsigned char *b;
    b = mk("{}", 2, 0, &n);
    expect_accept(b, n, "empty object", 0);
    free(b);
    b = mk("{}      ", 8, 0, &n);
    expect_accept(b, n, "padded empty object", 0);
    free(b);
    b = mk(" \n{\"__metadata__\":{\"a\":\"b\"}}\t", 29, 0, &n);
    expect_accept(b, n, "whitespace around", 0);
    free(b);
    /* Empty tensors may sit anywhere in the data area, even inside others. */
    b = mk("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
           "\"z\":{\"dtype\":\"F32\",\"shape\":[1000000000000000,0],\"data_offsets\":[8,8]}}",
           0, 8, &n);
    {
        uint64_t hl = n - 8 - 8;
        for (int k = 0; k < 8; k++)
            b[k] = (unsigned char)(hl >> (8 * k));
    }
    expect_accept(b, n, "empty tensors", 3);
    free(b);
    /* Gaps and unindexed trailing bytes are tolerated. */
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}";
    b = mk(h, strlen(h), 16, &n);
    et_safetensors *st = NULL;
    assert_int_equal(et_st_parse_buffer(b, n, NULL, &st), ET_OK);
    const et_st_tensor *t = et_st_find(st, "a");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 2);
    assert_int_equal(((const uint8_t *)t->data)[0], 0xAB);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 2);
    et_st_close(st);
    free(b);
    et_st_close(NULL);
}

/* tests/fixtures, found from this file's path or the working directory. */
static const char *fixtures_dir(void) {
    static char d[1024];
    const char *src = __FILE__;
    const char *slash = strrchr(src, '/');
    if (slash) {
        snprintf(d, sizeof d, "%.*s/fixtures", (int)(slash - src), src);
        if (access(d, R_OK) == 0) return d;
    }
    snprintf(d, sizeof d, "tests/fixtures");
    return d;
}

/* Every fixture written by PyTorch / the safetensors package must load. */
static void test_all_fixtures_load(void **state) {
    DIR *dir = opendir(fixtures_dir());
    if (!dir) skip();
    struct dirent *e;
    int seen = 0;
    char p[2048];
    while ((e = readdir(dir))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0) continue;
        snprintf(p, sizeof p, "%s/%s", fixtures_dir(), e->d_name);
        et_safetensors *st = NULL;
        if (et_st_open(p, &st) != ET_OK) fail_msg("%s", et_last_error());
        et_st_close(st);
        seen++;
    }
    closedir(dir);
    if (!seen) skip();
}

static void test_torch_fixture(void **state) {
    char p[1100];
    snprintf(p, sizeof p, "%s/torch_state_dict.safetensors", fixtures_dir());
    if (access(p, R_OK) != 0) skip();
    et_safetensors *st = NULL;
    et_status rc = et_st_open(p, &st);
    if (rc != ET_OK) fail_msg("%s", et_last_error());
    assert_true(et_st_count(st) > 0);
    for (int i = 0; i < et_st_count(st); i++) {
        const et_st_tensor *t = et_st_get(st, i);
        size_t cnt = 1;
        for (int d = 0; d < t->ndim; d++)
            cnt *= (size_t)t->shape[d];
        assert_int_equal(cnt * et_dtype_size(t->dtype), t->nbytes);
        assert_ptr_equal(et_st_find(st, t->name), t);
    }
    /* Round trip through our writer gives identical tensors. */
    int n = et_st_count(st);
    et_st_tensor *copy = calloc((size_t)n, sizeof *copy);
    assert_non_null(copy);
    for (int i = 0; i < n; i++)
        copy[i] = *et_st_get(st, i);
    const char *q = path_in("torch_copy.safetensors");
    assert_int_equal(et_st_write(q, copy, n, NULL, 0), ET_OK);
    et_safetensors *st2 = NULL;
    assert_int_equal(et_st_open(q, &st2), ET_OK);
    assert_int_equal(et_st_count(st2), n);
    for (int i = 0; i < n; i++) {
        const et_st_tensor *a = et_st_get(st, i), *b = et_st_find(st2, a->name);
        assert_non_null(b);
        assert_int_equal(a->nbytes, b->nbytes);
        if (a->nbytes) assert_memory_equal(a->data, b->data, a->nbytes);
    }
    free(copy);
    et_st_close(st2);
    et_st_close(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_write_rejects_bad_arguments),
        cmocka_unit_test(test_atomic_write_failures),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_valid_edge_cases),
        cmocka_unit_test(test_torch_fixture),
        cmocka_unit_test(test_all_fixtures_load),
    };
    return cmocka_run_group_tests_name("safetensors", tests, setup_dir, teardown_dir);
}
