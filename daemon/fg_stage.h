/*
 * fg_stage.h - the contract of a stage: one job done on every intercepted
 * call of the methods and bands that need it (identify the caller, gate
 * on screen time, strip profiling fields, filter harmful items, account,
 * capture).
 *
 * A stage is a constant table of hooks (struct fg_stage) plus two blocks
 * of state the pipeline allocates for it: one per worker (<worker_size>
 * bytes, made by <worker_init> when the worker starts, so a Redis link or
 * a capture queue never becomes a field of struct fg_worker) and one per
 * call (<call_size> bytes, zeroed before <begin>).  The pipeline
 * (fg_pipeline.h) runs the stages of a call in the one order of
 * fg_pipeline_env.c's table and owns everything between them: framing and
 * inflating messages, holding bytes, flow-control pressure, metadata.
 *
 * What a hook may do, and how it says so:
 *   - return FG_STAGE_CONTINUE: the next stage sees the event;
 *   - change the headers or trailers it is handed (they are the ones that
 *     go out), or the message (write the new bytes to <msg->out>, set
 *     <msg->changed>; or set <msg->drop>);
 *   - return FG_STAGE_SUSPEND: nothing more happens on that side of the
 *     call (bytes that arrive are held, with their flow-control window)
 *     until fg_pipeline_resume(); the next stage then sees the event;
 *   - return FG_STAGE_HOLD_RESPONSE (request side only): the request goes
 *     on upstream, and the response waits before this stage until
 *     fg_pipeline_resume(): a Redis check runs beside the ranker;
 *   - call fg_pipeline_answer() or fg_pipeline_fail() and return
 *     FG_STAGE_DONE: the call ends with that answer and the upstream call,
 *     if any, is cancelled;
 *   - fg_pipeline_add_metadata(): response metadata, in the headers while
 *     they are held (unary calls), otherwise in the trailers.
 * A suspended stage learns of a client cancel, the deadline or an upstream
 * reset through <on_cancel>, once; a resume or answer that arrives after
 * that (or after the call was recycled) is ignored: asynchronous code
 * keeps a handle (fg_pipeline_handle), never a pointer to the call.
 *
 * Every hook runs on the worker's loop thread, never inside another
 * stage's hook; a hook must not block.  A NULL hook is CONTINUE.
 */
#ifndef FG_STAGE_H
#define FG_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_grpcframe.h"
#include "fg_hdrs.h"
#include "fg_items.h"
#include "fg_keyring.h"
#include "fg_pbwire.h"

struct fg_capture;
struct fg_config;
struct fg_metrics;
struct fg_pipeline_env;
struct fg_policy;
struct fg_policy_method;
struct fg_pipeline;
struct fg_stage_record;
struct fg_state;
struct event_base;

/* Room for a user id: FG_USER_ID_MAX (fg_policy_eval.h) bytes. */
#define FG_STAGE_USER_ID_MAX 511

/* Longest status text the pipeline keeps of its own answer. */
#define FG_STAGE_ANSWER_MAX 256

/* What a hook returns. */
enum fg_stage_rc {
	FG_STAGE_CONTINUE = 0,      /* the next stage sees the event */
	FG_STAGE_SUSPEND = 1,       /* this side waits for fg_pipeline_resume() */
	FG_STAGE_HOLD_RESPONSE = 2, /* request side: go on; the response waits for fg_pipeline_resume() */
	FG_STAGE_DONE = 3,          /* the stage answered or failed the call */
};

/* What <begin> returns. */
enum fg_stage_begin {
	FG_STAGE_SKIP = 0,          /* this stage has nothing to do on the call */
	FG_STAGE_RUN = 1,           /* run this stage's hooks on the call */
};

/* Why a suspended call will not be resumed. */
enum fg_stage_cancel {
	FG_STAGE_CANCEL_CLIENT = 1, /* the client reset its stream or went away */
	FG_STAGE_CANCEL_DEADLINE,   /* grpc-timeout passed */
	FG_STAGE_CANCEL_UPSTREAM,   /* the upstream reset or was lost */
	FG_STAGE_CANCEL_FAILED,     /* the call failed (a malformed message, a limit) */
};

/* The two sides of a call. */
enum fg_stage_dir {
	FG_STAGE_REQUEST = 0,
	FG_STAGE_RESPONSE = 1,
};

/*
 * What the stages of one call tell each other, owned by the pipeline.  The
 * identify stage fills <band> and <user>; later stages read them.
 */
