/*
 * fg_policy_compile.c - YAML policy + descriptor set -> struct fg_policy.
 *
 * Three steps.  fg_yaml turns the file into a positioned tree; the bands
 * and methods are read from it; each rule block's field paths are resolved
 * through fg_schema and merged into a tree of wire-editing nodes (one per
 * message reached), which is then frozen into the fg_pbwire program the
 * workers run.  Every node, rule and string of a policy lives in its arena
 * and goes with fg_policy_compile_free().
 */
#include "config.h"

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_pbwire.h"
#include "fg_policy_compile.h"
#include "fg_schema.h"
#include "fg_yaml.h"

#define POLICY_MAX_DEPTH 24
#define POLICY_MAX_NODES 100000
#define POLICY_MAX_STATS 4096
#define SHOW_LEN 64

static const struct fg_yaml_limits policy_limits = {
	.max_bytes = FG_POLICY_MAX_BYTES, .max_depth = POLICY_MAX_DEPTH, .max_nodes = POLICY_MAX_NODES,
};

/* --- arena: every allocation of a policy, freed together ---------------- */

struct arena_block {
	struct arena_block *next;
	max_align_t data[];
};

static void *arena_alloc(void **arena, size_t size)
{
	struct arena_block *b = calloc(1, sizeof(*b) + size);

	if (!b)
		return NULL;
	b->next = *arena;
	*arena = b;
	return b->data;
}

static char *arena_strndup(void **arena, const char *s, size_t len)
{
	char *d = arena_alloc(arena, len + 1);

	if (d)
		memcpy(d, s, len);
	return d;
}

static void arena_free(void *arena)
{
	struct arena_block *b = arena, *next;

	for (; b; b = next) {
		next = b->next;
		free(b);
	}
}

/* --- compile context ----------------------------------------------------- */

/* A node of the editing tree while it is built: the pbwire node plus the
 * room its rule array has (one slot per field of the message type, which
 * bounds the rules a node can get). */
struct bnode {
	struct fg_pbwire_msg msg;
	struct fg_pbwire_rule *rules;
	size_t cap;
	const struct fg_schema_message *type;
};

struct comp {
	const char *name;               /* file name in messages */
	char *basedir;
	char *err;
	size_t errlen;
	struct fg_policy *pol;
	struct fg_schema *schema;
	size_t stat_cap;
	const char *dir;                /* "request" or "response", for stat names */
	uint32_t unlisted;              /* the keep_only block's counter for what it drops, at
	                                   every level; UINT32_MAX outside such a block */
};

