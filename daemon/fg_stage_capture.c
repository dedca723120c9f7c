/*
 * fg_stage_capture.c - the capture stage: the record of a sampled call
 * (proto/feedguard/capture/v1/capture.proto, a Record holding a Call),
 * built in wire format as the call goes, and queued to the process's
 * capture writer (fg_capture.h) when it ends.
 *
 * It runs last, so it sees the request as forwarded and the response as
 * delivered; the response as the ranker sent it, less what the band's
 * response rules strip (a capture never keeps a profiling field feedguard
 * removed), is taken between strip and filter by its tap stage
 * (fg_stage_capture_tap), as strip left it.  Requests lose the method's
 * capture_redact fields, and the user id field carries the capture
 * pseudonym.  The other stages report their decisions through
 * fg_stage_record.h while <call->rec> is set.
 *
 * Whether a call is sampled is known once identify has read the user id
 * (request headers, or the first request message): until then the record
 * grows as if it were, and an unsampled call drops it.  Every byte counts
 * against capture.queue from the moment it is appended.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_capture.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_grpc.h"
#include "fg_grpcframe.h"
#include "fg_items.h"
#include "fg_limits.h"
#include "fg_pbwire.h"
#include "fg_pipeline.h"
#include "fg_policy-t.h"
#include "fg_policy_eval.h"
#include "fg_stage.h"
#include "fg_stage_record.h"
#include "fg_tz.h"

/* Fields of feedguard.capture.v1 (capture.proto). */
enum { REC_CALL = 2 };
enum { C_START = 1, C_DURATION, C_METHOD, C_BAND, C_USER_KEY, C_TIME_ZONE, C_REQ_META, C_RESP_META, C_REQUEST,
       C_UPSTREAM, C_DELIVERED, C_STATUS, C_STATUS_MESSAGE, C_ANSWERED, C_DECISIONS, C_OMITTED, C_DELIVERED_FROM,
       C_ITEMS_PATH, C_METADATA_OMITTED, C_POLICY_ID };
enum { DF_DELIVERED = 1, DF_UPSTREAM, DF_REORDERED };
enum { MD_NAME = 1, MD_VALUE };
enum { D_STRIPPED = 1, D_ITEMS, D_SCREEN, D_PAGE_SIZE_ASKED, D_ITEMS_OMITTED };
enum { S_FIELD = 1, S_COUNT };
enum { I_MESSAGE = 1, I_POSITION, I_DELIVERED, I_CLASS, I_FATE, I_DEMOTED };
enum { ST_ACTION = 1, ST_NOTICES, ST_FAILURE, ST_FAIL_MODE, ST_USED, ST_LEFT, ST_SESSION, ST_EXPOSURE, ST_COUNTED };
enum { E_COUNTER = 1, E_ALLOWANCE, E_DELIVERED, E_LIMITED };

/* Bytes of a record kept for what capture_end writes: the call's facts
 * (method, band, key, zone, policy id, status text: under 1KiB), the stripped counts
 * and screen-time decisions (a few hundred bytes), the wrapper; and
 * OURS_ROOM of it for feedguard's own response metadata (the screen-time
 * figures, the notices, the filter's report: under 300 bytes), which a
 * large page must not push out.  A record that still outgrows
 * capture.max_record_size is dropped and counted. */
#define END_ROOM 2560
#define OURS_ROOM 512

static const uint8_t wrap_room[8];

/* Room kept in front of the Call for the Record's tag and length. */
#define WRAP_ROOM (1 + 5)
/* A sampled call's wire-encoded items beyond this are left out (each is
 * about 20 bytes: a page of FG_ITEMS_MAX items fits). */
#define ITEMS_MAX_BYTES (4u << 20)
/* A page's delivered positions are worked out on the stack up to this many
 * items (a ranked page is a few hundred at most); a longer one allocates. */
#define DPOS_STACK 512
/* The worker's page buffer is let go after a page larger than this. */
#define PAGE_SCRATCH_KEEP (64u * 1024)
/* Record buffers a worker keeps itself, from records it dropped (a call
 * not sampled, a record over budget), each at most
 * FG_CAPTURE_SPARE_MAX_CAP: 256 KiB a worker. */
#define KEEP_BUFS 8
/* An Item's fields but its class name: four tags with varints, two more. */
#define ITEM_FIXED_MAX (6 * (1 + FG_PBWIRE_VARINT_MAX))

static const char *const failure_names[FG_POLICY_NSREASONS] = { "timeout", "down", "busy", "error", "no_user" };
static const char *const fail_mode_names[] = { "open", "empty", "deny" };

struct capture_worker {
	struct fg_capture *cap;             /* NULL: the process has no writer */
	struct fg_capture_ring *ring;       /* NULL until the worker captures a call */
	unsigned slot;
	struct fg_bufq scratch;             /* a message being redacted */
	struct fg_bufq page;                /* a page's Decisions entries, being encoded: counted
	                                       and moved into the record whole, or left out */
	struct fg_bufq dec;                 /* capture_end: the Decisions but their items */
	struct fg_bufq sub;                 /* capture_end: a Decisions entry being encoded */
	struct fg_bufq sub2;                /* capture_end: an entry within that entry */
	struct fg_bufq keep[KEEP_BUFS];     /* empty record buffers, memory kept */
	unsigned nkeep;
	size_t record_hint;                 /* the size of this worker's last record submitted */
	uint64_t rng;                       /* xorshift state: sampling of calls with no user id */
};

