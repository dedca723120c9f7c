/*
 * test_pbwire.c - the wire-level protobuf reader and editor, through
 * fg_pbwire.h.
 *
 * Messages are built with the small encoder below, so each test shows the
 * fields it feeds in; the vectors in test_pbwire_python_vectors come from
 * python3-protobuf 3.21 (see there) to check that encoder and editor agree
 * with the reference implementation.
 *
 * Link with -Wl,--wrap=realloc: __wrap_realloc below fails the Nth call on
 * request, which drives the FG_ENOMEM paths (fg_pbwire allocates only
 * through realloc).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fg_error.h"
#include "fg_pbwire.h"

/* ---- failing realloc ---- */

#define FG_FAILALLOC_REALLOC
#include "fg_failalloc.h"

/* ---- a tiny encoder ---- */

#include "fg_pbmsg.h"

static void put_hex(struct msg *m, const char *hex)
{
	unsigned x;

	for (; hex[0] && hex[1]; hex += 2) {
		assert_int_equal(sscanf(hex, "%2x", &x), 1);
		m->b[m->n++] = (uint8_t)x;
	}
}

static uint64_t zz(int64_t v)
{
	return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

static struct msg *msg_new(void)
{
	struct msg *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	return m;
}

/* ---- running the editor ---- */

#define NSTATS 8

struct run {
	uint64_t stats[NSTATS];
	int changed;
};

/*
 * A copy of the program tree <m> with every node indexed
 * (fg_pbwire_msg_index), so each edit below also runs with the other way
 * of finding rules; a node reached twice (recursive types) is copied once.
 */
#define ICOPY_MAX 32

struct icopy {
	const struct fg_pbwire_msg *from[ICOPY_MAX];
	struct fg_pbwire_msg *to[ICOPY_MAX];
	size_t n;
};

static const struct fg_pbwire_msg *index_copy(struct icopy *c, const struct fg_pbwire_msg *m)
{
	struct fg_pbwire_rule *rules;
	struct fg_pbwire_msg *t;
	size_t i;

	if (m == NULL)
		return NULL;
	for (i = 0; i < c->n; i++)
		if (c->from[i] == m)
			return c->to[i];
	assert_true(c->n < ICOPY_MAX);
	t = calloc(1, sizeof(*t));
	rules = calloc(m->nrules + 1, sizeof(*rules));
	assert_true(t != NULL && rules != NULL);
	*t = *m;
	if (m->nrules)
		memcpy(rules, m->rules, m->nrules * sizeof(*rules));
	t->rules = rules;
	c->from[c->n] = m;
	c->to[c->n++] = t;
	for (i = 0; i < m->nrules; i++)
		rules[i].sub = index_copy(c, m->rules[i].sub);
	fg_pbwire_msg_index(t);
	return t;
}

static void icopy_free(struct icopy *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		free((void *)c->to[i]->rules);
		free(c->to[i]);
	}
	c->n = 0;
}

/* <in>'s bytes in a block of exactly their size, so a read past the end
 * is caught by the sanitizers and valgrind. */
static uint8_t *exact_copy(const struct msg *in)
{
	uint8_t *p = malloc(in->n ? in->n : 1);

	assert_non_null(p);
	memcpy(p, in->b, in->n);
	return p;
}

/* A queue holding "PFX" after 2 bytes consumed: its head is not at the
 * front of its memory, as the editor must expect of any queue. */
static void prefixed(struct fg_bufq *out)
{
	assert_int_equal(fg_bufq_append(out, "..PFX", 5), 0);
	fg_bufq_consume(out, 2);
}

/*
 * Edit <in> with <prog> into a queue holding a 3-byte prefix (prefixed()),
 * check the prefix survives and the result equals <want>, then check the
 * promises every success makes: editing the output again changes nothing,
 * and the indexed copy of the program does exactly the same.
 */
static void edit_expect(const struct msg *in, const struct fg_pbwire_msg *prog,
                        const struct msg *want, struct run *run)
{
	struct fg_bufq out = { 0 }, again = { 0 };
	uint64_t stats2[NSTATS] = { 0 };
	uint8_t *exact = exact_copy(in);
	struct icopy ic = { .n = 0 };
	const char *why = NULL;
	int changed = -1;

	prefixed(&out);
	memset(run, 0, sizeof(*run));
	run->changed = -1;
	assert_int_equal(fg_pbwire_edit(exact, in->n, prog, &out, run->stats, NSTATS, &run->changed,
	                                 &why), 0);
	assert_memory_equal(fg_bufq_head(&out), "PFX", 3);
	assert_int_equal(fg_bufq_len(&out) - 3, want->n);
	assert_memory_equal(fg_bufq_head(&out) + 3, want->b, want->n);
	assert_int_equal(run->changed, in->n != want->n || memcmp(in->b, want->b, in->n) != 0);

	assert_int_equal(fg_pbwire_edit(fg_bufq_head(&out) + 3, fg_bufq_len(&out) - 3, prog, &again, stats2,
	                                NSTATS, &changed, &why), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(fg_bufq_len(&again), want->n);
	assert_memory_equal(fg_bufq_head(&again), want->b, want->n);

	fg_bufq_clear(&again);
	memset(stats2, 0, sizeof(stats2));
	assert_int_equal(fg_pbwire_edit(exact, in->n, index_copy(&ic, prog), &again, stats2, NSTATS,
	                                &changed, &why), 0);
	assert_int_equal(changed, run->changed);
	assert_int_equal(fg_bufq_len(&again), want->n);
	assert_memory_equal(fg_bufq_head(&again), want->b, want->n);
	assert_memory_equal(stats2, run->stats, sizeof(stats2));
	icopy_free(&ic);
	free(exact);
	fg_bufq_free(&again);
	fg_bufq_free(&out);
}

/* Expect FG_EINVAL with a reason, and <out> (prefilled) left as it was. */
static void edit_invalid(const struct msg *in, const struct fg_pbwire_msg *prog)
{
	struct fg_bufq out = { 0 };
	uint8_t *exact = exact_copy(in);
	struct icopy ic = { .n = 0 };
	const char *why = NULL, *why2 = NULL;
	int changed = 7;

	prefixed(&out);
	assert_int_equal(fg_pbwire_edit(exact, in->n, prog, &out, NULL, 0, &changed, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 3);
	assert_memory_equal(fg_bufq_head(&out), "PFX", 3);
	assert_int_equal(changed, 7);
	assert_int_equal(fg_pbwire_edit(exact, in->n, index_copy(&ic, prog), &out, NULL, 0, &changed, &why2),
	                 FG_EINVAL);
	assert_string_equal(why2, why);
	assert_int_equal(fg_bufq_len(&out), 3);
	icopy_free(&ic);
	free(exact);
	fg_bufq_free(&out);
}

#define RULES(...) ((const struct fg_pbwire_rule[]){ __VA_ARGS__ })
#define NRULES(...) (sizeof((const struct fg_pbwire_rule[]){ __VA_ARGS__ }) / \
                     sizeof(struct fg_pbwire_rule))
#define PROG(allow, ...) { .allow_only = (allow), .unlisted_stat = UINT32_MAX, \
                           .nrules = NRULES(__VA_ARGS__), .rules = RULES(__VA_ARGS__) }
#define DROP(num, st) { .number = (num), .action = FG_PBWIRE_DROP, .stat = (st) }
#define KEEP(num) { .number = (num), .action = FG_PBWIRE_KEEP, .stat = UINT32_MAX }
#define RECURSE(num, sub_, st) { .number = (num), .action = FG_PBWIRE_RECURSE, .sub = (sub_), \
                                 .stat = (st) }
#define COARSEN(num, kind, p, st) { .number = (num), .action = FG_PBWIRE_COARSEN, \
                                    .scalar = FG_PBWIRE_S_##kind, .precision = (p), .stat = (st) }

static const struct fg_pbwire_msg empty_prog = { 0 };

/* ---- primitives ---- */

static void test_pbwire_varint(void **state)
{
	static const uint64_t values[] = { 0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX,
	                                   UINT64_C(1) << 63, UINT64_MAX };
	uint8_t buf[16];
	const uint8_t *p;
	uint64_t v;
	size_t i, n;

	for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		n = fg_pbwire_write_varint(buf, values[i]);
		assert_int_equal(n, fg_pbwire_varint_size(values[i]));
		p = buf;
		assert_int_equal(fg_pbwire_read_varint(&p, buf + n, &v), 0);
		assert_true(v == values[i]);
		assert_ptr_equal(p, buf + n);
		/* one byte short is truncated, and <p> does not move */
		p = buf;
		assert_int_equal(fg_pbwire_read_varint(&p, buf + n - 1, &v), FG_EINVAL);
		assert_ptr_equal(p, buf);
	}
	assert_int_equal(fg_pbwire_write_varint(buf, UINT64_MAX), FG_PBWIRE_VARINT_MAX);

	/* non-minimal is valid protobuf */
	memcpy(buf, "\x80\x80\x00", 3);
	p = buf;
	assert_int_equal(fg_pbwire_read_varint(&p, buf + 3, &v), 0);
	assert_true(v == 0 && p == buf + 3);
	/* 10 bytes whose last carries bit 63 only: fine; anything more is not */
	memcpy(buf, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 10);
	p = buf;
	assert_int_equal(fg_pbwire_read_varint(&p, buf + 10, &v), 0);
	assert_true(v == UINT64_C(1) << 63);
	buf[9] = 0x02;
	p = buf;
	assert_int_equal(fg_pbwire_read_varint(&p, buf + 10, &v), FG_EINVAL);
	memcpy(buf, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x81\x00", 11);
	p = buf;
	assert_int_equal(fg_pbwire_read_varint(&p, buf + 11, &v), FG_EINVAL);
	assert_ptr_equal(p, buf);
	p = buf;
	assert_int_equal(fg_pbwire_read_varint(&p, buf, &v), FG_EINVAL);
}

