/*
 * fg_limits.c - screen-time decisions (fg_limits.h): README, "Policy:
 * screen time, breaks, quiet hours and exposure".
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fg_fmt.h"
#include "fg_limits.h"
#include "fg_tz.h"

#define MS_PER_S 1000
#define MS_PER_MIN 60000

static const char *const notice_names[FG_POLICY_NNOTICES] = {
	[FG_POLICY_N_DAILY_LIMIT] = "daily-limit",
	[FG_POLICY_N_QUIET_HOURS] = "quiet-hours",
	[FG_POLICY_N_TAKE_A_BREAK] = "take-a-break",
	[FG_POLICY_N_EXPOSURE_LIMIT] = "exposure-limit",
	[FG_POLICY_N_DAILY_LIMIT_SOON] = "daily-limit-soon",
	[FG_POLICY_N_QUIET_HOURS_SOON] = "quiet-hours-soon",
};

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* UTC ms at which the wall clock of <tz> reads <wall_s> on local day <day>. */
static int64_t wall_ms(const struct fg_tz *tz, int64_t day, int32_t wall_s)
{
	return fg_tz_wall_to_utc(tz, day, wall_s) * MS_PER_S;
}

/* The night <now> is in or, outside quiet hours, the next one.  A night
 * is named by the day its quiet hours begin. */
static void find_night(const struct fg_policy_limits *l, const struct fg_tz *tz, struct fg_limits_clock *c)
{
	int64_t d = c->day, from, to;

	if (l->quiet_from_s > l->quiet_to_s) {
		/* Spans midnight: the night that began yesterday may not be over. */
		to = wall_ms(tz, d, l->quiet_to_s);
		if (c->now_ms < to) {
			c->night = d - 1;
			c->quiet_from_ms = wall_ms(tz, d - 1, l->quiet_from_s);
			c->quiet_to_ms = to;
			c->in_quiet = c->now_ms >= c->quiet_from_ms;
			return;
		}
		from = wall_ms(tz, d, l->quiet_from_s);
		to = wall_ms(tz, d + 1, l->quiet_to_s);
	} else {
		from = wall_ms(tz, d, l->quiet_from_s);
		to = wall_ms(tz, d, l->quiet_to_s);
		if (c->now_ms >= to) {
			d++;
			from = wall_ms(tz, d, l->quiet_from_s);
			to = wall_ms(tz, d, l->quiet_to_s);
		}
	}
	c->night = d;
	c->quiet_from_ms = from;
	c->quiet_to_ms = to;
	c->in_quiet = c->now_ms >= from && c->now_ms < to;
}

void fg_limits_clock(const struct fg_policy_limits *l, const struct fg_tz *tz, int64_t now_ms,
                     struct fg_limits_clock *out)
{
	struct fg_tz_local loc;
	int64_t s = now_ms >= 0 ? now_ms / MS_PER_S : -((-now_ms + MS_PER_S - 1) / MS_PER_S);

	memset(out, 0, sizeof(*out));
	fg_tz_local(tz, s, &loc);
	out->now_ms = now_ms;
	out->day = loc.day_number;
	out->day_start_ms = loc.day_start * MS_PER_S;
	out->next_day_ms = loc.next_day_start * MS_PER_S;
	if (l->quiet_on)
		find_night(l, tz, out);
}

/* A rule fired: its notice, and its action if stronger than the ones
 * before (the order of the calls is daily, quiet hours, break). */
static void fire(struct fg_limits_verdict *v, unsigned rule, unsigned action, unsigned notice)
{
	v->notices |= 1u << notice;
	if (action > v->action) {
		v->action = (uint8_t)action;
		v->rule = (uint8_t)rule;
	}
}

static void add_event(struct fg_limits_verdict *v, int64_t at, unsigned rule, unsigned action, unsigned notice)
{
	struct fg_limits_event e = { at, (uint8_t)rule, (uint8_t)action, (uint8_t)notice };
	size_t i = v->nevents++;

	while (i > 0 && v->events[i - 1].at_ms > at) {
		v->events[i] = v->events[i - 1];
		i--;
	}
	v->events[i] = e;
}

static void decide_daily(const struct fg_policy_limits *l, const struct fg_limits_clock *c, struct fg_limits_verdict *v)
{
	if (!l->daily_cap_ms)
		return;
	v->left_ms = max64(0, l->daily_cap_ms - v->used_ms);
	if (v->used_ms >= l->daily_cap_ms) {
		fire(v, FG_POLICY_R_DAILY, l->daily_action, FG_POLICY_N_DAILY_LIMIT);
		return;
	}
	if (l->daily_warn_ms && v->left_ms <= l->daily_warn_ms)
		v->notices |= 1u << FG_POLICY_N_DAILY_LIMIT_SOON;
	/* Continued use spends the rest before midnight, or not today. */
	if (c->now_ms + v->left_ms < c->next_day_ms)
		add_event(v, c->now_ms + v->left_ms, FG_POLICY_R_DAILY, l->daily_action, FG_POLICY_N_DAILY_LIMIT);
}

