/*
 * fg_config_policy.c - config section "policy": the path of the policy
 * file, compiled (fg_policy_compile.h) into the snapshot once the whole
 * config is read.  Reloadable: calls in flight keep the policy they
 * started with.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_config-internal.h"
#include "fg_cpu.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_policy_compile.h"

static int parse_policy(struct fg_config_loader *l, const struct fg_yaml_node *key,
                        const struct fg_yaml_node *val)
{
	int rc = fg_config_value_want(l, val, "the path of a policy file");

	if (rc)
		return rc;
	l->cfg->policy_path = fg_yaml_path_resolve(l->basedir, val->text);
	return l->cfg->policy_path ? 0 : fg_config_fail_nomem(l);
}

/* A policy that pseudonymizes needs a key ring: without one every
 * pseudonymized field would be dropped on every call, which is not what
 * its writer asked for.  Said at the rule, naming this file. */
static int check_keys(struct fg_config_loader *l)
{
	const struct fg_config *cfg = l->cfg;

	if (!cfg->policy->need_keys_at || (cfg->keyring && cfg->keyring->n > 0))
		return 0;
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s: pseudonymize needs pseudonym_keys in %s, which has none "
		         "(the pseudonym is a keyed HMAC of the user id)", cfg->policy->need_keys_at, l->name);
	return FG_ECONFIG;
}

/* Limits keep per-user state: in Redis (state), under pseudonyms (keys). */
static int check_state(struct fg_config_loader *l)
{
	const struct fg_config *cfg = l->cfg;
	const char *what = NULL;

	if (!cfg->policy->need_state_at)
		return 0;
	if (!cfg->state.enabled)
		what = "state.redis (where the per-user state is kept)";
	else if (!cfg->keyring || cfg->keyring->n == 0)
		what = "pseudonym_keys (state is kept per pseudonym, a keyed HMAC of the user id)";
	if (!what)
		return 0;
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s: limits need %s in %s, which has none", cfg->policy->need_state_at, what,
		         l->name);
	return FG_ECONFIG;
}

static int cmp_path(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first of the set's sorted method paths at or after <key>. */
static size_t lower_bound(char *const *paths, size_t n, const char *key)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(paths[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * A metrics.methods entry of a service the policy's descriptor set
 * defines must be one of its methods: "/acme.Feed/GetFeeed" would label
 * nothing while GetFeed counted as "other", and -t said the config was
 * fine (a README-only trial).  A service the set does not define (a
 * health check, another team's API) is the operator's to name.
 */
static int check_metrics(struct fg_config_loader *l)
{
	const struct fg_config *cfg = l->cfg;
	const struct fg_policy *p = cfg->policy;
	char svc[256], known[256];
	size_t at, n, k;

	/* only the daemon labels calls: a tool's load (feedguardctl) would take
	 * it for a policy that does not compile */
	if (!(l->flags & FG_CONFIG_LOAD_DAEMON))
		return 0;
	for (int i = 0; i < cfg->metrics.nmethods; i++) {
		const char *m = cfg->metrics.methods[i], *slash = strrchr(m, '/');
		if (bsearch(&m, p->set_methods, p->nset_methods, sizeof(*p->set_methods), cmp_path))
			continue;
		n = (size_t)(slash - m) + 1;            /* "/pkg.Service/" */
		if (n >= sizeof(svc))
			continue;
		memcpy(svc, m, n);
		svc[n] = '\0';
		at = lower_bound(p->set_methods, p->nset_methods, svc);
		if (at == p->nset_methods || strncmp(p->set_methods[at], svc, n) != 0)
			continue;
		known[0] = '\0';
		for (k = at; k < p->nset_methods && strncmp(p->set_methods[k], svc, n) == 0 && k < at + 8; k++)
			snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s", k > at ? ", " : "",
			         p->set_methods[k] + n);
		if (l->err && l->errlen)
			snprintf(l->err, l->errlen, "%s:%u:%u: metrics.methods: '%s': the policy's descriptor set has "
			         "service %.*s but no such method (its methods: %s%s); a method newer than the set "
			         "needs the set rebuilt", l->name, cfg->metrics.line[i], cfg->metrics.col[i], m,
			         (int)(n - 2), svc + 1, known,
			         k < p->nset_methods && strncmp(p->set_methods[k], svc, n) == 0 ? ", ..." : "");
		return FG_ECONFIG;
	}
	return 0;
}

/* Compiled last, when the worker count its counters need is known: one
 * counter slot per worker (workers: auto counts CPUs the way the daemon
 * will). */
static int policy_finish(struct fg_config_loader *l, const struct fg_yaml_node *val)
{
	struct fg_config *cfg = l->cfg;
	size_t slots = cfg->workers ? (size_t)cfg->workers : (size_t)fg_cpu_count();
	char why[FG_CONFIG_ERRLEN];
	int rc;

	if (l->flags & FG_CONFIG_LOAD_NO_POLICY)
		return 0;
	rc = fg_policy_compile_load(cfg->policy_path, slots, &cfg->policy, why, sizeof(why));
	/* A policy that cannot be read is an error of this file, at the key
	 * naming it; errors inside the policy carry its own position, and are
	 * passed on as they are (not through fg_config_fail, which would make
	 * them safe to quote itself). */
	if (rc == FG_EIO)
		return fg_config_fail(l, val, "policy: %s", why);
	if (rc) {
		fg_yaml_printable(why);
		if (l->err && l->errlen)
			snprintf(l->err, l->errlen, "%s", why);
		return rc;
	}
	if ((rc = check_keys(l)))
		return rc;
	if ((rc = check_state(l)))
		return rc;
	return check_metrics(l);
}

static void policy_release(struct fg_config *cfg)
{
	free(cfg->policy_path);
	cfg->policy_path = NULL;
	fg_policy_compile_free(cfg->policy);
	cfg->policy = NULL;
}

const struct fg_config_section fg_config_policy_section = {
	.name = "policy",
	.parse = parse_policy,
	.finish = policy_finish,
	.release = policy_release,
};
