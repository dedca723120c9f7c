/*
 * fg_config_capture.c - config section "capture": where traffic capture
 * files go (fg_capture.h), which calls are sampled, rotation and
 * retention, the bytes capture may hold, and the metadata worth keeping.
 * Reloadable: new calls use the new settings; the writer switches
 * directory or key at its next file.
 *
 * Cross-checks need the policy (compiled in the policy section's finish,
 * which runs first): captured methods must be the policy's, and the
 * metadata list may not name a header a user id is read from.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fg_config-internal.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_policy-t.h"

/* Room for fg_keyring's reasons, which quote the file's path. */
#define WHY_LEN 256

enum { CP_DIRECTORY, CP_KEY, CP_SAMPLE, CP_METHODS, CP_ROTATE_SIZE, CP_ROTATE_AGE, CP_MAX_AGE,
       CP_MAX_TOTAL_SIZE, CP_QUEUE, CP_MAX_RECORD_SIZE, CP_METADATA, CP_NKEYS };

/* Metadata a capture never holds: credentials (RFC 9110 section 11.6,
 * RFC 6265). */
static const char *const refused_metadata[] = {
	"authorization", "proxy-authorization", "cookie", "set-cookie",
};

static int parse_directory(struct fg_config_loader *l, const struct fg_config_key *k,
                           const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	struct stat st;
	char *dir;
	int rc;

	(void)k;
	(void)key;
	if ((rc = fg_config_value_want(l, val, "the path of a directory")))
		return rc;
	if (!(dir = fg_yaml_path_resolve(l->basedir, val->text)))
		return fg_config_fail_nomem(l);
	free(l->cfg->capture.directory);
	l->cfg->capture.directory = dir;
	/* Said at the key, at -t and at reload, rather than by the writer
	 * thread into the log when the first record is lost.  The path as
	 * written, made safe to quote (it may hold any byte). */
	if (stat(dir, &st) != 0)
		return fg_config_fail(l, val, "capture.directory: '%s': %s", fg_yaml_show(val, buf, sizeof(buf)),
		                      strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fg_config_fail(l, val, "capture.directory: '%s' is not a directory",
		                      fg_yaml_show(val, buf, sizeof(buf)));
	if (access(dir, W_OK | X_OK) != 0)
		return fg_config_fail(l, val, "capture.directory: cannot write to '%s': %s",
		                      fg_yaml_show(val, buf, sizeof(buf)), strerror(errno));
	l->cfg->capture.enabled = 1;
	return 0;
}

static int parse_key(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                     const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *id, *file;
	char why[WHY_LEN], *path;
	int rc;

	(void)k;
	(void)key;
	if (val->kind != FG_YAML_MAP || val->nkids != 4 || !(id = fg_yaml_map_get(val, "id")) ||
	    !(file = fg_yaml_map_get(val, "file")) || id->kind != FG_YAML_SCALAR || file->kind != FG_YAML_SCALAR)
		return fg_config_fail(l, val, "capture.key is {id: NAME, file: PATH}");
	if (!l->cfg->capture.key && !(l->cfg->capture.key = calloc(1, sizeof(*l->cfg->capture.key))))
		return fg_config_fail_nomem(l);
	if (!(path = fg_yaml_path_resolve(l->basedir, file->text)))
		return fg_config_fail_nomem(l);
	rc = fg_keyring_add_file(l->cfg->capture.key, id->text, path, why, sizeof(why));
	free(path);
	if (rc)
		return fg_config_fail(l, rc == FG_EIO ? file : id, "capture.key: %s", why);
	return 0;
}

static int parse_sample(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                        const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN], *end;
	double v;
	int rc;

	(void)k;
	(void)key;
	if ((rc = fg_config_value_want(l, val, "a share of users from 0 to 1")))
		return rc;
	errno = 0;
	v = strtod(val->text, &end);
	if (end == val->text || *end || errno || !isfinite(v) || v < 0 || v > 1)
		return fg_config_fail(l, val, "capture.sample: '%s' is not a share of users from 0 to 1 (0.05 is 5%%)",
		                      fg_yaml_show(val, buf, sizeof(buf)));
	l->cfg->capture.sample = v;
	return 0;
}

/* A list of strings, none twice, each checked by <ok>; into <*out>. */
static int read_names(struct fg_config_loader *l, const struct fg_yaml_node *val, size_t max, const char *what,
                      int (*ok)(const char *), char ***out, size_t *n)
{
	char buf[FG_YAML_SHOWLEN];
	size_t i, j;
	int rc;

	if (val->kind != FG_YAML_SEQ)
		return fg_config_fail(l, val, "%s must be a list", l->key);
	if (val->nkids > max)
		return fg_config_fail(l, val->kids[max], "%s: more than %zu entries", l->key, max);
	if (!(*out = calloc(val->nkids ? val->nkids : 1, sizeof(**out))))
		return fg_config_fail_nomem(l);
	for (i = 0; i < val->nkids; i++) {
		const struct fg_yaml_node *v = val->kids[i];
		if ((rc = fg_config_value_want(l, v, what)))
			return rc;
		if (!ok(v->text))
			return fg_config_fail(l, v, "%s: '%s' is not %s", l->key, fg_yaml_show(v, buf, sizeof(buf)), what);
		for (j = 0; j < i; j++)
			if (strcmp(val->kids[j]->text, v->text) == 0)
				return fg_config_fail(l, v, "%s: '%s' is listed twice", l->key,
				                      fg_yaml_show(v, buf, sizeof(buf)));
		if (!((*out)[i] = strdup(v->text)))
			return fg_config_fail_nomem(l);
		*n = i + 1;
	}
	return 0;
}

