/*
 * fg_policy_prog.c - the wire-editing program (fg_pbwire-t.h) that a
 * rule block's field paths build: each path is resolved through fg_schema
 * and merged into a tree of nodes, one per message reached, then frozen
 * into the sorted, indexed form the workers run.
 *
 * What may combine is decided here, at load, so the editor never meets a
 * contradiction: a field removed and named below, a map key on a field
 * that is not a map, a keep_only entry inside a field kept whole.
 *
 * In a keep_only block, coarsen and pseudonymize paths keep what they name
 * (an allow-list entry that also changes the value), so they may create
 * nodes where keep_only did not go; remove may only name what keep_only
 * keeps, since anything else is removed already.
 */
#include "config.h"

#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_pbwire.h"
#include "fg_policy_compile-internal.h"

/* Counters a policy may have: each is a metrics series per band. */
#define POLICY_MAX_STATS 4096

/* The members of oneof <name> of <type> into <out> (at most <max>); 0 when
 * <type> has no such oneof. */
static size_t oneof_fields(const struct fg_schema_message *type, const char *name,
                           const struct fg_schema_field **out, size_t max)
{
	const struct fg_schema_oneof *o = fg_schema_find_oneof(type, name);
	size_t i, n = o ? fg_schema_oneof_nfields(o) : 0;

	for (i = 0; i < n && i < max; i++)
		out[i] = fg_schema_oneof_field_at(o, i);
	return i;
}

/* --- nodes --------------------------------------------------------------- */

struct fg_policy_prog_node *fg_policy_prog_new(struct fg_policy_comp *c, const struct fg_schema_message *type,
                                               int allow_only)
{
	struct fg_policy_prog_node *b = fg_policy_compile_alloc(c, sizeof(*b));
	size_t cap = fg_schema_message_nfields(type);

	if (!b)
		return NULL;
	b->type = type;
	b->cap = cap ? cap : 1;
	b->rules = fg_policy_compile_alloc(c, b->cap * sizeof(*b->rules));
	if (!b->rules)
		return NULL;
	b->msg.allow_only = (uint8_t)allow_only;
	b->msg.rules = b->rules;
	b->msg.unlisted_stat = allow_only ? c->unlisted : UINT32_MAX;
	return b;
}

static struct fg_pbwire_rule *node_rule(struct fg_policy_prog_node *b, uint32_t number)
{
	size_t i;

	for (i = 0; i < b->msg.nrules; i++)
		if (b->rules[i].number == number)
			return &b->rules[i];
	return NULL;
}

static struct fg_pbwire_rule *node_add(struct fg_policy_prog_node *b, uint32_t number, uint8_t action)
{
	struct fg_pbwire_rule *r;

	if (b->msg.nrules == b->cap)
		return NULL;        /* cannot happen: one rule per field of the type */
	r = &b->rules[b->msg.nrules++];
	memset(r, 0, sizeof(*r));
	r->number = number;
	r->action = action;
	r->stat = UINT32_MAX;
	return r;
}

int fg_policy_prog_stat(struct fg_policy_comp *c, const char *path, uint32_t *stat)
{
	struct fg_policy *p = c->pol;
	char name[512];
	char **names;
	size_t i;

	if (c->no_stats) {
		*stat = UINT32_MAX;     /* past nstats: fg_pbwire counts nothing */
		return 0;
	}
	/* One counter per name: the metrics show one series per name and band. */
	snprintf(name, sizeof(name), "%s:%s", c->dir, path);
	for (i = 0; i < p->nstats; i++)
		if (strcmp(p->stat_names[i], name) == 0) {
			*stat = (uint32_t)i;
			return 0;
		}
	if (p->nstats == POLICY_MAX_STATS)
		return FG_ETOOBIG;
	if (p->nstats == c->stat_cap) {
		size_t cap = c->stat_cap ? c->stat_cap * 2 : 16;
		names = fg_policy_compile_alloc(c, cap * sizeof(*names));
		if (!names)
			return FG_ENOMEM;
		if (p->nstats)
			memcpy(names, p->stat_names, p->nstats * sizeof(*names));
		p->stat_names = names;
		c->stat_cap = cap;
	}
	p->stat_names[p->nstats] = fg_policy_compile_strndup(c, name, strlen(name));
	if (!p->stat_names[p->nstats])
		return FG_ENOMEM;
	*stat = (uint32_t)p->nstats++;
	return 0;
}

