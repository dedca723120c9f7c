/*
 * test_policy.c - cmocka group "policy": fg_policy_compile.h and
 * fg_policy_eval.h, through their headers.
 *
 * Policies are written here as text and compiled with
 * fg_policy_compile_load_string() in a private temporary directory that holds:
 *   ranking.pb  the reference contract's descriptor set (the build's
 *               proto/ranking.pb: `make check` names it in FG_RANKING_PB;
 *               by hand, give its path as the first argument);
 *   t.pb        a small proto2 contract built below with the generated
 *               descriptor.pb-c, for what ranking.proto lacks (a map of
 *               messages, integer map keys, sint32, uint64, a required
 *               field, client streaming);
 *   garbage.pb  and the directory sub.pb: descriptor sets that do not load.
 * The demo policy is the tree's policies/demo.yaml, found through
 * FG_SRCDIR (set by `make check`) or next to this file's source path.
 *
 * Error cases give the whole message, "policy.yaml:line:column: text":
 * most policies start with HEAD (lines 1-9, numbered in its comments), and
 * each added line carries its number in a comment, so a position can be
 * checked against the text by eye.
 *
 * Allocation is failed at link time: this program is linked with
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup
 * so every allocation made by libfeedguard's objects goes through the
 * __wrap_* functions below, which count live blocks and fail the Nth
 * allocation when armed.  libyaml and protobuf-c allocate inside their
 * shared libraries, which the wrapping does not reach; fg_yaml and
 * fg_schema's own allocations around them are reached.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_testutil.h"

#include "descriptor.pb-c.h"
#include "fg_error.h"
#include "fg_pbwire.h"
#include "fg_policy_compile.h"
#include "fg_policy_eval.h"

#define RANK_FEED "/feedguard.ranking.v1.Ranker/RankFeed"
#define STREAM_FEED "/feedguard.ranking.v1.Ranker/StreamFeed"
#define NAME "policy.yaml"
#define NSLOTS 4

/* ---- allocation hooks (see the file comment) ---- */

#define FG_FAILALLOC_ALL
#define FG_FAILALLOC_STRDUP
#include "fg_failalloc.h"

/* ---- t.pb (see the file comment) ----
 *
 *   syntax = "proto2";
 *   package t;
 *   message Val { optional string a = 1; optional int32 b = 2; }
 *   message Req {
 *     map<string, Val> m = 1;          // entry message t.Req.MEntry
 *     map<int64, string> n = 2;        // entry message t.Req.NEntry
 *     optional sint32 s = 3;
 *     optional uint64 u = 4;
 *     repeated Val r = 5;
 *     optional bool flag = 6;
 *     optional int32 i = 7;
 *     required int32 must = 8;
 *     optional Tier tier = 9;
 *     optional group G = 10 { optional string x = 11; }
 *     enum Tier { TIER_NONE = 0; KID = 1; GROWN = 2; }
 *   }
 *   service S {
 *     rpc Up(stream Req) returns (Req);
 *     rpc Both(stream Req) returns (stream Req);
 *   }
 */

#define LABEL(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_##x
#define TYPE(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x

static Google__Protobuf__FieldDescriptorProto t_fields[32];
static size_t t_nfields;

static Google__Protobuf__FieldDescriptorProto *t_field(const char *name, int number,
                                                      Google__Protobuf__FieldDescriptorProto__Label label,
                                                      Google__Protobuf__FieldDescriptorProto__Type type,
                                                      const char *type_name)
{
	Google__Protobuf__FieldDescriptorProto *f = &t_fields[t_nfields++];

	google__protobuf__field_descriptor_proto__init(f);
	f->name = (char *)name;
	f->has_number = 1;
	f->number = number;
	f->has_label = 1;
	f->label = label;
	f->has_type = 1;
	f->type = type;
	f->type_name = (char *)type_name;
	return f;
}

static void t_message(Google__Protobuf__DescriptorProto *m, const char *name,
                      Google__Protobuf__FieldDescriptorProto **fields, size_t n)
{
	google__protobuf__descriptor_proto__init(m);
	m->name = (char *)name;
	m->field = fields;
	m->n_field = n;
}

static void t_method(Google__Protobuf__MethodDescriptorProto *m, const char *name, int cs, int ss)
{
	google__protobuf__method_descriptor_proto__init(m);
	m->name = (char *)name;
	m->input_type = (char *)".t.Req";
	m->output_type = (char *)".t.Req";
	m->has_client_streaming = 1;
	m->client_streaming = cs;
	m->has_server_streaming = 1;
	m->server_streaming = ss;
}

static void write_t_pb(const char *path)
{
	Google__Protobuf__FieldDescriptorProto *val_f[2], *req_f[10], *ment_f[2], *nent_f[2], *g_f[1];
	Google__Protobuf__DescriptorProto val, req, ment, nent, g;
	Google__Protobuf__DescriptorProto *msgs[] = { &val, &req }, *entries[] = { &ment, &nent, &g };
	Google__Protobuf__EnumValueDescriptorProto tv[3], *tvs[] = { &tv[0], &tv[1], &tv[2] };
	Google__Protobuf__EnumDescriptorProto tier = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__EnumDescriptorProto *enums[] = { &tier };
	static const char *const tier_names[] = { "TIER_NONE", "KID", "GROWN" };
	Google__Protobuf__MessageOptions map_entry = GOOGLE__PROTOBUF__MESSAGE_OPTIONS__INIT;
	Google__Protobuf__MethodDescriptorProto up, both, *methods[] = { &up, &both };
	Google__Protobuf__ServiceDescriptorProto svc = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__ServiceDescriptorProto *svcs[] = { &svc };
	Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
	Google__Protobuf__FileDescriptorProto *files[] = { &file };
	Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
	uint8_t *buf;
	size_t len;

	t_nfields = 0;
	val_f[0] = t_field("a", 1, LABEL(OPTIONAL), TYPE(STRING), NULL);
	val_f[1] = t_field("b", 2, LABEL(OPTIONAL), TYPE(INT32), NULL);
	t_message(&val, "Val", val_f, 2);
	map_entry.has_map_entry = 1;
	map_entry.map_entry = 1;
	ment_f[0] = t_field("key", 1, LABEL(OPTIONAL), TYPE(STRING), NULL);
	ment_f[1] = t_field("value", 2, LABEL(OPTIONAL), TYPE(MESSAGE), ".t.Val");
	t_message(&ment, "MEntry", ment_f, 2);
	ment.options = &map_entry;
	nent_f[0] = t_field("key", 1, LABEL(OPTIONAL), TYPE(INT64), NULL);
	nent_f[1] = t_field("value", 2, LABEL(OPTIONAL), TYPE(STRING), NULL);
	t_message(&nent, "NEntry", nent_f, 2);
	nent.options = &map_entry;
	req_f[0] = t_field("m", 1, LABEL(REPEATED), TYPE(MESSAGE), ".t.Req.MEntry");
	req_f[1] = t_field("n", 2, LABEL(REPEATED), TYPE(MESSAGE), ".t.Req.NEntry");
	req_f[2] = t_field("s", 3, LABEL(OPTIONAL), TYPE(SINT32), NULL);
	req_f[3] = t_field("u", 4, LABEL(OPTIONAL), TYPE(UINT64), NULL);
	req_f[4] = t_field("r", 5, LABEL(REPEATED), TYPE(MESSAGE), ".t.Val");
	req_f[5] = t_field("flag", 6, LABEL(OPTIONAL), TYPE(BOOL), NULL);
	req_f[6] = t_field("i", 7, LABEL(OPTIONAL), TYPE(INT32), NULL);
	req_f[7] = t_field("must", 8, LABEL(REQUIRED), TYPE(INT32), NULL);
	req_f[8] = t_field("tier", 9, LABEL(OPTIONAL), TYPE(ENUM), ".t.Req.Tier");
	req_f[9] = t_field("g", 10, LABEL(OPTIONAL), TYPE(GROUP), ".t.Req.G");
	t_message(&req, "Req", req_f, 10);
	g_f[0] = t_field("x", 11, LABEL(OPTIONAL), TYPE(STRING), NULL);
	t_message(&g, "G", g_f, 1);
	req.nested_type = entries;
	req.n_nested_type = 3;
	for (int i = 0; i < 3; i++) {
		google__protobuf__enum_value_descriptor_proto__init(&tv[i]);
		tv[i].name = (char *)tier_names[i];
		tv[i].has_number = 1;
		tv[i].number = i;
	}
	tier.name = (char *)"Tier";
	tier.value = tvs;
	tier.n_value = 3;
	req.enum_type = enums;
	req.n_enum_type = 1;
	t_method(&up, "Up", 1, 0);
	t_method(&both, "Both", 1, 1);
	svc.name = (char *)"S";
	svc.method = methods;
	svc.n_method = 2;
	file.name = (char *)"t.proto";
	file.package = (char *)"t";
	file.syntax = (char *)"proto2";
	file.message_type = msgs;
	file.n_message_type = 2;
	file.service = svcs;
	file.n_service = 1;
	set.file = files;
	set.n_file = 1;
	len = google__protobuf__file_descriptor_set__get_packed_size(&set);
	buf = malloc(len);
	assert_non_null(buf);
	assert_int_equal(google__protobuf__file_descriptor_set__pack(&set, buf), len);
	fg_test_write_file(path, buf, len);
	free(buf);
}

/* ---- fixture ---- */

static const char *ranking_pb = "proto/ranking.pb";
static const char *srcdir;
static char dir[PATH_MAX];             /* the private directory, basedir of every policy */
static char *demo;                     /* policies/demo.yaml */
static char err[1024];

static char *read_all(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	if (buf) {
		buf[n] = '\0';
		*len = (size_t)n;
	}
	return buf;
}

static void in_dir(char *out, size_t outlen, const char *name)
{
	snprintf(out, outlen, "%s/%s", dir, name);
}

static int teardown(void **state);

static int setup(void **state)
{
	char path[PATH_MAX + 64], *pb;
	size_t len;

	snprintf(dir, sizeof(dir), "%s/fg-test-policy.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	pb = read_all(ranking_pb, &len);
	if (!pb) {
		fprintf(stderr, "test_policy: cannot read %s (set FG_RANKING_PB to the build's proto/ranking.pb)\n",
		        ranking_pb);
		rmdir(dir);
		return -1;
	}
	in_dir(path, sizeof(path), "ranking.pb");
	fg_test_write_file(path, pb, len);
	free(pb);
	in_dir(path, sizeof(path), "t.pb");
	write_t_pb(path);
	in_dir(path, sizeof(path), "garbage.pb");
	fg_test_write_file(path, "\xff\xff\xff", 3);
	in_dir(path, sizeof(path), "sub.pb");
	if (mkdir(path, 0700) != 0) {
		teardown(state);
		return -1;
	}
	if (srcdir)
		snprintf(path, sizeof(path), "%s/policies/demo.yaml", srcdir);
	else
		snprintf(path, sizeof(path), "%.*s/../../policies/demo.yaml",
		         (int)(strrchr(__FILE__, '/') ? strrchr(__FILE__, '/') - __FILE__ : 1),
		         strrchr(__FILE__, '/') ? __FILE__ : ".");
	demo = read_all(path, &len);
	if (!demo) {
		fprintf(stderr, "test_policy: cannot read %s (set FG_SRCDIR to the source tree)\n", path);
		teardown(state);
		return -1;
	}
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	const char *names[] = { "ranking.pb", "t.pb", "garbage.pb" };
	char path[PATH_MAX + 64];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		in_dir(path, sizeof(path), names[i]);
		unlink(path);
	}
	in_dir(path, sizeof(path), "sub.pb");
	rmdir(path);
	rmdir(dir);
	free(demo);
	return 0;
}

/* ---- helpers ---- */

static int load(const char *text, struct fg_policy **p)
{
	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = '\0';
	return fg_policy_compile_load_string(NAME, dir, text, strlen(text), NSLOTS, p, err, sizeof(err));
}

static struct fg_policy *load_ok(const char *text)
{
	struct fg_policy *p = NULL;
	int rc = load(text, &p);

	if (rc != 0)
		print_error("unexpected: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(p);
	return p;
}

static void expect_error(const char *text, const char *want)
{
	struct fg_policy *p = (struct fg_policy *)(uintptr_t)1;
	int rc = load(text, &p);

	if (rc != FG_ECONFIG || strcmp(err, want) != 0)
		print_error("want: %s\ngot:  %s (rc %d)\npolicy:\n%.2000s\n", want, rc ? err : "success", rc, text);
	if (rc == 0)
		fg_policy_compile_free(p);      /* the test fails below; leak nothing meanwhile */
	assert_int_equal(rc, FG_ECONFIG);
	assert_null(p);
	assert_string_equal(err, want);
}

/* The rule for field <number> of node <m>; fails the test if it has none. */
static const struct fg_pbwire_rule *rule(const struct fg_pbwire_msg *m, uint32_t number)
{
	size_t i;

	assert_non_null(m);
	for (i = 0; i < m->nrules; i++)
		if (m->rules[i].number == number)
			return &m->rules[i];
	fail_msg("no rule for field %u", number);
	return NULL;
}

/* Check node <m>: <allow_only>, and exactly the rules <n> numbers ... in
 * this order (sorted, as fg_pbwire wants them). */
static void expect_node(const struct fg_pbwire_msg *m, int allow_only, size_t n, ...)
{
	va_list ap;
	size_t i;

	assert_non_null(m);
	assert_int_equal(m->allow_only, allow_only);
	assert_int_equal(m->nrules, n);
	va_start(ap, n);
	for (i = 0; i < n; i++)
		assert_int_equal(m->rules[i].number, va_arg(ap, unsigned));
	va_end(ap);
}

/* The sub-node of RECURSE rule <number> of <m>. */
static const struct fg_pbwire_msg *sub(const struct fg_pbwire_msg *m, uint32_t number)
{
	const struct fg_pbwire_rule *r = rule(m, number);

	assert_int_equal(r->action, FG_PBWIRE_RECURSE);
	assert_non_null(r->sub);
	return r->sub;
}

static const char *stat_name(const struct fg_policy *p, uint32_t stat)
{
	assert_true(stat < p->nstats);
	return p->stat_names[stat];
}

static uint64_t stripped(const struct fg_policy *p, size_t slot, uint32_t stat, size_t band)
{
	return p->counters.stripped[(slot * p->nstats + stat) * p->nbands + band];
}

static const struct fg_policy_method *method(const struct fg_policy *p, const char *path)
{
	const struct fg_policy_method *m = fg_policy_find_method(p, path, strlen(path));

	assert_non_null(m);
	return m;
}

static size_t band(const struct fg_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nbands; i++)
		if (strcmp(p->bands[i].name, name) == 0)
			return i;
	fail_msg("no band %s", name);
	return 0;
}

