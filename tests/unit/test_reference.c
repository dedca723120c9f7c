/*
 * test_reference.c - cmocka group "reference": README.md's reference
 * tables against the keys the config loader and the policy compiler
 * accept, through fg_config_keys_each (fg_config.h) and
 * fg_policy_compile_keys_each (fg_policy_compile.h).  The man pages
 * feedguard.yaml(5) and feedguard-policy(5) are generated from those
 * tables (contrib/man/mkman.py), so this is what keeps the parsers, the
 * README and the man pages saying the same thing: a key a parser accepts
 * and no table lists, or a row naming a key no parser accepts, fails
 * `make check` with the key's name.
 *
 * A reference table is the pipe table after a line `<!-- keys config -->`
 * or `<!-- keys policy PREFIX -->` (blank lines between).  The first cell
 * of each row names keys in code spans: the first is a path below PREFIX
 * ("upstream.address", "daily.cap"); a later one without '.' or '[' is a
 * sibling of the first ("`upstream.backoff_initial` / `backoff_max`"),
 * any other a path below PREFIX too.  A config key whose value is a
 * mapping of keys (upstream) needs no row of its own; every other key does.
 *
 * README.md is read from $FG_SRCDIR (set by `make check`), else from the
 * source tree this file was compiled from.
 */
#include "config.h"

#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fg_config.h"
#include "fg_policy_compile.h"

/* Longest key path, README prefix included. */
#define PATH_LEN 256

/* One key: from a parser's list, or from a README row. */
struct key {
	char path[PATH_LEN];
	unsigned flags;         /* the parser's flags; 0 for a README key */
	const char *row;        /* README: the row's line (in the README's text), else NULL */
	int line;               /* README: its line number */
};

struct keys {
	struct key *v;
	size_t n, cap;
};

static const char *srcdir;

/* --- lists ----------------------------------------------------------------- */

static void keys_add(struct keys *k, const char *path, unsigned flags, const char *row, int line)
{
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 64;
		k->v = realloc(k->v, k->cap * sizeof(*k->v));
		assert_non_null(k->v);
	}
	assert_true(strlen(path) < PATH_LEN);
	snprintf(k->v[k->n].path, PATH_LEN, "%s", path);
	k->v[k->n].flags = flags;
	k->v[k->n].row = row;
	k->v[k->n].line = line;
	k->n++;
}

/* The first key of <k> (its first <upto> entries) named <path>, or NULL. */
static const struct key *keys_find(const struct keys *k, size_t upto, const char *path)
{
	for (size_t i = 0; i < upto && i < k->n; i++)
		if (strcmp(k->v[i].path, path) == 0)
			return &k->v[i];
	return NULL;
}

static void collect(const char *path, unsigned flags, void *arg)
{
	keys_add(arg, path, flags, NULL, 0);
}

/* --- README.md ------------------------------------------------------------- */

static char *read_readme(void)
{
	char path[PATH_MAX];
	const char *slash = strrchr(__FILE__, '/');
	size_t len = 0, got;
	char *text = NULL;
	FILE *f;

	if (srcdir)
		snprintf(path, sizeof(path), "%s/README.md", srcdir);
	else
		snprintf(path, sizeof(path), "%.*s/../../README.md", slash ? (int)(slash - __FILE__) : 1,
		         slash ? __FILE__ : ".");
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s (set FG_SRCDIR to the source tree)", path);
	do {
		text = realloc(text, len + 65536 + 1);
		assert_non_null(text);
		got = fread(text + len, 1, 65536, f);
		len += got;
	} while (got > 0);
	fclose(f);
	text[len] = '\0';
	return text;
}

/* Copy the code span starting after the backtick at <s> into <out>;
 * returns the byte after its closing backtick, or NULL. */
static const char *code_span(const char *s, const char *end, char *out, size_t outlen)
{
	const char *close = memchr(s, '`', (size_t)(end - s));

	if (!close || (size_t)(close - s) >= outlen)
		return NULL;
	memcpy(out, s, (size_t)(close - s));
	out[close - s] = '\0';
	return close + 1;
}

/* The keys named by the first cell of table row <row> (a line starting
 * with '|'), below <prefix>, into <k>. */
