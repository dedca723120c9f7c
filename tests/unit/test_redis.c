/*
 * test_redis.c - cmocka group "redis": fg_redis.h against a real
 * redis-server, through the header.
 *
 * Each test starts its own redis-server (fg_redisserver.h) in a private
 * temporary directory and stops it by PID in its teardown, which cmocka
 * runs when the test fails too.  Without a redis-server on PATH every
 * test is skipped with a message.
 *
 * The loop is a real libevent event_base run in short slices until a
 * condition holds (loop_until).  Timing bounds get FG_TIME_FACTOR (CI sets
 * it for sanitizers and valgrind) on top of generous slack.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "fg_clock.h"
#include "fg_error.h"
#include "fg_redis.h"
#include "fg_redisserver.h"
#include "fg_testutil.h"

#define MS 1000
#define CMD_TIMEOUT (50 * MS)

static char redis_server[256];          /* path of redis-server, "" when missing */
static int time_factor = 1;

/* One test's world: a loop, a server, its directory. */
struct rt {
	struct fg_test_dir *dir;
	struct event_base *base;
	struct event *tick;             /* keeps loop slices short */
	struct fg_redisserver srv;      /* pid 0 when stopped */
	struct fg_redis *link;
};

/* What one callback saw: each command's callback must run exactly once. */
struct rec {
	int calls;
	enum fg_redis_kind kind;
	long long integer;
	char str[256];
	size_t nelem;
	struct fg_redis_result elem_kinds[4];   /* kind and integer of the first elements */
	char elem_str[4][64];
	uint64_t at_us;
};

/* ---- the server ---- */

static void server_start(struct rt *t)
{
	fg_redisserver_start(&t->srv, time_factor);
}

static void server_kill(struct rt *t)
{
	fg_redisserver_kill(&t->srv);
}

/* ---- the loop ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *<flag> is nonzero or <ms> passed; returns *<flag>. */
static int loop_until(struct rt *t, const int *flag, int ms)
{
	uint64_t end = fg_clock_now_us() + (uint64_t)ms * MS * (uint64_t)time_factor;

	while (!*flag && fg_clock_now_us() < end)
		event_base_loop(t->base, EVLOOP_ONCE);
	return *flag;
}

static void loop_for(struct rt *t, int ms)
{
	int never = 0;
	uint64_t end = fg_clock_now_us() + (uint64_t)ms * MS;

	while (fg_clock_now_us() < end)
		event_base_loop(t->base, EVLOOP_ONCE);
	(void)never;
}

static int wait_state(struct rt *t, enum fg_redis_state st, int ms)
{
	uint64_t end = fg_clock_now_us() + (uint64_t)ms * MS * (uint64_t)time_factor;

	while (fg_redis_get_state(t->link) != st && fg_clock_now_us() < end)
		event_base_loop(t->base, EVLOOP_ONCE);
	return fg_redis_get_state(t->link) == st;
}

/* ---- callbacks ---- */

static void rec_cb(void *arg, const struct fg_redis_result *res)
{
	struct rec *r = arg;

	r->calls++;
	r->kind = res->kind;
	r->integer = res->integer;
	r->nelem = res->nelem;
	r->at_us = fg_clock_now_us();
	if (res->str)
		snprintf(r->str, sizeof(r->str), "%.*s", (int)res->len, res->str);
	for (size_t i = 0; i < res->nelem && i < 4; i++) {
		struct fg_redis_result e;
		assert_int_equal(fg_redis_result_elem(res, i, &e), 0);
		r->elem_kinds[i] = e;
		r->elem_kinds[i].str = NULL;
		r->elem_kinds[i].reply = NULL;
		if (e.str)
			snprintf(r->elem_str[i], sizeof(r->elem_str[i]), "%.*s", (int)e.len, e.str);
	}
	if (res->kind != FG_REDIS_R_ARRAY) {
		struct fg_redis_result e;
		assert_int_equal(fg_redis_result_elem(res, 0, &e), FG_EINVAL);
	}
}

static int cmd(struct rt *t, struct rec *r, int64_t timeout, const char *a0, const char *a1, const char *a2)
{
	const char *argv[3] = { a0, a1, a2 };
	int argc = a2 ? 3 : a1 ? 2 : 1;

	memset(r, 0, sizeof(*r));
	return fg_redis_command(t->link, timeout, argc, argv, NULL, rec_cb, r);
}

/* Send a command and wait for its one result. */
static void cmd_wait(struct rt *t, struct rec *r, const char *a0, const char *a1, const char *a2)
{
	assert_int_equal(cmd(t, r, 2000 * MS, a0, a1, a2), 0);
	assert_true(loop_until(t, &r->calls, 3000));
	assert_int_equal(r->calls, 1);
}

static uint64_t latency_count;

static void latency_cb(void *arg, uint64_t us)
{
	latency_count++;
}

/* ---- setup ---- */

static void link_config(struct rt *t, struct fg_redis_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->address = t->srv.addr;
	cfg->connect_timeout_us = 300 * MS;
	cfg->stall_timeout_us = 300 * MS;
	cfg->backoff_initial_us = 20 * MS;
	cfg->backoff_max_us = 200 * MS;
	cfg->max_inflight = 64;
	cfg->on_latency = latency_cb;
}

