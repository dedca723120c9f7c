/*
 * fg_policy_blocks.c - a method's keys "request" and "response": lists of
 * rule blocks (written in place, or the name of a rule set), each naming
 * the bands it applies to ("bands") and the rules that edit one direction
 * of the call for them.  The rules come from the table of a rule block's
 * keys below, one file per kind of rule.
 */
#include "config.h"

#include <string.h>

#include "fg_policy_compile-internal.h"

static const struct fg_policy_key block_bands_key;

/* A rule block's keys, in the order they compile: the bands it applies to,
 * then the strip rules (keep_only first: it makes the allow-list the
 * others refine). */
static const struct fg_policy_key *const block_keys[] = {
	&block_bands_key,
	&fg_policy_strip_keep_only_key,
	&fg_policy_strip_remove_key,
	&fg_policy_strip_coarsen_key,
	&fg_policy_strip_pseudonymize_key,
	&fg_policy_strip_headers_key,
};

_Static_assert(FG_POLICY_NELEM(block_keys) <= FG_POLICY_LEVEL_MAX_KEYS, "rule block keys");

int fg_policy_blocks_read_bands(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                const struct fg_yaml_node *b, unsigned char *sel)
{
	char buf[FG_YAML_SHOWLEN];
	size_t i;
	int k, rc;

	if (!b)
		return fg_policy_compile_fail(c, map, "a rule block needs 'bands': the bands it applies to (or \"*\")");
	if (b->kind == FG_YAML_SCALAR && strcmp(b->text, "*") == 0) {
		memset(sel, 1, c->pol->nbands);
		return 0;
	}
	if ((rc = fg_policy_compile_want_kind(c, b, FG_YAML_SEQ, "bands")))
		return rc;
	for (i = 0; i < b->nkids; i++) {
		if ((rc = fg_policy_compile_want_scalar(c, b->kids[i], "a band")))
			return rc;
		if ((k = fg_policy_bands_find(c->pol, b->kids[i]->text)) < 0)
			return fg_policy_compile_fail(c, b->kids[i], "band '%s' is not declared in bands",
			                              fg_yaml_show(b->kids[i], buf, sizeof(buf)));
		sel[k] = 1;
	}
	return 0;
}

/* "bands: [a, b]" (or "*") into the block's <sel> (a flag per band). */
static int compile_block_bands(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                               const struct fg_yaml_node *b)
{
	return fg_policy_blocks_read_bands(c, s->map, b, s->block->sel);
}

static const struct fg_policy_key block_bands_key = { "bands", FG_POLICY_KEY_ALWAYS, compile_block_bands };

/* Give the compiled block <b> to each band it selects; a band has one
 * block per direction. */
static int assign_block(struct fg_policy_comp *c, const struct fg_yaml_node *block,
                        const struct fg_policy_block *b, struct fg_policy_edit *edits, unsigned char *claimed)
{
	size_t i;

	for (i = 0; i < c->pol->nbands; i++) {
		if (!b->sel[i])
			continue;
		if (claimed[i])
			return fg_policy_compile_fail(c, fg_yaml_map_get(block, "bands"),
			                              "band '%s' already has a %s rule block", c->pol->bands[i].name, c->dir);
		claimed[i] = 1;
		edits[i] = b->edit;
	}
	return 0;
}

/* Compile one rule block for message type <type> into edits[band]. */
static int read_block(struct fg_policy_comp *c, const struct fg_policy_scope *method,
                      const struct fg_yaml_node *block, const struct fg_schema_message *type,
                      struct fg_policy_edit *edits, unsigned char *claimed, unsigned dir)
{
	struct fg_policy_block b = { .type = type };
	struct fg_policy_scope s = *method;
	int rc;

	s.map = block;
	s.block = &b;
	if ((rc = fg_policy_compile_want_kind(c, block, FG_YAML_MAP, "a rule block")) ||
	    (rc = fg_policy_compile_keys_check(c, block, block_keys, FG_POLICY_NELEM(block_keys), dir,
	                                       dir == FG_POLICY_KEY_REQUEST ? "a request rule block"
	                                                                    : "a response rule block")))
		return rc;
	c->unlisted = UINT32_MAX;
	if ((rc = fg_policy_compile_keys_run(c, &s, block_keys, FG_POLICY_NELEM(block_keys), dir)))
		return rc;
	if (b.strip && b.strip->msg.allow_only &&
	    (rc = fg_policy_prog_check_required(c, b.strip, fg_yaml_map_key(block, "keep_only"))))
		return rc;
	if (b.strip) {
		fg_policy_prog_freeze(b.strip);
		if (b.strip->msg.nrules > 0 || b.strip->msg.allow_only)
			b.edit.prog = &b.strip->msg;
	}
	return assign_block(c, block, &b, edits, claimed);
}

/* The rule blocks of one direction, for message <type>: the list <val>,
 * or the rule set it names. */
static int read_direction(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                          const struct fg_yaml_node *val, const struct fg_schema_message *type,
                          struct fg_policy_edit *edits, unsigned dir)
{
	unsigned char claimed[FG_POLICY_MAX_BANDS] = { 0 };
	const struct fg_yaml_node *list;
	size_t i;
	int rc;

	c->dir = dir == FG_POLICY_KEY_REQUEST ? "request" : "response";
	if ((rc = fg_policy_compile_rule_list(c, val, c->dir, &list)))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = read_block(c, s, list->kids[i], type, edits, claimed, dir)))
			return rc;
	return 0;
}

static int compile_request(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *val)
{
	return read_direction(c, s, val, s->in, s->method->request, FG_POLICY_KEY_REQUEST);
}

static int compile_response(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                            const struct fg_yaml_node *val)
{
	return read_direction(c, s, val, s->out, s->method->response, FG_POLICY_KEY_RESPONSE);
}

const struct fg_policy_key fg_policy_blocks_request_key = { "request", 0, compile_request };
const struct fg_policy_key fg_policy_blocks_response_key = { "response", 0, compile_response };

const struct fg_policy_mount fg_policy_blocks_mounts[] = {
	{ .path = "methods.<method>.<direction>[]", .level = block_keys, .nlevel = FG_POLICY_NELEM(block_keys) },
	{ .path = NULL },
};
