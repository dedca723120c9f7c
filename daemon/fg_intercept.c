/* fg_intercept.c - the policy stage of an intercepted call; see fg_intercept.h. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_intercept.h"
#include "fg_policy_eval.h"
#include "fg_units.h"

__attribute__((format(printf, 3, 4)))
static int fail(struct fg_intercept_err *err, int status, const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return status == FG_GRPC_INTERNAL ? FG_ENOMEM : FG_EINVAL;
}

/*
 * The one value of header <name>, or NULL when it is absent or repeated
 * with different values: a client that sends its own band header ahead of
 * the one the platform's gateway adds must not pick which one counts, so a
 * conflict reads as malformed (the unknown band).
 */
static const char *single_value(const struct fg_hdrs *h, const char *name, size_t *len)
{
	const char *v = NULL;
	size_t i, n = strlen(name);

	for (i = 0; i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		if (e->name_len != n || memcmp(h->buf + e->name_off, name, n) != 0)
			continue;
		if (v && (e->value_len != *len || memcmp(h->buf + e->value_off, v, *len) != 0))
			return NULL;
		v = h->buf + e->value_off;
		*len = e->value_len;
	}
	return v;
}

/* The pseudonymous key of user id <v>: the raw id never leaves this function. */
static void set_user(struct fg_intercept *ic, const char *v, size_t len)
{
	if (!ic->env->keys || len == 0 ||
	    fg_keyring_pseudonym(ic->env->keys, 0, v, len, ic->user, sizeof(ic->user)) < 0)
		ic->user[0] = '\0';
}

static void decide_band(struct fg_intercept *ic, const char *v, size_t len)
{
	ic->band = fg_policy_band(ic->pol, v, len);
	ic->band_known = 1;
	fg_policy_count_call(ic->pol, ic->m, ic->band, ic->env->slot);
}

/* Band and user from headers, where the policy says so. */
static void read_header_sources(struct fg_intercept *ic, const struct fg_hdrs *h)
{
	const char *v;
	size_t len = 0;

	if (ic->m->user_id.kind == FG_POLICY_SRC_HEADER) {
		v = single_value(h, ic->m->user_id.header, &len);
		set_user(ic, v, v ? len : 0);
	}
	if (ic->m->age_band.kind == FG_POLICY_SRC_HEADER) {
		v = single_value(h, ic->m->age_band.header, &len);
		decide_band(ic, v, v ? len : 0);
	}
}

/* Band and user from the first request message, where the policy says so.
 * A field that cannot be read counts as absent: the unknown band, which is
 * the most protective unless the policy chose otherwise. */
static void read_field_sources(struct fg_intercept *ic, const uint8_t *msg, size_t len)
{
	char buf[FG_POLICY_VALUE_MAX];
	int n;

	if (ic->m->user_id.kind == FG_POLICY_SRC_FIELD) {
		n = msg ? fg_policy_read_field(&ic->m->user_id, msg, len, buf, sizeof(buf)) : 0;
		set_user(ic, buf, n > 0 ? (size_t)n : 0);
		memset(buf, 0, sizeof(buf));
	}
	if (!ic->band_known) {
		n = msg ? fg_policy_read_field(&ic->m->age_band, msg, len, buf, sizeof(buf)) : 0;
		decide_band(ic, buf, n > 0 ? (size_t)n : 0);
	}
}

/* A zeroed stage, from the env's spares (their message buffers kept) or new. */
static struct fg_intercept *stage_new(struct fg_intercept_env *env, size_t max_message)
{
	struct fg_intercept *ic = env->spare;
	struct fg_grpcframe_reader req, resp;

	if (!ic) {
		if ((ic = calloc(1, sizeof(*ic))) == NULL)
			return NULL;
		fg_grpcframe_reader_init(&ic->req, max_message);
		fg_grpcframe_reader_init(&ic->resp, max_message);
		return ic;
	}
	env->spare = ic->next_spare;
	env->nspare--;
	req = ic->req;
	resp = ic->resp;
	memset(ic, 0, sizeof(*ic));
	ic->req = req;
	ic->resp = resp;
	ic->req.max_message = ic->resp.max_message = max_message;
	return ic;
}

