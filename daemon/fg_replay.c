/*
 * fg_replay.c - recorded calls through the daemon's stages under another
 * policy.  See fg_replay.h.
 *
 * The stages run on a pipeline like any worker's, driven by a host of this
 * file in place of fg_call: recorded messages go in framed (uncompressed),
 * the output queues are emptied as they fill, and the loop runs until
 * nothing is pending after each step.  The config around the policy is
 * generated (one worker, no admin, capture of every method at sample 1 into
 * a ring this file empties, a Redis address that is never dialled: the
 * gate is lent an fg_state_mem), so every stage reads the settings it
 * would in the daemon.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "fg_bufq.h"
#include "fg_capture.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_grpcframe.h"
#include "fg_hdrs.h"
#include "fg_pipeline.h"
#include "fg_policy-t.h"
#include "fg_policy_eval.h"
#include "fg_replay.h"
#include "fg_stage.h"
#include "fg_state_mem.h"

#define KEY_BYTES 32

/* The host of one call (fg_call's part). */
struct host {
	struct fg_pipeline *pl;
	struct fg_bufq req_out, resp_out;
	int status;                     /* what the client got; -1 until known */
	unsigned ended;                 /* the response ended or the call failed */
	int refused;                    /* the pipeline refused the call at its start: the status
	                                   the daemon would answer with (UNIMPLEMENTED for a path
	                                   that is not a gRPC method path); 0: not refused */
};

struct fg_replay {
	char dir[64];                   /* mkdtemp: the generated config's key files and capture dir */
	struct fg_config *cfg;
	struct event_base *base;
	struct fg_state *state;
	struct fg_capture *cap;
	struct fg_pipeline_env *env;
	struct fg_pipeline_budget budget;
	uint64_t now_us;                /* the clock the stages see (recorded time) */
	const Feedguard__Capture__V1__Call *cur;   /* the call being replayed, for replay_identify */
	struct fg_bufq rec;             /* the record the capture stage made */
	Feedguard__Capture__V1__Record *out;
	Feedguard__Capture__V1__Call passthrough;  /* a call no stage took */
};

/* --- the identify stage of replay: band and user as recorded ------------------ */

struct rid_worker {
	struct fg_replay *r;
};

static int rid_worker_init(void *wstate, const struct fg_stage_worker_env *env)
{
	((struct rid_worker *)wstate)->r = env->tool;
	return 0;
}

/* The index of the policy's band called <name> in <*band>: 1, or 0 when
 * it has none (<*band> is then its unknown band). */
static int band_named(const struct fg_policy *p, const char *name, size_t *band)
{
	*band = p->unknown_band;
	for (size_t i = 0; i < p->nbands; i++)
		if (strcmp(p->bands[i].name, name) == 0) {
			*band = i;
			return 1;
		}
	return 0;
}

/* The recorded band by name (a band this policy lacks is its unknown
 * band); the capture pseudonym stands in for the user's state pseudonym:
 * one user is one key, as in the daemon. */
static enum fg_stage_begin rid_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	const struct fg_replay *r = ((struct rid_worker *)c->wstate)->r;
	struct fg_stage_call *call = c->call;
	const char *user = r->cur->user_key;

	(void)h;
	(void)band_named(call->pol, r->cur->band, &call->band);
	call->band_known = 1;
	call->page_size_asked = r->cur->decisions ? r->cur->decisions->page_size_asked : 0;
	fg_policy_count_call(call->pol, call->m, call->band, call->slot);
	if (strlen(user) < sizeof(call->user)) {
		memcpy(call->user, user, strlen(user) + 1);
		memcpy(call->capture_user, user, strlen(user) + 1);
	}
	return FG_STAGE_RUN;
}

static const struct fg_stage replay_identify = {
	.name = "replay-identify",
	.flags = FG_STAGE_F_SUPPORT,
	.worker_size = sizeof(struct rid_worker),
	.worker_init = rid_worker_init,
	.begin = rid_begin,
};

/* The daemon's stages after identify, in the daemon's order. */
static const struct fg_stage *const replay_stages[] = {
	&replay_identify, &fg_stage_gate, &fg_stage_strip, &fg_stage_capture_tap, &fg_stage_filter, &fg_stage_account,
	&fg_stage_capture,
};

/* --- the host -------------------------------------------------------------- */

static int status_of(const struct fg_hdrs *h)
{
	char buf[4];
	const char *v;
	size_t len;

	/* a header value is not NUL-terminated: read its bytes only */
	if (!h || !(v = fg_hdrs_find(h, "grpc-status", &len)) || len == 0 || len > 2)
		return -1;
	memcpy(buf, v, len);
	buf[len] = '\0';
	return atoi(buf);
}

