/*
 * fg_pipeline-internal.h - what fg_pipeline.c (one call's chain of stages)
 * and fg_pipeline_env.c (the worker's side of it: pooled pipelines, handles,
 * the buffer budgets, the pump event) share.  Other modules use
 * fg_pipeline.h only.
 */
#ifndef FG_PIPELINE_INTERNAL_H
#define FG_PIPELINE_INTERNAL_H

#include <stdint.h>
#include <sys/queue.h>
#include <event2/event.h>

#include "fg_bufq.h"
#include "fg_grpcframe.h"
#include "fg_hdrs.h"
#include "fg_pipeline.h"
#include "fg_stage.h"

#define MAX_STAGES 8            /* stages of one env */
#define NO_STAGE (-1)

/* The event a suspended side resumes. */
enum pl_event {
	EV_NONE = 0,
	EV_REQ_HEADERS,
	EV_MESSAGE,
	EV_END,
	EV_RESP_HEADERS,
};

/* One direction of the call. */
struct side {
	struct fg_grpcframe_reader reader;  /* messages being assembled */
	struct fg_bufq raw;                 /* bytes not yet fed (a stage waits, or <out> is full) */
	struct fg_bufq *out;                /* the call's output queue for this side */
	enum fg_grpcframe_enc enc;          /* grpc-encoding of this side's messages */
	unsigned nmsg;                      /* messages seen */
	unsigned end_wait;                  /* the end arrived; applied once nothing is held */
	unsigned ended;                     /* the end went through the stages */
	unsigned has_trailers;              /* <trailers> came with the end */
	struct fg_hdrs trailers;            /* held with the end */
	int susp;                           /* stage that suspended this side, or NO_STAGE */
	enum pl_event susp_ev;              /* what it suspended */
	unsigned susp_resumed;              /* fg_pipeline_resume() came; the pump continues */
	struct fg_bufq susp_orig;           /* the suspended message as it came (payload) */
	struct fg_bufq susp_cur;            /* and as the stages left it */
	enum fg_grpcframe_flag susp_flag;
	unsigned susp_changed;
};

enum pl_flag {
	PL_STARTED = 1u << 0,        /* fg_pipeline_start() ran */
	PL_UPSTREAM = 1u << 1,       /* the request headers went upstream */
	PL_HDRS_HELD = 1u << 2,      /* response headers wait in <resp_hdrs> for the first message */
	PL_HDRS_PENDING = 1u << 3,   /* response headers arrived while the response was held */
	PL_RESP_STARTED = 1u << 4,   /* response headers went to the client */
	PL_FINISHED = 1u << 5,       /* answered, failed or cancelled: no more host operations */
	PL_ENDED = 1u << 6,          /* on_end delivered */
	PL_PUMP_QUEUED = 1u << 7,    /* in env->pump */
	PL_PENDING_END = 1u << 8,    /* response headers arrived with END (trailers-only) while held */
};

struct fg_pipeline {
	struct fg_pipeline_env *env;
	struct fg_stage_call call;              /* what the stages share */
	const struct fg_pipeline_ops *ops;
	void *host;
	struct fg_hdrs *req_hdrs;               /* the call's, until go_upstream */
	unsigned run;                           /* bit i: stage i runs on this call */
	void *state[MAX_STAGES];                /* per-call state blocks, kept across reuse */
	struct side side[2];                    /* FG_STAGE_REQUEST, FG_STAGE_RESPONSE */
	unsigned flags;                         /* enum pl_flag */
	int hold;                               /* stage holding the response, or NO_STAGE */
	struct fg_hdrs resp_hdrs;               /* response headers held or pending */
	struct fg_hdrs meta;                    /* metadata added and not yet placed */
	uint32_t slot, gen;                     /* the handle */
	uint64_t accounted;                     /* bytes counted in the budgets */
	uint64_t accounted_out;                 /* of <accounted>: output queued for a peer */
	unsigned under_way;                     /* work under way when last counted (a partial message,
	                                           or output its peer has not taken past a window) */
	struct fg_pipeline_budget *budget;      /* the client connection's; NULL once detached */
	TAILQ_ENTRY(fg_pipeline) budget_link;
	TAILQ_ENTRY(fg_pipeline) pump_link;
	struct fg_pipeline *next_spare;
	size_t spare_bytes;                     /* while a spare: the memory it keeps */
};

