/*
 * test_state.c - cmocka group "state": fg_state.h's operations through the
 * header, against both backends.
 *
 * One table of vectors (vecs[]) holds what users see: each row is an
 * update, read, erase or TTL check of one scenario's user, and what a read
 * with the row's keys returns afterwards.  The table runs against
 * fg_state_mem and against fg_state_redis on a real redis-server
 * (fg_redisserver.h; skipped with a message when there is none), so both
 * backends are held to the same numbers.  Then come what only one backend
 * has: the Redis key layout, TTL and failures (killed, paused, freed with
 * operations pending, damaged records), and fg_state_mem's bounds.
 *
 * The loop for Redis is a real libevent event_base run in short slices
 * until a condition holds.  Timing bounds get FG_TIME_FACTOR (set for
 * sanitizers and valgrind) on top of generous slack, as in test_redis.
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "fg_clock.h"
#include "fg_error.h"
#include "fg_redis.h"
#include "fg_redisserver.h"
#include "fg_state.h"
#include "fg_state_mem.h"
#include "fg_state_redis.h"
#include "fg_testutil.h"

#define MS 1000                         /* microseconds */
#define PREFIX "fgt:"
#define T0 INT64_C(1700000000000)       /* the vectors' times are seconds after this */
#define SEC(s) (T0 + (int64_t)(s) * 1000)
#define GAP_MS (300 * 1000)             /* idle gap of every vector */
#define TTL_MS INT64_C(129600000)       /* 36 h */
#define D 19675                         /* the vectors' day */
#define N 19674                         /* and night */
#define NCLASSES 2

static char redis_server[256];          /* path of redis-server, "" when missing */
static int time_factor = 1;
static const char *const classes[NCLASSES] = { "video", "ads" };

/* ---- the vectors ---- */

enum vop {
	V_UPDATE,       /* update with <keys>, then read with <keys> */
	V_QUIET,        /* a quiet-only update (a quiet-hours answer) with <keys>, then read */
	V_DAILY,        /* a daily cap's answer (cap_ms from <call.cap>) with <keys>, then read */
	V_READ,         /* read with <keys> */
	V_ERASE,        /* erase <keys>, then read with <keys> */
	V_TTL,          /* the record under keys[0] expires TTL_MS after the last update */
};

/* An update's call, in seconds after T0 (day_start and quiet bounds too). */
struct vcall {
	int64_t start, end;
	int64_t day, day_start;
	int64_t night, quiet_from, quiet_to;
	uint32_t n[NCLASSES];           /* items: video, ads */
	int64_t cap;                    /* V_DAILY: the daily cap, seconds */
};

/* What a read returns: last and sess in seconds after T0, act and quiet in seconds. */
struct vwant {
	int found;
	int64_t last, sess, day, act, night, quiet;
	uint64_t x[NCLASSES];
};

struct vec {
	const char *scenario;           /* rows of a scenario run in order, on that scenario's user */
	enum vop op;
	const char *keys;               /* pseudonym letters, newest ring key first */
	struct vcall call;              /* V_UPDATE only */
	struct vwant want;              /* not for V_TTL */
};

/* Day D began an hour before T0; its quiet hours are far later, so only
 * the "night" scenario accrues quiet time. */
#define DAY_D D, -3600
#define NIGHT_N N, 36000, 72000
#define NONE { 0, 0, 0, 0, 0, 0, 0, { 0, 0 } }
#define NOCALL { 0, 0, 0, 0, 0, 0, 0, { 0, 0 } }

