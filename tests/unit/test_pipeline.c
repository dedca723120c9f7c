/*
 * test_pipeline.c - cmocka group "pipeline": fg_pipeline.h (and the stage
 * contract of fg_stage.h it runs), through the headers, with fake stages
 * and a fake host.
 *
 * The host is a recorder (struct host): the pipeline acts on its call only
 * through struct fg_pipeline_ops, so every operation is logged, one letter
 * each (U go_upstream, E request_end, S response_start, T response_end,
 * F fail, C cancel_upstream; the *_more ones are counted), header lists are
 * swapped away as fg_call does, and the two output queues are plain
 * fg_bufq the tests compare byte for byte with what was fed.
 *
 * The stages are fake_stages[] (struct fg_stage tables), each driven by
 * fakes[i] (struct fake): what each hook returns, or a test's function for
 * it, and what the stage saw.  The env is built with
 * fg_pipeline_env_new_stages() (fg_pipeline_env.c; declared here, not in the
 * header, because the daemon has one order of stages).
 *
 * The snapshot is a struct fg_config built by hand around a two-method
 * policy (one unary method, one server streaming): fg_pipeline_begin only
 * looks the method up, and the fake stages read nothing else.  The loop is
 * a real libevent event_base; the tests run it where the pipeline defers
 * work to it (resume, output taken, budgets).
 *
 * Allocation is watched and failed at link time, as in test_grpcframe.c:
 * the program is linked with
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 * so libfeedguard's allocations (zlib's included) go through the __wrap_*
 * functions below, and main() hands the same functions to libevent
 * (event_set_mem_functions: libevent is a shared library, which --wrap
 * does not reach), so the pump event of an env is counted and failed too.
 * Each test ends with as many live blocks as it started with.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/event.h>

#include "fg_bufq.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_grpcframe.h"
#include "fg_hdrs.h"
#include "fg_pbwire.h"
#include "fg_metrics.h"
#include "fg_pipeline.h"
#include "fg_policy-t.h"
#include "fg_stage.h"

/* In fg_pipeline.c, for tests only. */
int fg_pipeline_env_new_stages(struct fg_pipeline_env **out, struct event_base *base, struct fg_config *cfg,
                               size_t slot, struct fg_metrics *metrics, const struct fg_stage *const *stages, size_t n);

#define REQ FG_STAGE_REQUEST
#define RESP FG_STAGE_RESPONSE

/* ---- allocation hooks (see the file comment) ---- */

#define FG_FAILALLOC_ALL
#include "fg_failalloc.h"

/* ---- the snapshot: limits and a two-method policy ---- */

#define UNARY "/t.v1.Feed/Rank"         /* sorted: fg_policy_find_method bisects */
#define STREAM "/t.v1.Feed/Watch"       /* server streaming */
#define OTHER "/t.v1.Feed/Other"        /* not in the policy */

static struct fg_policy_method methods[] = {
	{ .path = (char *)UNARY },
	{ .path = (char *)STREAM, .server_streaming = 1 },
};
static struct fg_policy policy = { .methods = methods, .nmethods = 2 };
static struct fg_config cfg = { .refcount = 1, .policy = &policy };

static void cfg_reset(void)
{
	cfg.limits.max_message_size = 4096;
	cfg.limits.stream_window = 65535;
	cfg.limits.connection_buffer = 1u << 20;
	cfg.limits.worker_buffer = 1u << 24;
}

/* ---- the fake host ---- */

struct host {
	struct fg_pipeline *pl;         /* set before fg_pipeline_start, as fg_call does */
	struct fg_hdrs req_hdrs;        /* the call's request headers */
	struct fg_bufq req_out, resp_out;
	char log[64];                   /* one letter per operation (see the file comment) */
	size_t nlog;
	int nmore[2];                   /* request_more, response_more */
	int holds[2];                   /* fg_pipeline_holds() as the last *_more saw it */
	struct fg_hdrs req_trailers;    /* what request_end handed over */
	int req_trailers_given;         /* request_end came with a list, not NULL */
	struct fg_hdrs resp_hdrs;       /* what response_start handed over */
	int resp_start_end;             /* its <end> */
	struct fg_hdrs resp_trailers;   /* what response_end handed over */
	int resp_trailers_given;
	int fail_status;
	char fail_msg[256];
};

static void host_log(struct host *h, char op)
{
	assert_true(h->nlog + 1 < sizeof(h->log));
	h->log[h->nlog++] = op;
	h->log[h->nlog] = '\0';
}

/* The host takes the pipeline's list as fg_call does: by swapping. */
static void take_hdrs(struct fg_hdrs *mine, struct fg_hdrs *given)
{
	struct fg_hdrs tmp = *mine;

	*mine = *given;
	*given = tmp;
	fg_hdrs_reset(given);
}

static void op_go_upstream(void *arg)
{
	host_log(arg, 'U');
}

/* What fg_call's settle does on every *_more: recount, then ask. */
static void host_more(struct host *h, enum fg_stage_dir dir)
{
	h->nmore[dir]++;
	if (!h->pl)
		return;
	fg_pipeline_account(h->pl);
	h->holds[dir] = fg_pipeline_holds(h->pl, dir);
}

static void op_request_more(void *arg)
{
	host_more(arg, REQ);
}

static void op_response_more(void *arg)
{
	host_more(arg, RESP);
}

static void op_request_end(void *arg, struct fg_hdrs *t)
{
	struct host *h = arg;

	host_log(h, 'E');
	h->req_trailers_given = t != NULL;
	if (t)
		take_hdrs(&h->req_trailers, t);
}

static void op_response_start(void *arg, struct fg_hdrs *hd, int end)
{
	struct host *h = arg;

	host_log(h, 'S');
	take_hdrs(&h->resp_hdrs, hd);
	h->resp_start_end = end;
}

static void op_response_end(void *arg, struct fg_hdrs *t)
{
	struct host *h = arg;

	host_log(h, 'T');
	h->resp_trailers_given = t != NULL;
	if (t)
		take_hdrs(&h->resp_trailers, t);
}

static void op_fail(void *arg, int status, const char *msg)
{
	struct host *h = arg;

	host_log(h, 'F');
	h->fail_status = status;
	snprintf(h->fail_msg, sizeof(h->fail_msg), "%s", msg);
}

static void op_cancel_upstream(void *arg)
{
	host_log(arg, 'C');
}

static const struct fg_pipeline_ops host_ops = {
	.go_upstream = op_go_upstream,
	.request_more = op_request_more,
	.request_end = op_request_end,
	.response_start = op_response_start,
	.response_more = op_response_more,
	.response_end = op_response_end,
	.fail = op_fail,
	.cancel_upstream = op_cancel_upstream,
};

static void host_free(struct host *h)
{
	fg_pipeline_free(h->pl);
	fg_hdrs_free(&h->req_hdrs);
	fg_hdrs_free(&h->req_trailers);
	fg_hdrs_free(&h->resp_hdrs);
	fg_hdrs_free(&h->resp_trailers);
	fg_bufq_free(&h->req_out);
	fg_bufq_free(&h->resp_out);
	memset(h, 0, sizeof(*h));
}

/* ---- the fake stages ---- */

#define NFAKE 3

/* The hooks a script can set, by event. */
enum hook {
	H_REQ_HEADERS,
	H_MSG_REQ,
	H_MSG_RESP,
	H_REQ_END,
	H_RESP_HEADERS,
	H_RESP_END,
	H_COUNT
};

/* A test's own hook: <hd> for header and end hooks (may be NULL at an
 * end), <m> for messages. */
typedef enum fg_stage_rc (*fake_act)(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m);

struct fake {
	/* the script */
	int init_rc;                    /* worker_init fails with this when not 0 */
	enum fg_stage_begin begin;
	unsigned need_first_message;    /* set at begin */
	enum fg_stage_rc rc[H_COUNT];   /* what each hook returns, unless <act> says */
	fake_act act[H_COUNT];
	const char *append;             /* edit every message: these bytes appended */

	/* what the stage saw */
	int n_init, n_worker_free, n_begin, n_cancel, n_end, n_call_free;
	int n[H_COUNT];
	char saw[2][512];               /* each message's first bytes (up to 32) and a '|' */
	int saw_null_trailers;          /* on_request_end was given NULL */
	char saw_trailer[64];           /* the x-t request trailer at on_request_end, as seen */
	enum fg_stage_cancel why;
	struct fg_stage_end end;
	int state_dirty;                /* its per-call block was not zeroed before begin */
	fg_pipeline_handle handle;      /* fg_pipeline_handle_of() in the last hook */
	fg_pipeline_handle begin_handle; /* ... in begin */
};

struct fake_worker {
	int idx;                        /* which fakes[] entry drives the stage */
	void *link;                     /* a block held for the worker's life, as a Redis link is */
};

struct fake_call {
	int begun;                      /* set by begin: a reused block must come back zeroed */
};

static struct fake fakes[NFAKE];
static struct fg_stage fake_stages[NFAKE];
static const struct fg_stage *stage_list[NFAKE];

static struct fake *fake_of(const struct fg_stage_ctx *c)
{
	return &fakes[((const struct fake_worker *)c->wstate)->idx];
}

static int fake_worker_init(void *wstate, const struct fg_stage_worker_env *env, int idx)
{
	struct fake_worker *w = wstate;

	assert_non_null(env->base);
	assert_ptr_equal(env->cfg, &cfg);
	fakes[idx].n_init++;
	if (fakes[idx].init_rc)
		return fakes[idx].init_rc;
	w->idx = idx;
	return (w->link = malloc(32)) != NULL ? 0 : FG_ENOMEM;
}

static int fake_init0(void *w, const struct fg_stage_worker_env *env)
{
	return fake_worker_init(w, env, 0);
}

static int fake_init1(void *w, const struct fg_stage_worker_env *env)
{
	return fake_worker_init(w, env, 1);
}

static int fake_init2(void *w, const struct fg_stage_worker_env *env)
{
	return fake_worker_init(w, env, 2);
}

static int (*const fake_inits[NFAKE])(void *, const struct fg_stage_worker_env *) = {
	fake_init0, fake_init1, fake_init2,
};

static void fake_worker_free(void *wstate)
{
	struct fake_worker *w = wstate;

	fakes[w->idx].n_worker_free++;
	free(w->link);
}

static enum fg_stage_begin fake_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	struct fake *f = fake_of(c);
	struct fake_call *st = c->state;

	f->n_begin++;
	f->handle = f->begin_handle = fg_pipeline_handle_of(c->pl);
	if (st->begun)
		f->state_dirty++;
	st->begun = 1;
	if (f->need_first_message)
		c->call->need_first_message = 1;
	return f->begin;
}

/* <m> followed by <tail>, as the stage's edit. */
static int edit_append(struct fg_stage_msg *m, const char *tail)
{
	size_t n = strlen(tail);

	if (fg_bufq_append(m->out, m->data, m->len) < 0 || fg_bufq_append(m->out, tail, n) < 0)
		return FG_ENOMEM;
	m->changed = 1;
	return 0;
}

/* Hook <k> of a fake: counted, then the test's function for it, else the
 * scripted edit and return code. */
static enum fg_stage_rc fake_run(struct fg_stage_ctx *c, enum hook k, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	struct fake *f = fake_of(c);

	f->n[k]++;
	f->handle = fg_pipeline_handle_of(c->pl);
	if (f->act[k])
		return f->act[k](c, hd, m);
	if (m && f->append && edit_append(m, f->append) < 0) {
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "out of memory");
		return FG_STAGE_DONE;
	}
	return f->rc[k];
}

static enum fg_stage_rc fake_request_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	return fake_run(c, H_REQ_HEADERS, h, NULL);
}

