/* fg_call.c - a client stream tied to an upstream stream; see fg_call.h. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_call.h"
#include "fg_clock.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_h2conn.h"
#include "fg_h2front.h"
#include "fg_pipeline.h"
#include "fg_log.h"
#include "fg_upstream.h"
#include "fg_worker.h"

/* Every HTTP/2 frame starts with a 9-byte header (RFC 9113 §4.1). */
#define H2_FRAME_HEADER_LEN 9

/* The grpc-status in <h>, or -1. */
static int hdrs_grpc_status(const struct fg_hdrs *h)
{
	const char *v;
	size_t len, i;
	int st = 0;

	v = fg_hdrs_find(h, "grpc-status", &len);
	if (!v || len == 0 || len > 3)
		return -1;
	for (i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		st = st * 10 + (v[i] - '0');
	}
	return st;
}

/* How a gRPC client reads a RST_STREAM (PROTOCOL-HTTP2.md, "Errors"). */
static int rst_to_status(uint32_t code)
{
	switch (code) {
	case NGHTTP2_NO_ERROR: return FG_GRPC_UNKNOWN;
	case NGHTTP2_CANCEL: return FG_GRPC_CANCELLED;
	case NGHTTP2_REFUSED_STREAM: return FG_GRPC_UNAVAILABLE;
	case NGHTTP2_ENHANCE_YOUR_CALM: return FG_GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY: return FG_GRPC_PERMISSION_DENIED;
	default: return FG_GRPC_INTERNAL;
	}
}

static nghttp2_session *front_session(const struct fg_call *call)
{
	return call->front->h2.session;
}

static nghttp2_session *up_session(const struct fg_call *call)
{
	return call->up->h2.session;
}

static void call_destroy(struct fg_call *call)
{
	fg_hdrs_free(&call->req_hdrs);
	fg_hdrs_free(&call->req_trailers);
	fg_hdrs_free(&call->resp_hdrs);
	fg_bufq_free(&call->req_body);
	fg_bufq_free(&call->resp_body);
	free(call);
}

/*
 * Back to the worker's pool with its header lists and body queues (their
 * memory kept): the next call of the same shape allocates nothing.  Every
 * other field is zeroed, exactly as a new call would be.
 */
static void call_recycle(struct fg_call *call)
{
	struct fg_worker *w = call->worker;
	struct fg_hdrs h[3] = { call->req_hdrs, call->req_trailers, call->resp_hdrs };
	struct fg_bufq q[2] = { call->req_body, call->resp_body };
	size_t i;

	if (w->ncall_pool >= FG_CALL_POOL_MAX) {
		call_destroy(call);
		return;
	}
	for (i = 0; i < 3; i++)
		if (h[i].buf.cap > FG_CALL_POOL_KEEP_BYTES)
			fg_hdrs_free(&h[i]);
		else
			fg_hdrs_reset(&h[i]);
	/* A pooled call keeps body buffers of the usual size only, and the
	 * pool as a whole a bounded amount: 256 idle calls must not pin the
	 * memory of the largest messages they ever carried. */
	for (i = 0; i < 2; i++) {
		if (q[i].cap > FG_CALL_POOL_KEEP_BODY || w->call_pool_body + q[i].cap > FG_CALL_POOL_BODY_BYTES) {
			fg_bufq_free(&q[i]);
			continue;
		}
		fg_bufq_clear(&q[i]);
		w->call_pool_body += q[i].cap;
	}
	memset(call, 0, sizeof(*call));
	call->req_hdrs = h[0];
	call->req_trailers = h[1];
	call->resp_hdrs = h[2];
	call->req_body = q[0];
	call->resp_body = q[1];
	TAILQ_INSERT_HEAD(&w->call_pool, call, front_link);
	w->ncall_pool++;
}

void fg_call_pool_free(struct fg_worker *w)
{
	struct fg_call *call;

	while ((call = TAILQ_FIRST(&w->call_pool)) != NULL) {
		TAILQ_REMOVE(&w->call_pool, call, front_link);
		call_destroy(call);
	}
	w->ncall_pool = 0;
	w->call_pool_body = 0;
}

/* A call is freed once neither side can call back into it. */
static void call_maybe_free(struct fg_call *call)
{
	if (!(call->flags & FG_CALL_FRONT_CLOSED) || (call->flags & (FG_CALL_UP_OPEN | FG_CALL_PENDING)))
		return;
	if (call->up)
		TAILQ_REMOVE(&call->up->calls, call, up_link);
	if (call->deadline_ev)
		event_free(call->deadline_ev);
	fg_pipeline_free(call->pl);
	call->pl = NULL;
	free(call->path);
	call_recycle(call);
}

/* Give <n> request bytes back to the client's windows: they left through
 * the upstream session (or were dropped), so the client may send more.
 * The connection window of those whose went back on receipt is not given
 * twice. */
static void call_consume_front(struct fg_call *call, size_t n)
{
	size_t back = call->req_conn_back < n ? call->req_conn_back : n;

	if (!call->front || n == 0)
		return;
	call->req_conn_back -= back;
	if (n > back)
		nghttp2_session_consume_connection(front_session(call), n - back);
	nghttp2_session_consume_stream(front_session(call), call->front_sid, n);
	fg_h2front_flush(call->front);
}

/*
 * An intercepted call's request bytes give the connection window back on
 * receipt; only their stream window waits for them to be edited and sent.
 * The connection window is shared by every stream of the client: held for
 * streams that wait behind limits.connection_buffer, it starved the one
 * stream allowed to go on (a grpcio channel with 40 concurrent 2 MB calls
 * spread the 16 MiB window over all of them: 9 to 13 completed, the others
 * waited for their deadline).
 * What the waiting streams hold is bounded by their own windows
 * (limits.stream_window each), as on the upstream side (fg_upstream.c).
 */
static void call_return_front_connection(struct fg_call *call, size_t n)
{
	if (!call->front || n == 0)
		return;
	nghttp2_session_consume_connection(front_session(call), n);
	call->req_conn_back += n;
	fg_h2front_flush(call->front);
}

