/* fg_pipeline.c - one intercepted call's chain of stages; see fg_pipeline.h. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_pipeline.h"
#include "fg_policy_eval.h"
#include "fg_units.h"

/*
 * The stages of the daemon, in the one order they run.  identify comes
 * first because every later stage reads the band and user it decides;
 * gate, filter, account and capture join here as they are written.
 */
static const struct fg_stage *const daemon_stages[] = {
	&fg_stage_identify,
	&fg_stage_strip,
};

#define MAX_STAGES 8
#define NO_STAGE (-1)
/* Ended pipelines a worker keeps, with their message buffers: in steady
 * state an intercepted call allocates nothing. */
#define PIPELINE_SPARE_MAX 32
#define TEXT_MAX 256

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
	unsigned assembling;                    /* a partial message when last counted */
	struct fg_pipeline_budget *budget;      /* the client connection's; NULL once detached */
	TAILQ_ENTRY(fg_pipeline) budget_link;
	TAILQ_ENTRY(fg_pipeline) pump_link;
	struct fg_pipeline *next_spare;
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
	struct slot *slots;
	uint32_t nslots, free_slot;             /* free_slot: head of the free list, or nslots */
	struct fg_grpcframe_zctx *zctx;         /* inflate state */
	struct fg_bufq plain;                   /* the inflated message */
	struct fg_bufq scratch[2];              /* stages' edits, alternating */
	uint64_t held;                          /* bytes all pipelines hold (limits.worker_buffer) */
	unsigned over;                          /* <held> was over limits.worker_buffer when last counted */
	uint64_t *held_gauge;                   /* the worker's metric, or NULL */
};

static void pump_cb(evutil_socket_t fd, short what, void *arg);
static void pipeline_pump(struct fg_pipeline *pl);

/* --- environment ------------------------------------------------------- */

void fg_pipeline_budget_init(struct fg_pipeline_budget *b)
{
	b->held = 0;
	TAILQ_INIT(&b->calls);
}

static void env_free_stages(struct fg_pipeline_env *env)
{
	size_t i;

	for (i = 0; i < env->nstages; i++) {
		if (i < env->ninit && env->stages[i]->worker_free)
			env->stages[i]->worker_free(env->wstate[i]);
		free(env->wstate[i]);
		env->wstate[i] = NULL;
	}
	env->ninit = 0;
}

static int env_init_stages(struct fg_pipeline_env *env, struct fg_config *cfg)
{
	struct fg_stage_worker_env wenv = { .base = env->base, .cfg = cfg, .slot = env->slot_no };
	size_t i;
	int rv;

	for (i = 0; i < env->nstages; i++) {
		const struct fg_stage *st = env->stages[i];
		if (st->worker_size && (env->wstate[i] = calloc(1, st->worker_size)) == NULL)
			return FG_ENOMEM;
		if (st->worker_init && (rv = st->worker_init(env->wstate[i], &wenv)) < 0) {
			free(env->wstate[i]);
			env->wstate[i] = NULL;
			return rv;
		}
		env->ninit = i + 1;
	}
	return 0;
}

/*
 * fg_pipeline_env_new_stages - fg_pipeline_env_new() with the stage list
 * <stages>[0..<n>-1] (at most MAX_STAGES) instead of the daemon's: the
 * unit tests run fake stages through the real pipeline.  Declared in the
 * test, not in the header: the daemon has one order of stages.
 */
int fg_pipeline_env_new_stages(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg,
                               size_t slot, uint64_t *held_gauge, const struct fg_stage *const *stages, size_t n);

int fg_pipeline_env_new_stages(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg,
                               size_t slot, uint64_t *held_gauge, const struct fg_stage *const *stages, size_t n)
{
	struct fg_pipeline_env *env;
	int rv = FG_ENOMEM;

	*out = NULL;
	if (n > MAX_STAGES)
		return FG_EINVAL;
	if ((env = calloc(1, sizeof(*env))) == NULL)
		return FG_ENOMEM;
	env->base = base;
	env->stages = stages;
	env->nstages = n;
	env->slot_no = slot;
	env->held_gauge = held_gauge;
	TAILQ_INIT(&env->pump);
	if ((env->pump_ev = event_new(base, -1, 0, pump_cb, env)) == NULL)
		goto fail_free_env;
	if (fg_grpcframe_zctx_new(&env->zctx) < 0)
		goto fail_free_env;
	if ((rv = env_init_stages(env, cfg)) < 0)
		goto fail_free_env;
	*out = env;
	return 0;

fail_free_env:
	fg_pipeline_env_free(env);
	return rv;
}

int fg_pipeline_env_new(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg, size_t slot,
                        uint64_t *held_gauge)
{
	return fg_pipeline_env_new_stages(out, base, cfg, slot, held_gauge, daemon_stages,
	                                  sizeof(daemon_stages) / sizeof(daemon_stages[0]));
}

void fg_pipeline_env_config(struct fg_pipeline_env *env, struct fg_config *cfg)
{
	size_t i;

	for (i = 0; i < env->nstages; i++)
		if (env->stages[i]->worker_config)
			env->stages[i]->worker_config(env->wstate[i], cfg);
}

static void side_destroy(struct side *s)
{
	fg_grpcframe_reader_free(&s->reader);
	fg_bufq_free(&s->raw);
	fg_hdrs_free(&s->trailers);
	fg_bufq_free(&s->susp_orig);
	fg_bufq_free(&s->susp_cur);
}

static void pipeline_destroy(struct fg_pipeline *pl)
{
	size_t i;

	side_destroy(&pl->side[0]);
	side_destroy(&pl->side[1]);
	fg_hdrs_free(&pl->resp_hdrs);
	fg_hdrs_free(&pl->meta);
	for (i = 0; i < MAX_STAGES; i++)
		free(pl->state[i]);
	free(pl);
}

void fg_pipeline_env_free(struct fg_pipeline_env *env)
{
	struct fg_pipeline *pl;

	if (!env)
		return;
	while ((pl = env->spare) != NULL) {
		env->spare = pl->next_spare;
		pipeline_destroy(pl);
	}
	env_free_stages(env);
	if (env->pump_ev)
		event_free(env->pump_ev);
	fg_grpcframe_zctx_free(env->zctx);
	fg_bufq_free(&env->plain);
	fg_bufq_free(&env->scratch[0]);
	fg_bufq_free(&env->scratch[1]);
	free(env->slots);
	free(env);
}

uint64_t fg_pipeline_env_held(const struct fg_pipeline_env *env)
{
	return env->held;
}

/* --- handles ----------------------------------------------------------- */