static const struct vec vecs[] = {
	/* A session starts; gaps up to the idle gap count as use (300 s
	 * exactly still does); past it a new session begins. */
	{ "session", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 3, 1 } }, { 1, 60, 0, D, 60, N, 0, { 3, 1 } } },
	{ "session", V_UPDATE, "A", { 200, 260, DAY_D, NIGHT_N, { 2, 0 } }, { 1, 260, 0, D, 260, N, 0, { 5, 1 } } },
	{ "session", V_UPDATE, "A", { 560, 600, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 600, 0, D, 600, N, 0, { 5, 1 } } },
	{ "session", V_UPDATE, "A", { 901, 960, DAY_D, NIGHT_N, { 1, 1 } }, { 1, 960, 901, D, 659, N, 0, { 6, 2 } } },
	{ "session", V_READ, "A", NOCALL, { 1, 960, 901, D, 659, N, 0, { 6, 2 } } },

	/* Overlapping calls count once; a call inside delivered time adds
	 * nothing and does not move last back. */
	{ "overlap", V_UPDATE, "A", { 0, 100, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 100, 0, D, 100, N, 0, { 1, 0 } } },
	{ "overlap", V_UPDATE, "A", { 50, 150, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 150, 0, D, 150, N, 0, { 2, 0 } } },
	{ "overlap", V_UPDATE, "A", { 60, 120, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 150, 0, D, 150, N, 0, { 3, 0 } } },

	/* A new day (starting at 150 s) restarts active time and exposure,
	 * not the session: the gap from 60 s is use, but only after 150 s. */
	{ "day", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 5, 2 } }, { 1, 60, 0, D, 60, N, 0, { 5, 2 } } },
	{ "day", V_UPDATE, "A", { 120, 180, D + 1, 150, NIGHT_N, { 1, 0 } }, { 1, 180, 0, D + 1, 30, N, 0, { 1, 0 } } },
	{ "day", V_UPDATE, "A", { 200, 210, D + 1, 150, NIGHT_N, { 0, 4 } }, { 1, 210, 0, D + 1, 60, N, 0, { 1, 4 } } },

	/* Days and nights never go back: an update of an earlier day or night
	 * (another zone of the policy's time_zones, or an update that landed
	 * late) counts into the record's, and restarts nothing. */
	{ "later_day", V_UPDATE, "A", { 0, 60, D + 1, -3600, NIGHT_N, { 2, 1 } }, { 1, 60, 0, D + 1, 60, N, 0, { 2, 1 } } },
	{ "later_day", V_UPDATE, "A", { 100, 160, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 160, 0, D + 1, 160, N, 0, { 3, 1 } } },
	{ "later_day", V_UPDATE, "A", { 200, 260, DAY_D, N - 1, 0, 1000, { 0, 0 } },
	  { 1, 260, 0, D + 1, 260, N, 100, { 3, 1 } } },

	/* Quiet hours [30 s, 600 s): clipped at both ends; a new night restarts
	 * quiet time, not active time; an empty window adds nothing. */
	{ "night", V_UPDATE, "A", { 0, 60, DAY_D, N, 30, 600, { 0, 0 } }, { 1, 60, 0, D, 60, N, 30, { 0, 0 } } },
	{ "night", V_UPDATE, "A", { 120, 180, DAY_D, N, 30, 600, { 0, 0 } }, { 1, 180, 0, D, 180, N, 150, { 0, 0 } } },
	{ "night", V_UPDATE, "A", { 240, 700, DAY_D, N, 30, 600, { 0, 0 } }, { 1, 700, 0, D, 700, N, 570, { 0, 0 } } },
	{ "night", V_UPDATE, "A", { 800, 860, DAY_D, N + 1, 36000, 72000, { 0, 0 } },
	  { 1, 860, 0, D, 860, N + 1, 0, { 0, 0 } } },
	{ "night", V_UPDATE, "A", { 880, 940, DAY_D, N + 1, 900, 900, { 0, 0 } }, { 1, 940, 0, D, 940, N + 1, 0, { 0, 0 } } },
	{ "night", V_UPDATE, "A", { 950, 990, DAY_D, N + 1, 980, 960, { 0, 0 } }, { 1, 990, 0, D, 990, N + 1, 0, { 0, 0 } } },

	/* Quiet-hours answers (quiet [30 s, 6000 s)): the gap before one
	 * counts to the night's quiet time only (act, last and the session
	 * stay); past the idle gap, or with no record, nothing is written; a
	 * new night restarts quiet time; a record of a later night is kept. */
	{ "quiet_answer", V_UPDATE, "A", { 0, 60, DAY_D, N, 30, 6000, { 1, 0 } },
	  { 1, 60, 0, D, 60, N, 30, { 1, 0 } } },
	{ "quiet_answer", V_QUIET, "A", { 200, 200, DAY_D, N, 30, 6000, { 0, 0 } },
	  { 1, 60, 0, D, 60, N, 170, { 1, 0 } } },
	{ "quiet_answer", V_QUIET, "A", { 361, 361, DAY_D, N, 30, 6000, { 0, 0 } },
	  { 1, 60, 0, D, 60, N, 170, { 1, 0 } } },
	{ "quiet_answer", V_QUIET, "A", { 300, 300, DAY_D, N + 1, 280, 6000, { 0, 0 } },
	  { 1, 60, 0, D, 60, N + 1, 20, { 1, 0 } } },
	{ "quiet_answer", V_QUIET, "A", { 300, 300, DAY_D, N, 30, 6000, { 0, 0 } },
	  { 1, 60, 0, D, 60, N + 1, 20, { 1, 0 } } },
	{ "quiet_answer", V_QUIET, "A", { 100, 100, DAY_D, N + 1, 6000, 9000, { 0, 0 } },
	  { 1, 60, 0, D, 60, N + 1, 20, { 1, 0 } } },
	{ "quiet_answer", V_UPDATE, "A", { 320, 330, DAY_D, N + 1, 280, 6000, { 0, 0 } },
	  { 1, 330, 0, D, 330, N + 1, 70, { 1, 0 } } },
	{ "quiet_fresh", V_QUIET, "A", { 200, 200, DAY_D, N, 30, 6000, { 0, 0 } }, NONE },

	/* Daily cap answers (cap 150 s): the gap before one raises active time
	 * up to the cap and no further, however often the user asks (every
	 * answer's gap runs from the last page: last and the session stay);
	 * past the idle gap, or with no record, nothing is written; a new day
	 * restarts active time and exposure first. */
	{ "daily_answer", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 60, 0, D, 60, N, 0, { 1, 0 } } },
	{ "daily_answer", V_DAILY, "A", { 200, 200, DAY_D, NIGHT_N, { 0, 0 }, 150 },
	  { 1, 60, 0, D, 150, N, 0, { 1, 0 } } },
	{ "daily_answer", V_DAILY, "A", { 250, 250, DAY_D, NIGHT_N, { 0, 0 }, 150 },
	  { 1, 60, 0, D, 150, N, 0, { 1, 0 } } },
	{ "daily_answer", V_DAILY, "A", { 361, 361, DAY_D, NIGHT_N, { 0, 0 }, 150 },
	  { 1, 60, 0, D, 150, N, 0, { 1, 0 } } },
	{ "daily_answer", V_UPDATE, "A", { 400, 430, DAY_D, NIGHT_N, { 0, 0 } },
	  { 1, 430, 400, D, 180, N, 0, { 1, 0 } } },
	{ "daily_answer", V_DAILY, "A", { 500, 500, DAY_D, NIGHT_N, { 0, 0 }, 150 },
	  { 1, 430, 400, D, 180, N, 0, { 1, 0 } } },
	{ "daily_day", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 2, 1 } }, { 1, 60, 0, D, 60, N, 0, { 2, 1 } } },
	{ "daily_day", V_DAILY, "A", { 200, 200, D + 1, 150, NIGHT_N, { 0, 0 }, 30 },
	  { 1, 60, 0, D + 1, 30, N, 0, { 0, 0 } } },
	{ "daily_fresh", V_DAILY, "A", { 200, 200, DAY_D, NIGHT_N, { 0, 0 }, 150 }, NONE },

	/* The day started at 60 s: the first minute of the call is
	 * yesterday's. */
	{ "day_start", V_UPDATE, "A", { 0, 120, D, 60, NIGHT_N, { 1, 0 } }, { 1, 120, 0, D, 60, N, 0, { 1, 0 } } },
	{ "day_start", V_UPDATE, "A", { 130, 140, D, 60, NIGHT_N, { 0, 0 } }, { 1, 140, 0, D, 80, N, 0, { 1, 0 } } },

	/* Key rotation: the old key's record is read, then moved under the
	 * new key by the next update; once the new key has a record, an
	 * older one is left alone. */
	{ "migrate", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 2, 0 } }, { 1, 60, 0, D, 60, N, 0, { 2, 0 } } },
	{ "migrate", V_READ, "BA", NOCALL, { 1, 60, 0, D, 60, N, 0, { 2, 0 } } },
	{ "migrate", V_UPDATE, "BA", { 100, 160, DAY_D, NIGHT_N, { 1, 1 } }, { 1, 160, 0, D, 160, N, 0, { 3, 1 } } },
	{ "migrate", V_READ, "A", NOCALL, NONE },
	{ "migrate", V_READ, "B", NOCALL, { 1, 160, 0, D, 160, N, 0, { 3, 1 } } },
	{ "migrate", V_UPDATE, "A", { 0, 10, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 10, 0, D, 10, N, 0, { 0, 0 } } },
	{ "migrate", V_UPDATE, "BA", { 200, 260, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 260, 0, D, 260, N, 0, { 3, 1 } } },
	{ "migrate", V_READ, "A", NOCALL, { 1, 10, 0, D, 10, N, 0, { 0, 0 } } },

	/* Three ring keys: the first older record (B's) moves, A's stays. */
	{ "migrate3", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 60, 0, D, 60, N, 0, { 0, 0 } } },
	{ "migrate3", V_UPDATE, "B", { 0, 30, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 30, 0, D, 30, N, 0, { 1, 0 } } },
	{ "migrate3", V_UPDATE, "CBA", { 40, 50, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 50, 0, D, 50, N, 0, { 2, 0 } } },
	{ "migrate3", V_READ, "B", NOCALL, NONE },
	{ "migrate3", V_READ, "A", NOCALL, { 1, 60, 0, D, 60, N, 0, { 0, 0 } } },

	/* Erasure removes the records under every key given. */
	{ "erase", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 1, 1 } }, { 1, 60, 0, D, 60, N, 0, { 1, 1 } } },
	{ "erase", V_UPDATE, "B", { 0, 30, DAY_D, NIGHT_N, { 1, 0 } }, { 1, 30, 0, D, 30, N, 0, { 1, 0 } } },
	{ "erase", V_ERASE, "BA", NOCALL, NONE },
	{ "erase", V_READ, "A", NOCALL, NONE },
	{ "erase", V_READ, "B", NOCALL, NONE },
	{ "erase", V_ERASE, "BA", NOCALL, NONE },
	{ "erase", V_UPDATE, "BA", { 100, 160, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 160, 100, D, 60, N, 0, { 0, 0 } } },

	/* Every update sets the TTL again. */
	{ "ttl", V_UPDATE, "A", { 0, 60, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 60, 0, D, 60, N, 0, { 0, 0 } } },
	{ "ttl", V_TTL, "A", NOCALL, NONE },
	{ "ttl", V_UPDATE, "A", { 100, 160, DAY_D, NIGHT_N, { 0, 0 } }, { 1, 160, 0, D, 160, N, 0, { 0, 0 } } },
	{ "ttl", V_TTL, "A", NOCALL, NONE },
};

#define NVECS (sizeof(vecs) / sizeof(vecs[0]))

/* ---- one test's world ---- */

struct env {
	struct fg_test_dir *dir;        /* Redis only, from here down */
	struct event_base *base;
	struct event *tick;             /* keeps loop slices short */
	struct fg_redisserver srv;
	struct fg_state *s;
	int64_t now_ms;                 /* memory: the time last given to fg_state_mem_set_now */
};

