/*
 * fg_tz_rule.c - POSIX TZ strings (the TZif footer): parsing, and the time
 * type a rule gives an instant.  Pure computation on the proleptic
 * Gregorian calendar; no libc time functions.
 *
 * Grammar (POSIX XBD 8.3; RFC 8536 3.3.1 for the v3 extensions):
 *   std offset [dst [offset] ,start[/time],end[/time]]
 *   std, dst: 3+ letters, or <3+ of [A-Za-z0-9+-]>
 *   offset:   [+-]hh[:mm[:ss]], hh 0..24, positive WEST of UTC
 *   start, end: Jn (1..365, no Feb 29) | n (0..365) | Mm.w.d
 *   time:     [+-]hh[:mm[:ss]], hh 0..167 (v3+; v2: no sign, 0..24)
 * A DST zone without its rule is refused: POSIX leaves the default to the
 * implementation, and zic always writes the rule.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fg_error.h"
#include "fg_tz-internal.h"

#define ABBR_MIN 3                       /* POSIX: a name has at least 3 characters */
#define NUM_DIGITS_MAX 3                 /* "167" */
#define DST_DEFAULT_SHIFT FG_TZ_HOUR     /* POSIX: DST is one hour ahead when not given */
#define RULE_TIME_DEFAULT (2 * FG_TZ_HOUR)

#define YEARS_AROUND 2                   /* years each side searched for a rule's changes */
#define CHANGES_MAX (2 * (2 * YEARS_AROUND + 1))

/* A cursor over the string being parsed. */
struct cur {
	const char *s;
	size_t len;
	size_t pos;
	const char *why;        /* set at the first error */
};

static int peek(const struct cur *c)
{
	return c->pos < c->len ? (unsigned char)c->s[c->pos] : -1;
}

static int fail(struct cur *c, const char *why)
{
	if (!c->why)
		c->why = why;
	return FG_EINVAL;
}

