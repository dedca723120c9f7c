/*
 * fg_config.c - the config loader: a YAML file turned into an immutable,
 * refcounted fg_config snapshot, and the checks a reload must pass.
 *
 * Two passes.  First fg_yaml reads the file into a small tree of nodes that
 * keep their positions (within this file's size, depth and node limits);
 * then fg_config_walk hands each top-level key to its section, one
 * fg_config_<section>.c per key, listed in the table below.  This file
 * knows no key: each section brings its defaults, what it owns in the
 * snapshot and what a reload may not change (fg_config-internal.h).
 *
 * This parser reads operator files and is fuzzed: every input must end in
 * a snapshot or a message, never a crash or a leak, so every value is
 * checked for type, syntax and range.
 */
#include "config.h"

#include "fg_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fg_config-internal.h"
#include "fg_error.h"
#include "fg_yaml.h"

/* A config is a page of text; anything larger is a mistake or an attack. */
#define CONFIG_MAX_BYTES (1 << 20)
/* The schema nests three deep (root, section, value); allow some slack for
 * a misplaced block so the error is about the key, not the depth. */
#define CONFIG_MAX_DEPTH 16
/* Bounds the tree's memory whatever the input. */
#define CONFIG_MAX_NODES 10000

static const struct fg_yaml_limits config_limits = {
	.max_bytes = CONFIG_MAX_BYTES,
	.max_depth = CONFIG_MAX_DEPTH,
	.max_nodes = CONFIG_MAX_NODES,
};

/* Where errors about the file as a whole point, as editors count. */
static const struct fg_yaml_node file_start = { .kind = FG_YAML_MAP, .line = 1, .col = 1 };

/* Every top-level key, in the order "unknown key" messages list them and
 * reload checks run. */
static const struct fg_config_section *const sections[] = {
	&fg_config_listen_section,
	&fg_config_workers_section,
	&fg_config_upstream_section,
	&fg_config_limits_section,
	&fg_config_timeouts_section,
	&fg_config_admin_section,
	&fg_config_metrics_section,
	&fg_config_log_section,
	&fg_config_policy_section,
	&fg_config_pseudonym_keys_section,
	&fg_config_state_section,
	&fg_config_capture_section,
};

#define NSECTIONS FG_CONFIG_NELEM(sections)

/* --- messages -------------------------------------------------------- */

int fg_config_fail(struct fg_config_loader *l, const struct fg_yaml_node *at, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = fg_yaml_vfail(l->err, l->errlen, l->name, at, fmt, ap);
	va_end(ap);
	return rc;
}

int fg_config_fail_nomem(struct fg_config_loader *l)
{
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s: out of memory", l->name);
	return FG_ENOMEM;
}

/* --- snapshots ---------------------------------------------------------- */

static void config_free(struct fg_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < NSECTIONS; i++)
		if (sections[i]->release)
			sections[i]->release(cfg);
	free(cfg->path);
	free(cfg);
}

/* The sections of the file read, each section's finish step runs (in table
 * order), now that every value is known. */
static int finish_sections(struct fg_config_loader *l, const struct fg_yaml_node *const *vals)
{
	int rc;

	for (size_t i = 0; i < NSECTIONS; i++)
		if (vals[i] && sections[i]->finish && (rc = sections[i]->finish(l, vals[i])))
			return rc;
	return 0;
}

/* Whether binding both would collide: one port, one family, and the same
 * host or a wildcard on either side. */
