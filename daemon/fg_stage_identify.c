/*
 * fg_stage_identify.c - the identify stage: the caller's age band and
 * pseudonymous user key, from request metadata or from the first request
 * message, as the policy's method entry says.
 *
 * The band is decided (and the call counted) as soon as its source is
 * read; a call whose band comes from a field waits for its first request
 * message before going upstream.  The user key is an HMAC under the
 * newest key of the ring, computed only when a later stage said it needs
 * one (need_user).  The raw id leaves this file only for a call capture
 * may record (need_capture_user), in memory until the call ends, so the
 * capture can leave out what holds a copy of it; it is never written.
 */
#include "config.h"

#include <string.h>

#include <openssl/crypto.h>

#include "fg_config.h"
#include "fg_keyring.h"
#include "fg_log.h"
#include "fg_pipeline.h"
#include "fg_policy_eval.h"
#include "fg_stage.h"

struct identify_worker {
	struct fg_keyring_ctx *keys;        /* HMAC contexts of the worker's key ring; NULL without keys */
	struct fg_keyring_ctx *capture_key; /* capture.key's; NULL without capture */
};

static void identify_worker_config(void *wstate, struct fg_config *cfg);

static int identify_worker_init(void *wstate, const struct fg_stage_worker_env *env)
{
	struct identify_worker *w = wstate;

	identify_worker_config(w, env->cfg);
	return 0;
}

static void identify_worker_free(void *wstate)
{
	struct identify_worker *w = wstate;

	fg_keyring_ctx_free(w->keys);
	w->keys = NULL;
	fg_keyring_ctx_free(w->capture_key);
	w->capture_key = NULL;
}

/* A reload may bring a new key ring: the contexts follow it.  Without
 * memory for them, calls carry no user key until the next reload. */
static void identify_worker_config(void *wstate, struct fg_config *cfg)
{
	struct identify_worker *w = wstate;

	fg_keyring_ctx_free(w->keys);
	w->keys = NULL;
	fg_keyring_ctx_free(w->capture_key);
	w->capture_key = NULL;
	if (cfg->keyring && cfg->keyring->n && !(w->keys = fg_keyring_ctx_new(cfg->keyring)))
		fg_log(FG_LOG_ERROR, "keyring_failed", "stage=identify");
	if (cfg->capture.key && !(w->capture_key = fg_keyring_ctx_new(cfg->capture.key)))
		fg_log(FG_LOG_ERROR, "keyring_failed", "stage=identify key=capture");
}

_Static_assert(FG_STAGE_USER_ID_MAX == FG_USER_ID_MAX, "fg_stage_call.capture_raw_user holds a user id");

/* The pseudonymous key of user id <v>, when some stage needs it. */
static void set_user(struct fg_stage_ctx *c, const char *v, size_t len)
{
	struct identify_worker *w = c->wstate;

	struct fg_stage_call *call = c->call;
	const struct fg_keyring *ring = call->cfg->keyring;
	size_t i;

	call->user[0] = '\0';
	call->nuser_old = 0;
	call->capture_user[0] = '\0';
	call->capture_raw_len = 0;
	/* An id too long to key anything is still kept out of a capture: a
	 * copy of it holds its first FG_USER_ID_MAX bytes. */
	if (call->need_capture_user && len > 0) {
		call->capture_raw_len = len < FG_USER_ID_MAX ? len : FG_USER_ID_MAX;
		memcpy(call->capture_raw_user, v, call->capture_raw_len);
	}
	if (len > FG_USER_ID_MAX)
		len = 0;
	/* The capture's own pseudonym, under a key apart: a capture cannot be
	 * joined with the state or with what the ranker saw. */
	if (call->need_capture_user && w->capture_key && len > 0 &&
	    fg_keyring_pseudonym(w->capture_key, 0, v, len, call->capture_user, sizeof(call->capture_user)) < 0)
		call->capture_user[0] = '\0';
	if (!call->need_user || !w->keys || len == 0 ||
	    fg_keyring_pseudonym(w->keys, 0, v, len, call->user, sizeof(call->user)) < 0) {
		call->user[0] = '\0';
		return;
	}
	/* Older keys only for a stage that reads state kept under them. */
	for (i = 1; call->need_user_all && ring && i < ring->n; i++)
		if (fg_keyring_pseudonym(w->keys, i, v, len, call->user_old[call->nuser_old],
		                         sizeof(call->user_old[0])) > 0)
			call->nuser_old++;
}