static void decide_quiet(const struct fg_policy_limits *l, const struct fg_limits_clock *c, int64_t quiet_used,
                         struct fg_limits_verdict *v)
{
	int64_t in;

	if (!l->quiet_on)
		return;
	if (c->in_quiet) {
		if (quiet_used >= l->quiet_allowance_ms) {
			/* the app can say the allowance is spent, not only that it is night */
			if (l->quiet_allowance_ms > 0)
				v->quiet_left_ms = 0;
			fire(v, FG_POLICY_R_QUIET, l->quiet_action, FG_POLICY_N_QUIET_HOURS);
			return;
		}
		v->notices |= 1u << FG_POLICY_N_QUIET_HOURS;
		v->quiet_left_ms = l->quiet_allowance_ms - quiet_used;
		/* Only if the allowance runs out before the night does: an open
		 * stream is not ended in the morning by quiet hours that are over. */
		if (c->now_ms + v->quiet_left_ms < c->quiet_to_ms)
			add_event(v, c->now_ms + v->quiet_left_ms, FG_POLICY_R_QUIET, l->quiet_action,
			          FG_POLICY_N_QUIET_HOURS);
		return;
	}
	in = c->quiet_from_ms - c->now_ms;
	if (l->quiet_warn_ms && in <= l->quiet_warn_ms) {
		v->notices |= 1u << FG_POLICY_N_QUIET_HOURS_SOON;
		v->quiet_in_ms = in;
	}
	if (c->quiet_from_ms + l->quiet_allowance_ms < c->quiet_to_ms)
		add_event(v, c->quiet_from_ms + l->quiet_allowance_ms, FG_POLICY_R_QUIET, l->quiet_action,
		          FG_POLICY_N_QUIET_HOURS);
}

static void decide_break(const struct fg_policy_limits *l, const struct fg_limits_clock *c, struct fg_limits_verdict *v)
{
	if (!l->break_after_ms)
		return;
	if (v->session_ms >= l->break_after_ms) {
		fire(v, FG_POLICY_R_BREAK, l->break_action, FG_POLICY_N_TAKE_A_BREAK);
		return;
	}
	add_event(v, c->now_ms + l->break_after_ms - v->session_ms, FG_POLICY_R_BREAK, l->break_action,
	          FG_POLICY_N_TAKE_A_BREAK);
}

static void decide_exposure(const struct fg_policy_limits *l, const struct fg_limits_clock *c,
                            const struct fg_state_user *u, struct fg_limits_verdict *v)
{
	int today = u->found && u->day >= c->day;
	size_t k;

	for (k = 0; k < l->ncounters; k++) {
		uint64_t got = today ? u->exposure[k] : 0;
		v->left[k] = got >= l->per_day[k] ? 0 : (uint32_t)(l->per_day[k] - got);
		if (v->left[k] == 0)
			v->notices |= 1u << FG_POLICY_N_EXPOSURE_LIMIT;
	}
}

void fg_limits_decide(const struct fg_policy_limits *l, const struct fg_limits_clock *c,
                      const struct fg_state_user *u, struct fg_limits_verdict *v)
{
	int64_t now = c->now_ms, quiet_used = 0;
	int continuing = u->found && u->last_ms > 0 && now - u->last_ms <= l->idle_gap_ms;

	memset(v, 0, sizeof(*v));
	v->left_ms = -1;
	v->quiet_in_ms = -1;
	v->quiet_left_ms = -1;
	/* The gap since the last call is use when it is short: the update
	 * will count it, so the decision does too.  A record of a later day
	 * or night (another zone of time_zones, whose date is ahead) is the
	 * current one: the update counts into it, and switching zones must
	 * not restart the counters (fg_state.h, steps 2 and 3). */
	if (u->found && u->day >= c->day)
		v->used_ms = u->active_ms;
	if (u->found && u->night >= c->night)
		quiet_used = u->quiet_ms;
	if (continuing) {
		v->session_ms = max64(0, now - u->session_start_ms);
		v->used_ms += max64(0, now - max64(u->last_ms, c->day_start_ms));
		if (c->in_quiet)
			quiet_used += max64(0, now - max64(u->last_ms, c->quiet_from_ms));
	}
	decide_daily(l, c, v);
	decide_quiet(l, c, quiet_used, v);
	decide_break(l, c, v);
	decide_exposure(l, c, u, v);
}

void fg_limits_update(const struct fg_policy_limits *l, const struct fg_limits_clock *end, int64_t start_ms,
                      struct fg_state_update *u)
{
	int64_t until = end->next_day_ms;

