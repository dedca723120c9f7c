/*
 * fg_stage_filter.c - the filter stage: harmful items out of a band's
 * feed, demoted items moved to low prominence, per the method's "feed"
 * and the band's "filter" block (fg_policy_filter.c), done by the item
 * editor (fg_items.h) on each response message.  On the request it raises
 * the page size when the band over-fetches, and remembers what the client
 * asked for so each page is trimmed back to it.
 *
 * It runs after strip, so it sees the items as the band's response rules
 * left them (the policy compiler refuses rules that remove what it reads).
 * Counts go to the policy's counters and, when the feed names a
 * report_header, to the client: in the held headers of a unary call, in
 * the trailers of a streaming one.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_items.h"
#include "fg_pipeline.h"
#include "fg_policy-t.h"
#include "fg_stage.h"
#include "fg_stage_record.h"

/* Scratch arrays larger than this (items of one page) are let go after the
 * page rather than kept by the worker. */
#define FILTER_SCRATCH_KEEP 4096

struct filter_worker {
	struct fg_items_page page;          /* the page being filtered */
};

struct filter_call {
	struct fg_items_stream stream;      /* what spacing and item streams carry across messages */
	uint64_t limit;                     /* items the client asked for when over-fetched, else 0 */
	uint64_t removed, demoted, surplus, limited; /* for the report header */
	unsigned reported;
	unsigned pages;                     /* response messages filtered */
};

static void filter_worker_free(void *wstate)
{
	struct filter_worker *w = wstate;

	fg_items_page_free(&w->page);
}

static const struct fg_policy_filter *band_filter(const struct fg_stage_call *call)
{
	const struct fg_policy_method *m = call->m;

	if (!m->feed || !(m->filter[call->band].active || m->filter[call->band].limited))
		return NULL;
	return &m->filter[call->band];
}

/* Runs when the method has a feed and the band (if known yet) filters it. */
static enum fg_stage_begin filter_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	(void)h;
	if (!c->call->m->feed)
		return FG_STAGE_SKIP;
	if (c->call->band_known && !band_filter(c->call))
		return FG_STAGE_SKIP;
	return FG_STAGE_RUN;
}

static enum fg_stage_rc fail_nomem(struct fg_stage_ctx *c)
{
	fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
	return FG_STAGE_DONE;
}

/* Over-fetch: raise the request's page size by the band's factor. */
static enum fg_stage_rc overfetch(struct fg_stage_ctx *c, const struct fg_policy_filter *f, struct fg_stage_msg *msg)
{
	const struct fg_policy_feed *feed = c->call->m->feed;
	struct filter_call *fc = c->state;
	struct fg_pbwire_field fld;
	uint64_t asked = c->call->page_size_asked, raised;
	int rc;

	if (asked)
		goto scale;             /* replay: the recorded request holds a raised size */
	rc = fg_pbwire_find(msg->data, msg->len, feed->page_size_path, feed->page_size_depth, &fld, NULL);
	if (rc == FG_EINVAL || (rc == 0 && fld.wire_type != FG_PBWIRE_VARINT))
		return FG_STAGE_CONTINUE;       /* the ranker answers for a malformed request */
	if (rc == 0)
		asked = feed->page_size_signed && (int64_t)fld.varint < 0 ? 0 : fld.varint;
	if (asked == 0) {
		/* No size in the request: the default, written into the
		 * enclosing message only when the request has it (appending
		 * would otherwise make one, without its other fields). */
		if (feed->page_size_depth > 1 &&
		    fg_pbwire_find(msg->data, msg->len, feed->page_size_path, feed->page_size_depth - 1, &fld, NULL) < 0)
			return FG_STAGE_CONTINUE;
		asked = feed->default_page_size;
	}
scale:
	if (asked == 0 || asked >= f->overfetch_max)
		return FG_STAGE_CONTINUE;       /* no size to scale, or already at the cap */
	raised = (uint64_t)ceil((double)asked * f->overfetch);
	if (raised > f->overfetch_max)
		raised = f->overfetch_max;
	if (raised <= asked)
		return FG_STAGE_CONTINUE;
	fc->limit = asked;
	if (c->call->rec)
		fg_stage_record_page_size(c->call->rec, asked);
	if (fg_bufq_append(msg->out, msg->data, msg->len) < 0 ||
	    fg_pbwire_append_varint_at(msg->out, feed->page_size_path, feed->page_size_depth, raised) < 0)
		return fail_nomem(c);
	msg->changed = 1;
	return FG_STAGE_CONTINUE;
}

/* A page's counts, added to the shared counters once per class and
 * action rather than once per item (each add is an atomic operation). */
struct page_counts {
	uint32_t n[FG_POLICY_MAX_CLASSES + 1][FG_POLICY_FILTER_NACTIONS];
	uint16_t touched[(FG_POLICY_MAX_CLASSES + 1) * FG_POLICY_FILTER_NACTIONS];
	size_t ntouched;
};

