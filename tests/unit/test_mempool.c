/* test_mempool.c - the per-worker allocator nghttp2 uses, through fg_mempool.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fg_mempool.h"

static void *m_malloc(struct fg_mempool *p, size_t n) { return p->mem.malloc(n, p->mem.mem_user_data); }
static void *m_calloc(struct fg_mempool *p, size_t a, size_t b) { return p->mem.calloc(a, b, p->mem.mem_user_data); }
static void *m_realloc(struct fg_mempool *p, void *x, size_t n) { return p->mem.realloc(x, n, p->mem.mem_user_data); }
static void m_free(struct fg_mempool *p, void *x) { p->mem.free(x, p->mem.mem_user_data); }

static void test_mempool_small_blocks_are_reused(void **state)
{
	struct fg_mempool p;
	void *a, *b;

	fg_mempool_init(&p);
	a = m_malloc(&p, 100);
	assert_non_null(a);
	memset(a, 0xab, 100);
	m_free(&p, a);
	b = m_malloc(&p, 120);              /* same class (128): the freed block comes back */
	assert_ptr_equal(a, b);
	m_free(&p, b);
	assert_int_equal(p.nfree[1], 1);
	fg_mempool_free(&p);
	assert_int_equal(p.nfree[1], 0);
}

static void test_mempool_calloc_zeroes_every_size(void **state)
{
	static const size_t sizes[] = { 1, 64, 65, 1000, 1024, 1025, 4095, 4096, 4097, 65536 };
	struct fg_mempool p;
	unsigned char *x;
	size_t i, j;

	fg_mempool_init(&p);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* dirty a block of that size first, so reuse must be cleared */
		x = m_malloc(&p, sizes[i]);
		memset(x, 0xff, sizes[i]);
		m_free(&p, x);
		x = m_calloc(&p, 1, sizes[i]);
		assert_non_null(x);
		for (j = 0; j < sizes[i]; j++)
			assert_int_equal(x[j], 0);
		if (sizes[i] >= FG_MEMPOOL_LAZY_MIN)      /* mapped: page-aligned, in the set */
			assert_int_equal((uintptr_t)x & 4095, 0);
		m_free(&p, x);
	}
	assert_int_equal(p.nmaps, 0);
	fg_mempool_free(&p);
}

static void test_mempool_realloc_keeps_content(void **state)
{
	struct fg_mempool p;
	unsigned char *x;
	size_t i;

	fg_mempool_init(&p);
	x = m_calloc(&p, 1, 8192);          /* mapped */
	for (i = 0; i < 8192; i++)
		x[i] = (unsigned char)i;
	x = m_realloc(&p, x, 4000);         /* shrinking keeps the block */
	assert_int_equal((uintptr_t)x & 4095, 0);
	x = m_realloc(&p, x, 20000);        /* growing moves it to malloc */
	for (i = 0; i < 8192; i++)
		assert_int_equal(x[i], (unsigned char)i);
	assert_int_equal(p.nmaps, 0);
	x = m_realloc(&p, x, 30);
	m_free(&p, x);
	x = m_realloc(&p, NULL, 50);        /* NULL is malloc */
	memset(x, 1, 50);
	x = m_realloc(&p, x, 900);          /* across classes */
	for (i = 0; i < 50; i++)
		assert_int_equal(x[i], 1);
	m_free(&p, x);
	m_free(&p, NULL);
	fg_mempool_free(&p);
}

static void test_mempool_many_mappings(void **state)
{
	enum { N = 3000 };
	static void *blocks[N];
	struct fg_mempool p;
	size_t i;

	fg_mempool_init(&p);
	for (i = 0; i < N; i++) {
		blocks[i] = m_calloc(&p, 4096, 1);
		assert_non_null(blocks[i]);
		((char *)blocks[i])[0] = 1;
	}
	assert_int_equal(p.nmaps, N);
	for (i = 0; i < N; i += 2)          /* free half, in an order that leaves holes */
		m_free(&p, blocks[i]);
	for (i = 0; i < N; i += 2)
		blocks[i] = m_calloc(&p, 1, 5000);
	for (i = 0; i < N; i++)
		m_free(&p, blocks[i]);
	assert_int_equal(p.nmaps, 0);
	fg_mempool_free(&p);
}

static void test_mempool_session_blocks_are_mapped(void **state)
{
	struct fg_mempool p;
	void *in, *out, *small;

	fg_mempool_init(&p);
	out = m_malloc(&p, 2048);                /* per call: from the heap */
	fg_mempool_session_begin(&p);
	in = m_malloc(&p, 1024);                 /* a new session's table: mapped */
	small = m_malloc(&p, 1023);              /* below the bound: from the classes */
	fg_mempool_session_end(&p);
	assert_int_equal((uintptr_t)in & 4095, 0);
	assert_int_equal(p.nmaps, 1);
	memset(in, 7, 1024);
	in = m_realloc(&p, in, 3000);            /* grows within its page */
	assert_int_equal(((unsigned char *)in)[1023], 7);
	m_free(&p, in);
	m_free(&p, small);
	m_free(&p, out);
	assert_int_equal(p.nmaps, 0);
	fg_mempool_free(&p);
}

/* What nghttp2 1.52's session_new allocates, in its order (fg_mempool.h):
 * the session, two HPACK rings, the stream table, the frame buffer. */