struct fg_stage_record {
	struct capture_worker *w;
	struct fg_stage_call *call;
	unsigned recording;                 /* building a record (sampled, or not decided yet) */
	unsigned decided;                   /* the sampling decision is taken */
	int64_t start_ms;                   /* wall clock at the request headers */
	struct fg_bufq buf;                 /* the Call's fields so far */
	struct fg_bufq items;               /* Decisions.items, encoded */
	uint64_t reserved;                  /* bytes counted against capture.queue */
	uint64_t prepaid;                   /* of <reserved>, what <buf> was given room for
	                                       at the start and the record has not used yet */
	uint32_t omitted;                   /* messages left out */
	uint32_t md_omitted;                /* capture.metadata entries left out */
	uint32_t ours_bytes;                /* feedguard's own metadata in the record, of OURS_ROOM */
	uint32_t n_upstream;                /* upstream_response entries in the record */
	uint32_t n_delivered;               /* delivered_response entries in the record */
	unsigned upstream_gap;              /* an upstream message was left out: entries no
	                                       longer line up with message indexes */
	uint32_t planned;                   /* 1 + the index of the last page the filter reported
	                                       with its items in the record (0: none) */
	unsigned planned_reordered;         /* that page's items were moved or dropped */
	unsigned path_written;              /* items_path is in the record */
	uint32_t *tally;                    /* [pol->nstats]: strip's counts; NULL until asked */
	unsigned screen_set;
	struct fg_stage_screen_facts screen;
	int64_t counted_ms;                 /* the account's call length; -1: it wrote none */
	char zone[FG_TZ_NAME_MAX + 1];
	uint32_t allowance[FG_ITEMS_MAX_COUNTERS];
	uint32_t limited[FG_ITEMS_MAX_COUNTERS];
	uint64_t page_size_asked;           /* the filter over-fetched: what the client asked for */
	unsigned items_omitted;             /* a page's items did not fit: later pages' are left out
	                                       too */
	uint32_t pages_no_items;            /* pages whose items are not in the record */
	unsigned meta_taken;                /* the stages' response metadata is in the record */
	char upstream_message[FG_STAGE_ANSWER_MAX]; /* the upstream's grpc-message, as sent */
};

/* --- budget ---------------------------------------------------------------- */

static uint64_t queue_limit(const struct fg_stage_record *r)
{
	return r->call->cfg->capture.queue;
}

/* Count <n> more bytes of the record against capture.queue, in the room
 * paid for at its start first: 0, or FG_ETOOBIG (the rest did not fit). */
static int count_bytes(struct fg_stage_record *r, uint64_t n)
{
	uint64_t from_prepaid = r->prepaid < n ? r->prepaid : n;

	r->prepaid -= from_prepaid;
	n -= from_prepaid;
	if (n && fg_capture_reserve(r->w->cap, n, queue_limit(r)) < 0)
		return FG_ETOOBIG;
	r->reserved += n;
	return 0;
}

/* Room for <n> more bytes in the record, leaving <keep> bytes of
 * capture.max_record_size for the end: 0, or a reason to leave a message
 * out (counted by the caller). */
static int grow_keeping(struct fg_stage_record *r, size_t n, size_t keep, enum fg_capture_omit *why)
{
	uint64_t have = fg_bufq_len(&r->buf) + fg_bufq_len(&r->items);

	/* the facts, decisions and wrapper written at the end fit in the room
	 * kept for them (capture.max_record_size is at least 4KiB) */
	if (have + n + keep > r->call->cfg->capture.max_record_size) {
		*why = FG_CAPTURE_OMIT_RECORD_SIZE;
		return FG_ETOOBIG;
	}
	if (count_bytes(r, n) < 0) {
		*why = FG_CAPTURE_OMIT_QUEUE;
		return FG_ETOOBIG;
	}
	return 0;
}

static int grow(struct fg_stage_record *r, size_t n, enum fg_capture_omit *why)
{
	return grow_keeping(r, n, END_ROOM, why);
}

static void omit(struct fg_stage_record *r, enum fg_capture_omit why)
{
	r->omitted++;
	fg_capture_omitted(r->w->cap, why, 1);
}

/*
 * Whether <n> bytes at <p> hold a copy of the call's raw user id, which a
 * record never holds whatever the config says: an id read from a header
 * that the request also carries in a field the redaction keeps, a ranker
 * that echoes it.  What holds one is left out (messages, metadata values,
 * the status text).  Ids shorter than RAW_ID_MIN are not looked for: they
 * would match unrelated bytes (a year, a count) and leave out pages for
 * nothing.
 */
#define RAW_ID_MIN 6
static int holds_raw_id(const struct fg_stage_record *r, const void *p, size_t n)
{
	const struct fg_stage_call *call = r->call;

	return call->capture_raw_len >= RAW_ID_MIN &&
	       memmem(p, n, call->capture_raw_user, call->capture_raw_len) != NULL;
}

static int add_bytes(struct fg_stage_record *r, uint32_t field, const uint8_t *p, size_t n);

/* A message's bytes as field <field>, unless they hold the raw user id:
 * 0, or -1 (left out, counted). */
static int add_message(struct fg_stage_record *r, uint32_t field, const uint8_t *p, size_t n)
{
	if (holds_raw_id(r, p, n)) {
		omit(r, FG_CAPTURE_OMIT_USER_ID);
		return -1;
	}
	return add_bytes(r, field, p, n);
}

/* Bytes field <field> of the Call, within the budget; a message that
 * does not fit is left out whole, never cut: 0, or -1 (left out, counted). */
static int add_bytes(struct fg_stage_record *r, uint32_t field, const uint8_t *p, size_t n)
{
	enum fg_capture_omit why;

	if (grow(r, n + 2 * FG_PBWIRE_VARINT_MAX, &why) < 0) {
		omit(r, why);
		return -1;
	}
	if (fg_pbwire_append_len(&r->buf, field, p, n) < 0) {
		omit(r, FG_CAPTURE_OMIT_QUEUE);
		return -1;
	}
	return 0;
}

/* Everything the record holds goes; its bytes are given back.  Its
 * buffer, when small, stays with the worker for its next record: at the
 * usual sample most calls build a record until identify says the user is
 * not sampled, and they then cost no malloc and no free. */