__attribute__((format(printf, 3, 4)))
static int fail(struct comp *c, const struct fg_yaml_node *at, const char *fmt, ...)
{
	char msg[FG_POLICY_MAX_PATH * 16 + 256], *p;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Paths and values are quoted as written: a control byte in one must
	 * not start a forged line in the operator's log. */
	for (p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return fg_yaml_fail(c->err, c->errlen, c->name, at, "%s", msg);
}

static int fail_nomem(struct comp *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return FG_ENOMEM;
}

static void *alloc(struct comp *c, size_t size)
{
	return arena_alloc(&c->pol->arena, size);
}

static char *dup_text(struct comp *c, const struct fg_yaml_node *n)
{
	return arena_strndup(&c->pol->arena, n->text, n->len);
}

static const char *show(const struct fg_yaml_node *n, char *buf, size_t len)
{
	return fg_yaml_show(n, buf, len);
}

static int want_scalar(struct comp *c, const struct fg_yaml_node *n, const char *what)
{
	if (n->kind != FG_YAML_SCALAR || n->len == 0)
		return fail(c, n, "%s must be a single value, not %s", what, fg_yaml_kind_name(n));
	return 0;
}

static int want_kind(struct comp *c, const struct fg_yaml_node *n, enum fg_yaml_kind kind, const char *what)
{
	static const char *const names[] = { "a single value", "a list", "a mapping" };

	if (n->kind != kind)
		return fail(c, n, "%s must be %s, not %s", what, names[kind], fg_yaml_kind_name(n));
	return 0;
}

/*
 * Check that mapping <map> has only keys from <allowed> (NULL-terminated)
 * and no duplicates; names the valid keys when one is wrong.
 */
static int check_keys(struct comp *c, const struct fg_yaml_node *map, const char *const *allowed, const char *where)
{
	char list[256] = "", buf[SHOW_LEN];
	size_t i, j, k;

	for (i = 0; i < map->nkids; i += 2) {
		const struct fg_yaml_node *key = map->kids[i];
		for (k = 0; allowed[k] && strcmp(allowed[k], key->text) != 0; k++)
			;
		if (!allowed[k]) {
			for (k = 0; allowed[k]; k++) {
				strncat(list, k ? ", " : "", sizeof(list) - strlen(list) - 1);
				strncat(list, allowed[k], sizeof(list) - strlen(list) - 1);
			}
			return fail(c, key, "unknown key '%s' in %s (valid keys: %s)", show(key, buf, sizeof(buf)),
			            where, list);
		}
		for (j = 0; j < i; j += 2)
			if (strcmp(map->kids[j]->text, key->text) == 0)
				return fail(c, key, "duplicate key '%s' in %s", show(key, buf, sizeof(buf)), where);
	}
	return 0;
}

/* --- schema queries the compiler needs, in one place ------------------- */

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

static int find_method(const struct fg_schema *schema, const char *path, const struct fg_schema_message **in,
                       const struct fg_schema_message **out, int *cs, int *ss)
{
	const struct fg_schema_method *m = fg_schema_find_method(schema, path);

	if (!m)
		return FG_ENOTFOUND;
	*in = fg_schema_method_input(m);
	*out = fg_schema_method_output(m);
	*cs = (fg_schema_method_flags(m) & FG_SCHEMA_M_CLIENT_STREAMING) != 0;
	*ss = (fg_schema_method_flags(m) & FG_SCHEMA_M_SERVER_STREAMING) != 0;
	return 0;
}

/* --- bands --------------------------------------------------------------- */

static const char *const band_keys[] = { "name", "match", NULL };

static int find_band(const struct fg_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nbands; i++)
		if (strcmp(p->bands[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int read_band(struct comp *c, const struct fg_yaml_node *item, struct fg_policy_band *b)
{
	const struct fg_yaml_node *name, *match;
	char buf[SHOW_LEN];
	size_t i;
	int rc;

	if ((rc = want_kind(c, item, FG_YAML_MAP, "a band")) || (rc = check_keys(c, item, band_keys, "a band")))
		return rc;
	name = fg_yaml_map_get(item, "name");
	if (!name)
		return fail(c, item, "a band needs a name");
	if ((rc = want_scalar(c, name, "a band's name")))
		return rc;
	if (find_band(c->pol, name->text) >= 0)
		return fail(c, name, "band '%s' is declared twice", show(name, buf, sizeof(buf)));
	b->name = dup_text(c, name);
	match = fg_yaml_map_get(item, "match");
	if (!match) {
		/* Without a match list, the band's own name is its value. */
		b->match = alloc(c, sizeof(char *));
		if (!b->name || !b->match)
			return fail_nomem(c);
		b->match[0] = b->name;
		b->nmatch = 1;
		return 0;
	}
	if ((rc = want_kind(c, match, FG_YAML_SEQ, "a band's match")))
		return rc;
	b->match = alloc(c, (match->nkids ? match->nkids : 1) * sizeof(char *));
	if (!b->name || !b->match)
		return fail_nomem(c);
	for (i = 0; i < match->nkids; i++) {
		if ((rc = want_scalar(c, match->kids[i], "a band value")))
			return rc;
		if (!(b->match[b->nmatch++] = dup_text(c, match->kids[i])))
			return fail_nomem(c);
	}
	return 0;
}

/* A value (header or field) may select one band only. */
static int check_band_values(struct comp *c, const struct fg_yaml_node *bands)
{
	struct fg_policy *p = c->pol;
	size_t a, b, i, j;

	for (a = 0; a < p->nbands; a++)
		for (i = 0; i < p->bands[a].nmatch; i++)
			for (b = a; b < p->nbands; b++)
				for (j = (a == b ? i + 1 : 0); j < p->bands[b].nmatch; j++)
					if (strcmp(p->bands[a].match[i], p->bands[b].match[j]) == 0)
						return fail(c, bands->kids[b], "value '%s' selects both band '%s' and band '%s'",
						            p->bands[b].match[j], p->bands[a].name, p->bands[b].name);
	return 0;
}

static int read_bands(struct comp *c, const struct fg_yaml_node *root)
{
	const struct fg_yaml_node *bands = fg_yaml_map_get(root, "bands"), *unknown;
	size_t i;
	int rc;

	if (!bands)
		return fail(c, root, "'bands' is required: the age bands the platform uses, most protective first");
	if ((rc = want_kind(c, bands, FG_YAML_SEQ, "bands")))
		return rc;
	if (bands->nkids == 0 || bands->nkids > FG_POLICY_MAX_BANDS)
		return fail(c, bands, "bands must list 1 to %d bands", FG_POLICY_MAX_BANDS);
	c->pol->bands = alloc(c, bands->nkids * sizeof(*c->pol->bands));
	if (!c->pol->bands)
		return fail_nomem(c);
	for (i = 0; i < bands->nkids; i++) {
		if ((rc = read_band(c, bands->kids[i], &c->pol->bands[i])))
			return rc;
		c->pol->nbands++;
	}
	if ((rc = check_band_values(c, bands)))
		return rc;
	/* High privacy is the default: without a choice, a missing, unknown
	 * or malformed band is the most protective one. */
	c->pol->unknown_band = 0;
	unknown = fg_yaml_map_get(root, "unknown_band");
	if (unknown) {
		if ((rc = want_scalar(c, unknown, "unknown_band")))
			return rc;
		if ((rc = find_band(c->pol, unknown->text)) < 0)
			return fail(c, unknown, "unknown_band names a band that is not declared in bands");
		c->pol->unknown_band = (size_t)rc;
	}
	return 0;
}

/* --- field paths ----------------------------------------------------------- */

/* One component of a field path: a name, optionally followed by [*]
 * (every map entry's value) or ["key"] / [123] (one map key). */
struct path_part {
	char name[128];
	int sel;                    /* 0 none, 1 [*], 2 [key] */
	char key[128];
	size_t keylen;
};

static int parse_part(const char **s, struct path_part *pp)
{
	size_t n = 0;

	memset(pp, 0, sizeof(*pp));
	while (**s && **s != '.' && **s != '[') {
		char ch = **s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
			return -1;
		if (n + 1 >= sizeof(pp->name))
			return -1;
		pp->name[n++] = ch;
		(*s)++;
	}
	if (n == 0)
		return -1;
	if (**s != '[')
		return 0;
	(*s)++;
	if (**s == '*') {
		pp->sel = 1;
		(*s)++;
	} else {
		char quote = (**s == '"' || **s == '\'') ? **s : 0;
		pp->sel = 2;
		if (quote)
			(*s)++;
		while (**s && (quote ? **s != quote : **s != ']')) {
			if (pp->keylen + 1 >= sizeof(pp->key))
				return -1;
			pp->key[pp->keylen++] = *(*s)++;
		}
		if (quote) {
			if (**s != quote)
				return -1;
			(*s)++;
		}
	}
	if (**s != ']')
		return -1;
	(*s)++;
	return 0;
}

/* Split <text> into parts; returns the count or -1 on a syntax error. */
static int split_path(const char *text, struct path_part *parts, size_t max)
{
	const char *s = text;
	size_t n = 0;

	for (;;) {
		if (n == max || parse_part(&s, &parts[n]) < 0)
			return -1;
		n++;
		if (*s == '\0')
			return (int)n;
		if (*s != '.')
			return -1;
		s++;
	}
}

/* --- the editing tree ------------------------------------------------------ */

static struct bnode *bnode_new(struct comp *c, const struct fg_schema_message *type, int allow_only)
{
	struct bnode *b = alloc(c, sizeof(*b));
	size_t cap = fg_schema_message_nfields(type);

	if (!b)
		return NULL;
	b->type = type;
	b->cap = cap ? cap : 1;
	b->rules = alloc(c, b->cap * sizeof(*b->rules));
	if (!b->rules)
		return NULL;
	b->msg.allow_only = (uint8_t)allow_only;
	b->msg.rules = b->rules;
	b->msg.unlisted_stat = allow_only ? c->unlisted : UINT32_MAX;
	return b;
}

static struct fg_pbwire_rule *bnode_rule(struct bnode *b, uint32_t number)
{
	size_t i;

	for (i = 0; i < b->msg.nrules; i++)
		if (b->rules[i].number == number)
			return &b->rules[i];
	return NULL;
}

static struct fg_pbwire_rule *bnode_add(struct bnode *b, uint32_t number, uint8_t action)
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

/* A counter for what <r> removes or changes, named "<dir>:<path>". */
static int new_stat(struct comp *c, const char *path, uint32_t *stat)
{
	struct fg_policy *p = c->pol;
	char name[512];
	char **names;
	size_t i;

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
		names = alloc(c, cap * sizeof(*names));
		if (!names)
			return FG_ENOMEM;
		if (p->nstats)
			memcpy(names, p->stat_names, p->nstats * sizeof(*names));
		p->stat_names = names;
		c->stat_cap = cap;
	}
	p->stat_names[p->nstats] = arena_strndup(&p->arena, name, strlen(name));
	if (!p->stat_names[p->nstats])
		return FG_ENOMEM;
	*stat = (uint32_t)p->nstats++;
	return 0;
}

enum path_action {
	PA_KEEP,                    /* keep_only entry */
	PA_DROP,                    /* remove */
	PA_COARSEN,                 /* coarsen */
};

static const char *const action_names[] = { "keep_only", "remove", "coarsen" };

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

/* Everything one path entry of a rule block says. */
struct path_req {
	const struct fg_yaml_node *at;  /* for messages */
	enum path_action action;
	double precision;               /* COARSEN */
	const char *text;               /* the path as written */
};

/* The node below rule <r> (for a message-typed field), creating it. */
static struct bnode *descend(struct comp *c, struct fg_pbwire_rule *r, const struct fg_schema_message *type,
                             int allow_only)
{
	struct bnode *sub;

	if (r->action == FG_PBWIRE_RECURSE && r->sub)
		return (struct bnode *)(void *)r->sub;
	/* A field an allow-list keeps whole (KEEP) becomes RECURSE into a node
	 * that copies everything but what later paths name; a new rule gets a
	 * node of the block's kind. */
	sub = bnode_new(c, type, r->action == FG_PBWIRE_KEEP ? 0 : allow_only);
	if (!sub)
		return NULL;
	r->action = FG_PBWIRE_RECURSE;
	r->sub = &sub->msg;
	return sub;
}

/* In a keep_only block, remove and coarsen name what keep_only keeps: a
 * new rule for a field it does not keep would let that field through. */
static int check_kept(struct comp *c, const struct bnode *node, const struct fg_pbwire_rule *r,
                      const struct fg_schema_field *f, const struct path_req *q)
{
	if (r || !node->msg.allow_only || q->action == PA_KEEP)
		return 0;
	return fail(c, q->at, "'%s': '%s' is not in keep_only, so it is removed whole already", q->text,
	            fg_schema_field_name(f));
}

/* Add <key> to the DROP_KEYS set of rule <r> on a map whose key field is <kf>. */
static int add_map_key(struct comp *c, struct fg_pbwire_rule *r, const struct fg_schema_field *kf,
                       const struct path_part *pp, const struct path_req *q)
{
	struct fg_pbwire_keys *old = (struct fg_pbwire_keys *)(void *)r->keys, *k;
	int numeric = fg_schema_field_type(kf) != FG_SCHEMA_STRING;
	size_t n = old ? old->n : 0;
	char *end;

	k = alloc(c, sizeof(*k));
	if (!k)
		return fail_nomem(c);
	if (numeric) {
		int64_t *num = alloc(c, (n + 1) * sizeof(*num));
		if (!num)
			return fail_nomem(c);
		if (n)
			memcpy(num, old->num, n * sizeof(*num));
		errno = 0;
		num[n] = strtoll(pp->key, &end, 10);
		if (errno || *end || pp->keylen == 0)
			return fail(c, q->at, "'%s': map key '%s' is not an integer", q->text, pp->key);
		k->num = num;
	} else {
		const char **str = alloc(c, (n + 1) * sizeof(*str));
		size_t *len = alloc(c, (n + 1) * sizeof(*len));
		if (!str || !len)
			return fail_nomem(c);
		if (n) {
			memcpy(str, old->str, n * sizeof(*str));
			memcpy(len, old->str_len, n * sizeof(*len));
		}
		if (!(str[n] = arena_strndup(&c->pol->arena, pp->key, pp->keylen)))
			return fail_nomem(c);
		len[n] = pp->keylen;
		k->str = str;
		k->str_len = len;
	}
	k->n = n + 1;
	r->keys = k;
	return 0;
}

/* Apply the last component of a path: the field itself. */
static int apply_leaf(struct comp *c, struct bnode *node, const struct fg_schema_field *f,
                      const struct path_part *pp, const struct path_req *q)
{
	struct fg_pbwire_rule *r = bnode_rule(node, fg_schema_field_number(f));
	int rc;

	if ((rc = check_kept(c, node, r, f, q)))
		return rc;
	if (pp->sel == 2) {
		if (!(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) || q->action != PA_DROP)
			return fail(c, q->at, "'%s': [key] selects map entries, and only 'remove' takes it", q->text);
		if (r && r->action != FG_PBWIRE_DROP_KEYS)
			return fail(c, q->at, "'%s': map '%s' already has another rule", q->text, fg_schema_field_name(f));
		if (!r && !(r = bnode_add(node, fg_schema_field_number(f), FG_PBWIRE_DROP_KEYS)))
			return fail_nomem(c);
		if (r->stat == UINT32_MAX && (rc = new_stat(c, q->text, &r->stat)))
			return rc == FG_ENOMEM ? fail_nomem(c) : fail(c, q->at, "too many field paths in one policy");
		return add_map_key(c, r, fg_schema_field_map_key(f), pp, q);
	}
	if (pp->sel == 1)
		return fail(c, q->at, "'%s': [*] must be followed by a field of the map's value", q->text);
	if (r) {
		if (q->action == PA_KEEP && r->action == FG_PBWIRE_KEEP)
			return 0;   /* listed twice in keep_only: harmless */
		/* An allow-listed field may still be coarsened: kept, but rounded. */
		if (!(q->action == PA_COARSEN && r->action == FG_PBWIRE_KEEP))
			return fail(c, q->at, "'%s': field '%s' already has a rule (%s) here", q->text,
			            fg_schema_field_name(f),
			            r->action == FG_PBWIRE_DROP ? "it is removed" :
			            r->action == FG_PBWIRE_RECURSE ? "a path below it is named" : "another action");
	}
	switch (q->action) {
	case PA_KEEP:
		if (!(r = bnode_add(node, fg_schema_field_number(f), FG_PBWIRE_KEEP)))
			return fail_nomem(c);
		r->scalar = keep_scalar(f);
		return 0;
	case PA_DROP:
		/* The receiver would reject the message (proto2 required). */
		if (fg_schema_field_flags(f) & FG_SCHEMA_F_REQUIRED)
			return fail(c, q->at, "'%s': field '%s' is required by the contract; it cannot be removed",
			            q->text, fg_schema_field_name(f));
		if (!(r = bnode_add(node, fg_schema_field_number(f), FG_PBWIRE_DROP)))
			return fail_nomem(c);
		break;
	case PA_COARSEN:
		if (coarsen_scalar(fg_schema_field_type(f)) == FG_PBWIRE_S_NONE || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
			return fail(c, q->at, "'%s': coarsen needs a numeric field; '%s' is %s", q->text,
			            fg_schema_field_name(f), fg_schema_type_name(fg_schema_field_type(f)));
		if (!(q->precision >= min_precision(coarsen_scalar(fg_schema_field_type(f)))))
			return fail(c, q->at, "'%s': precision %g would change no %s value (the smallest that does is %g)",
			            q->text, q->precision, fg_schema_type_name(fg_schema_field_type(f)),
			            min_precision(coarsen_scalar(fg_schema_field_type(f))));
		if (!r && !(r = bnode_add(node, fg_schema_field_number(f), FG_PBWIRE_COARSEN)))
			return fail_nomem(c);
		r->action = FG_PBWIRE_COARSEN;
		r->scalar = coarsen_scalar(fg_schema_field_type(f));
		r->precision = q->precision;
		break;
	}
	if ((rc = new_stat(c, q->text, &r->stat)))
		return rc == FG_ENOMEM ? fail_nomem(c) : fail(c, q->at, "too many field paths in one policy");
	return 0;
}

/* The fields a path component names: one field, or every member of a oneof. */
static int resolve_part(struct comp *c, const struct fg_schema_message *type, const struct path_part *pp,
                        const struct path_req *q, const struct fg_schema_field **fields, size_t *n)
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
	return fail(c, q->at, "'%s': message %s has no field '%s'", q->text, fg_schema_message_name(type), pp->name);
}

static int apply_path(struct comp *c, struct bnode *node, const struct path_part *parts, size_t nparts,
                      const struct path_req *q, int allow_only);

/* The node below message-typed field <f> of <node>, for a path that goes
 * on below it; creates the rule and node on first use. */
static struct bnode *inner_node(struct comp *c, struct bnode *node, const struct fg_schema_field *f,
                                const struct path_req *q, int allow_only, int *rc)
{
	const struct fg_schema_message *type = fg_schema_field_message(f);
	struct fg_pbwire_rule *r = bnode_rule(node, fg_schema_field_number(f));
	struct bnode *sub;

	if ((*rc = check_kept(c, node, r, f, q)))
		return NULL;
	if (r && r->action != FG_PBWIRE_KEEP && r->action != FG_PBWIRE_RECURSE) {
		*rc = fail(c, q->at, "'%s': field '%s' is already removed or coarsened", q->text, fg_schema_field_name(f));
		return NULL;
	}
	if (r && r->action == FG_PBWIRE_KEEP && q->action == PA_KEEP) {
		*rc = fail(c, q->at, "'%s' is inside '%s', which keep_only already keeps whole", q->text, fg_schema_field_name(f));
		return NULL;
	}
	/* RECURSE without a node yet: descend() makes it. */
	if ((!r && !(r = bnode_add(node, fg_schema_field_number(f), FG_PBWIRE_RECURSE))) ||
	    !(sub = descend(c, r, type, allow_only))) {
		*rc = fail_nomem(c);
		return NULL;
	}
	return sub;
}

/* Walk into field <f> (named by <part>) and apply <rest> there.  A map
 * is a repeated entry message {1: key, 2: value}: "m[*].x" goes through
 * the entry into the value message. */
static int apply_inner(struct comp *c, struct bnode *node, const struct fg_schema_field *f,
                       const struct path_part *part, const struct path_part *rest, size_t nrest,
                       const struct path_req *q, int allow_only)
{
	const struct fg_schema_field *vf = (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) ? fg_schema_field_map_value(f) : NULL;
	struct bnode *sub;
	int rc = 0;

	if ((fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) && part->sel != 1)
		return fail(c, q->at, "'%s': '%s' is a map; name its values' fields as %s[*].field", q->text,
		            fg_schema_field_name(f), fg_schema_field_name(f));
	if (!(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP) && part->sel)
		return fail(c, q->at, "'%s': '%s' is not a map; [] selects map entries", q->text, fg_schema_field_name(f));
	if (!fg_schema_field_message(vf ? vf : f))
		return fail(c, q->at, "'%s': '%s' is %s; only messages have fields", q->text, fg_schema_field_name(f),
		            fg_schema_type_name(fg_schema_field_type(vf ? vf : f)));
	/* An allow-list never drops a map entry's key: the entry node copies
	 * what it has no rule for, and the allow-list applies in the value. */
	if (!(sub = inner_node(c, node, f, q, vf ? 0 : allow_only, &rc)))
		return rc;
	if (vf && !(sub = inner_node(c, sub, vf, q, allow_only, &rc)))
		return rc;
	return apply_path(c, sub, rest, nrest, q, allow_only);
}

static int apply_path(struct comp *c, struct bnode *node, const struct path_part *parts, size_t nparts,
                      const struct path_req *q, int allow_only)
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

static int apply_text(struct comp *c, struct bnode *root, const struct fg_yaml_node *at, enum path_action action,
                      double precision, int allow_only)
{
	struct path_part parts[FG_POLICY_MAX_PATH];
	struct path_req q = { .at = at, .action = action, .precision = precision, .text = at->text };
	int n;

	if (at->kind != FG_YAML_SCALAR || at->len == 0)
		return fail(c, at, "a field path must be a single value, not %s", fg_yaml_kind_name(at));
	n = split_path(at->text, parts, FG_POLICY_MAX_PATH);
	if (n < 0)
		return fail(c, at, "'%s' is not a field path (name.name[\"key\"].name, at most %d parts)", at->text,
		            FG_POLICY_MAX_PATH);
	return apply_path(c, root, parts, (size_t)n, &q, allow_only);
}

/* Sort every node's rules by field number, as fg_pbwire wants them, and index them. */
static int rule_cmp(const void *a, const void *b)
{
	const struct fg_pbwire_rule *x = a, *y = b;

	return x->number < y->number ? -1 : x->number > y->number;
}

static void freeze(struct fg_pbwire_msg *m)
{
	size_t i;

	qsort((void *)m->rules, m->nrules, sizeof(*m->rules), rule_cmp);
	fg_pbwire_msg_index(m);
	for (i = 0; i < m->nrules; i++)
		if (m->rules[i].action == FG_PBWIRE_RECURSE)
			freeze((struct fg_pbwire_msg *)(void *)m->rules[i].sub);
}

/* --- rule blocks ----------------------------------------------------------- */

static const char *const block_keys_req[] = { "bands", "keep_only", "remove", "coarsen", "remove_headers", NULL };
static const char *const block_keys_resp[] = { "bands", "keep_only", "remove", "coarsen", NULL };
static const char *const coarsen_keys[] = { "field", "precision", NULL };

/* Read "bands: [a, b]" (or "*") into <sel> (a flag per band). */
static int read_block_bands(struct comp *c, const struct fg_yaml_node *block, unsigned char *sel)
{
	const struct fg_yaml_node *b = fg_yaml_map_get(block, "bands");
	char buf[SHOW_LEN];
	size_t i;
	int k, rc;

	if (!b)
		return fail(c, block, "a rule block needs 'bands': the bands it applies to (or \"*\")");
	if (b->kind == FG_YAML_SCALAR && strcmp(b->text, "*") == 0) {
		memset(sel, 1, c->pol->nbands);
		return 0;
	}
	if ((rc = want_kind(c, b, FG_YAML_SEQ, "bands")))
		return rc;
	for (i = 0; i < b->nkids; i++) {
		if ((rc = want_scalar(c, b->kids[i], "a band")))
			return rc;
		if ((k = find_band(c->pol, b->kids[i]->text)) < 0)
			return fail(c, b->kids[i], "band '%s' is not declared in bands", show(b->kids[i], buf, sizeof(buf)));
		sel[k] = 1;
	}
	return 0;
}

static int read_precision(struct comp *c, const struct fg_yaml_node *n, double *out)
{
	char *end;

	if (n->kind != FG_YAML_SCALAR)
		return fail(c, n, "precision must be a number");
	errno = 0;
	*out = strtod(n->text, &end);
	if (errno || end == n->text || *end || !(*out > 0) || *out > 1e18)
		return fail(c, n, "precision must be a number above 0 (the value becomes a multiple of it)");
	return 0;
}

static int read_paths(struct comp *c, struct bnode *root, const struct fg_yaml_node *list, enum path_action a,
                      int allow_only)
{
	size_t i;
	int rc;

	if ((rc = want_kind(c, list, FG_YAML_SEQ, action_names[a])))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = apply_text(c, root, list->kids[i], a, 0, allow_only)))
			return rc;
	return 0;
}

static int read_coarsen(struct comp *c, struct bnode *root, const struct fg_yaml_node *list)
{
	const struct fg_yaml_node *f, *p;
	double precision = 0;
	size_t i;
	int rc;

	if ((rc = want_kind(c, list, FG_YAML_SEQ, "coarsen")))
		return rc;
	for (i = 0; i < list->nkids; i++) {
		const struct fg_yaml_node *item = list->kids[i];
		if ((rc = want_kind(c, item, FG_YAML_MAP, "a coarsen entry")) ||
		    (rc = check_keys(c, item, coarsen_keys, "a coarsen entry")))
			return rc;
		f = fg_yaml_map_get(item, "field");
		p = fg_yaml_map_get(item, "precision");
		if (!f || !p)
			return fail(c, item, "a coarsen entry needs 'field' and 'precision'");
		if ((rc = read_precision(c, p, &precision)) ||
		    (rc = apply_text(c, root, f, PA_COARSEN, precision, 0)))
			return rc;
	}
	return 0;
}

static int read_headers(struct comp *c, const struct fg_yaml_node *list, struct fg_policy_edit *e)
{
	size_t i, j;
	int rc;

	if ((rc = want_kind(c, list, FG_YAML_SEQ, "remove_headers")))
		return rc;
	e->remove_headers = alloc(c, (list->nkids ? list->nkids : 1) * sizeof(char *));
	if (!e->remove_headers)
		return fail_nomem(c);
	for (i = 0; i < list->nkids; i++) {
		const struct fg_yaml_node *h = list->kids[i];
		if ((rc = want_scalar(c, h, "a header name")))
			return rc;
		if (h->text[0] == ':')
			return fail(c, h, "pseudo-headers (%s) cannot be removed", h->text);
		if (!(e->remove_headers[i] = dup_text(c, h)))
			return fail_nomem(c);
		/* HTTP/2 header names are lowercase (RFC 9113 §8.2.1). */
		for (j = 0; j < h->len; j++)
			if (e->remove_headers[i][j] >= 'A' && e->remove_headers[i][j] <= 'Z')
				e->remove_headers[i][j] = (char)(e->remove_headers[i][j] - 'A' + 'a');
		e->nremove_headers++;
	}
	return 0;
}

/* Compile one rule block for message type <type> into edits[band]. */
static int read_block(struct comp *c, const struct fg_yaml_node *block, const struct fg_schema_message *type,
                      struct fg_policy_edit *edits, unsigned char *claimed, int is_request)
{
	const struct fg_yaml_node *keep = fg_yaml_map_get(block, "keep_only"), *n;
	unsigned char sel[FG_POLICY_MAX_BANDS] = { 0 };
	struct fg_policy_edit e = { 0 };
	struct bnode *root;
	size_t b;
	int rc;

	if ((rc = want_kind(c, block, FG_YAML_MAP, "a rule block")) ||
	    (rc = check_keys(c, block, is_request ? block_keys_req : block_keys_resp,
	                     is_request ? "a request rule block" : "a response rule block")) ||
	    (rc = read_block_bands(c, block, sel)))
		return rc;
	c->unlisted = UINT32_MAX;
	if (!(root = bnode_new(c, type, keep != NULL)))
		return fail_nomem(c);
	if (keep) {
		if ((rc = new_stat(c, "(not in keep_only)", &root->msg.unlisted_stat)))
			return rc == FG_ENOMEM ? fail_nomem(c) : fail(c, keep, "too many field paths in one policy");
		c->unlisted = root->msg.unlisted_stat;
		if ((rc = read_paths(c, root, keep, PA_KEEP, 1)))
			return rc;
	}
	if ((n = fg_yaml_map_get(block, "remove")) && (rc = read_paths(c, root, n, PA_DROP, 0)))
		return rc;
	if ((n = fg_yaml_map_get(block, "coarsen")) && (rc = read_coarsen(c, root, n)))
		return rc;
	if ((n = fg_yaml_map_get(block, "remove_headers")) && (rc = read_headers(c, n, &e)))
		return rc;
	freeze(&root->msg);
	if (root->msg.nrules > 0 || root->msg.allow_only)
		e.prog = &root->msg;
	for (b = 0; b < c->pol->nbands; b++) {
		if (!sel[b])
			continue;
		if (claimed[b])
			return fail(c, fg_yaml_map_get(block, "bands"), "band '%s' already has a %s rule block",
			            c->pol->bands[b].name, c->dir);
		claimed[b] = 1;
		edits[b] = e;
	}
	return 0;
}

static int read_direction(struct comp *c, const struct fg_yaml_node *list, const struct fg_schema_message *type,
                          struct fg_policy_edit *edits, int is_request)
{
	unsigned char claimed[FG_POLICY_MAX_BANDS] = { 0 };
	size_t i;
	int rc;

	c->dir = is_request ? "request" : "response";
	if (!list)
		return 0;
	if ((rc = want_kind(c, list, FG_YAML_SEQ, c->dir)))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = read_block(c, list->kids[i], type, edits, claimed, is_request)))
			return rc;
	return 0;
}

