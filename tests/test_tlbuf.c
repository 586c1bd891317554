/* Per-thread work buffers (src/core/tlbuf.c): aligned, kept between calls,
 * grown on demand, one per thread, counted in the owner's total, released
 * on request and freed when their thread exits (the total drops back; LeakSanitizer checks the
 * memory under make asan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/tlbuf.h"

#include <pthread.h>
#include <string.h>

static et_tlbuf buf;

static void test_one_thread(void **state) {
    (void)state;
    size_t before = et_tlbuf_total(&buf), sz = 1;
    assert_null(et_tlbuf_peek(&buf, &sz));
    assert_int_equal(sz, 0);
    char *a = et_tlbuf_get(&buf, 100);
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % 64, 0);
    memset(a, 1, 100);
    assert_ptr_equal(et_tlbuf_get(&buf, 64), a); /* smaller: the same buffer */
    assert_ptr_equal(et_tlbuf_peek(&buf, &sz), a);
    assert_int_equal(sz, 128); /* rounded to whole cache lines */
    assert_int_equal(et_tlbuf_total(&buf), before + 128);
    char *b = et_tlbuf_get(&buf, 5000); /* larger: grown */
    assert_non_null(b);
    assert_int_equal((uintptr_t)b % 64, 0);
    memset(b, 2, 5000);
    assert_int_equal(et_tlbuf_total(&buf), before + 5056);
    et_tlbuf_release(&buf); /* freed now, allocated again on demand */
    assert_null(et_tlbuf_peek(&buf, NULL));
    assert_int_equal(et_tlbuf_total(&buf), before);
    b = et_tlbuf_get(&buf, 5000);
    assert_non_null(b);
    assert_int_equal(et_tlbuf_total(&buf), before + 5056);
    assert_null(et_tlbuf_get(&buf, SIZE_MAX)); /* impossible: NULL, no buffer left */
    assert_null(et_tlbuf_peek(&buf, NULL));
    assert_int_equal(et_tlbuf_total(&buf), before);
}

typedef struct job {
    pthread_barrier_t *bar;
    char *mine;
} job;

static void *worker(void *p) {
    job *j = p;
    j->mine = et_tlbuf_get(&buf, 4096);
    if (j->mine) memset(j->mine, 3, 4096);
    pthread_barrier_wait(j->bar); /* all threads hold theirs at once */
    pthread_barrier_wait(j->bar); /* the main thread has looked */
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    const size_t before = et_tlbuf_total(&buf);
    enum { T = 4 };
    pthread_t th[T];
    job jobs[T];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T + 1);
    for (int t = 0; t < T; t++) {
        jobs[t].bar = &bar, jobs[t].mine = NULL;
        assert_int_equal(pthread_create(&th[t], NULL, worker, &jobs[t]), 0);
    }
    pthread_barrier_wait(&bar);
    assert_int_equal(et_tlbuf_total(&buf), before + T * 4096);
    for (int t = 0; t < T; t++) {
        assert_non_null(jobs[t].mine);
        for (int u = 0; u < t; u++) assert_ptr_not_equal(jobs[t].mine, jobs[u].mine);
    }
    pthread_barrier_wait(&bar);
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&bar);
    assert_int_equal(et_tlbuf_total(&buf), before); /* freed at thread exit */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_thread),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