/* --- scalar kinds -------------------------------------------------------- */

static uint8_t coarsen_scalar(enum fg_schema_type t)
{
	switch (t) {
	case FG_SCHEMA_DOUBLE: return FG_PBWIRE_S_DOUBLE;
	case FG_SCHEMA_FLOAT: return FG_PBWIRE_S_FLOAT;
	case FG_SCHEMA_INT32: return FG_PBWIRE_S_INT32;
	case FG_SCHEMA_INT64: return FG_PBWIRE_S_INT64;
	case FG_SCHEMA_SINT32: return FG_PBWIRE_S_SINT32;
	case FG_SCHEMA_SINT64: return FG_PBWIRE_S_SINT64;
	case FG_SCHEMA_UINT32: return FG_PBWIRE_S_UINT32;
	case FG_SCHEMA_UINT64: return FG_PBWIRE_S_UINT64;
	case FG_SCHEMA_SFIXED32: return FG_PBWIRE_S_SFIXED32;
	case FG_SCHEMA_SFIXED64: return FG_PBWIRE_S_SFIXED64;
	case FG_SCHEMA_FIXED32: return FG_PBWIRE_S_FIXED32;
	case FG_SCHEMA_FIXED64: return FG_PBWIRE_S_FIXED64;
	default: return FG_PBWIRE_S_NONE;
	}
}

/* The least precision fg_pbwire acts on for scalar kind <s>: an integer
 * step rounds to 2 or more, a float step is at least the smallest normal. */
static double min_precision(uint8_t s)
{
	return s == FG_PBWIRE_S_DOUBLE ? DBL_MIN : s == FG_PBWIRE_S_FLOAT ? FLT_MIN : 1.5;
}

/* What fg_pbwire checks a kept value's wire type against: the field's
 * scalar kind (enum and bool are varints); none for LEN fields. */
static uint8_t keep_scalar(const struct fg_schema_field *f)
{
	if (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP)
		return FG_PBWIRE_S_NONE;
	switch (fg_schema_field_type(f)) {
	case FG_SCHEMA_ENUM: return FG_PBWIRE_S_INT32;
	case FG_SCHEMA_BOOL: return FG_PBWIRE_S_UINT64;
	default: return coarsen_scalar(fg_schema_field_type(f));
	}
}

/* --- paths --------------------------------------------------------------- */

/* Everything one path entry of a rule block says. */
struct path_req {
	const struct fg_yaml_node *at;  /* for messages */
	enum fg_policy_prog_action action;
	double precision;               /* COARSEN */
	const char *text;               /* the path as written */
};

/* The counter of rule <r>, named after the path <q> names; an error at <q>. */
static int rule_stat(struct fg_policy_comp *c, struct fg_pbwire_rule *r, const struct path_req *q)
{
	int rc = fg_policy_prog_stat(c, q->text, &r->stat);

	if (rc == 0)
		return 0;
	return rc == FG_ENOMEM ? fg_policy_compile_nomem(c)
	                       : fg_policy_compile_fail(c, q->at, "too many field paths in one policy");
}

/* The node below rule <r> (for a message-typed field), creating it. */
static struct fg_policy_prog_node *descend(struct fg_policy_comp *c, struct fg_pbwire_rule *r,
                                           const struct fg_schema_message *type, int allow_only)
{
	struct fg_policy_prog_node *sub;

	if (r->action == FG_PBWIRE_RECURSE && r->sub)
		return (struct fg_policy_prog_node *)(void *)r->sub;
	/* A field an allow-list keeps whole (KEEP) becomes RECURSE into a node
	 * that copies everything but what later paths name; a new rule gets a
	 * node of the block's kind. */
	sub = fg_policy_prog_new(c, type, r->action == FG_PBWIRE_KEEP ? 0 : allow_only);
	if (!sub)
		return NULL;
	r->action = FG_PBWIRE_RECURSE;
	r->sub = &sub->msg;
	return sub;
}