static enum fg_stage_rc fake_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *m)
{
	struct fake *f = fake_of(c);
	char *saw = f->saw[dir];
	size_t used = strlen(saw), n = m->len < 32 ? m->len : 32;

	if (used + n + 2 <= sizeof(f->saw[dir])) {
		if (n)
			memcpy(saw + used, m->data, n);
		saw[used + n] = '|';
		saw[used + n + 1] = '\0';
	}
	return fake_run(c, dir == REQ ? H_MSG_REQ : H_MSG_RESP, NULL, m);
}

static enum fg_stage_rc fake_request_end(struct fg_stage_ctx *c, struct fg_hdrs *t)
{
	struct fake *f = fake_of(c);
	const char *v;
	size_t len;

	f->saw_null_trailers = t == NULL;
	if (t && (v = fg_hdrs_find(t, "x-t", &len)) != NULL)
		snprintf(f->saw_trailer, sizeof(f->saw_trailer), "%.*s", (int)len, v);
	return fake_run(c, H_REQ_END, t, NULL);
}

static enum fg_stage_rc fake_response_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	return fake_run(c, H_RESP_HEADERS, h, NULL);
}

static enum fg_stage_rc fake_response_end(struct fg_stage_ctx *c, struct fg_hdrs *t)
{
	return fake_run(c, H_RESP_END, t, NULL);
}

static void fake_cancel(struct fg_stage_ctx *c, enum fg_stage_cancel why)
{
	struct fake *f = fake_of(c);

	f->n_cancel++;
	f->why = why;
}

static void fake_end(struct fg_stage_ctx *c, const struct fg_stage_end *end)
{
	struct fake *f = fake_of(c);

	f->n_end++;
	f->end = *end;
}

static void fake_call_free(struct fg_stage_ctx *c)
{
	fake_of(c)->n_call_free++;
}

static const char *const fake_names[NFAKE] = { "fake0", "fake1", "fake2" };

/* Every fake back to "run, continue, record" (the stage tables too). */
static void fakes_reset(void)
{
	int i;

	memset(fakes, 0, sizeof(fakes));
	for (i = 0; i < NFAKE; i++) {
		fakes[i].begin = FG_STAGE_RUN;
		fake_stages[i] = (struct fg_stage){
			.name = fake_names[i],
			.call_size = sizeof(struct fake_call),
			.worker_size = sizeof(struct fake_worker),
			.worker_init = fake_inits[i],
			.worker_free = fake_worker_free,
			.begin = fake_begin,
			.on_request_headers = fake_request_headers,
			.on_message = fake_message,
			.on_request_end = fake_request_end,
			.on_response_headers = fake_response_headers,
			.on_response_end = fake_response_end,
			.on_cancel = fake_cancel,
			.on_end = fake_end,
			.call_free = fake_call_free,
		};
		stage_list[i] = &fake_stages[i];
	}
}

/* ---- the fixture ---- */

struct t {
	struct event_base *base;        /* the worker's loop */
	struct fg_pipeline_env *env;    /* made by the test (env_open), freed by done() */
	struct fg_metrics metrics;      /* the env's metrics block (intercept_buffered) */
	struct fg_pipeline_budget budget; /* one client connection's */
	struct host host[3];
	long live0;                     /* blocks live before the test */
};

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));
	struct timeval now = { 0, 0 };
	struct event *ev;

	if (!t)
		return -1;
	mem_arm(0);
	fakes_reset();
	cfg_reset();
	fg_pipeline_budget_init(&t->budget);
	if ((t->base = event_base_new()) == NULL)
		return -1;
	/* the loop allocates its timer heap at the first timer and keeps it:
	 * let that happen before the test counts its blocks */
	if (!(ev = evtimer_new(t->base, noop_cb, NULL)) || evtimer_add(ev, &now) < 0)
		return -1;
	event_free(ev);
	t->live0 = mem.live;
	*state = t;
	return 0;
}

/* The end of a test: every call and the env freed, and everything the
 * pipeline took given back (snapshot references, budgets, blocks).  Not
 * in the teardown: a failed assertion leaves the test's own blocks. */
static void done(struct t *t)
{
	int i;

	for (i = 0; i < 3; i++)
		host_free(&t->host[i]);
	fg_pipeline_env_free(t->env);
	t->env = NULL;
	assert_int_equal(cfg.refcount, 1);
	assert_int_equal(t->metrics.intercept_buffered, 0);
	assert_int_equal(t->budget.held, 0);
	assert_true(TAILQ_EMPTY(&t->budget.calls));
	if (mem.live != t->live0)
		fail_msg("%ld blocks leaked", mem.live - t->live0);
}

static int teardown(void **state)
{
	struct t *t = *state;
	int i;

	for (i = 0; i < 3; i++)
		host_free(&t->host[i]);
	fg_pipeline_env_free(t->env);
	event_base_free(t->base);
	free(t);
	cfg.refcount = 1;
	return 0;
}

/* An env running the first <n> fake stages. */
static void env_open(struct t *t, size_t n)
{
	assert_int_equal(fg_pipeline_env_new_stages(&t->env, t->base, &cfg, 0, &t->metrics, stage_list, n), 0);
	assert_non_null(t->env);
}

/* Let the loop run what is due now: timers at 0s, then the pump. */
static void turn(struct t *t)
{
	assert_int_not_equal(event_base_loop(t->base, EVLOOP_NONBLOCK), -1);
	assert_int_not_equal(event_base_loop(t->base, EVLOOP_NONBLOCK), -1);
}

/* ---- calls ---- */

static void hdr_add(struct fg_hdrs *h, const char *name, const char *value)
{
	assert_int_equal(fg_hdrs_add(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value), 0),
	                 0);
}

/* <h> has <name> once, with <value>; with <value> NULL, has no <name>. */
static void assert_hdr(const struct fg_hdrs *h, const char *name, const char *value)
{
	size_t len, n = 0, i;
	const char *v = fg_hdrs_find(h, name, &len);

	for (i = 0; i < h->n; i++)
		n += h->ent[i].name_len == strlen(name) && memcmp((const char *)fg_bufq_head(&h->buf) + h->ent[i].name_off, name, strlen(name)) == 0;
	if (!value) {
		if (v)
			fail_msg("header %s: '%.*s', expected none", name, (int)len, v);
		return;
	}
	if (!v)
		fail_msg("header %s missing, expected '%s'", name, value);
	if (len != strlen(value) || memcmp(v, value, len) != 0)
		fail_msg("header %s: '%.*s', expected '%s'", name, (int)len, v, value);
	assert_int_equal(n, 1);
}

/* The request headers of a call to <path>; <enc>: a grpc-encoding or NULL. */
static void host_request(struct host *h, const char *path, const char *enc)
{
	fg_hdrs_reset(&h->req_hdrs);
	hdr_add(&h->req_hdrs, ":method", "POST");
	hdr_add(&h->req_hdrs, ":scheme", "http");
	hdr_add(&h->req_hdrs, ":path", path);
	hdr_add(&h->req_hdrs, ":authority", "ranker");
	hdr_add(&h->req_hdrs, "content-type", "application/grpc");
	hdr_add(&h->req_hdrs, "te", "trailers");
	if (enc)
		hdr_add(&h->req_hdrs, "grpc-encoding", enc);
}

static int call_begin(struct t *t, struct host *h, const char *path, int *status, char *msg, size_t msglen)
{
	struct fg_pipeline_args a = {
		.cfg = &cfg, .path = path, .path_len = strlen(path), .req_hdrs = &h->req_hdrs,
		.req_out = &h->req_out, .resp_out = &h->resp_out, .budget = &t->budget,
		.ops = &host_ops, .host = h,
	};

	return fg_pipeline_begin(&h->pl, t->env, &a, status, msg, msglen);
}

/* A call to <path> the stages take: begun, stored (as fg_call does), started. */
static struct fg_pipeline *call_open(struct t *t, struct host *h, const char *path, const char *enc)
{
	char msg[256];
	int status = -1;

	host_request(h, path, enc);
	assert_int_equal(call_begin(t, h, path, &status, msg, sizeof(msg)), 0);
	assert_non_null(h->pl);
	fg_pipeline_start(h->pl);
	return h->pl;
}

/* The host's call ends with <status>; then the pipeline is freed. */
static void call_close(struct host *h, int status)
{
	struct fg_stage_end end = { .status = status, .req_bytes = 11, .resp_bytes = 22, .start_us = 1, .end_us = 2 };

	fg_pipeline_end(h->pl, &end);
	fg_pipeline_free(h->pl);
	h->pl = NULL;
}

/* Forget what the host recorded (keeping its memory) for its next call. */
static void host_reset(struct host *h)
{
	assert_null(h->pl);
	fg_bufq_clear(&h->req_out);
	fg_bufq_clear(&h->resp_out);
	fg_hdrs_reset(&h->req_trailers);
	fg_hdrs_reset(&h->resp_hdrs);
	fg_hdrs_reset(&h->resp_trailers);
	h->log[0] = '\0';
	h->nlog = 0;
	h->nmore[0] = h->nmore[1] = 0;
	h->holds[0] = h->holds[1] = 0;
	h->req_trailers_given = h->resp_start_end = h->resp_trailers_given = 0;
	h->fail_status = -1;
	h->fail_msg[0] = '\0';
}

/* <len> bytes at <p> to side <dir>, <step> bytes at a time. */
static void feed(struct fg_pipeline *pl, enum fg_stage_dir dir, const uint8_t *p, size_t len, size_t step)
{
	size_t n;

	do {
		n = len < step ? len : step;
		if (dir == REQ)
			fg_pipeline_request_data(pl, p, n);
		else
			fg_pipeline_response_data(pl, p, n);
		p += n;
		len -= n;
	} while (len > 0);
}

/* <len> bytes at <p> framed with <flag> at the end of <b>. */
static void frame(struct fg_bufq *b, enum fg_grpcframe_flag flag, const void *p, size_t len)
{
	assert_int_equal(fg_grpcframe_append(b, flag, p, len), 0);
}

static void frame_str(struct fg_bufq *b, const char *s)
{
	frame(b, FG_GRPCFRAME_UNCOMPRESSED, s, strlen(s));
}

/* <s> gzip-compressed and framed with flag 1 at the end of <b>. */
static void frame_gzip(struct fg_bufq *b, const char *s)
{
	struct fg_bufq z = { 0 };

	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, (const uint8_t *)s, strlen(s), &z), 0);
	frame(b, FG_GRPCFRAME_COMPRESSED, z.data, z.len);
	fg_bufq_free(&z);
}

/* Output queue <q> holds exactly the bytes of <b>. */
static void assert_out(const struct fg_bufq *q, const struct fg_bufq *b)
{
	assert_int_equal(fg_bufq_len(q), b->len);
	if (b->len)
		assert_memory_equal(fg_bufq_head(q), b->data, b->len);
}

static void assert_out_empty(const struct fg_bufq *q)
{
	assert_int_equal(fg_bufq_len(q), 0);
}

/* Response headers of an upstream that answers; <enc> as host_request;
 * with <end>, a trailers-only response (grpc-status 5). */
static void response_headers(struct fg_pipeline *pl, const char *enc, int end)
{
	struct fg_hdrs h = { 0 };

	hdr_add(&h, ":status", "200");
	hdr_add(&h, "content-type", "application/grpc");
	hdr_add(&h, "x-up", "1");
	if (enc)
		hdr_add(&h, "grpc-encoding", enc);
	if (end)
		hdr_add(&h, "grpc-status", "5");
	fg_pipeline_response_headers(pl, &h, end);
	fg_hdrs_free(&h);
}

/* Trailers with grpc-status <status>. */
static void response_trailers(struct fg_pipeline *pl, const char *status)
{
	struct fg_hdrs h = { 0 };

	hdr_add(&h, "grpc-status", status);
	fg_pipeline_response_end(pl, &h);
	fg_hdrs_free(&h);
}

