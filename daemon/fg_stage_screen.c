/*
 * fg_stage_screen.c - screen time at the ranking boundary: two stages of
 * one job.  The gate (after identify) reads the user's state while the
 * ranker works (HOLD_RESPONSE), decides with fg_limits, and answers the
 * call itself when a rule says empty or deny (the ranker's call is then
 * cancelled); it hands the exposure allowances to the filter.  The account
 * stage (after filter) tells the client (feedguard-screen-time,
 * feedguard-notice) and, once the call ended, adds what was delivered to
 * the state in one write.
 *
 * A call never waits longer than state.timeout for its state: the backend
 * (fg_state_redis) answers every operation within it.  Operations carry a
 * slot of the worker's bounded table (state.max_pending), never a pointer
 * to the call: a reply for a call that ended finds its handle stale.
 *
 * The time of a call is the wall clock at its request headers; builds
 * configured with --enable-test-hooks take it from the request header
 * feedguard-test-now (ms since the epoch) so tests walk through a day.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>

#include "fg_clock.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_limits.h"
#include "fg_log.h"
#include "fg_metrics.h"
#include "fg_pipeline.h"
#include "fg_policy-t.h"
#include "fg_policy_eval.h"
#include "fg_redis.h"
#include "fg_stage.h"
#include "fg_stage_record.h"
#include "fg_state.h"
#include "fg_state_redis.h"
#include "fg_tz.h"

#define HDR_SCREEN_TIME "feedguard-screen-time"
#define HDR_NOTICE "feedguard-notice"
/* Operations in flight on a lent backend: an in-process one answers each
 * before it returns, so one would do. */
#define LENT_OPS 16
#define META_MAX 160

/* What an operation in flight is for. */
enum op_kind { OP_READ, OP_UPDATE };

/* One state operation in flight: the callback's argument. */
struct gate_op {
	struct gate_op *next_free;
	struct gate_worker *w;
	enum op_kind kind;
	fg_pipeline_handle h;               /* OP_READ: the call */
	struct fg_config *cfg;              /* OP_UPDATE: a reference, for the failure counter */
	size_t band;
};

struct gate_worker {
	struct event_base *base;
	struct fg_state *lent;              /* a backend lent by replay (not ours to free); NULL */
	uint64_t (*mono_us)(void *arg);     /* replay's clock; NULL: fg_clock_now_us */
	void *clock_arg;
	struct fg_metrics *metrics;
	struct fg_pipeline_env *pipelines;
	size_t slot;
	struct fg_state *state;             /* NULL: no state configured (or it could not start) */
	char *settings;                     /* the state settings the backend was made with */
	struct gate_op *ops;                /* state.max_pending slots */
	size_t nops;
	struct gate_op *free_ops;
	size_t nbusy;                       /* ops taken: each waits for its backend's callback */
	struct fg_redis_stats base_stats;   /* counts of links already replaced */
	/* The last call's clock (fg_limits_clock: zone lookups), for the next
	 * call of the same limits and zone until the next day or quiet-hours
	 * boundary.  Only calls of the worker's current config use or set
	 * it: <cfg_now> is compared, never followed (an older snapshot's
	 * limits may be freed, and their address used again). */
	const struct fg_config *cfg_now;    /* the config gate_worker_config saw last */
	const struct fg_config *memo_cfg;
	const struct fg_policy_limits *memo_l;
	const struct fg_tz *memo_tz;
	struct fg_limits_clock memo;
};

/* Per call, shared by the two stages (account finds it with
 * fg_pipeline_stage_state). */
struct gate_call {
	struct gate_worker *w;
	struct fg_stage_call *call;         /* the pipeline's, for callbacks */
	fg_pipeline_handle h;               /* the call, for callbacks and the timer */
	const struct fg_policy_limits *l;   /* the band's limits; NULL: not limited */
	const struct fg_tz *tz;             /* the call's zone */
	int64_t start_ms;                   /* the call's time */
	uint64_t start_mono_us;
	unsigned held;                      /* the response waits for the read */
	unsigned reading;                   /* a read is in flight */
	unsigned decided;                   /* <v> holds a verdict */
	unsigned answered;                  /* the gate answered the call: not use */
	unsigned told;                      /* the metadata went to the client */
	unsigned delivered;                 /* response messages the client got */
	unsigned extra_notices;             /* notices of rules an open stream reached */
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;         /* the call's start, as its band's rules see it */
	struct event *timer;                /* an open stream's next rule */
	size_t next_event;
	char zone_name[FG_TZ_NAME_MAX + 1];
	/* For a capture record (fg_stage_record.h). */
	unsigned action;                    /* enum fg_policy_action the call got */
	unsigned told_notices;              /* what feedguard-notice said */
	unsigned failed;                    /* the state could not be read: <failure> says why */
	unsigned answer_rule;               /* enum fg_policy_rule of the gate's answer */
	unsigned failure;                   /* enum fg_policy_state_reason */
	unsigned who_checked;               /* the read took the user's keys: the update need not check them */
};

