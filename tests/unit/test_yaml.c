/*
 * test_yaml.c - cmocka group "yaml": fg_yaml.h through its header.
 *
 * Positions are asserted node by node and messages whole: a schema built on
 * this reader can only point at the right line if every node starts where
 * an editor would put the cursor.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
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

#include "fg_error.h"
#include "fg_yaml.h"

#define NAME "y.yaml"
#define ERRLEN 512

/* The config's caps: generous enough that only the limit tests hit them. */
static const struct fg_yaml_limits roomy = { .max_bytes = 1 << 20, .max_depth = 16, .max_nodes = 10000 };

struct error_case {
	const char *yaml;
	const char *err;        /* the whole expected message */
};

static struct fg_yaml_node *parse_len(const char *yaml, size_t len)
{
	char err[ERRLEN] = "unset";
	struct fg_yaml_node *root = NULL;
	int rc = fg_yaml_parse(NAME, yaml, len, &roomy, &root, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(root);
	assert_string_equal(err, "unset");      /* success leaves <err> alone */
	assert_int_equal(root->kind, FG_YAML_MAP);
	assert_int_equal(root->nkids % 2, 0);
	return root;
}

static struct fg_yaml_node *parse(const char *yaml)
{
	return parse_len(yaml, strlen(yaml));
}

static void expect_error_lim(const char *yaml, size_t len, const struct fg_yaml_limits *lim,
                             const char *want)
{
	char err[ERRLEN] = "unset";
	struct fg_yaml_node *root = (struct fg_yaml_node *)&err;     /* must be reset to NULL */
	int rc = fg_yaml_parse(NAME, yaml, len, lim, &root, err, sizeof(err));

	assert_int_equal(rc, FG_ECONFIG);
	assert_null(root);
	assert_string_equal(err, want);
}

static void expect_errors(const struct error_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_error_lim(cases[i].yaml, strlen(cases[i].yaml), &roomy, cases[i].err);
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Kid <i> of <n>, which must exist. */
static const struct fg_yaml_node *kid(const struct fg_yaml_node *n, size_t i)
{
	assert_true(i < n->nkids);
	assert_non_null(n->kids[i]);
	return n->kids[i];
}

static void assert_scalar(const struct fg_yaml_node *n, unsigned line, unsigned col, const char *text)
{
	assert_int_equal(n->kind, FG_YAML_SCALAR);
	assert_int_equal(n->line, line);
	assert_int_equal(n->col, col);
	assert_int_equal(n->len, strlen(text));
	assert_string_equal(n->text, text);
	assert_int_equal(n->nkids, 0);
}

static void assert_coll(const struct fg_yaml_node *n, enum fg_yaml_kind kind, unsigned line,
                        unsigned col, size_t nkids)
{
	assert_int_equal(n->kind, kind);
	assert_int_equal(n->line, line);
	assert_int_equal(n->col, col);
	assert_int_equal(n->nkids, nkids);
	assert_null(n->text);
}

/* A scalar node built by hand, for the helpers that only read one. */
static struct fg_yaml_node scalar(const char *text, size_t len)
{
	struct fg_yaml_node n = { .kind = FG_YAML_SCALAR, .line = 1, .col = 1 };

	n.text = (char *)text;
	n.len = len;
	return n;
}

/* --- trees and positions ---------------------------------------------- */

static void test_block_positions(void **state)
{
	static const char yaml[] =
		"# comment\n"
		"server:\n"
		"  name: edge\n"
		"  ports:\n"
		"    - 80\n"
		"    - 443\n"
		"  routes:\n"
		"  - path: /a\n"
		"    weight: 2\n"
		"top: x\n"
		"empty:\n";
	struct fg_yaml_node *root = parse(yaml);
	const struct fg_yaml_node *server, *ports, *routes, *route;

	/* the root starts at its first key, not at the comment */
	assert_coll(root, FG_YAML_MAP, 2, 1, 6);
	assert_scalar(kid(root, 0), 2, 1, "server");
	server = kid(root, 1);
	assert_coll(server, FG_YAML_MAP, 3, 3, 6);
	assert_scalar(kid(server, 0), 3, 3, "name");
	assert_scalar(kid(server, 1), 3, 9, "edge");
	assert_scalar(kid(server, 2), 4, 3, "ports");
	ports = kid(server, 3);
	assert_coll(ports, FG_YAML_SEQ, 5, 5, 2);       /* at the first '-' */
	assert_scalar(kid(ports, 0), 5, 7, "80");
	assert_scalar(kid(ports, 1), 6, 7, "443");
	assert_scalar(kid(server, 4), 7, 3, "routes");
	routes = kid(server, 5);
	assert_coll(routes, FG_YAML_SEQ, 8, 3, 1);      /* a list not indented under its key */
	route = kid(routes, 0);
	assert_coll(route, FG_YAML_MAP, 8, 5, 4);
	assert_scalar(kid(route, 0), 8, 5, "path");
	assert_scalar(kid(route, 1), 8, 11, "/a");
	assert_scalar(kid(route, 2), 9, 5, "weight");
	assert_scalar(kid(route, 3), 9, 13, "2");
	assert_scalar(kid(root, 2), 10, 1, "top");
	assert_scalar(kid(root, 3), 10, 6, "x");
	assert_scalar(kid(root, 4), 11, 1, "empty");
	/* a missing value is an empty scalar just after the ':' */
	assert_scalar(kid(root, 5), 11, 7, "");
	assert_string_equal(fg_yaml_kind_name(kid(root, 5)), "an empty value");
	fg_yaml_free(root);
}

static void test_flow_positions(void **state)
{
	static const char yaml[] =
		"k: {a: 1,\n"
		"    b: [x,\n"
		"        y]}\n"
		"l: [\n"
		"  {c: d},\n"
		"  e\n"
		"]\n";
	struct fg_yaml_node *root = parse(yaml);
	const struct fg_yaml_node *k, *b, *l;

	assert_coll(root, FG_YAML_MAP, 1, 1, 4);
	assert_scalar(kid(root, 0), 1, 1, "k");
	k = kid(root, 1);
	assert_coll(k, FG_YAML_MAP, 1, 4, 4);           /* at the '{' */
	assert_scalar(kid(k, 0), 1, 5, "a");
	assert_scalar(kid(k, 1), 1, 8, "1");
	assert_scalar(kid(k, 2), 2, 5, "b");
	b = kid(k, 3);
	assert_coll(b, FG_YAML_SEQ, 2, 8, 2);
	assert_scalar(kid(b, 0), 2, 9, "x");
	assert_scalar(kid(b, 1), 3, 9, "y");
	assert_scalar(kid(root, 2), 4, 1, "l");
	l = kid(root, 3);
	assert_coll(l, FG_YAML_SEQ, 4, 4, 2);
	assert_coll(kid(l, 0), FG_YAML_MAP, 5, 3, 2);
	assert_scalar(kid(kid(l, 0), 0), 5, 4, "c");
	assert_scalar(kid(kid(l, 0), 1), 5, 7, "d");
	assert_scalar(kid(l, 1), 6, 3, "e");
	fg_yaml_free(root);
}

/* Multi-line scalars start at their indicator or quote; columns count
 * characters, so a two-byte letter moves the next column by one. */
static void test_scalar_styles(void **state)
{
	static const char yaml[] =
		"lit: |\n"
		"  one\n"
		"  two\n"
		"fold: >-\n"
		"  a\n"
		"  b\n"
		"dq: \"x\n"
		"  y\"\n"
		"sq: 'it''s'\n"
		"plain: multi\n"
		"  line\n"
		"nul: \"a\\0b\"\n"
		"\xc3\xa9: \xc3\xbc\n";
	struct fg_yaml_node *root = parse(yaml);
	const struct fg_yaml_node *nul;

	assert_int_equal(root->nkids, 14);
	assert_scalar(kid(root, 1), 1, 6, "one\ntwo\n");
	assert_scalar(kid(root, 3), 4, 7, "a b");
	assert_scalar(kid(root, 5), 7, 5, "x y");
	assert_scalar(kid(root, 7), 9, 5, "it's");
	assert_scalar(kid(root, 8), 10, 1, "plain");
	assert_scalar(kid(root, 9), 10, 8, "multi line");
	nul = kid(root, 11);
	assert_int_equal(nul->line, 12);
	assert_int_equal(nul->col, 6);
	assert_int_equal(nul->len, 3);
	assert_memory_equal(nul->text, "a\0b", 4);      /* NUL-terminated after <len> too */
	assert_scalar(kid(root, 12), 13, 1, "\xc3\xa9");
	assert_scalar(kid(root, 13), 13, 4, "\xc3\xbc");
	fg_yaml_free(root);
}

/* Keys are kept as written, duplicates included: the schema refuses them. */
static void test_duplicates_kept(void **state)
{
	struct fg_yaml_node *root = parse("a: 1\na: 2\n? b\n");

	assert_int_equal(root->nkids, 6);
	assert_scalar(kid(root, 0), 1, 1, "a");
	assert_scalar(kid(root, 2), 2, 1, "a");
	assert_scalar(kid(root, 4), 3, 3, "b");
	assert_scalar(kid(root, 5), 4, 1, "");
	fg_yaml_free(root);
}

static void test_empty_documents(void **state)
{
	static const char *const empty[] = {
		"", "\n\n\n", "# nothing but a comment\n", "---\n", "---\n...\n", "''\n", "{}",
		"%YAML 1.1\n---\n",
	};
	struct fg_yaml_node *root;

	for (size_t i = 0; i < NELEM(empty); i++) {
		root = parse(empty[i]);
		assert_coll(root, FG_YAML_MAP, 1, 1, 0);
		fg_yaml_free(root);
	}
	/* a NULL text of length 0 is an empty file too */
	root = parse_len(NULL, 0);
	assert_coll(root, FG_YAML_MAP, 1, 1, 0);
	fg_yaml_free(root);
}

/* --- errors ------------------------------------------------------------ */

static void test_root_not_mapping(void **state)
{
	static const struct error_case cases[] = {
		{ "- a\n", NAME ":1:1: the top level must be a mapping of keys, not a list" },
		{ "hello\n", NAME ":1:1: the top level must be a mapping of keys, not a single value" },
		{ "\n\n  [1]\n", NAME ":3:3: the top level must be a mapping of keys, not a list" },
		{ "---\n~\n", NAME ":2:1: the top level must be a mapping of keys, not a single value" },
	};

	expect_errors(cases, NELEM(cases));
}

static void test_keys_are_scalars(void **state)
{
	static const struct error_case cases[] = {
		{ "? [a]\n: 1\n", NAME ":1:3: a key must be a single value, not a list" },
		{ "{[a]: 1}", NAME ":1:2: a key must be a single value, not a list" },
		{ "a: 1\n{b: c}: 2\n", NAME ":2:1: a key must be a single value, not a mapping" },
		{ "x:\n  - {[n]: 1}\n", NAME ":2:6: a key must be a single value, not a list" },
	};

	expect_errors(cases, NELEM(cases));
}

static void test_refused_features(void **state)
{
	static const struct error_case cases[] = {
		{ "a: &x 1\n", NAME ":1:4: anchors (&name) are not supported" },
		{ "&r {a: 1}\n", NAME ":1:1: anchors (&name) are not supported" },
		{ "a: [1, &x 2]\n", NAME ":1:8: anchors (&name) are not supported" },
		{ "a: 1\nb: *x\n", NAME ":2:4: aliases (*name) are not supported" },
		{ "a: !t 1\n", NAME ":1:4: tags (!tag) are not supported" },
		{ "a:\n  b: !!seq [1]\n", NAME ":2:6: tags (!tag) are not supported" },
		{ "!!map {a: 1}\n", NAME ":1:1: tags (!tag) are not supported" },
		{ "a: 1\n---\nb: 2\n", NAME ":2:1: multiple documents are not supported" },
		{ "a: 1\n...\n---\n", NAME ":3:1: multiple documents are not supported" },
	};

	expect_errors(cases, NELEM(cases));
}

static void test_syntax_errors(void **state)
{
	static const struct error_case cases[] = {
		{ "a: [1, 2\n", NAME ":2:1: did not find expected ',' or ']' "
		  "(while parsing a flow sequence started at 1:4)" },
		{ "a:\n  b: 1\n c: 2\n", NAME ":3:2: did not find expected key "
		  "(while parsing a block mapping started at 1:1)" },
		/* reader errors come as a byte offset and still land on a column
		 * that counts characters: the e-acute is one */
		{ "a: \xff\n", NAME ":1:4: invalid leading UTF-8 octet" },
		{ "\xc3\xa9: \xff\n", NAME ":1:4: invalid leading UTF-8 octet" },
	};

	expect_errors(cases, NELEM(cases));
	expect_error_lim("a: 1\n\0", 6, &roomy, NAME ":2:1: control characters are not allowed");
}

static void test_limit_depth(void **state)
{
	static const struct fg_yaml_limits lim = { .max_bytes = 1024, .max_depth = 3, .max_nodes = 100 };
	struct fg_yaml_node *root = NULL;
	char err[ERRLEN];

	/* root 1, key and list 2, items 3 */
	assert_int_equal(fg_yaml_parse(NAME, "a: [[]]", 7, &lim, &root, err, sizeof(err)), 0);
	fg_yaml_free(root);
	expect_error_lim("a: [[1]]", 8, &lim, NAME ":1:6: nesting deeper than 3 levels");
	expect_error_lim("a:\n  b:\n    c: 1\n", 17, &lim, NAME ":3:5: nesting deeper than 3 levels");
}

static void test_limit_nodes(void **state)
{
	static const struct fg_yaml_limits lim = { .max_bytes = 1024, .max_depth = 16, .max_nodes = 5 };
	static const struct fg_yaml_limits none = { .max_bytes = 1024, .max_depth = 16, .max_nodes = 0 };
	struct fg_yaml_node *root = NULL;
	char err[ERRLEN];

	/* the root counts: root, a, 1, b, 2 */
	assert_int_equal(fg_yaml_parse(NAME, "a: 1\nb: 2\n", 10, &lim, &root, err, sizeof(err)), 0);
	fg_yaml_free(root);
	expect_error_lim("a: 1\nb: 2\nc: 3\n", 15, &lim, NAME ":3:1: more than 5 values");
	expect_error_lim("a: [1, 2, 3]\n", 13, &lim, NAME ":1:11: more than 5 values");
	/* the mapping that stands in for an empty file is not read, so not counted */
	assert_int_equal(fg_yaml_parse(NAME, "", 0, &none, &root, err, sizeof(err)), 0);
	fg_yaml_free(root);
	expect_error_lim("{}", 2, &none, NAME ":1:1: more than 0 values");
}

static void test_limit_bytes(void **state)
{
	static const struct fg_yaml_limits lim = { .max_bytes = 4, .max_depth = 16, .max_nodes = 100 };
	struct fg_yaml_node *root = NULL;
	char err[ERRLEN];

	assert_int_equal(fg_yaml_parse(NAME, "a: 1", 4, &lim, &root, err, sizeof(err)), 0);
	assert_scalar(kid(root, 1), 1, 4, "1");
	fg_yaml_free(root);
	expect_error_lim("a: 12", 5, &lim, NAME ":1:1: larger than 4 bytes");
	/* checked before libyaml sees a byte: even garbage gets the size message */
	expect_error_lim("\xff\xff\xff\xff\xff", 5, &lim, NAME ":1:1: larger than 4 bytes");
}

static void test_error_buffer(void **state)
{
	struct fg_yaml_node *root = NULL;
	char err[8] = "unset";

	assert_int_equal(fg_yaml_parse(NAME, "- a", 3, &roomy, &root, NULL, 0), FG_ECONFIG);
	assert_null(root);
	assert_int_equal(fg_yaml_parse(NAME, "- a", 3, &roomy, &root, err, 0), FG_ECONFIG);
	assert_string_equal(err, "unset");
	assert_int_equal(fg_yaml_parse(NAME, "- a", 3, &roomy, &root, err, sizeof(err)), FG_ECONFIG);
	assert_string_equal(err, "y.yaml:");
}

/* --- helpers ----------------------------------------------------------- */

static void test_map_get(void **state)
{
	static const char yaml[] = "a: 1\nb: [x]\nc: {d: e}\na: 2\n\"n\\0ul\": 3\n'': empty key\n";
	struct fg_yaml_node *root = parse(yaml);
	const struct fg_yaml_node *b, *c;

	assert_scalar(fg_yaml_map_get(root, "a"), 1, 4, "1");   /* the first of two */
	b = fg_yaml_map_get(root, "b");
	assert_coll(b, FG_YAML_SEQ, 2, 4, 1);
	c = fg_yaml_map_get(root, "c");
	assert_coll(c, FG_YAML_MAP, 3, 4, 2);
	assert_scalar(fg_yaml_map_get(c, "d"), 3, 8, "e");
	assert_scalar(fg_yaml_map_get(root, ""), 6, 5, "empty key");
	assert_null(fg_yaml_map_get(root, "zz"));
	assert_null(fg_yaml_map_get(root, "d"));        /* not searched below the top */
	assert_null(fg_yaml_map_get(root, "n"));        /* "n\0ul" is not "n" */
	assert_null(fg_yaml_map_get(root, "1"));        /* values are not keys */
	assert_null(fg_yaml_map_get(b, "x"));           /* a list has no keys */
	assert_null(fg_yaml_map_get(kid(root, 1), "1"));
	assert_null(fg_yaml_map_get(NULL, "a"));
	fg_yaml_free(root);
}

static void expect_show(const char *text, size_t len, size_t buflen, const char *want)
{
	struct fg_yaml_node n = scalar(text, len);
	char buf[FG_YAML_SHOWLEN + 16];

	assert_true(buflen <= sizeof(buf));
	memset(buf, 'x', sizeof(buf));
	assert_ptr_equal(fg_yaml_show(&n, buf, buflen), buf);
	assert_string_equal(buf, want);
	assert_true(strlen(buf) < buflen);
}

static void test_show(void **state)
{
	char a48[49], a49[50], cut[64], want[64];
	struct fg_yaml_node seq = { .kind = FG_YAML_SEQ, .line = 1, .col = 1 };
	char buf[4] = "xyz";

	expect_show("abc", 3, FG_YAML_SHOWLEN, "abc");
	expect_show("", 0, FG_YAML_SHOWLEN, "");
	/* nothing that could end the quote or start a new log line */
	expect_show("a\tb\nc\x7f'd\"\x1b[0m", 13, FG_YAML_SHOWLEN, "a?b?c??d\"?[0m");
	expect_show("a\0b", 3, FG_YAML_SHOWLEN, "a?b");
	/* UTF-8 passes through whole */
	expect_show("caf\xc3\xa9", 5, FG_YAML_SHOWLEN, "caf\xc3\xa9");

	/* 48 bytes fit; 49 are cut to 48 and marked */
	memset(a48, 'a', 48);
	a48[48] = '\0';
	expect_show(a48, 48, FG_YAML_SHOWLEN, a48);
	memset(a49, 'a', 49);
	a49[49] = '\0';
	snprintf(want, sizeof(want), "%s...", a48);
	expect_show(a49, 49, FG_YAML_SHOWLEN, want);

	/* never inside a character: bytes 47-48 are the e-acute, so cut at 47 */
	memset(cut, 'a', 47);
	memcpy(cut + 47, "\xc3\xa9zzz", 6);
	snprintf(want, sizeof(want), "%.47s...", cut);
	expect_show(cut, 52, FG_YAML_SHOWLEN, want);
	/* bytes 46-47: the whole character fits */
	memset(cut, 'a', 46);
	memcpy(cut + 46, "\xc3\xa9zzz", 6);
	snprintf(want, sizeof(want), "%.48s...", cut);
	expect_show(cut, 51, FG_YAML_SHOWLEN, want);
	/* a four-byte character at 45-48 goes whole */
	memset(cut, 'a', 45);
	memcpy(cut + 45, "\xf0\x9f\x98\x80z", 6);
	snprintf(want, sizeof(want), "%.45s...", cut);
	expect_show(cut, 50, FG_YAML_SHOWLEN, want);

	/* a small buffer cuts sooner, still on a boundary */
	expect_show("abcdefgh", 8, 8, "abcd...");
	expect_show("abc", 3, 8, "abc");
	expect_show("a\xc3\xa9" "b", 4, 6, "a...");
	expect_show("\xc3\xa9\xc3\xa9", 4, 6, "\xc3\xa9...");
	expect_show("abc", 3, 4, "...");
	expect_show("abc", 3, 3, "");
	assert_ptr_equal(fg_yaml_show(&seq, buf, 0), buf);
	assert_string_equal(buf, "xyz");                /* nothing written */

	/* a list or mapping has no text to show */
	assert_string_equal(fg_yaml_show(&seq, buf, sizeof(buf)), "");
}

static void test_kind_name(void **state)
{
	struct fg_yaml_node seq = { .kind = FG_YAML_SEQ }, map = { .kind = FG_YAML_MAP };
	struct fg_yaml_node one = scalar("1", 1), none = scalar("", 0);

	assert_string_equal(fg_yaml_kind_name(&seq), "a list");
	assert_string_equal(fg_yaml_kind_name(&map), "a mapping");
	assert_string_equal(fg_yaml_kind_name(&one), "a single value");
	assert_string_equal(fg_yaml_kind_name(&none), "an empty value");
}

static int vfail(char *err, size_t errlen, const struct fg_yaml_node *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int vfail(char *err, size_t errlen, const struct fg_yaml_node *at, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = fg_yaml_vfail(err, errlen, "f.yaml", at, fmt, ap);
	va_end(ap);
	return rc;
}

static void test_fail(void **state)
{
	struct fg_yaml_node at = { .kind = FG_YAML_SCALAR, .line = 3, .col = 7 };
	char err[ERRLEN], small[10] = "unset";

	assert_int_equal(fg_yaml_fail(err, sizeof(err), "f.yaml", &at, "bad %s %d", "x", 5), FG_ECONFIG);
	assert_string_equal(err, "f.yaml:3:7: bad x 5");
	assert_int_equal(vfail(err, sizeof(err), &at, "also %s", "bad"), FG_ECONFIG);
	assert_string_equal(err, "f.yaml:3:7: also bad");
	assert_int_equal(fg_yaml_fail(small, sizeof(small), "f.yaml", &at, "long message"), FG_ECONFIG);
	assert_string_equal(small, "f.yaml:3:");
	assert_int_equal(fg_yaml_fail(NULL, 0, "f.yaml", &at, "nowhere"), FG_ECONFIG);
	strcpy(small, "unset");
	assert_int_equal(fg_yaml_fail(small, 0, "f.yaml", &at, "nowhere"), FG_ECONFIG);
	assert_string_equal(small, "unset");
}

static void expect_resolve(const char *base, const char *rel, const char *want)
{
	char *p = fg_yaml_path_resolve(base, rel);

	assert_non_null(p);
	assert_string_equal(p, want);
	free(p);
}

static void test_path_resolve(void **state)
{
	char cwd[4096], want[4200];

	expect_resolve("/etc/fg", "a.yaml", "/etc/fg/a.yaml");
	expect_resolve("/etc/fg/", "a.yaml", "/etc/fg/a.yaml");
	expect_resolve("/etc/fg", "sub/a.yaml", "/etc/fg/sub/a.yaml");
	expect_resolve("/etc/fg", "./a.yaml", "/etc/fg/a.yaml");
	expect_resolve("/etc/fg", "././a.yaml", "/etc/fg/a.yaml");
	expect_resolve("/etc/fg", "/var/a.yaml", "/var/a.yaml");
	expect_resolve("/etc/fg", ".//var/a", "/var/a");
	expect_resolve("/", "a.yaml", "/a.yaml");
	/* only leading "./" goes: ".." and doubled slashes stay as written */
	expect_resolve("/etc/fg", "../a.yaml", "/etc/fg/../a.yaml");
	expect_resolve("/etc/fg", "a//b", "/etc/fg/a//b");
	expect_resolve(NULL, "/a.yaml", "/a.yaml");

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s/a.yaml", cwd);
	expect_resolve(NULL, "a.yaml", want);
	expect_resolve(NULL, "./a.yaml", want);
	snprintf(want, sizeof(want), "%s/conf/a.yaml", cwd);
	expect_resolve("conf", "a.yaml", want);
}

static void expect_dirname(const char *path, const char *want)
{
	char *d = fg_yaml_path_dirname(path);

	assert_non_null(d);
	assert_string_equal(d, want);
	free(d);
}

static void test_path_dirname(void **state)
{
	expect_dirname("/etc/fg/a.yaml", "/etc/fg");
	expect_dirname("/a.yaml", "/");
	expect_dirname("/", "/");
	expect_dirname("/etc/fg/", "/etc/fg");
}

static void test_free_null(void **state)
{
	fg_yaml_free(NULL);
}

/* --- files -------------------------------------------------------------- */

static int dir_setup(void **state)
{
	return fg_test_dir_new(state, "f.yaml");
}

static int dir_teardown(void **state)
{
	return fg_test_dir_free(state);
}

/* Read <path> with cap <max> and check it gave the first <want> bytes of <data>. */
static void expect_read(const char *path, size_t max, const char *data, size_t want)
{
	char err[ERRLEN] = "unset", *text = NULL;
	size_t len = 12345;

	assert_int_equal(fg_yaml_read_file(path, max, &text, &len, err, sizeof(err)), 0);
	assert_string_equal(err, "unset");
	assert_non_null(text);
	assert_int_equal(len, want);
	assert_memory_equal(text, data, want);
	assert_int_equal(text[len], '\0');
	free(text);
}

static void test_read_file(void **state)
{
	const struct fg_test_dir *d = *state;
	size_t big = 10000;
	char *data = malloc(big);

	assert_non_null(data);
	for (size_t i = 0; i < big; i++)
		data[i] = (char)('a' + i % 26);
	fg_test_write_file(d->file, "a: 1\n", 5);
	expect_read(d->file, 100, "a: 1\n", 5);
	fg_test_write_file(d->file, "", 0);
	expect_read(d->file, 100, "", 0);
	/* larger than the first buffer: it grows, up to one byte past the cap */
	fg_test_write_file(d->file, data, big);
	expect_read(d->file, 1 << 20, data, big);
	expect_read(d->file, big, data, big);
	expect_read(d->file, big - 1, data, big);
	expect_read(d->file, 8191, data, 8192);
	expect_read(d->file, 5000, data, 5001);
	expect_read(d->file, 4, data, 5);
	expect_read(d->file, 0, data, 1);
	free(data);
}

/* A file read with the parser's cap is refused by the parser, not cut. */
static void test_read_then_parse(void **state)
{
	static const struct fg_yaml_limits lim = { .max_bytes = 8, .max_depth = 16, .max_nodes = 100 };
	const struct fg_test_dir *d = *state;
	char err[ERRLEN], *text, want[256];
	struct fg_yaml_node *root;
	size_t len;

	fg_test_write_file(d->file, "a: 1\nb: 2\n", 10);
	assert_int_equal(fg_yaml_read_file(d->file, lim.max_bytes, &text, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 9);
	assert_int_equal(fg_yaml_parse(d->file, text, len, &lim, &root, err, sizeof(err)), FG_ECONFIG);
	snprintf(want, sizeof(want), "%s:1:1: larger than 8 bytes", d->file);
	assert_string_equal(err, want);
	free(text);
}

static void test_read_file_errors(void **state)
{
	const struct fg_test_dir *d = *state;
	char err[ERRLEN], want[512], missing[128], *text = (char *)&err;
	size_t len = 12345;

	snprintf(missing, sizeof(missing), "%s/missing.yaml", d->path);
	assert_int_equal(fg_yaml_read_file(missing, 100, &text, &len, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, ENOENT);
	assert_null(text);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", missing);
	assert_string_equal(err, want);

	text = (char *)&err;
	assert_int_equal(fg_yaml_read_file(d->path, 100, &text, &len, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, EINVAL);
	assert_null(text);
	snprintf(want, sizeof(want), "%s: cannot open: not a regular file (a FIFO, a socket, a device or a directory)", d->path);
	assert_string_equal(err, want);

	assert_int_equal(fg_yaml_read_file(missing, 100, &text, &len, NULL, 0), FG_EIO);
	assert_int_equal(errno, ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_block_positions),
		cmocka_unit_test(test_flow_positions),
		cmocka_unit_test(test_scalar_styles),
		cmocka_unit_test(test_duplicates_kept),
		cmocka_unit_test(test_empty_documents),
		cmocka_unit_test(test_root_not_mapping),
		cmocka_unit_test(test_keys_are_scalars),
		cmocka_unit_test(test_refused_features),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_limit_depth),
		cmocka_unit_test(test_limit_nodes),
		cmocka_unit_test(test_limit_bytes),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_map_get),
		cmocka_unit_test(test_show),
		cmocka_unit_test(test_kind_name),
		cmocka_unit_test(test_fail),
		cmocka_unit_test(test_path_resolve),
		cmocka_unit_test(test_path_dirname),
		cmocka_unit_test(test_free_null),
		cmocka_unit_test_setup_teardown(test_read_file, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_read_then_parse, dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_read_file_errors, dir_setup, dir_teardown),
	};

	return cmocka_run_group_tests_name("yaml", tests, NULL, NULL);
}
