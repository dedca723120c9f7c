/*
 * feedguard-replay.c - feedguard-replay: reads traffic captures
 * (proto/feedguard/capture/v1/capture.proto) for researchers.
 *
 *   dump     every call record as one line of JSON (JSON Lines), messages
 *            decoded against the platform's descriptor set, so pandas, R,
 *            DuckDB or jq read a capture without feedguard.
 *   run      the calls again, offline, under one policy or two side by side
 *            (fg_replay.h: the daemon's own stages), in the order of their
 *            start times: a calls file per call, policy and class
 *            (fg_replay_stats.h) and a summary table; --check compares the
 *            decisions with the recorded ones; --shard I/N takes one share
 *            of the users.
 *   summary  the summary table of calls files (the shards of one run).
 *   live     the recorded requests to a live target (a feedguardd or a
 *            ranker) at the recorded pacing or a speed factor, with a
 *            load tester's report (fg_replay_live.h).
 *
 * Exit status: 0 done; 1 a file could not be read or is corrupt (the
 * others are still read); 2 usage.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fg_bufq.h"
#include "fg_capread.h"
#include "fg_capture.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_keyring.h"
#include "fg_pbjson.h"
#include "fg_policy-t.h"
#include "fg_policy_compile.h"
#include "fg_replay.h"
#include "fg_replay_live.h"
#include "fg_replay_stats.h"
#include "fg_schema.h"

#define PROG "feedguard-replay"
/* --follow: how long to wait before looking for more bytes. */
#define FOLLOW_POLL_US 200000

enum exit_code { EXIT_DONE = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct dump {
	struct fg_schema *schema;       /* NULL: messages as base64 */
	unsigned follow;
	unsigned file_info;             /* print FileInfo records too */
	struct fg_bufq line;
};

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: " PROG " dump [--descriptor-set FILE | -c CONFIG] [--file-info] [--follow] CAPTURE...\n"
	        "       " PROG " run -p POLICY [-p POLICY_B] [--calls FILE] [--format csv|jsonl] [--check]\n"
	        "                    [--shard I/N] [--max-users N] [--progress | --no-progress] CAPTURE...\n"
	        "       " PROG " summary CALLS.csv...   (calls files of run, in CSV)\n"
	        "       " PROG " live --target HOST:PORT [--speed F] [--rate N] [--concurrency N] [--timeout MS]\n"
	        "                    [--user-header NAME] [--recorded-time] [-p POLICY] [--shard I/N] CAPTURE...\n"
	        "dump:\n"
	        "  -d, --descriptor-set FILE  decode messages with this descriptor set\n"
	        "  -c, --config FILE          ... with the one of this feedguardd config's policy\n"
	        "      --file-info            print each file's FileInfo record too\n"
	        "  -f, --follow               keep reading a file the daemon is writing (one file),\n"
	        "                             until the daemon closes it\n"
	        "run:\n"
	        "  -p, --policy FILE          a policy to replay under (twice: A against B)\n"
	        "      --calls FILE           one row per call, policy and class (- for stdout)\n"
	        "      --format csv|jsonl     of the calls file (default csv)\n"
	        "      --check                compare each call's decisions with the recorded ones\n"
	        "                             (exit status 1 when any differs)\n"
	        "      --shard I/N            only the users of share I of N (0 <= I < N)\n"
	        "      --max-users N          users' screen-time state kept (default 1000000)\n"
	        "      --progress, --no-progress  a progress bar on stderr (default: when a terminal)\n"
	        "live:\n"
	        "      --target HOST:PORT     a feedguardd or a ranker (h2c, numeric address)\n"
	        "      --speed F              recorded gaps divided by F (default 1; 0: no pacing)\n"
	        "      --rate N               at most N calls a second (default: no cap)\n"
	        "      --concurrency N        calls in flight at most (default 16)\n"
	        "      --timeout MS           each call's deadline (default 10000)\n"
	        "      --user-header NAME     send each call's recorded user key in this header\n"
	        "      --recorded-time        send each call's recorded time in feedguard-test-now\n"
	        "  -p, --policy FILE          a policy for the capture's methods: calls the recording\n"
	        "                             filter over-fetched go with the page size the client asked\n"
	        "  -v, --version              print the version and exit\n"
	        "  -h, --help                 print this help and exit\n");
}

/* --- JSON -------------------------------------------------------------------- */

static int key(struct fg_bufq *b, const char *k, int first)
{
	if (!first && fg_bufq_append(b, ",", 1) < 0)
		return FG_ENOMEM;
	if (fg_pbjson_write_string(b, (const uint8_t *)k, strlen(k)) < 0 || fg_bufq_append(b, ":", 1) < 0)
		return FG_ENOMEM;
	return 0;
}

