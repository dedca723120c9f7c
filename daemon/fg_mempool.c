/* fg_mempool.c - per-worker small-block cache for nghttp2; see fg_mempool.h. */
#include "config.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fg_mempool.h"

#define MEMPOOL_MIN_SHIFT 6             /* the smallest class is 64 bytes */
#define MEMPOOL_LARGE 0xff              /* class of a block from plain malloc */
#define MEMPOOL_ARENA 0xfe              /* class of a block from a session's arena */

/*
 * Every block carries a header with its class, so free() and realloc() know
 * where it goes; the header keeps the payload aligned as malloc's would be.
 */
struct fg_mempool_block {
	union {
		struct {
			union {
				struct fg_mempool_block *next;  /* while free */
				struct fg_mempool_arena *arena; /* MEMPOOL_ARENA: where it lies */
			};
			size_t size;                    /* usable bytes */
			unsigned char cls;
		} h;
		max_align_t align;
	};
};

#define HDR sizeof(struct fg_mempool_block)

/* --- mapped (lazily zeroed) blocks ------------------------------------- */

#define MAP_DELETED ((void *)1)

static size_t map_slot(const void *p, size_t cap)
{
	return ((uintptr_t)p >> 12) * 0x9E3779B97F4A7C15ull % cap;
}

static struct fg_mempool_map *map_find(struct fg_mempool *p, const void *ptr)
{
	size_t i, n;

	if (!p->capmaps)
		return NULL;
	for (i = map_slot(ptr, p->capmaps), n = 0; n < p->capmaps; i = (i + 1) % p->capmaps, n++) {
		if (!p->maps[i].p)
			return NULL;
		if (p->maps[i].p == ptr)
			return &p->maps[i];
	}
	return NULL;
}

static int map_grow(struct fg_mempool *p)
{
	size_t cap = p->capmaps ? p->capmaps * 2 : 64, i, j;
	struct fg_mempool_map *m = calloc(cap, sizeof(*m));

	if (!m)
		return -1;
	for (i = 0; i < p->capmaps; i++) {
		if (!p->maps[i].p || p->maps[i].p == MAP_DELETED)
			continue;
		for (j = map_slot(p->maps[i].p, cap); m[j].p; j = (j + 1) % cap)
			;
		m[j] = p->maps[i];
	}
	free(p->maps);
	p->maps = m;
	p->capmaps = cap;
	p->nused = p->nmaps;
	return 0;
}

static size_t page_size(void)
{
	static size_t page;

	if (!page)
		page = (size_t)sysconf(_SC_PAGESIZE);
	return page;
}

static size_t page_round(size_t n)
{
	return (n + page_size() - 1) / page_size() * page_size();
}

/* Room in the set for one more block: 0, or -1 when it cannot grow. */
static int map_room(struct fg_mempool *p)
{
	return (p->nused + 1) * 2 > p->capmaps ? map_grow(p) : 0;
}

/* Records <ptr> (page-aligned, <len> bytes; part of <arena>, or NULL: a
 * mapping of its own) in the set, which map_room() made room in. */
static void map_insert(struct fg_mempool *p, void *ptr, size_t len, struct fg_mempool_arena *arena)
{
	size_t i;

	for (i = map_slot(ptr, p->capmaps); p->maps[i].p && p->maps[i].p != MAP_DELETED; i = (i + 1) % p->capmaps)
		;
	if (!p->maps[i].p)
		p->nused++;
	p->maps[i].p = ptr;
	p->maps[i].len = len;
	p->maps[i].arena = arena;
	p->nmaps++;
}

static void *map_alloc(struct fg_mempool *p, size_t n)
{
	size_t len = page_round(n);
	void *ptr;

	if (map_room(p) < 0)
		return NULL;
	ptr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ptr == MAP_FAILED)
		return NULL;
	map_insert(p, ptr, len, NULL);
	return ptr;
}

static void arena_put(struct fg_mempool *p, struct fg_mempool_arena *a);

static void map_release(struct fg_mempool *p, struct fg_mempool_map *m)
{
	struct fg_mempool_arena *a = m->arena;

	if (!a)
		munmap(m->p, m->len);
	m->p = MAP_DELETED;
	m->arena = NULL;
	p->nmaps--;
	if (a)
		arena_put(p, a);
}