static void test_pbwire_tag(void **state)
{
	struct msg m = { .n = 0 };
	const uint8_t *p;
	uint32_t num;
	uint8_t wt;

	put_tag(&m, 1, FG_PBWIRE_LEN);
	put_tag(&m, FG_PBWIRE_NUMBER_MAX, FG_PBWIRE_I32);
	put_hex(&m, "8800");                    /* field 1 varint, non-minimal tag */
	p = m.b;
	assert_int_equal(fg_pbwire_read_tag(&p, m.b + m.n, &num, &wt), 0);
	assert_true(num == 1 && wt == FG_PBWIRE_LEN);
	assert_int_equal(fg_pbwire_read_tag(&p, m.b + m.n, &num, &wt), 0);
	assert_true(num == FG_PBWIRE_NUMBER_MAX && wt == FG_PBWIRE_I32);
	assert_int_equal(fg_pbwire_read_tag(&p, m.b + m.n, &num, &wt), 0);
	assert_true(num == 1 && wt == FG_PBWIRE_VARINT && p == m.b + m.n);

	static const char *const bad[] = {
		"00",                   /* field 0 */
		"",                     /* empty */
		"06", "0f",             /* wire types 6 and 7 */
		"8080808010",           /* tag 2^32: above 32 bits */
		"88",                   /* truncated */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m.n = 0;
		put_hex(&m, bad[i]);
		p = m.b;
		assert_int_equal(fg_pbwire_read_tag(&p, m.b + m.n, &num, &wt), FG_EINVAL);
		assert_ptr_equal(p, m.b);
	}
}

static int skip_hex(const char *hex, uint32_t number, uint8_t wire_type, size_t *used)
{
	struct msg m = { .n = 0 };
	const uint8_t *p = m.b;
	int rv;

	put_hex(&m, hex);
	rv = fg_pbwire_skip_value(&p, m.b + m.n, number, wire_type);
	*used = (size_t)(p - m.b);
	return rv;
}

static void test_pbwire_skip(void **state)
{
	struct msg *deep = msg_new();
	const uint8_t *p;
	size_t used;
	int i;

	assert_int_equal(skip_hex("ac02ff", 1, FG_PBWIRE_VARINT, &used), 0);
	assert_int_equal(used, 2);
	assert_int_equal(skip_hex("0102030405060708ff", 1, FG_PBWIRE_I64, &used), 0);
	assert_int_equal(used, 8);
	assert_int_equal(skip_hex("01020304", 1, FG_PBWIRE_I32, &used), 0);
	assert_int_equal(used, 4);
	assert_int_equal(skip_hex("03616263ff", 1, FG_PBWIRE_LEN, &used), 0);
	assert_int_equal(used, 4);
	/* group 1 holding field 2 varint and group 3 { field 1 I32 }, then its end */
	assert_int_equal(skip_hex("1005" "1b" "0d01020304" "1c" "0c" "ff", 1, FG_PBWIRE_SGROUP,
	                          &used), 0);
	assert_int_equal(used, 10);

	assert_int_equal(skip_hex("0102030405060708", 1, FG_PBWIRE_I64, &used), 0);
	assert_int_equal(skip_hex("01020304050607", 1, FG_PBWIRE_I64, &used), FG_EINVAL);
	assert_int_equal(used, 0);
	assert_int_equal(skip_hex("010203", 1, FG_PBWIRE_I32, &used), FG_EINVAL);
	assert_int_equal(skip_hex("046162", 1, FG_PBWIRE_LEN, &used), FG_EINVAL);
	assert_int_equal(skip_hex("1005", 1, FG_PBWIRE_SGROUP, &used), FG_EINVAL);      /* no end */
	assert_int_equal(skip_hex("1005" "14", 1, FG_PBWIRE_SGROUP, &used), FG_EINVAL); /* end of 2 */
	assert_int_equal(skip_hex("", 1, FG_PBWIRE_EGROUP, &used), FG_EINVAL);
	assert_int_equal(skip_hex("00", 1, 6, &used), FG_EINVAL);

	/* groups nest FG_PBWIRE_MAX_DEPTH deep (the outer one included), not more */
	for (i = 1; i < FG_PBWIRE_MAX_DEPTH; i++)
		put_tag(deep, 1, FG_PBWIRE_SGROUP);
	for (i = 0; i < FG_PBWIRE_MAX_DEPTH; i++)
		put_tag(deep, 1, FG_PBWIRE_EGROUP);
	p = deep->b;
	assert_int_equal(fg_pbwire_skip_value(&p, deep->b + deep->n, 1, FG_PBWIRE_SGROUP), 0);
	assert_ptr_equal(p, deep->b + deep->n);
	deep->n = 0;
	for (i = 1; i < FG_PBWIRE_MAX_DEPTH + 1; i++)
		put_tag(deep, 1, FG_PBWIRE_SGROUP);
	for (i = 0; i < FG_PBWIRE_MAX_DEPTH + 1; i++)
		put_tag(deep, 1, FG_PBWIRE_EGROUP);
	p = deep->b;
	assert_int_equal(fg_pbwire_skip_value(&p, deep->b + deep->n, 1, FG_PBWIRE_SGROUP), FG_EINVAL);
	free(deep);
}

static void test_pbwire_next_field(void **state)
{
	struct msg m = { .n = 0 };
	struct fg_pbwire_field f;
	const uint8_t *p, *end;

	f_varint(&m, 1, 300);
	f_str(&m, 2, "abc");
	f_double(&m, 3, 1.5);
	put_tag(&m, 4, FG_PBWIRE_SGROUP);
	f_varint(&m, 1, 7);
	put_tag(&m, 4, FG_PBWIRE_EGROUP);
	f_float(&m, 5, 2.0f);
	p = m.b;
	end = m.b + m.n;

	assert_int_equal(fg_pbwire_next_field(&p, end, &f), 0);
	assert_true(f.number == 1 && f.wire_type == FG_PBWIRE_VARINT && f.varint == 300);
	assert_true(f.tag == m.b && f.tag_len == 1 && f.vlen == 2 && f.end == p);
	assert_int_equal(fg_pbwire_next_field(&p, end, &f), 0);
	assert_true(f.number == 2 && f.wire_type == FG_PBWIRE_LEN && f.vlen == 3 && f.varint == 3);
	assert_memory_equal(f.value, "abc", 3);
	assert_int_equal(fg_pbwire_next_field(&p, end, &f), 0);
	assert_true(f.number == 3 && f.wire_type == FG_PBWIRE_I64 && f.vlen == 8);
	assert_int_equal(fg_pbwire_next_field(&p, end, &f), 0);
	assert_true(f.number == 4 && f.wire_type == FG_PBWIRE_SGROUP && f.vlen == 2);
	assert_true(f.value[0] == 0x08 && f.value[1] == 7 && f.end == f.value + 3);
	assert_int_equal(fg_pbwire_next_field(&p, end, &f), 0);
	assert_true(f.number == 5 && f.wire_type == FG_PBWIRE_I32 && f.vlen == 4 && p == end);

	/* an end-group tag at message level has no start */
	m.n = 0;
	put_tag(&m, 4, FG_PBWIRE_EGROUP);
	p = m.b;
	assert_int_equal(fg_pbwire_next_field(&p, m.b + m.n, &f), FG_EINVAL);
	assert_ptr_equal(p, m.b);
}

/*
 * Edit <in> into a queue holding "PFX" at offset <off> of <cap> bytes of
 * memory; expect <want> after the prefix and <reallocs> growths.
 */
static void edit_at_offset(const struct msg *in, const struct fg_pbwire_msg *prog, const struct msg *want,
                           size_t cap, size_t off, long reallocs)
{
	struct fg_bufq out = { 0 };
	int changed = -1;

	assert_int_equal(fg_bufq_reserve_exact(&out, cap), 0);
	memset(fg_bufq_tail(&out), 'f', off);
	fg_bufq_commit(&out, off);
	assert_int_equal(fg_bufq_append(&out, "PFX", 3), 0);
	fg_bufq_consume(&out, off);
	assert_true(out.off == off && out.cap == cap);
	realloc_calls = 0;
	assert_int_equal(fg_pbwire_edit(in->b, in->n, prog, &out, NULL, 0, &changed, NULL), 0);
	assert_int_equal(realloc_calls, reallocs);
	assert_int_equal(out.off, 0);           /* the bytes were slid to the front */
	assert_int_equal(changed, 1);
	assert_int_equal(fg_bufq_len(&out), 3 + want->n);
	assert_memory_equal(fg_bufq_head(&out), "PFX", 3);
	assert_memory_equal(fg_bufq_head(&out) + 3, want->b, want->n);
	fg_bufq_free(&out);
}

