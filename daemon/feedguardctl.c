/*
 * feedguardctl.c - feedguardctl: one user's screen-time state, for support
 * (show) and for data-subject erasure (erase, under every key of the ring).
 *
 * The user id is read from standard input, never from argv: argv is
 * visible to every local user in ps and /proc, and ends up in shell
 * history and audit logs.  The id is read with read(2), not stdio, so no
 * buffer of libc's keeps a copy, and it is wiped as soon as its pseudonyms
 * are computed.  Nothing printed names the raw id or a full pseudonym:
 * support staff see the ring key id a record was found under, no more.
 *
 * It talks to Redis through the daemon's own code (fg_state_redis on an
 * event_base of its own), so it reads and erases exactly the keys the
 * daemon writes.  The admin HTTP listener stays read-only: erasure is an
 * operator's act on the host, with the config's secrets, not an endpoint.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "fg_capture_erase.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_log.h"
#include "fg_policy-t.h"
#include "fg_redis.h"
#include "fg_state.h"
#include "fg_state_redis.h"

#define PROG "feedguardctl"
/* Bytes of a user id: more than the daemon takes (FG_USER_ID_MAX: it keys
 * nothing under a longer one since 2026-12-07), so what an earlier
 * feedguardd kept under a header id of up to this is still shown and
 * erased; a longer stdin is a mistake (a file, not an id). */
#define ID_MAX 1024
#define ID_BUF (ID_MAX + 3)             /* the id, "\r\n", and one byte that says "too long" */
#define CONNECT_SLACK_US 250000         /* past state.connect_timeout: the link's own timer fires first */
#define MS_PER_MINUTE 60000
#define SEC_PER_DAY INT64_C(86400)
/* Day numbers gmtime_r turns into dates without overflowing time_t (about
 * 270,000 years either way); a stored day beyond is printed as null. */
#define DAY_PRINT_MAX INT64_C(100000000)
#define MAX_COUNTERS (FG_POLICY_MAX_BANDS * FG_POLICY_MAX_COUNTERS)

enum exit_code {
	EXIT_DONE = 0,
	EXIT_FAIL = 1,                  /* config, Redis, output */
	EXIT_USAGE = 2,                 /* flags, arguments, standard input */
	EXIT_INCOMPLETE = 3,            /* capture-erase: files it could not search (open, another key) */
};

enum command {
	CMD_SHOW = 0,
	CMD_ERASE,
	CMD_CAPTURE_ERASE,
};

/* Everything one run holds; main() owns it. */
struct ctl {
	struct fg_config *cfg;
	struct event_base *base;
	struct fg_state *state;
	enum fg_redis_state link;       /* as the link's state callback last said */
	char why[256];                  /* why the link went DOWN */
	char keys[FG_STATE_MAX_KEYS][FG_KEYRING_PSEUDONYM_MAX];  /* the user's pseudonyms, ring order */
	const char *keyv[FG_STATE_MAX_KEYS];  /* <keys> as fg_state_who wants them */
	size_t nkeys;                   /* the ring's keys */
	const char *counters[MAX_COUNTERS];  /* exposure counter names of every limited band (borrowed from the policy) */
	size_t ncounters;
};

/* One operation's answer, awaited on the loop. */
struct result {
	int done;
	int rc;
	struct fg_state_user u;
};

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: " PROG " [-c FILE] show\n"
	        "       " PROG " [-c FILE] erase\n"
	        "       " PROG " [-c FILE] capture-erase\n"
	        "The user id is read from standard input (one line), never from the command line.\n"
	        "  show           print the user's screen-time state as one JSON object\n"
	        "  erase          delete the user's state under every key of pseudonym_keys\n"
	        "  capture-erase  rewrite the closed files of capture.directory without the user's records\n"
	        "  -c, --config FILE  configuration file (default " FG_CONFIG_DEFAULT_PATH ")\n"
	        "  -v, --version      print the version and exit\n"
	        "  -h, --help         print this help and exit\n"
	        "Exit status: 0 done, 1 failure (configuration, Redis, capture files), 2 usage (arguments,\n"
	        "standard input).\n");
}

/* The command word; anything after it is refused, so nobody gets used to
 * putting an id on the command line. */
