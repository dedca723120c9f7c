/*
 * fuzz_pbwire.c - libFuzzer target for the wire-level protobuf editor.
 *
 * Input: the first byte picks one of the fixed programs below, the rest is
 * the message; for the last program (REPLACE rules), the byte after it is
 * the length L (mod 40) of the per-call value, whose L bytes come next,
 * before the message.  Besides "no crash, no leak, no UB" (the sanitizers), it
 * checks the promises of fg_pbwire.h that a fuzzer can see:
 *   - failure is FG_EINVAL with a reason, and <out> keeps its prefix and
 *     length; success keeps the prefix too;
 *   - <changed> is 1 exactly when the output differs from the input;
 *   - editing the output again with the same program succeeds, gives the
 *     same bytes and changed = 0 (idempotence: a proxy chain, or a retry
 *     through feedguard, strips nothing twice);
 *   - the empty program copies any message it accepts byte for byte, and
 *     accepts every message that some program accepts;
 *   - fg_pbwire_find, fg_pbwire_next_field and the varint primitives
 *     agree with the editor on what is valid;
 *   - every program gives the same result with its nodes indexed
 *     (fg_pbwire_msg_index) as without.
 *
 * The programs cover every action and scalar kind (REPLACE with a value
 * from the input, with a value that is absent and with an index past the
 * values given), allow-lists at the root
 * and three levels down, maps, and a program that recurses into itself
 * (depth limit).  Field numbers follow the seed corpus, whose Req messages
 * are python3-protobuf encodings of:
 *   message Geo { double lat = 1; double lon = 2; float acc = 3; }
 *   message Signal { string name = 1; int32 score = 2; sint64 delta = 3; }
 *   message Req { string user_id = 1; int32 age = 2; Geo geo = 3;
 *     repeated Signal signals = 4; map<string, int64> counters = 5;
 *     repeated int32 hist = 6; map<int32, string> tags = 7; sint32 offset = 8;
 *     repeated sint32 deltas = 9 [packed = false]; repeated double dists = 10; }
 *
 * Build (see tests/fuzz/run.sh, which also runs it):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -I<dir of config.h> \
 *     -Idaemon tests/fuzz/fuzz_pbwire.c daemon/fg_pbwire.c daemon/fg_bufq.c -lm
 * Run:   ./fuzz_pbwire -max_total_time=120 new_corpus_dir tests/fuzz/corpus/pbwire
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_pbwire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSTATS 6
#define PREFIX "\x00\x00\x00\x00\x2a"   /* stands for a gRPC message prefix */
#define PREFIX_LEN 5

#define RULES(...) ((const struct fg_pbwire_rule[]){ __VA_ARGS__ })
#define NRULES(...) (sizeof((const struct fg_pbwire_rule[]){ __VA_ARGS__ }) / \
                     sizeof(struct fg_pbwire_rule))
#define PROG(allow, ustat, ...) { .allow_only = (allow), .unlisted_stat = (ustat), \
                                  .nrules = NRULES(__VA_ARGS__), .rules = RULES(__VA_ARGS__) }
#define KEEP(num, kind) { .number = (num), .action = FG_PBWIRE_KEEP, \
                          .scalar = FG_PBWIRE_S_##kind, .stat = UINT32_MAX }
#define DROP(num, st) { .number = (num), .action = FG_PBWIRE_DROP, .stat = (st) }
#define RECURSE(num, sub_, st) { .number = (num), .action = FG_PBWIRE_RECURSE, .sub = (sub_), \
                                 .stat = (st) }
#define COARSEN(num, kind, p, st) { .number = (num), .action = FG_PBWIRE_COARSEN, \
                                    .scalar = FG_PBWIRE_S_##kind, .precision = (p), .stat = (st) }
#define REPLACE(num, a, st) { .number = (num), .action = FG_PBWIRE_REPLACE, .arg = (a), .stat = (st) }
#define DROP_KEYS(num, kind, k, st) { .number = (num), .action = FG_PBWIRE_DROP_KEYS, \
                                      .scalar = FG_PBWIRE_S_##kind, .keys = (k), .stat = (st) }

