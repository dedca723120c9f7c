/* fg_capfile.c - the capture file's framing, parser and reader; see fg_capfile.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#ifdef HAVE_ISAL
#include <isa-l/crc.h>
#endif

#include "fg_capfile.h"
#include "fg_error.h"

/* Offsets in the file header and in a frame header (capture.proto). */
#define FILE_VERSION FG_CAPFILE_MAGIC_LEN
#define FILE_RESERVED (FILE_VERSION + 4)
#define FRAME_LENGTH 0
#define FRAME_CRC 4
#define HDR FG_CAPFILE_FRAME_HEADER_LEN

/* The texts of fg_capfile.h; the reader tells the file header's errors
 * from a frame's by their address. */
static const char why_not_capture[] = "not a feedguard capture file";
static const char why_version[] = "capture format version is not supported";
static const char why_short_file[] = "file shorter than its header";
static const char why_short_header[] = "frame header cut short";
static const char why_short_frame[] = "frame cut short";
static const char why_zero_tail[] = "zero-filled tail";
static const char why_damaged_length[] =
	"frame length runs past the end of the file, but whole frames follow it: the length is damaged";

/* CRC bytes spent looking for a frame behind one that runs past the end
 * of the file, at most (about 0.1 s): past it the frame is taken as torn. */
#define FOLLOW_SCAN_BUDGET (4 * (uint64_t)FG_CAPFILE_MAX_RECORD)

/* The two ways a whole frame header can be bad, and what each is called in
 * the middle of the file (corrupt) and at its very end (torn). */
enum bad_kind {
	BAD_CRC,
	BAD_LENGTH,
};

static const char *const bad_why[] = {
	[BAD_CRC] = "CRC mismatch",
	[BAD_LENGTH] = "frame length over the maximum",
};

static const char *const bad_last_why[] = {
	[BAD_CRC] = "CRC mismatch in the last frame",
	[BAD_LENGTH] = "frame length over the maximum in the last frame",
};

static void set_why(const char **why, const char *text)
{
	if (why)
		*why = text;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The CRC of a frame: its 4 length bytes, then the payload.  zlib's
 * CRC-32; ISA-L's crc32_gzip_refl is the same function (chained the same
 * way), about 15 times faster where the library is there. */
static uint32_t frame_crc(const uint8_t *length, const uint8_t *payload, uint32_t len)
{
#ifdef HAVE_ISAL
	uint32_t crc = crc32_gzip_refl(0, length, 4);

	return len ? crc32_gzip_refl(crc, payload, len) : crc;
#else
	uLong crc = crc32(0L, length, 4);

	/* crc32() with a NULL buffer returns the initial value, not <crc> */
	if (len)
		crc = crc32(crc, payload, len);
	return (uint32_t)crc;
#endif
}

