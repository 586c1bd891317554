/* A running absmax shared by threads (the speculation's per-tensor scale,
 * taken where a layer writes its output instead of in a pass of its own). */
#ifndef ET_AMAX_H
#define ET_AMAX_H

/* *dst = max(*dst, v) atomically, for v >= 0 (an absmax: NaN never given,
 * +inf counts) and *dst >= 0. */
static inline void et_amax_merge(float *dst, float v) {
    float cur;
    __atomic_load(dst, &cur, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange(dst, &cur, &v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

#endif