/*
 * The output queue's head is not at the front of its memory (the caller
 * consumed what it held before): positions the editor keeps, such as the
 * length hole of a sub-message, count from the head, so they survive the
 * bytes sliding to the front in the middle of an edit, with or without new
 * memory.
 */
static void test_pbwire_out_not_at_front(void **state)
{
	const struct fg_pbwire_msg sub = PROG(0, COARSEN(1, UINT32, 2, 0));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(2, &sub, 1));
	struct msg *in = msg_new(), *s = msg_new(), *want = msg_new(), *ws = msg_new();
	int i;

	/* 200 values of 127 become 128, a byte longer each: 403 bytes in, 603
	 * out, more than the editor reserves up front (the input + 64) */
	for (i = 0; i < 200; i++) {
		f_varint(s, 1, 127);
		f_varint(ws, 1, 128);
	}
	f_msg(in, 2, s);
	f_msg(want, 2, ws);
	assert_int_equal(in->n, 403);
	assert_int_equal(want->n, 603);
	/* room for the first reserve at the tail, not for the output: the
	 * slide happens inside the sub-message, the memory is enough */
	edit_at_offset(in, &root, want, 1024, 500, 0);
	/* the first reserve slides and grows, a later one grows again */
	edit_at_offset(in, &root, want, 256, 250, 2);
	free(in);
	free(s);
	free(want);
	free(ws);
}

/* ---- editing ---- */

static void test_pbwire_identity(void **state)
{
	const struct fg_pbwire_msg leaf = PROG(0, COARSEN(2, INT32, 10, 1), DROP(9, 0));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(3, &leaf, 2), COARSEN(4, SINT64, 5, 3),
	                                              RECURSE(5, &leaf, 2), COARSEN(6, DOUBLE, 0.5, 3));
	struct msg *in = msg_new(), *sub = msg_new();
	struct fg_bufq out = { 0 };
	struct run run;
	int changed = -1;

	f_str(sub, 1, "kept");
	f_varint(sub, 2, (uint64_t)-30);        /* already a multiple */
	put_hex(sub, "9003ff01");               /* unknown field 50, varint 255 */
	f_str(in, 1, "u-1");
	put_tag(in, 3, FG_PBWIRE_LEN);          /* sub-message with a 3-byte length for 21 */
	put_hex(in, "958000");
	put_raw(in, sub->b, sub->n);
	assert_int_equal(sub->n, 21);
	f_varint(in, 4, zz(-25));
	put_tag(in, 4, FG_PBWIRE_LEN);          /* packed sint64: 10 and a non-minimal 0 */
	put_hex(in, "031480" "00");
	put_tag(in, 5, FG_PBWIRE_LEN);          /* an empty sub-message */
	put_hex(in, "00");
	f_double(in, 6, -2.5);
	put_tag(in, 7, FG_PBWIRE_SGROUP);       /* a group and an unknown LEN pass through */
	f_str(in, 1, "g");
	put_tag(in, 7, FG_PBWIRE_EGROUP);
	f_str(in, 1000, "unknown");

	edit_expect(in, &root, in, &run);
	assert_int_equal(run.changed, 0);
	for (int i = 0; i < NSTATS; i++)
		assert_true(run.stats[i] == 0);
	/* the empty program and a NULL one copy too */
	edit_expect(in, &empty_prog, in, &run);
	edit_expect(in, NULL, in, &run);
	/* an empty message appends nothing and needs no buffer */
	assert_int_equal(fg_pbwire_edit(NULL, 0, &root, &out, NULL, 0, &changed, NULL), 0);
	assert_true(changed == 0 && fg_bufq_len(&out) == 0);
	fg_bufq_free(&out);
	free(in);
	free(sub);
}

static void test_pbwire_drop(void **state)
{
	const struct fg_pbwire_msg geo = PROG(0, DROP(1, 1), DROP(2, 1));
	const struct fg_pbwire_msg root = PROG(0, DROP(2, 0), RECURSE(3, &geo, UINT32_MAX),
	                                              DROP(6, 2));
	struct msg *in = msg_new(), *want = msg_new(), *g = msg_new(), *gw = msg_new();
	struct run run;

	f_double(g, 1, 48.85);
	f_double(g, 2, 2.35);
	f_float(g, 3, 17.5f);
	f_float(gw, 3, 17.5f);

	f_str(in, 1, "u-1");
	f_varint(in, 2, 12);
	f_msg(in, 3, g);
	f_varint(in, 2, 13);                    /* a second occurrence goes too */
	put_tag(in, 6, FG_PBWIRE_LEN);          /* packed field: dropped whole */
	put_hex(in, "03010203");
	f_varint(in, 6, 4);                     /* and the unpacked one */
	f_str(in, 99, "unknown");

	f_str(want, 1, "u-1");
	f_msg(want, 3, gw);
	f_str(want, 99, "unknown");
	edit_expect(in, &root, want, &run);
	assert_int_equal(run.changed, 1);
	assert_true(run.stats[0] == 2 && run.stats[1] == 2 && run.stats[2] == 2);
	free(in);
	free(want);
	free(g);
	free(gw);
}

static void test_pbwire_drop_in_repeated(void **state)
{
	const struct fg_pbwire_msg sig = PROG(0, DROP(2, 0));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(4, &sig, 1));
	struct msg *in = msg_new(), *want = msg_new(), *s = msg_new();
	struct run run;
	int i;

	for (i = 0; i < 3; i++) {
		s->n = 0;
		f_str(s, 1, i == 1 ? "like" : "watch");
		if (i != 2)             /* the third has nothing to strip */
			f_varint(s, 2, (uint64_t)(i + 1));
		f_msg(in, 4, s);
		s->n = 0;
		f_str(s, 1, i == 1 ? "like" : "watch");
		f_msg(want, 4, s);
		f_varint(in, 5, 1);
		f_varint(want, 5, 1);
	}
	edit_expect(in, &root, want, &run);
	/* two elements changed, two inner drops */
	assert_true(run.stats[0] == 2 && run.stats[1] == 2);
	free(in);
	free(want);
	free(s);
}

/*
 * A 200-byte field three levels down is dropped: each enclosing length
 * falls below 128 and loses a byte, so the content moves at every level.
 * Then the other way: coarsening 127 to 130 makes a 127-byte innermost
 * message 128 bytes: its length gains a byte, and the two lengths around
 * it change value.
 */
static void test_pbwire_length_propagates(void **state)
{
	const struct fg_pbwire_msg l3 = PROG(0, DROP(2, 0), COARSEN(3, UINT32, 10, 1));
	const struct fg_pbwire_msg l2 = PROG(0, RECURSE(1, &l3, UINT32_MAX));
	const struct fg_pbwire_msg l1 = PROG(0, RECURSE(1, &l2, UINT32_MAX));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(1, &l1, UINT32_MAX));
	struct msg *a[4], *w[4];
	char big[201];
	struct run run;
	int i;

	for (i = 0; i < 4; i++) {
		a[i] = msg_new();
		w[i] = msg_new();
	}
	memset(big, 'x', 200);
	big[200] = '\0';
	f_str(a[3], 1, "x");
	f_str(a[3], 2, big);
	f_str(w[3], 1, "x");
	for (i = 2; i >= 0; i--) {
		f_msg(a[i], 1, a[i + 1]);
		f_msg(w[i], 1, w[i + 1]);
		f_varint(a[i], 9, (uint64_t)i);
		f_varint(w[i], 9, (uint64_t)i);
	}
	assert_true(a[0]->n > 200 && w[0]->n < 20);
	edit_expect(a[0], &root, w[0], &run);
	assert_true(run.stats[0] == 1);

	for (i = 0; i < 4; i++)
		a[i]->n = w[i]->n = 0;
	memset(big, 'y', 123);
	big[123] = '\0';
	f_str(a[3], 4, big);            /* 1 + 1 + 123 bytes */
	f_varint(a[3], 3, 127);         /* + 2 = 127 */
	f_str(w[3], 4, big);
	f_varint(w[3], 3, 130);         /* + 3 = 128 */
	assert_true(a[3]->n == 127 && w[3]->n == 128);
	for (i = 2; i >= 0; i--) {
		f_msg(a[i], 1, a[i + 1]);
		f_msg(w[i], 1, w[i + 1]);
	}
	edit_expect(a[0], &root, w[0], &run);
	assert_int_equal(w[0]->n, a[0]->n + 2);
	assert_true(run.stats[1] == 1);
	for (i = 0; i < 4; i++) {
		free(a[i]);
		free(w[i]);
	}
}

