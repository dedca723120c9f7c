/* fg_state_mem.c - the in-process state backend; see fg_state_mem.h. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_state.h"
#include "fg_state_mem.h"

/* "<prefix>{<pseudonym>}" and its NUL */
#define KEY_MAX (FG_STATE_PREFIX_MAX + 2 + FG_KEYRING_PSEUDONYM_MAX)
#define INITIAL_BUCKETS 16

struct mem_counter {
	char name[FG_STATE_CLASS_MAX + 1];
	uint64_t n;
};

/* One user's record under one key. */
struct mem_rec {
	struct mem_rec *next;           /* in its hash bucket */
	uint64_t hash;                  /* of <key>, kept for rehashing */
	int64_t expire_ms;              /* absent once now reaches it */
	int64_t last_ms, session_start_ms, day, active_ms, night, quiet_ms;
	struct mem_counter *x;          /* exposure counters of <day>, <nx> used of <capx> */
	size_t nx, capx;
	char key[KEY_MAX];
};

struct fg_state_mem {
	struct fg_state base;           /* first: fg_state.c hands us this pointer */
	struct mem_rec **buckets;       /* chained hash table */
	size_t nbuckets;                /* a power of 2 */
	size_t count;                   /* records in the table, expired ones not yet reclaimed included */
	size_t max_records;
	uint64_t full;                  /* new users refused for want of room */
	int64_t now_ms;                 /* fg_state_mem_set_now */
	struct mem_pending **pending;   /* fg_state_mem_defer: a min-heap by end time */
	size_t npending, cap_pending, max_pending;
	uint64_t seq;                   /* updates held so far */
	uint64_t not_held;              /* updates applied at once for want of room to hold them */
	int fail_rc;                    /* fg_state_mem_fail: 0, or what <fail_ops> get */
	unsigned fail_ops;              /* FG_STATE_MEM_FAIL_* */
	char prefix[FG_STATE_PREFIX_MAX + 1];
};

/* A failure fg_state_mem_fail asked for, as fg_state_redis gives it: a
 * refused submit (down, busy) returns it and calls nothing; the others
 * come in the callback.  1 when <op> fails so (<rc> set), else 0. */
static int failing(const struct fg_state_mem *m, unsigned op, int *rc)
{
	if (!m->fail_rc || !(m->fail_ops & op))
		return 0;
	*rc = m->fail_rc;
	return 1;
}

static int refused(int rc)
{
	return rc == FG_EUNAVAIL || rc == FG_EBUSY;
}

static const struct fg_state_ops mem_ops;

static struct fg_state_mem *mem_of(struct fg_state *s)
{
	return (struct fg_state_mem *)s;
}

/* FNV-1a: keys are HMAC outputs, which nobody outside can steer into one
 * bucket, so a keyed hash buys nothing here. */
static uint64_t key_hash(const char *key)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 0x100000001b3ULL;
	return h;
}

static void make_key(const struct fg_state_mem *m, const char *pseudonym, char *out)
{
	/* fg_state_check_who bounded the pseudonym; the prefix was bounded at new. */
	snprintf(out, KEY_MAX, "%s{%s}", m->prefix, pseudonym);
}

static void rec_free(struct mem_rec *r)
{
	free(r->x);
	free(r);
}

/* Take the record at *<slot> out of the table and free it. */
static void slot_remove(struct fg_state_mem *m, struct mem_rec **slot)
{
	struct mem_rec *r = *slot;

	*slot = r->next;
	rec_free(r);
	m->count--;
}

/*
 * The link that points at the record under <key> (expired or not), or NULL.
 */
static struct mem_rec **slot_find(struct fg_state_mem *m, const char *key)
{
	uint64_t h = key_hash(key);
	struct mem_rec **slot = &m->buckets[h & (m->nbuckets - 1)];

	for (; *slot; slot = &(*slot)->next)
		if ((*slot)->hash == h && strcmp((*slot)->key, key) == 0)
			return slot;
	return NULL;
}

/* The live record under <pseudonym>, or NULL; an expired one is reclaimed. */
static struct mem_rec **slot_live(struct fg_state_mem *m, const char *pseudonym)
{
	char key[KEY_MAX];
	struct mem_rec **slot;

	make_key(m, pseudonym, key);
	slot = slot_find(m, key);
	if (slot && (*slot)->expire_ms <= m->now_ms) {
		slot_remove(m, slot);
		slot = NULL;
	}
	return slot;
}

static void rec_insert(struct fg_state_mem *m, struct mem_rec *r)
{
	struct mem_rec **head = &m->buckets[r->hash & (m->nbuckets - 1)];

	r->next = *head;
	*head = r;
}

