/*
 * fg_policy_filter.c - the filter's policy keys: the harm classes
 * ("classes", feedguard's list plus the platform's), the platform's label
 * maps ("label_maps"), and per method where the feed's items and labels
 * are ("feed") and what each band does to them ("filter" rule blocks).
 * They compile into the item editor's spec and rules (fg_items.h), kept
 * apart from the strip rules (fg_policy_strip.c).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_compile-internal.h"

/* --- classes ------------------------------------------------------------- */

static const char *const category_names[FG_POLICY_NCATEGORIES] = {
	"primary_priority", "priority", "non_designated",
};

/* The Online Safety Act 2023's classes: primary priority content (s.61),
 * priority content (s.62), and the non-designated content Ofcom names as
 * examples (s.60). */
static const struct {
	const char *name;
	uint8_t category;
} builtin_classes[] = {
	{ "pornography", FG_POLICY_CAT_PRIMARY_PRIORITY },
	{ "suicide", FG_POLICY_CAT_PRIMARY_PRIORITY },
	{ "self_harm", FG_POLICY_CAT_PRIMARY_PRIORITY },
	{ "eating_disorder", FG_POLICY_CAT_PRIMARY_PRIORITY },
	{ "abuse", FG_POLICY_CAT_PRIORITY },
	{ "hate", FG_POLICY_CAT_PRIORITY },
	{ "bullying", FG_POLICY_CAT_PRIORITY },
	{ "violence", FG_POLICY_CAT_PRIORITY },
	{ "violence_graphic", FG_POLICY_CAT_PRIORITY },
	{ "violence_animal", FG_POLICY_CAT_PRIORITY },
	{ "dangerous_stunts", FG_POLICY_CAT_PRIORITY },
	{ "harmful_substances", FG_POLICY_CAT_PRIORITY },
	{ "depression", FG_POLICY_CAT_NON_DESIGNATED },
	{ "body_image", FG_POLICY_CAT_NON_DESIGNATED },
};

/* Defaults of a filter block (README, "What each band gets"). */
#define DEFAULT_NOT_BEFORE 3
#define DEFAULT_SPACING 5
#define DEFAULT_MAX_SHARE 0.2
#define DEFAULT_THRESHOLD_PPC 0.1f
#define DEFAULT_THRESHOLD 0.5f
#define MAX_POSITION 1000
#define DEFAULT_OVERFETCH_MAX 1000
#define MAX_OVERFETCH_MAX 100000

static int find_class(const struct fg_policy *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nclasses; i++)
		if (strcmp(p->classes[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int find_category(const char *name)
{
	int i;

	for (i = 0; i < FG_POLICY_NCATEGORIES; i++)
		if (strcmp(category_names[i], name) == 0)
			return i;
	return -1;
}

static uint64_t category_mask(const struct fg_policy *p, int cat)
{
	uint64_t m = 0;
	size_t i;

	for (i = 0; i < p->nclasses; i++)
		if (p->classes[i].category == cat)
			m |= UINT64_C(1) << i;
	return m;
}

/* "unknown class" with the names that exist. */
static int unknown_class(struct fg_policy_comp *c, const struct fg_yaml_node *n)
{
	char list[1024] = "", buf[FG_YAML_SHOWLEN];
	size_t i, at = 0;

	for (i = 0; i < c->pol->nclasses && at < sizeof(list) - 64; i++)
		at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s", i ? ", " : "", c->pol->classes[i].name);
	return fg_policy_compile_fail(c, n, "'%s' is not a class (classes: %s; categories: primary_priority, "
	                                    "priority, non_designated; add a class under 'classes')",
	                              fg_yaml_show(n, buf, sizeof(buf)), list);
}

/* A class or category name: its mask into <*mask>, 1 in <*is_cat> for a category. */
static int read_class(struct fg_policy_comp *c, const struct fg_yaml_node *n, uint64_t *mask, int *is_cat, int *which)
{
	int k, rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, "a class")))
		return rc;
	if ((k = find_class(c->pol, n->text)) >= 0) {
		*mask = UINT64_C(1) << k;
		*is_cat = 0;
		*which = k;
		return 0;
	}
	if ((k = find_category(n->text)) >= 0) {
		*mask = category_mask(c->pol, k);
		*is_cat = 1;
		*which = k;
		return 0;
	}
	return unknown_class(c, n);
}

static const char *const class_keys[] = { "name", "category", NULL };

/* The built-in classes, then the policy's "classes: [{name, category}]". */
static int compile_classes(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                           const struct fg_yaml_node *list)
{
	struct fg_policy *p = c->pol;
	size_t i, n = FG_POLICY_NELEM(builtin_classes) + (list ? list->nkids : 0);
	char buf[FG_YAML_SHOWLEN];
	int rc;

	(void)s;
	if (list && (rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, "classes")))
		return rc;
	if (n > FG_POLICY_MAX_CLASSES)
		return fg_policy_compile_fail(c, list, "at most %d classes in all (%zu built in)", FG_POLICY_MAX_CLASSES,
		                              FG_POLICY_NELEM(builtin_classes));
	if (!(p->classes = fg_policy_compile_alloc(c, n * sizeof(*p->classes))))
		return fg_policy_compile_nomem(c);
	for (i = 0; i < FG_POLICY_NELEM(builtin_classes); i++) {
		p->classes[i].name = (char *)builtin_classes[i].name;
		p->classes[i].category = builtin_classes[i].category;
	}
	p->nclasses = i;
	for (i = 0; list && i < list->nkids; i++) {
		const struct fg_yaml_node *e = list->kids[i], *nm, *cat;
		int k;
		if ((rc = fg_policy_compile_want_kind(c, e, FG_YAML_MAP, "a class")) ||
		    (rc = fg_policy_compile_check_record(c, e, class_keys, "a class")))
			return rc;
		nm = fg_yaml_map_get(e, "name");
		cat = fg_yaml_map_get(e, "category");
		if (!nm || !cat)
			return fg_policy_compile_fail(c, e, "a class needs 'name' and 'category' (primary_priority, "
			                                    "priority or non_designated)");
		if ((rc = fg_policy_compile_want_scalar(c, nm, "a class name")) ||
		    (rc = fg_policy_compile_want_scalar(c, cat, "a category")))
			return rc;
		if (find_class(p, nm->text) >= 0 || find_category(nm->text) >= 0 || strcmp(nm->text, "unlabelled") == 0 ||
		    strcmp(nm->text, "default") == 0)
			return fg_policy_compile_fail(c, nm, "class '%s' already exists", fg_yaml_show(nm, buf, sizeof(buf)));
		if ((k = find_category(cat->text)) < 0)
			return fg_policy_compile_fail(c, cat, "'%s' is not a category (primary_priority, priority or "
			                                      "non_designated)", fg_yaml_show(cat, buf, sizeof(buf)));
		if (!(p->classes[p->nclasses].name = fg_policy_compile_dup(c, nm)))
			return fg_policy_compile_nomem(c);
		p->classes[p->nclasses++].category = (uint8_t)k;
	}
	return 0;
}

