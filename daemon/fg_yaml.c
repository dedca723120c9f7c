/*
 * fg_yaml.c - libyaml's events turned into a tree of positioned nodes.
 *
 * The tree exists so that a schema can make a check after a whole section
 * was read ("upstream.address is required") and still point at a line, and
 * so that schema handlers never see event bookkeeping.  The reader owns
 * everything that is about YAML rather than about one file format: limits,
 * refused features, positions and libyaml's error reports.
 */
#include "config.h"

#include "fg_yaml.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "fg_error.h"
#include "fg_file.h"

/* First buffer of fg_yaml_read_file; it doubles up to the caller's cap, so
 * a small file costs a page, not the cap. */
#define READ_INITIAL 4096

struct reader {
	const char *name;               /* file name in messages */
	char *err;                      /* caller's message buffer, may be NULL */
	size_t errlen;
	const struct fg_yaml_limits *lim;
	size_t nnodes;                  /* nodes built so far, against lim->max_nodes */
	const char *text;               /* the input, to place reader errors */
	size_t textlen;
	yaml_parser_t parser;
};

/* --- messages -------------------------------------------------------- */

__attribute__((format(printf, 6, 0)))
static int vfail_at(char *err, size_t errlen, const char *name, unsigned line, unsigned col,
                    const char *fmt, va_list ap)
{
	int n;

	if (!err || errlen == 0)
		return FG_ECONFIG;
	n = snprintf(err, errlen, "%s:%u:%u: ", name, line, col);
	if (n < 0 || (size_t)n >= errlen)
		return FG_ECONFIG;
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	/* The text may quote a value as written: a control byte in it must
	 * not start a forged line in the operator's log, whichever caller
	 * forgot to quote it with fg_yaml_show. */
	fg_yaml_printable(err + n);
	return FG_ECONFIG;
}

void fg_yaml_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

int fg_yaml_vfail(char *err, size_t errlen, const char *name, const struct fg_yaml_node *at,
                  const char *fmt, va_list ap)
{
	return vfail_at(err, errlen, name, at->line, at->col, fmt, ap);
}

int fg_yaml_fail(char *err, size_t errlen, const char *name, const struct fg_yaml_node *at,
                 const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(err, errlen, name, at->line, at->col, fmt, ap);
	va_end(ap);
	return rc;
}