/* ---- work from the loop, through a handle, as asynchronous code does ---- */

typedef int (*later_fn)(struct fg_pipeline *pl, const struct fg_stage *st);

struct later {
	struct fg_pipeline_env *env;    /* where <h> is looked up; NULL: nowhere */
	fg_pipeline_handle h;           /* all the timer keeps of the call */
	const struct fg_stage *st;      /* the stage on whose behalf <fn> runs */
	later_fn fn;                    /* fg_pipeline_resume, or a test's */
	int fired;                      /* times the timer ran */
	int rc;                         /* <fn>'s, or 1: the handle named no call */
};

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	struct fg_pipeline *pl = l->env ? fg_pipeline_lookup(l->env, l->h) : NULL;

	(void)fd;
	(void)what;
	l->fired++;
	l->rc = pl ? l->fn(pl, l->st) : 1;
}

/* <fn> on the call <h> names, for stage <i>, from a 0s timer; then the
 * loop's next turns.  Returns what the timer got. */
static int later(struct t *t, fg_pipeline_handle h, int i, later_fn fn)
{
	struct later l = { .env = t->env, .h = h, .st = &fake_stages[i], .fn = fn };
	struct timeval now = { 0, 0 };
	struct event *ev = evtimer_new(t->base, later_cb, &l);

	assert_non_null(ev);
	assert_int_equal(evtimer_add(ev, &now), 0);
	turn(t);
	event_free(ev);
	assert_int_equal(l.fired, 1);
	return l.rc;
}

static int resume_later(struct t *t, fg_pipeline_handle h, int i)
{
	return later(t, h, i, fg_pipeline_resume);
}

/* ---- scripted hooks the tests share ---- */

static enum fg_stage_rc drop_it(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	m->drop = 1;
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc drop_second(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	m->drop = m->index == 1;
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc suspend_second(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	return m->index == 1 ? FG_STAGE_SUSPEND : FG_STAGE_CONTINUE;
}

/* Edit every message (append "+a") and suspend on the second. */
static enum fg_stage_rc edit_suspend_second(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(edit_append(m, "+a"), 0);
	return suspend_second(c, hd, m);
}

/* ---- 1. continue ---- */

/* Messages no stage changes go out as their original bytes, however they
 * were split, compressed ones included. */
static void test_pipeline_continue(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq req = { 0 }, resp = { 0 }, zreq = { 0 }, zresp = { 0 };
	char big[301], saw[512];

	env_open(t, 2);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	frame_str(&req, "alpha");
	frame_str(&req, "");
	frame_str(&req, big);
	frame_str(&resp, "r1");
	frame_str(&resp, "r2");

	call_open(t, h, UNARY, NULL);
	assert_string_equal(h->log, "U");
	feed(h->pl, REQ, req.data, req.len, 7);
	assert_out(&h->req_out, &req);
	snprintf(saw, sizeof(saw), "alpha||%.32s|", big);
	assert_string_equal(fakes[1].saw[REQ], saw);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");
	assert_int_equal(h->req_trailers_given, 0);

	response_headers(h->pl, NULL, 0);
	assert_string_equal(h->log, "UE");          /* unary: held for the first message */
	feed(h->pl, RESP, resp.data, 4, 1);
	assert_string_equal(h->log, "UE");
	feed(h->pl, RESP, resp.data + 4, resp.len - 4, 1);
	assert_string_equal(h->log, "UES");
	assert_hdr(&h->resp_hdrs, ":status", "200");
	assert_hdr(&h->resp_hdrs, "x-up", "1");
	assert_int_equal(h->resp_start_end, 0);
	assert_out(&h->resp_out, &resp);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	call_close(h, FG_GRPC_OK);

	/* gzip: the stages read inflated bytes, the peer gets the originals */
	frame_gzip(&zreq, "bravo");
	frame_str(&zreq, "plain on a gzip call");
	frame_gzip(&zresp, "charlie");
	call_open(t, g, UNARY, "gzip");
	feed(g->pl, REQ, zreq.data, zreq.len, 4);
	assert_out(&g->req_out, &zreq);
	assert_string_equal(fakes[1].saw[REQ] + strlen(saw), "bravo|plain on a gzip call|");
	fg_pipeline_request_end(g->pl, NULL);
	response_headers(g->pl, "gzip", 0);
	feed(g->pl, RESP, zresp.data, zresp.len, 3);
	assert_out(&g->resp_out, &zresp);
	assert_string_equal(fakes[1].saw[RESP], "r1|r2|charlie|");
	response_trailers(g->pl, "0");
	assert_string_equal(g->log, "UEST");
	call_close(g, FG_GRPC_OK);

	fg_bufq_free(&req);
	fg_bufq_free(&resp);
	fg_bufq_free(&zreq);
	fg_bufq_free(&zresp);
	done(t);
}

/* ---- 2. edit ---- */

/* An edited message goes out as the edited bytes with flag 0, and the
 * next stage reads the previous one's edit. */
static void test_pipeline_edit(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 }, want = { 0 };

	env_open(t, 2);
	fakes[0].append = "+a";
	fakes[1].append = "+b";
	call_open(t, h, UNARY, "gzip");
	frame_gzip(&in, "m");
	feed(h->pl, REQ, in.data, in.len, 2);
	frame_str(&want, "m+a+b");
	assert_out(&h->req_out, &want);
	assert_string_equal(fakes[1].saw[REQ], "m+a|");

	/* only the first stage edits this one */
	fakes[1].append = NULL;
	in.len = 0;
	frame_str(&in, "n");
	feed(h->pl, REQ, in.data, in.len, 1);
	frame_str(&want, "n+a");
	assert_out(&h->req_out, &want);
	fg_pipeline_request_end(h->pl, NULL);

	fakes[1].append = "+b";
	response_headers(h->pl, NULL, 0);
	in.len = 0;
	frame_str(&in, "r");
	frame_str(&in, "");
	feed(h->pl, RESP, in.data, in.len, 64);
	want.len = 0;
	frame_str(&want, "r+a+b");
	frame_str(&want, "+a+b");
	assert_out(&h->resp_out, &want);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	fg_bufq_free(&want);
	done(t);
}

/* ---- 3. drop ---- */

static void test_pipeline_drop(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 }, want = { 0 };

	env_open(t, 2);
	fakes[0].act[H_MSG_REQ] = drop_second;
	fakes[0].act[H_MSG_RESP] = drop_it;
	call_open(t, h, UNARY, NULL);
	frame_str(&in, "a");
	frame_str(&in, "b");
	frame_str(&in, "c");
	feed(h->pl, REQ, in.data, in.len, 5);
	frame_str(&want, "a");
	frame_str(&want, "c");
	assert_out(&h->req_out, &want);
	assert_string_equal(fakes[1].saw[REQ], "a|c|");     /* later stages never see it */
	fg_pipeline_request_end(h->pl, NULL);

	/* unary, the only response message dropped: the headers still go out */
	response_headers(h->pl, NULL, 0);
	in.len = 0;
	frame_str(&in, "r");
	feed(h->pl, RESP, in.data, in.len, 64);
	assert_string_equal(h->log, "UE");
	assert_out_empty(&h->resp_out);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	assert_hdr(&h->resp_hdrs, ":status", "200");
	assert_int_equal(h->resp_start_end, 0);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_out_empty(&h->resp_out);
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	fg_bufq_free(&want);
	done(t);
}

/* ---- 4. suspend, then resume ---- */

/* Suspended at the request headers: nothing goes upstream and the request
 * bytes are held (window shut) until a resume from the loop. */
static void test_pipeline_suspend_headers(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	call_open(t, h, UNARY, NULL);
	assert_string_equal(h->log, "");
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 1);
	frame_str(&in, "first");
	frame_str(&in, "second");
	feed(h->pl, REQ, in.data, in.len, 3);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "");
	assert_out_empty(&h->req_out);
	assert_int_equal(fg_pipeline_held(h->pl, REQ), in.len);
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 1);
	assert_int_equal(h->holds[REQ], 1);
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 0);

	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	assert_string_equal(h->log, "UE");
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 1);
	assert_out(&h->req_out, &in);
	assert_int_equal(fg_pipeline_held(h->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 0);
	assert_int_equal(h->holds[REQ], 0);
	/* nothing is suspended any more */
	assert_int_equal(fg_pipeline_resume(h->pl, &fake_stages[0]), FG_ESTATE);

	response_headers(h->pl, NULL, 0);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	done(t);
}

/* A handle taken in <begin> names the call: a stage may start its lookup
 * there and suspend later. */
static void test_pipeline_handle_from_begin(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];

	env_open(t, 1);
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	call_open(t, h, UNARY, NULL);
	assert_ptr_equal(fg_pipeline_lookup(t->env, fakes[0].begin_handle), h->pl);
	assert_int_equal(resume_later(t, fakes[0].begin_handle, 0), 0);
	assert_string_equal(h->log, "U");
	fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(h, FG_GRPC_CANCELLED);
	done(t);
}

/* Suspended on a message: it and what follows wait; each stage that
 * suspends on it in turn sees it as the earlier ones left it; bytes that
 * came in the same chunk, or were held before, go out once each. */
static void test_pipeline_suspend_message(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 }, want = { 0 };

	env_open(t, 3);
	fakes[0].act[H_MSG_REQ] = edit_suspend_second;
	fakes[1].act[H_MSG_REQ] = suspend_second;
	frame_str(&in, "zero");
	frame_str(&in, "one");
	frame_str(&in, "two");
	frame_str(&want, "zero+a");
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, in.len);   /* one chunk */
	fg_pipeline_request_end(h->pl, NULL);
	assert_out(&h->req_out, &want);
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 1);
	/* "two", framed, and "one" as the stage holds it */
	assert_int_equal(fg_pipeline_held(h->pl, REQ), 5 + 3 + 3);
	assert_string_equal(h->log, "U");

	/* the pump runs on the loop, not inside fg_pipeline_resume */
	assert_int_equal(fg_pipeline_resume(h->pl, &fake_stages[0]), 0);
	assert_string_equal(fakes[1].saw[REQ], "zero+a|");
	turn(t);
	assert_string_equal(fakes[1].saw[REQ], "zero+a|one+a|");
	assert_out(&h->req_out, &want);                 /* the second stage holds it now */
	assert_int_equal(fg_pipeline_resume(h->pl, &fake_stages[0]), FG_ESTATE);
	assert_int_equal(resume_later(t, fakes[1].handle, 1), 0);
	frame_str(&want, "one+a");
	frame_str(&want, "two+a");
	assert_out(&h->req_out, &want);
	assert_string_equal(fakes[2].saw[REQ], "zero+a|one+a|two+a|");
	assert_string_equal(h->log, "UE");
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 0);
	fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(h, FG_GRPC_CANCELLED);

	/* the same, with every byte held first (suspended at the headers) and
	 * fed in small chunks: the pump feeds them, and stops at the message */
	fakes_reset();
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	fakes[0].act[H_MSG_REQ] = suspend_second;
	call_open(t, g, UNARY, NULL);
	feed(g->pl, REQ, in.data, in.len, 2);
	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	want.len = 0;
	frame_str(&want, "zero");
	assert_out(&g->req_out, &want);
	assert_int_equal(fg_pipeline_held(g->pl, REQ), 5 + 3 + 3);
	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	frame_str(&want, "one");
	frame_str(&want, "two");
	assert_out(&g->req_out, &want);
	assert_string_equal(fakes[1].saw[REQ], "zero|one|two|");
	assert_string_equal(g->log, "U");
	fg_pipeline_cancel(g->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(g, FG_GRPC_CANCELLED);
	fg_bufq_free(&in);
	fg_bufq_free(&want);
	done(t);
}

