/*
 * fg_pbwire-t.h - types of the wire editor's program: what to do to which
 * field number of a protobuf message, compiled by the policy from a
 * descriptor set and executed by fg_pbwire_edit() on raw wire bytes.
 *
 * A program is a tree of struct fg_pbwire_msg, one node per message type
 * reached by a path, with the field rules of that node sorted by field
 * number.  Everything is read-only once compiled and shared by every
 * worker; nothing here points back to descriptors or names.
 */
#ifndef FG_PBWIRE_T_H
#define FG_PBWIRE_T_H

#include <stddef.h>
#include <stdint.h>

/* Protobuf wire types (encoding.md). 3 and 4 are the obsolete groups. */
enum fg_pbwire_type {
	FG_PBWIRE_VARINT = 0,
	FG_PBWIRE_I64 = 1,
	FG_PBWIRE_LEN = 2,
	FG_PBWIRE_SGROUP = 3,
	FG_PBWIRE_EGROUP = 4,
	FG_PBWIRE_I32 = 5,
};

/* What a rule does to every occurrence of its field in a message. */
enum fg_pbwire_action {
	FG_PBWIRE_KEEP = 0,     /* copy as is (the point of an allow-list entry) */
	FG_PBWIRE_DROP,         /* remove every occurrence (all elements of a repeated field) */
	FG_PBWIRE_RECURSE,      /* the field is a message (or repeated message, or map):
	                           edit each occurrence with <sub> */
	FG_PBWIRE_COARSEN,      /* round a numeric scalar to a multiple of <precision>, each
	                           value of an unpacked or packed repeated field too */
	FG_PBWIRE_DROP_KEYS,    /* a map: drop the entries whose key is in <keys>, keep the
	                           rest as they are (values are not edited) */
	FG_PBWIRE_REPLACE,      /* a LEN field (string, bytes): each occurrence's value becomes
	                           the per-call value <arg> given to fg_pbwire_edit_ex(); a
	                           call without that value drops the field instead, so the
	                           original never passes */
};

/* Scalar kinds COARSEN understands; the wire type must match on input (or
 * be LEN: a packed repeated field of that kind).  KEEP and DROP_KEYS also
 * read the rule's <scalar>, see struct fg_pbwire_rule. */
enum fg_pbwire_scalar {
	FG_PBWIRE_S_NONE = 0,
	FG_PBWIRE_S_DOUBLE,     /* I64, IEEE double */
	FG_PBWIRE_S_FLOAT,      /* I32, IEEE float */
	FG_PBWIRE_S_INT32,      /* VARINT, two's complement, sign-extended to 10 bytes when negative */
	FG_PBWIRE_S_INT64,      /* VARINT */
	FG_PBWIRE_S_SINT32,     /* VARINT, zigzag */
	FG_PBWIRE_S_SINT64,     /* VARINT, zigzag */
	FG_PBWIRE_S_UINT32,     /* VARINT */
	FG_PBWIRE_S_UINT64,     /* VARINT */
	FG_PBWIRE_S_SFIXED32,   /* I32 */
	FG_PBWIRE_S_SFIXED64,   /* I64 */
	FG_PBWIRE_S_FIXED32,    /* I32 */
	FG_PBWIRE_S_FIXED64,    /* I64 */
};

struct fg_pbwire_msg;

/* A set of map keys (strings as bytes, or integers) for DROP_KEYS.  Exactly
 * one of <str> and <num> is set (if both are, <str> is used).  Matching is
 * a linear scan: keep sets small. */
struct fg_pbwire_keys {
	size_t n;
	const char *const *str;         /* n string keys (map<string, V>), or NULL */
	const size_t *str_len;          /* their lengths; NULL: <str> are NUL-terminated */
	const int64_t *num;             /* n integer keys (map<intN, V>), or NULL; a uint64
	                                   key above INT64_MAX is given as its int64 bits */
};

struct fg_pbwire_rule {
	uint32_t number;                /* field number, 1 .. 2^29-1 */
	uint8_t action;                 /* enum fg_pbwire_action */
	uint8_t scalar;                 /* enum fg_pbwire_scalar.  COARSEN: required, the
	                                   field's type.  KEEP: optional; when set, a value of
	                                   another wire type is malformed input (an allow-list
	                                   must not pass data the server would file as an
	                                   unknown field).  DROP_KEYS with <keys>->num: the key
	                                   type (S_NONE: varint read as int64; set it for sint
	                                   and fixed keys) */
	const struct fg_pbwire_msg *sub; /* RECURSE: program for the field's message (for a map:
	                                    the map entry message, fields 1 key and 2 value);
	                                    may point back up the tree for recursive types;
	                                    NULL: the empty program */
	double precision;               /* COARSEN: > 0; the value becomes round(v / p) * p,
	                                   halfway away from zero; integer kinds use <p>
	                                   rounded to an integer (a step below 2 does nothing) */
	const struct fg_pbwire_keys *keys; /* DROP_KEYS; NULL matches nothing */
	uint32_t stat;                  /* index into the caller's counters: bumped once per
	                                   occurrence dropped or changed by this rule (per
	                                   value for COARSEN, per changed sub-message for
	                                   RECURSE, per value replaced or dropped for
	                                   REPLACE); >= the caller's count (UINT32_MAX):
	                                   counted nowhere */
	uint32_t arg;                   /* REPLACE: index into the call's values
	                                   (struct fg_pbwire_ctx) */
};

/* Field numbers below this are found through a node's <index>, once built. */
#define FG_PBWIRE_INDEX_MAX 64

struct fg_pbwire_msg {
	uint8_t allow_only;             /* 1: fields without a rule (unknown ones and groups
	                                   too) are dropped, so a node's allow-list is its
	                                   KEEP, RECURSE, COARSEN and DROP_KEYS rules;
	                                   0: they are copied as they are */
	uint32_t unlisted_stat;         /* allow_only: counter bumped once per field occurrence
	                                   dropped for having no rule (ignored when >= nstats) */
	size_t nrules;
	const struct fg_pbwire_rule *rules;   /* sorted by <number>, no duplicates */
	uint8_t indexed;                /* 1: <index> was built by fg_pbwire_msg_index();
	                                   0 (a program written as a literal): rules are
	                                   searched, with the same results */
	uint8_t index[FG_PBWIRE_INDEX_MAX]; /* field number -> 1 + position in <rules>, 0: none */
};

/* One per-call value for REPLACE rules: bytes the caller owns for the
 * duration of the edit.  <data> NULL: the call has no such value. */
struct fg_pbwire_value {
	const uint8_t *data;
	size_t len;
};

/*
 * What one call of fg_pbwire_edit_ex() brings besides the shared program:
 * the values its REPLACE rules put in, indexed by a rule's <arg>.  The
 * program is compiled once and shared by every worker, but a pseudonym
 * belongs to one call, so it travels here, never in the rules.
 */
struct fg_pbwire_ctx {
	const struct fg_pbwire_value *values;   /* [nvalues], may be NULL when nvalues is 0 */
	size_t nvalues;
};

#endif /* FG_PBWIRE_T_H */
