/* Per-thread work buffers (tlbuf.h). A buffer is one aligned block: a 64-byte
 * header (its size and owner), then the caller's bytes. The thread-specific
 * key holds the header; the key's destructor frees the block at thread exit
 * and takes its bytes off the owner's total. */
#include "core/tlbuf.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct header {
    size_t bytes;
    et_tlbuf *owner;
} header;

#define HDR 64 /* keeps the caller's bytes 64-byte aligned */

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

static void release(void *p) {
    header *h = p;
    if (!h) return;
    atomic_fetch_sub(&h->owner->total, h->bytes);
    free(h);
}

static int have_key(et_tlbuf *b) {
    if (atomic_load_explicit(&b->ready, memory_order_acquire)) return 1;
    pthread_mutex_lock(&key_lock);
    int ok = atomic_load_explicit(&b->ready, memory_order_relaxed);
    if (!ok && pthread_key_create(&b->key, release) == 0) {
        atomic_store_explicit(&b->ready, 1, memory_order_release);
        ok = 1;
    }
    pthread_mutex_unlock(&key_lock);
    return ok;
}

void *et_tlbuf_peek(et_tlbuf *b, size_t *bytes) {
    header *h = atomic_load_explicit(&b->ready, memory_order_acquire) ? pthread_getspecific(b->key) : NULL;
    if (bytes) *bytes = h ? h->bytes : 0;
    return h ? (char *)h + HDR : NULL;
}

void *et_tlbuf_get(et_tlbuf *b, size_t bytes) {
    if (!have_key(b)) return NULL;
    header *h = pthread_getspecific(b->key);
    if (h && h->bytes >= bytes) return (char *)h + HDR;
    release(h);
    pthread_setspecific(b->key, NULL);
    const size_t want = (bytes + 63) & ~(size_t)63;
    if (want < bytes || want > SIZE_MAX - HDR) return NULL;
    h = aligned_alloc(64, HDR + want);
    if (!h) return NULL;
    h->bytes = want, h->owner = b;
    atomic_fetch_add(&b->total, want);
    pthread_setspecific(b->key, h);
    return (char *)h + HDR;
}

void et_tlbuf_release(et_tlbuf *b) {
    if (!atomic_load_explicit(&b->ready, memory_order_acquire)) return;
    release(pthread_getspecific(b->key));
    pthread_setspecific(b->key, NULL);
}

size_t et_tlbuf_total(et_tlbuf *b) { return atomic_load(&b->total); }
