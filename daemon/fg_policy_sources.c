/*
 * fg_policy_sources.c - a method's keys "user_id" and "age_band": where
 * each call's user and age band are read, a request header or a field of
 * the request message (struct fg_policy_source).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_compile-internal.h"

static const char *const source_keys[] = { "header", "field", NULL };

/* How a field of type <t> is read as a band or user value; -1: it cannot be. */
static int field_value(enum fg_schema_type t, struct fg_policy_source *s)
{
	switch (t) {
	case FG_SCHEMA_STRING:
	case FG_SCHEMA_BYTES:
		s->value = FG_POLICY_V_STRING;
		return 0;
	case FG_SCHEMA_INT64:
		s->value = FG_POLICY_V_INTEGER;
		return 0;
	case FG_SCHEMA_INT32: case FG_SCHEMA_ENUM:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = 1;
		return 0;
	case FG_SCHEMA_UINT32: case FG_SCHEMA_UINT64:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = t == FG_SCHEMA_UINT32;
		s->is_unsigned = 1;
		return 0;
	case FG_SCHEMA_SINT32: case FG_SCHEMA_SINT64:
		s->value = FG_POLICY_V_INTEGER;
		s->bits32 = t == FG_SCHEMA_SINT32;
		s->sint = 1;
		return 0;
	default:
		return -1;
	}
}

/* "field: a.b.c": a single string or integer field, reached through
 * singular messages only, of request type <type>. */
/* A oneof's name where a field was wanted: say which fields it has. */
static int oneof_named(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *type,
                       const char *name, const char *what)
{
	const struct fg_schema_oneof *o = fg_schema_find_oneof(type, name);
	char list[256] = "";
	size_t i, k = fg_schema_oneof_nfields(o);

	for (i = 0; i < k && i < 8; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
		         fg_schema_field_name(fg_schema_oneof_field_at(o, i)));
	return fg_policy_compile_fail(c, n, "%s: '%s': '%s' is a oneof, not a field: name one of its fields (%s%s); "
	                              "a call that sets another has no value here", what, n->text, name, list,
	                              k > 8 ? ", ..." : "");
}

static int read_field(struct fg_policy_comp *c, const struct fg_yaml_node *n,
                      const struct fg_schema_message *type, struct fg_policy_source *s, const char *what)
{
	struct fg_policy_path_part parts[FG_POLICY_MAX_PATH];
	const struct fg_schema_field *f = NULL;
	int np, i;

	np = fg_policy_path_split(n->text, parts, FG_POLICY_MAX_PATH);
	if (np < 0)
		return fg_policy_compile_fail(c, n, "'%s' is not a field path", n->text);
	for (i = 0; i < np; i++) {
		if (parts[i].sel)
			return fg_policy_compile_fail(c, n, "%s: '%s' cannot go through map entries", what, n->text);
		if (type && !fg_schema_find_field(type, parts[i].name) && fg_schema_find_oneof(type, parts[i].name))
			return oneof_named(c, n, type, parts[i].name, what);
		if (!type || !(f = fg_schema_find_field(type, parts[i].name)))
			return fg_policy_compile_fail(c, n, "%s: '%s': %s has no field '%s'", what, n->text,
			                              type ? fg_schema_message_name(type) : "a scalar", parts[i].name);
		if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) && i + 1 < np)
			return fg_policy_compile_fail(c, n, "%s: '%s' goes through repeated field '%s'", what, n->text,
			                              fg_schema_field_name(f));
		/* a group's fields sit between start- and end-group tags, not in
		 * a length-delimited message: the readers do not go there */
		if (fg_schema_field_type(f) == FG_SCHEMA_GROUP && i + 1 < np)
			return fg_policy_compile_fail(c, n, "%s: '%s' goes through proto2 group '%s', which feedguard "
			                              "does not read into; read the value from a field outside it",
			                              what, n->text, fg_schema_field_name(f));
		s->path[s->depth++] = fg_schema_field_number(f);
		type = fg_schema_field_message(f);
	}
	if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
		return fg_policy_compile_fail(c, n, "%s: '%s' is a repeated field; it needs a single value", what,
		                              n->text);
	if (field_value(fg_schema_field_type(f), s) < 0)
		return fg_policy_compile_fail(c, n, "%s: '%s' is %s; it must be a string or an integer", what, n->text,
		                              fg_schema_type_name(fg_schema_field_type(f)));
	s->kind = FG_POLICY_SRC_FIELD;
	return 0;
}

/* "header: name", kept lowercase as HTTP/2 sends it (RFC 9113 section 8.2.1). */
static int read_header(struct fg_policy_comp *c, const struct fg_yaml_node *h, struct fg_policy_source *s)
{
	int rc;

	if ((rc = fg_policy_compile_header_name(c, h, "a header name", &s->header)))
		return rc;
	s->kind = FG_POLICY_SRC_HEADER;
	return 0;
}