	u->start_ms = start_ms;
	u->end_ms = end->now_ms;
	u->idle_gap_ms = l->idle_gap_ms;
	u->day = end->day;
	u->day_start_ms = end->day_start_ms;
	u->night = end->night;
	u->quiet_from_ms = end->quiet_from_ms;
	u->quiet_to_ms = end->quiet_to_ms;
	if (l->quiet_on && end->quiet_to_ms > until)
		until = end->quiet_to_ms;
	/* Until the day (or the night) it counts ends, and the idle gap
	 * after it, in which a session may still go on. */
	u->ttl_ms = max64(1, until - end->now_ms) + l->idle_gap_ms;
}

int64_t fg_limits_minutes_used(int64_t ms)
{
	return ms > 0 ? ms / MS_PER_MIN : 0;
}

int64_t fg_limits_minutes_left(int64_t ms)
{
	return ms > 0 ? ms / MS_PER_MIN + (ms % MS_PER_MIN != 0) : 0;
}

static long minutes(int64_t ms)
{
	return (long)fg_limits_minutes_used(ms);
}

/* Append "<name><min>" at <at> of <buf>; the new end, or <len> when it
 * does not fit.  Called on every limited call: no printf. */
static size_t put_minutes(char *buf, size_t len, size_t at, const char *name, int64_t min)
{
	char num[FG_FMT_I64_MAX];
	size_t n = strlen(name), d = fg_fmt_i64(num, min);

	if (at >= len || len - at <= n + d)
		return len;
	memcpy(buf + at, name, n);
	memcpy(buf + at + n, num, d + 1);
	return at + n + d;
}

int fg_limits_screen_time(const struct fg_limits_verdict *v, char *buf, size_t len)
{
	size_t at = put_minutes(buf, len, 0, "used=", fg_limits_minutes_used(v->used_ms));

	if (v->left_ms >= 0)
		at = put_minutes(buf, len, at, ",left=", fg_limits_minutes_left(v->left_ms));
	at = put_minutes(buf, len, at, ",session=", fg_limits_minutes_used(v->session_ms));
	if (v->quiet_in_ms >= 0)
		at = put_minutes(buf, len, at, ",quiet_in=", fg_limits_minutes_left(v->quiet_in_ms));
	if (v->quiet_left_ms >= 0)
		at = put_minutes(buf, len, at, ",quiet_left=", fg_limits_minutes_left(v->quiet_left_ms));
	return at < len ? (int)at : -1;
}

int fg_limits_notices(unsigned notices, char *buf, size_t len)
{
	size_t at = 0, n;
	unsigned i;

	if (len == 0)
		return -1;
	buf[0] = '\0';
	for (i = 0; i < FG_POLICY_NNOTICES; i++) {
		if (!(notices >> i & 1))
			continue;
		n = strlen(notice_names[i]);
		if (at + (at > 0) + n + 1 > len)
			return -1;
		if (at > 0)
			buf[at++] = ',';
		memcpy(buf + at, notice_names[i], n + 1);
		at += n;
	}
	return (int)at;
}

const char *fg_limits_notice_name(unsigned n)
{
	return n < FG_POLICY_NNOTICES ? notice_names[n] : "";
}

/* "a 5-minute break", or seconds for an idle gap under a minute. */
static const char *break_length(int64_t ms, char *buf, size_t len)
{
	if (ms >= MS_PER_MIN && ms % MS_PER_MIN == 0)
		snprintf(buf, len, "%ld-minute", minutes(ms));
	else
		snprintf(buf, len, "%ld-second", (long)(ms / MS_PER_S));
	return buf;
}

int fg_limits_message(const struct fg_policy_limits *l, const struct fg_limits_verdict *v, unsigned rule,
                      const char *zone, char *buf, size_t len)
{
	char gap[32];
	int n;

	switch (rule) {
	case FG_POLICY_R_DAILY:
		n = snprintf(buf, len, "daily feed time limit reached: %ld of %ld minutes used today (resets at "
		             "midnight, %s)", minutes(v->used_ms), minutes(l->daily_cap_ms), zone);
		break;
	case FG_POLICY_R_QUIET:
		n = snprintf(buf, len, "quiet hours until %02d:%02d (%s)", l->quiet_to_s / 3600, l->quiet_to_s / 60 % 60,
		             zone);
		break;
	case FG_POLICY_R_BREAK:
		n = snprintf(buf, len, "time for a break: %ld minutes of continuous use (back after a %s break)",
		             minutes(v->session_ms), break_length(l->idle_gap_ms, gap, sizeof(gap)));
		break;
	default:
		n = snprintf(buf, len, "screen-time state unavailable, try again later");
		break;
	}
	return n >= 0 && (size_t)n < len ? n : -1;
}
