/*
 * state-bench.c - the Redis state backend alone (fg_state_redis on one
 * fg_redis link, as a worker drives it), against a running redis-server:
 * the feedguardd CPU of a feed call's state work without the rest of the
 * call around it.
 *
 *   [THRASH=BYTES] state-bench ADDRESS [BATCH] [CALLS] [MODE]
 *
 * Each round submits BATCH calls' operations in one loop turn (MODE
 * "both": each call's read and its update; "read"; "update"), runs the
 * loop until every answer came back, and repeats until CALLS calls.  The
 * batch stands for the calls a loaded worker serves in one loop turn; the
 * users are BATCH different pseudonyms, so the scripts touch as many
 * records (keys under "fgbench:", apart from feedguardd's "fg:").  With
 * THRASH, that many bytes are touched before each loop turn, as the rest
 * of a worker's turn would (a RankFeed call moves 40 KB): the state's own
 * data is then as cold as in a loaded worker; that time is not counted.
 * Prints this process's CPU (user + system, CLOCK_PROCESS_CPUTIME_ID) per
 * call and the wall time per call, median of 5 runs.  Redis's own CPU is
 * not in it.  Any operation that fails (refused, timed out, an error)
 * ends the tool with status 1 and no figures: they would count work that
 * was not done.
 *
 * Plain make, against a build tree: make -C contrib/bench state-bench FG_BUILD=...
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "fg_redis.h"
#include "fg_state.h"
#include "fg_state_redis.h"

#define RUNS 5
#define MAX_BATCH 512

static unsigned outstanding, failures;

static void read_cb(void *arg, int rc, const struct fg_state_user *u)
{
	(void)arg;
	(void)u;
	if (rc < 0)
		failures++;
	outstanding--;
}

static void done_cb(void *arg, int rc)
{
	(void)arg;
	if (rc < 0)
		failures++;
	outstanding--;
}

static int submitted(int rc)
{
	if (rc < 0)
		failures++;
	else
		outstanding++;
	return rc;
}

static double cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Stand-in for the rest of a worker's turn: <thrash> bytes read and
 * written, a byte a cache line. */
static size_t thrash;
static unsigned char *thrash_buf;
static double thrash_cpu;

static void thrash_caches(void)
{
	double t0 = cpu_us();
	for (size_t i = 0; i < thrash; i += 64)
		thrash_buf[i]++;
	thrash_cpu += cpu_us() - t0;
}

static double wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct fg_state_redis_config cfg = { .link = { .address = argc > 1 ? argv[1] : "127.0.0.1:6379" },
		                             .prefix = "fgbench:" };
	unsigned batch = argc > 2 ? (unsigned)atoi(argv[2]) : 16;
	unsigned long calls = argc > 3 ? strtoul(argv[3], NULL, 10) : 200000;
	const char *mode = argc > 4 ? argv[4] : "both";
	int do_read = strcmp(mode, "update") != 0, do_update = strcmp(mode, "read") != 0;
	static char keys[MAX_BATCH][FG_KEYRING_PSEUDONYM_MAX];
	static const char *key_of[MAX_BATCH];
	const char *classes[] = { "body_image" };
	const uint32_t counts[] = { 3 };
	double cpu[RUNS], wall[RUNS];
	struct event_base *base;
	struct fg_state *st;
	const char *why = NULL;

	if (getenv("THRASH")) {
		thrash = strtoul(getenv("THRASH"), NULL, 10);
		if (thrash && !(thrash_buf = calloc(1, thrash))) {
			fprintf(stderr, "state-bench: cannot allocate THRASH=%zu bytes\n", thrash);
			return 1;
		}
	}
	if (batch < 1 || batch > MAX_BATCH || calls < batch) {
		fprintf(stderr, "usage: state-bench ADDRESS [BATCH 1..%d] [CALLS] [both|read|update]\n", MAX_BATCH);
		return 2;
	}
	/* Every operation of a turn in flight at once, and time for Redis
	 * to run them all: this measures CPU, not timeouts. */
	cfg.link.max_inflight = 2 * batch + 64;
	cfg.timeout_us = 2000000;
	cfg.link.stall_timeout_us = 4000000;
	base = event_base_new();
	if (!base || fg_state_redis_new(&st, base, &cfg, &why) < 0) {
		fprintf(stderr, "state-bench: %s\n", why ? why : "no event base");
		return 1;
	}
	while (fg_redis_get_state(fg_state_redis_link(st)) != FG_REDIS_CONNECTED) {
		event_base_loop(base, EVLOOP_ONCE);
		if (fg_redis_get_state(fg_state_redis_link(st)) == FG_REDIS_DOWN) {
			fprintf(stderr, "state-bench: cannot connect to %s: %s\n", cfg.link.address,
			        fg_redis_last_error(fg_state_redis_link(st)));
			return 1;
		}
	}
	for (unsigned i = 0; i < batch; i++) {
		snprintf(keys[i], sizeof(keys[i]), "bench:%064x", i);
		key_of[i] = keys[i];
	}
	for (int run = 0; run < RUNS; run++) {
		double c0 = cpu_us(), w0 = wall_us();
		int64_t now = 1796600000000LL;
		unsigned long done;
		for (done = 0; done < calls && !failures; done += batch) {
			for (unsigned i = 0; i < batch; i++) {
				struct fg_state_who who = { .keys = &key_of[i], .nkeys = 1, .classes = classes, .nclasses = 1 };
				struct fg_state_update u = { .who = who, .counts = counts, .start_ms = now, .end_ms = now + 20,
				                             .idle_gap_ms = 300000, .day = 20794, .day_start_ms = now - 3600000,
				                             .night = 20794, .quiet_from_ms = now + 3600000,
				                             .quiet_to_ms = now + 7200000, .ttl_ms = 86400000 };
				/* A submit refused at once (the link down, too
				 * many in flight) is a failure too: the figures
				 * would count work that was never done. */
				if (do_read && submitted(fg_state_read(st, &who, read_cb, NULL)) < 0)
					break;
				if (do_update && submitted(fg_state_update(st, &u, done_cb, NULL)) < 0)
					break;
			}
			if (thrash)
				thrash_caches();
			while (outstanding > 0) {
				event_base_loop(base, EVLOOP_ONCE);
				if (thrash)
					thrash_caches();
			}
			now += 50;
		}
		if (failures) {
			fprintf(stderr, "state-bench: %u operations failed at %s (refused, timed out or an error)\n", failures,
			        cfg.link.address);
			return 1;
		}
		cpu[run] = (cpu_us() - c0 - thrash_cpu) / (double)done;
		thrash_cpu = 0;
		wall[run] = (wall_us() - w0) / (double)done;
	}
	qsort(cpu, RUNS, sizeof(cpu[0]), cmp_double);
	qsort(wall, RUNS, sizeof(wall[0]), cmp_double);
	printf("mode=%s batch=%u calls=%lu cpu_us_per_call=%.2f wall_us_per_call=%.2f\n", mode, batch, calls,
	       cpu[RUNS / 2], wall[RUNS / 2]);
	fg_state_free(st);
	event_base_free(base);
	return 0;
}