/* An error at a position that is not a node's: a libyaml mark or offset. */
__attribute__((format(printf, 4, 5)))
static int fail_at(struct reader *r, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_at(r->err, r->errlen, r->name, line, col, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_nomem(char *err, size_t errlen, const char *name)
{
	if (err && errlen)
		snprintf(err, errlen, "%s: out of memory", name);
	return FG_ENOMEM;
}

const char *fg_yaml_show(const struct fg_yaml_node *n, char *buf, size_t len)
{
	size_t i, max = n->len < FG_YAML_SHOW_MAX ? n->len : FG_YAML_SHOW_MAX;

	if (len < 4) {
		if (len > 0)
			buf[0] = '\0';
		return buf;
	}
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

const char *fg_yaml_kind_name(const struct fg_yaml_node *n)
{
	switch (n->kind) {
	case FG_YAML_SEQ:
		return "a list";
	case FG_YAML_MAP:
		return "a mapping";
	case FG_YAML_SCALAR:
		break;
	}
	return n->len == 0 ? "an empty value" : "a single value";
}

/* --- nodes ------------------------------------------------------------- */

void fg_yaml_free(struct fg_yaml_node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		fg_yaml_free(n->kids[i]);
	free(n->kids);
	free(n->text);
	free(n);
}

/* libyaml marks are 0-based; editors count from 1. */
static unsigned mark_pos(size_t zero_based)
{
	return zero_based < UINT_MAX ? (unsigned)zero_based + 1 : UINT_MAX;
}

static struct fg_yaml_node *node_new(enum fg_yaml_kind kind, yaml_mark_t mark)
{
	struct fg_yaml_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->kind = kind;
	n->line = mark_pos(mark.line);
	n->col = mark_pos(mark.column);
	return n;
}

static int node_add(struct fg_yaml_node *parent, struct fg_yaml_node *kid)
{
	if (parent->nkids == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 4;
		struct fg_yaml_node **kids = realloc(parent->kids, cap * sizeof(*kids));

		if (!kids)
			return FG_ENOMEM;
		parent->kids = kids;
		parent->cap = cap;
	}
	parent->kids[parent->nkids++] = kid;
	return 0;
}

/* The index in <map>'s kids of the first key equal to <key>, or -1. */
static long map_find(const struct fg_yaml_node *map, const char *key)
{
	size_t len = strlen(key);

	if (!map || map->kind != FG_YAML_MAP)
		return -1;
	for (size_t i = 0; i + 1 < map->nkids; i += 2) {
		const struct fg_yaml_node *k = map->kids[i];

		if (k->len == len && memcmp(k->text, key, len) == 0)
			return (long)i;
	}
	return -1;
}

const struct fg_yaml_node *fg_yaml_map_get(const struct fg_yaml_node *map, const char *key)
{
	long i = map_find(map, key);

	return i < 0 ? NULL : map->kids[i + 1];
}

const struct fg_yaml_node *fg_yaml_map_key(const struct fg_yaml_node *map, const char *key)
{
	long i = map_find(map, key);

	return i < 0 ? NULL : map->kids[i];
}

/* --- YAML events to a tree ------------------------------------------- */

/* Line and column of byte <offset> of the input, for reader errors, which
 * libyaml reports as an offset (columns count characters, as marks do). */
static void offset_pos(const struct reader *r, size_t offset, unsigned *line, unsigned *col)
{
	size_t l = 0, cl = 0;

	for (size_t i = 0; i < offset && i < r->textlen; i++) {
		if (r->text[i] == '\n') {
			l++;
			cl = 0;
		} else if (((unsigned char)r->text[i] & 0xc0) != 0x80) {
			cl++;
		}
	}
	*line = mark_pos(l);
	*col = mark_pos(cl);
}

static int fail_yaml(struct reader *r)
{
	const yaml_parser_t *p = &r->parser;
	const char *problem = p->problem ? p->problem : "invalid YAML";
	unsigned line, col;

	if (p->error == YAML_MEMORY_ERROR)
		return fail_nomem(r->err, r->errlen, r->name);
	if (p->error == YAML_READER_ERROR) {
		offset_pos(r, p->problem_offset, &line, &col);
		return fail_at(r, line, col, "%s", problem);
	}
	line = mark_pos(p->problem_mark.line);
	col = mark_pos(p->problem_mark.column);
	if (p->context)
		return fail_at(r, line, col, "%s (%s started at %u:%u)", problem, p->context,
		               mark_pos(p->context_mark.line), mark_pos(p->context_mark.column));
	return fail_at(r, line, col, "%s", problem);
}

static int next_event(struct reader *r, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&r->parser, ev))
		return fail_yaml(r);
	return 0;
}

/* Anchors and tags change what a value means far from where it is read;
 * a file that needs them is too clever to review, so both are refused. */
static int check_plain_event(struct reader *r, const yaml_event_t *ev, int depth)
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
		return fail_at(r, line, col, "aliases (*name) are not supported");
	}
	if (anchor)
		return fail_at(r, line, col, "anchors (&name) are not supported");
	if (tag)
		return fail_at(r, line, col, "tags (!tag) are not supported");
	if (depth > r->lim->max_depth)
		return fail_at(r, line, col, "nesting deeper than %d levels", r->lim->max_depth);
	if (++r->nnodes > r->lim->max_nodes)
		return fail_at(r, line, col, "more than %zu values", r->lim->max_nodes);
	return 0;
}

static int read_node(struct reader *r, const yaml_event_t *ev, int depth,
                     struct fg_yaml_node **out);

