/*
 * fg_policy_methods.c - the policy's key "methods": the gRPC methods
 * feedguard intercepts, each checked against the descriptor set and
 * compiled through the table of a method's keys below.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_compile-internal.h"

/* A method's keys, in the order they compile: where the user and band
 * come from (a method without age_band stops here), then the rule blocks. */
static const struct fg_policy_key *const method_keys[] = {
	&fg_policy_sources_user_id_key,
	&fg_policy_sources_age_band_key,
	&fg_policy_blocks_request_key,
	&fg_policy_blocks_response_key,
	&fg_policy_filter_feed_key,
	&fg_policy_filter_filter_key,
	&fg_policy_limits_method_zone_key,
	&fg_policy_limits_screen_time_key,
	&fg_policy_capture_redact_key,
};

_Static_assert(FG_POLICY_NELEM(method_keys) <= FG_POLICY_LEVEL_MAX_KEYS, "method keys");

static int find_method(const struct fg_schema *schema, const char *path, const struct fg_schema_message **in,
                       const struct fg_schema_message **out, int *cs, int *ss)
{
	const struct fg_schema_method *m = fg_schema_find_method(schema, path);

	if (!m)
		return FG_ENOTFOUND;
	*in = fg_schema_method_input(m);
	*out = fg_schema_method_output(m);
	*cs = (fg_schema_method_flags(m) & FG_SCHEMA_M_CLIENT_STREAMING) != 0;
	*ss = (fg_schema_method_flags(m) & FG_SCHEMA_M_SERVER_STREAMING) != 0;
	return 0;
}

/* Method <key> (its path) with its keys in mapping <val>, into <m>. */
static int read_method(struct fg_policy_comp *c, const struct fg_yaml_node *key,
                       const struct fg_yaml_node *val, struct fg_policy_method *m)
{
	struct fg_policy_scope s = { .map = val, .method_key = key, .method = m };
	char buf[FG_YAML_SHOWLEN];
	int rc, cs, ss;

	if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_MAP, "a method")))
		return rc;
	if ((rc = fg_policy_compile_keys_check(c, val, method_keys, FG_POLICY_NELEM(method_keys), 0, "a method")))
		return rc;
	if (find_method(c->schema, key->text, &s.in, &s.out, &cs, &ss) < 0)
		return fg_policy_compile_fail(c, key, "method '%s' is not in the descriptor set "
		                              "(write it as /package.Service/Method)", fg_yaml_show(key, buf, sizeof(buf)));
	m->path = fg_policy_compile_dup(c, key);
	m->client_streaming = (unsigned)cs;
	m->server_streaming = (unsigned)ss;
	m->request = fg_policy_compile_alloc(c, c->pol->nbands * sizeof(*m->request));
	m->response = fg_policy_compile_alloc(c, c->pol->nbands * sizeof(*m->response));
	if (!m->path || !m->request || !m->response)
		return fg_policy_compile_nomem(c);
	c->method = key;
	rc = fg_policy_compile_keys_run(c, &s, method_keys, FG_POLICY_NELEM(method_keys), 0);
	c->method = NULL;
	return rc;
}

static int method_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fg_policy_method *)a)->path, ((const struct fg_policy_method *)b)->path);
}

/* Sorted by path, so a call finds its method by binary search. */
static int compile_methods(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *ms)
{
	char buf[FG_YAML_SHOWLEN];
	size_t i, j;
	int rc;

	if (!ms)
		return fg_policy_compile_fail(c, s->map, "'methods' is required: the gRPC methods feedguard intercepts");
	if ((rc = fg_policy_compile_want_kind(c, ms, FG_YAML_MAP, "methods")))
		return rc;
	c->pol->methods = fg_policy_compile_alloc(c, (ms->nkids / 2 + 1) * sizeof(*c->pol->methods));
	if (!c->pol->methods)
		return fg_policy_compile_nomem(c);
	for (i = 0; i < ms->nkids; i += 2) {
		for (j = 0; j < i; j += 2)
			if (strcmp(ms->kids[j]->text, ms->kids[i]->text) == 0)
				return fg_policy_compile_fail(c, ms->kids[i], "method '%s' is listed twice",
				                              fg_yaml_show(ms->kids[i], buf, sizeof(buf)));
		if ((rc = read_method(c, ms->kids[i], ms->kids[i + 1], &c->pol->methods[c->pol->nmethods])))
			return rc;
		c->pol->nmethods++;
	}
	qsort(c->pol->methods, c->pol->nmethods, sizeof(*c->pol->methods), method_cmp);
	for (i = 0; i < c->pol->nmethods; i++)
		c->pol->methods[i].index = i;
	return 0;
}

const struct fg_policy_key fg_policy_methods_key = { "methods", FG_POLICY_KEY_ALWAYS, compile_methods };

const struct fg_policy_mount fg_policy_methods_mounts[] = {
	{ .path = "methods.<method>", .level = method_keys, .nlevel = FG_POLICY_NELEM(method_keys) },
	{ .path = NULL },
};