/* Actions whose path is an allow-list entry too: the field is kept
 * (changed, for coarsen and pseudonymize) whether keep_only lists it or not. */
static int keeps(enum fg_policy_prog_action a)
{
	return a == FG_POLICY_PROG_KEEP || a == FG_POLICY_PROG_COARSEN || a == FG_POLICY_PROG_PSEUDONYMIZE;
}

/* In a keep_only block, remove names what keep_only keeps: for a field
 * it does not keep, a new rule would do nothing (the field is dropped
 * already), and a node made to reach it would copy what keep_only meant
 * to drop; the writer is told which, not left to guess. */
static int check_kept(struct fg_policy_comp *c, const struct fg_policy_prog_node *node,
                      const struct fg_pbwire_rule *r, const struct fg_schema_field *f,
                      const struct path_req *q)
{
	if (r || !node->msg.allow_only || keeps(q->action))
		return 0;
	return fg_policy_compile_fail(c, q->at, "'%s': keep_only does not keep '%s', so it is removed already; "
	                              "remove may only name fields inside what keep_only keeps",
	                              q->text, fg_schema_field_name(f));
}

/* Add <key> to the DROP_KEYS set of rule <r> on a map whose key field is <kf>. */
static int add_map_key(struct fg_policy_comp *c, struct fg_pbwire_rule *r, const struct fg_schema_field *kf,
                       const struct fg_policy_path_part *pp, const struct path_req *q)
{
	struct fg_pbwire_keys *old = (struct fg_pbwire_keys *)(void *)r->keys, *k;
	int numeric = fg_schema_field_type(kf) != FG_SCHEMA_STRING;
	size_t n = old ? old->n : 0;
	char *end;

	k = fg_policy_compile_alloc(c, sizeof(*k));
	if (!k)
		return fg_policy_compile_nomem(c);
	if (numeric) {
		int64_t *num = fg_policy_compile_alloc(c, (n + 1) * sizeof(*num));
		if (!num)
			return fg_policy_compile_nomem(c);
		if (n)
			memcpy(num, old->num, n * sizeof(*num));
		errno = 0;
		num[n] = strtoll(pp->key, &end, 10);
		if (errno || *end || pp->keylen == 0)
			return fg_policy_compile_fail(c, q->at, "'%s': map key '%s' is not an integer", q->text, pp->key);
		k->num = num;
	} else {
		const char **str = fg_policy_compile_alloc(c, (n + 1) * sizeof(*str));
		size_t *len = fg_policy_compile_alloc(c, (n + 1) * sizeof(*len));
		if (!str || !len)
			return fg_policy_compile_nomem(c);
		if (n) {
			memcpy(str, old->str, n * sizeof(*str));
			memcpy(len, old->str_len, n * sizeof(*len));
		}
		if (!(str[n] = fg_policy_compile_strndup(c, pp->key, pp->keylen)))
			return fg_policy_compile_nomem(c);
		len[n] = pp->keylen;
		k->str = str;
		k->str_len = len;
	}
	k->n = n + 1;
	r->keys = k;
	return 0;
}

