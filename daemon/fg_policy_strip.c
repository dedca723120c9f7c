/*
 * fg_policy_strip.c - the strip rules of a rule block: "keep_only" (an
 * allow-list of field paths), "remove" (field paths and map keys),
 * "coarsen" (numeric fields rounded to a precision) and, in request blocks,
 * "pseudonymize" (string fields replaced by the call's pseudonymous user
 * key) and "remove_headers" (request metadata).  The field rules build the
 * block's wire-editing program (fg_policy_prog.c).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_compile-internal.h"

static const char *const coarsen_keys[] = { "field", "precision", NULL };

/* The block's program, made by the first rule that needs it: an
 * allow-list (<allow_only> 1) when keep_only makes it. */
static struct fg_policy_prog_node *strip_root(struct fg_policy_comp *c, struct fg_policy_block *b,
                                              int allow_only)
{
	if (!b->strip)
		b->strip = fg_policy_prog_new(c, b->type, allow_only);
	return b->strip;
}

/* Each path of list <list> (key <what>) applied to <root> as <action>. */
static int read_paths(struct fg_policy_comp *c, struct fg_policy_prog_node *root,
                      const struct fg_yaml_node *list, enum fg_policy_prog_action action, const char *what,
                      int allow_only)
{
	size_t i;
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, what)))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = fg_policy_prog_apply(c, root, list->kids[i], action, 0, allow_only)))
			return rc;
	return 0;
}

/* Fields it does not list are dropped, at every level it names, and
 * counted under one name. */
static int compile_keep_only(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                             const struct fg_yaml_node *val)
{
	struct fg_policy_prog_node *root = strip_root(c, s->block, 1);
	int rc;

	if (!root)
		return fg_policy_compile_nomem(c);
	if ((rc = fg_policy_prog_stat(c, "(not in keep_only)", &root->msg.unlisted_stat)))
		return rc == FG_ENOMEM ? fg_policy_compile_nomem(c)
		                       : fg_policy_compile_fail(c, val, "too many field paths in one policy");
	c->unlisted = root->msg.unlisted_stat;
	return read_paths(c, root, val, FG_POLICY_PROG_KEEP, "keep_only", 1);
}

static int compile_remove(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                          const struct fg_yaml_node *val)
{
	struct fg_policy_prog_node *root = strip_root(c, s->block, 0);

	if (!root)
		return fg_policy_compile_nomem(c);
	return read_paths(c, root, val, FG_POLICY_PROG_DROP, "remove", 0);
}

static int read_precision(struct fg_policy_comp *c, const struct fg_yaml_node *n, double *out)
{
	char *end;

	if (n->kind != FG_YAML_SCALAR)
		return fg_policy_compile_fail(c, n, "precision must be a number");
	errno = 0;
	*out = strtod(n->text, &end);
	if (errno || end == n->text || *end || !(*out > 0) || *out > 1e18)
		return fg_policy_compile_fail(c, n, "precision must be a number above 0 "
		                                    "(the value becomes a multiple of it)");
	return 0;
}

/* A list of {field, precision}. */
static int compile_coarsen(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *list)
{
	struct fg_policy_prog_node *root = strip_root(c, s->block, 0);
	const struct fg_yaml_node *f, *p;
	double precision = 0;
	size_t i;
	int rc;

	if (!root)
		return fg_policy_compile_nomem(c);
	if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, "coarsen")))
		return rc;
	for (i = 0; i < list->nkids; i++) {
		const struct fg_yaml_node *item = list->kids[i];
		if ((rc = fg_policy_compile_want_kind(c, item, FG_YAML_MAP, "a coarsen entry")) ||
		    (rc = fg_policy_compile_check_record(c, item, coarsen_keys, "a coarsen entry")))
			return rc;
		f = fg_yaml_map_get(item, "field");
		p = fg_yaml_map_get(item, "precision");
		if (!f || !p)
			return fg_policy_compile_fail(c, item, "a coarsen entry needs 'field' and 'precision'");
		/* Under keep_only the path is an allow-list entry too. */
		if ((rc = read_precision(c, p, &precision)) ||
		    (rc = fg_policy_prog_apply(c, root, f, FG_POLICY_PROG_COARSEN, precision, root->msg.allow_only)))
			return rc;
	}
	return 0;
}