static int slot_take(struct fg_pipeline_env *env, struct fg_pipeline *pl)
{
	uint32_t i = env->free_slot, n;
	struct slot *s;

	if (i >= env->nslots) {
		n = env->nslots ? env->nslots * 2 : 64;
		if (n <= env->nslots || !(s = realloc(env->slots, (size_t)n * sizeof(*s))))
			return FG_ENOMEM;
		env->slots = s;
		for (i = env->nslots; i < n; i++) {
			s[i].pl = NULL;
			s[i].gen = 1;
			s[i].next_free = i + 1;
		}
		i = env->nslots;
		env->nslots = n;
	}
	env->free_slot = env->slots[i].next_free;
	env->slots[i].pl = pl;
	pl->slot = i;
	pl->gen = env->slots[i].gen;
	return 0;
}

static void slot_release(struct fg_pipeline *pl)
{
	struct fg_pipeline_env *env = pl->env;
	struct slot *s = &env->slots[pl->slot];

	s->pl = NULL;
	s->gen++;
	s->next_free = env->free_slot;
	env->free_slot = pl->slot;
}

fg_pipeline_handle fg_pipeline_handle_of(const struct fg_pipeline *pl)
{
	return ((uint64_t)pl->gen << 32) | pl->slot;
}

struct fg_pipeline *fg_pipeline_lookup(struct fg_pipeline_env *env, fg_pipeline_handle h)
{
	uint32_t i = (uint32_t)h, gen = (uint32_t)(h >> 32);
	struct fg_pipeline *pl;

	if (i >= env->nslots || env->slots[i].gen != gen || !(pl = env->slots[i].pl))
		return NULL;
	return (pl->flags & PL_FINISHED) ? NULL : pl;
}

struct fg_pipeline_env *fg_pipeline_env_of(const struct fg_pipeline *pl)
{
	return pl->env;
}

/* --- budgets ----------------------------------------------------------- */

static uint64_t pipeline_bytes(const struct fg_pipeline *pl)
{
	uint64_t n = 0;
	int d;

	for (d = 0; d < 2; d++) {
		const struct side *s = &pl->side[d];
		n += fg_bufq_len(&s->raw) + fg_grpcframe_reader_pending(&s->reader) + fg_bufq_len(&s->susp_orig) +
		     fg_bufq_len(&s->susp_cur);
		if (s->out)
			n += fg_bufq_len(s->out);
	}
	return n;
}

static int budget_over(const struct fg_pipeline *pl)
{
	const struct fg_config *cfg = pl->call.cfg;

	return (pl->budget && pl->budget->held > cfg->limits.connection_buffer) ||
	       pl->env->held > cfg->limits.worker_buffer;
}

static void env_set_held(struct fg_pipeline_env *env, uint64_t held)
{
	env->held = held;
	if (env->held_gauge)
		__atomic_store_n(env->held_gauge, held, __ATOMIC_RELAXED);
}

/* Every pipeline of <b> (or, with <b> NULL, of the worker) gets a pump
 * turn: the budget went back under its limit, so windows held for it
 * can open again. */
static void schedule(struct fg_pipeline *pl);
static void wake_budget(struct fg_pipeline_budget *b)
{
	struct fg_pipeline *pl;

	TAILQ_FOREACH(pl, &b->calls, budget_link)
		schedule(pl);
}

static void wake_worker(struct fg_pipeline_env *env)
{
	uint32_t i;

	for (i = 0; i < env->nslots; i++)
		if (env->slots[i].pl)
			schedule(env->slots[i].pl);
}

/* In the middle of a message on either side: the calls that may go on
 * past a budget are chosen among these. */
static unsigned pipeline_assembling(const struct fg_pipeline *pl)
{
	return fg_grpcframe_reader_pending(&pl->side[0].reader) || fg_grpcframe_reader_pending(&pl->side[1].reader);
}

/*
 * Count <now> bytes and the <assembling> state for <pl> in its budgets.
 * Windows held for a budget are looked at again (the pipelines get a pump
 * turn) only when that can change something: a budget went back under its
 * limit, or, while one is over, the call that may go on can have changed.
 * Under the limits nothing is woken: a call ending on a busy connection
 * costs nothing.
 */
static void budget_count(struct fg_pipeline *pl, uint64_t now, unsigned assembling)
{
	const struct fg_config *cfg = pl->call.cfg;
	struct fg_pipeline_env *env = pl->env;
	struct fg_pipeline_budget *b = pl->budget;
	int conn_over = 0, mover_changed = assembling != pl->assembling;

	if (b) {
		conn_over = b->held > cfg->limits.connection_buffer;
		b->held = b->held - pl->accounted + now;
	}
	env_set_held(env, env->held - pl->accounted + now);
	pl->accounted = now;
	pl->assembling = assembling;
	if (env->over && env->held <= cfg->limits.worker_buffer) {
		env->over = 0;
		wake_worker(env);
		return;
	}
	if (env->held > cfg->limits.worker_buffer)
		env->over = 1;
	if (b && ((conn_over && b->held <= cfg->limits.connection_buffer) ||
	          ((conn_over || env->over) && mover_changed)))
		wake_budget(b);
}

void fg_pipeline_account(struct fg_pipeline *pl)
{
	uint64_t now = pipeline_bytes(pl);
	unsigned assembling = pipeline_assembling(pl);

	if (now != pl->accounted || assembling != pl->assembling)
		budget_count(pl, now, assembling);
}

static void budget_detach(struct fg_pipeline *pl)
{
	fg_pipeline_leave_connection(pl);
	budget_count(pl, 0, 0);
}

void fg_pipeline_leave_connection(struct fg_pipeline *pl)
{
	struct fg_pipeline_budget *b = pl ? pl->budget : NULL;

	if (!b)
		return;
	b->held -= pl->accounted;
	TAILQ_REMOVE(&b->calls, pl, budget_link);
	pl->budget = NULL;
	/* it may have been the call that went on past the budget */
	if (pl->assembling && TAILQ_FIRST(&b->calls))
		wake_budget(b);
}

size_t fg_pipeline_held(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	const struct side *s = &pl->side[dir];

	return fg_bufq_len(&s->raw) + fg_grpcframe_reader_pending(&s->reader);
}

static int side_blocked(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	return pl->side[dir].susp != NO_STAGE || (dir == FG_STAGE_RESPONSE && pl->hold != NO_STAGE);
}

/* The call of <b> that goes on while a budget is over: the oldest one in
 * the middle of a message, so that message (up to limits.max_message_size)
 * always completes and frees its bytes, while a call that is merely open
 * (a quiet stream) blocks nobody. */
static const struct fg_pipeline *budget_mover(const struct fg_pipeline_budget *b)
{
	const struct fg_pipeline *pl;

	TAILQ_FOREACH(pl, &b->calls, budget_link)
		if (pl->assembling)
			return pl;
	return NULL;
}

int fg_pipeline_holds(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	if (pl->flags & PL_FINISHED)
		return 0;
	if (fg_bufq_len(&pl->side[dir].raw) || side_blocked(pl, dir))
		return 1;
	if (!budget_over(pl))
		return 0;
	return !pl->budget || budget_mover(pl->budget) != pl;
}

