/*
 * fuzz_items.c - libFuzzer target for the item editor (fg_items: scan,
 * plan, write).
 *
 * Input: the first HDR bytes choose the spec and the rules (below), the
 * rest is the page.  The page is scanned, planned and written NPAGES
 * times through one stream state.  Besides "no crash, no leak, no UB" (the
 * sanitizers), it checks the promises of fg_items.h and of the README's
 * "Prominence" that a fuzzer can see:
 *   - scan fails only with FG_EINVAL (and a reason), FG_ETOOBIG or
 *     FG_ENOMEM; on success items are increasing, disjoint byte ranges
 *     inside the page, each decided as allow, demote or exclude;
 *   - the plan delivers each item at most once, never an excluded one,
 *     every allowed one (until trimmed) in ranked order, at most <limit>;
 *     fates agree with the order; demoted items placed by the rules hold
 *     not_before and max_share in the page and spacing across the stream;
 *   - write succeeds on the page it scanned, keeps what <out> held before
 *     it, and its output scans again to exactly the planned items, byte
 *     for byte, in order, with the same decisions; an identity plan's
 *     output is the page itself (or shorter, when the page had lengths
 *     longer than needed), so the caller sending the original is right;
 *   - write on a page cut by one byte succeeds or fails with FG_EINVAL,
 *     leaving <out> as it was.
 *
 * Header bytes:
 *   0  items depth (bits 0-1: 0 item mode .. 3), label kind (bits 2-3: string,
 *      enum, message), message value is an enum (bit 4), confidence (bits 5-6:
 *      none, float, double), labels depth 2 (bit 7)
 *   1  ngroups (bits 0-1, 0..3), surplus_end (bit 2), unlabelled (bits 3-4),
 *      unlabelled group (bits 5-7)
 *   2  classes excluded; 3  classes demoted (those not excluded)
 *   4, 5  each class's group (2 bits a class)
 *   6, 7, 8  groups 0..2: not_before (bits 0-1), spacing - 1 (bits 2-3),
 *      max_share in sixteenths - 1 (bits 4-7)
 *   9  thresholds: 2 bits a class pair, in thirds
 *   10 limit (bits 0-3, 0: none), pages (bits 4-5, + 1)
 * Paths: items 2.3.1 cut to the depth (1, 2.1, 2.3.1); labels 4 or 4.5;
 * label messages: value 1, confidence 2.
 *
 * Build (see tests/fuzz/run.sh, which also runs it):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -I<dir of config.h> \
 *     -Idaemon tests/fuzz/fuzz_items.c daemon/fg_items.c daemon/fg_pbwire.c daemon/fg_bufq.c -lm
 * Run:   ./fuzz_items -max_total_time=120 new_corpus_dir tests/fuzz/corpus/items
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_bufq.h"
#include "fg_error.h"
#include "fg_items.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR 11
#define NCLASSES 8
#define PREFIX "\x00\x00\x00\x00\x2a"   /* stands for a gRPC message prefix */
#define PREFIX_LEN 5

/* sorted by (len, bytes) */
static const struct fg_items_label str_labels[] = {
	{ .str = "", .len = 0, .classes = 1u << 7 },
	{ .str = "a", .len = 1, .classes = 1u << 0 },
	{ .str = "b", .len = 1, .classes = 1u << 1 },
	{ .str = "t", .len = 1, .classes = 0 },
	{ .str = "ab", .len = 2, .classes = 1u << 0 | 1u << 2 },
	{ .str = "sad", .len = 3, .classes = 1u << 3 },
	{ .str = "porn", .len = 4, .classes = 1u << 4 },
	{ .str = "sport", .len = 5, .classes = 0 },
	{ .str = "stunt", .len = 5, .classes = 1u << 5 | 1u << 6 },
};

/* sorted by number */
static const struct fg_items_label num_labels[] = {
	{ .num = INT32_MIN, .classes = 1u << 7 },
	{ .num = -1, .classes = 1u << 4 },
	{ .num = 1, .classes = 0 },
	{ .num = 2, .classes = 1u << 0 },
	{ .num = 3, .classes = 1u << 1 | 1u << 3 },
	{ .num = 7, .classes = 1u << 5 },
	{ .num = 100, .classes = 1u << 6 },
};

static void check(int ok)
{
	if (!ok)
		abort();
}

static void make_spec(const uint8_t *h, struct fg_items_spec *sp)
{
	static const uint32_t items[] = { 2, 3, 1 };
	size_t d;

	memset(sp, 0, sizeof(*sp));
	sp->items_depth = h[0] & 3;
	for (d = 0; d < sp->items_depth; d++)
		sp->items_path[d] = items[3 - sp->items_depth + d];
	sp->labels_path[0] = 4;
	sp->labels_path[1] = 5;
	sp->labels_depth = h[0] & 0x80 ? 2 : 1;
	sp->label_kind = (uint8_t)((h[0] >> 2 & 3) % 3);
	sp->value_enum = h[0] >> 4 & 1;
	sp->conf_kind = (uint8_t)((h[0] >> 5 & 3) % 3);
	sp->value_number = 1;
	sp->conf_number = 2;
	if (sp->label_kind == FG_ITEMS_L_ENUM || (sp->label_kind == FG_ITEMS_L_MESSAGE && sp->value_enum)) {
		sp->labels = num_labels;
		sp->nlabels = sizeof(num_labels) / sizeof(num_labels[0]);
	} else {
		sp->labels = str_labels;
		sp->nlabels = sizeof(str_labels) / sizeof(str_labels[0]);
	}
}