static void drop_record(struct fg_stage_record *r)
{
	struct capture_worker *w = r->w;

	if (r->buf.data && r->buf.cap <= FG_CAPTURE_SPARE_MAX_CAP && w->nkeep < KEEP_BUFS) {
		r->buf.off = r->buf.len = 0;
		w->keep[w->nkeep++] = r->buf;
		fg_bufq_init(&r->buf);
	}
	fg_bufq_free(&r->buf);
	fg_bufq_free(&r->items);
	free(r->tally);
	r->tally = NULL;
	if (r->reserved)
		fg_capture_release(r->w->cap, r->reserved);
	r->reserved = 0;
	r->prepaid = 0;
	r->recording = 0;
	r->call->rec = NULL;
}

/* --- stage hooks ------------------------------------------------------------ */

static int capture_worker_init(void *wstate, const struct fg_stage_worker_env *env)
{
	struct capture_worker *w = wstate;

	w->cap = env->capture;
	w->slot = (unsigned)env->slot;          /* the ring is made at the first call captured */
	w->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)env->slot << 32) ^ (uint64_t)(uintptr_t)w;
	return 0;
}

static void capture_worker_free(void *wstate)
{
	struct capture_worker *w = wstate;

	fg_bufq_free(&w->scratch);
	fg_bufq_free(&w->page);
	fg_bufq_free(&w->dec);
	fg_bufq_free(&w->sub);
	fg_bufq_free(&w->sub2);
	while (w->nkeep)
		fg_bufq_free(&w->keep[--w->nkeep]);
}

/*
 * A record's buffer is one this worker kept or the writer gave back, when
 * there is one: no malloc here, and no free on the writer's thread.  Its
 * whole size counts against capture.queue at once, like the bytes it
 * will hold; without the budget's room it is not used.  1 when <r> has it.
 */
static int record_reuse(struct capture_worker *w, struct fg_stage_record *r)
{
	struct fg_bufq b = { 0 };

	if (w->nkeep)
		b = w->keep[--w->nkeep];
	else if (!fg_capture_spare(w->ring, &b))
		return 0;
	if (b.cap <= WRAP_ROOM || fg_capture_reserve(w->cap, b.cap, queue_limit(r)) < 0) {
		fg_bufq_free(&b);
		return 0;
	}
	r->buf = b;
	r->reserved += b.cap;
	r->prepaid = b.cap - WRAP_ROOM;
	return 1;
}

/*
 * Otherwise a record's buffer starts with the room the worker's last record took,
 * counted against capture.queue at once like the bytes it will hold (the
 * record then grows without a realloc, where doubling from nothing cost
 * six reallocs and twice the record in copies); room the record does not
 * use stays counted until it is written.  Without the budget's room it
 * starts empty and grows as before.
 */
static void record_prepay(struct capture_worker *w, struct fg_stage_record *r)
{
	size_t hint = w->record_hint;

	if (hint > r->call->cfg->capture.max_record_size)
		hint = r->call->cfg->capture.max_record_size;
	if (hint <= WRAP_ROOM || fg_capture_reserve(w->cap, hint, queue_limit(r)) < 0)
		return;
	if (fg_bufq_reserve(&r->buf, hint - WRAP_ROOM) < 0) {
		fg_capture_release(w->cap, hint);
		return;
	}
	r->reserved += hint;
	r->prepaid = hint - WRAP_ROOM;
}

static enum fg_stage_begin capture_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	struct capture_worker *w = c->wstate;
	struct fg_stage_record *r = c->state;
	struct fg_stage_call *call = c->call;

	if (!w->cap || call->cfg->capture.sample <= 0 || !fg_config_capture_method(call->cfg, call->m->path))
		return FG_STAGE_SKIP;
	if (!w->ring && !(w->ring = fg_capture_attach(w->cap, w->slot)))
		return FG_STAGE_SKIP;
	r->w = w;
	r->call = call;
	r->recording = 1;
	r->start_ms = call->time_ms;
	r->counted_ms = -1;
	/* the Record's tag and length go in front at the end: room for them
	 * as the record's first bytes, which growing the record keeps */
	if (record_reuse(w, r)) {
		(void)fg_bufq_append(&r->buf, wrap_room, WRAP_ROOM); /* in its room: cannot fail */
	} else {
		if (fg_bufq_append(&r->buf, wrap_room, WRAP_ROOM) < 0)
			return FG_STAGE_SKIP;
		record_prepay(w, r);
	}
	call->need_capture_user = 1;
	call->rec = r;
	return FG_STAGE_RUN;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* In the sample: the capture pseudonym's first 64 bits (uniform, and the
 * same for all of a user's calls) below <sample> of the range; a call
 * with no user id by chance. */
static int sampled(struct fg_stage_record *r)
{
	double sample = r->call->cfg->capture.sample;
	uint64_t v;

	if (sample >= 1)
		return 1;
	if (fg_keyring_pseudonym_bits(r->call->capture_user, &v) < 0)
		v = xorshift(&r->w->rng);
	return (double)(v >> 11) < sample * 9007199254740992.0;
}

static int listed(const struct fg_config *cfg, const char *name)
{
	size_t j;

	for (j = 0; j < cfg->capture.nmetadata; j++)
		if (strcmp(cfg->capture.metadata[j], name) == 0)
			return 1;
	return 0;
}

/* Whose metadata a list holds. */
enum md_from {
	MD_PEER = 0,                    /* the client's or the ranker's: capture.metadata names only */
	MD_OURS,                        /* what feedguard's stages added: all of it */
};

/* One Metadata entry of <n> bytes at <p>: feedguard's own may use the
 * OURS_ROOM kept for them, so a large page never pushes them out; a
 * listed name that does not fit is left out and counted. */
static void add_metadata_entry(struct fg_stage_record *r, uint32_t field, const uint8_t *p, size_t n,
                               enum md_from from)
{
	size_t need = n + 2 * FG_PBWIRE_VARINT_MAX;
	enum fg_capture_omit why;
	int ours = from == MD_OURS && r->ours_bytes + need <= OURS_ROOM;