static int str(struct fg_bufq *b, const char *s)
{
	return fg_pbjson_write_string(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
}

static int num(struct fg_bufq *b, long long v)
{
	char t[32];
	int n = snprintf(t, sizeof(t), "%lld", v);

	return fg_bufq_append(b, t, (size_t)n);
}

/* "2026-12-06T06:30:00.123Z" for ms since the epoch. */
static int iso(struct fg_bufq *b, int64_t ms)
{
	char t[48], d[32];
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || !gmtime_r(&s, &tm))
		return fg_bufq_append(b, "null", 4);
	strftime(d, sizeof(d), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(t, sizeof(t), "\"%s.%03dZ\"", d, (int)(ms % 1000));
	return fg_bufq_append(b, t, strlen(t));
}

/* A message: decoded with <type> when the schema has it, else base64; a
 * message that does not decode becomes {"_invalid": base64}. */
static int message(struct dump *d, const struct fg_schema_message *type, const ProtobufCBinaryData *m)
{
	struct fg_bufq *b = &d->line;

	if (type && fg_pbjson_write(b, d->schema, type, m->data, m->len, NULL) == 0)
		return 0;
	if (!type)
		return fg_pbjson_write_base64(b, m->data, m->len);
	if (fg_bufq_append(b, "{\"_invalid\":", 12) < 0 || fg_pbjson_write_base64(b, m->data, m->len) < 0)
		return FG_ENOMEM;
	return fg_bufq_append(b, "}", 1);
}

static int messages(struct dump *d, const char *k, const struct fg_schema_message *type, size_t n,
                    const ProtobufCBinaryData *m)
{
	size_t i;
	int rc = key(&d->line, k, 0) | fg_bufq_append(&d->line, "[", 1);

	for (i = 0; i < n && rc == 0; i++)
		rc = (i ? fg_bufq_append(&d->line, ",", 1) : 0) | message(d, type, &m[i]);
	return rc | fg_bufq_append(&d->line, "]", 1);
}

/* Metadata as {"name": ["value", ...]}; a -bin value as base64. */
static int metadata(struct fg_bufq *b, const char *k, size_t n, Feedguard__Capture__V1__Metadata **md)
{
	size_t i, j;
	int rc = key(b, k, 0) | fg_bufq_append(b, "{", 1);

	for (i = 0; i < n && rc == 0; i++) {
		const char *name = md[i]->name;
		size_t len = strlen(name);
		int bin = len > 4 && strcmp(name + len - 4, "-bin") == 0;
		for (j = 0; j < i; j++)
			if (strcmp(md[j]->name, name) == 0)
				break;
		if (j < i)
			continue;       /* written with its first occurrence */
		rc |= key(b, name, i == 0) | fg_bufq_append(b, "[", 1);
		for (j = i; j < n && rc == 0; j++) {
			if (strcmp(md[j]->name, name) != 0)
				continue;
			if (j > i)
				rc |= fg_bufq_append(b, ",", 1);
			rc |= bin ? fg_pbjson_write_base64(b, md[j]->value.data, md[j]->value.len)
			          : fg_pbjson_write_string(b, md[j]->value.data, md[j]->value.len);
		}
		rc |= fg_bufq_append(b, "]", 1);
	}
	return rc | fg_bufq_append(b, "}", 1);
}

static const char *fate_name(int f)
{
	static const char *const names[] = { "KEPT", "REMOVED", "SURPLUS_DROPPED", "SURPLUS_END", "TRIMMED", "LIMITED" };

	return f >= 0 && f < (int)(sizeof(names) / sizeof(names[0])) ? names[f] : "UNKNOWN";
}

static const char *action_name(int a)
{
	static const char *const names[] = { "NONE", "NOTICE", "EMPTY", "DENY" };

	return a >= 0 && a < 4 ? names[a] : "UNKNOWN";
}

static int items(struct fg_bufq *b, const Feedguard__Capture__V1__Decisions *d)
{
	size_t i;
	int rc = key(b, "items", 0) | fg_bufq_append(b, "[", 1);

	for (i = 0; d && i < d->n_items && rc == 0; i++) {
		const Feedguard__Capture__V1__Item *it = d->items[i];
		rc |= (i ? fg_bufq_append(b, ",", 1) : 0) | fg_bufq_append(b, "{", 1);
		rc |= key(b, "message", 1) | num(b, it->message) | key(b, "position", 0) | num(b, it->position);
		rc |= key(b, "delivered_position", 0) | num(b, it->delivered_position);
		rc |= key(b, "class", 0) | str(b, it->class_) | key(b, "fate", 0) | str(b, fate_name(it->fate));
		rc |= key(b, "demoted", 0) | fg_bufq_append(b, it->demoted ? "true" : "false", it->demoted ? 4 : 5);
		rc |= fg_bufq_append(b, "}", 1);
	}
	return rc | fg_bufq_append(b, "]", 1);
}

static int screen_time(struct fg_bufq *b, const Feedguard__Capture__V1__ScreenTime *s)
{
	size_t i;
	int rc = key(b, "screen_time", 0) | fg_bufq_append(b, "{", 1);

	rc |= key(b, "action", 1) | str(b, action_name(s->action)) | key(b, "notices", 0) | fg_bufq_append(b, "[", 1);
	for (i = 0; i < s->n_notices; i++)
		rc |= (i ? fg_bufq_append(b, ",", 1) : 0) | str(b, s->notices[i]);
	rc |= fg_bufq_append(b, "]", 1);
	rc |= key(b, "state_failure", 0) | (s->state_failure[0] ? str(b, s->state_failure) : fg_bufq_append(b, "null", 4));
	rc |= key(b, "fail_mode", 0) | (s->fail_mode[0] ? str(b, s->fail_mode) : fg_bufq_append(b, "null", 4));
	rc |= key(b, "used_minutes", 0) | num(b, s->used_minutes) | key(b, "left_minutes", 0) | num(b, s->left_minutes);
	rc |= key(b, "session_minutes", 0) | num(b, s->session_minutes);
	rc |= key(b, "counted_ms", 0);
	if (s->counted_case == FEEDGUARD__CAPTURE__V1__SCREEN_TIME__COUNTED_COUNTED_MS)
		rc |= num(b, s->counted_ms);
	else
		rc |= fg_bufq_append(b, "null", 4);
	rc |= key(b, "exposure", 0) | fg_bufq_append(b, "{", 1);
	for (i = 0; i < s->n_exposure; i++) {
		const Feedguard__Capture__V1__Exposure *e = s->exposure[i];
		rc |= key(b, e->counter, i == 0) | fg_bufq_append(b, "{", 1);
		rc |= key(b, "allowance", 1) | num(b, e->allowance) | key(b, "delivered", 0) | num(b, e->delivered);
		rc |= key(b, "limited", 0) | num(b, e->limited) | fg_bufq_append(b, "}", 1);
	}
	return rc | fg_bufq_append(b, "}}", 2);
}

static int decisions(struct fg_bufq *b, const Feedguard__Capture__V1__Decisions *d)
{
	size_t i;
	int rc = key(b, "decisions", 0) | fg_bufq_append(b, "{", 1);

	rc |= key(b, "stripped", 1) | fg_bufq_append(b, "{", 1);
	for (i = 0; d && i < d->n_stripped; i++)
		rc |= key(b, d->stripped[i]->field, i == 0) | num(b, d->stripped[i]->count);
	rc |= fg_bufq_append(b, "}", 1);
	/* always there, empty when no filter ran: one shape for every line */
	rc |= items(b, d);
	if (d && d->screen_time)
		rc |= screen_time(b, d->screen_time);
	if (d && d->page_size_asked)
		rc |= key(b, "page_size_asked", 0) | num(b, (long long)d->page_size_asked);
	if (d && d->items_omitted)
		rc |= key(b, "items_omitted", 0) | num(b, d->items_omitted);
	return rc | fg_bufq_append(b, "}", 1);
}

static int call_line(struct dump *d, const char *file, uint64_t offset, const Feedguard__Capture__V1__Call *c)
{
	const struct fg_schema_method *m = d->schema ? fg_schema_find_method(d->schema, c->method) : NULL;
	const struct fg_schema_message *in = m ? fg_schema_method_input(m) : NULL;
	const struct fg_schema_message *out = m ? fg_schema_method_output(m) : NULL;
	struct fg_bufq *b = &d->line;
	int rc = fg_bufq_append(b, "{", 1);

	rc |= key(b, "file", 1) | str(b, file) | key(b, "offset", 0) | num(b, (long long)offset);
	rc |= key(b, "start_unix_ms", 0) | num(b, c->start_unix_ms) | key(b, "time", 0) | iso(b, c->start_unix_ms);
	rc |= key(b, "duration_us", 0) | num(b, c->duration_us);
	rc |= key(b, "method", 0) | str(b, c->method) | key(b, "band", 0) | str(b, c->band);
	rc |= key(b, "user_key", 0) | str(b, c->user_key) | key(b, "time_zone", 0) | str(b, c->time_zone);
	rc |= key(b, "status", 0) | num(b, c->status) | key(b, "status_message", 0) | str(b, c->status_message);
	rc |= key(b, "answered_by_feedguard", 0) |
	      fg_bufq_append(b, c->answered_by_feedguard ? "true" : "false", c->answered_by_feedguard ? 4 : 5);
	rc |= key(b, "messages_omitted", 0) | num(b, c->messages_omitted);
	if (c->metadata_omitted)
		rc |= key(b, "metadata_omitted", 0) | num(b, c->metadata_omitted);
	if (c->policy_id[0])
		rc |= key(b, "policy_id", 0) | str(b, c->policy_id);
	rc |= metadata(b, "request_metadata", c->n_request_metadata, c->request_metadata);
	rc |= metadata(b, "response_metadata", c->n_response_metadata, c->response_metadata);
	rc |= messages(d, "request", in, c->n_request, c->request);
	rc |= messages(d, "upstream_response", out, c->n_upstream_response, c->upstream_response);
	rc |= messages(d, "delivered_response", out, c->n_delivered_response, c->delivered_response);
	rc |= decisions(b, c->decisions);
	return rc | fg_bufq_append(b, "}\n", 2);
}

static int info_line(struct dump *d, const char *file, uint64_t offset, const Feedguard__Capture__V1__FileInfo *fi)
{
	struct fg_bufq *b = &d->line;
	int rc = fg_bufq_append(b, "{", 1);

	rc |= key(b, "file", 1) | str(b, file) | key(b, "offset", 0) | num(b, (long long)offset);
	rc |= key(b, "file_info", 0) | fg_bufq_append(b, "{", 1);
	rc |= key(b, "format_version", 1) | num(b, fi->format_version) | key(b, "writer", 0) | str(b, fi->writer);
	rc |= key(b, "opened", 0) | iso(b, fi->opened_unix_ms) | key(b, "host", 0) | str(b, fi->host);
	rc |= key(b, "pid", 0) | num(b, fi->pid) | key(b, "capture_key_id", 0) | str(b, fi->capture_key_id);
	rc |= key(b, "policy_file", 0) | str(b, fi->policy_file);
	{
		char t[32];
		int n = snprintf(t, sizeof(t), "%.17g", fi->sample);
		rc |= key(b, "sample", 0) | fg_bufq_append(b, t, (size_t)n);
	}
	return rc | fg_bufq_append(b, "}}\n", 3);
}

/*
 * --follow: 1 while <path> is a file its writer may still append to: a
 * name ending in ".fgcap.open" that is still there.  The writer renames it
 * to ".fgcap" once it has closed it (SIGUSR1, rotation, a stop), after its
 * last bytes are on it; a closed file never grows.
 */
static int still_written(const char *path)
{
	size_t n = strlen(path), k = strlen(FG_CAPTURE_FILE_SUFFIX FG_CAPTURE_OPEN_SUFFIX);
	struct stat st;

	return n > k && strcmp(path + n - k, FG_CAPTURE_FILE_SUFFIX FG_CAPTURE_OPEN_SUFFIX) == 0 &&
	       stat(path, &st) == 0;
}

/* One file to stdout; EXIT_DONE or EXIT_FAIL.  With --follow, an open file
 * is read as it grows until its writer closes it, then to its end. */
static int dump_file(struct dump *d, const char *path)
{
	Feedguard__Capture__V1__Record *rec;
	struct fg_capread *r;
	unsigned closing = 0;   /* --follow: the writer closed it; one more pass */
	char err[512];
	int rc;

	if (fg_capread_open(&r, path, d->follow ? FG_CAPREAD_F_FOLLOW : 0, err, sizeof(err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return EXIT_FAIL;
	}
	for (;;) {
		rc = fg_capread_next(r, &rec, err, sizeof(err));
		if (rc == FG_CAPREAD_AGAIN || (rc == FG_CAPREAD_END && d->follow)) {
			fflush(stdout);
			if (closing) {
				/* the bytes of a frame cut short are all there is */
				if (rc == FG_CAPREAD_AGAIN)
					snprintf(err, sizeof(err), "closed by its writer with its last frame cut short");
				rc = rc == FG_CAPREAD_AGAIN ? FG_CAPREAD_TORN : FG_CAPREAD_END;
				break;
			}
			if (!still_written(path)) {
				closing = 1;
				continue;
			}
			usleep(FOLLOW_POLL_US);
			continue;
		}
		if (rc != FG_CAPREAD_RECORD)
			break;
		fg_bufq_truncate(&d->line, 0);
		if (rec->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL)
			rc = call_line(d, path, fg_capread_offset(r), rec->call);
		else if (rec->kind_case == FEEDGUARD__CAPTURE__V1__RECORD__KIND_FILE_INFO && d->file_info)
			rc = info_line(d, path, fg_capread_offset(r), rec->file_info);
		else
			continue;
		if (rc < 0) {
			fprintf(stderr, PROG ": out of memory\n");
			break;
		}
		fwrite(fg_bufq_head(&d->line), 1, fg_bufq_len(&d->line), stdout);
	}
	fg_capread_free(r);
	if (rc == FG_CAPREAD_END)
		return EXIT_DONE;
	fprintf(stderr, PROG ": %s: %s\n", path, err);
	return rc == FG_CAPREAD_TORN ? EXIT_DONE : EXIT_FAIL;
}

static int load_schema(struct dump *d, const char *ds, const char *config)
{
	char err[FG_CONFIG_ERRLEN];
	struct fg_config *cfg = NULL;
	int rc;

	if (config) {
		if (fg_config_load(config, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, PROG ": %s\n", err);
			return -1;
		}
		if (!cfg->policy) {
			fprintf(stderr, PROG ": %s has no policy, so no descriptor set\n", config);
			fg_config_unref(cfg);
			return -1;
		}
		ds = cfg->policy->descriptor_set;
	}
	rc = ds ? fg_schema_load(ds, &d->schema, err, sizeof(err)) : 0;
	if (rc < 0)
		fprintf(stderr, PROG ": %s\n", err);
	fg_config_unref(cfg);
	return rc < 0 ? -1 : 0;
}

static int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "descriptor-set", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
		{ "follow", no_argument, NULL, 'f' },               { "file-info", no_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },                 { NULL, 0, NULL, 0 },
	};
	struct dump d = { 0 };
	const char *ds = NULL, *config = NULL;
	int c, i, status = EXIT_DONE;

	while ((c = getopt_long(argc, argv, "d:c:fh", opts, NULL)) != -1) {
		switch (c) {
		case 'd': ds = optarg; break;
		case 'c': config = optarg; break;
		case 'f': d.follow = 1; break;
		case 'i': d.file_info = 1; break;
		case 'h': usage(stdout); return EXIT_DONE;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc || (ds && config) || (d.follow && argc - optind != 1)) {
		fprintf(stderr, PROG ": dump: %s\n", optind >= argc ? "no capture file given"
		        : ds && config ? "-c and -d both name descriptors: give one"
		        : "--follow reads one file, being written");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (load_schema(&d, ds, config) < 0)
		return EXIT_FAIL;
	fg_bufq_init(&d.line);
	for (i = optind; i < argc; i++)
		if (dump_file(&d, argv[i]) != EXIT_DONE)
			status = EXIT_FAIL;
	fg_bufq_free(&d.line);
	fg_schema_free(d.schema);
	if (fflush(stdout) != 0) {
		perror(PROG ": stdout");
		status = EXIT_FAIL;
	}
	return status;
}

/* --- run ------------------------------------------------------------------------ */

/* One recorded call to replay: where it is and when it started. */
struct entry {
	uint32_t file;
	uint64_t offset;
	int64_t start_ms;
	uint64_t seq;                   /* capture order, for equal start times */
	uint64_t num;                   /* its place among all calls in time order, from 1 */
	unsigned share;                 /* --shard: the user's share */
};

struct run {
	const char *policies[2];
	size_t npolicies;
	struct fg_replay *replay[2];
	const char *calls_path;
	FILE *calls;
	enum fg_replay_format format;
	unsigned check, progress;
	unsigned shard, nshards;
	size_t max_users;
	struct entry *e;
	size_t n, cap;
	uint64_t checked, mismatched, no_upstream[2], failed;
	uint64_t other_policy;          /* --check: calls another policy decided (policy_id) */
	uint64_t other_mismatched;      /* of those, decided otherwise here */
	char other_policy_example[64];
	uint64_t failed_no_method;      /* of <failed>: records of a call with no method */
	uint64_t incomplete;            /* records that left messages or items out */
	uint64_t not_in_policy[2];      /* calls whose method the policy does not name */
	char not_in_policy_example[2][128];
	uint64_t band_not_in_policy[2]; /* calls whose recorded band the policy does not have */
	char band_example[2][128];
	char band_unknown[2][128];      /* the policy's unknown_band, which those calls got */
	struct fg_replay_stats *stats;
};

/* The share of user <key> ("<key id>:<hex>"): its first 64 bits mod N; a
 * call without a user id is share 0's. */
static unsigned share_of(const char *key, unsigned n)
{
	uint64_t v;

	if (n <= 1 || fg_keyring_pseudonym_bits(key, &v) < 0)
		return 0;
	return (unsigned)(v % n);
}

static void progress(const struct run *ru, const char *what, uint64_t done, uint64_t total)
{
	char bar[31];
	unsigned k, fill;

	if (!ru->progress || total == 0)
		return;
	fill = (unsigned)(done * 30 / total);
	for (k = 0; k < 30; k++)
		bar[k] = k < fill ? '#' : '.';
	bar[30] = '\0';
	fprintf(stderr, "\r" PROG ": %-9s [%s] %3u%% %llu/%llu", what, bar, (unsigned)(done * 100 / total),
	        (unsigned long long)done, (unsigned long long)total);
	if (done >= total)
		fputc('\n', stderr);
}

static int add_entry(struct run *ru, uint32_t file, uint64_t offset, int64_t start)
{
	if (ru->n == ru->cap) {
		size_t cap = ru->cap ? ru->cap * 2 : 4096;
		struct entry *e = realloc(ru->e, cap * sizeof(*e));
		if (!e)
			return FG_ENOMEM;
		ru->e = e;
		ru->cap = cap;
	}
	ru->e[ru->n] = (struct entry){ file, offset, start, ru->n, 0, 0 };
	ru->n++;
	return 0;
}

/* Pass one: every call of the shard, with its offset.  EXIT_* */
static int index_file(struct run *ru, uint32_t fi, const char *path, uint64_t *bytes_done, uint64_t total)
{
	Feedguard__Capture__V1__Record *rec;
	struct fg_capread *r;
	char err[512];
	int rc;

	if (fg_capread_open(&r, path, 0, err, sizeof(err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return EXIT_FAIL;
	}
	while ((rc = fg_capread_next(r, &rec, err, sizeof(err))) == FG_CAPREAD_RECORD) {
		if (rec->kind_case != FEEDGUARD__CAPTURE__V1__RECORD__KIND_CALL)
			continue;
		/* every call is indexed: its number counts all calls, the
		 * other shards' too, so shards number calls alike */
		if (add_entry(ru, fi, fg_capread_offset(r), rec->call->start_unix_ms) < 0) {
			fprintf(stderr, PROG ": out of memory\n");
			fg_capread_free(r);
			return EXIT_FAIL;
		}
		ru->e[ru->n - 1].share = share_of(rec->call->user_key, ru->nshards);
		if ((ru->n & 1023) == 0)
			progress(ru, "indexing", *bytes_done + fg_capread_offset(r), total);
	}
	fg_capread_free(r);
	if (rc == FG_CAPREAD_TORN)
		fprintf(stderr, "%s" PROG ": %s: %s\n", ru->progress ? "\n" : "", path, err);
	else if (rc != FG_CAPREAD_END) {
		fprintf(stderr, "%s" PROG ": %s: %s\n", ru->progress ? "\n" : "", path, err);
		return EXIT_FAIL;
	}
	return EXIT_DONE;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->start_ms != y->start_ms)
		return x->start_ms < y->start_ms ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The index in time order, numbered, then only this shard's calls. */
static void order_index(struct run *ru)
{
	size_t i, k = 0;

	qsort(ru->e, ru->n, sizeof(*ru->e), entry_cmp);
	for (i = 0; i < ru->n; i++) {
		ru->e[i].num = i + 1;
		if (ru->e[i].share == ru->shard)
			ru->e[k++] = ru->e[i];
	}
	ru->n = k;
}

static void notices_text(const Feedguard__Capture__V1__ScreenTime *st, char *out, size_t len)
{
	size_t i, at = 0;
	int w;

	out[0] = '\0';
	for (i = 0; st && i < st->n_notices && at < len; i++) {
		w = snprintf(out + at, len - at, "%s%s", i ? "," : "", st->notices[i]);
		at += w > 0 ? (size_t)w : 0;
	}
}

/* What replayed <b> decided otherwise than recorded <a> (status,
 * screen-time action and notices, each item's fate and place), the first
 * difference in <why> (<len> bytes); 0 when it decided the same. */
static int differs(const Feedguard__Capture__V1__Call *a, const Feedguard__Capture__V1__Call *b, char *why,
                   size_t len)
{
	const Feedguard__Capture__V1__Decisions *x = a->decisions, *y = b->decisions;
	const Feedguard__Capture__V1__ScreenTime *sx = x ? x->screen_time : NULL, *sy = y ? y->screen_time : NULL;
	size_t nx = x ? x->n_items : 0, ny = y ? y->n_items : 0, i;
	char na[256], nb[256];

	if (a->status != b->status)
		return snprintf(why, len, "status %d recorded, %d replayed", (int)a->status, (int)b->status), 1;
	if ((sx ? sx->action : 0) != (sy ? sy->action : 0))
		return snprintf(why, len, "screen-time action %s recorded, %s replayed", action_name(sx ? sx->action : 0),
		                action_name(sy ? sy->action : 0)), 1;
	notices_text(sx, na, sizeof(na));
	notices_text(sy, nb, sizeof(nb));
	if (strcmp(na, nb) != 0)
		return snprintf(why, len, "notices [%.200s] recorded, [%.200s] replayed", na, nb), 1;
	if (nx != ny)
		return snprintf(why, len, "%zu items recorded, %zu replayed", nx, ny), 1;
	for (i = 0; i < nx; i++) {
		const Feedguard__Capture__V1__Item *p = x->items[i], *q = y->items[i];
		if (p->message != q->message || p->position != q->position || p->fate != q->fate ||
		    p->delivered_position != q->delivered_position || p->demoted != q->demoted ||
		    strcmp(p->class_, q->class_) != 0)
			return snprintf(why, len, "item %u of page %u: %s at %d, class '%s' recorded; %s at %d, "
			                "class '%s' replayed", p->position, p->message, fate_name(p->fate),
			                (int)p->delivered_position, p->class_, fate_name(q->fate), (int)q->delivered_position,
			                q->class_), 1;
	}
	return 0;
}

static const char *label(const struct run *ru, size_t p)
{
	static const char *const names[] = { "A", "B" };

	return ru->npolicies > 1 ? names[p] : "A";
}

/*
 * The strings of <call> that run prints (summary, warnings, calls file)
 * as printable text: a crafted capture put terminal escapes (a window
 * title, a screen clear) and line breaks into the researcher's terminal
 * and CSV (an attack run).  No name a policy can match holds one, so the
 * replay is the same; dump shows the bytes as they are, escaped as JSON.
 */
static void printable_call(Feedguard__Capture__V1__Call *call)
{
	const Feedguard__Capture__V1__ScreenTime *st = call->decisions ? call->decisions->screen_time : NULL;
	size_t i;

	fg_replay_printable(call->user_key);
	fg_replay_printable(call->band);
	fg_replay_printable(call->method);
	for (i = 0; st && i < st->n_notices; i++)
		fg_replay_printable(st->notices[i]);
}

/* --check: <out>, the call replayed under the one policy, against the
 * record <in>.  A call another policy decided (the capture spans a
 * reload: its policy_id differs) is compared too but counted apart, with
 * its own ten lines: its differences are the policies', not replay's,
 * and must neither fail the check nor hide replay's own. */
static void check_one(struct run *ru, const Feedguard__Capture__V1__Call *in, const Feedguard__Capture__V1__Call *out,
                      uint64_t n, const char *file, uint64_t offset)
{
	int other = in->policy_id && in->policy_id[0] && strcmp(in->policy_id, fg_replay_policy_id(ru->replay[0])) != 0;
	uint64_t *seen = other ? &ru->other_mismatched : &ru->mismatched;
	char why[512];

	if (other && !ru->other_policy++)
		snprintf(ru->other_policy_example, sizeof(ru->other_policy_example), "%s", in->policy_id);
	ru->checked += !other;
	if (!differs(in, out, why, sizeof(why)))
		return;
	if (++*seen <= 10)
		fprintf(stderr, PROG ": check: call %llu (%s, band %s, %s; %s offset %llu, as dump names it) decided "
		        "otherwise than recorded%s: %s\n", (unsigned long long)n, in->method, in->band, in->user_key, file,
		        (unsigned long long)offset, other ? " (by another policy)" : "", why);
}

/* One call under each policy.  0, or -1 (a failure already said). */
static int replay_one(struct run *ru, const Feedguard__Capture__V1__Call *in, uint64_t n, const char *file,
                      uint64_t offset, struct fg_replay_row *row)
{
	Feedguard__Capture__V1__Call *out;
	struct fg_replay_result res;
	size_t p;

	if (in->messages_omitted || (in->decisions && in->decisions->items_omitted))
		ru->incomplete++;
	for (p = 0; p < ru->npolicies; p++) {
		if (fg_replay_call(ru->replay[p], in, &out, &res) < 0) {
			ru->failed++;
			ru->failed_no_method += !in->method || !in->method[0];
			continue;
		}
		ru->no_upstream[p] += res.no_upstream;
		if (res.not_in_policy && !ru->not_in_policy[p]++)
			snprintf(ru->not_in_policy_example[p], sizeof(ru->not_in_policy_example[p]), "%s", in->method);
		if (res.band_not_in_policy && !ru->band_not_in_policy[p]++) {
			snprintf(ru->band_example[p], sizeof(ru->band_example[p]), "%s", in->band);
			snprintf(ru->band_unknown[p], sizeof(ru->band_unknown[p]), "%s", res.unknown_band);
		}
		if (ru->check && p == 0)
			check_one(ru, in, out, n, file, offset);
		fg_replay_row_of(row, label(ru, p), n, out, res.no_upstream, fg_replay_zone(ru->replay[p], out->time_zone));
		if (fg_replay_stats_add(ru->stats, row) < 0 ||
		    (ru->calls && fg_replay_row_write(ru->calls, ru->format, row) < 0)) {
			fprintf(stderr, PROG ": cannot write the calls file: out of memory or disk\n");
			return -1;
		}
	}
	return 0;
}

/* Pass two: the calls in time order.  EXIT_* */
static int replay_all(struct run *ru, char **files)
{
	struct fg_replay_row *row = calloc(1, sizeof(*row));
	Feedguard__Capture__V1__Record *rec;
	struct fg_bufq buf;
	int fd = -1, rv = EXIT_DONE;
	uint32_t open_file = UINT32_MAX;
	size_t i;

	if (!row)
		return EXIT_FAIL;
	fg_bufq_init(&buf);
	for (i = 0; i < ru->n && rv == EXIT_DONE; i++) {
		const struct entry *e = &ru->e[i];
		if (e->file != open_file) {
			if (fd >= 0)
				close(fd);
			if ((fd = open(files[e->file], O_RDONLY | O_CLOEXEC)) < 0) {
				perror(files[e->file]);
				rv = EXIT_FAIL;
				break;
			}
			open_file = e->file;
		}
		if (fg_capread_record_at(fd, e->offset, &buf, &rec) < 0) {
			fprintf(stderr, PROG ": %s: the record at offset %llu changed since it was indexed\n",
			        files[e->file], (unsigned long long)e->offset);
			rv = EXIT_FAIL;
			break;
		}
		printable_call(rec->call);
		if (replay_one(ru, rec->call, e->num, files[e->file], e->offset, row) < 0)
			rv = EXIT_FAIL;
		feedguard__capture__v1__record__free_unpacked(rec, NULL);
		if ((i & 255) == 0 || i + 1 == ru->n)
			progress(ru, "replaying", i + 1, ru->n);
	}
	if (fd >= 0)
		close(fd);
	fg_bufq_free(&buf);
	free(row);
	return rv;
}

/* A count option's value: a whole number from 1 to <max>, nothing after
 * it.  0, or -1 (the caller says what the option wants). */
static int parse_count(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (end == s || *end || errno || v == 0 || v > max || *s == '-')
		return -1;
	*out = v;
	return 0;
}

static int parse_shard(const char *s, unsigned *i, unsigned *n)
{
	char *end;
	unsigned long a = strtoul(s, &end, 10), b;

	if (end == s || *end != '/')
		return -1;
	b = strtoul(end + 1, &end, 10);
	if (*end || b == 0 || b > 1000000 || a >= b)
		return -1;
	*i = (unsigned)a;
	*n = (unsigned)b;
	return 0;
}

static int run_args(struct run *ru, int argc, char **argv)
{
	enum { O_CALLS = 256, O_FORMAT, O_CHECK, O_SHARD, O_MAX_USERS, O_PROGRESS, O_NO_PROGRESS };
	static const struct option opts[] = {
		{ "policy", required_argument, NULL, 'p' },     { "calls", required_argument, NULL, O_CALLS },
		{ "format", required_argument, NULL, O_FORMAT }, { "check", no_argument, NULL, O_CHECK },
		{ "shard", required_argument, NULL, O_SHARD },   { "max-users", required_argument, NULL, O_MAX_USERS },
		{ "progress", no_argument, NULL, O_PROGRESS },   { "no-progress", no_argument, NULL, O_NO_PROGRESS },
		{ "help", no_argument, NULL, 'h' },              { NULL, 0, NULL, 0 },
	};
	int c;

	ru->progress = isatty(STDERR_FILENO);
	ru->nshards = 1;
	while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (ru->npolicies == 2) {
				fprintf(stderr, PROG ": run takes one or two policies\n");
				return -1;
			}
			ru->policies[ru->npolicies++] = optarg;
			break;
		case O_CALLS: ru->calls_path = optarg; break;
		case O_FORMAT:
			if (strcmp(optarg, "csv") != 0 && strcmp(optarg, "jsonl") != 0) {
				fprintf(stderr, PROG ": --format is csv or jsonl\n");
				return -1;
			}
			ru->format = strcmp(optarg, "csv") == 0 ? FG_REPLAY_CSV : FG_REPLAY_JSONL;
			break;
		case O_CHECK: ru->check = 1; break;
		case O_SHARD:
			if (parse_shard(optarg, &ru->shard, &ru->nshards) < 0) {
				fprintf(stderr, PROG ": --shard is I/N with 0 <= I < N\n");
				return -1;
			}
			break;
		case O_MAX_USERS: {
			unsigned long v;
			if (parse_count(optarg, 1000000000ul, &v) < 0) {
				fprintf(stderr, PROG ": --max-users wants a whole number from 1 to 1000000000, not '%s'\n",
				        optarg);
				return -1;
			}
			ru->max_users = v;
			break;
		}
		case O_PROGRESS: ru->progress = 1; break;
		case O_NO_PROGRESS: ru->progress = 0; break;
		case 'h': usage(stdout); exit(EXIT_DONE);
		default: return -1;
		}
	}
	if (ru->npolicies == 0 || optind >= argc) {
		fprintf(stderr, PROG ": run needs a policy (-p) and capture files\n");
		return -1;
	}
	if (ru->check && ru->npolicies > 1) {
		fprintf(stderr, PROG ": --check compares the recorded decisions with one policy's: give one -p\n");
		return -1;
	}
	return 0;
}

static int run_open(struct run *ru)
{
	char err[FG_CONFIG_ERRLEN];
	size_t p;

	for (p = 0; p < ru->npolicies; p++)
		if (fg_replay_new(&ru->replay[p], ru->policies[p], ru->max_users, err, sizeof(err)) < 0) {
			fprintf(stderr, PROG ": %s\n", err);
			return -1;
		}
	if (!(ru->stats = fg_replay_stats_new()))
		return -1;
	if (ru->calls_path) {
		ru->calls = strcmp(ru->calls_path, "-") == 0 ? stdout : fopen(ru->calls_path, "w");
		if (!ru->calls) {
			perror(ru->calls_path);
			return -1;
		}
		fg_replay_row_header(ru->calls, ru->format);
	}
	return 0;
}

static void run_close(struct run *ru)
{
	size_t p;

	for (p = 0; p < ru->npolicies; p++)
		fg_replay_free(ru->replay[p]);
	if (ru->calls && ru->calls != stdout)
		fclose(ru->calls);
	fg_replay_stats_free(ru->stats);
	free(ru->e);
}

static int cmd_run(int argc, char **argv)
{
	struct run ru = { 0 };
	uint64_t total = 0, done = 0;
	struct stat st;
	int i, rv = EXIT_DONE;

	if (run_args(&ru, argc, argv) < 0)
		return EXIT_USAGE;
	if (run_open(&ru) < 0) {
		run_close(&ru);
		return EXIT_FAIL;
	}
	for (i = optind; i < argc; i++)
		total += stat(argv[i], &st) == 0 ? (uint64_t)st.st_size : 0;
	for (i = optind; i < argc; i++) {
		if (index_file(&ru, (uint32_t)(i - optind), argv[i], &done, total) != EXIT_DONE)
			rv = EXIT_FAIL;
		done += stat(argv[i], &st) == 0 ? (uint64_t)st.st_size : 0;
	}
	progress(&ru, "indexing", total, total);
	order_index(&ru);
	if (replay_all(&ru, argv + optind) != EXIT_DONE)
		rv = EXIT_FAIL;
	if (ru.calls == stdout) {
		fflush(stdout);
	} else if (ru.n > 0 || rv == EXIT_DONE) {      /* no summary of nothing when no file could be read */
		for (i = 0; i < (int)ru.npolicies; i++)
			printf("policy %s: %s\n", label(&ru, (size_t)i), fg_replay_policy(ru.replay[i]));
		printf("calls: %zu%s\n\n", ru.n, ru.nshards > 1 ? " (this shard's)" : "");
		fg_replay_stats_print(stdout, ru.stats);
	}
	for (i = 0; i < (int)ru.npolicies; i++)
		if (ru.not_in_policy[i])
			fprintf(stderr, PROG ": policy %s names no method of %llu of the %zu calls (for example %s): they "
			        "were replayed as calls it passes through untouched; is it the policy for this capture?\n",
			        label(&ru, (size_t)i), (unsigned long long)ru.not_in_policy[i], ru.n,
			        ru.not_in_policy_example[i]);
	for (i = 0; i < (int)ru.npolicies; i++)
		if (ru.band_not_in_policy[i])
			fprintf(stderr, PROG ": policy %s has no band of %llu of the %zu calls (for example '%s'): they "
			        "were replayed in its unknown_band, %s; is it the policy for this capture?\n",
			        label(&ru, (size_t)i), (unsigned long long)ru.band_not_in_policy[i], ru.n, ru.band_example[i],
			        ru.band_unknown[i]);
	for (i = 0; i < (int)ru.npolicies; i++)
		if (fg_replay_users_full(ru.replay[i]))
			fprintf(stderr, PROG ": policy %s: %llu screen-time state operations found no room for another user "
			        "(--max-users %zu): reads had their band's fail_mode and updates were lost; raise "
			        "--max-users or replay in shards (--shard)\n", label(&ru, (size_t)i),
			        (unsigned long long)fg_replay_users_full(ru.replay[i]),
			        ru.max_users ? ru.max_users : (size_t)FG_REPLAY_DEFAULT_MAX_USERS);
	for (i = 0; i < (int)ru.npolicies; i++)
		if (fg_replay_not_held(ru.replay[i]))
			fprintf(stderr, PROG ": policy %s: %llu calls' state updates landed when the calls started, not "
			        "when they ended (more than %d calls were in flight at one recorded time): a call of the "
			        "same user in flight with them saw them early; replay in shards (--shard)\n",
			        label(&ru, (size_t)i), (unsigned long long)fg_replay_not_held(ru.replay[i]),
			        FG_REPLAY_MAX_HELD);
	if (ru.incomplete)
		fprintf(stderr, PROG ": %llu calls' records left part of the call out (messages_omitted, "
		        "decisions.items_omitted: capture.max_record_size or capture.queue): they were replayed "
		        "from what the records hold, so their figures are not the calls' own\n",
		        (unsigned long long)ru.incomplete);
	for (i = 0; i < (int)ru.npolicies; i++)
		if (ru.no_upstream[i])
			fprintf(stderr, PROG ": policy %s: %llu calls had no ranker answer in the capture (the recording "
			        "policy answered them) and this policy did not: they delivered nothing\n", label(&ru, (size_t)i),
			        (unsigned long long)ru.no_upstream[i]);
	if (ru.check) {
		FILE *out = ru.calls == stdout ? stderr : stdout;
		fprintf(out, "check: %llu calls, %llu decided as recorded, %llu otherwise\n",
		        (unsigned long long)ru.checked, (unsigned long long)(ru.checked - ru.mismatched),
		        (unsigned long long)ru.mismatched);
		if (ru.other_policy) {
			fg_replay_printable(ru.other_policy_example);
			fprintf(out, "check: %llu more calls were decided by another policy (for example policy_id %s; "
			        "this one's is %s), %llu of them otherwise than here: not counted above\n",
			        (unsigned long long)ru.other_policy, ru.other_policy_example,
			        fg_replay_policy_id(ru.replay[0]), (unsigned long long)ru.other_mismatched);
		}
		/* nothing of this policy's to compare is not a passed check */
		if (ru.mismatched || (ru.checked == 0 && ru.other_policy))
			rv = EXIT_FAIL;
	}
	if (ru.failed) {
		fprintf(stderr, PROG ": %llu calls could not be replayed: %llu name no method (feedguardd records "
		        "one for every call: a capture it did not write, or damaged), %llu failed in the stages "
		        "(out of memory, or a recorded call the pipeline could not begin)\n", (unsigned long long)ru.failed,
		        (unsigned long long)ru.failed_no_method, (unsigned long long)(ru.failed - ru.failed_no_method));
		rv = EXIT_FAIL;
	}
	run_close(&ru);
	return rv;
}

/* --- summary ------------------------------------------------------------------- */

static int cmd_summary(int argc, char **argv)
{
	struct fg_replay_stats *s;
	char err[512];
	int i, rv = EXIT_DONE;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_DONE;
	}
	if (!(s = fg_replay_stats_new()))
		return EXIT_FAIL;
	for (i = 1; i < argc && rv == EXIT_DONE; i++) {
		FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
		if (!f) {
			fprintf(stderr, PROG ": %s: %s\n", argv[i], strerror(errno));
			rv = EXIT_FAIL;
			break;
		}
		if (fg_replay_stats_read_csv(s, f, argv[i], err, sizeof(err)) < 0) {
			fprintf(stderr, PROG ": %s\n", err);
			rv = EXIT_FAIL;
		}
		if (f != stdin)
			fclose(f);
	}
	if (rv == EXIT_DONE && fg_replay_stats_check_unique(s, err, sizeof(err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		rv = EXIT_FAIL;
	}
	if (rv == EXIT_DONE)
		fg_replay_stats_print(stdout, s);
	fg_replay_stats_free(s);
	return rv;
}

/* --- live ------------------------------------------------------------------------ */

struct live_src {
	struct run *ru;                 /* its index, sorted */
	char **files;
	size_t at;
	int fd;
	uint32_t open_file;
	struct fg_bufq buf;
};

static int live_next(void *arg, Feedguard__Capture__V1__Record **rec)
{
	struct live_src *ls = arg;
	const struct entry *e;

	if (ls->at >= ls->ru->n)
		return 0;
	e = &ls->ru->e[ls->at++];
	if (e->file != ls->open_file) {
		if (ls->fd >= 0)
			close(ls->fd);
		if ((ls->fd = open(ls->files[e->file], O_RDONLY | O_CLOEXEC)) < 0) {
			perror(ls->files[e->file]);
			return -1;
		}
		ls->open_file = e->file;
	}
	if (fg_capread_record_at(ls->fd, e->offset, &ls->buf, rec) < 0) {
		fprintf(stderr, PROG ": %s: the record at offset %llu changed since it was indexed\n",
		        ls->files[e->file], (unsigned long long)e->offset);
		return -1;
	}
	return 1;
}

static int cmd_live(int argc, char **argv)
{
	enum { O_TARGET = 256, O_SPEED, O_RATE, O_CONC, O_TIMEOUT, O_SHARD, O_USER_HEADER, O_RECORDED_TIME };
	struct fg_policy *pol = NULL;
	const char *policy = NULL;
	char err[1024];
	static const struct option opts[] = {
		{ "target", required_argument, NULL, O_TARGET }, { "speed", required_argument, NULL, O_SPEED },
		{ "rate", required_argument, NULL, O_RATE },     { "concurrency", required_argument, NULL, O_CONC },
		{ "timeout", required_argument, NULL, O_TIMEOUT }, { "shard", required_argument, NULL, O_SHARD },
		{ "user-header", required_argument, NULL, O_USER_HEADER },
		{ "recorded-time", no_argument, NULL, O_RECORDED_TIME },
		{ "policy", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },              { NULL, 0, NULL, 0 },
	};
	struct fg_replay_live_opts o = { .speed = 1 };
	struct run ru = { .nshards = 1 };
	struct live_src ls = { .ru = &ru, .fd = -1, .open_file = UINT32_MAX };
	uint64_t done = 0;
	int c, i, rv = EXIT_DONE, rc;

	while ((c = getopt_long(argc, argv, "hp:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': policy = optarg; break;
		case O_TARGET: o.target = optarg; break;
		case O_SPEED: o.speed = strtod(optarg, NULL); break;
		case O_RATE: o.rate = strtod(optarg, NULL); break;
		case O_CONC: {
			unsigned long v;
			if (parse_count(optarg, 100000ul, &v) < 0) {
				fprintf(stderr, PROG ": --concurrency wants a whole number from 1 to 100000, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.concurrency = (unsigned)v;
			break;
		}
		case O_TIMEOUT: o.timeout_ms = strtoll(optarg, NULL, 10); break;
		case O_USER_HEADER:
			if (!fg_replay_live_header_ok(optarg)) {
				fprintf(stderr, PROG ": --user-header: '%s' is not a metadata name a call may carry "
				        "(lowercase letters, digits, '-', '_', '.'; not a gRPC or HTTP/2 one)\n", optarg);
				return EXIT_USAGE;
			}
			o.user_header = optarg;
			break;
		case O_RECORDED_TIME: o.recorded_time = 1; break;
		case O_SHARD:
			if (parse_shard(optarg, &ru.shard, &ru.nshards) < 0) {
				fprintf(stderr, PROG ": --shard is I/N with 0 <= I < N\n");
				return EXIT_USAGE;
			}
			break;
		case 'h': usage(stdout); return EXIT_DONE;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (!o.target || optind >= argc || o.speed < 0 || o.rate < 0 || o.timeout_ms < 0) {
		fprintf(stderr, PROG ": live needs --target and capture files (speed, rate and timeout >= 0)\n");
		return EXIT_USAGE;
	}
	if (policy && fg_policy_compile_load(policy, 1, &pol, err, sizeof(err)) < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return EXIT_FAIL;
	}
	o.policy = pol;
	for (i = optind; i < argc; i++)
		if (index_file(&ru, (uint32_t)(i - optind), argv[i], &done, 0) != EXIT_DONE)
			rv = EXIT_FAIL;
	order_index(&ru);
	ls.files = argv + optind;
	fg_bufq_init(&ls.buf);
	rc = fg_replay_live_run(&o, live_next, &ls, stdout);
	if (rc == FG_EINVAL)
		fprintf(stderr, PROG ": --target %s: not a numeric HOST:PORT\n", o.target);
	else if (rc < 0)
		fprintf(stderr, PROG ": %s: the connection failed or could not be made\n", o.target);
	if (rc < 0)
		rv = EXIT_FAIL;
	if (ls.fd >= 0)
		close(ls.fd);
	fg_bufq_free(&ls.buf);
	free(ru.e);
	fg_policy_compile_free(pol);
	return rv;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf(PROG " %s\n", PACKAGE_VERSION);
		return EXIT_DONE;
	}
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return EXIT_DONE;
	}
	if (argc >= 2 && strcmp(argv[1], "dump") == 0)
		return cmd_dump(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "summary") == 0)
		return cmd_summary(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "live") == 0)
		return cmd_live(argc - 1, argv + 1);
	usage(stderr);
	return EXIT_USAGE;
}