static const char *const str_keys[] = { "views", "", "dwell_ms" };
static const size_t str_lens[] = { 5, 0, 8 };
static const struct fg_pbwire_keys skeys = { .n = 3, .str = str_keys, .str_len = str_lens };
static const int64_t num_keys[] = { -1, 0, 42, INT64_MIN };
static const struct fg_pbwire_keys nkeys = { .n = 4, .num = num_keys };

/* 1: strip signals from a Req, every scalar kind somewhere */
static const struct fg_pbwire_msg geo = PROG(0, UINT32_MAX, COARSEN(1, DOUBLE, 0.01, 0),
                                             COARSEN(2, DOUBLE, 0.01, 0),
                                             COARSEN(3, FLOAT, 5, 1));
static const struct fg_pbwire_msg signal = PROG(0, UINT32_MAX, DROP(2, 2),
                                                COARSEN(3, SINT64, 10, 3));
static const struct fg_pbwire_msg strip = PROG(0, UINT32_MAX,
	COARSEN(2, INT32, 10, 0), RECURSE(3, &geo, 4), RECURSE(4, &signal, 5),
	DROP_KEYS(5, NONE, &skeys, 1), COARSEN(6, INT32, 10, 2), DROP_KEYS(7, INT32, &nkeys, 3),
	COARSEN(8, SINT32, 10, 4), COARSEN(9, UINT64, 7, 5), COARSEN(10, DOUBLE, 1, 6),
	COARSEN(11, FIXED32, 3, 0), COARSEN(12, SFIXED64, 100, 1), COARSEN(13, INT64, 1000, 2),
	COARSEN(14, UINT32, 10, 3), COARSEN(15, FIXED64, 10, 4), COARSEN(16, SFIXED32, 10, 5),
	COARSEN(17, FLOAT, 0.25, 0), DROP_KEYS(18, SINT64, &nkeys, 1),
	DROP_KEYS(19, FIXED32, &nkeys, 2), DROP_KEYS(20, SFIXED64, &nkeys, 3));

/* 2: allow-lists at the root and three levels down, with a copy-all level
 * between them */
static const struct fg_pbwire_msg allow_c = PROG(1, 2, KEEP(1, NONE), COARSEN(3, DOUBLE, 1, 3));
static const struct fg_pbwire_msg allow_b = PROG(0, UINT32_MAX, RECURSE(2, &allow_c, 4),
                                                 DROP(4, 5));
static const struct fg_pbwire_msg allow_a = PROG(1, 1, KEEP(1, INT32), RECURSE(2, &allow_b, 0),
                                                 KEEP(3, FIXED64));
static const struct fg_pbwire_msg allow = PROG(1, 0, KEEP(1, NONE), RECURSE(2, &allow_a, 0),
                                               RECURSE(4, &signal, 5),
                                               DROP_KEYS(5, NONE, &skeys, 1), KEEP(6, INT32));

/* 3: a recursive message type; also the map entry below points back up */
static const struct fg_pbwire_msg self;
static const struct fg_pbwire_msg self_entry = PROG(0, UINT32_MAX, RECURSE(2, &self, 1));
static const struct fg_pbwire_msg self = PROG(0, UINT32_MAX, RECURSE(1, &self, UINT32_MAX),
                                              DROP(2, 0), COARSEN(3, INT32, 10, 2),
                                              RECURSE(4, &self_entry, 3), KEEP(5, SINT32));

/* 4: maps: a program on every entry, dropped keys */
static const struct fg_pbwire_msg entry = PROG(0, UINT32_MAX, RECURSE(2, &signal, 1));
static const struct fg_pbwire_msg maps = PROG(0, UINT32_MAX, RECURSE(4, &signal, 0),
                                              RECURSE(5, &entry, 2),
                                              DROP_KEYS(7, SINT32, &nkeys, 3));

static const struct fg_pbwire_msg empty = { .unlisted_stat = UINT32_MAX };

/* Pseudonymizing: user_id replaced by value 0 at the root, in an allow-list;
 * each signal's name by value 1 (absent) and the map's keys' entries by
 * value 7 (past the values given): both dropped. */
