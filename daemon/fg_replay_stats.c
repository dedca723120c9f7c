/*
 * fg_replay_stats.c - calls files and the summary of a replay.  See
 * fg_replay_stats.h.
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_error.h"
#include "fg_replay_stats.h"

#define MAX_NOTICES 16
#define MAX_GROUPS 1024                 /* policies x bands */
#define LINE_MAX_BYTES (64 * 1024)

static const char *const count_names[FG_REPLAY_NCOUNTS] = { "shown", "removed", "demoted", "limited", "surplus",
	                                                    "trimmed" };

/* --- a string-keyed map (open addressing) ------------------------------------ */

struct map {
	char **key;
	uint64_t *val;
	size_t cap, n;
};

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;    /* FNV-1a */

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ULL;
	return h;
}

static int map_grow(struct map *m)
{
	struct map g = { 0 };
	size_t i;

	g.cap = m->cap ? m->cap * 2 : 64;
	if (!(g.key = calloc(g.cap, sizeof(*g.key))) || !(g.val = calloc(g.cap, sizeof(*g.val)))) {
		free(g.key);
		return FG_ENOMEM;
	}
	for (i = 0; i < m->cap; i++) {
		size_t j;
		if (!m->key[i])
			continue;
		for (j = hash(m->key[i]) & (g.cap - 1); g.key[j]; j = (j + 1) & (g.cap - 1))
			;
		g.key[j] = m->key[i];
		g.val[j] = m->val[i];
	}
	g.n = m->n;
	free(m->key);
	free(m->val);
	*m = g;
	return 0;
}

/* The slot of <k>, made (value 0) when <add>; NULL when absent or no memory.
 * <*fresh> says whether it was made now. */
static uint64_t *map_at(struct map *m, const char *k, int add, int *fresh)
{
	size_t j;

	*fresh = 0;
	if (add && (m->n + 1) * 2 > m->cap && map_grow(m) < 0)
		return NULL;
	if (!m->cap)
		return NULL;
	for (j = hash(k) & (m->cap - 1); m->key[j]; j = (j + 1) & (m->cap - 1))
		if (strcmp(m->key[j], k) == 0)
			return &m->val[j];
	if (!add || !(m->key[j] = strdup(k)))
		return NULL;
	m->val[j] = 0;
	m->n++;
	*fresh = 1;
	return &m->val[j];
}

static void map_free(struct map *m)
{
	size_t i;

	for (i = 0; i < m->cap; i++)
		free(m->key[i]);
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof(*m));
}

/* --- the aggregation ------------------------------------------------------- */

struct cls {
	char name[64];
	uint64_t n[FG_REPLAY_NCOUNTS];
	uint32_t *shown;                /* per user-day of the group (index), items shown */
	size_t cap;
};

struct notice {
	char name[32];
	uint64_t calls;
	struct map users;               /* distinct users told it */
};

/* The notices in the README's order, strongest first. */
static const char *const notice_order[] = { "daily-limit", "quiet-hours", "take-a-break", "exposure-limit",
	                                    "daily-limit-soon", "quiet-hours-soon" };

static size_t notice_rank(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(notice_order) / sizeof(notice_order[0]); i++)
		if (strcmp(name, notice_order[i]) == 0)
			return i;
	return i;
}

static int notice_cmp(const void *a, const void *b)
{
	const struct notice *x = a, *y = b;
	size_t rx = notice_rank(x->name), ry = notice_rank(y->name);

	return rx != ry ? (rx < ry ? -1 : 1) : strcmp(x->name, y->name);
}

static int cls_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cls *)a)->name, ((const struct cls *)b)->name);
}

/* One policy and band. */
struct group {
	char policy[256], band[128];
	size_t column;                  /* the policy's column */
	uint64_t calls, answered, denied, empty, no_upstream, users;
	struct map userdays;            /* "user date" -> index */
	struct map user_set;
	struct cls *cls;
	size_t ncls;
	struct notice notice[MAX_NOTICES];
	size_t nnotices;
};

