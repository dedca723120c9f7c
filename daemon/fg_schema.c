/*
 * fg_schema.c - a FileDescriptorSet read with protobuf-c, indexed for the
 * policy compiler.
 *
 * Before protobuf-c unpacks the bytes, one walk over them bounds how deep
 * messages nest (protobuf-c recurses without a limit).  Loading is then
 * four passes over the unpacked set, which the schema keeps (its
 * names are borrowed from it): collect every message and enum under its full
 * name; sort them and refuse a name defined twice; build each message's
 * fields (types resolved, flags computed, sorted by number and by name) and
 * oneofs; finally link map fields to their entries and collect the methods.
 * After that nothing changes, so lookups need no lock.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <protobuf-c/protobuf-c.h>

#include "descriptor.pb-c.h"
#include "fg_error.h"
#include "fg_file.h"
#include "fg_pbsize.h"
#include "fg_pbwire.h"
#include "fg_schema.h"

typedef Google__Protobuf__FileDescriptorSet pb_set_t;
typedef Google__Protobuf__FileDescriptorProto pb_file_t;
typedef Google__Protobuf__DescriptorProto pb_msg_t;
typedef Google__Protobuf__FieldDescriptorProto pb_field_t;
typedef Google__Protobuf__ServiceDescriptorProto pb_service_t;
typedef Google__Protobuf__EnumDescriptorProto pb_enum_t;

struct fg_schema_field {
	const char *name;                       /* borrowed from the unpacked set */
	uint32_t number;
	uint8_t type;                           /* enum fg_schema_type */
	uint8_t flags;                          /* FG_SCHEMA_F_* */
	const char *type_name;                  /* message or enum full name (owned by the schema); NULL for scalars */
	const struct fg_schema_message *message; /* MESSAGE, GROUP (and map entry) type */
	const struct fg_schema_message *parent;
	const struct fg_schema_oneof *oneof;    /* real oneof it belongs to, or NULL */
	const struct fg_schema_field *map_key;  /* MAP: entry field 1 */
	const struct fg_schema_field *map_value; /* MAP: entry field 2 */
};

struct fg_schema_oneof {
	const char *name;                       /* borrowed from the unpacked set */
	int synthetic;                          /* protoc's oneof for a proto3 optional field: hidden */
	size_t nfields;
	const struct fg_schema_field **fields;  /* members, by number */
};

struct fg_schema_message {
	char *name;                             /* full name without the leading dot */
	const pb_msg_t *desc;                   /* borrowed from the set; read while loading */
	int proto3;                             /* syntax of its file: decides the packed default */
	int map_entry;                          /* option map_entry */
	size_t nfields;
	struct fg_schema_field *fields;         /* sorted by number */
	const struct fg_schema_field **by_name; /* the same, sorted by name */
	size_t noneofs;
	struct fg_schema_oneof *oneofs;         /* declaration order (fields refer to them by index);
	                                           a message has a handful at most: searched linearly */
};

struct fg_schema_method {
	char *path;                             /* "/pkg.Service/Method" */
	unsigned flags;                         /* FG_SCHEMA_M_* */
	const struct fg_schema_message *input;
	const struct fg_schema_message *output;
};

/* An enum: its full name first, so name comparisons see it as a char *. */
struct fg_schema_enum {
	char *name;
	const pb_enum_t *desc;
};

struct fg_schema {
	pb_set_t *set;                          /* the unpacked set; every borrowed name points into it */
	size_t nmessages;
	struct fg_schema_message *messages;     /* sorted by name */
	size_t nenums;
	struct fg_schema_enum *enums;           /* sorted by full name */
	size_t nmethods;
	struct fg_schema_method *methods;       /* sorted by path */
	uint8_t digest[FG_SCHEMA_DIGEST_LEN];   /* SHA-256 of the set's bytes */
};

/* Field numbers of descriptor.proto on the one path where it recurses:
 * FileDescriptorSet.file, FileDescriptorProto.message_type and
 * DescriptorProto.nested_type. */
#define PB_SET_FILE 1
#define PB_FILE_MESSAGE_TYPE 4
#define PB_MSG_NESTED_TYPE 3

/* What the passes share: the schema being built and where errors go. */
struct loader {
	struct fg_schema *s;
	const char *source;                     /* path or name, first word of every error */
	char *err;
	size_t errlen;
	size_t name_bytes;                      /* full names kept so far, against FG_SCHEMA_MAX_NAMES */
	size_t lookup_bytes;                    /* relative candidates tried, against FG_SCHEMA_MAX_LOOKUP */
};

static int fail(struct loader *ld, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes "<source>: <message>" to the loader's error buffer; returns <rc>. */
static int fail(struct loader *ld, int rc, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ld->err == NULL || ld->errlen == 0)
		return rc;
	n = snprintf(ld->err, ld->errlen, "%s: ", ld->source);
	if (n < 0 || (size_t)n >= ld->errlen)
		return rc;
	va_start(ap, fmt);
	vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return rc;
}

/* "<prefix>.<name>", or <name> alone when <prefix> is NULL or empty; NULL on
 * allocation failure.  Returned owned (free()). */
static char *join_name(const char *prefix, const char *name)
{
	size_t plen = prefix ? strlen(prefix) : 0, nlen = strlen(name);
	char *out = malloc(plen + nlen + 2);

	if (out == NULL)
		return NULL;
	if (plen == 0) {
		memcpy(out, name, nlen + 1);
		return out;
	}
	memcpy(out, prefix, plen);
	out[plen] = '.';
	memcpy(out + plen + 1, name, nlen + 1);
	return out;
}

