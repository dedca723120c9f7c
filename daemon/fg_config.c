/*
 * fg_config.c - a YAML file turned into an immutable fg_config snapshot.
 *
 * Two passes.  First libyaml's events become a small tree of nodes that
 * keep their start marks; then one table of keys per section walks the tree
 * and fills the snapshot.  The tree lets a check made after a whole section
 * was read ("upstream.address is required") still point at a line, and
 * keeps the handlers free of event bookkeeping.
 *
 * This parser reads operator files and is fuzzed: every input must end in
 * a snapshot or a message, never a crash or a leak, so the tree's size and
 * depth are capped and every value is checked for type, syntax and range.
 */
#include "config.h"

#include "fg_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "fg_error.h"
#include "fg_units.h"

/* A config is a page of text; anything larger is a mistake or an attack. */
#define CONFIG_MAX_BYTES (1 << 20)
/* The schema nests three deep (root, section, value); allow some slack for
 * a misplaced block so the error is about the key, not the depth. */
#define CONFIG_MAX_DEPTH 16
/* Bounds the tree's memory whatever the input. */
#define CONFIG_MAX_NODES 10000
/* Keys per section, the size of the duplicate-key table. */
#define SECTION_MAX_KEYS 16
/* Longest piece of a value or key quoted back in a message. */
#define SHOW_MAX 48

#define USEC_PER_MS 1000LL
#define USEC_PER_SEC 1000000LL
#define USEC_PER_MIN (60 * USEC_PER_SEC)
#define USEC_PER_HOUR (60 * USEC_PER_MIN)
#define KIB 1024LL
#define MIB (1024 * KIB)

/* RFC 9113 section 6.9.1: a flow-control window never exceeds 2^31-1, and
 * section 6.9.2: every window starts at 65535, so a smaller one is useless. */
#define H2_MAX_WINDOW 2147483647LL
#define H2_INITIAL_WINDOW 65535LL
/* gRPC's message prefix carries a 32-bit length. */
#define GRPC_MAX_MESSAGE 4294967295LL
#define MAX_PORT 65535

#define DEFAULT_LISTEN "*:8080"
#define DEFAULT_ADMIN "127.0.0.1:9901"

/* Flags for parse_addr(): what a given kind of address may be. */
#define ADDR_F_NAMES 0x1        /* "*" and "localhost" as hosts */
#define ADDR_F_PORT0 0x2        /* port 0: the kernel picks one */

enum node_kind { NODE_SCALAR, NODE_SEQ, NODE_MAP };

struct node {
	enum node_kind kind;
	unsigned line, col;         /* 1-based start of the node */
	char *text;                 /* scalar: the value, NUL-terminated */
	size_t len;                 /* scalar: bytes in <text>, which may hold a NUL */
	struct node **kids;         /* seq: items; map: key, value, key, value... */
	size_t nkids;
	size_t cap;                 /* slots allocated in <kids> */
};

struct load_ctx {
	const char *name;           /* file name in messages */
	char *basedir;              /* absolute; relative paths in values start here */
	char *err;                  /* caller's message buffer, may be NULL */
	size_t errlen;
	struct fg_config *cfg;      /* the snapshot being filled */
	char key[64];               /* dotted name of the key being parsed */
	size_t nnodes;              /* nodes built so far, against CONFIG_MAX_NODES */
	const char *text;           /* the input, to place reader errors */
	size_t textlen;
	yaml_parser_t parser;
};

struct key_spec;

struct section_spec {
	const char *name;           /* prefix of its keys in messages; NULL at the top */
	const struct key_spec *keys;
	size_t nkeys;
	/* cross-key checks once the section is read; <seen> holds each key's
	 * node or NULL, indexed like <keys>; <where> is the section's key */
	int (*check)(struct load_ctx *c, const struct node *where, const struct node *const *seen);
};

struct key_spec {
	const char *name;
	int (*parse)(struct load_ctx *c, const struct key_spec *k, const struct node *key,
	             const struct node *val);
	size_t off;                 /* the field in struct fg_config */
	int64_t min, max;           /* allowed values, in the field's unit */
	const char *note;           /* the reason for the range, for messages */
	const struct section_spec *sub;
};

#define CFG_OFF(field) offsetof(struct fg_config, field)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* --- messages -------------------------------------------------------- */

__attribute__((format(printf, 4, 0)))
static int vfail_at(struct load_ctx *c, unsigned line, unsigned col, const char *fmt, va_list ap)
{
	int n;

	if (!c->err || c->errlen == 0)
		return FG_ECONFIG;
	n = snprintf(c->err, c->errlen, "%s:%u:%u: ", c->name, line, col);
	if (n >= 0 && (size_t)n < c->errlen)
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
	return FG_ECONFIG;
}

__attribute__((format(printf, 4, 5)))
static int fail_at(struct load_ctx *c, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(c, line, col, fmt, ap);
	va_end(ap);
	return rc;
}

/* Report an error at <at>'s position; returns FG_ECONFIG. */
__attribute__((format(printf, 3, 4)))
static int fail(struct load_ctx *c, const struct node *at, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(c, at->line, at->col, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_nomem(struct load_ctx *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return FG_ENOMEM;
}

/*
 * <n>'s text made safe to print: control bytes and quotes become '?' so a
 * hostile file cannot forge log lines, and long values are cut at
 * SHOW_MAX bytes, on a UTF-8 character boundary.
 */
static const char *show(const struct node *n, char *buf, size_t len)
{
	size_t i, max = n->len < SHOW_MAX ? n->len : SHOW_MAX;

	if (max > len - 4)
		max = len - 4;
	if (max < n->len)
		while (max > 0 && ((unsigned char)n->text[max] & 0xc0) == 0x80)
			max--;
	for (i = 0; i < max; i++) {
		unsigned char ch = (unsigned char)n->text[i];

		buf[i] = ch < 0x20 || ch == 0x7f || ch == '\'' ? '?' : (char)ch;
	}
	strcpy(buf + i, max < n->len ? "..." : "");
	return buf;
}

static const char *kind_name(const struct node *n)
{
	switch (n->kind) {
	case NODE_SEQ:
		return "a list";
	case NODE_MAP:
		return "a mapping";
	case NODE_SCALAR:
		break;
	}
	return n->len == 0 ? "an empty value" : "a single value";
}

/* --- YAML events to a tree ------------------------------------------- */

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n->text);
	free(n);
}