/* Kept for the feeds that name them (they need the methods' types). */
static int compile_label_maps(struct fg_policy_comp *c, const struct fg_policy_scope *s,
                              const struct fg_yaml_node *val)
{
	size_t i;
	int rc;

	(void)s;
	if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_MAP, "label_maps")))
		return rc;
	for (i = 1; i < val->nkids; i += 2)
		if ((rc = fg_policy_compile_want_kind(c, val->kids[i], FG_YAML_MAP, "a label map")))
			return rc;
	c->label_maps = val;
	return 0;
}

/* --- feed ------------------------------------------------------------------ */

/*
 * The field path in scalar <n> from message <type>: numbers into <nums>
 * (at most FG_ITEMS_MAX_PATH), the last field into <*last>.  Fields before
 * the last are messages, singular unless <through_repeated>.
 */
static int resolve(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *type,
                   uint32_t *nums, size_t *depth, const struct fg_schema_field **last, int through_repeated,
                   const char *what)
{
	struct fg_policy_path_part parts[FG_ITEMS_MAX_PATH];
	const struct fg_schema_field *f = NULL;
	int np, i, rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	np = fg_policy_path_split(n->text, parts, FG_ITEMS_MAX_PATH);
	if (np <= 0)
		return fg_policy_compile_fail(c, n, "%s: '%s' is not a field path", what, n->text);
	for (i = 0; i < np; i++) {
		if (parts[i].sel)
			return fg_policy_compile_fail(c, n, "%s: '%s' cannot go through map entries", what, n->text);
		if (!type || !(f = fg_schema_find_field(type, parts[i].name)))
			return fg_policy_compile_fail(c, n, "%s: '%s': %s has no field '%s'", what, n->text,
			                              type ? fg_schema_message_name(type) : "a scalar", parts[i].name);
		if (i + 1 < np) {
			if (fg_schema_field_type(f) != FG_SCHEMA_MESSAGE || (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP))
				return fg_policy_compile_fail(c, n, "%s: '%s': '%s' is not a message", what, n->text,
				                              parts[i].name);
			if (!through_repeated && (fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED))
				return fg_policy_compile_fail(c, n, "%s: '%s' goes through repeated field '%s'", what, n->text,
				                              parts[i].name);
		}
		nums[i] = fg_schema_field_number(f);
		type = fg_schema_field_message(f);
	}
	*depth = (size_t)np;
	*last = f;
	return 0;
}

static int is_repeated(const struct fg_schema_field *f)
{
	return (fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) && !(fg_schema_field_flags(f) & FG_SCHEMA_F_MAP);
}

/* "items": a repeated message field of the response, or "." */
static int read_items(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *out,
                      int server_streaming, struct fg_items_spec *sp, const struct fg_schema_message **item)
{
	const struct fg_schema_field *f;
	int rc;

	if (!n)
		return FG_ENOTFOUND;
	if (n->kind == FG_YAML_SCALAR && strcmp(n->text, ".") == 0) {
		if (!server_streaming)
			return fg_policy_compile_fail(c, n, "items: \".\" (each response message is an item) needs a "
			                                    "server-streaming method; this one answers with one message");
		sp->items_depth = 0;
		*item = out;
		return 0;
	}
	if ((rc = resolve(c, n, out, sp->items_path, &sp->items_depth, &f, 0, "items")))
		return rc;
	if (fg_schema_field_type(f) != FG_SCHEMA_MESSAGE || !is_repeated(f))
		return fg_policy_compile_fail(c, n, "items: '%s' is %s%s; it must be a repeated message field "
		                                    "(or \".\": the stream's messages are the items)",
		                              n->text, is_repeated(f) ? "repeated " : "",
		                              fg_schema_type_name(fg_schema_field_type(f)));
	*item = fg_schema_field_message(f);
	return 0;
}

/* What the label tables are built from. */
struct label_target {
	int is_enum;
	const struct fg_schema_enum *en;        /* is_enum */
	const struct fg_yaml_node *at;          /* where the labels were named */
};

static const char *const labels_keys[] = { "field", "value", "confidence", NULL };

static int label_value_kind(struct fg_policy_comp *c, const struct fg_schema_field *f, struct label_target *t)
{
	enum fg_schema_type ty = fg_schema_field_type(f);

	if (ty == FG_SCHEMA_STRING || ty == FG_SCHEMA_BYTES) {
		t->is_enum = 0;
		return 0;
	}
	if (ty == FG_SCHEMA_ENUM) {
		t->is_enum = 1;
		t->en = fg_schema_find_enum(c->schema, fg_schema_field_type_name(f));
		return t->en ? 0 : -1;
	}
	return -1;
}

/* The field of label message <type> that scalar <n> (key <what>) names. */
static int label_field(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *type,
                       const char *what, const struct fg_schema_field **out)
{
	char buf[FG_YAML_SHOWLEN];
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	if (!(*out = fg_schema_find_field(type, n->text)))
		return fg_policy_compile_fail(c, n, "labels: %s has no field '%s'", fg_schema_message_name(type),
		                              fg_yaml_show(n, buf, sizeof(buf)));
	return 0;
}

