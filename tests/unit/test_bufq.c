/*
 * test_bufq.c - the one growable byte buffer, through fg_bufq.h.
 *
 * Link with -Wl,--wrap=realloc: __wrap_realloc below counts the calls and
 * fails the Nth on request, which drives the FG_ENOMEM paths (fg_bufq
 * allocates only through realloc).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fg_bufq.h"
#include "fg_error.h"

/* ---- failing realloc ---- */

#define FG_FAILALLOC_REALLOC
#include "fg_failalloc.h"

/* ---- helpers ---- */

static void append_str(struct fg_bufq *q, const char *s)
{
	assert_int_equal(fg_bufq_append(q, s, strlen(s)), 0);
}

static void expect_bytes(const struct fg_bufq *q, const char *s)
{
	assert_int_equal(fg_bufq_len(q), strlen(s));
	if (*s)
		assert_memory_equal(fg_bufq_head(q), s, strlen(s));
}

/* ---- the queue ---- */

static void test_bufq_append_take_consume(void **state)
{
	struct fg_bufq q = { 0 };
	char out[8];

	fg_bufq_free(NULL);
	fg_bufq_free(&q);
	assert_int_equal(fg_bufq_append(&q, NULL, 0), 0);
	assert_null(q.data);            /* nothing appended, nothing allocated */
	append_str(&q, "hello ");
	append_str(&q, "world");
	expect_bytes(&q, "hello world");
	assert_int_equal(fg_bufq_take(&q, out, 6), 6);
	assert_memory_equal(out, "hello ", 6);
	expect_bytes(&q, "world");
	fg_bufq_consume(&q, 2);
	expect_bytes(&q, "rld");
	assert_int_equal(fg_bufq_take(&q, out, sizeof(out)), 3);
	assert_int_equal(fg_bufq_len(&q), 0);
	assert_int_equal(q.off, 0);     /* emptied: back to the front */
	assert_non_null(q.data);        /* small memory is kept */
	fg_bufq_free(&q);
	assert_true(q.data == NULL && q.off == 0 && q.len == 0 && q.cap == 0);
}

/* Reserve, write at the tail, commit: the in-place writer's cycle. */
static void test_bufq_reserve_tail_commit(void **state)
{
	struct fg_bufq q;
	size_t cap;

	fg_bufq_init(&q);
	assert_int_equal(fg_bufq_reserve(&q, 0), 0);
	assert_int_equal(fg_bufq_reserve(&q, 1000), 0);
	assert_true(fg_bufq_room(&q) >= 1000 && fg_bufq_len(&q) == 0);
	memcpy(fg_bufq_tail(&q), "abc", 3);
	assert_int_equal(fg_bufq_len(&q), 0); /* written is not committed */
	fg_bufq_commit(&q, 3);
	expect_bytes(&q, "abc");
	/* room already there: no allocation, the tail does not move */
	realloc_calls = 0;
	assert_int_equal(fg_bufq_reserve(&q, fg_bufq_room(&q)), 0);
	assert_int_equal(realloc_calls, 0);
	/* full, one more byte: the capacity at least doubles */
	cap = q.cap;
	fg_bufq_commit(&q, fg_bufq_room(&q));
	assert_int_equal(fg_bufq_reserve(&q, 1), 0);
	assert_true(q.cap >= 2 * cap);
	assert_int_equal(fg_bufq_len(&q), cap);
	assert_memory_equal(fg_bufq_head(&q), "abc", 3);
	/* a size no memory can have: FG_ENOMEM, the bytes as they were */
	assert_int_equal(fg_bufq_reserve(&q, SIZE_MAX), FG_ENOMEM);
	assert_int_equal(fg_bufq_reserve_exact(&q, SIZE_MAX - 1), FG_ENOMEM);
	assert_int_equal(fg_bufq_len(&q), cap);
	assert_memory_equal(fg_bufq_head(&q), "abc", 3);
	fg_bufq_free(&q);
}

/*
 * After a consume the head is not at the front: a reserve that the free
 * space before the head can satisfy slides the bytes there without
 * allocating, and an offset counted from the head still finds its byte.
 */
static void test_bufq_reserve_compacts(void **state)
{
	struct fg_bufq q = { 0 };
	size_t pos, cap;

	assert_int_equal(fg_bufq_reserve(&q, 1), 0);
	cap = q.cap;
	memset(fg_bufq_tail(&q), 'x', cap);
	fg_bufq_commit(&q, cap);
	fg_bufq_consume(&q, cap - 4);
	memcpy(fg_bufq_tail(&q) - fg_bufq_len(&q), "head", 4);
	pos = 2;                        /* the 'a' of "head", from the head */
	assert_int_equal(fg_bufq_room(&q), 0);
	realloc_calls = 0;
	assert_int_equal(fg_bufq_reserve(&q, cap - 4), 0);
	assert_int_equal(realloc_calls, 0);
	assert_int_equal(q.off, 0);
	assert_int_equal(q.cap, cap);
	expect_bytes(&q, "head");
	assert_int_equal(fg_bufq_head(&q)[pos], 'a');
	fg_bufq_free(&q);
}

