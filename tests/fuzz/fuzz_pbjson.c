/*
 * fuzz_pbjson.c - libFuzzer target for the JSON rendering of messages
 * (fg_pbjson), against the reference contract's descriptor set.
 *
 * Input: a message, rendered as a RankFeedResponse and as a
 * RankFeedRequest of the build's proto/ranking.pb (found through
 * FG_RANKING_PB, which tests/fuzz/run.sh exports, or the path baked in with
 * -DFG_FUZZ_RANKING_PB=\"<build dir>/proto/ranking.pb\"; without either
 * the target stops at start-up), and, when FG_PBJSON_TEST_PB names the
 * build's tests/unit/pbjson_test.pb (run.sh exports that too), as its
 * Scalars, Repeated and Legacy, which hold every scalar type, every map key
 * kind, a oneof, Timestamp, Duration and groups.
 *
 * Besides "no crash, no leak, no UB" (the sanitizers), it checks what
 * fg_pbjson.h promises that a fuzzer can see:
 *   - success appends exactly one JSON value (RFC 8259 grammar, checked
 *     here by a parser of its own), an object, in valid UTF-8 with no
 *     control byte (so no newline), after the bytes the queue held;
 *   - the same input renders to the same bytes again (deterministic);
 *   - failure is FG_EINVAL or FG_ETOOBIG with a reason (FG_ENOMEM is
 *     allowed: libFuzzer may cap allocations), and leaves the queue as it
 *     was;
 *   - a message that renders is one fg_pbwire_next_field() walks to its
 *     end;
 *   - fg_pbjson_write_string() and fg_pbjson_write_base64() turn the raw
 *     input into one valid JSON string.
 *
 * Build and run: FG_BUILD_DIR=<build dir> tests/fuzz/run.sh 60 pbjson.  By
 * hand (descriptor.pb-c.c is generated in the build directory):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -Idaemon -I<dir of config.h> \
 *     -I<build>/daemon -DFG_FUZZ_RANKING_PB=\"<build>/proto/ranking.pb\" tests/fuzz/fuzz_pbjson.c \
 *     daemon/fg_pbjson.c daemon/fg_pbwire.c daemon/fg_bufq.c daemon/fg_schema.c \
 *     <build>/daemon/descriptor.pb-c.c -lprotobuf-c -lm
 *   ./fuzz_pbjson -max_total_time=120 new_corpus_dir tests/fuzz/corpus/pbjson
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_bufq.h"
#include "fg_error.h"
#include "fg_pbjson.h"
#include "fg_pbwire.h"
#include "fg_schema.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "{\"line\":"             /* what the dump tool writes before a message */
#define PREFIX_LEN (sizeof(PREFIX) - 1)
#define MAX_TYPES 5
/* Deeper than fg_pbjson ever nests: each message level is an object, and
 * at most an array or a map object more. */
#define JSON_DEPTH_MAX (3 * FG_PBJSON_MAX_DEPTH + 8)

struct typed {
	const struct fg_schema *schema;
	const struct fg_schema_message *type;
};

static struct fg_schema *ranking, *test_set;
static struct typed types[MAX_TYPES];
static size_t ntypes;

static void check(int ok)
{
	if (!ok)
		abort();
}

/* ---- start-up ---- */

static struct fg_schema *load(const char *path, int required)
{
	struct fg_schema *s = NULL;
	char err[FG_SCHEMA_ERRLEN];

	if (path && *path && fg_schema_load(path, &s, err, sizeof(err)) == 0)
		return s;
	if (required) {
		fprintf(stderr, "fuzz_pbjson: set FG_RANKING_PB to the build's proto/ranking.pb (%s)\n",
		        path ? path : "unset");
		exit(2);
	}
	return NULL;
}

static void add_type(const struct fg_schema *s, const char *name)
{
	const struct fg_schema_message *m = fg_schema_find_message(s, name);

	check(m != NULL && ntypes < MAX_TYPES);
	types[ntypes].schema = s;
	types[ntypes++].type = m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *pb = getenv("FG_RANKING_PB");

	(void)argc;
	(void)argv;
#ifdef FG_FUZZ_RANKING_PB
	if (!pb || !*pb)
		pb = FG_FUZZ_RANKING_PB;
#endif
	ranking = load(pb, 1);
	add_type(ranking, "feedguard.ranking.v1.RankFeedResponse");
	add_type(ranking, "feedguard.ranking.v1.RankFeedRequest");
	test_set = load(getenv("FG_PBJSON_TEST_PB"), 0);
	if (test_set) {
		add_type(test_set, "feedguard.test.pbjson.Scalars");
		add_type(test_set, "feedguard.test.pbjson.Repeated");
		add_type(test_set, "feedguard.test.pbjson2.Legacy");
	}
	return 0;
}

/* ---- a strict JSON parser (RFC 8259), no whitespace allowed ---- */

struct json {
	const uint8_t *p, *end;
	unsigned depth;
};

static int json_value(struct json *j);

static int json_lit(struct json *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

static int json_digits(struct json *j)
{
	const uint8_t *s = j->p;

	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s ? 0 : -1;
}

static int json_number(struct json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (j->p >= j->end || *j->p < '1' || *j->p > '9' || json_digits(j) < 0)
		return -1;
	if (j->p < j->end && *j->p == '.' && (j->p++, json_digits(j) < 0))
		return -1;
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		return json_digits(j);
	}
	return 0;
}

