#include "core/rng.h"

#include "edgetrain.h"

#include <math.h>

uint64_t et_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t et_rand_prefix(uint64_t seed, uint64_t stream) {
    return et_mix64(et_mix64(seed + ET_GOLDEN64) ^ (stream * 0xd1b54a32d192ed03ULL));
}

uint64_t et_rand_at(uint64_t prefix, uint64_t index) { return et_mix64(prefix ^ (index + 0x632be59bd9b4e019ULL)); }

uint64_t et_rand64(uint64_t seed, uint64_t stream, uint64_t index) {
    return et_rand_at(et_rand_prefix(seed, stream), index);
}

float et_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (float)(et_rand64(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

double et_rand_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t a = et_rand64(seed, stream, 2 * index), b = et_rand64(seed, stream, 2 * index + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void et_rand_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *perm) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(et_rand64(seed, stream, (uint64_t)i) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void et_shuffle(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm) {
    et_rand_permutation(seed, ((uint64_t)ET_STREAM_SHUFFLE << 48) ^ epoch, n, perm);
}
