/*
 * test_grpcframe.c - gRPC message framing and compression, through
 * fg_grpcframe.h.
 *
 * Allocation is watched and failed at link time: this program is linked with
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 * so every allocation made by fg_grpcframe.o (zlib's included: the module
 * hands zlib its own zalloc/zfree) goes through the __wrap_* functions
 * below.  They count live bytes (to bound what an inflation bomb costs) and
 * fail the Nth allocation when armed (to drive every FG_ENOMEM path).
 */
#include "config.h"

#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <cmocka.h>

#include "fg_error.h"
#include "fg_grpcframe.h"

/* ---- allocation hooks (see the file comment) ---- */

#define FG_FAILALLOC_ALL
#include "fg_failalloc.h"

/* ---- helpers ---- */

/* Feed one chunk completely, re-framing every message into <out>. */
static int feed_chunk(struct fg_grpcframe_reader *r, const uint8_t *p, size_t len,
                      struct fg_bufq *out, size_t *nmsg)
{
	struct fg_grpcframe_msg msg;
	size_t used;
	int rc;

	while (len > 0) {
		rc = fg_grpcframe_reader_feed(r, p, len, &used, &msg, NULL);
		if (rc < 0)
			return rc;
		assert_true(used <= len);
		p += used;
		len -= used;
		if (rc == FG_GRPCFRAME_MESSAGE) {
			rc = fg_grpcframe_append(out, msg.flag, msg.data, msg.len);
			if (rc)
				return rc;
			(*nmsg)++;
		} else {
			assert_int_equal(len, 0);
		}
	}
	return 0;
}

/* Three messages: 3 bytes, empty (compressed flag set), 300 bytes. */
static void make_stream(struct fg_bufq *s)
{
	uint8_t body[300];
	size_t i;

	for (i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7 + 1);
	fg_bufq_init(s);
	assert_int_equal(fg_grpcframe_append(s, FG_GRPCFRAME_UNCOMPRESSED, (const uint8_t *)"abc", 3), 0);
	assert_int_equal(fg_grpcframe_append(s, FG_GRPCFRAME_COMPRESSED, NULL, 0), 0);
	assert_int_equal(fg_grpcframe_append(s, FG_GRPCFRAME_UNCOMPRESSED, body, sizeof(body)), 0);
}

/* Feed <s> cut at <a> and <b> (a <= b) and check the same stream comes back. */
static void check_split(const struct fg_bufq *s, size_t a, size_t b)
{
	struct fg_grpcframe_reader r;
	struct fg_bufq out;
	size_t n = 0;

	fg_grpcframe_reader_init(&r, 1024);
	fg_bufq_init(&out);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(s), a, &out, &n), 0);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(s) + a, b - a, &out, &n), 0);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(s) + b, fg_bufq_len(s) - b, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(fg_bufq_len(&out), fg_bufq_len(s));
	assert_memory_equal(fg_bufq_head(&out), fg_bufq_head(s), fg_bufq_len(s));
	assert_int_equal(fg_grpcframe_reader_pending(&r), 0);
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&out);
}

static size_t gzip_with_zlib(const uint8_t *in, size_t len, uint8_t *out, size_t cap, int wbits)
{
	z_stream zs;

	memset(&zs, 0, sizeof(zs));
	assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, wbits, 9, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
	len = zs.total_out;
	deflateEnd(&zs);
	return len;
}

/* ---- framing and the reader ---- */

static void test_grpcframe_prefix(void **state)
{
	struct fg_bufq b;
	uint8_t p[FG_GRPC_PREFIX_LEN];
	static const uint8_t want[] = { 1, 0x12, 0x34, 0x56, 0x78 };

	fg_grpcframe_write_prefix(p, FG_GRPCFRAME_COMPRESSED, 0x12345678u);
	assert_memory_equal(p, want, sizeof(want));
	fg_grpcframe_write_prefix(p, FG_GRPCFRAME_UNCOMPRESSED, UINT32_MAX);
	assert_int_equal(p[0], 0);
	assert_int_equal(p[1] & p[2] & p[3] & p[4], 0xff);

	fg_bufq_init(&b);
	assert_int_equal(fg_grpcframe_append(&b, FG_GRPCFRAME_UNCOMPRESSED, (const uint8_t *)"hi", 2), 0);
	assert_int_equal(fg_bufq_len(&b), 7);
	assert_memory_equal(fg_bufq_head(&b), "\0\0\0\0\2hi", 7);
#if SIZE_MAX > UINT32_MAX
	assert_int_equal(fg_grpcframe_append(&b, FG_GRPCFRAME_UNCOMPRESSED, fg_bufq_head(&b),
	                                     (size_t)UINT32_MAX + 1), FG_ETOOBIG);
	assert_int_equal(fg_bufq_len(&b), 7);
#endif
	fg_bufq_free(&b);
	fg_bufq_free(&b);
}

static void test_grpcframe_split_everywhere(void **state)
{
	struct fg_bufq s;
	size_t a, b;

	make_stream(&s);
	/* every pair of cut points, which covers every single cut (a == b) */
	for (a = 0; a <= fg_bufq_len(&s); a++)
		for (b = a; b <= fg_bufq_len(&s); b++)
			check_split(&s, a, b);
	fg_bufq_free(&s);
}

