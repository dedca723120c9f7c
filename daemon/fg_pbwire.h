/*
 * fg_pbwire.h - read, skip and rewrite protobuf messages at the wire level,
 * without descriptors and without decoding into objects.
 *
 * Two layers:
 *   - primitives (varint, tag, skip a value, step over one field) that the
 *     rest of feedguard may use to look inside a message;
 *   - fg_pbwire_edit(), which runs a compiled program (fg_pbwire-t.h) over
 *     a message in one pass and appends the result to a struct fg_bufq
 *     (fg_pbwire_edit_ex() also takes the per-call values the program's
 *     REPLACE rules put in),
 *     and fg_pbwire_find(), which reads one field by a path of numbers.
 *
 * Reference: protobuf "Encoding" (protobuf.dev/programming-guides/encoding)
 * for varints, tags, wire types, packed fields and maps; "last one wins"
 * and merging of repeated embedded messages come from the same page.
 *
 * Stateless and reentrant: no globals, no libevent, no nghttp2.  Every
 * function may run on any thread, several at once, as long as each call
 * has its own <out> buffer.  The only allocation is the growth of that
 * struct fg_bufq, by realloc() (the unit test wraps realloc to fail it on
 * purpose).
 *
 * Input is hostile: every length is checked against the end of its
 * enclosing message before it is used, and nesting is bounded by
 * FG_PBWIRE_MAX_DEPTH so a crafted message cannot exhaust the stack.
 */
#ifndef FG_PBWIRE_H
#define FG_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_pbwire-t.h"

/* A varint carries 7 bits per byte, so 64 bits need at most 10 bytes. */
#define FG_PBWIRE_VARINT_MAX 10

/* Field numbers are 29 bits (the tag is number << 3 | wire type in 32 bits). */
#define FG_PBWIRE_NUMBER_MAX ((UINT32_C(1) << 29) - 1)

/*
 * How deep fg_pbwire_edit() follows RECURSE/DROP_KEYS into sub-messages
 * below the root, how many groups fg_pbwire_skip_value() nests, and the
 * longest path fg_pbwire_find() accepts.  protobuf's own parsers stop at
 * 100; we stop earlier because each level costs a C stack frame here and
 * no real request nests this deep.
 */
#define FG_PBWIRE_MAX_DEPTH 64

/*
 * One field as it appears on the wire, as filled by fg_pbwire_next_field()
 * and fg_pbwire_find().  Every pointer points into the caller's input, so
 * it is valid as long as that input is.
 */
struct fg_pbwire_field {
	uint32_t number;        /* 1 .. FG_PBWIRE_NUMBER_MAX */
	uint8_t wire_type;      /* enum fg_pbwire_type; never FG_PBWIRE_EGROUP */
	uint8_t tag_len;        /* bytes of the tag at <tag>: 1..10, non-minimal tags are legal */
	const uint8_t *tag;     /* the first byte of the field: [tag, end) is the field as it came */
	const uint8_t *value;   /* VARINT: the varint's first byte; I64/I32: the 8/4 little-endian
	                           bytes; LEN: the payload (after the length); SGROUP: the first
	                           byte after the start tag */
	size_t vlen;            /* bytes at <value>: the varint's length, 8, 4, the payload length,
	                           or the group's body without its end tag */
	uint64_t varint;        /* VARINT: the decoded value; LEN: the payload length; else 0 */
	const uint8_t *end;     /* one past the field (past the end tag for a group) */
};

/*
 * fg_pbwire_read_varint - decode the varint at <*p>, which must end before
 * <end>, into <*v> and move <*p> past it.  Non-minimal encodings (0x80 0x00
 * for 0) are valid protobuf and accepted.  Returns 0, or FG_EINVAL when the
 * input ends inside the varint, when it runs past 10 bytes, or when its
 * 10th byte is more than 1 (bits beyond 64, which no encoder produces);
 * <*p> and <*v> are then unchanged.
 */
int fg_pbwire_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/*
 * fg_pbwire_write_varint - write <v> as a minimal varint at <dst>, which
 * must have room for FG_PBWIRE_VARINT_MAX bytes.  Returns the number of
 * bytes written (1..10); cannot fail.
 */
size_t fg_pbwire_write_varint(uint8_t *dst, uint64_t v);