/* A path ending in a map key ("m[\"k\"]"): remove only, into the map's DROP_KEYS rule. */
static int apply_map_key(struct fg_policy_comp *c, struct fg_policy_prog_node *node, struct fg_pbwire_rule *r,
                         const struct fg_schema_field *f, const struct fg_policy_path_part *pp,
                         const struct path_req *q)
{
	int rc;

	if (!(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
		return fg_policy_compile_fail(c, q->at, "'%s': '%s' is not a map; [key] selects a map's entries "
		                              "(a repeated field's elements are removed or kept together)", q->text,
		                              fg_schema_field_name(f));
	if (q->action != FG_POLICY_PROG_DROP)
		return fg_policy_compile_fail(c, q->at, "'%s': [key] selects map entries, and only 'remove' takes it",
		                              q->text);
	if (r && r->action != FG_PBWIRE_DROP_KEYS)
		return fg_policy_compile_fail(c, q->at, "'%s': map '%s' already has another rule", q->text,
		                              fg_schema_field_name(f));
	if (!r && !(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_DROP_KEYS)))
		return fg_policy_compile_nomem(c);
	if (r->stat == UINT32_MAX && (rc = rule_stat(c, r, q)))
		return rc;
	return add_map_key(c, r, fg_schema_field_map_key(f), pp, q);
}

/* A second path on a field that already has rule <r>: 1 when it adds
 * nothing, 0 when it may go on, or an error. */
static int check_again(struct fg_policy_comp *c, const struct fg_pbwire_rule *r,
                       const struct fg_schema_field *f, const struct path_req *q)
{
	if (q->action == FG_POLICY_PROG_KEEP && r->action == FG_PBWIRE_KEEP)
		return 1;   /* listed twice in keep_only: harmless */
	/* An allow-listed field may still be coarsened or pseudonymized: kept,
	 * but changed. */
	if ((q->action == FG_POLICY_PROG_COARSEN || q->action == FG_POLICY_PROG_PSEUDONYMIZE) &&
	    r->action == FG_PBWIRE_KEEP)
		return 0;
	return fg_policy_compile_fail(c, q->at, "'%s': field '%s' already has a rule (%s) here", q->text,
	                              fg_schema_field_name(f),
	                              r->action == FG_PBWIRE_DROP ? "it is removed" :
	                              r->action == FG_PBWIRE_RECURSE ? "a path below it is named" :
	                              r->action == FG_PBWIRE_COARSEN ? "it is coarsened" :
	                              r->action == FG_PBWIRE_REPLACE ? "it is pseudonymized" : "another action");
}

static int apply_coarsen(struct fg_policy_comp *c, struct fg_policy_prog_node *node, struct fg_pbwire_rule *r,
                         const struct fg_schema_field *f, const struct path_req *q)
{
	enum fg_schema_type t = fg_schema_field_type(f);

	if (coarsen_scalar(t) == FG_PBWIRE_S_NONE || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
		return fg_policy_compile_fail(c, q->at, "'%s': coarsen needs a numeric field; '%s' is %s", q->text,
		                              fg_schema_field_name(f), fg_schema_type_name(t));
	if (!(q->precision >= min_precision(coarsen_scalar(t))))
		return fg_policy_compile_fail(c, q->at, "'%s': precision %g would change no %s value "
		                              "(the smallest that does is %g)", q->text, q->precision,
		                              fg_schema_type_name(t), min_precision(coarsen_scalar(t)));
	if (!r && !(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_COARSEN)))
		return fg_policy_compile_nomem(c);
	r->action = FG_PBWIRE_COARSEN;
	r->scalar = coarsen_scalar(t);
	r->precision = q->precision;
	return rule_stat(c, r, q);
}

/* A singular string or bytes field becomes the call's pseudonymous user
 * key: a repeated one would get the same key in every element, and any
 * other type cannot hold it. */
static int apply_pseudonymize(struct fg_policy_comp *c, struct fg_policy_prog_node *node, struct fg_pbwire_rule *r,
                              const struct fg_schema_field *f, const struct path_req *q)
{
	enum fg_schema_type t = fg_schema_field_type(f);

	if ((t != FG_SCHEMA_STRING && t != FG_SCHEMA_BYTES) || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
		return fg_policy_compile_fail(c, q->at, "'%s': pseudonymize needs a string or bytes field; '%s' is %s",
		                              q->text, fg_schema_field_name(f), fg_schema_type_name(t));
	if (fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED)
		return fg_policy_compile_fail(c, q->at, "'%s': pseudonymize needs a single value; '%s' is repeated",
		                              q->text, fg_schema_field_name(f));
	if (!r && !(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_REPLACE)))
		return fg_policy_compile_nomem(c);
	r->action = FG_PBWIRE_REPLACE;
	r->scalar = FG_PBWIRE_S_NONE;
	r->arg = FG_POLICY_VALUE_USER_KEY;
	return rule_stat(c, r, q);
}

/* Apply the last component of a path: the field itself. */
/* ERASE: the field goes, whatever rule it had; a field an allow-list
 * does not name is gone already. */
static int erase_leaf(struct fg_policy_comp *c, struct fg_policy_prog_node *node, struct fg_pbwire_rule *r,
                      const struct fg_schema_field *f, const struct path_req *q)
{
	if (!r && node->msg.allow_only)
		return 0;
	if (fg_schema_field_flags(f) & FG_SCHEMA_F_REQUIRED)
		return fg_policy_compile_fail(c, q->at, "'%s': field '%s' is required by the contract; "
		                              "it cannot be removed", q->text, fg_schema_field_name(f));
	if (!r && !(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_DROP)))
		return fg_policy_compile_nomem(c);
	r->action = FG_PBWIRE_DROP;
	r->scalar = FG_PBWIRE_S_NONE;
	r->sub = NULL;
	r->keys = NULL;
	return r->stat == UINT32_MAX ? rule_stat(c, r, q) : 0;
}