/* Lines 1-9 of most policies below; what a test adds starts at line 10. */
#define HEAD \
	"descriptor_set: ranking.pb\n"                  /* 1 */ \
	"bands:\n"                                      /* 2 */ \
	"  - name: child\n"                             /* 3 */ \
	"    match: [u13, \"13_15\"]\n"                 /* 4 */ \
	"  - name: adult\n"                             /* 5 */ \
	"    match: [adult]\n"                          /* 6 */ \
	"methods:\n"                                    /* 7 */ \
	"  " RANK_FEED ":\n"                            /* 8 */ \
	"    age_band: {header: x-age-band}\n"          /* 9 */

/* HEAD and the start of a request block for band child; the block's keys
 * start at line 12, column 9. */
#define REQ_CHILD HEAD \
	"    request:\n"                                /* 10 */ \
	"      - bands: [child]\n"                      /* 11 */

/* ---- compiling: structure ---- */

static void test_bands(void **state)
{
	struct fg_policy *p = load_ok(
		"descriptor_set: ranking.pb\n"
		"bands:\n"
		"  - name: under_13\n"
		"    match: [u13, under_13]\n"
		"  - name: teen\n"                      /* no match: its name is its value */
		"  - name: adult\n"
		"    match: [adult, \"18+\"]\n"
		"unknown_band: teen\n"
		"methods: {}\n");

	assert_int_equal(p->nbands, 3);
	assert_string_equal(p->bands[0].name, "under_13");
	assert_int_equal(p->bands[0].nmatch, 2);
	assert_string_equal(p->bands[0].match[0], "u13");
	assert_string_equal(p->bands[0].match[1], "under_13");
	assert_string_equal(p->bands[1].name, "teen");
	assert_int_equal(p->bands[1].nmatch, 1);
	assert_string_equal(p->bands[1].match[0], "teen");
	assert_string_equal(p->bands[2].name, "adult");
	assert_int_equal(p->bands[2].nmatch, 2);
	assert_string_equal(p->bands[2].match[1], "18+");
	assert_int_equal(p->unknown_band, 1);
	assert_int_equal(p->nmethods, 0);
	assert_int_equal(p->nstats, 0);
	assert_int_equal(p->counters.nslots, NSLOTS);
	assert_null(p->file);
	fg_policy_compile_free(p);

	/* Without unknown_band, the first (most protective) band. */
	p = load_ok("descriptor_set: ranking.pb\n"
	            "bands: [{name: a}, {name: b}]\n"
	            "methods: {}\n");
	assert_int_equal(p->unknown_band, 0);
	fg_policy_compile_free(p);

	/* A band with an empty match list is selected by nothing. */
	p = load_ok("descriptor_set: ranking.pb\n"
	            "bands: [{name: a}, {name: b, match: []}]\n"
	            "unknown_band: b\n"
	            "methods: {}\n");
	assert_int_equal(p->bands[1].nmatch, 0);
	assert_int_equal(fg_policy_band(p, "b", 1, NULL), 1);     /* unknown: b, not "b" matched */
	assert_int_equal(fg_policy_band(p, "a", 1, NULL), 0);
	fg_policy_compile_free(p);
	fg_policy_compile_free(NULL);
}

/* Every call whose band value matches nothing is compared with every
 * value (the client chooses it): 100,000 values took 1.45 ms a call and
 * 12 s to load (an attack run).  FG_POLICY_MAX_MATCH a band; the 33rd is
 * refused where it stands. */
/* What fg_policy_grpc_path takes: the paths gRPC clients write, and
 * nothing a normalising router could turn into one. */