/* Suspended at the response's end: the trailers wait, then the next stage
 * sees them and they go out. */
static void test_pipeline_suspend_response_end(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	fakes[0].rc[H_RESP_END] = FG_STAGE_SUSPEND;
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	frame_str(&in, "r");
	feed(h->pl, RESP, in.data, in.len, 2);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UES");
	assert_int_equal(fakes[1].n[H_RESP_END], 0);
	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	assert_string_equal(h->log, "UEST");
	assert_int_equal(fakes[1].n[H_RESP_END], 1);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_out(&h->resp_out, &in);
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 5. suspend, then cancel ---- */

/* A call suspended by fake1 in the way <why> finds it: at the request
 * headers (the client resets), on a request message (the deadline passes),
 * on a response message (the upstream resets). */
static void suspend_for(struct t *t, struct host *h, enum fg_stage_cancel why)
{
	struct fg_bufq in = { 0 };

	frame_str(&in, "m");
	if (why == FG_STAGE_CANCEL_CLIENT)
		fakes[1].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	else if (why == FG_STAGE_CANCEL_DEADLINE)
		fakes[1].rc[H_MSG_REQ] = FG_STAGE_SUSPEND;
	else
		fakes[1].rc[H_MSG_RESP] = FG_STAGE_SUSPEND;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, 1);
	if (why == FG_STAGE_CANCEL_UPSTREAM) {
		fg_pipeline_request_end(h->pl, NULL);
		response_headers(h->pl, NULL, 0);
		feed(h->pl, RESP, in.data, in.len, 4);
		assert_string_equal(h->log, "UE");
	}
	fg_bufq_free(&in);
}

static void test_pipeline_cancel(void **state)
{
	static const enum fg_stage_cancel whys[] = {
		FG_STAGE_CANCEL_CLIENT, FG_STAGE_CANCEL_DEADLINE, FG_STAGE_CANCEL_UPSTREAM,
	};
	struct t *t = *state;
	struct host *h = &t->host[0];
	fg_pipeline_handle old;
	size_t i, nlog, out[2];
	uint8_t more[6] = { 0, 0, 0, 0, 1, 'x' };

	env_open(t, 2);
	for (i = 0; i < sizeof(whys) / sizeof(whys[0]); i++) {
		fakes_reset();
		host_reset(h);
		suspend_for(t, h, whys[i]);
		old = fakes[1].handle;
		assert_ptr_equal(fg_pipeline_lookup(t->env, old), h->pl);
		nlog = h->nlog;
		out[0] = fg_bufq_len(&h->req_out);
		out[1] = fg_bufq_len(&h->resp_out);

		fg_pipeline_cancel(h->pl, whys[i]);
		assert_int_equal(fakes[1].n_cancel, 1);
		assert_int_equal(fakes[1].why, whys[i]);
		assert_int_equal(fakes[0].n_cancel, 0);         /* it was not waiting */
		fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_FAILED);
		assert_int_equal(fakes[1].n_cancel, 1);

		/* late: a resume through the handle, a direct one, more events */
		assert_null(fg_pipeline_lookup(t->env, old));
		assert_int_equal(resume_later(t, old, 1), 1);
		assert_int_equal(fg_pipeline_resume(h->pl, &fake_stages[1]), FG_ESTATE);
		assert_int_equal(fg_pipeline_answer(h->pl, FG_GRPC_OK, "late", NULL, 0), FG_ESTATE);
		feed(h->pl, REQ, more, sizeof(more), 1);
		fg_pipeline_request_end(h->pl, NULL);
		feed(h->pl, RESP, more, sizeof(more), 1);
		response_trailers(h->pl, "0");
		turn(t);
		assert_int_equal(h->nlog, nlog);                /* no host operation after the cancel */
		assert_int_equal(fg_bufq_len(&h->req_out), out[0]);
		assert_int_equal(fg_bufq_len(&h->resp_out), out[1]);
		assert_int_equal(fg_pipeline_holds(h->pl, REQ), 0);
		assert_int_equal(fg_pipeline_holds(h->pl, RESP), 0);

		call_close(h, FG_GRPC_CANCELLED);
		assert_int_equal(fakes[0].n_end, 1);
		assert_int_equal(fakes[1].n_end, 1);
		assert_int_equal(fakes[1].end.status, FG_GRPC_CANCELLED);
		assert_int_equal(fakes[1].n_cancel, 1);

		/* the slot and the pipeline are reused: the old handle stays dead */
		fakes_reset();
		host_reset(h);
		fakes[1].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
		call_open(t, h, UNARY, NULL);
		assert_int_equal(fakes[0].state_dirty + fakes[1].state_dirty, 0);
		assert_true(fakes[1].handle != old);
		assert_null(fg_pipeline_lookup(t->env, old));
		assert_ptr_equal(fg_pipeline_lookup(t->env, fakes[1].handle), h->pl);
		assert_int_equal(resume_later(t, old, 1), 1);
		assert_string_equal(h->log, "");                /* still waiting for its own resume */
		fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_CLIENT);
		call_close(h, FG_GRPC_CANCELLED);
		assert_null(fg_pipeline_lookup(t->env, fakes[1].handle));
	}
	done(t);
}

/* A stage that has both sides of a call suspended hears of the cancel once. */
static void test_pipeline_cancel_both_sides(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	fakes[0].act[H_MSG_REQ] = suspend_second;
	fakes[0].rc[H_RESP_HEADERS] = FG_STAGE_SUSPEND;
	call_open(t, h, STREAM, NULL);
	frame_str(&in, "a");
	frame_str(&in, "b");
	feed(h->pl, REQ, in.data, in.len, 3);
	response_headers(h->pl, NULL, 0);
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 1);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 1);
	assert_string_equal(h->log, "U");
	fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_UPSTREAM);
	assert_int_equal(fakes[0].n_cancel, 1);
	assert_int_equal(fakes[0].why, FG_STAGE_CANCEL_UPSTREAM);
	assert_int_equal(fakes[1].n_cancel, 0);
	call_close(h, FG_GRPC_UNAVAILABLE);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 6. answer without the upstream ---- */

#define PAUSED "feed paused: quiet hours 22:00\xe2\x80\x93" "07:00 (100%)"
#define PAUSED_ENC "feed paused: quiet hours 22:00%E2%80%9307:00 (100%25)"

static const uint8_t own_feed[] = { 0x0a, 0x03, 'n', 'o', 'w' };

static enum fg_stage_rc answer_own(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(fg_pipeline_add_metadata(c->pl, "x-feedguard-reason", "quiet-hours", 11), 0);
	assert_int_equal(fg_pipeline_answer(c->pl, FG_GRPC_OK, PAUSED, own_feed, sizeof(own_feed)), 0);
	return FG_STAGE_DONE;
}

static enum fg_stage_rc fail_denied(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(fg_pipeline_fail(c->pl, FG_GRPC_PERMISSION_DENIED, "screen time used up"), 0);
	return FG_STAGE_DONE;
}

static int answer_own_late(struct fg_pipeline *pl, const struct fg_stage *st)
{
	return fg_pipeline_answer(pl, FG_GRPC_OK, PAUSED, own_feed, sizeof(own_feed));
}

static void assert_own_answer(const struct host *h)
{
	struct fg_bufq want = { 0 };

	assert_string_equal(h->log, "CST");
	assert_hdr(&h->resp_hdrs, ":status", "200");
	assert_hdr(&h->resp_hdrs, "content-type", "application/grpc");
	assert_int_equal(h->resp_start_end, 0);
	frame(&want, FG_GRPCFRAME_UNCOMPRESSED, own_feed, sizeof(own_feed));
	assert_out(&h->resp_out, &want);
	assert_int_equal(h->resp_trailers_given, 1);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_hdr(&h->resp_trailers, "grpc-message", PAUSED_ENC);
	assert_out_empty(&h->req_out);
	fg_bufq_free(&want);
}

static void test_pipeline_answer(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1], *k = &t->host[2];
	uint8_t msg[6] = { 0, 0, 0, 0, 1, 'x' };
	fg_pipeline_handle hd;

	env_open(t, 2);
	/* from a hook, with a message of its own and metadata */
	fakes[0].act[H_REQ_HEADERS] = answer_own;
	call_open(t, h, UNARY, NULL);
	assert_own_answer(h);
	assert_hdr(&h->resp_hdrs, "x-feedguard-reason", "quiet-hours");
	assert_hdr(&h->resp_trailers, "x-feedguard-reason", NULL);
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 0);
	assert_null(fg_pipeline_lookup(t->env, fakes[0].handle));
	assert_int_equal(fg_pipeline_fail(h->pl, FG_GRPC_INTERNAL, "again"), FG_ESTATE);
	feed(h->pl, REQ, msg, sizeof(msg), 2);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "CST");
	assert_out_empty(&h->req_out);
	call_close(h, FG_GRPC_OK);
	assert_int_equal(fakes[0].n_end + fakes[1].n_end, 2);

	/* a plain failure: no message, no metadata */
	fakes_reset();
	fakes[0].act[H_REQ_HEADERS] = fail_denied;
	call_open(t, g, UNARY, NULL);
	assert_string_equal(g->log, "F");
	assert_int_equal(g->fail_status, FG_GRPC_PERMISSION_DENIED);
	assert_string_equal(g->fail_msg, "screen time used up");
	call_close(g, FG_GRPC_PERMISSION_DENIED);

	/* from the loop, while suspended: the stage is not told of a cancel */
	fakes_reset();
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	call_open(t, k, UNARY, NULL);
	hd = fakes[0].handle;
	assert_int_equal(later(t, hd, 0, answer_own_late), 0);
	assert_own_answer(k);
	assert_int_equal(fakes[0].n_cancel, 0);
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 0);
	assert_int_equal(later(t, hd, 0, answer_own_late), 1);
	call_close(k, FG_GRPC_OK);
	assert_int_equal(fakes[0].n_end + fakes[1].n_end, 2);
	done(t);
}

/* ---- 7. fail before and after the upstream started ---- */

static enum fg_stage_rc fail_unavailable(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	if (m->index == 0 && fg_pipeline_streaming_response(c->pl))
		return FG_STAGE_CONTINUE;
	assert_int_equal(fg_pipeline_fail(c->pl, FG_GRPC_UNAVAILABLE, "state backend down"), 0);
	return FG_STAGE_DONE;
}

static enum fg_stage_rc done_without_answer(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	return FG_STAGE_DONE;
}

static void test_pipeline_fail(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 }, want = { 0 };

	env_open(t, 2);
	frame_str(&in, "m0");
	frame_str(&in, "m1");

	/* at the request headers: nothing ever goes upstream */
	fakes[0].act[H_REQ_HEADERS] = fail_denied;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, 3);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "F");
	assert_int_equal(h->fail_status, FG_GRPC_PERMISSION_DENIED);
	assert_out_empty(&h->req_out);
	call_close(h, FG_GRPC_PERMISSION_DENIED);
	assert_int_equal(fakes[0].n_end + fakes[1].n_end, 2);

	/* on a unary response message: the held headers never go out */
	fakes_reset();
	host_reset(h);
	fakes[1].act[H_MSG_RESP] = fail_unavailable;
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, in.data, in.len, 3);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEF");
	assert_int_equal(h->fail_status, FG_GRPC_UNAVAILABLE);
	assert_string_equal(h->fail_msg, "state backend down");
	assert_out_empty(&h->resp_out);
	call_close(h, FG_GRPC_UNAVAILABLE);

	/* on the second message of a streaming response: the first went out */
	fakes_reset();
	fakes[1].act[H_MSG_RESP] = fail_unavailable;
	call_open(t, g, STREAM, NULL);
	fg_pipeline_request_end(g->pl, NULL);
	response_headers(g->pl, NULL, 0);
	feed(g->pl, RESP, in.data, in.len, 3);
	assert_string_equal(g->log, "UESF");
	frame_str(&want, "m0");
	assert_out(&g->resp_out, &want);
	call_close(g, FG_GRPC_UNAVAILABLE);

	/* DONE without an answer is the stage's bug: INTERNAL, naming it */
	fakes_reset();
	host_reset(g);
	fakes[0].act[H_MSG_REQ] = done_without_answer;
	call_open(t, g, UNARY, NULL);
	feed(g->pl, REQ, in.data, in.len, 64);
	assert_string_equal(g->log, "UF");
	assert_int_equal(g->fail_status, FG_GRPC_INTERNAL);
	assert_non_null(strstr(g->fail_msg, "fake0"));
	assert_out_empty(&g->req_out);
	call_close(g, FG_GRPC_INTERNAL);
	fg_bufq_free(&in);
	fg_bufq_free(&want);
	done(t);
}