static int parse_command(int argc, char **argv, enum command *cmd)
{
	if (optind >= argc) {
		fprintf(stderr, PROG ": missing command (show, erase or capture-erase)\n");
		return -1;
	}
	if (strcmp(argv[optind], "show") == 0)
		*cmd = CMD_SHOW;
	else if (strcmp(argv[optind], "erase") == 0)
		*cmd = CMD_ERASE;
	else if (strcmp(argv[optind], "capture-erase") == 0)
		*cmd = CMD_CAPTURE_ERASE;
	else {
		fprintf(stderr, PROG ": unknown command (show, erase or capture-erase); the user id is read from "
		                "standard input\n");
		return -1;
	}
	if (optind + 1 < argc) {
		fprintf(stderr, PROG ": too many arguments: the user id is read from standard input, never from "
		                "the command line\n");
		return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv, const char **path, enum command *cmd)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "version", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': *path = optarg; break;
		case 'v': printf(PROG " %s (libevent %s)\n", PACKAGE_VERSION, event_get_version()); exit(EXIT_DONE);
		case 'h': usage(stdout); exit(EXIT_DONE);
		default: usage(stderr); return -1;
		}
	}
	if (parse_command(argc, argv, cmd) < 0) {
		fprintf(stderr, "Usage: " PROG " [-c FILE] show|erase < FILE_WITH_THE_USER_ID (" PROG " -h for more)\n");
		return -1;
	}
	return 0;
}

/* All of standard input, up to ID_BUF bytes, into <buf>; the count, or -1. */
static ssize_t read_all(char *buf)
{
	size_t n = 0;
	ssize_t r;

	while (n < ID_BUF) {
		r = read(STDIN_FILENO, buf + n, ID_BUF - n);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, PROG ": cannot read standard input: %s\n", strerror(errno));
			return -1;
		}
		n += (size_t)r;
	}
	return (ssize_t)n;
}

/*
 * read_id - the user id from standard input into <buf> (ID_BUF bytes) and
 * its length into <*len>.  One line: a final "\n" (and a "\r" before it)
 * is not part of the id, a missing one is fine (printf '%s' "$ID").  An
 * empty id, a second line or more than ID_MAX bytes is refused: a wrong
 * id erases nothing and shows nothing, and the operator would not know.
 * Returns 0 or -1 (message printed).  The caller wipes <buf> either way.
 */
static int read_id(char *buf, size_t *len)
{
	ssize_t n;
	char *nl;

	if (isatty(STDIN_FILENO))
		fprintf(stderr, PROG ": type the user id, then Enter and Ctrl-D\n");
	if ((n = read_all(buf)) < 0)
		return -1;
	if (n == ID_BUF) {
		fprintf(stderr, PROG ": the user id is longer than %d bytes\n", ID_MAX);
		return -1;
	}
	*len = (size_t)n;
	if ((nl = memchr(buf, '\n', (size_t)n)) != NULL) {
		if (nl + 1 != buf + n) {
			fprintf(stderr, PROG ": standard input must hold one line, the user id\n");
			return -1;
		}
		*len = (size_t)(nl - buf);
	}
	if (*len > 0 && buf[*len - 1] == '\r')
		(*len)--;
	if (*len == 0)
		fprintf(stderr, PROG ": no user id on standard input\n");
	else if (*len > ID_MAX)
		fprintf(stderr, PROG ": the user id is longer than %d bytes\n", ID_MAX);
	return *len == 0 || *len > ID_MAX ? -1 : 0;
}

/* The config must name the Redis and the ring the daemon uses; without
 * them there is no state to show or erase. */
static int check_config(const struct fg_config *cfg, enum command cmd)
{
	if (cmd == CMD_CAPTURE_ERASE) {
		if (cfg->capture.enabled)
			return 0;
		fprintf(stderr, PROG ": %s has no capture.directory: feedguardd captures nothing with it\n", cfg->path);
		return -1;
	}
	if (!cfg->state.enabled) {
		fprintf(stderr, PROG ": %s has no state.redis: feedguardd keeps no screen-time state with it\n",
		        cfg->path);
		return -1;
	}
	if (!cfg->keyring || cfg->keyring->n == 0) {
		fprintf(stderr, PROG ": %s has no pseudonym_keys: the user's state cannot be found without them\n",
		        cfg->path);
		return -1;
	}
	return 0;
}

