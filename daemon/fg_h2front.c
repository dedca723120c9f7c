/* fg_h2front.c - HTTP/2 server sessions for clients; see fg_h2front.h. */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_addr.h"
#include "fg_error.h"
#include "fg_h2front.h"
#include "fg_log.h"
#include "fg_upstream.h"
#include "fg_worker.h"

/* Flood limits from the rapid-reset (CVE-2023-44487) advisory, as nghttpx
 * sets them: a burst of 1000 resets, refilled at 33 per second. */
#define FRONT_RST_BURST 1000
#define FRONT_RST_RATE 33
/* How long a drain waits for the PING ACK before sending the final GOAWAY. */
#define FRONT_DRAIN_PING_WAIT_S 2
/* CONTINUATION flood (CVE-2024-28182): nghttp2's own default is 8. */
#define FRONT_MAX_CONTINUATIONS 8

/* Built once (pthread_once) and read-only afterwards, shared by every
 * worker's sessions. */
static nghttp2_session_callbacks *front_callbacks;
static nghttp2_option *front_option;
static pthread_once_t front_once = PTHREAD_ONCE_INIT;

static void front_goaway_final(struct fg_front *f);

static struct fg_call *stream_call(nghttp2_session *s, int32_t sid)
{
	return nghttp2_session_get_stream_user_data(s, sid);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
	struct fg_front *f = user_data;
	struct fg_call *call;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = fg_call_new(f->worker, f, frame->hd.stream_id);
	if (!call) {
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
		return 0;
	}
	nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, call);
	f->nstreams++;
	/* While draining, the timer waits for the PING ACK: keep it. */
	if (f->idle_ev && !f->draining)
		event_del(f->idle_ev);
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	struct fg_front *f = user_data;
	struct fg_call *call = stream_call(s, frame->hd.stream_id);

	if (!call)
		return 0;
	return fg_call_on_req_header(call, name, namelen, value, valuelen, flags,
	                             f->worker->cfg->limits.max_header_list_size);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
	struct fg_front *f = user_data;
	struct fg_call *call = frame->hd.stream_id ? stream_call(s, frame->hd.stream_id) : NULL;
	int end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!call)
			break;
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			fg_call_on_req_headers_end(call, end_stream);
		else
			fg_call_on_req_trailers_end(call);
		break;
	case NGHTTP2_DATA:
		if (call && end_stream)
			fg_call_on_req_end(call);
		break;
	case NGHTTP2_PING:
		/* The drain's round trip: every request the client sent before
		 * this ACK is in, so the final GOAWAY can name the real last id. */
		if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && f->draining)
			front_goaway_final(f);
		break;
	default:
		break;
	}
	return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                              size_t len, void *user_data)
{
	struct fg_call *call = stream_call(s, sid);

	if (!call) {
		nghttp2_session_consume(s, sid, len);
		return 0;
	}
	fg_call_on_req_data(call, data, len);
	return 0;
}

/* A response DATA frame, sent from the call's queue (NO_COPY). */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data)
{
	struct fg_front *f = user_data;

	(void)s;
	(void)frame;
	return fg_call_send_resp_data(source->ptr, framehd, length, &f->h2);
}

/* After the response ended, a request still streaming in is not needed:
 * RFC 9113 §8.1 lets a server reset it with NO_ERROR. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
	struct fg_call *call;

	if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
		return 0;
	call = stream_call(s, frame->hd.stream_id);
	if (!call)
		return 0;
	fg_call_on_resp_sent(call);
	if (!(call->flags & FG_CALL_REQ_END))
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
	return 0;
}

/* GOAWAY naming the last stream we processed; the connection closes once
 * the streams up to it are done.  A request the client sent after that id
 * was never processed and the client may retry it elsewhere. */
