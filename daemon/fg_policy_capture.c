/*
 * fg_policy_capture.c - a method's key "capture_redact": what a capture
 * (fg_stage_capture.c) removes from every band's captured messages, on top
 * of what the band's own rules stripped.
 *
 * The value maps "request" and "response" to a rule block without bands
 * (keep_only, remove, coarsen).  A side it leaves out (or the whole key
 * left out) gets the policy's first band's rules for that side (the most
 * protective), so an adult's captured call loses the signals a child's
 * never carried.  Either way the method's user id field carries the
 * capture pseudonym (a string field) or is removed (an integer): a
 * capture never holds a raw id.
 */
#include "config.h"

#include <string.h>

#include "fg_policy_compile-internal.h"

/* The keys of capture_redact: the strip rules that edit fields.
 * pseudonymize is the user id's alone, and headers are recorded only by
 * name (capture.metadata), so neither has a place here. */
static const struct fg_policy_key *const redact_keys[] = {
	&fg_policy_strip_keep_only_key,
	&fg_policy_strip_remove_key,
	&fg_policy_strip_coarsen_key,
};

/* The default's keys: everything a request rule block may say; the
 * pseudonymized fields become capture pseudonyms like the user id, and
 * remove_headers leaves nothing to do (its result is not used). */
static const struct fg_policy_key *const default_keys[] = {
	&fg_policy_strip_keep_only_key,
	&fg_policy_strip_remove_key,
	&fg_policy_strip_coarsen_key,
	&fg_policy_strip_pseudonymize_key,
	&fg_policy_strip_headers_key,
};

/* A block of the method's <dir> list ("request", "response") that applies
 * to band 0, or NULL. */
static int first_band_block(struct fg_policy_comp *c, const struct fg_policy_scope *s, const char *dir,
                            const struct fg_yaml_node **out)
{
	const struct fg_yaml_node *v = fg_yaml_map_get(s->map, dir), *list;
	unsigned char sel[FG_POLICY_MAX_BANDS];
	size_t i;
	int rc;

	*out = NULL;
	if (!v)
		return 0;
	/* The direction's key compiled first: the list and its bands are valid. */
	if ((rc = fg_policy_compile_rule_list(c, v, dir, &list)))
		return rc;
	for (i = 0; i < list->nkids && !*out; i++) {
		memset(sel, 0, sizeof(sel));
		if ((rc = fg_policy_blocks_read_bands(c, list->kids[i], fg_yaml_map_get(list->kids[i], "bands"), sel)))
			return rc;
		if (sel[0])
			*out = list->kids[i];
	}
	return 0;
}

/* 1 when <block>'s pseudonymize list names the text <path>. */
static int pseudonymizes(const struct fg_yaml_node *block, const char *path)
{
	const struct fg_yaml_node *p = block ? fg_yaml_map_get(block, "pseudonymize") : NULL;
	size_t i;

	for (i = 0; p && p->kind == FG_YAML_SEQ && i < p->nkids; i++)
		if (p->kids[i]->kind == FG_YAML_SCALAR && strcmp(p->kids[i]->text, path) == 0)
			return 1;
	return 0;
}

/* The user id field: the capture pseudonym in its place (a string), or
 * removed (an integer cannot hold one). */
static int redact_user_id(struct fg_policy_comp *c, const struct fg_policy_scope *s, struct fg_policy_block *b,
                          const struct fg_yaml_node *block)
{
	const struct fg_yaml_node *src = fg_yaml_map_get(s->map, "user_id");
	const struct fg_yaml_node *field = src && src->kind == FG_YAML_MAP ? fg_yaml_map_get(src, "field") : NULL;
	const struct fg_policy_source *u = &s->method->user_id;
	int allow_only;

	if (u->kind != FG_POLICY_SRC_FIELD || !field || pseudonymizes(block, field->text))
		return 0;
	if (!b->strip && !(b->strip = fg_policy_prog_new(c, b->type, 0)))
		return fg_policy_compile_nomem(c);
	allow_only = b->strip->msg.allow_only;
	if (u->value == FG_POLICY_V_STRING) {
		b->edit.need_user = 1;
		return fg_policy_prog_apply(c, b->strip, field, FG_POLICY_PROG_PSEUDONYMIZE, 0, allow_only);
	}
	return fg_policy_prog_apply(c, b->strip, field, FG_POLICY_PROG_ERASE, 0, allow_only);
}

/* 1 when <block>'s list <key> names the text <path>. */
static int block_lists(const struct fg_yaml_node *block, const char *key, const char *path)
{
	const struct fg_yaml_node *p = block ? fg_yaml_map_get(block, key) : NULL;
	size_t i;

	for (i = 0; p && p->kind == FG_YAML_SEQ && i < p->nkids; i++)
		if (p->kids[i]->kind == FG_YAML_SCALAR && strcmp(p->kids[i]->text, path) == 0)
			return 1;
	return 0;
}

#define MAX_PSEUDONYMIZED 64

/*
 * Every field some band's request rules pseudonymize holds, as forwarded,
 * the user's state pseudonym (the Redis key's, the ranker's): in a
 * capture it becomes the capture pseudonym too, whatever <used> (the
 * redaction block) says, unless <used> removes it.  Else a capture could
 * be joined with the state and with what the ranker saw.
 */
