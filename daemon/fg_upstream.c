/* fg_upstream.c - per-worker upstream connection pool; see fg_upstream.h. */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_clock.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_log.h"
#include "fg_units.h"
#include "fg_upstream.h"
#include "fg_worker.h"

/* RFC 9113 §5.1.2: until the peer's SETTINGS arrive, assume it takes at
 * least 100 concurrent streams. */
#define UP_ASSUMED_MAX_STREAMS 100
#define UP_WHY_LEN 256

struct fg_upstream {
	struct fg_worker *worker;
	struct fg_config_addr addr;         /* where new connections go */
	int64_t connect_timeout_us;
	int max_connections;
	int max_pending;
	int64_t keepalive_time_us;
	int64_t keepalive_timeout_us;
	int64_t backoff_initial_us;
	int64_t backoff_max_us;
	uint32_t stream_window;
	uint32_t connection_window;
	uint32_t max_header_list_size;

	LIST_HEAD(, fg_upconn) conns;
	unsigned nconns;
	struct fg_call_list pending;        /* calls waiting for a stream slot, oldest first */
	int npending;
	int64_t backoff_us;                 /* current backoff; 0 after a good connect */
	uint64_t retry_at_us;               /* no new connect before this (fg_clock_now_us) */
	char last_error[UP_WHY_LEN];        /* why the last connect failed, for fast-fail messages */
	unsigned dispatching;               /* guards pool_dispatch against re-entry */
};

static nghttp2_session_callbacks *up_callbacks;
static nghttp2_option *up_option;
static pthread_once_t up_once = PTHREAD_ONCE_INIT;

static void pool_dispatch(struct fg_upstream *pool);

static struct timeval us_to_tv(int64_t us)
{
	struct timeval tv = { .tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000) };
	return tv;
}

/* --- nghttp2 client callbacks ------------------------------------------ */

static struct fg_call *stream_call(nghttp2_session *s, int32_t sid)
{
	return nghttp2_session_get_stream_user_data(s, sid);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	struct fg_call *call = stream_call(s, frame->hd.stream_id);

	if (call)
		fg_call_on_resp_header(call, name, namelen, value, valuelen, flags);
	return 0;
}

static void conn_arm_keepalive(struct fg_upconn *up);

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
	struct fg_upconn *up = user_data;
	struct fg_call *call = frame->hd.stream_id ? stream_call(s, frame->hd.stream_id) : NULL;
	int end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (call)
			fg_call_on_resp_headers_end(call, end_stream);
		break;
	case NGHTTP2_DATA:
		if (call && end_stream)
			fg_call_on_resp_end(call);
		break;
	case NGHTTP2_SETTINGS:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			break;
		if (!up->settings_seen) {
			up->settings_seen = 1;
			event_del(up->connect_ev);
			up->pool->backoff_us = 0;
		}
		/* The first SETTINGS, or a later one that may raise the stream limit. */
		pool_dispatch(up->pool);
		break;
	case NGHTTP2_GOAWAY:
		/* Streams above last_stream_id are closed by nghttp2 with
		 * REFUSED_STREAM; the rest finish here.  New calls go elsewhere. */
		up->state = FG_UPCONN_DRAINING;
		fg_log(FG_LOG_INFO, "upstream_goaway", "upstream=%s error_code=%u last_stream_id=%d",
		       up->pool->addr.text, frame->goaway.error_code, frame->goaway.last_stream_id);
		pool_dispatch(up->pool);
		break;
	case NGHTTP2_PING:
		if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && up->ka_waiting) {
			up->ka_waiting = 0;
			conn_arm_keepalive(up);
		}
		break;
	default:
		break;
	}
	return 0;
}

/* A request DATA frame, sent from the call's queue (NO_COPY).  Only a
 * stream whose call still holds it gets here (req_read_cb defers the
 * others). */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data)
{
	struct fg_upconn *up = user_data;
	struct fg_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);

	(void)source;
	if (!call)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return fg_call_send_req_data(call, framehd, length, &up->h2);
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                              size_t len, void *user_data)
{
	struct fg_call *call = stream_call(s, sid);

	/* The connection window is shared by every client multiplexed here:
	 * return it at once so one client that stops reading cannot stall the
	 * others (each call's buffer stays bounded by its stream window). */
	nghttp2_session_consume_connection(s, len);
	if (!call) {
		nghttp2_session_consume_stream(s, sid, len);
		return 0;
	}
	fg_call_on_resp_data(call, data, len);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user_data)
{
	struct fg_call *call = stream_call(s, sid);

	if (call)
		fg_call_on_up_close(call, error_code);
	return 0;
}