	if (grow_keeping(r, need, ours ? END_ROOM - OURS_ROOM + r->ours_bytes : END_ROOM, &why) < 0 ||
	    fg_pbwire_append_len(&r->buf, field, p, n) < 0) {
		r->md_omitted++;
		return;
	}
	if (ours)
		r->ours_bytes += (uint32_t)need;
}

/* Metadata <h> as entries of <field>: the names in capture.metadata, or
 * all of it when feedguard added it (a ranker's own "feedguard-*" header
 * is a peer's like any other, and may carry anything). */
static void add_metadata(struct fg_stage_record *r, uint32_t field, const struct fg_hdrs *h, enum md_from from)
{
	const struct fg_config *cfg = r->call->cfg;
	const uint8_t *b = fg_bufq_head(&h->buf);
	struct fg_bufq md;
	size_t i, j;

	fg_bufq_init(&md);
	for (i = 0; h && i < h->n; i++) {
		const struct fg_hdrs_entry *e = &h->ent[i];
		const char *name = (const char *)b + e->name_off;
		int keep = from == MD_OURS;
		for (j = 0; !keep && j < cfg->capture.nmetadata; j++)
			keep = strlen(cfg->capture.metadata[j]) == e->name_len &&
			       memcmp(cfg->capture.metadata[j], name, e->name_len) == 0;
		if (!keep)
			continue;
		if (holds_raw_id(r, b + e->value_off, e->value_len)) {
			r->md_omitted++;
			continue;
		}
		fg_bufq_truncate(&md, 0);
		if (fg_pbwire_append_len(&md, MD_NAME, name, e->name_len) < 0 ||
		    fg_pbwire_append_len(&md, MD_VALUE, b + e->value_off, e->value_len) < 0)
			break;
		add_metadata_entry(r, field, fg_bufq_head(&md), fg_bufq_len(&md), from);
	}
	fg_bufq_free(&md);
}

/* A call intercepted for capture alone (strip narrows the others): the
 * response must come in a coding feedguard reads, or the call would fail
 * here for being recorded. */
static int narrow_accept(struct fg_hdrs *h)
{
	char v[FG_GRPCFRAME_ACCEPT_MAX], have[FG_GRPCFRAME_ACCEPT_MAX + 1];
	const char *cur;
	size_t len, n;

	cur = fg_hdrs_find(h, "grpc-accept-encoding", &len);
	n = fg_grpcframe_accept_narrow(cur, cur ? len : 0, v);
	if (!cur)
		return 0;               /* none asked: the upstream sends identity */
	snprintf(have, sizeof(have), "%.*s", (int)(len < sizeof(have) - 1 ? len : sizeof(have) - 1), cur);
	if (fg_hdrs_find_single(h, "grpc-accept-encoding", &len) && strcmp(have, v) == 0)
		return 0;
	fg_hdrs_remove(h, "grpc-accept-encoding");
	return fg_hdrs_add(h, (const uint8_t *)"grpc-accept-encoding", 20, (const uint8_t *)v, n, 0);
}

static enum fg_stage_rc capture_request_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	struct fg_stage_record *r = c->state;

	if (narrow_accept(h) < 0) {
		fg_pipeline_fail(c->pl, FG_GRPC_INTERNAL, "feedguardd is out of memory");
		return FG_STAGE_DONE;
	}
	if (!r->recording)
		return FG_STAGE_CONTINUE;
	if (!r->decided) {
		r->decided = 1;
		if (!sampled(r)) {
			drop_record(r);
			return FG_STAGE_CONTINUE;
		}
	}
	add_metadata(r, C_REQ_META, h, MD_PEER);
	return FG_STAGE_CONTINUE;
}

/* <len> bytes at <p> less edit <e> (NULL program: as they are) as field
 * <field>; <user_key> for the user id field.  Counted in the policy's
 * counters under slot <slot> (SIZE_MAX: not counted). */
static int add_edited(struct fg_stage_record *r, uint32_t field, const struct fg_policy_edit *e, size_t slot,
                      const char *user_key, const uint8_t *p, size_t len)
{
	const struct fg_stage_call *call = r->call;
	int changed = 0;

	if (!e->prog)
		return add_message(r, field, p, len);
	fg_bufq_truncate(&r->w->scratch, 0);
	if (fg_policy_edit_call(call->pol, e, call->band, slot, user_key, p, len, &r->w->scratch, &changed, NULL) < 0) {
		omit(r, FG_CAPTURE_OMIT_RECORD_SIZE);
		return -1;
	}
	return add_message(r, field, fg_bufq_head(&r->w->scratch), fg_bufq_len(&r->w->scratch));
}

/* The request as forwarded, less capture_redact.request, the user id
 * field holding the capture pseudonym. */
static void add_request(struct fg_stage_record *r, const struct fg_stage_msg *msg)
{
	const struct fg_stage_call *call = r->call;

	(void)add_edited(r, C_REQUEST, &call->m->capture_request, call->slot, call->capture_user, msg->data, msg->len);
}

/* capture_redact.response for the call's band, or NULL when the band's own
 * response rules are that very block (the default: the first band's) and
 * have already stripped the message: the same edit twice changes nothing;
 * or when it edits nothing (`response: {}`, the side as the band left it). */
static const struct fg_policy_edit *response_redaction(const struct fg_stage_call *call)
{
	const struct fg_policy_method *m = call->m;

	if (m->capture_response_default && m->response[call->band].prog == m->response[0].prog)
		return NULL;
	return m->capture_response.prog ? &m->capture_response : NULL;
}

/* A response message as delivered, less capture_redact.response. */
static void add_delivered(struct fg_stage_record *r, const struct fg_stage_msg *msg)
{
	const struct fg_policy_edit *redact = response_redaction(r->call);
	int rc;

	if (redact)
		rc = add_edited(r, C_DELIVERED, redact, SIZE_MAX, NULL, msg->data, msg->len);
	else
		rc = add_message(r, C_DELIVERED, msg->data, msg->len);
	if (rc == 0)
		r->n_delivered++;
}

