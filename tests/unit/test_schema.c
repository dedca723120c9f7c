/*
 * test_schema.c - cmocka group "schema": fg_schema.h through its header.
 *
 * Most cases read the reference contract's descriptor set, proto/ranking.pb
 * of the build directory: `make check` names it in FG_RANKING_PB; by hand,
 * give the path as the first argument or run from the build directory.
 * Cases protoc cannot produce (proto2 packing, relative type names, broken
 * sets) build a FileDescriptorSet here with the generated descriptor.pb-c
 * and load it with fg_schema_load_buffer.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_testutil.h"

#include "descriptor.pb-c.h"
#include "fg_error.h"
#include "fg_pbwire.h"
#include "fg_schema.h"

#define PKG "feedguard.ranking.v1."
#define RANK_FEED "/feedguard.ranking.v1.Ranker/RankFeed"
#define STREAM_FEED "/feedguard.ranking.v1.Ranker/StreamFeed"

static const char *ranking_pb = "proto/ranking.pb";

static int load_ranking(void **state)
{
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	if (fg_schema_load(ranking_pb, &s, err, sizeof(err)) != 0) {
		fprintf(stderr, "test_schema: %s (set FG_RANKING_PB to the build's proto/ranking.pb)\n", err);
		return -1;
	}
	*state = s;
	return 0;
}

static int free_ranking(void **state)
{
	fg_schema_free(*state);
	return 0;
}

/* The field at the end of the dotted <path>, starting in message <msg>. */
static const struct fg_schema_field *field_path(const struct fg_schema_message *msg, const char *path)
{
	char buf[256], *save = NULL, *name;
	const struct fg_schema_field *f = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (name = strtok_r(buf, ".", &save); name; name = strtok_r(NULL, ".", &save)) {
		assert_non_null(msg);
		f = fg_schema_find_field(msg, name);
		assert_non_null(f);
		msg = fg_schema_field_message(f);
	}
	return f;
}

static const struct fg_schema_message *request(const struct fg_schema *s)
{
	const struct fg_schema_method *m = fg_schema_find_method(s, RANK_FEED);

	assert_non_null(m);
	return fg_schema_method_input(m);
}

static void test_methods(void **state)
{
	const struct fg_schema *s = *state;
	const struct fg_schema_method *m;

	m = fg_schema_find_method(s, RANK_FEED);
	assert_non_null(m);
	assert_string_equal(fg_schema_method_path(m), RANK_FEED);
	assert_string_equal(fg_schema_message_name(fg_schema_method_input(m)), PKG "RankFeedRequest");
	assert_string_equal(fg_schema_message_name(fg_schema_method_output(m)), PKG "RankFeedResponse");
	assert_int_equal(fg_schema_method_flags(m), 0);

	m = fg_schema_find_method(s, STREAM_FEED);
	assert_non_null(m);
	assert_string_equal(fg_schema_message_name(fg_schema_method_input(m)), PKG "RankFeedRequest");
	assert_string_equal(fg_schema_message_name(fg_schema_method_output(m)), PKG "FeedItem");
	assert_int_equal(fg_schema_method_flags(m), FG_SCHEMA_M_SERVER_STREAMING);
	/* one message object per type, whoever asks */
	assert_ptr_equal(fg_schema_method_input(m), request(s));
	assert_ptr_equal(fg_schema_find_message(s, PKG "RankFeedRequest"), request(s));
}

static void test_unknown_method(void **state)
{
	const struct fg_schema *s = *state;

	assert_null(fg_schema_find_method(s, "/feedguard.ranking.v1.Ranker/Nope"));
	assert_null(fg_schema_find_method(s, "/feedguard.ranking.v1.Nope/RankFeed"));
	assert_null(fg_schema_find_method(s, "feedguard.ranking.v1.Ranker/RankFeed"));
	assert_null(fg_schema_find_method(s, "/feedguard.ranking.v1.ranker/RankFeed"));
	assert_null(fg_schema_find_method(s, "/feedguard.ranking.v1.Ranker/RankFeed/"));
	assert_null(fg_schema_find_method(s, ""));
	assert_null(fg_schema_find_message(s, PKG "Nope"));
	assert_null(fg_schema_find_message(s, "RankFeedRequest"));
}

static void test_scalar_fields(void **state)
{
	const struct fg_schema_message *req = request(*state);
	const struct fg_schema_field *f;

	f = fg_schema_find_field(req, "page_size");
	assert_non_null(f);
	assert_string_equal(fg_schema_field_name(f), "page_size");
	assert_int_equal(fg_schema_field_number(f), 4);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_INT32);
	assert_int_equal(fg_schema_field_flags(f), 0);
	assert_null(fg_schema_field_message(f));
	assert_null(fg_schema_field_type_name(f));
	assert_null(fg_schema_field_oneof(f));
	assert_null(fg_schema_field_map_key(f));
	assert_ptr_equal(fg_schema_field_parent(f), req);
	assert_null(fg_schema_find_field(req, "pageSize"));      /* JSON names are not field names */
	assert_null(fg_schema_find_field(req, "nope"));
	assert_ptr_equal(fg_schema_find_field_number(req, 4), f);
	assert_null(fg_schema_find_field_number(req, 99));
}