/* --- time ---------------------------------------------------------------- */

static int64_t wall_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The call's time: the wall clock, or (test builds) the request's say.
 * A value past what a state time may be (FG_STATE_VALUE_MAX; strtoll
 * saturates at INT64_MAX) is not a time: the sums of fg_limits would
 * overflow. */
int64_t fg_stage_call_time_ms(const struct fg_hdrs *h)
{
#ifdef FG_TEST_HOOKS
	char buf[24];
	size_t len = 0;
	const char *v = fg_hdrs_find_single(h, FG_STAGE_TEST_NOW_HEADER, &len);
	long long t;

	if (v && len > 0 && len < sizeof(buf)) {
		memcpy(buf, v, len);
		buf[len] = '\0';
		if (strspn(buf, "0123456789") == len && (t = strtoll(buf, NULL, 10)) <= FG_STATE_VALUE_MAX)
			return t;
	}
#else
	(void)h;
#endif
	return wall_now_ms();
}

static uint64_t now_us(const struct gate_worker *w)
{
	return w->mono_us ? w->mono_us(w->clock_arg) : fg_clock_now_us();
}

static int64_t elapsed_ms(const struct gate_call *g)
{
	return (int64_t)((now_us(g->w) - g->start_mono_us) / 1000);
}

/* --- counters -------------------------------------------------------------- */

static void count_notices(const struct fg_stage_call *call, unsigned notices)
{
	const struct fg_policy *p = call->pol;
	unsigned k;

	if (!p->counters.notices || call->slot >= p->counters.nslots)
		return;
	for (k = 0; k < FG_POLICY_NNOTICES; k++)
		if (notices >> k & 1)
			__atomic_fetch_add(&p->counters.notices[(call->slot * p->nbands + call->band) * FG_POLICY_NNOTICES + k],
			                   1, __ATOMIC_RELAXED);
}

static void count_answer(const struct fg_stage_call *call, unsigned rule, unsigned action)
{
	const struct fg_policy *p = call->pol;
	size_t at;

	if (!p->counters.answered || call->slot >= p->counters.nslots || action < FG_POLICY_ACT_EMPTY)
		return;
	at = ((call->slot * p->nbands + call->band) * FG_POLICY_NRULES + rule) * 2 + (action - FG_POLICY_ACT_EMPTY);
	__atomic_fetch_add(&p->counters.answered[at], 1, __ATOMIC_RELAXED);
}

static void count_failure(const struct fg_policy *p, size_t slot, size_t band, unsigned reason, unsigned mode)
{
	size_t at;

	if (!p->counters.state_failures || slot >= p->counters.nslots)
		return;
	at = ((slot * p->nbands + band) * FG_POLICY_NSREASONS + reason) * FG_POLICY_NSMODES + mode;
	__atomic_fetch_add(&p->counters.state_failures[at], 1, __ATOMIC_RELAXED);
}

static unsigned reason_of(int rc)
{
	switch (rc) {
	case FG_ETIMEOUT:
		return FG_POLICY_S_TIMEOUT;
	case FG_EBUSY:
		return FG_POLICY_S_BUSY;
	case FG_EUNAVAIL:
		return FG_POLICY_S_DOWN;
	default:
		return FG_POLICY_S_ERROR;
	}
}

/* The link's counters (none while there is no link), and those of the
 * links it replaced, into the worker's metrics block (the admin thread
 * reads it). */
static void sync_metrics(struct gate_worker *w)
{
	static const struct fg_redis_stats no_link;
	const struct fg_redis_stats *s = &no_link;
	struct fg_redis *link = w->state ? fg_state_redis_link(w->state) : NULL;
	struct fg_metrics *m = w->metrics;

	if (!m)
		return;
	if (link)
		s = fg_redis_get_stats(link);
	__atomic_store_n(&m->redis_commands, w->base_stats.commands + s->commands, __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_errors[FG_METRICS_REDIS_ERROR], w->base_stats.errors + s->errors, __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_errors[FG_METRICS_REDIS_TIMEOUT], w->base_stats.timeouts + s->timeouts,
	                 __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_errors[FG_METRICS_REDIS_DOWN], w->base_stats.down + s->down, __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_errors[FG_METRICS_REDIS_BUSY], w->base_stats.busy + s->busy, __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_errors[FG_METRICS_REDIS_UNAVAILABLE], w->base_stats.unavailable + s->unavailable,
	                 __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_reconnects, w->base_stats.reconnects + s->reconnects, __ATOMIC_RELAXED);
	__atomic_store_n(&m->redis_connected, link && fg_redis_get_state(link) == FG_REDIS_CONNECTED,
	                 __ATOMIC_RELAXED);
}

/* fg_redis logs the link's changes itself; the gauge follows them. */
static void on_link_state(void *arg, enum fg_redis_state state, const char *why)
{
	(void)state;
	(void)why;
	sync_metrics(arg);
}