/* --- user id and age band sources ----------------------------------------- */

static const char *const source_keys[] = { "header", "field", NULL };

static int read_field_source(struct comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *type,
                             struct fg_policy_source *s, const char *what)
{
	struct path_part parts[FG_POLICY_MAX_PATH];
	const struct fg_schema_field *f = NULL;
	int np, i;

	np = split_path(n->text, parts, FG_POLICY_MAX_PATH);
	if (np < 0)
		return fail(c, n, "'%s' is not a field path", n->text);
	for (i = 0; i < np; i++) {
		if (parts[i].sel)
			return fail(c, n, "%s: '%s' cannot go through map entries", what, n->text);
		if (!type || !(f = fg_schema_find_field(type, parts[i].name)))
			return fail(c, n, "%s: '%s': %s has no field '%s'", what, n->text,
			            type ? fg_schema_message_name(type) : "a scalar", parts[i].name);
		if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) && i + 1 < np)
			return fail(c, n, "%s: '%s' goes through repeated field '%s'", what, n->text, fg_schema_field_name(f));
		s->path[s->depth++] = fg_schema_field_number(f);
		type = fg_schema_field_message(f);
	}
	if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
		return fail(c, n, "%s: '%s' is a repeated field; it needs a single value", what, n->text);
	switch (fg_schema_field_type(f)) {
	case FG_SCHEMA_STRING:
	case FG_SCHEMA_BYTES:
		s->value = FG_POLICY_V_STRING;
		break;
	case FG_SCHEMA_INT64:
		s->value = FG_POLICY_V_INTEGER;
		break;
	case FG_SCHEMA_INT32: case FG_SCHEMA_ENUM:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = 1;
		break;
	case FG_SCHEMA_UINT32: case FG_SCHEMA_UINT64:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = fg_schema_field_type(f) == FG_SCHEMA_UINT32;
		s->is_unsigned = 1;
		break;
	case FG_SCHEMA_SINT32: case FG_SCHEMA_SINT64:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = fg_schema_field_type(f) == FG_SCHEMA_SINT32;
		s->sint = 1;
		break;
	default:
		return fail(c, n, "%s: '%s' is %s; it must be a string or an integer", what, n->text,
		            fg_schema_type_name(fg_schema_field_type(f)));
	}
	s->kind = FG_POLICY_SRC_FIELD;
	return 0;
}