/* What one callback saw: each must run exactly once. */
struct res {
	int calls;
	int rc;
	struct fg_state_user u;
	uint64_t at_us;
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *<flag> reaches <n> or <ms> (times the factor) passed. */
static int loop_until(struct env *e, const int *flag, int n, int ms)
{
	uint64_t end = fg_clock_now_us() + (uint64_t)ms * MS * (uint64_t)time_factor;

	while (*flag < n && fg_clock_now_us() < end)
		event_base_loop(e->base, EVLOOP_ONCE);
	return *flag >= n;
}

static void loop_for(struct env *e, int ms)
{
	uint64_t end = fg_clock_now_us() + (uint64_t)ms * MS;

	while (fg_clock_now_us() < end)
		event_base_loop(e->base, EVLOOP_ONCE);
}

static void read_cb(void *arg, int rc, const struct fg_state_user *u)
{
	struct res *r = arg;

	r->calls++;
	r->rc = rc;
	r->at_us = fg_clock_now_us();
	if (rc == 0) {
		assert_non_null(u);
		r->u = *u;
	} else {
		assert_null(u);
	}
}

static void done_cb(void *arg, int rc)
{
	struct res *r = arg;

	r->calls++;
	r->rc = rc;
	r->at_us = fg_clock_now_us();
}

/* After a submit that returned 0: the callback ran already (memory) or
 * runs later on the loop (Redis), once. */
static void wait_res(struct env *e, struct res *r)
{
	if (!e->base) {
		assert_int_equal(r->calls, 1);
		return;
	}
	assert_int_equal(r->calls, 0);
	assert_true(loop_until(e, &r->calls, 1, 3000));
	assert_int_equal(r->calls, 1);
}

static int do_read(struct env *e, const struct fg_state_who *who, struct res *r)
{
	memset(r, 0, sizeof(*r));
	assert_int_equal(fg_state_read(e->s, who, read_cb, r), 0);
	wait_res(e, r);
	return r->rc;
}

static int do_update(struct env *e, const struct fg_state_update *u)
{
	struct res r = { 0 };

	assert_int_equal(fg_state_update(e->s, u, done_cb, &r), 0);
	wait_res(e, &r);
	return r.rc;
}

static int do_erase(struct env *e, const struct fg_state_who *who)
{
	struct res r = { 0 };

	assert_int_equal(fg_state_erase(e->s, who, done_cb, &r), 0);
	wait_res(e, &r);
	return r.rc;
}

/* ---- pseudonyms ---- */

/* A pseudonym of fg_keyring's form for user <letter> of <scenario>:
 * "k<letter>:" and 64 hex digits. */
static void pseudonym(char *out, size_t len, const char *scenario, char letter)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (const char *p = scenario; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	h = (h ^ (unsigned char)letter) * 0x100000001b3ULL;
	snprintf(out, len, "k%c:%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, letter, h, h * 3, h * 5, h * 7);
}

/* The pseudonyms of a row's <letters>, and a who with the table's classes. */
struct users {
	char names[FG_STATE_MAX_KEYS][FG_KEYRING_PSEUDONYM_MAX];
	const char *keys[FG_STATE_MAX_KEYS];
	struct fg_state_who who;
};

static void users_of(struct users *us, const char *scenario, const char *letters)
{
	size_t n = strlen(letters);

	assert_true(n >= 1 && n <= FG_STATE_MAX_KEYS);
	for (size_t i = 0; i < n; i++) {
		pseudonym(us->names[i], sizeof(us->names[i]), scenario, letters[i]);
		us->keys[i] = us->names[i];
	}
	us->who.keys = us->keys;
	us->who.nkeys = n;
	us->who.classes = classes;
	us->who.nclasses = NCLASSES;
	us->who.checked = 0;
}

/* An update of the default shape: idle gap GAP_MS, ttl TTL_MS. */
static void update_of(struct fg_state_update *u, const struct fg_state_who *who, const struct vcall *c)
{
	memset(u, 0, sizeof(*u));
	u->who = *who;
	u->counts = c->n;
	u->start_ms = SEC(c->start);
	u->end_ms = SEC(c->end);
	u->idle_gap_ms = GAP_MS;
	u->day = c->day;
	u->day_start_ms = SEC(c->day_start);
	u->night = c->night;
	u->quiet_from_ms = SEC(c->quiet_from);
	u->quiet_to_ms = SEC(c->quiet_to);
	u->ttl_ms = TTL_MS;
}

/* ---- running the table ---- */

static int user_matches(const struct vwant *w, const struct fg_state_user *u)
{
	if (!w->found)
		return !u->found && !u->last_ms && !u->active_ms && !u->exposure[0];
	return u->found && u->last_ms == SEC(w->last) && u->session_start_ms == SEC(w->sess) && u->day == w->day &&
	       u->active_ms == w->act * 1000 && u->night == w->night && u->quiet_ms == w->quiet * 1000 &&
	       u->exposure[0] == w->x[0] && u->exposure[1] == w->x[1];
}

static void check_read(struct env *e, const char *backend, size_t i, const struct users *us)
{
	const struct vwant *w = &vecs[i].want;
	struct res r;
	const struct fg_state_user *u = &r.u;

	assert_int_equal(do_read(e, &us->who, &r), 0);
	if (user_matches(w, u))
		return;
	print_message("%s: vector %zu (%s, keys %s): want found=%d last=%" PRId64 " sess=%" PRId64 " day=%" PRId64
	              " act=%" PRId64 " night=%" PRId64 " quiet=%" PRId64 " x=%" PRIu64 ",%" PRIu64 "\n",
	              backend, i, vecs[i].scenario, vecs[i].keys, w->found, w->last, w->sess, w->day, w->act,
	              w->night, w->quiet, w->x[0], w->x[1]);
	print_message("%*s got found=%d last=%" PRId64 " sess=%" PRId64 " day=%" PRId64 " act=%" PRId64
	              " night=%" PRId64 " quiet=%" PRId64 " x=%" PRIu64 ",%" PRIu64 "\n",
	              (int)strlen(backend), "", u->found, (u->last_ms - T0) / 1000, (u->session_start_ms - T0) / 1000,
	              u->day, u->active_ms / 1000, u->night, u->quiet_ms / 1000, u->exposure[0], u->exposure[1]);
	fail();
}

/* V_TTL on memory: present until TTL_MS after the last update and, when
 * <last> (the row ends its scenario), absent from then on: that read
 * reclaims the record, so only a scenario's last row may look. */
static void check_ttl_mem(struct env *e, const struct users *us, int last)
{
	struct fg_state_who one = us->who;
	struct res r;

	one.nkeys = 1;
	fg_state_mem_set_now(e->s, e->now_ms + TTL_MS - 1);
	assert_int_equal(do_read(e, &one, &r), 0);
	assert_int_equal(r.u.found, 1);
	if (last) {
		fg_state_mem_set_now(e->s, e->now_ms + TTL_MS);
		assert_int_equal(do_read(e, &one, &r), 0);
		assert_int_equal(r.u.found, 0);
	}
	fg_state_mem_set_now(e->s, e->now_ms);
}

/* PTTL of <key> on the test's server, through a connection of its own. */
static long long redis_pttl(struct env *e, const char *key)
{
	redisContext *c = redisConnect("127.0.0.1", e->srv.port);
	redisReply *rep;
	long long ttl;

	assert_true(c && !c->err);
	rep = redisCommand(c, "PTTL %s", key);
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	ttl = rep->integer;
	freeReplyObject(rep);
	redisFree(c);
	return ttl;
}

static void check_ttl_redis(struct env *e, const struct users *us)
{
	char key[256];
	long long ttl;

	snprintf(key, sizeof(key), PREFIX "{%s}", us->keys[0]);
	ttl = redis_pttl(e, key);
	assert_true(ttl <= TTL_MS);
	assert_true(ttl > TTL_MS - 5000LL * time_factor);
}

static void run_vec(struct env *e, const char *backend, size_t i)
{
	const struct vec *v = &vecs[i];
	struct fg_state_update u;
	struct users us;

	users_of(&us, v->scenario, v->keys);
	switch (v->op) {
	case V_UPDATE:
	case V_QUIET:
	case V_DAILY:
		/* Replay's habit: the time is the end of the call. */
		update_of(&u, &us.who, &v->call);
		u.quiet_only = v->op == V_QUIET;
		u.cap_ms = v->op == V_DAILY ? v->call.cap * 1000 : 0;
		e->now_ms = u.end_ms;
		fg_state_mem_set_now(e->s, e->now_ms);
		assert_int_equal(do_update(e, &u), 0);
		break;
	case V_ERASE:
		assert_int_equal(do_erase(e, &us.who), 0);
		break;
	case V_TTL:
		if (e->base)
			check_ttl_redis(e, &us);
		else
			check_ttl_mem(e, &us, i + 1 == NVECS || strcmp(vecs[i + 1].scenario, v->scenario) != 0);
		return;
	case V_READ:
		break;
	}
	check_read(e, backend, i, &us);
}

static void run_table(struct env *e, const char *backend)
{
	for (size_t i = 0; i < NVECS; i++)
		run_vec(e, backend, i);
}

/* ---- setup ---- */

static int setup_mem(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (!e || fg_state_mem_new(&e->s, PREFIX, 0) < 0)
		return -1;
	*state = e;
	return 0;
}

/* A Redis backend on the test's server: <timeout_us> per operation (0:
 * the default), the link dropped when a command waits <stall_ms>. */
static void redis_state_new(struct env *e, int64_t timeout_us, int stall_ms)
{
	struct fg_state_redis_config cfg;
	const char *why = NULL;
	uint64_t end;

	memset(&cfg, 0, sizeof(cfg));
	cfg.link.address = e->srv.addr;
	cfg.link.connect_timeout_us = 300 * MS * time_factor;
	cfg.link.stall_timeout_us = (int64_t)stall_ms * MS * time_factor;
	cfg.link.backoff_initial_us = 20 * MS;
	cfg.link.backoff_max_us = 200 * MS;
	cfg.link.max_inflight = 64;
	cfg.prefix = PREFIX;
	cfg.timeout_us = timeout_us;
	assert_int_equal(fg_state_redis_new(&e->s, e->base, &cfg, &why), 0);
	end = fg_clock_now_us() + 2000u * MS * (uint64_t)time_factor;
	while (fg_redis_get_state(fg_state_redis_link(e->s)) != FG_REDIS_CONNECTED && fg_clock_now_us() < end)
		event_base_loop(e->base, EVLOOP_ONCE);
	assert_int_equal(fg_redis_get_state(fg_state_redis_link(e->s)), FG_REDIS_CONNECTED);
}

static int setup_redis(void **state)
{
	struct env *e;
	void *dir;

	if (!redis_server[0])
		return 0;
	e = calloc(1, sizeof(*e));
	if (!e || fg_test_dir_new(&dir, "unused") < 0)
		return -1;
	e->dir = dir;
	e->base = event_base_new();
	e->tick = event_new(e->base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(e->tick, &(struct timeval){ 0, 5000 });
	fg_redisserver_init(&e->srv, redis_server, e->dir->path, NULL);
	fg_redisserver_start(&e->srv, time_factor);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	void *dir;

	if (!e)
		return 0;
	fg_state_free(e->s);
	if (e->base) {
		fg_redisserver_kill(&e->srv);
		event_free(e->tick);
		event_base_free(e->base);
		dir = e->dir;
		fg_test_dir_free(&dir);
	}
	free(e);
	*state = NULL;
	return 0;
}

#define NEED_REDIS() do { if (!redis_server[0]) skip(); } while (0)

/* ---- both backends ---- */

static void test_table_mem(void **state)
{
	run_table(*state, "memory");
}

static void test_table_redis(void **state)
{
	NEED_REDIS();
	redis_state_new(*state, 2000 * MS, 3000);
	run_table(*state, "redis");
}

/* Classes the read names in its own order; one named twice in an update
 * is added twice; a day change drops the old day's classes. */
static void run_classes(struct env *e)
{
	static const char *const upd[] = { "video", "video", "news" };
	static const char *const asked[] = { "ads", "video", "news", "sports" };
	static const uint32_t counts[] = { 1, 2, 4 };
	struct users us;
	struct fg_state_update u;
	struct res r;

	users_of(&us, "classes", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 0, 0 } });
	u.who.classes = upd;
	u.who.nclasses = 3;
	u.counts = counts;
	assert_int_equal(do_update(e, &u), 0);
	us.who.classes = asked;
	us.who.nclasses = 4;
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.exposure[0], 0);
	assert_int_equal(r.u.exposure[1], 3);
	assert_int_equal(r.u.exposure[2], 4);
	assert_int_equal(r.u.exposure[3], 0);

