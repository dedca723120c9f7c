/*
 * fg_policy_bands.c - the policy's keys "bands" (the age bands, most
 * protective first, and the values that select each) and "unknown_band"
 * (the band for a missing, unknown or malformed value).
 */
#include "config.h"

#include <string.h>

#include "fg_policy_compile-internal.h"

static const char *const band_keys[] = { "name", "match", NULL };

int fg_policy_bands_find(const struct fg_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nbands; i++)
		if (strcmp(p->bands[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* The values that select band <b>; without a match list, its own name. */
static int read_match(struct fg_policy_comp *c, const struct fg_yaml_node *match, struct fg_policy_band *b)
{
	size_t i;
	int rc;

	if (!match) {
		b->match = fg_policy_compile_alloc(c, sizeof(char *));
		b->match_len = fg_policy_compile_alloc(c, sizeof(size_t));
		if (!b->name || !b->match || !b->match_len)
			return fg_policy_compile_nomem(c);
		b->match[0] = b->name;
		b->match_len[0] = strlen(b->name);
		b->nmatch = 1;
		return 0;
	}
	if ((rc = fg_policy_compile_want_kind(c, match, FG_YAML_SEQ, "a band's match")))
		return rc;
	if (match->nkids > FG_POLICY_MAX_MATCH)
		return fg_policy_compile_fail(c, match->kids[FG_POLICY_MAX_MATCH],
		                              "a band's match may hold at most %d values", FG_POLICY_MAX_MATCH);
	b->match = fg_policy_compile_alloc(c, (match->nkids ? match->nkids : 1) * sizeof(char *));
	b->match_len = fg_policy_compile_alloc(c, (match->nkids ? match->nkids : 1) * sizeof(size_t));
	if (!b->name || !b->match || !b->match_len)
		return fg_policy_compile_nomem(c);
	for (i = 0; i < match->nkids; i++) {
		if ((rc = fg_policy_compile_want_scalar(c, match->kids[i], "a band value")))
			return rc;
		if (!(b->match[b->nmatch] = fg_policy_compile_dup(c, match->kids[i])))
			return fg_policy_compile_nomem(c);
		b->match_len[b->nmatch] = strlen(b->match[b->nmatch]);
		b->nmatch++;
	}
	return 0;
}

static int read_band(struct fg_policy_comp *c, const struct fg_yaml_node *item, struct fg_policy_band *b)
{
	const struct fg_yaml_node *name;
	char buf[FG_YAML_SHOWLEN];
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, item, FG_YAML_MAP, "a band")) ||
	    (rc = fg_policy_compile_check_record(c, item, band_keys, "a band")))
		return rc;
	name = fg_yaml_map_get(item, "name");
	if (!name)
		return fg_policy_compile_fail(c, item, "a band needs a name");
	if ((rc = fg_policy_compile_want_scalar(c, name, "a band's name")))
		return rc;
	if (fg_policy_bands_find(c->pol, name->text) >= 0)
		return fg_policy_compile_fail(c, name, "band '%s' is declared twice",
		                              fg_yaml_show(name, buf, sizeof(buf)));
	b->name = fg_policy_compile_dup(c, name);
	return read_match(c, fg_yaml_map_get(item, "match"), b);
}

/* A value (header or field) may select one band only. */
static int check_band_values(struct fg_policy_comp *c, const struct fg_yaml_node *bands)
{
	struct fg_policy *p = c->pol;
	size_t a, b, i, j;

	for (a = 0; a < p->nbands; a++)
		for (i = 0; i < p->bands[a].nmatch; i++)
			for (b = a; b < p->nbands; b++)
				for (j = (a == b ? i + 1 : 0); j < p->bands[b].nmatch; j++)
					if (strcmp(p->bands[a].match[i], p->bands[b].match[j]) == 0)
						return fg_policy_compile_fail(c, bands->kids[b],
						                              "value '%s' selects both band '%s' and band '%s'",
						                              p->bands[b].match[j], p->bands[a].name,
						                              p->bands[b].name);
	return 0;
}

static int compile_bands(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                         const struct fg_yaml_node *bands)
{
	size_t i;
	int rc;

	if (!bands)
		return fg_policy_compile_fail(c, s->map, "'bands' is required: the age bands the platform uses, "
		                                         "most protective first");
	if ((rc = fg_policy_compile_want_kind(c, bands, FG_YAML_SEQ, "bands")))
		return rc;
	if (bands->nkids == 0 || bands->nkids > FG_POLICY_MAX_BANDS)
		return fg_policy_compile_fail(c, bands, "bands must list 1 to %d bands", FG_POLICY_MAX_BANDS);
	c->pol->bands = fg_policy_compile_alloc(c, bands->nkids * sizeof(*c->pol->bands));
	if (!c->pol->bands)
		return fg_policy_compile_nomem(c);
	for (i = 0; i < bands->nkids; i++) {
		if ((rc = read_band(c, bands->kids[i], &c->pol->bands[i])))
			return rc;
		c->pol->nbands++;
	}
	return check_band_values(c, bands);
}

/* High privacy is the default: without this key, a missing, unknown or
 * malformed band is the first, most protective one (index 0). */
static int compile_unknown_band(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                                const struct fg_yaml_node *unknown)
{
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, unknown, "unknown_band")))
		return rc;
	if ((rc = fg_policy_bands_find(c->pol, unknown->text)) < 0)
		return fg_policy_compile_fail(c, unknown, "unknown_band names a band that is not declared in bands");
	c->pol->unknown_band = (size_t)rc;
	return 0;
}

const struct fg_policy_key fg_policy_bands_key = { "bands", FG_POLICY_KEY_ALWAYS, compile_bands };
const struct fg_policy_key fg_policy_bands_unknown_key = { "unknown_band", 0, compile_unknown_band };

const struct fg_policy_mount fg_policy_bands_mounts[] = {
	{ .path = "bands[]", .record = band_keys },
	{ .path = NULL },
};