static void test_grpcframe_byte_at_a_time(void **state)
{
	struct fg_grpcframe_reader r;
	struct fg_bufq s, out;
	size_t i, n = 0;

	make_stream(&s);
	fg_grpcframe_reader_init(&r, 300);
	fg_bufq_init(&out);
	for (i = 0; i < fg_bufq_len(&s); i++) {
		assert_int_equal(feed_chunk(&r, fg_bufq_head(&s) + i, 1, &out, &n), 0);
		assert_int_equal(fg_grpcframe_reader_pending(&r) == 0,
		                 i + 1 == 8 || i + 1 == 13 || i + 1 == fg_bufq_len(&s));
	}
	assert_int_equal(n, 3);
	assert_memory_equal(fg_bufq_head(&out), fg_bufq_head(&s), fg_bufq_len(&s));
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&out);
	fg_bufq_free(&s);
}

/* fg_grpcframe_reader_room: from every point of the stream, the reader
 * takes what room allows without a message, and the next byte completes
 * one (every message of the stream, the empty one included). */
static void test_grpcframe_room_stops_before_each_message(void **state)
{
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	struct fg_bufq s, out;
	size_t p, n, used, room, rest;
	const uint8_t *d;

	make_stream(&s);
	for (p = 0; p < fg_bufq_len(&s); p++) {
		fg_grpcframe_reader_init(&r, 300);
		fg_bufq_init(&out);
		n = 0;
		assert_int_equal(feed_chunk(&r, fg_bufq_head(&s), p, &out, &n), 0);
		d = fg_bufq_head(&s) + p;
		rest = fg_bufq_len(&s) - p;
		room = fg_grpcframe_reader_room(&r, d, rest);
		assert_true(room < rest);
		if (room > 0) {
			assert_int_equal(fg_grpcframe_reader_feed(&r, d, room, &used, &msg, NULL), FG_GRPCFRAME_NEED_MORE);
			assert_int_equal(used, room);
		}
		assert_int_equal(fg_grpcframe_reader_room(&r, d + room, rest - room), 0);
		assert_int_equal(fg_grpcframe_reader_feed(&r, d + room, 1, &used, &msg, NULL), FG_GRPCFRAME_MESSAGE);
		fg_grpcframe_reader_free(&r);
		fg_bufq_free(&out);
	}
	fg_bufq_free(&s);
}

static void test_grpcframe_many_in_one_chunk(void **state)
{
	struct fg_grpcframe_reader r;
	struct fg_bufq s;
	struct fg_grpcframe_msg msg;
	const uint8_t *p;
	size_t len, used, n = 0;
	uint8_t body[64];
	int rc;

	fg_bufq_init(&s);
	for (n = 0; n < 100; n++) {
		memset(body, (int)n, sizeof(body));
		assert_int_equal(fg_grpcframe_append(&s, FG_GRPCFRAME_UNCOMPRESSED, body, n % 65), 0);
	}
	fg_grpcframe_reader_init(&r, 64);
	p = fg_bufq_head(&s);
	len = fg_bufq_len(&s);
	for (n = 0; len > 0; n++) {
		rc = fg_grpcframe_reader_feed(&r, p, len, &used, &msg, NULL);
		assert_int_equal(rc, FG_GRPCFRAME_MESSAGE);
		assert_int_equal(used, FG_GRPC_PREFIX_LEN + n % 65);
		assert_int_equal(msg.len, n % 65);
		/* whole messages inside the chunk are handed out in place */
		if (msg.len)
			assert_ptr_equal(msg.data, p + FG_GRPC_PREFIX_LEN);
		p += used;
		len -= used;
	}
	assert_int_equal(n, 100);
	assert_null(r.buf); /* nothing was ever copied */
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&s);
}

static void test_grpcframe_empty_messages(void **state)
{
	static const uint8_t two_empty[] = { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	size_t used;

	fg_grpcframe_reader_init(&r, 0);
	assert_int_equal(fg_grpcframe_reader_feed(&r, two_empty, sizeof(two_empty), &used, &msg, NULL),
	                 FG_GRPCFRAME_MESSAGE);
	assert_int_equal(used, 5);
	assert_int_equal(msg.len, 0);
	assert_non_null(msg.data);
	assert_int_equal(msg.flag, FG_GRPCFRAME_UNCOMPRESSED);
	/* the second one ends exactly at the end of the input: still reported */
	assert_int_equal(fg_grpcframe_reader_feed(&r, two_empty + 5, 5, &used, &msg, NULL),
	                 FG_GRPCFRAME_MESSAGE);
	assert_int_equal(used, 5);
	assert_int_equal(msg.flag, FG_GRPCFRAME_COMPRESSED);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 0);
	/* empty input changes nothing */
	assert_int_equal(fg_grpcframe_reader_feed(&r, NULL, 0, &used, &msg, NULL), FG_GRPCFRAME_NEED_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 0);
	fg_grpcframe_reader_free(&r);
}

