/*
 * test_capfile.c - the capture file's framing, parser and reader, through
 * fg_capfile.h.
 *
 * Files are written into a mkdtemp directory per test (fg_testutil.h),
 * removed by the teardown.  The program is linked with
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free
 * so the reader's allocations can be failed one by one (fg_failalloc.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "fg_capfile.h"
#include "fg_error.h"
#include "fg_testutil.h"

#define FG_FAILALLOC_ALL
#include "fg_failalloc.h"

#define MIB (1024 * 1024)
#define ERRLEN 256

/* ---- helpers ---- */

/* Byte <k> of record <i>: different for every record and every position,
 * so a record read from the wrong place shows. */
static uint8_t payload_byte(size_t k, size_t i)
{
	return (uint8_t)(k * 31 + i * 7 + (k >> 8) + 1);
}

static void fill_payload(uint8_t *p, size_t len, size_t i)
{
	size_t k;

	for (k = 0; k < len; k++)
		p[k] = payload_byte(k, i);
}

/* Compared byte by byte, allocating nothing: the failmalloc test counts
 * the reader's allocations only. */
static void check_payload(const struct fg_capfile_record *rec, size_t len, size_t i)
{
	size_t k, bad = 0;

	assert_int_equal(rec->len, len);
	for (k = 0; k < len; k++)
		bad += rec->data[k] != payload_byte(k, i);
	assert_int_equal(bad, 0);
}

/* A capture file of records of the <sizes> (<n> of them) in <file>, and
 * each frame's offset in <offs> (when not NULL; <n> + 1 entries, the last
 * the file's length). */
static void make_file(struct fg_bufq *file, const size_t *sizes, size_t n, uint64_t *offs)
{
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN], *p;
	size_t i;

	fg_bufq_init(file);
	fg_capfile_write_file_header(hdr);
	assert_int_equal(fg_bufq_append(file, hdr, sizeof(hdr)), 0);
	for (i = 0; i < n; i++) {
		p = malloc(sizes[i] ? sizes[i] : 1);
		assert_non_null(p);
		fill_payload(p, sizes[i], i);
		if (offs)
			offs[i] = fg_bufq_len(file);
		assert_int_equal(fg_capfile_append(file, p, sizes[i]), 0);
		free(p);
	}
	if (offs)
		offs[n] = fg_bufq_len(file);
}

static void write_bytes(const char *path, const uint8_t *p, size_t len)
{
	fg_test_write_file(path, len ? (const void *)p : "", len);
}

