/*
 * fg_schema.h - a platform's protobuf contract, read from its descriptor set.
 *
 * feedguard never compiles a platform's .proto files in.  The operator gives
 * it the FileDescriptorSet that protoc writes
 *
 *     protoc --include_imports --descriptor_set_out=platform.pb a.proto ...
 *
 * and the policy names the platform's methods and fields.  This module loads
 * that file (with protobuf-c and a descriptor.pb-c generated at build time
 * from Debian's descriptor.proto) and answers the policy compiler's
 * questions: which messages a gRPC method takes and returns, and for a field
 * name its number, type, cardinality and encoding.  It never touches a
 * message on the wire: fg_pbwire does that with the field numbers resolved
 * here.
 *
 * A schema is built whole by fg_schema_load() and never changed after: every
 * lookup is a read of immutable memory (sorted arrays and binary search, no
 * lazy caches), so one schema may be shared by any number of threads without
 * locks, as long as fg_schema_free() runs after the last of them is done.
 *
 * Every struct is opaque.  The message, field, oneof and method pointers the
 * lookups return are borrowed from the schema and valid until
 * fg_schema_free(); they are never NULL unless the documentation says so.
 * Names are returned as the .proto file spells them; message and enum full
 * names carry the package and the enclosing messages, without protoc's
 * leading dot ("feedguard.ranking.v1.Signals.WatchEvent").
 *
 * Type names in the set are resolved across all its files: fully qualified
 * (".pkg.Outer.Inner", what protoc writes) and, for hand-made sets, relative
 * to the enclosing scope as protoc resolves them.  A type the set does not
 * contain (a set built without --include_imports) fails the load.
 */
#ifndef FG_SCHEMA_H
#define FG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

/* Room for any message fg_schema_load() writes to <err>. */
#define FG_SCHEMA_ERRLEN 512
/* Largest descriptor set accepted (FG_ETOOBIG above).  Sets of large
 * platforms with every import run to a few MiB. */
#define FG_SCHEMA_MAX_FILE (64u << 20)
/* What a descriptor set may take once unpacked (fg_pbsize.h), at most: a
 * real one counts about 13 times its size (the reference contract's and
 * protobuf's own well-known types'), so this takes sets of about 10 MiB;
 * 64 MiB of empty file entries unpacked to 7.8 GB, at -t and on reload. */
#define FG_SCHEMA_MAX_UNPACKED ((uint64_t)128 << 20)
/* Deepest nesting of messages accepted (FG_ETOOBIG beyond): a top-level
 * message is at 1, a message nested in it at 2.  protobuf's own parsers
 * give up at 100 levels of any nesting; protoc never writes sets near it. */
#define FG_SCHEMA_MAX_NESTING 64
/* Most bytes the full names of all messages, enums and method paths may
 * take together (FG_ETOOBIG above).  Each full name repeats its scope, so
 * a small crafted set could otherwise need gigabytes; real ones need well
 * under a MiB. */
#define FG_SCHEMA_MAX_NAMES (64u << 20)
/* Most bytes of candidate names that resolving relative type names
 * ("Inner", not ".pkg.Outer.Inner") may try in one load (FG_ETOOBIG
 * above): each is tried in every enclosing scope, so a scope with many dots
 * could otherwise make a small set take minutes.  protoc writes absolute
 * names, which cost one lookup and are not counted. */
#define FG_SCHEMA_MAX_LOOKUP (16u << 20)
/* Field numbers are 1 .. 2^29-1 (protobuf language spec, "Field numbers"). */
#define FG_SCHEMA_MAX_FIELD_NUMBER ((1u << 29) - 1)

struct fg_schema;
struct fg_schema_message;
struct fg_schema_field;
struct fg_schema_oneof;
struct fg_schema_method;
struct fg_schema_enum;

/* A field's declared type.  The values are those of
 * google.protobuf.FieldDescriptorProto.Type. */
enum fg_schema_type {
	FG_SCHEMA_DOUBLE = 1,
	FG_SCHEMA_FLOAT = 2,
	FG_SCHEMA_INT64 = 3,
	FG_SCHEMA_UINT64 = 4,
	FG_SCHEMA_INT32 = 5,
	FG_SCHEMA_FIXED64 = 6,
	FG_SCHEMA_FIXED32 = 7,
	FG_SCHEMA_BOOL = 8,
	FG_SCHEMA_STRING = 9,
	FG_SCHEMA_GROUP = 10,           /* proto2 group: a message between start/end-group tags */
	FG_SCHEMA_MESSAGE = 11,
	FG_SCHEMA_BYTES = 12,
	FG_SCHEMA_UINT32 = 13,
	FG_SCHEMA_ENUM = 14,
	FG_SCHEMA_SFIXED32 = 15,
	FG_SCHEMA_SFIXED64 = 16,
	FG_SCHEMA_SINT32 = 17,
	FG_SCHEMA_SINT64 = 18,
};