/* Where the policy first needs pseudonym_keys, for the config's check
 * (fg_config_policy.c), which knows whether it has them. */
static int note_need_keys(struct fg_policy_comp *c, const struct fg_yaml_node *at)
{
	char where[512];

	if (c->pol->need_keys_at)
		return 0;
	snprintf(where, sizeof(where), "%s:%u:%u", c->name, at->line, at->col);
	c->pol->need_keys_at = fg_policy_compile_strndup(c, where, strlen(where));
	return c->pol->need_keys_at ? 0 : fg_policy_compile_nomem(c);
}

/* String fields the ranker gets as the call's pseudonymous user key (an
 * HMAC of the method's user_id, fg_stage_identify.c) instead of what the
 * client sent: the ranker can still tell a child's calls apart, but cannot
 * join them with anything keyed by the raw id.  Under keep_only they are
 * kept. */
static int compile_pseudonymize(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                                const struct fg_yaml_node *list)
{
	struct fg_policy_prog_node *root = strip_root(c, s->block, 0);
	char buf[FG_YAML_SHOWLEN];
	size_t i;
	int rc;

	if (!root)
		return fg_policy_compile_nomem(c);
	if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, "pseudonymize")))
		return rc;
	if (s->method->user_id.kind == FG_POLICY_SRC_NONE)
		return fg_policy_compile_fail(c, list, "pseudonymize needs the method's user_id (%s has none): "
		                              "the pseudonym is computed from it",
		                              fg_yaml_show(s->method_key, buf, sizeof(buf)));
	for (i = 0; i < list->nkids; i++)
		if ((rc = fg_policy_prog_apply(c, root, list->kids[i], FG_POLICY_PROG_PSEUDONYMIZE, 0,
		                               root->msg.allow_only)))
			return rc;
	s->block->edit.need_user = list->nkids > 0;
	return list->nkids > 0 ? note_need_keys(c, list) : 0;
}

/* Request metadata names, kept lowercase as HTTP/2 sends them (RFC 9113
 * section 8.2.1); pseudo-headers are the call itself. */
static int compile_headers(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *list)
{
	struct fg_policy_edit *e = &s->block->edit;
	size_t i;
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, "remove_headers")))
		return rc;
	e->remove_headers = fg_policy_compile_alloc(c, (list->nkids ? list->nkids : 1) * sizeof(char *));
	if (!e->remove_headers)
		return fg_policy_compile_nomem(c);
	for (i = 0; i < list->nkids; i++) {
		const struct fg_yaml_node *h = list->kids[i];
		if ((rc = fg_policy_compile_header_name(c, h, "a header name", &e->remove_headers[i])))
			return rc;
		if (h->text[0] == ':')
			return fg_policy_compile_fail(c, h, "pseudo-headers (%s) cannot be removed", h->text);
		e->nremove_headers++;
	}
	return 0;
}

const struct fg_policy_key fg_policy_strip_keep_only_key = { "keep_only", 0, compile_keep_only };
const struct fg_policy_key fg_policy_strip_remove_key = { "remove", 0, compile_remove };
const struct fg_policy_key fg_policy_strip_coarsen_key = { "coarsen", 0, compile_coarsen };
const struct fg_policy_key fg_policy_strip_pseudonymize_key = {
	"pseudonymize", FG_POLICY_KEY_REQUEST, compile_pseudonymize,
};
const struct fg_policy_key fg_policy_strip_headers_key = {
	"remove_headers", FG_POLICY_KEY_REQUEST, compile_headers,
};

/* coarsen entries, in rule blocks and in capture_redact's sides. */
const struct fg_policy_mount fg_policy_strip_mounts[] = {
	{ .path = "methods.<method>.<direction>[].coarsen[]", .record = coarsen_keys },
	{ .path = "methods.<method>.capture_redact.<direction>.coarsen[]", .record = coarsen_keys },
	{ .path = NULL },
};