static void on_latency(void *arg, uint64_t us)
{
	struct gate_worker *w = arg;

	if (w->metrics)
		fg_metrics_observe_redis(w->metrics, us);
}

/* --- the worker's backend ------------------------------------------------ */

/* The settings a backend is made from, as one string: a reload that
 * leaves them as they were keeps the link.  The password file counts by
 * its identity and last change, not only its path: a password rotated in
 * place is read again by a reload (the link reads it only when made), and
 * the password itself never sits in this string. */
static char *settings_of(const struct fg_config *cfg)
{
	char *s = NULL, pw[96] = "";
	struct stat st;

	if (!cfg->state.enabled)
		return NULL;
	if (cfg->state.password_file && stat(cfg->state.password_file, &st) == 0)
		snprintf(pw, sizeof(pw), "%llu:%llu:%lld:%lld.%09ld", (unsigned long long)st.st_dev,
		         (unsigned long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
		         st.st_mtim.tv_nsec);
	if (asprintf(&s, "%s|%s|%s|%d|%s|%lld|%lld|%lld|%d|%lld|%lld", cfg->state.redis,
	             cfg->state.password_file ? cfg->state.password_file : "", pw, cfg->state.db,
	             cfg->state.key_prefix ? cfg->state.key_prefix : FG_STATE_DEFAULT_PREFIX,
	             (long long)cfg->state.timeout_us, (long long)cfg->state.connect_timeout_us,
	             (long long)cfg->state.stall_timeout_us, cfg->state.max_pending,
	             (long long)cfg->state.backoff_initial_us, (long long)cfg->state.backoff_max_us) < 0)
		return NULL;
	return s;
}

static void drop_backend(struct gate_worker *w)
{
	const struct fg_redis_stats *s;
	struct fg_state *old = w->state;
	struct fg_redis *link;

	if (!old || old == w->lent)
		return;
	if ((link = fg_state_redis_link(old))) {
		s = fg_redis_get_stats(link);
		w->base_stats.commands += s->commands;
		w->base_stats.errors += s->errors;
		w->base_stats.timeouts += s->timeouts;
		w->base_stats.down += s->down;
		w->base_stats.busy += s->busy;
		w->base_stats.unavailable += s->unavailable;
		w->base_stats.reconnects += s->reconnects;
	}
	/* Pending callbacks run now, with FG_EUNAVAIL: their calls take
	 * the fail mode; the ops table outlives this.  Each is a command the
	 * link counts as down as it goes, after its stats were taken above.
	 * The callbacks see no backend: sync_metrics would otherwise add the
	 * old link's counters to base_stats a second time (and the counters
	 * would fall back once the new link syncs). */
	w->base_stats.down += w->nbusy;
	w->state = NULL;
	fg_state_free(old);
	sync_metrics(w);
}

static int make_ops(struct gate_worker *w, size_t n)
{
	size_t i;

	if (w->nops >= n)
		return 0;
	/* Only grown while no operation is in flight (at start, or after
	 * drop_backend returned every slot). */
	free(w->ops);
	w->ops = calloc(n, sizeof(*w->ops));
	w->nops = w->ops ? n : 0;
	w->free_ops = NULL;
	for (i = 0; i < w->nops; i++) {
		w->ops[i].next_free = w->free_ops;
		w->free_ops = &w->ops[i];
	}
	return w->ops ? 0 : FG_ENOMEM;
}

static void make_backend(struct gate_worker *w, struct fg_config *cfg)
{
	struct fg_state_redis_config rc;
	const char *why = NULL;
	int err;

	fg_config_state_redis(cfg, &rc);
	rc.link.on_state = on_link_state;
	rc.link.state_arg = w;
	rc.link.on_latency = on_latency;
	rc.link.latency_arg = w;
	if (make_ops(w, (size_t)cfg->state.max_pending) < 0 ||
	    (err = fg_state_redis_new(&w->state, w->base, &rc, &why)) < 0) {
		w->state = NULL;
		fg_log(FG_LOG_ERROR, "state_failed", "redis=%s why=\"%s\"", cfg->state.redis,
		       why ? why : "out of memory");
	}
}

static void gate_worker_config(void *wstate, struct fg_config *cfg)
{
	struct gate_worker *w = wstate;
	char *s;

	w->cfg_now = cfg;
	w->memo_cfg = NULL;     /* a later config may be allocated where this one was */
	if (w->lent)
		return;                 /* replay's backend, whatever the config says */
	s = settings_of(cfg);
	/* Unchanged settings keep the link; a backend that could not be made
	 * (an unreadable password file) is tried again. */
	if ((!s && !w->settings) || (s && w->settings && strcmp(s, w->settings) == 0 && w->state)) {
		free(s);
		return;
	}
	drop_backend(w);
	free(w->settings);
	w->settings = s;
	if (s)
		make_backend(w, cfg);
}

static int gate_worker_init(void *wstate, const struct fg_stage_worker_env *env)
{
	struct gate_worker *w = wstate;

	w->base = env->base;
	w->metrics = env->metrics;
	w->pipelines = env->pipelines;
	w->slot = env->slot;
	w->mono_us = env->mono_us;
	w->clock_arg = env->tool;
	if (env->state) {
		w->lent = w->state = env->state;
		return make_ops(w, LENT_OPS);
	}
	gate_worker_config(w, env->cfg);
	return 0;
}

static void gate_worker_free(void *wstate)
{
	struct gate_worker *w = wstate;

	drop_backend(w);
	free(w->settings);
	w->settings = NULL;
	free(w->ops);
	w->ops = NULL;
}

static struct gate_op *op_get(struct gate_worker *w)
{
	struct gate_op *op = w->free_ops;

	if (op) {
		w->free_ops = op->next_free;
		op->w = w;
		w->nbusy++;
	}
	return op;
}

static void op_put(struct gate_op *op)
{
	struct gate_worker *w = op->w;

	fg_config_unref(op->cfg);
	op->cfg = NULL;
	op->next_free = w->free_ops;
	w->free_ops = op;
	w->nbusy--;
}

/* --- telling the client -------------------------------------------------- */

/* What the gate decided so far, to the call's capture record if it has
 * one (each report replaces the last). */
static void report(const struct gate_call *g)
{
	struct fg_stage_screen_facts f;

	if (!g->call->rec || !g->l)
		return;
	memset(&f, 0, sizeof(f));
	f.action = g->action;
	f.notices = g->told_notices;
	f.used_ms = g->v.used_ms;
	f.left_ms = g->decided ? g->v.left_ms : -1;
	f.session_ms = g->v.session_ms;
	f.zone = g->zone_name;
	f.failure = g->failed ? (int)g->failure : -1;
	f.fail_mode = g->l->fail_mode;
	f.allowance = g->decided ? g->v.left : NULL;
	f.counter = (const char *const *)g->l->counter_name;
	f.ncounters = g->decided ? g->l->ncounters : 0;
	fg_stage_record_screen(g->call->rec, &f);
}

/* feedguard-screen-time and feedguard-notice, into the response metadata:
 * the held headers of a unary call, else the trailers. */
static void tell(struct fg_pipeline *pl, struct gate_call *g, unsigned notices)
{
	char v[META_MAX];
	int n;

	if (g->told)
		return;
	/* a limit reached says more than its warning (a stream judged before
	 * quiet hours and told after they began would say both) */
	if (notices & (1u << FG_POLICY_N_DAILY_LIMIT))
		notices &= ~(1u << FG_POLICY_N_DAILY_LIMIT_SOON);
	if (notices & (1u << FG_POLICY_N_QUIET_HOURS))
		notices &= ~(1u << FG_POLICY_N_QUIET_HOURS_SOON);
	/* quiet_in goes with its notice only (README): not "quiet_in=0" once
	 * quiet hours have begun */
	if (!(notices & (1u << FG_POLICY_N_QUIET_HOURS_SOON)))
		g->v.quiet_in_ms = -1;
	g->told = 1;
	g->told_notices = notices;
	if (notices && g->action == FG_POLICY_ACT_NONE)
		g->action = FG_POLICY_ACT_NOTICE;
	report(g);
	count_notices(g->call, notices);
	if ((n = fg_limits_screen_time(&g->v, v, sizeof(v))) > 0)
		(void)fg_pipeline_add_metadata(pl, HDR_SCREEN_TIME, v, (size_t)n);
	if ((n = fg_limits_notices(notices, v, sizeof(v))) > 0)
		(void)fg_pipeline_add_metadata(pl, HDR_NOTICE, v, (size_t)n);
}

/* An empty feed: on a unary call one message of no bytes (every field at
 * its default, no items), on a stream no message at all; status OK. */
static int answer_empty(struct fg_pipeline *pl)
{
	static const uint8_t empty_message[1];

	return fg_pipeline_answer(pl, FG_GRPC_OK, NULL, fg_pipeline_streaming_response(pl) ? NULL : empty_message, 0);
}

/* The call ends here, by <rule>'s <action> (empty or deny): the ranker's
 * call is cancelled, the client gets the notice and, for deny, a status
 * a person can read. */
static void answer(struct fg_pipeline *pl, struct gate_call *g, unsigned rule, unsigned action)
{
	char text[256];
	int rc;

	tell(pl, g, g->v.notices | g->extra_notices);
	/* Before the answer: the call may end inside it, and account_end
	 * must see it as not use. */
	g->answered = 1;
	g->answer_rule = rule;
	g->action = action;
	report(g);
	if (action == FG_POLICY_ACT_DENY) {
		if (fg_limits_message(g->l, &g->v, rule, g->zone_name, text, sizeof(text)) < 0)
			snprintf(text, sizeof(text), "screen-time limit reached");
		rc = fg_pipeline_answer(pl, FG_GRPC_RESOURCE_EXHAUSTED, text, NULL, 0);
	} else {
		rc = answer_empty(pl);
	}
	/* The response had already ended (a stream's trailers in, its last
	 * bytes not yet read): the client gets the ranker's answer, not ours. */
	if (rc == FG_ESTATE) {
		g->answered = 0;
		return;
	}
	count_answer(g->call, rule, action);
}

#define NO_USER_TEXT "screen-time limits need the user id, which the call does not carry"

/* The state could not be read (<reason>): the band's fail mode.  1 when
 * the call was answered. */
static int fail_mode(struct fg_pipeline *pl, struct gate_call *g, unsigned reason)
{
	const struct fg_stage_call *call = g->call;

	count_failure(call->pol, call->slot, call->band, reason, g->l->fail_mode);
	sync_metrics(g->w);             /* a refused submit has no callback to do it */
	g->decided = 0;
	g->failed = 1;
	g->failure = reason;
	g->action = g->l->fail_mode == FG_POLICY_FAIL_EMPTY ? FG_POLICY_ACT_EMPTY
	          : g->l->fail_mode == FG_POLICY_FAIL_DENY ? FG_POLICY_ACT_DENY : FG_POLICY_ACT_NONE;
	report(g);
	switch (g->l->fail_mode) {
	case FG_POLICY_FAIL_EMPTY:
		count_answer(call, FG_POLICY_R_FAIL, FG_POLICY_ACT_EMPTY);
		g->answered = 1;
		answer_empty(pl);
		return 1;
	case FG_POLICY_FAIL_DENY:
		count_answer(call, FG_POLICY_R_FAIL, FG_POLICY_ACT_DENY);
		g->answered = 1;
		/* a retry cannot give a call the user id it lacks: not UNAVAILABLE,
		 * which clients retry by themselves */
		if (reason == FG_POLICY_S_NO_USER)
			fg_pipeline_answer(pl, FG_GRPC_INVALID_ARGUMENT, NO_USER_TEXT, NULL, 0);
		else
			fg_pipeline_answer(pl, FG_GRPC_UNAVAILABLE, "screen-time state unavailable, try again later",
			                   NULL, 0);
		return 1;
	default:
		return 0;
	}
}

/* --- an open stream meets a rule ------------------------------------------ */

/* The verdict's figures as of now, at least <min_el> ms into the call:
 * the call's own time so far is use. */
static void advance(struct gate_call *g, int64_t min_el)
{
	int64_t el = elapsed_ms(g);

	if (el < min_el)
		el = min_el;
	g->v.used_ms += el;
	g->v.session_ms += el;
	if (g->v.left_ms >= 0)
		g->v.left_ms = g->v.left_ms > el ? g->v.left_ms - el : 0;
}

static void arm_timer(struct gate_call *g);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gate_call *g = arg;
	struct fg_pipeline *pl = fg_pipeline_lookup(g->w->pipelines, g->h);
	const struct fg_limits_event *e;

	(void)fd;
	(void)what;
	if (!pl || g->next_event >= g->v.nevents)
		return;
	e = &g->v.events[g->next_event++];
	if (e->action < FG_POLICY_ACT_EMPTY) {
		g->extra_notices |= 1u << e->notice;
		arm_timer(g);
		return;
	}
	/* the figures of the message, as of now and at least of the event: a
	 * timer that fires a millisecond early (or the clock's rounding) must
	 * not end a stream with "29 of 30 minutes used" */
	advance(g, e->at_ms - g->start_ms);
	g->extra_notices |= 1u << e->notice;
	answer(pl, g, e->rule, e->action);
}