/* The id's pseudonym under every key of the ring, newest first: the
 * daemon may still hold a record under an older key (fg_state.h, read). */
static int make_pseudonyms(struct ctl *c, const char *id, size_t len)
{
	const struct fg_keyring *ring = c->cfg->keyring;
	struct fg_keyring_ctx *kc = fg_keyring_ctx_new(ring);
	size_t i;

	if (!kc) {
		fprintf(stderr, PROG ": cannot set up HMAC-SHA256 (OpenSSL)\n");
		return -1;
	}
	for (i = 0; i < ring->n && i < FG_STATE_MAX_KEYS; i++) {
		if (fg_keyring_pseudonym(kc, i, id, len, c->keys[i], sizeof(c->keys[i])) < 0)
			break;
		c->keyv[i] = c->keys[i];
	}
	fg_keyring_ctx_free(kc);
	c->nkeys = i;
	if (i < ring->n) {
		fprintf(stderr, PROG ": cannot compute the pseudonym under key %s\n", ring->keys[i].id);
		return -1;
	}
	return 0;
}

/* The exposure counters of every limited band, each name once, in the
 * policy's band order: a user's band is not known here, and a record
 * holds only the counters its band counts (the others read as 0). */
static void collect_counters(struct ctl *c)
{
	const struct fg_policy *p = c->cfg->policy;
	size_t b, i, j;

	for (b = 0; p && p->limits && b < p->nbands; b++) {
		const struct fg_policy_limits *l = &p->limits[b];
		for (i = 0; l->active && i < l->ncounters; i++) {
			for (j = 0; j < c->ncounters && strcmp(c->counters[j], l->counter_name[i]) != 0; j++)
				;
			if (j == c->ncounters && c->ncounters < MAX_COUNTERS)
				c->counters[c->ncounters++] = l->counter_name[i];
		}
	}
}

/* --- Redis ------------------------------------------------------------ */

static void on_link_state(void *arg, enum fg_redis_state state, const char *why)
{
	struct ctl *c = arg;

	c->link = state;
	if (state == FG_REDIS_DOWN)
		snprintf(c->why, sizeof(c->why), "%s", why ? why : "connection failed");
}

/*
 * A tool waits for an answer as long as the link waits before it calls
 * Redis stalled (state.stall_timeout), not state.timeout: that is a feed
 * call's budget (20ms by default), too short for an operator's one
 * command over a slower network.  The config guarantees stall >= timeout.
 */
static int open_state(struct ctl *c)
{
	const struct fg_config *cfg = c->cfg;
	struct fg_state_redis_config rc;
	const char *why = NULL;
	int err;

	fg_config_state_redis(cfg, &rc);
	rc.link.on_state = on_link_state;
	rc.link.state_arg = c;
	rc.timeout_us = cfg->state.stall_timeout_us;
	c->link = FG_REDIS_CONNECTING;
	if (!(c->base = event_base_new())) {
		fprintf(stderr, PROG ": cannot create an event loop\n");
		return -1;
	}
	if ((err = fg_state_redis_new(&c->state, c->base, &rc, &why)) < 0) {
		/* FG_EIO is the password file; errno says why. */
		fprintf(stderr, PROG ": cannot use Redis at %s: %s%s%s\n", cfg->state.redis,
		        why ? why : "out of memory", err == FG_EIO ? ": " : "", err == FG_EIO ? strerror(errno) : "");
		c->state = NULL;
		return -1;
	}
	return 0;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Run the loop until the link is CONNECTED, or give up at its first
 * failure: a tool reports that Redis is down, it does not retry for ever.
 * The deadline is the link's connect timeout plus a little, a backstop. */
static int wait_connected(struct ctl *c)
{
	int64_t us = c->cfg->state.connect_timeout_us + CONNECT_SLACK_US;
	struct timeval tv = { .tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000) };
	int expired = 0;
	struct event *ev = evtimer_new(c->base, deadline_cb, &expired);

	if (!ev || evtimer_add(ev, &tv) < 0) {
		fprintf(stderr, PROG ": cannot arm a timer\n");
		goto out_free_timer;
	}
	while (c->link == FG_REDIS_CONNECTING && !expired)
		if (event_base_loop(c->base, EVLOOP_ONCE) != 0)
			break;
	if (c->link != FG_REDIS_CONNECTED)
		fprintf(stderr, PROG ": cannot reach Redis at %s: %s\n", c->cfg->state.redis,
		        c->link == FG_REDIS_DOWN ? c->why : "no answer within state.connect_timeout");
out_free_timer:
	if (ev)
		event_free(ev);
	return c->link == FG_REDIS_CONNECTED ? 0 : -1;
}