static int read_source(struct comp *c, const struct fg_yaml_node *m, const struct fg_schema_message *type,
                       struct fg_policy_source *s, const char *what)
{
	const struct fg_yaml_node *h, *f;
	size_t j;
	int rc;

	if (!m)
		return 0;
	if ((rc = want_kind(c, m, FG_YAML_MAP, what)) || (rc = check_keys(c, m, source_keys, what)))
		return rc;
	h = fg_yaml_map_get(m, "header");
	f = fg_yaml_map_get(m, "field");
	if ((h && f) || (!h && !f))
		return fail(c, m, "%s takes exactly one of 'header' or 'field'", what);
	if (f)
		return want_scalar(c, f, what) ? FG_ECONFIG : read_field_source(c, f, type, s, what);
	if ((rc = want_scalar(c, h, "a header name")))
		return rc;
	if (!(s->header = dup_text(c, h)))
		return fail_nomem(c);
	for (j = 0; j < h->len; j++)
		if (s->header[j] >= 'A' && s->header[j] <= 'Z')
			s->header[j] = (char)(s->header[j] - 'A' + 'a');
	s->kind = FG_POLICY_SRC_HEADER;
	return 0;
}

/* --- methods ------------------------------------------------------------- */

static const char *const method_keys[] = { "user_id", "age_band", "request", "response", NULL };