static void op_go_upstream(void *arg)
{
	(void)arg;
}

static void take(struct host *h, struct fg_bufq *q, enum fg_stage_dir dir)
{
	fg_bufq_consume(q, fg_bufq_len(q));
	if (h->pl)
		fg_pipeline_output_taken(h->pl, dir);
}

static void op_request_more(void *arg)
{
	struct host *h = arg;

	take(h, &h->req_out, FG_STAGE_REQUEST);
}

static void op_response_more(void *arg)
{
	struct host *h = arg;

	take(h, &h->resp_out, FG_STAGE_RESPONSE);
}

static void op_request_end(void *arg, struct fg_hdrs *t)
{
	(void)arg;
	(void)t;
}

static void op_response_start(void *arg, struct fg_hdrs *hd, int end)
{
	struct host *h = arg;

	if (end) {
		h->status = status_of(hd);
		h->ended = 1;
	}
}

static void op_response_end(void *arg, struct fg_hdrs *t)
{
	struct host *h = arg;
	int s = status_of(t);

	take(h, &h->resp_out, FG_STAGE_RESPONSE);
	h->status = s < 0 ? FG_GRPC_OK : s;
	h->ended = 1;
}

static void op_fail(void *arg, int status, const char *msg)
{
	struct host *h = arg;

	(void)msg;
	h->status = status;
	h->ended = 1;
}

static void op_cancel_upstream(void *arg)
{
	(void)arg;
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

/* --- setup ------------------------------------------------------------------- */

static uint64_t replay_clock(void *arg)
{
	return ((struct fg_replay *)arg)->now_us;
}

static int write_key(const char *path)
{
	unsigned char key[KEY_BYTES];
	int fd, ok;

	if (RAND_bytes(key, sizeof(key)) != 1)
		return FG_EIO;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return FG_EIO;
	ok = write(fd, key, sizeof(key)) == (ssize_t)sizeof(key);
	close(fd);
	return ok ? 0 : FG_EIO;
}

/* The config around <policy>: every key a stage reads, nothing dialled. */
static int make_config(struct fg_replay *r, const char *policy, char *err, size_t errlen)
{
	char path[128], *text = NULL;
	int rc, n;

	if (!mkdtemp(strcpy(r->dir, "/tmp/feedguard-replay.XXXXXX"))) {
		snprintf(err, errlen, "cannot make a temporary directory: %s", strerror(errno));
		r->dir[0] = '\0';
		return FG_EIO;
	}
	snprintf(path, sizeof(path), "%s/state.key", r->dir);
	if (write_key(path) < 0 || (snprintf(path, sizeof(path), "%s/capture.key", r->dir), write_key(path) < 0)) {
		snprintf(err, errlen, "cannot write keys in %s", r->dir);
		return FG_EIO;
	}
	n = asprintf(&text,
	             "workers: 1\nupstream: {address: \"127.0.0.1:1\"}\nadmin: {listen: \"off\"}\n"
	             "limits: {max_message_size: 64MiB, connection_buffer: 2GiB, worker_buffer: 4GiB}\n"
	             "policy: \"%s\"\n"
	             "pseudonym_keys: [{id: replay, file: state.key}]\n"
	             "state: {redis: \"127.0.0.1:1\"}\n"
	             "capture: {directory: \".\", key: {id: replay, file: capture.key}, sample: 1, "
	             "max_record_size: 64MiB, queue: 4GiB}\n", policy);
	if (n < 0)
		return FG_ENOMEM;
	rc = fg_config_load_string("feedguard-replay.yaml", r->dir, text, (size_t)n, &r->cfg, err, errlen);
	free(text);
	return rc;
}

int fg_replay_new(struct fg_replay **out, const char *policy, size_t max_users, char *err, size_t errlen)
{
	struct fg_stage_worker_env w = { 0 };
	struct fg_replay *r = calloc(1, sizeof(*r));
	char abs[4096];
	int rc = FG_ENOMEM;

	*out = NULL;
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return FG_ENOMEM;
	}
	fg_pipeline_budget_init(&r->budget);
	if (!realpath(policy, abs)) {
		snprintf(err, errlen, "%s: %s", policy, strerror(errno));
		rc = FG_EIO;
		goto fail;
	}
	if ((rc = make_config(r, abs, err, errlen)) < 0)
		goto fail;
	rc = FG_ENOMEM;
	snprintf(err, errlen, "out of memory");
	if (!(r->base = event_base_new()) || fg_state_mem_new(&r->state, NULL, max_users ? max_users : FG_REPLAY_DEFAULT_MAX_USERS) < 0 ||
	    fg_capture_new(&r->cap, 1) < 0)
		goto fail;
	/* A call's update lands when it ends, as in Redis: a call of the same
	 * user that starts before then decides without it, as the daemon did
	 * (README, Concurrency). */
	fg_state_mem_defer(r->state, FG_REPLAY_MAX_HELD);
	w.base = r->base;
	w.capture = r->cap;
	w.state = r->state;
	w.mono_us = replay_clock;
	w.tool = r;
	if ((rc = fg_pipeline_env_new_tool(&r->env, &w, r->cfg, replay_stages,
	                                   sizeof(replay_stages) / sizeof(replay_stages[0]))) < 0)
		goto fail;
	err[0] = '\0';
	*out = r;
	return 0;

fail:
	fg_replay_free(r);
	return rc;
}