struct fg_stage_call {
	struct fg_config *cfg;              /* the snapshot the call holds a reference to */
	const struct fg_policy *pol;        /* cfg->policy */
	const struct fg_policy_method *m;   /* the policy's entry for the call's method */
	size_t slot;                        /* the worker's counter slot */
	size_t band;                        /* valid once <band_known> */
	unsigned band_known;
	unsigned need_first_message;        /* a stage reads the first request message before
	                                       the request headers go upstream */
	unsigned need_user;                 /* some stage needs the pseudonymous user key */
	unsigned need_user_all;             /* ... under every key of the ring (state written under
	                                       an older key is still read) */
	char user[FG_KEYRING_PSEUDONYM_MAX]; /* "" when the call carries none, or none is needed */
	char user_old[FG_KEYRING_MAX_KEYS - 1][FG_KEYRING_PSEUDONYM_MAX]; /* need_user_all: under the
	                                       older keys, newest first */
	size_t nuser_old;
	/* Exposure allowances (the gate sets them, the filter spends them). */
	unsigned exposure_on;               /* the filter removes items over <exposure_left> */
	uint32_t exposure_left[FG_ITEMS_MAX_COUNTERS];
	uint32_t exposure_delivered[FG_ITEMS_MAX_COUNTERS]; /* counted by the filter for account */
	uint32_t exposure_limited;          /* items removed over an allowance */
	uint64_t page_size_asked;           /* replay: the page size the client asked for when the
	                                       recording over-fetched (the recorded request has the
	                                       raised one); 0: read it from the request */
	/* Capture (fg_stage_capture.c). */
	unsigned need_capture_user;         /* identify computes <capture_user> */
	char capture_user[FG_KEYRING_PSEUDONYM_MAX]; /* the user id under capture.key; "" when the
	                                       call carries none */
	size_t capture_raw_len;             /* bytes of <capture_raw_user> (last: see there) */
	struct fg_stage_record *rec;        /* set while the call is recorded: stages report their
	                                       decisions to it (fg_stage_record.h); NULL: none */
	int64_t time_ms;                    /* the call's time, ms since the epoch: the wall clock at
	                                       its request headers, a test build's feedguard-test-now,
	                                       or the recorded time in replay */
	/* Set by the pipeline when feedguard answered or failed the call
	 * itself (fg_pipeline_answer, fg_pipeline_fail, a malformed message,
	 * a limit): the status text it sent, "" for none. */
	unsigned answered;
	char answer_text[FG_STAGE_ANSWER_MAX];
	/* Last, and not zeroed when the call starts (fg_pipeline_env.c clears
	 * the struct up to here): only its first <capture_raw_len> bytes mean
	 * anything, and every intercepted call would pay for clearing it. */
	char capture_raw_user[FG_STAGE_USER_ID_MAX]; /* need_capture_user: the raw user id, kept
	                                       in memory while the call lasts so the capture
	                                       leaves out what holds a copy of it (a body field
	                                       beside a header id, a ranker's echo); never
	                                       written anywhere; cleansed when the call ends */
};

/*
 * One complete message, inflated, as a stage sees it.  <data> is borrowed
 * for the hook.  To edit, write the new message to <out> (empty on entry;
 * owned by the pipeline, reused) and set <changed>; the next stage then
 * sees the new bytes.  To drop the message, set <drop>.
 */
struct fg_stage_msg {
	const uint8_t *data;
	size_t len;
	unsigned index;                     /* 0 for the first message of its side */
	struct fg_bufq *out;                /* where an edit goes */
	unsigned changed;                   /* set by a stage that wrote <out> */
	unsigned drop;                      /* set by a stage that drops the message */
};

/* The end of a call, seen once by each stage that ran. */
struct fg_stage_end {
	int status;                         /* gRPC status the client got (reset codes mapped) */
	uint64_t req_bytes, resp_bytes;     /* body bytes forwarded each way */
	uint64_t start_us, end_us;          /* fg_clock_now_us() at request headers and at the end */
};

/* What a hook gets: its own state blocks and the shared call facts. */
struct fg_stage_ctx {
	struct fg_pipeline *pl;             /* for fg_pipeline_* calls from the hook */
	void *state;                        /* this stage's per-call block (<call_size> bytes) */
	void *wstate;                       /* this stage's per-worker block (<worker_size> bytes) */
	struct fg_stage_call *call;
};

/* What a stage's per-worker setup is lent. */
struct fg_stage_worker_env {
	struct event_base *base;            /* the worker's loop, for timers and links */
	struct fg_config *cfg;              /* the worker's snapshot at start (borrowed) */
	size_t slot;                        /* the worker's counter slot */
	struct fg_metrics *metrics;         /* the worker's metrics block; NULL in some tests */
	struct fg_pipeline_env *pipelines;  /* for fg_pipeline_lookup() from callbacks */
	struct fg_capture *capture;         /* the process's capture writer (fg_capture.h); NULL: none */
	/* Offline replay (feedguard-replay) runs the stages on recorded
	 * calls: these stand in for the daemon's own; NULL in the daemon. */
	struct fg_state *state;             /* a state backend lent to the gate (fg_state_mem): it
	                                       makes no Redis link; outlives the env */
	uint64_t (*mono_us)(void *arg);     /* the clock of calls' durations (fg_clock_now_us) */
	void *tool;                         /* the tool's own: <mono_us>'s argument, and what the
	                                       tool's own stages read */
};