static void decide_band(struct fg_stage_call *call, const char *v, size_t len)
{
	enum fg_policy_unknown_reason why = FG_POLICY_NUNKNOWN;

	call->band = fg_policy_band(call->pol, v, len, &why);
	call->band_known = 1;
	fg_policy_count_call(call->pol, call->m, call->band, call->slot);
	if (why != FG_POLICY_NUNKNOWN)
		fg_policy_count_unknown(call->pol, call->m, why, call->slot);
}

static enum fg_stage_begin identify_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	const struct fg_policy_method *m = c->call->m;
	const char *v;
	size_t len = 0;

	if (m->age_band.kind == FG_POLICY_SRC_HEADER) {
		v = fg_hdrs_find_single(h, m->age_band.header, &len);
		decide_band(c->call, v, v ? len : 0);
	}
	if (m->age_band.kind == FG_POLICY_SRC_FIELD || m->user_id.kind == FG_POLICY_SRC_FIELD)
		c->call->need_first_message = 1;
	return FG_STAGE_RUN;
}

/* Runs after every begin and, for field sources, after the first request
 * message (or at the request's end when there was none). */
static enum fg_stage_rc identify_request_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	const struct fg_policy_method *m = c->call->m;
	const char *v;
	size_t len = 0;

	if (m->user_id.kind == FG_POLICY_SRC_HEADER) {
		v = fg_hdrs_find_single(h, m->user_id.header, &len);
		set_user(c, v, v ? len : 0);
	}
	/* A field source and no message: the value is absent, which is the
	 * unknown band (the most protective unless the policy chose otherwise). */
	if (!c->call->band_known)
		decide_band(c->call, NULL, 0);
	return FG_STAGE_CONTINUE;
}

/* Band and user from the first request message, where the policy says so.
 * A field that cannot be read counts as absent. */
static enum fg_stage_rc identify_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	const struct fg_policy_method *m = c->call->m;
	char buf[FG_POLICY_VALUE_MAX];
	int n;

	if (dir != FG_STAGE_REQUEST || msg->index != 0)
		return FG_STAGE_CONTINUE;
	if (m->user_id.kind == FG_POLICY_SRC_FIELD) {
		n = fg_policy_read_field(&m->user_id, msg->data, msg->len, buf, sizeof(buf));
		set_user(c, buf, n > 0 ? (size_t)n : 0);
		OPENSSL_cleanse(buf, sizeof(buf));
	}
	if (!c->call->band_known) {
		n = fg_policy_read_field(&m->age_band, msg->data, msg->len, buf, sizeof(buf));
		decide_band(c->call, buf, n > 0 ? (size_t)n : 0);
	}
	return FG_STAGE_CONTINUE;
}

/* The user key goes when the call does, not when the state is next used
 * (cleanse: a plain memset before reuse may be optimised away). */
static void identify_call_free(struct fg_stage_ctx *c)
{
	OPENSSL_cleanse(c->call->user, sizeof(c->call->user));
	OPENSSL_cleanse(c->call->capture_user, sizeof(c->call->capture_user));
	OPENSSL_cleanse(c->call->capture_raw_user, c->call->capture_raw_len);
	c->call->capture_raw_len = 0;
	OPENSSL_cleanse(c->call->user_old, c->call->nuser_old * sizeof(c->call->user_old[0]));
}

const struct fg_stage fg_stage_identify = {
	.name = "identify",
	.flags = FG_STAGE_F_SUPPORT,
	.worker_size = sizeof(struct identify_worker),
	.worker_init = identify_worker_init,
	.worker_free = identify_worker_free,
	.worker_config = identify_worker_config,
	.begin = identify_begin,
	.on_request_headers = identify_request_headers,
	.on_message = identify_message,
	.call_free = identify_call_free,
};