/* A field's tag (its number under 16: one byte) and a varint, the value
 * or a length, at <p>; the bytes written. */
static size_t put_varint(uint8_t *p, uint32_t field, unsigned type, uint64_t v)
{
	p[0] = (uint8_t)(field << 3 | type);
	return 1 + fg_pbwire_write_varint(p + 1, v);
}

/* The method's items path, once per record, packed. */
static int add_items_path(struct fg_stage_record *r, const struct fg_items_spec *spec)
{
	uint8_t packed[FG_ITEMS_MAX_PATH * FG_PBWIRE_VARINT_MAX];
	size_t n = 0, d;

	if (r->path_written || spec->items_depth == 0)
		return 0;
	for (d = 0; d < spec->items_depth; d++)
		n += fg_pbwire_write_varint(packed + n, spec->items_path[d]);
	if (add_bytes(r, C_ITEMS_PATH, packed, n) < 0)
		return -1;
	r->path_written = 1;
	return 0;
}

/*
 * The delivered message <msg> as a reference to its upstream_response
 * entry when it is that entry with only its items moved or dropped (the
 * filter's last report was its page, the record's item decisions for it
 * are whole) or unchanged, and nothing else edits responses between the
 * tap and here (no capture_redact.response of its own): an empty
 * delivered_response entry and a DeliveredFrom, instead of the page again
 * (about half of a record in the bench).  Returns 1 when done (written or
 * left out, counted), 0 when the message must be written whole.
 */
static int add_delivered_from(struct fg_stage_record *r, const struct fg_stage_msg *msg)
{
	const struct fg_policy_feed *feed = r->call->m->feed;
	uint8_t e[3 * (1 + FG_PBWIRE_VARINT_MAX)];
	enum fg_capture_omit why;
	size_t n = 0, before = fg_bufq_len(&r->buf);

	if (!feed || r->planned != msg->index + 1 || r->upstream_gap || msg->index >= r->n_upstream ||
	    response_redaction(r->call))
		return 0;
	if (r->planned_reordered && add_items_path(r, &feed->spec) < 0)
		return 0;
	n += put_varint(e + n, DF_DELIVERED, FG_PBWIRE_VARINT, r->n_delivered);
	n += put_varint(e + n, DF_UPSTREAM, FG_PBWIRE_VARINT, msg->index);
	if (r->planned_reordered)
		n += put_varint(e + n, DF_REORDERED, FG_PBWIRE_VARINT, 1);
	/* both or neither: an empty entry without its reference would read
	 * as an empty message */
	if (grow(r, n + 4 * FG_PBWIRE_VARINT_MAX, &why) < 0) {
		omit(r, why);
		return 1;
	}
	if (fg_pbwire_append_len(&r->buf, C_DELIVERED, "", 0) < 0 ||
	    fg_pbwire_append_len(&r->buf, C_DELIVERED_FROM, e, n) < 0) {
		fg_bufq_truncate(&r->buf, before);
		omit(r, FG_CAPTURE_OMIT_QUEUE);
		return 1;
	}
	r->n_delivered++;
	return 1;
}

static enum fg_stage_rc capture_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	struct fg_stage_record *r = c->state;

	if (!r->recording)
		return FG_STAGE_CONTINUE;
	if (dir == FG_STAGE_REQUEST) {
		if (!msg->drop)
			add_request(r, msg);
		return FG_STAGE_CONTINUE;
	}
	if (!msg->drop && !add_delivered_from(r, msg))
		add_delivered(r, msg);
	/* a unary call's metadata is complete with its first message */
	if (msg->index == 0 && !fg_pipeline_streaming_response(c->pl)) {
		add_metadata(r, C_RESP_META, fg_pipeline_pending_metadata(c->pl), MD_OURS);
		r->meta_taken = 1;
	}
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc capture_response_headers(struct fg_stage_ctx *c, struct fg_hdrs *h)
{
	struct fg_stage_record *r = c->state;

	if (r->recording)
		add_metadata(r, C_RESP_META, h, MD_PEER);
	return FG_STAGE_CONTINUE;
}

static enum fg_stage_rc capture_response_end(struct fg_stage_ctx *c, struct fg_hdrs *trailers)
{
	struct fg_stage_record *r = c->state;
	const char *v;
	size_t len;

	if (!r->recording)
		return FG_STAGE_CONTINUE;
	if (trailers) {
		add_metadata(r, C_RESP_META, trailers, MD_PEER);
		/* the ranker's words may name the user: kept only when the
		 * operator listed grpc-message in capture.metadata */
		if (listed(r->call->cfg, "grpc-message") && (v = fg_hdrs_find(trailers, "grpc-message", &len)) &&
		    !holds_raw_id(r, v, len))
			snprintf(r->upstream_message, sizeof(r->upstream_message), "%.*s", (int)len, v);
	}
	/* a stream's, or a unary response's that came without a message,
	 * goes out with the trailers */
	if (!r->meta_taken) {
		add_metadata(r, C_RESP_META, fg_pipeline_pending_metadata(c->pl), MD_OURS);
		r->meta_taken = 1;
	}
	return FG_STAGE_CONTINUE;
}

/* --- the end: decisions, the Record wrapper, the writer -------------------- */

/* The end's entries are encoded in the worker's scratch buffers <sub> and
 * <sub2> (kept from call to call: capture_end runs whole on the worker),
 * then appended to their parent with their length. */
static int add_stripped(struct fg_stage_record *r, struct fg_bufq *d)
{
	const struct fg_policy *p = r->call->pol;
	struct fg_bufq *s = &r->w->sub;
	size_t i;

	for (i = 0; r->tally && i < p->nstats; i++) {
		int rc;
		if (!r->tally[i])
			continue;
		fg_bufq_truncate(s, 0);
		rc = fg_pbwire_append_len(s, S_FIELD, p->stat_names[i], strlen(p->stat_names[i])) |
		     fg_pbwire_append_varint(s, S_COUNT, r->tally[i]);
		rc |= fg_pbwire_append_len(d, D_STRIPPED, fg_bufq_head(s), fg_bufq_len(s));
		if (rc)
			return FG_ENOMEM;
	}
	return 0;
}