/* The next rule an open stream reaches, on the loop's clock. */
static void arm_timer(struct gate_call *g)
{
	struct timeval tv;
	int64_t in;

	if (g->next_event >= g->v.nevents)
		return;
	if (!g->timer && !(g->timer = evtimer_new(g->w->base, timer_cb, g)))
		return;
	in = g->v.events[g->next_event].at_ms - g->start_ms - elapsed_ms(g);
	if (in < 0)
		in = 0;
	tv.tv_sec = (time_t)(in / 1000);
	tv.tv_usec = (suseconds_t)(in % 1000) * 1000;
	evtimer_add(g->timer, &tv);
}

/* --- the gate ------------------------------------------------------------ */

/* 1 when <m>, a clock of <l>, holds for <now_ms> as well: no later than
 * it, and before its next day and its next quiet-hours edge. */
static int clock_holds(const struct fg_policy_limits *l, const struct fg_limits_clock *m, int64_t now_ms)
{
	return now_ms >= m->now_ms && now_ms < m->next_day_ms &&
	       (!l->quiet_on || now_ms < (m->in_quiet ? m->quiet_to_ms : m->quiet_from_ms));
}

/* The call's clock at its start, from the worker's last one when it holds. */
static void start_clock(struct gate_call *g)
{
	struct gate_worker *w = g->w;
	int current = g->call->cfg == w->cfg_now;

	if (current && w->memo_cfg == w->cfg_now && w->memo_l == g->l && w->memo_tz == g->tz &&
	    clock_holds(g->l, &w->memo, g->start_ms)) {
		g->clk = w->memo;
		g->clk.now_ms = g->start_ms;
		return;
	}
	fg_limits_clock(g->l, g->tz, g->start_ms, &g->clk);
	if (current) {
		w->memo_cfg = w->cfg_now;
		w->memo_l = g->l;
		w->memo_tz = g->tz;
		w->memo = g->clk;
	}
}

