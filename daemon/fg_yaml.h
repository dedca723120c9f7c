/*
 * fg_yaml.h - an operator's YAML file (config, policy) as a small tree of
 * nodes that remember where they start, so every later check can report
 * "file:line:column: message".
 *
 * Built on libyaml's event parser.  The reader is hardened for files an
 * attacker may have touched and is fuzzed: size, depth and node count are
 * capped; anchors, aliases, tags and multiple documents are refused (they
 * change what a value means far from where it is read).  A tree is
 * immutable once built; free it with fg_yaml_free().  No global state: safe
 * on any thread.
 *
 * Lines and columns are 1-based, as editors count; a column counts
 * characters, not bytes, so "é: x" has its value at 1:4.  Every message is
 * written into a caller's buffer <err> of <errlen> bytes, cut to fit and
 * always NUL-terminated; a NULL <err> or a 0 <errlen> writes nothing.
 */
#ifndef FG_YAML_H
#define FG_YAML_H

#include <stdarg.h>
#include <stddef.h>

/* Longest piece of a value fg_yaml_show() quotes, in bytes, and a buffer
 * that always holds it whole: the bytes, "..." and the NUL. */
#define FG_YAML_SHOW_MAX 48
#define FG_YAML_SHOWLEN (FG_YAML_SHOW_MAX + 4)

enum fg_yaml_kind {
	FG_YAML_SCALAR,
	FG_YAML_SEQ,
	FG_YAML_MAP,
};

struct fg_yaml_node {
	enum fg_yaml_kind kind;
	unsigned line, col;             /* 1-based start of the node, as editors count */
	char *text;                     /* scalar: the value, NUL-terminated; else NULL */
	size_t len;                     /* scalar: bytes in <text> (a value may hold a NUL) */
	struct fg_yaml_node **kids;     /* seq: items; map: key, value, key, value... */
	size_t nkids;                   /* a mapping's is even; its keys are scalars */
	size_t cap;                     /* slots allocated in <kids> */
};

/* Caps that bound the memory and time any input can cost. */
struct fg_yaml_limits {
	size_t max_bytes;               /* the file; larger is refused */
	int max_depth;                  /* nesting of sequences and mappings; the root is level 1 */
	size_t max_nodes;               /* scalars, sequences and mappings in all, root included */
};

/*
 * fg_yaml_parse - parse <len> bytes at <text> (NULL with 0 is an empty
 * file) named <name> (not NULL) in messages, within <lim> (borrowed, not
 * NULL).  The root is always a mapping: an empty file (nothing, comments,
 * a bare "---" or an empty value) gives an empty mapping at 1:1 so
 * "required" errors have a place; any other root is an error.  Keys are
 * always scalars.  Duplicate keys are kept in order: refusing them is the
 * schema's job, which knows where the first one was.
 * On success stores the tree in <*root> (returned owned: fg_yaml_free),
 * returns 0 and leaves <err> untouched.  On failure leaves <*root> NULL and
 * returns:
 *   FG_ECONFIG  "name:line:column: message" in <err>: YAML syntax (libyaml's
 *               own words, with where the construct started), more than
 *               <lim->max_bytes> ("larger than N bytes", at 1:1), deeper
 *               than <lim->max_depth>, more than <lim->max_nodes> nodes,
 *               an anchor, alias, tag or second document, a key that is not
 *               a scalar, a root that is not a mapping;
 *   FG_ENOMEM   "name: out of memory" in <err>.
 */
int fg_yaml_parse(const char *name, const char *text, size_t len, const struct fg_yaml_limits *lim,
                  struct fg_yaml_node **root, char *err, size_t errlen);

/*
 * fg_yaml_read_file - read the file at <path> into a new NUL-terminated
 * buffer (<*text>, returned owned: free(); never NULL on success) of
 * <*len> bytes, reading at most <max_bytes> + 1 bytes so the caller (or
 * fg_yaml_parse) can tell it is too large.  Returns 0, or with <*text>
 * NULL: FG_EIO with "path: cannot open: reason" or "path: cannot read:
 * reason" in <err> and errno kept for the caller, or FG_ENOMEM with
 * "path: out of memory".  Blocks on the file system: call it from the main
 * thread or a loader, never from a worker's loop.
 */
int fg_yaml_read_file(const char *path, size_t max_bytes, char **text, size_t *len,
                      char *err, size_t errlen);

/* fg_yaml_free - free a tree.  NULL is a no-op. */
void fg_yaml_free(struct fg_yaml_node *n);

/*
 * fg_yaml_fail - write "<name>:<line>:<col>: <fmt...>" of node <at> (not
 * NULL) into <err> (<errlen> bytes; may be NULL/0).  Returns FG_ECONFIG, so
 * callers can `return fg_yaml_fail(...)`.  Control bytes and DEL in the
 * formatted text become '?', so no message can forge a log line.
 * fg_yaml_vfail is the same with a va_list, for a schema's own fail helper.
 */
int fg_yaml_fail(char *err, size_t errlen, const char *name, const struct fg_yaml_node *at,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* fg_yaml_printable - replace each control byte and DEL of the string <s>
 * with '?' (what fg_yaml_fail does to its text), for a message made
 * elsewhere that quotes a path or value as written and goes to a log. */
void fg_yaml_printable(char *s);
int fg_yaml_vfail(char *err, size_t errlen, const char *name, const struct fg_yaml_node *at,
                  const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

/*
 * fg_yaml_show - <n>'s text made safe to quote between single quotes in a
 * message, written into <buf> (<len> bytes, at least 4; FG_YAML_SHOWLEN
 * holds any value whole): control bytes, DEL and the single quote become
 * '?' (a hostile file cannot forge log lines or end the quote), and values
 * longer than FG_YAML_SHOW_MAX bytes, or than <buf>, are cut on a UTF-8
 * character boundary and end in "...".  A sequence or mapping shows as "".
 * Returns <buf>.
 */
const char *fg_yaml_show(const struct fg_yaml_node *n, char *buf, size_t len);

/* fg_yaml_kind_name - "a list", "a mapping", "a single value", "an empty value". */
const char *fg_yaml_kind_name(const struct fg_yaml_node *n);

/*
 * fg_yaml_map_get - the value of the first key equal to <key> in mapping
 * <map> (borrowed from the tree), or NULL when there is none or <map> is
 * not a mapping.  A key holding a NUL byte never equals a C string.
 */
const struct fg_yaml_node *fg_yaml_map_get(const struct fg_yaml_node *map, const char *key);

/* fg_yaml_map_key - as fg_yaml_map_get, but the key node itself: where an
 * error about the key as a whole points. */
const struct fg_yaml_node *fg_yaml_map_key(const struct fg_yaml_node *map, const char *key);

/*
 * fg_yaml_path_resolve - <rel> made absolute: an absolute <rel> is returned
 * as is, a relative one is joined to directory <basedir>.  A relative
 * <basedir> is taken from the current directory, and a NULL one is the
 * current directory.  Leading "./" in <rel> are dropped; nothing else is
 * normalised ("..", "//" and symlinks stay as written).  Returns a new
 * string (free()) or NULL with errno set (ENOMEM, or getcwd's error).
 */
char *fg_yaml_path_resolve(const char *basedir, const char *rel);

/*
 * fg_yaml_path_dirname - the directory part of absolute <path> ("/a/b" ->
 * "/a", "/a" -> "/"), as a new string (free()) or NULL with errno ENOMEM.
 */
char *fg_yaml_path_dirname(const char *path);

#endif /* FG_YAML_H */