/* ---- 8. metadata: unary vs server streaming ---- */

static enum fg_stage_rc meta_req(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(fg_pipeline_add_metadata(c->pl, "x-req", "1", 1), 0);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc meta_hdr(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(fg_pipeline_add_metadata(c->pl, "x-hdr", "2", 1), 0);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc meta_msg(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	const char *name = m->index == 0 ? "x-msg0" : "x-msg1";

	assert_int_equal(fg_pipeline_add_metadata(c->pl, name, "3", 1), 0);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc meta_end(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(fg_pipeline_add_metadata(c->pl, "x-end", "4", 1), 0);
	return FG_STAGE_CONTINUE;
}

static void metadata_script(void)
{
	fakes_reset();
	fakes[0].act[H_REQ_HEADERS] = meta_req;
	fakes[0].act[H_RESP_HEADERS] = meta_hdr;
	fakes[0].act[H_MSG_RESP] = meta_msg;
	fakes[0].act[H_RESP_END] = meta_end;
}

static void test_pipeline_metadata(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	frame_str(&in, "r0");
	frame_str(&in, "r1");

	/* unary: everything added before the first message is in the headers */
	metadata_script();
	call_open(t, h, UNARY, NULL);
	assert_int_equal(fg_pipeline_streaming_response(h->pl), 0);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	assert_string_equal(h->log, "UE");
	feed(h->pl, RESP, in.data, in.len, 64);
	assert_string_equal(h->log, "UES");
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	assert_hdr(&h->resp_hdrs, "x-up", "1");
	assert_hdr(&h->resp_hdrs, "x-req", "1");
	assert_hdr(&h->resp_hdrs, "x-hdr", "2");
	assert_hdr(&h->resp_hdrs, "x-msg0", "3");
	assert_hdr(&h->resp_hdrs, "x-msg1", NULL);
	assert_hdr(&h->resp_hdrs, "x-end", NULL);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_hdr(&h->resp_trailers, "x-msg1", "3");
	assert_hdr(&h->resp_trailers, "x-end", "4");
	assert_hdr(&h->resp_trailers, "x-hdr", NULL);
	assert_out(&h->resp_out, &in);
	call_close(h, FG_GRPC_OK);

	/* server streaming: the headers go at once; later metadata is trailers */
	metadata_script();
	call_open(t, g, STREAM, NULL);
	assert_int_equal(fg_pipeline_streaming_response(g->pl), 1);
	fg_pipeline_request_end(g->pl, NULL);
	response_headers(g->pl, NULL, 0);
	assert_string_equal(g->log, "UES");
	assert_hdr(&g->resp_hdrs, "x-req", "1");
	assert_hdr(&g->resp_hdrs, "x-hdr", "2");
	assert_hdr(&g->resp_hdrs, "x-msg0", NULL);
	feed(g->pl, RESP, in.data, in.len, 64);
	response_trailers(g->pl, "0");
	assert_string_equal(g->log, "UEST");
	assert_hdr(&g->resp_trailers, "grpc-status", "0");
	assert_hdr(&g->resp_trailers, "x-msg0", "3");
	assert_hdr(&g->resp_trailers, "x-msg1", "3");
	assert_hdr(&g->resp_trailers, "x-end", "4");
	assert_hdr(&g->resp_trailers, "x-hdr", NULL);
	assert_out(&g->resp_out, &in);
	call_close(g, FG_GRPC_OK);

	/* a trailers-only response: metadata joins its one header block */
	metadata_script();
	host_reset(h);
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 1);
	assert_string_equal(h->log, "UES");
	assert_int_equal(h->resp_start_end, 1);
	assert_hdr(&h->resp_hdrs, "grpc-status", "5");
	assert_hdr(&h->resp_hdrs, "x-req", "1");
	assert_hdr(&h->resp_hdrs, "x-end", "4");
	assert_int_equal(fakes[1].n[H_RESP_END], 1);
	call_close(h, FG_GRPC_NOT_FOUND);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 9. HOLD_RESPONSE ---- */

static void test_pipeline_hold_response(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq req = { 0 }, resp = { 0 };

	env_open(t, 2);
	frame_str(&req, "q");
	frame_str(&resp, "r0");
	frame_str(&resp, "r1");
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_HOLD_RESPONSE;
	call_open(t, h, UNARY, NULL);
	assert_string_equal(h->log, "U");
	feed(h->pl, REQ, req.data, req.len, 2);
	assert_out(&h->req_out, &req);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, resp.data, resp.len, 3);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UE");
	assert_out_empty(&h->resp_out);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 1);
	assert_int_equal(fg_pipeline_held(h->pl, RESP), resp.len);
	assert_int_equal(fakes[0].n[H_RESP_HEADERS] + fakes[1].n[H_RESP_HEADERS], 0);

	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	assert_string_equal(h->log, "UEST");
	assert_out(&h->resp_out, &resp);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 0);
	call_close(h, FG_GRPC_OK);

	/* cancelled while holding: the holder hears of it */
	fakes_reset();
	fakes[0].rc[H_REQ_HEADERS] = FG_STAGE_HOLD_RESPONSE;
	call_open(t, g, UNARY, NULL);
	response_headers(g->pl, NULL, 0);
	feed(g->pl, RESP, resp.data, 3, 3);
	fg_pipeline_cancel(g->pl, FG_STAGE_CANCEL_UPSTREAM);
	assert_int_equal(fakes[0].n_cancel, 1);
	assert_int_equal(fakes[0].why, FG_STAGE_CANCEL_UPSTREAM);
	assert_int_equal(fakes[1].n_cancel, 0);
	assert_string_equal(g->log, "U");
	call_close(g, FG_GRPC_UNAVAILABLE);
	fg_bufq_free(&req);
	fg_bufq_free(&resp);
	done(t);
}

/* ---- the output queue full ---- */

/* Past one stream window in the output, the rest waits (window shut)
 * until the peer takes bytes; then it moves on the next loop turn, and the
 * end follows the last byte. */
static void test_pipeline_output_full(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 }, one = { 0 };

	env_open(t, 1);
	cfg.limits.stream_window = 16;
	frame_str(&one, "twenty bytes long...");
	frame_str(&in, "twenty bytes long...");
	frame_str(&in, "twenty bytes long...");
	frame_str(&in, "twenty bytes long...");
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, in.len);
	fg_pipeline_request_end(h->pl, NULL);
	assert_out(&h->req_out, &one);
	assert_int_equal(fg_pipeline_held(h->pl, REQ), 2 * one.len);
	assert_int_equal(fg_pipeline_holds(h->pl, REQ), 1);
	assert_string_equal(h->log, "U");

	fg_bufq_clear(&h->req_out);
	fg_pipeline_output_taken(h->pl, REQ);
	assert_out_empty(&h->req_out);                  /* not inside the peer's callback */
	turn(t);
	assert_out(&h->req_out, &one);
	assert_string_equal(h->log, "U");
	fg_bufq_clear(&h->req_out);
	fg_pipeline_output_taken(h->pl, REQ);
	turn(t);
	assert_out(&h->req_out, &one);
	assert_string_equal(h->log, "UE");
	assert_int_equal(fg_pipeline_held(h->pl, REQ), 0);
	assert_int_equal(h->holds[REQ], 0);
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	fg_bufq_free(&one);
	done(t);
}

/* ---- what the pipeline refuses to pass ---- */

static void test_pipeline_malformed(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };
	char msg[256], big[64];
	int status = -1;

	env_open(t, 1);
	/* a coding feedguard cannot read: the call is refused at its start */
	host_request(h, UNARY, "snappy");
	assert_int_equal(call_begin(t, h, UNARY, &status, msg, sizeof(msg)), FG_EINVAL);
	assert_null(h->pl);
	assert_int_equal(status, FG_GRPC_UNIMPLEMENTED);
	assert_non_null(strstr(msg, "snappy"));
	assert_int_equal(fakes[0].n_begin, 0);

	/* a compressed message on a call without grpc-encoding */
	frame_gzip(&in, "z");
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, 3);
	assert_string_equal(h->log, "UF");
	assert_int_equal(h->fail_status, FG_GRPC_INVALID_ARGUMENT);
	assert_out_empty(&h->req_out);
	call_close(h, FG_GRPC_INVALID_ARGUMENT);

	/* larger than limits.max_message_size: refused at its prefix */
	host_reset(h);
	cfg.limits.max_message_size = 32;
	memset(big, 'b', sizeof(big));
	in.len = 0;
	frame(&in, FG_GRPCFRAME_UNCOMPRESSED, big, sizeof(big));
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, in.data, 5, 5);
	assert_string_equal(h->log, "UEF");
	assert_int_equal(h->fail_status, FG_GRPC_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(h->fail_msg, "limits.max_message_size"));
	assert_out_empty(&h->resp_out);
	call_close(h, FG_GRPC_RESOURCE_EXHAUSTED);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 10. every way a request ends ---- */

static enum fg_stage_rc add_trailer(struct fg_stage_ctx *c, struct fg_hdrs *t, struct fg_stage_msg *m)
{
	assert_non_null(t);
	hdr_add(t, "x-added", "1");
	return FG_STAGE_CONTINUE;
}

static void test_pipeline_request_end(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };
	struct fg_hdrs tr = { 0 };
	uint8_t none = 0;

	env_open(t, 2);
	frame_str(&in, "first");

	/* right after the start, with no data */
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");
	assert_int_equal(h->req_trailers_given, 0);
	assert_int_equal(fakes[0].n[H_REQ_END] + fakes[1].n[H_REQ_END], 2);
	assert_int_equal(fakes[1].saw_null_trailers, 1);
	fg_pipeline_request_end(h->pl, NULL);           /* a second end is nothing */
	assert_string_equal(h->log, "UE");
	call_close(h, FG_GRPC_OK);

	/* after an empty chunk */
	fakes_reset();
	host_reset(h);
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_data(h->pl, &none, 0);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");
	assert_int_equal(fakes[1].n[H_REQ_END], 1);
	call_close(h, FG_GRPC_OK);

	/* with trailers: the stages see (and may change) what goes upstream */
	fakes_reset();
	host_reset(h);
	fakes[0].act[H_REQ_END] = add_trailer;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, 4);
	hdr_add(&tr, "x-t", "v1");
	fg_pipeline_request_end(h->pl, &tr);
	assert_string_equal(h->log, "UE");
	assert_string_equal(fakes[0].saw_trailer, "v1");
	assert_string_equal(fakes[1].saw_trailer, "v1");
	assert_int_equal(h->req_trailers_given, 1);
	assert_hdr(&h->req_trailers, "x-t", "v1");
	assert_hdr(&h->req_trailers, "x-added", "1");
	assert_out(&h->req_out, &in);
	call_close(h, FG_GRPC_OK);

	/* in the middle of a message: the client's fault */
	fakes_reset();
	host_reset(h);
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len - 1, 4);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UF");
	assert_int_equal(h->fail_status, FG_GRPC_INVALID_ARGUMENT);
	assert_int_equal(fakes[0].n[H_REQ_END] + fakes[1].n[H_REQ_END], 0);
	call_close(h, FG_GRPC_INVALID_ARGUMENT);

	/* a stage waits for the first message, and none comes */
	fakes_reset();
	host_reset(h);
	fakes[0].need_first_message = 1;
	call_open(t, h, UNARY, NULL);
	assert_string_equal(h->log, "");
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 0);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");
	assert_int_equal(fakes[1].n[H_REQ_HEADERS], 1);
	call_close(h, FG_GRPC_OK);

	/* ... and one comes: the headers go upstream after it */
	fakes_reset();
	host_reset(h);
	fakes[0].need_first_message = 1;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len - 1, 64);
	assert_string_equal(h->log, "");
	feed(h->pl, REQ, in.data + in.len - 1, 1, 64);
	assert_string_equal(h->log, "U");
	assert_out(&h->req_out, &in);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");
	call_close(h, FG_GRPC_OK);
	fg_hdrs_free(&tr);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 11. a stage's worker_init fails ---- */

