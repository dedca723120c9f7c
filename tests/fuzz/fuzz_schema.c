/*
 * fuzz_schema.c - libFuzzer target for the descriptor-set loader
 * (fg_schema_load_buffer) and the lookups a loaded schema offers.
 *
 * Input: a serialized FileDescriptorSet, as protoc --include_imports
 * --descriptor_set_out writes it.  Besides "no crash, no leak, no UB, no
 * unbounded recursion or time" (the sanitizers, -timeout, -rss_limit_mb),
 * it checks what fg_schema.h promises that a fuzzer can see:
 *   - failure is FG_EINVAL or FG_ETOOBIG (a nesting, name or lookup limit;
 *     FG_ENOMEM cannot happen: ASan aborts instead), leaves <*out> NULL and
 *     writes "fuzz.pb: text", NUL-terminated; a shorter error buffer gets a
 *     prefix of the same message;
 *   - success gives a schema that agrees with the set it came from, which
 *     the target unpacks again with the generated descriptor.pb-c and walks
 *     as the policy compiler would look things up: every method is found by
 *     its "/pkg.Service/Method" path and has an input and an output message;
 *     every message and nested message is found by its full name (with and
 *     without the leading dot), has the set's fields, each found by name
 *     and by number, in number order, with a valid type, a type name and
 *     message exactly when the type has one, consistent map, packed and
 *     oneof links; names the set does not hold are not found.
 * fuzz_common.h is not used: these errors are "name: text", without the
 * line and column of the YAML loaders.
 *
 * Seeds (tests/fuzz/corpus/schema): valid_ranking.pb is the build's
 * proto/ranking.pb; the other valid_* but one are protoc --include_imports
 * output for tiny .proto files (nested messages with a oneof, a proto3
 * optional field and streaming methods; recursive messages; maps; enums;
 * proto2 groups, required fields and an extension; imports of another file
 * and of timestamp.proto); valid_relative_names.pb is written by hand
 * (relative type names, nested scopes).  invalid_* are truncated sets, a
 * bad length, a bad wire type, an empty input, a set built without
 * --include_imports, one file twice, and messages nested 65 deep.
 *
 * Build and run: FG_BUILD_DIR=<build dir> tests/fuzz/run.sh 120 schema.  By
 * hand (descriptor.pb-c.c is generated in the build directory):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -Idaemon -I<dir of config.h> \
 *     -I<build>/daemon tests/fuzz/fuzz_schema.c daemon/fg_schema.c daemon/fg_pbwire.c \
 *     <build>/daemon/descriptor.pb-c.c -lprotobuf-c -lm
 *   ./fuzz_schema -max_total_time=120 new_corpus_dir tests/fuzz/corpus/schema
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor.pb-c.h"
#include "fg_error.h"
#include "fg_schema.h"

#define NAME "fuzz.pb"
#define NAME_LEN (sizeof(NAME) - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef Google__Protobuf__DescriptorProto pb_msg_t;

/* Aborts (a finding) naming the broken promise: the reproducer's first
 * line tells which check failed. */
#define check(ok) ((ok) ? (void)0 : broken(__LINE__, #ok))

static void broken(int line, const char *what)
{
	fprintf(stderr, "fuzz_schema.c:%d: check failed: %s\n", line, what);
	abort();
}

/* "<prefix>.<name>", or <name> alone for an empty or NULL prefix, as the
 * loader names types.  Returned owned (free()). */
static char *join(const char *prefix, const char *name)
{
	size_t plen = prefix ? strlen(prefix) : 0, nlen = strlen(name);
	char *out = malloc(plen + nlen + 2);

	check(out != NULL);
	if (plen)
		memcpy(out, prefix, plen);
	out[plen] = '.';
	memcpy(out + plen + (plen > 0), name, nlen + 1);
	return out;
}

/* ---- failure ---- */

