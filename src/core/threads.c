/* Thread count and run-time CPU feature detection. */
#include "edgetrain.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int n_threads = 0; /* 0: not set, use all cores */

void et_set_threads(int n) {
    n_threads = n > 0 ? n : 0;
#ifdef _OPENMP
    if (n_threads) omp_set_num_threads(n_threads);
#endif
}

int et_get_threads(void) {
#ifdef _OPENMP
    return n_threads ? n_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

static et_isa detect_isa(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return ET_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ET_ISA_AVX2;
#endif
    return ET_ISA_SCALAR;
}

et_isa et_cpu_isa(void) {
    static int cached = -1;
    if (cached < 0) {
        et_isa isa = detect_isa();
        const char *cap = getenv("ET_ISA");
        if (cap) {
            et_isa want = !strcmp(cap, "scalar") ? ET_ISA_SCALAR
                          : !strcmp(cap, "avx2") ? ET_ISA_AVX2
                                                 : ET_ISA_AVX512;
            if (want < isa) isa = want;
        }
        cached = (int)isa;
    }
    return (et_isa)cached;
}

const char *et_isa_name(et_isa isa) {
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    return (unsigned)isa <= ET_ISA_AVX512 ? names[isa] : "?";
}
