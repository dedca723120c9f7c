/*
 * test_pbjson.c - cmocka group "pbjson": fg_pbjson.h through its header.
 *
 * Message types come from two descriptor sets of the build directory:
 * proto/ranking.pb (the reference contract) and tests/unit/pbjson_test.pb
 * (pbjson_test.proto and pbjson_proto2.proto: every scalar type, every
 * kind of map key, a oneof, Timestamp, Duration, proto2 groups).  `make
 * check` names them in FG_RANKING_PB and FG_PBJSON_TEST_PB; by hand, give
 * them as the first and second arguments or run from the build directory.
 *
 * The vectors of test_python are python3-protobuf 3.21's json_format
 * output (tests/unit/pbjson_vectors.py prints them, and says how); the
 * other cases build their messages with fg_pbmsg.h and spell out the JSON
 * they expect.
 *
 * Link with -Wl,--wrap=realloc: fg_pbjson allocates only by growing its
 * output queue, and test_enomem fails each of those reallocs in turn.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "fg_bufq.h"
#include "fg_error.h"
#include "fg_pbjson.h"
#include "fg_pbwire.h"
#include "fg_schema.h"

#define FG_FAILALLOC_REALLOC
#include "fg_failalloc.h"

#include "fg_pbmsg.h"

#define R "feedguard.ranking.v1."
#define T "feedguard.test.pbjson."
#define T2 "feedguard.test.pbjson2."

/* Field numbers of pbjson_test.proto's Scalars and Repeated, and of
 * ranking.proto's RankFeedRequest. */
enum {
	S_DOUBLE = 1, S_FLOAT, S_INT64, S_UINT64, S_INT32, S_FIXED64, S_FIXED32, S_BOOL, S_STRING,
	S_CHILD, S_BYTES = 12, S_UINT32, S_ENUM, S_SFIXED32, S_SFIXED64, S_SINT32, S_SINT64, S_TS,
	S_DUR, S_C_NAME, S_C_MSG, S_C_NUM, S_FAR = 259,
};
enum {
	R_INT32 = 1, R_SINT64, R_DOUBLE, R_FIXED32, R_BOOL, R_ENUM, R_STRING, R_BYTES, R_MSG, R_FLOAT,
	R_SFIXED64, M_INT32, M_MSG, M_BOOL, M_INT64, M_UINT32, M_SINT64, M_TS,
};
enum { Q_USER = 1, Q_CONTEXT, Q_SIGNALS, Q_PAGE_SIZE, Q_PAGE_TOKEN, Q_OFFSET, Q_SHOWN };

static const char *ranking_pb = "proto/ranking.pb";
static const char *test_pb = "tests/unit/pbjson_test.pb";

struct sets {
	struct fg_schema *ranking;
	struct fg_schema *test;
};

/* A message type and the set it comes from (enum names are looked up there). */
struct typed {
	const struct fg_schema *schema;
	const struct fg_schema_message *type;
};

static int load_sets(void **state)
{
	struct sets *s = calloc(1, sizeof(*s));
	char err[FG_SCHEMA_ERRLEN];

	if (!s)
		return -1;
	*state = s;
	if (fg_schema_load(ranking_pb, &s->ranking, err, sizeof(err)) != 0 ||
	    fg_schema_load(test_pb, &s->test, err, sizeof(err)) != 0) {
		fprintf(stderr, "test_pbjson: %s (set FG_RANKING_PB and FG_PBJSON_TEST_PB to the build's "
		        "proto/ranking.pb and tests/unit/pbjson_test.pb)\n", err);
		return -1;
	}
	return 0;
}

static int free_sets(void **state)
{
	struct sets *s = *state;

	fg_schema_free(s->ranking);
	fg_schema_free(s->test);
	free(s);
	return 0;
}

static struct typed find_type(void **state, const char *name)
{
	const struct sets *s = *state;
	struct typed t = { s->ranking, fg_schema_find_message(s->ranking, name) };

	if (!t.type) {
		t.schema = s->test;
		t.type = fg_schema_find_message(s->test, name);
	}
	assert_non_null(t.type);
	return t;
}

/* ---- building messages ---- */

static void f_i32(struct msg *m, uint32_t number, uint32_t u)
{
	put_tag(m, number, FG_PBWIRE_I32);
	put_le(m, u, 4);
}

static void f_i64(struct msg *m, uint32_t number, uint64_t u)
{
	put_tag(m, number, FG_PBWIRE_I64);
	put_le(m, u, 8);
}

/* A packed record of varints. */
static void f_packed(struct msg *m, uint32_t number, const uint64_t *v, size_t n)
{
	struct msg p = { .n = 0 };
	size_t i;

	for (i = 0; i < n; i++)
		put_varint(&p, v[i]);
	f_msg(m, number, &p);
}

static uint64_t zz(int64_t v)
{
	return (uint64_t)v << 1 ^ (v < 0 ? UINT64_MAX : 0);
}

static void put_hex(struct msg *m, const char *hex)
{
	unsigned x;

	for (; hex[0] && hex[1]; hex += 2) {
		assert_int_equal(sscanf(hex, "%2x", &x), 1);
		put_raw(m, &(uint8_t){ (uint8_t)x }, 1);
	}
}

static struct msg *msg_new(void)
{
	struct msg *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	return m;
}

/* ---- checking lines ---- */

/* What every successful output must be: valid UTF-8 (RFC 3629) with no
 * control byte at all (so no newline): they are all escaped. */
static void check_line(const uint8_t *p, size_t n)
{
	size_t i = 0, k, len;

	while (i < n) {
		assert_true(p[i] >= 0x20);
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		len = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : 2;
		assert_true(p[i] >= 0xc2 && p[i] <= 0xf4 && i + len <= n);
		for (k = 1; k < len; k++)
			assert_int_equal(p[i + k] & 0xc0, 0x80);
		assert_false(p[i] == 0xe0 && p[i + 1] < 0xa0);
		assert_false(p[i] == 0xed && p[i + 1] > 0x9f);
		assert_false(p[i] == 0xf0 && p[i + 1] < 0x90);
		assert_false(p[i] == 0xf4 && p[i + 1] > 0x8f);
		i += len;
	}
}

/* Render <msg> as <name> after bytes the queue already holds (one consumed
 * from its head), and compare with <want>. */
static void expect_bytes(void **state, const char *name, const uint8_t *msg, size_t len, const char *want)
{
	struct typed t = find_type(state, name);
	struct fg_bufq out = { 0 };
	const char *why = "untouched";
	char *got;

	assert_int_equal(fg_bufq_append(&out, "#pfx", 4), 0);
	fg_bufq_consume(&out, 1);
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, msg, len, &why), 0);
	assert_string_equal(why, "untouched");
	assert_true(fg_bufq_len(&out) >= 3);
	assert_memory_equal(fg_bufq_head(&out), "pfx", 3);
	got = strndup((const char *)fg_bufq_head(&out) + 3, fg_bufq_len(&out) - 3);
	assert_non_null(got);
	assert_string_equal(got, want);
	assert_int_equal(strlen(got), fg_bufq_len(&out) - 3);
	check_line(fg_bufq_head(&out), fg_bufq_len(&out));
	free(got);
	fg_bufq_free(&out);
}