static int add_exposure(struct fg_stage_record *r, struct fg_bufq *st)
{
	const struct fg_stage_call *call = r->call;
	struct fg_bufq *e = &r->w->sub2;
	size_t k;
	int rc = 0;

	for (k = 0; k < r->screen.ncounters && rc == 0; k++) {
		fg_bufq_truncate(e, 0);
		rc = fg_pbwire_append_len(e, E_COUNTER, r->screen.counter[k], strlen(r->screen.counter[k])) |
		     fg_pbwire_append_varint(e, E_ALLOWANCE, r->allowance[k]) |
		     fg_pbwire_append_varint(e, E_DELIVERED, call->exposure_delivered[k]) |
		     fg_pbwire_append_varint(e, E_LIMITED, r->limited[k]);
		rc |= fg_pbwire_append_len(st, ST_EXPOSURE, fg_bufq_head(e), fg_bufq_len(e));
	}
	return rc ? FG_ENOMEM : 0;
}

static int add_screen(struct fg_stage_record *r, struct fg_bufq *d)
{
	const struct fg_stage_screen_facts *f = &r->screen;
	struct fg_bufq *st = &r->w->sub;
	unsigned k;
	int rc = 0;

	if (!r->screen_set)
		return 0;
	fg_bufq_truncate(st, 0);
	if (f->action)
		rc |= fg_pbwire_append_varint(st, ST_ACTION, f->action);
	for (k = 0; k < FG_POLICY_NNOTICES; k++)
		if (f->notices & (1u << k))
			rc |= fg_pbwire_append_len(st, ST_NOTICES, fg_limits_notice_name(k),
			                           strlen(fg_limits_notice_name(k)));
	if (f->failure >= 0 && f->failure < FG_POLICY_NSREASONS) {
		rc |= fg_pbwire_append_len(st, ST_FAILURE, failure_names[f->failure], strlen(failure_names[f->failure]));
		if (f->fail_mode < 3)
			rc |= fg_pbwire_append_len(st, ST_FAIL_MODE, fail_mode_names[f->fail_mode],
			                           strlen(fail_mode_names[f->fail_mode]));
	}
	rc |= fg_pbwire_append_varint(st, ST_USED, (uint64_t)fg_limits_minutes_used(f->used_ms));
	if (f->left_ms >= 0)
		rc |= fg_pbwire_append_varint(st, ST_LEFT, (uint64_t)fg_limits_minutes_left(f->left_ms));
	rc |= fg_pbwire_append_varint(st, ST_SESSION, (uint64_t)fg_limits_minutes_used(f->session_ms));
	if (r->counted_ms >= 0)
		rc |= fg_pbwire_append_varint(st, ST_COUNTED, (uint64_t)r->counted_ms);
	if (rc == 0)
		rc = add_exposure(r, st);
	if (rc == 0)
		rc = fg_pbwire_append_len(d, D_SCREEN, fg_bufq_head(st), fg_bufq_len(st));
	return rc ? FG_ENOMEM : 0;
}

/* The Decisions: stripped counts, the items (moved from <items>, where
 * the pages put them: written once, never copied into a Decisions of
 * their own first), the screen-time facts, the page size asked. */
static int add_decisions(struct fg_stage_record *r)
{
	struct fg_bufq *d = &r->w->dec;
	uint8_t hdr[1 + FG_PBWIRE_VARINT_MAX];
	size_t before, items = fg_bufq_len(&r->items), n;
	int rc;

	fg_bufq_truncate(d, 0);
	rc = add_stripped(r, d);
	before = fg_bufq_len(d);
	if (rc == 0)
		rc = add_screen(r, d);
	if (rc == 0 && r->page_size_asked)
		rc = fg_pbwire_append_varint(d, D_PAGE_SIZE_ASKED, r->page_size_asked);
	if (rc == 0 && r->pages_no_items)
		rc = fg_pbwire_append_varint(d, D_ITEMS_OMITTED, r->pages_no_items);
	if (rc < 0 || fg_bufq_len(d) + items == 0)
		return rc;
	/* the items were counted as they came; the rest is in END_ROOM */
	if (fg_capture_reserve(r->w->cap, 8, queue_limit(r)) < 0)
		return FG_ETOOBIG;
	r->reserved += 8;
	n = put_varint(hdr, C_DECISIONS, FG_PBWIRE_LEN, fg_bufq_len(d) + items);
	if (fg_bufq_reserve(&r->buf, n + fg_bufq_len(d) + items) < 0)
		return FG_ENOMEM;
	/* field order within the Decisions as before: stripped, items, the rest
	 * (room reserved above: these appends do not fail) */
	(void)fg_bufq_append(&r->buf, hdr, n);
	if (before)
		(void)fg_bufq_append(&r->buf, fg_bufq_head(d), before);
	if (items)
		(void)fg_bufq_append(&r->buf, fg_bufq_head(&r->items), items);
	if (fg_bufq_len(d) > before)
		(void)fg_bufq_append(&r->buf, fg_bufq_head(d) + before, fg_bufq_len(d) - before);
	fg_bufq_free(&r->items);                /* written: not held twice */
	if (d->cap > PAGE_SCRATCH_KEEP)
		fg_bufq_free(d);
	return 0;
}