/* fg_pbwire_varint_size - the bytes fg_pbwire_write_varint() uses for <v>. */
size_t fg_pbwire_varint_size(uint64_t v);

/*
 * Appending fields, for the code that writes messages of its own (the
 * capture records).  Each appends to <out> and returns 0 or FG_ENOMEM
 * (<out> then holds what it held before).
 *   fg_pbwire_append_varint: field <field> (wire type 0) holding <v>; an
 *     int32/int64 -1 is (uint64_t)-1, as protobuf writes negative ints;
 *   fg_pbwire_append_len: field <field> (wire type 2) holding the <n>
 *     bytes at <p> (a string, bytes, or a message already serialized);
 *   fg_pbwire_append_len_head: only the tag and the length <n> of a
 *     wire type 2 field whose <n> bytes the caller appends next.
 */
int fg_pbwire_append_varint(struct fg_bufq *out, uint32_t field, uint64_t v);
int fg_pbwire_append_len(struct fg_bufq *out, uint32_t field, const void *p, size_t n);
int fg_pbwire_append_len_head(struct fg_bufq *out, uint32_t field, size_t n);

/*
 * fg_pbwire_append_varint_at - append field <path>[<depth> - 1] (wire type
 * 0) holding <v>, inside length-delimited fields <path>[0 .. <depth> - 1)
 * (each holding only the next), to <out>.  Appended after a message's own
 * bytes it sets that field without rewriting them: protobuf merges a
 * message's occurrences, and the last value of a scalar wins.  <depth> is
 * 1 to FG_PBWIRE_MAX_DEPTH.  Returns 0, FG_EINVAL for a bad <depth>, or
 * FG_ENOMEM (<out> then holds what it held before).
 */
int fg_pbwire_append_varint_at(struct fg_bufq *out, const uint32_t *path, size_t depth, uint64_t v);

/*
 * fg_pbwire_read_tag - decode the tag at <*p> (before <end>) into its field
 * <*number> and <*wire_type> and move <*p> past it.  Returns 0, or
 * FG_EINVAL for a bad varint, a tag above 32 bits, field number 0, or wire
 * type 6 or 7; <*p> is then unchanged.  Wire types 3 and 4 (groups) are
 * returned as they are: skipping them is fg_pbwire_skip_value()'s job.
 */
int fg_pbwire_read_tag(const uint8_t **p, const uint8_t *end, uint32_t *number,
                       uint8_t *wire_type);

/*
 * fg_pbwire_skip_value - move <*p> from just after a tag (field <number>,
 * <wire_type>) to just after that field's value, without looking at it.
 * Groups are skipped, not rejected: protobuf editions brought the group
 * encoding back as DELIMITED messages, so a proxy must pass them.  A start
 * group is skipped through its matching end tag (same field number), with
 * nested groups up to FG_PBWIRE_MAX_DEPTH deep.  Returns 0, or FG_EINVAL
 * when the value is truncated, a length runs past <end>, a group is not
 * closed by the end tag of its own number before <end>, groups nest too
 * deep, or <wire_type> is FG_PBWIRE_EGROUP (an end tag with no start) or
 * not a wire type; <*p> is then unchanged.
 */
int fg_pbwire_skip_value(const uint8_t **p, const uint8_t *end, uint32_t number,
                         uint8_t wire_type);

/*
 * fg_pbwire_next_field - the field iterator: read the field at <*p> (tag
 * and value, before <end>) into <*f> and move <*p> past it.  Loop with
 *     while (p < end) { if ((rv = fg_pbwire_next_field(&p, end, &f)) < 0) ... }
 * Returns 0, or FG_EINVAL for any of the errors of fg_pbwire_read_tag() and
 * fg_pbwire_skip_value() (including an end-group tag at this level); <*p>
 * is then unchanged and <*f> undefined.
 */
int fg_pbwire_next_field(const uint8_t **p, const uint8_t *end, struct fg_pbwire_field *f);

/*
 * fg_pbwire_msg_index - build <m>'s lookup table of the rules for field
 * numbers below FG_PBWIRE_INDEX_MAX (the node only, not its subs), so the
 * editor finds them without a search.  <m>->rules must be sorted already
 * and must not change afterwards.  Optional: an unindexed node is edited
 * the same way, a little more slowly.
 */