static void up_init_once(void)
{
	if (nghttp2_session_callbacks_new(&up_callbacks) != 0 || nghttp2_option_new(&up_option) != 0)
		return;
	nghttp2_session_callbacks_set_on_header_callback(up_callbacks, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(up_callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(up_callbacks, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(up_callbacks, on_stream_close);
	nghttp2_session_callbacks_set_send_data_callback(up_callbacks, on_send_data);
	nghttp2_option_set_no_auto_window_update(up_option, 1);
	nghttp2_option_set_no_closed_streams(up_option, 1);
	/* Streams are counted by the pool against the upstream's own limit;
	 * this only covers the time before its first SETTINGS. */
	nghttp2_option_set_peer_max_concurrent_streams(up_option, UP_ASSUMED_MAX_STREAMS);
}

/* --- connections ------------------------------------------------------- */

static void conn_free(struct fg_upconn *up, const char *why)
{
	struct fg_upstream *pool = up->pool;
	struct fg_call *call;

	/* The pool forgets the connection first so that calls failing below
	 * cannot be dispatched onto it again. */
	LIST_REMOVE(up, link);
	pool->nconns--;
	fg_metrics_gauge(&pool->worker->metrics.upstream_connections, -1);
	while ((call = TAILQ_FIRST(&up->calls)) != NULL)
		fg_call_on_up_lost(call, why);
	if (up->connect_ev)
		event_free(up->connect_ev);
	if (up->ka_ev)
		event_free(up->ka_ev);
	if (up->state == FG_UPCONN_CONNECTING) {
		if (up->connect_fd >= 0)
			close(up->connect_fd);
	} else {
		fg_h2conn_cleanup(&up->h2);
	}
	free(up);
}

static void conn_connect_failed(struct fg_upconn *up, const char *why);

static void conn_closed_cb(void *owner, int err, const char *why)
{
	struct fg_upconn *up = owner;
	struct fg_upstream *pool = up->pool;
	char msg[UP_WHY_LEN];

	if (!up->settings_seen) {
		snprintf(msg, sizeof(msg), "closed before its HTTP/2 SETTINGS (%s)", why);
		conn_connect_failed(up, msg);
		return;
	}

	snprintf(msg, sizeof(msg), "upstream %s: connection lost (%s)", pool->addr.text, why);
	if (err || up->nstreams)
		fg_log(FG_LOG_WARN, "upstream_close", "upstream=%s streams=%u why=\"%s\"", pool->addr.text,
		       up->nstreams, why);
	conn_free(up, msg);
	pool_dispatch(pool);
}

static void ka_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_upconn *up = arg;
	struct fg_upstream *pool = up->pool;

	if (up->ka_waiting) {
		fg_h2conn_fail(&up->h2, FG_EIO, "no PING ACK within upstream.keepalive_timeout");
		return;
	}
	/* Probe only busy connections: an idle one risks nothing, and gRPC
	 * servers count pings without calls against the client. */
	if (up->nstreams == 0) {
		conn_arm_keepalive(up);
		return;
	}
	if (nghttp2_submit_ping(up->h2.session, NGHTTP2_FLAG_NONE, NULL) == 0) {
		struct timeval tv = us_to_tv(pool->keepalive_timeout_us);
		up->ka_waiting = 1;
		evtimer_add(up->ka_ev, &tv);
		fg_upconn_flush(up);
	}
}

static void conn_arm_keepalive(struct fg_upconn *up)
{
	struct timeval tv = us_to_tv(up->pool->keepalive_time_us);

	if (up->ka_ev && up->pool->keepalive_time_us > 0)
		evtimer_add(up->ka_ev, &tv);
}

static void backoff_start(struct fg_upstream *pool)
{
	int64_t delay;

	pool->backoff_us = pool->backoff_us ? pool->backoff_us * 2 : pool->backoff_initial_us;
	if (pool->backoff_us > pool->backoff_max_us)
		pool->backoff_us = pool->backoff_max_us;
	/* +-20% jitter so a fleet of sidecars does not reconnect in step. */
	delay = pool->backoff_us * (80 + random() % 41) / 100;
	pool->retry_at_us = fg_clock_now_us() + (uint64_t)delay;
}

static void conn_connect_failed(struct fg_upconn *up, const char *why)
{
	struct fg_upstream *pool = up->pool;
	char msg[UP_WHY_LEN];

	snprintf(pool->last_error, sizeof(pool->last_error), "%s", why);
	snprintf(msg, sizeof(msg), "upstream %s unavailable: %s", pool->addr.text, why);
	fg_log(FG_LOG_WARN, "upstream_connect_failed", "upstream=%s why=\"%s\"", pool->addr.text, why);
	fg_metrics_add(&pool->worker->metrics.upstream_connect_failures, 1);
	backoff_start(pool);
	conn_free(up, msg);
	pool_dispatch(pool);
}

static int conn_start_session(struct fg_upconn *up)
{
	struct fg_upstream *pool = up->pool;
	nghttp2_session *session;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pool->stream_window },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, pool->max_header_list_size },
	};
	int fd = up->connect_fd, rc;

	fg_mempool_session_begin(&pool->worker->mempool);
	rc = nghttp2_session_client_new3(&session, up_callbacks, up, up_option, &pool->worker->mempool.mem);
	fg_mempool_session_end(&pool->worker->mempool);
	if (rc != 0)
		return FG_ENOMEM;
	up->connect_fd = -1;
	if (fg_h2conn_init(&up->h2, pool->worker->base, fd, session, &pool->worker->h2scope, conn_closed_cb, up) < 0)
		return FG_ENOMEM;
	up->state = FG_UPCONN_READY;
	up->h2.nstreams = &up->nstreams;
	if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
	                                          (int32_t)pool->connection_window) != 0)
		return FG_ENOMEM;
	up->ka_ev = evtimer_new(pool->worker->base, ka_cb, up);
	conn_arm_keepalive(up);
	fg_upconn_flush(up);
	return 0;
}

