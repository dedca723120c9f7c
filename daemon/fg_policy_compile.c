/*
 * fg_policy_compile.c - the policy compiler's driver: a YAML policy and
 * the descriptor set it names turned into an immutable struct fg_policy.
 *
 * fg_yaml turns the file into a positioned tree; then the top-level keys
 * are compiled through their table (below), each level handing its keys to
 * the file that owns that kind of rule (fg_policy_compile-internal.h).
 * This file holds what they share: the arena every node, rule and string
 * of a policy lives in (freed with fg_policy_compile_free()), the error
 * messages, the checks of a YAML value's shape and the key walker; and the
 * one key that is the compiler's own, descriptor_set.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fg_error.h"
#include "fg_tz.h"
#include "fg_policy_compile-internal.h"
#include "fg_policy_compile.h"
#include "fg_schema.h"
#include "fg_yaml.h"

#define POLICY_MAX_DEPTH 24
#define POLICY_MAX_NODES 100000
/* The valid keys listed in an "unknown key" message; longer lists are cut. */
#define KEY_LIST_LEN 256

static const struct fg_yaml_limits policy_limits = {
	.max_bytes = FG_POLICY_MAX_BYTES, .max_depth = POLICY_MAX_DEPTH, .max_nodes = POLICY_MAX_NODES,
};

/* --- arena: every allocation of a policy, freed together ---------------- */

struct arena_block {
	struct arena_block *next;
	max_align_t data[];
};

static void *arena_alloc(void **arena, size_t size)
{
	struct arena_block *b = calloc(1, sizeof(*b) + size);

	if (!b)
		return NULL;
	b->next = *arena;
	*arena = b;
	return b->data;
}

static char *arena_strndup(void **arena, const char *s, size_t len)
{
	char *d = arena_alloc(arena, len + 1);

	if (d)
		memcpy(d, s, len);
	return d;
}

static void arena_free(void *arena)
{
	struct arena_block *b = arena, *next;

	for (; b; b = next) {
		next = b->next;
		free(b);
	}
}

void *fg_policy_compile_alloc(struct fg_policy_comp *c, size_t size)
{
	return arena_alloc(&c->pol->arena, size);
}

char *fg_policy_compile_strndup(struct fg_policy_comp *c, const char *s, size_t len)
{
	return arena_strndup(&c->pol->arena, s, len);
}

char *fg_policy_compile_dup(struct fg_policy_comp *c, const struct fg_yaml_node *n)
{
	return arena_strndup(&c->pol->arena, n->text, n->len);
}

/* --- messages and shapes ------------------------------------------------- */

int fg_policy_compile_fail(struct fg_policy_comp *c, const struct fg_yaml_node *at, const char *fmt, ...)
{
	char msg[FG_POLICY_MAX_PATH * 16 + 512];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A rule written once in rule_sets is compiled for each method that
	 * names it: the position is where it is written, this says for what. */
	if (fg_policy_rulesets_in_set(c, at) && c->method && (n = strlen(msg)) < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, " (rule set '%s', compiled for %s %s)", c->set_name->text,
		         c->method->text, c->set_what);
	/* fg_yaml_fail makes control bytes in paths and values quoted as
	 * written safe for the operator's log. */
	return fg_yaml_fail(c->err, c->errlen, c->name, at, "%s", msg);
}

int fg_policy_compile_nomem(struct fg_policy_comp *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return FG_ENOMEM;
}

int fg_policy_compile_header_name(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *what,
                                  char **out)
{
	size_t j;
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	if (!(*out = fg_policy_compile_dup(c, n)))
		return fg_policy_compile_nomem(c);
	for (j = 0; j < n->len; j++)
		if ((*out)[j] >= 'A' && (*out)[j] <= 'Z')
			(*out)[j] = (char)((*out)[j] - 'A' + 'a');
	return 0;
}

int fg_policy_compile_want_scalar(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *what)
{
	if (n->kind != FG_YAML_SCALAR || n->len == 0)
		return fg_policy_compile_fail(c, n, "%s must be a single value, not %s", what, fg_yaml_kind_name(n));
	return 0;
}