static int all_zero(const uint8_t *p, size_t n)
{
	/* each byte equals the next and the first is zero */
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* ---- writing ---- */

void fg_capfile_write_file_header(uint8_t out[FG_CAPFILE_FILE_HEADER_LEN])
{
	memcpy(out, FG_CAPFILE_MAGIC, FG_CAPFILE_MAGIC_LEN);
	put_le32(out + FILE_VERSION, FG_CAPFILE_VERSION);
	put_le32(out + FILE_RESERVED, 0);
}

int fg_capfile_write_frame_header(uint8_t out[FG_CAPFILE_FRAME_HEADER_LEN], const uint8_t *payload,
                                  size_t len)
{
	if (len > FG_CAPFILE_MAX_RECORD)
		return FG_ETOOBIG;
	put_le32(out + FRAME_LENGTH, (uint32_t)len);
	put_le32(out + FRAME_CRC, frame_crc(out + FRAME_LENGTH, payload, (uint32_t)len));
	return 0;
}

int fg_capfile_append(struct fg_bufq *b, const uint8_t *payload, size_t len)
{
	uint8_t *p;
	int rc;

	if (len > FG_CAPFILE_MAX_RECORD)
		return FG_ETOOBIG;
	rc = fg_bufq_reserve(b, HDR + len);
	if (rc)
		return rc;
	p = fg_bufq_tail(b);
	if (len)
		memcpy(p + HDR, payload, len);
	fg_capfile_write_frame_header(p, p + HDR, len);
	fg_bufq_commit(b, HDR + len);
	return 0;
}

/* ---- parsing ---- */

int fg_capfile_parse_file_header(const uint8_t *p, size_t avail, unsigned flags, uint32_t *version,
                                 const char **why)
{
	size_t n = avail < FG_CAPFILE_MAGIC_LEN ? avail : FG_CAPFILE_MAGIC_LEN;
	uint32_t v;

	if (n && memcmp(p, FG_CAPFILE_MAGIC, n) != 0) {
		set_why(why, why_not_capture);
		return FG_EINVAL;
	}
	if (avail < FG_CAPFILE_FILE_HEADER_LEN) {
		if (!(flags & FG_CAPFILE_F_EOF))
			return FG_CAPFILE_NEED_MORE;
		set_why(why, why_short_file);
		return FG_CAPFILE_TORN;
	}
	/* the reserved bytes are not checked: a later writer may use them for
	 * what older readers can ignore (else it bumps the version) */
	v = get_le32(p + FILE_VERSION);
	if (v < FG_CAPFILE_VERSION_MIN || v > FG_CAPFILE_VERSION) {
		if (version)
			*version = v;
		set_why(why, why_version);
		return FG_EINVAL;
	}
	return FG_CAPFILE_HEADER;
}

/* A frame that runs past the bytes given, needing <need> of them. */
static int short_frame(struct fg_capfile_frame *f, unsigned flags, size_t need, const char *why)
{
	if (!(flags & FG_CAPFILE_F_EOF)) {
		f->need = need;
		return FG_CAPFILE_NEED_MORE;
	}
	f->why = why;
	return FG_CAPFILE_TORN;
}

/*
 * 1 when a whole frame (its CRC checked) starts somewhere in p[1 .. avail).
 * A write cut short leaves a prefix of one frame at the end of the file,
 * which holds no frame of its own (short of a record that quotes a
 * capture file's bytes); a length damaged in the middle of a file has the
 * rest of the file behind it, whole frames included.  Reading that as a
 * torn tail would drop those records without an error, and an erasure
 * would miss the records of the person it was for.
 */
static int frame_follows(const uint8_t *p, size_t avail)
{
	uint64_t spent = 0;
	size_t at;

	for (at = 1; at + HDR <= avail && spent <= FOLLOW_SCAN_BUDGET; at++) {
		uint32_t len = get_le32(p + at + FRAME_LENGTH);
		if (len > avail - at - HDR)
			continue;
		spent += len;
		if (frame_crc(p + at + FRAME_LENGTH, p + at + HDR, len) == get_le32(p + at + FRAME_CRC))
			return 1;
	}
	return 0;
}

/*
 * A bad frame that ends at <end> bytes from <p>: its declared end for a CRC
 * mismatch, its header's end for a length that cannot be trusted.  Torn
 * when nothing follows it or only zeros do; one byte past <end> tells
 * whether anything follows.
 */
static int bad_frame(const uint8_t *p, size_t avail, unsigned flags, size_t end, enum bad_kind kind,
                     struct fg_capfile_frame *f)
{
	int eof = flags & FG_CAPFILE_F_EOF;

	if (avail == end) {
		if (!eof) {
			f->need = end + 1;
			return FG_CAPFILE_NEED_MORE;
		}
		f->why = all_zero(p, avail) ? why_zero_tail : bad_last_why[kind];
		return FG_CAPFILE_TORN;
	}
	f->why = bad_why[kind];
	if (!all_zero(p + HDR, avail - HDR))
		return FG_EINVAL;
	if (!eof)
		return FG_CAPFILE_CHECK_TAIL;
	f->why = why_zero_tail;
	return FG_CAPFILE_TORN;
}

int fg_capfile_parse_frame(const uint8_t *p, size_t avail, unsigned flags, struct fg_capfile_frame *f)
{
	uint32_t len;

	memset(f, 0, sizeof(*f));
	if (avail < HDR)
		return short_frame(f, flags, HDR, why_short_header);
	len = get_le32(p + FRAME_LENGTH);
	if (len > FG_CAPFILE_MAX_RECORD)
		return bad_frame(p, avail, flags, HDR, BAD_LENGTH, f);
	if (avail - HDR < len) {
		/* a file that may still grow has the rest of this frame to come */
		if ((flags & FG_CAPFILE_F_EOF) && !(flags & FG_CAPFILE_F_FOLLOW) && frame_follows(p, avail)) {
			f->why = why_damaged_length;
			return FG_EINVAL;
		}
		return short_frame(f, flags, HDR + (size_t)len, why_short_frame);
	}
	if (frame_crc(p + FRAME_LENGTH, p + HDR, len) != get_le32(p + FRAME_CRC))
		return bad_frame(p, avail, flags, HDR + (size_t)len, BAD_CRC, f);
	f->payload = p + HDR;
	f->len = len;
	f->frame_len = HDR + (size_t)len;
	return FG_CAPFILE_RECORD;
}

/* ---- reading a file ---- */

enum reader_state {
	R_HEADER = 0,           /* the file header is not read yet */
	R_FRAMES,               /* at a frame boundary, the frame's bytes possibly partly read */
	R_ZEROS,                /* after a bad frame: checking that the rest of the file is zero */
	R_ENDED,                /* END or TORN without FOLLOW: <result> is repeated */
	R_FAILED,               /* FG_EINVAL: <result> is repeated */
};

struct fg_capfile_reader {
	enum reader_state state;
	int fd;
	int own_fd;             /* 1: opened by reader_open, closed by reader_free */
	unsigned flags;         /* FG_CAPFILE_F_FOLLOW or 0 */
	uint8_t *buf;           /* <cap> bytes from realloc() */
	size_t cap;             /* FG_CAPFILE_READ_MIN up to the largest frame seen (+ 1) */
	size_t start;           /* where the current frame (or the file header) starts in <buf> */
	size_t have;            /* bytes of the file read from <start> on */
	int eof;                /* the last read(2) returned 0: for now the file ends after <have> */
	uint64_t offset;        /* file offset of <buf>[<start>] */
	uint64_t records;       /* records returned */
	uint64_t dropped;       /* R_ZEROS: zero bytes checked and dropped after the 8 kept */
	int result;             /* R_ENDED, R_FAILED: the code repeated */
	const char *why;        /* static reason of a TORN or FG_EINVAL; in R_ZEROS, of the bad frame */
	uint32_t version;       /* the version found, for why_version */
	int read_errno;         /* errno of the read(2) behind FG_EIO */
	size_t want;            /* the allocation behind FG_ENOMEM */
};

static void consume(struct fg_capfile_reader *r, size_t n)
{
	r->start += n;
	r->have -= n;
	r->offset += n;
	if (r->have == 0)
		r->start = 0;
}

/*
 * Room after the current bytes, with the current frame able to reach
 * <need> (more than <have>) bytes in <buf>: slide it to the front, grow the
 * memory.  Growth doubles up to <need> rather than jumping to it, so that a
 * damaged length costs memory only as its bytes actually arrive.
 */
static int make_room(struct fg_capfile_reader *r, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (need <= r->cap - r->start)
		return 0;
	if (r->start) {
		memmove(r->buf, r->buf + r->start, r->have);
		r->start = 0;
	}
	if (need <= r->cap)
		return 0;
	cap = r->cap > need / 2 ? need : 2 * r->cap;
	p = realloc(r->buf, cap);
	if (!p) {
		r->want = cap;
		return FG_ENOMEM;
	}
	r->buf = p;
	r->cap = cap;
	return 0;
}

/* One read(2) into all the room there is, after making room for <need>. */
static int fill(struct fg_capfile_reader *r, size_t need)
{
	ssize_t n;
	int rc;

	rc = make_room(r, need);
	if (rc)
		return rc;
	do
		n = read(r->fd, r->buf + r->start + r->have, r->cap - r->start - r->have);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r->read_errno = errno;
		return FG_EIO;
	}
	if (n == 0)
		r->eof = 1;
	r->have += (size_t)n;
	return 0;
}

