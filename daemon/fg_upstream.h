/*
 * fg_upstream.h - a worker's pool of HTTP/2 (h2c) connections to the
 * upstream (ranking) service.
 *
 * Connections are opened on demand and multiplexed: a call goes on the
 * first ready connection with a free stream slot (the upstream's
 * SETTINGS_MAX_CONCURRENT_STREAMS); when all are full another is opened up
 * to upstream.max_connections, then calls wait in a bounded queue.
 * A failed connect starts an exponential backoff (with jitter); while it
 * runs and no connection is usable, calls fail at once with UNAVAILABLE
 * naming the upstream, as a gRPC channel in TRANSIENT_FAILURE does, rather
 * than hang.  The first call after the backoff tries again, so the pool
 * recovers by itself.  Busy connections are probed with PING every
 * upstream.keepalive_time (no more often: gRPC servers answer frequent
 * pings with GOAWAY too_many_pings) and dropped when no ACK comes within
 * upstream.keepalive_timeout.  Loop thread only.
 */
#ifndef FG_UPSTREAM_H
#define FG_UPSTREAM_H

#include <sys/queue.h>
#include <sys/time.h>

#include "fg_call.h"
#include "fg_config.h"
#include "fg_h2conn.h"

struct fg_worker;
struct fg_upstream;

enum fg_upconn_state {
	FG_UPCONN_CONNECTING,   /* TCP connect in progress */
	FG_UPCONN_READY,        /* takes new streams */
	FG_UPCONN_DRAINING,     /* GOAWAY received or config changed: no new streams */
};

struct fg_upconn {
	struct fg_h2conn h2;            /* valid from READY on */
	struct fg_upstream *pool;
	enum fg_upconn_state state;
	int connect_fd;                 /* socket while CONNECTING, then owned by <h2> */
	struct event *connect_ev;       /* write readiness or connect timeout */
	struct event *ka_ev;            /* keepalive: next PING, or the wait for its ACK */
	unsigned ka_waiting;            /* a keepalive PING is unanswered */
	unsigned settings_seen;         /* the upstream's first SETTINGS arrived */
	unsigned nstreams;              /* calls with an open stream here */
	struct fg_call_list calls;      /* every call that used this connection and still lives */
	LIST_ENTRY(fg_upconn) link;     /* in pool->conns */
};

/*
 * fg_upstream_new - a pool for worker <w> with the settings of <cfg>
 * (borrowed; the pool copies what it needs).  NULL on allocation failure.
 */
struct fg_upstream *fg_upstream_new(struct fg_worker *w, const struct fg_config *cfg);

/* fg_upstream_free - close every connection, failing the calls they carry. */
void fg_upstream_free(struct fg_upstream *pool);

/*
 * fg_upstream_configure - take the upstream settings of a new <cfg>.  When
 * the address changed, existing connections drain and new calls go to the
 * new address.
 */
void fg_upstream_configure(struct fg_upstream *pool, const struct fg_config *cfg);

/*
 * fg_upstream_submit - route <call>: start it on a connection now, queue it,
 * or fail it with UNAVAILABLE and a message naming the upstream.
 */
void fg_upstream_submit(struct fg_upstream *pool, struct fg_call *call);

/* fg_upstream_unqueue - remove a pending <call> from the queue (its client went away). */
void fg_upstream_unqueue(struct fg_upstream *pool, struct fg_call *call);

/* fg_upconn_flush - schedule a batched write on <up>. */
void fg_upconn_flush(struct fg_upconn *up);

/* fg_upconn_stream_closed - one of <up>'s streams ended; queued calls may proceed. */
void fg_upconn_stream_closed(struct fg_upconn *up);

/* fg_upstream_name - "host:port" of the upstream, for messages. */
const char *fg_upstream_name(const struct fg_upstream *pool);

/* fg_upstream_count - connections open or opening (for metrics). */
unsigned fg_upstream_count(const struct fg_upstream *pool);

#endif /* FG_UPSTREAM_H */
