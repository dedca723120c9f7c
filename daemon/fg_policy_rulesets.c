/*
 * fg_policy_rulesets.c - the policy's key "rule_sets": named lists of rule
 * blocks that several methods share (a unary and a streaming method with
 * the same messages need the same rules).  YAML anchors and aliases are
 * refused (fg_yaml.c), so this is the one way to write a list once.
 *
 * A set is not compiled where it is written: it has no message type of its
 * own.  Wherever a list of rule blocks is expected, a scalar names a set,
 * and fg_policy_compile_rule_list() hands its list to the caller, which
 * compiles it against that method's types as if it were written in place.
 * Errors inside a set therefore point at the line the user wrote, and say
 * which method it was being compiled for.  A set no method names is not
 * checked against any type; only its shape is checked here.
 */
#include "config.h"

#include <string.h>

#include "fg_policy_compile-internal.h"

/* The names of the declared sets, for an "unknown rule set" message. */
#define SET_LIST_LEN 256

/* 1 if <n> is <root> or below it. */
static int within(const struct fg_yaml_node *root, const struct fg_yaml_node *n)
{
	size_t i;

	if (root == n)
		return 1;
	for (i = 0; i < root->nkids; i++)
		if (within(root->kids[i], n))
			return 1;
	return 0;
}

/* "name: [blocks]" pairs: a name once, each value a list of mappings. */
static int compile_rule_sets(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                             const struct fg_yaml_node *sets)
{
	char buf[FG_YAML_SHOWLEN];
	size_t i, j;
	int rc;

	(void)s;
	if ((rc = fg_policy_compile_want_kind(c, sets, FG_YAML_MAP, "rule_sets")))
		return rc;
	for (i = 0; i < sets->nkids; i += 2) {
		const struct fg_yaml_node *name = sets->kids[i], *list = sets->kids[i + 1];
		if ((rc = fg_policy_compile_want_scalar(c, name, "a rule set's name")))
			return rc;
		for (j = 0; j < i; j += 2)
			if (strcmp(sets->kids[j]->text, name->text) == 0)
				return fg_policy_compile_fail(c, name, "rule set '%s' is declared twice",
				                              fg_yaml_show(name, buf, sizeof(buf)));
		if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, "a rule set")))
			return rc;
		for (j = 0; j < list->nkids; j++)
			if ((rc = fg_policy_compile_want_kind(c, list->kids[j], FG_YAML_MAP, "a rule block")))
				return rc;
	}
	c->rule_sets = sets;
	return 0;
}

/* "no rule set named 'x'", with the names there are. */
static int unknown_set(struct fg_policy_comp *c, const struct fg_yaml_node *val, const char *what)
{
	char names[SET_LIST_LEN] = "", buf[FG_YAML_SHOWLEN];
	size_t i;

	if (!c->rule_sets || c->rule_sets->nkids == 0)
		return fg_policy_compile_fail(c, val, "%s: no rule set named '%s' (the policy declares no rule_sets; "
		                              "write the list of rule blocks here, or declare it under rule_sets)",
		                              what, fg_yaml_show(val, buf, sizeof(buf)));
	for (i = 0; i < c->rule_sets->nkids; i += 2) {
		strncat(names, i ? ", " : "", sizeof(names) - strlen(names) - 1);
		strncat(names, c->rule_sets->kids[i]->text, sizeof(names) - strlen(names) - 1);
	}
	return fg_policy_compile_fail(c, val, "%s: no rule set named '%s' (rule_sets declares: %s)", what,
	                              fg_yaml_show(val, buf, sizeof(buf)), names);
}

int fg_policy_compile_rule_list(struct fg_policy_comp *c, const struct fg_yaml_node *val, const char *what,
                                const struct fg_yaml_node **list)
{
	size_t i;

	c->set_name = NULL;
	c->set_list = NULL;
	c->set_what = what;
	if (val->kind == FG_YAML_SEQ) {
		*list = val;
		return 0;
	}
	if (val->kind != FG_YAML_SCALAR || val->len == 0)
		return fg_policy_compile_fail(c, val, "%s must be a list of rule blocks or the name of a rule set, not %s",
		                              what, fg_yaml_kind_name(val));
	for (i = 0; c->rule_sets && i < c->rule_sets->nkids; i += 2)
		if (strcmp(c->rule_sets->kids[i]->text, val->text) == 0) {
			c->set_name = c->rule_sets->kids[i];
			c->set_list = c->rule_sets->kids[i + 1];
			*list = c->set_list;
			return 0;
		}
	return unknown_set(c, val, what);
}

/* Called by fg_policy_compile_fail(): 1 when <at> is inside the rule set
 * being compiled, which the message then names. */
int fg_policy_rulesets_in_set(const struct fg_policy_comp *c, const struct fg_yaml_node *at)
{
	return c->set_list && at && within(c->set_list, at);
}

const struct fg_policy_key fg_policy_rulesets_key = { "rule_sets", 0, compile_rule_sets };
