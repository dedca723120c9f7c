/*
 * fg_pbjson.h - one protobuf message, as wire bytes, written as one line of
 * JSON, guided by a descriptor set (fg_schema).
 *
 * What `feedguard-replay dump` turns a capture into: JSON Lines for pandas,
 * R, DuckDB and jq.  So the output is deterministic (the same bytes and
 * schema give the same line), holds no newline, and is valid UTF-8 JSON
 * whatever the input: a message that cannot be rendered is an error, never
 * half a line.
 *
 * The mapping is proto3's JSON mapping (protobuf.dev/programming-guides/
 * json), with these choices:
 *   - keys are field names as the .proto spells them (protoc's
 *     preserving_proto_field_name), the names policies use, not lowerCamel;
 *   - int64, uint64, sint64, fixed64 and sfixed64 are decimal strings
 *     (JSON readers turn numbers into doubles, exact only to 2^53); 32-bit
 *     integers are numbers;
 *   - float and double are numbers, written as Python's repr() writes them
 *     (shortest digits that read back to the same value; "1.0", never "1",
 *     so a column of them is read as floating point whatever the values;
 *     exponent form below 1e-4 and from 1e16: "1e-05", "1.5e+16"), a float
 *     with the fewest digits from 6 up that read back to the same float, as
 *     json_format does; NaN and the infinities are the strings "NaN",
 *     "Infinity" and "-Infinity".  The digits are the shortest in the "C"
 *     LC_NUMERIC locale (the default of a program that never calls
 *     setlocale); under another, a value may get up to 17 digits, still
 *     valid JSON that reads back to the same value;
 *   - bool is true or false; an enum is its value's name (the first
 *     declared, for aliases), or its number when the number has no name;
 *   - a string is a JSON string: quote, backslash and control characters
 *     escaped (\b \f \n \r \t, else \u00XX), everything else as it came, and
 *     each byte that is not part of valid UTF-8 (RFC 3629: no overlong
 *     forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD;
 *   - bytes are standard base64 (RFC 4648 section 4) with padding;
 *   - a message is an object; a repeated field an array, in wire order,
 *     packed and unpacked occurrences both accepted, even mixed; a map an
 *     object in wire order, keyed by the key as a string ("42", "true"),
 *     an entry without key or value taking the default ("", 0, false, {});
 *     a key that comes twice stays twice (JSON readers keep the last, as
 *     protobuf does), since removing it would need memory per entry;
 *   - a non-repeated field that comes several times: the last occurrence
 *     for a scalar, string or bytes, and for a message the merge of all
 *     occurrences, rendered as the concatenation of their bytes (protobuf's
 *     merge on the wire, encoding.md "Last One Wins"); of a oneof, only
 *     the member that came last, as a parser would keep it;
 *   - only what is on the wire is written: a field absent from the wire is
 *     absent from the object (so proto3 defaults are omitted), and one
 *     present with its default value is written (a packed field of no
 *     elements is []);
 *   - google.protobuf.Timestamp is an RFC 3339 string in UTC with 0, 3, 6
 *     or 9 fraction digits ("2026-12-06T06:30:00.123Z") and
 *     google.protobuf.Duration a number of seconds with 0, 3, 6 or 9
 *     fraction digits and "s" ("1.500s", "-0.000001s"), as the mapping
 *     says; one out of the mapping's range (years 1 to 9999, nanos 0 to
 *     999999999; durations to 10000 years, nanos of the seconds' sign) or
 *     with unknown fields is written as a plain message.  Every other
 *     well-known type (Any, Struct, Value, wrappers, FieldMask, Empty) is
 *     written as a plain message;
 *   - unknown fields (numbers the descriptor lacks) are not dropped: the
 *     object ends with "_unknown", the array of their numbers, ascending
 *     and unique.  At most FG_PBJSON_MAX_UNKNOWN numbers are listed (the
 *     smallest); when there are more, "_unknown_truncated":true follows.
 *     Exception: fields of a map entry other than key and value are
 *     ignored, as protobuf's parsers ignore them.
 * Object keys come in field number order, then "_unknown".  Separators
 * are bare (",", ":"), as JSON Lines are usually written.
 *
 * Input is hostile: every length is checked against its enclosing message
 * (fg_pbwire), a field's wire type must be the one its declared type is
 * written with (or LEN for a packed repeated scalar), and nesting is
 * bounded by FG_PBJSON_MAX_DEPTH.
 *
 * Work: each message is read once to check it, once per declared field it
 * holds (to find the occurrences a parser keeps), once more per repeated
 * field or map, and once for its unknown fields, so linear in the message
 * for a given schema.  A message merged from several occurrences is read
 * through the records of the messages around it, which costs up to
 * FG_PBJSON_MAX_DEPTH times more for a chain of merges that deep.
 *
 * Stateless and reentrant: no globals, no libevent, no nghttp2.  Every
 * function may run on any thread, several at once, as long as each call
 * has its own <out>; the schema is only read.  The only allocation is the
 * growth of <out>, by realloc() (fg_bufq.h).  A call uses about 2 KiB of
 * stack per level of nesting, so up to 150 KiB for the deepest message
 * accepted.
 */