/* Keep chains short: double the buckets when there are more records than
 * buckets.  A failed allocation keeps the old table (longer chains only). */
static void maybe_grow(struct fg_state_mem *m)
{
	size_t n = m->nbuckets * 2;
	struct mem_rec **old = m->buckets, **b;
	size_t oldn = m->nbuckets;

	if (m->count <= m->nbuckets || n < oldn)
		return;
	b = calloc(n, sizeof(*b));
	if (!b)
		return;
	m->buckets = b;
	m->nbuckets = n;
	for (size_t i = 0; i < oldn; i++) {
		struct mem_rec *r, *next;
		for (r = old[i]; r; r = next) {
			next = r->next;
			rec_insert(m, r);
		}
	}
	free(old);
}

/* Reclaim every expired record: only when the table is full, so the cost
 * falls on the rare call that would otherwise fail. */
static void sweep_expired(struct fg_state_mem *m)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct mem_rec **slot = &m->buckets[i];
		while (*slot) {
			if ((*slot)->expire_ms <= m->now_ms)
				slot_remove(m, slot);
			else
				slot = &(*slot)->next;
		}
	}
}

static struct mem_counter *counter_find(const struct mem_rec *r, const char *name)
{
	for (size_t i = 0; i < r->nx; i++)
		if (strcmp(r->x[i].name, name) == 0)
			return &r->x[i];
	return NULL;
}

/* --- read ------------------------------------------------------------- */

static void rec_to_user(const struct mem_rec *r, const struct fg_state_who *who, struct fg_state_user *u)
{
	u->found = 1;
	u->last_ms = r->last_ms;
	u->session_start_ms = r->session_start_ms;
	u->day = r->day;
	u->active_ms = r->active_ms;
	u->night = r->night;
	u->quiet_ms = r->quiet_ms;
	for (size_t i = 0; i < who->nclasses; i++) {
		const struct mem_counter *c = counter_find(r, who->classes[i]);
		u->exposure[i] = c ? c->n : 0;
	}
}

static int mem_read(struct fg_state *s, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg)
{
	struct fg_state_mem *m = mem_of(s);
	struct fg_state_user u;
	int rc;

	if (failing(m, FG_STATE_MEM_FAIL_READ, &rc)) {
		if (refused(rc))
			return rc;
		cb(arg, rc, NULL);
		return 0;
	}
	memset(&u, 0, sizeof(u));
	for (size_t i = 0; i < who->nkeys; i++) {
		struct mem_rec **slot = slot_live(m, who->keys[i]);
		if (slot) {
			rec_to_user(*slot, who, &u);
			break;
		}
	}
	cb(arg, 0, &u);
	return 0;
}

/* --- update ----------------------------------------------------------- */

/* <a> + <b> for <a> in 0..FG_STATE_VALUE_MAX and <b> >= 0, saturated. */
static int64_t sat_add(int64_t a, int64_t b)
{
	return b > FG_STATE_VALUE_MAX - a ? FG_STATE_VALUE_MAX : a + b;
}