static void test_pbwire_allow_only(void **state)
{
	const struct fg_pbwire_msg ctx = { .allow_only = 1, .unlisted_stat = 4, .nrules = 1,
	                                          .rules = RULES(KEEP(2)) };
	const struct fg_pbwire_msg root = { .allow_only = 1, .unlisted_stat = 3, .nrules = 3,
	                                           .rules = RULES(KEEP(1), RECURSE(3, &ctx, 5),
	                                                          COARSEN(4, INT64, 100, 6)) };
	struct msg *in = msg_new(), *want = msg_new(), *c = msg_new(), *cw = msg_new();
	struct run run;

	f_str(c, 1, "device-model");
	f_str(c, 2, "fr-FR");
	f_varint(c, 77, 1);
	f_str(cw, 2, "fr-FR");

	f_str(in, 1, "u-1");
	f_varint(in, 2, 12);                            /* no rule: dropped */
	f_msg(in, 3, c);
	f_varint(in, 4, 1234);
	put_tag(in, 8, FG_PBWIRE_SGROUP);               /* group without rule: dropped */
	put_tag(in, 8, FG_PBWIRE_EGROUP);
	f_str(in, 1000, "unknown");                     /* unknown: dropped */
	f_str(in, 1, "u-2");                            /* kept, in place */

	f_str(want, 1, "u-1");
	f_msg(want, 3, cw);
	f_varint(want, 4, 1200);
	f_str(want, 1, "u-2");
	edit_expect(in, &root, want, &run);
	assert_true(run.stats[3] == 3 && run.stats[4] == 2 && run.stats[5] == 1 && run.stats[6] == 1);
	free(in);
	free(want);
	free(c);
	free(cw);
}

/* KEEP with a scalar kind checks the wire type: an allow-list cannot let
 * bytes through as an "unknown field" of the wrong type. */
static void test_pbwire_keep_checks_type(void **state)
{
	const struct fg_pbwire_msg root = PROG(1, { .number = 2, .action = FG_PBWIRE_KEEP,
	                                                   .scalar = FG_PBWIRE_S_FIXED32,
	                                                   .stat = UINT32_MAX });
	struct msg *in = msg_new();
	struct run run;

	f_float(in, 2, 1.0f);
	put_tag(in, 2, FG_PBWIRE_LEN);                  /* packed: two fixed32 */
	put_hex(in, "08" "0100000002000000");
	edit_expect(in, &root, in, &run);
	f_str(in, 2, "smuggle");          /* 7 bytes: not packed fixed32 */
	edit_invalid(in, &root);
	in->n = 0;
	f_varint(in, 2, 1);
	edit_invalid(in, &root);
	free(in);
}

static void test_pbwire_coarsen_repeated(void **state)
{
	const struct fg_pbwire_msg root = PROG(0, COARSEN(6, INT32, 10, 0),
	                                              COARSEN(9, SINT32, 10, 1),
	                                              COARSEN(10, FIXED32, 10, 2));
	struct msg *in = msg_new(), *want = msg_new(), *pk = msg_new(), *pw = msg_new();
	static const int32_t hist[] = { 14, 15, -15, 127, 0, -1 };
	static const int32_t hist_want[] = { 10, 20, -20, 130, 0, 0 };
	struct run run;
	size_t i;

	for (i = 0; i < 6; i++) {
		put_varint(pk, (uint64_t)(int64_t)hist[i]);
		put_varint(pw, (uint64_t)(int64_t)hist_want[i]);
	}
	f_msg(in, 6, pk);                                       /* packed int32 */
	f_msg(want, 6, pw);
	f_varint(in, 9, zz(-5));                                /* unpacked sint32 */
	f_varint(want, 9, zz(-10));
	f_varint(in, 9, zz(4));
	f_varint(want, 9, zz(0));
	f_varint(in, 9, zz(20));
	f_varint(want, 9, zz(20));
	put_tag(in, 10, FG_PBWIRE_LEN);                         /* packed fixed32: 25, 40 */
	put_hex(in, "08" "19000000" "28000000");
	put_tag(want, 10, FG_PBWIRE_LEN);
	put_hex(want, "08" "1e000000" "28000000");
	edit_expect(in, &root, want, &run);
	/* counted per value, packed or not */
	assert_true(run.stats[0] == 5 && run.stats[1] == 2 && run.stats[2] == 1);
	free(in);
	free(want);
	free(pk);
	free(pw);
}

static void coarsen_one(uint8_t kind, double precision, void (*put)(struct msg *), void (*put_want)(struct msg *))
{
	const struct fg_pbwire_rule rule = { .number = 1, .action = FG_PBWIRE_COARSEN, .scalar = kind,
	                                     .precision = precision, .stat = 0 };
	const struct fg_pbwire_msg prog = { .unlisted_stat = UINT32_MAX, .nrules = 1, .rules = &rule };
	struct msg in = { .n = 0 }, want = { .n = 0 };
	struct run run;

	put(&in);
	put_want(&want);
	edit_expect(&in, &prog, &want, &run);
}

#define CASE(name, body) static void name(struct msg *m) { body; }
CASE(d_in, f_double(m, 1, 48.856613))
CASE(d_want, f_double(m, 1, round(48.856613 / 0.01) * 0.01))
CASE(d_neg_in, f_double(m, 1, -2.5))
CASE(d_neg_want, f_double(m, 1, -3.0))
CASE(d_nan, f_double(m, 1, NAN))
CASE(d_inf, f_double(m, 1, -INFINITY))
CASE(f_in, f_float(m, 1, 17.5f))
CASE(f_want, f_float(m, 1, 20.0f))
CASE(f_small_in, f_float(m, 1, -0.3f))
CASE(f_small_want, f_float(m, 1, -0.0f))
CASE(i32_in, f_varint(m, 1, (uint64_t)(int64_t)-7))
CASE(i32_want, f_varint(m, 1, (uint64_t)(int64_t)-10))
CASE(i32_neg_zero_in, f_varint(m, 1, (uint64_t)(int64_t)-4))
CASE(i32_zero, f_varint(m, 1, 0))
CASE(i32_max_in, f_varint(m, 1, INT32_MAX))     /* rounding up would overflow int32 */
CASE(i32_max_want, f_varint(m, 1, 2147483640))
CASE(i32_min_in, f_varint(m, 1, (uint64_t)(int64_t)INT32_MIN))
CASE(i32_min_want, f_varint(m, 1, (uint64_t)(int64_t)-2147483640))
CASE(i32_5byte_in, put_hex(m, "08" "f9ffffff0f"))   /* -7 as 5 bytes (old encoders) */
CASE(s64_in, f_varint(m, 1, zz(-1500)))
CASE(s64_want, f_varint(m, 1, zz(-2000)))
CASE(s64_min_in, f_varint(m, 1, zz(INT64_MIN)))
CASE(s64_min_want, f_varint(m, 1, zz(INT64_MIN + 8)))
CASE(u64_max_in, f_varint(m, 1, UINT64_MAX))
CASE(u64_max_want, f_varint(m, 1, UINT64_MAX - 5))
CASE(u32_in, f_varint(m, 1, UINT32_MAX))
CASE(u32_want, f_varint(m, 1, 4294967290u))
CASE(sf64_in, put_hex(m, "09" "9cffffffffffffff"))  /* -100 */
CASE(sf64_want, put_hex(m, "09" "80ffffffffffffff")) /* -128 (step 64) */
CASE(sf32_in, put_hex(m, "0d" "9dffffff"))          /* -99 */
CASE(sf32_want, put_hex(m, "0d" "9cffffff"))        /* -100 */
CASE(d_big_in, f_double(m, 1, 1.5e308))             /* 2e308 overflows: toward zero */
CASE(d_big_want, f_double(m, 1, 1e308))
CASE(f_big_in, f_float(m, 1, 3.0e38f))               /* 4e38 overflows float */
CASE(f_big_want, f_float(m, 1, (float)2e38))
CASE(f64_in, put_hex(m, "09" "0500000000000000"))   /* 5 */
CASE(f64_want, put_hex(m, "09" "0a00000000000000")) /* 10 */