/* fg_schema_field_flags() bits. */
enum fg_schema_field_flag {
	FG_SCHEMA_F_REPEATED = 1u << 0, /* repeated (map fields too: a map is a repeated entry message) */
	FG_SCHEMA_F_PACKED = 1u << 1,   /* a repeated numeric scalar that writers encode packed: proto3
	                                   unless [packed = false], proto2 only with [packed = true].
	                                   Readers must accept both encodings whatever this says
	                                   (encoding.md, "Packed Repeated Fields"). */
	FG_SCHEMA_F_MAP = 1u << 2,      /* map<K, V>: fg_schema_field_message() is the entry message,
	                                   see fg_schema_field_map_key/_value */
	FG_SCHEMA_F_REQUIRED = 1u << 3, /* proto2 required: a message without it fails to parse at the
	                                   receiver, so a policy must not strip it */
};

/* fg_schema_method_flags() bits. */
enum fg_schema_method_flag {
	FG_SCHEMA_M_CLIENT_STREAMING = 1u << 0,  /* the client sends a stream of requests */
	FG_SCHEMA_M_SERVER_STREAMING = 1u << 1,  /* the server sends a stream of responses */
};

/*
 * fg_schema_load - read the FileDescriptorSet at <path> and index it.
 *
 * On success stores a new schema in <*out> (returned owned: release with
 * fg_schema_free) and returns 0.  On failure leaves <*out> NULL, writes a
 * one-line message starting with <path> into <err> (<errlen> bytes,
 * NUL-terminated, FG_SCHEMA_ERRLEN is enough; <err> may be NULL) and returns:
 *   FG_EIO       the file cannot be opened or read (the message has strerror)
 *   FG_ETOOBIG   the file is larger than FG_SCHEMA_MAX_FILE or would take more
 *                than FG_SCHEMA_MAX_UNPACKED unpacked, its messages nest
 *                deeper than FG_SCHEMA_MAX_NESTING, its full names take more
 *                than FG_SCHEMA_MAX_NAMES bytes, or its relative type names
 *                more than FG_SCHEMA_MAX_LOOKUP bytes of lookups
 *   FG_EINVAL    the file is not a FileDescriptorSet (does not parse, holds no
 *                file, a name or number is missing or invalid, a type or a
 *                field is defined twice, a type name does not resolve, an
 *                unsupported syntax, a proto3 optional field shares its oneof).
 *                Names are protoc's: letters, digits and _; a package is such
 *                names joined by single dots.
 *   FG_ENOMEM    allocation failed
 * Blocking file I/O: call it from the main thread (config load), never from
 * a worker's loop.
 */
int fg_schema_load(const char *path, struct fg_schema **out, char *err, size_t errlen);

/*
 * fg_schema_load_buffer - as fg_schema_load, from the <len> serialized bytes
 * at <buf> (borrowed; not kept after the call).  <name> (borrowed) starts
 * error messages in place of a path.  For tests and the fuzzer.  Returns 0,
 * FG_ETOOBIG (any cause but the size of <buf>), FG_EINVAL or
 * FG_ENOMEM as fg_schema_load.  Any thread.
 */
int fg_schema_load_buffer(const char *name, const uint8_t *buf, size_t len,
                          struct fg_schema **out, char *err, size_t errlen);

/* Bytes of fg_schema_digest(). */
#define FG_SCHEMA_DIGEST_LEN 32

/*
 * fg_schema_digest - the SHA-256 of the bytes <s> was loaded from
 * (FG_SCHEMA_DIGEST_LEN bytes, owned by <s>): what the policy's id is
 * made of, so two loads of one set agree.  Any thread.
 */
const uint8_t *fg_schema_digest(const struct fg_schema *s);

/* fg_schema_free - release <schema> and everything borrowed from it.  NULL
 * does nothing.  Only once no thread uses it any more. */
void fg_schema_free(struct fg_schema *schema);

/*
 * fg_schema_find_method - the method whose gRPC request path is <path>,
 * "/" full-service-name "/" method-name, e.g.
 * "/feedguard.ranking.v1.Ranker/RankFeed" (as in the :path header; exact,
 * case-sensitive).  NULL if the set has no such method.  Any thread.
 */
const struct fg_schema_method *fg_schema_find_method(const struct fg_schema *schema, const char *path);

/* fg_schema_nmethods, fg_schema_method_at - every method of the set's
 * services, in order of their paths (i < fg_schema_nmethods). */
size_t fg_schema_nmethods(const struct fg_schema *schema);
const struct fg_schema_method *fg_schema_method_at(const struct fg_schema *schema, size_t i);

/* fg_schema_find_message - the message with full name <name> ("pkg.Msg",
 * "pkg.Outer.Inner"; a leading dot is accepted), or NULL.  Any thread. */
const struct fg_schema_message *fg_schema_find_message(const struct fg_schema *schema, const char *name);