/* The length of [<from>, <to>], 0 when empty. */
static int64_t span(int64_t from, int64_t to)
{
	return to > from ? to - from : 0;
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/*
 * Exposure counters <r> needs beyond the ones it keeps after the update's
 * day reset (<reset>: none kept): 1 per distinct new name.
 */
static size_t counters_needed(const struct mem_rec *r, int reset, const struct fg_state_who *who)
{
	size_t need = 0;

	for (size_t i = 0; i < who->nclasses; i++) {
		int seen = 0;
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(who->classes[j], who->classes[i]) == 0;
		if (!seen && (reset || !counter_find(r, who->classes[i])))
			need++;
	}
	return need;
}

/* Room for <need> more counters after keeping <keep>: 0, FG_ETOOBIG or FG_ENOMEM. */
static int counters_reserve(struct mem_rec *r, size_t keep, size_t need)
{
	struct mem_counter *x;
	size_t cap;

	if (keep + need > FG_STATE_MEM_MAX_COUNTERS)
		return FG_ETOOBIG;
	if (keep + need <= r->capx)
		return 0;
	cap = keep + need < 4 ? 4 : keep + need;
	x = realloc(r->x, cap * sizeof(*x));
	if (!x)
		return FG_ENOMEM;
	r->x = x;
	r->capx = cap;
	return 0;
}

/* Step 7 on <r>, whose room counters_reserve() made. */
static void counters_add(struct mem_rec *r, const struct fg_state_who *who, const uint32_t *counts)
{
	for (size_t i = 0; i < who->nclasses; i++) {
		struct mem_counter *c = counter_find(r, who->classes[i]);
		if (!c) {
			c = &r->x[r->nx++];
			snprintf(c->name, sizeof(c->name), "%s", who->classes[i]);
			c->n = 0;
		}
		c->n = (uint64_t)sat_add((int64_t)c->n, counts[i]);
	}
}

/* Steps 2-6 and 8 on <r> (<fresh>: it had no record before). */
static void apply_times(struct fg_state_mem *m, struct mem_rec *r, int fresh, const struct fg_state_update *u)
{
	int64_t from, add;

	/* Days and nights never go back (fg_state.h, steps 2 and 3). */
	if (fresh || r->day < u->day) {
		r->active_ms = 0;
		r->nx = 0;
		r->day = u->day;
	}
	if (fresh || r->night < u->night) {
		r->quiet_ms = 0;
		r->night = u->night;
	}
	if (fresh || u->start_ms - r->last_ms > u->idle_gap_ms)
		from = r->session_start_ms = u->start_ms;     /* (never with cap_ms: see mem_update) */
	else
		from = r->last_ms;      /* the gap was use; an overlap counts once */
	add = span(max64(from, u->day_start_ms), u->end_ms);
	if (u->cap_ms) {        /* a daily cap's answer: up to the cap, nothing else */
		r->active_ms = max64(r->active_ms, min64(sat_add(r->active_ms, add), u->cap_ms));
	} else {
		r->active_ms = sat_add(r->active_ms, add);
		if (u->quiet_to_ms > u->quiet_from_ms)
			r->quiet_ms = sat_add(r->quiet_ms, span(max64(from, u->quiet_from_ms),
			                                        min64(u->end_ms, u->quiet_to_ms)));
		r->last_ms = fresh ? u->end_ms : max64(r->last_ms, u->end_ms);
	}
	/* now is the caller's: it may be anything an int64 holds */
	r->expire_ms = m->now_ms > INT64_MAX - u->ttl_ms ? INT64_MAX : m->now_ms + u->ttl_ms;
}

/* A new, empty record under <key>, not in the table yet; NULL: no memory. */
static struct mem_rec *rec_new(const char *key)
{
	struct mem_rec *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->hash = key_hash(key);
	return r;
}

/*
 * Step 1's lookup: the link to the record the update applies to, under
 * keys[0] or, with <*later> set, under a later key; NULL when the user has
 * none.  Expired records met on the way are reclaimed.
 */
static struct mem_rec **find_user(struct fg_state_mem *m, const struct fg_state_who *who, int *later)
{
	struct mem_rec **slot;

	for (size_t i = 0; i < who->nkeys; i++) {
		slot = slot_live(m, who->keys[i]);
		if (slot) {
			*later = i > 0;
			return slot;
		}
	}
	*later = 0;
	return NULL;
}

/* A record for a user who has none: 0, FG_ETOOBIG (table full) or FG_ENOMEM. */
static int make_room(struct fg_state_mem *m, const char *key0, struct mem_rec **out)
{
	if (m->count >= m->max_records)
		sweep_expired(m);
	if (m->count >= m->max_records) {
		m->full++;
		return FG_ETOOBIG;
	}
	*out = rec_new(key0);
	return *out ? 0 : FG_ENOMEM;
}

/* Step 1's move: the record at *<slot> goes under <key0>. */
static void move_to(struct fg_state_mem *m, struct mem_rec **slot, const char *key0)
{
	struct mem_rec *r = *slot;

	*slot = r->next;
	snprintf(r->key, sizeof(r->key), "%s", key0);
	r->hash = key_hash(key0);
	rec_insert(m, r);
}

/* A quiet-only update (fg_state.h) on the record at <slot> (NULL: none). */
static void quiet_only(struct fg_state_mem *m, struct mem_rec **slot, int later, const char *key0,
                       const struct fg_state_update *u)
{
	struct mem_rec *r = slot ? *slot : NULL;
	int64_t add;

	if (r && later)
		move_to(m, slot, key0);
	if (!r || r->night > u->night || !r->last_ms || u->start_ms - r->last_ms > u->idle_gap_ms ||
	    u->quiet_to_ms <= u->quiet_from_ms)
		return;
	add = span(max64(r->last_ms, u->quiet_from_ms), min64(u->end_ms, u->quiet_to_ms));
	if (add == 0)
		return;
	if (r->night < u->night)
		r->quiet_ms = 0;
	r->night = u->night;
	r->quiet_ms = sat_add(r->quiet_ms, add);
	r->expire_ms = m->now_ms > INT64_MAX - u->ttl_ms ? INT64_MAX : m->now_ms + u->ttl_ms;
}

/*
 * Update <u> applied now: 0, FG_ETOOBIG or FG_ENOMEM.  Every allocation
 * and every check comes before the first change, so a failed update
 * changes nothing (expired records aside), as a Redis script that errors
 * before writing.
 */
static int apply_update(struct fg_state_mem *m, const struct fg_state_update *u)
{
	char key0[KEY_MAX];
	struct mem_rec **slot, *r = NULL;
	int later, reset, rc;

	make_key(m, u->who.keys[0], key0);
	slot = find_user(m, &u->who, &later);
	if (u->quiet_only) {
		quiet_only(m, slot, later, key0, u);
		return 0;
	}
	if (u->cap_ms && (!slot || !(*slot)->last_ms || u->start_ms - (*slot)->last_ms > u->idle_gap_ms)) {
		if (slot && later)      /* a daily cap's answer with no gap that was use: step 1 only */
			move_to(m, slot, key0);
		return 0;
	}
	rc = slot ? 0 : make_room(m, key0, &r);
	if (rc < 0)
		return rc;
	if (slot)
		r = *slot;
	reset = !slot || r->day < u->day;
	rc = counters_reserve(r, reset ? 0 : r->nx, counters_needed(r, reset, &u->who));
	if (rc < 0) {
		if (!slot)
			rec_free(r);
		return rc;
	}
	if (later)
		move_to(m, slot, key0);
	apply_times(m, r, !slot, u);
	counters_add(r, &u->who, u->counts);
	if (!slot) {
		rec_insert(m, r);
		m->count++;
		maybe_grow(m);
	}
	return 0;
}

/* --- deferred updates (fg_state_mem_defer) ------------------------------ */

/* An update held until the time of its call's end: a copy, since the
 * caller's arrays are borrowed for the call only. */
struct mem_pending {
	struct fg_state_update u;               /* who.keys, who.classes, counts point below */
	uint64_t seq;                           /* submission order: ties of end_ms keep it */
	const char *keys[FG_STATE_MAX_KEYS];
	const char *classes[FG_STATE_MAX_CLASSES];
	uint32_t counts[FG_STATE_MAX_CLASSES];
	char text[];                            /* the keys' and classes' bytes */
};

static int pending_before(const struct mem_pending *a, const struct mem_pending *b)
{
	return a->u.end_ms < b->u.end_ms || (a->u.end_ms == b->u.end_ms && a->seq < b->seq);
}

static void heap_up(struct mem_pending **h, size_t i)
{
	while (i > 0 && pending_before(h[i], h[(i - 1) / 2])) {
		struct mem_pending *t = h[i];
		h[i] = h[(i - 1) / 2];
		h[(i - 1) / 2] = t;
		i = (i - 1) / 2;
	}
}

static void heap_down(struct mem_pending **h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;
		if (l < n && pending_before(h[l], h[min]))
			min = l;
		if (r < n && pending_before(h[r], h[min]))
			min = r;
		if (min == i)
			return;
		struct mem_pending *t = h[i];
		h[i] = h[min];
		h[min] = t;
		i = min;
	}
}