static void test_pipeline_worker_init_fails(void **state)
{
	struct t *t = *state;
	struct fg_pipeline_env *env = NULL;
	long live = mem.live;

	fakes[1].init_rc = FG_EUNAVAIL;
	assert_int_equal(fg_pipeline_env_new_stages(&env, t->base, &cfg, 0, NULL, stage_list, 3), FG_EUNAVAIL);
	assert_null(env);
	assert_int_equal(fakes[0].n_init, 1);
	assert_int_equal(fakes[0].n_worker_free, 1);    /* the stage before is undone */
	assert_int_equal(fakes[1].n_worker_free, 0);    /* a failed init undoes itself */
	assert_int_equal(fakes[2].n_init, 0);
	assert_int_equal(mem.live, live);
	done(t);
}

/* ---- 12. on_end once, SKIP, supporting stages only ---- */

static void test_pipeline_on_end(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 };
	char msg[256];
	int i, n, status = -1;
	struct fg_stage_end again = { .status = FG_GRPC_INTERNAL };

	env_open(t, 3);
	frame_str(&in, "m");
	fakes[1].begin = FG_STAGE_SKIP;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, in.data, in.len, 64);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, in.data, in.len, 64);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UEST");
	fg_pipeline_end(h->pl, &(struct fg_stage_end){ .status = FG_GRPC_OK, .req_bytes = 6, .resp_bytes = 6 });
	fg_pipeline_end(h->pl, &again);
	for (i = 0; i < 3; i += 2) {
		assert_int_equal(fakes[i].n_end, 1);
		assert_int_equal(fakes[i].end.status, FG_GRPC_OK);
		assert_int_equal(fakes[i].end.req_bytes, 6);
	}
	call_close(h, FG_GRPC_INTERNAL);
	assert_int_equal(fakes[0].n_end + fakes[2].n_end, 2);
	assert_int_equal(fakes[0].n_call_free + fakes[2].n_call_free, 2);
	/* the skipped stage got nothing but its begin */
	assert_int_equal(fakes[1].n_begin, 1);
	for (n = 0, i = 0; i < H_COUNT; i++)
		n += fakes[1].n[i];
	assert_int_equal(n + fakes[1].n_end + fakes[1].n_cancel + fakes[1].n_call_free, 0);
	assert_string_equal(fakes[1].saw[REQ], "");

	/* only a supporting stage runs: the call passes through */
	fakes_reset();
	host_reset(h);
	fake_stages[0].flags = FG_STAGE_F_SUPPORT;
	fakes[1].begin = FG_STAGE_SKIP;
	fakes[2].begin = FG_STAGE_SKIP;
	host_request(h, UNARY, NULL);
	assert_int_equal(call_begin(t, h, UNARY, &status, msg, sizeof(msg)), 0);
	assert_null(h->pl);
	assert_int_equal(fakes[0].n_begin, 1);
	assert_int_equal(fakes[0].n_call_free, 1);      /* what it began is released */
	assert_int_equal(fakes[0].n_end, 0);
	assert_null(fg_pipeline_lookup(t->env, fakes[0].begin_handle));
	assert_int_equal(t->metrics.intercept_buffered, 0);

	/* a method the policy does not name: no stage is asked */
	fakes_reset();
	host_request(h, OTHER, NULL);
	assert_int_equal(call_begin(t, h, OTHER, &status, msg, sizeof(msg)), 0);
	assert_null(h->pl);
	assert_int_equal(fakes[0].n_begin, 0);
	assert_string_equal(h->log, "");
	fg_bufq_free(&in);
	done(t);
}

/* ---- 13. budgets ---- */

static void test_pipeline_budgets(void **state)
{
	struct t *t = *state;
	struct host *a = &t->host[0], *b = &t->host[1], *c = &t->host[2];
	struct fg_bufq in = { 0 };
	char body[200], msg[256];
	int status = -1;

	env_open(t, 1);
	cfg.limits.connection_buffer = 64;
	memset(body, 'b', sizeof(body));
	frame(&in, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
	call_open(t, a, STREAM, NULL);
	call_open(t, b, STREAM, NULL);

	/* both mid-message, the connection over its budget: the oldest goes on */
	feed(a->pl, REQ, in.data, 100, 100);
	feed(b->pl, REQ, in.data, 100, 100);
	assert_int_equal(t->budget.held, 200);
	assert_int_equal(fg_pipeline_env_held(t->env), 200);
	assert_int_equal(t->metrics.intercept_buffered, 200);
	assert_int_equal(fg_pipeline_held(b->pl, REQ), 100);
	assert_int_equal(fg_pipeline_holds(a->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(b->pl, REQ), 1);
	assert_int_equal(b->holds[REQ], 1);

	/* worker_buffer reached: new intercepted calls are refused */
	cfg.limits.worker_buffer = 150;
	host_request(c, UNARY, NULL);
	assert_int_equal(call_begin(t, c, UNARY, &status, msg, sizeof(msg)), FG_ETOOBIG);
	assert_null(c->pl);
	assert_int_equal(status, FG_GRPC_UNAVAILABLE);
	assert_non_null(strstr(msg, "worker_buffer"));
	cfg.limits.worker_buffer = 1u << 24;

	/* the first completes its message: the second gets its turn */
	feed(a->pl, REQ, in.data + 100, in.len - 100, in.len);
	assert_out(&a->req_out, &in);
	b->nmore[REQ] = 0;
	turn(t);
	assert_true(b->nmore[REQ] > 0);                 /* woken: its window may open */
	assert_int_equal(b->holds[REQ], 0);
	assert_int_equal(fg_pipeline_holds(b->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(a->pl, REQ), 1);     /* still over, not mid-message */
	fg_bufq_consume(&a->req_out, in.len);
	fg_pipeline_output_taken(a->pl, REQ);
	fg_pipeline_account(a->pl);
	assert_int_equal(t->budget.held, 100);
	assert_int_equal(fg_pipeline_holds(b->pl, REQ), 0);

	feed(b->pl, REQ, in.data + 100, in.len - 100, 7);
	assert_out(&b->req_out, &in);
	fg_bufq_consume(&b->req_out, in.len);
	fg_pipeline_account(b->pl);
	assert_int_equal(t->budget.held, 0);
	assert_int_equal(fg_pipeline_holds(a->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(b->pl, REQ), 0);

	/* bytes counted when freed in the middle of a message are given back */
	feed(a->pl, REQ, in.data, 50, 50);
	assert_int_equal(fg_pipeline_env_held(t->env), 50);
	fg_pipeline_cancel(a->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(a, FG_GRPC_CANCELLED);
	assert_int_equal(fg_pipeline_env_held(t->env), 0);
	call_close(b, FG_GRPC_OK);
	assert_int_equal(fg_pipeline_env_held(t->env), 0);
	assert_int_equal(t->budget.held, 0);
	assert_int_equal(t->metrics.intercept_buffered, 0);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 15. a trailers-only response whose end hook waits ---- */

static enum fg_stage_rc meta_wait_end(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_non_null(hd);
	assert_hdr(hd, "grpc-status", "5");
	assert_int_equal(fg_pipeline_add_metadata(c->pl, "x-wait", "5", 1), 0);
	return FG_STAGE_SUSPEND;
}

/* The end hooks see a trailers-only response as trailers; one that waits
 * on it is resumed into the rest of them, then the client gets the one
 * header block (END_STREAM, the upstream's status, the metadata added):
 * no trailers after it, and no header hook on an empty list, then or on
 * any later pump turn. */
static void test_pipeline_trailers_only_suspended(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 }, one = { 0 };

	env_open(t, 2);
	fakes[0].act[H_RESP_END] = meta_wait_end;
	fakes[1].act[H_RESP_END] = meta_end;
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 1);
	assert_string_equal(h->log, "UE");
	assert_int_equal(fakes[0].n[H_RESP_END], 1);
	assert_int_equal(fakes[1].n[H_RESP_END], 0);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 1);

	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	assert_string_equal(h->log, "UES");
	assert_int_equal(h->resp_start_end, 1);
	assert_hdr(&h->resp_hdrs, ":status", "200");
	assert_hdr(&h->resp_hdrs, "x-up", "1");
	assert_hdr(&h->resp_hdrs, "grpc-status", "5");
	assert_hdr(&h->resp_hdrs, "x-wait", "5");
	assert_hdr(&h->resp_hdrs, "x-end", "4");
	assert_int_equal(h->resp_trailers_given, 0);
	assert_int_equal(fakes[0].n[H_RESP_END], 1);
	assert_int_equal(fakes[1].n[H_RESP_END], 1);
	assert_int_equal(fakes[0].n[H_RESP_HEADERS] + fakes[1].n[H_RESP_HEADERS], 0);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 0);
	turn(t);
	assert_string_equal(h->log, "UES");
	assert_int_equal(fakes[0].n[H_RESP_HEADERS] + fakes[1].n[H_RESP_HEADERS], 0);
	call_close(h, FG_GRPC_NOT_FOUND);
	assert_int_equal(fakes[0].n_cancel, 0);

	/* no stage waits: the end goes out at once, and a later pump turn
	 * (the request side moves on) leaves the response alone; server
	 * streaming, where headers that came again would go out again */
	fakes_reset();
	fakes[1].act[H_RESP_END] = meta_end;
	cfg.limits.stream_window = 16;
	frame_str(&one, "twenty bytes long...");
	frame_str(&in, "twenty bytes long...");
	frame_str(&in, "twenty bytes long...");
	call_open(t, g, STREAM, NULL);
	feed(g->pl, REQ, in.data, in.len, in.len);
	assert_out(&g->req_out, &one);
	response_headers(g->pl, NULL, 1);
	assert_string_equal(g->log, "US");
	assert_int_equal(g->resp_start_end, 1);
	assert_hdr(&g->resp_hdrs, "grpc-status", "5");
	assert_hdr(&g->resp_hdrs, "x-end", "4");
	fg_bufq_clear(&g->req_out);
	fg_pipeline_output_taken(g->pl, REQ);
	turn(t);
	assert_out(&g->req_out, &one);
	assert_string_equal(g->log, "US");
	assert_int_equal(fakes[0].n[H_RESP_HEADERS] + fakes[1].n[H_RESP_HEADERS], 0);
	assert_int_equal(fakes[0].n[H_RESP_END] + fakes[1].n[H_RESP_END], 2);
	call_close(g, FG_GRPC_NOT_FOUND);
	fg_bufq_free(&in);
	fg_bufq_free(&one);
	done(t);
}

/* ---- 16. HOLD_RESPONSE on a message ---- */

static enum fg_stage_rc edit_b(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	assert_int_equal(edit_append(m, "+b"), 0);
	return FG_STAGE_CONTINUE;
}

/* A stage that holds the response from a request message lets that
 * message go on: the later stages see it and may edit it, and the edit is
 * what goes upstream; the response waits for its resume.  Asked on a
 * response message, a hold means nothing. */
static void test_pipeline_hold_on_message(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq req = { 0 }, resp = { 0 }, want = { 0 };

	env_open(t, 3);
	frame_str(&req, "q");
	frame_str(&resp, "r0");
	frame_str(&resp, "r1");
	frame_str(&want, "q+b");
	fakes[0].rc[H_MSG_REQ] = FG_STAGE_HOLD_RESPONSE;
	fakes[0].rc[H_MSG_RESP] = FG_STAGE_HOLD_RESPONSE;
	fakes[1].act[H_MSG_REQ] = edit_b;
	call_open(t, h, UNARY, NULL);
	feed(h->pl, REQ, req.data, req.len, 2);
	assert_string_equal(fakes[1].saw[REQ], "q|");
	assert_string_equal(fakes[2].saw[REQ], "q+b|");
	assert_out(&h->req_out, &want);
	fg_pipeline_request_end(h->pl, NULL);
	assert_string_equal(h->log, "UE");

	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, resp.data, resp.len, 3);
	response_trailers(h->pl, "0");
	assert_string_equal(h->log, "UE");
	assert_out_empty(&h->resp_out);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 1);
	assert_int_equal(fg_pipeline_held(h->pl, RESP), resp.len);
	assert_int_equal(fakes[0].n[H_RESP_HEADERS] + fakes[1].n[H_RESP_HEADERS], 0);

	assert_int_equal(resume_later(t, fakes[0].handle, 0), 0);
	assert_string_equal(h->log, "UEST");
	assert_out(&h->resp_out, &resp);
	assert_string_equal(fakes[2].saw[RESP], "r0|r1|");
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 0);
	call_close(h, FG_GRPC_OK);
	assert_int_equal(fakes[0].n_cancel, 0);
	fg_bufq_free(&req);
	fg_bufq_free(&resp);
	fg_bufq_free(&want);
	done(t);
}