static void test_grpcframe_max_size(void **state)
{
	static const uint8_t at_max[] = { 0, 0, 0, 0x03, 0xe8 };      /* 1000 */
	static const uint8_t over[] = { 0, 0, 0, 0x03, 0xe9, 'x' };   /* 1001 */
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	struct fg_bufq s, out;
	const char *why = NULL;
	uint8_t body[1000];
	size_t used, n = 0;

	memset(body, 'b', sizeof(body));
	fg_bufq_init(&s);
	fg_bufq_init(&out);
	assert_int_equal(fg_grpcframe_append(&s, FG_GRPCFRAME_UNCOMPRESSED, body, 1000), 0);
	assert_memory_equal(fg_bufq_head(&s), at_max, sizeof(at_max));
	fg_grpcframe_reader_init(&r, 1000);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(&s), 600, &out, &n), 0); /* split: goes through the buffer */
	assert_int_equal(feed_chunk(&r, fg_bufq_head(&s) + 600, 405, &out, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(fg_bufq_len(&out), 1005);
	assert_memory_equal(fg_bufq_head(&out), fg_bufq_head(&s), 1005);

	/* one over: refused at the last prefix byte, with no body sent at all */
	fg_grpcframe_reader_reset(&r);
	mem_arm(0);
	assert_int_equal(fg_grpcframe_reader_feed(&r, over, 3, &used, &msg, NULL), FG_GRPCFRAME_NEED_MORE);
	assert_int_equal(fg_grpcframe_reader_feed(&r, over + 3, 2, &used, &msg, &why), FG_ETOOBIG);
	assert_int_equal(used, 2);
	assert_non_null(why);
	assert_int_equal(mem.count, 0); /* nothing was allocated for it */
	/* sticky until reset */
	assert_int_equal(fg_grpcframe_reader_feed(&r, over + 5, 1, &used, &msg, NULL), FG_ETOOBIG);
	assert_int_equal(used, 0);
	assert_true(fg_grpcframe_reader_pending(&r) > 0);
	fg_grpcframe_reader_reset(&r);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 0);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(&s), 1005, &out, &n), 0);
	assert_int_equal(n, 2);

	/* the largest length the wire allows against an unlimited reader */
	fg_grpcframe_reader_free(&r);
	fg_grpcframe_reader_init(&r, SIZE_MAX);
	assert_int_equal(fg_grpcframe_reader_feed(&r, (const uint8_t *)"\0\xff\xff\xff\xff" "abc", 8, &used,
	                                          &msg, NULL), FG_GRPCFRAME_NEED_MORE);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 8);
	assert_true(r.cap < 1024); /* buffer follows what arrived, not what was declared */
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&s);
	fg_bufq_free(&out);
}

static void test_grpcframe_bad_flag(void **state)
{
	static const uint8_t in[] = { 0, 0, 0, 0, 1, 'a', 2, 0, 0, 0, 1, 'b' };
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	const char *why = NULL;
	size_t used;

	fg_grpcframe_reader_init(&r, 100);
	assert_int_equal(fg_grpcframe_reader_feed(&r, in, sizeof(in), &used, &msg, &why), FG_GRPCFRAME_MESSAGE);
	assert_int_equal(used, 6);
	/* judged at the flag byte itself, before the length */
	assert_int_equal(fg_grpcframe_reader_feed(&r, in + 6, 1, &used, &msg, &why), FG_EINVAL);
	assert_int_equal(used, 1);
	assert_non_null(why);
	assert_int_equal(fg_grpcframe_reader_feed(&r, in + 7, 5, &used, &msg, NULL), FG_EINVAL);
	assert_int_equal(used, 0);
	assert_true(fg_grpcframe_reader_pending(&r) > 0);
	fg_grpcframe_reader_reset(&r);
	assert_int_equal(fg_grpcframe_reader_feed(&r, (const uint8_t *)"\x80", 1, &used, &msg, NULL), FG_EINVAL);
	fg_grpcframe_reader_free(&r);
}

static void test_grpcframe_pending_and_keep(void **state)
{
	struct fg_grpcframe_reader r;
	struct fg_grpcframe_msg msg;
	struct fg_bufq s;
	static uint8_t big[FG_GRPCFRAME_READER_KEEP + 1];
	size_t used;

	fg_bufq_init(&s);
	assert_int_equal(fg_grpcframe_append(&s, FG_GRPCFRAME_UNCOMPRESSED, big, sizeof(big)), 0);
	fg_grpcframe_reader_init(&r, sizeof(big));
	assert_int_equal(fg_grpcframe_reader_feed(&r, fg_bufq_head(&s), 3, &used, &msg, NULL), FG_GRPCFRAME_NEED_MORE);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 3);
	assert_int_equal(fg_grpcframe_reader_feed(&r, fg_bufq_head(&s) + 3, 10, &used, &msg, NULL),
	                 FG_GRPCFRAME_NEED_MORE);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 13);
	assert_int_equal(fg_grpcframe_reader_feed(&r, fg_bufq_head(&s) + 13, fg_bufq_len(&s) - 13, &used, &msg, NULL),
	                 FG_GRPCFRAME_MESSAGE);
	assert_int_equal(msg.len, sizeof(big));
	assert_int_equal(fg_grpcframe_reader_pending(&r), 0);
	assert_true(r.cap > FG_GRPCFRAME_READER_KEEP);
	/* the next feed releases the big buffer, even with nothing to read */
	assert_int_equal(fg_grpcframe_reader_feed(&r, NULL, 0, &used, &msg, NULL), FG_GRPCFRAME_NEED_MORE);
	assert_null(r.buf);
	fg_grpcframe_reader_free(&r);
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&s);
}