static unsigned parse_flags(const struct fg_capfile_reader *r)
{
	return (r->eof ? FG_CAPFILE_F_EOF : 0) | (r->flags & FG_CAPFILE_F_FOLLOW);
}

/*
 * The file ends here (END, TORN) or is bad (FG_EINVAL) for <why>.  Final
 * without FOLLOW; with FOLLOW only FG_EINVAL is, and a torn tail is a frame
 * still being written: AGAIN, with its bytes kept for the next call.
 */
static int stop(struct fg_capfile_reader *r, int rc, const char *why)
{
	if (rc != FG_EINVAL && (r->flags & FG_CAPFILE_F_FOLLOW))
		return rc == FG_CAPFILE_TORN ? FG_CAPFILE_AGAIN : rc;
	r->why = why;
	r->state = rc == FG_EINVAL ? R_FAILED : R_ENDED;
	r->result = rc;
	return rc;
}

static int step_header(struct fg_capfile_reader *r)
{
	const char *why = NULL;
	int rc;

	while ((rc = fg_capfile_parse_file_header(r->buf + r->start, r->have, parse_flags(r), &r->version,
	                                          &why)) == FG_CAPFILE_NEED_MORE) {
		rc = fill(r, FG_CAPFILE_FILE_HEADER_LEN);
		if (rc)
			return rc;
	}
	if (rc != FG_CAPFILE_HEADER)
		return stop(r, rc, why);
	consume(r, FG_CAPFILE_FILE_HEADER_LEN);
	r->state = R_FRAMES;
	return rc;
}