/* ---- 17. resumed, then cancelled before the pump ---- */

/* A stage that resumed a side waits on it no more: a cancel that comes
 * before the pump ran is not its news; a stage still waiting on the other
 * side hears of it. */
static void test_pipeline_resumed_then_cancelled(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	fakes[1].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	call_open(t, h, UNARY, NULL);
	assert_string_equal(h->log, "");
	assert_int_equal(fg_pipeline_resume(h->pl, &fake_stages[1]), 0);
	fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_CLIENT);
	assert_int_equal(fakes[1].n_cancel, 0);
	assert_int_equal(fakes[0].n_cancel, 0);
	turn(t);
	assert_string_equal(h->log, "");                /* the pump does not run it */
	call_close(h, FG_GRPC_CANCELLED);
	assert_int_equal(fakes[1].n_cancel, 0);
	assert_int_equal(fakes[1].n_end, 1);

	/* fake0 waits on a request message and resumes it; fake1 still waits
	 * on the response headers of a streaming call */
	fakes_reset();
	fakes[0].rc[H_MSG_REQ] = FG_STAGE_SUSPEND;
	fakes[1].rc[H_RESP_HEADERS] = FG_STAGE_SUSPEND;
	frame_str(&in, "a");
	call_open(t, g, STREAM, NULL);
	feed(g->pl, REQ, in.data, in.len, 64);
	response_headers(g->pl, NULL, 0);
	assert_string_equal(g->log, "U");
	assert_int_equal(fg_pipeline_holds(g->pl, REQ), 1);
	assert_int_equal(fg_pipeline_holds(g->pl, RESP), 1);
	assert_int_equal(fg_pipeline_resume(g->pl, &fake_stages[0]), 0);
	fg_pipeline_cancel(g->pl, FG_STAGE_CANCEL_UPSTREAM);
	assert_int_equal(fakes[0].n_cancel, 0);
	assert_int_equal(fakes[1].n_cancel, 1);
	assert_int_equal(fakes[1].why, FG_STAGE_CANCEL_UPSTREAM);
	turn(t);
	assert_string_equal(g->log, "U");
	assert_out_empty(&g->req_out);
	call_close(g, FG_GRPC_UNAVAILABLE);
	assert_int_equal(fakes[0].n_cancel + fakes[1].n_cancel, 1);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 18. a call leaves its connection ---- */

/* x holds a whole message in its output queue (not mid-message), which
 * puts the connection over its budget; z and y are mid-message, and z,
 * the older, is the one that goes on: y's window is held.  When x's
 * client stream goes, the connection is back under its budget: y gets a
 * pump turn on the next loop turn, and its window opens. */