/* Call numbers read from calls files under one policy label, to refuse
 * counting a call twice (the same file given twice, or shards of two
 * runs): 8 bytes a call, sorted once at the end. */
struct seen_calls {
	char *policy;
	uint64_t *call;
	size_t n, cap;
};

struct fg_replay_stats {
	struct group *g[MAX_GROUPS];
	size_t n;
	char policies[8][256];          /* in the order first seen: the columns */
	size_t npolicies;
	struct seen_calls *seen;        /* summary: calls read, per policy label */
	size_t nseen;
};

struct fg_replay_stats *fg_replay_stats_new(void)
{
	return calloc(1, sizeof(struct fg_replay_stats));
}

static struct group *group_of(struct fg_replay_stats *s, const char *policy, const char *band)
{
	struct group *g;
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->g[i]->policy, policy) == 0 && strcmp(s->g[i]->band, band) == 0)
			return s->g[i];
	if (s->n == MAX_GROUPS || !(g = calloc(1, sizeof(*g))))
		return NULL;
	snprintf(g->policy, sizeof(g->policy), "%s", policy);
	snprintf(g->band, sizeof(g->band), "%s", band);
	s->g[s->n++] = g;
	for (i = 0; i < s->npolicies && strcmp(s->policies[i], policy) != 0; i++)
		;
	if (i == s->npolicies && i < 8)
		snprintf(s->policies[s->npolicies++], sizeof(s->policies[0]), "%s", policy);
	g->column = i;
	return g;
}

static struct cls *cls_of(struct group *g, const char *name)
{
	struct cls *c;
	size_t i;

	for (i = 0; i < g->ncls; i++)
		if (strcmp(g->cls[i].name, name) == 0)
			return &g->cls[i];
	if (!(c = realloc(g->cls, (g->ncls + 1) * sizeof(*c))))
		return NULL;
	g->cls = c;
	c = &g->cls[g->ncls++];
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	return c;
}

/* Items shown to user-day <ud> of class <c>. */
static int add_shown(struct cls *c, uint64_t ud, uint32_t n)
{
	if (ud >= c->cap) {
		size_t cap = c->cap ? c->cap : 64;
		uint32_t *v;
		while (cap <= ud)
			cap *= 2;
		if (!(v = realloc(c->shown, cap * sizeof(*v))))
			return FG_ENOMEM;
		memset(v + c->cap, 0, (cap - c->cap) * sizeof(*v));
		c->shown = v;
		c->cap = cap;
	}
	c->shown[ud] += n;
	return 0;
}

static int add_notices(struct group *g, const struct fg_replay_row *row)
{
	char buf[sizeof(row->notices)], *save = NULL, *t;
	int fresh;
	size_t i;

	snprintf(buf, sizeof(buf), "%s", row->notices);
	for (t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
		for (i = 0; i < g->nnotices && strcmp(g->notice[i].name, t) != 0; i++)
			;
		if (i == g->nnotices) {
			if (i == MAX_NOTICES)
				continue;
			snprintf(g->notice[g->nnotices++].name, sizeof(g->notice[0].name), "%s", t);
		}
		g->notice[i].calls++;
		if (row->user[0] && !map_at(&g->notice[i].users, row->user, 1, &fresh))
			return FG_ENOMEM;
	}
	return 0;
}

/* The date of <ms> in <tz> (NULL: UTC), "-" before the epoch or after
 * 9999-12-30 UTC (no zone makes that a five-digit year, which summary
 * would not read back). */
static void local_date(const struct fg_tz *tz, int64_t ms, char *out, size_t len)
{
	struct fg_tz_local l;
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || ms >= INT64_C(253402128000000)) {
		snprintf(out, len, "-");
	} else if (tz) {
		fg_tz_local(tz, ms / 1000, &l);
		snprintf(out, len, "%04lld-%02d-%02d", (long long)l.year, l.month, l.day);
	} else if (!gmtime_r(&t, &tm)) {
		snprintf(out, len, "-");
	} else {
		strftime(out, len, "%Y-%m-%d", &tm);
	}
}

