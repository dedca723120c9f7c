/*
 * fuzz_grpcframe.c - libFuzzer target for the gRPC message reader and the
 * per-message inflater.
 *
 * Input: [max_message/32] [max_out/64] [encoding] [ncuts] [ncuts x 2-byte cut
 * positions] then the DATA bytes of one stream.  The stream is fed once as a
 * single chunk and once cut at the given positions, each chunk copied into a
 * buffer of its exact size and freed right after (so ASan sees any read past
 * a chunk, and any message kept beyond the feed that handed it out).
 * Besides "no crash, no leak" it checks the promises of fg_grpcframe.h:
 *   - both feedings give the same messages, the same error and consume the
 *     same bytes (DATA frame boundaries must not matter);
 *   - the messages, framed again, are exactly the input bytes before the
 *     partial or failed message, and pending() counts the rest;
 *   - inflate through a reused context and through a one-shot stream agree,
 *     never append more than max_out, leave <out> unchanged on error, and
 *     what they produce survives a deflate/inflate round trip;
 *   - the header parsers agree with each other and with the encoding names.
 *
 * Build (after configure, for config.h):
 *   clang -g -std=c11 -fsanitize=fuzzer,address,undefined -I. -Idaemon \
 *     tests/fuzz/fuzz_grpcframe.c daemon/fg_grpcframe.c daemon/fg_bufq.c -lz
 * Run:   ./fuzz_grpcframe -max_total_time=120 new_corpus_dir tests/fuzz/corpus/grpcframe
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_error.h"
#include "fg_grpcframe.h"

#define HDR_LEN 4
#define MAX_CUTS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct pass {
	struct fg_bufq msgs;            /* every message, framed again */
	size_t used;                    /* stream bytes consumed */
	size_t pending;                 /* reader_pending() at the end */
	int rc;                         /* first error, or 0 */
};

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Feed one chunk to the end or to the first error. */
static void feed_chunk(struct fg_grpcframe_reader *r, const uint8_t *p, size_t len, struct pass *ps)
{
	struct fg_grpcframe_msg msg;
	const char *why = NULL;
	size_t used;
	int rc;

	do {
		rc = fg_grpcframe_reader_feed(r, p, len, &used, &msg, &why);
		check(used <= len);
		ps->used += used;
		if (rc < 0) {
			check(why != NULL);
			ps->rc = rc;
			return;
		}
		if (used) /* p may be NULL with len 0 */
			p += used;
		len -= used;
		if (rc == FG_GRPCFRAME_MESSAGE)
			check(fg_grpcframe_append(&ps->msgs, msg.flag, msg.data, msg.len) == 0);
		else
			check(len == 0 && rc == FG_GRPCFRAME_NEED_MORE);
	} while (len > 0);
}

static void run_whole(const uint8_t *s, size_t len, size_t max_message, struct pass *ps)
{
	struct fg_grpcframe_reader r;

	fg_grpcframe_reader_init(&r, max_message);
	feed_chunk(&r, s, len, ps);
	ps->pending = fg_grpcframe_reader_pending(&r);
	fg_grpcframe_reader_free(&r);
}