/* --- pump -------------------------------------------------------------- */

static void schedule(struct fg_pipeline *pl)
{
	struct fg_pipeline_env *env = pl->env;

	if ((pl->flags & (PL_PUMP_QUEUED | PL_FINISHED)))
		return;
	pl->flags |= PL_PUMP_QUEUED;
	TAILQ_INSERT_TAIL(&env->pump, pl, pump_link);
	event_active(env->pump_ev, 0, 0);
}

static void unschedule(struct fg_pipeline *pl)
{
	if (!(pl->flags & PL_PUMP_QUEUED))
		return;
	TAILQ_REMOVE(&pl->env->pump, pl, pump_link);
	pl->flags &= ~PL_PUMP_QUEUED;
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fg_pipeline_env *env = arg;
	struct fg_pipeline *pl;

	(void)fd;
	(void)what;
	while ((pl = TAILQ_FIRST(&env->pump)) != NULL) {
		unschedule(pl);
		pipeline_pump(pl);
	}
}

void fg_pipeline_output_taken(struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	if (fg_bufq_len(&pl->side[dir].raw) || pl->side[dir].end_wait)
		schedule(pl);
}

/* --- ending ------------------------------------------------------------ */

static struct fg_stage_ctx ctx_of(struct fg_pipeline *pl, size_t i)
{
	struct fg_stage_ctx c = { .pl = pl, .state = pl->state[i], .wstate = pl->env->wstate[i], .call = &pl->call };

	return c;
}

static void cancel_waiting(struct fg_pipeline *pl, enum fg_stage_cancel why);

/* Stop: no host operation after this one. */
static void finish(struct fg_pipeline *pl)
{
	pl->flags |= PL_FINISHED;
	unschedule(pl);
}

__attribute__((format(printf, 3, 4)))
static void pipeline_fail(struct fg_pipeline *pl, int status, const char *fmt, ...)
{
	char text[TEXT_MAX];
	va_list ap;

	if (pl->flags & PL_FINISHED)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	finish(pl);
	cancel_waiting(pl, FG_STAGE_CANCEL_FAILED);
	pl->ops->fail(pl->host, status, text);
}

static void cancel_waiting(struct fg_pipeline *pl, enum fg_stage_cancel why)
{
	int waiting[3] = { pl->side[0].susp, pl->side[1].susp, pl->hold }, i;
	struct fg_stage_ctx c;

	pl->side[0].susp = pl->side[1].susp = pl->hold = NO_STAGE;
	/* once per stage (fg_stage.h): one stage may wait on both sides (a
	 * request message and the response headers of a streaming call) as
	 * well as hold the response */
	for (i = 0; i < 3; i++) {
		if (waiting[i] == NO_STAGE || (i > 0 && waiting[i] == waiting[0]) ||
		    (i > 1 && waiting[i] == waiting[1]))
			continue;
		c = ctx_of(pl, (size_t)waiting[i]);
		if (pl->env->stages[waiting[i]]->on_cancel)
			pl->env->stages[waiting[i]]->on_cancel(&c, why);
	}
}

/* A stage answered: whoever waited is done waiting (each still sees on_end). */
static void forget_waiting(struct fg_pipeline *pl)
{
	pl->side[0].susp = pl->side[1].susp = pl->hold = NO_STAGE;
}

void fg_pipeline_cancel(struct fg_pipeline *pl, enum fg_stage_cancel why)
{
	if (!pl || (pl->flags & PL_FINISHED))
		return;
	finish(pl);
	cancel_waiting(pl, why);
}

void fg_pipeline_end(struct fg_pipeline *pl, const struct fg_stage_end *end)
{
	struct fg_stage_ctx c;
	size_t i;

	if (!pl || (pl->flags & PL_ENDED))
		return;
	fg_pipeline_cancel(pl, FG_STAGE_CANCEL_CLIENT);
	pl->flags |= PL_ENDED;
	for (i = 0; i < pl->env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !pl->env->stages[i]->on_end)
			continue;
		c = ctx_of(pl, i);
		pl->env->stages[i]->on_end(&c, end);
	}
}

/* --- messages ---------------------------------------------------------- */

static int append_framed(struct fg_bufq *out, enum fg_grpcframe_flag flag, const uint8_t *data, size_t len)
{
	uint8_t prefix[FG_GRPC_PREFIX_LEN];

	fg_grpcframe_write_prefix(prefix, flag, (uint32_t)len);
	if (fg_bufq_append(out, prefix, sizeof(prefix)) < 0 || fg_bufq_append(out, data, len) < 0)
		return FG_ENOMEM;
	return 0;
}

/* A message on its way through the stages. */
struct msg_run {
	const uint8_t *orig;            /* payload as it came (maybe compressed) */
	size_t orig_len;
	enum fg_grpcframe_flag flag;
	struct fg_stage_msg m;
	unsigned changed;               /* some stage edited it */
	unsigned out_idx;               /* which env scratch buffer is <m.out> */
};

/* Run the message hooks from stage <from>; <*at> is where one stopped. */
static enum fg_stage_rc run_msg_hooks(struct fg_pipeline *pl, enum fg_stage_dir dir, struct msg_run *r,
                                      size_t from, size_t *at)
{
	struct fg_pipeline_env *env = pl->env;
	enum fg_stage_rc rc;
	struct fg_stage_ctx c;
	size_t i;

	for (i = from; i < env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !env->stages[i]->on_message)
			continue;
		/* emptied, memory kept: <m.data> never points into this one */
		r->m.out = &env->scratch[r->out_idx];
		/* room for the prefix in front of an edit, so the edited
		 * message can become the output queue without a copy */
		if (fg_bufq_headroom(r->m.out, FG_GRPC_PREFIX_LEN) < 0)
			fg_bufq_truncate(r->m.out, 0);
		r->m.changed = 0;
		c = ctx_of(pl, i);
		rc = env->stages[i]->on_message(&c, dir, &r->m);
		if (r->m.changed && !r->m.drop) {
			/* the next stage reads these bytes and writes the other buffer */
			r->m.data = fg_bufq_head(&env->scratch[r->out_idx]);
			r->m.len = fg_bufq_len(&env->scratch[r->out_idx]);
			r->out_idx ^= 1;
			r->changed = 1;
		}
		if (rc != FG_STAGE_CONTINUE || r->m.drop || (pl->flags & PL_FINISHED)) {
			*at = i;
			return rc;
		}
	}
	*at = env->nstages;
	return FG_STAGE_CONTINUE;
}

/* <b> becomes the <n> bytes at <p>, which may be <b>'s own: a message
 * suspended again after its resume is saved from where it already is. */
static int copy_buf(struct fg_bufq *b, const uint8_t *p, size_t n)
{
	if (n && n == fg_bufq_len(b) && p == fg_bufq_head(b))
		return 0;
	fg_bufq_truncate(b, 0);
	return fg_bufq_append(b, p, n);
}

