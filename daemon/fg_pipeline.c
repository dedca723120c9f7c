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
#include "fg_pipeline-internal.h"
#include "fg_stage_record.h"
#include "fg_policy_eval.h"
#include "fg_units.h"

#define TEXT_MAX 256

/* --- ending ------------------------------------------------------------ */

static void cancel_waiting(struct fg_pipeline *pl, enum fg_stage_cancel why);

/* Stop: no host operation after this one. */
static void finish(struct fg_pipeline *pl)
{
	pl->flags |= PL_FINISHED;
	fg_pipeline_unschedule(pl);
}

/* What feedguard told the client itself, for the stages' end (capture). */
static void note_answer(struct fg_pipeline *pl, const char *text)
{
	pl->call.answered = 1;
	snprintf(pl->call.answer_text, sizeof(pl->call.answer_text), "%s", text ? text : "");
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
	note_answer(pl, text);
	finish(pl);
	cancel_waiting(pl, FG_STAGE_CANCEL_FAILED);
	pl->ops->fail(pl->host, status, text);
}

static void cancel_waiting(struct fg_pipeline *pl, enum fg_stage_cancel why)
{
	int waiting[3] = { pl->side[0].susp, pl->side[1].susp, pl->hold }, i;
	struct fg_stage_ctx c;

	/* a stage that already resumed a side is no longer waiting on it */
	for (i = 0; i < 2; i++)
		if (pl->side[i].susp_resumed)
			waiting[i] = NO_STAGE;

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

void fg_pipeline_note_failure(struct fg_pipeline *pl, const char *text)
{
	if (pl && !pl->call.answered)
		note_answer(pl, text);
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
		/* the request goes on through the later stages; the response
		 * waits (a hold asked on the response side means nothing) */
		if (rc == FG_STAGE_HOLD_RESPONSE) {
			if (dir == FG_STAGE_REQUEST && pl->hold == NO_STAGE)
				pl->hold = (int)i;
			rc = FG_STAGE_CONTINUE;
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
		rv = r->changed ? fg_grpcframe_append(s->out, FG_GRPCFRAME_UNCOMPRESSED, r->m.data, r->m.len)
		                : fg_grpcframe_append(s->out, r->flag, r->orig, r->orig_len);
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
/* The response waits for a stage's answer (HOLD_RESPONSE) and for nothing
 * else. */
static int held_only(const struct fg_pipeline *pl, enum fg_stage_dir dir)
{
	return dir == FG_STAGE_RESPONSE && pl->hold != NO_STAGE && pl->side[dir].susp == NO_STAGE;
}

/*
 * Past a budget, a compressed message waits as it came unless its call is
 * the one that goes on (fg_pipeline_budget_waits): a few KB inside a
 * stream's window can inflate to limits.max_message_size, and a client
 * that made every stream do so held 10 to 30 times the budget.  An
 * uncompressed message is no larger edited than it came, so it goes on:
 * a small call on a busy connection still completes.
 */
static int budget_defers(const struct fg_pipeline *pl, const struct side *s, const uint8_t *data, size_t len)
{
	return fg_grpcframe_reader_next_compressed(&s->reader, data, len) && fg_pipeline_budget_waits(pl);
}

static int feed(struct fg_pipeline *pl, enum fg_stage_dir dir, const uint8_t *data, size_t len, size_t *taken)
{
	struct side *s = &pl->side[dir];
	size_t limit = pl->call.cfg->limits.stream_window, used;
	struct fg_grpcframe_msg msg;
	const char *why = NULL;
	int rc;

	*taken = 0;
	while (len > 0 && fg_bufq_len(s->out) <= limit && (!side_blocked(pl, dir) || held_only(pl, dir)) &&
	       !(pl->flags & PL_FINISHED) && !budget_defers(pl, s, data, len)) {
		size_t room = len;
		/* A held response still assembles its message in the reader
		 * (which keeps a split body anyway), up to its last byte: the
		 * bytes are not copied aside to be fed again on the resume. */
		if (side_blocked(pl, dir) && (room = fg_grpcframe_reader_room(&s->reader, data, len)) == 0)
			break;
		rc = fg_grpcframe_reader_feed(&s->reader, data, room, &used, &msg, &why);
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
		if (rc == FG_STAGE_DONE) {
			pipeline_fail(pl, FG_GRPC_INTERNAL, "feedguardd stage %s ended the call without an answer",
			              env->stages[i]->name);
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

	/* The end hooks see it as the trailers it is.  PL_PENDING_END stays
	 * while a hook has it suspended, so the resume comes back here. */
	pl->flags &= ~PL_HDRS_PENDING;
	if (from == 0) {
		tmp = s->trailers;
		s->trailers = pl->resp_hdrs;
		pl->resp_hdrs = tmp;
		s->has_trailers = 1;
	}
	if (!run_end_hooks(pl, FG_STAGE_RESPONSE, from))
		return;
	pl->flags &= ~PL_PENDING_END;
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
	       fg_bufq_len(s->out) <= pl->call.cfg->limits.stream_window &&
	       !budget_defers(pl, s, fg_bufq_head(&s->raw), fg_bufq_len(&s->raw))) {
		if (feed(pl, dir, fg_bufq_head(&s->raw), fg_bufq_len(&s->raw), &taken) < 0)
			return;
		fg_bufq_consume(&s->raw, taken);
		if (taken == 0)
			break;          /* a held response's message is whole: the rest waits */
	}
	if ((pl->flags & PL_FINISHED) || side_blocked(pl, dir) || fg_bufq_len(&s->raw) || !s->end_wait)
		return;
	if (dir == FG_STAGE_REQUEST)
		request_end(pl, 0);
	else
		response_end(pl, 0);
}

void fg_pipeline_run(struct fg_pipeline *pl)
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
	if (!a->cfg->policy)
		return 0;
	/* Under a policy, a path no gRPC client writes is refused rather than
	 * passed on: a router that normalises paths (a query string cut, %46
	 * decoded, "//" merged) could take it to an intercepted method the
	 * policy never saw (a privacy audit and a review). */
	if (!fg_policy_grpc_path(a->path, a->path_len)) {
		*status = FG_GRPC_UNIMPLEMENTED;
		snprintf(msg, msglen, "'%.*s' is not a gRPC method path (/package.Service/Method)",
		         (int)(a->path_len > 64 ? 64 : a->path_len), a->path);
		return FG_EINVAL;
	}
	if (!fg_policy_find_method(a->cfg->policy, a->path, a->path_len))
		return 0;
	if ((rv = fg_pipeline_admit(env, a, status, msg, msglen)) < 0)
		return rv;
	if ((pl = fg_pipeline_get(env, a->cfg->limits.max_message_size)) == NULL) {
		*status = FG_GRPC_INTERNAL;
		snprintf(msg, msglen, "feedguardd is out of memory");
		return FG_ENOMEM;
	}
	pl->call.cfg = fg_config_ref(a->cfg);
	pl->call.pol = a->cfg->policy;
	pl->call.m = fg_policy_find_method(a->cfg->policy, a->path, a->path_len);
	pl->call.slot = env->slot_no;
	pl->call.time_ms = a->time_ms ? a->time_ms : fg_stage_call_time_ms(a->req_hdrs);
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
		fg_pipeline_put(pl);
		return FG_EINVAL;
	}
	/* The slot before the begins: a stage may take its handle in <begin>
	 * (to start a lookup there and suspend later), and that handle must
	 * name this call, not the slot the pipeline had in its last life. */
	if (fg_pipeline_slot_take(env, pl) < 0) {
		fg_pipeline_put(pl);
		*status = FG_GRPC_INTERNAL;
		snprintf(msg, msglen, "feedguardd is out of memory");
		return FG_ENOMEM;
	}
	if (!run_begins(pl, a->req_hdrs)) {
		fg_pipeline_slot_release(pl);
		fg_pipeline_put(pl);
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
	fg_pipeline_budget_detach(pl);
	fg_pipeline_slot_release(pl);
	fg_pipeline_put(pl);
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
	fg_pipeline_schedule(pl);
	return 0;
}

/* The stages that ran add what they would have added at the response's end. */
static void run_answer_hooks(struct fg_pipeline *pl)
{
	struct fg_pipeline_env *env = pl->env;
	struct fg_stage_ctx c;
	size_t i;

	for (i = 0; i < env->nstages; i++) {
		if (!(pl->run & (1u << i)) || !env->stages[i]->on_answer)
			continue;
		c = ctx_of(pl, i);
		env->stages[i]->on_answer(&c);
	}
}

int fg_pipeline_answer(struct fg_pipeline *pl, int status, const char *text, const uint8_t *msg, size_t len)
{
	struct side *s = &pl->side[FG_STAGE_RESPONSE];

	if ((pl->flags & PL_FINISHED) || s->ended)
		return FG_ESTATE;
	run_answer_hooks(pl);
	note_answer(pl, text);
	/* the metadata goes out with the answer, past every stage's hooks */
	if (pl->call.rec)
		fg_stage_record_answer_metadata(pl->call.rec, &pl->meta);
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
	/* Nothing sent and no message: one trailers-only HEADERS frame that
	 * carries the status beside the metadata. */
	if (!msg && !(pl->flags & PL_RESP_STARTED)) {
		fg_hdrs_reset(&pl->resp_hdrs);
		if (fg_hdrs_add_grpc_response(&pl->resp_hdrs) < 0 ||
		    fg_hdrs_add_grpc_status(&pl->resp_hdrs, status, text) < 0 || place_metadata(pl, &pl->resp_hdrs) < 0)
			goto fail_nomem;
		pl->flags |= PL_RESP_STARTED;
		pl->ops->response_start(pl->host, &pl->resp_hdrs, 1);
		return 0;
	}
	if (!(pl->flags & PL_RESP_STARTED)) {
		fg_hdrs_reset(&pl->resp_hdrs);
		if (fg_hdrs_add_grpc_response(&pl->resp_hdrs) < 0 || place_metadata(pl, &pl->resp_hdrs) < 0)
			goto fail_nomem;
		pl->flags |= PL_RESP_STARTED;
		pl->ops->response_start(pl->host, &pl->resp_hdrs, 0);
	}
	if (msg && fg_grpcframe_append(s->out, FG_GRPCFRAME_UNCOMPRESSED, msg, len) < 0)
		goto fail_nomem;
	if (fg_hdrs_add_grpc_status(&s->trailers, status, text) < 0 || place_metadata(pl, &s->trailers) < 0)
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

const struct fg_hdrs *fg_pipeline_pending_metadata(const struct fg_pipeline *pl)
{
	return &pl->meta;
}
