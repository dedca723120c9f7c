/*
 * fg_replay.h - offline replay of captured calls under a policy, through
 * the daemon's own stages: no ranker, no Redis, no sockets.
 *
 * A replay holds one policy's world: a config snapshot around the policy,
 * a pipeline environment whose stages are the daemon's (gate, strip,
 * filter, account, capture) behind a stage of its own in place of
 * identify, an in-process state backend (fg_state_mem) and a clock that
 * runs on the recorded times.  Each recorded Call goes in as the daemon
 * saw it: its request as forwarded, its band and capture pseudonym (which
 * stands in for the user's state pseudonym), its start time and duration;
 * the ranker's response as recorded is fed back as the upstream's.  What
 * comes out is the record the daemon's capture stage would have written
 * under this policy: delivered messages, status and decisions.
 *
 * What replay cannot know: the raw request (it was recorded after the
 * recording policy stripped it), the ranker's answer to a call the
 * recording policy answered itself (none was recorded: such a call is
 * answered again only if this policy answers it too, else it delivers
 * nothing, and says so), and rules that end an open stream while it runs
 * (timers do not run on recorded time: a stream is judged at its start
 * and its figures told at its end).
 *
 * One thread; blocking only on the files it makes at start (a temporary
 * directory for the generated config's key files, removed at free).
 */
#ifndef FG_REPLAY_H
#define FG_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "capture.pb-c.h"

struct fg_replay;
struct fg_tz;

/* Users whose screen-time state a replay keeps when not told (--max-users). */
#define FG_REPLAY_DEFAULT_MAX_USERS 1000000

/* Updates of calls still running at a recorded time held until their
 * ends, per policy: at most 2.2 KiB each (fg_state_mem_defer), so 220 MB
 * whatever a crafted capture holds; a real one has this many calls in
 * flight at once only at a very large platform. */
#define FG_REPLAY_MAX_HELD 100000

/* What fg_replay_call() adds to the record it returns. */
struct fg_replay_result {
	unsigned no_upstream;           /* the capture holds no ranker answer to feed this policy
	                                   (the recording policy answered the call itself) */
	unsigned not_in_policy;         /* the policy names no such method: passed through */
	unsigned band_not_in_policy;    /* the method is the policy's, the recorded band is not:
	                                   replayed in the policy's unknown_band */
	const char *unknown_band;       /* that band's name (the policy's; valid while it lives) */
};

/*
 * fg_replay_new - a replay under the policy file <policy> (compiled with
 * the descriptor set it names), keeping at most <max_users> users' state
 * (0: 1,000,000).  Returns 0 with it in <*out> (fg_replay_free), or
 * FG_ECONFIG / FG_EIO / FG_ENOMEM with a message in <err>.
 */
int fg_replay_new(struct fg_replay **out, const char *policy, size_t max_users, char *err, size_t errlen);

/*
 * fg_replay_call - replay recorded call <in>.  The record this policy's
 * capture stage makes of it goes in <*out> (owned by <r>, valid until the
 * next call or fg_replay_free); <res> (may be NULL) gets the rest.
 * Returns 0, FG_ENOMEM, or FG_EINVAL for a record replay cannot run (no
 * method).  Calls must come in the order of their start times for the
 * screen-time state to be what the daemon's was.
 */
int fg_replay_call(struct fg_replay *r, const Feedguard__Capture__V1__Call *in, Feedguard__Capture__V1__Call **out,
                   struct fg_replay_result *res);

/* fg_replay_not_held - updates of calls still running at a recorded time
 * that landed at once instead of at their ends (FG_REPLAY_MAX_HELD were
 * held): an overlapping call of the same user then saw them early. */
uint64_t fg_replay_not_held(const struct fg_replay *r);

/* fg_replay_users_full - state operations that found no room for a new
 * user (over <max_users>): those calls had their band's fail_mode. */
uint64_t fg_replay_users_full(const struct fg_replay *r);

/* fg_replay_policy - the policy file <r> replays (absolute). */
const char *fg_replay_policy(const struct fg_replay *r);

/* fg_replay_zone - the policy's zone named <name> (its time_zone or one
 * of its time_zones), or its time_zone when <name> is NULL, empty or
 * another: the zone whose dates a call's day is counted in. */
const struct fg_tz *fg_replay_zone(const struct fg_replay *r, const char *name);

/* fg_replay_policy_id - that policy's id (fg_policy-t.h), as captured
 * calls carry it in policy_id. */
const char *fg_replay_policy_id(const struct fg_replay *r);

/* fg_replay_free - NULL is a no-op. */
void fg_replay_free(struct fg_replay *r);

#endif /* FG_REPLAY_H */