static void test_grpc_paths(void **state)
{
	static const char *const good[] = { "/feedguard.ranking.v1.Ranker/RankFeed", "/a/b", "/my-svc.v2/Get_1" };
	static const char *const bad[] = {
		"", "/", "//", "/a", "/a/", "a/b", "/a/b/", "/a/b/c", "//a/b", "/a//b", "/a/b?x=1", "/a/b#f",
		"/a/Rank%46eed", "/./a/b", "/a/./b", "/a/../b", "/a/.b", "/a b/c", "/a/b\x7f",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!fg_policy_grpc_path(good[i], strlen(good[i])))
			fail_msg("'%s' is a gRPC path", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (fg_policy_grpc_path(bad[i], strlen(bad[i])))
			fail_msg("'%s' is not a gRPC path", bad[i]);
}

static void test_match_values_bounded(void **state)
{
	char text[4096], want[256];
	struct fg_policy *p;
	size_t n = 0, i;

	(void)state;
	n += (size_t)snprintf(text + n, sizeof(text) - n, "descriptor_set: ranking.pb\nunknown_band: z\nbands:\n"
	                      "  - name: z\n  - name: a\n    match:\n");
	for (i = 0; i < FG_POLICY_MAX_MATCH; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "      - v%zu\n", i);
	snprintf(text + n, sizeof(text) - n, "methods: {}\n");
	p = load_ok(text);
	assert_int_equal(p->bands[1].nmatch, FG_POLICY_MAX_MATCH);
	assert_int_equal(fg_policy_band(p, "v31", 3, NULL), 1);
	assert_int_equal(fg_policy_band(p, "v3", 2, NULL), 1);
	assert_int_equal(fg_policy_band(p, "v", 1, NULL), 0);       /* a prefix of every value: unknown */
	assert_int_equal(fg_policy_band(p, "v310", 4, NULL), 0);    /* one of them and more */
	assert_int_equal(fg_policy_band(p, "v32", 3, NULL), 0);
	fg_policy_compile_free(p);
	snprintf(text + n, sizeof(text) - n, "      - v%d\nmethods: {}\n", FG_POLICY_MAX_MATCH);
	snprintf(want, sizeof(want), NAME ":%d:9: a band's match may hold at most %d values", FG_POLICY_MAX_MATCH + 7,
	         FG_POLICY_MAX_MATCH);
	expect_error(text, want);
}

static void test_demo(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m;

	assert_int_equal(p->nbands, 4);
	assert_string_equal(p->bands[0].name, "under_13");
	assert_string_equal(p->bands[3].name, "adult");
	assert_int_equal(p->unknown_band, 0);
	assert_int_equal(p->nmethods, 2);
	m = method(p, RANK_FEED);
	assert_int_equal(m->request[band(p, "adult")].prog == NULL, 1);
	assert_int_equal(m->response[band(p, "adult")].prog == NULL, 1);
	assert_int_equal(m->request[band(p, "adult")].nremove_headers, 0);
	assert_non_null(m->request[band(p, "16_17")].prog);
	fg_policy_compile_free(p);
}

static void test_methods(void **state)
{
	/* Listed out of order: the compiled array is sorted by path. */
	struct fg_policy *p = load_ok(
		"descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"methods:\n"
		"  " STREAM_FEED ":\n"
		"    age_band: {header: x-age-band}\n"
		"  " RANK_FEED ":\n"
		"    age_band: {header: x-age-band}\n");
	const struct fg_policy_method *rank, *stream;
	char longer[] = RANK_FEED "X";

	assert_int_equal(p->nmethods, 2);
	assert_string_equal(p->methods[0].path, RANK_FEED);
	assert_string_equal(p->methods[1].path, STREAM_FEED);
	assert_int_equal(p->methods[0].index, 0);
	assert_int_equal(p->methods[1].index, 1);
	rank = method(p, RANK_FEED);
	stream = method(p, STREAM_FEED);
	assert_ptr_equal(rank, &p->methods[0]);
	assert_ptr_equal(stream, &p->methods[1]);
	assert_int_equal(rank->client_streaming, 0);
	assert_int_equal(rank->server_streaming, 0);
	assert_int_equal(stream->client_streaming, 0);
	assert_int_equal(stream->server_streaming, 1);
	/* <len> bounds the path: a prefix of a longer buffer is found. */
	assert_ptr_equal(fg_policy_find_method(p, longer, strlen(RANK_FEED)), rank);
	assert_null(fg_policy_find_method(p, longer, strlen(longer)));
	assert_null(fg_policy_find_method(p, RANK_FEED, strlen(RANK_FEED) - 1));
	assert_null(fg_policy_find_method(p, "/feedguard.ranking.v1.Ranker/Other", 34));
	assert_null(fg_policy_find_method(p, "/grpc.health.v1.Health/Check", 28));
	assert_null(fg_policy_find_method(p, "", 0));
	/* No rule block: every band passes both directions unedited. */
	assert_null(rank->request[0].prog);
	assert_null(rank->response[0].prog);
	fg_policy_compile_free(p);

	p = load_ok("descriptor_set: t.pb\n"
	            "bands: [{name: child}]\n"
	            "methods:\n"
	            "  /t.S/Up: {age_band: {header: b}}\n"
	            "  /t.S/Both: {age_band: {header: b}}\n");
	assert_string_equal(p->methods[0].path, "/t.S/Both");
	assert_int_equal(p->methods[0].client_streaming, 1);
	assert_int_equal(p->methods[0].server_streaming, 1);
	assert_string_equal(p->methods[1].path, "/t.S/Up");
	assert_int_equal(p->methods[1].client_streaming, 1);
	assert_int_equal(p->methods[1].server_streaming, 0);
	fg_policy_compile_free(p);
}

static void test_sources(void **state)
{
	struct fg_policy *p = load_ok(
		"descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"methods:\n"
		"  " RANK_FEED ":\n"
		"    user_id: {field: user.user_id}\n"
		"    age_band: {header: X-Age-Band}\n"
		"  " STREAM_FEED ":\n"
		"    user_id: {header: X-User}\n"
		"    age_band: {field: context.surface}\n");
	const struct fg_policy_method *m = method(p, RANK_FEED);

	assert_int_equal(m->user_id.kind, FG_POLICY_SRC_FIELD);
	assert_int_equal(m->user_id.depth, 2);
	assert_int_equal(m->user_id.path[0], 1);        /* RankFeedRequest.user */
	assert_int_equal(m->user_id.path[1], 1);        /* User.user_id */
	assert_int_equal(m->user_id.value, FG_POLICY_V_STRING);
	assert_int_equal(m->user_id.sint, 0);
	assert_null(m->user_id.header);
	assert_int_equal(m->age_band.kind, FG_POLICY_SRC_HEADER);
	assert_string_equal(m->age_band.header, "x-age-band");  /* lowercase, as HTTP/2 sends it */
	m = method(p, STREAM_FEED);
	assert_int_equal(m->user_id.kind, FG_POLICY_SRC_HEADER);
	assert_string_equal(m->user_id.header, "x-user");
	assert_int_equal(m->age_band.kind, FG_POLICY_SRC_FIELD);
	assert_int_equal(m->age_band.depth, 2);
	assert_int_equal(m->age_band.path[0], 2);       /* context */
	assert_int_equal(m->age_band.path[1], 1);       /* surface, an enum */
	assert_int_equal(m->age_band.value, FG_POLICY_V_INTEGER);
	fg_policy_compile_free(p);

	p = load_ok("descriptor_set: ranking.pb\n"
	            "bands: [{name: child}]\n"
	            "methods:\n"
	            "  " RANK_FEED ": {age_band: {field: page_size}}\n");
	m = method(p, RANK_FEED);
	assert_int_equal(m->user_id.kind, FG_POLICY_SRC_NONE);
	assert_int_equal(m->age_band.kind, FG_POLICY_SRC_FIELD);
	assert_int_equal(m->age_band.depth, 1);
	assert_int_equal(m->age_band.path[0], 4);
	assert_int_equal(m->age_band.value, FG_POLICY_V_INTEGER);
	assert_int_equal(m->age_band.sint, 0);
	fg_policy_compile_free(p);

	p = load_ok("descriptor_set: t.pb\n"
	            "bands: [{name: child}]\n"
	            "methods:\n"
	            "  /t.S/Up: {user_id: {field: u}, age_band: {field: s}}\n");
	m = method(p, "/t.S/Up");
	assert_int_equal(m->user_id.path[0], 4);
	assert_int_equal(m->user_id.value, FG_POLICY_V_INTEGER);
	assert_int_equal(m->user_id.sint, 0);
	assert_int_equal(m->age_band.path[0], 3);
	assert_int_equal(m->age_band.value, FG_POLICY_V_INTEGER);
	assert_int_equal(m->age_band.sint, 1);
	fg_policy_compile_free(p);
}

/* keep_only of one leaf three levels down: an allow-list at each level. */
static void test_keep_only(void **state)
{
	struct fg_policy *p = load_ok(REQ_CHILD
		"        keep_only: [context.geo.latitude]\n");   /* 12 */
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_msg *root = m->request[0].prog, *ctx, *geo;
	const struct fg_pbwire_rule *r;

	expect_node(root, 1, 1, 2u);
	assert_string_equal(stat_name(p, root->unlisted_stat), "request:(not in keep_only)");
	ctx = sub(root, 2);
	expect_node(ctx, 1, 1, 4u);
	geo = sub(ctx, 4);
	expect_node(geo, 1, 1, 1u);
	r = rule(geo, 1);
	assert_int_equal(r->action, FG_PBWIRE_KEEP);
	assert_null(r->sub);
	assert_int_equal(r->stat, UINT32_MAX);          /* keeping counts nothing */
	assert_int_equal(p->nstats, 1);
	/* The adult band has no block; responses have none. */
	assert_null(m->request[1].prog);
	assert_null(m->response[0].prog);
	assert_int_equal(m->request[0].nremove_headers, 0);
	fg_policy_compile_free(p);

	/* The same leaf kept and coarsened: the KEEP becomes COARSEN. */
	p = load_ok(REQ_CHILD
		"        keep_only: [context.geo.latitude, page_size, cursor, user]\n"  /* 12 */
		"        coarsen: [{field: context.geo.latitude, precision: 0.25}]\n"); /* 13 */
	root = method(p, RANK_FEED)->request[0].prog;
	/* Sorted by number whatever the order in the policy; the oneof
	 * "cursor" is both its members (page_token 5, offset 6). */
	expect_node(root, 1, 5, 1u, 2u, 4u, 5u, 6u);
	assert_int_equal(rule(root, 1)->action, FG_PBWIRE_KEEP);
	assert_int_equal(rule(root, 4)->action, FG_PBWIRE_KEEP);
	assert_int_equal(rule(root, 5)->action, FG_PBWIRE_KEEP);
	assert_int_equal(rule(root, 6)->action, FG_PBWIRE_KEEP);
	geo = sub(sub(root, 2), 4);
	expect_node(geo, 1, 1, 1u);
	r = rule(geo, 1);
	assert_int_equal(r->action, FG_PBWIRE_COARSEN);
	assert_int_equal(r->scalar, FG_PBWIRE_S_DOUBLE);
	assert_true(r->precision == 0.25);
	assert_string_equal(stat_name(p, r->stat), "request:context.geo.latitude");
	fg_policy_compile_free(p);

	/* remove inside a field keep_only keeps whole: that field's node
	 * copies everything but what is removed. */
	p = load_ok(REQ_CHILD
		"        keep_only: [user, context.locale]\n"          /* 12 */
		"        remove: [user.account_age_days]\n");          /* 13 */
	root = method(p, RANK_FEED)->request[0].prog;
	expect_node(root, 1, 2, 1u, 2u);
	expect_node(sub(root, 1), 0, 1, 3u);
	assert_int_equal(rule(sub(root, 1), 3)->action, FG_PBWIRE_DROP);
	assert_string_equal(stat_name(p, rule(sub(root, 1), 3)->stat), "request:user.account_age_days");
	expect_node(sub(root, 2), 1, 1, 2u);
	assert_int_equal(rule(sub(root, 2), 2)->action, FG_PBWIRE_KEEP);
	fg_policy_compile_free(p);
}

static void test_remove(void **state)
{
	struct fg_policy *p = load_ok(HEAD
		"    request:\n"                                                /* 10 */
		"      - bands: \"*\"\n"                                        /* 11 */
		"        remove: [signals.watch_history, page_size,\n"          /* 12 */
		"                 signals.advertising_id, cursor]\n"            /* 13 */
		"    response:\n"                                               /* 14 */
		"      - bands: [child]\n"                                      /* 15 */
		"        remove: [items.explanations.reason, profile_segments]\n");   /* 16 */
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_msg *root = m->request[0].prog, *sig, *expl;

	/* "*": every band gets the same program. */
	assert_ptr_equal(m->request[1].prog, root);
	expect_node(root, 0, 4, 3u, 4u, 5u, 6u);
	assert_int_equal(root->unlisted_stat, UINT32_MAX);
	assert_int_equal(rule(root, 3)->stat, UINT32_MAX);
	sig = sub(root, 3);
	expect_node(sig, 0, 2, 1u, 5u);
	assert_int_equal(rule(sig, 1)->action, FG_PBWIRE_DROP);
	assert_int_equal(rule(sig, 5)->action, FG_PBWIRE_DROP);
	assert_int_equal(rule(root, 4)->action, FG_PBWIRE_DROP);
	assert_int_equal(rule(root, 5)->action, FG_PBWIRE_DROP);
	assert_int_equal(rule(root, 6)->action, FG_PBWIRE_DROP);
	/* A counter per path, named "<direction>:<path as written>"; a oneof's
	 * members count under its name. */
	assert_string_equal(stat_name(p, rule(sig, 1)->stat), "request:signals.watch_history");
	assert_string_equal(stat_name(p, rule(root, 4)->stat), "request:page_size");
	assert_string_equal(stat_name(p, rule(sig, 5)->stat), "request:signals.advertising_id");
	assert_string_equal(stat_name(p, rule(root, 5)->stat), "request:cursor");
	assert_string_equal(stat_name(p, rule(root, 6)->stat), "request:cursor");
	assert_int_not_equal(rule(sig, 1)->stat, rule(sig, 5)->stat);
	assert_int_not_equal(rule(sig, 1)->stat, rule(root, 4)->stat);

	/* Response: the repeated message items, then explanations (repeated
	 * too): RECURSE edits each element. */
	root = m->response[0].prog;
	assert_null(m->response[1].prog);
	expect_node(root, 0, 2, 1u, 2u);
	expect_node(sub(root, 1), 0, 1, 5u);
	expl = sub(sub(root, 1), 5);
	expect_node(expl, 0, 1, 1u);
	assert_int_equal(rule(expl, 1)->action, FG_PBWIRE_DROP);
	assert_string_equal(stat_name(p, rule(expl, 1)->stat), "response:items.explanations.reason");
	assert_int_equal(rule(root, 2)->action, FG_PBWIRE_DROP);
	assert_string_equal(stat_name(p, rule(root, 2)->stat), "response:profile_segments");
	/* Counters: slots x stats x bands, and slots x methods x bands. */
	assert_non_null(p->counters.stripped);
	assert_non_null(p->counters.calls);
	assert_int_equal(p->counters.nslots, NSLOTS);
	assert_int_equal(p->counters.stripped[NSLOTS * p->nstats * p->nbands - 1], 0);
	assert_int_equal(p->counters.calls[NSLOTS * p->nmethods * p->nbands - 1], 0);
	fg_policy_compile_free(p);
}

static void test_coarsen_kinds(void **state)
{
	struct fg_policy *p = load_ok(REQ_CHILD
		"        coarsen:\n"                                                   /* 12 */
		"          - {field: page_size, precision: 10}\n"                      /* 13 */
		"          - {field: recently_shown_ids, precision: 1000}\n"           /* 14 */
		"          - {field: context.geo.accuracy_m, precision: 1e3}\n"        /* 15 */
		"          - {field: context.geo.longitude, precision: 0.5}\n");       /* 16 */
	const struct fg_pbwire_msg *root = method(p, RANK_FEED)->request[0].prog, *geo;
	const struct fg_pbwire_rule *r;

	expect_node(root, 0, 3, 2u, 4u, 7u);
	r = rule(root, 4);
	assert_int_equal(r->action, FG_PBWIRE_COARSEN);
	assert_int_equal(r->scalar, FG_PBWIRE_S_INT32);
	assert_true(r->precision == 10);
	r = rule(root, 7);                      /* repeated int64: each element */
	assert_int_equal(r->action, FG_PBWIRE_COARSEN);
	assert_int_equal(r->scalar, FG_PBWIRE_S_INT64);
	assert_true(r->precision == 1000);
	geo = sub(sub(root, 2), 4);
	expect_node(geo, 0, 2, 2u, 3u);
	assert_int_equal(rule(geo, 3)->scalar, FG_PBWIRE_S_FLOAT);
	assert_true(rule(geo, 3)->precision == 1000);
	assert_int_equal(rule(geo, 2)->scalar, FG_PBWIRE_S_DOUBLE);
	assert_true(rule(geo, 2)->precision == 0.5);
	assert_string_equal(stat_name(p, rule(geo, 3)->stat), "request:context.geo.accuracy_m");
	fg_policy_compile_free(p);

	p = load_ok("descriptor_set: t.pb\n"
	            "bands: [{name: child}]\n"
	            "methods:\n"
	            "  /t.S/Up:\n"
	            "    age_band: {header: b}\n"
	            "    request:\n"
	            "      - bands: [child]\n"
	            "        coarsen: [{field: s, precision: 4}, {field: u, precision: 100}]\n");
	root = method(p, "/t.S/Up")->request[0].prog;
	expect_node(root, 0, 2, 3u, 4u);
	assert_int_equal(rule(root, 3)->scalar, FG_PBWIRE_S_SINT32);
	assert_int_equal(rule(root, 4)->scalar, FG_PBWIRE_S_UINT64);
	fg_policy_compile_free(p);
}

#define T_UP \
	"descriptor_set: t.pb\n"                        /* 1 */ \
	"bands: [{name: child}, {name: adult}]\n"       /* 2 */ \
	"methods:\n"                                    /* 3 */ \
	"  /t.S/Up:\n"                                  /* 4 */ \
	"    age_band: {header: b}\n"                   /* 5 */ \
	"    request:\n"                                /* 6 */ \
	"      - bands: [child]\n"                      /* 7 */

static void test_maps(void **state)
{
	struct fg_policy *p = load_ok(REQ_CHILD
		"        remove:\n"                                    /* 12 */
		"          - signals.features[\"affinity.gaming\"]\n"  /* 13 */
		"          - signals.features[session_depth]\n"        /* 14 */
		"          - signals.features[\"a]b\"]\n");               /* 15 */
	const struct fg_pbwire_msg *root = method(p, RANK_FEED)->request[0].prog;
	const struct fg_pbwire_rule *r;

	expect_node(root, 0, 1, 3u);
	expect_node(sub(root, 3), 0, 1, 8u);
	r = rule(sub(root, 3), 8);
	assert_int_equal(r->action, FG_PBWIRE_DROP_KEYS);
	assert_non_null(r->keys);
	assert_int_equal(r->keys->n, 3);
	assert_null(r->keys->num);
	assert_non_null(r->keys->str);
	assert_non_null(r->keys->str_len);
	assert_int_equal(r->keys->str_len[0], 15);
	assert_memory_equal(r->keys->str[0], "affinity.gaming", 15);
	assert_int_equal(r->keys->str_len[1], 13);
	assert_memory_equal(r->keys->str[1], "session_depth", 13);
	/* Inside quotes, "]" is part of the key. */
	assert_int_equal(r->keys->str_len[2], 3);
	assert_memory_equal(r->keys->str[2], "a]b", 3);
	/* One counter for the map, named after the first path. */
	assert_int_equal(p->nstats, 1);
	assert_string_equal(stat_name(p, r->stat), "request:signals.features[\"affinity.gaming\"]");
	fg_policy_compile_free(p);

	/* Integer keys; a map of messages walked with [*]. */
	p = load_ok(T_UP
		"        remove: ['n[42]', 'n[-7]', 'm[*].a']\n"       /* 8 */
		"      - bands: [adult]\n"                             /* 9 */
		"        keep_only: ['m[*].b', i, must]\n");           /* 10 */
	root = method(p, "/t.S/Up")->request[0].prog;
	expect_node(root, 0, 2, 1u, 2u);
	r = rule(root, 2);
	assert_int_equal(r->action, FG_PBWIRE_DROP_KEYS);
	assert_int_equal(r->scalar, FG_PBWIRE_S_NONE);  /* int64 keys: a varint read as int64 */
	assert_int_equal(r->keys->n, 2);
	assert_null(r->keys->str);
	assert_int_equal(r->keys->num[0], 42);
	assert_int_equal(r->keys->num[1], -7);
	/* m: the entry (key 1, value 2), then the value message Val. */
	expect_node(sub(root, 1), 0, 1, 2u);
	expect_node(sub(sub(root, 1), 2), 0, 1, 1u);
	assert_int_equal(rule(sub(sub(root, 1), 2), 1)->action, FG_PBWIRE_DROP);
	assert_string_equal(stat_name(p, rule(sub(sub(root, 1), 2), 1)->stat), "request:m[*].a");
	/* Under an allow-list the entry node keeps its key (it is not
	 * allow_only); the allow-list applies inside the value. */
	root = method(p, "/t.S/Up")->request[1].prog;
	expect_node(root, 1, 3, 1u, 7u, 8u);
	expect_node(sub(root, 1), 0, 1, 2u);
	expect_node(sub(sub(root, 1), 2), 1, 1, 2u);
	assert_int_equal(rule(sub(sub(root, 1), 2), 2)->action, FG_PBWIRE_KEEP);
	assert_int_equal(rule(root, 7)->action, FG_PBWIRE_KEEP);
	fg_policy_compile_free(p);
}

static void test_remove_headers(void **state)
{
	struct fg_policy *p = load_ok(REQ_CHILD
		"        remove_headers: [X-Device-ID, x-advertising-id]\n"   /* 12 */
		"      - bands: [adult]\n"                                      /* 13 */
		"        remove_headers: [x-debug]\n");                         /* 14 */
	const struct fg_policy_method *m = method(p, RANK_FEED);

	/* Headers only: no program, the message passes unedited. */
	assert_null(m->request[0].prog);
	assert_int_equal(m->request[0].nremove_headers, 2);
	assert_string_equal(m->request[0].remove_headers[0], "x-device-id");
	assert_string_equal(m->request[0].remove_headers[1], "x-advertising-id");
	assert_int_equal(m->request[1].nremove_headers, 1);
	assert_string_equal(m->request[1].remove_headers[0], "x-debug");
	assert_int_equal(m->response[0].nremove_headers, 0);
	fg_policy_compile_free(p);
}

/* ---- compiling: every error, with its exact position ---- */

static void test_err_top(void **state)
{
	char want[PATH_MAX + 256];

	expect_error("descriptor_set: ranking.pb\n"
	             "bandz: []\n",
	             NAME ":2:1: unknown key 'bandz' in the policy (valid keys: descriptor_set, bands, "
	             "unknown_band, classes, label_maps, rule_sets, time_zone, time_zones, methods, limits)");
	expect_error("descriptor_set: ranking.pb\n"
	             "methods: {}\n"
	             "methods: {}\n",
	             NAME ":3:1: duplicate key 'methods' in the policy");
	/* Requirements are reported at the root mapping: the first key. */
	expect_error("# a comment\n"
	             "bands: [{name: a}]\n",
	             NAME ":2:1: 'descriptor_set' is required: the platform's descriptor set "
	             "(protoc --include_imports --descriptor_set_out=FILE)");
	expect_error("", NAME ":1:1: 'descriptor_set' is required: the platform's descriptor set "
	                 "(protoc --include_imports --descriptor_set_out=FILE)");
	/* "Europe/London\0x" was taken as Europe/London (an attack run) */
	expect_error("descriptor_set: ranking.pb\n"
	             "time_zone: \"Europe/London\\0x\"\n",
	             NAME ":2:12: a key or value must not contain a NUL byte");
	/* 5,000 copies of one zone were taken (an attack run) */
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "time_zones: [Europe/London, UTC,\n"
	             "  Europe/London]\n",
	             NAME ":4:3: time_zones: Europe/London is listed twice (first at line 3)");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "time_zones: [posix/localtime]\n",
	             NAME ":3:14: time zone: time zone name \"posix/localtime\" is each host's own zone: name the "
	             "zone (Europe/London, UTC) (an IANA name like Europe/London, from /usr/share/zoneinfo)");
	expect_error("descriptor_set: [ranking.pb]\n",
	             NAME ":1:17: descriptor_set must be a single value, not a list");
	expect_error("descriptor_set:\n", NAME ":1:16: descriptor_set must be a single value, not an empty value");
	snprintf(want, sizeof(want), NAME ":1:17: %s/missing.pb: cannot open: No such file or directory", dir);
	expect_error("descriptor_set: missing.pb\n", want);
	snprintf(want, sizeof(want), NAME ":1:17: %s/sub.pb: cannot read: not a regular file", dir);
	expect_error("descriptor_set: sub.pb\n", want);
	snprintf(want, sizeof(want), NAME ":1:17: %s/garbage.pb: not a FileDescriptorSet (it does not parse as "
	         "one; make it with protoc --include_imports --descriptor_set_out)", dir);
	expect_error("descriptor_set: garbage.pb\n", want);
	expect_error("descriptor_set: ranking.pb\n"
	             "methods: {}\n",
	             NAME ":1:1: 'bands' is required: the age bands the platform uses, most protective first");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n",
	             NAME ":1:1: 'methods' is required: the gRPC methods feedguard intercepts");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods: [x]\n",
	             NAME ":3:10: methods must be a mapping, not a list");
	/* YAML errors come from fg_yaml, positioned too. */
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [\n",
	             NAME ":3:1: did not find expected node content (while parsing a flow node started at 3:1)");
}