/* Method accessors.  <m> is never NULL.  Any thread. */
const char *fg_schema_method_path(const struct fg_schema_method *m);               /* "/pkg.Svc/M" */
const struct fg_schema_message *fg_schema_method_input(const struct fg_schema_method *m);
const struct fg_schema_message *fg_schema_method_output(const struct fg_schema_method *m);
unsigned fg_schema_method_flags(const struct fg_schema_method *m);                 /* FG_SCHEMA_M_* */

/* fg_schema_message_name - full name of <msg>, without the leading dot. */
const char *fg_schema_message_name(const struct fg_schema_message *msg);

/* fg_schema_message_is_map_entry - 1 if <msg> is the entry message protoc
 * made for a map<K, V> field (option map_entry), 0 otherwise. */
int fg_schema_message_is_map_entry(const struct fg_schema_message *msg);

/* fg_schema_message_nfields / _field_at - the fields of <msg> in field
 * number order; <i> must be below nfields.  Oneof members are included. */
size_t fg_schema_message_nfields(const struct fg_schema_message *msg);
const struct fg_schema_field *fg_schema_message_field_at(const struct fg_schema_message *msg, size_t i);

/* fg_schema_find_field - the field of <msg> named <name> (as declared in the
 * .proto, not the JSON name), or NULL.  Any thread. */
const struct fg_schema_field *fg_schema_find_field(const struct fg_schema_message *msg, const char *name);

/* fg_schema_find_field_number - the field of <msg> with number <number>, or
 * NULL.  Any thread. */
const struct fg_schema_field *fg_schema_find_field_number(const struct fg_schema_message *msg,
                                                          uint32_t number);

/* fg_schema_find_oneof - the oneof of <msg> named <name>, or NULL.  The
 * hidden oneofs protoc makes for proto3 `optional` fields are not oneofs
 * here and are never found.  Any thread. */
const struct fg_schema_oneof *fg_schema_find_oneof(const struct fg_schema_message *msg, const char *name);

/* Field accessors.  <f> is never NULL.  Any thread. */
const char *fg_schema_field_name(const struct fg_schema_field *f);
uint32_t fg_schema_field_number(const struct fg_schema_field *f);
enum fg_schema_type fg_schema_field_type(const struct fg_schema_field *f);
unsigned fg_schema_field_flags(const struct fg_schema_field *f);                   /* FG_SCHEMA_F_* */
/* The message the field belongs to. */
const struct fg_schema_message *fg_schema_field_parent(const struct fg_schema_field *f);
/* MESSAGE and GROUP fields: the field's message type (for a map field, the
 * entry message); NULL for every other type. */
const struct fg_schema_message *fg_schema_field_message(const struct fg_schema_field *f);
/* MESSAGE, GROUP and ENUM fields: the full name of the type, no leading
 * dot; NULL for scalars. */
const char *fg_schema_field_type_name(const struct fg_schema_field *f);
/* Map fields: the entry's key field (number 1) and value field (number 2);
 * NULL when FG_SCHEMA_F_MAP is not set. */
const struct fg_schema_field *fg_schema_field_map_key(const struct fg_schema_field *f);
const struct fg_schema_field *fg_schema_field_map_value(const struct fg_schema_field *f);
/* The oneof the field is a member of, or NULL (proto3 `optional` fields
 * included: their oneof is protoc's bookkeeping, not the author's). */
const struct fg_schema_oneof *fg_schema_field_oneof(const struct fg_schema_field *f);

/* Oneof accessors: its name and its member fields in field number order
 * (<i> below nfields).  <o> is never NULL.  Any thread. */
const char *fg_schema_oneof_name(const struct fg_schema_oneof *o);
size_t fg_schema_oneof_nfields(const struct fg_schema_oneof *o);
const struct fg_schema_field *fg_schema_oneof_field_at(const struct fg_schema_oneof *o, size_t i);

/*
 * fg_schema_find_enum - the enum with full name <name> (as
 * fg_schema_field_type_name() gives it; a leading dot is accepted), or
 * NULL; its values in declaration order (an alias appears under each of
 * its names).  Any thread.
 */
const struct fg_schema_enum *fg_schema_find_enum(const struct fg_schema *schema, const char *name);
size_t fg_schema_enum_nvalues(const struct fg_schema_enum *e);
const char *fg_schema_enum_value_name(const struct fg_schema_enum *e, size_t i);
int32_t fg_schema_enum_value_number(const struct fg_schema_enum *e, size_t i);

/* fg_schema_type_name - the .proto keyword of <type> ("int32", "message",
 * ...), "?" for a value outside the enum.  For messages to operators. */
const char *fg_schema_type_name(enum fg_schema_type type);

/* fg_schema_type_wire - the wire type (encoding.md: 0 VARINT, 1 I64,
 * 2 LEN, 3 SGROUP, 5 I32) that one unpacked value of <type> is written
 * with; -1 for a value outside the enum.  A packed repeated field is one LEN
 * record whatever its type. */
int fg_schema_type_wire(enum fg_schema_type type);

#endif /* FG_SCHEMA_H */