static void test_pbwire_coarsen_kinds(void **state)
{
	coarsen_one(FG_PBWIRE_S_DOUBLE, 0.01, d_in, d_want);
	coarsen_one(FG_PBWIRE_S_DOUBLE, 1, d_neg_in, d_neg_want);          /* half away from zero */
	coarsen_one(FG_PBWIRE_S_DOUBLE, 1, d_nan, d_nan);
	coarsen_one(FG_PBWIRE_S_DOUBLE, 1, d_inf, d_inf);
	coarsen_one(FG_PBWIRE_S_DOUBLE, 0, d_in, d_in);                    /* no step: kept */
	coarsen_one(FG_PBWIRE_S_DOUBLE, 1e-320, d_in, d_in);               /* below DBL_MIN */
	coarsen_one(FG_PBWIRE_S_DOUBLE, 1e308, d_big_in, d_big_want);
	coarsen_one(FG_PBWIRE_S_FLOAT, 2e38, f_big_in, f_big_want);
	coarsen_one(FG_PBWIRE_S_FLOAT, 5, f_in, f_want);
	coarsen_one(FG_PBWIRE_S_FLOAT, 1, f_small_in, f_small_want);
	coarsen_one(FG_PBWIRE_S_INT32, 10, i32_in, i32_want);              /* 10-byte negative */
	coarsen_one(FG_PBWIRE_S_INT32, 10, i32_neg_zero_in, i32_zero);
	coarsen_one(FG_PBWIRE_S_INT32, 10, i32_max_in, i32_max_want);
	coarsen_one(FG_PBWIRE_S_INT32, 10, i32_min_in, i32_min_want);
	coarsen_one(FG_PBWIRE_S_INT32, 10, i32_5byte_in, i32_want);
	coarsen_one(FG_PBWIRE_S_INT32, 7, i32_5byte_in, i32_5byte_in);     /* -7: stays, bytes too */
	coarsen_one(FG_PBWIRE_S_INT32, 1.2, i32_in, i32_in);               /* step 1: nothing */
	coarsen_one(FG_PBWIRE_S_SINT64, 1000, s64_in, s64_want);
	coarsen_one(FG_PBWIRE_S_SINT64, 16, s64_min_in, s64_min_in);       /* a multiple already */
	coarsen_one(FG_PBWIRE_S_SINT64, 10, s64_min_in, s64_min_want);
	coarsen_one(FG_PBWIRE_S_UINT64, 10, u64_max_in, u64_max_want);
	coarsen_one(FG_PBWIRE_S_UINT64, 1e30, u64_max_in, u64_max_in);     /* step 2^64-1 */
	coarsen_one(FG_PBWIRE_S_UINT32, 10, u32_in, u32_want);
	coarsen_one(FG_PBWIRE_S_SFIXED64, 64, sf64_in, sf64_want);
	coarsen_one(FG_PBWIRE_S_SFIXED32, 10, sf32_in, sf32_want);
	coarsen_one(FG_PBWIRE_S_FIXED64, 10, f64_in, f64_want);
}

/* map<string, Signal> with a program on the entry, and map DROP_KEYS. */
static void test_pbwire_map_recurse(void **state)
{
	const struct fg_pbwire_msg sig = PROG(0, DROP(2, 0));
	const struct fg_pbwire_msg entry = PROG(0, RECURSE(2, &sig, UINT32_MAX));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(5, &entry, 1));
	struct msg *in = msg_new(), *want = msg_new(), *e = msg_new(), *s = msg_new();
	static const char *const keys[] = { "a", "b", "c" };
	struct run run;
	int i;

	for (i = 0; i < 3; i++) {
		e->n = s->n = 0;
		f_str(s, 1, keys[i]);
		f_varint(s, 2, 99);
		f_str(e, 1, keys[i]);
		f_msg(e, 2, s);
		f_msg(in, 5, e);
		e->n = s->n = 0;
		f_str(s, 1, keys[i]);
		f_str(e, 1, keys[i]);
		f_msg(e, 2, s);
		f_msg(want, 5, e);
	}
	edit_expect(in, &root, want, &run);
	assert_true(run.stats[0] == 3 && run.stats[1] == 3);
	free(in);
	free(want);
	free(e);
	free(s);
}

static void entry_str(struct msg *m, uint32_t number, const char *key, uint64_t value)
{
	struct msg e = { .n = 0 };

	if (key != NULL)
		f_str(&e, 1, key);
	f_varint(&e, 2, value);
	f_msg(m, number, &e);
}

static void entry_num(struct msg *m, uint32_t number, int has_key, uint64_t key, const char *value)
{
	struct msg e = { .n = 0 };

	f_str(&e, 2, value);            /* value first: entry fields may come in any order */
	if (has_key)
		f_varint(&e, 1, key);
	f_msg(m, number, &e);
}

static void test_pbwire_map_drop_keys(void **state)
{
	static const char *const skeys[] = { "views", "", "dwell_ms" };
	static const size_t slens[] = { 5, 0, 8 };
	const struct fg_pbwire_keys sk = { .n = 3, .str = skeys, .str_len = slens };
	static const char *const cskeys[] = { "views" };
	const struct fg_pbwire_keys csk = { .n = 1, .str = cskeys };  /* NUL-terminated */
	static const int64_t nkeys[] = { -1, 0, 42 };
	const struct fg_pbwire_keys nk = { .n = 3, .num = nkeys };
	const struct fg_pbwire_msg root = PROG(0,
		{ .number = 5, .action = FG_PBWIRE_DROP_KEYS, .keys = &sk, .stat = 0 },
		{ .number = 6, .action = FG_PBWIRE_DROP_KEYS, .keys = &csk, .stat = 1 },
		{ .number = 7, .action = FG_PBWIRE_DROP_KEYS, .keys = &nk, .stat = 2 },
		{ .number = 8, .action = FG_PBWIRE_DROP_KEYS, .keys = &nk, .stat = 3,
		  .scalar = FG_PBWIRE_S_SINT32 },
		{ .number = 9, .action = FG_PBWIRE_DROP_KEYS, .keys = NULL, .stat = 4 });
	struct msg *in = msg_new(), *want = msg_new();
	struct msg e = { .n = 0 };
	struct run run;

	entry_str(in, 5, "views", 3);
	entry_str(in, 5, "likes", 4);
	entry_str(want, 5, "likes", 4);
	entry_str(in, 5, NULL, 5);              /* no key: "" */
	entry_str(in, 5, "dwell_ms", 6);
	f_str(&e, 1, "dwell_ms");               /* key twice: the last one counts */
	f_str(&e, 1, "kept");
	f_varint(&e, 2, 7);
	f_msg(in, 5, &e);
	f_msg(want, 5, &e);
	entry_str(in, 6, "views", 1);
	entry_str(in, 6, "view", 1);
	entry_str(want, 6, "view", 1);

	entry_num(in, 7, 1, (uint64_t)(int64_t)-1, "neg");      /* int32 -1, 10 bytes */
	entry_num(in, 7, 0, 0, "zero");                         /* no key: 0 */
	entry_num(in, 7, 1, 42, "x");
	entry_num(in, 7, 1, 43, "y");
	entry_num(want, 7, 1, 43, "y");
	entry_num(in, 8, 1, zz(-1), "minus one");               /* 1 on the wire */
	entry_num(in, 8, 1, zz(0), "zero");
	entry_num(in, 8, 1, zz(1), "one");                      /* 2 on the wire: kept */
	entry_num(want, 8, 1, zz(1), "one");
	entry_num(in, 9, 1, 1, "no keys");
	entry_num(want, 9, 1, 1, "no keys");
	edit_expect(in, &root, want, &run);
	assert_true(run.stats[0] == 3 && run.stats[1] == 1 && run.stats[2] == 3 &&
	            run.stats[3] == 2 && run.stats[4] == 0);

	/* a key of the wrong wire type is malformed */
	in->n = 0;
	entry_num(in, 5, 1, 1, "int key in a string map");
	edit_invalid(in, &root);
	in->n = 0;
	entry_str(in, 7, "string key in an int map", 1);
	edit_invalid(in, &root);
	free(in);
	free(want);
}

static void test_pbwire_stats_bounds(void **state)
{
	const struct fg_pbwire_msg root = PROG(0, DROP(1, 0), DROP(2, NSTATS), DROP(3, 7));
	struct msg *in = msg_new(), *want = msg_new();
	struct fg_bufq out = { 0 };
	uint64_t one[1] = { 0 };
	struct run run;
	int changed;

	f_varint(in, 1, 1);
	f_varint(in, 2, 1);
	f_varint(in, 3, 1);
	f_varint(in, 1, 1);
	f_varint(in, 4, 1);
	f_varint(want, 4, 1);
	edit_expect(in, &root, want, &run);
	assert_true(run.stats[0] == 2 && run.stats[7] == 1);
	/* a counter array shorter than the stat indexes: those are ignored */
	assert_int_equal(fg_pbwire_edit(in->b, in->n, &root, &out, one, 1, &changed, NULL), 0);
	assert_true(one[0] == 2 && changed == 1);
	fg_bufq_free(&out);
	free(in);
	free(want);
}

static void test_pbwire_malformed(void **state)
{
	const struct fg_pbwire_msg leaf = PROG(0, DROP(1, 0));
	const struct fg_pbwire_msg mid = PROG(0, RECURSE(1, &leaf, 0));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(1, &mid, 0), COARSEN(2, INT32, 10, 0),
	                                              COARSEN(3, DOUBLE, 1, 0), RECURSE(4, NULL, 0));
	static const struct {
		const char *hex;
		const char *what;
	} cases[] = {
		{ "2880", "truncated varint value" },
		{ "28ffffffffffffffffffff01", "varint above 64 bits" },
		{ "2a", "truncated length" },
		{ "2a05616263", "length past the end" },
		{ "0005", "field number 0" },
		{ "2e", "wire type 6" },
		{ "2c", "end group without a start" },
		{ "2b2805", "group without an end" },
		{ "2b2805" "34", "group closed by another field's end" },
		{ "190000", "truncated fixed64" },
		{ "0a03ffffff", "RECURSE into bytes that are not a message" },
		{ "0a04" "0a02" "0a80", "malformed three levels down" },
		{ "0801", "RECURSE on a varint" },
		{ "1501000000", "COARSEN int32 given an I32" },
		{ "1801", "COARSEN double given a varint" },
		{ "1a03010203", "packed double not a multiple of 8" },
		{ "1203ffffff", "packed int32 with a truncated varint" },
		{ "2202" "08ff", "RECURSE NULL sub, content not a message" },
	};
	struct msg m;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		m.n = 0;
		f_str(&m, 9, "ok before");              /* the error is not at the first byte */
		put_hex(&m, cases[i].hex);
		print_message("case %zu: %s\n", i, cases[i].what);
		edit_invalid(&m, &root);
	}
}