static void append_bytes(const char *path, const void *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static struct fg_capfile_reader *open_reader(const char *path, unsigned flags)
{
	struct fg_capfile_reader *r;
	char err[ERRLEN] = "";

	assert_int_equal(fg_capfile_reader_open(path, flags, &r, err, sizeof(err)), 0);
	assert_non_null(r);
	return r;
}

/* Read <n> records of the <sizes> from <r>, checking each; the result of
 * the next call after them is returned with its message in <err>. */
static int read_records(struct fg_capfile_reader *r, const size_t *sizes, size_t n, const uint64_t *offs,
                        char *err)
{
	struct fg_capfile_record rec;
	size_t i;

	for (i = 0; i < n; i++) {
		assert_int_equal(fg_capfile_reader_next(r, &rec, err, ERRLEN), FG_CAPFILE_RECORD);
		check_payload(&rec, sizes[i], i);
		if (offs)
			assert_int_equal(rec.offset, offs[i]);
		assert_int_equal(fg_capfile_reader_records(r), i + 1);
	}
	err[0] = '\0';
	return fg_capfile_reader_next(r, &rec, err, ERRLEN);
}

/* Walk <len> bytes of a whole file with the pure parser: the records
 * found in <*n>, the final verdict returned (0 for a clean end), the
 * offset it applies to in <*at>. */
static int parse_all(const uint8_t *p, size_t len, size_t *n, size_t *at)
{
	struct fg_capfile_frame f;
	size_t pos = FG_CAPFILE_FILE_HEADER_LEN;
	int rc;

	*n = 0;
	*at = 0;
	rc = fg_capfile_parse_file_header(p, len, FG_CAPFILE_F_EOF, NULL, NULL);
	if (rc != FG_CAPFILE_HEADER)
		return rc;
	while (pos < len) {
		*at = pos;
		rc = fg_capfile_parse_frame(p + pos, len - pos, FG_CAPFILE_F_EOF, &f);
		if (rc != FG_CAPFILE_RECORD)
			return rc;
		pos += f.frame_len;
		(*n)++;
	}
	*at = pos;
	return 0;
}

static int setup_dir(void **state)
{
	return fg_test_dir_new(state, "capture.fgcap");
}

static int teardown_dir(void **state)
{
	return fg_test_dir_free(state);
}

/* ---- writing ---- */

/* The frame CRC is zlib's CRC-32 of the length bytes then the payload,
 * whichever library computes it (ISA-L when configure found it): every
 * length from 0 to 300 and larger ones up to 96 KiB, at every alignment
 * of the start, against zlib's crc32() computed here. */
static void test_capfile_crc_is_zlibs(void **state)
{
	enum { MAX = 96 * 1024 };
	uint8_t *buf = malloc(MAX + 8), fh[FG_CAPFILE_FRAME_HEADER_LEN];
	uint32_t x = 2463534242u;

	(void)state;
	assert_non_null(buf);
	for (size_t i = 0; i < MAX + 8; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
	for (size_t n = 0; n <= MAX; n += n < 300 ? 1 : 4093) {
		for (size_t off = 0; off < (n < 300 ? 2u : 8u); off++) {
			uint8_t len4[4] = { (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24) };
			uLong crc = crc32(crc32(0L, len4, 4), buf + off, (uInt)n);
			assert_int_equal(fg_capfile_write_frame_header(fh, buf + off, n), 0);
			assert_memory_equal(fh, len4, 4);
			assert_int_equal(fh[4] | fh[5] << 8 | fh[6] << 16 | (uint32_t)fh[7] << 24, (uint32_t)crc);
		}
	}
	free(buf);
}

static void test_capfile_encode(void **state)
{
	static const uint8_t want_hdr[] = { 0x89, 'F', 'G', 'C', 'A', 'P', '\r', '\n', 2, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t len_abc[] = { 3, 0, 0, 0 };
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN], fh[FG_CAPFILE_FRAME_HEADER_LEN], keep[FG_CAPFILE_FRAME_HEADER_LEN];
	uLong crc = crc32(crc32(0L, len_abc, 4), (const Bytef *)"abc", 3);
	struct fg_bufq b = { 0 };

	(void)state;
	fg_capfile_write_file_header(hdr);
	assert_memory_equal(hdr, want_hdr, sizeof(want_hdr));
	assert_int_equal(fg_capfile_write_frame_header(fh, (const uint8_t *)"abc", 3), 0);
	assert_memory_equal(fh, len_abc, 4);
	assert_int_equal(fh[4] | fh[5] << 8 | fh[6] << 16 | (uint32_t)fh[7] << 24, (uint32_t)crc);

	/* an empty record: the CRC is that of four zero bytes, not 0 */
	assert_int_equal(fg_capfile_write_frame_header(fh, NULL, 0), 0);
	crc = crc32(0L, (const Bytef *)"\0\0\0\0", 4);
	assert_int_equal(fh[4] | fh[5] << 8 | fh[6] << 16 | (uint32_t)fh[7] << 24, (uint32_t)crc);
	assert_int_not_equal(crc, 0);

	memcpy(keep, fh, sizeof(fh));
	assert_int_equal(fg_capfile_write_frame_header(fh, NULL, (size_t)FG_CAPFILE_MAX_RECORD + 1), FG_ETOOBIG);
	assert_memory_equal(fh, keep, sizeof(fh));

	/* append: header then payload, the same header as above */
	assert_int_equal(fg_capfile_append(&b, (const uint8_t *)"abc", 3), 0);
	assert_int_equal(fg_capfile_write_frame_header(fh, (const uint8_t *)"abc", 3), 0);
	assert_int_equal(fg_bufq_len(&b), 11);
	assert_memory_equal(fg_bufq_head(&b), fh, sizeof(fh));
	assert_memory_equal(fg_bufq_head(&b) + 8, "abc", 3);
	assert_int_equal(fg_capfile_append(&b, NULL, (size_t)FG_CAPFILE_MAX_RECORD + 1), FG_ETOOBIG);
	assert_int_equal(fg_bufq_len(&b), 11);
	assert_int_equal(fg_capfile_append(&b, NULL, 0), 0);
	assert_int_equal(fg_bufq_len(&b), 19);
	fg_bufq_free(&b);

	/* the zero-copy route of the header: headroom, payload, prepend */
	assert_int_equal(fg_bufq_headroom(&b, FG_CAPFILE_FRAME_HEADER_LEN), 0);
	assert_int_equal(fg_bufq_append(&b, "abc", 3), 0);
	assert_int_equal(fg_capfile_write_frame_header(fh, fg_bufq_head(&b), fg_bufq_len(&b)), 0);
	assert_int_equal(fg_bufq_prepend(&b, fh, sizeof(fh)), 0);
	{
		struct fg_capfile_frame f;

		assert_int_equal(fg_capfile_parse_frame(fg_bufq_head(&b), fg_bufq_len(&b), FG_CAPFILE_F_EOF, &f),
		                 FG_CAPFILE_RECORD);
		assert_int_equal(f.len, 3);
		assert_int_equal(f.frame_len, 11);
		assert_ptr_equal(f.payload, fg_bufq_head(&b) + 8);
	}
	fg_bufq_free(&b);
}

/* ---- the pure parser ---- */

static void test_capfile_parse_file_header(void **state)
{
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];
	const char *why = NULL;
	uint32_t version = 0;
	size_t n;

	(void)state;
	fg_capfile_write_file_header(hdr);
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), 0, &version, &why), FG_CAPFILE_HEADER);
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), FG_CAPFILE_F_EOF, NULL, NULL),
	                 FG_CAPFILE_HEADER);
	for (n = 0; n < sizeof(hdr); n++) {
		assert_int_equal(fg_capfile_parse_file_header(hdr, n, 0, NULL, NULL), FG_CAPFILE_NEED_MORE);
		why = NULL;
		assert_int_equal(fg_capfile_parse_file_header(hdr, n, FG_CAPFILE_F_EOF, NULL, &why), FG_CAPFILE_TORN);
		assert_string_equal(why, "file shorter than its header");
	}
	/* reserved bytes are ignored */
	hdr[15] = 0xff;
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), 0, NULL, NULL), FG_CAPFILE_HEADER);

	/* version 1 files (the framing is the same) are read too */
	hdr[8] = 1;
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), 0, NULL, NULL), FG_CAPFILE_HEADER);
	hdr[8] = 0;
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), 0, &version, &why), FG_EINVAL);
	assert_int_equal(version, 0);
	assert_string_equal(why, "capture format version is not supported");
	hdr[8] = 3;
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr), 0, &version, &why), FG_EINVAL);
	assert_int_equal(version, 3);
	assert_string_equal(why, "capture format version is not supported");
	/* a version is only judged whole */
	assert_int_equal(fg_capfile_parse_file_header(hdr, 9, 0, NULL, NULL), FG_CAPFILE_NEED_MORE);

	/* a text file, even a short one, is not a capture */
	assert_int_equal(fg_capfile_parse_file_header((const uint8_t *)"FGCAP", 5, FG_CAPFILE_F_EOF, NULL, &why),
	                 FG_EINVAL);
	assert_string_equal(why, "not a feedguard capture file");
	/* the 7-bit damage the signature is there to catch */
	fg_capfile_write_file_header(hdr);
	hdr[0] &= 0x7f;
	assert_int_equal(fg_capfile_parse_file_header(hdr, 1, 0, NULL, NULL), FG_EINVAL);
	/* and CR LF turned into LF */
	fg_capfile_write_file_header(hdr);
	memmove(hdr + 6, hdr + 7, 9);
	assert_int_equal(fg_capfile_parse_file_header(hdr, sizeof(hdr) - 1, FG_CAPFILE_F_EOF, NULL, NULL),
	                 FG_EINVAL);
}