static int method_ok(const char *s)
{
	return s[0] == '/' && strchr(s + 1, '/') != NULL;
}

/* Lowercase token characters (RFC 9110 section 5.6.2; HTTP/2 names are
 * lowercase), no pseudo-header. */
static int header_name_ok(const char *s)
{
	return s[0] && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~") == strlen(s);
}

static int parse_methods(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                         const struct fg_yaml_node *val)
{
	(void)k;
	(void)key;
	return read_names(l, val, FG_CONFIG_CAPTURE_MAX_METHODS, "a method path (/package.Service/Method)", method_ok,
	                  &l->cfg->capture.methods, &l->cfg->capture.nmethods);
}

static int parse_metadata(struct fg_config_loader *l, const struct fg_config_key *k, const struct fg_yaml_node *key,
                          const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	size_t i, j;
	int rc;

	(void)k;
	(void)key;
	rc = read_names(l, val, FG_CONFIG_CAPTURE_MAX_METADATA, "a lowercase metadata name", header_name_ok,
	                &l->cfg->capture.metadata, &l->cfg->capture.nmetadata);
	if (rc)
		return rc;
	for (i = 0; i < val->nkids; i++)
		for (j = 0; j < FG_CONFIG_NELEM(refused_metadata); j++)
			if (strcmp(val->kids[i]->text, refused_metadata[j]) == 0)
				return fg_config_fail(l, val->kids[i], "capture.metadata: '%s' is never captured "
				                      "(credentials)", fg_yaml_show(val->kids[i], buf, sizeof(buf)));
	return 0;
}

/* A duration, or "off" (0 here). */
static int parse_duration_or_off(struct fg_config_loader *l, const struct fg_config_key *k,
                                 const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	if (val->kind == FG_YAML_SCALAR && strcmp(val->text, "off") == 0) {
		*(int64_t *)((char *)l->cfg + k->off) = 0;
		return 0;
	}
	return fg_config_value_duration(l, k, key, val);
}

static int parse_size_or_off(struct fg_config_loader *l, const struct fg_config_key *k,
                             const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	if (val->kind == FG_YAML_SCALAR && strcmp(val->text, "off") == 0) {
		*(uint64_t *)((char *)l->cfg + k->off) = 0;
		return 0;
	}
	return fg_config_value_size64(l, k, key, val);
}

#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define DAY (24 * FG_CONFIG_USEC_PER_HOUR)

static const struct fg_config_key capture_keys[] = {
	[CP_DIRECTORY] = { "directory", parse_directory, 0, 0, 0, NULL },
	[CP_KEY] = { "key", parse_key, 0, 0, 0, NULL },
	[CP_SAMPLE] = { "sample", parse_sample, 0, 0, 0, NULL },
	[CP_METHODS] = { "methods", parse_methods, 0, 0, 0, NULL },
	[CP_ROTATE_SIZE] = { "rotate_size", fg_config_value_size64, FG_CONFIG_OFF(capture.rotate_size), 64 * KIB,
		64 * GIB, NULL },
	[CP_ROTATE_AGE] = { "rotate_age", fg_config_value_duration, FG_CONFIG_OFF(capture.rotate_age_us),
		FG_CONFIG_USEC_PER_SEC, 7 * DAY, NULL },
	[CP_MAX_AGE] = { "max_age", parse_duration_or_off, FG_CONFIG_OFF(capture.max_age_us), FG_CONFIG_USEC_PER_MIN,
		3660 * DAY, "or off" },
	[CP_MAX_TOTAL_SIZE] = { "max_total_size", parse_size_or_off, FG_CONFIG_OFF(capture.max_total_size), 1 * MIB,
		INT64_MAX, "or off" },
	[CP_QUEUE] = { "queue", fg_config_value_size64, FG_CONFIG_OFF(capture.queue), 1 * MIB, 64 * GIB, NULL },
	[CP_MAX_RECORD_SIZE] = { "max_record_size", fg_config_value_size64, FG_CONFIG_OFF(capture.max_record_size),
		4 * KIB, 64 * MIB, "a capture frame holds at most 64MiB" },
	[CP_METADATA] = { "metadata", parse_metadata, 0, 0, 0, NULL },
};

_Static_assert(FG_CONFIG_NELEM(capture_keys) == CP_NKEYS && CP_NKEYS <= FG_CONFIG_SECTION_MAX_KEYS,
               "capture table");