static int add_facts(struct fg_stage_record *r, const struct fg_stage_end *end)
{
	const struct fg_stage_call *call = r->call;
	const char *band = call->pol->bands[call->band].name;
	const char *text = call->answered ? call->answer_text : r->upstream_message;
	int rc = 0;

	rc |= fg_pbwire_append_varint(&r->buf, C_START, (uint64_t)r->start_ms);
	rc |= fg_pbwire_append_varint(&r->buf, C_DURATION, end->end_us > end->start_us ? end->end_us - end->start_us : 0);
	rc |= fg_pbwire_append_len(&r->buf, C_METHOD, call->m->path, strlen(call->m->path));
	rc |= fg_pbwire_append_len(&r->buf, C_BAND, band, strlen(band));
	if (call->capture_user[0])
		rc |= fg_pbwire_append_len(&r->buf, C_USER_KEY, call->capture_user, strlen(call->capture_user));
	if (r->zone[0])
		rc |= fg_pbwire_append_len(&r->buf, C_TIME_ZONE, r->zone, strlen(r->zone));
	if (end->status)
		rc |= fg_pbwire_append_varint(&r->buf, C_STATUS, (uint64_t)(int64_t)end->status);
	if (text[0])
		rc |= fg_pbwire_append_len(&r->buf, C_STATUS_MESSAGE, text, strlen(text));
	if (call->answered)
		rc |= fg_pbwire_append_varint(&r->buf, C_ANSWERED, 1);
	if (r->omitted)
		rc |= fg_pbwire_append_varint(&r->buf, C_OMITTED, r->omitted);
	if (r->md_omitted)
		rc |= fg_pbwire_append_varint(&r->buf, C_METADATA_OMITTED, r->md_omitted);
	rc |= fg_pbwire_append_len(&r->buf, C_POLICY_ID, call->pol->id, strlen(call->pol->id));
	return rc ? FG_ENOMEM : 0;
}

/* The Call becomes a Record: its tag and length in front, in the room
 * kept for them (or, when growth used that room, in a new buffer). */
static int wrap(struct fg_stage_record *r)
{
	uint8_t head[WRAP_ROOM];
	uint8_t *at = (uint8_t *)fg_bufq_head(&r->buf);
	size_t n = fg_pbwire_write_varint(head, (uint64_t)REC_CALL << 3 | 2);

	if (fg_bufq_len(&r->buf) < WRAP_ROOM)
		return FG_EINVAL;
	n += fg_pbwire_write_varint(head + n, fg_bufq_len(&r->buf) - WRAP_ROOM);
	/* right-aligned in the room the record began with, the rest of the
	 * room consumed: the Call's bytes are not moved */
	memcpy(at + WRAP_ROOM - n, head, n);
	fg_bufq_consume(&r->buf, WRAP_ROOM - n);
	return 0;
}

static void capture_end(struct fg_stage_ctx *c, const struct fg_stage_end *end)
{
	struct fg_stage_record *r = c->state;

	if (!r->recording)
		return;
	if (!r->decided && !sampled(r)) {
		drop_record(r);
		return;
	}
	/* the fixed fields and the wrapper, within the budget like the rest */
	if (count_bytes(r, END_ROOM) < 0) {
		fg_capture_dropped(r->w->cap, FG_CAPTURE_DROP_BUDGET);
		drop_record(r);
		return;
	}
	if (add_facts(r, end) < 0 || add_decisions(r) < 0 || wrap(r) < 0 ||
	    fg_bufq_len(&r->buf) > r->call->cfg->capture.max_record_size) {
		fg_capture_dropped(r->w->cap, FG_CAPTURE_DROP_BUDGET);
		drop_record(r);
		return;
	}
	r->w->record_hint = fg_bufq_len(&r->buf);
	(void)fg_capture_submit(r->w->ring, &r->buf, r->reserved);
	r->reserved = 0;
	drop_record(r);
}

static void capture_call_free(struct fg_stage_ctx *c)
{
	struct fg_stage_record *r = c->state;

	if (r->w)
		drop_record(r);
}

/*
 * The capture's tap: the response as the ranker sent it, less what the
 * band's response rules strip, is the message as strip left it, before the
 * filter.  This support stage sits between the two and records it there,
 * so nothing is edited twice; it runs where the capture stage may.
 */
static enum fg_stage_begin tap_begin(struct fg_stage_ctx *c, const struct fg_hdrs *h)
{
	struct fg_stage_call *call = c->call;

	(void)h;
	return call->cfg->capture.enabled && call->cfg->capture.sample > 0 &&
	       fg_config_capture_method(call->cfg, call->m->path) ? FG_STAGE_RUN : FG_STAGE_SKIP;
}

static enum fg_stage_rc tap_message(struct fg_stage_ctx *c, enum fg_stage_dir dir, struct fg_stage_msg *msg)
{
	struct fg_stage_record *r = c->call->rec;
	const struct fg_policy_edit *redact;
	int rc;

	if (dir != FG_STAGE_RESPONSE || !r || !r->recording)
		return FG_STAGE_CONTINUE;
	if ((redact = response_redaction(r->call)))
		rc = add_edited(r, C_UPSTREAM, redact, SIZE_MAX, NULL, msg->data, msg->len);
	else
		rc = add_message(r, C_UPSTREAM, msg->data, msg->len);
	if (rc == 0 && msg->index == r->n_upstream)
		r->n_upstream++;
	else
		r->upstream_gap = 1;
	return FG_STAGE_CONTINUE;
}

const struct fg_stage fg_stage_capture_tap = {
	.name = "capture-tap",
	.flags = FG_STAGE_F_SUPPORT,
	.begin = tap_begin,
	.on_message = tap_message,
};

const struct fg_stage fg_stage_capture = {
	.name = "capture",
	.call_size = sizeof(struct fg_stage_record),
	.worker_size = sizeof(struct capture_worker),
	.worker_init = capture_worker_init,
	.worker_free = capture_worker_free,
	.begin = capture_begin,
	.on_request_headers = capture_request_headers,
	.on_message = capture_message,
	.on_response_headers = capture_response_headers,
	.on_response_end = capture_response_end,
	.on_end = capture_end,
	.call_free = capture_call_free,
};

/* --- what the other stages report ---------------------------------------------- */

