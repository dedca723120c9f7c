/*
 * test_items.c - the item editor (scan, plan, write), through fg_items.h.
 *
 * Pages are built with the small encoder below, so each test shows the
 * fields it feeds in.  Most tests describe a page as a pattern, one letter
 * per item (see page_of), and the expected plan as the item indexes in
 * delivered order.  test_items_random checks a few thousand random pages,
 * rules and streams against the README's semantics ("Prominence",
 * "Server-streaming feeds", "How the response is edited"), written here
 * independently of fg_items.c.
 *
 * Link with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 * (fg_failalloc.h): test_items_enomem fails each allocation in turn and
 * counts live blocks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fg_bufq.h"
#include "fg_error.h"
#include "fg_items.h"
#include "fg_pbwire.h"

#define FG_FAILALLOC_ALL
#include "fg_failalloc.h"

/* ---- a tiny encoder ---- */

#define FG_PBMSG_CAP 16384
#include "fg_pbmsg.h"

static void f_fixed32(struct msg *m, uint32_t number, uint32_t x)
{
	put_tag(m, number, FG_PBWIRE_I32);
	put_le(m, x, 4);
}

static void f_packed(struct msg *m, uint32_t number, const int64_t *v, size_t n)
{
	struct msg p = { .n = 0 };
	size_t i;

	for (i = 0; i < n; i++)
		put_varint(&p, (uint64_t)v[i]);
	f_msg(m, number, &p);
}

/* ---- the platform's labels, the classes and a band's rules ---- */

enum { C_PORN, C_STUNT, C_SAD, C_VIOLENCE, C_BODY };
#define BIT(c) (UINT64_C(1) << (c))

/* sorted by (len, bytes), as the header asks */
static const struct fg_items_label str_labels[] = {
	{ .str = "mix", .len = 3, .classes = BIT(C_STUNT) | BIT(C_SAD) },
	{ .str = "sad", .len = 3, .classes = BIT(C_SAD) },
	{ .str = "body", .len = 4, .classes = BIT(C_BODY) },
	{ .str = "porn", .len = 4, .classes = BIT(C_PORN) },
	{ .str = "sport", .len = 5, .classes = 0 },
	{ .str = "stunt", .len = 5, .classes = BIT(C_STUNT) },
	{ .str = "violence", .len = 8, .classes = BIT(C_VIOLENCE) },
};

/* sorted by number */
static const struct fg_items_label num_labels[] = {
	{ .num = -5, .classes = BIT(C_PORN) },
	{ .num = 1, .classes = 0 },
	{ .num = 2, .classes = BIT(C_SAD) },
	{ .num = 3, .classes = BIT(C_STUNT) },
	{ .num = 7, .classes = BIT(C_VIOLENCE) },
};

/* items: field 1 of the page; labels: field 2 of an item */
static struct fg_items_spec spec_str(void)
{
	struct fg_items_spec sp = {
		.items_path = { 1 }, .items_depth = 1, .labels_path = { 2 }, .labels_depth = 1,
		.label_kind = FG_ITEMS_L_STRING, .labels = str_labels,
		.nlabels = sizeof(str_labels) / sizeof(str_labels[0]),
	};
	return sp;
}

static struct fg_items_spec spec_enum(void)
{
	struct fg_items_spec sp = spec_str();

	sp.label_kind = FG_ITEMS_L_ENUM;
	sp.labels = num_labels;
	sp.nlabels = sizeof(num_labels) / sizeof(num_labels[0]);
	return sp;
}

/* label messages at item.moderation(4).labels(1): value 1, confidence 2 */
static struct fg_items_spec spec_message(int value_enum, int conf_kind)
{
	struct fg_items_spec sp = value_enum ? spec_enum() : spec_str();

	sp.labels_path[0] = 4;
	sp.labels_path[1] = 1;
	sp.labels_depth = 2;
	sp.label_kind = FG_ITEMS_L_MESSAGE;
	sp.value_enum = (uint8_t)value_enum;
	sp.conf_kind = (uint8_t)conf_kind;
	sp.value_number = 1;
	sp.conf_number = 2;
	return sp;
}

/* porn and violence excluded, stunt demoted in group 1, sad in group 0,
 * body allowed; unlabelled demoted in group 0; no prominence limits */
static struct fg_items_rules base_rules(void)
{
	struct fg_items_rules r = { 0 };
	size_t i;

	r.exclude = BIT(C_PORN) | BIT(C_VIOLENCE);
	r.demote = BIT(C_STUNT) | BIT(C_SAD);
	r.group[C_STUNT] = 1;
	r.group[C_SAD] = 0;
	for (i = 0; i < FG_ITEMS_MAX_CLASSES; i++)
		r.threshold[i] = 0.5f;
	r.threshold[C_PORN] = 0.1f;
	r.unlabelled = FG_ITEMS_DEMOTE;
	r.unlabelled_group = 0;
	r.ngroups = 2;
	r.groups[0] = (struct fg_items_group){ .not_before = 0, .spacing = 1, .max_share = 1.0 };
	r.groups[1] = r.groups[0];
	return r;
}

static void set_group(struct fg_items_rules *r, unsigned g, uint32_t not_before, uint32_t spacing, double share)
{
	r->groups[g] = (struct fg_items_group){ .not_before = not_before, .spacing = spacing, .max_share = share };
}

/* ---- pages as patterns ---- */

/*
 * One string-labelled item per letter: a allowed (a topic), x excluded,
 * d demoted in group 0, e demoted in group 1, u unlabelled.  Each item also
 * carries its index (field 9), so every item's bytes differ.
 */
static void item_of(struct msg *page, char c, size_t idx)
{
	struct msg it = { .n = 0 };

	f_varint(&it, 9, idx);
	switch (c) {
	case 'a': f_str(&it, 2, "sport"); break;
	case 'x': f_str(&it, 2, "porn"); break;
	case 'd': f_str(&it, 2, "sad"); break;
	case 'e': f_str(&it, 2, "stunt"); break;
	case 'u': break;
	default: fail_msg("bad pattern letter %c", c);
	}
	f_msg(page, 1, &it);
}

static void page_of(const char *pattern, struct msg *m, const struct fg_items_rules *r, struct fg_items_page *pg)
{
	struct fg_items_spec sp = spec_str();
	const char *why = NULL;
	size_t i;

	m->n = 0;
	for (i = 0; pattern[i]; i++)
		item_of(m, pattern[i], i);
	assert_int_equal(fg_items_scan(m->b, m->n, &sp, r, pg, &why), 0);
	assert_int_equal(pg->n, strlen(pattern));
}

/* The plan as "i j k": the delivered item indexes. */
static const char *order_str(const struct fg_items_page *pg)
{
	static char s[1024];
	size_t i, n = 0;

	s[0] = '\0';
	for (i = 0; i < pg->norder; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, i ? " %u" : "%u", pg->order[i]);
	return s;
}

static void plan_is(const char *pattern, const struct fg_items_rules *r, struct fg_items_stream *st,
                    uint64_t limit, const char *want)
{
	struct fg_items_page pg = { 0 };
	struct msg m;

	page_of(pattern, &m, r, &pg);
	fg_items_plan(&pg, r, st, limit, 0);
	assert_string_equal(order_str(&pg), want);
	fg_items_page_free(&pg);
}

/* ---- classification ---- */

static void expect_item(const struct fg_items_item *it, int decision, int group, int cls)
{
	assert_int_equal(it->decision, decision);
	assert_int_equal(it->group, group);
	assert_int_equal(it->cls, cls);
}

static void test_items_string_labels(void **state)
{
	struct fg_items_spec sp = spec_str();
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg m = { .n = 0 }, it;
	size_t starts[7], ends[7], i;
	const char *const *l;
	static const char *const items[7][3] = {
		{ "sport" }, { NULL }, { "porn" }, { "sad", "music" },
		{ "cooking" }, { "sad", "porn" }, { "body" },
	};

	(void)state;
	for (i = 0; i < 7; i++) {
		it.n = 0;
		f_varint(&it, 9, i);
		for (l = items[i]; l < items[i] + 3 && *l; l++)
			f_str(&it, 2, *l);
		f_str(&m, 5, "between");        /* not an item */
		starts[i] = m.n;
		f_msg(&m, 1, &it);
		ends[i] = m.n;
	}
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 7);
	for (i = 0; i < 7; i++) {
		assert_int_equal(pg.item[i].start, starts[i]);
		assert_int_equal(pg.item[i].end, ends[i]);
		assert_int_equal(pg.item[i].fate, FG_ITEMS_KEPT);
	}
	expect_item(&pg.item[0], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);                   /* a topic: labelled */
	expect_item(&pg.item[1], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED); /* no label */
	expect_item(&pg.item[2], FG_ITEMS_EXCLUDE, 0, C_PORN);
	expect_item(&pg.item[3], FG_ITEMS_DEMOTE, 0, C_SAD);               /* "music" is not listed */
	expect_item(&pg.item[4], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);                   /* an unlisted string: a topic */
	expect_item(&pg.item[5], FG_ITEMS_EXCLUDE, 0, C_PORN);             /* strictest wins */
	expect_item(&pg.item[6], FG_ITEMS_ALLOW, 0, C_BODY);              /* a class left allowed: still its class */

	/* the unlabelled decision is the band's */
	r.unlabelled = FG_ITEMS_EXCLUDE;
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[1], FG_ITEMS_EXCLUDE, 0, FG_ITEMS_UNLABELLED);
	r.unlabelled = FG_ITEMS_DEMOTE;
	r.unlabelled_group = 1;
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[1], FG_ITEMS_DEMOTE, 1, FG_ITEMS_UNLABELLED);

	/* a page that never held an item (no arrays yet; found by fuzz_items:
	 * the plan computed NULL + 0, undefined), planned and written */
	{
		struct fg_items_page fresh = { 0 };
		struct fg_bufq out = { 0 };
		assert_int_equal(fg_items_scan(NULL, 0, &sp, &r, &fresh, &why), 0);
		fg_items_plan(&fresh, &r, NULL, 0, 0);
		assert_int_equal(fresh.norder, 0);
		assert_true(fg_items_identity(&fresh));
		assert_int_equal(fg_items_write(NULL, 0, &sp, &fresh, &out, &why), 0);
		assert_int_equal(fg_bufq_len(&out), 0);
		fg_bufq_free(&out);
		fg_items_page_free(&fresh);
	}
	/* an empty page, and a page with no items */
	assert_int_equal(fg_items_scan(NULL, 0, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 0);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_int_equal(pg.norder, 0);
	assert_true(fg_items_identity(&pg));
	m.n = 0;
	f_str(&m, 5, "no items here");
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 0);
	fg_items_page_free(&pg);
}