static void test_pipeline_leave_connection(void **state)
{
	struct t *t = *state;
	struct host *x = &t->host[0], *z = &t->host[1], *y = &t->host[2];
	struct fg_bufq in = { 0 };
	char body[200];

	env_open(t, 1);
	cfg.limits.connection_buffer = 64;
	memset(body, 'b', sizeof(body));
	frame(&in, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
	call_open(t, x, STREAM, NULL);
	call_open(t, z, STREAM, NULL);
	call_open(t, y, STREAM, NULL);
	feed(x->pl, REQ, in.data, in.len, in.len);
	assert_out(&x->req_out, &in);
	feed(z->pl, REQ, in.data, 10, 10);
	feed(y->pl, REQ, in.data, 10, 10);
	turn(t);
	assert_int_equal(t->budget.held, in.len + 20);
	assert_int_equal(fg_pipeline_held(x->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(x->pl, REQ), 1);
	assert_int_equal(fg_pipeline_holds(z->pl, REQ), 0);
	assert_int_equal(fg_pipeline_holds(y->pl, REQ), 1);
	assert_int_equal(y->holds[REQ], 1);

	y->nmore[REQ] = 0;
	fg_pipeline_leave_connection(x->pl);
	assert_int_equal(t->budget.held, 20);
	assert_int_equal(fg_pipeline_env_held(t->env), in.len + 20);   /* still the worker's */
	assert_int_equal(fg_pipeline_holds(y->pl, REQ), 0);
	assert_int_equal(y->nmore[REQ], 0);             /* on the loop, not inside */
	turn(t);
	assert_true(y->nmore[REQ] > 0);                 /* woken: its window may open */
	assert_int_equal(y->holds[REQ], 0);
	fg_pipeline_leave_connection(x->pl);            /* a second time is nothing */
	assert_int_equal(t->budget.held, 20);

	fg_pipeline_cancel(x->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(x, FG_GRPC_CANCELLED);
	assert_int_equal(fg_pipeline_env_held(t->env), 20);
	fg_pipeline_cancel(z->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(z, FG_GRPC_CANCELLED);
	fg_pipeline_cancel(y->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(y, FG_GRPC_CANCELLED);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 18b. past a budget, a compressed message waits as it came ---- */

/* x holds a whole message in its output (the connection is over its
 * budget) and z is in the middle of one (z goes on).  y's whole gzip
 * message, a few dozen bytes that inflate to 3000, waits as it came: not
 * fed, nothing out, its window held (a client once made every stream
 * inflate such messages, 10 to 30 times the budget).  When x leaves, y's
 * message goes on. */
static void test_pipeline_budget_defers_compressed(void **state)
{
	struct t *t = *state;
	struct host *x = &t->host[0], *z = &t->host[1], *y = &t->host[2];
	struct fg_bufq in = { 0 }, zin = { 0 };
	char body[200], big[3001];

	env_open(t, 1);
	cfg.limits.connection_buffer = 64;
	memset(body, 'b', sizeof(body));
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	frame(&in, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
	frame_gzip(&zin, big);
	assert_true(zin.len < 100);
	call_open(t, x, STREAM, NULL);
	call_open(t, z, STREAM, NULL);
	call_open(t, y, STREAM, "gzip");
	feed(x->pl, REQ, in.data, in.len, in.len);
	feed(z->pl, REQ, in.data, 10, 10);
	feed(y->pl, REQ, zin.data, zin.len, zin.len);
	turn(t);
	assert_int_equal(t->budget.held, in.len + 10 + zin.len);
	assert_out_empty(&y->req_out);
	assert_int_equal(fg_pipeline_held(y->pl, REQ), zin.len);
	assert_int_equal(fg_pipeline_partial(y->pl, REQ), 0);   /* feedguardd's wait, not the client's */
	assert_int_equal(fg_pipeline_holds(y->pl, REQ), 1);
	assert_int_equal(fg_pipeline_holds(z->pl, REQ), 0);

	fg_pipeline_leave_connection(x->pl);
	turn(t);
	assert_out(&y->req_out, &zin);          /* edited by nobody: the bytes as they came */
	assert_int_equal(fg_pipeline_held(y->pl, REQ), 0);

	fg_pipeline_cancel(x->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(x, FG_GRPC_CANCELLED);
	fg_pipeline_cancel(z->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(z, FG_GRPC_CANCELLED);
	fg_pipeline_cancel(y->pl, FG_STAGE_CANCEL_CLIENT);
	call_close(y, FG_GRPC_CANCELLED);
	fg_bufq_free(&in);
	fg_bufq_free(&zin);
	done(t);
}

/* ---- 19. DONE at the response headers without an answer ---- */

static void test_pipeline_done_at_response_headers(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0], *g = &t->host[1];
	struct fg_bufq in = { 0 };

	env_open(t, 2);
	frame_str(&in, "r");
	fakes[0].act[H_RESP_HEADERS] = done_without_answer;
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	assert_string_equal(h->log, "UEF");
	assert_int_equal(h->fail_status, FG_GRPC_INTERNAL);
	assert_non_null(strstr(h->fail_msg, "fake0"));
	assert_int_equal(fakes[1].n[H_RESP_HEADERS], 0);
	feed(h->pl, RESP, in.data, in.len, 64);
	response_trailers(h->pl, "0");
	turn(t);
	assert_string_equal(h->log, "UEF");
	assert_out_empty(&h->resp_out);
	assert_int_equal(fakes[0].n[H_MSG_RESP] + fakes[1].n[H_MSG_RESP], 0);
	call_close(h, FG_GRPC_INTERNAL);

	/* server streaming: the headers never go out */
	fakes_reset();
	fakes[1].act[H_RESP_HEADERS] = done_without_answer;
	call_open(t, g, STREAM, NULL);
	response_headers(g->pl, NULL, 0);
	assert_string_equal(g->log, "UF");
	assert_int_equal(g->fail_status, FG_GRPC_INTERNAL);
	assert_non_null(strstr(g->fail_msg, "fake1"));
	call_close(g, FG_GRPC_INTERNAL);
	fg_bufq_free(&in);
	done(t);
}

/* ---- 20. an answer made of held bytes ---- */

/* Answer with the message the hook was handed: when it came out of the
 * held input, its bytes are in that buffer. */
static enum fg_stage_rc answer_with_second(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	if (m->index != 1)
		return FG_STAGE_CONTINUE;
	assert_int_equal(fg_pipeline_answer(c->pl, FG_GRPC_OK, "filtered", m->data, m->len), 0);
	return FG_STAGE_DONE;
}

/* More than FG_BUFQ_KEEP of response bytes held behind a full output
 * queue; a stage answers with the message the pump just fed it from
 * them: the answer reads that message before anything is freed, and it is
 * what the client gets. */
static void test_pipeline_answer_from_held(void **state)
{
	struct t *t = *state;
	struct host *h = &t->host[0];
	struct fg_bufq in = { 0 }, first = { 0 }, want = { 0 };
	char body[1000], label[32];
	unsigned i;
	int n;

	env_open(t, 2);
	cfg.limits.stream_window = 64;
	fakes[0].act[H_MSG_RESP] = answer_with_second;
	for (i = 0; fg_bufq_len(&in) <= FG_BUFQ_KEEP + 2 * sizeof(body); i++) {
		memset(body, 'a' + i % 26, sizeof(body));
		n = snprintf(label, sizeof(label), "message %u.", i);
		memcpy(body, label, (size_t)n);
		frame(&in, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
		if (i == 0)
			frame(&first, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
		if (i == 1)
			frame(&want, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body));
	}
	call_open(t, h, UNARY, NULL);
	fg_pipeline_request_end(h->pl, NULL);
	response_headers(h->pl, NULL, 0);
	feed(h->pl, RESP, in.data, in.len, in.len);
	assert_string_equal(h->log, "UES");
	assert_out(&h->resp_out, &first);
	assert_true(fg_pipeline_held(h->pl, RESP) > FG_BUFQ_KEEP);
	assert_int_equal(fg_pipeline_held(h->pl, RESP), in.len - first.len);
	assert_int_equal(fg_pipeline_holds(h->pl, RESP), 1);

	/* the client takes the first message: the pump feeds the second */
	fg_bufq_clear(&h->resp_out);
	fg_pipeline_output_taken(h->pl, RESP);
	turn(t);
	assert_string_equal(h->log, "UESCT");
	assert_out(&h->resp_out, &want);
	assert_hdr(&h->resp_trailers, "grpc-status", "0");
	assert_hdr(&h->resp_trailers, "grpc-message", "filtered");
	assert_string_equal(fakes[1].saw[RESP], "message 0.aaaaaaaaaaaaaaaaaaaaaa|");
	assert_int_equal(fakes[0].n[H_MSG_RESP], 2);
	assert_int_equal(fakes[0].n_cancel + fakes[1].n_cancel, 0);
	call_close(h, FG_GRPC_OK);
	fg_bufq_free(&in);
	fg_bufq_free(&first);
	fg_bufq_free(&want);
	done(t);
}

/* ---- 14. fail the Nth allocation over a whole call ---- */

/* Added metadata that a failed allocation turns into a failed call. */
static enum fg_stage_rc meta_or_fail(struct fg_stage_ctx *c, struct fg_hdrs *hd, struct fg_stage_msg *m)
{
	if (fg_pipeline_add_metadata(c->pl, "x-hdr", "2", 1) == 0)
		return FG_STAGE_CONTINUE;
	fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "out of memory");
	return FG_STAGE_DONE;
}

/* What the client got: 0 (the whole call, exactly), or the status it
 * failed with, from ops->fail or an answer's trailers. */
static int outcome(const struct host *h, const struct fg_bufq *req, const struct fg_bufq *resp)
{
	const char *v;
	size_t len;

	if (strchr(h->log, 'F')) {
		assert_int_equal(h->log[h->nlog - 1], 'F');     /* nothing after it */
		return h->fail_status;
	}
	v = fg_hdrs_find(&h->resp_trailers, "grpc-status", &len);
	/* a stage failed with metadata added: an answer, its status in the trailers */
	if (strcmp(h->log, "UECST") == 0) {
		assert_non_null(v);
		assert_int_equal(len, 2);
		assert_memory_equal(v, "13", 2);
		return FG_GRPC_INTERNAL;
	}
	if (strcmp(h->log, "UEST") != 0)
		fail_msg("the call neither failed nor completed: '%s'", h->log);
	assert_non_null(v);
	assert_int_equal(len, 1);
	assert_int_equal(v[0], '0');
	assert_out(&h->req_out, req);
	assert_out(&h->resp_out, resp);
	assert_hdr(&h->resp_hdrs, "x-hdr", "2");
	assert_hdr(&h->req_trailers, "x-t", "v1");
	return FG_GRPC_OK;
}

/* One call's whole life with allocation <n> failed (<*injected>: it came);
 * 1 when the call completed. */
static int failmalloc_run(struct t *t, long n, int *injected, const struct fg_bufq *req,
                          const struct fg_bufq *resp, const struct fg_bufq *wreq,
                          const struct fg_bufq *wresp)
{
	long live = mem.live;
	struct host *h = &t->host[0];
	struct fg_hdrs tr = { 0 }, rh = { 0 }, rt = { 0 };
	struct later l = { .st = &fake_stages[1], .fn = fg_pipeline_resume };
	struct timeval now = { 0, 0 };
	struct event *ev = evtimer_new(t->base, later_cb, &l);
	char msg[256];
	int rc, status = -1, st = -1;

	fakes_reset();
	host_reset(h);
	fakes[0].append = "+a";
	fakes[0].act[H_RESP_HEADERS] = meta_or_fail;
	fakes[1].rc[H_REQ_HEADERS] = FG_STAGE_SUSPEND;
	host_request(h, UNARY, "gzip");
	hdr_add(&tr, "x-t", "v1");
	hdr_add(&rh, ":status", "200");
	hdr_add(&rh, "content-type", "application/grpc");
	hdr_add(&rh, "grpc-encoding", "gzip");
	hdr_add(&rt, "grpc-status", "0");
	assert_non_null(ev);
	assert_int_equal(evtimer_add(ev, &now), 0);

	mem_arm(n);
	rc = fg_pipeline_env_new_stages(&t->env, t->base, &cfg, 0, &t->metrics, stage_list, 2);
	if (rc == 0) {
		l.env = t->env;
		rc = call_begin(t, h, UNARY, &status, msg, sizeof(msg));
		assert_true(rc < 0 || h->pl);
	} else {
		assert_int_equal(rc, FG_ENOMEM);
	}
	if (rc == 0 && h->pl) {
		fg_pipeline_start(h->pl);
		l.h = fakes[1].handle;
		feed(h->pl, REQ, req->data, req->len, 3);
		fg_pipeline_request_end(h->pl, &tr);
		turn(t);                                /* the resume, then the pump */
		fg_pipeline_response_headers(h->pl, &rh, 0);
		feed(h->pl, RESP, resp->data, resp->len, 4);
		fg_pipeline_response_end(h->pl, &rt);
		st = outcome(h, wreq, wresp);
		call_close(h, st);
		assert_int_equal(fakes[0].n_end + fakes[1].n_end, 2);
	} else if (rc < 0 && l.env) {
		assert_int_equal(rc, FG_ENOMEM);
		assert_int_equal(status, FG_GRPC_INTERNAL);
	}
	fg_pipeline_env_free(t->env);
	t->env = NULL;
	*injected = mem.failed;
	mem_arm(0);
	if (st != FG_GRPC_OK && st != FG_GRPC_INTERNAL && st != FG_GRPC_RESOURCE_EXHAUSTED && st != -1)
		fail_msg("allocation %ld: the call ended with status %d (%s)", n, st, h->fail_msg);
	if (st == FG_GRPC_OK && l.env)
		assert_int_equal(l.rc, 0);
	event_free(ev);
	host_free(h);
	fg_hdrs_free(&tr);
	fg_hdrs_free(&rh);
	fg_hdrs_free(&rt);
	assert_int_equal(t->metrics.intercept_buffered, 0);
	if (mem.live != live)
		fail_msg("allocation %ld failed: %ld blocks leaked", n, mem.live - live);
	return st == FG_GRPC_OK;
}

/* ---- ended pipelines kept for reuse, within their byte budget ---- */

#define SPARE_BUDGET (16u << 20)        /* PIPELINE_SPARE_BYTES in fg_pipeline_env.c */
#define SPARE_CALLS 400
#define SPARE_MSG 60000                 /* under FG_GRPCFRAME_READER_KEEP: its buffer is kept */

/* Many calls end at once, each with a 60 KB request assembled from two
 * chunks: the worker keeps as many of their pipelines (and buffers) as fit
 * in the budget, more than the 32 it used to keep, never more than the
 * budget; and a call after them takes a kept one, allocating nothing. */
static void test_pipeline_spares(void **state)
{
	struct t *t = *state;
	struct host *h = calloc(SPARE_CALLS, sizeof(*h));
	struct fg_bufq in = { 0 };
	uint8_t *body = malloc(SPARE_MSG);
	size_t before, kept;
	long live;
	int i;

	assert_non_null(h);
	assert_non_null(body);
	memset(body, 's', SPARE_MSG);
	cfg.limits.max_message_size = SPARE_MSG;
	cfg.limits.connection_buffer = 1u << 30;
	cfg.limits.worker_buffer = 1u << 30;
	frame(&in, FG_GRPCFRAME_UNCOMPRESSED, body, SPARE_MSG);
	env_open(t, 1);
	before = mem.bytes;
	for (i = 0; i < SPARE_CALLS; i++) {
		call_open(t, &h[i], STREAM, NULL);
		feed(h[i].pl, REQ, in.data, in.len, in.len / 2 + 1);
		assert_out(&h[i].req_out, &in);
	}
	for (i = 0; i < SPARE_CALLS; i++) {
		call_close(&h[i], FG_GRPC_OK);
		host_free(&h[i]);
	}
	kept = mem.bytes - before;
	assert_true(kept <= SPARE_BUDGET + 64 * 1024);
	assert_true(kept >= SPARE_BUDGET / 2);
	assert_true(kept >= 40 * (size_t)SPARE_MSG);

	/* the next call reuses a kept pipeline and its buffer */
	live = mem.live;
	call_open(t, &h[0], STREAM, NULL);
	h[0].req_out = (struct fg_bufq){ 0 };
	assert_int_equal(fg_bufq_reserve(&h[0].req_out, in.len), 0);
	live = mem.live;
	feed(h[0].pl, REQ, in.data, in.len, in.len / 2 + 1);
	assert_out(&h[0].req_out, &in);
	assert_int_equal(mem.live, live);
	call_close(&h[0], FG_GRPC_OK);
	host_free(&h[0]);
	free(h);
	free(body);
	fg_bufq_free(&in);
	done(t);
}

static void test_pipeline_failmalloc(void **state)
{
	struct t *t = *state;
	struct fg_bufq req = { 0 }, resp = { 0 }, wreq = { 0 }, wresp = { 0 };
	long n;
	int incomplete = 0, injected;

	frame_gzip(&req, "compressed request");
	frame_str(&req, "plain request");
	frame_str(&resp, "response 0");
	frame_gzip(&resp, "response 1");
	frame_str(&wreq, "compressed request+a");
	frame_str(&wreq, "plain request+a");
	frame_str(&wresp, "response 0+a");
	frame_str(&wresp, "response 1+a");
	for (n = 1; n < 10000; n++) {
		int ok = failmalloc_run(t, n, &injected, &req, &resp, &wreq, &wresp);
		if (!injected) {
			assert_true(ok);                /* nothing failed: the whole call */
			break;
		}
		incomplete += !ok;
	}
	assert_true(n > 5 && n < 10000);
	assert_true(incomplete > 0);
	fg_bufq_free(&req);
	fg_bufq_free(&resp);
	fg_bufq_free(&wreq);
	fg_bufq_free(&wresp);
	done(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pipeline_continue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_edit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_drop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_suspend_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_handle_from_begin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_suspend_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_suspend_response_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_cancel_both_sides, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_metadata, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_hold_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_output_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_request_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_worker_init_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_on_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_budgets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_trailers_only_suspended, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_hold_on_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_resumed_then_cancelled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_leave_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_budget_defers_compressed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_done_at_response_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_answer_from_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_spares, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_failmalloc, setup, teardown),
	};

	/* libevent is a shared library: --wrap does not reach it, this does */
	event_set_mem_functions(__wrap_malloc, __wrap_realloc, __wrap_free);
	return cmocka_run_group_tests_name("pipeline", tests, NULL, NULL);
}