int fg_intercept_begin(struct fg_intercept **out, struct fg_config *cfg, struct fg_intercept_env *env,
                       const char *path, size_t len, const struct fg_hdrs *h, struct fg_intercept_err *err)
{
	const struct fg_policy_method *m;
	struct fg_intercept *ic;
	enum fg_grpcframe_enc enc = FG_GRPCFRAME_IDENTITY;
	const char *v;
	size_t vlen;

	*out = NULL;
	if (!cfg->policy || !(m = fg_policy_find_method(cfg->policy, path, len)))
		return 0;
	/* A message feedguard cannot read must never pass unedited; a
	 * repeated grpc-encoding could be read one way here and another way
	 * upstream, so it is unreadable too. */
	v = single_value(h, "grpc-encoding", &vlen);
	if ((!v && fg_hdrs_find(h, "grpc-encoding", &vlen)) || (v && fg_grpcframe_encoding_parse(v, vlen, &enc) < 0))
		return fail(err, FG_GRPC_UNIMPLEMENTED, "grpc-encoding '%.*s' is not supported by feedguard "
		            "(it reads one of identity, gzip and deflate)", v ? (int)(vlen > 64 ? 64 : vlen) : 8,
		            v ? v : "repeated");
	if ((ic = stage_new(env, cfg->limits.max_message_size)) == NULL)
		return fail(err, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	ic->cfg = fg_config_ref(cfg);
	ic->pol = cfg->policy;
	ic->m = m;
	ic->env = env;
	ic->req_enc = enc;
	read_header_sources(ic, h);
	/* A band known from the headers for which the policy edits nothing, in
	 * either direction: the call is counted and then passes through as if
	 * the method were not intercepted (no framing, no copies).  Its user
	 * key is not needed by anything yet; the screen-time stage will. */
	if (ic->band_known && !ic->m->request[ic->band].prog &&
	    !ic->m->response[ic->band].prog && !ic->m->request[ic->band].nremove_headers) {
		fg_intercept_free(ic);
		return 0;
	}
	*out = ic;
	return 0;
}

int fg_intercept_ready(const struct fg_intercept *ic)
{
	return ic->band_known && ic->m->user_id.kind != FG_POLICY_SRC_FIELD ? 1 : ic->req_messages > 0;
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
static int copy_kept(const struct fg_intercept *ic, const struct fg_hdrs *in, struct fg_hdrs *out, int plumbing)
{
	const struct fg_policy_edit *e = &ic->m->request[ic->band];
	size_t i;

	fg_hdrs_reset(out);
	for (i = 0; i < in->n; i++) {
		const struct fg_hdrs_entry *h = &in->ent[i];
		if (header_removed(e, in->buf + h->name_off, h->name_len, plumbing))
			continue;
		if (fg_hdrs_add(out, (const uint8_t *)in->buf + h->name_off, h->name_len,
		                (const uint8_t *)in->buf + h->value_off, h->value_len, h->flags) < 0)
			return FG_ENOMEM;
	}
	return 0;
}

int fg_intercept_headers(const struct fg_intercept *ic, const struct fg_hdrs *in, struct fg_hdrs *out)
{
	char accept[64] = "identity";
	const char *v;
	size_t len;
	unsigned mask;

	if (copy_kept(ic, in, out, 1) < 0)
		return FG_ENOMEM;
	/* What both the client and feedguard read: an unedited response goes
	 * to the client compressed as the upstream chose, so the upstream may
	 * choose only among the client's codings; and feedguard must be able
	 * to read it to edit it. */
	v = fg_hdrs_find(in, "grpc-accept-encoding", &len);
	mask = v ? fg_grpcframe_accept_parse(v, len) : 0;
	if (mask & FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_DEFLATE))
		strcat(accept, ",deflate");
	if (mask & FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_GZIP))
		strcat(accept, ",gzip");
	return fg_hdrs_add(out, (const uint8_t *)"grpc-accept-encoding", 20, (const uint8_t *)accept,
	                   strlen(accept), 0);
}

int fg_intercept_trailers(const struct fg_intercept *ic, const struct fg_hdrs *in, struct fg_hdrs *out)
{
	return copy_kept(ic, in, out, 0);
}

