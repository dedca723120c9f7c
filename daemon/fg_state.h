/*
 * fg_state.h - per-user screen-time state: the backend interface that the
 * gate stage, feedguardctl and the replay tool use, and the one meaning of
 * every operation, which each backend implements (fg_state_redis: Lua
 * scripts on a worker's Redis link; fg_state_mem: an in-process table for
 * the unit tests and offline replay).
 *
 * A user's state is one record under each of the user's pseudonyms
 * (fg_keyring: "<key id>:<64 hex>"), newest key first.  A backend stores
 * it under <prefix>{<pseudonym>}: the braces are the Redis Cluster hash
 * tag, so one user's record lives on one shard.  Nothing in a record or a
 * key is a raw user id.
 *
 * Times are milliseconds since the Unix epoch, given by the caller (a
 * backend never reads a clock: Redis scripts never call TIME, and replay
 * runs on recorded times).  Days and nights are the caller's numbers
 * (fg_tz day numbers); the backend only compares them.
 *
 * The operations:
 *
 *   read    The record under the first of <keys> that has one (so a key
 *           rotation resets nobody: older pseudonyms are still read until
 *           their record expires).  Counters of another day or night than
 *           the record's are the caller's to ignore: read returns what is
 *           stored, with its <day> and <night>.
 *
 *   update  One feed call delivered, from <start_ms> to <end_ms>, atomically:
 *     1. if keys[0] has no record and a later key has one, the first such
 *        record moves to keys[0] (the older one is deleted);
 *     2. if the record has no day or an earlier one than <day>: active
 *        and every exposure counter restart at 0, and day = <day>; a
 *        record of a later day keeps its day and counters (days never go
 *        back: a user may name zones whose dates differ, and an update
 *        may land late, after one of the next day);
 *     3. likewise for nights: if the record's night is before <night>
 *        (or missing): quiet restarts at 0, and night = <night>; a later
 *        one is kept;
 *     4. when the record has no <last_ms>, or start_ms - last_ms >
 *        <idle_gap_ms>, a new session begins: from = session_start =
 *        start_ms; otherwise the gap counts as use: from = last_ms (also
 *        when start_ms < last_ms: calls that overlap count once);
 *     5. active += length of [from, end_ms] after <day_start_ms>;
 *        quiet += length of [from, end_ms] inside [quiet_from_ms,
 *        quiet_to_ms) (nothing when quiet_to_ms <= quiet_from_ms);
 *     6. last_ms = max(last_ms, end_ms);
 *     7. each exposure counter named in <classes> += its count;
 *     8. the record expires <ttl_ms> from now (the time it can matter:
 *        until the day and the night end, plus the idle gap).
 *     With <quiet_only> (the answer of quiet hours whose allowance is
 *     spent: no feed delivered, but the gap before it was the use that
 *     spent it) only this, so that the night's use stays spent however
 *     long the user waits between calls: step 1; then, unless the record's
 *     night is later than <night>, when it has a <last_ms> and start_ms -
 *     last_ms <= <idle_gap_ms>, quiet (restarted at 0 for a new night) +=
 *     length of [last_ms, end_ms] inside [quiet_from_ms, quiet_to_ms), night
 *     = <night>, and step 8.  Nothing else changes (active time, the
 *     session, last_ms, counters), and nothing is written when nothing is
 *     added.
 *     With <cap_ms> > 0 (the answer of a daily cap: no feed delivered, but
 *     the gap before it was the use that reached the cap) only this, so
 *     that the day's use stays at the cap however long the user waits
 *     between calls, and grows no further however often they ask: step 1;
 *     then, when the record has a <last_ms> and start_ms - last_ms <=
 *     <idle_gap_ms>, steps 2 and 3, active = max(active, min(active +
 *     length of [last_ms, end_ms] after <day_start_ms>, cap_ms)), and
 *     step 8.  Nothing else changes (quiet time, the session, last_ms,
 *     counters beyond the restarts of steps 2 and 3).
 *     Lengths are clamped at 0; counters saturate at FG_STATE_VALUE_MAX
 *     rather than wrap.  A class named twice in <classes> is added twice.
 *     An update that fails with FG_ETIMEOUT may still have been applied
 *     (Redis got it and answered late): callers must not retry it blindly.
 *
 *   erase   Delete the records under every one of <keys> (data-subject
 *           erasure: the caller passes the pseudonyms of every ring key).
 *
 * Callbacks.  Each operation that returns 0 calls its callback exactly
 * once, with 0 or a negative FG_E* (FG_ETIMEOUT: no answer within the
 * backend's timeout; FG_EUNAVAIL: the backend is down or was freed;
 * FG_EPROTO: an answer that does not parse, or a stored record that is
 * not one; FG_ETOOBIG: the backend is out of room, fg_state_mem's record
 * bound or a Redis at maxmemory).  A backend may call it before the
 * operation returns (fg_state_mem always does; fg_state_redis never
 * does), so a caller must be ready for both.  An operation that returns
 * non-zero never calls it: FG_EUNAVAIL (down), FG_EBUSY (too many
 * operations in flight), FG_EINVAL (a bad argument), FG_ENOMEM.  A
 * callback may start other operations on the same backend, but must not
 * free it (fg_redis has the same rule, for the same reason: the backend
 * is still inside its own code when the callback returns).
 *
 * Threading: a backend instance belongs to one thread (a worker's loop, or
 * the tool's main thread) and everything is called on it.
 */
#ifndef FG_STATE_H
#define FG_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "fg_keyring.h"