static struct fg_redis *link_new(struct rt *t, const struct fg_redis_config *cfg)
{
	struct fg_redis *r = NULL;
	const char *why = NULL;

	assert_int_equal(fg_redis_new(&r, t->base, cfg, &why), 0);
	return r;
}

static int setup_common(void **state, const char *password)
{
	struct rt *t;
	void *dir;

	if (!redis_server[0])
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t || fg_test_dir_new(&dir, "pw") < 0)
		return -1;
	t->dir = dir;
	fg_redisserver_init(&t->srv, redis_server, t->dir->path, password);
	t->base = event_base_new();
	t->tick = event_new(t->base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(t->tick, &(struct timeval){ 0, 5000 });
	server_start(t);
	*state = t;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, NULL);
}

static int setup_auth(void **state)
{
	return setup_common(state, "s3cret-pw");
}

static int teardown(void **state)
{
	struct rt *t = *state;
	void *dir;

	if (!t)
		return 0;
	fg_redis_free(t->link);
	server_kill(t);
	event_free(t->tick);
	event_base_free(t->base);
	dir = t->dir;
	fg_test_dir_free(&dir);
	free(t);
	*state = NULL;
	return 0;
}

#define NEED_REDIS() do { if (!redis_server[0]) skip(); } while (0)

/* A link with the defaults of link_config, CONNECTED. */
static void connect_default(struct rt *t)
{
	struct fg_redis_config cfg;

	link_config(t, &cfg);
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));
}

/* ---- tests ---- */

static void test_address(void **state)
{
	struct event_base *base = event_base_new();
	struct fg_redis_config cfg = { .address = "localhost:6379" };
	struct fg_redis *r = NULL;
	const char *why = NULL;

	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), FG_EINVAL);
	assert_non_null(strstr(why, "numeric"));
	cfg.address = "127.0.0.1";
	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), FG_EINVAL);
	cfg.address = "127.0.0.1:0";
	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), FG_EINVAL);
	cfg.address = "relative/path.sock";
	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), FG_EINVAL);
	cfg.address = "[::1]:6379";
	cfg.password_file = "/nonexistent/fg-redis-pw";
	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), FG_EIO);
	cfg.password_file = NULL;
	assert_int_equal(fg_redis_new(&r, base, &cfg, &why), 0);
	assert_int_equal(fg_redis_get_state(r), FG_REDIS_CONNECTING);
	assert_string_equal(fg_redis_address(r), "[::1]:6379");
	fg_redis_free(r);
	fg_redis_free(NULL);
	event_base_free(base);
}

static void test_get_set(void **state)
{
	struct rt *t = *state;
	struct rec a, b, c, d;
	uint64_t lat0;

	NEED_REDIS();
	connect_default(t);
	lat0 = latency_count;

	cmd_wait(t, &a, "SET", "fg:k", "hello");
	assert_int_equal(a.kind, FG_REDIS_R_STR);
	assert_string_equal(a.str, "OK");
	cmd_wait(t, &a, "GET", "fg:k", NULL);
	assert_int_equal(a.kind, FG_REDIS_R_STR);
	assert_string_equal(a.str, "hello");
	cmd_wait(t, &a, "GET", "fg:missing", NULL);
	assert_int_equal(a.kind, FG_REDIS_R_NIL);
	cmd_wait(t, &a, "INCR", "fg:k", NULL);
	assert_int_equal(a.kind, FG_REDIS_R_ERROR);
	assert_non_null(strstr(a.str, "not an integer"));

	/* Four commands in one go: one write, replies in order. */
	assert_int_equal(cmd(t, &a, 2000 * MS, "INCRBY", "fg:n", "5"), 0);
	assert_int_equal(cmd(t, &b, 2000 * MS, "INCR", "fg:n", NULL), 0);
	assert_int_equal(cmd(t, &c, 2000 * MS, "RPUSH", "fg:l", "x"), 0);
	assert_int_equal(cmd(t, &d, 2000 * MS, "LRANGE", "fg:l", "0"), 0);  /* wrong arity: error */
	assert_true(loop_until(t, &d.calls, 3000));
	assert_int_equal(a.calls + b.calls + c.calls + d.calls, 4);
	assert_int_equal(a.integer, 5);
	assert_int_equal(b.integer, 6);
	assert_true(a.at_us <= b.at_us && b.at_us <= c.at_us && c.at_us <= d.at_us);
	assert_int_equal(d.kind, FG_REDIS_R_ERROR);

	{
		const char *argv[] = { "RPUSH", "fg:l", "y", "z" };
		memset(&a, 0, sizeof(a));
		assert_int_equal(fg_redis_command(t->link, 2000 * MS, 4, argv, NULL, rec_cb, &a), 0);
		assert_true(loop_until(t, &a.calls, 3000));
		assert_int_equal(a.integer, 3);
	}
	{
		const char *argv[] = { "LRANGE", "fg:l", "0", "-1" };
		memset(&a, 0, sizeof(a));
		assert_int_equal(fg_redis_command(t->link, 2000 * MS, 4, argv, NULL, rec_cb, &a), 0);
		assert_true(loop_until(t, &a.calls, 3000));
		assert_int_equal(a.kind, FG_REDIS_R_ARRAY);
		assert_int_equal(a.nelem, 3);
		assert_string_equal(a.elem_str[0], "x");
		assert_string_equal(a.elem_str[2], "z");
	}
	/* Binary-safe arguments. */
	{
		const char *argv[] = { "SET", "fg:bin", "a\0b" };
		size_t lens[] = { 3, 6, 3 };
		memset(&a, 0, sizeof(a));
		assert_int_equal(fg_redis_command(t->link, 2000 * MS, 3, argv, lens, rec_cb, &a), 0);
		assert_true(loop_until(t, &a.calls, 3000));
		cmd_wait(t, &a, "STRLEN", "fg:bin", NULL);
		assert_int_equal(a.integer, 3);
	}
	/* The most arguments a command takes (one reservation, one pass),
	 * and one more. */
	{
		const char *many[FG_REDIS_MAX_ARGS + 1];
		many[0] = "RPUSH";
		many[1] = "fg:many";
		for (int i = 2; i <= FG_REDIS_MAX_ARGS; i++)
			many[i] = i % 2 ? "odd" : "an even value";
		memset(&a, 0, sizeof(a));
		assert_int_equal(fg_redis_command(t->link, 2000 * MS, FG_REDIS_MAX_ARGS, many, NULL, rec_cb, &a), 0);
		assert_true(loop_until(t, &a.calls, 3000));
		assert_int_equal(a.kind, FG_REDIS_R_INT);
		assert_int_equal(a.integer, FG_REDIS_MAX_ARGS - 2);
		cmd_wait(t, &a, "LINDEX", "fg:many", "-1");
		assert_string_equal(a.str, (FG_REDIS_MAX_ARGS - 1) % 2 ? "odd" : "an even value");
		assert_int_equal(fg_redis_command(t->link, 1000, FG_REDIS_MAX_ARGS + 1, many, NULL, rec_cb, &a),
		                 FG_EINVAL);
	}
	assert_int_equal(fg_redis_command(t->link, 1000, 0, NULL, NULL, rec_cb, &a), FG_EINVAL);

	assert_true(fg_redis_get_stats(t->link)->replies >= 10);
	assert_int_equal(latency_count - lat0, fg_redis_get_stats(t->link)->replies);
	assert_true(fg_redis_get_stats(t->link)->errors >= 2);
	assert_int_equal(fg_redis_get_stats(t->link)->inflight, 0);
}