static int frame_error(struct fg_intercept_err *err, int rc, const char *side, const char *why,
                       uint64_t max, int bad_status)
{
	char size[32];

	if (rc == FG_ETOOBIG)
		return fail(err, FG_GRPC_RESOURCE_EXHAUSTED, "%s message larger than limits.max_message_size (%s)",
		            side, fg_units_format_size(max, size, sizeof(size)));
	if (rc == FG_ENOMEM)
		return fail(err, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	return fail(err, bad_status, "%s message: %s", side, why ? why : "malformed");
}

/* Append one message with its 5-byte prefix to <out>. */
static int append_framed(struct fg_bufq *out, enum fg_grpcframe_flag flag, const uint8_t *data, size_t len,
                         struct fg_intercept_err *err)
{
	uint8_t prefix[FG_GRPC_PREFIX_LEN];

	fg_grpcframe_write_prefix(prefix, flag, (uint32_t)len);
	if (fg_bufq_append(out, prefix, sizeof(prefix)) < 0 || fg_bufq_append(out, data, len) < 0)
		return fail(err, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	return 0;
}

/* Edit one complete message and append it, framed, to <out>: the original
 * bytes when nothing changed, the edited bytes with flag 0 otherwise. */
static int handle_message(struct fg_intercept *ic, const struct fg_grpcframe_msg *msg, enum fg_grpcframe_enc enc,
                          int is_request, struct fg_bufq *out, struct fg_intercept_err *err)
{
	const char *side = is_request ? "request" : "response";
	int bad = is_request ? FG_GRPC_INVALID_ARGUMENT : FG_GRPC_INTERNAL;
	uint64_t max = ic->cfg->limits.max_message_size;
	const struct fg_policy_edit *e;
	const uint8_t *plain = msg->data;
	size_t plain_len = msg->len;
	const char *why = NULL;
	int rc, changed = 0;

	if (msg->flag == FG_GRPCFRAME_COMPRESSED) {
		if (enc == FG_GRPCFRAME_IDENTITY)
			return fail(err, bad, "%s message is compressed but the call has no grpc-encoding", side);
		ic->env->plain.len = 0;
		rc = fg_grpcframe_inflate(ic->env->zctx, enc, msg->data, msg->len, max, &ic->env->plain, &why);
		if (rc < 0)
			return frame_error(err, rc, side, why, max, bad);
		plain = ic->env->plain.data;
		plain_len = ic->env->plain.len;
	}
	/* The band and user may come from the first request message itself. */
	if (is_request && ic->req_messages++ == 0)
		read_field_sources(ic, plain, plain_len);
	e = is_request ? &ic->m->request[ic->band] : &ic->m->response[ic->band];
	/* Nothing to edit for this band: the message goes on as it came,
	 * without a copy through the scratch buffer. */
	if (!e->prog)
		return append_framed(out, msg->flag, msg->data, msg->len, err);
	ic->env->edited.len = 0;
	rc = fg_policy_edit(ic->pol, e, ic->band, ic->env->slot, plain, plain_len, &ic->env->edited, &changed, &why);
	if (rc == FG_ENOMEM)
		return frame_error(err, rc, side, why, max, bad);
	if (rc < 0)
		return fail(err, bad, "%s message is not valid protobuf for %s: %s", side, ic->m->path,
		            why ? why : "malformed");
	if (!changed)
		return append_framed(out, msg->flag, msg->data, msg->len, err);
	return append_framed(out, FG_GRPCFRAME_UNCOMPRESSED, ic->env->edited.data, ic->env->edited.len, err);
}

/* Feed <len> bytes, stopping after a message once <out> holds more than
 * <limit> bytes: a compressed message may inflate a thousandfold, so the
 * caller keeps the rest (and its flow-control window) until <out> drains. */
static int feed(struct fg_intercept *ic, struct fg_grpcframe_reader *r, const uint8_t *data, size_t len,
                enum fg_grpcframe_enc enc, int is_request, struct fg_bufq *out, size_t limit,
                size_t *taken, struct fg_intercept_err *err)
{
	int bad = is_request ? FG_GRPC_INVALID_ARGUMENT : FG_GRPC_INTERNAL;
	struct fg_grpcframe_msg msg;
	const char *why = NULL;
	size_t used;
	int rc;

	*taken = 0;
	while (len > 0 && fg_bufq_len(out) <= limit) {
		rc = fg_grpcframe_reader_feed(r, data, len, &used, &msg, &why);
		if (rc < 0)
			return frame_error(err, rc, is_request ? "request" : "response", why,
			                   ic->cfg->limits.max_message_size, bad);
		data += used;
		len -= used;
		*taken += used;
		if (rc == FG_GRPCFRAME_MESSAGE && (rc = handle_message(ic, &msg, enc, is_request, out, err)) < 0)
			return rc;
	}
	return 0;
}

int fg_intercept_request(struct fg_intercept *ic, const uint8_t *data, size_t len, struct fg_bufq *out,
                         size_t limit, size_t *taken, struct fg_intercept_err *err)
{
	return feed(ic, &ic->req, data, len, ic->req_enc, 1, out, limit, taken, err);
}

int fg_intercept_request_end(struct fg_intercept *ic, struct fg_intercept_err *err)
{
	if (fg_grpcframe_reader_pending(&ic->req))
		return fail(err, FG_GRPC_INVALID_ARGUMENT, "the request ended in the middle of a message");
	if (ic->req_messages == 0)
		read_field_sources(ic, NULL, 0);
	return 0;
}

int fg_intercept_response_headers(struct fg_intercept *ic, const struct fg_hdrs *h, struct fg_intercept_err *err)
{
	const char *v;
	size_t len;

	ic->resp_enc = FG_GRPCFRAME_IDENTITY;
	v = fg_hdrs_find(h, "grpc-encoding", &len);
	if (v && fg_grpcframe_encoding_parse(v, len, &ic->resp_enc) < 0)
		return fail(err, FG_GRPC_INTERNAL, "the upstream answered with grpc-encoding '%.*s', which "
		            "feedguard cannot read", (int)(len > 64 ? 64 : len), v);
	return 0;
}

int fg_intercept_response(struct fg_intercept *ic, const uint8_t *data, size_t len, struct fg_bufq *out,
                          size_t limit, size_t *taken, struct fg_intercept_err *err)
{
	return feed(ic, &ic->resp, data, len, ic->resp_enc, 0, out, limit, taken, err);
}

int fg_intercept_response_end(struct fg_intercept *ic, struct fg_intercept_err *err)
{
	if (fg_grpcframe_reader_pending(&ic->resp))
		return fail(err, FG_GRPC_INTERNAL, "the upstream response ended in the middle of a message");
	return 0;
}

int fg_intercept_streaming_response(const struct fg_intercept *ic)
{
	return ic->m->server_streaming != 0;
}

static void stage_destroy(struct fg_intercept *ic)
{
	fg_grpcframe_reader_free(&ic->req);
	fg_grpcframe_reader_free(&ic->resp);
	free(ic);
}

void fg_intercept_free(struct fg_intercept *ic)
{
	struct fg_intercept_env *env;

	if (!ic)
		return;
	env = ic->env;
	fg_config_unref(ic->cfg);
	ic->cfg = NULL;
	/* The user key goes now, not when the stage is next used (cleanse: a
	 * plain memset before free may be optimised away).  Message buffers
	 * are reused as they are, like every body buffer of the daemon: a raw
	 * id in them lives in this process's memory only until overwritten,
	 * is never written anywhere, and wiping 10-60 KiB per call would cost
	 * more than the whole edit. */
	OPENSSL_cleanse(ic->user, sizeof(ic->user));
	if (env->nspare >= FG_INTERCEPT_SPARE_MAX) {
		stage_destroy(ic);
		return;
	}
	/* a partial message is forgotten; a buffer grown past the keep size goes */
	fg_grpcframe_reader_reset(&ic->req);
	fg_grpcframe_reader_reset(&ic->resp);
	ic->next_spare = env->spare;
	env->spare = ic;
	env->nspare++;
}

void fg_intercept_env_release(struct fg_intercept_env *env)
{
	struct fg_intercept *ic;

	while ((ic = env->spare) != NULL) {
		env->spare = ic->next_spare;
		stage_destroy(ic);
	}
	env->nspare = 0;
	fg_keyring_ctx_free(env->keys);
	env->keys = NULL;
	fg_grpcframe_zctx_free(env->zctx);
	env->zctx = NULL;
	fg_grpcframe_buf_free(&env->plain);
	fg_pbwire_buf_free(&env->edited);
}
