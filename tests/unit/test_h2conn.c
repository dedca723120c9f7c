/*
 * test_h2conn.c - the socket pump's output, through fg_h2conn.h: bytes of a
 * read lent to another connection's output (fg_h2conn_out_borrow) reach
 * the socket in order, whole, and never from the lender's buffer once its
 * scope has ended (what the kernel did not take is copied).
 *
 * Each case runs a real connection on one end of a socketpair with an
 * nghttp2 server session that has nothing to send, so every byte the peer
 * reads is one the test put in the output.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "fg_error.h"
#include "fg_h2conn.h"

struct fixture {
	struct event_base *base;
	struct fg_h2conn_scope scope;
	struct fg_h2conn c;
	int peer;                   /* the other end: the test reads what <c> wrote */
	int closed;                 /* on_close was called */
	int close_err;
};

static void on_close(void *owner, int err, const char *why)
{
	struct fixture *f = owner;

	(void)why;
	f->closed++;
	f->close_err = err;
}

/* A connection whose socket takes at most about <sndbuf> bytes at a time
 * (0: the system's default) until the peer reads. */
static void open_conn(struct fixture *f, struct fg_h2conn *c, int *peer, int sndbuf)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_session *session;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (sndbuf > 0) {
		assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
		assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf)), 0);
	}
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	assert_int_equal(nghttp2_session_server_new(&session, cbs, NULL), 0);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(fg_h2conn_init(c, f->base, sv[0], session, &f->scope, on_close, f), 0);
	*peer = sv[1];
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	open_conn(f, &f->c, &f->peer, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	fg_h2conn_cleanup(&f->c);
	close(f->peer);
	event_base_free(f->base);
	fg_h2conn_scope_free(&f->scope);
	free(f);
	return 0;
}

/* Everything the peer can read now, appended to <got> (<have> so far). */
static size_t drain(int fd, uint8_t *got, size_t have, size_t cap)
{
	ssize_t n;

	while (have < cap && (n = read(fd, got + have, cap - have)) > 0)
		have += (size_t)n;
	return have;
}

