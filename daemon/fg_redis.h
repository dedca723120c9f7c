/*
 * fg_redis.h - one worker's link to Redis: a hiredis async context on the
 * worker's event_base, with what hiredis 0.14 lacks (connect timeout,
 * per-command timeout, reconnect with jittered backoff, a bound on commands
 * in flight, AUTH and SELECT on connect, Lua scripts by EVALSHA reloaded
 * after NOSCRIPT).  Every state operation of a worker goes through one.
 *
 * Threading: a link belongs to one worker loop.  Every function here and
 * every callback runs on that loop's thread.  Several workers each create
 * their own link; links share nothing.
 *
 * Life of a link.  fg_redis_new() schedules the first connect for the
 * loop's next turn (scripts registered before then are in its handshake),
 * and is CONNECTING from then on.  The link is
 * CONNECTING while TCP (or the unix socket) connects and a handshake runs,
 * pipelined in one write: AUTH (when a password file is set), SELECT (when a
 * database is set), SCRIPT LOAD of each registered script, PING.  When every
 * handshake reply came back without an error the link is CONNECTED.  The
 * whole of it must finish within <connect_timeout_us>: a Redis that is
 * paused (SIGSTOP) still completes TCP connects in the kernel, so a connect
 * timeout on the socket alone would not notice it.  A failed or timed-out
 * connect, a handshake error (wrong password: the text says "AUTH failed"
 * and Redis's words, never the password), a lost connection or a stalled
 * one (below) makes the link DOWN and schedules the next connect: the
 * first after losing a CONNECTED link waits a random time in
 * [0, backoff_initial], each one after a failed connect waits a random time
 * in [b/2, b] where b doubles from backoff_initial up to backoff_max.  The
 * randomness spreads a fleet's reconnects when a Redis comes back.
 *
 * Commands.  Only a CONNECTED link takes commands: while CONNECTING or
 * DOWN a submit fails at once (FG_EUNAVAIL), so no caller waits for a
 * Redis that is not there.  Each command is written to hiredis at once;
 * commands submitted in one loop iteration leave in one write and their
 * replies come back in order, so a caller pipelines simply by submitting
 * several.  Each command has its own timeout: when it passes, the callback
 * gets FG_REDIS_R_TIMEOUT and is never called again for that command (a
 * late reply is read and dropped).  A command that stays unanswered for
 * <stall_timeout_us> after it was sent means Redis stopped answering: the
 * link is dropped (redisAsyncFree, never redisAsyncDisconnect, which waits
 * for replies a paused Redis never sends) and reconnects as above; every
 * command still waiting on it gets FG_REDIS_R_DOWN.  Commands written and
 * unanswered, timed-out ones included, are bounded by <max_inflight>: past
 * it a submit fails at once with FG_EBUSY, nothing queues.
 *
 * Callbacks.  For a submit that returned 0 the callback runs exactly once,
 * later, on the loop (never inside the submit): with the reply, a timeout,
 * or DOWN (the link was lost or freed).  A callback may submit commands
 * (to this link too: they fail fast while the link is going down), but must
 * not call fg_redis_free() on its own link.
 *
 * Not supported: SUBSCRIBE, MONITOR and other commands that change the
 * reply stream; Redis Cluster and TLS (later issues); host names (hiredis
 * resolves them with a blocking call: give an IP or a socket path).
 */
#ifndef FG_REDIS_H
#define FG_REDIS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct fg_redis;

#define FG_REDIS_DEFAULT_CONNECT_TIMEOUT_US 500000      /* connect + handshake */
#define FG_REDIS_DEFAULT_STALL_TIMEOUT_US 500000        /* oldest command unanswered this long: drop */
#define FG_REDIS_DEFAULT_BACKOFF_INITIAL_US 100000
#define FG_REDIS_DEFAULT_BACKOFF_MAX_US 5000000
#define FG_REDIS_DEFAULT_MAX_INFLIGHT 1024
#define FG_REDIS_MAX_SCRIPTS 64
#define FG_REDIS_MAX_ARGS 64                    /* arguments of one command, a script's three included */