/* After a bad frame followed by zeros: keep its header at <start> (the
 * offset reported is its own) and pass the rest of the file through the
 * buffer, keeping none of it: a zero-filled tail can be long. */
static int step_zeros(struct fg_capfile_reader *r)
{
	int rc;

	for (;;) {
		if (!all_zero(r->buf + r->start + HDR, r->have - HDR))
			return stop(r, FG_EINVAL, r->why);
		r->dropped += r->have - HDR;
		r->have = HDR;
		if (r->eof)
			return stop(r, FG_CAPFILE_TORN, why_zero_tail);
		rc = fill(r, r->cap);
		if (rc)
			return rc;
	}
}

static int step_frame(struct fg_capfile_reader *r, struct fg_capfile_record *rec)
{
	struct fg_capfile_frame f;
	int rc;

	for (;;) {
		if (r->have == 0 && r->eof)
			return stop(r, FG_CAPFILE_END, NULL);
		rc = fg_capfile_parse_frame(r->buf + r->start, r->have, parse_flags(r), &f);
		if (rc != FG_CAPFILE_NEED_MORE)
			break;
		rc = fill(r, f.need);
		if (rc)
			return rc;
	}
	switch (rc) {
	case FG_CAPFILE_RECORD:
		rec->data = f.payload;
		rec->len = f.len;
		rec->offset = r->offset;
		consume(r, f.frame_len);
		r->records++;
		return rc;
	case FG_CAPFILE_CHECK_TAIL:
		r->why = f.why;
		r->state = R_ZEROS;
		return step_zeros(r);
	default:
		return stop(r, rc, f.why);
	}
}