/* Same for response bytes and the upstream stream's window.  The upstream
 * connection window is returned on receipt (fg_upstream.c): it is shared by
 * every client multiplexed on that connection, and one client that stops
 * reading must not stall the others; a call's buffer stays bounded by its
 * stream window. */
static void call_consume_up(struct fg_call *call, size_t n)
{
	if (!call->up || n == 0 || !(call->flags & FG_CALL_UP_OPEN))
		return;
	nghttp2_session_consume_stream(up_session(call), call->up_sid, n);
	fg_upconn_flush(call->up);
}

/*
 * How many received bytes side <dir> may keep unreturned to its peer's
 * window, given <body> bytes waiting to go out on the other side.
 * Pass-through: exactly those bytes (they are the same bytes), so the
 * window moves only as the other side takes them.  Intercepted: messages
 * are assembled and edited, so output and input no longer match byte for
 * byte; bytes go back at once while the output queue is under one stream
 * window and the pipeline holds nothing (no stage waits, the budgets have
 * room), and are kept otherwise.  Either way a stalled reader stalls its
 * writer and the memory of a call stays bounded.
 */
static size_t call_keep(struct fg_call *call, enum fg_stage_dir dir, size_t body, size_t owed)
{
	if (!call->pl)
		return body < owed ? body : owed;
	fg_pipeline_account(call->pl);
	if (fg_pipeline_holds(call->pl, dir))
		return owed;
	return body > call->worker->cfg->limits.stream_window ? owed : 0;
}

static void call_settle_front(struct fg_call *call)
{
	size_t keep = call_keep(call, FG_STAGE_REQUEST, fg_bufq_len(&call->req_body) + call->req_lent.len,
	                        call->req_owed);

	if (call->req_owed > keep) {
		call_consume_front(call, call->req_owed - keep);
		call->req_owed = keep;
	}
}

static void call_settle_up(struct fg_call *call)
{
	size_t keep = call_keep(call, FG_STAGE_RESPONSE, fg_bufq_len(&call->resp_body) + call->resp_lent.len,
	                        call->resp_owed);

	if (call->resp_owed > keep) {
		call_consume_up(call, call->resp_owed - keep);
		call->resp_owed = keep;
	}
}

static void call_drop_req_body(struct fg_call *call)
{
	fg_bufq_clear(&call->req_body);
	call->req_lent.len = 0;
	call_settle_front(call);
}

static void call_drop_resp_body(struct fg_call *call)
{
	fg_bufq_clear(&call->resp_body);
	call->resp_lent.len = 0;
	call_settle_up(call);
}

/* --- client-bound side ------------------------------------------------- */

/*
 * The DATA frames of a call are sent from its own queue: the read callback
 * only sizes the frame (NGHTTP2_DATA_FLAG_NO_COPY) and fg_call_send_*_data
 * appends the frame header and the queued bytes straight to the
 * connection's output, one copy fewer per byte than through nghttp2's
 * frame buffer.
 */

/*
 * Size the next DATA frame of one side: up to <len> of the <pending>
 * bytes (queued, or lent by the read under way), sent later from where
 * they are (NO_COPY).  Once the side has ended (<ended>) and this frame
 * takes the last byte, it carries EOF, and <trailers> (NULL: none) follow
 * it.
 */
static ssize_t size_frame(nghttp2_session *session, int32_t sid, size_t pending, size_t len,
                          uint32_t *data_flags, int ended, struct fg_hdrs *trailers)
{
	size_t n = pending < len ? pending : len;
	nghttp2_nv *nv;

	if (n > 0)
		*data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == pending && ended) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		if (trailers && (nv = fg_hdrs_nv(trailers)) != NULL &&
		    nghttp2_submit_trailer(session, sid, nv, trailers->n) == 0)
			*data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		return (ssize_t)n;
	}
	return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

static ssize_t resp_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct fg_call *call = source->ptr;

	(void)buf;
	(void)user_data;
	return size_frame(session, sid, fg_bufq_len(&call->resp_body) + call->resp_lent.len, len, data_flags,
	                  call->flags & FG_CALL_RESP_END,
	                  (call->flags & FG_CALL_RESP_TRAILERS) ? &call->resp_hdrs : NULL);
}

/* Append one DATA frame, header <framehd> and <length> bytes from the
 * head of <q> (or, while the read under way lends them, from <lent>), to
 * <out>.  0, NGHTTP2_ERR_WOULDBLOCK when <out> is full (one mem_send call
 * would otherwise move every stream's queued bytes into it),
 * NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE (the stream is reset) when the
 * bytes were dropped since the frame was sized, or
 * NGHTTP2_ERR_CALLBACK_FAILURE when <out> cannot grow. */
