/*
 * fg_call.h - one gRPC call in flight: the pair of HTTP/2 streams that
 * carries it, one on a client connection (the "front") and one on an
 * upstream connection, and the bytes on their way between them.
 *
 * A call forwards frames as they come, in both directions, with flow
 * control end to end: bytes received on one side are given back to that
 * side's flow-control window (nghttp2_session_consume) only once the
 * other side's session has taken them for sending.  A reader that stops
 * therefore stops its writer; the call's buffers never hold more than one
 * stream window per direction.
 *
 * Life: created when the client's request HEADERS begin; lives until both
 * its front stream has closed and its upstream stream has closed (or was
 * never opened).  Either side may end first; the other is then reset or
 * answered with a gRPC status, never with an invented OK.
 *
 * A call whose method some stage wants carries a pipeline (fg_pipeline.h)
 * that frames and edits its messages; the call knows nothing else of the
 * stages, and keeps its one job: two streams, flow control, deadlines and
 * resets.
 *
 * Everything here runs on the owning worker's loop thread.
 */
#ifndef FG_CALL_H
#define FG_CALL_H

#include <stdint.h>
#include <sys/queue.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "fg_bufq.h"
#include "fg_hdrs.h"

struct fg_front;
struct fg_h2conn;
struct fg_pipeline;
struct fg_upconn;
struct fg_worker;

enum fg_call_flag {
	FG_CALL_REQ_END = 1u << 0,       /* the request is complete (for an intercepted call: as the
	                                    pipeline says, once its stages saw the end) */
	FG_CALL_REQ_TRAILERS = 1u << 1,  /* <req_trailers> holds request trailers to forward */
	FG_CALL_RESP_STARTED = 1u << 2,  /* response HEADERS were submitted to the client */
	FG_CALL_RESP_END = 1u << 3,      /* the response's end is decided; upstream events are ignored */
	FG_CALL_RESP_TRAILERS = 1u << 4, /* <resp_hdrs> holds trailers to send after <resp_body> */
	FG_CALL_FRONT_CLOSED = 1u << 5,  /* the client stream is gone */
	FG_CALL_UP_OPEN = 1u << 6,       /* an upstream stream exists for this call */
	FG_CALL_PENDING = 1u << 7,       /* queued in the pool, waiting for a stream slot */
	FG_CALL_HDRS_TOO_BIG = 1u << 8,  /* request headers went over limits.max_header_list_size */
	FG_CALL_UP_STARTED = 1u << 9,    /* the request was handed to an upstream connection */
	FG_CALL_REQ_HDRS_DONE = 1u << 10, /* the request HEADERS block ended: later fields are trailers */
	FG_CALL_RESP_SENT = 1u << 11,    /* the response's END_STREAM went out to the client */
	FG_CALL_RESP_HDRS_IN = 1u << 12, /* the upstream's response headers arrived: a later block is trailers */
	FG_CALL_UP_RESP_DONE = 1u << 13, /* the upstream ended its response (the pipeline may still be
	                                    working on its last bytes) */
};

/* Bytes of the read being parsed that the other side may send straight
 * from the read buffer (fg_h2conn_out_borrow); they come before anything
 * queued, and the queue is empty while any are left. */
struct fg_call_lent {
	const uint8_t *p;
	size_t len;
};