void fg_pbwire_msg_index(struct fg_pbwire_msg *m);

/*
 * fg_pbwire_edit - run <prog> over the message <in>[0 .. <len>) and append
 * the edited message to <out>.
 *
 * Per field of each message the program reaches (see fg_pbwire-t.h):
 *   - no rule: copied as it is, or dropped when the node is <allow_only>
 *     (unknown fields and groups too);
 *   - KEEP: copied as it is; when the rule has a <scalar> kind, the wire
 *     type must be that kind's or a packed LEN of whole elements, so a
 *     field kept by an allow-list cannot carry other data to the server
 *     as an "unknown field" of the wrong type;
 *   - DROP: every occurrence removed, whatever its wire type (a packed
 *     repeated field goes whole);
 *   - RECURSE: each occurrence must be LEN and is edited as a message
 *     with <sub> (a NULL <sub> is the empty program: parsed, copied); the
 *     length prefix is rewritten (minimal) only when the content changed,
 *     so changes propagate to every enclosing length;
 *   - COARSEN: each value, unpacked or each element of a packed LEN, is
 *     rounded to the nearest multiple of <precision>, halfway away from
 *     zero, keeping its wire type; see "Coarsening" below;
 *   - DROP_KEYS: each occurrence must be LEN and is a map entry; it is
 *     dropped when its key (field 1, last occurrence wins, absent means ""
 *     or 0) is in <keys>, else copied as it is.  String keys when
 *     <keys>->str is set (key must be LEN), integer keys when <keys>->num
 *     is set (key decoded by the rule's <scalar>; S_NONE means a varint
 *     read as int64, which covers int32, int64, uint32, uint64 and bool).
 * Field order is kept.  Anything the program does not change is copied
 * byte for byte, including non-minimal varints and lengths: a message with
 * nothing to strip comes out identical to <in>.
 *
 * <stats>[rule->stat] is incremented once per occurrence the rule dropped
 * or changed: per value for COARSEN (packed elements count one by one, so
 * packing does not change the counts), per sub-message whose content
 * changed for RECURSE, per map entry for DROP_KEYS.  Indexes >= <nstats>
 * are ignored (use UINT32_MAX to count nothing).  A field an <allow_only>
 * node drops for having no rule counts once in <stats>[node->unlisted_stat].
 *
 * Method: one pass, recursion only into sub-messages the program edits.
 * A sub-message's tag is copied, then room is left for its length, as
 * many bytes as the previous sub-message of the same parent needed (the
 * original length's size for the first); its content is appended, and the
 * length is written: the original bytes when the content is unchanged,
 * minimal when it changed, with one memmove of the content only when the
 * guess was wrong.  A run of repeated messages that all shrink, or all
 * stay, therefore costs one copy and no move.  A packed field keeps its
 * original length bytes until its content changes.  Per field: one-byte tags
 * and lengths under 16384 are read inline (longer ones, groups and errors
 * by the general reader), and the rule is found through the node's
 * index (fg_pbwire_msg_index()) or, above it or without one, by
 * walking the sorted rules forward as the field numbers rise, a binary
 * search only when a number goes back.  contrib/bench/pbwire-bench.c
 * measures it.
 *
 * Coarsening: floating kinds compute round(v / p) * p in double (NaN and
 * infinities are kept; so are values with |v / p| >= 2^48 for double or
 * 2^21 for float: they are already coarser than <p> can express, and
 * leaving them keeps the edit idempotent).  Integer kinds round exactly in 64-bit
 * integers with the step <p> rounded to the nearest integer; if rounding
 * away from zero would overflow the field's type, the value rounds toward
 * zero.  A <precision> that is not finite, that rounds to a step below 2
 * for integer kinds, or that is below FLT_MIN/DBL_MIN for float/double
 * leaves values as they are (the policy compiler should reject it).
 * A value is "changed" only if its decoded value changed; then it is
 * written minimal (int32 negatives as 10-byte sign-extended varints).
 *
 * Arguments: <in> may be NULL when <len> is 0; it must not point into
 * <out>'s memory, which appending may move.  <prog> NULL is the empty
 * program (no rules, not allow_only).  <out> (a queue, borrowed) is
 * appended to at its tail, whatever was consumed from its head before: the
 * editor keeps its positions relative to the head, so a reserve that
 * moves the bytes costs it nothing; on success the previous bytes are
 * untouched (they may have moved within <out>'s memory, as any append may
 * move them).  <stats> may be NULL when <nstats> is 0.  <changed> (may be NULL) gets 1 if the output differs from <in>,
 * else 0.  <why> (may be NULL) gets a static message on failure.
 *
 * Returns 0, or
 *   FG_EINVAL: <in> is not valid wire format where the program looks:
 *     truncated varint or length, length past its message, field number 0,
 *     bad wire type, unmatched or too deeply nested group, a RECURSE or
 *     DROP_KEYS field that is not LEN or not a message, a wire type that
 *     does not match a COARSEN or KEEP scalar (or a packed length that is
 *     not whole elements), a map key of the wrong wire type, messages
 *     nested more than FG_PBWIRE_MAX_DEPTH below the root; or the program
 *     itself is bad (unknown action, COARSEN without a scalar kind, KEEP
 *     with an unknown one, DROP_KEYS with a floating-point key kind);
 *   FG_ENOMEM: growing <out> failed.
 * On failure <out>'s length and bytes are as before the call (the
 * capacity may have grown), <*changed> is not set, and <stats> may already
 * hold the increments for the fields handled before the error: a caller
 * that needs exact counts passes a zeroed scratch array and adds it to the
 * real counters on success.
 */