int fg_replay_stats_add(struct fg_replay_stats *s, const struct fg_replay_row *row)
{
	struct group *g = group_of(s, row->policy, row->band);
	char ud[512];
	uint64_t *idx;
	size_t i, k;
	int fresh;

	if (!g)
		return FG_ENOMEM;
	g->calls++;
	g->answered += row->answered;
	g->denied += strcmp(row->action, "DENY") == 0;
	g->empty += strcmp(row->action, "EMPTY") == 0;
	g->no_upstream += row->no_upstream;
	if (row->user[0] && !map_at(&g->user_set, row->user, 1, &fresh))
		return FG_ENOMEM;
	/* A call without a user id belongs to no user-day (README): its items
	 * count in the class totals, not in anybody's exposure. */
	idx = NULL;
	if (row->user[0]) {
		snprintf(ud, sizeof(ud), "%s %s", row->user, row->date);
		if (!(idx = map_at(&g->userdays, ud, 1, &fresh)))
			return FG_ENOMEM;
		if (fresh)
			*idx = g->userdays.n - 1;
	}
	for (i = 0; i < row->nclasses; i++) {
		struct cls *c = cls_of(g, row->cls[i]);
		if (!c)
			return FG_ENOMEM;
		for (k = 0; k < FG_REPLAY_NCOUNTS; k++)
			c->n[k] += row->n[i][k];
		if (idx && add_shown(c, *idx, row->n[i][FG_REPLAY_SHOWN]) < 0)
			return FG_ENOMEM;
	}
	return add_notices(g, row);
}

/* --- rows --------------------------------------------------------------------- */

static const char *action_name(int a)
{
	static const char *const names[] = { "NONE", "NOTICE", "EMPTY", "DENY" };

	return a >= 0 && a < 4 ? names[a] : "NONE";
}

static size_t row_class(struct fg_replay_row *row, const char *name)
{
	size_t i;

	for (i = 0; i < row->nclasses; i++)
		if (strcmp(row->cls[i], name) == 0)
			return i;
	if (row->nclasses == FG_REPLAY_MAX_CLASSES)
		return FG_REPLAY_MAX_CLASSES - 1;       /* the rest share the last column */
	snprintf(row->cls[row->nclasses], sizeof(row->cls[0]), "%s", name);
	memset(row->n[row->nclasses], 0, sizeof(row->n[0]));
	return row->nclasses++;
}

void fg_replay_row_of(struct fg_replay_row *row, const char *policy, uint64_t n, const Feedguard__Capture__V1__Call *call,
                      unsigned no_upstream, const struct fg_tz *tz)
{
	const Feedguard__Capture__V1__Decisions *d = call->decisions;
	const Feedguard__Capture__V1__ScreenTime *st = d ? d->screen_time : NULL;
	size_t i, at = 0;

	memset(row, 0, offsetof(struct fg_replay_row, cls));
	row->policy = policy;
	row->call = n;
	row->time_ms = call->start_unix_ms;
	local_date(tz, row->time_ms, row->date, sizeof(row->date));
	row->user = call->user_key ? call->user_key : "";
	row->band = call->band ? call->band : "";
	row->method = call->method ? call->method : "";
	row->status = call->status;
	row->answered = call->answered_by_feedguard;
	row->action = action_name(st ? st->action : 0);
	row->no_upstream = no_upstream;
	for (i = 0; st && i < st->n_notices; i++) {
		int w = snprintf(row->notices + at, sizeof(row->notices) - at, "%s%s", at ? "|" : "", st->notices[i]);
		if (w < 0 || (size_t)w >= sizeof(row->notices) - at)
			break;
		at += (size_t)w;
	}
	for (i = 0; d && i < d->n_items; i++) {
		const Feedguard__Capture__V1__Item *it = d->items[i];
		size_t k = row_class(row, it->class_ && it->class_[0] ? it->class_ : "-");
		switch (it->fate) {
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__KEPT:
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__SURPLUS_END:
			row->n[k][FG_REPLAY_SHOWN]++;
			row->n[k][FG_REPLAY_DEMOTED] += it->demoted;
			break;
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__REMOVED: row->n[k][FG_REPLAY_REMOVED]++; break;
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__LIMITED: row->n[k][FG_REPLAY_LIMITED]++; break;
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__SURPLUS_DROPPED: row->n[k][FG_REPLAY_SURPLUS]++; break;
		case FEEDGUARD__CAPTURE__V1__ITEM__FATE__TRIMMED: row->n[k][FG_REPLAY_TRIMMED]++; break;
		default: break;
		}
	}
}

