/*
 * fg_pipeline.h - the chain of stages (fg_stage.h) of one intercepted
 * call, and everything between the call's two HTTP/2 streams and those
 * stages: request and response bytes cut into gRPC messages and inflated
 * (fg_grpcframe), messages passed through the stages and framed again,
 * bytes held while a stage waits or the output is full, response headers
 * held so added metadata can go in them, suspended calls resumed from the
 * loop, and the byte budgets of intercepted calls.
 *
 * The call (fg_call) owns the streams and flow control and knows this
 * module only through this header: it feeds events in (fg_pipeline_*),
 * and the pipeline acts on the call only through the host operations it
 * was given (struct fg_pipeline_ops), so the unit tests drive a pipeline
 * with a fake call.  A message goes out as its original bytes when no
 * stage changed it, otherwise edited and uncompressed (flag 0, which gRPC
 * allows on any call).
 *
 * Re-entry: a host operation must not call back into the pipeline, except
 * fg_pipeline_held(), fg_pipeline_holds(), fg_pipeline_account() and
 * fg_pipeline_cancel() (a no-op then: the pipeline is already finished
 * when it asks the host to fail the call).
 * Everything runs on the owning worker's loop thread.
 */
#ifndef FG_PIPELINE_H
#define FG_PIPELINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "fg_bufq.h"
#include "fg_hdrs.h"
#include "fg_stage.h"

struct event_base;
struct fg_capture;
struct fg_config;
struct fg_pipeline;
struct fg_pipeline_env;
struct fg_metrics;

/*
 * A reference to a pipeline that stays safe after the call ended: the
 * worker's slot and that slot's generation.  Fits in a pointer-sized
 * callback argument (hiredis privdata, a timer's arg) on 64-bit hosts.
 */
typedef uint64_t fg_pipeline_handle;

/* What the pipeline asks of the call that carries it.  <host> is the
 * pointer given to fg_pipeline_begin(). */
struct fg_pipeline_ops {
	/* Send the request headers (the list given to fg_pipeline_begin, as
	 * the stages left it) upstream.  Once. */
	void (*go_upstream)(void *host);
	/* Bytes were appended to the request output queue, or held bytes
	 * were released: resume the upstream stream, settle the client window. */
	void (*request_more)(void *host);
	/* The request is complete once its queued bytes are sent, followed by
	 * trailers <t> (NULL: none).  The host may swap <t>'s contents away. */
	void (*request_end)(void *host, struct fg_hdrs *t);
	/* Response headers <h> go to the client now; with <end>, they are a
	 * trailers-only response.  The host may swap <h>'s contents away. */
	void (*response_start)(void *host, struct fg_hdrs *h, int end);
	/* As request_more for the response. */
	void (*response_more)(void *host);
	/* The response ends after its queued bytes with trailers <t> (NULL:
	 * with an END_STREAM on the last DATA).  May swap <t>'s contents. */
	void (*response_end)(void *host, struct fg_hdrs *t);
	/* End the call now with gRPC <status> and <msg> (plain text): a
	 * trailers-only response when nothing was sent, else trailers after
	 * the queued bytes; the upstream call is cancelled. */
	void (*fail)(void *host, int status, const char *msg);
	/* Cancel the upstream call (a stage answered it); no-op when none. */
	void (*cancel_upstream)(void *host);
};

/*
 * The byte budget of one client connection (limits.connection_buffer):
 * embedded in the connection, shared by its intercepted calls.
 */
struct fg_pipeline_budget {
	uint64_t held;                          /* bytes its pipelines hold now */
	uint64_t out_held;                      /* of <held>: edited output its peers have not taken */
	TAILQ_HEAD(, fg_pipeline) calls;        /* its pipelines, oldest first */
};

/* fg_pipeline_budget_init - an empty budget (no allocation). */
void fg_pipeline_budget_init(struct fg_pipeline_budget *b);