static void settings_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_connect_failed(arg, "no HTTP/2 SETTINGS within upstream.connect_timeout (is it an h2c gRPC server?)");
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_upconn *up = arg;
	struct fg_upstream *pool = up->pool;
	struct timeval tv = us_to_tv(pool->connect_timeout_us);
	char why[64];
	int err = 0;
	socklen_t len = sizeof(err);

	if (what & EV_TIMEOUT) {
		char t[32];
		snprintf(why, sizeof(why), "connect timed out after %s",
		         fg_units_format_duration(pool->connect_timeout_us, t, sizeof(t)));
		conn_connect_failed(up, why);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		snprintf(why, sizeof(why), "connect: %s", strerror(err));
		conn_connect_failed(up, why);
		return;
	}
	if (conn_start_session(up) < 0) {
		conn_connect_failed(up, "out of memory");
		return;
	}
	/* Connected; the same timer now waits for the upstream's SETTINGS, so a
	 * peer that accepts and then says nothing counts as a failed connect. */
	event_assign(up->connect_ev, pool->worker->base, -1, 0, settings_timeout_cb, up);
	event_add(up->connect_ev, &tv);
	fg_log_debug("upstream_connected", "upstream=%s", pool->addr.text);
}

/* Open a connection.  Returns 0 (connecting), or a negative FG_E* with the
 * reason in pool->last_error. */