static void expect_json(void **state, const char *name, const struct msg *m, const char *want)
{
	expect_bytes(state, name, m->b, m->n, want);
}

/* Rendering fails with <rc> and <why>, and the queue is as it was. */
static void expect_fail(void **state, const char *name, const struct msg *m, int rc, const char *why_want)
{
	struct typed t = find_type(state, name);
	struct fg_bufq out = { 0 };
	const char *why = NULL;

	assert_int_equal(fg_bufq_append(&out, "keep", 4), 0);
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, m->b, m->n, &why), rc);
	assert_non_null(why);
	assert_string_equal(why, why_want);
	assert_int_equal(fg_bufq_len(&out), 4);
	assert_memory_equal(fg_bufq_head(&out), "keep", 4);
	/* <why> may be NULL */
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, m->b, m->n, NULL), rc);
	assert_int_equal(fg_bufq_len(&out), 4);
	fg_bufq_free(&out);
}

/* ---- python3-protobuf's json_format ---- */

/* From tests/unit/pbjson_vectors.py: the wire bytes and json_format's
 * compact output.  None has a field at its default on the wire (json_format
 * omits those, fg_pbjson writes them) nor a map of two entries (json_format
 * orders them by hash). */
static const struct {
	const char *name, *type, *hex, *json;
} py[] = {
	{ "request", R "RankFeedRequest",
		"0a100a04752d3432120531332d3135189003123908031205656e2d47421a0d4575726f70652f4c6f6e646f6e"
		"221f09fe43faedebc0494011da1b7c613255c0bf1d0000484122064c6f6e646f6e1a660a1308e9071098751a"
		"0b08e881d4d80610c0a9d33a120d08e90710011a0608a482d4d8061a076669746e6573731a0667616d696e67"
		"2204686969742a0461642d31320266703a03752d37421a0a0f616666696e6974792e67616d696e6711000000"
		"000000e83f20142a0270323a13818080808080801005ffffffffffffffffff01",
		"{\"user\":{\"user_id\":\"u-42\",\"age_band\":\"13-15\",\"account_age_days\":400},\"conte"
		"xt\":{\"surface\":\"SURFACE_SHORTS\",\"locale\":\"en-GB\",\"time_zone\":\"Europe/London"
		"\",\"geo\":{\"latitude\":51.5072,\"longitude\":-0.1276,\"accuracy_m\":12.5,\"city\":\"Lo"
		"ndon\"}},\"signals\":{\"watch_history\":[{\"item_id\":\"1001\",\"watch_ms\":\"15000\",\""
		"ts\":\"2026-12-06T06:30:00.123Z\"}],\"engagement_events\":[{\"item_id\":\"1001\",\"kind"
		"\":\"KIND_LIKE\",\"ts\":\"2026-12-06T06:31:00Z\"}],\"inferred_interests\":[\"fitness\","
		"\"gaming\"],\"search_history\":[\"hiit\"],\"advertising_id\":\"ad-1\",\"device_fingerpri"
		"nt\":\"fp\",\"social_graph\":[\"u-7\"],\"features\":{\"affinity.gaming\":0.75}},\"page_s"
		"ize\":20,\"page_token\":\"p2\",\"recently_shown_ids\":[\"9007199254740993\",\"5\",\"-1\""
		"]}" },
	{ "response", R "RankFeedResponse",
		"0a7d0801121254656e2d6d696e757465202248494954220a19780b24287e8ced3f220573706f72742a190a15"
		"6265636175736520796f7520776174636865642037100732076669746e6573733a0f0a08616666696e697479"
		"15cdcccc3d41f168e388b5f8e43e4a0573706f727452100a0973656c665f6861726d159a99993e0a14080219"
		"0000000000000840410080e03779c34143120567616d65721a036d2d3122016e",
		"{\"items\":[{\"item_id\":\"1\",\"title\":\"Ten-minute \\\"HIIT\\\"\\n\",\"score\":0.9234"
		",\"content_labels\":[\"sport\"],\"explanations\":[{\"reason\":\"because you watched 7\","
		"\"source_item_id\":\"7\"}],\"inferred_interest_labels\":[\"fitness\"],\"feature_weights"
		"\":{\"affinity\":0.1},\"debug_score\":1e-05,\"topic\":\"sport\",\"moderation\":[{\"label"
		"\":\"self_harm\",\"confidence\":0.3}]},{\"item_id\":\"2\",\"score\":3.0,\"debug_score\":"
		"1e+16}],\"profile_segments\":[\"gamer\"],\"model_version\":\"m-1\",\"next_page_token\":"
		"\"n\"}" },
	{ "scalars", T "Scalars",
		"092f30b7b3a7c9ba8115cdcccc3d18ffffffffffffffefff0120ffffffffffffffffff0128ffffffffffffff"
		"ffff0131feffffffffffffff3dffffffff40014a1468c3a96c6c6f20e29c9320f09f98802001092f7f620400"
		"fffe7f68ffffffff0f70027d00000080810100000000000000808801ffffffff0f9001ffffffffffffffffff"
		"019a010e088092b8c398feffffff0110e807a2011608ffffffffffffffffff011080b6ca91feffffffff01b8"
		"01f9ffffffffffffffff01981009",
		"{\"f_double\":-2.5e-300,\"f_float\":0.1,\"f_int64\":\"-9007199254740993\",\"f_uint64\":"
		"\"18446744073709551615\",\"f_int32\":-1,\"f_fixed64\":\"18446744073709551614\",\"f_fixed"
		"32\":4294967295,\"f_bool\":true,\"f_string\":\"h\303\251llo \342\234\223 \360\237\230"
		"\200 \\u0001\\t/\177\",\"f_bytes\":\"AP/+fw==\",\"f_uint32\":4294967295,\"f_enum\":\"GRE"
		"EN\",\"f_sfixed32\":-2147483648,\"f_sfixed64\":\"-9223372036854775808\",\"f_sint32\":-21"
		"47483648,\"f_sint64\":\"-9223372036854775808\",\"ts\":\"0001-01-01T00:00:00.000001Z\",\""
		"dur\":\"-1.500s\",\"c_num\":-7,\"f_far\":9}" },
	{ "repeated", T "Repeated",
		"0a0d01ffffffffffffffffff01ac02120c0102ffffffffffffffffff011a30000000000000f03f0000000000"
		"00e03f7dc39425ad49b254000000000000f07f000000000000f0ff350f63bab4697b43250100000025ffffff"
		"ff2a02010032030001023a003a016242004201614202616242036162634a0228014a005214ffff7f7f010000"
		"000000804b000000809a99993e5a08ffffffffffffffff621008fbffffffffffffffff0112036e65676a070a"
		"016b120240017204080110027a1408ffffffffffffffefff0111000000000000d03f82010908ffffffff0f12"
		"01018a0107080515000020409201120a0174120d08ff82d1ffaf0710ff93ebdc03",
		"{\"r_int32\":[1,-1,300],\"r_sint64\":[\"-1\",\"1\",\"-9223372036854775808\"],\"r_double"
		"\":[1.0,0.5,1e+100,\"Infinity\",\"-Infinity\",1.2345678901234568e+17],\"r_fixed32\":[1,4"
		"294967295],\"r_bool\":[true,false],\"r_enum\":[\"COLOR_UNSPECIFIED\",\"RED\",\"GREEN\"],"
		"\"r_string\":[\"\",\"b\"],\"r_bytes\":[\"\",\"YQ==\",\"YWI=\",\"YWJj\"],\"r_msg\":[{\"f_"
		"int32\":1},{}],\"r_float\":[3.4028235e+38,1.4013e-45,16777216.0,-0.0,0.3],\"r_sfixed64\""
		":[\"-1\"],\"m_int32\":{\"-5\":\"neg\"},\"m_msg\":{\"k\":{\"f_bool\":true}},\"m_bool\":{"
		"\"true\":\"GREEN\"},\"m_int64\":{\"-9007199254740993\":0.25},\"m_uint32\":{\"4294967295"
		"\":\"AQ==\"},\"m_sint64\":{\"-3\":2.5},\"m_ts\":{\"t\":\"9999-12-31T23:59:59.999999999Z"
		"\"}}" },
	{ "merge", T "Scalars",
		"520528014a016152074a016252024001520452021805b2010928094a056669727374aa010179b201022802b2"
		"010240014a036f6e654a0374776f",
		"{\"f_string\":\"two\",\"child\":{\"f_int32\":1,\"f_string\":\"b\",\"child\":{\"f_int64\""
		":\"5\",\"f_bool\":true}},\"c_msg\":{\"f_int32\":2,\"f_bool\":true}}" },
	{ "legacy", T2 "Legacy",
		"0b10011a01670c2328022423243202010238033804420d0b10ffffffffffffffffff010c",
		"{\"item\":{\"a\":1,\"b\":\"g\"},\"entry\":[{\"x\":2},{}],\"nums\":[1,2],\"plain\":[3,4],"
		"\"next\":{\"item\":{\"a\":-1}}}" },
};