/*
 * fg_pipeline_env_new - a worker's pipeline environment: pooled
 * pipelines, the handle table, the inflate context, scratch buffers, the
 * pump event on <base>, and every stage's per-worker state (their
 * <worker_init> run here, in stage order).  <cfg> is the worker's
 * snapshot (borrowed), <slot> its counter slot; <metrics> (may be NULL)
 * is the worker's metrics block: its intercept_buffered is kept equal to
 * fg_pipeline_env_held(), and stages count into it.  <capture> (may be
 * NULL: nothing is captured) is the process's capture writer, lent to the
 * capture stage.  Returns 0 with the env
 * returned owned in <*out> (fg_pipeline_env_free), or FG_ENOMEM, or the
 * first stage's failure (then nothing is left allocated).
 */
int fg_pipeline_env_new(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg,
                        size_t slot, struct fg_metrics *metrics, struct fg_capture *capture);

/*
 * fg_pipeline_env_new_tool - fg_pipeline_env_new() for a tool that runs
 * stages on recorded calls (feedguard-replay): the stage list
 * <stages>[0..<n>-1] (at most 8: the daemon's stages, with the tool's own
 * in place of identify) and the worker env <wenv> (borrowed; its base,
 * slot, metrics, capture, state and clock are lent to every stage; its cfg
 * and pipelines are filled in).  Returns as fg_pipeline_env_new.
 */
int fg_pipeline_env_new_tool(struct fg_pipeline_env **out, const struct fg_stage_worker_env *wenv,
                             struct fg_config *cfg, const struct fg_stage *const *stages, size_t n);

/* fg_pipeline_env_config - hand a new snapshot <cfg> (borrowed) to the
 * stages' per-worker state. */
void fg_pipeline_env_config(struct fg_pipeline_env *env, struct fg_config *cfg);

/* fg_pipeline_env_free - free <env>, after its last pipeline was freed.  NULL is a no-op. */
void fg_pipeline_env_free(struct fg_pipeline_env *env);

/* fg_pipeline_env_held - bytes all pipelines of <env> hold now (a gauge). */
uint64_t fg_pipeline_env_held(const struct fg_pipeline_env *env);

/* What fg_pipeline_begin() was given about the call. */
struct fg_pipeline_args {
	struct fg_config *cfg;          /* the worker's snapshot (a reference is taken) */
	const char *path;               /* :path, <path_len> bytes */
	size_t path_len;
	struct fg_hdrs *req_hdrs;       /* the call's request headers; the stages may rewrite them
	                                   until go_upstream */
	struct fg_bufq *req_out;        /* where framed request messages go (the call's) */
	struct fg_bufq *resp_out;       /* where framed response messages go */
	struct fg_pipeline_budget *budget; /* the client connection's */
	const struct fg_pipeline_ops *ops;
	void *host;
	int64_t time_ms;                /* the call's time (ms since the epoch); 0: now
	                                   (fg_stage_call_time_ms of the request headers) */
};

/*
 * fg_pipeline_begin - the stages of a call whose request headers just
 * ended.  Each stage's <begin> decides whether it runs.  Returns 0 with
 * NULL in <*out> when no stage runs (the call passes through untouched),
 * or 0 with a pipeline returned owned in <*out> (fg_pipeline_free).  On
 * failure returns a negative FG_E* with <*status> and <msg> (<msglen>
 * bytes) saying what to tell the client: UNIMPLEMENTED (a grpc-encoding
 * feedguard cannot read, or, under a policy, a path that is not a gRPC
 * method path: fg_policy_grpc_path), UNAVAILABLE (limits.worker_buffer reached; the
 * caller counts it), INTERNAL (out of memory).  The pipeline then waits for fg_pipeline_start().
 */
int fg_pipeline_begin(struct fg_pipeline **out, struct fg_pipeline_env *env, const struct fg_pipeline_args *a,
                      int *status, char *msg, size_t msglen);