int fg_policy_compile_want_kind(struct fg_policy_comp *c, const struct fg_yaml_node *n,
                                enum fg_yaml_kind kind, const char *what)
{
	static const char *const names[] = { "a single value", "a list", "a mapping" };

	if (n->kind != kind)
		return fg_policy_compile_fail(c, n, "%s must be %s, not %s", what, names[kind], fg_yaml_kind_name(n));
	return 0;
}

/* --- the key walker ------------------------------------------------------ */

int fg_policy_compile_check_record(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                   const char *const *allowed, const char *where)
{
	char list[KEY_LIST_LEN] = "", buf[FG_YAML_SHOWLEN];
	size_t i, j, k;

	for (i = 0; i < map->nkids; i += 2) {
		const struct fg_yaml_node *key = map->kids[i];
		for (k = 0; allowed[k] && strcmp(allowed[k], key->text) != 0; k++)
			;
		if (!allowed[k]) {
			for (k = 0; allowed[k]; k++) {
				strncat(list, k ? ", " : "", sizeof(list) - strlen(list) - 1);
				strncat(list, allowed[k], sizeof(list) - strlen(list) - 1);
			}
			return fg_policy_compile_fail(c, key, "unknown key '%s' in %s (valid keys: %s)",
			                              fg_yaml_show(key, buf, sizeof(buf)), where, list);
		}
		for (j = 0; j < i; j += 2)
			if (strcmp(map->kids[j]->text, key->text) == 0)
				return fg_policy_compile_fail(c, key, "duplicate key '%s' in %s",
				                              fg_yaml_show(key, buf, sizeof(buf)), where);
	}
	return 0;
}

/* 1 if <k> may appear in a mapping of direction <dir> (0: not a rule block). */
static int key_allowed(const struct fg_policy_key *k, unsigned dir)
{
	unsigned dirs = k->flags & (FG_POLICY_KEY_REQUEST | FG_POLICY_KEY_RESPONSE);

	return dirs == 0 || (dirs & dir) != 0;
}

int fg_policy_compile_keys_check(struct fg_policy_comp *c, const struct fg_yaml_node *map,
                                 const struct fg_policy_key *const *keys, size_t n, unsigned dir,
                                 const char *where)
{
	const char *names[FG_POLICY_LEVEL_MAX_KEYS + 1];
	size_t i, nnames = 0;

	for (i = 0; i < n && nnames < FG_POLICY_LEVEL_MAX_KEYS; i++)
		if (key_allowed(keys[i], dir))
			names[nnames++] = keys[i]->name;
	names[nnames] = NULL;
	return fg_policy_compile_check_record(c, map, names, where);
}

int fg_policy_compile_keys_run(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                               const struct fg_policy_key *const *keys, size_t n, unsigned dir)
{
	const struct fg_yaml_node *val;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if (!key_allowed(keys[i], dir))
			continue;
		val = fg_yaml_map_get(s->map, keys[i]->name);
		if ((val || (keys[i]->flags & FG_POLICY_KEY_ALWAYS)) && (rc = keys[i]->compile(c, s, val)))
			return rc;
	}
	return 0;
}

/* --- descriptor_set ------------------------------------------------------ */

/* The platform's contract, which every later key is checked against. */
static int compile_descriptor_set(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                                  const struct fg_yaml_node *ds)
{
	char msg[512], *path;
	int rc;

	if (!ds)
		return fg_policy_compile_fail(c, s->map, "'descriptor_set' is required: the platform's descriptor set "
		                                         "(protoc --include_imports --descriptor_set_out=FILE)");
	if ((rc = fg_policy_compile_want_scalar(c, ds, "descriptor_set")))
		return rc;
	path = fg_yaml_path_resolve(c->basedir, ds->text);
	if (!path)
		return fg_policy_compile_nomem(c);
	rc = fg_schema_load(path, &c->schema, msg, sizeof(msg));
	c->pol->descriptor_set = fg_policy_compile_strndup(c, path, strlen(path));
	free(path);
	if (!c->pol->descriptor_set)
		return fg_policy_compile_nomem(c);
	if (rc == FG_ENOMEM)
		return fg_policy_compile_nomem(c);
	if (rc < 0)
		return fg_policy_compile_fail(c, ds, "%s", msg);
	return 0;
}