/* libyaml marks are 0-based; editors count from 1. */
static unsigned mark_pos(size_t zero_based)
{
	return zero_based < UINT_MAX ? (unsigned)zero_based + 1 : UINT_MAX;
}

static struct node *node_new(enum node_kind kind, yaml_mark_t mark)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->kind = kind;
	n->line = mark_pos(mark.line);
	n->col = mark_pos(mark.column);
	return n;
}

static int node_add(struct node *parent, struct node *kid)
{
	if (parent->nkids == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 4;
		struct node **kids = realloc(parent->kids, cap * sizeof(*kids));

		if (!kids)
			return FG_ENOMEM;
		parent->kids = kids;
		parent->cap = cap;
	}
	parent->kids[parent->nkids++] = kid;
	return 0;
}

/* Line and column of byte <offset> of the input, for reader errors, which
 * libyaml reports as an offset (columns count characters, as marks do). */
static void offset_pos(const struct load_ctx *c, size_t offset, unsigned *line, unsigned *col)
{
	size_t l = 0, cl = 0;

	for (size_t i = 0; i < offset && i < c->textlen; i++) {
		if (c->text[i] == '\n') {
			l++;
			cl = 0;
		} else if (((unsigned char)c->text[i] & 0xc0) != 0x80) {
			cl++;
		}
	}
	*line = mark_pos(l);
	*col = mark_pos(cl);
}

static int fail_yaml(struct load_ctx *c)
{
	const yaml_parser_t *p = &c->parser;
	const char *problem = p->problem ? p->problem : "invalid YAML";
	unsigned line, col;

	if (p->error == YAML_MEMORY_ERROR)
		return fail_nomem(c);
	if (p->error == YAML_READER_ERROR) {
		offset_pos(c, p->problem_offset, &line, &col);
		return fail_at(c, line, col, "%s", problem);
	}
	line = mark_pos(p->problem_mark.line);
	col = mark_pos(p->problem_mark.column);
	if (p->context)
		return fail_at(c, line, col, "%s (%s started at %u:%u)", problem, p->context,
		               mark_pos(p->context_mark.line), mark_pos(p->context_mark.column));
	return fail_at(c, line, col, "%s", problem);
}

static int next_event(struct load_ctx *c, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&c->parser, ev))
		return fail_yaml(c);
	return 0;
}

/* Anchors and tags change what a value means far from where it is read;
 * a config that needs them is too clever to review, so both are refused. */
static int check_plain_event(struct load_ctx *c, const yaml_event_t *ev, int depth)
{
	const yaml_char_t *anchor = NULL, *tag = NULL;
	unsigned line = mark_pos(ev->start_mark.line), col = mark_pos(ev->start_mark.column);

	if (ev->type == YAML_SCALAR_EVENT) {
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
	} else if (ev->type == YAML_SEQUENCE_START_EVENT) {
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
	} else if (ev->type == YAML_MAPPING_START_EVENT) {
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
	} else if (ev->type == YAML_ALIAS_EVENT) {
		return fail_at(c, line, col, "aliases (*name) are not supported");
	}
	if (anchor)
		return fail_at(c, line, col, "anchors (&name) are not supported");
	if (tag)
		return fail_at(c, line, col, "tags (!tag) are not supported");
	if (depth > CONFIG_MAX_DEPTH)
		return fail_at(c, line, col, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
	if (++c->nnodes > CONFIG_MAX_NODES)
		return fail_at(c, line, col, "more than %d values", CONFIG_MAX_NODES);
	return 0;
}

static int read_node(struct load_ctx *c, const yaml_event_t *ev, int depth, struct node **out);

/* Read the items of a sequence or mapping up to its end event. */
static int read_children(struct load_ctx *c, struct node *parent, int depth)
{
	yaml_event_t ev;
	struct node *kid;
	int rc;

	for (;;) {
		rc = next_event(c, &ev);
		if (rc)
			return rc;
		if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		rc = read_node(c, &ev, depth + 1, &kid);
		yaml_event_delete(&ev);
		if (rc)
			return rc;
		if (parent->kind == NODE_MAP && parent->nkids % 2 == 0 && kid->kind != NODE_SCALAR) {
			rc = fail(c, kid, "a key must be a single value, not %s", kind_name(kid));
			node_free(kid);
			return rc;
		}
		if (node_add(parent, kid)) {
			node_free(kid);
			return fail_nomem(c);
		}
	}
}

static int read_scalar(struct load_ctx *c, const yaml_event_t *ev, struct node *n)
{
	n->len = ev->data.scalar.length;
	n->text = malloc(n->len + 1);
	if (!n->text)
		return fail_nomem(c);
	memcpy(n->text, ev->data.scalar.value, n->len);
	n->text[n->len] = '\0';
	return 0;
}

/* Build the node that starts with <ev> (borrowed), reading its children. */
static int read_node(struct load_ctx *c, const yaml_event_t *ev, int depth, struct node **out)
{
	enum node_kind kind = NODE_SCALAR;
	struct node *n;
	int rc;

	*out = NULL;
	rc = check_plain_event(c, ev, depth);
	if (rc)
		return rc;
	if (ev->type == YAML_SEQUENCE_START_EVENT)
		kind = NODE_SEQ;
	else if (ev->type == YAML_MAPPING_START_EVENT)
		kind = NODE_MAP;
	n = node_new(kind, ev->start_mark);
	if (!n)
		return fail_nomem(c);
	rc = kind == NODE_SCALAR ? read_scalar(c, ev, n) : read_children(c, n, depth);
	if (rc) {
		node_free(n);
		return rc;
	}
	*out = n;
	return 0;
}

/* Fetch the next event when only its type and position matter. */
static int next_bare(struct load_ctx *c, yaml_event_type_t *type, yaml_mark_t *mark)
{
	yaml_event_t ev;
	int rc = next_event(c, &ev);

	if (rc)
		return rc;
	*type = ev.type;
	*mark = ev.start_mark;
	yaml_event_delete(&ev);
	return 0;
}

/*
 * Read the single document's root into <*root>; NULL for an empty stream.
 * A second document is an error: a reader that stops at the first would
 * silently ignore whatever the operator wrote after "---".
 */
static int read_document(struct load_ctx *c, struct node **root)
{
	yaml_event_type_t type;
	yaml_mark_t mark;
	yaml_event_t ev;
	int rc;

	*root = NULL;
	rc = next_bare(c, &type, &mark);                /* stream start */
	if (rc == 0)
		rc = next_bare(c, &type, &mark);        /* document start, or the end of an empty stream */
	if (rc || type == YAML_STREAM_END_EVENT)
		return rc;
	rc = next_event(c, &ev);
	if (rc)
		return rc;
	rc = read_node(c, &ev, 1, root);
	yaml_event_delete(&ev);
	if (rc == 0)
		rc = next_bare(c, &type, &mark);        /* document end */
	if (rc == 0)
		rc = next_bare(c, &type, &mark);        /* stream end, or another document */
	if (rc == 0 && type == YAML_DOCUMENT_START_EVENT)
		rc = fail_at(c, mark_pos(mark.line), mark_pos(mark.column),
		             "multiple documents are not supported");
	if (rc) {
		node_free(*root);
		*root = NULL;
	}
	return rc;
}

/* Parse <c->text> into a tree whose root is always a mapping; an empty
 * file becomes an empty mapping at 1:1 so "required" errors have a place. */
static int parse_tree(struct load_ctx *c, struct node **root)
{
	static const yaml_mark_t start = { 0, 0, 0 };
	int rc;

	if (!yaml_parser_initialize(&c->parser))
		return fail_nomem(c);
	/* libyaml asserts on a NULL input even when its length is 0 */
	yaml_parser_set_input_string(&c->parser, (const unsigned char *)(c->text ? c->text : ""),
	                             c->textlen);
	rc = read_document(c, root);
	yaml_parser_delete(&c->parser);
	if (rc)
		return rc;
	if (*root && (*root)->kind == NODE_SCALAR && (*root)->len == 0) {
		node_free(*root);
		*root = NULL;
	}
	if (!*root) {
		*root = node_new(NODE_MAP, start);
		return *root ? 0 : fail_nomem(c);
	}
	if ((*root)->kind != NODE_MAP) {
		rc = fail(c, *root, "the top level must be a mapping of keys, not %s",
		          kind_name(*root));
		node_free(*root);
		*root = NULL;
	}
	return rc;
}

/* --- values ------------------------------------------------------------ */

static void *field_of(struct load_ctx *c, const struct key_spec *k)
{
	return (char *)c->cfg + k->off;
}

/* <val> must be a non-empty scalar without NUL bytes; <what> names what
 * was wanted, for the message. */
static int want_scalar(struct load_ctx *c, const struct node *val, const char *what)
{
	if (val->kind != NODE_SCALAR)
		return fail(c, val, "%s must be %s, not %s", c->key, what, kind_name(val));
	if (val->len == 0)
		return fail(c, val, "%s needs a value (%s)", c->key, what);
	if (strlen(val->text) != val->len)
		return fail(c, val, "%s must not contain a NUL byte", c->key);
	return 0;
}

/* Decimal integer with an optional '-', nothing else. */
static int parse_integer(const char *s, int64_t *out)
{
	const char *digits = s[0] == '-' ? s + 1 : s;
	char *end;
	long long v;

	if (*digits < '0' || *digits > '9')
		return FG_EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end != '\0')
		return FG_EINVAL;
	if (errno == ERANGE)
		return FG_ETOOBIG;
	*out = v;
	return 0;
}