static const struct fg_pbwire_msg pseudo_sig = PROG(0, UINT32_MAX, REPLACE(1, 1, 4));
static const struct fg_pbwire_msg pseudo_entry = PROG(0, UINT32_MAX, REPLACE(1, 7, 5));
static const struct fg_pbwire_msg pseudo = PROG(1, 0, REPLACE(1, 0, 1), KEEP(2, INT32),
                                                RECURSE(4, &pseudo_sig, 2), RECURSE(5, &pseudo_entry, 3));

static const struct fg_pbwire_msg *const programs[] = { &empty, &strip, &allow, &self, &maps, &pseudo };

#define PSEUDO_PROGRAM 5
#define VALUE_MAX 40

/* The per-call values every edit gets: [0] from the input, [1] absent. */
static struct fg_pbwire_value values[2];
static const struct fg_pbwire_ctx ctx = { values, 2 };

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Edit into a queue holding PREFIX after one consumed byte (its head is
 * not at the front of its memory); returns the result code. */
static int edit(const uint8_t *in, size_t len, const struct fg_pbwire_msg *prog,
                struct fg_bufq *out, int *changed)
{
	uint64_t stats[NSTATS] = { 0 };
	const char *why = NULL;
	const uint8_t *o;
	int rv;

	fg_bufq_truncate(out, 0);
	check(fg_bufq_append(out, "#", 1) == 0 && fg_bufq_append(out, PREFIX, PREFIX_LEN) == 0);
	fg_bufq_consume(out, 1);
	*changed = -1;
	rv = fg_pbwire_edit_ex(in, len, prog, &ctx, out, stats, NSTATS, changed, &why);
	o = fg_bufq_head(out);
	check(fg_bufq_len(out) >= PREFIX_LEN && memcmp(o, PREFIX, PREFIX_LEN) == 0);
	if (rv < 0) {
		check(rv == FG_EINVAL && why != NULL && fg_bufq_len(out) == PREFIX_LEN && *changed == -1);
		return rv;
	}
	check(*changed == 0 || *changed == 1);
	check(*changed == (fg_bufq_len(out) - PREFIX_LEN != len ||
	                   (len > 0 && memcmp(o + PREFIX_LEN, in, len) != 0)));
	return 0;
}

/* The top level parses field by field exactly when the editor accepts it
 * with the empty program, and fg_pbwire_find agrees. */
static void check_primitives(const uint8_t *in, size_t len, int top_ok)
{
	static const uint32_t paths[][3] = { { 1, 0, 0 }, { 3, 1, 0 }, { 4, 2, 0 }, { 1, 1, 1 } };
	static const size_t depths[] = { 1, 2, 2, 3 };
	const uint8_t *p = in, *end = in + len, *first;
	struct fg_pbwire_field f;
	uint32_t num;
	uint8_t wt;
	uint8_t tmp[FG_PBWIRE_VARINT_MAX];
	uint64_t v, w;
	size_t i, n;
	int rv, ok = 1;

	while (ok && p < end) {
		ok = fg_pbwire_next_field(&p, end, &f) == 0;
		check(!ok || (f.tag >= in && f.end <= end && f.value + f.vlen <= f.end && f.end == p));
	}
	check(ok == top_ok);
	for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		rv = fg_pbwire_find(in, len, paths[i], depths[i], &f, NULL);
		check(rv == 0 || rv == FG_ENOTFOUND || rv == FG_EINVAL);
		check(rv == 0 ? f.value >= in && f.value + f.vlen <= end : 1);
		if (depths[i] == 1)
			check((rv != FG_EINVAL) == top_ok);
	}
	/* tag + skip agree with the iterator on the first field */
	p = in;
	if (len > 0 && fg_pbwire_read_tag(&p, end, &num, &wt) == 0 &&
	    fg_pbwire_skip_value(&p, end, num, wt) == 0) {
		first = in;
		check(fg_pbwire_next_field(&first, end, &f) == 0 && first == p && f.number == num);
	} else if (len > 0) {
		first = in;
		check(fg_pbwire_next_field(&first, end, &f) == FG_EINVAL && first == in);
	}
	p = in;
	if (fg_pbwire_read_varint(&p, end, &v) == 0) {
		n = fg_pbwire_write_varint(tmp, v);
		check(n == fg_pbwire_varint_size(v) && n <= (size_t)(p - in));
		p = tmp;
		check(fg_pbwire_read_varint(&p, tmp + n, &w) == 0 && w == v && p == tmp + n);
	}
}