/* A block of ours that mmap made: page-aligned and in the set. */
static struct fg_mempool_map *map_of(struct fg_mempool *p, void *ptr)
{
	if (((uintptr_t)ptr & 4095) != 0)
		return NULL;
	return map_find(p, ptr);
}

/* --- a session's arena (see fg_mempool.h) ------------------------------ */

#define ARENA_HDR ((sizeof(struct fg_mempool_arena) + HDR - 1) / HDR * HDR)

/* The arena of the session being created, mapped at its first block; NULL
 * when no mapping can be made. */
static struct fg_mempool_arena *arena_get(struct fg_mempool *p)
{
	struct fg_mempool_arena *a = p->arena;

	if (a)
		return a;
	a = mmap(NULL, FG_MEMPOOL_ARENA_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return NULL;
	a->used = ARENA_HDR;
	a->top = FG_MEMPOOL_ARENA_LEN;
	a->live = 0;
	p->arena = a;
	p->narenas++;
	return a;
}

/* A block of <n> bytes, zeroed (the arena's pages are fresh and its bytes
 * handed out once), packed after the arena's last one, behind a header
 * that says where it lies; NULL when it does not fit. */
static void *arena_alloc(struct fg_mempool *p, size_t n)
{
	struct fg_mempool_arena *a;
	struct fg_mempool_block *b;
	size_t need = HDR + (n + HDR - 1) / HDR * HDR;

	if (n > FG_MEMPOOL_ARENA_LEN || !(a = arena_get(p)) || need > a->top - a->used)
		return NULL;
	b = (struct fg_mempool_block *)(void *)((char *)a + a->used);
	a->used += need;
	a->live++;
	b->h.arena = a;
	b->h.size = need - HDR;
	b->h.cls = MEMPOOL_ARENA;
	return (char *)b + HDR;
}

/* A block of <n> bytes in whole pages of their own at the arena's top,
 * zeroed: no header (it would touch the page), so the set records it, and
 * its pages stay untouched until nghttp2 writes them.  NULL when it does
 * not fit. */
static void *arena_alloc_pages(struct fg_mempool *p, size_t n)
{
	struct fg_mempool_arena *a;
	size_t len = page_round(n);
	char *ptr;

	/* The top stays page-aligned only if the arena's length is (4 KiB pages). */
	if (FG_MEMPOOL_ARENA_LEN % page_size() || len > FG_MEMPOOL_ARENA_LEN || map_room(p) < 0 ||
	    !(a = arena_get(p)) || len > a->top - a->used)
		return NULL;
	a->top -= len;
	ptr = (char *)a + a->top;
	a->live++;
	map_insert(p, ptr, len, a);
	return ptr;
}

/* The arena goes with its last block, but not while its session is still
 * being created: more blocks may come. */
static void arena_put(struct fg_mempool *p, struct fg_mempool_arena *a)
{
	if (--a->live == 0 && a != p->arena) {
		munmap(a, FG_MEMPOOL_ARENA_LEN);
		p->narenas--;
	}
}

/* A zeroed block for a session being created, in its arena: packed when it
 * is one nghttp2 touches at once, on pages of its own at the top when it is
 * one written later; mapped on its own when the arena is full. */
static void *session_alloc(struct fg_mempool *p, size_t n)
{
	void *ptr;

	ptr = n >= FG_MEMPOOL_ARENA_MIN ? arena_alloc(p, n) : arena_alloc_pages(p, n);
	return ptr ? ptr : map_alloc(p, n);
}

static int class_of(size_t n)
{
	int c = 0;
	size_t cap = (size_t)1 << MEMPOOL_MIN_SHIFT;

	while (cap < n) {
		cap <<= 1;
		c++;
	}
	return c < FG_MEMPOOL_NCLASSES ? c : -1;
}

static void *pool_malloc(size_t n, void *user)
{
	struct fg_mempool *p = user;
	struct fg_mempool_block *b;
	int c = class_of(n);
	void *ptr;

	if (p->lazy_session && n >= FG_MEMPOOL_LAZY_SESSION_MIN && (ptr = session_alloc(p, n)))
		return ptr;

	if (c < 0) {
		b = malloc(HDR + n);
		if (!b)
			return NULL;
		b->h.size = n;
		b->h.cls = MEMPOOL_LARGE;
		return (char *)b + HDR;
	}
	b = p->free[c];
	if (b) {
		p->free[c] = b->h.next;
		p->nfree[c]--;
	} else {
		size_t size = (size_t)1 << (MEMPOOL_MIN_SHIFT + c);
		b = malloc(HDR + size);
		if (!b)
			return NULL;
		b->h.size = size;
		b->h.cls = (unsigned char)c;
	}
	return (char *)b + HDR;
}

static void pool_free(void *ptr, void *user)
{
	struct fg_mempool *p = user;
	struct fg_mempool_block *b;
	struct fg_mempool_map *m;

	if (!ptr)
		return;
	if ((m = map_of(p, ptr))) {
		map_release(p, m);
		return;
	}
	b = (struct fg_mempool_block *)(void *)((char *)ptr - HDR);
	if (b->h.cls == MEMPOOL_ARENA) {
		arena_put(p, b->h.arena);
		return;
	}
	if (b->h.cls == MEMPOOL_LARGE || p->nfree[b->h.cls] >= FG_MEMPOOL_KEEP) {
		free(b);
		return;
	}
	b->h.next = p->free[b->h.cls];
	p->free[b->h.cls] = b;
	p->nfree[b->h.cls]++;
}

static void *pool_calloc(size_t nmemb, size_t size, void *user)
{
	struct fg_mempool *p = user;
	void *ptr;

	if (size && nmemb > SIZE_MAX / size)
		return NULL;
	/* Fresh anonymous pages are zero already: no memset, no resident page. */
	if (p->lazy_session && nmemb * size >= FG_MEMPOOL_LAZY_SESSION_MIN &&
	    (ptr = session_alloc(p, nmemb * size)))
		return ptr;
	if (nmemb * size >= FG_MEMPOOL_LAZY_MIN && (ptr = map_alloc(p, nmemb * size)))
		return ptr;
	ptr = pool_malloc(nmemb * size, user);
	if (ptr)
		memset(ptr, 0, nmemb * size);
	return ptr;
}

static void *pool_realloc(void *ptr, size_t n, void *user)
{
	struct fg_mempool_block *b;
	struct fg_mempool_map *m;
	void *np;

	if (!ptr)
		return pool_malloc(n, user);
	if ((m = map_of(user, ptr))) {
		if (n <= m->len)
			return ptr;
		np = pool_malloc(n, user);
		if (!np)
			return NULL;
		memcpy(np, ptr, m->len);
		map_release(user, m);
		return np;
	}
	b = (struct fg_mempool_block *)(void *)((char *)ptr - HDR);
	if (n <= b->h.size)
		return ptr;
	np = pool_malloc(n, user);
	if (!np)
		return NULL;
	memcpy(np, ptr, b->h.size);
	pool_free(ptr, user);
	return np;
}

void fg_mempool_init(struct fg_mempool *p)
{
	memset(p, 0, sizeof(*p));
	p->mem.mem_user_data = p;
	p->mem.malloc = pool_malloc;
	p->mem.free = pool_free;
	p->mem.calloc = pool_calloc;
	p->mem.realloc = pool_realloc;
}

void fg_mempool_session_begin(struct fg_mempool *p)
{
	p->lazy_session = 1;
}

void fg_mempool_session_end(struct fg_mempool *p)
{
	struct fg_mempool_arena *a = p->arena;

	p->lazy_session = 0;
	p->arena = NULL;
	if (a && a->live == 0) {                /* the session was not made: nothing in it */
		munmap(a, FG_MEMPOOL_ARENA_LEN);
		p->narenas--;
	}
}

void fg_mempool_free(struct fg_mempool *p)
{
	struct fg_mempool_block *b, *next;
	int c;

	for (c = 0; c < FG_MEMPOOL_NCLASSES; c++) {
		for (b = p->free[c]; b; b = next) {
			next = b->h.next;
			free(b);
		}
		p->free[c] = NULL;
		p->nfree[c] = 0;
	}
	/* Sessions are gone by now; a mapping left would be a leak of theirs,
	 * but the set is ours. */
	free(p->maps);
	p->maps = NULL;
	p->nmaps = p->nused = p->capmaps = 0;
}