static int get_integer(struct load_ctx *c, const struct key_spec *k, const struct node *val,
                       int64_t *out)
{
	char buf[SHOW_MAX + 4];
	int rc = want_scalar(c, val, "an integer");

	if (rc)
		return rc;
	rc = parse_integer(val->text, out);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not an integer", c->key, show(val, buf, sizeof(buf)));
	if (rc || *out < k->min || *out > k->max)
		return fail(c, val, "%s: '%s' is out of range (%lld to %lld)", c->key,
		            show(val, buf, sizeof(buf)), (long long)k->min, (long long)k->max);
	return 0;
}

static int parse_int_key(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                         const struct node *val)
{
	int64_t v;
	int rc = get_integer(c, k, val, &v);

	if (rc == 0)
		*(int *)field_of(c, k) = (int)v;
	return rc;
}

static int parse_u32_key(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                         const struct node *val)
{
	int64_t v;
	int rc = get_integer(c, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(c, k) = (uint32_t)v;
	return rc;
}

static int parse_duration_key(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                              const struct node *val)
{
	char buf[SHOW_MAX + 4], lo[24], hi[24];
	const char *why;
	int64_t us;
	int rc = want_scalar(c, val, "a duration such as 5s");

	if (rc)
		return rc;
	rc = fg_units_parse_duration(val->text, &us, &why);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not a duration: %s", c->key,
		            show(val, buf, sizeof(buf)), why);
	if (rc || us < k->min || us > k->max)
		return fail(c, val, "%s: '%s' is out of range (%s to %s%s%s)", c->key,
		            show(val, buf, sizeof(buf)), fg_units_format_duration(k->min, lo, sizeof(lo)),
		            fg_units_format_duration(k->max, hi, sizeof(hi)),
		            k->note ? "; " : "", k->note ? k->note : "");
	*(int64_t *)field_of(c, k) = us;
	return 0;
}

/* <bytes> in the largest unit that divides it, as fg_units_parse_size reads. */
static const char *format_size(int64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB" };
	size_t u = 0;

	while (u + 1 < NELEM(units) && bytes != 0 && bytes % KIB == 0) {
		bytes /= KIB;
		u++;
	}
	snprintf(buf, len, "%lld%s", (long long)bytes, units[u]);
	return buf;
}

static int get_size(struct load_ctx *c, const struct key_spec *k, const struct node *val,
                    uint64_t *out)
{
	char buf[SHOW_MAX + 4], lo[32], hi[32];
	const char *why;
	int rc = want_scalar(c, val, "a size such as 64KiB");

	if (rc)
		return rc;
	rc = fg_units_parse_size(val->text, out, &why);
	if (rc == FG_EINVAL)
		return fail(c, val, "%s: '%s' is not a size: %s", c->key,
		            show(val, buf, sizeof(buf)), why);
	if (rc || *out < (uint64_t)k->min || *out > (uint64_t)k->max)
		return fail(c, val, "%s: '%s' is out of range (%s to %s%s%s)", c->key,
		            show(val, buf, sizeof(buf)), format_size(k->min, lo, sizeof(lo)),
		            format_size(k->max, hi, sizeof(hi)),
		            k->note ? "; " : "", k->note ? k->note : "");
	return 0;
}