	u.day = D + 1;
	u.who.nclasses = 1;
	assert_int_equal(do_update(e, &u), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.day, D + 1);
	assert_int_equal(r.u.exposure[1], 1);
	assert_int_equal(r.u.exposure[2], 0);

	/* No classes at all: a read of the times alone. */
	us.who.nclasses = 0;
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.found, 1);
	assert_int_equal(r.u.last_ms, SEC(60));
}

static void test_classes_mem(void **state)
{
	run_classes(*state);
}

static void test_classes_redis(void **state)
{
	NEED_REDIS();
	redis_state_new(*state, 2000 * MS, 3000);
	run_classes(*state);
}

/* ---- argument checks (fg_state.c, the same for every backend) ---- */

/* <who> is refused at once, every operation, without a callback. */
static void refused_who(struct env *e, const struct fg_state_who *who)
{
	struct res r = { 0 };
	struct fg_state_update u;
	static const uint32_t counts[FG_STATE_MAX_CLASSES + 1];

	assert_int_equal(fg_state_check_who(who), FG_EINVAL);
	assert_int_equal(fg_state_read(e->s, who, read_cb, &r), FG_EINVAL);
	assert_int_equal(fg_state_erase(e->s, who, done_cb, &r), FG_EINVAL);
	update_of(&u, who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 0, 0 } });
	u.counts = counts;
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r), FG_EINVAL);
	assert_int_equal(r.calls, 0);
}

static void accepted_who(struct env *e, const struct fg_state_who *who)
{
	struct res r;

	assert_int_equal(fg_state_check_who(who), 0);
	assert_int_equal(do_read(e, who, &r), 0);
}

/* Counts of keys and classes, and their arrays. */
static void test_invalid_who(void **state)
{
	struct env *e = *state;
	const char *keys[FG_STATE_MAX_KEYS + 1], *cl[FG_STATE_MAX_CLASSES + 1];
	struct fg_state_who who = { keys, 1, cl, 0 };

	for (size_t i = 0; i <= FG_STATE_MAX_KEYS; i++)
		keys[i] = "k1:00ff";
	for (size_t i = 0; i <= FG_STATE_MAX_CLASSES; i++)
		cl[i] = "video";
	accepted_who(e, &who);
	who.nkeys = 0;
	refused_who(e, &who);
	who.nkeys = FG_STATE_MAX_KEYS + 1;
	refused_who(e, &who);
	who.nkeys = FG_STATE_MAX_KEYS;
	accepted_who(e, &who);
	who.keys = NULL;
	refused_who(e, &who);
	who.keys = keys;
	who.nkeys = 1;
	refused_who(e, &(struct fg_state_who){ NULL, 0, NULL, 0 });
	who.nclasses = FG_STATE_MAX_CLASSES;
	accepted_who(e, &who);
	who.nclasses = FG_STATE_MAX_CLASSES + 1;
	refused_who(e, &who);
	who.nclasses = 1;
	who.classes = NULL;
	refused_who(e, &who);
	assert_int_equal(fg_state_check_who(NULL), FG_EINVAL);
}

/* Keys: the pseudonym alphabet, 1..FG_KEYRING_PSEUDONYM_MAX - 1 bytes;
 * classes: [a-z0-9_], 1..FG_STATE_CLASS_MAX bytes. */
