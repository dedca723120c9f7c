/* fg_h2conn.c - socket <-> nghttp2 pump; see fg_h2conn.h. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "fg_error.h"
#include "fg_h2conn.h"

/* One read(2) per 256 KiB, two per readiness event at most (512 KiB) so
 * one busy connection cannot starve the others on the loop.  The buffer
 * is the worker's (fg_h2conn_scope), not per connection: a large read
 * brings several ranked feeds (40 KiB each) at once, and their DATA then
 * leave in one writev(2) per client connection at the read's end; with 64
 * KiB reads a pass-through ranked-feed call took about 10% more CPU.
 * Without a scope (or its memory) reads go through a small stack buffer. */
#define H2CONN_READ_CHUNK (256 * 1024)
#define H2CONN_READ_SMALL 16384
#define H2CONN_READS_PER_EVENT 2
/* The output buffer of a connection that has streams is given its working
 * size at once (the high mark and one DATA frame past it): an idle
 * connection frees it, and growing it again from nothing by doubling
 * copied everything queued so far at each step, every time a client's
 * burst of calls began (2.8% of a pass-through ranked-feed call's CPU). */
#define H2CONN_OUT_FIRST (FG_H2CONN_OUT_HIGH + 16384 + 64)

static void conn_flush(struct fg_h2conn *c);

/* Forget the borrowed pieces of a connection that will write nothing more
 * (it is closing), and take it off its scope's list. */
static void conn_drop_borrowed(struct fg_h2conn *c)
{
	struct fg_h2conn **pp;

	if (c->nborrowed == 0)
		return;
	for (pp = &c->scope->lent; *pp; pp = &(*pp)->lent_next)
		if (*pp == c) {
			*pp = c->lent_next;
			break;
		}
	c->lent_next = NULL;
	c->nborrowed = 0;
	c->borrowed_len = 0;
}

void fg_h2conn_scope_free(struct fg_h2conn_scope *scope)
{
	free(scope->read_buf);
	scope->read_buf = NULL;
}

void fg_h2conn_scope_begin(struct fg_h2conn_scope *scope)
{
	scope->reading++;
}

/* conn_flush() leaves no connection borrowing: written, copied, or
 * dropped when closing. */
void fg_h2conn_scope_end(struct fg_h2conn_scope *scope)
{
	struct fg_h2conn *b;

	scope->reading--;
	while ((b = scope->lent) != NULL) {
		scope->lent = b->lent_next;
		b->lent_next = NULL;
		conn_flush(b);
		if (b->nborrowed)       /* closing: nothing more goes out */
			conn_drop_borrowed(b);
	}
}

static void conn_end(struct fg_h2conn *c, int err, const char *why)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->close_err = err;
	c->close_why = why;
	event_del(c->rev);
	event_del(c->wev);
	event_active(c->flush_ev, 0, 0);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_h2conn *c = arg;
	uint8_t small[H2CONN_READ_SMALL], *buf = small;
	size_t size = sizeof(small);
	ssize_t n, rv;
	int i;

	if (c->scope && (c->scope->read_buf || (c->scope->read_buf = malloc(H2CONN_READ_CHUNK)) != NULL)) {
		buf = c->scope->read_buf;
		size = H2CONN_READ_CHUNK;
	}
	for (i = 0; i < H2CONN_READS_PER_EVENT && !c->closing; i++) {
		n = read(fd, buf, size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_end(c, FG_EIO, strerror(errno));
			break;
		}
		if (n == 0) {
			conn_end(c, 0, "peer closed the connection");
			break;
		}
		if (c->scope)
			fg_h2conn_scope_begin(c->scope);
		rv = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
		if (c->scope)
			fg_h2conn_scope_end(c->scope);
		if (rv < 0) {
			conn_end(c, FG_EPROTO, nghttp2_strerror((int)rv));
			break;
		}
		if ((size_t)n < size)
			break;
	}
	fg_h2conn_want_flush(c);
}

/* Bytes in the socket's send queue, not yet acknowledged by the peer, or
 * -1 when the kernel cannot tell. */
static int conn_outq(const struct fg_h2conn *c)
{
	int n;

	return ioctl(c->fd, SIOCOUTQ, &n) == 0 ? n : -1;
}

/*
 * Wait for the socket to take more.  The timeout restarts at every wait,
 * and a wait that times out while the peer still acknowledged bytes (the
 * kernel reports a socket writable only once a good part of its send
 * buffer is free, which a slow but steady reader can take longer than the
 * timeout to reach) starts again: only a peer that takes nothing is cut.
 */