/* The verdict for state <u>: 1 when it answered the call. */
static int apply(struct fg_pipeline *pl, struct gate_call *g, const struct fg_state_user *u)
{
	struct fg_stage_call *call = g->call;

	start_clock(g);
	fg_limits_decide(g->l, &g->clk, u, &g->v);
	g->decided = 1;
	report(g);
	if (g->l->ncounters) {
		call->exposure_on = 1;
		memcpy(call->exposure_left, g->v.left, g->l->ncounters * sizeof(call->exposure_left[0]));
	}
	if (g->v.action >= FG_POLICY_ACT_EMPTY) {
		answer(pl, g, g->v.rule, g->v.action);
		return 1;
	}
	if (fg_pipeline_streaming_response(pl))
		arm_timer(g);
	return 0;
}

static void read_cb(void *arg, int rc, const struct fg_state_user *u)
{
	struct gate_op *op = arg;
	struct gate_worker *w = op->w;
	struct fg_pipeline *pl = fg_pipeline_lookup(w->pipelines, op->h);
	struct gate_call *g;
	int answered;

	op_put(op);
	sync_metrics(w);
	if (!pl || !(g = fg_pipeline_stage_state(pl, &fg_stage_gate)) || !g->reading)
		return;         /* the call ended while its state was read */
	g->reading = 0;
	answered = rc < 0 ? fail_mode(pl, g, reason_of(rc)) : apply(pl, g, u);
	if (!answered && g->held) {
		g->held = 0;
		fg_pipeline_resume(pl, &fg_stage_gate);
	}
}