struct fg_call {
	struct fg_worker *worker;       /* owner of every loop resource used here */
	struct fg_front *front;         /* client connection; NULL once the front stream closed */
	int32_t front_sid;              /* stream id on <front> */
	struct fg_upconn *up;           /* upstream connection; NULL while pending or once that connection died */
	int32_t up_sid;                 /* stream id on <up>; 0 until submitted */
	unsigned flags;                 /* enum fg_call_flag */
	struct fg_hdrs req_hdrs;        /* request headers */
	struct fg_hdrs req_trailers;    /* request trailers (rare in gRPC, forwarded all the same) */
	struct fg_hdrs resp_hdrs;       /* response headers being collected, then trailers */
	struct fg_pipeline *pl;         /* the call's stages; NULL for a pass-through call */
	size_t req_owed;                /* client bytes received and not yet given back to its window */
	size_t req_conn_back;           /* of <req_owed>, bytes whose connection window went back on
	                                   receipt (intercepted calls): only their stream window is owed */
	size_t resp_owed;               /* upstream bytes received and not yet given back */
	struct fg_bufq req_body;        /* client -> upstream bytes not yet taken by the upstream session */
	struct fg_bufq resp_body;       /* upstream -> client bytes not yet taken by the front session */
	struct fg_call_lent req_lent;   /* pass-through, inside one on_*_data only: received bytes that */
	struct fg_call_lent resp_lent;  /* go out from the read buffer (the queue is empty meanwhile) */
	struct event *deadline_ev;      /* grpc-timeout enforced here too; NULL when none */
	uint64_t deadline_us;           /* absolute, fg_clock_now_us(); valid with <deadline_ev> */
	uint64_t start_us;              /* CLOCK_MONOTONIC at request headers, for the duration histogram */
	unsigned method_idx;            /* metrics label slot (fg_metrics_method_index) */
	int status;                     /* gRPC status sent to the client; -1 until known */
	char *path;                     /* :path, kept only when the access log is on */
	uint64_t req_bytes, resp_bytes; /* body bytes forwarded each way, for the access log */
	uint64_t stall_mark;            /* <resp_bytes> when the stall sweep last saw progress (16 KiB) */
	uint64_t stall_since_us;        /* since when queued response bytes wait untaken; 0: none wait */
	uint64_t req_in;                /* request body bytes received from the client */
	uint64_t req_stall_mark;        /* <req_in> when the sweep last saw an intercepted request progress */
	uint64_t req_stall_since_us;    /* since when its bytes wait, mid-message, for the rest; 0: none */
	uint64_t budget_mark;           /* <resp_bytes> + <req_in> when the sweep last saw it move while
	                                   it held bytes behind its connection's budget */
	uint64_t budget_since_us;       /* since when it holds bytes there and moves under 16 KiB; 0: not */
	TAILQ_ENTRY(fg_call) front_link;   /* in front->calls */
	TAILQ_ENTRY(fg_call) up_link;      /* in up->calls, or in the pool's pending queue */
};

TAILQ_HEAD(fg_call_list, fg_call);

/* Ended calls a worker keeps for reuse, with their buffers. */
#define FG_CALL_POOL_MAX 256
/* Header lists larger than this are freed, not kept, when a call is pooled. */
#define FG_CALL_POOL_KEEP_BYTES (16 * 1024)
/* Body buffers up to this size are kept with a pooled call (a ranked feed
 * of 36 KiB grows its queue to 64 KiB: regrowing it on every call cost 5%
 * of a pass-through call's CPU in reallocs), as long as all the worker's
 * pooled bodies stay within FG_CALL_POOL_BODY_BYTES. */
#define FG_CALL_POOL_KEEP_BODY (128 * 1024)
#define FG_CALL_POOL_BODY_BYTES (8 * 1024 * 1024)

/* fg_call_pool_free - free the calls <w> keeps for reuse (at worker exit). */
void fg_call_pool_free(struct fg_worker *w);

/* --- from the front (client) session ----------------------------------- */

/*
 * fg_call_new - a call for client stream <sid> on <front>, linked into the
 * front's list.  Returns NULL on allocation failure (the caller resets the
 * stream).
 */
struct fg_call *fg_call_new(struct fg_worker *w, struct fg_front *front, int32_t sid);

/* fg_call_on_req_header - one request header or trailer arrived.  Returns 0;
 * headers past the size limit are dropped and remembered. */
int fg_call_on_req_header(struct fg_call *call, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen, uint8_t flags, uint32_t max_list);

/* fg_call_on_req_headers_end - the request HEADERS block is complete; the
 * call is routed upstream.  <end_stream> when the request has no body. */
void fg_call_on_req_headers_end(struct fg_call *call, int end_stream);

/* fg_call_on_req_trailers_end - request trailers complete (they end the request). */
void fg_call_on_req_trailers_end(struct fg_call *call);

/* fg_call_on_req_data - <len> request body bytes; copied. */
void fg_call_on_req_data(struct fg_call *call, const uint8_t *data, size_t len);

/* fg_call_on_req_end - the client ended its request (END_STREAM on DATA). */
void fg_call_on_req_end(struct fg_call *call);

/* fg_call_on_front_close - the client stream closed with HTTP/2 <error_code>;
 * the upstream stream is reset if it still runs.  May free <call>. */
void fg_call_on_front_close(struct fg_call *call, uint32_t error_code);

/* --- from the upstream pool and session -------------------------------- */

/*
 * fg_call_start_upstream - submit the request on <up>.  Returns 0,
 * FG_ETOOBIG when the request's header list is larger than the upstream
 * advertised it takes (its SETTINGS_MAX_HEADER_LIST_SIZE: a gRPC C-core
 * server advertises 8 KiB, and one block over it made it drop the
 * connection, with every other client's call on it: the call has then
 * been failed with RESOURCE_EXHAUSTED, naming both sizes), or another
 * negative FG_E* when nghttp2 refused the submission: the caller fails the
 * call with fg_call_fail.
 */
