/*
 * test_limits.c - cmocka group "limits": fg_limits.h through its header.
 *
 * Each case is a band's rules, a user's state as read, and a time; it
 * asserts what the client would be told: the action, the notices, the
 * minutes in feedguard-screen-time, the deny message, and what the update
 * after the call writes.  Zones come from the system's zoneinfo
 * (Europe/London: its winter is UTC, its summer UTC+1), skipped with a
 * message when tzdata is missing.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fg_limits.h"
#include "fg_tz.h"

#define MIN (60 * 1000LL)
#define HOUR (60 * MIN)
/* 2026-01-15 00:00:00 UTC: a winter Thursday (London on GMT). */
#define WINTER_DAY_MS 1768435200000LL
/* 2026-07-15 00:00:00 UTC: a summer Wednesday (London on BST, UTC+1). */
#define SUMMER_DAY_MS 1784073600000LL

static struct fg_tz *london;

static int setup(void **state)
{
	char err[128];

	(void)state;
	if (access("/usr/share/zoneinfo/Europe/London", R_OK) != 0 && !getenv("TZDIR"))
		return 0;
	return fg_tz_load("Europe/London", &london, err, sizeof(err)) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	fg_tz_free(london);
	return 0;
}

/* The README's defaults, with every rule on. */
static struct fg_policy_limits defaults(void)
{
	struct fg_policy_limits l = { 0 };

	l.active = 1;
	l.idle_gap_ms = 5 * MIN;
	l.daily_cap_ms = 60 * MIN;
	l.daily_warn_ms = 10 * MIN;
	l.daily_action = FG_POLICY_ACT_NOTICE;
	l.break_after_ms = 60 * MIN;
	l.break_action = FG_POLICY_ACT_NOTICE;
	l.quiet_on = 1;
	l.quiet_from_s = 22 * 3600;
	l.quiet_to_s = 7 * 3600;
	l.quiet_warn_ms = 30 * MIN;
	l.quiet_action = FG_POLICY_ACT_NOTICE;
	return l;
}

#define NEED_LONDON() do { if (!london) { skip(); } } while (0)

static void decide(const struct fg_policy_limits *l, int64_t now, const struct fg_state_user *u,
                   struct fg_limits_verdict *v, struct fg_limits_clock *clk)
{
	fg_limits_clock(l, london, now, clk);
	fg_limits_decide(l, clk, u, v);
}

static const char *notices(const struct fg_limits_verdict *v)
{
	static char buf[256];

	assert_true(fg_limits_notices(v->notices, buf, sizeof(buf)) >= 0);
	return buf;
}

static const char *screen_time(const struct fg_limits_verdict *v)
{
	static char buf[256];

	assert_true(fg_limits_screen_time(v, buf, sizeof(buf)) > 0);
	return buf;
}

/* A first call at noon: nothing used, nothing to say but the figures. */
static void test_new_user(void **state)
{
	struct fg_policy_limits l = defaults();
	struct fg_state_user u = { 0 };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	decide(&l, WINTER_DAY_MS + 12 * HOUR, &u, &v, &clk);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(notices(&v), "");
	assert_string_equal(screen_time(&v), "used=0,left=60,session=0");
	assert_int_equal(clk.in_quiet, 0);
}

/* Use so far plus the short gap before this call: 52 minutes, 8 left. */
static void test_daily_warning_counts_the_gap(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 12 * HOUR;
	struct fg_state_user u = { .found = 1, .day = 0, .active_ms = 50 * MIN, .last_ms = now - 2 * MIN,
	                           .session_start_ms = now - 31 * MIN };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	u.night = clk.night;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(screen_time(&v), "used=52,left=8,session=31");
	assert_string_equal(notices(&v), "daily-limit-soon");
}

/* Time used is rounded down and time left up: 61.5 s of a 2-minute cap
 * is used=1,left=1 (rounded down, left=0 was shown for the last minute
 * while the child was still served: a README-only trial), and left is 0
 * only at the cap. */
static void test_left_rounds_up(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 12 * HOUR;
	struct fg_state_user u = { .found = 1, .active_ms = MIN + 500, .last_ms = now - 1000,
	                           .session_start_ms = now - 61500 };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.daily_cap_ms = 2 * MIN;
	l.daily_warn_ms = 0;
	l.quiet_allowance_ms = 15 * MIN;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	u.night = clk.night;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(screen_time(&v), "used=1,left=1,session=1");
	u.active_ms = 2 * MIN - 1001;          /* a ms short of the cap with the gap */
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(screen_time(&v), "used=1,left=1,session=1");
	u.active_ms = 2 * MIN - 1000;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_string_equal(screen_time(&v), "used=2,left=0,session=1");
	assert_int_equal(fg_limits_minutes_left(1), 1);
	assert_int_equal(fg_limits_minutes_left(MIN), 1);
	assert_int_equal(fg_limits_minutes_left(MIN + 1), 2);
	assert_int_equal(fg_limits_minutes_left(0), 0);
	assert_int_equal(fg_limits_minutes_left(-5), 0);
	assert_int_equal(fg_limits_minutes_used(MIN - 1), 0);
}