int fg_policy_sources_read(struct fg_policy_comp *c, const struct fg_yaml_node *m,
                       const struct fg_schema_message *type, struct fg_policy_source *s, const char *what)
{
	const struct fg_yaml_node *h, *f;
	int rc;

	if (!m)
		return 0;
	if ((rc = fg_policy_compile_want_kind(c, m, FG_YAML_MAP, what)) ||
	    (rc = fg_policy_compile_check_record(c, m, source_keys, what)))
		return rc;
	h = fg_yaml_map_get(m, "header");
	f = fg_yaml_map_get(m, "field");
	if ((h && f) || (!h && !f))
		return fg_policy_compile_fail(c, m, "%s takes exactly one of 'header' or 'field'", what);
	if (f)
		return fg_policy_compile_want_scalar(c, f, what) ? FG_ECONFIG : read_field(c, f, type, s, what);
	return read_header(c, h, s);
}

static int compile_user_id(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *val)
{
	return fg_policy_sources_read(c, val, s->in, &s->method->user_id, "user_id");
}

/*
 * A band read from an enum field is matched by the value's number: a
 * band whose match list holds one of the enum's value names (ADULT for
 * 3) never matches, and every such call goes to the unknown_band without
 * a word (a README-only trial).  Said with the number to write, when no
 * method of the policy reads the band as text (a header or a string
 * field, for which the name may be meant), for explicit match values
 * only (a band's own name is its value when it lists none), compared
 * exactly as calls are matched.
 */
static int enum_field_of(struct fg_policy_comp *c, const struct fg_policy_method *m,
                         const struct fg_schema_field **out)
{
	const struct fg_schema_method *sm = fg_schema_find_method(c->schema, m->path);
	const struct fg_schema_message *type = sm ? fg_schema_method_input(sm) : NULL;
	const struct fg_schema_field *f = NULL;
	size_t i;

	for (i = 0; type && i < m->age_band.depth; i++)
		if ((f = fg_schema_find_field_number(type, m->age_band.path[i])))
			type = fg_schema_field_message(f);
	*out = f && i == m->age_band.depth && fg_schema_field_type(f) == FG_SCHEMA_ENUM ? f : NULL;
	return *out != NULL;
}

static const struct fg_yaml_node *band_field_node(const struct fg_yaml_node *root, const char *path)
{
	const struct fg_yaml_node *m = fg_yaml_map_get(fg_yaml_map_get(root, "methods"), path);

	return fg_yaml_map_get(fg_yaml_map_get(m, "age_band"), "field");
}

int fg_policy_sources_check_enum_bands(struct fg_policy_comp *c, const struct fg_yaml_node *root)
{
	const struct fg_policy *p = c->pol;
	const struct fg_schema_field *f;
	const struct fg_schema_enum *e;
	size_t k, b, i, v;

	for (k = 0; k < p->nmethods; k++)
		if (p->methods[k].age_band.kind == FG_POLICY_SRC_HEADER ||
		    (p->methods[k].age_band.kind == FG_POLICY_SRC_FIELD && p->methods[k].age_band.value == FG_POLICY_V_STRING))
			return 0;
	for (k = 0; c->schema && k < p->nmethods; k++) {
		const struct fg_yaml_node *at = band_field_node(root, p->methods[k].path);
		if (p->methods[k].age_band.kind != FG_POLICY_SRC_FIELD || !at || !enum_field_of(c, &p->methods[k], &f) ||
		    !(e = fg_schema_find_enum(c->schema, fg_schema_field_type_name(f))))
			continue;
		for (b = 0; b < p->nbands; b++) {
			if (p->bands[b].nmatch == 1 && strcmp(p->bands[b].match[0], p->bands[b].name) == 0)
				continue;               /* no match list: the name, never meant as a value */
			for (i = 0; i < p->bands[b].nmatch; i++)
				for (v = 0; v < fg_schema_enum_nvalues(e); v++)
					if (strcmp(p->bands[b].match[i], fg_schema_enum_value_name(e, v)) == 0)
						return fg_policy_compile_fail(c, at, "age_band: '%s' is enum %s, matched by number, "
						                              "but band '%s' matches '%s': write \"%d\" (%s) in its "
						                              "match list", at->text, fg_schema_field_type_name(f),
						                              p->bands[b].name, p->bands[b].match[i],
						                              (int)fg_schema_enum_value_number(e, v),
						                              fg_schema_enum_value_name(e, v));
		}
	}
	return 0;
}

/* Every intercepted method needs its band: the rules are chosen by it. */
static int compile_age_band(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                            const struct fg_yaml_node *val)
{
	char buf[FG_YAML_SHOWLEN];
	int rc;

	if ((rc = fg_policy_sources_read(c, val, s->in, &s->method->age_band, "age_band")))
		return rc;
	if (s->method->age_band.kind == FG_POLICY_SRC_NONE)
		return fg_policy_compile_fail(c, s->method_key, "method '%s' needs age_band: where the age band comes from",
		                              fg_yaml_show(s->method_key, buf, sizeof(buf)));
	return 0;
}

const struct fg_policy_key fg_policy_sources_user_id_key = { "user_id", 0, compile_user_id };
const struct fg_policy_key fg_policy_sources_age_band_key = {
	"age_band", FG_POLICY_KEY_ALWAYS, compile_age_band,
};

/* Every key read with fg_policy_sources_read: a method's time_zone too
 * (fg_policy_limits.c). */
const struct fg_policy_mount fg_policy_sources_mounts[] = {
	{ .path = "methods.<method>.user_id", .record = source_keys },
	{ .path = "methods.<method>.age_band", .record = source_keys },
	{ .path = "methods.<method>.time_zone", .record = source_keys },
	{ .path = NULL },
};