static void count(struct page_counts *pc, const struct fg_stage_call *call, unsigned cls, unsigned action)
{
	if (cls == FG_ITEMS_UNLABELLED || cls >= call->pol->nclasses)
		cls = (unsigned)call->pol->nclasses;
	if (pc->n[cls][action]++ == 0)
		pc->touched[pc->ntouched++] = (uint16_t)(cls * FG_POLICY_FILTER_NACTIONS + action);
}

static void count_flush(const struct page_counts *pc, const struct fg_stage_call *call)
{
	const struct fg_policy *p = call->pol;
	size_t ncls = p->nclasses + 1, row, i;

	if (!p->counters.filtered || call->slot >= p->counters.nslots)
		return;
	row = ((call->slot * p->nfeeds + call->m->feed_index) * p->nbands + call->band) * ncls *
	      FG_POLICY_FILTER_NACTIONS;
	for (i = 0; i < pc->ntouched; i++) {
		unsigned cls = pc->touched[i] / FG_POLICY_FILTER_NACTIONS, a = pc->touched[i] % FG_POLICY_FILTER_NACTIONS;
		__atomic_fetch_add(&p->counters.filtered[row + cls * FG_POLICY_FILTER_NACTIONS + a], pc->n[cls][a],
		                   __ATOMIC_RELAXED);
	}
}

static void count_page(const struct fg_stage_call *call, unsigned unmet)
{
	const struct fg_policy *p = call->pol;
	size_t at;

	if (!p->counters.pages || call->slot >= p->counters.nslots)
		return;
	at = ((call->slot * p->nfeeds + call->m->feed_index) * p->nbands + call->band) * 2;
	__atomic_fetch_add(&p->counters.pages[at], 1, __ATOMIC_RELAXED);
	if (unmet)
		__atomic_fetch_add(&p->counters.pages[at + 1], 1, __ATOMIC_RELAXED);
}

/* Each item's fate into the counters and the call's totals. */
static void count_items(struct fg_stage_ctx *c, const struct fg_items_page *pg)
{
	struct filter_call *fc = c->state;
	struct page_counts pc;
	size_t i;

	pc.ntouched = 0;
	memset(pc.n, 0, (c->call->pol->nclasses + 1) * sizeof(pc.n[0]));
	for (i = 0; i < pg->n; i++) {
		const struct fg_items_item *it = &pg->item[i];
		switch (it->fate) {
		case FG_ITEMS_REMOVED:
			count(&pc, c->call, it->cls, FG_POLICY_FILTER_REMOVED);
			fc->removed++;
			break;
		case FG_ITEMS_LIMITED:
			count(&pc, c->call, it->cls, FG_POLICY_FILTER_LIMITED);
			fc->limited++;
			break;
		case FG_ITEMS_SURPLUS_DROPPED:
		case FG_ITEMS_SURPLUS_END:
			count(&pc, c->call, it->cls, FG_POLICY_FILTER_SURPLUS);
			fc->surplus++;
			break;
		case FG_ITEMS_KEPT:
			if (it->decision == FG_ITEMS_DEMOTE) {
				count(&pc, c->call, it->cls, FG_POLICY_FILTER_DEMOTED);
				fc->demoted++;
			}
			break;
		default:
			break;
		}
	}
	count_flush(&pc, c->call);
	if (band_filter(c->call)->active)
		count_page(c->call, pg->unmet);
}

static void report(struct fg_stage_ctx *c)
{
	const struct fg_policy_feed *feed = c->call->m->feed;
	struct filter_call *fc = c->state;
	char v[128];
	int n;

	if (!feed->report_header || fc->reported)
		return;
	fc->reported = 1;
	n = snprintf(v, sizeof(v), "removed=%llu,demoted=%llu,surplus=%llu", (unsigned long long)fc->removed,
	             (unsigned long long)fc->demoted, (unsigned long long)fc->surplus);
	if (band_filter(c->call)->limited && n > 0 && (size_t)n < sizeof(v))
		n += snprintf(v + n, sizeof(v) - (size_t)n, ",limited=%llu", (unsigned long long)fc->limited);
	if (n > 0 && (size_t)n < sizeof(v))
		(void)fg_pipeline_add_metadata(c->pl, feed->report_header, v, (size_t)n);
}

/* What the page delivers of each exposure counter: spent from the
 * allowance for the next pages, and added up for the account stage; and
 * the items an allowance removed, when fg_items_limit removed some
 * (<limited>: only it marks an item LIMITED). */
static void spend_exposure(struct fg_stage_call *call, const struct fg_items_rules *r, const struct fg_items_page *pg,
                           int limited)
{
	uint32_t got[FG_ITEMS_MAX_COUNTERS] = { 0 };
	size_t i;

	fg_items_count_delivered(pg, r, got);
	for (i = 0; i < r->ncounters; i++) {
		call->exposure_left[i] = call->exposure_left[i] > got[i] ? call->exposure_left[i] - got[i] : 0;
		call->exposure_delivered[i] += got[i];
	}
	for (i = 0; limited && i < pg->n; i++)
		call->exposure_limited += pg->item[i].fate == FG_ITEMS_LIMITED;
}