static int read_method(struct comp *c, const struct fg_yaml_node *key, const struct fg_yaml_node *val,
                       struct fg_policy_method *m)
{
	const struct fg_schema_message *in, *out;
	char buf[SHOW_LEN];
	int rc, cs, ss;

	if ((rc = want_kind(c, val, FG_YAML_MAP, "a method")) || (rc = check_keys(c, val, method_keys, "a method")))
		return rc;
	if (find_method(c->schema, key->text, &in, &out, &cs, &ss) < 0)
		return fail(c, key, "method '%s' is not in the descriptor set (write it as /package.Service/Method)",
		            show(key, buf, sizeof(buf)));
	m->path = dup_text(c, key);
	m->client_streaming = (unsigned)cs;
	m->server_streaming = (unsigned)ss;
	m->request = alloc(c, c->pol->nbands * sizeof(*m->request));
	m->response = alloc(c, c->pol->nbands * sizeof(*m->response));
	if (!m->path || !m->request || !m->response)
		return fail_nomem(c);
	if ((rc = read_source(c, fg_yaml_map_get(val, "user_id"), in, &m->user_id, "user_id")) ||
	    (rc = read_source(c, fg_yaml_map_get(val, "age_band"), in, &m->age_band, "age_band")))
		return rc;
	if (m->age_band.kind == FG_POLICY_SRC_NONE)
		return fail(c, key, "method '%s' needs age_band: where the age band comes from",
		            show(key, buf, sizeof(buf)));
	if ((rc = read_direction(c, fg_yaml_map_get(val, "request"), in, m->request, 1)))
		return rc;
	return read_direction(c, fg_yaml_map_get(val, "response"), out, m->response, 0);
}