/*
 * Every program again with each node indexed (fg_pbwire_msg_index), built
 * once and kept for the run: the editor must give the same result
 * whichever way it finds rules.  A node reached twice is copied once.
 */
#define NPROGRAMS (sizeof(programs) / sizeof(programs[0]))
#define MAX_NODES 64

static const struct fg_pbwire_msg *indexed[NPROGRAMS];
static const struct fg_pbwire_msg *copied_from[MAX_NODES];
static struct fg_pbwire_msg *copied_to[MAX_NODES];
static size_t ncopied;

static const struct fg_pbwire_msg *index_copy(const struct fg_pbwire_msg *m)
{
	struct fg_pbwire_rule *rules;
	struct fg_pbwire_msg *t;
	size_t i;

	if (m == NULL)
		return NULL;
	for (i = 0; i < ncopied; i++)
		if (copied_from[i] == m)
			return copied_to[i];
	check(ncopied < MAX_NODES);
	t = malloc(sizeof(*t));
	rules = calloc(m->nrules + 1, sizeof(*rules));
	check(t != NULL && rules != NULL);
	*t = *m;
	if (m->nrules)
		memcpy(rules, m->rules, m->nrules * sizeof(*rules));
	t->rules = rules;
	copied_from[ncopied] = m;
	copied_to[ncopied++] = t;
	for (i = 0; i < m->nrules; i++)
		rules[i].sub = index_copy(m->rules[i].sub);
	fg_pbwire_msg_index(t);
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fg_bufq out = { 0 }, again = { 0 }, copy = { 0 };
	const struct fg_pbwire_msg *prog;
	const uint8_t *in;
	size_t len, i;
	int rv, changed, changed2, top_ok;

	if (indexed[0] == NULL)
		for (i = 0; i < NPROGRAMS; i++)
			indexed[i] = index_copy(programs[i]);
	if (size < 1)
		return 0;
	prog = programs[data[0] % NPROGRAMS];
	in = data + 1;
	len = size - 1;
	values[0].data = (const uint8_t *)"";
	values[0].len = 0;
	if (data[0] % NPROGRAMS == PSEUDO_PROGRAM && len > 0) {
		i = in[0] % VALUE_MAX;
		i = i < len - 1 ? i : len - 1;
		values[0].data = in + 1;
		values[0].len = i;
		in += 1 + i;
		len -= 1 + i;
	}

	top_ok = edit(in, len, &empty, &copy, &changed) == 0;
	if (top_ok)
		check(changed == 0 && fg_bufq_len(&copy) - PREFIX_LEN == len);
	check_primitives(in, len, top_ok);

	rv = edit(in, len, prog, &out, &changed);
	check(edit(in, len, indexed[data[0] % NPROGRAMS], &again, &changed2) == rv);
	check(rv < 0 || (changed2 == changed && fg_bufq_len(&again) == fg_bufq_len(&out) &&
	                 memcmp(fg_bufq_head(&again), fg_bufq_head(&out), fg_bufq_len(&out)) == 0));
	if (rv == 0) {
		check(top_ok);
		check(edit(fg_bufq_head(&out) + PREFIX_LEN, fg_bufq_len(&out) - PREFIX_LEN, prog, &again,
		           &changed2) == 0);
		check(changed2 == 0 && fg_bufq_len(&again) == fg_bufq_len(&out) &&
		      memcmp(fg_bufq_head(&again), fg_bufq_head(&out), fg_bufq_len(&out)) == 0);
		check(edit(fg_bufq_head(&out) + PREFIX_LEN, fg_bufq_len(&out) - PREFIX_LEN, &empty, &copy,
		           &changed2) == 0);
	}
	fg_bufq_free(&out);
	fg_bufq_free(&again);
	fg_bufq_free(&copy);
	return 0;
}