/* "labels": a path to repeated strings or enums, or {field, value, confidence}. */
static int read_labels(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *item,
                       struct fg_items_spec *sp, struct label_target *t)
{
	const struct fg_yaml_node *fn = n, *vn = NULL, *cn = NULL;
	const struct fg_schema_field *f, *vf, *cf;
	int rc;

	t->at = n;
	if (n->kind == FG_YAML_MAP) {
		if ((rc = fg_policy_compile_check_record(c, n, labels_keys, "labels")))
			return rc;
		fn = fg_yaml_map_get(n, "field");
		vn = fg_yaml_map_get(n, "value");
		cn = fg_yaml_map_get(n, "confidence");
		if (!fn || !vn)
			return fg_policy_compile_fail(c, n, "labels as messages need 'field' (the repeated label message) "
			                                    "and 'value' (its label field); 'confidence' is optional");
	}
	if ((rc = resolve(c, fn, item, sp->labels_path, &sp->labels_depth, &f, 1, "labels")))
		return rc;
	if (fg_schema_field_flags(f) & FG_SCHEMA_F_MAP)
		return fg_policy_compile_fail(c, fn, "labels: '%s' is a map, which labels cannot be read from: the "
		                                     "labels must be a repeated scalar (string, enum, integer) or a "
		                                     "repeated message with a label field and an optional score field",
		                              fn->text);
	if (!is_repeated(f))
		return fg_policy_compile_fail(c, fn, "labels: '%s' is not a repeated field", fn->text);
	if (!vn) {
		if (fg_schema_field_type(f) == FG_SCHEMA_MESSAGE)
			return fg_policy_compile_fail(c, fn, "labels: '%s' is a repeated message: write "
			                                     "{field: %s, value: <its label field>, confidence: <its score field>}",
			                              fn->text, fn->text);
		if (label_value_kind(c, f, t) < 0)
			return fg_policy_compile_fail(c, fn, "labels: '%s' is repeated %s; labels must be strings or an enum",
			                              fn->text, fg_schema_type_name(fg_schema_field_type(f)));
		sp->label_kind = t->is_enum ? FG_ITEMS_L_ENUM : FG_ITEMS_L_STRING;
		return 0;
	}
	if (fg_schema_field_type(f) != FG_SCHEMA_MESSAGE)
		return fg_policy_compile_fail(c, fn, "labels: '%s' is repeated %s, not a message: write labels: %s",
		                              fn->text, fg_schema_type_name(fg_schema_field_type(f)), fn->text);
	sp->label_kind = FG_ITEMS_L_MESSAGE;
	if ((rc = label_field(c, vn, fg_schema_field_message(f), "value", &vf)))
		return rc;
	if ((fg_schema_field_flags(vf) & FG_SCHEMA_F_REPEATED) || label_value_kind(c, vf, t) < 0)
		return fg_policy_compile_fail(c, vn, "labels: value '%s' must be a single string or enum field",
		                              vn->text);
	sp->value_number = fg_schema_field_number(vf);
	sp->value_enum = (uint8_t)t->is_enum;
	if (cn) {
		enum fg_schema_type ty;
		if ((rc = label_field(c, cn, fg_schema_field_message(f), "confidence", &cf)))
			return rc;
		ty = fg_schema_field_type(cf);
		if ((fg_schema_field_flags(cf) & FG_SCHEMA_F_REPEATED) || (ty != FG_SCHEMA_FLOAT && ty != FG_SCHEMA_DOUBLE))
			return fg_policy_compile_fail(c, cn, "labels: confidence '%s' must be a single float or double field",
			                              cn->text);
		sp->conf_number = fg_schema_field_number(cf);
		sp->conf_kind = ty == FG_SCHEMA_FLOAT ? FG_ITEMS_C_FLOAT : FG_ITEMS_C_DOUBLE;
	}
	return 0;
}

/* A label map's value: a class or category, or a list of them. */
static int read_label_classes(struct fg_policy_comp *c, const struct fg_yaml_node *v, uint64_t *mask)
{
	uint64_t m;
	size_t i;
	int is_cat, which, rc;

	*mask = 0;
	if (v->kind == FG_YAML_SEQ) {
		for (i = 0; i < v->nkids; i++) {
			if ((rc = read_class(c, v->kids[i], &m, &is_cat, &which)))
				return rc;
			*mask |= m;
		}
		return 0;
	}
	if ((rc = read_class(c, v, &m, &is_cat, &which)))
		return rc;
	*mask = m;
	return 0;
}

int fg_policy_filter_read_classes(struct fg_policy_comp *c, const struct fg_yaml_node *v, uint64_t *mask)
{
	return read_label_classes(c, v, mask);
}

static int cmp_label_str(const void *a, const void *b)
{
	const struct fg_items_label *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->str, y->str, x->len);
}

static int cmp_label_num(const void *a, const void *b)
{
	const struct fg_items_label *x = a, *y = b;

	return x->num < y->num ? -1 : x->num > y->num;
}