/* A batch larger than the socket takes at once: the rest is written as
 * the socket drains, every command arrives whole, and the link's write
 * buffer (grown past what it keeps) is then given back and grown again. */
static void test_large_batch(void **state)
{
	struct rt *t = *state;
	enum { N = 48, VLEN = 128 * 1024 };     /* 6 MiB a batch; max_inflight is 64 */
	static struct rec r[N];
	char *v = malloc(VLEN);
	char key[32];
	const char *argv[3] = { "SET", key, v };
	size_t lens[3] = { 3, 0, VLEN };

	NEED_REDIS();
	assert_non_null(v);
	connect_default(t);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			memset(v, 'a' + (i + round) % 26, VLEN);
			lens[1] = (size_t)snprintf(key, sizeof(key), "fg:big:%d", i);
			memset(&r[i], 0, sizeof(r[i]));
			assert_int_equal(fg_redis_command(t->link, 5000 * MS, 3, argv, lens, rec_cb, &r[i]), 0);
		}
		assert_true(loop_until(t, &r[N - 1].calls, 5000));
		for (int i = 0; i < N; i++) {
			assert_int_equal(r[i].calls, 1);
			assert_string_equal(r[i].str, "OK");
		}
		cmd_wait(t, &r[0], "STRLEN", "fg:big:47", NULL);
		assert_int_equal(r[0].integer, VLEN);
		cmd_wait(t, &r[0], "GETRANGE", "fg:big:47", "-1");
		assert_int_equal(r[0].kind, FG_REDIS_R_ERROR);  /* wrong arity: the link still answers in order */
		cmd_wait(t, &r[0], "SET", "fg:after", "x");
		assert_string_equal(r[0].str, "OK");
	}
	{
		const char *get[] = { "GETRANGE", "fg:big:47", "131071", "131071" };
		memset(&r[0], 0, sizeof(r[0]));
		assert_int_equal(fg_redis_command(t->link, 2000 * MS, 4, get, NULL, rec_cb, &r[0]), 0);
		assert_true(loop_until(t, &r[0].calls, 3000));
		assert_string_equal(r[0].str, "w");     /* round 1 wrote 'a' + (47 + 1) % 26 */
	}
	assert_int_equal(fg_redis_get_stats(t->link)->drops, 0);
	assert_int_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	free(v);
}

#define SCRIPT "return {ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}"
#define SCRIPT2 "return redis.call('GET', KEYS[1])"

static void run_script(struct rt *t, unsigned id, struct rec *r, const char *key, const char *a1, const char *a2)
{
	const char *argv[] = { key, a1, a2 };
	int argc = a2 ? 3 : a1 ? 2 : 1;

	memset(r, 0, sizeof(*r));
	assert_int_equal(fg_redis_script(t->link, 2000 * MS, id, 1, argc, argv, NULL, rec_cb, r), 0);
	assert_true(loop_until(t, &r->calls, 3000));
	assert_int_equal(r->calls, 1);
}