static void run_cut(const uint8_t *s, size_t len, size_t max_message, const size_t *cuts,
                    size_t ncuts, struct pass *ps)
{
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	size_t i, from = 0, to, used;
	uint8_t *chunk;

	fg_grpcframe_reader_init(&r, max_message);
	for (i = 0; i <= ncuts && ps->rc == 0; i++) {
		to = i < ncuts ? cuts[i] : len;
		chunk = to > from ? malloc(to - from) : NULL;
		check(chunk != NULL || to == from);
		if (chunk)
			memcpy(chunk, s + from, to - from);
		feed_chunk(&r, chunk, to - from, ps);
		free(chunk);
		from = to;
	}
	ps->pending = fg_grpcframe_reader_pending(&r);
	if (ps->rc < 0 && from < len) {
		/* errors are sticky: nothing more is taken */
		check(fg_grpcframe_reader_feed(&r, s + from, len - from, &used, &msg, NULL) == ps->rc);
		check(used == 0);
	}
	fg_grpcframe_reader_free(&r);
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* A context reused across inputs, like a worker's: stale state would show. */
static struct fg_grpcframe_zctx *shared_z;

static void check_inflate(enum fg_grpcframe_enc enc, const uint8_t *m, size_t len, size_t max_out)
{
	struct fg_bufq a, b, c;
	size_t n;
	int rc1, rc2;

	fg_bufq_init(&a);
	fg_bufq_init(&b);
	fg_bufq_init(&c);
	/* something already there, after a consumed byte: <b>'s head is not at
	 * the front of its memory */
	check(fg_bufq_append(&b, "#", 1) == 0);
	check(fg_grpcframe_append(&b, FG_GRPCFRAME_UNCOMPRESSED, NULL, 0) == 0);
	fg_bufq_consume(&b, 1);
	rc1 = fg_grpcframe_inflate(shared_z, enc, m, len, max_out, &a, NULL);
	rc2 = fg_grpcframe_inflate(NULL, enc, m, len, max_out, &b, NULL);
	check(rc1 == rc2);
	check(rc1 == 0 || rc1 == FG_EINVAL || rc1 == FG_ETOOBIG);
	n = fg_bufq_len(&a);
	if (rc1 == 0) {
		check(n <= max_out && fg_bufq_len(&b) == n + FG_GRPC_PREFIX_LEN);
		check(n == 0 || memcmp(fg_bufq_head(&a), fg_bufq_head(&b) + FG_GRPC_PREFIX_LEN, n) == 0);
		check(fg_grpcframe_deflate(enc, fg_bufq_head(&a), n, &c) == 0);
		fg_bufq_truncate(&b, 0);
		check(fg_grpcframe_inflate(shared_z, enc, fg_bufq_head(&c), fg_bufq_len(&c), n, &b, NULL) == 0);
		check(fg_bufq_len(&b) == n && (n == 0 || memcmp(fg_bufq_head(&a), fg_bufq_head(&b), n) == 0));
	} else {
		check(n == 0 && fg_bufq_len(&b) == FG_GRPC_PREFIX_LEN);
	}
	fg_bufq_free(&a);
	fg_bufq_free(&b);
	fg_bufq_free(&c);
}

/* The header parsers on a message's bytes, as if it were a header value. */
static void check_headers(const uint8_t *m, size_t len)
{
	enum fg_grpcframe_enc enc;
	unsigned mask = fg_grpcframe_accept_parse((const char *)m, len);
	int rc = fg_grpcframe_encoding_parse((const char *)m, len, &enc);

	check((mask & ~FG_GRPCFRAME_ENC_ALL) == 0);
	check(mask & FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_IDENTITY));
	check(rc == 0 || rc == FG_EINVAL || rc == FG_ENOTFOUND);
	if (rc == 0) {
		/* one name alone: the list parser must find it too */
		check(fg_grpcframe_encoding_name(enc) != NULL);
		check(mask & FG_GRPCFRAME_ENC_BIT(enc));
		check(memmem(m, len, fg_grpcframe_encoding_name(enc),
		             strlen(fg_grpcframe_encoding_name(enc))) != NULL);
	}
}

/* Walk the framed messages of <ps> and inflate each with <enc>. */
static void check_messages(const struct pass *ps, enum fg_grpcframe_enc enc, size_t max_out)
{
	const uint8_t *p = fg_bufq_head(&ps->msgs), *end;
	uint32_t len;

	if (fg_bufq_len(&ps->msgs) == 0)
		return;
	end = p + fg_bufq_len(&ps->msgs);
	while (p < end) {
		len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
		check(p[0] <= FG_GRPCFRAME_COMPRESSED && len <= (size_t)(end - p) - FG_GRPC_PREFIX_LEN);
		check_inflate(enc, p + FG_GRPC_PREFIX_LEN, len, max_out);
		check_headers(p + FG_GRPC_PREFIX_LEN, len);
		p += FG_GRPC_PREFIX_LEN + len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pass whole = { 0 }, cut = { 0 };
	size_t cuts[MAX_CUTS], ncuts, i, max_message, max_out, len, n;
	enum fg_grpcframe_enc enc;
	const uint8_t *s;

	if (size < HDR_LEN)
		return 0;
	if (!shared_z && fg_grpcframe_zctx_new(&shared_z) != 0)
		abort();
	max_message = (size_t)data[0] * 32;
	max_out = (size_t)data[1] * 64;
	enc = (enum fg_grpcframe_enc)(data[2] % FG_GRPCFRAME_ENC_COUNT);
	ncuts = data[3] % (MAX_CUTS + 1);
	if (size < HDR_LEN + 2 * ncuts)
		return 0;
	s = data + HDR_LEN + 2 * ncuts;
	len = size - HDR_LEN - 2 * ncuts;
	for (i = 0; i < ncuts; i++)
		cuts[i] = ((size_t)data[HDR_LEN + 2 * i] << 8 | data[HDR_LEN + 2 * i + 1]) % (len + 1);
	qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

	run_whole(s, len, max_message, &whole);
	run_cut(s, len, max_message, cuts, ncuts, &cut);
	check(whole.rc == cut.rc && whole.used == cut.used && whole.pending == cut.pending);
	n = fg_bufq_len(&whole.msgs);
	check(n == fg_bufq_len(&cut.msgs));
	check(n == 0 || memcmp(fg_bufq_head(&whole.msgs), fg_bufq_head(&cut.msgs), n) == 0);
	/* framed again, the messages are the stream up to the unfinished one */
	check(n == 0 || memcmp(fg_bufq_head(&whole.msgs), s, n) == 0);
	check(n + whole.pending == whole.used);
	if (whole.rc == 0)
		check(whole.used == len);
	else
		check(whole.rc == FG_EINVAL || whole.rc == FG_ETOOBIG);

	check_messages(&whole, enc, max_out);
	fg_bufq_free(&whole.msgs);
	fg_bufq_free(&cut.msgs);
	return 0;
}