static enum fg_stage_begin gate_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	struct fg_stage_call *call = c->call;
	struct gate_call *g = c->state;

	(void)h;
	if (!call->pol->limits || !call->m->screen_time)
		return FG_STAGE_SKIP;
	if (call->band_known && !call->pol->limits[call->band].active)
		return FG_STAGE_SKIP;
	call->need_user = 1;
	call->need_user_all = 1;
	if (call->m->time_zone.kind == FG_POLICY_SRC_FIELD)
		call->need_first_message = 1;
	g->w = c->wstate;
	g->call = call;
	g->h = fg_pipeline_handle_of(c->pl);
	return FG_STAGE_RUN;
}

static enum fg_stage_rc gate_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	struct gate_call *g = c->state;
	const struct fg_policy_method *m = c->call->m;
	int n;

	if (dir != FG_STAGE_REQUEST || msg->index != 0 || m->time_zone.kind != FG_POLICY_SRC_FIELD)
		return FG_STAGE_CONTINUE;
	n = fg_policy_read_field(&m->time_zone, msg->data, msg->len, g->zone_name, sizeof(g->zone_name));
	if (n <= 0)
		g->zone_name[0] = '\0';
	return FG_STAGE_CONTINUE;
}

/* Where the user's state is: the pseudonyms, newest key first, and the
 * band's counters. */
static void who_of(const struct gate_call *g, const char **keys, struct fg_state_who *who)
{
	const struct fg_stage_call *call = g->call;
	size_t i;

	keys[0] = call->user;
	for (i = 0; i < call->nuser_old && i + 1 < FG_STATE_MAX_KEYS; i++)
		keys[i + 1] = call->user_old[i];
	who->keys = keys;
	who->nkeys = i + 1;
	who->classes = (const char *const *)g->l->counter_name;
	who->nclasses = g->l->ncounters;
	who->checked = g->who_checked;
}

static void set_zone(struct gate_call *g, const struct fg_hdrs *h)
{
	const struct fg_policy *p = g->call->pol;
	const struct fg_policy_method *m = g->call->m;
	const char *v = NULL, *name;
	size_t len = 0;

	if (m->time_zone.kind == FG_POLICY_SRC_HEADER)
		v = fg_hdrs_find_single(h, m->time_zone.header, &len);
	else if (m->time_zone.kind == FG_POLICY_SRC_FIELD && g->zone_name[0])
		v = g->zone_name, len = strlen(g->zone_name);
	g->tz = fg_policy_zone(p, v, len);
	name = fg_tz_name(g->tz);
	len = strnlen(name, sizeof(g->zone_name) - 1);
	memcpy(g->zone_name, name, len);
	g->zone_name[len] = '\0';
}