/* ---- compression ---- */

static void test_grpcframe_gzip_roundtrip_zlib(void **state)
{
	static const int wbits[] = { 16 + MAX_WBITS, MAX_WBITS };
	static const enum fg_grpcframe_enc enc[] = { FG_GRPCFRAME_GZIP, FG_GRPCFRAME_DEFLATE };
	struct fg_grpcframe_zctx *z;
	struct fg_bufq out, c;
	uint8_t plain[5000], packed[6000];
	size_t i, k, n;

	for (i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i % 251 < 100 ? 'a' : i * 13);
	assert_int_equal(fg_grpcframe_zctx_new(&z), 0);
	fg_bufq_init(&out);
	fg_bufq_init(&c);
	for (k = 0; k < 2; k++) {
		n = gzip_with_zlib(plain, sizeof(plain), packed, sizeof(packed), wbits[k]);
		/* the reused context, twice, then a one-shot stream */
		for (i = 0; i < 3; i++) {
			fg_bufq_truncate(&out, 0);
			assert_int_equal(fg_grpcframe_inflate(i < 2 ? z : NULL, enc[k], packed, n,
			                                      sizeof(plain), &out, NULL), 0);
			assert_int_equal(fg_bufq_len(&out), sizeof(plain));
			assert_memory_equal(fg_bufq_head(&out), plain, sizeof(plain));
		}
		/* ours, read back by zlib itself and by us */
		fg_bufq_truncate(&c, 0);
		assert_int_equal(fg_grpcframe_deflate(enc[k], plain, sizeof(plain), &c), 0);
		assert_true(fg_bufq_len(&c) < sizeof(plain));
		if (enc[k] == FG_GRPCFRAME_DEFLATE) {
			uLongf dlen = sizeof(packed);
			assert_int_equal(uncompress(packed, &dlen, fg_bufq_head(&c), fg_bufq_len(&c)), Z_OK);
			assert_int_equal(dlen, sizeof(plain));
			assert_memory_equal(packed, plain, sizeof(plain));
		} else {
			assert_memory_equal(fg_bufq_head(&c), "\x1f\x8b\x08", 3);
		}
		fg_bufq_truncate(&out, 0);
		assert_int_equal(fg_grpcframe_inflate(z, enc[k], fg_bufq_head(&c), fg_bufq_len(&c), sizeof(plain),
		                                      &out, NULL), 0);
		assert_memory_equal(fg_bufq_head(&out), plain, sizeof(plain));
	}
	/* an empty message compresses to a valid, non-empty stream */
	fg_bufq_truncate(&c, 0);
	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, NULL, 0, &c), 0);
	fg_bufq_truncate(&out, 0);
	assert_int_equal(fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, fg_bufq_head(&c), fg_bufq_len(&c), 0, &out,
	                                      NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 0);
	fg_grpcframe_zctx_free(z);
	fg_grpcframe_zctx_free(NULL);
	fg_bufq_free(&out);
	fg_bufq_free(&c);
}

/* python3: gzip.compress(text, compresslevel=9, mtime=0) and zlib.compress(text, 9) */
static const uint8_t py_gzip[] = {
	0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x95, 0xd1,
	0x39, 0x0e, 0x80, 0x20, 0x14, 0x05, 0xc0, 0x9e, 0x53, 0xbc, 0xce, 0xc6,
	0x42, 0xdc, 0x3d, 0x0e, 0x09, 0x9f, 0x25, 0x21, 0x40, 0x04, 0x0b, 0x3d,
	0xbd, 0x67, 0x78, 0xfd, 0x74, 0xe3, 0x44, 0xac, 0x7f, 0xcc, 0x6d, 0xd1,
	0xcc, 0xdb, 0x10, 0x24, 0xa5, 0x82, 0x5e, 0x50, 0xdf, 0x1e, 0x4a, 0x1e,
	0x1a, 0xfc, 0x17, 0xeb, 0x88, 0x14, 0xb3, 0x60, 0x52, 0x8e, 0xd0, 0x9a,
	0xd2, 0x33, 0xa5, 0x17, 0x4a, 0xaf, 0x94, 0xde, 0x28, 0xbd, 0x53, 0xfa,
	0xa0, 0xf4, 0x49, 0xe9, 0x8b, 0xdb, 0x21, 0x33, 0xb5, 0xfa, 0x01, 0xc1,
	0x04, 0x1f, 0xb8, 0x2a, 0x02, 0x00, 0x00,
};
static const uint8_t py_zlib[] = {
	0x78, 0xda, 0x95, 0xd1, 0x39, 0x0e, 0x80, 0x20, 0x14, 0x05, 0xc0, 0x9e,
	0x53, 0xbc, 0xce, 0xc6, 0x42, 0xdc, 0x3d, 0x0e, 0x09, 0x9f, 0x25, 0x21,
	0x40, 0x04, 0x0b, 0x3d, 0xbd, 0x67, 0x78, 0xfd, 0x74, 0xe3, 0x44, 0xac,
	0x7f, 0xcc, 0x6d, 0xd1, 0xcc, 0xdb, 0x10, 0x24, 0xa5, 0x82, 0x5e, 0x50,
	0xdf, 0x1e, 0x4a, 0x1e, 0x1a, 0xfc, 0x17, 0xeb, 0x88, 0x14, 0xb3, 0x60,
	0x52, 0x8e, 0xd0, 0x9a, 0xd2, 0x33, 0xa5, 0x17, 0x4a, 0xaf, 0x94, 0xde,
	0x28, 0xbd, 0x53, 0xfa, 0xa0, 0xf4, 0x49, 0xe9, 0x8b, 0xdb, 0x21, 0x33,
	0xb5, 0xfa, 0x01, 0x7e, 0x72, 0xc3, 0xa9,
};