static void check_failure(int rc, const struct fg_schema *s, const char *err, const uint8_t *data, size_t size)
{
	struct fg_schema *again = (struct fg_schema *)(uintptr_t)1;
	char small[32];
	size_t len = strlen(err), cut = 1 + size % sizeof(small);

	check((rc == FG_EINVAL || rc == FG_ETOOBIG) && s == NULL);
	check(len < FG_SCHEMA_ERRLEN && len > NAME_LEN + 2);
	check(strncmp(err, NAME ": ", NAME_LEN + 2) == 0);
	/* Truncation keeps a NUL-terminated prefix of the same message. */
	memset(small, 'x', sizeof(small));
	check(fg_schema_load_buffer(NAME, data, size, &again, small, cut) == rc && again == NULL);
	check(memchr(small, '\0', cut) != NULL && strncmp(small, err, strlen(small)) == 0);
	check(strlen(small) == (len < cut - 1 ? len : cut - 1));
}

/* ---- success: the schema against the set ---- */

static void check_field(const struct fg_schema *s, const struct fg_schema_message *m, size_t i)
{
	const struct fg_schema_field *f = fg_schema_message_field_at(m, i), *k, *v;
	enum fg_schema_type t = fg_schema_field_type(f);
	unsigned flags = fg_schema_field_flags(f);
	const struct fg_schema_message *sub = fg_schema_field_message(f);
	const struct fg_schema_oneof *o = fg_schema_field_oneof(f);
	const char *tn = fg_schema_field_type_name(f);
	size_t j;
	int named = t == FG_SCHEMA_MESSAGE || t == FG_SCHEMA_GROUP || t == FG_SCHEMA_ENUM;

	check(fg_schema_field_parent(f) == m && fg_schema_field_name(f) && *fg_schema_field_name(f));
	check(fg_schema_find_field(m, fg_schema_field_name(f)) == f);
	check(fg_schema_find_field_number(m, fg_schema_field_number(f)) == f);
	check(fg_schema_field_number(f) >= 1 && fg_schema_field_number(f) <= FG_SCHEMA_MAX_FIELD_NUMBER);
	check(i == 0 || fg_schema_field_number(fg_schema_message_field_at(m, i - 1)) < fg_schema_field_number(f));
	check(strcmp(fg_schema_type_name(t), "?") != 0 && fg_schema_type_wire(t) >= 0);
	check(named == (tn != NULL));
	check((t == FG_SCHEMA_MESSAGE || t == FG_SCHEMA_GROUP) == (sub != NULL));
	check(!sub || (fg_schema_find_message(s, tn) == sub && strcmp(fg_schema_message_name(sub), tn) == 0));
	check(t != FG_SCHEMA_ENUM || fg_schema_find_message(s, tn) == NULL);
	check(!(flags & FG_SCHEMA_F_PACKED) || (flags & FG_SCHEMA_F_REPEATED));
	check(!(flags & FG_SCHEMA_F_PACKED) || fg_schema_type_wire(t) != 2);
	k = fg_schema_field_map_key(f);
	v = fg_schema_field_map_value(f);
	if (flags & FG_SCHEMA_F_MAP) {
		check((flags & FG_SCHEMA_F_REPEATED) && t == FG_SCHEMA_MESSAGE && fg_schema_message_is_map_entry(sub));
		check(k && v && fg_schema_field_number(k) == 1 && fg_schema_field_number(v) == 2);
		check(fg_schema_field_parent(k) == sub && fg_schema_field_parent(v) == sub);
	} else {
		check(k == NULL && v == NULL);
	}
	if (o) {
		check(fg_schema_find_oneof(m, fg_schema_oneof_name(o)) == o);
		for (j = 0; j < fg_schema_oneof_nfields(o) && fg_schema_oneof_field_at(o, j) != f; j++)
			;
		check(j < fg_schema_oneof_nfields(o));
	}
}

static void check_oneof(const struct fg_schema_message *m, const struct fg_schema_oneof *o)
{
	size_t j;

	check(o == NULL || fg_schema_oneof_nfields(o) == 0 ||
	      fg_schema_oneof_field_at(o, 0) != NULL);
	for (j = 0; o && j < fg_schema_oneof_nfields(o); j++) {
		const struct fg_schema_field *f = fg_schema_oneof_field_at(o, j);

		check(fg_schema_field_parent(f) == m && fg_schema_field_oneof(f) == o);
		check(j == 0 || fg_schema_field_number(fg_schema_oneof_field_at(o, j - 1)) < fg_schema_field_number(f));
	}
}