/* "classes": a label_maps name or a mapping, into <sp>'s label table. */
static int read_label_map(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_items_spec *sp,
                          const struct label_target *t)
{
	const struct fg_yaml_node *map = n;
	struct fg_items_label *tab;
	size_t i, k = 0, cap;
	char buf[FG_YAML_SHOWLEN];
	int rc;

	if (n->kind == FG_YAML_SCALAR) {
		map = c->label_maps ? fg_yaml_map_get(c->label_maps, n->text) : NULL;
		if (!map)
			return fg_policy_compile_fail(c, n, "classes: '%s' is not in label_maps",
			                              fg_yaml_show(n, buf, sizeof(buf)));
	} else if ((rc = fg_policy_compile_want_kind(c, n, FG_YAML_MAP, "classes"))) {
		return rc;
	}
	cap = map->nkids / 2 + (t->is_enum ? fg_schema_enum_nvalues(t->en) : 0);
	if (!(tab = fg_policy_compile_alloc(c, (cap ? cap : 1) * sizeof(*tab))))
		return fg_policy_compile_nomem(c);
	for (i = 0; i + 1 < map->nkids; i += 2) {
		const struct fg_yaml_node *key = map->kids[i], *val = map->kids[i + 1];
		struct fg_items_label *l = &tab[k++];
		size_t j;
		for (j = 0; j < i; j += 2)
			if (map->kids[j]->len == key->len && memcmp(map->kids[j]->text, key->text, key->len) == 0)
				return fg_policy_compile_fail(c, key, "label '%s' is mapped twice (line %u)",
				                              fg_yaml_show(key, buf, sizeof(buf)), map->kids[j]->line);
		if ((rc = read_label_classes(c, val, &l->classes)))
			return rc;
		if (t->is_enum) {
			size_t nv = fg_schema_enum_nvalues(t->en);
			for (j = 0; j < nv && strcmp(fg_schema_enum_value_name(t->en, j), key->text) != 0; j++)
				;
			if (j == nv)
				return fg_policy_compile_fail(c, key, "'%s' is not a value of the labels' enum",
				                              fg_yaml_show(key, buf, sizeof(buf)));
			l->num = fg_schema_enum_value_number(t->en, j);
		} else {
			l->str = key->text;
			l->len = (uint32_t)key->len;
			if (!(l->str = fg_policy_compile_strndup(c, key->text, key->len)))
				return fg_policy_compile_nomem(c);
		}
	}
	if (t->is_enum) {
		/* Every number the enum names is a label (a topic when unmapped),
		 * except its zero value (FOO_UNSPECIFIED, what an unset field
		 * reads as), which is a label only when the map names it. */
		size_t j, nv = fg_schema_enum_nvalues(t->en);
		for (j = 0; j < nv; j++) {
			if (fg_schema_enum_value_number(t->en, j) == 0)
				continue;
			tab[k].num = fg_schema_enum_value_number(t->en, j);
			tab[k++].classes = 0;
		}
		qsort(tab, k, sizeof(*tab), cmp_label_num);
		/* Merge entries of one number (aliases, and the enum's own list). */
		for (i = 0, cap = 0; i < k; i++) {
			if (cap && tab[cap - 1].num == tab[i].num)
				tab[cap - 1].classes |= tab[i].classes;
			else
				tab[cap++] = tab[i];
		}
		k = cap;
	} else {
		qsort(tab, k, sizeof(*tab), cmp_label_str);
		if (k <= 32767) {
			uint16_t *slots = fg_policy_compile_alloc(c, fg_items_slots_size(k) * sizeof(*slots));
			if (!slots)
				return fg_policy_compile_nomem(c);
			sp->labels = tab;
			sp->nlabels = k;
			fg_items_slots(sp, slots);
		}
	}
	sp->labels = tab;
	sp->nlabels = k;
	return 0;
}

/* "page_size": a singular integer field of the request. */
static int read_page_size(struct fg_policy_comp *c, const struct fg_yaml_node *n, const struct fg_schema_message *in,
                          struct fg_policy_feed *feed)
{
	const struct fg_schema_field *f;
	enum fg_schema_type ty;
	int rc;

	if ((rc = resolve(c, n, in, feed->page_size_path, &feed->page_size_depth, &f, 0, "page_size")))
		return rc;
	ty = fg_schema_field_type(f);
	if ((fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) ||
	    (ty != FG_SCHEMA_INT32 && ty != FG_SCHEMA_INT64 && ty != FG_SCHEMA_UINT32 && ty != FG_SCHEMA_UINT64))
		return fg_policy_compile_fail(c, n, "page_size: '%s' is %s%s; it must be a single int32, int64, uint32 "
		                                    "or uint64 field", n->text,
		                              (fg_schema_field_flags(f) & FG_SCHEMA_F_REPEATED) ? "repeated " : "",
		                              fg_schema_type_name(ty));
	feed->page_size_signed = ty == FG_SCHEMA_INT32 || ty == FG_SCHEMA_INT64;
	/* Writing a oneof member switches its oneof: the raised page size
	 * would clear a cursor the client set.  (A proto3 optional field's
	 * oneof has one member: nothing to clear.) */
	{
		const struct fg_schema_message *t = in;
		size_t i;
		for (i = 0; i < feed->page_size_depth; i++) {
			const struct fg_schema_field *pf = fg_schema_find_field_number(t, feed->page_size_path[i]);
			const struct fg_schema_oneof *o = pf ? fg_schema_field_oneof(pf) : NULL;
			if (o && fg_schema_oneof_nfields(o) > 1)
				return fg_policy_compile_fail(c, n, "page_size: '%s' goes through oneof '%s': raising it would "
				                                    "clear the oneof's other member", n->text,
				                              fg_schema_oneof_name(o));
			t = pf ? fg_schema_field_message(pf) : NULL;
		}
	}
	return 0;
}

static int read_uint(struct fg_policy_comp *c, const struct fg_yaml_node *n, uint64_t lo, uint64_t hi,
                     uint64_t *out, const char *what)
{
	unsigned long long v;
	char *end;
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	errno = 0;
	v = strtoull(n->text, &end, 10);
	if (errno || end == n->text || *end || n->text[0] == '-' || v < lo || v > hi)
		return fg_policy_compile_fail(c, n, "%s must be a whole number from %llu to %llu", what,
		                              (unsigned long long)lo, (unsigned long long)hi);
	*out = v;
	return 0;
}

static int read_number(struct fg_policy_comp *c, const struct fg_yaml_node *n, double lo, int lo_open, double hi,
                       double *out, const char *what)
{
	char *end;
	int rc;

	if ((rc = fg_policy_compile_want_scalar(c, n, what)))
		return rc;
	errno = 0;
	*out = strtod(n->text, &end);
	if (errno || end == n->text || *end || !isfinite(*out) || (lo_open ? !(*out > lo) : !(*out >= lo)) ||
	    *out > hi)
		return fg_policy_compile_fail(c, n, "%s must be a number %s %g and at most %g", what,
		                              lo_open ? "above" : "from", lo, hi);
	return 0;
}

/* Response metadata names the filter may not use: what HTTP/2 and gRPC
 * own (RFC 9113 section 8.2.2; gRPC over HTTP/2). */
