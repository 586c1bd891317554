/* Counter-based random numbers: every value is a pure function of
 * (seed, stream, index), so results do not depend on thread count or on the
 * order in which values are drawn. */
#ifndef ET_RNG_H
#define ET_RNG_H
#include <stdint.h>

/* 64 random bits for (seed, stream, index). */
uint64_t et_rand64(uint64_t seed, uint64_t stream, uint64_t index);
/* The same in two parts, for loops over many indices of one (seed, stream):
 * et_rand64(seed, stream, i) == et_rand_at(et_rand_prefix(seed, stream), i). */
uint64_t et_rand_prefix(uint64_t seed, uint64_t stream);
uint64_t et_rand_at(uint64_t prefix, uint64_t index);
/* The SplitMix64 output function (Steele, Lea, Flood 2014; Stafford's
 * "Mix13" constants), a bijection of 64-bit words; et_rand64 is built from it. */
uint64_t et_mix64(uint64_t z);
#define ET_GOLDEN64 0x9e3779b97f4a7c15ULL /* SplitMix64's counter increment */
/* Uniform in [0, 1) with 24 bits of resolution. */
float et_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index);
/* Standard normal (Box-Muller on two counter draws). */
double et_rand_normal(uint64_t seed, uint64_t stream, uint64_t index);
/* Random permutation of 0..n-1 (Fisher-Yates driven by et_rand64). */
void et_rand_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *perm);

/* Streams used by the library, so that different uses never share draws. */
enum { ET_STREAM_INIT = 1, ET_STREAM_SHUFFLE = 2, ET_STREAM_DROPOUT = 3 };
#endif