/* Bytes of the UTF-8 sequence whose lead byte is <c>, or 0 for a byte
 * that leads none (ASCII is 1). */
static size_t utf8_len(unsigned char c)
{
	return c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
}

void fg_replay_printable(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n, i;

	while (p && *p) {
		n = utf8_len(*p);
		for (i = 1; i < n && (p[i] & 0xc0) == 0x80; i++)
			;
		if (n == 0 || i < n) {
			/* not UTF-8: a raw C1 byte (0x80 to 0x9f; CSI is 0x9b) is a
			 * control on an 8-bit terminal */
			if (*p <= 0x9f)
				*p = '?';
			p++;
			continue;
		}
		/* C0, DEL, and C1 as UTF-8 (U+0080 to U+009F: C2 80 to C2 9F) */
		if ((n == 1 && (*p < 0x20 || *p == 0x7f)) || (n == 2 && p[0] == 0xc2 && p[1] <= 0x9f))
			for (i = 0; i < n; i++)
				p[i] = '?';
		p += n;
	}
}

/* A CSV field: quoted when it holds a comma, a quote or a line break. */
static void csv(FILE *out, const char *s)
{
	if (!strpbrk(s, ",\"\r\n")) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

/* A JSON string (the names here are the policy's and the capture's:
 * printable text; control bytes are escaped all the same). */
static void json(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(out, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, out);
	}
	fputc('"', out);
}

void fg_replay_row_header(FILE *out, enum fg_replay_format f)
{
	if (f == FG_REPLAY_CSV)
		fputs("policy,call,time_ms,date,user_key,band,method,status,answered,action,notices,no_upstream,class,"
		      "shown,removed,demoted,limited,surplus,trimmed\n", out);
}

static void csv_line(FILE *out, const struct fg_replay_row *row, const char *cls, const uint32_t *n)
{
	size_t k;

	csv(out, row->policy);
	fprintf(out, ",%llu,%lld,%s,", (unsigned long long)row->call, (long long)row->time_ms, row->date);
	csv(out, row->user);
	fputc(',', out);
	csv(out, row->band);
	fputc(',', out);
	csv(out, row->method);
	fprintf(out, ",%d,%u,%s,", row->status, row->answered, row->action);
	csv(out, row->notices);
	fprintf(out, ",%u,", row->no_upstream);
	csv(out, cls);
	for (k = 0; k < FG_REPLAY_NCOUNTS; k++)
		fprintf(out, ",%u", n[k]);
	fputc('\n', out);
}