/* Exact growth: the capacity is the length plus what was asked, no more. */
static void test_bufq_reserve_exact(void **state)
{
	struct fg_bufq q = { 0 };

	assert_int_equal(fg_bufq_reserve_exact(&q, 5), 0);
	assert_int_equal(q.cap, 5);
	memcpy(fg_bufq_tail(&q), "12345", 5);
	fg_bufq_commit(&q, 5);
	assert_int_equal(fg_bufq_reserve_exact(&q, 1000), 0);
	assert_int_equal(q.cap, 1005);
	/* the doubling reserve grows from there */
	fg_bufq_commit(&q, 1000);
	assert_int_equal(fg_bufq_reserve(&q, 1), 0);
	assert_int_equal(q.cap, 2010);
	assert_memory_equal(fg_bufq_head(&q), "12345", 5);
	fg_bufq_free(&q);
}

static void test_bufq_truncate_and_clear(void **state)
{
	struct fg_bufq q = { 0 };
	size_t cap;

	append_str(&q, "abcdef");
	fg_bufq_consume(&q, 1);
	fg_bufq_truncate(&q, 10);       /* longer than the queue: nothing */
	expect_bytes(&q, "bcdef");
	fg_bufq_truncate(&q, 2);
	expect_bytes(&q, "bc");
	assert_int_equal(q.off, 1);
	fg_bufq_truncate(&q, 0);
	assert_int_equal(fg_bufq_len(&q), 0);
	assert_int_equal(q.off, 0);
	cap = q.cap;
	assert_non_null(q.data);
	/* truncate keeps any memory; clear gives back more than FG_BUFQ_KEEP */
	assert_int_equal(fg_bufq_reserve(&q, FG_BUFQ_KEEP + 1), 0);
	fg_bufq_commit(&q, 1);
	fg_bufq_truncate(&q, 0);
	assert_true(q.cap > FG_BUFQ_KEEP);
	fg_bufq_commit(&q, 1);
	fg_bufq_clear(&q);
	assert_null(q.data);
	assert_int_equal(q.cap, 0);
	append_str(&q, "again");
	fg_bufq_clear(&q);
	assert_non_null(q.data);        /* small: kept */
	assert_true(q.cap >= cap);
	fg_bufq_free(&q);
}

/* Each growth failed in turn: FG_ENOMEM and the bytes as they were. */
/* Room kept in front of the head takes a prefix without moving the bytes;
 * once a writer needed that room, prepend says so and changes nothing. */
static void test_bufq_headroom_prepend(void **state)
{
	struct fg_bufq q = { 0 };
	const uint8_t *body;

	(void)state;
	assert_int_equal(fg_bufq_headroom(&q, 5), 0);
	assert_int_equal(fg_bufq_len(&q), 0);
	assert_int_equal(fg_bufq_append(&q, "message", 7), 0);
	body = fg_bufq_head(&q);
	assert_int_equal(fg_bufq_prepend(&q, "PREFX", 5), 0);
	assert_int_equal(fg_bufq_len(&q), 12);
	assert_memory_equal(fg_bufq_head(&q), "PREFXmessage", 12);
	assert_ptr_equal(fg_bufq_head(&q) + 5, body);
	/* no room left in front */
	assert_int_equal(fg_bufq_prepend(&q, "X", 1), FG_ESTATE);
	assert_int_equal(fg_bufq_len(&q), 12);
	/* a writer that grew the queue past its memory moved the bytes to
	 * the front: the room is gone, and prepend refuses */
	assert_int_equal(fg_bufq_headroom(&q, 5), 0);
	assert_int_equal(fg_bufq_reserve(&q, q.cap), 0);
	assert_int_equal(fg_bufq_prepend(&q, "PREFX", 5), FG_ESTATE);
	fg_bufq_free(&q);
}

static void test_bufq_enomem(void **state)
{
	struct fg_bufq q = { 0 };
	uint8_t big[600];

	memset(big, 'b', sizeof(big));
	realloc_fail_at = 0;
	assert_int_equal(fg_bufq_append(&q, "a", 1), FG_ENOMEM);
	assert_true(q.data == NULL && q.len == 0 && q.cap == 0);
	realloc_fail_at = 0;
	assert_int_equal(fg_bufq_reserve_exact(&q, 1), FG_ENOMEM);
	assert_null(q.data);
	append_str(&q, "keep");
	fg_bufq_consume(&q, 1);
	realloc_fail_at = 0;
	assert_int_equal(fg_bufq_append(&q, big, sizeof(big)), FG_ENOMEM);
	expect_bytes(&q, "eep");
	realloc_fail_at = 0;
	assert_int_equal(fg_bufq_reserve(&q, sizeof(big)), FG_ENOMEM);
	expect_bytes(&q, "eep");
	realloc_fail_at = -1;
	assert_int_equal(fg_bufq_append(&q, big, sizeof(big)), 0);
	assert_int_equal(fg_bufq_len(&q), 3 + sizeof(big));
	assert_memory_equal(fg_bufq_head(&q), "eep", 3);
	fg_bufq_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bufq_append_take_consume),
		cmocka_unit_test(test_bufq_reserve_tail_commit),
		cmocka_unit_test(test_bufq_reserve_compacts),
		cmocka_unit_test(test_bufq_reserve_exact),
		cmocka_unit_test(test_bufq_truncate_and_clear),
		cmocka_unit_test(test_bufq_headroom_prepend),
		cmocka_unit_test(test_bufq_enomem),
	};

	return cmocka_run_group_tests_name("bufq", tests, NULL, NULL);
}