static void make_rules(const uint8_t *h, struct fg_items_rules *r)
{
	size_t c, g;

	memset(r, 0, sizeof(*r));
	r->ngroups = h[1] & 3;                          /* 0: one group, as the plan reads it */
	r->surplus_end = h[1] >> 2 & 1;
	r->unlabelled = (uint8_t)((h[1] >> 3 & 3) % 3);
	r->unlabelled_group = h[1] >> 5;                /* may be beyond ngroups */
	r->exclude = h[2];
	r->demote = (uint64_t)(h[3] & ~h[2]);
	for (c = 0; c < NCLASSES; c++) {
		r->group[c] = (uint8_t)(h[4 + c / 4] >> (c % 4 * 2) & 3);
		r->threshold[c] = (float)(h[9] >> (c / 2 % 4 * 2) & 3) / 3.0f;
	}
	for (g = 0; g < 3; g++) {
		r->groups[g].not_before = h[6 + g] & 3;
		r->groups[g].spacing = 1 + (h[6 + g] >> 2 & 3);
		r->groups[g].max_share = (1 + (h[6 + g] >> 4)) / 16.0;
	}
}

/* What the stream has delivered, as the README counts it. */
struct model {
	uint64_t delivered;
	uint64_t last[FG_ITEMS_MAX_GROUPS];     /* 1 + stream position of the group's last item */
	uint64_t count[FG_ITEMS_MAX_GROUPS];    /* item mode: the group's items so far */
};

static void check_scan(const struct fg_items_page *pg, const struct fg_items_spec *sp, size_t len)
{
	size_t i;

	if (sp->items_depth == 0)
		check(pg->n == 1 && pg->item[0].start == 0 && pg->item[0].end == len);
	for (i = 0; i < pg->n; i++) {
		const struct fg_items_item *it = &pg->item[i];
		check(it->start < it->end || sp->items_depth == 0);
		check(it->end <= len && (i == 0 || it->start >= pg->item[i - 1].end));
		check(it->decision <= FG_ITEMS_EXCLUDE && it->fate == FG_ITEMS_KEPT);
	}
}

/* The prominence rules at stream position <at> (page position <p>) for a
 * demoted item of group <g> whose group had <cnt> items before it. */
static void check_rules(const struct fg_items_rules *r, const struct model *md, unsigned g, uint64_t p,
                        uint64_t at, uint64_t cnt)
{
	const struct fg_items_group *gr = &r->groups[g];

	check(p >= gr->not_before);
	check(!md->last[g] || at - (md->last[g] - 1) >= gr->spacing);
	check((double)(cnt + 1) <= gr->max_share * (double)(p + 1) + 1e-9);
}

static void check_plan(const struct fg_items_page *pg, const struct fg_items_rules *r, struct model *md,
                       uint64_t limit, int item_mode)
{
	size_t ng = r->ngroups ? (r->ngroups < FG_ITEMS_MAX_GROUPS ? r->ngroups : FG_ITEMS_MAX_GROUPS) : 1;
	uint64_t cnt[FG_ITEMS_MAX_GROUPS] = { 0 }, k;
	uint8_t *seen = calloc(pg->n ? pg->n : 1, 1);
	size_t i, next_allowed = 0;
	int ended = 0, surplus = 0;

	check(seen != NULL);
	if (item_mode)
		memcpy(cnt, md->count, sizeof(cnt));
	check(!limit || (item_mode ? md->delivered + pg->norder <= limit || pg->norder == 0 : pg->norder <= limit));
	for (k = 0; k < pg->norder; k++) {
		uint32_t o = pg->order[k];
		const struct fg_items_item *it;
		check(o < pg->n && !seen[o]);
		seen[o] = 1;
		it = &pg->item[o];
		check(it->decision != FG_ITEMS_EXCLUDE);
		if (it->decision == FG_ITEMS_ALLOW) {
			/* allowed items in ranked order, none skipped */
			while (next_allowed < pg->n && pg->item[next_allowed].decision != FG_ITEMS_ALLOW)
				next_allowed++;
			check(o == next_allowed++);
			check(it->fate == FG_ITEMS_KEPT && !ended);
			continue;
		}
		check(it->group < ng);
		if (it->fate == FG_ITEMS_SURPLUS_END) {
			check(r->surplus_end && !item_mode);
			ended = surplus = 1;
		} else {
			check(it->fate == FG_ITEMS_KEPT && !ended);
			check_rules(r, md, it->group, item_mode ? md->delivered : k, md->delivered + k,
			            cnt[it->group]);
		}
		cnt[it->group]++;
		md->last[it->group] = md->delivered + k + 1;
	}
	for (i = 0; i < pg->n; i++) {
		const struct fg_items_item *it = &pg->item[i];
		if (seen[i])
			continue;
		switch (it->fate) {
		case FG_ITEMS_REMOVED:
			check(it->decision == FG_ITEMS_EXCLUDE);
			break;
		case FG_ITEMS_SURPLUS_DROPPED:
			check(it->decision == FG_ITEMS_DEMOTE && (item_mode || !r->surplus_end));
			surplus = 1;
			break;
		case FG_ITEMS_TRIMMED:
			check(limit != 0);
			break;
		default:
			check(0);
		}
	}
	check(pg->unmet == 0 || pg->unmet == 1);
	check(!surplus || pg->unmet);
	if (item_mode)
		memcpy(md->count, cnt, sizeof(cnt));
	md->delivered += pg->norder;
	free(seen);
}