static void test_daily_cap_actions(void **state)
{
	static const uint8_t actions[] = { FG_POLICY_ACT_NOTICE, FG_POLICY_ACT_EMPTY, FG_POLICY_ACT_DENY };
	int64_t now = WINTER_DAY_MS + 15 * HOUR;
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;
	char msg[256];
	size_t i;

	(void)state;
	NEED_LONDON();
	for (i = 0; i < 3; i++) {
		struct fg_policy_limits l = defaults();
		struct fg_state_user u = { .found = 1, .active_ms = 60 * MIN, .last_ms = now - HOUR };
		l.daily_action = actions[i];
		fg_limits_clock(&l, london, now, &clk);
		u.day = clk.day;
		fg_limits_decide(&l, &clk, &u, &v);
		assert_int_equal(v.action, actions[i]);
		assert_int_equal(v.rule, FG_POLICY_R_DAILY);
		assert_string_equal(notices(&v), "daily-limit");
		assert_string_equal(screen_time(&v), "used=60,left=0,session=0");
	}
	assert_true(fg_limits_message(&(struct fg_policy_limits){ .daily_cap_ms = 60 * MIN }, &v, FG_POLICY_R_DAILY,
	                              "Europe/London", msg, sizeof(msg)) > 0);
	assert_string_equal(msg, "daily feed time limit reached: 60 of 60 minutes used today (resets at midnight, "
	                         "Europe/London)");
}

/* Yesterday's use does not count today; the session goes on across midnight. */
static void test_new_day(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 24 * HOUR + 2 * MIN;     /* 00:02 the next day */
	struct fg_state_user u = { .found = 1, .active_ms = 59 * MIN, .last_ms = now - 4 * MIN,
	                           .session_start_ms = now - 20 * MIN };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.quiet_on = 0;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day - 1;
	fg_limits_decide(&l, &clk, &u, &v);
	/* only the part of the gap after midnight is today's */
	assert_int_equal(v.used_ms, 2 * MIN);
	assert_int_equal(v.session_ms, 20 * MIN);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
}

/* A gap longer than idle_gap is a break: a new session, no gap counted. */
static void test_break(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 14 * HOUR;
	struct fg_state_user u = { .found = 1, .active_ms = 30 * MIN, .last_ms = now - 3 * MIN,
	                           .session_start_ms = now - 45 * MIN };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;
	char msg[256];

	(void)state;
	NEED_LONDON();
	l.break_after_ms = 45 * MIN;
	l.break_action = FG_POLICY_ACT_EMPTY;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_EMPTY);
	assert_int_equal(v.rule, FG_POLICY_R_BREAK);
	assert_string_equal(notices(&v), "take-a-break");
	assert_int_equal(fg_limits_message(&l, &v, FG_POLICY_R_BREAK, "Europe/London", msg, sizeof(msg)) > 0, 1);
	assert_string_equal(msg, "time for a break: 45 minutes of continuous use (back after a 5-minute break)");
	/* away for longer than the idle gap: a new session */
	u.last_ms = now - 6 * MIN;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_int_equal(v.session_ms, 0);
	assert_int_equal(v.used_ms, 30 * MIN);
}

/* Quiet hours 22:00-07:00 London: 22:30 is UTC in winter, BST in summer. */
static void test_quiet_hours_dst(void **state)
{
	struct fg_policy_limits l = defaults();
	struct fg_state_user u = { 0 };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.quiet_action = FG_POLICY_ACT_DENY;
	decide(&l, WINTER_DAY_MS + 22 * HOUR + 30 * MIN, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 1);
	assert_int_equal(v.action, FG_POLICY_ACT_DENY);
	assert_int_equal(v.rule, FG_POLICY_R_QUIET);
	/* 21:30 UTC in summer is 22:30 BST: quiet */
	decide(&l, SUMMER_DAY_MS + 21 * HOUR + 30 * MIN, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 1);
	assert_int_equal(v.action, FG_POLICY_ACT_DENY);
	assert_int_equal(clk.quiet_to_ms, SUMMER_DAY_MS + 24 * HOUR + 6 * HOUR);        /* 07:00 BST */
	/* 21:30 UTC in winter is 21:30 GMT: the warning, 30 minutes before */
	decide(&l, WINTER_DAY_MS + 21 * HOUR + 30 * MIN, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 0);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(notices(&v), "quiet-hours-soon");
	assert_string_equal(screen_time(&v), "used=0,left=60,session=0,quiet_in=30");
	/* 06:59 the next morning is still the night that began the day before */
	decide(&l, WINTER_DAY_MS + 30 * HOUR + 59 * MIN, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 1);
	assert_int_equal(clk.night, clk.day - 1);
	decide(&l, WINTER_DAY_MS + 31 * HOUR, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 0);
}