static void test_python(void **state)
{
	struct msg *m = msg_new();
	size_t i;

	for (i = 0; i < sizeof(py) / sizeof(py[0]); i++) {
		m->n = 0;
		put_hex(m, py[i].hex);
		print_message("%s\n", py[i].name);
		expect_json(state, py[i].type, m, py[i].json);
	}
	free(m);
}

/* The request vector, built field by field: the encoder and python agree,
 * and so the hand-built cases below mean what they say. */
static void test_python_request_built(void **state)
{
	struct msg *m = msg_new(), *want = msg_new(), u = { .n = 0 }, c = { .n = 0 }, g = { .n = 0 };
	struct msg s = { .n = 0 }, w = { .n = 0 }, e = { .n = 0 }, ts = { .n = 0 }, fe = { .n = 0 };
	const uint64_t shown[] = { 9007199254740993u, 5, UINT64_MAX };

	f_str(&u, 1, "u-42");
	f_str(&u, 2, "13-15");
	f_varint(&u, 3, 400);
	f_msg(m, Q_USER, &u);
	f_varint(&c, 1, 3);
	f_str(&c, 2, "en-GB");
	f_str(&c, 3, "Europe/London");
	f_double(&g, 1, 51.5072);
	f_double(&g, 2, -0.1276);
	f_float(&g, 3, 12.5f);
	f_str(&g, 4, "London");
	f_msg(&c, 4, &g);
	f_msg(m, Q_CONTEXT, &c);
	f_varint(&w, 1, 1001);
	f_varint(&w, 2, 15000);
	f_varint(&ts, 1, 1796538600);
	f_varint(&ts, 2, 123000000);
	f_msg(&w, 3, &ts);
	f_msg(&s, 1, &w);
	ts.n = 0;
	f_varint(&e, 1, 1001);
	f_varint(&e, 2, 1);
	f_varint(&ts, 1, 1796538660);
	f_msg(&e, 3, &ts);
	f_msg(&s, 2, &e);
	f_str(&s, 3, "fitness");
	f_str(&s, 3, "gaming");
	f_str(&s, 4, "hiit");
	f_str(&s, 5, "ad-1");
	f_str(&s, 6, "fp");
	f_str(&s, 7, "u-7");
	f_str(&fe, 1, "affinity.gaming");
	f_double(&fe, 2, 0.75);
	f_msg(&s, 8, &fe);
	f_msg(m, Q_SIGNALS, &s);
	f_varint(m, Q_PAGE_SIZE, 20);
	f_str(m, Q_PAGE_TOKEN, "p2");
	f_packed(m, Q_SHOWN, shown, 3);
	put_hex(want, py[0].hex);
	assert_int_equal(m->n, want->n);
	assert_memory_equal(m->b, want->b, m->n);
	expect_json(state, R "RankFeedRequest", m, py[0].json);
	free(m);
	free(want);
}

/* ---- scalars ---- */

/* What json_format cannot show: defaults present on the wire are written,
 * and 32-bit types keep the low 32 bits of any varint. */
static void test_scalars(void **state)
{
	struct msg m = { .n = 0 };

	f_varint(&m, S_INT32, 0);
	f_varint(&m, S_BOOL, 0);
	f_str(&m, S_STRING, "");
	f_bytes(&m, S_BYTES, "", 0);
	expect_json(state, T "Scalars", &m, "{\"f_int32\":0,\"f_bool\":false,\"f_string\":\"\",\"f_bytes\":\"\"}");

	m.n = 0;
	f_varint(&m, S_INT32, 0xffffffffu);                     /* -1 in 5 bytes, as some encoders write it */
	f_varint(&m, S_FIXED32 + 100, 1);                       /* (unknown) */
	f_varint(&m, S_UINT32, (UINT64_C(1) << 32) + 7);
	f_varint(&m, S_BOOL, 2);
	f_varint(&m, S_SINT32, 1);
	f_varint(&m, S_SINT64, zz(INT64_MAX));
	f_varint(&m, S_ENUM, UINT64_MAX);                       /* -1, no name */
	expect_json(state, T "Scalars", &m,
	            "{\"f_int32\":-1,\"f_bool\":true,\"f_uint32\":7,\"f_enum\":-1,\"f_sint32\":-1,"
	            "\"f_sint64\":\"9223372036854775807\",\"_unknown\":[107]}");

	m.n = 0;
	f_varint(&m, S_INT32, (uint64_t)(int64_t)INT32_MIN);    /* 10 bytes */
	f_varint(&m, S_INT64, (uint64_t)INT64_MIN);
	f_i64(&m, S_FIXED64, UINT64_MAX);
	f_i32(&m, S_SFIXED32, 0x7fffffff);
	f_i64(&m, S_SFIXED64, 1);
	f_varint(&m, S_ENUM, 1);
	f_varint(&m, S_SINT32, zz(INT32_MAX));
	expect_json(state, T "Scalars", &m,
	            "{\"f_int64\":\"-9223372036854775808\",\"f_int32\":-2147483648,"
	            "\"f_fixed64\":\"18446744073709551615\",\"f_enum\":\"RED\",\"f_sfixed32\":2147483647,"
	            "\"f_sfixed64\":\"1\",\"f_sint32\":2147483647}");
}