static void test_err_bands(void **state)
{
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: []\n",
	             NAME ":2:8: bands must list 1 to 16 bands");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: a\n",
	             NAME ":2:8: bands must be a list, not a single value");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [a]\n",
	             NAME ":2:9: a band must be a mapping, not a single value");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - name: a\n"
	             "  - name: b\n"
	             "  - name: a\n",
	             NAME ":5:11: band 'a' is declared twice");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - name: a\n"
	             "    match: [x, y]\n"
	             "  - name: b\n"
	             "    match: [z, y]\n",
	             NAME ":5:5: value 'y' selects both band 'a' and band 'b'");
	/* A band's name is its value when it has no match list. */
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - name: a\n"
	             "  - name: b\n"
	             "    match: [a]\n",
	             NAME ":4:5: value 'a' selects both band 'a' and band 'b'");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - name: a\n"
	             "    match: [x, x]\n",
	             NAME ":3:5: value 'x' selects both band 'a' and band 'a'");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - match: [x]\n",
	             NAME ":3:5: a band needs a name");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - name: a\n"
	             "    matches: [x]\n",
	             NAME ":4:5: unknown key 'matches' in a band (valid keys: name, match)");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a, match: x}]\n",
	             NAME ":2:26: a band's match must be a list, not a single value");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a, match: [x, [y]]}]\n",
	             NAME ":2:30: a band value must be a single value, not a list");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}, {name: b}]\n"
	             "unknown_band: c\n",
	             NAME ":3:15: unknown_band names a band that is not declared in bands");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "unknown_band: [a]\n",
	             NAME ":3:15: unknown_band must be a single value, not a list");
}

static void test_err_methods(void **state)
{
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  /feedguard.ranking.v1.Ranker/Nope:\n"
	             "    age_band: {header: x-age-band}\n",
	             NAME ":4:3: method '/feedguard.ranking.v1.Ranker/Nope' is not in the descriptor set "
	             "(write it as /package.Service/Method)");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  feedguard.ranking.v1.Ranker/RankFeed:\n"
	             "    age_band: {header: x-age-band}\n",
	             NAME ":4:3: method 'feedguard.ranking.v1.Ranker/RankFeed' is not in the descriptor set "
	             "(write it as /package.Service/Method)");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  " RANK_FEED ":\n"
	             "    user_id: {field: user.user_id}\n",
	             NAME ":4:3: method '" RANK_FEED "' needs age_band: where the age band comes from");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  " RANK_FEED ": {age_band: {header: b}}\n"
	             "  " RANK_FEED ": {age_band: {header: b}}\n",
	             NAME ":5:3: method '" RANK_FEED "' is listed twice");
	expect_error(HEAD
	             "    requests: []\n",                                                 /* 10 */
	             NAME ":10:5: unknown key 'requests' in a method (valid keys: user_id, age_band, request, "
	             "response, feed, filter, time_zone, screen_time, capture_redact)");
	expect_error(HEAD
	             "    request: {bands: [child]}\n",                                    /* 10 */
	             NAME ":10:14: request must be a list of rule blocks or the name of a rule set, not a mapping");
	expect_error(HEAD
	             "    request: [[child]]\n",                                           /* 10 */
	             NAME ":10:15: a rule block must be a mapping, not a list");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  " RANK_FEED ": []\n",
	             NAME ":4:42: a method must be a mapping, not a list");
}

static void test_err_sources(void **state)
{
	expect_error(HEAD
	             "    user_id: {field: recently_shown_ids}\n",                        /* 10 */
	             NAME ":10:22: user_id: 'recently_shown_ids' is a repeated field; it needs a single value");
	expect_error(HEAD
	             "    user_id: {header: x-user, field: user.user_id}\n",              /* 10 */
	             NAME ":10:14: user_id takes exactly one of 'header' or 'field'");
	expect_error(HEAD
	             "    user_id: {}\n",                                                 /* 10 */
	             NAME ":10:14: user_id takes exactly one of 'header' or 'field'");
	expect_error(HEAD
	             "    user_id: x-user\n",                                             /* 10 */
	             NAME ":10:14: user_id must be a mapping, not a single value");
	expect_error(HEAD
	             "    user_id: {cookie: sid}\n",                                      /* 10 */
	             NAME ":10:15: unknown key 'cookie' in user_id (valid keys: header, field)");
	expect_error(HEAD
	             "    user_id: {field: user}\n",                                      /* 10 */
	             NAME ":10:22: user_id: 'user' is message; it must be a string or an integer");
	expect_error(HEAD
	             "    user_id: {field: context.geo.latitude}\n",                      /* 10 */
	             NAME ":10:22: user_id: 'context.geo.latitude' is double; it must be a string or an integer");
	expect_error(HEAD
	             "    user_id: {field: user.nope}\n",                                 /* 10 */
	             NAME ":10:22: user_id: 'user.nope': feedguard.ranking.v1.User has no field 'nope'");
	expect_error(HEAD
	             "    user_id: {field: user.user_id.x}\n",                            /* 10 */
	             NAME ":10:22: user_id: 'user.user_id.x': a scalar has no field 'x'");
	expect_error(HEAD
	             "    user_id: {field: 'signals.features[*]'}\n",                     /* 10 */
	             NAME ":10:22: user_id: 'signals.features[*]' cannot go through map entries");
	expect_error(HEAD
	             "    user_id: {field: user..user_id}\n",                             /* 10 */
	             NAME ":10:22: 'user..user_id' is not a field path");
	expect_error(HEAD
	             "    user_id: {field: [user]}\n",                                    /* 10 */
	             NAME ":10:22: user_id must be a single value, not a list");
	expect_error(HEAD
	             "    user_id: {header: [x]}\n",                                      /* 10 */
	             NAME ":10:23: a header name must be a single value, not a list");
	/* The source of the band, on another line: the same checks. */
	expect_error("descriptor_set: ranking.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  " RANK_FEED ":\n"
	             "    age_band: {field: signals.search_history}\n",
	             NAME ":5:23: age_band: 'signals.search_history' is a repeated field; it needs a single value");
	expect_error("descriptor_set: t.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  /t.S/Up: {age_band: {field: r.a}}\n",
	             NAME ":4:31: age_band: 'r.a' goes through repeated field 'r'");
	expect_error("descriptor_set: t.pb\n"
	             "bands: [{name: a}]\n"
	             "methods:\n"
	             "  /t.S/Up: {age_band: {field: flag}}\n",
	             NAME ":4:31: age_band: 'flag' is bool; it must be a string or an integer");
}

static void test_err_blocks(void **state)
{
	expect_error(HEAD
	             "    request:\n"                                                 /* 10 */
	             "      - bands: [child, teen]\n",                                /* 11 */
	             NAME ":11:24: band 'teen' is not declared in bands");
	expect_error(HEAD
	             "    request:\n"                                                 /* 10 */
	             "      - remove: [page_size]\n",                                 /* 11 */
	             NAME ":11:9: a rule block needs 'bands': the bands it applies to (or \"*\")");
	expect_error(HEAD
	             "    request:\n"                                                 /* 10 */
	             "      - bands: child\n",                                        /* 11 */
	             NAME ":11:16: bands must be a list, not a single value");
	expect_error(REQ_CHILD
	             "        remove: [page_size]\n"                                  /* 12 */
	             "      - bands: [adult, child]\n"                                /* 13 */
	             "        remove: [cursor]\n",                                    /* 14 */
	             NAME ":13:16: band 'child' already has a request rule block");
	expect_error(REQ_CHILD
	             "        remove_headers: [x-device-id]\n"                        /* 12 */
	             "      - bands: \"*\"\n"                                         /* 13 */
	             "        remove: [cursor]\n",                                    /* 14 */
	             NAME ":13:16: band 'child' already has a request rule block");
	expect_error(HEAD
	             "    response:\n"                                                /* 10 */
	             "      - bands: [child]\n"                                       /* 11 */
	             "        remove: [profile_segments]\n"                           /* 12 */
	             "      - bands: [child]\n"                                       /* 13 */
	             "        remove: [model_version]\n",                             /* 14 */
	             NAME ":13:16: band 'child' already has a response rule block");
	expect_error(HEAD
	             "    response:\n"                                                /* 10 */
	             "      - bands: [child]\n"                                       /* 11 */
	             "        remove_headers: [x-debug]\n",                           /* 12 */
	             NAME ":12:9: unknown key 'remove_headers' in a response rule block (valid keys: bands, "
	             "keep_only, remove, coarsen)");
	expect_error(REQ_CHILD
	             "        drop: [page_size]\n",                                   /* 12 */
	             NAME ":12:9: unknown key 'drop' in a request rule block (valid keys: bands, keep_only, "
	             "remove, coarsen, pseudonymize, remove_headers)");
	expect_error(REQ_CHILD
	             "        remove_headers: [\":authority\"]\n",                    /* 12 */
	             NAME ":12:26: pseudo-headers (:authority) cannot be removed");
	expect_error(REQ_CHILD
	             "        remove_headers: x-device-id\n",                         /* 12 */
	             NAME ":12:25: remove_headers must be a list, not a single value");
	expect_error(REQ_CHILD
	             "        keep_only: page_size\n",                                /* 12 */
	             NAME ":12:20: keep_only must be a list, not a single value");
	expect_error(REQ_CHILD
	             "        remove: [[page_size]]\n",                               /* 12 */
	             NAME ":12:18: a field path must be a single value, not a list");
}