static int send_queued(struct fg_bufq *q, struct fg_call_lent *lent, const uint8_t *framehd, size_t length,
                       struct fg_h2conn *out)
{
	if (fg_h2conn_out_full(out))
		return NGHTTP2_ERR_WOULDBLOCK;
	if (lent->len > 0) {
		/* the queue is empty while bytes are lent: they are the head;
		 * past the output's borrowing mark the frame waits, and its
		 * bytes are queued once the fill returns */
		if (length > lent->len)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (!fg_h2conn_can_borrow(out))
			return NGHTTP2_ERR_WOULDBLOCK;
		if (fg_h2conn_out_append(out, framehd, H2_FRAME_HEADER_LEN) < 0 ||
		    fg_h2conn_out_borrow(out, lent->p, length) < 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		lent->p += length;
		lent->len -= length;
		return 0;
	}
	/* A frame sized before a WOULDBLOCK whose bytes were dropped since (the
	 * stream is being reset): that stream only, never the connection. */
	if (length > fg_bufq_len(q))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (fg_h2conn_out_append(out, framehd, H2_FRAME_HEADER_LEN) < 0 ||
	    fg_h2conn_out_append(out, fg_bufq_head(q), length) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	fg_bufq_consume(q, length);
	return 0;
}

int fg_call_send_resp_data(struct fg_call *call, const uint8_t *framehd, size_t length, struct fg_h2conn *out)
{
	int rv = send_queued(&call->resp_body, &call->resp_lent, framehd, length, out);

	if (rv < 0)
		return rv;
	call->resp_bytes += length;
	call_settle_up(call);
	if (call->pl)
		fg_pipeline_output_taken(call->pl, FG_STAGE_RESPONSE);
	return 0;
}

static void call_resume_front(struct fg_call *call)
{
	if (!call->front || !(call->flags & FG_CALL_RESP_STARTED))
		return;
	nghttp2_session_resume_data(front_session(call), call->front_sid);
	fg_h2front_flush(call->front);
}

/* Reset the client stream; what was queued for it can never be sent. */
static void call_rst_front(struct fg_call *call, uint32_t code)
{
	call->flags |= FG_CALL_RESP_END;
	call_drop_resp_body(call);
	if (!call->front)
		return;
	nghttp2_submit_rst_stream(front_session(call), NGHTTP2_FLAG_NONE, call->front_sid, code);
	fg_h2front_flush(call->front);
}

/* grpc-status/grpc-message into <h> (reset first), opening a
 * trailers-only response with <with_status_line>. */
static int status_hdrs(struct fg_hdrs *h, int status, const char *msg, int with_status_line)
{
	fg_hdrs_reset(h);
	if (with_status_line && fg_hdrs_add_grpc_response(h) < 0)
		return FG_ENOMEM;
	return fg_hdrs_add_grpc_status(h, status, msg);
}

/*
 * Whether the peer of <session> takes header list <h>: at most what its
 * SETTINGS_MAX_HEADER_LIST_SIZE advertised (gRPC C-core, client or
 * server: 8 KiB), counted as RFC 9113 §6.5.2 does (names, values and 32
 * bytes an entry, as fg_hdrs counts them).  A block over it may make the
 * peer drop the connection, and with it every other call on it (a
 * gateway's many users', or every client's on a shared upstream
 * connection).  0 when it does, else FG_ETOOBIG with the message for the
 * call's status in <msg>: "<what> of N bytes are over the M the <peer>
 * accepts".
 */
static int peer_takes(nghttp2_session *session, const struct fg_hdrs *h, const char *what, const char *peer,
                      char *msg, size_t len)
{
	uint32_t max = nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);

	if (h->list_size <= max)
		return 0;
	snprintf(msg, len, "%s of %zu bytes are over the %u the %s accepts (its SETTINGS_MAX_HEADER_LIST_SIZE)",
	         what, h->list_size, max, peer);
	return FG_ETOOBIG;
}

static int client_takes(const struct fg_call *call, const struct fg_hdrs *h, const char *what, char *msg,
                        size_t len)
{
	return peer_takes(front_session(call), h, what, "client", msg, len);
}

/* Trailers <h> the client would not take become an INTERNAL status that
 * says why: the call fails alone. */
static void trailers_for_client(struct fg_call *call, struct fg_hdrs *h)
{
	char msg[192];

	if (call->front && client_takes(call, h, "upstream response trailers", msg, sizeof(msg)) < 0 &&
	    status_hdrs(h, FG_GRPC_INTERNAL, msg, 0) == 0)
		call->status = FG_GRPC_INTERNAL;
}

/*
 * Answer the client with <status>: trailers-only when nothing was sent yet,
 * otherwise trailers after the response bytes already queued.  The
 * pipeline, if any, is done: a stage waiting on the call hears of it.
 */
static void call_reply_status(struct fg_call *call, int status, const char *msg)
{
	nghttp2_nv *nv;

	fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_FAILED);
	if (call->flags & FG_CALL_RESP_END)
		return;
	call->flags |= FG_CALL_RESP_END;
	call->status = status;
	fg_pipeline_note_failure(call->pl, msg);
	if (!call->front)
		return;
	if (!(call->flags & FG_CALL_RESP_STARTED)) {
		call->flags |= FG_CALL_RESP_STARTED;
		if (status_hdrs(&call->resp_hdrs, status, msg, 1) < 0 || !(nv = fg_hdrs_nv(&call->resp_hdrs)) ||
		    nghttp2_submit_response(front_session(call), call->front_sid, nv, call->resp_hdrs.n, NULL) != 0)
			nghttp2_submit_rst_stream(front_session(call), NGHTTP2_FLAG_NONE, call->front_sid,
			                          NGHTTP2_INTERNAL_ERROR);
		fg_h2front_flush(call->front);
		return;
	}
	if (status_hdrs(&call->resp_hdrs, status, msg, 0) < 0) {
		call_rst_front(call, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	call->flags |= FG_CALL_RESP_TRAILERS;
	call_resume_front(call);
}

/* --- upstream-bound side ----------------------------------------------- */

static ssize_t req_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t len,
                           uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct fg_call *call = nghttp2_session_get_stream_user_data(session, sid);

	(void)buf;
	(void)source;
	(void)user_data;
	/* The call let go of this stream (its RST_STREAM is queued): send nothing. */
	if (!call)
		return NGHTTP2_ERR_DEFERRED;
	return size_frame(session, sid, fg_bufq_len(&call->req_body) + call->req_lent.len, len, data_flags,
	                  call->flags & FG_CALL_REQ_END,
	                  (call->flags & FG_CALL_REQ_TRAILERS) ? &call->req_trailers : NULL);
}

int fg_call_send_req_data(struct fg_call *call, const uint8_t *framehd, size_t length, struct fg_h2conn *out)
{
	int rv = send_queued(&call->req_body, &call->req_lent, framehd, length, out);

	if (rv < 0)
		return rv;
	call->req_bytes += length;
	call_settle_front(call);
	if (call->pl)
		fg_pipeline_output_taken(call->pl, FG_STAGE_REQUEST);
	return 0;
}

static void call_resume_up(struct fg_call *call)
{
	if (!call->up || !(call->flags & FG_CALL_UP_OPEN))
		return;
	nghttp2_session_resume_data(up_session(call), call->up_sid);
	fg_upconn_flush(call->up);
}

/* Reset the upstream stream unless it is already gone.  <code> is what the
 * upstream handler will see: CANCEL makes it observe a cancelled call. */
static void call_rst_up(struct fg_call *call, uint32_t code)
{
	if (call->flags & FG_CALL_PENDING)
		fg_upstream_unqueue(call->worker->upstream, call);
	if (!call->up || !(call->flags & FG_CALL_UP_OPEN))
		return;
	nghttp2_submit_rst_stream(up_session(call), NGHTTP2_FLAG_NONE, call->up_sid, code);
	fg_upconn_flush(call->up);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_call *call = arg;

	/* The client asked for this deadline; a client that ignores its own
	 * deadline must not hold an upstream stream open past it. */
	fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_DEADLINE);
	call_reply_status(call, FG_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
	call_rst_up(call, NGHTTP2_CANCEL);
	call_drop_req_body(call);
}

static void call_arm_deadline(struct fg_call *call)
{
	const char *v;
	size_t len;
	int64_t usec;
	struct timeval tv;

	v = fg_hdrs_find(&call->req_hdrs, "grpc-timeout", &len);
	if (!v || fg_grpc_parse_timeout(v, len, &usec) < 0)
		return;
	call->deadline_ev = evtimer_new(call->worker->base, deadline_cb, call);
	if (!call->deadline_ev)
		return;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	call->deadline_us = fg_clock_now_us() + (uint64_t)usec;
	evtimer_add(call->deadline_ev, &tv);
}

/* --- what the pipeline asks of the call (struct fg_pipeline_ops) ------- */

/* Send the call upstream, unless it was already answered (a stage, the
 * deadline): nothing goes upstream then. */
static void op_go_upstream(void *host)
{
	struct fg_call *call = host;

	if (call->flags & FG_CALL_RESP_END)
		return;
	fg_upstream_submit(call->worker->upstream, call);
}

static void op_request_more(void *host)
{
	struct fg_call *call = host;

	call_settle_front(call);
	call_resume_up(call);
}

/* Swap the contents of two header lists: both keep their memory. */
static void hdrs_swap(struct fg_hdrs *a, struct fg_hdrs *b)
{
	struct fg_hdrs tmp = *a;

	*a = *b;
	*b = tmp;
}

static void op_request_end(void *host, struct fg_hdrs *t)
{
	struct fg_call *call = host;

	call->flags |= FG_CALL_REQ_END;
	if (t) {
		hdrs_swap(&call->req_trailers, t);
		call->flags |= FG_CALL_REQ_TRAILERS;
	}
	call_settle_front(call);
	call_resume_up(call);
}

/* Send response headers <h> to the client (and forget them). */
static void call_start_response(struct fg_call *call, struct fg_hdrs *h, int end_stream)
{
	nghttp2_data_provider prd = { .source.ptr = call, .read_callback = resp_read_cb };
	nghttp2_nv *nv;
	char msg[192];

	if (client_takes(call, h, "upstream response headers", msg, sizeof(msg)) < 0) {
		/* as for headers that could not be kept: the call fails alone
		 * (not fg_call_fail: this may run inside the upstream's callbacks) */
		fg_hdrs_reset(h);
		call_reply_status(call, FG_GRPC_INTERNAL, msg);
		call_rst_up(call, NGHTTP2_CANCEL);
		return;
	}
	nv = fg_hdrs_nv(h);

	call->flags |= FG_CALL_RESP_STARTED;
	if (end_stream) {
		call->flags |= FG_CALL_RESP_END;
		call->status = hdrs_grpc_status(h);
	}
	if (!nv || nghttp2_submit_response(front_session(call), call->front_sid, nv, h->n,
	                                   end_stream ? NULL : &prd) != 0) {
		call_rst_front(call, NGHTTP2_INTERNAL_ERROR);
		call_rst_up(call, NGHTTP2_CANCEL);
		return;
	}
	fg_hdrs_reset(h);
	fg_h2front_flush(call->front);
}

static void op_response_start(void *host, struct fg_hdrs *h, int end)
{
	struct fg_call *call = host;

	if (!call->front || (call->flags & FG_CALL_RESP_END))
		return;
	call_start_response(call, h, end);
}

static void op_response_more(void *host)
{
	struct fg_call *call = host;

	call_settle_up(call);
	call_resume_front(call);
}

/* The response's end: trailers <t> (or none) after the queued bytes. */
static void op_response_end(void *host, struct fg_hdrs *t)
{
	struct fg_call *call = host;

	if (call->flags & FG_CALL_RESP_END)
		return;
	call->flags |= FG_CALL_RESP_END;
	if (t) {
		hdrs_swap(&call->resp_hdrs, t);
		call->flags |= FG_CALL_RESP_TRAILERS;
		call->status = hdrs_grpc_status(&call->resp_hdrs);
		trailers_for_client(call, &call->resp_hdrs);
	}
	call_settle_up(call);
	call_resume_front(call);
}

static void op_fail(void *host, int status, const char *msg)
{
	struct fg_call *call = host;

	call_reply_status(call, status, msg);
	call_rst_up(call, NGHTTP2_CANCEL);
	call_drop_req_body(call);
}

static void op_cancel_upstream(void *host)
{
	struct fg_call *call = host;

	call_rst_up(call, NGHTTP2_CANCEL);
	call_drop_req_body(call);
}

static const struct fg_pipeline_ops call_pipeline_ops = {
	.go_upstream = op_go_upstream,
	.request_more = op_request_more,
	.request_end = op_request_end,
	.response_start = op_response_start,
	.response_more = op_response_more,
	.response_end = op_response_end,
	.fail = op_fail,
	.cancel_upstream = op_cancel_upstream,
};

/* --- public: from the front session ------------------------------------ */

struct fg_call *fg_call_new(struct fg_worker *w, struct fg_front *front, int32_t sid)
{
	struct fg_call *call = TAILQ_FIRST(&w->call_pool);