/* The text python compressed: 12 numbered lines. */
static size_t py_text(char *buf, size_t cap)
{
	size_t len = 0;
	int i;

	for (i = 0; i < 12; i++)
		len += (size_t)snprintf(buf + len, cap - len, "feedguard says hello to python's gzip, line %d\n", i);
	return len;
}

static void test_grpcframe_python_gzip(void **state)
{
	struct fg_bufq out;
	char text[1024];
	size_t len = py_text(text, sizeof(text));

	assert_int_equal(len, 554);
	fg_bufq_init(&out);
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, py_gzip, sizeof(py_gzip), 4096, &out,
	                                      NULL), 0);
	assert_int_equal(fg_bufq_len(&out), len);
	assert_memory_equal(fg_bufq_head(&out), text, len);
	/* appends after what is there */
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_DEFLATE, py_zlib, sizeof(py_zlib), 4096, &out,
	                                      NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 2 * len);
	assert_memory_equal(fg_bufq_head(&out) + len, text, len);
	/* our gzip of the same text is what python's gzip.decompress takes too: same header bytes */
	fg_bufq_truncate(&out, 0);
	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, (const uint8_t *)text, len, &out), 0);
	assert_memory_equal(fg_bufq_head(&out), py_gzip, 4); /* magic, CM=8, no flags */
	fg_bufq_free(&out);
}

/* Inflate appends at the tail of a queue whose head is not at the front of
 * its memory, and an error takes back only what this call appended. */
static void test_grpcframe_inflate_after_consume(void **state)
{
	struct fg_bufq out = { 0 };
	uint8_t fill[250], bad[sizeof(py_gzip)];
	char text[1024];
	size_t len = py_text(text, sizeof(text));

	memset(fill, 'x', sizeof(fill));
	assert_int_equal(fg_bufq_append(&out, fill, sizeof(fill)), 0);
	assert_int_equal(fg_bufq_append(&out, "ab", 2), 0);
	fg_bufq_consume(&out, sizeof(fill));
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, py_gzip, sizeof(py_gzip), 4096, &out,
	                                      NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 2 + len);
	assert_memory_equal(fg_bufq_head(&out), "ab", 2);
	assert_memory_equal(fg_bufq_head(&out) + 2, text, len);
	fg_bufq_consume(&out, 1);
	memcpy(bad, py_gzip, sizeof(bad));
	bad[20] ^= 0x55;
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, bad, sizeof(bad), 4096, &out, NULL),
	                 FG_EINVAL);
	assert_int_equal(fg_bufq_len(&out), 1 + len);
	assert_memory_equal(fg_bufq_head(&out), "b", 1);
	assert_memory_equal(fg_bufq_head(&out) + 1, text, len);
	fg_bufq_free(&out);
}

static void test_grpcframe_inflation_bomb(void **state)
{
	const size_t plain = 10u << 20, max_out = 4u << 20;
	struct fg_grpcframe_zctx *z;
	struct fg_bufq out;
	uint8_t *zeros, *bomb;
	const char *why = NULL;
	size_t n, before;

	zeros = calloc(1, plain);
	bomb = malloc(64 * 1024);
	assert_non_null(zeros);
	assert_non_null(bomb);
	n = gzip_with_zlib(zeros, plain, bomb, 64 * 1024, 16 + MAX_WBITS);
	free(zeros);
	assert_true(n < 20 * 1024);

	assert_int_equal(fg_grpcframe_zctx_new(&z), 0);
	fg_bufq_init(&out);
	before = mem.bytes;
	mem_arm(0);
	assert_int_equal(fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, bomb, n, max_out, &out, &why), FG_ETOOBIG);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(&out), 0);
	/* the output never passed max_out + 1; zlib's window is allocated on first use */
	assert_true(out.cap <= max_out + 1);
	print_message("bomb: %zu -> %zu bytes, max_out %zu, peak growth %zu bytes\n", n, plain, max_out,
	              mem.peak - before);
	assert_true(mem.peak - before <= max_out + 1 + 64 * 1024);
	/* one-shot: zlib's state and window come and go within the call */
	before = mem.bytes;
	mem_arm(0);
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, bomb, n, max_out, &out, NULL), FG_ETOOBIG);
	assert_true(mem.peak - before <= max_out + 1 + 64 * 1024);
	/* the same data is fine with room for it; and exactly at the limit */
	assert_int_equal(fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, bomb, n, plain, &out, NULL), 0);
	assert_int_equal(fg_bufq_len(&out), plain);
	fg_bufq_truncate(&out, 0);
	assert_int_equal(fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, bomb, n, plain - 1, &out, NULL), FG_ETOOBIG);
	fg_bufq_free(&out);
	fg_grpcframe_zctx_free(z);
	free(bomb);
}

