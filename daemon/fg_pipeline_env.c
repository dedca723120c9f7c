/*
 * fg_pipeline_env.c - the worker's side of the stage pipeline: its
 * environment (every stage's per-worker state, the inflate context and
 * scratch buffers), pooled pipelines, the handle table that makes a late
 * resume harmless, the buffer budgets of connections and of the worker,
 * and the pump event that moves held bytes.  See fg_pipeline.h.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_metrics.h"
#include "fg_pipeline-internal.h"

/*
 * The stages of the daemon, in the one order they run.  identify comes
 * first because every later stage reads the band and user it decides;
 * capture is last: it records what the others decided.
 */
static const struct fg_stage *const daemon_stages[] = {
	&fg_stage_identify,
	&fg_stage_gate,
	&fg_stage_strip,
	&fg_stage_capture_tap,          /* the ranker's response as strip left it, for capture */
	&fg_stage_filter,
	&fg_stage_account,
	&fg_stage_capture,
};

/*
 * Ended pipelines a worker keeps, with their message buffers, so that in
 * steady state an intercepted call allocates nothing: as many as fit in
 * PIPELINE_SPARE_BYTES (each keeps at most FG_GRPCFRAME_READER_KEEP per
 * buffer).  A count of 32 was too few for a worker whose calls wait on
 * Redis: bursts of 50 calls in flight ended with most of them freed, and
 * their buffers grown again by the next burst (1 µs of malloc per call).
 * 4 MiB was too little for the same calls: a RankFeed pipeline keeps
 * 100 to 150 KiB (the request's and the response's readers and raw
 * queues), so 4 MiB kept about 30, fewer than a worker whose calls wait
 * for Redis has in flight in a burst, and the rest grew again (16 MiB: 2
 * to 4 µs less CPU a call with state at 4000 calls a second, side by
 * side).
 */
#define PIPELINE_SPARE_BYTES (16u << 20)
#define PIPELINE_SPARE_MAX 1024

static void pump_cb(evutil_socket_t fd, short what, void *arg);
static int env_create(struct fg_pipeline_env **out, const struct fg_stage_worker_env *tmpl, struct fg_config *cfg,
                      const struct fg_stage *const *stages, size_t n);

/* --- environment ------------------------------------------------------- */

void fg_pipeline_budget_init(struct fg_pipeline_budget *b)
{
	b->held = 0;
	b->out_held = 0;
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
	struct fg_stage_worker_env wenv = env->tmpl;
	size_t i;
	int rv;

	wenv.cfg = cfg;
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
                               size_t slot, struct fg_metrics *metrics, const struct fg_stage *const *stages, size_t n);

int fg_pipeline_env_new_stages(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg,
                               size_t slot, struct fg_metrics *metrics, const struct fg_stage *const *stages, size_t n)
{
	struct fg_stage_worker_env w = { .base = base, .slot = slot, .metrics = metrics };

	return env_create(out, &w, cfg, stages, n);
}

int fg_pipeline_env_new_tool(struct fg_pipeline_env **out, const struct fg_stage_worker_env *wenv, struct fg_config *cfg,
                             const struct fg_stage *const *stages, size_t n)
{
	return env_create(out, wenv, cfg, stages, n);
}

static int env_create(struct fg_pipeline_env **out, const struct fg_stage_worker_env *tmpl, struct fg_config *cfg,
                      const struct fg_stage *const *stages, size_t n)
{
	struct fg_pipeline_env *env;
	int rv = FG_ENOMEM;

	*out = NULL;
	if (n > MAX_STAGES)
		return FG_EINVAL;
	if ((env = calloc(1, sizeof(*env))) == NULL)
		return FG_ENOMEM;
	env->tmpl = *tmpl;
	env->tmpl.pipelines = env;
	env->base = tmpl->base;
	env->stages = stages;
	env->nstages = n;
	env->slot_no = tmpl->slot;
	env->held_gauge = tmpl->metrics ? &tmpl->metrics->intercept_buffered : NULL;
	env->metrics = tmpl->metrics;
	TAILQ_INIT(&env->pump);
	if ((env->pump_ev = event_new(env->base, -1, 0, pump_cb, env)) == NULL)
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
                        struct fg_metrics *metrics, struct fg_capture *capture)
{
	struct fg_stage_worker_env w = { .base = base, .slot = slot, .metrics = metrics, .capture = capture };