static void test_items_multiple_classes(void **state)
{
	struct fg_items_spec sp = spec_str();
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg m = { .n = 0 }, it;

	(void)state;
	/* 0: stunt (group 1) and sad (group 0): demoted in the lowest group,
	 * decided by the lowest class; 1: the same through one label mapped to
	 * both; 2: stunt then violence: excluded by violence; 3: body and sad */
	it.n = 0; f_str(&it, 2, "stunt"); f_str(&it, 2, "sad"); f_msg(&m, 1, &it);
	it.n = 0; f_str(&it, 2, "mix"); f_msg(&m, 1, &it);
	it.n = 0; f_str(&it, 2, "stunt"); f_str(&it, 2, "violence"); f_msg(&m, 1, &it);
	it.n = 0; f_str(&it, 2, "body"); f_str(&it, 2, "sad"); f_msg(&m, 1, &it);
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 4);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_STUNT);
	expect_item(&pg.item[1], FG_ITEMS_DEMOTE, 0, C_STUNT);
	expect_item(&pg.item[2], FG_ITEMS_EXCLUDE, 0, C_VIOLENCE);
	expect_item(&pg.item[3], FG_ITEMS_DEMOTE, 0, C_SAD);

	/* groups swapped: stunt in 0, sad in 1: still the lowest */
	r.group[C_STUNT] = 0;
	r.group[C_SAD] = 1;
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_STUNT);
	expect_item(&pg.item[3], FG_ITEMS_DEMOTE, 1, C_SAD);

	/* both exclusion classes: the lowest one decides */
	m.n = 0;
	it.n = 0; f_str(&it, 2, "violence"); f_str(&it, 2, "porn"); f_msg(&m, 1, &it);
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[0], FG_ITEMS_EXCLUDE, 0, C_PORN);
	fg_items_page_free(&pg);
}

static void test_items_enum_labels(void **state)
{
	struct fg_items_spec sp = spec_enum();
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg m = { .n = 0 }, it;
	static const int64_t packed_sad[] = { 4, 1, 2 }, packed_none[] = { 4, 100, 0 };
	static const int64_t packed_topic[] = { 1 };

	(void)state;
	it.n = 0; f_varint(&it, 2, 2); f_msg(&m, 1, &it);                  /* 0: sad, unpacked */
	it.n = 0; f_packed(&it, 2, packed_sad, 3); f_msg(&m, 1, &it);      /* 1: sad, packed */
	it.n = 0; f_varint(&it, 2, 4); f_varint(&it, 2, 100); f_msg(&m, 1, &it); /* 2: unnamed */
	it.n = 0; f_packed(&it, 2, packed_none, 3); f_msg(&m, 1, &it);     /* 3: unnamed, packed */
	it.n = 0; f_varint(&it, 2, 1); f_msg(&m, 1, &it);                  /* 4: a topic */
	it.n = 0; f_packed(&it, 2, packed_topic, 1); f_varint(&it, 2, 3); f_msg(&m, 1, &it); /* 5 */
	it.n = 0; f_varint(&it, 2, (uint64_t)-5); f_msg(&m, 1, &it);       /* 6: negative: porn */
	/* 7: a varint beyond 32 bits is read as int32, as the receiver does */
	it.n = 0; f_varint(&it, 2, (UINT64_C(1) << 32) | 7); f_msg(&m, 1, &it);
	it.n = 0; f_packed(&it, 2, NULL, 0); f_msg(&m, 1, &it);            /* 8: empty packed */
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 9);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[1], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[2], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	expect_item(&pg.item[3], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	expect_item(&pg.item[4], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[5], FG_ITEMS_DEMOTE, 1, C_STUNT);
	expect_item(&pg.item[6], FG_ITEMS_EXCLUDE, 0, C_PORN);
	expect_item(&pg.item[7], FG_ITEMS_EXCLUDE, 0, C_VIOLENCE);
	expect_item(&pg.item[8], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	fg_items_page_free(&pg);
}

/* One item with one label message (value, confidence), appended to <m>. */
static void label_item(struct msg *m, const char *str, int64_t num, int conf_kind, double conf)
{
	struct msg lab = { .n = 0 }, mod = { .n = 0 }, it = { .n = 0 };

	if (str)
		f_str(&lab, 1, str);
	else
		f_varint(&lab, 1, (uint64_t)num);
	if (conf_kind == FG_ITEMS_C_FLOAT)
		f_float(&lab, 2, (float)conf);
	else if (conf_kind == FG_ITEMS_C_DOUBLE)
		f_double(&lab, 2, conf);
	f_varint(&lab, 3, 42);                  /* unknown to the label */
	f_msg(&mod, 1, &lab);
	f_str(&it, 3, "title");
	f_msg(&it, 4, &mod);
	f_msg(m, 1, &it);
}

static void test_items_message_labels(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	struct fg_items_spec sp;
	const char *why = NULL;
	struct msg m = { .n = 0 }, lab, mod, it;
	int i;

	(void)state;
	/* string values, float confidences: at, below, NaN, absent */
	sp = spec_message(0, FG_ITEMS_C_FLOAT);
	label_item(&m, "sad", 0, FG_ITEMS_C_FLOAT, 0.5);         /* 0: at the threshold */
	label_item(&m, "sad", 0, FG_ITEMS_C_FLOAT, 0.49);        /* 1: below: labelled, allowed */
	label_item(&m, "sad", 0, FG_ITEMS_C_FLOAT, NAN);         /* 2: NaN counts as 1.0 */
	label_item(&m, "sad", 0, FG_ITEMS_C_NONE, 0);            /* 3: no confidence field: 0.0 */
	label_item(&m, "porn", 0, FG_ITEMS_C_FLOAT, 0.1);        /* 4: at the 0.1 threshold */
	label_item(&m, "porn", 0, FG_ITEMS_C_FLOAT, 0.09);       /* 5: below it */
	label_item(&m, "sad", 0, FG_ITEMS_C_FLOAT, 1.0);         /* 6 */
	label_item(&m, "sad", 0, FG_ITEMS_C_FLOAT, -INFINITY);   /* 7 */
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 8);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[1], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[2], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[3], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[4], FG_ITEMS_EXCLUDE, 0, C_PORN);
	expect_item(&pg.item[5], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[6], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[7], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);

	/* enum values, double confidences */
	sp = spec_message(1, FG_ITEMS_C_DOUBLE);
	m.n = 0;
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, 0.5);         /* 0: at */
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, 0.4999);      /* 1: below */
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, NAN);         /* 2: NaN */
	label_item(&m, NULL, 2, FG_ITEMS_C_NONE, 0);             /* 3: absent: 0.0 */
	label_item(&m, NULL, 4, FG_ITEMS_C_DOUBLE, 1.0);         /* 4: unnamed: no label */
	label_item(&m, NULL, 1, FG_ITEMS_C_DOUBLE, 0.0);         /* 5: a topic, whatever its confidence */
	label_item(&m, NULL, -5, FG_ITEMS_C_DOUBLE, 0.09);       /* 6: below 0.1 */
	label_item(&m, NULL, 3, FG_ITEMS_C_DOUBLE, 0.75);        /* 7: stunt */
	/* 8, 9: a double at the policy's 0.1 and 0.3, which it keeps as floats
	 * (0.1f and 0.3f are above the doubles 0.1 and 0.3): at the threshold */
	label_item(&m, NULL, -5, FG_ITEMS_C_DOUBLE, 0.1);
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, 0.3);
	/* 10, 11: far out of a float's range, both ways */
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, 1e300);
	label_item(&m, NULL, 2, FG_ITEMS_C_DOUBLE, -1e300);
	r.threshold[C_SAD] = 0.3f;
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	r.threshold[C_SAD] = 0.5f;
	assert_int_equal(pg.n, 12);
	expect_item(&pg.item[8], FG_ITEMS_EXCLUDE, 0, C_PORN);
	expect_item(&pg.item[9], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[10], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[11], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[1], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[2], FG_ITEMS_DEMOTE, 0, C_SAD);
	expect_item(&pg.item[3], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[4], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	expect_item(&pg.item[5], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[6], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
	expect_item(&pg.item[7], FG_ITEMS_DEMOTE, 1, C_STUNT);

	/* a label message without a value has the default: "" (a topic) or 0
	 * (not named: no label); the last value and confidence win; with no
	 * confidence in the spec the field is ignored, whatever its type */
	for (i = 0; i < 2; i++) {
		sp = spec_message(i, FG_ITEMS_C_FLOAT);
		m.n = 0;
		lab.n = 0; f_float(&lab, 2, 0.9f);
		mod.n = 0; f_msg(&mod, 1, &lab);
		it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
		lab.n = 0;
		if (i) {
			f_varint(&lab, 1, 4); f_varint(&lab, 1, 2);
		} else {
			f_str(&lab, 1, "porn"); f_str(&lab, 1, "sad");
		}
		f_float(&lab, 2, 0.9f); f_float(&lab, 2, 0.2f);
		mod.n = 0; f_msg(&mod, 1, &lab);
		it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
		assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
		if (i)
			expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
		else
			expect_item(&pg.item[0], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);
		expect_item(&pg.item[1], FG_ITEMS_ALLOW, 0, FG_ITEMS_NO_CLASS);    /* sad at 0.2 */
		/* no confidence in the spec: the field is ignored, whatever its type */
		sp.conf_kind = FG_ITEMS_C_NONE;
		m.n = 0;
		lab.n = 0;
		f_str(&lab, 2, "not a float");
		if (i)
			f_varint(&lab, 1, 2);
		else
			f_str(&lab, 1, "sad");
		mod.n = 0; f_msg(&mod, 1, &lab);
		/* a topic in one moderation message, sad in a second one */
		it.n = 0;
		{
			struct msg topic = { .n = 0 }, mod1 = { .n = 0 };
			if (i)
				f_varint(&topic, 1, 1);
			else
				f_str(&topic, 1, "sport");
			f_msg(&mod1, 1, &topic);
			f_msg(&it, 4, &mod1);
		}
		f_msg(&it, 4, &mod);
		f_msg(&m, 1, &it);
		assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
		expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, C_SAD);
	}
	fg_items_page_free(&pg);
}

