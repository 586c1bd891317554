/* What the benchmarks share: the calling thread's CPU time and a seeded
 * xorshift64 source of uniform doubles in [0, 1) (the same sequence in
 * every bench, so their operands are reproducible). */
#ifndef ET_BENCH_UTIL_H
#define ET_BENCH_UTIL_H
#include <stdint.h>
#include <time.h>

static inline double bench_thread_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t bench_rng = 88172645463325252ull;
static inline double bench_unif(void) {
    bench_rng ^= bench_rng << 13, bench_rng ^= bench_rng >> 7, bench_rng ^= bench_rng << 17;
    return (double)(bench_rng >> 11) / 9007199254740992.0;
}
#endif
