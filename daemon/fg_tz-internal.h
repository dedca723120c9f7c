/*
 * fg_tz-internal.h - what fg_tz.c (TZif files, lookups) and fg_tz_rule.c
 * (POSIX TZ strings, the proleptic Gregorian calendar) share.  Not for
 * other modules: they use fg_tz.h.
 */
#ifndef FG_TZ_INTERNAL_H
#define FG_TZ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fg_tz.h"

/*
 * A UTC offset is at most 24:59:59 either way: POSIX's limit for a TZ
 * string, and beyond every offset tzdata has ever had (LMT included).
 */
#define FG_TZ_OFFSET_MAX (24 * 3600 + 59 * 60 + 59)
/* RFC 8536 3.3.1: v3+ rule times run from -167h to +167h; v2 from 0 to 24h. */
#define FG_TZ_RULE_HOURS_V3 167
#define FG_TZ_RULE_HOURS_V2 24
#define FG_TZ_HOUR 3600
#define FG_TZ_EPOCH_WEEKDAY 4          /* 1970-01-01 was a Thursday */

/* The date of a POSIX rule (POSIX XBD 8.3, "rule"). */
enum fg_tz_date_kind {
	FG_TZ_DATE_JULIAN1,     /* Jn: day 1..365, February 29 never counted */
	FG_TZ_DATE_JULIAN0,     /* n: day 0..365, February 29 counted */
	FG_TZ_DATE_MWD,         /* Mm.w.d: weekday d of week w (5: last) of month m */
};

struct fg_tz_date {
	enum fg_tz_date_kind kind;
	int day;                /* Jn, n: the day; Mm.w.d: weekday d, 0 Sunday */
	int week;               /* Mm.w.d: 1..5 */
	int month;              /* Mm.w.d: 1..12 */
	int32_t time;           /* seconds after local midnight the change happens (default 02:00) */
};

/* A parsed POSIX TZ string: "std offset [dst [offset] ,start[/time],end[/time]]". */
struct fg_tz_rule {
	char std_abbr[FG_TZ_ABBR_MAX + 1];
	char dst_abbr[FG_TZ_ABBR_MAX + 1];
	int32_t std_off;        /* seconds east of UTC (the string says west: sign flipped) */
	int32_t dst_off;
	int has_dst;            /* 0: std all the time, the rest is unused */
	struct fg_tz_date start;        /* into DST, in standard local time */
	struct fg_tz_date end;          /* out of DST, in DST local time */
};

/* The time type in effect from an instant up to (not including) <end>. */
struct fg_tz_seg {
	int32_t utoff;          /* seconds east of UTC */
	int isdst;
	const char *abbr;       /* borrowed from the zone */
	int64_t end;            /* > the instant looked up; the type may go on past it */
};

/*
 * fg_tz_rule_parse - parse the <len> bytes at <s> (no NUL needed) into
 * <out>.  <hours_max> is FG_TZ_RULE_HOURS_V2 (no sign, 0..24) or _V3.
 * Returns 0 or FG_EINVAL with <*why> (static text) and <*at> (byte offset).
 */
int fg_tz_rule_parse(const char *s, size_t len, int hours_max, struct fg_tz_rule *out, const char **why,
                     size_t *at);

/* fg_tz_rule_at - the type <rule> gives instant <t> (|t| <= ~FG_TZ_TIME_LIMIT). */
void fg_tz_rule_at(const struct fg_tz_rule *rule, int64_t t, struct fg_tz_seg *seg);

/* Days since 1970-01-01 of proleptic Gregorian <y>-<m>-<d>, and back. */
int64_t fg_tz_days_from_civil(int64_t y, int m, int d);
void fg_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

/* Floor division and its remainder (0 <= r < <b>), for instants before 1970. */
static inline int64_t fg_tz_floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b < 0) ? q - 1 : q;
}

static inline int64_t fg_tz_floor_mod(int64_t a, int64_t b)
{
	return a - fg_tz_floor_div(a, b) * b;
}

#endif /* FG_TZ_INTERNAL_H */