/* ---- planning ---- */

static void test_items_exclude_and_identity(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	struct msg m;

	(void)state;
	plan_is("aaaa", &r, NULL, 0, "0 1 2 3");
	plan_is("axaxx", &r, NULL, 0, "0 2");
	plan_is("xxx", &r, NULL, 0, "");
	/* demoted items with no limits stay where they are */
	plan_is("dadue", &r, NULL, 0, "0 1 2 3 4");

	page_of("adua", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_true(fg_items_identity(&pg));
	assert_int_equal(pg.unmet, 0);
	page_of("axa", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_false(fg_items_identity(&pg));
	assert_int_equal(pg.item[1].fate, FG_ITEMS_REMOVED);
	assert_int_equal(pg.item[0].fate, FG_ITEMS_KEPT);
	/* moved, none removed: not the identity either */
	set_group(&r, 0, 1, 1, 1.0);
	page_of("da", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "1 0");
	assert_false(fg_items_identity(&pg));
	assert_int_equal(pg.item[0].fate, FG_ITEMS_KEPT);
	/* trimmed off the end: not the identity */
	r = base_rules();
	page_of("aaa", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 2, 0);
	assert_false(fg_items_identity(&pg));
	fg_items_plan(&pg, &r, NULL, 3, 0);
	assert_true(fg_items_identity(&pg));
	fg_items_page_free(&pg);
}

/* Exposure counters: the scan's totals, the walk when an allowance may
 * run out, and what the plan delivers of each counter. */
static void limit_is(const char *pattern, const struct fg_items_rules *r, const uint32_t *left, int want_rc,
                     const char *want_order, uint32_t want0, uint32_t want1)
{
	struct fg_items_page pg = { 0 };
	uint32_t counts[2] = { 100, 200 };
	struct msg m;

	page_of(pattern, &m, r, &pg);
	fg_items_plan(&pg, r, NULL, 0, 0);
	assert_int_equal(fg_items_limit(&pg, r, left), want_rc);
	if (want_rc)
		fg_items_plan(&pg, r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), want_order);
	fg_items_count_delivered(&pg, r, counts);
	assert_int_equal(counts[0], 100 + want0);
	assert_int_equal(counts[1], 200 + want1);
	fg_items_page_free(&pg);
}

static void test_items_exposure_limits(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	struct msg m;

	(void)state;
	r.ncounters = 2;
	r.counter[0] = BIT(C_SAD);                      /* the d items */
	r.counter[1] = BIT(C_STUNT) | BIT(C_PORN);      /* the e items, and x (excluded anyway) */
	page_of("adexdea", &m, &r, &pg);
	assert_int_equal(pg.counted[0], 2);
	assert_int_equal(pg.counted[1], 3);
	assert_int_equal(pg.item[1].counters, 1);
	assert_int_equal(pg.item[3].counters, 2);
	assert_int_equal(pg.item[0].counters, 0);
	/* room for every item of each counter: nothing limited */
	limit_is("adexdea", &r, (const uint32_t[]){ 2, 3 }, 0, "0 1 2 4 5 6", 2, 2);
	/* counter 1 has more items than its room, but the excluded x is not
	 * delivered: the walk finds the delivered ones fit */
	limit_is("adexdea", &r, (const uint32_t[]){ 2, 2 }, 0, "0 1 2 4 5 6", 2, 2);
	/* one d left: the second d goes */
	limit_is("adexdea", &r, (const uint32_t[]){ 1, 5 }, 1, "0 1 2 5 6", 1, 2);
	/* nothing left of either */
	limit_is("adexdea", &r, (const uint32_t[]){ 0, 0 }, 1, "0 6", 0, 0);
	/* a page with no counted item: never limited, nothing counted */
	page_of("aua", &m, &r, &pg);
	assert_int_equal(pg.counted[0], 0);
	assert_int_equal(pg.counted[1], 0);
	limit_is("aua", &r, (const uint32_t[]){ 0, 0 }, 0, "0 1 2", 0, 0);
	/* a later page is counted afresh, not on top of the last one */
	page_of("d", &m, &r, &pg);
	assert_int_equal(pg.counted[0], 1);
	assert_int_equal(pg.counted[1], 0);
	fg_items_page_free(&pg);
}

static void test_items_not_before_spacing_share(void **state)
{
	struct fg_items_rules r = base_rules();

	(void)state;
	/* not_before 2, spacing 3 */
	set_group(&r, 0, 2, 3, 1.0);
	plan_is("ddaaaaaa", &r, NULL, 0, "2 3 0 4 5 1 6 7");
	/* a demoted item never moves earlier than the allowed items before it */
	plan_is("aaaaad", &r, NULL, 0, "0 1 2 3 4 5");
	/* spacing 2 is "never two in a row" */
	set_group(&r, 0, 0, 2, 1.0);
	plan_is("ddda", &r, NULL, 0, "0 3 1");
	/* max_share 0.25 of every prefix ending on one */
	set_group(&r, 0, 0, 1, 0.25);
	plan_is("dadaaaaa", &r, NULL, 0, "1 3 4 0 5 6 7 2");
	/* 0.1 of a prefix of 10: the share's rounding does not cost a place */
	set_group(&r, 0, 0, 1, 0.1);
	plan_is("daaaaaaaaa", &r, NULL, 0, "1 2 3 4 5 6 7 8 9 0");
	/* unlabelled items count in their group */
	set_group(&r, 0, 1, 2, 1.0);
	plan_is("udaa", &r, NULL, 0, "2 0 3 1");
}

static void test_items_groups(void **state)
{
	struct fg_items_rules r = base_rules();

	(void)state;
	/* group 0: not_before 1, spacing 2; group 1: at most half */
	set_group(&r, 0, 1, 2, 1.0);
	set_group(&r, 1, 0, 1, 0.5);
	plan_is("edaeaa", &r, NULL, 0, "2 0 1 3 4 5");
	/* each group's spacing counts its own items only */
	set_group(&r, 0, 0, 3, 1.0);
	set_group(&r, 1, 0, 3, 1.0);
	plan_is("dedeaaa", &r, NULL, 0, "0 1 4 2 3 5 6");
	/* the earliest ranked item that fits goes first */
	set_group(&r, 0, 2, 1, 1.0);
	set_group(&r, 1, 1, 1, 1.0);
	plan_is("deaa", &r, NULL, 0, "2 1 0 3");
	/* within a group, ranked order */
	set_group(&r, 0, 0, 1, 1.0);
	plan_is("xdd", &r, NULL, 0, "1 2");
	/* a group beyond ngroups counts in the last group */
	r.ngroups = 1;
	set_group(&r, 0, 0, 2, 1.0);
	plan_is("deaa", &r, NULL, 0, "0 2 1 3");
}

static void test_items_surplus_and_trim(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	struct msg m;

	(void)state;
	set_group(&r, 0, 0, 3, 1.0);
	page_of("ddda", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "0 3");
	assert_int_equal(pg.unmet, 1);
	assert_int_equal(pg.item[0].fate, FG_ITEMS_KEPT);
	assert_int_equal(pg.item[1].fate, FG_ITEMS_SURPLUS_DROPPED);
	assert_int_equal(pg.item[2].fate, FG_ITEMS_SURPLUS_DROPPED);
	assert_int_equal(pg.item[3].fate, FG_ITEMS_KEPT);
	r.surplus_end = 1;
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "0 3 1 2");
	assert_int_equal(pg.unmet, 1);
	assert_int_equal(pg.item[1].fate, FG_ITEMS_SURPLUS_END);
	assert_int_equal(pg.item[2].fate, FG_ITEMS_SURPLUS_END);
	/* surplus of two groups at the end, in ranked order */
	set_group(&r, 1, 5, 1, 1.0);
	plan_is("ddeda", &r, NULL, 0, "0 4 1 2 3");
	/* trimming after surplus: the end goes first */
	page_of("ddeda", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 3, 0);
	assert_string_equal(order_str(&pg), "0 4 1");
	assert_int_equal(pg.item[1].fate, FG_ITEMS_SURPLUS_END);
	assert_int_equal(pg.item[2].fate, FG_ITEMS_TRIMMED);
	assert_int_equal(pg.item[3].fate, FG_ITEMS_TRIMMED);
	assert_int_equal(pg.unmet, 1);
	/* trimming with nothing filtered */
	r = base_rules();
	page_of("aaxaa", &m, &r, &pg);
	fg_items_plan(&pg, &r, NULL, 3, 0);
	assert_string_equal(order_str(&pg), "0 1 3");
	assert_int_equal(pg.item[2].fate, FG_ITEMS_REMOVED);
	assert_int_equal(pg.item[4].fate, FG_ITEMS_TRIMMED);
	assert_int_equal(pg.unmet, 0);
	fg_items_plan(&pg, &r, NULL, 100, 0);
	assert_string_equal(order_str(&pg), "0 1 3 4");
	assert_int_equal(pg.item[4].fate, FG_ITEMS_KEPT);
	fg_items_page_free(&pg);
}