static const char *const reserved_headers[] = {
	"content-type", "content-length", "te", "connection", "keep-alive", "proxy-connection",
	"transfer-encoding", "upgrade", "host", NULL,
};

/* "report_header": a metadata name, lowercase token characters (RFC 9110
 * section 5.6.2), not one HTTP/2 or gRPC owns. */
static int read_report_header(struct fg_policy_comp *c, const struct fg_yaml_node *n, struct fg_policy_feed *feed)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";
	size_t j;
	int rc;

	if ((rc = fg_policy_compile_header_name(c, n, "report_header", &feed->report_header)))
		return rc;
	for (j = 0; j < n->len; j++) {
		char ch = feed->report_header[j];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (ch && strchr(tchar, ch))))
			return fg_policy_compile_fail(c, n, "report_header: '%s' is not a header name (letters, digits "
			                                    "and !#$%%&'*+-.^_`|~ only)", n->text);
	}
	if (strncmp(feed->report_header, "grpc-", 5) == 0)
		return fg_policy_compile_fail(c, n, "report_header: '%s' is reserved (grpc-* belongs to gRPC)", n->text);
	/* a -bin value must be base64: a client's gRPC library fails the
	 * call on the text report (PROTOCOL-HTTP2.md, Custom-Metadata) */
	if (n->len >= 4 && strcmp(feed->report_header + strlen(feed->report_header) - 4, "-bin") == 0)
		return fg_policy_compile_fail(c, n, "report_header: '%s' ends in -bin, which gRPC keeps for base64 "
		                                    "binary values; the report is text", n->text);
	for (j = 0; reserved_headers[j]; j++)
		if (strcmp(feed->report_header, reserved_headers[j]) == 0)
			return fg_policy_compile_fail(c, n, "report_header: '%s' is reserved (HTTP/2 and gRPC own it)",
			                              n->text);
	return 0;
}

static const char *const feed_keys[] = {
	"items", "labels", "classes", "page_size", "default_page_size", "report_header", NULL,
};

static int compile_feed(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *val)
{
	struct fg_policy_feed *feed;
	const struct fg_schema_message *item = NULL;
	const struct fg_yaml_node *n;
	struct label_target t = { 0 };
	int rc;

	if ((rc = fg_policy_compile_want_kind(c, val, FG_YAML_MAP, "feed")) ||
	    (rc = fg_policy_compile_check_record(c, val, feed_keys, "feed")))
		return rc;
	if (!(feed = fg_policy_compile_alloc(c, sizeof(*feed))))
		return fg_policy_compile_nomem(c);
	if (!fg_yaml_map_get(val, "items") || !fg_yaml_map_get(val, "labels") || !fg_yaml_map_get(val, "classes"))
		return fg_policy_compile_fail(c, val, "feed needs 'items' (the response's repeated item field), "
		                                      "'labels' (where an item's labels are) and 'classes' (the "
		                                      "platform's labels mapped to classes)");
	if ((rc = read_items(c, fg_yaml_map_get(val, "items"), s->out, s->method->server_streaming, &feed->spec,
	                     &item)) ||
	    (rc = read_labels(c, fg_yaml_map_get(val, "labels"), item, &feed->spec, &t)) ||
	    (rc = read_label_map(c, fg_yaml_map_get(val, "classes"), &feed->spec, &t)))
		return rc;
	if ((n = fg_yaml_map_get(val, "page_size")) && (rc = read_page_size(c, n, s->in, feed)))
		return rc;
	if ((n = fg_yaml_map_get(val, "default_page_size")) &&
	    (rc = read_uint(c, n, 1, 1000000, &feed->default_page_size, "default_page_size")))
		return rc;
	if ((n = fg_yaml_map_get(val, "report_header")) && (rc = read_report_header(c, n, feed)))
		return rc;
	if (!(s->method->filter = fg_policy_compile_alloc(c, c->pol->nbands * sizeof(*s->method->filter))))
		return fg_policy_compile_nomem(c);
	s->method->feed = feed;
	return 0;
}

/* --- filter blocks --------------------------------------------------------- */

/* What one block says about each class and category while it is read. */
struct decisions {
	int8_t cls[FG_POLICY_MAX_CLASSES];      /* -1: not named, else enum fg_items_decision */
	uint8_t cls_group[FG_POLICY_MAX_CLASSES];
	int8_t cat[FG_POLICY_NCATEGORIES];
	uint8_t cat_group[FG_POLICY_NCATEGORIES];
	const struct fg_yaml_node *cls_at[FG_POLICY_MAX_CLASSES];
	const struct fg_yaml_node *cat_at[FG_POLICY_NCATEGORIES];
};

static const char *const decision_names[] = { "allow", "demote", "exclude" };

static int name_one(struct fg_policy_comp *c, struct decisions *d, const struct fg_yaml_node *n, int decision,
                    unsigned group)
{
	uint64_t mask;
	int is_cat, which, rc;
	const struct fg_yaml_node *prev;

	if ((rc = read_class(c, n, &mask, &is_cat, &which)))
		return rc;
	prev = is_cat ? d->cat_at[which] : d->cls_at[which];
	if (prev)
		return fg_policy_compile_fail(c, n, "'%s' is already named in this block (line %u): a class or "
		                                    "category goes in one of exclude, demote and allow", n->text, prev->line);
	if (is_cat) {
		d->cat[which] = (int8_t)decision;
		d->cat_group[which] = (uint8_t)group;
		d->cat_at[which] = n;
	} else {
		d->cls[which] = (int8_t)decision;
		d->cls_group[which] = (uint8_t)group;
		d->cls_at[which] = n;
	}
	return 0;
}

static int name_list(struct fg_policy_comp *c, struct decisions *d, const struct fg_yaml_node *list, int decision,
                     unsigned group, const char *what)
{
	size_t i;
	int rc;

	if (list->kind == FG_YAML_SCALAR)
		return name_one(c, d, list, decision, group);
	if ((rc = fg_policy_compile_want_kind(c, list, FG_YAML_SEQ, what)))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = name_one(c, d, list->kids[i], decision, group)))
			return rc;
	return 0;
}