static int apply_leaf(struct fg_policy_comp *c, struct fg_policy_prog_node *node,
                      const struct fg_schema_field *f, const struct fg_policy_path_part *pp,
                      const struct path_req *q)
{
	struct fg_pbwire_rule *r = node_rule(node, fg_schema_field_number(f));
	int rc;

	if (q->action == FG_POLICY_PROG_ERASE)
		return erase_leaf(c, node, r, f, q);
	if ((rc = check_kept(c, node, r, f, q)))
		return rc;
	if (pp->sel == 2)
		return apply_map_key(c, node, r, f, pp, q);
	if (pp->sel == 1)
		return fg_policy_compile_fail(c, q->at, "'%s': [*] must be followed by a field of the map's value",
		                              q->text);
	if (r && (rc = check_again(c, r, f, q)))
		return rc > 0 ? 0 : rc;
	switch (q->action) {
	case FG_POLICY_PROG_KEEP:
		if (!(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_KEEP)))
			return fg_policy_compile_nomem(c);
		r->scalar = keep_scalar(f);
		return 0;
	case FG_POLICY_PROG_DROP:
		/* The receiver would reject the message (proto2 required). */
		if (fg_schema_field_flags(f) & FG_SCHEMA_F_REQUIRED)
			return fg_policy_compile_fail(c, q->at, "'%s': field '%s' is required by the contract; "
			                              "it cannot be removed", q->text, fg_schema_field_name(f));
		if (!(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_DROP)))
			return fg_policy_compile_nomem(c);
		return rule_stat(c, r, q);
	case FG_POLICY_PROG_COARSEN:
		return apply_coarsen(c, node, r, f, q);
	case FG_POLICY_PROG_PSEUDONYMIZE:
		return apply_pseudonymize(c, node, r, f, q);
	case FG_POLICY_PROG_ERASE:      /* erase_leaf() above */
		break;
	}
	return 0;
}

/* The fields a path component names: one field, or every member of a oneof. */
static int resolve_part(struct fg_policy_comp *c, const struct fg_schema_message *type,
                        const struct fg_policy_path_part *pp, const struct path_req *q,
                        const struct fg_schema_field **fields, size_t *n)
{
	const struct fg_schema_field *f = fg_schema_find_field(type, pp->name);

	if (f) {
		fields[0] = f;
		*n = 1;
		return 0;
	}
	*n = oneof_fields(type, pp->name, fields, FG_POLICY_MAX_PATH);
	if (*n > 0 && pp->sel == 0)
		return 0;
	return fg_policy_compile_fail(c, q->at, "'%s': message %s has no field '%s'", q->text,
	                              fg_schema_message_name(type), pp->name);
}

static int apply_path(struct fg_policy_comp *c, struct fg_policy_prog_node *node,
                      const struct fg_policy_path_part *parts, size_t nparts, const struct path_req *q,
                      int allow_only);

/* The node below message-typed field <f> of <node>, for a path that goes
 * on below it; creates the rule and node on first use. */