static char *copy_str(char **at, const char *s)
{
	size_t n = strlen(s) + 1;
	char *out = memcpy(*at, s, n);

	*at += n;
	return out;
}

/* <u> held in the heap.  0 or FG_ENOMEM. */
static int defer_update(struct fg_state_mem *m, const struct fg_state_update *u)
{
	struct mem_pending *p;
	size_t bytes = 0, i;
	char *at;

	if (m->npending == m->cap_pending) {
		size_t cap = m->cap_pending ? 2 * m->cap_pending : 64;
		struct mem_pending **h = realloc(m->pending, cap * sizeof(*h));
		if (!h)
			return FG_ENOMEM;
		m->pending = h;
		m->cap_pending = cap;
	}
	for (i = 0; i < u->who.nkeys; i++)
		bytes += strlen(u->who.keys[i]) + 1;
	for (i = 0; i < u->who.nclasses; i++)
		bytes += strlen(u->who.classes[i]) + 1;
	if (!(p = malloc(sizeof(*p) + bytes)))
		return FG_ENOMEM;
	p->u = *u;
	p->seq = m->seq++;
	at = p->text;
	for (i = 0; i < u->who.nkeys; i++)
		p->keys[i] = copy_str(&at, u->who.keys[i]);
	for (i = 0; i < u->who.nclasses; i++) {
		p->classes[i] = copy_str(&at, u->who.classes[i]);
		p->counts[i] = u->counts[i];
	}
	p->u.who.keys = p->keys;
	p->u.who.classes = p->classes;
	p->u.counts = p->counts;
	m->pending[m->npending] = p;
	heap_up(m->pending, m->npending++);
	return 0;
}

