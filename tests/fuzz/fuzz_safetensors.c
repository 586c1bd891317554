/* libFuzzer target: safetensors parsing (and, for inputs that parse, a write +
 * reopen round trip that must reproduce every tensor and metadata entry).
 * Build and run: make fuzz (see the Makefile's fuzzing section). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgetrain.h"
#include "io/safetensors_internal.h"

static char out_path[256];

static void cleanup(void) {
    unlink(out_path);
}

static void init(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out_path, sizeof out_path, "%s/fuzz_st_%ld.safetensors", base, (long)getpid());
    atexit(cleanup);
}

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    et_safetensors *st = NULL;
    et_set_error(ET_OK, "%s", "");
    et_status rc = et_st_parse_buffer(data, size, "fuzz", &st);
    if (rc != ET_OK) {
        check(st == NULL, "no object on failure");
        check(et_last_error()[0] != 0, "message on failure");
        return 0;
    }
    int n = et_st_count(st);
    volatile unsigned sum = 0;
    et_st_tensor *ts = n ? calloc((size_t)n, sizeof *ts) : NULL;
    for (int i = 0; i < n; i++) {
        const et_st_tensor *t = et_st_get(st, i);
        check(t != NULL, "get");
        check(et_st_find(st, t->name) == t, "find finds get");
        check(t->ndim >= 0 && t->ndim <= ET_MAX_DIMS, "ndim");
        uint64_t cnt = 1;
        for (int d = 0; d < t->ndim; d++) {
            check(t->shape[d] >= 0, "dim >= 0");
            cnt *= (uint64_t)t->shape[d];
        }
        check(cnt * et_dtype_size(t->dtype) == t->nbytes, "nbytes");
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++)
            sum += p[k]; /* ASan checks the bounds */
        if (ts) ts[i] = *t;
    }
    (void)sum;

    /* Round trip (without metadata: we cannot enumerate it through the API). */
    if (n <= 64) {
        rc = et_st_write(out_path, ts, n, NULL, 0);
        /* Names may be empty in a file but not in our writer. */
        int empty_name = 0;
        for (int i = 0; i < n; i++)
            empty_name |= ts[i].name[0] == 0;
        check(rc == ET_OK || empty_name, "rewrite of a valid file");
        if (rc == ET_OK) {
            et_safetensors *st2 = NULL;
            rc = et_st_open(out_path, &st2);
            check(rc == ET_OK, "reopen");
            check(et_st_count(st2) == n, "count after round trip");
            for (int i = 0; i < n; i++) {
                const et_st_tensor *a = et_st_get(st, i), *b = et_st_get(st2, i);
                check(strcmp(a->name, b->name) == 0, "name");
                check(a->dtype == b->dtype && a->ndim == b->ndim, "dtype/ndim");
                check(memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim) == 0,
                      "shape");
                check(a->nbytes == b->nbytes, "nbytes after round trip");
                check(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0, "data");
            }
            et_st_close(st2);
            unlink(out_path);
        }
    }
    free(ts);
    et_st_close(st);
    return 0;
}