static void test_capfile_parse_frame(void **state)
{
	struct fg_bufq b = { 0 };
	struct fg_capfile_frame f;
	const uint8_t *p;
	uint8_t buf[64];
	size_t n;

	(void)state;
	assert_int_equal(fg_capfile_append(&b, (const uint8_t *)"hello", 5), 0);
	p = fg_bufq_head(&b);
	/* every cut: need the header, then the frame */
	for (n = 0; n < 13; n++) {
		assert_int_equal(fg_capfile_parse_frame(p, n, 0, &f), FG_CAPFILE_NEED_MORE);
		assert_int_equal(f.need, n < 8 ? 8 : 13);
		assert_int_equal(fg_capfile_parse_frame(p, n, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
		assert_string_equal(f.why, n < 8 ? "frame header cut short" : "frame cut short");
	}
	assert_int_equal(fg_capfile_parse_frame(p, 13, 0, &f), FG_CAPFILE_RECORD);
	assert_int_equal(f.len, 5);
	assert_int_equal(f.frame_len, 13);
	assert_memory_equal(f.payload, "hello", 5);
	/* bytes after a record do not matter */
	assert_int_equal(fg_capfile_append(&b, NULL, 0), 0);
	p = fg_bufq_head(&b);
	assert_int_equal(fg_capfile_parse_frame(p, 14, 0, &f), FG_CAPFILE_RECORD);
	assert_int_equal(fg_capfile_parse_frame(p + 13, 8, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_RECORD);
	assert_int_equal(f.len, 0);
	assert_int_equal(f.frame_len, 8);

	/* a bad CRC ending the bytes given: one more byte decides */
	memcpy(buf, p, 21);
	buf[12] ^= 0x01;
	assert_int_equal(fg_capfile_parse_frame(buf, 13, 0, &f), FG_CAPFILE_NEED_MORE);
	assert_int_equal(f.need, 14);
	assert_int_equal(fg_capfile_parse_frame(buf, 13, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	assert_string_equal(f.why, "CRC mismatch in the last frame");
	assert_int_equal(fg_capfile_parse_frame(buf, 14, 0, &f), FG_EINVAL);
	assert_string_equal(f.why, "CRC mismatch");
	/* a bad frame with zeros after its header: the rest of the file decides */
	memset(buf + 8, 0, sizeof(buf) - 8);
	assert_int_equal(fg_capfile_parse_frame(buf, 40, 0, &f), FG_CAPFILE_CHECK_TAIL);
	assert_string_equal(f.why, "CRC mismatch");
	assert_int_equal(fg_capfile_parse_frame(buf, 40, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	assert_string_equal(f.why, "zero-filled tail");
	buf[39] = 1;
	assert_int_equal(fg_capfile_parse_frame(buf, 40, 0, &f), FG_EINVAL);
	assert_int_equal(fg_capfile_parse_frame(buf, 40, FG_CAPFILE_F_EOF, &f), FG_EINVAL);
	/* all zero: a zero-filled tail from its first byte */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(fg_capfile_parse_frame(buf, 8, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	assert_int_equal(fg_capfile_parse_frame(buf, 64, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	fg_bufq_free(&b);
}

static void test_capfile_parse_length_over_max(void **state)
{
	uint8_t buf[32] = { 0 };
	struct fg_capfile_frame f;
	uint32_t len = FG_CAPFILE_MAX_RECORD + 1;

	(void)state;
	buf[0] = (uint8_t)len;
	buf[1] = (uint8_t)(len >> 8);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 24);
	/* not trusted to say where the frame ends: what follows the header decides */
	assert_int_equal(fg_capfile_parse_frame(buf, 8, 0, &f), FG_CAPFILE_NEED_MORE);
	assert_int_equal(f.need, 9);
	assert_int_equal(fg_capfile_parse_frame(buf, 8, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	assert_string_equal(f.why, "frame length over the maximum in the last frame");
	assert_int_equal(fg_capfile_parse_frame(buf, 32, 0, &f), FG_CAPFILE_CHECK_TAIL);
	assert_int_equal(fg_capfile_parse_frame(buf, 32, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	buf[20] = 0x40;
	assert_int_equal(fg_capfile_parse_frame(buf, 32, FG_CAPFILE_F_EOF, &f), FG_EINVAL);
	assert_string_equal(f.why, "frame length over the maximum");
	assert_int_equal(fg_capfile_parse_frame(buf, 21, 0, &f), FG_EINVAL);
	/* the largest length is a frame like any other */
	buf[3] = 0;
	buf[0] = buf[1] = buf[2] = 0;
	buf[3] = (uint8_t)(FG_CAPFILE_MAX_RECORD >> 24);
	assert_int_equal(fg_capfile_parse_frame(buf, 32, 0, &f), FG_CAPFILE_NEED_MORE);
	assert_int_equal(f.need, FG_CAPFILE_MAX_FRAME);
	assert_int_equal(fg_capfile_parse_frame(buf, 32, FG_CAPFILE_F_EOF, &f), FG_CAPFILE_TORN);
	assert_string_equal(f.why, "frame cut short");
}

/* ---- the reader ---- */

/* 0 bytes, 1 byte, 1 MiB, and sizes around the reader's first buffer. */
static const size_t varied[] = {
	0, 1, 2, 7, 8, 9, 100, 0, 4096, 65535, 65536 - 8, 65536, 65537, 1 * MIB, 3, 0, 200000, 1,
	65536 + 4096, 12345, 1 * MIB + 1, 0, 5,
};
#define NVARIED (sizeof(varied) / sizeof(varied[0]))

static void test_capfile_roundtrip(void **state)
{
	struct fg_test_dir *d = *state;
	size_t sizes[NVARIED + 300], n = 0, i, nparsed, at;
	uint64_t offs[NVARIED + 301];
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	char err[ERRLEN];
	struct fg_bufq file;

	for (i = 0; i < NVARIED; i++)
		sizes[n++] = varied[i];
	/* many small ones, so that frames straddle every buffer boundary */
	for (i = 0; i < 300; i++)
		sizes[n++] = (i * 977) % 3000;
	make_file(&file, sizes, n, offs);
	write_bytes(d->file, fg_bufq_head(&file), fg_bufq_len(&file));

	assert_int_equal(parse_all(fg_bufq_head(&file), fg_bufq_len(&file), &nparsed, &at), 0);
	assert_int_equal(nparsed, n);
	assert_int_equal(at, fg_bufq_len(&file));

	r = open_reader(d->file, 0);
	assert_int_equal(fg_capfile_reader_offset(r), 0);
	assert_int_equal(read_records(r, sizes, n, offs, err), FG_CAPFILE_END);
	assert_string_equal(err, "");
	assert_int_equal(fg_capfile_reader_offset(r), fg_bufq_len(&file));
	assert_int_equal(fg_capfile_reader_records(r), n);
	/* the end is sticky */
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);
	fg_capfile_reader_free(r);
	fg_capfile_reader_free(NULL);
	fg_bufq_free(&file);
}

static void test_capfile_empty_and_header_only(void **state)
{
	struct fg_test_dir *d = *state;
	uint8_t hdr[FG_CAPFILE_FILE_HEADER_LEN];
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	char err[ERRLEN];

	fg_capfile_write_file_header(hdr);
	write_bytes(d->file, hdr, sizeof(hdr));
	r = open_reader(d->file, 0);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);
	assert_int_equal(fg_capfile_reader_offset(r), FG_CAPFILE_FILE_HEADER_LEN);
	assert_int_equal(fg_capfile_reader_records(r), 0);
	fg_capfile_reader_free(r);

	/* a file its writer has just created */
	write_bytes(d->file, NULL, 0);
	r = open_reader(d->file, 0);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_TORN);
	assert_string_equal(err, "torn tail at offset 0 after 0 records: 0 bytes skipped (file shorter than its header)");
	fg_capfile_reader_free(r);
}

/* A reader over a pipe: it never seeks. */
static void test_capfile_pipe(void **state)
{
	static const size_t sizes[] = { 3, 0, 1000, 20000 };
	struct fg_capfile_reader *r;
	struct fg_bufq file;
	char err[ERRLEN];
	int fds[2];

	(void)state;
	make_file(&file, sizes, 4, NULL);
	assert_true(fg_bufq_len(&file) < 65536);        /* fits the pipe */
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], fg_bufq_head(&file), fg_bufq_len(&file)), (ssize_t)fg_bufq_len(&file));
	assert_int_equal(close(fds[1]), 0);
	assert_int_equal(fg_capfile_reader_open_fd(fds[0], 0, &r), 0);
	assert_int_equal(read_records(r, sizes, 4, NULL, err), FG_CAPFILE_END);
	fg_capfile_reader_free(r);
	/* the descriptor was borrowed */
	assert_int_equal(close(fds[0]), 0);
	fg_bufq_free(&file);
}

/* Cut a valid file at every offset inside its last frame (and inside the
 * file header): all records before it, then TORN at the last frame, never a
 * misread; with FOLLOW, AGAIN instead. */
static void test_capfile_torn_every_length(void **state)
{
	static const size_t sizes[] = { 10, 0, 70000, 300 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	uint64_t offs[5], cut;
	char err[ERRLEN], want[ERRLEN];
	size_t nparsed, at;
	struct fg_bufq file;

	make_file(&file, sizes, 4, offs);
	for (cut = offs[3]; cut < offs[4]; cut++) {
		write_bytes(d->file, fg_bufq_head(&file), cut);
		assert_int_equal(parse_all(fg_bufq_head(&file), cut, &nparsed, &at), cut == offs[3] ? 0 : FG_CAPFILE_TORN);
		assert_int_equal(nparsed, 3);
		assert_int_equal(at, offs[3]);

		r = open_reader(d->file, 0);
		assert_int_equal(read_records(r, sizes, 3, offs, err), cut == offs[3] ? FG_CAPFILE_END : FG_CAPFILE_TORN);
		if (cut > offs[3]) {
			snprintf(want, sizeof(want), "torn tail at offset %" PRIu64 " after 3 records: %" PRIu64
			         " bytes skipped (%s)", offs[3], cut - offs[3],
			         cut - offs[3] < 8 ? "frame header cut short" : "frame cut short");
			assert_string_equal(err, want);
		}
		assert_int_equal(fg_capfile_reader_offset(r), offs[3]);
		fg_capfile_reader_free(r);

		r = open_reader(d->file, FG_CAPFILE_F_FOLLOW);
		assert_int_equal(read_records(r, sizes, 3, offs, err), cut == offs[3] ? FG_CAPFILE_END : FG_CAPFILE_AGAIN);
		fg_capfile_reader_free(r);
	}
	for (cut = 0; cut < FG_CAPFILE_FILE_HEADER_LEN; cut++) {
		write_bytes(d->file, fg_bufq_head(&file), cut);
		r = open_reader(d->file, 0);
		assert_int_equal(read_records(r, sizes, 0, NULL, err), FG_CAPFILE_TORN);
		assert_int_equal(fg_capfile_reader_records(r), 0);
		fg_capfile_reader_free(r);
		r = open_reader(d->file, FG_CAPFILE_F_FOLLOW);
		assert_int_equal(read_records(r, sizes, 0, NULL, err), FG_CAPFILE_AGAIN);
		fg_capfile_reader_free(r);
	}
	fg_bufq_free(&file);
}

/* A crash that left zeros after the last frame, or zeros over it. */
static void test_capfile_zero_tail(void **state)
{
	static const size_t sizes[] = { 50, 1, 2000 };
	static const size_t zeros[] = { 1, 7, 8, 9, 100, 65536, 300000 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	char err[ERRLEN], want[ERRLEN];
	uint8_t *buf, one = 1;
	struct fg_bufq file;
	uint64_t offs[4];
	size_t i, len;

	make_file(&file, sizes, 3, offs);
	for (i = 0; i < sizeof(zeros) / sizeof(zeros[0]); i++) {
		len = fg_bufq_len(&file) + zeros[i];
		buf = calloc(1, len);
		assert_non_null(buf);
		memcpy(buf, fg_bufq_head(&file), fg_bufq_len(&file));
		write_bytes(d->file, buf, len);
		r = open_reader(d->file, 0);
		assert_int_equal(read_records(r, sizes, 3, offs, err), FG_CAPFILE_TORN);
		snprintf(want, sizeof(want), "torn tail at offset %" PRIu64 " after 3 records: %zu bytes skipped (%s)",
		         offs[3], zeros[i], zeros[i] < 8 ? "frame header cut short" : "zero-filled tail");
		assert_string_equal(err, want);
		/* sticky, with the same message */
		assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_TORN);
		assert_string_equal(err, want);
		fg_capfile_reader_free(r);

		/* a byte that is not zero far into the zeros: corruption */
		if (zeros[i] > 8) {
			append_bytes(d->file, &one, 1);
			r = open_reader(d->file, 0);
			assert_int_equal(read_records(r, sizes, 3, offs, err), FG_EINVAL);
			snprintf(want, sizeof(want), "corrupt frame at offset %" PRIu64 " after 3 records: CRC mismatch",
			         offs[3]);
			assert_string_equal(err, want);
			fg_capfile_reader_free(r);
		}
		free(buf);
	}

	/* the last frame's payload never reached the disk */
	len = fg_bufq_len(&file);
	buf = malloc(len + 4096);
	assert_non_null(buf);
	memcpy(buf, fg_bufq_head(&file), len);
	memset(buf + offs[2] + FG_CAPFILE_FRAME_HEADER_LEN, 0, len + 4096 - offs[2] - FG_CAPFILE_FRAME_HEADER_LEN);
	write_bytes(d->file, buf, len);
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 2, offs, err), FG_CAPFILE_TORN);
	assert_non_null(strstr(err, "(CRC mismatch in the last frame)"));
	fg_capfile_reader_free(r);
	write_bytes(d->file, buf, len + 4096);
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 2, offs, err), FG_CAPFILE_TORN);
	assert_non_null(strstr(err, "(zero-filled tail)"));
	assert_int_equal(fg_capfile_reader_offset(r), offs[2]);
	fg_capfile_reader_free(r);
	free(buf);
	fg_bufq_free(&file);
}

/* A flipped bit in the middle frame: corrupt there, with its offset and
 * the records before it; wherever the bit is in the frame. */
static void test_capfile_flipped_bit(void **state)
{
	static const size_t sizes[] = { 100, 200, 3000, 400, 500 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	char err[ERRLEN], want[ERRLEN];
	struct fg_bufq file;
	uint64_t offs[6], pos;
	size_t len, torn = 0, corrupt = 0;
	uint32_t flen;
	uint8_t *buf;
	int rc;

	make_file(&file, sizes, 5, offs);
	len = fg_bufq_len(&file);
	buf = malloc(len);
	assert_non_null(buf);
	for (pos = offs[2]; pos < offs[3]; pos += (pos < offs[2] + 16 ? 1 : 97)) {
		memcpy(buf, fg_bufq_head(&file), len);
		buf[pos] ^= (uint8_t)(1u << (pos % 8));
		write_bytes(d->file, buf, len);
		r = open_reader(d->file, 0);
		rc = read_records(r, sizes, 2, offs, err);
		flen = (uint32_t)buf[offs[2]] | (uint32_t)buf[offs[2] + 1] << 8 | (uint32_t)buf[offs[2] + 2] << 16 |
		       (uint32_t)buf[offs[2] + 3] << 24;
		if (flen <= FG_CAPFILE_MAX_RECORD && offs[2] + FG_CAPFILE_FRAME_HEADER_LEN + flen > len) {
			/* a length made to reach past the end of the file, with whole
			 * frames behind it: corruption, not a torn tail (before, it
			 * read as a frame cut short, and the two records after it
			 * were dropped without an error) */
			assert_int_equal(rc, FG_EINVAL);
			snprintf(want, sizeof(want), "corrupt frame at offset %" PRIu64 " after 2 records: frame length "
			         "runs past the end of the file, but whole frames follow it: the length is damaged", offs[2]);
			assert_string_equal(err, want);
			/* a file read as it grows may still get the rest: torn, not damaged */
			{
				struct fg_capfile_frame fr;
				assert_int_equal(fg_capfile_parse_frame(buf + offs[2], len - offs[2],
				                                        FG_CAPFILE_F_EOF | FG_CAPFILE_F_FOLLOW, &fr),
				                 FG_CAPFILE_TORN);
			}
			torn++;
		} else {
			assert_int_equal(rc, FG_EINVAL);
			snprintf(want, sizeof(want), "corrupt frame at offset %" PRIu64 " after 2 records: %s", offs[2],
			         flen > FG_CAPFILE_MAX_RECORD ? "frame length over the maximum" : "CRC mismatch");
			assert_string_equal(err, want);
			assert_int_equal(fg_capfile_reader_offset(r), offs[2]);
			assert_int_equal(fg_capfile_reader_records(r), 2);
			/* sticky */
			assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
			assert_string_equal(err, want);
			corrupt++;
		}
		fg_capfile_reader_free(r);
	}
	assert_true(torn > 0 && corrupt > torn);

	/* one record before it: the message says so in the singular */
	memcpy(buf, fg_bufq_head(&file), len);
	buf[offs[1] + 5] ^= 0x20;
	write_bytes(d->file, buf, len);
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 1, offs, err), FG_EINVAL);
	snprintf(want, sizeof(want), "corrupt frame at offset %" PRIu64 " after 1 record: CRC mismatch", offs[1]);
	assert_string_equal(err, want);
	fg_capfile_reader_free(r);
	free(buf);
	fg_bufq_free(&file);
}

static void test_capfile_bad_file_header(void **state)
{
	static const size_t sizes[] = { 10 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	struct fg_bufq file;
	char err[ERRLEN];
	uint8_t *p;

	make_file(&file, sizes, 1, NULL);
	p = (uint8_t *)(uintptr_t)fg_bufq_head(&file);
	p[1] = 'f';
	write_bytes(d->file, p, fg_bufq_len(&file));
	r = open_reader(d->file, 0);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	assert_string_equal(err, "not a feedguard capture file");
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	assert_string_equal(err, "not a feedguard capture file");
	fg_capfile_reader_free(r);
	/* FOLLOW does not wait on a file that can never become a capture */
	write_bytes(d->file, (const uint8_t *)"{\"", 2);
	r = open_reader(d->file, FG_CAPFILE_F_FOLLOW);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	fg_capfile_reader_free(r);

	p[1] = 'F';
	p[8] = 0x07;
	p[9] = 0x01;
	write_bytes(d->file, p, fg_bufq_len(&file));
	r = open_reader(d->file, FG_CAPFILE_F_FOLLOW);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	assert_string_equal(err, "capture format version 263 is not supported");
	assert_int_equal(fg_capfile_reader_records(r), 0);
	fg_capfile_reader_free(r);
	fg_bufq_free(&file);
}

/* One largest record, then the same frame with a bad CRC at the end of the
 * file: the reader must hold the whole frame and one byte more. */
static void test_capfile_largest_record(void **state)
{
	static const size_t sizes[] = { FG_CAPFILE_MAX_RECORD, 4 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	uint8_t *p, *big;
	struct fg_bufq file;
	uint64_t offs[3];
	char err[ERRLEN];

	make_file(&file, sizes, 2, offs);
	write_bytes(d->file, fg_bufq_head(&file), fg_bufq_len(&file));
	mem_arm(0);
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 2, offs, err), FG_CAPFILE_END);
	fg_capfile_reader_free(r);
	/* the buffer grew to the frame and no further (the slack: the reader
	 * itself and malloc rounding an mmap'ed block up to pages) */
	assert_true(mem.peak - mem.bytes >= FG_CAPFILE_MAX_FRAME);
	assert_true(mem.peak - mem.bytes <= FG_CAPFILE_MAX_FRAME + 8192);

	p = (uint8_t *)(uintptr_t)fg_bufq_head(&file);
	big = p + offs[0] + FG_CAPFILE_FRAME_HEADER_LEN;
	big[12345] ^= 0x10;
	write_bytes(d->file, p, offs[1]);
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 0, offs, err), FG_CAPFILE_TORN);
	assert_non_null(strstr(err, "(CRC mismatch in the last frame)"));
	fg_capfile_reader_free(r);
	write_bytes(d->file, p, fg_bufq_len(&file));
	r = open_reader(d->file, 0);
	assert_int_equal(read_records(r, sizes, 0, offs, err), FG_EINVAL);
	fg_capfile_reader_free(r);
	fg_bufq_free(&file);
}

/* Reading a file while it is written: half a frame waits, the rest of it
 * completes the record. */
static void test_capfile_follow(void **state)
{
	static const size_t sizes[] = { 10, 20, 100000, 7 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	struct fg_bufq file;
	uint64_t offs[5];
	char err[ERRLEN];
	const uint8_t *p;
	size_t half;

	make_file(&file, sizes, 4, offs);
	p = fg_bufq_head(&file);
	write_bytes(d->file, NULL, 0);
	r = open_reader(d->file, FG_CAPFILE_F_FOLLOW);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, p, 5);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, p + 5, offs[2] - 5);
	assert_int_equal(read_records(r, sizes, 2, offs, err), FG_CAPFILE_END);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);

	/* half of the large frame, then the rest */
	half = (size_t)(offs[3] - offs[2]) / 2;
	append_bytes(d->file, p + offs[2], half);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	assert_int_equal(fg_capfile_reader_offset(r), offs[2]);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, p + offs[2] + half, offs[3] - offs[2] - half);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_RECORD);
	check_payload(&rec, sizes[2], 2);
	assert_int_equal(rec.offset, offs[2]);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);

	/* a header alone, then its payload */
	append_bytes(d->file, p + offs[3], 8);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, p + offs[3] + 8, offs[4] - offs[3] - 8);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_RECORD);
	check_payload(&rec, sizes[3], 3);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);
	assert_int_equal(fg_capfile_reader_records(r), 4);

	/* a zero-filled tail waits too; a frame after it is corruption */
	append_bytes(d->file, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, "\0\0\0\0", 4);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_AGAIN);
	append_bytes(d->file, p + offs[3], offs[4] - offs[3]);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	assert_int_equal(fg_capfile_reader_offset(r), offs[4]);
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EINVAL);
	fg_capfile_reader_free(r);
	fg_bufq_free(&file);
}