/* The held updates of calls that ended by <now_ms>, in the order they
 * ended, each at its own end's time (expiries count from it, as Redis
 * counts them from when the script runs). */
static void apply_due(struct fg_state_mem *m, int64_t now_ms)
{
	while (m->npending && m->pending[0]->u.end_ms <= now_ms) {
		struct mem_pending *p = m->pending[0];
		m->pending[0] = m->pending[--m->npending];
		heap_down(m->pending, m->npending, 0);
		if (p->u.end_ms > m->now_ms)
			m->now_ms = p->u.end_ms;
		(void)apply_update(m, &p->u);   /* no room: counted in <full> (make_room) */
		free(p);
	}
}

static int mem_update(struct fg_state *s, const struct fg_state_update *u, fg_state_done_cb *cb, void *arg)
{
	struct fg_state_mem *m = mem_of(s);
	int rc;

	if (failing(m, FG_STATE_MEM_FAIL_UPDATE, &rc)) {
		if (refused(rc))
			return rc;
		cb(arg, rc);
		return 0;
	}
	/* Held until the call's end when deferring (and there is room to
	 * hold it): a call of the same user that starts before then must not
	 * see it, as in Redis it has not arrived yet. */
	if (m->max_pending && u->end_ms > m->now_ms && m->npending < m->max_pending) {
		rc = defer_update(m, u);
	} else {
		m->not_held += m->max_pending && u->end_ms > m->now_ms;
		rc = apply_update(m, u);
	}
	if (rc == FG_ENOMEM)
		return rc;
	cb(arg, rc);
	return 0;
}

/* --- erase, new, free ------------------------------------------------- */

static int mem_erase(struct fg_state *s, const struct fg_state_who *who, fg_state_done_cb *cb, void *arg)
{
	struct fg_state_mem *m = mem_of(s);
	char key[KEY_MAX];

	for (size_t i = 0; i < who->nkeys; i++) {
		struct mem_rec **slot;
		make_key(m, who->keys[i], key);
		slot = slot_find(m, key);
		if (slot)
			slot_remove(m, slot);
	}
	cb(arg, 0);
	return 0;
}

static void mem_free(struct fg_state *s)
{
	struct fg_state_mem *m = mem_of(s);

	for (size_t i = 0; i < m->nbuckets; i++)
		while (m->buckets[i])
			slot_remove(m, &m->buckets[i]);
	for (size_t i = 0; i < m->npending; i++)
		free(m->pending[i]);
	free(m->pending);
	free(m->buckets);
	free(m);
}

static const struct fg_state_ops mem_ops = {
	.name = "memory",
	.read = mem_read,
	.update = mem_update,
	.erase = mem_erase,
	.free = mem_free,
};

int fg_state_mem_new(struct fg_state **out, const char *prefix, size_t max_records)
{
	struct fg_state_mem *m;

	if (!prefix)
		prefix = FG_STATE_DEFAULT_PREFIX;
	if (strlen(prefix) > FG_STATE_PREFIX_MAX || strpbrk(prefix, "{}"))
		return FG_EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return FG_ENOMEM;
	m->nbuckets = INITIAL_BUCKETS;
	m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
	if (!m->buckets) {
		free(m);
		return FG_ENOMEM;
	}
	m->base.ops = &mem_ops;
	m->max_records = max_records ? max_records : FG_STATE_MEM_DEFAULT_MAX_RECORDS;
	snprintf(m->prefix, sizeof(m->prefix), "%s", prefix);
	*out = &m->base;
	return 0;
}

void fg_state_mem_set_now(struct fg_state *s, int64_t now_ms)
{
	if (!s || s->ops != &mem_ops)
		return;
	apply_due(mem_of(s), now_ms);
	mem_of(s)->now_ms = now_ms;
}

void fg_state_mem_defer(struct fg_state *s, size_t max_pending)
{
	if (s && s->ops == &mem_ops)
		mem_of(s)->max_pending = max_pending;
}

void fg_state_mem_fail(struct fg_state *s, int rc, unsigned ops)
{
	if (s && s->ops == &mem_ops) {
		mem_of(s)->fail_rc = rc;
		mem_of(s)->fail_ops = rc ? ops : 0;
	}
}

uint64_t fg_state_mem_not_held(struct fg_state *s)
{
	return s && s->ops == &mem_ops ? mem_of(s)->not_held : 0;
}

uint64_t fg_state_mem_full(struct fg_state *s)
{
	return s && s->ops == &mem_ops ? mem_of(s)->full : 0;
}