static void test_items_stream(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_stream st = { 0 };

	(void)state;
	set_group(&r, 0, 1, 3, 1.0);
	plan_is("aad", &r, &st, 0, "0 1 2");
	assert_int_equal(st.delivered, 3);
	assert_int_equal(st.last[0], 3);
	assert_int_equal(st.last[1], 0);
	/* spacing counts from the last page's demoted item; not_before is
	 * per page (position 0 of this page is 3 of the stream) */
	plan_is("daa", &r, &st, 0, "1 2 0");
	assert_int_equal(st.delivered, 6);
	assert_int_equal(st.last[0], 6);
	/* without the stream, the page alone */
	plan_is("daa", &r, NULL, 0, "1 0 2");
	/* a page that delivers nothing changes nothing but its count */
	plan_is("xx", &r, &st, 0, "");
	assert_int_equal(st.delivered, 6);
	/* trimmed items are not delivered: the next page counts from the cut */
	plan_is("aaad", &r, &st, 2, "0 1");
	assert_int_equal(st.delivered, 8);
	assert_int_equal(st.last[0], 6);
	plan_is("ad", &r, &st, 0, "0 1");
	assert_int_equal(st.last[0], 10);
	/* surplus at the end is delivered: the next page keeps its distance */
	r.surplus_end = 1;
	set_group(&r, 0, 0, 3, 1.0);
	plan_is("add", &r, &st, 0, "0 1 2");       /* 1 and 2 are surplus, at the end */
	assert_int_equal(st.delivered, 13);
	assert_int_equal(st.last[0], 13);
	plan_is("da", &r, &st, 0, "1 0");
}

static void test_items_item_mode(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_stream st = { 0 };
	struct fg_items_page pg = { 0 };
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	struct msg m;
	static const char seq[] = "adaddxad";
	static const int fate[] = { FG_ITEMS_KEPT, FG_ITEMS_SURPLUS_DROPPED, FG_ITEMS_KEPT, FG_ITEMS_KEPT,
	                            FG_ITEMS_SURPLUS_DROPPED, FG_ITEMS_REMOVED, FG_ITEMS_KEPT, FG_ITEMS_KEPT };
	static const uint64_t delivered[] = { 1, 1, 2, 3, 3, 3, 4, 5 };
	size_t i;
	int pass;

	(void)state;
	sp.items_depth = 0;
	set_group(&r, 0, 2, 2, 0.5);
	for (pass = 0; pass < 2; pass++) {
		memset(&st, 0, sizeof(st));
		for (i = 0; seq[i]; i++) {
			/* the message is the item: its labels at field 2 */
			struct msg it = { .n = 0 };
			f_varint(&it, 9, i);
			f_str(&it, 2, seq[i] == 'a' ? "sport" : seq[i] == 'd' ? "sad" : "porn");
			f_fixed32(&it, 15, 0xdeadbeef);
			assert_int_equal(fg_items_scan(it.b, it.n, &sp, &r, &pg, &why), 0);
			assert_int_equal(pg.n, 1);
			assert_int_equal(pg.item[0].start, 0);
			assert_int_equal(pg.item[0].end, it.n);
			/* pass 1: a limit of 4 trims the last one */
			fg_items_plan(&pg, &r, &st, pass ? 4 : 0, 1);
			if (pass && i == 7) {
				assert_int_equal(pg.item[0].fate, FG_ITEMS_TRIMMED);
				assert_int_equal(st.delivered, 4);
				continue;
			}
			assert_int_equal(pg.item[0].fate, fate[i]);
			assert_int_equal(st.delivered, delivered[i]);
			assert_int_equal(pg.unmet, fate[i] == FG_ITEMS_SURPLUS_DROPPED);
			assert_int_equal(fg_items_identity(&pg), fate[i] == FG_ITEMS_KEPT);
			fg_bufq_truncate(&out, 0);
			assert_int_equal(fg_items_write(it.b, it.n, &sp, &pg, &out, &why), 0);
			if (fate[i] == FG_ITEMS_KEPT) {
				assert_int_equal(fg_bufq_len(&out), it.n);
				assert_memory_equal(fg_bufq_head(&out), it.b, it.n);
			} else {
				assert_int_equal(fg_bufq_len(&out), 0);
			}
		}
	}
	/* after pass 1: item 3 the one demoted item delivered, item 7 trimmed */
	assert_int_equal(st.count[0], 1);
	assert_int_equal(st.last[0], 3);

	/* an unlabelled message, and an empty one */
	m.n = 0;
	f_str(&m, 3, "no labels");
	assert_int_equal(fg_items_scan(m.b, m.n, &sp, &r, &pg, &why), 0);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	assert_int_equal(fg_items_scan(NULL, 0, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 1);
	expect_item(&pg.item[0], FG_ITEMS_DEMOTE, 0, FG_ITEMS_UNLABELLED);
	/* without a stream: position 0 */
	set_group(&r, 0, 0, 1, 1.0);
	fg_items_plan(&pg, &r, NULL, 0, 1);
	assert_true(fg_items_identity(&pg));
	/* planned again: the fate is the new plan's, as in page mode */
	st = (struct fg_items_stream){ .delivered = 10 };
	fg_items_plan(&pg, &r, &st, 5, 1);
	assert_int_equal(pg.item[0].fate, FG_ITEMS_TRIMMED);
	fg_items_plan(&pg, &r, NULL, 5, 1);
	assert_int_equal(pg.item[0].fate, FG_ITEMS_KEPT);
	assert_int_equal(pg.norder, 1);
	/* a group beyond ngroups counts in the last group, as in page mode
	 * (it indexed past the rules' and the stream's arrays) */
	r.ngroups = 2;
	set_group(&r, 1, 0, 1, 1.0);
	for (i = 0; i < 2; i++) {
		r.unlabelled_group = i ? 200 : 5;
		memset(&st, 0, sizeof(st));
		assert_int_equal(fg_items_scan(NULL, 0, &sp, &r, &pg, &why), 0);
		fg_items_plan(&pg, &r, &st, 0, 1);
		assert_int_equal(pg.item[0].fate, FG_ITEMS_KEPT);
		assert_int_equal(pg.item[0].group, 1);
		assert_int_equal(st.last[1], 1);
		assert_int_equal(st.count[1], 1);
	}
	fg_bufq_free(&out);
	fg_items_page_free(&pg);
}

/* ---- writing ---- */

/* An item with unknown fields of every wire type around its labels. */
static void rich_item(struct msg *m, uint32_t field, size_t idx, const char *label, size_t pad)
{
	struct msg it = { .n = 0 }, sub = { .n = 0 };
	static const uint8_t group[] = { 0x63, 0x08, 0x01, 0x64 };  /* field 12 group { 1: 1 } */
	uint8_t big[300];

	memset(big, 'p', sizeof(big));
	f_varint(&sub, 1, 77);
	f_fixed32(&it, 15, 0x01020304);
	f_varint(&it, 9, idx);
	if (label)
		f_str(&it, 2, label);
	f_double(&it, 16, 2.5);
	f_msg(&it, 17, &sub);
	put_raw(&it, group, sizeof(group));
	f_varint(&it, 1000, UINT64_MAX);        /* a 2-byte tag, a 10-byte varint */
	f_bytes(&it, 18, big, pad);
	f_msg(m, field, &it);
}

static void expect_write(const struct msg *in, const struct fg_items_spec *sp, const struct fg_items_page *pg,
                         const struct msg *want)
{
	struct fg_bufq out = { 0 };
	const char *why = NULL;

	/* a queue with bytes before, its head not at the front of its memory */
	assert_int_equal(fg_bufq_append(&out, "##keep", 6), 0);
	fg_bufq_consume(&out, 2);
	assert_int_equal(fg_items_write(in->b, in->n, sp, pg, &out, &why), 0);
	assert_int_equal(fg_bufq_len(&out), 4 + want->n);
	assert_memory_equal(fg_bufq_head(&out), "keep", 4);
	assert_memory_equal(fg_bufq_head(&out) + 4, want->b, want->n);
	fg_bufq_free(&out);
}

static void test_items_write_flat(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg in = { .n = 0 }, want = { .n = 0 };

	(void)state;
	set_group(&r, 0, 2, 1, 1.0);
	/* items 0 d, 1 a, 2 x, 3 a, with other fields between them */
	f_str(&in, 5, "header");
	rich_item(&in, 1, 0, "sad", 3);
	f_varint(&in, 6, 1);
	rich_item(&in, 1, 1, "sport", 200);
	rich_item(&in, 1, 2, "porn", 0);
	f_str(&in, 5, "middle");
	rich_item(&in, 1, 3, NULL, 1);
	rich_item(&in, 1, 4, "sport", 0);
	f_str(&in, 7, "trailer");
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 5);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	/* 0 waits for position 2, 3 (unlabelled, group 0) follows it; the
	 * slots keep their places between the other fields, the last is empty */
	assert_string_equal(order_str(&pg), "1 4 0 3");
	f_str(&want, 5, "header");
	rich_item(&want, 1, 1, "sport", 200);
	f_varint(&want, 6, 1);
	rich_item(&want, 1, 4, "sport", 0);
	rich_item(&want, 1, 0, "sad", 3);
	f_str(&want, 5, "middle");
	rich_item(&want, 1, 3, NULL, 1);
	f_str(&want, 7, "trailer");
	expect_write(&in, &sp, &pg, &want);
	/* the identity plan writes the page as it came */
	r = base_rules();
	r.exclude = 0;
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_true(fg_items_identity(&pg));
	expect_write(&in, &sp, &pg, &in);
	fg_items_page_free(&pg);
}