static void read_cb(void *arg, int rc, const struct fg_state_user *u)
{
	struct result *r = arg;

	r->done = 1;
	r->rc = rc;
	if (u)
		r->u = *u;
}

static void done_cb(void *arg, int rc)
{
	struct result *r = arg;

	r->done = 1;
	r->rc = rc;
}

/* Run the loop until <r> has its answer (a backend may also answer
 * before the submit returns).  Returns its rc. */
static int await(struct ctl *c, struct result *r)
{
	while (!r->done)
		if (event_base_loop(c->base, EVLOOP_ONCE) != 0)
			return FG_EUNAVAIL;    /* no events left: nothing will answer */
	return r->rc;
}

static const char *rc_text(int rc)
{
	switch (rc) {
	case FG_ETIMEOUT: return "no answer within state.stall_timeout";
	case FG_EUNAVAIL: return "Redis is down or cannot serve now";
	case FG_EBUSY: return "too many commands in flight";
	case FG_ETOOBIG: return "Redis is out of memory (maxmemory)";
	case FG_EPROTO: return "Redis answered with something that is not a feedguard record";
	case FG_ENOMEM: return "out of memory";
	default: return "unexpected error";
	}
}

/* One read of pseudonym <k> with counters <first>..<first + n - 1>. */
static int read_one(struct ctl *c, size_t k, size_t first, size_t n, struct fg_state_user *u)
{
	struct fg_state_who who = { .keys = &c->keyv[k], .nkeys = 1, .classes = &c->counters[first], .nclasses = n };
	struct result r = { .done = 0 };
	int rc = fg_state_read(c->state, &who, read_cb, &r);

	if (rc == 0)
		rc = await(c, &r);
	if (rc == 0)
		*u = r.u;
	return rc;
}

/*
 * read_record - the record under pseudonym <k> into <u>, with every
 * counter's count in <x> (ncounters entries).  One read takes at most
 * FG_STATE_MAX_CLASSES counters; a policy with more is read in several,
 * and a record that changed day (or vanished) between them is an error
 * (FG_ESTATE) rather than a mix of two days.  Returns 0 or a FG_E*.
 */
static int read_record(struct ctl *c, size_t k, struct fg_state_user *u, uint64_t *x)
{
	struct fg_state_user more;
	size_t first, n;
	int rc;

	n = c->ncounters < FG_STATE_MAX_CLASSES ? c->ncounters : FG_STATE_MAX_CLASSES;
	if ((rc = read_one(c, k, 0, n, u)) < 0 || !u->found)
		return rc;
	memcpy(x, u->exposure, n * sizeof(*x));
	for (first = n; first < c->ncounters; first += n) {
		n = c->ncounters - first < FG_STATE_MAX_CLASSES ? c->ncounters - first : FG_STATE_MAX_CLASSES;
		if ((rc = read_one(c, k, first, n, &more)) < 0)
			return rc;
		if (!more.found || more.day != u->day)
			return FG_ESTATE;
		memcpy(x + first, more.exposure, n * sizeof(*x));
	}
	return 0;
}

/* --- output ------------------------------------------------------------ */

/* <ms> since the epoch as a JSON ISO-8601 UTC string; null for 0 (none). */
static void put_time(const char *name, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char buf[64];

	if (ms <= 0 || !gmtime_r(&t, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm)) {
		printf("\"%s\": null, ", name);
		return;
	}
	printf("\"%s\": \"%s.%03dZ\", ", name, buf, (int)(ms % 1000));
}