/* Read the items of a sequence or mapping up to its end event. */
static int read_children(struct reader *r, struct fg_yaml_node *parent, int depth)
{
	struct fg_yaml_node *kid;
	yaml_event_t ev;
	int rc;

	for (;;) {
		rc = next_event(r, &ev);
		if (rc)
			return rc;
		if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		rc = read_node(r, &ev, depth + 1, &kid);
		yaml_event_delete(&ev);
		if (rc)
			return rc;
		if (parent->kind == FG_YAML_MAP && parent->nkids % 2 == 0 &&
		    kid->kind != FG_YAML_SCALAR) {
			rc = fg_yaml_fail(r->err, r->errlen, r->name, kid, "a key must be a single value, not %s",
			                  fg_yaml_kind_name(kid));
			fg_yaml_free(kid);
			return rc;
		}
		if (node_add(parent, kid)) {
			fg_yaml_free(kid);
			return fail_nomem(r->err, r->errlen, r->name);
		}
	}
}

static int read_scalar(struct reader *r, const yaml_event_t *ev, struct fg_yaml_node *n)
{
	n->len = ev->data.scalar.length;
	n->text = malloc(n->len + 1);
	if (!n->text)
		return fail_nomem(r->err, r->errlen, r->name);
	memcpy(n->text, ev->data.scalar.value, n->len);
	n->text[n->len] = '\0';
	return 0;
}

/* Build the node that starts with <ev> (borrowed), reading its children. */
static int read_node(struct reader *r, const yaml_event_t *ev, int depth,
                     struct fg_yaml_node **out)
{
	enum fg_yaml_kind kind = FG_YAML_SCALAR;
	struct fg_yaml_node *n;
	int rc;

	*out = NULL;
	rc = check_plain_event(r, ev, depth);
	if (rc)
		return rc;
	if (ev->type == YAML_SEQUENCE_START_EVENT)
		kind = FG_YAML_SEQ;
	else if (ev->type == YAML_MAPPING_START_EVENT)
		kind = FG_YAML_MAP;
	n = node_new(kind, ev->start_mark);
	if (!n)
		return fail_nomem(r->err, r->errlen, r->name);
	rc = kind == FG_YAML_SCALAR ? read_scalar(r, ev, n) : read_children(r, n, depth);
	if (rc) {
		fg_yaml_free(n);
		return rc;
	}
	*out = n;
	return 0;
}

