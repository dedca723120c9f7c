/*
 * fg_items.h - the item editor: finds the ranked items of a feed page in a
 * protobuf message, classifies each by its labels, decides where each goes
 * (removed, kept in place, demoted to a later position) and writes the
 * page again with the items moved or dropped as whole byte ranges.
 *
 * Three steps, each a pure function of its arguments (no globals, no
 * libevent, no nghttp2), built on the fg_pbwire primitives:
 *   fg_items_scan   the page's items, their byte ranges and each item's
 *                   classes (labels mapped through the spec's table, kept
 *                   when their confidence reaches the band's threshold),
 *                   then each item's decision under the band's rules;
 *   fg_items_plan   the order of the page the client gets: excluded items
 *                   out, demoted items moved later to the first position
 *                   where their group's prominence rules hold, everything
 *                   else in its relative order; surplus and trimming;
 *   fg_items_write  the message with the items in that order: each item
 *                   field's occurrence becomes the next item of the plan
 *                   (so the page's other fields stay where they were),
 *                   enclosing lengths rewritten, nothing else touched.
 * A page whose plan is the identity needs no write: the original bytes go.
 *
 * Input is hostile: every length is checked (fg_pbwire), nesting is
 * bounded, and a page holds at most FG_ITEMS_MAX items (more fails with
 * FG_ETOOBIG), which bounds the scratch memory: FG_ITEMS_MAX times about
 * 32 bytes per worker.
 */
#ifndef FG_ITEMS_H
#define FG_ITEMS_H

#include <stddef.h>
#include <stdint.h>

#include "fg_bufq.h"
#include "fg_pbwire.h"

/* Classes are bits of a uint64_t. */
#define FG_ITEMS_MAX_CLASSES 64
/* Demote groups of one band. */
#define FG_ITEMS_MAX_GROUPS 8
/* Exposure counters of one band (an item's counter bits). */
#define FG_ITEMS_MAX_COUNTERS 16
/* Items of one page. */
#define FG_ITEMS_MAX 65536
/* Field numbers in the items and labels paths. */
#define FG_ITEMS_MAX_PATH 16

/* How an item's labels are written. */
enum fg_items_label_kind {
	FG_ITEMS_L_STRING = 0,      /* repeated string: each value is a label */
	FG_ITEMS_L_ENUM,            /* repeated enum (packed or not): each number is a label */
	FG_ITEMS_L_MESSAGE,         /* repeated message: a label field and a confidence */
};

/* What a label's confidence field is. */
enum fg_items_conf_kind {
	FG_ITEMS_C_NONE = 0,        /* no confidence: every label is certain (1.0) */
	FG_ITEMS_C_FLOAT,           /* I32 */
	FG_ITEMS_C_DOUBLE,          /* I64 */
};

/* One label value of the platform and the classes it stands for (0: a
 * topic, which still makes the item labelled). */
struct fg_items_label {
	const char *str;            /* string labels: the bytes (not NUL-terminated) */
	uint32_t len;
	int64_t num;                /* enum labels: the number */
	uint64_t classes;
};

/* Where a page's items and an item's labels are: compiled by the policy. */
struct fg_items_spec {
	uint32_t items_path[FG_ITEMS_MAX_PATH]; /* field numbers from the message root to the
	                                           repeated item field; all but the last are
	                                           message fields */
	size_t items_depth;                     /* 0: the message itself is the one item */
	uint32_t labels_path[FG_ITEMS_MAX_PATH]; /* from the item to the repeated label field */
	size_t labels_depth;                    /* 1 or more */
	uint8_t label_kind;                     /* enum fg_items_label_kind */
	uint8_t value_enum;                     /* L_MESSAGE: the label field is an enum (else string) */
	uint8_t conf_kind;                      /* L_MESSAGE: enum fg_items_conf_kind */
	uint32_t value_number;                  /* L_MESSAGE: the label field's number */
	uint32_t conf_number;                   /* L_MESSAGE: the confidence field's number */
	const struct fg_items_label *labels;    /* sorted: strings by (len, bytes), enums by num */
	size_t nlabels;
	const uint16_t *slots;                  /* string labels, optional: an open-addressing
	                                           table of 1 + label index (0: empty) by
	                                           fg_items_hash(), fg_items_slots() builds it;
	                                           NULL: binary search */
	uint32_t slot_mask;                     /* table size - 1 (a power of two) */
};

/* fg_items_hash - where a string label starts its probe in a table. */
uint32_t fg_items_hash(const uint8_t *p, size_t n);