/* A non-repeated field that comes several times: the last one. */
static void test_last_one_wins(void **state)
{
	struct msg m = { .n = 0 };

	f_varint(&m, S_INT32, 1);
	f_str(&m, S_STRING, "a");
	f_varint(&m, S_INT32, 2);
	f_double(&m, S_DOUBLE, 1.5);
	f_str(&m, S_STRING, "b");
	f_double(&m, S_DOUBLE, -2);
	f_varint(&m, S_ENUM, 2);
	f_varint(&m, S_ENUM, 1);
	expect_json(state, T "Scalars", &m, "{\"f_double\":-2.0,\"f_int32\":2,\"f_string\":\"b\",\"f_enum\":\"RED\"}");
}

/* The aliased name is never written: the first declared is. */
static void test_enums(void **state)
{
	struct msg m = { .n = 0 };
	const uint64_t v[] = { 0, 1, 2, 3, (uint64_t)-7, (uint64_t)INT32_MAX };
	struct typed t = find_type(state, T "Repeated");
	struct fg_bufq out = { 0 };

	f_packed(&m, R_ENUM, v, 6);
	expect_json(state, T "Repeated", &m, "{\"r_enum\":[\"COLOR_UNSPECIFIED\",\"RED\",\"GREEN\",3,-7,2147483647]}");
	/* without a schema, numbers */
	assert_int_equal(fg_pbjson_write(&out, NULL, t.type, m.b, m.n, NULL), 0);
	assert_int_equal(fg_bufq_len(&out), strlen("{\"r_enum\":[0,1,2,3,-7,2147483647]}"));
	assert_memory_equal(fg_bufq_head(&out), "{\"r_enum\":[0,1,2,3,-7,2147483647]}", fg_bufq_len(&out));
	fg_bufq_free(&out);
}

/* Doubles as repr() writes them; floats with 6 to 9 digits as
 * ToShortestFloat (python3 printed each expected string). */
static void test_floats(void **state)
{
	static const struct {
		double d;
		const char *want;
	} dbl[] = {
		{ 1.0, "1.0" }, { 100.0, "100.0" }, { 1e15, "1000000000000000.0" }, { 1e16, "1e+16" },
		{ 1.5e16, "1.5e+16" }, { 0.0001, "0.0001" }, { 0.00001, "1e-05" }, { 0.00012, "0.00012" },
		{ 5e-324, "5e-324" }, { DBL_MAX, "1.7976931348623157e+308" }, { 0.1 + 0.2, "0.30000000000000004" },
		{ -0.0, "-0.0" }, { 123.456, "123.456" }, { 9007199254740993.0, "9007199254740992.0" },
		{ 1.0 / 3, "0.3333333333333333" }, { DBL_MIN, "2.2250738585072014e-308" }, { 4.35, "4.35" },
		{ 0.5e-4, "5e-05" }, { 0x1p-1017, "7.120236347223045e-307" }, /* the next decimal up is shorter */
		{ 0x1p-1074, "5e-324" }, { NAN, "\"NaN\"" }, { INFINITY, "\"Infinity\"" }, { -INFINITY, "\"-Infinity\"" },
	};
	static const struct {
		uint32_t bits;
		const char *want;
	} flt[] = {
		{ 0x3f666666, "0.9" }, { 0x33d6bf95, "1e-07" }, { 0x40490fdb, "3.1415927" },
		{ 0x4b800000, "16777216.0" }, { 0x501502f9, "10000000000.0" }, { 0x47f1205a, "123456.7" },
		{ 0x00000001, "1.4013e-45" }, { 0x3e99999a, "0.3" }, { 0x42c80000, "100.0" }, { 0xc0200000, "-2.5" },
		{ 0x00800000, "1.1754944e-38" }, { 0x004c3927, "7e-39" }, { 0x477fe000, "65504.0" },
		{ 0x7f7fffff, "3.4028235e+38" }, { 0x7fc00000, "\"NaN\"" }, { 0xff800000, "\"-Infinity\"" },
	};
	struct msg m;
	char want[96];
	size_t i;

	for (i = 0; i < sizeof(dbl) / sizeof(dbl[0]); i++) {
		m.n = 0;
		f_double(&m, S_DOUBLE, dbl[i].d);
		snprintf(want, sizeof(want), "{\"f_double\":%s}", dbl[i].want);
		expect_json(state, T "Scalars", &m, want);
	}
	for (i = 0; i < sizeof(flt) / sizeof(flt[0]); i++) {
		m.n = 0;
		f_i32(&m, S_FLOAT, flt[i].bits);
		snprintf(want, sizeof(want), "{\"f_float\":%s}", flt[i].want);
		expect_json(state, T "Scalars", &m, want);
	}
}

/* ---- strings and bytes ---- */