static void test_mempool_session_blocks_touched_at_once_share_pages(void **state)
{
	struct fg_mempool p;
	unsigned char *session, *ring1, *ring2, *table, *framebuf;
	size_t i;

	fg_mempool_init(&p);
	fg_mempool_session_begin(&p);
	session = m_calloc(&p, 1, 2928);
	ring1 = m_malloc(&p, 1024);
	ring2 = m_malloc(&p, 1024);
	table = m_calloc(&p, 256, 16);
	framebuf = m_malloc(&p, 16394);
	fg_mempool_session_end(&p);
	assert_int_equal(p.narenas, 1);
	/* Packed in order: the three fit in two pages' worth from the start
	 * of their mapping (the arena's header and three block headers too). */
	assert_true(table > session && table - session < 2928 + 128);
	assert_true(framebuf > table && framebuf - table < 4096 + 128);
	assert_true((uintptr_t)(framebuf + 256 - 1) / 4096 - (uintptr_t)session / 4096 <= 1);
	/* The rings, written only when headers come, have pages of their own
	 * at the arena's top (no header written before them), in the set. */
	assert_int_equal((uintptr_t)ring1 & 4095, 0);
	assert_int_equal((uintptr_t)ring2 & 4095, 0);
	assert_true(ring1 >= framebuf + 16394 && ring1 + 1024 <= session + FG_MEMPOOL_ARENA_LEN);
	assert_true(ring2 >= framebuf + 16394 && ring2 + 1024 <= session + FG_MEMPOOL_ARENA_LEN);
	assert_true(ring1 - ring2 >= 4096 || ring2 - ring1 >= 4096);
	assert_int_equal(p.nmaps, 2);
	assert_int_equal(p.narenas, 1);
	for (i = 0; i < 2928; i++)
		assert_int_equal(session[i], 0);
	for (i = 0; i < 4096; i++)
		assert_int_equal(table[i], 0);
	memset(session, 0xaa, 2928);
	memset(table, 0xbb, 4096);
	memset(framebuf, 0xcc, 16394);
	assert_int_equal(session[2927], 0xaa);   /* no overlap */
	assert_int_equal(table[4095], 0xbb);
	/* Freed in any order; the mapping goes with the last block. */
	memset(ring1, 0xdd, 1024);
	m_free(&p, table);
	ring1 = m_realloc(&p, ring1, 3000);          /* grows within its page */
	assert_int_equal(ring1[1023], 0xdd);
	m_free(&p, ring1);
	m_free(&p, session);
	assert_int_equal(p.nmaps, 1);
	assert_int_equal(p.narenas, 1);
	framebuf = m_realloc(&p, framebuf, 20000);   /* grows out of the arena */
	assert_int_equal(framebuf[16393], 0xcc);
	assert_int_equal(p.narenas, 1);
	ring2 = m_realloc(&p, ring2, 5000);          /* out of its page: the arena's last block */
	assert_int_equal(p.narenas, 0);
	assert_int_equal(p.nmaps, 0);                /* outside a session: from the heap */
	m_free(&p, framebuf);
	m_free(&p, ring2);
	assert_int_equal(p.nmaps, 0);
	fg_mempool_free(&p);
}

static void test_mempool_session_arena_limits(void **state)
{
	struct fg_mempool p;
	void *a, *b, *big;

	fg_mempool_init(&p);
	/* A session that failed half-way frees its blocks before the bracket
	 * ends: the arena goes at the end, not while more may come. */
	fg_mempool_session_begin(&p);
	a = m_calloc(&p, 1, 3000);
	m_free(&p, a);
	assert_int_equal(p.narenas, 1);
	b = m_malloc(&p, 5000);
	assert_ptr_not_equal(b, a);              /* bytes are handed out once */
	m_free(&p, b);
	fg_mempool_session_end(&p);
	assert_int_equal(p.narenas, 0);
	/* What does not fit is mapped on its own; the next session has an
	 * arena of its own. */
	fg_mempool_session_begin(&p);
	a = m_malloc(&p, 20000);
	big = m_malloc(&p, FG_MEMPOOL_ARENA_LEN);
	b = m_malloc(&p, FG_MEMPOOL_ARENA_LEN - 20000);
	fg_mempool_session_end(&p);
	assert_int_equal((uintptr_t)big & 4095, 0);
	assert_int_equal((uintptr_t)b & 4095, 0);
	assert_int_equal(p.nmaps, 2);
	assert_int_equal(p.narenas, 1);
	fg_mempool_session_begin(&p);
	big = m_realloc(&p, big, 100);           /* shrinks in place */
	m_free(&p, b);
	b = m_malloc(&p, 2048);
	fg_mempool_session_end(&p);
	assert_int_equal(p.narenas, 2);
	m_free(&p, a);
	m_free(&p, b);
	m_free(&p, big);
	assert_int_equal(p.narenas, 0);
	assert_int_equal(p.nmaps, 0);
	/* Outside a session's creation nothing goes to an arena. */
	a = m_calloc(&p, 1, 3000);
	assert_int_equal(p.narenas, 0);
	m_free(&p, a);
	fg_mempool_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mempool_small_blocks_are_reused),
		cmocka_unit_test(test_mempool_calloc_zeroes_every_size),
		cmocka_unit_test(test_mempool_realloc_keeps_content),
		cmocka_unit_test(test_mempool_many_mappings),
		cmocka_unit_test(test_mempool_session_blocks_are_mapped),
		cmocka_unit_test(test_mempool_session_blocks_touched_at_once_share_pages),
		cmocka_unit_test(test_mempool_session_arena_limits),
	};
	return cmocka_run_group_tests_name("mempool", tests, NULL, NULL);
}