/* Run <base> and read <fd> until <want> bytes came or nothing moves. */
static size_t pump_until(struct event_base *base, int fd, uint8_t *got, size_t want)
{
	size_t have = 0, before;
	int idle = 0;

	while (have < want && idle < 1000) {
		before = have;
		event_base_loop(base, EVLOOP_NONBLOCK);
		have = drain(fd, got, have, want + 1);
		idle = have == before ? idle + 1 : 0;
		if (have == before)
			usleep(1000);
	}
	return drain(fd, got, have, want + 1);
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

/* Own bytes and borrowed pieces, interleaved, go out in order in the
 * scope's end, and nothing is left waiting. */
static void test_h2conn_borrowed_pieces_written_in_order(void **state)
{
	struct fixture *f = *state;
	uint8_t a[1000], b[500], want[4 + 1000 + 4 + 500], got[sizeof(want) + 1];

	fill_pattern(a, sizeof(a), 1);
	fill_pattern(b, sizeof(b), 2);
	memcpy(want, "hdr1", 4);
	memcpy(want + 4, a, sizeof(a));
	memcpy(want + 4 + sizeof(a), "hdr2", 4);
	memcpy(want + 8 + sizeof(a), b, sizeof(b));

	fg_h2conn_scope_begin(&f->scope);
	assert_true(fg_h2conn_can_borrow(&f->c));
	assert_int_equal(fg_h2conn_out_append(&f->c, "hdr1", 4), 0);
	assert_int_equal(fg_h2conn_out_borrow(&f->c, a, sizeof(a)), 0);
	assert_int_equal(fg_h2conn_out_append(&f->c, "hdr2", 4), 0);
	assert_int_equal(fg_h2conn_out_borrow(&f->c, b, sizeof(b)), 0);
	assert_int_equal(fg_h2conn_out_len(&f->c), sizeof(want));
	fg_h2conn_scope_end(&f->scope);

	/* written before the scope ended: the lender may reuse its buffers */
	memset(a, 0xee, sizeof(a));
	memset(b, 0xee, sizeof(b));
	assert_int_equal(fg_h2conn_pending_out(&f->c), 0);
	assert_int_equal(drain(f->peer, got, 0, sizeof(got)), sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
	assert_null(f->scope.lent);
}

/* A socket that takes only part: the rest of the borrowed bytes is copied
 * before the scope ends, so scribbling over the lender's buffer afterwards
 * changes nothing the peer gets. */
static void test_h2conn_unwritten_borrowed_bytes_are_copied(void **state)
{
	struct fixture *f = *state;
	const size_t n = 256 * 1024;
	uint8_t *lent = malloc(n), *want = malloc(n + 9), *got = malloc(n + 10);
	size_t have;

	assert_non_null(lent);
	assert_non_null(want);
	assert_non_null(got);
	fg_h2conn_cleanup(&f->c);
	close(f->peer);
	open_conn(f, &f->c, &f->peer, 4096);
	fill_pattern(lent, n, 3);
	memcpy(want, "framehdr!", 9);
	memcpy(want + 9, lent, n);

	fg_h2conn_scope_begin(&f->scope);
	assert_int_equal(fg_h2conn_out_append(&f->c, "framehdr!", 9), 0);
	assert_int_equal(fg_h2conn_out_borrow(&f->c, lent, n), 0);
	fg_h2conn_scope_end(&f->scope);

	assert_true(fg_h2conn_pending_out(&f->c) > 0);  /* the socket did not take it all */
	assert_true(fg_h2conn_pending_out(&f->c) < n + 9);
	memset(lent, 0xee, n);
	have = pump_until(f->base, f->peer, got, n + 9);
	assert_int_equal(have, n + 9);
	assert_memory_equal(got, want, n + 9);
	assert_int_equal(fg_h2conn_pending_out(&f->c), 0);
	free(lent);
	free(want);
	free(got);
}

/* More pieces than a connection keeps references for: the rest are copied
 * at once, and the order still holds. */
static void test_h2conn_pieces_past_the_limit_are_copied(void **state)
{
	struct fixture *f = *state;
	enum { PIECES = 3 * FG_H2CONN_BORROW_MAX, LEN = 100 };
	uint8_t lent[PIECES][LEN], want[PIECES * (LEN + 1)], got[sizeof(want) + 1];
	size_t i;

	fg_h2conn_scope_begin(&f->scope);
	for (i = 0; i < PIECES; i++) {
		uint8_t tag = (uint8_t)('A' + i % 26);

		fill_pattern(lent[i], LEN, (unsigned)i);
		want[i * (LEN + 1)] = tag;
		memcpy(want + i * (LEN + 1) + 1, lent[i], LEN);
		assert_int_equal(fg_h2conn_out_append(&f->c, &tag, 1), 0);
		assert_int_equal(fg_h2conn_out_borrow(&f->c, lent[i], LEN), 0);
	}
	assert_false(fg_h2conn_can_borrow(&f->c));
	fg_h2conn_scope_end(&f->scope);
	memset(lent, 0xee, sizeof(lent));
	assert_int_equal(drain(f->peer, got, 0, sizeof(got)), sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
}

/* An output that holds FG_H2CONN_BORROW_HIGH bytes borrows no more: what
 * one connection can be made to copy at a read's end is bounded. */
static void test_h2conn_borrowing_stops_at_the_mark(void **state)
{
	struct fixture *f = *state;
	const size_t piece = 16384, n = FG_H2CONN_BORROW_HIGH / piece;
	uint8_t *lent = malloc(FG_H2CONN_BORROW_HIGH);
	size_t i;

	assert_non_null(lent);
	fill_pattern(lent, FG_H2CONN_BORROW_HIGH, 6);
	fg_h2conn_scope_begin(&f->scope);
	for (i = 0; i < n; i++) {
		assert_true(fg_h2conn_can_borrow(&f->c));
		assert_int_equal(fg_h2conn_out_borrow(&f->c, lent + i * piece, piece), 0);
	}
	assert_int_equal(fg_h2conn_out_len(&f->c), FG_H2CONN_BORROW_HIGH);
	assert_false(fg_h2conn_can_borrow(&f->c));
	fg_h2conn_scope_end(&f->scope);
	free(lent);
}

/* Outside a read's scope nothing can be borrowed: the bytes are copied. */
static void test_h2conn_borrow_outside_a_scope_copies(void **state)
{
	struct fixture *f = *state;
	uint8_t lent[300], want[300], got[301];

	fill_pattern(lent, sizeof(lent), 9);
	memcpy(want, lent, sizeof(want));
	assert_false(fg_h2conn_can_borrow(&f->c));
	assert_int_equal(fg_h2conn_out_borrow(&f->c, lent, sizeof(lent)), 0);
	memset(lent, 0xee, sizeof(lent));
	fg_h2conn_want_flush(&f->c);
	assert_int_equal(pump_until(f->base, f->peer, got, sizeof(want)), sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
}

/* A connection that is ending writes nothing more: its borrowed pieces
 * are forgotten at the scope's end, and its owner hears of the end. */
static void test_h2conn_closing_connection_drops_borrowed(void **state)
{
	struct fixture *f = *state;
	uint8_t lent[200], got[16];

	fill_pattern(lent, sizeof(lent), 4);
	fg_h2conn_scope_begin(&f->scope);
	assert_int_equal(fg_h2conn_out_borrow(&f->c, lent, sizeof(lent)), 0);
	fg_h2conn_fail(&f->c, FG_EIO, "test");
	assert_false(fg_h2conn_can_borrow(&f->c));
	fg_h2conn_scope_end(&f->scope);
	assert_null(f->scope.lent);
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(f->closed, 1);
	assert_int_equal(f->close_err, FG_EIO);
	assert_int_equal(read(f->peer, got, sizeof(got)), -1);
	assert_int_equal(errno, EAGAIN);
}

/* A borrowing connection freed before the scope ends leaves the scope's
 * list; the other borrower is still written. */
static void test_h2conn_cleanup_leaves_the_scope(void **state)
{
	struct fixture *f = *state;
	struct fg_h2conn other;
	int other_peer;
	uint8_t lent[400], got[401];

	fill_pattern(lent, sizeof(lent), 5);
	open_conn(f, &other, &other_peer, 0);
	fg_h2conn_scope_begin(&f->scope);
	assert_int_equal(fg_h2conn_out_borrow(&f->c, lent, sizeof(lent)), 0);
	assert_int_equal(fg_h2conn_out_borrow(&other, lent, sizeof(lent)), 0);
	fg_h2conn_cleanup(&other);
	fg_h2conn_scope_end(&f->scope);
	assert_null(f->scope.lent);
	assert_int_equal(drain(f->peer, got, 0, sizeof(got)), sizeof(lent));
	assert_memory_equal(got, lent, sizeof(lent));
	close(other_peer);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_h2conn_borrowed_pieces_written_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_unwritten_borrowed_bytes_are_copied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_pieces_past_the_limit_are_copied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_borrowing_stops_at_the_mark, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_borrow_outside_a_scope_copies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_closing_connection_drops_borrowed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_h2conn_cleanup_leaves_the_scope, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
