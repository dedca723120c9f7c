/*
 * fg_items.c - the item editor: scan a feed page, plan the order of its
 * items under a band's rules, write the page again.  See fg_items.h.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_items.h"

/* --- stepping over fields --------------------------------------------- */

/* One field as the scanner needs it; <end> NULL when the input is bad. */
struct fld {
	const uint8_t *tag;         /* the field's first byte */
	const uint8_t *value;       /* as struct fg_pbwire_field's */
	const uint8_t *end;         /* one past the field; NULL: not valid wire format */
	size_t vlen;
	uint64_t varint;
	uint32_t number;
	uint8_t wire_type;
	uint8_t tag_len;
};

/* The general reader, for what step() leaves to it: longer tags and
 * lengths, 10-byte varints, groups, and every error.  Out of line, and by
 * value, so step()'s caller keeps its field and cursor in registers. */
static __attribute__((noinline)) struct fld step_slow(const uint8_t *p, const uint8_t *end)
{
	struct fg_pbwire_field f;
	struct fld r = { 0 };

	if (fg_pbwire_next_field(&p, end, &f) < 0)
		return r;
	r.tag = f.tag;
	r.value = f.value;
	r.end = f.end;
	r.vlen = f.vlen;
	r.varint = f.varint;
	r.number = f.number;
	r.wire_type = f.wire_type;
	r.tag_len = f.tag_len;
	return r;
}

/*
 * The field at <p> (before <end>).  The common case (a one-byte tag; a
 * varint of up to 9 bytes, a fixed value or a length under 16384) is read
 * here, inline; anything else goes to the general reader.
 */
static inline __attribute__((always_inline)) struct fld step(const uint8_t *p, const uint8_t *end)
{
	size_t avail = (size_t)(end - p);
	struct fld f;

	if (avail >= 3 && p[0] < 0x80 && p[0] >= 0x08) {
		const uint8_t *v = p + 1;
		f.number = p[0] >> 3;
		f.wire_type = p[0] & 7;
		f.tag = p;
		f.tag_len = 1;
		switch (f.wire_type) {
		case FG_PBWIRE_VARINT: {
			size_t i, lim = avail - 1 < 9 ? avail - 1 : 9;
			uint64_t x = 0;
			for (i = 0; i < lim; i++) {
				x |= (uint64_t)(v[i] & 0x7f) << (7 * i);
				if (v[i] < 0x80)
					break;
			}
			if (i == lim)
				break;
			f.value = v;
			f.vlen = i + 1;
			f.varint = x;
			f.end = v + i + 1;
			return f;
		}
		case FG_PBWIRE_LEN: {
			size_t n, hl;
			if (v[0] < 0x80) {
				n = v[0];
				hl = 1;
			} else if (v[1] < 0x80) {
				n = (size_t)(v[0] & 0x7f) | ((size_t)v[1] << 7);
				hl = 2;
			} else {
				break;
			}
			if (n > avail - 1 - hl)
				break;
			f.value = v + hl;
			f.vlen = n;
			f.varint = n;
			f.end = f.value + n;
			return f;
		}
		case FG_PBWIRE_I32:
			if (avail < 5)
				break;
			f.value = v;
			f.vlen = 4;
			f.varint = 0;
			f.end = v + 4;
			return f;
		case FG_PBWIRE_I64:
			if (avail < 9)
				break;
			f.value = v;
			f.vlen = 8;
			f.varint = 0;
			f.end = v + 8;
			return f;
		default:
			break;
		}
	}
	return step_slow(p, end);
}

/* --- scanning ---------------------------------------------------------- */

struct scan {
	const struct fg_items_spec *spec;
	const struct fg_items_rules *r;     /* NULL: items located, not classified */
	struct fg_items_page *page;
	const uint8_t *base;
	const char **why;
	uint64_t classes;           /* of the item being classified */
	unsigned labelled;
	uint64_t counted_classes;   /* every class some exposure counter of <r> counts */
};

static int bad(struct scan *s, const char *msg)
{
	if (s->why)
		*s->why = msg;
	return FG_EINVAL;
}

/* Cheap and good enough for a few dozen short labels: the length and
 * three bytes, mixed by one multiplication. */