/* With an allowance, calls are served (with the notice) until it is used. */
static void test_quiet_allowance(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 23 * HOUR;
	struct fg_state_user u = { .found = 1, .last_ms = now - MIN, .session_start_ms = now - 10 * MIN };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;
	char msg[128];

	(void)state;
	NEED_LONDON();
	l.quiet_allowance_ms = 15 * MIN;
	l.quiet_action = FG_POLICY_ACT_DENY;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	u.night = clk.night;
	u.quiet_ms = 10 * MIN;
	fg_limits_decide(&l, &clk, &u, &v);
	/* 10 minutes stored and the minute since the last call */
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	assert_string_equal(notices(&v), "quiet-hours");
	assert_int_equal(v.quiet_left_ms, 4 * MIN);
	u.quiet_ms = 14 * MIN;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_DENY);
	/* spent: the app is told so (quiet_left=0), not only that it is night */
	assert_int_equal(v.quiet_left_ms, 0);
	assert_true(fg_limits_message(&l, &v, FG_POLICY_R_QUIET, "Europe/London", msg, sizeof(msg)) > 0);
	assert_string_equal(msg, "quiet hours until 07:00 (Europe/London)");
	/* the next night starts afresh */
	u.night = clk.night - 1;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
}

/* Quiet hours within one day (01:00-06:00). */
static void test_quiet_same_day(void **state)
{
	struct fg_policy_limits l = defaults();
	struct fg_state_user u = { 0 };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.quiet_from_s = 1 * 3600;
	l.quiet_to_s = 6 * 3600;
	decide(&l, WINTER_DAY_MS + 3 * HOUR, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 1);
	assert_int_equal(clk.night, clk.day);
	decide(&l, WINTER_DAY_MS + 7 * HOUR, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 0);
	assert_int_equal(clk.night, clk.day + 1);
	assert_int_equal(clk.quiet_from_ms, WINTER_DAY_MS + 25 * HOUR);
}

/* A quiet-hours event is when an open stream would spend the allowance
 * inside the night's quiet hours: never after they end (the stream would
 * be ended in the morning by a rule that no longer applies). */
static void test_quiet_event_inside_quiet_hours(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 30 * HOUR + 50 * MIN;    /* 06:50 the next morning */
	struct fg_state_user u = { 0 };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;
	size_t i;

	(void)state;
	NEED_LONDON();
	l.daily_cap_ms = 0;
	l.break_after_ms = 0;
	l.quiet_allowance_ms = 30 * MIN;
	l.quiet_action = FG_POLICY_ACT_EMPTY;
	/* in quiet hours, 30 minutes of allowance left, 10 minutes of night left */
	decide(&l, now, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 1);
	assert_int_equal(v.action, FG_POLICY_ACT_NONE);
	for (i = 0; i < v.nevents; i++)
		assert_true(v.events[i].rule != FG_POLICY_R_QUIET || v.events[i].at_ms < clk.quiet_to_ms);
	/* before a night shorter than its allowance (22:00-22:20, 30m) */
	l.quiet_from_s = 22 * 3600;
	l.quiet_to_s = 22 * 3600 + 20 * 60;
	decide(&l, WINTER_DAY_MS + 21 * HOUR, &u, &v, &clk);
	assert_int_equal(clk.in_quiet, 0);
	for (i = 0; i < v.nevents; i++)
		assert_true(v.events[i].rule != FG_POLICY_R_QUIET || v.events[i].at_ms < clk.quiet_to_ms);
}

/* Several rules: the strongest action wins; a deny's message is the first
 * denying rule's in the order daily, quiet hours, break. */
static void test_strongest_action(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 23 * HOUR;
	struct fg_state_user u = { .found = 1, .active_ms = 70 * MIN, .last_ms = now - MIN,
	                           .session_start_ms = now - 2 * HOUR };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.daily_action = FG_POLICY_ACT_EMPTY;
	l.quiet_action = FG_POLICY_ACT_DENY;
	l.break_action = FG_POLICY_ACT_DENY;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.action, FG_POLICY_ACT_DENY);
	assert_int_equal(v.rule, FG_POLICY_R_QUIET);
	assert_string_equal(notices(&v), "daily-limit,quiet-hours,take-a-break");
}

