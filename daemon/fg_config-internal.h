/*
 * fg_config-internal.h - what the config loader (fg_config.c), its walker
 * (fg_config_walk.c), its value readers (fg_config_value.c,
 * fg_config_addr.c) and its sections (fg_config_<section>.c) share.
 * Private to those files; everything else uses fg_config.h.
 *
 * Each top-level key of the file is a section: a struct fg_config_section
 * in its own fg_config_<section>.c, listed once in fg_config.c's table of
 * sections.  A section says how to read its value (a table of keys, or one
 * parse function), what it must have, its defaults, what it owns in the
 * snapshot, and what a reload may not change.  A new section is a new file
 * and one line in that table; the loader, the walker and the other
 * sections do not change.
 */
#ifndef FG_CONFIG_INTERNAL_H
#define FG_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fg_config.h"
#include "fg_yaml.h"

/* Keys per section, the size of the walker's duplicate-key table. */
#define FG_CONFIG_SECTION_MAX_KEYS 16

#define FG_CONFIG_USEC_PER_MS 1000LL
#define FG_CONFIG_USEC_PER_SEC 1000000LL
#define FG_CONFIG_USEC_PER_MIN (60 * FG_CONFIG_USEC_PER_SEC)
#define FG_CONFIG_USEC_PER_HOUR (60 * FG_CONFIG_USEC_PER_MIN)
#define FG_CONFIG_KIB 1024LL
#define FG_CONFIG_MIB (1024 * FG_CONFIG_KIB)

/* The field <field> of struct fg_config, for struct fg_config_key's <off>. */
#define FG_CONFIG_OFF(field) offsetof(struct fg_config, field)
#define FG_CONFIG_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One load in progress. */
struct fg_config_loader {
	const char *name;           /* file name in messages */
	char *basedir;              /* absolute; relative paths in values start here */
	char *err;                  /* caller's message buffer, may be NULL */
	size_t errlen;
	struct fg_config *cfg;      /* the snapshot being filled */
	char key[64];               /* dotted name of the key being parsed ("limits.stream_window") */
	unsigned flags;             /* FG_CONFIG_LOAD_* */
};

/* One key of a section whose value is a mapping. */
struct fg_config_key {
	const char *name;
	/* Reads <val> (the value of <key>) into the snapshot; 0 or a negative
	 * FG_E* with the message written (fg_config_fail). */
	int (*parse)(struct fg_config_loader *l, const struct fg_config_key *k,
	             const struct fg_yaml_node *key, const struct fg_yaml_node *val);
	size_t off;                 /* the field in struct fg_config, for the shared value readers */
	int64_t min, max;           /* allowed values, in the field's unit */
	const char *note;           /* the reason for the range, for messages; NULL: none */
};

/* One top-level key of the file. */
struct fg_config_section {
	const char *name;
	/* A section of one value (listen: a list, workers: a number) reads it
	 * here.  NULL: the value is a mapping of <keys>, which the walker reads. */
	int (*parse)(struct fg_config_loader *l, const struct fg_yaml_node *key,
	             const struct fg_yaml_node *val);
	const struct fg_config_key *keys;
	size_t nkeys;               /* at most FG_CONFIG_SECTION_MAX_KEYS */
	/* Cross-key checks once the section's mapping is read, before the next
	 * section: <seen> holds each key's node or NULL, indexed like <keys>;
	 * <where> is the section's key.  NULL: none. */
	int (*check)(struct fg_config_loader *l, const struct fg_yaml_node *where,
	             const struct fg_yaml_node *const *seen);
	/* The message when the file has no such key, at the top mapping's
	 * position, once the whole file is read.  NULL: the section may be left out. */
	const char *required;
	/* Writes the section's defaults into a zeroed snapshot.  NULL: zero is the default. */
	void (*defaults)(struct fg_config *cfg);
	/* Work that needs the whole file (the policy needs the worker count),
	 * run in table order for the sections the file has, once every
	 * section is read; <val> is the section's value.  NULL: none. */
	int (*finish)(struct fg_config_loader *l, const struct fg_yaml_node *val);
	/* Frees what the section owns in <cfg> (a partly filled snapshot too).  NULL: nothing. */
	void (*release)(struct fg_config *cfg);
	/* The name of the key a reload cannot change when <next> changes it
	 * from <cur> ("admin.listen"), else NULL.  NULL: all reloadable. */
	const char *(*reload_fixed)(const struct fg_config *cur, const struct fg_config *next);
};