static const char *const prominence_keys[] = { "not_before", "spacing", "max_share", NULL };
static const char *const group_keys[] = { "classes", "not_before", "spacing", "max_share", NULL };
static const char *const overfetch_keys[] = { "factor", "max", NULL };

/* not_before, spacing and max_share of mapping <m> (may be NULL) over <g>. */
static int read_prominence(struct fg_policy_comp *c, const struct fg_yaml_node *m, struct fg_items_group *g)
{
	const struct fg_yaml_node *n;
	uint64_t v;
	int rc;

	if (!m)
		return 0;
	if ((n = fg_yaml_map_get(m, "not_before"))) {
		if ((rc = read_uint(c, n, 0, MAX_POSITION, &v, "not_before")))
			return rc;
		g->not_before = (uint32_t)v;
	}
	if ((n = fg_yaml_map_get(m, "spacing"))) {
		if ((rc = read_uint(c, n, 1, MAX_POSITION, &v, "spacing")))
			return rc;
		g->spacing = (uint32_t)v;
	}
	if ((n = fg_yaml_map_get(m, "max_share")) && (rc = read_number(c, n, 0, 1, 1, &g->max_share, "max_share")))
		return rc;
	return 0;
}

static int new_group(struct fg_policy_comp *c, const struct fg_yaml_node *at, struct fg_items_rules *r,
                     const struct fg_items_group *base, unsigned *g)
{
	if (r->ngroups == FG_ITEMS_MAX_GROUPS)
		return fg_policy_compile_fail(c, at, "at most %d demote groups in a block", FG_ITEMS_MAX_GROUPS);
	r->groups[r->ngroups] = *base;
	*g = (unsigned)r->ngroups++;
	return 0;
}

/* "demote": names (one group with the block's prominence) and groups. */
static int read_demote(struct fg_policy_comp *c, struct decisions *d, const struct fg_yaml_node *list,
                       struct fg_items_rules *r, const struct fg_items_group *base, int *plain_group)
{
	size_t i;
	unsigned g = 0;
	int rc;

	for (i = 0; i < (list->kind == FG_YAML_SEQ ? list->nkids : 1); i++) {
		const struct fg_yaml_node *e = list->kind == FG_YAML_SEQ ? list->kids[i] : list;
		if (e->kind == FG_YAML_MAP) {
			const struct fg_yaml_node *cl;
			if ((rc = fg_policy_compile_check_record(c, e, group_keys, "a demote group")))
				return rc;
			if (!(cl = fg_yaml_map_get(e, "classes")))
				return fg_policy_compile_fail(c, e, "a demote group needs 'classes'");
			if ((rc = new_group(c, e, r, base, &g)) || (rc = read_prominence(c, e, &r->groups[g])) ||
			    (rc = name_list(c, d, cl, FG_ITEMS_DEMOTE, g, "classes")))
				return rc;
			continue;
		}
		if (*plain_group < 0) {
			if ((rc = new_group(c, e, r, base, &g)))
				return rc;
			*plain_group = (int)g;
		}
		if ((rc = name_one(c, d, e, FG_ITEMS_DEMOTE, (unsigned)*plain_group)))
			return rc;
	}
	return 0;
}

/* "thresholds": {class|category|default: confidence}. */
static int read_thresholds(struct fg_policy_comp *c, const struct fg_yaml_node *m, struct fg_items_rules *r)
{
	const struct fg_policy *p = c->pol;
	double cls[FG_POLICY_MAX_CLASSES], cat[FG_POLICY_NCATEGORIES], def = -1;
	size_t i;
	int rc;

	for (i = 0; i < FG_POLICY_MAX_CLASSES; i++)
		cls[i] = -1;
	for (i = 0; i < FG_POLICY_NCATEGORIES; i++)
		cat[i] = -1;
	if (m) {
		if ((rc = fg_policy_compile_want_kind(c, m, FG_YAML_MAP, "thresholds")))
			return rc;
		for (i = 0; i + 1 < m->nkids; i += 2) {
			const struct fg_yaml_node *k = m->kids[i];
			double v;
			uint64_t mask;
			int is_cat, which;
			size_t j;
			for (j = 0; j < i; j += 2)
				if (strcmp(m->kids[j]->text, k->text) == 0)
					return fg_policy_compile_fail(c, k, "'%s' has a threshold already (line %u)", k->text,
					                              m->kids[j]->line);
			if ((rc = read_number(c, m->kids[i + 1], 0, 0, 1, &v, "a threshold")))
				return rc;
			if (strcmp(k->text, "default") == 0) {
				def = v;
				continue;
			}
			if ((rc = read_class(c, k, &mask, &is_cat, &which)))
				return rc;
			if (is_cat)
				cat[which] = v;
			else
				cls[which] = v;
		}
	}
	/* Class, then category, then (primary priority content keeps its low
	 * built-in threshold unless written for) default, then 0.5. */
	for (i = 0; i < p->nclasses; i++) {
		double v = cls[i];
		if (v < 0)
			v = cat[p->classes[i].category];
		if (v < 0 && p->classes[i].category == FG_POLICY_CAT_PRIMARY_PRIORITY)
			v = DEFAULT_THRESHOLD_PPC;
		if (v < 0)
			v = def;
		if (v < 0)
			v = DEFAULT_THRESHOLD;
		r->threshold[i] = (float)v;
	}
	return 0;
}

void fg_policy_filter_pass_rules(const struct fg_policy *p, struct fg_items_rules *r)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	r->unlabelled = FG_ITEMS_ALLOW;
	for (i = 0; i < p->nclasses; i++)
		r->threshold[i] = p->classes[i].category == FG_POLICY_CAT_PRIMARY_PRIORITY ? DEFAULT_THRESHOLD_PPC
		                                                                            : DEFAULT_THRESHOLD;
}

static int read_decision(struct fg_policy_comp *c, const struct fg_yaml_node *n, const char *what)
{
	size_t i;

	if (fg_policy_compile_want_scalar(c, n, what))
		return FG_ECONFIG;
	for (i = 0; i < FG_POLICY_NELEM(decision_names); i++)
		if (strcmp(n->text, decision_names[i]) == 0)
			return (int)i;
	return fg_policy_compile_fail(c, n, "%s must be allow, demote or exclude", what);
}