static void test_err_paths(void **state)
{
	expect_error(REQ_CHILD
	             "        remove: [signals.nope]\n",                              /* 12 */
	             NAME ":12:18: 'signals.nope': message feedguard.ranking.v1.Signals has no field 'nope'");
	expect_error(REQ_CHILD
	             "        keep_only: [users]\n",                                  /* 12 */
	             NAME ":12:21: 'users': message feedguard.ranking.v1.RankFeedRequest has no field 'users'");
	expect_error(REQ_CHILD
	             "        remove: [page_size.value]\n",                           /* 12 */
	             NAME ":12:18: 'page_size.value': 'page_size' is int32; only messages have fields");
	expect_error(REQ_CHILD
	             "        remove:\n"                                              /* 12 */
	             "          - user[\"a\"]\n",                                     /* 13 */
	             NAME ":13:13: 'user[\"a\"]': 'user' is not a map; [key] selects a map's entries (a repeated "
	             "field's elements are removed or kept together)");
	expect_error(REQ_CHILD
	             "        keep_only:\n"                                           /* 12 */
	             "          - signals.features[x]\n",                             /* 13 */
	             NAME ":13:13: 'signals.features[x]': [key] selects map entries, and only 'remove' takes it");
	expect_error(REQ_CHILD
	             "        remove:\n"                                              /* 12 */
	             "          - user[*].user_id\n",                                 /* 13 */
	             NAME ":13:13: 'user[*].user_id': 'user' is not a map; [] selects map entries");
	expect_error(REQ_CHILD
	             "        remove:\n"                                              /* 12 */
	             "          - signals.features[*]\n",                             /* 13 */
	             NAME ":13:13: 'signals.features[*]': [*] must be followed by a field of the map's value");
	expect_error(REQ_CHILD
	             "        remove:\n"                                              /* 12 */
	             "          - signals.features[*].x\n",                           /* 13 */
	             NAME ":13:13: 'signals.features[*].x': 'features' is double; only messages have fields");
	expect_error(REQ_CHILD
	             "        remove:\n"                                              /* 12 */
	             "          - cursor[*].x\n",                                     /* 13 */
	             NAME ":13:13: 'cursor[*].x': message feedguard.ranking.v1.RankFeedRequest has no field "
	             "'cursor'");
	expect_error(REQ_CHILD
	             "        remove: [signals.features, 'signals.features[\"x\"]']\n",    /* 12 */
	             NAME ":12:36: 'signals.features[\"x\"]': map 'features' already has another rule");
	expect_error(REQ_CHILD
	             "        remove: ['signals.features[\"x\"]', signals.features]\n",    /* 12 */
	             NAME ":12:43: 'signals.features': field 'features' already has a rule (another action) "
	             "here");
	expect_error(REQ_CHILD
	             "        keep_only: [user, user.user_id]\n",                     /* 12 */
	             NAME ":12:27: 'user.user_id' is inside 'user', which keep_only already keeps whole");
	expect_error(REQ_CHILD
	             "        keep_only: [user.user_id, user]\n",                     /* 12 */
	             NAME ":12:35: 'user': field 'user' already has a rule (a path below it is named) here");
	expect_error(REQ_CHILD
	             "        remove: [signals, signals.watch_history]\n",            /* 12 */
	             NAME ":12:27: 'signals.watch_history': field 'signals' is already removed or coarsened");
	expect_error(REQ_CHILD
	             "        remove: [page_size, page_size]\n",                      /* 12 */
	             NAME ":12:29: 'page_size': field 'page_size' already has a rule (it is removed) here");
	expect_error(REQ_CHILD
	             "        remove: [page_size]\n"                                  /* 12 */
	             "        coarsen: [{field: page_size, precision: 10}]\n",        /* 13 */
	             NAME ":13:27: 'page_size': field 'page_size' already has a rule (it is removed) here");
	/* Syntax: what split_path refuses. */
	expect_error(REQ_CHILD
	             "        remove: [context..geo]\n",                              /* 12 */
	             NAME ":12:18: 'context..geo' is not a field path (name.name[\"key\"].name, at most 32 parts)");
	expect_error(REQ_CHILD
	             "        remove: [context.geo.]\n",                              /* 12 */
	             NAME ":12:18: 'context.geo.' is not a field path (name.name[\"key\"].name, at most 32 parts)");
	expect_error(REQ_CHILD
	             "        remove: ['signals.features[\"x]']\n",                   /* 12 */
	             NAME ":12:18: 'signals.features[\"x]' is not a field path (name.name[\"key\"].name, at most 32 "
	             "parts)");
	expect_error(REQ_CHILD
	             "        remove: ['signals.features[x']\n",                      /* 12 */
	             NAME ":12:18: 'signals.features[x' is not a field path (name.name[\"key\"].name, at most 32 "
	             "parts)");
	expect_error(REQ_CHILD
	             "        remove: [user-id]\n",                                   /* 12 */
	             NAME ":12:18: 'user-id' is not a field path (name.name[\"key\"].name, at most 32 parts)");
	expect_error(REQ_CHILD
	             "        remove: ['']\n",                                        /* 12 */
	             NAME ":12:18: a field path must be a single value, not an empty value");
	expect_error(REQ_CHILD
	             "        remove: [a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a]\n",   /* 12 */
	             NAME ":12:18: 'a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a' is not a "
	             "field path (name.name[\"key\"].name, at most 32 parts)");
	/* t.pb: maps of messages, integer keys, a required field. */
	expect_error(T_UP
	             "        remove: [m.a]\n",                                       /* 8 */
	             NAME ":8:18: 'm.a': 'm' is a map; name its values' fields as m[*].field");
	expect_error(T_UP
	             "        remove: ['n[x]']\n",                                    /* 8 */
	             NAME ":8:18: 'n[x]': map key 'x' is not an integer");
	expect_error(T_UP
	             "        remove: ['n[]']\n",                                     /* 8 */
	             NAME ":8:18: 'n[]': map key '' is not an integer");
	expect_error(T_UP
	             "        remove: ['n[99999999999999999999]']\n",                 /* 8 */
	             NAME ":8:18: 'n[99999999999999999999]': map key '99999999999999999999' is not an integer");
	expect_error(T_UP
	             "        remove: [must]\n",                                      /* 8 */
	             NAME ":8:18: 'must': field 'must' is required by the contract; it cannot be removed");
	/* keep_only dropped it in silence, and the ranker could not parse the
	 * request (a README-only trial) */
	expect_error(T_UP
	             "        keep_only: [i, 'm[*].b']\n",                            /* 8 */
	             NAME ":8:9: keep_only drops 'must', which the contract marks required: the ranker could not "
	             "parse the message (remove refuses it too); list it in keep_only");
	/* a group's fields are between start- and end-group tags: a path into
	 * one loaded and failed every call that carried it (the same trial) */
	expect_error(T_UP
	             "        remove: [g.x]\n",                                       /* 8 */
	             NAME ":8:18: 'g.x': 'g' is a proto2 group, whose fields feedguard cannot edit one by one; name "
	             "the group itself to remove it or keep it whole");
	expect_error("descriptor_set: t.pb\n"
	             "bands: [{name: child}, {name: adult}]\n"
	             "methods:\n"
	             "  /t.S/Up:\n"
	             "    age_band: {field: g.x}\n",                                  /* 5 */
	             NAME ":5:23: age_band: 'g.x' goes through proto2 group 'g', which feedguard does not read "
	             "into; read the value from a field outside it");
	/* an enum band is matched by number: a value name never matched (the
	 * same trial) */
	expect_error("descriptor_set: t.pb\n"
	             "bands: [{name: child, match: [\"1\"]}, {name: adult, match: [GROWN]}]\n"
	             "methods:\n"
	             "  /t.S/Up:\n"
	             "    age_band: {field: tier}\n",                                 /* 5 */
	             NAME ":5:23: age_band: 'tier' is enum t.Req.Tier, matched by number, but band 'adult' matches "
	             "'GROWN': write \"2\" (GROWN) in its match list");
	/* not when a method reads the band as text, for which the name may be
	 * meant, nor a band's own name, nor another case (a review) */
	fg_policy_compile_free(load_ok("descriptor_set: t.pb\n"
	                               "bands: [{name: child, match: [KID, \"1\"]}, {name: adult, match: [GROWN, \"2\"]}]\n"
	                               "methods:\n"
	                               "  /t.S/Up:\n"
	                               "    age_band: {field: tier}\n"
	                               "  /t.S/Both:\n"
	                               "    age_band: {header: b}\n"));
	fg_policy_compile_free(load_ok("descriptor_set: t.pb\n"
	                               "bands: [{name: kid, match: [\"1\", kid]}, {name: GROWN}]\n"
	                               "unknown_band: GROWN\n"
	                               "methods:\n"
	                               "  /t.S/Up:\n"
	                               "    age_band: {field: tier}\n"));
	/* a oneof named where a field is wanted: its fields, not "no field" */
	expect_error(HEAD
	             "    user_id: {field: cursor}\n",                                /* 10 */
	             NAME ":10:22: user_id: 'cursor': 'cursor' is a oneof, not a field: name one of its fields "
	             "(page_token, offset); a call that sets another has no value here");
}

static void test_err_coarsen(void **state)
{
	expect_error(REQ_CHILD
	             "        coarsen: [{field: context.locale, precision: 1}]\n",    /* 12 */
	             NAME ":12:27: 'context.locale': coarsen needs a numeric field; 'locale' is string");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: context.surface, precision: 2}]\n",   /* 12 */
	             NAME ":12:27: 'context.surface': coarsen needs a numeric field; 'surface' is enum");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: signals.features, precision: 1}]\n",  /* 12 */
	             NAME ":12:27: 'signals.features': coarsen needs a numeric field; 'features' is message");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: 0}]\n",         /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: -1}]\n",        /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: abc}]\n",       /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: 10x}]\n",       /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: .nan}]\n",      /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: inf}]\n",       /* 12 */
	             NAME ":12:49: precision must be a number above 0 (the value becomes a multiple of it)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: [1]}]\n",       /* 12 */
	             NAME ":12:49: precision must be a number");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size}]\n",                       /* 12 */
	             NAME ":12:19: a coarsen entry needs 'field' and 'precision'");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, step: 1}]\n",              /* 12 */
	             NAME ":12:38: unknown key 'step' in a coarsen entry (valid keys: field, precision)");
	expect_error(REQ_CHILD
	             "        coarsen: [page_size]\n",                                /* 12 */
	             NAME ":12:19: a coarsen entry must be a mapping, not a single value");
}

/* ---- evaluating ---- */

static void test_band_select(void **state)
{
	struct fg_policy *p = load_ok(demo);
	enum fg_policy_unknown_reason why;
	char buf[] = "adultXYZ";

	assert_int_equal(fg_policy_band(p, "u13", 3, NULL), 0);
	assert_int_equal(fg_policy_band(p, "under_13", 8, NULL), 0);
	assert_int_equal(fg_policy_band(p, "13_15", 5, NULL), 1);
	assert_int_equal(fg_policy_band(p, "16_17", 5, NULL), 2);
	assert_int_equal(fg_policy_band(p, "adult", 5, NULL), 3);
	assert_int_equal(fg_policy_band(p, "18_plus", 7, NULL), 3);
	/* <len> bounds the value; no prefix or case-insensitive match. */
	assert_int_equal(fg_policy_band(p, buf, 5, NULL), 3);
	assert_int_equal(fg_policy_band(p, buf, 6, NULL), 0);
	assert_int_equal(fg_policy_band(p, "adul", 4, NULL), 0);
	assert_int_equal(fg_policy_band(p, "Adult", 5, NULL), 0);
	assert_int_equal(fg_policy_band(p, "ADULT", 5, NULL), 0);
	/* Nor trimmed: the value is compared byte for byte, as the README says. */
	assert_int_equal(fg_policy_band(p, " adult", 6, NULL), 0);
	assert_int_equal(fg_policy_band(p, "adult ", 6, NULL), 0);
	assert_int_equal(fg_policy_band(p, "adult\t", 6, NULL), 0);
	assert_int_equal(fg_policy_band(p, "adult\0", 6, NULL), 0);
	assert_int_equal(fg_policy_band(p, "", 0, NULL), 0);
	assert_int_equal(fg_policy_band(p, NULL, 0, NULL), 0);
	assert_int_equal(fg_policy_band(p, "adult", 0, NULL), 0);
	/* why the unknown band: told apart for feedguard_policy_unknown_band_total */
	why = FG_POLICY_NUNKNOWN;
	assert_int_equal(fg_policy_band(p, "u13", 3, &why), 0);
	assert_int_equal(why, FG_POLICY_NUNKNOWN);          /* matched: left alone */
	assert_int_equal(fg_policy_band(p, "adul", 4, &why), 0);
	assert_int_equal(why, FG_POLICY_U_UNMATCHED);
	assert_int_equal(fg_policy_band(p, NULL, 0, &why), 0);
	assert_int_equal(why, FG_POLICY_U_ABSENT);
	fg_policy_compile_free(p);

	/* A different unknown_band is what every non-match gets. */
	p = load_ok("descriptor_set: ranking.pb\n"
	            "bands: [{name: child}, {name: teen}, {name: adult}]\n"
	            "unknown_band: teen\n"
	            "methods: {}\n");
	assert_int_equal(fg_policy_band(p, "adult", 5, NULL), 2);
	assert_int_equal(fg_policy_band(p, "child", 5, NULL), 0);
	assert_int_equal(fg_policy_band(p, "grown-up", 8, NULL), 1);
	assert_int_equal(fg_policy_band(p, NULL, 0, NULL), 1);
	assert_int_equal(fg_policy_band(p, "", 0, NULL), 1);
	fg_policy_compile_free(p);
}

static int read_field(const struct fg_policy_source *s, const char *msg, size_t len, char *buf, size_t buflen)
{
	memset(buf, 'x', buflen);
	return fg_policy_read_field(s, (const uint8_t *)msg, len, buf, buflen);
}

#define READ(s, lit, buf, buflen) read_field((s), (lit), sizeof(lit) - 1, (buf), (buflen))