/* <in> must be refused as corrupt, leaving the 5 bytes already in <out>. */
static void expect_einval(struct fg_grpcframe_zctx *z, struct fg_bufq *out,
                          const uint8_t *in, size_t len, enum fg_grpcframe_enc enc)
{
	const char *why = NULL;

	assert_int_equal(fg_grpcframe_inflate(z, enc, in, len, 4096, out, &why), FG_EINVAL);
	assert_non_null(why);
	assert_int_equal(fg_bufq_len(out), 5);
}

static void test_grpcframe_corrupt(void **state)
{
	struct fg_grpcframe_zctx *z;
	struct fg_bufq out;
	uint8_t bad[sizeof(py_gzip) * 2 + 1];
	size_t n = sizeof(py_gzip);

	assert_int_equal(fg_grpcframe_zctx_new(&z), 0);
	fg_bufq_init(&out);
	assert_int_equal(fg_grpcframe_append(&out, FG_GRPCFRAME_UNCOMPRESSED, NULL, 0), 0); /* 5 bytes already there */
	memcpy(bad, py_gzip, n);
	bad[20] ^= 0x55;                                 /* corrupt deflate data */
	expect_einval(z, &out, bad, n, FG_GRPCFRAME_GZIP);
	memcpy(bad, py_gzip, n);
	bad[n - 6] ^= 1;                                 /* CRC32 mismatch */
	expect_einval(z, &out, bad, n, FG_GRPCFRAME_GZIP);
	memcpy(bad, py_gzip, n);
	bad[n - 1] ^= 1;                                 /* ISIZE mismatch */
	expect_einval(z, &out, bad, n, FG_GRPCFRAME_GZIP);
	expect_einval(z, &out, py_gzip, n - 1, FG_GRPCFRAME_GZIP); /* truncated trailer */
	expect_einval(z, &out, py_gzip, 30, FG_GRPCFRAME_GZIP);    /* truncated body */
	expect_einval(z, &out, py_gzip, 0, FG_GRPCFRAME_GZIP);     /* empty */
	memcpy(bad, py_gzip, n);
	bad[n] = 0;
	expect_einval(z, &out, bad, n + 1, FG_GRPCFRAME_GZIP);     /* one trailing byte */
	memcpy(bad + n, py_gzip, n);
	expect_einval(z, &out, bad, 2 * n, FG_GRPCFRAME_GZIP);     /* a second gzip member */
	expect_einval(z, &out, py_gzip, n, FG_GRPCFRAME_DEFLATE);  /* gzip is not the zlib format */
	expect_einval(z, &out, py_zlib, sizeof(py_zlib), FG_GRPCFRAME_GZIP);
	/* zlib format with FDICT set (header 0x78 0xbb has a valid check) */
	expect_einval(z, &out, (const uint8_t *)"\x78\xbb\x00\x00\x00\x01\x03\x00", 8, FG_GRPCFRAME_DEFLATE);
	/* the context still works */
	assert_int_equal(fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, py_gzip, n, 4096, &out, NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 5 + 554);
	fg_bufq_free(&out);
	fg_grpcframe_zctx_free(z);
}

static void test_grpcframe_identity_and_unknown(void **state)
{
	struct fg_bufq out;
	const char *why = NULL;

	fg_bufq_init(&out);
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_IDENTITY, (const uint8_t *)"abcd", 4, 4, &out,
	                                      NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 4);
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_IDENTITY, (const uint8_t *)"abcd", 4, 3, &out,
	                                      NULL), FG_ETOOBIG);
	assert_int_equal(fg_bufq_len(&out), 4);
	assert_int_equal(fg_grpcframe_inflate(NULL, (enum fg_grpcframe_enc)7, py_gzip, sizeof(py_gzip), 4096,
	                                      &out, &why), FG_ENOTFOUND);
	assert_non_null(why);
	assert_int_equal(fg_grpcframe_deflate((enum fg_grpcframe_enc)3, py_gzip, 4, &out), FG_ENOTFOUND);
	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_IDENTITY, (const uint8_t *)"ef", 2, &out), 0);
	assert_memory_equal(fg_bufq_head(&out), "abcdef", 6);
	/* no limit at all is the wire's limit */
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, py_gzip, sizeof(py_gzip), SIZE_MAX,
	                                      &out, NULL), 0);
	assert_int_equal(fg_bufq_len(&out), 6 + 554);
