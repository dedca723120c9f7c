/* fg_mempool.c - per-worker small-block cache for nghttp2; see fg_mempool.h. */
#include "config.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_mempool.h"

#define MEMPOOL_MIN_SHIFT 6             /* the smallest class is 64 bytes */
#define MEMPOOL_LARGE 0xff              /* class of a block from plain malloc */

/*
 * Every block carries a header with its class, so free() and realloc() know
 * where it goes; the header keeps the payload aligned as malloc's would be.
 */
struct fg_mempool_block {
	union {
		struct {
			struct fg_mempool_block *next;  /* while free */
			size_t size;                    /* usable bytes */
			unsigned char cls;
		} h;
		max_align_t align;
	};
};

#define HDR sizeof(struct fg_mempool_block)

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

	if (!ptr)
		return;
	b = (struct fg_mempool_block *)(void *)((char *)ptr - HDR);
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
	void *ptr;

	if (size && nmemb > SIZE_MAX / size)
		return NULL;
	ptr = pool_malloc(nmemb * size, user);
	if (ptr)
		memset(ptr, 0, nmemb * size);
	return ptr;
}

static void *pool_realloc(void *ptr, size_t n, void *user)
{
	struct fg_mempool_block *b;
	void *np;

	if (!ptr)
		return pool_malloc(n, user);
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
}
