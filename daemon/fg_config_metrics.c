/*
 * fg_config_metrics.c - config section "metrics": the gRPC methods that
 * get a method label of their own (struct fg_config's <metrics>).  Not
 * reloadable: the label slots are fixed for the life of the process.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fg_config-internal.h"

/* Characters of a protobuf package-qualified service name, and of a method
 * name.  Only what gRPC itself puts in :path is accepted: the value is
 * matched byte for byte and printed into Prometheus label values, where a
 * quote or backslash would need escaping. */
#define SERVICE_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
#define METHOD_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

/* 1 if <s> is "/<service>/<method>" (gRPC PROTOCOL-HTTP2.md, Path). */
static int method_path_ok(const char *s)
{
	size_t n;

	if (*s++ != '/')
		return 0;
	n = strspn(s, SERVICE_CHARS);
	if (n == 0 || s[n] != '/')
		return 0;
	s += n + 1;
	n = strspn(s, METHOD_CHARS);
	return n > 0 && s[n] == '\0';
}

/* Check item <i> of <items> and append it to metrics.methods. */
static int add_method(struct fg_config_loader *l, const struct fg_yaml_node *const *items, size_t i)
{
	struct fg_config *cfg = l->cfg;
	const struct fg_yaml_node *val = items[i];
	char buf[FG_YAML_SHOWLEN];
	int rc = fg_config_value_want(l, val, "a method path such as /pkg.Service/Method");

	if (rc)
		return rc;
	if (!method_path_ok(val->text))
		return fg_config_fail(l, val, "metrics.methods: '%s' is not a gRPC method path "
		                      "(/package.Service/Method)", fg_yaml_show(val, buf, sizeof(buf)));
	for (size_t j = 0; j < i; j++)
		if (strcmp(items[j]->text, val->text) == 0)
			return fg_config_fail(l, val, "metrics.methods: '%s' is listed twice (first at %u:%u)",
			                      fg_yaml_show(val, buf, sizeof(buf)), items[j]->line, items[j]->col);
	cfg->metrics.methods[cfg->metrics.nmethods] = strdup(val->text);
	if (!cfg->metrics.methods[cfg->metrics.nmethods])
		return fg_config_fail_nomem(l);
	cfg->metrics.line[cfg->metrics.nmethods] = val->line;
	cfg->metrics.col[cfg->metrics.nmethods] = val->col;
	cfg->metrics.nmethods++;
	return 0;
}

static int parse_methods(struct fg_config_loader *l, const struct fg_config_key *k,
                         const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	const struct fg_yaml_node *const *items = (const struct fg_yaml_node *const *)val->kids;
	int rc;

	if (val->kind != FG_YAML_SEQ)
		return fg_config_fail(l, val, "metrics.methods must be a list of method paths, not %s",
		                      fg_yaml_kind_name(val));
	if (val->nkids > FG_CONFIG_MAX_METHODS)
		return fg_config_fail(l, items[FG_CONFIG_MAX_METHODS], "metrics.methods: more than %d methods",
		                      FG_CONFIG_MAX_METHODS);
	for (size_t i = 0; i < val->nkids; i++) {
		rc = add_method(l, items, i);
		if (rc)
			return rc;
	}
	return 0;
}

static const struct fg_config_key metrics_keys[] = {
	{ "methods", parse_methods, 0, 0, 0, NULL },
};

static void metrics_release(struct fg_config *cfg)
{
	for (int i = 0; i < cfg->metrics.nmethods; i++)
		free(cfg->metrics.methods[i]);
}

static const char *metrics_reload_fixed(const struct fg_config *cur, const struct fg_config *next)
{
	int same = cur->metrics.nmethods == next->metrics.nmethods;

	for (int i = 0; same && i < cur->metrics.nmethods; i++)
		same = strcmp(cur->metrics.methods[i], next->metrics.methods[i]) == 0;
	return same ? NULL : "metrics.methods";
}

const struct fg_config_section fg_config_metrics_section = {
	.name = "metrics",
	.keys = metrics_keys,
	.nkeys = FG_CONFIG_NELEM(metrics_keys),
	.release = metrics_release,
	.reload_fixed = metrics_reload_fixed,
};