static struct fg_policy_prog_node *inner_node(struct fg_policy_comp *c, struct fg_policy_prog_node *node,
                                              const struct fg_schema_field *f, const struct path_req *q,
                                              int allow_only, int *rc)
{
	const struct fg_schema_message *type = fg_schema_field_message(f);
	struct fg_pbwire_rule *r = node_rule(node, fg_schema_field_number(f));
	struct fg_policy_prog_node *sub;

	if ((*rc = check_kept(c, node, r, f, q)))
		return NULL;
	if (r && r->action != FG_PBWIRE_KEEP && r->action != FG_PBWIRE_RECURSE) {
		*rc = fg_policy_compile_fail(c, q->at, "'%s': field '%s' is already removed or coarsened", q->text,
		                             fg_schema_field_name(f));
		return NULL;
	}
	if (r && r->action == FG_PBWIRE_KEEP && q->action == FG_POLICY_PROG_KEEP) {
		*rc = fg_policy_compile_fail(c, q->at, "'%s' is inside '%s', which keep_only already keeps whole",
		                             q->text, fg_schema_field_name(f));
		return NULL;
	}
	/* RECURSE without a node yet: descend() makes it. */
	if ((!r && !(r = node_add(node, fg_schema_field_number(f), FG_PBWIRE_RECURSE))) ||
	    !(sub = descend(c, r, type, allow_only))) {
		*rc = fg_policy_compile_nomem(c);
		return NULL;
	}
	return sub;
}

/* Walk into field <f> (named by <part>) and apply <rest> there.  A map
 * is a repeated entry message {1: key, 2: value}: "m[*].x" goes through
 * the entry into the value message.  Nodes the rest creates are of the
 * kind of the node it continues from: allow-lists inside an allow-list,
 * copy-the-rest inside a field kept whole. */
static int apply_inner(struct fg_policy_comp *c, struct fg_policy_prog_node *node,
                       const struct fg_schema_field *f, const struct fg_policy_path_part *part,
                       const struct fg_policy_path_part *rest, size_t nrest, const struct path_req *q,
                       int allow_only)
{
	int is_map = (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) != 0;
	const struct fg_schema_field *vf = is_map ? fg_schema_field_map_value(f) : NULL;
	const struct fg_pbwire_rule *r = node_rule(node, fg_schema_field_number(f));
	int kept_whole = r && r->action == FG_PBWIRE_KEEP;
	struct fg_policy_prog_node *sub;
	int rc = 0;

	/* ERASE below a field that goes whole: gone already */
	if (q->action == FG_POLICY_PROG_ERASE && ((!r && node->msg.allow_only) || (r && r->action == FG_PBWIRE_DROP)))
		return 0;

	if (is_map && part->sel != 1)
		return fg_policy_compile_fail(c, q->at, "'%s': '%s' is a map; name its values' fields as %s[*].field",
		                              q->text, fg_schema_field_name(f), fg_schema_field_name(f));
	if (!is_map && part->sel)
		return fg_policy_compile_fail(c, q->at, "'%s': '%s' is not a map; [] selects map entries", q->text,
		                              fg_schema_field_name(f));
	if (!fg_schema_field_message(vf ? vf : f))
		return fg_policy_compile_fail(c, q->at, "'%s': '%s' is %s; only messages have fields", q->text,
		                              fg_schema_field_name(f),
		                              fg_schema_type_name(fg_schema_field_type(vf ? vf : f)));
	/* A group's fields sit between start- and end-group tags, not in a
	 * length-delimited message: the wire editor goes into messages only
	 * (before, such a path loaded and failed every call that carried the
	 * group).  Whole, a group can be removed or kept. */
	if (fg_schema_field_type(vf ? vf : f) == FG_SCHEMA_GROUP)
		return fg_policy_compile_fail(c, q->at, "'%s': '%s' is a proto2 group, whose fields feedguard cannot "
		                              "edit one by one; name the group itself to remove it or keep it whole",
		                              q->text, fg_schema_field_name(f));
	/* An allow-list never drops a map entry's key: the entry node copies
	 * what it has no rule for, and the allow-list applies in the value. */
	if (!(sub = inner_node(c, node, f, q, vf ? 0 : allow_only, &rc)))
		return rc;
	if (vf && !(sub = inner_node(c, sub, vf, q, kept_whole ? 0 : allow_only, &rc)))
		return rc;
	return apply_path(c, sub, rest, nrest, q, sub->msg.allow_only);
}

static int apply_path(struct fg_policy_comp *c, struct fg_policy_prog_node *node,
                      const struct fg_policy_path_part *parts, size_t nparts, const struct path_req *q,
                      int allow_only)
{
	const struct fg_schema_field *fields[FG_POLICY_MAX_PATH];
	size_t n, i;
	int rc;

	if ((rc = resolve_part(c, node->type, &parts[0], q, fields, &n)))
		return rc;
	for (i = 0; i < n; i++) {
		rc = nparts == 1 ? apply_leaf(c, node, fields[i], &parts[0], q)
		                 : apply_inner(c, node, fields[i], &parts[0], parts + 1, nparts - 1, q, allow_only);
		if (rc)
			return rc;
	}
	return 0;
}

