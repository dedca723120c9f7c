/*
 * fg_config_policy.c - config section "policy": the path of the policy
 * file, compiled (fg_policy_compile.h) into the snapshot once the whole
 * config is read.  Reloadable: calls in flight keep the policy they
 * started with.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

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
	return check_state(l);
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