/* A stage suspended on a message: keep it (it lived in borrowed memory). */
static int save_message(struct side *s, const struct msg_run *r, size_t at)
{
	if (copy_buf(&s->susp_orig, r->orig, r->orig_len) < 0 || copy_buf(&s->susp_cur, r->m.data, r->m.len) < 0)
		return FG_ENOMEM;
	s->susp_flag = r->flag;
	s->susp_changed = r->changed;
	s->susp = (int)at;
	s->susp_ev = EV_MESSAGE;
	return 0;
}

static void release_headers(struct fg_pipeline *pl);
static void request_headers(struct fg_pipeline *pl, size_t from);

/*
 * An edited message whose output queue is empty (the usual case: a unary
 * response, or a request whose previous message has gone) becomes that
 * queue: its prefix goes in the room kept in front of it and the buffers
 * are swapped, so the edited bytes are not copied again.  1 when done.
 */
static int swap_edited(struct fg_pipeline_env *env, struct fg_bufq *out, const struct msg_run *r)
{
	struct fg_bufq *ed = &env->scratch[r->out_idx ^ 1], tmp;
	uint8_t prefix[FG_GRPC_PREFIX_LEN];

	if (fg_bufq_len(out) != 0 || r->m.data != fg_bufq_head(ed) || r->m.len != fg_bufq_len(ed))
		return 0;
	fg_grpcframe_write_prefix(prefix, FG_GRPCFRAME_UNCOMPRESSED, (uint32_t)r->m.len);
	if (fg_bufq_prepend(ed, prefix, sizeof(prefix)) < 0)
		return 0;
	tmp = *out;
	*out = *ed;
	*ed = tmp;
	fg_bufq_truncate(ed, 0);
	return 1;
}

/* The message has been through every stage: frame it onto the output. */
static int emit_message(struct fg_pipeline *pl, enum fg_stage_dir dir, const struct msg_run *r)
{
	struct side *s = &pl->side[dir];
	int rv = 0;

	if (!r->m.drop && !(r->changed && swap_edited(pl->env, s->out, r)))
		rv = r->changed ? append_framed(s->out, FG_GRPCFRAME_UNCOMPRESSED, r->m.data, r->m.len)
		                : append_framed(s->out, r->flag, r->orig, r->orig_len);
	if (rv < 0) {
		pipeline_fail(pl, FG_GRPC_RESOURCE_EXHAUSTED, "feedguardd is out of memory");
		return rv;
	}
	if (dir == FG_STAGE_REQUEST && r->m.index == 0 && !(pl->flags & PL_UPSTREAM))
		request_headers(pl, 0);
	else if (dir == FG_STAGE_RESPONSE && !r->m.drop)
		release_headers(pl);
	return 0;
}

/* Run a message from stage <from> to the output, or to a suspension. */
static int run_message(struct fg_pipeline *pl, enum fg_stage_dir dir, struct msg_run *r, size_t from)
{
	struct side *s = &pl->side[dir];
	enum fg_stage_rc rc;
	size_t at;

	rc = run_msg_hooks(pl, dir, r, from, &at);
	if (pl->flags & PL_FINISHED)
		return FG_ESTATE;
	switch (rc) {
	case FG_STAGE_SUSPEND:
		if (save_message(s, r, at) < 0) {
			pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
			return FG_ENOMEM;
		}
		/* Not an error: feed() stops at the blocked side by itself and
		 * must report the bytes it took, or side_data() loses the rest
		 * of the chunk and pump_side() feeds the held bytes twice. */
		return 0;
	case FG_STAGE_HOLD_RESPONSE:
		if (dir == FG_STAGE_REQUEST && pl->hold == NO_STAGE)
			pl->hold = (int)at;
		return emit_message(pl, dir, r) < 0 ? FG_ENOMEM : 0;
	case FG_STAGE_DONE:
		pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd stage %s ended the call without an answer",
		              pl->env->stages[at]->name);
		return FG_ESTATE;
	default:
		return emit_message(pl, dir, r) < 0 ? FG_ENOMEM : 0;
	}
}

static const char *side_name(enum fg_stage_dir dir)
{
	return dir == FG_STAGE_REQUEST ? "request" : "response";
}

/* A malformed message: INVALID_ARGUMENT from the client, INTERNAL from the upstream. */
static int bad_status(enum fg_stage_dir dir)
{
	return dir == FG_STAGE_REQUEST ? FG_GRPC_INVALID_ARGUMENT : FG_GRPC_INTERNAL;
}

static void frame_fail(struct fg_pipeline *pl, enum fg_stage_dir dir, int rc, const char *why)
{
	char size[32];

	if (rc == FG_ETOOBIG)
		pipeline_fail(pl, FG_GRPC_RESOURCE_EXHAUSTED, "%s message larger than limits.max_message_size (%s)",
		              side_name(dir),
		              fg_units_format_size(pl->call.cfg->limits.max_message_size, size, sizeof(size)));
	else if (rc == FG_ENOMEM)
		pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	else
		pipeline_fail(pl, bad_status(dir), "%s message: %s", side_name(dir), why ? why : "malformed");
}

/* One message just assembled by the reader. */
static int handle_message(struct fg_pipeline *pl, enum fg_stage_dir dir, const struct fg_grpcframe_msg *fm)
{
	struct fg_pipeline_env *env = pl->env;
	struct side *s = &pl->side[dir];
	struct msg_run r = { .orig = fm->data, .orig_len = fm->len, .flag = fm->flag };
	const char *why = NULL;
	int rc;

	r.m.data = fm->data;
	r.m.len = fm->len;
	r.m.index = s->nmsg++;
	if (fm->flag == FG_GRPCFRAME_COMPRESSED) {
		if (s->enc == FG_GRPCFRAME_IDENTITY) {
			pipeline_fail(pl, bad_status(dir), "%s message is compressed but the call has no grpc-encoding",
			              side_name(dir));
			return FG_EINVAL;
		}
		fg_bufq_truncate(&env->plain, 0);
		rc = fg_grpcframe_inflate(env->zctx, s->enc, fm->data, fm->len, pl->call.cfg->limits.max_message_size,
		                          &env->plain, &why);
		if (rc < 0) {
			frame_fail(pl, dir, rc, why);
			return rc;
		}
		r.m.data = fg_bufq_head(&env->plain);
		r.m.len = fg_bufq_len(&env->plain);
	}
	return run_message(pl, dir, &r, 0);
}

/*
 * Feed <len> bytes of side <dir>, stopping after a message once the
 * output holds more than one stream window (a compressed message may
 * inflate a thousandfold: the rest waits with its window), or when a
 * stage suspends.  <*taken> says how many bytes were used.
 */