/* Write into a queue holding PREFIX after one consumed byte; returns the
 * result code and checks the prefix survived. */
static int write_page(const uint8_t *in, size_t len, const struct fg_items_spec *sp,
                      const struct fg_items_page *pg, struct fg_bufq *out)
{
	const char *why = NULL;
	int rc;

	fg_bufq_truncate(out, 0);
	check(fg_bufq_append(out, "#", 1) == 0 && fg_bufq_append(out, PREFIX, PREFIX_LEN) == 0);
	fg_bufq_consume(out, 1);
	rc = fg_items_write(in, len, sp, pg, out, &why);
	check(fg_bufq_len(out) >= PREFIX_LEN && memcmp(fg_bufq_head(out), PREFIX, PREFIX_LEN) == 0);
	if (rc < 0)
		check(fg_bufq_len(out) == PREFIX_LEN && (rc == FG_ENOMEM || (rc == FG_EINVAL && why != NULL)));
	return rc;
}

/* The written page scans again to exactly the planned items. */
static void check_written(const uint8_t *in, size_t len, const struct fg_items_spec *sp,
                          const struct fg_items_rules *r, const struct fg_items_page *pg, const struct fg_bufq *out)
{
	const uint8_t *o = fg_bufq_head(out) + PREFIX_LEN;
	size_t olen = fg_bufq_len(out) - PREFIX_LEN, k;
	struct fg_items_page again = { 0 };
	const char *why = NULL;
	int rc;

	if (fg_items_identity(pg))
		check(olen < len || (olen == len && (len == 0 || memcmp(o, in, len) == 0)));
	if (sp->items_depth == 0) {
		check(olen == (pg->norder ? len : 0));
		goto out_free;
	}
	rc = fg_items_scan(olen ? o : NULL, olen, sp, r, &again, &why);
	if (rc == FG_ENOMEM)
		goto out_free;
	check(rc == 0 && again.n == pg->norder);
	for (k = 0; k < again.n; k++) {
		const struct fg_items_item *a = &again.item[k], *b = &pg->item[pg->order[k]];
		check(a->end - a->start == b->end - b->start);
		check(memcmp(o + a->start, in + b->start, b->end - b->start) == 0);
		check(a->decision == b->decision);
	}
out_free:
	fg_items_page_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_items_spec sp;
	struct fg_items_rules r;
	struct fg_items_stream st = { 0 };
	struct fg_items_page pg = { 0 };
	struct fg_bufq out = { 0 };
	struct model md = { 0 };
	const uint8_t *in;
	const char *why;
	uint64_t limit;
	size_t len, page, npages;
	int rc, item_mode;

	if (size < HDR)
		return 0;
	make_spec(data, &sp);
	make_rules(data, &r);
	limit = data[10] & 15;
	npages = 1 + (data[10] >> 4 & 3);
	item_mode = sp.items_depth == 0;
	in = data + HDR;
	len = size - HDR;
	for (page = 0; page < npages; page++) {
		why = NULL;
		rc = fg_items_scan(len ? in : NULL, len, &sp, &r, &pg, &why);
		if (rc < 0) {
			check(rc == FG_ETOOBIG || rc == FG_ENOMEM || (rc == FG_EINVAL && why != NULL));
			break;
		}
		check_scan(&pg, &sp, len);
		fg_items_plan(&pg, &r, &st, limit, item_mode);
		check_plan(&pg, &r, &md, limit, item_mode);
		check(st.delivered == md.delivered);
		check(memcmp(st.last, md.last, sizeof(md.last)) == 0);
		rc = write_page(in, len, &sp, &pg, &out);
		if (rc == FG_ENOMEM)
			break;
		check(rc == 0);
		check_written(in, len, &sp, &r, &pg, &out);
		if (len > 0)
			(void)write_page(in, len - 1, &sp, &pg, &out);
	}
	fg_bufq_free(&out);
	fg_items_page_free(&pg);
	return 0;
}
