/*
 * test_redisreply.c - cmocka group "redisreply": fg_redisreply.h through
 * a hiredis reader fed RESP bytes by hand.
 *
 * What the reader builds with the arena must be the tree hiredis's own
 * functions build (types, strings, integers, nesting, nil), the arena must
 * be empty again after each reply, replies larger than the arena must
 * spill to malloc and be freed whole (ASan and valgrind check the frees),
 * and a partial reply left in a reader that fails or is freed must be
 * freed too.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "fg_redisreply.h"

struct t {
	struct fg_redisreply_arena arena;
	redisReader *reader;
};

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	if (!t || !(t->reader = redisReaderCreate()))
		return -1;
	fg_redisreply_arena_init(&t->arena);
	fg_redisreply_attach(t->reader, &t->arena);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	redisReaderFree(t->reader);
	free(t);
	return 0;
}

/* Feed <resp> and take one whole reply. */
static redisReply *read_one(struct t *t, const char *resp, size_t len)
{
	void *reply = NULL;

	assert_int_equal(redisReaderFeed(t->reader, resp, len), REDIS_OK);
	assert_int_equal(redisReaderGetReply(t->reader, &reply), REDIS_OK);
	assert_non_null(reply);
	return reply;
}

static void release(struct t *t, redisReply *r)
{
	t->reader->fn->freeObject(r);
	assert_int_equal(t->arena.used, 0);
}

/* A state check's kind of reply: an array of integers, strings and a nil,
 * with a nested array. */
static void test_tree(void **state)
{
	struct t *t = *state;
	static const char resp[] = "*5\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n+OK\r\n-ERR no\r\n$0\r\n\r\n";
	redisReply *r = read_one(t, resp, sizeof(resp) - 1);

	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 5);
	assert_int_equal(r->element[0]->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->element[0]->integer, 42);
	assert_int_equal(r->element[1]->type, REDIS_REPLY_STRING);
	assert_int_equal(r->element[1]->len, 5);
	assert_string_equal(r->element[1]->str, "hello");
	assert_int_equal(r->element[2]->type, REDIS_REPLY_NIL);
	assert_int_equal(r->element[3]->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->element[3]->elements, 2);
	assert_int_equal(r->element[3]->element[0]->type, REDIS_REPLY_STATUS);
	assert_string_equal(r->element[3]->element[0]->str, "OK");
	assert_int_equal(r->element[3]->element[1]->type, REDIS_REPLY_ERROR);
	assert_string_equal(r->element[3]->element[1]->str, "ERR no");
	assert_int_equal(r->element[4]->len, 0);
	assert_string_equal(r->element[4]->str, "");
	assert_true(t->arena.used > 0);
	release(t, r);

	/* the next reply reuses the arena from its start */
	r = read_one(t, ":7\r\n", 4);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 7);
	assert_true((unsigned char *)r > t->arena.buf && (unsigned char *)r < t->arena.buf + 64);
	release(t, r);
	r = read_one(t, "*0\r\n", 4);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 0);
	assert_null(r->element);
	release(t, r);
	r = read_one(t, "*-1\r\n", 5);
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	release(t, r);
}

/* Larger than the arena: a long string, then an array of many elements
 * whose later nodes and strings come from malloc. */
static void test_spill(void **state)
{
	struct t *t = *state;
	size_t big = 3 * FG_REDISREPLY_ARENA_SIZE, n = 600, off = 0, i;
	char *resp = malloc(big + 64), *arr = malloc(n * 32 + 32);
	redisReply *r;

	assert_non_null(resp);
	assert_non_null(arr);
	off = (size_t)snprintf(resp, 64, "$%zu\r\n", big);
	memset(resp + off, 'x', big);
	memcpy(resp + off + big, "\r\n", 2);
	r = read_one(t, resp, off + big + 2);
	assert_int_equal(r->len, big);
	assert_int_equal(r->str[big - 1], 'x');
	assert_int_equal(r->str[big], '\0');
	release(t, r);

	off = (size_t)sprintf(arr, "*%zu\r\n", n);
	for (i = 0; i < n; i++)
		off += (size_t)sprintf(arr + off, i % 2 ? ":%zu\r\n" : "$4\r\nk%03zu\r\n", i);
	r = read_one(t, arr, off);
	assert_int_equal(r->elements, n);
	for (i = 0; i < n; i++) {
		if (i % 2) {
			assert_int_equal(r->element[i]->integer, (long long)i);
		} else {
			char want[8];
			snprintf(want, sizeof(want), "k%03zu", i);
			assert_string_equal(r->element[i]->str, want);
		}
	}
	release(t, r);
	free(resp);
	free(arr);
}