int fg_call_start_upstream(struct fg_call *call, struct fg_upconn *up);

/* fg_call_on_resp_header - one response header or trailer arrived. */
void fg_call_on_resp_header(struct fg_call *call, const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen, uint8_t flags);

/* fg_call_on_resp_headers_end - a response HEADERS block is complete
 * (headers, or trailers when the response had started). */
void fg_call_on_resp_headers_end(struct fg_call *call, int end_stream);

/* fg_call_on_resp_data - <len> response body bytes; copied. */
void fg_call_on_resp_data(struct fg_call *call, const uint8_t *data, size_t len);

/* fg_call_on_resp_end - the upstream ended the response with a DATA END_STREAM. */
void fg_call_on_resp_end(struct fg_call *call);

/* fg_call_on_up_close - the upstream stream closed with <error_code>.  May free <call>. */
void fg_call_on_up_close(struct fg_call *call, uint32_t error_code);

/*
 * fg_call_on_up_lost - the upstream connection carrying <call> is gone
 * (closed, broken, or never connected); <why> names the upstream and the
 * reason.  The client gets UNAVAILABLE unless its response had already
 * ended.  May free <call>.
 */
void fg_call_on_up_lost(struct fg_call *call, const char *why);

/*
 * fg_call_check_stall - the stalled-stream check (timeouts.stalled_stream),
 * run by the worker's sweep on every call of a client connection.  A call
 * whose started response has bytes queued for the client, of which the
 * client took under 16 KiB (a DATA frame's worth: a window opened a few
 * bytes at a time is no progress) for <timeout_us> while its stream or
 * connection window was shut, is cut: its client stream is reset with
 * CANCEL, its upstream stream cancelled, its queued bytes dropped (so a
 * client that grants no window cannot pin a stream window of memory per
 * stream), and it is counted (the caller logs).  A call that is merely
 * quiet (nothing queued), or waiting for a busy socket (windows open), is
 * never cut.  The same for the request of an intercepted call stopped in
 * the middle of a message (its bytes count against the buffer budgets
 * until the message completes): when the client could send the rest (its
 * windows are open) and sends under 16 KiB for <timeout_us>, the call is cut.
 * And an intercepted call that holds bytes while its connection is over
 * limits.connection_buffer, moving under 16 KiB either way for
 * <timeout_us>: streams waiting behind a budget whose client takes
 * nothing never had bytes to refuse, so the first two checks could not
 * blame them.
 * Returns 1 if the call was cut (it is freed later, when its client
 * stream closes), else 0.
 */
int fg_call_check_stall(struct fg_call *call, uint64_t now_us, uint64_t timeout_us);

/*
 * fg_call_fail - end the call now with gRPC <status> and <msg> (plain
 * text, encoded here), and cancel its upstream stream.  May free <call>.
 */
void fg_call_fail(struct fg_call *call, int status, const char *msg);

/*
 * fg_call_send_resp_data / fg_call_send_req_data - nghttp2's
 * send_data_callback for the call's DATA frames (the read callbacks set
 * NGHTTP2_DATA_FLAG_NO_COPY): append the 9-byte <framehd> and <length>
 * bytes of the response (client-bound) or request (upstream-bound) queue to
 * the connection's output <out>; bytes still lent from the read under way
 * are borrowed by <out> instead (fg_h2conn_out_borrow).  Padding is never used.  Returns 0,
 * NGHTTP2_ERR_WOULDBLOCK while <out> holds FG_H2CONN_OUT_HIGH bytes (nghttp2
 * asks again after the next write, with the same length),
 * NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE when the queue was dropped in
 * between (the stream is being reset; nghttp2 resets it, the connection
 * lives on), or NGHTTP2_ERR_CALLBACK_FAILURE when <out> cannot grow (the
 * session ends).
 */
int fg_call_send_resp_data(struct fg_call *call, const uint8_t *framehd, size_t length, struct fg_h2conn *out);
int fg_call_send_req_data(struct fg_call *call, const uint8_t *framehd, size_t length, struct fg_h2conn *out);

/* fg_call_on_resp_sent - the END_STREAM of the response was written to the
 * client: from now on the call ended as <status> whatever the client does. */
void fg_call_on_resp_sent(struct fg_call *call);

/* fg_call_on_front_gone - the client connection is being freed; cancel
 * upstream and forget the front.  May free <call>. */
void fg_call_on_front_gone(struct fg_call *call);

#endif /* FG_CALL_H */