	return env_create(out, &w, cfg, daemon_stages, sizeof(daemon_stages) / sizeof(daemon_stages[0]));
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

int fg_pipeline_slot_take(struct fg_pipeline_env *env, struct fg_pipeline *pl)
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

void fg_pipeline_slot_release(struct fg_pipeline *pl)
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

void *fg_pipeline_stage_state(struct fg_pipeline *pl, const struct fg_stage *st)
{
	size_t i;

	for (i = 0; i < pl->env->nstages; i++)
		if (pl->env->stages[i] == st)
			return (pl->run & (1u << i)) ? pl->state[i] : NULL;
	return NULL;
}

/* --- budgets ----------------------------------------------------------- */

/* Bytes <pl> holds, and in <*out> those of them queued for a peer. */
static uint64_t pipeline_bytes(const struct fg_pipeline *pl, uint64_t *out)
{
	uint64_t n = 0;
	int d;

	*out = 0;
	for (d = 0; d < 2; d++) {
		const struct side *s = &pl->side[d];
		n += fg_bufq_len(&s->raw) + fg_grpcframe_reader_pending(&s->reader) + fg_bufq_len(&s->susp_orig) +
		     fg_bufq_len(&s->susp_cur);
		if (s->out)
			*out += fg_bufq_len(s->out);
	}
	return n + *out;
}

/* Past this, the output a connection's peer has not taken stops the call
 * that may go on past the budget: the budget and room for one more edited
 * message (limits.max_message_size). */
static uint64_t output_cap(const struct fg_config *cfg)
{
	return cfg->limits.connection_buffer + cfg->limits.max_message_size;
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
static void wake_budget(struct fg_pipeline_budget *b)
{
	struct fg_pipeline *pl;

	TAILQ_FOREACH(pl, &b->calls, budget_link)
		fg_pipeline_schedule(pl);
}

static void wake_worker(struct fg_pipeline_env *env)
{
	uint32_t i;

	for (i = 0; i < env->nslots; i++)
		if (env->slots[i].pl)
			fg_pipeline_schedule(env->slots[i].pl);
}

/* Input under way on a side that can take it: bytes that came and wait
 * to be fed, or a message in the middle of arriving, where the output
 * is under a stream window (a call whose peer does not take its output
 * cannot go on, and must not keep others from it).  The call that may go
 * on past a budget is chosen among these. */
static unsigned pipeline_under_way(const struct fg_pipeline *pl)
{
	size_t window = pl->call.cfg->limits.stream_window;
	int d;

	for (d = 0; d < 2; d++) {
		const struct side *s = &pl->side[d];
		if ((fg_bufq_len(&s->raw) || fg_grpcframe_reader_pending(&s->reader)) &&
		    (!s->out || fg_bufq_len(s->out) <= window))
			return 1;
	}
	return 0;
}

/*
 * Count <now> bytes and the <under_way> state for <pl> in its budgets.
 * Windows held for a budget are looked at again (the pipelines get a pump
 * turn) only when that can change something: a budget went back under its
 * limit, or, while one is over, the call that may go on can have changed.
 * Under the limits nothing is woken: a call ending on a busy connection
 * costs nothing.
 */
static void budget_count(struct fg_pipeline *pl, uint64_t now, uint64_t out, unsigned under_way)
{
	const struct fg_config *cfg = pl->call.cfg;
	struct fg_pipeline_env *env = pl->env;
	struct fg_pipeline_budget *b = pl->budget;
	int conn_over = 0, mover_changed = under_way != pl->under_way;

	if (b) {
		conn_over = b->held > cfg->limits.connection_buffer;
		/* the output going back under its cap frees the call that goes on */
		mover_changed |= b->out_held > output_cap(cfg) && b->out_held - pl->accounted_out + out <= output_cap(cfg);
		b->held = b->held - pl->accounted + now;
		b->out_held = b->out_held - pl->accounted_out + out;
	}
	env_set_held(env, env->held - pl->accounted + now);
	pl->accounted = now;
	pl->accounted_out = out;
	pl->under_way = under_way;
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
	uint64_t out, now = pipeline_bytes(pl, &out);
	unsigned under_way = pipeline_under_way(pl);

	if (now != pl->accounted || out != pl->accounted_out || under_way != pl->under_way)
		budget_count(pl, now, out, under_way);
}

void fg_pipeline_budget_detach(struct fg_pipeline *pl)
{
	fg_pipeline_leave_connection(pl);
	budget_count(pl, 0, 0, 0);
}

void fg_pipeline_leave_connection(struct fg_pipeline *pl)
{
	struct fg_pipeline_budget *b = pl ? pl->budget : NULL;

	uint64_t limit;
	int was_over;

	if (!b)
		return;
	limit = pl->call.cfg->limits.connection_buffer;
	was_over = b->held > limit || b->out_held > output_cap(pl->call.cfg);
	b->held -= pl->accounted;
	b->out_held -= pl->accounted_out;
	TAILQ_REMOVE(&b->calls, pl, budget_link);
	pl->budget = NULL;
	/* The budget went back under its limit, or the call that went on past
	 * it is gone: the others' held windows are looked at again. */
	if (was_over && (b->held <= limit || pl->under_way || pl->accounted_out) && TAILQ_FIRST(&b->calls))
		wake_budget(b);
}

size_t fg_pipeline_partial(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	const struct side *s = &pl->side[dir];

	return fg_bufq_len(&s->raw) ? 0 : fg_grpcframe_reader_pending(&s->reader);
}

size_t fg_pipeline_held(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	const struct side *s = &pl->side[dir];

	return fg_bufq_len(&s->raw) + fg_grpcframe_reader_pending(&s->reader) + fg_bufq_len(&s->susp_orig);
}

/* The call of <b> that goes on while a budget is over: the oldest one with
 * work under way (pipeline_under_way), so a message in the middle of
 * arriving (up to limits.max_message_size) always completes and frees its
 * bytes, while a call that is merely open (a quiet stream) blocks nobody. */
static const struct fg_pipeline *budget_mover(const struct fg_pipeline_budget *b)
{
	const struct fg_pipeline *pl;

	TAILQ_FOREACH(pl, &b->calls, budget_link)
		if (pl->under_way)
			return pl;
	return NULL;
}

/*
 * Past a budget only the oldest call with input under way goes on, so its
 * message completes and frees its bytes; and only while the output the
 * connection's client has not taken leaves room for one more edited
 * message (output_cap).  Without that cap a client that reads nothing made
 * every stream of its connection finish a message in turn, S x (W + M)
 * held (~200 MB measured); with it, streams whose client does not read
 * stall side by side and are cut together after timeouts.stalled_stream,
 * while one paused stream (output up to W and a page) blocks nobody.
 */
int fg_pipeline_budget_waits(const struct fg_pipeline *pl)
{
	if (!budget_over(pl))
		return 0;
	if (!pl->budget || budget_mover(pl->budget) != pl)
		return 1;
	return pl->budget->out_held > output_cap(pl->call.cfg);
}

int fg_pipeline_holds(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	if (pl->flags & PL_FINISHED)
		return 0;
	if (fg_bufq_len(&pl->side[dir].raw) || side_blocked(pl, dir))
		return 1;
	return fg_pipeline_budget_waits(pl);
}

/* --- pump -------------------------------------------------------------- */

void fg_pipeline_schedule(struct fg_pipeline *pl)
{
	struct fg_pipeline_env *env = pl->env;

	if ((pl->flags & (PL_PUMP_QUEUED | PL_FINISHED)))
		return;
	pl->flags |= PL_PUMP_QUEUED;
	TAILQ_INSERT_TAIL(&env->pump, pl, pump_link);
	event_active(env->pump_ev, 0, 0);
}

void fg_pipeline_unschedule(struct fg_pipeline *pl)
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
		fg_pipeline_unschedule(pl);
		fg_pipeline_run(pl);
	}
}