/* A policy path walks messages: signals.watch_history.item_id. */
static void test_nested_fields(void **state)
{
	const struct fg_schema_message *req = request(*state);
	const struct fg_schema_field *f;

	f = field_path(req, "signals");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_MESSAGE);
	assert_string_equal(fg_schema_field_type_name(f), PKG "Signals");
	assert_int_equal(fg_schema_field_number(f), 3);

	f = field_path(req, "signals.watch_history");
	assert_int_equal(fg_schema_field_number(f), 1);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_MESSAGE);
	assert_int_equal(fg_schema_field_flags(f), FG_SCHEMA_F_REPEATED);
	assert_string_equal(fg_schema_message_name(fg_schema_field_message(f)), PKG "Signals.WatchEvent");

	f = field_path(req, "signals.watch_history.watch_ms");
	assert_int_equal(fg_schema_field_number(f), 2);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_INT64);

	f = field_path(req, "context.geo.latitude");
	assert_int_equal(fg_schema_field_number(f), 1);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_DOUBLE);
	f = field_path(req, "context.geo.accuracy_m");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_FLOAT);
	f = field_path(req, "context.surface");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_ENUM);
	assert_string_equal(fg_schema_field_type_name(f), PKG "Context.Surface");
	assert_null(fg_schema_field_message(f));
	f = field_path(req, "signals.advertising_id");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_STRING);
	assert_int_equal(fg_schema_field_number(f), 5);
}

/* The timestamp type lives in another file of the set (--include_imports). */
static void test_cross_file_type(void **state)
{
	const struct fg_schema_message *req = request(*state);
	const struct fg_schema_field *f;

	f = field_path(req, "signals.engagement_events.ts");
	assert_string_equal(fg_schema_field_type_name(f), "google.protobuf.Timestamp");
	f = field_path(req, "signals.engagement_events.ts.seconds");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_INT64);
	assert_int_equal(fg_schema_field_number(f), 1);
	f = field_path(req, "signals.engagement_events.ts.nanos");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_INT32);
}

static void test_nested_type(void **state)
{
	const struct fg_schema *s = *state;
	const struct fg_schema_message *ev = fg_schema_find_message(s, PKG "Signals.EngagementEvent");
	const struct fg_schema_field *f;

	assert_non_null(ev);
	assert_ptr_equal(fg_schema_find_message(s, "." PKG "Signals.EngagementEvent"), ev);
	assert_string_equal(fg_schema_message_name(ev), PKG "Signals.EngagementEvent");
	assert_ptr_equal(fg_schema_field_message(field_path(request(s), "signals.engagement_events")), ev);
	f = fg_schema_find_field(ev, "kind");
	assert_non_null(f);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_ENUM);
	assert_string_equal(fg_schema_field_type_name(f), PKG "Signals.EngagementEvent.Kind");
	assert_null(fg_schema_find_message(s, PKG "Signals.EngagementEvent.Kind")); /* an enum */

	f = field_path(fg_schema_find_message(s, PKG "FeedItem"), "explanations.source_item_id");
	assert_string_equal(fg_schema_message_name(fg_schema_field_parent(f)), PKG "FeedItem.Explanation");
	assert_int_equal(fg_schema_field_number(f), 2);
}

static void test_fields_in_number_order(void **state)
{
	const struct fg_schema_message *req = request(*state);
	size_t i, n = fg_schema_message_nfields(req);

	assert_int_equal(n, 7);
	for (i = 0; i < n; i++)
		assert_int_equal(fg_schema_field_number(fg_schema_message_field_at(req, i)), i + 1);
	assert_string_equal(fg_schema_field_name(fg_schema_message_field_at(req, 0)), "user");
	assert_string_equal(fg_schema_field_name(fg_schema_message_field_at(req, 6)), "recently_shown_ids");
}

static void test_maps(void **state)
{
	const struct fg_schema *s = *state;
	const struct fg_schema_field *f, *k, *v;

	f = field_path(request(s), "signals.features");
	assert_int_equal(fg_schema_field_number(f), 8);
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_MESSAGE);
	assert_int_equal(fg_schema_field_flags(f), FG_SCHEMA_F_REPEATED | FG_SCHEMA_F_MAP);
	assert_string_equal(fg_schema_message_name(fg_schema_field_message(f)), PKG "Signals.FeaturesEntry");
	assert_true(fg_schema_message_is_map_entry(fg_schema_field_message(f)));
	k = fg_schema_field_map_key(f);
	v = fg_schema_field_map_value(f);
	assert_non_null(k);
	assert_non_null(v);
	assert_int_equal(fg_schema_field_number(k), 1);
	assert_int_equal(fg_schema_field_type(k), FG_SCHEMA_STRING);
	assert_int_equal(fg_schema_field_number(v), 2);
	assert_int_equal(fg_schema_field_type(v), FG_SCHEMA_DOUBLE);

	f = field_path(fg_schema_find_message(s, PKG "FeedItem"), "feature_weights");
	assert_true(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP);
	assert_int_equal(fg_schema_field_type(fg_schema_field_map_value(f)), FG_SCHEMA_FLOAT);

	/* a repeated message is not a map */
	f = field_path(request(s), "signals.watch_history");
	assert_false(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP);
	assert_false(fg_schema_message_is_map_entry(fg_schema_field_message(f)));
	assert_null(fg_schema_field_map_key(f));
	assert_null(fg_schema_field_map_value(f));
}

