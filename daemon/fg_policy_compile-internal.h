/*
 * fg_policy_compile-internal.h - what the policy compiler's files share.
 * Private to fg_policy_compile.c (the driver) and the fg_policy_*.c files
 * it runs; everything else uses fg_policy_compile.h.
 *
 * A policy is read level by level: the file, each method, each rule block.
 * Each level is a table of keys (struct fg_policy_key), and each key has
 * its own compile function, in the file that owns that kind of rule:
 *   the file      descriptor_set (driver), bands and unknown_band
 *                 (fg_policy_bands.c), rule_sets (fg_policy_rulesets.c),
 *                 methods (fg_policy_methods.c);
 *   a method      user_id and age_band (fg_policy_sources.c), request and
 *                 response (fg_policy_blocks.c);
 *   a rule block  bands (fg_policy_blocks.c), keep_only, remove, coarsen,
 *                 pseudonymize and remove_headers (fg_policy_strip.c).
 * A list of rule blocks is written in place or named: a scalar names a
 * rule set (fg_policy_compile_rule_list), compiled again for each method
 * that uses it.
 * A new kind of rule is a new file whose keys are added to its level's
 * table; the walker (fg_policy_compile_keys_check and _run) refuses unknown
 * and repeated keys and runs the compile functions in table order, whatever
 * the order in the file, so a key may rely on those before it.
 */
#ifndef FG_POLICY_COMPILE_INTERNAL_H
#define FG_POLICY_COMPILE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fg_pbwire-t.h"
#include "fg_policy-t.h"
#include "fg_schema.h"
#include "fg_yaml.h"

/* Keys of one level (the file, a method, a rule block). */
#define FG_POLICY_LEVEL_MAX_KEYS 32

#define FG_POLICY_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One compile in progress. */
struct fg_policy_comp {
	const char *name;               /* file name in messages */
	char *basedir;                  /* relative paths in values start here */
	char *err;                      /* caller's message buffer, may be NULL */
	size_t errlen;
	struct fg_policy *pol;          /* the policy being built; its arena owns every allocation */
	struct fg_schema *schema;       /* the descriptor set, once descriptor_set is read */
	size_t stat_cap;                /* room in pol->stat_names */
	unsigned no_stats;              /* programs compiled now count nothing (capture's redaction) */
	const char *dir;                /* "request" or "response", for stat names */
	const struct fg_yaml_node *label_maps; /* the top-level label_maps, once read */
	uint32_t unlisted;              /* the keep_only block's counter for what it drops, at
	                                   every level; UINT32_MAX outside such a block */
	const struct fg_yaml_node *rule_sets;   /* the rule_sets mapping; NULL: none */
	const struct fg_yaml_node *method;      /* the method being compiled (its path as
	                                           written), for messages; NULL outside one */
	const struct fg_yaml_node *set_name;    /* the rule set fg_policy_compile_rule_list()
	                                           last resolved; NULL: the list was inline */
	const struct fg_yaml_node *set_list;    /* its list: errors inside it name the set and
	                                           the method it is compiled for */
	const char *set_what;                   /* the key it was named under ("request") */
};

/* A node of a wire-editing program while it is built: the pbwire node plus
 * the room its rule array has (one slot per field of the message type,
 * which bounds the rules a node can get). */
struct fg_policy_prog_node {
	struct fg_pbwire_msg msg;
	struct fg_pbwire_rule *rules;
	size_t cap;
	const struct fg_schema_message *type;
};

/* One rule block while its keys are compiled. */
struct fg_policy_block {
	const struct fg_schema_message *type;   /* the message its field paths start from */
	unsigned char sel[FG_POLICY_MAX_BANDS]; /* 1 for each band it applies to */
	struct fg_policy_edit edit;             /* what it does, given to each selected band */
	struct fg_policy_prog_node *strip;      /* the strip rules' program; NULL until one makes it */
};

/* Where a key is compiled: what the levels above it have set up. */
struct fg_policy_scope {
	const struct fg_yaml_node *map;         /* the mapping the key belongs to: where an error
	                                           about a missing key points */
	const struct fg_yaml_node *method_key;  /* a method and below: its path, as written */
	struct fg_policy_method *method;        /* a method and below */
	const struct fg_schema_message *in;     /* a method and below: its request type */
	const struct fg_schema_message *out;    /* a method and below: its response type */
	struct fg_policy_block *block;          /* a rule block */
};

/* Flags of a struct fg_policy_key. */
#define FG_POLICY_KEY_REQUEST 0x1       /* a rule block key: request blocks only */
#define FG_POLICY_KEY_RESPONSE 0x2      /* a rule block key: response blocks only */
#define FG_POLICY_KEY_ALWAYS 0x4        /* compile runs when the key is absent too, with
                                           <val> NULL: to require it or default it */