static void test_items_write_nested(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg in = { .n = 0 }, want = { .n = 0 }, encl = { .n = 0 };
	size_t i;

	(void)state;
	/* page.items: field 3 (a singular message, sent twice) then field 1 */
	sp.items_path[0] = 3;
	sp.items_path[1] = 1;
	sp.items_depth = 2;
	set_group(&r, 0, 2, 1, 1.0);
	f_str(&in, 1, "cursor");                /* field 1 at the root is not an item */
	rich_item(&encl, 1, 0, "sad", 0);
	f_varint(&encl, 7, 300);
	rich_item(&encl, 1, 1, "sport", 0);
	f_msg(&in, 3, &encl);
	f_varint(&in, 5, 5);
	encl.n = 0;
	rich_item(&encl, 1, 2, "sport", 150);   /* moves into the first occurrence */
	f_str(&encl, 9, "other");
	f_msg(&in, 3, &encl);
	f_msg(&in, 3, &(struct msg){ .n = 0 }); /* a third, empty */
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 3);
	for (i = 0; i < 3; i++)
		assert_true(pg.item[i].start < pg.item[i].end && pg.item[i].end <= in.n);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "1 2 0");
	f_str(&want, 1, "cursor");
	encl.n = 0;
	rich_item(&encl, 1, 1, "sport", 0);
	f_varint(&encl, 7, 300);
	rich_item(&encl, 1, 2, "sport", 150);
	assert_true(encl.n > 127);              /* its length grew a byte */
	f_msg(&want, 3, &encl);
	f_varint(&want, 5, 5);
	encl.n = 0;
	rich_item(&encl, 1, 0, "sad", 0);
	f_str(&encl, 9, "other");
	f_msg(&want, 3, &encl);
	f_msg(&want, 3, &(struct msg){ .n = 0 });
	expect_write(&in, &sp, &pg, &want);

	/* excluded: an occurrence loses its items, keeps its other fields */
	r = base_rules();
	r.demote = 0;
	r.unlabelled = FG_ITEMS_ALLOW;
	r.exclude = BIT(C_SAD);
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "1 2");
	want.n = 0;
	f_str(&want, 1, "cursor");
	encl.n = 0;
	rich_item(&encl, 1, 1, "sport", 0);
	f_varint(&encl, 7, 300);
	rich_item(&encl, 1, 2, "sport", 150);
	f_msg(&want, 3, &encl);
	f_varint(&want, 5, 5);
	encl.n = 0;
	f_str(&encl, 9, "other");
	f_msg(&want, 3, &encl);
	f_msg(&want, 3, &(struct msg){ .n = 0 });
	expect_write(&in, &sp, &pg, &want);
	fg_items_page_free(&pg);
}

/* Depth 3: two enclosing levels, each sent twice. */
static void test_items_write_depth3(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	struct msg in = { .n = 0 }, want = { .n = 0 }, a = { .n = 0 }, b = { .n = 0 };

	(void)state;
	sp.items_path[0] = 2;
	sp.items_path[1] = 3;
	sp.items_path[2] = 4;
	sp.items_depth = 3;
	sp.labels_path[0] = 5;
	r.exclude = BIT(C_PORN);
	/* 2 { 3 { 4: x, 4: a }, 3 { 4: a } }, 2 { 3 { 6: "z", 4: x } } */
	{
		struct msg it = { .n = 0 };
		f_str(&it, 5, "porn"); f_varint(&it, 9, 0); f_msg(&b, 4, &it);
		it.n = 0; f_str(&it, 5, "sport"); f_varint(&it, 9, 1); f_msg(&b, 4, &it);
		f_msg(&a, 3, &b);
		b.n = 0;
		it.n = 0; f_str(&it, 5, "sport"); f_varint(&it, 9, 2); f_msg(&b, 4, &it);
		f_msg(&a, 3, &b);
		f_msg(&in, 2, &a);
		a.n = 0; b.n = 0;
		f_str(&b, 6, "z");
		it.n = 0; f_str(&it, 5, "porn"); f_varint(&it, 9, 3); f_msg(&b, 4, &it);
		f_msg(&a, 3, &b);
		f_msg(&in, 2, &a);
		assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
		assert_int_equal(pg.n, 4);
		fg_items_plan(&pg, &r, NULL, 0, 0);
		assert_string_equal(order_str(&pg), "1 2");
		a.n = 0; b.n = 0;
		it.n = 0; f_str(&it, 5, "sport"); f_varint(&it, 9, 1); f_msg(&b, 4, &it);
		it.n = 0; f_str(&it, 5, "sport"); f_varint(&it, 9, 2); f_msg(&b, 4, &it);
		f_msg(&a, 3, &b);
		f_msg(&a, 3, &(struct msg){ .n = 0 });
		f_msg(&want, 2, &a);
		a.n = 0; b.n = 0;
		f_str(&b, 6, "z");
		f_msg(&a, 3, &b);
		f_msg(&want, 2, &a);
		expect_write(&in, &sp, &pg, &want);
	}
	fg_items_page_free(&pg);
}

/* ---- malformed input ---- */

struct bad_case {
	const char *name;
	struct fg_items_spec sp;
	struct msg m;
};

static void expect_einval(const struct msg *m, const struct fg_items_spec *sp, const char *name)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	int rc;

	rc = fg_items_scan(m->b, m->n, sp, &r, &pg, &why);
	if (rc != FG_EINVAL || why == NULL || why[0] == '\0')
		fail_msg("%s: scan returned %d, why %s", name, rc, why ? why : "(null)");
	fg_items_page_free(&pg);
}

static void test_items_malformed(void **state)
{
	struct fg_items_spec sp;
	struct msg m, it, lab, mod;
	static const uint8_t trunc_len[] = { 0x0a, 0x05, 0x12, 0x01 };
	static const uint8_t trunc_varint[] = { 0x28, 0x80 };
	static const uint8_t bad_packed[] = { 0x12, 0x02, 0x02, 0x80 };
	int i;

	(void)state;
	/* the page itself: an item runs past the end; a varint ends early */
	sp = spec_str();
	m.n = 0; put_raw(&m, trunc_len, sizeof(trunc_len));
	expect_einval(&m, &sp, "truncated item");
	m.n = 0; item_of(&m, 'a', 0); put_raw(&m, trunc_varint, sizeof(trunc_varint));
	expect_einval(&m, &sp, "truncated field after an item");
	m.n = 0; put_raw(&m, "\x0f", 1);        /* wire type 7 */
	expect_einval(&m, &sp, "bad wire type");
	/* inside an item */
	m.n = 0; f_bytes(&m, 1, trunc_varint, sizeof(trunc_varint));
	expect_einval(&m, &sp, "truncated field in an item");
	/* the item field is not a message */
	m.n = 0; item_of(&m, 'a', 0); f_varint(&m, 1, 3);
	expect_einval(&m, &sp, "varint item");
	m.n = 0; f_fixed32(&m, 1, 3);
	expect_einval(&m, &sp, "fixed32 item");
	/* a string label that is not length-delimited */
	m.n = 0; it.n = 0; f_varint(&it, 2, 1); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "varint string label");
	/* enum labels: fixed32, and a packed run cut inside a varint */
	sp = spec_enum();
	m.n = 0; it.n = 0; f_fixed32(&it, 2, 1); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "fixed32 enum label");
	m.n = 0; f_bytes(&m, 1, bad_packed, sizeof(bad_packed));
	expect_einval(&m, &sp, "packed enum cut");
	/* label messages */
	sp = spec_message(0, FG_ITEMS_C_FLOAT);
	m.n = 0; it.n = 0; f_varint(&it, 4, 1); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "the labels path is not a message");
	m.n = 0; mod.n = 0; f_varint(&mod, 1, 1); it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a label message is a varint");
	m.n = 0; lab.n = 0; f_varint(&lab, 1, 2); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a string value is a varint");
	m.n = 0; lab.n = 0; f_str(&lab, 1, "sad"); f_double(&lab, 2, 0.5); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a float confidence is a double");
	m.n = 0; lab.n = 0; put_raw(&lab, trunc_varint, sizeof(trunc_varint)); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a label message is cut");
	sp = spec_message(1, FG_ITEMS_C_DOUBLE);
	m.n = 0; lab.n = 0; f_str(&lab, 1, "sad"); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "an enum value is a string");
	m.n = 0; lab.n = 0; f_varint(&lab, 1, 2); f_float(&lab, 2, 0.5f); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a double confidence is a float");
	m.n = 0; lab.n = 0; f_varint(&lab, 1, 2); f_varint(&lab, 2, 1); mod.n = 0; f_msg(&mod, 1, &lab);
	it.n = 0; f_msg(&it, 4, &mod); f_msg(&m, 1, &it);
	expect_einval(&m, &sp, "a double confidence is a varint");
	/* an enclosing message on the items path that is not a message */
	sp = spec_str();
	sp.items_path[0] = 3;
	sp.items_path[1] = 1;
	sp.items_depth = 2;
	m.n = 0; f_varint(&m, 3, 1);
	expect_einval(&m, &sp, "varint on the items path");
	m.n = 0; it.n = 0; item_of(&it, 'a', 0); f_varint(&it, 1, 1); f_msg(&m, 3, &it);
	expect_einval(&m, &sp, "varint item under an enclosing message");
	/* item mode: the message is the item and is read as one */
	sp = spec_str();
	sp.items_depth = 0;
	m.n = 0; f_varint(&m, 2, 1);
	expect_einval(&m, &sp, "item mode: varint label");
	m.n = 0; put_raw(&m, trunc_len, sizeof(trunc_len));
	expect_einval(&m, &sp, "item mode: cut");
	/* a bad spec */
	sp = spec_str();
	sp.labels_depth = 0;
	m.n = 0; item_of(&m, 'a', 0);
	expect_einval(&m, &sp, "labels_depth 0");
	sp = spec_str();
	sp.items_depth = FG_ITEMS_MAX_PATH + 1;
	expect_einval(&m, &sp, "items_depth too deep");
	/* the labels path is checked in item mode too: with no depth the scan
	 * followed field 2 down past the end of labels_path[] */
	sp = spec_str();
	sp.items_depth = 0;
	sp.labels_depth = 0;
	m.n = 0;
	for (i = 0; i < 20; i++) {
		it = m;
		m.n = 0;
		f_msg(&m, 2, &it);
	}
	expect_einval(&m, &sp, "item mode: labels_depth 0");
	sp.labels_depth = FG_ITEMS_MAX_PATH + 1;
	expect_einval(&m, &sp, "item mode: labels_depth too deep");
}