static enum fg_stage_rc filter_page(struct fg_stage_ctx *c, const struct fg_policy_filter *f, struct fg_stage_msg *msg)
{
	const struct fg_policy_feed *feed = c->call->m->feed;
	struct filter_worker *w = c->wstate;
	struct filter_call *fc = c->state;
	struct fg_items_page *pg = &w->page;
	int item_mode = feed->spec.items_depth == 0, rc;
	const char *why = NULL;
	char text[256];

	rc = fg_items_scan(msg->data, msg->len, &feed->spec, &f->rules, pg, &why);
	if (rc == 0) {
		struct fg_items_stream before = fc->stream;
		int limited = 0;
		fg_items_plan(pg, &f->rules, &fc->stream, fc->limit, item_mode);
		/* allowances spent by what the plan delivers; planned again
		 * without the items over them */
		if (f->limited && c->call->exposure_on && fg_items_limit(pg, &f->rules, c->call->exposure_left)) {
			limited = 1;
			fc->stream = before;
			fg_items_plan(pg, &f->rules, &fc->stream, fc->limit, item_mode);
		}
		if (f->limited)
			spend_exposure(c->call, &f->rules, pg, limited);
		if (item_mode)
			msg->drop = pg->norder == 0;
		else if (!fg_items_identity(pg)) {
			rc = fg_items_write(msg->data, msg->len, &feed->spec, pg, msg->out, &why);
			msg->changed = rc == 0;
		}
		if (rc == 0) {
			count_items(c, pg);
			fc->pages++;
		}
		if (rc == 0 && c->call->rec)
			fg_stage_record_page(c->call->rec, msg->index, pg);
	}
	if (pg->cap > FILTER_SCRATCH_KEEP)
		fg_items_page_free(pg);
	if (rc == FG_ENOMEM)
		return fail_nomem(c);
	if (rc == FG_ETOOBIG) {
		snprintf(text, sizeof(text), "response page of %s has more than %d items", c->call->m->path, FG_ITEMS_MAX);
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, text);
		return FG_STAGE_DONE;
	}
	if (rc < 0) {
		snprintf(text, sizeof(text), "response message is not a feed page of %s: %s", c->call->m->path,
		         why ? why : "malformed");
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, text);
		return FG_STAGE_DONE;
	}
	if (!fg_pipeline_streaming_response(c->pl))
		report(c);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc filter_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	const struct fg_policy_filter *f = band_filter(c->call);

	if (!f)
		return FG_STAGE_CONTINUE;
	if (dir == FG_STAGE_REQUEST && msg->index == 0 && c->call->page_size_asked) {
		/* replay of an over-fetched call: pages trimmed to what the
		 * client asked for, over-fetching again or not */
		((struct filter_call *)c->state)->limit = c->call->page_size_asked;
	}
	if (dir == FG_STAGE_REQUEST)
		return msg->index == 0 && f->overfetch > 1 ? overfetch(c, f, msg) : FG_STAGE_CONTINUE;
	return filter_page(c, f, msg);
}

/* The report header is feedguard's word: one the ranker sends itself
 * (the same name, by design or by accident) never reaches the client of
 * a call the stage ran on, whatever its band turned out to be (a band
 * read from the request is known only after begin).  A call passed
 * through untouched keeps the ranker's metadata whole. */
static void drop_forged(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	const struct fg_policy_feed *feed = c->call->m->feed;

	if (h && feed->report_header)
		fg_hdrs_remove(h, feed->report_header);
}

static enum fg_stage_rc filter_response_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	drop_forged(c, h);
	return FG_STAGE_CONTINUE;
}

/* A streaming call's counts go in its trailers. */
static enum fg_stage_rc filter_response_end(struct fg_stage_ctx *c, struct fg_hdrs *trailers)
{
	drop_forged(c, trailers);
	if (band_filter(c->call))
		report(c);
	return FG_STAGE_CONTINUE;
}

/* A stream feedguard ends itself (a screen-time rule on an open stream)
 * tells what was filtered in that answer's trailers, as at its own end.
 * A unary call's counts went out with its message; a call answered before
 * any page was filtered has none to tell. */
static void filter_answer(struct fg_stage_ctx *c)
{
	const struct filter_call *fc = c->state;

	if (fc->pages && band_filter(c->call) && fg_pipeline_streaming_response(c->pl))
		report(c);
}

const struct fg_stage fg_stage_filter = {
	.name = "filter",
	.call_size = sizeof(struct filter_call),
	.worker_size = sizeof(struct filter_worker),
	.worker_free = filter_worker_free,
	.begin = filter_begin,
	.on_message = filter_message,
	.on_response_headers = filter_response_headers,
	.on_response_end = filter_response_end,
	.on_answer = filter_answer,
};