static int parse_size32_key(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                            const struct node *val)
{
	uint64_t v;
	int rc = get_size(c, k, val, &v);

	if (rc == 0)
		*(uint32_t *)field_of(c, k) = (uint32_t)v;
	return rc;
}

static int parse_size64_key(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                            const struct node *val)
{
	uint64_t v;
	int rc = get_size(c, k, val, &v);

	if (rc == 0)
		*(uint64_t *)field_of(c, k) = v;
	return rc;
}

static int parse_workers(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                         const struct node *val)
{
	char buf[SHOW_MAX + 4];
	int64_t v;
	int rc = want_scalar(c, val, "auto or a number of threads");

	if (rc)
		return rc;
	if (strcmp(val->text, "auto") == 0) {
		c->cfg->workers = 0;
		return 0;
	}
	rc = parse_integer(val->text, &v);
	if (rc == FG_EINVAL)
		return fail(c, val, "workers: '%s' is neither auto nor an integer",
		            show(val, buf, sizeof(buf)));
	if (rc || v < k->min || v > k->max)
		return fail(c, val, "workers: '%s' is out of range (auto, or %lld to %lld)",
		            show(val, buf, sizeof(buf)), (long long)k->min, (long long)k->max);
	c->cfg->workers = (int)v;
	return 0;
}

static int parse_log_level(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                           const struct node *val)
{
	static const char *const names[] = {
		[FG_LOG_DEBUG] = "debug", [FG_LOG_INFO] = "info",
		[FG_LOG_WARN] = "warn", [FG_LOG_ERROR] = "error",
	};
	char buf[SHOW_MAX + 4];
	int rc = want_scalar(c, val, "debug, info, warn or error");

	if (rc)
		return rc;
	for (size_t i = 0; i < NELEM(names); i++) {
		if (strcmp(val->text, names[i]) == 0) {
			c->cfg->log.level = (enum fg_log_level)i;
			return 0;
		}
	}
	return fail(c, val, "log.level: '%s' is not one of debug, info, warn, error",
	            show(val, buf, sizeof(buf)));
}

/* --- paths --------------------------------------------------------------- */

/* "<a>/<b>" as a new string, without doubling a '/' at the end of <a>. */
static char *path_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int slash = la > 0 && a[la - 1] == '/';
	char *p = malloc(la + lb + 2);

	if (!p)
		return NULL;
	memcpy(p, a, la);
	if (!slash)
		p[la++] = '/';
	memcpy(p + la, b, lb + 1);
	return p;
}

/* <rel> made absolute against <base>, itself made absolute against the
 * current directory when needed (NULL <base> is the current directory).
 * Returned owned; NULL with errno set on failure. */
static char *path_absolute(const char *base, const char *rel)
{
	char *cwd, *dir, *p;

	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	if (rel[0] == '/')
		return strdup(rel);
	if (base && base[0] == '/')
		return path_join(base, rel);
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return NULL;
	dir = base ? path_join(cwd, base) : cwd;
	p = dir ? path_join(dir, rel) : NULL;
	if (dir != cwd)
		free(dir);
	free(cwd);
	return p;
}

/* The directory part of absolute <path>, returned owned. */
static char *path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash && slash != path ? (size_t)(slash - path) : 1;
	char *d = malloc(len + 1);

	if (!d)
		return NULL;
	memcpy(d, slash ? path : "/", len);
	d[len] = '\0';
	return d;
}

static int parse_access_log(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                            const struct node *val)
{
	char buf[SHOW_MAX + 4];
	int rc = want_scalar(c, val, "off, - or a file path");

	if (rc)
		return rc;
	if (strcmp(val->text, "off") == 0)
		return 0;
	if (strcmp(val->text, "-") == 0)
		c->cfg->log.access_log = strdup("-");
	else
		c->cfg->log.access_log = path_absolute(c->basedir, val->text);
	if (c->cfg->log.access_log)
		return 0;
	if (errno == ENOMEM)
		return fail_nomem(c);
	return fail(c, val, "log.access_log: cannot make '%s' absolute: %s",
	            show(val, buf, sizeof(buf)), strerror(errno));
}

/* --- addresses ---------------------------------------------------------- */

/* "0".."65535" (or from 1 without ADDR_F_PORT0) into <*port>. */
static const char *parse_port(const char *s, unsigned flags, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; s[n] >= '0' && s[n] <= '9' && n < 6; n++)
		v = v * 10 + (unsigned long)(s[n] - '0');
	if (n == 0 || s[n] != '\0' || v > MAX_PORT)
		return flags & ADDR_F_PORT0 ? "the port must be a number from 0 to 65535"
		                            : "the port must be a number from 1 to 65535";
	if (v == 0 && !(flags & ADDR_F_PORT0))
		return "port 0 is not allowed here";
	*port = (uint16_t)v;
	return NULL;
}

static const char *fill_v6(const char *host, uint16_t port, struct fg_config_addr *out)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;

	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
		return "not a numeric IPv6 address";
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	out->salen = sizeof(*sin6);
	return NULL;
}

/* "*" (all IPv4 addresses) and "localhost" are the only names, and only
 * where <flags> allow them: a blocking resolver has no place in a worker. */