	if (call) {
		TAILQ_REMOVE(&w->call_pool, call, front_link);
		w->ncall_pool--;
		w->call_pool_body -= call->req_body.cap + call->resp_body.cap;
	} else if (!(call = calloc(1, sizeof(*call)))) {
		return NULL;
	}
	call->worker = w;
	call->status = -1;
	call->start_us = fg_clock_now_us();
	call->front = front;
	call->front_sid = sid;
	TAILQ_INSERT_TAIL(&front->calls, call, front_link);
	fg_metrics_add(&w->metrics.calls_started, 1);
	fg_metrics_gauge(&w->metrics.active_streams, 1);
	return call;
}

int fg_call_on_req_header(struct fg_call *call, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen, uint8_t flags, uint32_t max_list)
{
	struct fg_hdrs *h = (call->flags & FG_CALL_REQ_HDRS_DONE) ? &call->req_trailers : &call->req_hdrs;
	/* A request's headers and trailers share one max_header_list_size:
	 * RFC 9113 bounds each field section alone, but a stream whose trailers
	 * had their own let a client make feedguardd hold twice the documented
	 * headers per stream (gRPC requests carry no trailers anyway). */
	size_t held = h->list_size + (h == &call->req_trailers ? call->req_hdrs.list_size : 0);

	if (call->flags & FG_CALL_HDRS_TOO_BIG)
		return 0;
	if (held + namelen + valuelen + 32 > max_list ||
	    fg_hdrs_add(h, name, namelen, value, valuelen, flags) < 0)
		call->flags |= FG_CALL_HDRS_TOO_BIG;
	return 0;
}

/* The stages a call to <path> needs, if any.  0, or -1 when the call failed. */
static int call_begin_pipeline(struct fg_call *call, const char *path, size_t len)
{
	struct fg_worker *w = call->worker;
	struct fg_pipeline_args a = {
		.cfg = w->cfg, .path = path, .path_len = len, .req_hdrs = &call->req_hdrs,
		.req_out = &call->req_body, .resp_out = &call->resp_body, .budget = &call->front->budget,
		.ops = &call_pipeline_ops, .host = call,
	};
	char msg[256];
	int status;

	if (fg_pipeline_begin(&call->pl, w->pipelines, &a, &status, msg, sizeof(msg)) < 0) {
		if (status == FG_GRPC_UNAVAILABLE)
			fg_metrics_add(&w->metrics.buffer_refused_worker, 1);
		fg_call_fail(call, status, msg);
		return -1;
	}
	return 0;
}

void fg_call_on_req_headers_end(struct fg_call *call, int end_stream)
{
	const char *path;
	size_t len;

	call->flags |= FG_CALL_REQ_HDRS_DONE;
	if (call->flags & FG_CALL_HDRS_TOO_BIG) {
		fg_call_fail(call, FG_GRPC_RESOURCE_EXHAUSTED,
		             "request headers exceed limits.max_header_list_size");
		return;
	}
	path = fg_hdrs_find(&call->req_hdrs, ":path", &len);
	if (path && call->worker->access_fd >= 0)
		call->path = strndup(path, len);
	if (path)
		call->method_idx = fg_metrics_method_index(call->worker->cfg, path, len);
	else
		call->method_idx = (unsigned)call->worker->cfg->metrics.nmethods;
	if (path && call_begin_pipeline(call, path, len) < 0)
		return;
	call_arm_deadline(call);
	if (!call->pl) {
		if (end_stream)
			call->flags |= FG_CALL_REQ_END;
		fg_upstream_submit(call->worker->upstream, call);
		return;
	}
	/* Every way a request ends reaches the stages, this one included. */
	fg_pipeline_start(call->pl);
	if (end_stream)
		fg_pipeline_request_end(call->pl, NULL);
}

void fg_call_on_req_trailers_end(struct fg_call *call)
{
	if (call->flags & FG_CALL_HDRS_TOO_BIG) {
		fg_call_fail(call, FG_GRPC_RESOURCE_EXHAUSTED,
		             "request headers and trailers together exceed limits.max_header_list_size");
		return;
	}
	if (call->pl) {
		fg_pipeline_request_end(call->pl, &call->req_trailers);
		return;
	}
	call->flags |= FG_CALL_REQ_TRAILERS;
	fg_call_on_req_end(call);
}

/*
 * Pass-through bytes of the read under way, <len> at <*data>, with
 * nothing queued before them: let connection <to> (the other side, its
 * stream resumed) take them now, straight from the read buffer, through
 * <lent> (size_frame and send_queued read it).  Returns how many it left,
 * which then start at <*data>: the caller queues them as before.  Zero
 * when the stream was reset meanwhile (call_drop_*_body forgets <lent>).
 */
static size_t lend(struct fg_call_lent *lent, struct fg_h2conn *to, const uint8_t **data, size_t len)
{
	*lent = (struct fg_call_lent){ *data, len };
	fg_h2conn_fill(to);
	*data = lent->p;
	len = lent->len;
	lent->len = 0;
	return len;
}

void fg_call_on_req_data(struct fg_call *call, const uint8_t *data, size_t len)
{
	/* Nobody will read it: give the window back at once. */
	if ((call->flags & FG_CALL_RESP_END) && !(call->flags & FG_CALL_UP_OPEN)) {
		call_consume_front(call, len);
		return;
	}
	call->req_owed += len;
	call->req_in += len;
	if (call->pl) {
		call_return_front_connection(call, len);
		fg_pipeline_request_data(call->pl, data, len);
		call_settle_front(call);
		return;
	}
	if (fg_bufq_len(&call->req_body) == 0 && call->up && (call->flags & FG_CALL_UP_OPEN) &&
	    fg_h2conn_can_borrow(&call->up->h2)) {
		call_resume_up(call);
		len = lend(&call->req_lent, &call->up->h2, &data, len);
	}
	if (fg_bufq_append(&call->req_body, data, len) < 0) {
		fg_call_fail(call, FG_GRPC_RESOURCE_EXHAUSTED, "feedguardd is out of memory");
		return;
	}
	call_settle_front(call);
	call_resume_up(call);
}

void fg_call_on_req_end(struct fg_call *call)
{
	if (call->pl) {
		fg_pipeline_request_end(call->pl, NULL);
		return;
	}
	call->flags |= FG_CALL_REQ_END;
	call_resume_up(call);
}

/* An access-log line is cut at 4 KiB (fg_log.h): a quoted path needs no more. */
#define FG_CALL_LOG_PATH_MAX 4096

/* The client's :path as an access-log value: a gRPC method's as it came,
 * anything else quoted (a '"' or '=' in a path a client chose would
 * otherwise split the logfmt line into keys of its choosing). */
static const char *log_path(const char *path, char *buf, size_t len)
{
	if (!path)
		return "-";
	if (path[strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-")] == '\0')
		return path;
	return fg_log_quote(buf, len, path);
}

static void call_record(struct fg_call *call, uint32_t error_code)
{
	struct fg_metrics *m = &call->worker->metrics;
	int status = call->status;
	uint64_t now = fg_clock_now_us(), usec = now - call->start_us;
	char qpath[FG_CALL_LOG_PATH_MAX];

	/* What the client saw: a reset before our END_STREAM reached it ends
	 * the call as the reset says, even if the upstream had said OK. */
	if (status < 0 || (error_code != NGHTTP2_NO_ERROR && !(call->flags & FG_CALL_RESP_SENT)))
		status = rst_to_status(error_code);
	if (call->pl) {
		struct fg_stage_end end = { .status = status, .req_bytes = call->req_bytes,
		                            .resp_bytes = call->resp_bytes, .start_us = call->start_us, .end_us = now };
		fg_pipeline_end(call->pl, &end);
	}
	fg_metrics_record_call(m, call->method_idx, status, usec);
	fg_metrics_gauge(&m->active_streams, -1);
	if (call->worker->access_fd >= 0)
		fg_log_to(call->worker->access_fd, "access",
		          "peer=%s method=%s code=%s duration_ms=%.3f req_bytes=%llu resp_bytes=%llu",
		          call->front ? call->front->peer : "-", log_path(call->path, qpath, sizeof(qpath)),
		          fg_grpc_status_name(status), (double)usec / 1000.0,
		          (unsigned long long)call->req_bytes, (unsigned long long)call->resp_bytes);
}

void fg_call_on_front_close(struct fg_call *call, uint32_t error_code)
{
	fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_CLIENT);
	fg_pipeline_leave_connection(call->pl);
	call_record(call, error_code);
	call_drop_req_body(call);
	call_drop_resp_body(call);
	/* A response that ended well lets the upstream stream finish quietly;
	 * otherwise the client went away and the handler must see a cancel. */
	call_rst_up(call, (call->flags & FG_CALL_RESP_END) && error_code == NGHTTP2_NO_ERROR
	                      ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
	TAILQ_REMOVE(&call->front->calls, call, front_link);
	call->front = NULL;
	call->flags |= FG_CALL_FRONT_CLOSED;
	call_maybe_free(call);
}

void fg_call_on_resp_sent(struct fg_call *call)
{
	call->flags |= FG_CALL_RESP_SENT;
}

void fg_call_on_front_gone(struct fg_call *call)
{
	fg_call_on_front_close(call, NGHTTP2_CANCEL);
}

/* --- public: from the upstream pool and session ------------------------ */

/* Headers a proxy must not forward as they are: grpc-timeout is rewritten
 * to the time left, since the call may have waited in the queue. */
static void nv_update_timeout(struct fg_call *call, nghttp2_nv *nv, size_t n, char *buf, size_t len)
{
	int64_t usec;
	size_t i;

	if (!call->deadline_ev)
		return;
	usec = (int64_t)(call->deadline_us - fg_clock_now_us());
	if (usec < 1)
		usec = 1;
	for (i = 0; i < n; i++) {
		if (nv[i].namelen == 12 && memcmp(nv[i].name, "grpc-timeout", 12) == 0) {
			nv[i].value = (uint8_t *)buf;
			nv[i].valuelen = fg_grpc_format_timeout(usec, buf, len);
		}
	}
}

int fg_call_start_upstream(struct fg_call *call, struct fg_upconn *up)
{
	nghttp2_data_provider prd = { .source.ptr = call, .read_callback = req_read_cb };
	const nghttp2_data_provider *p = &prd;
	char tbuf[24], msg[192];
	nghttp2_nv *nv;
	int32_t sid;

	/* The grpc-timeout written below keeps its length within a few bytes. */
	if (peer_takes(up->h2.session, &call->req_hdrs, "request metadata", "upstream", msg, sizeof(msg)) < 0) {
		fg_call_fail(call, FG_GRPC_RESOURCE_EXHAUSTED, msg);
		return FG_ETOOBIG;
	}
	if (!(nv = fg_hdrs_nv(&call->req_hdrs)))
		return FG_ENOMEM;
	nv_update_timeout(call, nv, call->req_hdrs.n, tbuf, sizeof(tbuf));
	if ((call->flags & FG_CALL_REQ_END) && !(call->flags & FG_CALL_REQ_TRAILERS) &&
	    fg_bufq_len(&call->req_body) == 0)
		p = NULL;
	sid = nghttp2_submit_request(up->h2.session, NULL, nv, call->req_hdrs.n, p, call);
	if (sid < 0)
		return FG_ENOMEM;
	call->up = up;
	call->up_sid = sid;
	call->flags |= FG_CALL_UP_OPEN | FG_CALL_UP_STARTED;
	TAILQ_INSERT_TAIL(&up->calls, call, up_link);
	up->nstreams++;
	fg_upconn_flush(up);
	return 0;
}

void fg_call_on_resp_header(struct fg_call *call, const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen, uint8_t flags)
{
	if (call->flags & FG_CALL_RESP_END)
		return;
	/* Stages may change the body's length (RFC 9113 §8.1.1). */
	if (call->pl && namelen == 14 && memcmp(name, "content-length", 14) == 0)
		return;
	/* Bounded by the SETTINGS_MAX_HEADER_LIST_SIZE we advertise upstream;
	 * a failed copy is reported when the block ends. */
	if (fg_hdrs_add(&call->resp_hdrs, name, namelen, value, valuelen, flags) < 0)
		call->flags |= FG_CALL_HDRS_TOO_BIG;
}

/* The upstream's end of response takes effect for a pass-through call:
 * trailers (in resp_hdrs) or a DATA END_STREAM. */
static void call_resp_end(struct fg_call *call, int trailers)
{
	call->flags |= FG_CALL_UP_RESP_DONE;
	if (call->pl) {
		fg_pipeline_response_end(call->pl, trailers ? &call->resp_hdrs : NULL);
		return;
	}
	call->flags |= FG_CALL_RESP_END;
	if (trailers) {
		call->flags |= FG_CALL_RESP_TRAILERS;
		call->status = hdrs_grpc_status(&call->resp_hdrs);
		trailers_for_client(call, &call->resp_hdrs);
	}
	call_resume_front(call);
}

void fg_call_on_resp_headers_end(struct fg_call *call, int end_stream)
{
	const char *st;
	size_t len;

	if (call->flags & FG_CALL_RESP_END)
		return;
	if (call->flags & FG_CALL_HDRS_TOO_BIG) {
		call_reply_status(call, FG_GRPC_INTERNAL, "upstream response headers could not be kept");
		call_rst_up(call, NGHTTP2_CANCEL);
		return;
	}
	if (!call->front) {
		fg_hdrs_reset(&call->resp_hdrs);
		return;
	}
	if (call->flags & FG_CALL_RESP_HDRS_IN) {
		/* Trailers: they go out once the body queued before them has. */
		call_resp_end(call, 1);
		return;
	}
	/* 1xx responses are interim (RFC 9110 §15.2); gRPC has no use for them. */
	st = fg_hdrs_find(&call->resp_hdrs, ":status", &len);
	if (st && len == 3 && st[0] == '1' && !end_stream) {
		fg_hdrs_reset(&call->resp_hdrs);
		return;
	}
	call->flags |= FG_CALL_RESP_HDRS_IN;
	if (end_stream)
		call->flags |= FG_CALL_UP_RESP_DONE;
	if (call->pl) {
		fg_pipeline_response_headers(call->pl, &call->resp_hdrs, end_stream);
		return;
	}
	call_start_response(call, &call->resp_hdrs, end_stream);
}

void fg_call_on_resp_data(struct fg_call *call, const uint8_t *data, size_t len)
{
	if (!call->front || (call->flags & FG_CALL_RESP_END)) {
		call_consume_up(call, len);
		return;
	}
	call->resp_owed += len;
	if (call->pl) {
		fg_pipeline_response_data(call->pl, data, len);
		call_settle_up(call);
		return;
	}
	if (fg_bufq_len(&call->resp_body) == 0 && (call->flags & FG_CALL_RESP_STARTED) &&
	    fg_h2conn_can_borrow(&call->front->h2)) {
		call_resume_front(call);
		len = lend(&call->resp_lent, &call->front->h2, &data, len);
	}
	if (fg_bufq_append(&call->resp_body, data, len) < 0) {
		call_reply_status(call, FG_GRPC_RESOURCE_EXHAUSTED, "feedguardd is out of memory");
		call_rst_up(call, NGHTTP2_CANCEL);
		call_settle_up(call);
		return;
	}
	call_settle_up(call);
	call_resume_front(call);
}

void fg_call_on_resp_end(struct fg_call *call)
{
	if (call->flags & (FG_CALL_RESP_END | FG_CALL_UP_RESP_DONE))
		return;
	call_resp_end(call, 0);
}

/* The code the client gets for an upstream RST_STREAM.  REFUSED_STREAM
 * promises the call was not processed (RFC 9113 §8.7): only true before any
 * response byte went out.  Codes about our hop to the upstream
 * (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED...) and a NO_ERROR
 * before the end are INTERNAL_ERROR to the client. */
static uint32_t up_rst_to_front(uint32_t code, unsigned started)
{
	switch (code) {
	case NGHTTP2_REFUSED_STREAM:
		return started ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_REFUSED_STREAM;
	case NGHTTP2_CANCEL:
	case NGHTTP2_ENHANCE_YOUR_CALM:
	case NGHTTP2_INADEQUATE_SECURITY:
		return code;
	default:
		return NGHTTP2_INTERNAL_ERROR;
	}
}

void fg_call_on_up_close(struct fg_call *call, uint32_t error_code)
{
	struct fg_upconn *up = call->up;

	call->flags &= ~FG_CALL_UP_OPEN;
	/* Request bytes the upstream will never take: free the client's window. */
	call_drop_req_body(call);
	/* UP_RESP_DONE: the upstream ended well; the pipeline may still be
	 * working on the last bytes, and ends the response itself. */
	if (!(call->flags & (FG_CALL_RESP_END | FG_CALL_UP_RESP_DONE))) {
		fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_UPSTREAM);
		call_rst_front(call, up_rst_to_front(error_code, call->flags & FG_CALL_RESP_STARTED));
	}
	up->nstreams--;
	fg_upconn_stream_closed(up);
	call_maybe_free(call);
}

void fg_call_on_up_lost(struct fg_call *call, const char *why)
{
	int was_open = call->flags & FG_CALL_UP_OPEN;

	call->flags &= ~FG_CALL_UP_OPEN;
	if (call->up) {
		TAILQ_REMOVE(&call->up->calls, call, up_link);
		if (was_open)
			call->up->nstreams--;
		call->up = NULL;
	}
	if (!(call->flags & (FG_CALL_RESP_END | FG_CALL_UP_RESP_DONE))) {
		fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_UPSTREAM);
		call_reply_status(call, FG_GRPC_UNAVAILABLE, why);
	}
	call_drop_req_body(call);
	call_maybe_free(call);
}

/* Whether the client's flow control, not our socket, keeps <call>'s
 * queued bytes: its stream or connection window is shut.  A stream
 * waiting for its turn on a busy socket is the write timeout's business. */
static int call_window_shut(const struct fg_call *call)
{
	nghttp2_session *s = front_session(call);

	return nghttp2_session_get_stream_remote_window_size(s, call->front_sid) <= 0 ||
	       nghttp2_session_get_remote_window_size(s) <= 0;
}

/* Whether the client may still send on <call>'s stream: both its stream
 * and connection windows toward us are open. */
static int call_client_may_send(const struct fg_call *call)
{
	nghttp2_session *s = front_session(call);

	return nghttp2_session_get_stream_local_window_size(s, call->front_sid) > 0 &&
	       nghttp2_session_get_local_window_size(s) > 0;
}

/*
 * What counts as progress for the stall sweep: a DATA frame's worth
 * (RFC 9113's default SETTINGS_MAX_FRAME_SIZE, 16 KiB) moved since the
 * sweep last saw progress.  A client that moves a few bytes at a time (a
 * window opened by 16 bytes a second, a request sent a byte a second:
 * slowloris) is stalled all the same; a slow reader on a real link moves
 * far more than this in any timeouts.stalled_stream.
 */
#define STALL_MIN_PROGRESS (16u * 1024)

/* Whether an intercepted call's request has sat in the middle of a
 * message, with the client free to send the rest, for <timeout_us>. */
static int call_req_stalled(struct fg_call *call, uint64_t now_us, uint64_t timeout_us)
{
	int waiting = call->front && call->pl && !(call->flags & FG_CALL_RESP_END) &&
	              fg_pipeline_partial(call->pl, FG_STAGE_REQUEST) > 0 && call_client_may_send(call);

	if (!waiting || call->req_in - call->req_stall_mark >= STALL_MIN_PROGRESS || call->req_stall_since_us == 0) {
		call->req_stall_mark = call->req_in;
		call->req_stall_since_us = waiting ? now_us : 0;
		return 0;
	}
	return now_us - call->req_stall_since_us >= timeout_us;
}

/* Cut a stalled stream: its client stream reset with CANCEL, its upstream
 * call cancelled, what it holds dropped; counted (the caller logs). */
static void call_cut_stalled(struct fg_call *call, const char *side, size_t held, uint64_t since_us,
                             uint64_t now_us)
{
	fg_metrics_add(&call->worker->metrics.client_stalled_streams, 1);
	fg_log_debug("stalled_stream", "peer=%s stream=%d side=%s held_bytes=%zu stalled_ms=%llu",
	             call->front->peer, (int)call->front_sid, side, held,
	             (unsigned long long)((now_us - since_us) / 1000));
	fg_pipeline_cancel(call->pl, FG_STAGE_CANCEL_CLIENT);
	call_rst_up(call, NGHTTP2_CANCEL);
	call_drop_req_body(call);
	call_rst_front(call, NGHTTP2_CANCEL);       /* drops the queued bytes too */
}

/* Whether an intercepted call has held bytes behind its connection's
 * budget, moving under STALL_MIN_PROGRESS either way, for <timeout_us>;
 * <*held> gets what it holds. */
static int call_budget_stalled(struct fg_call *call, uint64_t now_us, uint64_t timeout_us, size_t *held)
{
	uint64_t moved = call->resp_bytes + call->req_in;
	int waiting;

	*held = 0;
	waiting = call->front && call->pl && !(call->flags & FG_CALL_RESP_END) &&
	          call->front->budget.held > call->worker->cfg->limits.connection_buffer;
	if (waiting)
		*held = fg_pipeline_held(call->pl, FG_STAGE_REQUEST) + fg_pipeline_held(call->pl, FG_STAGE_RESPONSE) +
		        fg_bufq_len(&call->resp_body);
	waiting = waiting && *held > 0;
	if (!waiting || moved - call->budget_mark >= STALL_MIN_PROGRESS || call->budget_since_us == 0) {
		call->budget_mark = moved;
		call->budget_since_us = waiting ? now_us : 0;
		return 0;
	}
	return now_us - call->budget_since_us >= timeout_us;
}

int fg_call_check_stall(struct fg_call *call, uint64_t now_us, uint64_t timeout_us)
{
	size_t held, queued = fg_bufq_len(&call->resp_body) +
	                      (call->pl ? fg_pipeline_held(call->pl, FG_STAGE_RESPONSE) : 0);

	if (call_req_stalled(call, now_us, timeout_us)) {
		call_cut_stalled(call, "request", fg_pipeline_held(call->pl, FG_STAGE_REQUEST),
		                 call->req_stall_since_us, now_us);
		return 1;
	}
	if (call_budget_stalled(call, now_us, timeout_us, &held)) {
		call_cut_stalled(call, "budget", held, call->budget_since_us, now_us);
		return 1;
	}

	/* Only bytes the client could take and refuses count: before the
	 * response starts (held headers of an intercepted call) the wait is
	 * the upstream's, and with a window open it is the socket's. */
	if (!call->front || !(call->flags & FG_CALL_RESP_STARTED) || queued == 0 ||
	    call->resp_bytes - call->stall_mark >= STALL_MIN_PROGRESS || call->stall_since_us == 0 ||
	    !call_window_shut(call)) {
		call->stall_mark = call->resp_bytes;
		call->stall_since_us = call->front && queued ? now_us : 0;
		return 0;
	}
	if (now_us - call->stall_since_us < timeout_us)
		return 0;
	call_cut_stalled(call, "response", queued, call->stall_since_us, now_us);
	return 1;
}

void fg_call_fail(struct fg_call *call, int status, const char *msg)
{
	call_reply_status(call, status, msg);
	call_rst_up(call, NGHTTP2_CANCEL);
	call_drop_req_body(call);
	call_maybe_free(call);
}