static void test_oneofs(void **state)
{
	const struct fg_schema_message *req = request(*state);
	const struct fg_schema_oneof *o = fg_schema_find_oneof(req, "cursor");
	const struct fg_schema_field *tok, *off;

	assert_non_null(o);
	assert_string_equal(fg_schema_oneof_name(o), "cursor");
	assert_int_equal(fg_schema_oneof_nfields(o), 2);
	tok = fg_schema_oneof_field_at(o, 0);
	off = fg_schema_oneof_field_at(o, 1);
	assert_string_equal(fg_schema_field_name(tok), "page_token");
	assert_int_equal(fg_schema_field_number(tok), 5);
	assert_int_equal(fg_schema_field_type(tok), FG_SCHEMA_STRING);
	assert_string_equal(fg_schema_field_name(off), "offset");
	assert_int_equal(fg_schema_field_type(off), FG_SCHEMA_INT64);
	assert_ptr_equal(fg_schema_find_field(req, "page_token"), tok);
	assert_ptr_equal(fg_schema_field_oneof(tok), o);
	assert_ptr_equal(fg_schema_field_oneof(off), o);
	assert_null(fg_schema_field_oneof(fg_schema_find_field(req, "page_size")));
	assert_null(fg_schema_find_oneof(req, "page_token"));    /* a member, not the oneof */
	assert_null(fg_schema_find_oneof(req, "nope"));
}

static void test_packed(void **state)
{
	const struct fg_schema_message *req = request(*state);
	const struct fg_schema_field *f;

	/* proto3: repeated numeric scalars are packed unless told otherwise */
	f = fg_schema_find_field(req, "recently_shown_ids");
	assert_int_equal(fg_schema_field_type(f), FG_SCHEMA_INT64);
	assert_int_equal(fg_schema_field_flags(f), FG_SCHEMA_F_REPEATED | FG_SCHEMA_F_PACKED);
	/* strings and messages never are */
	f = field_path(req, "signals.inferred_interests");
	assert_int_equal(fg_schema_field_flags(f), FG_SCHEMA_F_REPEATED);
	f = field_path(req, "signals.watch_history");
	assert_int_equal(fg_schema_field_flags(f), FG_SCHEMA_F_REPEATED);
}

static void test_type_helpers(void **state)
{
	assert_string_equal(fg_schema_type_name(FG_SCHEMA_SINT64), "sint64");
	assert_string_equal(fg_schema_type_name(FG_SCHEMA_MESSAGE), "message");
	assert_string_equal(fg_schema_type_name((enum fg_schema_type)0), "?");
	assert_string_equal(fg_schema_type_name((enum fg_schema_type)19), "?");
	assert_int_equal(fg_schema_type_wire(FG_SCHEMA_DOUBLE), 1);
	assert_int_equal(fg_schema_type_wire(FG_SCHEMA_FLOAT), 5);
	assert_int_equal(fg_schema_type_wire(FG_SCHEMA_ENUM), 0);
	assert_int_equal(fg_schema_type_wire(FG_SCHEMA_BYTES), 2);
	assert_int_equal(fg_schema_type_wire(FG_SCHEMA_GROUP), 3);
	assert_int_equal(fg_schema_type_wire((enum fg_schema_type)42), -1);
}

/* ---- files that are not descriptor sets ---- */

static void expect_load_error(const char *path, int rc, const char *want)
{
	struct fg_schema *s = (struct fg_schema *)&s;   /* must be reset to NULL */
	char err[FG_SCHEMA_ERRLEN];

	assert_int_equal(fg_schema_load(path, &s, err, sizeof(err)), rc);
	assert_null(s);
	if (strstr(err, want) == NULL || strncmp(err, path, strlen(path)) != 0)
		fail_msg("error \"%s\" lacks \"%s\" or does not start with the path", err, want);
}

static void test_missing_file(void **state)
{
	expect_load_error("/nonexistent/feedguard/ranking.pb", FG_EIO, "No such file or directory");
	expect_load_error("/", FG_EIO, "not a regular file");
}

static void test_garbage_file(void **state)
{
	char path[] = "/tmp/fg_schema_XXXXXX";
	int fd = mkstemp(path);
	static const char text[] = "syntax = \"proto3\";\nmessage X { int32 a = 1; }\n";
	static const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01 };

	assert_true(fd >= 0);
	close(fd);
	fg_test_write_file(path, "", 0);
	expect_load_error(path, FG_EINVAL, "not a FileDescriptorSet");
	fg_test_write_file(path, text, sizeof(text) - 1);     /* the .proto instead of its set */
	expect_load_error(path, FG_EINVAL, "not a FileDescriptorSet");
	fg_test_write_file(path, junk, sizeof(junk));
	expect_load_error(path, FG_EINVAL, "not a FileDescriptorSet");
	unlink(path);
}