static void test_read_field(void **state)
{
	struct fg_policy *p = load_ok(
		"descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"methods:\n"
		"  " RANK_FEED ": {user_id: {field: user.user_id}, age_band: {field: page_size}}\n"
		"  " STREAM_FEED ": {user_id: {field: offset}, age_band: {field: context.surface}}\n");
	const struct fg_policy_source *uid = &method(p, RANK_FEED)->user_id;
	const struct fg_policy_source *age = &method(p, RANK_FEED)->age_band;
	char buf[64];

	/* A string: user (1) { user_id (1) "kid-1" } */
	assert_int_equal(READ(uid, "\x0a\x07\x0a\x05kid-1", buf, sizeof(buf)), 5);
	assert_string_equal(buf, "kid-1");
	assert_int_equal(READ(uid, "\x0a\x07\x0a\x05kid-1", buf, 6), 5);     /* just fits, with the NUL */
	assert_string_equal(buf, "kid-1");
	assert_int_equal(READ(uid, "\x0a\x07\x0a\x05kid-1", buf, 5), FG_EINVAL);
	assert_int_equal(READ(uid, "\x0a\x02\x0a\x00", buf, sizeof(buf)), 0);   /* present and empty */
	assert_string_equal(buf, "");
	/* Last one wins, across occurrences of the enclosing message too. */
	assert_int_equal(READ(uid, "\x0a\x03\x0a\x01" "a" "\x0a\x03\x0a\x01" "b", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "b");
	assert_int_equal(READ(uid, "\x0a\x06\x0a\x01" "a" "\x0a\x01" "c" "\x0a\x02\x18\x05", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "c");
	/* Absent: no message, no user, a user without user_id. */
	assert_int_equal(read_field(uid, "", 0, buf, sizeof(buf)), 0);
	assert_int_equal(READ(uid, "\x20\x14", buf, sizeof(buf)), 0);
	assert_int_equal(READ(uid, "\x0a\x02\x18\x05", buf, sizeof(buf)), 0);
	/* Malformed: truncated, wrong wire types, a bad tag. */
	assert_int_equal(READ(uid, "\x0a\x07\x0a\x05ki", buf, sizeof(buf)), FG_EINVAL);
	assert_int_equal(READ(uid, "\x0a\x02\x08\x05", buf, sizeof(buf)), FG_EINVAL);     /* user_id a varint */
	assert_int_equal(READ(uid, "\x08\x01", buf, sizeof(buf)), FG_EINVAL);             /* user a varint */
	assert_int_equal(READ(uid, "\x00", buf, sizeof(buf)), FG_EINVAL);
	assert_int_equal(READ(uid, "\x20\x14\x0a", buf, sizeof(buf)), FG_EINVAL);
	/* Integers as decimal text: page_size (4, int32). */
	assert_int_equal(READ(age, "\x20\x14", buf, sizeof(buf)), 2);
	assert_string_equal(buf, "20");
	assert_int_equal(READ(age, "\x20\x14", buf, 3), 2);
	assert_int_equal(READ(age, "\x20\x14", buf, 2), FG_EINVAL);
	assert_int_equal(READ(age, "\x20\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x01", buf, sizeof(buf)), 2);
	assert_string_equal(buf, "-3");
	assert_int_equal(READ(age, "\x20\x80\x00", buf, sizeof(buf)), 1);     /* non-minimal 0 */
	assert_string_equal(buf, "0");
	assert_int_equal(READ(age, "\x22\x01\x14", buf, sizeof(buf)), FG_EINVAL);     /* LEN */
	assert_int_equal(READ(age, "\x25\x14\x00\x00\x00", buf, sizeof(buf)), FG_EINVAL);  /* I32 */
	assert_int_equal(READ(age, "\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", buf, sizeof(buf)), FG_EINVAL);
	/* An enum two levels down: context (2) { surface (1) 3 }. */
	age = &method(p, STREAM_FEED)->age_band;
	assert_int_equal(READ(age, "\x12\x02\x08\x03", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "3");
	/* int64 offset (6) at its maximum. */
	uid = &method(p, STREAM_FEED)->user_id;
	assert_int_equal(READ(uid, "\x30\xff\xff\xff\xff\xff\xff\xff\xff\x7f", buf, sizeof(buf)), 19);
	assert_string_equal(buf, "9223372036854775807");
	fg_policy_compile_free(p);

	/* sint32 (zigzag) and uint64 from t.pb. */
	p = load_ok("descriptor_set: t.pb\n"
	            "bands: [{name: child}]\n"
	            "methods:\n"
	            "  /t.S/Up: {user_id: {field: u}, age_band: {field: s}}\n");
	uid = &method(p, "/t.S/Up")->user_id;
	age = &method(p, "/t.S/Up")->age_band;
	assert_int_equal(READ(age, "\x18\x05", buf, sizeof(buf)), 2);
	assert_string_equal(buf, "-3");
	assert_int_equal(READ(age, "\x18\x04", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "2");
	assert_int_equal(READ(age, "\x18\xff\xff\xff\xff\x0f", buf, sizeof(buf)), 11);
	assert_string_equal(buf, "-2147483648");
	assert_int_equal(READ(uid, "\x20\x2a", buf, sizeof(buf)), 2);
	assert_string_equal(buf, "42");
	fg_policy_compile_free(p);
}

/*
 * RankFeedRequest, encoded by hand:
 *   user (1, 14 bytes) { user_id "kid-1", age_band "u13", account_age_days 40 }
 *   context (2, 41) { surface 1, locale "en-GB",
 *                     geo (4, 30) { latitude 48.8566, longitude 2.3522,
 *                                   accuracy_m 12.5f, city "Paris" } }
 *   signals (3, 13) { watch_history { item_id 7, watch_ms 3000 }, advertising_id "AAID" }
 *   page_size 20, page_token "p2", recently_shown_ids [1, 2] (packed)
 */
static const uint8_t rank_req[] = {
	0x0a, 0x0e, 0x0a, 0x05, 'k', 'i', 'd', '-', '1', 0x12, 0x03, 'u', '1', '3', 0x18, 0x28,
	0x12, 0x29, 0x08, 0x01, 0x12, 0x05, 'e', 'n', '-', 'G', 'B',
	0x22, 0x1e, 0x09, 0x76, 0xe0, 0x9c, 0x11, 0xa5, 0x6d, 0x48, 0x40,
	0x11, 0xa8, 0x35, 0xcd, 0x3b, 0x4e, 0xd1, 0x02, 0x40,
	0x1d, 0x00, 0x00, 0x48, 0x41, 0x22, 0x05, 'P', 'a', 'r', 'i', 's',
	0x1a, 0x0d, 0x0a, 0x05, 0x08, 0x07, 0x10, 0xb8, 0x17, 0x2a, 0x04, 'A', 'A', 'I', 'D',
	0x20, 0x14, 0x2a, 0x02, 'p', '2', 0x3a, 0x02, 0x01, 0x02,
};

/*
 * What the demo's child bands send on: user without account_age_days,
 * context with geo rounded to 0.1 (round(v / 0.1) * 0.1 in double:
 * 48.900000000000006 and 2.4000000000000004) and without accuracy_m and
 * city, no signals, page_size, page_token; no recently_shown_ids.
 */
static const uint8_t rank_req_child[] = {
	0x0a, 0x0c, 0x0a, 0x05, 'k', 'i', 'd', '-', '1', 0x12, 0x03, 'u', '1', '3',
	0x12, 0x1d, 0x08, 0x01, 0x12, 0x05, 'e', 'n', '-', 'G', 'B',
	0x22, 0x12, 0x09, 0x34, 0x33, 0x33, 0x33, 0x33, 0x73, 0x48, 0x40,
	0x11, 0x34, 0x33, 0x33, 0x33, 0x33, 0x33, 0x03, 0x40,
	0x20, 0x14, 0x2a, 0x02, 'p', '2',
};

/* The double at field <number> of geo in an edited request. */
static double geo_double(const struct fg_bufq *b, uint32_t number)
{
	const uint32_t path[] = { 2, 4, number };
	struct fg_pbwire_field f;
	double d;

	assert_int_equal(fg_pbwire_find(fg_bufq_head(b), fg_bufq_len(b), path, 3, &f, NULL), 0);
	assert_int_equal(f.wire_type, FG_PBWIRE_I64);
	memcpy(&d, f.value, sizeof(d));     /* little-endian host assumed, as x86-64 and arm64 are */
	return d;
}

static void test_edit_request(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_msg *geo;
	struct fg_bufq out = { 0 }, again = { 0 };
	size_t child = band(p, "under_13"), adult = band(p, "adult"), b, s, st;
	uint32_t lat, lon, unlisted;
	const char *why = NULL;
	int changed = -1;

	geo = sub(sub(m->request[child].prog, 2), 4);
	lat = rule(geo, 1)->stat;
	lon = rule(geo, 2)->stat;
	unlisted = m->request[child].prog->unlisted_stat;
	assert_string_equal(stat_name(p, lat), "request:context.geo.latitude");
	assert_string_equal(stat_name(p, lon), "request:context.geo.longitude");
	assert_string_equal(stat_name(p, unlisted), "request:(not in keep_only)");

	assert_int_equal(fg_policy_edit(p, &m->request[child], child, 2, rank_req, sizeof(rank_req), &out, &changed,
	                                &why), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(fg_bufq_len(&out), sizeof(rank_req_child));
	assert_memory_equal(fg_bufq_head(&out), rank_req_child, sizeof(rank_req_child));
	assert_true(geo_double(&out, 1) == 48.900000000000006);
	assert_true(geo_double(&out, 2) == 2.4000000000000004);
	/* Counted in slot 2, band under_13 only. */
	assert_int_equal(stripped(p, 2, lat, child), 1);
	assert_int_equal(stripped(p, 2, lon, child), 1);
	/* signals and recently_shown_ids at the top; the fields dropped below
	 * it see test_regress_unlisted_below_root. */
	assert_true(stripped(p, 2, unlisted, child) >= 2);
	for (s = 0; s < NSLOTS; s++)
		for (st = 0; st < p->nstats; st++)
			for (b = 0; b < p->nbands; b++)
				if (s != 2 || b != child)
					assert_int_equal(stripped(p, s, (uint32_t)st, b), 0);

	/* Editing the result again changes nothing and counts nothing. */
	assert_int_equal(fg_policy_edit(p, &m->request[child], child, 2, fg_bufq_head(&out), fg_bufq_len(&out),
	                                &again, &changed, &why), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(fg_bufq_len(&again), fg_bufq_len(&out));
	assert_memory_equal(fg_bufq_head(&again), fg_bufq_head(&out), fg_bufq_len(&out));
	assert_int_equal(stripped(p, 2, lat, child), 1);

	/* Appends to <out>; an adult's request passes as it is. */
	assert_int_equal(fg_policy_edit(p, &m->request[adult], adult, 0, rank_req, sizeof(rank_req), &out, &changed,
	                                &why), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(fg_bufq_len(&out), sizeof(rank_req_child) + sizeof(rank_req));
	assert_memory_equal(fg_bufq_head(&out) + sizeof(rank_req_child), rank_req, sizeof(rank_req));
	assert_memory_equal(fg_bufq_head(&out), rank_req_child, sizeof(rank_req_child));
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit(p, NULL, adult, 0, rank_req, sizeof(rank_req), &out, &changed, &why), 0);
	assert_int_equal(changed, 0);
	assert_memory_equal(fg_bufq_head(&out), rank_req, sizeof(rank_req));

	/* A slot past the last edits but counts nothing. */
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit(p, &m->request[child], child, NSLOTS, rank_req, sizeof(rank_req), &out,
	                                &changed, &why), 0);
	assert_int_equal(changed, 1);
	assert_memory_equal(fg_bufq_head(&out), rank_req_child, sizeof(rank_req_child));
	assert_int_equal(stripped(p, 2, lat, child), 1);

	/* Malformed: FG_EINVAL with a reason, <out> as it was, nothing counted. */
	fg_bufq_truncate(&out, 3);
	changed = -1;
	assert_int_equal(fg_policy_edit(p, &m->request[child], child, 1, rank_req, sizeof(rank_req) - 1, &out,
	                                &changed, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 3);
	for (st = 0; st < p->nstats; st++)
		assert_int_equal(stripped(p, 1, (uint32_t)st, child), 0);
	fg_bufq_free(&out);
	fg_bufq_free(&again);
	fg_policy_compile_free(p);
}

/*
 * RankFeedResponse, by hand:
 *   items (1, 29) { item_id 1, explanations (5, 9) { reason "because" },
 *                   debug_score 0.5, topic "sport" }
 *   profile_segments "gamer", model_version "m1"
 */
static const uint8_t rank_resp[] = {
	0x0a, 0x1d, 0x08, 0x01, 0x2a, 0x09, 0x0a, 0x07, 'b', 'e', 'c', 'a', 'u', 's', 'e',
	0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, 0x4a, 0x05, 's', 'p', 'o', 'r', 't',
	0x12, 0x05, 'g', 'a', 'm', 'e', 'r', 0x1a, 0x02, 'm', '1',
};

static const uint8_t rank_resp_child[] = {
	0x0a, 0x09, 0x08, 0x01, 0x4a, 0x05, 's', 'p', 'o', 'r', 't', 0x1a, 0x02, 'm', '1',
};

static void test_edit_response(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_msg *items;
	size_t teen = band(p, "13_15"), adult = band(p, "adult");
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	int changed = -1;

	assert_int_equal(fg_policy_edit(p, &m->response[teen], teen, 0, rank_resp, sizeof(rank_resp), &out, &changed,
	                                &why), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(fg_bufq_len(&out), sizeof(rank_resp_child));
	assert_memory_equal(fg_bufq_head(&out), rank_resp_child, sizeof(rank_resp_child));
	items = sub(m->response[teen].prog, 1);
	assert_int_equal(stripped(p, 0, rule(items, 5)->stat, teen), 1);
	assert_int_equal(stripped(p, 0, rule(items, 8)->stat, teen), 1);
	assert_int_equal(stripped(p, 0, rule(items, 6)->stat, teen), 0);   /* none in the message */
	assert_int_equal(stripped(p, 0, rule(m->response[teen].prog, 2)->stat, teen), 1);
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit(p, &m->response[adult], adult, 0, rank_resp, sizeof(rank_resp), &out,
	                                &changed, &why), 0);
	assert_int_equal(changed, 0);
	assert_memory_equal(fg_bufq_head(&out), rank_resp, sizeof(rank_resp));
	fg_bufq_free(&out);
	fg_policy_compile_free(p);
}

/* ---- the policy format as a new user reads it (issue 9) ---- */

/* keep_only works in response blocks as in request blocks. */
static void test_keep_only_response(void **state)
{
	struct fg_policy *p = load_ok(HEAD
		"    response:\n"                                                       /* 10 */
		"      - bands: [child]\n"                                              /* 11 */
		"        keep_only: [items.item_id, items.title, next_page_token]\n");  /* 12 */
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_msg *root = m->response[0].prog;
	static const uint8_t want[] = { 0x0a, 0x02, 0x08, 0x01 };
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	int changed = -1;

	expect_node(root, 1, 2, 1u, 4u);
	expect_node(sub(root, 1), 1, 2, 1u, 2u);
	assert_null(m->request[0].prog);
	/* items keep item_id only (no title in it); segments and model go */
	assert_int_equal(fg_policy_edit(p, &m->response[0], 0, 0, rank_resp, sizeof(rank_resp), &out, &changed, &why),
	                 0);
	assert_int_equal(changed, 1);
	assert_int_equal(fg_bufq_len(&out), sizeof(want));
	assert_memory_equal(fg_bufq_head(&out), want, sizeof(want));
	fg_bufq_free(&out);
	fg_policy_compile_free(p);
}

/* Under keep_only a coarsen path is kept: listed or not, the field comes
 * through rounded, and nothing beside it is let through. */
static void test_coarsen_kept_by_keep_only(void **state)
{
	/* context { geo { latitude rounded to 0.1 } }, page_size 20 */
	static const uint8_t want[] = {
		0x12, 0x0b, 0x22, 0x09, 0x09, 0x34, 0x33, 0x33, 0x33, 0x33, 0x73, 0x48, 0x40, 0x20, 0x14,
	};
	const struct fg_pbwire_msg *root, *geo;
	struct fg_policy *p;
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	int changed = -1;

	p = load_ok(REQ_CHILD
		"        keep_only: [page_size]\n"                                      /* 12 */
		"        coarsen: [{field: context.geo.latitude, precision: 0.1}]\n");  /* 13 */
	root = method(p, RANK_FEED)->request[0].prog;
	assert_int_equal(fg_policy_edit(p, &method(p, RANK_FEED)->request[0], 0, 0, rank_req, sizeof(rank_req), &out,
	                                &changed, &why), 0);
	assert_int_equal(fg_bufq_len(&out), sizeof(want));
	assert_memory_equal(fg_bufq_head(&out), want, sizeof(want));
	assert_int_equal(stripped(p, 0, rule(sub(sub(root, 2), 4), 1)->stat, 0), 1);
	fg_bufq_free(&out);
	fg_policy_compile_free(p);

	/* Inside a field keep_only keeps whole, the nodes a coarsen path
	 * makes copy everything else: geo keeps longitude, accuracy, city. */
	p = load_ok(REQ_CHILD
		"        keep_only: [context]\n"                                        /* 12 */
		"        coarsen: [{field: context.geo.latitude, precision: 0.1}]\n");  /* 13 */
	root = method(p, RANK_FEED)->request[0].prog;
	expect_node(root, 1, 1, 2u);
	expect_node(sub(root, 2), 0, 1, 4u);
	geo = sub(sub(root, 2), 4);
	expect_node(geo, 0, 1, 1u);
	assert_int_equal(rule(geo, 1)->action, FG_PBWIRE_COARSEN);
	fg_policy_compile_free(p);
}

/* Two methods name one rule set; each compiles it against its own types. */
#define SETS \
	"descriptor_set: ranking.pb\n"                          /* 1 */ \
	"bands: [{name: child}, {name: adult}]\n"               /* 2 */ \
	"rule_sets:\n"                                          /* 3 */ \
	"  child_request:\n"                                    /* 4 */ \
	"    - bands: [child]\n"                                /* 5 */ \
	"      keep_only: [user.age_band, page_size]\n"         /* 6 */ \
	"      remove_headers: [x-device-id]\n"                 /* 7 */ \
	"  never_named:\n"                                      /* 8 */ \
	"    - bands: [adult]\n"                                /* 9 */ \
	"      remove: [no.such.field]\n"                       /* 10 */ \
	"methods:\n"                                            /* 11 */ \
	"  " RANK_FEED ":\n"                                    /* 12 */ \
	"    age_band: {header: x-age-band}\n"                  /* 13 */ \
	"    request: child_request\n"                          /* 14 */

static void test_rule_sets(void **state)
{
	struct fg_policy *p = load_ok(SETS
		"  " STREAM_FEED ":\n"                                  /* 15 */
		"    age_band: {header: x-age-band}\n"                  /* 16 */
		"    request: child_request\n"                          /* 17 */
		"    response:\n"                                       /* 18 */
		"      - bands: [child]\n"                              /* 19 */
		"        remove: [explanations]\n");                    /* 20 */
	const struct fg_policy_method *rank = method(p, RANK_FEED), *stream = method(p, STREAM_FEED);
	const struct fg_policy_method *ms[] = { rank, stream };
	size_t i;

	for (i = 0; i < 2; i++) {
		expect_node(ms[i]->request[0].prog, 1, 2, 1u, 4u);
		expect_node(sub(ms[i]->request[0].prog, 1), 1, 1, 2u);
		assert_int_equal(ms[i]->request[0].nremove_headers, 1);
		assert_string_equal(ms[i]->request[0].remove_headers[0], "x-device-id");
		assert_null(ms[i]->request[1].prog);
	}
	/* compiled once per method: two programs, one counter name */
	assert_ptr_not_equal(rank->request[0].prog, stream->request[0].prog);
	assert_null(rank->response[0].prog);
	expect_node(stream->response[0].prog, 0, 1, 5u);
	assert_int_equal(p->nstats, 2);
	fg_policy_compile_free(p);

	/* A set's errors are where it is written, naming what it was compiled for. */
	expect_error(SETS
		"    response: child_request\n",                        /* 15 */
		NAME ":7:7: unknown key 'remove_headers' in a response rule block (valid keys: bands, keep_only, "
		"remove, coarsen) (rule set 'child_request', compiled for " RANK_FEED " response)");
	expect_error("descriptor_set: ranking.pb\n"                 /* 1 */
		"bands: [{name: child}]\n"                              /* 2 */
		"rule_sets:\n"                                          /* 3 */
		"  no_explanations:\n"                                  /* 4 */
		"    - bands: [child]\n"                                /* 5 */
		"      remove: [items.explanations]\n"                  /* 6 */
		"methods:\n"                                            /* 7 */
		"  " RANK_FEED ":\n"                                    /* 8 */
		"    age_band: {header: x-age-band}\n"                  /* 9 */
		"    response: no_explanations\n"                       /* 10 */
		"  " STREAM_FEED ":\n"                                  /* 11 */
		"    age_band: {header: x-age-band}\n"                  /* 12 */
		"    response: no_explanations\n",                      /* 13 */
		NAME ":6:16: 'items.explanations': message feedguard.ranking.v1.FeedItem has no field 'items' "
		"(rule set 'no_explanations', compiled for " STREAM_FEED " response)");
	/* ... also for what the block as a whole gets wrong */
	expect_error(SETS
		"    response:\n"                                       /* 15 */
		"      - bands: [child]\n"                              /* 16 */
		"        remove: [model_version]\n"                     /* 17 */
		"  " STREAM_FEED ":\n"                                  /* 18 */
		"    age_band: {header: x-age-band}\n"                  /* 19 */
		"    request: [{bands: \"*\"}, {bands: [child]}]\n",    /* 20 */
		NAME ":20:37: band 'child' already has a request rule block");

	/* Naming what is not there. */
	expect_error(SETS
		"  " STREAM_FEED ":\n"                                  /* 15 */
		"    age_band: {header: x-age-band}\n"                  /* 16 */
		"    request: child_requets\n",                         /* 17 */
		NAME ":17:14: request: no rule set named 'child_requets' (rule_sets declares: child_request, "
		"never_named)");
	expect_error(HEAD
		"    request: child_request\n",                         /* 10 */
		NAME ":10:14: request: no rule set named 'child_request' (the policy declares no rule_sets; write the "
		"list of rule blocks here, or declare it under rule_sets)");
	expect_error(HEAD
		"    request: ''\n",                                    /* 10 */
		NAME ":10:14: request must be a list of rule blocks or the name of a rule set, not an empty value");
	/* Shapes, checked whether a set is named or not. */
	expect_error("descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"rule_sets: [a]\n"
		"methods: {}\n",
		NAME ":3:12: rule_sets must be a mapping, not a list");
	expect_error("descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"rule_sets: {a: {bands: [child]}}\n"
		"methods: {}\n",
		NAME ":3:16: a rule set must be a list, not a mapping");
	expect_error("descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"rule_sets: {a: [remove]}\n"
		"methods: {}\n",
		NAME ":3:17: a rule block must be a mapping, not a single value");
	expect_error("descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"rule_sets: {a: [], a: []}\n"
		"methods: {}\n",
		NAME ":3:20: rule set 'a' is declared twice");
}

/* HEAD with a user_id; a request block for band child starts at line 9. */
#define USER_HEAD \
	"descriptor_set: ranking.pb\n"                          /* 1 */ \
	"bands: [{name: child}, {name: adult}]\n"               /* 2 */ \
	"methods:\n"                                            /* 3 */ \
	"  " RANK_FEED ":\n"                                    /* 4 */ \
	"    user_id: {field: user.user_id}\n"                  /* 5 */ \
	"    age_band: {header: x-age-band}\n"                  /* 6 */ \
	"    request:\n"                                        /* 7 */ \
	"      - bands: [child]\n"                              /* 8 */

static void test_pseudonymize(void **state)
{
	static const char key[] = "k1:00ff";
	static const uint32_t user_id[] = { 1, 1 }, age_band[] = { 1, 2 }, page_size[] = { 4 };
	struct fg_policy *p = load_ok(USER_HEAD
		"        pseudonymize: [user.user_id]\n");              /* 9 */
	const struct fg_policy_method *m = method(p, RANK_FEED);
	const struct fg_pbwire_rule *r;
	struct fg_pbwire_field f;
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	int changed = -1;

	expect_node(m->request[0].prog, 0, 1, 1u);
	expect_node(sub(m->request[0].prog, 1), 0, 1, 1u);
	r = rule(sub(m->request[0].prog, 1), 1);
	assert_int_equal(r->action, FG_PBWIRE_REPLACE);
	assert_int_equal(r->arg, FG_POLICY_VALUE_USER_KEY);
	assert_string_equal(stat_name(p, r->stat), "request:user.user_id");
	assert_int_equal(m->request[0].need_user, 1);
	assert_int_equal(m->request[1].need_user, 0);
	assert_non_null(p->need_keys_at);
	assert_string_equal(p->need_keys_at, NAME ":9:23");
	/* the key is needed for the child band, or while the band is not known */
	assert_int_equal(fg_policy_need_user(m, p->nbands, 1, 0), 1);
	assert_int_equal(fg_policy_need_user(m, p->nbands, 1, 1), 0);
	assert_int_equal(fg_policy_need_user(m, p->nbands, 0, 0), 1);

	/* the key in place of the raw id; the rest as it came */
	assert_int_equal(fg_policy_edit_call(p, &m->request[0], 0, 0, key, rank_req, sizeof(rank_req), &out, &changed,
	                                     &why), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), user_id, 2, &f, NULL), 0);
	assert_int_equal(f.vlen, strlen(key));
	assert_memory_equal(f.value, key, f.vlen);
	assert_int_equal(fg_bufq_len(&out), sizeof(rank_req) - strlen("kid-1") + strlen(key));
	assert_int_equal(stripped(p, 0, r->stat, 0), 1);
	/* no key for the call: the field is left out, never passed raw */
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit_call(p, &m->request[0], 0, 0, "", rank_req, sizeof(rank_req), &out, &changed,
	                                     &why), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), user_id, 2, &f, NULL), FG_ENOTFOUND);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), age_band, 2, &f, NULL), 0);
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit(p, &m->request[0], 0, 0, rank_req, sizeof(rank_req), &out, &changed, &why), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), user_id, 2, &f, NULL), FG_ENOTFOUND);
	assert_int_equal(stripped(p, 0, r->stat, 0), 3);
	fg_policy_compile_free(p);

	/* Under keep_only a pseudonymized field is kept, listed or not. */
	p = load_ok(USER_HEAD
		"        keep_only: [page_size]\n"                      /* 9 */
		"        pseudonymize: [user.user_id]\n");              /* 10 */
	m = method(p, RANK_FEED);
	expect_node(m->request[0].prog, 1, 2, 1u, 4u);
	expect_node(sub(m->request[0].prog, 1), 1, 1, 1u);
	fg_bufq_clear(&out);
	assert_int_equal(fg_policy_edit_call(p, &m->request[0], 0, 0, key, rank_req, sizeof(rank_req), &out, &changed,
	                                     &why), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), user_id, 2, &f, NULL), 0);
	assert_memory_equal(f.value, key, f.vlen);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), age_band, 2, &f, NULL), FG_ENOTFOUND);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&out), fg_bufq_len(&out), page_size, 1, &f, NULL), 0);
	fg_policy_compile_free(p);
	p = load_ok(USER_HEAD
		"        keep_only: [user.user_id, page_size]\n"        /* 9 */
		"        pseudonymize: [user.user_id]\n");              /* 10 */
	assert_int_equal(rule(sub(method(p, RANK_FEED)->request[0].prog, 1), 1)->action, FG_PBWIRE_REPLACE);
	fg_policy_compile_free(p);
	p = load_ok(USER_HEAD
		"        keep_only: [user]\n"                           /* 9 */
		"        pseudonymize: [user.user_id]\n");              /* 10 */
	expect_node(sub(method(p, RANK_FEED)->request[0].prog, 1), 0, 1, 1u);
	fg_policy_compile_free(p);
	fg_bufq_free(&out);

	/* A policy without pseudonymize needs no keys, and no call a user key. */
	p = load_ok(demo);
	assert_null(p->need_keys_at);
	assert_int_equal(fg_policy_need_user(method(p, RANK_FEED), p->nbands, 0, 0), 0);
	fg_policy_compile_free(p);

	expect_error(REQ_CHILD
		"        pseudonymize: [user.user_id]\n",               /* 12 */
		NAME ":12:23: pseudonymize needs the method's user_id (" RANK_FEED " has none): the pseudonym is "
		"computed from it");
	expect_error(USER_HEAD
		"        pseudonymize: [page_size]\n",                  /* 9 */
		NAME ":9:24: 'page_size': pseudonymize needs a string or bytes field; 'page_size' is int32");
	expect_error(USER_HEAD
		"        pseudonymize: [user]\n",                       /* 9 */
		NAME ":9:24: 'user': pseudonymize needs a string or bytes field; 'user' is message");
	expect_error(USER_HEAD
		"        pseudonymize: [signals.search_history]\n",     /* 9 */
		NAME ":9:24: 'signals.search_history': pseudonymize needs a single value; 'search_history' is repeated");
	expect_error(USER_HEAD
		"        remove: [user.user_id]\n"                      /* 9 */
		"        pseudonymize: [user.user_id]\n",               /* 10 */
		NAME ":10:24: 'user.user_id': field 'user_id' already has a rule (it is removed) here");
	expect_error(USER_HEAD
		"        pseudonymize: user.user_id\n",                 /* 9 */
		NAME ":9:23: pseudonymize must be a list, not a single value");
	expect_error("descriptor_set: ranking.pb\n"
		"bands: [{name: child}]\n"
		"methods:\n"
		"  " RANK_FEED ":\n"
		"    user_id: {field: user.user_id}\n"
		"    age_band: {header: x-age-band}\n"
		"    response:\n"
		"      - bands: [child]\n"
		"        pseudonymize: [model_version]\n",              /* 9 */
		NAME ":9:9: unknown key 'pseudonymize' in a response rule block (valid keys: bands, keep_only, remove, "
		"coarsen)");
}