static int pool_open(struct fg_upstream *pool)
{
	struct fg_upconn *up = calloc(1, sizeof(*up));
	struct timeval tv = us_to_tv(pool->connect_timeout_us);
	int fd, one = 1;

	if (!up)
		return FG_ENOMEM;
	fd = socket(pool->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail_free;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&pool->addr.sa, pool->addr.salen) < 0 && errno != EINPROGRESS)
		goto fail_close;
	up->pool = pool;
	up->connect_fd = fd;
	up->state = FG_UPCONN_CONNECTING;
	TAILQ_INIT(&up->calls);
	/* Readiness for write tells a non-blocking connect finished, either way. */
	up->connect_ev = event_new(pool->worker->base, fd, EV_WRITE, connect_cb, up);
	if (!up->connect_ev)
		goto fail_close;
	event_add(up->connect_ev, &tv);
	LIST_INSERT_HEAD(&pool->conns, up, link);
	pool->nconns++;
	fg_metrics_gauge(&pool->worker->metrics.upstream_connections, 1);
	fg_metrics_add(&pool->worker->metrics.upstream_connects, 1);
	return 0;

fail_close:
	fg_metrics_add(&pool->worker->metrics.upstream_connect_failures, 1);
	snprintf(pool->last_error, sizeof(pool->last_error), "connect: %s", strerror(errno));
	close(fd);
	free(up);
	backoff_start(pool);
	return FG_EUNAVAIL;
fail_free:
	snprintf(pool->last_error, sizeof(pool->last_error), "socket: %s", strerror(errno));
	free(up);
	return FG_EIO;
}

/* --- the pool ---------------------------------------------------------- */