static const char *const filter_block_keys[] = {
	"bands", "exclude", "demote", "allow", "unlabelled", "prominence", "surplus", "thresholds", "overfetch", NULL,
};

/* Whether the strip program <prog> changes the field at <path> (what the
 * filter reads): dropped, not on an allow-list, or rewritten (coarsened,
 * pseudonymized); kept whole or only descended into is fine. */
static int prog_changes(const struct fg_pbwire_msg *prog, const uint32_t *path, size_t depth)
{
	size_t i, j;

	for (i = 0; i < depth && prog; i++) {
		const struct fg_pbwire_rule *rule = NULL;
		for (j = 0; j < prog->nrules; j++)
			if (prog->rules[j].number == path[i])
				rule = &prog->rules[j];
		if (!rule)
			return prog->allow_only;
		if (rule->action == FG_PBWIRE_KEEP)
			return 0;
		if (rule->action != FG_PBWIRE_RECURSE)
			return 1;
		prog = rule->sub;
	}
	return 0;
}

/* The filter's band <band> reads what its response rules leave: an error
 * at the feed's items or labels (within method mapping <method>) if not. */
static int check_strip(struct fg_policy_comp *c, const struct fg_yaml_node *method, const struct fg_policy_method *m,
                       size_t band)
{
	const struct fg_yaml_node *feed = fg_yaml_map_get(method, "feed");
	const struct fg_items_spec *sp = &m->feed->spec;
	const struct fg_pbwire_msg *prog = m->response[band].prog;
	uint32_t path[2 * FG_ITEMS_MAX_PATH + 1];
	size_t d = 0, i;

	if (!prog)
		return 0;
	for (i = 0; i < sp->items_depth; i++)
		path[d++] = sp->items_path[i];
	if (prog_changes(prog, path, d))
		return fg_policy_compile_fail(c, fg_yaml_map_get(feed, "items"), "band '%s': its response rules remove "
		                              "the items the filter reads (%s; the filter runs after the response rules)",
		                              c->pol->bands[band].name, fg_yaml_map_get(feed, "items")->text);
	for (i = 0; i < sp->labels_depth; i++)
		path[d++] = sp->labels_path[i];
	{
		const struct fg_yaml_node *l = fg_yaml_map_get(feed, "labels");
		const struct fg_yaml_node *f = l->kind == FG_YAML_MAP ? fg_yaml_map_get(l, "field") : l;
		int bad = prog_changes(prog, path, d);
		/* Label messages: their value and confidence too, or a label
		 * stripped of its value would read as a harmless topic. */
		if (!bad && sp->label_kind == FG_ITEMS_L_MESSAGE) {
			path[d] = sp->value_number;
			bad = prog_changes(prog, path, d + 1);
			if (!bad && sp->conf_kind != FG_ITEMS_C_NONE) {
				path[d] = sp->conf_number;
				bad = prog_changes(prog, path, d + 1);
			}
		}
		if (bad)
			return fg_policy_compile_fail(c, l, "band '%s': its response rules remove or change the labels "
			                              "the filter reads (%s in each item, with their values and "
			                              "confidences; the filter runs after the response rules)",
			                              c->pol->bands[band].name, f->text);
	}
	return 0;
}