static void test_pbwire_bad_program(void **state)
{
	const struct fg_pbwire_msg unknown_action = PROG(0, { .number = 1, .action = 42 });
	const struct fg_pbwire_msg no_scalar = PROG(0, COARSEN(1, NONE, 10, 0));
	const struct fg_pbwire_msg float_keys = PROG(0, { .number = 1,
		.action = FG_PBWIRE_DROP_KEYS, .scalar = FG_PBWIRE_S_DOUBLE,
		.keys = &(const struct fg_pbwire_keys){ .n = 1, .num = (const int64_t[]){ 1 } } });
	struct msg m = { .n = 0 };

	f_varint(&m, 1, 1);
	edit_invalid(&m, &unknown_action);
	edit_invalid(&m, &no_scalar);
	m.n = 0;
	entry_num(&m, 1, 1, 1, "v");
	edit_invalid(&m, &float_keys);
}

/* A program that points to itself (a recursive message type): nesting
 * stops at FG_PBWIRE_MAX_DEPTH levels below the root. */
static const struct fg_pbwire_msg self_prog;
static const struct fg_pbwire_rule self_rules[] = { RECURSE(1, &self_prog, UINT32_MAX), DROP(2, 0) };
static const struct fg_pbwire_msg self_prog = { .unlisted_stat = UINT32_MAX, .nrules = 2,
                                                .rules = self_rules };

/* <levels> messages in field 1 of each other around an innermost one
 * holding field <inner> (none when 0). */
static void nest(struct msg *m, int levels, uint32_t inner)
{
	struct msg *t = msg_new();

	m->n = 0;
	if (inner != 0)
		f_varint(m, inner, 1);
	while (levels-- > 0) {
		t->n = 0;
		f_msg(t, 1, m);
		*m = *t;
	}
	free(t);
}

static void test_pbwire_depth_limit(void **state)
{
	struct msg *in = msg_new(), *want = msg_new();
	struct run run;

	nest(in, FG_PBWIRE_MAX_DEPTH, 2);
	nest(want, FG_PBWIRE_MAX_DEPTH, 0);
	edit_expect(in, &self_prog, want, &run);
	assert_true(run.stats[0] == 1);
	nest(in, FG_PBWIRE_MAX_DEPTH, 3);       /* unchanged: still parsed all the way */
	edit_expect(in, &self_prog, in, &run);
	nest(in, FG_PBWIRE_MAX_DEPTH + 1, 3);
	edit_invalid(in, &self_prog);
	free(in);
	free(want);
}

/*
 * The editor reads the common encodings on an inlined fast path and hands
 * everything else to the general reader: one-byte and longer tags,
 * varints of every length, lengths of one, two and three bytes, and fields
 * out of number order must all be edited the same way, whichever path
 * reads them.
 */
static void test_pbwire_encoding_edges(void **state)
{
	const struct fg_pbwire_msg inner = PROG(0, DROP(1, 1));
	const struct fg_pbwire_msg root = PROG(0, COARSEN(2, UINT64, 10, 0), RECURSE(3, &inner, 2),
	                                       DROP(5, 3), DROP(9, 3), DROP(20, 3));
	static const size_t fills[] = { 100, 126, 127, 128, 16381, 16382, 16383, 16384, 20000 };
	struct msg *in = msg_new(), *want = msg_new(), *sub = msg_new(), *subw = msg_new();
	static uint8_t filler[20000];
	struct run run;
	uint64_t v, changed = 0, nstripped = 0;
	size_t i;
	int k;

	/* varints of 1 to 10 bytes, each rounded to a multiple of 10 */
	for (k = 0; k < 64; k += 7) {
		v = (UINT64_C(1) << k) + 3;
		f_varint(in, 2, v);
		f_varint(want, 2, v - v % 10 + (v % 10 >= 5 ? 10 : 0));
		changed += v % 10 != 0;
	}
	f_varint(in, 2, UINT64_MAX - 1);        /* 10 bytes, the last one 0x01 */
	f_varint(want, 2, UINT64_MAX - 5);      /* rounding up would wrap: rounds down */
	put_hex(in, "10" "80808080808080808000");       /* 0 in 10 bytes: kept as it came */
	put_hex(want, "10" "80808080808080808000");
	put_hex(in, "9000" "07");               /* field 2 in a two-byte tag: 7 becomes 10 */
	put_hex(want, "9000" "0a");
	edit_expect(in, &root, want, &run);
	assert_int_equal(run.stats[0], changed + 2);

	/* sub-messages whose length takes 1, 2 or 3 bytes before the edit and
	 * maybe fewer after it */
	memset(filler, 'x', sizeof(filler));
	for (i = 0; i < sizeof(fills) / sizeof(fills[0]); i++) {
		in->n = want->n = sub->n = subw->n = 0;
		f_str(sub, 1, "drop me");
		f_bytes(sub, 2, filler, fills[i]);
		f_bytes(subw, 2, filler, fills[i]);
		f_msg(in, 3, sub);
		f_msg(want, 3, subw);
		f_str(in, 4, "after");
		f_str(want, 4, "after");
		print_message("fill %zu\n", fills[i]);
		edit_expect(in, &root, want, &run);
		assert_true(run.stats[1] == 1 && run.stats[2] == 1);
	}

	/* siblings whose lengths need 1, 2 or 3 bytes, changed or not, one of
	 * them with a non-minimal length: each must come out right whatever
	 * the sibling before it needed */
	in->n = want->n = 0;
	for (k = 0; k < 18; k++) {
		size_t fill = fills[k % 9];
		int strip = (k / 9 + k) % 2;

		sub->n = subw->n = 0;
		if (strip) {
			f_str(sub, 1, "drop me");
			nstripped++;
		}
		f_bytes(sub, 2, filler, fill);
		f_bytes(subw, 2, filler, fill);
		if (k == 2) {                   /* unchanged, length in 3 bytes where 1 would do */
			assert_true(sub->n < 16384);
			put_tag(in, 3, FG_PBWIRE_LEN);
			put_raw(in, (uint8_t[]){ (uint8_t)(sub->n | 0x80), (uint8_t)(sub->n >> 7 | 0x80), 0 }, 3);
			put_raw(in, sub->b, sub->n);
			put_tag(want, 3, FG_PBWIRE_LEN);
			put_raw(want, (uint8_t[]){ (uint8_t)(sub->n | 0x80), (uint8_t)(sub->n >> 7 | 0x80), 0 }, 3);
			put_raw(want, sub->b, sub->n);
			continue;
		}
		f_msg(in, 3, sub);
		f_msg(want, 3, subw);
	}
	edit_expect(in, &root, want, &run);
	assert_int_equal(run.stats[2], nstripped);

	/* a short last item after a sibling whose length needed more bytes:
	 * the room left for the guess must not be read from the input */
	in->n = want->n = sub->n = subw->n = 0;
	f_bytes(sub, 4, filler, 130);
	f_str(sub, 1, "x");                     /* dropped: 133 bytes left, a 2-byte length */
	f_bytes(subw, 4, filler, 130);
	f_msg(in, 3, sub);
	f_msg(want, 3, subw);
	put_hex(in, "1a00");                    /* the input ends with an empty item */
	put_hex(want, "1a00");
	edit_expect(in, &root, want, &run);
	in->n = want->n = 0;
	put_hex(in, "1a828000" "1001" "1a00");  /* unchanged with a 3-byte length, then an empty item */
	put_hex(want, "1a828000" "1001" "1a00");
	edit_expect(in, &root, want, &run);

	/* fields out of number order, and a field number of two tag bytes */
	in->n = want->n = 0;
	for (k = 0; k < 2; k++) {
		f_str(in, 20, "twenty");
		f_str(in, 9, "nine");
		f_varint(in, 7, 7);
		f_str(in, 5, "five");
		f_str(in, 1, "one");
		f_varint(in, 5, 5);
		f_str(in, 17, "seventeen");
		f_str(in, 9, "nine");
		f_varint(want, 7, 7);
		f_str(want, 1, "one");
		f_str(want, 17, "seventeen");
	}
	edit_expect(in, &root, want, &run);
	assert_int_equal(run.stats[3], 10);
	free(in);
	free(want);
	free(sub);
	free(subw);
}

/* Appended after a message, a field at a path sets it: the last value
 * wins at every depth, the message's other fields are untouched. */