void fg_pipeline_output_taken(struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	if (fg_bufq_len(&pl->side[dir].raw) || pl->side[dir].end_wait)
		fg_pipeline_schedule(pl);
}

/* --- pool -------------------------------------------------------------- */

/* What an ended pipeline keeps: itself, its stage blocks, its buffers. */
static size_t pipeline_kept_bytes(const struct fg_pipeline *pl)
{
	const struct fg_pipeline_env *env = pl->env;
	size_t n = sizeof(*pl), i;

	for (i = 0; i < env->nstages; i++)
		n += pl->state[i] ? env->stages[i]->call_size : 0;
	for (i = 0; i < 2; i++)
		n += pl->side[i].reader.cap + pl->side[i].raw.cap + pl->side[i].susp_orig.cap +
		     pl->side[i].susp_cur.cap;
	return n;
}

/* A pipeline from the env's spares (buffers and state blocks kept) or new. */
struct fg_pipeline *fg_pipeline_get(struct fg_pipeline_env *env, size_t max_message)
{
	struct fg_pipeline *pl = env->spare;
	size_t i;

	if (pl) {
		env->spare = pl->next_spare;
		env->nspare--;
		env->spare_bytes -= pl->spare_bytes;
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
	pl->accounted_out = 0;
	pl->under_way = 0;
	pl->budget = NULL;
	fg_hdrs_reset(&pl->resp_hdrs);
	fg_hdrs_reset(&pl->meta);
	for (i = 0; i < env->nstages; i++)
		if (pl->state[i])
			memset(pl->state[i], 0, env->stages[i]->call_size);
	memset(&pl->call, 0, offsetof(struct fg_stage_call, capture_raw_user));
	return pl;
}

void fg_pipeline_put(struct fg_pipeline *pl)
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
		if (pl->side[i].raw.cap > FG_GRPCFRAME_READER_KEEP)
			fg_bufq_free(&pl->side[i].raw);
		if (pl->side[i].susp_orig.cap > FG_GRPCFRAME_READER_KEEP)
			fg_bufq_free(&pl->side[i].susp_orig);
		if (pl->side[i].susp_cur.cap > FG_GRPCFRAME_READER_KEEP)
			fg_bufq_free(&pl->side[i].susp_cur);
	}
	pl->spare_bytes = pipeline_kept_bytes(pl);
	if (env->spare_bytes + pl->spare_bytes > PIPELINE_SPARE_BYTES) {
		pipeline_destroy(pl);
		return;
	}
	env->spare_bytes += pl->spare_bytes;
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
int fg_pipeline_admit(struct fg_pipeline_env *env, const struct fg_pipeline_args *a, int *status, char *msg,
                        size_t msglen)
{
	if (env->held > a->cfg->limits.worker_buffer) {
		*status = FG_GRPC_UNAVAILABLE;
		snprintf(msg, msglen, "feedguardd is overloaded (limits.worker_buffer reached); retry");
		return FG_ETOOBIG;
	}
	return 0;
}