static void test_invalid_names(void **state)
{
	struct env *e = *state;
	static const char *const bad_keys[] = { "", "k1:{ab}", "k1:a}", "user 42", "k1:\n", "alice@example.com" };
	static const char *const bad_classes[] = { "", "Video", "x:y", "a-b", "news feed" };
	char longest[FG_KEYRING_PSEUDONYM_MAX + 1], cls[FG_STATE_CLASS_MAX + 2];
	const char *keys[1] = { "k1:00ff" }, *cl[1] = { "video" };
	struct fg_state_who who = { keys, 1, cl, 1 };

	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		keys[0] = bad_keys[i];
		refused_who(e, &who);
	}
	/* <checked> spares a call's update the check its read made; erasure
	 * (a support tool's input) is checked whatever it says */
	{
		struct res r = { 0 };
		keys[0] = "k1:{ab}";
		who.checked = 1;
		assert_int_equal(fg_state_erase(e->s, &who, done_cb, &r), FG_EINVAL);
		assert_int_equal(fg_state_check_who(&who), FG_EINVAL);
		assert_int_equal(r.calls, 0);
		keys[0] = "k1:00ff";
		accepted_who(e, &who);
		who.checked = 0;
	}
	memset(longest, 'a', sizeof(longest));
	longest[FG_KEYRING_PSEUDONYM_MAX - 1] = '\0';
	keys[0] = longest;
	accepted_who(e, &who);
	longest[FG_KEYRING_PSEUDONYM_MAX - 1] = 'a';
	longest[FG_KEYRING_PSEUDONYM_MAX] = '\0';
	refused_who(e, &who);
	keys[0] = "k1:00ff";
	for (size_t i = 0; i < sizeof(bad_classes) / sizeof(bad_classes[0]); i++) {
		cl[0] = bad_classes[i];
		refused_who(e, &who);
	}
	memset(cls, 'c', sizeof(cls));
	cls[FG_STATE_CLASS_MAX] = '\0';
	cl[0] = cls;
	accepted_who(e, &who);
	cls[FG_STATE_CLASS_MAX] = 'c';
	cls[FG_STATE_CLASS_MAX + 1] = '\0';
	refused_who(e, &who);
}

/* <u> is refused at once, without a callback. */
static void refused_update(struct env *e, const struct fg_state_update *u)
{
	struct res r = { 0 };

	assert_int_equal(fg_state_update(e->s, u, done_cb, &r), FG_EINVAL);
	assert_int_equal(r.calls, 0);
}

static void test_invalid_update(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u, good;
	struct res r = { 0 };
	int64_t *const times[] = { &u.start_ms, &u.end_ms, &u.idle_gap_ms, &u.day_start_ms,
	                           &u.quiet_from_ms, &u.quiet_to_ms, &u.ttl_ms };

	users_of(&us, "invalid", "A");
	update_of(&good, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 1 } });
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		u = good;
		*times[i] = -1;
		refused_update(e, &u);
		*times[i] = FG_STATE_VALUE_MAX + 1;
		refused_update(e, &u);
		*times[i] = FG_STATE_VALUE_MAX;
		assert_int_equal(do_update(e, &u), 0);
	}
	u = good;
	u.ttl_ms = 0;
	refused_update(e, &u);
	u = good;
	u.counts = NULL;
	refused_update(e, &u);
	u.who.nclasses = 0;
	assert_int_equal(do_update(e, &u), 0);
	u = good;
	u.day = FG_STATE_VALUE_MAX + 1;
	refused_update(e, &u);
	u.day = -FG_STATE_VALUE_MAX;
	u.night = -FG_STATE_VALUE_MAX - 1;
	refused_update(e, &u);
	u.night = -1;
	assert_int_equal(do_update(e, &u), 0);

	assert_int_equal(fg_state_update(e->s, &good, NULL, &r), FG_EINVAL);
	assert_int_equal(fg_state_update(NULL, &good, done_cb, &r), FG_EINVAL);
	assert_int_equal(fg_state_update(e->s, NULL, done_cb, &r), FG_EINVAL);
	assert_int_equal(fg_state_read(e->s, &us.who, NULL, &r), FG_EINVAL);
	assert_int_equal(fg_state_erase(NULL, &us.who, done_cb, &r), FG_EINVAL);
	assert_int_equal(r.calls, 0);
	fg_state_free(NULL);
}

/* ---- memory only ---- */

static int update_user(struct env *e, const char *scenario, const char *letters, int64_t start, int64_t end)
{
	struct users us;
	struct fg_state_update u;

	users_of(&us, scenario, letters);
	update_of(&u, &us.who, &(struct vcall){ start, end, DAY_D, NIGHT_N, { 1, 0 } });
	return do_update(e, &u);
}

static int user_found(struct env *e, const char *scenario, const char *letters)
{
	struct users us;
	struct res r;

	users_of(&us, scenario, letters);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	return r.u.found;
}

/* At most <max_records>: past it FG_ETOOBIG in the callback and nothing
 * stored; erasure and expiry give the room back; updates of users who
 * have a record (moves included) need none. */
static void test_mem_bound(void **state)
{
	struct env *e = *state;

	fg_state_free(e->s);
	e->s = NULL;
	assert_int_equal(fg_state_mem_new(&e->s, NULL, 2), 0);
	fg_state_mem_set_now(e->s, T0);
	assert_int_equal(update_user(e, "bound", "A", 0, 60), 0);
	assert_int_equal(update_user(e, "bound", "B", 0, 60), 0);
	assert_int_equal(update_user(e, "bound", "C", 0, 60), FG_ETOOBIG);
	assert_int_equal(user_found(e, "bound", "C"), 0);
	assert_int_equal(update_user(e, "bound", "B", 60, 120), 0);
	assert_int_equal(update_user(e, "bound", "DB", 120, 180), 0);
	assert_int_equal(user_found(e, "bound", "D"), 1);

	{
		struct users us;
		users_of(&us, "bound", "A");
		assert_int_equal(do_erase(e, &us.who), 0);
	}
	assert_int_equal(update_user(e, "bound", "C", 0, 60), 0);
	assert_int_equal(update_user(e, "bound", "E", 0, 60), FG_ETOOBIG);

	/* Both records expired: the next new one reclaims their room. */
	fg_state_mem_set_now(e->s, T0 + TTL_MS);
	assert_int_equal(update_user(e, "bound", "E", 0, 60), 0);
	assert_int_equal(update_user(e, "bound", "F", 0, 60), 0);
	assert_int_equal(update_user(e, "bound", "G", 0, 60), FG_ETOOBIG);
	assert_int_equal(user_found(e, "bound", "C"), 0);
	assert_int_equal(user_found(e, "bound", "E"), 1);
}

/* fg_state_mem_fail: the operations asked for fail as a Redis backend's
 * do (down and busy refused at the submit, timeout and error in the
 * callback) and change nothing; 0 ends it.  Replay gives a recorded call
 * the daemon's state failure with it. */
static void test_mem_fail(void **state)
{
	struct env *e = *state;
	struct fg_state_update u;
	struct users us;
	struct res r;

	users_of(&us, "fail", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });
	fg_state_mem_fail(e->s, FG_EUNAVAIL, FG_STATE_MEM_FAIL_READ | FG_STATE_MEM_FAIL_UPDATE);
	memset(&r, 0, sizeof(r));
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r), FG_EUNAVAIL);
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r), FG_EUNAVAIL);
	assert_int_equal(r.calls, 0);
	fg_state_mem_fail(e->s, FG_ETIMEOUT, FG_STATE_MEM_FAIL_READ);
	assert_int_equal(do_read(e, &us.who, &r), FG_ETIMEOUT);
	assert_int_equal(do_update(e, &u), 0);              /* only reads fail */
	fg_state_mem_fail(e->s, FG_EPROTO, FG_STATE_MEM_FAIL_UPDATE);
	assert_int_equal(do_update(e, &u), FG_EPROTO);
	fg_state_mem_fail(e->s, FG_EBUSY, FG_STATE_MEM_FAIL_READ);
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r), FG_EBUSY);
	fg_state_mem_fail(e->s, 0, FG_STATE_MEM_FAIL_READ);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.found, 1);
	assert_int_equal(r.u.last_ms, SEC(60));            /* the one update that went through */
	assert_int_equal(r.u.active_ms, 60 * 1000);
}