/* The state cannot be read (<reason>): the fail mode, as a hook's answer. */
static enum fg_stage_rc unread(struct fg_stage_ctx *c, struct gate_call *g, unsigned reason)
{
	return fail_mode(c->pl, g, reason) ? FG_STAGE_DONE : FG_STAGE_CONTINUE;
}

/* The band is known: read the user's state, beside the ranker. */
static enum fg_stage_rc gate_request_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	struct gate_call *g = c->state;
	struct gate_worker *w = g->w;
	const char *keys[FG_STATE_MAX_KEYS];
	struct fg_state_who who;
	struct gate_op *op;
	int rc;

	if (!c->call->pol->limits[c->call->band].active)
		return FG_STAGE_CONTINUE;
	g->l = &c->call->pol->limits[c->call->band];
	g->start_ms = c->call->time_ms;
	g->start_mono_us = now_us(w);
	set_zone(g, h);
	if (!c->call->user[0])
		return unread(c, g, FG_POLICY_S_NO_USER);
	if (!w->state)
		return unread(c, g, FG_POLICY_S_DOWN);
	if (!(op = op_get(w)))
		return unread(c, g, FG_POLICY_S_BUSY);
	op->kind = OP_READ;
	op->h = g->h;
	who_of(g, keys, &who);
	g->reading = 1;
	if ((rc = fg_state_read(w->state, &who, read_cb, op)) < 0) {
		g->reading = 0;
		op_put(op);
		return unread(c, g, reason_of(rc));
	}
	g->who_checked = 1;
	if (!g->reading)        /* an in-process backend answered already */
		return g->answered ? FG_STAGE_DONE : FG_STAGE_CONTINUE;
	g->held = 1;
	return FG_STAGE_HOLD_RESPONSE;
}

/* The hold is gone with the call; a reply that comes later finds the
 * handle stale. */
static void gate_cancel(struct fg_stage_ctx *c, enum fg_stage_cancel why)
{
	struct gate_call *g = c->state;

	(void)why;
	g->held = 0;
	g->reading = 0;
}

static void gate_call_free(struct fg_stage_ctx *c)
{
	struct gate_call *g = c->state;

	if (g->timer)
		event_free(g->timer);
	g->timer = NULL;
}

const struct fg_stage fg_stage_gate = {
	.name = "gate",
	.call_size = sizeof(struct gate_call),
	.worker_size = sizeof(struct gate_worker),
	.worker_init = gate_worker_init,
	.worker_free = gate_worker_free,
	.worker_config = gate_worker_config,
	.begin = gate_begin,
	.on_request_headers = gate_request_headers,
	.on_message = gate_message,
	.on_cancel = gate_cancel,
	.call_free = gate_call_free,
};

/* --- account --------------------------------------------------------------- */

static struct gate_call *gate_of(struct fg_stage_ctx *c)
{
	struct gate_call *g = fg_pipeline_stage_state(c->pl, &fg_stage_gate);

	return g && g->l && !g->answered ? g : NULL;
}

static enum fg_stage_begin account_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	(void)h;
	return fg_pipeline_stage_state(c->pl, &fg_stage_gate) ? FG_STAGE_RUN : FG_STAGE_SKIP;
}

static unsigned notices_now(const struct fg_stage_call *call, const struct gate_call *g)
{
	unsigned n = g->v.notices | g->extra_notices;

	if (call->exposure_limited)
		n |= 1u << FG_POLICY_N_EXPOSURE_LIMIT;
	return n;
}

/* feedguard-screen-time and feedguard-notice are feedguard's word: the
 * ranker's own copies (a bug, or an app told it has more time left)
 * never reach the client, beside or instead of ours. */
static void drop_forged(struct fg_hdrs *h)
{
	if (!h)
		return;
	fg_hdrs_remove(h, HDR_SCREEN_TIME);
	fg_hdrs_remove(h, HDR_NOTICE);
}

static enum fg_stage_rc account_response_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	(void)c;
	drop_forged(h);
	return FG_STAGE_CONTINUE;
}

/* A unary call's metadata goes in its held headers, with the first
 * message (after the filter counted what it limited). */
static enum fg_stage_rc account_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	struct gate_call *g;

	if (dir != FG_STAGE_RESPONSE || !(g = gate_of(c)))
		return FG_STAGE_CONTINUE;
	if (!msg->drop)
		g->delivered++;
	if (g->decided && !fg_pipeline_streaming_response(c->pl))
		tell(c->pl, g, notices_now(c->call, g));
	return FG_STAGE_CONTINUE;
}

/* A streaming call's (or a unary call without a message) in the trailers. */
static enum fg_stage_rc account_response_end(struct fg_stage_ctx *c, struct fg_hdrs *trailers)
{
	struct gate_call *g = gate_of(c);
	struct gate_call *gs = fg_pipeline_stage_state(c->pl, &fg_stage_gate);

