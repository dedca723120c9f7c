/*
 * fg_config_walk.c - the config's schema walker: each key of the file is
 * looked up in its table (the sections, then a section's keys) and handed
 * to that entry's parse function, in the file's order.
 *
 * Unknown and repeated keys are refused here, once for every section, with
 * the valid keys named: a typo must never be silently ignored.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fg_config-internal.h"

/* The valid keys listed in an "unknown key" message; longer lists are cut. */
#define KEY_LIST_LEN 256

/* 1 if <name> is the text of key <key> (which may hold a NUL byte). */
static int key_is(const char *name, const struct fg_yaml_node *key)
{
	return strlen(name) == key->len && memcmp(name, key->text, key->len) == 0;
}

/* Append ", <name>" (no comma before the first) to <list>, whose <*n>
 * bytes are used; a full list stays cut where it ends. */
static void list_add(char *list, size_t *n, size_t i, const char *name)
{
	if (*n < KEY_LIST_LEN)
		*n += (size_t)snprintf(list + *n, KEY_LIST_LEN - *n, "%s%s", i ? ", " : "", name);
}

static int fail_unknown_key(struct fg_config_loader *l, const struct fg_config_section *s,
                            const struct fg_yaml_node *key)
{
	char list[KEY_LIST_LEN], buf[FG_YAML_SHOWLEN];
	size_t n = 0;

	list[0] = '\0';
	for (size_t i = 0; i < s->nkeys; i++)
		list_add(list, &n, i, s->keys[i].name);
	return fg_config_fail(l, key, "unknown key '%s' in %s; valid keys: %s",
	                      fg_yaml_show(key, buf, sizeof(buf)), s->name, list);
}

/* The README writes nested keys dotted (admin.listen); a key written that
 * way at the top level gets the nested form in its message. */
static int fail_dotted(struct fg_config_loader *l, const struct fg_config_section *const *sections,
                       size_t nsections, const struct fg_yaml_node *key)
{
	const char *dot = memchr(key->text, '.', key->len);
	char buf[FG_YAML_SHOWLEN];

	for (size_t i = 0; dot && i < nsections; i++)
		if (strlen(sections[i]->name) == (size_t)(dot - key->text) &&
		    memcmp(sections[i]->name, key->text, (size_t)(dot - key->text)) == 0 && sections[i]->nkeys > 0)
			return fg_config_fail(l, key, "unknown key '%s': a dotted key of the reference is nested in the "
			                      "file (write '%s:' and the rest of the name inside it)",
			                      fg_yaml_show(key, buf, sizeof(buf)), sections[i]->name);
	return 0;
}

static int fail_unknown_section(struct fg_config_loader *l, const struct fg_config_section *const *sections,
                                size_t nsections, const struct fg_yaml_node *key)
{
	char list[KEY_LIST_LEN], buf[FG_YAML_SHOWLEN];
	size_t n = 0;
	int rc;

	if ((rc = fail_dotted(l, sections, nsections, key)))
		return rc;
	list[0] = '\0';
	for (size_t i = 0; i < nsections; i++)
		list_add(list, &n, i, sections[i]->name);
	return fg_config_fail(l, key, "unknown key '%s'; valid keys: %s", fg_yaml_show(key, buf, sizeof(buf)), list);
}

/* A key seen before in the same mapping: the loader's <key> names it. */
static int fail_duplicate(struct fg_config_loader *l, const struct fg_yaml_node *key,
                          const struct fg_yaml_node *first)
{
	return fg_config_fail(l, key, "duplicate key '%s' (first at %u:%u)", l->key, first->line, first->col);
}

/* The first key of mapping <map> that is <name>. */
static const struct fg_yaml_node *first_key(const struct fg_yaml_node *map, const char *name)
{
	size_t i;

	for (i = 0; i + 1 < map->nkids && !key_is(name, map->kids[i]); i += 2)
		;
	return map->kids[i];
}

/* Fill the fields of mapping section <s> from <map>; <where> (the
 * section's key) is where its cross-key checks point. */
static int walk_keys(struct fg_config_loader *l, const struct fg_config_section *s,
                     const struct fg_yaml_node *map, const struct fg_yaml_node *where)
{
	const struct fg_yaml_node *seen[FG_CONFIG_SECTION_MAX_KEYS] = { NULL };
	size_t idx;
	int rc;

	for (size_t i = 0; i + 1 < map->nkids; i += 2) {
		const struct fg_yaml_node *key = map->kids[i], *val = map->kids[i + 1];

		for (idx = 0; idx < s->nkeys && !key_is(s->keys[idx].name, key); idx++)
			;
		if (idx == s->nkeys)
			return fail_unknown_key(l, s, key);
		snprintf(l->key, sizeof(l->key), "%s.%s", s->name, s->keys[idx].name);
		if (seen[idx])
			return fail_duplicate(l, key, seen[idx]);
		seen[idx] = key;
		rc = s->keys[idx].parse(l, &s->keys[idx], key, val);
		if (rc)
			return rc;
	}
	return s->check ? s->check(l, where, seen) : 0;
}

/* Section <s>'s value <val>, at top-level key <key>. */
static int walk_section(struct fg_config_loader *l, const struct fg_config_section *s,
                        const struct fg_yaml_node *key, const struct fg_yaml_node *val)
{
	if (s->parse)
		return s->parse(l, key, val);
	if (val->kind != FG_YAML_MAP)
		return fg_config_fail(l, val, "%s must be a mapping of keys, not %s", s->name,
		                      fg_yaml_kind_name(val));
	return walk_keys(l, s, val, key);
}

int fg_config_walk_sections(struct fg_config_loader *l, const struct fg_config_section *const *sections,
                            size_t n, const struct fg_yaml_node *root, const struct fg_yaml_node **vals)
{
	size_t idx;
	int rc;

	for (idx = 0; idx < n; idx++)
		vals[idx] = NULL;
	for (size_t i = 0; i + 1 < root->nkids; i += 2) {
		const struct fg_yaml_node *key = root->kids[i], *val = root->kids[i + 1];

		for (idx = 0; idx < n && !key_is(sections[idx]->name, key); idx++)
			;
		if (idx == n)
			return fail_unknown_section(l, sections, n, key);
		snprintf(l->key, sizeof(l->key), "%s", sections[idx]->name);
		if (vals[idx])
			return fail_duplicate(l, key, first_key(root, sections[idx]->name));
		vals[idx] = val;
		rc = walk_section(l, sections[idx], key, val);
		if (rc)
			return rc;
	}
	for (idx = 0; idx < n; idx++)
		if (!vals[idx] && sections[idx]->required)
			return fg_config_fail(l, root, "%s", sections[idx]->required);
	return 0;
}