static int feed(struct fg_pipeline *pl, enum fg_stage_dir dir, const uint8_t *data, size_t len, size_t *taken)
{
	struct side *s = &pl->side[dir];
	size_t limit = pl->call.cfg->limits.stream_window, used;
	struct fg_grpcframe_msg msg;
	const char *why = NULL;
	int rc;

	*taken = 0;
	while (len > 0 && fg_bufq_len(s->out) <= limit && !side_blocked(pl, dir) && !(pl->flags & PL_FINISHED)) {
		rc = fg_grpcframe_reader_feed(&s->reader, data, len, &used, &msg, &why);
		if (rc < 0) {
			frame_fail(pl, dir, rc, why);
			return rc;
		}
		data += used;
		len -= used;
		*taken += used;
		if (rc == FG_GRPCFRAME_MESSAGE && (rc = handle_message(pl, dir, &msg)) < 0)
			return rc;
	}
	return 0;
}

/* --- request side ------------------------------------------------------ */

/* Run the request-header hooks from <from>, then send the call upstream. */
static void request_headers(struct fg_pipeline *pl, size_t from)
{
	struct fg_pipeline_env *env = pl->env;
	enum fg_stage_rc rc;
	struct fg_stage_ctx c;
	size_t i;

	for (i = from; i < env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !env->stages[i]->on_request_headers)
			continue;
		c = ctx_of(pl, i);
		rc = env->stages[i]->on_request_headers(&c, pl->req_hdrs);
		if (pl->flags & PL_FINISHED)
			return;
		if (rc == FG_STAGE_SUSPEND) {
			pl->side[FG_STAGE_REQUEST].susp = (int)i;
			pl->side[FG_STAGE_REQUEST].susp_ev = EV_REQ_HEADERS;
			return;
		}
		if (rc == FG_STAGE_HOLD_RESPONSE && pl->hold == NO_STAGE)
			pl->hold = (int)i;
		if (rc == FG_STAGE_DONE) {
			pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd stage %s ended the call without an answer",
			              env->stages[i]->name);
			return;
		}
	}
	pl->flags |= PL_UPSTREAM;
	pl->ops->go_upstream(pl->host);
}

/* Run the end hooks of side <dir> from <from>; 1 when they all continued. */
static int run_end_hooks(struct fg_pipeline *pl, enum fg_stage_dir dir, size_t from)
{
	struct fg_pipeline_env *env = pl->env;
	struct side *s = &pl->side[dir];
	struct fg_hdrs *t = s->has_trailers ? &s->trailers : NULL;
	enum fg_stage_rc rc;
	struct fg_stage_ctx c;
	size_t i;

	for (i = from; i < env->nstages; i++) {
		const struct fg_stage *st = env->stages[i];
		if (!(pl->run & (1u << i)))
			continue;
		if (dir == FG_STAGE_REQUEST && !st->on_request_end)
			continue;
		if (dir == FG_STAGE_RESPONSE && !st->on_response_end)
			continue;
		c = ctx_of(pl, i);
		rc = dir == FG_STAGE_REQUEST ? st->on_request_end(&c, t) : st->on_response_end(&c, t);
		if (pl->flags & PL_FINISHED)
			return 0;
		if (rc == FG_STAGE_SUSPEND) {
			s->susp = (int)i;
			s->susp_ev = EV_END;
			return 0;
		}
		if (rc == FG_STAGE_HOLD_RESPONSE && dir == FG_STAGE_REQUEST && pl->hold == NO_STAGE)
			pl->hold = (int)i;
		if (rc == FG_STAGE_DONE) {
			pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd stage %s ended the call without an answer",
			              st->name);
			return 0;
		}
	}
	return 1;
}

static int place_metadata(struct fg_pipeline *pl, struct fg_hdrs *h);

/* The request's end, once nothing is held: a message cut short fails the
 * call; a call still waiting for its first message goes upstream now. */
static void request_end(struct fg_pipeline *pl, size_t from)
{
	struct side *s = &pl->side[FG_STAGE_REQUEST];

	if (from == 0 && fg_grpcframe_reader_pending(&s->reader)) {
		pipeline_fail(pl, FG_GRPC_INVALID_ARGUMENT, "the request ended in the middle of a message");
		return;
	}
	if (!(pl->flags & PL_UPSTREAM)) {
		request_headers(pl, 0);
		if (!(pl->flags & PL_UPSTREAM))
			return;         /* suspended or failed; the end is applied again later */
	}
	if (!run_end_hooks(pl, FG_STAGE_REQUEST, from))
		return;
	s->end_wait = 0;
	s->ended = 1;
	pl->ops->request_end(pl->host, s->has_trailers ? &s->trailers : NULL);
}

/* --- response side ----------------------------------------------------- */

static int add_hdr(struct fg_hdrs *h, const char *name, const char *value, size_t len)
{
	return fg_hdrs_add(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value, len, 0);
}

/* Append the metadata added so far to <h>, and forget it. */
static int place_metadata(struct fg_pipeline *pl, struct fg_hdrs *h)
{
	const struct fg_hdrs *m = &pl->meta;
	const uint8_t *bytes = fg_bufq_head(&m->buf);
	size_t i;

	for (i = 0; i < m->n; i++) {
		const struct fg_hdrs_entry *e = &m->ent[i];
		if (fg_hdrs_add(h, bytes + e->name_off, e->name_len, bytes + e->value_off, e->value_len,
		                e->flags) < 0)
			return FG_ENOMEM;
	}
	fg_hdrs_reset(&pl->meta);
	return 0;
}

/* Held response headers (unary calls) go to the client now, with the
 * metadata the stages added. */
static void release_headers(struct fg_pipeline *pl)
{
	if (!(pl->flags & PL_HDRS_HELD))
		return;
	pl->flags &= ~PL_HDRS_HELD;
	if (place_metadata(pl, &pl->resp_hdrs) < 0) {
		pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return;
	}
	pl->flags |= PL_RESP_STARTED;
	pl->ops->response_start(pl->host, &pl->resp_hdrs, 0);
	fg_hdrs_reset(&pl->resp_hdrs);
}

/* Response headers in <pl->resp_hdrs>: through the hooks from <from>,
 * then to the client (streaming) or held for the first message (unary). */
static void response_headers(struct fg_pipeline *pl, size_t from)
{
	struct fg_pipeline_env *env = pl->env;
	const char *v;
	size_t i, len;
	enum fg_stage_rc rc;
	struct fg_stage_ctx c;
	struct side *s = &pl->side[FG_STAGE_RESPONSE];

	if (from == 0) {
		s->enc = FG_GRPCFRAME_IDENTITY;
		v = fg_hdrs_find(&pl->resp_hdrs, "grpc-encoding", &len);
		if (v && fg_grpcframe_encoding_parse(v, len, &s->enc) < 0) {
			pipeline_fail(pl, FG_GRPC_INTERNAL, "the upstream answered with grpc-encoding '%.*s', which "
			              "feedguard cannot read", (int)(len > 64 ? 64 : len), v);
			return;
		}
	}
	for (i = from; i < env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !env->stages[i]->on_response_headers)
			continue;
		c = ctx_of(pl, i);
		rc = env->stages[i]->on_response_headers(&c, &pl->resp_hdrs);
		if (pl->flags & PL_FINISHED)
			return;
		if (rc == FG_STAGE_SUSPEND) {
			s->susp = (int)i;
			s->susp_ev = EV_RESP_HEADERS;
			return;
		}
	}
	pl->flags &= ~PL_HDRS_PENDING;
	pl->flags |= PL_HDRS_HELD;
	if (fg_pipeline_streaming_response(pl))
		release_headers(pl);
}

