/*
 * fuzz_yaml.c - libFuzzer target for the YAML reader under config and policy.
 *
 * Besides "no crash, no leak" (ASan/LSan/UBSan do that part), it checks the
 * promises of fg_yaml.h that a fuzzer can see: a failure leaves no tree and
 * writes "name:line:column: message" on one printable line; a success gives
 * a tree that keeps the limits (small here, so the fuzzer reaches them),
 * whose mappings hold scalar keys in pairs, whose nodes all have a
 * position, and whose values fg_yaml_show() quotes safely.
 *
 * Build (from the top build dir, after configure, for config.h):
 *   clang -g -std=c11 -fsanitize=fuzzer,address,undefined -I. -Idaemon \
 *     tests/fuzz/fuzz_yaml.c daemon/fg_yaml.c -lyaml
 * Run:   ./fuzz_yaml -max_total_time=60 new_corpus_dir tests/fuzz/corpus/config
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fuzz_common.h"
#include "fg_yaml.h"

#define NAME "fuzz.yaml"
#define ERRLEN 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct fg_yaml_limits lim = { .max_bytes = 64 * 1024, .max_depth = 8, .max_nodes = 512 };

/* The quoted form has no byte that could end the quote or the log line, and
 * a cut lands on a character boundary of the (libyaml-validated) UTF-8. */
static void check_show(const struct fg_yaml_node *n)
{
	char buf[FG_YAML_SHOWLEN];
	size_t out = strlen(fg_yaml_show(n, buf, sizeof(buf))), kept = out;

	for (size_t i = 0; i < out; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f || buf[i] == '\'')
			abort();
	if (n->len > FG_YAML_SHOW_MAX) {
		if (out < 3 || strcmp(buf + out - 3, "...") != 0)
			abort();
		kept = out - 3;
		if (kept > FG_YAML_SHOW_MAX || kept + 3 < FG_YAML_SHOW_MAX ||
		    ((unsigned char)n->text[kept] & 0xc0) == 0x80)
			abort();
	} else if (out != n->len) {
		abort();
	}
}

static void check_map(const struct fg_yaml_node *n)
{
	if (n->nkids % 2 != 0)
		abort();
	for (size_t i = 0; i < n->nkids; i += 2) {
		const struct fg_yaml_node *key = n->kids[i];

		if (key->kind != FG_YAML_SCALAR)
			abort();
		/* the first key with this text is the one map_get finds */
		if (strlen(key->text) == key->len) {
			const struct fg_yaml_node *got = fg_yaml_map_get(n, key->text);
			size_t j = 0;

			while (n->kids[j]->len != key->len ||
			       memcmp(n->kids[j]->text, key->text, key->len) != 0)
				j += 2;
			if (got != n->kids[j + 1])
				abort();
		}
	}
}

/* Walk the tree; returns the number of nodes under and including <n>. */
static size_t check_node(const struct fg_yaml_node *n, int depth)
{
	size_t count = 1;

	if (depth > lim.max_depth || n->line == 0 || n->col == 0 || n->nkids > n->cap)
		abort();
	if (n->kind == FG_YAML_SCALAR) {
		if (!n->text || n->text[n->len] != '\0' || n->nkids != 0)
			abort();
		check_show(n);
		return 1;
	}
	if (n->text || (n->kind != FG_YAML_SEQ && n->kind != FG_YAML_MAP))
		abort();
	if (n->kind == FG_YAML_MAP)
		check_map(n);
	for (size_t i = 0; i < n->nkids; i++)
		count += check_node(n->kids[i], depth + 1);
	return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ERRLEN];
	struct fg_yaml_node *root = (struct fg_yaml_node *)err;
	int rc;

	memset(err, 'x', sizeof(err));
	err[0] = '\0';
	rc = fg_yaml_parse(NAME, (const char *)data, size, &lim, &root, err, sizeof(err));
	if (memchr(err, '\0', sizeof(err)) == NULL)
		abort();
	if (rc == 0) {
		if (!root || root->kind != FG_YAML_MAP || err[0] != '\0')
			abort();
		/* the empty-file mapping is not counted against the cap */
		if (check_node(root, 1) > lim.max_nodes + (root->nkids == 0))
			abort();
		fg_yaml_free(root);
		return 0;
	}
	if (root)
		abort();
	fuzz_check_load_failure(rc, err, NAME);
	return 0;
}