/* Day number <day> (days since 1970-01-01, fg_tz's) as "YYYY-MM-DD". */
static void put_date(const char *name, int64_t day)
{
	time_t t = (time_t)(day * SEC_PER_DAY);
	struct tm tm;
	char buf[32];

	if (day > DAY_PRINT_MAX || day < -DAY_PRINT_MAX || !gmtime_r(&t, &tm) ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%d", &tm)) {
		printf("\"%s\": null, ", name);
		return;
	}
	printf("\"%s\": \"%s\", ", name, buf);
}

/* The record as one JSON object.  Key ids ([A-Za-z0-9._-], fg_keyring)
 * and counter names ([a-z0-9_], fg_state) need no JSON escaping.  Minutes
 * are whole, rounded down, as feedguard-screen-time gives them. */
static void print_record(const struct ctl *c, size_t k, const struct fg_state_user *u, const uint64_t *x)
{
	size_t i;

	printf("{\"found\": true, \"key\": \"%s\", ", c->cfg->keyring->keys[k].id);
	put_time("last", u->last_ms);
	put_time("session_start", u->session_start_ms);
	put_date("day", u->day);
	printf("\"active_minutes\": %" PRId64 ", ", u->active_ms / MS_PER_MINUTE);
	put_date("night", u->night);
	printf("\"quiet_minutes\": %" PRId64 ", \"exposure\": {", u->quiet_ms / MS_PER_MINUTE);
	for (i = 0; i < c->ncounters; i++)
		printf("%s\"%s\": %" PRIu64, i ? ", " : "", c->counters[i], x[i]);
	printf("}}\n");
}

/* --- commands ---------------------------------------------------------- */

/* The first record in ring order, as fg_state_read() would pick it, but
 * one key at a time so the output can say which key it is under. */
static int show(struct ctl *c)
{
	uint64_t x[MAX_COUNTERS];
	struct fg_state_user u;
	size_t k;
	int rc;

	for (k = 0; k < c->nkeys; k++) {
		if ((rc = read_record(c, k, &u, x)) < 0) {
			fprintf(stderr, PROG ": cannot read the state from Redis at %s: %s\n", c->cfg->state.redis,
			        rc == FG_ESTATE ? "the record changed while it was read; run again" : rc_text(rc));
			return -1;
		}
		if (u.found) {
			print_record(c, k, &u, x);
			return 0;
		}
	}
	printf("{\"found\": false}\n");
	return 0;
}

/* Every pseudonym in one DEL: a record under an old key is the same
 * person's data. */
static int erase(struct ctl *c)
{
	struct fg_state_who who = { .keys = c->keyv, .nkeys = c->nkeys };
	struct result r = { .done = 0 };
	int rc = fg_state_erase(c->state, &who, done_cb, &r);

	if (rc == 0)
		rc = await(c, &r);
	if (rc < 0) {
		fprintf(stderr, PROG ": cannot erase the state in Redis at %s: %s\n", c->cfg->state.redis,
		        rc_text(rc));
		return -1;
	}
	printf("{\"erased\": true, \"keys\": %zu}\n", c->nkeys);
	return 0;
}

/* The id's capture pseudonym (capture.key), as the daemon puts it in
 * records' user_key. */
static int make_capture_pseudonym(struct ctl *c, const char *id, size_t len)
{
	struct fg_keyring_ctx *kc = fg_keyring_ctx_new(c->cfg->capture.key);
	int rc = kc ? fg_keyring_pseudonym(kc, 0, id, len, c->keys[0], sizeof(c->keys[0])) : FG_ENOMEM;

	fg_keyring_ctx_free(kc);
	if (rc < 0) {
		fprintf(stderr, PROG ": cannot compute the capture pseudonym (OpenSSL)\n");
		return -1;
	}
	return 0;
}

/* Read the id, hash it, wipe it: the raw id lives only inside here. */
static int take_id(struct ctl *c, enum command cmd)
{
	char id[ID_BUF];
	size_t len = 0;
	int rv = EXIT_USAGE;

	if (read_id(id, &len) == 0) {
		if (cmd == CMD_CAPTURE_ERASE)
			rv = make_capture_pseudonym(c, id, len) == 0 ? EXIT_DONE : EXIT_FAIL;
		else
			rv = make_pseudonyms(c, id, len) == 0 ? EXIT_DONE : EXIT_FAIL;
	}
	OPENSSL_cleanse(id, sizeof(id));
	return rv;
}