/* The response's end, once nothing is held: a message cut short is
 * INTERNAL; held headers go out before the trailers. */
static void response_end(struct fg_pipeline *pl, size_t from)
{
	struct side *s = &pl->side[FG_STAGE_RESPONSE];

	if (from == 0 && fg_grpcframe_reader_pending(&s->reader)) {
		pipeline_fail(pl, FG_GRPC_INTERNAL, "the upstream response ended in the middle of a message");
		return;
	}
	if (!run_end_hooks(pl, FG_STAGE_RESPONSE, from))
		return;
	release_headers(pl);
	if (pl->flags & PL_FINISHED)
		return;
	if (s->has_trailers && place_metadata(pl, &s->trailers) < 0) {
		pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return;
	}
	s->end_wait = 0;
	s->ended = 1;
	pl->ops->response_end(pl->host, s->has_trailers ? &s->trailers : NULL);
}

/* A trailers-only response (its headers in <pl->resp_hdrs>). */
static void response_trailers_only(struct fg_pipeline *pl, size_t from)
{
	struct side *s = &pl->side[FG_STAGE_RESPONSE];
	struct fg_hdrs tmp;

	pl->flags &= ~PL_PENDING_END;
	/* the end hooks see it as the trailers it is */
	tmp = s->trailers;
	s->trailers = pl->resp_hdrs;
	pl->resp_hdrs = tmp;
	s->has_trailers = 1;
	if (!run_end_hooks(pl, FG_STAGE_RESPONSE, from))
		return;
	if (place_metadata(pl, &s->trailers) < 0) {
		pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return;
	}
	s->ended = 1;
	pl->flags |= PL_RESP_STARTED;
	pl->ops->response_start(pl->host, &s->trailers, 1);
}

/* --- the pump ---------------------------------------------------------- */

/* Continue side <dir>'s suspended event after its stage resumed. */
static void continue_suspended(struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	struct side *s = &pl->side[dir];
	size_t from = (size_t)s->susp + 1;
	enum pl_event ev = s->susp_ev;
	struct msg_run r;

	s->susp = NO_STAGE;
	s->susp_ev = EV_NONE;
	s->susp_resumed = 0;
	switch (ev) {
	case EV_REQ_HEADERS:
		request_headers(pl, from);
		break;
	case EV_MESSAGE:
		memset(&r, 0, sizeof(r));
		r.orig = fg_bufq_head(&s->susp_orig);
		r.orig_len = fg_bufq_len(&s->susp_orig);
		r.flag = s->susp_flag;
		r.changed = s->susp_changed;
		r.m.data = fg_bufq_head(&s->susp_cur);
		r.m.len = fg_bufq_len(&s->susp_cur);
		r.m.index = s->nmsg - 1;
		(void)run_message(pl, dir, &r, from);
		if (s->susp == NO_STAGE) {
			fg_bufq_truncate(&s->susp_orig, 0);
			fg_bufq_truncate(&s->susp_cur, 0);
		}
		break;
	case EV_END:
		if (dir == FG_STAGE_REQUEST)
			request_end(pl, from);
		else if (pl->flags & PL_PENDING_END)
			response_trailers_only(pl, from);
		else
			response_end(pl, from);
		break;
	case EV_RESP_HEADERS:
		response_headers(pl, from);
		break;
	default:
		break;
	}
}

/* Feed side <dir>'s held bytes while it can move, then apply its end. */
static void pump_side(struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	struct side *s = &pl->side[dir];
	size_t taken;

	if (s->susp != NO_STAGE && s->susp_resumed)
		continue_suspended(pl, dir);
	if (dir == FG_STAGE_RESPONSE && pl->hold == NO_STAGE && (pl->flags & PL_HDRS_PENDING) &&
	    !side_blocked(pl, dir)) {
		if (pl->flags & PL_PENDING_END) {
			response_trailers_only(pl, 0);
			return;
		}
		response_headers(pl, 0);
	}
	while (fg_bufq_len(&s->raw) && !side_blocked(pl, dir) && !(pl->flags & PL_FINISHED) &&
	       fg_bufq_len(s->out) <= pl->call.cfg->limits.stream_window) {
		if (feed(pl, dir, fg_bufq_head(&s->raw), fg_bufq_len(&s->raw), &taken) < 0)
			return;
		fg_bufq_consume(&s->raw, taken);
	}
	if ((pl->flags & PL_FINISHED) || side_blocked(pl, dir) || fg_bufq_len(&s->raw) || !s->end_wait)
		return;
	if (dir == FG_STAGE_REQUEST)
		request_end(pl, 0);
	else
		response_end(pl, 0);
}

static void pipeline_pump(struct fg_pipeline *pl)
{
	if (pl->flags & PL_FINISHED)
		return;
	if (pl->flags & PL_STARTED)
		pump_side(pl, FG_STAGE_REQUEST);
	if (!(pl->flags & PL_FINISHED))
		pump_side(pl, FG_STAGE_RESPONSE);
	fg_pipeline_account(pl);
	if (pl->flags & PL_FINISHED)
		return;
	/* settle both windows: bytes moved, or the budget changed */
	pl->ops->request_more(pl->host);
	pl->ops->response_more(pl->host);
}

/* Bytes of side <dir>: straight into the stages when nothing is held and
 * the output has room (no staging copy), the rest held for the pump. */
static void side_data(struct fg_pipeline *pl, enum fg_stage_dir dir, const uint8_t *data, size_t len)
{
	struct side *s = &pl->side[dir];
	size_t taken = 0;

	if (pl->flags & PL_FINISHED)
		return;
	if (!fg_bufq_len(&s->raw) && (pl->flags & PL_STARTED) && feed(pl, dir, data, len, &taken) < 0)
		return;
	if (taken < len && !(pl->flags & PL_FINISHED) && fg_bufq_append(&s->raw, data + taken, len - taken) < 0) {
		pipeline_fail(pl, FG_GRPC_RESOURCE_EXHAUSTED, "feedguardd is out of memory");
		return;
	}
	pump_side(pl, dir);
	fg_pipeline_account(pl);
	if (pl->flags & PL_FINISHED)
		return;
	if (dir == FG_STAGE_REQUEST)
		pl->ops->request_more(pl->host);
	else
		pl->ops->response_more(pl->host);
}

/* --- from the call ----------------------------------------------------- */