static void conn_wait_writable(struct fg_h2conn *c)
{
	int timed = c->write_timeout.tv_sec != 0 || c->write_timeout.tv_usec != 0;

	c->outq_at_wait = timed ? conn_outq(c) : -1;
	event_add(c->wev, timed ? &c->write_timeout : NULL);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_h2conn *c = arg;
	int q;

	if (what & EV_TIMEOUT) {
		q = conn_outq(c);
		if (q < 0 || c->outq_at_wait < 0 || q >= c->outq_at_wait) {
			conn_end(c, FG_ETIMEOUT, "write timeout: the peer took no byte");
			return;
		}
		/* the peer is slow, not gone: write what fits and wait again */
	}
	conn_flush(c);
}

static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_h2conn *c = arg;

	if (c->closing) {
		c->on_close(c->owner, c->close_err, c->close_why);
		return;
	}
	conn_flush(c);
}

/* Fill <out> from nghttp2 up to the high mark.  Returns 0 or FG_EPROTO. */
static int conn_fill(struct fg_h2conn *c)
{
	const uint8_t *data;
	ssize_t n;

	while (!fg_h2conn_out_full(c)) {
		n = nghttp2_session_mem_send(c->session, &data);
		if (n < 0)
			return FG_EPROTO;
		if (n == 0)
			break;
		if (c->out.cap == 0 && c->nstreams && *c->nstreams > 0 &&
		    fg_bufq_reserve_exact(&c->out, H2CONN_OUT_FIRST) < 0)
			return FG_ENOMEM;
		if (fg_bufq_append(&c->out, data, (size_t)n) < 0)
			return FG_ENOMEM;
	}
	return 0;
}

/*
 * The output as it goes to the socket, in order: the connection's own
 * bytes, with the borrowed pieces at their places.  Fills <iov> (room for
 * 2 * FG_H2CONN_BORROW_MAX + 1) and returns how many entries it used.
 */
static int conn_iov(const struct fg_h2conn *c, struct iovec *iov)
{
	const uint8_t *own = fg_bufq_head(&c->out);
	size_t pos = 0;
	unsigned i;
	int n = 0;

	for (i = 0; i < c->nborrowed; i++) {
		const struct fg_h2conn_borrow *b = &c->borrowed[i];

		if (b->at > pos) {
			iov[n].iov_base = (void *)(own + pos);
			iov[n++].iov_len = b->at - pos;
			pos = b->at;
		}
		iov[n].iov_base = (void *)b->p;
		iov[n++].iov_len = b->len;
	}
	if (fg_bufq_len(&c->out) > pos) {
		iov[n].iov_base = (void *)(own + pos);
		iov[n++].iov_len = fg_bufq_len(&c->out) - pos;
	}
	return n;
}

/*
 * The kernel took <done> bytes of an output with borrowed pieces: what it
 * did not take is copied, in order, into an output of the connection's own
 * (the pieces' bytes are gone once the read's parse returns).  Returns 0
 * or FG_ENOMEM (the output is then unusable: the connection must end).
 */
static int conn_keep_unwritten(struct fg_h2conn *c, size_t done)
{
	struct iovec iov[2 * FG_H2CONN_BORROW_MAX + 1];
	struct fg_bufq rest = { 0 };
	int i, n = conn_iov(c, iov);

	if (done == fg_h2conn_out_len(c)) {
		fg_bufq_clear(&c->out);
		c->nborrowed = 0;
		c->borrowed_len = 0;
		return 0;
	}
	if (fg_bufq_reserve_exact(&rest, fg_h2conn_out_len(c) - done) < 0)
		return FG_ENOMEM;
	for (i = 0; i < n; i++) {
		size_t skip = done < iov[i].iov_len ? done : iov[i].iov_len;

		done -= skip;
		memcpy(fg_bufq_tail(&rest), (const uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip);
		fg_bufq_commit(&rest, iov[i].iov_len - skip);
	}
	fg_bufq_free(&c->out);
	c->out = rest;
	c->nborrowed = 0;
	c->borrowed_len = 0;
	return 0;
}

/* One write of everything waiting; returns write(2)'s result. */
static ssize_t conn_write(struct fg_h2conn *c)
{
	struct iovec iov[2 * FG_H2CONN_BORROW_MAX + 1];

	if (c->nborrowed == 0)
		return write(c->fd, fg_bufq_head(&c->out), fg_bufq_len(&c->out));
	return writev(c->fd, iov, conn_iov(c, iov));
}

static void conn_flush(struct fg_h2conn *c)
{
	ssize_t n;

	if (c->closing)
		return;
	for (;;) {
		if (conn_fill(c) < 0) {
			conn_end(c, FG_EPROTO, "nghttp2 could not produce frames");
			return;
		}
		if (fg_h2conn_out_len(c) == 0)
			break;
		/* Everything this round produced, one write. */
		do
			n = conn_write(c);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_end(c, FG_EIO, strerror(errno));
			return;
		}
		if (c->nborrowed) {
			if (conn_keep_unwritten(c, n > 0 ? (size_t)n : 0) < 0) {
				conn_end(c, FG_ENOMEM, "out of memory for the output");
				return;
			}
		} else if (n > 0) {
			fg_bufq_consume(&c->out, (size_t)n);
		}
		if (fg_bufq_len(&c->out) > 0) {
			/* The kernel is full: wait for room, produce nothing more
			 * (a wait already armed keeps its timer unless bytes moved). */
			if (n > 0 || !event_pending(c->wev, EV_WRITE, NULL))
				conn_wait_writable(c);
			return;
		}
	}
	if (c->nstreams && *c->nstreams == 0) {
		fg_bufq_free(&c->out);
		free(c->borrowed);
		c->borrowed = NULL;
	}
	if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
		conn_end(c, 0, "session finished");
}