static void row_keys(struct keys *k, const char *prefix, const char *row, int line)
{
	const char *end = strchr(row + 1, '|'), *p = row + 1, *dot;
	char span[PATH_LEN / 2], first[PATH_LEN / 2] = "", key[PATH_LEN], path[2 * PATH_LEN];

	assert_non_null(end);
	while ((p = memchr(p, '`', (size_t)(end - p))) && (p = code_span(p + 1, end, span, sizeof(span)))) {
		if (first[0] && !strpbrk(span, ".[") && (dot = strrchr(first, '.')))
			snprintf(key, sizeof(key), "%.*s.%s", (int)(dot - first), first, span);   /* a sibling */
		else
			snprintf(key, sizeof(key), "%s", span);
		if (!first[0])
			snprintf(first, sizeof(first), "%s", span);
		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", key);
		keys_add(k, path, 0, row, line);
	}
}

/* The rows of the table that starts at <p> (after blank lines), below
 * <prefix>, into <k>; returns where the table ends. */
static const char *table_keys(struct keys *k, const char *prefix, const char *p, int *line)
{
	int row = 0;

	while (*p == '\n') {
		p++;
		(*line)++;
	}
	for (; *p == '|'; row++) {
		const char *eol = strchr(p, '\n');
		if (row >= 2)   /* after the header and its |---| line */
			row_keys(k, prefix, p, *line);
		p = eol ? eol + 1 : p + strlen(p);
		(*line)++;
	}
	return p;
}

/* Every reference table of <kind> ("config", "policy") in README <text>
 * into <k>; returns how many tables. */
static int readme_keys(const char *text, const char *kind, struct keys *k)
{
	char marker[64], prefix[PATH_LEN];
	const char *p = text, *eol, *q, *close;
	int line = 1, tables = 0;
	size_t n;

	n = (size_t)snprintf(marker, sizeof(marker), "<!-- keys %s", kind);
	while (*p) {
		eol = strchr(p, '\n');
		if (!eol)
			break;
		if (strncmp(p, marker, n) == 0 && (p[n] == ' ' || p[n] == '-')) {
			close = strstr(p + n, "-->");
			assert_true(close && close < eol);
			for (q = p + n; *q == ' '; q++)
				;
			snprintf(prefix, sizeof(prefix), "%.*s", (int)(close - q), q);
			for (size_t i = strlen(prefix); i > 0 && prefix[i - 1] == ' '; i--)
				prefix[i - 1] = '\0';
			line++;
			p = table_keys(k, prefix, eol + 1, &line);
			tables++;
			continue;
		}
		p = eol + 1;
		line++;
	}
	return tables;
}

/* The README's line <row>, for messages. */
static int row_says(const struct key *r, const char *what)
{
	const char *eol = strchr(r->row, '\n');
	size_t n = eol ? (size_t)(eol - r->row) : strlen(r->row), w = strlen(what);

	for (size_t i = 0; i + w <= n; i++)
		if (memcmp(r->row + i, what, w) == 0)
			return 1;
	return 0;
}

/*
 * Compare <parser>'s keys (those without <optional> in their flags must
 * have a row) with the README's <readme>, both ways; print each
 * difference naming <who>, and return how many.
 */
static int compare(const struct keys *parser, unsigned optional, const struct keys *readme, const char *who,
                   const char *kind)
{
	int bad = 0;

	for (size_t i = 0; i < parser->n; i++) {
		if ((parser->v[i].flags & optional) || keys_find(readme, readme->n, parser->v[i].path))
			continue;
		fprintf(stderr, "test_reference: %s accepts '%s', which no reference table of README.md lists "
		        "(add a row to a table after <!-- keys %s ... -->)\n", who, parser->v[i].path, kind);
		bad++;
	}
	for (size_t i = 0; i < readme->n; i++) {
		if (keys_find(parser, parser->n, readme->v[i].path))
			continue;
		fprintf(stderr, "test_reference: README.md:%d lists '%s', which %s does not accept\n",
		        readme->v[i].line, readme->v[i].path, who);
		bad++;
	}
	return bad;
}

/* --- tests ----------------------------------------------------------------- */