static void side_reset(struct side *s, size_t max_message, struct fg_bufq *out)
{
	s->reader.max_message = max_message;
	s->out = out;
	s->enc = FG_GRPCFRAME_IDENTITY;
	s->nmsg = 0;
	s->end_wait = s->ended = s->has_trailers = 0;
	s->susp = NO_STAGE;
	s->susp_ev = EV_NONE;
	s->susp_resumed = 0;
	fg_bufq_truncate(&s->susp_orig, 0);
	fg_bufq_truncate(&s->susp_cur, 0);
	fg_hdrs_reset(&s->trailers);
}

/* A pipeline from the env's spares (buffers and state blocks kept) or new. */
static struct fg_pipeline *pipeline_get(struct fg_pipeline_env *env, size_t max_message)
{
	struct fg_pipeline *pl = env->spare;
	size_t i;

	if (pl) {
		env->spare = pl->next_spare;
		env->nspare--;
	} else {
		if ((pl = calloc(1, sizeof(*pl))) == NULL)
			return NULL;
		fg_grpcframe_reader_init(&pl->side[0].reader, max_message);
		fg_grpcframe_reader_init(&pl->side[1].reader, max_message);
		for (i = 0; i < env->nstages; i++) {
			if (env->stages[i]->call_size && !(pl->state[i] = malloc(env->stages[i]->call_size))) {
				pipeline_destroy(pl);
				return NULL;
			}
		}
	}
	pl->env = env;
	pl->flags = 0;
	pl->run = 0;
	pl->hold = NO_STAGE;
	pl->accounted = 0;
	pl->assembling = 0;
	pl->budget = NULL;
	fg_hdrs_reset(&pl->resp_hdrs);
	fg_hdrs_reset(&pl->meta);
	for (i = 0; i < env->nstages; i++)
		if (pl->state[i])
			memset(pl->state[i], 0, env->stages[i]->call_size);
	memset(&pl->call, 0, sizeof(pl->call));
	return pl;
}

static void pipeline_put(struct fg_pipeline *pl)
{
	struct fg_pipeline_env *env = pl->env;
	struct fg_stage_ctx c;
	size_t i;

	for (i = 0; i < env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !env->stages[i]->call_free)
			continue;
		c = ctx_of(pl, i);
		env->stages[i]->call_free(&c);
	}
	fg_config_unref(pl->call.cfg);
	pl->call.cfg = NULL;
	if (env->nspare >= PIPELINE_SPARE_MAX) {
		pipeline_destroy(pl);
		return;
	}
	/* a partial message is forgotten; buffers grown past their keep size go */
	for (i = 0; i < 2; i++) {
		fg_grpcframe_reader_reset(&pl->side[i].reader);
		fg_bufq_clear(&pl->side[i].raw);
		if (pl->side[i].susp_orig.cap > FG_GRPCFRAME_READER_KEEP)
			fg_bufq_free(&pl->side[i].susp_orig);
		if (pl->side[i].susp_cur.cap > FG_GRPCFRAME_READER_KEEP)
			fg_bufq_free(&pl->side[i].susp_cur);
	}
	pl->next_spare = env->spare;
	env->spare = pl;
	env->nspare++;
}

/*
 * Past limits.worker_buffer new intercepted calls are refused, as
 * Envoy's overload manager does: UNAVAILABLE, so clients retry elsewhere.
 * A connection over limits.connection_buffer only gets backpressure (its
 * windows are held, as Envoy's per-connection buffer limit does): its new
 * calls are not refused.
 */
static int budget_admit(struct fg_pipeline_env *env, const struct fg_pipeline_args *a, int *status, char *msg,
                        size_t msglen)
{
	if (env->held > a->cfg->limits.worker_buffer) {
		*status = FG_GRPC_UNAVAILABLE;
		snprintf(msg, msglen, "feedguardd is overloaded (limits.worker_buffer reached); retry");
		return FG_ETOOBIG;
	}
	return 0;
}

/* Run every stage's begin; 1 when some stage runs. */
static int run_begins(struct fg_pipeline *pl, const struct fg_hdrs *h)
{
	struct fg_pipeline_env *env = pl->env;
	struct fg_stage_ctx c;
	size_t i;

	int work = 0;

	for (i = 0; i < env->nstages; i++) {
		c = ctx_of(pl, i);
		if (!env->stages[i]->begin || env->stages[i]->begin(&c, h) != FG_STAGE_RUN)
			continue;
		pl->run |= 1u << i;
		if (!(env->stages[i]->flags & FG_STAGE_F_SUPPORT))
			work = 1;
	}
	/* Only supporting stages (identify, for a band nothing else has work
	 * for): the call was counted and passes through untouched. */
	return work;
}

int fg_pipeline_begin(struct fg_pipeline **out, struct fg_pipeline_env *env, const struct fg_pipeline_args *a,
                      int *status, char *msg, size_t msglen)
{
	struct fg_pipeline *pl;
	const char *v;
	size_t vlen;
	int rv;

	*out = NULL;
	if (!a->cfg->policy || !fg_policy_find_method(a->cfg->policy, a->path, a->path_len))
		return 0;
	if ((rv = budget_admit(env, a, status, msg, msglen)) < 0)
		return rv;
	if ((pl = pipeline_get(env, a->cfg->limits.max_message_size)) == NULL) {
		*status = FG_GRPC_INTERNAL;
		snprintf(msg, msglen, "feedguardd is out of memory");
		return FG_ENOMEM;
	}
	pl->call.cfg = fg_config_ref(a->cfg);
	pl->call.pol = a->cfg->policy;
	pl->call.m = fg_policy_find_method(a->cfg->policy, a->path, a->path_len);
	pl->call.slot = env->slot_no;
	side_reset(&pl->side[0], a->cfg->limits.max_message_size, a->req_out);
	side_reset(&pl->side[1], a->cfg->limits.max_message_size, a->resp_out);
	/* A message feedguard cannot read must never pass unedited; a repeated
	 * grpc-encoding could be read one way here and another way upstream,
	 * so it is unreadable too. */
	v = fg_hdrs_find_single(a->req_hdrs, "grpc-encoding", &vlen);
	if ((!v && fg_hdrs_find(a->req_hdrs, "grpc-encoding", &vlen)) ||
	    (v && fg_grpcframe_encoding_parse(v, vlen, &pl->side[0].enc) < 0)) {
		*status = FG_GRPC_UNIMPLEMENTED;
		snprintf(msg, msglen, "grpc-encoding '%.*s' is not supported by feedguard (it reads one of identity, "
		         "gzip and deflate)", v ? (int)(vlen > 64 ? 64 : vlen) : 8, v ? v : "repeated");
		pipeline_put(pl);
		return FG_EINVAL;
	}
	/* The slot before the begins: a stage may take its handle in <begin>
	 * (to start a lookup there and suspend later), and that handle must
	 * name this call, not the slot the pipeline had in its last life. */
	if (slot_take(env, pl) < 0) {
		pipeline_put(pl);
		*status = FG_GRPC_INTERNAL;
		snprintf(msg, msglen, "feedguardd is out of memory");
		return FG_ENOMEM;
	}
	if (!run_begins(pl, a->req_hdrs)) {
		slot_release(pl);
		pipeline_put(pl);
		return 0;
	}
	pl->ops = a->ops;
	pl->host = a->host;
	pl->req_hdrs = a->req_hdrs;
	pl->budget = a->budget;
	if (pl->budget)
		TAILQ_INSERT_TAIL(&pl->budget->calls, pl, budget_link);
	*out = pl;
	return 0;
}