int fg_h2conn_fill(struct fg_h2conn *c)
{
	int rv;

	if (c->closing || event_pending(c->wev, EV_WRITE, NULL))
		return 0;
	rv = conn_fill(c);
	if (rv < 0)
		conn_end(c, rv, "nghttp2 could not produce frames");
	else if (c->nborrowed == 0)     /* a borrower is flushed at the read's end */
		fg_h2conn_want_flush(c);
	return rv;
}

int fg_h2conn_can_borrow(const struct fg_h2conn *c)
{
	return c->scope && c->scope->reading && !c->closing && c->nborrowed < FG_H2CONN_BORROW_MAX &&
	       fg_h2conn_out_len(c) < FG_H2CONN_BORROW_HIGH && !event_pending(c->wev, EV_WRITE, NULL);
}

int fg_h2conn_out_append(struct fg_h2conn *c, const void *p, size_t n)
{
	return fg_bufq_append(&c->out, p, n);
}

int fg_h2conn_out_borrow(struct fg_h2conn *c, const uint8_t *p, size_t n)
{
	struct fg_h2conn_borrow *b;

	if (!fg_h2conn_can_borrow(c))
		return fg_bufq_append(&c->out, p, n);
	if (!c->borrowed) {
		c->borrowed = malloc(FG_H2CONN_BORROW_MAX * sizeof(*c->borrowed));
		if (!c->borrowed)
			return fg_bufq_append(&c->out, p, n);
	}
	if (c->nborrowed == 0) {
		c->lent_next = c->scope->lent;
		c->scope->lent = c;
	}
	b = &c->borrowed[c->nborrowed++];
	b->at = fg_bufq_len(&c->out);
	b->p = p;
	b->len = n;
	c->borrowed_len += n;
	return 0;
}

size_t fg_h2conn_out_len(const struct fg_h2conn *c)
{
	return fg_bufq_len(&c->out) + c->borrowed_len;
}

int fg_h2conn_out_full(const struct fg_h2conn *c)
{
	return fg_bufq_len(&c->out) >= FG_H2CONN_OUT_HIGH;
}

void fg_h2conn_want_flush(struct fg_h2conn *c)
{
	/* While a write is pending the write event will flush; an extra
	 * activation would only spin. */
	if (!c->closing && !event_pending(c->wev, EV_WRITE, NULL))
		event_active(c->flush_ev, 0, 0);
}

void fg_h2conn_set_write_timeout(struct fg_h2conn *c, int64_t us)
{
	struct timeval tv = { .tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000) };

	/* an unchanged value leaves a wait alone: reloads must not keep
	 * postponing the end of a stalled connection */
	if (tv.tv_sec == c->write_timeout.tv_sec && tv.tv_usec == c->write_timeout.tv_usec)
		return;
	c->write_timeout = tv;
	if (!c->closing && event_pending(c->wev, EV_WRITE, NULL))
		conn_wait_writable(c);
}

void fg_h2conn_fail(struct fg_h2conn *c, int err, const char *why)
{
	conn_end(c, err, why);
}

int fg_h2conn_init(struct fg_h2conn *c, struct event_base *base, int fd, nghttp2_session *session,
                   struct fg_h2conn_scope *scope, fg_h2conn_close_cb on_close, void *owner)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->scope = scope;
	c->session = session;
	c->on_close = on_close;
	c->owner = owner;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(base, fd, EV_WRITE, conn_write_cb, c);
	c->flush_ev = event_new(base, -1, 0, conn_flush_cb, c);
	fg_bufq_init(&c->out);
	if (!c->rev || !c->wev || !c->flush_ev || event_add(c->rev, NULL) < 0) {
		fg_h2conn_cleanup(c);
		return FG_ENOMEM;
	}
	return 0;
}

void fg_h2conn_cleanup(struct fg_h2conn *c)
{
	conn_drop_borrowed(c);
	free(c->borrowed);
	c->borrowed = NULL;
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->flush_ev)
		event_free(c->flush_ev);
	fg_bufq_free(&c->out);
	nghttp2_session_del(c->session);
	if (c->fd >= 0)
		close(c->fd);
	c->rev = c->wev = c->flush_ev = NULL;
	c->session = NULL;
	c->fd = -1;
}

size_t fg_h2conn_pending_out(const struct fg_h2conn *c)
{
	return fg_h2conn_out_len(c);
}
