/* Trace files: a replay equals the live run it recorded, and truncated or
 * garbled traces are rejected with an error (never a short replay). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"
#include "util/layer_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];
#define SPEC "input 1 8 8\nconv 4 k=3 p=1\nrelu\nmaxpool k=2\nflatten\nlinear 10\n"

static et_status to_run(void *ctx, const et_hw_op *op) { return et_hw_run_op(ctx, op); }

static void totals_equal(const et_hw_totals *a, const et_hw_totals *b) {
    assert_memory_equal(a, b, sizeof *a);
}

/* Trains 3 steps with a live run and a trace; replays the trace. */
static void test_replay_equals_live(void **state) {
    (void)state;
    et_model *m;
    assert_int_equal(et_model_parse(SPEC, "t", &m), ET_OK);
    assert_int_equal(et_model_set_precision(m, "w=int4,a=int8,e=int8,g=int16"), ET_OK);
    assert_int_equal(et_model_plan(m, 4, NULL), ET_OK);
    assert_int_equal(et_model_init_he(m, 2), ET_OK);
    et_hw_arch a;
    assert_int_equal(et_hw_arch_load("elearn", NULL, 0, &a), ET_OK);
    a.speculation = 0;
    int nn = et_model_num_nodes(m);
    const char *names[16] = {0};
    for (int i = 0; i < nn; i++) et_model_node_info(m, i, &names[i], NULL, NULL);
    et_hw_run *live, *replay;
    et_trace_writer *w;
    assert_int_equal(et_hw_run_create(&a, 0, nn, &live), ET_OK);
    assert_int_equal(et_trace_create(path, nn, names, &w), ET_OK);
    assert_int_equal(et_model_attach_hw(m, live, NULL, w), ET_OK);
    uint8_t labels[4] = {1, 2, 3, 4};
    float loss;
    for (int s = 0; s < 3; s++) {
        lh_fill(et_model_input(m), 256, 10 + (uint64_t)s, 0, 1);
        assert_int_equal(et_model_train_step(m, labels, 4, 0.1f, &loss), ET_OK);
    }
    et_model_attach_hw(m, NULL, NULL, NULL);
    assert_int_equal(et_trace_close(w, 1), ET_OK);
    assert_int_equal(et_hw_run_create(&a, 0, nn, &replay), ET_OK);
    int nl = 0;
    char rnames[16][80];
    assert_int_equal(et_trace_read(path, &nl, rnames, 16, to_run, replay), ET_OK);
    assert_int_equal(nl, nn);
    assert_string_equal(rnames[0], "0");
    assert_string_equal(rnames[4], "4");
    for (int l = -1; l < nn; l++)
        for (int s = -1; s < ET_NSTAGES; s++) {
            et_hw_totals x, y;
            et_hw_run_totals(live, l, s, &x);
            et_hw_run_totals(replay, l, s, &y);
            totals_equal(&x, &y);
        }
    et_hw_totals t;
    et_hw_run_totals(live, -1, -1, &t);
    assert_true(t.tiles == 3 * 5); /* per step: conv FF, WG (first layer: no EP); linear FF, EP, WG */
    et_hw_run_free(live);
    et_hw_run_free(replay);
    et_model_free(m);
}

static et_status count_ops(void *ctx, const et_hw_op *op) {
    (void)op;
    ++*(int *)ctx;
    return ET_OK;
}

static void test_bad_traces(void **state) {
    (void)state;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 100 && n < sizeof buf);
    char bad[80];
    snprintf(bad, sizeof bad, "%s.bad", path);
    int nl, cnt;
    for (size_t cut = 0; cut < n; cut++) { /* every truncation */
        f = fopen(bad, "wb");
        fwrite(buf, 1, cut, f);
        fclose(f);
        cnt = 0;
        if (et_trace_read(bad, &nl, NULL, 0, count_ops, &cnt) == ET_OK) {
            fprintf(stderr, "truncated at %zu accepted\n", cut);
            fail();
        }
        assert_true(et_last_error()[0] != 0);
    }
    /* garbled: version, a record's stage, the trailer count, data after the end */
    size_t offs[] = {8, 28 + 5 * 2 + 12, n - 8}; /* version; stage of record 0 (after 5 one-char names); count */
    for (int k = 0; k < 3; k++) {
        unsigned char save = buf[offs[k]];
        buf[offs[k]] ^= 0x5a;
        f = fopen(bad, "wb");
        fwrite(buf, 1, n, f);
        fclose(f);
        buf[offs[k]] = save;
        cnt = 0;
        assert_int_not_equal(et_trace_read(bad, &nl, NULL, 0, count_ops, &cnt), ET_OK);
    }
    f = fopen(bad, "wb");
    fwrite(buf, 1, n, f);
    fputc(0, f);
    fclose(f);
    assert_int_not_equal(et_trace_read(bad, &nl, NULL, 0, count_ops, &cnt), ET_OK);
    remove(bad);
    /* a discarded writer leaves nothing behind */
    et_trace_writer *w;
    const char *names[1] = {"x"};
    assert_int_equal(et_trace_create(bad, 1, names, &w), ET_OK);
    assert_int_equal(et_trace_close(w, 0), ET_OK);
    assert_int_not_equal(access(bad, F_OK), 0);
}

static int setup(void **state) {
    (void)state;
    snprintf(path, sizeof path, "/tmp/et_trace_%ld.ett", (long)getpid());
    return 0;
}

static int teardown(void **state) {
    (void)state;
    remove(path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_equals_live),
        cmocka_unit_test(test_bad_traces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