/* A partial reply in a reader that is then freed, and one cut by a
 * protocol error: both freed (ASan/valgrind), the arena empty again. */
static void test_partial(void **state)
{
	struct t *t = *state;
	static const char part[] = "*3\r\n:1\r\n$3\r\nabc\r\n";
	static const char bad[] = "*2\r\n:1\r\n!bogus\r\n";
	void *reply = NULL;
	redisReply *r;

	assert_int_equal(redisReaderFeed(t->reader, part, sizeof(part) - 1), REDIS_OK);
	assert_int_equal(redisReaderGetReply(t->reader, &reply), REDIS_OK);
	assert_null(reply);                     /* not whole yet */
	assert_true(t->arena.used > 0);
	redisReaderFree(t->reader);             /* frees the partial tree */
	assert_int_equal(t->arena.used, 0);

	assert_non_null(t->reader = redisReaderCreate());
	fg_redisreply_attach(t->reader, &t->arena);
	assert_int_equal(redisReaderFeed(t->reader, bad, sizeof(bad) - 1), REDIS_OK);
	assert_int_equal(redisReaderGetReply(t->reader, &reply), REDIS_ERR);
	assert_int_equal(t->arena.used, 0);

	/* a fresh reader reads whole replies again */
	redisReaderFree(t->reader);
	assert_non_null(t->reader = redisReaderCreate());
	fg_redisreply_attach(t->reader, &t->arena);
	r = read_one(t, "$2\r\nok\r\n", 8);
	assert_string_equal(r->str, "ok");
	release(t, r);
}

/* Feed an array of <n> elements, each <each> bytes of RESP made by
 * <elem>, in pieces; 1: the reader took a whole reply, 0: it failed
 * (refused). */
static int feed_array(struct t *t, unsigned n, const char *elem)
{
	char head[32];
	void *reply = NULL;
	int rc;

	snprintf(head, sizeof(head), "*%u\r\n", n);
	assert_int_equal(redisReaderFeed(t->reader, head, strlen(head)), REDIS_OK);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(redisReaderFeed(t->reader, elem, strlen(elem)), REDIS_OK);
		if ((rc = redisReaderGetReply(t->reader, &reply)) != REDIS_OK)
			return 0;
	}
	assert_non_null(reply);
	release(t, reply);
	return 1;
}

/* Each string and each array within its own bound, the whole reply not:
 * refused once its objects pass FG_REDISREPLY_MAX_REPLY (a hostile server
 * held a worker at 962 MB with 4096 strings of 1 MB); one just under it
 * is read. */
static void test_whole_reply_bound(void **state)
{
	struct t *t = *state;
	static char big[1000 + 16], ints[4096 * 4 + 16];
	size_t at;

	snprintf(big, sizeof(big), "$1000\r\n%01000d\r\n", 0);
	assert_int_equal(feed_array(t, 900, big), 1);           /* 900 KB of strings: read */
	assert_int_equal(feed_array(t, 4096, big), 0);          /* 4 MB: refused */
	assert_int_equal(t->arena.used, 0);
	assert_int_equal(t->arena.total, 0);

	redisReaderFree(t->reader);
	assert_non_null(t->reader = redisReaderCreate());
	fg_redisreply_attach(t->reader, &t->arena);
	at = (size_t)snprintf(ints, sizeof(ints), "*4096\r\n");
	for (unsigned i = 0; i < 4096; i++)
		at += (size_t)snprintf(ints + at, sizeof(ints) - at, ":%u\r\n", i % 10);
	assert_int_equal(feed_array(t, 4096, ints), 0);         /* 4096 x 4096 integers: refused */
	assert_int_equal(t->arena.total, 0);

	redisReaderFree(t->reader);
	assert_non_null(t->reader = redisReaderCreate());
	fg_redisreply_attach(t->reader, &t->arena);
	release(t, read_one(t, "$2\r\nok\r\n", 8));       /* a fresh reader reads again */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_whole_reply_bound, setup, teardown),
	};

	return cmocka_run_group_tests_name("redisreply", tests, NULL, NULL);
}