static const struct fg_policy_key descriptor_set_key = {
	"descriptor_set", FG_POLICY_KEY_ALWAYS, compile_descriptor_set,
};

/* --- the file ------------------------------------------------------------ */

/* The top-level keys, in the order they compile: the contract first, then
 * the bands every rule names, the rule sets methods may name, the zones,
 * then the methods, then the limits (which check the methods). */
static const struct fg_policy_key *const top_keys[] = {
	&descriptor_set_key,
	&fg_policy_bands_key,
	&fg_policy_bands_unknown_key,
	&fg_policy_filter_classes_key,
	&fg_policy_filter_label_maps_key,
	&fg_policy_rulesets_key,
	&fg_policy_limits_time_zone_key,
	&fg_policy_limits_time_zones_key,
	&fg_policy_methods_key,
	&fg_policy_limits_key,
};

_Static_assert(FG_POLICY_NELEM(top_keys) <= FG_POLICY_LEVEL_MAX_KEYS, "top-level keys");

/* --- the keys, for fg_policy_compile_keys_each ------------------------------ */

static const struct fg_policy_mount top_mounts[] = {
	{ .path = "", .level = top_keys, .nlevel = FG_POLICY_NELEM(top_keys) },
	{ .path = NULL },
};

/* Every file's tables, each after the one that holds the key it sits under. */
static const struct fg_policy_mount *const mounts[] = {
	top_mounts, fg_policy_bands_mounts, fg_policy_methods_mounts, fg_policy_sources_mounts,
	fg_policy_blocks_mounts, fg_policy_capture_mounts, fg_policy_strip_mounts, fg_policy_filter_mounts,
	fg_policy_limits_mounts,
};

/* The public flags are the key's own direction flags. */
_Static_assert(FG_POLICY_KEY_REQUEST == FG_POLICY_COMPILE_KEY_REQUEST &&
               FG_POLICY_KEY_RESPONSE == FG_POLICY_COMPILE_KEY_RESPONSE, "direction flags");

/* <cb> for the key <name> of the mapping at <prefix>. */
static void key_at(fg_policy_compile_key_cb cb, void *arg, const char *prefix, const char *name, unsigned flags)
{
	char path[FG_POLICY_COMPILE_KEY_PATH_MAX];

	snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name);
	cb(path, flags, arg);
}

void fg_policy_compile_keys_each(fg_policy_compile_key_cb cb, void *arg)
{
	const unsigned dirs = FG_POLICY_KEY_REQUEST | FG_POLICY_KEY_RESPONSE;

	for (size_t i = 0; i < FG_POLICY_NELEM(mounts); i++) {
		for (const struct fg_policy_mount *m = mounts[i]; m->path; m++) {
			for (size_t k = 0; k < m->nlevel; k++)
				key_at(cb, arg, m->path, m->level[k]->name, m->level[k]->flags & dirs);
			for (size_t k = 0; m->record && m->record[k]; k++)
				key_at(cb, arg, m->path, m->record[k], 0);
		}
	}
}