static int method_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fg_policy_method *)a)->path, ((const struct fg_policy_method *)b)->path);
}

static int read_methods(struct comp *c, const struct fg_yaml_node *root)
{
	const struct fg_yaml_node *ms = fg_yaml_map_get(root, "methods");
	char buf[SHOW_LEN];
	size_t i, j;
	int rc;

	if (!ms)
		return fail(c, root, "'methods' is required: the gRPC methods feedguard intercepts");
	if ((rc = want_kind(c, ms, FG_YAML_MAP, "methods")))
		return rc;
	c->pol->methods = alloc(c, (ms->nkids / 2 + 1) * sizeof(*c->pol->methods));
	if (!c->pol->methods)
		return fail_nomem(c);
	for (i = 0; i < ms->nkids; i += 2) {
		for (j = 0; j < i; j += 2)
			if (strcmp(ms->kids[j]->text, ms->kids[i]->text) == 0)
				return fail(c, ms->kids[i], "method '%s' is listed twice", show(ms->kids[i], buf, sizeof(buf)));
		if ((rc = read_method(c, ms->kids[i], ms->kids[i + 1], &c->pol->methods[c->pol->nmethods])))
			return rc;
		c->pol->nmethods++;
	}
	qsort(c->pol->methods, c->pol->nmethods, sizeof(*c->pol->methods), method_cmp);
	for (i = 0; i < c->pol->nmethods; i++)
		c->pol->methods[i].index = i;
	return 0;
}