enum fg_redis_state {
	FG_REDIS_DOWN = 0,      /* no connection; the next connect is scheduled */
	FG_REDIS_CONNECTING,    /* connecting or in the handshake */
	FG_REDIS_CONNECTED,     /* takes commands */
};

/* fg_redis_state_cb - the link went to <state>; <why> says why for DOWN
 * (borrowed for the call), else NULL.  On the loop; may submit, must not
 * free the link; not called from fg_redis_free(). */
typedef void fg_redis_state_cb(void *arg, enum fg_redis_state state, const char *why);

/* fg_redis_latency_cb - a reply to a caller's command came <us> after the
 * command was submitted (late replies to timed-out commands included: they
 * show how slow Redis really is).  For a histogram in /metrics. */
typedef void fg_redis_latency_cb(void *arg, uint64_t us);

/*
 * What the caller fills; fg_redis_new() copies what it needs.  Zero means
 * the default for each number.
 */
struct fg_redis_config {
	const char *address;            /* "ip:port", "[ipv6]:port" or an absolute unix socket path */
	const char *password_file;      /* NULL: no AUTH.  One line; a trailing newline is not part of it */
	int db;                         /* SELECT <db> on connect when > 0 */
	int64_t connect_timeout_us;     /* connect + handshake */
	int64_t stall_timeout_us;       /* drop the link when a command waits this long (>= any command timeout) */
	int64_t backoff_initial_us;
	int64_t backoff_max_us;
	unsigned max_inflight;          /* commands written and unanswered, timed-out ones included */
	fg_redis_state_cb *on_state;    /* optional */
	void *state_arg;
	fg_redis_latency_cb *on_latency; /* optional */
	void *latency_arg;
};

/* Counters since fg_redis_new(), for /metrics.  Read on the loop thread. */
struct fg_redis_stats {
	uint64_t commands;              /* caller commands accepted by a submit */
	uint64_t replies;               /* replies to them, late ones included */
	uint64_t errors;                /* error replies handed to callers */
	uint64_t timeouts;              /* commands whose callback got TIMEOUT */
	uint64_t down;                  /* commands whose callback got DOWN */
	uint64_t busy;                  /* submits refused with FG_EBUSY */
	uint64_t unavailable;           /* submits refused with FG_EUNAVAIL */
	uint64_t noscript_reloads;      /* EVALSHA answered NOSCRIPT, script loaded and retried */
	uint64_t connects;              /* connect attempts, the first included */
	uint64_t reconnects;            /* connect attempts after the first */
	uint64_t connect_failures;      /* attempts that ended before CONNECTED */
	uint64_t drops;                 /* links dropped for a stalled command */
	uint64_t latency_sum_us;        /* sum of the latencies of <replies> */
	uint64_t inflight;              /* gauge: commands written and unanswered */
};

enum fg_redis_kind {
	FG_REDIS_R_NIL = 0,     /* a nil bulk string or nil array */
	FG_REDIS_R_INT,         /* <integer> */
	FG_REDIS_R_STR,         /* <str>, <len>: a bulk string or a status ("OK") */
	FG_REDIS_R_ARRAY,       /* <nelem> elements: fg_redis_result_elem() */
	FG_REDIS_R_ERROR,       /* an error reply: <str> is Redis's text ("ERR ...") */
	FG_REDIS_R_TIMEOUT,     /* no reply within the command's timeout; <str> says so */
	FG_REDIS_R_DOWN,        /* the link was lost, dropped or freed first; <str> says why */
};

/*
 * A result, borrowed: it and every pointer in it are valid only during the
 * callback.  Copy what you keep.  <str> is NUL-terminated (binary bulk
 * strings may hold NULs before it: use <len>).
 */
struct fg_redis_result {
	enum fg_redis_kind kind;
	long long integer;
	const char *str;
	size_t len;
	size_t nelem;
	const void *reply;      /* private: the redisReply, for fg_redis_result_elem */
};

/* fg_redis_reply_cb - the one result of a command; <arg> as given to the submit. */
typedef void fg_redis_reply_cb(void *arg, const struct fg_redis_result *res);