static void test_err_may_be_null(void **state)
{
	struct fg_schema *s = NULL;
	char err[8];

	assert_int_equal(fg_schema_load("/nonexistent", &s, NULL, 0), FG_EIO);
	assert_int_equal(fg_schema_load("/nonexistent/ranking.pb", &s, err, sizeof(err)), FG_EIO);
	assert_int_equal(strlen(err), sizeof(err) - 1);      /* truncated, terminated */
	fg_schema_free(NULL);
}

/* ---- hand-made sets ---- */

/* Everything the builders below allocate, freed by free_built(). */
static void *built[256];
static size_t nbuilt;

static void *alloc_built(size_t size)
{
	void *p = calloc(1, size);

	assert_non_null(p);
	assert_true(nbuilt < sizeof(built) / sizeof(built[0]));
	built[nbuilt++] = p;
	return p;
}

static void free_built(void)
{
	while (nbuilt > 0)
		free(built[--nbuilt]);
}

static Google__Protobuf__FieldDescriptorProto *
mkfield(const char *name, int number, Google__Protobuf__FieldDescriptorProto__Label label,
        Google__Protobuf__FieldDescriptorProto__Type type, const char *type_name)
{
	Google__Protobuf__FieldDescriptorProto *f = alloc_built(sizeof(*f));

	google__protobuf__field_descriptor_proto__init(f);
	f->name = (char *)name;
	f->has_number = 1;
	f->number = number;
	f->has_label = 1;
	f->label = label;
	f->has_type = type != 0;
	f->type = type;
	f->type_name = (char *)type_name;
	return f;
}

/* Sets [packed = <packed>] on <f>. */
static void set_packed(Google__Protobuf__FieldDescriptorProto *f, int packed)
{
	Google__Protobuf__FieldOptions *o = alloc_built(sizeof(*o));

	google__protobuf__field_options__init(o);
	o->has_packed = 1;
	o->packed = packed;
	f->options = o;
}

static Google__Protobuf__DescriptorProto *mkmsg(const char *name, size_t nfield, ...)
{
	Google__Protobuf__DescriptorProto *m = alloc_built(sizeof(*m));
	va_list ap;
	size_t i;

	google__protobuf__descriptor_proto__init(m);
	m->name = (char *)name;
	m->n_field = nfield;
	m->field = alloc_built((nfield + 1) * sizeof(*m->field));
	va_start(ap, nfield);
	for (i = 0; i < nfield; i++)
		m->field[i] = va_arg(ap, Google__Protobuf__FieldDescriptorProto *);
	va_end(ap);
	return m;
}

static void add_nested(Google__Protobuf__DescriptorProto *outer, Google__Protobuf__DescriptorProto *inner)
{
	Google__Protobuf__DescriptorProto **v = alloc_built((outer->n_nested_type + 1) * sizeof(*v));

	if (outer->n_nested_type > 0)
		memcpy(v, outer->nested_type, outer->n_nested_type * sizeof(*v));
	v[outer->n_nested_type++] = inner;
	outer->nested_type = v;
}

static Google__Protobuf__FileDescriptorProto *mkfile(const char *name, const char *pkg, const char *syntax,
                                                    size_t nmsg, ...)
{
	Google__Protobuf__FileDescriptorProto *f = alloc_built(sizeof(*f));
	va_list ap;
	size_t i;

	google__protobuf__file_descriptor_proto__init(f);
	f->name = (char *)name;
	f->package = (char *)pkg;
	f->syntax = (char *)syntax;
	f->n_message_type = nmsg;
	f->message_type = alloc_built((nmsg + 1) * sizeof(*f->message_type));
	va_start(ap, nmsg);
	for (i = 0; i < nmsg; i++)
		f->message_type[i] = va_arg(ap, Google__Protobuf__DescriptorProto *);
	va_end(ap);
	return f;
}

/* Packs the files into a set and loads it; returns fg_schema_load_buffer's
 * code, the schema in <*out> and the message in <err>. */
static int load_files(struct fg_schema **out, char *err, size_t errlen, size_t nfile, ...)
{
	Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
	Google__Protobuf__FileDescriptorProto *files[8];
	uint8_t *buf;
	size_t len, i;
	va_list ap;
	int rc;

	assert_true(nfile <= 8);
	va_start(ap, nfile);
	for (i = 0; i < nfile; i++)
		files[i] = va_arg(ap, Google__Protobuf__FileDescriptorProto *);
	va_end(ap);
	set.n_file = nfile;
	set.file = files;
	len = google__protobuf__file_descriptor_set__get_packed_size(&set);
	buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(google__protobuf__file_descriptor_set__pack(&set, buf), len);
	rc = fg_schema_load_buffer("test.pb", buf, len, out, err, errlen);
	free(buf);
	return rc;
}

#define OPT GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_OPTIONAL
#define REQ GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED
#define REP GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED
#define T(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x