	drop_forged(trailers);
	/* The response is over: no rule can end it any more. */
	if (gs && gs->timer)
		evtimer_del(gs->timer);
	/* A stream's trailers tell its figures as of its end. */
	if (g && g->decided && !g->told && fg_pipeline_streaming_response(c->pl))
		advance(g, 0);
	if (g && g->decided)
		tell(c->pl, g, notices_now(c->call, g));
	return FG_STAGE_CONTINUE;
}

static void update_cb(void *arg, int rc)
{
	struct gate_op *op = arg;
	struct gate_worker *w = op->w;

	if (rc < 0 && op->cfg && op->cfg->policy)
		count_failure(op->cfg->policy, w->slot, op->band, reason_of(rc), FG_POLICY_S_UPDATE);
	op_put(op);
	sync_metrics(w);
}

/* The clock at the call's end <end_ms>: the start's when the call ended
 * on the same day and on the same side of quiet hours (a unary call, a
 * short stream), which saves the zone lookups; else computed again. */
static void end_clock(const struct gate_call *g, int64_t end_ms, struct fg_limits_clock *clk)
{
	const struct fg_limits_clock *s = &g->clk;

	if (g->decided && clock_holds(g->l, s, end_ms)) {
		*clk = *s;
		clk->now_ms = end_ms;
		return;
	}
	fg_limits_clock(g->l, g->tz, end_ms, clk);
}

/*
 * A daily cap's answer writes the time before it: the gap since the last
 * page (at most idle_gap), which its verdict counted as use, but only up
 * to the cap (fg_state.h, <cap_ms>).  Else the cap would not stay reached:
 * a user who waits past idle_gap is under it again by that gap, and is
 * served a page.  The answered call itself is not use, and neither are
 * the answers after it: written in full, every retry within idle_gap
 * added its gap again ("64 of 30 minutes used").
 */
static int cap_gap_only(const struct gate_call *g)
{
	return g->answered && !g->delivered && !g->failed && g->decided && g->answer_rule == FG_POLICY_R_DAILY;
}

/*
 * Likewise quiet hours with an allowance: the gap before their answer
 * spent the night's allowance, and unwritten it would be spent again only
 * after the next page (a user asking every few minutes got every other
 * page).  Written to the night's quiet use only: a child whose app keeps
 * asking all night is not charged the night as daily feed time.
 */
static int quiet_gap_only(const struct gate_call *g)
{
	return g->answered && !g->delivered && !g->failed && g->decided && g->answer_rule == FG_POLICY_R_QUIET &&
	       g->l->quiet_allowance_ms > 0;
}

/* What the call delivered goes to the state, in one write: its time (a
 * call the gate answered, or that failed without delivering anything, is
 * not use; the daily cap's answer writes the gap before it, quiet hours'
 * the gap's quiet part) and the exposure counters the filter counted. */
static void account_end(struct fg_stage_ctx *c, const struct fg_stage_end *end)
{
	struct gate_call *g = fg_pipeline_stage_state(c->pl, &fg_stage_gate);
	const char *keys[FG_STATE_MAX_KEYS];
	struct fg_state_update u = { 0 };
	struct fg_limits_clock clk;
	struct gate_op *op;
	int64_t counted;
	int gap_only, rc;

	if (g && g->timer)
		evtimer_del(g->timer);
	if (!g || !g->l || !c->call->user[0] || !g->w->state)
		return;
	gap_only = cap_gap_only(g) || quiet_gap_only(g);
	if (!g->delivered && !gap_only && (g->answered || end->status != FG_GRPC_OK))
		return;
	if (!(op = op_get(g->w))) {
		count_failure(c->call->pol, c->call->slot, c->call->band, FG_POLICY_S_BUSY, FG_POLICY_S_UPDATE);
		return;
	}
	counted = gap_only ? 0 : elapsed_ms(g);
	end_clock(g, g->start_ms + counted, &clk);
	fg_stage_record_counted(c->call->rec, counted);
	fg_limits_update(g->l, &clk, g->start_ms, &u);
	u.quiet_only = quiet_gap_only(g);
	u.cap_ms = cap_gap_only(g) ? g->l->daily_cap_ms : 0;
	who_of(g, keys, &u.who);
	u.counts = c->call->exposure_delivered;
	op->kind = OP_UPDATE;
	op->cfg = fg_config_ref(c->call->cfg);
	op->band = c->call->band;
	if ((rc = fg_state_update(g->w->state, &u, update_cb, op)) < 0) {
		count_failure(c->call->pol, c->call->slot, c->call->band, reason_of(rc), FG_POLICY_S_UPDATE);
		op_put(op);
	}
}

const struct fg_stage fg_stage_account = {
	.name = "account",
	.begin = account_begin,
	.on_message = account_message,
	.on_response_headers = account_response_headers,
	.on_response_end = account_response_end,
	.on_end = account_end,
};
