/*
 * fg_h2conn.h - the socket pump under every HTTP/2 connection, client side
 * or upstream side: bytes from the socket go into nghttp2, frames nghttp2
 * wants to send go out in as few writes as possible.
 *
 * Batching: anything that makes a session want to send (a submit, a
 * consume, a resume) calls fg_h2conn_want_flush(), which only activates an
 * event.  The flush runs once, after the loop has dispatched the rest of
 * this round's I/O, and writes everything nghttp2 produced in one writev.
 *
 * Backpressure: when the kernel will not take more, the flush stops asking
 * nghttp2 for frames.  DATA then stays in the per-call buffers, no window is
 * returned to the other side, and the peer that sends too fast is stopped
 * by HTTP/2 flow control, not by our memory.
 *
 * Write timeout: an owner that sets <write_timeout> has the connection
 * ended when the socket takes no byte for that long while output waits (a
 * peer that stopped reading must not pin its buffers forever).
 *
 * The owner embeds struct fg_h2conn and is told through <on_close> when the
 * connection has to end; it then calls fg_h2conn_cleanup() and frees itself.
 * <on_close> is only ever called from this module's own event callbacks,
 * never from inside an nghttp2 callback, so the owner may free the session.
 * Loop thread only.
 */
#ifndef FG_H2CONN_H
#define FG_H2CONN_H

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "fg_bufq.h"

/* Stop asking nghttp2 for frames once this much waits for the socket: the
 * kernel's send buffer is the real queue, ours only batches into it.  DATA
 * frames an owner appends itself (NGHTTP2_DATA_FLAG_NO_COPY) wait too
 * (NGHTTP2_ERR_WOULDBLOCK) once the output holds this much. */
#define FG_H2CONN_OUT_HIGH 65536

/*
 * Borrowed output.  A pass-through DATA frame whose bytes arrived in the
 * read that is under way on another connection of the same worker is
 * written from that read's buffer, not copied into this connection's
 * output first: fg_h2conn_out_borrow() appends a reference to them.  The
 * bytes are valid only until the read's nghttp2_session_mem_recv()
 * returns, so the reading connection then flushes every connection that
 * borrowed (fg_h2conn_scope): one writev(2) from the read buffer, and
 * whatever the kernel did not take is copied into the output, as if it had
 * never been borrowed.  In the common case the payload crosses user space
 * with no copy at all: read(2) into the buffer, writev(2) out of it.
 *
 * Borrowed bytes do not count toward the high mark (they are not this
 * connection's memory until its socket refuses them), but an output stops
 * borrowing once it holds FG_H2CONN_BORROW_HIGH bytes in all, its own and
 * borrowed: then the frame waits (its bytes are queued as before).  So an
 * output holds at most FG_H2CONN_BORROW_HIGH plus one DATA frame, whatever
 * its socket does, and one read of a worker makes its connections copy at
 * most the read (256 KiB) between them.  At most this many borrowed pieces
 * wait in one connection's output (a DATA frame each: six 40 KiB responses
 * of one read are 18): more are copied.
 */
#define FG_H2CONN_BORROW_MAX 64
#define FG_H2CONN_BORROW_HIGH (2 * FG_H2CONN_OUT_HIGH)

/*
 * fg_h2conn_scope - one per worker, shared by all its connections: which
 * connections hold borrowed bytes, and whether a read's bytes are in
 * nghttp2 right now (only then may anything be borrowed).  All zeroes is
 * ready to use.
 */
struct fg_h2conn_scope {
	struct fg_h2conn *lent;         /* connections whose output borrows, linked by <lent_next> */
	unsigned reading;               /* a read's buffer is being parsed: borrowing is allowed */
	uint8_t *read_buf;              /* the connections' read buffer (256 KiB, allocated at the first
	                                   read; reads never nest), freed by fg_h2conn_scope_free() */
};

/* fg_h2conn_scope_free - release <scope>'s memory, once none of its
 * connections is left. */
void fg_h2conn_scope_free(struct fg_h2conn_scope *scope);

/*
 * fg_h2conn_scope_begin / fg_h2conn_scope_end - a read's bytes are about to
 * be parsed / have been parsed.  The end writes every connection that
 * borrowed from them (and copies what the kernel did not take), so that
 * nothing refers to the buffer afterwards.  The connections' read events
 * call these around nghttp2_session_mem_recv(); tests call them to lend
 * bytes of their own.  Not nested.
 */
void fg_h2conn_scope_begin(struct fg_h2conn_scope *scope);
void fg_h2conn_scope_end(struct fg_h2conn_scope *scope);

/* One borrowed piece of output: <len> bytes at <p>, written after the
 * output's first <at> bytes of its own (and the pieces before it). */
struct fg_h2conn_borrow {
	size_t at;
	const uint8_t *p;
	size_t len;
};

/* fg_h2conn_close_cb - the connection ended.  <err> is 0 for an orderly end
 * (both sides done, or the peer closed after GOAWAY), otherwise FG_EIO,
 * FG_EPROTO or FG_ETIMEOUT (the write timeout); <why> is a static or errno
 * text for logs. */
typedef void (*fg_h2conn_close_cb)(void *owner, int err, const char *why);