/*
 * fg_pipeline_start - run the request-header hooks now, or after the first
 * request message when a stage asked for it; then ops->go_upstream.
 * Separate from begin so the caller can store the pipeline first.
 */
void fg_pipeline_start(struct fg_pipeline *pl);

/* fg_pipeline_request_data - <len> request body bytes (borrowed). */
void fg_pipeline_request_data(struct fg_pipeline *pl, const uint8_t *data, size_t len);

/* fg_pipeline_request_end - the client ended its request; <trailers> is
 * the call's trailer list or NULL (the contents may be swapped away). */
void fg_pipeline_request_end(struct fg_pipeline *pl, struct fg_hdrs *trailers);

/* fg_pipeline_response_headers - the upstream's response headers (not
 * 1xx); <end> for a trailers-only response.  Contents may be swapped away. */
void fg_pipeline_response_headers(struct fg_pipeline *pl, struct fg_hdrs *h, int end);

/* fg_pipeline_response_data - <len> response body bytes (borrowed). */
void fg_pipeline_response_data(struct fg_pipeline *pl, const uint8_t *data, size_t len);

/* fg_pipeline_response_end - the upstream ended its response, with
 * trailers <t> or (NULL) a DATA END_STREAM.  Contents may be swapped away. */
void fg_pipeline_response_end(struct fg_pipeline *pl, struct fg_hdrs *t);

/* fg_pipeline_output_taken - the call's output queue on side <dir> lost
 * bytes to its peer: held bytes may move again (on the next loop turn;
 * safe from inside nghttp2 callbacks). */
void fg_pipeline_output_taken(struct fg_pipeline *pl, enum fg_stage_dir dir);

/*
 * fg_pipeline_note_failure - the call itself, not a stage, ended the call
 * with status text <text> (borrowed, copied): a deadline, an upstream that
 * could not be reached or reset its stream.  The stages' end sees it as
 * what feedguard answered (capture records it), unless a stage answered
 * first.  NULL <pl> does nothing.
 */
void fg_pipeline_note_failure(struct fg_pipeline *pl, const char *text);

/*
 * fg_pipeline_cancel - the call is ending without the pipeline: client
 * reset, deadline, upstream reset or loss, or the call failed.  A stage
 * that has the call suspended or held gets on_cancel(<why>); every later
 * event is ignored, and no host operation is called again.  Idempotent.
 */
void fg_pipeline_cancel(struct fg_pipeline *pl, enum fg_stage_cancel why);

/* fg_pipeline_end - the call ended with <end>; every stage that ran sees
 * it once.  Implies cancel. */
void fg_pipeline_end(struct fg_pipeline *pl, const struct fg_stage_end *end);

/*
 * fg_pipeline_leave_connection - the client stream is gone: <pl> stops
 * counting against its connection's budget (the connection may be freed
 * before the call, which waits for its upstream stream to close).  What
 * it holds still counts for the worker until fg_pipeline_free.  NULL or a
 * second call is a no-op.
 */
void fg_pipeline_leave_connection(struct fg_pipeline *pl);

/* fg_pipeline_free - back to the env's pool; the handle goes stale.  NULL is a no-op. */
void fg_pipeline_free(struct fg_pipeline *pl);

/* fg_pipeline_held - bytes the pipeline holds on side <dir> that the
 * call's own queues do not show (unfed input, a partial message). */
size_t fg_pipeline_held(const struct fg_pipeline *pl, enum fg_stage_dir dir);

/* fg_pipeline_partial - bytes of a message in the middle of arriving on
 * side <dir> when everything that came has been fed, so the rest can only
 * come from the peer; 0 while bytes wait to be fed (for a stage, for room
 * in the output, or for a budget: that wait is feedguardd's, not the
 * peer's). */
size_t fg_pipeline_partial(const struct fg_pipeline *pl, enum fg_stage_dir dir);