static int read_filter_block(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *b,
                             unsigned char *claimed)
{
	const struct fg_policy *p = c->pol;
	struct fg_policy_filter f = { .active = 1 };
	struct fg_items_rules *r = &f.rules;
	struct fg_items_group base = { DEFAULT_NOT_BEFORE, DEFAULT_SPACING, DEFAULT_MAX_SHARE };
	struct decisions d;
	const struct fg_yaml_node *n, *bands;
	const struct fg_yaml_node *sel[FG_POLICY_MAX_BANDS] = { 0 };   /* where each band is named */
	char buf[FG_YAML_SHOWLEN];
	int plain_group = -1, unl = FG_ITEMS_DEMOTE, has_exclude, rc, k;
	size_t i;

	memset(&d, 0, sizeof(d));
	memset(d.cls, 0xff, sizeof(d.cls));
	memset(d.cat, 0xff, sizeof(d.cat));
	if ((rc = fg_policy_compile_want_kind(c, b, FG_YAML_MAP, "a filter block")) ||
	    (rc = fg_policy_compile_check_record(c, b, filter_block_keys, "a filter block")))
		return rc;
	if (!(bands = fg_yaml_map_get(b, "bands")))
		return fg_policy_compile_fail(c, b, "a filter block needs 'bands': the bands it applies to (or \"*\")");
	if (bands->kind == FG_YAML_SCALAR && strcmp(bands->text, "*") == 0) {
		for (i = 0; i < p->nbands; i++)
			sel[i] = bands;
	} else {
		if ((rc = fg_policy_compile_want_kind(c, bands, FG_YAML_SEQ, "bands")))
			return rc;
		for (i = 0; i < bands->nkids; i++) {
			if ((rc = fg_policy_compile_want_scalar(c, bands->kids[i], "a band")))
				return rc;
			if ((k = fg_policy_bands_find(p, bands->kids[i]->text)) < 0)
				return fg_policy_compile_fail(c, bands->kids[i], "band '%s' is not declared in bands",
				                              fg_yaml_show(bands->kids[i], buf, sizeof(buf)));
			if (sel[k])
				return fg_policy_compile_fail(c, bands->kids[i], "band '%s' is listed twice", p->bands[k].name);
			sel[k] = bands->kids[i];
		}
	}
	if ((n = fg_yaml_map_get(b, "prominence"))) {
		if ((rc = fg_policy_compile_want_kind(c, n, FG_YAML_MAP, "prominence")) ||
		    (rc = fg_policy_compile_check_record(c, n, prominence_keys, "prominence")) ||
		    (rc = read_prominence(c, n, &base)))
			return rc;
	}
	if ((n = fg_yaml_map_get(b, "exclude")) && (rc = name_list(c, &d, n, FG_ITEMS_EXCLUDE, 0, "exclude")))
		return rc;
	if ((n = fg_yaml_map_get(b, "demote")) && (rc = read_demote(c, &d, n, r, &base, &plain_group)))
		return rc;
	if ((n = fg_yaml_map_get(b, "allow")) && (rc = name_list(c, &d, n, FG_ITEMS_ALLOW, 0, "allow")))
		return rc;
	if ((n = fg_yaml_map_get(b, "unlabelled")) && (unl = read_decision(c, n, "unlabelled")) < 0)
		return unl;
	if ((n = fg_yaml_map_get(b, "surplus"))) {
		if ((rc = fg_policy_compile_want_scalar(c, n, "surplus")))
			return rc;
		if (strcmp(n->text, "end") == 0)
			r->surplus_end = 1;
		else if (strcmp(n->text, "drop") != 0)
			return fg_policy_compile_fail(c, n, "surplus must be drop or end");
	}
	if ((rc = read_thresholds(c, fg_yaml_map_get(b, "thresholds"), r)))
		return rc;
	if ((n = fg_yaml_map_get(b, "overfetch"))) {
		const struct fg_yaml_node *fa, *mx;
		uint64_t max = DEFAULT_OVERFETCH_MAX;
		if ((rc = fg_policy_compile_want_kind(c, n, FG_YAML_MAP, "overfetch")) ||
		    (rc = fg_policy_compile_check_record(c, n, overfetch_keys, "overfetch")))
			return rc;
		if (!s->method->feed->page_size_depth)
			return fg_policy_compile_fail(c, n, "overfetch needs the feed's page_size: the request field "
			                                    "that says how many items a page holds");
		if (!(fa = fg_yaml_map_get(n, "factor")))
			return fg_policy_compile_fail(c, n, "overfetch needs 'factor' (above 1, up to 10)");
		if ((rc = read_number(c, fa, 1, 1, 10, &f.overfetch, "factor")))
			return rc;
		if ((mx = fg_yaml_map_get(n, "max")) && (rc = read_uint(c, mx, 1, MAX_OVERFETCH_MAX, &max, "max")))
			return rc;
		f.overfetch_max = max;
	}
	/* Each class: its own entry, else its category's, else the default:
	 * allowed, except primary priority content when the block has no
	 * exclude list of its own (exclude's default is [primary_priority]). */
	has_exclude = fg_yaml_map_get(b, "exclude") != NULL;
	for (i = 0; i < p->nclasses; i++) {
		int dec = d.cls[i], g = d.cls_group[i];
		unsigned cat = p->classes[i].category;
		if (dec < 0) {
			dec = d.cat[cat];
			g = d.cat_group[cat];
		}
		if (dec < 0)
			dec = cat == FG_POLICY_CAT_PRIMARY_PRIORITY && !has_exclude ? FG_ITEMS_EXCLUDE : FG_ITEMS_ALLOW;
		if (dec == FG_ITEMS_EXCLUDE)
			r->exclude |= UINT64_C(1) << i;
		else if (dec == FG_ITEMS_DEMOTE) {
			r->demote |= UINT64_C(1) << i;
			r->group[i] = (uint8_t)g;
		}
	}
	r->unlabelled = (uint8_t)unl;
	if (unl == FG_ITEMS_DEMOTE) {
		if (plain_group < 0 && r->ngroups == FG_ITEMS_MAX_GROUPS)
			return fg_policy_compile_fail(c, b, "unlabelled items are demoted in a group of their own, a "
			                                    "ninth: at most %d demote groups in a block (name a class "
			                                    "outside the groups, or set unlabelled)", FG_ITEMS_MAX_GROUPS);
		if (plain_group < 0 && (rc = new_group(c, b, r, &base, (unsigned *)&plain_group)))
			return rc;
		r->unlabelled_group = (uint8_t)plain_group;
	}
	for (i = 0; i < p->nbands; i++) {
		if (!sel[i])
			continue;
		if (claimed[i])
			return fg_policy_compile_fail(c, sel[i], "band '%s' already has a filter block", p->bands[i].name);
		if ((rc = check_strip(c, s->map, s->method, i)))
			return rc;
		claimed[i] = 1;
		s->method->filter[i] = f;
	}
	return 0;
}

static int compile_filter(struct fg_policy_comp *c, const struct fg_policy_scope *s, const struct fg_yaml_node *val)
{
	unsigned char claimed[FG_POLICY_MAX_BANDS] = { 0 };
	const struct fg_yaml_node *list;
	size_t i;
	int rc;

	if (!s->method->feed)
		return fg_policy_compile_fail(c, val, "filter needs the method's 'feed': where the items and their "
		                                      "labels are");
	/* Blocks written here, or a rule set's (shared by a unary and a
	 * streaming method of one feed). */
	if ((rc = fg_policy_compile_rule_list(c, val, "filter", &list)))
		return rc;
	for (i = 0; i < list->nkids; i++)
		if ((rc = read_filter_block(c, s, list->kids[i], claimed)))
			return rc;
	return 0;
}

const struct fg_policy_key fg_policy_filter_classes_key = { "classes", FG_POLICY_KEY_ALWAYS, compile_classes };
const struct fg_policy_key fg_policy_filter_label_maps_key = { "label_maps", 0, compile_label_maps };
const struct fg_policy_key fg_policy_filter_feed_key = { "feed", 0, compile_feed };
const struct fg_policy_key fg_policy_filter_filter_key = { "filter", 0, compile_filter };

const struct fg_policy_mount fg_policy_filter_mounts[] = {
	{ .path = "classes[]", .record = class_keys },
	{ .path = "methods.<method>.feed", .record = feed_keys },
	{ .path = "methods.<method>.feed.labels", .record = labels_keys },
	{ .path = "methods.<method>.filter[]", .record = filter_block_keys },
	{ .path = "methods.<method>.filter[].prominence", .record = prominence_keys },
	{ .path = "methods.<method>.filter[].demote[]", .record = group_keys },
	{ .path = "methods.<method>.filter[].overfetch", .record = overfetch_keys },
	{ .path = NULL },
};