static int is_alpha(int ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static int is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* An unsigned number of 1..NUM_DIGITS_MAX digits, at most <max>. */
static int read_num(struct cur *c, int max, int *out)
{
	int n = 0, digits = 0;

	while (is_digit(peek(c))) {
		if (++digits > NUM_DIGITS_MAX)
			return fail(c, "number too long");
		n = n * 10 + (peek(c) - '0');
		c->pos++;
	}
	if (digits == 0)
		return fail(c, "digit expected");
	if (n > max)
		return fail(c, "number out of range");
	*out = n;
	return 0;
}

/* std or dst: letters, or <...> of letters, digits, '+' and '-'. */
static int read_abbr(struct cur *c, char *out)
{
	int quoted = peek(c) == '<';
	size_t n = 0;
	int ch;

	if (quoted)
		c->pos++;
	while ((ch = peek(c)) >= 0 && (is_alpha(ch) || (quoted && (is_digit(ch) || ch == '+' || ch == '-')))) {
		if (n == FG_TZ_ABBR_MAX)
			return fail(c, "abbreviation too long");
		out[n++] = (char)ch;
		c->pos++;
	}
	out[n] = '\0';
	if (n < ABBR_MIN)
		return fail(c, "abbreviation of at least 3 characters expected");
	if (quoted && peek(c) != '>')
		return fail(c, "'>' expected");
	c->pos += (size_t)quoted;
	return 0;
}

/* [+-]hh[:mm[:ss]] in seconds; a sign only when <signed_ok>. */
static int read_hms(struct cur *c, int hours_max, int signed_ok, int32_t *out)
{
	int sign = 1, h, m = 0, s = 0;

	if (peek(c) == '+' || peek(c) == '-') {
		if (!signed_ok)
			return fail(c, "no sign allowed here before TZif v3");
		sign = peek(c) == '-' ? -1 : 1;
		c->pos++;
	}
	if (read_num(c, hours_max, &h) < 0)
		return FG_EINVAL;
	if (peek(c) == ':') {
		c->pos++;
		if (read_num(c, 59, &m) < 0)
			return FG_EINVAL;
		if (peek(c) == ':') {
			c->pos++;
			if (read_num(c, 59, &s) < 0)
				return FG_EINVAL;
		}
	}
	*out = sign * (h * FG_TZ_HOUR + m * 60 + s);
	return 0;
}

/* An offset as written (west positive) into seconds east of UTC. */
static int read_offset(struct cur *c, int32_t *east)
{
	int32_t west;

	if (read_hms(c, FG_TZ_RULE_HOURS_V2, 1, &west) < 0)
		return FG_EINVAL;
	*east = -west;
	return 0;
}

static int read_mwd(struct cur *c, struct fg_tz_date *d)
{
	d->kind = FG_TZ_DATE_MWD;
	if (read_num(c, 12, &d->month) < 0 || d->month < 1)
		return fail(c, "month 1..12 expected");
	if (peek(c) != '.')
		return fail(c, "'.' expected");
	c->pos++;
	if (read_num(c, 5, &d->week) < 0 || d->week < 1)
		return fail(c, "week 1..5 expected");
	if (peek(c) != '.')
		return fail(c, "'.' expected");
	c->pos++;
	return read_num(c, 6, &d->day);
}

/* ",date[/time]" */
static int read_date(struct cur *c, int hours_max, struct fg_tz_date *d)
{
	int rc;

	if (peek(c) != ',')
		return fail(c, "',' and a rule date expected");
	c->pos++;
	if (peek(c) == 'M') {
		c->pos++;
		rc = read_mwd(c, d);
	} else if (peek(c) == 'J') {
		c->pos++;
		d->kind = FG_TZ_DATE_JULIAN1;
		rc = read_num(c, 365, &d->day);
		if (rc == 0 && d->day < 1)
			rc = fail(c, "J1..J365 expected");
	} else {
		d->kind = FG_TZ_DATE_JULIAN0;
		rc = read_num(c, 365, &d->day);
	}
	if (rc < 0)
		return rc;
	d->time = RULE_TIME_DEFAULT;
	if (peek(c) != '/')
		return 0;
	c->pos++;
	return read_hms(c, hours_max, hours_max > FG_TZ_RULE_HOURS_V2, &d->time);
}

/* dst [offset] ,start[/time],end[/time] */
static int read_dst(struct cur *c, int hours_max, struct fg_tz_rule *r)
{
	if (read_abbr(c, r->dst_abbr) < 0)
		return FG_EINVAL;
	r->has_dst = 1;
	r->dst_off = r->std_off + DST_DEFAULT_SHIFT;
	if (peek(c) != ',' && peek(c) >= 0 && read_offset(c, &r->dst_off) < 0)
		return FG_EINVAL;
	/* the default (std + 1h) can go past the bound every offset keeps */
	if (r->dst_off > FG_TZ_OFFSET_MAX)
		return fail(c, "DST offset beyond 24:59:59");
	if (peek(c) < 0)
		return fail(c, "a zone with DST must give its rule");
	if (read_date(c, hours_max, &r->start) < 0 || read_date(c, hours_max, &r->end) < 0)
		return FG_EINVAL;
	return 0;
}

int fg_tz_rule_parse(const char *s, size_t len, int hours_max, struct fg_tz_rule *out, const char **why,
                     size_t *at)
{
	struct cur c = { .s = s, .len = len };
	int rc;

	memset(out, 0, sizeof(*out));
	rc = read_abbr(&c, out->std_abbr);
	if (rc == 0)
		rc = read_offset(&c, &out->std_off);
	if (rc == 0 && peek(&c) >= 0)
		rc = read_dst(&c, hours_max, out);
	if (rc == 0 && peek(&c) >= 0)
		rc = fail(&c, "unexpected character");
	if (rc < 0) {
		*why = c.why;
		*at = c.pos;
	}
	return rc;
}

/* Howard Hinnant's days_from_civil: exact for any int64 year in range. */
int64_t fg_tz_days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = fg_tz_floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void fg_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
	int64_t z = days + 719468;
	int64_t era = fg_tz_floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;

	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return days[m - 1] + (m == 2 && is_leap(y));
}