/* proto2 packs only on request; proto3 unless told not to; required is
 * reported; names resolve relative to their scope and across files. */
static void test_packing_and_scopes(void **state)
{
	Google__Protobuf__FieldDescriptorProto *p2_packed = mkfield("a", 1, REP, T(INT32), NULL);
	Google__Protobuf__FieldDescriptorProto *p3_unpacked = mkfield("b", 2, REP, T(SINT64), NULL);
	Google__Protobuf__DescriptorProto *inner = mkmsg("Inner", 1, mkfield("x", 1, OPT, T(FIXED32), NULL));
	Google__Protobuf__DescriptorProto *p2 = mkmsg("Old", 5, p2_packed,
		mkfield("plain", 2, REP, T(INT32), NULL),
		mkfield("must", 3, REQ, T(STRING), NULL),
		mkfield("in", 4, OPT, 0, "Inner"),              /* relative, no type given */
		mkfield("other", 5, OPT, T(MESSAGE), "b.New")); /* relative, other package */
	Google__Protobuf__DescriptorProto *p3 = mkmsg("New", 2,
		mkfield("ints", 1, REP, T(UINT32), NULL), p3_unpacked);
	Google__Protobuf__FileDescriptorProto *fa = mkfile("a.proto", "a", "proto2", 1, p2);
	Google__Protobuf__FileDescriptorProto *fb = mkfile("b.proto", "b", "proto3", 1, p3);
	struct fg_schema *s = NULL;
	const struct fg_schema_message *m;
	char err[FG_SCHEMA_ERRLEN];

	set_packed(p2_packed, 1);
	set_packed(p3_unpacked, 0);
	add_nested(p2, inner);
	assert_int_equal(load_files(&s, err, sizeof(err), 2, fa, fb), 0);
	m = fg_schema_find_message(s, "a.Old");
	assert_non_null(m);
	assert_int_equal(fg_schema_field_flags(fg_schema_find_field(m, "a")), FG_SCHEMA_F_REPEATED | FG_SCHEMA_F_PACKED);
	assert_int_equal(fg_schema_field_flags(fg_schema_find_field(m, "plain")), FG_SCHEMA_F_REPEATED);
	assert_int_equal(fg_schema_field_flags(fg_schema_find_field(m, "must")), FG_SCHEMA_F_REQUIRED);
	assert_int_equal(fg_schema_field_type(fg_schema_find_field(m, "in")), FG_SCHEMA_MESSAGE);
	assert_string_equal(fg_schema_field_type_name(fg_schema_find_field(m, "in")), "a.Old.Inner");
	assert_ptr_equal(fg_schema_field_message(fg_schema_find_field(m, "other")), fg_schema_find_message(s, "b.New"));
	m = fg_schema_find_message(s, "b.New");
	assert_int_equal(fg_schema_field_flags(fg_schema_find_field(m, "ints")), FG_SCHEMA_F_REPEATED | FG_SCHEMA_F_PACKED);
	assert_int_equal(fg_schema_field_flags(fg_schema_find_field(m, "b")), FG_SCHEMA_F_REPEATED);
	fg_schema_free(s);
	free_built();
}

/* protoc's hidden oneof for a proto3 `optional` field is no oneof. */
static void test_proto3_optional(void **state)
{
	Google__Protobuf__FieldDescriptorProto *opt = mkfield("maybe", 1, OPT, T(INT32), NULL);
	Google__Protobuf__OneofDescriptorProto oneof = GOOGLE__PROTOBUF__ONEOF_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__OneofDescriptorProto *oneofs[1] = { &oneof };
	Google__Protobuf__DescriptorProto *m = mkmsg("M", 1, opt);
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	oneof.name = "_maybe";
	m->n_oneof_decl = 1;
	m->oneof_decl = oneofs;
	opt->has_oneof_index = 1;
	opt->oneof_index = 0;
	opt->has_proto3_optional = 1;
	opt->proto3_optional = 1;
	assert_int_equal(load_files(&s, err, sizeof(err), 1, mkfile("m.proto", NULL, "proto3", 1, m)), 0);
	assert_null(fg_schema_find_oneof(fg_schema_find_message(s, "M"), "_maybe"));
	assert_null(fg_schema_field_oneof(fg_schema_find_field(fg_schema_find_message(s, "M"), "maybe")));
	fg_schema_free(s);
	free_built();
}

/*
 * protoc makes a proto3 `optional` field the only member of its hidden
 * oneof.  A hand-made set that puts an ordinary field into that oneof too
 * left the field pointing at a oneof that fg_schema_find_oneof never finds
 * (found by fuzz_schema): refused, as protoc refuses it, whichever field
 * comes first.
 */