static void test_script_noscript(void **state)
{
	struct rt *t = *state;
	struct fg_redis_config cfg;
	struct rec a;
	unsigned id, id2, bad;
	const char *argv[] = { "k" };

	NEED_REDIS();
	link_config(t, &cfg);
	t->link = link_new(t, &cfg);
	/* Registered before the first connect: loaded by its handshake. */
	assert_int_equal(fg_redis_script_add(t->link, SCRIPT, strlen(SCRIPT), &id), 0);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));

	/* The local SHA1 is Redis's. */
	cmd_wait(t, &a, "SCRIPT", "LOAD", SCRIPT);
	assert_string_equal(a.str, fg_redis_script_sha(t->link, id));

	run_script(t, id, &a, "fg:{u1}:n", "tag", "7");
	assert_int_equal(a.kind, FG_REDIS_R_ARRAY);
	assert_int_equal(a.nelem, 2);
	assert_string_equal(a.elem_str[0], "tag");
	assert_int_equal(a.elem_kinds[1].kind, FG_REDIS_R_INT);
	assert_int_equal(a.elem_kinds[1].integer, 7);
	assert_int_equal(fg_redis_get_stats(t->link)->noscript_reloads, 0);

	/* Redis forgets every script (as after a restart or failover): the
	 * next call is reloaded and retried without the caller seeing it. */
	cmd_wait(t, &a, "SCRIPT", "FLUSH", NULL);
	run_script(t, id, &a, "fg:{u1}:n", "tag", "3");
	assert_int_equal(a.kind, FG_REDIS_R_ARRAY);
	assert_int_equal(a.elem_kinds[1].integer, 10);
	assert_int_equal(fg_redis_get_stats(t->link)->noscript_reloads, 1);
	run_script(t, id, &a, "fg:{u1}:n", "tag", "1");
	assert_int_equal(a.elem_kinds[1].integer, 11);
	assert_int_equal(fg_redis_get_stats(t->link)->noscript_reloads, 1);

	/* Registered after the connect: its first call meets NOSCRIPT. */
	assert_int_equal(fg_redis_script_add(t->link, SCRIPT2, strlen(SCRIPT2), &id2), 0);
	run_script(t, id2, &a, "fg:{u1}:n", NULL, NULL);
	assert_int_equal(a.kind, FG_REDIS_R_STR);
	assert_string_equal(a.str, "11");
	assert_int_equal(fg_redis_get_stats(t->link)->noscript_reloads, 2);

	/* A script that fails at run time is an error for the caller, once. */
	assert_int_equal(fg_redis_script_add(t->link, "return redis.call('NOPE')", 25, &bad), 0);
	run_script(t, bad, &a, "k", NULL, NULL);
	assert_int_equal(a.kind, FG_REDIS_R_ERROR);

	assert_int_equal(fg_redis_script(t->link, 1000, 99, 0, 0, NULL, NULL, rec_cb, &a), FG_EINVAL);
	assert_int_equal(fg_redis_script(t->link, 1000, id, 2, 1, argv, NULL, rec_cb, &a), FG_EINVAL);
	{
		const char *many[FG_REDIS_MAX_ARGS];
		for (int i = 0; i < FG_REDIS_MAX_ARGS; i++)
			many[i] = "k";
		assert_int_equal(fg_redis_script(t->link, 1000, id, 1, FG_REDIS_MAX_ARGS - 2, many, NULL, rec_cb, &a),
		                 FG_EINVAL);
	}
	assert_int_equal(fg_redis_get_stats(t->link)->inflight, 0);
}

static void test_auth(void **state)
{
	struct rt *t = *state;
	struct fg_redis_config cfg;
	struct fg_redis *good;
	char bad_pw[160];
	struct rec a;

	NEED_REDIS();
	/* The first line is the password; what follows is not part of it. */
	fg_test_write_file(t->dir->file, "s3cret-pw\r\n# rotated 2026-12\n", 27);
	link_config(t, &cfg);
	cfg.password_file = t->dir->file;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));
	cmd_wait(t, &a, "SET", "fg:auth", "1");
	assert_string_equal(a.str, "OK");

	/* A wrong password: never CONNECTED, a clear reason without it. */
	snprintf(bad_pw, sizeof(bad_pw), "%s/bad", t->dir->path);
	fg_test_write_file(bad_pw, "wrong-guess\n", 12);
	cfg.password_file = bad_pw;
	good = t->link;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_DOWN, 2000));
	loop_for(t, 100);
	assert_int_not_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	assert_non_null(strstr(fg_redis_last_error(t->link), "AUTH failed"));
	assert_non_null(strstr(fg_redis_last_error(t->link), "WRONGPASS"));
	assert_null(strstr(fg_redis_last_error(t->link), "wrong-guess"));
	assert_int_equal(cmd(t, &a, 1000, "GET", "fg:auth", NULL), FG_EUNAVAIL);
	assert_true(fg_redis_get_stats(t->link)->connect_failures >= 1);
	fg_redis_free(t->link);

	/* No password at all: the handshake's PING says NOAUTH. */
	cfg.password_file = NULL;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_DOWN, 2000));
	assert_non_null(strstr(fg_redis_last_error(t->link), "NOAUTH"));
	fg_redis_free(t->link);
	t->link = good;
}