struct fg_policy_key {
	const char *name;
	unsigned flags;                 /* FG_POLICY_KEY_*; neither direction: every block */
	/* Compiles <val> (the key's value, NULL only with FG_POLICY_KEY_ALWAYS)
	 * within <s>; 0 or a negative FG_E* with the message written. */
	int (*compile)(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *val);
};

/*
 * Where one of the compiler's key tables sits in a policy, for
 * fg_policy_compile_keys_each(): each file lists its tables in its
 * fg_policy_<file>_mounts[] (ended by a NULL <path>), beside the tables,
 * so the list of keys is read from the tables the compiler checks
 * mappings against.  A new table gets its line there.
 */
struct fg_policy_mount {
	const char *path;               /* the mapping's place, in fg_policy_compile.h's convention:
	                                   "" the file, "methods.<method>.feed" */
	const struct fg_policy_key *const *level;  /* a level's table, or NULL */
	size_t nlevel;
	const char *const *record;      /* else a record's NULL-terminated list, as
	                                   fg_policy_compile_check_record takes it */
};

extern const struct fg_policy_mount fg_policy_bands_mounts[];
extern const struct fg_policy_mount fg_policy_methods_mounts[];
extern const struct fg_policy_mount fg_policy_sources_mounts[];
extern const struct fg_policy_mount fg_policy_blocks_mounts[];
extern const struct fg_policy_mount fg_policy_strip_mounts[];
extern const struct fg_policy_mount fg_policy_capture_mounts[];
extern const struct fg_policy_mount fg_policy_filter_mounts[];
extern const struct fg_policy_mount fg_policy_limits_mounts[];

/* The keys, by the file that compiles them. */
extern const struct fg_policy_key fg_policy_bands_key;             /* bands */
extern const struct fg_policy_key fg_policy_bands_unknown_key;     /* unknown_band */
extern const struct fg_policy_key fg_policy_rulesets_key;          /* rule_sets */
extern const struct fg_policy_key fg_policy_methods_key;           /* methods */
extern const struct fg_policy_key fg_policy_sources_user_id_key;   /* user_id */
extern const struct fg_policy_key fg_policy_sources_age_band_key;  /* age_band */
extern const struct fg_policy_key fg_policy_blocks_request_key;    /* request */
extern const struct fg_policy_key fg_policy_blocks_response_key;   /* response */
extern const struct fg_policy_key fg_policy_strip_keep_only_key;   /* keep_only */
extern const struct fg_policy_key fg_policy_strip_remove_key;      /* remove */
extern const struct fg_policy_key fg_policy_strip_coarsen_key;     /* coarsen */
extern const struct fg_policy_key fg_policy_strip_pseudonymize_key; /* pseudonymize */
extern const struct fg_policy_key fg_policy_capture_redact_key;    /* capture_redact */
extern const struct fg_policy_key fg_policy_strip_headers_key;     /* remove_headers */
extern const struct fg_policy_key fg_policy_filter_classes_key;    /* classes (top level) */
extern const struct fg_policy_key fg_policy_filter_label_maps_key; /* label_maps (top level) */
extern const struct fg_policy_key fg_policy_filter_feed_key;       /* feed (a method) */
extern const struct fg_policy_key fg_policy_filter_filter_key;     /* filter (a method) */
extern const struct fg_policy_key fg_policy_limits_time_zone_key;  /* time_zone (top level) */
extern const struct fg_policy_key fg_policy_limits_time_zones_key; /* time_zones (top level) */
extern const struct fg_policy_key fg_policy_limits_key;            /* limits (top level, after methods) */
extern const struct fg_policy_key fg_policy_limits_method_zone_key; /* time_zone (a method) */
extern const struct fg_policy_key fg_policy_limits_screen_time_key; /* screen_time (a method, after feed) */

/* --- fg_policy_compile.c: messages, memory, keys --- */

/* fg_policy_compile_fail - "file:line:column: <fmt...>" at <at>, control
 * bytes shown as '?'; returns FG_ECONFIG. */