#ifndef FG_PBJSON_H
#define FG_PBJSON_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_pbwire.h"
#include "fg_schema.h"

/* Messages nested more than this below the one rendered fail with
 * FG_ETOOBIG: the editor's bound (fg_pbwire.h), for the same reason (a C
 * stack frame per level). */
#define FG_PBJSON_MAX_DEPTH FG_PBWIRE_MAX_DEPTH

/* Unknown field numbers listed per message (see "_unknown" above).  A
 * bound, so hostile input cannot make the list cost memory or quadratic
 * time; a schema that misses this many fields of one message is the
 * wrong schema. */
#define FG_PBJSON_MAX_UNKNOWN 256

/*
 * fg_pbjson_write - append the message <msg>[0 .. <len>) of type <type> to
 * <out> as one JSON value, with no newline: an object, or a string when
 * <type> is a Timestamp or Duration in range (see above).
 *
 * Arguments: <schema> (borrowed) is the set <type> (borrowed) comes from;
 * enum names are looked up in it (NULL: every enum is written as its
 * number).  <msg> may be NULL when <len> is 0 (the
 * empty message, "{}"); it must not point into <out>'s memory, which
 * appending may move.  <out> (a queue, borrowed) is appended to at its
 * tail; the bytes it held are untouched (they may move within its memory,
 * as any append may move them).  <why> (may be NULL) gets a static reason
 * on failure.
 *
 * Returns 0, or
 *   FG_EINVAL: <type> is NULL, or <msg> is not valid wire format for
 *     <type>: a bad tag (field number 0, wire type 6 or 7, an end group
 *     without its start), a truncated varint or length, a length past its
 *     message, an unclosed group or groups nested more than
 *     FG_PBWIRE_MAX_DEPTH deep, a field whose wire type is not its
 *     declared type's (LEN for a packed repeated scalar aside), a packed
 *     field that is not whole elements;
 *   FG_ETOOBIG: messages (or groups of a declared group field) nested
 *     more than FG_PBJSON_MAX_DEPTH below <msg>;
 *   FG_ENOMEM: growing <out> failed.
 * On failure <out>'s length and bytes are as before the call (the capacity
 * may have grown): the caller can write a line of its own instead.
 */
int fg_pbjson_write(struct fg_bufq *out, const struct fg_schema *schema,
                    const struct fg_schema_message *type, const uint8_t *msg, size_t len,
                    const char **why);

/*
 * fg_pbjson_write_string - append the <len> bytes at <s> to <out> as a JSON
 * string literal, quotes included, escaped and with invalid UTF-8 replaced
 * as for a string field (above).  For the dump tool's own fields (a method
 * name, a metadata value).  <s> may be NULL when <len> is 0 and must not
 * point into <out>'s memory.  Returns 0, or FG_ENOMEM with <out>'s length
 * and bytes as before.  Any thread.
 */
int fg_pbjson_write_string(struct fg_bufq *out, const uint8_t *s, size_t len);

/*
 * fg_pbjson_write_base64 - append the <len> bytes at <p> to <out> as a JSON
 * string literal of their standard base64 with padding, quotes included,
 * as for a bytes field.  <p> may be NULL when <len> is 0 and must not point
 * into <out>'s memory.  Returns 0, or FG_ENOMEM with <out>'s length and
 * bytes as before.  Any thread.
 */
int fg_pbjson_write_base64(struct fg_bufq *out, const uint8_t *p, size_t len);

#endif /* FG_PBJSON_H */