#define FG_STATE_MAX_KEYS FG_KEYRING_MAX_KEYS   /* pseudonyms of one user: one per ring key */
#define FG_STATE_MAX_CLASSES 16                 /* exposure counters read or added in one call */
#define FG_STATE_CLASS_MAX 64                   /* a counter's name, bytes ([a-z0-9_]) */
#define FG_STATE_PREFIX_MAX 64
#define FG_STATE_DEFAULT_PREFIX "fg:"

/* Times, day and night numbers and counters: at most this in magnitude,
 * the largest integer a Lua number (a double) holds exactly, so the Redis
 * scripts compute what fg_state_mem computes in int64. */
#define FG_STATE_VALUE_MAX ((INT64_C(1) << 53) - 1)

/* One user's record as read.  All zero when the user has none. */
struct fg_state_user {
	int found;                  /* 1: a record was read */
	int64_t last_ms;            /* end of the last delivered feed call; 0: none */
	int64_t session_start_ms;   /* start of the current session */
	int64_t day;                /* the day <active_ms> and <exposure> belong to */
	int64_t active_ms;          /* active feed time on <day> */
	int64_t night;              /* the night <quiet_ms> belongs to */
	int64_t quiet_ms;           /* active time in that night's quiet hours */
	uint64_t exposure[FG_STATE_MAX_CLASSES]; /* items delivered on <day>, per class the read asked for */
};

/* Which user, and which exposure counters. */
struct fg_state_who {
	const char *const *keys;    /* the user's pseudonyms, newest ring key first (borrowed) */
	size_t nkeys;               /* 1..FG_STATE_MAX_KEYS */
	const char *const *classes; /* exposure counter names (borrowed) */
	size_t nclasses;            /* 0..FG_STATE_MAX_CLASSES */
	unsigned checked;           /* 1: these very keys and classes passed fg_state_check_who()
	                               (an earlier operation of the same caller took them): the
	                               operations do not check them again.  0: checked here */
};

/* One delivered feed call (update); see the top of this file. */
struct fg_state_update {
	struct fg_state_who who;    /* <classes> are the counters to add to */
	const uint32_t *counts;     /* [who.nclasses]: items delivered per class */
	int64_t start_ms, end_ms;
	int64_t idle_gap_ms;
	int64_t day, day_start_ms;
	int64_t night, quiet_from_ms, quiet_to_ms;
	int64_t ttl_ms;             /* > 0 */
	unsigned quiet_only;        /* 1: a quiet-hours answer's gap only (see the top of this file) */
	int64_t cap_ms;             /* > 0: a daily cap's answer's gap only, active raised at most to
	                               this (see the top of this file); 0: a delivered call */
};

/* fg_state_read_cb - the result of a read: <rc> 0 and the record in <u>
 * (borrowed for the call), or a negative FG_E* and <u> NULL. */
typedef void fg_state_read_cb(void *arg, int rc, const struct fg_state_user *u);

/* fg_state_done_cb - the result of an update or erase. */
typedef void fg_state_done_cb(void *arg, int rc);

struct fg_state;

/* What every backend provides (a backend's instance starts with a pointer
 * to its table: struct fg_state). */
struct fg_state_ops {
	const char *name;           /* "redis", "memory" */
	int (*read)(struct fg_state *s, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg);
	int (*update)(struct fg_state *s, const struct fg_state_update *u, fg_state_done_cb *cb, void *arg);
	int (*erase)(struct fg_state *s, const struct fg_state_who *who, fg_state_done_cb *cb, void *arg);
	void (*free)(struct fg_state *s);
};

struct fg_state {
	const struct fg_state_ops *ops;
};

/*
 * fg_state_read, fg_state_update, fg_state_erase - the operations above on
 * backend <s>; arguments are borrowed and copied before return; <cb> gets
 * <arg>.  They check their arguments before the backend sees them.
 * Returns as described at the top; FG_EINVAL for a NULL <s> or <cb>, a
 * <who> that fg_state_check_who() refuses (read and update do not check
 * a <who> marked <checked>; erase always checks), or (update) a NULL <counts>
 * with classes, ttl_ms <= 0, idle_gap_ms < 0, a time (start, end,
 * idle gap, day start, quiet bounds, ttl) outside 0..FG_STATE_VALUE_MAX
 * or a day or night outside +-FG_STATE_VALUE_MAX.
 */
int fg_state_read(struct fg_state *s, const struct fg_state_who *who, fg_state_read_cb *cb, void *arg);
int fg_state_update(struct fg_state *s, const struct fg_state_update *u, fg_state_done_cb *cb, void *arg);
int fg_state_erase(struct fg_state *s, const struct fg_state_who *who, fg_state_done_cb *cb, void *arg);

/* fg_state_free - NULL is a no-op.  Pending callbacks get FG_EUNAVAIL
 * before it returns.  Never from inside one of <s>'s callbacks. */
void fg_state_free(struct fg_state *s);

/*
 * fg_state_check_who - FG_EINVAL when <who> breaks the limits above, else
 * 0: nkeys in 1..FG_STATE_MAX_KEYS and nclasses up to FG_STATE_MAX_CLASSES
 * (arrays non-NULL when counted); each key 1..FG_KEYRING_PSEUDONYM_MAX - 1
 * bytes of the pseudonym alphabet [A-Za-z0-9._:-] (so no key can carry
 * Redis hash-tag braces, spaces or control bytes, and a raw id with any of
 * those is refused); each class 1..FG_STATE_CLASS_MAX bytes of [a-z0-9_].
 * Any thread (it reads only <who>).
 */
int fg_state_check_who(const struct fg_state_who *who);

#endif /* FG_STATE_H */