static void test_pbwire_append_varint_at(void **state)
{
	static const uint32_t size[] = { 3, 2 };
	static const uint32_t deep[] = { 3, 4, 300 };
	static const uint32_t top[] = { 5 };
	struct msg *in = msg_new(), *ctx = msg_new();
	struct fg_pbwire_field f;
	struct fg_bufq q;

	fg_bufq_init(&q);
	f_varint(ctx, 2, 10);
	f_msg(in, 3, ctx);
	f_str(in, 1, "u-1");
	assert_int_equal(fg_bufq_append(&q, in->b, in->n), 0);
	assert_int_equal(fg_pbwire_append_varint_at(&q, size, 2, 15), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&q), fg_bufq_len(&q), size, 2, &f, NULL), 0);
	assert_true(f.wire_type == FG_PBWIRE_VARINT && f.varint == 15);
	assert_int_equal(fg_pbwire_append_varint_at(&q, deep, 3, UINT64_MAX), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&q), fg_bufq_len(&q), deep, 3, &f, NULL), 0);
	assert_true(f.wire_type == FG_PBWIRE_VARINT && f.varint == UINT64_MAX);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&q), fg_bufq_len(&q), size, 2, &f, NULL), 0);
	assert_true(f.varint == 15);
	assert_int_equal(fg_pbwire_append_varint_at(&q, top, 1, 7), 0);
	assert_int_equal(fg_pbwire_find(fg_bufq_head(&q), fg_bufq_len(&q), top, 1, &f, NULL), 0);
	assert_true(f.varint == 7);
	assert_int_equal(fg_pbwire_append_varint_at(&q, top, 0, 7), FG_EINVAL);
	assert_int_equal(fg_pbwire_append_varint_at(&q, top, FG_PBWIRE_MAX_DEPTH + 1, 7), FG_EINVAL);
	fg_bufq_free(&q);
	free(in);
	free(ctx);
}