static int addrs_collide(const struct fg_config_addr *a, const struct fg_config_addr *b)
{
	if (!fg_config_addr_port(a) || fg_config_addr_port(a) != fg_config_addr_port(b) ||
	    a->sa.ss_family != b->sa.ss_family)
		return 0;
	if (a->sa.ss_family == AF_INET6) {
		const struct in6_addr *x = &((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
		const struct in6_addr *y = &((const struct sockaddr_in6 *)&b->sa)->sin6_addr;
		return IN6_IS_ADDR_UNSPECIFIED(x) || IN6_IS_ADDR_UNSPECIFIED(y) || IN6_ARE_ADDR_EQUAL(x, y);
	}
	in_addr_t x = ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr;
	in_addr_t y = ((const struct sockaddr_in *)&b->sa)->sin_addr.s_addr;
	return x == htonl(INADDR_ANY) || y == htonl(INADDR_ANY) || x == y;
}

/* The admin endpoint and a listen address on one port would pass -t and
 * then fail at start ("Address already in use"): said here, at the
 * admin section (or listen, or the file's top when both are defaults). */
static int check_admin_port(struct fg_config_loader *l, const struct fg_yaml_node *const *vals,
                            const struct fg_yaml_node *root)
{
	const struct fg_yaml_node *at = root;

	if (!l->cfg->admin.enabled)
		return 0;
	for (size_t i = 0; i < NSECTIONS; i++)
		if ((sections[i] == &fg_config_admin_section || sections[i] == &fg_config_listen_section) && vals[i])
			at = vals[i];
	for (int i = 0; i < l->cfg->nlisten; i++)
		if (addrs_collide(&l->cfg->admin.listen, &l->cfg->listen[i]))
			return fg_config_fail(l, at, "admin.listen %s and listen %s are on one port: each needs "
			                      "its own", l->cfg->admin.listen.text, l->cfg->listen[i].text);
	return 0;
}

/* Parse <len> bytes at <text> into a new snapshot; takes <path> (absolute, owned). */
static int load(struct fg_config_loader *l, const char *text, size_t len, char *path, struct fg_config **out)
{
	const struct fg_yaml_node *vals[NSECTIONS];
	struct fg_yaml_node *root = NULL;
	int rc;

	l->cfg = calloc(1, sizeof(*l->cfg));
	if (!l->cfg) {
		free(path);
		return fg_config_fail_nomem(l);
	}
	l->cfg->path = path;
	l->cfg->refcount = 1;
	for (size_t i = 0; i < NSECTIONS; i++)
		if (sections[i]->defaults)
			sections[i]->defaults(l->cfg);
	rc = fg_yaml_parse(l->name, text, len, &config_limits, &root, l->err, l->errlen);
	if (rc)
		goto out_free_cfg;
	rc = fg_config_walk_sections(l, sections, NSECTIONS, root, vals);
	if (rc == 0)
		rc = finish_sections(l, vals);
	if (rc == 0)
		rc = check_admin_port(l, vals, root);
	fg_yaml_free(root);
	if (rc)
		goto out_free_cfg;
	*out = l->cfg;
	return 0;

out_free_cfg:
	config_free(l->cfg);
	l->cfg = NULL;
	return rc;
}

static void loader_init(struct fg_config_loader *l, const char *name, char *err, size_t errlen)
{
	memset(l, 0, sizeof(*l));
	l->name = name ? name : "<string>";
	l->err = err;
	l->errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
}

int fg_config_load_string(const char *name, const char *basedir, const char *text, size_t len,
                          struct fg_config **out, char *err, size_t errlen)
{
	struct fg_config_loader l;
	char *path;
	int rc;

	*out = NULL;
	loader_init(&l, name, err, errlen);
	l.basedir = basedir ? fg_yaml_path_resolve(NULL, basedir) : getcwd(NULL, 0);
	if (!l.basedir)
		return errno == ENOMEM ? fg_config_fail_nomem(&l)
		       : fg_config_fail(&l, &file_start, "cannot resolve the base directory: %s", strerror(errno));
	path = fg_yaml_path_resolve(l.basedir, l.name);
	rc = path ? load(&l, text, len, path, out) : fg_config_fail_nomem(&l);
	free(l.basedir);
	return rc;
}

/* The current directory is gone or unreadable: <path> has no absolute form. */
static int fail_resolve(struct fg_config_loader *l, int errnum)
{
	if (errnum == ENOMEM)
		return fg_config_fail_nomem(l);
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s: cannot resolve its directory: %s", l->name,
		         strerror(errnum));
	errno = errnum;
	return FG_EIO;
}

int fg_config_load(const char *path, struct fg_config **out, char *err, size_t errlen)
{
	return fg_config_load_flags(path, 0, out, err, errlen);
}

int fg_config_load_flags(const char *path, unsigned flags, struct fg_config **out, char *err, size_t errlen)
{
	struct fg_config_loader l;
	char *text, *abspath;
	size_t len;
	int rc;

	*out = NULL;
	loader_init(&l, path, err, errlen);
	l.flags = flags;
	rc = fg_yaml_read_file(path, CONFIG_MAX_BYTES, &text, &len, err, errlen);
	if (rc)
		return rc;
	abspath = fg_yaml_path_resolve(NULL, path);
	if (!abspath) {
		rc = fail_resolve(&l, errno);
		goto out_free_text;
	}
	l.basedir = fg_yaml_path_dirname(abspath);
	if (!l.basedir) {
		free(abspath);
		rc = fg_config_fail_nomem(&l);
		goto out_free_text;
	}
	rc = load(&l, text, len, abspath, out);
	free(l.basedir);
out_free_text:
	free(text);
	return rc;
}

struct fg_config *fg_config_ref(struct fg_config *cfg)
{
	/* relaxed: the caller already holds a reference, so no one frees it now */
	__atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
	return cfg;
}

void fg_config_unref(struct fg_config *cfg)
{
	/* acq_rel: every holder's reads happen before the last one frees */
	if (cfg && __atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

/* --- the keys ------------------------------------------------------------ */

void fg_config_keys_each(fg_config_key_cb cb, void *arg)
{
	/* A section's name, a dot and a key's name: the loader's own bound on
	 * a dotted name (struct fg_config_loader's key). */
	char path[sizeof(((struct fg_config_loader *)0)->key)];

	for (size_t i = 0; i < NSECTIONS; i++) {
		const struct fg_config_section *s = sections[i];

		cb(s->name, s->parse ? 0 : FG_CONFIG_KEY_SECTION, arg);
		for (size_t k = 0; k < s->nkeys; k++) {
			snprintf(path, sizeof(path), "%s.%s", s->name, s->keys[k].name);
			cb(path, 0, arg);
		}
	}
}

int fg_config_reload_check(const struct fg_config *cur, const struct fg_config *next, char *err,
                           size_t errlen)
{
	const char *key;

	for (size_t i = 0; i < NSECTIONS; i++) {
		if (sections[i]->reload_fixed && (key = sections[i]->reload_fixed(cur, next))) {
			if (err && errlen)
				snprintf(err, errlen, "%s cannot change on reload; restart the daemon", key);
			return FG_ECONFIG;
		}
	}
	if (err && errlen)
		err[0] = '\0';
	return 0;
}