static void test_proto3_optional_alone(void **state)
{
	Google__Protobuf__OneofDescriptorProto oneof = GOOGLE__PROTOBUF__ONEOF_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__OneofDescriptorProto *oneofs[1] = { &oneof };
	Google__Protobuf__FieldDescriptorProto *f[2];
	Google__Protobuf__DescriptorProto *m;
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];
	int first;

	oneof.name = "_maybe";
	for (first = 0; first < 2; first++) {
		f[0] = mkfield("maybe", 1, OPT, T(INT32), NULL);
		f[1] = mkfield("plain", 2, OPT, T(STRING), NULL);
		f[first]->has_proto3_optional = 1;
		f[first]->proto3_optional = 1;
		f[0]->has_oneof_index = f[1]->has_oneof_index = 1;
		m = mkmsg("M", 2, f[0], f[1]);
		m->n_oneof_decl = 1;
		m->oneof_decl = oneofs;
		assert_int_equal(load_files(&s, err, sizeof(err), 1, mkfile("m.proto", NULL, "proto3", 1, m)),
		                 FG_EINVAL);
		assert_null(s);
		if (strstr(err, "oneof _maybe") == NULL)
			fail_msg("error \"%s\" lacks \"oneof _maybe\"", err);
		free_built();
	}
}

/* Gives <f> a top-level enum E. */
static Google__Protobuf__FileDescriptorProto *with_enum(Google__Protobuf__FileDescriptorProto *f)
{
	Google__Protobuf__EnumDescriptorProto *e = alloc_built(sizeof(*e));

	google__protobuf__enum_descriptor_proto__init(e);
	e->name = "E";
	f->n_enum_type = 1;
	f->enum_type = alloc_built(sizeof(*f->enum_type));
	f->enum_type[0] = e;
	return f;
}

static void expect_set_error(int rc_want, const char *want, Google__Protobuf__FileDescriptorProto *f)
{
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	assert_int_equal(load_files(&s, err, sizeof(err), 1, f), rc_want);
	assert_null(s);
	if (strstr(err, want) == NULL || strncmp(err, "test.pb: ", 9) != 0)
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	free_built();
}

static void test_bad_sets(void **state)
{
	Google__Protobuf__DescriptorProto *m;

	expect_set_error(FG_EINVAL, "type .x.Missing is not in the descriptor set",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 1, mkfield("a", 1, OPT, T(MESSAGE), ".x.Missing"))));
	expect_set_error(FG_EINVAL, "type Missing is not in the descriptor set",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 1, mkfield("a", 1, OPT, 0, "Missing"))));
	expect_set_error(FG_EINVAL, "message x.M is defined twice",
		mkfile("x.proto", "x", "proto3", 2, mkmsg("M", 0), mkmsg("M", 0)));
	expect_set_error(FG_EINVAL, "two fields numbered 1",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 2, mkfield("a", 1, OPT, T(INT32), NULL),
		                                              mkfield("b", 1, OPT, T(INT32), NULL))));
	expect_set_error(FG_EINVAL, "two fields named a",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 2, mkfield("a", 1, OPT, T(INT32), NULL),
		                                              mkfield("a", 2, OPT, T(INT32), NULL))));
	expect_set_error(FG_EINVAL, "field x.M.a has no valid number",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 1, mkfield("a", 1 << 29, OPT, T(INT32), NULL))));
	expect_set_error(FG_EINVAL, "syntax \"editions\" is not supported",
		mkfile("x.proto", "x", "editions", 1, mkmsg("M", 0)));
	expect_set_error(FG_EINVAL, "type .x.E is an enum, not a message", with_enum(
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 1, mkfield("a", 1, OPT, T(MESSAGE), ".x.E")))));
	expect_set_error(FG_EINVAL, "type E is a message, not an enum",
		mkfile("x.proto", "x", "proto3", 2, mkmsg("M", 1, mkfield("a", 1, OPT, T(ENUM), "E")), mkmsg("E", 0)));
	expect_set_error(FG_EINVAL, "not a FileDescriptorSet (a file has no name)",
		mkfile(NULL, "x", "proto3", 0));
	m = mkmsg("M", 0);
	m->name = NULL;
	expect_set_error(FG_EINVAL, "a message in x has no name", mkfile("x.proto", "x", "proto3", 1, m));
}

/*
 * Names are protobuf names, as protoc checks them: letters, digits and _,
 * packages such names between single dots.  A set with a package ".x"
 * (found by fuzz_schema) loaded with a message ".x.M" that no lookup could
 * reach, since a leading dot is taken off the name asked for.  A dot
 * inside a name hides which scope a full name is in.
 */
