/*
 * fg_stage_strip.c - the strip stage: the band's wire edit of request and
 * response messages (fg_policy_edit_call: keep_only, remove, coarsen,
 * pseudonymize) and its remove_headers on request metadata.  For
 * pseudonymize it asks the identify stage for the call's user key
 * (need_user), which the edit then puts in place of the raw id.
 *
 * Request headers also lose content-length (edited messages change the
 * body's length) and get a grpc-accept-encoding narrowed to what both the
 * client and feedguard read, so responses stay editable and an unedited
 * one still reaches the client in a coding it accepts.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_pipeline.h"
#include "fg_policy_eval.h"
#include "fg_stage.h"
#include "fg_stage_record.h"

/* Header lists larger than this are freed, not kept, as scratch. */
#define STRIP_SCRATCH_KEEP (16 * 1024)

struct strip_worker {
	struct fg_hdrs scratch;     /* filtered headers are built here, then swapped with the call's:
	                               memory circulates instead of being allocated per call */
};

static void strip_worker_free(void *wstate)
{
	struct strip_worker *w = wstate;

	fg_hdrs_free(&w->scratch);
}

static const struct fg_policy_edit *edit_of(const struct fg_stage_call *call, enum fg_stage_dir dir)
{
	return dir == FG_STAGE_REQUEST ? &call->m->request[call->band] : &call->m->response[call->band];
}

/* Whether band <band> of method <m> has anything to edit: strip rules, or
 * a filter, whose edits need the same request headers (no content-length,
 * response encodings feedguard reads). */
static int band_edits(const struct fg_policy_method *m, size_t band)
{
	return m->request[band].prog || m->response[band].prog || m->request[band].nremove_headers ||
	       (m->feed && m->filter[band].active);
}

/* A band known from the headers for which the policy edits nothing, in
 * either direction: no work here (the call may then pass through). */
static enum fg_stage_begin strip_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	struct fg_stage_call *call = c->call;

	(void)h;
	if (call->band_known && !band_edits(call->m, call->band))
		return FG_STAGE_SKIP;
	/* identify reads the user id after every begin has run */
	if (fg_policy_need_user(call->m, call->pol->nbands, (int)call->band_known, call->band))
		call->need_user = 1;
	return FG_STAGE_RUN;
}

static int header_removed(const struct fg_policy_edit *e, const char *name, size_t len, int plumbing)
{
	size_t i;

	if (plumbing && ((len == 14 && memcmp(name, "content-length", 14) == 0) ||
	                 (len == 20 && memcmp(name, "grpc-accept-encoding", 20) == 0)))
		return 1;
	for (i = 0; i < e->nremove_headers; i++)
		if (strlen(e->remove_headers[i]) == len && memcmp(e->remove_headers[i], name, len) == 0)
			return 1;
	return 0;
}

/* <in> into <out> without the headers the band removes (and, with
 * <plumbing>, without content-length and grpc-accept-encoding). */
static int copy_kept(const struct fg_policy_edit *e, const struct fg_hdrs *in, struct fg_hdrs *out, int plumbing)
{
	const uint8_t *bytes = fg_bufq_head(&in->buf);
	size_t i;

	fg_hdrs_reset(out);
	for (i = 0; i < in->n; i++) {
		const struct fg_hdrs_entry *h = &in->ent[i];
		if (header_removed(e, (const char *)bytes + h->name_off, h->name_len, plumbing))
			continue;
		if (fg_hdrs_add(out, bytes + h->name_off, h->name_len, bytes + h->value_off, h->value_len,
		                h->flags) < 0)
			return FG_ENOMEM;
	}
	return 0;
}

/* What both the client (<in>'s grpc-accept-encoding) and feedguard read. */
static int add_accept(const struct fg_hdrs *in, struct fg_hdrs *out)
{
	char accept[FG_GRPCFRAME_ACCEPT_MAX];
	size_t len, n;
	const char *v = fg_hdrs_find(in, "grpc-accept-encoding", &len);

	n = fg_grpcframe_accept_narrow(v, v ? len : 0, accept);
	return fg_hdrs_add(out, (const uint8_t *)"grpc-accept-encoding", 20, (const uint8_t *)accept, n, 0);
}

/* Replace <*h> with what the band keeps of it, built in the worker's
 * scratch list; the old list becomes the scratch. */
static enum fg_stage_rc filter_headers(struct fg_stage_ctx *c, struct fg_hdrs *h, int plumbing)
{
	struct strip_worker *w = c->wstate;
	const struct fg_policy_edit *e = edit_of(c->call, FG_STAGE_REQUEST);
	struct fg_hdrs tmp;

	if (copy_kept(e, h, &w->scratch, plumbing) < 0 || (plumbing && add_accept(h, &w->scratch) < 0)) {
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return FG_STAGE_DONE;
	}
	tmp = *h;
	*h = w->scratch;
	w->scratch = tmp;
	if (w->scratch.buf.cap > STRIP_SCRATCH_KEEP)
		fg_hdrs_free(&w->scratch);
	else
		fg_hdrs_reset(&w->scratch);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc strip_request_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	return filter_headers(c, h, 1);
}

/* Request trailers lose the band's remove_headers too. */
static enum fg_stage_rc strip_request_end(struct fg_stage_ctx *c, struct fg_hdrs *trailers)
{
	return trailers ? filter_headers(c, trailers, 0) : FG_STAGE_CONTINUE;
}

static enum fg_stage_rc strip_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	const struct fg_stage_call *call = c->call;
	const struct fg_policy_edit *e = edit_of(call, dir);
	const char *why = NULL;
	int rc, changed = 0;

	/* Nothing to edit for this band: the message goes on as it came. */
	if (!e->prog)
		return FG_STAGE_CONTINUE;
	rc = fg_policy_edit_tally(call->pol, e, call->band, call->slot, call->user, msg->data, msg->len, msg->out,
	                          &changed, &why, call->rec ? fg_stage_record_tally(call->rec) : NULL);
	if (rc == FG_ENOMEM) {
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return FG_STAGE_DONE;
	}
	if (rc < 0) {
		char text[256];
		snprintf(text, sizeof(text), "%s message is not valid protobuf for %s: %s",
		         dir == FG_STAGE_REQUEST ? "request" : "response", call->m->path, why ? why : "malformed");
		fg_pipeline_fail(c->pl, dir == FG_STAGE_REQUEST ? FG_GRPC_INVALID_ARGUMENT : FG_GRPC_INTERNAL, text);
		return FG_STAGE_DONE;
	}
	msg->changed = changed != 0;
	return FG_STAGE_CONTINUE;
}

const struct fg_stage fg_stage_strip = {
	.name = "strip",
	.worker_size = sizeof(struct strip_worker),
	.worker_free = strip_worker_free,
	.begin = strip_begin,
	.on_request_headers = strip_request_headers,
	.on_message = strip_message,
	.on_request_end = strip_request_end,
};