static void test_capfile_io_errors(void **state)
{
	struct fg_test_dir *d = *state;
	struct fg_capfile_record rec;
	struct fg_capfile_reader *r = (struct fg_capfile_reader *)(void *)&rec;  /* not NULL */
	char err[ERRLEN], path[200];

	snprintf(path, sizeof(path), "%s/missing", d->path);
	errno = 0;
	assert_int_equal(fg_capfile_reader_open(path, 0, &r, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, ENOENT);
	assert_null(r);
	assert_non_null(strstr(err, "/missing: cannot open: "));
	assert_int_equal(fg_capfile_reader_open(path, 0, &r, NULL, 0), FG_EIO);

	/* a directory opens but cannot be read */
	r = open_reader(d->path, 0);
	errno = 0;
	assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_EIO);
	assert_int_equal(errno, EISDIR);
	assert_non_null(strstr(err, "cannot read at offset 0: "));
	/* not sticky: the same read again */
	assert_int_equal(fg_capfile_reader_next(r, &rec, NULL, 0), FG_EIO);
	fg_capfile_reader_free(r);
}

/* Every allocation of the reader failed in turn: FG_ENOMEM, and a retry
 * continues where it stopped, losing nothing. */
static void test_capfile_failmalloc(void **state)
{
	static const size_t sizes[] = { 5, 200000, 0, 1 * MIB, 70000 };
	struct fg_test_dir *d = *state;
	struct fg_capfile_reader *r;
	struct fg_capfile_record rec;
	struct fg_bufq file;
	uint64_t offs[6];
	char err[ERRLEN];
	long n;
	size_t i;
	int rc, failures;

	make_file(&file, sizes, 5, offs);
	write_bytes(d->file, fg_bufq_head(&file), fg_bufq_len(&file));
	for (n = 1;; n++) {
		mem_arm(n);
		rc = fg_capfile_reader_open(d->file, 0, &r, err, sizeof(err));
		if (rc) {
			assert_int_equal(rc, FG_ENOMEM);
			assert_null(r);
			assert_true(mem.failed);
			continue;
		}
		failures = mem.failed;
		for (i = 0; i < 5; i++) {
			while ((rc = fg_capfile_reader_next(r, &rec, err, sizeof(err))) == FG_ENOMEM) {
				assert_non_null(strstr(err, "out of memory for a read buffer of "));
				failures++;
			}
			assert_int_equal(rc, FG_CAPFILE_RECORD);
			check_payload(&rec, sizes[i], i);
			assert_int_equal(rec.offset, offs[i]);
		}
		assert_int_equal(fg_capfile_reader_next(r, &rec, err, sizeof(err)), FG_CAPFILE_END);
		fg_capfile_reader_free(r);
		if (!mem.failed)
			break;
		assert_int_equal(failures, 1);
	}
	mem_arm(0);
	assert_true(n > 3);     /* the reader, its buffer and growth were all failed */
	fg_bufq_free(&file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_capfile_encode),
		cmocka_unit_test(test_capfile_crc_is_zlibs),
		cmocka_unit_test(test_capfile_parse_file_header),
		cmocka_unit_test(test_capfile_parse_frame),
		cmocka_unit_test(test_capfile_parse_length_over_max),
		cmocka_unit_test_setup_teardown(test_capfile_roundtrip, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_empty_and_header_only, setup_dir, teardown_dir),
		cmocka_unit_test(test_capfile_pipe),
		cmocka_unit_test_setup_teardown(test_capfile_torn_every_length, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_zero_tail, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_flipped_bit, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_bad_file_header, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_largest_record, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_follow, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_io_errors, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_capfile_failmalloc, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests_name("capfile", tests, NULL, NULL);
}