void fg_pipeline_start(struct fg_pipeline *pl)
{
	pl->flags |= PL_STARTED;
	if (!pl->call.need_first_message)
		request_headers(pl, 0);
}

void fg_pipeline_request_data(struct fg_pipeline *pl, const uint8_t *data, size_t len)
{
	side_data(pl, FG_STAGE_REQUEST, data, len);
}

/* Keep the end of side <dir> (and its trailers) and apply it once nothing is held. */
static void side_end(struct fg_pipeline *pl, enum fg_stage_dir dir, struct fg_hdrs *t)
{
	struct side *s = &pl->side[dir];
	struct fg_hdrs tmp;

	if ((pl->flags & PL_FINISHED) || s->end_wait || s->ended)
		return;
	s->end_wait = 1;
	if (t) {
		tmp = s->trailers;
		s->trailers = *t;
		*t = tmp;
		fg_hdrs_reset(t);
		s->has_trailers = 1;
	}
	pump_side(pl, dir);
	fg_pipeline_account(pl);
}

void fg_pipeline_request_end(struct fg_pipeline *pl, struct fg_hdrs *trailers)
{
	side_end(pl, FG_STAGE_REQUEST, trailers);
}

void fg_pipeline_response_headers(struct fg_pipeline *pl, struct fg_hdrs *h, int end)
{
	struct fg_hdrs tmp;

	if ((pl->flags & PL_FINISHED) || pl->side[FG_STAGE_RESPONSE].ended)
		return;
	/* swapped, not copied: both lists keep their memory for reuse */
	tmp = pl->resp_hdrs;
	pl->resp_hdrs = *h;
	*h = tmp;
	fg_hdrs_reset(h);
	pl->flags |= PL_HDRS_PENDING | (end ? PL_PENDING_END : 0);
	if (!side_blocked(pl, FG_STAGE_RESPONSE))
		pump_side(pl, FG_STAGE_RESPONSE);
}

void fg_pipeline_response_data(struct fg_pipeline *pl, const uint8_t *data, size_t len)
{
	side_data(pl, FG_STAGE_RESPONSE, data, len);
}

void fg_pipeline_response_end(struct fg_pipeline *pl, struct fg_hdrs *t)
{
	side_end(pl, FG_STAGE_RESPONSE, t);
}

void fg_pipeline_free(struct fg_pipeline *pl)
{
	if (!pl)
		return;
	finish(pl);
	budget_detach(pl);
	slot_release(pl);
	pipeline_put(pl);
}

int fg_pipeline_streaming_response(const struct fg_pipeline *pl)
{
	return pl->call.m->server_streaming != 0;
}

/* --- for stages -------------------------------------------------------- */

int fg_pipeline_resume(struct fg_pipeline *pl, const struct fg_stage *st)
{
	int d, any = 0;

	if (pl->flags & PL_FINISHED)
		return FG_ESTATE;
	for (d = 0; d < 2; d++) {
		struct side *s = &pl->side[d];
		if (s->susp != NO_STAGE && pl->env->stages[s->susp] == st && !s->susp_resumed) {
			s->susp_resumed = 1;
			any = 1;
		}
	}
	if (pl->hold != NO_STAGE && pl->env->stages[pl->hold] == st) {
		pl->hold = NO_STAGE;
		any = 1;
	}
	if (!any)
		return FG_ESTATE;
	schedule(pl);
	return 0;
}

/* Status trailers (and, with <status_line>, a trailers-only or headers
 * block) for an answer of feedguard's own. */
static int status_block(struct fg_hdrs *h, int status_line, int status, const char *text)
{
	char code[16], enc[512];
	size_t enclen;
	int n, rv = 0;

	n = snprintf(code, sizeof(code), "%d", status);
	if (status_line) {
		rv |= add_hdr(h, ":status", "200", 3);
		rv |= add_hdr(h, "content-type", "application/grpc", 16);
	}
	if (status >= 0) {
		enclen = fg_grpc_percent_encode(text ? text : "", enc, sizeof(enc));
		rv |= add_hdr(h, "grpc-status", code, (size_t)n);
		rv |= add_hdr(h, "grpc-message", enc, enclen);
	}
	return rv < 0 ? FG_ENOMEM : 0;
}

int fg_pipeline_answer(struct fg_pipeline *pl, int status, const char *text, const uint8_t *msg, size_t len)
{
	struct side *s = &pl->side[FG_STAGE_RESPONSE];

	if ((pl->flags & PL_FINISHED) || s->ended)
		return FG_ESTATE;
	/* no metadata and no message: the plain failure path */
	if (!msg && pl->meta.n == 0) {
		finish(pl);
		forget_waiting(pl);
		pl->ops->fail(pl->host, status, text);
		return 0;
	}
	finish(pl);
	forget_waiting(pl);
	pl->ops->cancel_upstream(pl->host);
	fg_hdrs_reset(&s->trailers);
	if (!(pl->flags & PL_RESP_STARTED)) {
		fg_hdrs_reset(&pl->resp_hdrs);
		if (status_block(&pl->resp_hdrs, 1, -1, NULL) < 0 || place_metadata(pl, &pl->resp_hdrs) < 0)
			goto fail_nomem;
		pl->flags |= PL_RESP_STARTED;
		pl->ops->response_start(pl->host, &pl->resp_hdrs, 0);
	}
	fg_bufq_clear(&s->raw);
	if (msg && append_framed(s->out, FG_GRPCFRAME_UNCOMPRESSED, msg, len) < 0)
		goto fail_nomem;
	if (status_block(&s->trailers, 0, status, text) < 0 || place_metadata(pl, &s->trailers) < 0)
		goto fail_nomem;
	pl->ops->response_end(pl->host, &s->trailers);
	return 0;

fail_nomem:
	pl->ops->fail(pl->host, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	return FG_ENOMEM;
}

int fg_pipeline_fail(struct fg_pipeline *pl, int status, const char *text)
{
	return fg_pipeline_answer(pl, status, text, NULL, 0);
}

int fg_pipeline_add_metadata(struct fg_pipeline *pl, const char *name, const char *value, size_t len)
{
	return add_hdr(&pl->meta, name, value, len) < 0 ? FG_ENOMEM : 0;
}