/* SELECT on connect, over the unix socket: the key lands in that db only. */
static void test_select_unix(void **state)
{
	struct rt *t = *state;
	struct fg_redis_config cfg;
	struct rec a;
	redisContext *c;
	redisReply *rep;

	NEED_REDIS();
	link_config(t, &cfg);
	cfg.address = t->srv.sock;
	cfg.db = 3;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));
	cmd_wait(t, &a, "SET", "fg:db", "three");

	c = redisConnectUnix(t->srv.sock);
	assert_true(c && !c->err);
	rep = redisCommand(c, "GET fg:db");
	assert_int_equal(rep->type, REDIS_REPLY_NIL);
	freeReplyObject(rep);
	freeReplyObject(redisCommand(c, "SELECT 3"));
	rep = redisCommand(c, "GET fg:db");
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "three");
	freeReplyObject(rep);
	redisFree(c);

	/* A database that does not exist fails the handshake. */
	fg_redis_free(t->link);
	cfg.db = 100000;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_DOWN, 2000));
	assert_non_null(strstr(fg_redis_last_error(t->link), "SELECT failed"));
}

/* Redis paused: the caller gets TIMEOUT on time; a late reply is dropped;
 * a longer pause drops the link; after SIGCONT it comes back. */
static void test_timeout_sigstop(void **state)
{
	struct rt *t = *state;
	struct rec a, b;
	uint64_t t0, replies;
	int64_t slack = 150 * MS * time_factor;

	NEED_REDIS();
	connect_default(t);

	kill(t->srv.pid, SIGSTOP);
	t0 = fg_clock_now_us();
	assert_int_equal(cmd(t, &a, CMD_TIMEOUT, "SET", "fg:late", "1"), 0);
	assert_true(loop_until(t, &a.calls, 2000));
	assert_int_equal(a.kind, FG_REDIS_R_TIMEOUT);
	assert_true(a.at_us - t0 >= CMD_TIMEOUT);
	assert_true((int64_t)(a.at_us - t0) <= CMD_TIMEOUT + slack);
	assert_int_equal(fg_redis_get_stats(t->link)->timeouts, 1);

	/* Resumed before the stall timeout: the late reply is read, not
	 * handed to anyone, and the link stays. */
	replies = fg_redis_get_stats(t->link)->replies;
	kill(t->srv.pid, SIGCONT);
	loop_for(t, 100);
	assert_int_equal(a.calls, 1);
	assert_int_equal(fg_redis_get_stats(t->link)->replies, replies + 1);
	assert_int_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	cmd_wait(t, &b, "GET", "fg:late", NULL);
	assert_string_equal(b.str, "1");

	/* A long pause: timeout, then the link is dropped at the stall
	 * timeout and new commands fail at once. */
	kill(t->srv.pid, SIGSTOP);
	assert_int_equal(cmd(t, &a, CMD_TIMEOUT, "GET", "fg:late", NULL), 0);
	assert_int_equal(cmd(t, &b, 5000 * MS, "GET", "fg:late", NULL), 0);
	assert_true(loop_until(t, &a.calls, 2000));
	assert_int_equal(a.kind, FG_REDIS_R_TIMEOUT);
	assert_true(wait_state(t, FG_REDIS_DOWN, 2000));
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.kind, FG_REDIS_R_DOWN);
	assert_int_equal(fg_redis_get_stats(t->link)->drops, 1);
	t0 = fg_clock_now_us();
	assert_int_equal(cmd(t, &b, CMD_TIMEOUT, "GET", "fg:late", NULL), FG_EUNAVAIL);
	assert_true(fg_clock_now_us() - t0 < 10 * MS * (uint64_t)time_factor);

	/* Reconnects to a paused Redis time out in their handshake. */
	loop_for(t, 500);
	assert_int_not_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	kill(t->srv.pid, SIGCONT);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 3000));
	cmd_wait(t, &b, "GET", "fg:late", NULL);
	assert_string_equal(b.str, "1");
	assert_int_equal(a.calls, 1);
	assert_true(fg_redis_get_stats(t->link)->reconnects >= 1);
}

/* One timer serves the link: a short timeout submitted after a long one
 * still fires on time, each caller gets its own, and the long one is
 * answered when Redis comes back before the stall deadline. */