int fg_pbwire_edit(const uint8_t *in, size_t len, const struct fg_pbwire_msg *prog,
                   struct fg_bufq *out, uint64_t *stats, size_t nstats,
                   int *changed, const char **why);

/*
 * fg_pbwire_edit_ex - fg_pbwire_edit() with the per-call values <ctx>
 * (borrowed; NULL: none) that REPLACE rules put in:
 *   - REPLACE: each occurrence must be LEN; it becomes the rule's tag and
 *     <ctx>->values[rule->arg] as a minimal length and bytes, counted and
 *     "changed" only when the bytes differ (an occurrence that already
 *     holds the value is copied as it came, so an edit of an edited
 *     message changes nothing).  When <ctx> has no such value (<arg> >=
 *     <nvalues> or its <data> NULL) every occurrence is dropped and
 *     counted: a field meant to be replaced never passes as it came.
 * Everything else, the arguments, the results and the errors are those of
 * fg_pbwire_edit(), plus FG_EINVAL for a REPLACE field that is not LEN.
 */
int fg_pbwire_edit_ex(const uint8_t *in, size_t len, const struct fg_pbwire_msg *prog,
                      const struct fg_pbwire_ctx *ctx, struct fg_bufq *out, uint64_t *stats, size_t nstats,
                      int *changed, const char **why);

/*
 * fg_pbwire_find - the value of the field reached by <path>[0 .. <depth>)
 * (field numbers; all but the last name message fields) in the message
 * <in>[0 .. <len>), with protobuf's merge semantics: the last occurrence
 * wins, searched through every occurrence of every enclosing message field
 * in order (a repeated message in the path therefore yields the last
 * element that has the field).  This is what the server will see for a
 * singular field, so feedguard and the server cannot be made to disagree
 * by sending a field twice.  Not modelled: a later member of the same
 * oneof clearing this one.
 *
 * On success <*f> describes the last occurrence: <f>->wire_type is as it
 * came, and the caller must check it (a LEN string, a VARINT enum); a
 * wrong type there means the server would treat the field as unknown, so
 * fail the request rather than guess.  Pointers in <*f> point into <in>.
 *
 * Every level the path goes through is parsed fully, so it is validated
 * like fg_pbwire_edit() would.  Returns 0, FG_ENOTFOUND when the field
 * does not occur (the caller applies the field's default), or FG_EINVAL
 * with a static <*why> (if <why> is not NULL) when a level on the path is
 * not valid wire format, a field on the path before the last is not LEN,
 * or <depth> is 0 or above FG_PBWIRE_MAX_DEPTH.  <*f> is set only on
 * success.
 */
int fg_pbwire_find(const uint8_t *in, size_t len, const uint32_t *path, size_t depth,
                   struct fg_pbwire_field *f, const char **why);

#endif /* FG_PBWIRE_H */
