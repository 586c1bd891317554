/* libFuzzer target: IDX loading. The input is split into an image file and a
 * label file (either may be gzipped; zlib detects it):
 *   byte 0      limit: bit 7 set -> all (-1), else bits 0..6 (0..127)
 *   bytes 1-2   split point (big-endian, modulo the rest's length + 1)
 *   rest        images = rest[0..split), labels = rest[split..)
 * Build and run: make fuzz (see the Makefile's fuzzing section). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgetrain.h"

static char ipath[256], lpath[256];

static void cleanup(void) {
    unlink(ipath);
    unlink(lpath);
}

static void init(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(ipath, sizeof ipath, "%s/fuzz_idx_%ld.images", base, (long)getpid());
    snprintf(lpath, sizeof lpath, "%s/fuzz_idx_%ld.labels", base, (long)getpid());
    atexit(cleanup);
}

static int put(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_idx: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    if (size < 3) return 0;
    int64_t limit = (data[0] & 0x80) ? -1 : (data[0] & 0x7f);
    size_t rest = size - 3;
    size_t split = (((size_t)data[1] << 8) | data[2]) % (rest + 1);
    if (put(ipath, data + 3, split) || put(lpath, data + 3 + split, rest - split)) return 0;

    et_dataset ds;
    et_set_error(ET_OK, "%s", "");
    et_status rc = et_idx_load(ipath, lpath, limit, &ds);
    if (rc != ET_OK) {
        check(ds.images == NULL && ds.labels == NULL && ds.n == 0, "empty on failure");
        check(et_last_error()[0] != 0, "message on failure");
        return 0;
    }
    check(ds.n >= 0 && (limit < 0 || ds.n <= limit), "n within limit");
    check(ds.rows >= 1 && ds.rows <= 4096 && ds.cols >= 1 && ds.cols <= 4096, "size");
    volatile unsigned sum = 0;
    size_t npix = (size_t)ds.n * (size_t)ds.rows * (size_t)ds.cols;
    for (size_t i = 0; i < npix; i++)
        sum += ds.images[i]; /* ASan checks the bounds */
    for (int64_t i = 0; i < ds.n; i++)
        sum += ds.labels[i];
    (void)sum;
    et_dataset_free(&ds);
    return 0;
}