/* capture-erase: every closed capture file without the user's records. */
static int capture_erase(struct ctl *c)
{
	struct fg_capture_erase_result res;
	char err[512];

	if (fg_capture_erase(c->cfg->capture.directory, c->cfg->capture.key->keys[0].id, c->keys[0], &res, err,
	                     sizeof(err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return -1;
	}
	printf("{\"erased_records\": %llu, \"files_rewritten\": %llu, \"files\": %llu, \"open_files\": %llu, "
	       "\"other_key_files\": %llu, \"failed_files\": %llu}\n", (unsigned long long)res.records,
	       (unsigned long long)res.rewritten, (unsigned long long)res.files, (unsigned long long)res.open_files,
	       (unsigned long long)res.other_key, (unsigned long long)res.failed);
	if (res.open_files)
		fprintf(stderr, PROG ": %llu capture files are still being written and were not searched: send "
		        "SIGUSR1 to feedguardd (it starts new files) and run again\n", (unsigned long long)res.open_files);
	if (res.other_key)
		fprintf(stderr, PROG ": %llu capture files hold records made under another capture key, which "
		        "cannot be matched (the pseudonym under that key is not known)\n", (unsigned long long)res.other_key);
	return res.failed ? -1 : res.open_files || res.other_key ? 1 : 0;
}

static int run(struct ctl *c, enum command cmd)
{
	if (cmd == CMD_CAPTURE_ERASE) {
		/* a script doing a data-subject request must not read "done" while
		 * the person's records may remain in files it could not search */
		int rc = capture_erase(c);
		return rc < 0 ? EXIT_FAIL : rc > 0 ? EXIT_INCOMPLETE : EXIT_DONE;
	}
	if (open_state(c) < 0 || wait_connected(c) < 0)
		return EXIT_FAIL;
	if ((cmd == CMD_SHOW ? show(c) : erase(c)) < 0)
		return EXIT_FAIL;
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": cannot write to standard output: %s\n", strerror(errno));
		return EXIT_FAIL;
	}
	return EXIT_DONE;
}

/*
 * The config, or without its policy when only the policy fails: a typo in
 * a policy that the daemon refused on reload (it keeps serving the last
 * good one) must not block a support lookup or a user's erasure.  Only
 * show needs the policy, for the names of the exposure counters: without
 * it, it shows the rest and says so.
 */
static int load_config(const char *path, enum command cmd, struct fg_config **out)
{
	char err[FG_CONFIG_ERRLEN], err2[FG_CONFIG_ERRLEN];

	if (fg_config_load(path, out, err, sizeof(err)) == 0)
		return 0;
	if (fg_config_load_flags(path, FG_CONFIG_LOAD_NO_POLICY, out, err2, sizeof(err2)) < 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	fprintf(stderr, "%s\n" PROG ": warning: the policy does not compile; going on without it%s\n", err,
	        cmd == CMD_SHOW ? " (no exposure counters shown)" : "");
	return 0;
}

int main(int argc, char **argv)
{
	struct ctl c = { .cfg = NULL };
	const char *path = FG_CONFIG_DEFAULT_PATH;
	enum command cmd;
	int rv;

	if (parse_args(argc, argv, &path, &cmd) < 0)
		return EXIT_USAGE;
	/* hiredis writes to a socket Redis may close; the error is enough. */
	signal(SIGPIPE, SIG_IGN);
	/* The library's own lines (link up and down, odd answers naming a
	 * pseudonym) are a daemon's; this tool says what failed itself. */
	fg_log_set_level(FG_LOG_ERROR);
	if (load_config(path, cmd, &c.cfg) < 0)
		return EXIT_FAIL;
	rv = check_config(c.cfg, cmd) < 0 ? EXIT_FAIL : take_id(&c, cmd);
	collect_counters(&c);
	if (rv == EXIT_DONE)
		rv = run(&c, cmd);
	fg_state_free(c.state);
	if (c.base)
		event_base_free(c.base);
	OPENSSL_cleanse(c.keys, sizeof(c.keys));
	fg_config_unref(c.cfg);
	return rv;
}