/* --- top level ----------------------------------------------------------- */

static const char *const top_keys[] = { "descriptor_set", "bands", "unknown_band", "methods", NULL };

static int read_schema(struct comp *c, const struct fg_yaml_node *root)
{
	const struct fg_yaml_node *ds = fg_yaml_map_get(root, "descriptor_set");
	char msg[512], *path;
	int rc;

	if (!ds)
		return fail(c, root, "'descriptor_set' is required: the platform's descriptor set "
		                     "(protoc --include_imports --descriptor_set_out=FILE)");
	if ((rc = want_scalar(c, ds, "descriptor_set")))
		return rc;
	path = fg_yaml_path_resolve(c->basedir, ds->text);
	if (!path)
		return fail_nomem(c);
	rc = fg_schema_load(path, &c->schema, msg, sizeof(msg));
	free(path);
	if (rc == FG_ENOMEM)
		return fail_nomem(c);
	if (rc < 0)
		return fail(c, ds, "%s", msg);
	return 0;
}

static int alloc_counters(struct comp *c, size_t nslots)
{
	struct fg_policy *p = c->pol;
	size_t per = p->nbands;

	p->counters.nslots = nslots;
	p->counters.calls = calloc(nslots * (p->nmethods ? p->nmethods : 1) * per, sizeof(uint64_t));
	p->counters.stripped = calloc(nslots * (p->nstats ? p->nstats : 1) * per, sizeof(uint64_t));
	return p->counters.calls && p->counters.stripped ? 0 : fail_nomem(c);
}

