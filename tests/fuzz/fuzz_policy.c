/*
 * fuzz_policy.c - libFuzzer target for the policy compiler
 * (fg_policy_compile_load_string), against the reference contract's descriptor set.
 *
 * Input: a policy file.  Its descriptor_set resolves against the
 * directory of the build's proto/ranking.pb (the seeds name it
 * "ranking.pb"), found through the environment variable FG_RANKING_PB
 * (tests/fuzz/run.sh exports it) or else the path baked in at build time
 * with -DFG_FUZZ_RANKING_PB=\"<build dir>/proto/ranking.pb\".  Without
 * either, the target stops at start-up with a message.
 *
 * Besides "no crash, no leak, no UB" (the sanitizers), it checks what
 * fg_policy_compile.h and fg_policy_eval.h promise that a fuzzer can see:
 *   - failure is FG_ECONFIG (allocation cannot fail here: ASan aborts
 *     instead, so FG_ENOMEM would be a mislabelled error), leaves no
 *     policy, and writes "fuzz.yaml:line:column: message" on one line of
 *     printable bytes: the message quotes the file, and a hostile file
 *     must not forge log lines;
 *   - a compiled policy agrees with itself: bands and their values,
 *     unknown_band, methods sorted and found by fg_policy_find_method,
 *     sources, and programs fg_pbwire accepts (rules sorted and unique,
 *     valid actions, kinds, precisions and counters);
 *   - every program accepts a valid message of its type (a request for
 *     request programs; a RankFeedResponse or a FeedItem, the two methods'
 *     outputs, for response programs), and editing its output again
 *     changes nothing (a retry through feedguard strips nothing twice);
 *   - every field source reads the sample request without an error;
 *   - a band's request program has a REPLACE rule exactly when it says
 *     it needs the user key (pseudonymize), responses never do, and the
 *     policy names where it needs pseudonym_keys exactly when one does;
 *     with a key or without, the edit is idempotent.
 *
 * Build and run: FG_BUILD_DIR=<build dir> tests/fuzz/run.sh 120 policy.  By
 * hand (descriptor.pb-c.c is generated in the build directory):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -Idaemon -I<dir of config.h> \
 *     -I<build>/daemon -DFG_FUZZ_RANKING_PB=\"<build>/proto/ranking.pb\" tests/fuzz/fuzz_policy.c \
 *     daemon/fg_policy_*.c daemon/fg_pbwire.c daemon/fg_bufq.c daemon/fg_schema.c daemon/fg_yaml.c \
 *     <build>/daemon/descriptor.pb-c.c -lyaml -lprotobuf-c -lm
 *   ./fuzz_policy -max_total_time=120 new_corpus_dir tests/fuzz/corpus/policy
 */
#include "config.h"             /* _GNU_SOURCE, for realpath and PATH_MAX */

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fuzz_common.h"
#include "fg_pbwire.h"
#include "fg_policy_compile.h"
#include "fg_policy_eval.h"

#define NAME "fuzz.yaml"
#define NSLOTS 2
#define RANK_FEED "/feedguard.ranking.v1.Ranker/RankFeed"
#define STREAM_FEED "/feedguard.ranking.v1.Ranker/StreamFeed"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[PATH_MAX];         /* the directory of ranking.pb: every policy's basedir */

/* ---- sample messages of the reference contract, encoded at start-up ---- */

struct msg {
	uint8_t b[1024];
	size_t n;
};