struct slot {
	struct fg_pipeline *pl;     /* NULL when free */
	uint32_t gen;               /* bumped whenever the slot is freed */
	uint32_t next_free;         /* free-list link, when free */
};

struct fg_pipeline_env {
	struct event_base *base;
	const struct fg_stage *const *stages;
	size_t nstages;
	void *wstate[MAX_STAGES];               /* each stage's per-worker block */
	size_t ninit;                           /* stages whose worker_init succeeded (in order) */
	size_t slot_no;                         /* the worker's counter slot */
	struct event *pump_ev;                  /* runs the queued pipelines on the next loop turn */
	TAILQ_HEAD(, fg_pipeline) pump;
	struct fg_pipeline *spare;
	size_t nspare;
	size_t spare_bytes;                     /* what the spares keep, at most PIPELINE_SPARE_BYTES */
	struct slot *slots;
	uint32_t nslots, free_slot;             /* free_slot: head of the free list, or nslots */
	struct fg_grpcframe_zctx *zctx;         /* inflate state */
	struct fg_bufq plain;                   /* the inflated message */
	struct fg_bufq scratch[2];              /* stages' edits, alternating */
	uint64_t held;                          /* bytes all pipelines hold (limits.worker_buffer) */
	unsigned over;                          /* <held> was over limits.worker_buffer when last counted */
	uint64_t *held_gauge;                   /* the worker's metric, or NULL */
	struct fg_metrics *metrics;             /* the worker's metrics block, or NULL */
	struct fg_stage_worker_env tmpl;        /* what each stage's worker_init is lent (its cfg aside) */
};


/* What a hook of stage <i> gets. */
static inline struct fg_stage_ctx ctx_of(struct fg_pipeline *pl, size_t i)
{
	struct fg_stage_ctx c = { .pl = pl, .state = pl->state[i], .wstate = pl->env->wstate[i], .call = &pl->call };

	return c;
}


/* Side <dir> waits for a stage (suspended, or the response held). */
static inline int side_blocked(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	return pl->side[dir].susp != NO_STAGE || (dir == FG_STAGE_RESPONSE && pl->hold != NO_STAGE);
}

/* --- fg_pipeline_env.c ------------------------------------------------- */

/* A zeroed pipeline of <env> (from its spares, buffers and state blocks
 * kept, or new), readers limited to <max_message>; NULL without memory. */
struct fg_pipeline *fg_pipeline_get(struct fg_pipeline_env *env, size_t max_message);
/* <pl> back to its env's spares (stages' call_free run, config dropped). */
void fg_pipeline_put(struct fg_pipeline *pl);
/* 0, or FG_ETOOBIG with <*status>/<msg> when the worker's budget refuses a new call. */
int fg_pipeline_admit(struct fg_pipeline_env *env, const struct fg_pipeline_args *a, int *status, char *msg,
                      size_t msglen);
/* The handle slot of <pl>: 0 or FG_ENOMEM; released (generation bumped) once. */
int fg_pipeline_slot_take(struct fg_pipeline_env *env, struct fg_pipeline *pl);
void fg_pipeline_slot_release(struct fg_pipeline *pl);
/* <pl> stops counting in its connection's and worker's budgets. */
void fg_pipeline_budget_detach(struct fg_pipeline *pl);
/* 1 when a budget of <pl> is over and <pl> is not the call that goes on
 * past it: its bytes wait as they came (compressed, within the window
 * its peer was given) instead of being inflated and edited into up to
 * limits.max_message_size each (a gzip page of 256 KiB can be 4 MiB). */
int fg_pipeline_budget_waits(const struct fg_pipeline *pl);
/* Queue <pl> for the pump event (no-op when queued or finished) / unqueue it. */
void fg_pipeline_schedule(struct fg_pipeline *pl);
void fg_pipeline_unschedule(struct fg_pipeline *pl);

/* --- fg_pipeline.c ----------------------------------------------------- */

/* The pump's work for <pl>: held bytes fed, resumed stages continued,
 * windows settled (fg_pipeline.c). */
void fg_pipeline_run(struct fg_pipeline *pl);

#endif /* FG_PIPELINE_INTERNAL_H */