/* Fetch the next event when only its type and position matter. */
static int next_bare(struct reader *r, yaml_event_type_t *type, yaml_mark_t *mark)
{
	yaml_event_t ev;
	int rc = next_event(r, &ev);

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
static int read_document(struct reader *r, struct fg_yaml_node **root)
{
	yaml_event_type_t type;
	yaml_mark_t mark;
	yaml_event_t ev;
	int rc;

	*root = NULL;
	rc = next_bare(r, &type, &mark);                /* stream start */
	if (rc == 0)
		rc = next_bare(r, &type, &mark);        /* document start, or the end of an empty stream */
	if (rc || type == YAML_STREAM_END_EVENT)
		return rc;
	rc = next_event(r, &ev);
	if (rc)
		return rc;
	rc = read_node(r, &ev, 1, root);
	yaml_event_delete(&ev);
	if (rc == 0)
		rc = next_bare(r, &type, &mark);        /* document end */
	if (rc == 0)
		rc = next_bare(r, &type, &mark);        /* stream end, or another document */
	if (rc == 0 && type == YAML_DOCUMENT_START_EVENT)
		rc = fail_at(r, mark_pos(mark.line), mark_pos(mark.column),
		             "multiple documents are not supported");
	if (rc) {
		fg_yaml_free(*root);
		*root = NULL;
	}
	return rc;
}

/* Parse <r->text> into a tree whose root is always a mapping; an empty
 * file becomes an empty mapping at 1:1 so "required" errors have a place. */
static int parse_tree(struct reader *r, struct fg_yaml_node **root)
{
	static const yaml_mark_t start = { 0, 0, 0 };
	int rc;

	if (!yaml_parser_initialize(&r->parser))
		return fail_nomem(r->err, r->errlen, r->name);
	/* libyaml asserts on a NULL input even when its length is 0 */
	yaml_parser_set_input_string(&r->parser, (const unsigned char *)(r->text ? r->text : ""),
	                             r->textlen);
	rc = read_document(r, root);
	yaml_parser_delete(&r->parser);
	if (rc)
		return rc;
	if (*root && (*root)->kind == FG_YAML_SCALAR && (*root)->len == 0) {
		fg_yaml_free(*root);
		*root = NULL;
	}
	if (!*root) {
		*root = node_new(FG_YAML_MAP, start);
		return *root ? 0 : fail_nomem(r->err, r->errlen, r->name);
	}
	if ((*root)->kind != FG_YAML_MAP) {
		rc = fg_yaml_fail(r->err, r->errlen, r->name, *root,
		                  "the top level must be a mapping of keys, not %s",
		                  fg_yaml_kind_name(*root));
		fg_yaml_free(*root);
		*root = NULL;
	}
	return rc;
}

int fg_yaml_parse(const char *name, const char *text, size_t len, const struct fg_yaml_limits *lim,
                  struct fg_yaml_node **root, char *err, size_t errlen)
{
	struct reader r = {
		.name = name, .err = err, .errlen = errlen,
		.lim = lim, .text = text, .textlen = len,
	};

	*root = NULL;
	if (len > lim->max_bytes)
		return fail_at(&r, 1, 1, "larger than %zu bytes", lim->max_bytes);
	return parse_tree(&r, root);
}

/* --- files ----------------------------------------------------------- */

/* Read all of <fd> into a new NUL-terminated buffer, at most <limit>
 * bytes.  Returns 0 or an errno. */
static int read_all(int fd, size_t limit, char **text, size_t *len)
{
	size_t cap = 0, n = 0;
	char *buf = NULL, *grown;
	ssize_t got;

	for (;;) {
		if (n == cap) {
			if (cap == limit)
				break;
			cap = cap == 0 ? READ_INITIAL : cap * 2;
			if (cap > limit || cap < n)
				cap = limit;
			grown = realloc(buf, cap + 1);
			if (!grown) {
				free(buf);
				return ENOMEM;
			}
			buf = grown;
		}
		got = read(fd, buf + n, cap - n);
		if (got == 0)
			break;
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int saved = errno;

			free(buf);
			return saved;
		}
		n += (size_t)got;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

static int fail_io(char *err, size_t errlen, const char *path, const char *what, int errnum)
{
	if (errnum == ENOMEM)
		return fail_nomem(err, errlen, path);
	if (err && errlen)
		snprintf(err, errlen, "%s: cannot %s: %s", path, what,
		         strcmp(what, "open") == 0 ? fg_file_why(errnum) : strerror(errnum));
	errno = errnum;
	return FG_EIO;
}

int fg_yaml_read_file(const char *path, size_t max_bytes, char **text, size_t *len,
                      char *err, size_t errlen)
{
	/* one byte past the cap tells "too large" from "exactly the cap"; the
	 * NUL needs one more, so keep both within size_t */
	size_t limit = max_bytes < SIZE_MAX - 1 ? max_bytes + 1 : SIZE_MAX - 1;
	int fd, rc;

	*text = NULL;
	*len = 0;
	fd = fg_file_open_read(path);
	if (fd < 0)
		return fail_io(err, errlen, path, "open", errno);
	rc = read_all(fd, limit, text, len);
	close(fd);
	if (rc)
		return fail_io(err, errlen, path, "read", rc);
	return 0;
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

char *fg_yaml_path_resolve(const char *basedir, const char *rel)
{
	char *cwd, *dir, *p;

	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	if (rel[0] == '/')
		return strdup(rel);
	if (basedir && basedir[0] == '/')
		return path_join(basedir, rel);
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return NULL;
	dir = basedir ? path_join(cwd, basedir) : cwd;
	p = dir ? path_join(dir, rel) : NULL;
	if (dir != cwd)
		free(dir);
	free(cwd);
	return p;
}

char *fg_yaml_path_dirname(const char *path)
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