#if SIZE_MAX > UINT32_MAX
	/* lengths no message can have are refused before the bytes are touched */
	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, py_gzip, (size_t)UINT32_MAX + 1, &out),
	                 FG_ETOOBIG);
	assert_int_equal(fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, py_gzip, UINT32_MAX, &out), FG_ETOOBIG);
	assert_int_equal(fg_grpcframe_inflate(NULL, FG_GRPCFRAME_GZIP, py_gzip, (size_t)UINT32_MAX + 1, SIZE_MAX,
	                                      &out, NULL), FG_ETOOBIG);
	assert_int_equal(fg_bufq_len(&out), 6 + 554);
#endif
	fg_bufq_free(&out);
}

/* ---- headers ---- */

static int parse(const char *v, enum fg_grpcframe_enc *enc)
{
	return fg_grpcframe_encoding_parse(v, strlen(v), enc);
}

static unsigned accept_mask(const char *v)
{
	return fg_grpcframe_accept_parse(v, strlen(v));
}

static void test_grpcframe_encoding_header(void **state)
{
	enum fg_grpcframe_enc enc = FG_GRPCFRAME_ENC_COUNT;

	assert_int_equal(parse("gzip", &enc), 0);
	assert_int_equal(enc, FG_GRPCFRAME_GZIP);
	assert_int_equal(parse(" \tdeflate ", &enc), 0);
	assert_int_equal(enc, FG_GRPCFRAME_DEFLATE);
	assert_int_equal(parse("identity", &enc), 0);
	assert_int_equal(enc, FG_GRPCFRAME_IDENTITY);
	/* known to the spec or to others, not to us: UNIMPLEMENTED */
	assert_int_equal(parse("snappy", &enc), FG_ENOTFOUND);
	assert_int_equal(parse("zstd", &enc), FG_ENOTFOUND);
	/* case-sensitive, as grpc-core/go/java compare */
	assert_int_equal(parse("GZIP", &enc), FG_ENOTFOUND);
	assert_int_equal(parse("Gzip", &enc), FG_ENOTFOUND);
	assert_int_equal(parse("gzip2", &enc), FG_ENOTFOUND);
	assert_int_equal(parse("gzi", &enc), FG_ENOTFOUND);
	assert_int_equal(parse("x-gzip", &enc), FG_ENOTFOUND);
	/* malformed */
	assert_int_equal(parse("", &enc), FG_EINVAL);
	assert_int_equal(parse("  ", &enc), FG_EINVAL);
	assert_int_equal(parse("gzip,", &enc), FG_EINVAL);
	assert_int_equal(parse("gzip, deflate", &enc), FG_EINVAL);
	assert_int_equal(fg_grpcframe_encoding_parse("gzip\0", 5, &enc), FG_ENOTFOUND);
	/* parse of a prefix of a longer buffer: the length rules, not NUL */
	assert_int_equal(fg_grpcframe_encoding_parse("gzipped", 4, &enc), 0);
	assert_int_equal(enc, FG_GRPCFRAME_GZIP);

	assert_string_equal(fg_grpcframe_encoding_name(FG_GRPCFRAME_GZIP), "gzip");
	assert_string_equal(fg_grpcframe_encoding_name(FG_GRPCFRAME_DEFLATE), "deflate");
	assert_string_equal(fg_grpcframe_encoding_name(FG_GRPCFRAME_IDENTITY), "identity");
	assert_null(fg_grpcframe_encoding_name(FG_GRPCFRAME_ENC_COUNT));
}

static void test_grpcframe_accept_header(void **state)
{
	const unsigned id = FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_IDENTITY);
	const unsigned gz = FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_GZIP);
	const unsigned df = FG_GRPCFRAME_ENC_BIT(FG_GRPCFRAME_DEFLATE);

	assert_int_equal(accept_mask(FG_GRPCFRAME_ACCEPT_ENCODING), FG_GRPCFRAME_ENC_ALL);
	assert_int_equal(accept_mask("identity,deflate,gzip"), id | gz | df);
	assert_int_equal(accept_mask("identity, deflate, gzip"), id | gz | df); /* grpc-core's spelling */
	assert_int_equal(accept_mask("gzip"), id | gz);
	assert_int_equal(accept_mask(""), id);
	assert_int_equal(accept_mask(" , ,,"), id);
	assert_int_equal(accept_mask("\tdeflate\t,snappy,,gzip "), id | gz | df);
	assert_int_equal(accept_mask("GZIP,Deflate"), id);
	assert_int_equal(accept_mask("gzip;q=1"), id);
	assert_int_equal(accept_mask("zstd, gzip"), id | gz);
	assert_int_equal(accept_mask("gzip,"), id | gz);
	assert_int_equal(accept_mask(",deflate"), id | df);
	assert_int_equal(fg_grpcframe_accept_parse("gzip,deflate", 4), id | gz);
	assert_int_equal(fg_grpcframe_accept_parse(NULL, 0), id);
}

/* ---- allocation failure ---- */

/*
 * Everything that allocates, in one go; returns the first error.  Run with
 * the Nth allocation failing for N = 1, 2, ... until it succeeds: each run
 * must report FG_ENOMEM and leave no block behind.
 */