static void test_exposure(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 12 * HOUR;
	struct fg_state_user u = { .found = 1, .exposure = { 7, 20 } };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.ncounters = 2;
	l.per_day[0] = 10;
	l.per_day[1] = 20;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.left[0], 3);
	assert_int_equal(v.left[1], 0);
	assert_string_equal(notices(&v), "exposure-limit");
	/* counters of another day are not today's */
	u.day = clk.day - 1;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.left[0], 10);
	assert_int_equal(v.left[1], 20);
}

/* An open stream's next rules, in time order. */
static void test_events(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 12 * HOUR;
	struct fg_state_user u = { .found = 1, .active_ms = 40 * MIN, .last_ms = now - MIN,
	                           .session_start_ms = now - 50 * MIN };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.nevents, 3);
	assert_int_equal(v.events[0].rule, FG_POLICY_R_BREAK);           /* 60 - 50 */
	assert_int_equal(v.events[0].at_ms, now + 10 * MIN);
	assert_int_equal(v.events[1].rule, FG_POLICY_R_DAILY);           /* 60 - 41 */
	assert_int_equal(v.events[1].at_ms, now + 19 * MIN);
	assert_int_equal(v.events[2].rule, FG_POLICY_R_QUIET);           /* 22:00 */
	assert_int_equal(v.events[2].at_ms, WINTER_DAY_MS + 22 * HOUR);
}

/* The update: the day and night of the call's end, and an expiry past both. */
static void test_update(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t start = WINTER_DAY_MS + 23 * HOUR, end = start + 10 * MIN;
	struct fg_state_update u = { 0 };
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	fg_limits_clock(&l, london, end, &clk);
	fg_limits_update(&l, &clk, start, &u);
	assert_int_equal(u.start_ms, start);
	assert_int_equal(u.end_ms, end);
	assert_int_equal(u.day_start_ms, WINTER_DAY_MS);
	assert_int_equal(u.quiet_from_ms, WINTER_DAY_MS + 22 * HOUR);
	assert_int_equal(u.quiet_to_ms, WINTER_DAY_MS + 31 * HOUR);
	/* the night ends after the day: the record lives past 07:00 */
	assert_int_equal(u.ttl_ms, WINTER_DAY_MS + 31 * HOUR - end + 5 * MIN);
}

static void test_formatting_bounds(void **state)
{
	struct fg_limits_verdict v = { .used_ms = 5 * MIN, .left_ms = -1, .session_ms = 0, .quiet_in_ms = -1,
	                               .quiet_left_ms = -1 };
	char small[8], buf[128];

	(void)state;
	assert_int_equal(fg_limits_screen_time(&v, small, sizeof(small)), -1);
	assert_int_equal(fg_limits_screen_time(&v, buf, sizeof(buf)), 16);
	assert_string_equal(buf, "used=5,session=0");
	assert_int_equal(fg_limits_notices(1u << FG_POLICY_N_TAKE_A_BREAK, small, sizeof(small)), -1);
	assert_int_equal(fg_limits_notices(0, small, sizeof(small)), 0);
	assert_string_equal(small, "");
}

/* A record of a later day or night (a zone of time_zones whose date is
 * ahead of the call's) is the current one: switching zones restarts
 * neither the day's use nor its exposure counters. */
static void test_later_day_is_today(void **state)
{
	struct fg_policy_limits l = defaults();
	int64_t now = WINTER_DAY_MS + 14 * HOUR;
	struct fg_state_user u = { .found = 1, .active_ms = 58 * MIN, .last_ms = now - 4 * MIN,
	                           .session_start_ms = now - 40 * MIN, .exposure = { 10 } };
	struct fg_limits_verdict v;
	struct fg_limits_clock clk;

	(void)state;
	NEED_LONDON();
	l.daily_action = FG_POLICY_ACT_DENY;
	l.ncounters = 1;
	l.per_day[0] = 10;
	fg_limits_clock(&l, london, now, &clk);
	u.day = clk.day + 1;
	u.night = clk.night;
	fg_limits_decide(&l, &clk, &u, &v);
	assert_int_equal(v.used_ms, 62 * MIN);
	assert_int_equal(v.action, FG_POLICY_ACT_DENY);
	assert_int_equal(v.left[0], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_user),
		cmocka_unit_test(test_daily_warning_counts_the_gap),
		cmocka_unit_test(test_left_rounds_up),
		cmocka_unit_test(test_daily_cap_actions),
		cmocka_unit_test(test_new_day),
		cmocka_unit_test(test_break),
		cmocka_unit_test(test_quiet_hours_dst),
		cmocka_unit_test(test_quiet_allowance),
		cmocka_unit_test(test_quiet_same_day),
		cmocka_unit_test(test_quiet_event_inside_quiet_hours),
		cmocka_unit_test(test_strongest_action),
		cmocka_unit_test(test_exposure),
		cmocka_unit_test(test_later_day_is_today),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_formatting_bounds),
	};

	return cmocka_run_group_tests_name("limits", tests, setup, teardown);
}
