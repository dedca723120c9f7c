/*
 * fg_replay_live.h - live replay: recorded requests sent to a target (a
 * feedguardd or a ranker) over h2c, at the recorded pacing or a speed
 * factor, with a bound on calls in flight and a rate cap, and a report
 * like a load tester's (count, rate, latency percentiles and histogram,
 * status counts) plus how the answers compare with the recorded ones.
 *
 * Each call sends what the capture holds: the request messages as
 * forwarded (redacted, the user id field holding the capture pseudonym)
 * and the request metadata the capture kept (list the band header in
 * capture.metadata, so a feedguardd target bands the calls as recorded).
 * Responses are read whole (up to 64MiB a call) to compare them with the
 * recorded delivered_response, byte for byte.
 *
 * One thread, one connection, blocking in poll(2): a tool.
 */
#ifndef FG_REPLAY_LIVE_H
#define FG_REPLAY_LIVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "capture.pb-c.h"

struct fg_policy;

struct fg_replay_live_opts {
	const char *target;             /* "ip:port" (numeric; [v6]:port) */
	double speed;                   /* recorded gaps divided by this; 0: no pacing */
	double rate;                    /* at most this many calls a second; 0: no cap */
	unsigned concurrency;           /* calls in flight, at most; 0: 16 */
	int64_t timeout_ms;             /* each call's grpc-timeout; 0: 10000 */
	const char *user_header;        /* NULL, or a metadata name (lowercase) that carries each
	                                   call's recorded user_key: a target that reads the user id
	                                   from a header keeps each recorded user apart */
	unsigned recorded_time;         /* send each call's start_unix_ms in feedguard-test-now
	                                   (read by a target built with --enable-test-hooks) */
	const struct fg_policy *policy; /* NULL, or a policy for the capture's methods: a call whose
	                                   filter over-fetched (decisions.page_size_asked) goes with
	                                   the page size the client asked for, set at the method's
	                                   page_size field, not the raised one the capture holds */
};

/*
 * The calls, in order: <next> puts the next recorded Call's Record in
 * <*rec> (owned by the caller of fg_replay_live_run from then on, which
 * frees it with feedguard__capture__v1__record__free_unpacked) and
 * returns 1, or returns 0 at the end, or -1 on a read error.
 */
typedef int (*fg_replay_live_next_cb)(void *arg, Feedguard__Capture__V1__Record **rec);

/*
 * fg_replay_live_header_ok - 1 when <name> may be the user_header: a
 * metadata name a call may carry (lowercase letters, digits, '-', '_',
 * '.': HTTP/2 forbids uppercase), not one the tool sets itself
 * (feedguard-test-now included) or gRPC or HTTP/2 own.
 */
int fg_replay_live_header_ok(const char *name);

/*
 * fg_replay_live_run - send every call <next> gives to <o->target> and
 * print the report to <out>.  Returns 0 when every call was sent and
 * answered (whatever its status), FG_EIO when the target could not be
 * reached or the connection failed (the report says how far it got),
 * FG_EINVAL for a bad target, FG_ENOMEM.
 */
int fg_replay_live_run(const struct fg_replay_live_opts *o, fg_replay_live_next_cb next, void *arg, FILE *out);

#endif /* FG_REPLAY_LIVE_H */
