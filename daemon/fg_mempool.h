/*
 * fg_mempool.h - a per-worker cache of small memory blocks, handed to
 * nghttp2 as its allocator (nghttp2_mem).
 *
 * nghttp2 allocates and frees a handful of small objects per stream
 * (stream state, outbound items, header copies).  At a few hundred
 * thousand calls a second glibc's malloc/free became a fifth of the
 * proxy's CPU (contrib/bench, perf).  Blocks of up to FG_MEMPOOL_MAX_BLOCK
 * bytes are served from per-size-class free lists instead: a pop and a push
 * per allocation, no lock (one pool per worker thread), with a bounded
 * number of blocks kept per class so an idle worker gives memory back.
 *
 * A pool belongs to one thread.  Every block it hands out must be returned
 * to the same pool (nghttp2 sessions of one worker use that worker's pool).
 */
#ifndef FG_MEMPOOL_H
#define FG_MEMPOOL_H

#include <stddef.h>
#include <nghttp2/nghttp2.h>

#define FG_MEMPOOL_NCLASSES 5           /* 64, 128, ... 1024 bytes: per-stream objects; larger, long-lived ones go to malloc */
#define FG_MEMPOOL_MAX_BLOCK 1024
#define FG_MEMPOOL_KEEP 1024            /* free blocks kept per class */

struct fg_mempool_block;

/* A zeroed block of at least this size is mapped, not allocated: its pages
 * stay untouched (and cost no memory) until written.  nghttp2 callocs a
 * 4 KiB stream table per session that an idle connection never fills. */
#define FG_MEMPOOL_LAZY_MIN 4096

struct fg_mempool_map {
	void *p;                        /* page-aligned block; NULL: empty slot; (void *)1: deleted */
	size_t len;
	struct fg_mempool_arena *arena; /* the arena it lies in, or NULL: a mapping of its own */
};

/*
 * While a session is created (fg_mempool_session_begin), its blocks of
 * FG_MEMPOOL_LAZY_SESSION_MIN bytes or more share one mapping of
 * FG_MEMPOOL_ARENA_LEN bytes, its arena.  nghttp2 1.52's session_new
 * allocates the session (2928 bytes, written at once), two HPACK rings (1
 * KiB each, written only when headers come), the stream table (4 KiB, which
 * nghttp2 reads while it holds no stream) and the frame buffer (16 KiB,
 * whose first bytes take our SETTINGS).  Blocks of FG_MEMPOOL_ARENA_MIN
 * bytes or more are packed one after another from the arena's start, so
 * what an idle connection touches lies in two pages; smaller ones (the
 * rings) get whole pages at its top, which stay out of memory until
 * written.  Each block in a mapping of its own, an idle connection cost
 * three pages on a kernel that backs a page only read with a page of its
 * own (Linux 6.18 here does, instead of the shared zero page), and five
 * mmap and five munmap calls; now two pages and one of each.  The arena
 * goes when its last block is freed; a block that does not fit is mapped
 * on its own.
 */
#define FG_MEMPOOL_ARENA_LEN (40 * 1024)
#define FG_MEMPOOL_ARENA_MIN 2048

struct fg_mempool_arena {
	size_t used;                    /* bytes packed from the start, this header included */
	size_t top;                     /* the page blocks at the top start here (page-aligned) */
	unsigned live;                  /* blocks not yet freed */
};

struct fg_mempool {
	struct fg_mempool_block *free[FG_MEMPOOL_NCLASSES];
	unsigned nfree[FG_MEMPOOL_NCLASSES];
	struct fg_mempool_map *maps;    /* open-addressing set of the mapped blocks in use */
	size_t nmaps, nused, capmaps;   /* live entries, live + deleted slots, slots */
	unsigned lazy_session;          /* a session is being created: see fg_mempool_session_begin */
	struct fg_mempool_arena *arena; /* that session's arena, once it has one; NULL otherwise */
	size_t narenas;                 /* arenas mapped (tests read it) */
	nghttp2_mem mem;                /* what nghttp2_session_*_new3 takes; mem_user_data is the pool */
};

/* fg_mempool_init - an empty pool with <p>->mem ready for nghttp2. */
void fg_mempool_init(struct fg_mempool *p);

/*
 * fg_mempool_session_begin / _end - bracket nghttp2_session_*_new3.  In
 * between, blocks of FG_MEMPOOL_LAZY_SESSION_MIN bytes or more are mapped
 * lazily too: a new session's HPACK tables (two 1 KiB blocks) and frame
 * buffer are written only when the connection carries headers, so an idle
 * connection keeps them out of memory.  (Per-call allocations never get
 * this: a mapping per call would cost two system calls.)
 */
#define FG_MEMPOOL_LAZY_SESSION_MIN 1024
void fg_mempool_session_begin(struct fg_mempool *p);
void fg_mempool_session_end(struct fg_mempool *p);

/* fg_mempool_free - release the blocks the pool keeps (not those in use). */
void fg_mempool_free(struct fg_mempool *p);

#endif /* FG_MEMPOOL_H */