int fg_replay_row_write(FILE *out, enum fg_replay_format f, const struct fg_replay_row *row)
{
	static const uint32_t zero[FG_REPLAY_NCOUNTS];
	size_t i, k;

	if (f == FG_REPLAY_CSV) {
		if (row->nclasses == 0)
			csv_line(out, row, "", zero);
		for (i = 0; i < row->nclasses; i++)
			csv_line(out, row, row->cls[i], row->n[i]);
		return ferror(out) ? -1 : 0;
	}
	fputs("{\"policy\":", out);
	json(out, row->policy);
	fprintf(out, ",\"call\":%llu,\"time_ms\":%lld,\"date\":\"%s\",\"user_key\":", (unsigned long long)row->call,
	        (long long)row->time_ms, row->date);
	json(out, row->user);
	fputs(",\"band\":", out);
	json(out, row->band);
	fputs(",\"method\":", out);
	json(out, row->method);
	fprintf(out, ",\"status\":%d,\"answered\":%s,\"action\":\"%s\",\"notices\":[", row->status,
	        row->answered ? "true" : "false", row->action);
	{
		char buf[sizeof(row->notices)], *save = NULL, *t;
		int first = 1;
		snprintf(buf, sizeof(buf), "%s", row->notices);
		for (t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save), first = 0) {
			if (!first)
				fputc(',', out);
			json(out, t);
		}
	}
	fprintf(out, "],\"no_upstream\":%s,\"classes\":{", row->no_upstream ? "true" : "false");
	for (i = 0; i < row->nclasses; i++) {
		if (i)
			fputc(',', out);
		json(out, row->cls[i]);
		fputs(":{", out);
		for (k = 0; k < FG_REPLAY_NCOUNTS; k++)
			fprintf(out, "%s\"%s\":%u", k ? "," : "", count_names[k], row->n[i][k]);
		fputc('}', out);
	}
	fputs("}}\n", out);
	return ferror(out) ? -1 : 0;
}

/* --- reading calls files back ---------------------------------------------------- */

/* Split CSV line <s> (modified in place) into at most <max> fields. */
static size_t split_csv(char *s, char **f, size_t max)
{
	size_t n = 0;
	char *w;

	while (n < max) {
		f[n++] = w = s;
		if (*s == '"') {
			for (s++; *s; s++) {
				if (*s == '"' && s[1] == '"')
					*w++ = '"', s++;
				else if (*s == '"')
					break;
				else
					*w++ = *s;
			}
			if (*s == '"')
				s++;
		} else {
			while (*s && *s != ',')
				*w++ = *s++;
		}
		if (*s != ',') {
			*w = '\0';
			break;
		}
		*w = '\0';
		s++;
	}
	return n;
}

#define NFIELDS 19