static void test_timeouts_out_of_order(void **state)
{
	struct rt *t = *state;
	struct rec longer, shorter, later;
	uint64_t t0;
	int64_t slack = 150 * MS * time_factor;

	NEED_REDIS();
	connect_default(t);

	kill(t->srv.pid, SIGSTOP);
	t0 = fg_clock_now_us();
	assert_int_equal(cmd(t, &longer, 250 * MS, "SET", "fg:order", "1"), 0);
	assert_int_equal(cmd(t, &shorter, 30 * MS, "GET", "fg:order", NULL), 0);
	assert_true(loop_until(t, &shorter.calls, 2000));
	assert_int_equal(shorter.kind, FG_REDIS_R_TIMEOUT);
	assert_true(shorter.at_us - t0 >= 30 * MS);
	assert_true((int64_t)(shorter.at_us - t0) <= 30 * MS + slack);
	assert_int_equal(longer.calls, 0);

	/* Submitted after the first timeout fired: armed again for it.  The
	 * clock is read before the submit, which takes it too: read after,
	 * a slow run (valgrind) saw the timeout up to the submit's own time
	 * early. */
	t0 = fg_clock_now_us();
	assert_int_equal(cmd(t, &later, 40 * MS, "GET", "fg:order", NULL), 0);
	assert_true(loop_until(t, &later.calls, 2000));
	assert_int_equal(later.kind, FG_REDIS_R_TIMEOUT);
	assert_true(later.at_us - t0 >= 40 * MS);
	assert_int_equal(longer.calls, 0);

	kill(t->srv.pid, SIGCONT);
	assert_true(loop_until(t, &longer.calls, 2000));
	assert_int_equal(longer.kind, FG_REDIS_R_STR);
	assert_string_equal(longer.str, "OK");
	assert_int_equal(shorter.calls, 1);
	assert_int_equal(later.calls, 1);
	assert_int_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	assert_int_equal(fg_redis_get_stats(t->link)->timeouts, 2);
	assert_int_equal(fg_redis_get_stats(t->link)->drops, 0);
}

static int state_changes[3];

static void state_cb(void *arg, enum fg_redis_state st, const char *why)
{
	state_changes[st]++;
	if (st == FG_REDIS_DOWN)
		assert_non_null(why);
}

/* Redis killed: DOWN at once, fast failures, backoff between attempts,
 * and back on the same port after a restart. */
static void test_kill_restart(void **state)
{
	struct rt *t = *state;
	struct fg_redis_config cfg;
	struct rec a;
	uint64_t t0, connects;

	NEED_REDIS();
	memset(state_changes, 0, sizeof(state_changes));
	link_config(t, &cfg);
	cfg.on_state = state_cb;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));
	assert_int_equal(state_changes[FG_REDIS_CONNECTED], 1);

	assert_int_equal(cmd(t, &a, 5000 * MS, "BLPOP", "fg:never", "10"), 0);
	loop_for(t, 20);
	t0 = fg_clock_now_us();
	server_kill(t);
	assert_true(loop_until(t, &a.calls, 1000));
	assert_int_equal(a.kind, FG_REDIS_R_DOWN);
	assert_true(fg_clock_now_us() - t0 < 100 * MS * (uint64_t)time_factor);
	assert_int_not_equal(fg_redis_get_state(t->link), FG_REDIS_CONNECTED);
	assert_int_equal(state_changes[FG_REDIS_DOWN], 1);

	/* While it is gone: refused at once, and few connect attempts. */
	connects = fg_redis_get_stats(t->link)->connects;
	t0 = fg_clock_now_us();
	while (fg_clock_now_us() - t0 < 800 * MS) {
		int rc = cmd(t, &a, CMD_TIMEOUT, "GET", "x", NULL);
		assert_int_equal(rc, FG_EUNAVAIL);
		event_base_loop(t->base, EVLOOP_ONCE);
	}
	connects = fg_redis_get_stats(t->link)->connects - connects;
	/* 20ms doubling to 200ms, each wait in [b/2, b]: about 4 to 9 attempts
	 * in 800ms; without backoff it would be hundreds. */
	assert_true(connects >= 3);
	assert_true(connects <= 12);
	assert_true(fg_redis_get_stats(t->link)->connect_failures >= 3);
	assert_true(fg_redis_get_stats(t->link)->unavailable > 0);

	server_start(t);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 1000));
	cmd_wait(t, &a, "SET", "fg:back", "yes");
	assert_string_equal(a.str, "OK");
	cmd_wait(t, &a, "GET", "fg:back", NULL);
	assert_string_equal(a.str, "yes");
	assert_int_equal(state_changes[FG_REDIS_CONNECTED], 2);
}

static void test_inflight_bound(void **state)
{
	struct rt *t = *state;
	struct fg_redis_config cfg;
	struct rec r[5];

	NEED_REDIS();
	link_config(t, &cfg);
	cfg.max_inflight = 4;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 2000));

	for (int i = 0; i < 4; i++)
		assert_int_equal(cmd(t, &r[i], 2000 * MS, "PING", NULL, NULL), 0);
	assert_int_equal(cmd(t, &r[4], 2000 * MS, "PING", NULL, NULL), FG_EBUSY);
	assert_int_equal(fg_redis_get_stats(t->link)->busy, 1);
	assert_int_equal(fg_redis_get_stats(t->link)->inflight, 4);
	assert_true(loop_until(t, &r[3].calls, 2000));
	for (int i = 0; i < 4; i++)
		assert_int_equal(r[i].calls, 1);
	assert_int_equal(r[4].calls, 0);

	/* Timed-out commands still hold their slot until Redis answers. */
	kill(t->srv.pid, SIGSTOP);
	for (int i = 0; i < 4; i++)
		assert_int_equal(cmd(t, &r[i], 20 * MS, "PING", NULL, NULL), 0);
	assert_true(loop_until(t, &r[3].calls, 1000));
	assert_int_equal(r[3].kind, FG_REDIS_R_TIMEOUT);
	assert_int_equal(cmd(t, &r[4], 20 * MS, "PING", NULL, NULL), FG_EBUSY);
	kill(t->srv.pid, SIGCONT);
	loop_for(t, 100);
	assert_int_equal(fg_redis_get_stats(t->link)->inflight, 0);
	cmd_wait(t, &r[4], "PING", NULL, NULL);
	assert_string_equal(r[4].str, "PONG");
}