/* fg_state_mem_defer: an update is held until the time reaches its
 * call's end, so a call of the same user that starts before then reads
 * the state without it (the daemon's calls in flight at once); held ones
 * apply in the order their calls ended; past <max_pending>, at once. */
static void test_mem_defer(void **state)
{
	struct env *e = *state;
	struct fg_state_update a, b, c;
	struct users us;
	struct res r;

	users_of(&us, "defer", "A");
	fg_state_mem_defer(e->s, 2);
	fg_state_mem_set_now(e->s, SEC(0));
	/* a: 0..60 s with 3 videos; b, started at 10 s, ends first (30 s) */
	update_of(&a, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 3, 0 } });
	update_of(&b, &us.who, &(struct vcall){ 10, 30, DAY_D, NIGHT_N, { 2, 0 } });
	assert_int_equal(do_update(e, &a), 0);
	fg_state_mem_set_now(e->s, SEC(10));
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.found, 0);                     /* a is still in flight */
	assert_int_equal(do_update(e, &b), 0);
	fg_state_mem_set_now(e->s, SEC(30));
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.found, 1);                     /* b ended: it is in */
	assert_int_equal(r.u.last_ms, SEC(30));
	assert_int_equal(r.u.exposure[0], 2);
	fg_state_mem_set_now(e->s, SEC(61));
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.last_ms, SEC(60));             /* a after b: overlapping, counted once */
	assert_int_equal(r.u.session_start_ms, SEC(10));
	assert_int_equal(r.u.active_ms, 50 * 1000);
	assert_int_equal(r.u.exposure[0], 5);
	/* a call that ends when it is made is not held */
	update_of(&c, &us.who, &(struct vcall){ 61, 61, DAY_D, NIGHT_N, { 1, 0 } });
	assert_int_equal(do_update(e, &c), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.exposure[0], 6);
	/* at most 2 held: the third applies at once */
	update_of(&a, &us.who, &(struct vcall){ 61, 100, DAY_D, NIGHT_N, { 1, 0 } });
	assert_int_equal(do_update(e, &a), 0);
	assert_int_equal(do_update(e, &a), 0);
	assert_int_equal(do_update(e, &a), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.exposure[0], 7);
	fg_state_mem_set_now(e->s, SEC(100));
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.exposure[0], 9);
	/* held at free: freed with the table (no leak under valgrind, ASan) */
	update_of(&a, &us.who, &(struct vcall){ 100, 200, DAY_D, NIGHT_N, { 1, 0 } });
	assert_int_equal(do_update(e, &a), 0);
}

/* Held updates in a random order of ends, one user each: after each step
 * of the clock exactly the users whose call has ended have a record (the
 * heap gives back every due one and no other); past the bound, one more
 * is applied at once and counted. */
static void test_mem_defer_random(void **state)
{
	enum { NHELD = 400 };
	struct env *e = *state;
	static int64_t end[NHELD];
	uint32_t seed = 12345;
	char scenario[32];
	int64_t now;
	size_t i;

	fg_state_mem_defer(e->s, NHELD);
	fg_state_mem_set_now(e->s, SEC(0));
	for (i = 0; i < NHELD; i++) {
		struct fg_state_update u;
		struct users us;
		seed = seed * 1103515245u + 12345u;
		end[i] = 1 + (seed >> 8) % 1000;
		snprintf(scenario, sizeof(scenario), "rnd%zu", i);
		users_of(&us, scenario, "A");
		update_of(&u, &us.who, &(struct vcall){ 0, end[i], DAY_D, NIGHT_N, { 1, 0 } });
		assert_int_equal(do_update(e, &u), 0);
	}
	assert_int_equal(fg_state_mem_not_held(e->s), 0);
	for (now = 0; now <= 1000; now += 37) {
		fg_state_mem_set_now(e->s, SEC(now));
		for (i = 0; i < NHELD; i++) {
			snprintf(scenario, sizeof(scenario), "rnd%zu", i);
			assert_int_equal(user_found(e, scenario, "A"), end[i] <= now);
		}
	}
	/* NHELD held again: the next applies at once */
	fg_state_mem_set_now(e->s, SEC(1000));              /* every random one in */
	for (i = 0; i <= NHELD; i++) {
		struct fg_state_update u;
		struct users us;
		snprintf(scenario, sizeof(scenario), "late%zu", i);
		users_of(&us, scenario, "A");
		update_of(&u, &us.who, &(struct vcall){ 1000, 2000, DAY_D, NIGHT_N, { 1, 0 } });
		assert_int_equal(do_update(e, &u), 0);
	}
	assert_int_equal(fg_state_mem_not_held(e->s), 1);
	assert_int_equal(user_found(e, "late400", "A"), 1);    /* the one past NHELD */
	assert_int_equal(user_found(e, "late0", "A"), 0);
}

/* Many users: the table grows and finds every one of them. */
static void test_mem_many(void **state)
{
	struct env *e = *state;
	char scenario[32];

	for (int i = 0; i < 3000; i++) {
		snprintf(scenario, sizeof(scenario), "many%d", i);
		assert_int_equal(update_user(e, scenario, "A", 0, i), 0);
	}
	for (int i = 0; i < 3000; i += 7) {
		struct users us;
		struct res r;
		snprintf(scenario, sizeof(scenario), "many%d", i);
		users_of(&us, scenario, "A");
		assert_int_equal(do_read(e, &us.who, &r), 0);
		assert_int_equal(r.u.last_ms, SEC(i));
	}
}

/* FG_STATE_MEM_MAX_COUNTERS exposure counters per record; an update that
 * needs more changes nothing; the next day starts from none. */
static void test_mem_counters(void **state)
{
	struct env *e = *state;
	char names[FG_STATE_MEM_MAX_COUNTERS + 1][8];
	const char *cl[FG_STATE_MEM_MAX_COUNTERS + 1];
	static const uint32_t ones[FG_STATE_MAX_CLASSES] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	struct users us;
	struct fg_state_update u;
	struct res r;

	for (int i = 0; i <= FG_STATE_MEM_MAX_COUNTERS; i++) {
		snprintf(names[i], sizeof(names[i]), "c%02d", i);
		cl[i] = names[i];
	}
	users_of(&us, "counters", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 0, 0 } });
	u.counts = ones;
	u.who.nclasses = FG_STATE_MAX_CLASSES;
	for (int i = 0; i < FG_STATE_MEM_MAX_COUNTERS; i += FG_STATE_MAX_CLASSES) {
		u.who.classes = cl + i;
		assert_int_equal(do_update(e, &u), 0);
	}
	/* c49..c64: c64 is one too many. */
	u.who.classes = cl + FG_STATE_MEM_MAX_COUNTERS - FG_STATE_MAX_CLASSES + 1;
	u.start_ms = u.end_ms = SEC(100);
	assert_int_equal(do_update(e, &u), FG_ETOOBIG);
	us.who.classes = u.who.classes;
	us.who.nclasses = FG_STATE_MAX_CLASSES;
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.last_ms, SEC(60));
	assert_int_equal(r.u.exposure[0], 1);
	assert_int_equal(r.u.exposure[FG_STATE_MAX_CLASSES - 1], 0);

	u.day = D + 1;
	assert_int_equal(do_update(e, &u), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.last_ms, SEC(100));
	assert_int_equal(r.u.exposure[0], 1);
	assert_int_equal(r.u.exposure[FG_STATE_MAX_CLASSES - 1], 1);
	us.who.classes = cl;
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.exposure[0], 0);
}