static void test_count_call(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, STREAM_FEED);
	size_t i, n = NSLOTS * p->nmethods * p->nbands;
	uint64_t sum = 0;

	fg_policy_count_call(p, m, 2, 3);
	fg_policy_count_call(p, m, 2, 3);
	fg_policy_count_call(p, m, 1, 0);
	fg_policy_count_call(p, m, 1, NSLOTS);          /* no such slot: not counted */
	assert_int_equal(p->counters.calls[(3 * p->nmethods + m->index) * p->nbands + 2], 2);
	assert_int_equal(p->counters.calls[(0 * p->nmethods + m->index) * p->nbands + 1], 1);
	for (i = 0; i < n; i++)
		sum += p->counters.calls[i];
	assert_int_equal(sum, 3);
	fg_policy_compile_free(p);
}

/* ---- allocation failures ---- */

/* Fail each allocation of loading <text> in turn: each failure must come
 * back as "out of memory" and leave nothing allocated; returns how many
 * allocations a load takes. */
static long fail_each_allocation(const char *text)
{
	struct fg_policy *p;
	long n, live = mem.live;
	int rc;

	for (n = 1;; n++) {
		p = (struct fg_policy *)(uintptr_t)1;
		mem_arm(n);
		rc = load(text, &p);
		mem_arm(0);
		if (rc == 0) {
			assert_non_null(p);
			fg_policy_compile_free(p);
			assert_int_equal(mem.live, live);
			return n - 1;
		}
		if (!(rc == FG_ENOMEM || (rc == FG_ECONFIG && strstr(err, "out of memory"))))
			fail_msg("allocation %ld failed: rc %d, %s", n, rc, err);
		assert_non_null(strstr(err, NAME ": out of memory"));
		assert_null(p);
		assert_int_equal(mem.live, live);
	}
}