int fg_policy_prog_apply(struct fg_policy_comp *c, struct fg_policy_prog_node *root,
                         const struct fg_yaml_node *at, enum fg_policy_prog_action action, double precision,
                         int allow_only)
{
	struct fg_policy_path_part parts[FG_POLICY_MAX_PATH];
	struct path_req q = { .at = at, .action = action, .precision = precision, .text = at->text };
	int n;

	if (at->kind != FG_YAML_SCALAR || at->len == 0)
		return fg_policy_compile_fail(c, at, "a field path must be a single value, not %s", fg_yaml_kind_name(at));
	n = fg_policy_path_split(at->text, parts, FG_POLICY_MAX_PATH);
	if (n < 0)
		return fg_policy_compile_fail(c, at, "'%s' is not a field path (name.name[\"key\"].name, at most %d parts)",
		                              at->text, FG_POLICY_MAX_PATH);
	return apply_path(c, root, parts, (size_t)n, &q, allow_only);
}

/* --- freezing ------------------------------------------------------------ */

static int rule_cmp(const void *a, const void *b)
{
	const struct fg_pbwire_rule *x = a, *y = b;

	return x->number < y->number ? -1 : x->number > y->number;
}

/* Sort every node's rules by field number, as fg_pbwire wants them, and index them. */
static void freeze(struct fg_pbwire_msg *m)
{
	size_t i;

	qsort((void *)m->rules, m->nrules, sizeof(*m->rules), rule_cmp);
	fg_pbwire_msg_index(m);
	for (i = 0; i < m->nrules; i++)
		if (m->rules[i].action == FG_PBWIRE_RECURSE)
			freeze((struct fg_pbwire_msg *)(void *)m->rules[i].sub);
}

/* The allow-list nodes under <node> (reached by <path>, "" at the root),
 * depth-first. */
static int check_required(struct fg_policy_comp *c, const struct fg_policy_prog_node *node, const char *path,
                          const struct fg_yaml_node *at, unsigned depth)
{
	char sub[256];
	size_t i, n;
	int rc;

	if (depth > FG_PBWIRE_MAX_DEPTH || !node->type)
		return 0;
	n = node->msg.allow_only ? fg_schema_message_nfields(node->type) : 0;
	for (i = 0; i < n; i++) {
		const struct fg_schema_field *f = fg_schema_message_field_at(node->type, i);
		if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REQUIRED) &&
		    !node_rule((struct fg_policy_prog_node *)node, fg_schema_field_number(f)))
			return fg_policy_compile_fail(c, at, "keep_only drops '%s%s', which the contract marks required: "
			                              "the ranker could not parse the message (remove refuses it "
			                              "too); list it in keep_only", path, fg_schema_field_name(f));
	}
	for (i = 0; i < node->msg.nrules; i++) {
		const struct fg_pbwire_rule *r = &node->rules[i];
		const struct fg_schema_field *f = fg_schema_find_field_number(node->type, r->number);
		if (r->action != FG_PBWIRE_RECURSE || !r->sub || !f)
			continue;
		/* a map is named m[*].x: the entry's value field adds nothing */
		if (fg_schema_message_is_map_entry(node->type))
			snprintf(sub, sizeof(sub), "%s", path);
		else
			snprintf(sub, sizeof(sub), "%s%s%s.", path, fg_schema_field_name(f),
			         (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) ? "[*]" : "");
		if ((rc = check_required(c, (const struct fg_policy_prog_node *)(const void *)r->sub, sub, at, depth + 1)))
			return rc;
	}
	return 0;
}

int fg_policy_prog_check_required(struct fg_policy_comp *c, const struct fg_policy_prog_node *root,
                                  const struct fg_yaml_node *at)
{
	return check_required(c, root, "", at, 0);
}

void fg_policy_prog_freeze(struct fg_policy_prog_node *root)
{
	freeze(&root->msg);
}