/*
 * fg_items_slots - the slot table of <spec>'s string labels into <slots>
 * (room for fg_items_slots_size(<spec>->nlabels) entries), setting
 * <spec>->slots and slot_mask.  For tables of up to 32767 labels.
 */
size_t fg_items_slots_size(size_t nlabels);
void fg_items_slots(struct fg_items_spec *spec, uint16_t *slots);

/* What happens to an item. */
enum fg_items_decision {
	FG_ITEMS_ALLOW = 0,
	FG_ITEMS_DEMOTE,
	FG_ITEMS_EXCLUDE,
};

/* One demote group's prominence rules. */
struct fg_items_group {
	uint32_t not_before;        /* never in the first K positions of a page */
	uint32_t spacing;           /* two items of the group at least N positions apart (1: any) */
	double max_share;           /* (0, 1]: at most this share of every prefix ending on one */
};

/* One band's rules, compiled by the policy. */
struct fg_items_rules {
	uint64_t exclude;                       /* classes removed */
	uint64_t demote;                        /* classes demoted (not excluded) */
	uint8_t group[FG_ITEMS_MAX_CLASSES];    /* a demoted class's group */
	float threshold[FG_ITEMS_MAX_CLASSES];  /* lowest confidence that counts */
	uint8_t unlabelled;                     /* enum fg_items_decision for items with no label */
	uint8_t unlabelled_group;
	uint8_t surplus_end;                    /* 1: surplus demoted items go to the page's end */
	size_t ngroups;
	struct fg_items_group groups[FG_ITEMS_MAX_GROUPS];
	uint8_t ncounters;                      /* exposure counters: items of counter[k]'s classes */
	uint64_t counter[FG_ITEMS_MAX_COUNTERS]; /* carry bit k (fg_items_limit) */
};

/* The class index under which an item without labels is counted. */
#define FG_ITEMS_UNLABELLED 0xff
/* <cls> of a labelled item none of whose labels reached a class (labels
 * that map to no class, or below their class's threshold). */
#define FG_ITEMS_NO_CLASS 0xfe

/* One item of a scanned page. */
struct fg_items_item {
	uint32_t start, end;        /* the item field's occurrence (tag to end) in the message */
	uint8_t decision;           /* enum fg_items_decision */
	uint8_t group;              /* DEMOTE: its group */
	uint8_t cls;                /* the class that decided (lowest index); FG_ITEMS_UNLABELLED
	                               for an item without labels, whatever its decision; for
	                               a labelled item that is allowed, its first class that
	                               an exposure counter counts, else its first class, else
	                               FG_ITEMS_NO_CLASS: what it is, for the record, even
	                               when no rule acts on it */
	uint8_t fate;               /* set by fg_items_plan: enum fg_items_fate */
	uint8_t limited;            /* excluded by fg_items_limit (an exposure allowance) */
	uint16_t counters;          /* bit k: the item counts toward exposure counter k */
};

/* Where an item ended up. */
enum fg_items_fate {
	FG_ITEMS_KEPT = 0,          /* delivered (a demoted item placed by the rules too) */
	FG_ITEMS_REMOVED,           /* excluded */
	FG_ITEMS_SURPLUS_DROPPED,   /* demoted, no room under the rules, dropped */
	FG_ITEMS_SURPLUS_END,       /* demoted, no room under the rules, placed at the end */
	FG_ITEMS_TRIMMED,           /* cut by the page limit (over-fetch) */
	FG_ITEMS_LIMITED,           /* over an exposure counter's allowance (fg_items_limit) */
};

/* A scanned page and its plan.  Zero it before first use; reused across
 * pages (the arrays keep their memory); fg_items_page_free at the end. */
struct fg_items_page {
	struct fg_items_item *item; /* in wire order */
	size_t n, cap;
	uint32_t *order;            /* the plan: indexes into <item>, delivered in this order */
	size_t norder;
	unsigned unmet;             /* the plan had surplus */
	/* Set by fg_items_scan: what the page's items carry of the exposure
	 * counters, so that a page far from every allowance (the usual
	 * case) is not walked item by item to learn it. */
	uint32_t counted[FG_ITEMS_MAX_COUNTERS]; /* items of counter k, delivered or not */
	uint32_t delivered[FG_ITEMS_MAX_COUNTERS]; /* set by fg_items_plan: those in <order> */
};

/* What a stream remembers between its pages (zeroed at its start). */
struct fg_items_stream {
	uint64_t delivered;                     /* items delivered by earlier pages */
	uint64_t last[FG_ITEMS_MAX_GROUPS];     /* 1 + stream position of the group's last item */
	uint64_t count[FG_ITEMS_MAX_GROUPS];    /* item mode: the group's items so far */
};