static int alloc_scenario(void)
{
	struct fg_grpcframe_zctx *z = NULL;
	struct fg_grpcframe_reader r;
	struct fg_bufq s, out;
	size_t n = 0;
	int rc;

	fg_grpcframe_reader_init(&r, 1u << 20);
	fg_bufq_init(&out);
	fg_bufq_init(&s);
	rc = fg_grpcframe_append(&s, FG_GRPCFRAME_COMPRESSED, py_gzip, sizeof(py_gzip));
	if (rc)
		goto out_free;
	/* a split message: the reader must buffer it */
	rc = feed_chunk(&r, fg_bufq_head(&s), 50, &out, &n);
	rc = rc ? rc : feed_chunk(&r, fg_bufq_head(&s) + 50, fg_bufq_len(&s) - 50, &out, &n);
	rc = rc ? rc : fg_grpcframe_zctx_new(&z);
	rc = rc ? rc : fg_grpcframe_inflate(z, FG_GRPCFRAME_GZIP, py_gzip, sizeof(py_gzip), 1024, &out, NULL);
	rc = rc ? rc : fg_grpcframe_inflate(NULL, FG_GRPCFRAME_DEFLATE, py_zlib, sizeof(py_zlib), 1024, &out, NULL);
	rc = rc ? rc : fg_grpcframe_deflate(FG_GRPCFRAME_GZIP, fg_bufq_head(&out), fg_bufq_len(&out), &s);
	rc = rc ? rc : fg_grpcframe_deflate(FG_GRPCFRAME_DEFLATE, fg_bufq_head(&out), fg_bufq_len(&out), &s);
	fg_bufq_free(&out); /* so that identity has to allocate too */
	rc = rc ? rc : fg_grpcframe_inflate(z, FG_GRPCFRAME_IDENTITY, py_zlib, sizeof(py_zlib), 1024, &out, NULL);
	rc = rc ? rc : fg_grpcframe_deflate(FG_GRPCFRAME_IDENTITY, py_zlib, sizeof(py_zlib), &out);
out_free:
	fg_grpcframe_zctx_free(z);
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&s);
	fg_bufq_free(&out);
	return rc;
}

static void test_grpcframe_failmalloc(void **state)
{
	long live = mem.live, n, count;
	int rc;

	for (n = 1; n < 1000; n++) {
		mem_arm(n);
		rc = alloc_scenario();
		count = mem.count;
		mem_arm(0);
		assert_int_equal(mem.live, live);
		if (count < n) { /* the Nth allocation never came: every path was failed once */
			assert_int_equal(rc, 0);
			print_message("failmalloc: %ld allocations failed one at a time\n", n - 1);
			break;
		}
		assert_int_equal(rc, FG_ENOMEM);
	}
	assert_true(n > 5 && n < 1000);
}

/* The reader's FG_ENOMEM is not sticky: the same bytes fed again resume. */
static void test_grpcframe_failmalloc_resume(void **state)
{
	struct fg_grpcframe_reader r;
	struct fg_bufq s, out;
	struct fg_grpcframe_msg msg;
	size_t used, n = 0;

	make_stream(&s);
	fg_bufq_init(&out);
	fg_grpcframe_reader_init(&r, 1024);
	/* 2 bytes into the 300-byte body, then past the first 256-byte buffer */
	assert_int_equal(feed_chunk(&r, fg_bufq_head(&s), 20, &out, &n), 0);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 7);
	mem_arm(1);
	assert_int_equal(fg_grpcframe_reader_feed(&r, fg_bufq_head(&s) + 20, 280, &used, &msg, NULL), FG_ENOMEM);
	assert_int_equal(fg_grpcframe_reader_pending(&r), 7);
	mem_arm(0);
	assert_int_equal(used, 0);
	assert_int_equal(feed_chunk(&r, fg_bufq_head(&s) + 20, fg_bufq_len(&s) - 20, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(fg_bufq_head(&out), fg_bufq_head(&s), fg_bufq_len(&s));
	fg_grpcframe_reader_free(&r);
	fg_bufq_free(&out);
	fg_bufq_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grpcframe_prefix),
		cmocka_unit_test(test_grpcframe_split_everywhere),
		cmocka_unit_test(test_grpcframe_byte_at_a_time),
		cmocka_unit_test(test_grpcframe_many_in_one_chunk),
		cmocka_unit_test(test_grpcframe_empty_messages),
		cmocka_unit_test(test_grpcframe_max_size),
		cmocka_unit_test(test_grpcframe_bad_flag),
		cmocka_unit_test(test_grpcframe_pending_and_keep),
		cmocka_unit_test(test_grpcframe_gzip_roundtrip_zlib),
		cmocka_unit_test(test_grpcframe_python_gzip),
		cmocka_unit_test(test_grpcframe_inflate_after_consume),
		cmocka_unit_test(test_grpcframe_inflation_bomb),
		cmocka_unit_test(test_grpcframe_corrupt),
		cmocka_unit_test(test_grpcframe_identity_and_unknown),
		cmocka_unit_test(test_grpcframe_encoding_header),
		cmocka_unit_test(test_grpcframe_accept_header),
		cmocka_unit_test(test_grpcframe_room_stops_before_each_message),
		cmocka_unit_test(test_grpcframe_failmalloc),
		cmocka_unit_test(test_grpcframe_failmalloc_resume),
	};
	return cmocka_run_group_tests_name("grpcframe", tests, NULL, NULL);
}