struct fg_h2conn {
	int fd;                         /* connected, non-blocking; closed by cleanup */
	nghttp2_session *session;       /* owned: deleted by cleanup */
	struct event *rev;              /* persistent EV_READ on <fd> */
	struct event *wev;              /* EV_WRITE, added only while <out> is stuck */
	struct event *flush_ev;         /* no fd: activated to run one batched flush */
	struct fg_bufq out;             /* bytes nghttp2 produced that the kernel has not taken */
	struct fg_h2conn_borrow *borrowed; /* FG_H2CONN_BORROW_MAX pieces of <out> that live in a read
	                                   buffer, allocated with <out>'s memory; <nborrowed> in use */
	unsigned nborrowed;
	size_t borrowed_len;            /* their bytes: part of the output's length */
	struct fg_h2conn_scope *scope;  /* the worker's, or NULL: this connection never borrows */
	struct fg_h2conn *lent_next;    /* on <scope>'s list while <nborrowed> is not 0 */
	const unsigned *nstreams;       /* the owner's count of open streams, or NULL: while it is 0
	                                   the output buffer's memory is released after each flush,
	                                   so idle connections cost no buffer */
	struct timeval write_timeout;   /* {0, 0}: none; else a socket that takes no byte for this long
	                                   while output waits ends the connection (FG_ETIMEOUT);
	                                   set with fg_h2conn_set_write_timeout() */
	int outq_at_wait;               /* the socket's unacknowledged bytes when the wait began (SIOCOUTQ) */
	fg_h2conn_close_cb on_close;
	void *owner;
	unsigned closing;               /* on_close is scheduled; ignore further I/O */
	const char *close_why;          /* reason kept for the deferred on_close */
	int close_err;
};

/*
 * fg_h2conn_init - set up the pump on <fd> (taken: closed by cleanup even
 * when init fails) for <session> (taken).  Reading starts at once.
 * <scope> (borrowed, outlives <c>; NULL: no borrowing) is the worker's.
 * Returns 0 or FG_ENOMEM.
 */
int fg_h2conn_init(struct fg_h2conn *c, struct event_base *base, int fd, nghttp2_session *session,
                   struct fg_h2conn_scope *scope, fg_h2conn_close_cb on_close, void *owner);

/*
 * fg_h2conn_fill - ask nghttp2 for frames now, up to the high mark, without
 * writing them (the flush writes): for an owner that has bytes to lend for
 * the length of a read (fg_h2conn_out_borrow).  Nothing when the connection
 * is closing or its output is stuck behind a full socket.  Returns 0, or
 * FG_EPROTO/FG_ENOMEM after which the connection is ending.
 */
int fg_h2conn_fill(struct fg_h2conn *c);

/*
 * fg_h2conn_can_borrow - whether fg_h2conn_out_borrow() would take bytes
 * now: a read is being parsed, <c> has a free piece, is not closing, its
 * output is not waiting for the socket and holds less than
 * FG_H2CONN_BORROW_HIGH.
 */
int fg_h2conn_can_borrow(const struct fg_h2conn *c);

/*
 * fg_h2conn_out_append - copy <n> bytes at <p> to the end of <c>'s output.
 * Returns 0 or FG_ENOMEM.
 */
int fg_h2conn_out_append(struct fg_h2conn *c, const void *p, size_t n);

/*
 * fg_h2conn_out_borrow - put <n> bytes at <p> at the end of <c>'s output
 * by reference.  <p> must lie in the buffer of the read being parsed
 * (inside an nghttp2 receive callback of another connection of the same
 * worker) and stay unchanged until that read's parse returns; by then they
 * have been written or copied.  Falls back to a copy when borrowing is not
 * possible (fg_h2conn_can_borrow).  Returns 0 or FG_ENOMEM.
 */
int fg_h2conn_out_borrow(struct fg_h2conn *c, const uint8_t *p, size_t n);

/* fg_h2conn_out_len - bytes waiting in <c>'s output, its own and borrowed. */
size_t fg_h2conn_out_len(const struct fg_h2conn *c);

/* fg_h2conn_out_full - whether <c>'s own output reached the high mark:
 * nghttp2 is asked for no more frames until the socket took some. */
int fg_h2conn_out_full(const struct fg_h2conn *c);

/* fg_h2conn_want_flush - schedule one flush of <c> in this loop round. */
void fg_h2conn_want_flush(struct fg_h2conn *c);

/*
 * fg_h2conn_fail - end the connection without sending anything more;
 * <on_close> is called from the loop shortly after with <err>/<why>.
 * For use inside nghttp2 callbacks or other places where freeing now
 * would pull the rug from under a caller.
 */
void fg_h2conn_fail(struct fg_h2conn *c, int err, const char *why);

/*
 * fg_h2conn_set_write_timeout - set <c>'s write timeout to <us>
 * microseconds (0: none).  A wait already under way restarts with it.
 */
void fg_h2conn_set_write_timeout(struct fg_h2conn *c, int64_t us);

/* fg_h2conn_cleanup - free events, buffer and session; close the fd. */
void fg_h2conn_cleanup(struct fg_h2conn *c);

/* fg_h2conn_pending_out - bytes waiting for the socket (for metrics and tests). */
size_t fg_h2conn_pending_out(const struct fg_h2conn *c);

#endif /* FG_H2CONN_H */