/* Call <call> of policy <policy> read from a calls file. */
static int note_call(struct fg_replay_stats *s, const char *policy, uint64_t call)
{
	struct seen_calls *c = NULL;
	size_t i;

	for (i = 0; i < s->nseen && !c; i++)
		if (strcmp(s->seen[i].policy, policy) == 0)
			c = &s->seen[i];
	if (!c) {
		struct seen_calls *v = realloc(s->seen, (s->nseen + 1) * sizeof(*v));
		if (!v)
			return FG_ENOMEM;
		s->seen = v;
		c = &v[s->nseen];
		memset(c, 0, sizeof(*c));
		if (!(c->policy = strdup(policy)))
			return FG_ENOMEM;
		s->nseen++;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 1024;
		uint64_t *v = realloc(c->call, cap * sizeof(*v));
		if (!v)
			return FG_ENOMEM;
		c->call = v;
		c->cap = cap;
	}
	c->call[c->n++] = call;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int fg_replay_stats_check_unique(struct fg_replay_stats *s, char *err, size_t errlen)
{
	size_t i, k;

	for (i = 0; i < s->nseen; i++) {
		struct seen_calls *c = &s->seen[i];
		qsort(c->call, c->n, sizeof(*c->call), cmp_u64);
		for (k = 1; k < c->n; k++)
			if (c->call[k] == c->call[k - 1]) {
				snprintf(err, errlen, "call %llu of policy %s is in the calls files twice (one file given "
				         "twice, shards of different runs, or runs of different captures: replay those in "
				         "one run): nothing counted", (unsigned long long)c->call[k], c->policy);
				return FG_EINVAL;
			}
	}
	return 0;
}

int fg_replay_stats_read_csv(struct fg_replay_stats *s, FILE *in, const char *name, char *err, size_t errlen)
{
	static char line[LINE_MAX_BYTES];
	struct fg_replay_row *row = calloc(1, sizeof(*row));
	char *f[NFIELDS + 1], last_key[512] = "", key[512];
	unsigned long lineno = 0;
	int rc = 0, have = 0;
	size_t k, n;

	/* what every failure without words of its own is */
	snprintf(err, errlen, "%s: out of memory", name);
	if (!row)
		return FG_ENOMEM;
	while (rc == 0 && fgets(line, sizeof(line), in)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (lineno == 1 && strncmp(line, "policy,call,", 12) == 0)
			continue;
		if ((n = split_csv(line, f, NFIELDS + 1)) != NFIELDS) {
			snprintf(err, errlen, "%s:%lu: %zu fields, not %d (is it a calls file of feedguard-replay run?)",
			         name, lineno, n, NFIELDS);
			rc = FG_EINVAL;
			break;
		}
		/* the rows of one call are consecutive: one row struct per call */
		snprintf(key, sizeof(key), "%s,%s", f[0], f[1]);
		if (have && strcmp(key, last_key) != 0) {
			rc = fg_replay_stats_add(s, row);
			have = 0;
		}
		if (!have) {
			static char strs[5][512];
			memset(row, 0, sizeof(*row));
			snprintf(strs[0], sizeof(strs[0]), "%s", f[0]);
			snprintf(strs[1], sizeof(strs[1]), "%s", f[4]);
			snprintf(strs[2], sizeof(strs[2]), "%s", f[5]);
			snprintf(strs[3], sizeof(strs[3]), "%s", f[6]);
			snprintf(strs[4], sizeof(strs[4]), "%s", f[9]);
			for (k = 0; k < 5; k++)
				fg_replay_printable(strs[k]);
			row->policy = strs[0];
			row->call = strtoull(f[1], NULL, 10);
			if ((rc = note_call(s, row->policy, row->call)) < 0) {
				snprintf(err, errlen, "%s:%lu: out of memory", name, lineno);
				break;
			}
			row->time_ms = strtoll(f[2], NULL, 10);
			/* the day as run wrote it (its zone is not in the file) */
			snprintf(row->date, sizeof(row->date), "%s",
			         strlen(f[3]) == 10 && strspn(f[3], "0123456789-") == 10 ? f[3] : "-");
			row->user = strs[1];
			row->band = strs[2];
			row->method = strs[3];
			row->status = atoi(f[7]);
			row->answered = (unsigned)atoi(f[8]);
			row->action = strs[4];
			snprintf(row->notices, sizeof(row->notices), "%s", f[10]);
			fg_replay_printable(row->notices);
			row->no_upstream = (unsigned)atoi(f[11]);
			snprintf(last_key, sizeof(last_key), "%s", key);
			have = 1;
		}
		if (f[12][0] && row->nclasses < FG_REPLAY_MAX_CLASSES) {
			k = row->nclasses++;
			snprintf(row->cls[k], sizeof(row->cls[0]), "%s", f[12]);
			fg_replay_printable(row->cls[k]);
			for (n = 0; n < FG_REPLAY_NCOUNTS; n++)
				row->n[k][n] = (uint32_t)strtoul(f[13 + n], NULL, 10);
		}
	}
	if (rc == 0 && have)
		rc = fg_replay_stats_add(s, row);
	free(row);
	return rc;
}

/* --- the summary --------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile <p> (0..100) of sorted <v>[0..n). */
static uint32_t pct(const uint32_t *v, size_t n, unsigned p)
{
	size_t r;

	if (n == 0)
		return 0;
	r = (size_t)((p * n + 99) / 100);
	return v[r ? r - 1 : 0];
}

static int group_cmp(const void *a, const void *b)
{
	const struct group *x = *(struct group *const *)a, *y = *(struct group *const *)b;
	int c = strcmp(x->band, y->band);

	return c ? c : x->column < y->column ? -1 : x->column > y->column;
}

static void print_exposure(FILE *out, const struct group *g, const struct cls *c)
{
	size_t n = g->userdays.n, i;
	uint32_t *v = calloc(n ? n : 1, sizeof(*v));

	if (!v) {
		fputs("     -     -     -      -", out);
		return;
	}
	for (i = 0; i < n && i < c->cap; i++)
		v[i] = c->shown[i];
	qsort(v, n, sizeof(*v), cmp_u32);
	fprintf(out, " %5u %5u %5u %6u", pct(v, n, 50), pct(v, n, 90), pct(v, n, 99), n ? v[n - 1] : 0);
	free(v);
}

void fg_replay_stats_print(FILE *out, struct fg_replay_stats *s)
{
	size_t i, j, k, p;

	/* bands in name order, each policy's group in column order; within a
	 * group, notices strongest first and classes by name: the same
	 * summary whatever order the calls came in (shards, files) */
	qsort(s->g, s->n, sizeof(s->g[0]), group_cmp);
	for (i = 0; i < s->n; i++) {
		/* qsort of a NULL array (a group with no class yet) is undefined */
		if (s->g[i]->nnotices > 1)
			qsort(s->g[i]->notice, s->g[i]->nnotices, sizeof(s->g[i]->notice[0]), notice_cmp);
		if (s->g[i]->ncls > 1)
			qsort(s->g[i]->cls, s->g[i]->ncls, sizeof(s->g[i]->cls[0]), cls_cmp);
	}
	fputs("calls by band\nband              policy  calls  users  answered  denied  empty  no_upstream\n", out);
	for (i = 0; i < s->n; i++) {
		const struct group *g = s->g[i];
		p = g->column;
		fprintf(out, "%-17s %-6c %6llu %6zu %9llu %7llu %6llu %12llu\n", g->band, (int)('A' + p),
		        (unsigned long long)g->calls, g->user_set.n, (unsigned long long)g->answered,
		        (unsigned long long)g->denied, (unsigned long long)g->empty, (unsigned long long)g->no_upstream);
	}
	fputs("\nnotices by band (calls told / users told)\nband              policy  notice                 calls  users\n",
	      out);
	for (i = 0; i < s->n; i++) {
		const struct group *g = s->g[i];
		p = g->column;
		for (j = 0; j < g->nnotices; j++)
			fprintf(out, "%-17s %-6c %-20s %7llu %6zu\n", g->band, (int)('A' + p), g->notice[j].name,
			        (unsigned long long)g->notice[j].calls, g->notice[j].users.n);
	}
	fputs("\nitems by band and class (exposure: items shown per user-day, percentiles over the band's "
	      "user-days)\nband              class                  policy   shown removed demoted limited surplus "
	      "trimmed   p50   p90   p99    max\n", out);
	for (i = 0; i < s->n; i++) {
		const struct group *g = s->g[i];
		p = g->column;
		for (j = 0; j < g->ncls; j++) {
			const struct cls *c = &g->cls[j];
			fprintf(out, "%-17s %-22s %-6c", g->band, c->name, (int)('A' + p));
			for (k = 0; k < FG_REPLAY_NCOUNTS; k++)
				fprintf(out, " %7llu", (unsigned long long)c->n[k]);
			print_exposure(out, g, c);
			fputc('\n', out);
		}
	}
}

void fg_replay_stats_free(struct fg_replay_stats *s)
{
	size_t i, j;

	if (!s)
		return;
	for (i = 0; i < s->n; i++) {
		struct group *g = s->g[i];
		for (j = 0; j < g->ncls; j++)
			free(g->cls[j].shown);
		free(g->cls);
		for (j = 0; j < g->nnotices; j++)
			map_free(&g->notice[j].users);
		map_free(&g->userdays);
		map_free(&g->user_set);
		free(g);
	}
	for (i = 0; i < s->nseen; i++) {
		free(s->seen[i].call);
		free(s->seen[i].policy);
	}
	free(s->seen);
	free(s);
}
