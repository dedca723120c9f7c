/*
 * fg_limits.h - the screen-time rules of one band, decided: given the
 * band's compiled limits (struct fg_policy_limits), the user's state as
 * read (struct fg_state_user) and the time, what happens to a feed call
 * (served, with which notices; emptied; denied), what the client is told
 * (the feedguard-screen-time and feedguard-notice values, the deny
 * message), when an open stream would next hit a rule, and what the call
 * adds to the state once delivered (struct fg_state_update).
 *
 * Pure: no clock, no I/O, no allocation, any thread.  The gate stage and
 * the replay tool both decide through it, so every rule is written once.
 * Times are milliseconds since the Unix epoch; days and nights are local
 * day numbers in the zone given (fg_tz).
 */
#ifndef FG_LIMITS_H
#define FG_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "fg_policy-t.h"
#include "fg_state.h"

struct fg_tz;

/* A moment as one band's rules see it. */
struct fg_limits_clock {
	int64_t now_ms;
	int64_t day;                /* local day number of <now_ms> */
	int64_t day_start_ms;       /* when that day began */
	int64_t next_day_ms;        /* when the next one begins */
	int in_quiet;               /* 1: inside quiet hours */
	int64_t night;              /* the night <now_ms> is in, else the next one: the day its quiet hours begin */
	int64_t quiet_from_ms;      /* that night's quiet hours; both 0 when quiet hours are off */
	int64_t quiet_to_ms;
};

/* fg_limits_clock - <now_ms> seen by limits <l> in zone <tz>, into <out>. */
void fg_limits_clock(const struct fg_policy_limits *l, const struct fg_tz *tz, int64_t now_ms,
                     struct fg_limits_clock *out);

#define FG_LIMITS_MAX_EVENTS 3      /* daily, quiet hours, break */

/* A rule that continued use from the call's start would make fire. */
struct fg_limits_event {
	int64_t at_ms;              /* when */
	uint8_t rule;               /* enum fg_policy_rule */
	uint8_t action;             /* enum fg_policy_action */
	uint8_t notice;             /* enum fg_policy_notice */
};

/* What a call gets. */
struct fg_limits_verdict {
	uint8_t action;             /* enum fg_policy_action: the strongest rule that fired; NONE: none */
	uint8_t rule;               /* enum fg_policy_rule of the first rule (daily, quiet, break) with that action */
	unsigned notices;           /* bit (1 << enum fg_policy_notice) per notice given */
	int64_t used_ms;            /* active time today, with the gap before this call when it is use */
	int64_t left_ms;            /* of the daily cap; -1: daily off */
	int64_t session_ms;         /* continuous use so far; 0 when this call starts a session */
	int64_t quiet_in_ms;        /* to quiet hours, given with quiet-hours-soon; else -1 */
	int64_t quiet_left_ms;      /* of the quiet allowance, inside quiet hours with one; else -1 */
	uint32_t left[FG_POLICY_MAX_COUNTERS]; /* exposure allowance left today per counter */
	struct fg_limits_event events[FG_LIMITS_MAX_EVENTS]; /* in time order */
	size_t nevents;
};

/*
 * fg_limits_decide - the verdict of limits <l> (active) at <clk> for a
 * user whose state is <u> (all zero for a user with none; its exposure
 * array in the order of <l>'s counters) into <v>.
 */
void fg_limits_decide(const struct fg_policy_limits *l, const struct fg_limits_clock *clk,
                      const struct fg_state_user *u, struct fg_limits_verdict *v);

/*
 * fg_limits_update - the day, night, windows, idle gap and expiry of the
 * update for a call delivered from <start_ms> to the time of <end> (a
 * clock of the call's end), into <u>; the caller fills <u->who> and
 * <u->counts>.
 */
void fg_limits_update(const struct fg_policy_limits *l, const struct fg_limits_clock *end, int64_t start_ms,
                      struct fg_state_update *u);

/* fg_limits_minutes_used, fg_limits_minutes_left - whole minutes of
 * <ms> as the app is told them (0 for a negative <ms>): time used rounded
 * down, time left rounded up, so that used + left is the cap and left is
 * 0 only once nothing is left (an app showing "0 minutes left" for the
 * last minute while still served would tell the child the wrong thing). */
int64_t fg_limits_minutes_used(int64_t ms);
int64_t fg_limits_minutes_left(int64_t ms);

/* fg_limits_screen_time - the feedguard-screen-time value of <v> into
 * <buf> (<len> bytes): its length, or -1 when it does not fit. */
int fg_limits_screen_time(const struct fg_limits_verdict *v, char *buf, size_t len);

/* fg_limits_notices - the feedguard-notice value of notice bits <notices>
 * into <buf>: its length (0: no notice), or -1 when it does not fit. */
int fg_limits_notices(unsigned notices, char *buf, size_t len);

/* fg_limits_notice_name - "daily-limit", ... for enum fg_policy_notice <n>. */
const char *fg_limits_notice_name(unsigned n);

/*
 * fg_limits_message - the grpc-message of a deny by rule <rule> (enum
 * fg_policy_rule) under <l>, with <v>'s figures and the zone's name <zone>,
 * into <buf>: its length, or -1 when it does not fit.
 */
int fg_limits_message(const struct fg_policy_limits *l, const struct fg_limits_verdict *v, unsigned rule,
                      const char *zone, char *buf, size_t len);

#endif /* FG_LIMITS_H */
