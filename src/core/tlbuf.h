/* Per-thread work buffers, freed when their thread exits (tlbuf.c).
 *
 *   static et_tlbuf buf;                    zero-initialised: ready
 *   void *p = et_tlbuf_get(&buf, bytes);    this thread's, >= bytes
 *
 * Each thread that calls et_tlbuf_get gets its own 64-byte aligned buffer,
 * kept for its next calls and grown (contents not kept) when a call wants
 * more. A thread's buffer is freed when the thread exits (so a program that
 * plans in short-lived thread teams does not leak one per team). */
#ifndef ET_TLBUF_H
#define ET_TLBUF_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct et_tlbuf {
    _Atomic int ready;         /* key created */
    pthread_key_t key;         /* per thread: the buffer's header */
    _Atomic size_t total;      /* bytes held by all threads' buffers */
} et_tlbuf;

/* This thread's buffer of at least `bytes`; NULL when out of memory (the
 * thread then has none). */
void *et_tlbuf_get(et_tlbuf *b, size_t bytes);
/* This thread's buffer as it is (NULL: none yet), its size in *bytes. */
void *et_tlbuf_peek(et_tlbuf *b, size_t *bytes);
/* Frees this thread's buffer now (the next et_tlbuf_get allocates again). */
void et_tlbuf_release(et_tlbuf *b);
/* Bytes held by all live threads' buffers of b. */
size_t et_tlbuf_total(et_tlbuf *b);
#endif
