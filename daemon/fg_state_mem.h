/*
 * fg_state_mem.h - the in-process state backend: fg_state.h's operations
 * on a hash table in this process, for the unit tests and offline replay
 * (feedguardctl replay), where a Redis would only add a moving part.  It
 * computes exactly what fg_state_redis's scripts compute, so a replay
 * predicts the daemon.
 *
 * Records are keyed "<prefix>{<pseudonym>}" as in Redis.  Every callback
 * runs before the operation returns.  Nothing is shared between instances.
 *
 * Time.  The backend has no clock (replay runs on recorded time): its
 * "now" is what fg_state_mem_set_now() last set, 0 at first.  An update
 * makes its record expire at now + ttl_ms; a record whose expiry is at or
 * before now is absent to every operation, and its memory is reused.
 *
 * Memory.  At most <max_records> records (live or expired but not yet
 * reclaimed) and at most FG_STATE_MEM_MAX_COUNTERS exposure counters per
 * record; an update that would need more gets FG_ETOOBIG in its callback
 * and changes nothing.  A record costs about 270 bytes plus 80 per
 * exposure counter, so the worst case is <max_records> * 5.3 KiB.
 * Erasing a record, or its expiry, frees its slot.
 *
 * Threading: one thread, like every backend (fg_state.h).
 */
#ifndef FG_STATE_MEM_H
#define FG_STATE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "fg_state.h"

#define FG_STATE_MEM_DEFAULT_MAX_RECORDS 100000
#define FG_STATE_MEM_MAX_COUNTERS 64    /* exposure counters of one record: a policy has a few classes */

/*
 * fg_state_mem_new - an empty table whose keys start with <prefix>
 * (borrowed, copied; NULL: FG_STATE_DEFAULT_PREFIX) and that holds at most
 * <max_records> records (0: FG_STATE_MEM_DEFAULT_MAX_RECORDS).  Stores it
 * in <*out> (freed with fg_state_free) and returns 0; else FG_EINVAL (a
 * prefix longer than FG_STATE_PREFIX_MAX or holding '{' or '}', which
 * would move the hash tag) or FG_ENOMEM.
 */
int fg_state_mem_new(struct fg_state **out, const char *prefix, size_t max_records);

/*
 * fg_state_mem_set_now - from now on, the time of <s> is <now_ms>
 * (milliseconds since the epoch): expiries are set from it and compared
 * with it.  Updates held by fg_state_mem_defer whose calls ended at or
 * before <now_ms> are applied first, in the order the calls ended, each at
 * its end's time.  Replay calls it before each recorded call, with times
 * that never go back.  Does nothing when <s> is not an fg_state_mem
 * backend.
 */
void fg_state_mem_set_now(struct fg_state *s, int64_t now_ms);

/*
 * fg_state_mem_defer - from now on, an update whose call ends after the
 * time of <s> (<end_ms> past the last fg_state_mem_set_now) is held until
 * a later fg_state_mem_set_now reaches its end, as Redis gets the update
 * only when the call ends: a call of the same user that starts before
 * then reads the state without it, as in the daemon (two calls of one
 * user in flight at once).  Its callback gets 0 at once; an update that
 * finds no room when applied counts in fg_state_mem_full.  At most
 * <max_pending> are held (each 400 bytes plus its keys and classes: at
 * most 2.2 KiB); past that, updates apply at once, counted by
 * fg_state_mem_not_held.  Held ones are applied only by a later
 * fg_state_mem_set_now (never at free).  0 turns holding off (held ones
 * stay held).  Does nothing when <s> is not an fg_state_mem backend.
 */
void fg_state_mem_defer(struct fg_state *s, size_t max_pending);

/* fg_state_mem_not_held - updates that fg_state_mem_defer would have held
 * but applied at once, <max_pending> being held already.  0 for another
 * backend. */
uint64_t fg_state_mem_not_held(struct fg_state *s);

/* fg_state_mem_fail() operations. */
#define FG_STATE_MEM_FAIL_READ 1u
#define FG_STATE_MEM_FAIL_UPDATE 2u

/*
 * fg_state_mem_fail - from now on, the operations in <ops>
 * (FG_STATE_MEM_FAIL_*) of <s> fail with <rc> as a Redis backend fails
 * them (fg_state.h): FG_EUNAVAIL and FG_EBUSY returned at once,
 * FG_ETIMEOUT and FG_EPROTO in the callback; nothing changes in the table.
 * <rc> 0 ends it.  Replay gives a recorded call the state failure the
 * daemon had.  Does nothing when <s> is not an fg_state_mem backend.
 */
void fg_state_mem_fail(struct fg_state *s, int rc, unsigned ops);

/*
 * fg_state_mem_full - how many operations found no room for a new user's
 * record (the table held <max_records> unexpired ones): their callers got
 * FG_ETOOBIG, and the bands' fail_mode applied.  0 for another backend.
 */
uint64_t fg_state_mem_full(struct fg_state *s);

#endif /* FG_STATE_MEM_H */