int fg_policy_compile_fail(struct fg_policy_comp *c, const struct fg_yaml_node *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* fg_policy_compile_nomem - "file: out of memory"; returns FG_ENOMEM. */
int fg_policy_compile_nomem(struct fg_policy_comp *c);

/* fg_policy_compile_alloc - <size> zeroed bytes owned by the policy (freed
 * with it), or NULL. */
void *fg_policy_compile_alloc(struct fg_policy_comp *c, size_t size);

/* fg_policy_compile_strndup - <len> bytes at <s> and a NUL, owned by the
 * policy, or NULL. */
char *fg_policy_compile_strndup(struct fg_policy_comp *c, const char *s, size_t len);

/* fg_policy_compile_dup - scalar <n>'s text, owned by the policy, or NULL. */
char *fg_policy_compile_dup(struct fg_policy_comp *c, const struct fg_yaml_node *n);

/* fg_policy_compile_header_name - scalar <n>'s text lowercased, as HTTP/2
 * sends metadata names (RFC 9113 section 8.2.1), owned by the policy, into
 * <*out>: 0, or FG_ECONFIG ("<what> must be a single value") or FG_ENOMEM
 * with the message written. */
int fg_policy_compile_header_name(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *what,
                                  char **out);

/* fg_policy_compile_want_scalar - 0 if <n> is a non-empty scalar, else
 * FG_ECONFIG: "<what> must be a single value, not ...". */
int fg_policy_compile_want_scalar(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *what);

/* fg_policy_compile_want_kind - 0 if <n> is of <kind>, else FG_ECONFIG:
 * "<what> must be a list, not ...". */
int fg_policy_compile_want_kind(struct fg_policy_comp *c, const struct fg_yaml_node *n,
                                enum fg_yaml_kind kind, const char *what);

/*
 * fg_policy_compile_check_record - for a mapping of fixed shape (a band, a
 * source, a coarsen entry): 0 if every key of <map> is in <allowed>
 * (NULL-terminated) and none appears twice; else FG_ECONFIG at that key,
 * naming <where> and the valid keys.
 */
int fg_policy_compile_check_record(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                   const char *const *allowed, const char *where);

/*
 * fg_policy_compile_keys_check - 0 if every key of mapping <map> is one of
 * the <n> keys of <keys> (at most FG_POLICY_LEVEL_MAX_KEYS; assert it
 * beside the table) allowed in <dir> (FG_POLICY_KEY_REQUEST or _RESPONSE
 * in a rule block, 0 elsewhere), and none appears twice; else FG_ECONFIG
 * at that key, naming <where> and the keys allowed there.
 */
int fg_policy_compile_keys_check(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                 const struct fg_policy_key *const *keys, size_t n, unsigned dir,
                                 const char *where);

/*
 * fg_policy_compile_keys_run - run the compile function of each key of
 * <keys> allowed in <dir>, in table order, whatever the order of mapping
 * <s->map>: for the keys it has, and the FG_POLICY_KEY_ALWAYS ones.
 * Returns 0 or the first error.  Call fg_policy_compile_keys_check first.
 */
int fg_policy_compile_keys_run(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                               const struct fg_policy_key *const *keys, size_t n, unsigned dir);

/* --- fg_policy_rulesets.c --- */

/*
 * fg_policy_compile_rule_list - the list of rule blocks that value <val>
 * of key <what> ("request", "response", or another key taking rule blocks)
 * stands for, into <*list>: <val> itself when it is a list, or the list of
 * the rule set that scalar <val> names (top-level key rule_sets).  The
 * caller compiles <*list> against the current method's types as if it were
 * written in place; until the next call, an error reported at a node inside
 * a named set's list gets " (rule set 'NAME', compiled for METHOD WHAT)"
 * after its message, so the user sees where the rule is written and what
 * it was being checked against.  Returns 0, or FG_ECONFIG with the message
 * written: at <val> when it is neither a list nor a non-empty scalar, or
 * names no rule set.  Nothing is allocated.
 */
int fg_policy_compile_rule_list(struct fg_policy_comp *c, const struct fg_yaml_node *val, const char *what,
                                const struct fg_yaml_node **list);

/* fg_policy_rulesets_in_set - 1 when node <at> (may be NULL) is inside the
 * list of the rule set fg_policy_compile_rule_list() last resolved, else 0. */
int fg_policy_rulesets_in_set(const struct fg_policy_comp *c, const struct fg_yaml_node *at);

/* --- fg_policy_filter.c --- */

/* fg_policy_filter_read_classes - a class or category name, or a list of
 * them (scalar or sequence <v>), as a class mask into <*mask>: 0, or
 * FG_ECONFIG at the name that is neither. */
int fg_policy_filter_read_classes(struct fg_policy_comp *c, const struct fg_yaml_node *v, uint64_t *mask);

/* fg_policy_filter_pass_rules - rules that let every item through, with
 * the default thresholds: what a band without a filter block is scanned
 * with when its exposure is counted. */
void fg_policy_filter_pass_rules(const struct fg_policy *p, struct fg_items_rules *r);

/* --- fg_policy_sources.c --- */

/* fg_policy_sources_read - source mapping <m> ({header} or {field}; NULL:
 * none) of key <what> against request type <type> into <s>: 0 or
 * FG_ECONFIG / FG_ENOMEM with the message written. */
int fg_policy_sources_read(struct fg_policy_comp *c, const struct fg_yaml_node *m,
                           const struct fg_schema_message *type, struct fg_policy_source *s, const char *what);

/* --- fg_policy_blocks.c --- */

/* fg_policy_blocks_read_bands - a block's "bands" value <b> ([names] or
 * "*"; NULL is an error at <map>) into <sel> (a flag per band). */
int fg_policy_blocks_read_bands(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                const struct fg_yaml_node *b, unsigned char *sel);

/* --- fg_policy_bands.c --- */

/* fg_policy_bands_find - the index of the band named <name>, or -1. */
int fg_policy_bands_find(const struct fg_policy *p, const char *name);

/* --- fg_policy_path.c: field paths as written --- */

/* One component of a field path: a name, optionally followed by [*]
 * (every map entry's value) or ["key"] / [123] (one map key). */
struct fg_policy_path_part {
	char name[128];
	int sel;                    /* 0 none, 1 [*], 2 [key] */
	char key[128];
	size_t keylen;
};

/* fg_policy_path_split - split <text> ("a.b[\"k\"].c") into at most <max>
 * <parts>; returns their count, or -1 on a syntax error or more parts. */
int fg_policy_path_split(const char *text, struct fg_policy_path_part *parts, size_t max);

/* --- fg_policy_prog.c: wire-editing programs --- */

/* What a field path does in a program. */
enum fg_policy_prog_action {
	FG_POLICY_PROG_KEEP,        /* keep_only entry */
	FG_POLICY_PROG_DROP,        /* remove */
	FG_POLICY_PROG_COARSEN,     /* coarsen; under keep_only, kept too */
	FG_POLICY_PROG_PSEUDONYMIZE, /* pseudonymize (REPLACE with the call's user key);
	                               under keep_only, kept too */
	FG_POLICY_PROG_ERASE,       /* the capture's integer user id: removed whatever
	                               rule the block gave it (keep_only's, coarsen's);
	                               nothing to do where keep_only drops it already */
};

/* fg_policy_prog_new - a node for message <type>; <allow_only> 1: fields
 * without a rule are dropped (counted in c->unlisted).  NULL: no memory. */
struct fg_policy_prog_node *fg_policy_prog_new(struct fg_policy_comp *c, const struct fg_schema_message *type,
                                               int allow_only);

/*
 * fg_policy_prog_apply - resolve the field path written in scalar <at>
 * against <root>'s type and add what <action> does to it (<precision>:
 * COARSEN's step) to the tree under <root>; <allow_only> is the kind of
 * node the path creates right below <root> (deeper ones take the kind of
 * the node they hang from: copy-the-rest inside a field kept whole).  Returns 0, or FG_ECONFIG at <at> (no such
 * field, a type the action cannot take, a clash with an earlier rule) or
 * FG_ENOMEM, with the message written.
 */
int fg_policy_prog_apply(struct fg_policy_comp *c, struct fg_policy_prog_node *root,
                         const struct fg_yaml_node *at, enum fg_policy_prog_action action, double precision,
                         int allow_only);

/* fg_policy_prog_stat - the counter named "<c->dir>:<path>" into <*stat>,
 * made on first use: 0, FG_ETOOBIG (too many counters) or FG_ENOMEM; no
 * message written. */
int fg_policy_prog_stat(struct fg_policy_comp *c, const char *path, uint32_t *stat);

/* fg_policy_sources_check_enum_bands - FG_ECONFIG (the message at the
 * method's age_band field in <root>) when a band's match list holds a
 * value name of the enum a method reads the band from, and no method
 * reads the band as text.  After the methods are compiled, before the
 * schema goes. */
int fg_policy_sources_check_enum_bands(struct fg_policy_comp *c, const struct fg_yaml_node *root);

/* fg_policy_prog_check_required - FG_ECONFIG (the message at <at>) when
 * an allow-list under <root> drops a field the contract marks required
 * (proto2): the receiver would refuse the message, as remove refuses to
 * drop one.  Before fg_policy_prog_freeze. */
int fg_policy_prog_check_required(struct fg_policy_comp *c, const struct fg_policy_prog_node *root,
                                  const struct fg_yaml_node *at);

/* fg_policy_prog_freeze - sort and index the rules of every node under
 * <root>, as fg_pbwire runs them.  The tree is read-only after. */
void fg_policy_prog_freeze(struct fg_policy_prog_node *root);

#endif /* FG_POLICY_COMPILE_INTERNAL_H */