/*
 * fg_redis_new - a link on <base> (borrowed; must outlive the link) with the
 * settings of <cfg> (borrowed; copied).  Reads the password file now (so do
 * this at startup, not on the loop's hot path) and schedules the first
 * connect (the state is CONNECTING; the state callback is not called from
 * here).  On
 * success stores the link in <*out> and returns 0; else returns FG_EINVAL
 * (an address that is not an IP:port or an absolute path, with <*why> set
 * to a static message), FG_EIO (the password file cannot be read; errno is
 * kept) or FG_ENOMEM.
 */
int fg_redis_new(struct fg_redis **out, struct event_base *base, const struct fg_redis_config *cfg,
                 const char **why);

/*
 * fg_redis_free - close the link.  Every command still waiting gets its
 * callback once, with FG_REDIS_R_DOWN, before this returns; then nothing
 * is called again.  Not from inside a callback of this link.  NULL does
 * nothing.
 */
void fg_redis_free(struct fg_redis *r);

/*
 * fg_redis_script_add - register the Lua script of <len> bytes at <body>
 * (copied) and store its index in <*id>.  Its SHA1 is computed here.  It is
 * loaded at every connect's handshake (so register before the first one
 * completes, at startup, to skip a NOSCRIPT round trip) and again whenever
 * Redis answers NOSCRIPT.  Scripts get the time as an argument: they must
 * not call TIME.  Returns 0, FG_ETOOBIG (FG_REDIS_MAX_SCRIPTS reached) or
 * FG_ENOMEM.
 */
int fg_redis_script_add(struct fg_redis *r, const char *body, size_t len, unsigned *id);

/* fg_redis_script_sha - the 40 lowercase hex digits of script <id>. */
const char *fg_redis_script_sha(const struct fg_redis *r, unsigned id);

/*
 * fg_redis_command - send the command of <argc> arguments <argv> with
 * lengths <argvlen> (all borrowed; copied before this returns).  <cb> gets
 * the result once, with <arg>, within <timeout_us> (> 0) plus a loop tick.
 * Returns 0, or at once: FG_EUNAVAIL (the link is not CONNECTED),
 * FG_EBUSY (<max_inflight> reached), FG_EINVAL (argc < 1, or more than
 * FG_REDIS_MAX_ARGS) or FG_ENOMEM;
 * the callback is then never called.
 */
int fg_redis_command(struct fg_redis *r, int64_t timeout_us, int argc, const char *const *argv,
                     const size_t *argvlen, fg_redis_reply_cb *cb, void *arg);

/*
 * fg_redis_script - EVALSHA script <id> with <nkeys> keys followed by the
 * other arguments: <argc> strings at <argv> with lengths <argvlen> (the keys
 * first; all borrowed and copied).  On NOSCRIPT the script is loaded and the
 * command sent again, once, within the same timeout; the caller sees only
 * the second answer.  The retry goes behind commands submitted meanwhile.
 * Returns as fg_redis_command(), and FG_EINVAL for an unknown <id>,
 * <nkeys> out of 0..<argc>, or <argc> + 3 over FG_REDIS_MAX_ARGS.
 */
int fg_redis_script(struct fg_redis *r, int64_t timeout_us, unsigned id, int nkeys, int argc,
                    const char *const *argv, const size_t *argvlen, fg_redis_reply_cb *cb, void *arg);

/*
 * fg_redis_result_elem - element <i> of the ARRAY result <res>, stored in
 * <*out> (borrowed like <res>).  Returns 0, or FG_EINVAL when <res> is not
 * an array or <i> is out of range.
 */
int fg_redis_result_elem(const struct fg_redis_result *res, size_t i, struct fg_redis_result *out);

/* fg_redis_get_state - the link's state now. */
enum fg_redis_state fg_redis_get_state(const struct fg_redis *r);

/* fg_redis_last_error - why the link last went DOWN or failed to connect
 * ("" if never); valid until the next loop iteration. */
const char *fg_redis_last_error(const struct fg_redis *r);

/* fg_redis_get_stats - the link's counters (borrowed; live). */
const struct fg_redis_stats *fg_redis_get_stats(const struct fg_redis *r);

/* fg_redis_address - the address as configured, for messages. */
const char *fg_redis_address(const struct fg_redis *r);

#endif /* FG_REDIS_H */