static int json_string(struct json *j)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	size_t k;

	if (json_lit(j, "\"") < 0)
		return -1;
	while (j->p < j->end && *j->p != '"') {
		if (*j->p < 0x20)
			return -1;
		if (*j->p++ != '\\')
			continue;
		if (j->p >= j->end)
			return -1;
		if (*j->p == 'u') {
			for (k = 1; k <= 4; k++)
				if (j->p + k >= j->end || !memchr(hex, j->p[k], sizeof(hex) - 1))
					return -1;
			j->p += 5;
		} else if (*j->p && strchr("\"\\/bfnrt", *j->p)) {
			j->p++;
		} else {
			return -1;
		}
	}
	return json_lit(j, "\"");
}

/* An object (<close> '}') or array (']'): values, members "key":value. */
static int json_list(struct json *j, char close)
{
	int rc = 0;

	j->p++;
	if (++j->depth > JSON_DEPTH_MAX)
		return -1;
	if (j->p < j->end && *j->p == close)
		goto out;
	for (;;) {
		if (close == '}' && (json_string(j) < 0 || json_lit(j, ":") < 0))
			return -1;
		if (json_value(j) < 0)
			return -1;
		if (j->p >= j->end || *j->p != ',')
			break;
		j->p++;
	}
	if (j->p >= j->end || *j->p != close)
		rc = -1;
out:
	j->p++;
	j->depth--;
	return rc;
}

static int json_value(struct json *j)
{
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '{':
		return json_list(j, '}');
	case '[':
		return json_list(j, ']');
	case '"':
		return json_string(j);
	case 't':
		return json_lit(j, "true");
	case 'f':
		return json_lit(j, "false");
	case 'n':
		return json_lit(j, "null");
	default:
		return json_number(j);
	}
}

/* Valid UTF-8 (RFC 3629) and no control byte at all. */
static void check_utf8(const uint8_t *p, size_t n)
{
	size_t i = 0, k, len;

	while (i < n) {
		check(p[i] >= 0x20);
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		check(p[i] >= 0xc2 && p[i] <= 0xf4);
		len = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : 2;
		check(i + len <= n);
		for (k = 1; k < len; k++)
			check((p[i + k] & 0xc0) == 0x80);
		check(!(p[i] == 0xe0 && p[i + 1] < 0xa0) && !(p[i] == 0xed && p[i + 1] > 0x9f));
		check(!(p[i] == 0xf0 && p[i + 1] < 0x90) && !(p[i] == 0xf4 && p[i + 1] > 0x8f));
		i += len;
	}
}

/* <p>[0 .. <n>) is exactly one JSON value starting with <first>. */
static void check_json(const uint8_t *p, size_t n, char first)
{
	struct json j = { .p = p, .end = p + n };

	check(n > 0 && p[0] == (uint8_t)first);
	check_utf8(p, n);
	check(json_value(&j) == 0 && j.p == j.end && j.depth == 0);
}

/* ---- the target ---- */

/* The message walks to its end at the top level, as fg_pbjson read it. */
static void check_walks(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	struct fg_pbwire_field f;

	while (p < end)
		check(fg_pbwire_next_field(&p, end, &f) == 0);
}

static void render(const struct typed *t, const uint8_t *data, size_t size, struct fg_bufq *out,
                   struct fg_bufq *again)
{
	const char *why = NULL;
	int rc;

	fg_bufq_truncate(out, 0);
	check(fg_bufq_append(out, "#" PREFIX, PREFIX_LEN + 1) == 0);
	fg_bufq_consume(out, 1);
	rc = fg_pbjson_write(out, t->schema, t->type, size ? data : NULL, size, &why);
	check(fg_bufq_len(out) >= PREFIX_LEN && memcmp(fg_bufq_head(out), PREFIX, PREFIX_LEN) == 0);
	if (rc < 0) {
		check(rc == FG_EINVAL || rc == FG_ETOOBIG || rc == FG_ENOMEM);
		check(why != NULL && fg_bufq_len(out) == PREFIX_LEN);
		return;
	}
	check(rc == 0);
	check_json(fg_bufq_head(out) + PREFIX_LEN, fg_bufq_len(out) - PREFIX_LEN, '{');
	check_walks(data, size);
	fg_bufq_truncate(again, 0);
	if (fg_pbjson_write(again, t->schema, t->type, size ? data : NULL, size, NULL) == FG_ENOMEM)
		return;
	check(fg_bufq_len(again) == fg_bufq_len(out) - PREFIX_LEN);
	check(memcmp(fg_bufq_head(again), fg_bufq_head(out) + PREFIX_LEN, fg_bufq_len(again)) == 0);
}

static void helpers(const uint8_t *data, size_t size, struct fg_bufq *out)
{
	fg_bufq_truncate(out, 0);
	if (fg_pbjson_write_string(out, size ? data : NULL, size) == 0)
		check_json(fg_bufq_head(out), fg_bufq_len(out), '"');
	fg_bufq_truncate(out, 0);
	if (fg_pbjson_write_base64(out, size ? data : NULL, size) == 0) {
		check(fg_bufq_len(out) == (size + 2) / 3 * 4 + 2);
		check_json(fg_bufq_head(out), fg_bufq_len(out), '"');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_bufq out = { 0 }, again = { 0 };
	size_t i;

	for (i = 0; i < ntypes; i++)
		render(&types[i], data, size, &out, &again);
	helpers(data, size, &out);
	fg_bufq_free(&out);
	fg_bufq_free(&again);
	return 0;
}
