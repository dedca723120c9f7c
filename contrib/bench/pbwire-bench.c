/*
 * pbwire-bench.c - the CPU of the policy's wire edit alone, without the
 * proxy around it: what fg_pbwire_edit() costs per message for one
 * method and band of a policy, on messages from files.
 *
 *   pbwire-bench POLICY METHOD BAND REQUEST RESPONSE [EDITS]
 *
 * REQUEST is one gRPC-framed request message (5-byte prefix, as h2load -d
 * sends it), RESPONSE one bare response message (as bench-upstream -r
 * sends it); run-bench.sh --scenario rankfeed writes both.  Each message
 * is edited EDITS times (default 20000) into a reused buffer, in 5 rounds;
 * one line per direction gives the sizes before and after and the median
 * of the rounds in microseconds per edit:
 *   request 10240 113 0.12
 *   response 36493 9509 7.10
 * When the band filters the method's feed, a third line times the filter
 * alone (fg_items scan, plan and write) on the response as the strip rules
 * left it:
 *   filter 9509 8400 2.10
 * Built by "make -C contrib/bench pbwire-bench FG_BUILD=<build dir>"
 * against that build's libfeedguard.a; run-bench.sh does it when it knows
 * the build directory.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fg_items.h"
#include "fg_pbwire.h"
#include "fg_policy-t.h"
#include "fg_policy_compile.h"
#include "fg_policy_eval.h"

#define ROUNDS 5
#define GRPC_PREFIX 5

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "pbwire-bench: cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median over ROUNDS of the microseconds one edit of <in> takes. */
static void run(const char *what, const struct fg_pbwire_msg *prog, const uint8_t *in, size_t len, long edits)
{
	struct fg_bufq out = { 0 };
	double per[ROUNDS], t0;
	const char *why = NULL;
	int changed, r;
	long i;

	if (!prog) {
		printf("%s %zu %zu -\n", what, len, len);
		return;
	}
	for (r = 0; r < ROUNDS; r++) {
		t0 = now_us();
		for (i = 0; i < edits; i++) {
			fg_bufq_truncate(&out, 0);
			if (fg_pbwire_edit(in, len, prog, &out, NULL, 0, &changed, &why) < 0) {
				fprintf(stderr, "pbwire-bench: %s: %s\n", what, why);
				exit(1);
			}
		}
		per[r] = (now_us() - t0) / (double)edits;
	}
	qsort(per, ROUNDS, sizeof(per[0]), cmp_double);
	printf("%s %zu %zu %.2f\n", what, len, fg_bufq_len(&out), per[ROUNDS / 2]);
	fg_bufq_free(&out);
}

/* The filter alone on the response as the band's strip rules leave it. */
static void run_filter(const struct fg_policy_method *m, size_t band, const uint8_t *resp, size_t resp_len,
                       long edits)
{
	const struct fg_policy_filter *f = &m->filter[band];
	struct fg_bufq stripped = { 0 }, out = { 0 };
	struct fg_items_page page = { 0 };
	double per[ROUNDS], t0;
	const char *why = NULL;
	const uint8_t *in = resp;
	size_t len = resp_len;
	int changed, r;
	long i;

	if (m->response[band].prog) {
		if (fg_pbwire_edit(resp, resp_len, m->response[band].prog, &stripped, NULL, 0, &changed, &why) < 0) {
			fprintf(stderr, "pbwire-bench: response: %s\n", why);
			exit(1);
		}
		in = fg_bufq_head(&stripped);
		len = fg_bufq_len(&stripped);
	}
	for (r = 0; r < ROUNDS; r++) {
		t0 = now_us();
		for (i = 0; i < edits; i++) {
			fg_bufq_truncate(&out, 0);
			if (fg_items_scan(in, len, &m->feed->spec, &f->rules, &page, &why) < 0) {
				fprintf(stderr, "pbwire-bench: filter: %s\n", why);
				exit(1);
			}
			fg_items_plan(&page, &f->rules, NULL, 0, m->feed->spec.items_depth == 0);
			if (!fg_items_identity(&page) && fg_items_write(in, len, &m->feed->spec, &page, &out, &why) < 0) {
				fprintf(stderr, "pbwire-bench: filter: %s\n", why);
				exit(1);
			}
		}
		per[r] = (now_us() - t0) / (double)edits;
	}
	qsort(per, ROUNDS, sizeof(per[0]), cmp_double);
	printf("filter %zu %zu %.2f\n", len, fg_bufq_len(&out), per[ROUNDS / 2]);
	fg_items_page_free(&page);
	fg_bufq_free(&stripped);
	fg_bufq_free(&out);
}

int main(int argc, char **argv)
{
	const struct fg_policy_method *m;
	struct fg_policy *pol;
	uint8_t *req, *resp;
	size_t req_len, resp_len, band;
	char err[512];
	long edits;

	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: pbwire-bench POLICY METHOD BAND REQUEST RESPONSE [EDITS]\n");
		return 2;
	}
	edits = argc == 7 ? atol(argv[6]) : 20000;
	if (edits <= 0) {
		fprintf(stderr, "pbwire-bench: EDITS must be a positive number\n");
		return 2;
	}
	if (fg_policy_compile_load(argv[1], 1, &pol, err, sizeof(err)) < 0) {
		fprintf(stderr, "pbwire-bench: %s\n", err);
		return 2;
	}
	if (!(m = fg_policy_find_method(pol, argv[2], strlen(argv[2])))) {
		fprintf(stderr, "pbwire-bench: the policy does not intercept %s\n", argv[2]);
		return 2;
	}
	band = fg_policy_band(pol, argv[3], strlen(argv[3]));
	req = slurp(argv[4], &req_len);
	resp = slurp(argv[5], &resp_len);
	if (req_len < GRPC_PREFIX) {
		fprintf(stderr, "pbwire-bench: %s is shorter than a gRPC prefix\n", argv[4]);
		return 2;
	}
	run("request", m->request[band].prog, req + GRPC_PREFIX, req_len - GRPC_PREFIX, edits);
	run("response", m->response[band].prog, resp, resp_len, edits);
	if (m->feed && m->filter[band].active)
		run_filter(m, band, resp, resp_len, edits);
	free(req);
	free(resp);
	fg_policy_compile_free(pol);
	return 0;
}