/*
 * fg_pipeline_holds - 1 when the call should keep the window of side
 * <dir> shut: bytes are held there (a stage waits, or the output is
 * full), or the connection or worker is over its budget and this is not
 * the connection's oldest intercepted call with input under way (in the
 * middle of a message, or with bytes waiting to be fed, its own output
 * under a stream window), or it is and the output the connection's peer
 * has not taken is past limits.connection_buffer + max_message_size.
 */
int fg_pipeline_holds(const struct fg_pipeline *pl, enum fg_stage_dir dir);

/* fg_pipeline_account - recount what the pipeline holds (its unfed input
 * and partial messages, and the call's output queues) into its
 * connection's and worker's budgets.  Cheap; run after every change. */
void fg_pipeline_account(struct fg_pipeline *pl);

/* fg_pipeline_streaming_response - 1 when response headers go out at
 * once (server streaming), 0 when they wait for the first message. */
int fg_pipeline_streaming_response(const struct fg_pipeline *pl);

/* --- for stages -------------------------------------------------------- */

/* fg_pipeline_handle_of - a handle to <pl> for asynchronous code. */
fg_pipeline_handle fg_pipeline_handle_of(const struct fg_pipeline *pl);

/* fg_pipeline_lookup - the pipeline <h> names, or NULL when its call has
 * ended (or been cancelled) since. */
struct fg_pipeline *fg_pipeline_lookup(struct fg_pipeline_env *env, fg_pipeline_handle h);

/* fg_pipeline_stage_state - stage <st>'s per-call state on <pl>, or NULL
 * when <st> does not run on the call. */
void *fg_pipeline_stage_state(struct fg_pipeline *pl, const struct fg_stage *st);

/* fg_pipeline_env_of - the env <pl> belongs to. */
struct fg_pipeline_env *fg_pipeline_env_of(const struct fg_pipeline *pl);

/*
 * fg_pipeline_resume - stage <st>, which suspended or held <pl>, is done:
 * processing goes on from the next stage, on the next loop turn.  Only
 * from the loop, after the hook that suspended returned.  Returns 0, or
 * FG_ESTATE (ignored) when <st> has nothing suspended or the call is
 * ending.
 */
int fg_pipeline_resume(struct fg_pipeline *pl, const struct fg_stage *st);

/*
 * fg_pipeline_answer - end the call with an answer of feedguard's own:
 * the upstream call is cancelled; the client gets response headers (with
 * the metadata added so far) when none went out yet, then <msg> (<len>
 * bytes, a serialized message, framed here) when <msg> is not NULL, then
 * trailers with <status> and <text> (plain; percent-encoded here).  With
 * no <msg> and nothing sent yet, that is one trailers-only response: the
 * status and the metadata in one HEADERS frame.
 * From a hook (then return FG_STAGE_DONE) or from the loop.  Stages that
 * had the call suspended or held are not told (on_cancel); each sees on_end.  Returns 0,
 * FG_ESTATE when the call is already ending, or FG_ENOMEM (the call then
 * fails with INTERNAL).
 */
int fg_pipeline_answer(struct fg_pipeline *pl, int status, const char *text, const uint8_t *msg, size_t len);

/* fg_pipeline_fail - fg_pipeline_answer without a message. */
int fg_pipeline_fail(struct fg_pipeline *pl, int status, const char *text);

/*
 * fg_pipeline_add_metadata - response metadata <name>: <value> (copied;
 * name lowercase, as HTTP/2 requires): in the response headers while
 * they are held (unary calls, until the first response message), else in
 * the trailers.  Returns 0 or FG_ENOMEM.
 */
int fg_pipeline_add_metadata(struct fg_pipeline *pl, const char *name, const char *value, size_t len);

/*
 * fg_pipeline_pending_metadata - the metadata stages added that has not
 * gone out yet (borrowed; read only): what the next headers or trailers
 * will carry besides the upstream's own.  Capture reads it last.
 */
const struct fg_hdrs *fg_pipeline_pending_metadata(const struct fg_pipeline *pl);

#endif /* FG_PIPELINE_H */