static const char *plural(uint64_t n)
{
	return n == 1 ? "" : "s";
}

/* The message of fg_capfile_reader_next()'s result <rc>, when it has one. */
static void report(const struct fg_capfile_reader *r, int rc, char *err, size_t errlen)
{
	switch (rc) {
	case FG_CAPFILE_TORN:
		snprintf(err, errlen, "torn tail at offset %" PRIu64 " after %" PRIu64 " record%s: %" PRIu64
		         " bytes skipped (%s)", r->offset, r->records, plural(r->records),
		         (uint64_t)r->have + r->dropped, r->why);
		break;
	case FG_EINVAL:
		if (r->why == why_version)
			snprintf(err, errlen, "capture format version %" PRIu32 " is not supported", r->version);
		else if (r->why == why_not_capture)
			snprintf(err, errlen, "%s", r->why);
		else
			snprintf(err, errlen, "corrupt frame at offset %" PRIu64 " after %" PRIu64 " record%s: %s",
			         r->offset, r->records, plural(r->records), r->why);
		break;
	case FG_EIO:
		snprintf(err, errlen, "cannot read at offset %" PRIu64 ": %s", r->offset + r->have,
		         strerror(r->read_errno));
		break;
	case FG_ENOMEM:
		snprintf(err, errlen, "out of memory for a read buffer of %zu bytes at offset %" PRIu64, r->want,
		         r->offset);
		break;
	default:
		break;
	}
}

int fg_capfile_reader_next(struct fg_capfile_reader *r, struct fg_capfile_record *rec, char *err,
                           size_t errlen)
{
	int rc;

	/* what was the end of the file may have grown since */
	if (r->flags & FG_CAPFILE_F_FOLLOW)
		r->eof = 0;
	do {
		switch (r->state) {
		case R_HEADER:
			rc = step_header(r);
			break;
		case R_FRAMES:
			rc = step_frame(r, rec);
			break;
		case R_ZEROS:
			rc = step_zeros(r);
			break;
		default:
			rc = r->result;
			break;
		}
	} while (rc == FG_CAPFILE_HEADER);
	report(r, rc, err, errlen);
	if (rc == FG_EIO)
		errno = r->read_errno;
	return rc;
}

int fg_capfile_reader_open_fd(int fd, unsigned flags, struct fg_capfile_reader **r)
{
	struct fg_capfile_reader *n;

	*r = NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return FG_ENOMEM;
	n->buf = malloc(FG_CAPFILE_READ_MIN);
	if (!n->buf)
		goto fail_free_reader;
	n->cap = FG_CAPFILE_READ_MIN;
	n->fd = fd;
	n->flags = flags & FG_CAPFILE_F_FOLLOW;
	n->state = R_HEADER;
	*r = n;
	return 0;

fail_free_reader:
	free(n);
	return FG_ENOMEM;
}

int fg_capfile_reader_open(const char *path, unsigned flags, struct fg_capfile_reader **r, char *err,
                           size_t errlen)
{
	int fd, rc, saved;

	*r = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		saved = errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(saved));
		errno = saved;
		return FG_EIO;
	}
	rc = fg_capfile_reader_open_fd(fd, flags, r);
	if (rc)
		goto fail_close_fd;
	(*r)->own_fd = 1;
	return 0;

fail_close_fd:
	snprintf(err, errlen, "%s: out of memory", path);
	close(fd);
	return rc;
}

uint64_t fg_capfile_reader_offset(const struct fg_capfile_reader *r)
{
	return r->offset;
}

uint64_t fg_capfile_reader_records(const struct fg_capfile_reader *r)
{
	return r->records;
}

void fg_capfile_reader_free(struct fg_capfile_reader *r)
{
	if (!r)
		return;
	if (r->own_fd)
		close(r->fd);
	free(r->buf);
	free(r);
}