/* Freeing a link with commands waiting: each callback once, with DOWN. */
static void test_free_pending(void **state)
{
	struct rt *t = *state;
	struct rec r[6];
	unsigned id;
	const char *argv[] = { "fg:{u}:n", "1" };

	NEED_REDIS();
	connect_default(t);
	assert_int_equal(fg_redis_script_add(t->link, SCRIPT, strlen(SCRIPT), &id), 0);

	/* Written, not yet answered. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(cmd(t, &r[i], 2000 * MS, "INCR", "fg:f", NULL), 0);
	memset(&r[3], 0, sizeof(r[3]));
	assert_int_equal(fg_redis_script(t->link, 2000 * MS, id, 1, 2, argv, NULL, rec_cb, &r[3]), 0);
	fg_redis_free(t->link);
	t->link = NULL;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].kind, FG_REDIS_R_DOWN);
		assert_non_null(strstr(r[i].str, "freed"));
	}

	/* Some timed out already (paused Redis), some still waiting. */
	connect_default(t);
	kill(t->srv.pid, SIGSTOP);
	assert_int_equal(cmd(t, &r[0], 20 * MS, "INCR", "fg:f", NULL), 0);
	assert_int_equal(cmd(t, &r[1], 20 * MS, "INCR", "fg:f", NULL), 0);
	assert_int_equal(cmd(t, &r[4], 5000 * MS, "INCR", "fg:f", NULL), 0);
	assert_int_equal(cmd(t, &r[5], 5000 * MS, "INCR", "fg:f", NULL), 0);
	assert_true(loop_until(t, &r[1].calls, 1000));
	fg_redis_free(t->link);
	t->link = NULL;
	kill(t->srv.pid, SIGCONT);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[0].kind, FG_REDIS_R_TIMEOUT);
	assert_int_equal(r[1].calls, 1);
	assert_int_equal(r[4].calls, 1);
	assert_int_equal(r[4].kind, FG_REDIS_R_DOWN);
	assert_int_equal(r[5].calls, 1);
	loop_for(t, 50);
	assert_int_equal(r[0].calls, 1);
	assert_int_equal(r[5].calls, 1);
}

/* ---- a Redis of the test's own: its socket shows when bytes arrive ---- */

struct fake {
	int lfd;                        /* listening */
	int fd;                         /* the link's connection, -1 before accept */
	struct event *lev, *rev, *wev;
	char got[4096];                 /* what came after the handshake */
	size_t ngot;
	int connected;
	struct rt *t;
	/* the answer to the first command, when set: <answer>, then <fill>
	 * repeated as the socket takes it, <fill_left> bytes in all */
	const char *answer;
	const char *fill;
	size_t fill_len, fill_left;
	int answered;
	/* the pass test */
	struct event *submit_ev, *after_ev;
	struct rec r;
	ssize_t seen_by_after;          /* bytes the server could read when <after_ev> ran */
	int after_ran;
};

static void fake_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;
	char buf[65536];
	size_t n = 0;
	ssize_t w;

	while (n + f->fill_len <= sizeof(buf) && n < f->fill_left) {
		memcpy(buf + n, f->fill, f->fill_len);
		n += f->fill_len;
	}
	if (n > f->fill_left)
		n = f->fill_left;
	w = write(fd, buf, n);
	if (w > 0)
		f->fill_left -= (size_t)w;
	if (w <= 0 && errno != EAGAIN)
		f->fill_left = 0;
	if (f->fill_left == 0)
		event_del(f->wev);
}

static void fake_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n <= 0)
		return;
	if (!f->connected && memmem(buf, (size_t)n, "PING", 4)) {
		/* the handshake of a link with no password, database or script */
		assert_int_equal(write(fd, "+PONG\r\n", 7), 7);
		f->connected = 1;
		return;
	}
	if (f->ngot + (size_t)n <= sizeof(f->got)) {
		memcpy(f->got + f->ngot, buf, (size_t)n);
		f->ngot += (size_t)n;
	}
	if (f->answer && !f->answered) {
		f->answered = 1;
		assert_int_equal(write(fd, f->answer, strlen(f->answer)), (ssize_t)strlen(f->answer));
		if (f->fill_left)
			event_add(f->wev, NULL);
	}
}

static void fake_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct fake *f = arg;

	f->fd = accept(lfd, NULL, NULL);
	assert_true(f->fd >= 0);
	evutil_make_socket_nonblocking(f->fd);
	f->rev = event_new(f->t->base, f->fd, EV_READ | EV_PERSIST, fake_read_cb, f);
	f->wev = event_new(f->t->base, f->fd, EV_WRITE | EV_PERSIST, fake_write_cb, f);
	event_add(f->rev, NULL);
}

/* A loop, the fake listening, and a link to it (stall timeout
 * <stall_ms>) once connected. */