static int alloc_counters(struct fg_policy_comp *c, size_t nslots)
{
	struct fg_policy *p = c->pol;
	size_t per = p->nbands, i;

	p->counters.nslots = nslots;
	p->counters.calls = calloc(nslots * (p->nmethods ? p->nmethods : 1) * per, sizeof(uint64_t));
	p->counters.unknown_band = calloc(nslots * (p->nmethods ? p->nmethods : 1) * FG_POLICY_NUNKNOWN,
	                                  sizeof(uint64_t));
	p->counters.stripped = calloc(nslots * (p->nstats ? p->nstats : 1) * per, sizeof(uint64_t));
	if (!p->counters.calls || !p->counters.unknown_band || !p->counters.stripped)
		return fg_policy_compile_nomem(c);
	/* The filter's counters exist for the methods with a feed only. */
	for (i = 0; i < p->nmethods; i++)
		if (p->methods[i].feed)
			p->methods[i].feed_index = p->nfeeds++;
	if (!p->nfeeds)
		return 0;
	p->counters.filtered = calloc(nslots * p->nfeeds * per * (p->nclasses + 1) * FG_POLICY_FILTER_NACTIONS,
	                              sizeof(uint64_t));
	p->counters.pages = calloc(nslots * p->nfeeds * per * 2, sizeof(uint64_t));
	return p->counters.filtered && p->counters.pages ? 0 : fg_policy_compile_nomem(c);
}

/* The screen-time counters exist when some band is limited. */
static int alloc_limit_counters(struct fg_policy_comp *c, size_t nslots)
{
	struct fg_policy *p = c->pol;

	if (!p->limits)
		return 0;
	p->counters.notices = calloc(nslots * p->nbands * FG_POLICY_NNOTICES, sizeof(uint64_t));
	p->counters.answered = calloc(nslots * p->nbands * FG_POLICY_NRULES * 2, sizeof(uint64_t));
	p->counters.state_failures = calloc(nslots * p->nbands * FG_POLICY_NSREASONS * FG_POLICY_NSMODES,
	                                    sizeof(uint64_t));
	if (!p->counters.notices || !p->counters.answered || !p->counters.state_failures)
		return fg_policy_compile_nomem(c);
	return 0;
}

/* The first key or value in <n> that holds a NUL ("\0" in a quoted
 * scalar), or NULL: every reader of a policy's text stops at one, so
 * "Europe/London\0x" was taken as a zone and a path as a shorter one. */
static const struct fg_yaml_node *nul_in(const struct fg_yaml_node *n)
{
	const struct fg_yaml_node *hit;
	size_t i;

	if (n->kind == FG_YAML_SCALAR)
		return memchr(n->text, '\0', n->len) ? n : NULL;
	for (i = 0; i < n->nkids; i++)
		if ((hit = nul_in(n->kids[i])))
			return hit;
	return NULL;
}

/* The descriptor set's method paths, for checks of the config's own
 * method names (metrics.methods) once the schema is gone. */
static int keep_set_methods(struct fg_policy_comp *c)
{
	struct fg_policy *p = c->pol;
	size_t i, n = c->schema ? fg_schema_nmethods(c->schema) : 0;

	if (n == 0)
		return 0;
	if (!(p->set_methods = fg_policy_compile_alloc(c, n * sizeof(*p->set_methods))))
		return fg_policy_compile_nomem(c);
	for (i = 0; i < n; i++) {
		const char *path = fg_schema_method_path(fg_schema_method_at(c->schema, i));
		if (!(p->set_methods[i] = fg_policy_compile_strndup(c, path, strlen(path))))
			return fg_policy_compile_nomem(c);
	}
	p->nset_methods = n;
	return 0;
}

/* The policy's id (fg_policy-t.h): its bytes and its descriptor set's. */
static int make_id(struct fg_policy_comp *c, const char *text, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t md[EVP_MAX_MD_SIZE];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;
	size_t i;

	ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, text, len) &&
	     (!c->schema || EVP_DigestUpdate(ctx, fg_schema_digest(c->schema), FG_SCHEMA_DIGEST_LEN)) &&
	     EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return fg_policy_compile_nomem(c);
	for (i = 0; i < FG_POLICY_ID_LEN / 2; i++) {
		c->pol->id[2 * i] = hex[md[i] >> 4];
		c->pol->id[2 * i + 1] = hex[md[i] & 15];
	}
	c->pol->id[FG_POLICY_ID_LEN] = '\0';
	return 0;
}