uint32_t fg_items_hash(const uint8_t *p, size_t n)
{
	uint32_t h = (uint32_t)n;

	if (n)
		h ^= (uint32_t)p[0] << 8 ^ (uint32_t)p[n - 1] << 16 ^ (uint32_t)p[n / 2] << 24;
	return (h * 0x9E3779B1u) >> 16;
}

size_t fg_items_slots_size(size_t nlabels)
{
	size_t n = 8;

	while (n < 2 * nlabels)
		n *= 2;
	return n;
}

void fg_items_slots(struct fg_items_spec *spec, uint16_t *slots)
{
	size_t n = fg_items_slots_size(spec->nlabels), i;

	memset(slots, 0, n * sizeof(*slots));
	for (i = 0; i < spec->nlabels && i < 32767; i++) {
		const struct fg_items_label *l = &spec->labels[i];
		uint32_t at = fg_items_hash((const uint8_t *)l->str, l->len) & (uint32_t)(n - 1);
		while (slots[at])
			at = (at + 1) & (uint32_t)(n - 1);
		slots[at] = (uint16_t)(i + 1);
	}
	spec->slots = slots;
	spec->slot_mask = (uint32_t)(n - 1);
}

static const struct fg_items_label *find_str(const struct fg_items_spec *sp, const uint8_t *p, size_t n)
{
	size_t lo = 0, hi = sp->nlabels;

	if (sp->slots) {
		uint32_t at = fg_items_hash(p, n) & sp->slot_mask;
		for (; sp->slots[at]; at = (at + 1) & sp->slot_mask) {
			const struct fg_items_label *l = &sp->labels[sp->slots[at] - 1];
			if (l->len == n && memcmp(l->str, p, n) == 0)
				return l;
		}
		return NULL;
	}

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct fg_items_label *l = &sp->labels[mid];
		int c = l->len < n ? -1 : l->len > n ? 1 : memcmp(l->str, p, n);
		if (c == 0)
			return l;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static const struct fg_items_label *find_num(const struct fg_items_spec *sp, int64_t v)
{
	size_t lo = 0, hi = sp->nlabels;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (sp->labels[mid].num == v)
			return &sp->labels[mid];
		if (sp->labels[mid].num < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * Whether confidence <conf> reaches threshold <t>.  The policy keeps its
 * thresholds as floats, so the 0.1 it was given is 0.1f, a little above
 * the double 0.1 a classifier sends at the threshold: a double confidence
 * counts when it is <t> at a float's precision (a float one is exact).
 */
static int reaches(double conf, float t)
{
	if (conf >= (double)t)
		return 1;
	/* below <t>; converting a double out of a float's range is undefined */
	return conf >= -FLT_MAX && (float)conf >= t;
}

/*
 * A label <l> with confidence <conf>.  NULL: a string the map does not
 * list (a topic: the item is labelled all the same) or, with <is_enum>, a
 * number the enum does not name (no label).
 */
static void add_label(struct scan *s, const struct fg_items_label *l, double conf, int is_enum)
{
	uint64_t m;

	if (!l) {
		s->labelled |= !is_enum;
		return;
	}
	s->labelled = 1;
	/* A confidence that is not a number is a signal all the same. */
	if (isnan(conf))
		conf = 1.0;
	for (m = l->classes; m; m &= m - 1) {
		unsigned b = (unsigned)__builtin_ctzll(m);
		if (reaches(conf, s->r->threshold[b]))
			s->classes |= UINT64_C(1) << b;
	}
}

/* An enum value as the receiver reads it: a varint truncated to int32. */
static int64_t enum_value(uint64_t v)
{
	return (int64_t)(int32_t)(uint32_t)v;
}

static int enum_labels(struct scan *s, const struct fld *f)
{
	const struct fg_items_spec *sp = s->spec;

	if (f->wire_type == FG_PBWIRE_VARINT) {
		add_label(s, find_num(sp, enum_value(f->varint)), 1.0, 1);
		return 0;
	}
	if (f->wire_type == FG_PBWIRE_LEN) {            /* packed */
		const uint8_t *p = f->value, *e = f->value + f->vlen;
		uint64_t v;
		while (p < e) {
			if (fg_pbwire_read_varint(&p, e, &v) < 0)
				return bad(s, "a packed enum label is not whole varints");
			add_label(s, find_num(sp, enum_value(v)), 1.0, 1);
		}
		return 0;
	}
	return bad(s, "an enum label is not a varint");
}

/* One label message: its value and confidence (the last of each wins). */
static int message_label(struct scan *s, const uint8_t *p, const uint8_t *end)
{
	const struct fg_items_spec *sp = s->spec;
	struct fld f, val = { 0 };
	/* With a confidence field, an absent value is its default, 0 (proto3
	 * does not send 0.0); without one, every label is certain. */
	double conf = sp->conf_kind == FG_ITEMS_C_NONE ? 1.0 : 0.0;
	int have = 0;

	/* What classifiers send nearly always: a short string label, then a
	 * float confidence, one-byte tags, nothing else.  Read it in place. */
	if (!sp->value_enum && sp->conf_kind == FG_ITEMS_C_FLOAT && sp->value_number < 16 && sp->conf_number < 16 &&
	    end - p >= 2 && p[0] == ((sp->value_number << 3) | FG_PBWIRE_LEN) && p[1] < 0x80 &&
	    (size_t)(end - p) - 2 >= p[1]) {
		const uint8_t *v = p + 2, *q = p + 2 + p[1];
		if (end - q == 5 && q[0] == ((sp->conf_number << 3) | FG_PBWIRE_I32)) {
			float x;
			memcpy(&x, q + 1, 4);
			add_label(s, find_str(sp, v, p[1]), x, 0);
			return 0;
		}
	}
	while (p < end) {
		f = step(p, end);
		if (!f.end)
			return bad(s, "a label message is not valid protobuf");
		p = f.end;
		if (f.number == sp->value_number) {
			if (sp->value_enum ? f.wire_type != FG_PBWIRE_VARINT : f.wire_type != FG_PBWIRE_LEN)
				return bad(s, "a label's value has the wrong wire type");
			val = f;
			have = 1;
		} else if (f.number == sp->conf_number && sp->conf_kind != FG_ITEMS_C_NONE) {
			if (sp->conf_kind == FG_ITEMS_C_FLOAT) {
				float x;
				if (f.wire_type != FG_PBWIRE_I32)
					return bad(s, "a label's confidence is not a float");
				memcpy(&x, f.value, 4);
				conf = x;
			} else {
				if (f.wire_type != FG_PBWIRE_I64)
					return bad(s, "a label's confidence is not a double");
				memcpy(&conf, f.value, 8);
			}
		}
	}
	/* An absent value is the field's default: "" or 0. */
	if (sp->value_enum)
		add_label(s, find_num(sp, have ? enum_value(val.varint) : 0), conf, 1);
	else
		add_label(s, have ? find_str(sp, val.value, val.vlen) : find_str(sp, (const uint8_t *)"", 0), conf, 0);
	return 0;
}

/* The labels under labels_path[d..] in the message [p, end). */
static int scan_labels(struct scan *s, const uint8_t *p, const uint8_t *end, size_t d)
{
	const struct fg_items_spec *sp = s->spec;
	uint32_t want = sp->labels_path[d];
	int last = d + 1 == sp->labels_depth;
	struct fld f;
	int rc;

	while (p < end) {
		f = step(p, end);
		if (!f.end)
			return bad(s, "an item is not valid protobuf");
		p = f.end;
		if (f.number != want)
			continue;
		if (!last) {
			if (f.wire_type != FG_PBWIRE_LEN)
				return bad(s, "a message on the labels path is not a message");
			if ((rc = scan_labels(s, f.value, f.end, d + 1)) < 0)
				return rc;
			continue;
		}
		switch (sp->label_kind) {
		case FG_ITEMS_L_STRING:
			if (f.wire_type != FG_PBWIRE_LEN)
				return bad(s, "a string label is not length-delimited");
			add_label(s, find_str(sp, f.value, f.vlen), 1.0, 0);
			break;
		case FG_ITEMS_L_ENUM:
			if ((rc = enum_labels(s, &f)) < 0)
				return rc;
			break;
		default:
			if (f.wire_type != FG_PBWIRE_LEN)
				return bad(s, "a label message is not length-delimited");
			if ((rc = message_label(s, f.value, f.end)) < 0)
				return rc;
			break;
		}
	}
	return 0;
}

static int grow(struct fg_items_page *pg)
{
	size_t cap = pg->cap ? pg->cap * 2 : 64;
	struct fg_items_item *it;
	uint32_t *ord;

	if (cap > FG_ITEMS_MAX)
		cap = FG_ITEMS_MAX;
	if (!(it = realloc(pg->item, cap * sizeof(*it))))
		return FG_ENOMEM;
	pg->item = it;
	if (!(ord = realloc(pg->order, 2 * cap * sizeof(*ord))))
		return FG_ENOMEM;
	pg->order = ord;
	pg->cap = cap;
	return 0;
}

/* Which counters an item of <classes> counts toward, into the item and
 * the page's totals.  Most items count toward none: one mask test. */
static void count_item(struct scan *s, uint64_t classes, struct fg_items_item *it)
{
	const struct fg_items_rules *r = s->r;
	unsigned k;

	it->counters = 0;
	if (!(classes & s->counted_classes))
		return;
	for (k = 0; k < r->ncounters; k++)
		if (classes & r->counter[k]) {
			it->counters |= (uint16_t)(1u << k);
			s->page->counted[k]++;
		}
}

/* Decide an item from its classes under the band's rules. */
static void decide(struct scan *s, uint64_t classes, unsigned labelled, struct fg_items_item *it)
{
	const struct fg_items_rules *r = s->r;
	uint64_t m;

	it->group = 0;
	it->cls = 0;
	it->limited = 0;
	count_item(s, classes, it);
	if ((m = classes & r->exclude)) {
		it->decision = FG_ITEMS_EXCLUDE;
		it->cls = (uint8_t)__builtin_ctzll(m);
	} else if ((m = classes & r->demote)) {
		unsigned g = FG_ITEMS_MAX_GROUPS;
		it->decision = FG_ITEMS_DEMOTE;
		it->cls = (uint8_t)__builtin_ctzll(m);
		for (; m; m &= m - 1)
			if (r->group[__builtin_ctzll(m)] < g)
				g = r->group[__builtin_ctzll(m)];
		it->group = (uint8_t)g;
	} else if (!labelled) {
		it->decision = r->unlabelled;
		it->cls = FG_ITEMS_UNLABELLED;
		it->group = r->unlabelled_group;
	} else {
		it->decision = FG_ITEMS_ALLOW;
		/* An allowed item that counts toward exposure is counted (if its
		 * allowance is spent) under its first such class. */
		m = classes & s->counted_classes;
		if (!m)
			m = classes;
		it->cls = m ? (uint8_t)__builtin_ctzll(m) : FG_ITEMS_NO_CLASS;
	}
}

/* One item: the field occurrence [tag, end) whose payload is [v, vend). */
static int add_item(struct scan *s, const uint8_t *tag, const uint8_t *v, const uint8_t *vend)
{
	struct fg_items_page *pg = s->page;
	struct fg_items_item *it;
	int rc;

	if (pg->n == FG_ITEMS_MAX)
		return FG_ETOOBIG;
	if (pg->n == pg->cap && (rc = grow(pg)) < 0)
		return rc;
	it = &pg->item[pg->n++];
	it->start = (uint32_t)(tag - s->base);
	it->end = (uint32_t)(vend - s->base);
	it->fate = FG_ITEMS_KEPT;
	if (!s->r) {
		it->decision = FG_ITEMS_ALLOW;
		it->group = 0;
		it->cls = FG_ITEMS_NO_CLASS;
		it->limited = 0;
		it->counters = 0;
		return 0;
	}
	s->classes = 0;
	s->labelled = 0;
	if ((rc = scan_labels(s, v, vend, 0)) < 0)
		return rc;
	decide(s, s->classes, s->labelled, it);
	return 0;
}

/* The items under items_path[d..] in the message [p, end). */
static int scan_items(struct scan *s, const uint8_t *p, const uint8_t *end, size_t d)
{
	const struct fg_items_spec *sp = s->spec;
	uint32_t want = sp->items_path[d];
	int last = d + 1 == sp->items_depth;
	struct fld f;
	int rc;

	while (p < end) {
		f = step(p, end);
		if (!f.end)
			return bad(s, "the page is not valid protobuf");
		p = f.end;
		if (f.number != want)
			continue;
		if (f.wire_type != FG_PBWIRE_LEN)
			return bad(s, last ? "an item is not a message" : "a message on the items path is not a message");
		rc = last ? add_item(s, f.tag, f.value, f.end) : scan_items(s, f.value, f.end, d + 1);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The items of <in>[0 .. <len>) into <s>->page: classified under <s>->r,
 * or only located when it is NULL (no labels read). */
static int scan_page(struct scan *s, const uint8_t *in, size_t len)
{
	const struct fg_items_spec *spec = s->spec;

	s->page->n = 0;
	s->page->norder = 0;
	s->page->unmet = 0;
	memset(s->page->counted, 0, sizeof(s->page->counted));
	memset(s->page->delivered, 0, sizeof(s->page->delivered));
	s->counted_classes = 0;
	for (unsigned k = 0; s->r && k < s->r->ncounters; k++)
		s->counted_classes |= s->r->counter[k];
	if (len > UINT32_MAX)
		return FG_ETOOBIG;
	if (!in)
		in = s->base = (const uint8_t *)"";
	/* Item mode too: scan_labels follows labels_path[] to its depth. */
	if (spec->items_depth > FG_ITEMS_MAX_PATH ||
	    (s->r && (spec->labels_depth == 0 || spec->labels_depth > FG_ITEMS_MAX_PATH)))
		return bad(s, "bad item spec");
	if (spec->items_depth == 0)
		return add_item(s, in, in, in + len);
	return scan_items(s, in, in + len, 0);
}

int fg_items_scan(const uint8_t *in, size_t len, const struct fg_items_spec *spec,
                  const struct fg_items_rules *r, struct fg_items_page *page, const char **why)
{
	struct scan s = { .spec = spec, .r = r, .page = page, .base = in, .why = why };

	return scan_page(&s, in, len);
}

int fg_items_locate(const uint8_t *in, size_t len, const struct fg_items_spec *spec, struct fg_items_page *page,
                    const char **why)
{
	struct scan s = { .spec = spec, .page = page, .base = in, .why = why };

	return scan_page(&s, in, len);
}

/* --- planning ---------------------------------------------------------- */

struct plan {
	const struct fg_items_rules *r;
	struct fg_items_page *pg;
	uint64_t base;                          /* stream position of this page's first item */
	uint64_t last[FG_ITEMS_MAX_GROUPS];     /* 1 + stream position of the group's last item */
	uint64_t count[FG_ITEMS_MAX_GROUPS];    /* the group's items in this page (or stream) */
	uint64_t pos0;                          /* what position 0 of the rules is: 0 for a page */
};

/* Whether an item of group <g> may be delivered at page position <p>. */
static int fits(const struct plan *pl, unsigned g, uint64_t p)
{
	const struct fg_items_group *gr = &pl->r->groups[g];
	uint64_t at = pl->base + p, rp = pl->pos0 + p;

	if (rp < gr->not_before)
		return 0;
	if (pl->last[g] && at - (pl->last[g] - 1) < gr->spacing)
		return 0;
	/* (count + 1) / (rp + 1) <= share, with room for the share's rounding. */
	return (double)(pl->count[g] + 1) <= gr->max_share * (double)(rp + 1) + 1e-9;
}

/* A demoted item's group, within the rules' <ng> groups: a group beyond
 * them counts in the last one (the arrays have FG_ITEMS_MAX_GROUPS). */
static unsigned own_group(struct fg_items_item *it, size_t ng)
{
	if (it->group >= ng)
		it->group = (uint8_t)(ng - 1);
	return it->group;
}

/* <it> goes into the order (<sign> 1) or out of it again (-1, trimmed):
 * the page's delivered items of each counter follow. */
static void count_order(struct fg_items_page *pg, const struct fg_items_item *it, int sign)
{
	unsigned bits = it->counters, k;

	for (k = 0; bits; k++, bits >>= 1)
		if (bits & 1)
			pg->delivered[k] += (uint32_t)sign;
}

static void append(struct fg_items_page *pg, uint32_t i)
{
	if (pg->item[i].counters)
		count_order(pg, &pg->item[i], 1);
	pg->order[pg->norder++] = i;
}

static void deliver(struct plan *pl, uint32_t i)
{
	struct fg_items_page *pg = pl->pg;
	struct fg_items_item *it = &pg->item[i];

	if (it->decision == FG_ITEMS_DEMOTE) {
		pl->last[it->group] = pl->base + pg->norder + 1;
		pl->count[it->group]++;
	}
	append(pg, i);
}

static void plan_item_mode(struct plan *pl, struct fg_items_stream *st, uint64_t limit, size_t ng)
{
	struct fg_items_page *pg = pl->pg;
	struct fg_items_item *it = &pg->item[0];

	it->fate = FG_ITEMS_KEPT;
	if (it->decision == FG_ITEMS_DEMOTE)
		own_group(it, ng);
	if (it->decision == FG_ITEMS_EXCLUDE) {
		it->fate = it->limited ? FG_ITEMS_LIMITED : FG_ITEMS_REMOVED;
		return;
	}
	if (limit && pl->base >= limit) {
		it->fate = FG_ITEMS_TRIMMED;
		return;
	}
	if (it->decision == FG_ITEMS_DEMOTE && !fits(pl, it->group, 0)) {
		it->fate = FG_ITEMS_SURPLUS_DROPPED;
		pg->unmet = 1;
		return;
	}
	deliver(pl, 0);
	if (st) {
		memcpy(st->last, pl->last, sizeof(st->last));
		memcpy(st->count, pl->count, sizeof(st->count));
		st->delivered++;
	}
}

void fg_items_plan(struct fg_items_page *page, const struct fg_items_rules *r, struct fg_items_stream *st,
                   uint64_t limit, int item_mode)
{
	struct plan pl = { .r = r, .pg = page };
	uint32_t *next;                                 /* per group FIFO links of pending items */
	uint32_t head[FG_ITEMS_MAX_GROUPS], tail[FG_ITEMS_MAX_GROUPS];
	size_t ri, i, g, ng = r->ngroups ? r->ngroups : 1;

	page->norder = 0;
	page->unmet = 0;
	memset(page->delivered, 0, sizeof(page->delivered));
	if (page->n == 0)
		return;
	/* Only now: a page that never held an item has no arrays (NULL + 0). */
	next = page->order + page->cap;
	if (ng > FG_ITEMS_MAX_GROUPS)
		ng = FG_ITEMS_MAX_GROUPS;
	if (st) {
		pl.base = st->delivered;
		memcpy(pl.last, st->last, sizeof(pl.last));
	}
	if (item_mode) {
		pl.pos0 = pl.base;
		if (st)
			memcpy(pl.count, st->count, sizeof(pl.count));
		plan_item_mode(&pl, st, limit, ng);
		return;
	}
	for (g = 0; g < ng; g++)
		head[g] = tail[g] = UINT32_MAX;
	/* Excluded items go; demoted ones queue in their group. */
	for (i = 0; i < page->n; i++) {
		struct fg_items_item *it = &page->item[i];
		it->fate = FG_ITEMS_KEPT;
		if (it->decision == FG_ITEMS_EXCLUDE) {
			it->fate = it->limited ? FG_ITEMS_LIMITED : FG_ITEMS_REMOVED;
		} else if (it->decision == FG_ITEMS_DEMOTE) {
			own_group(it, ng);
			next[i] = UINT32_MAX;
			if (head[it->group] == UINT32_MAX)
				head[it->group] = (uint32_t)i;
			else
				next[tail[it->group]] = (uint32_t)i;
			tail[it->group] = (uint32_t)i;
		}
	}
	/* Merge: at each position, the earliest due demoted item that fits,
	 * else the next allowed item.  A demoted item is due once every
	 * allowed item ranked before it has been placed: it only moves later. */
	ri = 0;
	for (;;) {
		uint32_t pick = UINT32_MAX;
		while (ri < page->n && page->item[ri].decision != FG_ITEMS_ALLOW)
			ri++;
		for (g = 0; g < ng; g++) {
			uint32_t h = head[g];
			if (h == UINT32_MAX || h > ri || (pick != UINT32_MAX && h > pick))
				continue;
			if (fits(&pl, (unsigned)g, page->norder))
				pick = h;
		}
		if (pick != UINT32_MAX) {
			g = page->item[pick].group;
			head[g] = next[pick];
			deliver(&pl, pick);
			continue;
		}
		if (ri < page->n) {
			deliver(&pl, (uint32_t)ri++);
			continue;
		}
		break;
	}
	/* What is left of the queues is surplus, in ranked order. */
	for (i = 0; i < page->n; i++) {
		struct fg_items_item *it = &page->item[i];
		/* Pending items leave their queue in ranked order, so an
		 * unplaced one is its queue's head when its turn comes. */
		if (it->decision != FG_ITEMS_DEMOTE || head[it->group] != i)
			continue;
		head[it->group] = next[i];
		page->unmet = 1;
		if (r->surplus_end) {
			it->fate = FG_ITEMS_SURPLUS_END;
			append(page, (uint32_t)i);
		} else {
			it->fate = FG_ITEMS_SURPLUS_DROPPED;
		}
	}
	if (limit && page->norder > limit) {
		for (i = limit; i < page->norder; i++) {
			struct fg_items_item *it = &page->item[page->order[i]];
			it->fate = FG_ITEMS_TRIMMED;
			if (it->counters)
				count_order(page, it, -1);
		}
		page->norder = (size_t)limit;
	}
	if (st) {
		/* What the next page's spacing counts from: the delivered page. */
		for (i = 0; i < page->norder; i++) {
			const struct fg_items_item *it = &page->item[page->order[i]];
			if (it->decision == FG_ITEMS_DEMOTE)
				st->last[it->group] = st->delivered + i + 1;
		}
		st->delivered += page->norder;
	}
}

static void mark_limited(struct fg_items_item *it)
{
	it->decision = FG_ITEMS_EXCLUDE;
	it->limited = 1;
}

/* 0 when no allowance can run out on this page: every counter's items,
 * delivered or not, fit in what is left of it. */
static int page_may_spend(const struct fg_items_page *page, const struct fg_items_rules *r, const uint32_t *left)
{
	unsigned k;

	for (k = 0; k < r->ncounters; k++)
		if (page->counted[k] > left[k])
			return 1;
	return 0;
}

int fg_items_limit(struct fg_items_page *page, const struct fg_items_rules *r, const uint32_t *left)
{
	uint32_t rest[FG_ITEMS_MAX_COUNTERS];
	unsigned k, spent = 0;
	size_t i;

	if (!r->ncounters || !page_may_spend(page, r, left))
		return 0;
	memcpy(rest, left, r->ncounters * sizeof(rest[0]));
	/* what the client would get, in its order, spends the allowances */
	for (i = 0; i < page->norder; i++) {
		struct fg_items_item *it = &page->item[page->order[i]];
		unsigned over = 0;
		for (k = 0; k < r->ncounters; k++)
			if ((it->counters >> k & 1) && rest[k] == 0)
				over |= 1u << k;
		if (over) {
			spent |= over;
			mark_limited(it);
			continue;
		}
		for (k = 0; k < r->ncounters; k++)
			rest[k] -= it->counters >> k & 1;
	}
	if (!spent)
		return 0;
	/* a spent counter's items the plan left out stay out when it is run
	 * again with the room the limited ones leave */
	for (i = 0; i < page->n; i++) {
		struct fg_items_item *it = &page->item[i];
		if ((it->counters & spent) && it->decision != FG_ITEMS_EXCLUDE && it->fate != FG_ITEMS_KEPT &&
		    it->fate != FG_ITEMS_SURPLUS_END)
			mark_limited(it);
	}
	return 1;
}

void fg_items_count_delivered(const struct fg_items_page *page, const struct fg_items_rules *r, uint32_t *counts)
{
	unsigned k;

	/* kept by fg_items_plan as it built the order */
	for (k = 0; k < r->ncounters; k++)
		counts[k] += page->delivered[k];
}

int fg_items_identity(const struct fg_items_page *page)
{
	size_t i;

	if (page->norder != page->n)
		return 0;
	for (i = 0; i < page->norder; i++)
		if (page->order[i] != i)
			return 0;
	return 1;
}

/* --- writing ----------------------------------------------------------- */

struct writer {
	const struct fg_items_spec *spec;
	const struct fg_items_page *page;
	const uint8_t *base;
	struct fg_bufq *out;
	size_t k;                   /* the next slot */
	const char **why;
};

static int changed(struct writer *w)
{
	if (w->why)
		*w->why = "the page changed between scan and write";
	return FG_EINVAL;
}

static int put(struct writer *w, const uint8_t *p, size_t n)
{
	return n ? fg_bufq_append(w->out, p, n) : 0;
}

/* The next slot: the plan's next item, or nothing once it is used up. */
static int put_slot(struct writer *w)
{
	const struct fg_items_page *pg = w->page;
	const struct fg_items_item *it;

	if (w->k >= pg->norder) {
		w->k++;
		return 0;
	}
	it = &pg->item[pg->order[w->k++]];
	return put(w, w->base + it->start, it->end - it->start);
}

/* The message [p, end) at level <d> of the items path, rewritten. */
static int write_level(struct writer *w, const uint8_t *p, const uint8_t *end, size_t d)
{
	const struct fg_items_spec *sp = w->spec;
	uint32_t want = sp->items_path[d];
	int last = d + 1 == sp->items_depth;
	const uint8_t *run = p;
	struct fld f;
	int rc;

	while (p < end) {
		f = step(p, end);
		if (!f.end || (f.number == want && f.wire_type != FG_PBWIRE_LEN))
			return changed(w);
		p = f.end;
		if (f.number != want)
			continue;
		if ((rc = put(w, run, (size_t)(f.tag - run))) < 0)
			return rc;
		run = f.end;
		if (last) {
			if ((rc = put_slot(w)) < 0)
				return rc;
		} else {
			/* An enclosing message: its tag, room for the longest
			 * length, the content, then the length moved into place. */
			uint8_t len[FG_PBWIRE_VARINT_MAX];
			size_t at, content, ll;
			if ((rc = put(w, f.tag, f.tag_len)) < 0)
				return rc;
			at = fg_bufq_len(w->out);
			if ((rc = put(w, (const uint8_t *)"\0\0\0\0\0", 5)) < 0 ||
			    (rc = write_level(w, f.value, f.end, d + 1)) < 0)
				return rc;
			content = fg_bufq_len(w->out) - at - 5;
			ll = fg_pbwire_write_varint(len, content);
			{
				uint8_t *q = (uint8_t *)fg_bufq_head(w->out) + at;
				memcpy(q, len, ll);
				memmove(q + ll, q + 5, content);
			}
			fg_bufq_truncate(w->out, at + ll + content);
		}
	}
	return put(w, run, (size_t)(end - run));
}

int fg_items_write(const uint8_t *in, size_t len, const struct fg_items_spec *spec,
                   const struct fg_items_page *page, struct fg_bufq *out, const char **why)
{
	struct writer w = { .spec = spec, .page = page, .base = in, .out = out, .why = why };
	size_t before = fg_bufq_len(out), i, at = 0;
	int rc = 0;

	if (!in)        /* an empty page, as fg_items_scan takes it */
		in = w.base = (const uint8_t *)"";
	if (spec->items_depth == 0)
		return page->norder ? put(&w, in, len) : 0;
	if (spec->items_depth == 1) {
		/* The items are the page's own fields: the bytes between them
		 * stay, each item's place gets the plan's next item. */
		uint8_t *dst, *room_end;
		size_t k = 0;
		if (len == 0)           /* no bytes, no items, no buffer to write to */
			return page->n ? changed(&w) : 0;
		/* The page loses items, never gains: it fits in <len>, written
		 * in place without a check per copy. */
		if (fg_bufq_reserve(out, len) < 0)
			return FG_ENOMEM;
		dst = fg_bufq_tail(out);
		room_end = dst + len;
		for (i = 0; i < page->n; i++) {
			const struct fg_items_item *it = &page->item[i];
			/* What the offsets can tell of another page: they must
			 * not run backwards or past its end. */
			if (it->start < at || it->end > len)
				return changed(&w);
			memcpy(dst, in + at, it->start - at);
			dst += it->start - at;
			if (k < page->norder) {
				const struct fg_items_item *put_it = &page->item[page->order[k]];
				size_t n = put_it->end - put_it->start;
				if (put_it->end > len || n > (size_t)(room_end - dst))
					return changed(&w);
				memcpy(dst, in + put_it->start, n);
				dst += n;
			}
			k++;
			at = it->end;
		}
		if (len - at > (size_t)(room_end - dst))
			return changed(&w);
		memcpy(dst, in + at, len - at);
		dst += len - at;
		fg_bufq_commit(out, (size_t)(dst - fg_bufq_tail(out)));
		return 0;
	} else {
		rc = write_level(&w, in, in + len, 0);
	}
	if (rc < 0)
		fg_bufq_truncate(out, before);
	return rc;
}

void fg_items_page_free(struct fg_items_page *page)
{
	free(page->item);
	free(page->order);
	memset(page, 0, sizeof(*page));
}