static void fake_start(struct rt *t, struct fake *f, int stall_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	struct fg_redis_config cfg;
	char addr[64];

	f->fd = -1;
	f->t = t;
	t->base = event_base_new();
	t->tick = event_new(t->base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(t->tick, &(struct timeval){ 0, 5000 });
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &salen), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	f->lev = event_new(t->base, f->lfd, EV_READ | EV_PERSIST, fake_accept_cb, f);
	event_add(f->lev, NULL);
	memset(&cfg, 0, sizeof(cfg));
	cfg.address = addr;
	cfg.connect_timeout_us = 2000 * MS;
	cfg.stall_timeout_us = (int64_t)stall_ms * MS;
	cfg.backoff_initial_us = 20 * MS;
	cfg.backoff_max_us = 200 * MS;
	cfg.max_inflight = 64;
	t->link = link_new(t, &cfg);
	assert_true(wait_state(t, FG_REDIS_CONNECTED, 3000));
}

static void fake_stop(struct rt *t, struct fake *f)
{
	fg_redis_free(t->link);
	if (f->submit_ev)
		event_free(f->submit_ev);
	if (f->after_ev)
		event_free(f->after_ev);
	if (f->rev)
		event_free(f->rev);
	if (f->wev)
		event_free(f->wev);
	event_free(f->lev);
	if (f->fd >= 0)
		close(f->fd);
	close(f->lfd);
	event_free(t->tick);
	event_base_free(t->base);
}

/* What a stage does on a call: submit the state check, then hand the
 * call's request to another connection (here: an event activated after
 * the submit, in the same loop pass). */
static void fake_submit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;

	assert_int_equal(cmd(f->t, &f->r, 2000 * MS, "GET", "fg:k", NULL), 0);
	event_active(f->after_ev, 0, 0);
}

static void fake_after_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fake *f = arg;
	char buf[64];

	f->seen_by_after = recv(f->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	f->after_ran = 1;
}

/*
 * A command submitted in a callback is written after the events that
 * callback (or those before it in the pass) activated, still in the same
 * loop iteration: the state check of a call goes out after the call's
 * request to the ranker, not one write system call ahead of it (with
 * Redis on the proxy's core it even ran the check before the ranker got
 * the request).
 */
static void test_write_after_queued_events(void **state)
{
	struct rt t0 = { 0 }, *t = &t0;
	struct fake f = { 0 };
	int has_get = 0;

	fake_start(t, &f, 2000);
	f.submit_ev = event_new(t->base, -1, 0, fake_submit_cb, &f);
	f.after_ev = event_new(t->base, -1, 0, fake_after_cb, &f);
	event_active(f.submit_ev, 0, 0);
	assert_true(loop_until(t, &f.after_ran, 3000));
	assert_true(f.seen_by_after < 0);       /* nothing written yet when the later event ran */
	assert_int_equal(errno, EAGAIN);
	/* ... and the command still went out in that iteration */
	for (int i = 0; i < 200 && !has_get; i++) {
		event_base_loop(t->base, EVLOOP_ONCE);
		has_get = memmem(f.got, f.ngot, "GET", 3) != NULL;
	}
	assert_true(has_get);
	fake_stop(t, &f);
}

/*
 * A server that answers with more than any reply feedguard asks for (a
 * 1 GB string it goes on sending, a 100-million element array) has the
 * link dropped at once: the command gets DOWN well before the stall
 * timeout (5 s here), and the link holds at most about 1 MiB meanwhile.
 * Before, the string was read until the stall timeout (944 MB held with a
 * 3 s one), and the array header alone allocated 800 MB of pointers.
 */
static void oversized_reply(const char *answer, const char *fill)
{
	struct rt t0 = { 0 }, *t = &t0;
	struct fake f = { 0 };
	struct rec r;
	uint64_t t_sent;

	f.answer = answer;
	f.fill = fill;
	f.fill_len = strlen(fill);
	f.fill_left = 64u << 20;
	fake_start(t, &f, 5000);
	t_sent = fg_clock_now_us();
	assert_int_equal(cmd(t, &r, 10000 * MS, "GET", "fg:k", NULL), 0);
	assert_true(loop_until(t, &r.calls, 3000));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.kind, FG_REDIS_R_DOWN);
	assert_true(r.at_us - t_sent < 3000 * MS * (uint64_t)time_factor);
	fake_stop(t, &f);
}

static void test_oversized_string_drops_the_link(void **state)
{
	oversized_reply("$1000000000\r\n", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
}

static void test_oversized_array_drops_the_link(void **state)
{
	oversized_reply("*100000000\r\n", ":1\r\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address),
		cmocka_unit_test_setup_teardown(test_get_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_script_noscript, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth, setup_auth, teardown),
		cmocka_unit_test_setup_teardown(test_select_unix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_sigstop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeouts_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
		cmocka_unit_test(test_write_after_queued_events),
		cmocka_unit_test(test_oversized_string_drops_the_link),
		cmocka_unit_test(test_oversized_array_drops_the_link),
	};
	const char *tf = getenv("FG_TIME_FACTOR");

	if (tf && atoi(tf) > 0)
		time_factor = atoi(tf);
	signal(SIGPIPE, SIG_IGN);
	if (!fg_redisserver_find(redis_server, sizeof(redis_server)))
		fprintf(stderr, "test_redis: redis-server not found on PATH: the tests that need it are skipped "
		                "(Debian: redis-server)\n");
	return cmocka_run_group_tests_name("redis", tests, NULL, NULL);
}