/* write refuses a page that is not the one scanned, and leaves <out> as it was */
static void test_items_write_changed(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_page pg = { 0 };
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	struct msg in = { .n = 0 }, other = { .n = 0 }, encl = { .n = 0 };

	(void)state;
	sp.items_path[0] = 3;
	sp.items_path[1] = 1;
	sp.items_depth = 2;
	item_of(&encl, 'a', 0);
	item_of(&encl, 'x', 1);
	f_msg(&in, 3, &encl);
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "0");
	assert_int_equal(fg_bufq_append(&out, "##keep", 6), 0);
	fg_bufq_consume(&out, 2);
	/* an item field that became a varint; a cut page */
	encl.n = 0;
	item_of(&encl, 'a', 0);
	f_varint(&encl, 1, 1);
	f_msg(&other, 3, &encl);
	why = NULL;
	assert_int_equal(fg_items_write(other.b, other.n, &sp, &pg, &out, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 4);
	assert_memory_equal(fg_bufq_head(&out), "keep", 4);
	why = NULL;
	assert_int_equal(fg_items_write(in.b, in.n - 1, &sp, &pg, &out, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 4);
	/* items straight under the root: a page shorter than its items (the
	 * writer used to copy past its end) */
	sp = spec_str();
	in.n = 0;
	item_of(&in, 'a', 0);
	item_of(&in, 'x', 1);
	item_of(&in, 'a', 2);
	assert_int_equal(fg_items_scan(in.b, in.n, &sp, &r, &pg, &why), 0);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_string_equal(order_str(&pg), "0 2");
	why = NULL;
	assert_int_equal(fg_items_write(in.b, in.n - 1, &sp, &pg, &out, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 4);
	assert_memory_equal(fg_bufq_head(&out), "keep", 4);
	fg_bufq_free(&out);
	fg_items_page_free(&pg);
}

/* ---- limits ---- */

static void test_items_too_big(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct fg_items_page pg = { 0 };
	const char *why = NULL;
	size_t n = 2 * (FG_ITEMS_MAX + 1), i;
	uint8_t *b = malloc(n);

	(void)state;
	assert_non_null(b);
	for (i = 0; i < n; i += 2) {    /* empty items: unlabelled */
		b[i] = 0x0a;
		b[i + 1] = 0;
	}
	assert_int_equal(fg_items_scan(b, n - 2, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, FG_ITEMS_MAX);
	fg_items_plan(&pg, &r, NULL, 0, 0);
	assert_int_equal(pg.norder, FG_ITEMS_MAX);
	assert_int_equal(fg_items_scan(b, n, &sp, &r, &pg, &why), FG_ETOOBIG);
	/* the page is usable again */
	assert_int_equal(fg_items_scan(b, 4, &sp, &r, &pg, &why), 0);
	assert_int_equal(pg.n, 2);
	fg_items_page_free(&pg);
	fg_items_page_free(&pg);        /* twice: the page was zeroed */
	free(b);
}

/* ---- allocation failure ---- */

static int enomem_scenario(const struct msg *in, const struct fg_items_spec *sp, const struct fg_items_rules *r,
                           const struct msg *want)
{
	struct fg_items_page pg = { 0 };
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	int rc;

	rc = fg_items_scan(in->b, in->n, sp, r, &pg, &why);
	if (rc < 0)
		goto out_free;
	fg_items_plan(&pg, r, NULL, 0, 0);
	rc = fg_items_write(in->b, in->n, sp, &pg, &out, &why);
	if (rc < 0) {
		assert_int_equal(fg_bufq_len(&out), 0);
		goto out_free;
	}
	assert_int_equal(fg_bufq_len(&out), want->n);
	assert_memory_equal(fg_bufq_head(&out), want->b, want->n);
out_free:
	fg_bufq_free(&out);
	fg_items_page_free(&pg);
	return rc;
}

static void test_items_enomem(void **state)
{
	struct fg_items_rules r = base_rules();
	struct fg_items_spec sp = spec_str();
	struct msg *in = calloc(1, sizeof(*in)), *want = calloc(1, sizeof(*want)), encl = { .n = 0 };
	long live, n, count;
	size_t i, depth;
	int rc;

	(void)state;
	assert_true(in && want);
	r.exclude = BIT(C_SAD);
	for (depth = 1; depth <= 2; depth++) {
		/* 200 items (the arrays grow three times), every other one excluded */
		in->n = want->n = encl.n = 0;
		for (i = 0; i < 200; i++) {
			item_of(&encl, i % 2 ? 'd' : 'a', i);
			if (i % 2 == 0)
				item_of(want, 'a', i);
		}
		if (depth == 2) {
			f_msg(in, 3, &encl);
			encl = *want;
			want->n = 0;
			f_msg(want, 3, &encl);
			sp.items_path[0] = 3;
			sp.items_path[1] = 1;
			sp.items_depth = 2;
		} else {
			*in = encl;
		}
		live = mem.live;
		for (n = 1; n < 100; n++) {
			mem_arm(n);
			rc = enomem_scenario(in, &sp, &r, want);
			count = mem.count;
			mem_arm(0);
			assert_int_equal(mem.live, live);
			if (count < n) {
				assert_int_equal(rc, 0);
				break;
			}
			assert_int_equal(rc, FG_ENOMEM);
		}
		/* scan grows three times (two arrays each), write at least once */
		assert_true(n > 7 && n < 100);
	}
	free(in);
	free(want);
}

/* ---- random pages against the README ---- */

/* A small deterministic generator, so a failure reproduces. */
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return n ? (uint32_t)((rng_state >> 33) % n) : 0;
}

#define R_CLASSES 6
#define R_MAX_ITEMS 40
#define R_MAX_TOKENS 256

/* c0 .. c5 map to classes 0 .. 5, "t" is a topic */
static const struct fg_items_label rnd_labels[] = {
	{ .str = "t", .len = 1, .classes = 0 },
	{ .str = "c0", .len = 2, .classes = BIT(0) }, { .str = "c1", .len = 2, .classes = BIT(1) },
	{ .str = "c2", .len = 2, .classes = BIT(2) }, { .str = "c3", .len = 2, .classes = BIT(3) },
	{ .str = "c4", .len = 2, .classes = BIT(4) }, { .str = "c5", .len = 2, .classes = BIT(5) },
};

/*
 * A random page: its layout as tokens (O another field, I an item slot, (
 * and ) an enclosing message), the other fields' and items' bytes, and
 * what the README says each item's decision is.
 */
struct rpage {
	char tok[R_MAX_TOKENS];
	size_t ntok;
	struct msg other[R_MAX_TOKENS];  /* by token index */
	struct msg item[R_MAX_ITEMS];
	size_t n;
	int decision[R_MAX_ITEMS];
	int group[R_MAX_ITEMS];
};

static void random_rules(struct fg_items_rules *r)
{
	static const float th[] = { 0.0f, 0.25f, 0.5f, 0.75f, 1.0f };
	size_t c, g;

	memset(r, 0, sizeof(*r));
	r->ngroups = 1 + rnd(3);
	for (c = 0; c < R_CLASSES; c++) {
		switch (rnd(3)) {
		case 0: r->exclude |= BIT(c); break;
		case 1: r->demote |= BIT(c); break;
		default: break;
		}
		r->group[c] = (uint8_t)rnd((uint32_t)r->ngroups);
		r->threshold[c] = th[rnd(5)];
	}
	r->unlabelled = (uint8_t)rnd(3);
	r->unlabelled_group = (uint8_t)rnd((uint32_t)r->ngroups);
	r->surplus_end = (uint8_t)rnd(2);
	for (g = 0; g < r->ngroups; g++)
		set_group(r, (unsigned)g, rnd(4) ? rnd(4) : 0, 1 + rnd(4), (1 + rnd(10)) / 10.0);
}

/* One random item: labels with random confidences, unknown fields. */
static void random_item(struct rpage *p, const struct fg_items_rules *r)
{
	static const float conf[] = { 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, NAN, -1.0f };
	struct msg *it = &p->item[p->n];
	uint64_t classes = 0, m;
	int labelled = 0, g;
	uint32_t k, nl = rnd(4);

	it->n = 0;
	f_varint(it, 9, p->n);
	for (k = 0; k < nl; k++) {
		struct msg lab = { .n = 0 }, mod = { .n = 0 };
		size_t li = rnd(sizeof(rnd_labels) / sizeof(rnd_labels[0]));
		uint32_t ci = rnd(8);
		double cv = ci < 7 ? conf[ci] : 0.0;   /* 7: no confidence field: its default */
		f_bytes(&lab, 1, rnd_labels[li].str, rnd_labels[li].len);
		if (ci < 7)
			f_float(&lab, 2, conf[ci]);
		f_msg(&mod, 1, &lab);
		f_msg(it, 4, &mod);
		if (rnd(3) == 0)
			f_varint(it, 5, rnd(1000));
		labelled = 1;
		if (isnan(cv))
			cv = 1.0;
		if (rnd_labels[li].classes && cv >= r->threshold[__builtin_ctzll(rnd_labels[li].classes)])
			classes |= rnd_labels[li].classes;
	}
	p->group[p->n] = 0;
	if (classes & r->exclude) {
		p->decision[p->n] = FG_ITEMS_EXCLUDE;
	} else if ((m = classes & r->demote)) {
		p->decision[p->n] = FG_ITEMS_DEMOTE;
		for (g = FG_ITEMS_MAX_GROUPS; m; m &= m - 1)
			if (r->group[__builtin_ctzll(m)] < g)
				g = r->group[__builtin_ctzll(m)];
		p->group[p->n] = g;
	} else if (!labelled) {
		p->decision[p->n] = r->unlabelled;
		p->group[p->n] = r->unlabelled == FG_ITEMS_DEMOTE ? r->unlabelled_group : 0;
	} else {
		p->decision[p->n] = FG_ITEMS_ALLOW;
	}
	p->n++;
}

static void random_other(struct rpage *p)
{
	struct msg *o = &p->other[p->ntok];
	uint32_t num = 5 + rnd(4);      /* never 1 or 3, the items path */

	o->n = 0;
	switch (rnd(4)) {
	case 0: f_varint(o, num, rnd(100000)); break;
	case 1: f_fixed32(o, num, rnd(100)); break;
	case 2: f_double(o, num, 1.5); break;
	default: f_str(o, num, "other"); break;
	}
	p->tok[p->ntok++] = 'O';
}

static void random_page(struct rpage *p, const struct fg_items_rules *r, size_t depth)
{
	size_t want = rnd(R_MAX_ITEMS + 1);
	int open = 0;

	p->ntok = p->n = 0;
	while (p->n < want || open) {
		uint32_t x = rnd(10);
		if (depth == 2 && !open && p->n < want && x < 8) {
			p->tok[p->ntok++] = '(';
			open = 1;
		} else if (depth == 2 && !open) {
			random_other(p);
		} else if (x < 2) {
			random_other(p);
		} else if (open && (x < 3 || p->n == want)) {
			p->tok[p->ntok++] = ')';
			open = 0;
		} else {
			random_item(p, r);
			p->tok[p->ntok++] = 'I';
		}
		assert_true(p->ntok < R_MAX_TOKENS - 4);
	}
	if (rnd(2))
		random_other(p);
}

/* The page with slot k holding item <order>[k] (nothing past <norder>). */
static void render(const struct rpage *p, const uint32_t *order, size_t norder, struct msg *out)
{
	struct msg encl = { .n = 0 };
	struct msg *cur = out;
	size_t t, k = 0;

	out->n = 0;
	for (t = 0; t < p->ntok; t++) {
		switch (p->tok[t]) {
		case 'O':
			put_raw(cur, p->other[t].b, p->other[t].n);
			break;
		case 'I':
			if (k < norder)
				f_msg(cur, 1, &p->item[order[k]]);
			k++;
			break;
		case '(':
			encl.n = 0;
			cur = &encl;
			break;
		default:
			f_msg(out, 3, &encl);
			cur = out;
			break;
		}
	}
}

/* What a stream has delivered, as the README counts it. */
struct rmodel {
	uint64_t delivered;
	uint64_t last[FG_ITEMS_MAX_GROUPS];     /* 1 + stream position of the group's last item */
	uint64_t count[FG_ITEMS_MAX_GROUPS];    /* item mode */
};

/*
 * Whether an item of group <g> may go at position <q> of the page planned
 * in <pos> (each item's position, or -1), with <base> its first stream
 * position: not in the first K; N from the group's last item before it
 * (in the page, or in the stream before it); the group's share of the
 * prefix ending on it at most S.
 */
static int model_fits(const struct fg_items_rules *r, const struct rpage *p, const long *pos,
                      const struct rmodel *md, unsigned g, long q)
{
	const struct fg_items_group *gr = &r->groups[g];
	uint64_t last = md->last[g], cnt = 0;
	size_t i;

	for (i = 0; i < p->n; i++) {
		if (pos[i] < 0 || pos[i] >= q || p->decision[i] != FG_ITEMS_DEMOTE || (unsigned)p->group[i] != g)
			continue;
		cnt++;
		if (md->delivered + (uint64_t)pos[i] + 1 > last)
			last = md->delivered + (uint64_t)pos[i] + 1;
	}
	if ((uint64_t)q < gr->not_before)
		return 0;
	if (last && md->delivered + (uint64_t)q - (last - 1) < gr->spacing)
		return 0;
	return (double)(cnt + 1) <= gr->max_share * (double)(q + 1) + 1e-9;
}

/* The first position an item may take: after every allowed item ranked
 * before it and after its group's earlier items. */
static long due_at(const struct rpage *p, const long *pos, size_t i)
{
	long due = 0;
	size_t j;

	for (j = 0; j < i; j++)
		if (pos[j] >= 0 && (p->decision[j] == FG_ITEMS_ALLOW ||
		                    (p->decision[j] == FG_ITEMS_DEMOTE && p->group[j] == p->group[i])))
			if (pos[j] + 1 > due)
				due = pos[j] + 1;
	return due;
}

/* At each position from when item <i> was due up to <to>, it could not go
 * there: its group's rules did not hold, or an item ranked before it took
 * the place. */
static void check_first_place(const struct fg_items_rules *r, const struct rpage *p, const long *pos,
                              const uint32_t *order, const struct rmodel *md, size_t i, long to)
{
	long q;

	for (q = due_at(p, pos, i); q < to; q++) {
		uint32_t o = order[q];
		if (p->decision[o] == FG_ITEMS_DEMOTE && o < i)
			continue;
		if (model_fits(r, p, pos, md, (unsigned)p->group[i], q))
			fail_msg("item %zu fits at %ld but went to %ld", i, q, to);
	}
}

/* Where <pg>'s plan delivers item <i>. */
static size_t k_of(const struct fg_items_page *pg, size_t i)
{
	size_t k;

	for (k = 0; k < pg->norder && pg->order[k] != i; k++)
		;
	return k;
}

/* The README's promises for one page planned without a limit. */
static void check_plan(const struct fg_items_rules *r, const struct rpage *p, const struct fg_items_page *pg,
                       const struct rmodel *md)
{
	long pos[R_MAX_ITEMS], merged = 0;
	size_t i, j, k, seen_surplus[FG_ITEMS_MAX_GROUPS] = { 0 };
	int unmet = 0;
	uint32_t prev_allowed = 0, prev_end = 0;
	int have_allowed = 0, have_end = 0;

	assert_int_equal(pg->n, p->n);
	for (i = 0; i < p->n; i++)
		pos[i] = -1;
	for (k = 0; k < pg->norder; k++) {
		uint32_t o = pg->order[k];
		assert_true(o < p->n);
		assert_int_equal(pos[o], -1);           /* at most once */
		pos[o] = (long)k;
		assert_int_not_equal(p->decision[o], FG_ITEMS_EXCLUDE);
		if (pg->item[o].fate == FG_ITEMS_KEPT) {
			assert_int_equal(merged, (long)k); /* the end comes after everything */
			merged++;
		} else {
			assert_int_equal(pg->item[o].fate, FG_ITEMS_SURPLUS_END);
			assert_true(!have_end || o > prev_end);
			prev_end = o;
			have_end = 1;
		}
		if (p->decision[o] == FG_ITEMS_ALLOW) {
			assert_true(!have_allowed || o > prev_allowed);
			prev_allowed = o;
			have_allowed = 1;
		}
	}
	for (i = 0; i < p->n; i++) {
		const struct fg_items_item *it = &pg->item[i];
		assert_int_equal(it->decision, p->decision[i]);
		if (p->decision[i] == FG_ITEMS_DEMOTE)
			assert_int_equal(it->group, p->group[i]);
		switch (p->decision[i]) {
		case FG_ITEMS_EXCLUDE:
			assert_int_equal(it->fate, FG_ITEMS_REMOVED);
			break;
		case FG_ITEMS_ALLOW:
			assert_int_equal(it->fate, FG_ITEMS_KEPT);
			assert_true(pos[i] >= 0);
			break;
		default:
			if (it->fate == FG_ITEMS_KEPT) {
				unsigned g = (unsigned)p->group[i];
				const struct fg_items_group *gr = &r->groups[g];
				long cnt = 0;
				assert_true(pos[i] >= (long)gr->not_before);
				for (j = 0; j < p->n; j++)
					if (pos[j] >= 0 && pos[j] <= pos[i] && p->decision[j] == FG_ITEMS_DEMOTE &&
					    p->group[j] == p->group[i]) {
						assert_true(pg->item[j].fate == FG_ITEMS_KEPT);
						cnt++;
					}
				assert_true((double)cnt <= gr->max_share * (double)(pos[i] + 1) + 1e-9);
				/* and spacing from the group's previous item, in the
				 * page or the stream: the rules held where it went */
				pos[i] = -1;
				assert_true(model_fits(r, p, pos, md, g, (long)k_of(pg, i)));
				pos[i] = (long)k_of(pg, i);
				check_first_place(r, p, pos, pg->order, md, i, pos[i]);
			} else {
				unsigned g = (unsigned)p->group[i];
				unmet = 1;
				assert_int_equal(it->fate, r->surplus_end ? FG_ITEMS_SURPLUS_END : FG_ITEMS_SURPLUS_DROPPED);
				assert_true(r->surplus_end ? pos[i] >= merged : pos[i] == -1);
				if (!seen_surplus[g]++) {
					/* the group's first surplus item found no place,
					 * not even at the end of the merged page */
					long save = pos[i];
					pos[i] = -1;
					check_first_place(r, p, pos, pg->order, md, i, merged);
					assert_false(model_fits(r, p, pos, md, g, merged));
					pos[i] = save;
				}
			}
			break;
		}
	}
	/* a group's demoted items keep their order */
	for (i = 0; i < p->n; i++)
		for (j = i + 1; j < p->n; j++)
			if (p->decision[i] == FG_ITEMS_DEMOTE && p->decision[j] == FG_ITEMS_DEMOTE &&
			    p->group[i] == p->group[j] && pos[i] >= 0 && pos[j] >= 0 &&
			    pg->item[i].fate == pg->item[j].fate)
				assert_true(pos[i] < pos[j]);
	assert_int_equal(pg->unmet, unmet);
}

/* The model stream after delivering <pg>'s plan. */
static void model_advance(struct rmodel *md, const struct rpage *p, const struct fg_items_page *pg)
{
	size_t k;

	for (k = 0; k < pg->norder; k++) {
		uint32_t o = pg->order[k];
		if (p->decision[o] == FG_ITEMS_DEMOTE)
			md->last[p->group[o]] = md->delivered + k + 1;
	}
	md->delivered += pg->norder;
}

/* Write the plan and read the output again: exactly the planned items,
 * in order, and the page's other fields where they were. */
static void check_write(const struct rpage *p, const struct msg *in, const struct fg_items_spec *sp,
                        const struct fg_items_rules *r, const struct fg_items_page *pg)
{
	struct fg_items_page again = { 0 };
	struct fg_bufq out = { 0 };
	struct msg *want = malloc(sizeof(*want));
	const char *why = NULL;
	size_t k;

	assert_non_null(want);
	assert_int_equal(fg_items_write(in->b, in->n, sp, pg, &out, &why), 0);
	render(p, pg->order, pg->norder, want);
	assert_int_equal(fg_bufq_len(&out), want->n);
	assert_memory_equal(fg_bufq_head(&out), want->b, want->n);
	assert_int_equal(fg_items_scan(fg_bufq_head(&out), fg_bufq_len(&out), sp, r, &again, &why), 0);
	assert_int_equal(again.n, pg->norder);
	for (k = 0; k < again.n; k++) {
		const struct fg_items_item *a = &again.item[k], *b = &pg->item[pg->order[k]];
		assert_int_equal(a->end - a->start, b->end - b->start);
		assert_memory_equal(fg_bufq_head(&out) + a->start, in->b + b->start, b->end - b->start);
		assert_int_equal(a->decision, b->decision);
	}
	if (fg_items_identity(pg))
		assert_memory_equal(fg_bufq_head(&out), in->b, in->n);
	fg_items_page_free(&again);
	fg_bufq_free(&out);
	free(want);
}

static int is_identity(const struct fg_items_page *pg)
{
	size_t k;

	if (pg->norder != pg->n)
		return 0;
	for (k = 0; k < pg->norder; k++)
		if (pg->order[k] != k)
			return 0;
	return 1;
}

/* One random page of a stream: planned without a limit (checked), then
 * with the stream's limit (a prefix of it), written and read back. */
/* The same page under the same rules plus exposure counters (which
 * change no decision, so no plan): the scan's totals and what the plan
 * counted as it built the order, against walks of the items and of the
 * order, trimmed or not. */
static void check_counters(const struct msg *in, const struct fg_items_spec *sp, const struct fg_items_rules *r,
                           size_t limit, struct fg_items_page *pg)
{
	struct fg_items_rules rc = *r;
	uint32_t got[3] = { 0 }, want[3] = { 0 }, all[3] = { 0 };
	const char *why = NULL;
	size_t i, k;

	rc.ncounters = 3;
	rc.counter[0] = BIT(0) | BIT(2);
	rc.counter[1] = BIT(1);
	rc.counter[2] = BIT(R_CLASSES - 1) | BIT(0);
	assert_int_equal(fg_items_scan(in->b, in->n, sp, &rc, pg, &why), 0);
	fg_items_plan(pg, &rc, NULL, limit, 0);
	fg_items_count_delivered(pg, &rc, got);
	for (i = 0; i < pg->n; i++)
		for (k = 0; k < 3; k++)
			all[k] += pg->item[i].counters >> k & 1;
	for (i = 0; i < pg->norder; i++)
		for (k = 0; k < 3; k++)
			want[k] += pg->item[pg->order[i]].counters >> k & 1;
	assert_memory_equal(got, want, sizeof(want));
	assert_memory_equal(pg->counted, all, sizeof(all));
}

static void random_stream_page(struct rpage *p, struct msg *in, const struct fg_items_spec *sp,
                               const struct fg_items_rules *r, struct fg_items_stream *st, struct rmodel *md,
                               struct fg_items_page *pg)
{
	struct fg_items_stream st0 = *st;
	uint32_t full[R_MAX_ITEMS], ident[R_MAX_ITEMS];
	size_t nfull, k, limit = rnd(3) ? 0 : rnd(R_MAX_ITEMS);
	const char *why = NULL;

	/* the input: every slot holds its own item */
	for (k = 0; k < R_MAX_ITEMS; k++)
		ident[k] = (uint32_t)k;
	render(p, ident, p->n, in);
	assert_int_equal(fg_items_scan(in->b, in->n, sp, r, pg, &why), 0);
	fg_items_plan(pg, r, &st0, 0, 0);
	check_plan(r, p, pg, md);
	nfull = pg->norder;
	memcpy(full, pg->order, nfull * sizeof(full[0]));
	fg_items_plan(pg, r, st, limit, 0);
	assert_int_equal(pg->norder, limit && limit < nfull ? limit : nfull);
	assert_memory_equal(pg->order, full, pg->norder * sizeof(full[0]));
	for (k = pg->norder; k < nfull; k++)
		assert_int_equal(pg->item[full[k]].fate, FG_ITEMS_TRIMMED);
	assert_int_equal(fg_items_identity(pg), is_identity(pg));
	model_advance(md, p, pg);
	assert_int_equal(st->delivered, md->delivered);
	assert_memory_equal(st->last, md->last, sizeof(md->last));
	check_write(p, in, sp, r, pg);
	check_counters(in, sp, r, limit, pg);
}

/* Item mode: each message one item of the stream, checked against the model. */
static void random_item_stream(const struct fg_items_spec *sp0, struct fg_items_page *pg)
{
	struct fg_items_spec sp = *sp0;
	struct fg_items_rules r;
	struct fg_items_stream st = { 0 };
	struct rmodel md = { 0 };
	struct rpage *p = malloc(sizeof(*p));
	struct fg_bufq out = { 0 };
	const char *why = NULL;
	uint64_t limit;
	size_t i, n = rnd(30);

	assert_non_null(p);
	random_rules(&r);
	limit = rnd(3) ? 0 : rnd(20);
	sp.items_depth = 0;
	for (i = 0; i < n; i++) {
		int d, fate;
		unsigned g;
		p->n = 0;
		random_item(p, &r);
		/* the item message itself is the page */
		assert_int_equal(fg_items_scan(p->item[0].b, p->item[0].n, &sp, &r, pg, &why), 0);
		d = p->decision[0];
		g = (unsigned)p->group[0];
		if (d == FG_ITEMS_EXCLUDE)
			fate = FG_ITEMS_REMOVED;
		else if (limit && md.delivered >= limit)
			fate = FG_ITEMS_TRIMMED;
		else if (d == FG_ITEMS_DEMOTE) {
			const struct fg_items_group *gr = &r.groups[g];
			uint64_t at = md.delivered;
			int ok = at >= gr->not_before &&
			         !(md.last[g] && at - (md.last[g] - 1) < gr->spacing) &&
			         (double)(md.count[g] + 1) <= gr->max_share * (double)(at + 1) + 1e-9;
			fate = ok ? FG_ITEMS_KEPT : FG_ITEMS_SURPLUS_DROPPED;
		} else
			fate = FG_ITEMS_KEPT;
		fg_items_plan(pg, &r, &st, limit, 1);
		assert_int_equal(pg->item[0].fate, fate);
		assert_int_equal(pg->norder, fate == FG_ITEMS_KEPT);
		assert_int_equal(pg->unmet, fate == FG_ITEMS_SURPLUS_DROPPED);
		if (fate == FG_ITEMS_KEPT) {
			if (d == FG_ITEMS_DEMOTE) {
				md.last[g] = md.delivered + 1;
				md.count[g]++;
			}
			md.delivered++;
		}
		assert_int_equal(st.delivered, md.delivered);
		assert_memory_equal(st.last, md.last, sizeof(md.last));
		fg_bufq_truncate(&out, 0);
		assert_int_equal(fg_items_write(p->item[0].b, p->item[0].n, &sp, pg, &out, &why), 0);
		assert_int_equal(fg_bufq_len(&out), fate == FG_ITEMS_KEPT ? p->item[0].n : 0);
	}
	fg_bufq_free(&out);
	free(p);
}

static void test_items_random(void **state)
{
	struct fg_items_spec sp = spec_message(0, FG_ITEMS_C_FLOAT);
	struct fg_items_rules r;
	struct fg_items_stream st;
	struct fg_items_page pg = { 0 };
	struct rmodel md;
	struct rpage *p = malloc(sizeof(*p));
	struct msg *in = malloc(sizeof(*in));
	int stream, page, npages, pages = 0;

	(void)state;
	assert_true(p && in);
	sp.labels_path[0] = 4;
	sp.labels_path[1] = 1;
	sp.labels = rnd_labels;
	sp.nlabels = sizeof(rnd_labels) / sizeof(rnd_labels[0]);
	rng_state = 20240611;
	for (stream = 0; stream < 1500; stream++) {
		size_t depth = 1 + rnd(2);
		sp.items_path[0] = depth == 1 ? 1 : 3;
		sp.items_path[1] = 1;
		sp.items_depth = depth;
		random_rules(&r);
		memset(&st, 0, sizeof(st));
		memset(&md, 0, sizeof(md));
		npages = 1 + (int)rnd(4);
		for (page = 0; page < npages; page++, pages++) {
			random_page(p, &r, depth);
			random_stream_page(p, in, &sp, &r, &st, &md, &pg);
		}
		if (stream % 3 == 0)
			random_item_stream(&sp, &pg);
	}
	print_message("random: %d pages in 1500 streams\n", pages);
	fg_items_page_free(&pg);
	free(p);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_items_string_labels),
		cmocka_unit_test(test_items_multiple_classes),
		cmocka_unit_test(test_items_enum_labels),
		cmocka_unit_test(test_items_message_labels),
		cmocka_unit_test(test_items_exclude_and_identity),
		cmocka_unit_test(test_items_exposure_limits),
		cmocka_unit_test(test_items_not_before_spacing_share),
		cmocka_unit_test(test_items_groups),
		cmocka_unit_test(test_items_surplus_and_trim),
		cmocka_unit_test(test_items_stream),
		cmocka_unit_test(test_items_item_mode),
		cmocka_unit_test(test_items_write_flat),
		cmocka_unit_test(test_items_write_nested),
		cmocka_unit_test(test_items_write_depth3),
		cmocka_unit_test(test_items_malformed),
		cmocka_unit_test(test_items_write_changed),
		cmocka_unit_test(test_items_too_big),
		cmocka_unit_test(test_items_enomem),
		cmocka_unit_test(test_items_random),
	};

	return cmocka_run_group_tests_name("items", tests, NULL, NULL);
}