static void test_config_keys_documented(void **state)
{
	struct keys parser = { 0 }, readme = { 0 };
	char *text = read_readme();

	(void)state;
	fg_config_keys_each(collect, &parser);
	assert_true(readme_keys(text, "config", &readme) >= 3);     /* the reference, state, capture */
	assert_int_equal(compare(&parser, FG_CONFIG_KEY_SECTION, &readme, "the config loader", "config"), 0);
	free(parser.v);
	free(readme.v);
	free(text);
}

static void test_policy_keys_documented(void **state)
{
	struct keys parser = { 0 }, readme = { 0 };
	char *text = read_readme();
	int bad;

	(void)state;
	fg_policy_compile_keys_each(collect, &parser);
	assert_true(readme_keys(text, "policy", &readme) >= 6);
	bad = compare(&parser, 0, &readme, "the policy compiler", "policy");
	/* a key one direction only takes says so in its row */
	for (size_t i = 0; i < parser.n; i++) {
		const struct key *r = keys_find(&readme, readme.n, parser.v[i].path);
		const char *says = (parser.v[i].flags & FG_POLICY_COMPILE_KEY_REQUEST) ? "requests only"
		                   : (parser.v[i].flags & FG_POLICY_COMPILE_KEY_RESPONSE) ? "responses only" : NULL;
		if (r && says && !row_says(r, says)) {
			fprintf(stderr, "test_reference: README.md:%d: '%s' is for %s: its row must say so\n", r->line,
			        r->path, says);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
	free(parser.v);
	free(readme.v);
	free(text);
}

/* Config: each key once, a dotted one after its section (a mapping). */
static void test_config_keys_shape(void **state)
{
	struct keys k = { 0 };

	(void)state;
	fg_config_keys_each(collect, &k);
	assert_true(k.n > 40);
	assert_non_null(keys_find(&k, k.n, "upstream.connect_timeout"));
	assert_int_equal(keys_find(&k, k.n, "upstream")->flags, FG_CONFIG_KEY_SECTION);
	assert_int_equal(keys_find(&k, k.n, "listen")->flags, 0);
	for (size_t i = 0; i < k.n; i++) {
		const char *dot = strchr(k.v[i].path, '.');
		char section[PATH_LEN];
		const struct key *s;

		assert_ptr_equal(keys_find(&k, k.n, k.v[i].path), &k.v[i]);
		if (!dot)
			continue;
		snprintf(section, sizeof(section), "%.*s", (int)(dot - k.v[i].path), k.v[i].path);
		s = keys_find(&k, i, section);
		assert_non_null(s);
		assert_int_equal(s->flags, FG_CONFIG_KEY_SECTION);
	}
	free(k.v);
}

/* The key a policy key sits under, in <out>; 0 for a top-level key. */
static int policy_parent(const char *path, char *out, size_t outlen)
{
	const char *dot = strrchr(path, '.');
	size_t n;

	if (!dot)
		return 0;
	snprintf(out, outlen, "%.*s", (int)(dot - path), path);
	n = strlen(out);
	if (n >= 2 && strcmp(out + n - 2, "[]") == 0)
		out[n -= 2] = '\0';
	if (n >= 9 && strcmp(out + n - 9, ".<method>") == 0)
		out[n -= 9] = '\0';
	/* <direction> stands for request and response, both keys themselves */
	if (n >= 12 && strcmp(out + n - 12, ".<direction>") == 0)
		snprintf(out + n - 12, outlen - (n - 12), ".request");
	return 1;
}

/* Policy: each key once, after the key it sits under; the paths follow
 * fg_policy_compile.h's convention. */
static void test_policy_keys_shape(void **state)
{
	struct keys k = { 0 };
	char parent[PATH_LEN];

	(void)state;
	fg_policy_compile_keys_each(collect, &k);
	assert_non_null(keys_find(&k, k.n, "descriptor_set"));
	assert_non_null(keys_find(&k, k.n, "bands[].match"));
	assert_non_null(keys_find(&k, k.n, "methods.<method>.feed.labels.confidence"));
	assert_non_null(keys_find(&k, k.n, "methods.<method>.capture_redact.<direction>.coarsen[].precision"));
	assert_int_equal(keys_find(&k, k.n, "methods.<method>.<direction>[].pseudonymize")->flags,
	                 FG_POLICY_COMPILE_KEY_REQUEST);
	assert_int_equal(keys_find(&k, k.n, "methods.<method>.<direction>[].keep_only")->flags, 0);
	for (size_t i = 0; i < k.n; i++) {
		assert_true(strlen(k.v[i].path) < FG_POLICY_COMPILE_KEY_PATH_MAX - 1);
		assert_ptr_equal(keys_find(&k, k.n, k.v[i].path), &k.v[i]);
		if (policy_parent(k.v[i].path, parent, sizeof(parent)) && !keys_find(&k, i, parent))
			fail_msg("'%s' comes before (or without) '%s', the key it sits under", k.v[i].path, parent);
	}
	free(k.v);
}

/* 1 if source text <src> mounts table <name> (".record = name" or
 * ".level = name"). */
static int mounted(const char *src, const char *name)
{
	char want[160];

	snprintf(want, sizeof(want), ".record = %s }", name);
	if (strstr(src, want))
		return 1;
	snprintf(want, sizeof(want), ".level = %s,", name);
	return strstr(src, want) != NULL;
}

/* The key tables a policy file declares that it does not mount; printed,
 * counted.  The tables are `static const char *const NAME_keys[]` (a
 * record) and `static const struct fg_policy_key *const NAME[]` (a level). */
static int unmounted(const char *file, const char *src)
{
	static const char *const decls[] = {
		"static const char *const ", "static const struct fg_policy_key *const ",
	};
	int bad = 0;

	for (size_t d = 0; d < 2; d++) {
		for (const char *p = src; (p = strstr(p, decls[d])); p++) {
			const char *name = p + strlen(decls[d]), *br = strchr(name, '[');
			char id[128];
			snprintf(id, sizeof(id), "%.*s", br ? (int)(br - name) : 0, name);
			if (d == 0 && (strlen(id) < 5 || strcmp(id + strlen(id) - 5, "_keys") != 0))
				continue;
			/* capture_redact's default replays the band's block keys: no place of its own */
			if (strcmp(file, "fg_policy_capture.c") == 0 && strcmp(id, "default_keys") == 0)
				continue;
			if (!mounted(src, id)) {
				fprintf(stderr, "test_reference: daemon/%s: key table %s is in no fg_policy_mount, so "
				        "fg_policy_compile_keys_each does not list its keys\n", file, id);
				bad++;
			}
		}
	}
	return bad;
}

/* Every key table of the policy compiler is one fg_policy_compile_keys_each
 * walks: a table added without its mount would leave its keys out of the
 * README check. */
static void test_policy_tables_mounted(void **state)
{
	char dir[PATH_MAX], path[PATH_MAX + 256];
	const char *slash = strrchr(__FILE__, '/');
	struct dirent *e;
	int files = 0, bad = 0;
	DIR *d;

	(void)state;
	if (srcdir)
		snprintf(dir, sizeof(dir), "%s/daemon", srcdir);
	else
		snprintf(dir, sizeof(dir), "%.*s/../../daemon", slash ? (int)(slash - __FILE__) : 1,
		         slash ? __FILE__ : ".");
	d = opendir(dir);
	if (!d)
		fail_msg("cannot open %s (set FG_SRCDIR to the source tree)", dir);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		FILE *f;
		char *src;
		long len;
		if (strncmp(e->d_name, "fg_policy_", 10) != 0 || n < 3 || strcmp(e->d_name + n - 2, ".c") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		assert_non_null(f = fopen(path, "r"));
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		assert_non_null(src = calloc(1, (size_t)len + 1));
		assert_int_equal(fread(src, 1, (size_t)len, f), (size_t)len);
		fclose(f);
		bad += unmounted(e->d_name, src);
		free(src);
		files++;
	}
	closedir(d);
	assert_true(files >= 10);
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_keys_shape),
		cmocka_unit_test(test_policy_keys_shape),
		cmocka_unit_test(test_policy_tables_mounted),
		cmocka_unit_test(test_config_keys_documented),
		cmocka_unit_test(test_policy_keys_documented),
	};
	const char *env = getenv("FG_SRCDIR");

	if (env && *env)
		srcdir = env;
	return cmocka_run_group_tests_name("reference", tests, NULL, NULL);
}