uint32_t *fg_stage_record_tally(struct fg_stage_record *r)
{
	size_t n = r->call->pol->nstats;
	enum fg_capture_omit why;

	if (!r->tally && n && grow(r, n * sizeof(uint32_t), &why) == 0)
		r->tally = calloc(n, sizeof(uint32_t));
	return r->tally;
}

/* One Decisions.items entry, appended to <page> with one reservation
 * (a page is a hundred items: no per-item buffer or copy). */
static int add_item(struct fg_bufq *page, const struct fg_policy *p, unsigned message, uint32_t pos,
                    int32_t dpos, const struct fg_items_item *it)
{
	uint8_t head[ITEM_FIXED_MAX], tail[ITEM_FIXED_MAX], *t;
	/* FG_ITEMS_UNLABELLED and FG_ITEMS_NO_CLASS are past every class */
	const char *cls = it->cls < p->nclasses ? p->classes[it->cls].name : "";
	size_t nh = 0, nt = 0, clen = strlen(cls), n, k;

	if (message)
		nh += put_varint(head + nh, I_MESSAGE, FG_PBWIRE_VARINT, message);
	if (pos)
		nh += put_varint(head + nh, I_POSITION, FG_PBWIRE_VARINT, pos);
	if (dpos)
		nh += put_varint(head + nh, I_DELIVERED, FG_PBWIRE_VARINT, (uint64_t)(int64_t)dpos);
	if (clen)
		nh += put_varint(head + nh, I_CLASS, FG_PBWIRE_LEN, clen);
	if (it->fate)
		nt += put_varint(tail + nt, I_FATE, FG_PBWIRE_VARINT, it->fate);
	if (it->decision == FG_ITEMS_DEMOTE)
		nt += put_varint(tail + nt, I_DEMOTED, FG_PBWIRE_VARINT, 1);
	n = nh + clen + nt;
	if (fg_bufq_reserve(page, 1 + FG_PBWIRE_VARINT_MAX + n) < 0)
		return FG_ENOMEM;
	t = fg_bufq_tail(page);
	k = put_varint(t, D_ITEMS, FG_PBWIRE_LEN, n);
	memcpy(t + k, head, nh);
	memcpy(t + k + nh, cls, clen);
	memcpy(t + k + nh + clen, tail, nt);
	fg_bufq_commit(page, k + n);
	return 0;
}

void fg_stage_record_page(struct fg_stage_record *r, unsigned message, const struct fg_items_page *pg)
{
	enum fg_capture_omit why = FG_CAPTURE_OMIT_QUEUE;
	int32_t small[DPOS_STACK];
	int32_t *dpos = small;
	struct fg_bufq *page;
	size_t i, k;

	if (!r || !r->recording)
		return;
	r->planned = 0;
	if (pg->n == 0) {
		r->planned = message + 1;       /* nothing to move: delivered as it came */
		r->planned_reordered = 0;
		return;
	}
	if (pg->n > DPOS_STACK && !(dpos = malloc(pg->n * sizeof(*dpos)))) {
		r->items_omitted = 1;
		r->pages_no_items++;
		return;
	}
	page = &r->w->page;
	fg_bufq_clear(page);
	for (i = 0; i < pg->n; i++)
		dpos[i] = -1;
	for (i = 0; i < pg->norder; i++)
		if (pg->order[i] < pg->n)
			dpos[pg->order[i]] = (int32_t)i;
	for (i = 0; i < pg->n; i++) {
		const struct fg_items_item *it = &pg->item[i];
		if (it->fate == FG_ITEMS_LIMITED)
			for (k = 0; k < FG_ITEMS_MAX_COUNTERS; k++)
				if (it->counters & (1u << k))
					r->limited[k]++;
		if (!r->items_omitted && add_item(page, r->call->pol, message, (uint32_t)i, dpos[i], it) < 0)
			r->items_omitted = 1;
	}
	if (dpos != small)
		free(dpos);
	/* the page's items go into the record counted, all of them or none:
	 * the record never holds bytes capture.queue does not count */
	if (!r->items_omitted && (fg_bufq_len(&r->items) + fg_bufq_len(page) > ITEMS_MAX_BYTES ||
	                          grow(r, fg_bufq_len(page), &why) < 0 ||
	                          fg_bufq_append(&r->items, fg_bufq_head(page), fg_bufq_len(page)) < 0))
		r->items_omitted = 1;
	if (r->items_omitted) {
		r->pages_no_items++;            /* not a message: the page itself may be in the record */
	} else {
		/* the delivered page can be rebuilt from the upstream one */
		r->planned = message + 1;
		r->planned_reordered = !fg_items_identity(pg);
	}
	if (page->cap > PAGE_SCRATCH_KEEP)
		fg_bufq_free(page);
}

void fg_stage_record_answer_metadata(struct fg_stage_record *r, const struct fg_hdrs *h)
{
	if (r && r->recording)
		add_metadata(r, C_RESP_META, h, MD_OURS);
}

void fg_stage_record_page_size(struct fg_stage_record *r, uint64_t asked)
{
	if (r && r->recording)
		r->page_size_asked = asked;
}

void fg_stage_record_counted(struct fg_stage_record *r, int64_t ms)
{
	if (r && r->recording)
		r->counted_ms = ms < 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : ms;
}

void fg_stage_record_screen(struct fg_stage_record *r, const struct fg_stage_screen_facts *f)
{
	size_t n;

	if (!r || !r->recording)
		return;
	r->screen = *f;
	r->screen_set = 1;
	snprintf(r->zone, sizeof(r->zone), "%s", f->zone ? f->zone : "");
	r->screen.zone = r->zone;
	n = f->ncounters < FG_ITEMS_MAX_COUNTERS ? f->ncounters : FG_ITEMS_MAX_COUNTERS;
	r->screen.ncounters = n;
	if (f->allowance)
		memcpy(r->allowance, f->allowance, n * sizeof(r->allowance[0]));
	r->screen.allowance = NULL;
}
