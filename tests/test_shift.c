/* Private-data shifts: exact for invert, deterministic per (seed, image),
 * the documented lowlight effects, and IDX save/load round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgetrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static et_dataset make_src(void) {
    et_dataset d = {12, 28, 28, malloc(12 * 784), malloc(12)};
    for (int i = 0; i < 12 * 784; i++) d.images[i] = (uint8_t)((i * 37) % 251);
    for (int i = 0; i < 12; i++) d.labels[i] = (uint8_t)(i % 10);
    return d;
}

static void test_invert_exact(void **state) {
    (void)state;
    et_dataset s = make_src(), o;
    assert_int_equal(et_dataset_shift(&s, "invert", 1, 2, 5, &o), ET_OK);
    assert_int_equal(o.n, 5);
    for (int i = 0; i < 5 * 784; i++) assert_int_equal(o.images[i], 255 - s.images[2 * 784 + i]);
    for (int i = 0; i < 5; i++) assert_int_equal(o.labels[i], s.labels[2 + i]);
    et_dataset_free(&o), et_dataset_free(&s);
}

static void test_lowlight(void **state) {
    (void)state;
    et_dataset s = make_src(), a, b, c;
    assert_int_equal(et_dataset_shift(&s, "lowlight", 7, 0, 12, &a), ET_OK);
    assert_int_equal(et_dataset_shift(&s, "lowlight", 7, 0, 12, &b), ET_OK);
    assert_int_equal(et_dataset_shift(&s, "lowlight", 8, 0, 12, &c), ET_OK);
    assert_memory_equal(a.images, b.images, 12 * 784);         /* deterministic */
    assert_memory_not_equal(a.images, c.images, 12 * 784);     /* another device differs */
    /* the same image shifted alone equals its place in the batch (per-image keys) */
    et_dataset one;
    assert_int_equal(et_dataset_shift(&s, "lowlight", 7, 5, 1, &one), ET_OK);
    assert_memory_equal(one.images, a.images + 5 * 784, 784);
    /* darker: exposure 0.55*v^1.5 <= 0.55 before noise, so the mean drops a lot */
    double ms = 0, ma = 0;
    for (int i = 0; i < 12 * 784; i++) ms += s.images[i], ma += a.images[i];
    assert_true(ma < 0.6 * ms);
    et_dataset_free(&a), et_dataset_free(&b), et_dataset_free(&c), et_dataset_free(&one);
    assert_int_not_equal(et_dataset_shift(&s, "sepia", 1, 0, 1, &a), ET_OK);
    assert_int_not_equal(et_dataset_shift(&s, "invert", 1, 10, 5, &a), ET_OK);
    et_dataset_free(&s);
}

static void test_idx_round_trip(void **state) {
    (void)state;
    et_dataset s = make_src(), r;
    char dir[] = "/tmp/et_shift_XXXXXX", pi[128], pl[128];
    assert_non_null(mkdtemp(dir));
    snprintf(pi, sizeof pi, "%s/i.gz", dir);
    snprintf(pl, sizeof pl, "%s/l.gz", dir);
    assert_int_equal(et_idx_save(pi, pl, &s), ET_OK);
    assert_int_equal(et_idx_load(pi, pl, -1, &r), ET_OK);
    assert_int_equal(r.n, 12);
    assert_memory_equal(r.images, s.images, 12 * 784);
    assert_memory_equal(r.labels, s.labels, 12);
    et_dataset_free(&r), et_dataset_free(&s);
    remove(pi), remove(pl), rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invert_exact),
        cmocka_unit_test(test_lowlight),
        cmocka_unit_test(test_idx_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
