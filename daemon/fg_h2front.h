/*
 * fg_h2front.h - the HTTP/2 (h2c) server side: one nghttp2 server session
 * per accepted client connection.  It turns client streams into calls
 * (fg_call) and hands response bytes back to the client.
 *
 * Limits advertised in SETTINGS and enforced: max concurrent streams,
 * max header list size, per-stream and connection windows (flow control is
 * manual: see fg_call.h).  A connection with no open stream for
 * timeouts.idle is closed with GOAWAY; a stream is never cut for being
 * quiet.  Loop thread only.
 */
#ifndef FG_H2FRONT_H
#define FG_H2FRONT_H

#include <sys/queue.h>
#include <sys/socket.h>

#include "fg_call.h"
#include "fg_h2conn.h"
#include "fg_pipeline.h"

struct fg_config;
struct fg_worker;

struct fg_front {
	struct fg_h2conn h2;            /* socket pump and server session */
	struct fg_worker *worker;
	struct fg_call_list calls;      /* calls whose client stream is on this connection */
	struct fg_pipeline_budget budget; /* bytes its intercepted calls hold (limits.connection_buffer) */
	unsigned nstreams;              /* open client streams, for the idle timer */
	struct event *idle_ev;          /* armed while <nstreams> is 0 */
	unsigned draining;              /* GOAWAY (shutdown notice) sent; no new calls */
	unsigned goaway_final;          /* the real last-stream-id GOAWAY was submitted */
	char peer[64];                  /* "ip:port" of the client, for logs */
	LIST_ENTRY(fg_front) link;      /* in worker->fronts */
};

/*
 * fg_h2front_accept - serve the client on <fd> (taken; closed on failure).
 * <sa> is its address.  Returns 0 or FG_ENOMEM.
 */
int fg_h2front_accept(struct fg_worker *w, int fd, const struct sockaddr *sa, socklen_t salen);

/*
 * fg_h2front_drain - begin a graceful close: GOAWAY with the maximum stream
 * id and a PING; when the PING comes back, GOAWAY with the real last
 * stream id (so no request in flight races the close, RFC 9113 §6.8).
 * Calls in flight finish; the connection closes when the last one does.
 */
void fg_h2front_drain(struct fg_front *f);

/* fg_h2front_free - close now, cancelling the calls still running. */
void fg_h2front_free(struct fg_front *f);

/* fg_h2front_configure - apply the reloadable settings of <cfg> that live
 * on the connection (timeouts.write) to <f>. */
void fg_h2front_configure(struct fg_front *f, const struct fg_config *cfg);

/* fg_h2front_check_stalls - run fg_call_check_stall() on every call of <f>. */
void fg_h2front_check_stalls(struct fg_front *f, uint64_t now_us, uint64_t timeout_us);

/* fg_h2front_flush - schedule the batched write of whatever the session has to send. */
void fg_h2front_flush(struct fg_front *f);

#endif /* FG_H2FRONT_H */