static void front_goaway_final(struct fg_front *f)
{
	if (f->goaway_final)
		return;
	f->draining = 1;
	f->goaway_final = 1;
	nghttp2_submit_goaway(f->h2.session, NGHTTP2_FLAG_NONE,
	                      nghttp2_session_get_last_proc_stream_id(f->h2.session), NGHTTP2_NO_ERROR, NULL, 0);
	fg_h2front_flush(f);
}

static void front_arm_idle(struct fg_front *f)
{
	struct timeval tv;
	int64_t us = f->worker->cfg->timeouts.idle_us;

	if (!f->idle_ev || us <= 0 || f->draining)
		return;
	tv.tv_sec = (time_t)(us / 1000000);
	tv.tv_usec = (suseconds_t)(us % 1000000);
	evtimer_add(f->idle_ev, &tv);
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user_data)
{
	struct fg_front *f = user_data;
	struct fg_call *call = stream_call(s, sid);

	if (!call)
		return 0;
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	fg_call_on_front_close(call, error_code);
	if (--f->nstreams == 0)
		front_arm_idle(f);
	return 0;
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_front *f = arg;

	/* Draining: the PING round trip took too long; close the window now. */
	if (f->draining) {
		front_goaway_final(f);
		return;
	}
	/* Only a connection with no stream at all is idle: a quiet bidi stream
	 * is a call in progress, not an idle connection. */
	if (f->nstreams == 0) {
		fg_log_debug("client_idle_close", "peer=%s", f->peer);
		front_goaway_final(f);
	}
}

static void front_closed_cb(void *owner, int err, const char *why)
{
	struct fg_front *f = owner;

	if (err == FG_ETIMEOUT) {
		/* a client that stopped reading: worth an operator's eye, unlike a hang-up */
		fg_metrics_add(&f->worker->metrics.client_write_timeouts, 1);
		fg_log(FG_LOG_INFO, "write_timeout", "peer=%s streams=%u pending_bytes=%zu", f->peer, f->nstreams,
		       fg_h2conn_pending_out(&f->h2));
	} else if (err)
		fg_log_debug("client_close", "peer=%s err=%d why=\"%s\"", f->peer, err, why);
	fg_h2front_free(f);
}

