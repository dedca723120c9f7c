/*
 * fg_state_redis.h - the Redis state backend: fg_state.h's operations as
 * Lua scripts on one worker's fg_redis link, so every update is atomic in
 * Redis and costs one round trip.
 *
 * Layout.  A record is a Redis hash at <prefix>{<pseudonym>} with the
 * fields last, sess, day, act, night, qact (fg_state_user's last_ms,
 * session_start_ms, day, active_ms, night, quiet_ms) and x:<class> per
 * exposure counter of the record's day, all decimal integers.  A day
 * change deletes the x: fields of the old day, so a hash holds only the
 * classes of one day.  Every update sets the key's TTL (PEXPIRE).
 *
 * Operations.  read is one EVALSHA of a read-only script (the fields of
 * the first of the user's keys that exists, answered as one string of
 * decimal integers: an array would cost hiredis an allocation per field);
 * update is one EVALSHA of a
 * script doing fg_state.h's steps 1-8 (the time comes in its arguments:
 * scripts never call TIME); erase is one DEL of all the user's keys.
 * Each has the backend's timeout (the longest a caller waits for an
 * answer) and fails at once, FG_EUNAVAIL, while the link is not
 * CONNECTED.  Replies are checked for their exact shape: anything else is
 * FG_EPROTO.  Redis error replies map to FG_ETOOBIG (OOM: maxmemory),
 * FG_EUNAVAIL (LOADING, BUSY, MASTERDOWN, READONLY, TRYAGAIN, CLUSTERDOWN:
 * this Redis cannot serve now) or FG_EPROTO (anything else, e.g. a key
 * that is not a hash or a field that is not an integer).
 *
 * Not supported: Redis Cluster.  The braces keep one pseudonym's key on
 * one shard, but step 1 moves a record between two pseudonyms' keys,
 * which Cluster refuses within one script (two hash slots).
 *
 * Threading: one worker loop, like the link (fg_redis.h).
 */
#ifndef FG_STATE_REDIS_H
#define FG_STATE_REDIS_H

#include <stdint.h>

#include "fg_redis.h"
#include "fg_state.h"

struct event_base;

/* Envoy's client of a Redis-backed rate limiter gives up after 20 ms by
 * default: a feed call should not wait longer for its screen time. */
#define FG_STATE_REDIS_DEFAULT_TIMEOUT_US 20000

/* What the caller fills; fg_state_redis_new() copies what it needs. */
struct fg_state_redis_config {
	struct fg_redis_config link;    /* the link's settings (fg_redis.h) */
	const char *prefix;             /* of every key; NULL: FG_STATE_DEFAULT_PREFIX */
	int64_t timeout_us;             /* per operation; 0: FG_STATE_REDIS_DEFAULT_TIMEOUT_US */
};

/*
 * fg_state_redis_new - a backend on a new fg_redis link on <base>
 * (borrowed; must outlive the backend) with the settings of <cfg>
 * (borrowed; copied), its scripts registered before the link's first
 * connect, which runs on the loop's next turn: until it completes, every
 * operation fails with FG_EUNAVAIL.  Stores the backend in <*out> (freed
 * with fg_state_free) and returns 0; else FG_EINVAL (a prefix longer than
 * FG_STATE_PREFIX_MAX or holding '{' or '}', which would move the hash
 * tag; a negative timeout; or fg_redis_new()'s reasons), FG_EIO or
 * FG_ENOMEM, with <*why> set to a static message.  Startup only: it
 * reads the link's password file.
 */
int fg_state_redis_new(struct fg_state **out, struct event_base *base, const struct fg_state_redis_config *cfg,
                       const char **why);

/*
 * fg_state_redis_link - the link of <s> (borrowed: it lives as long as
 * <s>), for its state and counters in /metrics (its stats count this
 * backend's operations as commands); never free it.  NULL when <s> is not
 * an fg_state_redis backend.
 */
struct fg_redis *fg_state_redis_link(struct fg_state *s);

#endif /* FG_STATE_REDIS_H */