const char *fg_replay_policy(const struct fg_replay *r)
{
	return r->cfg->policy->file;
}

const struct fg_tz *fg_replay_zone(const struct fg_replay *r, const char *name)
{
	return fg_policy_zone(r->cfg->policy, name, name ? strlen(name) : 0);
}

const char *fg_replay_policy_id(const struct fg_replay *r)
{
	return r->cfg->policy->id;
}

void fg_replay_free(struct fg_replay *r)
{
	char path[128];

	if (!r)
		return;
	if (r->out)
		feedguard__capture__v1__record__free_unpacked(r->out, NULL);
	fg_bufq_free(&r->rec);
	fg_pipeline_env_free(r->env);
	fg_capture_free(r->cap);
	fg_state_free(r->state);
	if (r->base)
		event_base_free(r->base);
	fg_config_unref(r->cfg);
	if (r->dir[0]) {
		snprintf(path, sizeof(path), "%s/state.key", r->dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/capture.key", r->dir);
		unlink(path);
		rmdir(r->dir);
	}
	free(r);
}

/* --- one call ------------------------------------------------------------------- */

/* Whatever the pipeline scheduled (held bytes moving on) runs now. */
static void settle(struct fg_replay *r)
{
	int i;

	for (i = 0; i < 64 && event_base_loop(r->base, EVLOOP_NONBLOCK) == 0; i++)
		;
}

static int add_hdr(struct fg_hdrs *h, const char *name, const void *value, size_t len)
{
	return fg_hdrs_add(h, (const uint8_t *)name, strlen(name), value, len, 0);
}

/* The request headers the stages see: a gRPC call's, the metadata the
 * capture kept, and the recorded zone where the method reads it from a
 * header. */
static int request_headers(const struct fg_replay *r, const struct fg_policy_method *m,
                           const Feedguard__Capture__V1__Call *in, struct fg_hdrs *h)
{
	size_t i;
	int rc = add_hdr(h, "content-type", "application/grpc", 16) | add_hdr(h, "te", "trailers", 8);

	(void)r;
	for (i = 0; i < in->n_request_metadata; i++)
		rc |= add_hdr(h, in->request_metadata[i]->name, in->request_metadata[i]->value.data,
		              in->request_metadata[i]->value.len);
	if (m && m->time_zone.kind == FG_POLICY_SRC_HEADER && in->time_zone[0] && !fg_hdrs_find(h, m->time_zone.header, &i))
		rc |= add_hdr(h, m->time_zone.header, in->time_zone, strlen(in->time_zone));
	return rc ? FG_ENOMEM : 0;
}

/* Each recorded message framed, fed to one side. */
static int feed(struct fg_replay *r, struct host *h, enum fg_stage_dir dir, size_t n, const ProtobufCBinaryData *msgs)
{
	struct fg_bufq f;
	size_t i;

	fg_bufq_init(&f);
	for (i = 0; i < n && !h->ended; i++) {
		fg_bufq_truncate(&f, 0);
		if (fg_grpcframe_append(&f, FG_GRPCFRAME_UNCOMPRESSED, msgs[i].data, msgs[i].len) < 0) {
			fg_bufq_free(&f);
			return FG_ENOMEM;
		}
		if (dir == FG_STAGE_REQUEST)
			fg_pipeline_request_data(h->pl, fg_bufq_head(&f), fg_bufq_len(&f));
		else
			fg_pipeline_response_data(h->pl, fg_bufq_head(&f), fg_bufq_len(&f));
		settle(r);
	}
	fg_bufq_free(&f);
	return 0;
}

/* The ranker's side, as recorded. */
static int respond(struct fg_replay *r, struct host *h, const Feedguard__Capture__V1__Call *in)
{
	struct fg_hdrs hd, tr;
	char code[8];
	int rc = 0;

	fg_hdrs_init(&hd);
	fg_hdrs_init(&tr);
	if (fg_hdrs_add_grpc_response(&hd) < 0)
		rc = FG_ENOMEM;
	if (rc == 0) {
		fg_pipeline_response_headers(h->pl, &hd, 0);
		settle(r);
		rc = feed(r, h, FG_STAGE_RESPONSE, in->n_upstream_response, in->upstream_response);
	}
	snprintf(code, sizeof(code), "%d", in->answered_by_feedguard ? 0 : in->status);
	if (rc == 0 && !h->ended) {
		r->now_us = (uint64_t)in->start_unix_ms * 1000 + (uint64_t)in->duration_us;
		if (add_hdr(&tr, "grpc-status", code, strlen(code)) < 0 ||
		    (!in->answered_by_feedguard && in->status_message[0] &&
		     add_hdr(&tr, "grpc-message", in->status_message, strlen(in->status_message)) < 0))
			rc = FG_ENOMEM;
		else
			fg_pipeline_response_end(h->pl, &tr);
		settle(r);
	}
	fg_hdrs_free(&hd);
	fg_hdrs_free(&tr);
	return rc;
}

/* A call no stage of this policy takes passes through: the client gets
 * what the ranker sent. */
static void pass_through(struct fg_replay *r, const Feedguard__Capture__V1__Call *in)
{
	Feedguard__Capture__V1__Call *p = &r->passthrough;

	feedguard__capture__v1__call__init(p);
	p->start_unix_ms = in->start_unix_ms;
	p->duration_us = in->duration_us;
	p->method = in->method;
	p->band = in->band;
	p->user_key = in->user_key;
	p->time_zone = in->time_zone;
	p->n_request = in->n_request;
	p->request = in->request;
	p->n_upstream_response = in->n_upstream_response;
	p->upstream_response = in->upstream_response;
	p->n_delivered_response = in->n_upstream_response;
	p->delivered_response = in->upstream_response;
	p->status = in->answered_by_feedguard ? 0 : in->status;
	p->status_message = in->answered_by_feedguard ? (char *)"" : in->status_message;
}

static int run_call(struct fg_replay *r, const struct fg_policy_method *m, const Feedguard__Capture__V1__Call *in,
                    struct host *h, struct fg_replay_result *res)
{
	struct fg_pipeline_args a = { 0 };
	struct fg_stage_end end = { 0 };
	struct fg_hdrs req;
	char msg[256];
	int status = 0, rc;

	fg_hdrs_init(&req);
	if ((rc = request_headers(r, m, in, &req)) < 0)
		goto out;
	a.cfg = r->cfg;
	a.path = in->method;
	a.path_len = strlen(in->method);
	a.req_hdrs = &req;
	a.req_out = &h->req_out;
	a.resp_out = &h->resp_out;
	a.budget = &r->budget;
	a.ops = &host_ops;
	a.host = h;
	a.time_ms = in->start_unix_ms;
	if ((rc = fg_pipeline_begin(&h->pl, r->env, &a, &status, msg, sizeof(msg))) == FG_EINVAL) {
		/* answered by feedguard, as the daemon would (no stage ran) */
		h->refused = status;
		rc = 0;
		goto out;
	}
	if (rc < 0 || !h->pl)
		goto out;
	fg_pipeline_start(h->pl);
	settle(r);
	if ((rc = feed(r, h, FG_STAGE_REQUEST, in->n_request, in->request)) == 0 && !h->ended) {
		fg_pipeline_request_end(h->pl, NULL);
		settle(r);
	}
	if (rc == 0 && !h->ended) {
		if (in->answered_by_feedguard && in->n_upstream_response == 0) {
			/* nothing recorded to answer with: the call ends unanswered */
			res->no_upstream = 1;
			h->status = FG_GRPC_CANCELLED;
			fg_pipeline_cancel(h->pl, FG_STAGE_CANCEL_UPSTREAM);
		} else {
			rc = respond(r, h, in);
		}
	}
	end.status = h->status < 0 ? FG_GRPC_CANCELLED : h->status;
	end.start_us = (uint64_t)in->start_unix_ms * 1000;
	end.end_us = end.start_us + (uint64_t)in->duration_us;
	/* The account counts the call as long as the recording one did: its
	 * clock starts at the gate, a little after the call, so a call's
	 * duration can be a ms longer than what was counted. */
	if (in->decisions && in->decisions->screen_time && in->decisions->screen_time->counted_case ==
	        FEEDGUARD__CAPTURE__V1__SCREEN_TIME__COUNTED_COUNTED_MS)
		r->now_us = end.start_us + (uint64_t)in->decisions->screen_time->counted_ms * 1000;
	fg_pipeline_end(h->pl, &end);
	fg_pipeline_free(h->pl);
	h->pl = NULL;
	settle(r);
out:
	fg_hdrs_free(&req);
	return rc;
}

/*
 * The state failure the daemon had on this call, had again: its read
 * fails the same way under every policy (Redis down, slow or saturated is
 * the environment, like the ranker's answer), and the band's fail_mode
 * decides as it did.  With Redis down the update after the call was lost
 * too; after a timeout, a saturated link or an error reply it may have
 * landed, and replay lets it.  "no_user" is the call's own: the policy
 * decides it.
 */
static void recorded_failure(struct fg_replay *r, const Feedguard__Capture__V1__Call *in)
{
	static const struct {
		const char *name;
		int rc;
		unsigned ops;
	} kinds[] = {
		{ "down", FG_EUNAVAIL, FG_STATE_MEM_FAIL_READ | FG_STATE_MEM_FAIL_UPDATE },
		{ "timeout", FG_ETIMEOUT, FG_STATE_MEM_FAIL_READ },
		{ "busy", FG_EBUSY, FG_STATE_MEM_FAIL_READ },
		{ "error", FG_EPROTO, FG_STATE_MEM_FAIL_READ },
	};
	const char *f = in->decisions && in->decisions->screen_time ? in->decisions->screen_time->state_failure : NULL;
	size_t i;

	fg_state_mem_fail(r->state, 0, 0);
	for (i = 0; f && i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(f, kinds[i].name) == 0)
			fg_state_mem_fail(r->state, kinds[i].rc, kinds[i].ops);
}

int fg_replay_call(struct fg_replay *r, const Feedguard__Capture__V1__Call *in, Feedguard__Capture__V1__Call **out,
                   struct fg_replay_result *res)
{
	const struct fg_policy_method *m;
	struct fg_replay_result unused;
	struct host h = { .status = -1 };
	size_t band;
	int rc;

	*out = NULL;
	if (!res)
		res = &unused;
	memset(res, 0, sizeof(*res));
	if (!in->method || !in->method[0])
		return FG_EINVAL;
	if (r->out)
		feedguard__capture__v1__record__free_unpacked(r->out, NULL);
	r->out = NULL;
	r->cur = in;
	r->now_us = (uint64_t)in->start_unix_ms * 1000;
	fg_state_mem_set_now(r->state, in->start_unix_ms);
	m = fg_policy_find_method(r->cfg->policy, in->method, strlen(in->method));
	fg_bufq_init(&h.req_out);
	fg_bufq_init(&h.resp_out);
	recorded_failure(r, in);
	rc = run_call(r, m, in, &h, res);
	fg_state_mem_fail(r->state, 0, 0);
	fg_bufq_free(&h.req_out);
	fg_bufq_free(&h.resp_out);
	r->cur = NULL;
	if (rc < 0)
		return rc;
	res->not_in_policy = m == NULL;
	res->band_not_in_policy = m != NULL && !band_named(r->cfg->policy, in->band, &band);
	res->unknown_band = r->cfg->policy->bands[r->cfg->policy->unknown_band].name;
	if (!fg_capture_take(r->cap, &r->rec)) {
		pass_through(r, in);
		if (h.refused) {
			r->passthrough.status = h.refused;
			r->passthrough.answered_by_feedguard = 1;
			r->passthrough.n_upstream_response = r->passthrough.n_delivered_response = 0;
		}
		if (in->answered_by_feedguard && in->n_upstream_response == 0) {
			/* the ranker would have had it; nothing recorded to answer with */
			res->no_upstream = 1;
			r->passthrough.status = FG_GRPC_CANCELLED;
		}
		*out = &r->passthrough;
		return 0;
	}
	r->out = feedguard__capture__v1__record__unpack(NULL, fg_bufq_len(&r->rec), fg_bufq_head(&r->rec));
	if (!r->out || r->out->kind_case != FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL)
		return FG_ENOMEM;
	*out = r->out->call;
	return 0;
}

uint64_t fg_replay_not_held(const struct fg_replay *r)
{
	return r ? fg_state_mem_not_held(r->state) : 0;
}

uint64_t fg_replay_users_full(const struct fg_replay *r)
{
	return r ? fg_state_mem_full(r->state) : 0;
}