static void test_strings(void **state)
{
	/* a, bad byte, b, C3 before a non-continuation byte, (, E2 82 cut short,
	 * a surrogate (ED A0 80), an overlong / (C0 AF), F4 90 (above U+10FFFF),
	 * F5, a lone continuation byte, then valid 2-, 3- and 4-byte characters */
	static const char in[] = "a\xff" "b\xc3(\xe2\x82\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80\xf5\x80"
	                         "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf";
	static const char esc[] = "\"\\/\b\f\n\r\t\x01\x1f\x7f";
	struct msg m = { .n = 0 };

	f_bytes(&m, S_STRING, in, sizeof(in) - 1);
	expect_json(state, T "Scalars", &m,
	            "{\"f_string\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd"
	            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	            "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"}");
	m.n = 0;
	f_bytes(&m, S_STRING, esc, sizeof(esc) - 1);
	f_bytes(&m, S_BYTES, in, 4);
	expect_json(state, T "Scalars", &m,
	            "{\"f_string\":\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\",\"f_bytes\":\"Yf9iww==\"}");
	/* a NUL and a cut 4-byte character at the very end */
	m.n = 0;
	f_bytes(&m, S_STRING, "\0x\xf0\x9f\x98", 5);
	expect_json(state, T "Scalars", &m, "{\"f_string\":\"\\u0000x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
}

static void expect_helper(int (*fn)(struct fg_bufq *, const uint8_t *, size_t), const void *in, size_t len,
                          const char *want)
{
	struct fg_bufq out = { 0 };

	assert_int_equal(fg_bufq_append(&out, "x", 1), 0);
	assert_int_equal(fn(&out, in, len), 0);
	assert_int_equal(fg_bufq_len(&out), 1 + strlen(want));
	assert_memory_equal(fg_bufq_head(&out), "x", 1);
	assert_memory_equal(fg_bufq_head(&out) + 1, want, strlen(want));
	check_line(fg_bufq_head(&out), fg_bufq_len(&out));
	fg_bufq_free(&out);
}

/* The helpers the dump tool writes its own fields with; base64 against RFC
 * 4648 section 10. */
static void test_helpers(void **state)
{
	static const char *const b64[] = { "\"\"", "\"Zg==\"", "\"Zm8=\"", "\"Zm9v\"", "\"Zm9vYg==\"",
	                                   "\"Zm9vYmE=\"", "\"Zm9vYmFy\"" };
	uint8_t all[256];
	size_t i;

	(void)state;
	for (i = 0; i < 7; i++)
		expect_helper(fg_pbjson_write_base64, "foobar", i, b64[i]);
	expect_helper(fg_pbjson_write_base64, NULL, 0, "\"\"");
	expect_helper(fg_pbjson_write_base64, "\xfb\xff\xbf", 3, "\"+/+/\"");
	expect_helper(fg_pbjson_write_string, NULL, 0, "\"\"");
	expect_helper(fg_pbjson_write_string, "/feedguard.ranking.v1.Ranker/RankFeed", 37,
	              "\"/feedguard.ranking.v1.Ranker/RankFeed\"");
	expect_helper(fg_pbjson_write_string, "x-bin\n\xff", 7, "\"x-bin\\n\xef\xbf\xbd\"");
	/* every byte value: the line checker accepts what comes out */
	for (i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	expect_helper(fg_pbjson_write_string, all, 0x20, "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006"
	              "\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015"
	              "\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"");
	{
		struct fg_bufq out = { 0 };

		assert_int_equal(fg_pbjson_write_string(&out, all, sizeof(all)), 0);
		check_line(fg_bufq_head(&out), fg_bufq_len(&out));
		fg_bufq_free(&out);
	}
}

/* ---- repeated fields and maps ---- */

/* Packed and unpacked occurrences of one field, in wire order, even mixed
 * and even against the declaration; an empty packed record is present. */
static void test_repeated(void **state)
{
	const uint64_t a[] = { 1, 2 }, b[] = { 4 }, none[] = { 0 };
	struct msg m = { .n = 0 }, p = { .n = 0 };

	f_packed(&m, R_INT32, a, 2);
	f_str(&m, R_STRING, "s");
	f_varint(&m, R_INT32, 3);
	f_packed(&m, R_INT32, b, 1);
	f_i32(&m, R_FIXED32, 7);                                /* declared unpacked */
	put_le(&p, 8, 4);
	put_le(&p, 9, 4);
	f_msg(&m, R_FIXED32, &p);                               /* sent packed */
	f_i64(&m, R_SFIXED64, (uint64_t)-2);
	f_varint(&m, R_SINT64, zz(-3));
	f_packed(&m, R_BOOL, none, 0);
	f_str(&m, R_STRING, "t");
	expect_json(state, T "Repeated", &m,
	            "{\"r_int32\":[1,2,3,4],\"r_sint64\":[\"-3\"],\"r_fixed32\":[7,8,9],\"r_bool\":[],"
	            "\"r_string\":[\"s\",\"t\"],\"r_sfixed64\":[\"-2\"]}");
}

/* One map entry: key <k> (NULL: none) and value <v> (NULL: none), each a
 * prepared record. */
static void f_entry(struct msg *m, uint32_t number, const struct msg *k, const struct msg *v)
{
	struct msg e = { .n = 0 };

	if (k)
		put_raw(&e, k->b, k->n);
	if (v)
		put_raw(&e, v->b, v->n);
	f_msg(m, number, &e);
}

/* Entries in wire order, a repeated key kept twice, absent keys and values
 * at their defaults, key types as strings, unknown entry fields ignored,
 * a value message given twice merged. */
static void test_maps(void **state)
{
	struct msg m = { .n = 0 }, k = { .n = 0 }, v = { .n = 0 }, sub = { .n = 0 };

	f_varint(&k, 1, (uint64_t)-1);
	f_str(&v, 2, "minus one");
	f_entry(&m, M_INT32, &k, &v);
	k.n = 0;
	f_varint(&k, 1, 7);
	f_entry(&m, M_INT32, &k, NULL);
	v.n = 0;
	f_str(&v, 2, "no key");
	f_varint(&v, 3, 1);                                     /* not key, not value: dropped */
	f_entry(&m, M_INT32, NULL, &v);
	k.n = 0;
	f_varint(&k, 1, 3);
	f_varint(&k, 1, (uint64_t)-1);                          /* the last key wins */
	f_entry(&m, M_INT32, &k, &v);
	expect_json(state, T "Repeated", &m,
	            "{\"m_int32\":{\"-1\":\"minus one\",\"7\":\"\",\"0\":\"no key\",\"-1\":\"no key\"}}");

	m.n = 0;
	k.n = 0;
	f_varint(&k, 1, 0);
	f_entry(&m, M_BOOL, &k, NULL);
	k.n = 0;
	f_varint(&k, 1, 1);
	v.n = 0;
	f_varint(&v, 2, 9);
	f_entry(&m, M_BOOL, &k, &v);
	k.n = 0;
	f_varint(&k, 1, (uint64_t)INT64_MIN);
	f_entry(&m, M_INT64, &k, NULL);
	k.n = 0;
	f_varint(&k, 1, UINT64_MAX);                            /* uint32 keeps the low 32 bits */
	f_entry(&m, M_UINT32, &k, NULL);
	k.n = 0;
	f_varint(&k, 1, zz(INT64_MIN));
	v.n = 0;
	f_i32(&v, 2, 0x7f800000);
	f_entry(&m, M_SINT64, &k, &v);
	expect_json(state, T "Repeated", &m,
	            "{\"m_bool\":{\"false\":\"COLOR_UNSPECIFIED\",\"true\":9},"
	            "\"m_int64\":{\"-9223372036854775808\":0.0},\"m_uint32\":{\"4294967295\":\"\"},"
	            "\"m_sint64\":{\"-9223372036854775808\":\"Infinity\"}}");

	m.n = 0;
	f_entry(&m, M_MSG, NULL, NULL);
	k.n = 0;
	f_str(&k, 1, "k\"");
	v.n = 0;
	f_varint(&sub, S_INT32, 1);
	f_msg(&v, 2, &sub);
	sub.n = 0;
	f_varint(&sub, S_BOOL, 1);
	f_msg(&v, 2, &sub);
	f_entry(&m, M_MSG, &k, &v);
	f_entry(&m, M_TS, &k, NULL);
	expect_json(state, T "Repeated", &m,
	            "{\"m_msg\":{\"\":{},\"k\\\"\":{\"f_int32\":1,\"f_bool\":true}},"
	            "\"m_ts\":{\"k\\\"\":\"1970-01-01T00:00:00Z\"}}");
}

/* ---- merging and oneofs ---- */

/* A oneof keeps the member that came last, whatever their numbers. */
static void test_oneof(void **state)
{
	struct msg m = { .n = 0 }, sub = { .n = 0 };

	f_str(&m, S_C_NAME, "x");
	f_varint(&m, S_C_NUM, 3);
	expect_json(state, T "Scalars", &m, "{\"c_num\":3}");
	m.n = 0;
	f_varint(&m, S_C_NUM, 3);
	f_varint(&m, S_INT32, 1);
	f_str(&m, S_C_NAME, "x");
	expect_json(state, T "Scalars", &m, "{\"f_int32\":1,\"c_name\":\"x\"}");
	/* a message member: merged only from after the other member */
	m.n = 0;
	f_varint(&sub, S_INT32, 1);
	f_msg(&m, S_C_MSG, &sub);
	f_varint(&m, S_C_NUM, 3);
	sub.n = 0;
	f_varint(&sub, S_INT64, 2);
	f_msg(&m, S_C_MSG, &sub);
	f_msg(&m, S_C_MSG, &sub);
	expect_json(state, T "Scalars", &m, "{\"c_msg\":{\"f_int64\":\"2\"}}");
}

/* The deepest merge: each level's child comes twice, an empty one then the
 * next level, so every level is the merge of merges up to the root. */
static void nest_merged(struct msg *m, int depth)
{
	struct msg *inner = msg_new();

	if (depth > 0) {
		nest_merged(inner, depth - 1);
		f_bytes(m, S_CHILD, "", 0);
		f_msg(m, S_CHILD, inner);
	} else {
		f_varint(m, S_INT32, 5);
	}
	free(inner);
}

static void nest_plain(struct msg *m, int depth)
{
	struct msg *inner = msg_new();

	if (depth > 0) {
		nest_plain(inner, depth - 1);
		f_msg(m, S_CHILD, inner);
	}
	free(inner);
}

static char *nested_json(int depth, const char *leaf)
{
	size_t n = (size_t)depth * 12 + strlen(leaf) + 1, i;
	char *s = malloc(n), *p = s;

	assert_non_null(s);
	for (i = 0; i < (size_t)depth; i++)
		p += sprintf(p, "{\"child\":");
	p += sprintf(p, "%s", leaf);
	for (i = 0; i < (size_t)depth; i++)
		*p++ = '}';
	*p = '\0';
	return s;
}

/* FG_PBJSON_MAX_DEPTH messages below the root, and not one more. */
static void test_depth(void **state)
{
	struct msg *m = msg_new();
	char *want;

	nest_plain(m, FG_PBJSON_MAX_DEPTH);
	want = nested_json(FG_PBJSON_MAX_DEPTH, "{}");
	expect_json(state, T "Scalars", m, want);
	free(want);
	m->n = 0;
	nest_plain(m, FG_PBJSON_MAX_DEPTH + 1);
	expect_fail(state, T "Scalars", m, FG_ETOOBIG, "messages nested deeper than FG_PBJSON_MAX_DEPTH");

	m->n = 0;
	nest_merged(m, FG_PBJSON_MAX_DEPTH);
	want = nested_json(FG_PBJSON_MAX_DEPTH, "{\"f_int32\":5}");
	expect_json(state, T "Scalars", m, want);
	free(want);
	m->n = 0;
	nest_merged(m, FG_PBJSON_MAX_DEPTH + 1);
	expect_fail(state, T "Scalars", m, FG_ETOOBIG, "messages nested deeper than FG_PBJSON_MAX_DEPTH");
	free(m);
}

/* A map entry is a level: its value message one more. */
static void test_depth_map(void **state)
{
	struct msg *m = msg_new(), *v = msg_new(), *inner = msg_new(), k = { .n = 0 };
	char *nested = nested_json(FG_PBJSON_MAX_DEPTH - 2, "{}"), *want = malloc(strlen(nested) + 32);

	assert_non_null(want);
	f_str(&k, 1, "k");
	nest_plain(inner, FG_PBJSON_MAX_DEPTH - 2);
	f_msg(v, 2, inner);
	f_entry(m, M_MSG, &k, v);
	sprintf(want, "{\"m_msg\":{\"k\":%s}}", nested);
	expect_json(state, T "Repeated", m, want);
	m->n = v->n = inner->n = 0;
	nest_plain(inner, FG_PBJSON_MAX_DEPTH - 1);
	f_msg(v, 2, inner);
	f_entry(m, M_MSG, &k, v);
	expect_fail(state, T "Repeated", m, FG_ETOOBIG, "messages nested deeper than FG_PBJSON_MAX_DEPTH");
	free(nested);
	free(want);
	free(m);
	free(v);
	free(inner);
}

/* ---- Timestamp and Duration ---- */

static void expect_ts(void **state, int64_t secs, int64_t nanos, const char *want)
{
	struct msg m = { .n = 0 }, ts = { .n = 0 };
	char line[128];

	f_varint(&ts, 1, (uint64_t)secs);
	if (nanos)
		f_varint(&ts, 2, (uint64_t)nanos);
	f_msg(&m, S_TS, &ts);
	snprintf(line, sizeof(line), "{\"ts\":%s}", want);
	expect_json(state, T "Scalars", &m, line);
}

static void expect_dur(void **state, int64_t secs, int64_t nanos, const char *want)
{
	struct msg m = { .n = 0 }, d = { .n = 0 };
	char line[128];

	if (secs)
		f_varint(&d, 1, (uint64_t)secs);
	if (nanos)
		f_varint(&d, 2, (uint64_t)nanos);
	f_msg(&m, S_DUR, &d);
	snprintf(line, sizeof(line), "{\"dur\":%s}", want);
	expect_json(state, T "Scalars", &m, line);
}

/* 0, 3, 6 or 9 fraction digits; out of range or with unknown fields, a
 * plain message. */
static void test_wkt(void **state)
{
	struct msg m = { .n = 0 }, ts = { .n = 0 };
	struct typed t = find_type(state, "google.protobuf.Timestamp");
	struct fg_bufq out = { 0 };

	expect_ts(state, 1796538600, 0, "\"2026-12-06T06:30:00Z\"");
	expect_ts(state, 1796538600, 123000000, "\"2026-12-06T06:30:00.123Z\"");
	expect_ts(state, 1796538600, 123456000, "\"2026-12-06T06:30:00.123456Z\"");
	expect_ts(state, 1796538600, 123456789, "\"2026-12-06T06:30:00.123456789Z\"");
	expect_ts(state, 0, 1, "\"1970-01-01T00:00:00.000000001Z\"");
	expect_ts(state, -1, 0, "\"1969-12-31T23:59:59Z\"");
	expect_ts(state, 951782400, 0, "\"2000-02-29T00:00:00Z\"");
	expect_ts(state, -2203891200, 0, "\"1900-03-01T00:00:00Z\"");
	expect_ts(state, 253402300800, 0, "{\"seconds\":\"253402300800\"}");
	expect_ts(state, -62135596801, 0, "{\"seconds\":\"-62135596801\"}");
	expect_ts(state, 5, -1, "{\"seconds\":\"5\",\"nanos\":-1}");
	expect_ts(state, 5, 1000000000, "{\"seconds\":\"5\",\"nanos\":1000000000}");

	expect_dur(state, 0, 0, "\"0s\"");
	expect_dur(state, 1, 500000000, "\"1.500s\"");
	expect_dur(state, 0, -1000, "\"-0.000001s\"");
	expect_dur(state, -5, 0, "\"-5s\"");
	expect_dur(state, 315576000000, 999999999, "\"315576000000.999999999s\"");
	expect_dur(state, -315576000000, -10, "\"-315576000000.000000010s\"");
	expect_dur(state, 1, -1, "{\"seconds\":\"1\",\"nanos\":-1}");
	expect_dur(state, 315576000001, 0, "{\"seconds\":\"315576000001\"}");

	/* occurrences merge: 5 seconds, then 7 nanos */
	f_varint(&ts, 1, 5);
	f_msg(&m, S_TS, &ts);
	ts.n = 0;
	f_varint(&ts, 2, 7);
	f_msg(&m, S_TS, &ts);
	expect_json(state, T "Scalars", &m, "{\"ts\":\"1970-01-01T00:00:05.000000007Z\"}");
	/* unknown fields are kept, so the object form */
	m.n = 0;
	ts.n = 0;
	f_varint(&ts, 1, 5);
	f_varint(&ts, 3, 1);
	f_msg(&m, S_TS, &ts);
	expect_json(state, T "Scalars", &m, "{\"ts\":{\"seconds\":\"5\",\"_unknown\":[3]}}");

	/* the message itself a Timestamp: one JSON string */
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, NULL, 0, NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 22);
	assert_memory_equal(fg_bufq_head(&out), "\"1970-01-01T00:00:00Z\"", 22);
	fg_bufq_free(&out);
}

/* The calendar against glibc's gmtime_r over the whole range, a day and a
 * bit more than an hour at a time. */
static void test_wkt_calendar(void **state)
{
	const int64_t step = 86400 * 97 + 3601;
	char want[64];
	struct tm tm;
	time_t tt;
	int64_t s;

	if (sizeof(time_t) < 8)
		skip();
	for (s = -62135596800; s <= 253402300799; s += step) {
		tt = (time_t)s;
		assert_non_null(gmtime_r(&tt, &tm));
		snprintf(want, sizeof(want), "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
		         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		expect_ts(state, s, 0, want);
	}
	expect_ts(state, 253402300799, 999999999, "\"9999-12-31T23:59:59.999999999Z\"");
	expect_ts(state, -62135596800, 0, "\"0001-01-01T00:00:00Z\"");
	expect_ts(state, 13601001600, 0, "\"2400-12-31T00:00:00Z\"");
	expect_ts(state, 4107456000, 0, "\"2100-02-28T00:00:00Z\"");
	expect_ts(state, 4107542400, 0, "\"2100-03-01T00:00:00Z\"");
	expect_ts(state, 946598400, 0, "\"1999-12-31T00:00:00Z\"");
	expect_ts(state, 978220800, 0, "\"2000-12-31T00:00:00Z\"");
}

/* ---- unknown fields ---- */

static void test_unknown(void **state)
{
	struct msg m = { .n = 0 }, sub = { .n = 0 };
	char *want, *p;
	uint32_t n;

	f_varint(&m, 99, 1);
	f_varint(&m, S_INT32, 1);
	f_str(&m, 50, "x");
	f_varint(&m, 99, 2);
	f_i32(&m, 11, 3);
	put_tag(&m, 60, FG_PBWIRE_SGROUP);                      /* a group, skipped whole */
	f_varint(&m, 1, 1);
	put_tag(&m, 61, FG_PBWIRE_SGROUP);
	put_tag(&m, 61, FG_PBWIRE_EGROUP);
	put_tag(&m, 60, FG_PBWIRE_EGROUP);
	f_varint(&sub, 536870911, 1);
	f_msg(&m, S_CHILD, &sub);
	expect_json(state, T "Scalars", &m,
	            "{\"f_int32\":1,\"child\":{\"_unknown\":[536870911]},\"_unknown\":[11,50,60,99]}");

	/* more than FG_PBJSON_MAX_UNKNOWN: the smallest, and a flag */
	m.n = 0;
	for (n = 1000 + FG_PBJSON_MAX_UNKNOWN + 40; n >= 1000; n--)
		f_varint(&m, n, 0);
	want = malloc(FG_PBJSON_MAX_UNKNOWN * 5 + 64);
	assert_non_null(want);
	p = want + sprintf(want, "{\"_unknown\":[");
	for (n = 1000; n < 1000 + FG_PBJSON_MAX_UNKNOWN; n++)
		p += sprintf(p, "%s%u", n > 1000 ? "," : "", n);
	sprintf(p, "],\"_unknown_truncated\":true}");
	expect_json(state, T "Scalars", &m, want);
	free(want);
}

/* Field 259 shares the first pass's bit with field 3: each is found alone. */
static void test_far_field(void **state)
{
	struct msg m = { .n = 0 };

	f_varint(&m, S_FAR, 9);
	expect_json(state, T "Scalars", &m, "{\"f_far\":9}");
	m.n = 0;
	f_varint(&m, S_INT64, 1);
	expect_json(state, T "Scalars", &m, "{\"f_int64\":\"1\"}");
	f_varint(&m, S_FAR, 9);
	expect_json(state, T "Scalars", &m, "{\"f_int64\":\"1\",\"f_far\":9}");
}

/* proto2: groups as messages, merged when not repeated; packing either way. */
static void test_groups(void **state)
{
	const uint64_t v[] = { 5, 6 };
	struct msg m = { .n = 0 };

	put_tag(&m, 1, FG_PBWIRE_SGROUP);
	f_varint(&m, 2, 1);
	put_tag(&m, 1, FG_PBWIRE_EGROUP);
	put_tag(&m, 4, FG_PBWIRE_SGROUP);
	f_varint(&m, 5, 2);
	f_varint(&m, 9, 1);
	put_tag(&m, 4, FG_PBWIRE_EGROUP);
	put_tag(&m, 1, FG_PBWIRE_SGROUP);
	f_str(&m, 3, "x");
	put_tag(&m, 1, FG_PBWIRE_EGROUP);
	f_varint(&m, 6, 4);                                     /* declared packed */
	f_packed(&m, 7, v, 2);                                  /* declared unpacked */
	expect_json(state, T2 "Legacy", &m,
	            "{\"item\":{\"a\":1,\"b\":\"x\"},\"entry\":[{\"x\":2,\"_unknown\":[9]}],\"nums\":[4],"
	            "\"plain\":[5,6]}");
}

/* ---- malformed messages ---- */

#define WHY_FIELD "bad field: tag, varint, length or group"
#define WHY_WIRE "wire type does not match the field's declared type"

static void test_malformed(void **state)
{
	struct msg m = { .n = 0 }, sub = { .n = 0 }, sub2 = { .n = 0 };

	put_tag(&m, S_INT32, FG_PBWIRE_VARINT);
	put_raw(&m, "\x80", 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_tag(&m, S_INT32, FG_PBWIRE_VARINT);
	put_raw(&m, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_tag(&m, S_STRING, FG_PBWIRE_LEN);
	put_raw(&m, "\x05" "ab", 3);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_raw(&m, "\x00\x01", 2);                             /* field 0 */
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_tag(&m, 1, 7);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_tag(&m, 1, FG_PBWIRE_EGROUP);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);
	m.n = 0;
	put_tag(&m, 60, FG_PBWIRE_SGROUP);                      /* never closed */
	f_varint(&m, 1, 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);

	/* wire types against declared types */
	m.n = 0;
	f_i64(&m, S_INT32, 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_varint(&m, S_STRING, 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_varint(&m, S_CHILD, 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_i32(&m, S_DOUBLE, 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_bytes(&m, S_INT32, "\x01", 1);                        /* packed, but not repeated */
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_bytes(&m, 1, "", 0);                                  /* a group field sent as LEN */
	expect_fail(state, T2 "Legacy", &m, FG_EINVAL, WHY_WIRE);

	/* found deep, after output was written: all of it taken back */
	m.n = 0;
	f_varint(&sub2, S_STRING, 1);
	f_msg(&sub, S_CHILD, &sub2);
	f_str(&m, S_STRING, "written first");
	f_msg(&m, S_CHILD, &sub);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_WIRE);
	m.n = 0;
	f_str(&m, S_STRING, "written first");
	f_bytes(&m, S_CHILD, "\x08", 1);
	expect_fail(state, T "Scalars", &m, FG_EINVAL, WHY_FIELD);

	/* packed records */
	m.n = 0;
	f_bytes(&m, R_FIXED32, "\x01\x02\x03\x04\x05", 5);
	expect_fail(state, T "Repeated", &m, FG_EINVAL, "packed field is not a whole number of elements");
	m.n = 0;
	f_bytes(&m, R_DOUBLE, "\x01\x02\x03\x04", 4);
	expect_fail(state, T "Repeated", &m, FG_EINVAL, "packed field is not a whole number of elements");
	m.n = 0;
	f_bytes(&m, R_INT32, "\x01\x80", 2);
	expect_fail(state, T "Repeated", &m, FG_EINVAL, "bad varint in a packed field");

	/* map entries */
	m.n = 0;
	sub.n = 0;
	f_str(&sub, 1, "x");
	f_msg(&m, M_INT32, &sub);
	expect_fail(state, T "Repeated", &m, FG_EINVAL, "wire type does not match the map entry's declared type");
	m.n = 0;
	f_bytes(&m, M_INT32, "\x08", 1);
	expect_fail(state, T "Repeated", &m, FG_EINVAL, WHY_FIELD);
}

static void test_bad_arguments(void **state)
{
	struct typed t = find_type(state, T "Scalars");
	struct fg_bufq out = { 0 };
	const char *why = NULL;

	assert_int_equal(fg_pbjson_write(&out, t.schema, NULL, (const uint8_t *)"", 0, &why), FG_EINVAL);
	assert_string_equal(why, "no message type or no message");
	why = NULL;
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, NULL, 3, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 0);
	/* the empty message */
	assert_int_equal(fg_pbjson_write(&out, t.schema, t.type, NULL, 0, &why), 0);
	assert_int_equal(fg_bufq_len(&out), 2);
	assert_memory_equal(fg_bufq_head(&out), "{}", 2);
	fg_bufq_free(&out);
}

/* ---- allocation failure ---- */

static void test_enomem(void **state)
{
	struct typed t = find_type(state, R "RankFeedResponse");
	struct msg *m = msg_new();
	struct fg_bufq out = { 0 };
	const char *why;
	size_t cap;
	long n, grow;
	int rc;

	put_hex(m, py[1].hex);
	for (n = 0;; n++) {
		assert_int_equal(fg_bufq_append(&out, "keep", 4), 0);
		realloc_fail_at = n;
		realloc_calls = 0;
		why = NULL;
		rc = fg_pbjson_write(&out, t.schema, t.type, m->b, m->n, &why);
		realloc_fail_at = -1;
		if (rc == 0)
			break;
		assert_int_equal(rc, FG_ENOMEM);
		assert_string_equal(why, "out of memory");
		assert_int_equal(fg_bufq_len(&out), 4);
		assert_memory_equal(fg_bufq_head(&out), "keep", 4);
		fg_bufq_free(&out);
	}
	/* one realloc per doubling from the 256 bytes "keep" took */
	assert_int_equal(fg_bufq_len(&out), 4 + strlen(py[1].json));
	for (cap = 256, grow = 0; cap < fg_bufq_len(&out); cap *= 2)
		grow++;
	assert_true(grow >= 1);
	assert_int_equal(n, grow);
	assert_int_equal(realloc_calls, grow);
	fg_bufq_free(&out);

	realloc_fail_at = 0;
	assert_int_equal(fg_pbjson_write_string(&out, (const uint8_t *)"a\n", 2), FG_ENOMEM);
	assert_int_equal(fg_bufq_len(&out), 0);
	realloc_fail_at = 0;
	assert_int_equal(fg_pbjson_write_base64(&out, (const uint8_t *)"ab", 2), FG_ENOMEM);
	realloc_fail_at = -1;
	assert_int_equal(fg_bufq_len(&out), 0);
	/* a length whose base64 does not fit in a size_t: refused before any read */
	assert_int_equal(fg_pbjson_write_base64(&out, (const uint8_t *)"", SIZE_MAX), FG_ENOMEM);
	assert_int_equal(fg_bufq_len(&out), 0);
	fg_bufq_free(&out);
	free(m);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_python),
		cmocka_unit_test(test_python_request_built),
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_last_one_wins),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_floats),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_helpers),
		cmocka_unit_test(test_repeated),
		cmocka_unit_test(test_maps),
		cmocka_unit_test(test_oneof),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_depth_map),
		cmocka_unit_test(test_wkt),
		cmocka_unit_test(test_wkt_calendar),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_far_field),
		cmocka_unit_test(test_groups),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_enomem),
	};
	const char *env = getenv("FG_RANKING_PB");

	if (argc > 1)
		ranking_pb = argv[1];
	else if (env && *env)
		ranking_pb = env;
	env = getenv("FG_PBJSON_TEST_PB");
	if (argc > 2)
		test_pb = argv[2];
	else if (env && *env)
		test_pb = env;
	return cmocka_run_group_tests_name("pbjson", tests, load_sets, free_sets);
}