static void test_mem_new(void **state)
{
	struct fg_state *s = NULL;
	char longp[FG_STATE_PREFIX_MAX + 2];

	assert_int_equal(fg_state_mem_new(&s, "fg{x}:", 0), FG_EINVAL);
	memset(longp, 'p', sizeof(longp));
	longp[FG_STATE_PREFIX_MAX + 1] = '\0';
	assert_int_equal(fg_state_mem_new(&s, longp, 0), FG_EINVAL);
	longp[FG_STATE_PREFIX_MAX] = '\0';
	assert_int_equal(fg_state_mem_new(&s, longp, 0), 0);
	assert_string_equal(s->ops->name, "memory");
	assert_null(fg_state_redis_link(s));
	fg_state_mem_set_now(NULL, 1);
	fg_state_free(s);
}

/* ---- Redis only ---- */

/* A plain synchronous connection to the test's server, for looking. */
static redisContext *peek(struct env *e)
{
	redisContext *c = redisConnect("127.0.0.1", e->srv.port);

	assert_true(c && !c->err);
	return c;
}

static void peek_cmd(redisContext *c, const char *cmd, const char *key, const char *a1, const char *a2)
{
	const char *argv[4] = { cmd, key, a1, a2 };
	redisReply *rep = redisCommandArgv(c, a2 ? 4 : a1 ? 3 : key ? 2 : 1, argv, NULL);

	assert_non_null(rep);
	assert_int_not_equal(rep->type, REDIS_REPLY_ERROR);
	freeReplyObject(rep);
}

/* The keys on the server, sorted, joined by spaces. */
static void all_keys(struct env *e, char *out, size_t len)
{
	redisContext *c = peek(e);
	redisReply *rep = redisCommand(c, "KEYS *");

	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	out[0] = '\0';
	for (size_t i = 0; i < rep->elements; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "", rep->element[i]->str);
	freeReplyObject(rep);
	redisFree(c);
}

/* The hash at <key> as "field=value ..." in a fixed field order; fails
 * when it holds any other field. */
static void hash_of(struct env *e, const char *key, char *out, size_t len)
{
	redisContext *c = peek(e);
	redisReply *rep = redisCommand(c, "HGETALL %s", key);
	const char *order[] = { "last", "sess", "day", "act", "night", "qact", "x:video", "x:ads", "x:news" };
	size_t nf = 0;

	assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
	out[0] = '\0';
	for (size_t f = 0; f < sizeof(order) / sizeof(order[0]); f++)
		for (size_t i = 0; i + 1 < rep->elements; i += 2)
			if (strcmp(rep->element[i]->str, order[f]) == 0) {
				snprintf(out + strlen(out), len - strlen(out), "%s%s=%s", nf++ ? " " : "", order[f],
				         rep->element[i + 1]->str);
			}
	assert_int_equal(rep->elements, 2 * nf);
	freeReplyObject(rep);
	redisFree(c);
}

/* Keys are <prefix>{<pseudonym>} and nothing else; fields as documented;
 * a day change leaves only the new day's x: fields; the TTL is set; a
 * move and an erasure leave no key behind. */
static void test_redis_layout(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	char keys[1024], hash[512], want[512], key_a[256], key_b[256];

	NEED_REDIS();
	redis_state_new(e, 2000 * MS, 3000);
	users_of(&us, "layout", "BA");
	snprintf(key_a, sizeof(key_a), PREFIX "{%s}", us.keys[1]);
	snprintf(key_b, sizeof(key_b), PREFIX "{%s}", us.keys[0]);
	us.who.keys++;
	us.who.nkeys = 1;
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 3, 1 } });
	assert_int_equal(do_update(e, &u), 0);
	all_keys(e, keys, sizeof(keys));
	assert_string_equal(keys, key_a);
	hash_of(e, key_a, hash, sizeof(hash));
	snprintf(want, sizeof(want), "last=%" PRId64 " sess=%" PRId64 " day=%d act=60000 night=%d qact=0 x:video=3 x:ads=1",
	         SEC(60), SEC(0), D, N);
	assert_string_equal(hash, want);
	assert_true(redis_pttl(e, key_a) > TTL_MS - 5000LL * time_factor);

	/* Next day, only video: x:ads of the old day is gone. */
	u.day = D + 1;
	u.who.nclasses = 1;
	u.start_ms = SEC(100);
	u.end_ms = SEC(130);
	assert_int_equal(do_update(e, &u), 0);
	hash_of(e, key_a, hash, sizeof(hash));
	snprintf(want, sizeof(want), "last=%" PRId64 " sess=%" PRId64 " day=%d act=70000 night=%d qact=0 x:video=3",
	         SEC(130), SEC(0), D + 1, N);
	assert_string_equal(hash, want);

	/* Moved under the new key: one key, with its TTL. */
	us.who.keys--;
	us.who.nkeys = 2;
	u.who = us.who;
	u.who.nclasses = 1;
	assert_int_equal(do_update(e, &u), 0);
	all_keys(e, keys, sizeof(keys));
	assert_string_equal(keys, key_b);
	assert_true(redis_pttl(e, key_b) > TTL_MS - 5000LL * time_factor);
	assert_int_equal(do_erase(e, &us.who), 0);
	all_keys(e, keys, sizeof(keys));
	assert_string_equal(keys, "");
}

/* Records that are not ours: FG_EPROTO, and an update writes nothing. */
static void test_redis_damaged(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	struct res r;
	redisContext *c;
	redisReply *rep;
	char key[256];
	static const char *const bad[] = { "abc", "1.5", "1e400", "" };

	NEED_REDIS();
	redis_state_new(e, 2000 * MS, 3000);
	c = peek(e);
	users_of(&us, "damaged", "A");
	snprintf(key, sizeof(key), PREFIX "{%s}", us.keys[0]);
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });

	peek_cmd(c, "SET", key, "not a hash", NULL);
	assert_int_equal(do_read(e, &us.who, &r), FG_EPROTO);
	assert_int_equal(do_update(e, &u), FG_EPROTO);
	assert_int_equal(do_erase(e, &us.who), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		peek_cmd(c, "HSET", key, "act", bad[i]);
		assert_int_equal(do_read(e, &us.who, &r), FG_EPROTO);
		assert_int_equal(do_update(e, &u), FG_EPROTO);
		rep = redisCommand(c, "HLEN %s", key);
		assert_int_equal(rep->integer, 1);
		freeReplyObject(rep);
	}
	assert_int_equal(do_erase(e, &us.who), 0);

	/* Redis forgot the scripts (a restart or failover): fg_redis loads
	 * them again; the caller sees nothing of it. */
	peek_cmd(c, "SCRIPT", "FLUSH", NULL, NULL);
	assert_int_equal(do_update(e, &u), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.active_ms, 60000);
	redisFree(c);
}

/* Redis killed: the operation waiting gets its callback once (the link
 * saw the connection close, or the timeout came first); then every call
 * fails at once until Redis is back. */
static void test_redis_killed(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	struct res r = { 0 };
	uint64_t t0;

	NEED_REDIS();
	redis_state_new(e, 500 * MS, 1000);
	users_of(&us, "killed", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r), 0);
	fg_redisserver_kill(&e->srv);
	assert_true(loop_until(e, &r.calls, 1, 2000));
	assert_true(r.rc == FG_EUNAVAIL || r.rc == FG_ETIMEOUT);
	loop_for(e, 50);
	assert_int_equal(r.calls, 1);
	assert_int_not_equal(fg_redis_get_state(fg_state_redis_link(e->s)), FG_REDIS_CONNECTED);

	memset(&r, 0, sizeof(r));
	t0 = fg_clock_now_us();
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r), FG_EUNAVAIL);
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r), FG_EUNAVAIL);
	assert_int_equal(fg_state_erase(e->s, &us.who, done_cb, &r), FG_EUNAVAIL);
	assert_true(fg_clock_now_us() - t0 < 10u * MS * (uint64_t)time_factor);
	loop_for(e, 50);
	assert_int_equal(r.calls, 0);

	/* Back on the same port, empty: the link reconnects by itself. */
	fg_redisserver_start(&e->srv, time_factor);
	t0 = fg_clock_now_us() + 2000u * MS * (uint64_t)time_factor;
	while (fg_redis_get_state(fg_state_redis_link(e->s)) != FG_REDIS_CONNECTED && fg_clock_now_us() < t0)
		event_base_loop(e->base, EVLOOP_ONCE);
	assert_int_equal(do_update(e, &u), 0);
	assert_int_equal(do_read(e, &us.who, &r), 0);
	assert_int_equal(r.u.active_ms, 60000);
}