/* Message <d>, declared in scope <prefix>, and the messages it nests. */
static void check_message(const struct fg_schema *s, const char *prefix, const pb_msg_t *d)
{
	char *name = join(prefix, d->name), *dotted = malloc(strlen(name) + 2);
	const struct fg_schema_message *m = fg_schema_find_message(s, name);
	size_t i;

	check(dotted != NULL);
	dotted[0] = '.';
	strcpy(dotted + 1, name);
	check(m != NULL && strcmp(fg_schema_message_name(m), name) == 0);
	check(fg_schema_find_message(s, dotted) == m);
	check(fg_schema_message_nfields(m) == d->n_field);
	for (i = 0; i < d->n_field; i++) {
		const struct fg_schema_field *f = fg_schema_find_field(m, d->field[i]->name);

		check(f != NULL && fg_schema_field_number(f) == (uint32_t)d->field[i]->number);
		check_field(s, m, i);
	}
	for (i = 0; i < d->n_oneof_decl; i++)
		check_oneof(m, fg_schema_find_oneof(m, d->oneof_decl[i]->name));
	check(fg_schema_find_field(m, "") == NULL && fg_schema_find_field_number(m, 0) == NULL);
	check(fg_schema_find_oneof(m, "") == NULL);
	for (i = 0; i < d->n_nested_type; i++)
		check_message(s, name, d->nested_type[i]);
	free(dotted);
	free(name);
}

static void check_service(const struct fg_schema *s, const char *pkg,
                          const Google__Protobuf__ServiceDescriptorProto *sd)
{
	char *svc = join(pkg, sd->name), *path;
	const struct fg_schema_method *m;
	size_t i, len;

	for (i = 0; i < sd->n_method; i++) {
		len = strlen(svc) + strlen(sd->method[i]->name) + 3;
		path = malloc(len);
		check(path != NULL);
		snprintf(path, len, "/%s/%s", svc, sd->method[i]->name);
		m = fg_schema_find_method(s, path);
		check(m != NULL && strcmp(fg_schema_method_path(m), path) == 0);
		check(fg_schema_method_input(m) && fg_schema_method_output(m));
		check(fg_schema_find_message(s, fg_schema_message_name(fg_schema_method_input(m))) ==
		      fg_schema_method_input(m));
		check(fg_schema_find_message(s, fg_schema_message_name(fg_schema_method_output(m))) ==
		      fg_schema_method_output(m));
		check((fg_schema_method_flags(m) & ~(unsigned)(FG_SCHEMA_M_CLIENT_STREAMING |
		                                               FG_SCHEMA_M_SERVER_STREAMING)) == 0);
		free(path);
	}
	free(svc);
}

static void check_schema(const struct fg_schema *s, const uint8_t *data, size_t size)
{
	Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(NULL, size, data);
	size_t i, j;

	check(set != NULL);
	for (i = 0; i < set->n_file; i++) {
		const Google__Protobuf__FileDescriptorProto *f = set->file[i];

		for (j = 0; j < f->n_message_type; j++)
			check_message(s, f->package, f->message_type[j]);
		for (j = 0; j < f->n_service; j++)
			check_service(s, f->package, f->service[j]);
	}
	check(fg_schema_find_method(s, "") == NULL && fg_schema_find_method(s, "/") == NULL);
	check(fg_schema_find_message(s, "") == NULL && fg_schema_find_message(s, ".") == NULL);
	google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_schema *s = (struct fg_schema *)(uintptr_t)1;
	char err[FG_SCHEMA_ERRLEN];
	int rc;

	memset(err, 'x', sizeof(err));
	rc = fg_schema_load_buffer(NAME, data, size, &s, err, sizeof(err));
	check(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc != 0) {
		check_failure(rc, s, err, data, size);
		return 0;
	}
	check(s != NULL);
	check_schema(s, data, size);
	fg_schema_free(s);
	return 0;
}