static void test_alloc_failures(void **state)
{
	struct fg_policy *p;
	long live = mem.live;

	/* The loop ends on a load that no failure reached, which must then be
	 * the only allocation-free outcome: count them to be sure. */
	mem_arm(0);
	assert_int_equal(load(demo, &p), 0);
	fg_policy_compile_free(p);
	assert_int_equal(mem.live, live);
	assert_true(fail_each_allocation(demo) > 200);
	assert_true(fail_each_allocation(T_UP
		"        remove: ['n[42]', 'n[-7]', 'm[\"k\"]', 'm[\"l\"]']\n"
		"        remove_headers: [X-A, x-b]\n"
		"      - bands: [adult]\n"
		"        keep_only: ['m[*].b', i, u, must]\n"
		"        coarsen: [{field: u, precision: 10}]\n") > 50);
	/* rule sets compiled for two methods, pseudonymize under keep_only */
	assert_true(fail_each_allocation(SETS
		"  " STREAM_FEED ":\n"
		"    user_id: {header: x-user-id}\n"
		"    age_band: {header: x-age-band}\n"
		"    request:\n"
		"      - bands: [child]\n"
		"        keep_only: [page_size]\n"
		"        pseudonymize: [user.user_id]\n"
		"        coarsen: [{field: context.geo.latitude, precision: 0.1}]\n") > 50);
}

static void test_alloc_failure_edit(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, RANK_FEED);
	struct fg_bufq out = { 0 };
	int changed = -1;
	size_t st;

	mem_arm(1);
	assert_int_equal(fg_policy_edit(p, &m->request[0], 0, 0, rank_req, sizeof(rank_req), &out, &changed, NULL),
	                 FG_ENOMEM);
	mem_arm(1);
	assert_int_equal(fg_policy_edit(p, &m->request[3], 3, 0, rank_req, sizeof(rank_req), &out, &changed, NULL),
	                 FG_ENOMEM);
	mem_arm(0);
	assert_int_equal(fg_bufq_len(&out), 0);
	for (st = 0; st < p->nstats; st++)
		assert_int_equal(stripped(p, 0, (uint32_t)st, 0), 0);
	fg_bufq_free(&out);
	fg_policy_compile_free(p);
}

/* ---- limits ---- */

/* HEAD, "request:" and <n> blocks for no band, each removing one key of
 * signals.features (one counter each): block i is on lines 11 + 2i and
 * 12 + 2i. */
static char *many_blocks(size_t n, const char *tail)
{
	size_t cap = sizeof(HEAD) + 16 + n * 64 + strlen(tail), len, i;
	char *text = malloc(cap);

	assert_non_null(text);
	len = (size_t)snprintf(text, cap, "%s    request:\n", HEAD);
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len,
		                        "      - bands: []\n        remove: ['signals.features[\"k%zu\"]']\n", i);
	snprintf(text + len, cap - len, "%s", tail);
	return text;
}

static void test_too_many_paths(void **state)
{
	char *text = many_blocks(4096, "");
	struct fg_policy *p = load_ok(text);

	assert_int_equal(p->nstats, 4096);
	assert_null(method(p, RANK_FEED)->request[0].prog);     /* "bands: []" applies to none */
	fg_policy_compile_free(p);
	free(text);
	text = many_blocks(4097, "");
	expect_error(text, NAME ":8204:18: too many field paths in one policy");
	free(text);
}

/* ---- regressions: fail until the fixes reported with them are in ---- */

/* A remove or coarsen path in a keep_only block must not let through a
 * field keep_only does not keep (it did: the path's new node copied
 * everything but what it named, so "remove: [signals.watch_history]" sent
 * the rest of signals).  A remove there is an error that says why; a
 * coarsen path is kept, and the nodes it makes are allow-lists too. */
static void test_regress_keep_only_not_widened(void **state)
{
	struct fg_policy *p;
	const struct fg_pbwire_msg *root;

	expect_error(REQ_CHILD
	             "        keep_only: [user.user_id]\n"                            /* 12 */
	             "        remove: [signals.watch_history]\n",                     /* 13 */
	             NAME ":13:18: 'signals.watch_history': keep_only does not keep 'signals', so it is removed "
	             "already; remove may only name fields inside what keep_only keeps");
	expect_error(REQ_CHILD
	             "        keep_only: [context.locale]\n"                          /* 12 */
	             "        remove: [context.geo.city]\n",                          /* 13 */
	             NAME ":13:18: 'context.geo.city': keep_only does not keep 'geo', so it is removed already; "
	             "remove may only name fields inside what keep_only keeps");
	p = load_ok(REQ_CHILD
	            "        keep_only: [user.user_id]\n"                             /* 12 */
	            "        coarsen: [{field: context.geo.latitude, precision: 1}]\n");   /* 13 */
	root = method(p, RANK_FEED)->request[0].prog;
	expect_node(root, 1, 2, 1u, 2u);
	expect_node(sub(root, 2), 1, 1, 4u);
	expect_node(sub(sub(root, 2), 4), 1, 1, 1u);
	assert_int_equal(rule(sub(sub(root, 2), 4), 1)->action, FG_PBWIRE_COARSEN);
	fg_policy_compile_free(p);
}

/* Values quoted into a message must not carry control bytes into a log. */
static void test_regress_message_printable(void **state)
{
	expect_error(REQ_CHILD
	             "        remove: [\"sig\\nnals\\e[2K\"]\n",                      /* 12 */
	             NAME ":12:18: 'sig?nals?[2K' is not a field path (name.name[\"key\"].name, at most 32 parts)");
	expect_error("descriptor_set: ranking.pb\n"
	             "bands:\n"
	             "  - {name: \"a\\rb\", match: [x]}\n"
	             "  - {name: c, match: [x]}\n",
	             NAME ":4:5: value 'x' selects both band 'a?b' and band 'c'");
}

/* One counter per name: the metrics render one series per stat name and
 * band, and Prometheus refuses a scrape with the same series twice. */
static void test_regress_stat_names_unique(void **state)
{
	struct fg_policy *p = load_ok(demo);
	size_t i, j, dups = 0;

	for (i = 0; i < p->nstats; i++)
		for (j = i + 1; j < p->nstats; j++)
			if (strcmp(p->stat_names[i], p->stat_names[j]) == 0) {
				print_error("stats %zu and %zu are both named %s\n", i, j, p->stat_names[i]);
				dups++;
			}
	fg_policy_compile_free(p);
	assert_int_equal(dups, 0);
}

/* Running out of counters is "too many field paths", not "out of memory". */
static void test_regress_too_many_paths_keep_only(void **state)
{
	char *text = many_blocks(4096, "      - bands: []\n"                   /* 8203 */
	                               "        keep_only: [page_size]\n");    /* 8204 */
	struct fg_policy *p;
	int rc = load(text, &p);

	free(text);
	fg_policy_compile_free(p);
	assert_int_equal(rc, FG_ECONFIG);
	assert_string_equal(err, NAME ":8204:20: too many field paths in one policy");
}

/* The fields a keep_only block drops below the top count as
 * "(not in keep_only)" too: account_age_days, accuracy_m and city, with
 * signals and recently_shown_ids. */
static void test_regress_unlisted_below_root(void **state)
{
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, RANK_FEED);
	struct fg_bufq out = { 0 };
	uint64_t n;
	int changed, rc;

	rc = fg_policy_edit(p, &m->request[0], 0, 0, rank_req, sizeof(rank_req), &out, &changed, NULL);
	n = stripped(p, 0, m->request[0].prog->unlisted_stat, 0);
	fg_bufq_free(&out);
	fg_policy_compile_free(p);
	assert_int_equal(rc, 0);
	assert_int_equal(n, 5);
}

/* A 32-bit field reads as the receiver reads it: the low 32 bits of the
 * varint (protobuf's parsers truncate), and a uint64 as unsigned; else a
 * client picks its own user id (and screen-time state) by padding the
 * value, and feedguard and the server disagree. */
static void test_regress_source_widths(void **state)
{
	struct fg_policy *p = load_ok("descriptor_set: t.pb\n"
	                              "bands: [{name: child}]\n"
	                              "methods:\n"
	                              "  /t.S/Up: {user_id: {field: i}, age_band: {field: s}}\n"
	                              "  /t.S/Both: {user_id: {field: u}, age_band: {header: b}}\n");
	const struct fg_policy_source *i = &method(p, "/t.S/Up")->user_id, *s = &method(p, "/t.S/Up")->age_band;
	const struct fg_policy_source *u = &method(p, "/t.S/Both")->user_id;
	char buf[4][64];
	int n[4];

	/* i = 2^32 + 5: the receiver sees 5. */
	n[0] = READ(i, "\x38\x85\x80\x80\x80\x10", buf[0], sizeof(buf[0]));
	/* i = 2^32 - 1 (not sign-extended): the receiver sees -1. */
	n[1] = READ(i, "\x38\xff\xff\xff\xff\x0f", buf[1], sizeof(buf[1]));
	/* s = 2^32 + 5 on the wire: zigzag of 5 is -3. */
	n[2] = READ(s, "\x18\x85\x80\x80\x80\x10", buf[2], sizeof(buf[2]));
	/* u = 2^64 - 1. */
	n[3] = READ(u, "\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", buf[3], sizeof(buf[3]));
	fg_policy_compile_free(p);
	assert_int_equal(n[0], 1);
	assert_string_equal(buf[0], "5");
	assert_int_equal(n[1], 2);
	assert_string_equal(buf[1], "-1");
	assert_int_equal(n[2], 2);
	assert_string_equal(buf[2], "-3");
	assert_int_equal(n[3], 20);
	assert_string_equal(buf[3], "18446744073709551615");
}

/* A block that names a band and nothing else still claims it: a second
 * block for that band is refused (it was silently merged away). */
static void test_regress_empty_block_claims_band(void **state)
{
	expect_error(REQ_CHILD
	             "      - bands: [child]\n"                                       /* 12 */
	             "        remove: [signals]\n",                                   /* 13 */
	             NAME ":12:16: band 'child' already has a request rule block");
}

/* A precision that rounds an integer field to a step below 2 changes
 * nothing (fg_pbwire leaves such values alone): refused, not ignored. */
static void test_regress_integer_precision(void **state)
{
	expect_error(REQ_CHILD
	             "        coarsen: [{field: page_size, precision: 1.4}]\n",       /* 12 */
	             NAME ":12:27: 'page_size': precision 1.4 would change no int32 value (the smallest that does "
	             "is 1.5)");
	expect_error(REQ_CHILD
	             "        coarsen: [{field: context.geo.accuracy_m, precision: 1e-39}]\n",   /* 12 */
	             NAME ":12:27: 'context.geo.accuracy_m': precision 1e-39 would change no float value (the "
	             "smallest that does is 1.17549e-38)");
}

/* An allow-listed scalar must arrive with its own wire type: a page_size
 * (int32, a varint) sent as 8 fixed bytes would reach the server as an
 * unknown field, a channel around the allow-list.  (A LEN value still
 * passes when it parses as packed varints: fg_pbwire cannot tell a
 * singular field from a repeated one.) */
static void test_regress_keep_checks_wire_type(void **state)
{
	static const uint8_t msg[] = { 0x21, 'p', 'r', 'o', 'f', 'i', 'l', 'e', '!' };   /* 4: I64 */
	struct fg_policy *p = load_ok(demo);
	const struct fg_policy_method *m = method(p, RANK_FEED);
	struct fg_bufq out = { 0 };
	const struct fg_pbwire_msg *root = m->request[0].prog;
	uint8_t scalar[4] = { rule(root, 4)->scalar, rule(root, 6)->scalar, rule(sub(root, 2), 1)->scalar,
	                      rule(root, 5)->scalar };
	const char *why = NULL;
	int changed, rc;

	rc = fg_policy_edit(p, &m->request[0], 0, 0, msg, sizeof(msg), &out, &changed, &why);
	fg_bufq_free(&out);
	fg_policy_compile_free(p);
	assert_int_equal(scalar[0], FG_PBWIRE_S_INT32);     /* page_size */
	assert_int_equal(scalar[1], FG_PBWIRE_S_INT64);     /* offset */
	assert_int_equal(scalar[2], FG_PBWIRE_S_INT32);     /* context.surface, an enum */
	assert_int_equal(scalar[3], FG_PBWIRE_S_NONE);      /* page_token, a string */
	assert_int_equal(rc, FG_EINVAL);
	assert_non_null(why);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bands),
		cmocka_unit_test(test_match_values_bounded),
		cmocka_unit_test(test_grpc_paths),
		cmocka_unit_test(test_demo),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_sources),
		cmocka_unit_test(test_keep_only),
		cmocka_unit_test(test_remove),
		cmocka_unit_test(test_coarsen_kinds),
		cmocka_unit_test(test_maps),
		cmocka_unit_test(test_remove_headers),
		cmocka_unit_test(test_err_top),
		cmocka_unit_test(test_err_bands),
		cmocka_unit_test(test_err_methods),
		cmocka_unit_test(test_err_sources),
		cmocka_unit_test(test_err_blocks),
		cmocka_unit_test(test_err_paths),
		cmocka_unit_test(test_err_coarsen),
		cmocka_unit_test(test_band_select),
		cmocka_unit_test(test_read_field),
		cmocka_unit_test(test_edit_request),
		cmocka_unit_test(test_edit_response),
		cmocka_unit_test(test_keep_only_response),
		cmocka_unit_test(test_coarsen_kept_by_keep_only),
		cmocka_unit_test(test_rule_sets),
		cmocka_unit_test(test_pseudonymize),
		cmocka_unit_test(test_count_call),
		cmocka_unit_test(test_alloc_failures),
		cmocka_unit_test(test_alloc_failure_edit),
		cmocka_unit_test(test_too_many_paths),
		cmocka_unit_test(test_regress_keep_only_not_widened),
		cmocka_unit_test(test_regress_message_printable),
		cmocka_unit_test(test_regress_stat_names_unique),
		cmocka_unit_test(test_regress_too_many_paths_keep_only),
		cmocka_unit_test(test_regress_unlisted_below_root),
		cmocka_unit_test(test_regress_source_widths),
		cmocka_unit_test(test_regress_empty_block_claims_band),
		cmocka_unit_test(test_regress_integer_precision),
		cmocka_unit_test(test_regress_keep_checks_wire_type),
	};
	const char *env = getenv("FG_RANKING_PB");

	if (env && *env)
		ranking_pb = env;
	else if (argc > 1)
		ranking_pb = argv[1];
	env = getenv("FG_SRCDIR");
	if (env && *env)
		srcdir = env;
	return cmocka_run_group_tests_name("policy", tests, setup, teardown);
}