static const char *fill_v4(const char *host, unsigned flags, uint16_t port, struct fg_config_addr *out)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;

	if ((flags & ADDR_F_NAMES) && strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if ((flags & ADDR_F_NAMES) && strcmp(host, "localhost") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return flags & ADDR_F_NAMES
		       ? "the host must be a numeric IP address, * or localhost (names are never resolved)"
		       : "the host must be a numeric IP address (names are never resolved)";
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	out->salen = sizeof(*sin);
	return NULL;
}

/* Split "host:port" or "[v6]:port" in <s> (modified in place). */
static const char *split_hostport(char *s, char **host, char **port, int *v6)
{
	char *colon;

	*v6 = s[0] == '[';
	if (*v6) {
		char *bracket = strchr(s, ']');

		if (!bracket)
			return "missing ']' after the IPv6 address";
		if (bracket[1] != ':')
			return "missing :port after ']'";
		*bracket = '\0';
		*host = s + 1;
		*port = bracket + 2;
		return NULL;
	}
	colon = strrchr(s, ':');
	if (!colon)
		return "missing :port";
	*colon = '\0';
	if (strchr(s, ':'))
		return "an IPv6 address needs brackets, as in [::1]:8080";
	if (s[0] == '\0')
		return "missing host before ':' (use *:PORT for all addresses)";
	*host = s;
	*port = colon + 1;
	return NULL;
}

/* Resolve "host:port" <text> into <out>; NULL on success, else why not. */
static const char *parse_addr(const char *text, unsigned flags, struct fg_config_addr *out)
{
	char copy[sizeof(out->text)], *host, *port;
	const char *why;
	uint16_t portnum;
	int v6;

	if (strlen(text) >= sizeof(out->text))
		return "too long for an address";
	memcpy(copy, text, strlen(text) + 1);
	memset(out, 0, sizeof(*out));
	why = split_hostport(copy, &host, &port, &v6);
	if (!why)
		why = parse_port(port, flags, &portnum);
	if (!why)
		why = v6 ? fill_v6(host, portnum, out) : fill_v4(host, flags, portnum, out);
	if (!why)
		memcpy(out->text, text, strlen(text) + 1);
	return why;
}

static int get_addr(struct load_ctx *c, const struct node *val, unsigned flags,
                    struct fg_config_addr *out)
{
	char buf[SHOW_MAX + 4];
	const char *why;
	int rc = want_scalar(c, val, "a host:port string");

	if (rc)
		return rc;
	why = parse_addr(val->text, flags, out);
	if (why)
		return fail(c, val, "%s: '%s' is not a usable host:port: %s", c->key,
		            show(val, buf, sizeof(buf)), why);
	return 0;
}

static int sockaddr_port(const struct fg_config_addr *a)
{
	if (a->sa.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

/* With SO_REUSEPORT a second bind to the same address succeeds and quietly
 * splits its connections, so a repeated listen address is refused here.
 * Port 0 is exempt: each bind gets a port of its own. */
static int check_listen_unique(struct load_ctx *c, const struct node *const *items)
{
	const struct fg_config *cfg = c->cfg;

	for (int i = 1; i < cfg->nlisten; i++) {
		for (int j = 0; j < i; j++) {
			if (sockaddr_port(&cfg->listen[i]) != 0 && cfg->listen[i].salen == cfg->listen[j].salen &&
			    memcmp(&cfg->listen[i].sa, &cfg->listen[j].sa, cfg->listen[i].salen) == 0)
				return fail(c, items[i], "listen: '%s' is the same address as '%s' (%u:%u)",
				            cfg->listen[i].text, cfg->listen[j].text, items[j]->line, items[j]->col);
		}
	}
	return 0;
}

static int parse_listen(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                        const struct node *val)
{
	const struct node *const *items = (const struct node *const *)&val;
	size_t n = 1;
	int rc;

	if (val->kind == NODE_MAP)
		return fail(c, val, "listen must be a host:port string or a list of them, not a mapping");
	if (val->kind == NODE_SEQ) {
		items = (const struct node *const *)val->kids;
		n = val->nkids;
	}
	if (n == 0)
		return fail(c, val, "listen needs at least one address");
	if (n > FG_CONFIG_MAX_LISTEN)
		return fail(c, items[FG_CONFIG_MAX_LISTEN], "listen: more than %d addresses",
		            FG_CONFIG_MAX_LISTEN);
	c->cfg->nlisten = 0;
	for (size_t i = 0; i < n; i++) {
		rc = get_addr(c, items[i], ADDR_F_NAMES | ADDR_F_PORT0, &c->cfg->listen[i]);
		if (rc)
			return rc;
		c->cfg->nlisten++;
	}
	return check_listen_unique(c, items);
}

static int parse_upstream_addr(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                               const struct node *val)
{
	return get_addr(c, val, 0, &c->cfg->upstream.addr);
}

static int parse_admin_listen(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                              const struct node *val)
{
	int rc;

	if (val->kind == NODE_SCALAR && strcmp(val->text, "off") == 0 && val->len == 3) {
		c->cfg->admin.enabled = 0;
		return 0;
	}
	rc = get_addr(c, val, ADDR_F_PORT0, &c->cfg->admin.listen);
	if (rc == 0)
		c->cfg->admin.enabled = 1;
	return rc;
}

/* --- metrics.methods ---------------------------------------------------- */

/* Characters of a protobuf package-qualified service name, and of a method
 * name.  Only what gRPC itself puts in :path is accepted: the value is
 * matched byte for byte and printed into Prometheus label values, where a
 * quote or backslash would need escaping. */
#define SERVICE_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
#define METHOD_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

/* 1 if <s> is "/<service>/<method>" (gRPC PROTOCOL-HTTP2.md, Path). */
static int method_path_ok(const char *s)
{
	size_t n;

	if (*s++ != '/')
		return 0;
	n = strspn(s, SERVICE_CHARS);
	if (n == 0 || s[n] != '/')
		return 0;
	s += n + 1;
	n = strspn(s, METHOD_CHARS);
	return n > 0 && s[n] == '\0';
}

/* Check item <i> of <items> and append it to metrics.methods. */
static int add_method(struct load_ctx *c, const struct node *const *items, size_t i)
{
	struct fg_config *cfg = c->cfg;
	const struct node *val = items[i];
	char buf[SHOW_MAX + 4];
	int rc = want_scalar(c, val, "a method path such as /pkg.Service/Method");

	if (rc)
		return rc;
	if (!method_path_ok(val->text))
		return fail(c, val, "metrics.methods: '%s' is not a gRPC method path "
		            "(/package.Service/Method)", show(val, buf, sizeof(buf)));
	for (size_t j = 0; j < i; j++)
		if (strcmp(items[j]->text, val->text) == 0)
			return fail(c, val, "metrics.methods: '%s' is listed twice (first at %u:%u)",
			            show(val, buf, sizeof(buf)), items[j]->line, items[j]->col);
	cfg->metrics.methods[cfg->metrics.nmethods] = strdup(val->text);
	if (!cfg->metrics.methods[cfg->metrics.nmethods])
		return fail_nomem(c);
	cfg->metrics.nmethods++;
	return 0;
}

static int parse_methods(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                         const struct node *val)
{
	const struct node *const *items = (const struct node *const *)val->kids;
	int rc;

	if (val->kind != NODE_SEQ)
		return fail(c, val, "metrics.methods must be a list of method paths, not %s",
		            kind_name(val));
	if (val->nkids > FG_CONFIG_MAX_METHODS)
		return fail(c, items[FG_CONFIG_MAX_METHODS], "metrics.methods: more than %d methods",
		            FG_CONFIG_MAX_METHODS);
	for (size_t i = 0; i < val->nkids; i++) {
		rc = add_method(c, items, i);
		if (rc)
			return rc;
	}
	return 0;
}

/* --- sections ----------------------------------------------------------- */

static int walk_map(struct load_ctx *c, const struct section_spec *s, const struct node *map,
                    const struct node *where);

static int parse_section(struct load_ctx *c, const struct key_spec *k, const struct node *key,
                         const struct node *val)
{
	if (val->kind != NODE_MAP)
		return fail(c, val, "%s must be a mapping of keys, not %s", k->name, kind_name(val));
	return walk_map(c, k->sub, val, key);
}

static int find_key(const struct section_spec *s, const struct node *key)
{
	for (size_t i = 0; i < s->nkeys; i++)
		if (strlen(s->keys[i].name) == key->len && memcmp(s->keys[i].name, key->text, key->len) == 0)
			return (int)i;
	return -1;
}

static int fail_unknown(struct load_ctx *c, const struct section_spec *s, const struct node *key)
{
	char list[256], buf[SHOW_MAX + 4];
	size_t n = 0;

	list[0] = '\0';
	for (size_t i = 0; i < s->nkeys && n < sizeof(list); i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", s->keys[i].name);
	if (s->name)
		return fail(c, key, "unknown key '%s' in %s; valid keys: %s",
		            show(key, buf, sizeof(buf)), s->name, list);
	return fail(c, key, "unknown key '%s'; valid keys: %s", show(key, buf, sizeof(buf)), list);
}

static void set_key_name(struct load_ctx *c, const struct section_spec *s, const struct key_spec *k)
{
	if (s->name)
		snprintf(c->key, sizeof(c->key), "%s.%s", s->name, k->name);
	else
		snprintf(c->key, sizeof(c->key), "%s", k->name);
}

/* Fill the fields of section <s> from <map>; <where> is the node that
 * "required" errors point at. */
static int walk_map(struct load_ctx *c, const struct section_spec *s, const struct node *map,
                    const struct node *where)
{
	const struct node *seen[SECTION_MAX_KEYS] = { NULL };
	int rc;

	for (size_t i = 0; i + 1 < map->nkids; i += 2) {
		const struct node *key = map->kids[i], *val = map->kids[i + 1];
		int idx = find_key(s, key);

		if (idx < 0)
			return fail_unknown(c, s, key);
		set_key_name(c, s, &s->keys[idx]);
		if (seen[idx])
			return fail(c, key, "duplicate key '%s' (first at %u:%u)", c->key,
			            seen[idx]->line, seen[idx]->col);
		seen[idx] = key;
		rc = s->keys[idx].parse(c, &s->keys[idx], key, val);
		if (rc)
			return rc;
	}
	return s->check ? s->check(c, where, seen) : 0;
}

/* --- the schema --------------------------------------------------------- */

enum { UP_ADDRESS, UP_CONNECT_TIMEOUT, UP_MAX_CONNECTIONS, UP_MAX_PENDING, UP_KEEPALIVE_TIME,
       UP_KEEPALIVE_TIMEOUT, UP_BACKOFF_INITIAL, UP_BACKOFF_MAX, UP_NKEYS };

static const struct key_spec upstream_keys[] = {
	[UP_ADDRESS] = { "address", parse_upstream_addr, 0, 0, 0, NULL, NULL },
	[UP_CONNECT_TIMEOUT] = { "connect_timeout", parse_duration_key,
		CFG_OFF(upstream.connect_timeout_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_MAX_CONNECTIONS] = { "max_connections", parse_int_key,
		CFG_OFF(upstream.max_connections), 1, 1024, NULL, NULL },
	[UP_MAX_PENDING] = { "max_pending", parse_int_key,
		CFG_OFF(upstream.max_pending), 0, 1000000, NULL, NULL },
	[UP_KEEPALIVE_TIME] = { "keepalive_time", parse_duration_key,
		CFG_OFF(upstream.keepalive_time_us), 10 * USEC_PER_SEC, 24 * USEC_PER_HOUR,
		"gRPC clients never ping more often than every 10s", NULL },
	[UP_KEEPALIVE_TIMEOUT] = { "keepalive_timeout", parse_duration_key,
		CFG_OFF(upstream.keepalive_timeout_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_BACKOFF_INITIAL] = { "backoff_initial", parse_duration_key,
		CFG_OFF(upstream.backoff_initial_us), USEC_PER_MS, USEC_PER_HOUR, NULL, NULL },
	[UP_BACKOFF_MAX] = { "backoff_max", parse_duration_key,
		CFG_OFF(upstream.backoff_max_us), USEC_PER_MS, 24 * USEC_PER_HOUR, NULL, NULL },
};

enum { LIM_MAX_CONCURRENT_STREAMS, LIM_MAX_HEADER_LIST_SIZE, LIM_MAX_MESSAGE_SIZE,
       LIM_STREAM_WINDOW, LIM_CONNECTION_WINDOW, LIM_MAX_CONNECTIONS, LIM_NKEYS };

static const struct key_spec limits_keys[] = {
	[LIM_MAX_CONCURRENT_STREAMS] = { "max_concurrent_streams", parse_u32_key,
		CFG_OFF(limits.max_concurrent_streams), 1, INT32_MAX, NULL, NULL },
	[LIM_MAX_HEADER_LIST_SIZE] = { "max_header_list_size", parse_size32_key,
		CFG_OFF(limits.max_header_list_size), KIB, UINT32_MAX, NULL, NULL },
	[LIM_MAX_MESSAGE_SIZE] = { "max_message_size", parse_size64_key,
		CFG_OFF(limits.max_message_size), 1, GRPC_MAX_MESSAGE,
		"the gRPC length prefix is 32 bits", NULL },
	[LIM_STREAM_WINDOW] = { "stream_window", parse_size32_key,
		CFG_OFF(limits.stream_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1", NULL },
	[LIM_CONNECTION_WINDOW] = { "connection_window", parse_size32_key,
		CFG_OFF(limits.connection_window), H2_INITIAL_WINDOW, H2_MAX_WINDOW,
		"RFC 9113 section 6.9.1", NULL },
	[LIM_MAX_CONNECTIONS] = { "max_connections", parse_int_key,
		CFG_OFF(limits.max_connections), 1, INT_MAX, NULL, NULL },
};

static const struct key_spec timeouts_keys[] = {
	{ "idle", parse_duration_key, CFG_OFF(timeouts.idle_us),
	  USEC_PER_SEC, 24 * USEC_PER_HOUR, NULL, NULL },
	{ "drain", parse_duration_key, CFG_OFF(timeouts.drain_us),
	  0, USEC_PER_HOUR, NULL, NULL },
	{ "readiness_delay", parse_duration_key, CFG_OFF(timeouts.readiness_delay_us),
	  0, USEC_PER_HOUR, NULL, NULL },
};

static const struct key_spec admin_keys[] = {
	{ "listen", parse_admin_listen, 0, 0, 0, NULL, NULL },
};

static const struct key_spec metrics_keys[] = {
	{ "methods", parse_methods, 0, 0, 0, NULL, NULL },
};

static const struct key_spec log_keys[] = {
	{ "level", parse_log_level, 0, 0, 0, NULL, NULL },
	{ "access_log", parse_access_log, 0, 0, 0, NULL, NULL },
};

static int check_upstream(struct load_ctx *c, const struct node *where, const struct node *const *seen);
static int check_top(struct load_ctx *c, const struct node *where, const struct node *const *seen);

static const struct section_spec upstream_section = {
	"upstream", upstream_keys, NELEM(upstream_keys), check_upstream };
static const struct section_spec limits_section = {
	"limits", limits_keys, NELEM(limits_keys), NULL };
static const struct section_spec timeouts_section = {
	"timeouts", timeouts_keys, NELEM(timeouts_keys), NULL };
static const struct section_spec admin_section = {
	"admin", admin_keys, NELEM(admin_keys), NULL };
static const struct section_spec metrics_section = {
	"metrics", metrics_keys, NELEM(metrics_keys), NULL };
static const struct section_spec log_section = {
	"log", log_keys, NELEM(log_keys), NULL };

enum { TOP_LISTEN, TOP_WORKERS, TOP_UPSTREAM, TOP_LIMITS, TOP_TIMEOUTS, TOP_ADMIN, TOP_METRICS,
       TOP_LOG, TOP_NKEYS };

static const struct key_spec top_keys[] = {
	[TOP_LISTEN] = { "listen", parse_listen, 0, 0, 0, NULL, NULL },
	[TOP_WORKERS] = { "workers", parse_workers, 0, 1, 1024, NULL, NULL },
	[TOP_UPSTREAM] = { "upstream", parse_section, 0, 0, 0, NULL, &upstream_section },
	[TOP_LIMITS] = { "limits", parse_section, 0, 0, 0, NULL, &limits_section },
	[TOP_TIMEOUTS] = { "timeouts", parse_section, 0, 0, 0, NULL, &timeouts_section },
	[TOP_ADMIN] = { "admin", parse_section, 0, 0, 0, NULL, &admin_section },
	[TOP_METRICS] = { "metrics", parse_section, 0, 0, 0, NULL, &metrics_section },
	[TOP_LOG] = { "log", parse_section, 0, 0, 0, NULL, &log_section },
};

static const struct section_spec top_section = {
	NULL, top_keys, NELEM(top_keys), check_top };

_Static_assert(NELEM(upstream_keys) == UP_NKEYS && UP_NKEYS <= SECTION_MAX_KEYS, "upstream table");
_Static_assert(NELEM(limits_keys) == LIM_NKEYS && LIM_NKEYS <= SECTION_MAX_KEYS, "limits table");
_Static_assert(NELEM(top_keys) == TOP_NKEYS && TOP_NKEYS <= SECTION_MAX_KEYS, "top table");

static int check_upstream(struct load_ctx *c, const struct node *where, const struct node *const *seen)
{
	const struct fg_config *cfg = c->cfg;
	char lo[24], hi[24];

	if (!seen[UP_ADDRESS])
		return fail(c, where, "upstream.address is required");
	if (cfg->upstream.backoff_max_us < cfg->upstream.backoff_initial_us)
		return fail(c, seen[UP_BACKOFF_MAX] ? seen[UP_BACKOFF_MAX] : seen[UP_BACKOFF_INITIAL],
		            "upstream.backoff_max (%s) is below upstream.backoff_initial (%s)",
		            fg_units_format_duration(cfg->upstream.backoff_max_us, lo, sizeof(lo)),
		            fg_units_format_duration(cfg->upstream.backoff_initial_us, hi, sizeof(hi)));
	return 0;
}

static int check_top(struct load_ctx *c, const struct node *where, const struct node *const *seen)
{
	if (!seen[TOP_UPSTREAM])
		return fail(c, where, "upstream.address is required");
	return 0;
}

/* --- snapshots ---------------------------------------------------------- */

/* The defaults documented next to each field in fg_config.h. */
static void set_defaults(struct fg_config *cfg)
{
	/* constants known to parse; a typo here fails every test */
	parse_addr(DEFAULT_LISTEN, ADDR_F_NAMES | ADDR_F_PORT0, &cfg->listen[0]);
	cfg->nlisten = 1;
	cfg->workers = 0;
	cfg->upstream.connect_timeout_us = 2 * USEC_PER_SEC;
	cfg->upstream.max_connections = 8;
	cfg->upstream.max_pending = 1024;
	cfg->upstream.keepalive_time_us = 5 * USEC_PER_MIN;
	cfg->upstream.keepalive_timeout_us = 20 * USEC_PER_SEC;
	cfg->upstream.backoff_initial_us = 100 * USEC_PER_MS;
	cfg->upstream.backoff_max_us = 10 * USEC_PER_SEC;
	cfg->limits.max_concurrent_streams = 1000;
	cfg->limits.max_header_list_size = 64 * KIB;
	cfg->limits.max_message_size = 4 * MIB;
	cfg->limits.stream_window = 1 * MIB;
	cfg->limits.connection_window = 16 * MIB;
	cfg->limits.max_connections = 100000;
	cfg->timeouts.idle_us = 5 * USEC_PER_MIN;
	cfg->timeouts.drain_us = 30 * USEC_PER_SEC;
	cfg->timeouts.readiness_delay_us = 0;
	cfg->admin.enabled = 1;
	parse_addr(DEFAULT_ADMIN, 0, &cfg->admin.listen);
	cfg->log.level = FG_LOG_INFO;
	cfg->log.access_log = NULL;
}

static void config_free(struct fg_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	for (int i = 0; i < cfg->metrics.nmethods; i++)
		free(cfg->metrics.methods[i]);
	free(cfg->log.access_log);
	free(cfg);
}

/* Parse <c->text> into a new snapshot; takes <path> (absolute, owned). */
static int load(struct load_ctx *c, char *path, struct fg_config **out)
{
	struct node *root = NULL;
	int rc;

	c->cfg = calloc(1, sizeof(*c->cfg));
	if (!c->cfg) {
		free(path);
		return fail_nomem(c);
	}
	c->cfg->path = path;
	c->cfg->refcount = 1;
	set_defaults(c->cfg);
	if (c->textlen > CONFIG_MAX_BYTES) {
		rc = fail_at(c, 1, 1, "larger than %d bytes", CONFIG_MAX_BYTES);
		goto out_free_cfg;
	}
	rc = parse_tree(c, &root);
	if (rc)
		goto out_free_cfg;
	rc = walk_map(c, &top_section, root, root);
	node_free(root);
	if (rc)
		goto out_free_cfg;
	*out = c->cfg;
	return 0;

out_free_cfg:
	config_free(c->cfg);
	c->cfg = NULL;
	return rc;
}

static void ctx_init(struct load_ctx *c, const char *name, const char *text, size_t len,
                     char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->name = name ? name : "<string>";
	c->text = text;
	c->textlen = len;
	c->err = err;
	c->errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
}

int fg_config_load_string(const char *name, const char *basedir, const char *text, size_t len,
                          struct fg_config **out, char *err, size_t errlen)
{
	struct load_ctx c;
	char *path;
	int rc;

	*out = NULL;
	ctx_init(&c, name, text, len, err, errlen);
	c.basedir = basedir ? path_absolute(NULL, basedir) : getcwd(NULL, 0);
	if (!c.basedir)
		return errno == ENOMEM ? fail_nomem(&c) : fail_at(&c, 1, 1, "cannot resolve the base directory: %s",
		                                                  strerror(errno));
	path = path_absolute(c.basedir, c.name);
	rc = path ? load(&c, path, out) : fail_nomem(&c);
	free(c.basedir);
	return rc;
}

/* Read all of <fd> into a new buffer, at most CONFIG_MAX_BYTES + 1 bytes
 * so that load() sees the file is too large.  Returns 0 or an errno. */
static int read_all(int fd, char **text, size_t *len)
{
	size_t cap = CONFIG_MAX_BYTES + 1, n = 0;
	char *buf = malloc(cap);
	ssize_t r;

	if (!buf)
		return ENOMEM;
	while (n < cap) {
		r = read(fd, buf + n, cap - n);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int saved = errno;

			free(buf);
			return saved;
		}
		n += (size_t)r;
	}
	*text = buf;
	*len = n;
	return 0;
}

static int fail_io(struct load_ctx *c, const char *what, int errnum)
{
	if (errnum == ENOMEM)
		return fail_nomem(c);
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: cannot %s: %s", c->name, what, strerror(errnum));
	errno = errnum;
	return FG_EIO;
}

int fg_config_load(const char *path, struct fg_config **out, char *err, size_t errlen)
{
	struct load_ctx c;
	char *text = NULL, *abspath;
	size_t len = 0;
	int fd, rc;

	*out = NULL;
	ctx_init(&c, path, NULL, 0, err, errlen);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_io(&c, "open", errno);
	rc = read_all(fd, &text, &len);
	close(fd);
	if (rc)
		return fail_io(&c, "read", rc);
	c.text = text;
	c.textlen = len;
	abspath = path_absolute(NULL, path);
	if (!abspath) {
		rc = fail_io(&c, "resolve its directory", errno);
		goto out_free_text;
	}
	c.basedir = path_dirname(abspath);
	if (!c.basedir) {
		free(abspath);
		rc = fail_nomem(&c);
		goto out_free_text;
	}
	rc = load(&c, abspath, out);
	free(c.basedir);
out_free_text:
	free(text);
	return rc;
}

struct fg_config *fg_config_ref(struct fg_config *cfg)
{
	/* relaxed: the caller already holds a reference, so no one frees it now */
	__atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
	return cfg;
}

void fg_config_unref(struct fg_config *cfg)
{
	/* acq_rel: every holder's reads happen before the last one frees */
	if (cfg && __atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

__attribute__((format(printf, 3, 4)))
static int reload_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return FG_ECONFIG;
}

int fg_config_reload_check(const struct fg_config *cur, const struct fg_config *next,
                           char *err, size_t errlen)
{
	int same = cur->nlisten == next->nlisten;

	for (int i = 0; same && i < cur->nlisten; i++)
		same = strcmp(cur->listen[i].text, next->listen[i].text) == 0;
	if (!same)
		return reload_fail(err, errlen, "listen cannot change on reload; restart the daemon");
	if (cur->workers != next->workers)
		return reload_fail(err, errlen, "workers cannot change on reload; restart the daemon");
	if (cur->admin.enabled != next->admin.enabled ||
	    (cur->admin.enabled && strcmp(cur->admin.listen.text, next->admin.listen.text) != 0))
		return reload_fail(err, errlen, "admin.listen cannot change on reload; restart the daemon");
	same = cur->metrics.nmethods == next->metrics.nmethods;
	for (int i = 0; same && i < cur->metrics.nmethods; i++)
		same = strcmp(cur->metrics.methods[i], next->metrics.methods[i]) == 0;
	if (!same)
		return reload_fail(err, errlen, "metrics.methods cannot change on reload; restart the daemon");
	if (err && errlen)
		err[0] = '\0';
	return 0;
}