static void test_pbwire_find(void **state)
{
	static const uint32_t user[] = { 1 };
	static const uint32_t band[] = { 3, 2 };
	static const uint32_t deep[] = { 3, 4, 1 };
	static const uint32_t bad_path[] = { 1, 1 };
	static const uint32_t through_varint[] = { 3, 2, 1 };
	struct msg *in = msg_new(), *ctx = msg_new();
	struct fg_pbwire_field f;
	const char *why = NULL;

	f_str(in, 1, "u-1");
	f_varint(ctx, 2, 2);                    /* age band enum */
	f_msg(in, 3, ctx);
	f_str(in, 1, "u-2");                    /* singular field twice: the last one counts */
	ctx->n = 0;
	f_str(ctx, 9, "other");                 /* a later occurrence of the parent without it */
	f_msg(in, 3, ctx);

	assert_int_equal(fg_pbwire_find(in->b, in->n, user, 1, &f, &why), 0);
	assert_true(f.wire_type == FG_PBWIRE_LEN && f.vlen == 3);
	assert_memory_equal(f.value, "u-2", 3);
	assert_int_equal(fg_pbwire_find(in->b, in->n, band, 2, &f, &why), 0);
	assert_true(f.wire_type == FG_PBWIRE_VARINT && f.varint == 2);
	/* a later parent that sets it again wins (messages merge) */
	ctx->n = 0;
	f_varint(ctx, 2, 1);
	f_msg(in, 3, ctx);
	assert_int_equal(fg_pbwire_find(in->b, in->n, band, 2, &f, &why), 0);
	assert_true(f.varint == 1);
	assert_int_equal(fg_pbwire_find(in->b, in->n, deep, 3, &f, &why), FG_ENOTFOUND);
	assert_int_equal(fg_pbwire_find(NULL, 0, user, 1, &f, &why), FG_ENOTFOUND);

	why = NULL;
	assert_int_equal(fg_pbwire_find(in->b, in->n, user, 0, &f, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_pbwire_find(in->b, in->n, user, FG_PBWIRE_MAX_DEPTH + 1, &f, NULL),
	                 FG_EINVAL);
	/* field 1 is a string that does not parse as a message; 3.2 is a varint */
	assert_int_equal(fg_pbwire_find(in->b, in->n, bad_path, 2, &f, &why), FG_EINVAL);
	why = NULL;
	assert_int_equal(fg_pbwire_find(in->b, in->n, through_varint, 3, &f, &why), FG_EINVAL);
	assert_string_equal(why, "a field on the path is not a message");
	/* malformed after the field: the whole level is checked */
	put_hex(in, "0a05");
	assert_int_equal(fg_pbwire_find(in->b, in->n, user, 1, &f, &why), FG_EINVAL);
	free(in);
	free(ctx);
}

/*
 * Vectors from python3-protobuf 3.21 (SerializeToString(deterministic=True))
 * for this proto3 schema:
 *   message Geo { double lat = 1; double lon = 2; float acc = 3; }
 *   message Signal { string name = 1; int32 score = 2; sint64 delta = 3; }
 *   message Req { string user_id = 1; int32 age = 2; Geo geo = 3;
 *     repeated Signal signals = 4; map<string, int64> counters = 5;
 *     repeated int32 hist = 6; map<int32, string> tags = 7; sint32 offset = 8;
 *     repeated sint32 deltas = 9 [packed = false]; repeated double dists = 10; }
 * IN: user_id "u-42", age -7, geo {48.8566, 2.3522, 17.5}, signals
 * [{watch, -15, -3}, {like, 25, 7}], counters {views: 3}, hist [14, 15, -15,
 * 127, 0], tags {-1: neg}, offset -33, deltas [-5, 5], dists [1.25, -2.5].
 * NOGEO: the same without geo.  COARSE: age, scores, hist, offset and
 * deltas to multiples of 10 and dists of 1 (python computed the values).
 */
#define PY_IN "0a04752d343210f9ffffffffffffffff011a170976e09c11a56d484011a835cd3b4ed102401d00008c41" \
	"22140a05776174636810f1ffffffffffffffff011805220a0a046c696b651019180e2a090a057669657773" \
	"1003320e0e0ff1ffffffffffffffff017f003a1008ffffffffffffffffff0112036e656740414809480a52" \
	"10000000000000f43f00000000000004c0"
#define PY_NOGEO "0a04752d343210f9ffffffffffffffff0122140a05776174636810f1ffffffffffffffff01180522" \
	"0a0a046c696b651019180e2a090a0576696577731003320e0e0ff1ffffffffffffffff017f003a1008ffff" \
	"ffffffffffffff0112036e656740414809480a5210000000000000f43f00000000000004c0"
#define PY_COARSE "0a04752d343210f6ffffffffffffffff011a170976e09c11a56d484011a835cd3b4ed102401d0000" \
	"8c4122140a05776174636810ecffffffffffffffff011805220a0a046c696b65101e180e2a090a05766965" \
	"77731003320f0a14ecffffffffffffffff018201003a1008ffffffffffffffffff0112036e6567403b4813" \
	"48145210000000000000f03f00000000000008c0"

static void test_pbwire_python_vectors(void **state)
{
	const struct fg_pbwire_msg signal = PROG(0, COARSEN(2, INT32, 10, 0));
	const struct fg_pbwire_msg coarse = PROG(0, COARSEN(2, INT32, 10, 0),
	                                                RECURSE(4, &signal, UINT32_MAX),
	                                                COARSEN(6, INT32, 10, 0),
	                                                COARSEN(8, SINT32, 10, 0),
	                                                COARSEN(9, SINT32, 10, 0),
	                                                COARSEN(10, DOUBLE, 1, 0));
	const struct fg_pbwire_msg nogeo = PROG(0, DROP(3, 0));
	static const uint32_t user[] = { 1 };
	struct msg *in = msg_new(), *want = msg_new();
	struct fg_pbwire_field f;
	struct run run;

	put_hex(in, PY_IN);
	put_hex(want, PY_NOGEO);
	edit_expect(in, &nogeo, want, &run);
	want->n = 0;
	put_hex(want, PY_COARSE);
	edit_expect(in, &coarse, want, &run);
	/* age, 2 scores, 4 of 5 hist elements, offset, 2 deltas, 2 dists */
	assert_true(run.stats[0] == 12);
	assert_int_equal(fg_pbwire_find(in->b, in->n, user, 1, &f, NULL), 0);
	assert_memory_equal(f.value, "u-42", 4);
	free(in);
	free(want);
}

/* ---- REPLACE: per-call values (fg_pbwire_edit_ex) ---- */

#define REPLACE(num, a, st) { .number = (num), .action = FG_PBWIRE_REPLACE, .arg = (a), .stat = (st) }

/*
 * edit_expect() for fg_pbwire_edit_ex() with <ctx>: the result is <want>,
 * editing it again with the same values changes nothing, and the indexed
 * program does the same.
 */
static void replace_expect(const struct msg *in, const struct fg_pbwire_msg *prog, const struct fg_pbwire_ctx *ctx,
                           const struct msg *want, struct run *run)
{
	struct fg_bufq out = { 0 }, again = { 0 };
	uint64_t stats2[NSTATS] = { 0 };
	uint8_t *exact = exact_copy(in);
	struct icopy ic = { .n = 0 };
	const char *why = NULL;
	int changed = -1;

	prefixed(&out);
	memset(run, 0, sizeof(*run));
	run->changed = -1;
	assert_int_equal(fg_pbwire_edit_ex(exact, in->n, prog, ctx, &out, run->stats, NSTATS, &run->changed, &why),
	                 0);
	assert_memory_equal(fg_bufq_head(&out), "PFX", 3);
	assert_int_equal(fg_bufq_len(&out) - 3, want->n);
	assert_memory_equal(fg_bufq_head(&out) + 3, want->b, want->n);
	assert_int_equal(run->changed, in->n != want->n || memcmp(in->b, want->b, in->n) != 0);

	assert_int_equal(fg_pbwire_edit_ex(fg_bufq_head(&out) + 3, fg_bufq_len(&out) - 3, prog, ctx, &again, stats2,
	                                   NSTATS, &changed, &why), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(fg_bufq_len(&again), want->n);
	memset(stats2, 0, sizeof(stats2));
	fg_bufq_clear(&again);
	assert_int_equal(fg_pbwire_edit_ex(exact, in->n, index_copy(&ic, prog), ctx, &again, stats2, NSTATS,
	                                   &changed, &why), 0);
	assert_int_equal(changed, run->changed);
	assert_int_equal(fg_bufq_len(&again), want->n);
	assert_memory_equal(fg_bufq_head(&again), want->b, want->n);
	assert_memory_equal(stats2, run->stats, sizeof(stats2));
	icopy_free(&ic);
	free(exact);
	fg_bufq_free(&again);
	fg_bufq_free(&out);
}

static void test_pbwire_replace(void **state)
{
	static const char key[] = "k1:0123456789abcdef";
	const struct fg_pbwire_msg sig = PROG(0, REPLACE(1, 0, 1));
	const struct fg_pbwire_msg root = PROG(0, REPLACE(1, 0, 0), RECURSE(4, &sig, UINT32_MAX), REPLACE(5, 1, 2));
	const struct fg_pbwire_msg allow = PROG(1, REPLACE(1, 0, 0));
	struct fg_pbwire_value vals[2] = { { (const uint8_t *)key, sizeof(key) - 1 }, { NULL, 0 } };
	struct fg_pbwire_ctx ctx = { vals, 2 }, one = { vals, 1 };
	struct msg *in = msg_new(), *want = msg_new(), *s = msg_new(), *sw = msg_new();
	char big[300];
	struct run run;

	f_str(s, 1, "raw-user-7");
	f_varint(s, 2, 9);
	f_str(sw, 1, key);
	f_varint(sw, 2, 9);
	f_str(in, 1, "raw-user-7");
	f_msg(in, 4, s);
	f_msg(in, 4, s);
	f_str(in, 1, "raw-user-7");             /* a second occurrence is replaced too */
	f_str(in, 5, "other");                  /* arg 1 has no value: dropped */
	f_str(in, 99, "unknown");
	f_str(want, 1, key);
	f_msg(want, 4, sw);
	f_msg(want, 4, sw);
	f_str(want, 1, key);
	f_str(want, 99, "unknown");
	replace_expect(in, &root, &ctx, want, &run);
	assert_int_equal(run.changed, 1);
	assert_true(run.stats[0] == 2 && run.stats[1] == 2 && run.stats[2] == 1);
	/* arg beyond the values given: dropped the same way */
	replace_expect(in, &root, &one, want, &run);
	assert_true(run.stats[0] == 2 && run.stats[2] == 1);

	/* the value already there: copied as it came, nothing counted */
	in->n = 0;
	f_str(in, 1, key);
	f_str(in, 99, "u");
	replace_expect(in, &root, &ctx, in, &run);
	assert_int_equal(run.changed, 0);
	assert_int_equal(run.stats[0], 0);

	/* no values at all (fg_pbwire_edit, or a NULL ctx): the field goes */
	in->n = want->n = 0;
	f_str(in, 1, "raw-user-7");
	f_varint(in, 2, 3);
	f_varint(want, 2, 3);
	replace_expect(in, &root, NULL, want, &run);
	assert_int_equal(run.stats[0], 1);
	edit_expect(in, &root, want, &run);
	assert_int_equal(run.stats[0], 1);

	/* an allow-list keeps what it replaces, and nothing else */
	in->n = want->n = 0;
	f_varint(in, 2, 3);
	f_str(in, 1, "");
	f_str(want, 1, key);
	replace_expect(in, &allow, &ctx, want, &run);

	/* an empty value, and one whose length takes two bytes */
	memset(big, 'h', sizeof(big));
	vals[0].data = (const uint8_t *)big;
	vals[0].len = sizeof(big);
	in->n = want->n = 0;
	f_str(in, 1, "x");
	f_bytes(want, 1, big, sizeof(big));
	replace_expect(in, &root, &ctx, want, &run);
	vals[0].len = 0;
	want->n = 0;
	f_str(want, 1, "");
	replace_expect(in, &root, &ctx, want, &run);

	/* a REPLACE field that is not LEN: malformed, never passed or guessed at */
	in->n = 0;
	f_varint(in, 1, 42);
	{
		struct fg_bufq out = { 0 };
		const char *why = NULL;
		int changed = 5;

		prefixed(&out);
		assert_int_equal(fg_pbwire_edit_ex(in->b, in->n, &root, &ctx, &out, NULL, 0, &changed, &why), FG_EINVAL);
		assert_string_equal(why, "REPLACE field is not length-delimited");
		assert_int_equal(fg_bufq_len(&out), 3);
		assert_int_equal(changed, 5);
		fg_bufq_free(&out);
	}
	free(in);
	free(want);
	free(s);
	free(sw);
}

/* Fail each realloc of an edit in turn: FG_ENOMEM, <out> as it was, no
 * leak (valgrind or LSan checks that part). */
static void test_pbwire_enomem(void **state)
{
	const struct fg_pbwire_msg sub = PROG(0, COARSEN(1, UINT32, 2, 0));
	const struct fg_pbwire_msg root = PROG(0, RECURSE(2, &sub, 1));
	struct msg *in = msg_new(), *s = msg_new();
	struct fg_bufq out = { 0 };
	const char *why;
	long n;
	int i, rv, changed;

	/* 400 values of 127 become 128 and grow a byte each: 803 bytes in,
	 * 1203 out, past the 1024 reserved from the input length, so the
	 * edit reallocates once up front and once on the way */
	for (i = 0; i < 400; i++)
		f_varint(s, 1, 127);
	f_msg(in, 2, s);
	assert_int_equal(in->n, 803);
	for (n = 0;; n++) {
		realloc_fail_at = n;
		realloc_calls = 0;
		why = NULL;
		changed = -1;
		rv = fg_pbwire_edit(in->b, in->n, &root, &out, NULL, 0, &changed, &why);
		realloc_fail_at = -1;
		if (rv == 0)
			break;
		assert_int_equal(rv, FG_ENOMEM);
		assert_string_equal(why, "out of memory");
		assert_int_equal(fg_bufq_len(&out), 0);
		assert_int_equal(changed, -1);
		fg_bufq_free(&out);
	}
	assert_int_equal(n, 2);
	assert_int_equal(realloc_calls, 2);
	assert_true(changed == 1 && fg_bufq_len(&out) == in->n + 400);
	fg_bufq_free(&out);

	/* a failure with bytes already in <out>, its head not at the front,
	 * keeps them */
	assert_int_equal(fg_bufq_append(&out, "..keep", 6), 0);
	fg_bufq_consume(&out, 2);
	realloc_fail_at = 0;
	rv = fg_pbwire_edit(in->b, in->n, &root, &out, NULL, 0, &changed, NULL);
	realloc_fail_at = -1;
	assert_int_equal(rv, FG_ENOMEM);
	assert_true(fg_bufq_len(&out) == 4 && memcmp(fg_bufq_head(&out), "keep", 4) == 0);
	fg_bufq_free(&out);
	free(in);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pbwire_varint),
		cmocka_unit_test(test_pbwire_tag),
		cmocka_unit_test(test_pbwire_skip),
		cmocka_unit_test(test_pbwire_next_field),
		cmocka_unit_test(test_pbwire_out_not_at_front),
		cmocka_unit_test(test_pbwire_identity),
		cmocka_unit_test(test_pbwire_drop),
		cmocka_unit_test(test_pbwire_drop_in_repeated),
		cmocka_unit_test(test_pbwire_length_propagates),
		cmocka_unit_test(test_pbwire_allow_only),
		cmocka_unit_test(test_pbwire_keep_checks_type),
		cmocka_unit_test(test_pbwire_coarsen_repeated),
		cmocka_unit_test(test_pbwire_coarsen_kinds),
		cmocka_unit_test(test_pbwire_map_recurse),
		cmocka_unit_test(test_pbwire_map_drop_keys),
		cmocka_unit_test(test_pbwire_replace),
		cmocka_unit_test(test_pbwire_stats_bounds),
		cmocka_unit_test(test_pbwire_malformed),
		cmocka_unit_test(test_pbwire_bad_program),
		cmocka_unit_test(test_pbwire_depth_limit),
		cmocka_unit_test(test_pbwire_encoding_edges),
		cmocka_unit_test(test_pbwire_find),
		cmocka_unit_test(test_pbwire_append_varint_at),
		cmocka_unit_test(test_pbwire_python_vectors),
		cmocka_unit_test(test_pbwire_enomem),
	};
	return cmocka_run_group_tests_name("pbwire", tests, NULL, NULL);
}