static int compile(struct comp *c, const char *text, size_t len, size_t nslots)
{
	struct fg_yaml_node *root = NULL;
	int rc;

	rc = fg_yaml_parse(c->name, text, len, &policy_limits, &root, c->err, c->errlen);
	if (rc)
		return rc;
	if ((rc = check_keys(c, root, top_keys, "the policy")) == 0 &&
	    (rc = read_schema(c, root)) == 0 &&
	    (rc = read_bands(c, root)) == 0 &&
	    (rc = read_methods(c, root)) == 0)
		rc = alloc_counters(c, nslots);
	fg_schema_free(c->schema);
	c->schema = NULL;
	fg_yaml_free(root);
	return rc;
}

int fg_policy_compile_load_string(const char *name, const char *basedir, const char *text, size_t len,
                                  size_t nslots, struct fg_policy **out, char *err, size_t errlen)
{
	struct comp c = { .name = name ? name : "<string>", .err = err, .errlen = errlen };
	int rc;

	*out = NULL;
	if (nslots == 0 || nslots > FG_POLICY_MAX_WORKERS)
		nslots = nslots ? FG_POLICY_MAX_WORKERS : 1;
	c.pol = calloc(1, sizeof(*c.pol));
	c.basedir = strdup(basedir ? basedir : ".");
	if (!c.pol || !c.basedir) {
		free(c.pol);
		free(c.basedir);
		return fail_nomem(&c);
	}
	rc = compile(&c, text, len, nslots);
	free(c.basedir);
	if (rc) {
		fg_policy_compile_free(c.pol);
		return rc;
	}
	*out = c.pol;
	return 0;
}

int fg_policy_compile_load(const char *path, size_t nslots, struct fg_policy **out, char *err, size_t errlen)
{
	char *text = NULL, *abs, *dir;
	size_t len = 0;
	int rc;

	*out = NULL;
	rc = fg_yaml_read_file(path, FG_POLICY_MAX_BYTES, &text, &len, err, errlen);
	if (rc)
		return rc;
	abs = fg_yaml_path_resolve(NULL, path);
	dir = abs ? fg_yaml_path_dirname(abs) : NULL;
	if (!dir) {
		if (err && errlen)
			snprintf(err, errlen, "%s: out of memory", path);
		rc = FG_ENOMEM;
		goto out_free;
	}
	rc = fg_policy_compile_load_string(path, dir, text, len, nslots, out, err, errlen);
	if (rc == 0 && !((*out)->file = arena_strndup(&(*out)->arena, abs, strlen(abs)))) {
		fg_policy_compile_free(*out);
		*out = NULL;
		rc = FG_ENOMEM;
	}
out_free:
	free(dir);
	free(abs);
	free(text);
	return rc;
}

void fg_policy_compile_free(struct fg_policy *p)
{
	if (!p)
		return;
	free(p->counters.calls);
	free(p->counters.stripped);
	arena_free(p->arena);
	free(p);
}
