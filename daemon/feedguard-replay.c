/*
 * feedguard-replay.c - feedguard-replay: reads traffic captures
 * (proto/feedguard/capture/v1/capture.proto) for researchers.
 *
 *   dump   every call record as one line of JSON (JSON Lines), messages
 *          decoded against the platform's descriptor set, so pandas, R,
 *          DuckDB or jq read a capture without feedguard.
 *
 * Exit status: 0 done; 1 a file could not be read or is corrupt (the
 * others are still read); 2 usage.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fg_bufq.h"
#include "fg_capread.h"
#include "fg_config.h"
#include "fg_error.h"
#include "fg_pbjson.h"
#include "fg_policy-t.h"
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
	        "  -d, --descriptor-set FILE  decode messages with this descriptor set\n"
	        "  -c, --config FILE          ... with the one of this feedguardd config's policy\n"
	        "      --file-info            print each file's FileInfo record too\n"
	        "  -f, --follow               keep reading a file the daemon is writing (one file)\n"
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

	for (i = 0; i < d->n_items && rc == 0; i++) {
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
	rc |= key(b, "session_minutes", 0) | num(b, s->session_minutes) | key(b, "exposure", 0) | fg_bufq_append(b, "{", 1);
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
	if (d)
		rc |= items(b, d);
	if (d && d->screen_time)
		rc |= screen_time(b, d->screen_time);
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

/* One file to stdout; EXIT_DONE or EXIT_FAIL. */
static int dump_file(struct dump *d, const char *path)
{
	Feedguard__Capture__V1__Record *rec;
	struct fg_capread *r;
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
	fprintf(stderr, PROG ": %s: %s%s\n", path, err, rc == FG_CAPREAD_TORN ? ", skipped" : "");
	return rc == FG_CAPREAD_TORN ? EXIT_DONE : EXIT_FAIL;
}

static int load_schema(struct dump *d, const char *ds, const char *config)
{
	char err[FG_CONFIG_ERRLEN];
	struct fg_config *cfg = NULL;
	int rc;

	if (config) {
		if (fg_config_load(config, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
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
	usage(stderr);
	return EXIT_USAGE;
}