/* The sections, one per file, in the order of fg_config.c's table. */
extern const struct fg_config_section fg_config_listen_section;
extern const struct fg_config_section fg_config_workers_section;
extern const struct fg_config_section fg_config_upstream_section;
extern const struct fg_config_section fg_config_limits_section;
extern const struct fg_config_section fg_config_timeouts_section;
extern const struct fg_config_section fg_config_admin_section;
extern const struct fg_config_section fg_config_metrics_section;
extern const struct fg_config_section fg_config_log_section;
extern const struct fg_config_section fg_config_policy_section;
extern const struct fg_config_section fg_config_pseudonym_keys_section;
extern const struct fg_config_section fg_config_state_section;
extern const struct fg_config_section fg_config_capture_section;

/* --- fg_config.c: messages --- */

/* fg_config_fail - "file:line:column: <fmt...>" at <at>'s position into
 * the loader's buffer; returns FG_ECONFIG. */
int fg_config_fail(struct fg_config_loader *l, const struct fg_yaml_node *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* fg_config_fail_nomem - "file: out of memory"; returns FG_ENOMEM. */
int fg_config_fail_nomem(struct fg_config_loader *l);

/* --- fg_config_walk.c: the schema walker --- */

/*
 * fg_config_walk_sections - read mapping <root> (the whole file) against
 * the <n> sections of <sections>, in the file's order: an unknown or
 * repeated key is an error at that key; each section's value goes to its
 * parse function or, for a mapping, to fg_config_walk_keys.  Then each
 * missing required section is an error at <root>.  Stores each section's
 * value node, or NULL, in <vals> (<n> entries, indexed like <sections>).
 * Returns 0 or the first error (message written).
 */
int fg_config_walk_sections(struct fg_config_loader *l, const struct fg_config_section *const *sections,
                            size_t n, const struct fg_yaml_node *root, const struct fg_yaml_node **vals);

/* --- fg_config_value.c: scalar values, ranges from the key --- */

/* fg_config_value_want - 0 if <val> is a non-empty scalar without NUL
 * bytes; else FG_ECONFIG naming the key being parsed and <what> was wanted. */
int fg_config_value_want(struct fg_config_loader *l, const struct fg_yaml_node *val, const char *what);

/* fg_config_value_integer - decimal text <s> with an optional '-', nothing
 * else, into <*out>: 0, FG_EINVAL (not such a number) or FG_ETOOBIG. */
int fg_config_value_integer(const char *s, int64_t *out);

/* Key parsers for struct fg_config_key: an integer, a duration or a size
 * within the key's <min>..<max>, stored at its <off> as the type named. */
int fg_config_value_int(struct fg_config_loader *l, const struct fg_config_key *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val);
int fg_config_value_u32(struct fg_config_loader *l, const struct fg_config_key *k,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val);
int fg_config_value_duration(struct fg_config_loader *l, const struct fg_config_key *k,
                             const struct fg_yaml_node *key, const struct fg_yaml_node *val);
int fg_config_value_size32(struct fg_config_loader *l, const struct fg_config_key *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val);
int fg_config_value_size64(struct fg_config_loader *l, const struct fg_config_key *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val);

/* --- fg_config_addr.c: host:port --- */

/* What an address may be, for fg_config_addr_parse's <flags>. */
#define FG_CONFIG_ADDR_F_NAMES 0x1      /* "*" and "localhost" as hosts */
#define FG_CONFIG_ADDR_F_PORT0 0x2      /* port 0: the kernel picks one */

/* fg_config_addr_parse - resolve "host:port" <text> into <out> (numeric
 * hosts only, see struct fg_config_addr); NULL on success, else a static
 * message saying why not. */
const char *fg_config_addr_parse(const char *text, unsigned flags, struct fg_config_addr *out);

/* fg_config_addr_port - the port of parsed address <a> (0: the kernel picks). */
unsigned fg_config_addr_port(const struct fg_config_addr *a);

/* fg_config_addr_read - fg_config_addr_parse of scalar <val>, with an
 * error at <val> naming the key being parsed. */
int fg_config_addr_read(struct fg_config_loader *l, const struct fg_yaml_node *val, unsigned flags,
                        struct fg_config_addr *out);

#endif /* FG_CONFIG_INTERNAL_H */
