/*
 * fg_failalloc.h - the fail-the-Nth-allocation hooks of the unit tests
 * (STYLE: "a fail-the-Nth-allocation wrapper drives every error path"),
 * written once.
 *
 * A test links with the matching -Wl,--wrap=... flags (Makefile.am) and
 * includes this file once, after defining what it wraps:
 *
 *   FG_FAILALLOC_ALL      malloc, calloc, realloc and free.  <mem> counts
 *                         the allocations since mem_arm() (<count>), fails
 *                         allocation number <fail_at> (1 = the next one;
 *                         0: never) and remembers that it did (<failed>),
 *                         and counts live blocks and their usable bytes
 *                         with a high-water mark (<live>, <bytes>, <peak>).
 *   FG_FAILALLOC_STRDUP   with FG_FAILALLOC_ALL, strdup too: it allocates
 *                         inside libc, out of --wrap=malloc's reach.
 *   FG_FAILALLOC_REALLOC  realloc only, for modules whose every allocation
 *                         is a realloc: <realloc_calls> counts them and
 *                         <realloc_fail_at> is the number of calls left
 *                         before one fails (-1: never).
 *
 * Allocations inside shared libraries (libyaml, protobuf-c, libevent) do
 * not go through --wrap; libevent's can be routed here with
 * event_set_mem_functions().  The definitions live in this header because
 * each test is one translation unit.
 */
#ifndef FG_FAILALLOC_H
#define FG_FAILALLOC_H

#include <malloc.h>
#include <stddef.h>
#include <string.h>

#ifdef FG_FAILALLOC_ALL
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

static struct {
	long fail_at;           /* fail the allocation with this number (1 = next); 0: never */
	long count;             /* allocations since mem_arm() */
	int failed;             /* the armed allocation came and was failed */
	long live;              /* blocks allocated and not freed */
	size_t bytes;           /* usable bytes allocated and not freed */
	size_t peak;            /* high-water mark of <bytes> since mem_arm() */
} mem;

static int mem_should_fail(void)
{
	mem.count++;
	if (mem.fail_at == 0 || mem.count != mem.fail_at)
		return 0;
	mem.failed = 1;
	return 1;
}

static void mem_add(void *p)
{
	if (!p)
		return;
	mem.live++;
	mem.bytes += malloc_usable_size(p);
	if (mem.bytes > mem.peak)
		mem.peak = mem.bytes;
}

static void mem_sub(void *p)
{
	if (!p)
		return;
	mem.live--;
	mem.bytes -= malloc_usable_size(p);
}

void *__wrap_malloc(size_t n)
{
	void *p;

	if (mem_should_fail())
		return NULL;
	p = __real_malloc(n);
	mem_add(p);
	return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
	void *p;

	if (mem_should_fail())
		return NULL;
	p = __real_calloc(n, size);
	mem_add(p);
	return p;
}

void *__wrap_realloc(void *p, size_t n)
{
	size_t old = p ? malloc_usable_size(p) : 0;
	void *np;

	if (mem_should_fail())
		return NULL;
	np = __real_realloc(p, n);
	if (!np)
		return NULL;
	if (p) {
		mem.live--;
		mem.bytes -= old;
	}
	mem_add(np);
	return np;
}

void __wrap_free(void *p)
{
	mem_sub(p);
	__real_free(p);
}

/* mem_arm - fail allocation number <fail_at> from now (0: none). */
static void mem_arm(long fail_at)
{
	mem.fail_at = fail_at;
	mem.count = 0;
	mem.failed = 0;
	mem.peak = mem.bytes;
}

#ifdef FG_FAILALLOC_STRDUP
char *__wrap_strdup(const char *s);

char *__wrap_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = __wrap_malloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}
#endif
#endif /* FG_FAILALLOC_ALL */

#ifdef FG_FAILALLOC_REALLOC
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static long realloc_fail_at = -1;       /* calls left before one fails; -1: never */
static long realloc_calls;

void *__wrap_realloc(void *p, size_t n)
{
	realloc_calls++;
	if (realloc_fail_at >= 0 && realloc_fail_at-- == 0)
		return NULL;
	return __real_realloc(p, n);
}
#endif /* FG_FAILALLOC_REALLOC */

#endif /* FG_FAILALLOC_H */