/* Redis paused: every operation gets FG_ETIMEOUT within the default
 * timeout (20 ms) plus slack, once, even when the late answers come;
 * after the stall timeout calls fail at once. */
static void test_redis_paused(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	struct res r[3];
	uint64_t t0, slack = 150u * MS * (uint64_t)time_factor;
	int calls = 0;

	NEED_REDIS();
	redis_state_new(e, 0, 300);
	users_of(&us, "paused", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });
	memset(r, 0, sizeof(r));
	kill(e->srv.pid, SIGSTOP);
	t0 = fg_clock_now_us();
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r[0]), 0);
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r[1]), 0);
	assert_int_equal(fg_state_erase(e->s, &us.who, done_cb, &r[2]), 0);
	while (calls < 3 && fg_clock_now_us() - t0 < 2000u * MS * (uint64_t)time_factor) {
		event_base_loop(e->base, EVLOOP_ONCE);
		calls = r[0].calls + r[1].calls + r[2].calls;
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].rc, FG_ETIMEOUT);
		assert_true(r[i].at_us - t0 >= FG_STATE_REDIS_DEFAULT_TIMEOUT_US);
		assert_true(r[i].at_us - t0 <= FG_STATE_REDIS_DEFAULT_TIMEOUT_US + slack);
	}

	/* Still paused at the stall timeout: the link goes, calls fail fast. */
	loop_for(e, 400 * time_factor);
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r[0]), FG_EUNAVAIL);
	kill(e->srv.pid, SIGCONT);
	loop_for(e, 100);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r[i].calls, 1);
}

/* A callback that, as the backend is being freed, tries another read. */
struct again {
	struct fg_state *s;
	const struct fg_state_who *who;
	struct res first, second;
	int second_rc;
};

static void again_cb(void *arg, int rc)
{
	struct again *a = arg;

	done_cb(&a->first, rc);
	a->second_rc = fg_state_read(a->s, a->who, read_cb, &a->second);
}

/* Freed with operations pending: each callback once, FG_EUNAVAIL, before
 * fg_state_free returns; a callback may start another operation, which
 * fails at once. */
static void test_redis_free_pending(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	struct res r[3];
	struct again a;

	NEED_REDIS();
	redis_state_new(e, 2000 * MS, 3000);
	users_of(&us, "freed", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });
	memset(r, 0, sizeof(r));
	memset(&a, 0, sizeof(a));
	a.s = e->s;
	a.who = &us.who;
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r[0]), 0);
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r[1]), 0);
	assert_int_equal(fg_state_erase(e->s, &us.who, again_cb, &a), 0);
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r[2]), 0);
	fg_state_free(e->s);
	e->s = NULL;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].rc, FG_EUNAVAIL);
	}
	assert_int_equal(a.first.calls, 1);
	assert_int_equal(a.first.rc, FG_EUNAVAIL);
	assert_int_equal(a.second_rc, FG_EUNAVAIL);
	assert_int_equal(a.second.calls, 0);
}

/* Freed while Redis is paused: two operations timed out already, two
 * are still waiting; each callback once. */
static void test_redis_free_paused(void **state)
{
	struct env *e = *state;
	struct users us;
	struct fg_state_update u;
	struct res r[4];

	NEED_REDIS();
	redis_state_new(e, 20 * MS, 3000);
	users_of(&us, "freed", "A");
	update_of(&u, &us.who, &(struct vcall){ 0, 60, DAY_D, NIGHT_N, { 1, 0 } });
	memset(r, 0, sizeof(r));
	kill(e->srv.pid, SIGSTOP);
	assert_int_equal(fg_state_read(e->s, &us.who, read_cb, &r[0]), 0);
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r[1]), 0);
	assert_true(loop_until(e, &r[1].calls, 1, 1000));
	assert_int_equal(fg_state_update(e->s, &u, done_cb, &r[2]), 0);
	assert_int_equal(fg_state_erase(e->s, &us.who, done_cb, &r[3]), 0);
	fg_state_free(e->s);
	e->s = NULL;
	kill(e->srv.pid, SIGCONT);
	loop_for(e, 50);
	for (int i = 0; i < 4; i++)
		assert_int_equal(r[i].calls, 1);
	assert_int_equal(r[0].rc, FG_ETIMEOUT);
	assert_int_equal(r[1].rc, FG_ETIMEOUT);
	assert_int_equal(r[2].rc, FG_EUNAVAIL);
	assert_int_equal(r[3].rc, FG_EUNAVAIL);
}

/* Settings refused at once; before the first connect every call fails
 * at once. */
static void test_redis_new(void **state)
{
	struct event_base *base = event_base_new();
	struct fg_state_redis_config cfg = { .link.address = "127.0.0.1:1" };
	struct fg_state *s = NULL;
	const char *why = NULL;
	char longp[FG_STATE_PREFIX_MAX + 2];
	struct users us;
	struct res r = { 0 };

	cfg.prefix = "fg:{x}";
	assert_int_equal(fg_state_redis_new(&s, base, &cfg, &why), FG_EINVAL);
	assert_non_null(strstr(why, "brace"));
	memset(longp, 'p', sizeof(longp));
	longp[FG_STATE_PREFIX_MAX + 1] = '\0';
	cfg.prefix = longp;
	assert_int_equal(fg_state_redis_new(&s, base, &cfg, &why), FG_EINVAL);
	cfg.prefix = NULL;
	cfg.timeout_us = -1;
	assert_int_equal(fg_state_redis_new(&s, base, &cfg, &why), FG_EINVAL);
	cfg.timeout_us = 0;
	cfg.link.address = "localhost:6379";
	assert_int_equal(fg_state_redis_new(&s, base, &cfg, &why), FG_EINVAL);
	assert_non_null(strstr(why, "numeric"));
	cfg.link.address = "127.0.0.1:1";
	assert_int_equal(fg_state_redis_new(&s, base, &cfg, &why), 0);
	assert_string_equal(s->ops->name, "redis");
	assert_non_null(fg_state_redis_link(s));
	assert_int_equal(fg_redis_get_state(fg_state_redis_link(s)), FG_REDIS_CONNECTING);
	users_of(&us, "new", "A");
	assert_int_equal(fg_state_read(s, &us.who, read_cb, &r), FG_EUNAVAIL);
	assert_int_equal(r.calls, 0);
	fg_state_free(s);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_table_mem, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_table_redis, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_classes_mem, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_classes_redis, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_who, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_names, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_update, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_bound, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_fail, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_defer, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_defer_random, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_many, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_mem_counters, setup_mem, teardown),
		cmocka_unit_test(test_mem_new),
		cmocka_unit_test_setup_teardown(test_redis_layout, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_redis_damaged, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_redis_killed, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_redis_paused, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_redis_free_pending, setup_redis, teardown),
		cmocka_unit_test_setup_teardown(test_redis_free_paused, setup_redis, teardown),
		cmocka_unit_test(test_redis_new),
	};
	const char *tf = getenv("FG_TIME_FACTOR");

	if (tf && atoi(tf) > 0)
		time_factor = atoi(tf);
	signal(SIGPIPE, SIG_IGN);
	if (!fg_redisserver_find(redis_server, sizeof(redis_server)))
		fprintf(stderr, "test_state: redis-server not found on PATH: the Redis half is skipped "
		                "(Debian: redis-server)\n");
	return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