static void test_bad_names(void **state)
{
	Google__Protobuf__OneofDescriptorProto oneof = GOOGLE__PROTOBUF__ONEOF_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__OneofDescriptorProto *oneofs[1] = { &oneof };
	Google__Protobuf__DescriptorProto *m;
	static const char *const packages[] = { ".x", "x.", "x..y", "x.y-z" };
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];
	size_t i;

	for (i = 0; i < sizeof(packages) / sizeof(packages[0]); i++)
		expect_set_error(FG_EINVAL, "is not a dotted name",
			mkfile("x.proto", packages[i], "proto3", 1, mkmsg("M", 0)));
	expect_set_error(FG_EINVAL, "a message in x: \"M.N\" is not a name",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M.N", 0)));
	expect_set_error(FG_EINVAL, "a field in x.M: \"a\nb\" is not a name",
		mkfile("x.proto", "x", "proto3", 1, mkmsg("M", 1, mkfield("a\nb", 1, OPT, T(INT32), NULL))));
	m = mkmsg("M", 0);
	oneof.name = "o/p";
	m->n_oneof_decl = 1;
	m->oneof_decl = oneofs;
	expect_set_error(FG_EINVAL, "a oneof in x.M: \"o/p\" is not a name", mkfile("x.proto", "x", "proto3", 1, m));
	/* the same names without the flaw load */
	m = mkmsg("M_1", 1, mkfield("a_2", 1, OPT, T(INT32), NULL));
	oneof.name = "o";
	m->n_oneof_decl = 1;
	m->oneof_decl = oneofs;
	assert_int_equal(load_files(&s, err, sizeof(err), 1, mkfile("x.proto", "x.y_2.z", "proto3", 1, m)), 0);
	assert_non_null(fg_schema_find_message(s, "x.y_2.z.M_1"));
	fg_schema_free(s);
	free_built();
}

/* ---- limits: sets that cost far more than their size ---- */

/* Writes field <number> as LEN with <len> bytes of <payload> at <dst>;
 * returns the bytes written. */
static size_t put_len(uint8_t *dst, uint32_t number, const void *payload, size_t len)
{
	size_t n = fg_pbwire_write_varint(dst, (uint64_t)number << 3 | FG_PBWIRE_LEN);

	n += fg_pbwire_write_varint(dst + n, len);
	memmove(dst + n, payload, len);
	return n + len;
}

/* Moves the <len> bytes at <*p> to after field <number>'s tag and length,
 * which go just before them: wraps them as that field, from the end of a
 * buffer towards its start. */
static void wrap(uint8_t **p, uint32_t number, size_t len)
{
	uint8_t head[2 * FG_PBWIRE_VARINT_MAX];
	size_t n = fg_pbwire_write_varint(head, (uint64_t)number << 3 | FG_PBWIRE_LEN);

	n += fg_pbwire_write_varint(head + n, len);
	*p -= n;
	memcpy(*p, head, n);
}

/* A set with one file holding messages "M" nested <depth> deep (a top-level
 * message is at depth 1), built inside out at the end of <buf> (<cap>
 * bytes).  Returns where it starts; <*len> is its length. */
static uint8_t *nested_set(size_t depth, uint8_t *buf, size_t cap, size_t *len)
{
	static const uint8_t name_m[] = { 0x0a, 1, 'M' };              /* DescriptorProto.name */
	static const uint8_t file_name[] = { 0x0a, 7, 'a', '.', 'p', 'r', 'o', 't', 'o' };
	uint8_t *end = buf + cap, *p = end;
	size_t i;

	for (i = 0; i < depth; i++) {
		if (i > 0)
			wrap(&p, 3, (size_t)(end - p));                  /* DescriptorProto.nested_type */
		p -= sizeof(name_m);
		memcpy(p, name_m, sizeof(name_m));
	}
	wrap(&p, 4, (size_t)(end - p));                                  /* FileDescriptorProto.message_type */
	p -= sizeof(file_name);
	memcpy(p, file_name, sizeof(file_name));
	wrap(&p, 1, (size_t)(end - p));                                  /* FileDescriptorSet.file */
	assert_true(p >= buf);
	*len = (size_t)(end - p);
	return p;
}

/*
 * protobuf-c unpacks nested messages by recursion without a limit, and so
 * did the loader's first pass: a 700 KiB set nesting 100000 deep crashed
 * it on the stack (20000 deep, 140 KiB, was enough with 8 MiB of stack).
 */
static void test_nesting_limit(void **state)
{
	static const size_t depths[] = { FG_SCHEMA_MAX_NESTING + 1, 100000 };
	size_t cap = 100000 * 8 + 64, len, i;
	uint8_t *buf = malloc(cap), *set;
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	assert_non_null(buf);
	set = nested_set(FG_SCHEMA_MAX_NESTING, buf, cap, &len);
	assert_int_equal(fg_schema_load_buffer("deep.pb", set, len, &s, err, sizeof(err)), 0);
	assert_non_null(fg_schema_find_message(s, "M.M.M.M"));
	fg_schema_free(s);
	for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		set = nested_set(depths[i], buf, cap, &len);
		assert_int_equal(fg_schema_load_buffer("deep.pb", set, len, &s, err, sizeof(err)), FG_ETOOBIG);
		assert_null(s);
		assert_non_null(strstr(err, "deep.pb: messages nest more than"));
	}
	free(buf);
}

/*
 * Every full name repeats its scope: one message with a 64 KiB name and
 * 1025 nested ones (a 72 KiB set) made 64 MiB of names, and 170 KiB made
 * 790 MB, before FG_SCHEMA_MAX_NAMES.
 */