static void put_varint(struct msg *m, uint64_t v)
{
	do {
		m->b[m->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void put_int(struct msg *m, uint32_t number, uint64_t v)
{
	put_varint(m, (uint64_t)number << 3 | FG_PBWIRE_VARINT);
	put_varint(m, v);
}

static void put_bytes(struct msg *m, uint32_t number, const void *p, size_t len)
{
	put_varint(m, (uint64_t)number << 3 | FG_PBWIRE_LEN);
	put_varint(m, len);
	memcpy(m->b + m->n, p, len);
	m->n += len;
}

static void put_str(struct msg *m, uint32_t number, const char *s)
{
	put_bytes(m, number, s, strlen(s));
}

static void put_msg(struct msg *m, uint32_t number, const struct msg *sub)
{
	put_bytes(m, number, sub->b, sub->n);
}

static void put_double(struct msg *m, uint32_t number, double d)
{
	put_varint(m, (uint64_t)number << 3 | FG_PBWIRE_I64);
	memcpy(m->b + m->n, &d, 8);         /* little-endian hosts only, as the fuzzers run on */
	m->n += 8;
}

static void put_float(struct msg *m, uint32_t number, float f)
{
	put_varint(m, (uint64_t)number << 3 | FG_PBWIRE_I32);
	memcpy(m->b + m->n, &f, 4);
	m->n += 4;
}

static struct msg request, response, item;

/* Every field of RankFeedRequest, RankFeedResponse and FeedItem at least
 * once (repeated ones twice, both members of the oneof), with values a
 * real client could send. */
static void make_samples(void)
{
	struct msg user = { .n = 0 }, geo = { .n = 0 }, ctx = { .n = 0 }, ts = { .n = 0 }, watch = { .n = 0 };
	struct msg eng = { .n = 0 }, sig = { .n = 0 }, entry = { .n = 0 }, packed = { .n = 0 }, expl = { .n = 0 };

	put_str(&user, 1, "kid-1");
	put_str(&user, 2, "u13");
	put_int(&user, 3, 40);
	put_double(&geo, 1, 48.8566);
	put_double(&geo, 2, -2.3522);
	put_float(&geo, 3, 12.5f);
	put_str(&geo, 4, "Paris");
	put_int(&ctx, 1, 1);
	put_str(&ctx, 2, "en-GB");
	put_str(&ctx, 3, "Europe/Paris");
	put_msg(&ctx, 4, &geo);
	put_int(&ts, 1, 1700000000);
	put_int(&ts, 2, 123456789);
	put_int(&watch, 1, 7);
	put_int(&watch, 2, 3000);
	put_msg(&watch, 3, &ts);
	put_int(&eng, 1, 8);
	put_int(&eng, 2, 1);
	put_msg(&eng, 3, &ts);
	put_msg(&sig, 1, &watch);
	put_msg(&sig, 1, &watch);
	put_msg(&sig, 2, &eng);
	put_str(&sig, 3, "fitness");
	put_str(&sig, 4, "diet");
	put_str(&sig, 5, "AAID");
	put_str(&sig, 6, "fp");
	put_str(&sig, 7, "friend");
	put_str(&entry, 1, "affinity.gaming");
	put_double(&entry, 2, 0.75);
	put_msg(&sig, 8, &entry);
	entry.n = 0;
	put_double(&entry, 2, 3);           /* key absent: "" */
	put_msg(&sig, 8, &entry);
	put_msg(&request, 1, &user);
	put_msg(&request, 2, &ctx);
	put_msg(&request, 3, &sig);
	put_int(&request, 4, 20);
	put_str(&request, 5, "p2");
	put_int(&request, 6, (uint64_t)-5);
	put_varint(&packed, 1);
	put_varint(&packed, 300);
	put_msg(&request, 7, &packed);

	put_str(&expl, 1, "because you watched");
	put_int(&expl, 2, 9);
	entry.n = 0;
	put_str(&entry, 1, "w");
	put_float(&entry, 2, 0.5f);
	put_int(&item, 1, 1);
	put_str(&item, 2, "Title");
	put_double(&item, 3, 0.9);
	put_str(&item, 4, "sport");
	put_msg(&item, 5, &expl);
	put_msg(&item, 5, &expl);
	put_str(&item, 6, "gamer");
	put_msg(&item, 7, &entry);
	put_double(&item, 8, 0.25);
	put_str(&item, 9, "sport");
	put_msg(&response, 1, &item);
	put_msg(&response, 1, &item);
	put_str(&response, 2, "teen_fitness");
	put_str(&response, 3, "m1");
	put_str(&response, 4, "next");
}

/* ---- start-up ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *pb = getenv("FG_RANKING_PB");
	char *slash;

#ifdef FG_FUZZ_RANKING_PB
	if (!pb || !*pb)
		pb = FG_FUZZ_RANKING_PB;
#endif
	if (!pb || !*pb || !realpath(pb, dir)) {
		fprintf(stderr, "fuzz_policy: set FG_RANKING_PB to the build's proto/ranking.pb (%s)\n",
		        pb ? pb : "unset");
		exit(2);
	}
	slash = strrchr(dir, '/');
	*(slash == dir ? slash + 1 : slash) = '\0';
	make_samples();
	return 0;
}

/* ---- checks ---- */

static void check_stat(const struct fg_policy *p, uint32_t stat)
{
	if (stat != UINT32_MAX && stat >= p->nstats)
		abort();
}

/* Rules sorted and unique, every field of them something fg_pbwire runs;
 * the REPLACE rules counted into <*replaces>. */
static void check_prog(const struct fg_policy *p, const struct fg_pbwire_msg *m, unsigned depth, size_t *replaces)
{
	size_t i;

	if (depth > FG_PBWIRE_MAX_DEPTH || m->allow_only > 1 || (m->nrules && !m->rules))
		abort();
	check_stat(p, m->unlisted_stat);
	for (i = 0; i < m->nrules; i++) {
		const struct fg_pbwire_rule *r = &m->rules[i];

		if (r->number == 0 || r->number > FG_PBWIRE_NUMBER_MAX || (i && r->number <= m->rules[i - 1].number))
			abort();
		check_stat(p, r->stat);
		switch (r->action) {
		case FG_PBWIRE_KEEP:
		case FG_PBWIRE_DROP:
			break;
		case FG_PBWIRE_RECURSE:
			if (!r->sub)
				abort();
			check_prog(p, r->sub, depth + 1, replaces);
			break;
		case FG_PBWIRE_REPLACE:
			if (r->arg >= FG_POLICY_NVALUES)
				abort();
			++*replaces;
			break;
		case FG_PBWIRE_COARSEN:
			if (r->scalar == FG_PBWIRE_S_NONE || r->scalar > FG_PBWIRE_S_FIXED64 || !(r->precision > 0) ||
			    !(r->precision <= 1e18))
				abort();
			break;
		case FG_PBWIRE_DROP_KEYS:
			if (!r->keys || r->keys->n == 0 || (!r->keys->str && !r->keys->num))
				abort();
			break;
		default:
			abort();
		}
	}
}

static void check_lowercase(const char *s)
{
	if (!s || !*s || *s == ':')
		abort();
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			abort();
}

/* <prog> over <msg> with user key <key> (NULL: none): accepted, and idempotent. */
static void check_edit(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band,
                       const struct msg *msg, const char *key)
{
	struct fg_bufq once = { 0 }, twice = { 0 };
	size_t n;
	int changed = -1;

	if (fg_policy_edit_call(p, e, band, band % NSLOTS, key, msg->b, msg->n, &once, &changed, NULL) != 0)
		abort();
	n = fg_bufq_len(&once);
	if (changed != (n != msg->n || memcmp(fg_bufq_head(&once), msg->b, msg->n) != 0))
		abort();
	if (fg_policy_edit_call(p, e, band, NSLOTS, key, fg_bufq_head(&once), n, &twice, &changed, NULL) != 0 ||
	    changed ||
	    fg_bufq_len(&twice) != n || (n && memcmp(fg_bufq_head(&twice), fg_bufq_head(&once), n) != 0))
		abort();
	fg_bufq_free(&once);
	fg_bufq_free(&twice);
}

static void check_source(const struct fg_policy_source *s)
{
	char buf[FG_POLICY_VALUE_MAX];

	switch (s->kind) {
	case FG_POLICY_SRC_NONE:
		break;
	case FG_POLICY_SRC_HEADER:
		check_lowercase(s->header);
		break;
	case FG_POLICY_SRC_FIELD:
		if (s->depth == 0 || s->depth > FG_POLICY_MAX_PATH)
			abort();
		if (fg_policy_read_field(s, request.b, request.n, buf, sizeof(buf)) < 0)
			abort();
		break;
	default:
		abort();
	}
}

static void check_method(const struct fg_policy *p, const struct fg_policy_method *m, size_t i,
                         size_t *need_user)
{
	size_t replaces;
	const struct msg *out = strcmp(m->path, RANK_FEED) == 0 ? &response :
	                        strcmp(m->path, STREAM_FEED) == 0 ? &item : NULL;
	size_t b, h;

	if (m->index != i || fg_policy_find_method(p, m->path, strlen(m->path)) != m)
		abort();
	if (i && strcmp(p->methods[i - 1].path, m->path) >= 0)
		abort();
	if (m->client_streaming != 0 || m->server_streaming != (out == &item))
		abort();
	if (m->age_band.kind == FG_POLICY_SRC_NONE)
		abort();
	check_source(&m->user_id);
	check_source(&m->age_band);
	fg_policy_count_call(p, m, p->nbands - 1, NSLOTS - 1);
	for (b = 0; b < p->nbands; b++) {
		if (m->response[b].nremove_headers)
			abort();
		for (h = 0; h < m->request[b].nremove_headers; h++)
			check_lowercase(m->request[b].remove_headers[h]);
		replaces = 0;
		if (m->request[b].prog)
			check_prog(p, m->request[b].prog, 0, &replaces);
		if ((replaces > 0) != (m->request[b].need_user != 0))
			abort();
		*need_user += replaces;
		replaces = 0;
		if (m->response[b].prog)
			check_prog(p, m->response[b].prog, 0, &replaces);
		if (replaces || m->response[b].need_user)
			abort();
		check_edit(p, &m->request[b], b, &request, NULL);
		check_edit(p, &m->request[b], b, &request, "k1:0123abcd");
		if (out)
			check_edit(p, &m->response[b], b, out, NULL);
	}
}

static void check_policy(const struct fg_policy *p)
{
	size_t b, i, need_user = 0;

	if (p->nbands < 1 || p->nbands > FG_POLICY_MAX_BANDS || p->unknown_band >= p->nbands || p->file)
		abort();
	if (!p->counters.calls || !p->counters.stripped || p->counters.nslots != NSLOTS)
		abort();
	for (b = 0; b < p->nbands; b++) {
		if (!p->bands[b].name || !*p->bands[b].name)
			abort();
		/* A value selects one band: its own. */
		for (i = 0; i < p->bands[b].nmatch; i++)
			if (fg_policy_band(p, p->bands[b].match[i], strlen(p->bands[b].match[i]), NULL) != b &&
			    strlen(p->bands[b].match[i]) != 0)
				abort();
	}
	if (fg_policy_band(p, NULL, 0, NULL) != p->unknown_band)
		abort();
	for (i = 0; i < p->nstats; i++)
		if (!p->stat_names[i] || (strncmp(p->stat_names[i], "request:", 8) != 0 &&
		                          strncmp(p->stat_names[i], "response:", 9) != 0))
			abort();
	for (i = 0; i < p->nmethods; i++)
		check_method(p, &p->methods[i], i, &need_user);
	if ((need_user > 0) != (p->need_keys_at != NULL))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_policy *p = (struct fg_policy *)(uintptr_t)1;
	char err[1024];
	int rc;

	memset(err, 'x', sizeof(err));
	rc = fg_policy_compile_load_string(NAME, dir, (const char *)data, size, NSLOTS, &p, err, sizeof(err));
	if (rc == 0) {
		if (!p)
			abort();
		check_policy(p);
		fg_policy_compile_free(p);
		return 0;
	}
	if (p || rc != FG_ECONFIG || memchr(err, '\0', sizeof(err)) == NULL)
		abort();
	fuzz_check_position_message(err, NAME);
	return 0;
}