static int compile(struct fg_policy_comp *c, const char *text, size_t len, size_t nslots)
{
	struct fg_yaml_node *root = NULL;
	struct fg_policy_scope s = { 0 };
	const struct fg_yaml_node *nul;
	int rc;

	rc = fg_yaml_parse(c->name, text, len, &policy_limits, &root, c->err, c->errlen);
	if (rc)
		return rc;
	if (root && (nul = nul_in(root))) {
		rc = fg_policy_compile_fail(c, nul, "a key or value must not contain a NUL byte");
		fg_yaml_free(root);
		return rc;
	}
	s.map = root;
	rc = fg_policy_compile_keys_check(c, root, top_keys, FG_POLICY_NELEM(top_keys), 0, "the policy");
	if (rc == 0)
		rc = fg_policy_compile_keys_run(c, &s, top_keys, FG_POLICY_NELEM(top_keys), 0);
	if (rc == 0)
		rc = fg_policy_sources_check_enum_bands(c, root);
	if (rc == 0)
		rc = alloc_counters(c, nslots);
	if (rc == 0)
		rc = alloc_limit_counters(c, nslots);
	if (rc == 0)
		rc = make_id(c, text, len);
	if (rc == 0)
		rc = keep_set_methods(c);
	fg_schema_free(c->schema);
	c->schema = NULL;
	fg_yaml_free(root);
	return rc;
}

int fg_policy_compile_load_string(const char *name, const char *basedir, const char *text, size_t len,
                                  size_t nslots, struct fg_policy **out, char *err, size_t errlen)
{
	struct fg_policy_comp c = { .name = name ? name : "<string>", .err = err, .errlen = errlen };
	int rc;

	*out = NULL;
	if (nslots == 0 || nslots > FG_POLICY_MAX_WORKERS)
		nslots = nslots ? FG_POLICY_MAX_WORKERS : 1;
	c.pol = calloc(1, sizeof(*c.pol));
	c.basedir = strdup(basedir ? basedir : ".");
	if (!c.pol || !c.basedir) {
		free(c.pol);
		free(c.basedir);
		return fg_policy_compile_nomem(&c);
	}
	rc = compile(&c, text, len, nslots);
	free(c.basedir);
	if (rc) {
		fg_policy_compile_free(c.pol);
		return rc;
	}
	*out = c.pol;
	return 0;
}

int fg_policy_compile_load(const char *path, size_t nslots, struct fg_policy **out, char *err, size_t errlen)
{
	char *text = NULL, *abs, *dir;
	size_t len = 0;
	int rc;

	*out = NULL;
	rc = fg_yaml_read_file(path, FG_POLICY_MAX_BYTES, &text, &len, err, errlen);
	if (rc)
		return rc;
	abs = fg_yaml_path_resolve(NULL, path);
	dir = abs ? fg_yaml_path_dirname(abs) : NULL;
	if (!dir) {
		if (err && errlen)
			snprintf(err, errlen, "%s: out of memory", path);
		rc = FG_ENOMEM;
		goto out_free;
	}
	rc = fg_policy_compile_load_string(path, dir, text, len, nslots, out, err, errlen);
	if (rc == 0 && !((*out)->file = arena_strndup(&(*out)->arena, abs, strlen(abs)))) {
		fg_policy_compile_free(*out);
		*out = NULL;
		rc = FG_ENOMEM;
	}
out_free:
	free(dir);
	free(abs);
	free(text);
	return rc;
}

void fg_policy_compile_free(struct fg_policy *p)
{
	size_t i;

	if (!p)
		return;
	free(p->counters.calls);
	free(p->counters.unknown_band);
	free(p->counters.stripped);
	free(p->counters.filtered);
	free(p->counters.pages);
	free(p->counters.notices);
	free(p->counters.answered);
	free(p->counters.state_failures);
	fg_tz_free(p->tz);
	for (i = 0; i < p->nzones; i++)
		fg_tz_free(p->zones[i]);
	arena_free(p->arena);
	free(p);
}