/* Stage flags. */
enum fg_stage_flag {
	/* The stage works only for the sake of others (identify): a call on
	 * which no other stage runs passes through untouched. */
	FG_STAGE_F_SUPPORT = 1u << 0,
};

struct fg_stage {
	const char *name;                   /* for logs and the code tour */
	unsigned flags;                     /* enum fg_stage_flag */
	size_t call_size;                   /* per-call state, zeroed before <begin> */
	size_t worker_size;                 /* per-worker state, zeroed before <worker_init> */

	/* Per-worker state (<wstate> is NULL when <worker_size> is 0): 0, or
	 * a negative FG_E* (the worker does not start).  A failing
	 * worker_init cleans up after itself: worker_free is not called. */
	int (*worker_init)(void *wstate, const struct fg_stage_worker_env *env);
	void (*worker_free)(void *wstate);
	/* A new snapshot reached the worker (reload). */
	void (*worker_config)(void *wstate, struct fg_config *cfg);

	/* Whether the stage runs on this call; request headers <h> are read
	 * only.  Runs for every stage in order, so a stage sees what earlier
	 * ones decided (the band, when it came from a header).  It may take a
	 * handle (fg_pipeline_handle_of) and start asynchronous work, but not
	 * answer or fail the call: that waits for its first hook. */
	enum fg_stage_begin (*begin)(struct fg_stage_ctx *c, const struct fg_hdrs *h);

	/* Request headers, just before they go upstream (after the first
	 * request message when a stage set <need_first_message>). */
	enum fg_stage_rc (*on_request_headers)(struct fg_stage_ctx *c, struct fg_hdrs *h);
	enum fg_stage_rc (*on_message)(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg);
	/* The request ended; <trailers> is NULL when it ended without any. */
	enum fg_stage_rc (*on_request_end)(struct fg_stage_ctx *c, struct fg_hdrs *trailers);
	/* Response headers, before they go to the client. */
	enum fg_stage_rc (*on_response_headers)(struct fg_stage_ctx *c, struct fg_hdrs *h);
	/* The response's trailers (or a trailers-only response's headers);
	 * NULL when the upstream ended without trailers (not valid gRPC), and
	 * then metadata added after the headers went out is not sent. */
	enum fg_stage_rc (*on_response_end)(struct fg_stage_ctx *c, struct fg_hdrs *trailers);
	/* The call is about to end with feedguard's own answer (a stage's,
	 * a fail mode's) instead of the response's end: the last moment to
	 * add the metadata on_response_end would have added (a stream's
	 * counts).  It may not answer or fail the call itself. */
	void (*on_answer)(struct fg_stage_ctx *c);

	/* The call is gone while this stage had it suspended or held. */
	void (*on_cancel)(struct fg_stage_ctx *c, enum fg_stage_cancel why);
	/* The call ended (once, for every stage that ran). */
	void (*on_end)(struct fg_stage_ctx *c, const struct fg_stage_end *end);
	/* The per-call state is about to be reused: release what it holds.
	 * Only for stages that ran on the call (begin returned RUN). */
	void (*call_free)(struct fg_stage_ctx *c);
};

/* The test clock's request header: a call's time in ms since the epoch,
 * read only by a build with test hooks (and sent by feedguard-replay live
 * --recorded-time). */
#define FG_STAGE_TEST_NOW_HEADER "feedguard-test-now"

/*
 * fg_stage_call_time_ms - a call's time (ms since the epoch) from its
 * request headers <h>: the wall clock, or in a build with test hooks the
 * FG_STAGE_TEST_NOW_HEADER header's (fg_stage_screen.c).
 */
int64_t fg_stage_call_time_ms(const struct fg_hdrs *h);

/* The stages of the daemon, in fg_stage_<name>.c. */
extern const struct fg_stage fg_stage_identify;
extern const struct fg_stage fg_stage_strip;
extern const struct fg_stage fg_stage_filter;
extern const struct fg_stage fg_stage_gate;         /* fg_stage_screen.c */
extern const struct fg_stage fg_stage_account;      /* fg_stage_screen.c */
extern const struct fg_stage fg_stage_capture_tap;  /* fg_stage_capture.c */
extern const struct fg_stage fg_stage_capture;

#endif /* FG_STAGE_H */