static void test_names_limit(void **state)
{
	size_t nchild = (FG_SCHEMA_MAX_NAMES >> 16) + 1, big = 1u << 16, room = big + nchild * 16 + 64;
	uint8_t *msg = malloc(room), *file = malloc(room), *set = malloc(room), child[16];
	char *name = malloc(big), cname[16];
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];
	size_t n, i;

	assert_true(msg && file && set && name);
	memset(name, 'L', big);
	n = put_len(msg, 1, name, big);                                  /* DescriptorProto.name */
	for (i = 0; i < nchild; i++) {
		snprintf(cname, sizeof(cname), "C%zu", i);
		n += put_len(msg + n, 3, child, put_len(child, 1, cname, strlen(cname)));
	}
	n = put_len(file, 4, msg, n);                                     /* FileDescriptorProto.message_type */
	n += put_len(file + n, 1, "a.proto", 7);                          /* FileDescriptorProto.name */
	n = put_len(set, 1, file, n);                                     /* FileDescriptorSet.file */
	assert_int_equal(fg_schema_load_buffer("wide.pb", set, n, &s, err, sizeof(err)), FG_ETOOBIG);
	assert_null(s);
	assert_non_null(strstr(err, "wide.pb: the full names of its types and methods take more than"));
	free(name);
	free(set);
	free(file);
	free(msg);
}

/*
 * A set of empty file entries (2 bytes each) unpacked to about 120 times
 * its size: 64 MiB took 7.8 GB at -t and on reload (an attack run).  What
 * a set would take decoded is counted before decoding (fg_pbsize.h): a set
 * over FG_SCHEMA_MAX_UNPACKED is refused without growing; a real one (the
 * reference contract) counts about 13 times its size.
 */
static void test_unpacked_limit(void **state)
{
	size_t n = 2u << 20, i;
	uint8_t *set = malloc(n);
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	(void)state;
	assert_non_null(set);
	for (i = 0; i < n; i += 2) {
		set[i] = 0x0a;          /* FileDescriptorSet.file, length-delimited */
		set[i + 1] = 0;         /* an empty FileDescriptorProto */
	}
	assert_int_equal(fg_schema_load_buffer("empty-files.pb", set, n, &s, err, sizeof(err)), FG_ETOOBIG);
	assert_null(s);
	assert_non_null(strstr(err, "empty-files.pb: it would take more than 128 MiB unpacked"));
	free(set);
}

/*
 * A relative type name is tried in each enclosing scope, each try a lookup
 * as long as the scope: fields under a package of thousands of dots made a
 * 46 KiB set take 6 s and a 90 KiB one 28 s.  The tries are charged to
 * FG_SCHEMA_MAX_LOOKUP; absolute names (what protoc writes) are not.
 */
static void test_lookup_limit(void **state)
{
	size_t ndots = 4096, i;
	char *pkg = malloc(2 * ndots + 2);
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	assert_non_null(pkg);
	for (i = 0; i <= ndots; i++)
		memcpy(pkg + 2 * i, "a.", 2);
	pkg[2 * ndots + 1] = '\0';
	assert_int_equal(load_files(&s, err, sizeof(err), 2, mkfile("t.proto", NULL, "proto3", 1, mkmsg("T", 0)),
	                            mkfile("a.proto", pkg, "proto3", 1,
	                                   mkmsg("M", 2, mkfield("x", 1, OPT, T(MESSAGE), ".T"),
	                                         mkfield("y", 2, OPT, T(MESSAGE), "T")))),
	                 FG_ETOOBIG);
	assert_null(s);
	assert_non_null(strstr(err, "test.pb: resolving its relative type names takes more than"));
	free_built();
	/* the absolute name alone costs one lookup */
	assert_int_equal(load_files(&s, err, sizeof(err), 2, mkfile("t.proto", NULL, "proto3", 1, mkmsg("T", 0)),
	                            mkfile("a.proto", pkg, "proto3", 1,
	                                   mkmsg("M", 1, mkfield("x", 1, OPT, T(MESSAGE), ".T")))),
	                 0);
	fg_schema_free(s);
	free_built();
	free(pkg);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_unknown_method),
		cmocka_unit_test(test_scalar_fields),
		cmocka_unit_test(test_nested_fields),
		cmocka_unit_test(test_cross_file_type),
		cmocka_unit_test(test_nested_type),
		cmocka_unit_test(test_fields_in_number_order),
		cmocka_unit_test(test_maps),
		cmocka_unit_test(test_oneofs),
		cmocka_unit_test(test_packed),
		cmocka_unit_test(test_type_helpers),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_garbage_file),
		cmocka_unit_test(test_err_may_be_null),
		cmocka_unit_test(test_packing_and_scopes),
		cmocka_unit_test(test_proto3_optional),
		cmocka_unit_test(test_proto3_optional_alone),
		cmocka_unit_test(test_bad_sets),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_nesting_limit),
		cmocka_unit_test(test_names_limit),
		cmocka_unit_test(test_unpacked_limit),
		cmocka_unit_test(test_lookup_limit),
	};
	const char *env = getenv("FG_RANKING_PB");

	if (argc > 1)
		ranking_pb = argv[1];
	else if (env && *env)
		ranking_pb = env;
	return cmocka_run_group_tests_name("schema", tests, load_ranking, free_ranking);
}