static int pseudonymize_everywhere(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                                   struct fg_policy_block *b, const struct fg_yaml_node *used)
{
	const struct fg_yaml_node *req = fg_yaml_map_get(s->map, "request"), *list, *src, *uf;
	const char *done[MAX_PSEUDONYMIZED];
	size_t ndone = 0, i, j, k;
	int rc;

	if (!req || (rc = fg_policy_compile_rule_list(c, req, "request", &list)))
		return req ? rc : 0;
	src = fg_yaml_map_get(s->map, "user_id");
	uf = src && src->kind == FG_YAML_MAP ? fg_yaml_map_get(src, "field") : NULL;
	for (i = 0; i < list->nkids; i++) {
		const struct fg_yaml_node *p = fg_yaml_map_get(list->kids[i], "pseudonymize");
		for (j = 0; p && p->kind == FG_YAML_SEQ && j < p->nkids; j++) {
			const struct fg_yaml_node *at = p->kids[j];
			int seen = (uf && strcmp(uf->text, at->text) == 0) || block_lists(used, "pseudonymize", at->text) ||
			           block_lists(used, "remove", at->text);
			for (k = 0; !seen && k < ndone; k++)
				seen = strcmp(done[k], at->text) == 0;
			if (seen || ndone == MAX_PSEUDONYMIZED)
				continue;
			done[ndone++] = at->text;
			if (!b->strip && !(b->strip = fg_policy_prog_new(c, b->type, 0)))
				return fg_policy_compile_nomem(c);
			if ((rc = fg_policy_prog_apply(c, b->strip, at, FG_POLICY_PROG_PSEUDONYMIZE, 0,
			                               b->strip->msg.allow_only)))
				return rc;
			b->edit.need_user = 1;
		}
	}
	return 0;
}

/* One side: <val> (a block written under capture_redact), or NULL for the
 * first band's block of that side; into <e>. */
static int compile_side(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *val,
                        unsigned dir, struct fg_policy_edit *e)
{
	int request = dir == FG_POLICY_KEY_REQUEST;
	struct fg_policy_block b = { .type = request ? s->in : s->out };
	struct fg_policy_scope bs = *s;
	const struct fg_yaml_node *block = val;
	const struct fg_policy_key *const *keys = redact_keys;
	size_t nkeys = FG_POLICY_NELEM(redact_keys);
	int rc;

	if (!val) {
		if ((rc = first_band_block(c, s, request ? "request" : "response", &block)))
			return rc;
		keys = default_keys;
		nkeys = FG_POLICY_NELEM(default_keys);
	} else if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_MAP, "a rule block without bands")) ||
	           (rc = fg_policy_compile_keys_check(c, val, redact_keys, FG_POLICY_NELEM(redact_keys), dir,
	                                              request ? "capture_redact.request"
	                                                      : "capture_redact.response"))) {
		return rc;
	}
	c->unlisted = UINT32_MAX;
	bs.map = block;
	bs.block = &b;
	rc = block ? fg_policy_compile_keys_run(c, &bs, keys, nkeys, dir) : 0;
	if (rc == 0 && request)
		rc = redact_user_id(c, s, &b, block);
	if (rc == 0 && request)
		rc = pseudonymize_everywhere(c, s, &b, block);
	if (rc)
		return rc;
	if (b.strip) {
		fg_policy_prog_freeze(b.strip);
		if (b.strip->msg.nrules > 0 || b.strip->msg.allow_only)
			e->prog = &b.strip->msg;
	}
	e->need_user = b.edit.need_user;
	return 0;
}

static const char *const side_keys[] = { "request", "response", NULL };

static int compile_redact(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                          const struct fg_yaml_node *val)
{
	const char *dir = c->dir;
	int rc;

	if (val && ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_MAP, "capture_redact ({request: {...}, "
	                                                                     "response: {...}})")) ||
	            (rc = fg_policy_compile_check_record(c, val, side_keys, "capture_redact"))))
		return rc;
	/* a capture's redaction is not traffic's: the stripped-fields metric
	 * does not count it */
	c->no_stats = 1;
	c->dir = "capture.request";
	rc = compile_side(c, s, val ? fg_yaml_map_get(val, "request") : NULL, FG_POLICY_KEY_REQUEST,
	                  &s->method->capture_request);
	c->dir = "capture.response";
	if (rc == 0)
		rc = compile_side(c, s, val ? fg_yaml_map_get(val, "response") : NULL, FG_POLICY_KEY_RESPONSE,
		                  &s->method->capture_response);
	s->method->capture_response_default = !val || !fg_yaml_map_get(val, "response");
	c->dir = dir;
	c->no_stats = 0;
	return rc;
}

const struct fg_policy_key fg_policy_capture_redact_key = { "capture_redact", FG_POLICY_KEY_ALWAYS,
	                                                    compile_redact };

const struct fg_policy_mount fg_policy_capture_mounts[] = {
	{ .path = "methods.<method>.capture_redact", .record = side_keys },
	{ .path = "methods.<method>.capture_redact.<direction>", .level = redact_keys,
	  .nlevel = FG_POLICY_NELEM(redact_keys) },
	{ .path = NULL },
};