static int capture_check(struct fg_config_loader *l, const struct fg_yaml_node *where,
                         const struct fg_yaml_node *const *seen)
{
	const struct fg_config *cfg = l->cfg;

	if (!seen[CP_DIRECTORY])
		return fg_config_fail(l, where, "capture.directory is required: where capture files are written");
	if (!seen[CP_KEY])
		return fg_config_fail(l, where, "capture.key is required: {id, file}, the key of the capture "
		                                "pseudonyms (a capture never holds a raw user id)");
	if (cfg->capture.max_record_size > cfg->capture.queue)
		return fg_config_fail(l, seen[CP_MAX_RECORD_SIZE] ? seen[CP_MAX_RECORD_SIZE] : seen[CP_QUEUE],
		                      "capture.max_record_size is above capture.queue: no record could be kept");
	return 0;
}

static void capture_defaults(struct fg_config *cfg)
{
	cfg->capture.sample = 0.01;
	cfg->capture.rotate_size = 256 * MIB;
	cfg->capture.rotate_age_us = FG_CONFIG_USEC_PER_HOUR;
	cfg->capture.max_age_us = 30 * DAY;
	cfg->capture.queue = 64 * MIB;
	cfg->capture.max_record_size = 4 * MIB;
}

/* The capture key must not be a key of pseudonym_keys: a capture
 * pseudonym equal to the one in Redis (or the ranker's) would join them. */
static int check_key_apart(struct fg_config_loader *l, const struct fg_yaml_node *val)
{
	const struct fg_keyring_key *ck = &l->cfg->capture.key->keys[0];
	const struct fg_keyring *ring = l->cfg->keyring;
	size_t i;

	for (i = 0; ring && i < ring->n; i++)
		if (ring->keys[i].len == ck->len && memcmp(ring->keys[i].secret, ck->secret, ck->len) == 0)
			return fg_config_fail(l, fg_yaml_map_get(val, "key"), "capture.key: the same secret as "
			                      "pseudonym_keys '%s': a capture could then be joined with the state and "
			                      "with what the ranker saw; use a key of its own", ring->keys[i].id);
	return 0;
}

/* Every captured method is one of the policy's, and no recorded metadata
 * name is one a user id is read from. */
static int check_policy(struct fg_config_loader *l, const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *methods = fg_yaml_map_get(val, "methods");
	const struct fg_yaml_node *metadata = fg_yaml_map_get(val, "metadata");
	const struct fg_config *cfg = l->cfg;
	const struct fg_policy *p = cfg->policy;
	const struct fg_yaml_node *n;
	char buf[FG_YAML_SHOWLEN];
	size_t i, j, found;

	for (i = 0; i < cfg->capture.nmethods; i++) {
		n = methods->kids[i];
		for (j = 0, found = 0; p && j < p->nmethods && !found; j++)
			found = strcmp(p->methods[j].path, cfg->capture.methods[i]) == 0;
		if (!found)
			return fg_config_fail(l, n, "capture.methods: '%s' is not a method of the policy (only "
			                      "intercepted calls are captured)", fg_yaml_show(n, buf, sizeof(buf)));
	}
	for (i = 0; i < cfg->capture.nmetadata; i++) {
		n = metadata->kids[i];
		for (j = 0; p && j < p->nmethods; j++) {
			const struct fg_policy_source *s = &p->methods[j].user_id;
			if (s->kind == FG_POLICY_SRC_HEADER && strcmp(s->header, cfg->capture.metadata[i]) == 0)
				return fg_config_fail(l, n, "capture.metadata: '%s' carries the user id of %s: a "
				                      "capture never holds a raw id", fg_yaml_show(n, buf, sizeof(buf)),
				                      p->methods[j].path);
		}
	}
	return 0;
}

static int capture_finish(struct fg_config_loader *l, const struct fg_yaml_node *val)
{
	int rc;

	if ((rc = check_key_apart(l, val)))
		return rc;
	return (l->flags & FG_CONFIG_LOAD_NO_POLICY) ? 0 : check_policy(l, val);
}

static void free_names(char ***names, size_t *n)
{
	size_t i;

	for (i = 0; *names && i < *n; i++)
		free((*names)[i]);
	free(*names);
	*names = NULL;
	*n = 0;
}

static void capture_release(struct fg_config *cfg)
{
	free(cfg->capture.directory);
	cfg->capture.directory = NULL;
	if (cfg->capture.key) {
		fg_keyring_wipe(cfg->capture.key);
		free(cfg->capture.key);
		cfg->capture.key = NULL;
	}
	free_names(&cfg->capture.methods, &cfg->capture.nmethods);
	free_names(&cfg->capture.metadata, &cfg->capture.nmetadata);
}

const struct fg_config_section fg_config_capture_section = {
	.name = "capture",
	.keys = capture_keys,
	.nkeys = CP_NKEYS,
	.check = capture_check,
	.defaults = capture_defaults,
	.finish = capture_finish,
	.release = capture_release,
};

int fg_config_capture_method(const struct fg_config *cfg, const char *path)
{
	size_t i;

	if (!cfg->capture.enabled)
		return 0;
	if (!cfg->capture.methods)
		return 1;
	for (i = 0; i < cfg->capture.nmethods; i++)
		if (strcmp(cfg->capture.methods[i], path) == 0)
			return 1;
	return 0;
}