/* The local date (days since 1970-01-01) <d> falls on in year <y>. */
static int64_t rule_day(const struct fg_tz_date *d, int64_t y)
{
	int64_t jan1 = fg_tz_days_from_civil(y, 1, 1), first;
	int off;

	switch (d->kind) {
	case FG_TZ_DATE_JULIAN1:
		return jan1 + d->day - 1 + (is_leap(y) && d->day >= 60);
	case FG_TZ_DATE_JULIAN0:
		return jan1 + d->day;
	case FG_TZ_DATE_MWD:
		break;
	}
	first = fg_tz_days_from_civil(y, d->month, 1);
	off = (int)fg_tz_floor_mod(d->day - (first + FG_TZ_EPOCH_WEEKDAY), 7) + (d->week - 1) * 7;
	while (off >= month_days(y, d->month))
		off -= 7;
	return first + off;
}

/* A change of a rule: at UTC <at>, into DST or out of it. */
struct change {
	int64_t at;
	int isdst;
};

/*
 * The changes of year <y>, in tzcode's order (localtime.c tzparse): none
 * when DST covers the whole year.  Returns how many were added to <out>.
 */
static int year_changes(const struct fg_tz_rule *r, int64_t y, struct change *out)
{
	int64_t start = rule_day(&r->start, y) * FG_TZ_DAY + r->start.time - r->std_off;
	int64_t end = rule_day(&r->end, y) * FG_TZ_DAY + r->end.time - r->dst_off;
	int64_t year_secs = (365 + is_leap(y)) * (int64_t)FG_TZ_DAY;

	if (end < start) {
		out[0] = (struct change){ end, 0 };
		out[1] = (struct change){ start, 1 };
		return 2;
	}
	if (start < end && end - start < year_secs) {
		out[0] = (struct change){ start, 1 };
		out[1] = (struct change){ end, 0 };
		return 2;
	}
	return 0;
}

/* Insertion sort by time, stable: a tie keeps the later year's change last. */
static void sort_changes(struct change *ch, int n)
{
	for (int i = 1; i < n; i++) {
		struct change x = ch[i];
		int j = i;

		for (; j > 0 && ch[j - 1].at > x.at; j--)
			ch[j] = ch[j - 1];
		ch[j] = x;
	}
}

static void set_seg(const struct fg_tz_rule *r, int isdst, int64_t end, struct fg_tz_seg *seg)
{
	seg->isdst = isdst;
	seg->utoff = isdst ? r->dst_off : r->std_off;
	seg->abbr = isdst ? r->dst_abbr : r->std_abbr;
	seg->end = end;
}

/*
 * A change's year is at most 8 days (167 h + offsets) off its calendar
 * year, so the changes of the years around <t>'s tell its type and the
 * next change.  With none at or before <t> the rule is DST all year
 * (tzcode: "perpetual DST").  The segment ends at the next change, or at
 * the next New Year when none is near, and is looked up again from there.
 */
void fg_tz_rule_at(const struct fg_tz_rule *r, int64_t t, struct fg_tz_seg *seg)
{
	struct change ch[CHANGES_MAX];
	int64_t y, next_year;
	int n = 0, m, d, isdst = 1;
	int64_t end;

	fg_tz_civil_from_days(fg_tz_floor_div(t, FG_TZ_DAY), &y, &m, &d);
	next_year = fg_tz_days_from_civil(y + 1, 1, 1) * FG_TZ_DAY;
	if (!r->has_dst) {
		set_seg(r, 0, INT64_MAX, seg);
		return;
	}
	for (int64_t k = y - YEARS_AROUND; k <= y + YEARS_AROUND; k++)
		n += year_changes(r, k, ch + n);
	sort_changes(ch, n);
	end = next_year;
	for (int i = 0; i < n; i++) {
		if (ch[i].at <= t) {
			isdst = ch[i].isdst;
		} else {
			end = ch[i].at < end ? ch[i].at : end;
			break;
		}
	}
	set_seg(r, isdst, end, seg);
}