static unsigned conn_capacity(const struct fg_upconn *up)
{
	uint32_t max;

	/* Wait for the upstream's SETTINGS (it sends them as soon as it accepts,
	 * so this costs at most one round trip on a new connection): streams
	 * sent before them may exceed a limit it has yet to announce, and a
	 * burst of calls would all pile onto the first connection. */
	if (up->state != FG_UPCONN_READY || up->h2.closing || !up->settings_seen)
		return 0;
	max = nghttp2_session_get_remote_settings(up->h2.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return up->nstreams < max ? max - up->nstreams : 0;
}

static struct fg_upconn *pool_pick(struct fg_upstream *pool, unsigned *connecting, unsigned *live)
{
	struct fg_upconn *up;

	*connecting = *live = 0;
	LIST_FOREACH(up, &pool->conns, link) {
		/* A draining connection takes no new stream; it must not hold
		 * a slot of max_connections while its last streams finish. */
		if (up->state == FG_UPCONN_DRAINING || up->h2.closing)
			continue;
		(*live)++;
		if (up->state == FG_UPCONN_CONNECTING ||
		    (up->state == FG_UPCONN_READY && !up->settings_seen))
			(*connecting)++;
		else if (conn_capacity(up) > 0)
			return up;
	}
	return NULL;
}

static int pool_in_backoff(struct fg_upstream *pool)
{
	if (!pool->backoff_us)
		return 0;
	return fg_clock_now_us() < pool->retry_at_us;
}

static void pool_fail_pending(struct fg_upstream *pool, const char *why)
{
	struct fg_call *call;

	while ((call = TAILQ_FIRST(&pool->pending)) != NULL) {
		fg_upstream_unqueue(pool, call);
		fg_call_fail(call, FG_GRPC_UNAVAILABLE, why);
	}
}

/* Start queued calls where there is room; open a connection when none
 * has room and the pool may grow; fail fast while backing off with no
 * usable connection. */
static void pool_dispatch(struct fg_upstream *pool)
{
	struct fg_upconn *up;
	struct fg_call *call;
	unsigned connecting, live;
	int rc;
	char msg[UP_WHY_LEN + sizeof(((struct fg_config_addr *)0)->text) + 32];

	if (pool->dispatching)
		return;
	pool->dispatching = 1;
	while ((call = TAILQ_FIRST(&pool->pending)) != NULL) {
		up = pool_pick(pool, &connecting, &live);
		if (!up) {
			if (connecting || live >= (unsigned)pool->max_connections)
				break;
			if (pool_in_backoff(pool) || pool_open(pool) < 0) {
				snprintf(msg, sizeof(msg), "upstream %s unavailable: %s", pool->addr.text,
				         pool->last_error);
				pool_fail_pending(pool, msg);
				break;
			}
			continue;
		}
		fg_upstream_unqueue(pool, call);
		rc = fg_call_start_upstream(call, up);
		if (rc < 0 && rc != FG_ETOOBIG)         /* FG_ETOOBIG: failed already, saying why */
			fg_call_fail(call, FG_GRPC_INTERNAL, "feedguardd could not start the upstream stream");
	}
	pool->dispatching = 0;
}

void fg_upstream_submit(struct fg_upstream *pool, struct fg_call *call)
{
	char msg[UP_WHY_LEN];

	TAILQ_INSERT_TAIL(&pool->pending, call, up_link);
	pool->npending++;
	call->flags |= FG_CALL_PENDING;
	pool_dispatch(pool);
	/* Still waiting: only now does the bound apply.  (The front stream is
	 * open, so fg_call_fail cannot free <call> here.) */
	if ((call->flags & FG_CALL_PENDING) && pool->npending > pool->max_pending) {
		fg_upstream_unqueue(pool, call);
		snprintf(msg, sizeof(msg), "upstream %s: more than upstream.max_pending (%d) calls waiting",
		         pool->addr.text, pool->max_pending);
		fg_call_fail(call, FG_GRPC_UNAVAILABLE, msg);
	}
}

void fg_upstream_unqueue(struct fg_upstream *pool, struct fg_call *call)
{
	if (!(call->flags & FG_CALL_PENDING))
		return;
	TAILQ_REMOVE(&pool->pending, call, up_link);
	pool->npending--;
	call->flags &= ~FG_CALL_PENDING;
}

void fg_upconn_flush(struct fg_upconn *up)
{
	if (up->state != FG_UPCONN_CONNECTING)
		fg_h2conn_want_flush(&up->h2);
}

void fg_upconn_stream_closed(struct fg_upconn *up)
{
	if (!TAILQ_EMPTY(&up->pool->pending))
		pool_dispatch(up->pool);
}

static void pool_take_config(struct fg_upstream *pool, const struct fg_config *cfg)
{
	pool->addr = cfg->upstream.addr;
	pool->connect_timeout_us = cfg->upstream.connect_timeout_us;
	pool->max_connections = cfg->upstream.max_connections;
	pool->max_pending = cfg->upstream.max_pending;
	pool->keepalive_time_us = cfg->upstream.keepalive_time_us;
	pool->keepalive_timeout_us = cfg->upstream.keepalive_timeout_us;
	pool->backoff_initial_us = cfg->upstream.backoff_initial_us;
	pool->backoff_max_us = cfg->upstream.backoff_max_us;
	pool->stream_window = cfg->limits.stream_window;
	pool->connection_window = cfg->limits.connection_window;
	pool->max_header_list_size = cfg->limits.max_header_list_size;
}

struct fg_upstream *fg_upstream_new(struct fg_worker *w, const struct fg_config *cfg)
{
	struct fg_upstream *pool;

	pthread_once(&up_once, up_init_once);
	if (!up_option || !(pool = calloc(1, sizeof(*pool))))
		return NULL;
	pool->worker = w;
	LIST_INIT(&pool->conns);
	TAILQ_INIT(&pool->pending);
	pool_take_config(pool, cfg);
	return pool;
}

void fg_upstream_configure(struct fg_upstream *pool, const struct fg_config *cfg)
{
	struct fg_upconn *up;
	int moved = strcmp(pool->addr.text, cfg->upstream.addr.text) != 0;

	pool_take_config(pool, cfg);
	if (!moved)
		return;
	/* Calls in flight finish where they are; new ones go to the new address. */
	pool->backoff_us = 0;
	LIST_FOREACH(up, &pool->conns, link) {
		if (up->state == FG_UPCONN_READY) {
			up->state = FG_UPCONN_DRAINING;
			nghttp2_submit_goaway(up->h2.session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
			fg_upconn_flush(up);
		}
	}
}

void fg_upstream_free(struct fg_upstream *pool)
{
	char msg[UP_WHY_LEN];

	if (!pool)
		return;
	snprintf(msg, sizeof(msg), "upstream %s: feedguardd is shutting down", pool->addr.text);
	pool_fail_pending(pool, msg);
	while (!LIST_EMPTY(&pool->conns))
		conn_free(LIST_FIRST(&pool->conns), msg);
	free(pool);
}

const char *fg_upstream_name(const struct fg_upstream *pool)
{
	return pool->addr.text;
}

unsigned fg_upstream_count(const struct fg_upstream *pool)
{
	return pool->nconns;
}