/*
 * fg_items_scan - find the items of the page <in>[0 .. <len>) as <spec>
 * says, classify each (a label counts when its confidence is at least
 * <r>->threshold of its class) and decide it under <r>, into <page>
 * (emptied first).  Items are found through every occurrence of every
 * enclosing message field, in wire order.  Returns 0, FG_EINVAL with a
 * static <*why> when the message is not valid wire format where the
 * items or labels are (or a field there has the wrong wire type),
 * FG_ETOOBIG (more than FG_ITEMS_MAX items), or FG_ENOMEM.
 */
int fg_items_scan(const uint8_t *in, size_t len, const struct fg_items_spec *spec,
                  const struct fg_items_rules *r, struct fg_items_page *page, const char **why);

/*
 * fg_items_locate - fg_items_scan() that only finds the items (their byte
 * ranges, through <spec>'s items_path alone; labels are not read, every
 * item is ALLOW with FG_ITEMS_NO_CLASS): for putting a recorded page's
 * items back in a recorded order with fg_items_write().  Returns as
 * fg_items_scan.
 */
int fg_items_locate(const uint8_t *in, size_t len, const struct fg_items_spec *spec, struct fg_items_page *page,
                    const char **why);

/*
 * fg_items_plan - the order of <page> under <r>: excluded items removed;
 * allowed items in their order; each demoted item at the first position,
 * no earlier than its own, where its group's rules hold (positions count
 * from 0 in this page; spacing also counts from the group's last item in
 * <st>, so it holds across the pages of a stream); demoted items left
 * without a place are surplus (dropped, or after everything in their
 * order when <r>->surplus_end); then everything past <limit> items
 * (0: none) is trimmed.  <st> (may be NULL: a single page) is updated.
 * Sets each item's <fate>, <page>->order and <page>->unmet.
 *
 * With <item_mode> the page is one item of a stream whose messages are
 * the items: positions, shares and <limit> count over the stream, and a
 * demoted item that does not fit where it is is surplus, dropped (nothing
 * is held back in a stream).
 */
void fg_items_plan(struct fg_items_page *page, const struct fg_items_rules *r, struct fg_items_stream *st,
                   uint64_t limit, int item_mode);

/*
 * fg_items_limit - exposure allowances, on a planned page: in the plan's
 * order (what the client gets, first to last), each delivered item that
 * counts toward some counter of <r> whose allowance in <left>
 * (<r>->ncounters entries, borrowed, not changed) the delivered items
 * before it have spent is excluded and marked <limited>; once a counter
 * is spent, the page's items of it that the plan did not deliver are
 * marked too, so planning again cannot bring one in.  Only what the client
 * would get spends an allowance: an item the plan trims or drops uses none.
 * Returns 1 when it marked any item (plan the page again, from the stream
 * state the first plan started from: it delivers at most each allowance),
 * else 0 (the plan stands).  <page> must come from fg_items_scan under
 * <r>: a page whose items of each counter are no more than its allowance
 * is answered from the scan's totals, without a walk.
 */
int fg_items_limit(struct fg_items_page *page, const struct fg_items_rules *r, const uint32_t *left);

/* fg_items_count_delivered - add to <counts>[k] (<r>->ncounters entries)
 * the items of counter k that <page>'s plan delivers (<page> from
 * fg_items_scan under <r>, then fg_items_plan, which counts them as it
 * builds the order). */
void fg_items_count_delivered(const struct fg_items_page *page, const struct fg_items_rules *r, uint32_t *counts);

/* fg_items_identity - 1 when <page>'s plan delivers every item in its
 * original order: the message goes out as it came. */
int fg_items_identity(const struct fg_items_page *page);

/*
 * fg_items_write - append the page <in>[0 .. <len>), scanned into <page>
 * with <spec> and planned, to <out>, with its items in the plan's order:
 * the k-th occurrence of the item field becomes the plan's k-th item, the
 * rest of the message is copied as it is, and the lengths of enclosing
 * messages are rewritten.  Returns 0, FG_EINVAL (<in> is not what was
 * scanned) or FG_ENOMEM; on failure <out> is as before.
 */
int fg_items_write(const uint8_t *in, size_t len, const struct fg_items_spec *spec,
                   const struct fg_items_page *page, struct fg_bufq *out, const char **why);

/* fg_items_page_free - release <page>'s arrays (it may be reused, zeroed). */
void fg_items_page_free(struct fg_items_page *page);

#endif /* FG_ITEMS_H */