static void front_init_once(void)
{
	if (nghttp2_session_callbacks_new(&front_callbacks) != 0 || nghttp2_option_new(&front_option) != 0)
		return;
	nghttp2_session_callbacks_set_on_begin_headers_callback(front_callbacks, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(front_callbacks, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(front_callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(front_callbacks, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(front_callbacks, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(front_callbacks, on_stream_close);
	nghttp2_session_callbacks_set_send_data_callback(front_callbacks, on_send_data);
	/* Windows are returned by hand, once bytes left through the upstream. */
	nghttp2_option_set_no_auto_window_update(front_option, 1);
	/* Priority bookkeeping for closed streams costs memory and time for
	 * nothing a gRPC proxy uses (see NOTES.md). */
	nghttp2_option_set_no_closed_streams(front_option, 1);
#ifdef HAVE_NGHTTP2_OPTION_SET_STREAM_RESET_RATE_LIMIT
	nghttp2_option_set_stream_reset_rate_limit(front_option, FRONT_RST_BURST, FRONT_RST_RATE);
#endif
#ifdef HAVE_NGHTTP2_OPTION_SET_MAX_CONTINUATIONS
	nghttp2_option_set_max_continuations(front_option, FRONT_MAX_CONTINUATIONS);
#endif
}

static int front_submit_settings(struct fg_front *f)
{
	const struct fg_config *cfg = f->worker->cfg;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->limits.max_concurrent_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->limits.stream_window },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->limits.max_header_list_size },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	int rv = nghttp2_submit_settings(f->h2.session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));

	if (rv == 0)
		rv = nghttp2_session_set_local_window_size(f->h2.session, NGHTTP2_FLAG_NONE, 0,
		                                           (int32_t)cfg->limits.connection_window);
	return rv == 0 ? 0 : FG_ENOMEM;
}

int fg_h2front_accept(struct fg_worker *w, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct fg_front *f;
	nghttp2_session *session;
	int one = 1, rc;

	pthread_once(&front_once, front_init_once);
	if (!front_option || !(f = calloc(1, sizeof(*f)))) {
		close(fd);
		return FG_ENOMEM;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	f->worker = w;
	TAILQ_INIT(&f->calls);
	fg_pipeline_budget_init(&f->budget);
	fg_addr_format(sa, f->peer, sizeof(f->peer));
	fg_mempool_session_begin(&w->mempool);
	rc = nghttp2_session_server_new3(&session, front_callbacks, f, front_option, &w->mempool.mem);
	fg_mempool_session_end(&w->mempool);
	if (rc != 0) {
		close(fd);
		free(f);
		return FG_ENOMEM;
	}
	if (fg_h2conn_init(&f->h2, w->base, fd, session, &w->h2scope, front_closed_cb, f) < 0) {
		free(f);
		return FG_ENOMEM;
	}
	f->h2.nstreams = &f->nstreams;
	fg_h2conn_set_write_timeout(&f->h2, w->cfg->timeouts.write_us);
	f->idle_ev = evtimer_new(w->base, idle_cb, f);
	LIST_INSERT_HEAD(&w->fronts, f, link);
	w->nfronts++;
	fg_metrics_add(&w->metrics.connections_accepted, 1);
	fg_metrics_gauge(&w->metrics.client_connections, 1);
	if (front_submit_settings(f) < 0) {
		fg_h2front_free(f);
		return FG_ENOMEM;
	}
	front_arm_idle(f);
	if (w->draining)
		fg_h2front_drain(f);
	fg_h2front_flush(f);
	return 0;
}

void fg_h2front_drain(struct fg_front *f)
{
	if (f->draining || f->h2.closing)
		return;
	struct timeval tv = { .tv_sec = FRONT_DRAIN_PING_WAIT_S, .tv_usec = 0 };

	f->draining = 1;
	nghttp2_submit_shutdown_notice(f->h2.session);
	nghttp2_submit_ping(f->h2.session, NGHTTP2_FLAG_NONE, NULL);
	/* A client that never answers the PING still gets the final GOAWAY. */
	if (f->idle_ev)
		evtimer_add(f->idle_ev, &tv);
	fg_h2front_flush(f);
}

void fg_h2front_free(struct fg_front *f)
{
	struct fg_call *call;

	/* Calls outlive nothing they point to: each forgets this front and
	 * cancels its upstream stream before the session goes. */
	while ((call = TAILQ_FIRST(&f->calls)) != NULL)
		fg_call_on_front_gone(call);
	if (f->idle_ev)
		event_free(f->idle_ev);
	fg_h2conn_cleanup(&f->h2);
	LIST_REMOVE(f, link);
	fg_metrics_gauge(&f->worker->metrics.client_connections, -1);
	fg_worker_front_closed(f->worker, f);
	free(f);
}

void fg_h2front_flush(struct fg_front *f)
{
	fg_h2conn_want_flush(&f->h2);
}

void fg_h2front_check_stalls(struct fg_front *f, uint64_t now_us, uint64_t timeout_us)
{
	struct fg_call *call, *next;
	unsigned cut = 0;

	/* a cut call stays on the list until its stream closes; take the next first anyway */
	for (call = TAILQ_FIRST(&f->calls); call != NULL; call = next) {
		next = TAILQ_NEXT(call, front_link);
		cut += (unsigned)fg_call_check_stall(call, now_us, timeout_us);
	}
	/* one line per connection and sweep, however many streams a client stalls */
	if (cut > 0)
		fg_log(FG_LOG_INFO, "stalled_stream", "peer=%s streams_reset=%u open_streams=%u", f->peer, cut,
		       f->nstreams);
}

void fg_h2front_configure(struct fg_front *f, const struct fg_config *cfg)
{
	fg_h2conn_set_write_timeout(&f->h2, cfg->timeouts.write_us);
}