static int cmp_message(const void *a, const void *b)
{
	return strcmp(((const struct fg_schema_message *)a)->name,
	              ((const struct fg_schema_message *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_method(const void *a, const void *b)
{
	return strcmp(((const struct fg_schema_method *)a)->path,
	              ((const struct fg_schema_method *)b)->path);
}

static int cmp_field_number(const void *a, const void *b)
{
	uint32_t x = ((const struct fg_schema_field *)a)->number;
	uint32_t y = ((const struct fg_schema_field *)b)->number;

	return (x > y) - (x < y);
}

static int cmp_field_name(const void *a, const void *b)
{
	return strcmp((*(const struct fg_schema_field *const *)a)->name,
	              (*(const struct fg_schema_field *const *)b)->name);
}

/* ---- before unpacking: how deep messages nest ---- */

/* The DescriptorProto at [p, end), itself at nesting <depth>, and those it
 * nests.  Returns 0, FG_ETOOBIG past FG_SCHEMA_MAX_NESTING, or FG_EINVAL
 * for bytes that are no protobuf message. */
static int scan_message(const uint8_t *p, const uint8_t *end, unsigned depth)
{
	struct fg_pbwire_field f;
	int rc;

	if (depth > FG_SCHEMA_MAX_NESTING)
		return FG_ETOOBIG;
	while (p < end) {
		if ((rc = fg_pbwire_next_field(&p, end, &f)) != 0)
			return rc;
		if (f.number == PB_MSG_NESTED_TYPE && f.wire_type == FG_PBWIRE_LEN &&
		    (rc = scan_message(f.value, f.value + f.vlen, depth + 1)) != 0)
			return rc;
	}
	return 0;
}

/*
 * protobuf-c unpacks a nested message by recursing, with no depth limit,
 * and pass 1 below recurses the same way: a set of 140 KiB whose messages
 * nested 20000 deep overflowed the stack.  DescriptorProto.nested_type is
 * the only recursion of descriptor.proto, so bounding it on the wire first
 * bounds both.  Bytes fg_pbwire cannot walk are refused here rather than
 * left unscanned.  Returns 0, FG_ETOOBIG or FG_EINVAL, with a message.
 */
static int check_nesting(struct loader *ld, const uint8_t *buf, size_t len)
{
	const uint8_t *p = buf, *end, *q;
	struct fg_pbwire_field file, f;
	int rc = 0;

	if (len == 0)
		return 0;               /* buf may be NULL: no arithmetic on it */
	end = buf + len;
	while (rc == 0 && p < end) {
		if ((rc = fg_pbwire_next_field(&p, end, &file)) != 0 ||
		    file.number != PB_SET_FILE || file.wire_type != FG_PBWIRE_LEN)
			continue;
		for (q = file.value; rc == 0 && q < file.value + file.vlen;)
			if ((rc = fg_pbwire_next_field(&q, file.value + file.vlen, &f)) == 0 &&
			    f.number == PB_FILE_MESSAGE_TYPE && f.wire_type == FG_PBWIRE_LEN)
				rc = scan_message(f.value, f.value + f.vlen, 1);
	}
	if (rc == FG_ETOOBIG)
		return fail(ld, rc, "messages nest more than %d deep", FG_SCHEMA_MAX_NESTING);
	if (rc != 0)
		return fail(ld, FG_EINVAL, "not a FileDescriptorSet (it does not parse as one; "
		            "make it with protoc --include_imports --descriptor_set_out)");
	return 0;
}

/* ---- pass 1: every message and enum under its full name ---- */

/*
 * Counts <len> more bytes of kept full names against FG_SCHEMA_MAX_NAMES.
 * A full name repeats its whole scope, so a long package or message name
 * over many short declarations would turn a set of kilobytes into
 * gigabytes of names (170 KiB made 790 MB).  Returns 0 or FG_ETOOBIG.
 */
static int charge_name(struct loader *ld, size_t len)
{
	if (len > FG_SCHEMA_MAX_NAMES - ld->name_bytes)
		return fail(ld, FG_ETOOBIG, "the full names of its types and methods take more than %u MiB",
		            FG_SCHEMA_MAX_NAMES >> 20);
	ld->name_bytes += len;
	return 0;
}

/* join_name() for a name the schema keeps, charged with charge_name(). */
static int keep_name(struct loader *ld, const char *prefix, const char *name, char **out)
{
	size_t plen = prefix ? strlen(prefix) : 0;
	int rc;

	*out = NULL;
	if ((rc = charge_name(ld, plen + (plen > 0) + strlen(name) + 1)) != 0)
		return rc;
	if ((*out = join_name(prefix, name)) == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	return 0;
}

/* 1 when the <len> bytes at <s> are a name as protoc checks one
 * (descriptor.cc, ValidateSymbolName): letters, digits and '_'. */
static int is_name(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return len > 0;
}

/* 1 when <s> is names joined by single dots, as a package must be. */
static int is_dotted_name(const char *s)
{
	const char *dot;

	for (; (dot = strchr(s, '.')) != NULL; s = dot + 1)
		if (!is_name(s, (size_t)(dot - s)))
			return 0;
	return is_name(s, strlen(s));
}

/*
 * Refuses a missing <name> or one that is not a name: <what> ("a field")
 * declared in <scope>.  Full names are the scope's and the name joined by a
 * dot, so a dot in a name, or a leading one in a package, would make a type
 * that no lookup reaches or that reads as declared elsewhere.
 */
static int check_name(struct loader *ld, const char *name, const char *what, const char *scope)
{
	if (scope == NULL || *scope == '\0')
		scope = "the top scope";
	if (name == NULL || *name == '\0')
		return fail(ld, FG_EINVAL, "%s in %s has no name", what, scope);
	if (!is_name(name, strlen(name)))
		return fail(ld, FG_EINVAL, "%s in %s: \"%s\" is not a name (letters, digits and _)",
		            what, scope, name);
	return 0;
}

static void count_message(const pb_msg_t *d, size_t *nmsg, size_t *nenum)
{
	size_t i;

	(*nmsg)++;
	*nenum += d->n_enum_type;
	for (i = 0; i < d->n_nested_type; i++)
		count_message(d->nested_type[i], nmsg, nenum);
}

static int add_enum(struct loader *ld, const char *prefix, const pb_enum_t *d)
{
	char *full;
	int rc;

	if ((rc = check_name(ld, d->name, "an enum", prefix)) != 0 ||
	    (rc = keep_name(ld, prefix, d->name, &full)) != 0)
		return rc;
	ld->s->enums[ld->s->nenums].name = full;
	ld->s->enums[ld->s->nenums++].desc = d;
	return 0;
}

/* Adds <d> (declared in <prefix>: a package or a message) and what it nests. */
static int add_message(struct loader *ld, const char *prefix, const pb_msg_t *d, int proto3)
{
	struct fg_schema_message *m;
	size_t i;
	int rc;

	if ((rc = check_name(ld, d->name, "a message", prefix)) != 0)
		return rc;
	m = &ld->s->messages[ld->s->nmessages];
	if ((rc = keep_name(ld, prefix, d->name, &m->name)) != 0)
		return rc;
	ld->s->nmessages++;
	m->desc = d;
	m->proto3 = proto3;
	m->map_entry = d->options != NULL && d->options->has_map_entry && d->options->map_entry;
	for (i = 0; i < d->n_enum_type; i++)
		if ((rc = add_enum(ld, m->name, d->enum_type[i])) != 0)
			return rc;
	for (i = 0; i < d->n_nested_type; i++)
		if ((rc = add_message(ld, m->name, d->nested_type[i], proto3)) != 0)
			return rc;
	return 0;
}

/* 1 for proto3, 0 for proto2; -1 for what we do not know (editions): its
 * defaults (packed, presence) differ and guessing would edit wrongly. */
static int file_syntax(const pb_file_t *f)
{
	if (f->syntax == NULL || *f->syntax == '\0' || strcmp(f->syntax, "proto2") == 0)
		return 0;
	if (strcmp(f->syntax, "proto3") == 0)
		return 1;
	return -1;
}

static int add_file(struct loader *ld, const pb_file_t *f)
{
	const char *pkg = f->package;
	int proto3 = file_syntax(f), rc;
	size_t i;

	if (f->name == NULL || *f->name == '\0')
		return fail(ld, FG_EINVAL, "not a FileDescriptorSet (a file has no name)");
	if (proto3 < 0)
		return fail(ld, FG_EINVAL, "%s: syntax \"%s\" is not supported (proto2 and proto3 are)",
		            f->name, f->syntax);
	if (pkg != NULL && *pkg != '\0' && !is_dotted_name(pkg))
		return fail(ld, FG_EINVAL, "%s: package \"%s\" is not a dotted name (letters, digits and _ "
		            "between single dots)", f->name, pkg);
	for (i = 0; i < f->n_enum_type; i++)
		if ((rc = add_enum(ld, pkg, f->enum_type[i])) != 0)
			return rc;
	for (i = 0; i < f->n_message_type; i++)
		if ((rc = add_message(ld, pkg, f->message_type[i], proto3)) != 0)
			return rc;
	return 0;
}

static int collect_types(struct loader *ld)
{
	const pb_set_t *set = ld->s->set;
	size_t nmsg = 0, nenum = 0, i, j;
	int rc;

	for (i = 0; i < set->n_file; i++) {
		nenum += set->file[i]->n_enum_type;
		for (j = 0; j < set->file[i]->n_message_type; j++)
			count_message(set->file[i]->message_type[j], &nmsg, &nenum);
	}
	ld->s->messages = calloc(nmsg ? nmsg : 1, sizeof(*ld->s->messages));
	ld->s->enums = calloc(nenum ? nenum : 1, sizeof(*ld->s->enums));
	if (ld->s->messages == NULL || ld->s->enums == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	for (i = 0; i < set->n_file; i++)
		if ((rc = add_file(ld, set->file[i])) != 0)
			return rc;
	return 0;
}

/* ---- pass 2: sorted, each name once ---- */

static const struct fg_schema_message *lookup_message(const struct fg_schema *s, const char *name)
{
	struct fg_schema_message key = { .name = (char *)name };

	return bsearch(&key, s->messages, s->nmessages, sizeof(*s->messages), cmp_message);
}

static const struct fg_schema_enum *lookup_enum_type(const struct fg_schema *s, const char *name)
{
	return bsearch(&name, s->enums, s->nenums, sizeof(*s->enums), cmp_str);
}

static const char *lookup_enum(const struct fg_schema *s, const char *name)
{
	const struct fg_schema_enum *e = lookup_enum_type(s, name);

	return e ? e->name : NULL;
}

/* A name defined twice (two files with one package, a set concatenated by
 * hand) would make every lookup of it a guess. */
static int sort_types(struct loader *ld)
{
	struct fg_schema *s = ld->s;
	size_t i;

	qsort(s->messages, s->nmessages, sizeof(*s->messages), cmp_message);
	qsort(s->enums, s->nenums, sizeof(*s->enums), cmp_str);
	for (i = 1; i < s->nmessages; i++)
		if (strcmp(s->messages[i - 1].name, s->messages[i].name) == 0)
			return fail(ld, FG_EINVAL, "message %s is defined twice", s->messages[i].name);
	for (i = 0; i < s->nenums; i++) {
		if ((i > 0 && strcmp(s->enums[i - 1].name, s->enums[i].name) == 0) ||
		    lookup_message(s, s->enums[i].name) != NULL)
			return fail(ld, FG_EINVAL, "type %s is defined twice", s->enums[i].name);
	}
	return 0;
}

/* ---- pass 3: fields and oneofs ---- */

/*
 * Resolves the type name <name> used inside the scope <scope> (a message or
 * service full name, or a package).  ".a.B" is absolute.  Otherwise, as
 * protoc does, the innermost scope is tried first: in scope "p.M", "T" is
 * looked for as "p.M.T", "p.T", then "T".  On success sets one of <*msg>
 * and <*enm> and returns 0; otherwise FG_ENOTFOUND (no message written),
 * FG_ETOOBIG or FG_ENOMEM.
 *
 * Each relative try costs a lookup as long as the scope, and a scope has as
 * many tries as dots: a set of 90 KiB whose fields all sat under a package
 * of thousands of dots took 28 s.  So the tries of a load are charged to
 * FG_SCHEMA_MAX_LOOKUP; protoc writes every name absolute anyway.
 */
static int resolve_type(struct loader *ld, const char *scope, const char *name,
                        const struct fg_schema_message **msg, const char **enm)
{
	const struct fg_schema *s = ld->s;
	size_t len = scope ? strlen(scope) : 0, nlen = strlen(name);
	char *buf;
	int rc = FG_ENOTFOUND;

	if (name[0] == '.') {
		*msg = lookup_message(s, name + 1);
		*enm = *msg ? NULL : lookup_enum(s, name + 1);
		return *msg || *enm ? 0 : FG_ENOTFOUND;
	}
	if ((buf = malloc(len + nlen + 2)) == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	if (len > 0)
		memcpy(buf, scope, len);        /* once: each try only shortens it */
	for (;;) {
		if (len + 1 + nlen > FG_SCHEMA_MAX_LOOKUP - ld->lookup_bytes) {
			rc = fail(ld, FG_ETOOBIG, "resolving its relative type names takes more than %u MiB "
			          "of lookups (write them absolute, \".pkg.Msg\", as protoc does)",
			          FG_SCHEMA_MAX_LOOKUP >> 20);
			break;
		}
		ld->lookup_bytes += len + 1 + nlen;
		buf[len] = '.';
		memcpy(buf + len + (len > 0), name, nlen + 1);
		*msg = lookup_message(s, buf);
		*enm = *msg ? NULL : lookup_enum(s, buf);
		if (*msg || *enm) {
			rc = 0;
			break;
		}
		if (len == 0)
			break;
		while (len > 0 && scope[len - 1] != '.')
			len--;
		if (len > 0)
			len--;
	}
	free(buf);
	return rc;
}

static int is_packable(int type)
{
	return type != FG_SCHEMA_STRING && type != FG_SCHEMA_BYTES &&
	       type != FG_SCHEMA_MESSAGE && type != FG_SCHEMA_GROUP;
}

/* Sets <f>'s type, type name and message from <fd> in message <m>.  A
 * hand-made descriptor may leave the type out and only name it. */
static int field_type(struct loader *ld, const struct fg_schema_message *m, const pb_field_t *fd,
                      struct fg_schema_field *f)
{
	const struct fg_schema_message *msg = NULL;
	const char *enm = NULL;
	int type = fd->has_type ? (int)fd->type : 0, rc;

	if (fd->has_type && (type < FG_SCHEMA_DOUBLE || type > FG_SCHEMA_SINT64))
		return fail(ld, FG_EINVAL, "field %s.%s has unknown type %d", m->name, f->name, type);
	f->type = (uint8_t)type;
	if (type != 0 && type != FG_SCHEMA_MESSAGE && type != FG_SCHEMA_GROUP && type != FG_SCHEMA_ENUM)
		return 0;
	if (fd->type_name == NULL || *fd->type_name == '\0')
		return fail(ld, FG_EINVAL, "field %s.%s has no type", m->name, f->name);
	rc = resolve_type(ld, m->name, fd->type_name, &msg, &enm);
	if (rc == FG_ENOTFOUND)
		return fail(ld, FG_EINVAL, "field %s.%s: type %s is not in the descriptor set "
		            "(was it built with protoc --include_imports?)", m->name, f->name, fd->type_name);
	if (rc != 0)
		return rc;
	if (type == 0)
		type = msg ? FG_SCHEMA_MESSAGE : FG_SCHEMA_ENUM;
	if ((type == FG_SCHEMA_ENUM) != (enm != NULL))
		return fail(ld, FG_EINVAL, "field %s.%s: type %s is %s, not %s", m->name, f->name,
		            fd->type_name, enm ? "an enum" : "a message", enm ? "a message" : "an enum");
	f->type = (uint8_t)type;
	f->message = msg;
	f->type_name = msg ? msg->name : enm;
	return 0;
}

static unsigned field_flags(const struct fg_schema_message *m, const pb_field_t *fd, struct fg_schema_field *f)
{
	unsigned flags = 0;

	if (fd->has_label && fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED)
		flags |= FG_SCHEMA_F_REQUIRED;
	if (fd->has_label && fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED) {
		flags |= FG_SCHEMA_F_REPEATED;
		if (is_packable(f->type) &&
		    (fd->options && fd->options->has_packed ? fd->options->packed : m->proto3))
			flags |= FG_SCHEMA_F_PACKED;
		if (f->type == FG_SCHEMA_MESSAGE && f->message->map_entry)
			flags |= FG_SCHEMA_F_MAP;
	}
	return flags;
}

static int build_field(struct loader *ld, struct fg_schema_message *m, const pb_field_t *fd,
                       struct fg_schema_field *f)
{
	int rc;

	if ((rc = check_name(ld, fd->name, "a field", m->name)) != 0)
		return rc;
	f->name = fd->name;
	f->parent = m;
	if (!fd->has_number || fd->number < 1 || (uint32_t)fd->number > FG_SCHEMA_MAX_FIELD_NUMBER)
		return fail(ld, FG_EINVAL, "field %s.%s has no valid number", m->name, f->name);
	f->number = (uint32_t)fd->number;
	if ((rc = field_type(ld, m, fd, f)) != 0)
		return rc;
	f->flags = (uint8_t)field_flags(m, fd, f);
	if (!fd->has_oneof_index)
		return 0;
	if (fd->oneof_index < 0 || (size_t)fd->oneof_index >= m->noneofs)
		return fail(ld, FG_EINVAL, "field %s.%s: oneof index %d out of range",
		            m->name, f->name, fd->oneof_index);
	if (fd->has_proto3_optional && fd->proto3_optional)
		m->oneofs[fd->oneof_index].synthetic = 1;
	f->oneof = &m->oneofs[fd->oneof_index];        /* until link_oneofs: hidden ones too */
	return 0;
}

/*
 * Gives each real oneof of <m> its members, by number (fields are sorted),
 * and unlinks the fields of hidden ones.  protoc makes a proto3 `optional`
 * field the only member of its oneof; a hand-made set that adds another
 * field would leave that field in a oneof no lookup finds, so it is refused
 * as protoc refuses it.
 */
static int link_oneofs(struct loader *ld, struct fg_schema_message *m)
{
	size_t i;

	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].oneof)
			((struct fg_schema_oneof *)m->fields[i].oneof)->nfields++;
	for (i = 0; i < m->noneofs; i++) {
		if (m->oneofs[i].synthetic && m->oneofs[i].nfields != 1)
			return fail(ld, FG_EINVAL, "message %s: oneof %s holds a proto3 optional field "
			            "and other fields", m->name, m->oneofs[i].name);
		m->oneofs[i].fields = calloc(m->oneofs[i].nfields + 1, sizeof(*m->oneofs[i].fields));
		if (m->oneofs[i].fields == NULL)
			return fail(ld, FG_ENOMEM, "out of memory");
		m->oneofs[i].nfields = 0;
	}
	for (i = 0; i < m->nfields; i++) {
		struct fg_schema_oneof *o = (struct fg_schema_oneof *)m->fields[i].oneof;

		if (o && o->synthetic)
			m->fields[i].oneof = NULL;
		else if (o)
			o->fields[o->nfields++] = &m->fields[i];
	}
	return 0;
}

static int build_oneofs(struct loader *ld, struct fg_schema_message *m)
{
	const pb_msg_t *d = m->desc;
	size_t i;
	int rc;

	m->noneofs = d->n_oneof_decl;
	m->oneofs = calloc(m->noneofs + 1, sizeof(*m->oneofs));
	if (m->oneofs == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	for (i = 0; i < m->noneofs; i++) {
		m->oneofs[i].name = d->oneof_decl[i]->name;
		if ((rc = check_name(ld, m->oneofs[i].name, "a oneof", m->name)) != 0)
			return rc;
	}
	return 0;
}

static int build_message(struct loader *ld, struct fg_schema_message *m)
{
	const pb_msg_t *d = m->desc;
	size_t i;
	int rc;

	if ((rc = build_oneofs(ld, m)) != 0)
		return rc;
	m->nfields = d->n_field;
	m->fields = calloc(m->nfields + 1, sizeof(*m->fields));
	m->by_name = calloc(m->nfields + 1, sizeof(*m->by_name));
	if (m->fields == NULL || m->by_name == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	for (i = 0; i < m->nfields; i++)
		if ((rc = build_field(ld, m, d->field[i], &m->fields[i])) != 0)
			return rc;
	qsort(m->fields, m->nfields, sizeof(*m->fields), cmp_field_number);
	for (i = 0; i < m->nfields; i++) {
		if (i > 0 && m->fields[i - 1].number == m->fields[i].number)
			return fail(ld, FG_EINVAL, "message %s has two fields numbered %u",
			            m->name, (unsigned)m->fields[i].number);
		m->by_name[i] = &m->fields[i];
	}
	qsort(m->by_name, m->nfields, sizeof(*m->by_name), cmp_field_name);
	for (i = 1; i < m->nfields; i++)
		if (strcmp(m->by_name[i - 1]->name, m->by_name[i]->name) == 0)
			return fail(ld, FG_EINVAL, "message %s has two fields named %s", m->name, m->by_name[i]->name);
	return link_oneofs(ld, m);
}

/* ---- pass 4: map entries, methods ---- */

/* Runs once every message is built: an entry may be defined after its use. */
static int link_maps(struct loader *ld, struct fg_schema_message *m)
{
	size_t i;

	for (i = 0; i < m->nfields; i++) {
		struct fg_schema_field *f = &m->fields[i];

		if (!(f->flags & FG_SCHEMA_F_MAP))
			continue;
		f->map_key = fg_schema_find_field_number(f->message, 1);
		f->map_value = fg_schema_find_field_number(f->message, 2);
		if (f->map_key == NULL || f->map_value == NULL)
			return fail(ld, FG_EINVAL, "map field %s.%s: entry %s lacks its key or value field",
			            m->name, f->name, f->message->name);
	}
	return 0;
}

static int method_type(struct loader *ld, const char *svc, const char *method, const char *name,
                       const struct fg_schema_message **out)
{
	const char *enm = NULL;
	int rc;

	if (name == NULL || *name == '\0')
		return fail(ld, FG_EINVAL, "method %s.%s lacks an input or output type", svc, method);
	rc = resolve_type(ld, svc, name, out, &enm);
	if (rc != 0 && rc != FG_ENOTFOUND)
		return rc;
	if (rc != 0 || *out == NULL)
		return fail(ld, FG_EINVAL, "method %s.%s: message type %s is not in the descriptor set "
		            "(was it built with protoc --include_imports?)", svc, method, name);
	return 0;
}

static int add_service(struct loader *ld, const char *pkg, const pb_service_t *sd)
{
	struct fg_schema_method *m;
	char *svc;
	size_t i, len;
	int rc = 0;

	if ((rc = check_name(ld, sd->name, "a service", pkg)) != 0)
		return rc;
	if ((svc = join_name(pkg, sd->name)) == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	for (i = 0; i < sd->n_method && rc == 0; i++) {
		const char *name = sd->method[i]->name;

		if ((rc = check_name(ld, name, "a method", svc)) != 0)
			break;
		m = &ld->s->methods[ld->s->nmethods];
		len = strlen(svc) + strlen(name) + 3;
		if ((rc = charge_name(ld, len)) != 0)
			break;
		if ((m->path = malloc(len)) == NULL) {
			rc = fail(ld, FG_ENOMEM, "out of memory");
			break;
		}
		ld->s->nmethods++;
		snprintf(m->path, len, "/%s/%s", svc, name);
		m->flags = (sd->method[i]->has_client_streaming && sd->method[i]->client_streaming ?
		            FG_SCHEMA_M_CLIENT_STREAMING : 0) |
		           (sd->method[i]->has_server_streaming && sd->method[i]->server_streaming ?
		            FG_SCHEMA_M_SERVER_STREAMING : 0);
		rc = method_type(ld, svc, name, sd->method[i]->input_type, &m->input);
		if (rc == 0)
			rc = method_type(ld, svc, name, sd->method[i]->output_type, &m->output);
	}
	free(svc);
	return rc;
}

static int collect_methods(struct loader *ld)
{
	const pb_set_t *set = ld->s->set;
	size_t n = 0, i, j;
	int rc;

	for (i = 0; i < set->n_file; i++)
		for (j = 0; j < set->file[i]->n_service; j++)
			n += set->file[i]->service[j]->n_method;
	if ((ld->s->methods = calloc(n + 1, sizeof(*ld->s->methods))) == NULL)
		return fail(ld, FG_ENOMEM, "out of memory");
	for (i = 0; i < set->n_file; i++)
		for (j = 0; j < set->file[i]->n_service; j++)
			if ((rc = add_service(ld, set->file[i]->package, set->file[i]->service[j])) != 0)
				return rc;
	qsort(ld->s->methods, ld->s->nmethods, sizeof(*ld->s->methods), cmp_method);
	for (i = 1; i < ld->s->nmethods; i++)
		if (strcmp(ld->s->methods[i - 1].path, ld->s->methods[i].path) == 0)
			return fail(ld, FG_EINVAL, "method %s is defined twice", ld->s->methods[i].path);
	return 0;
}

static int build(struct loader *ld)
{
	struct fg_schema *s = ld->s;
	size_t i;
	int rc;

	if (s->set->n_file == 0)
		return fail(ld, FG_EINVAL, "not a FileDescriptorSet (it holds no file)");
	if ((rc = collect_types(ld)) != 0 || (rc = sort_types(ld)) != 0)
		return rc;
	for (i = 0; i < s->nmessages; i++)
		if ((rc = build_message(ld, &s->messages[i])) != 0)
			return rc;
	for (i = 0; i < s->nmessages; i++)
		if ((rc = link_maps(ld, &s->messages[i])) != 0)
			return rc;
	return collect_methods(ld);
}

int fg_schema_load_buffer(const char *name, const uint8_t *buf, size_t len,
                          struct fg_schema **out, char *err, size_t errlen)
{
	struct loader ld = { .source = name, .err = err, .errlen = errlen };
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if ((rc = check_nesting(&ld, buf, len)) != 0)
		return rc;
	rc = fg_pbsize_check(&google__protobuf__file_descriptor_set__descriptor, buf, len, FG_SCHEMA_MAX_UNPACKED);
	if (rc == FG_ETOOBIG)
		return fail(&ld, FG_ETOOBIG, "it would take more than %u MiB unpacked (FG_SCHEMA_MAX_UNPACKED)",
		            (unsigned)(FG_SCHEMA_MAX_UNPACKED >> 20));
	if (rc < 0)
		return fail(&ld, FG_EINVAL, "not a FileDescriptorSet protoc writes (it does not parse, nests too "
		            "deep, or repeats a message field that is not repeated)");
	if ((ld.s = calloc(1, sizeof(*ld.s))) == NULL)
		return fail(&ld, FG_ENOMEM, "out of memory");
	/* NULL is a parse error or, rarely, allocation failure: protobuf-c does
	 * not say which. */
	ld.s->set = google__protobuf__file_descriptor_set__unpack(NULL, len, buf);
	if (ld.s->set == NULL) {
		rc = fail(&ld, FG_EINVAL, "not a FileDescriptorSet (it does not parse as one; "
		          "make it with protoc --include_imports --descriptor_set_out)");
		goto fail_free_schema;
	}
	if ((rc = build(&ld)) != 0)
		goto fail_free_schema;
	if (!EVP_Digest(buf, len, ld.s->digest, NULL, EVP_sha256(), NULL)) {
		rc = fail(&ld, FG_ENOMEM, "out of memory");
		goto fail_free_schema;
	}
	*out = ld.s;
	return 0;

fail_free_schema:
	fg_schema_free(ld.s);
	return rc;
}

/* Reads all of <path> into a fresh buffer (returned owned in <*buf>). */
static int read_file(struct loader *ld, const char *path, uint8_t **buf, size_t *len)
{
	int fd = fg_file_open_read(path);
	FILE *fp = fd >= 0 ? fdopen(fd, "rb") : NULL;
	struct stat st;
	int saved;

	if (fp == NULL) {
		saved = errno;
		if (fd >= 0)
			close(fd);
		return fail(ld, FG_EIO, saved == EINVAL ? "cannot read: not a regular file" : "cannot open: %s",
		            strerror(saved));
	}
	if (fstat(fileno(fp), &st) != 0) {
		saved = errno;
		fclose(fp);
		return fail(ld, FG_EIO, "cannot read: %s", strerror(saved));
	}
	if ((uint64_t)st.st_size > FG_SCHEMA_MAX_FILE) {
		fclose(fp);
		return fail(ld, FG_ETOOBIG, "larger than %u MiB", FG_SCHEMA_MAX_FILE >> 20);
	}
	*len = (size_t)st.st_size;
	if ((*buf = malloc(*len + 1)) == NULL) {
		fclose(fp);
		return fail(ld, FG_ENOMEM, "out of memory");
	}
	if (fread(*buf, 1, *len, fp) != *len || ferror(fp)) {
		saved = errno;
		fclose(fp);
		free(*buf);
		*buf = NULL;
		return fail(ld, FG_EIO, "cannot read: %s", saved ? strerror(saved) : "short read");
	}
	fclose(fp);
	return 0;
}

int fg_schema_load(const char *path, struct fg_schema **out, char *err, size_t errlen)
{
	struct loader ld = { .source = path, .err = err, .errlen = errlen };
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	errno = 0;
	if ((rc = read_file(&ld, path, &buf, &len)) != 0)
		return rc;
	rc = fg_schema_load_buffer(path, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

void fg_schema_free(struct fg_schema *s)
{
	size_t i, j;

	if (s == NULL)
		return;
	for (i = 0; s->messages && i < s->nmessages; i++) {
		for (j = 0; s->messages[i].oneofs && j < s->messages[i].noneofs; j++)
			free(s->messages[i].oneofs[j].fields);
		free(s->messages[i].oneofs);
		free(s->messages[i].fields);
		free(s->messages[i].by_name);
		free(s->messages[i].name);
	}
	free(s->messages);
	for (i = 0; s->enums && i < s->nenums; i++)
		free(s->enums[i].name);
	free(s->enums);
	for (i = 0; s->methods && i < s->nmethods; i++)
		free(s->methods[i].path);
	free(s->methods);
	if (s->set)
		google__protobuf__file_descriptor_set__free_unpacked(s->set, NULL);
	free(s);
}

/* ---- lookups ---- */

const uint8_t *fg_schema_digest(const struct fg_schema *s)
{
	return s->digest;
}

size_t fg_schema_nmethods(const struct fg_schema *s)
{
	return s->nmethods;
}

const struct fg_schema_method *fg_schema_method_at(const struct fg_schema *s, size_t i)
{
	return &s->methods[i];
}

const struct fg_schema_method *fg_schema_find_method(const struct fg_schema *s, const char *path)
{
	struct fg_schema_method key = { .path = (char *)path };

	return bsearch(&key, s->methods, s->nmethods, sizeof(*s->methods), cmp_method);
}

const struct fg_schema_message *fg_schema_find_message(const struct fg_schema *s, const char *name)
{
	return lookup_message(s, name[0] == '.' ? name + 1 : name);
}

const struct fg_schema_field *fg_schema_find_field(const struct fg_schema_message *msg, const char *name)
{
	struct fg_schema_field key = { .name = name };
	const struct fg_schema_field *kp = &key;
	const struct fg_schema_field *const *hit;

	hit = bsearch(&kp, msg->by_name, msg->nfields, sizeof(*msg->by_name), cmp_field_name);
	return hit ? *hit : NULL;
}

const struct fg_schema_field *fg_schema_find_field_number(const struct fg_schema_message *msg,
                                                          uint32_t number)
{
	struct fg_schema_field key = { .number = number };

	return bsearch(&key, msg->fields, msg->nfields, sizeof(*msg->fields), cmp_field_number);
}

const struct fg_schema_oneof *fg_schema_find_oneof(const struct fg_schema_message *msg, const char *name)
{
	size_t i;

	for (i = 0; i < msg->noneofs; i++)
		if (!msg->oneofs[i].synthetic && strcmp(msg->oneofs[i].name, name) == 0)
			return &msg->oneofs[i];
	return NULL;
}

/* ---- accessors ---- */

const char *fg_schema_method_path(const struct fg_schema_method *m) { return m->path; }
const struct fg_schema_message *fg_schema_method_input(const struct fg_schema_method *m) { return m->input; }
const struct fg_schema_message *fg_schema_method_output(const struct fg_schema_method *m) { return m->output; }
unsigned fg_schema_method_flags(const struct fg_schema_method *m) { return m->flags; }

const char *fg_schema_message_name(const struct fg_schema_message *msg) { return msg->name; }
int fg_schema_message_is_map_entry(const struct fg_schema_message *msg) { return msg->map_entry; }
size_t fg_schema_message_nfields(const struct fg_schema_message *msg) { return msg->nfields; }

const struct fg_schema_field *fg_schema_message_field_at(const struct fg_schema_message *msg, size_t i)
{
	return &msg->fields[i];
}

const char *fg_schema_field_name(const struct fg_schema_field *f) { return f->name; }
uint32_t fg_schema_field_number(const struct fg_schema_field *f) { return f->number; }
enum fg_schema_type fg_schema_field_type(const struct fg_schema_field *f) { return (enum fg_schema_type)f->type; }
unsigned fg_schema_field_flags(const struct fg_schema_field *f) { return f->flags; }
const struct fg_schema_message *fg_schema_field_parent(const struct fg_schema_field *f) { return f->parent; }
const struct fg_schema_message *fg_schema_field_message(const struct fg_schema_field *f) { return f->message; }
const char *fg_schema_field_type_name(const struct fg_schema_field *f) { return f->type_name; }
const struct fg_schema_field *fg_schema_field_map_key(const struct fg_schema_field *f) { return f->map_key; }
const struct fg_schema_field *fg_schema_field_map_value(const struct fg_schema_field *f) { return f->map_value; }
const struct fg_schema_oneof *fg_schema_field_oneof(const struct fg_schema_field *f) { return f->oneof; }

const char *fg_schema_oneof_name(const struct fg_schema_oneof *o) { return o->name; }
size_t fg_schema_oneof_nfields(const struct fg_schema_oneof *o) { return o->nfields; }

const struct fg_schema_field *fg_schema_oneof_field_at(const struct fg_schema_oneof *o, size_t i)
{
	return o->fields[i];
}

/* Indexed by enum fg_schema_type: the .proto keyword and the wire type of
 * one value (encoding.md, "Message Structure"). */
static const struct {
	const char *name;
	int wire;
} type_info[] = {
	[FG_SCHEMA_DOUBLE] = { "double", 1 },     [FG_SCHEMA_FLOAT] = { "float", 5 },
	[FG_SCHEMA_INT64] = { "int64", 0 },       [FG_SCHEMA_UINT64] = { "uint64", 0 },
	[FG_SCHEMA_INT32] = { "int32", 0 },       [FG_SCHEMA_FIXED64] = { "fixed64", 1 },
	[FG_SCHEMA_FIXED32] = { "fixed32", 5 },   [FG_SCHEMA_BOOL] = { "bool", 0 },
	[FG_SCHEMA_STRING] = { "string", 2 },     [FG_SCHEMA_GROUP] = { "group", 3 },
	[FG_SCHEMA_MESSAGE] = { "message", 2 },   [FG_SCHEMA_BYTES] = { "bytes", 2 },
	[FG_SCHEMA_UINT32] = { "uint32", 0 },     [FG_SCHEMA_ENUM] = { "enum", 0 },
	[FG_SCHEMA_SFIXED32] = { "sfixed32", 5 }, [FG_SCHEMA_SFIXED64] = { "sfixed64", 1 },
	[FG_SCHEMA_SINT32] = { "sint32", 0 },     [FG_SCHEMA_SINT64] = { "sint64", 0 },
};

const char *fg_schema_type_name(enum fg_schema_type type)
{
	if ((int)type < FG_SCHEMA_DOUBLE || (int)type > FG_SCHEMA_SINT64)
		return "?";
	return type_info[type].name;
}

int fg_schema_type_wire(enum fg_schema_type type)
{
	if ((int)type < FG_SCHEMA_DOUBLE || (int)type > FG_SCHEMA_SINT64)
		return -1;
	return type_info[type].wire;
}

const struct fg_schema_enum *fg_schema_find_enum(const struct fg_schema *schema, const char *name)
{
	if (name[0] == '.')
		name++;
	return lookup_enum_type(schema, name);
}

size_t fg_schema_enum_nvalues(const struct fg_schema_enum *e)
{
	return e->desc->n_value;
}

const char *fg_schema_enum_value_name(const struct fg_schema_enum *e, size_t i)
{
	return e->desc->value[i]->name ? e->desc->value[i]->name : "";
}

int32_t fg_schema_enum_value_number(const struct fg_schema_enum *e, size_t i)
{
	return e->desc->value[i]->number;
}
